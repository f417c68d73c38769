"""Lines of rich Text that repaint only the cells that changed.

A ``Static.update`` asks for a layout of the whole screen and repaints the
widget entirely, every second, for a header whose only change is one digit.
``TextLines`` draws its lines itself (Textual's line API): ``show`` compares
the new lines with the drawn ones (``paint.PaintedLines``) and refreshes the
changed runs of cells; a layout happens only when the number of lines does.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from vstui.app.widgets.paint import PaintedLines, lean, printable


class TextLines(Widget):
    """A block of Text lines (height: auto) updated in place."""

    DEFAULT_CSS = "TextLines { height: auto; }"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.lines: list[Text] = []
        self._painted = PaintedLines(self)
        self._strips: list[Strip | None] = []
        self._width = -1

    def show(self, lines: Sequence[Text | str]) -> None:
        """Show ``lines``; repaint what differs from what is on screen."""
        new = [_printable(Text(line) if isinstance(line, str) else line) for line in lines]
        old, built = self.lines, self._strips
        if len(new) != len(old):
            self.lines, self._strips = new, []
            self.refresh(layout=True)
            return
        # each line compared once (a Text comparison joins its text and compares
        # its spans' styles in Python: the detail screen's header compared every
        # line twice a second, once for "all the same?" and once per line)
        same = [n == o for n, o in zip(new, old, strict=True)]
        if all(same):
            return
        self.lines = new
        self._strips = []
        if built and self._width == self.size.width:
            # lines that read the same keep their strip: the detail screen's
            # header built all its lines again each second for a sparkline
            self._strips = [b if kept else None for kept, b in zip(same, built, strict=True)]
        for y, strip in enumerate(self._all_strips()):
            self._painted.sync(y, strip)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(len(self.lines), 1)

    def _all_strips(self) -> list[Strip]:
        """A strip per line, built for those that have none (None: changed)."""
        width = self.size.width
        if width != self._width or not self._strips:
            self._width = width
            self._strips = [None] * len(self.lines)
        strips = self._strips
        if None in strips:
            base, console = self.rich_style, self.app.console
            for y, line in enumerate(self.lines):
                if strips[y] is None:
                    strips[y] = _strip(line, width, base, console)
        return strips  # type: ignore[return-value]

    def on_resize(self) -> None:
        self._strips = []
        self._painted.forget()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = []

    def render_line(self, y: int) -> Strip:
        strips = self._all_strips()
        if y < len(strips):
            return self._painted.drawn(y, strips[y])
        return Strip.blank(self.size.width, self.rich_style)


def _printable(text: Text) -> Text:
    if text.plain.isprintable():
        return text
    text = text.copy()
    text.plain = printable(text.plain)  # same length: the spans stay put
    return text


def _strip(text: Text, width: int, base: Style, console) -> Strip:
    segments = [
        Segment(seg.text, base + seg.style if seg.style else base)
        for seg in text.render(console, end="")
        if seg.text
    ]
    return lean(segments).crop_extend(0, width, base)
