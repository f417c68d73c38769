"""``vserver NAME snapshot``: create, change, restore, delete, on every backend."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import VstuiError
from engine.paths import Paths
from engine.rootfs import snapshots
from tests.integration.storage_helpers import ok, pool, refused, vserver

pytestmark = pytest.mark.root

BACKENDS = {"btrfs": (), "image": ("--set", "V_DISK=64M"), "none": ()}


@contextlib.contextmanager
def guest(paths: Paths, backend: str) -> Iterator[str]:
    """A stopped busybox guest on ``backend`` (btrfs: in a pool of this root)."""
    place = pool(paths) if backend == "btrfs" else contextlib.nullcontext()
    with place:
        ok(vserver(paths, "g", "build", "-m", "busybox", *BACKENDS[backend]))
        try:
            yield "g"
        finally:
            vserver(paths, "g", "stop")
            vserver(paths, "g", "delete")


def sh(paths: Paths, script: str) -> str:
    return ok(vserver(paths, "g", "exec", "/bin/sh", "-c", script))


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_snapshot_change_restore(vroot: Paths, backend: str) -> None:
    with guest(vroot, backend):
        ok(vserver(vroot, "g", "start"))
        sh(vroot, "echo one > /root/file; mkdir /root/dir; echo kept > /root/dir/x")
        # a running guest: frozen for the instant, thawed after
        ok(vserver(vroot, "g", "snapshot", "create", "before"))
        assert "is running at context" in ok(vserver(vroot, "g", "status"))
        sh(vroot, "echo two > /root/file; echo new > /root/added; rm -r /root/dir")
        refused(vserver(vroot, "g", "snapshot", "restore", "before"), "g", "stop it first")
        ok(vserver(vroot, "g", "stop"))
        ok(vserver(vroot, "g", "snapshot", "restore", "before"))
        ok(vserver(vroot, "g", "start"))
        assert sh(vroot, "cat /root/file /root/dir/x; ls /root") == "one\nkept\ndir\nfile\n"
        listed = json.loads(ok(vserver(vroot, "g", "snapshot", "list", "--json")))
        assert [s["name"] for s in listed] == ["before"]
        assert listed[0]["backend"] == backend and listed[0]["created"] > 0
        assert listed[0]["size"] is None or listed[0]["size"] > 0
        if backend == "btrfs":
            assert listed[0]["exclusive"] is not None and listed[0]["shared"] is not None
        ok(vserver(vroot, "g", "snapshot", "create"))  # named by the UTC time
        names = [s["name"] for s in json.loads(ok(vserver(vroot, "g", "snapshot", "list",
                                                             "--json")))]  # fmt: skip
        assert len(names) == 2 and names[1].endswith("Z") and names[1][:2] == "20"
        text = ok(vserver(vroot, "g", "snapshot", "list"))
        assert text.splitlines()[0].split() == ["NAME", "CREATED", "(UTC)", "SIZE", "EXCLUSIVE",
                                                "SHARED"]  # fmt: skip
        for name in names:
            ok(vserver(vroot, "g", "snapshot", "delete", name))
        assert ok(vserver(vroot, "g", "snapshot", "list")) == ""
        ok(vserver(vroot, "g", "stop"))


def test_snapshot_bad_input_one_line_and_nothing_lost(vroot: Paths) -> None:
    with guest(vroot, "none"):
        refused(vserver(vroot, "g", "snapshot", "create", "../x"), "",
                "not a valid snapshot name")  # fmt: skip
        refused(vserver(vroot, "g", "snapshot", "restore", "nope"), "g", "no snapshot 'nope'")
        refused(vserver(vroot, "g", "snapshot", "delete", "nope"), "g", "no snapshot 'nope'")
        ok(vserver(vroot, "g", "snapshot", "create", "s1"))
        refused(vserver(vroot, "g", "snapshot", "create", "s1"), "g", "exists already")
        result = vserver(vroot, "g", "snapshot", "frobnicate")
        assert result.returncode == 2 and "usage: vserver NAME snapshot" in result.stderr
        refused(vserver(vroot, "nobody", "snapshot", "list"), "nobody", "no configuration")
        ok(vserver(vroot, "g", "snapshot", "delete", "s1"))


def test_failed_restore_leaves_the_guest_as_it_was(vroot: Paths, monkeypatch) -> None:
    with guest(vroot, "none"):
        tree = vroot.guest_root("g")
        (tree / "root/file").write_text("before")
        snapshots.create(vroot, "g", "s1")
        (tree / "root/file").write_text("after")

        def half_copy(source: Path, target: Path, guest: str, progress=None) -> None:
            target.mkdir()
            (target / "partial").write_text("x")
            raise VstuiError("copying: No space left on device", guest)

        monkeypatch.setattr(snapshots, "copy_tree", half_copy)
        with pytest.raises(VstuiError, match=f"file system holding {vroot.vservers_dir} is full"):
            snapshots.restore(vroot, "g", "s1")
        assert (tree / "root/file").read_text() == "after"
        assert sorted(p.name for p in vroot.vservers_dir.iterdir()) == ["g"]
        monkeypatch.undo()
        snapshots.restore(vroot, "g", "s1")
        assert (tree / "root/file").read_text() == "before"
        assert sorted(p.name for p in vroot.vservers_dir.iterdir()) == ["g"]


def test_delete_takes_the_snapshots_along(vroot: Paths) -> None:
    with pool(vroot):
        ok(vserver(vroot, "g", "build", "-m", "busybox"))
        ok(vserver(vroot, "g", "snapshot", "create", "s1"))
        assert (vroot.pool_dir / "snapshots/g/s1").is_dir()
        ok(vserver(vroot, "g", "delete"))
        assert not (vroot.pool_dir / "snapshots/g").exists()
    ok(vserver(vroot, "n", "build", "-m", "busybox"))
    ok(vserver(vroot, "n", "snapshot", "create", "s1"))
    ok(vserver(vroot, "n", "delete"))
    assert not (vroot.snapshots_dir / "n").exists()
