"""The vstui Textual console.

``run()`` opens it; ``vstui.app.main:main`` is the ``vstui`` command.
Textual is imported only when the console starts, so the command-line
tools that import ``vstui`` do not pay for it.
"""

from __future__ import annotations

import os


def run(
    root: str | None = None,
    read_only: bool = False,
    theme: str | None = None,
    interval: float = 1.0,
    demo: bool = False,
    screen: str | None = None,
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
    """
    from engine.facade import Engine
    from engine.paths import Paths

    if demo:
        from vstui import demo as demo_mod

        root = demo_mod.prepare(root)
    paths = Paths.from_root(root)
    forced = os.geteuid() != 0 and not read_only
    engine = Engine(paths, read_only=read_only or os.geteuid() != 0)

    from vstui.app.app import VstuiApp
    from vstui.app.keymap import load_keymap
    from vstui.app.source import real_source

    keymap, problems = load_keymap()
    notices = list(problems)
    if forced:
        notices.append("not root: read-only mode (every action that changes the host is off)")
    app = VstuiApp(
        engine, real_source(engine), interval=interval, theme=theme,
        first_screen=screen or "guests", keymap=keymap, notices=notices,
    )  # fmt: skip
    result = app.run()
    return int(result or 0)
