"""Pilot tests: every screen and every action, in write and read-only mode."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import replace

from textual.widgets import Footer

from engine.datamodel import HOST_NAME
from engine.facade import read_starttime
from tests.tui.fakes import FixedSource, big_snapshot, proc, small_snapshot
from tests.tui.helpers import StubRunner, drive, make_app, screen_text, settle
from vstui.app.app import SnapshotReady
from vstui.app.screens.audit import NOT_AVAILABLE, AuditScreen
from vstui.app.screens.detail import DetailScreen
from vstui.app.screens.editor import EditorScreen
from vstui.app.screens.guests import GuestsScreen
from vstui.app.screens.help import HelpScreen
from vstui.app.screens.procs import ProcessesScreen
from vstui.app.widgets.dialogs import (
    ConfirmDialog,
    ExecOutput,
    FormDialog,
    KillDialog,
    PickDialog,
    TypeNameDialog,
)


def rows(app) -> list:
    return list(app.screen.table.order)


# -- screens ------------------------------------------------------------
def test_guests_screen_lists_every_guest_host_first(tmp_path):
    app = make_app(tmp_path)

    async def scenario(pilot):
        assert isinstance(app.screen, GuestsScreen)
        assert rows(app) == ["", "db", "mail", "web"]
        text = screen_text(app)
        assert "(host)" in text and "230M/256M" in text and "stopped" in text
        assert "2/3 running" in text

    drive(app, scenario)


def test_guests_sort_and_filter(tmp_path):
    app = make_app(tmp_path)

    async def scenario(pilot):
        await pilot.press("greater_than_sign")
        app.screen.query_one("#sortpick OptionList").highlighted = 2  # CPU%
        await pilot.press("enter")
        await pilot.press("I")  # invert: busiest first
        await settle(pilot)
        assert rows(app)[:2] == ["", "db"]  # the host row stays on top
        await pilot.press("slash", *"we", "enter")
        await settle(pilot)
        assert rows(app) == ["", "web"]
        await pilot.press("escape")
        assert rows(app) == ["", "db", "web", "mail"]  # filter cleared, sort kept

    drive(app, scenario)


def test_sort_picker_opens_over_the_table_without_a_screen_switch(tmp_path):
    """The picker is part of the table's screen: opening and closing it
    neither switches screens (a full repaint of the screen below) nor
    rebuilds the key footer, whose keys stay the same; the focus stays on
    the table (moving it restyled the table and repainted the whole screen)."""
    app = make_app(tmp_path, first_screen="processes")
    rebuilt: list[object] = []

    async def scenario(pilot):
        await settle(pilot)
        screen = app.screen
        footer = screen.query_one(Footer)
        real = footer.recompose

        async def counted():
            rebuilt.append(1)
            await real()

        footer.recompose = counted
        await pilot.press("greater_than_sign")
        await settle(pilot)
        assert app.screen is screen and "Sort by" in screen_text(app)
        assert screen.table.has_focus and screen.query_one("#sortpick OptionList").highlighted == 0
        await pilot.press("down", "down", "enter")  # CPU%, memory, PID
        await settle(pilot)
        assert app.screen is screen and "Sort by" not in screen_text(app)
        assert screen.table.sort_key == "pid" and screen.table.has_focus
        await pilot.press("greater_than_sign", "down", "escape")
        await settle(pilot)
        assert "Sort by" not in screen_text(app) and screen.table.sort_key == "pid"
        assert screen.table.has_focus and isinstance(app.screen, ProcessesScreen)
        assert rebuilt == []

    drive(app, scenario, size=(160, 48))


def test_sort_picker_takes_its_keys_and_clicks_while_the_table_keeps_the_focus(tmp_path):
    """The table keeps the focus under the picker: the picker still gets its
    keys (j/k, home/end, enter, escape) and a click on an option picks it; a
    click elsewhere or the focus moving away (the filter box) closes it."""
    app = make_app(tmp_path, first_screen="processes")

    async def scenario(pilot):
        screen = app.screen
        picker = screen.query_one("#sortpick")
        options = screen.query_one("#sortpick OptionList")
        await pilot.press("greater_than_sign", "j", "j", "k", "end", "home", "j")
        assert picker.shown and options.highlighted == 1 and screen.table.cursor_row == 0
        await pilot.press("enter")  # memory
        assert not picker.shown and screen.table.sort_key == "rss"
        await pilot.press("greater_than_sign")
        await pilot.click(options, offset=(2, 2))  # the third option: PID
        await settle(pilot)
        assert not picker.shown and screen.table.sort_key == "pid"
        assert screen.table.has_focus
        await pilot.press("greater_than_sign")
        await pilot.click(screen.table, offset=(60, 15))
        assert not picker.shown and screen.table.sort_key == "pid"
        await pilot.press("greater_than_sign", "slash")  # the filter box takes the focus
        assert not picker.shown and screen.query_one("#filter").has_focus
        await pilot.press("j")  # typed into the filter, not a move in a hidden picker
        assert screen.query_one("#filter").value == "j" and options.highlighted == 2

    drive(app, scenario, size=(100, 30))


def test_detail_screen_shows_config_gauges_tree_and_log(tmp_path):
    app = make_app(tmp_path)
    log = app.engine.paths.log_file("db")
    log.parent.mkdir(parents=True)
    log.write_text("boot line 1\npostgres ready\n")

    async def scenario(pilot):
        await pilot.press("down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen) and app.screen.guest == "db"
        text = screen_text(app)
        assert "xid 102" in text and "template skeleton" in text and "198.18.0.102/24" in text
        assert "MEM" in text and "90%" in text and "└─ postgres -D" in text
        await pilot.press("l")
        await settle(pilot)
        assert "postgres ready" in screen_text(app)
        log.write_text("boot line 1\npostgres ready\nnew line after\n")
        app.post_message(SnapshotReady(small_snapshot()))
        await settle(pilot)
        assert "new line after" in screen_text(app)
        await pilot.press("l", "escape")
        assert isinstance(app.screen, GuestsScreen)

    drive(app, scenario)


def test_processes_screen_tree_filter_guest_pause(tmp_path):
    app = make_app(tmp_path)

    async def scenario(pilot):
        await pilot.press("2")
        await settle(pilot)
        assert isinstance(app.screen, ProcessesScreen)
        assert rows(app)[0] == (1202, 1302)  # busiest first
        await pilot.press("t")
        text = screen_text(app)
        assert "├─ /usr/sbin/sshd -D" in text and "│  └─ sshd: root@pts/0" in text
        await pilot.press("g")
        dialog = app.screen
        assert isinstance(dialog, PickDialog)
        ids = [oid for oid, _ in dialog.options]
        dialog.query_one("OptionList").highlighted = ids.index("web")
        await pilot.press("enter")
        await settle(pilot)
        assert {app.screen.table.items[k].guest for k in rows(app)} == {"web"}
        await pilot.press("slash", *"httpd", "enter")
        assert [k[0] for k in rows(app)] == [1104]
        await pilot.press("Z")
        assert app.screen.paused and "PAUSED" in screen_text(app)
        before = list(rows(app))
        app.screen.filter_text = ""
        app.post_message(SnapshotReady(small_snapshot()))
        await settle(pilot)
        assert rows(app) == before  # paused: the view does not move
        await pilot.press("Z")
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, GuestsScreen)

    drive(app, scenario)


def test_filter_typing_shows_each_key_and_relayouts_nothing(tmp_path):
    """Each key shows at once, narrows the table on the same frame, and (the
    box and the table keeping their size) never lays out the whole screen,
    not even when the rows stop or start overflowing the table (it draws no
    scrollbar: its flags change, nothing on screen does)."""
    app = make_app(tmp_path, snap=big_snapshot(300, 5), first_screen="processes")

    async def scenario(pilot):
        screen = app.screen
        await pilot.press("slash")
        await settle(pilot)
        layouts = []
        real = screen._refresh_layout
        screen._refresh_layout = lambda *a, **kw: (layouts.append(1), real(*a, **kw))[1]
        typed = ""
        for ch in "worker --id 1":
            await pilot.press("space" if ch == " " else ch)
            typed += ch
            assert typed in screen_text(app)
            commands = [screen.table.items[k].cmdline for k in rows(app)]
            assert commands and all(typed in c for c in commands)
        assert len(rows(app)) == 111 and screen.table.show_vertical_scrollbar  # 1, 1x, 1xx
        assert layouts == []
        await pilot.press("2")  # 12, 120..129: fits, the scrollbar goes
        assert len(rows(app)) == 11 and not screen.table.show_vertical_scrollbar
        await pilot.press("backspace")
        assert len(rows(app)) == 111 and screen.table.show_vertical_scrollbar
        assert screen.table.virtual_size.height == 112 and layouts == []
        box = screen.query_one("#filter")
        box_line = screen_text(app).splitlines()[box.region.y + 1]
        assert "worker --id 1" in box_line and "worker --id 12" not in box_line
        await pilot.press(*"x" * 90)  # longer than the box: its end stays in view
        box_line = screen_text(app).splitlines()[box.region.y + 1]
        assert rows(app) == [] and "x" * 70 in box_line and "worker" not in box_line
        await pilot.press("escape")
        assert screen.filter_text == "" and len(rows(app)) == 300
        assert not screen.query_one("#filter").has_class("-shown")

    drive(app, scenario)


def test_processes_screen_opened_for_one_guest(tmp_path):
    """What ``vtop --xid web`` opens: only that guest's processes."""
    app = make_app(tmp_path, first_screen="processes", guest="web")

    async def scenario(pilot):
        assert isinstance(app.screen, ProcessesScreen)
        assert {app.screen.table.items[k].guest for k in rows(app)} == {"web"}
        assert "Processes of web" in screen_text(app)

    drive(app, scenario)


def test_audit_screen_groups_findings_with_fixes(tmp_path):
    app = make_app(tmp_path)

    async def scenario(pilot):
        await pilot.press("3")
        await settle(pilot)
        text = screen_text(app)
        assert text.index("HIGH (2)") < text.index("MEDIUM (1)") < text.index("INFO (1)")
        assert "fix: chmod 000 /vservers" in text and "web: web keeps CAP_SYS_ADMIN" in text
        assert "not checked: /proc/sys/kernel/kptr_restrict" in text

    drive(app, scenario, size=(100, 40))


def test_audit_screen_says_plainly_when_missing(tmp_path):
    app = make_app(tmp_path)
    app.engine.recorder.missing.add("engine.audit")

    async def scenario(pilot):
        await pilot.press("3")
        await settle(pilot)
        assert isinstance(app.screen, AuditScreen)
        assert NOT_AVAILABLE in screen_text(app)

    drive(app, scenario)


def test_help_lists_keys_of_the_current_screen(tmp_path):
    app = make_app(tmp_path)

    async def scenario(pilot):
        await pilot.press("2", "question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "Kill" in text and "f9 ctrl+k" in text and "Tree" in text and "Pause" in text
        await pilot.press("end")
        await pilot.pause()
        assert "↑ ↓ k j" in screen_text(app)  # k moves up
        await pilot.press("escape")
        assert isinstance(app.screen, ProcessesScreen)

    drive(app, scenario)


def test_command_palette_jumps_to_a_guest(tmp_path):
    app = make_app(tmp_path)

    async def scenario(pilot):
        await pilot.press("colon")
        await pilot.pause()
        await pilot.press(*"Guest web")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DetailScreen) and app.screen.guest == "web"

    drive(app, scenario)


# -- actions in write mode ------------------------------------------------
def test_start_stop_restart_with_confirm(tmp_path):
    app = make_app(tmp_path)
    rec = app.engine.recorder

    async def scenario(pilot):
        await pilot.press("down", "down")  # mail
        await pilot.press("plus")
        await settle(pilot)
        await pilot.press("minus")  # stop asks, like restart
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("enter")  # Cancel is focused: nothing happens
        await settle(pilot)
        assert rec.ops() == ["start"]
        await pilot.press("minus", "y")
        await settle(pilot)
        assert rec.ops() == ["start", "stop"]
        assert rec.calls[0][2] == ("mail",)
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("enter")  # Cancel is focused: nothing happens
        await settle(pilot)
        assert rec.ops() == ["start", "stop"]
        await pilot.press("R", "tab", "enter")
        await settle(pilot)
        assert rec.ops()[-2:] == ["stop", "start"]  # restart: the facade stops, then starts

    drive(app, scenario)


def test_host_row_has_no_guest_actions(tmp_path):
    app = make_app(tmp_path)

    async def scenario(pilot):
        await pilot.press("plus")
        await settle(pilot)
        assert app.engine.recorder.ops() == []

    drive(app, scenario)


def test_build_and_delete(tmp_path):
    app = make_app(tmp_path)
    rec = app.engine.recorder

    async def scenario(pilot):
        await pilot.press("n")
        assert isinstance(app.screen, FormDialog)
        await pilot.press(*"new1", "enter")
        await settle(pilot)
        assert rec.calls[-1][1] == "build" and rec.calls[-1][2] == ("new1",)
        assert rec.calls[-1][3]["template"] == "skeleton"
        await pilot.press("down", "D")
        assert isinstance(app.screen, TypeNameDialog)
        await pilot.press(*"dx", "enter")  # wrong name: refused
        assert isinstance(app.screen, TypeNameDialog)
        await pilot.press("backspace", "backspace", *"db", "enter")
        await settle(pilot)
        # db is running: the dialog offered (ticked) to stop it first
        assert rec.calls[-1][1] == "delete" and rec.calls[-1][2] == ("db",)
        assert rec.calls[-1][3] == {"force": True}

    drive(app, scenario)


def test_enter_runs_vserver_enter_through_the_runner(tmp_path):
    runner = StubRunner(status=0)
    app = make_app(tmp_path, runner=runner)

    async def scenario(pilot):
        await pilot.press("end", "s")
        await settle(pilot)
        assert runner.calls and runner.calls[0][-2:] == ["web", "enter"]
        assert "--root" in runner.calls[0] and str(tmp_path) in runner.calls[0]
        assert isinstance(app.screen, GuestsScreen)  # back in the app

    drive(app, scenario)


def test_exec_streams_output_and_exit_status(tmp_path):
    app = make_app(tmp_path)

    async def scenario(pilot):
        await pilot.press("end", "x")
        await pilot.press(*"echo hello-from-exec; exit 3", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ExecOutput)
        app.screen._done.wait(10)
        await settle(pilot)
        text = screen_text(app)
        assert "hello-from-exec" in text and "exit status 3" in text
        # the facade built `vserver --root R web exec /bin/sh -c CMD` (run on the host here)
        assert app.engine.exec_command[-5:] == [
            "web",
            "exec",
            "/bin/sh",
            "-c",
            "echo hello-from-exec; exit 3",
        ]
        await pilot.press("escape")
        assert isinstance(app.screen, GuestsScreen)

    drive(app, scenario)


def _with_sleepers(n: int, sleepers: list):
    sleepers.extend(subprocess.Popen(["sleep", "300"]) for _ in range(n))
    extra = tuple(
        proc(
            s.pid,
            401,
            HOST_NAME,
            0,
            f"sleep 300 #{i}",
            starttime=read_starttime(s.pid),
            nspid=s.pid,
            cpu_percent=50.0 - i,
        )
        for i, s in enumerate(sleepers)
    )
    snap = small_snapshot()
    return replace(snap, procs=snap.procs + extra)


def test_kill_dialog_lists_the_target_and_enter_sends_term(tmp_path):
    sleepers: list[subprocess.Popen] = []
    try:
        snap = _with_sleepers(1, sleepers)
        app = make_app(tmp_path, snap=snap)

        async def scenario(pilot):
            await pilot.press("2")
            await settle(pilot)
            assert app.screen.table.cursor_item.pid == sleepers[0].pid
            await pilot.press("k")  # k moves up: no dialog
            assert not isinstance(app.screen, KillDialog)
            await pilot.press("f9")
            assert isinstance(app.screen, KillDialog)
            assert app.screen.query_one("KeyList").highlighted == 0  # TERM preselected
            await pilot.pause()
            text = screen_text(app)
            assert str(sleepers[0].pid) in text and "sleep 300" in text and "(host)" in text
            assert "Send TERM" in text
            await pilot.press("enter")  # the default is the action
            await settle(pilot)

        drive(app, scenario)
        assert sleepers[0].wait(timeout=5) == -signal.SIGTERM
    finally:
        for s in sleepers:
            s.kill()
            s.wait()


def test_kill_cancel_and_bulk_kill_of_marked_rows(tmp_path):
    sleepers: list[subprocess.Popen] = []
    try:
        snap = _with_sleepers(3, sleepers)
        app = make_app(tmp_path, snap=snap)

        async def scenario(pilot):
            await pilot.press("2")
            await settle(pilot)
            await pilot.press("ctrl+k", "escape")  # the dialog, cancelled
            await settle(pilot)
            assert all(s.poll() is None for s in sleepers)
            await pilot.press("space", "space")  # mark the two busiest sleepers
            assert "2 marked" in screen_text(app)
            await pilot.press("f9")
            app.screen.query_one("KeyList").highlighted = 4  # KILL
            await pilot.pause()
            text = screen_text(app)
            assert "Send KILL" in text and str(sleepers[0].pid) in text
            assert str(sleepers[1].pid) in text and str(sleepers[2].pid) not in text
            await pilot.press("enter")
            await settle(pilot)

        drive(app, scenario)
        assert sleepers[0].wait(timeout=5) == -signal.SIGKILL
        assert sleepers[1].wait(timeout=5) == -signal.SIGKILL
        assert sleepers[2].poll() is None
    finally:
        for s in sleepers:
            s.kill()
            s.wait()


def test_editor_saves_changes_and_offers_restart(tmp_path):
    app = make_app(tmp_path)
    rec = app.engine.recorder

    async def scenario(pilot):
        await pilot.press("end", "e")
        await settle(pilot)
        assert isinstance(app.screen, EditorScreen)
        text = screen_text(app)
        assert "CHOWN" in text and "change file owners" in text
        editor = app.screen
        editor.query_one("#caps").deselect("NET_RAW")
        editor.query_one("#caps").select("SYS_NICE")
        editor.query_one("#flags").select("private")
        editor.query_one("#limit-V_MEMORY").value = "512M"
        assert editor.changes() == {
            "S_CAPS": "CAP_SYS_NICE", "S_FLAGS": "lock private", "V_MEMORY": "512M",
        }  # fmt: skip
        await pilot.press("ctrl+s")
        await settle(pilot)
        update = next(c for c in rec.calls if c[1] == "update_config")
        assert update[2] == (
            "web",
            {"S_CAPS": "CAP_SYS_NICE", "S_FLAGS": "lock private", "V_MEMORY": "512M"},
        )
        assert "apply" in rec.ops()  # memory applied live through the cgroup manager
        assert isinstance(app.screen, ConfirmDialog)  # caps/flags need a restart
        await pilot.press("tab", "enter")
        await settle(pilot)
        assert rec.ops()[-2:] == ["stop", "start"]  # the offered restart

    drive(app, scenario, size=(100, 40))


# -- read-only mode -------------------------------------------------------
DANGEROUS_KEYS = {
    GuestsScreen: ["plus", "minus", "R", "n", "s", "x", "D"],
    ProcessesScreen: ["ctrl+k", "f9", "s", "x"],
}


def test_read_only_hides_dangerous_keys_and_refuses_them(tmp_path):
    from vstui.app.actions import DANGEROUS

    runner = StubRunner()
    app = make_app(tmp_path, read_only=True, runner=runner)

    async def scenario(pilot):
        assert "READ-ONLY" in screen_text(app)
        for screen_key in ("1", "2"):
            await pilot.press(screen_key)
            await settle(pilot)
            await pilot.press("end")
            shown = {b.binding.action for b in app.screen.active_bindings.values()}
            assert not shown & DANGEROUS, shown & DANGEROUS
            footer = screen_text(app).splitlines()[-1]
            for word in ("Start", "Stop", "Shell", "Exec", "Kill", "Delete", "New"):
                assert word not in footer
            for key in DANGEROUS_KEYS[type(app.screen)]:
                await pilot.press(key)
                await settle(pilot)
                assert isinstance(app.screen, GuestsScreen | ProcessesScreen), key
                footer = screen_text(app).splitlines()[-1]
                assert "read-only" in footer and "changes the host" in footer, (key, footer)
        for action in DANGEROUS:  # handled (explained), never run
            assert await app.run_action(action, app.screen) is True
        assert app.engine.recorder.calls == [] and runner.calls == []

    drive(app, scenario)


def test_read_only_editor_shows_but_cannot_save(tmp_path):
    app = make_app(tmp_path, read_only=True)

    async def scenario(pilot):
        await pilot.press("end", "e")
        await settle(pilot)
        assert isinstance(app.screen, EditorScreen)
        assert "read-only" in screen_text(app)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.engine.recorder.calls == []

    drive(app, scenario, size=(100, 40))


def test_config_only_source_says_live_figures_are_missing(tmp_path):
    from engine.facade import Engine
    from engine.paths import Paths
    from vstui.app.app import VstuiApp
    from vstui.app.source import NO_OBSERVE, ConfigOnlySource

    paths = Paths.from_root(tmp_path)
    paths.config_dir.mkdir(parents=True)
    (paths.config_dir / "alpha.conf").write_text('S_HOSTNAME="alpha"\n')
    engine = Engine(paths, read_only=True)
    app = VstuiApp(engine, ConfigOnlySource(engine), runner=StubRunner())

    async def scenario(pilot):
        text = screen_text(app)
        assert "alpha" in text and NO_OBSERVE[:40] in text.replace("\n", "")
        assert "2.5" not in text  # no invented figure anywhere
        assert "?" in text

    drive(app, scenario, size=(120, 24))


def test_big_snapshot_renders_only_visible_rows(tmp_path):
    from tests.tui.fakes import big_snapshot

    app = make_app(tmp_path, snap=big_snapshot(10_000, 50))
    calls = []

    async def scenario(pilot):
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.table
        original = table.formatter
        table.formatter = lambda *a: calls.append(a) or original(*a)
        table.invalidate()
        await pilot.pause()
        assert len(table.order) == 10_000
        assert 0 < len(calls) <= 2 * 24

    drive(app, scenario)


class KernelAwareSource:
    """A fixed source that, like engine.observe's Observer, can skip kernel threads."""

    def __init__(self) -> None:
        self.inner = FixedSource(small_snapshot())
        self.kernel_threads = True
        self.asked: list[bool] = []

    def snapshot(self):
        self.asked.append(self.kernel_threads)
        return self.inner.snapshot()


def test_kernel_threads_are_read_every_second_only_while_listed(tmp_path):
    """Hidden (htop's default) or on a screen without a process list, the source
    reads them less often; K shows them and reads them every second."""
    source = KernelAwareSource()
    app = make_app(tmp_path, first_screen="processes", source=source)

    async def scenario(pilot):
        app.take_snapshot()
        assert source.asked[-1] is False
        await pilot.press("K")
        await pilot.pause()
        app.take_snapshot()
        assert source.asked[-1] is True
        app.view_hint = None  # another screen on top
        app.take_snapshot()
        assert source.asked[-1] is False

    drive(app, scenario)
