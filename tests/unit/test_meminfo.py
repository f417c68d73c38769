"""A guest's /proc/meminfo from its memory cgroup: engine.cgroups.memstat and procview."""

from __future__ import annotations

from pathlib import Path

from engine.cgroups import memstat
from engine.rootfs import procview

MIB = 1 << 20
HOST = """\
MemTotal:       16384000 kB
MemFree:         8000000 kB
MemAvailable:   12000000 kB
Buffers:          500000 kB
Cached:          3000000 kB
SwapCached:         1000 kB
Active:          2000000 kB
Inactive:        2000000 kB
Mlocked:           20000 kB
SwapTotal:       4000000 kB
SwapFree:        3900000 kB
AnonPages:       2000000 kB
Shmem:             90000 kB
Slab:             400000 kB
SReclaimable:     300000 kB
SUnreclaim:       100000 kB
CommitLimit:    12192000 kB
Committed_AS:    9000000 kB
VmallocTotal:   34359738367 kB
HugePages_Total:       4
Hugepagesize:       2048 kB
DirectMap4k:      500000 kB
DirectMap2M:    16000000 kB
"""

V1_STAT = """\
cache 1000
rss 2000
total_cache 104857600
total_rss 31457280
total_rss_huge 0
total_shmem 10485760
total_mapped_file 5242880
total_dirty 1048576
total_writeback 0
total_swapcached 0
total_inactive_anon 20971520
total_active_anon 20971520
total_inactive_file 62914560
total_active_file 31457280
total_unevictable 0
hierarchical_memory_limit 268435456
hierarchical_memsw_limit 536870912
"""


def _files(directory: Path, files: dict[str, str]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return str(directory)


def _meminfo(text: str) -> dict[str, int]:
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in text.splitlines())}


def test_v1_figures_are_hierarchical_and_named_as_on_v2(tmp_path: Path) -> None:
    guest = _files(tmp_path / "memory/vstui/web", {
        "memory.stat": V1_STAT, "memory.usage_in_bytes": str(150 * MIB),
        "memory.kmem.usage_in_bytes": str(8 * MIB),
        "memory.memsw.usage_in_bytes": str(160 * MIB),
    })  # fmt: skip
    figures = memstat.read(guest)
    assert figures["limit"] == 256 * MIB and figures["usage"] == 150 * MIB
    assert figures["file"] == 100 * MIB and figures["anon"] == 30 * MIB
    assert figures["shmem"] == 10 * MIB and figures["slab"] == 8 * MIB
    assert figures["swap_limit"] == 256 * MIB and figures["swap_usage"] == 10 * MIB


def test_v1_unlimited(tmp_path: Path) -> None:
    stat = V1_STAT.replace("268435456", "9223372036854771712").replace(
        "536870912", "9223372036854771712"
    )
    guest = _files(tmp_path, {"memory.stat": stat, "memory.usage_in_bytes": "100"})
    figures = memstat.read(guest)
    assert "limit" not in figures and "swap_limit" not in figures


def test_v2_limit_is_the_smallest_on_the_way_up(tmp_path: Path) -> None:
    top = _files(tmp_path / "vstui", {"memory.max": str(128 * MIB), "memory.swap.max": "max"})
    guest = _files(tmp_path / "vstui/web", {
        "memory.max": "max", "memory.swap.max": str(64 * MIB), "memory.current": str(MIB),
        "memory.swap.current": "0", "memory.stat": "anon 1048576\nfile 0\nslab 4096\n",
    })  # fmt: skip
    figures = memstat.read(guest)
    assert top and figures["limit"] == 128 * MIB and figures["swap_limit"] == 64 * MIB
    assert figures["anon"] == MIB and figures["usage"] == MIB and figures["slab"] == 4096


def test_every_line_is_the_guests(tmp_path: Path) -> None:
    """free(1) in a 256 MiB guest using 150 MiB of which 100 MiB page cache."""
    guest = _files(tmp_path, {
        "memory.stat": V1_STAT, "memory.usage_in_bytes": str(150 * MIB),
        "memory.kmem.usage_in_bytes": str(8 * MIB),
    })  # fmt: skip
    text = procview.render_guest_meminfo(memstat.read(guest), HOST)
    info = _meminfo(text)
    assert info["MemTotal"] == 256 * 1024
    assert info["MemFree"] == (256 - 150) * 1024
    # page cache can be reclaimed: available is more than free
    assert info["MemAvailable"] == (256 - 150 + 30 + 60) * 1024
    assert info["Buffers"] == 0 and info["Cached"] == 100 * 1024
    assert info["Shmem"] == 10 * 1024 and info["Mlocked"] == 0 and info["Slab"] == 8 * 1024
    assert info["Active"] == 50 * 1024 and info["Inactive"] == 80 * 1024
    # what free(1) computes: used = total - free - buffers - cache - SReclaimable
    used = info["MemTotal"] - info["MemFree"] - info["Buffers"] - info["Cached"]
    assert used == 50 * 1024 and used >= 0
    # nothing of the host's shows: host-only pools are 0, DirectMap sums to the guest's total
    assert info["SwapCached"] == 0 and info["HugePages_Total"] == 0
    assert info["DirectMap4k"] + info["DirectMap2M"] == info["MemTotal"]
    assert info["VmallocTotal"] == 34359738367 and info["Hugepagesize"] == 2048
    assert info["SwapTotal"] == info["SwapFree"] == 256 * 1024  # memsw limit - memory limit
    assert list(info) == list(_meminfo(HOST))  # the host's lines, in its order


def test_guest_without_a_limit_sees_the_hosts_free_memory() -> None:
    figures = {"usage": 200 * MIB, "file": 50 * MIB, "anon": 150 * MIB}
    info = _meminfo(procview.render_guest_meminfo(figures, HOST))
    assert info["MemTotal"] == 16384000
    assert info["MemFree"] == 8000000  # the host's free, not total - guest's usage
    assert info["Cached"] == 50 * 1024 and info["AnonPages"] == 150 * 1024


def test_over_the_limit_and_swap() -> None:
    figures = {"limit": 64 * MIB, "usage": 128 * MIB, "swap_limit": 32 * MIB,
               "swap_usage": 8 * MIB}  # fmt: skip
    info = _meminfo(procview.render_guest_meminfo(figures, HOST))
    assert info["MemFree"] == 0 and info["MemAvailable"] == 0
    assert info["SwapTotal"] == 32 * 1024 and info["SwapFree"] == 24 * 1024
    assert info["CommitLimit"] == int(64 * 1024 * (12192000 - 4000000) / 16384000) + 32 * 1024
