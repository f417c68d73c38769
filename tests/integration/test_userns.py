"""Issue 16: every guest in its own user namespace, with its own block of host ids.

These run real guests with the setting each test names (V_USERNS explicitly),
so they mean the same in both guest modes; each runs once, in the mode it is
about (``pytest.mark.guest_mode``).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from engine.paths import Paths
from engine.runtime import idmap, state
from tests.integration.test_runtime import Guest, ok, vserver

pytestmark = [pytest.mark.root, pytest.mark.slow]

PY = "/usr/bin/python3"


USERNS = pytest.mark.guest_mode("userns")


def host_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def uid_map(g: Guest) -> list[int]:
    return [int(w) for w in ok(g.sh("cat /proc/self/uid_map")).split()]


@USERNS
def test_default_guest_maps_its_own_block(vroot: Paths) -> None:
    with Guest(vroot, {"V_USERNS": "yes"}) as g:
        inside, base, count = uid_map(g)
        assert (inside, count) == (0, 65536)
        assert base % 65536 == 0 and 524288 <= base and base + count - 1 < 2**31
        assert host_uid(g.init_pid) == base  # init runs as the block's first host id
        assert ok(g.sh("stat -c %u /usr/bin/env /")).split() == ["0", "0"]
        assert ok(g.sh("echo s > /root/made-inside; stat -c %u /root/made-inside")) == "0\n"
        made = vroot.guest_root(g.name) / "root/made-inside"
        assert made.stat().st_uid == 0  # on disk too: the tree is idmapped, never chowned
        assert ok(g.sh("id -u; cat /proc/1/status")).startswith("0\n")


@USERNS
def test_dev_is_a_host_made_tmpfs_the_guest_cannot_change(vroot: Paths) -> None:
    """/dev: a tmpfs made on the host side with the device nodes (the guest may make
    none), idmapped: its nodes are root's inside, and its options are not the guest's."""
    with Guest(vroot, {"V_USERNS": "yes"}) as g:
        nodes = ok(g.sh("stat -c '%n %u %F %t:%T %a' /dev/null /dev/zero /dev/tty")).split("\n")
        assert nodes[:3] == ["/dev/null 0 character special file 1:3 666",
                             "/dev/zero 0 character special file 1:5 666",
                             "/dev/tty 0 character special file 5:0 666"]  # fmt: skip
        assert ok(g.sh("echo x > /dev/null && head -c 3 /dev/zero | wc -c")) == "3\n"
        dev = next(line for line in ok(g.sh("cat /proc/self/mountinfo")).splitlines()
                   if line.split()[4] == "/dev")  # fmt: skip
        assert "idmapped" in dev and "nosuid" in dev and "noexec" in dev and "nodev" not in dev
        # the guest's root makes files there (root's inside and in the tmpfs), no device
        assert ok(g.sh("touch /dev/made; stat -c %u /dev/made")) == "0\n"
        refused = g.sh("mknod /dev/mem c 1 1 || mount -o remount,size=64m /dev || umount /dev")
        assert refused.returncode != 0 and "/dev/mem" not in ok(g.sh("ls /dev"))


@USERNS
def test_blocks_are_disjoint_and_kept_across_restarts(vroot: Paths) -> None:
    with Guest(vroot, {"V_USERNS": "yes"}) as a, Guest(vroot, {"V_USERNS": "yes"}) as b:
        first_a, first_b = uid_map(a)[1], uid_map(b)[1]
        assert abs(first_a - first_b) >= 65536
        for g, first in ((a, first_a), (b, first_b)):
            ok(vserver(vroot, g.name, "restart"))
            assert uid_map(g)[1] == first
        # registered for the host's other tools, under the dedicated owner
        subuid = (vroot.root / "etc/subuid").read_text().splitlines()
        assert f"vstui:{first_a}:65536" in subuid and f"vstui:{first_b}:65536" in subuid
        assert f"vs-{a.name}:x:{first_a}:" in (vroot.root / "etc/passwd").read_text()


@USERNS
def test_xid_names_the_block(vroot: Paths) -> None:
    with Guest(vroot, {"V_USERNS": "yes", "S_CONTEXT": "40123"}) as g:
        assert uid_map(g)[1] == (40123 - 40000 + 8) * 65536
        status = ok(vserver(vroot, g.name, "status", "--json"))
        assert f'"base": {(40123 - 40000 + 8) * 65536}' in status


@USERNS
def test_init_holds_no_mount_namespace_of_the_host(vroot: Paths) -> None:
    """A keeps its host-side mount namespace open until it exits (start.h a_mnt_ns);
    the guest's init never inherits that descriptor."""
    with Guest(vroot, {"V_USERNS": "yes"}) as g:
        fds = Path(f"/proc/{g.init_pid}/fd")
        assert not [f for f in fds.iterdir() if os.readlink(f).startswith("mnt:")]


def _hold_processes(g: Guest, uid: int, count: int) -> subprocess.Popen:
    """As ``uid`` in the guest: fork until RLIMIT_NPROC stops it (or ``count``), then hold."""
    script = (
        "import os, sys, time\n"
        f"os.setgroups([]); os.setresgid({uid}, {uid}, {uid}); os.setresuid({uid}, {uid}, {uid})\n"
        "made = 0\n"
        f"while made < {count}:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        print('stopped', made, exc.errno, flush=True); break\n"
        "    if pid == 0:\n"
        "        time.sleep(120); os._exit(0)\n"
        "    made += 1\n"
        "else:\n"
        "    print('made', made, flush=True)\n"
        "time.sleep(120)\n"
    )
    argv = ["python3", "-m", "vstui.cli.vserver", "--root", str(g.paths.root), g.name, "exec",
            PY, "-c", script]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
                            start_new_session=True)  # fmt: skip


@USERNS
def test_per_user_limits_are_per_guest(vroot: Paths) -> None:
    # every Debian guest has the same uids (www-data is 33): RLIMIT_NPROC is counted per
    # user namespace and uid, so one guest's uid 4242 no longer starves another's
    values = {"V_USERNS": "yes", "ULIMIT": "-u 40", "V_PIDS": "400"}
    with Guest(vroot, values) as a, Guest(vroot, values) as b:
        holder = _hold_processes(a, 4242, 200)
        try:
            line = holder.stdout.readline().split()
            assert line[:1] == ["stopped"] and int(line[1]) < 40, line  # its own limit holds
            other = _hold_processes(b, 4242, 30)
            try:
                assert other.stdout.readline().split() == ["made", "30"]
            finally:
                os.killpg(other.pid, signal.SIGKILL)
                other.wait()
        finally:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()


@USERNS
def test_inotify_instances_are_per_guest(vroot: Paths) -> None:
    # the kernel charges a guest's instances to its user namespace's owner on the host:
    # the block's first id, not host root (engine/helpers/vstui.h vs_make_userns)
    limit = int(Path("/proc/sys/user/max_inotify_instances").read_text())
    script = (
        "import ctypes, time\nlibc = ctypes.CDLL(None)\nfds = []\n"
        f"while len(fds) < {limit + 10} and (fd := libc.inotify_init()) >= 0:\n"
        "    fds.append(fd)\nprint(len(fds), flush=True)\ntime.sleep(60)\n"
    )
    with Guest(vroot, {"V_USERNS": "yes"}) as a, Guest(vroot, {"V_USERNS": "yes"}) as b:
        argv = ["python3", "-m", "vstui.cli.vserver", "--root", str(vroot.root), a.name,
                "exec", PY, "-c", script]  # fmt: skip
        hog = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True,
                               cwd=Path(__file__).parents[2])  # fmt: skip
        try:
            assert int(hog.stdout.readline()) == limit  # the guest's own budget, used up
            probe = f"{PY} -c 'import ctypes; print(ctypes.CDLL(None).inotify_init() >= 0)'"
            assert ok(b.sh(probe)).strip() == "True"  # another guest's root
            import ctypes

            fd = ctypes.CDLL(None).inotify_init()  # host root
            assert fd >= 0
            os.close(fd)
        finally:
            os.killpg(hog.pid, signal.SIGKILL)
            hog.wait()


@pytest.mark.guest_mode("privileged")
def test_v_userns_no_keeps_the_privileged_mode(vroot: Paths) -> None:
    with Guest(vroot, {"V_USERNS": "no"}) as g:
        assert uid_map(g) == [0, 0, 4294967295]
        assert host_uid(g.init_pid) == 0
        assert idmap.recorded(vroot) == {}  # no block chosen for it
        status = ok(vserver(vroot, g.name, "status", "--json"))
        assert '"userns": false' in status and '"idmap": null' in status
        config = ok(vserver(vroot, g.name, "config")).splitlines()
        assert "V_USERNS          no" in config


@USERNS
def test_a_file_system_that_cannot_be_idmapped_is_refused(vroot: Paths) -> None:
    # a V_MOUNT of a file system without idmapped-mount support (proc: never) names it
    # and the way out, and leaves nothing behind
    g = Guest(vroot, {"V_USERNS": "yes", "V_MOUNT": "proc:/mnt/p:proc"})
    result = vserver(vroot, g.name, "start")
    assert result.returncode == 1
    assert "cannot be idmapped" in result.stderr and "V_USERNS=no" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not state.read(vroot, g.name).running


@USERNS
def test_systemd_guest_owns_its_cgroup_subtree_not_its_limits(
    vroot: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a user-namespaced bookworm guest boots systemd in the subtree handed to its root
    # (NAME/payload on cgroup2), while NAME, with the limits the host set, stays host
    # root's and no controller hierarchy is reachable from inside
    from engine.cgroups import manager
    from engine.cgroups.base import PAYLOAD
    from tests.integration import test_systemd_guest as sd

    monkeypatch.setenv("VSTUI_CACHE_DIR", sd.CACHE)  # test_systemd_guest's shared cache
    with sd.SystemdGuest(vroot, "bookworm", {"V_MEMORY": "512M", "V_PIDS": "600"}) as g:
        sd.assert_running(g)
        base = idmap.recorded(vroot)[g.name] * 65536
        rel = vroot.cgroup_name(g.name)
        v2 = [p for p in manager().paths(rel) if (p / PAYLOAD).is_dir()]
        assert v2 and v2[0].stat().st_uid == 0 and (v2[0] / PAYLOAD).stat().st_uid == base
        assert "init.scope" in g.run("ls /sys/fs/cgroup")  # systemd's own tree, in its subtree
        assert g.run("stat -c %u /sys/fs/cgroup/cgroup.procs").strip() == "0"
        tried = g.sh("mount -t cgroup -o memory none /mnt || mount -t cgroup -o pids none /mnt"
                     " || mount -t cgroup2 none /mnt")  # fmt: skip
        assert tried.returncode != 0
        limits = manager().stats(rel)
        assert limits.memory_limit == 512 << 20 and limits.pids_limit == 600
