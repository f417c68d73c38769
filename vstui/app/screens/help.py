"""Help (``?``): every key of the screen it was opened from."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

from vstui.app.actions import ActionSpec, allowed, specs
from vstui.app.widgets.lists import KeyScroll

NAV = (
    ("↑ ↓ k j", "move (k is never kill: that is F9 or ctrl+k)"),
    ("PgUp PgDn Home End", "page, first, last"),
    ("← →", "scroll sideways"),
    ("esc", "back / clear the filter"),
    (": ctrl+p", "command palette: guests, screens, actions"),
)


def keys_table(scope: str, read_only: bool, keymap: dict[str, str]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, expand=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for spec in specs(scope):
        if not allowed(spec.id, read_only):
            continue
        table.add_row(_keys(spec, keymap), spec.description + (" (!)" if spec.dangerous else ""))
    for keys, what in NAV:
        table.add_row(keys, what)
    if read_only:
        table.add_row("🔒", "read-only: actions that change the host are off")
    return table


def _keys(spec: ActionSpec, keymap: dict[str, str]) -> str:
    raw = keymap.get(spec.binding_id, spec.keys)
    names = {"question_mark": "?", "colon": ":", "slash": "/", "greater_than_sign": ">",
             "plus": "+", "minus": "-", "space": "space"}  # fmt: skip
    return " ".join(names.get(k, k) for k in raw.split(","))


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > KeyScroll { width: 76; max-width: 100%; height: auto; max-height: 100%;
                                  border: thick $primary; background: $surface; padding: 0 1; }
    HelpScreen:ansi > KeyScroll { border: solid ansi_blue; background: ansi_default; }
    """
    BINDINGS: ClassVar = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, scope: str, title: str, read_only: bool, keymap: dict[str, str]) -> None:
        super().__init__()
        self.scope, self.title_text, self.read_only, self.keymap = scope, title, read_only, keymap

    def compose(self) -> ComposeResult:
        with KeyScroll():
            yield Static(f"[b]Keys: {self.title_text}[/b]  (esc closes)")
            yield Static(keys_table(self.scope, self.read_only, self.keymap))
