"""Benchmark the guests' bandwidth caps under load, and what the filtering costs.

Run by hand, as root, from the repository:

    .venv/bin/python tests/bench/bench_net.py [--rate 5mbit] [--seconds 6] [--streams 8]

Two routed veth guests, a and b (``unshare -n`` namespaces wired by
``engine.net.setup`` under a temporary root, addresses from 198.18.0.0/15),
then, side by side in one run:

  1. a capped with V_BANDWIDTH_OUT: STREAMS parallel TCP streams a -> b, and
     a UDP flood a -> b (1400-byte datagrams as fast as a can send);
  2. b capped with V_BANDWIDTH_IN: the same two loads a -> b;
  3. uncapped, one TCP stream a -> b with the guests' nftables tables (the
     default) and with V_NET_FILTER=no (no source check; the forwarding
     chain stays), three times each, alternating: the ratio of the medians
     is what the source filtering costs.

Rates are what the receiver got in a window of SECONDS that starts one
second after the load (the shaper's burst and TCP's slow start left out),
printed against the cap. Everything is torn down at the end (try/finally).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import engine.net as net  # noqa: E402
from engine.config.values import parse_rate  # noqa: E402
from engine.paths import Paths  # noqa: E402
from tests.integration.test_net import PY, Namespace, cfg  # noqa: E402

# "recv tcp|udp ADDR PORT SECONDS": count what arrives in [1 s, 1 s + SECONDS]
# "send tcp|udp ADDR PORT SECONDS STREAMS": keep STREAMS senders busy that long
LOAD = r"""
import json, socket, sys, threading, time
mode, proto, addr, port, seconds = sys.argv[1:6]
port, seconds = int(port), float(seconds)
end = time.monotonic() + 1 + seconds + 1
if mode == "recv":
    got = [0]; lock = threading.Lock(); start = [None]
    def count(n):
        now = time.monotonic()
        if start[0] and start[0] + 1 <= now <= start[0] + 1 + seconds:
            with lock: got[0] += n
    def drain(c):
        while True:
            try:
                d = c.recv(1 << 16)
            except OSError:
                return
            if not d: return
            count(len(d))
    if proto == "tcp":
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port)); s.listen(64); print("ready", flush=True); s.settimeout(30)
        c = s.accept()[0]; start[0] = time.monotonic()
        threading.Thread(target=drain, args=(c,), daemon=True).start()
        s.settimeout(0.2)
        while time.monotonic() < start[0] + 1 + seconds:
            try:
                threading.Thread(target=drain, args=(s.accept()[0],), daemon=True).start()
            except TimeoutError:
                pass
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.bind((addr, port)); print("ready", flush=True); s.settimeout(30)
        count(len(s.recv(2048))); start[0] = time.monotonic(); s.settimeout(0.2)
        while time.monotonic() < start[0] + 1 + seconds:
            try:
                count(len(s.recv(2048)))
            except TimeoutError:
                pass
    print(json.dumps({"bytes": got[0], "seconds": seconds}), flush=True)
else:
    streams = int(sys.argv[6]); buf = b"x" * 65536
    def tcp():
        c = socket.create_connection((addr, port), timeout=10)
        try:
            while time.monotonic() < end:
                c.send(buf)
        except OSError:
            pass
    def udp():
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while time.monotonic() < end:
            try:
                u.sendto(buf[:1400], (addr, port))
            except OSError:
                pass
    workers = [threading.Thread(target=tcp if proto == "tcp" else udp) for _ in range(streams)]
    for w in workers: w.start()
    for w in workers: w.join()
"""


def measure(sender: Namespace, receiver: Namespace, proto: str, addr: str, port: int,
            seconds: float, streams: int) -> float:  # fmt: skip
    """Bits per second the receiver got in the window."""
    argv = receiver.argv(PY, "-c", LOAD, "recv", proto, addr, str(port), str(seconds))
    recv = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
        sender.run(PY, "-c", LOAD, "send", proto, addr, str(port), str(seconds), str(streams))
        result = json.loads(recv.stdout.readline())
        return result["bytes"] * 8 / result["seconds"]
    finally:
        recv.kill()
        recv.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="5mbit")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--streams", type=int, default=8)
    opts = parser.parse_args()
    cap = parse_rate(opts.rate)
    paths = Paths.from_root(tempfile.mkdtemp(prefix="vstui-bench-net-"))
    made: list[Namespace] = []
    try:
        a, b = Namespace(), Namespace()
        made += [a, b]
        port = 6000

        def setup(out: int | None = None, into: int | None = None, filtered: bool = True):
            for name in ("a", "b"):
                net.teardown(name, paths)
            net.setup(cfg("a", "198.18.60.1/24", bandwidth_out=out, net_filter=filtered),
                      paths, a.pid)  # fmt: skip
            net.setup(cfg("b", "198.18.60.2/24", bandwidth_in=into, net_filter=filtered),
                      paths, b.pid)  # fmt: skip

        print(f"cap {opts.rate} ({cap / 1e6:g} mbit/s), window {opts.seconds:g} s, "
              f"{opts.streams} TCP streams; machine shared with other work")  # fmt: skip
        for label, kw in (("V_BANDWIDTH_OUT on a", {"out": cap}),
                          ("V_BANDWIDTH_IN on b", {"into": cap})):  # fmt: skip
            setup(**kw)
            for proto, streams in (("tcp", opts.streams), ("udp", 1)):
                port += 1
                bits = measure(a, b, proto, "198.18.60.2", port, opts.seconds, streams)
                load = f"{streams} TCP streams" if proto == "tcp" else "UDP flood"
                print(f"  {label:22s} {load:15s} {bits / 1e6:6.2f} mbit/s = "
                      f"{bits / cap:5.3f} of the cap")  # fmt: skip
        speeds: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(3):  # alternating, medians: the machine is shared
            for filtered in (True, False):
                setup(filtered=filtered)
                port += 1
                speeds[filtered].append(measure(a, b, "tcp", "198.18.60.2", port, 3.0, 1))
        on, off = (statistics.median(speeds[f]) for f in (True, False))
        print(f"  uncapped, 1 TCP stream (median of 3): filtered {on / 1e9:.2f} Gbit/s, "
              f"V_NET_FILTER=no {off / 1e9:.2f} Gbit/s, ratio {on / off:.3f}")  # fmt: skip
    finally:
        for name in ("a", "b"):
            net.teardown(name, paths)
        for ns in made:
            ns.close()


if __name__ == "__main__":
    main()
