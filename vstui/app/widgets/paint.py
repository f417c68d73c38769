"""Send the terminal only the cells that changed.

Over SSH every byte counts (tui-anchors section 4: a console that redraws
whole lines costs kilobytes a second where htop costs hundreds of bytes).
Three pieces, used by every widget that shows live figures:

- ``changed_spans`` compares the line last drawn with the new one, cell by
  cell, and returns the runs of cells that differ;
- ``PaintedLines`` remembers the last line drawn at each row of a widget and
  asks Textual to repaint only those runs (``Widget.refresh(Region)``);
- ``SpanCompositor`` makes Textual write just those runs: its stock partial
  update crops a line's right end to the refreshed region but always starts
  at the widget's left edge (textual/_compositor.py ``ChopsUpdate``, "TODO:
  crop to x extents"), so a changed CPU% at column 40 re-sent 40 cells.

Lines are also built from as few segments as possible (``Strip.simplify``),
and a partial update sends a style only where it changes (``sgr``).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import ne

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import ChopsUpdate, Compositor
from textual.geometry import Region
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets._toast import ToastRack

from vstui.app.widgets.pen import Pen
from vstui.app.widgets.sgr import Kept, SgrState

# Two changed runs closer than this are sent as one: stepping over the cells
# between them costs 3-5 bytes (pen.Pen) and restating a style a few more
# (sgr.SgrState), as much as that many unchanged cells.
JOIN_GAP = 6
# Rows that moved together are scrolled on the terminal from this many on.
MIN_SHIFT = 3
MAX_SHIFTS = 4

Cells = list[tuple[str, Style | None]]

# A control character reaching the terminal moves its cursor (a newline in a
# command line wrote over the next row), after which the record of what
# each row shows is wrong and stays wrong: every drawn cell is printable.
CONTROLS = {c: "?" for c in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """``text`` with each control character shown as "?" (as ps does)."""
    return text if text.isprintable() else text.translate(CONTROLS)


def cells_of(strip: Strip) -> Cells:
    """One (character, style) per terminal cell; a wide character's second
    cell is ("", style)."""
    out: Cells = []
    for text, style, control in strip:
        if control:
            continue
        if text.isascii():
            out.extend(zip(text, repeat(style)))
            continue
        for ch in text:
            width = cell_len(ch)
            if width == 0 and out:
                out[-1] = (out[-1][0] + ch, style)
            else:
                out.append((ch, style))
                if width == 2:
                    out.append(("", style))
    return out


def changed_spans(old: Strip | None, new: Strip, gap: int = JOIN_GAP) -> list[tuple[int, int]]:
    """Runs ``(start, end)`` of cells that differ between two drawn lines."""
    if old is None or old.cell_length != new.cell_length:
        return [(0, max(new.cell_length, old.cell_length if old else 0))]
    if old is new or old == new:
        return []
    texts = _same_runs(old, new)
    if texts is not None:  # the same styles in the same places: compare the text alone
        a, b = texts[0].encode(), texts[1].encode()  # ASCII: a byte per cell
        # 0 where the cells are equal: XOR of the two lines as numbers
        differ = (int.from_bytes(a) ^ int.from_bytes(b)).to_bytes(len(a))
    else:
        differ = _differ_by_cell(old, new) or bytes(map(ne, cells_of(old), cells_of(new)))
    # The runs between stretches of ``gap`` or more equal cells, from the
    # first changed cell to the last, found by C code (a Python loop over
    # every cell of every line was most of comparing a re-sorted screen).
    end = len(differ.rstrip(b"\0"))
    if not end:
        return []
    start = len(differ) - len(differ.lstrip(b"\0"))
    spans: list[tuple[int, int]] = []
    for equal in _stretches(gap).finditer(differ, start, end):
        spans.append((start, equal.start()))
        start = equal.end()
    spans.append((start, end))
    return spans


def _differ_by_cell(old: Strip, new: Strip) -> bytes | None:
    """A byte per cell, 0 where the two lines show the same character in the
    same style; None when a character is not one cell wide (``cells_of`` then).

    Rows that moved (a re-sort, processes come and gone) style their cells
    differently, and a truncated command ends in "…": both missed the plain
    comparison above, and a (character, style) pair per cell, compared by
    rich's Style.__eq__ in Python, was a third of the UI thread's CPU on a
    busy processes screen. Here the characters are compared as strings and
    the styles as one small number per cell, each style looked up once per
    segment.
    """
    codes: dict[Style | None, int] = {}
    lines = []
    for strip in (old, new):
        texts: list[str] = []
        styles = bytearray()
        for text, style, control in strip:
            if control:
                continue
            if not (text.isascii() or _single_width()(text)):
                return None
            code = codes.setdefault(style, len(codes))
            if code > 255:
                return None
            texts.append(text)
            styles += bytes((code,)) * len(text)
        lines.append(("".join(texts), styles))
    (text_a, styles_a), (text_b, styles_b) = lines
    if len(text_a) != len(text_b):
        return None
    chars = int.from_bytes(bytes(map(ne, text_a, text_b)))
    return (chars | int.from_bytes(bytes(map(ne, styles_a, styles_b)))).to_bytes(len(text_a))


@functools.cache
def _single_width() -> Callable[[str], bool]:
    """Whether every character of a text is one cell wide, as rich measures it
    (the compositor's measure): printable Latin, Greek, Cyrillic, general
    punctuation ("…"), arrows, box drawing and blocks, Braille."""
    ranges = ((0x20, 0x7F), (0xA0, 0x483), (0x2010, 0x2060), (0x2190, 0x2200),
              (0x2500, 0x2600), (0x2800, 0x2900))  # fmt: skip
    chars = (chr(c) for start, end in ranges for c in range(start, end))
    return frozenset(c for c in chars if cell_len(c) == 1).issuperset


@functools.cache
def _stretches(gap: int) -> re.Pattern[bytes]:
    """``gap`` or more equal cells (0 bytes) in a row."""
    return re.compile(rb"\0{%d,}" % gap)


def _same_runs(old: Strip, new: Strip) -> tuple[str, str] | None:
    """The two lines' texts when they are ASCII and their styles change at
    the same cells (a table's rows mostly: comparing characters is then
    comparing cells, without a (character, style) pair per cell)."""
    if len(old) != len(new):
        return None
    for (ta, sa, ca), (tb, sb, cb) in zip(old, new, strict=True):
        if len(ta) != len(tb) or ca or cb or (sa is not sb and sa != sb):
            return None
    a, b = old.text, new.text
    return (a, b) if a.isascii() and b.isascii() else None


# The widgets PaintedLines asked to repaint since the last paint_now.
_ASKED: set[Widget] = set()


def paint_now(screen: Screen) -> None:
    """Send what PaintedLines asked to repaint on ``screen`` to the terminal
    now, in the caller's turn of the event loop. Textual's way takes four
    messages and a second wake of the UI thread, at every poll: the widget's
    refresh prompts its idle handler, which posts the screen an Update; the
    screen's idle handler resumes its update timer, whose task wakes up to
    1/60 s later and posts the screen a Timer event, which paints
    (textual/widget.py _check_refresh, screen.py _on_update, _on_idle,
    _on_timer_update). Here the widgets go to the screen's update at once,
    as _check_refresh and _on_update would hand them; the idle prompts left
    in their queues then find nothing to do. In a batch update, or for a
    screen not on top, Textual's way stays."""
    asked = [w for w in _ASKED if w.is_attached and w.screen is screen]
    _ASKED.clear()
    if not asked or screen.app._batch_count or not screen.is_current:
        return
    for widget in asked:
        if widget._repaint_required:
            widget._repaint_required = False
            if widget.display and screen in screen._compositor:
                screen._dirty_widgets.add(widget)
    if screen._dirty_widgets:
        screen._on_timer_update()


class PaintedLines:
    """What a line-API widget last drew on each of its rows.

    ``sync`` takes the new line for a row, compares it with what is on
    screen and refreshes only the runs of cells that changed. The owner also
    calls ``drawn`` from ``render_line``, so a repaint Textual does on its
    own (scrolling, a dialog closing) keeps the record true.

    Lines may carry a token (a table's row key): when many rows moved by
    the same distance (a process inserted above them), ``shift`` moves them
    on the terminal itself (``scroll_lines``) instead of redrawing them.
    """

    __slots__ = ("lines", "tokens", "widget")

    def __init__(self, widget: Widget) -> None:
        self.widget = widget
        self.lines: dict[int, Strip] = {}
        self.tokens: dict[int, Hashable] = {}

    def drawn(self, y: int, strip: Strip, token: Hashable = None) -> Strip:
        self.lines[y] = strip
        self.tokens[y] = token
        return strip

    def forget(self) -> None:
        self.lines.clear()
        self.tokens.clear()

    def sync(self, y: int, strip: Strip, token: Hashable = None) -> None:
        """Line ``y`` should now show ``strip``; repaint what differs."""
        regions = self._changed(y, strip, token)
        if regions:
            self._ask(regions)

    def _ask(self, regions: list[Region]) -> None:
        self.widget.refresh(*regions)
        _ASKED.add(self.widget)  # painted by paint_now, when the caller calls it

    def _changed(self, y: int, strip: Strip, token: Hashable) -> list[Region]:
        """Record ``strip`` as line ``y``; the regions that differ from the line before."""
        old = self.lines.get(y)
        self.lines[y] = strip
        self.tokens[y] = token
        if old is strip:
            return []
        return [Region(start, y, end - start, 1) for start, end in changed_spans(old, strip)]

    def sync_lines(self, lines: Sequence[tuple[Hashable, Strip]]) -> None:
        """Every row of the widget: move shifted rows on the terminal when
        that is possible and worth it, then repaint what still differs."""
        tokens = [token for token, _ in lines]
        for _ in range(MAX_SHIFTS):  # each shift lines up one more block
            block = best_shift(self.tokens, tokens)
            if block is None:
                break
            block = extend_shift(self.tokens, tokens, *block)
            if not scroll_lines(self.widget, *block):
                break
            self._shift(*block)
        regions: list[Region] = []
        for y, (token, strip) in enumerate(lines):
            regions += self._changed(y, strip, token)
        if regions:  # one call: each costs Textual a dirty-region update and an idle check
            self._ask(regions)

    def _shift(self, top: int, bottom: int, by: int) -> None:
        """Record that rows ``top..bottom`` (inclusive) moved by ``by``; the
        rows the terminal cleared are unknown (drawn again in full)."""
        lines, tokens = self.lines, self.tokens
        moved = [(y + by, lines.get(y), tokens.get(y)) for y in range(top, bottom + 1)]
        low, high = min(top, top + by), max(bottom, bottom + by)
        for y in range(low, high + 1):
            lines.pop(y, None)
            tokens.pop(y, None)
        for y, strip, token in moved:
            if strip is not None:
                lines[y], tokens[y] = strip, token


def best_shift(
    old: Mapping[int, Hashable], new: Sequence[Hashable], least: int = MIN_SHIFT
) -> tuple[int, int, int] | None:
    """The longest run of old rows ``top..bottom`` that reappear together,
    in order, ``by`` rows lower (higher when negative): (top, bottom, by)."""
    where = {token: y for y, token in old.items() if token is not None}
    best: tuple[int, int, int] | None = None
    y = 0
    while y < len(new):
        at = where.get(new[y]) if new[y] is not None else None
        if at is None or at == y:
            y += 1
            continue
        by = y - at
        end = y
        while (
            end + 1 < len(new)
            and new[end + 1] is not None
            and (where.get(new[end + 1]) == end + 1 - by)
        ):
            end += 1
        length = end - y + 1
        if length >= least and (best is None or length > best[1] - best[0] + 1):
            best = (at, at + length - 1, by)
        y = end + 1
    return best


def extend_shift(
    old: Mapping[int, Hashable], new: Sequence[Hashable], top: int, bottom: int, by: int
) -> tuple[int, int, int]:
    """The block ``top..bottom`` (old rows) moving by ``by``, with the rows
    below it that move along: every one down to the first that is in its
    place already (or whose new place is), or the widget's end.

    A row inserted above a list moves the whole rest of it; the rows below
    a block of matching keys are mostly of the same kind (the next
    short-lived children of the same parent, with the same command line),
    so carried along they land next to rows like them and need a few
    digits repainted, where the rows a scroll left blank need all of theirs.
    """
    height = len(new)
    end = bottom
    while True:
        y = end + 1
        to = y + by
        if y >= height or to >= height or to < 0:
            break
        if (old.get(y) is not None and new[y] == old.get(y)) or (
            new[to] is not None and new[to] == old.get(to)
        ):
            break
        end = y
    return top, end, by


def scroll_lines(widget: Widget, top: int, bottom: int, by: int) -> bool:
    """Move the widget's rows ``top..bottom`` by ``by`` rows on the terminal
    (VT100 scroll region, then insert or delete lines); False when it cannot
    be done safely, and then the caller simply redraws.

    A scroll region spans the whole width, so the widget must too, and
    nothing may be drawn over it (a notification would move with the rows).
    The scroll is written at once, so no earlier repaint may still be on its
    way: it would land on rows that moved under it.
    """
    app = widget.app
    driver = app._driver
    screen = widget.screen
    if (
        driver is None or app.is_headless or app.is_inline or screen is not app.screen
        or widget.region.x != 0 or widget.region.width != app.size.width
        or widget._repaint_regions or screen._dirty_widgets or screen._compositor._dirty_regions
        or toasts_shown(screen)
    ):  # fmt: skip
        return False
    oy = widget.region.y + 1  # terminal rows count from 1
    low, high = min(top, top + by), max(bottom, bottom + by)
    if low < 0 or high >= widget.region.height:
        return False
    op = f"{by}L" if by > 0 else f"{-by}M"
    # No reset first: the lines the terminal clears take the background set
    # now, and are drawn again whole (PaintedLines._shift forgets them).
    driver.write(f"\x1b[{low + oy};{high + oy}r\x1b[{low + oy};1H\x1b[{op}\x1b[r")
    return True


def toasts_shown(screen: Screen) -> bool:
    """Whether a notification is on ``screen``: its toast rack (a child of
    every screen, textual/screen.py _extend_compose) holds one. Not a query
    of the screen's whole tree for Toast widgets: 54 us (0.6 here) on the
    processes screen, whose rows shift at one poll in four when idle."""
    for child in screen.children:
        if isinstance(child, ToastRack):
            return bool(child.children)
    return False


def _strips_without_self_references() -> None:
    """Textual's Strip caches what crop_extend and divide return in the strip
    asked, even when that is the strip itself (a crop to its own width, one cut
    at its end, the usual case for a line as wide as its widget): the strip
    then refers to itself, and when dropped it is garbage only a full
    collection frees, a Strip and its 7 FIFOCaches a line drawn, ~60 objects a
    second on an idle console and 14 ms of the poll thread every 30 s (gcpolicy).
    Those two answers are now given without caching them; every other answer
    is Textual's own (8.2.8, pinned)."""
    divide, crop_extend = Strip.divide, Strip.crop_extend

    def divide_whole(self: Strip, cuts: Iterable[int]) -> Sequence[Strip]:
        cuts = list(cuts)
        width = self.cell_length
        if [cut for cut in cuts if cut <= width] == [width]:  # divide drops cuts past the end
            return [self]
        return divide(self, cuts)

    def crop_extend_whole(self: Strip, start: int, end: int, style: Style | None) -> Strip:
        if start == 0 and end == self.cell_length:
            return self
        return crop_extend(self, start, end, style)

    Strip.divide = divide_whole  # type: ignore[method-assign]
    Strip.crop_extend = crop_extend_whole  # type: ignore[method-assign]


_strips_without_self_references()


def lean(segments: Iterable[Segment]) -> Strip:
    """A strip with adjacent segments of one style merged."""
    return Strip(Segment.simplify(segments))


class SpanUpdate(ChopsUpdate):
    """A partial update that writes only the cells of each refreshed span.

    The cursor is taken to each span by the shortest move from where the
    last one left it (``pen.Pen``), so the line feeds the stock update
    writes between lines are left out too. With ``erase`` (the terminal
    erases in the current background colour: terminfo's bce), a run of
    blanks is erased instead of written: up to the end of the line with
    EL (``ESC[K``, 3 bytes for the 80 blanks after a short command line),
    elsewhere with ECH (``ESC[nX``), stepping over it if more follows.
    """

    def __init__(
        self, chops: Sequence[Mapping[int, Strip | None]], spans: list[tuple[int, int, int]],
        chop_ends: list[list[int]], erase: bool = False, kept: Kept | None = None,
    ) -> None:  # fmt: skip
        super().__init__(chops, spans, chop_ends)
        self.erase = erase
        self.kept = kept

    def render_segments(self, console: Console) -> str:
        out: list[str] = []
        append = out.append
        sgr = SgrState(console._color_system or ColorSystem.TRUECOLOR)
        kept = self.kept
        if kept is not None:
            sgr.now = kept.now
        pen = Pen()
        erase = self.erase
        for y, x1, x2 in self.spans:
            ends = self.chop_ends[y]
            width = ends[-1] if ends else 0
            for end, (x, strip) in zip(ends, self.chops[y].items(), strict=False):
                if strip is None or x >= x2 or end <= x1:
                    continue
                start, stop = max(x, x1), min(end, x2)
                if start > x or stop < end:
                    strip = strip.crop(start - x, stop - x)
                append(pen.to(y, start))
                if not erase:
                    for text, style, _ in strip:
                        append(sgr.to(style))
                        append(_linked(text, style) if style is not None and style._link else text)
                    pen.wrote(strip.cell_length, width)
                    continue
                col, last = start, len(strip) - 1
                for i, (text, style, _) in enumerate(strip):
                    append(sgr.to(style))
                    if style is not None and style._link:
                        append(_linked(text, style))
                    elif BLANKS in text and erasable(style):
                        # the run's last blanks need no step over them; at the
                        # right margin they are the rest of the line
                        append(_erased(text, y, col, pen, width, i == last, stop == width))
                        col += cell_len(text)
                        continue
                    else:
                        append(text)
                    pen.wrote(cell_len(text), width)
                    col += cell_len(text)
        if kept is None:
            append(sgr.reset())
            return "".join(out)
        text = "".join(out)
        kept.expect(text, sgr.now)  # the driver resets it before anything else
        return text


# A run of blanks this long is erased (ECH, and a step over it) rather than written.
BLANKS = " " * 12
_BLANK_RUN = re.compile(" {12,}")
# Attributes a blank shows (an erased cell has none): reverse, underlines, strike...
_VISIBLE_ON_BLANK = ~0b10000111  # all but bold, dim, italic, conceal


def erasable(style: Style | None) -> bool:
    """Whether a blank of ``style`` looks like an erased cell (its background)."""
    if style is None:
        return True
    return not (style._attributes & style._set_attributes & _VISIBLE_ON_BLANK)


def _erased(text: str, y: int, col: int, pen: Pen, width: int, last: bool, edge: bool) -> str:
    """``text`` written from column ``col`` with its long runs of blanks erased."""
    out: list[str] = []
    pos = 0
    for m in _BLANK_RUN.finditer(text):
        a, b = m.span()
        if a > pos:
            out.append(text[pos:a])
            pen.wrote(cell_len(text[pos:a]), width)
        at = col + cell_len(text[:a])
        if b == len(text) and last:
            out.append("\x1b[K" if edge else f"\x1b[{b - a}X")  # nothing after it
            return "".join(out)
        out.append(f"\x1b[{b - a}X")
        out.append(pen.to(y, at + b - a))
        pos = b
    if pos < len(text):
        out.append(text[pos:])
        pen.wrote(cell_len(text[pos:]), width)
    return "".join(out)


def _linked(text: str, style: Style) -> str:
    """A hyperlinked run, as rich writes it (OSC 8)."""
    return f"\x1b]8;id={style._link_id};{style._link}\x1b\\{text}\x1b]8;;\x1b\\"


class SpanCompositor(Compositor):
    """Textual's compositor, writing partial updates as ``SpanUpdate``.

    ``kept`` gives the SGR state the driver keeps between updates (None
    with a driver that does not: each update then ends with a reset).
    """

    def __init__(self, kept: Callable[[], Kept | None] = lambda: None) -> None:
        super().__init__()
        self.kept = kept

    def render_partial_update(self) -> ChopsUpdate | None:
        """The changed rows, rendered alone. Textual's update renders, whole,
        every widget that touches the box around all the changed regions
        (``_get_renders``): a digit in the detail screen's header and one in
        its table's last row rendered all 48 rows of every widget between them
        (0.54 ms an update at 160x48, the UI thread's largest cost there)."""
        regions = self._dirty_regions.copy()
        self._dirty_regions.clear()
        screen = self.size.region
        bands = [band for band in map(screen.intersection, row_bands(regions)) if band]
        if not bands:
            return None
        spans = list(self._regions_to_spans(regions))
        chops = self._chops(bands, {y for y, _, _ in spans})
        chop_ends = [cut_set[1:] for cut_set in self.cuts]
        return SpanUpdate(chops, spans, chop_ends, erase=background_erase(), kept=self.kept())

    def _chops(self, bands: list[Region], rows: set[int]) -> list[dict[int, Strip | None]]:
        """Per screen row, the strip between each pair of cuts, for ``rows``
        (the others are left empty: an update reads only its spans' rows). As
        Textual's ``_render_chops``: the front-most widget's strip wins a cut."""
        cuts = self.cuts
        chops: list[dict[int, Strip | None] | None] = [None] * len(cuts)
        for band in bands:
            for shown, widget, part in self._band_parts(band):
                first_cut, last_cut = shown.column_span
                if _covered(chops, cuts, shown.line_range, rows, first_cut, last_cut):
                    continue  # what it would draw there, widgets in front of it drew
                strips = widget.render_lines(part)
                for y, strip in zip(shown.line_range, strips, strict=False):
                    if y not in rows:
                        continue
                    line = chops[y]
                    if line is None:
                        line = chops[y] = dict.fromkeys(cuts[y][:-1])
                    at = [cut for cut in cuts[y] if last_cut >= cut >= first_cut]
                    pieces = strip.divide([c - shown.x for c in at[1:]])
                    for cut, piece in zip(at, pieces, strict=False):
                        if line.get(cut) is None:
                            line[cut] = piece
        return [line if line is not None else {} for line in chops]

    def _band_parts(self, band: Region) -> Iterator[tuple[Region, Widget, Region]]:
        """Each visible widget within the rows of ``band`` (front to back): where
        that part is on screen, the widget, and the part in its own coordinates."""
        for widget, (region, clip) in self.visible_widgets.items():
            if not band.overlaps(clip):
                continue
            x, y, width, height = region.intersection(clip)
            top, bottom = max(y, band.y), min(y + height, band.bottom)
            if width and bottom > top:
                part = Region(x - region.x, top - region.y, width, bottom - top)
                yield Region(x, top, width, bottom - top), widget, part


def _covered(
    chops: list[dict[int, Strip | None] | None], cuts: list[list[int]], lines: range,
    rows: set[int], first_cut: int, last_cut: int,
) -> bool:  # fmt: skip
    """Whether every piece between ``first_cut`` and ``last_cut`` of the ``lines``
    an update reads (``rows``) is taken already: then a widget behind is not
    rendered. Each band asked the screen, and every container between it and
    the table, for lines the table covers (half the renders of an idle update)."""
    for y in lines:
        if y not in rows:
            continue
        line = chops[y]
        if line is None:
            return False
        for cut in cuts[y][:-1]:
            if first_cut <= cut < last_cut and line[cut] is None:
                return False
    return True


def row_bands(regions: Iterable[Region]) -> list[Region]:
    """The regions merged into bands of rows that overlap or touch: each band is
    the box around its regions, and no two bands share a row."""
    bands: list[Region] = []
    for region in sorted(regions, key=lambda r: r.y):
        if bands and region.y <= bands[-1].bottom:
            bands[-1] = bands[-1].union(region)
        else:
            bands.append(region)
    return bands


@functools.cache
def background_erase() -> bool:
    """Whether the terminal erases in the current background colour (terminfo
    bce: xterm, VTE, tmux, screen, the Linux console), so EL and ECH paint a
    run of blanks as writing them would."""
    term = os.environ.get("TERM", "")
    if not term or term == "dumb":
        return False
    try:
        import curses

        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            curses.setupterm(term, fd)
        finally:
            os.close(fd)
        return curses.tigetflag("bce") == 1
    except Exception:  # no terminfo entry, no curses: write the blanks
        return False
