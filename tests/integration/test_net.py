"""engine.net on real network namespaces standing in for guests.

Each "guest" is ``unshare -n sleep`` (killed at the end); setup() builds its
network like the runtime would. Addresses come from 198.18.0.0/15 and live
only on veth links and inside namespaces the tests create; the macvlan
"uplink" is a veth whose other end sits in a test namespace acting as the
LAN's router. Tests shell out to ``ip``/``tc`` only to inspect.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import engine.net as net
from engine.config.values import IPAddr, Route
from engine.errors import NetError
from engine.net import nl, shaping, state
from engine.paths import Paths

pytestmark = pytest.mark.root

PY = sys.executable
MBIT = 1_000_000

# A tiny TCP tool run inside a namespace: "serve ADDR PORT REPLY" reads until
# EOF then answers REPLY bytes; "send ADDR PORT NBYTES SECONDS" sends at most
# NBYTES for at most SECONDS and reads the answer; "bind ADDR" tries a bind.
TOOL = r"""
import json, socket, sys, time
def fam(a): return socket.AF_INET6 if ":" in a else socket.AF_INET
cmd = sys.argv[1]
if cmd == "serve":
    addr, port, reply = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s = socket.socket(fam(addr)); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(1); print("ready", flush=True)
    c, peer = s.accept(); total = 0; first = None
    while True:
        d = c.recv(1 << 16)
        if not d: break
        first = first or time.monotonic(); total += len(d)
    end = time.monotonic(); c.sendall(b"r" * reply); c.close()
    print(json.dumps({"bytes": total, "seconds": end - (first or end), "peer": peer[0]}))
elif cmd == "send":
    addr, port, n, limit = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    c = socket.create_connection((addr, port), timeout=10)
    buf = b"x" * 65536; sent = 0; t0 = time.monotonic()
    while sent < n and time.monotonic() - t0 < limit:
        sent += c.send(buf[: min(len(buf), n - sent)])
    c.shutdown(socket.SHUT_WR); got = 0
    while True:
        d = c.recv(1 << 16)
        if not d: break
        got += len(d)
    print(json.dumps({"sent": sent, "got": got}))
elif cmd == "bind":
    addr = sys.argv[2]; s = socket.socket(fam(addr))
    try:
        s.bind((addr, 0)); print("0")
    except OSError as e:
        print(e.errno)
"""


@dataclass(frozen=True)
class Cfg:
    """The attributes engine.net reads from a GuestConfig (duck typing)."""

    name: str
    addresses: tuple[IPAddr, ...]
    iprootdev: str | None = None
    iprootmask: str | None = None
    iprootbcast: str | None = None
    netmode: str = "veth"
    bridge: str | None = None
    bandwidth_out: int | None = None
    bandwidth_in: int | None = None
    routes: tuple = ()
    neigh_limit: int = 64
    net_filter: bool = True


def cfg(name: str, *addresses: str, **kw: object) -> Cfg:
    items = []
    for word in addresses:
        dev, _, addr = word.rpartition("@")
        items.append(IPAddr(dev or None, ipaddress.ip_interface(addr)))
    return Cfg(name, tuple(items), **kw)  # type: ignore[arg-type]


class Namespace:
    """A process holding a fresh network namespace, and commands run inside it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["unshare", "-n", "sleep", "1000"])
        mine = os.stat("/proc/self/ns/net").st_ino
        for _ in range(200):
            try:
                if os.stat(f"/proc/{self.proc.pid}/ns/net").st_ino != mine:
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("unshare -n did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def argv(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", *cmd]

    def run(self, *cmd: str) -> str:
        done = subprocess.run(self.argv(*cmd), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{cmd}: {done.stderr}"
        return done.stdout

    def tool(self, *args: str) -> str:
        return self.run(PY, "-c", TOOL, *args).strip()

    def serve(self, addr: str, port: int, reply: int = 1000) -> subprocess.Popen[str]:
        server = subprocess.Popen(self.argv(PY, "-c", TOOL, "serve", addr, str(port), str(reply)),
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        return server

    def addresses(self) -> set[str]:
        found = set()
        for link in json.loads(self.run("ip", "-j", "addr")):
            for a in link.get("addr_info", []):
                found.add(f"{a['local']}/{a['prefixlen']}")
        return found

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def spaces(vroot: Paths) -> Iterator[list[Namespace]]:
    """Namespaces made on demand (``spaces.append(Namespace())``), all killed afterwards."""
    made: list[Namespace] = []
    try:
        yield made
    finally:
        for name in os.listdir(vroot.run_base) if vroot.run_base.is_dir() else []:
            net.teardown(name, vroot)
        for ns in made:
            ns.close()


def new_ns(spaces: list[Namespace]) -> Namespace:
    spaces.append(Namespace())
    return spaces[-1]


def transfer(sender: Namespace, receiver: Namespace, addr: str, port: int,
             nbytes: int = 4_000_000, seconds: float = 6.0) -> dict:  # fmt: skip
    """Bulk TCP from sender to receiver; returns the receiver's bytes and seconds."""
    server = receiver.serve(addr, port)
    sent = json.loads(sender.tool("send", addr, str(port), str(nbytes), str(seconds)))
    assert server.stdout is not None
    result = json.loads(server.stdout.readline())
    server.wait(timeout=30)
    assert result["bytes"] == sent["sent"] and sent["got"] == 1000
    result["mbit"] = result["bytes"] * 8 / result["seconds"] / MBIT if result["seconds"] else 1e9
    return result


def shaped_transfer(sender: Namespace, receiver: Namespace, addr: str, port: int) -> dict:
    """A transfer through a 10 mbit shaper, up to three tries.

    The shaper must never let more through (checked on every try); a try that
    comes out slow because the 2-core machine was busy (other tests, CI) is
    repeated, and the best one is judged.
    """
    best: dict = {}
    for attempt in range(3):
        result = transfer(sender, receiver, addr, port + 100 * attempt, nbytes=3_000_000,
                          seconds=6)  # fmt: skip
        assert result["mbit"] <= 11, f"shaper let {result['mbit']:.2f} mbit/s through"
        if result["mbit"] > best.get("mbit", -1):
            best = result
        if result["mbit"] >= 8:
            break
    return best


def footprint(paths: Paths) -> list[str]:
    """Host netlink objects on this root's links: names, addresses, routes, qdiscs.

    Only identities, no volatile state (DAD flags, neighbour states), so two
    dumps compare equal unless something was added or left behind.
    """
    mine = re.compile(rf"^[a-z]{re.escape(paths.root_id[:4])}-")

    def dump(*cmd: str) -> list[dict]:
        out = subprocess.run(["ip", "-j", *cmd], capture_output=True, text=True).stdout
        return json.loads(out or "[]")

    found = [f"link {x['ifname']}" for x in dump("link") if mine.match(x["ifname"])]
    for link in dump("addr"):
        if mine.match(link["ifname"]):
            found += [f"addr {a['local']}/{a['prefixlen']} {link['ifname']}"
                      for a in link.get("addr_info", [])]  # fmt: skip
    for family in ("-4", "-6"):
        found += [f"route {r['dst']} {r.get('dev')}" for r in dump(family, "route")
                  if mine.match(r.get("dev", ""))]  # fmt: skip
    tc = subprocess.run(["tc", "-j", "qdisc"], capture_output=True, text=True).stdout
    found += [f"qdisc {q['kind']} {q['handle']} {q['dev']}" for q in json.loads(tc or "[]")
              if mine.match(q["dev"])]  # fmt: skip
    return sorted(found)


def test_two_veth_guests_talk_both_ways_with_only_their_addresses(vroot, spaces):
    before = footprint(vroot)
    a, b = new_ns(spaces), new_ns(spaces)
    net.setup(cfg("a", "198.18.1.1/24", "2001:db8:18::1/64"), vroot, a.pid)
    net.setup(cfg("b", "198.18.1.2/24", "2001:db8:18::2/64"), vroot, b.pid)

    assert transfer(a, b, "198.18.1.2", 5001, nbytes=200_000)["peer"] == "198.18.1.1"
    assert transfer(b, a, "198.18.1.1", 5002, nbytes=200_000)["peer"] == "198.18.1.2"
    assert transfer(a, b, "2001:db8:18::2", 5003, nbytes=200_000)["peer"] == "2001:db8:18::1"

    # Exactly the configured addresses, loopback, and eth0's IPv6 link-local.
    seen = {x for x in a.addresses() if not x.startswith("fe80:")}
    assert seen == {"127.0.0.1/8", "::1/128", "198.18.1.1/24", "2001:db8:18::1/64"}
    for other in ("198.18.1.2", "198.18.1.77", "2001:db8:18::2"):
        assert a.tool("bind", other) == str(errno.EADDRNOTAVAIL)
    assert a.tool("bind", "198.18.1.1") == "0"

    net.teardown("a", vroot)
    net.teardown("b", vroot)
    net.teardown("b", vroot)  # idempotent
    assert footprint(vroot) == before
    assert not (vroot.run_dir("a") / "net.json").exists()


def test_ipv4_only_guest_has_no_ipv6_at_all(vroot, spaces):
    a = new_ns(spaces)
    net.setup(cfg("v4", "198.18.2.1/24"), vroot, a.pid)
    assert a.addresses() == {"127.0.0.1/8", "::1/128", "198.18.2.1/24"}
    route = a.run("ip", "route")
    assert route.startswith("default via 169.254.0.1 dev eth0 ")  # then "proto static onlink"


def test_bridge_mode_attaches_host_end(vroot, spaces):
    bridge = vroot.link_name("br", kind="xbr")
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        a, b = new_ns(spaces), new_ns(spaces)
        net.setup(cfg("ba", "198.18.3.1/24", bridge=bridge), vroot, a.pid)
        net.setup(cfg("bb", "198.18.3.2/24", bridge=bridge), vroot, b.pid)
        master = json.loads(subprocess.run(["ip", "-j", "link", "show", vroot.link_name("ba")],
                                           capture_output=True, text=True).stdout)  # fmt: skip
        assert master[0]["master"] == bridge
        assert transfer(a, b, "198.18.3.2", 5004, nbytes=100_000)["peer"] == "198.18.3.1"
        net.teardown("ba", vroot)
        net.teardown("bb", vroot)
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def uplink_with_router(vroot: Paths, spaces: list[Namespace]) -> tuple[str, Namespace]:
    """A veth "uplink" on the host whose far end is a router namespace (the LAN).

    Host 198.18.5.1/24 on the uplink, router 198.18.5.254/24 routing the veth
    guests' 198.18.4.0/24 back to the host: what a LAN router does for a host
    that routes guests.
    """
    up = vroot.link_name("up", kind="xup")
    router = new_ns(spaces)
    subprocess.run(["ip", "link", "add", up, "type", "veth", "peer", "name", "lan0",
                    "netns", str(router.pid)], check=True)  # fmt: skip
    subprocess.run(["ip", "addr", "add", "198.18.5.1/24", "dev", up], check=True)
    subprocess.run(["ip", "link", "set", up, "up"], check=True)
    with open(f"/proc/sys/net/ipv4/conf/{up}/forwarding", "w") as f:
        f.write("1")
    router.run("ip", "addr", "add", "198.18.5.254/24", "dev", "lan0")
    router.run("ip", "link", "set", "lan0", "up")
    router.run("ip", "route", "add", "198.18.4.0/24", "via", "198.18.5.1")
    router.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
               "net.ipv4.conf.lan0.send_redirects=0")  # fmt: skip
    return up, router


@pytest.mark.parametrize("mode", ["macvlan", "ipvlan"])
def test_slave_guest_reaches_veth_guest_through_host(vroot, spaces, mode):
    up, _router = uplink_with_router(vroot, spaces)
    try:
        a, c = new_ns(spaces), new_ns(spaces)
        # the veth guest talks to the LAN through the uplink: its config must say so
        net.setup(cfg("a", "198.18.4.1/24", routes=(Route(up),)), vroot, a.pid)
        guest_c = cfg("c", "198.18.5.3/24", netmode=mode, iprootdev=up)
        try:
            net.setup(guest_c, vroot, c.pid)
        except NetError as exc:
            assert mode == "ipvlan" and "CONFIG_IPVLAN" in str(exc)
            assert not (vroot.run_dir("c") / "net.json").exists()
            assert len(c.run("ip", "-o", "link").splitlines()) == 1  # only lo is left
            pytest.skip(f"kernel without ipvlan; setup refused cleanly: {exc}")
        assert c.addresses() == {"127.0.0.1/8", "::1/128", "198.18.5.3/24"}
        # The host cannot send to its own ipvlan/macvlan slaves (the driver
        # does not loop the master's frames back), so traffic between the
        # host and guest c goes by the LAN router, as on a real network.
        c.run("ip", "route", "add", "198.18.4.0/24", "via", "198.18.5.254")
        subprocess.run(["ip", "route", "add", "198.18.5.3/32", "via", "198.18.5.254", "dev", up],
                       check=True)  # fmt: skip
        assert transfer(c, a, "198.18.4.1", 5005, nbytes=200_000)["peer"] == "198.18.5.3"
        assert transfer(a, c, "198.18.5.3", 5006, nbytes=200_000)["peer"] == "198.18.4.1"
        stats = net.counters(vroot, ["c"])["c"]
        assert stats.tx_bytes > 200_000 and stats.rx_bytes > 200_000
        net.teardown("c", vroot)
        assert not (vroot.run_dir("c") / "net.json").exists()
    finally:
        subprocess.run(["ip", "link", "del", up], capture_output=True)


def test_egress_limit_and_counters(vroot, spaces):
    a, b = new_ns(spaces), new_ns(spaces)
    limited = cfg("a", "198.18.6.1/24", bandwidth_out=10 * MBIT)
    net.setup(limited, vroot, a.pid)
    net.setup(cfg("b", "198.18.6.2/24"), vroot, b.pid)
    before = net.counters(vroot, ["a", "b"])
    payload = transfer(a, b, "198.18.6.2", 5010, nbytes=3_000_000, seconds=6)["bytes"]
    after = net.counters(vroot, ["a", "b"])
    # What b received matches the payload; what a sent also counts the
    # retransmissions of segments the shaper dropped (a's counter is right:
    # the guest did send them), so it is only checked to be at least that.
    got_by_b = after["b"].rx_bytes - before["b"].rx_bytes
    sent_by_a = after["a"].tx_bytes - before["a"].tx_bytes
    print(f"counters shaped: b rx {got_by_b}, a tx {sent_by_a}, payload {payload}")
    assert abs(got_by_b - payload) <= 0.05 * payload
    assert sent_by_a >= payload
    slow = shaped_transfer(a, b, "198.18.6.2", 5012)
    print(f"egress 10mbit: {slow['mbit']:.2f} mbit/s over {slow['bytes']} bytes")
    assert 8 <= slow["mbit"] <= 11

    net.set_bandwidth(Cfg(**{**limited.__dict__, "bandwidth_out": None}), vroot)
    assert state.load(vroot, "a").host_links == ()
    assert "ingress" not in shaping.qdiscs(nl.host(), vroot.link_name("a"))
    before = net.counters(vroot, ["a", "b"])
    fast = transfer(a, b, "198.18.6.2", 5011, nbytes=3_000_000, seconds=6)
    after = net.counters(vroot, ["a", "b"])
    print(f"egress unlimited: {fast['mbit']:.1f} mbit/s")
    assert fast["mbit"] > 3 * slow["mbit"]
    for guest, field in (("a", "tx_bytes"), ("b", "rx_bytes")):
        counted = getattr(after[guest], field) - getattr(before[guest], field)
        print(f"counters unshaped: {guest} {field} {counted}, payload {fast['bytes']}")
        assert abs(counted - fast["bytes"]) <= 0.05 * fast["bytes"]


def test_ingress_limit_set_on_running_guest(vroot, spaces):
    a, b = new_ns(spaces), new_ns(spaces)
    guest_a = cfg("a", "198.18.7.1/24")
    net.setup(guest_a, vroot, a.pid)
    net.setup(cfg("b", "198.18.7.2/24"), vroot, b.pid)
    fast = transfer(b, a, "198.18.7.1", 5020, nbytes=3_000_000, seconds=6)
    net.set_bandwidth(Cfg(**{**guest_a.__dict__, "bandwidth_in": 10 * MBIT}), vroot)
    slow = shaped_transfer(b, a, "198.18.7.1", 5021)
    print(f"ingress 10mbit: {slow['mbit']:.2f} mbit/s; unlimited {fast['mbit']:.1f} mbit/s")
    assert 8 <= slow["mbit"] <= 11
    assert fast["mbit"] > 3 * slow["mbit"]
    assert "tbf" in shaping.qdiscs(nl.host(), vroot.link_name("a"))


def test_failed_setup_leaves_nothing(vroot, spaces):
    before = footprint(vroot)
    a, b = new_ns(spaces), new_ns(spaces)
    # Fails at the very end (shaping), after links, addresses and routes exist.
    with pytest.raises(NetError, match="34gbit"):
        net.setup(cfg("a", "198.18.8.1/24", bandwidth_in=10**12), vroot, a.pid)
    assert footprint(vroot) == before
    assert len(a.run("ip", "-o", "link").splitlines()) == 1
    assert not (vroot.run_dir("a") / "net.json").exists()
    # Fails in the middle: the address is already routed to another guest.
    net.setup(cfg("b", "198.18.8.2/24"), vroot, b.pid)
    with_b = footprint(vroot)
    with pytest.raises(NetError, match="already routed"):
        net.setup(cfg("a", "198.18.8.2/24"), vroot, a.pid)
    assert footprint(vroot) == with_b
    net.teardown("b", vroot)
    assert footprint(vroot) == before


def test_setup_of_dead_process_is_a_clean_error(vroot, spaces):
    a = new_ns(spaces)
    pid = a.pid
    a.close()
    with pytest.raises(Exception, match="gone|start the guest"):
        net.setup(cfg("a", "198.18.9.1/24"), vroot, pid)
    assert footprint(vroot) == []


def test_listening_sockets_sees_a_loopback_listener(vroot):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        found = [x for x in net.listening_sockets(resolve=True) if x.port == port]
    assert found and found[0].address == "127.0.0.1" and found[0].proto == "tcp"
    assert found[0].pid == os.getpid() and not found[0].wildcard
