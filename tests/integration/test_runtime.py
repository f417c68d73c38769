"""Real guests through the CLI: start, isolation, exec, stop (issue 3).

Every test builds its own skeleton guest under the ``vroot`` root, drives
``python -m vstui.cli.vserver --root ROOT ...`` and stops it again; the
fixture fails the test if a process, mount, cgroup or link is left.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine.config import update_config
from engine.paths import Paths
from engine.runtime import state

pytestmark = [pytest.mark.root, pytest.mark.slow]

CAPS_DEFAULT_MASK = 0x144C04FF  # engine.caps.DEFAULT_GUEST_CAPS as CapBnd


def vserver(paths: Paths, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rc={result.returncode} {result.stderr}{result.stdout}"
    return result.stdout


def unique(prefix: str = "g") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def build(paths: Paths, values: dict[str, str] | None = None, name: str | None = None) -> str:
    name = name or unique()
    ok(vserver(paths, name, "build", "-m", "skeleton", "--hostname", f"{name}.test"))
    if values:
        update_config(paths, name, values)
    return name


def sh(paths: Paths, name: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return vserver(paths, name, "exec", "/bin/sh", "-c", script, timeout=timeout)


class Guest:
    """A started guest that is always stopped again."""

    def __init__(self, paths: Paths, values: dict[str, str] | None = None) -> None:
        self.paths = paths
        self.name = build(paths, values)

    def __enter__(self) -> Guest:
        ok(vserver(self.paths, self.name, "start"))
        return self

    def __exit__(self, *exc: object) -> None:
        vserver(self.paths, self.name, "stop", timeout=120)

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh(self.paths, self.name, script, timeout)

    @property
    def init_pid(self) -> int | None:
        ident = state.init_identity(self.paths, self.name)
        return ident[0] if ident else None


def cgroup_dirs(paths: Paths) -> list[str]:
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        base = hierarchy / paths.cgroup_base
        if base.exists():
            found += [str(p) for p in base.rglob("*") if p.is_dir()] + [str(base)]
    return sorted(found)


def mounts(paths: Paths) -> list[str]:
    """The host's mounts under this test's root (other roots' come and go beside it)."""
    with open("/proc/self/mountinfo") as f:
        found = (line.split()[3:5] for line in f)
        return sorted(" ".join(m) for m in found if m[1].startswith(str(paths.root)))


# -- lifecycle and isolation ---------------------------------------------------------------


def test_start_exec_isolation_stop(vroot: Paths) -> None:
    marker = vroot.root / "host-secret"
    marker.write_text("secret\n")
    with Guest(vroot, {"S_HOSTNAME": "iso.test"}) as g:
        status = vserver(vroot, g.name, "status")
        assert status.returncode == 0
        assert f"Vserver '{g.name}' is running at context '" in status.stdout
        assert "Number of processes: " in status.stdout and "Uptime: " in status.stdout
        ok(vserver(vroot, g.name, "running"))

        # PID 1 is the guest's own init; /proc lists only the guest's processes
        out = ok(g.sh("readlink /proc/1/exe; cat /proc/1/comm; ls /proc | grep -c '^[0-9]'"))
        exe, comm, count = out.split()
        assert exe == "/run/.vinit" and comm == ".vinit"
        assert int(count) <= 6
        assert ok(g.sh("hostname")).strip() == "iso.test"
        assert ok(g.sh("echo $container; cat /run/systemd/container")).split() == ["vstui"] * 2

        # capability sets: exactly the configured bounding set, nothing inheritable
        status_lines = ok(g.sh("grep -E '^Cap(Bnd|Inh|Amb|Eff)' /proc/self/status"))
        caps = dict(line.split(":") for line in status_lines.splitlines())
        assert int(caps["CapBnd"], 16) == CAPS_DEFAULT_MASK
        assert int(caps["CapEff"], 16) == CAPS_DEFAULT_MASK
        assert int(caps["CapInh"], 16) == 0 and int(caps["CapAmb"], 16) == 0
        init_bnd = ok(g.sh("grep CapBnd /proc/1/status")).split()[1]
        assert int(init_bnd, 16) == CAPS_DEFAULT_MASK

        # no mounting, no kernel secrets, no writes to kernel tunables
        res = g.sh("mkdir -p /mnt/t; mount -t tmpfs x /mnt/t")
        assert res.returncode != 0 and "ermission denied" in res.stderr + res.stdout
        assert ok(g.sh("head -c 16 /proc/kcore | wc -c")).strip() == "0"
        assert g.sh("head -c 1 /proc/sysrq-trigger").stdout == ""
        assert g.sh("echo h > /proc/sysrq-trigger").returncode != 0
        assert g.sh("echo 1 > /proc/sys/kernel/panic").returncode != 0
        assert g.sh("echo x > /sys/kernel/uevent_helper").returncode != 0
        assert g.sh("echo |tee /sys/kernel/mm/transparent_hugepage/enabled").returncode != 0

        # host processes and files are out of reach
        host_pid = os.getpid()
        assert g.sh(f"kill -0 {host_pid}").returncode != 0
        assert g.sh(f"test -e /proc/{host_pid}/status").returncode != 0 or host_pid < 10
        assert g.sh(f"cat {marker}").returncode != 0
        assert g.sh(f"ls {vroot.root}").returncode != 0
        assert ok(g.sh("cat /proc/self/cgroup | grep -c ':/$'")).strip() != "0"

        # a SysV shm segment of the host is invisible inside
        libc = ctypes.CDLL(None, use_errno=True)
        shmid = libc.shmget(0, 4096, 0o600 | 0o1000)  # IPC_PRIVATE, IPC_CREAT
        assert shmid >= 0
        try:
            inside = ok(g.sh("ipcs -m"))
            assert str(shmid) not in inside.split()
        finally:
            libc.shmctl(shmid, 0, None)  # IPC_RMID

    stopped = vserver(vroot, g.name, "status")
    assert stopped.returncode == 3 and f"Vserver '{g.name}' is stopped" in stopped.stdout
    assert vserver(vroot, g.name, "running").returncode == 1
    assert not vroot.run_dir(g.name).exists()
    assert cgroup_dirs(vroot) == []


def test_status_json_and_exec_status(vroot: Paths) -> None:
    with Guest(vroot) as g:
        import json

        data = json.loads(ok(vserver(vroot, g.name, "status", "--json")))
        assert data["running"] and data["init_pid"] == g.init_pid and data["xid"] >= 2
        assert data["processes"] >= 1 and "stats" in data
        assert g.sh("exit 7").returncode == 7
        assert g.sh("kill -TERM $$").returncode == 128 + signal.SIGTERM
        missing = vserver(vroot, g.name, "exec", "/no/such/program")
        assert missing.returncode == 127
        assert ok(vserver(vroot, g.name, "suexec", "nobody", "id", "-u")).strip() == "65534"
        again = vserver(vroot, g.name, "start")
        assert again.returncode == 0 and f"vserver '{g.name}' already running" in again.stderr
    second = vserver(vroot, g.name, "stop")
    assert second.returncode == 0 and "is not running" in second.stderr
    assert vserver(vroot, g.name, "exec", "true").returncode != 0


# -- limits --------------------------------------------------------------------------------


def test_nproc_fork_bomb_is_bounded(vroot: Paths) -> None:
    import json

    values = {"ULIMIT": "-H -u 100", "S_FLAGS": "nproc"}
    with Guest(vroot, values) as g:
        bomb = "sleep 60 >/dev/null 2>&1 &"
        script = f"i=0; while [ $i -lt 300 ]; do {bomb} i=$((i+1)); done 2>/dev/null; echo done"
        g.sh(script, timeout=120)  # dash gives up at its first failed fork
        data = json.loads(ok(vserver(vroot, g.name, "status", "--json")))
        assert 90 <= data["processes"] <= 100
        assert data["stats"]["pids_limit"] == 100


def test_memory_limit_kills_inside_only(vroot: Paths) -> None:
    with Guest(vroot, {"V_MEMORY": "64M"}) as g:
        init = g.init_pid
        res = g.sh("python3 -c 'b = bytearray(300 * 1024 * 1024); print(len(b))'", timeout=120)
        assert res.returncode == 128 + signal.SIGKILL
        assert g.init_pid == init
        assert ok(g.sh("echo alive")).strip() == "alive"


def test_nice_floor(vroot: Paths) -> None:
    with Guest(vroot, {"S_NICE": "10"}) as g:
        assert ok(g.sh("nice")).strip() == "10"
        res = g.sh("nice -n -5 nice")
        assert res.returncode != 0 or int(res.stdout.split()[-1]) >= 10
        assert int(ok(g.sh("cut -d' ' -f19 /proc/1/stat"))) == 10


# -- reboot, halt, supervisor death -----------------------------------------------------------

REBOOT = "python3 -c 'import ctypes; ctypes.CDLL(None).reboot({cmd})'"
LINUX_REBOOT_CMD_RESTART = 0x01234567
LINUX_REBOOT_CMD_HALT = 0xCDEF0123


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_reboot_restarts_and_halt_stops(vroot: Paths) -> None:
    with Guest(vroot) as g:
        first = g.init_pid
        g.sh(REBOOT.format(cmd=LINUX_REBOOT_CMD_RESTART))
        assert wait_for(lambda: g.init_pid not in (None, first))
        assert ok(g.sh("hostname")).strip() == f"{g.name}.test"
        g.sh(REBOOT.format(cmd=LINUX_REBOOT_CMD_HALT))
        assert wait_for(lambda: not vroot.run_dir(g.name).exists())
        assert vserver(vroot, g.name, "status").returncode == 3
        log = vroot.log_file(g.name).read_text()
        assert "rebooting" in log and log.count("started, init pid") == 2


def test_supervisor_death_leaves_guest_manageable(vroot: Paths) -> None:
    with Guest(vroot) as g:
        run = state.read(vroot, g.name)
        assert run.supervisor_pid
        os.kill(run.supervisor_pid, signal.SIGKILL)
        assert wait_for(lambda: state.read(vroot, g.name).supervisor_pid is None)
        assert state.read(vroot, g.name).init_pid == run.init_pid
        assert ok(vserver(vroot, g.name, "status"))
        assert ok(g.sh("hostname")).strip() == f"{g.name}.test"
        ok(vserver(vroot, g.name, "stop"))
        assert not vroot.run_dir(g.name).exists()
        assert cgroup_dirs(vroot) == []
        assert not state.alive(run.init_pid, None)


def test_failed_start_leaves_nothing(vroot: Paths) -> None:
    name = build(vroot)
    before_mounts, before_cgroups = mounts(vroot), cgroup_dirs(vroot)
    tree = vroot.guest_root(name)
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    res = vserver(vroot, name, "start")
    assert res.returncode == 1 and "missing" in res.stderr and res.stderr.count("\n") == 1
    assert mounts(vroot) == before_mounts and cgroup_dirs(vroot) == before_cgroups
    assert not vroot.run_dir(name).exists()


def test_failure_inside_the_namespaces_leaves_nothing(vroot: Paths) -> None:
    # a bad V_MOUNT fails in the guest's PID 1, after cgroup and network exist
    name = build(vroot, {"V_MOUNT": "none:/mnt/bad:nosuchfs"})
    before_mounts, before_cgroups = mounts(vroot), cgroup_dirs(vroot)
    res = vserver(vroot, name, "start")
    assert res.returncode == 1 and "/mnt/bad" in res.stderr
    assert mounts(vroot) == before_mounts and cgroup_dirs(vroot) == before_cgroups
    assert not vroot.run_dir(name).exists()
    assert vserver(vroot, name, "status").returncode == 3


def test_barrier_is_enforced(vroot: Paths) -> None:
    name = build(vroot)
    os.chmod(vroot.vservers_dir, 0o755)
    res = vserver(vroot, name, "start")
    assert res.returncode == 1 and "chmod 000" in res.stderr
    os.chmod(vroot.vservers_dir, 0)


# -- enter, private, concurrency ----------------------------------------------------------------


def test_enter_through_a_pty(vroot: Paths) -> None:
    import pty

    with Guest(vroot) as g:
        cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(vroot.root), g.name,
               "enter"]  # fmt: skip
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(sys.executable, cmd)
        output = b""

        def read_until(needle: bytes, timeout: float = 20) -> None:
            nonlocal output
            deadline = time.monotonic() + timeout
            while needle not in output and time.monotonic() < deadline:
                import select

                if select.select([fd], [], [], 0.2)[0]:
                    try:
                        output += os.read(fd, 4096)
                    except OSError:
                        break
            assert needle in output, output

        read_until(b"# ")  # the shell's prompt
        os.write(fd, b"echo RE''ADY; hostname; tty\n")
        read_until(b"READY\r\n" + f"{g.name}.test".encode())
        read_until(b"/dev/pts/0")
        os.write(fd, b"exit 3\n")
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        assert os.WEXITSTATUS(status) == 3


def test_private_guest_refuses_enter_and_exec(vroot: Paths) -> None:
    with Guest(vroot, {"S_FLAGS": "private"}) as g:
        for args in (("exec", "true"), ("enter",), ("suexec", "root", "true")):
            res = vserver(vroot, g.name, *args, stdin=subprocess.DEVNULL)
            assert res.returncode == 1 and "private" in res.stderr


def test_two_concurrent_starts(vroot: Paths) -> None:
    name = build(vroot)
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(vroot.root), name, "start"]
    try:
        procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(60), p.stderr.read()) for p in procs]
        assert [rc for rc, _ in results] == [0, 0]
        said = [err for _, err in results if "already running" in err]
        assert len(said) == 1
        assert state.read(vroot, name).running
    finally:
        ok(vserver(vroot, name, "stop"))


def test_onboot_in_priority_order(vroot: Paths) -> None:
    late = build(vroot, {"ONBOOT": "yes", "PRIORITY": "20"})
    early = build(vroot, {"ONBOOT": "yes", "PRIORITY": "10"})
    manual = build(vroot)
    try:
        ok(vserver(vroot, "--onboot", "start"))
        runs = {n: state.read(vroot, n) for n in (late, early, manual)}
        assert runs[late].running and runs[early].running and not runs[manual].running
        assert runs[early].started <= runs[late].started
        assert runs[early].xid != runs[late].xid
    finally:
        ok(vserver(vroot, "--onboot", "stop", timeout=120))
    assert not state.read(vroot, late).running and not state.read(vroot, early).running
