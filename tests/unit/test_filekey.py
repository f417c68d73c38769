"""engine._filekey: when a cached parse or listing may be used again."""

from __future__ import annotations

import os
from pathlib import Path

from engine._filekey import RACY, dir_key, file_key


def _age(path: Path, seconds: float) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_a_file_written_in_place_or_replaced_gets_a_new_key(tmp_path: Path) -> None:
    conf = tmp_path / "g.conf"
    conf.write_text("A=1\n")
    first = file_key(conf)
    conf.write_text("A=22\n")  # in place: the size tells (the times may share a tick)
    second = file_key(conf)
    (tmp_path / "new").write_text("A=22\n")
    os.rename(tmp_path / "new", conf)
    assert first != second != file_key(conf)
    assert file_key(tmp_path / "missing") is None


def test_a_directory_changed_just_now_has_not_settled(tmp_path: Path) -> None:
    (tmp_path / "a").touch()
    stamp = dir_key(tmp_path)
    assert stamp is not None and stamp[1] is False


def test_a_settled_directory_keeps_its_key_until_an_entry_comes(tmp_path: Path) -> None:
    _age(tmp_path, 2 * RACY)
    before = dir_key(tmp_path)
    assert before is not None and before[1] is True
    assert dir_key(tmp_path) == before
    (tmp_path / "b").touch()
    after = dir_key(tmp_path)
    assert after is not None and after[0] != before[0] and after[1] is False
    assert dir_key(tmp_path / "missing") is None
