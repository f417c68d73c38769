"""Layering rules, checked in fresh interpreters (harlequin's import-hygiene test).

The engine never imports the UI; the CLI tools' start path stays light.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine

REPO = Path(__file__).resolve().parents[2]
UI_MODULES = ("textual", "rich", "vstui")


def _engine_modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.walk_packages(engine.__path__, "engine.") if "._" not in m.name
    )


def _loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


@pytest.mark.parametrize("module", _engine_modules())
def test_engine_module_imports_no_ui(module: str) -> None:
    loaded = _loaded_after(module)
    leaked = sorted(m for m in loaded if m.split(".")[0] in UI_MODULES)
    assert not leaked, f"{module} imports UI modules: {leaked}"


@pytest.mark.parametrize(
    "module",
    ["vstui.cli.vserver", "engine.config", "engine.runtime", "engine.runtime.enter"],
)
def test_fast_path_stays_light(module: str) -> None:
    try:
        loaded = _loaded_after(module)
    except subprocess.CalledProcessError:
        pytest.skip(f"{module} not present in this build")
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("pyroute2", "psutil", "textual"))
    assert not heavy, f"{module} pulls heavy modules onto the CLI start path: {heavy}"
