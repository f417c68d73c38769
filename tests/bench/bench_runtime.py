"""Start / exec / stop of a guest, side by side with LXC and runc (run by hand, as root).

    .venv/bin/python -m tests.bench.bench_runtime [--runs N]

Prints the median wall time of:

- ``vserver NAME start`` (returns when init runs), ``vserver NAME exec
  /bin/true`` and ``vserver NAME stop`` on a busybox guest (and a
  V_NETMODE=host variant, no network namespace set-up), through the
  installed front end (``./setup.sh`` puts the compiled one in .venv/bin);
  "start" is the usual case, replayed from the boot cache, "first start"
  the one through Python that writes the cache (after a config change);
- ``lxc-execute -- /bin/true`` (whole container life) and ``lxc-attach --
  /bin/true`` on an LXC busybox container with ``lxc.net.0.type = empty``;
- ``runc run`` of /bin/true on a bundle made from the same busybox tree;

plus the supervisor's and vinit's memory per running guest (RSS/USS); then
the ratios the issue names (cached start against lxc-start and ``runc run``,
exec against lxc-attach) from alternating rounds, one of each in turn, with
each median its floor beside it: on a shared machine, load that comes and
goes then falls on every contender alike.
Everything lives under a temporary root and is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.config import update_config
from engine.paths import Paths
from engine.rootfs.binds import BUSYBOX, host_busybox
from engine.runtime import bootcache, state


def vserver_command() -> list[str]:
    """The installed console script, as administrators run it (``-m`` adds runpy's cost)."""
    script = Path(sys.executable).parent / "vserver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vstui.cli.vserver"]


def timed(cmd: list[str], **kw) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    return (time.perf_counter() - start) * 1000


def median_ms(func: Callable[[], float], runs: int) -> float:
    return statistics.median(func() for _ in range(runs))


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, USS) in KiB from smaps_rollup."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if ":" in line and line.split()[1].isdigit():
                key, rest = line.split(":", 1)
                values[key] = int(rest.split()[0])
    return values["Rss"], values["Private_Clean"] + values["Private_Dirty"]


# -- ours -------------------------------------------------------------------------------


def bench_ours(root: Path, runs: int, netmode: str | None) -> dict[str, float]:
    paths = Paths.from_root(root)
    name = f"bench{netmode or 'veth'}"
    vs = [*vserver_command(), "--root", str(root)]
    subprocess.run([*vs, name, "build", "-m", "busybox"], check=True, capture_output=True)
    if netmode:
        update_config(paths, name, {"V_NETMODE": netmode})
    starts, stops, first = [], [], []
    for _ in range(runs):
        bootcache.forget(paths, name)  # a start through Python, which writes the cache
        first.append(timed([*vs, name, "start"]))
        subprocess.run([*vs, name, "stop"], check=True)
    for _ in range(runs):
        starts.append(timed([*vs, name, "start"]))  # replayed by the compiled front end
        stops.append(timed([*vs, name, "stop"]))
    subprocess.run([*vs, name, "start"], check=True)
    try:
        execs = median_ms(lambda: timed([*vs, name, "exec", "/bin/true"]), runs * 3)
        run = state.read(paths, name)
        sup = memory_kib(run.supervisor_pid or 0)
        init = memory_kib(run.init_pid or 0)
    finally:
        subprocess.run([*vs, name, "stop"], check=True)
    return {
        "start": statistics.median(starts), "first": statistics.median(first),
        "exec": execs, "stop": statistics.median(stops),
        "sup_rss": sup[0], "sup_uss": sup[1], "init_rss": init[0], "init_uss": init[1],
    }  # fmt: skip


# -- peers --------------------------------------------------------------------------------


def make_lxc(base: Path) -> list[str]:
    """A busybox container without a network device; its -P/-n arguments."""
    lxcpath = base / "lxc"
    lxcpath.mkdir()
    p = ["-P", str(lxcpath), "-n", "bb"]
    subprocess.run(["lxc-create", *p, "-t", "busybox"], check=True, capture_output=True)
    config = lxcpath / "bb" / "config"
    text = "\n".join(
        line for line in config.read_text().splitlines() if not line.startswith("lxc.net.")
    )
    config.write_text(text + "\nlxc.net.0.type = empty\n")
    return p


def destroy_lxc(p: list[str], pivots_before: set[Path]) -> None:
    subprocess.run(["lxc-destroy", *p, "-f"], capture_output=True)
    # lxc-start leaves an empty lxc.pivot group in every hierarchy: ours to remove
    for pivot in set(Path("/sys/fs/cgroup").glob("*/lxc.pivot")) - pivots_before:
        try:
            pivot.rmdir()
        except OSError:
            pass


def lxc_start(p: list[str]) -> float:
    took = timed(["lxc-start", *p, "-d"])
    subprocess.run(["lxc-wait", *p, "-s", "RUNNING", "-t", "10"], check=True)
    return took


def bench_lxc(p: list[str], runs: int) -> dict[str, float]:
    out: dict[str, float] = {}
    out["execute"] = median_ms(lambda: timed(["lxc-execute", *p, "--", "/bin/true"]), runs)
    starts, stops = [], []
    for _ in range(runs):
        starts.append(lxc_start(p))
        stops.append(timed(["lxc-stop", *p, "-k"]))
    out["start"], out["stop"] = statistics.median(starts), statistics.median(stops)
    lxc_start(p)
    out["attach"] = median_ms(lambda: timed(["lxc-attach", *p, "--", "/bin/true"]), runs * 3)
    monitor = subprocess.run(["pgrep", "-f", f"lxc monitor.*{p[1]}"],
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    if monitor:
        out["monitor_rss"], out["monitor_uss"] = memory_kib(int(monitor[0]))
    subprocess.run(["lxc-stop", *p, "-k"], check=True)
    return out


def make_runc(base: Path, busybox_tree: Path) -> Callable[[], float]:
    """A bundle of the same busybox tree; the timed `runc run` of /bin/true in it."""
    bundle = base / "bundle"
    bundle.mkdir()
    shutil.copytree(busybox_tree, bundle / "rootfs", symlinks=True)
    # the guest's /bin/busybox is empty: every start binds the host's over it
    shutil.copy2(host_busybox(), bundle / "rootfs" / BUSYBOX.lstrip("/"))
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    spec["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(spec))
    counter = iter(range(10**6))
    state_root = str(base / "runc-state")
    return lambda: timed(["runc", "--root", state_root, "run", "-b", str(bundle),
                          f"bench{os.getpid()}-{next(counter)}"])  # fmt: skip


# -- the ratios the issue names, in alternating rounds -----------------------------------


def alternate(runs: int, steps: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Every step once per round, in turn: load that comes and goes on a shared
    machine falls on every contender alike (phases one after the other did not)."""
    out: dict[str, list[float]] = {key: [] for key in steps}
    for _ in range(runs):
        for key, step in steps.items():
            out[key].append(step())
    return out


def rounds(
    root: Path, p: list[str] | None, runc: Callable[[], float] | None, runs: int
) -> list[str]:
    """Cached start vs lxc-start vs runc run; exec vs lxc-attach: medians and floors."""
    vs = [*vserver_command(), "--root", str(root), "benchveth"]

    def ours() -> float:
        took = timed([*vs, "start"])  # replayed from the boot cache bench_ours wrote
        subprocess.run([*vs, "stop"], check=True)
        return took

    def lxc() -> float:
        took = lxc_start(p or [])
        subprocess.run(["lxc-stop", *(p or []), "-k"], check=True)
        return took

    steps = {"vserver start": ours, **({"lxc-start": lxc} if p else {}),
             **({"runc run": runc} if runc else {})}  # fmt: skip
    starts = alternate(runs, steps)
    subprocess.run([*vs, "start"], check=True)
    if p:
        lxc_start(p)
    try:
        execs = alternate(runs * 3, {"vserver exec": lambda: timed([*vs, "exec", "/bin/true"]),
                                     **({"lxc-attach": lambda: timed(["lxc-attach", *p, "--",
                                                                      "/bin/true"])}
                                        if p else {})})  # fmt: skip
    finally:
        subprocess.run([*vs, "stop"], check=True)
        if p:
            subprocess.run(["lxc-stop", *p, "-k"], check=True)
    out = [f"alternating rounds ({runs}; exec/attach {runs * 3}): median, fastest, ms"]
    for key, times in {**starts, **execs}.items():
        out.append(f"  {key:<16}{statistics.median(times):>8.1f}{min(times):>8.1f}")
    mine = statistics.median(starts["vserver start"])
    for peer in ("lxc-start", "runc run"):
        if peer in starts:
            ratio = mine / statistics.median(starts[peer])
            out.append(f"  ratio cached start / {peer}: {ratio:.2f}x")
    if "lxc-attach" in execs:
        ratio = statistics.median(execs["vserver exec"]) / statistics.median(execs["lxc-attach"])
        out.append(f"  ratio exec / lxc-attach: {ratio:.2f}x")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    base = Path(tempfile.mkdtemp(prefix="vstui-bench-", dir="/tmp"))
    pivots_before = set(Path("/sys/fs/cgroup").glob("*/lxc.pivot"))
    p = None
    try:
        ours = bench_ours(base / "root", runs, None)
        host = bench_ours(base / "root", runs, "host")
        tree = Paths.from_root(base / "root").guest_root("benchveth")
        p = make_lxc(base) if shutil.which("lxc-create") else None
        lxc = bench_lxc(p, runs) if p else None
        run_runc = make_runc(base, tree) if shutil.which("runc") else None
        runc = median_ms(run_runc, runs) if run_runc else None
        alternating = rounds(base / "root", p, run_runc, runs)
    finally:
        if p:
            destroy_lxc(p, pivots_before)
        subprocess.run([sys.executable, "-m", "vstui.cli.vserver", "--root", str(base / "root"),
                        "benchveth", "stop"], capture_output=True)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)
    print(f"median of {runs} runs (exec/attach: {runs * 3}), milliseconds")
    print(f"{'':28}{'vserver':>10}{'vserver(host net)':>19}{'lxc':>10}{'runc':>10}")
    lx = lxc or {}
    row = "{:28}{:>10.1f}{:>19.1f}{:>10}{:>10}"
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else "-"  # noqa: E731
    print(row.format("start (to init running)", ours["start"], host["start"],
                     fmt(lx.get("start")), "-"))  # fmt: skip
    print(row.format("  first start (Python)", ours["first"], host["first"], "-", "-"))
    print(row.format("exec /bin/true | attach", ours["exec"], host["exec"],
                     fmt(lx.get("attach")), "-"))  # fmt: skip
    print(row.format("stop", ours["stop"], host["stop"], fmt(lx.get("stop")), "-"))
    print(row.format("run /bin/true (whole life)", ours["start"] + ours["exec"] + ours["stop"],
                     host["start"] + host["exec"] + host["stop"], fmt(lx.get("execute")),
                     fmt(runc)))  # fmt: skip
    print(f"ratio exec / lxc-attach: {ours['exec'] / lx['attach']:.1f}x" if lx else "")
    print(f"memory per guest: supervisor RSS {ours['sup_rss']} KiB, USS {ours['sup_uss']} KiB; "
          f"vinit RSS {ours['init_rss']} KiB, USS {ours['init_uss']} KiB"
          + (f"; lxc monitor RSS {lx['monitor_rss']} KiB, USS {lx['monitor_uss']} KiB"
             if "monitor_rss" in lx else ""))  # fmt: skip

    print("\n".join(["", *alternating]))


if __name__ == "__main__":
    main()
