"""A live host for the console benchmark: real guests, real processes whose
CPU use changes, and a program on a pseudo-terminal whose output is counted.

Used by ``bench_tui.py --live``; run by hand, as root. Everything it starts
is killed by PID and the guests are stopped and deleted at the end.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.procfs import mountinfo

REPO = Path(__file__).resolve().parents[2]

# Busy load: WORKERS processes whose duty cycle changes every second, plus a
# steady churn of short-lived children (rows that appear and vanish), plus
# UDP traffic to the demo guests at a changing rate (their RX/TX columns).
BUSY = r"""
import os, random, socket, sys, time
workers, targets = int(sys.argv[1]), sys.argv[2:]
kids = []
for n in range(workers):
    pid = os.fork()
    if pid == 0:
        rnd = random.Random(n)
        while True:
            duty = rnd.choice((0.0, 0.0, 0.02, 0.05, 0.1, 0.2))
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                t = time.monotonic()
                while time.monotonic() - t < duty * 0.05:
                    pass
                time.sleep(0.05 * (1 - duty))
    kids.append(pid)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rnd = random.Random(99)
while True:
    if os.fork() == 0:
        time.sleep(rnd.uniform(0.3, 1.5))
        os._exit(0)
    for addr in targets:
        for _ in range(rnd.randint(0, 40)):
            sock.sendto(b"x" * 512, (addr, 9))
    time.sleep(0.25)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
"""


@dataclass
class Guests:
    """The demo guests (vstui.demo) under a temporary root."""

    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="vstui-live-", dir="/tmp"))

    def __enter__(self) -> Guests:
        from vstui import demo

        try:
            demo.prepare(self.root)
        except BaseException:
            self.close()
            raise
        return self

    def addresses(self) -> list[str]:
        from vstui import demo

        return [g.address.split("/")[0] for g in demo.GUESTS]

    def close(self) -> None:
        from vstui import demo

        demo.clean(self.root)
        # the temporary root is the benchmark's own: demo.clean keeps what it did
        # not make (the id files under etc/), which piled up a directory a run
        if not any(m.mount_point.startswith(self.root + "/") for m in mountinfo()):
            shutil.rmtree(self.root, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


def routed_locally(address: str) -> bool:
    """True when traffic to ``address`` stays on this machine (a guest's veth)."""
    out = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True, text=True)
    words = out.stdout.split()
    dev = words[words.index("dev") + 1] if "dev" in words else ""
    return out.returncode == 0 and dev.startswith("vs") and "via" not in words


class Load:
    """The busy load, started and stopped by PID."""

    def __init__(self, workers: int, targets: Sequence[str]) -> None:
        safe = [a for a in targets if routed_locally(a)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BUSY, str(workers), *safe], start_new_session=True
        )

    def close(self) -> None:
        # Its own session: the workers and children go with it.
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds (schedstat's
    run time). Not stat's utime+stime: those are clock ticks, charged to the
    task a 100 Hz tick finds running, and an idle console or htop gets ~12 in
    30 s, so one tick more or less moved a figure by 0.03 of its ~0.4%. A
    thread that ends during the run takes its time along (both programs'
    threads live as long as they do)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):  # the thread ended meanwhile
            continue
    return total


class PtyProgram:
    """A program on its own pty of a given size; counts what it writes."""

    def __init__(self, argv: Sequence[str], cols: int, rows: int, env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ.update(env, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
            os.execvp(argv[0], list(argv))
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.counted = 0
        self.counting = False
        self.ns0 = 0

    def read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            return
        if self.counting:
            self.counted += len(data)

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def start_counting(self) -> None:
        self.counting = True
        self.counted = 0
        self.ns0 = cpu_ns(self.pid)

    def cpu_seconds(self) -> float:
        return (cpu_ns(self.pid) - self.ns0) / 1e9

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def pump(programs: Sequence[PtyProgram], seconds: float) -> None:
    """Read every program's output for ``seconds`` (so none blocks on a full pty)."""
    end = time.monotonic() + seconds
    fds = {p.fd: p for p in programs}
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select(list(fds), [], [], min(left, 0.2))
        for fd in ready:
            fds[fd].read()


@dataclass(frozen=True)
class Measure:
    bytes_per_s: float
    cpu_percent: float


def side_by_side(
    programs: Sequence[PtyProgram], warmup: float, seconds: float, keys: Sequence[tuple[int, str]]
) -> list[Measure]:
    """Run the programs together: warm up, type ``keys`` (program index, text),
    then count bytes and CPU of each over the same ``seconds``."""
    try:
        pump(programs, warmup)
        for index, text in keys:
            programs[index].send(text)
            pump(programs, 0.6)
        pump(programs, 3.0)  # the screen the keys opened settles
        for p in programs:
            p.start_counting()
        pump(programs, seconds)
        return [Measure(p.counted / seconds, 100 * p.cpu_seconds() / seconds) for p in programs]
    finally:
        for p in programs:
            p.close()
