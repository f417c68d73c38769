"""Hostile inputs shared by the issue 19 tests: broken NAME.conf files of every kind."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from engine.paths import Paths


def _text(body: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(body)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _link_out(path: Path) -> None:
    target = path.parent.parent.parent / "outside.conf"  # ROOT/outside.conf
    target.write_text("S_CONTEXT=40000\n")
    path.symlink_to(target)


def _dangling(path: Path) -> None:
    path.symlink_to("nowhere.conf")


def _huge(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(10 << 20)


# name -> how to make NAME.conf broken in that way
BROKEN: dict[str, Callable[[Path], None]] = {
    "overflow": _text("ONBOOT=yes\nV_MEMORY=" + "9" * 400 + "\n"),
    "absurd": _text("ONBOOT=yes\nV_MEMORY=99999999999999999999999T\n"),
    "manydigits": _text("ONBOOT=yes\nPRIORITY=" + "9" * 5000 + "\n"),
    "rate": _text("ONBOOT=yes\nV_BANDWIDTH_IN=" + "9" * 400 + "gbit\n"),
    "binary": lambda p: p.write_bytes(b"\xff\xfe\x00\x1b]0;x\x07ONBOOT=yes\n"),
    "shell": _text("ONBOOT=yes\nif true; then S_CONTEXT=2; fi\n"),
    "fifo": _fifo,
    "directory": _directory,
    "linkout": _link_out,
    "dangling": _dangling,
    "huge": _huge,
}


def make_broken(paths: Paths, kinds: list[str] | None = None) -> list[str]:
    """A broken NAME.conf per kind (the guest is named after the kind)."""
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    names = list(kinds or BROKEN)
    for name in names:
        BROKEN[name](paths.config_file(name))
    return names
