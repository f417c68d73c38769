"""Find and remove what a test left on the machine, by the root's own names.

Tests may shell out here (ip, losetup, umount): only the engine is held to
pyroute2 and syscalls.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from engine.paths import Paths

CGROUP_FS = Path("/sys/fs/cgroup")


def _cgroup_dirs(paths: Paths) -> list[Path]:
    if not paths.root_id:
        return []
    found = []
    for hierarchy in sorted(CGROUP_FS.iterdir()) if CGROUP_FS.is_dir() else []:
        for base in (hierarchy / paths.cgroup_base, hierarchy / f"{paths.cgroup_base}-chbind"):
            if base.is_dir():
                found.append(base)
    return found


def _cgroup_pids(paths: Paths) -> set[int]:
    pids: set[int] = set()
    for base in _cgroup_dirs(paths):
        for procs in base.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return pids


def _mentions_root(pid: int, needle: bytes) -> bool:
    for name in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                if needle in f.read():
                    return True
        except OSError:
            continue
    return False


def _ancestors() -> set[int]:
    pids = set()
    pid = os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    return pids


def processes(paths: Paths) -> set[int]:
    """PIDs in the root's cgroups or whose command line / environment names the root."""
    needle = os.fsencode(paths.root)
    mine = _ancestors()
    pids = _cgroup_pids(paths)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in mine and _mentions_root(int(entry), needle):
            pids.add(int(entry))
    return pids - mine


def describe(pid: int) -> str:
    """``process N`` with what it is: its command line, state, parent and cgroup
    (a leftover seen once under load must be identifiable from the report)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
        with open(f"/proc/{pid}/cgroup") as f:
            cgroups = [line.split(":", 2)[2] for line in f.read().splitlines()]
    except OSError:
        return f"process {pid} (gone meanwhile)"
    cgroup = max(cgroups, key=len, default="?")
    return (
        f"process {pid} ({argv[:160]!r}, state {status.get('State', '?')}, "
        f"parent {status.get('PPid', '?')}, cgroup {cgroup})"
    )


def mounts(paths: Paths) -> list[str]:
    prefix = str(paths.root).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == str(paths.root) or target.startswith(prefix):
                found.append(target)
    return found


def link_pattern(paths: Paths) -> re.Pattern[str]:
    return re.compile(rf"^[a-z]{re.escape(paths.root_id[:4])}-")


def links(paths: Paths) -> list[str]:
    if not paths.root_id:
        return []
    pattern = link_pattern(paths)
    return sorted(n for n in os.listdir("/sys/class/net") if pattern.match(n))


ANY_ROOT_LINK = re.compile(r"^[a-z][0-9a-f]{4}-")


def links_seen_by(paths: Paths) -> list[str]:
    """Every link on the machine but other test roots' (which come and go beside us)."""
    own = link_pattern(paths) if paths.root_id else None
    return sorted(
        n
        for n in os.listdir("/sys/class/net")
        if not ANY_ROOT_LINK.match(n) or (own is not None and own.match(n))
    )


def netns(paths: Paths) -> list[str]:
    if not paths.root_id or not os.path.isdir("/run/netns"):
        return []
    prefix = paths.netns_name("x")[:-1]  # a name is checked: "" is none
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))


def nft_tables(paths: Paths) -> list[str]:
    """The root's guest filtering tables ("inet vstui-ROOTID-web")."""
    if not paths.root_id:
        return []
    done = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    prefix = paths.nft_table("")
    return sorted(" ".join(line.split()[1:]) for line in done.stdout.splitlines()
                  if len(line.split()) == 3 and line.split()[2].startswith(prefix))  # fmt: skip


def loop_devices(paths: Paths) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip().startswith(str(paths.root)):
                found.append("/dev/" + backing.parent.parent.name)
        except OSError:
            continue
    return found


def find(paths: Paths) -> list[str]:
    """Human-readable list of everything the root still holds."""
    found = [describe(pid) for pid in sorted(processes(paths))]
    found += [f"mount {m}" for m in mounts(paths)]
    found += [f"cgroup {c}" for c in _cgroup_dirs(paths)]
    found += [f"link {n}" for n in links(paths)]
    found += [f"netns {n}" for n in netns(paths)]
    found += [f"nft table {t}" for t in nft_tables(paths)]
    found += [f"loop device {d}" for d in loop_devices(paths)]
    return found


def _thaw(paths: Paths) -> None:
    """A frozen process cannot die: thaw the root's cgroups (v1 and v2 freezers) first."""
    for base in _cgroup_dirs(paths):
        for control, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            for path in [base / control, *base.rglob(control)]:
                try:
                    path.write_text(value)
                except OSError:
                    continue


def clean(paths: Paths) -> None:
    """Remove everything find() reports. Kills only processes of this root."""
    _thaw(paths)
    for _ in range(50):
        pids = processes(paths)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    for target in sorted(mounts(paths), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    for dev in loop_devices(paths):
        subprocess.run(["losetup", "-d", dev], capture_output=True)
    for name in links(paths):
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    for name in netns(paths):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for table in nft_tables(paths):
        subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True)
    for base in _cgroup_dirs(paths):
        for _ in range(20):
            dirs = sorted((d for d in base.rglob("*") if d.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, base]:
                try:
                    d.rmdir()
                except OSError:
                    pass
            if not base.exists():
                break
            time.sleep(0.1)
