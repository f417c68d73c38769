"""Benchmark the process scanner against ps and htop, with many processes.

Run by hand, as root (it makes cgroups), from the repository:

    .venv/bin/python tests/bench/bench_procs.py [--count 10000] [--guests 50] [--seconds 60]

It starts COUNT sleeping busybox processes spread over GUESTS fake guests:
each guest gets a real cgroup (engine.cgroups, named by engine.paths under a
temporary root) and run-state files, so attribution does the real work. Then
it prints, side by side:

  1. one full snapshot (attribution, trees, CPU%), cold and warm,
     vs `ps -eo pid,ppid,user,stat,rss,vsz,pcpu,comm`      target <= 0.5x
  2. `vps ax` as a whole command vs `ps ax` (hyperfine)     target <= +60 ms
  3. sampling once a second for SECONDS: CPU time of an Observer loop vs
     htop -d 10 in tmux (utime+stime of each over the same window)
  4. the sampler's RSS with all those processes           target < 60 MB

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

PYTHON = str(REPO / ".venv" / "bin" / "python")
SLEEP = shutil.which("busybox") or "/bin/sleep"
HZ = os.sysconf("SC_CLK_TCK")

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

SAMPLER = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from engine.observe import Observer
from engine.paths import Paths
from engine.procs import tree
seconds = int(sys.argv[3])
obs = Observer(Paths.from_root(sys.argv[2]))
obs.snapshot()
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


def setup_guests(paths: Paths, groups: list[list[int]], names: list[str]) -> None:
    """Run-state files as the runtime writes them, so attribution finds the guests."""
    for i, (name, pids) in enumerate(zip(names, groups, strict=True)):
        run = paths.run_dir(name)
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


def bench_snapshot(paths: Paths) -> dict[str, float]:
    from engine.observe import Observer
    from engine.procs import tree

    def once(obs: Observer) -> float:
        t = time.perf_counter()
        snap = obs.snapshot()
        for g in snap.guests:
            list(tree.walk(snap.procs_of(g.xid), prefer_root=g.init_pid))
        return time.perf_counter() - t

    cold = statistics.median(once(Observer(paths)) for _ in range(3))
    obs = Observer(paths)
    once(obs)
    warm = statistics.median(once(obs) for _ in range(5))
    ps = median_time(["ps", "-eo", "pid,ppid,user,stat,rss,vsz,pcpu,comm"])
    return {"cold": cold, "warm": warm, "ps": ps}


def bench_vps(paths: Paths) -> dict[str, float]:
    vps = [PYTHON, "-c", "import sys; from vstui.cli.vps import main; sys.exit(main())",
           "--root", str(paths.root), "ax"]  # fmt: skip
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        subprocess.run(
            ["hyperfine", "-N", "-w", "2", "-r", "10", "--export-json", str(out),
             "--command-name", "vps ax", subprocess.list2cmdline(vps),
             "--command-name", "ps ax", "ps ax"],
            check=True, stdout=subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip
        results = {r["command"]: r["median"] for r in json.loads(out.read_text())["results"]}
    finally:
        out.unlink()
    return results


def bench_sampling(paths: Paths, seconds: int) -> dict[str, float]:
    session = f"vstui-bench-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    "htop -d 10"], check=True)  # fmt: skip
    try:
        pane = subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        htop_pid = int(pane.stdout.split()[0])
        time.sleep(3)  # htop's first full scan is not part of the steady state
        sampler = subprocess.Popen([PYTHON, "-c", SAMPLER, str(REPO), str(paths.root),
                                    str(seconds)], stdout=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(1.5)  # let the sampler take its first (cold) snapshot
        h0, t0 = proc_cpu_ticks(htop_pid), time.monotonic()
        out, _ = sampler.communicate(timeout=seconds + 120)
        h1, t1 = proc_cpu_ticks(htop_pid), time.monotonic()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    result = json.loads(out)
    result["htop_cpu"] = (h1 - h0) / HZ
    result["htop_wall"] = t1 - t0
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--guests", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_procs: needs root (it makes cgroups)", file=sys.stderr)
        return 2

    from engine.cgroups import manager

    base = Path(tempfile.mkdtemp(prefix="vstui-bench-", dir="/tmp"))
    paths = Paths.from_root(base)
    names = [f"g{i:02d}" for i in range(args.guests)]
    rels = [paths.cgroup_name(n) for n in names]
    per = args.count // args.guests
    cg = manager()
    spawner: subprocess.Popen[str] | None = None
    groups: list[list[int]] = []
    try:
        for rel in rels:
            cg.create(rel)
        t = time.perf_counter()
        spawner = subprocess.Popen(
            [PYTHON, "-c", SPAWNER, str(REPO), SLEEP, json.dumps(rels), str(per)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert spawner.stdout is not None
        groups = json.loads(spawner.stdout.readline())
        total = sum(len(g) for g in groups)
        print(f"started {total} sleepers in {len(groups)} guest cgroups "
              f"in {time.perf_counter() - t:.1f} s ({SLEEP})")  # fmt: skip
        setup_guests(paths, groups, names)
        nprocs = len([n for n in os.listdir("/proc") if n.isdigit()])
        print(f"processes on the host now: {nprocs}\n")

        snap = bench_snapshot(paths)
        print("1. full snapshot (attribution + trees + CPU%) vs ps -eo ...")
        print(
            f"   vstui cold {snap['cold'] * 1000:7.1f} ms   ratio {snap['cold'] / snap['ps']:.2f}x"
        )
        print(
            f"   vstui warm {snap['warm'] * 1000:7.1f} ms   ratio {snap['warm'] / snap['ps']:.2f}x"
        )
        print(f"   ps -eo     {snap['ps'] * 1000:7.1f} ms   (target <= 0.5x)\n")

        vps = bench_vps(paths)
        extra = (vps["vps ax"] - vps["ps ax"]) * 1000
        print("2. vps ax vs ps ax (hyperfine medians, whole commands)")
        print(f"   vps ax {vps['vps ax'] * 1000:7.1f} ms   ps ax {vps['ps ax'] * 1000:7.1f} ms"
              f"   difference {extra:+.1f} ms (target <= +60 ms)\n")  # fmt: skip

        if args.seconds > 0:
            s = bench_sampling(paths, args.seconds)
            mine = s["cpu"] / s["wall"] * 100
            htop = s["htop_cpu"] / s["htop_wall"] * 100
            print(f"3. sampling once a second for {args.seconds} s, {s['procs']} processes")
            print(f"   vstui Observer {s['cpu']:6.2f} s CPU = {mine:5.1f} % of a core")
            print(f"   htop -d 10     {s['htop_cpu']:6.2f} s CPU = {htop:5.1f} % of a core"
                  f"   ratio {mine / htop if htop else float('inf'):.2f}x\n")  # fmt: skip
            print(f"4. sampler RSS {s['rss_kb'] / 1024:.1f} MB (peak {s['hwm_kb'] / 1024:.1f} MB)"
                  " (target < 60 MB)")  # fmt: skip
    finally:
        for group in groups:
            for pid in group:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if spawner is not None:
            if spawner.stdin:
                spawner.stdin.close()
            try:
                spawner.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spawner.kill()
                spawner.wait()
        for rel in rels:
            try:
                cg.kill_all(rel)
                cg.remove(rel)
            except Exception as exc:
                print(f"bench_procs: cleanup {rel}: {exc}", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
