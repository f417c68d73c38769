"""Scanner + attribution + CPU% deltas: the process table of one refresh.

``ProcessTable`` keeps the scanner's cache and the previous sample so that
each refresh costs one /proc/PID/stat read per process plus one cgroup
member list per running guest.
"""

from __future__ import annotations

import os
import time
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

from engine.contexts import HOST_NAME, HOST_XID
from engine.paths import Paths
from engine.procs import guestids
from engine.procs.attribution import (
    Attribution,
    RunInfo,
    attribute,
    attribute_new,
    running_guests,
)
from engine.procs.scan import (
    CLK_TCK,
    NEED_ALL,
    NEED_CMDLINE,
    NEED_NSPID,
    NEED_UID,
    PF_KTHREAD,
    Proc,
    Scanner,
    tty_name,
)
from engine.text import visible

# a repeated refresh reads every guest's cgroup again at least this often (seconds);
# in between only new PIDs are attributed (a process keeps its cgroup unless moved)
FULL_EVERY = 10.0

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs vps ~5 ms
if TYPE_CHECKING:
    from engine.datamodel import ProcRow


_USERS: dict[int, str] | None = None


def user_name(uid: int) -> str:
    """Name of a host uid from a map built once from the passwd database."""
    global _USERS
    if _USERS is None:
        import pwd

        users: dict[int, str] = {}
        try:
            for entry in pwd.getpwall():
                users.setdefault(entry.pw_uid, visible(entry.pw_name))
        except OSError:
            pass
        _USERS = users
    return _USERS.get(uid) or str(uid)


# ProcRow's fields, in order (a unit test keeps the two in step)
ROW_FIELDS = ("pid", "ppid", "starttime", "xid", "guest", "nspid", "uid", "user", "state",
              "nice", "threads", "vsz", "rss", "utime", "stime", "cutime", "cstime",
              "cpu_percent", "tty", "comm", "cmdline", "pgrp", "session", "tpgid", "priority",
              "kernel", "huid")  # fmt: skip


class PsRow:
    """A ProcRow for one-shot tools (vps, vserver-stat): the same fields and
    meaning, as a plain slotted class, so that a tool needs neither
    ``engine.observe`` nor ``dataclasses`` (~20 ms of imports on every run).
    Treat it as immutable. The console gets real ``ProcRow`` objects."""

    __slots__ = ROW_FIELDS

    def __init__(self, pid: int, ppid: int, starttime: int, xid: int, guest: str, nspid: int,
                 uid: int, user: str, state: str, nice: int, threads: int, vsz: int, rss: int,
                 utime: int, stime: int, cutime: int, cstime: int, cpu_percent: float,
                 tty: str, comm: str, cmdline: str, pgrp: int, session: int, tpgid: int,
                 priority: int, kernel: bool, huid: int) -> None:  # fmt: skip
        self.pid = pid
        self.ppid = ppid
        self.starttime = starttime
        self.xid = xid
        self.guest = guest
        self.nspid = nspid
        self.uid = uid
        self.user = user
        self.state = state
        self.nice = nice
        self.threads = threads
        self.vsz = vsz
        self.rss = rss
        self.utime = utime
        self.stime = stime
        self.cutime = cutime
        self.cstime = cstime
        self.cpu_percent = cpu_percent
        self.tty = tty
        self.comm = comm
        self.cmdline = cmdline
        self.pgrp = pgrp
        self.session = session
        self.tpgid = tpgid
        self.priority = priority
        self.kernel = kernel
        self.huid = huid

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in ROW_FIELDS)
        return f"PsRow({inner})"

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.starttime)


if TYPE_CHECKING:
    Row = ProcRow | PsRow


class Table(namedtuple("Table", "taken wall rows attribution elapsed")):
    """Every process of one refresh, attributed to contexts.

    taken: time.monotonic(); wall: time.time(); rows: sorted by pid;
    elapsed: seconds since the previous refresh (None at the first).
    """

    __slots__ = ()
    taken: float
    wall: float
    rows: tuple[Row, ...]
    attribution: Attribution
    elapsed: float | None

    def by_xid(self) -> dict[int, list[Row]]:
        out: dict[int, list[Row]] = {}
        for row in self.rows:
            out.setdefault(row.xid, []).append(row)
        return out


def command_of(proc: Proc) -> str:
    """argv joined, or ``[comm]`` for kernel threads and zombies (as ps)."""
    return proc.cmdline or f"[{proc.comm}]"


class ProcessTable:
    """Repeated refreshes of the process table, with CPU% between them.

    A process whose stat line did not change since the last refresh (the
    scanner hands out the same ``Proc``) keeps its ``ProcRow`` object, as long
    as its context is the same and its CPU% was already 0: the UI can diff
    rows by identity, and a refresh of mostly sleeping processes costs one
    read per process and almost nothing else.

    ``need`` (NEED_* bits of engine.procs.scan): what the rows must carry
    beyond stat. Without NEED_UID ``uid`` is 0 and ``user`` "?". The
    console's rows (``LazyProcRow``) read ``cmdline`` and ``nspid`` when first
    asked for, whatever ``need`` says: most are never shown.
    ``one_shot``: rows are ``PsRow`` (same fields, no engine.observe import),
    read at once: without NEED_CMDLINE ``cmdline`` is ``[comm]``, without
    NEED_NSPID ``nspid`` is the host PID. One-shot tools ask only for what
    their columns show.
    """

    def __init__(
        self,
        paths: Paths,
        proc_root: str | os.PathLike[str] = "/proc",
        cgroup_fs: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        need: int = NEED_ALL,
        one_shot: bool = False,
    ) -> None:
        self.paths = paths
        self.clock = clock
        self.scanner = Scanner(proc_root, gate=not one_shot)  # refreshed again and again
        self.cgroup_fs = cgroup_fs
        self.need = need
        if one_shot:
            self._make_row: Callable[..., Row] = PsRow
        else:
            from engine.datamodel import new_lazy_row

            self._make_row = new_lazy_row
        self.one_shot = one_shot
        self._prev: dict[int, Proc] = {}
        self._prev_time: float | None = None
        self._unread_since: dict[int, float] = {}  # kernel thread -> when it was read last
        self._attribution: Attribution | None = None
        self._guests_key: tuple = ()
        self._full_at = 0.0
        self.guest_ids = guestids.Cache(proc_root)
        self._ids: dict[str, guestids.GuestIds] = {}

    def refresh(self, guests: list[RunInfo] | None = None, kernel: bool = True) -> Table:
        """Scan and attribute every process. ``kernel=False``: a kernel thread
        seen before is read at one refresh in KERNEL_EVERY (Scanner.scan); in
        between it keeps the CPU% of its last read, measured over the time
        since the read before (so the host's total keeps it too)."""
        if guests is None:
            guests = running_guests(self.paths, self.scanner.proc_root)
        self._ids = self.guest_ids.update(guests) if self.need & NEED_UID else {}
        wall = time.time()
        if self.one_shot:
            attribution = attribute(self.paths, self.cgroup_fs, guests)
            want_nspid = attribution.by_pid.keys() if self.need & NEED_NSPID else ()
            procs = self.scanner.scan(want_nspid, self.need & ~NEED_NSPID)
        else:
            procs, attribution = self._scan_attributed(guests, kernel)
        now = self.clock()
        elapsed = None if self._prev_time is None else max(now - self._prev_time, 1e-6)
        rows = self._rows(procs, attribution, elapsed, now)
        self._prev = procs
        self._prev_time = now
        return Table(now, wall, rows, attribution, elapsed)

    @property
    def last_scan(self) -> dict[int, Proc]:
        """The processes of the last refresh (pid -> Proc)."""
        return self._prev

    def _scan_attributed(
        self, guests: list[RunInfo], kernel: bool = True
    ) -> tuple[dict[int, Proc], Attribution]:
        """Scan, then attribute: every guest's cgroup is read again when the running
        guests changed or FULL_EVERY seconds passed, else only new PIDs are looked up
        (engine.procs.attribution.attribute_new)."""
        prev, last = self._prev, self._attribution
        procs = self.scanner.scan((), 0, kernel)  # the rest when shown (LazyProcRow)
        key = tuple((g.name, g.xid, g.init_pid) for g in guests)
        now = self.clock()
        full = last is None or key != self._guests_key or now - self._full_at >= FULL_EVERY
        if full or self.cgroup_fs is not None:  # cgroup_fs: files laid out by a test
            attribution = attribute(self.paths, self.cgroup_fs, guests)
            self._guests_key, self._full_at = key, now
        else:
            new = (pid for pid in procs if pid not in prev)
            attribution = attribute_new(self.paths, last, new, procs)
        self._attribution = attribution
        return procs, attribution

    def _rows(
        self, procs: dict[int, Proc], attribution: Attribution, elapsed: float | None,
        now: float = 0.0,
    ) -> tuple[Row, ...]:  # fmt: skip
        prev = self._prev
        blind, since = self.scanner.blind, self._unread_since
        for pid in blind:  # read last at the refresh before the first it was not
            since.setdefault(pid, self._prev_time or now)
        if len(since) > len(blind):
            for gone in since.keys() - procs.keys():
                del since[gone]
        make_row = self._make_row
        scale = 100.0 / CLK_TCK / elapsed if elapsed else 0.0
        by_pid = attribution.by_pid
        with_uid = bool(self.need & NEED_UID)
        lazy = not self.one_shot
        with_cmdline = bool(self.need & NEED_CMDLINE)
        with_nspid = bool(self.need & NEED_NSPID)
        owners: dict[str, Callable[[int], tuple[int, str]]] = {}
        rows: list[Row] = []
        append = rows.append
        for pid in procs if _ascending(procs) else sorted(procs):
            p = procs[pid]
            ctx = by_pid.get(pid)
            xid, guest = (ctx.xid, ctx.name) if ctx is not None else (HOST_XID, HOST_NAME)
            # read again after unread refreshes: its times moved over all of them
            span = now - since.pop(pid) if pid in since and pid not in blind else None
            row = p.memo
            if (
                row is not None  # same stat line as last time: the same row ...
                and (row.cpu_percent == 0.0 or pid in blind)  # ... if it did not run before
                and row.xid == xid  # either, or was not read (its CPU% of its last read)
                and row.guest == guest
            ):
                append(row)
                continue
            cpu = 0.0
            if scale:
                before = prev.get(pid)
                if before is not None and before.starttime == p.starttime:
                    cpu = (p.utime + p.stime - before.utime - before.stime) * scale
                    if span is not None:
                        cpu *= elapsed / max(span, 1e-6)  # type: ignore[operator]
            static = p.static
            if lazy:  # LazyProcRow: None reads it when asked for (a guest's nspid, argv, owner)
                nspid, cmdline, uid, user, huid = (None if ctx else pid), None, None, None, None
                owner = owners.get(guest)
                if owner is None:
                    owner = owners[guest] = self._owner(guest)
                extra: tuple[object, ...] = (static, owner)
            else:
                nspid = p.nspid if ctx is not None and with_nspid else pid
                cmdline = command_of(p) if with_cmdline else f"[{p.comm}]"
                huid = static.uid
                uid, user = self._user(guest, huid) if with_uid else (huid, "?")
                extra = ()
            row = make_row(
                pid, p.ppid, p.starttime, xid, guest, nspid,
                uid, user, p.state, p.nice, p.threads,
                p.vsize, p.rss, p.utime, p.stime, p.cutime, p.cstime, cpu,
                tty_name(p.tty_nr), p.comm, cmdline,
                p.pgrp, p.session, p.tpgid, p.priority, bool(p.flags & PF_KTHREAD), huid,
                *extra,
            )  # fmt: skip
            p.memo = row
            append(row)
        return tuple(rows)

    def ids_of(self, guest: str) -> guestids.GuestIds | None:
        """The running user-namespaced guest's id block, as the last refresh saw it."""
        return self._ids.get(guest)

    def _owner(self, guest: str) -> Callable[[int], tuple[int, str]]:
        """``_user`` for ``guest`` with the id block of this refresh (a LazyProcRow
        names its owner later, maybe after another refresh)."""
        ids = self._ids.get(guest)

        def owner(huid: int) -> tuple[int, str]:
            if huid < 0:  # gone before it was asked for
                return huid, "?"
            inside = ids.inside(huid) if ids is not None else None
            return inside if inside is not None else (huid, user_name(huid))

        return owner

    def _user(self, guest: str, huid: int) -> tuple[int, str]:
        """(uid, name) as the process's own guest sees them: a user-namespaced guest's
        uid and its passwd's name; the host's otherwise (``huid`` is the host uid)."""
        ids = self._ids.get(guest)
        inside = ids.inside(huid) if ids is not None else None
        return inside if inside is not None else (huid, user_name(huid))


def _ascending(procs: dict[int, Proc]) -> bool:
    """True when the dict's keys are in order (as /proc lists PIDs): no sort needed."""
    last = -1
    for pid in procs:
        if pid < last:
            return False
        last = pid
    return True


def table(paths: Paths, proc_root: str = "/proc", cgroup_fs: Path | None = None) -> Table:
    """One refresh (CPU% is 0.0: there is no previous sample)."""
    return ProcessTable(paths, proc_root, cgroup_fs).refresh()
