"""Safe path resolution inside a guest tree, against planted symlinks.

Each test runs twice: with openat2(2) and with the O_PATH walk used on
kernels that lack it. The tree lives under tmp_path; "the host" is a sibling
directory the symlinks try to reach.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import safepath


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(safepath, "_have_openat2", request.param == "openat2")
    return request.param


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path, int]]:
    """(guest root, host dir, O_PATH fd of the root) with hostile symlinks planted."""
    root, host = tmp_path / "guest", tmp_path / "host"
    for d in (root / "etc", root / "dev", root / "var/lib", host / "etc"):
        d.mkdir(parents=True)
    (root / "etc/passwd").write_text("guest\n")
    (host / "etc/passwd").write_text("host\n")
    (host / "secret").write_text("host secret\n")
    depth = "../" * (len(root.parts) + 3)
    links = {
        "abs": str(host),  # absolute: means <root>/<host path>
        "etcabs": "/etc",
        "up": depth + "etc",  # relative escape: clamped at the root
        "uphost": os.path.relpath(host, root),  # ../host: clamped
        "dev/null": "/proc/sys/kernel/core_pattern",  # CVE-2025-31133 shape
        "dev/console": os.path.relpath(host / "secret", root / "dev"),
        "var/lib/loop": "../../var/lib/loop",  # a loop: ELOOP
        "self": "/proc/self/root",  # magic link, if /proc were inside
        "chain": "etcabs/../../../../etc",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    fd = safepath.open_root(root)
    try:
        yield root, host, fd
    finally:
        os.close(fd)


def where(fd: int) -> str:
    try:
        return os.readlink(safepath.fd_path(fd))
    finally:
        os.close(fd)


def test_plain_paths_resolve(mode: str, tree: tuple[Path, Path, int]) -> None:
    root, _, fd = tree
    assert where(safepath.open_in_root(fd, "/etc/passwd")) == str(root / "etc/passwd")
    assert where(safepath.open_in_root(fd, "etc//./passwd")) == str(root / "etc/passwd")
    assert where(safepath.open_in_root(fd, "/")) == str(root)


@pytest.mark.parametrize("link", ["etcabs", "up", "chain"])
def test_escaping_symlinks_land_on_guest_etc(
    mode: str, tree: tuple[Path, Path, int], link: str
) -> None:
    root, _, fd = tree
    got = safepath.open_in_root(fd, f"{link}/passwd", os.O_RDONLY)
    with os.fdopen(got) as f:
        assert f.read() == "guest\n"


@pytest.mark.parametrize(
    "path", ["abs/secret", "uphost/secret", "../host/secret", "/../../host/etc/passwd"]
)
def test_host_files_are_unreachable(mode: str, tree: tuple[Path, Path, int], path: str) -> None:
    _, _, fd = tree
    with pytest.raises(FileNotFoundError):
        safepath.open_in_root(fd, path, os.O_RDONLY)


def test_dev_symlinks_resolve_inside(mode: str, tree: tuple[Path, Path, int]) -> None:
    root, _, fd = tree
    with pytest.raises(FileNotFoundError):  # no <root>/proc/sys/kernel/core_pattern
        safepath.open_in_root(fd, "/dev/null", os.O_WRONLY)
    with pytest.raises(FileNotFoundError):  # ../../host/secret clamps to <root>/host
        safepath.open_in_root(fd, "/dev/console", os.O_RDWR)
    link = safepath.open_in_root(fd, "/dev/null", os.O_PATH | os.O_NOFOLLOW)
    assert where(link) == str(root / "dev/null")  # the symlink itself, not its target


def test_symlink_loop_is_eloop(mode: str, tree: tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    with pytest.raises(OSError) as info:
        safepath.open_in_root(fd, "var/lib/loop/x")
    assert info.value.errno == errno.ELOOP


def test_no_symlinks_option(mode: str, tree: tuple[Path, Path, int]) -> None:
    _, _, fd = tree
    with pytest.raises(OSError) as info:
        safepath.open_in_root(fd, "etcabs/passwd", resolve=safepath.RESOLVE_NO_SYMLINKS)
    assert info.value.errno == errno.ELOOP


def test_magic_links_refused_openat2() -> None:
    # /proc/self/root is a magic link to "/" (the host): never followed
    proc = safepath.open_root("/proc")
    try:
        with pytest.raises(OSError) as info:
            safepath.openat2(proc, "self/root/etc/hostname", os.O_RDONLY)
        assert info.value.errno in (errno.ELOOP, errno.EXDEV)
    finally:
        os.close(proc)


def test_magic_links_read_as_text_by_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safepath, "_have_openat2", False)
    proc = safepath.open_root("/proc")
    try:
        # the link's text "/" is taken inside the root (/proc): lands on /proc itself
        got = safepath.open_in_root(proc, "self/root")
        assert where(got) == "/proc"
        with pytest.raises(FileNotFoundError):
            safepath.open_in_root(proc, "self/root/etc/hostname")
    finally:
        os.close(proc)


def test_mkdirs_follows_links_inside_only(mode: str, tree: tuple[Path, Path, int]) -> None:
    root, host, fd = tree
    with pytest.raises(FileNotFoundError):  # dangling inside the root: refused, like mkdir -p
        safepath.mkdirs_in_root(fd, "/abs/new/dir")
    made = safepath.mkdirs_in_root(fd, "up/sub")
    assert where(made) == str(root / "etc/sub")
    assert not (host / "new").exists() and not (host / "etc/sub").exists()
    with pytest.raises(NotADirectoryError):
        safepath.mkdirs_in_root(fd, "etc/passwd/x")


def test_create_flags(mode: str, tree: tuple[Path, Path, int]) -> None:
    root, _, fd = tree
    new = safepath.open_in_root(fd, "etc/new", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(new, b"x")
    os.close(new)
    assert (root / "etc/new").read_bytes() == b"x"
    assert (root / "etc/new").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        safepath.open_in_root(fd, "etc/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def test_fd_survives_a_swap_to_symlink(mode: str, tree: tuple[Path, Path, int]) -> None:
    # the CVE-2021-30465 race: the target is swapped for a symlink after we
    # resolved it. The fd (and fd_path) still names the directory we checked.
    root, host, fd = tree
    target = safepath.mkdirs_in_root(fd, "/srv/share")
    (root / "srv/share").rename(root / "srv/moved")
    os.symlink(str(host), root / "srv/share")
    try:
        assert os.readlink(safepath.fd_path(target)) == str(root / "srv/moved")
    finally:
        os.close(target)


def test_fd_path_form() -> None:
    assert safepath.fd_path(7) == "/proc/self/fd/7"


def test_identity_is_reached_without_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    st = real.stat()
    assert safepath.identity(real) == (st.st_dev, st.st_ino)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError) as caught:
        safepath.identity(tmp_path / "link/.")  # any component, not only the last
    assert caught.value.errno == errno.ELOOP
