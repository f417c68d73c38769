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

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


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


class Handover(Generic[T]):
    """Hands the newest value from another thread to a callback on an asyncio loop.

    A Textual message did it with more work than showing an idle poll took: a
    Message made and posted (56 us of the poll thread), queued, then taken by
    the app's message task, dispatched by name through the class hierarchy,
    and an Idle event after it. Here the loop runs ``show`` itself. The
    newest value wins: when the UI thread is busy (a long key), values that
    came meanwhile are not shown one after the other, only the last (as
    ``can_replace`` did). ``context``: the UI thread's (Textual finds its
    app there); a new thread starts with an empty one. ``failed``: what
    ``show`` raised (the app ends with it, as after a failed message handler).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, show: Callable[[T], None],
        context: contextvars.Context, failed: Callable[[Exception], None],
    ) -> None:  # fmt: skip
        self.loop = loop
        self.show = show
        self.context = context
        self.failed = failed
        self._lock = threading.Lock()
        self._waiting: list[T] = []  # at most one: the newest

    def put(self, value: T) -> None:
        """From any thread: ``value`` is shown next, unless a newer one comes first."""
        with self._lock:
            scheduled = bool(self._waiting)
            self._waiting = [value]
        if not scheduled:
            try:
                self.loop.call_soon_threadsafe(self._deliver, context=self.context)
            except RuntimeError:  # the loop is closed: the app has ended
                pass

    def _deliver(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if waiting:
            try:
                self.show(waiting[0])
            except Exception as exc:  # not the loop's handler: it logs and goes on
                self.failed(exc)
