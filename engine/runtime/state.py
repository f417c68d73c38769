"""A guest's run directory: one value per file, the lock, and RunState.

``paths.run_dir(NAME)/`` holds ``state`` (starting|running|stopping|
stopped), ``xid``, ``init.pid`` and ``init.start`` (host PID of the guest's
PID 1 and its start time in clock ticks, so a reused PID is never taken for
init), ``supervisor.pid`` / ``supervisor.start``, ``started`` (epoch
seconds) and ``lock`` (the flock target serialising start/stop).

Everything here is cheap: no imports beyond the standard library and
engine.paths/errors, because ``vserver NAME exec``, ``vps`` and ``status``
read it on their start path.
"""

from __future__ import annotations

import time

from engine._record import Record
from engine.errors import GuestBusy
from engine.paths import Paths
from engine.procfs import alive
from engine.procfs import starttime as proc_starttime
from engine.runtime.runfiles import (
    FROZEN_FILE,
    LOCK_FILE,
    VALUE_FILES,
    RunLock,
    read_value,
    write_value,
)
from engine.runtime.runfiles import clear_dir as _clear_dir
from engine.runtime.runfiles import remove_dir as _remove_dir

STARTING = "starting"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"

__all__ = ["LOCK_FILE", "VALUE_FILES", "RunLock", "RunState", "alive", "clear", "init_identity",
           "lock", "proc_starttime", "read", "read_value", "remove", "write_value"]  # fmt: skip


class RunState(Record):
    """What the run directory says about one guest, checked against /proc."""

    __slots__ = _fields = ("name", "state", "xid", "init_pid", "supervisor_pid", "started",
                           "stale", "frozen_since")  # fmt: skip
    _defaults = {
        "xid": None,
        "init_pid": None,
        "supervisor_pid": None,
        "started": None,
        "stale": False,
        "frozen_since": None,
    }
    name: str
    state: str  # starting | running | stopping | stopped
    xid: int | None
    init_pid: int | None  # None unless that process is alive and is init
    supervisor_pid: int | None  # None unless alive
    started: float | None
    stale: bool  # files are there but init is gone: needs cleanup
    frozen_since: float | None  # epoch seconds of `vserver NAME freeze`, None when not frozen

    @property
    def frozen(self) -> bool:
        return self.frozen_since is not None and self.running

    @property
    def running(self) -> bool:
        return self.init_pid is not None and self.state in (RUNNING, STOPPING, STARTING)

    @property
    def uptime(self) -> float | None:
        if self.started is None or not self.running:
            return None
        return max(0.0, time.time() - self.started)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def read(paths: Paths, name: str) -> RunState:
    """The guest's run state, with init's identity checked in /proc."""
    run_dir = paths.run_dir(name)
    state = read_value(run_dir, "state")
    if state is None:
        return RunState(name, STOPPED)
    pid = _int(read_value(run_dir, "init.pid"))
    start = _int(read_value(run_dir, "init.start"))
    spid = _int(read_value(run_dir, "supervisor.pid"))
    sstart = _int(read_value(run_dir, "supervisor.start"))
    init_alive = alive(pid, start)
    sup_alive = alive(spid, sstart)
    xid = _int(read_value(run_dir, "xid"))
    started = _float(read_value(run_dir, "started"))
    sup = spid if sup_alive else None
    if init_alive:
        frozen = _float(read_value(run_dir, FROZEN_FILE))
        return RunState(name, state, xid, pid, sup, started, frozen_since=frozen)
    if state == STARTING and sup_alive:
        return RunState(name, STARTING, xid, None, spid, started)
    return RunState(name, STOPPED, xid, None, sup, started, stale=True)


def init_identity(paths: Paths, name: str) -> tuple[int, int] | None:
    """(pid, starttime) of the guest's live init, else None; the exec fast path."""
    run_dir = paths.run_dir(name)
    pid = _int(read_value(run_dir, "init.pid"))
    start = _int(read_value(run_dir, "init.start"))
    if pid is None or not alive(pid, start):
        return None
    return pid, start or 0


def supervisor_identity(paths: Paths, name: str) -> tuple[int, int] | None:
    """(pid, starttime) the supervisor recorded, alive or not: its session's id too."""
    run_dir = paths.run_dir(name)
    pid = _int(read_value(run_dir, "supervisor.pid"))
    start = _int(read_value(run_dir, "supervisor.start"))
    return None if pid is None or start is None else (pid, start)


def clear(paths: Paths, name: str) -> None:
    """Remove the run directory's value files (not the lock: others may wait on it)."""
    _clear_dir(paths.run_dir(name))


def remove(paths: Paths, name: str) -> None:
    """Remove the whole run directory (a stopped guest leaves nothing in /run)."""
    _remove_dir(paths.run_dir(name))


def lock(paths: Paths, name: str, timeout: float = 60.0) -> RunLock:
    """The guest's start/stop lock, taken; GuestBusy after ``timeout`` seconds."""
    held = RunLock(paths.run_dir(name))
    if not held.acquire(timeout):
        raise GuestBusy(f"another vserver command holds {held.path}; wait for it to finish", name)
    return held
