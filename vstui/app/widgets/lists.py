"""Lists with vi keys (``j``/``k`` move everywhere) and checkboxes that read
without colour (``[x]`` / ``[ ]``).

Textual's SelectionList and Checkbox draw every box as the same block and
tell selected from not by colour alone: on the ansi theme, a monochrome
terminal or in a copy-paste a denied capability looked granted.
"""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, Log, OptionList, SelectionList
from textual.widgets.option_list import OptionDoesNotExist

UP_DOWN: list[Binding] = [
    Binding("k", "cursor_up", "Up", show=False),
    Binding("j", "cursor_down", "Down", show=False),
]
SCROLL: list[Binding] = [
    Binding("k", "scroll_up", "Up", show=False),
    Binding("j", "scroll_down", "Down", show=False),
]


def box(checked: bool) -> str:
    return "[x]" if checked else "[ ]"


class KeyList(OptionList):
    """An OptionList that also moves with j and k."""

    BINDINGS: ClassVar = UP_DOWN


class CheckList(SelectionList):
    """A SelectionList whose boxes read ``[x]`` or ``[ ]``; j/k move."""

    BINDINGS: ClassVar = UP_DOWN

    def render_line(self, y: int) -> Strip:
        line = super().render_line(y)
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return line
        # super() drew a 3-cell block button and a space before the prompt
        rest = line.crop(3)
        first = next(iter(rest), None)
        style = (first.style if first is not None else None) or self.rich_style
        checked = selection.value in self._selected
        mark = style + Style(bold=checked, meta={"option": self.scroll_offset.y + y})
        return Strip.join([Strip([Segment(box(checked), mark)]), rest])


class CheckBox(Checkbox):
    """A Checkbox drawn as ``[x] label`` / ``[ ] label``."""

    @property
    def _button(self) -> Content:
        return Content(box(self.value))


class KeyLog(Log):
    """A Log that scrolls with j and k."""

    BINDINGS: ClassVar = SCROLL


class KeyScroll(VerticalScroll):
    """A VerticalScroll that scrolls with j and k."""

    BINDINGS: ClassVar = SCROLL
