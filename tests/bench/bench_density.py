"""Density: many idle busybox guests on one host, side by side with ps, htop and LXC.

    .venv/bin/python -m tests.bench.bench_density [--full] [--counts 50,200] [--seconds 20]
        [--code LABEL=DIR] [--hold]

Run by hand, as root. Builds the guests under a temporary root, starts them
in steps (50, then 200; 1,000 with ``--full``) through the installed front
end as an administrator would, and prints at every step, in one run:

- start medians (first start through Python, which writes the boot cache),
  and at the end stop and cached-start medians with how many cached starts
  took the compiled fast path (``VSTUI_FALLBACK=0``: a start the cache
  cannot replay exits 125 and is then done through Python);
- the host's MemAvailable drop per running guest (medians of samples before
  any guest ran and now);
- our PSS per guest: every process vstui keeps for the guests outside them
  (the supervisors and whatever they fork, not the guests' own processes),
  divided by the number of guests; the guests' own PSS beside it;
- our processes' CPU and wake-ups (context switches) per second while idle;
- the console (``vstui -d 1``, guests and processes screens) next to ``htop
  -d 10``, on two ptys of the same size over the same seconds: bytes/s to
  the terminal and CPU%;
- ``vps ax`` and ``vserver-stat`` next to ``ps ax``: median time and lines;

``--code LABEL=DIR`` runs another source tree's console too, beside ours
and htop (e.g. the code before a change); ``--hold`` keeps the guests of
the last step running until Ctrl-C (for profiling by hand).

Then 20 LXC busybox containers (``lxc.net.0.type = empty``) with their
monitors' PSS and MemAvailable drop per container (when LXC is installed).
The machine is shared: read the ratios of one run, not absolute figures.
Everything is stopped, deleted and removed at the end (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from engine.paths import Paths
from engine.runtime import state
from tests.bench.bench_runtime import remove_pivots, vserver_command

REPO = Path(__file__).resolve().parents[2]
HZ = os.sysconf("SC_CLK_TCK")
LXC_COUNT = 20


def tool(name: str) -> str:
    """An installed console script of the venv (the real interpreter, no -m)."""
    script = Path(sys.executable).parent / name
    return str(script) if script.exists() else name


# -- /proc readers --------------------------------------------------------------------


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def settled_available(samples: int = 7, gap: float = 0.3) -> int:
    """MemAvailable (KiB): the median of a few samples (the host is shared and noisy)."""
    values = []
    for _ in range(samples):
        values.append(mem_available_kib())
        time.sleep(gap)
    return int(statistics.median(values))


def rollup_kib(pid: int, key: str = "Pss") -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_map() -> dict[int, list[int]]:
    """ppid -> [pid] of every process now."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def subtree(pid: int, kids: dict[int, list[int]]) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo += kids.get(p, [])
    return found


def per_guest_processes(paths: Paths, names: Iterable[str]) -> tuple[set[int], set[int]]:
    """(ours, theirs): what vstui keeps outside the guests, and the guests' own processes."""
    kids = children_map()
    ours: set[int] = set()
    theirs: set[int] = set()
    for name in names:
        run = state.read(paths, name)
        if run.supervisor_pid:
            ours |= subtree(run.supervisor_pid, kids)
        if run.init_pid:
            theirs |= subtree(run.init_pid, kids)
    return ours - theirs, theirs


def cpu_and_switches(pids: Iterable[int]) -> tuple[int, int]:
    """(CPU ticks, context switches) summed over the processes and all their threads."""
    ticks = switches = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    for line in f:
                        if "ctxt_switches:" in line:
                            switches += int(line.split()[1])
        except OSError:
            continue
    return ticks, switches


# -- the guests -----------------------------------------------------------------------


class Fleet:
    """N busybox guests under one temporary root, driven through the front end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = Paths.from_root(root)
        self.vs = [*vserver_command(), "--root", str(root)]
        self.built: list[str] = []
        self.running: list[str] = []

    def build(self, count: int) -> None:
        from engine.rootfs import build

        while len(self.built) < count:
            name = f"d{len(self.built):04d}"
            build(self.paths, name, template="busybox")
            self.built.append(name)

    def start(self, name: str, cached_only: bool = False) -> tuple[float, bool]:
        """(milliseconds, fast path taken)."""
        env = dict(os.environ, VSTUI_FALLBACK="0") if cached_only else None
        t0 = time.perf_counter()
        done = subprocess.run([*self.vs, name, "start"], env=env, capture_output=True)
        fast = done.returncode == 0
        if not fast:
            subprocess.run([*self.vs, name, "start"], check=True, capture_output=True)
        self.running.append(name)
        return (time.perf_counter() - t0) * 1000, fast

    def stop(self, name: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([*self.vs, name, "stop"], check=True, capture_output=True)
        self.running.remove(name)
        return (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        from engine.runtime import delete

        for name in list(self.running):
            subprocess.run([*self.vs, name, "stop"], capture_output=True)
        for name in self.built:
            try:
                delete(self.paths, name, force=True)
            except Exception as exc:  # keep removing the others
                print(f"cleanup {name}: {exc}", file=sys.stderr)
        shutil.rmtree(self.root, ignore_errors=True)


# -- measurements ---------------------------------------------------------------------


def idle_load(pids: set[int], seconds: float) -> tuple[float, float]:
    """(CPU % of one core, wake-ups per second) of ``pids`` over ``seconds``."""
    t0, s0 = cpu_and_switches(pids)
    time.sleep(seconds)
    t1, s1 = cpu_and_switches(pids)
    return 100 * (t1 - t0) / HZ / seconds, (s1 - s0) / seconds


def timed_lines(argv: list[str], runs: int = 5) -> tuple[float, int]:
    """(median ms, output lines) of a listing tool."""
    times, lines = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, check=True).stdout
        times.append((time.perf_counter() - t0) * 1000)
        lines = out.count(b"\n")
    return statistics.median(times), lines


def console_vs_htop(
    root: Path, screen: str, seconds: float, warmup: float, trees: dict[str, Path]
) -> list:
    """[Measure of each tree's console..., htop's Measure] at 80x24, idle, same seconds."""
    from tests.bench.live_host import PtyProgram, side_by_side

    home = tempfile.mkdtemp(prefix="vstui-bench-home-")
    try:
        programs = []
        for code in trees.values():
            env = {"PYTHONPATH": str(code), "HOME": home}
            # -P: no working directory first on sys.path (it is a source tree: ours)
            vstui = [sys.executable, "-P", "-m", "vstui.app.main", "--root", str(root),
                     "--screen", screen, "-d", "1"]  # fmt: skip
            programs.append(PtyProgram(vstui, 80, 24, env))
        programs.append(PtyProgram(["htop", "-d", "10"], 80, 24, {"HOME": home}))
        return side_by_side(programs, warmup, seconds, [])
    finally:
        shutil.rmtree(home, ignore_errors=True)


def report_step(fleet: Fleet, base_avail: int, args: argparse.Namespace) -> None:
    n = len(fleet.running)
    time.sleep(2.0)  # the last starts settle
    ours, theirs = per_guest_processes(fleet.paths, fleet.running)
    drop = (base_avail - settled_available()) / n
    our_pss = sum(rollup_kib(p) for p in ours) / n
    guest_pss = sum(rollup_kib(p) for p in theirs) / n
    cpu, wakeups = idle_load(ours, args.seconds)
    print(f"\n== {n} running guests ({len(ours)} vstui processes outside them)")
    print(f"MemAvailable drop per guest   {drop / 1024:8.2f} MB")
    print(f"our PSS per guest             {our_pss / 1024:8.2f} MB   (the guest's own processes:"
          f" {guest_pss / 1024:.2f} MB)")  # fmt: skip
    print(f"our CPU while idle            {cpu:8.2f} % of a core, {wakeups:.1f} wake-ups/s "
          f"({wakeups / n:.3f} per guest)")  # fmt: skip
    vps = timed_lines([tool("vps"), "--root", str(fleet.root), "ax"])
    stat = timed_lines([tool("vserver-stat"), "--root", str(fleet.root)])
    ps = timed_lines(["ps", "ax"])
    print(f"vps ax {vps[0]:7.1f} ms {vps[1]:6} lines | vserver-stat {stat[0]:7.1f} ms "
          f"{stat[1]:5} lines | ps ax {ps[0]:7.1f} ms {ps[1]:6} lines "
          f"(vps/ps {vps[0] / ps[0]:.2f}x)")  # fmt: skip
    if args.no_console or not shutil.which("htop"):
        return
    trees = {"console": REPO, **args.code}
    for screen in ("guests", "processes"):
        *mine, htop = console_vs_htop(fleet.root, screen, args.seconds, args.warmup, trees)
        for label, m in zip(trees, mine, strict=True):
            print(f"{label:7} {screen:9} 80x24 idle: {m.bytes_per_s:7.0f} B/s "
                  f"{m.cpu_percent:5.1f}% CPU | htop {htop.bytes_per_s:7.0f} B/s "
                  f"{htop.cpu_percent:5.1f}% CPU")  # fmt: skip


def lifecycle(fleet: Fleet, first: list[float]) -> None:
    """Stop every guest, start them again from the boot cache, stop again: medians."""
    names = list(fleet.running)
    stops = [fleet.stop(name) for name in names]
    cached = [fleet.start(name, cached_only=True) for name in names]
    stops += [fleet.stop(name) for name in names]
    fast = sum(1 for _, f in cached if f)
    print(f"\n== lifecycle over {len(names)} guests, milliseconds (medians)")
    print(f"first start (Python) {statistics.median(first):7.1f} | cached start "
          f"{statistics.median(t for t, _ in cached):7.1f} ({fast}/{len(names)} on the fast path) "
          f"| stop {statistics.median(stops):7.1f}")  # fmt: skip


# -- LXC --------------------------------------------------------------------------------


def lxc_monitors(count: int) -> None:
    if not shutil.which("lxc-create"):
        print("\n(LXC is not installed: no comparison)")
        return
    lxcpath = Path(tempfile.mkdtemp(prefix="vstui-bench-lxc-", dir="/tmp"))
    names = [f"bb{k}" for k in range(count)]
    pivots_before = set(Path("/sys/fs/cgroup").glob("*/lxc.pivot"))
    try:
        for name in names:
            lxc_create(lxcpath, name)
        base = settled_available()
        for name in names:
            subprocess.run(["lxc-start", "-P", str(lxcpath), "-n", name, "-d"], check=True)
            subprocess.run(["lxc-wait", "-P", str(lxcpath), "-n", name, "-s", "RUNNING",
                            "-t", "10"], check=True)  # fmt: skip
        time.sleep(2.0)
        drop = (base - settled_available()) / count
        monitors = subprocess.run(["pgrep", "-f", f"lxc monitor.*{lxcpath}"],
                                  capture_output=True, text=True).stdout.split()  # fmt: skip
        pss = sum(rollup_kib(int(pid)) for pid in monitors) / max(len(monitors), 1)
        cpu, wakeups = idle_load({int(p) for p in monitors}, 10.0)
        print(f"\n== {count} LXC busybox containers: monitor PSS {pss / 1024:.2f} MB each "
              f"({len(monitors)} monitors), MemAvailable drop {drop / 1024:.2f} MB per container, "
              f"monitors idle {cpu:.2f}% CPU, {wakeups:.1f} wake-ups/s")  # fmt: skip
    finally:
        for name in names:
            subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", name, "-k"], capture_output=True)
            subprocess.run(["lxc-destroy", "-P", str(lxcpath), "-n", name, "-f"],
                           capture_output=True)  # fmt: skip
        remove_pivots(pivots_before)
        shutil.rmtree(lxcpath, ignore_errors=True)


def lxc_create(lxcpath: Path, name: str) -> None:
    p = ["-P", str(lxcpath), "-n", name]
    subprocess.run(["lxc-create", *p, "-t", "busybox"], check=True, capture_output=True)
    config = lxcpath / name / "config"
    text = "\n".join(
        line for line in config.read_text().splitlines() if not line.startswith("lxc.net.")
    )
    config.write_text(text + "\nlxc.net.0.type = empty\n")


def hold(root: Path) -> None:
    """Keep the guests running (for profiling by hand) until Ctrl-C or SIGTERM."""
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"\nholding: --root {root}  (Ctrl-C or SIGTERM {os.getpid()} to go on)", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


# -- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="go on to 1,000 guests")
    parser.add_argument("--counts", default="50,200", help="steps, e.g. 50,200")
    parser.add_argument("--seconds", type=float, default=20.0, help="idle window per figure")
    parser.add_argument("--warmup", type=float, default=15.0, help="console start-up allowance")
    parser.add_argument("--no-console", action="store_true")
    parser.add_argument("--no-lxc", action="store_true")
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also run the console of another source tree, side by side",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after the last step, keep the guests until Ctrl-C/SIGTERM",
    )
    args = parser.parse_args()
    args.code = {k: Path(v) for k, v in (c.split("=", 1) for c in args.code)}
    counts = [int(n) for n in args.counts.split(",")] + ([1000] if args.full else [])
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="vstui-density-", dir="/tmp")))
    print(f"density benchmark, steps {counts}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (a shared machine: compare ratios)", flush=True)  # fmt: skip
    try:
        fleet.build(max(counts))
        base = settled_available()
        first: list[float] = []
        for count in counts:
            while len(fleet.running) < count:
                first.append(fleet.start(fleet.built[len(fleet.running)])[0])
            report_step(fleet, base, args)
        if args.hold:
            hold(fleet.root)
        lifecycle(fleet, first)
    finally:
        fleet.close()
    if not args.no_lxc:
        lxc_monitors(LXC_COUNT)


if __name__ == "__main__":
    main()
