"""The data of engine.cgroups: limits to apply and stats read back."""

from __future__ import annotations

from engine._record import Record
from engine.errors import VstuiError


class Limits(Record):
    """A guest's resource limits; None means no limit (the kernel default)."""

    __slots__ = _fields = ("memory", "pids", "cpu_weight", "cpu_quota")
    _defaults = {"memory": None, "pids": None, "cpu_weight": None, "cpu_quota": None}
    memory: int | None  # bytes
    pids: int | None  # processes + threads
    cpu_weight: int | None  # 1..10000, default 100
    cpu_quota: float | None  # percent of one CPU (150 = 1.5 CPUs)

    def __post_init__(self) -> None:
        if self.memory is not None and self.memory < 4096:
            raise VstuiError(f"memory limit {self.memory} is too small; use at least 4K")
        if self.pids is not None and self.pids < 1:
            raise VstuiError(f"process limit {self.pids} must be at least 1")
        if self.cpu_weight is not None and not 1 <= self.cpu_weight <= 10000:
            raise VstuiError(f"CPU weight {self.cpu_weight} must be between 1 and 10000")
        if self.cpu_quota is not None and self.cpu_quota <= 0:
            raise VstuiError(f"CPU quota {self.cpu_quota}% must be above 0%")


class CgroupStats(Record):
    """One reading of a guest's cgroup; None when the host cannot tell."""

    __slots__ = _fields = (
        "memory_used",
        "memory_limit",
        "pids_current",
        "pids_limit",
        "cpu_usage_ns",
        "nproc",
    )
    memory_used: int | None  # bytes
    memory_limit: int | None  # bytes, None when unlimited
    pids_current: int | None
    pids_limit: int | None  # None when unlimited
    cpu_usage_ns: int | None  # total CPU time used, nanoseconds
    nproc: int | None  # processes (not threads) in the cgroup and below
