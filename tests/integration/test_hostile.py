"""Issue 19 with real guests: broken neighbours, hostile names, crash points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.paths import Paths
from engine.runtime import state
from tests.hostile import make_broken
from tests.integration.test_runtime import Guest, build, cgroup_dirs, ok, vserver

VSERVER_BIN = str(Path(sys.executable).parent / "vserver")  # the compiled front end

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_onboot_starts_every_good_guest_and_fails_for_the_broken(vroot: Paths) -> None:
    early = build(vroot, {"ONBOOT": "yes", "PRIORITY": "10"})
    late = build(vroot, {"ONBOOT": "yes", "PRIORITY": "900"})
    broken = make_broken(vroot)
    try:
        done = vserver(vroot, "--onboot", "start", timeout=180)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert state.read(vroot, early).running and state.read(vroot, late).running
        lines = done.stderr.splitlines()
        for name in broken:
            assert len([x for x in lines if x.startswith(f"vserver: {name}: ")]) == 1, lines
    finally:
        stopped = vserver(vroot, "--onboot", "stop", timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    assert not state.read(vroot, early).running and not state.read(vroot, late).running


# -- names: every command of every tool refuses a bad name first ---------------------
BAD_NAMES = ["../vservers/{web}", "../x", "..", ".", "x/..", "{web}/", "/tmp/x", "-x", "a b",
             "", "x\x1b]0;PWNED\x07", "x" * 33, "x\ny", "\u00e9t\u00e9", "x.y", "x_y"]  # fmt: skip
TOOLS = {"python": [sys.executable, "-m", "vstui.cli.vserver"], "compiled": [VSERVER_BIN]}


def _tree(paths: Paths) -> set[str]:
    found = set()
    for top, dirs, files in os.walk(paths.root):
        found.update(os.path.join(top, n) for n in dirs + files)
    return found


def test_every_vserver_command_refuses_a_bad_name_first(vroot: Paths) -> None:
    from vstui.cli.vserver import COMMANDS

    with Guest(vroot) as web:
        before = _tree(vroot)
        groups = cgroup_dirs(vroot)
        for tool, argv in TOOLS.items():
            for command in sorted(COMMANDS):
                for bad in BAD_NAMES:
                    name = bad.format(web=web.name)
                    cmd = [*argv, "--root", str(vroot.root), name, command]
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                    said = done.stderr
                    assert done.returncode == 1, (tool, command, name, done)
                    assert said.count("\n") == 1 and "is not a valid guest name" in said, said
                    assert "\x1b" not in said and "\x07" not in said
        assert web.init_pid is not None and state.read(vroot, web.name).running
        assert _tree(vroot) == before and cgroup_dirs(vroot) == groups


@pytest.mark.parametrize(
    ("tool", "args"),
    [("vps", ["--xid", "../x"]), ("vps", ["ax", "--xid", "a b"]),
     ("vtop", ["-b", "-n", "1", "--xid", "../x"]), ("vkill", ["--xid", "../x"]),
     ("vkill", ["--xid", "..", "1"])],
)  # fmt: skip
def test_other_tools_refuse_a_bad_guest_name(vroot: Paths, tool: str, args: list[str]) -> None:
    module = {"vps": "vps", "vtop": "vtop", "vkill": "vkill"}[tool]
    cmd = [sys.executable, "-m", f"vstui.cli.{module}", "--root", str(vroot.root), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is not a valid guest name" in done.stderr, done
    assert done.stderr.count("\n") == 1


def test_status_of_a_name_that_is_no_guest_says_so(vroot: Paths) -> None:
    done = vserver(vroot, "nosuch", "status")
    assert done.returncode == 1 and done.stdout == "", done
    assert done.stderr.startswith("vserver: nosuch: no such guest")
    assert vserver(vroot, "nosuch", "running").returncode == 1


@pytest.mark.parametrize("tool", ["vps", "vtop", "vkill"])
def test_an_unknown_context_number_is_no_such_context(vroot: Paths, tool: str) -> None:
    args = {"vps": ["ax", "--xid", "99999"], "vtop": ["-b", "-n", "1", "--xid", "99999"],
            "vkill": ["--xid", "99999"]}[tool]  # fmt: skip
    cmd = [sys.executable, "-m", f"vstui.cli.{tool}", "--root", str(vroot.root), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no guest has context 99999" in done.stderr, done
    assert done.stdout == ""


# -- delete: --force stops first, and every file of the guest goes -----------------
def _files_of(paths: Paths, name: str) -> list[str]:
    """Every path under the root that belongs to guest ``name`` (by its name)."""
    found = []
    for top, dirs, files in os.walk(paths.root):
        for entry in dirs + files:
            if entry == name or entry.startswith(name + "."):
                found.append(os.path.join(top, entry))
    xids = paths.state_dir / "xids"
    if xids.exists() and any(line.split()[:1] == [name] for line in xids.read_text().splitlines()):
        found.append(f"{xids}: {name}")
    return found


def test_delete_force_stops_the_guest_and_removes_every_file(vroot: Paths) -> None:
    import time

    # 9 MB on the console: the supervisor rotates the log to NAME.log.1
    name = build(vroot, {"V_INIT": "/bin/sh -c 'head -c 9000000 /dev/zero; exec sleep 100000'"})
    ok(vserver(vroot, name, "start"))
    ident = state.init_identity(vroot, name)
    assert ident is not None
    rotated = Path(f"{vroot.log_file(name)}.1")
    deadline = time.monotonic() + 60
    while not rotated.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    kinds = " ".join(_files_of(vroot, name))
    assert rotated.exists() and "boot-cache" in kinds, kinds
    done = vserver(vroot, name, "delete", "--force", timeout=120)
    assert done.returncode == 0, done.stderr
    assert not state.alive(*ident), "delete --force left the guest running"
    assert [d for d in cgroup_dirs(vroot) if d.endswith("/" + name)] == []
    assert _files_of(vroot, name) == []


def test_delete_without_force_refuses_a_running_guest(vroot: Paths) -> None:
    with Guest(vroot) as web:
        done = vserver(vroot, web.name, "delete")
        assert done.returncode == 1 and "is running" in done.stderr
        assert web.init_pid is not None and vroot.config_file(web.name).exists()


# -- stop never needs free disk space ---------------------------------------------
def _fill(directory: Path) -> None:
    """Use every block and every inode of the file system holding ``directory``."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    n = 0
    try:
        while True:
            os.close(os.open(directory / f"inode{n}", os.O_WRONLY | os.O_CREAT, 0o600))
            n += 1
    except OSError:
        pass


def test_stop_needs_no_free_disk_space(vroot: Paths) -> None:
    small = [vroot.run_base, vroot.log_dir]
    for where in small:
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64", "vstui-test",
                        str(where)], check=True)  # fmt: skip
    try:
        name = build(vroot)
        ok(vserver(vroot, name, "start"))
        ident = state.init_identity(vroot, name)
        assert ident is not None
        for where in small:
            _fill(where)
        done = vserver(vroot, name, "stop", timeout=120)
        assert done.returncode == 0, done.stderr
        assert not state.alive(*ident)
        assert [d for d in cgroup_dirs(vroot) if d.endswith("/" + name)] == []
        assert not vroot.run_dir(name).exists()
    finally:
        for where in small:
            subprocess.run(["umount", "-l", str(where)], check=False)


# -- a start killed at any instant leaves no guest or a supervised one -------------
def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0].decode()
    except OSError:
        return None


def _guest_pids(paths: Paths, name: str) -> set[int]:
    from engine.cgroups import manager

    cg = manager()
    rel = paths.cgroup_name(name)
    return set(cg.procs(rel)) if cg.exists(rel) else set()


def _settle(paths: Paths, name: str) -> str:
    """'none' or 'supervised' once the killed start's aftermath has settled;
    anything else (an unsupervised guest, a zombie supervisor) after 20 s."""
    import time

    deadline = time.monotonic() + 20
    seen = ""
    while time.monotonic() < deadline:
        run = state.read(paths, name)
        sup = runfile(paths, name, "supervisor.pid")
        pids = _guest_pids(paths, name)
        if run.running and sup and _proc_state(sup) not in (None, "Z"):
            return "supervised"
        if not run.running and not pids and (sup is None or _proc_state(sup) in (None,)):
            return "none"
        seen = f"running={run.running} supervisor={sup}:{_proc_state(sup) if sup else None} " \
               f"guest pids={sorted(pids)}"  # fmt: skip
        time.sleep(0.05)
    return seen


def runfile(paths: Paths, name: str, key: str) -> int | None:
    try:
        return int((paths.run_dir(name) / key).read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("path", ["python", "compiled"])
def test_a_start_killed_at_any_instant_is_crash_consistent(vroot: Paths, path: str) -> None:
    import signal
    import time

    name = build(vroot)
    ok(vserver(vroot, name, "start"))  # a Python start saves the boot cache
    ok(vserver(vroot, name, "stop"))
    argv = {"python": [sys.executable, "-m", "vstui.cli.vserver"], "compiled": [VSERVER_BIN]}
    env = {**os.environ, "VSTUI_FALLBACK": "0"} if path == "compiled" else None
    cmd = [*argv[path], "--root", str(vroot.root), name, "start"]
    began = time.monotonic()
    subprocess.run(cmd, env=env, check=True, timeout=120)  # how long a whole start takes now
    whole = time.monotonic() - began
    ok(vserver(vroot, name, "stop"))
    outcomes: list[tuple[int, str]] = []
    step = 0
    # kill points every 1/12 of a whole start, until two starts got through
    # (under load a start takes longer than the one measured)
    while [o for _, o in outcomes].count("supervised") < 2:
        assert step < 100, outcomes
        delay = whole * step / 12
        step += 1
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcome = _settle(vroot, name)
        outcomes.append((round(delay * 1000), outcome))
        assert outcome in ("none", "supervised"), outcomes
        stopped = vserver(vroot, name, "stop", timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert _guest_pids(vroot, name) == set() and not state.read(vroot, name).running
    assert outcomes[0][1] == "none", outcomes  # killed before anything happened
