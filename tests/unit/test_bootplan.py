"""The boot plan of a guest's PID 1: netstring framing, op order, arguments (no root)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from engine import _libc
from engine.caps import to_mask
from engine.config import load_guest, write_new_config
from engine.errors import VstuiError
from engine.paths import Paths
from engine.rootfs import Bind
from engine.runtime import bootplan, netstrings
from engine.runtime import plan as P


def config(tmp_path: Path, **values: str):
    paths = Paths.from_root(tmp_path)
    write_new_config(paths, "web", {"S_HOSTNAME": "web.test", **values}, overwrite=True)
    return load_guest(paths, "web")


def default_plan(tmp_path: Path, facts: P.Facts | None = None, **values: str) -> P.StartPlan:
    binds = [Bind(Path("/usr"), "/usr", readonly=True, recursive=True)]
    cfg = config(tmp_path, **values)
    return P.build(cfg, "/vservers/web", binds, has_rc_local=True, facts=facts)


def start_ops(plan: P.StartPlan) -> list[tuple[str, list[bytes]]]:
    host = bootplan.HostSide(barrier="/vservers", run_dir="/run/vservers/web", xid=40000,
                             cgroup_ops=[], joins=[], run_files=[], ns_flags=0x20000,
                             timens=False, vinit=None)  # fmt: skip
    data = bootplan.serialize_start(plan, host, serialize(plan))
    return netstrings.ops(data, bootplan.START_OPS)


PROGRAM = bytes(range(16))  # two struct sock_filter


def ops(data: bytes) -> list[tuple[str, list[bytes]]]:
    """Group the fields into (op, args) by the op table boot.h is built from."""
    return netstrings.ops(data, bootplan.BOOT_OPS)


def serialize(plan: P.StartPlan) -> bytes:
    return bootplan.serialize(plan, PROGRAM)


def names(data: bytes) -> list[str]:
    return [name for name, _ in ops(data)]


def test_default_plan_order(tmp_path: Path) -> None:
    plan = default_plan(tmp_path)
    steps = ops(serialize(plan))
    seen = [name for name, _ in steps]
    # the console terminal is found before pivot_root (its host path), attached in /dev
    assert seen[:5] == ["umask", "setsid", "consoleview", "root", "hostbind"]
    assert steps[0][1] == [b"22"] and steps[3][1] == [b"/vservers/web", b"0", b"0"]  # no tree
    usr = os.stat("/usr")  # the identity the executor checks again
    assert steps[4][1] == [b"/usr", b"%d" % usr.st_dev, b"%d" % usr.st_ino, b"/usr", b"1", b"1"]
    assert seen.index("pivot") == 5 and steps[6] == (
        "nosymlinks",
        [b"4", b"/proc", b"/sys", b"/dev", b"/run"],
    )
    # one op per after-pivot step, in the plan's order
    after = seen[7 : 7 + len(plan.after)]
    kinds = {P.Mount: "mount", P.Mask: "mask", P.ReadOnly: "readonly", P.Bind: "bind",
             P.Device: "device", P.Symlink: "symlink", P.File: "file", P.View: "viewmount",
             P.Console: "console"}  # fmt: skip
    assert after == [kinds[type(step)] for step in plan.after]
    tail = seen[7 + len(plan.after) :]
    assert tail == ["vinit", "hostname", "loopback", "stdio", "signals", "confine", "exec"]
    assert dict(steps)["vinit"] == [P.VINIT_PATH.encode()]


def test_confinement_is_the_last_step_before_exec(tmp_path: Path) -> None:
    steps = ops(serialize(default_plan(tmp_path, S_NICE="5", ULIMIT="-H -n 512")))
    seen = [name for name, _ in steps]
    assert seen[-2:] == ["confine", "exec"]
    assert seen.index("stdio") < seen.index("rlimit") < seen.index("nice") < seen.index("signals")
    assert dict(steps)["confine"][1] == PROGRAM  # the seccomp program travels in the plan


def test_a_filtered_plan_needs_its_program(tmp_path: Path) -> None:
    with pytest.raises(VstuiError, match="never starts unfiltered"):
        bootplan.serialize(default_plan(tmp_path), None)


def test_exec_argv_and_env(tmp_path: Path) -> None:
    plan = default_plan(tmp_path)
    name, args = ops(serialize(plan))[-1]
    assert name == "exec"
    n = int(args[0])
    assert [a.decode() for a in args[1 : 1 + n]] == list(plan.argv)
    env = [a.decode() for a in args[2 + n :]]
    assert int(args[1 + n]) == len(env) == len(plan.env)
    assert "container=vstui" in env and "HOSTNAME=web.test" in env


def test_mount_fields(tmp_path: Path) -> None:
    plan = default_plan(tmp_path)
    mounts = {args[1]: args for name, args in ops(serialize(plan)) if name == "mount"}
    dev = mounts[b"/dev"]
    assert dev[0] == b"tmpfs" and dev[2] == b"tmpfs"
    assert int(dev[3]) == _libc.MS_NOSUID | _libc.MS_NOEXEC | _libc.MS_STRICTATIME
    assert dev[4] == b"1" and dev[5].startswith(b"mode=755")
    mqueue = mounts[b"/dev/mqueue"]
    assert mqueue[4:] == [b"0", b""]  # no data: NULL, not ""
    devices = {args[0]: args for name, args in ops(serialize(plan)) if name == "device"}
    assert devices[b"/dev/null"] == [b"/dev/null", b"1", b"3", b"666"]  # mode in octal


def test_file_content_keeps_nul_and_commas() -> None:
    content = b"a,b\0c,\n"
    plan = P.StartPlan(name="web", root="/t", before=(), after=(P.File("/etc/x", content, 0o640),),
                       hostname="h", domainname="example.org", own_netns=False, rlimits=(),
                       nice=None, caps=frozenset(), argv=("/sbin/init",), env=(), vinit=False,
                       seccomp=False)  # fmt: skip
    steps = ops(serialize(plan))
    assert ("file", [b"/etc/x", b"640", content]) in steps
    seen = [name for name, _ in steps]
    assert "domainname" in seen and "loopback" not in seen
    assert "vinit" not in seen and "view" not in seen
    assert dict(steps)["confine"] == [b"0", b""]  # seccomp=False: no program


def test_host_mount_options_become_flags_and_data() -> None:
    assert P.mount_options("ro,nosuid,size=10m,mode=700") == (
        _libc.MS_RDONLY | _libc.MS_NOSUID,
        "size=10m,mode=700",
    )
    assert P.mount_options("defaults,rw") == (0, None)
    assert P.mount_options("rbind") == (_libc.MS_BIND | _libc.MS_REC, None)
    step = P.HostMount("none", "/mnt/t", "tmpfs", "ro,size=1m")
    plan = P.StartPlan(name="web", root="/t", before=(step,), after=(), hostname="h",
                       domainname=None, own_netns=True, rlimits=(), nice=None,
                       caps=frozenset(), argv=("/sbin/init",), env=(), vinit=False)  # fmt: skip
    args = dict(ops(serialize(plan)))["hostmount"]
    assert args == [b"none", b"/mnt/t", b"tmpfs", b"%d" % _libc.MS_RDONLY, b"1", b"size=1m"]


def test_limits_caps_and_meminfo_view(tmp_path: Path) -> None:
    facts = P.Facts(meminfo_view="/run/vservers/web/meminfo")
    plan = default_plan(tmp_path, facts, S_NICE="5", ULIMIT="-HS -n 1024 -H -u 100",
                        V_MEMORY="32M")  # fmt: skip
    steps = ops(serialize(plan))
    seen = [name for name, _ in steps]
    # the host file is opened on the host side (a START op), attached after /proc exists
    assert ["/run/vservers/web/meminfo"] == [
        a[0].decode() for n, a in start_ops(plan) if n == "view"
    ]
    assert seen.index("pivot") < seen.index("mount") < seen.index("viewmount") < seen.index("stdio")
    assert dict(steps)["viewmount"] == [b"/proc/meminfo"]
    limits = [args for name, args in steps if name == "rlimit"]
    assert [b"%d" % resource.RLIMIT_NOFILE, b"1024", b"1024"] in limits
    nproc = next(a for a in limits if a[0] == b"%d" % resource.RLIMIT_NPROC)
    assert nproc[2] == b"100" and nproc[1] in (b"-1", b"100")  # soft unlimited or equal
    assert dict(steps)["nice"] == [b"5"]
    assert int(dict(steps)["confine"][0], 16) == to_mask(plan.caps)


def test_nul_in_a_path_is_refused() -> None:
    plan = P.StartPlan(name="web", root="/t", before=(P.HostBind("/srv\0x", "/srv"),), after=(),
                       hostname="h", domainname=None, own_netns=True, rlimits=(), nice=None,
                       caps=frozenset(), argv=("/sbin/init",), env=(), vinit=False)  # fmt: skip
    with pytest.raises(VstuiError, match="NUL byte"):
        serialize(plan)


def test_parse_refuses_malformed_input() -> None:
    assert bootplan.parse(b"3:abc,0:,") == [b"abc", b""]
    for bad in (b"3:ab,", b"x:abc,", b"3:abc;", b"-1:,"):
        with pytest.raises(ValueError):
            bootplan.parse(bad)


def test_every_op_written_is_in_the_table_the_executor_is_built_from(tmp_path: Path) -> None:
    facts = P.Facts(meminfo_view="/run/x/meminfo", notify="/run/x/notify", tmp=True)
    plan = default_plan(tmp_path, facts, S_NICE="5", V_MEMORY="32M", S_DOMAINNAME="d",
                        S_FLAGS="fakeinit")  # fmt: skip
    used = {name for name, _ in ops(serialize(plan))}
    assert {"viewmount", "console"} <= used and "view" in {n for n, _ in start_ops(plan)}
    assert used - {"hostmount", "domainname"} <= set(bootplan.BOOT_OPS)
    header = (Path(bootplan.__file__).parents[1] / "helpers" / "consts.h").read_text()
    for name, arity in bootplan.BOOT_OPS.items():
        assert f"X({name}, {arity})" in header


# -- a user-namespaced guest -------------------------------------------------------------------

IDMAP = (524288, 65536)


def test_userns_host_side_makes_the_idmapped_mounts_and_sets_the_limits(tmp_path: Path) -> None:
    plan = default_plan(tmp_path, P.Facts(idmap=IDMAP), ULIMIT="-HS -n 1024", S_NICE="5",
                        V_MOUNT="tmpfs:/mnt/t:tmpfs:size=1m")  # fmt: skip
    steps = start_ops(plan)
    seen = [name for name, _ in steps]
    usr = os.stat("/usr")
    assert (
        seen.index("userns") < seen.index("idroot") < seen.index("idbind") < seen.index("unshare")
    )
    assert dict(steps)["userns"] == [b"524288", b"65536"]
    assert dict(steps)["idroot"] == [b"/vservers/web", b"0", b"0"]
    assert dict(steps)["idbind"] == [b"/usr", b"%d" % usr.st_dev, b"%d" % usr.st_ino, b"/usr",
                                     b"1", b"1"]  # fmt: skip
    assert dict(steps)["idmount"][:3] == [b"tmpfs", b"/mnt/t", b"tmpfs"]
    assert [b"%d" % resource.RLIMIT_NOFILE, b"1024", b"1024"] in [
        a for n, a in steps if n == "rlimit"
    ]
    assert dict(steps)["nice"] == [b"5"]
    # /dev: a tmpfs made on the host side with the device nodes (mknod is refused in a
    # userns), before the tree's binds; no node is a view of the host's any more
    assert seen.index("idroot") < seen.index("iddev") < seen.index("idbind")
    iddev = dict(steps)["iddev"]
    assert iddev[:4] == [b"%d" % (len(iddev) - 1), b"/dev", b"%d" % P.DEV_FLAGS,
                         P.DEV_DATA.encode()]  # fmt: skip
    assert iddev[4:12] == [b"null", b"1", b"3", b"666", b"zero", b"1", b"5", b"666"]
    assert not P.DEV_FLAGS & P._libc.MS_NODEV  # the nodes must work
    assert not [a for n, a in steps if n == "view" and a[0].startswith(b"/dev/")]


def test_userns_boot_plan(tmp_path: Path) -> None:
    plan = default_plan(tmp_path, P.Facts(idmap=IDMAP), ULIMIT="-HS -n 1024")
    steps = ops(serialize(plan))
    seen = [name for name, _ in steps]
    # the tree is B's working directory; A bound the host directories already
    assert ("root", [b".", b"0", b"0"]) in steps and "hostbind" not in seen
    # /proc and /sys mounted inside the tree before pivot_root (the host's still visible)
    before = seen[: seen.index("pivot")]
    assert before[-4:] == ["root", "nosymlinks", "hostmount", "hostmount"]
    assert [a[2] for n, a in steps[: seen.index("pivot")] if n == "hostmount"] == [
        b"proc",
        b"sysfs",
    ]
    assert "device" not in seen and "rlimit" not in seen and "nice" not in seen
    # /dev is the host side's (iddev): B mounts no tmpfs there and makes no node
    assert [b"tmpfs", b"/dev"] not in [a[:2] for n, a in steps if n == "mount"]
    assert not [a for n, a in steps if n in ("file", "viewmount") and a[0] == b"/dev/null"]
    assert seen.index("pivot") < seen.index("mount") < seen.index("console") < seen.index("stdio")
    assert seen.index("stdio") < seen.index("confine")


def test_userns_without_own_netns_binds_the_hosts_sys(tmp_path: Path) -> None:
    plan = default_plan(tmp_path, P.Facts(idmap=IDMAP), V_NETMODE="host")
    steps = ops(serialize(plan))
    assert ("hosttree", [b"/sys", b"/sys"]) in steps
    assert not [a for n, a in steps if n == "hostmount" and a[2] == b"sysfs"]
