"""Scanner + attribution + CPU% deltas: the process table of one refresh.

``ProcessTable`` keeps the scanner's cache and the previous sample so that
each refresh costs one /proc/PID/stat read per process plus one cgroup
member list per running guest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.observe.model import HOST_NAME, HOST_XID, ProcRow
from engine.paths import Paths
from engine.procs.attribution import Attribution, RunInfo, attribute, running_guests
from engine.procs.scan import CLK_TCK, Proc, Scanner, tty_name

_USERS: dict[int, str] | None = None


def user_name(uid: int) -> str:
    """Name of a host uid from a map built once from the passwd database."""
    global _USERS
    if _USERS is None:
        import pwd

        users: dict[int, str] = {}
        try:
            for entry in pwd.getpwall():
                users.setdefault(entry.pw_uid, entry.pw_name)
        except OSError:
            pass
        _USERS = users
    return _USERS.get(uid) or str(uid)


@dataclass(frozen=True, slots=True)
class Table:
    """Every process of one refresh, attributed to contexts."""

    taken: float  # time.monotonic()
    wall: float  # time.time()
    rows: tuple[ProcRow, ...]  # sorted by pid
    attribution: Attribution
    elapsed: float | None  # seconds since the previous refresh (None at first)

    def by_xid(self) -> dict[int, list[ProcRow]]:
        out: dict[int, list[ProcRow]] = {}
        for row in self.rows:
            out.setdefault(row.xid, []).append(row)
        return out


def command_of(proc: Proc) -> str:
    """argv joined, or ``[comm]`` for kernel threads and zombies (as ps)."""
    return proc.cmdline or f"[{proc.comm}]"


class ProcessTable:
    """Repeated refreshes of the process table, with CPU% between them."""

    def __init__(
        self,
        paths: Paths,
        proc_root: str | os.PathLike[str] = "/proc",
        cgroup_fs: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = paths
        self.clock = clock
        self.scanner = Scanner(proc_root)
        self.cgroup_fs = cgroup_fs
        self._prev_ticks: dict[tuple[int, int], int] = {}
        self._prev_time: float | None = None

    def refresh(self, guests: list[RunInfo] | None = None) -> Table:
        if guests is None:
            guests = running_guests(self.paths, self.scanner.proc_root)
        attribution = attribute(self.paths, self.cgroup_fs, guests)
        wall = time.time()
        procs = self.scanner.scan(want_nspid=attribution.by_pid.keys())
        now = self.clock()
        elapsed = None if self._prev_time is None else max(now - self._prev_time, 1e-6)
        rows = self._rows(procs, attribution, elapsed)
        self._prev_time = now
        return Table(now, wall, rows, attribution, elapsed)

    def _rows(
        self, procs: dict[int, Proc], attribution: Attribution, elapsed: float | None
    ) -> tuple[ProcRow, ...]:
        prev = self._prev_ticks
        ticks_now: dict[tuple[int, int], int] = {}
        scale = 100.0 / CLK_TCK / elapsed if elapsed else 0.0
        by_pid = attribution.by_pid
        rows = []
        for pid in sorted(procs):
            p = procs[pid]
            ticks = p.utime + p.stime
            key = (pid, p.starttime)
            ticks_now[key] = ticks
            before = prev.get(key)
            cpu = (ticks - before) * scale if before is not None and scale else 0.0
            ctx = by_pid.get(pid)
            xid, guest = (ctx.xid, ctx.name) if ctx else (HOST_XID, HOST_NAME)
            rows.append(
                ProcRow(
                    pid,
                    p.ppid,
                    p.starttime,
                    xid,
                    guest,
                    p.nspid if ctx else pid,
                    p.uid,
                    user_name(p.uid),
                    p.state,
                    p.nice,
                    p.threads,
                    p.vsize,
                    p.rss,
                    p.utime,
                    p.stime,
                    p.cutime,
                    p.cstime,
                    cpu,
                    tty_name(p.tty_nr),
                    p.comm,
                    command_of(p),
                    p.pgrp,
                    p.session,
                    p.tpgid,
                    p.priority,
                    p.kernel_thread,
                )
            )
        self._prev_ticks = ticks_now
        return tuple(rows)


def table(paths: Paths, proc_root: str = "/proc", cgroup_fs: Path | None = None) -> Table:
    """One refresh (CPU% is 0.0: there is no previous sample)."""
    return ProcessTable(paths, proc_root, cgroup_fs).refresh()
