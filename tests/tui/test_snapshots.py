"""SVG snapshots of every screen at 80x24 (pytest-textual-snapshot).

Accept changes on purpose with ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import pytest

from tests.tui.helpers import first_snapshot, make_app

SIZE = (80, 24)


async def _wait(pilot) -> None:
    await pilot.pause()
    await first_snapshot(pilot.app)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.2)  # the log pane paints on the next refresh


def _app(tmp_path, read_only=False):
    # One snapshot only: with the usual 1 s polling, a slow run (e.g. after
    # test_app.py on a busy machine) took a second one before the picture,
    # and the sparklines showed two samples instead of one.
    app = make_app(tmp_path, read_only=read_only, interval=3600)
    log = app.engine.paths.log_file("db")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("vinit: starting /etc/rc.local\npostgres: database system is ready\n")
    return app


SCREENS = {
    "guests": [],
    "detail": ["down", "enter"],
    "detail_log": ["down", "enter", "l"],
    "processes": ["2"],
    "processes_tree": ["2", "t"],
    "kill": ["2", "f9"],
    "stop_confirm": ["down", "minus"],
    "editor": ["end", "e"],
    "audit": ["3"],
    "help": ["2", "question_mark"],
    "build_form": ["n"],
    "delete_confirm": ["down", "D"],
}


class TestScreens:
    @pytest.mark.parametrize("name", sorted(SCREENS))
    def test_screen(self, name, snap_compare, tmp_path):
        assert snap_compare(_app(tmp_path), press=SCREENS[name], terminal_size=SIZE,
                            run_before=_wait)  # fmt: skip


class TestReadOnly:
    @pytest.mark.parametrize("name", ["guests", "processes", "detail", "help"])
    def test_screen(self, name, snap_compare, tmp_path):
        keys = SCREENS[name] if name != "help" else ["question_mark"]
        assert snap_compare(_app(tmp_path, read_only=True), press=keys, terminal_size=SIZE,
                            run_before=_wait)  # fmt: skip
