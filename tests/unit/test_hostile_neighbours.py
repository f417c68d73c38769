"""Issue 19: a broken neighbour config never blocks anything else.

Context id allocation, ``vserver --list`` and the console's snapshot skip a
broken NAME.conf (of every kind in tests/hostile.py) with a one-line
warning, and go on with the other guests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.paths import Paths
from engine.runtime import xid
from tests.hostile import BROKEN, make_broken


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths.from_root(tmp_path / "root")
    p.config_dir.mkdir(parents=True)
    p.config_file("good").write_text("S_HOSTNAME=good.test\n")
    return p


def vserver(paths: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_xid_allocation_skips_a_broken_neighbour(paths: Paths, kind: str) -> None:
    make_broken(paths, [kind])
    assert xid.xid_of(paths, "good") == xid.FIRST_DYNAMIC


def test_xid_allocation_keeps_a_broken_neighbours_valid_context(paths: Paths) -> None:
    paths.config_file("old").write_text("S_CONTEXT=40000\nV_MEMORY=" + "9" * 400 + "\n")
    assert xid.xid_of(paths, "good") == xid.FIRST_DYNAMIC + 1


def test_list_shows_every_good_guest_and_one_warning_per_broken(paths: Paths) -> None:
    broken = make_broken(paths)
    done = vserver(paths, "--list")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert rows["good"].split()[:4] == ["good", "stopped", "-", "good.test"]
    warnings = done.stderr.splitlines()
    assert len(warnings) == len(broken), done.stderr
    for name in broken:
        (line,) = [w for w in warnings if w.startswith(f"vserver: {name}: warning: skipped: ")]
        assert "(config error)" in rows[name]
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr


def test_list_json_marks_broken_guests(paths: Paths) -> None:
    make_broken(paths, ["fifo", "overflow"])
    done = vserver(paths, "--list", "--json")
    data = {e["name"]: e for e in json.loads(done.stdout)}
    assert data["good"]["hostname"] == "good.test"
    assert "is a FIFO" in data["fifo"]["error"] and "V_MEMORY" in data["overflow"]["error"]


def test_console_snapshot_lists_good_guests_and_names_the_broken(paths: Paths) -> None:
    from engine.observe import Observer

    broken = make_broken(paths)
    snap = Observer(paths).snapshot()
    assert "good" in [g.name for g in snap.guests]
    for name in broken:
        said = [e for e in snap.errors if e.startswith(f"{name}: configuration skipped: ")]
        assert len(said) == 1, snap.errors
    assert all("\n" not in e and "\x1b" not in e for e in snap.errors)
