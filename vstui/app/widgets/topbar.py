"""The one-line header: screen, host summary, pause and read-only lock."""

from __future__ import annotations

from rich.text import Text

from engine.datamodel import Snapshot
from vstui.app.widgets.textlines import TextLines


class TopBar(TextLines):
    """``vstui │ Guests │ 3/5 running │ 1,234 procs │ ⏸ PAUSED │ 🔒 READ-ONLY``."""

    DEFAULT_CSS = """
    TopBar { height: 1; background: $panel; color: $foreground; }
    TopBar:ansi { background: ansi_default; text-style: reverse; }
    """

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.paused = False
        self.marks = (0, 0)  # marked processes, of which hidden by the filter
        self._snap: Snapshot | None = None

    def on_mount(self) -> None:
        self._draw()

    def update_from(self, snap: Snapshot | None, paused: bool | None = None) -> None:
        self._snap = snap
        if paused is not None:
            self.paused = paused
        self._draw()

    def set_marks(self, count: int, hidden: int) -> None:
        if (count, hidden) != self.marks:
            self.marks = (count, hidden)
            self._draw()

    def _draw(self) -> None:
        app = self.app
        text = Text()
        text.append(" vstui ", style="bold")
        text.append("│ ")
        text.append(self.title, style="bold")
        snap = self._snap
        if snap is not None:
            guests = [g for g in snap.guests if g.xid != 0]
            running = sum(1 for g in guests if g.state == "running")
            text.append(f" │ {running}/{len(guests)} running │ {len(snap.procs):,} procs")
        count, hidden = self.marks
        if count:
            text.append(" │ ")
            text.append(f"{count} marked", style="bold")
            text.append((f", {hidden} hidden by the filter" if hidden else "") + " (U clears)")
        if self.paused:
            text.append(" │ ")
            text.append("PAUSED", style="bold reverse")
        if getattr(app, "read_only", False):
            text.append(" │ ")
            text.append("🔒 READ-ONLY", style="bold")
        self.show([text])
