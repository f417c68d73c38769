"""``vserver NAME freeze|thaw`` and engine.cgroups freeze on the real kernel (v1 and v2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cgroups import manager
from engine.cgroups.probe import Hierarchy, Layout, probe
from engine.cgroups.v1 import V1Cgroups
from engine.cgroups.v2 import V2Cgroups
from engine.config import update_config
from engine.helpers import helper_path
from engine.paths import Paths

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
SPIN = "n = 0\nwhile True:\n    n += 1\n"


def vserver(paths: Paths, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"rc={result.returncode} {result.stderr}{result.stdout}"
    return result.stdout


def stat_of(pid: int) -> tuple[str, int]:
    """(state letter, utime + stime) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[11]) + int(fields[12])


def wchan(pid: int) -> str:
    return Path(f"/proc/{pid}/wchan").read_text()


def parked_in(pid: int, places: tuple[str, ...]) -> str:
    """Where the task sleeps, once it is one of ``places`` (within 1 s). A task in
    the v2 freezer's signal trap can be woken and go round get_signal again: for
    that moment wchan is "0" (kernel/sched/core.c get_wchan: not sleeping)."""
    deadline = time.monotonic() + 1.0
    while (where := wchan(pid)) not in places and time.monotonic() < deadline:
        time.sleep(0.01)
    return where


def backends() -> list[str]:
    layout = probe()
    found = []
    if layout.controller("freezer") is not None:
        found.append("v1")
    if layout.unified is not None:
        found.append("v2")
    return found


def backend(kind: str):
    layout = probe()
    if kind == "v1":
        return V1Cgroups(Layout("v1", tuple(h for h in layout.hierarchies if h.version == 1)))
    bare = Hierarchy(layout.unified.mount, 2, frozenset())
    return V2Cgroups(Layout("v2", (bare,)))


@pytest.fixture(params=backends())
def spinner(request: pytest.FixtureRequest, vroot: Paths) -> Iterator[tuple[object, str, int]]:
    cg = backend(request.param)
    rel = vroot.cgroup_name(f"fz{request.param}")
    cg.create(rel)
    child = subprocess.Popen([sys.executable, "-c", SPIN],
                             preexec_fn=lambda: cg.attach(rel, os.getpid()))  # fmt: skip
    try:
        yield cg, request.param, child.pid
    finally:
        cg.thaw(rel)
        cg.kill_all(rel)
        child.wait()
        cg.remove(rel)


def test_freeze_stops_and_thaw_resumes(spinner: tuple[object, str, int], vroot: Paths) -> None:
    cg, kind, pid = spinner
    rel = vroot.cgroup_name(f"fz{kind}")
    assert cg.freezer_state(rel) == "thawed"
    cg.freeze(rel)
    assert cg.freezer_state(rel) == "frozen"
    letter, before = stat_of(pid)
    # v1 parks tasks in the refrigerator (D); the v2 core freezer in a signal trap (S)
    assert (letter, kind) in (("D", "v1"), ("S", "v2"))
    places = ("__refrigerator", "do_freezer_trap", "get_signal")
    assert parked_in(pid, places) in places
    time.sleep(0.3)
    assert stat_of(pid) == (letter, before)  # not one tick of CPU while frozen
    cg.freeze(rel)  # again: no error
    cg.thaw(rel)
    assert cg.freezer_state(rel) == "thawed"
    deadline = time.monotonic() + 10
    while stat_of(pid)[1] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stat_of(pid)[1] > before


def test_kill_all_reaches_a_frozen_guest(spinner: tuple[object, str, int], vroot: Paths) -> None:
    cg, kind, pid = spinner
    rel = vroot.cgroup_name(f"fz{kind}")
    cg.freeze(rel)
    assert cg.kill_all(rel) >= 1
    assert cg.procs(rel) == []


@pytest.fixture
def running(vroot: Paths) -> Iterator[Paths]:
    ok(vserver(vroot, "g", "build", "-m", "busybox"))
    ok(vserver(vroot, "g", "start"))
    try:
        yield vroot
    finally:
        vserver(vroot, "g", "stop", timeout=120)


def guest_pids(paths: Paths) -> list[int]:
    return manager().procs(paths.cgroup_name("g"))


def test_freeze_thaw_cli(running: Paths) -> None:
    paths = running
    ok(vserver(paths, "g", "exec", "/bin/sh", "-c", "sleep 1000 >/dev/null 2>&1 &"))
    ok(vserver(paths, "g", "freeze"))
    pids = guest_pids(paths)
    assert len(pids) >= 2
    assert all(stat_of(pid)[0] in "DS" for pid in pids)
    assert manager().freezer_state(paths.cgroup_name("g")) == "frozen"
    status = vserver(paths, "g", "status")
    assert status.returncode == 0
    assert status.stdout.startswith("Vserver 'g' is frozen at context '")
    data = json.loads(ok(vserver(paths, "g", "status", "--json")))
    assert data["state"] == "frozen" and data["frozen"] and data["frozen_since"] > 0
    listed = json.loads(ok(vserver(paths, "--list", "--json")))
    assert listed[0]["state"] == "frozen"
    assert "frozen" in ok(vserver(paths, "--list"))
    assert "g (frozen)" in run_tool("vserver-stat", paths)
    # exec and enter are refused with one line, on the Python and the compiled path
    for cmd in ([sys.executable, "-m", "vstui.cli.vserver"], [str(helper_path("vserver"))]):
        refused = subprocess.run([*cmd, "--root", str(paths.root), "g", "exec", "true"],
                                 capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL)  # fmt: skip
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            "vserver: g: vserver 'g' is frozen; thaw it first (vserver g thaw)"
        ]
    ok(vserver(paths, "g", "thaw"))
    assert manager().freezer_state(paths.cgroup_name("g")) == "thawed"
    assert ok(vserver(paths, "g", "exec", "echo", "back")) == "back\n"
    assert "is running at context" in ok(vserver(paths, "g", "status"))


def test_stop_thaws_first(running: Paths) -> None:
    paths = running
    update_config(paths, "g", {"V_STOP_TIMEOUT": "3600"})
    ok(vserver(paths, "g", "freeze"))
    # a frozen init would never see its stop signal: stop would wait the hour
    ok(vserver(paths, "g", "stop", timeout=120))
    assert not paths.run_dir("g").joinpath("frozen").exists()


def test_freeze_refuses_a_stopped_guest(vroot: Paths) -> None:
    ok(vserver(vroot, "s", "build", "-m", "busybox"))
    refused = vserver(vroot, "s", "freeze")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "vserver: s: guest is not running; start it first (vserver s start)"
    )


def run_tool(tool: str, paths: Paths) -> str:
    result = subprocess.run([os.path.join(sys.prefix, "bin", tool), "--root", str(paths.root)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_audit_reports_a_guest_frozen_for_hours(running: Paths) -> None:
    from engine.audit import run_audit

    paths = running
    ok(vserver(paths, "g", "freeze"))
    assert "RUN-FROZEN" not in {f.rule_id for f in run_audit(paths).findings}  # just now
    (paths.run_dir("g") / "frozen").write_text(f"{time.time() - 7200:.3f}\n")
    found = [f for f in run_audit(paths).findings if f.rule_id == "RUN-FROZEN"]
    assert len(found) == 1 and found[0].guest == "g"
    assert (
        found[0].title == "g has been frozen for 2.0 hours"
        and found[0].fix == f"vserver --root {paths.root} g thaw"
    )
    ok(vserver(paths, "g", "thaw"))
    assert "RUN-FROZEN" not in {f.rule_id for f in run_audit(paths).findings}
