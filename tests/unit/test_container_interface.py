"""The container interface systemd documents, as start plan steps (issue 15; no root).

Every guest: fresh tmpfs /run and /run/lock, its own cgroup2 tree at
/sys/fs/cgroup (not a masked, empty directory), /dev/console a terminal.
A guest booting its own init also gets the notify socket; /tmp is a tmpfs
when its systemd would mount one.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine import _libc
from engine.runtime import bootplan, netstrings
from engine.runtime import plan as P
from tests.unit.test_bootplan import PROGRAM, default_plan

NOTIFY = "/run/vservers/web/notify"


def mounts(plan: P.StartPlan) -> dict[str, P.Mount]:
    return {s.target: s for s in plan.after if isinstance(s, P.Mount)}


def test_every_guest_gets_run_run_lock_and_its_cgroup_tree(tmp_path: Path) -> None:
    plan = default_plan(tmp_path)
    found = mounts(plan)
    assert found["/run"].fstype == "tmpfs" and "mode=755" in found["/run"].data
    assert found["/run/lock"].fstype == "tmpfs" and "mode=1777" in found["/run/lock"].data
    assert found["/sys/fs/cgroup"].fstype == "cgroup2"
    assert not found["/sys/fs/cgroup"].flags & _libc.MS_RDONLY  # the guest's init manages it
    assert P.Mask("/sys/fs/cgroup") not in plan.after
    # /run is mounted before anything is written there (vinit, /run/systemd/container)
    order = [getattr(s, "target", None) for s in plan.after]
    assert order.index("/run") < order.index("/run/systemd/container")
    assert P.Console("/dev/console") in plan.after
    assert P.Bind("/dev/null", "/dev/console") not in plan.after
    assert ("container", "vstui") in plan.env and "NOTIFY_SOCKET" not in dict(plan.env)
    assert "/tmp" not in found


def test_run_is_sized_by_the_memory_limit(tmp_path: Path) -> None:
    found = mounts(default_plan(tmp_path, V_MEMORY="256M"))
    assert f"size={64 << 20}" in found["/run"].data


def test_without_cgroup2_the_path_stays_masked(tmp_path: Path) -> None:
    plan = default_plan(tmp_path, P.Facts(cgroup2=False))
    assert P.Mask("/sys/fs/cgroup") in plan.after and "/sys/fs/cgroup" not in mounts(plan)


def test_an_own_init_gets_the_notify_socket_and_tmp_when_its_systemd_wants_it(
    tmp_path: Path,
) -> None:
    facts = P.Facts(meminfo_view="/run/vservers/web/meminfo", notify=NOTIFY, tmp=True)
    plan = default_plan(tmp_path, facts, S_FLAGS="lock fakeinit")
    assert plan.argv == ("/sbin/init",)
    assert dict(plan.env)["NOTIFY_SOCKET"] == "/run/host/notify"
    views = [s for s in plan.after if isinstance(s, P.View)]
    assert views == [P.View("/run/vservers/web/meminfo", "/proc/meminfo"),
                     P.View(NOTIFY, "/run/host/notify")]  # fmt: skip
    assert mounts(plan)["/tmp"].data.startswith("mode=1777,size=50%")
    # the host side opens every view (B, maybe the guest's root, could not reach the
    # run directory); B attaches them after pivot_root, in plan order
    boot = bootplan.serialize(plan, PROGRAM)
    host = bootplan.HostSide(barrier="/vservers", run_dir="/run/vservers/web", xid=40000,
                             cgroup_ops=[], joins=[], run_files=[], ns_flags=0x20000,
                             timens=False, vinit=None)  # fmt: skip
    start = netstrings.ops(bootplan.serialize_start(plan, host, boot), bootplan.START_OPS)
    fields = netstrings.ops(boot, bootplan.BOOT_OPS)
    names = [name for name, _ in fields]
    opened = [args[0] for name, args in start if name == "view"]
    attached = [args[0] for name, args in fields if name == "viewmount"]
    assert opened == [b"/run/vservers/web/meminfo", NOTIFY.encode()]
    assert attached == [b"/proc/meminfo", b"/run/host/notify"]
    assert names.index("pivot") < names.index("viewmount")


def test_vinit_guests_get_no_notify_socket(tmp_path: Path) -> None:
    plan = default_plan(tmp_path, P.Facts(notify=NOTIFY))
    assert plan.vinit and "NOTIFY_SOCKET" not in dict(plan.env)
    assert not any(isinstance(s, P.View) for s in plan.after)


def test_tmp_facts_follow_the_guests_units(tmp_path: Path) -> None:
    from engine.rootfs import guestinit

    wants = tmp_path / "usr/lib/systemd/system/local-fs.target.wants"
    wants.mkdir(parents=True)
    assert not guestinit.wants_tmpfs_tmp(guestinit.tmp_facts(tmp_path))  # bookworm
    os.symlink("../tmp.mount", wants / "tmp.mount")  # trixie
    assert guestinit.wants_tmpfs_tmp(guestinit.tmp_facts(tmp_path))
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    os.symlink("/dev/null", tmp_path / "etc/systemd/system/tmp.mount")  # masked, dangling here
    facts = guestinit.tmp_facts(tmp_path)
    assert not guestinit.wants_tmpfs_tmp(facts)
    assert ("/etc/systemd/system/tmp.mount", True) in facts
