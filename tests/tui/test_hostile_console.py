"""Issue 19: no console screen passes a guest's control characters to the terminal.

The real engine and snapshot source over this host's /proc, with processes
whose argv and comm carry every control character (tests/hostile_text.py),
a guest whose console log holds them, and a capture of every screen.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.facade import Engine
from engine.paths import Paths
from tests.hostile_text import CONSOLE, raw_controls, spawn, stop
from tests.tui.helpers import StubRunner, first_snapshot, screen_text
from vstui.app.actions import BY_ID
from vstui.app.app import VstuiApp
from vstui.app.source import real_source


def key(action: str) -> str:
    return BY_ID[action].keys.split(",")[0]


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[Paths, str]]:
    paths = Paths.from_root(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.config_file("db").write_text("S_HOSTNAME=db\n")
    paths.log_dir.mkdir(parents=True)
    paths.log_file("db").write_bytes(b"booting\n" + CONSOLE + b"ready\n")
    mark = f"HOSTILE{uuid.uuid4().hex[:8]}"
    procs = spawn(mark)
    try:
        yield paths, mark
    finally:
        stop(procs)


def screens(mark: str) -> dict[str, list[str]]:
    procs = ["2", "slash", *mark, "enter"]
    return {
        "guests": [],
        "detail": ["down", "enter"],
        "detail_log": ["down", "enter", key("log")],
        "processes": procs,
        "processes_tree": [*procs, key("tree")],
        "kill_signal": [*procs, key("kill")],
        "kill_confirm": [*procs, key("kill"), "enter"],
        "editor": ["down", key("edit")],
        "audit": [key("show_audit")],
        "help": [key("help")],
        "delete_confirm": ["down", key("delete")],
    }


async def _capture(paths: Paths, keys: list[str]) -> str:
    engine = Engine(paths)
    app = VstuiApp(engine, real_source(engine), runner=StubRunner(), interval=3600)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        await first_snapshot(app)
        for k in keys:
            await pilot.press(k)
            await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        return screen_text(app)


@pytest.mark.parametrize("screen", sorted(screens("x")))
def test_every_screen_shows_control_characters_visibly(
    hostile: tuple[Paths, str], screen: str
) -> None:
    paths, mark = hostile
    text = asyncio.run(_capture(paths, screens(mark)[screen]))
    assert raw_controls(text) == [], text
    if screen.startswith("processes") or screen == "kill_confirm":
        assert "PWNED" in text and mark in text, text
    if screen == "detail_log":
        assert "^[]52;c;cHduZWQK^G" in text, text
