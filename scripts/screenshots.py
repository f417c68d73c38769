#!/usr/bin/env python3
"""Render SVG screenshots of every console screen into screenshots/.

    .venv/bin/python scripts/screenshots.py [--out DIR] [--only NAME...]

Each screen at 80x24 and 160x48, in the dark and the ansi themes, from a
fixed snapshot source (tests/tui/fakes.py), so the pictures are the same on
every run and show no real host.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.tui.helpers import make_app, settle  # noqa: E402

SCREENS: dict[str, list[str]] = {
    "guests": [],
    "detail": ["down", "enter"],
    "detail-log": ["down", "enter", "l"],
    "processes": ["2"],
    "processes-tree": ["2", "t"],
    "kill": ["2", "k", "enter"],
    "editor": ["end", "e"],
    "audit": ["3"],
    "help": ["2", "question_mark"],
    "build": ["n"],
    "exec": ["end", "x", *"echo hello from web; ls /", "enter"],
    "snapshots": ["down", "enter", "S"],
    "clone": ["down", "c"],
    "read-only": [],
}
SIZES = ((80, 24), (160, 48))
THEMES = ("dark", "ansi")


def sample_snapshots() -> list:
    from engine.rootfs.snapshots import Snapshot

    mib = 1 << 20
    return [
        Snapshot("db", "before-upgrade", 1_700_000_000.0, "btrfs", 812 * mib, 64 << 10, 812 * mib),
        Snapshot("db", "20231115T020000Z", 1_700_013_600.0, "btrfs", 830 * mib, 21 * mib,
                 809 * mib),
    ]  # fmt: skip


async def shoot(name: str, keys: list[str], size: tuple[int, int], theme: str, out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="vstui-shots-") as tmp:
        # interval: one snapshot only, so a slow run does not add a sparkline sample
        app = make_app(Path(tmp), read_only=name == "read-only", theme=theme, interval=3600)
        log = app.engine.paths.log_file("db")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("vinit: starting /etc/rc.local\npostgres: database system is ready\n")
        app.engine.recorder.snapshots["db"] = sample_snapshots()
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await pilot.press(*keys)
            await settle(pilot)
            await pilot.pause(0.3)
            filename = f"{name}-{theme}-{size[0]}x{size[1]}.svg"
            app.save_screenshot(filename, str(out))
    return out / filename


async def main(out: Path, only: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, keys in SCREENS.items():
        if only and name not in only:
            continue
        for size in SIZES:
            for theme in THEMES:
                print(await shoot(name, keys, size, theme, out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "screenshots")
    parser.add_argument("--only", nargs="*", default=[])
    args = parser.parse_args()
    asyncio.run(main(args.out, args.only))
