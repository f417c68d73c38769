"""Helpers of the many-hosts tests (their fixtures: tests/integration/conftest.py).

Each test gets its own sshd (own port, host key and client key), its own
hosts.toml and control directory (tests.sshd); the guests run under the
test's two roots (``vroot``, ``vroot2``) as hosts ``a`` and ``b``.
"""

from __future__ import annotations

import os
import subprocess

from engine.paths import Paths
from tests.sshd import VENV_BIN, TestSshd

GUEST_A, GUEST_B = "ra", "rb"
# unique per test run: suites running side by side on one machine see each other on host "a"
SLEEP = {GUEST_A: f"sleep 71{os.getpid()}", GUEST_B: f"sleep 72{os.getpid()}"}


def tool(fleet: TestSshd, name: str, *args: str, stdin: str | None = None,
         timeout: float = 90) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([str(VENV_BIN / name), *args], env=fleet.env(), input=stdin,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def build_and_start(paths: Paths, name: str) -> None:
    from engine import config, rootfs, runtime

    rootfs.build(paths, name)
    config.update_config(paths, name, {"V_INIT": f"/bin/sh -c '{SLEEP[name]} & wait'"})
    runtime.start(paths, name)


def stop_and_delete(paths: Paths, name: str) -> None:
    from engine import rootfs, runtime

    try:
        runtime.stop(paths, name, 5)
    finally:
        rootfs.delete(paths, name, force=True)


def one_line(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]
