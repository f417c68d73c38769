"""Netlink sockets for the host and for a guest's network namespace.

pyroute2 is imported here, lazily, by the functions that need it: reading
counters or listening sockets must not pay its ~200 ms import.

A guest's namespace is reached without moving this process: a short-lived
helper thread joins the namespace of ``/proc/PID/ns/net`` (setns changes only
the calling thread's namespace), opens a netlink socket there and exits. A
socket stays in the namespace it was created in, so pyroute2 then drives the
guest's links, addresses, routes and qdiscs from the main thread.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from engine import _libc
from engine.errors import GuestNotRunning, KernelError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

NETLINK_ROUTE = 0
T = TypeVar("T")


def host() -> IPRoute:
    """A netlink socket in this process's (the host's) network namespace."""
    from pyroute2 import IPRoute

    return IPRoute()


def ns_inode(pid: int) -> int | None:
    """Inode of process PID's network namespace, None when the process is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def in_netns(pid: int, guest: str | None = None) -> IPRoute:
    """A netlink socket inside the network namespace of process PID."""
    from pyroute2 import IPRoute

    sock = _socket_in(pid, guest)
    return IPRoute(fileno=sock.detach())


def _socket_in(pid: int, guest: str | None) -> socket.socket:
    return run_in_netns(
        pid, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE), guest
    )


def write_sysctl_in(pid: int, name: str, value: str, guest: str | None = None) -> None:
    """Write /proc/sys/net/NAME as seen from inside process PID's namespace.

    /proc/sys/net shows the namespace of the thread that opens the file, so
    the helper thread opens it after joining.
    """

    def write() -> None:
        with open(f"/proc/sys/net/{name}", "w") as f:
            f.write(value)

    run_in_netns(pid, write, guest)


def run_in_netns(pid: int, action: Callable[[], T], guest: str | None = None) -> T:
    """Run ``action`` in a helper thread that joined process PID's network namespace."""
    path = f"/proc/{pid}/ns/net"
    result: dict[str, Any] = {}

    def join_and_run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            result["error"] = exc
            return
        try:
            _libc.setns(fd, _libc.CLONE_NEWNET)
            result["value"] = action()
        except OSError as exc:
            result["error"] = exc
        finally:
            os.close(fd)

    worker = threading.Thread(target=join_and_run, name=f"netns-{pid}")
    worker.start()
    worker.join()
    if "value" in result:
        return result["value"]
    exc: OSError = result["error"]
    if exc.errno in (errno.ENOENT, errno.ESRCH) and exc.filename == path:
        raise GuestNotRunning(
            f"process {pid} is gone: its network namespace cannot be set up; start the guest again",
            guest,
        )
    raise KernelError.from_oserror("netns", exc, guest)


def errno_of(exc: BaseException) -> int | None:
    """The errno of a pyroute2 NetlinkError or an OSError, else None."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, OSError):
        return exc.errno
    return None


def ignore_missing(call, *args: Any, **kwargs: Any) -> bool:
    """Run a netlink delete; True if it removed something, False if already gone."""
    try:
        call(*args, **kwargs)
    except Exception as exc:  # pyroute2's NetlinkError, imported lazily
        if errno_of(exc) in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EINVAL,
                             errno.EADDRNOTAVAIL):  # fmt: skip
            return False
        raise
    return True


def link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None
