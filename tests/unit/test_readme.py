"""The README keeps its promises: the key table and the two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

from engine.config import keys_markdown

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_key_table_is_current() -> None:
    table = re.search(r"<!-- keys:begin -->\n(.*?)\n<!-- keys:end -->", README, re.S)
    assert table, "README lost its key table markers"
    assert table.group(1).strip() == keys_markdown().strip()


def test_two_setup_commands_and_ci_uses_the_test_one() -> None:
    assert "./setup.sh demo" in README and "./setup.sh test" in README
    ci = (Path(__file__).resolve().parents[2] / ".ci/run").read_text()
    assert "./setup.sh test" in ci


def test_every_tool_is_documented() -> None:
    for tool in ("vserver", "vps", "vtop", "vkill", "vserver-stat", "chcontext", "chbind",
                 "reducecap", "vstui"):  # fmt: skip
        headings = [line for line in README.splitlines() if line.startswith("### ")]
        assert any(re.search(rf"\b{re.escape(tool)}\b", h) for h in headings), tool
