"""The guest detail screen's Snapshots pane: list, create, restore, delete.

The list is read through the engine facade in a worker (a btrfs snapshot's
sizes come from its qgroup), on show and after each change. Restore and
delete ask first, with Cancel focused; in read-only mode their keys are
hidden and the facade refuses them again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from vstui.app import fmt
from vstui.app.actions import SNAPSHOTS, allowed, bindings
from vstui.app.widgets.dialogs import ConfirmDialog, FormDialog
from vstui.app.widgets.linetable import Cell, Column, LineTable

if TYPE_CHECKING:
    from vstui.app.app import VstuiApp

COLUMNS = (
    Column("name", "SNAPSHOT", 0, min_width=18),
    Column("created", "CREATED (UTC)", 19),
    Column("size", "SIZE", 8, right=True),
    Column("exclusive", "EXCLUSIVE", 9, right=True, hide=1),
    Column("shared", "SHARED", 8, right=True, hide=2),
)


def _size(value: int | None) -> str:
    return "-" if value is None else fmt.size(value)


def format_snapshot(snap: Any, _prefix: str) -> list[Cell]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(snap.created))
    return [snap.name, when, _size(snap.size), _size(snap.exclusive), _size(snap.shared)]


class SnapshotsPane(Vertical, can_focus=False):
    """One guest's snapshots; keys n (new), r (restore), d (delete)."""

    BINDINGS: ClassVar = bindings(SNAPSHOTS)
    DEFAULT_CSS = """
    SnapshotsPane { height: 1fr; }
    SnapshotsPane #snap-status { height: 1; color: $text-muted; }
    """

    def __init__(self, guest: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.guest = guest

    @property
    def vapp(self) -> VstuiApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static("", id="snap-status", markup=False)
        yield LineTable(COLUMNS, format_snapshot, id="snap-table")

    @property
    def table(self) -> LineTable:
        return self.query_one("#snap-table", LineTable)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return allowed(action, self.vapp.read_only)

    def focus_table(self) -> None:
        self.table.focus()

    # -- the list --------------------------------------------------------
    @work(thread=True, exclusive=True, group="snapshots", exit_on_error=False)
    def reload(self) -> None:
        try:
            found = self.vapp.engine.snapshots(self.guest)
            error = ""
        except Exception as exc:  # VstuiError and a pool that will not mount alike
            found, error = [], getattr(exc, "message", str(exc))
        self.app.call_from_thread(self._show, found, error)

    def _show(self, found: list[Any], error: str) -> None:
        self.table.set_data([s.name for s in found], {s.name: s for s in found})
        if error:
            text = f"cannot list snapshots: {error}"
        elif not found:
            text = "no snapshots; n takes one (a running guest is frozen for the instant)"
        else:
            text = f"{len(found)} snapshot(s); n new, r restore (guest stopped), d delete"
        self.query_one("#snap-status", Static).update(text)

    def _selected(self) -> str | None:
        key = self.table.cursor_key
        if key is None:
            self.notify("no snapshot selected", severity="warning")
        return key  # type: ignore[return-value]

    # -- actions ---------------------------------------------------------
    def _op(self, what: str, call: Any) -> None:
        self.vapp._run(what, call, lambda _: (self.vapp.notify(f"{what}: done"), self.reload()))

    def action_snap_create(self) -> None:
        fields = [("name", "snapshot name (default: the UTC time)", "")]
        self.vapp.push_screen(FormDialog(f"Snapshot of {self.guest}", fields, "Take"),
                              self._create)  # fmt: skip

    def _create(self, values: dict[str, str] | None) -> None:
        if values is None:
            return
        snap = values.get("name") or None
        engine = self.vapp.engine
        self._op(f"snapshot {self.guest}", lambda: engine.snapshot_create(self.guest, snap))

    def action_snap_restore(self) -> None:
        snap = self._selected()
        if snap is None:
            return
        body = (f"{self.guest}'s tree is replaced by snapshot {snap}; what changed since is "
                "lost. The guest must be stopped.")  # fmt: skip
        engine = self.vapp.engine
        self.vapp.push_screen(
            ConfirmDialog(f"Restore {self.guest} to {snap}?", body, "Restore"),
            lambda ok: ok and self._op(f"restore {self.guest}",
                                       lambda: engine.snapshot_restore(self.guest, snap)),
        )  # fmt: skip

    def action_snap_delete(self) -> None:
        snap = self._selected()
        if snap is None:
            return
        engine = self.vapp.engine
        self.vapp.push_screen(
            ConfirmDialog(f"Delete snapshot {snap}?", "This cannot be undone.", "Delete"),
            lambda ok: ok and self._op(f"delete snapshot {snap}",
                                       lambda: engine.snapshot_delete(self.guest, snap)),
        )  # fmt: skip
