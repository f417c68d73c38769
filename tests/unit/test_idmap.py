"""Guest id blocks: derived from the xid, allocated otherwise, recorded, registered."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import VstuiError
from engine.paths import Paths
from engine.runtime import idmap


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    (tmp_path / "etc").mkdir()
    return Paths(tmp_path)


def etc(paths: Paths, name: str) -> list[str]:
    path = paths.root / "etc" / name
    return path.read_text().splitlines() if path.exists() else []


def test_every_block_is_aligned_in_systemds_range_and_below_2_31() -> None:
    first, last = idmap.of_block(idmap.FIRST_BLOCK), idmap.of_block(idmap.LAST_BLOCK)
    assert (first.base, last.last) == (524288, 1879048191)
    assert last.last < 2**31
    assert idmap.derived_block(40000) == 8 and idmap.of_block(8).base == 524288
    assert idmap.derived_block(40007) == 15
    assert idmap.derived_block(39999) is None
    assert idmap.derived_block(40000 + idmap.LAST_BLOCK - 8 + 1) is None  # past the range


def test_idmap_translates_both_ways() -> None:
    m = idmap.IdMap(524288)
    assert (m.host(0), m.host(65535), m.last) == (524288, 589823, 589823)
    assert (m.inner(524288 + 33), m.inner(524287), m.inner(589824)) == (33, None, None)
    assert m.line() == "0 524288 65536" and m.text() == "524288-589823"


def test_derived_block_is_recorded_and_kept(paths: Paths) -> None:
    web = idmap.assign(paths, "web", 40003)
    assert web.base == (40003 - 40000 + 8) * 65536
    assert idmap.recorded(paths) == {"web": 11}
    # kept, whatever the xid says later (the tree's files do not move)
    assert idmap.assign(paths, "web", 40100) == web
    assert idmap.planned(paths, "web", 40100) == web


def test_low_xid_gets_an_allocated_block_from_the_top(paths: Paths) -> None:
    a = idmap.assign(paths, "a", 500)
    b = idmap.assign(paths, "b", 501)
    assert (a.block, b.block) == (idmap.LAST_BLOCK, idmap.LAST_BLOCK - 1)
    assert idmap.planned(paths, "c", 502) is None  # nothing chosen before a start


def test_a_taken_derived_block_is_not_shared(paths: Paths) -> None:
    first = idmap.assign(paths, "one", 40001)
    second = idmap.assign(paths, "two", 40001)  # same xid: S_CONTEXT duplicated
    assert first != second and second.block == idmap.LAST_BLOCK


def test_allocation_skips_reserved_and_foreign_ids(paths: Paths) -> None:
    top = idmap.of_block(idmap.LAST_BLOCK)
    (paths.root / "etc/subuid").write_text(f"alice:{top.base + 10}:10\n")
    (paths.root / "etc/passwd").write_text(
        f"root:x:0:0::/root:/bin/sh\nbob:x:{top.base - 65536 + 5}:100::/:/bin/sh\n"
    )
    got = idmap.assign(paths, "g", 7, reserved={idmap.LAST_BLOCK - 2})
    assert got.block == idmap.LAST_BLOCK - 3


def test_registrations_and_forget(paths: Paths) -> None:
    (paths.root / "etc/subuid").write_text("alice:100000:65536\n")
    (paths.root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    web = idmap.assign(paths, "web", 40000)
    idmap.assign(paths, "web", 40000)  # again: nothing doubled
    assert etc(paths, "subuid") == ["alice:100000:65536", "vstui:524288:65536"]
    assert etc(paths, "subgid") == ["vstui:524288:65536"]
    assert etc(paths, "passwd")[1].startswith("vs-web:x:524288:524288:vstui guest web")
    assert etc(paths, "group") == ["vs-web:x:524288:"]
    assert (paths.root / "etc/passwd").stat().st_mode & 0o777 == 0o644
    idmap.forget(paths, "web")
    assert etc(paths, "subuid") == ["alice:100000:65536"]
    assert etc(paths, "passwd") == ["root:x:0:0:root:/root:/bin/sh"]
    assert etc(paths, "group") == [] and idmap.recorded(paths) == {}
    assert web.base not in [h.first for h in idmap.holders(paths)]


def test_holders_leave_our_own_entries_out(paths: Paths) -> None:
    idmap.assign(paths, "web", 40000)
    (paths.root / "etc/subgid").write_text(
        (paths.root / "etc/subgid").read_text() + "podman:530000:100\n"
    )
    found = idmap.holders(paths)
    inside = idmap.overlapping(idmap.of_block(8), list(found))
    assert [(h.what, h.name) for h in inside] == [("subgid", "podman")]


def test_long_names_fit_nss(paths: Paths) -> None:
    name = "g" * 40
    assert len(idmap.nss_name(name)) == 32
    assert idmap.nss_name(name) != idmap.nss_name("g" * 41)


def test_range_exhausted_is_a_clear_error(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idmap, "LAST_BLOCK", idmap.FIRST_BLOCK)
    idmap.assign(paths, "a", 1)
    with pytest.raises(VstuiError, match="no free block"):
        idmap.assign(paths, "b", 2)
