"""cgroup v2 backend: one unified hierarchy.

memory.max, pids.max, cpu.weight, cpu.max ("quota period"), cgroup.kill
(fallback: cgroup.freeze + SIGKILL each), memory.current, pids.current,
cpu.stat usage_usec.
"""

from __future__ import annotations

import errno
import os
import select
import time
from pathlib import Path

from engine.cgroups.base import (
    Freezer,
    Tree,
    check_rel,
    guest_of,
    planning,
    quota_us,
    read_int,
    read_text,
    write,
)
from engine.cgroups.data import CgroupStats, Limits
from engine.cgroups.probe import Hierarchy, Layout
from engine.errors import KernelError

CPU_MAX_PERIOD_US = 100_000


def cpu_max(percent: float | None, period: int = CPU_MAX_PERIOD_US) -> str:
    """cpu.max value for a quota in percent of one CPU; "max" when None."""
    if percent is None:
        return f"max {period}"
    return f"{quota_us(percent, period)} {period}"


def usage_usec(cpu_stat: str) -> int | None:
    """usage_usec from cpu.stat's "key value" lines."""
    for line in cpu_stat.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    return None


class V2Cgroups(Tree):
    kind = "v2"

    def __init__(self, layout: Layout) -> None:
        unified = layout.unified
        assert unified is not None
        super().__init__((unified,), unified)
        self.hierarchy = unified

    def _enable_below(self, h: Hierarchy, directory: Path, guest: str) -> None:
        """Delegate our controllers to the children of ``directory``."""
        try:
            enabled = set(read_text(directory / "cgroup.subtree_control").split())
        except OSError:
            if not planning() or directory.exists():
                return
            enabled = set()  # planned, not made yet: its children get our controllers too
        missing = sorted(h.controllers - enabled)
        if missing:
            write(
                directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing), guest,
                "a v2 cgroup with processes of its own cannot delegate controllers",
            )  # fmt: skip

    def _dir(self, rel: str) -> Path:
        return self.hierarchy.mount.joinpath(*check_rel(rel))

    def _check(self, controller: str, rel: str, what: str) -> None:
        if controller not in self.hierarchy.controllers:
            raise KernelError(
                "write", str(self._dir(rel)), errno.ENODEV, guest_of(rel),
                f"{what} needs the {controller} controller, which this host's cgroup2 lacks",
            )  # fmt: skip

    def apply(self, rel: str, limits: Limits) -> None:
        guest = guest_of(rel)
        directory = self._dir(rel)
        have = self.hierarchy.controllers
        if limits.memory is not None or "memory" in have:
            self._check("memory", rel, "a memory limit")
            value = str(limits.memory) if limits.memory is not None else "max"
            write(directory / "memory.max", value, guest, "memory limit below current use")
        if limits.pids is not None or "pids" in have:
            self._check("pids", rel, "a process limit")
            write(directory / "pids.max", str(limits.pids) if limits.pids else "max", guest)
        if limits.cpu_weight is not None or limits.cpu_quota is not None or "cpu" in have:
            self._check("cpu", rel, "a CPU weight or quota")
            write(directory / "cpu.weight", str(limits.cpu_weight or 100), guest)
            write(directory / "cpu.max", cpu_max(limits.cpu_quota), guest)

    def memory_dir(self, rel: str) -> Path | None:
        return self._dir(rel) if "memory" in self.hierarchy.controllers else None

    def gauge_files(self, rel: str) -> tuple[str | None, ...]:
        directory, have = self._dir(rel), self.hierarchy.controllers
        mem = (f"{directory}/memory.current", f"{directory}/memory.max")
        return (*(mem if "memory" in have else (None, None)),
                f"{directory}/pids.max" if "pids" in have else None)  # fmt: skip

    def stats(self, rel: str) -> CgroupStats:
        directory = self._dir(rel)
        have = self.hierarchy.controllers
        try:
            cpu = usage_usec(read_text(directory / "cpu.stat"))
        except (OSError, ValueError):
            cpu = None
        return CgroupStats(
            memory_used=read_int(directory / "memory.current") if "memory" in have else None,
            memory_limit=read_int(directory / "memory.max") if "memory" in have else None,
            pids_current=read_int(directory / "pids.current") if "pids" in have else None,
            pids_limit=read_int(directory / "pids.max") if "pids" in have else None,
            cpu_usage_ns=cpu * 1000 if cpu is not None else None,
            nproc=len(self.procs(rel)) if directory.is_dir() else None,
        )

    def freezer(self, rel: str) -> Freezer | None:
        """The core freezer (cgroup.freeze, kernel 5.2+): every non-root cgroup has it."""
        return Freezer(2, self._dir(rel), guest_of(rel))

    def _wait_empty(self, rel: str, deadline: float) -> bool:
        """Until ``populated 0`` (the subtree's last process has exited), by event:
        cgroup.events notifies its changes, poll() POLLPRI (cgroup-v2.rst
        "cgroup.events"; a read rearms it, fs/kernfs/file.c kernfs_seq_show)."""
        try:
            fd = os.open(os.path.join(self._dir(rel), "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return super()._wait_empty(rel, deadline)  # no such file: read cgroup.procs
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI)
            while b"populated 1" in os.pread(fd, 4096, 0):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                poller.poll(left * 1000)
            return True
        finally:
            os.close(fd)

    def _kill_pass(self, rel: str, pids: list[int], killed: set[int], deadline: float) -> None:
        """cgroup.kill (5.14+), else freeze + SIGKILL each."""
        guest = guest_of(rel)
        directory = self._dir(rel)
        if (directory / "cgroup.kill").exists():
            killed.update(pids)
            write(directory / "cgroup.kill", "1", guest)
        elif (directory / "cgroup.freeze").exists():
            freezer = Freezer(2, directory, guest)
            freezer.request(True)
            try:
                self._kill_round(rel, killed)
            finally:
                freezer.request(False)
        else:
            self._kill_round(rel, killed)
