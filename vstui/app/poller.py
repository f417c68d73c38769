"""One long-lived thread that takes snapshots for the console.

A Textual thread worker per poll costs a thread hand-off, a Worker object,
three state-change messages and a new timer every second, several times
what an idle screen costs to update. This thread loops instead: take a
snapshot, hand it to the UI (``post_message`` is thread-safe), wait the
interval, again. The next wait starts only when a snapshot is done
(dolphie's habit), so a slow /proc walk stretches the interval instead of
piling up polls. A wake (news from a host of the fleet) polls at once,
but never sooner than ``min_gap`` after the last poll began: ten hosts
each sending a frame a second would otherwise poll ten times a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Poller:
    """Calls ``take`` every ``interval`` seconds in a daemon thread."""

    def __init__(
        self,
        take: Callable[[], None],
        interval: float,
        failed: Callable[[Exception], None],
        min_gap: float = 0.0,
    ) -> None:
        self.take = take
        self.interval = interval
        self.min_gap = min_gap
        self.failed = failed
        self.paused = False  # e.g. while a shell runs on the terminal
        self._wake = threading.Event()
        self._stop = threading.Event()  # ends a pacing wait at once
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="vstui-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Take the next snapshot now instead of at the end of the interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            began = time.monotonic()
            if not self.paused:
                try:
                    self.take()
                except Exception as exc:  # reported to the UI; polling goes on
                    self.failed(exc)
            self._wake.wait(self.interval)
            self._wake.clear()
            gap = began + self.min_gap - time.monotonic()
            if gap > 0:
                self._stop.wait(gap)
