"""End to end (tmux): the console sends only what changed, and what it sends
adds up to the same screen a full redraw gives (issue #20 item 1).

The process list churns (processes start and end every 100 ms, CPU use
changes), so rows are inserted, removed and moved, which the console draws
with partial lines and terminal scrolling. Paused, the pane must then be
cell for cell (characters and colours) what a full redraw paints.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from engine.paths import Paths
from tests.tui.tmux import console, tmux

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]

CHURN = (
    "while :; do sleep 0.6 & sleep 0.35 & "
    "i=0; while [ $i -lt $(( $$ % 7 * 300 )) ]; do i=$((i+1)); done; sleep 0.1; done"
)


@pytest.mark.parametrize(("screen", "keys"), [("processes", []), ("processes", ["t"])])
def test_incremental_output_adds_up_to_a_full_redraw(vroot: Paths, screen, keys):
    churn = [
        subprocess.Popen(["sh", "-c", CHURN], start_new_session=True) for _ in range(3)
    ]  # fmt: skip
    try:
        with tmux(console(vroot, "--screen", screen), size=(110, 30)) as t:
            t.wait_for(lambda s: "COMMAND" in s, "the process screen")
            t.keys(*keys)
            time.sleep(8)  # many updates with rows coming, going and moving
            t.keys("Z")
            t.wait_for(lambda s: "PAUSED" in s, "the pause")
            time.sleep(1.5)  # the last frame written before the pause lands
            drawn = t.screen(escapes=True)
            t.resize(111, 30)  # a resize repaints everything...
            time.sleep(1)
            t.resize(110, 30)  # ...at the old size again
            time.sleep(1.5)
            full = t.screen(escapes=True)
    finally:
        for proc in churn:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert drawn.splitlines() == full.splitlines(), _diff(drawn, full)


def _diff(a: str, b: str) -> str:
    rows = [
        f"row {i}:\n  drawn {x!r}\n  full  {y!r}"
        for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False))
        if x != y
    ]
    return "\n".join(rows[:6])
