"""Lists with vi keys (``j``/``k`` move everywhere) and checkboxes that read
without colour (``[x]`` / ``[ ]``).

Textual's SelectionList and Checkbox draw every box as the same block and
tell selected from not by colour alone: on the ansi theme, a monochrome
terminal or in a copy-paste a denied capability looked granted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Checkbox, Label, Log, OptionList, SelectionList
from textual.widgets.option_list import Option, OptionDoesNotExist

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


class SortPicker(Vertical):
    """The sort picker, drawn over the table on the table's own screen.

    A modal screen cost a screen switch each way (the whole screen below
    repainted, the key footer rebuilt): 300-700 ms per pick at 10,000
    processes. Shown, it holds the focus; Enter or Escape hides it and
    posts ``Closed`` with the key picked (None for Escape).
    """

    DEFAULT_CSS = """
    SortPicker { layer: picker; display: none; width: 30; height: auto; margin: 2 0 0 2;
                 padding: 0 1; border: thick $primary; background: $surface; }
    SortPicker:ansi { border: solid ansi_blue; background: ansi_default; }
    SortPicker.-shown { display: block; }
    SortPicker Label { text-style: bold; }
    SortPicker OptionList, SortPicker OptionList:focus { height: auto; max-height: 16;
                                                        border: none; padding: 0; }
    """
    BINDINGS: ClassVar = [Binding("escape", "close", "Cancel", show=False)]

    class Closed(Message):
        def __init__(self, key: str | None) -> None:
            super().__init__()
            self.key = key

    def __init__(self, options: Sequence[tuple[str, str]], **kw: Any) -> None:
        super().__init__(**kw)
        self.options = list(options)  # (id, label)

    def compose(self) -> ComposeResult:
        yield Label("Sort by", markup=False)
        yield KeyList(*[Option(label, id=oid) for oid, label in self.options])

    _return_to: Widget | None = None

    def open(self, current: str) -> None:
        ids = [oid for oid, _ in self.options]
        keys = self.query_one(KeyList)
        keys.highlighted = ids.index(current) if current in ids else 0
        self._return_to = self.screen.focused
        self.add_class("-shown")
        keys.focus()

    def close(self, key: str | None) -> None:
        """Hide, give the focus back at once (not after the pick is shown: the
        list's blur then cost a screen update of its own, a frame later), and
        say what was picked."""
        self.remove_class("-shown")
        back, self._return_to = self._return_to, None
        if back is not None and back.is_attached and back.screen is self.screen:
            self.screen.set_focus(back)
        self.post_message(self.Closed(key))

    def action_close(self) -> None:
        self.close(None)

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.close(event.option.id)

    @on(events.DescendantBlur)
    def _left(self) -> None:
        """Focus went elsewhere (a click, another screen): the picker goes."""
        self.remove_class("-shown")
