"""cgroup v1 backend: each controller in its own hierarchy (and hybrid hosts).

memory.limit_in_bytes, pids.max, cpu.shares, cpu.cfs_quota_us /
cpu.cfs_period_us, freezer.state, memory.usage_in_bytes, pids.current,
cpuacct.usage. On a hybrid host the guest also gets a directory in the
(controller-less) v2 hierarchy so its cgroup namespace is clean there.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

from engine.cgroups.base import (
    Freezer,
    Tree,
    check_rel,
    guest_of,
    quota_us,
    read_int,
    write,
)
from engine.cgroups.data import CgroupStats, Limits
from engine.cgroups.probe import Hierarchy, Layout
from engine.errors import KernelError

CFS_PERIOD_US = 100_000
# The kernel reports "no limit" as PAGE_COUNTER_MAX pages: anything this big is unlimited.
UNLIMITED_BYTES = 1 << 62


def weight_to_shares(weight: int) -> int:
    """cgroup v2 weight (1..10000, default 100) -> v1 cpu.shares (default 1024)."""
    return max(2, weight * 1024 // 100)


def quota_to_cfs(percent: float, period: int = CFS_PERIOD_US) -> int:
    """Percent of one CPU -> cpu.cfs_quota_us for ``period`` (at least 1 ms)."""
    return quota_us(percent, period)


def memory_limit(value: int | None) -> int | None:
    """memory.limit_in_bytes as read -> bytes, or None when unlimited."""
    return None if value is None or value >= UNLIMITED_BYTES else value


class V1Cgroups(Tree):
    kind = "v1"

    def __init__(self, layout: Layout) -> None:
        hierarchies = layout.hierarchies
        primary = (
            layout.controller("pids")
            or layout.controller("freezer")
            or layout.controller("memory")
            or hierarchies[0]
        )
        super().__init__(hierarchies, primary)
        self.kind = layout.kind
        self._by_controller = {c: h for h in hierarchies for c in h.controllers}

    def _dir(self, controller: str, rel: str) -> Path | None:
        h: Hierarchy | None = self._by_controller.get(controller)
        return h.mount.joinpath(*check_rel(rel)) if h else None

    def _need(self, controller: str, rel: str, what: str) -> Path:
        directory = self._dir(controller, rel)
        if directory is None:
            raise KernelError(
                "write", f"{controller} cgroup", errno.ENODEV, guest_of(rel),
                f"{what} needs the {controller} controller, which this host does not mount",
            )  # fmt: skip
        return directory

    def apply(self, rel: str, limits: Limits) -> None:
        guest = guest_of(rel)
        memory = self._dir("memory", rel)
        if limits.memory is not None or memory is not None:
            memory = self._need("memory", rel, "a memory limit")
            value = str(limits.memory) if limits.memory is not None else "-1"
            write(memory / "memory.limit_in_bytes", value, guest, "memory limit below current use")
        pids = self._dir("pids", rel)
        if limits.pids is not None or pids is not None:
            pids = self._need("pids", rel, "a process limit")
            write(pids / "pids.max", str(limits.pids) if limits.pids else "max", guest)
        cpu = self._dir("cpu", rel)
        if limits.cpu_weight is not None or limits.cpu_quota is not None or cpu is not None:
            cpu = self._need("cpu", rel, "a CPU weight or quota")
            shares = weight_to_shares(limits.cpu_weight) if limits.cpu_weight else 1024
            write(cpu / "cpu.shares", str(shares), guest)
            write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US), guest)
            quota = quota_to_cfs(limits.cpu_quota) if limits.cpu_quota else -1
            write(cpu / "cpu.cfs_quota_us", str(quota), guest)

    def memory_dir(self, rel: str) -> Path | None:
        return self._dir("memory", rel)

    def gauge_files(self, rel: str) -> tuple[str | None, ...]:
        memory, pids = self._dir("memory", rel), self._dir("pids", rel)
        mem = (f"{memory}/memory.usage_in_bytes", f"{memory}/memory.limit_in_bytes")
        return (*(mem if memory else (None, None)), f"{pids}/pids.max" if pids else None)

    unlimited_as_none = staticmethod(memory_limit)

    def stats(self, rel: str) -> CgroupStats:
        memory = self._dir("memory", rel)
        pids = self._dir("pids", rel)
        cpuacct = self._dir("cpuacct", rel)
        return CgroupStats(
            memory_used=read_int(memory / "memory.usage_in_bytes") if memory else None,
            memory_limit=memory_limit(read_int(memory / "memory.limit_in_bytes"))
            if memory
            else None,
            pids_current=read_int(pids / "pids.current") if pids else None,
            pids_limit=read_int(pids / "pids.max") if pids else None,
            cpu_usage_ns=read_int(cpuacct / "cpuacct.usage") if cpuacct else None,
            nproc=len(self.procs(rel)) if self.exists(rel) else None,
        )

    def freezer(self, rel: str) -> Freezer | None:
        """The v1 freezer controller; else the cgroup2 core freezer of a hybrid host."""
        directory = self._dir("freezer", rel)
        if directory is not None:
            return Freezer(1, directory, guest_of(rel))
        unified = next((h for h in self.hierarchies if h.version == 2), None)
        if unified is None:
            return None
        return Freezer(2, unified.mount.joinpath(*check_rel(rel)), guest_of(rel))

    def _kill_pass(self, rel: str, pids: list[int], killed: set[int], deadline: float) -> None:
        """Freeze, SIGKILL every process, thaw: nobody forks away meanwhile."""
        freezer = self.freezer(rel)
        if freezer is None or not freezer.directory.is_dir():
            self._kill_round(rel, killed)
            return
        freezer.request(True)
        try:
            # FREEZING until every task stopped; a task in D state may keep it there
            freezer.wait(min(deadline, time.monotonic() + 1.0))
        except OSError:
            pass
        try:
            self._kill_round(rel, killed)
        finally:
            freezer.request(False)
