"""engine.cgroups on the real kernel: create, limit, attach, stats, kill, remove."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from engine.cgroups import Limits, manager
from engine.errors import KernelError
from engine.paths import Paths

pytestmark = pytest.mark.root

FORK_LOOP = """
import os, sys, time
limit = int(sys.argv[1])
kids = 0
for _ in range(limit + 10):          # bounded: never more than limit + 10 forks
    try:
        pid = os.fork()
    except BlockingIOError:          # EAGAIN: pids.max reached
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids += 1
print(kids, flush=True)
time.sleep(60)
"""


@pytest.fixture
def guest(vroot: Paths) -> Iterator[str]:
    cg = manager()
    rel = vroot.cgroup_name("t1")
    cg.create(rel)
    try:
        yield rel
    finally:
        cg.kill_all(rel)
        cg.remove(rel)


def _attached(rel: str, argv: list[str], **kw: object) -> subprocess.Popen[str]:
    cg = manager()
    # The child joins the cgroup before exec, so nothing it forks escapes.
    return subprocess.Popen(argv, preexec_fn=lambda: cg.attach(rel, os.getpid()), text=True, **kw)


def test_create_makes_a_dir_in_every_hierarchy(guest: str) -> None:
    cg = manager()
    dirs = cg.paths(guest)
    assert dirs and all(d.is_dir() for d in dirs)
    assert cg.exists(guest)
    assert cg.list_guests(guest.split("/")[0]) == ["t1"]
    cg.create(guest)  # again: no error


def test_limits_procs_and_stats(guest: str) -> None:
    cg = manager()
    cg.apply(guest, Limits(memory=64 << 20, pids=20, cpu_weight=50, cpu_quota=50))
    child = _attached(guest, ["sleep", "60"])
    try:
        assert cg.procs(guest) == [child.pid]
        stats = cg.stats(guest)
        assert stats.memory_limit == 64 << 20
        assert stats.pids_limit == 20
        assert stats.pids_current == 1
        assert stats.nproc == 1
        assert stats.cpu_usage_ns is not None and stats.cpu_usage_ns >= 0
        with open(f"/proc/{child.pid}/cgroup") as f:
            lines = f.read().splitlines()
        assert any(line.endswith(":/" + guest) for line in lines)
    finally:
        assert cg.kill_all(guest) == 1
        child.wait()
    assert child.returncode == -9
    assert cg.procs(guest) == []
    cg.apply(guest, Limits())  # back to unlimited
    assert cg.stats(guest).memory_limit is None
    assert cg.stats(guest).pids_limit is None


def test_pids_max_stops_a_fork_loop(guest: str) -> None:
    cg = manager()
    cg.apply(guest, Limits(pids=8))
    child = _attached(guest, [sys.executable, "-c", FORK_LOOP, "8"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        forked = int(child.stdout.readline())
        assert forked == 7  # the loop itself is the 8th
        assert len(cg.procs(guest)) == 8
        assert cg.stats(guest).pids_current == 8
    finally:
        killed = cg.kill_all(guest)
        child.wait()
    assert killed == 8
    assert cg.procs(guest) == []


def test_procs_and_kill_reach_sub_cgroups(guest: str) -> None:
    cg = manager()
    child = _attached(guest, ["sleep", "60"])
    subs = [d / "sub" for d in cg.paths(guest)]
    try:
        for sub in subs:
            sub.mkdir()
            (sub / "cgroup.procs").write_text(str(child.pid))
        assert cg.procs(guest) == [child.pid]
        assert cg.kill_all(guest) == 1
    finally:
        child.wait()
    cg.remove(guest)
    assert not any(d.exists() for d in cg.paths(guest))


def test_remove_refuses_a_busy_cgroup_and_is_idempotent(vroot: Paths) -> None:
    cg = manager()
    rel = vroot.cgroup_name("busy")
    cg.create(rel)
    child = _attached(rel, ["sleep", "60"])
    try:
        with pytest.raises(KernelError, match=r"rmdir `.*/busy`: Device or resource busy"):
            cg.remove(rel)
    finally:
        cg.kill_all(rel)
        child.wait()
    cg.remove(rel)
    cg.remove(rel)
    assert not cg.exists(rel)
    base = rel.split("/")[0]
    assert not any((d.parent).exists() for d in cg.paths(rel)), base


def test_memory_limit_below_use_names_the_file(guest: str) -> None:
    cg = manager()
    if "memory" not in {c for h in cg.hierarchies for c in h.controllers}:
        pytest.skip("no memory controller")
    hog = "x = bytearray(48 << 20); print(1, flush=True); import time; time.sleep(60)"
    child = _attached(guest, [sys.executable, "-c", hog], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "1"
        with pytest.raises(KernelError) as info:
            cg.apply(guest, Limits(memory=8 << 20))
        # The hog was OOM-killed or the kernel refused: either names the file.
        assert "memory.limit_in_bytes" in str(info.value) or "memory.max" in str(info.value)
        assert info.value.guest == "t1"
    finally:
        cg.kill_all(guest)
        child.wait()


def test_v2_backend_on_the_unified_mount(vroot: Paths) -> None:
    """The v2 code paths that need no controller: dirs, attach, cgroup.kill, remove."""
    from engine.cgroups.probe import Hierarchy, Layout, probe
    from engine.cgroups.v2 import V2Cgroups

    unified = probe().unified
    if unified is None:
        pytest.skip("no cgroup2 mount")
    bare = Hierarchy(unified.mount, 2, frozenset())  # what this host offers, without limits
    cg = V2Cgroups(Layout("v2", (bare,)))
    rel = vroot.cgroup_name("v2")
    cg.create(rel)
    child = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: cg.attach(rel, os.getpid()))
    try:
        assert cg.procs(rel) == [child.pid]
        assert cg.stats(rel).nproc == 1
        with pytest.raises(KernelError, match="needs the memory controller"):
            cg.apply(rel, Limits(memory=64 << 20))
        assert cg.kill_all(rel) == 1
        # returned on cgroup.events' "populated 0": nothing left, not even a zombie's entry
        assert (
            cg.procs(rel) == []
            and "populated 0" in (unified.mount / rel / "cgroup.events").read_text()
        )
    finally:
        child.wait()
    assert child.returncode == -9
    cg.remove(rel)
    assert not (unified.mount / rel).exists()
    assert not (unified.mount / rel).parent.exists()
