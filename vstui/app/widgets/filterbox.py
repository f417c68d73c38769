"""The ``/`` filter line: an Input whose typing repaints only itself.

Textual's Input sets its virtual width to the text's width on every
character, and that reactive asks for a layout of the whole screen (~10 ms
at 160x48 over 10,000 processes, the largest part of a filter key). The box
has a fixed size in CSS, so nothing around it can move when its text grows:
a repaint of the box is enough. Everything else (display toggles, focus,
CSS changes) still lays out as usual.

``on_change`` is called with the new text inside the value watcher, before
the key's frame is drawn, so the box and the table it filters change on the
same frame (the ``Changed`` message arrives a frame later).
"""

from __future__ import annotations

from collections.abc import Callable

from textual.widgets import Input


class FilterBox(Input):
    """An Input of fixed size whose value changes never relayout the screen."""

    DEFAULT_CSS = """
    FilterBox { width: 1fr; height: 3; }
    """

    on_change: Callable[[str], None] | None = None
    _typing = False  # inside the value watcher: a layout request there is Input's own

    def __init__(
        self, *, placeholder: str = "", on_change: Callable[[str], None] | None = None,
        id: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(placeholder=placeholder, id=id)
        self.on_change = on_change

    def _watch_value(self, value: str) -> None:
        self._typing = True
        try:
            super()._watch_value(value)
        finally:
            self._typing = False
        if self.on_change is not None:
            self.on_change(value)

    def refresh(self, *regions, repaint: bool = True, layout: bool = False,
                recompose: bool = False) -> FilterBox:  # fmt: skip
        if self._typing and not self.styles.auto_dimensions:
            layout = False  # our box is as big as before: repaint it, leave the screen alone
        super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)
        return self
