"""The host's listening sockets, from /proc/net/{tcp,tcp6,udp,udp6}.

The audit warns about wildcard binds (0.0.0.0 / ::) that a guest address
would share. Reading the tables is cheap; mapping sockets to processes
walks every /proc/PID/fd and is only done when asked.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from engine.procfs import read_text
from engine.text import visible

TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"
TABLES = (("tcp", "tcp", TCP_LISTEN), ("tcp6", "tcp", TCP_LISTEN),
          ("udp", "udp", UDP_UNCONNECTED), ("udp6", "udp", UDP_UNCONNECTED))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Listener:
    """A socket waiting for traffic on the host."""

    proto: str  # tcp | udp (the address tells v4 from v6)
    address: str
    port: int
    pid: int | None = None
    process: str | None = None

    @property
    def wildcard(self) -> bool:
        return self.address in ("0.0.0.0", "::")


def parse_address(hex_addr: str) -> tuple[str, int]:
    """``0100007F:0016`` -> ("127.0.0.1", 22); IPv6 words are host-endian u32s."""
    addr_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(addr_hex)
    words = struct.unpack(f"<{len(raw) // 4}I", raw)  # the kernel prints each u32 natively
    packed = struct.pack(f">{len(words)}I", *words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    text = socket.inet_ntop(family, packed)
    if family == socket.AF_INET6:
        import ipaddress  # canonical form ("::1"), off the import path

        text = str(ipaddress.IPv6Address(text))
    return text, int(port_hex, 16)


def parse_table(text: str, proto: str, state: str) -> list[tuple[str, int, int]]:
    """(address, port, inode) of the sockets in ``state`` in one /proc/net table."""
    found = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != state:
            continue
        address, port = parse_address(cols[1])
        found.append((address, port, int(cols[9])))
    return found


def _net_dir() -> str:
    # PID 1's view is the host namespace even if this thread sits elsewhere.
    return "/proc/1/net" if os.access("/proc/1/net/tcp", os.R_OK) else "/proc/self/net"


def socket_owners() -> dict[int, tuple[int, str]]:
    """socket inode -> (pid, comm), by scanning /proc/*/fd (slow: only when asked)."""
    owners: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        comm = None
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if not target.startswith("socket:["):
                continue
            inode = int(target[8:-1])
            if inode in owners:
                continue
            if comm is None:
                try:
                    comm = visible(read_text(f"/proc/{entry}/comm").strip())  # its own choice
                except OSError:
                    comm = "?"
            owners[inode] = (int(entry), comm)
    return owners


def listening_sockets(resolve: bool = False) -> list[Listener]:
    """Listening TCP and bound UDP sockets of the host; ``resolve`` adds pid/process."""
    base = _net_dir()
    rows: list[tuple[str, str, int, int]] = []
    for table, proto, state in TABLES:
        try:
            with open(f"{base}/{table}") as f:
                text = f.read()
        except OSError:
            continue
        rows += [(proto, a, p, inode) for a, p, inode in parse_table(text, proto, state)]
    owners = socket_owners() if resolve else {}
    listeners = {
        Listener(proto, address, port, *owners.get(inode, (None, None)))
        for proto, address, port, inode in rows
    }
    return sorted(listeners, key=lambda s: (s.proto, s.port, s.address, s.pid or 0))
