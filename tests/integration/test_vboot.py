"""vboot and boot.h, the C executors of a start: their plan checks, the checked
binds, fds and exec directly, then their error lines and host mounts through
real starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine import _libc
from engine.helpers import require
from engine.paths import Paths
from engine.runtime import bootplan
from engine.runtime import netstrings as ns
from tests import leaks
from tests.integration.test_runtime import Guest, build, ok, vserver

pytestmark = pytest.mark.root
FLAGS = _libc.CLONE_NEWNS | _libc.CLONE_NEWPID | _libc.CLONE_NEWIPC | _libc.CLONE_NEWUTS


@pytest.fixture(scope="module")
def vboot() -> str:
    return require("vboot")["vboot"]


def netstrings(*fields: str | bytes) -> bytes:
    return b"".join(ns.encode(f.encode() if isinstance(f, str) else f) for f in fields)


def run_start(vboot: str, plan: bytes, tmp: Path, extra_fd: int = -1) -> tuple[str, str]:
    """vboot on a start plan, no controller: (its report line, what B wrote on the console)."""
    plan_fd = os.memfd_create("plan")
    os.write(plan_fd, plan)
    report_r, report_w = os.pipe()
    log_r, log_w = os.pipe()
    keep = [plan_fd, report_w, log_w, *([extra_fd] if extra_fd >= 0 else [])]
    argv = [vboot, str(plan_fd), str(report_w), "-1", str(log_w), str(os.getpid())]
    try:
        proc = subprocess.Popen(argv, pass_fds=keep, stdin=subprocess.DEVNULL)
        for fd in (plan_fd, report_w, log_w):
            os.close(fd)
        with os.fdopen(report_r) as report, os.fdopen(log_r) as log:
            proc.wait(30)
            return report.read().strip(), log.read()
    finally:
        if extra_fd >= 0:
            os.close(extra_fd)


def run_boot(vboot: str, boot: bytes, tmp: Path, extra_fd: int = -1) -> tuple[str, str]:
    """A boot plan (boot.h) run as B of a minimal start in new namespaces."""
    start = netstrings("identity", str(tmp), "t", "40000", "unshare", f"{FLAGS:x}", "boot", boot)
    return run_start(vboot, start, tmp, extra_fd)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (b"5:umask,2:22", "boot plan: malformed"),
        (b"3:abc;", "boot plan: malformed"),
        (netstrings("setsid", "reboot"), "boot plan: bad step 'reboot'"),
        (netstrings("hostbind", "/a", "/b"), "boot plan: bad step 'hostbind'"),
        (netstrings("exec", "2", "/bin/true"), "boot plan: bad step 'exec'"),
        (netstrings("exec", "0", "0"), "boot plan: exec without a command"),
        (netstrings("umask", "22"), "boot plan: no exec step"),
        (netstrings("umask", "9x", "exec", "1", "/bin/true", "0"), "boot plan: '9x' is not a"),
    ],
)
def test_a_bad_plan_is_one_line_and_nothing_runs(
    vboot: str, plan: bytes, message: str, tmp_path: Path
) -> None:
    # checked as a whole before the first step: `setsid` above never runs
    report, _ = run_boot(vboot, plan, tmp_path)
    assert report.startswith(f"error {message}") and "\n" not in report, report
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the run records are undone


def test_a_bad_start_plan_is_refused_before_anything(vboot: str, tmp_path: Path) -> None:
    report, _ = run_start(vboot, netstrings("identity", str(tmp_path), "t"), tmp_path)
    assert report == "error start plan: bad op 'identity'"
    no_mount_ns = netstrings("identity", str(tmp_path), "t", "1", "boot", "")
    assert run_start(vboot, no_mount_ns, tmp_path)[0].endswith("no mount namespace")
    assert list(tmp_path.iterdir()) == []


def test_exec_failure_names_the_program(vboot: str, tmp_path: Path) -> None:
    report, _ = run_boot(vboot, netstrings("exec", "1", "/nonexistent/init", "0"), tmp_path)
    assert report == "error exec /nonexistent/init: No such file or directory"


def test_stdio_closes_every_other_fd_and_exec_gets_the_env(vboot: str, tmp_path: Path) -> None:
    leaked = os.open("/dev/null", os.O_RDONLY)  # inherited, like a host fd would be
    script = "echo X=$X; ls /proc/self/fd | sort -n | tr '\\n' ' '"
    plan = netstrings("stdio", "signals", "exec", "3", "/bin/sh", "-c", script, "1", "X=one")
    report, log = run_boot(vboot, plan, tmp_path, extra_fd=leaked)
    assert report.startswith("ok ")
    lines = log.splitlines()
    assert lines[0] == "X=one"
    assert lines[1].split() == ["0", "1", "2", "3"]  # 3: ls's own directory
    assert (tmp_path / "state").read_text() == "running\n"  # the run records


def test_serialized_plan_parses_in_c(vboot: str, tmp_path: Path) -> None:
    """A whole real plan passes the checks: only its first step fails here."""
    from engine.runtime import plan as P

    plan = P.StartPlan(name="web", root="/nonexistent/tree", before=(P.HostBind("/usr", "/usr"),),
                       after=(P.File("/x", b"a,\0b"),), hostname="h", domainname=None,
                       own_netns=True, rlimits=((7, -1, -1),), nice=3, caps=frozenset({"KILL"}),
                       argv=("/sbin/init",), env=(("A", "b"),), vinit=True)  # fmt: skip
    data = bootplan.serialize(plan, bytes(8)).replace(b"6:setsid,", b"")  # the test's session
    report, _ = run_boot(vboot, data, tmp_path)
    assert report == "error source /nonexistent/tree: No such file or directory", report


def checked_bind_plan(root: Path, source: Path) -> bytes:
    """root, then a bind of source (with its identity now), then a harmless exec."""
    r, s = root.stat(), source.stat()
    return netstrings("root", str(root), str(r.st_dev), str(r.st_ino),
                      "hostbind", str(source), str(s.st_dev), str(s.st_ino), "/mnt", "1", "1",
                      "exec", "1", "/bin/true", "0")  # fmt: skip


@pytest.mark.parametrize("swap", ["symlink", "parent_symlink", "other_dir"])
def test_a_bind_source_changed_after_planning_is_refused(
    vboot: str, tmp_path: Path, swap: str
) -> None:
    # the plan was made (identities taken); then the source changes before it runs
    root, share, secret = tmp_path / "tree", tmp_path / "srv/s/sub", tmp_path / "etc/sub"
    for d in (root, share, secret):
        d.mkdir(parents=True)
    plan = checked_bind_plan(root, share)
    if swap == "symlink":
        share.rename(tmp_path / "srv/s/old")
        share.symlink_to(secret)
    elif swap == "parent_symlink":
        (tmp_path / "srv/s").rename(tmp_path / "srv/old")
        (tmp_path / "srv/s").symlink_to(tmp_path / "etc")
    else:
        share.rename(tmp_path / "srv/s/old")
        share.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report, _ = run_boot(vboot, plan, run_dir)
    expected = "a component is a symlink now" if "symlink" in swap else "not the directory"
    assert report.startswith(f"error source {share}: {expected}"), report


def test_an_unchanged_bind_source_is_bound_read_only(vboot: str, tmp_path: Path) -> None:
    root, share = tmp_path / "tree", tmp_path / "share"
    for d in (root, share, tmp_path / "run"):
        d.mkdir()
    r, s = root.stat(), share.stat()
    script = f"touch {root}/mnt/x 2>&1; stat -c %i {root}/mnt"  # in B's mount namespace
    plan = netstrings("root", str(root), str(r.st_dev), str(r.st_ino),
                      "hostbind", str(share), str(s.st_dev), str(s.st_ino), "/mnt", "1", "1",
                      "stdio", "exec", "3", "/bin/sh", "-c", script, "0")  # fmt: skip
    report, log = run_boot(vboot, plan, tmp_path / "run")
    assert report.startswith("ok "), report
    assert "Read-only file system" in log
    assert log.split()[-1] == str(s.st_ino)  # the share itself is on /mnt
    assert not (share / "x").exists() and not (root / "mnt" / "x").exists()


# -- through real starts ------------------------------------------------------------------


def refused(paths: Paths, name: str) -> str:
    res = vserver(paths, name, "start")
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert leaks.mounts(paths) == []
    return res.stderr


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


def test_read_only_host_mount_and_its_data(vroot: Paths) -> None:
    with Guest(vroot, {"V_MOUNT": "tmpfs:/mnt/ro:tmpfs:ro,size=1m,mode=0751"}) as g:
        out = ok(g.sh("stat -c %a /mnt/ro; touch /mnt/ro/x 2>&1; grep ' /mnt/ro ' /proc/mounts"))
        lines = out.splitlines()
        assert lines[0] == "751"  # the data reached mount(2)
        assert "Read-only file system" in lines[1]
        assert " ro," in lines[2] and "size=1024k" in lines[2]
