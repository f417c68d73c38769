"""The compiled stop: ``vserver NAME stop`` through the running supervisor.

A start whose undoing needs nothing but the guest's cgroups removed writes
run_dir/stop.plan; the compiled front end then asks the supervisor to stop
init and tears the guest down by that plan, without Python. It must leave
exactly what the Python stop leaves (nothing: no process, cgroup, mount,
link or run file, the same log lines), say the same, and hand every case
it cannot decide to Python untouched. ``VSTUI_FALLBACK=0`` makes the front
end exit 125 instead of handing over, so each test knows which path ran.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from engine.config import update_config
from engine.paths import Paths
from engine.runtime import runfiles, state
from tests import leaks
from tests.integration.test_faststart import NO_FALLBACK, compiled, front, ok, python_cli

pytestmark = pytest.mark.root
__all__ = ["front"]  # the compiled front end, built once per module (a fixture)


@pytest.fixture
def guest(vroot: Paths) -> Paths:
    ok(python_cli(vroot, "g", "build", "-m", "busybox"))
    update_config(vroot, "g", {"V_MEMORY": "256M"})
    return vroot


def log_lines(paths: Paths) -> list[str]:
    """The console log's own lines (runfiles.log_line), without their times."""
    text = paths.log_file("g").read_text(errors="replace")
    return re.findall(r"--- vserver g: (.*?) at [0-9: -]+ ---", text)


def stopped_cleanly(paths: Paths) -> None:
    assert not state.read(paths, "g").running
    assert not paths.run_dir("g").exists()
    assert leaks.find(paths) == []  # when stop returns, not eventually


@pytest.mark.parametrize("start", ["python", "compiled"])
def test_stop_through_the_supervisor_leaves_nothing(front: str, guest: Paths, start: str) -> None:
    ok(python_cli(guest, "g", "start"))  # writes the boot cache
    ok(python_cli(guest, "g", "stop"))
    ok(
        python_cli(guest, "g", "start")
        if start == "python"
        else compiled(front, guest, "g", "start")
    )
    assert (guest.run_dir("g") / runfiles.STOP_PLAN).exists()
    result = compiled(front, guest, "g", "stop")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    stopped_cleanly(guest)
    assert log_lines(guest)[-2:] == ["init halted", "stopped"]


def test_same_result_and_log_as_the_python_stop(front: str, guest: Paths) -> None:
    results, logs = [], []
    for stop in (python_cli, lambda p, *a: compiled(front, p, *a)):
        ok(python_cli(guest, "g", "start"))
        before = len(log_lines(guest))
        result = stop(guest, "g", "stop")
        results.append((result.returncode, result.stdout, result.stderr))
        logs.append(log_lines(guest)[before:])
        stopped_cleanly(guest)
    assert results[0] == results[1] == (0, "", "")
    assert logs[0] == logs[1] and logs[0][-1] == "stopped"


def test_a_real_init_that_does_not_halt_is_killed_after_the_timeout(
    front: str, guest: Paths
) -> None:
    """A fakeinit guest's init (busybox init ignores SIGPWR): the supervisor is asked
    (it picks the signal by init's kind), then init is killed, as by the Python stop."""
    update_config(guest, "g", {"S_FLAGS": "fakeinit", "V_STOP_TIMEOUT": "0.5"})
    logs = []
    for stop in (python_cli, lambda p, *a: compiled(front, p, *a)):
        ok(python_cli(guest, "g", "start"))
        before = len(log_lines(guest))
        ok(stop(guest, "g", "stop"))
        logs.append(log_lines(guest)[before:])
        stopped_cleanly(guest)
    assert (
        logs[0]
        == logs[1]
        == [
            "init did not stop within 0.5 s of the halt signal; killing the guest",
            "init killed by signal SIGKILL",
            "stopped",
        ]
    )


def test_processes_in_sub_groups_and_from_outside_are_killed(front: str, guest: Paths) -> None:
    """What is in the guest's cgroups but not in its PID namespace (host processes
    moved there: one whose exit takes a while, 200 MB to free), and a sub-group
    made below the guest's own, go with it: each is killed and waited for."""
    ok(compiled(front, guest, "g", "start", fallback=True))
    from engine.cgroups import manager

    top = manager().paths(guest.cgroup_name("g"))[0]
    sub = top / "extra"
    sub.mkdir()
    big = "b = bytearray(200 << 20); print(flush=True); import time; time.sleep(300)"
    outsiders = [subprocess.Popen(["sleep", "300"]),
                 subprocess.Popen([sys.executable, "-c", big], stdout=subprocess.PIPE)]  # fmt: skip
    try:
        assert outsiders[1].stdout and outsiders[1].stdout.readline() == b"\n"
        (sub / "cgroup.procs").write_text(str(outsiders[0].pid))
        (top / "cgroup.procs").write_text(str(outsiders[1].pid))
        ok(compiled(front, guest, "g", "stop"))
        assert [p.wait(timeout=10) for p in outsiders] == [-9, -9]
    finally:
        for p in outsiders:
            p.kill()
            p.wait()
    assert not top.exists()
    stopped_cleanly(guest)


def test_what_the_plan_cannot_decide_is_handed_to_python(front: str, guest: Paths) -> None:
    ok(python_cli(guest, "g", "start"))
    conf = guest.config_file("g")
    planned = conf.read_bytes()
    update_config(guest, "g", {"V_STOP_TIMEOUT": "5"})  # the Python stop reads the new value
    assert compiled(front, guest, "g", "stop").returncode == NO_FALLBACK
    assert state.read(guest, "g").running
    conf.write_bytes(planned)  # the digest holds again, but the guest is frozen
    ok(python_cli(guest, "g", "freeze"))
    assert compiled(front, guest, "g", "stop").returncode == NO_FALLBACK
    assert state.read(guest, "g").running
    ok(compiled(front, guest, "g", "stop", fallback=True))
    stopped_cleanly(guest)


def test_a_stopped_guest_says_the_same_either_way(front: str, guest: Paths) -> None:
    assert compiled(front, guest, "g", "stop").returncode == NO_FALLBACK
    by_python = python_cli(guest, "g", "stop")
    by_front = compiled(front, guest, "g", "stop", fallback=True)
    assert by_python.returncode == by_front.returncode == 0
    assert by_python.stderr == by_front.stderr == "vserver 'g' is not running\n"


def test_read_only_cases_are_never_acted_on_here(front: str, guest: Paths) -> None:
    """Who may not stop a guest (not root; a --host, read-only or not, is the agent's
    to judge) is answered by the Python tool: the front end hands over untouched."""
    ok(python_cli(guest, "g", "start"))
    try:
        nobody = compiled(front, guest, "g", "stop", user=65534, group=65534)
        assert nobody.returncode == NO_FALLBACK
        remote = compiled(front, guest, "--host", "ro", "g", "stop")
        assert remote.returncode == NO_FALLBACK
        assert compiled(front, guest, "g", "stop", "now").returncode == NO_FALLBACK
        assert state.read(guest, "g").running
    finally:
        ok(compiled(front, guest, "g", "stop"))
    stopped_cleanly(guest)
