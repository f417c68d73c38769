"""The console's storage pieces: FROZEN, freeze/thaw keys, the Clone dialog and the
detail screen's Snapshots pane; all refused in read-only mode."""

from __future__ import annotations

from dataclasses import replace

from engine.rootfs.snapshots import Snapshot
from tests.tui.fakes import small_snapshot
from tests.tui.helpers import drive, make_app, screen_text, settle
from vstui.app.screens.detail import DetailScreen
from vstui.app.widgets.dialogs import ConfirmDialog, FormDialog
from vstui.app.widgets.snapshots import SnapshotsPane

SNAPS = [
    Snapshot("web", "before-upgrade", 1_700_000_000.0, "btrfs", 600 << 20, 16 << 10, 600 << 20),
    Snapshot("web", "20261204T153012Z", 1_700_000_100.0, "btrfs", 610 << 20, 12 << 20, 598 << 20),
]


def frozen_web():
    snap = small_snapshot()
    guests = tuple(replace(g, state="frozen") if g.name == "web" else g for g in snap.guests)
    return replace(snap, guests=guests)


def test_frozen_guest_shows_frozen_and_freeze_thaw_keys(tmp_path):
    app = make_app(tmp_path, snap=frozen_web())
    rec = app.engine.recorder

    async def scenario(pilot):
        assert "FROZEN" in screen_text(app)
        await pilot.press("down")  # db (rows: host, db, mail, web by name)
        rows = list(app.screen.table.order)
        await pilot.press(*["down"] * (rows.index("web") - 1))
        await pilot.press("u")
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        assert [(op, a) for _m, op, a, _k in rec.calls] == [("thaw", ("web",)),
                                                             ("freeze", ("web",))]  # fmt: skip
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen) and "FROZEN" in screen_text(app)

    drive(app, scenario)


def test_clone_dialog(tmp_path):
    app = make_app(tmp_path)
    rec = app.engine.recorder

    async def scenario(pilot):
        await pilot.press("down", "c")  # db
        assert isinstance(app.screen, FormDialog)
        await pilot.press(*"db2", "tab", *"198.18.0.77/24", "tab", *"db2.test", "enter")
        await settle(pilot)
        assert rec.calls[-1][1] == "clone"
        assert rec.calls[-1][2] == ("db", "db2", ("198.18.0.77/24",), "db2.test", None)

    drive(app, scenario)


def test_snapshots_pane_list_create_restore_delete(tmp_path):
    app = make_app(tmp_path)
    rec = app.engine.recorder
    rec.snapshots["web"] = SNAPS

    async def scenario(pilot):
        app.open_detail("web")
        await settle(pilot)
        await pilot.press("S")
        await settle(pilot)
        text = screen_text(app)
        assert "before-upgrade" in text and "20261204T153012Z" in text
        assert "2023-11-14 22:13:20" in text and "600M" in text
        await pilot.press("n")
        assert isinstance(app.screen, FormDialog)
        await pilot.press(*"pre", "enter")
        await settle(pilot)
        assert rec.calls[-1][1:3] == ("snapshot_create", ("web", "pre"))
        await pilot.press("r")  # restore asks, Cancel focused
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("enter")
        await settle(pilot)
        assert rec.ops()[-1] == "snapshot_create"
        await pilot.press("r", "tab", "enter")
        await settle(pilot)
        assert rec.calls[-1][1:3] == ("snapshot_restore", ("web", "before-upgrade"))
        await pilot.press("down", "d", "tab", "enter")
        await settle(pilot)
        assert rec.calls[-1][1:3] == ("snapshot_delete", ("web", "20261204T153012Z"))
        await pilot.press("S")  # back to the process tree
        await settle(pilot)
        assert not app.screen.query_one(SnapshotsPane).display or "SNAPSHOT" not in screen_text(app)

    drive(app, scenario, size=(100, 30))


def test_read_only_refuses_every_storage_key(tmp_path):
    app = make_app(tmp_path, read_only=True)
    rec = app.engine.recorder
    rec.snapshots["web"] = SNAPS

    async def scenario(pilot):
        await pilot.press("down", "f", "u", "c")
        await settle(pilot)
        assert not isinstance(app.screen, FormDialog)
        app.open_detail("web")
        await settle(pilot)
        await pilot.press("S")  # the list may be read
        await settle(pilot)
        assert "before-upgrade" in screen_text(app)
        await pilot.press("n", "r", "d", "f", "u", "c")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen)
        for action in ("freeze", "thaw", "clone", "snap_create", "snap_restore", "snap_delete"):
            # refused: handled by saying why in the footer, never run
            assert await app.run_action(action, app.screen) is True
            assert "read-only" in screen_text(app).splitlines()[-1]
        assert rec.calls == []

    drive(app, scenario, size=(100, 30))


def test_detail_help_lists_the_snapshot_pane_keys(tmp_path):
    from vstui.app.screens.help import HelpScreen

    app = make_app(tmp_path)

    async def scenario(pilot):
        app.open_detail("web")
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for words in ("Snapshots", "New snapshot", "Restore", "Delete snapshot", "Freeze",
                      "Thaw", "Clone"):  # fmt: skip
            assert words in text, words

    drive(app, scenario, size=(120, 60))
