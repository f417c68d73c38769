"""QA round of #19: every configuration file the host reads (hosts.toml,
keymap.toml, themes) answers a hostile file with one line naming it: non-UTF-8
bytes were a UnicodeDecodeError traceback, 5000 nested arrays a RecursionError
traceback, and a FIFO hung every `--host` command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import HostError
from engine.remote import hosts
from vstui.app.keymap import load_keymap
from vstui.app.themes import load_themes

HOSTILE = {
    "latin1": (b'[hosts.a]\nssh = "caf\xe9"\n', "is not UTF-8 text"),
    "deep": (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deep"),
    "deep-tables": (b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n", "nested too deep"),
    "fifo": (None, "is a FIFO, not a regular file"),
    "dir": (b"", "is a directory, not a regular file"),
    "big": (b"#" * (2 << 20), "more than the 1M"),
}


def _make(path: Path, kind: str) -> None:
    data = HOSTILE[kind][0]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    else:
        path.write_bytes(data or b"")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hosts_toml(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "hosts.toml"
    _make(path, kind)
    with pytest.raises(HostError) as err:
        hosts.load(path)
    assert str(path) in err.value.message and HOSTILE[kind][1] in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_keymap(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "keymap.toml"
    _make(path, kind)
    keymap, problems = load_keymap(path)
    assert keymap == {}
    assert len(problems) == 1 and str(path) in problems[0] and HOSTILE[kind][1] in problems[0]


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_theme(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "hostile.toml"
    _make(path, kind)
    (tmp_path / "good.toml").write_text("[colors]\nprimary = '#123456'\n")
    themes, failures = load_themes([tmp_path])
    assert set(themes) == {"good"}
    assert [p for p, _ in failures] == [path] and HOSTILE[kind][1] in failures[0][1]
