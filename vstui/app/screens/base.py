"""What every console screen shares: the read-only gate, the header, a filter
box, the sort picker and the guest actions (which the app carries out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Static

from engine.datamodel import Snapshot
from vstui.app.actions import allowed
from vstui.app.screens.storage_actions import StorageActions
from vstui.app.widgets.filterbox import FilterBox
from vstui.app.widgets.linetable import LineTable
from vstui.app.widgets.lists import SortPicker
from vstui.app.widgets.paint import SpanCompositor
from vstui.app.widgets.topbar import TopBar

if TYPE_CHECKING:
    from vstui.app.app import VstuiApp


class KeyFooter(Footer):
    """Textual's footer, rebuilt only when the keys it shows change.

    Textual rebuilds it (some 30 widgets mounted and styled, ~25 ms) at every
    focus change, though moving between a table and a list leaves the same
    keys on show.
    """

    _shown: tuple[object, ...] | None = None

    def bindings_changed(self, screen: Screen) -> None:
        shown = tuple(
            (binding.key, binding.action, binding.description, enabled, tooltip)
            for _, binding, enabled, tooltip in screen.active_bindings.values()
            if binding.show
        )
        if shown == self._shown and self.children:
            self._bindings_ready = True
            return
        if screen.app.app_focus:
            self._shown = shown
        super().bindings_changed(screen)


class VstuiScreen(StorageActions, Screen):
    """Base screen: ``check_action`` is the read-only gate for its keys."""

    SCOPE: ClassVar[str] = ""
    TITLE_TEXT: ClassVar[str] = ""
    DEFAULT_CSS = """
    VstuiScreen { layers: default picker; }
    VstuiScreen #notice { height: auto; max-height: 2; color: $warning; padding: 0 1; }
    VstuiScreen #notice.-empty { display: none; }
    VstuiScreen #filter { dock: bottom; display: none; height: 3; }
    VstuiScreen #filter.-shown { display: block; }
    VstuiScreen #footnote { dock: bottom; height: 1; display: none; padding: 0 1;
                            background: $warning; color: $background; text-style: bold; }
    VstuiScreen.-footnote #footnote { display: block; }
    VstuiScreen.-footnote Footer { display: none; }
    VstuiScreen:nocolor #footnote { text-style: bold reverse; }
    """

    def __init__(self) -> None:
        super().__init__()
        # Partial updates write only the refreshed cells (see widgets.paint),
        # in the SGR state the driver keeps between them (QuickEscDriver).
        self._compositor = SpanCompositor(lambda: getattr(self.app._driver, "sgr_kept", None))

    @property
    def vapp(self) -> VstuiApp:
        return self.app  # type: ignore[return-value]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return allowed(action, self.vapp.read_only)

    _bar: TopBar | None = None

    def top_bar(self) -> TopBar:
        self._bar = TopBar(self.TITLE_TEXT, id="topbar")
        return self._bar

    @property
    def bar(self) -> TopBar | None:
        """The header once it is in the screen (None while the screen composes).
        Kept, not looked up: a DOM query at each snapshot matched every widget
        of the screen against the selector, a tenth of the idle UI thread."""
        bar = self._bar
        return bar if bar is not None and bar.is_attached else None

    def footer(self) -> ComposeResult:
        """The key footer, and the line that replaces it for a moment to say
        why a key did nothing (``say``)."""
        yield KeyFooter(compact=True, show_command_palette=False)
        yield Static("", id="footnote", markup=False)

    _footnote_timer: Timer | None = None

    def say(self, text: str, seconds: float = 5.0) -> None:
        """Show ``text`` where the footer is, for ``seconds``."""
        self.query_one("#footnote", Static).update(text)
        self.add_class("-footnote")
        if self._footnote_timer is not None:
            self._footnote_timer.stop()
        self._footnote_timer = self.set_timer(seconds, lambda: self.remove_class("-footnote"))

    def notice(self) -> Static:
        return Static("", id="notice", classes="-empty", markup=False)

    _notice_text = ""

    def set_notice(self, text: str) -> None:
        if text == self._notice_text:
            return  # an update relayouts the screen: only when it changed
        self._notice_text = text
        box = self.query_one("#notice", Static)
        box.update(text)
        box.set_class(not text, "-empty")

    def on_screen_resume(self) -> None:
        if self.vapp.snapshot is not None:
            self.show_snapshot(self.vapp.snapshot)

    def show_snapshot(self, snap: Snapshot) -> None:
        """Called by the app with each new snapshot while this screen is on top."""
        bar = self.bar
        if bar is not None:
            bar.update_from(snap)

    # -- guest actions (carried out by the app, gated there too) -------
    def current_guest(self) -> str | None:
        return None

    def _guest_or_say(self) -> str | None:
        name = self.current_guest()
        if not name:
            self.notify(
                "select a guest first (the host row has no guest actions)", severity="warning"
            )
        return name

    def action_start(self) -> None:
        if name := self._guest_or_say():
            self.vapp.op_start(name)

    def action_stop(self) -> None:
        if name := self._guest_or_say():
            self.vapp.op_stop(name)  # asks first

    def action_restart(self) -> None:
        if name := self._guest_or_say():
            self.vapp.op_restart(name)

    def action_enter(self) -> None:
        if name := self._guest_or_say():
            self.vapp.op_enter(name)

    def action_exec(self) -> None:
        if name := self._guest_or_say():
            self.vapp.op_exec(name)

    def action_edit(self) -> None:
        if name := self._guest_or_say():
            self.vapp.open_editor(name)

    def action_back(self) -> None:
        self.vapp.go_back()


class TableScreen(VstuiScreen):
    """A screen built around one LineTable, with ``/`` filter and sort picker."""

    SORTS: ClassVar[tuple[tuple[str, str], ...]] = ()
    paused = False

    def filter_box(self) -> FilterBox:
        return FilterBox(placeholder="filter: text or regex, !re inverts; enter keeps, esc clears",
                         on_change=self._apply_filter, id="filter")  # fmt: skip

    @property
    def table(self) -> LineTable:
        return self.query_one(LineTable)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def _apply_filter(self, text: str) -> None:
        """Called by the box on each change, so the table filters on the same frame."""
        if text != self.filter_text:
            self.filter_text = text
            self.redraw()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.remove_class("-shown")
        self.table.focus()

    def action_back(self) -> None:
        """Esc clears an open filter first, then goes back a screen."""
        box = self.query_one("#filter", Input)
        if box.has_focus or box.has_class("-shown"):
            box.value = ""
            box.remove_class("-shown")
            self.table.focus()
            return
        self.vapp.go_back()

    filter_text = ""

    def action_sort(self) -> None:
        self.query_one(SortPicker).open(self.table.sort_key or "")

    def on_key(self, event: events.Key) -> None:
        """The sort picker, while shown, takes its keys first (the focus
        stays on the table, whose bindings would take them otherwise)."""
        picker = self.query_one(SortPicker)
        if picker.shown and picker.take_key(event.key):
            event.stop()
            event.prevent_default()

    @on(events.DescendantBlur)
    @on(events.Click)
    def _picker_left(self, event: events.DescendantBlur | events.Click) -> None:
        """The focus went elsewhere, or a click landed outside the picker: it goes."""
        picker = self.query_one(SortPicker)
        if picker.shown and not (isinstance(event, events.Click) and picker.region.contains(
            event.screen_x, event.screen_y
        )):  # fmt: skip
            picker.hide()

    def _sorted(self, key: str | None) -> None:
        """The picker closed (``key``: the column picked, None: nothing)."""
        if not self.table.has_focus:
            self.table.focus()
        if key:
            self.table.sort_key = key
            self.keep_view()
            self.redraw()
            self.table.sync_header()

    def action_invert_sort(self) -> None:
        self.table.sort_reverse = not self.table.sort_reverse
        self.keep_view()
        self.redraw()
        self.table.sync_header()

    tree = False

    def restore_view(self, sort: str, reverse: bool, tree: bool = False) -> None:
        """This kind of screen's last sort and tree mode (or the defaults):
        a sort chosen once stays when the user leaves and comes back."""
        table = self.table
        table.sort_key, table.sort_reverse, self.tree = self.vapp.views.get(
            self.SCOPE, (sort, reverse, tree)
        )

    def keep_view(self) -> None:
        table = self.table
        self.vapp.views[self.SCOPE] = (table.sort_key or "", table.sort_reverse, self.tree)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.query_one(TopBar).update_from(self.vapp.snapshot, paused=self.paused)
        if not self.paused and self.vapp.snapshot is not None:
            self.show_snapshot(self.vapp.snapshot)

    def redraw(self) -> None:
        """Recompute the table from the last snapshot shown."""

    def compose_table(self) -> ComposeResult:
        yield self.top_bar()
        yield self.notice()
        yield self.filter_box()
        yield SortPicker(self.SORTS, self._sorted, id="sortpick")
