"""Shares: host-side checks and guest-side resolution that never leaves the tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import _libc, rootfs, safepath
from engine.config import update_config
from engine.errors import ConfigError, VstuiError
from engine.paths import Paths

pytestmark = pytest.mark.root


@pytest.fixture
def guest(vroot: Paths) -> Path:
    rootfs.build(vroot, "sh", "busybox")
    return vroot.guest_root("sh")


def _share(vroot: Paths, words: str):
    return update_config(vroot, "sh", {"V_SHARE": words})


def test_shares_follow_the_skeleton_binds(vroot: Paths, tmp_path: Path) -> None:
    rootfs.build(vroot, "sk")
    data = tmp_path / "data"
    data.mkdir()
    cfg = update_config(vroot, "sk", {"V_SHARE": f"{data}:/srv/data:ro {data}:/mnt/rw:rw"})
    found = rootfs.binds(cfg, vroot)
    assert found[0].source == Path("/usr") and found[0].readonly
    assert found[-2:] == [rootfs.Bind(data, "/srv/data", True, True),
                          rootfs.Bind(data, "/mnt/rw", False, True)]  # fmt: skip


@pytest.mark.parametrize("target", ["/etc", "/etc/ssh", "/root", "/boot"])
def test_host_symlink_into_sensitive_dirs_is_refused(vroot: Paths, guest: Path, tmp_path: Path,
                                                     target: str) -> None:  # fmt: skip
    if not os.path.isdir(target):
        pytest.skip(f"{target} missing on this host")
    link = tmp_path / "innocent"
    link.symlink_to(target)
    cfg = _share(vroot, f"{link}:/srv/x")
    with pytest.raises(ConfigError, match="symlink into"):
        rootfs.binds(cfg, vroot)


def test_host_paths_that_are_never_shared(vroot: Paths, guest: Path, tmp_path: Path) -> None:
    (tmp_path / "root-link").symlink_to("/")
    for host, why in ((str(tmp_path / "root-link"), "host's /"), ("/proc/sys", "into /proc"),
                      (str(vroot.vservers_dir), "vstui's own"), (str(guest), "vstui's own"),
                      (str(tmp_path / "nope"), "does not exist")):  # fmt: skip
        cfg = _share(vroot, f"{host}:/srv/x")
        with pytest.raises(ConfigError, match=why):
            rootfs.binds(cfg, vroot)


def test_guest_side_reserved_paths(vroot: Paths, guest: Path, tmp_path: Path) -> None:
    cfg = _share(vroot, f"{tmp_path}:/proc/x")
    with pytest.raises(VstuiError, match="under /proc"):
        rootfs.binds(cfg, vroot)


@pytest.mark.parametrize("planted", ["/etc", "../../../../../../etc", "/../../etc", "../.."])
def test_resolve_in_guest_never_leaves_the_tree(guest: Path, planted: str) -> None:
    (guest / "srv/www").parent.mkdir(exist_ok=True)
    os.symlink(planted, guest / "srv/www")
    found = rootfs.resolve_in_guest(guest, "/srv/www")
    assert (
        found == guest / os.path.normpath(planted.replace("..", "")).lstrip("/") or found == guest
    )
    assert str(found).startswith(str(guest))
    assert rootfs.resolve_in_guest(guest, "/../../../etc") == guest / "etc"


def test_open_target_creates_missing_dirs_inside(guest: Path) -> None:
    os.symlink("/opt", guest / "srv/link")
    fd = rootfs.open_target(guest, "/srv/link/deep/er")
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(guest / "opt/deep/er")
    finally:
        os.close(fd)
    os.symlink("/nowhere/x", guest / "srv/dangling")
    (guest / "srv/file").write_text("")
    for bad in ("/srv/file", "/srv/file/below"):
        with pytest.raises(VstuiError):
            os.close(rootfs.open_target(guest, bad))


def test_walk_fallback_agrees_with_openat2(guest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.symlink("/etc", guest / "srv/e")
    os.symlink("../../../../srv/e/../../etc", guest / "srv/f")
    for path in ("srv/e", "srv/f", "../../etc", "srv/e/passwd"):
        monkeypatch.setattr(safepath, "_have_openat2", None)
        one = rootfs.resolve_in_guest(guest, path)
        monkeypatch.setattr(safepath, "_have_openat2", False)
        assert rootfs.resolve_in_guest(guest, path) == one, path


def test_planted_symlink_cannot_redirect_a_share_mount(vroot: Paths, guest: Path,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """Bind a share through open_target: it lands in the guest's /etc, not the host's."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "marker").write_text("shared")
    decoy = tmp_path / "decoy"  # the guest wants the mount to land on this host dir
    decoy.mkdir()
    os.symlink(str(decoy), guest / "srv/www")  # absolute link to a host path
    with pytest.raises(VstuiError, match="cannot resolve"):  # dangling inside the tree
        rootfs.open_target(guest, "/srv/www")
    (guest / str(decoy).lstrip("/")).mkdir(parents=True)
    cfg = _share(vroot, f"{share}:/srv/www:ro")
    bind = rootfs.binds(cfg, vroot)[-1]
    src = os.open(bind.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    dst = rootfs.open_target(guest, bind.target)
    landed = Path(os.readlink(f"/proc/self/fd/{dst}"))
    try:
        _libc.mount(f"/proc/self/fd/{src}", f"/proc/self/fd/{dst}", None, _libc.MS_BIND)
        try:
            assert landed == guest / str(decoy).lstrip("/")
            assert (landed / "marker").read_text() == "shared"
            assert os.listdir(decoy) == []
        finally:
            _libc.umount(str(landed))
    finally:
        os.close(src)
        os.close(dst)
    assert os.listdir(landed) == []
