"""vps / vkill / vserver-stat against two real running guests.

Needs the runtime (``engine.runtime`` start/stop) and storage
(``engine.rootfs.build``) parts; skipped with the reason when they are absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.paths import Paths

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
GUESTS = {
    "pa": "sleep 1000 & sleep 1001 & wait",
    "pb": "sleep 1002 & wait",
}


def _tool(module: str, root: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "--root", str(root.root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _rows(root: Paths) -> list[dict]:
    out = _tool("vstui.cli.vps", root, "ax", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _sleeps(root: Paths, guest: str) -> dict[str, dict]:
    return {r["cmdline"]: r for r in _rows(root) if r["guest"] == guest and r["comm"] == "sleep"}


def _start_guest(paths: Paths, name: str) -> None:
    from engine.runtime import start

    start(paths, name)


def _stop_guest(paths: Paths, name: str) -> None:
    from engine.runtime import stop

    stop(paths, name, 5)


@pytest.fixture
def guests(vroot: Paths) -> Iterator[Paths]:
    try:
        from engine import config, rootfs, runtime
    except ImportError as exc:
        pytest.skip(f"runtime/storage part not available: {exc}")
    if not hasattr(runtime, "start") or not hasattr(rootfs, "build"):
        pytest.skip("runtime/storage part not available")
    started: list[str] = []
    try:
        for name, script in GUESTS.items():
            rootfs.build(vroot, name)
            config.update_config(vroot, name, {"V_INIT": f"/bin/sh -c '{script}'"})
            _start_guest(vroot, name)
            started.append(name)
        for name in GUESTS:
            assert _wait(
                lambda n=name: len(_sleeps(vroot, n)) == GUESTS[n].count("sleep")
            ), f"{name}: its sleeps never showed up in vps"
        yield vroot
    finally:
        for name in started:
            try:
                _stop_guest(vroot, name)
            except Exception:
                pass
        for name in GUESTS:
            try:
                rootfs.delete(vroot, name, force=True)
            except Exception:
                pass


def test_vps_attributes_guest_processes_and_their_pids(guests: Paths) -> None:
    from engine import runtime

    rows = _rows(guests)
    for name in GUESTS:
        xid = runtime.xid_of(guests, name)
        init = runtime.init_pid(guests, name)
        mine = [r for r in rows if r["guest"] == name]
        assert mine and all(r["xid"] == xid for r in mine)
        by_pid = {r["pid"]: r for r in mine}
        assert by_pid[init]["nspid"] == 1  # the guest's init is PID 1 inside
        assert all(r["nspid"] < 100 for r in mine)  # guest PIDs, not host PIDs
    me = next(r for r in rows if r["pid"] != os.getpid() and "vps" in r["cmdline"])
    assert (me["xid"], me["context"]) == (0, "MAIN")
    text = _tool("vstui.cli.vps", guests, "ax").stdout.splitlines()
    xid_pa = runtime.xid_of(guests, "pa")
    assert any(f"{xid_pa:>5} pa " in line and "sleep 1001" in line for line in text)
    only = _tool("vstui.cli.vps", guests, "--xid", "pb", "-o", "vpid,ctx,cmd").stdout
    assert "sleep 1002" in only and "sleep 1001" not in only


def test_vserver_stat_lists_both_guests(guests: Paths) -> None:
    from engine import runtime

    out = _tool("vstui.cli.vserver_stat", guests)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("CTX   PROC") and lines[1].endswith("root server")
    for name in GUESTS:
        xid = runtime.xid_of(guests, name)
        line = next(x for x in lines if x.endswith(f" {name}"))
        assert line.startswith(str(xid)) and line[55:] == name


def test_vkill_guest_pid_and_whole_guest(guests: Paths) -> None:
    pa = _sleeps(guests, "pa")
    victim = pa["sleep 1000"]
    out = _tool("vstui.cli.vkill", guests, "--xid", "pa", "-s", "KILL", str(victim["nspid"]))
    assert out.returncode == 0, out.stderr
    assert _wait(lambda: "sleep 1000" not in _sleeps(guests, "pa"))
    assert "sleep 1001" in _sleeps(guests, "pa")  # only the one named
    out = _tool("vstui.cli.vkill", guests, "--xid", "pa", "-s", "SIGKILL")
    assert out.returncode == 0, out.stderr
    assert _wait(lambda: not _sleeps(guests, "pa"))
    assert "sleep 1002" in _sleeps(guests, "pb")  # the other guest is untouched


def test_vkill_refuses_processes_outside_the_named_guest(guests: Paths) -> None:
    outsider = subprocess.Popen(["sleep", "300"])
    try:
        pb_sleep = _sleeps(guests, "pb")["sleep 1002"]
        # a host PID is not a PID inside pb (vkill --xid takes guest PIDs)
        out = _tool("vstui.cli.vkill", guests, "--xid", "pb", str(outsider.pid))
        assert out.returncode != 0 and "in the guest" in out.stderr
        # context 0 refuses a PID that belongs to a guest
        out = _tool("vstui.cli.vkill", guests, "--xid", "0", str(pb_sleep["pid"]))
        assert out.returncode != 0 and "belongs to guest pb" in out.stderr
        assert outsider.poll() is None
        assert "sleep 1002" in _sleeps(guests, "pb")
    finally:
        outsider.kill()
        outsider.wait()


def test_vkill_refuses_a_private_guest(guests: Paths) -> None:
    from engine import config

    config.update_config(guests, "pb", {"S_FLAGS": "lock private"})
    pb_sleep = _sleeps(guests, "pb")["sleep 1002"]
    out = _tool("vstui.cli.vkill", guests, "--xid", "pb")
    assert out.returncode != 0 and "private" in out.stderr
    out = _tool("vstui.cli.vkill", guests, str(pb_sleep["pid"]))
    assert out.returncode != 0 and "private" in out.stderr
    assert "sleep 1002" in _sleeps(guests, "pb")


def test_observer_sees_guests_with_stats(guests: Paths) -> None:
    from engine.observe import Observer

    obs = Observer(guests)
    obs.snapshot()
    time.sleep(0.2)
    snap = obs.snapshot()
    for name in GUESTS:
        g = snap.guest(name)
        assert g is not None and g.state == "running"
        assert g.nproc == 1 + GUESTS[name].count("sleep") + 1  # vinit, sh, sleeps
        assert g.memory.used is not None and g.memory.used > 0  # from the cgroup
        assert g.pids.used is not None and g.pids.used >= g.nproc
        assert g.uptime is not None and g.uptime >= 0


def test_a_console_attributes_new_guest_processes_between_full_reads(guests: Paths) -> None:
    """The observer reads every cgroup once, then looks up only new PIDs: a process
    started in a guest afterwards is still the guest's, with its guest PID."""
    from engine import runtime
    from engine.observe import Observer
    from engine.procs.collect import FULL_EVERY

    observer = Observer(guests)
    observer.snapshot()  # the full read
    full_at = observer.table._full_at
    name = next(iter(GUESTS))
    proc = subprocess.Popen([sys.executable, "-m", "vstui.cli.vserver", "--root",
                             str(guests.root), name, "exec", "sleep", "4242"])  # fmt: skip
    try:

        def mine() -> list:
            rows = observer.snapshot().procs
            return [r for r in rows if r.cmdline == "sleep 4242" and r.guest == name]

        assert _wait(mine), "the new process was not attributed to its guest"
        row = mine()[0]
        assert row.xid == runtime.xid_of(guests, name) and row.nspid != row.pid
        if time.monotonic() - full_at < FULL_EVERY:  # found by the new-PID lookup
            assert observer.table._full_at == full_at
    finally:
        proc.terminate()
        proc.wait(timeout=10)
