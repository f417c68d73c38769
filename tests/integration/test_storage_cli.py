"""``vserver NAME quota``: show, grow, refuse (needs root)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine import rootfs
from engine.config import load_guest
from engine.paths import Paths

pytestmark = pytest.mark.root


def vserver(paths: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(argv, capture_output=True, text=True)


def test_quota_show_set_and_refuse(vroot: Paths) -> None:
    rootfs.build(vroot, "q", "busybox", options={"disk": "64M"})
    shown = vserver(vroot, "q", "quota")
    assert shown.returncode == 0, shown.stderr
    assert "backend  image" in shown.stdout and "space    " in shown.stdout
    data = json.loads(vserver(vroot, "q", "quota", "--json").stdout)
    assert data["bytes_limit"] > 50 << 20 and data["inodes_used"] > 0
    grown = vserver(vroot, "q", "quota", "96M")
    assert grown.returncode == 0, grown.stderr
    assert load_guest(vroot, "q").disk == 96 << 20
    small = vserver(vroot, "q", "quota", "1K")
    assert small.returncode == 1 and small.stderr.startswith("vserver: q: ")
    assert "cannot shrink" in small.stderr or "too small" in small.stderr
    user = vserver(vroot, "q", "quota", "--user", "root", "10M")
    assert user.returncode == 1 and "vserver: q: " in user.stderr
    assert len(user.stderr.strip().splitlines()) == 1


def test_quota_of_an_unlimited_guest(vroot: Paths) -> None:
    rootfs.build(vroot, "free")
    shown = vserver(vroot, "free", "quota")
    assert shown.returncode == 0 and "unlimited" in shown.stdout
    refused = vserver(vroot, "free", "quota", "1G")
    assert refused.returncode == 1 and "V_DISK_BACKEND=none" in refused.stderr
