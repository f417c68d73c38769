"""engine.cgroups: the layout probe, value mapping and path guards (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cgroups import CgroupStats, Limits
from engine.cgroups.base import check_rel, guest_of, read_int
from engine.cgroups.probe import decide, parse_mountinfo, parse_proc_cgroups
from engine.cgroups.v1 import V1Cgroups, memory_limit, quota_to_cfs, weight_to_shares
from engine.cgroups.v2 import V2Cgroups, cpu_max, usage_usec
from engine.errors import VstuiError

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

PROC_CGROUPS = """\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
cpuacct\t2\t1\t1
memory\t4\t59\t1
freezer\t6\t1\t1
pids\t8\t1\t1
hugetlb\t0\t1\t1
"""

V2_MOUNTINFO = """\
25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
"""

COMBINED_V1 = """\
30 20 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 20 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
32 20 0:27 /sub /mnt/pids-again rw - cgroup cgroup rw,pids
"""


def test_probe_hybrid_uses_v1_controllers_and_the_v2_mount() -> None:
    layout = decide(
        parse_mountinfo(HYBRID_MOUNTINFO), parse_proc_cgroups(PROC_CGROUPS), frozenset({"hugetlb"})
    )
    assert layout.kind == "hybrid"
    mounts = {str(h.mount) for h in layout.hierarchies}
    assert mounts == {
        "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/freezer", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified",
    }  # fmt: skip
    assert layout.controller("memory").mount == Path("/sys/fs/cgroup/memory")
    assert layout.controller("cpuset") is None  # never used: children start empty
    assert layout.unified is not None and layout.unified.controllers == frozenset()


def test_probe_pure_v2() -> None:
    layout = decide(
        parse_mountinfo(V2_MOUNTINFO),
        parse_proc_cgroups(PROC_CGROUPS),
        frozenset({"cpuset", "cpu", "io", "memory", "pids", "hugetlb"}),
    )
    assert layout.kind == "v2"
    assert layout.hierarchies[0].controllers == {"memory", "pids", "cpu"}


def test_probe_v1_combined_mount_and_duplicate_hierarchy() -> None:
    layout = decide(parse_mountinfo(COMBINED_V1), parse_proc_cgroups(PROC_CGROUPS), frozenset())
    assert layout.kind == "v1"
    assert layout.controller("cpu") is layout.controller("cpuacct")
    assert [str(h.mount) for h in layout.hierarchies] == [
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/pids",
    ]


def test_probe_skips_disabled_controllers() -> None:
    disabled = PROC_CGROUPS.replace("memory\t4\t59\t1", "memory\t4\t59\t0")
    layout = decide(parse_mountinfo(HYBRID_MOUNTINFO), parse_proc_cgroups(disabled), frozenset())
    assert layout.controller("memory") is None


def test_mountinfo_unescapes_spaces() -> None:
    text = "40 31 0:37 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n"
    assert parse_mountinfo(text)[0].mount_point == Path("/mnt/my cg")


def test_weight_and_quota_mapping() -> None:
    assert weight_to_shares(100) == 1024
    assert weight_to_shares(1) == 10
    assert weight_to_shares(10000) == 102400
    assert quota_to_cfs(50) == 50_000
    assert quota_to_cfs(150) == 150_000
    assert quota_to_cfs(0.1) == 1000  # the kernel's minimum
    assert cpu_max(None) == "max 100000"
    assert cpu_max(250) == "250000 100000"


def test_memory_limit_unlimited_is_none() -> None:
    assert memory_limit(9223372036854771712) is None
    assert memory_limit(64 << 20) == 64 << 20
    assert memory_limit(None) is None


def test_usage_usec() -> None:
    assert usage_usec("usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n") == 1234
    assert usage_usec("nr_periods 0\n") is None


def test_read_int(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("max\n")
    (tmp_path / "b").write_text("42\n")
    assert read_int(tmp_path / "a") is None
    assert read_int(tmp_path / "b") == 42
    assert read_int(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "rel", ["", "/vstui/web", "system.slice/web", "vstui/../process_api", "vstui/./x"]
)
def test_refuses_cgroups_the_engine_did_not_create(rel: str) -> None:
    with pytest.raises(VstuiError):
        check_rel(rel)


def test_rel_parts_and_guest() -> None:
    assert check_rel("vstui-1a2b3c/web") == ("vstui-1a2b3c", "web")
    assert guest_of("vstui-1a2b3c/web") == "web"


def test_limits_validate() -> None:
    with pytest.raises(VstuiError, match="between 1 and 10000"):
        Limits(cpu_weight=0)
    with pytest.raises(VstuiError, match="at least 1"):
        Limits(pids=0)
    with pytest.raises(VstuiError):
        Limits(cpu_quota=0)
    assert Limits(memory=1 << 20).pids is None


def _fake_tree(tmp_path: Path, kind: str) -> tuple[Path, object]:
    """A plain-directory stand-in for a hierarchy: only for path bookkeeping."""
    text = HYBRID_MOUNTINFO if kind == "v1" else V2_MOUNTINFO
    text = text.replace("/sys/fs/cgroup", str(tmp_path))
    layout = decide(
        parse_mountinfo(text), parse_proc_cgroups(PROC_CGROUPS), frozenset({"memory", "pids"})
    )
    return tmp_path, V1Cgroups(layout) if kind == "v1" else V2Cgroups(layout)


def test_v1_procs_include_sub_cgroups_and_list_guests(tmp_path: Path) -> None:
    root, cg = _fake_tree(tmp_path, "v1")
    for h in cg.hierarchies:
        (h.mount / "vstui-x/web/sub").mkdir(parents=True)
    pids_dir = root / "pids/vstui-x/web"
    (pids_dir / "cgroup.procs").write_text("10\n11\n")
    (pids_dir / "sub/cgroup.procs").write_text("12\n")
    assert sorted(cg.procs("vstui-x/web")) == [10, 11, 12]
    assert cg.list_guests("vstui-x") == ["web"]
    assert cg.exists("vstui-x/web") and not cg.exists("vstui-x/db")
    assert len(cg.paths("vstui-x/web")) == 6


def test_v2_apply_writes_the_v2_files(tmp_path: Path) -> None:
    root, cg = _fake_tree(tmp_path, "v2")
    guest = root / "vstui-x/web"
    guest.mkdir(parents=True)
    for name in ("memory.max", "pids.max"):
        (guest / name).write_text("max\n")
    cg.apply("vstui-x/web", Limits(memory=1 << 30, pids=50))
    assert (guest / "memory.max").read_text() == str(1 << 30)
    assert (guest / "pids.max").read_text() == "50"
    (guest / "memory.current").write_text("4096\n")
    (guest / "pids.current").write_text("3\n")
    stats = cg.stats("vstui-x/web")
    assert stats == CgroupStats(4096, 1 << 30, 3, 50, None, 0)


def test_rmdir_busy_with_nobody_listed_is_retried_soon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EBUSY with an empty cgroup.procs: a process is still exiting (no longer listed,
    not yet out of the group). Tried again after 0.5 ms, doubling (20 ms at first)."""
    import errno
    import os

    from engine.cgroups import base

    _, cg = _fake_tree(tmp_path, "v2")
    group = cg.paths("vstui-x/web")[0]
    group.mkdir(parents=True)
    busy, sleeps, real_rmdir = [2], [], os.rmdir

    def rmdir(path: Path) -> None:
        if Path(path) == group and busy[0]:
            busy[0] -= 1
            raise OSError(errno.EBUSY, "busy")
        real_rmdir(path)

    monkeypatch.setattr(base.os, "rmdir", rmdir)
    monkeypatch.setattr(base.time, "sleep", sleeps.append)
    cg.remove("vstui-x/web")
    assert not group.exists() and sleeps == [0.0005, 0.001]
    group.mkdir(parents=True)
    (group / "cgroup.procs").write_text("10\n")  # someone listed: not waited for
    busy[0] = 1
    with pytest.raises(VstuiError, match="processes are still in it"):
        cg.remove("vstui-x/web")
