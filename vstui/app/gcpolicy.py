"""The console's old objects are collected when the user is not typing.

CPython collects its oldest generation once a quarter of it is new since
the last time. At 10,000 processes every snapshot brings some 20,000 new
objects that live about a second, long enough to be promoted, so that
collection came every 2-3 s, and it walks everything the console holds
(~70,000 objects, the snapshot's 10,000-long lists): 40-60 ms with the UI
thread stopped, whatever key it was answering (one sort-column pick in
three or four, in bench_tui --keys-only).

The young generations are still collected as CPython does (a cycle of
short-lived objects is found within a few thousand allocations). The
oldest is collected here instead: by the poll thread, once the user has
pressed no key and moved no mouse for ``quiet`` seconds, at most every
``every`` seconds, and every ``at_most`` seconds whatever the user does.
Only cyclic garbage waits for it (objects without cycles go when their
last reference does), a few hundred objects a second here.

What exists when the policy starts (the modules, classes and functions of
Textual, rich, psutil and the console: some 40,000 objects) is frozen
(``gc.freeze``): it lives as long as the app, and each full collection
walked it all again for nothing: 40-45 ms of the poll thread every 30 s
on an idle host (0.14% of a core, an eighth of the console's idle CPU). The young
generations never walked it; only the oldest does, and now without it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

NEVER = 1_000_000_000  # gen1 collections before an automatic gen2 one


class GcPolicy:
    """Holds off the collection of the oldest generation while the user types."""

    def __init__(
        self, quiet: float = 1.0, every: float = 30.0, at_most: float = 60.0, first: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] = gc.collect,
        freeze: Callable[[], object] = gc.freeze,
    ) -> None:  # fmt: skip
        self.quiet = quiet
        self.every = every
        self.at_most = at_most
        # the first one (it freezes what survives: see _settle) once the console
        # is up, not ``every`` seconds in: it walks all the app built while
        # starting (14 ms at 160x48 on the detail screen), a cost of the start,
        # which it was not when it came in the middle of the first half-minute
        self.first = first
        self.clock = clock
        self.collect = collect
        self.freeze = freeze
        self.settled = False  # the first full collection froze what survived it
        self.last_input = self.last_full = clock()
        self._saved: tuple[int, int, int] | None = None

    def start(self) -> None:
        """CPython no longer collects the oldest generation on its own, and
        what the app was built from is left out of every collection."""
        if self._saved is None:
            self._saved = gc.get_threshold()
            young, middle, _ = self._saved
            gc.set_threshold(young, middle, NEVER)
            self.freeze()

    def stop(self) -> None:
        """CPython's thresholds back and nothing frozen (the app is closing;
        the test suite runs many apps in one process)."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None

    def input(self) -> None:
        """A key or a mouse event (any thread)."""
        self.last_input = self.clock()

    def tick(self) -> bool:
        """Collect everything if it is time (the poll thread, once a poll)."""
        now = self.clock()
        since = now - self.last_full
        every = self.every if self.settled else self.first
        if since >= self.at_most or (since >= every and now - self.last_input >= self.quiet):
            self.collect()
            self._settle()
            self.last_full = self.clock()
            return True
        return False

    def _settle(self) -> None:
        """After the first full collection (``first`` seconds in), freeze what survived it:
        the screens, widgets and caches the console built while starting,
        which each later collection walked again (22 ms every 30 s on the
        detail screen). Cyclic garbage made later of objects frozen now (a
        screen open now and closed later) is never collected: once per run,
        a few thousand objects at most, for a collection that walks only
        what came since."""
        if not self.settled and self._saved is not None:
            self.settled = True
            self.freeze()
