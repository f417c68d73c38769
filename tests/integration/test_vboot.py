"""vboot, the C executor of a guest's PID 1: its plan checks, fds and exec
directly, then its error lines and host mounts through real starts."""

from __future__ import annotations

import os
import subprocess

import pytest

from engine.paths import Paths
from engine.runtime import bootplan, child
from tests import leaks
from tests.integration.test_runtime import Guest, build, ok, vserver


@pytest.fixture(scope="module")
def vboot() -> str:
    return child.helpers_ready(("vboot",))["vboot"]


def netstrings(*fields: str | bytes) -> bytes:
    raw = [f.encode() if isinstance(f, str) else f for f in fields]
    return b"".join(b"%d:%s," % (len(f), f) for f in raw)


def run_plan(vboot: str, plan: bytes, extra_fd: int = -1) -> tuple[int, str, str]:
    """vboot PLAN_FD LOG_FD ERR_FD -1 -1: (status, error line, log)."""
    plan_fd = os.memfd_create("plan")
    os.write(plan_fd, plan)
    err_r, err_w = os.pipe()
    log_r, log_w = os.pipe()
    keep = [plan_fd, err_w, log_w, *([extra_fd] if extra_fd >= 0 else [])]
    try:
        argv = [vboot, str(plan_fd), str(log_w), str(err_w), "-1", "-1"]
        proc = subprocess.Popen(argv, pass_fds=keep, stdin=subprocess.DEVNULL)
        for fd in (plan_fd, err_w, log_w):
            os.close(fd)
        with os.fdopen(err_r) as err, os.fdopen(log_r) as log:
            status = proc.wait(30)
            return status, err.read(), log.read()
    finally:
        if extra_fd >= 0:
            os.close(extra_fd)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (b"5:umask,2:22", "boot plan: malformed at byte 8"),
        (b"3:abc;", "boot plan: malformed at byte 0"),
        (netstrings("setsid", "reboot"), "boot plan: unknown step 'reboot'"),
        (netstrings("hostbind", "/a", "/b"), "boot plan: hostbind: too few arguments"),
        (netstrings("exec", "2", "/bin/true"), "boot plan: exec: bad count"),
        (netstrings("exec", "0", "0"), "boot plan: exec: bad count"),
        (netstrings("umask", "22"), "boot plan: no exec step"),
        (netstrings("umask", "9x", "exec", "1", "/bin/true", "0"), "boot plan: '9x' is not a"),
    ],
)
def test_a_bad_plan_is_one_line_and_nothing_runs(vboot: str, plan: bytes, message: str) -> None:
    # checked as a whole before the first step: `setsid` above never runs
    status, err, _ = run_plan(vboot, plan)
    assert status == 1 and err.startswith(message) and err.count("\n") == 1, err


def test_exec_failure_names_the_program(vboot: str) -> None:
    status, err, _ = run_plan(vboot, netstrings("exec", "1", "/nonexistent/init", "0"))
    assert (status, err) == (1, "exec /nonexistent/init: No such file or directory\n")


def test_stdio_closes_every_other_fd_and_exec_gets_the_env(vboot: str) -> None:
    leaked = os.open("/dev/null", os.O_RDONLY)  # inherited, like a host fd would be
    script = "echo X=$X; ls /proc/self/fd | sort -n | tr '\\n' ' '"
    plan = netstrings("stdio", "signals", "exec", "3", "/bin/sh", "-c", script, "1", "X=one")
    status, err, log = run_plan(vboot, plan, extra_fd=leaked)
    assert status == 0 and err == ""
    lines = log.splitlines()
    assert lines[0] == "X=one"
    assert lines[1].split() == ["0", "1", "2", "3"]  # 3: ls's own directory


def test_serialized_plan_parses_in_c(vboot: str) -> None:
    """A whole real plan passes vboot's checks: only its first step fails here."""
    from engine.runtime import plan as P

    plan = P.StartPlan(name="web", root="/nonexistent/tree", before=(P.HostBind("/usr", "/usr"),),
                       after=(P.File("/x", b"a,\0b"),), hostname="h", domainname=None,
                       own_netns=True, rlimits=((7, -1, -1),), nice=3, caps=frozenset({"KILL"}),
                       argv=("/sbin/init",), env=(("A", "b"),), vinit=True)  # fmt: skip
    data = bootplan.serialize(plan).replace(b"6:setsid,", b"")  # keep the test's session
    status, err, _ = run_plan(vboot, data)
    assert status == 1 and err.startswith("bind guest tree /nonexistent/tree: "), err


# -- through real starts ------------------------------------------------------------------


def refused(paths: Paths, name: str) -> str:
    res = vserver(paths, name, "start")
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert leaks.mounts(paths) == []
    return res.stderr


@pytest.mark.root
def test_error_lines_keep_their_wording(vroot: Paths) -> None:
    name = build(vroot, {"V_MOUNT": "tmpfs:/srv/plain/deeper:tmpfs"})
    tree = vroot.guest_root(name)
    (tree / "srv").mkdir(exist_ok=True)
    (tree / "srv/plain").write_text("a file, not a directory\n")
    assert "mount target /srv/plain/deeper: Not a directory" in refused(vroot, name)

    name = build(vroot, {"S_FLAGS": "fakeinit"})
    tree = vroot.guest_root(name)
    sbin = tree / "sbin"
    if sbin.is_symlink():  # usr/sbin, the host's: an empty /sbin instead
        sbin.unlink()
    sbin.mkdir(exist_ok=True)
    (sbin / "init").unlink(missing_ok=True)
    assert "start: exec /sbin/init: No such file or directory" in refused(vroot, name)

    name = build(vroot)
    tree = vroot.guest_root(name)
    (tree / "run").rmdir()
    os.symlink("/tmp", tree / "run")
    message = "guest tree: /run is not a directory; make it a plain directory"
    assert message in refused(vroot, name)


@pytest.mark.root
def test_read_only_host_mount_and_its_data(vroot: Paths) -> None:
    with Guest(vroot, {"V_MOUNT": "tmpfs:/mnt/ro:tmpfs:ro,size=1m,mode=0751"}) as g:
        out = ok(g.sh("stat -c %a /mnt/ro; touch /mnt/ro/x 2>&1; grep ' /mnt/ro ' /proc/mounts"))
        lines = out.splitlines()
        assert lines[0] == "751"  # the data reached mount(2)
        assert "Read-only file system" in lines[1]
        assert " ro," in lines[2] and "size=1024k" in lines[2]
