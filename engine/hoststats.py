"""Host-wide totals: memory, swap, CPU times, load, boot time, disk use of a path.

psutil is the right tool here: one call per figure, the kernel's quirks
handled (MemAvailable on old kernels, swap accounting, the CPU time fields
of each kernel version), and the console and vtop import it once and keep
it. The console's poll every second reads its few figures (memory, uptime,
disk) directly instead (see each). The bulk per-process read stays with
engine.procs.scan, measured on this machine (docs/engine-api.md): psutil's
import alone costs 20-55 ms (a whole ``vps`` run takes about 60) and
``process_iter`` reads each process several times where the scanner reads
/proc/PID/stat once.
"""

from __future__ import annotations

import os
import time

from engine._record import Record
from engine.procfs import KeptFile


class Totals(Record):
    """The host's totals now; bytes, seconds and CPU ticks as psutil reports them."""

    __slots__ = _fields = ("mem_total", "mem_used", "mem_free", "mem_available", "mem_cached",
                           "swap_total", "swap_used", "load", "boot", "cpu")  # fmt: skip
    mem_total: int
    mem_used: int  # total - available, as procps 4 and htop count it
    mem_free: int
    mem_available: int
    mem_cached: int  # buffers + page cache + reclaimable slab (psutil's cached has it)
    swap_total: int
    swap_used: int
    load: tuple[float, float, float]
    boot: float  # epoch seconds
    cpu: tuple[float, ...]  # user nice system idle iowait irq softirq steal (seconds)

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.boot)


def _psutil(proc_root: str):
    import psutil

    psutil.PROCFS_PATH = proc_root  # psutil's own knob: where its /proc readers look
    return psutil


def totals(proc_root: str = "/proc") -> Totals:
    psutil = _psutil(proc_root)
    mem, swap, cpu = psutil.virtual_memory(), psutil.swap_memory(), psutil.cpu_times()
    return Totals(
        mem_total=mem.total, mem_used=mem.total - mem.available, mem_free=mem.free,
        mem_available=mem.available, mem_cached=mem.buffers + mem.cached, swap_total=swap.total,
        swap_used=swap.used, load=os.getloadavg(), boot=psutil.boot_time(),
        cpu=tuple(getattr(cpu, f, 0.0) for f in CPU_FIELDS),
    )  # fmt: skip


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def memory(proc_root: str = "/proc", kept: KeptFile | None = None) -> tuple[int, int]:
    """(used, total) bytes of memory; used = total - available, as procps 4 and htop.

    The first lines of /proc/meminfo (engine.procs.scan's reader): psutil's
    virtual_memory parses the whole file and works out a dozen figures the
    console does not show (84 us of its poll every second, against 20).
    psutil where a kernel older than 3.14 has no MemAvailable (it estimates one).
    ``kept``: the live /proc/meminfo, kept open (the console's poll).
    """
    from engine.procs.scan import read_meminfo

    info = read_meminfo(proc_root, until="MemAvailable", kept=kept)
    if "MemTotal" not in info or "MemAvailable" not in info:
        mem = _psutil(proc_root).virtual_memory()
        return mem.total - mem.available, mem.total
    return info["MemTotal"] - info["MemAvailable"], info["MemTotal"]


def uptime(proc_root: str = "/proc") -> float:
    """Seconds since the host booted: CLOCK_BOOTTIME, the clock /proc/uptime reads
    (fs/proc/uptime.c), without a file read; a recorded tree's own file else."""
    if proc_root == "/proc":
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    from engine.procs.scan import read_uptime

    return read_uptime(proc_root)


def disk(path: str) -> tuple[int, int, int, int]:
    """(used, total) bytes of the file system holding ``path``, as df counts them
    (psutil.disk_usage's figures), then its (used, total) inodes: one statvfs."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return total - st.f_bfree * st.f_frsize, total, st.f_files - st.f_ffree, st.f_files
