"""Command palette (``:`` or ctrl+p): jump to a guest, a screen, an action.

Actions offered are those of the screen on top, filtered by the same gate
as the keys (``actions.allowed``); running one goes through ``run_action``
and so through ``check_action`` again.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from engine.datamodel import HOST_NAME
from vstui.app.actions import allowed, specs


class VstuiCommands(Provider):
    """Guests, screens and the current screen's actions."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        out: list[tuple[str, Callable[[], object], str]] = [
            ("Guests", app.action_show_guests, "the guest list"),
            ("Processes", app.action_show_processes, "every process on the host"),
            ("Audit", app.action_show_audit, "read-only checks with fixes"),
            ("Help", app.action_help, "keys of this screen"),
        ]
        snap = getattr(app, "snapshot", None)
        for g in snap.guests if snap else ():
            if g.name != HOST_NAME:
                out.append((f"Guest {g.name}", partial(app.open_detail, g.name), g.state))
        screen = self.screen
        scope = getattr(screen, "SCOPE", "")
        read_only = getattr(app, "read_only", True)
        for spec in specs(scope):
            if scope in spec.scopes and allowed(spec.id, read_only) and spec.id not in ("palette",):
                run = partial(app.run_action, spec.id, screen)
                out.append((f"{spec.description} ({spec.id})", run, "action on this screen"))
        return out

    async def discover(self) -> Hits:
        for title, call, help_text in self._commands():
            yield DiscoveryHit(title, call, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, call, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), call, help=help_text)
