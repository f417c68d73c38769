"""Only changed cells reach the terminal: span diffs, shifted rows, steady figures."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from pathlib import Path

from rich.color import ColorSystem
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.pilot import Pilot
from textual.strip import Strip
from textual.widget import Widget

from engine.datamodel import LazyProcRow, ProcRow, Snapshot, new_lazy_row
from tests.tui import vt
from tests.tui.fakes import FixedSource, proc, small_snapshot
from tests.tui.helpers import make_app, settle
from vstui.app.app import VstuiApp
from vstui.app.steady import CPU, RATE, Steadier
from vstui.app.steady import settle as settle_value
from vstui.app.widgets.linetable import LineTable
from vstui.app.widgets.paint import (
    SpanUpdate,
    best_shift,
    changed_spans,
    extend_shift,
    toasts_shown,
)
from vstui.app.widgets.pen import Pen
from vstui.app.widgets.sgr import Kept, _on, parts

RED = Style(color="red")


def strip(text: str, style: Style | None = None) -> Strip:
    return Strip([Segment(text, style)])


def test_changed_spans_finds_only_the_changed_cells():
    assert changed_spans(strip("pid 12  cpu 0.0"), strip("pid 12  cpu 1.0")) == [(12, 13)]
    assert changed_spans(strip("abc"), strip("abc")) == []
    assert changed_spans(None, strip("abc")) == [(0, 3)]


def test_changed_spans_sees_a_style_change_and_joins_close_runs():
    assert changed_spans(strip("S 0.0"), Strip([Segment("S", RED), Segment(" 0.0")])) == [(0, 1)]
    assert changed_spans(strip("a b"), strip("x y"), gap=4) == [(0, 3)]
    far = " " * 40
    assert changed_spans(strip("a" + far + "b"), strip("x" + far + "y")) == [(0, 1), (41, 42)]
    # eight cells apart: a step over them (pen.Pen, 3-5 bytes) is cheaper than writing them
    apart = " " * 8
    assert changed_spans(strip("a" + apart + "b"), strip("x" + apart + "y")) == [(0, 1), (9, 10)]
    assert changed_spans(strip("a   b"), strip("x   y")) == [(0, 5)]


def test_changed_spans_of_rows_styled_alike_match_a_cell_by_cell_comparison():
    """Two rows whose styles change at the same cells are compared by their
    text alone (a re-sort compares every line on screen): the same spans."""
    import random

    from vstui.app.widgets import paint

    rng = random.Random(20)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, 60), 3))
        widths = [b - a for a, b in zip([0, *cuts], [*cuts, 60], strict=True)]
        styles = [None, RED, None, Style(bold=True)]

        def row(widths=widths, styles=styles) -> Strip:
            return Strip([Segment("".join(rng.choice("ab ") for _ in range(w)), st)
                          for w, st in zip(widths, styles, strict=True)])  # fmt: skip

        old, new = row(), row()
        cells = paint._same_runs
        try:
            paint._same_runs = lambda a, b: None  # the cell by cell comparison
            slow = changed_spans(old, new)
        finally:
            paint._same_runs = cells
        assert paint._same_runs(old, new) is not None
        assert changed_spans(old, new) == slow


def test_changed_spans_of_rows_styled_apart_match_a_cell_by_cell_comparison():
    """Rows whose styles change at other cells, with characters beyond ASCII
    (a truncated command's "…", tree lines), are compared character by
    character and style by style: the same spans as (character, style) pairs."""
    import random
    from operator import ne

    from vstui.app.widgets import paint

    rng = random.Random(21)
    styles = [None, RED, Style(bold=True), Style(color="red"), Style(bold=True)]  # equal, not same
    for _ in range(300):

        def row() -> Strip:
            cuts = sorted(rng.sample(range(1, 40), 4))
            widths = [b - a for a, b in zip([0, *cuts], [*cuts, 40], strict=True)]
            return Strip([Segment("".join(rng.choice("ab …├─") for _ in range(w)),
                                  rng.choice(styles)) for w in widths])  # fmt: skip

        old, new = row(), row()
        pairs = bytes(map(ne, paint.cells_of(old), paint.cells_of(new)))
        assert paint._differ_by_cell(old, new) == pairs
    wide = Strip([Segment("日本 a")])
    assert paint._differ_by_cell(wide, wide) is None  # two cells a character: cells_of


def test_changed_spans_joins_runs_as_a_cell_by_cell_walk_does():
    """The runs of changed cells are found by a regex over a difference mask;
    they are those of a walk over every cell (runs fewer than ``gap`` equal
    cells apart joined)."""
    import random

    def walk(a: str, b: str, gap: int) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        start, last = -1, -gap - 1
        for x, (ca, cb) in enumerate(zip(a, b, strict=True)):
            if ca == cb:
                continue
            if start >= 0 and x - last > gap:
                spans.append((start, last + 1))
                start = x
            elif start < 0:
                start = x
            last = x
        return [*spans, (start, last + 1)] if start >= 0 else spans

    rng = random.Random(5)
    for _ in range(500):
        width = rng.randint(1, 160)
        a = "".join(rng.choice("ab  ") for _ in range(width))
        b = "".join(c if rng.random() < 0.8 else rng.choice("ab ") for c in a)
        for gap in (1, 2, 5, 12, 40):
            assert changed_spans(strip(a), strip(b), gap=gap) == walk(a, b, gap), (a, b, gap)


def test_changed_spans_counts_wide_characters_as_two_cells():
    assert changed_spans(strip("日本 a"), strip("日本 b")) == [(5, 6)]


def test_span_update_writes_only_the_span_not_from_the_widget_edge():
    line = {0: strip("0123456789")}
    update = SpanUpdate([line], [(0, 4, 6)], [[10]])
    out = update.render_segments(_console())
    assert out.startswith("\x1b[1;5H") and "45" in out and "3" not in out.replace("\x1b[1;5H", "")


def test_span_update_states_a_style_once_per_run_of_it():
    """The terminal keeps the SGR state between spans, as ncurses does: a
    style is sent when it changes, not around every span (no reset after
    each, no colour restated for the same style), and reset once at the end."""
    grey = Style(color="grey70", bgcolor="black")
    bold = Style(color="grey70", bgcolor="black", bold=True)
    lines = [{0: Strip([Segment("ab", grey)])}, {0: Strip([Segment("cd", grey)])},
             {0: Strip([Segment("e", grey), Segment("f", bold), Segment("g", grey)])}]  # fmt: skip
    update = SpanUpdate(lines, [(0, 0, 2), (1, 0, 2), (2, 0, 3)], [[2], [2], [3]])
    out = update.render_segments(_console())
    colours = Style(color="grey70", bgcolor="black")._make_ansi_codes(_console().color_system)
    assert out.count(colours) == 1  # stated once for the three spans
    assert out.count("\x1b[0m") == 1 and out.endswith("\x1b[0m")
    assert "\x1b[1m" in out and "\x1b[22m" in out  # bold on, then off: colours kept
    plain = "".join(ch for ch in re.sub("\x1b\\[[0-9;]*[A-Za-z]", "", out))
    assert plain == "abcdefg"


def _reference(lines, spans) -> str:
    """The same spans written the simple way: an absolute move before every
    run and the whole style before every segment (what Textual does)."""
    out = []
    for y, x1, x2 in spans:
        for x, line in lines[y].items():
            strip = line.crop(max(x1 - x, 0), max(x2 - x, 0))
            if strip.cell_length:
                out.append(f"\x1b[{y + 1};{max(x, x1) + 1}H")
            for text, style, _ in strip:
                codes = [*_on(parts(style, ColorSystem.EIGHT_BIT)[0]),
                         *filter(None, parts(style, ColorSystem.EIGHT_BIT)[1:])]  # fmt: skip
                out.append("\x1b[" + ";".join(["0", *codes]) + "m" + text)
    return "".join(out) + "\x1b[0m"


def test_span_updates_paint_what_absolute_moves_paint():
    """Moves are relative where that is shorter (pen.Pen) and long runs of
    blanks are erased (EL, ECH) where the terminal erases in the current
    background: on random screens of several widgets per line and random
    spans, some up to the right margin, a terminal ends up looking the same
    as when every run is reached by an absolute move, every segment carries
    its whole style and every blank is written."""
    import random

    rng = random.Random(20)
    styles = [None, RED, Style(color="grey70", bgcolor="black"), Style(bold=True, bgcolor="blue"),
              Style(color="grey70", bgcolor="black", reverse=True)]  # fmt: skip
    width, height = 40, 8
    for _ in range(300):
        lines, ends = [], []
        for _y in range(height):
            cuts = sorted(rng.sample(range(1, width), rng.randint(0, 2)))
            line = {}
            for a, b in zip([0, *cuts], [*cuts, width], strict=True):
                segs, x = [], a
                while x < b:
                    n = rng.randint(1, b - x)
                    chars = "ab  " if rng.random() < 0.6 else "a" + " " * 15
                    segs.append(Segment("".join(rng.choice(chars) for _ in range(n)),
                                        rng.choice(styles)))  # fmt: skip
                    x += n
                line[a] = Strip(segs)
            lines.append(line)
            ends.append([*cuts, width])
        spans = []
        for y in sorted(rng.sample(range(height), rng.randint(1, height))):
            x = 0
            while x < width and rng.random() < 0.8:
                x1 = rng.randint(x, width - 1)
                x2 = rng.randint(x1 + 1, width)
                spans.append((y, x1, x2))
                x = x2 + 1
        if not spans:
            continue
        want = vt.Screen(width, height)
        want.feed(_reference(lines, spans))
        for erase in (False, True):
            got = vt.Screen(width, height)
            got.feed(SpanUpdate(lines, spans, ends, erase=erase).render_segments(_console()))
            assert got.look() == want.look(), erase
            if not erase:
                assert got.cells == want.cells


def test_blanks_up_to_the_end_of_a_line_are_erased_not_written():
    grey = Style(color="grey70", bgcolor="black")
    line = {0: Strip([Segment("bash", grey), Segment(" " * 76, grey)])}
    out = SpanUpdate([line], [(0, 0, 80)], [[80]], erase=True).render_segments(_console())
    assert out.count(" ") == 0 and "bash\x1b[K" in out
    assert "  " * 10 in SpanUpdate([line], [(0, 0, 80)], [[80]]).render_segments(_console())
    under = {0: Strip([Segment("bash" + " " * 76, Style(bgcolor="black", underline=True))])}
    out = SpanUpdate([under], [(0, 0, 80)], [[80]], erase=True).render_segments(_console())
    assert "\x1b[K" not in out  # an erased cell would lose its underline


def test_the_sgr_state_is_kept_from_one_update_to_the_next():
    """An update leaves its last style set; the next one starts from it. Any
    other write to the terminal comes after a reset (Textual's own repaints
    state a style without resetting first)."""
    grey = Style(color="grey70", bgcolor="black")
    kept = Kept()
    lines = [{0: Strip([Segment("12", grey)])}]
    first = SpanUpdate(lines, [(0, 0, 2)], [[2]], kept=kept).render_segments(_console())
    assert kept.wrote(first + "\x1b[1;1H") == first + "\x1b[1;1H"
    assert "\x1b[0m" not in first  # no reset at the end
    assert kept.wrote("\x1b[?2026h") == "\x1b[?2026h"  # synchronized output: no SGR
    scroll = "\x1b[3;9r\x1b[3;1H\x1b[2L\x1b[r"  # paint.scroll_lines
    assert kept.wrote(scroll) == scroll
    second = SpanUpdate(lines, [(0, 0, 2)], [[2]], kept=kept).render_segments(_console())
    assert kept.wrote(second) == second == "\x1b[H12"  # the style is still set
    assert kept.wrote("\x1b[38;5;1mx\x1b[0m") == "\x1b[0m\x1b[38;5;1mx\x1b[0m"
    assert kept.wrote("\x1b[?1049l") == "\x1b[?1049l"  # unknown now, but reset already
    kept.now = parts(grey, ColorSystem.EIGHT_BIT)
    assert kept.wrote("\x1b[?1049l") == "\x1b[0m\x1b[?1049l"  # the exit: the shell's colours
    third = SpanUpdate(lines, [(0, 0, 2)], [[2]], kept=kept).render_segments(_console())
    assert third.startswith("\x1b[H\x1b[0;")  # a whole style after someone else wrote
    screen = vt.Screen(2, 1)
    for data in (first, second, "\x1b[1mx", third):
        screen.feed(data)
    assert screen.cells[0][1] == ("2", (frozenset(), "5;249", "40"))  # not bold


def test_the_pen_takes_the_shortest_move():
    pen = Pen()
    assert pen.to(33, 6) == "\x1b[34;7H"  # nowhere known yet: absolute
    pen.wrote(2, 160)
    assert pen.to(33, 24) == "\x1b[16C"  # further along the line
    pen.wrote(2, 160)
    assert pen.to(34, 24) == "\x1b[B\b\b"  # the same column, a line below
    pen.wrote(3, 160)
    assert pen.to(34, 2) == "\x1b[3G"  # back to a column near the start
    assert pen.to(34, 159) == "\x1b[157C"
    pen.wrote(1, 160)  # the right margin: a wrap is pending, where next is unsure
    assert pen.to(35, 0) == "\x1b[36H"
    assert pen.to(35, 0) == ""


def test_best_shift_finds_rows_that_moved_together():
    old = {0: "head", 1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}
    assert best_shift(old, ["head", "new", "a", "b", "c", "d"]) == (1, 4, 1)
    assert best_shift(old, ["head", "b", "c", "d", "e", None]) == (2, 5, -1)
    assert best_shift(old, ["head", "a", "b", "c", "d", "e"]) is None
    assert best_shift(old, ["head", "x", "a", "y", "b", "z"]) is None  # nothing moved as a block


def test_a_shift_carries_the_rows_below_it_along_down_to_one_in_place():
    """A row inserted above a list moves the rest of it: the rows below the
    matched block (new short-lived children, like the ones before them) go
    along, so they land on rows like them, not on rows the scroll blanked."""
    old = {0: "head", 1: "a", 2: "b", 3: "c", 4: "kid1", 5: "kid2", 6: "x"}
    new = ["head", "new", "a", "b", "c", "kid3", "kid4"]
    assert best_shift(old, new) == (1, 3, 1)
    assert extend_shift(old, new, 1, 3, 1) == (1, 5, 1)  # to the end of the widget
    old = {0: "head", 1: "a", 2: "b", 3: "c", 4: "kid1", 5: "z", 6: "y"}
    new = ["head", "new", "a", "b", "c", "z", "y"]
    assert extend_shift(old, new, 1, 3, 1) == (1, 3, 1)  # z is in its place already
    old = {0: "head", 1: "gone", 2: "a", 3: "b", 4: "c", 5: "kid1", 6: "kid2"}
    new = ["head", "a", "b", "c", "kid3", "kid4", None]
    assert extend_shift(old, new, *best_shift(old, new)) == (2, 6, -1)


def test_settle_hides_noise_and_shows_real_changes():
    state = settle_value(None, 0.0, CPU)
    for value in (1.0, 0.0, 1.0, 0.0, 0.9, 0.0):  # a process that wakes now and then
        state = settle_value(state, value, CPU)
        assert state[0] == 0.0
    state = settle_value(state, 40.0, CPU)  # it went busy: shown at once
    assert state[0] == 40.0
    for value in (41.0, 39.5, 40.7):
        state = settle_value(state, value, CPU)
        assert state[0] == 40.0
    for _ in range(6):  # it stopped: gone within a few samples
        state = settle_value(state, 0.0, CPU)
    assert state[0] == 0.0
    rate = settle_value(None, 1000.0, RATE)
    assert settle_value(rate, 1100.0, RATE)[0] == 1000.0


def test_steadier_keeps_equal_figures_equal_so_the_order_holds():
    snap = small_snapshot()
    steady = Steadier()
    first = steady.apply(snap)
    jitter = tuple(replace(p, cpu_percent=p.cpu_percent + 0.4) for p in snap.procs)
    second = steady.apply(replace(snap, procs=jitter))
    assert [p.cpu_percent for p in second.procs] == [p.cpu_percent for p in first.procs]


def test_steadier_shows_what_settle_shows_for_every_process():
    """Idle processes skip settle() (their pair cannot move): the shown values are
    those of settle() for every process, over a run of busy, idle and noisy samples."""
    snap = small_snapshot()
    steady = Steadier()
    states: dict = {}
    runs = [[0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0], [40.0, 0.0, 0.0]]
    for step in range(len(runs[0])):
        values = [run[step % len(run)] for run in runs] * len(snap.procs)
        procs = tuple(replace(p, cpu_percent=v) for p, v in zip(snap.procs, values, strict=False))
        shown = steady.apply(replace(snap, procs=procs)).procs
        for p, s in zip(procs, shown, strict=True):
            states[p.key] = settle_value(states.get(p.key), p.cpu_percent, CPU)
            assert s.cpu_percent == states[p.key][0]
            assert s.pid == p.pid


class _CountingStatic:
    """A scanner's record of a process that counts what is read from it."""

    def __init__(self) -> None:
        self.reads = 0
        self.nspid, self.cmdline = (7,), "sleep 1"  # read only through the properties below

    def __getattribute__(self, name: str) -> object:
        if name in ("nspid", "cmdline", "owner"):
            object.__setattr__(self, "reads", object.__getattribute__(self, "reads") + 1)
        return object.__getattribute__(self, name)

    def owner(self) -> int:
        return 1000


def test_steadier_reads_nothing_of_the_processes_it_steadies():
    """A steadied CPU% reads nothing from /proc: dataclasses.replace asked a
    LazyProcRow for every field, so each process that ran read its argv, owner
    and NSpid every second, on screen or not. The row is the same otherwise."""
    static = _CountingStatic()
    owner = lambda huid: (huid, "user")  # noqa: E731
    base = small_snapshot().procs[0]
    values = [getattr(base, f.name) for f in fields(ProcRow)]

    def lazy(cpu: float) -> ProcRow:
        row = dict(zip([f.name for f in fields(ProcRow)], values, strict=True))
        row.update(cpu_percent=cpu, nspid=None, cmdline=None, uid=None, user=None, huid=None)
        return new_lazy_row(*row.values(), static, owner)

    steady = Steadier()
    steady.apply(replace(small_snapshot(), procs=(lazy(10.0),)))
    shown = steady.apply(replace(small_snapshot(), procs=(lazy(10.4),))).procs[0]
    assert shown.cpu_percent == 10.0 and isinstance(shown, LazyProcRow)
    assert static.reads == 0
    assert (shown.cmdline, shown.nspid, shown.user) == ("sleep 1", 7, "user")
    assert shown == replace(lazy(10.0), cpu_percent=10.0)


def on_procs_table(
    tmp_path: Path,
    check: Callable[[Pilot, LineTable], Awaitable[None]],
    snap: Snapshot | None = None,
) -> None:
    """Runs ``check`` on the processes screen's table of a console at 80x24
    that refreshes only when a test asks (small_snapshot() unless ``snap``)."""
    app = make_app(tmp_path, snap=snap or small_snapshot(), first_screen="processes", interval=3600)

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await check(pilot, app.screen.query_one("#procs", LineTable))

    asyncio.run(main())


def test_rows_outgrowing_the_table_neither_relayout_nor_narrow_it(tmp_path: Path):
    """Processes coming and going around the table's height flipped Textual's
    scrollbar flags: a layout of the whole screen each time, and two columns
    given to a scrollbar that is never drawn, so every line was sent again."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        layouts: list[bool] = []
        screen = table.screen
        real = screen._refresh_layout
        screen._refresh_layout = lambda *a, **kw: layouts.append(True) or real(*a, **kw)
        width = table.scrollable_content_region.width
        few = list(table.order)
        many = [*few, *(("x", n) for n in range(60))]
        items = {**table.items, **{key: table.items[few[0]] for key in many[len(few) :]}}
        for order in (many, few, many):
            table.set_data(order, items, table.prefixes)
            await pilot.pause()
            assert table.scrollable_content_region.width == width
        assert layouts == []
        assert table.allow_vertical_scroll  # the mouse wheel still scrolls it

    on_procs_table(tmp_path, check)


def test_an_update_repaints_only_the_changed_cell(tmp_path: Path):
    """One CPU% changes: the table asks for one small region, not the line."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        asked: list[Region] = []
        real = table.refresh
        table.refresh = lambda *regions, **kw: asked.extend(regions) or real(*regions, **kw)
        items = dict(table.items)
        key = table.order[-1]
        items[key] = replace(items[key], rss=items[key].rss + 64 << 20)
        table.set_data(list(table.order), items, table.prefixes)
        assert len(asked) == 1 and asked[0].height == 1 and asked[0].width < 10, asked
        asked.clear()
        table.set_data(list(table.order), items, table.prefixes)
        assert asked == []  # nothing changed, nothing sent

    on_procs_table(tmp_path, check)


def test_a_row_whose_item_changed_but_reads_the_same_is_not_built_again(tmp_path: Path):
    """A guest's uptime ticks every second but shows in minutes: its line is
    not rebuilt (at hundreds of guests that was most of an idle refresh)."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        built: list[object] = []
        real = table._line
        table._line = lambda *a: built.append(a) or real(*a)
        items = dict(table.items)
        key = table.order[-1]
        items[key] = replace(items[key], cutime=items[key].cutime + 1)  # not shown
        table.set_data(list(table.order), items, table.prefixes)
        assert built == []

    on_procs_table(tmp_path, check)


def test_a_sync_looks_up_nothing_for_rows_made_of_the_same_things(tmp_path: Path):
    """Every poll syncs every line shown; a row whose item object, prefix, mark,
    cursor, width and scroll are those of the last sync is the very strip drawn
    then, its cells and built line not looked up (~15 us a line, a third of an
    idle update at 160x48), and a blank line below the rows is the same strip
    too; so is a row Textual asks for again (render_line: a partial update
    repaints the rows it touches). A changed item, a mark or the cursor is
    drawn anew."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        asked: list[int] = []
        real = table._row
        table._row = lambda index, total: asked.append(index) or real(index, total)
        items = dict(table.items)
        last = table.size.height - 1  # below the rows: blank
        blank = table._painted.lines[last]
        table.set_data(list(table.order), items, table.prefixes)
        assert asked == [] and table._painted.lines[last] is blank
        assert table.render_line(3) is table._painted.lines[3] and asked == []  # a repaint
        key = table.order[-1]
        items[key] = replace(items[key], rss=items[key].rss + (64 << 20))
        table.set_data(list(table.order), items, table.prefixes)
        assert asked == [len(table.order) - 1]
        asked.clear()
        table.marked.add(table.order[0])
        table.move_cursor(1)
        assert sorted(set(asked)) == [0, 1] and table._painted.lines[1].text.startswith("*")

    on_procs_table(tmp_path, check)


def test_format_proc_reads_only_the_face_and_what_a_process_keeps_for_life():
    """proc_face stands for format_proc's output: a row that differs in any field
    outside the face (but the user, VPID and command line, fixed per process and
    exec) formats the same, in the tree too. A column reading another field
    fails here until the face has it."""
    from vstui.app.screens.procs import format_proc, proc_face

    row = proc(4242, 1, "web", 40001, "/usr/sbin/nginx -g daemon off;", state="R")
    fixed = {"nspid", "user", "cmdline"}
    for field in fields(row):
        value = getattr(row, field.name)
        other = replace(row, **{field.name: _another(value)})
        if proc_face(other) == proc_face(row) and field.name not in fixed:
            for prefix in ("", " `- "):
                assert format_proc(other, prefix) == format_proc(row, prefix), field.name


def _another(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 7
    return f"{value}x"


def test_a_row_with_a_new_item_of_the_same_face_is_not_formatted_again(tmp_path: Path):
    """A process that ran is a new row at every poll (its CPU time moved); when
    nothing shown of it changed, the processes table does not format it again."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        formatted: list[object] = []
        real = table.formatter
        table.formatter = lambda item, prefix: formatted.append(item) or real(item, prefix)
        items = dict(table.items)
        key = table.order[-1]
        items[key] = replace(items[key], utime=items[key].utime + 3, stime=items[key].stime + 1)
        table.set_data(list(table.order), items, table.prefixes)
        assert formatted == []
        items[key] = replace(items[key], state="R")
        table.set_data(list(table.order), items, table.prefixes)
        assert formatted == [items[key]]

    on_procs_table(tmp_path, check)


def test_an_update_renders_no_widget_behind_the_rows_it_repaints(tmp_path: Path):
    """A row of the table changes: the update renders the table's lines, not the
    screen's (or a container's) behind them, which the table covers; what is
    sent is the same."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        rendered: list[str] = []

        def counted(widget: Widget) -> None:
            real, name = widget.render_lines, type(widget).__name__
            widget.render_lines = lambda crop: rendered.append(name) or real(crop)  # type: ignore[method-assign]

        for widget in table.ancestors_with_self:
            if isinstance(widget, Widget):
                counted(widget)
        items = dict(table.items)
        key = table.order[-1]
        items[key] = replace(items[key], rss=items[key].rss + (64 << 20))
        table.set_data(list(table.order), items, table.prefixes)
        await pilot.pause()
        assert rendered == ["LineTable"]

    on_procs_table(tmp_path, check)


def test_a_line_of_plain_cells_joined_is_the_line_of_a_segment_per_cell(tmp_path: Path):
    """LineTable._line joins runs of plain cells into one text before making
    segments (a re-sort builds ~46 lines on the key's frame); the strips are
    those of a segment per cell and gap, merged, as before."""
    from rich.text import Text

    from vstui.app.widgets.linetable import _cell_segments
    from vstui.app.widgets.paint import lean

    app = make_app(tmp_path, snap=small_snapshot(), first_screen="processes", interval=3600)

    def per_cell(table: LineTable, lead: str, cells: list, total: int, style: Style) -> Strip:
        segments = [Segment(lead, style)]
        for col, width, cell in zip(table.shown, table.widths(total), cells, strict=False):
            if isinstance(cell, str) and cell.isascii() and cell.isprintable():
                text = cell if len(cell) <= width else cell[: max(width - 1, 0)] + "…"
                pad = " " * (width - len(text))
                segments.append(Segment(pad + text if col.right else text + pad, style))
            else:
                segments.extend(_cell_segments(cell, width, col.right, style, app.console))
            segments.append(Segment(" ", style))
        return lean(segments).extend_cell_length(total, style)

    rows = [
        ["1", "(host)", "1", "root", "S", "0.0", "1.2M", "/sbin/init"],
        ["123456789", "a-very-long-guest-name", "", "", "", "100.0", "", "x" * 300],
        ["7", "db", "2", "user", Text("R", style="green"), "12.5", "3M", "postgres -D /d"],
        ["8", "db", "3", "user", "S", "0.0", "3M", Text("├─ ", style="dim") + Text("worker")],
        ["9", "日本語のゲスト", "4", "ü", "S", "0.0", "1M", "sleep\n30\x1b[2J"],
        [Text("10", style="bold"), "g", "5", "u", "Z", "0.0", "0", "日本語" * 40],
    ]

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#procs", LineTable)
            style = Style(color="white", bgcolor="blue")
            for total in (40, 80, 200):
                for cells in rows:
                    for lead in (" ", "*"):
                        new = table._line(lead, cells, total, style)
                        old = per_cell(table, lead, cells, total, style)
                        assert list(new) == list(old), (total, cells)
                        assert new.cell_length == old.cell_length

    asyncio.run(main())


def test_a_focus_change_rebuilds_only_the_cursor_row(tmp_path: Path):
    """Focus changes only the cursor's colour: the focus leaving the table
    (to the sort picker, when it took the focus) over 10,000 processes
    rebuilt every line of the table."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        built: list[object] = []
        real = table._line
        table._line = lambda *a: built.append(a) or real(*a)
        table.screen.set_focus(None)
        await pilot.pause()
        assert not table.has_focus and len(built) == 1

    on_procs_table(tmp_path, check)


def test_a_focus_change_repaints_only_the_cursor_row(tmp_path: Path):
    """Textual repaints a widget whole when it gains or loses the focus: the
    sort picker opening and closing (when it took the focus) sent every line
    of the table twice."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        asked: list[tuple[Region, ...]] = []
        real = Widget.refresh  # Textual's own calls reach it past LineTable.refresh

        def spy(self: Widget, *regions: Region, **kw: bool) -> Widget:
            if self is table:
                asked.append(regions)
            return real(self, *regions, **kw)

        Widget.refresh = spy  # type: ignore[method-assign]
        try:
            for focused in (None, table):  # the focus leaves the table, comes back
                table.screen.set_focus(focused)
                await pilot.pause()
        finally:
            Widget.refresh = real  # type: ignore[method-assign]
        assert table.has_focus
        assert asked and () not in asked, asked  # never the whole table
        rows = {r.y for regions in asked for r in regions}
        assert rows == {table.cursor_row + 1}, rows  # the cursor's line (below the header)

    on_procs_table(tmp_path, check)


def test_showing_and_hiding_the_sort_picker_leaves_the_table_alone(tmp_path: Path):
    """Each layout of the screen handed the table the compositor's virtual
    size, never its own: its scrollbars were updated and the table repainted
    a frame after every picker, filter box or notice shown or hidden."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        updates: list[object] = []
        real = table._scroll_update
        table._scroll_update = lambda size: updates.append(size) or real(size)
        for key in ("greater_than_sign", "escape", "greater_than_sign", "escape"):
            await pilot.press(key)
            await pilot.pause()
        assert updates == []

    on_procs_table(tmp_path, check)


def _console():
    from rich.console import Console

    return Console(color_system="256", force_terminal=True, width=80)


def test_the_sort_picker_leaves_the_focus_and_the_table_alone(tmp_path: Path):
    """The picker took the focus from the table and gave it back: each way a
    restyle of both, the cursor's line built and repainted, the whole screen
    repainted (Textual's Screen.focused) and the key footer a frame later.
    Now it opens and closes over a table that keeps the focus; the table
    builds no line and is asked to repaint nothing (the compositor redraws
    what the picker covered from the lines already built)."""

    async def check(pilot: Pilot, table: LineTable) -> None:
        screen = table.screen
        built: list[object] = []
        real_line = table._line
        table._line = lambda *a: built.append(a) or real_line(*a)
        asked: list[tuple[Widget, tuple[Region, ...]]] = []
        real = Widget.refresh

        def spy(self: Widget, *regions: Region, **kw: bool) -> Widget:
            if self is table or self is screen:
                asked.append((self, regions))
            return real(self, *regions, **kw)

        Widget.refresh = spy  # type: ignore[method-assign]
        try:
            for key in ("greater_than_sign", "down", "escape", "greater_than_sign", "escape"):
                await pilot.press(key)
                await pilot.pause()
                assert table.has_focus, key
        finally:
            Widget.refresh = real  # type: ignore[method-assign]
        assert built == [] and asked == []
        assert table.sort_key == "cpu"  # escape picks nothing

    on_procs_table(tmp_path, check)


def test_control_characters_never_reach_the_terminal(tmp_path: Path):
    """A newline in a command line moved the terminal's cursor to the next row."""
    snap = small_snapshot()
    evil = replace(snap.procs[-1], cmdline="sleep\n30\x1b[2J\x07")

    async def check(pilot: Pilot, table: LineTable) -> None:
        drawn = "".join(table.render_line(y).text for y in range(table.size.height))
        assert "sleep?30?[2J?" in drawn
        assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in drawn)

    on_procs_table(tmp_path, check, replace(snap, procs=(*snap.procs[:-1], evil)))


def _with_text_lines(scenario) -> None:
    """Run ``scenario(pilot, lines)`` in an app holding one TextLines at 40x10."""
    from textual.app import App

    from vstui.app.widgets import textlines

    class Lines(App):
        def compose(self):
            yield textlines.TextLines(id="lines")

    async def main() -> None:
        app = Lines()
        async with app.run_test(size=(40, 10)) as pilot:
            await scenario(pilot, app.query_one(textlines.TextLines))

    asyncio.run(main())


def test_text_lines_build_again_only_the_lines_that_changed(monkeypatch):
    """The detail screen's header (a dozen lines) built every line again each
    second for a sparkline: a line that reads the same keeps its strip, and
    the strips are those a full build makes."""
    from vstui.app.widgets import textlines

    built: list[str] = []
    real = textlines._strip
    monkeypatch.setattr(
        textlines, "_strip", lambda line, *a: built.append(line.plain) or real(line, *a)
    )

    async def scenario(pilot, lines) -> None:
        for cpu in ("▁▂", "▂▃"):  # laid out, then drawn
            lines.show([f"cpu {cpu}", "memory 1G", "disk 2G"])
            await pilot.pause()
        built.clear()
        lines.show(["cpu ▃▄", "memory 1G", "disk 2G"])
        assert built == ["cpu ▃▄"]
        kept = list(lines._all_strips())
        lines._strips = []
        assert lines._all_strips() == kept

    _with_text_lines(scenario)


def test_text_lines_compare_each_line_once(monkeypatch):
    """A Text comparison joins its text and compares its spans' styles in Python:
    one per line a second, not two (all-equal first, then line by line)."""
    from vstui.app.widgets import textlines

    async def scenario(pilot, lines) -> None:
        lines.show(["a", "b", "c", "d 1"])
        await pilot.pause()
        lines._all_strips()  # drawn (as on screen)
        compared: list[int] = []
        real = textlines.Text.__eq__
        monkeypatch.setattr(textlines.Text, "__eq__", lambda a, b: compared.append(1) or real(a, b))
        lines.show(["a", "b", "c", "d 2"])
        assert len(compared) == 4

    _with_text_lines(scenario)


def test_a_partial_update_renders_only_the_rows_that_changed():
    """Textual renders, whole, every widget touching the box around all changed
    regions: a change in the first and the last row asked for all 8 rows. The
    span compositor asks each widget for the changed rows' bands alone, and
    the terminal gets the same cells."""
    from textual.app import App
    from textual.screen import Screen

    from vstui.app.widgets.paint import SpanCompositor

    class Rows(Widget):
        DEFAULT_CSS = "Rows { height: 8; }"
        text = [f"row {i}" for i in range(8)]
        asked: list[Region] = []

        def render_lines(self, crop: Region) -> list[Strip]:
            self.asked.append(crop)
            return super().render_lines(crop)

        def render_line(self, y: int) -> Strip:
            return Strip([Segment(self.text[y].ljust(self.size.width))])

    class Spans(Screen):
        def __init__(self) -> None:
            super().__init__()
            self._compositor = SpanCompositor()

        def compose(self):
            yield Rows()

    class Lines(App):
        def on_mount(self) -> None:
            self.push_screen(Spans())

    async def main() -> None:
        app = Lines()
        async with app.run_test(size=(20, 10)) as pilot:
            await pilot.pause()
            rows = app.screen.query_one(Rows)
            rows.asked.clear()
            rows.text = ["row 0!", *Rows.text[1:7], "row 7!"]
            rows.refresh(Region(0, 0, 6, 1), Region(0, 7, 6, 1))
            await pilot.pause()
            assert sorted(r.height for r in rows.asked) == [1, 1]
            assert app.screen._compositor.render_strips()[7].text.startswith("row 7!")

    asyncio.run(main())


def _in_a_cycle(obj: object, depth: int = 4) -> bool:
    """Whether ``obj`` is reachable from itself within ``depth`` references."""
    import gc

    frontier = gc.get_referents(obj)
    for _ in range(depth):
        if any(o is obj for o in frontier):
            return True
        frontier = [r for o in frontier for r in gc.get_referents(o) if not isinstance(o, type)]
    return False


def test_cropping_or_dividing_a_line_to_itself_leaves_no_reference_cycle():
    """Textual's Strip cached a crop_extend's or a divide's result in the strip
    asked, even when the result was the strip itself: a cycle, garbage only a
    full collection frees (a Strip and its 7 FIFOCaches per line drawn). With
    vstui's widgets loaded both answer as before and leave no cycle."""
    import vstui.app.widgets.paint  # noqa: F401  (what mends Strip)

    for cuts in ([5], [5, 9], [2, 5], [9], [2, 3]):
        line = strip("hello", RED)
        assert [p.text for p in line.divide(cuts)] == [
            "hello"[a:b] for a, b in zip([0, *cuts], [c for c in cuts if c <= 5], strict=False)
        ]
    assert strip("hello", RED).crop_extend(0, 7, None).text == "hello  "
    assert strip("hello", RED).crop_extend(1, 4, None).text == "ell"
    whole = strip("hello", RED)
    assert whole.crop_extend(0, 5, None) is whole and list(whole.divide([5])) == [whole]
    assert whole.divide([5, 9]) == [whole]
    assert not _in_a_cycle(whole)


def test_the_lines_a_table_and_its_updates_draw_leave_no_reference_cycle(tmp_path: Path):
    """A row as wide as the table (what a live console draws), drawn in full and
    then cut into pieces by a partial update: none refers to itself."""
    from vstui.app.widgets.paint import SpanCompositor

    chopped: list[Strip] = []
    real = SpanCompositor._chops

    def spy(self, *a):  # type: ignore[no-untyped-def]
        chops = real(self, *a)
        chopped.extend(s for line in chops for s in line.values() if s is not None)
        return chops

    async def check(pilot: Pilot, table: LineTable) -> None:
        table.styles.width = table._total_width()  # rows exactly as wide as the table
        await settle(pilot)
        items = dict(table.items)
        key = table.order[-1]
        items[key] = replace(items[key], rss=items[key].rss + 64 << 20)
        table.set_data(list(table.order), items, table.prefixes)
        await settle(pilot)
        drawn = list(table._painted.lines.values())
        assert drawn[1].cell_length == table.size.width
        assert chopped and not [s.text for s in drawn + chopped if _in_a_cycle(s)]

    SpanCompositor._chops = spy  # type: ignore[method-assign]
    try:
        on_procs_table(tmp_path, check)
    finally:
        SpanCompositor._chops = real  # type: ignore[method-assign]


def test_a_toast_on_screen_is_seen_without_a_query(tmp_path: Path):
    """scroll_lines must not move rows under a notification; toasts_shown
    tells from the screen's toast rack, and agrees with a query of the
    whole screen for Toast widgets, before, during and after one."""
    app = make_app(tmp_path, first_screen="processes", interval=3600)

    async def main() -> None:
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot)
            seen = []
            for step in ("before", "during", "after"):
                if step == "during":
                    app.notify("hello", timeout=0.5)
                await pilot.pause(0.1 if step == "during" else 0.8)
                seen.append((toasts_shown(app.screen), bool(app.screen.query("Toast"))))
            assert seen == [(False, False), (True, True), (False, False)]

    asyncio.run(main())


def _second_poll_ran_a_process(tmp_path: Path) -> VstuiApp:
    """The processes screen, whose next poll shows a process at 55.0% CPU."""
    first = small_snapshot()
    ran = replace(first.procs[4], cpu_percent=55.0)
    second = replace(first, procs=(*first.procs[:4], ran, *first.procs[5:]))
    return make_app(tmp_path, first_screen="processes", interval=3600,
                    source=FixedSource(first, second))  # fmt: skip


def _shows_the_busy_process(app: VstuiApp) -> bool:
    table = app.screen.query_one("#procs", LineTable)
    return any("55.0" in strip.text for strip in table._painted.lines.values())


def test_a_poll_is_painted_in_the_turn_that_shows_it(tmp_path: Path):
    """A poll's changes reach the terminal from the handler that shows the
    snapshot (paint.paint_now). Textual's way, idle prompts, an Update
    message, the screen's update timer resumed and its Timer event up to
    1/60 s later, woke the UI thread a second time at every poll."""
    app = _second_poll_ran_a_process(tmp_path)

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            screen, resumed, painted = app.screen, [], []
            timer = screen._update_timer
            resume, display = timer.resume, app._display
            timer.resume = lambda: resumed.append(True) or resume()
            app._display = lambda *a: painted.append(a) or display(*a)
            app.take_snapshot()
            await pilot.pause()
            assert painted and not resumed and _shows_the_busy_process(app)

    asyncio.run(main())


def test_a_poll_from_the_poll_thread_is_shown_without_a_message(tmp_path: Path):
    """The poll thread hands its snapshot to the UI thread's loop directly
    (poller.Handover): a SnapshotReady message cost the poll thread 56 us to
    post and the UI thread a queue turn, a dispatch by name and an Idle event,
    about a sixth of the UI thread's work at an idle poll."""
    import threading

    app = _second_poll_ran_a_process(tmp_path)

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            posted: list[str] = []
            post = app.post_message
            app.post_message = lambda m: posted.append(type(m).__name__) or post(m)
            poll = threading.Thread(target=app.take_snapshot)
            poll.start()
            poll.join()
            await pilot.pause()
            assert "SnapshotReady" not in posted and _shows_the_busy_process(app)

    asyncio.run(main())


def test_a_tree_rows_command_is_made_once_and_drawn_without_change(tmp_path: Path):
    """A tree row's command (branch and command line, two rich Texts) is made
    once and shared by the row's every format: drawing it, cut to a narrow
    column, must leave it as it was."""
    from vstui.app.screens.procs import format_proc

    row = proc(4242, 1, "web", 40001, "/usr/sbin/nginx -g daemon off; " * 4)
    first = format_proc(row, "│  ├─ ")
    again = format_proc(replace(row, cpu_percent=9.0), "│  ├─ ")
    assert again[-1] is first[-1]
    before = (first[-1].plain, list(first[-1].spans))

    async def check(pilot: Pilot, table: LineTable) -> None:
        for total in (30, 80, 200):
            table._line(" ", first, total, Style(color="white"))
        assert (first[-1].plain, list(first[-1].spans)) == before

    on_procs_table(tmp_path, check)
