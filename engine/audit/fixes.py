"""Audit fixes as commands that work as printed.

A guest's configuration is changed with ``vserver NAME set KEY=VALUE``
(atomic, comments kept, limits applied to a running guest at once, an empty
value removes the key), its run state with ``vserver NAME restart|stop|thaw``.
Every command names the root (``--root DIR``) when the audit ran under one,
and is quoted for a POSIX shell, so it can be pasted or run by a script.
"""

from __future__ import annotations

import shlex

from engine.config import GuestConfig
from engine.paths import Paths, check_name


def vserver(paths: Paths, name: str, *words: str) -> str:
    """``vserver [--root DIR] NAME WORDS...``."""
    check_name(name)  # a command to paste must never name another guest's path
    root = ["--root", str(paths.root)] if paths.root_id else []
    return shlex.join(["vserver", *root, name, *words])


def set_keys(paths: Paths, name: str, changes: dict[str, str]) -> str:
    """``vserver [--root DIR] NAME set KEY=VALUE...`` ("" removes a key)."""
    check_name(name)
    return vserver(paths, name, "set", *(f"{key}={value}" for key, value in changes.items()))


def edit(paths: Paths, name: str, *words: str) -> str:
    """``vserver [--root DIR] NAME set KEY+=WORD KEY-=WORD...``: one word
    added to or removed from a list key, so fixes of one key compose (each
    works run alone, in any order, or all together)."""
    return vserver(paths, name, "set", *words)


def raw(cfg: GuestConfig, key: str) -> str:
    """``key``'s value as written in NAME.conf ("" when absent)."""
    value = ""
    for k, v in cfg.raw:
        if k == key:
            value = v
    return value


def drop_cap(cfg: GuestConfig, paths: Paths, cap: str) -> str:
    """S_CAPS without the word that adds ``cap`` (any spelling of it)."""
    return edit(paths, cfg.name, f"S_CAPS-={cap}")


def add_cap(cfg: GuestConfig, paths: Paths, word: str) -> str:
    """S_CAPS with ``word`` added (e.g. SETPCAP, or !CAP_DAC_READ_SEARCH)."""
    return edit(paths, cfg.name, f"S_CAPS+={word}")


def flags(cfg: GuestConfig, paths: Paths, add: str = "", remove: str = "") -> str:
    """S_FLAGS with a flag added or removed."""
    return edit(paths, cfg.name, f"S_FLAGS+={add}" if add else f"S_FLAGS-={remove}")
