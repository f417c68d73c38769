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


def refuse_host_owned(cfg: Any, config_file: Any) -> None:
    """ConfigError when a guest address is one of the host's own (start and check).

    The host would answer for it and the guest would then send as the host
    towards every other guest; the kernel lets both have it, so we ask.
    """
    if (cfg.netmode or "veth") == "host" or not cfg.addresses:
        return
    owned = {ipaddress.ip_address(a.split("%")[0]): dev for a, dev in host_addresses().items()}
    for item in cfg.addresses:
        dev = owned.get(item.interface.ip)
        if dev is not None:
            raise ConfigError(
                f"{item.address} is an address of this host (on {dev}); give the guest an "
                f"address of its own, or remove {item.address} from {dev}",
                config_file, key="IPROOT", guest=cfg.name,
            )  # fmt: skip
