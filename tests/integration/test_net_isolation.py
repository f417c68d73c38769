"""Where guests' packets may go, on links and namespaces the tests make.

The machine's network namespace plays the host: guests are ``unshare -n``
namespaces wired by ``engine.net.setup``; the "LAN" is a namespace behind
the test's own veth uplink (host 198.18.44.1/22 and 2001:2:44::1/64 on the
uplink, the LAN's machine .9 / ::9). Guests use 198.18.40.0/24 and
2001:2:40::/64. Nothing touches the machine's real interfaces.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

import engine.net as net
from engine.config.values import Route
from engine.paths import Paths
from tests.integration import test_net
from tests.integration.test_net import PY, Namespace, cfg, new_ns

pytestmark = pytest.mark.root
spaces = test_net.spaces  # the fixture: namespaces made on demand, killed afterwards

# "sink ADDR PORT SECONDS": print the source of every datagram until SECONDS pass
# "spray FROM PORT ADDR...": one datagram to each ADDR from FROM (IP_FREEBIND if
# FROM is not ours; "-" lets the kernel choose)
UDP = r"""
import socket, sys, time
def fam(a): return socket.AF_INET6 if ":" in a else socket.AF_INET
cmd = sys.argv[1]
if cmd == "sink":
    s = socket.socket(fam(sys.argv[2]), socket.SOCK_DGRAM)
    s.bind((sys.argv[2], int(sys.argv[3]))); s.settimeout(float(sys.argv[4]))
    print("ready", flush=True)
    try:
        while True:
            print(s.recvfrom(100)[1][0], flush=True)
    except TimeoutError:
        pass
else:
    src, port, targets = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    s = socket.socket(fam(targets[0]), socket.SOCK_DGRAM)
    if src != "-":
        level = socket.IPPROTO_IP if fam(src) == socket.AF_INET else socket.IPPROTO_IPV6
        s.setsockopt(level, 15 if level == socket.IPPROTO_IP else 78, 1)  # *_FREEBIND
        s.bind((src, 0))
    for t in targets:
        try:
            s.sendto(b"x", (t, port))
        except OSError:
            pass
"""


@dataclass(frozen=True)
class Lan:
    uplink: str
    ns: Namespace


@pytest.fixture
def lan(vroot: Paths, spaces: list[Namespace]) -> Iterator[Lan]:
    up = vroot.link_name("up", kind="xup")
    ns = new_ns(spaces)
    subprocess.run(["ip", "link", "add", up, "type", "veth", "peer", "name", "lan0",
                    "netns", str(ns.pid)], check=True)  # fmt: skip
    try:
        subprocess.run(["ip", "addr", "add", "198.18.44.1/22", "dev", up], check=True)
        subprocess.run(["ip", "addr", "add", "2001:2:44::1/64", "dev", up, "nodad"], check=True)
        subprocess.run(["ip", "link", "set", up, "up"], check=True)
        ns.run("ip", "addr", "add", "198.18.44.9/22", "dev", "lan0")
        ns.run("ip", "addr", "add", "2001:2:44::9/64", "dev", "lan0", "nodad")
        ns.run("ip", "link", "set", "lan0", "up")
        ns.run("ip", "route", "add", "198.18.40.0/24", "via", "198.18.44.1")
        ns.run("ip", "route", "add", "2001:2:40::/64", "via", "2001:2:44::1")
        yield Lan(up, ns)
    finally:
        subprocess.run(["ip", "link", "del", up], capture_output=True)


def arrived(sender: Namespace, receiver: Namespace | None, dst: str, src: str = "-",
            port: int = 7300) -> list[str]:  # fmt: skip
    """Sources of the datagrams ``sender`` sent to dst that reached it (None: the host)."""
    sink_argv = [PY, "-c", UDP, "sink", dst, str(port), "1.5"]
    argv = receiver.argv(*sink_argv) if receiver else sink_argv
    sink = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        sender.run(PY, "-c", UDP, "spray", src, str(port), dst)
        return sink.stdout.read().split()
    finally:
        sink.kill()
        sink.wait()


def guest(vroot: Paths, spaces: list[Namespace], name: str, *addrs: str,
          **kw: object) -> Namespace:  # fmt: skip
    ns = new_ns(spaces)
    net.setup(cfg(name, *addrs, **kw), vroot, ns.pid)
    return ns


def test_routed_guest_reaches_the_lan_only_when_its_config_allows(vroot, spaces, lan):
    a = guest(vroot, spaces, "a", "198.18.40.1/24", "2001:2:40::1/64")
    b = guest(vroot, spaces, "b", "198.18.40.2/24", "2001:2:40::2/64",
              routes=(Route(lan.uplink),))  # fmt: skip
    c = guest(vroot, spaces, "c", "198.18.40.3/24", "2001:2:40::3/64",
              routes=(Route(lan.uplink, nat=True),))  # fmt: skip
    for lan_ip, host_ip in (("198.18.44.9", "198.18.44.1"), ("2001:2:44::9", "2001:2:44::1")):
        assert arrived(a, lan.ns, lan_ip) == []  # default: no host network
        assert arrived(b, lan.ns, lan_ip) == [b_ip := ("198.18.40.2" if "." in lan_ip
                                                       else "2001:2:40::2")]  # fmt: skip
        assert arrived(c, lan.ns, lan_ip) == [host_ip]  # masqueraded
        # the host's own addresses and other guests stay reachable by default
        assert arrived(a, None, host_ip) == ["198.18.40.1" if "." in lan_ip else "2001:2:40::1"]
        assert arrived(a, b, b_ip) == ["198.18.40.1" if "." in lan_ip else "2001:2:40::1"]


def test_foreign_sources_never_leave_a_routed_guest(vroot, spaces, lan):
    """IP_FREEBIND binds another guest's address without a capability; nothing leaves."""
    a = guest(vroot, spaces, "a", "198.18.40.1/24", "2001:2:40::1/64",
              routes=(Route(lan.uplink),))  # fmt: skip
    guest(vroot, spaces, "b", "198.18.40.2/24", "2001:2:40::2/64")
    for foreign, lan_ip, host_ip in (
        ("198.18.40.2", "198.18.44.9", "198.18.44.1"),
        ("2001:2:40::2", "2001:2:44::9", "2001:2:44::1"),
        ("2001:2:40::77", "2001:2:44::9", "2001:2:44::1"),
    ):
        assert arrived(a, lan.ns, lan_ip, src=foreign) == []
        assert arrived(a, None, host_ip, src=foreign) == []


def neighbours(where: Namespace | None, family: str, *dev: str) -> int:
    argv = ["ip", "-j", family, "neigh", "show", *dev]
    out = where.run(*argv) if where else subprocess.run(argv, capture_output=True, text=True,
                                                          check=True).stdout  # fmt: skip
    return len(json.loads(out or "[]"))


UNUSED4 = [f"198.18.{45 + i // 250}.{1 + i % 250}" for i in range(500)]
UNUSED6 = [f"2001:2:44::{1000 + i:x}" for i in range(500)]


@pytest.mark.parametrize("routes", [(), "uplink"])
def test_500_datagrams_to_unused_addresses_leave_a_bounded_neighbour_table(
    vroot,
    spaces,
    lan,
    routes,
):
    exits = (Route(lan.uplink),) if routes else ()
    a = guest(vroot, spaces, "a", "198.18.40.1/24", "2001:2:40::1/64", routes=exits,
              neigh_limit=16)  # fmt: skip
    before = {f: neighbours(None, f, "dev", lan.uplink) for f in ("-4", "-6")}
    a.run(PY, "-c", UDP, "spray", "-", "9", *UNUSED4)
    a.run(PY, "-c", UDP, "spray", "-", "9", *UNUSED6)
    limit = 16 if routes else 0
    for family in ("-4", "-6"):
        grown = neighbours(None, family, "dev", lan.uplink) - before[family]
        assert grown <= limit, f"{grown} new {family} neighbour entries on the uplink"
        # the guest resolves nothing itself: its gateway is a permanent entry
        assert neighbours(a, family) <= 2


# One datagram from each of N link-local sources to the host end (IPV6_FREEBIND:
# no capability needed), and N ARP requests for a host address from as many
# IPv4 senders (a guest's root has CAP_NET_RAW).
SPRAY_LINK_LOCAL = r"""
import socket, sys
index = socket.if_nametoindex("eth0")
for i in range(int(sys.argv[1])):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND
        s.bind((f"fe80::{i + 0x100:x}", 0, 0, index))
        try:
            s.sendto(b"x", (sys.argv[2], 9, 0, index))
        except OSError:
            pass
"""
SPRAY_ARP = r"""
import fcntl, socket, struct, sys
mac = fcntl.ioctl(socket.socket(), 0x8927, struct.pack("16s16x", b"eth0"))[18:24]
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0806))
for i in range(int(sys.argv[1])):
    sender = socket.inet_aton(f"198.18.{41 + i // 250}.{1 + i % 250}")
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, sender, b"\0" * 6,
                       socket.inet_aton(sys.argv[2]))
    s.sendto(body, ("eth0", 0x0806, 0, 0, b"\xff" * 6))
"""


@pytest.mark.parametrize("filtered", [True, False])
def test_forged_sources_leave_a_bounded_neighbour_table_on_the_host_end(
    vroot, spaces, lan, filtered
):
    """qa.md finding 2: 300 fe80:: sources made 103 neighbour entries on the host
    (all of fe80::/10 was let in); ARP senders did the same once rp_filter is off
    (V_NET_FILTER=no). The table is one per host: the bound holds either way."""
    a = guest(vroot, spaces, "a", "198.18.40.1/24", "2001:2:40::1/64", net_filter=filtered)
    link = vroot.link_name("a")
    before = {f: neighbours(None, f, "dev", link) for f in ("-4", "-6")}
    a.run(PY, "-c", SPRAY_LINK_LOCAL, "300", "fe80::1")
    a.run(PY, "-c", SPRAY_ARP, "300", "198.18.44.1")
    # one link delivers in order: once this arrived, the sprays have been handled
    assert arrived(a, None, "2001:2:44::1") == ["2001:2:40::1"]
    for family in ("-4", "-6"):
        grown = neighbours(None, family, "dev", link) - before[family]
        assert grown <= 2, f"{grown} new {family} neighbour entries on the host end"


# -- bridged guests -----------------------------------------------------------------------

# Run as root inside a guest's namespace: forged frames a guest with CAP_NET_RAW can send.
FORGE = r"""
import fcntl, socket, struct, sys
ifname, what = "eth0", sys.argv[1]
# SIOCGIFHWADDR: /sys/class/net shows the namespace that mounted sysfs, not ours
req = struct.pack("16s16x", ifname.encode())
mac = fcntl.ioctl(socket.socket(), 0x8927, req)[18:24]
index = socket.if_nametoindex(ifname)
def arp(op, ip, sha):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0806))
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, socket.inet_aton(ip),
                       b"\xff" * 6 if op == 1 else b"\0" * 6, socket.inet_aton(ip))
    s.sendto(body, (ifname, 0x0806, 0, 0, b"\xff" * 6))
def icmp6(src, payload):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.bind((src, 0, 0, index))
    s.sendto(payload, ("ff02::1", 0, 0, index))
ll = sys.argv[2] if len(sys.argv) > 2 else None
if what == "garp":  # "IP is at my MAC", as request and as reply
    for ip in sys.argv[2:]:
        arp(1, ip, mac); arp(2, ip, mac)
elif what == "ra":  # hop limit 7, router lifetime 1800 s, MTU 1280, a prefix to autoconfigure
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 7, 0, 1800, 0, 0)
    ra += struct.pack("!BBHI", 5, 1, 0, 1280)
    ra += struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 3600, 3600, 0,
                      socket.inet_pton(socket.AF_INET6, "2001:2:99::"))
    ra += struct.pack("!BB6s", 1, 1, mac)
    icmp6(ll, ra)
elif what == "na":  # unsolicited, override: "TARGET is at my MAC"
    target = socket.inet_pton(socket.AF_INET6, sys.argv[3])
    na = struct.pack("!BBHI16s", 136, 0, 0, 0x20000000, target) + struct.pack("!BB6s", 2, 1, mac)
    icmp6(ll, na)
elif what == "mac":  # a frame carrying another guest's MAC as source
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    s.send(b"\xff" * 6 + bytes.fromhex(sys.argv[2].replace(":", "")) + b"\x08\x06" + b"\0" * 46)
elif what == "dhcp":  # "FROM SPORT TO DPORT": a server's offer, from any port
    s = socket.socket(socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET,
                      socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.bind((sys.argv[2], int(sys.argv[3])))
    s.sendto(b"offer", (sys.argv[4], int(sys.argv[5])))
"""


def neigh_mac(where: Namespace | None, address: str, dev: str) -> str | None:
    argv = ["ip", "-j", "neigh", "show", address, "dev", dev]
    out = where.run(*argv) if where else subprocess.run(argv, capture_output=True, text=True,
                                                          check=True).stdout  # fmt: skip
    entries = json.loads(out or "[]")
    return entries[0].get("lladdr") if entries else None


def ra_state(where: Namespace | None, dev: str) -> tuple[str, str, str]:
    """Hop limit, IPv6 MTU and default routes of ``dev`` as an RA would change them."""

    def read(name: str) -> str:
        path = f"/proc/sys/net/ipv6/conf/{dev}/{name}"
        return where.run("cat", path).strip() if where else open(path).read().strip()

    argv = ["ip", "-6", "route", "show", "default", "dev", dev]
    routes = where.run(*argv) if where else subprocess.run(argv, capture_output=True,
                                                           text=True).stdout  # fmt: skip
    return read("hop_limit"), read("mtu"), routes.strip()


@pytest.fixture
def bridge(vroot: Paths) -> Iterator[str]:
    """A test bridge with host addresses that takes router advertisements (accept_ra=2)."""
    name = vroot.link_name("br", kind="xbr")
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/accept_ra", "w") as f:
            f.write("2")
        subprocess.run(["ip", "addr", "add", "198.18.50.254/24", "dev", name], check=True)
        subprocess.run(["ip", "addr", "add", "2001:2:50::fe/64", "dev", name, "nodad"],
                       check=True)  # fmt: skip
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def link_local_of(ns: Namespace) -> str:
    """eth0's link-local address once usable (the kernel's own waits for DAD, ~1 s)."""
    for _ in range(100):
        shown = ns.run("ip", "-j", "-6", "addr", "show", "dev", "eth0", "scope", "link",
                       "-tentative")  # fmt: skip
        found = [x["local"] for link in json.loads(shown) for x in link.get("addr_info", [])
                 if "local" in x]  # fmt: skip
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(ns.run("ip", "addr"))


def mac_of(ns: Namespace) -> str:
    return json.loads(ns.run("ip", "-j", "link", "show", "eth0"))[0]["address"]


def test_a_bridged_guest_cannot_take_over_addresses_or_configure_others(vroot, spaces, bridge):
    a = guest(vroot, spaces, "a", "198.18.50.1/24", "2001:2:50::1/64", bridge=bridge)
    b = guest(vroot, spaces, "b", "198.18.50.2/24", "2001:2:50::2/64", bridge=bridge)
    bridge_mac = open(f"/sys/class/net/{bridge}/address").read().strip()
    # b knows its gateway, the host knows b (IPv4 and IPv6)
    for dst in ("198.18.50.254", "2001:2:50::fe"):
        b.run(PY, "-c", UDP, "spray", "-", "9", dst)
    for dst in ("198.18.50.2", "2001:2:50::2"):
        subprocess.run([PY, "-c", UDP, "spray", "-", "9", dst], check=True)
    a_ll = link_local_of(a)

    def situation() -> list[object]:
        return [neigh_mac(b, "198.18.50.254", "eth0"), neigh_mac(b, "2001:2:50::fe", "eth0"),
                neigh_mac(None, "198.18.50.2", bridge), neigh_mac(None, "2001:2:50::2", bridge),
                ra_state(None, bridge), ra_state(b, "eth0"), b.run("ip", "-6", "addr")]  # fmt: skip

    before = situation()
    assert before[:4] == [bridge_mac, bridge_mac, mac_of(b), mac_of(b)]
    attacks = [("garp", "198.18.50.254", "198.18.50.2"), ("ra", a_ll),
               ("na", a_ll, "2001:2:50::2"), ("na", a_ll, "2001:2:50::fe")]  # fmt: skip
    for attack in attacks:
        a.run(PY, "-c", FORGE, *attack)
    a.run(PY, "-c", FORGE, "mac", mac_of(b))
    assert situation() == before
    fdb = subprocess.run(["bridge", "-j", "fdb", "show", "br", bridge], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    owner = [e["ifname"] for e in json.loads(fdb) if e["mac"] == mac_of(b)]
    assert owner == [vroot.link_name("b")]
    # the same forgeries from a guest whose filter is off do change things
    # (so the checks above would have seen them)
    c = guest(vroot, spaces, "c", "198.18.50.3/24", "2001:2:50::3/64", bridge=bridge,
              net_filter=False)  # fmt: skip
    c.run(PY, "-c", FORGE, "garp", "198.18.50.254")
    c.run(PY, "-c", FORGE, "ra", link_local_of(c))
    assert neigh_mac(b, "198.18.50.254", "eth0") == mac_of(c)
    assert ra_state(None, bridge)[0] == "7"


def received(b: Namespace, bind: str, port: int, send) -> list[str]:
    """Sources of what reached ``b`` on ``bind``:``port`` while ``send()`` ran."""
    sink = subprocess.Popen(b.argv(PY, "-c", UDP, "sink", bind, str(port), "1.5"),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        send()
        return sink.stdout.read().split()
    finally:
        sink.kill()
        sink.wait()


def test_dhcp_server_replies_from_a_bridged_guest_are_dropped(vroot, spaces, bridge):
    """Clients take whatever reaches port 68 (546) as the server's: dhclient, udhcpc
    and networkd match the destination port only, so the source port is no test
    (qa.md finding 3: an offer from port 6700 reached the other guest's client)."""
    a = guest(vroot, spaces, "a", "198.18.50.1/24", "2001:2:50::1/64", bridge=bridge)
    b = guest(vroot, spaces, "b", "198.18.50.2/24", "2001:2:50::2/64", bridge=bridge)
    to_b4, to_b6 = "198.18.50.2", "2001:2:50::2"
    for bind, src, client, sends in (
        ("0.0.0.0", "198.18.50.1", 68,
         ((67, to_b4), (6700, to_b4), (40000, to_b4), (6701, "255.255.255.255"))),
        ("::", "2001:2:50::1", 546, ((547, to_b6), (6700, to_b6), (40000, to_b6))),
    ):  # fmt: skip

        def offers(dport: int, src: str = src, sends: tuple = sends) -> None:
            for sport, dst in sends:
                a.run(PY, "-c", FORGE, "dhcp", src, str(sport), dst, str(dport))

        assert received(b, bind, client, partial(offers, client)) == []
        # the same datagrams to another port arrive, but those from the server port
        assert received(b, bind, 6800, partial(offers, 6800)) == [src] * (len(sends) - 1)


def test_the_audit_names_a_wildcard_listener_a_veth_guest_reaches(vroot, spaces, lan):
    from engine.audit import run_audit

    vroot.config_file("web").parent.mkdir(parents=True, exist_ok=True)
    vroot.config_file("web").write_text('IPROOT="198.18.40.1/24"\n')
    web = guest(vroot, spaces, "web", "198.18.40.1/24")
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen(1)
        port = server.getsockname()[1]
        # reached from the guest through a host address (the test uplink's)
        web.run(PY, "-c", f"import socket; socket.create_connection(('198.18.44.1', {port}), 5)")
        report = run_audit(vroot)
    findings = [f for f in report.findings
                if f.rule_id == "HOST-WILDCARD-LISTENER" and f":{port}/tcp" in f.title]  # fmt: skip
    assert len(findings) == 1, findings
    assert findings[0].title.endswith(f"listens on 0.0.0.0:{port}/tcp")
    assert findings[0].details[0].startswith("web (routed veth) reaches it through ")


def test_a_routed_guests_router_advertisement_changes_nothing_on_the_host(vroot, spaces):
    """IPv6: the host end takes no RA (accept_ra=0) and no forged advertisement."""
    a = guest(vroot, spaces, "a", "198.18.40.1/24", "2001:2:40::1/64")
    host_end = vroot.link_name("a")
    before = ra_state(None, host_end)
    a.run(PY, "-c", FORGE, "ra", link_local_of(a))
    a.run(PY, "-c", FORGE, "na", link_local_of(a), "fe80::1")
    assert ra_state(None, host_end) == before


def test_without_nftables_a_start_fails_cleanly(vroot, spaces, monkeypatch):
    from engine.errors import NetError
    from engine.net import nft

    monkeypatch.setattr(nft, "COMMAND", "nft-missing")
    ns = new_ns(spaces)
    with pytest.raises(NetError, match=r"apt-get install nftables"):
        net.setup(cfg("a", "198.18.40.1/24"), vroot, ns.pid)
    assert not (vroot.run_dir("a") / "net.json").exists()
    assert test_net.footprint(vroot) == []


REPO = Path(__file__).resolve().parents[2]
HIGH_FDS = """
import os, sys
from engine.net import nft
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
nft.run("add table inet vstui_fdtest\\n")
print(nft.run("list tables\\n"))
"""


def test_rules_apply_from_a_process_holding_over_1024_descriptors() -> None:
    """libnftables in-process aborted the caller (FD_SET on a socket fd >= 1024):
    a console or a long test run holding /proc files open died mid-start. Run in
    a network namespace of its own: the table goes with it."""
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", HIGH_FDS],
                          capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr[-300:]
    assert "table inet vstui_fdtest" in done.stdout
