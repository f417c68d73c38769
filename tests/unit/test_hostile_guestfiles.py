"""QA round of #19: files a guest owns, as the host opens, parses and walks them.

Every field of a guest's /etc/passwd is hostile (one strict parser,
engine.guestusers); every file the host opens in a guest's tree may be a FIFO,
device or symlink planted for it (engine.safepath's guest-file helpers).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine import guestusers, safepath
from engine.errors import QuotaError, VstuiError
from engine.rootfs.clone import new_identity
from engine.rootfs.storage import _guest_uid
from engine.runtime.enter import guest_user

HOSTILE_IDS = ("²", "١٢", "٣", "-1", "+1", " 1", "1 ", "4294967295", "9" * 400, "", "0x10", "1_000")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    return tmp_path


def _passwd(tree: Path, uid: str) -> None:
    (tree / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\nevil:x:{uid}:{uid}::/:/bin/sh\n")
    (tree / "etc/group").write_text(f"root:x:0:\nevil:x:{uid}:evil\nok:x:7:evil\n")


@pytest.mark.parametrize("word", HOSTILE_IDS)
def test_parse_id_takes_ascii_digits_in_uid_range_only(word: str) -> None:
    assert guestusers.parse_id(word) is None


def test_parse_id_bounds() -> None:
    assert guestusers.parse_id("0") == 0
    assert guestusers.parse_id("4294967294") == guestusers.MAX_ID


@pytest.mark.parametrize("uid", HOSTILE_IDS)
def test_suexec_user_lookup_never_raises_on_a_hostile_passwd(tree: Path, uid: str) -> None:
    _passwd(tree, uid)
    root = os.open(tree, os.O_PATH)
    try:
        with pytest.raises(VstuiError, match="no user 'evil' in the guest's /etc/passwd"):
            guest_user(root, "evil", "g")
        with pytest.raises(VstuiError, match="give a name it lists or a number"):
            guest_user(root, uid or "x", "g")
        assert guest_user(root, "root", "g").uid == 0
    finally:
        os.close(root)


@pytest.mark.parametrize("uid", HOSTILE_IDS)
def test_quota_user_lookup_never_raises_on_a_hostile_passwd(tree: Path, uid: str) -> None:
    _passwd(tree, uid)
    with pytest.raises(QuotaError, match="no user 'evil'"):
        _guest_uid(tree, "evil", "g")
    with pytest.raises(QuotaError, match="give a uid"):
        _guest_uid(tree, uid or "x", "g")
    assert _guest_uid(tree, "root", "g") == 0


@pytest.mark.parametrize("kind", ["fifo", "dir", "link-out", "socket"])
def test_guest_files_that_are_not_regular_are_refused_without_opening(
    tree: Path, kind: str
) -> None:
    target = tree / "etc/passwd"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    elif kind == "socket":
        os.mknod(target, 0o600 | stat.S_IFSOCK)
    else:
        target.symlink_to("/proc/self/fd/0")
    root = os.open(tree, os.O_PATH)
    try:
        with pytest.raises(OSError):
            safepath.read_regular(root, "/etc/passwd")
        with pytest.raises(VstuiError, match="no user 'evil'"):
            guest_user(root, "evil", "g")
    finally:
        os.close(root)
    with pytest.raises(QuotaError, match="give a uid"):
        _guest_uid(tree, "evil", "g")


def test_clone_identity_replaces_a_planted_fifo_and_links(tree: Path) -> None:
    """A FIFO as /etc/hostname hung `vserver NAME clone NEW` (an O_WRONLY open
    waits for a reader). The test holds a reader, so the old code wrote into
    the FIFO instead of hanging: the clone's hostname must be a file."""
    os.mkfifo(tree / "etc/hostname")
    reader = os.open(tree / "etc/hostname", os.O_RDONLY | os.O_NONBLOCK)
    outside = tree.parent / "host-file"
    outside.write_text("host\n")
    (tree / "etc/hosts").symlink_to(outside)
    os.mkfifo(tree / "etc/machine-id")
    cfg = SimpleNamespace(name="new", hostname="new", addresses=())
    try:
        new_identity(tree, cfg, machine_id=True)
    finally:
        os.close(reader)
    assert stat.S_ISREG(os.lstat(tree / "etc/hostname").st_mode)  # (reading a FIFO would hang)
    assert (tree / "etc/hostname").read_text() == "new\n"
    assert stat.S_ISREG(os.lstat(tree / "etc/hosts").st_mode)
    assert outside.read_text() == "host\n"
    assert stat.S_ISFIFO(os.lstat(tree / "etc/machine-id").st_mode)  # left, never opened


# -- walks of guest trees: iterative (3.11's shutil.rmtree and os.walk recurse) ---------
DEPTH = 1500  # > sys.getrecursionlimit() and > a soft RLIMIT_NOFILE of 1024


def _deep(top: Path, depth: int = DEPTH) -> None:
    """``top``/d/d/... ``depth`` deep, a file and a link out at every level."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        os.symlink("/etc", "out", dir_fd=fd)
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_deleting_a_deep_guest_tree(tmp_path: Path) -> None:
    from engine.paths import Paths
    from engine.rootfs import storage

    paths = Paths.from_root(tmp_path)
    _deep(paths.guest_root("deep"))
    (paths.guest_root("deep") / "wide").mkdir()
    for i in range(300):
        (paths.guest_root("deep") / "wide" / str(i)).mkdir()
    try:
        storage.remove(None, paths, "deep")
        assert not paths.guest_root("deep").exists()
    finally:
        safepath.remove_tree(paths.guest_root("deep"))  # pytest's own clean-up recurses
    assert Path("/etc/passwd").exists()  # the links were removed, never followed


def test_remove_tree_takes_files_links_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "l").symlink_to(tmp_path / "keep")
    (tmp_path / "keep").mkdir()
    for name in ("f", "l", "missing"):
        safepath.remove_tree(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_legacy_import_walks_a_deep_directory(tmp_path: Path) -> None:
    from engine.config.legacy import import_guest
    from engine.paths import Paths

    paths = Paths.from_root(tmp_path)
    top = paths.legacy_guest_dir("deep")
    _deep(top / "apps", 1100)
    try:
        result = import_guest(paths, "deep")
    finally:
        safepath.remove_tree(top)  # pytest's own clean-up of tmp_path recurses
    assert any(u.startswith("apps") for u in result.unmapped)
