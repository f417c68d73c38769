"""Console benchmarks, run by hand (never by the suite):

    .venv/bin/python tests/bench/bench_tui.py [--seconds 10]

1. key press to updated screen with 10,000 processes (Pilot, fake source),
   p50/p95 over cursor moves, inverted sort, sort by another column, filter
   typing and backspace, tree; "net" subtracts Pilot's cost of a no-op key;
   the ``cpu_`` figures are the process's CPU time over the same presses
   (less at the mercy of other users of a shared machine than wall time);
2. startup to first frame (Pilot, 10,000 processes);
3. RSS with 10,000 processes;
4. bytes per second to the terminal while idle at 80x24 with 50 guests,
   on a real pty (pty.fork), next to htop on the same pty size (fixed source).

``--live`` (as root) measures the real console on a live host instead: the
demo guests under a temporary root, and in "busy" mode also processes whose
CPU use changes every second, short-lived children and UDP traffic to the
guests. For every screen, at 80x24 and 160x48, idle and busy, the console
and htop run side by side on two ptys of the same size over the same
seconds; it prints bytes/s to the terminal and CPU% of each::

    .venv/bin/python tests/bench/bench_tui.py --live [--seconds 10]
        [--screens guests,processes,...] [--sizes 80x24,160x48] [--modes idle,busy]
        [--code before=/tmp/old-tree]

``--code LABEL=DIR`` runs another source tree's console in the same seconds
too (e.g. the code before a change), so before and after share one run.
With ``--keys-only`` each tree's key latencies are measured in a child of
its own, the trees taking turns for ``--rounds`` rounds; the table shows
each figure's median over the rounds, one column per tree::

    .venv/bin/python tests/bench/bench_tui.py --keys-only --code before=/tmp/old-tree
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# a child measuring another tree (--keys-only --code) imports that tree's code
sys.path.insert(0, os.environ.get("VSTUI_BENCH_CODE") or str(REPO))

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

    cpu: dict[str, list[float]] = {kind: [] for kind in samples}

    async def timed(kind: str, key: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        await pilot.press(key)
        samples[kind].append(time.perf_counter() - t)
        cpu[kind].append(time.process_time() - c)

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
    for label, table in (("", samples), ("cpu_", cpu)):
        overhead = statistics.median(table["noop"]) * 1000
        for name, values in table.items():
            values.sort()
            p95 = values[max(int(len(values) * 0.95) - 1, 0)] * 1000
            out[f"{label}{name}_p50_ms"] = statistics.median(values) * 1000
            out[f"{label}{name}_p95_ms"] = p95
            if name != "noop":
                out[f"{label}{name}_p95_net_ms"] = p95 - overhead
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


# Screen -> (vstui --screen, keys typed once it is up, htop options, keys for htop).
LIVE_SCREENS: dict[str, tuple[str, str, list[str], str]] = {
    "guests": ("guests", "", [], ""),
    "processes": ("processes", "", [], ""),
    "tree": ("processes", "t\x1b[H", ["-t"], ""),  # t, then Home: htop -t starts at the top
    # htop's tree lists threads too: at the top of it, PID 1's threads, which
    # never change. With H it lists processes only, the rows the console shows.
    "tree-H": ("processes", "t\x1b[H", ["-t"], "H"),
    "detail": ("guests", "j\r", [], ""),
    "editor": ("guests", "je", [], ""),
    "audit": ("audit", "", [], ""),
}


def live(args: argparse.Namespace) -> None:
    """The console next to htop on a live host, every screen, size and mode."""
    import tempfile

    from tests.bench.live_host import Guests, Load, PtyProgram, side_by_side

    screens = args.screens.split(",")
    sizes = [tuple(int(n) for n in s.split("x")) for s in args.sizes.split(",")]
    trees = {"vstui": REPO, **dict(c.split("=", 1) for c in args.code)}
    print(f"{'screen':10} {'size':7} {'mode':5} {'code':7} {'B/s':>7} {'htop B/s':>9} {'ratio':>6}"
          f" {'CPU%':>5} {'htop CPU%':>9}")  # fmt: skip
    # HOME: htop's defaults, not a user's htoprc
    with tempfile.TemporaryDirectory(prefix="vstui-bench-home-") as home, Guests() as guests:
        for mode in args.modes.split(","):
            load = Load(8, guests.addresses()) if mode == "busy" else None
            try:
                for screen in screens:
                    first, keys, htop_opts, htop_keys = LIVE_SCREENS[screen]
                    for cols, rows in sizes:
                        # -P: not the working directory (a source tree) before PYTHONPATH
                        vstui = ["-P", "-m", "vstui.app.main", "--root",
                                 guests.root, "--screen", first, "-d", "1"]  # fmt: skip
                        htop = ["htop", "-d", "10", *htop_opts]
                        programs = [PtyProgram([interpreter(code), *vstui], cols, rows,
                                               {"PYTHONPATH": str(code), "HOME": home})
                                    for code in trees.values()]  # fmt: skip
                        programs.append(PtyProgram(htop, cols, rows, {"HOME": home}))
                        typed = [(i, keys) for i in range(len(trees)) if keys]
                        if htop_keys:
                            typed.append((len(trees), htop_keys))
                        *ours, theirs = side_by_side(programs, args.warmup, args.seconds, typed)
                        for label, m in zip(trees, ours, strict=True):
                            print_row(f"{screen:10} {cols}x{rows:<4} {mode:5} {label:7}", m, theirs)
            finally:
                if load is not None:
                    load.close()


def interpreter(code: str | Path) -> str:
    """A tree's own interpreter (its .venv, as its setup.sh made it), else ours."""
    own = Path(code, ".venv", "bin", "python")
    return str(own) if own.exists() else sys.executable


def keys_side_by_side(trees: dict[str, str], rounds: int) -> None:
    """Key latencies of every tree, each in a child of its own, taking turns."""
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    for _ in range(rounds):
        for label, code in trees.items():
            child = subprocess.run(
                [sys.executable, __file__, "--keys-json"], capture_output=True, text=True,
                check=True, env={**os.environ, "VSTUI_BENCH_CODE": code},
            )  # fmt: skip
            runs[label].append(json.loads(child.stdout.splitlines()[-1]))
    print(f"{'median of ' + str(rounds) + ' rounds':28}" + "".join(f"{k:>10}" for k in trees))
    for name in runs[next(iter(trees))][0]:
        cells = [statistics.median(r[name] for r in runs[label]) for label in trees]
        print(f"{name:28}" + "".join(f"{v:10.1f}" for v in cells))


def print_row(head: str, ours: Any, htop: Any) -> None:
    ratio = ours.bytes_per_s / htop.bytes_per_s if htop.bytes_per_s else 0
    # CPU% to 0.01: idle figures are a few tenths, and at 0.1 most of them tied
    print(f"{head} {ours.bytes_per_s:7.0f} {htop.bytes_per_s:9.0f} {ratio:6.2f}"
          f" {ours.cpu_percent:5.2f} {htop.cpu_percent:9.2f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keys-only", action="store_true", help="only the key latencies")
    parser.add_argument("--keys-json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="--keys-only --code: turns")
    parser.add_argument("--live", action="store_true", help="the real console on a live host")
    parser.add_argument("--screens", default=",".join(LIVE_SCREENS))
    parser.add_argument("--sizes", default="80x24,160x48")
    parser.add_argument("--modes", default="idle,busy")
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="--live, --keys-only: also another source tree's console, side by side",
    )
    args = parser.parse_args()
    if args.live:
        live(args)
        return
    if args.keys_json:  # a child of keys_side_by_side
        print(json.dumps(asyncio.run(key_latency())))
        return
    if args.keys_only and args.code:
        keys_side_by_side({"now": str(REPO), **dict(c.split("=", 1) for c in args.code)},
                          args.rounds)  # fmt: skip
        return
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
