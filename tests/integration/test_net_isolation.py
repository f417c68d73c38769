"""Where guests' packets may go, on links and namespaces the tests make.

The machine's network namespace plays the host: guests are ``unshare -n``
namespaces wired by ``engine.net.setup``; the "LAN" is a namespace behind
the test's own veth uplink (host 198.18.44.1/22 and 2001:2:44::1/64 on the
uplink, the LAN's machine .9 / ::9). Guests use 198.18.40.0/24 and
2001:2:40::/64. Nothing touches the machine's real interfaces.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

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
