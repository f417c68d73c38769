"""vserver NAME config|check|import and vserver --list, run through the dispatcher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.config import load_guest
from engine.paths import Paths
from vstui.cli.vserver import main

FIXTURES = Path(__file__).parent / "fixtures" / "config"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    paths = Paths.from_root(tmp_path)
    paths.config_dir.mkdir(parents=True)
    shutil.copy(FIXTURES / "full.conf", paths.config_file("full"))
    paths.config_file("web").write_text(
        "S_HOSTNAME=web.example.org\nIPROOT=198.18.0.2\nONBOOT=yes\nS_CONTEXT=40002\nFOO=1\n"
    )
    paths.config_file("bare").write_text("")
    return tmp_path


def run(root: Path, *args: str) -> int:
    return main(["--root", str(root), *args])


def test_config_plain(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(root, "web", "config") == 0
    out, err = capsys.readouterr()
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["S_HOSTNAME"].split()[1] == "web.example.org"
    assert lines["IPROOT"].split()[1] == "198.18.0.2/24"
    assert lines["V_NETMODE"].split()[1:] == ["veth", "(default)"]
    assert "CAP_CHOWN" in lines["caps"] and "CAP_NET_RAW" not in lines["caps"]
    assert lines["FOO"].split()[1:] == ["1", "(unknown", "key)"]
    assert "vserver: web: warning: " in err and "FOO: unknown key" in err
    # aligned: every value starts in the same column
    starts = {len(line) - len(line[len(line.split()[0]) :].lstrip()) for line in out.splitlines()
              if not line.startswith(("caps", "pids", "host ids"))}  # fmt: skip
    assert len(starts) == 1
    ids = next(line for line in out.splitlines() if line.startswith("host ids"))
    # S_CONTEXT=40002 names block 10 (40002 - 40000 + 8), even before a first start
    assert ids.split()[2:] == ["0-65535", "->", "655360-720895"]


def test_config_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(root, "full", "config", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hostname"] == "full.example.org"
    assert data["addresses"][0] == {
        "dev": "eth0", "address": "198.18.0.10", "prefix": 24, "label": "eth0:full", "bcast":
        "198.18.255.255",
    }  # fmt: skip
    assert "NET_RAW" in data["effective_caps"] and "SYS_CHROOT" not in data["effective_caps"]
    assert data["pids_limit"] == 400 and data["memory"] == 512 << 20
    assert data["bandwidth_in"] == 4_000_000 and data["cpu_quota"] == 150.0
    assert data["shares"][1] == {"host": "/srv/up", "guest": "/var/up", "readonly": False}


def test_config_errors(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(root, "nope", "config") == 1
    assert "vserver: nope: no configuration for guest 'nope'" in capsys.readouterr().err
    assert run(root, "../etc", "config") == 1
    assert "is not a valid guest name" in capsys.readouterr().err
    assert run(root, "web", "config", "--yaml") == 1
    assert "unknown option '--yaml'" in capsys.readouterr().err


def test_check(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = Paths.from_root(root)
    assert run(root, "full", "check") == 0
    assert capsys.readouterr().out == f"{paths.config_file('full')}: ok\n"
    paths.config_file("web").write_text(
        "S_NICE=30\nIPROOT=10.0.0.300\nif true; then X=1; fi\nV_SECCOMP='+ptrace -bogus_call'\n"
    )
    assert run(root, "web", "check") == 1
    err = capsys.readouterr().err.splitlines()
    conf = paths.config_file("web")
    assert err == [
        f"vserver: web: {conf}:1: S_NICE: 30 is out of range; use -20..19",
        f"vserver: web: {conf}:2: IPROOT: '10.0.0.300' is not an IPv4 or IPv6 address",
        f"vserver: web: {conf}:3: 'if true; then X=1; fi' is shell code (if) that cannot be "
        "read as data; write plain KEY=value lines",
        f"vserver: web: {conf}:4: V_SECCOMP: '-bogus_call': no system call is called "
        "'bogus_call' (on x86_64 or aarch64); check the spelling, e.g. +ptrace or -keyctl",
        "vserver: web: 4 errors",
    ]


def test_list(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(root, "--list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "CONTEXT", "HOSTNAME", "ADDRESSES", "ONBOOT"]
    assert [line.split() for line in lines[1:]] == [
        ["bare", "stopped", "-", "bare", "-", "no"],
        ["full", "stopped", "40010", "full.example.org",
         "198.18.0.10/24,198.18.1.10/24,2001:db8::10/64", "yes"],
        ["web", "stopped", "40002", "web.example.org", "198.18.0.2/24", "yes"],
    ]  # fmt: skip
    column = lines[0].index("HOSTNAME")
    assert all(line[column - 2 : column] == "  " for line in lines)


def test_list_json_and_broken_guest(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Paths.from_root(root).config_file("bad").write_text("S_CONTEXT=1\n")
    assert run(root, "--list", "--json") == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert [e["name"] for e in data] == ["bad", "bare", "full", "web"]
    assert "S_CONTEXT: 1 is out of range" in data[0]["error"]
    assert data[3] == {
        "name": "web", "state": "stopped", "context": 40002, "hostname": "web.example.org",
        "addresses": ["198.18.0.2/24"], "onboot": True, "backend": "none", "disk_used": None,
        "disk_limit": None, "inodes_used": None, "inodes_limit": None, "disk_measured": None,
    }  # fmt: skip
    assert "vserver: bad: " in captured.err


def test_list_empty_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "--list") == 0
    assert capsys.readouterr().out == ""


def test_import_legacy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = Paths.from_root(tmp_path)
    paths.legacy_config_dir.mkdir(parents=True)
    shutil.copy(FIXTURES / "F3-profile.conf", paths.legacy_config_file("web3"))
    assert run(tmp_path, "web3", "import") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"imported {paths.legacy_config_file('web3')} -> {paths.config_file('web3')}"
    assert sum(line.startswith("  not imported: ") for line in out) == 5
    cfg = load_guest(paths, "web3")
    assert cfg.priority == 20 and cfg.init == "/sbin/minit-start"
    assert "# not imported: " in paths.config_file("web3").read_text()
    # a second import refuses to overwrite, --force replaces
    assert run(tmp_path, "web3", "import") == 1
    assert "already exists; add --force to replace it" in capsys.readouterr().err
    assert run(tmp_path, "web3", "import", "--force") == 0


def test_import_directory_from_a_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "elsewhere" / "db1"
    (source / "uts").mkdir(parents=True)
    (source / "uts" / "nodename").write_text("db1.example.org\n")
    (source / "context").write_text("40001\n")
    assert run(tmp_path, "db1", "import", str(source), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "S_HOSTNAME=db1.example.org\nS_CONTEXT=40001\n" in out
    assert not Paths.from_root(tmp_path).config_file("db1").exists()
    assert run(tmp_path, "db1", "import", str(source)) == 0
    assert load_guest(Paths.from_root(tmp_path), "db1").context == 40001


def test_import_without_a_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "ghost", "import") == 1
    assert "vserver: ghost: no util-vserver configuration at" in capsys.readouterr().err
    assert run(tmp_path, "ghost", "import", "a", "b") == 1
    assert "give at most one PATH" in capsys.readouterr().err
