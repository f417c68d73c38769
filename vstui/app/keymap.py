"""User key bindings from ``$XDG_CONFIG_HOME/vstui/keymap.toml``.

The file rebinds actions by id (the ids of ``actions.REGISTRY``)::

    [keys]
    kill = "f9,K"       # binding id vstui.kill
    enter = "ctrl+e"

Unknown ids and bad values are reported, not fatal.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.config import read_toml
from engine.errors import VstuiError
from vstui.app.actions import BY_ID


def keymap_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "vstui" / "keymap.toml"


def parse_keymap(data: dict) -> tuple[dict[str, str], list[str]]:
    """Textual keymap ({binding id: keys}) and the problems found."""
    keys = data.get("keys", {})
    problems: list[str] = []
    keymap: dict[str, str] = {}
    if not isinstance(keys, dict):
        return {}, ['[keys] must be a table of action = "keys"']
    for action, value in keys.items():
        if action not in BY_ID:
            problems.append(f"unknown action '{action}'")
        elif not isinstance(value, str) or not value.strip():
            problems.append(f'{action}: keys must be a non-empty string such as "f9,k"')
        else:
            keymap[BY_ID[action].binding_id] = value.replace(" ", "")
    return keymap, problems


def load_keymap(path: Path | None = None) -> tuple[dict[str, str], list[str]]:
    path = path or keymap_path()
    try:
        data = read_toml(path)
    except VstuiError as exc:
        return {}, [exc.message]
    if data is None:
        return {}, []
    keymap, problems = parse_keymap(data)
    return keymap, [f"{path}: {p}" for p in problems]
