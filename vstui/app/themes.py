"""Themes from TOML files, loaded by name; bad files fail soft.

Shipped themes live in the repository's ``themes/`` directory; the user's
own in ``$XDG_CONFIG_HOME/vstui/themes`` (default ~/.config/vstui/themes)
and win on a name clash. A file::

    dark = true            # optional, default true
    ansi = false           # true: use the terminal's own 16 colours
    [colors]               # primary is required, the rest is derived if absent
    primary = "#3b82f6"
    background = "#101418"
    [variables]            # optional Textual design variables
    footer-key-foreground = "#93c5fd"

A file that does not parse or lacks ``primary`` is skipped and reported;
the caller shows one notification for all of them (posting's themes.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from textual.color import ColorParseError
from textual.theme import Theme

from engine.config import read_toml
from engine.errors import VstuiError

COLOR_KEYS = (
    "primary", "secondary", "accent", "foreground", "background", "surface", "panel",
    "boost", "success", "warning", "error",
)  # fmt: skip
DEFAULT_THEME = "dark"
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "themes"


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "vstui" / "themes"


def theme_dirs() -> list[Path]:
    return [SHIPPED_DIR, user_dir()]


def parse_theme(name: str, data: dict) -> Theme:
    """A Theme from parsed TOML; ValueError names what is wrong."""
    colors = data.get("colors", {})
    if not isinstance(colors, dict) or "primary" not in colors:
        raise ValueError("[colors] primary is required")
    unknown = set(colors) - set(COLOR_KEYS)
    if unknown:
        raise ValueError(f"unknown colour key(s) {', '.join(sorted(unknown))}")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ValueError("[variables] must be a table")
    theme = Theme(
        name=name, dark=bool(data.get("dark", True)), ansi=bool(data.get("ansi", False)),
        variables={str(k): str(v) for k, v in variables.items()},
        **{k: str(v) for k, v in colors.items()},
    )  # fmt: skip
    theme.to_color_system()  # raises on a colour Textual cannot parse
    return theme


def load_themes(dirs: list[Path] | None = None) -> tuple[dict[str, Theme], list[tuple[Path, str]]]:
    """Every theme in ``dirs`` by file stem, and the (path, error) failures."""
    themes: dict[str, Theme] = {}
    failures: list[tuple[Path, str]] = []
    for folder in dirs if dirs is not None else theme_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                themes[path.stem] = parse_theme(path.stem, read_toml(path) or {})
            except VstuiError as exc:
                failures.append((path, exc.message))
            except (ValueError, TypeError, ColorParseError) as exc:
                failures.append(
                    (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                )
    return themes, failures
