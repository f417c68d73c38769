"""engine.rootfs.guestinit: the guest's own init read from its tree; check and audit warn.

A ``fakeinit`` guest whose /sbin/init is missing used to pass `check` and
then fail at start ("exec /sbin/init: No such file or directory").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_guest
from engine.paths import Paths
from engine.rootfs import guestinit
from tests.unit.test_audit import audit, guest, one, root  # noqa: F401 (fixture)

SYSTEMD_CONF = 'S_FLAGS="lock fakeinit"\nS_CAPS="SETPCAP"\n'


def systemd_tree(tree: Path, merged: bool = True) -> None:
    """/sbin/init -> /lib/systemd/systemd, as Debian lays it out (merged /usr or not)."""
    (tree / "usr/lib/systemd").mkdir(parents=True)
    (tree / "usr/sbin").mkdir(parents=True)
    binary = tree / "usr/lib/systemd/systemd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    if merged:
        os.symlink("usr/sbin", tree / "sbin")
        os.symlink("usr/lib", tree / "lib")
        os.symlink("../lib/systemd/systemd", tree / "usr/sbin/init")
    else:
        (tree / "sbin").mkdir()
        os.symlink("/usr/lib/systemd/systemd", tree / "sbin/init")


@pytest.mark.parametrize("merged", [True, False])
def test_systemd_is_recognised_through_the_trees_own_links(tmp_path: Path, merged: bool) -> None:
    systemd_tree(tmp_path, merged)
    found = guestinit.inspect(tmp_path)
    assert found.problem is None and found.systemd
    assert found.target == "/usr/lib/systemd/systemd"


def test_missing_not_executable_and_escaping_inits(tmp_path: Path) -> None:
    found = guestinit.inspect(tmp_path)
    assert not found.systemd and "/sbin/init does not exist in the guest" in found.problem
    (tmp_path / "sbin").mkdir()
    (tmp_path / "sbin/init").write_text("#!/bin/sh\n")
    assert "is not executable" in guestinit.inspect(tmp_path).problem
    (tmp_path / "sbin/init").unlink()
    (tmp_path / "sbin/init").mkdir()
    assert "is not a file" in guestinit.inspect(tmp_path).problem
    (tmp_path / "sbin/init").rmdir()
    # an absolute link is the guest's path: the host's /bin/sh does not count
    os.symlink("/bin/sh", tmp_path / "sbin/init")
    assert "does not exist" in guestinit.inspect(tmp_path).problem


def test_check_warns_when_fakeinit_has_no_init(root: Paths) -> None:  # noqa: F811
    guest(root, "deb", 'S_FLAGS="lock fakeinit"\n')
    done = subprocess.run(
        [sys.executable, "-m", "vstui.cli.vserver", "--root", str(root.root), "deb", "check"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "warning: S_FLAGS has fakeinit but /sbin/init does not exist" in done.stderr
    assert "apt-get install systemd-sysv" in done.stderr
    rep = audit(root)
    assert one(rep, "GUEST-INIT-MISSING").guest == "deb"


def test_systemd_guest_without_setpcap(root: Paths) -> None:  # noqa: F811
    guest(root, "deb", 'S_FLAGS="lock fakeinit"\n')
    systemd_tree(root.guest_root("deb"))
    assert one(audit(root), "GUEST-SYSTEMD-SETPCAP").fix == (
        f"vserver --root {root.root} deb set S_CAPS+=SETPCAP"  # a command, --root and all
    )
    cfg = load_guest(root, "deb")
    assert "218/CAPABILITIES" in guestinit.warnings(cfg, root.guest_root("deb"))[0]
    root.config_file("deb").write_text(SYSTEMD_CONF)
    ids = {f.rule_id for f in audit(root).findings}
    assert not ids & {"GUEST-SYSTEMD-SETPCAP", "GUEST-INIT-MISSING"}


def test_no_fakeinit_or_unmounted_image_says_nothing(root: Paths) -> None:  # noqa: F811
    guest(root, "plain", 'S_FLAGS="lock"\n')
    guest(root, "img", 'S_FLAGS="lock fakeinit"\nV_DISK=1G\n')
    ids = {(f.rule_id, f.guest) for f in audit(root).findings}
    assert ("GUEST-INIT-MISSING", "plain") not in ids
    assert ("GUEST-INIT-MISSING", "img") not in ids  # its tree is in an image not mounted now
