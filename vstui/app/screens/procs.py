"""Processes: every process on the host with its context (what ``vtop`` opens).

Also the process pane of the guest detail screen (``ProcPane``): tree or
flat, sort by any column, filter by text and guest, follow, pause, mark
rows with space (marks stay on their process, PID and start time, through
filters; the header counts them; U clears them) and signal them through one
dialog that lists every target and sends the highlighted signal on Enter.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Hashable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult

from engine.datamodel import HOST_NAME, ProcRow, Snapshot
from vstui.app import fmt
from vstui.app.actions import PROCS, bindings
from vstui.app.procview import ProcIndex, ViewSpec, guest_label
from vstui.app.screens.base import TableScreen
from vstui.app.widgets.dialogs import KillDialog, PickDialog
from vstui.app.widgets.linetable import Cell, Column, LineTable
from vstui.app.widgets.topbar import TopBar

PROC_COLUMNS = (
    Column("pid", "PID", 7, right=True),
    Column("guest", "GUEST", 10),
    Column("nspid", "VPID", 6, right=True),
    Column("user", "USER", 8),
    Column("state", "S", 1),
    Column("cpu", "CPU%", 5, right=True),
    Column("rss", "RSS", 6, right=True),
    Column("command", "COMMAND", 0, min_width=20),
)
GUEST_PROC_COLUMNS = tuple(c for c in PROC_COLUMNS if c.key != "guest")

SORTS = (
    ("cpu", "CPU%"), ("rss", "memory (RSS)"), ("pid", "PID"), ("nspid", "PID in guest"),
    ("guest", "guest"), ("user", "user"), ("state", "state"), ("time", "CPU time"),
    ("threads", "threads"), ("command", "command"),
)  # fmt: skip

SIGNALS = (
    ("TERM", "15 TERM  ask to exit (default)"),
    ("INT", " 2 INT    interrupt"),
    ("HUP", " 1 HUP    hang up / reload"),
    ("QUIT", " 3 QUIT   quit with core"),
    ("KILL", " 9 KILL   force, cannot be caught"),
    ("STOP", "19 STOP   freeze"),
    ("CONT", "18 CONT   continue"),
    ("USR1", "10 USR1   user signal 1"),
    ("USR2", "12 USR2   user signal 2"),
)
STATE_STYLE = {"R": "green", "D": "red", "Z": "red", "T": "yellow"}


def format_proc(p: ProcRow, prefix: str, with_guest: bool = True) -> list[Cell]:
    cells: list[Cell] = [str(p.pid)]
    if with_guest:
        cells.append(guest_label(p.guest))
    # Plain strings where there is no style: they draw several times faster.
    command: Cell = _tree_command(prefix, p.cmdline) if prefix else p.cmdline
    state_style = STATE_STYLE.get(p.state)
    cells += [
        str(p.nspid),
        p.user,
        Text(p.state, style=state_style) if state_style else p.state,
        f"{p.cpu_percent:.1f}",
        fmt.size(p.rss),
        command,
    ]
    return cells


@functools.lru_cache(maxsize=4096)
def _tree_command(prefix: str, cmdline: str) -> Text:
    """A tree row's command: its branch dimmed, then the command line. Made
    once per branch and command (two rich Texts joined, at each new CPU% of
    the row otherwise); shared, so never changed in place (LineTable copies
    a Text before it crops it)."""
    return Text(prefix, style="dim") + Text(cmdline)


# What format_proc shows of a row that may change while its process lives: a
# process that ran is a new row at every poll (its CPU time moved), and is
# formatted again only when one of these reads otherwise (CPU% and RSS as
# shown: a few pages more or a hundredth of a percent is the same line). Its
# user, VPID and command line are read once per process and exec
# (engine.procs.scan.Static), and an exec changes comm. A column that shows
# another field adds it here.
def proc_face(p: ProcRow) -> Hashable:
    return (p.pid, p.starttime, p.comm, p.guest, p.state, f"{p.cpu_percent:.1f}", fmt.size(p.rss))


def format_guest_proc(p: ProcRow, prefix: str) -> list[Cell]:
    return format_proc(p, prefix, with_guest=False)


class ProcActions(TableScreen):
    """Shared by the processes screen and the guest detail's process pane."""

    SORTS = SORTS
    show_kernel = False  # kernel threads hidden, as in htop (K shows them)
    guest_filter: str | None = None
    _snap: Snapshot | None = None

    def show_snapshot(self, snap: Snapshot) -> None:
        if self.paused:
            return
        super().show_snapshot(snap)
        self._snap = snap
        self.set_notice("; ".join(snap.errors))
        self.redraw()

    def proc_index(self, snap: Snapshot) -> ProcIndex:
        """This screen's processes of ``snap``, prepared for sorting and filtering."""
        return self.vapp.index_for(snap)

    def redraw(self) -> None:
        if self._snap is None:
            return
        index = self.proc_index(self._snap)
        table = self.procs_table
        spec = ViewSpec(
            self.filter_text, self.guest_filter, table.sort_key or "cpu", table.sort_reverse,
            self.tree, self.show_kernel,
        )  # fmt: skip
        self.remember_view(spec)
        view = index.view(spec)
        if table.marked:  # marks stay on their process until it is gone
            table.marked &= index.items.keys()
        table.set_data(view.order, index.items, view.prefixes)
        self._show_marks(view.order if table.marked else [])

    def remember_view(self, spec: ViewSpec) -> None:
        """Tell the poll worker what to prepare for the next snapshot."""
        self.vapp.view_hint = spec

    @property
    def procs_table(self) -> LineTable:
        return self.query_one("#procs", LineTable)

    @property
    def table(self) -> LineTable:
        return self.procs_table

    def action_tree(self) -> None:
        self.tree = not self.tree
        if self.tree:
            self.procs_table.sort_key, self.procs_table.sort_reverse = "pid", False
        self.keep_view()
        self.redraw()
        self.procs_table.sync_header()

    def action_kernel(self) -> None:
        self.show_kernel = not self.show_kernel
        self.notify("kernel threads " + ("shown" if self.show_kernel else "hidden"))
        self.redraw()

    def action_follow(self) -> None:
        self.procs_table.follow = not self.procs_table.follow
        self.notify("follow " + ("on: the cursor stays on its process" if self.procs_table.follow
                                 else "off: the cursor stays on its line"))  # fmt: skip

    def action_mark(self) -> None:
        self.procs_table.toggle_mark()
        self._show_marks()

    def action_unmark(self) -> None:
        table = self.procs_table
        if table.marked:
            table.marked.clear()
            table.sync()
            self._show_marks()

    def _show_marks(self, shown: list | None = None) -> None:
        """The mark count in the header, with how many the filter hides."""
        table = self.procs_table
        hidden = 0
        if table.marked:
            on_screen = table.positions if shown is None else set(shown)
            hidden = sum(1 for key in table.marked if key not in on_screen)
        self.query_one(TopBar).set_marks(len(table.marked), hidden)

    def current_guest(self) -> str | None:
        row = self.procs_table.cursor_item
        return row.guest if row is not None and row.guest != HOST_NAME else None

    def kill_targets(self) -> list[ProcRow]:
        """The marked processes (hidden by the filter or not), else the cursor's."""
        table = self.procs_table
        if table.marked and self._snap is not None:
            items = self.proc_index(self._snap).items
            return sorted((items[k] for k in table.marked if k in items), key=lambda p: p.pid)
        return [table.cursor_item] if table.cursor_item is not None else []

    def action_kill(self) -> None:
        targets = self.kill_targets()
        if not targets:
            self.notify("no process selected", severity="warning")
            return
        many = len(targets) > 1
        title = f"Send a signal to {len(targets)} process{'es' if many else ''}"
        rows = [_kill_row(p) for p in targets]
        dialog = KillDialog(title, KILL_HEADER, rows, SIGNALS, "TERM")
        self.app.push_screen(dialog, lambda sig: self._kill(targets, sig))

    def _kill(self, targets: list[ProcRow], sig: str | None) -> None:
        if sig:
            self.vapp.op_kill(targets, signal.Signals[f"SIG{sig}"])


KILL_HEADER = ("PID", "GUEST", "VPID", "COMMAND")


def _kill_row(p: ProcRow) -> tuple[str, str, str, str]:
    """Who exactly gets the signal: host PID, guest, PID in the guest, command."""
    return (str(p.pid), guest_label(p.guest), str(p.nspid), p.cmdline)


class ProcessesScreen(ProcActions):
    """Every process on the host, with its guest."""

    SCOPE = PROCS
    TITLE_TEXT = "Processes"
    BINDINGS: ClassVar = bindings(PROCS)

    def __init__(self, guest: str | None = None) -> None:
        super().__init__()
        self.guest_filter = guest

    def compose(self) -> ComposeResult:
        yield from self.compose_table()
        yield LineTable(PROC_COLUMNS, format_proc, id="procs", face=proc_face)
        yield from self.footer()

    def on_mount(self) -> None:
        self.restore_view("cpu", True)
        self.procs_table.focus()
        self._title()
        if self.vapp.snapshot is not None:
            self.show_snapshot(self.vapp.snapshot)

    def _title(self) -> None:
        bar = self.query_one(TopBar)
        bar.title = "Processes" + (
            f" of {guest_label(self.guest_filter)}" if self.guest_filter is not None else ""
        )
        bar.update_from(self.vapp.snapshot, paused=self.paused)

    def on_screen_suspend(self) -> None:
        self.vapp.view_hint = None  # nothing to prepare while another screen is on top

    def action_open(self) -> None:
        row = self.procs_table.cursor_item
        if row is not None and row.guest != HOST_NAME:
            self.vapp.open_detail(row.guest)

    def action_guest_filter(self) -> None:
        snap = self.vapp.snapshot
        names = [g.name for g in snap.guests] if snap else []
        options = [("*", "all guests and the host")] + [
            (n or "@host", guest_label(n)) for n in names
        ]
        self.app.push_screen(PickDialog("Show processes of", options, "*"), self._guest_picked)

    def _guest_picked(self, choice: str | None) -> None:
        if choice is None:
            return
        self.guest_filter = None if choice == "*" else ("" if choice == "@host" else choice)
        self.vapp.focus_host(self.guest_filter)  # with several hosts: that host's processes
        self._title()
        self.redraw()
