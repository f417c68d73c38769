"""Links: the veth pair, ipvlan/macvlan slaves, bridge ports, the guest's side.

Every function takes pyroute2 IPRoute objects made by ``engine.net.nl``:
``host`` in the host namespace, ``guest`` inside the guest's namespace.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import NetError
from engine.net import nl
from engine.net.addrs import IFA_F_NODAD, GuestAddr, addr_flags, gateway_for

if TYPE_CHECKING:
    from pyroute2 import IPRoute

GUEST_IFNAME = "eth0"
IPV6_GATEWAY = "fe80::1"  # the host end's address, the IPv6 next hop of routed guests
# The IPv4 next hop of routed guests: a name for the host end only, never an
# address of the host. The guest gets a permanent neighbour entry for it with
# the host end's MAC, so it needs no ARP and no proxy_arp answers for it.
IPV4_GATEWAY = "169.254.0.1"
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 4
RT_SCOPE_LINK = 253
SYSCTL = Path("/proc/sys/net")


def create_veth(host: IPRoute, host_name: str, netns_pid: int, guest: str) -> None:
    """A veth pair: ``host_name`` here, its peer born as eth0 in the guest's namespace.

    Creating the peer directly in the target namespace means no temporary
    name ever exists on the host, so two guests can never race for one.
    """
    try:
        host.link(
            "add",
            ifname=host_name,
            kind="veth",
            peer={"ifname": GUEST_IFNAME, "net_ns_pid": netns_pid},
        )
    except Exception as exc:
        if nl.errno_of(exc) == errno.EEXIST:
            raise NetError(
                f"link {host_name} already exists on the host; if no guest uses it, "
                f"remove it: ip link del {host_name}",
                guest,
            ) from None
        raise


def harden_host_end(link: str, filtered: bool = True) -> None:
    """No router adverts or redirects taken from the guest, no spoofed sources let in.

    A guest that forges RAs (escape class 23) must not configure the host's
    end of its veth; strict reverse-path filtering drops packets whose source
    is not routed back through this link (the guest's own addresses are);
    V_NET_FILTER=no turns that off for a guest that routes other networks.
    """
    if (SYSCTL / f"ipv6/conf/{link}").exists():  # absent when the host has no IPv6
        _sysctl(f"ipv6/conf/{link}/accept_ra", "0")
        _sysctl(f"ipv6/conf/{link}/accept_redirects", "0")
    _sysctl(f"ipv4/conf/{link}/accept_redirects", "0")
    _sysctl(f"ipv4/conf/{link}/rp_filter", "1" if filtered else "0")


def create_slave(
    host: IPRoute, kind: str, master: str, ifname: str, netns_pid: int, guest: str
) -> None:
    """An ipvlan (L2) or macvlan (bridge) slave of ``master``, born in the guest's namespace."""
    index = nl.link_index(host, master)
    if index is None:
        raise NetError(f"host device {master} does not exist; fix IPROOTDEV or the dev: prefix",
                       guest)  # fmt: skip
    mode = {"ipvlan_mode": 0} if kind == "ipvlan" else {"macvlan_mode": "bridge"}
    try:
        host.link("add", ifname=ifname, kind=kind, link=index, net_ns_pid=netns_pid, **mode)
    except Exception as exc:
        if nl.errno_of(exc) == errno.EOPNOTSUPP:
            raise NetError(
                f"this kernel has no {kind} driver (CONFIG_{kind.upper()}); "
                "use V_NETMODE=veth or another mode",
                guest,
            ) from None
        raise


def set_up(ipr: IPRoute, name: str) -> int:
    index = nl.link_index(ipr, name)
    if index is None:
        raise NetError(f"link {name} vanished while being set up")
    ipr.link("set", index=index, state="up")
    return index


def attach_bridge(host: IPRoute, link: str, bridge: str, guest: str) -> None:
    bridge_index = nl.link_index(host, bridge)
    if bridge_index is None:
        raise NetError(f"bridge {bridge} does not exist; create it or unset V_BRIDGE", guest)
    host.link("set", index=nl.link_index(host, link), master=bridge_index)


def routed_host_end(link: str, ipv6: bool) -> None:
    """Sysctls on the host end only (they go away with the link).

    Forwarding on this link lets the host route what the guest sends (the
    kernel checks forwarding on the link a packet came in on, so the global
    ip_forward stays as it is); the guest's nftables table decides where
    to (engine.net.policy). No proxy_arp: the guest needs no ARP answers
    (its gateway is a permanent neighbour entry), and proxy_arp would answer
    for every address the host routes. IPv6 uses force_forwarding (Linux 6.17+).
    """
    _sysctl(f"ipv4/conf/{link}/forwarding", "1")
    if not ipv6:  # no fe80::, router solicitations or MLD on a link without IPv6 guests
        _sysctl(f"ipv6/conf/{link}/disable_ipv6", "1")
        return
    _sysctl(f"ipv6/conf/{link}/accept_ra", "0")
    if (SYSCTL / f"ipv6/conf/{link}/force_forwarding").exists():
        _sysctl(f"ipv6/conf/{link}/force_forwarding", "1")


def _sysctl(name: str, value: str) -> None:
    (SYSCTL / name).write_text(value)


def mac_of(ipr: IPRoute, name: str) -> str:
    index = nl.link_index(ipr, name)
    if index is None:
        raise NetError(f"link {name} vanished while being set up")
    return ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")


def host_ipv6_gateway(host: IPRoute, link: str) -> None:
    """fe80::1 on the host end: the next hop routed IPv6 guests use."""
    index = nl.link_index(host, link)
    host.addr("add", index=index, address=IPV6_GATEWAY, prefixlen=64, flags=0x02)


def add_host_route(host: IPRoute, addr: GuestAddr, link: str, guest: str) -> None:
    """The host's route to one guest address through the guest's veth.

    "add", not "replace": an address routed elsewhere (another guest, a host
    network) is refused instead of silently taken over.
    """
    index = nl.link_index(host, link)
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    try:
        host.route("add", dst=addr.host_route, oif=index, family=family, scope=RT_SCOPE_LINK)
    except Exception as exc:
        if nl.errno_of(exc) == errno.EEXIST:
            raise NetError(
                f"address {addr.address} is already routed on the host (another guest or "
                "a host network uses it); give the guest another address",
                guest,
            ) from None
        raise


def delete_host_route(host: IPRoute, dst: str, link: str) -> None:
    index = nl.link_index(host, link)
    if index is None:
        return  # the route went with its link
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    nl.ignore_missing(host.route, "del", dst=dst, oif=index, family=family)


def delete_link(ipr: IPRoute, name: str) -> bool:
    index = nl.link_index(ipr, name)
    if index is None:
        return False
    return nl.ignore_missing(ipr.link, "del", index=index)


def host_gateways(host: IPRoute, dev: str) -> list[str]:
    """Gateways of the host's default routes through ``dev`` (IPv4 and IPv6)."""
    index = nl.link_index(host, dev)
    found = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in host.route("dump", family=family, table=254):
            if route["dst_len"] != 0 or route.get("oif") != index:
                continue
            gateway = route.get("gateway")
            if gateway:
                found.append(gateway)
    return found


def bridge_addresses(host: IPRoute, bridge: str) -> list[str]:
    index = nl.link_index(host, bridge)
    return [a.get("address") for a in host.addr("dump", index=index)] if index else []


def configure_guest(
    guest: IPRoute,
    ifname: str,
    addresses: list[GuestAddr],
    routed: bool,
    gateways: list[str],
    default_route: bool,
    host_mac: str | None = None,
    link_local: str | None = None,
) -> None:
    """Inside the guest: loopback and ``ifname`` up, addresses, default routes.

    ``routed`` (veth without bridge): no on-link prefix routes, everything
    goes to the host end: IPv4 via 169.254.0.1 (a permanent neighbour entry
    with ``host_mac``), IPv6 via fe80::1. So the guest never asks ARP or
    neighbour discovery about anyone else. Otherwise the default goes via
    the first of ``gateways`` in a guest subnet, if any. ``link_local``: the
    IPv6 link-local address to add (the kernel makes none: addr_gen_mode 1).
    """
    guest.link("set", index=nl.link_index(guest, "lo"), state="up")
    index = set_up(guest, ifname)
    if link_local:
        guest.addr("add", index=index, address=link_local, prefixlen=64, flags=IFA_F_NODAD)
    for addr in addresses:
        extra = {"broadcast": addr.broadcast} if addr.broadcast else {}
        guest.addr("add", index=index, address=addr.address, prefixlen=addr.prefixlen,
                   flags=addr_flags(addr, routed), **extra)  # fmt: skip
    if not default_route:
        return
    versions = {a.version for a in addresses}
    if routed:
        if 4 in versions:
            guest.neigh("add", dst=IPV4_GATEWAY, lladdr=host_mac, ifindex=index,
                        state=NUD_PERMANENT)  # fmt: skip
            guest.route("add", dst="0.0.0.0/0", family=socket.AF_INET, oif=index,
                        gateway=IPV4_GATEWAY, flags=RTNH_F_ONLINK)  # fmt: skip
        if 6 in versions:
            guest.route("add", dst="::/0", family=socket.AF_INET6, oif=index,
                        gateway=IPV6_GATEWAY)  # fmt: skip
        return
    for version, family, dst in ((4, socket.AF_INET, "0.0.0.0/0"), (6, socket.AF_INET6, "::/0")):
        same = [g for g in gateways if (":" in g) == (version == 6)]
        gateway = gateway_for(addresses, same)
        if gateway:
            guest.route("add", dst=dst, family=family, oif=index, gateway=gateway)
