"""engine.net pieces that need no root: address rules, parsers, state file."""

# ruff: noqa: E501  (the /proc fixtures keep the kernel's long lines)

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import subprocess
import sys
from dataclasses import dataclass

import pytest

from engine.errors import NetError
from engine.net import addrs, shaping, sockets, state
from engine.paths import Paths

# engine.net re-exports the counters() function under the module's name
counters = importlib.import_module("engine.net.counters")


@dataclass(frozen=True)
class Item:
    dev: str | None
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    label: str | None = None
    bcast: str | None = None


@dataclass(frozen=True)
class Cfg:
    name: str
    addresses: tuple[Item, ...]
    iprootdev: str | None = None
    iprootbcast: str | None = None
    netmode: str = "veth"


def item(text: str, dev: str | None = None, bcast: str | None = None) -> Item:
    return Item(dev, ipaddress.ip_interface(text), None, bcast)


def test_broadcast_is_computed_configured_or_absent():
    assert addrs.broadcast_of(ipaddress.ip_interface("198.18.0.5/24"), None) == "198.18.0.255"
    assert addrs.broadcast_of(ipaddress.ip_interface("198.18.0.5/24"), "198.18.0.127") == (
        "198.18.0.127"
    )
    assert addrs.broadcast_of(ipaddress.ip_interface("198.18.0.5/32"), None) is None
    assert addrs.broadcast_of(ipaddress.ip_interface("198.18.0.5/31"), None) is None
    assert addrs.broadcast_of(ipaddress.ip_interface("2001:db8::1/64"), "x") is None


def test_guest_addresses_use_iprootbcast_and_device():
    cfg = Cfg("web", (item("198.18.0.5/24"), item("198.18.1.5/16", dev="eth1"),
                      item("2001:db8::5/64")), iprootdev="eth0", iprootbcast="198.18.0.200")  # fmt: skip
    found = addrs.guest_addresses(cfg)
    assert [a.broadcast for a in found] == ["198.18.0.200", "198.18.0.200", None]
    assert [a.host_dev for a in found] == ["eth0", "eth1", "eth0"]
    assert [a.host_route for a in found] == ["198.18.0.5/32", "198.18.1.5/32", "2001:db8::5/128"]
    groups = addrs.by_host_device(cfg, found)
    assert list(groups) == ["eth0", "eth1"] and len(groups["eth0"]) == 2


def test_slave_mode_without_device_is_refused_with_the_fix():
    cfg = Cfg("web", (item("198.18.0.5/24"),), netmode="macvlan")
    with pytest.raises(NetError, match="set IPROOTDEV or write it as dev:198.18.0.5/24"):
        addrs.by_host_device(cfg, addrs.guest_addresses(cfg))


def test_ipv6_flags_and_gateway_choice():
    v4, v6 = addrs.guest_addresses(Cfg("g", (item("198.18.0.5/24"), item("2001:db8::5/64"))))
    assert addrs.addr_flags(v4, routed=True) == addrs.IFA_F_NOPREFIXROUTE
    assert addrs.addr_flags(v4, routed=False) == 0
    assert addrs.addr_flags(v6, routed=False) == addrs.IFA_F_NODAD
    assert addrs.addr_flags(v6, routed=True) == addrs.IFA_F_NODAD | addrs.IFA_F_NOPREFIXROUTE
    assert addrs.gateway_for([v4, v6], ["10.0.0.1", "198.18.0.1"]) == "198.18.0.1"
    assert addrs.gateway_for([v4], ["10.0.0.1"]) is None


def test_burst_and_rate_checks():
    assert shaping.burst_for(10_000_000) == 25_000
    assert shaping.burst_for(1_000_000) == shaping.MIN_BURST
    with pytest.raises(NetError, match="34gbit"):
        shaping.check_rate(10**12, "V_BANDWIDTH_IN", "web")
    with pytest.raises(NetError, match="positive"):
        shaping.check_rate(0, "V_BANDWIDTH_OUT", "web")


NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 5000      40    0    3    0     0          0         0     7000      50    0    1    0     0       0          0
  eth1: 1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
"""


def test_net_dev_rows_are_summed_from_the_guest_view():
    stats = counters.parse_net_dev(NET_DEV, ["eth0", "eth1"])
    assert (stats.rx_bytes, stats.tx_bytes) == (6000, 9000)
    assert (stats.rx_packets, stats.tx_packets, stats.rx_dropped, stats.tx_dropped) == (
        50, 70, 3, 1,
    )  # fmt: skip


def test_counters_of_guests_without_network_are_left_out(tmp_path):
    assert counters.counters(Paths.from_root(tmp_path), ["nosuch"]) == {}


TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1
   2: 0100007F:9C40 0100007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 1236 1
"""
TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 77 1
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 78 1
   2: B80D0120000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 79 1
"""


def test_proc_net_tables_parse_listeners_only():
    assert sockets.parse_table(TCP, "tcp", sockets.TCP_LISTEN) == [
        ("127.0.0.1", 22, 1234),
        ("0.0.0.0", 80, 1235),
    ]
    assert sockets.parse_table(TCP6, "tcp", sockets.TCP_LISTEN) == [
        ("::", 22, 77),
        ("::1", 631, 78),
        ("2001:db8::1", 80, 79),
    ]
    assert sockets.Listener("tcp", "::", 22).wildcard
    assert not sockets.Listener("tcp", "::1", 22).wildcard


def test_state_round_trip_and_helpers(tmp_path):
    paths = Paths.from_root(tmp_path)
    st = state.NetState("web", "veth", 123, 456, host_link="vs-web")
    st = st.adding(
        host_links=("ifb-web",), host_routes=(state.HostRoute("198.18.0.5/32", "vs-web"),)
    )
    st = st.adding(bandwidth_out=10)
    state.save(paths, st)
    assert state.load(paths, "web") == st
    assert st.dropping("host_links", "ifb-web").host_links == ()
    state.remove(paths, "web")
    assert state.load(paths, "web") is None
    (paths.run_dir("web")).mkdir(parents=True, exist_ok=True)
    state.path(paths, "web").write_text("{not json")
    assert state.load(paths, "web") is None


def test_link_names_never_collide_between_kinds_and_roots(tmp_path):
    one, two = Paths.from_root(tmp_path / "a"), Paths.from_root(tmp_path / "b")
    names = {p.link_name("web", kind=k) for p in (one, two) for k in ("vs", "ifb")}
    assert len(names) == 4 and all(len(n) <= 15 for n in names)


def test_importing_engine_net_does_not_load_pyroute2():
    code = "import sys, engine.net; engine.net.counters; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bpf_assembler_resolves_labels_and_rejects_families_without_addresses():
    from engine.net import bind, ebpf

    code = ebpf.assemble([ebpf.jump("end"), ebpf.mov64_imm(0, 0), "end", ebpf.EXIT])
    assert len(code) == 24 and code[2:4] == (1).to_bytes(2, "little", signed=True)
    deny = ebpf.assemble(ebpf.verdict(False))
    assert bind.restrict_bind(bind.USER_IP4, [], 4) == deny
    assert bind.restrict_send(6, []) == deny and bind.connect_program([]) == deny
    one = ipaddress.ip_address("198.18.0.1")
    assert ebpf.word(one.packed, 0) == int.from_bytes(one.packed, "little", signed=True)
    assert str(bind.mapped(one)) == "::ffff:c612:1"
    assert set(bind.programs([one])) == {
        "bind4", "bind6", "connect4", "connect6", "sendmsg4", "sendmsg6", "ingress", "egress",
    }  # fmt: skip
    # an IPv4-only group still lets a dual-stack socket bind, connect and send (v4-mapped)
    only_v4 = bind.programs([one])
    assert all(only_v4[k] != deny for k in ("bind6", "connect6", "sendmsg6"))


def test_chbind_options():
    from vstui.cli import chbind

    opts = chbind.parse(["--ip", "198.18.0.1/24", "--ip=2001:db8::1", "--silent", "cmd", "-x"])
    assert [str(i) for i in opts.ips] == ["198.18.0.1", "2001:db8::1"]
    assert opts.silent and not opts.raw and opts.command == ["cmd", "-x"]
    assert chbind.parse(["--raw", "--ip", "198.18.0.1", "cmd"]).raw
    with pytest.raises(Exception, match="at least one --ip"):
        chbind.parse(["true"])
    with pytest.raises(Exception, match="not an IPv4 or IPv6"):
        chbind.parse(["--ip", "300.1.1.1", "true"])


def test_routed_guest_rules_follow_its_configuration():
    from engine.net import policy

    base = policy.Routed(table="vstui-web", host_link="vs-web", guests="vs-*",
                         v4=("198.18.0.5",), v6=())  # fmt: skip
    text = policy.routed_script(base)
    assert 'iifname "vs-web" ip saddr != { 198.18.0.5 } drop' in text
    assert 'iifname "vs-web" meta nfproto ipv6 drop' in text  # no IPv6 address: no IPv6
    assert 'oifname "vs-*" accept' in text and "reject with icmpx" in text
    assert "hops4" not in text and "masquerade" not in text  # no V_ROUTE: no way out
    exits = (policy.Exit("eth0", nat=True), policy.Exit(None))
    out = policy.routed_script(dataclasses.replace(base, exits=exits, neigh_limit=8))
    assert "size 8;" in out
    assert 'oifname "eth0" meta nfproto ipv4 add @hops4 { rt ip nexthop } accept' in out
    assert 'iifname "vs-web" meta nfproto ipv4 add @hops4 { rt ip nexthop } accept' in out
    assert 'iifname "eth0" ct state established,related accept' in out
    assert 'oifname "eth0" ip saddr { 198.18.0.5 } masquerade' in out
    unfiltered = policy.routed_script(dataclasses.replace(base, filtered=False))
    assert "198.18.0.5 } drop" not in unfiltered
    assert policy.routed_arp_script(base).endswith(
        'iifname "vs-web" arp saddr ip != { 198.18.0.5, 0.0.0.0 } drop\n'
    )


def test_routed_guest_sources_are_its_addresses_and_its_one_link_local():
    """Not all of fe80::/10: each source is a neighbour entry on the host (qa.md finding 2)."""
    from engine.net import policy

    r = policy.Routed(table="t", host_link="vs-web", guests="vs-*", v4=(),
                      v6=("2001:2::5",), link_local="fe80::5eff:fe10:1")  # fmt: skip
    text = policy.routed_script(r)
    assert "fe80::/10 }" not in text  # the whole range was let in
    own = "{ 2001:2::5, fe80::5eff:fe10:1, :: }"
    assert f'iifname "vs-web" ip6 saddr != {own} drop' in text
    unfiltered = policy.routed_script(dataclasses.replace(r, filtered=False))
    for guard in (f"{policy.NEIGHBOUR_MAKERS} ip6 saddr != {own} drop",
                  "ip6 saddr fe80::/10 ip6 saddr != fe80::5eff:fe10:1 drop"):  # fmt: skip
        assert guard in text and guard in unfiltered
    assert policy.routed_arp_script(r).endswith('iifname "vs-web" drop\n')  # no IPv4: no ARP
    unknown = policy.routed_script(dataclasses.replace(r, link_local=None))
    assert 'iifname "vs-web" ip6 saddr fe80::/10 drop' in unknown and "None" not in unknown


def test_bridged_guest_rules_and_link_local_address():
    from engine.net import policy

    assert policy.link_local("02:00:5e:10:00:01") == "fe80::5eff:fe10:1"
    text = policy.bridged_script(policy.Bridged(
        table="vstui-web", port="vs-web", mac="02:00:5e:10:00:01", v4=("198.18.0.5",),
        v6=("2001:2::5", "fe80::5eff:fe10:1")))  # fmt: skip
    assert "ether saddr != 02:00:5e:10:00:01 drop" in text
    assert "arp saddr ip != { 198.18.0.5, 0.0.0.0 } drop" in text
    assert "@th,64,128 != { 0x20010002000000000000000000000005, " in text
    assert "udp sport 67 drop" in text and "nd-router-advert" in text
    # clients take any datagram to their port as a server's (qa.md finding 3)
    assert "udp dport 68 drop" in text and "udp dport 546 drop" in text
    v4_only = policy.bridged_script(policy.Bridged(
        table="t", port="p", mac="02:00:5e:10:00:01", v4=("198.18.0.5",), v6=()))  # fmt: skip
    assert "ether type ip6 drop" in v4_only and "icmpv6" not in v4_only


def test_host_ends_are_one_read_of_net_dev_seen_from_the_guest():
    ends = {name: counters.guest_side(counts) for name, counts in counters.link_rows(NET_DEV)}
    row = ends["eth1"]  # the host end's rx is what the guest sent
    assert (row.rx_bytes, row.tx_bytes, row.rx_packets, row.tx_packets) == (2000, 1000, 20, 10)
    assert set(ends) >= {"eth0", "eth1"}


def test_a_net_dev_line_is_parsed_again_when_it_changed():
    """link_rows keeps each line's parse: a link whose counters moved reads
    its new ones, the others the same tuple as before."""
    before = dict(counters.link_rows(NET_DEV))
    moved = NET_DEV.replace("eth0: 5000 ", "eth0: 5999 ")
    after = dict(counters.link_rows(moved))
    assert after["eth0"][0] == 5999 and before["eth0"][0] == 5000
    assert after["eth1"] is before["eth1"]
    broken = NET_DEV.replace("eth1: 1000 ", "eth1: 1x00 ")
    assert dict(counters.link_rows(broken)).keys() == {"lo", "eth0"}  # not a row: left out
