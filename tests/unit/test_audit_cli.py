"""``vstui audit``: JSON and readable output, exit codes 0/1/2 (no root needed)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vstui.cli.audit import main


@pytest.fixture
def base() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vstui-auditcli-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root)


def unsafe(root: Path) -> None:
    (root / "etc/vserver").mkdir(parents=True)
    (root / "etc/vserver/web.conf").write_text('S_CAPS="SYS_MODULE"\nS_FLAGS="lock"\nV_USERNS=no\n')


def test_clean_root_exits_0(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (base / "etc/vserver").mkdir(parents=True)  # vstui's, without guests (empty: exit 2)
    assert main(["--root", str(base), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["clean"] is True and data["findings"] == [] and data["unreadable"] == []
    assert data["root"] == str(base)


def test_findings_exit_1(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unsafe(base)
    assert main(["--json", "--root", str(base), "--min-severity", "critical"]) == 1
    data = json.loads(capsys.readouterr().out)
    rules = [f["rule"] for f in data["findings"]]
    # a user's own files are not root's: then the config's owner is a finding too
    assert rules == ["GUEST-CAP-SYS_MODULE"] or os.geteuid() != 0
    (f,) = [f for f in data["findings"] if f["rule"] == "GUEST-CAP-SYS_MODULE"]
    assert f["guest"] == "web" and f["severity"] == "critical" and f["fix"] and f["why"]
    assert data["counts"]["critical"] == len(rules) and data["min_severity"] == "critical"


@pytest.mark.skipif(os.geteuid() != 0, reason="a user's files are not root's: a finding")
def test_threshold_above_every_finding_exits_0(base: Path) -> None:
    (base / "etc/vserver").mkdir(parents=True)
    (base / "etc/vserver/web.conf").write_text(
        'S_FLAGS="lock"\nV_PIDS=10\nV_MEMORY=64M\nV_DISK=1G\n'
    )
    assert main(["--root", str(base), "--json", "--min-severity", "medium"]) == 0
    assert main(["--root", str(base), "--json", "--min-severity", "low"]) == 1


def test_readable_report(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unsafe(base)
    assert main(["--root", str(base), "--guest", "web"]) == 1
    out = capsys.readouterr().out
    assert "CRITICAL" in out and "GUEST-CAP-SYS_MODULE" in out
    assert f"fix: vserver --root {base} web set S_CAPS-=SYS_MODULE" in out  # a command
    assert "HOST-BARRIER" not in out  # host-wide rules are left out with --guest


@pytest.mark.parametrize(
    "args", [["--guest", "nope"], ["--min-severity", "urgent"], ["--bogus"], ["--guest", "-x"]]
)
def test_errors_exit_2(base: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert main(["--root", str(base), "--json", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("vstui audit: ") and captured.err.count("\n") == 1
