"""The boot cache's format and what it depends on (no root, no guest)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from engine.cgroups import base
from engine.errors import KernelError
from engine.paths import Paths
from engine.runtime import bootcache


def fields(data: bytes) -> list[bytes]:
    """Parse netstrings the way faststart.h does; fails on anything malformed."""
    out, i = [], 0
    while i < len(data):
        match = re.match(rb"(\d{1,10}):", data[i:])
        assert match, data[i:]
        n = int(match.group(1))
        start = i + match.end()
        assert data[start + n : start + n + 1] == b","
        out.append(data[start : start + n])
        i = start + n + 1
    return out


def test_op_is_netstrings_with_binary_content() -> None:
    raw = bootcache.op("write", "/sys/fs/cgroup/x/pids.max", b"1,2:\x00\n")
    assert fields(raw) == [b"write", b"/sys/fs/cgroup/x/pids.max", b"1,2:\x00\n"]
    assert fields(bootcache.op("xid", 40001)) == [b"xid", b"40001"]


def test_dependencies_cover_config_table_tree_and_every_engine_source(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    deps = bootcache.dependencies(paths, "web", "/srv/web")
    assert deps[:4] == [str(paths.config_file("web")), str(paths.state_dir / "xids"),
                        "/srv/web/etc", "/srv/web/etc/rc.local"]  # fmt: skip
    engine_dir = Path(bootcache.__file__).resolve().parents[1]
    sources = {str(p) for p in engine_dir.rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= set(deps)


def test_missing_dependency_is_recorded_as_absent(tmp_path: Path) -> None:
    here = tmp_path / "there"
    assert fields(bootcache._stat_op(str(here))) == [b"absent", str(here).encode()]
    here.write_text("x")
    st = os.stat(here)
    kind, path, mtime, size, ino = fields(bootcache._stat_op(str(here)))
    assert (kind, int(mtime), int(size), int(ino)) == (b"stat", st.st_mtime_ns, 1, st.st_ino)


def test_write_is_private_and_atomic_and_forget_removes_it(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    bootcache.write(paths, "web", [bootcache.op("xid", 40000)])
    target = Path(bootcache.cache_file(paths, "web"))
    assert fields(target.read_bytes()) == [bootcache.VERSION, b"xid", b"40000"]
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["web"]  # no temp file left
    bootcache.forget(paths, "web")
    assert not target.exists()


def test_cgroup_journal_records_mkdirs_and_writes_only_while_on(tmp_path: Path) -> None:
    control = tmp_path / "pids.max"
    control.write_text("")
    entries: list[tuple[str, ...]] = []
    base.record(entries)
    try:
        base.write(control, "100", "web")
    finally:
        base.record(None)
    base.write(control, "200", "web")
    assert entries == [("write", str(control), "100")]


def test_journal_failure_records_nothing(tmp_path: Path) -> None:
    entries: list[tuple[str, ...]] = []
    base.record(entries)
    try:
        with pytest.raises(KernelError):
            base.write(tmp_path / "missing" / "pids.max", "1", "web")
    finally:
        base.record(None)
    assert entries == []
