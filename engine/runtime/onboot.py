"""``vserver --onboot start|stop``: the guests with ONBOOT=yes, in PRIORITY order.

Start goes by ascending PRIORITY (then name); stop in the reverse order. A
guest that fails does not stop the others: its error is reported and counted.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import GuestRunning, VstuiError
from engine.paths import Paths


def onboot_guests(paths: Paths, report: Callable[[str], None]) -> list[tuple[int, str]]:
    """(priority, name) of every ONBOOT guest, start order; bad configs reported."""
    from engine.config import list_guests, load_guest

    found = []
    for name in list_guests(paths):
        try:
            cfg = load_guest(paths, name)
        except VstuiError as exc:
            report(f"vserver: {name}: {exc.message}")
            continue
        if cfg.onboot:
            found.append((cfg.priority, name))
    return sorted(found)


def onboot(paths: Paths, action: str, report: Callable[[str], None] = lambda _: None) -> int:
    """Start or stop every ONBOOT guest; the number that failed."""
    from engine.runtime.starting import start
    from engine.runtime.stopping import stop

    guests = onboot_guests(paths, report)
    if action == "stop":
        guests.reverse()
    failures = 0
    for _, name in guests:
        try:
            if action == "start":
                start(paths, name)
            else:
                stop(paths, name)
        except GuestRunning:
            report(f"vserver '{name}' already running")
        except VstuiError as exc:
            failures += 1
            report(f"vserver: {name}: {exc.message}")
    return failures
