"""engine.runtime: start, supervise, stop, enter and exec real isolated guests.

The contract (docs/engine-api.md, "engine.runtime")::

    start(paths, name) ; stop(paths, name, timeout=None) ; restart(paths, name)
    status(paths, name) -> RunState ; is_running(paths, name) -> bool
    init_pid(paths, name) -> int | None
    exec_in(paths, name, argv, user=None, tty=False) -> int
    xid_of(paths, name) -> int
    delete(paths, name, force=False)   # stops first with force; every file of the guest
    console(paths, name) -> str        # attach this terminal to the guest's /dev/console
    refresh_meminfo(paths, name)       # the guest's /proc/meminfo view again (a live limit)

Every function imports its module lazily: ``vserver NAME exec`` loads only
state.py and enter.py.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the supervisor imports this package and stays lean
if TYPE_CHECKING:
    from engine.paths import Paths
    from engine.runtime.state import RunState


def start(paths: Paths, name: str) -> RunState:
    from engine.runtime.supervisor import start as _start

    return _start(paths, name)


def stop(paths: Paths, name: str, timeout: float | None = None) -> bool:
    from engine.runtime.stopping import stop as _stop

    return _stop(paths, name, timeout)


def restart(paths: Paths, name: str) -> RunState:
    """stop, then start, in a child of its own session (engine.runtime.forked.detached):
    a caller killed between the two no longer leaves the guest stopped."""
    from engine.paths import check_name
    from engine.runtime.forked import detached

    check_name(name)
    detached(lambda: _restart(paths, name), name)
    return status(paths, name)


def _restart(paths: Paths, name: str) -> int:
    stop(paths, name)
    start(paths, name)
    return 0


def status(paths: Paths, name: str) -> RunState:
    from engine.runtime.state import read

    return read(paths, name)


def is_running(paths: Paths, name: str) -> bool:
    return init_pid(paths, name) is not None


def init_pid(paths: Paths, name: str) -> int | None:
    from engine.runtime.state import init_identity

    ident = init_identity(paths, name)
    return ident[0] if ident else None


def exec_in(
    paths: Paths, name: str, argv: list[str] | None, user: str | None = None, tty: bool = False
) -> int:
    from engine.runtime.enter import exec_in as _exec_in

    return _exec_in(paths, name, argv, user, tty)


def delete(paths: Paths, name: str, force: bool = False) -> None:
    from engine.runtime.deleting import delete as _delete

    _delete(paths, name, force)


def console(paths: Paths, name: str, stdin: int = 0, stdout: int = 1) -> str:
    """Attach to the guest's console (Ctrl-a q detaches): ``"detached"``, ``"stopped"``
    (the guest ended meanwhile) or ``"busy"`` (attached elsewhere); GuestNotRunning."""
    from engine.errors import GuestNotRunning
    from engine.runtime.ptyconsole import attach

    if not is_running(paths, name):
        raise GuestNotRunning(f"vserver '{name}' is not running; start it first", name)
    return attach(paths.run_dir_str(name), stdin, stdout)


def refresh_meminfo(paths: Paths, name: str) -> None:
    """Render the running guest's /proc/meminfo view now: its supervisor renders it
    when the guest's use moves, not when the host changes its limit."""
    import os

    from engine.cgroups import manager
    from engine.runtime.supervisor import MEMINFO_VIEW
    from engine.runtime.supervisor import refresh_meminfo as _refresh

    memory = manager().memory_dir(paths.cgroup_name(name))
    view = paths.run_dir(name) / MEMINFO_VIEW
    if memory is not None and view.exists():
        try:
            _refresh(os.fspath(memory), os.fspath(view))
        except OSError:
            pass  # the guest stopped meanwhile: no view left to refresh


def xid_of(paths: Paths, name: str) -> int:
    from engine.runtime.xid import xid_of as _xid_of

    return _xid_of(paths, name)


def id_map(paths: Paths, name: str, cfg: object = None) -> object:
    """The guest's block of host ids (engine.runtime.idmap.IdMap), or None.

    A running guest's from its init's uid_map (None: no user namespace); a
    stopped one's as recorded, or derived from its xid; None for V_USERNS=no
    or a block not chosen yet (it is at the first start).
    """
    from engine.runtime import idmap

    return idmap.of_guest(paths, name, cfg)


__all__ = [
    "console",
    "delete",
    "exec_in",
    "id_map",
    "init_pid",
    "is_running",
    "refresh_meminfo",
    "restart",
    "start",
    "status",
    "stop",
    "xid_of",
]
