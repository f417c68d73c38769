"""What the audit reads from the host, behind one injectable object.

``Sources`` bundles the readers that need the real host (listening sockets,
the host's device addresses, the cgroup controllers, /proc); unit tests
replace them with fakes. ``Facts`` calls each at most once per audit. Every
reader only reads: /proc, /sys and a pyroute2 address dump (no netlink
writes, no namespace changes).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from engine.procfs import read_text

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def parse_fib_trie(text: str) -> frozenset[str]:
    """Local IPv4 addresses of a namespace from /proc/PID/net/fib_trie.

    An address is a ``|-- A.B.C.D`` leaf followed by a ``/32 host LOCAL`` line.
    """
    found: set[str] = set()
    leaf: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            leaf = stripped[3:].strip()
        elif leaf and stripped.startswith("/32 host LOCAL"):
            found.add(leaf)
    return frozenset(found)


def parse_if_inet6(text: str) -> dict[str, frozenset[str]]:
    """Device -> IPv6 addresses from /proc/PID/net/if_inet6."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 6 or len(cols[0]) != 32:
            continue
        addr = str(ipaddress.IPv6Address(bytes.fromhex(cols[0])))
        found.setdefault(cols[5], set()).add(addr)
    return {dev: frozenset(addrs) for dev, addrs in found.items()}


def netns_addresses(pid: int | str, proc_root: str = "/proc") -> frozenset[str]:
    """Every IPv4 and IPv6 address in the network namespace of ``pid``, not
    counting loopback and link-local ones (the kernel adds those itself).

    Raises OSError when /proc/PID/net cannot be read.
    """
    v4 = parse_fib_trie(read_text(f"{proc_root}/{pid}/net/fib_trie"))
    try:  # link names: a guest's root names its own
        v6 = parse_if_inet6(read_text(f"{proc_root}/{pid}/net/if_inet6"))
    except FileNotFoundError:  # IPv6 off in the kernel
        v6 = {}
    found = set(v4)
    for addrs in v6.values():
        found.update(addrs)
    return frozenset(a for a in found if _counted(a))


def _counted(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local)


def host_device_addresses() -> dict[str, tuple[IPInterface, ...]]:
    """Device -> addresses (with prefix) of the host's network namespace.

    A pyroute2 dump (read-only: RTM_GETLINK / RTM_GETADDR), imported here
    only: the audit is the one reader that needs prefixes per device.
    """
    from pyroute2 import IPRoute

    found: dict[str, list[IPInterface]] = {}
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            dev = names.get(msg["index"])
            addr = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
            if dev is None or addr is None:
                continue
            found.setdefault(dev, []).append(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
    return {dev: tuple(addrs) for dev, addrs in found.items()}


def cgroup_controllers() -> frozenset[str]:
    """The controllers the engine can use on this host (engine.cgroups' probe)."""
    from engine.cgroups.probe import probe

    layout = probe()
    found: set[str] = set()
    for h in layout.hierarchies:
        found.update(h.controllers)
    return frozenset(found)


def listeners() -> list[Any]:
    """The host's listening sockets with their processes (engine.net)."""
    from engine.net.sockets import listening_sockets

    return listening_sockets(resolve=True)


def net_sysctl(name: str) -> str | None:
    """/proc/sys/net/NAME (e.g. ``ipv6/conf/br0/accept_ra``), None when absent."""
    try:
        with open(f"/proc/sys/net/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def max_user_namespaces() -> int | None:
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Sources:
    """The host readers; every field can be replaced (tests inject fakes)."""

    listeners: Callable[[], list[Any]] = listeners
    host_addresses: Callable[[], dict[str, tuple[IPInterface, ...]]] = host_device_addresses
    controllers: Callable[[], frozenset[str]] = cgroup_controllers
    max_user_namespaces: Callable[[], int | None] = max_user_namespaces
    net_sysctl: Callable[[str], str | None] = net_sysctl
    proc_root: str = "/proc"
    # uid that must own vstui's directories; tests running as a user pass theirs
    owner_uid: int = 0
    # where guest processes are found: name -> set of pids, or None (no cgroup)
    members: Callable[[Any, str], set[int] | None] | None = None


@dataclass
class Facts:
    """Each source read at most once per audit; failures are kept, not raised."""

    sources: Sources
    errors: dict[str, BaseException] = field(default_factory=dict)

    def _once(self, key: str, reader: Callable[[], Any], empty: Any) -> Any:
        try:
            return reader()
        except Exception as exc:  # any reader failing must not end the audit
            self.errors[key] = exc
            return empty

    @cached_property
    def listeners(self) -> list[Any]:
        return self._once("listening sockets", self.sources.listeners, [])

    @cached_property
    def host_addresses(self) -> dict[str, tuple[IPInterface, ...]]:
        return self._once("host device addresses", self.sources.host_addresses, {})

    @cached_property
    def host_ips(self) -> frozenset[str]:
        return frozenset(str(a.ip) for addrs in self.host_addresses.values() for a in addrs)

    @cached_property
    def controllers(self) -> frozenset[str] | None:
        return self._once("cgroup controllers", self.sources.controllers, None)

    def members(self, paths: Any, name: str) -> set[int] | None:
        if self.sources.members is not None:
            return self.sources.members(paths, name)
        from engine.procs.attribution import cgroup_members

        return cgroup_members(paths, name)
