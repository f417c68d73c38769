"""Guests of many hosts: a HOST column, and a row per host with its connection.

Each host's row comes first, then its guests (filtered and sorted as on one
host). The host row says how the host is reached: ``up`` with the round
trip, ``stale 12s`` (its connection is lost; the rows below keep the last
data, marked with ``?``, while it is reconnected with backoff), ``down``
(never reached) or ``connecting``; RTT and LOAD fill their columns. A
read-only host carries ``[ro]`` after its name on every row, and its agent
refuses every change, as the console does before sending it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from rich.text import Text

from engine.datamodel import GuestStatus
from engine.remote.fleet import STALE, UP, HostView
from vstui.app import fmt
from vstui.app.fleet import SEP, split
from vstui.app.procview import matcher
from vstui.app.screens import guests as one_host
from vstui.app.widgets.linetable import Cell, Column

COLUMNS = (
    Column("host", "HOST", 12),
    *one_host.COLUMNS[:-2],
    Column("guests", "GUESTS", 6, right=True, hide=3),
    Column("rtt", "RTT", 6, right=True, hide=3),
    Column("load", "LOAD", 5, right=True, hide=3),
    *one_host.COLUMNS[-2:],
)
HOST_STATE_STYLE = {UP: "green", STALE: "yellow", "down": "red", "connecting": "yellow"}


def host_cell(view: HostView | None, host: str) -> Cell:
    text = host
    if view is not None and view.read_only:
        text += " [ro]"
    return Text(text, style="bold") if view is None or view.state == UP else Text(text, "yellow")


def connection(view: HostView | None) -> Text:
    """The host row's STATE: up, stale with the age of its data, down, connecting."""
    if view is None:
        return Text("connecting", style="yellow")
    words = view.state
    if view.state == STALE and view.age is not None:
        words = f"stale {fmt.duration(view.age)}"
    elif view.state == STALE:
        words = "stale"
    return Text(words, style=HOST_STATE_STYLE.get(view.state, "yellow"))


def format_row(item: tuple[GuestStatus, tuple[float, ...], tuple[float, ...], HostView | None],
               prefix: str) -> list[Cell]:  # fmt: skip
    """One row: the HOST cell, the one-host cells, GUESTS, RTT and LOAD for host rows."""
    g, cpu, net, view = item
    host, name = split(g.name)
    # the one-host formatter, on the guest's own name
    cells = one_host.format_guest((dataclasses.replace(g, name=name), cpu, net), prefix)
    count: Cell = ""
    rtt: Cell = ""
    load: Cell = ""
    if not name:
        count = str(view.guests) if view is not None and view.snapshot is not None else "-"
        cells[1] = connection(view)
        rtt = f"{view.rtt * 1000:.0f}ms" if view is not None and view.rtt is not None else "-"
        load = f"{view.load[0]:.2f}" if view is not None and view.load else "-"
    elif view is not None and view.state != UP:
        cells[1] = Text(f"{g.state}?", style="dim")  # the last known state, not a live one
    return [host_cell(view, host), *cells[:-2], count, rtt, load, *cells[-2:]]


class FleetGuestsScreen(one_host.GuestsScreen):
    """The guests screen when the console has several hosts (``vstui --host``)."""

    TITLE_TEXT = "Guests"

    def columns(self) -> tuple[Column, ...]:
        return COLUMNS

    def formatter(self):  # type: ignore[no-untyped-def]
        return format_row

    def redraw(self) -> None:
        if self._snap is None:
            return
        views = self.vapp.engine.source.views
        history = self.vapp.history
        items = {}
        rows = self._visible(self._snap.guests)
        for g in rows:
            series = history.of(g.name)
            net = tuple(a + b for a, b in zip(series.rx, series.tx, strict=False))
            items[g.name] = (g, tuple(series.cpu)[-one_host.SPARK_WIDTH:],
                             net[-one_host.SPARK_WIDTH:], views.get(split(g.name)[0]))  # fmt: skip
        self.table.set_data([g.name for g in rows], items)

    def _visible(self, guests: Sequence[GuestStatus]) -> list[GuestStatus]:
        """Each host's row, then its guests that match the filter, sorted."""
        match = matcher(self.filter_text)
        key = self.table.sort_key or "name"
        by_host: dict[str, list[GuestStatus]] = {}
        head: dict[str, GuestStatus] = {}
        for g in guests:
            host, name = split(g.name)
            if not name:
                head[host] = g
            elif match(one_host.search_text(g)):  # HOST/NAME: `/` finds a host too
                by_host.setdefault(host, []).append(g)
        shown: list[GuestStatus] = []
        for host, row in head.items():
            rest = by_host.get(host, [])
            if not rest and self.filter_text and not match(host + SEP):
                continue  # a filter that matches nothing of this host hides it
            rest.sort(key=lambda g: (one_host.sort_value(g, key), g.name),
                      reverse=self.table.sort_reverse)  # fmt: skip
            shown += [row, *rest]
        return shown

    def current_guest(self) -> str | None:
        key = self.table.cursor_key
        return key if key and split(key)[1] else None

    def action_open(self) -> None:
        key = self.table.cursor_key
        if key is None:
            return
        host, name = split(key)
        if name:
            self.vapp.open_detail(key)
        else:
            self.vapp.open_processes(guest=key)
