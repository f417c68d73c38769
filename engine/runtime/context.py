"""A throw-away security context (``chcontext`` without ``--xid``).

Its own PID, UTS, IPC and mount namespaces on the host's file system: the
mounts made private (nothing it mounts reaches the host), a fresh /proc (its
``ps`` sees only its own processes), the host and domain name if given. The
tool decides what runs in it; the kernel set-up is here.
"""

from __future__ import annotations

import signal

from engine import _libc
from engine.errors import VstuiError

NAMESPACES = _libc.CLONE_NEWNS | _libc.CLONE_NEWUTS | _libc.CLONE_NEWIPC | _libc.CLONE_NEWPID


def unshare() -> None:
    """New namespaces for this process (the PID one for its next child)."""
    try:
        _libc.unshare(NAMESPACES)
    except OSError as exc:
        raise VstuiError(f"cannot create namespaces: {exc.strerror}") from None


def die_with_parent() -> None:
    """The context goes when the tool that made it is killed."""
    _libc.set_pdeathsig(signal.SIGKILL)


def set_up(hostname: str | None, domainname: str | None) -> None:
    """As PID 1 of the new PID namespace: private mounts, a fresh /proc, the names."""
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    _libc.mount("proc", "/proc", "proc", _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)
    if hostname is not None:
        import socket

        socket.sethostname(hostname)
    if domainname is not None:
        _libc.setdomainname(domainname)
