"""`vserver NAME stop` returns only when every process of the guest and of its
supervision is gone: vsuper, its console pump, its /proc/meminfo renderer.

Under load a supervision child still ending when stop returned was seen as
"escape guest left behind: process N" (the renderer: vsuper exited at init's
end without waiting for it). Here each such child is held deterministically
(a renderer blocked on a FIFO, a pump blocked on a console client that never
reads), so the test fails whenever stop returns before it is gone, however
fast or slow the machine is. No timing is asserted.
"""

from __future__ import annotations

import os
import signal
import socket

import pytest

from engine.paths import Paths
from engine.runtime import state
from tests import leaks
from tests.integration.test_procviews import children, wait_for
from tests.integration.test_runtime import Guest, ok, vserver

pytestmark = [pytest.mark.root, pytest.mark.slow]

HOG = "nohup python3 -c 'import time; b = b\"x\" * (24 << 20); time.sleep(600)' >/dev/null 2>&1 &"


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def renderers(supervisor: int) -> list[int]:
    """vsuper's children rendering the meminfo view (supervisor.main "meminfo")."""
    try:
        kids = children(supervisor)
    except OSError:
        return []
    return [pid for pid in kids if b"\0meminfo\0" in _cmdline(pid)]


def left_behind(paths: Paths) -> list[str]:
    return [leaks.describe(pid) for pid in sorted(leaks.processes(paths))]


def test_stop_ends_a_meminfo_render_in_flight(vroot: Paths) -> None:
    with Guest(vroot) as g:
        run = state.read(vroot, g.name)
        assert run.supervisor_pid is not None
        view = vroot.run_dir(g.name) / "meminfo"
        view.unlink()
        os.mkfifo(view)  # the renderer's open blocks here: nobody reads
        ok(g.sh(HOG))  # the guest's use moves by more than a step: a render
        assert wait_for(lambda: renderers(run.supervisor_pid), 60.0), "no render started"
        ok(vserver(vroot, g.name, "stop"))
        assert left_behind(vroot) == []


def test_stop_after_a_killed_supervisor_ends_its_stuck_pump(vroot: Paths) -> None:
    with Guest(vroot) as g:
        run = state.read(vroot, g.name)
        assert run.supervisor_pid is not None and run.init_pid is not None
        pumps = children(run.supervisor_pid) - {run.init_pid}
        assert pumps
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(os.fspath(vroot.run_dir(g.name) / "console"))
        try:
            # the pump sends the console to this client, which never reads: it blocks
            ok(g.sh("nohup sh -c 'while :; do echo flood; done > /dev/console' >/dev/null 2>&1 &"))
            assert wait_for(lambda: all(_blocked_sending(p) for p in pumps), 60.0)
            os.kill(run.supervisor_pid, signal.SIGKILL)
            assert wait_for(lambda: state.read(vroot, g.name).supervisor_pid is None, 30.0)
            ok(vserver(vroot, g.name, "stop"))
            assert left_behind(vroot) == []
            said = vroot.log_file(g.name).read_text(errors="replace")
            assert "killed what the supervision left running: " in said  # and says so
        finally:
            client.close()


def _blocked_sending(pid: int) -> bool:
    """The pump sleeps in a send to the console client (its socket buffer is full)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            sleeping = f.read().rpartition(b")")[2].split()[0] == b"S"
    except OSError:
        return False
    return sleeping and wchan.startswith("sock_alloc_send")  # sock_wait_for_wmem's caller
