"""Guests: every configured guest in one table, the host as context 0."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult

from engine.datamodel import HOST_NAME, GuestStatus, Snapshot
from vstui.app import fmt
from vstui.app.actions import GUESTS, bindings
from vstui.app.history import History
from vstui.app.procview import matcher
from vstui.app.screens.base import TableScreen
from vstui.app.widgets.linetable import Cell, Column, LineTable

SPARK_WIDTH = 8

# ``hide``: which columns give way first on a narrow terminal. At 80 columns
# NAME STATE CPU% MEM PROCS RX TX UP XID remain (the rest: detail screen).
COLUMNS = (
    Column("name", "NAME", 12),
    Column("state", "STATE", 8),
    Column("cpu", "CPU%", 5, right=True),
    Column("cpu_hist", "CPU", SPARK_WIDTH, hide=6),
    Column("memory", "MEM", 11, right=True),
    Column("mem_bar", "MEM%", 10, hide=7),
    Column("nproc", "PROCS", 8, right=True, hide=1),
    Column("disk", "DISK", 11, right=True, hide=4),
    Column("disk_bar", "DISK%", 10, hide=8),
    Column("rx", "RX", 7, right=True, hide=2),
    Column("tx", "TX", 7, right=True, hide=2),
    Column("net_hist", "NET", SPARK_WIDTH, hide=9),
    Column("uptime", "UP", 7, right=True, hide=3),
    Column("xid", "XID", 5, right=True, hide=3),
    Column("addresses", "ADDRESSES", 0, min_width=18, hide=5),
    Column("flags", "FLAGS", 18, hide=10),
)

STATE_STYLE = {"running": "green", "stopped": "dim", "starting": "yellow", "stopping": "yellow",
               "frozen": "bold cyan"}  # fmt: skip

SORTS = (
    ("name", "name"), ("state", "state"), ("cpu", "CPU%"), ("memory", "memory used"),
    ("nproc", "processes"), ("disk", "disk used"), ("rx", "network in"), ("tx", "network out"),
    ("uptime", "uptime"), ("xid", "context id"),
)  # fmt: skip


def guest_label(g: GuestStatus) -> str:
    return "(host)" if g.name == HOST_NAME else g.name


def unknown(g: GuestStatus, what: str) -> bool:
    return what in g.missing or "observe" in g.missing


def format_guest(
    item: tuple[GuestStatus, tuple[float, ...], tuple[float, ...]], _p: str
) -> list[Cell]:
    """One guest row; '?' where the engine could not measure (never a guess)."""
    g, cpu_hist, net_hist = item
    label = "FROZEN" if g.state == "frozen" else g.state  # stands out even without colour
    state = Text(label, style=STATE_STYLE.get(g.state, "yellow"))
    live = g.state == "running" and not unknown(g, "cpu")
    return [
        guest_label(g),
        state,
        fmt.percent(g.cpu_percent) if live else ("?" if unknown(g, "cpu") else "-"),
        Text(fmt.sparkline(cpu_hist, SPARK_WIDTH, top=100.0), style="cyan") if live else "",
        "?" if unknown(g, "memory") else fmt.used_of(g.memory.used, g.memory.limit),
        _bar(g.memory.ratio),
        "?" if unknown(g, "pids") else _count(g.nproc, g.pids.limit),
        "?" if unknown(g, "disk") else fmt.used_of(g.disk.used, g.disk.limit),
        _bar(g.disk.ratio),
        fmt.rate(g.net.rx_rate) if g.net else ("?" if unknown(g, "net") else "-"),
        fmt.rate(g.net.tx_rate) if g.net else ("?" if unknown(g, "net") else "-"),
        Text(fmt.sparkline(net_hist, SPARK_WIDTH), style="magenta") if g.net else "",
        fmt.duration(g.uptime),
        str(g.xid) if g.xid >= 0 else "-",
        " ".join(g.addresses) or "-",
        _flags(g),
    ]


def _count(n: int, limit: int | None) -> str:
    return f"{n}/{limit}" if limit else str(n)


def _bar(ratio: float | None) -> Text | str:
    if ratio is None:
        return ""
    style = "red" if ratio > 0.9 else "yellow" if ratio > 0.7 else "green"
    return Text(fmt.gauge(ratio, 10), style=style)


def _flags(g: GuestStatus) -> str:
    words = list(g.flags)
    if g.missing:
        words.append("no " + ",".join(g.missing))
    return " ".join(words)


_SORT_VALUES = {
    "name": lambda g: g.name, "state": lambda g: g.state, "cpu": lambda g: g.cpu_percent,
    "memory": lambda g: g.memory.used or 0, "nproc": lambda g: g.nproc,
    "disk": lambda g: g.disk.used or 0, "rx": lambda g: g.net.rx_rate if g.net else 0.0,
    "tx": lambda g: g.net.tx_rate if g.net else 0.0, "uptime": lambda g: g.uptime or 0.0,
    "xid": lambda g: g.xid,
}  # fmt: skip


def sort_value(g: GuestStatus, key: str) -> object:
    return _SORT_VALUES.get(key, _SORT_VALUES["name"])(g)


class GuestsScreen(TableScreen):
    """Every configured guest: state, load, limits; enter opens one."""

    SCOPE = GUESTS
    TITLE_TEXT = "Guests"
    BINDINGS: ClassVar = bindings(GUESTS)
    SORTS = SORTS

    def compose(self) -> ComposeResult:
        yield from self.compose_table()
        yield LineTable(self.columns(), self.formatter(), id="guests")
        yield from self.footer()

    def columns(self) -> tuple[Column, ...]:
        return COLUMNS

    def formatter(self):  # type: ignore[no-untyped-def]
        return format_guest

    def on_mount(self) -> None:
        self.restore_view("name", False)
        self.table.focus()
        if self.vapp.snapshot is not None:
            self.show_snapshot(self.vapp.snapshot)

    def show_snapshot(self, snap: Snapshot) -> None:
        if self.paused:
            return
        super().show_snapshot(snap)
        self._snap = snap
        self.set_notice("; ".join(snap.errors))
        self.redraw()

    _snap: Snapshot | None = None

    def redraw(self) -> None:
        if self._snap is None:
            return
        guests = self._visible(self._snap.guests)
        self.table.set_data([g.name for g in guests], _Rows(guests, self.vapp.history))

    def _visible(self, guests: Sequence[GuestStatus]) -> list[GuestStatus]:
        match = matcher(self.filter_text)
        host = [g for g in guests if g.name == HOST_NAME]
        rest = [g for g in guests if g.name != HOST_NAME and match(search_text(g))]
        key = self.table.sort_key or "name"
        rest.sort(key=lambda g: (sort_value(g, key), g.name), reverse=self.table.sort_reverse)
        return host + rest  # the host row stays on top for context

    def current_guest(self) -> str | None:
        return self.table.cursor_key or None

    def action_open(self) -> None:
        name = self.table.cursor_key
        if name == HOST_NAME:
            self.vapp.open_processes(guest=HOST_NAME)
        elif name is not None:
            self.vapp.open_detail(name)

    def action_log(self) -> None:
        if name := self._guest_or_say():
            self.vapp.open_detail(name, log=True)

    def action_build(self) -> None:
        self.vapp.op_build()

    def action_delete(self) -> None:
        if name := self._guest_or_say():
            self.vapp.op_delete(name)


class _Rows(Mapping[str, tuple]):
    """A guest's row item (status and sparkline histories), made only when the table
    draws that row: a thousand guests cost their sort, not a thousand sparklines."""

    def __init__(self, guests: Sequence[GuestStatus], history: History) -> None:
        self.guests = {g.name: g for g in guests}
        self.history = history

    def __getitem__(self, name: str) -> tuple:
        series = self.history.of(name)
        cpu = tuple(series.cpu)[-SPARK_WIDTH:]
        net = [a + b for a, b in zip(series.rx, series.tx, strict=False)][-SPARK_WIDTH:]
        return self.guests[name], cpu, tuple(net)

    def __iter__(self) -> Iterator[str]:
        return iter(self.guests)

    def __len__(self) -> int:
        return len(self.guests)


def search_text(g: GuestStatus) -> str:
    return f"{g.name} {g.state} {' '.join(g.addresses)} {' '.join(g.flags)}"
