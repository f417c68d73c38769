"""The guest's /proc/meminfo view (Linux-VServer's virt_mem).

``render_guest_meminfo`` is pure: every line from the guest's memory cgroup
(engine.cgroups.memstat), MemTotal its limit. The start bind-mounts the
generated file over the guest's /proc/meminfo and the supervisor refreshes it
with ``write_view`` (in place: a bind mount pins the inode, so a rename would
never be seen). /proc/uptime needs no view: each guest has its own time
namespace, whose boot clock starts at its start.
"""

from __future__ import annotations

import os

# the supervisor loads this module on its own: nothing heavy at import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def _line(key: str, kib: int) -> str:
    return f"{key + ':':<16}{kib:>8} kB"


# /proc/meminfo line -> the cgroup figure it shows (engine.cgroups.memstat's names)
FROM_FIGURE = {
    "SwapCached": "swapcached", "Active(anon)": "active_anon", "Inactive(anon)": "inactive_anon",
    "Active(file)": "active_file", "Inactive(file)": "inactive_file",
    "Unevictable": "unevictable", "Mlocked": "unevictable", "Zswap": "zswap",
    "Zswapped": "zswapped", "Dirty": "file_dirty", "Writeback": "file_writeback",
    "AnonPages": "anon", "Mapped": "file_mapped", "Shmem": "shmem",
    "KReclaimable": "slab_reclaimable", "SReclaimable": "slab_reclaimable",
    "SUnreclaim": "slab_unreclaimable", "KernelStack": "kernel_stack",
    "PageTables": "pagetables", "SecPageTables": "sec_pagetables", "VmallocUsed": "vmalloc",
    "Percpu": "percpu", "AnonHugePages": "anon_thp", "ShmemHugePages": "shmem_thp",
    "FileHugePages": "file_thp",
}  # fmt: skip
# kernel constants, not memory use: the host's value is the guest's too
CONSTANT_LINES = frozenset({"VmallocTotal", "Hugepagesize"})


def _host_kib(lines: list[str]) -> dict[str, int]:
    out = {}
    for line in lines:
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            out[key] = int(words[0])
    return out


def guest_memory(figures: dict[str, int], host: dict[str, int]) -> dict[str, int]:
    """Every /proc/meminfo value (kB) of a guest, from its memory cgroup's ``figures``.

    MemTotal is the guest's limit (the host's memory when that is less or
    there is none); free is what the limit leaves, never more than the host
    has free; MemAvailable adds the guest's reclaimable page cache and slab.
    Lines no cgroup counts (Buffers, Bounce, huge page pools ...) are 0.
    """
    kib = {key: value // 1024 for key, value in figures.items()}
    host_total = host.get("MemTotal", 0)
    total = min(kib["limit"], host_total) if "limit" in kib and host_total else (
        kib.get("limit") or host_total)  # fmt: skip
    usage = min(kib.get("usage", 0), total)
    free = max(min(total - usage, host.get("MemFree", total)), 0)
    reclaim = sum(kib.get(k, 0) for k in ("active_file", "inactive_file", "slab_reclaimable"))
    available = min(total - usage + reclaim, host.get("MemAvailable", total), total)
    swap_total = min(kib.get("swap_limit", host.get("SwapTotal", 0)), host.get("SwapTotal", 0))
    swap_free = max(min(swap_total - kib.get("swap_usage", 0), host.get("SwapFree", 0)), 0)
    slab = kib.get("slab", kib.get("slab_reclaimable", 0) + kib.get("slab_unreclaimable", 0))
    host_swap = host.get("SwapTotal", 0)
    ratio = (host.get("CommitLimit", 0) - host_swap) / host_total if host_total else 0.5
    values = {key: kib.get(name, 0) for key, name in FROM_FIGURE.items()}
    values.update({
        "MemTotal": total, "MemFree": free, "MemAvailable": max(available, 0),
        "Cached": min(kib.get("file", 0), usage),
        "Active": kib.get("active_anon", 0) + kib.get("active_file", 0),
        "Inactive": kib.get("inactive_anon", 0) + kib.get("inactive_file", 0),
        "SwapTotal": swap_total, "SwapFree": swap_free, "Slab": slab,
        "CommitLimit": int(total * ratio) + swap_total,
        "Committed_AS": kib.get("anon", 0) + kib.get("shmem", 0) + kib.get("swap_usage", 0),
        "DirectMap4k": total,
    })  # fmt: skip
    return values


def render_guest_meminfo(figures: dict[str, int], host_meminfo_text: str) -> str:
    """The guest's /proc/meminfo: the host's lines in the host's order, every value the guest's.

    ``figures``: ``engine.cgroups.memstat.read`` of the guest's memory cgroup.
    """
    lines = host_meminfo_text.splitlines()
    host = _host_kib(lines)
    values = guest_memory(figures, host)
    out = []
    for line in lines:
        key, _, rest = line.partition(":")
        words = rest.split()
        if key in CONSTANT_LINES or not words:
            out.append(line)
        elif len(words) == 2 and words[1] == "kB":
            out.append(_line(key, values.get(key, 0)))
        else:
            out.append(f"{key + ':':<16}{0:>8}")  # a count (HugePages_*): no pool in a guest
    return "\n".join(out) + "\n"


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
