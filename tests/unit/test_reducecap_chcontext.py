"""reducecap / chcontext argument handling and the dynamic context counter."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import UnknownCapability, VstuiError
from engine.paths import Paths
from vstui.cli import chcontext, reducecap


def test_reducecap_options_stop_at_the_command() -> None:
    opts = reducecap.parse(["--cap", "!CAP_CHOWN", "--cap=NET_RAW", "ls", "--cap", "x"])
    assert opts.cap_words == ["!CAP_CHOWN", "NET_RAW"]
    assert opts.command == ["ls", "--cap", "x"]
    assert reducecap.parse(["--show", "--", "--weird"]).command == ["--weird"]


def test_reducecap_refuses_unknown_words() -> None:
    with pytest.raises(UnknownCapability, match="'!FOO'|'FOO'"):
        reducecap.parse(["--cap", "!FOO", "true"])
    with pytest.raises(VstuiError, match="unknown option '--frob'"):
        reducecap.parse(["--frob"])
    with pytest.raises(VstuiError, match="--cap needs a value"):
        reducecap.parse(["--cap"])


def test_reducecap_list_has_every_capability() -> None:
    lines = reducecap.list_lines()
    assert lines[1].split()[:3] == ["0", "CAP_CHOWN", "yes"]
    assert any(line.split()[1:3] == ["CAP_SYS_ADMIN", "-"] for line in lines[1:])


def test_chcontext_options() -> None:
    opts = chcontext.parse(["--root", "/r", "--ctx", "42", "--silent", "--", "id", "-u"])
    assert (opts.root, opts.xid, opts.silent, opts.command) == ("/r", 42, True, ["id", "-u"])
    opts = chcontext.parse(["--hostname=h", "--domainname", "none", "--flag", "fakeinit", "sh"])
    assert (opts.hostname, opts.domainname, opts.flags) == ("h", "", {"fakeinit"})
    with pytest.raises(VstuiError, match="is not a context id"):
        chcontext.parse(["--xid", "70000", "sh"])
    with pytest.raises(VstuiError, match="means nothing here"):
        chcontext.parse(["--flag", "virt_mem", "sh"])


def test_dynamic_xids_count_up_and_wrap(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    first = chcontext.allocate_xid(paths)
    assert first == chcontext.FIRST_DYNAMIC_XID
    assert chcontext.allocate_xid(paths) == first + 1
    (paths.run_base / chcontext.XID_COUNTER).write_text(f"{chcontext.LAST_XID}\n")
    assert chcontext.allocate_xid(paths) == chcontext.LAST_XID
    assert chcontext.allocate_xid(paths) == chcontext.FIRST_DYNAMIC_XID


def test_exit_status() -> None:
    assert chcontext.exit_status(7 << 8) == 7
    assert chcontext.exit_status(15) == 128 + 15
