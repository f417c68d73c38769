"""Work inside a guest tree as its root, and the two files that name a guest.

Kept apart from templates.py (tarfile, logging, subprocess): a clone, which
only rewrites /etc/hostname and /etc/hosts, must not pay for those imports.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from engine.errors import VstuiError


def in_chroot(tree: Path, work: Callable[[Path], None], what: str) -> None:
    """Run ``work(Path("/"))`` in a child chrooted into ``tree``.

    Whatever a foreign tree holds (an absolute symlink at /etc, at /var ...)
    then resolves inside the tree, never onto the host.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 0
        try:
            os.chroot(tree)
            os.chdir("/")
            work(Path("/"))
        except BaseException as exc:
            os.write(write_end, str(exc).encode()[:1000])
            code = 1
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        error = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise VstuiError(f"{what} failed: {error or 'status ' + str(status)}")


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
