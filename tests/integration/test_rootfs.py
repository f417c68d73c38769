"""Guest trees from templates, delete, the barrier, tarball safety (needs root)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine import rootfs
from engine.config import load_guest
from engine.errors import BarrierError, GuestNotFound, GuestRunning, VstuiError
from engine.paths import Paths
from engine.rootfs import guestinit
from engine.rootfs.debootstrap import cache_dir, parse_include
from engine.rootfs.templates import TemplateArgs
from tests.integration.debian_mirror import skip_if_unreachable
from tests.integration.test_systemd_guest import CACHE as SYSTEMD_CACHE
from tests.integration.test_systemd_guest import INCLUDE as SYSTEMD_INCLUDE
from tests.integration.test_systemd_guest import SUITES as SYSTEMD_SUITES

pytestmark = pytest.mark.root


def _host_root_hash() -> str | None:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields[1]) > 2:
            return fields[1]
    return None


def _no_host_secrets(tree: Path) -> None:
    secret = _host_root_hash()
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 20:
            if secret:
                assert secret.encode() not in path.read_bytes(), path
    assert not list(tree.glob("etc/ssh/ssh_host_*")), "ssh host keys copied"
    assert sorted(os.listdir(tree / "root")) == []


def test_skeleton_tree(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "web", addresses=["198.18.0.2/24"], hostname="web.test")
    tree = vroot.guest_root("web")
    assert stat.S_IMODE(os.stat(vroot.vservers_dir).st_mode) == 0
    assert os.stat(vroot.vservers_dir).st_uid == 0
    rootfs.check_barrier(vroot)
    assert cfg.template == "skeleton" and cfg.disk_backend == "none"
    assert cfg.hostname == "web.test" and cfg.has_flag("lock") and cfg.pids_limit() == 1000
    assert str(cfg.addresses[0].interface) == "198.18.0.2/24"
    passwd = (tree / "etc/passwd").read_text()
    assert passwd.startswith("root:x:0:0:root:/root:/bin/")
    assert "nobody:x:65534" in passwd
    shadow = tree / "etc/shadow"
    assert shadow.read_text().startswith("root:!:")
    assert stat.S_IMODE(shadow.stat().st_mode) in (0o640, 0o600)
    assert "198.18.0.2\tweb.test" in (tree / "etc/hosts").read_text()
    assert (tree / "etc/hostname").read_text() == "web.test\n"
    assert (tree / "etc/os-release").read_text() == Path("/usr/lib/os-release").read_text()
    assert os.access(tree / "etc/rc.local", os.X_OK)
    assert stat.S_IMODE((tree / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((tree / "root").stat().st_mode) == 0o700
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            assert os.readlink(tree / name) == os.readlink(host)
    assert (tree / "usr").is_dir() and not os.listdir(tree / "usr")
    assert rootfs.binds(cfg, vroot)[0] == rootfs.Bind(Path("/usr"), "/usr", True, True)
    assert (tree / "etc/ld.so.cache").read_bytes() == Path("/etc/ld.so.cache").read_bytes()
    assert (tree / "etc/ld.so.conf").read_text() == Path("/etc/ld.so.conf").read_text()
    assert sorted(os.listdir(tree / "etc/ld.so.conf.d")) == sorted(os.listdir("/etc/ld.so.conf.d"))
    _no_host_secrets(tree)


def _loader_trace(tree: Path) -> str:
    """LD_DEBUG=libs of /usr/bin/true in the tree, its system dirs bound as at start."""
    binds = " && ".join(
        f"mount --rbind -o ro /{name} {tree}/{name}"
        for name in ("usr", "bin", "sbin", "lib", "lib64")
        if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}")
    )
    script = f"{binds} && exec chroot {tree} /usr/bin/env LD_DEBUG=libs /usr/bin/true"
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stderr


def test_skeleton_guest_loads_libc_from_the_cache(vroot: Paths) -> None:
    if not Path("/etc/ld.so.cache").is_file():
        pytest.skip("this host has no /etc/ld.so.cache")
    rootfs.build(vroot, "ld")
    tree = vroot.guest_root("ld")
    trace = _loader_trace(tree)
    assert "search cache=/etc/ld.so.cache" in trace
    assert trace.count("trying file=") == 1  # libc straight from the cache: no probing
    (tree / "etc/ld.so.cache").unlink()
    assert _loader_trace(tree).count("trying file=") > 1  # the probing the copy avoids


def test_busybox_tree_binds_the_hosts_one_busybox(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "bb", "busybox")
    tree = vroot.guest_root("bb")
    host = Path(os.path.realpath("/bin/busybox"))
    assert rootfs.binds(cfg, vroot) == [rootfs.Bind(host, "/bin/busybox", True, False)]
    assert (tree / "bin/busybox").stat().st_size == 0  # a placeholder, not a copy
    assert not os.path.lexists(tree / "etc/ld.so.cache")  # static busybox: no loader
    assert os.readlink(tree / "sbin/init") == "/bin/busybox"
    assert os.readlink(tree / "bin/sh") == "/bin/busybox"
    assert (tree / "etc/hostname").read_text().split() == ["bb"]
    _no_host_secrets(tree)


def test_build_refuses_existing_and_bad_names(vroot: Paths) -> None:
    rootfs.build(vroot, "one")
    with pytest.raises(VstuiError, match="already exists"):
        rootfs.build(vroot, "one", "busybox")
    with pytest.raises(VstuiError, match="unknown template"):
        rootfs.build(vroot, "two", "nosuch")
    assert not vroot.config_file("two").exists()


def test_delete_removes_everything(vroot: Paths) -> None:
    rootfs.build(vroot, "gone", "busybox")
    run = vroot.run_dir("gone")
    run.mkdir(parents=True)
    (run / "state").write_text("stopped\n")
    vroot.log_dir.mkdir(parents=True)
    vroot.log_file("gone").write_text("log\n")
    rootfs.delete(vroot, "gone")
    for path in (vroot.guest_root("gone"), vroot.config_file("gone"), run, vroot.log_file("gone")):
        assert not os.path.lexists(path), path
    with pytest.raises(GuestNotFound):
        rootfs.delete(vroot, "gone")


def test_delete_refuses_running_unless_forced(vroot: Paths) -> None:
    rootfs.build(vroot, "live")
    run = vroot.run_dir("live")
    run.mkdir(parents=True)
    (run / "state").write_text("running\n")
    (run / "init.pid").write_text(f"{os.getpid()}\n")
    with pytest.raises(GuestRunning, match="stop it first"):
        rootfs.delete(vroot, "live")
    assert vroot.guest_root("live").is_dir()
    rootfs.delete(vroot, "live", force=True)
    assert not vroot.guest_root("live").exists()


def test_delete_refuses_a_mount_in_the_tree(vroot: Paths) -> None:
    rootfs.build(vroot, "busy")
    target = vroot.guest_root("busy") / "mnt"
    subprocess.run(["mount", "-t", "tmpfs", "none", str(target)], check=True)
    try:
        (target / "host-data").write_text("keep")
        with pytest.raises(GuestRunning, match="is mounted"):
            rootfs.delete(vroot, "busy")
        assert (target / "host-data").read_text() == "keep"
    finally:
        subprocess.run(["umount", str(target)], check=True)
    rootfs.delete(vroot, "busy")


def test_barrier_errors_name_the_fix(vroot: Paths) -> None:
    with pytest.raises(BarrierError, match="mkdir -m 000"):
        rootfs.check_barrier(vroot)
    rootfs.build(vroot, "b")
    os.chmod(vroot.vservers_dir, 0o755)
    with pytest.raises(BarrierError, match="chmod 000"):
        rootfs.check_barrier(vroot)
    os.chmod(vroot.vservers_dir, 0)
    os.chmod(vroot.guest_root("b"), 0o777)
    with pytest.raises(BarrierError, match="writable by others"):
        rootfs.check_barrier(vroot)


# -- tarball -----------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
         linkname: str = "", mode: int = 0o644, uid: int = 0) -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, uid, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _archive(path: Path, members: list[dict]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            _add(tar, **member)
    return path


PASSWD = b"root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/:/bin/sh\n"


def test_tarball_guest_keeps_modes_owners_and_symlinks(vroot: Paths, tmp_path: Path) -> None:
    marker = f"vstui-pwned-{os.getpid()}-{tmp_path.name}"
    source = _archive(tmp_path / "img.tar.gz", [
        {"name": "./etc", "kind": tarfile.DIRTYPE, "mode": 0o755},
        {"name": "./etc/passwd", "data": PASSWD},
        {"name": "./usr/bin/su", "data": b"#!/bin/sh\n", "mode": 0o4755},
        {"name": "./home/alice/file", "data": b"hi", "uid": 1000},
        {"name": "./etc/localtime", "kind": tarfile.SYMTYPE, "linkname": "/usr/share/zoneinfo/UTC"},
        {"name": "./dev/sda", "kind": tarfile.BLKTYPE},
        # a symlink to the host's /etc, then a file "through" it: must stay in the tree
        {"name": "./escape", "kind": tarfile.SYMTYPE, "linkname": "/etc"},
        {"name": f"./escape/{marker}", "data": b"x"},
    ])  # fmt: skip
    rootfs.build(vroot, "img", f"tarball:{source}")
    tree = vroot.guest_root("img")
    assert "alice" in (tree / "etc/passwd").read_text()  # the image's users are kept
    assert stat.S_IMODE((tree / "usr/bin/su").stat().st_mode) == 0o4755
    assert (tree / "home/alice/file").stat().st_uid == 1000
    assert os.readlink(tree / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert not os.path.lexists(tree / "dev/sda")
    assert not os.path.lexists(Path("/etc") / marker)
    assert (tree / "etc" / marker).is_file()
    assert (tree / "etc/hostname").read_text() == "img\n"


def test_tarball_symlink_to_a_host_dir_writes_nothing_there(vroot: Paths, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    source = _archive(tmp_path / "out.tar", [
        {"name": "escape", "kind": tarfile.SYMTYPE, "linkname": str(outside)},
        {"name": "escape/pwned", "data": b"x"},
    ])  # fmt: skip
    with pytest.raises(VstuiError, match="unpacking failed"):
        rootfs.build(vroot, "out", f"tarball:{source}")
    assert os.listdir(outside) == []
    assert not vroot.guest_root("out").exists() and not vroot.config_file("out").exists()


@pytest.mark.parametrize("evil", [
    {"name": "../evil", "data": b"x"},
    {"name": "/abs/evil", "data": b"x"},
    {"name": "ok/../../evil", "data": b"x"},
    {"name": "hard", "kind": tarfile.LNKTYPE, "linkname": "../../etc/passwd"},
])  # fmt: skip
def test_tarball_with_escaping_members_is_refused(vroot: Paths, tmp_path: Path, evil) -> None:
    source = _archive(tmp_path / "evil.tar.gz", [{"name": "etc", "kind": tarfile.DIRTYPE}, evil])
    with pytest.raises(VstuiError, match="leaves the guest tree"):
        rootfs.build(vroot, "evil", f"tarball:{source}")
    assert not vroot.config_file("evil").exists()
    assert not vroot.guest_root("evil").exists()
    assert not (tmp_path / "evil").exists() and not Path("/abs").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a machine's first run downloads the suite (then it is cached)
@pytest.mark.parametrize("suite", SYSTEMD_SUITES)
def test_debootstrap_guest_is_a_bootable_system(vroot: Paths, suite: str) -> None:
    """The template's tree boots systemd: the shared test cache, as test_systemd_guest."""
    args = TemplateArgs(
        include=parse_include([SYSTEMD_INCLUDE]), cache=cache_dir(Path(SYSTEMD_CACHE))
    )
    try:
        cfg = rootfs.build(vroot, "deb", f"debootstrap:{suite}", template_args=args)
    except VstuiError as e:
        skip_if_unreachable(str(e))
        raise
    tree = vroot.guest_root("deb")
    assert (tree / "usr/bin/apt-get").exists() and (tree / "usr/sbin/nginx").exists()
    assert (tree / "etc/hostname").read_text() == "deb\n"
    assert load_guest(vroot, "deb").template == cfg.template
    assert "fakeinit" in cfg.flags and guestinit.inspect(tree).systemd
    assert guestinit.warnings(cfg, tree) == []
    assert (tree / "etc/machine-id").read_text() == ""  # the guest's systemd makes its own
    assert (tree / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
