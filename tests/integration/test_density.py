"""Many guests on one host: what one guest does never costs the others.

- a guest's boot cache survives other guests' first starts, builds and
  deletes (the compiled fast path is still taken);
- vinit and the busybox binary of two running guests are one inode on the
  host each (bound read-only from one copy, page cache shared);
- killing the supervisors leaves every guest running and manageable;
- an idle guest's supervision (the supervisor and its console pump) costs
  under 1 MB PSS and wakes up never;
- ``vps ax`` shows one line per process (no supervisor spills over lines).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.helpers import helper_path
from engine.paths import Paths
from engine.runtime import state
from engine.runtime.build import build
from tests.integration.test_faststart import compiled, ok, python_cli
from tests.integration.test_runtime import wait_for

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def front() -> str:
    build()
    return str(helper_path("vserver"))


def busybox(paths: Paths, *names: str) -> None:
    for name in names:
        ok(python_cli(paths, name, "build", "-m", "busybox"))


def test_a_new_guests_first_start_keeps_the_other_caches(front: str, vroot: Paths) -> None:
    busybox(vroot, "a", "b")
    for name in ("a", "b"):
        ok(python_cli(vroot, name, "start"))  # through Python: writes its cache
        ok(python_cli(vroot, name, "stop"))
    try:
        busybox(vroot, "new")
        ok(python_cli(vroot, "new", "start"))  # allocates a context id: the shared table changes
        ok(compiled(front, vroot, "a", "start"))  # 125 = the cache was no longer valid
        ok(python_cli(vroot, "new", "stop"))
        ok(python_cli(vroot, "new", "delete"))  # the table changes again
        ok(compiled(front, vroot, "b", "start"))
    finally:
        for name in ("a", "b", "new"):
            python_cli(vroot, name, "stop")


def test_a_changed_context_id_is_never_replayed(front: str, vroot: Paths) -> None:
    busybox(vroot, "a")
    ok(python_cli(vroot, "a", "start"))
    ok(python_cli(vroot, "a", "stop"))
    table = vroot.state_dir / "xids"
    xid = table.read_text().split()[1]
    table.write_text(f"a {int(xid) + 7}\n")  # as after a delete and a new allocation
    assert compiled(front, vroot, "a", "start").returncode == 125
    table.write_text(f"other 40001\na {xid}\n")  # its own line again, among others
    try:
        ok(compiled(front, vroot, "a", "start"))
    finally:
        python_cli(vroot, "a", "stop")


def host_inode(pid: int, guest_path: str) -> tuple[int, int]:
    """(dev, ino) on the host of what ``pid`` sees at ``guest_path``."""
    st = os.stat(f"/proc/{pid}/root{guest_path}")
    return st.st_dev, st.st_ino


def test_busybox_and_vinit_of_two_running_guests_are_one_host_inode(
    front: str, vroot: Paths
) -> None:
    busybox(vroot, "a", "b")
    assert vroot.guest_root("a").joinpath("bin/busybox").stat().st_size == 0  # no copy
    real = os.stat(os.path.realpath("/bin/busybox"))
    vinit = os.stat(helper_path("vinit"))
    ours = {"/bin/busybox": (real.st_dev, real.st_ino), "/run/.vinit": (vinit.st_dev, vinit.st_ino)}
    try:
        for name in ("a", "b"):
            ok(python_cli(vroot, name, "start"))
        inits = [state.read(vroot, name).init_pid for name in ("a", "b")]
        for path, inode in ours.items():
            assert {host_inode(pid, path) for pid in inits} == {inode}, path
        for name in ("a", "b"):
            for path in ours:
                out = compiled(front, vroot, name, "exec", "sh", "-c",
                               f"echo x > {path}; rm -f {path}; echo still")  # fmt: skip
                assert out.stdout.strip() == "still" and "Read-only" in out.stderr, path
            out = compiled(front, vroot, name, "exec", "sh", "-c", "echo x > /proc/1/exe")
            assert out.returncode != 0
        assert os.stat("/bin/busybox").st_size == real.st_size
        assert os.stat(helper_path("vinit")).st_size == vinit.st_size
        ok(python_cli(vroot, "a", "stop"))
        ok(compiled(front, vroot, "a", "start"))  # the cached start binds the same copies
        pid = state.read(vroot, "a").init_pid
        assert {path: host_inode(pid, path) for path in ours} == ours
    finally:
        for name in ("a", "b"):
            python_cli(vroot, name, "stop")


def test_vps_shows_one_line_per_process(vroot: Paths) -> None:
    busybox(vroot, "a", "b")
    try:
        for name in ("a", "b"):
            ok(python_cli(vroot, name, "start"))
        vps = Path(sys.executable).parent / "vps"
        out = subprocess.run([str(vps), "--root", str(vroot.root), "ax"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        lines = out.splitlines()[1:]
        pids = [line.split()[0] for line in lines]
        assert all(p.isdigit() for p in pids) and len(pids) == len(set(pids))
        for name in ("a", "b"):
            sup = str(state.read(vroot, name).supervisor_pid)
            assert pids.count(sup) == 1
    finally:
        for name in ("a", "b"):
            python_cli(vroot, name, "stop")


def test_killed_supervisors_leave_every_guest_running_and_manageable(
    front: str, vroot: Paths
) -> None:
    names = ("a", "b", "c")
    busybox(vroot, *names)
    try:
        for name in names:
            ok(python_cli(vroot, name, "start"))
        runs = {name: state.read(vroot, name) for name in names}
        for run in runs.values():
            os.kill(run.supervisor_pid, signal.SIGKILL)
        for name, run in runs.items():
            assert wait_for(lambda n=name: state.read(vroot, n).supervisor_pid is None)
            assert state.read(vroot, name).init_pid == run.init_pid
            assert ok(compiled(front, vroot, name, "exec", "hostname")).strip() == name
            assert ok(python_cli(vroot, name, "status"))
        for name in names:
            ok(python_cli(vroot, name, "stop"))
            assert not vroot.run_dir(name).exists()
            assert not state.alive(runs[name].init_pid, None)
    finally:
        for name in names:
            python_cli(vroot, name, "stop")


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(w) for w in f.read().split()}


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("Pss:"))


def switches(pid: int) -> int:
    """Context switches so far: every wake-up of an idle process is one."""
    with open(f"/proc/{pid}/status") as f:
        return sum(int(ln.split()[1]) for ln in f if "ctxt_switches" in ln)


def test_an_idle_guests_supervision_costs_under_a_megabyte_and_no_wakeup(vroot: Paths) -> None:
    names = ("a", "b")
    busybox(vroot, *names)
    try:
        for name in names:
            ok(python_cli(vroot, name, "start"))
        runs = [state.read(vroot, name) for name in names]
        views = [vroot.run_dir(name) / "meminfo" for name in names]
        first = [view.stat().st_mtime_ns for view in views]

        def settled() -> bool:  # the view rendered after the boot, the render child gone
            rendered = [view.stat().st_mtime_ns for view in views]
            quiet = all(len(children(run.supervisor_pid)) == 2 for run in runs)
            return quiet and all(now != then for now, then in zip(rendered, first, strict=True))

        assert wait_for(settled)
        ours = {run.supervisor_pid for run in runs}
        ours |= {pid for run in runs for pid in children(run.supervisor_pid) - {run.init_pid}}
        assert len(ours) == 4  # a supervisor and a console pump per guest
        assert sum(pss_kib(pid) for pid in ours) <= 1024 * len(runs)
        before = {pid: switches(pid) for pid in ours}
        time.sleep(3.0)  # the window watched, not a wait for something
        assert {pid: switches(pid) for pid in ours} == before
    finally:
        for name in names:
            python_cli(vroot, name, "stop")
