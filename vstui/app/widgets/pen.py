"""Where the terminal's cursor is during one update, and the shortest way
to move it, as ncurses does (its mvcur).

A partial update writes a few cells here and there: a changed CPU% and,
further along the same line, a changed RSS; the next row's CPU%. Before
each run Textual's way is an absolute move (``ESC[row;colH``, 6-8 bytes),
often longer than the figure itself. After a run the cursor is just past
it, so the next run on the same line is reached by moving right
(``ESC[16C``) or to a column (``ESC[25G``), one below by moving down
(``ESC[B``), and so on: ``Pen.to`` picks the shortest of these.

Only sequences every terminal Textual supports knows (ECMA-48 CUP, CHA,
VPA, CUU/CUD/CUF/CUB, and BS) are used; never CR or LF, which the tty's
output settings may translate (Textual leaves ONLCR as it was: LF is CR
LF). A run that ends at the right margin leaves the cursor in the
"pending wrap" state, whose next move terminals do not agree on: the
position is then unknown and the next move absolute.
"""

from __future__ import annotations


def absolute(y: int, x: int) -> str:
    """CUP to row ``y``, column ``x`` (from 0)."""
    if x == 0:
        return "\x1b[H" if y == 0 else f"\x1b[{y + 1}H"
    return f"\x1b[{y + 1};{x + 1}H"


def _move(frm: int, to: int, forward: str, back: str, absolute: str) -> str:
    """The shorter of a relative step and an absolute move along one axis."""
    if frm == to:
        return ""
    n, code = (to - frm, forward) if to > frm else (frm - to, back)
    step = f"\x1b[{code}" if n == 1 else f"\x1b[{n}{code}"
    jump = f"\x1b[{to + 1}{absolute}"
    return step if len(step) <= len(jump) else jump


def horizontal(frm: int, to: int) -> str:
    """Move along the line from column ``frm`` to ``to``: CUF, CUB or CHA,
    or a backspace or three (one byte each, where CUB takes three or four)."""
    if to < frm <= to + 3:
        return "\b" * (frm - to)
    return _move(frm, to, "C", "D", "G")


def vertical(frm: int, to: int) -> str:
    """Move from row ``frm`` to ``to``, keeping the column: CUD, CUU or VPA."""
    return _move(frm, to, "B", "A", "d")


class Pen:
    """The cursor's position during one update (None: not known)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: tuple[int, int] | None = None

    def to(self, y: int, x: int) -> str:
        """The shortest sequence that puts the cursor at row ``y``, column ``x``."""
        at, self.at = self.at, (y, x)
        cup = absolute(y, x)
        if at is None:
            return cup
        if at == (y, x):
            return ""
        relative = vertical(at[0], y) + horizontal(at[1], x)
        return relative if len(relative) < len(cup) else cup

    def wrote(self, cells: int, width: int) -> None:
        """``cells`` cells were written from the cursor on a line ``width`` wide."""
        if self.at is None:
            return
        y, x = self.at
        x += cells
        self.at = (y, x) if x < width else None  # at the margin: pending wrap
