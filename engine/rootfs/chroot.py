"""Work inside a guest tree as its root, and the two files that name a guest.

Kept apart from templates.py (tarfile, logging, subprocess): a clone, which
only rewrites /etc/hostname and /etc/hosts, must not pay for those imports.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from engine.errors import VstuiError


def in_chroot(tree: Path, work: Callable[[Path], None], what: str,
              close_fds: Iterable[int] = ()) -> None:  # fmt: skip
    """Run ``work(Path("/"))`` in a child chrooted into ``tree``.

    Whatever a foreign tree holds (an absolute symlink at /etc, at /var ...)
    then resolves inside the tree, never onto the host. ``close_fds`` are
    closed in the child first (a pipe's write end the parent holds: its
    reader would never see the end); a number since reused for the child's
    own error pipe is left alone. The child never returns into the caller's
    code: whatever happens there, it exits, and any failure is the parent's
    error (a child that went on as a copy of the caller once reported an
    import that had unpacked nothing as done). ``work`` must not import:
    after the chroot the engine's files are out of reach.
    """
    read_end, write_end = os.pipe()
    close_fds = [fd for fd in close_fds if fd not in (read_end, write_end)]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            for fd in close_fds:
                _close_quietly(fd)
            os.chroot(tree)
            os.chdir("/")
            work(Path("/"))
            code = 0
        except BaseException as exc:
            _report(write_end, exc)
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        error = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise VstuiError(f"{what} failed: {error or 'status ' + str(status)}")


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass  # closed already


def _report(fd: int, exc: BaseException) -> None:
    """The child's failure for the parent's message, if it can be said at all."""
    try:
        text = str(exc) or type(exc).__name__
    except BaseException:
        text = type(exc).__name__
    try:
        os.write(fd, text.encode(errors="replace")[:1000])
    except OSError:
        pass  # the parent still sees the status


def address_of(word: object) -> str | None:
    """The bare IP of an IPROOT word (``eth0:198.18.0.2/24``) or an IPAddr."""
    iface = getattr(word, "interface", None)
    if iface is not None:
        return str(iface.ip)
    import ipaddress

    text = str(word)
    for candidate in (text, text.split(":", 1)[-1]):
        try:
            return str(ipaddress.ip_interface(candidate).ip)
        except ValueError:
            continue
    return None


def hosts_text(hostname: str, addresses: Iterable[object] = ()) -> str:
    """/etc/hosts of a guest: localhost, its name, its addresses."""
    hosts = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{hostname}"]
    hosts += [f"{ip}\t{hostname}" for ip in filter(None, map(address_of, addresses))]
    hosts += ["::1\tlocalhost ip6-localhost ip6-loopback"]
    return "\n".join(hosts) + "\n"
