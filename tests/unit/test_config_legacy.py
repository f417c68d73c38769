"""Importing util-vserver configuration: legacy NAME.conf (F1-F3) and the
/etc/vservers/NAME/ directory (F5-F7), per util-vserver.md sections 7 and 8."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.config import GuestConfig, build_config, parse_text
from engine.config.legacy import ImportResult, default_source, import_guest
from engine.config.writer import new_text
from engine.errors import GuestNotFound
from engine.paths import Paths

FIXTURES = Path(__file__).parent / "fixtures" / "config"

Tree = dict[str, "str | tuple[str]"]  # relative path -> content, or (symlink target,)

F5: Tree = {
    "context": "40001\n",
    "name": "db1\n",
    "uts/nodename": "db1.example.org\n",
    "interfaces/0/ip": "10.0.0.20\n",
    "interfaces/0/prefix": "24\n",
    "interfaces/0/dev": "eth0\n",
    "interfaces/0/name": "db1\n",
    "apps/init/style": "sysv\n",
    "apps/init/mark": "default\n",
    "vdir": ("/vservers/db1",),
    "run": ("/var/run/vservers/db1",),
}
F6: Tree = {
    "bcapabilities": "CAP_NET_RAW\n!CAP_SYS_PTRACE\n",
    "ccapabilities": "set_utsname\nsecure_mount\n~raw_icmp\n",
    "cflags": "virt_mem\nvirt_load\nhide_mount\nsched_hard\n",
    "rlimits/nproc": "300\n",
    "rlimits/rss.soft": "65536\n",
    "rlimits/rss.hard": "inf\n",
    "nice": "10\n",
    "schedule": "10\n100\n500\n100\n1000\n0\n",
}
F7: Tree = {
    "interfaces/dev": "eth1\n",
    "interfaces/prefix": "26\n",
    "interfaces/00/ip": "192.0.2.10\n",
    "interfaces/01/ip": "2001:db8::10\n",
    "interfaces/01/prefix": "64\n",
    "interfaces/01/nodev": "",
    "interfaces/02/ip": "192.0.2.11\n",
    "interfaces/02/disabled": "",
}


def build_dir(paths: Paths, name: str, tree: Tree) -> Path:
    top = paths.legacy_guest_dir(name)
    top.mkdir(parents=True)
    for rel, content in tree.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            path.symlink_to(content[0])
        else:
            path.write_text(content)
    return top


def legacy_conf(paths: Paths, name: str, fixture: str) -> Path:
    paths.legacy_config_dir.mkdir(parents=True, exist_ok=True)
    target = paths.legacy_config_file(name)
    shutil.copy(FIXTURES / fixture, target)
    return target


def loads(result: ImportResult, name: str) -> GuestConfig:
    """The imported values must make a valid NAME.conf."""
    cfg, errors = build_config(name, parse_text(new_text(name, result.as_dict())))
    assert not errors, [str(e) for e in errors]
    return cfg


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.from_root(tmp_path)


# -- legacy NAME.conf ---------------------------------------------------------------------
def test_f1_single_address_and_nproc(paths: Paths) -> None:
    legacy_conf(paths, "web1", "F1-web1.conf")
    result = import_guest(paths, "web1")
    assert result.kind == "conf" and result.unmapped == ()
    cfg = loads(result, "web1")
    assert cfg.hostname == "web1.example.org"
    assert [(a.label, str(a.interface)) for a in cfg.addresses] == [
        ("eth0:web1", "192.168.1.10/24")
    ]
    assert cfg.flags == {"lock", "nproc"} and cfg.pids_limit() == 1000 and cfg.onboot


def test_f2_multi_address(paths: Paths) -> None:
    legacy_conf(paths, "web2", "F2-multi.conf")
    cfg = loads(import_guest(paths, "web2"), "web2")
    assert [(a.label, str(a)) for a in cfg.addresses] == [
        ("eth0:web2", "eth0:10.0.0.5/24"),
        ("eth1:web21", "eth1:172.16.3.1/26"),
        ("eth0:web22", "10.0.0.6/24"),
    ]
    assert (cfg.context, cfg.nice, cfg.domainname) == (42, 5, "")
    assert cfg.has_flag("fakeinit") and cfg.has_flag("private")
    caps = cfg.effective_caps()
    assert "NET_RAW" in caps and "SYS_CHROOT" not in caps


def test_f3_reports_the_shell_code_it_could_not_map(paths: Paths) -> None:
    source = legacy_conf(paths, "web3", "F3-profile.conf")
    result = import_guest(paths, "web3")
    assert [u.split(": ", 1)[0] for u in result.unmapped] == [f"{source}:{n}" for n in range(1, 6)]
    assert "shell code (if)" in result.unmapped[0]
    assert "shell code (case)" in result.unmapped[1]
    assert "IPROOT=1.2.3.4" in result.unmapped[2]
    assert "shell code (esac)" in result.unmapped[4]
    assert result.as_dict() == {"PRIORITY": "20", "V_INIT": "/sbin/minit-start"}
    assert any("minit" in note for note in result.warnings)
    assert loads(result, "web3").priority == 20


def test_invalid_legacy_values_are_dropped_and_reported(paths: Paths) -> None:
    paths.legacy_config_dir.mkdir(parents=True)
    paths.legacy_config_file("old").write_text("IPROOT=ALL\nS_NICE=7\nPROFILE=prod\n")
    paths.legacy_config_dir.joinpath("old.sh").write_text("#!/bin/sh\n")
    result = import_guest(paths, "old")
    assert result.as_dict() == {"S_NICE": "7", "PROFILE": "prod"}
    assert any(u.startswith("IPROOT='ALL':") for u in result.unmapped)
    assert any("old.sh: start/stop hook script" in u for u in result.unmapped)


# -- /etc/vservers/NAME/ --------------------------------------------------------------------
def test_f5_directory(paths: Paths) -> None:
    build_dir(paths, "db1", F5)
    assert default_source(paths, "db1") == paths.legacy_guest_dir("db1")
    result = import_guest(paths, "db1")
    assert result.kind == "dir"
    assert result.unmapped == () and result.warnings == ()
    assert result.as_dict() == {
        "S_HOSTNAME": "db1.example.org",
        "S_CONTEXT": "40001",
        "IPROOT": "eth0:10.0.0.20/24",
        "ONBOOT": "yes",
    }
    cfg = loads(result, "db1")
    assert cfg.addresses[0].label == "eth0:db1"


def test_f5_other_vdir_and_name_are_noted(paths: Paths) -> None:
    build_dir(paths, "db2", {**F5, "vdir": ("/var/lib/vservers/db1",)})
    notes = " ".join(import_guest(paths, "db2").warnings)
    assert "name: 'db1' differs; the guest is imported as 'db2'" in notes
    assert "vdir: the tree is at /var/lib/vservers/db1; vstui expects it at /vservers/db2" in notes
    assert "interfaces/0/name: label 'db1' not kept" in notes


def test_f6_caps_flags_limits(paths: Paths) -> None:
    build_dir(paths, "f6", F6)
    result = import_guest(paths, "f6")
    cfg = loads(result, "f6")
    assert cfg.caps == ("NET_RAW", "!SYS_PTRACE")
    assert cfg.nice == 10 and cfg.pids_limit() == 300 and cfg.memory is None
    text = "\n".join(result.unmapped)
    for expected in (
        "ccapabilities: set_utsname secure_mount ~raw_icmp",
        "cflags: virt_mem",
        "cflags: virt_load",
        "cflags: hide_mount",
        "cflags: sched_hard: set V_CPU_QUOTA",
        "rlimits/rss.soft: soft memory limit",
        "schedule: CPU token bucket",
    ):
        assert expected in text


def test_f7_defaults_nodev_and_disabled(paths: Paths) -> None:
    build_dir(paths, "f7", {**F7, "interfaces/01/scope": "global\n"})
    result = import_guest(paths, "f7")
    assert result.as_dict() == {"IPROOT": "eth1:192.0.2.10/26 2001:db8::10/64"}
    cfg = loads(result, "f7")
    assert [(a.dev, str(a.interface)) for a in cfg.addresses] == [
        ("eth1", "192.0.2.10/26"),
        (None, "2001:db8::10/64"),
    ]
    assert "interfaces/02: disabled address: not imported" in result.unmapped
    assert "interfaces/01/scope: not mapped (no vstui equivalent)" in result.unmapped


def test_directory_limits_init_fstab_and_unknown_files(paths: Paths) -> None:
    build_dir(
        paths,
        "big",
        {
            "uts/domainname": "\n",
            "rlimits/rss": "1024\n",
            "rlimits/nofile.hard": "8192\n",
            "rlimits/nofile.soft": "1024\n",
            "rlimits/locks": "100\n",
            "ulimits/core": "0\n",
            "ulimits/data.hard": "1048576\n",
            "apps/init/style": "plain\n",
            "apps/init/mark": "web\n",
            "apps/vunify/exclude": "/etc\n",
            "fstab": "proc /proc proc defaults 0 0\n"
            "none /tmp tmpfs size=16m,mode=1777 0 0\n"
            "/srv/www /var/www none bind,ro 0 0\n"
            "nfs1:/export /mnt/data nfs rw,vers=4 0 0\n"
            "broken\n",
            "dlimits/0/directory": "/vservers/big\n",
            "dlimits/0/space_total": "1048576\n",
            "dlimits/0/inodes_total": "50000\n",
            "scripts/pre-start": "#!/bin/sh\n",
            "cflags": "lock\nnproc\n",
        },
    )
    result = import_guest(paths, "big")
    values = result.as_dict()
    cfg = loads(result, "big")
    page = os.sysconf("SC_PAGESIZE")
    assert cfg.memory == 1024 * page
    assert cfg.domainname == ""
    assert cfg.ulimit("nofile").hard == 8192 and cfg.ulimit("nofile").soft == 1024  # type: ignore[union-attr]
    assert cfg.ulimit("core").hard == 0  # type: ignore[union-attr]
    assert cfg.ulimit("data").hard == 1 << 20  # type: ignore[union-attr]
    assert cfg.flags == {"lock", "nproc", "fakeinit"}
    assert values["V_SHARE"] == "/srv/www:/var/www:ro"
    assert values["V_MOUNT"] == "nfs1:/export:/mnt/data:nfs:rw,vers=4"
    assert (cfg.disk, cfg.inodes, cfg.disk_backend) == (1 << 30, 50000, "project")
    assert "ONBOOT" not in values
    text = "\n".join(result.unmapped)
    assert "rlimits/locks: not mapped" in text
    assert "apps/init/mark: 'web': only 'default' maps to ONBOOT=yes" in text
    assert "apps/vunify/: not mapped" in text
    assert "scripts/: not mapped" in text
    assert "fstab: `broken`: not an fstab line" in text
    assert "proc" not in text  # the default mounts are vstui's own


def test_missing_source(paths: Paths) -> None:
    with pytest.raises(GuestNotFound, match="no util-vserver configuration at"):
        import_guest(paths, "ghost")


def test_interface_masks_and_default_broadcast(paths: Paths) -> None:
    build_dir(
        paths,
        "m1",
        {
            "interfaces/mask": "255.255.0.0\n",
            "interfaces/bcast": "198.18.255.255\n",
            "interfaces/a/ip": "198.18.0.1\n",
            "interfaces/a/dev": "eth0\n",
            "interfaces/b/ip": "198.18.1.1\n",
            "interfaces/b/mask": "255.255.255.0\n",
            "interfaces/b/nodev": "",
            "interfaces/c/prefix": "24\n",
        },
    )
    result = import_guest(paths, "m1")
    cfg = loads(result, "m1")
    assert [str(a) for a in cfg.addresses] == ["eth0:198.18.0.1/16", "198.18.1.1/24"]
    assert cfg.iprootbcast == "198.18.255.255"
    assert "interfaces/c: no ip file: not imported" in result.unmapped


# -- QA: text from a file's name or contents never becomes a line of NAME.conf --------
HOSTILE_TEXTS = ("x\nS_CAPS=SYS_ADMIN\n#", "x\rS_CAPS=SYS_ADMIN", "x\x0bS_CAPS=SYS_ADMIN\x85#")


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_imported_file_names_and_contents_stay_inside_their_comment(
    paths: Paths, text: str
) -> None:
    from engine.config import read_document, write_new_config

    build_dir(paths, "evil", {text: "1\n", "apps/init/style": text + "\n", "flags": text})
    result = import_guest(paths, "evil")
    comments = [f"note: {n}" for n in result.warnings]
    comments += [f"not imported: {u}" for u in result.unmapped]
    assert any("S_CAPS" in c for c in comments)  # the hostile text was reported...
    written = write_new_config(paths, "evil", result.as_dict(), comments=comments)
    doc = read_document(written, "evil", paths.config_dir)
    assert "S_CAPS" not in doc.assignments()  # ...never assigned
    for line in written.read_text().splitlines():
        assert line.startswith("#") or "S_CAPS" not in line, line


def test_every_comment_is_one_line() -> None:
    text = new_text("g", {"S_HOSTNAME": "g"}, ["a\nS_CAPS=SYS_ADMIN", "b\r\nc", ""])
    doc = parse_text(text)
    assert "S_CAPS" not in doc.assignments()
    assert text.count("\n") == 5
