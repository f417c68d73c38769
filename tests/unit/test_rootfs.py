"""engine.rootfs without root: templates' /etc, names and sizes, procview, path checks."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine import safepath
from engine.errors import ConfigError, VstuiError
from engine.paths import Paths
from engine.rootfs import procview
from engine.rootfs.binds import (
    check_share_source,
    check_share_target,
    is_static,
    open_target,
    resolve_in_guest,
    system_binds,
    template_kind,
)
from engine.rootfs.build import config_values
from engine.rootfs.chroot import address_of
from engine.rootfs.storage import _config_size, _human, read_ext4_super
from engine.rootfs.templates import (
    Template,
    etc_files,
    parse_template,
    safe_members,
)


def test_etc_files_for_a_skeleton_guest() -> None:
    files = etc_files("web", ["eth0:198.18.0.2/24", "2001:db8::5/64"], "/bin/bash",
                      "/usr/sbin/nologin", "ID=debian\n", shadow_group=42, today=20000)  # fmt: skip
    assert files["passwd"].content.splitlines() == [
        "root:x:0:0:root:/root:/bin/bash",
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
    ]
    assert "shadow:x:42:" in files["group"].content
    shadow = files["shadow"]
    assert shadow.content.startswith("root:!:20000:") and (shadow.mode, shadow.gid) == (0o640, 42)
    hosts = files["hosts"].content
    assert "127.0.0.1\tlocalhost" in hosts and "198.18.0.2\tweb" in hosts
    assert "2001:db8::5\tweb" in hosts
    assert files["hostname"].content == "web\n"
    assert files["os-release"].content == "ID=debian\n"
    assert "nameserver" not in files["resolv.conf"].content.replace('"nameserver', "")
    assert files["rc.local"].mode == 0o755 and files["rc.local"].content.startswith("#!/bin/sh")
    assert "exit 0" in files["rc.local"].content
    assert "passwd:         files" in files["nsswitch.conf"].content


def test_etc_files_without_a_shadow_group() -> None:
    files = etc_files("bb")
    assert files["shadow"].mode == 0o600 and files["shadow"].gid == 0
    assert files["passwd"].content.startswith("root:x:0:0:root:/root:/bin/sh\n")
    assert "shadow" not in files["group"].content


@pytest.mark.parametrize(("text", "expected"), [
    (None, Template("skeleton", None)), ("busybox", Template("busybox", None)),
    ("tarball:/srv/img.tar.xz", Template("tarball", "/srv/img.tar.xz")),
    ("debootstrap", Template("debootstrap", None)),
    ("debootstrap:trixie", Template("debootstrap", "trixie")),
])  # fmt: skip
def test_parse_template(text: str | None, expected: Template) -> None:
    assert parse_template(text) == expected


@pytest.mark.parametrize("bad", ["lxc", "tarball", "tarball:", "busybox:x", "skeleton:1"])
def test_parse_template_refuses(bad: str) -> None:
    with pytest.raises(VstuiError):
        parse_template(bad)


def test_template_kind_for_binds() -> None:
    assert template_kind("tarball:/x") == "tarball" and template_kind("") == "skeleton"


def test_address_of() -> None:
    assert address_of("198.18.0.9") == "198.18.0.9"
    assert address_of("dummy0:198.18.0.9/24") == "198.18.0.9"
    assert address_of("fe80::1/64") == "fe80::1"
    assert address_of("nonsense") is None
    iface = SimpleNamespace(interface=__import__("ipaddress").ip_interface("198.18.1.1/16"))
    assert address_of(iface) == "198.18.1.1"


def test_config_values() -> None:
    values = config_values("web", "busybox", None, ["198.18.0.2/24"], {"disk": "2G", "V_PIDS": 50})
    assert values == {
        "S_HOSTNAME": "web", "IPROOT": "198.18.0.2/24", "S_FLAGS": "lock nproc",
        "ULIMIT": "-HS -u 1000", "V_TEMPLATE": "busybox", "V_DISK": "2G", "V_PIDS": "50",
        "V_DISK_BACKEND": "image",
    }  # fmt: skip
    assert config_values("a", "skeleton", "a.example", (), {})["V_DISK_BACKEND"] == "none"
    assert "IPROOT" not in config_values("a", "skeleton", None, (), {})


def test_sizes_are_written_in_the_largest_exact_unit() -> None:
    assert _config_size(4 << 30) == "4G"
    assert _config_size(1536 << 20) == "1536M"
    assert _config_size(4097) == "4097"
    assert _human(64 << 20) == "64.0M" and _human(1 << 30) == "1.0G" and _human(12) == "12"


def test_read_ext4_super(tmp_path: Path) -> None:
    sb = bytearray(1024)
    struct.pack_into("<7I", sb, 0, 16384, 65536, 0, 56000, 16000, 0, 0)
    struct.pack_into("<H", sb, 0x38, 0xEF53)
    struct.pack_into("<I", sb, 0x248, 9500)
    image = tmp_path / "fake.img"
    image.write_bytes(bytes(1024) + bytes(sb))
    got = read_ext4_super(image)
    assert (got.block_size, got.blocks, got.free_blocks) == (1024, 65536 - 9500, 56000)
    assert (got.inodes, got.free_inodes) == (16384, 16000)
    image.write_bytes(bytes(4096))
    with pytest.raises(VstuiError, match="not an ext4 image"):
        read_ext4_super(image)


def test_is_static(tmp_path: Path) -> None:
    if os.path.exists("/bin/busybox"):
        assert is_static(Path("/bin/busybox"))
    assert not is_static(Path("/bin/ls" if os.path.exists("/bin/ls") else "/usr/bin/env"))
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert not is_static(tmp_path / "script")


def test_safe_members_refuses_escapes_and_skips_devices(tmp_path: Path) -> None:
    import io
    import tarfile

    def archive(*members: tarfile.TarInfo) -> tarfile.TarFile:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for m in members:
                tar.addfile(m)
        buf.seek(0)
        return tarfile.open(fileobj=buf)

    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    ok = tarfile.TarInfo("etc")
    ok.type = tarfile.DIRTYPE
    assert [m.name for m in safe_members(archive(ok, dev), "x.tar")] == ["etc"]
    for name in ("../x", "/x", "a/../../x"):
        with pytest.raises(VstuiError, match="leaves the guest tree"):
            safe_members(archive(ok, tarfile.TarInfo(name)), "x.tar")


# -- shares --------------------------------------------------------------------


def test_check_share_target() -> None:
    assert check_share_target("/srv//www/") == "/srv/www"
    assert check_share_target("/srv/../var/www") == "/var/www"
    for bad in ("relative", "/", "/proc/x", "/sys", "/dev/shm", "/srv/../.."):
        with pytest.raises(VstuiError):
            check_share_target(bad)


def test_check_share_source(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path / "root")
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "alias").symlink_to(data)
    assert check_share_source(str(tmp_path / "alias"), paths) == data
    (tmp_path / "etc-link").symlink_to("/etc")
    for bad, why in (("data", "absolute"), (str(tmp_path / "etc-link"), "symlink into /etc"),
                     ("/", "host's /"), ("/sys/kernel", "into /sys"),
                     (str(tmp_path / "missing"), "does not exist")):  # fmt: skip
        with pytest.raises(ConfigError, match=why):
            check_share_source(bad, paths, "web")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        check_share_source(str(tmp_path / "file"), paths)


def test_system_binds_follow_the_host_layout(tmp_path: Path) -> None:
    for name in ("usr", "lib"):
        (tmp_path / name).mkdir()
    (tmp_path / "bin").symlink_to("usr/bin")
    found = system_binds(tmp_path)
    assert [(b.source.name, b.target, b.readonly) for b in found] == [
        ("usr", "/usr", True), ("lib", "/lib", True),
    ]  # fmt: skip


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_guest_paths_stay_in_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      openat2: bool) -> None:  # fmt: skip
    monkeypatch.setattr(safepath, "_have_openat2", None if openat2 else False)
    root = tmp_path / "guest"
    (root / "etc").mkdir(parents=True)
    (root / "a").symlink_to("/etc")
    (root / "b").symlink_to("../../../../../a")
    (root / "loop").symlink_to("loop")
    (root / "file").write_text("")
    for path, where in (("/a", "etc"), ("b", "etc"), ("../../..", ""), ("b/../etc", "etc")):
        assert resolve_in_guest(root, path) == (root / where if where else root), path
    assert resolve_in_guest(root, "/b/new/dir", create_dir=True) == root / "etc/new/dir"
    for bad, why in (("loop", "cannot resolve"), ("/nope", "cannot resolve"),
                     ("file/x", "cannot resolve"), ("file", None)):  # fmt: skip
        with pytest.raises(VstuiError, match=why or "not a directory"):
            os.close(open_target(root, bad, create_dir=why is None))
    with pytest.raises(VstuiError, match="not a directory"):
        open_target(root, "/file/below")


# -- procview --------------------------------------------------------------------


def test_write_view_keeps_the_inode(tmp_path: Path) -> None:
    view = tmp_path / "meminfo"
    procview.write_view(view, "long text here\n")
    inode = view.stat().st_ino
    procview.write_view(view, "short\n")
    assert view.read_text() == "short\n" and view.stat().st_ino == inode


def test_du_cached_parses_its_file_again_only_when_a_walk_replaced_it(tmp_path: Path) -> None:
    from engine.rootfs import du

    paths = Paths.from_root(tmp_path)
    (paths.guest_root("web") / "etc").mkdir(parents=True)
    assert du.cached(paths, "web") is None
    first = du.measure(paths, "web")
    assert du.cached(paths, "web") == first
    assert du.cached(paths, "web") is du.cached(paths, "web")  # not parsed again
    (paths.guest_root("web") / "etc" / "big").write_bytes(b"x" * 65536)
    second = du.measure(paths, "web")  # replaced by rename
    assert du.cached(paths, "web") == second and second.bytes > first.bytes
    du.forget(paths, "web")
    assert du.cached(paths, "web") is None


def test_with_uptime_is_dataclasses_replace_of_the_uptime() -> None:
    import dataclasses

    from engine.datamodel import Gauge, GuestStatus, with_uptime

    g = GuestStatus("web", 40001, "running", 7, ("10.0.0.2",), ("lock",), 2, 1.5,
                    Gauge(1, 2), Gauge(3, None), Gauge(), Gauge(), None, None, 1000, 5.0,
                    ("disk",), (100000, 65536), True)  # fmt: skip
    moved = with_uptime(g, 6.0)
    assert moved == dataclasses.replace(g, uptime=6.0) and type(moved) is GuestStatus
    assert g.uptime == 5.0


def test_the_steadier_copies_are_dataclasses_replace() -> None:
    """with_shown, with_rates and with_rows (the console's copies, by slots) give
    what dataclasses.replace gives; a snapshot's procs-by-xid cache is not
    carried over to other rows."""
    import dataclasses

    from engine.datamodel import (
        Gauge,
        GuestStatus,
        NetStats,
        Snapshot,
        with_rates,
        with_rows,
        with_shown,
    )

    net = NetStats(1, 2, 3, 4, 5, 6, 7.0, 8.0)
    assert with_rates(net, 9.0, 10.0) == dataclasses.replace(net, rx_rate=9.0, tx_rate=10.0)
    g = GuestStatus("web", 40001, "running", 7, ("10.0.0.2",), ("lock",), 2, 1.5,
                    Gauge(1, 2), Gauge(3, None), Gauge(), Gauge(), net, None, 1000, 5.0,
                    ("disk",), (100000, 65536), True)  # fmt: skip
    other = with_rates(net, 0.0, 0.0)
    assert with_shown(g, 2.5, other) == dataclasses.replace(g, cpu_percent=2.5, net=other)
    snap = Snapshot(1.0, 2.0, (g,), (), 4, ("an error",))
    assert snap.procs_of(0) == () and snap._by_xid is not None
    copied = with_rows(snap, (), (g, g))
    assert copied == dataclasses.replace(snap, guests=(g, g)) and copied._by_xid is None
