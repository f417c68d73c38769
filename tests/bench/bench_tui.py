"""Console benchmarks, run by hand (never by the suite):

    .venv/bin/python tests/bench/bench_tui.py [--seconds 10]

1. key press to updated screen with 10,000 processes (Pilot, fake source),
   p50/p95 over cursor moves, inverted sort, sort by another column, filter
   typing and backspace, tree; "net" subtracts Pilot's cost of a no-op key;
2. startup to first frame (Pilot, 10,000 processes);
3. RSS with 10,000 processes;
4. bytes per second to the terminal while idle at 80x24 with 50 guests,
   on a real pty (pty.fork), next to htop on the same pty size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import resource
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.tui.fakes import FixedSource, big_snapshot  # noqa: E402
from tests.tui.helpers import make_app, settle  # noqa: E402


async def key_latency() -> dict[str, float]:
    """Milliseconds from a key press to the updated screen, per kind of key.

    Pilot's own cost of a press (``noop``: an unbound key, nothing redrawn)
    is reported too; ``*_net`` figures subtract its median.
    """
    snap = big_snapshot(10_000, 50)
    t0 = time.perf_counter()
    app = make_app(Path("/tmp"), snap=snap, first_screen="processes")
    samples: dict[str, list[float]] = {
        "noop": [], "down": [], "sort": [], "sort_column": [], "filter": [], "tree": [],
    }  # fmt: skip

    async def timed(kind: str, key: str) -> None:
        t = time.perf_counter()
        await pilot.press(key)
        samples[kind].append(time.perf_counter() - t)

    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        first = time.perf_counter() - t0
        for _ in range(20):
            await timed("noop", "f12")
        for _ in range(40):
            await timed("down", "down")
        for _ in range(10):
            await timed("sort", "I")  # invert the sort
            await timed("tree", "t")
        for _ in range(10):  # the sort picker: the next column, applied on enter
            await pilot.press("greater_than_sign", "down")
            await timed("sort_column", "enter")
        await pilot.press("slash")
        for ch in "worker --id 12":
            await timed("filter", ch if ch != " " else "space")
        for _ in range(6):
            await timed("filter", "backspace")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"startup_to_first_frame_s": first, "rss_mib": rss}
    overhead = statistics.median(samples["noop"]) * 1000
    for name, values in samples.items():
        values.sort()
        p50 = statistics.median(values) * 1000
        p95 = values[max(int(len(values) * 0.95) - 1, 0)] * 1000
        out[f"{name}_p50_ms"] = p50
        out[f"{name}_p95_ms"] = p95
        if name != "noop":
            out[f"{name}_p95_net_ms"] = p95 - overhead
    return out


APP_CHILD = """
import sys; sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.tui.fakes import FixedSource, big_snapshot
from tests.tui.helpers import make_app
snaps = [big_snapshot(200, 50, tick=0)]
app = make_app(Path("/tmp"), source=FixedSource(*snaps))
app.run()
"""


def pty_bytes(argv: list[str], seconds: float, warmup: float = 12.0) -> float:
    """Bytes/s a program writes to an 80x24 pty after ``warmup`` seconds.

    The warm-up covers the sparklines filling up (8 samples), after which an
    idle guest list changes only its header line.
    """
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(TERM="xterm-256color", COLUMNS="80", LINES="24")
        os.execvp(argv[0], argv)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.kill(pid, signal.SIGWINCH)
    counted = 0
    start = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now - start > warmup + seconds:
                break
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if now - start > warmup:
                    counted += len(data)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    return counted / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keys-only", action="store_true", help="only the key latencies")
    args = parser.parse_args()
    lat = asyncio.run(key_latency())
    for k, v in lat.items():
        print(f"{k:28} {v:8.1f}")
    if args.keys_only:
        return
    child = [sys.executable, "-c", APP_CHILD.format(repo=str(REPO))]
    vstui_rate = pty_bytes(child, args.seconds)
    htop_rate = pty_bytes(["htop", "-d", "10"], args.seconds) if subprocess.run(
        ["which", "htop"], capture_output=True).returncode == 0 else float("nan")  # fmt: skip
    print(f"{'idle bytes/s vstui 80x24':28} {vstui_rate:8.0f}   (50 guests, 1 s updates)")
    print(f"{'idle bytes/s htop -d 10':28} {htop_rate:8.0f}   (same pty, this host)")
    print(f"{'ratio vstui/htop':28} {vstui_rate / htop_rate if htop_rate else float('nan'):8.2f}")


if __name__ == "__main__":
    _ = FixedSource
    main()
