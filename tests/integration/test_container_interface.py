"""What systemd's container interface asks of every guest, on plain (skeleton) guests (issue 15).

/run and /run/lock are fresh tmpfs at every start (nothing of a previous
run survives), /sys/fs/cgroup is the guest's own cgroup2 subtree below the
cgroup that carries its limits, /dev/console is a terminal whose output
reaches the console log.
"""

from __future__ import annotations

import os

import pytest

from engine.cgroups import manager
from engine.cgroups.base import PAYLOAD
from engine.paths import Paths
from tests.integration.test_runtime import Guest, ok, vserver

pytestmark = [pytest.mark.root, pytest.mark.slow]

RC_LOCAL = """\
#!/bin/sh
[ -t 1 ] && echo "rc.local writes to a terminal"
exit 0
"""


def test_run_is_fresh_at_every_start(vroot: Paths) -> None:
    g = Guest(vroot)
    on_disk = vroot.guest_root(g.name) / "run"
    (on_disk / "stale.pid").write_text("4242\n")
    with g:
        mounts = ok(g.sh("grep -E ' /run(/lock)? ' /proc/self/mountinfo"))
        assert " /run " in mounts and " /run/lock " in mounts and "tmpfs" in mounts
        assert ok(g.sh("ls -A /run")).split() == [".vinit", "lock", "systemd"]
        ok(g.sh("echo 1 > /run/marker && echo 1 > /run/lock/marker"))
    with g:
        assert "marker" not in ok(g.sh("ls -A /run /run/lock"))
    assert (on_disk / "stale.pid").read_text() == "4242\n"  # the tree itself is untouched
    assert not (on_disk / "marker").exists()


def test_the_guest_manages_its_own_cgroup_subtree_only(vroot: Paths) -> None:
    with Guest(vroot, {"V_MEMORY": "256M", "V_PIDS": "200"}) as g:
        rel = vroot.cgroup_name(g.name)
        assert ok(g.sh("cat /proc/self/cgroup | tail -1")).strip() == "0::/"
        # the guest's root may organize its processes below its root, as systemd does
        moved = ok(g.sh("mkdir /sys/fs/cgroup/svc && echo $$ > /sys/fs/cgroup/svc/cgroup.procs "
                        "&& tail -1 /proc/self/cgroup"))  # fmt: skip
        assert moved.strip() == "0::/svc"
        payload = [p / PAYLOAD for p in manager().paths(rel) if (p / PAYLOAD).is_dir()]
        assert payload and (payload[0] / "svc").is_dir()
        # ... but nothing above it: no other view of the hierarchy, no v1 controller
        denied = g.sh("mount -t cgroup2 none /mnt || mount -t cgroup -o memory none /mnt")
        assert denied.returncode != 0
        assert g.sh("ls /sys/fs/cgroup/memory /sys/fs/cgroup/pids").returncode != 0
        mountinfo = ok(g.sh("grep ' - cgroup' /proc/self/mountinfo")).splitlines()
        assert len(mountinfo) == 1 and mountinfo[0].split()[3] == "/"  # rooted at its payload
        limits = manager().stats(rel)
        assert limits.memory_limit == 256 << 20 and limits.pids_limit == 200


def test_console_is_a_terminal_logged(vroot: Paths) -> None:
    g = Guest(vroot)
    rc_local = vroot.guest_root(g.name) / "etc/rc.local"
    rc_local.write_text(RC_LOCAL)
    os.chmod(rc_local, 0o755)
    with g:
        major = ok(g.sh("stat -L -c %t /dev/console")).strip()
        assert int(major, 16) == 136  # a pty (drivers/tty/pty.c UNIX98_PTY_SLAVE_MAJOR)
        assert ok(g.sh("cat /run/systemd/container")).strip() == "vstui"
        assert "container=vstui" in ok(g.sh("tr '\\0' '\\n' < /proc/1/environ"))
    log = vroot.log_file(g.name).read_text()
    assert "rc.local writes to a terminal" in log
    assert vserver(vroot, g.name, "running").returncode == 1
