"""The terminal's SGR state across one update, as ncurses keeps it.

Rich and Textual write every segment as ``ESC[attrs;fg;bg m text ESC[0m``:
a full style before each run and a reset after it, 20-30 bytes around a
changed figure of 3. ``SgrState`` remembers what the terminal is set to and
sends only the difference: nothing when the next run has the same style, the
colour that changed (``ESC[38;5;Nm``), or an attribute switched on or off;
a full ``ESC[0;...m`` only when that is shorter. The update ends with one
reset, so whatever Textual writes next starts from the default.
"""

from __future__ import annotations

import re

from rich.color import ColorSystem
from rich.style import Style

# rich.style.Style attribute bits in order: bold, dim, italic, underline,
# blink, blink2, reverse, conceal, strike, underline2, frame, encircle, overline.
ON = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "21", "51", "52", "53")
# What switches each group off: one code turns off both members of a pair
# (22 = neither bold nor dim: a member that stays is switched on again).
OFF = ((0b11, "22"), (0b100, "23"), (0b1000001000, "24"), (0b110000, "25"), (0b1000000, "27"),
       (0b10000000, "28"), (0b100000000, "29"), (0b110000000000, "54"),
       (0b1000000000000, "55"))  # fmt: skip

Parts = tuple[int, str, str]  # attribute bits, foreground codes, background codes
DEFAULT: Parts = (0, "", "")
_parts: dict[tuple[Style, ColorSystem], Parts] = {}


def parts(style: Style | None, system: ColorSystem) -> Parts:
    """A style as (attribute bits, fg codes, bg codes) for ``system``."""
    if style is None:
        return DEFAULT
    found = _parts.get((style, system))
    if found is None:
        fg, bg = style.color, style.bgcolor
        found = (style._attributes & style._set_attributes,
                 ";".join(fg.downgrade(system).get_ansi_codes()) if fg else "",
                 ";".join(bg.downgrade(system).get_ansi_codes(False)) if bg else "")  # fmt: skip
        if len(_parts) > 4096:  # themes come and go; styles are few
            _parts.clear()
        _parts[(style, system)] = found
    return found


def _on(bits: int) -> list[str]:
    return [ON[i] for i in range(bits.bit_length()) if bits >> i & 1]


class SgrState:
    """What the terminal's SGR is set to during one update (None: unknown)."""

    def __init__(self, system: ColorSystem) -> None:
        self.system = system
        self.now: Parts | None = None

    def to(self, style: Style | None) -> str:
        """The sequence that sets ``style`` from the state now ("" if set)."""
        want = parts(style, self.system)
        have, self.now = self.now, want
        if have == want:
            return ""
        full = "\x1b[" + ";".join(["0", *_on(want[0]), *filter(None, want[1:])]) + "m"
        if have is None:
            return full
        return min(full, self._change(have, want), key=len)

    @staticmethod
    def _change(have: Parts, want: Parts) -> str:
        codes = []
        removed, added = have[0] & ~want[0], want[0] & ~have[0]
        for bits, off in OFF:
            if removed & bits:
                codes.append(off)
                added |= want[0] & bits
        codes += _on(added)
        if want[1] != have[1]:
            codes.append(want[1] or "39")
        if want[2] != have[2]:
            codes.append(want[2] or "49")
        return "\x1b[" + ";".join(codes) + "m"

    def reset(self) -> str:
        """The end of the update: back to the default, if not there."""
        have, self.now = self.now, DEFAULT
        return "" if have in (None, DEFAULT) else "\x1b[0m"


RESET = "\x1b[0m"
# Written between two updates without touching the SGR state: the
# synchronized-output brackets Textual puts around each update, and moves
# of the cursor or of lines (paint.scroll_lines: the lines it clears are
# drawn again whole). Not the other modes: leaving the alternate screen at
# exit must come after a reset, or the shell prints in the console's colours.
NEUTRAL = frozenset({"\x1b[?2026h", "\x1b[?2026l"})
MOVES = re.compile(r"(?:\x1b\[[0-9;]*[rHLMABCDGd])+")


class Kept:
    """The SGR state the last partial update left the terminal in, kept
    across updates while nothing else is written in between.

    Each update used to end with a reset, and the next one to start with a
    whole style (``ESC[0;38;5;188;48;5;16m``): 25 bytes a second on a
    screen whose only change is one figure. The driver passes every write
    through ``wrote``: the update's own text leaves the state the update
    ended with; anything else (Textual's full repaints, which write a style
    without a reset before it, the terminal modes at exit) is preceded by a
    reset when the state is not the default, after which it is unknown.
    """

    __slots__ = ("_expected", "now")

    def __init__(self) -> None:
        self.now: Parts | None = None  # None: unknown
        self._expected: tuple[str, Parts | None] | None = None

    def expect(self, text: str, state: Parts | None) -> None:
        """An update is about to be written: ``text``, leaving ``state``."""
        self._expected = (text, state)

    def wrote(self, data: str) -> str:
        """What to write for ``data``: itself, after a reset if it needs one."""
        expected, self._expected = self._expected, None
        if expected is not None and data.startswith(expected[0]):
            self.now = expected[1]
            return data
        if data in NEUTRAL or MOVES.fullmatch(data):
            return data
        now, self.now = self.now, None
        if now is None or now == DEFAULT or data.startswith(RESET):
            return data
        return RESET + data
