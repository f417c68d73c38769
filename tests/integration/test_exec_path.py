"""`vserver NAME exec`: no host executable inside the guest, every cgroup joined.

Escape class 12 (CVE-2019-5736): every process in the guest's PID namespace,
watched from the host during exec, runs a guest file, a host file the guest
sees only through a read-only bind (a busybox guest's /bin/busybox, vinit,
a skeleton's /usr) or the sealed memfd copy of engine/helpers/vexec, and
none of those can be opened for writing. Class 17 on hybrid hosts: the
exec'd command is in every one of init's cgroups, cgroup2 included.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.paths import Paths
from engine.runtime import state

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SAFE = ("guest", "memfd", "host, bound read-only")  # never a writable host executable


def vserver(paths: Paths, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, **kw)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def guest(vroot: Paths):
    ok(vserver(vroot, "g", "build", "-m", "busybox"))
    ok(vserver(vroot, "g", "start"))
    try:
        yield vroot, "g", state.read(vroot, "g").init_pid
    finally:
        vserver(vroot, "g", "stop")


def pid_ns(pid: int | str) -> int:
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


def guest_pids(init_pid: int) -> list[int]:
    want = pid_ns(init_pid)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if pid_ns(entry) == want:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def exe_verdict(pid: int) -> tuple[str, str] | None:
    """(what /proc/PID/exe is, how opening it for writing went); None if gone."""
    try:
        fd = os.open(f"/proc/{pid}/exe", os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
        try:
            host = os.stat(target)
            host_file = (host.st_dev, host.st_ino) == (st.st_dev, st.st_ino)
        except OSError:
            host_file = False
        kind = "memfd" if target.startswith("/memfd:") else "host" if host_file else "guest"
        if kind == "host" and os.statvfs(f"/proc/self/fd/{fd}").f_flag & os.ST_RDONLY:
            kind = "host, bound read-only"
        try:
            wfd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            return kind, errno.errorcode.get(exc.errno or 0, "?")
        try:  # a sealed memfd may open, but never takes a byte
            os.write(wfd, b"\0")
            return kind, "WRITTEN"
        except OSError as exc:
            return kind, errno.errorcode.get(exc.errno or 0, "?")
        finally:
            os.close(wfd)
    finally:
        os.close(fd)


def test_long_exec_runs_no_host_executable(guest) -> None:
    paths, name, init_pid = guest
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vstui.cli.vserver",
            "--root",
            str(paths.root),
            name,
            "exec",
            "/bin/sleep",
            "30",
        ],  # fmt: skip
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            verdicts = {pid: exe_verdict(pid) for pid in guest_pids(init_pid)}
            if any(v and v[0] == "guest" and pid != init_pid for pid, v in verdicts.items()):
                break  # the command runs
            time.sleep(0.02)
        assert len(verdicts) >= 2, verdicts
        for pid, verdict in verdicts.items():
            assert verdict is not None and verdict[0] in SAFE, (pid, verdict)
            assert verdict[1] in ("ETXTBSY", "EPERM", "EROFS", "EACCES"), (pid, verdict)
        # vexec itself (outside the guest's PID namespace) runs from the sealed memfd
        for pid in verdicts:
            if pid != init_pid:
                status = Path(f"/proc/{pid}/status").read_text()
                ppid = int(status.split("PPid:")[1].split()[0])
                assert os.readlink(f"/proc/{ppid}/exe").startswith("/memfd:vexec")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode in (143, -15), proc.returncode  # SIGTERM forwarded to sleep


def test_exec_window_never_shows_a_host_binary(guest) -> None:
    """Race every exec's first process in the guest, as the escape probe does."""
    paths, name, init_pid = guest
    want = pid_ns(init_pid)
    caught: dict[int, tuple[str, str] | None] = {}
    execs = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            " ; ".join(
                [f"{sys.executable} -m vstui.cli.vserver --root {paths.root} {name} exec /bin/true"]
                * 15
            ),
        ],  # fmt: skip
        cwd=REPO,
    )
    known = set(os.listdir("/proc"))
    while execs.poll() is None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or entry in known:
                continue
            known.add(entry)
            try:
                if pid_ns(entry) != want:
                    continue
            except OSError:
                continue
            caught[int(entry)] = exe_verdict(int(entry))
    assert execs.returncode == 0
    for pid, verdict in caught.items():
        if verdict is not None:
            assert verdict[0] in SAFE, (pid, verdict)
            assert verdict[1] != "WRITTEN", (pid, verdict)


def test_exec_joins_every_cgroup_of_init(guest) -> None:
    paths, name, init_pid = guest
    theirs = Path(f"/proc/{init_pid}/cgroup").read_text()
    out = ok(vserver(paths, name, "exec", "/bin/sh", "-c", "cat /proc/self/cgroup"))
    inside = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in out.splitlines()}
    assert set(inside.values()) == {"/"}, inside  # cgroup namespace root = init's cgroups
    assert "" in inside and len(inside) == len(theirs.splitlines())


def test_exec_status_user_and_missing_command(guest) -> None:
    paths, name, _ = guest
    assert vserver(paths, name, "exec", "/bin/sh", "-c", "exit 7").returncode == 7
    assert vserver(paths, name, "exec", "/bin/sh", "-c", "kill -KILL $$").returncode == 137
    missing = vserver(paths, name, "exec", "/no/such")
    assert missing.returncode == 127 and "/no/such" in missing.stderr
    out = ok(
        vserver(paths, name, "suexec", "nobody", "/bin/sh", "-c", "id -u; cat /proc/self/status")
    )
    assert out.splitlines()[0] == "65534"
    status = dict(line.split(":", 1) for line in out.splitlines()[1:] if ":" in line)
    assert int(status["CapEff"].strip(), 16) == 0
    assert int(status["CapInh"].strip(), 16) == 0 and int(status["CapAmb"].strip(), 16) == 0
    # not a session of the caller: a new one, with no controlling terminal
    out = ok(vserver(paths, name, "exec", "/bin/sh", "-c", "cut -d' ' -f6,7 /proc/self/stat"))
    sid, tty_nr = out.split()
    assert tty_nr == "0" and sid != "0"
