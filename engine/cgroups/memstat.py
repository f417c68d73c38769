"""A memory cgroup's figures, the same names on v1 and v2 (what a guest's /proc/meminfo shows).

A leaf module (only ``os``): the lean supervisor loads it on its own once a
second per guest. ``read(directory)`` takes the guest's directory in the
memory hierarchy and returns bytes under cgroup v2's memory.stat names
(Documentation/admin-guide/cgroup-v2.rst), plus:

- ``limit``: the smallest memory limit on the way up to the hierarchy's
  root (v1 reports it as ``hierarchical_memory_limit``; v2 is walked);
  absent when nothing limits the guest;
- ``usage``: memory.current / memory.usage_in_bytes (page cache included);
- ``swap_limit``, ``swap_usage``: swap the guest may use and uses (v1:
  memsw minus memory, with swap accounting only).

v1's memory.stat has no slab, kernel stack or page table lines; the v1
kmem counter (memory.kmem.usage_in_bytes, mostly slab) becomes ``kernel``,
``slab`` and ``slab_unreclaimable``.
"""

from __future__ import annotations

import os

UNLIMITED = 1 << 62  # at or above this a limit is "max" (v1 prints PAGE_COUNTER_MAX pages)

# v1 memory.stat (hierarchical total_* lines) -> v2 names
V1_NAMES = {
    "total_cache": "file", "total_rss": "anon", "total_rss_huge": "anon_thp",
    "total_shmem": "shmem", "total_mapped_file": "file_mapped", "total_dirty": "file_dirty",
    "total_writeback": "file_writeback", "total_swapcached": "swapcached",
    "total_inactive_anon": "inactive_anon", "total_active_anon": "active_anon",
    "total_inactive_file": "inactive_file", "total_active_file": "active_file",
    "total_unevictable": "unevictable",
}  # fmt: skip


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _number(text: str | None) -> int | None:
    """An integer control file's value; None for "max", missing or garbage."""
    if text is None:
        return None
    word = text.strip()
    if not word.isdigit():
        return None
    value = int(word)
    return value if value < UNLIMITED else None


def parse_stat(text: str) -> dict[str, int]:
    """memory.stat lines ``name value`` as a dict (v1 names are kept as they are)."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def read(directory: str) -> dict[str, int]:
    """The figures of the memory cgroup at ``directory`` (v1 or v2, told by its files)."""
    if os.path.exists(os.path.join(directory, "memory.usage_in_bytes")):
        return read_v1(directory)
    return read_v2(directory)


def read_v1(directory: str) -> dict[str, int]:
    raw = parse_stat(_read(os.path.join(directory, "memory.stat")) or "")
    figures = {new: raw[old] for old, new in V1_NAMES.items() if old in raw}
    usage = _number(_read(os.path.join(directory, "memory.usage_in_bytes")))
    if usage is not None:
        figures["usage"] = usage
    limit = raw.get("hierarchical_memory_limit")
    if limit is not None and limit < UNLIMITED:
        figures["limit"] = limit
    kernel = _number(_read(os.path.join(directory, "memory.kmem.usage_in_bytes")))
    if kernel is not None:  # mostly slab; counted as unreclaimable to stay on the safe side
        figures["kernel"] = figures["slab"] = figures["slab_unreclaimable"] = kernel
    memsw = raw.get("hierarchical_memsw_limit")
    memsw_usage = _number(_read(os.path.join(directory, "memory.memsw.usage_in_bytes")))
    if memsw is not None and memsw < UNLIMITED and limit is not None and limit < UNLIMITED:
        figures["swap_limit"] = max(memsw - limit, 0)
    if memsw_usage is not None and usage is not None:
        figures["swap_usage"] = max(memsw_usage - usage, 0)
    return figures


def read_v2(directory: str) -> dict[str, int]:
    figures = parse_stat(_read(os.path.join(directory, "memory.stat")) or "")
    usage = _number(_read(os.path.join(directory, "memory.current")))
    if usage is not None:
        figures["usage"] = usage
    for key, name in (("limit", "memory.max"), ("swap_limit", "memory.swap.max")):
        limit = _smallest_up(directory, name)
        if limit is not None:
            figures[key] = limit
    swap = _number(_read(os.path.join(directory, "memory.swap.current")))
    if swap is not None:
        figures["swap_usage"] = swap
    return figures


def _smallest_up(directory: str, name: str) -> int | None:
    """The smallest ``name`` from ``directory`` up to the hierarchy's root (which has none)."""
    smallest = None
    while os.path.exists(os.path.join(directory, name)):
        value = _number(_read(os.path.join(directory, name)))
        if value is not None and (smallest is None or value < smallest):
            smallest = value
        directory = os.path.dirname(directory)
    return smallest
