"""Disk quota backends: ext4 image (ENOSPC, usage, grow, shrink), project detection."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine import _libc, rootfs
from engine.config import load_guest
from engine.errors import KernelError, QuotaError
from engine.paths import Paths
from engine.rootfs import loop, project
from engine.rootfs.storage import CAP_SYS_RESOURCE, has_cap, mounted_source

pytestmark = pytest.mark.root
MB = 1 << 20


def _losetup() -> str:
    return subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


def _fill(path: Path, total: int) -> tuple[int, int]:
    """Write up to ``total`` bytes; (written, errno or 0)."""
    chunk = b"\0" * MB
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while written < total:
            written += os.write(fd, chunk)
        os.fsync(fd)
    except OSError as exc:
        return written, exc.errno or 0
    finally:
        os.close(fd)
    return written, 0


def _df(path: Path) -> tuple[int, int]:
    out = subprocess.run(["df", "-B1", "--output=used,size", str(path)], capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    return int(out[-2]), int(out[-1])


def _check_grown(cfg, vroot: Paths, tree: Path, old_limit: int) -> None:
    assert rootfs.usage(cfg, vroot).bytes_limit > old_limit + 50 * MB
    assert _fill(tree / "big", 40 * MB) == (40 * MB, 0)


def test_image_quota_enospc_usage_and_grow(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "small", "busybox", options={"disk": "64M"})
    assert cfg.disk_backend == "image" and cfg.disk == 64 * MB
    image = vroot.guest_image("small")
    assert os.stat(image).st_blocks * 512 >= 64 * MB  # fallocated: no holes the host could fill
    stopped = rootfs.usage(cfg, vroot)
    with rootfs.prepare_root(cfg, vroot) as handle:
        assert mounted_source(handle.path) in loop.devices_for(image)
        assert (handle.path / "etc/passwd").is_file()
        mounted = rootfs.usage(cfg, vroot)
        assert mounted.bytes_limit == stopped.bytes_limit
        assert abs(mounted.bytes_used - stopped.bytes_used) < MB
        written, err = _fill(handle.path / "big", 100 * MB)
        assert err == errno.ENOSPC and written < 64 * MB
        # the host's own file system is not full: it keeps writing
        assert _fill(vroot.root / "host-file", 8 * MB) == (8 * MB, 0)
        used, size = _df(handle.path)
        now = rootfs.usage(cfg, vroot)
        assert abs(now.bytes_used - used) <= 0.05 * used
        assert abs(now.bytes_limit - size) <= 0.05 * size
        assert now.inodes_used and now.inodes_limit
        with pytest.raises(QuotaError, match="cannot shrink"):
            rootfs.set_quota(cfg, vroot, 16 * MB)
        with pytest.raises(QuotaError, match="offline"):
            rootfs.set_quota(cfg, vroot, now.bytes_used + 4 * MB)
        if has_cap(CAP_SYS_RESOURCE):
            rootfs.set_quota(cfg, vroot, 128 * MB)  # online: the write can go on
            _check_grown(cfg, vroot, handle.path, now.bytes_limit)
        else:  # this sandbox drops CAP_SYS_RESOURCE, which ext4's online resize needs
            print("online grow skipped: no CAP_SYS_RESOURCE here; growing offline")
            with pytest.raises(QuotaError, match="CAP_SYS_RESOURCE"):
                rootfs.set_quota(cfg, vroot, 128 * MB)
    if not has_cap(CAP_SYS_RESOURCE):
        rootfs.set_quota(cfg, vroot, 128 * MB)
        with rootfs.prepare_root(cfg, vroot) as handle:
            _check_grown(cfg, vroot, handle.path, now.bytes_limit)
    assert load_guest(vroot, "small").disk == 128 * MB
    assert loop.devices_for(image) == []
    rootfs.delete(vroot, "small")
    assert not image.exists()


def test_offline_shrink_and_grow(vroot: Paths) -> None:
    rootfs.build(vroot, "off", "busybox", options={"V_DISK": "64M", "V_INODES": "4096"})
    cfg = load_guest(vroot, "off")
    assert rootfs.usage(cfg, vroot).inodes_limit == 4096
    rootfs.set_quota(cfg, vroot, 32 * MB)
    cfg = load_guest(vroot, "off")
    assert cfg.disk == 32 * MB and os.path.getsize(vroot.guest_image("off")) == 32 * MB
    rootfs.set_quota(cfg, vroot, 96 * MB)
    cfg = load_guest(vroot, "off")
    with rootfs.prepare_root(cfg, vroot) as handle:
        assert (handle.path / "bin/busybox").is_file()
        assert rootfs.usage(cfg, vroot).bytes_limit > 64 * MB
    rootfs.delete(vroot, "off")


def test_failed_prepare_leaves_no_loop_device(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "broken", options={"disk": "32M"})
    image = vroot.guest_image("broken")
    with open(image, "r+b") as f:  # wipe the primary superblock
        f.seek(1024)
        f.write(b"\0" * 1024)
    before = _losetup()
    with pytest.raises(KernelError, match="mount"):
        rootfs.prepare_root(cfg, vroot)
    assert loop.devices_for(image) == []
    assert _losetup() == before
    assert mounted_source(vroot.guest_root("broken")) is None


def test_prepare_twice_and_release_twice(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "twice", options={"disk": "32M"})
    first = rootfs.prepare_root(cfg, vroot)
    try:
        second = rootfs.prepare_root(cfg, vroot)  # adopts the existing mount
        assert second.path == first.path
        assert len(loop.devices_for(vroot.guest_image("twice"))) == 1
    finally:
        first.release()
        first.release()
    assert loop.devices_for(vroot.guest_image("twice")) == []


def test_delete_refuses_a_mounted_image(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "held", options={"disk": "32M"})
    with rootfs.prepare_root(cfg, vroot):
        with pytest.raises(Exception, match="is mounted"):
            rootfs.delete(vroot, "held")
    rootfs.delete(vroot, "held")


def test_none_backend_has_no_limit(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "free")
    assert rootfs.usage(cfg, vroot) == rootfs.DiskUsage(None, None, None, None)
    with pytest.raises(QuotaError, match="no disk quota"):
        rootfs.set_quota(cfg, vroot, 64 * MB)
    handle = rootfs.prepare_root(cfg, vroot)
    assert handle.path == vroot.guest_root("free")
    handle.release()


def test_project_backend_on_a_file_system_without_project_quota(vroot: Paths) -> None:
    with pytest.raises(QuotaError, match="does not support project quota.*V_DISK_BACKEND=image"):
        rootfs.build(vroot, "proj", options={"backend": "project", "disk": "64M"})
    assert not vroot.config_file("proj").exists()
    assert not vroot.guest_root("proj").exists()


def test_project_detection_on_an_ext4_with_project_ids(vroot: Paths) -> None:
    """An ext4 without project quota (this kernel cannot mount one with it): explained."""
    image = vroot.root / "prj.img"
    mnt = vroot.root / "prj"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 * MB)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    dev = loop.attach(image)
    try:
        _libc.mount(dev.device, str(mnt), "ext4")
    finally:
        os.close(dev.fd)
    try:
        why = project.supported(mnt)
        assert why is not None
        assert "not enabled" in why, why
    finally:
        _libc.umount(str(mnt))


def _prepare_in_a_child(cfg, vroot: Paths) -> None:
    """prepare_root in a process that exits without release(): a dead supervisor."""
    pid = os.fork()
    if pid == 0:
        try:
            rootfs.prepare_root(cfg, vroot)
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0


def test_release_without_the_handle(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "orphan", options={"disk": "32M"})
    root, image = vroot.guest_root("orphan"), vroot.guest_image("orphan")
    _prepare_in_a_child(cfg, vroot)
    try:
        assert mounted_source(root) in loop.devices_for(image)
    finally:
        rootfs.release(SimpleNamespace(name="orphan"), vroot)  # NAME.conf not needed
    assert mounted_source(root) is None
    assert loop.devices_for(image) == []  # autoclear detached it
    rootfs.release(cfg, vroot)  # idempotent
    _prepare_in_a_child(cfg, vroot)  # and the guest can start again
    rootfs.release(cfg, vroot)
    assert mounted_source(root) is None and loop.devices_for(image) == []


def test_release_leaves_foreign_mounts_and_none_guests_alone(vroot: Paths) -> None:
    cfg = rootfs.build(vroot, "plain")
    root = vroot.guest_root("plain")
    rootfs.release(cfg, vroot)  # backend none: nothing mounted, nothing to do
    assert root.is_dir() and (root / "etc/passwd").is_file()
    _libc.mount("tmpfs", str(root), "tmpfs", 0, "size=1m")
    try:
        rootfs.release(cfg, vroot)
        assert mounted_source(root) == "tmpfs"  # not an image of this guest: not ours
    finally:
        _libc.umount(str(root))
