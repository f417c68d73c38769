"""The guest's /proc/meminfo view (Linux-VServer's virt_mem).

``render_meminfo`` is pure: it shows the guest's memory limit as MemTotal
and its cgroup usage as what is taken. The start bind-mounts the generated
file over the guest's /proc/meminfo and the supervisor refreshes it with
``write_view`` (in place: a bind mount pins the inode, so a rename would
never be seen). /proc/uptime needs no view: each guest has its own time
namespace, whose boot clock starts at its start.
"""

from __future__ import annotations

import os

# the supervisor loads this module on its own: nothing heavy at import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


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


# -- reading the live values -----------------------------------------------


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
