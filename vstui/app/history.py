"""Short per-guest histories for sparklines, fed by each snapshot."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from engine.datamodel import Snapshot

DEPTH = 60


def _ring() -> deque[float]:
    return deque(maxlen=DEPTH)


@dataclass(slots=True)
class Series:
    cpu: deque[float] = field(default_factory=_ring)
    memory: deque[float] = field(default_factory=_ring)
    rx: deque[float] = field(default_factory=_ring)
    tx: deque[float] = field(default_factory=_ring)


class History:
    """The last ``DEPTH`` samples of CPU, memory and network per guest."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}

    def add(self, snap: Snapshot) -> None:
        seen = set()
        series = self.series
        for g in snap.guests:
            seen.add(g.name)
            s = series.get(g.name)
            if s is None:  # not setdefault: that builds four deques per guest per poll
                s = series[g.name] = Series()
            s.cpu.append(g.cpu_percent)
            s.memory.append(float(g.memory.used or 0))
            s.rx.append(g.net.rx_rate if g.net else 0.0)
            s.tx.append(g.net.tx_rate if g.net else 0.0)
        for gone in self.series.keys() - seen:
            del self.series[gone]

    def of(self, name: str) -> Series:
        return self.series.get(name) or Series()
