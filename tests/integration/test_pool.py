"""The btrfs backend and the pool on the real kernel: limits, growth, disk figures, onboot.

Every test makes its own pool under its own root (pool file, mount point and
loop device are the root's), and the ``vroot`` fixture fails it if a mount or
loop device is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from engine import rootfs
from engine.config import load_guest
from engine.paths import Paths
from tests.integration.storage_helpers import ok, pool, refused, tree, vserver

pytestmark = pytest.mark.root


def status_json(paths: Paths, name: str) -> dict:
    result = vserver(paths, name, "status", "--json")
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def test_pool_create_status_grow_remove(vroot: Paths) -> None:
    with pool(vroot, "256M"):
        data = json.loads(ok(vserver(vroot, "--pool", "status", "--json")))
        assert data["mounted"] and data["size"] == 256 << 20 and data["guests"] == []
        assert data["allocated"] < 64 << 20  # sparse: the host pays for what is written
        assert os.stat(vroot.pool_image).st_mode & 0o777 == 0o600
        text = ok(vserver(vroot, "--pool", "status"))
        assert "mounted on" in text and "256.0M" in text
        refused(vserver(vroot, "--pool", "create", "1G"), "", "a pool exists already")
        ok(vserver(vroot, "--pool", "grow", "384M"))
        data = json.loads(ok(vserver(vroot, "--pool", "status", "--json")))
        assert data["size"] == 384 << 20 and data["used"] + data["free"] > 300 << 20
        refused(vserver(vroot, "--pool", "grow", "200M"), "", "it can only grow")
        ok(vserver(vroot, "g", "build", "-m", "busybox"))
        refused(vserver(vroot, "--pool", "remove"), "", "holds guests (g)")
        ok(vserver(vroot, "g", "delete"))
    assert not vroot.pool_image.exists() and not vroot.pool_dir.exists()


def test_pool_refuses_bad_sizes(vroot: Paths) -> None:
    refused(vserver(vroot, "--pool", "create", "64M"), "", "too small; use 128M or more")
    refused(vserver(vroot, "--pool", "create", "1000T"), "", "choose a smaller SIZE")
    refused(vserver(vroot, "--pool", "status"), "", "there is no pool; make one")
    assert not vroot.pool_image.exists()


def test_btrfs_guest_limit_grow_shrink_online(vroot: Paths) -> None:
    with pool(vroot):
        ok(vserver(vroot, "g", "build", "-m", "busybox", "--set", "V_DISK=64M"))
        assert load_guest(vroot, "g").disk_backend == "btrfs"  # the pool takes new guests
        ok(vserver(vroot, "g", "start"))
        try:
            write = vserver(vroot, "g", "exec", "/bin/sh", "-c",
                            "dd if=/dev/zero of=/root/big bs=1M count=100 conv=fsync")  # fmt: skip
            assert write.returncode != 0 and "quota exceeded" in write.stderr.lower()
            size = (tree(vroot, "g") / "root/big").stat().st_size
            assert 32 << 20 < size <= 64 << 20
            data = status_json(vroot, "g")
            assert data["disk_limit"] == 64 << 20 and 32 << 20 < data["disk_used"] <= 66 << 20
            refused(vserver(vroot, "g", "quota", "16M"), "g", "cannot shrink")
            ok(vserver(vroot, "g", "quota", "160M"))  # online: a qgroup change
            assert load_guest(vroot, "g").disk == 160 << 20
            more = vserver(vroot, "g", "exec", "/bin/sh", "-c",
                           "dd if=/dev/zero of=/root/more bs=1M count=40 conv=fsync")  # fmt: skip
            assert more.returncode == 0, more.stderr
            ok(vserver(vroot, "g", "exec", "rm", "/root/big", "/root/more"))
            ok(vserver(vroot, "g", "quota", "32M"))  # shrinking above use works online too
            assert status_json(vroot, "g")["disk_limit"] == 32 << 20
        finally:
            ok(vserver(vroot, "g", "stop"))
        assert vroot.guest_root("g").is_dir() and not os.listdir(vroot.guest_root("g"))


def test_btrfs_refuses_inode_quota(vroot: Paths) -> None:
    with pool(vroot):
        result = vserver(vroot, "g", "build", "--set", "V_DISK=64M", "--set", "V_INODES=1000")
        refused(result, "g", "V_INODES", "btrfs has no inode quota")
        assert not vroot.config_file("g").exists()
        assert not (vroot.pool_dir / "guests/g").exists()


def test_btrfs_needs_btrfs_or_a_pool(vroot: Paths) -> None:
    result = vserver(vroot, "g", "build", "--set", "V_DISK_BACKEND=btrfs")
    refused(result, "g", "needs", "on btrfs or a pool", "vserver --pool create")
    assert not vroot.config_file("g").exists() and not vroot.guest_root("g").exists()


def test_btrfs_on_a_btrfs_vservers_without_pool(vroot: Paths) -> None:
    """/vservers itself on btrfs: each guest root is a subvolume, no pool, no bind."""
    image = vroot.root / "vservers.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    vroot.vservers_dir.mkdir(mode=0)
    subprocess.run(["mount", "-o", "loop", str(image), str(vroot.vservers_dir)], check=True)
    try:
        os.chmod(vroot.vservers_dir, 0)
        subprocess.run(["btrfs", "quota", "enable", str(vroot.vservers_dir)], check=True)
        subprocess.run(["btrfs", "quota", "rescan", "-w", str(vroot.vservers_dir)], check=True)
        ok(vserver(vroot, "v", "build", "-m", "busybox", "--set", "V_DISK_BACKEND=btrfs",
                   "--set", "V_DISK=64M"))  # fmt: skip
        assert os.stat(vroot.guest_root("v")).st_ino == 256  # a subvolume root
        assert status_json(vroot, "v")["disk_limit"] == 64 << 20
        ok(vserver(vroot, "v", "start"))
        ok(vserver(vroot, "v", "snapshot", "create", "s1"))
        assert (vroot.vservers_dir / ".snapshots/v/s1").is_dir()
        ok(vserver(vroot, "v", "stop"))
        ok(vserver(vroot, "v", "delete"))
        assert os.listdir(vroot.vservers_dir) == []
    finally:
        subprocess.run(["umount", "-d", str(vroot.vservers_dir)], check=True)


def test_disk_figures_agree_everywhere(vroot: Paths) -> None:
    """status --json, --list --json, quota --json and the console's observer: one figure."""
    from engine.observe import Observer

    ok(vserver(vroot, "img", "build", "-m", "busybox", "--set", "V_DISK=32M"))
    ok(vserver(vroot, "plain", "build", "-m", "busybox"))
    assert status_json(vroot, "plain")["disk_used"] is None  # never walked yet
    with pool(vroot):
        ok(vserver(vroot, "bt", "build", "-m", "busybox", "--set", "V_DISK=64M"))
        for name in ("img", "bt"):
            ok(vserver(vroot, name, "start"))
        try:
            # fill the image guest to over 90%: the console must say so, not 0%
            vserver(vroot, "img", "exec", "/bin/sh", "-c", "dd if=/dev/zero of=/root/f bs=1M")
            ok(vserver(vroot, "bt", "exec", "/bin/sh", "-c",
                       "dd if=/dev/zero of=/root/f bs=1M count=20 conv=fsync"))  # fmt: skip
            observer = Observer(vroot)
            snap = observer.snapshot()
            listed = {e["name"]: e for e in json.loads(ok(vserver(vroot, "--list", "--json")))}
            for name in ("img", "bt"):
                data = status_json(vroot, name)
                gauge = snap.guest(name).disk
                assert data["disk_limit"] == listed[name]["disk_limit"] == gauge.limit
                assert abs(data["disk_used"] - gauge.used) < 1 << 20
            assert snap.guest("img").disk.ratio > 0.9
            assert 0.25 < snap.guest("bt").disk.ratio < 0.5
        finally:
            for name in ("img", "bt"):
                vserver(vroot, name, "stop")
        # a plain-directory guest: the observer started a background walk
        from engine.rootfs import du

        deadline = time.monotonic() + 60
        while du.cached(vroot, "plain") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        data = status_json(vroot, "plain")
        assert data["disk_used"] > 100_000 and data["disk_measured"] > 0
        assert data["inodes_used"] > 10 and data["disk_limit"] is None
        ok(vserver(vroot, "plain", "delete"))
        ok(vserver(vroot, "img", "delete"))


def test_onboot_mounts_the_pool_again(vroot: Paths) -> None:
    with pool(vroot):
        ok(vserver(vroot, "b", "build", "-m", "busybox", "--set", "ONBOOT=yes"))
        subprocess.run(["umount", str(vroot.pool_dir)], check=True)  # as after a reboot
        assert not os.path.ismount(vroot.pool_dir)
        ok(vserver(vroot, "--onboot", "start"))
        try:
            assert os.path.ismount(vroot.pool_dir)
            assert ok(vserver(vroot, "b", "exec", "cat", "/etc/hostname")) == "b\n"
        finally:
            ok(vserver(vroot, "--onboot", "stop"))


def test_defaults_conf_gives_new_guests_their_keys(vroot: Paths) -> None:
    vroot.config_dir.mkdir(parents=True, exist_ok=True)  # the guest mode may have made it
    mode = vroot.defaults_file.read_text() if vroot.defaults_file.exists() else ""
    vroot.defaults_file.write_text("# host defaults\nV_DISK=32M\nV_MEMORY=128M\n" + mode)
    ok(vserver(vroot, "d1", "build", "-m", "busybox"))
    cfg = load_guest(vroot, "d1")
    assert (cfg.disk, cfg.memory, cfg.disk_backend) == (32 << 20, 128 << 20, "image")
    ok(vserver(vroot, "d2", "build", "-m", "busybox", "--set", "V_MEMORY=64M"))
    assert load_guest(vroot, "d2").memory == 64 << 20  # the command line wins
    assert [e["name"] for e in json.loads(ok(vserver(vroot, "--list", "--json")))] == [
        "d1", "d2"]  # fmt: skip
    vroot.defaults_file.write_text("V_DISK=lots\n")
    refused(vserver(vroot, "d3", "build"), "d3", "defaults.conf:1: V_DISK")
    vroot.defaults_file.write_text("S_CONTEXT=40100\n")
    refused(vserver(vroot, "d3", "build"), "d3", "cannot be a default")
    refused(vserver(vroot, "defaults", "build"), "", "is reserved")
    assert not vroot.config_file("d3").exists()
    for name in ("d1", "d2"):
        rootfs.delete(vroot, name)


NESTED = """
import errno, fcntl, os, struct
args = bytearray(4096)
args[56:62] = b"nested"
fd = os.open("/root", os.O_RDONLY | os.O_DIRECTORY)
try:
    fcntl.ioctl(fd, 0x50009418, args)  # BTRFS_IOC_SUBVOL_CREATE_V2
    print("created")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def test_a_guest_cannot_escape_its_quota_by_a_nested_subvolume(vroot: Paths) -> None:
    """A new subvolume is not counted in its parent's qgroup: guests may not make one."""
    with pool(vroot):
        ok(vserver(vroot, "g", "build", "--set", "V_DISK=64M"))  # skeleton: the host's python
        ok(vserver(vroot, "g", "start"))
        try:
            assert ok(vserver(vroot, "g", "exec", "python3", "-c", NESTED)) == "EPERM\n"
        finally:
            ok(vserver(vroot, "g", "stop"))
        assert not (tree(vroot, "g") / "root/nested").exists()


def fill_up(path) -> None:
    """Write into ``path`` until the file system says ENOSPC."""
    chunk = os.urandom(1 << 20)
    try:
        with open(path, "wb") as f:
            while True:
                f.write(chunk)
                f.flush()
    except OSError as exc:
        assert exc.errno == 28, exc
    os.sync()


def test_a_full_pool_refuses_in_one_line_and_leaves_nothing(vroot: Paths) -> None:
    with pool(vroot, "128M"):
        ok(vserver(vroot, "g", "build", "-m", "busybox"))
        fill_up(tree(vroot, "g") / "root/fill")
        full = "the pool is full; grow it (vserver --pool grow SIZE)"
        refused(vserver(vroot, "k", "build", "-m", "busybox"), "k", full)
        assert not vroot.config_file("k").exists() and not (vroot.pool_dir / "guests/k").exists()
        refused(vserver(vroot, "g", "clone", "h"), "h", full)
        assert not vroot.config_file("h").exists() and not (vroot.pool_dir / "guests/h").exists()
        taken = vserver(vroot, "g", "snapshot", "create", "s1")
        if taken.returncode != 0:  # btrfs may still find metadata room for it
            refused(taken, "g", full)
            assert ok(vserver(vroot, "g", "snapshot", "list")) == ""
            assert not (vroot.pool_dir / "snapshots/g/s1").exists()
        ok(vserver(vroot, "--pool", "grow", "384M"))
        ok(vserver(vroot, "g", "snapshot", "create", "s2"))
        ok(vserver(vroot, "g", "clone", "h"))
        assert (tree(vroot, "h") / "etc/hostname").read_text() == "h\n"
