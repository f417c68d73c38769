"""A small terminal for the paint tests: the cursor moves and erases a
partial update uses, applied to a grid of (character, SGR) cells.

It follows xterm where terminals differ: writing the last column leaves the
cursor there with a wrap pending; any move clears it, a printed character
first wraps. Erases (EL, ECH) give cells the current background only
(xterm's bce); the update code must not rely on anything else.
"""

from __future__ import annotations

import re

CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z@])")
Pen = tuple[frozenset[int], str, str]  # attributes, foreground, background
PLAIN: Pen = (frozenset(), "", "")
OFF = {22: {1, 2}, 23: {3}, 24: {4, 21}, 25: {5, 6}, 27: {7}, 28: {8}, 29: {9}, 54: {51, 52},
       55: {53}}  # fmt: skip


class Screen:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.cells: list[list[tuple[str, Pen]]] = [[(" ", PLAIN)] * width for _ in range(height)]
        self.y = self.x = 0
        self.wrap = False
        self.attrs: frozenset[int] = frozenset()
        self.fg = self.bg = ""

    def feed(self, data: str) -> None:
        pos = 0
        while pos < len(data):
            m = CSI.match(data, pos)
            if m:
                self._csi(m.group(1), m.group(2))
                pos = m.end()
                continue
            if data[pos] == "\b":  # backspace: one column left (never past the first)
                self.wrap = False
                self.x = max(self.x - 1, 0)
                pos += 1
                continue
            assert data[pos] >= " ", f"control character {data[pos]!r} at {pos}"
            self._put(data[pos])
            pos += 1

    def _put(self, ch: str) -> None:
        if self.wrap:
            self.wrap = False
            self.x = 0
            self.y = min(self.y + 1, self.height - 1)
        self.cells[self.y][self.x] = (ch, (self.attrs, self.fg, self.bg))
        if self.x == self.width - 1:
            self.wrap = True
        else:
            self.x += 1

    def _csi(self, params: str, code: str) -> None:
        args = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = (args[0] or 1) if args else 1
        self.wrap = False
        if code == "H":
            y = args[0] if args else 1
            x = args[1] if len(args) > 1 else 1
            self.y, self.x = max(y, 1) - 1, max(x, 1) - 1
        elif code == "G":
            self.x = n - 1
        elif code == "d":
            self.y = n - 1
        elif code == "A":
            self.y = max(self.y - n, 0)
        elif code == "B":
            self.y = min(self.y + n, self.height - 1)
        elif code == "C":
            self.x = min(self.x + n, self.width - 1)
        elif code == "D":
            self.x = max(self.x - n, 0)
        elif code == "K":
            assert not args or args[0] == 0, "only EL 0 (to the end of the line)"
            row = self.cells[self.y]
            row[self.x :] = [(" ", (frozenset(), "", self.bg))] * (self.width - self.x)
        elif code == "X":
            row = self.cells[self.y]
            for x in range(self.x, min(self.x + n, self.width)):
                row[x] = (" ", (frozenset(), "", self.bg))
        elif code == "m":
            self._set(args or [0])
        else:
            raise AssertionError(f"unexpected sequence CSI {params}{code}")

    def _set(self, args: list[int]) -> None:
        i = 0
        while i < len(args):
            a = args[i]
            if a == 0:
                self.attrs, self.fg, self.bg = frozenset(), "", ""
            elif a in (38, 48):
                size = 3 if args[i + 1] == 5 else 5
                colour = ";".join(map(str, args[i + 1 : i + size]))
                if a == 38:
                    self.fg = colour
                else:
                    self.bg = colour
                i += size - 1
            elif a == 39:
                self.fg = ""
            elif a == 49:
                self.bg = ""
            elif 30 <= a <= 37 or 90 <= a <= 97:
                self.fg = str(a)
            elif 40 <= a <= 47 or 100 <= a <= 107:
                self.bg = str(a)
            elif a in OFF:
                self.attrs = self.attrs - OFF[a]
            else:
                self.attrs = self.attrs | {a}
            i += 1

    def look(self) -> list[list[tuple[str, Pen]]]:
        """The cells as they look: a blank shows its background (and only the
        attributes a blank shows), not its foreground, bold and the like."""
        return [[_look(ch, pen) for ch, pen in row] for row in self.cells]

    def text(self, y: int) -> str:
        return "".join(ch for ch, _ in self.cells[y])


BLANK_SHOWS = frozenset({4, 5, 6, 7, 9, 21, 51, 52, 53})  # underline, blink, reverse, strike...


def _look(ch: str, pen: Pen) -> tuple[str, Pen]:
    if ch != " " or pen[0] & BLANK_SHOWS:
        return ch, pen
    return ch, (frozenset(), "", pen[2])
