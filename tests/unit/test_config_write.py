"""Writing NAME.conf: comment-keeping updates, new files, atomic replacement."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine.config import load_guest, parse_text, update_config, write_new_config
from engine.config.parser import quote_value
from engine.errors import ConfigError, GuestNotFound, InvalidName, KernelError
from engine.paths import Paths

FIXTURES = Path(__file__).parent / "fixtures" / "config"

ORIGINAL = """\
# web guest -- managed by hand
S_HOSTNAME=web   # short name

export IPROOT="198.18.0.5/24"  # main address
S_FLAGS='lock nproc'
ULIMIT="-HS -u 100 \\
  -n 1024"
ONBOOT=no
# trailing comment
"""


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths.from_root(tmp_path)
    p.config_dir.mkdir(parents=True)
    p.config_file("web").write_text(ORIGINAL)
    return p


def leftovers(paths: Paths) -> list[str]:
    return sorted(f for f in os.listdir(paths.config_dir) if f != "web.conf")


def test_update_changes_values_in_place_and_keeps_comments(paths: Paths) -> None:
    cfg = update_config(
        paths, "web", {"S_HOSTNAME": "www.example.org", "S_FLAGS": "lock", "ONBOOT": "yes"}
    )
    assert cfg.hostname == "www.example.org" and cfg.onboot and cfg.flags == {"lock"}
    assert paths.config_file("web").read_text() == ORIGINAL.replace(
        "S_HOSTNAME=web   # short name", "S_HOSTNAME=www.example.org   # short name"
    ).replace("S_FLAGS='lock nproc'", "S_FLAGS='lock'").replace("ONBOOT=no", "ONBOOT=yes")


def test_update_keeps_export_and_quote_style_and_appends_new_keys(paths: Paths) -> None:
    update_config(paths, "web", {"IPROOT": "198.18.0.6/24 198.18.0.7", "V_MEMORY": "256M",
                                 "V_INIT": "/etc/rc.local start"})  # fmt: skip
    text = paths.config_file("web").read_text()
    assert 'export IPROOT="198.18.0.6/24 198.18.0.7"  # main address\n' in text
    assert text.endswith('# trailing comment\nV_MEMORY=256M\nV_INIT="/etc/rc.local start"\n')
    cfg = load_guest(paths, "web")
    assert [str(a.interface) for a in cfg.addresses] == ["198.18.0.6/24", "198.18.0.7/24"]
    assert cfg.memory == 256 << 20


def test_update_replaces_a_continued_value_and_removes_keys(paths: Paths) -> None:
    update_config(paths, "web", {"ULIMIT": "-HS -u 200", "ONBOOT": None, "NOT_THERE": None})
    text = paths.config_file("web").read_text()
    assert 'ULIMIT="-HS -u 200"\n' in text and "-n 1024" not in text
    assert "ONBOOT" not in text
    assert text.startswith("# web guest -- managed by hand\nS_HOSTNAME=web   # short name\n\n")
    assert load_guest(paths, "web").pids_limit() == 200


def test_update_with_no_changes_keeps_every_byte(paths: Paths) -> None:
    update_config(paths, "web", {})
    assert paths.config_file("web").read_text() == ORIGINAL


def test_duplicate_assignments_collapse_to_the_winning_line(paths: Paths) -> None:
    paths.config_file("web").write_text("S_NICE=1\n# x\nS_NICE=2\n")
    update_config(paths, "web", {"S_NICE": "3"})
    assert paths.config_file("web").read_text() == "# x\nS_NICE=3\n"


def test_full_fixture_round_trip_keeps_everything(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    paths.config_dir.mkdir(parents=True)
    original = (FIXTURES / "full.conf").read_text()
    paths.config_file("full").write_text(original)
    before = load_guest(paths, "full")
    update_config(paths, "full", {"S_NICE": "3"})
    after = load_guest(paths, "full")
    assert paths.config_file("full").read_text() == original.replace("S_NICE=-5", "S_NICE=3")
    assert after.nice == 3
    assert before.__class__(**{**_fields(before), "nice": 3, "raw": after.raw}) == after


def _fields(cfg: object) -> dict[str, object]:
    return {name: getattr(cfg, name) for name in cfg.__slots__}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value", ["plain", "two words", 'say "hi"', "$HOME", "`id`", "back\\slash", "", "it's", "a#b"]
)
def test_values_that_need_quoting_read_back_exactly(paths: Paths, value: str) -> None:
    update_config(paths, "web", {"V_NOTE": value})
    cfg = load_guest(paths, "web")
    assert cfg.value("V_NOTE") == value
    for prefer in ("", '"', "'"):
        doc = parse_text(f"X={quote_value(value, prefer)}\n")
        assert doc.assignments()["X"].value == value


def test_invalid_update_is_refused_and_the_file_is_untouched(paths: Paths) -> None:
    before = paths.config_file("web").stat()
    with pytest.raises(ConfigError) as info:
        update_config(paths, "web", {"S_NICE": "99"})
    assert str(info.value).startswith(f"{paths.config_file('web')}:10: S_NICE: 99 is out of range")
    assert paths.config_file("web").read_text() == ORIGINAL
    assert paths.config_file("web").stat().st_ino == before.st_ino
    assert leftovers(paths) == []


def test_bad_key_names_are_refused(paths: Paths) -> None:
    with pytest.raises(ConfigError, match="'1X' is not a variable name"):
        update_config(paths, "web", {"1X": "y"})
    with pytest.raises(ConfigError, match="'A B' is not a variable name"):
        write_new_config(paths, "other", {"A B": "y"})


def test_update_of_a_missing_guest(paths: Paths) -> None:
    with pytest.raises(GuestNotFound):
        update_config(paths, "nope", {"S_NICE": "1"})
    with pytest.raises(InvalidName):
        update_config(paths, "../web", {"S_NICE": "1"})


def test_update_keeps_the_file_mode(paths: Paths) -> None:
    paths.config_file("web").chmod(0o600)
    update_config(paths, "web", {"S_NICE": "1"})
    assert stat.S_IMODE(paths.config_file("web").stat().st_mode) == 0o600


# -- atomicity ----------------------------------------------------------------------------------
def test_failed_rename_leaves_the_old_file_and_no_temp_file(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device", src)

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KernelError) as info:
        update_config(paths, "web", {"S_HOSTNAME": "changed"})
    assert "No space left on device" in str(info.value)
    assert "the old file is unchanged" in str(info.value)
    assert paths.config_file("web").read_text() == ORIGINAL
    assert leftovers(paths) == []


def test_failure_in_the_middle_of_writing(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    calls: list[int] = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(KernelError, match="Input/output error"):
        update_config(paths, "web", {"S_HOSTNAME": "changed"})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert calls
    assert paths.config_file("web").read_text() == ORIGINAL
    assert leftovers(paths) == []


def test_interrupt_during_write_cleans_up(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        update_config(paths, "web", {"S_HOSTNAME": "changed"})
    assert paths.config_file("web").read_text() == ORIGINAL
    assert leftovers(paths) == []


# -- new files ----------------------------------------------------------------------------------
def test_write_new_config(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    path = write_new_config(
        paths, "new", {"S_HOSTNAME": "new.example.org", "IPROOT": "198.18.0.9/24", "V_INIT": ""},
        comments=["built by a test"],
    )  # fmt: skip
    assert path == paths.config_file("new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    text = path.read_text()
    assert text.splitlines()[1] == "# built by a test"
    assert 'V_INIT=""' in text
    cfg = load_guest(paths, "new")
    assert cfg.hostname == "new.example.org" and cfg.init is None
    with pytest.raises(ConfigError, match="already exists"):
        write_new_config(paths, "new", {})
    write_new_config(paths, "new", {"S_NICE": "2"}, overwrite=True)
    assert load_guest(paths, "new").nice == 2


def test_write_new_config_validates_first(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    with pytest.raises(ConfigError, match="IPROOT: '10.0.0.300' is not an IPv4 or IPv6 address"):
        write_new_config(paths, "new", {"IPROOT": "10.0.0.300"})
    assert not paths.config_file("new").exists()
    with pytest.raises(InvalidName):
        write_new_config(paths, "-new", {})
