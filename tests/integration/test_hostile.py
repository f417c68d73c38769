"""Issue 19 with real guests: broken neighbours, hostile names, crash points."""

from __future__ import annotations

import pytest

from engine.paths import Paths
from engine.runtime import state
from tests.hostile import make_broken
from tests.integration.test_runtime import build, vserver

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_onboot_starts_every_good_guest_and_fails_for_the_broken(vroot: Paths) -> None:
    early = build(vroot, {"ONBOOT": "yes", "PRIORITY": "10"})
    late = build(vroot, {"ONBOOT": "yes", "PRIORITY": "900"})
    broken = make_broken(vroot)
    try:
        done = vserver(vroot, "--onboot", "start", timeout=180)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert state.read(vroot, early).running and state.read(vroot, late).running
        lines = done.stderr.splitlines()
        for name in broken:
            assert len([x for x in lines if x.startswith(f"vserver: {name}: ")]) == 1, lines
    finally:
        stopped = vserver(vroot, "--onboot", "stop", timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    assert not state.read(vroot, early).running and not state.read(vroot, late).running
