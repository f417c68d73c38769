"""End to end: the real console in tmux, against two real guests (needs root).

Kills a guest process through the kill dialog and checks it died, then
enters a guest (App.suspend + `vserver NAME enter` on the real terminal),
runs `hostname`, exits and finds the console back.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine.config import update_config
from engine.paths import Paths
from tests.tui.tmux import Tmux, console, guest_pids, ok, vserver

pytestmark = [pytest.mark.root, pytest.mark.slow]

# The argument that makes the victim process easy to find, this run's own: the
# process screen shows every process of the host, another run's victims too.
MARK = str(1_000_000 + uuid.uuid4().int % 9_000_000)
REPO = Path(__file__).resolve().parents[2]


def victims(paths: Paths) -> list[int]:
    """Host PIDs of every `sleep MARK` in this root's guests (not another run's)."""
    return guest_pids(paths, b"sleep\0" + MARK.encode() + b"\0")


def _victim_rows(screen: str, names: list[str]) -> int:
    return sum(
        1
        for line in screen.splitlines()
        if f"sleep {MARK}" in line and any(n in line for n in names)
    )


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_console_kills_a_guest_process_and_enters_a_guest(vroot: Paths):
    names = [f"e{uuid.uuid4().hex[:5]}", f"f{uuid.uuid4().hex[:5]}"]
    started: list[str] = []
    tmux = None
    try:
        for name in names:
            ok(vserver(vroot, name, "build", "-m", "skeleton", "--hostname", f"{name}.e2e"))
            update_config(vroot, name, {"V_INIT": f"/bin/sh -c 'sleep {MARK} & exec sleep 100000'"})
            ok(vserver(vroot, name, "start"))
            started.append(name)
        deadline = time.monotonic() + 20
        while len(victims(vroot)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = victims(vroot)
        assert len(before) >= 2

        tmux = Tmux(console(vroot))
        tmux.wait_for(lambda s: all(n in s for n in names) and "running" in s, "the guest list")

        # -- kill one `sleep MARK` through the dialog -----------------------
        tmux.keys("2")
        tmux.wait_for(lambda s: "COMMAND" in s, "the process screen")
        tmux.filter(f"sleep {MARK}")
        tmux.wait_for(lambda s: _victim_rows(s, names) >= 2, "the victim rows", timeout=60)
        tmux.keys("F9")
        screen = tmux.wait_for(lambda s: "Send TERM" in s, "the kill dialog")
        assert f"sleep {MARK}" in screen and "Cancel" in screen
        tmux.keys("Enter")  # TERM is highlighted: Enter sends it
        deadline = time.monotonic() + 10
        while len(victims(vroot)) == len(before) and time.monotonic() < deadline:
            time.sleep(0.2)
        after = victims(vroot)
        assert len(after) == len(before) - 1, "exactly one victim died"

        # -- enter a guest, run hostname, exit, find the console back -------
        tmux.keys("Escape", "Escape", "1")
        tmux.wait_for(lambda s: "NAME" in s and "STATE" in s, "the guest list again")
        tmux.keys("Down")
        tmux.keys("s")
        # the console gives the terminal to the shell: wait for it before typing
        tmux.wait_for(lambda s: "STATE" not in s, "the shell on the terminal")
        time.sleep(0.5)
        tmux.type("hostname")
        tmux.keys("Enter")
        tmux.wait_for(lambda s: f"{names[0]}.e2e" in s, "the guest's hostname")
        tmux.type("exit")
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "NAME" in s and "STATE" in s and names[1] in s, "the console back")
        tmux.keys("q")
    finally:
        if tmux is not None:
            tmux.close()
        for name in started:
            vserver(vroot, name, "stop")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_demo_then_vtop_xid_then_demo_clean(vroot: Paths):
    """`vstui --demo` guests run; `vtop --xid web` shows only web; --demo-clean removes all."""
    from vstui import demo
    from vstui.app.main import main as vstui_main

    root = str(vroot.root)
    tmux = None
    try:
        assert demo.prepare(root) == root
        for guest in demo.GUESTS:
            assert (vroot.run_dir(guest.name) / "state").read_text().strip() == "running"
        env_cmd = ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "vstui.cli.vtop",
                   "--root", root, "--xid", "web"]  # fmt: skip
        tmux = Tmux(env_cmd)
        screen = tmux.wait_for(lambda s: "Processes of web" in s and "sleep 100000" in s,
                               "web's processes")  # fmt: skip
        rows = [line for line in screen.splitlines() if "sleep 100000" in line]
        assert rows and all(" web " in line for line in rows), screen
        tmux.keys("q")
    finally:
        if tmux is not None:
            tmux.close()
        assert vstui_main(["--root", root, "--demo-clean"]) == 0
    for guest in demo.GUESTS:
        assert not vroot.config_file(guest.name).exists()
        assert not vroot.guest_root(guest.name).exists()
