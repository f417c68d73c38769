"""A keyed, line-based table that stays smooth at 10,000 rows.

Textual's DataTable measures every cell after ``add_rows`` and repaints
every visible line on each ``update_cell`` (tui-anchors section 3: 1.4 s for
the first render of 10k rows). This widget is a ``ScrollView`` on the line
API instead:

- the owner hands it the display order (a list of keys) and the items by
  key; ``render_line`` formats only the rows on screen, so cost does not grow
  with the row count;
- on each update every line on screen is compared, cell by cell, with what
  was drawn there, and only the runs of cells that differ are repainted
  (``paint.PaintedLines``), so an idle screen sends next to nothing to the
  terminal and a re-sorted one sends what moved;
- the cursor is kept on its key (the process or guest under it), never on a
  position, so a list that reorders under the user never swaps the row an
  action will act on (htop#1719, htop#1905).

Keys: up/down/k/j, page up/down, home/end, left/right scroll sideways.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from vstui.app.widgets.paint import PaintedLines, lean, printable

Cell = str | Text
HEADER = ("header",)
Formatter = Callable[[Any, str], Sequence[Cell]]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``width`` 0 means "take the rest of the line"."""

    key: str
    title: str
    width: int
    right: bool = False
    min_width: int = 10
    hide: int = 0  # when the line is too narrow, the highest goes first (0: never)


class LineTable(ScrollView, can_focus=True):
    """Rows keyed by a hashable key, drawn one line at a time."""

    BINDINGS: ClassVar[list[Binding]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "linetable--header",
        "linetable--cursor",
        "linetable--marked",
    }

    DEFAULT_CSS = """
    LineTable { height: 1fr; scrollbar-visibility: hidden; scrollbar-size: 0 0; }
    LineTable > .linetable--header { text-style: bold; background: $panel; color: $text; }
    LineTable > .linetable--cursor { background: $primary 40%; }
    LineTable:focus > .linetable--cursor { background: $primary; color: $text; }
    LineTable > .linetable--marked { color: $warning; text-style: bold; }
    LineTable:ansi > .linetable--cursor { background: ansi_blue; color: ansi_bright_white; }
    LineTable:ansi > .linetable--header { background: ansi_default; text-style: bold reverse; }
    """

    class CursorMoved(Message):
        """The cursor is on another key."""

        def __init__(self, table: LineTable, key: Hashable | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LineTable:
            return self.table

    def __init__(
        self, columns: Sequence[Column], formatter: Formatter, *, id: str | None = None,
        classes: str | None = None, face: Callable[[Any], Hashable] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(id=id, classes=classes)
        self.columns = tuple(columns)
        self.shown = self.columns  # the columns that fit the width (see _fit)
        self.formatter = formatter
        # what of an item the formatter reads (see _cells_for); None: all of it
        self.face = face
        self.order: list[Hashable] = []
        self.items: Mapping[Hashable, Any] = {}
        self.prefixes: Mapping[Hashable, str] = {}
        self.marked: set[Hashable] = set()
        self.cursor_key: Hashable | None = None
        self.follow = True  # keep the cursor on its key (False: on its position)
        self.sort_key: str | None = None
        self.sort_reverse = False
        self._pos: dict[Hashable, int] | None = {}  # key -> line, made when asked
        self._cursor = 0
        self._cells: dict[Hashable, tuple[Any, str, Sequence[Cell], Hashable]] = {}
        # Drawn lines by key, reused while the row's cells, width and
        # cursor/mark state are the same (a re-sort moves lines, not text).
        self._strips: dict[Hashable, tuple[Sequence[Cell], int, int, Strip]] = {}
        self._styles: tuple[Style, Style, Style, Style] | None = None
        # Rows as the last sync drew them, by key: (what they were made of, the
        # built line they were cut from, the line drawn); see _shown_row
        self._shown: dict[Hashable, tuple[tuple, Strip, Strip]] = {}
        self._painted = PaintedLines(self)

    # -- data ----------------------------------------------------------
    def set_data(
        self, order: Sequence[Hashable], items: Mapping[Hashable, Any],
        prefixes: Mapping[Hashable, str] | None = None,
    ) -> None:  # fmt: skip
        """Show ``items`` in ``order``; repaint only the cells that changed."""
        grew = len(order) != len(self.order)
        self.order = list(order)
        self.items = items
        self.prefixes = prefixes or {}
        self._pos = None
        self._place_cursor()
        if grew:
            self._resize()
        self.sync()

    def sync(self) -> None:
        """Compare every line on screen with what it should show now and
        repaint the runs of cells that differ (see ``paint``).

        Comparing drawn cells, not items, means a value that changes below
        display precision, in a hidden column or off screen costs nothing
        on the wire.
        """
        width, height = self.size  # once: Widget.size is worked out anew at each ask
        # the offsets once too: reactives, three reads a line made them a tenth
        # of an idle update at 160x48
        top, left = int(self.scroll_y), int(self.scroll_x)
        base = self._row_styles()[0]  # first: a style change decides which built lines stay
        total = max(width + left, self._total_width())
        rows = range(top, min(top + height - 1, len(self.order)))
        lines = [(self._token(0, top), self._render(0, width, top, left))]
        lines += [
            (("row", self.order[i]), self._shown_row(i, width, left, total, base)) for i in rows
        ]
        lines += [(None, self._render(y, width, top, left)) for y in range(len(lines), height)]
        self._painted.sync_lines(lines[:height])
        if len(self._cells) > 4 * max(height, 16):
            keep = set(self.order[top : top + height])
            self._cells = {k: v for k, v in self._cells.items() if k in keep}
            self._strips = {k: v for k, v in self._strips.items() if k in keep}
            self._shown = {k: v for k, v in self._shown.items() if k in keep}

    def _shown_row(self, index: int, width: int, left: int, total: int, base: Style) -> Strip:
        """Row ``index`` as drawn (``_render``), the very strip of the last sync
        when nothing it is made of changed: the same item object and prefix, mark,
        cursor, width and scroll, and its built line still kept (a style change,
        a resize or ``invalidate`` drops those). At every poll most rows are
        so: their cells, built line and crop were looked up one by one, ~15 us a
        line, a third of an idle update at 160x48."""
        key = self.order[index]
        made = (self.items[key], self.prefixes.get(key, ""),
                (key in self.marked) + 2 * (index == self._cursor), total, left, width)  # fmt: skip
        last, built = self._shown.get(key), self._strips.get(key)
        if last is not None and built is not None and last[1] is built[3]:
            if last[0][0] is made[0] and last[0][1:] == made[1:]:
                return last[2]
        strip = self._row(index, total).crop_extend(left, left + width, base)
        self._shown[key] = (made, self._strips[key][3], strip)
        return strip

    def sync_header(self) -> None:
        """Repaint what changed in the header (the sort arrow) alone: a new sort
        is no reason to repaint the whole table (its rows, if they moved, are
        repainted by the ``set_data`` that shows them)."""
        if self.is_mounted and self.size.height:
            self._painted.sync(0, self._render(0), HEADER)

    def _cells_for(self, key: Hashable) -> tuple[Any, str, Sequence[Cell], Hashable]:
        """Formatted cells of one row, recomputed only when what the formatter
        reads of its item changed: its ``face`` when the table has one (a
        process that ran is a new row at every poll, its CPU time moved, but
        what is shown of it mostly reads the same), else the item itself."""
        item, prefix = self.items[key], self.prefixes.get(key, "")
        cached = self._cells.get(key)
        if cached is not None and cached[1] == prefix and cached[0] is item:
            return cached
        face = item if self.face is None else self.face(item)
        if cached is not None and cached[1] == prefix and cached[3] == face:
            entry = self._cells[key] = (item, prefix, cached[2], face)  # formatted the same
            return entry
        cells = tuple(self.formatter(item, prefix))
        if cached is not None and cached[2] == cells:
            cells = cached[2]  # reads the same: its built line is kept (see _row)
        entry = (item, prefix, cells, face)
        self._cells[key] = entry
        return entry

    def invalidate(self) -> None:
        """Forget formatted cells (the formatter's inputs changed) and repaint."""
        self._cells.clear()
        self._strips.clear()
        self._header_strip = None
        self.refresh()

    def notify_style_update(self) -> None:
        # Focus, theme or CSS changed: the cached styles are stale, and so are
        # the lines drawn with them; which ones is known once the new styles
        # are looked up (_row_styles): when only the cursor's style changed
        # (focus), only the cursor's line is built again.
        super().notify_style_update()
        if self._styles is not None:
            self._old_styles = self._styles
        self._styles = None

    _old_styles: tuple[Style, Style, Style, Style] | None = None

    def _row_styles(self) -> tuple[Style, Style, Style, Style]:
        """(base, header, cursor, marked), looked up once per style change."""
        if self._styles is None:
            new = self._styles = (
                self.rich_style,
                self.get_component_rich_style("linetable--header"),
                self.get_component_rich_style("linetable--cursor"),
                self.get_component_rich_style("linetable--marked"),
            )
            old, self._old_styles = self._old_styles, None
            if old is None or (old[0], old[1], old[3]) != (new[0], new[1], new[3]):
                self._strips.clear()
                self._header_strip = None
            elif old[2] != new[2]:  # the lines drawn as the cursor
                for key in [k for k, made in self._strips.items() if made[2] & 2]:
                    del self._strips[key]
        return self._styles

    @property
    def positions(self) -> dict[Hashable, int]:
        """Line of each key (built on demand: most updates never need it)."""
        if self._pos is None:
            self._pos = dict(zip(self.order, range(len(self.order)), strict=False))
        return self._pos

    def _find(self, key: Hashable | None) -> int | None:
        """The line of ``key``; cheap when it has not moved."""
        if key is None:
            return None
        order = self.order
        if self._cursor < len(order) and order[self._cursor] == key:
            return self._cursor
        if self._pos is not None:
            return self._pos.get(key)
        try:
            return order.index(key)  # one C-level scan, cheaper than a dict
        except ValueError:
            return None

    def _place_cursor(self) -> bool:
        """Put the cursor back on its key (or clamp it); True if it moved on screen."""
        before = self._cursor
        at = self._find(self.cursor_key) if self.follow else None
        if at is not None:
            self._cursor = at
        else:
            self._cursor = min(self._cursor, max(len(self.order) - 1, 0))
        new_key = self.order[self._cursor] if self.order else None
        if new_key != self.cursor_key:
            self.cursor_key = new_key
            self.post_message(self.CursorMoved(self, new_key))
        if before != self._cursor:
            self._scroll_to_cursor()
            return True
        return False

    def _resize(self) -> None:
        size = Size(self._total_width(), len(self.order) + 1)
        if size == self.virtual_size:
            return
        if not self.container_size:  # not laid out yet: the first layout sizes us
            self.virtual_size = size
            return
        # The table's box does not depend on its row count, so a new count
        # needs its scrollbars updated, not a layout of the whole screen
        # (~10 ms at 160x48, on each filter key). A scrollbar appearing or
        # vanishing still relayouts (show_*_scrollbar are layout reactives).
        # The caller repaints the lines that changed.
        self.set_reactive(LineTable.virtual_size, size)
        self._scroll_update(size)

    def _refresh_scrollbars(self) -> None:
        # The table draws no scrollbar and keeps no room for one (scrollbar-size
        # 0; the header shows "line/lines"). Textual kept two blank columns for
        # it while the rows overflowed, and its update of the flags (layout
        # reactives) and of the scrollbar widgets relayouted the screen whenever
        # the row count crossed the table's height: with processes coming and
        # going near that count, every other second, a third of the UI
        # thread's CPU, and the whole table repainted at the new width. The
        # flags still say whether it can scroll (the mouse wheel asks them).
        if not self.container_size:
            return
        width, height = self.container_size
        virtual = self.virtual_size
        self.set_reactive(LineTable.show_horizontal_scrollbar, virtual.width > width)
        self.set_reactive(LineTable.show_vertical_scrollbar, virtual.height > height)

    def _size_updated(
        self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True
    ) -> bool:
        # Each layout of the screen (the sort picker or the filter box shown or
        # hidden) hands a ScrollView the compositor's virtual size, which is
        # not its own (textual/scroll_view.py _size_updated then uses
        # self.virtual_size): always "changed", so the scrollbars were updated
        # and the table repainted a frame later, for nothing. Ours is compared.
        return super()._size_updated(size, self.virtual_size, container_size, layout)

    def _total_width(self, columns: Sequence[Column] | None = None) -> int:
        if columns is None:  # asked for every line drawn: kept while the columns are
            known = self._total_known
            if known is not None and known[0] is self.shown:
                return known[1]
            self._total_known = (self.shown, self._total_width(self.shown))
            return self._total_known[1]
        fixed = sum(c.width + 1 for c in columns if c.width)
        flex = sum(c.min_width for c in columns if not c.width)
        return fixed + flex + 1

    _total_known: tuple[tuple[Column, ...], int] | None = None

    def _fit(self) -> None:
        """Hide the least useful columns until the rest fit (80x24 over SSH)."""
        width = self.size.width
        shown = list(self.columns)
        while self._total_width(shown) > width and any(c.hide for c in shown):
            shown.remove(max(shown, key=lambda c: c.hide))
        self.shown = tuple(shown)

    # -- focus ---------------------------------------------------------
    # Textual repaints a widget whole when it gains or loses the focus (in
    # focus(), _on_focus/_on_blur and, the cursor's style being a :focus
    # rule, once more when its component styles change): every line of the
    # table built again and sent to the terminal, twice, each time the sort
    # picker or the filter box takes the focus or gives it back. Only the
    # cursor's line looks different (LineTable:focus sets nothing else), so
    # those repaints become one ``sync``: the cells that differ.
    _focus_restyle = False
    _sync_queued = False

    def focus(self, scroll_visible: bool = True) -> LineTable:
        def set_focus(widget: LineTable) -> None:
            if widget.is_attached:
                widget.screen.set_focus(widget, scroll_visible=scroll_visible)

        self.app.call_later(set_focus, self)
        return self

    def _on_focus(self, event: events.Focus) -> None:
        event.prevent_default()  # Widget._on_focus: the same, with a whole repaint
        self.has_focus = True
        self._queue_sync()
        if self.parent is not None:
            self.parent.post_message(events.DescendantFocus(self))

    def _on_blur(self, event: events.Blur) -> None:
        event.prevent_default()
        self.has_focus = False
        self._queue_sync()
        if self.parent is not None:
            self.parent.post_message(events.DescendantBlur(self))

    def watch_has_focus(self, value: bool) -> None:
        self._focus_restyle = True  # its refresh() below is the restyle's
        try:
            super().watch_has_focus(value)
        finally:
            self._focus_restyle = False

    def refresh(
        self, *regions: Region, repaint: bool = True, layout: bool = False,
        recompose: bool = False,
    ) -> LineTable:  # fmt: skip
        if self._focus_restyle and not (regions or layout or recompose):
            self._rich_style_cache.clear()
            self._queue_sync()
            return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def _queue_sync(self) -> None:
        if not self._sync_queued and self.is_mounted:
            self._sync_queued = True
            self.call_later(self._queued_sync)

    def _queued_sync(self) -> None:
        self._sync_queued = False
        if self.is_mounted:
            self.sync()

    def on_resize(self) -> None:
        self._fit()
        self._strips.clear()
        self._header_strip = None
        self._painted.forget()
        self._resize()
        self.refresh()

    # -- cursor --------------------------------------------------------
    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def cursor_item(self) -> Any:
        return self.items.get(self.cursor_key) if self.cursor_key is not None else None

    def move_cursor(self, row: int) -> None:
        if not self.order:
            return
        row = max(0, min(row, len(self.order) - 1))
        self._cursor = row
        self.cursor_key = self.order[row]
        self._scroll_to_cursor()
        self.sync()
        self.post_message(self.CursorMoved(self, self.cursor_key))

    def select_key(self, key: Hashable) -> None:
        at = self._find(key)
        if at is not None:
            self.move_cursor(at)

    def _scroll_to_cursor(self) -> None:
        body = max(self.size.height - 1, 1)
        top = int(self.scroll_y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + body:
            self.scroll_to(y=self._cursor - body + 1, animate=False, immediate=True)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self._cursor + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self._cursor + direction * max(self.size.height - 2, 1))

    def action_jump(self, where: int) -> None:
        self.move_cursor(where if where >= 0 else len(self.order) - 1)

    def toggle_mark(self) -> None:
        key = self.cursor_key
        if key is None:
            return
        self.marked.symmetric_difference_update({key})
        self.move_cursor(self._cursor + 1)
        self.sync()

    # -- rendering -----------------------------------------------------
    def widths(self, total: int) -> list[int]:
        """Widths of the shown columns on a line ``total`` cells wide."""
        known = self._widths_known
        if known is not None and known[0] is self.shown and known[1] == total:
            return known[2]
        widths = self._widths(total)
        self._widths_known = (self.shown, total, widths)
        return widths

    _widths_known: tuple[tuple[Column, ...], int, list[int]] | None = None

    def _widths(self, total: int) -> list[int]:
        fixed = sum(c.width + 1 for c in self.shown if c.width) + 1
        flex = [c for c in self.shown if not c.width]
        spare = max(total - fixed, sum(c.min_width for c in flex))
        return [c.width or max(c.min_width, spare // max(len(flex), 1)) for c in self.shown]

    _frame_width: int | None = None

    def render_lines(self, crop: Region) -> list[Strip]:
        # Textual asks render_line for each line of ``crop``: the width, the
        # same for all, is asked once (Widget.size is worked out anew at each
        # ask: ~46 times on a re-sort's frame).
        self._frame_width = self.size.width
        try:
            return super().render_lines(crop)
        finally:
            self._frame_width = None

    def render_line(self, y: int) -> Strip:
        return self._painted.drawn(y, self._render(y, self._frame_width), self._token(y))

    def _token(self, y: int, top: int | None = None) -> Hashable:
        """What line ``y`` shows (its row's key), so moved rows are recognised;
        ``top``: the first row shown (``scroll_y``)."""
        if y == 0:
            return HEADER
        index = (int(self.scroll_y) if top is None else top) + y - 1
        return ("row", self.order[index]) if index < len(self.order) else None

    def _render(
        self, y: int, width: int | None = None, top: int | None = None, left: int | None = None
    ) -> Strip:
        """Line ``y`` at ``width`` cells, scrolled to row ``top`` and column ``left``
        (None: as now)."""
        base = self._row_styles()[0]  # first: a style change decides which built lines stay
        if width is None:
            width = self.size.width
        if left is None:
            left = int(self.scroll_x)
        total = max(width + left, self._total_width())
        if y == 0:
            return self._position(self._header(total).crop_extend(left, left + width, base))
        index = (int(self.scroll_y) if top is None else top) + y - 1
        if index >= len(self.order):
            return self._blank(width, base)
        return self._shown_row(index, width, left, total, base)

    def _blank(self, width: int, style: Style) -> Strip:
        """A line below the last row: the same strip while width and style are,
        so that each sync finds it unchanged at once (PaintedLines._changed)."""
        kept = self._blank_kept
        if kept is None or kept[0] != width or kept[1] != style:
            kept = self._blank_kept = (width, style, Strip.blank(width, style))
        return kept[2]

    _blank_kept: tuple[int, Style, Strip] | None = None

    def _position(self, header: Strip) -> Strip:
        """The header with "line/lines" at its right end when the rows do not
        all fit and the end of the header is free (there is no scrollbar: it
        repaints a whole column whenever the row count changes)."""
        if len(self.order) < self.size.height:
            return header
        where = f" {self._cursor + 1}/{len(self.order)} "
        width = header.cell_length
        if width < 3 * len(where) or header.crop(width - len(where)).text.strip():
            return header
        style = self._row_styles()[1]
        return Strip.join([header.crop(0, width - len(where)), Strip([Segment(where, style)])])

    def _header(self, total: int) -> Strip:
        style = self._row_styles()[1]
        cells: list[Cell] = []
        for col in self.shown:
            mark = ""
            if col.key == self.sort_key:
                mark = "▼" if self.sort_reverse else "▲"
            cells.append(col.title + mark)
        made = (cells, total, style)
        if self._header_strip is None or self._header_strip[0] != made:
            self._header_strip = (made, self._line(" ", cells, total, style))
        return self._header_strip[1]

    _header_strip: tuple[tuple[list[Cell], int, Style], Strip] | None = None

    def _row(self, index: int, total: int) -> Strip:
        key = self.order[index]
        cells = self._cells_for(key)[2]
        marked = key in self.marked
        state = marked + 2 * (index == self._cursor)
        cached = self._strips.get(key)
        if cached is not None and cached[0] is cells and cached[1] == total and cached[2] == state:
            return cached[3]
        base, _header, cursor, mark = self._row_styles()
        style = base
        if marked:
            style += mark
        if state & 2:
            style += cursor
        strip = self._line("*" if marked else " ", cells, total, style)
        self._strips[key] = (cells, total, state, strip)
        return strip

    _indexes_known: tuple[tuple[Column, ...], list[int]] | None = None

    def _shown_indexes(self) -> list[int]:
        """Where each shown column is among all columns, kept while they are the
        same (a Column comparison is a Python call: nine a line at 80 columns)."""
        known = self._indexes_known
        if known is None or known[0] is not self.shown:
            known = self._indexes_known = (self.shown, [self.columns.index(c) for c in self.shown])
        return known[1]

    def _line(self, lead: str, cells: Sequence[Cell], total: int, style: Style) -> Strip:
        """One line of cells. Runs of plain cells (printable ASCII strings, most
        of a row) are joined into one text first: a segment per cell and gap,
        merged again by ``lean``, cost most of the time of a re-sort's ~46 new
        lines. The strip is the same."""
        if len(self.shown) < len(cells):  # a row's cells: keep the shown columns
            cells = [cells[i] for i in self._shown_indexes()]
        segments: list[Segment] = []
        run = [lead]  # plain text not yet made a segment
        for col, width, cell in zip(self.shown, self.widths(total), cells, strict=False):
            if isinstance(cell, str) and cell.isascii() and cell.isprintable():
                text = cell if len(cell) <= width else cell[: max(width - 1, 0)] + "…"
                run.append(text.rjust(width) if col.right else text.ljust(width))
            else:  # styled, wide or control characters
                segments.append(Segment("".join(run), style))
                segments.extend(_cell_segments(cell, width, col.right, style, self.app.console))
                run = []
            run.append(" ")
        segments.append(Segment("".join(run), style))
        return lean(segments).extend_cell_length(total, style)


def _cell_segments(cell: Cell, width: int, right: bool, style: Style, console) -> list[Segment]:
    """A cell that is not plain ASCII text (``_line`` draws those)."""
    if isinstance(cell, str):  # wide or control characters
        text = Text(printable(cell))
    else:
        text = cell.copy()
        text.plain = printable(text.plain)  # same length: the spans stay put
    text.truncate(width, overflow="ellipsis")
    if right:
        text.pad_left(width - text.cell_len)
    else:
        text.pad_right(width - text.cell_len)
    return [
        Segment(seg.text, style + seg.style if seg.style else style) for seg in text.render(console)
    ]
