"""Helpers for the console's Pilot tests (no pytest-asyncio here: asyncio.run)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from engine.paths import Paths
from tests.tui.fakes import FixedSource, RecordingEngine, small_snapshot
from vstui.app.app import VstuiApp


class StubRunner:
    """Records what would run on the real terminal (App.suspend cannot run headless)."""

    def __init__(self, status: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.status = status

    def interactive(self, app, argv) -> int:
        self.calls.append(list(argv))
        return self.status


def make_app(tmp_path: Path, read_only: bool = False, snap=None, **kw) -> VstuiApp:
    engine = RecordingEngine(Paths.from_root(tmp_path), read_only=read_only)
    source = kw.pop("source", None) or FixedSource(snap or small_snapshot())
    return VstuiApp(engine, source, runner=kw.pop("runner", StubRunner()), **kw)


def drive(app: VstuiApp, scenario: Callable, size=(80, 24)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())


async def settle(pilot) -> None:
    """Wait for the first snapshot on screen and for running operations."""
    await pilot.pause()
    await first_snapshot(pilot.app)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def first_snapshot(app: VstuiApp, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while app.snapshot is None:
        if loop.time() > deadline:
            raise AssertionError("no snapshot reached the console")
        await asyncio.sleep(0.01)


def screen_text(app: VstuiApp) -> str:
    """What the screen shows, as plain text (for assertions)."""
    w, h = app.size
    console = Console(record=True, width=w, height=h, file=io.StringIO(), color_system=None)
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()
