"""Freeze, thaw and clone from the guests and detail screens.

A mixin of ``VstuiScreen``: each action takes the screen's current guest and
runs the engine call in the app's operation worker, so errors (a stopped
guest, a bad address, the read-only facade) come back as notifications.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vstui.app.widgets.dialogs import FormDialog

if TYPE_CHECKING:
    from vstui.app.app import VstuiApp

CLONE_FIELDS = (
    ("name", "name of the clone (a hostname label)", ""),
    ("addresses", "its addresses, space separated, e.g. 198.18.0.21/24 (none: no address)", ""),
    ("hostname", "its hostname (default: its name)", ""),
    ("snapshot", "from snapshot (default: the guest as it is now)", ""),
)


class StorageActions:
    """freeze (f), thaw (u), clone (c); the screen supplies ``_guest_or_say``."""

    vapp: VstuiApp
    _guest_or_say: Callable[[], str | None]

    def action_freeze(self) -> None:
        if name := self._guest_or_say():
            self.vapp._run(f"freeze {name}", lambda: self.vapp.engine.freeze(name), None)

    def action_thaw(self) -> None:
        if name := self._guest_or_say():
            self.vapp._run(f"thaw {name}", lambda: self.vapp.engine.thaw(name), None)

    def action_clone(self) -> None:
        if name := self._guest_or_say():
            dialog = FormDialog(f"Clone {name}", CLONE_FIELDS, "Clone")
            self.vapp.push_screen(dialog, lambda values: self._clone(name, values))

    def _clone(self, name: str, values: dict[str, str] | None) -> None:
        if not values or not values.get("name"):
            return
        target = values["name"]
        addresses = values.get("addresses", "").split()
        engine = self.vapp.engine
        call = lambda: engine.clone(  # noqa: E731
            name, target, addresses, values.get("hostname") or None,
            values.get("snapshot") or None,
        )  # fmt: skip
        done = lambda _: self.vapp.notify(f"cloned {name} to {target}")  # noqa: E731
        self.vapp._run(f"clone {name}", call, done)
