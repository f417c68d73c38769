"""Guest addresses from the configuration: prefix, broadcast, host device.

Pure functions (no netlink), so the rules are unit-tested without root.
The config part already applied IPROOTMASK (else /24; IPv6 /64) and
IPROOTBCAST to each ``IPAddr``; here the broadcast is completed and the
addresses are grouped by the host device that ipvlan/macvlan hang them on.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError, NetError

IFA_F_NODAD = 0x02  # include/uapi/linux/if_addr.h
IFA_F_NOPREFIXROUTE = 0x200

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class GuestAddr:
    """One address as it goes onto a guest link."""

    interface: IPInterface
    broadcast: str | None  # IPv4 only
    host_dev: str | None  # host device for ipvlan/macvlan (IPAddr.dev or IPROOTDEV)

    @property
    def address(self) -> str:
        return str(self.interface.ip)

    @property
    def prefixlen(self) -> int:
        return self.interface.network.prefixlen

    @property
    def version(self) -> int:
        return self.interface.version

    @property
    def host_route(self) -> str:
        """The host's route to this one address (/32 or /128)."""
        return f"{self.address}/{self.interface.max_prefixlen}"


def broadcast_of(interface: IPInterface, configured: str | None) -> str | None:
    """IPROOTBCAST when given, else the network's broadcast; none for /31, /32, IPv6."""
    if interface.version != 4:
        return None
    if configured:
        return configured
    if interface.network.prefixlen >= 31:
        return None
    return str(interface.network.broadcast_address)


def guest_addresses(cfg: Any) -> tuple[GuestAddr, ...]:
    """The configured addresses with broadcast and host device filled in."""
    default_bcast = getattr(cfg, "iprootbcast", None)
    found = []
    for item in cfg.addresses:
        bcast = broadcast_of(item.interface, item.bcast or default_bcast)
        found.append(GuestAddr(item.interface, bcast, item.dev or cfg.iprootdev))
    return tuple(found)


def by_host_device(cfg: Any, addresses: tuple[GuestAddr, ...]) -> dict[str, list[GuestAddr]]:
    """Addresses grouped by host device, in configuration order (ipvlan/macvlan)."""
    groups: dict[str, list[GuestAddr]] = {}
    for addr in addresses:
        if not addr.host_dev:
            raise NetError(
                f"{cfg.name}: address {addr.address} has no host device for "
                f"V_NETMODE={cfg.netmode}; set IPROOTDEV or write it as dev:{addr.interface}",
                cfg.name,
            )
        groups.setdefault(addr.host_dev, []).append(addr)
    return groups


def addr_flags(addr: GuestAddr, routed: bool) -> int:
    """IPv6 without duplicate address detection (no 1-2 s wait at start).

    A routed guest gets no on-link prefix route either (IPv4 and IPv6):
    everything goes to the host end, which knows where each /32 or /128
    lives, so the guest never resolves neighbours on its own.
    """
    routed_flags = IFA_F_NOPREFIXROUTE if routed else 0
    if addr.version == 4:
        return routed_flags
    return IFA_F_NODAD | routed_flags


def gateway_for(addresses: list[GuestAddr], gateways: list[str]) -> str | None:
    """The first host gateway that lies inside one of the guest's subnets."""
    for gateway in gateways:
        ip = ipaddress.ip_address(gateway)
        for addr in addresses:
            if addr.version == ip.version and ip in addr.interface.network:
                return gateway
    return None


def host_addresses() -> dict[str, str]:
    """Every local address of this network namespace -> the device that carries it."""
    from engine.net import nl

    with nl.host() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return {(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")): names.get(a["index"], "?")
                for a in ipr.get_addr()}  # fmt: skip


RTN_KINDS = {2: "an address", 3: "a broadcast address", 4: "an anycast address"}  # RTN_LOCAL..


def host_local_addresses() -> dict[IPAddress, tuple[str, str]]:
    """What the host's local table answers for -> (kind, device).

    Its own addresses, the broadcast address of each IPv4 network and the
    subnet-router anycast address of each IPv6 one it forwards for
    (net/ipv4/fib_frontend.c fib_add_ifaddr; net/ipv6/anycast.c).
    """
    import socket

    from engine.net import nl

    found: dict[IPAddress, tuple[str, str]] = {}
    with nl.host() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for family, full in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
            for route in ipr.get_routes(family=family, table=255):
                if route["dst_len"] == full and route["type"] in RTN_KINDS:
                    found[ipaddress.ip_address(route.get_attr("RTA_DST"))] = (
                        RTN_KINDS[route["type"]],
                        names.get(route.get_attr("RTA_OIF"), "?"),
                    )
    return found


def refuse_host_owned(cfg: Any, config_file: Any) -> None:
    """ConfigError when the host answers for a guest address itself (start and check).

    The host would take the guest's traffic (or broadcast it on a host
    network), and the guest would send as the host towards every other
    guest; the kernel lets both have the address, so we ask.
    """
    if (cfg.netmode or "veth") == "host" or not cfg.addresses:
        return
    local = host_local_addresses()
    for item in cfg.addresses:
        kind, dev = local.get(item.interface.ip, (None, ""))
        if kind is not None:
            raise ConfigError(
                f"{item.address} is {kind} of this host (on {dev}); give the guest an "
                f"address of its own, or take {item.address} off {dev}",
                config_file, key="IPROOT", guest=cfg.name,
            )  # fmt: skip
