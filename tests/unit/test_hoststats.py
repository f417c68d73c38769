"""engine.hoststats: the host's totals through psutil agree with the kernel's files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from engine import hoststats


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in f)}


def test_totals_are_the_kernels() -> None:
    info, host = _meminfo(), hoststats.totals()
    assert host.mem_total == info["MemTotal"]
    assert host.swap_total == info["SwapTotal"]
    assert 0 < host.mem_used <= host.mem_total and host.mem_available <= host.mem_total
    with open("/proc/uptime") as f:
        assert abs(host.uptime - float(f.read().split()[0])) < 5  # btime is whole seconds
    assert len(host.cpu) == len(hoststats.CPU_FIELDS) and host.cpu[3] > 0  # idle
    assert hoststats.memory()[1] == info["MemTotal"]


def test_disk_counts_as_df_and_psutil() -> None:
    import psutil

    st = os.statvfs("/")
    used, total, inodes_used, inodes_total = hoststats.disk("/")
    assert total == st.f_blocks * st.f_frsize == psutil.disk_usage("/").total
    assert abs(used - (st.f_blocks - st.f_bfree) * st.f_frsize) < 64 << 20  # others write
    assert abs(used - psutil.disk_usage("/").used) < 64 << 20
    assert inodes_total == st.f_files and abs(inodes_used - (st.f_files - st.f_ffree)) < 1000


def test_memory_and_uptime_as_psutil_counts_them() -> None:
    """Read directly (two lines of meminfo, the boot clock), the same figures."""
    import psutil

    used, total = hoststats.memory()
    mem = psutil.virtual_memory()
    assert total == mem.total and abs(used - (mem.total - mem.available)) < 64 << 20
    with open("/proc/uptime") as f:
        assert abs(hoststats.uptime() - float(f.read().split()[0])) < 1
    assert abs(hoststats.uptime() - (time.time() - psutil.boot_time())) < 2  # btime: whole s


def test_memory_of_a_recorded_tree_without_memavailable_falls_back_to_psutil(
    tmp_path: Path,
) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 400 kB\nBuffers: 0 kB\n")
    (tmp_path / "uptime").write_text("123.5 456.0\n")
    used, total = hoststats.memory(str(tmp_path))
    assert total == 1000 * 1024 and 0 <= used <= total
    assert hoststats.uptime(str(tmp_path)) == 123.5
