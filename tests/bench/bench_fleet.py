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
   showing it;
3. what administrators run without it, one terminal per host, each
   ``ssh -t HOST COMMAND`` in tmux at 160x48 with its own connection:
   a) the single-host console ``vstui --root ROOT``, b) ``htop -d 10``.
   The same figures, and the fleet console's as ratios to each (CPU here:
   the console and its ssh against the ssh clients; on each host: sshd and
   what it runs).

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
from collections.abc import Callable, Iterator
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


# -- 2 and 3: the console, and one ssh session per host --------------------------------
def pane_pid(tmux) -> int:
    return int(tmux.run("display", "-p", "-t", "e2e", "#{pane_pid}"))


def tree(pid: int) -> list[int]:
    from tests.sshd import children

    return [pid, *children(pid)]


def console_pid(pane: int) -> int:
    """The vstui process in the pane (env execs it; a shell would fork it)."""
    for pid in tree(pane):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"--host" in f.read():
                    return pid
        except OSError:
            continue
    raise SystemExit("bench_fleet: no console process in the tmux pane")


def named(pids: list[int], comm: str) -> list[int]:
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm:
                    found.append(pid)
        except OSError:
            continue
    return found


def cpu_of(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid)
        except OSError:
            continue
    return found


def cpu_percent(before: dict[int, float], after: dict[int, float], seconds: float) -> float:
    """% of a core used by the processes alive at both ends."""
    return sum(after[p] - before[p] for p in after if p in before) / seconds * 100


def host_side(sshd: TestSshd) -> list[int]:
    """What the "hosts" run for their clients: sshd's sessions and the commands in them."""
    assert sshd.proc is not None
    return tree(sshd.proc.pid)[1:]


def programs_rss(sshd: TestSshd) -> float:
    """MiB resident of the commands ssh runs on the hosts (agents, vstui, htop), not sshd."""
    pids = host_side(sshd)
    return sum(rss_mib(p) for p in set(pids) - set(named(pids, "sshd")))


def phases(sshd: TestSshd, hosts: list[Host], client: list[int], seconds: float) -> dict:
    """Per host on the wire, CPU here (``client``) and on the hosts, idle then busy."""
    result: dict[str, float] = {}
    for phase in ("idle", "busy"):
        for host in hosts:
            host.busy(phase == "busy")
        time.sleep(3)
        there = host_side(sshd)
        here0, there0, t0 = cpu_of(client), cpu_of(there), time.monotonic()
        mean, top, conns = per_connection_rate(sshd.port, seconds)
        elapsed = time.monotonic() - t0
        result[f"{phase}_cpu"] = cpu_percent(here0, cpu_of(client), elapsed)
        result[f"{phase}_host_cpu"] = cpu_percent(there0, cpu_of(there), elapsed) / len(hosts)
        result[f"{phase}_tcp_mean"], result[f"{phase}_tcp_max"] = mean, top
        result["connections"] = conns
    for host in hosts:
        host.busy(False)
    result["rss"] = sum(rss_mib(p) for p in client)
    result["host_rss"] = programs_rss(sshd) / len(hosts)
    return result


def shows(screen: str, guest: str, state: str) -> bool:
    return any(guest in line.split() and state in line.split() for line in screen.splitlines())


def change_delays(screen: Callable[[], str], host: Host, runs: int) -> list[float]:
    """Seconds from a guest stopped (or started) on a host to ``screen`` showing it."""
    from engine import runtime

    guest, delays = host.guests[2], []
    for i in range(runs):
        stopping = i % 2 == 0
        if stopping:
            runtime.stop(host.paths, guest, 5)
        else:
            runtime.start(host.paths, guest)
        done = time.monotonic()
        want = "stopped" if stopping else "running"
        while not shows(screen(), guest, want):
            if time.monotonic() - done > 30:
                raise SystemExit(f"bench_fleet: {host.name}/{guest} never showed {want}")
            time.sleep(0.02)
        delays.append(time.monotonic() - done)
    if runs % 2:
        runtime.start(host.paths, guest)
    return delays


def with_console(sshd: TestSshd, hosts: list[Host], seconds: float) -> dict[str, float]:
    from tests.sshd import VENV_BIN
    from tests.tui.tmux import Tmux

    env = {"XDG_CONFIG_HOME": sshd.env()["XDG_CONFIG_HOME"], "VSTUI_SSH_DIR": str(sshd.control)}
    args = [str(VENV_BIN / "vstui")] + [w for h in hosts for w in ("--host", h.name)]
    tmux = Tmux(args, size=(160, 48), env=env)
    try:
        tmux.wait_for(lambda s: all(shows(s, h.name, "up") for h in hosts[:2]) and len(named(
            tree(console_pid(pane_pid(tmux))), "ssh")) >= len(hosts), "every host up",
            timeout=120)  # fmt: skip
        pid = console_pid(pane_pid(tmux))
        time.sleep(5)  # past the first whole frames
        result = phases(sshd, hosts, tree(pid), seconds)
        result["console_rss"], result["console_uss"] = rss_mib(pid), uss_mib(pid)
        delays = change_delays(tmux.screen, hosts[0], 6)
        result["delay_median"], result["delay_max"] = statistics.median(delays), max(delays)
        return result
    finally:
        tmux.close()


def peer_argv(sshd: TestSshd, host: Host, peer: str) -> list[str]:
    """``ssh -t HOST COMMAND``: a terminal session of its own per host (no multiplexing)."""
    from tests.sshd import VENV_BIN

    command = {"vstui": [str(VENV_BIN / "vstui"), "--root", str(host.root)],
               "htop": ["htop", "-d", "10"]}[peer]  # fmt: skip
    return ["ssh", "-t", "-F", str(sshd.config), "-o", "ControlPath=none", "root@127.0.0.1",
            *command]  # fmt: skip


def with_sessions(sshd: TestSshd, hosts: list[Host], peer: str, seconds: float) -> dict:
    """What an administrator runs without vstui's fleet: one terminal per host."""
    from tests.tui.tmux import Tmux

    sessions = [Tmux(peer_argv(sshd, h, peer), size=(160, 48)) for h in hosts]
    try:
        for host, tmux in zip(hosts, sessions, strict=True):
            word = host.guests[2] if peer == "vstui" else "Load"  # a guest's row; htop's header
            tmux.wait_for(lambda s, w=word: w in s.split(), f"{peer} on {host.name}", timeout=120)
        time.sleep(5)
        result = phases(sshd, hosts, [p for t in sessions for p in tree(pane_pid(t))], seconds)
        if peer == "vstui":
            delays = change_delays(sessions[0].screen, hosts[0], 6)
            result["delay_median"], result["delay_max"] = statistics.median(delays), max(delays)
        return result
    finally:
        for tmux in sessions:
            tmux.close()


def report(name: str, got: dict[str, float]) -> None:
    print(name)
    for phase in ("idle", "busy"):
        print(f"  {phase}: {got[f'{phase}_tcp_mean']:7.0f} B/s per host on the wire (max "
              f"{got[f'{phase}_tcp_max']:.0f}); CPU here {got[f'{phase}_cpu']:5.1f}%, on each "
              f"host {got[f'{phase}_host_cpu']:5.2f}% of a core")  # fmt: skip
    print(f"  memory: here {got['rss']:.0f} MiB RSS, on each host {got['host_rss']:.0f} MiB")
    if "delay_median" in got:
        print(f"  a guest stopped/started on h1 shown after {got['delay_median']:.2f} s median, "
              f"{got['delay_max']:.2f} s max")  # fmt: skip


def per_host(got: dict[str, float], hosts: int, phase: str) -> float:
    """% of a core per host, both ends: the share of what runs here and what runs there."""
    return got[f"{phase}_cpu"] / hosts + got[f"{phase}_host_cpu"]


ROWS = [  # label, figure (of a result and the host count)
    ("B/s per host on the wire, idle", lambda r, n: r["idle_tcp_mean"]),
    ("B/s per host on the wire, busy", lambda r, n: r["busy_tcp_mean"]),
    ("% of a core per host (here/n + there), idle", lambda r, n: per_host(r, n, "idle")),
    ("% of a core per host (here/n + there), busy", lambda r, n: per_host(r, n, "busy")),
    ("MiB RSS here (console / ssh clients)", lambda r, n: r["rss"]),
    ("MiB RSS on each host (agent / vstui / htop)", lambda r, n: r["host_rss"]),
    ("s from a change on h1 to the screen, median", lambda r, n: r.get("delay_median", 0.0)),
]  # fmt: skip


def side_by_side(con: dict[str, float], peers: dict[str, dict[str, float]], n: int) -> None:
    """The figures in one table, with the fleet console's ratio to each peer."""
    print(f"{'side by side':44} {'fleet':>8}" + "".join(f" {'ssh ' + p:>10} {'ratio':>6}"
                                                         for p in peers))  # fmt: skip
    for label, figure in ROWS:
        ours, line = figure(con, n), f"{label:44} {figure(con, n):8.2f}"
        for got in peers.values():
            theirs = figure(got, n)
            line += f" {theirs:10.2f} " + (f"{ours / theirs:5.2f}x" if theirs else f"{'-':>6}")
        print(line)


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
        print(f"1. protocol alone, {proto['connections']} TCP connections, per host:")
        for phase in ("idle", "busy"):
            print(f"  {phase}: {proto[f'{phase}_tcp_mean']:8.0f} B/s on the wire (max "
                  f"{proto[f'{phase}_tcp_max']:.0f}), {proto[f'{phase}_payload_mean']:8.0f} B/s "
                  "of protocol")  # fmt: skip
        con = with_console(sshd, hosts, args.seconds)
        report(
            f"2. vstui --host h1 .. --host h{len(hosts)}, one console in tmux at 160x48 "
            "(here: the console and its ssh; on each host: sshd and the agent)",
            con,
        )
        print(f"  the console alone: RSS {con['console_rss']:.0f} MiB, USS "
              f"{con['console_uss']:.0f} MiB")  # fmt: skip
        peers = {}
        for peer in ("vstui", "htop"):
            peers[peer] = with_sessions(sshd, hosts, peer, args.seconds)
            report(f"3{'ab'[len(peers) - 1]}. ssh -t HOST {peer}: {len(hosts)} terminals in tmux "
                   "at 160x48, a TCP connection each", peers[peer])  # fmt: skip
        side_by_side(con, peers, len(hosts))
        idle_ok = con["idle_tcp_max"] < 2048 and proto["idle_tcp_max"] < 2048
        print(f"targets: idle < 2 KB/s per host: {'yes' if idle_ok else 'NO'}; change < 2 s: "
              f"{'yes' if con['delay_max'] < 2 else 'NO'}; console < 150 MB: "
              f"{'yes' if con['console_rss'] < 150 else 'NO'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
