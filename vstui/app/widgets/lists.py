"""Lists with vi keys (``j``/``k`` move everywhere) and checkboxes that read
without colour (``[x]`` / ``[ ]``).

Textual's SelectionList and Checkbox draw every box as the same block and
tell selected from not by colour alone: on the ansi theme, a monochrome
terminal or in a copy-paste a denied capability looked granted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.strip import Strip
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


class PickList(KeyList, can_focus=False):
    """The sort picker's list: drawn as focused, never given the focus."""


class SortPicker(Vertical):
    """The sort picker, drawn over the table on the table's own screen.

    A modal screen cost a screen switch each way (the whole screen below
    repainted, the key footer rebuilt): 300-700 ms per pick at 10,000
    processes. Shown, it leaves the focus where it was (on the table): its
    screen hands it the keys first (``take_key``). Moving the focus to the
    list and back cost two restyles of the table and the list, a repaint of
    the whole screen (``Screen.focused`` repaints it) and a frame of its own
    for the key footer, on every pick. Shown and hidden by its ``display``
    alone (an inline style: no stylesheet pass over it and its children).

    Enter or Escape hides it and calls ``on_pick`` with the key picked (None
    for Escape) at once, not through a message: the table is sorted before
    the frame that hides the picker is drawn, so both go out in one frame
    (a message handled after the picker's layout request cost a frame of its
    own ~20 ms later).
    """

    DEFAULT_CSS = """
    SortPicker { layer: picker; display: none; width: 30; height: auto; margin: 2 0 0 2;
                 padding: 0 1; border: thick $primary; background: $surface; }
    SortPicker:ansi { border: solid ansi_blue; background: ansi_default; }
    SortPicker Label { text-style: bold; }
    SortPicker PickList { height: auto; max-height: 16; border: none; padding: 0;
                          background-tint: $foreground 5%; }
    SortPicker PickList > .option-list--option-highlighted {
        color: $block-cursor-foreground; background: $block-cursor-background;
        text-style: $block-cursor-text-style; }
    """
    # What the list does with a key while the picker is shown (its bindings,
    # which only a focused widget's keys would reach).
    MOVES: ClassVar[dict[str, str]] = {
        "up": "cursor_up", "k": "cursor_up", "down": "cursor_down", "j": "cursor_down",
        "home": "first", "end": "last", "pageup": "page_up", "pagedown": "page_down",
    }  # fmt: skip

    def __init__(
        self, options: Sequence[tuple[str, str]], on_pick: Callable[[str | None], None],
        **kw: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kw)
        self.options = list(options)  # (id, label)
        self.on_pick = on_pick

    def compose(self) -> ComposeResult:
        yield Label("Sort by", markup=False)
        yield PickList(*[Option(label, id=oid) for oid, label in self.options])

    @property
    def shown(self) -> bool:
        return self.styles.display != "none"

    def open(self, current: str) -> None:
        ids = [oid for oid, _ in self.options]
        self.query_one(PickList).highlighted = ids.index(current) if current in ids else 0
        self.display = True

    def close(self, key: str | None) -> None:
        """Hide and say what was picked."""
        if self.shown:
            self.display = False
            self.on_pick(key)

    def hide(self) -> None:
        """Hide, picking nothing and saying nothing (the user went elsewhere)."""
        self.display = False

    def take_key(self, key: str) -> bool:
        """A key pressed while the picker is shown: True if it was the picker's."""
        keys = self.query_one(PickList)
        if key == "escape":
            self.close(None)
        elif key == "enter":
            at = keys.highlighted
            self.close(keys.get_option_at_index(at).id if at is not None else None)
        elif key in self.MOVES:
            getattr(keys, f"action_{self.MOVES[key]}")()
        else:
            return False
        return True

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        """A click on an option."""
        event.stop()
        self.close(event.option.id)
