"""Boot to ``running`` and clean stop of a systemd guest, vstui vs LXC on one tree (by hand, root).

    ./setup.sh bench && .venv/bin/python -m tests.bench.bench_systemd [--runs N] [--suites ...]

For each suite (bookworm: systemd 252, trixie: 257) one guest is built with
the ``debootstrap:SUITE`` template (the cached tree, see
tests/integration/test_systemd_guest.py) and the SAME tree is then booted,
alternately, by vstui and by LXC (``lxc.rootfs.path`` pointing at it,
Debian's stock LXC config, ``lxc.net.0.type = empty``):

- boot: ``vserver NAME start`` then ``vserver NAME exec systemctl
  is-system-running --wait`` vs ``lxc-start -d`` then ``lxc-attach --
  systemctl is-system-running --wait``, until the answer;
- stop: ``vserver NAME stop`` vs ``lxc-stop`` (both a clean systemd halt).

Prints medians and the ratio vstui/LXC (below 1 = vstui faster). The
machine is shared: only ratios from one run mean something.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from engine.paths import Paths
from tests.bench.bench_runtime import remove_pivots, vserver_command

CACHE = "/var/cache/vstui-tests"
INCLUDE = "nginx,openssh-server,cron,libpam-systemd,procps"
LXC_CONFIG = """\
lxc.include = /usr/share/lxc/config/debian.common.conf
lxc.arch = linux64
lxc.rootfs.path = dir:{tree}
lxc.uts.name = {name}
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
"""


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)  # type: ignore[call-overload]


WAIT = ["systemctl", "is-system-running", "--wait"]


def timed(*cmds: list[str]) -> tuple[float, str]:
    """Wall time (ms) of the commands one after the other; the last one's output.

    The last is retried until it answers: right after ``lxc-start -d`` the
    guest's systemd may not run yet ("Failed to connect to bus").
    """
    start = time.perf_counter()
    for cmd in cmds[:-1]:
        run(cmd)
    while True:
        done = subprocess.run(cmds[-1], capture_output=True, text=True)
        if done.stdout.strip() in ("running", "degraded", "stopping"):
            break
        time.sleep(0.01)
    return (time.perf_counter() - start) * 1000, done.stdout.strip()


class Peers:
    def __init__(self, root: Path, suite: str) -> None:
        self.root = root
        self.name = f"b{suite[:4]}"
        self.vs = [*vserver_command(), "--root", str(root)]
        self.lxc_path = str(root / "lxc")
        env_build = [*self.vs, self.name, "build", "-t", f"debootstrap:{suite}",
                     "--include", INCLUDE]  # fmt: skip
        run(env_build, env={**os.environ, "VSTUI_CACHE_DIR": CACHE}, timeout=1800)
        tree = Paths.from_root(root).guest_root(self.name)
        Path(self.lxc_path, self.name).mkdir(parents=True)
        config = LXC_CONFIG.format(tree=tree, name=self.name)
        Path(self.lxc_path, self.name, "config").write_text(config)

    def lxc(self, tool: str, *args: str) -> list[str]:
        return [tool, "-P", self.lxc_path, "-n", self.name, *args]

    def boot_vstui(self) -> tuple[float, str]:
        return timed([*self.vs, self.name, "start"], [*self.vs, self.name, "exec", *WAIT])

    def stop_vstui(self) -> float:
        return stopped([*self.vs, self.name, "stop"])

    def boot_lxc(self) -> tuple[float, str]:
        return timed(self.lxc("lxc-start", "-d"), self.lxc("lxc-attach", "--", *WAIT))

    def stop_lxc(self) -> float:
        return stopped(self.lxc("lxc-stop"))


def stopped(cmd: list[str]) -> float:
    start = time.perf_counter()
    run(cmd)
    return (time.perf_counter() - start) * 1000


def bench(root: Path, suite: str, runs: int) -> dict[str, list[float]]:
    peers = Peers(root, suite)
    times: dict[str, list[float]] = {k: [] for k in ("vs boot", "vs stop", "lxc boot", "lxc stop")}
    states = set()
    for _ in range(runs):
        for who in ("vs", "lxc"):
            boot, status = getattr(peers, f"boot_{'vstui' if who == 'vs' else who}")()
            states.add(f"{who}:{status}")
            time.sleep(1.0)  # let the guest settle: the stop measured is a steady system's
            stop = getattr(peers, f"stop_{'vstui' if who == 'vs' else who}")()
            times[f"{who} boot"].append(boot)
            times[f"{who} stop"].append(stop)
    print(f"  states seen: {', '.join(sorted(states))}")
    return times


def report(suite: str, times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    for what in ("boot", "stop"):
        ours, theirs = med[f"vs {what}"], med[f"lxc {what}"]
        print(f"  {suite:9} {what:5}  vstui {ours:7.0f} ms   lxc {theirs:7.0f} ms   "
              f"ratio {ours / theirs:4.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--suites", nargs="*", default=["bookworm", "trixie"])
    args = parser.parse_args()
    if shutil.which("lxc-start") is None:
        raise SystemExit("bench_systemd needs LXC: ./setup.sh bench")
    root = Path(tempfile.mkdtemp(prefix="vstui-bench-sd-", dir="/var/tmp"))
    print(f"boot to `running` and clean stop, medians of {args.runs} (shared machine)")
    pivots_before = set(Path("/sys/fs/cgroup").glob("*/lxc.pivot"))
    try:
        for suite in args.suites:
            report(suite, bench(root, suite, args.runs))
    finally:
        vs = [*vserver_command(), "--root", str(root)]
        for suite in args.suites:
            subprocess.run([*vs, f"b{suite[:4]}", "stop"], capture_output=True)
            subprocess.run(["lxc-stop", "-P", str(root / "lxc"), "-n", f"b{suite[:4]}", "-k"],
                           capture_output=True)  # fmt: skip
        remove_pivots(pivots_before)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
