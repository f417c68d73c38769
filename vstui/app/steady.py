"""Figures that hold still until they really change.

A process that wakes now and then reads 0.0, 1.0, 0.0 % from one second to
the next (CPU time comes in 10 ms ticks), and a rate of a few packets
wobbles by a third: shown as measured, such noise repaints cells and
reorders a CPU-sorted list every second, which costs bytes over SSH and
moves rows under the administrator's cursor. ``Steadier`` sits between the
snapshot and the screen (in the poll worker) and, per process and per
guest, replaces the measured value by a shown one that:

- jumps at once on a large change (``jump``: a process going busy or idle
  is seen in the next frame),
- otherwise follows a running mean and moves only when that mean has left a
  band around the shown value (``band``), so noise inside it never shows,
- is rounded to what the screen prints, so sorting by it keeps equal
  figures in PID order instead of swapping on invisible decimals.

Nothing is invented: a value that stays away from the shown one gets there
within a few samples (the mean converges), and the raw snapshot stays
untouched for everything but the display.
"""

from __future__ import annotations

import operator
from collections.abc import Hashable
from dataclasses import dataclass

from engine.datamodel import (
    GuestStatus,
    NetStats,
    ProcRow,
    Snapshot,
    with_cpu_percent,
    with_rates,
    with_rows,
    with_shown,
)


@dataclass(frozen=True, slots=True)
class Rule:
    """How one kind of figure settles: absolute and relative band and jump."""

    band: float  # a mean this far from the shown value moves it
    band_rel: float  # ... or this fraction of the shown value
    jump: float  # a new value this far from the shown one is shown at once
    jump_rel: float
    digits: int  # rounded like the screen prints it

    def limits(self, shown: float) -> tuple[float, float]:
        size = abs(shown)
        return max(self.band, self.band_rel * size), max(self.jump, self.jump_rel * size)


CPU = Rule(band=1.0, band_rel=0.1, jump=5.0, jump_rel=0.3, digits=1)
RATE = Rule(band=16.0, band_rel=0.15, jump=512.0, jump_rel=0.5, digits=0)  # bytes/s


def settle(state: tuple[float, float] | None, value: float, rule: Rule) -> tuple[float, float]:
    """(shown, mean) after ``value`` was measured; ``state`` is the previous pair."""
    if state is None:
        value = round(value, rule.digits)
        return value, value
    shown, mean = state
    mean = (mean + value) / 2
    band, jump = rule.limits(shown)
    if abs(value - shown) >= jump:
        value = round(value, rule.digits)
        return value, value
    candidate = round(mean, rule.digits)
    if abs(candidate - shown) >= band:
        return candidate, mean
    return shown, mean


class Steadier:
    """Keeps the shown figures of every process and guest between snapshots."""

    def __init__(self) -> None:
        self._cpu: dict[Hashable, tuple[float, float]] = {}
        self._guest_cpu: dict[str, tuple[float, float]] = {}
        self._rates: dict[tuple[str, str], tuple[float, float]] = {}

    def apply(self, snap: Snapshot) -> Snapshot:
        """``snap`` with its jittery figures replaced by their shown values."""
        procs = self._procs(snap.procs)
        guests = tuple(self._guest(g) for g in snap.guests)
        names = {g.name for g in guests}
        self._guest_cpu = {k: v for k, v in self._guest_cpu.items() if k in names}
        self._rates = {k: v for k, v in self._rates.items() if k[0] in names}
        # the same objects: GuestStatus equality compares every field, gauges and all
        if procs is snap.procs and all(map(operator.is_, guests, snap.guests)):
            return snap
        return with_rows(snap, procs, guests)

    def _procs(self, rows: tuple[ProcRow, ...]) -> tuple[ProcRow, ...]:
        old, new = self._cpu, {}
        out: list[ProcRow] | None = None
        get = old.get
        for i, p in enumerate(rows):
            key = (p.pid, p.starttime)  # p.key, without a property call per process
            value = p.cpu_percent
            state = get(key)
            # an idle process (shown == mean == measured, most of a host) stays as it
            # is: settle would return the same pair; skipping it halves this loop
            if state is None or state[0] != value or state[1] != value:
                state = settle(state, value, CPU)
            new[key] = state
            if state[0] != value:
                if out is None:
                    out = list(rows)
                out[i] = with_cpu_percent(p, state[0])
        self._cpu = new
        return rows if out is None else tuple(out)

    def _guest(self, g: GuestStatus) -> GuestStatus:
        cpu = settle(self._guest_cpu.get(g.name), g.cpu_percent, CPU)
        self._guest_cpu[g.name] = cpu
        net = g.net if g.net is None else self._net(g.name, g.net)
        if cpu[0] == g.cpu_percent and net is g.net:
            return g
        return with_shown(g, cpu[0], net)

    def _net(self, name: str, net: NetStats) -> NetStats:
        rx = settle(self._rates.get((name, "rx")), net.rx_rate, RATE)
        tx = settle(self._rates.get((name, "tx")), net.tx_rate, RATE)
        self._rates[(name, "rx")], self._rates[(name, "tx")] = rx, tx
        if (rx[0], tx[0]) == (net.rx_rate, net.tx_rate):
            return net
        return with_rates(net, rx[0], tx[0])
