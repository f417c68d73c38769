"""Per-guest /proc/meminfo and /proc/uptime (Linux-VServer's virt_mem, virt_uptime).

The renderers are pure: ``render_meminfo`` shows the guest's memory limit
as MemTotal and its cgroup usage as what is taken; ``render_uptime`` counts
from the guest's start. The runtime bind-mounts generated files over the
guest's /proc entries and refreshes them with ``write_view`` (in place:
a bind mount pins the inode, so a rename would never be seen).
"""

from __future__ import annotations

import os
import time

# the supervisor loads this module on its own: nothing heavy at import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from engine.paths import Paths

# Lines that describe memory in use: never more than the guest's usage.
POOL_KEYS = frozenset(
    {"Buffers", "Cached", "SwapCached", "Active", "Inactive", "Active(anon)",
     "Inactive(anon)", "Active(file)", "Inactive(file)", "Unevictable", "Mlocked", "Dirty",
     "Writeback", "AnonPages", "Mapped", "Shmem", "KReclaimable", "Slab", "SReclaimable",
     "SUnreclaim", "KernelStack", "PageTables", "SecPageTables", "NFS_Unstable", "Bounce",
     "WritebackTmp", "AnonHugePages", "ShmemHugePages", "ShmemPmdMapped", "FileHugePages",
     "FilePmdMapped", "Zswap", "Zswapped", "Percpu"}
)  # fmt: skip


def _line(key: str, kib: int) -> str:
    return f"{key + ':':<16}{kib:>8} kB"


def render_meminfo(limit: int | None, usage: int | None, host_meminfo_text: str) -> str:
    """The host's meminfo with MemTotal = ``limit`` and free = limit - usage (bytes).

    Without a limit, or with one above the host's memory, the host's text
    is returned unchanged: the guest really may use all of it.
    """
    lines = host_meminfo_text.splitlines()
    host_total = _value(lines, "MemTotal")
    if limit is None or (host_total is not None and limit // 1024 >= host_total):
        return host_meminfo_text
    total = limit // 1024
    used = min(max(usage or 0, 0) // 1024, total)
    free = total - used
    fixed = {"MemTotal": total, "MemFree": free, "MemAvailable": free}
    out = []
    for line in lines:
        key, _, rest = line.partition(":")
        words = rest.split()
        if key in fixed:
            out.append(_line(key, fixed[key]))
        elif key in POOL_KEYS and len(words) == 2 and words[1] == "kB":
            out.append(_line(key, min(int(words[0]), used)))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _value(lines: list[str], key: str) -> int | None:
    for line in lines:
        name, _, rest = line.partition(":")
        if name == key and rest.split():
            return int(rest.split()[0])
    return None


def render_uptime(started: float, now: float, idle: float) -> str:
    """``/proc/uptime`` for a guest started at ``started`` (epoch seconds)."""
    up = max(now - started, 0.0)
    return f"{up:.2f} {max(idle, 0.0):.2f}\n"


# -- reading the live values -----------------------------------------------


def guest_meminfo(paths: Paths, name: str, host_text: str | None = None) -> str:
    """meminfo for a running guest from its cgroup (host text if unknown)."""
    text = host_text if host_text is not None else _read("/proc/meminfo")
    try:
        from engine.cgroups import manager

        stats = manager().stats(paths.cgroup_name(name))
    except Exception:  # no cgroup support or guest gone: show the host's view
        return text
    return render_meminfo(stats.memory_limit, stats.memory_used, text)


def guest_uptime(paths: Paths, name: str, now: float | None = None) -> str:
    """uptime since run_dir/started; idle is the host's, scaled to that span."""
    started = float(_read(os.path.join(paths.run_dir(name), "started")).strip())
    wall = time.time() if now is None else now
    host_up, host_idle = (float(w) for w in _read("/proc/uptime").split()[:2])
    up = max(wall - started, 0.0)
    idle = host_idle * min(up / host_up, 1.0) if host_up > 0 else 0.0
    return render_uptime(started, wall, idle)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_view(path: str | Path, text: str) -> None:
    """Rewrite ``path`` in place (same inode) so a bind mount of it sees the new text."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
