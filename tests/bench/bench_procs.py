"""Benchmark the process scanner against ps and htop, with many processes.

Run by hand, as root (it makes cgroups), from the repository:

    .venv/bin/python tests/bench/bench_procs.py [--count 10000] [--guests 50] [--seconds 60]
        [--code before=/tmp/old-tree] [--hold]

It starts COUNT sleeping busybox processes spread over GUESTS fake guests:
each guest gets a real cgroup (engine.cgroups, named by engine.paths under a
temporary root) and run-state files, so attribution does the real work. The
process farm is made once and used by every measurement. Then it prints,
side by side:

  1. one full snapshot (attribution, trees, CPU%), cold and warm,
     vs `ps -eo pid,ppid,user,stat,rss,vsz,pcpu,comm`      target <= 0.5x
  2. `vps ax` as a whole command (the venv's console script, bytecode
     compiled) vs `ps ax` (hyperfine medians)              target <= +60 ms
  3. sampling once a second for SECONDS: CPU time of an Observer loop vs
     htop -d 10 in tmux (utime+stime of each over the same window)
  4. the sampler's RSS with all those processes           target < 60 MB

``--code LABEL=DIR`` measures another source tree (e.g. a copy of the code
before a change) in the same run, on the same farm, next to this one.
``--hold`` only builds the farm, prints its root and waits for Ctrl-C/SIGTERM
(for profiling by hand).

Every process it starts is killed by PID at the end (try/finally), and the
cgroups and the temporary root are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.paths import Paths  # noqa: E402

VENV = REPO / ".venv" / "bin"
PYTHON = str(VENV / "python")
SLEEP = shutil.which("busybox") or "/bin/sleep"
HZ = os.sysconf("SC_CLK_TCK")
PS_EO = ["ps", "-eo", "pid,ppid,user,stat,rss,vsz,pcpu,comm"]

# The spawner: joins each guest's cgroup in turn, forks that guest's share of
# sleepers (they inherit the cgroup), prints their PIDs, then waits to reap.
SPAWNER = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from engine.cgroups import manager
sleep, rels, per = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
argv = ["sleep", "86400"]  # busybox picks its applet from argv[0]
cg = manager()
pids = []
for rel in rels:
    cg.attach(rel, os.getpid())
    group = []
    for _ in range(per):
        pid = os.fork()
        if pid == 0:
            try:
                os.execv(sleep, argv)
            finally:
                os._exit(127)
        group.append(pid)
    pids.append(group)
print(json.dumps(pids), flush=True)
sys.stdin.read()          # until the benchmark closes our stdin
while True:               # then reap the (killed) sleepers
    try:
        os.wait()
    except ChildProcessError:
        break
"""

# One code tree's snapshot timings, in its own interpreter (argv: code dir, root).
SNAPPER = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from engine.observe import Observer
from engine.paths import Paths
from engine.procs import tree
paths = Paths.from_root(sys.argv[2])

def once(obs):
    t = time.perf_counter()
    snap = obs.snapshot()
    for g in snap.guests:
        list(tree.walk(snap.procs_of(g.xid), prefer_root=g.init_pid))
    return time.perf_counter() - t

cold = statistics.median(once(Observer(paths)) for _ in range(3))
obs = Observer(paths)
once(obs)
warm = statistics.median(once(obs) for _ in range(7))
print(json.dumps({"cold": cold, "warm": warm}))
"""

SAMPLER = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from engine.observe import Observer
from engine.paths import Paths
from engine.procs import tree
seconds = int(sys.argv[3])
obs = Observer(Paths.from_root(sys.argv[2]))
obs.snapshot()
print("ready", flush=True)
sys.stdin.readline()      # start together with the other samplers
t0 = os.times()
start = time.monotonic()
for i in range(seconds):
    snap = obs.snapshot()
    for g in snap.guests:
        list(tree.walk(snap.procs_of(g.xid), prefer_root=g.init_pid))
    time.sleep(max(0.0, start + i + 1 - time.monotonic()))
t1 = os.times()
status = open("/proc/self/status").read().split("\n")
mem = {l.split(":")[0]: l.split()[1] for l in status if l.startswith(("VmRSS", "VmHWM"))}
print(json.dumps({"cpu": (t1.user - t0.user) + (t1.system - t0.system),
                  "wall": time.monotonic() - start, "procs": len(snap.procs),
                  "rss_kb": int(mem["VmRSS"]), "hwm_kb": int(mem["VmHWM"])}), flush=True)
"""


def median_time(argv: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def proc_cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def start_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


class Farm:
    """COUNT sleepers in GUESTS guest cgroups under a temporary root; always cleaned up."""

    def __init__(self, count: int, guests: int) -> None:
        from engine.cgroups import manager

        self.base = Path(tempfile.mkdtemp(prefix="vstui-bench-", dir="/tmp"))
        self.paths = Paths.from_root(self.base)
        self.names = [f"g{i:02d}" for i in range(guests)]
        self.rels = [self.paths.cgroup_name(n) for n in self.names]
        self.per = max(count // guests, 1)
        self.cg = manager()
        self.spawner: subprocess.Popen[str] | None = None
        self.groups: list[list[int]] = []

    def __enter__(self) -> Farm:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        for rel in self.rels:
            self.cg.create(rel)
        t = time.perf_counter()
        self.spawner = subprocess.Popen(
            [PYTHON, "-c", SPAWNER, str(REPO), SLEEP, json.dumps(self.rels), str(self.per)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.spawner.stdout is not None
        self.groups = json.loads(self.spawner.stdout.readline())
        total = sum(len(g) for g in self.groups)
        print(f"started {total} sleepers in {len(self.groups)} guest cgroups "
              f"in {time.perf_counter() - t:.1f} s ({SLEEP})")  # fmt: skip
        self._run_state()

    def _run_state(self) -> None:
        """Run-state files as the runtime writes them, so attribution finds the guests."""
        for i, (name, pids) in enumerate(zip(self.names, self.groups, strict=True)):
            run = self.paths.run_dir(name)
            run.mkdir(parents=True, exist_ok=True)
            values = {
                "state": "running",
                "xid": str(40000 + i),
                "init.pid": str(pids[0]),
                "init.start": str(start_ticks(pids[0])),
                "started": str(time.time()),
            }
            for key, value in values.items():
                (run / key).write_text(value + "\n")

    def close(self) -> None:
        for group in self.groups:
            for pid in group:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.spawner is not None:
            if self.spawner.stdin:
                self.spawner.stdin.close()
            try:
                self.spawner.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.spawner.kill()
                self.spawner.wait()
            self.spawner = None
        for rel in self.rels:
            try:
                if self.cg.exists(rel):
                    self.cg.kill_all(rel)
                self.cg.remove(rel)
            except Exception as exc:
                print(f"bench_procs: cleanup {rel}: {exc}", file=sys.stderr)
        shutil.rmtree(self.base, ignore_errors=True)


def bench_snapshot(paths: Paths, trees: dict[str, Path]) -> dict[str, dict[str, float]]:
    ps_times = [median_time(PS_EO)]
    out: dict[str, dict[str, float]] = {}
    for label, code in trees.items():
        run = subprocess.run([PYTHON, "-c", SNAPPER, str(code), str(paths.root)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        out[label] = json.loads(run.stdout)
        ps_times.append(median_time(PS_EO))
    out["ps"] = {"median": statistics.median(ps_times)}
    return out


def vps_command(label: str, code: Path, root: Path) -> str:
    # the console script, as an administrator runs it; PYTHONPATH picks the tree
    argv = ["env", f"PYTHONPATH={code}", str(VENV / "vps"), "--root", str(root), "ax"]
    return subprocess.list2cmdline(argv)


def bench_vps(paths: Paths, trees: dict[str, Path]) -> dict[str, float]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    argv = ["hyperfine", "-N", "-w", "2", "-r", "15", "--export-json", str(out)]
    for label, code in trees.items():
        argv += ["--command-name", f"vps ax [{label}]", vps_command(label, code, paths.root)]
    argv += ["--command-name", "ps ax", "ps ax"]
    try:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd="/")
        return {r["command"]: r["median"] for r in json.loads(out.read_text())["results"]}
    finally:
        out.unlink()


def bench_sampling(paths: Paths, seconds: int, trees: dict[str, Path]) -> dict[str, dict]:
    """Every tree's sampler and htop over the same window of SECONDS."""
    session = f"vstui-bench-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    "htop -d 10"], check=True)  # fmt: skip
    samplers: dict[str, subprocess.Popen[str]] = {}
    try:
        pane = subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        htop_pid = int(pane.stdout.split()[0])
        for label, code in trees.items():
            samplers[label] = subprocess.Popen(
                [PYTHON, "-c", SAMPLER, str(code), str(paths.root), str(seconds)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        for proc in samplers.values():  # first (cold) snapshots are not the steady state
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(2)  # and neither is htop's first full scan
        h0, t0 = proc_cpu_ticks(htop_pid), time.monotonic()
        for proc in samplers.values():
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = {}
        for label, proc in samplers.items():
            out, _ = proc.communicate(timeout=seconds + 120)
            results[label] = json.loads(out)
        h1, t1 = proc_cpu_ticks(htop_pid), time.monotonic()
    finally:
        for proc in samplers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    results["htop"] = {"cpu": (h1 - h0) / HZ, "wall": t1 - t0}
    return results


def compile_trees(trees: dict[str, Path]) -> None:
    for code in trees.values():
        subprocess.run([PYTHON, "-m", "compileall", "-q", "engine", "vstui"], cwd=code, check=True)


def report(farm: Farm, trees: dict[str, Path], seconds: int) -> None:
    snap = bench_snapshot(farm.paths, trees)
    ps = snap["ps"]["median"]
    print("1. full snapshot (attribution + trees + CPU%) vs ps -eo ...  (target <= 0.5x)")
    for label in trees:
        s = snap[label]
        print(f"   {label:>8} cold {s['cold'] * 1000:7.1f} ms ({s['cold'] / ps:.2f}x)"
              f"   warm {s['warm'] * 1000:7.1f} ms ({s['warm'] / ps:.2f}x)")  # fmt: skip
    print(f"   ps -eo        {ps * 1000:7.1f} ms\n")

    vps = bench_vps(farm.paths, trees)
    base = vps["ps ax"]
    print("2. vps ax vs ps ax (hyperfine medians, whole commands)  (target <= +60 ms)")
    for label in trees:
        t = vps[f"vps ax [{label}]"]
        print(f"   {label:>8} vps ax {t * 1000:7.1f} ms   {(t - base) * 1000:+7.1f} ms")
    print(f"   ps ax           {base * 1000:7.1f} ms\n")

    if seconds <= 0:
        return
    s = bench_sampling(farm.paths, seconds, trees)
    htop = s["htop"]
    htop_pct = htop["cpu"] / htop["wall"] * 100
    procs = next(iter(s[label]["procs"] for label in trees))
    print(f"3. sampling once a second for {seconds} s, {procs} processes  (target < 1x htop)")
    for label in trees:
        r = s[label]
        pct = r["cpu"] / r["wall"] * 100
        print(f"   {label:>8} Observer {r['cpu']:6.2f} s CPU = {pct:5.1f} % of a core"
              f"   {pct / htop_pct if htop_pct else float('inf'):.2f}x htop")  # fmt: skip
    print(f"   htop -d 10       {htop['cpu']:6.2f} s CPU = {htop_pct:5.1f} % of a core\n")
    print("4. sampler RSS  (target < 60 MB)")
    for label in trees:
        r = s[label]
        print(f"   {label:>8} {r['rss_kb'] / 1024:5.1f} MB (peak {r['hwm_kb'] / 1024:.1f} MB)")


def hold(farm: Farm) -> None:
    print(f"farm ready: --root {farm.paths.root}  (Ctrl-C or SIGTERM {os.getpid()} to end)",
          flush=True)  # fmt: skip
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--guests", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--code", action="append", default=[], metavar="LABEL=DIR")
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_procs: needs root (it makes cgroups)", file=sys.stderr)
        return 2
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    if args.count + 1000 > limit:
        print(f"bench_procs: pid_max is {limit}; use --count below it", file=sys.stderr)
        return 2
    trees = {"now": REPO}
    for item in args.code:
        label, _, folder = item.partition("=")
        trees[label] = Path(folder).resolve()
    compile_trees(trees)
    with Farm(args.count, args.guests) as farm:
        nprocs = len([n for n in os.listdir("/proc") if n.isdigit()])
        print(f"processes on the host now: {nprocs}\n")
        if args.hold:
            hold(farm)
        else:
            report(farm, trees, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
