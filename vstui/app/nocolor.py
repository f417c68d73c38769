"""NO_COLOR (https://no-color.org): no colour codes on the wire at all.

Textual honours NO_COLOR by turning every colour into a grey (its
Monochrome filter), which still sends 256-colour codes, or into the
terminal's default colours, which still sends SGR 39/49. ``StripColor``
drops colours from every segment and keeps the attributes (bold, reverse,
underline), and the console's CSS draws with those under ``:nocolor``
what it otherwise tells by colour (the cursor row, focus, a highlighted
option, the footer note).
"""

from __future__ import annotations

from functools import lru_cache

from rich.segment import Segment
from rich.style import Style
from textual.color import Color
from textual.filter import LineFilter, Monochrome, NoColor

NOCOLOR_CSS = """
LineTable:nocolor > .linetable--cursor { text-style: underline; }
LineTable:nocolor:focus > .linetable--cursor { text-style: reverse; }
LineTable:nocolor > .linetable--header { text-style: bold underline; }
TopBar:nocolor { text-style: reverse; }
OptionList:nocolor > .option-list--option-highlighted { text-style: reverse; }
Button:nocolor:focus { text-style: reverse bold; }
Input:nocolor:focus { text-style: bold; }
Input:nocolor > .input--cursor { text-style: reverse; }
"""


@lru_cache(maxsize=1024)
def _bare(style: Style) -> Style:
    return style.without_color


class StripColor(LineFilter):
    """Remove every colour from every segment; keep the attributes."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [
            Segment(text, None if style is None else _bare(style), control)
            for text, style, control in segments
        ]


def strip_colors(filters: list[LineFilter]) -> list[LineFilter]:
    """The app's filters with Textual's grey or default-colour one replaced."""
    return [f for f in filters if not isinstance(f, Monochrome | NoColor)] + [StripColor()]
