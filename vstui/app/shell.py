"""Running programs on the real terminal, behind an injectable runner.

``App.suspend`` cannot work under ``run_test`` (the headless driver cannot
suspend), so the app calls a runner object and tests hand it a stub.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol

from textual.app import App


class ShellRunner(Protocol):
    def interactive(self, app: App, argv: Sequence[str]) -> int:
        """Run ``argv`` on the real terminal while the app is suspended."""
        ...


class SuspendRunner:
    """Suspend the app, run the program on the terminal, resume."""

    def interactive(self, app: App, argv: Sequence[str]) -> int:
        with app.suspend():
            return subprocess.run(list(argv), check=False).returncode
