"""The fast exec path: vexec clones the command straight into the guest's
cgroup2 group, and both vexec processes are confined before anything runs.

Watched from the host while ``vserver g exec`` runs: the command (inside the
guest's PID namespace) sits in init's cgroup2 group and every v1 group, and
the waiting vexec (outside it) has the guest's bounding set, seccomp filter,
no inheritable/ambient capability and no fd but 0-2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.paths import Paths
from engine.runtime import state

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]


def vserver(paths: Paths, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def guest(vroot: Paths):
    for args in (("build", "-m", "busybox"), ("start",)):
        result = vserver(vroot, "g", *args)
        assert result.returncode == 0, result.stderr
    try:
        yield vroot, state.read(vroot, "g").init_pid
    finally:
        vserver(vroot, "g", "stop")


def status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(word) for word in text.split()]


def ns(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def wait_for(predicate, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_command_born_in_the_guests_cgroups_and_both_confined(guest) -> None:
    paths, init = guest
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root)]
    proc = subprocess.Popen([*cmd, "g", "exec", "sleep", "30"], cwd=REPO)
    found: list[int] = []
    try:

        def tree():  # the CLI's python, now vexec -> middle vexec -> command
            try:
                if not os.readlink(f"/proc/{proc.pid}/exe").startswith("/memfd:vexec"):
                    return None
                for middle in children(proc.pid):
                    for command in children(middle):
                        if Path(f"/proc/{command}/cmdline").read_bytes().startswith(b"sleep"):
                            return proc.pid, middle, command
            except OSError:
                return None
            return None

        waiter, middle, command = wait_for(tree)
        # the middle process, unconfined for a moment after its birth, is never
        # in the guest's PID namespace: no guest process can see or ptrace it
        assert ns(middle, "pid") != ns(init, "pid")
        assert ns(middle, "pid") == ns(os.getpid(), "pid")
        found.append(command)
        # read from the host's cgroup namespace: the same groups as init, cgroup2 included
        init_cgroups = Path(f"/proc/{init}/cgroup").read_text()
        assert Path(f"/proc/{command}/cgroup").read_text() == init_cgroups
        assert "0::/" in init_cgroups
        assert ns(command, "cgroup") == ns(init, "cgroup")
        init_status = status(init)
        for pid in (waiter, middle, command):
            st = status(pid)
            assert st["CapBnd"] == init_status["CapBnd"]
            assert st["CapEff"] == init_status["CapBnd"]
            assert st["CapInh"] == "0000000000000000"
            assert st["CapAmb"] == "0000000000000000"
            assert st["Seccomp"] == init_status["Seccomp"]
            assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]
            assert ns(pid, "mnt") == ns(init, "mnt")
        assert ns(command, "pid") == ns(init, "pid")
    finally:
        for pid in found:
            os.kill(pid, signal.SIGKILL)
        if not found:
            proc.kill()
        proc.wait(timeout=20)
    assert found and proc.returncode == 128 + signal.SIGKILL


def test_exec_path_imports_neither_pathlib_nor_ctypes() -> None:
    code = (
        "import sys, vstui.cli.vserver, vstui.cli.vserver_exec, engine.runtime.enter;"
        "print(sorted(m for m in ('pathlib', 'ctypes', 'typing', 'signal') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
