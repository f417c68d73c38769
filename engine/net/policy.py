"""Where a veth guest's packets may go: one nftables table per guest.

The table is named after the guest and its root (``vstui-web``,
``vstui-ROOTID-web``), made in one transaction by setup, recorded in
net.json and deleted by teardown: everything a guest's filtering needs
lives in it and goes with it. Every rule matches the guest's own host end,
so the tables of other guests, roots and the administrator never see a
difference (a drop in any table is final, an accept only ends that table).

Routed guest (``inet`` family):

* ``sources`` (prerouting, raw): from the host end, IPv4 and IPv6 sources
  other than the guest's addresses and its one link-local address (made by
  vstui from its MAC) are dropped, the IPv6 counterpart of the host end's
  rp_filter; ``::`` only for duplicate address detection and MLD
  (V_NET_FILTER=no: none of this). Whatever the filter, no other
  link-local source (no guest routes those) and no neighbour or router
  solicitation or advertisement from another address: they, and the
  host's replies to their sources, are what make neighbour entries on the
  host end (the table is one per host, gc_thresh3 entries in all);
* table ``arp`` (same name): ARP from the host end must carry one of the
  guest's IPv4 addresses (or 0.0.0.0, a probe) as sender, for the same
  reason, whatever V_NET_FILTER says (rp_filter is off without it);
* ``forwarding`` (forward): the guest's packets may go to other guests of
  this root (host ends ``vs-*``) and, per V_ROUTE word, out through a named
  host device, each new next hop taken from a set of at most V_NEIGH_LIMIT
  entries a minute (bounded neighbour-table use); anything else is
  rejected (admin-prohibited). Towards the guest only other guests, and the
  V_ROUTE devices (replies only for ``:nat``), may forward;
* ``leaving`` (postrouting, srcnat): the guest's addresses leaving
  through a ``DEV:nat`` device take that device's address.

Bridged guest (``bridge`` family, V_NET_FILTER=yes, the default): frames
from the guest's port must carry its MAC; ARP must announce its own MAC and
addresses; IPv4/IPv6 sources must be its own (IPv6: its link-local, and
``::`` only for duplicate address detection and MLD); neighbour
advertisements only for its own addresses; router advertisements,
redirects, multicast listener queries and DHCP/DHCPv6 server replies are
dropped (anything to the client ports 68/546, which is all dhclient, udhcpc
and systemd-networkd look at, and anything from the server ports 67/547),
and so is every other ethertype (VLAN tags, STP, ...).

The host itself stays reachable (its own addresses are delivered locally,
not forwarded): the audit lists host services a guest reaches that way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.net import nft

NEIGH_TIMEOUT = "60s"  # a next hop stays counted this long after its first use


@dataclass(frozen=True, slots=True)
class Exit:
    """One V_ROUTE word: leave through ``dev`` (None: any host device), masqueraded or not."""

    dev: str | None
    nat: bool = False


@dataclass(frozen=True, slots=True)
class Routed:
    """What the table of a routed guest is made from."""

    table: str
    host_link: str
    guests: str  # "vs-*": the host ends of every guest of this root
    v4: tuple[str, ...]
    v6: tuple[str, ...]
    exits: tuple[Exit, ...] = ()
    neigh_limit: int = 64
    filtered: bool = True
    link_local: str | None = None  # the guest's IPv6 link-local address (with v6)

    @property
    def own6(self) -> tuple[str, ...]:
        return (*self.v6, self.link_local) if self.link_local and self.v6 else self.v6


@dataclass(frozen=True, slots=True)
class Bridged:
    """What the table of a bridged guest is made from."""

    table: str
    port: str
    mac: str
    v4: tuple[str, ...]
    v6: tuple[str, ...]  # including the guest's link-local address


def _set(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _q(name: str) -> str:
    return f'"{name}"'


def routed_script(r: Routed) -> str:
    """The nft commands that make the routed guest's table (one transaction)."""
    t = f"inet {r.table}"
    lines = [f"add table {t}", f"flush table {t}", *_sources(t, r), *_forwarding(t, r)]
    nat = [e for e in r.exits if e.nat and e.dev]
    if nat and r.v4 + r.v6:
        lines.append(f"add chain {t} leaving {{ type nat hook postrouting priority srcnat; }}")
        for e, (family, addrs) in ((e, fa) for e in nat for fa in (("ip", r.v4), ("ip6", r.v6))):
            if addrs:
                lines.append(f"add rule {t} leaving oifname {_q(e.dev or '')} "
                             f"{family} saddr {_set(addrs)} masquerade")  # fmt: skip
    return "\n".join(lines) + "\n"


NEIGHBOUR_MAKERS = "{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }"


def _sources(t: str, r: Routed) -> list[str]:
    lines = [f"add chain {t} sources {{ type filter hook prerouting priority raw; }}"]
    from_guest = f"add rule {t} sources iifname {_q(r.host_link)}"
    if r.own6:  # whatever the filter: the host's neighbour table stays bounded
        other = f" ip6 saddr != {r.link_local}" if r.link_local else ""  # none known: none
        lines += [f"{from_guest} ip6 saddr fe80::/10{other} drop",
                  f"{from_guest} icmpv6 type {NEIGHBOUR_MAKERS} "
                  f"ip6 saddr != {_set([*r.own6, '::'])} drop"]  # fmt: skip
    if not r.filtered:
        return lines
    lines.append(f"{from_guest} ip saddr != {_set(r.v4)} drop" if r.v4
                 else f"{from_guest} meta nfproto ipv4 drop")  # fmt: skip
    if not r.own6:
        return [*lines, f"{from_guest} meta nfproto ipv6 drop"]
    return [*lines,
            f"{from_guest} ip6 saddr :: icmpv6 type != "
            "{ nd-neighbor-solicit, mld2-listener-report } drop",
            f"{from_guest} ip6 saddr != {_set([*r.own6, '::'])} drop"]  # fmt: skip


def routed_arp_script(r: Routed) -> str:
    """The ``arp`` table of a routed guest: ARP senders are its own IPv4 addresses.

    An ARP request for any host address makes a neighbour entry for its
    sender (net/ipv4/arp.c, arp_process: neigh_event_ns) once the sender
    passes the reverse-path check, which V_NET_FILTER=no turns off.
    """
    t = f"arp {r.table}"
    rule = f"add rule {t} sources iifname {_q(r.host_link)}"
    return "\n".join([f"add table {t}", f"flush table {t}",
                      f"add chain {t} sources {{ type filter hook input priority filter; }}",
                      f"{rule} arp saddr ip != {_set([*r.v4, '0.0.0.0'])} drop" if r.v4
                      else f"{rule} drop"]) + "\n"  # fmt: skip


def _forwarding(t: str, r: Routed) -> list[str]:
    lines = [f"add chain {t} forwarding {{ type filter hook forward priority filter; }}"]
    out, into = f"iifname {_q(r.host_link)}", f"oifname {_q(r.host_link)}"
    rule = f"add rule {t} forwarding"
    lines.append(f"{rule} {out} oifname {_q(r.guests)} accept")
    if r.exits:
        size = f"size {r.neigh_limit}; flags dynamic,timeout; timeout {NEIGH_TIMEOUT};"
        lines.append(f"add set {t} hops4 {{ type ipv4_addr; {size} }}")
        lines.append(f"add set {t} hops6 {{ type ipv6_addr; {size} }}")
    for e in r.exits:
        via = f" oifname {_q(e.dev)}" if e.dev else ""
        # a full set makes "add" fail, which ends the rule: the packet reaches the reject
        lines.append(f"{rule} {out}{via} meta nfproto ipv4 add @hops4 {{ rt ip nexthop }} accept")
        lines.append(f"{rule} {out}{via} meta nfproto ipv6 add @hops6 {{ rt ip6 nexthop }} accept")
    lines.append(f"{rule} {out} reject with icmpx type admin-prohibited")
    lines.append(f"{rule} {into} iifname {_q(r.guests)} accept")
    for e in r.exits:
        via = f" iifname {_q(e.dev)}" if e.dev else ""
        replies = " ct state established,related" if e.nat else ""
        lines.append(f"{rule} {into}{via}{replies} accept")
    lines.append(f"{rule} {into} drop")
    return lines


def bridged_script(b: Bridged) -> str:
    """The nft commands that make the bridged guest's table (one transaction)."""
    t = f"bridge {b.table}"
    rule = f"add rule {t} guest"
    lines = [f"add table {t}", f"flush table {t}",
             f"add chain {t} from_guest {{ type filter hook prerouting priority filter; }}",
             f"add chain {t} guest",
             f"add rule {t} from_guest iifname {_q(b.port)} jump guest",
             f"{rule} ether saddr != {b.mac} drop",
             f"{rule} ether type != {{ ip, ip6, arp }} drop"]  # fmt: skip
    if b.v4:
        lines += [f"{rule} arp saddr ether != {b.mac} drop",
                  f"{rule} arp saddr ip != {_set([*b.v4, '0.0.0.0'])} drop",
                  f"{rule} ip saddr != {_set(b.v4)} drop",
                  f"{rule} udp sport 67 drop",
                  f"{rule} udp dport 68 drop",  # what a client takes as an offer
                  f"{rule} icmp type redirect drop",
                  f"{rule} igmp type membership-query drop"]  # fmt: skip
    else:
        lines.append(f"{rule} ether type {{ ip, arp }} drop")
    if b.v6:
        lines += [f"{rule} ip6 saddr :: icmpv6 type != "
                  "{ nd-neighbor-solicit, mld2-listener-report } drop",
                  f"{rule} ip6 saddr != {_set([*b.v6, '::'])} drop",
                  f"{rule} icmpv6 type {{ nd-router-advert, nd-redirect, mld-listener-query }} "
                  "drop",
                  f"{rule} udp sport 547 drop",
                  f"{rule} udp dport 546 drop",
                  # the target address of a neighbour advertisement (RFC 4861 4.4)
                  f"{rule} icmpv6 type nd-neighbor-advert @th,64,128 != "
                  f"{_set(_hex(a) for a in b.v6)} drop"]  # fmt: skip
    else:
        lines.append(f"{rule} ether type ip6 drop")
    return "\n".join(lines) + "\n"


def _hex(address: str) -> str:
    return "0x" + ipaddress.IPv6Address(address).packed.hex()


def link_local(mac: str) -> str:
    """The EUI-64 link-local address of a MAC (RFC 4291 appendix A)."""
    octets = bytearray(bytes.fromhex(mac.replace(":", "")))
    octets[0] ^= 0x02
    eui = octets[:3] + b"\xff\xfe" + octets[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + bytes(eui)))


def apply(script: str) -> None:
    nft.run(script)


def remove(tables: Sequence[str]) -> None:
    """Delete recorded tables (``"inet NAME"``); ones already gone are fine."""
    for entry in tables:
        family, _, name = entry.partition(" ")
        nft.delete_table(family, name)
