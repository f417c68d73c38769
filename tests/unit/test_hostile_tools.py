"""Issue 19: tools answer cleanly where they used to say the wrong thing or hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def tool(module: str, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", module, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, **kw)


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_audit_of_a_missing_root_finds_nothing_to_check(extra: list[str]) -> None:
    done = tool("vstui.app.main", "audit", "--root", "/nonexistent", *extra)
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr == "vstui audit: /nonexistent does not exist: nothing was found to check\n"


def test_audit_of_a_root_without_vstui_finds_nothing_to_check(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    done = tool("vstui.app.main", "audit", "--root", str(tmp_path))
    assert done.returncode == 2, done
    assert "nothing was found to check" in done.stderr and done.stderr.count("\n") == 1


def test_console_without_a_terminal_says_so_and_points_to_the_text_tools(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    with open(out, "w") as f:
        done = subprocess.run(
            [sys.executable, "-m", "vstui.app.main", "--root", str(tmp_path)],
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 1
    assert "needs a terminal" in done.stderr
    assert "vtop -b" in done.stderr and "vserver-stat" in done.stderr
    assert out.read_text() == ""  # no escape codes written into the file


@pytest.mark.parametrize("option", ["--hostname", "--domainname"])
def test_chcontext_refuses_a_name_with_control_characters(option: str) -> None:
    done = tool("vstui.cli.chcontext", option, "a\x1b]0;PWNED\x07", "true")
    assert done.returncode == 1 and done.stdout == ""
    assert "\x1b" not in done.stderr and "a^[]0;PWNED^G" in done.stderr
