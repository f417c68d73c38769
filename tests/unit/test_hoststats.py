"""engine.hoststats: the host's totals through psutil agree with the kernel's files."""

from __future__ import annotations

import os

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


def test_disk_counts_as_df() -> None:
    st = os.statvfs("/")
    used, total = hoststats.disk("/")
    assert total == st.f_blocks * st.f_frsize
    assert abs(used - (st.f_blocks - st.f_bfree) * st.f_frsize) < 64 << 20  # others write
