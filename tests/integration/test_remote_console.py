"""The console with several hosts, over a real sshd on 127.0.0.1 (two roots as hosts).

Pilot drives the app in-process at 160x48; tmux runs ``vstui --host a --host
b`` as an administrator would, on a real terminal of the same size.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from engine.paths import Paths
from tests.integration.remote_helpers import GUEST_A, GUEST_B
from tests.sshd import VENV_BIN, TestSshd, have_sshd
from tests.tui.helpers import screen_text
from tests.tui.tmux import Tmux
from vstui.app.widgets.dialogs import ConfirmDialog

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not have_sshd(), reason="openssh-server is not installed (./setup.sh)"),
]
SIZE = (160, 48)


@pytest.fixture
def fleet_env(guests: TestSshd) -> Iterator[TestSshd]:
    """The test's hosts.toml and control directory for code run in this process."""
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "VSTUI_SSH_DIR")}
    os.environ.update(XDG_CONFIG_HOME=guests.env()["XDG_CONFIG_HOME"],
                      VSTUI_SSH_DIR=str(guests.control))  # fmt: skip
    try:
        yield guests
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def drive_fleet(hosts: list[str], scenario: Callable) -> None:
    from engine.remote.hosts import resolve_all
    from tests.tui.helpers import StubRunner
    from vstui.app.app import VstuiApp
    from vstui.app.fleet import FleetEngine

    engine = FleetEngine(resolve_all(hosts), interval=0.5)
    engine.connect()

    async def main() -> None:
        app = VstuiApp(engine, engine.source, interval=0.5, runner=StubRunner())  # type: ignore
        async with app.run_test(size=SIZE) as pilot:
            await scenario(pilot)

    try:
        asyncio.run(main())
    finally:
        engine.close()


async def wait_screen(pilot, check: Callable[[str], bool], what: str,
                      timeout: float = 60) -> str:  # fmt: skip
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        await pilot.pause(0.1)
        text = screen_text(pilot.app)
        if check(text):
            return text
    raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")


def row(text: str, host: str, name: str) -> str | None:
    for line in text.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == host and name in words[1:3]:
            return line
    return None


def test_pilot_lists_both_hosts_guests_and_a_read_only_host_refuses_a_stop(
    fleet_env: TestSshd, vroot: Paths
) -> None:
    from engine import runtime

    async def scenario(pilot) -> None:
        text = await wait_screen(pilot, lambda t: row(t, "a", GUEST_A) and row(t, "b", GUEST_B)
                                 and row(t, "ro", GUEST_A), "both hosts' guests")  # fmt: skip
        header = next(line for line in text.splitlines() if "NAME" in line)
        assert [w.rstrip("▲▼") for w in header.split()[:3]] == ["HOST", "NAME", "STATE"]
        assert "RTT" in header and "LOAD" in header and "GUESTS" in header
        assert "running" in row(text, "b", GUEST_B)  # type: ignore[operator]
        host_row = next(line for line in text.splitlines() if line.split()[:2] == ["a", "(host)"])
        assert " up " in host_row and "ms" in host_row
        assert "[ro]" in (row(text, "ro", GUEST_A) or "")
        table = pilot.app.screen.table
        table.select_key(f"ro/{GUEST_A}")
        await pilot.press("minus")
        for _ in range(50):  # the console asks first (`-` is also htop's fold key)
            if isinstance(pilot.app.screen, ConfirmDialog):
                break
            await pilot.pause(0.1)
        pilot.app.screen.dismiss(True)  # the admin says yes: the host must still refuse
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        said = [n.message for n in pilot.app._notifications]
        assert any("stop refused: host 'ro' is read-only" in m for m in said), said

    drive_fleet(["a", "b", "ro"], scenario)
    assert runtime.is_running(vroot, GUEST_A)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_tmux_console_marks_a_lost_host_stale_and_reconnects(guests: TestSshd) -> None:
    env = guests.env()
    # COLUMNS/LINES leak into tmux's environment from the test run: the console
    # would believe them instead of the terminal
    command = ["env", "-u", "COLUMNS", "-u", "LINES", f"XDG_CONFIG_HOME={env['XDG_CONFIG_HOME']}",
               f"VSTUI_SSH_DIR={guests.control}", str(VENV_BIN / "vstui"), "--host", "a",
               "--host", "b"]  # fmt: skip
    tmux = Tmux(command, size=SIZE)
    try:
        screen = tmux.wait_for(lambda s: bool(row(s, "a", GUEST_A) and row(s, "b", GUEST_B)),
                               "both hosts' guests", timeout=60)  # fmt: skip
        assert "HOST" in screen and "RTT" in screen
        guests.kill()  # sshd and every connection: both hosts are lost
        tmux.wait_for(lambda s: s.count("stale") >= 2 and "?" in (row(s, "a", GUEST_A) or ""),
                      "the hosts marked stale", timeout=60)  # fmt: skip
        guests.start()  # same port, same host key: the console finds them again
        tmux.wait_for(lambda s: "stale" not in s and " up " in s, "the hosts back", timeout=90)
    finally:
        tmux.close()


def test_pilot_remote_guest_detail_processes_enter_filter_and_audit(
    fleet_env: TestSshd, vroot2: Paths
) -> None:
    from tests.integration.remote_helpers import SLEEP

    async def scenario(pilot) -> None:
        app = pilot.app
        await wait_screen(pilot, lambda t: row(t, "a", GUEST_A) and row(t, "b", GUEST_B),
                          "both hosts' guests")  # fmt: skip
        # `/` filters by host too
        await pilot.press("slash", *"b/", "enter")
        text = await wait_screen(pilot, lambda t: not row(t, "a", GUEST_A), "host b only")
        assert row(text, "b", GUEST_B)
        await pilot.press("escape")
        # the detail screen of a guest on host b: its process tree and its log
        app.screen.table.select_key(f"b/{GUEST_B}")
        await pilot.press("enter")
        await wait_screen(pilot, lambda t: SLEEP[GUEST_B] in t, "b's guest process tree")
        await pilot.press("l")
        await wait_screen(pilot, lambda t: "log" in t.lower(), "the log pane")
        # `s`: a shell in that guest over ssh -t, on the real terminal
        await pilot.press("s")
        await pilot.pause(0.5)
        argv = app.runner.calls[-1]
        assert argv[0] == "ssh" and "-t" in argv and argv[-2] == "root@127.0.0.1"
        assert argv[-1].endswith(f"vserver --root {vroot2.root} {GUEST_B} enter")
        # the processes screen of host b shows b's guest processes with their host
        await pilot.press("escape", "2")

        def b_guest_rows(_text: str) -> bool:
            rows = getattr(app.screen, "procs_table", None)
            return rows is not None and any(
                p.guest == f"b/{GUEST_B}" and SLEEP[GUEST_B] in p.cmdline
                for p in rows.items.values())  # fmt: skip

        await wait_screen(pilot, b_guest_rows, "host b's guest processes")
        # the audit covers every host
        await pilot.press("3")
        text = await wait_screen(pilot, lambda t: "a/" in t and "b/" in t, "both hosts' findings",
                                 timeout=120)  # fmt: skip
        assert "running the audit" not in text

    drive_fleet(["a", "b"], scenario)
