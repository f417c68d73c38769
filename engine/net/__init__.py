"""Guest networking: namespaces, addresses, links, shaping, counters, listeners.

The contract (docs/engine-api.md)::

    setup(cfg, paths, netns_pid)      host side + inside the guest's netns
    teardown(cfg_or_name, paths)      idempotent; from run_dir(NAME)/net.json
    set_bandwidth(cfg, paths)         on a running guest
    counters(paths, names)            -> dict[name, NetStats]
    listening_sockets(resolve=False)  -> list[Listener]

Modes (``cfg.netmode``): ``veth`` (default; routed through the host, or a
port of ``cfg.bridge``), ``ipvlan`` / ``macvlan`` (a slave of the host device
that carries the address), ``host`` (no namespace of its own: nothing to do).
Every netlink call goes through pyroute2, imported lazily; counters and
listeners read /sys and /proc only. docs/network.md explains the design.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from engine.errors import NetError, VstuiError
from engine.net import state as net_state
from engine.net.counters import counters
from engine.net.sockets import Listener, listening_sockets
from engine.paths import Paths

__all__ = ["Listener", "counters", "listening_sockets", "set_bandwidth", "setup", "teardown"]

MODES = ("veth", "ipvlan", "macvlan", "host")
GUEST_IFB = "ifb-eth0"  # ingress shaping of an ipvlan/macvlan guest, inside its namespace


def setup(cfg: Any, paths: Paths, netns_pid: int) -> None:
    """Give the guest its network inside the namespace of ``netns_pid``.

    On any failure everything made so far is removed again, then the error
    is raised (a NetError naming the guest and the fix).
    """
    mode = cfg.netmode or "veth"
    if mode not in MODES:
        raise NetError(f"V_NETMODE={mode} is not one of {', '.join(MODES)}", cfg.name)
    # leftovers of an earlier run go first, even when this run needs no links
    # (_clear_stale imports no netlink code when nothing was recorded)
    _clear_stale(paths, cfg.name)
    if mode == "host" or not needs_netlink(cfg):
        return
    from engine.net import nl

    recorder = _Recorder(paths, net_state.NetState(
        name=cfg.name, mode=mode, netns_pid=netns_pid, netns_inode=nl.ns_inode(netns_pid),
        addresses=tuple(str(a.interface) for a in cfg.addresses)))  # fmt: skip
    recorder.save()
    try:
        _build(cfg, paths, netns_pid, recorder)
    except BaseException as exc:
        _undo(paths, recorder.state)
        raise _as_net_error(exc, cfg.name, "set up the network") from exc


def needs_netlink(cfg: Any) -> bool:
    """Whether setup has anything to do beyond the loopback the guest brings up itself.

    A guest without addresses, bridge or bandwidth gets no links at all, so
    its start never imports pyroute2 (~200 ms).
    """
    if (cfg.netmode or "veth") == "host":
        return False
    return bool(
        cfg.addresses
        or getattr(cfg, "bridge", None)
        or cfg.bandwidth_out is not None
        or cfg.bandwidth_in is not None
    )


class _Recorder:
    """The state being built, written to net.json after every change."""

    def __init__(self, paths: Paths, initial: net_state.NetState) -> None:
        self.paths = paths
        self.state = initial

    def add(self, **changes: object) -> None:
        self.state = self.state.adding(**changes)
        self.save()

    def save(self) -> None:
        net_state.save(self.paths, self.state)


def _build(cfg: Any, paths: Paths, netns_pid: int, rec: _Recorder) -> None:
    from engine.net import addrs, nl

    addresses = addrs.guest_addresses(cfg)
    with nl.host() as host, nl.in_netns(netns_pid, cfg.name) as guest:
        if not any(a.version == 6 for a in addresses):
            _no_ipv6_on(netns_pid, "default", cfg.name)
        if rec.state.mode == "veth":
            _build_veth(cfg, paths, netns_pid, rec, host, guest, addresses)
        else:
            _build_slaves(cfg, netns_pid, rec, host, guest, addresses)
        if not addresses:
            guest.link("set", index=nl.link_index(guest, "lo"), state="up")
        _shape(cfg, paths, rec, host, guest)


def _no_ipv6_on(netns_pid: int, conf: str, guest: str) -> None:
    """No IPv6 (not even fe80::) on links of a guest configured without IPv6."""
    from engine.net import nl

    nl.write_sysctl_in(netns_pid, f"ipv6/conf/{conf}/disable_ipv6", "1", guest)


def _build_veth(cfg, paths, netns_pid, rec, host, guest, addresses) -> None:
    from engine.net import links

    link = paths.link_name(cfg.name)
    links.create_veth(host, link, netns_pid, cfg.name)
    rec.add(host_link=link)  # recorded before anything else can fail: undo removes it
    filtered = getattr(cfg, "net_filter", True)
    links.harden_host_end(link, filtered)
    ipv6 = any(a.version == 6 for a in addresses)
    if cfg.bridge:
        link_local = None
        if filtered:  # before the port joins: no frame passes unfiltered
            link_local = _filter_bridged(cfg, paths, rec, link, netns_pid, guest, addresses)
        links.set_up(host, link)
        links.attach_bridge(host, link, cfg.bridge, cfg.name)
        rec.add(bridge=cfg.bridge)
        gateways = links.bridge_addresses(host, cfg.bridge)
        links.configure_guest(guest, links.GUEST_IFNAME, list(addresses), routed=False,
                              gateways=gateways, default_route=True,
                              link_local=link_local)  # fmt: skip
        return
    link_local = _own_link_local(cfg, netns_pid, guest, addresses)
    _filter_routed(cfg, paths, rec, link, addresses, link_local)  # before anything can pass
    links.set_up(host, link)
    links.routed_host_end(link, ipv6)
    if ipv6:
        links.host_ipv6_gateway(host, link)
    links.configure_guest(guest, links.GUEST_IFNAME, list(addresses), routed=True, gateways=[],
                          default_route=True, host_mac=links.mac_of(host, link),
                          link_local=link_local)  # fmt: skip
    for addr in addresses:
        links.add_host_route(host, addr, link, cfg.name)
        rec.add(host_routes=(net_state.HostRoute(addr.host_route, link),))


def _filter_routed(cfg: Any, paths: Paths, rec: _Recorder, link: str, addresses,
                   link_local: str | None) -> None:  # fmt: skip
    """The guest's nftables tables: its sources, where it may forward to (V_ROUTE)."""
    from engine.net import policy

    table = paths.nft_table(cfg.name)
    rec.add(nft_tables=(f"inet {table}", f"arp {table}"))  # recorded first: undo deletes them
    routed = policy.Routed(
        table=table, host_link=link, guests=paths.link_name("") + "*",
        v4=tuple(a.address for a in addresses if a.version == 4),
        v6=tuple(a.address for a in addresses if a.version == 6),
        exits=tuple(policy.Exit(r.dev, r.nat) for r in getattr(cfg, "routes", ())),
        neigh_limit=getattr(cfg, "neigh_limit", 64),
        filtered=getattr(cfg, "net_filter", True), link_local=link_local)  # fmt: skip
    policy.apply(policy.routed_script(routed) + policy.routed_arp_script(routed))


def _own_link_local(cfg: Any, netns_pid: int, guest: Any, addresses) -> str | None:
    """With IPv6, the guest's link-local address, made by us from its MAC.

    addr_gen_mode none (before the link comes up) + the EUI-64 address, so
    the host's filter can name the one link-local source the guest has.
    """
    from engine.net import links, nl, policy

    if not any(a.version == 6 for a in addresses):
        return None
    nl.write_sysctl_in(netns_pid, f"ipv6/conf/{links.GUEST_IFNAME}/addr_gen_mode", "1",
                       cfg.name)  # fmt: skip
    return policy.link_local(links.mac_of(guest, links.GUEST_IFNAME))


def _filter_bridged(cfg, paths, rec, port, netns_pid, guest, addresses) -> str | None:
    """The guest's bridge-family table: own MAC and addresses only (see policy).

    With IPv6 the guest's link-local address is made by us, from its MAC
    (addr_gen_mode none + the EUI-64 address), so the filter knows it.
    Returns that address, or None without IPv6.
    """
    from engine.net import links, policy

    mac = links.mac_of(guest, links.GUEST_IFNAME)
    v6 = [a.address for a in addresses if a.version == 6]
    link_local = _own_link_local(cfg, netns_pid, guest, addresses)
    table = paths.nft_table(cfg.name)
    rec.add(nft_tables=(f"bridge {table}",))  # recorded first: undo deletes it
    policy.apply(policy.bridged_script(policy.Bridged(
        table=table, port=port, mac=mac,
        v4=tuple(a.address for a in addresses if a.version == 4),
        v6=tuple([*v6, link_local] if link_local else ()))))  # fmt: skip
    return link_local


def _build_slaves(cfg, netns_pid, rec, host, guest, addresses) -> None:
    from engine.net import addrs, links

    groups = addrs.by_host_device(cfg, addresses)
    for number, (dev, group) in enumerate(groups.items()):
        ifname = f"eth{number}"
        links.create_slave(host, rec.state.mode, dev, ifname, netns_pid, cfg.name)
        rec.add(guest_links=(ifname,))
        links.configure_guest(guest, ifname, group, routed=False,
                              gateways=links.host_gateways(host, dev),
                              default_route=number == 0)  # fmt: skip


def _shape(cfg: Any, paths: Paths, rec: _Recorder, host: Any, guest: Any) -> None:
    from engine.net import shaping

    out_bps, in_bps = cfg.bandwidth_out, cfg.bandwidth_in
    for value, what in ((out_bps, "V_BANDWIDTH_OUT"), (in_bps, "V_BANDWIDTH_IN")):
        if value is not None:
            shaping.check_rate(value, what, cfg.name)
    st = rec.state
    if st.mode == "veth":
        ifb = paths.link_name(cfg.name, kind="ifb")
        if out_bps is not None and ifb not in st.host_links:
            rec.add(host_links=(ifb,))  # recorded first: a failure half way still removes it
        shaping.limit_egress(host, st.host_link, in_bps)
        if not shaping.limit_ingress(host, st.host_link, ifb, out_bps):
            rec.state = rec.state.dropping("host_links", ifb)
    elif st.guest_links:
        eth0 = st.guest_links[0]
        if in_bps is not None and GUEST_IFB not in st.guest_links:
            rec.add(guest_links=(GUEST_IFB,))
        shaping.limit_egress(guest, eth0, out_bps)
        if not shaping.limit_ingress(guest, eth0, GUEST_IFB, in_bps):
            rec.state = rec.state.dropping("guest_links", GUEST_IFB)
    rec.add(bandwidth_out=out_bps, bandwidth_in=in_bps)


def set_bandwidth(cfg: Any, paths: Paths) -> None:
    """Apply ``cfg.bandwidth_out`` / ``_in`` to the running guest (replaces qdiscs)."""
    recorded = net_state.load(paths, cfg.name)
    if recorded is None:
        if (cfg.netmode or "veth") == "host":
            raise NetError("V_NETMODE=host shares the host's network: there is nothing "
                           "to shape; use veth, ipvlan or macvlan", cfg.name)  # fmt: skip
        from engine.errors import GuestNotRunning

        raise GuestNotRunning("the guest's network is not set up; start the guest first",
                              cfg.name)  # fmt: skip
    from engine.net import nl

    rec = _Recorder(paths, recorded)
    try:
        with nl.host() as host:
            if recorded.mode == "veth":
                _shape(cfg, paths, rec, host, None)
            else:
                _check_same_netns(recorded)
                with nl.in_netns(recorded.netns_pid, cfg.name) as guest:
                    _shape(cfg, paths, rec, host, guest)
    except VstuiError:
        raise
    except Exception as exc:
        raise _as_net_error(exc, cfg.name, "change the bandwidth") from exc


def teardown(cfg_or_name: Any, paths: Paths) -> None:
    """Remove every link, route, qdisc and ifb setup made; harmless when repeated."""
    name = cfg_or_name if isinstance(cfg_or_name, str) else cfg_or_name.name
    recorded = net_state.load(paths, name)
    if recorded is None:
        # nothing recorded: only links named after the guest can be left over;
        # /sys/class/net tells without netlink (and without importing pyroute2)
        left = [n for n in (paths.link_name(name), paths.link_name(name, kind="ifb"))
                if os.path.lexists(f"/sys/class/net/{n}")]  # fmt: skip
        if not left:
            return
        # a setup that died before writing net.json may have made the table too
        tables = [f"{family} {paths.nft_table(name)}" for family in ("inet", "bridge")]
        recorded = net_state.NetState(name=name, mode="veth", netns_pid=0, netns_inode=None,
                                      host_links=tuple(left), nft_tables=tuple(tables))  # fmt: skip
    try:
        _undo(paths, recorded)
    except Exception as exc:
        raise _as_net_error(exc, name, "remove the network") from exc


def _undo(paths: Paths, recorded: net_state.NetState) -> None:
    host_side = recorded.host_routes or recorded.host_links or recorded.host_link
    if not host_side and not recorded.guest_links and not recorded.nft_tables:
        net_state.remove(paths, recorded.name)  # nothing made: no netlink needed
        return
    from engine.net import links, nl, policy

    if host_side:
        with nl.host() as host:
            for route in recorded.host_routes:
                links.delete_host_route(host, route.dst, route.dev)
            for link in (*recorded.host_links, recorded.host_link):
                if link:
                    links.delete_link(host, link)
    if recorded.guest_links and _same_netns(recorded):
        try:
            with nl.in_netns(recorded.netns_pid, recorded.name) as guest:
                for link in reversed(recorded.guest_links):
                    links.delete_link(guest, link)
        except VstuiError:
            pass  # the namespace died meanwhile, and its links with it
    policy.remove(recorded.nft_tables)  # last: if this fails, net.json keeps them for a retry
    net_state.remove(paths, recorded.name)


def _same_netns(recorded: net_state.NetState) -> bool:
    from engine.net import nl

    inode = nl.ns_inode(recorded.netns_pid) if recorded.netns_pid else None
    return inode is not None and inode == recorded.netns_inode


def _check_same_netns(recorded: net_state.NetState) -> None:
    if not _same_netns(recorded):
        from engine.errors import GuestNotRunning

        raise GuestNotRunning("the guest's network namespace is gone; start the guest again",
                              recorded.name)  # fmt: skip


def _clear_stale(paths: Paths, name: str) -> None:
    """A net.json left by a guest whose namespace is gone: remove its leftovers."""
    recorded = net_state.load(paths, name)
    if recorded is None:
        return
    if _same_netns(recorded):
        raise NetError("the network is already set up for a running guest; "
                       "stop the guest first", name)  # fmt: skip
    _undo(paths, recorded)


def _as_net_error(exc: BaseException, guest: str, doing: str) -> BaseException:
    if isinstance(exc, VstuiError) or not isinstance(exc, Exception):
        return exc
    from engine.net import nl

    code = nl.errno_of(exc)
    if code is None:
        return NetError(f"cannot {doing}: {exc}", guest)
    hint = {
        errno.EPERM: "run as root",
        errno.EEXIST: "an address or route already exists on the host; remove the duplicate",
        errno.EADDRINUSE: "the address is in use elsewhere",
        errno.EOPNOTSUPP: "the kernel lacks a needed driver or qdisc",
    }.get(code, "")
    text = f"cannot {doing}: {os.strerror(code)}" + (f" ({hint})" if hint else "")
    return NetError(text, guest)
