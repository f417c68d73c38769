"""The terminal driver: Esc answers in ESCDELAY, an idle console sleeps.

A lone Esc and the start of a key's escape sequence ("\\x1b[A") look alike,
so the parser waits ESCDELAY (vstui sets 25 ms) for more bytes. Textual's
Linux driver only notices that the wait is over when its input loop wakes,
which it does every 100 ms: Esc (back) took 125-160 ms whatever ESCDELAY
said, and the idle console woke ten times a second for nothing.

``QuickEscDriver`` runs its own input loop: it sleeps until a byte arrives,
the pending escape's deadline passes, or the driver stops (a self-pipe wakes
it, so quitting does not wait either).
"""

from __future__ import annotations

import os
import select
from codecs import getincrementaldecoder
from typing import Any

from textual._time import get_time
from textual._xterm_parser import XTermParser
from textual.drivers.linux_driver import LinuxDriver

from vstui.app.widgets.sgr import Kept

IDLE_WAIT = 5.0  # seconds between wakes with nothing to do (a safety net only)


class QuickEscDriver(LinuxDriver):
    """LinuxDriver whose input thread waits exactly as long as it must.

    It also sees every write, so partial updates can leave the terminal's
    SGR state set for the next one (``sgr.Kept``): anything else written is
    preceded by a reset when needed.
    """

    _wake_fd = -1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sgr_kept = Kept()

    def write(self, data: str) -> None:
        super().write(self.sgr_kept.wrote(data))

    def run_input_thread(self) -> None:
        parser = XTermParser(self._debug)
        decode = getincrementaldecoder("utf-8")().decode
        wake_r, self._wake_fd = os.pipe()
        try:
            while not self.exit_event.is_set():
                ready, _, _ = select.select([self.fileno, wake_r], [], [], _wait(parser))
                if self.fileno in ready:
                    data = decode(os.read(self.fileno, 4096))
                    for event in parser.feed(data):
                        self.process_message(event)
                for event in parser.tick():  # the escape's deadline passed: a lone Esc
                    self.process_message(event)
        finally:
            os.close(wake_r)
            os.close(self._wake_fd)
            self._wake_fd = -1

    def disable_input(self) -> None:
        # Wake the input thread so it sees the exit at once; the pipe stays
        # readable (never drained) until the thread ends.
        if self._wake_fd >= 0:
            try:
                os.write(self._wake_fd, b"x")
            except OSError:
                pass
        super().disable_input()


def _wait(parser: XTermParser) -> float:
    """Seconds until the parser's pending escape times out, else IDLE_WAIT."""
    due = parser._timeout_time  # Textual 8.2.8 (pinned): set while a sequence is open
    if due is None:
        return IDLE_WAIT
    return max(0.0, due - get_time())
