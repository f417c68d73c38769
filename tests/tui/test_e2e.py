"""End to end: the real console in tmux, against two real guests (needs root).

Kills a guest process through the kill dialog and checks it died, then
enters a guest (App.suspend + `vserver NAME enter` on the real terminal),
runs `hostname`, exits and finds the console back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config import update_config
from engine.paths import Paths
from tests import leaks

pytestmark = [pytest.mark.root, pytest.mark.slow]

MARK = "31337"  # the argument that makes the victim process easy to find
REPO = Path(__file__).resolve().parents[2]


def vserver(paths: Paths, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"rc={result.returncode} {result.stderr}{result.stdout}"


def victims(paths: Paths) -> list[int]:
    """Host PIDs of every `sleep 31337` in this root's guests (not another run's)."""
    found = []
    mine = leaks.processes(paths)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) in mine:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == b"sleep\0" + MARK.encode() + b"\0":
                        found.append(int(entry))
            except OSError:
                pass
    return found


class Tmux:
    """A private tmux server (own socket) running one command."""

    def __init__(self, command: list[str]) -> None:
        self.socket = f"vstui-e2e-{uuid.uuid4().hex[:6]}"
        self.run("new-session", "-d", "-s", "e2e", "-x", "120", "-y", "40",
                 " ".join(_quote(w) for w in command))  # fmt: skip

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                             timeout=10)  # fmt: skip
        return out.stdout

    def keys(self, *keys: str) -> None:
        # one at a time, slower than ESCDELAY: ESC then "1" must not read as alt+1
        for key in keys:
            self.run("send-keys", "-t", "e2e", key)
            time.sleep(0.25)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "e2e", "-l", text)
        time.sleep(0.3)  # a burst of text straight followed by Enter can merge into one read

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "e2e")

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if check(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")

    def close(self) -> None:
        self.run("kill-server")


def _victim_rows(screen: str, names: list[str]) -> int:
    return sum(
        1
        for line in screen.splitlines()
        if f"sleep {MARK}" in line and any(n in line for n in names)
    )


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


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

        env_cmd = ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "vstui.app.main",
                   "--root", str(vroot.root)]  # fmt: skip
        tmux = Tmux(env_cmd)
        tmux.wait_for(lambda s: all(n in s for n in names) and "running" in s, "the guest list")

        # -- kill one `sleep 31337` through the dialog ----------------------
        tmux.keys("2")
        tmux.wait_for(lambda s: "COMMAND" in s, "the process screen")
        tmux.keys("/")
        tmux.type(f"sleep {MARK}")
        tmux.keys("Enter")
        tmux.wait_for(lambda s: _victim_rows(s, names) >= 2, "the victim rows", timeout=60)
        tmux.keys("k")
        tmux.wait_for(lambda s: "TERM" in s and "Signal for" in s, "the signal picker")
        tmux.keys("Enter")
        screen = tmux.wait_for(lambda s: "Send SIGTERM" in s, "the confirmation")
        assert f"sleep {MARK}" in screen and "Cancel" in screen
        tmux.keys("Tab", "Enter")
        deadline = time.monotonic() + 10
        while len(victims(vroot)) == len(before) and time.monotonic() < deadline:
            time.sleep(0.2)
        after = victims(vroot)
        assert len(after) == len(before) - 1, "exactly one victim died"

        # -- enter a guest, run hostname, exit, find the console back -------
        tmux.keys("Escape", "Escape", "1")
        tmux.wait_for(lambda s: "NAME" in s and "STATE" in s, "the guest list again")
        tmux.keys("Down")
        time.sleep(0.3)
        tmux.keys("s")
        time.sleep(1.5)
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
