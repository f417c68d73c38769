"""Snapshot and clone of a guest holding 1 GiB, side by side (run by hand, as root).

    .venv/bin/python -m tests.bench.bench_storage [--runs N] [--size-mib M]

Builds, under one temporary root with its own pool, a busybox guest per
backend (btrfs in the pool, image, none) plus M MiB of data (default 1024)
in 1 MiB files, and prints the median wall time of, side by side in one run:

- ``vserver NAME snapshot create`` and ``vserver SRC clone DST`` through the
  installed CLI (as administrators run them: Python's start included), and
  the engine calls alone (engine.rootfs.snapshots.create / clone.clone);
- the same on an empty guest, to show whether the time depends on size;
- ``cp -a`` of the tree (what copying by hand costs);
- ``lxc-snapshot`` and ``lxc-copy -s`` of an LXC busybox container holding
  the same data, on a dir backing and on btrfs, where LXC is installed;
- for scale: the interpreter's own start (``python -c pass``) and
  ``vserver NAME status``, which every Python command pays too.

Targets (issue 17): btrfs snapshot and clone under 100 ms, whatever the size.
Everything lives under the temporary root and is removed at the end.
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
from collections.abc import Callable
from pathlib import Path

from engine.paths import Paths


def vserver_command() -> list[str]:
    script = Path(sys.executable).parent / "vserver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vstui.cli.vserver"]


def timed(func: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    func(*args)
    return (time.perf_counter() - start) * 1000


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_quiet(cmd: list[str]) -> None:
    """Run, whatever the exit status (``status`` of a stopped guest exits 3)."""
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fill(tree: Path, mib: int) -> None:
    """``mib`` files of 1 MiB (not zeros: nothing may be skipped as a hole)."""
    data = os.urandom(1 << 20)
    target = tree / "srv" / "data"
    target.mkdir(parents=True, exist_ok=True)
    for i in range(mib):
        (target / f"f{i:05d}").write_bytes(data[i % 64 :] + data[: i % 64])
    os.sync()


class Bench:
    def __init__(self, root: Path, runs: int, mib: int) -> None:
        self.root, self.runs, self.mib = root, runs, mib
        self.paths = Paths.from_root(root)
        self.vs = [*vserver_command(), "--root", str(root)]
        self.rows: list[tuple[str, str, float, float]] = []  # (what, tool, median, min)

    def record(self, what: str, tool: str, times: list[float]) -> None:
        self.rows.append((what, tool, statistics.median(times), min(times)))

    # -- ours ----------------------------------------------------------------
    def build(self, name: str, backend: str, mib: int) -> None:
        extra = {"btrfs": [], "image": ["--set", f"V_DISK={mib + 256}M"], "none": []}[backend]
        if backend != "btrfs":
            extra += ["--set", f"V_DISK_BACKEND={backend}"]
        run([*self.vs, name, "build", "-m", "busybox", *extra])
        if mib:
            from engine.config import load_guest
            from engine.rootfs import storage

            with storage.prepare_root(load_guest(self.paths, name), self.paths) as handle:
                fill(handle.path, mib)

    def ours(self, backend: str, name: str, label: str) -> None:
        from engine.rootfs import snapshots
        from engine.rootfs.clone import clone

        cli_snap, cli_clone, api_snap, api_clone = [], [], [], []
        for i in range(self.runs):
            cli_snap.append(timed(run, [*self.vs, name, "snapshot", "create", f"c{i}"]))
            api_snap.append(timed(snapshots.create, self.paths, name, f"a{i}"))
            cli_clone.append(timed(run, [*self.vs, name, "clone", f"{name}c{i}"]))
            api_clone.append(timed(clone, self.paths, name, f"{name}a{i}"))
            for snap in (f"c{i}", f"a{i}"):
                snapshots.delete(self.paths, name, snap)
            for copy in (f"{name}c{i}", f"{name}a{i}"):
                run([*self.vs, copy, "delete"])
        self.record(f"snapshot, {label}", f"vserver ({backend})", cli_snap)
        self.record(f"snapshot, {label}", f"engine call ({backend})", api_snap)
        self.record(f"clone, {label}", f"vserver ({backend})", cli_clone)
        self.record(f"clone, {label}", f"engine call ({backend})", api_clone)

    def baseline(self, name: str) -> None:
        py = [timed(run, [sys.executable, "-c", "pass"]) for _ in range(self.runs)]
        status_argv = [*self.vs, name, "status"]
        status = [timed(run_quiet, status_argv) for _ in range(self.runs)]
        self.record("start-up (for scale)", "python -c pass", py)
        self.record("start-up (for scale)", "vserver NAME status", status)

    def cp_a(self, name: str, label: str) -> None:
        source = self.paths.guest_root(name)
        times = []
        for i in range(self.runs):
            target = self.root / f"cp-{i}"
            times.append(timed(run, ["cp", "-a", str(source), str(target)]))
            shutil.rmtree(target)
        self.record(f"snapshot, {label}", "cp -a (by hand)", times)
        self.record(f"clone, {label}", "cp -a (by hand)", times)

    # -- LXC -----------------------------------------------------------------
    def lxc(self, label: str, backing: str, lxcpath: Path) -> None:
        if shutil.which("lxc-create") is None:
            return
        lxcpath.mkdir(parents=True, exist_ok=True)
        lp = ["-P", str(lxcpath)]
        name = f"bb{backing}"
        make = ["lxc-create", *lp, "-n", name, "-t", "busybox", "-B", backing]
        if subprocess.run(make, capture_output=True).returncode != 0:
            print(f"lxc: cannot create a {backing} container here; skipped", file=sys.stderr)
            return
        try:
            fill(lxcpath / name / "rootfs", self.mib)
            snaps, copies = [], []
            for i in range(self.runs):
                snaps.append(timed(run, ["lxc-snapshot", *lp, "-n", name]))
                copies.append(timed(run, ["lxc-copy", *lp, "-n", name, "-N", f"{name}s{i}", "-s"]))
                run(["lxc-snapshot", *lp, "-n", name, "-d", "snap0"])
                run(["lxc-destroy", *lp, "-n", f"{name}s{i}"])
            self.record(f"snapshot, {label}", f"lxc-snapshot ({backing})", snaps)
            self.record(f"clone, {label}", f"lxc-copy -s ({backing})", copies)
        finally:
            subprocess.run(["lxc-destroy", *lp, "-n", name, "-s"], capture_output=True)

    def show(self) -> None:
        base = {what: ms for what, tool, ms, _ in self.rows if tool.startswith("cp -a")}
        print(f"{'operation':<26} {'tool':<26} {'median ms':>10} {'min ms':>8} {'x cp -a':>8}")
        for what, tool, ms, least in self.rows:
            ratio = f"{ms / base[what]:.3f}" if base.get(what) else "-"
            print(f"{what:<26} {tool:<26} {ms:>10.1f} {least:>8.1f} {ratio:>8}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_storage: run as root", file=sys.stderr)
        return 2
    # as ./setup.sh leaves it: with PYTHONDONTWRITEBYTECODE set, an edited module
    # would be compiled again by every command timed here
    repo = Path(__file__).resolve().parents[2]
    run([sys.executable, "-m", "compileall", "-q", str(repo / "engine"), str(repo / "vstui")])
    root = Path(tempfile.mkdtemp(prefix="vstui-bench-storage-", dir="/var/tmp"))
    bench = Bench(root, args.runs, args.size_mib)
    label, small = f"{args.size_mib} MiB guest", "empty guest"
    pool_size = f"{max(2048, args.size_mib * 3)}M"
    try:
        run([*bench.vs, "--pool", "create", pool_size])
        bench.build("bt", "btrfs", args.size_mib)
        bench.build("bt0", "btrfs", 0)
        bench.build("im", "image", args.size_mib)
        bench.build("pl", "none", args.size_mib)
        bench.baseline("bt0")
        bench.ours("btrfs", "bt0", small)
        bench.ours("btrfs", "bt", label)
        bench.ours("image", "im", label)
        bench.ours("none", "pl", label)
        bench.cp_a("pl", label)
        bench.lxc(label, "dir", root / "lxc-dir")
        bench.lxc(label, "btrfs", bench.paths.pool_dir / "lxc")
        bench.show()
        print(f"(each a median of {args.runs}; shared machine: compare ratios, not absolutes)")
    finally:
        for name in ("bt", "bt0", "im", "pl"):
            subprocess.run([*bench.vs, name, "delete", "--force"], capture_output=True)
        subprocess.run([*bench.vs, "--pool", "remove"], capture_output=True)
        subprocess.run(["umount", "-R", str(bench.paths.pool_dir)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
