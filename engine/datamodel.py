"""Immutable snapshot data for the console and the tools (the observe data model).

A leaf module (stdlib and engine.contexts only): engine.observe builds these,
engine.procs and engine.net fill parts of them, the console and the remote
protocol read them, and none of those packages imports another for them.
Widgets see only these types, never /proc text or netlink messages. Keys:
a guest by name (the host is ``HOST_NAME`` with xid 0), a process by
(pid, start time) so that a reused PID is a new row.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from engine.contexts import HOST_NAME, HOST_XID, SPECTATOR_XID

__all__ = ["HOST_NAME", "HOST_XID", "SPECTATOR_XID", "Gauge", "GuestStatus", "LazyProcRow",
           "NetStats", "ProcRow", "Snapshot", "new_lazy_row", "new_proc_row",
           "with_cpu_percent", "with_uptime"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProcRow:
    """One process as the scanner saw it in one snapshot."""

    pid: int  # host PID
    ppid: int  # host PID of the parent
    starttime: int  # clock ticks after boot; (pid, starttime) identifies it
    xid: int  # context: 0 host, else the guest's
    guest: str  # guest name, HOST_NAME for the host
    nspid: int  # PID inside its guest (== pid on the host)
    uid: int
    user: str
    state: str  # R, S, D, Z, T, ...
    nice: int
    threads: int
    vsz: int  # bytes
    rss: int  # bytes
    utime: int  # clock ticks, own
    stime: int
    cutime: int  # clock ticks, reaped children
    cstime: int
    cpu_percent: float  # of one CPU, since the previous snapshot (0.0 at first)
    tty: str  # "pts/0" or "?"
    comm: str
    cmdline: str  # space-joined argv, or "[comm]" for kernel threads
    pgrp: int = 0  # process group (ps STAT "+": pgrp == tpgid)
    session: int = 0  # session id (ps STAT "s": pid == session)
    tpgid: int = -1  # foreground process group of its terminal
    priority: int = 20  # kernel priority as /proc shows it (top PR)
    kernel: bool = False  # a kernel thread
    huid: int = -1  # host uid (``uid`` is the uid inside a user-namespaced guest)

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.starttime)


def _fast_constructor(cls: type, lazy: tuple[str, ...] = ()) -> Callable[..., object]:
    """A positional constructor for ProcRow (or LazyProcRow) that sets the
    slots directly instead of through ``object.__setattr__`` per field: the
    same object for half the cost (the scanner builds thousands per refresh).
    Every field must be passed; a field named in ``lazy`` is left unset when
    given as None, and the last two arguments are the object's ``_static``
    and ``_owner``."""
    names = [f.name for f in fields(cls)]
    env: dict[str, object] = {"new": object.__new__, "cls": cls}
    env.update({f"set_{n}": ProcRow.__dict__[n].__set__ for n in names})
    body = "".join(
        f"    if {n} is not None:\n        set_{n}(obj, {n})\n" if n in lazy
        else f"    set_{n}(obj, {n})\n"
        for n in names
    )  # fmt: skip
    args = ", ".join(names)
    if lazy:
        env["set_static"] = cls.__dict__["_static"].__set__
        env["set_owner"] = cls.__dict__["_owner"].__set__
        body += "    set_static(obj, static)\n    set_owner(obj, owner)\n"
        args += ", static, owner"
    exec(f"def make({args}):\n    obj = new(cls)\n{body}    return obj\n", env)
    return env["make"]  # type: ignore[return-value]


# new_proc_row(pid, ppid, ..., kernel): ProcRow(...) with every field given
new_proc_row: Callable[..., ProcRow] = _fast_constructor(ProcRow)

_NSPID = ProcRow.__dict__["nspid"]  # the slots themselves, below the properties
_CMDLINE = ProcRow.__dict__["cmdline"]
_UID, _USER, _HUID = (ProcRow.__dict__[name] for name in ("uid", "user", "huid"))


def _read_once(slot: Any, read: Callable[[Any], object]) -> Any:
    """A property over one of ProcRow's slots (below LazyProcRow's
    properties): the slot's value, or on first use ``read(row)``, kept in the
    slot. Its setter sets the slot (dataclasses.replace builds through
    __init__)."""

    def get(row: object) -> object:
        try:
            return slot.__get__(row)
        except AttributeError:
            value = read(row)
            slot.__set__(row, value)
            return value

    return property(get, slot.__set__)


class LazyProcRow(ProcRow):
    """A ProcRow whose ``nspid``, ``cmdline`` and owner (``uid``, ``user``,
    ``huid``) are read from /proc when first asked for: the console shows a
    page of 10,000 processes, and reading them for every process cost about
    half of a cold snapshot.

    ``_static`` is the scanner's record of the process (engine.procs.scan
    Static: ``nspid`` is its NSpid line, ``cmdline`` its argv, ``owner()``
    its effective uid on the host, each read once for the process's
    lifetime, from that very process); ``_owner`` names a host uid as the
    process's guest sees it: (uid, user name). Once read, a value stays in
    the row, which is as immutable as a ProcRow from then on; equal fields
    make equal rows. Built by ``new_lazy_row`` (the rows of the host get
    their ``nspid`` at once: it is their PID).
    """

    __slots__ = ("_owner", "_static")

    huid = _read_once(_HUID, lambda row: row._static.owner())
    uid = _read_once(_UID, lambda row: row._name_owner()[0])
    user = _read_once(_USER, lambda row: row._name_owner()[1])
    # innermost NSpid; unknown (the process is gone): the host's PID
    nspid = _read_once(_NSPID, lambda row: row._static.nspid[-1] if row._static.nspid else row.pid)
    # kernel threads and zombies have no argv: "[comm]", as ps shows them
    cmdline = _read_once(_CMDLINE, lambda row: row._static.cmdline or f"[{row.comm}]")

    def _name_owner(self) -> tuple[int, str]:
        uid, user = self._owner(self.huid)
        _UID.__set__(self, uid)
        _USER.__set__(self, user)
        return uid, user

    def __eq__(self, other: object) -> bool:
        # The fields read from the stat line first, all at once (one C call):
        # rows of a process that ran differ there (its times), and the lazy
        # fields, in field order before them, were read from /proc to find out.
        if not isinstance(other, ProcRow):
            return NotImplemented
        if self is other:
            return True
        return _eager(self) == _eager(other) and _lazy(self) == _lazy(other)

    __hash__ = ProcRow.__hash__


_ROW_NAMES = tuple(f.name for f in fields(ProcRow))
_LAZY = ("nspid", "cmdline", "uid", "user", "huid")
_eager = operator.attrgetter(*(n for n in _ROW_NAMES if n not in _LAZY))
_lazy = operator.attrgetter(*_LAZY)

# new_lazy_row(pid, ..., kernel, huid, static, owner): a LazyProcRow; None for nspid,
# cmdline, uid, user, huid: read when asked for
new_lazy_row: Callable[..., LazyProcRow] = _fast_constructor(LazyProcRow, _LAZY)


def _cpu_copier(cls: type) -> Callable[[ProcRow, float], ProcRow]:
    """``copy(row, value)``: the ``cls`` row with ``cpu_percent=value``, its slots
    copied as they are: a LazyProcRow's fields not read yet stay unread."""
    env: dict[str, object] = {"new": object.__new__, "cls": cls}
    names = (*_ROW_NAMES, "_static", "_owner") if cls is LazyProcRow else _ROW_NAMES
    body = ""
    for n in names:
        slot = (cls if n.startswith("_") else ProcRow).__dict__[n]
        env[f"get{n}"], env[f"set{n}"] = slot.__get__, slot.__set__
        if n == "cpu_percent":
            body += f"    set{n}(obj, value)\n"
        elif n in _LAZY and cls is LazyProcRow:  # unset until read
            body += f"    try:\n        set{n}(obj, get{n}(old))\n    except AttributeError:\n"
            body += "        pass\n"
        else:
            body += f"    set{n}(obj, get{n}(old))\n"
    exec(f"def copy(old, value):\n    obj = new(cls)\n{body}    return obj\n", env)
    return env["copy"]  # type: ignore[return-value]


_COPY_WITH_CPU = {cls: _cpu_copier(cls) for cls in (ProcRow, LazyProcRow)}


def with_cpu_percent(row: ProcRow, value: float) -> ProcRow:
    """``dataclasses.replace(row, cpu_percent=value)`` without reading anything:
    replace asks for every field, so a LazyProcRow read its process's argv,
    owner and NSpid from /proc (the console steadies the CPU% of every process
    that ran, each second, whether or not its row is on screen)."""
    copy = _COPY_WITH_CPU.get(type(row))
    return dataclasses.replace(row, cpu_percent=value) if copy is None else copy(row, value)


@dataclass(frozen=True, slots=True)
class Gauge:
    """A used/limit pair; limit None = unlimited, used None = unknown."""

    used: int | None = None
    limit: int | None = None

    @property
    def ratio(self) -> float | None:
        if self.used is None or not self.limit:
            return None
        return self.used / self.limit


@dataclass(frozen=True, slots=True)
class NetStats:
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0
    rx_rate: float = 0.0  # bytes/s since the previous snapshot
    tx_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class GuestStatus:
    """One guest (or the host, xid 0) in one snapshot."""

    name: str
    xid: int
    state: str  # running, frozen, stopped, starting, stopping, unknown
    init_pid: int | None
    addresses: tuple[str, ...]
    flags: tuple[str, ...]
    nproc: int
    cpu_percent: float
    memory: Gauge
    pids: Gauge
    disk: Gauge  # bytes
    inodes: Gauge
    net: NetStats | None  # None: no network data (host mode or not running)
    bandwidth_out: int | None  # bits/s limit, None = unlimited
    bandwidth_in: int | None
    uptime: float | None  # seconds, None when stopped
    missing: tuple[str, ...] = ()  # what could not be measured, said plainly
    # (first host id, count) of the guest's user namespace; None: the host's own ids
    # (V_USERNS=no) or not chosen yet; ``userns`` says which (None for the host)
    idmap: tuple[int, int] | None = None
    userns: bool | None = None

    @property
    def key(self) -> str:
        return self.name


def _slot_copier(cls: type, *changed: str) -> Callable[..., object]:
    """``copy(obj, *values)``: ``dataclasses.replace(obj, <changed>=value, ...)`` for a
    slotted frozen dataclass without ``__post_init__``, by its slots directly
    (replace looks up every field and goes through ``__init__``: the console
    renews every running guest's status every second for its uptime). A field
    that is not an ``__init__`` one gets its default, as replace gives it."""
    env: dict[str, object] = {"new": object.__new__, "cls": cls}
    body = ""
    for f in fields(cls):
        n = f.name
        env[f"set_{n}"] = cls.__dict__[n].__set__
        if n in changed:
            value = f"values[{changed.index(n)}]"
        elif not f.init:
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{n}: no default to copy in")
            env[f"default_{n}"] = f.default
            value = f"default_{n}"
        else:
            value = f"old.{n}"
        body += f"    set_{n}(obj, {value})\n"
    exec(f"def copy(old, *values):\n    obj = new(cls)\n{body}    return obj\n", env)
    return env["copy"]  # type: ignore[return-value]


# with_uptime(status, uptime): the same GuestStatus with another uptime
with_uptime: Callable[[GuestStatus, float | None], GuestStatus] = _slot_copier(
    GuestStatus, "uptime"
)
# with_shown(status, cpu_percent, net): the console's steadied figures in (vstui.app.steady)
with_shown: Callable[[GuestStatus, float, NetStats | None], GuestStatus] = _slot_copier(
    GuestStatus, "cpu_percent", "net"
)
# with_rates(stats, rx_rate, tx_rate)
with_rates: Callable[[NetStats, float, float], NetStats] = _slot_copier(
    NetStats, "rx_rate", "tx_rate"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the console shows, taken at one instant."""

    taken: float  # time.monotonic()
    wall: float  # time.time()
    guests: tuple[GuestStatus, ...]  # the host (xid 0) first
    procs: tuple[ProcRow, ...]
    ncpu: int
    errors: tuple[str, ...] = field(default=())
    # procs by xid, built on the first procs_of() (not an init field, so
    # dataclasses.replace() never carries a stale one over)
    _by_xid: dict[int, tuple[ProcRow, ...]] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def guest(self, name: str) -> GuestStatus | None:
        for g in self.guests:
            if g.name == name:
                return g
        return None

    def procs_of(self, xid: int) -> tuple[ProcRow, ...]:
        index = self._by_xid
        if index is None:
            groups: dict[int, list[ProcRow]] = {}
            for p in self.procs:
                group = groups.get(p.xid)
                if group is None:
                    groups[p.xid] = [p]
                else:
                    group.append(p)
            index = {x: tuple(g) for x, g in groups.items()}
            object.__setattr__(self, "_by_xid", index)  # a cache, not state
        return index.get(xid, ())


# with_rows(snap, procs, guests): the same snapshot with other rows (vstui.app.steady)
with_rows: Callable[[Snapshot, tuple[ProcRow, ...], tuple[GuestStatus, ...]], Snapshot] = (
    _slot_copier(Snapshot, "procs", "guests")
)
