"""``vserver SRC clone DST`` and ``vserver NAME export`` / ``build -t export:FILE``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from engine.config import load_guest
from engine.errors import VstuiError
from engine.paths import Paths
from engine.rootfs import archive
from engine.runtime import state
from tests.integration.storage_helpers import address, ok, pool, refused, tree, vserver

pytestmark = pytest.mark.root


def sh(paths: Paths, name: str, script: str) -> str:
    return ok(vserver(paths, name, "exec", "/bin/sh", "-c", script))


def test_clone_runs_beside_its_source(vroot: Paths) -> None:
    src_ip, dst_ip = address(vroot, 2), address(vroot, 3)
    with pool(vroot):
        ok(vserver(vroot, "src", "build", "-m", "busybox", "--ip", src_ip, "--set", "V_DISK=64M"))
        (tree(vroot, "src") / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        ok(vserver(vroot, "src", "start"))
        try:
            sh(vroot, "src", "echo from-source > /root/data")
            # a running source: frozen for the instant of an O(1) snapshot
            ok(vserver(vroot, "src", "clone", "dst", "--ip", dst_ip, "--hostname", "dst.test"))
            ok(vserver(vroot, "dst", "start"))
            try:
                a, b = state.read(vroot, "src"), state.read(vroot, "dst")
                assert a.running and b.running and a.xid != b.xid
                assert sh(vroot, "dst", "cat /root/data; hostname") == "from-source\ndst.test\n"
                assert sh(vroot, "src", "hostname") == "src\n"
                assert sh(vroot, "dst", "cat /etc/machine-id") == ""
                assert dst_ip.split("/")[0] in sh(vroot, "dst", "ip -4 addr")
                assert dst_ip.split("/")[0] not in sh(vroot, "src", "ip -4 addr")
                assert "dst.test" in sh(vroot, "dst", "cat /etc/hosts")
                macs = [sh(vroot, n, "cat /sys/class/net/*/address | grep -v 00:00:00:00:00:00")
                        for n in ("src", "dst")]  # fmt: skip
                assert macs[0] and macs[1] and set(macs[0].split()).isdisjoint(macs[1].split())
                cfg = load_guest(vroot, "dst")
                assert cfg.disk_backend == "btrfs" and cfg.disk == 64 << 20
                assert cfg.context is None  # its own context id, allocated at start
            finally:
                ok(vserver(vroot, "dst", "stop"))
        finally:
            ok(vserver(vroot, "src", "stop"))


@pytest.mark.parametrize("backend", ["none", "image"])
def test_clone_by_copy_and_from_a_snapshot(vroot: Paths, backend: str) -> None:
    extra = ("--set", "V_DISK=48M") if backend == "image" else ()
    ok(vserver(vroot, "a", "build", "-m", "busybox", *extra))
    ok(vserver(vroot, "a", "start"))
    try:
        sh(vroot, "a", "echo v1 > /root/f")
        ok(vserver(vroot, "a", "snapshot", "create", "s1"))
        sh(vroot, "a", "echo v2 > /root/f")
        ok(vserver(vroot, "a", "clone", "b"))
        ok(vserver(vroot, "a", "clone", "c", "--snapshot", "s1"))
    finally:
        ok(vserver(vroot, "a", "stop"))
    for name, want in (("b", "v2\n"), ("c", "v1\n")):
        ok(vserver(vroot, name, "start"))
        try:
            assert sh(vroot, name, "cat /root/f; hostname") == f"{want}{name}\n"
        finally:
            ok(vserver(vroot, name, "stop"))
    for name in "abc":
        ok(vserver(vroot, name, "delete"))


def test_failed_clone_leaves_nothing(vroot: Paths) -> None:
    ok(vserver(vroot, "a", "build", "-m", "busybox"))
    before = sorted(os.listdir(vroot.config_dir)), sorted(os.listdir(vroot.vservers_dir))
    refused(vserver(vroot, "a", "clone", "a"), "a", "already exists")
    refused(vserver(vroot, "a", "clone", "b", "--snapshot", "nope"), "a", "no snapshot 'nope'")
    refused(vserver(vroot, "a", "clone", "b", "--ip", "not-an-address"), "b", "IPROOT")
    refused(vserver(vroot, "a", "clone", "../b"), "", "not a valid guest name")
    refused(vserver(vroot, "ghost", "clone", "b"), "ghost", "no configuration")
    assert (sorted(os.listdir(vroot.config_dir)), sorted(os.listdir(vroot.vservers_dir))) == before
    ok(vserver(vroot, "a", "delete"))


def populate(root) -> None:
    """Files whose metadata a backup must keep."""
    (root / "root/owned").write_text("data")
    os.chown(root / "root/owned", 1234, 5678)
    os.chmod(root / "root/owned", 0o4750)  # setuid survives (chown clears it: set after)
    os.setxattr(root / "root/owned", "user.note", b"bin\xff\x00ary")
    os.link(root / "root/owned", root / "root/hard")
    os.symlink("/etc/shadow", root / "root/link")  # a guest's link stays a link
    os.mkfifo(root / "root/fifo")
    subprocess.run(["setfacl", "-m", "u:4242:rx", str(root / "root/owned")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:77:rwx", str(root / "root")], check=True)
    # a file capability (not on busybox itself: the guest's bounding set lacks NET_RAW,
    # so the kernel would refuse to run it)
    (root / "root/ping").write_bytes((root / "bin/busybox").read_bytes())
    subprocess.run(["setcap", "cap_net_raw+ep", str(root / "root/ping")], check=True)


def check(root) -> None:
    owned = os.lstat(root / "root/owned")
    assert (owned.st_uid, owned.st_gid, owned.st_mode & 0o7777) == (1234, 5678, 0o4750)
    assert owned.st_nlink == 2 and os.lstat(root / "root/hard").st_ino == owned.st_ino
    assert os.getxattr(root / "root/owned", "user.note") == b"bin\xff\x00ary"
    assert os.readlink(root / "root/link") == "/etc/shadow"
    assert (root / "root/fifo").is_fifo()
    acl = subprocess.run(["getfacl", "-n", str(root / "root/owned")], capture_output=True,
                         text=True).stdout  # fmt: skip
    assert "user:4242:r-x" in acl
    default = subprocess.run(["getfacl", "-nd", str(root / "root")], capture_output=True,
                             text=True).stdout  # fmt: skip
    assert "group:77:rwx" in default
    caps = subprocess.run(["getcap", str(root / "root/ping")], capture_output=True, text=True)
    assert "cap_net_raw=ep" in caps.stdout


@pytest.mark.parametrize("backend", ["btrfs", "none"])
def test_export_delete_import_brings_the_guest_back(vroot: Paths, backend: str) -> None:
    archive_file = vroot.root / "backup" / "g.tar.zst"
    archive_file.parent.mkdir()
    place = pool(vroot) if backend == "btrfs" else _nothing()
    with place:
        ok(vserver(vroot, "g", "build", "-m", "busybox", "--hostname", "g.test",
                   "--set", "V_MEMORY=96M"))  # fmt: skip
        populate(tree(vroot, "g"))
        conf = vroot.config_file("g").read_text()
        out = ok(vserver(vroot, "g", "export", str(archive_file)))
        assert out.startswith("exported g: ") and archive_file.stat().st_size > 1000
        assert os.listdir(archive_file.parent) == ["g.tar.zst"]  # no temporary file left
        ok(vserver(vroot, "g", "delete"))
        ok(vserver(vroot, "g", "build", "-t", f"export:{archive_file}"))
        assert vroot.config_file("g").read_text() == conf
        check(tree(vroot, "g"))
        ok(vserver(vroot, "g", "start"))
        try:
            assert sh(vroot, "g", "cat /root/owned; hostname") == "datag.test\n"
            # a running guest: exported from a snapshot taken while frozen, then deleted
            ok(vserver(vroot, "g", "export", str(archive_file.with_name("live.tar.zst"))))
            assert ok(vserver(vroot, "g", "snapshot", "list")) == ""
            assert state.read(vroot, "g").running
        finally:
            ok(vserver(vroot, "g", "stop"))
        # the new name may differ; the hostname follows --hostname
        ok(vserver(vroot, "h", "build", "-t", f"export:{archive_file}", "--hostname", "h.test"))
        assert load_guest(vroot, "h").hostname == "h.test"
        assert (tree(vroot, "h") / "etc/hostname").read_text() == "h.test\n"
        check(tree(vroot, "h"))
        for name in ("g", "h"):
            ok(vserver(vroot, name, "delete"))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_stream_api_file_objects_and_descriptors(vroot: Paths) -> None:
    """What migrate uses: export to a pipe or a file object, import from either."""
    ok(vserver(vroot, "s", "build", "-m", "busybox"))
    (vroot.guest_root("s") / "root/x").write_text("stream")
    buffer = io.BytesIO()
    info = archive.export_guest(vroot, "s", buffer)
    assert info.files > 10 and buffer.getvalue()[:4] == b"\x28\xb5\x2f\xfd"  # zstd magic
    archive.import_guest(vroot, "t", io.BytesIO(buffer.getvalue()),
                         overrides={"S_HOSTNAME": "t.test"})  # fmt: skip
    assert (vroot.guest_root("t") / "root/x").read_text() == "stream"
    saved = vroot.root / "s.tar.zst"
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT, 0o600)
    archive.export_guest(vroot, "s", fd)  # a descriptor: written, not closed
    os.close(fd)
    read_end, write_end = os.pipe()  # as ssh would hand it over
    feeder = subprocess.Popen(["cat", str(saved)], stdout=write_end)
    os.close(write_end)
    archive.import_guest(vroot, "u", read_end)
    os.close(read_end)
    assert feeder.wait() == 0
    with open(saved, "rb") as f:  # the CLI: export - | build -t export:-
        ok(vserver(vroot, "w", "build", "-t", "export:-", "--hostname", "w.test", stdin=f))
    assert (vroot.guest_root("w") / "root/x").read_text() == "stream"
    assert load_guest(vroot, "w").hostname == "w.test"
    piped = subprocess.run(f"{' '.join(vserver_argv(vroot))} s export - | "
                           f"{' '.join(vserver_argv(vroot))} v build -t export:-", shell=True,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert (vroot.guest_root("v") / "root/x").read_text() == "stream"
    assert (vroot.guest_root("u") / "root/x").read_text() == "stream"
    for name in ("s", "t", "u", "v", "w"):
        ok(vserver(vroot, name, "delete"))


def vserver_argv(paths: Paths) -> list[str]:
    return [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root)]


def zst(path, members: list[tuple[str, bytes]]) -> None:
    """A zstd tar with these regular files."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(["zstd", "-q", "-o", str(path)], input=raw.getvalue(), check=True)


def test_bad_archives_and_paths_one_line_nothing_made(vroot: Paths) -> None:
    ok(vserver(vroot, "g", "build", "-m", "busybox"))
    conf = b"S_HOSTNAME=x\n"
    newer = vroot.root / "newer.tar.zst"
    zst(newer, [("vstui-export.json", json.dumps({"format": 2}).encode()), ("guest.conf", conf),
                ("rootfs/etc/hostname", b"x\n")])  # fmt: skip
    refused(vserver(vroot, "n", "build", "-t", f"export:{newer}"), "n",
            "made by a newer vstui (archive format 2", "upgrade vstui")  # fmt: skip
    escape = vroot.root / "escape.tar.zst"
    zst(escape, [("vstui-export.json", b'{"format": 1}'), ("guest.conf", conf),
                 ("rootfs/../../etc/evil", b"x")])  # fmt: skip
    refused(vserver(vroot, "n", "build", "-t", f"export:{escape}"), "n",
            "leaves the guest tree; refusing this archive")  # fmt: skip
    stray = vroot.root / "stray.tar.zst"
    zst(stray, [("vstui-export.json", b'{"format": 1}'), ("guest.conf", conf), ("etc/x", b"x")])
    refused(vserver(vroot, "n", "build", "-t", f"export:{stray}"), "n", "outside rootfs/")
    plain = vroot.root / "plain.tar"
    plain.write_bytes(b"not an archive at all" * 100)
    refused(vserver(vroot, "n", "build", "-t", f"export:{plain}"), "n", "not a readable export")
    refused(vserver(vroot, "n", "build", "-t", "export:/nonexistent.tar.zst"), "n",
            "is not a file")  # fmt: skip
    assert not vroot.config_file("n").exists() and not vroot.guest_root("n").exists()
    assert not (vroot.root / "etc/evil").exists() and not os.path.exists("/etc/evil")
    refused(vserver(vroot, "g", "export", "/proc/nope/g.tar.zst"), "g", "cannot write",
            "choose a writable path")  # fmt: skip
    refused(vserver(vroot, "g", "export", str(vroot.root / "x"), "--snapshot", "nope"), "g",
            "no snapshot 'nope'")  # fmt: skip
    assert not (vroot.root / "x").exists()
    with pytest.raises(VstuiError, match="already exists"):
        archive.import_guest(vroot, "g", str(newer))
    ok(vserver(vroot, "g", "delete"))
