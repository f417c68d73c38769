"""engine.rootfs.debootstrap without the network: cache keys, scrubbing, the cache's reuse.

The real debootstrap runs in tests/integration/test_systemd_guest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import VstuiError
from engine.rootfs import debootstrap
from engine.rootfs.build import config_values


def test_key_depends_on_suite_and_package_set_not_order() -> None:
    a = debootstrap.Request("bookworm", ("nginx", "cron"), None, "amd64")
    b = debootstrap.Request("bookworm", ("cron", "nginx", "cron"), None, "amd64")
    assert a.key() == b.key() and a.key().startswith("bookworm-amd64-")
    assert a.key() != debootstrap.Request("trixie", ("nginx", "cron"), None, "amd64").key()
    assert a.key() != debootstrap.Request("bookworm", ("nginx",), None, "amd64").key()
    assert a.packages == ("cron", "dbus", "nginx", "systemd-sysv")


def test_argv_installs_systemd_as_init() -> None:
    req = debootstrap.Request("trixie", ("openssh-server",), "http://mirror/debian", "amd64")
    argv = debootstrap.argv("/usr/sbin/debootstrap", req, Path("/t"))
    assert argv == ["/usr/sbin/debootstrap", "--variant=minbase", "--arch=amd64",
                    "--include=dbus,openssh-server,systemd-sysv", "trixie", "/t",
                    "http://mirror/debian"]  # fmt: skip


def test_include_words() -> None:
    assert debootstrap.parse_include(["nginx,cron", "openssh-server  g++"]) == (
        "nginx", "cron", "openssh-server", "g++")  # fmt: skip
    with pytest.raises(VstuiError, match="'nginx;reboot' is not a Debian package name"):
        debootstrap.parse_include(["nginx;reboot"])
    with pytest.raises(VstuiError, match="'-x' is not"):
        debootstrap.parse_include(["-x"])


def test_scrub_removes_what_makes_a_tree_one_machine(tmp_path: Path) -> None:
    for rel in ("etc/ssh", "var/lib/dbus", "var/lib/systemd", "dev/pts"):
        (tmp_path / rel).mkdir(parents=True)
    (tmp_path / "etc/machine-id").write_text("1c12c5233add4fd89ca3e3e07b6db935\n")
    (tmp_path / "var/lib/dbus/machine-id").write_text("1c12\n")
    (tmp_path / "var/lib/systemd/random-seed").write_bytes(b"x" * 512)
    (tmp_path / "etc/ssh/ssh_host_ed25519_key").write_text("secret")
    (tmp_path / "etc/ssh/sshd_config").write_text("Port 22\n")
    os.symlink("/proc/self/fd", tmp_path / "dev/fd")
    debootstrap.scrub(tmp_path)
    assert (tmp_path / "etc/machine-id").read_bytes() == b""
    assert not (tmp_path / "var/lib/dbus/machine-id").exists()
    assert not (tmp_path / "var/lib/systemd/random-seed").exists()
    assert os.listdir(tmp_path / "etc/ssh") == ["sshd_config"]
    assert os.listdir(tmp_path / "dev") == []


def test_cache_is_made_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[Path] = []

    def fake_debootstrap(req: debootstrap.Request, target: Path) -> None:
        runs.append(target)
        (target / "etc").mkdir()
        (target / "etc/os-release").write_text(f"VERSION_CODENAME={req.suite}\n")

    monkeypatch.setattr(debootstrap, "run_debootstrap", fake_debootstrap)
    req = debootstrap.Request("bookworm", ("nginx",), None, "amd64")
    cache = tmp_path / "cache/debootstrap"
    first = debootstrap.cached_tree(req, cache)
    assert debootstrap.cached_tree(req, cache) == first and len(runs) == 1
    assert (first / "etc/os-release").read_text() == "VERSION_CODENAME=bookworm\n"
    assert (cache.stat().st_mode & 0o777, cache.parent.stat().st_mode & 0o777) == (0o700, 0o700)
    debootstrap.cached_tree(req, cache, flush=True)
    assert len(runs) == 2

    def failing(req: debootstrap.Request, target: Path) -> None:
        raise VstuiError("debootstrap trixie failed: E: Couldn't download packages")

    monkeypatch.setattr(debootstrap, "run_debootstrap", failing)
    with pytest.raises(VstuiError, match="Couldn't download"):
        debootstrap.cached_tree(debootstrap.Request("trixie", (), None, "amd64"), cache)
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [first.name]


def test_copy_tree_keeps_owners_modes_and_links(tmp_path: Path) -> None:
    source, tree = tmp_path / "cached", tmp_path / "guest"
    (source / "usr/bin").mkdir(parents=True)
    tree.mkdir()
    (source / "usr/bin/su").write_text("x")
    (source / "usr/bin/su").chmod(0o4755)
    os.symlink("usr/bin", source / "bin")
    (source / ".vstui-debootstrap.json").write_text("{}")
    debootstrap.copy_tree(source, tree)
    assert (tree / "usr/bin/su").stat().st_mode & 0o7777 == 0o4755
    assert os.readlink(tree / "bin") == "usr/bin"
    assert not (tree / ".vstui-debootstrap.json").exists()


def test_host_keys_only_for_a_guest_with_sshd(tmp_path: Path) -> None:
    assert debootstrap.host_keys(tmp_path) == {}
    if subprocess.run(["which", "ssh-keygen"], capture_output=True).returncode != 0:
        pytest.skip("no ssh-keygen on this host (apt-get install openssh-client)")
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/sshd").write_text("")
    keys = debootstrap.host_keys(tmp_path)
    assert keys["ssh_host_ed25519_key"][1] == 0o600
    assert keys["ssh_host_ed25519_key.pub"][0].startswith(b"ssh-ed25519 ")
    (tmp_path / "etc/ssh").mkdir(parents=True)
    debootstrap.write_host_keys(tmp_path, keys)
    assert (tmp_path / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600


def test_debootstrap_guests_boot_systemd() -> None:
    values = config_values("deb", "debootstrap:trixie", None, (), {})
    assert values["S_FLAGS"] == "lock nproc fakeinit" and values["S_CAPS"] == "SETPCAP"
    assert "fakeinit" not in config_values("sk", "skeleton", None, (), {})["S_FLAGS"]


def test_build_options_belong_to_debootstrap(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(tmp_path), "web", "build"]
    done = subprocess.run([*cmd, "--include", "nginx"], capture_output=True, text=True)
    assert done.returncode != 0
    assert "--include, --mirror and --flush-cache are for -t debootstrap" in done.stderr
    done = subprocess.run([*cmd, "-t", "debootstrap", "--include=ngi nx;x"],
                          capture_output=True, text=True)  # fmt: skip
    assert "'nx;x' is not a Debian package name" in done.stderr
    assert not (tmp_path / "etc/vserver/web.conf").exists()
