"""Many hosts behind a real sshd: bytes per host, console CPU and memory, change delay.

    .venv/bin/python -m tests.bench.bench_fleet [--hosts 10] [--guests 20] [--seconds 20]

Run by hand, as root. Makes ``--hosts`` roots under /tmp, each with
``--guests`` running skeleton guests, and an sshd on 127.0.0.1 (tests.sshd)
through which every root is a "host" of hosts.toml with a TCP connection of
its own (its own ControlPath). Then, side by side in one run:

1. the protocol alone (engine.remote.fleet, no console): payload bytes per
   host and TCP bytes per connection (``ss -ti``: bytes_received and
   bytes_acked of the console's end), idle and busy;
2. the console, ``vstui --host h1 ... --host hN`` in tmux at 160x48: its CPU
   and memory (and its ssh processes'), bytes per host, idle and busy, and
   the delay from a change on a host (a guest stopped there) to the console
   showing it.

Busy: every guest's init counts to 300 and starts a new ``sleep 0.2``,
over and over (CPU, memory and processes move), switched on by a file in
the guest's /tmp; idle, it sleeps 2 s at a time. Targets (issue 18): under
2 KB/s per idle host, a change visible within 2 s, console memory under
150 MB. The machine is shared: read the figures as what they are on a busy
2-core VM.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.paths import Paths
from tests.sshd import TestSshd

# busy: a little arithmetic and a new sleep process five times a second
INIT = ("/bin/sh -c 'while :; do if [ -e /tmp/busy ]; then i=0; while [ $i -lt 300 ]; "
        "do i=$((i+1)); done; sleep 0.2; else sleep 2; fi; done'")  # fmt: skip


# -- hosts and guests -------------------------------------------------------------------
class Host:
    """One root with running guests, seen as hosts.toml entry ``name``."""

    def __init__(self, name: str, guests: int) -> None:
        self.name = name
        self.root = Path(tempfile.mkdtemp(prefix=f"vfb-{name}-", dir="/tmp"))
        self.paths = Paths.from_root(self.root)
        self.guests = [f"{name}g{i:02d}" for i in range(guests)]

    def build(self) -> None:
        from engine import config, rootfs, runtime

        for name in self.guests:
            rootfs.build(self.paths, name)
            config.update_config(self.paths, name, {"V_INIT": INIT})
            runtime.start(self.paths, name)

    def busy(self, on: bool) -> None:
        for name in self.guests:
            flag = self.paths.guest_root(name) / "tmp" / "busy"
            if on:
                flag.touch()
            else:
                flag.unlink(missing_ok=True)

    def remove(self) -> None:
        from engine import rootfs, runtime

        for name in self.guests:
            try:
                runtime.stop(self.paths, name, 5)
            except Exception as exc:  # keep cleaning the rest
                print(f"stop {name}: {exc}", file=sys.stderr)
            try:
                rootfs.delete(self.paths, name, force=True)
            except Exception as exc:
                print(f"delete {name}: {exc}", file=sys.stderr)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def fleet_of(count: int, guests: int) -> Iterator[tuple[TestSshd, list[Host]]]:
    sshd = TestSshd()
    hosts = [Host(f"h{i + 1}", guests) for i in range(count)]
    try:
        started = time.monotonic()
        for host in hosts:
            host.build()
        print(f"set-up: {count} hosts x {guests} guests running in "
              f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
        sshd.start()
        sshd.write_hosts({h.name: {"root": str(h.root), "ssh_options": [
            "-F", str(sshd.config), "-o", f"ControlPath={sshd.control}/{h.name}-%C"]}
            for h in hosts})  # fmt: skip
        os.environ.update(XDG_CONFIG_HOME=sshd.env()["XDG_CONFIG_HOME"],
                          VSTUI_SSH_DIR=str(sshd.control))  # fmt: skip
        yield sshd, hosts
    finally:
        sshd.close()
        for host in hosts:
            host.remove()


# -- measuring --------------------------------------------------------------------------
def tcp_bytes(port: int) -> list[int]:
    """Bytes each client connection to ``port`` moved (received + acked), from ss."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    found = []
    for info in re.findall(r"bytes_acked:(\d+).*?bytes_received:(\d+)", out.replace("\n", " ")):
        found.append(int(info[0]) + int(info[1]))
    return found


def per_connection_rate(port: int, seconds: float) -> tuple[float, float, int]:
    """(mean, max) bytes/s per connection over ``seconds``, and the connection count."""
    before = tcp_bytes(port)
    time.sleep(seconds)
    after = tcp_bytes(port)
    if len(before) != len(after) or not after:
        return float("nan"), float("nan"), len(after)
    rates = [(b - a) / seconds for a, b in zip(sorted(before), sorted(after), strict=True)]
    return statistics.mean(rates), max(rates), len(after)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def uss_mib(pid: int) -> float:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


# -- 1: the protocol alone --------------------------------------------------------------
def protocol_only(sshd: TestSshd, hosts: list[Host], seconds: float) -> dict[str, float]:
    from engine.remote.fleet import Fleet
    from engine.remote.hosts import resolve_all

    fleet = Fleet(resolve_all([h.name for h in hosts]), interval=1.0).start()
    try:
        deadline = time.monotonic() + 60
        while not all(v.state == "up" and v.snapshot for v in fleet.views()):
            if time.monotonic() > deadline:
                raise SystemExit(f"hosts not up: {[(v.name, v.error) for v in fleet.views()]}")
            time.sleep(0.1)
        time.sleep(3)  # past the full first frames
        result = {}
        for phase in ("idle", "busy"):
            for host in hosts:
                host.busy(phase == "busy")
            time.sleep(3)
            clients = [fleet.client(h.name) for h in hosts]
            payload0 = [c.bytes_in for c in clients]
            mean, top, conns = per_connection_rate(sshd.port, seconds)
            payload = [(c.bytes_in - p) / seconds for c, p in zip(clients, payload0, strict=True)]
            result[f"{phase}_tcp_mean"], result[f"{phase}_tcp_max"] = mean, top
            result[f"{phase}_payload_mean"] = statistics.mean(payload)
            result["connections"] = conns
        for host in hosts:
            host.busy(False)
        return result
    finally:
        fleet.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--guests", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_fleet: run as root (it starts guests and an sshd)")
    with fleet_of(args.hosts, args.guests) as (sshd, hosts):
        proto = protocol_only(sshd, hosts, args.seconds)
        print(f"protocol alone, {proto['connections']} TCP connections, per host:")
        for phase in ("idle", "busy"):
            print(f"  {phase}: {proto[f'{phase}_tcp_mean']:8.0f} B/s on the wire (max "
                  f"{proto[f'{phase}_tcp_max']:.0f}), {proto[f'{phase}_payload_mean']:8.0f} B/s "
                  "of protocol")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
