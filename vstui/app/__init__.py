"""The vstui Textual console.

``run()`` opens it; ``vstui.app.main:main`` is the ``vstui`` command.
Textual is imported only when the console starts, so the command-line
tools that import ``vstui`` do not pay for it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.paths import Paths

ESC_DELAY_MS = 25


def run(
    root: str | None = None,
    read_only: bool = False,
    theme: str | None = None,
    interval: float = 1.0,
    demo: bool = False,
    screen: str | None = None,
    guest: str | None = None,
    xid: str | int | None = None,
) -> int:
    """Open the console on ``root``; returns the exit status.

    Args:
        root: host root prefix (``--root``), default VSTUI_ROOT or ``/``.
        read_only: refuse every action that changes the host; forced on for
            a non-root user.
        theme: a theme name from themes/ or ~/.config/vstui/themes.
        interval: seconds between snapshots (minimum 0.5).
        demo: build and start the demo guests first (``vstui --demo``).
        screen: "guests" (default), "processes" (what ``vtop`` opens), "audit".
        guest: open the processes screen showing only this guest ("" = host).
        xid: the same by context number or name (``vtop --xid X``); 0 is the host.
    """
    from engine.facade import Engine
    from engine.paths import Paths

    where = ""
    if demo:
        from vstui import demo as demo_mod

        root = demo_mod.prepare(root)
        # Printed too, so it is still on the terminal after the console closes.
        where = f"demo guests {demo_mod.names()} under {root}; `vstui --demo-clean"
        where += f" --root {root}`" if root != demo_mod.DEFAULT_ROOT else "`"
        where += " stops and deletes them"
        print(f"vstui: {where}", file=sys.stderr)
    paths = Paths.from_root(root)
    if xid is not None:
        guest = guest_of(paths, str(xid))
    if guest is not None:
        screen = "processes"
    forced = os.geteuid() != 0 and not read_only
    engine = Engine(paths, read_only=read_only or os.geteuid() != 0)

    # A lone Esc is told from the start of a key's escape sequence by
    # waiting this long for more bytes: Textual's default 100 ms made Esc
    # (back) take 125-160 ms. 25 ms still holds an arrow key's bytes
    # together (one write by the terminal); ESCDELAY set by the user wins.
    os.environ.setdefault("ESCDELAY", str(ESC_DELAY_MS))
    from vstui.app.app import VstuiApp
    from vstui.app.keymap import load_keymap
    from vstui.app.source import real_source

    keymap, problems = load_keymap()
    notices = list(problems)
    if where:
        notices.append(where)
    if forced:
        notices.append("not root: read-only mode (every action that changes the host is off)")
    app = VstuiApp(
        engine, real_source(engine), interval=interval, theme=theme,
        first_screen=screen or "guests", keymap=keymap, notices=notices, guest=guest,
    )  # fmt: skip
    result = app.run()
    return int(result or 0)


def guest_of(paths: Paths, word: str) -> str:
    """The guest name behind ``--xid``: a name as is, a context number looked up."""
    from engine.contexts import HOST_NAME, HOST_XID
    from engine.errors import VstuiError
    from engine.procs.attribution import all_guests, running_guests

    if not word.isdigit():
        if word not in all_guests(paths):
            raise VstuiError("no such guest; `vserver-stat` lists the running ones", word)
        return word
    if int(word) == HOST_XID:
        return HOST_NAME

    for info in running_guests(paths):
        if info.xid == int(word):
            return info.name
    raise VstuiError(f"no running guest has context {word}; `vserver-stat` lists the running ones")


def run_fleet(
    hosts: list[str],
    read_only: bool = False,
    theme: str | None = None,
    interval: float = 1.0,
    screen: str | None = None,
) -> int:
    """Open the console on several hosts (``vstui --host A --host B``).

    Each host is reached through its agent (ssh, or ``local``); the console
    opens at once and fills in as hosts answer. Read-only here (the flag, or
    a non-root user) refuses every change on every host; a host of
    hosts.toml marked read_only refuses them too, there as well.
    """
    from engine.remote.hosts import resolve_all
    from vstui.app.app import VstuiApp
    from vstui.app.fleet import FleetEngine
    from vstui.app.keymap import load_keymap

    engine = FleetEngine(resolve_all(hosts), max(0.5, interval), read_only=read_only)
    keymap, problems = load_keymap()
    engine.connect()
    try:
        app = VstuiApp(
            engine,  # type: ignore[arg-type]
            engine.source,
            interval=interval,
            theme=theme,
            first_screen=screen or "guests",
            keymap=keymap,
            notices=problems,
        )
        return int(app.run() or 0)
    finally:
        engine.close()
