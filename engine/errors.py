"""Engine exceptions: every failure a user can cause, with a one-line message.

The tree::

    VstuiError                 base; ``guest`` names the guest or is None
    ├── ConfigError            a bad NAME.conf line: path, line, key, message
    ├── InvalidName            a guest name that is not a hostname label
    ├── UnknownCapability      a capability name we do not know
    ├── GuestNotFound          no configuration for NAME
    ├── GuestNotRunning        the operation needs a running guest
    ├── GuestRunning           the operation needs a stopped guest
    ├── GuestBusy              another process holds the guest's lock
    ├── GuestFrozen            the guest is frozen (exec/enter need it thawed)
    ├── NotRoot                the operation needs root
    ├── ReadOnlyError          refused by the read-only facade
    ├── BarrierError           /vservers is not mode 000 root-owned
    ├── PrivateGuest           the guest has the ``private`` flag
    ├── QuotaError             disk quota cannot be set as asked
    ├── NetError               an address or link cannot be set up
    ├── KernelError            a kernel call failed: operation, path, errno
    └── HostError              a named host cannot be reached or used
        ├── ProtocolError      its agent spoke garbage or another version
        └── ConnectionLost     the connection dropped: an action's outcome unknown

The CLI prints ``TOOL: NAME: message`` (``TOOL: host 'H': NAME: message``
for an error that happened on another host: ``host`` is set); the app shows
the message as a notification. The engine raises, it never prints.
"""

from __future__ import annotations

import errno as _errno
import os


class VstuiError(Exception):
    """Base of every error the engine raises on purpose."""

    host: str | None = None  # the host it happened on, when not this one

    def __init__(self, message: str, guest: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.guest = guest

    def __str__(self) -> str:
        return self.message


class ConfigError(VstuiError):
    """A configuration file line that cannot be read or is not valid."""

    def __init__(
        self,
        message: str,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        key: str | None = None,
        guest: str | None = None,
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.key = key
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line else f"{self.path}: "
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}", guest)
        self.reason = message


class InvalidName(VstuiError):
    """A guest name that is not a valid hostname label."""


class UnknownCapability(VstuiError):
    """A capability name that is not in the kernel's table."""


class GuestNotFound(VstuiError):
    """No configuration exists for the guest."""


class GuestNotRunning(VstuiError):
    """The operation needs a running guest."""


class GuestRunning(VstuiError):
    """The operation needs a stopped guest."""


class GuestBusy(VstuiError):
    """Another vstui process holds the guest's lock."""


class GuestFrozen(VstuiError):
    """The guest is frozen: a command joined to it would hang until a thaw."""


class NotRoot(VstuiError):
    """The operation needs root privileges."""


class ReadOnlyError(VstuiError):
    """A mutating call refused by the read-only facade."""


class BarrierError(VstuiError):
    """The guests' parent directory is not a proper barrier."""


class PrivateGuest(VstuiError):
    """The guest has the private flag: no enter, exec or signal from the host."""


class QuotaError(VstuiError):
    """A disk quota cannot be set as asked."""


class NetError(VstuiError):
    """An address, link or qdisc cannot be set up as configured."""


class KernelError(VstuiError):
    """A kernel call failed; names the operation, the object and errno."""

    def __init__(
        self, op: str, target: str, err: int, guest: str | None = None, hint: str = ""
    ) -> None:
        self.op = op
        self.target = target
        self.errno = err
        # a call on no file (write(2) to a pipe, a syscall) names none: never "op ``"
        text = f"{op} `{target}`: {os.strerror(err)}" if target else f"{op}: {os.strerror(err)}"
        if hint:
            text += f" ({hint})"
        super().__init__(text, guest)

    @classmethod
    def from_oserror(
        cls,
        op: str,
        exc: OSError,
        guest: str | None = None,
        hint: str = "",
        path: str | os.PathLike[str] | None = None,
    ) -> KernelError:
        """``path`` names the object when the OSError does not (write(2) and
        fsync(2) errors carry no file name: "write ``" said nothing)."""
        target = exc.filename if exc.filename is not None else path
        return cls(op, "" if target is None else os.fspath(target), exc.errno or _errno.EIO,
                   guest, hint)  # fmt: skip


class HostError(VstuiError):
    """A host named with --host is unknown, unreachable, or its agent failed."""

    def __init__(self, message: str, host: str | None = None, guest: str | None = None) -> None:
        super().__init__(message, guest)
        self.host = host


class ProtocolError(HostError):
    """The agent answered with something that is not the protocol (or another version)."""


class ConnectionLost(HostError):
    """The connection dropped during an action: whether it happened is unknown."""


class boundary:
    """The engine's one error boundary, at each entry point (the CLI's commands,
    the console's facade, the remote agent's calls)::

        with boundary("start", name):
            ...

    An OSError raised inside leaves as a KernelError naming ``op``, the file
    (the error's own, else ``path``) and the guest; an engine error without a
    guest gets this one. Nothing else is caught. (A class, not contextlib:
    every tool imports this module.)
    """

    __slots__ = ("guest", "op", "path")

    def __init__(self, op: str, guest: str | None = None, path: str | None = None) -> None:
        self.op, self.guest, self.path = op, guest, path

    def __enter__(self) -> boundary:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, VstuiError):
            if exc.guest is None:
                exc.guest = self.guest
        elif isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise KernelError.from_oserror(self.op, exc, self.guest, path=self.path) from exc


def require_root(what: str, guest: str | None = None) -> None:
    """Raise NotRoot unless the effective uid is 0."""
    if os.geteuid() != 0:
        raise NotRoot(f"{what} needs root; run it as root (sudo)", guest)
