"""Host-wide totals: memory, swap, CPU times, load, boot time, disk use of a path.

psutil is the right tool here: one call per figure, the kernel's quirks
handled (MemAvailable on old kernels, swap accounting, the CPU time fields
of each kernel version), and the console and vtop import it once and keep
it. The bulk per-process read stays with engine.procs.scan, measured on
this machine (docs/engine-api.md): psutil's import alone costs 20-55 ms
(a whole ``vps`` run takes about 60) and ``process_iter`` reads each process
several times where the scanner reads /proc/PID/stat once.
"""

from __future__ import annotations

import os
import time

from engine._record import Record


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


def memory(proc_root: str = "/proc") -> tuple[int, int]:
    """(used, total) bytes of memory; used = total - available."""
    mem = _psutil(proc_root).virtual_memory()
    return mem.total - mem.available, mem.total


def uptime(proc_root: str = "/proc") -> float:
    """Seconds since the host booted."""
    return max(0.0, time.time() - _psutil(proc_root).boot_time())


def disk(path: str) -> tuple[int, int]:
    """(used, total) bytes of the file system holding ``path``, as df counts them."""
    import psutil

    usage = psutil.disk_usage(path)
    return usage.used, usage.total
