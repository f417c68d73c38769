"""Start / exec / stop of a guest, side by side with LXC and runc (run by hand, as root).

    .venv/bin/python -m tests.bench.bench_runtime [--runs N] [--ends-only]

Prints the median wall time of:

- ``vserver NAME start`` (returns when init runs), ``vserver NAME exec
  /bin/true`` and ``vserver NAME stop`` on a busybox guest (and a
  V_NETMODE=host variant, no network namespace set-up, and a privileged
  V_USERNS=no one beside the default user-namespaced guest), through the
  installed front end (``./setup.sh`` puts the compiled one in .venv/bin);
  "start" is the usual case, replayed from the boot cache, "first start"
  the one through Python that writes the cache (after a config change);
- ``lxc-execute -- /bin/true`` (whole container life) and ``lxc-attach --
  /bin/true`` on an LXC busybox container with ``lxc.net.0.type = empty``;
- ``runc run`` of /bin/true on a bundle made from the same busybox tree;

plus the supervisor's and vinit's memory per running guest (RSS/USS); then
the ratios the issues name (cached start against lxc-start and ``runc run``,
exec against lxc-attach, the user-namespaced guest against the privileged
one, stop against ``lxc-stop -k``, a one-shot guest's whole life against
``lxc-execute``) from alternating rounds, one of each in turn, with
each median its floor beside it: on a shared machine, load that comes and
goes then falls on every contender alike. The rounds pair the two sides by
the network work each start does (NETWORKS; printed with the figures):

- a network namespace holding only lo (our default V_NETMODE=veth guest
  without addresses, the usual cached start; LXC ``lxc.net.0.type = empty``);
- no network namespace (V_NETMODE=host; LXC ``lxc.net.0.type = none``);
- a veth pair with one 198.18.0.0/15 address in the guest, the host's end
  attached to nothing (ours: IPROOT, which also sets the host end's routes
  and the guest's filter, and is started through Python: a guest with
  addresses is not replayed from the boot cache; LXC: ``lxc.net.0.type =
  veth`` without ``lxc.net.0.link`` and ``lxc.net.0.ipv4.address``).
The stops end alike: ``lxc-stop -k`` returns when LXC's monitor closes the
command connection, which it does by exiting (src/lxc/commands.c
lxc_cmd_stop: no answer, the connection's end), after init's death, the
removal of its cgroups and the state STOPPED (start.c lxc_end); ``vserver
NAME stop`` when init, the guest's cgroups, its supervisor and its run
files are gone. In both the kernel frees the namespaces' last parts (a
network namespace's clean-up) afterwards, on its own.
``--ends-only`` runs only the last rounds (stop against ``lxc-stop -k``, the
one-shot life against ``lxc-execute``) on the netns+lo pair.
Everything lives under a temporary root and is removed at the end. Its
``run`` directory (our run files and sockets, written at every start) is a
tmpfs, as /run is on a systemd host; ``--run-on-disk`` leaves it on the
temporary directory's file system (on this VM /run itself is not a tmpfs).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from engine.config import update_config
from engine.paths import Paths
from engine.rootfs.binds import BUSYBOX, host_busybox
from engine.runtime import bootcache, state

# our guest of each network pair (NETWORKS), and the netns+lo guest privileged
# (V_USERNS=no) beside the default user-namespaced one (issue 16: within 10%)
GUESTS = {"netns+lo": "benchveth", "host net": "benchhost", "veth+IP": "benchaddr",
          "privileged": "benchpriv"}  # fmt: skip


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


def bench_ours(root: Path, runs: int, key: str, values: dict[str, str]) -> dict[str, float]:
    paths = Paths.from_root(root)
    name = GUESTS[key]
    vs = [*vserver_command(), "--root", str(root)]
    subprocess.run([*vs, name, "build", "-m", "busybox"], check=True, capture_output=True)
    if values:
        update_config(paths, name, values)
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


def free_address() -> str:
    """A 198.18.x.y address no route on the host uses (others' guests run beside us)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    while True:
        address = f"198.18.{random.randint(200, 249)}.{random.randint(1, 63) * 4 + 2}"
        if address.rsplit(".", 1)[0] + "." not in routes:
            return address


# the network each pair of contenders sets up: (ours, LXC's lxc.net.0.* lines)
NETWORKS = {
    "netns+lo": ("V_NETMODE=veth, no address (cached)", ["type = empty"]),
    "host net": ("V_NETMODE=host (cached)", ["type = none"]),
    "veth+IP": ("IPROOT=ADDR/30: veth, routes, filter (Python)",
                ["type = veth", "flags = up", "ipv4.address = ADDR/30"]),
}  # fmt: skip


def make_lxc(base: Path, name: str, net: list[str]) -> list[str]:
    """A busybox container with ``lxc.net.0.KEY = VALUE`` lines ``net``; its -P/-n."""
    lxcpath = base / "lxc"
    lxcpath.mkdir(exist_ok=True)
    p = ["-P", str(lxcpath), "-n", name]
    subprocess.run(["lxc-create", *p, "-t", "busybox"], check=True, capture_output=True)
    config = lxcpath / name / "config"
    text = "\n".join(
        line for line in config.read_text().splitlines() if not line.startswith("lxc.net.")
    )
    config.write_text("\n".join([text, *(f"lxc.net.0.{line}" for line in net), ""]))
    return p


def destroy_lxc(p: list[str]) -> None:
    subprocess.run(["lxc-destroy", *p, "-f"], capture_output=True)


def remove_pivots(pivots_before: set[Path], timeout: float = 5.0) -> None:
    """The lxc.pivot group LXC's monitor makes in every hierarchy (it moves itself
    there to remove its own group, then exits) and leaves: removed once empty
    (EBUSY waited out, up to ``timeout``). Only those made since ``pivots_before``:
    one there before may be another LXC user's; a leftover of an earlier bench
    (bench_systemd kept its own until now) then stays until removed by hand."""
    deadline = time.monotonic() + timeout
    for pivot in set(Path("/sys/fs/cgroup").glob("*/lxc.pivot")) - pivots_before:
        while True:
            try:
                pivot.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                print(f"{pivot} left behind: {e.strerror}", file=sys.stderr)
            break


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
    machine falls on every contender alike (phases one after the other did not).
    Each round in its own random order: the kernel's deferred work after a stop
    (network namespace and cgroup clean-up) falls on whichever step comes next,
    so no contender always follows the same one."""
    out: dict[str, list[float]] = {key: [] for key in steps}
    for _ in range(runs):
        for key in random.sample(list(steps), len(steps)):
            out[key].append(steps[key]())
    return out


def make_addressed(root: Path, address: str) -> None:
    """Our guest of the veth+IP pair: a routed veth with one address."""
    vs = [*vserver_command(), "--root", str(root), GUESTS["veth+IP"]]
    subprocess.run([*vs, "build", "-m", "busybox"], check=True, capture_output=True)
    update_config(Paths.from_root(root), GUESTS["veth+IP"], {"IPROOT": f"{address}/30"})


def rounds(
    root: Path, lxcs: dict[str, list[str]], runc: Callable[[], float] | None, runs: int
) -> list[str]:
    """Each of ours vs LXC on the same network, and runc; exec vs lxc-attach."""
    vs = [*vserver_command(), "--root", str(root)]

    def ours(name: str) -> Callable[[], float]:
        def step() -> float:
            took = timed([*vs, name, "start"])
            subprocess.run([*vs, name, "stop"], check=True)
            return took

        return step

    def lxc(p: list[str]) -> Callable[[], float]:
        def step() -> float:
            took = lxc_start(p)
            subprocess.run(["lxc-stop", *p, "-k"], check=True)
            return took

        return step

    steps: dict[str, Callable[[], float]] = {}
    for key, name in GUESTS.items():
        steps[f"vserver {key}"] = ours(name)
        if key in lxcs:
            steps[f"lxc-start {key}"] = lxc(lxcs[key])
    if runc:
        steps["runc run"] = runc
    starts = alternate(runs, steps)
    execs = exec_rounds({"vserver exec": [*vs, GUESTS["netns+lo"]],
                         "V_USERNS=no exec": [*vs, GUESTS["privileged"]]},
                        lxcs.get("netns+lo"), runs * 3)  # fmt: skip
    ends = end_rounds([*vs, GUESTS["netns+lo"]], lxcs.get("netns+lo"), runs)
    out = [f"alternating rounds ({runs}; exec/attach {runs * 3}): median, fastest, ms",
           "  (life: start, exec /bin/true, stop timed as one; lxc-execute /bin/true)"]  # fmt: skip
    for key, times in {**starts, **execs, **ends}.items():
        out.append(f"  {key:<22}{statistics.median(times):>8.1f}{min(times):>8.1f}")
    out += [f"  {key}: vserver {mine}; lxc {', '.join(f'lxc.net.0.{x}' for x in theirs)}"
            for key, (mine, theirs) in NETWORKS.items()]  # fmt: skip
    ratio = lambda a, b: statistics.median(a) / statistics.median(b)  # noqa: E731
    for key in GUESTS:
        if f"lxc-start {key}" in starts:
            mine, theirs = starts[f"vserver {key}"], starts[f"lxc-start {key}"]
            out.append(f"  ratio vserver / lxc-start, {key}: {ratio(mine, theirs):.2f}x")
    if "runc run" in starts:
        out.append("  ratio cached start (netns+lo) / runc run: "
                   f"{ratio(starts['vserver netns+lo'], starts['runc run']):.2f}x")  # fmt: skip
    out += end_ratios(ends)
    if "lxc-attach" in execs:
        out.append(f"  ratio exec / lxc-attach: "
                   f"{ratio(execs['vserver exec'], execs['lxc-attach']):.2f}x")  # fmt: skip
    out.append("  ratio userns / V_USERNS=no: start "
               f"{ratio(starts['vserver netns+lo'], starts['vserver privileged']):.2f}x, exec "
               f"{ratio(execs['vserver exec'], execs['V_USERNS=no exec']):.2f}x")  # fmt: skip
    return out


def exec_rounds(
    guests: dict[str, list[str]], p: list[str] | None, runs: int
) -> dict[str, list[float]]:
    """``vserver NAME exec /bin/true`` per guest and lxc-attach in turn, all running."""
    for vs in guests.values():
        subprocess.run([*vs, "start"], check=True)
    if p:
        lxc_start(p)
    steps = {label: partial(timed, [*vs, "exec", "/bin/true"]) for label, vs in guests.items()}
    if p:
        steps["lxc-attach"] = partial(timed, ["lxc-attach", *p, "--", "/bin/true"])
    try:
        return alternate(runs, steps)
    finally:
        for vs in guests.values():
            subprocess.run([*vs, "stop"], check=True)
        if p:
            subprocess.run(["lxc-stop", *p, "-k"], check=True)


def end_ratios(ends: dict[str, list[float]]) -> list[str]:
    """Stop against lxc-stop -k, a one-shot life against lxc-execute (medians)."""
    out = []
    for mine_key, peer in (("vserver stop", "lxc-stop -k"), ("vserver life", "lxc-execute")):
        if peer in ends:
            ratio = statistics.median(ends[mine_key]) / statistics.median(ends[peer])
            out.append(f"  ratio {mine_key.split()[1]} (netns+lo) / {peer}: {ratio:.2f}x")
    return out


def ends_only(root: Path, p: list[str] | None, runs: int) -> list[str]:
    """--ends-only: end_rounds alone, on the netns+lo pair (the guest's boot cache
    written by one start through Python first)."""
    vs = [*vserver_command(), "--root", str(root), GUESTS["netns+lo"]]
    subprocess.run([*vs, "build", "-m", "busybox"], check=True, capture_output=True)
    for step in ("start", "stop"):
        subprocess.run([*vs, step], check=True)
    phases: dict[str, list[float]] = {}
    ends = end_rounds(vs, p, runs, phases)
    out = [f"end rounds ({runs}): median, fastest, ms; load {os.getloadavg()[0]:.1f}",
           "  (life: start, exec /bin/true, stop timed as one; lxc-execute /bin/true)"]  # fmt: skip
    for key, times in ends.items():
        out.append(f"  {key:<22}{statistics.median(times):>8.1f}{min(times):>8.1f}")
    out.append("  life's phases: median, p90, max, ms")
    for key, times in phases.items():
        out.append(f"    {key:<20}{statistics.median(times):>8.1f}{p90(times):>8.1f}"
                   f"{max(times):>8.1f}")  # fmt: skip
    return out + end_ratios(ends)


def p90(times: list[float]) -> float:
    """The 90th percentile (nearest rank)."""
    ordered = sorted(times)
    return ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]


LIFE_PHASES = ("start", "exec", "stop")


def end_rounds(
    vs: list[str], p: list[str] | None, runs: int, phases: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """A stop (started untimed) against lxc-stop -k; a one-shot guest's whole life as
    a script runs it (start, exec, stop) against lxc-execute. ``phases`` (when given)
    gets each life's start, exec and stop times, per phase in run order."""

    def stop() -> float:
        subprocess.run([*vs, "start"], check=True)
        return timed([*vs, "stop"])

    def life() -> float:
        marks = [time.perf_counter()]
        for step in (["start"], ["exec", "/bin/true"], ["stop"]):
            subprocess.run([*vs, *step], check=True, stdout=subprocess.DEVNULL)
            marks.append(time.perf_counter())
        if phases is not None:
            for key, a, b in zip(LIFE_PHASES, marks, marks[1:], strict=False):
                phases.setdefault(key, []).append((b - a) * 1000)
        return (marks[-1] - marks[0]) * 1000

    def lxc_stop() -> float:
        lxc_start(p or [])
        return timed(["lxc-stop", *(p or []), "-k"])

    steps = {"vserver stop": stop, "vserver life": life}
    if p:
        steps["lxc-stop -k"] = lxc_stop
        steps["lxc-execute"] = lambda: timed(["lxc-execute", *p, "--", "/bin/true"])
    return alternate(runs, steps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--run-on-disk", action="store_true")
    parser.add_argument("--ends-only", action="store_true")
    args = parser.parse_args()
    runs = args.runs
    base = Path(tempfile.mkdtemp(prefix="vstui-bench-", dir="/tmp"))
    run_dir = base / "root" / "run"
    run_dir.mkdir(parents=True)
    if not args.run_on_disk:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=755", "vstui-bench",
                        str(run_dir)], check=True)  # fmt: skip
    pivots_before = set(Path("/sys/fs/cgroup").glob("*/lxc.pivot"))
    lxcs: dict[str, list[str]] = {}
    try:
        if args.ends_only:
            if shutil.which("lxc-create"):
                lxcs["netns+lo"] = make_lxc(base, "bb0", NETWORKS["netns+lo"][1])
            print("\n".join(ends_only(base / "root", lxcs.get("netns+lo"), runs)))
            return
        ours = bench_ours(base / "root", runs, "netns+lo", {})
        host = bench_ours(base / "root", runs, "host net", {"V_NETMODE": "host"})
        priv = bench_ours(base / "root", runs, "privileged", {"V_USERNS": "no"})
        ours_address, lxc_address = free_address(), free_address()
        make_addressed(base / "root", ours_address)
        tree = Paths.from_root(base / "root").guest_root("benchveth")
        if shutil.which("lxc-create"):
            for k, (key, (_, net)) in enumerate(NETWORKS.items()):
                net = [line.replace("ADDR", lxc_address) for line in net]
                lxcs[key] = make_lxc(base, f"bb{k}", net)
        lxc = bench_lxc(lxcs["netns+lo"], runs) if lxcs else None
        run_runc = make_runc(base, tree) if shutil.which("runc") else None
        runc = median_ms(run_runc, runs) if run_runc else None
        alternating = rounds(base / "root", lxcs, run_runc, runs)
    finally:
        for p in lxcs.values():
            destroy_lxc(p)
        remove_pivots(pivots_before)
        for name in GUESTS.values():
            subprocess.run([sys.executable, "-m", "vstui.cli.vserver", "--root",
                            str(base / "root"), name, "stop"], capture_output=True)  # fmt: skip
        if not args.run_on_disk:
            subprocess.run(["umount", "-l", str(run_dir)], check=False)
        shutil.rmtree(base, ignore_errors=True)
    print(f"median of {runs} runs (exec/attach: {runs * 3}), milliseconds; "
          f"lxc: lxc.net.0.type = empty; run files on "
          f"{'disk' if args.run_on_disk else 'tmpfs'}; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'':28}{'vserver':>10}{'vserver(host net)':>19}{'V_USERNS=no':>13}{'lxc':>10}"
          f"{'runc':>10}")  # fmt: skip
    lx = lxc or {}
    row = "{:28}{:>10.1f}{:>19.1f}{:>13.1f}{:>10}{:>10}"
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else "-"  # noqa: E731
    life = lambda r: r["start"] + r["exec"] + r["stop"]  # noqa: E731
    print(row.format("start (to init running)", ours["start"], host["start"], priv["start"],
                     fmt(lx.get("start")), "-"))  # fmt: skip
    print(row.format("  first start (Python)", ours["first"], host["first"], priv["first"],
                     "-", "-"))  # fmt: skip
    print(row.format("exec /bin/true | attach", ours["exec"], host["exec"], priv["exec"],
                     fmt(lx.get("attach")), "-"))  # fmt: skip
    print(row.format("stop", ours["stop"], host["stop"], priv["stop"], fmt(lx.get("stop")), "-"))
    print(row.format("run /bin/true (whole life)", life(ours), life(host), life(priv),
                     fmt(lx.get("execute")), fmt(runc)))  # fmt: skip
    print(f"ratio exec / lxc-attach: {ours['exec'] / lx['attach']:.1f}x" if lx else "")
    print(f"memory per guest: supervisor RSS {ours['sup_rss']} KiB, USS {ours['sup_uss']} KiB; "
          f"vinit RSS {ours['init_rss']} KiB, USS {ours['init_uss']} KiB"
          + (f"; lxc monitor RSS {lx['monitor_rss']} KiB, USS {lx['monitor_uss']} KiB"
             if "monitor_rss" in lx else ""))  # fmt: skip

    print("\n".join(["", *alternating]))


if __name__ == "__main__":
    main()
