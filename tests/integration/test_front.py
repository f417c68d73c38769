"""The compiled ``vserver`` front end (engine/helpers/vserver.c).

``vserver [--root DIR] NAME exec CMD...`` without a terminal execs vexec
exactly as the Python path does (same argv, same environment) and never
starts Python; vexec refuses a stopped or private guest with the engine's
words. Everything else falls back to the Python tool with the user's words,
so output and exit codes are the same.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine import config
from engine.helpers import helper_path
from engine.paths import Paths
from engine.runtime import profile, state
from engine.runtime.build import build

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def front() -> str:
    build()
    return str(helper_path("vserver"))


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)  # never the caller's terminal
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, **kw)


def python_tool(paths: Paths, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args], **kw)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def traced(front: str, *args: str, **kw) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the front end under strace; (result, every execve/execveat it made)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    with tempfile.NamedTemporaryFile("r", prefix="vstui-front-", suffix=".strace") as log:
        cmd = ["strace", "-f", "-qq", "-e", "trace=execve,execveat", "-o", log.name]
        result = run([*cmd, "--", front, *args], **kw)
        return result, log.read()


def started_python(trace: str) -> bool:
    """Whether any process of the traced tree exec'd a Python interpreter."""
    return re.search(r'^\d+ +execve\("[^"]*/python[^"/]*", ', trace, re.M) is not None


def same(a: subprocess.CompletedProcess[str], b: subprocess.CompletedProcess[str]) -> None:
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


@pytest.fixture
def built(vroot: Paths) -> Paths:
    ok(python_tool(vroot, "g", "build", "-m", "busybox"))
    return vroot


@pytest.fixture
def running(built: Paths):
    ok(python_tool(built, "g", "start"))
    try:
        yield built, state.read(built, "g").init_pid
    finally:
        python_tool(built, "g", "stop")


def guest_pids(init: int) -> list[int]:
    want = os.stat(f"/proc/{init}/ns/pid").st_ino
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}/ns/pid").st_ino == want:
                found.append(int(entry))
        except OSError:
            continue
    return found


def host_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def profile_caps(paths: Paths) -> str:
    """The capability mask of the guest's exec plan (what exec confines to)."""
    plan = profile.read(paths.run_dir_str("g"))
    assert plan is not None, "no exec plan"
    return f"{int(plan['confine'][0][0], 16):016x}"


PROBE = (
    "hostname; grep -E '^(CapBnd|CapEff|CapInh|Seccomp|NSpid):' /proc/self/status;"
    " cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup; echo ---;"
    " readlink /proc/self/ns/pid; env | sort; ulimit -a; pwd"
)


def without_pid(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("NSpid:")]


def test_fast_exec_runs_in_the_guest_without_python(front: str, running) -> None:
    paths, init = running
    root = ["--root", str(paths.root)]
    result, trace = traced(front, *root, "g", "exec", "sh", "-c", PROBE)
    out = ok(result)
    assert not started_python(trace), trace
    # vexec, then its sealed copy (execveat of the memfd), with the Python path's words
    assert "execveat(" in trace and '["vexec", "-R", ' in trace, trace
    # exactly what the Python path gives (but the PID it got in the guest)
    expected = ok(python_tool(paths, "g", "exec", "sh", "-c", PROBE))
    assert without_pid(out) == without_pid(expected)
    lines = out.splitlines()
    assert lines[0] == "g"
    status = dict(line.split(":\t") for line in lines[1:6])
    assert status["CapBnd"] == status["CapEff"] == profile_caps(paths)
    assert status["CapInh"] == "0000000000000000" and status["Seccomp"] == "2"
    assert len(status["NSpid"].split()) == 1  # the guest's /proc: its own PID only
    head, init_view, rest = out.split("---\n")
    assert head.splitlines()[6:] == init_view.splitlines()  # init's cgroups, guest's view
    assert rest.splitlines()[0] == os.readlink(f"/proc/{init}/ns/pid")
    assert "container=vstui" in rest and "HOME=/root" in rest


def test_fast_exec_runs_the_sealed_vexec_copy_without_first_running_the_helper(
    front: str, running
) -> None:
    """The front end makes vexec's sealed copy itself and execs it: the helper's file is
    never exec'd (it would only copy itself and exec again, ~0.3 ms more)."""
    paths, _ = running
    result, trace = traced(front, "--root", str(paths.root), "g", "exec", "true")
    ok(result)
    execs = [line for line in trace.splitlines() if re.search(r" execve(at)?\(", line)]
    assert len(execs) >= 3, trace  # the front end, vexec's copy, the command
    assert re.search(r' execveat\(\d+, "", \["vexec", "-R", ', execs[1]), trace
    assert str(helper_path("vexec")) not in trace, trace


def test_fast_exec_passes_status_stdio_and_words_through(front: str, running) -> None:
    paths, _ = running
    base = [front, "--root", str(paths.root), "g", "exec"]
    assert run([*base, "/bin/sh", "-c", "exit 7"]).returncode == 7
    piped = run([*base, "sh", "-c", "cat; echo out; echo err >&2; exit 3"], input="hello\n")
    assert (piped.returncode, piped.stdout, piped.stderr) == (3, "hello\nout\n", "err\n")
    assert ok(run([*base, "--", "echo", "a", "b"])) == "a b\n"
    assert (
        ok(run([*base, "echo", "--root", "/elsewhere", "--root=/x"]))
        == "--root /elsewhere --root=/x\n"
    )
    assert ok(run([*base, "--", "echo", "--"])) == "--\n"
    # only one "--" is the separator, as in Python: the next one is the command
    same(run([*base, "--", "--", "echo"]), python_tool(paths, "g", "exec", "--", "--", "echo"))
    # --root=DIR and VSTUI_ROOT select the same root
    assert ok(run([front, f"--root={paths.root}", "g", "exec", "echo", "x"])) == "x\n"
    env = {**os.environ, "VSTUI_ROOT": str(paths.root)}
    result, trace = traced(front, "g", "exec", "echo", "y", env=env)
    assert ok(result) == "y\n" and not started_python(trace)
    no_fallback = {**os.environ, "VSTUI_FALLBACK": "0"}
    assert ok(run([*base, "echo", "z"], env=no_fallback)) == "z\n"


def test_long_exec_is_confined_and_runs_no_writable_host_file(front: str, running) -> None:
    paths, init = running
    proc = subprocess.Popen(
        [front, "--root", str(paths.root), "g", "exec", "sleep", "30"],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        command = None
        while command is None and time.monotonic() < deadline:
            for pid in guest_pids(init):
                if pid != init and Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"):
                    command = pid
            time.sleep(0.02)
        assert command is not None
        # the waiter is this very process, now the sealed vexec copy
        assert os.readlink(f"/proc/{proc.pid}/exe").startswith("/memfd:vexec")
        status = host_status(command)
        assert len(status["NSpid"].split()) == 2  # host pid + pid inside the guest
        assert status["CapBnd"] == profile_caps(paths)
        assert (
            Path(f"/proc/{command}/cgroup").read_text() == Path(f"/proc/{init}/cgroup").read_text()
        )
        for pid in guest_pids(init):
            exe = os.readlink(f"/proc/{pid}/exe")
            st = os.stat(f"/proc/{pid}/exe")
            try:
                host = os.stat(exe)
                host_file = (host.st_dev, host.st_ino) == (st.st_dev, st.st_ino)
            except OSError:
                host_file = False
            # a host file only through a read-only bind (busybox, vinit): never writable
            assert not host_file or os.statvfs(f"/proc/{pid}/exe").f_flag & os.ST_RDONLY, exe
    finally:
        proc.terminate()  # forwarded to sleep by vexec
        proc.wait(timeout=20)
    assert proc.returncode == 143


def test_terminal_falls_back_to_python(front: str, running) -> None:
    paths, _ = running
    primary, secondary = os.openpty()
    try:
        result, trace = traced(
            front, "--root", str(paths.root), "g", "exec", "true", stdin=secondary
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 0, result.stderr
    assert started_python(trace)


def test_stopped_guest_and_other_commands_are_pythons(front: str, built: Paths) -> None:
    paths = built
    root = ["--root", str(paths.root)]
    for args in (["g", "exec", "/bin/true"], ["nosuch", "exec", "/bin/true"]):
        result, trace = traced(front, *root, *args)  # vexec refuses, in the engine's words
        same(result, python_tool(paths, *args))
        assert result.returncode == 1 and "is not running; start it first" in result.stderr
        assert not started_python(trace), args
    for args in (
        ["g", "exec"],
        ["g", "exec", "--"],
        ["g", "status"],
        ["g", "bogus", "--root", "x"],
        ["--list"],
        [],
    ):
        result, trace = traced(front, *root, *args)
        same(result, python_tool(paths, *args))
        assert started_python(trace), args
    no_fallback = {**os.environ, "VSTUI_FALLBACK": "0"}
    assert run([front, *root, "g", "status"], env=no_fallback).returncode == 125
    # a root spelled unnormalised is Python's to resolve: same words, same answer
    result, trace = traced(front, "--root", f"{paths.root}/", "g", "exec", "true")
    same(result, python_tool(paths, "g", "exec", "true"))
    assert started_python(trace)


def test_private_guest_is_refused_as_python_refuses(front: str, built: Paths) -> None:
    paths = built
    config.update_config(paths, "g", {"S_FLAGS": "private"})
    ok(python_tool(paths, "g", "start"))
    try:
        result, trace = traced(front, "--root", str(paths.root), "g", "exec", "/bin/true")
        expected = python_tool(paths, "g", "exec", "/bin/true")
        same(result, expected)
        assert result.returncode == 1 and "private" in result.stderr
        assert not started_python(trace)  # vexec refuses it, with the engine's message
    finally:
        python_tool(paths, "g", "stop")
