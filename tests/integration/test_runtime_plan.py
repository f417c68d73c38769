"""The runtime's pure parts: start plans, context ids, run files (no root needed)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from engine.config import load_guest, write_new_config
from engine.paths import Paths
from engine.rootfs import Bind
from engine.runtime import plan as P
from engine.runtime import runfiles, state, xid
from vstui.cli.vserver_runtime import format_uptime


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.from_root(tmp_path)


def config(paths: Paths, **values: str):
    write_new_config(paths, "web", {"S_HOSTNAME": "web.test", **values}, overwrite=True)
    return load_guest(paths, "web")


def kinds(steps, kind):
    return [s.target for s in steps if isinstance(s, kind)]


def test_default_plan(paths: Paths) -> None:
    cfg = config(paths)
    binds = [Bind(Path("/usr"), "/usr", readonly=True, recursive=True)]
    plan = P.build(cfg, "/vservers/web", binds, has_rc_local=True)
    usr = os.stat("/usr")  # its identity, which the executor checks again when it binds
    assert plan.before == (P.HostBind("/usr", "/usr", True, True, usr.st_dev, usr.st_ino),)
    assert plan.argv == (P.VINIT_PATH, "/bin/sh", "/etc/rc.local") and plan.vinit
    assert plan.hostname == "web.test" and plan.own_netns
    assert ("container", "vstui") in plan.env
    masked = kinds(plan.after, P.Mask)
    for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                 "/proc/kallsyms", "/proc/acpi", "/proc/scsi", "/proc/asound"):  # fmt: skip
        assert path in masked
    assert set(P.PROC_READONLY) <= set(kinds(plan.after, P.ReadOnly))
    mounts = {s.target: s for s in plan.after if isinstance(s, P.Mount)}
    assert mounts["/sys"].flags & P._libc.MS_RDONLY
    assert not mounts["/dev"].flags & P._libc.MS_NODEV  # device nodes must work
    assert "newinstance" in (mounts["/dev/pts"].data or "")
    assert {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/tty"} <= set(
        kinds(plan.after, P.Device)
    )
    # the network sysctls of the guest's own namespace stay writable
    assert P.Bind("/proc/sys/net", "/proc/sys/net") in plan.after
    assert plan.caps == cfg.effective_caps()


def test_plan_options(paths: Paths) -> None:
    cfg = config(paths, S_FLAGS="fakeinit", V_NETMODE="host", S_NICE="5",
                 ULIMIT="-HS -n 1024 -H -u 100", V_PROC_SHOW="/proc/sysrq-trigger",
                 V_PROC_HIDE="/proc/cpuinfo", V_MEMORY="32M")  # fmt: skip
    plan = P.build(cfg, "/t", [], has_rc_local=True)
    assert plan.argv == ("/sbin/init",) and not plan.vinit
    assert not plan.own_netns
    assert P.Bind("/proc/sys/net", "/proc/sys/net") not in plan.after
    assert "/proc/sysrq-trigger" not in kinds(plan.after, P.ReadOnly)
    assert "/proc/cpuinfo" in kinds(plan.after, P.Mask)
    assert plan.nice == 5
    assert (resource.RLIMIT_NOFILE, 1024, 1024) in plan.rlimits
    assert (resource.RLIMIT_NPROC, 100, 100) in plan.rlimits
    shm = next(s for s in plan.after if isinstance(s, P.Mount) and s.target == "/dev/shm")
    assert f"size={16 * 1024 * 1024}" in (shm.data or "")


def test_v_init_runs_under_vinit(paths: Paths) -> None:
    cfg = config(paths, V_INIT="/usr/sbin/sshd -D")
    plan = P.build(cfg, "/t", [], has_rc_local=True)
    assert plan.argv == (P.VINIT_PATH, "/usr/sbin/sshd", "-D")
    assert P.build(config(paths), "/t", [], has_rc_local=False).argv == (P.VINIT_PATH,)


def test_xid_allocation(paths: Paths) -> None:
    assert xid.assign(paths, "a", None) == 40000
    assert xid.assign(paths, "b", None, reserved={40001}) == 40002
    assert xid.assign(paths, "a", None) == 40000  # kept across restarts
    assert xid.assign(paths, "c", 77) == 77
    xid.forget(paths, "a")
    assert xid.assign(paths, "d", None) == 40000
    assert xid.allocated(paths) == {"b": 40002, "d": 40000}


def test_xid_of_uses_s_context(paths: Paths) -> None:
    config(paths, S_CONTEXT="4242")
    assert xid.xid_of(paths, "web") == 4242


def test_run_files_and_lock(paths: Paths) -> None:
    run = paths.run_dir("web")
    first = state.lock(paths, "web")
    assert not runfiles.RunLock(run).acquire(timeout=0)
    runfiles.write_value(run, "state", "running")
    runfiles.write_value(run, "init.pid", 999999)
    current = state.read(paths, "web")
    assert current.state == "stopped" and current.stale and not current.running
    state.remove(paths, "web")  # the holder may remove the directory...
    first.release()
    second = runfiles.RunLock(run)
    assert second.acquire(timeout=1)  # ...and a later locker gets a fresh file
    second.release()
    assert state.read(paths, "missing") == state.RunState("missing", "stopped")


def test_uptime_format() -> None:
    assert format_uptime(59) == "00:00"
    assert format_uptime(3 * 3600 + 7 * 60) == "03:07"
    assert format_uptime(2 * 86400 + 3600) == "2 days, 01:00"
