"""Small compiled helpers that run inside guests (see build.py)."""

from __future__ import annotations

from pathlib import Path

HELPERS_DIR = Path(__file__).resolve().parent


def helper_path(name: str) -> Path:
    """Path of a built helper binary, e.g. ``vinit``."""
    return HELPERS_DIR / name
