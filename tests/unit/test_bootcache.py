"""The boot cache's records and file, and the cgroup plan a start hands to C (no root)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from engine.cgroups import Limits
from engine.cgroups.probe import decide, parse_mountinfo, parse_proc_cgroups
from engine.cgroups.v1 import V1Cgroups
from engine.paths import Paths
from engine.runtime import bootcache, netstrings
from engine.runtime.plan import HostBind


class Plan:
    """What records() reads of a StartPlan."""

    root_identity = (1, 2)
    before = (HostBind("/srv/share", "/mnt/share", True, True, 7, 8),)


def test_op_is_netstrings_with_binary_content() -> None:
    raw = bootcache.op("plan", b"1,2:\x00\n")
    assert netstrings.parse(raw) == [b"plan", b"1,2:\x00\n"]
    assert netstrings.parse(bootcache.op("super", 2, "a", "b")) == [b"super", b"2", b"a", b"b"]


def test_content_is_the_sha256_of_the_bytes_not_the_times(tmp_path: Path) -> None:
    conf = tmp_path / "g.conf"
    conf.write_text('S_HOSTNAME="a"\n')
    first = bootcache.content(str(conf))
    assert netstrings.parse(first)[2] == hashlib.sha256(b'S_HOSTNAME="a"\n').hexdigest().encode()
    st = conf.stat()
    conf.write_text('S_HOSTNAME="b"\n')  # same size
    os.utime(conf, ns=(st.st_atime_ns, st.st_mtime_ns))  # times restored
    assert bootcache.content(str(conf)) != first
    assert bootcache.content(str(tmp_path / "missing")) is None


def test_records_cover_config_sources_tree_and_every_engine_source(tmp_path: Path) -> None:
    conf = bootcache.op("content", "/etc/vserver/g.conf", "0" * 64)
    deps = bootcache.records(conf, [], "/vservers/g", Plan(), has_rc_local=True)
    ops = [netstrings.parse(d) for d in deps]
    assert deps[0] == conf
    assert [b"inroot", b"/vservers/g", b"/etc/rc.local", b"1"] in ops
    assert [b"source", b"/vservers/g", b"1", b"2"] in ops
    assert [b"source", b"/srv/share", b"7", b"8"] in ops
    engine_dir = Path(bootcache.__file__).resolve().parents[1]
    sources = {str(p) for p in engine_dir.rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= {op[1].decode() for op in ops if op[0] == b"code"}


def test_entry_records_the_binaries_by_content_and_ends_with_the_plan(tmp_path: Path) -> None:
    data = bootcache.entry([], "/run/vservers/g", "/var/log/vservers/g.log", b"PLAN", ["sv", "x"],
                           ready=True)  # fmt: skip
    fields = netstrings.parse(data)
    assert fields[0] == bootcache.VERSION.encode()
    ops = netstrings.ops(data[len(netstrings.encode(fields[0])) :], bootcache.CACHE_OPS)
    binaries = {args[0].decode(): args[1] for name, args in ops if name == "binary"}
    vexec = str(Path(bootcache.__file__).resolve().parents[1] / "helpers" / "vexec")
    assert binaries[vexec] == hashlib.sha256(Path(vexec).read_bytes()).hexdigest().encode()
    assert any(path.endswith("/vserver") for path in binaries)  # the front end itself
    assert ops[-3:] == [("plan", [b"PLAN"]), ("super", [b"2", b"sv", b"x"]), ("ready", [])]


def test_write_is_private_and_atomic_and_forget_removes_it(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    bootcache.write(paths, "web", b"data")
    target = Path(bootcache.cache_file(paths, "web"))
    assert target.read_bytes() == b"data"
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["web"]  # no temp file left
    bootcache.forget(paths, "web")
    assert not target.exists()


HYBRID = """\
32 31 0:29 / {top}/cpu rw - cgroup cgroup rw,cpu
35 31 0:32 / {top}/memory rw - cgroup cgroup rw,memory
39 31 0:36 / {top}/pids rw - cgroup cgroup rw,pids
41 31 0:38 / {top}/unified rw - cgroup2 cgroup2 rw
"""
PROC_CGROUPS = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t4\t1\t1\n" + (
    "pids\t8\t1\t1\n"
)


def test_cgroup_setup_is_planned_as_ops_and_nothing_is_made(tmp_path: Path) -> None:
    mounts = parse_mountinfo(HYBRID.format(top=tmp_path))
    cg = V1Cgroups(decide(mounts, parse_proc_cgroups(PROC_CGROUPS), frozenset()))
    ops = cg.setup_ops("vstui-1/g", Limits(memory=1 << 28, pids=50))
    assert ("mkdir", f"{tmp_path}/memory/vstui-1") in ops
    assert ("write", f"{tmp_path}/memory/vstui-1/g/memory.limit_in_bytes", str(1 << 28)) in ops
    assert ("write", f"{tmp_path}/pids/vstui-1/g/pids.max", "50") in ops
    assert list(tmp_path.iterdir()) == []  # planned, not made
    joins = cg.join_ops("vstui-1/g")
    assert ("tasks", f"{tmp_path}/pids/vstui-1/g/tasks") in joins
    # the guest's processes live in its cgroup2 payload: the subtree its init manages
    assert ("cgroup2", f"{tmp_path}/unified/vstui-1/g/payload") in joins
    assert ("mkdir", f"{tmp_path}/unified/vstui-1/g/payload") in ops
    assert ("mkdir", f"{tmp_path}/memory/vstui-1/g/payload") not in ops
    assert cg.memory_dir("vstui-1/g") == tmp_path / "memory/vstui-1/g"
