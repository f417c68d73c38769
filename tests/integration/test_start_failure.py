"""A start whose init dies at once is a failed start (issue 15).

It used to print "done" and exit 0 for a guest that was already gone.
Now `vserver NAME start` exits non-zero with init's exit status and the
last lines of the console, the log records how init ended, and nothing is
left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import update_config
from engine.paths import Paths
from engine.runtime import bootcache
from tests.integration.test_runtime import ok, unique, vserver

pytestmark = [pytest.mark.root, pytest.mark.slow]

FAILING_INIT = """\
#!/bin/sh
echo "starting the guest's services"
echo "init: cannot mount /data: no such device" >&2
exit 3
"""


def busybox_guest(paths: Paths, init: str | None) -> str:
    name = unique("bb")
    ok(vserver(paths, name, "build", "-m", "busybox", "--hostname", f"{name}.test"))
    update_config(paths, name, {"S_FLAGS": "lock fakeinit"})
    target = paths.guest_root(name) / "sbin/init"
    target.unlink()
    if init is not None:
        target.write_text(init)
        target.chmod(0o755)
    return name


def test_init_that_exits_at_once_fails_the_start(vroot: Paths) -> None:
    name = busybox_guest(vroot, FAILING_INIT)
    done = vserver(vroot, name, "start")
    assert done.returncode != 0
    assert "init exited with status 3" in done.stderr, done.stderr
    assert "init: cannot mount /data: no such device" in done.stderr  # the console's last lines
    log = vroot.log_file(name).read_text()
    assert "starting the guest's services" in log and "init exited with status 3" in log
    assert vserver(vroot, name, "status").returncode == 3  # stopped
    assert not vroot.run_dir(name).exists()
    # the compiled front end replays the start from the boot cache: the same answer
    compiled = Path(sys.executable).parent / "vserver"
    if compiled.exists():
        assert os.path.exists(bootcache.cache_file(vroot, name))
        again = subprocess.run([str(compiled), "--root", str(vroot.root), name, "start"],
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert again.returncode == 1 and "init exited with status 3" in again.stderr
        assert "cannot mount /data" in again.stderr and not vroot.run_dir(name).exists()


def test_missing_init_fails_with_the_exec_error(vroot: Paths) -> None:
    name = busybox_guest(vroot, None)
    done = vserver(vroot, name, "start")
    assert done.returncode != 0
    assert "exec /sbin/init: No such file or directory" in done.stderr
    assert vserver(vroot, name, "status").returncode == 3
