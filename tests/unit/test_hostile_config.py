"""Issue 19, config input: absurd numbers, hostile files and broken neighbours.

Every numeric key has bounds and says them in one line naming file:line and
the key; sizes and rates are computed without floats; NAME.conf is opened
safely (no FIFO hang, regular files only, no links leaving /etc/vserver,
a size cap); errors never echo a whole line of the file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import KEYS, build_config, check_guest, load_guest, parse_text
from engine.config import values as v
from engine.errors import ConfigError, VstuiError
from engine.paths import Paths

PATH = "/etc/vserver/web.conf"

# every key whose value is a number (or holds numbers): huge values must be one clean error
NUMERIC = {
    "S_CONTEXT": "2..49151",
    "PRIORITY": "-100000..100000",
    "S_NICE": "-20..19",
    "V_MEMORY": "4K..1P",
    "V_CPU_WEIGHT": "1..10000",
    "V_CPU_QUOTA": "1%..100000%",
    "V_PIDS": "1..4194304",
    "V_DISK": "1M..1P",
    "V_INODES": "1..4294967295",
    "V_BANDWIDTH_OUT": "8bit..34gbit",
    "V_BANDWIDTH_IN": "8bit..34gbit",
    "V_STOP_TIMEOUT": "0.1..86400",
}
SUFFIX = {"V_CPU_QUOTA": "%", "V_MEMORY": "T", "V_DISK": "T", "V_BANDWIDTH_OUT": "gbit"}


def errors_of(text: str) -> list[ConfigError]:
    _, errors = build_config("web", parse_text(text, PATH, "web"))
    return errors


@pytest.mark.parametrize("key", sorted(NUMERIC))
@pytest.mark.parametrize("digits", [25, 400, 5000])
def test_huge_number_is_one_line_naming_key_and_range(key: str, digits: int) -> None:
    value = "9" * digits + SUFFIX.get(key, "")
    errors = errors_of(f"# c\n{key}={value}\n")
    assert len(errors) == 1
    message = str(errors[0])
    assert message.startswith(f"{PATH}:2: {key}: "), message
    assert f"use {NUMERIC[key]}" in message
    assert "\n" not in message and len(message) < 200  # never the whole value


@pytest.mark.parametrize("key", sorted(NUMERIC))
def test_documented_unit_names_the_range(key: str) -> None:
    assert NUMERIC[key] in KEYS[key].unit


def test_absurd_but_parseable_size_is_refused() -> None:
    (err,) = errors_of("V_MEMORY=99999999999999999999999T\n")
    assert str(err) == f"{PATH}:1: V_MEMORY: '99999999999999999999999T' is out of range; use 4K..1P"


@pytest.mark.parametrize(
    ("option", "limit"),
    [("-u", "0..4194304"), ("-n", "0..2147483584"), ("-t", "0..9223372036854775807"),
     ("-s", "0..9007199254740991")],
)  # fmt: skip
def test_ulimit_values_have_bounds(option: str, limit: str) -> None:
    (err,) = errors_of(f'ULIMIT="-HS {option} {"9" * 400}"\n')
    assert str(err).startswith(f"{PATH}:1: ULIMIT: ")
    assert f"use {limit}" in str(err) and len(str(err)) < 300


def test_sizes_and_rates_are_exact_integers() -> None:
    # floats made 1.001kbit 1000 bit/s and lost the last bytes of large sizes
    assert v.parse_rate("1.001kbit") == 1001
    assert v.parse_rate("0.57mbit") == 570_000
    assert v.parse_rate("2.5kbps") == 20_000
    assert v.parse_size("1023.9999999999999999T") == (1 << 50) - 1
    assert v.parse_size("1.5G") == 3 << 29
    assert v.parse_size("1.1K") == 1126  # whole bytes, rounded down


def test_effective_config_keeps_every_digit() -> None:
    cfg, errors = build_config("web", parse_text("V_MEMORY=1125899906842623\n", PATH, "web"))
    assert not errors and cfg.memory == (1 << 50) - 1


# -- NAME.conf opened safely -----------------------------------------------------------
SECRET = "root:$y$j9T$Zq1bX0Xn8pDvW3kq2hRzX/$3Vf0tDXj9nqQkG4m8B1cH0xL5sP7rT2uE6wY9aZ1bC:19000::"


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths.from_root(tmp_path)
    p.config_dir.mkdir(parents=True)
    return p


def vserver(paths: Paths, *args: str) -> subprocess.CompletedProcess[str]:
    """The real tool in a child: a hang is a failure, not a stuck suite."""
    argv = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def one_line_error(done: subprocess.CompletedProcess[str], lines: int = 1) -> str:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == lines, done.stderr
    return done.stderr


@pytest.mark.parametrize("command", ["check", "config"])
def test_fifo_config_is_refused_not_waited_on(paths: Paths, command: str) -> None:
    os.mkfifo(paths.config_file("web"))
    err = one_line_error(vserver(paths, "web", command))
    assert f"{paths.config_file('web')} is a FIFO, not a regular file" in err


def test_directory_config_is_named(paths: Paths) -> None:
    paths.config_file("web").mkdir()
    err = one_line_error(vserver(paths, "web", "check"))
    assert f"{paths.config_file('web')} is a directory, not a regular file" in err


def test_link_outside_the_config_dir_is_refused_unread(paths: Paths, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text(SECRET + "\n")
    paths.config_file("web").symlink_to(shadow)
    err = one_line_error(vserver(paths, "web", "check"))
    assert "is a symbolic link to" in err and f"outside {paths.config_dir}" in err
    assert "root:" not in err


def test_link_inside_the_config_dir_is_followed(paths: Paths) -> None:
    (paths.config_dir / "shared").mkdir()
    (paths.config_dir / "shared" / "web.conf").write_text("S_HOSTNAME=www\n")
    paths.config_file("web").symlink_to("shared/web.conf")
    assert load_guest(paths, "web").hostname == "www"


@pytest.mark.parametrize("command", ["check", "config", "start"])
def test_unparsable_line_is_never_echoed_whole(paths: Paths, command: str) -> None:
    paths.config_file("web").write_text(SECRET + "\n")
    err = one_line_error(vserver(paths, "web", command), 2 if command == "check" else 1)
    echoed = [m for m in re.findall(r"[^' ]+", err) if m.rstrip(".") in SECRET]
    assert max(len(m) for m in echoed) <= 24, err


def test_oversized_config_is_refused_before_reading(paths: Paths) -> None:
    with open(paths.config_file("web"), "wb") as f:
        f.truncate(10 << 20)
    err = one_line_error(vserver(paths, "web", "check"))
    assert "is 10M, more than the 1M a configuration may have" in err


def test_repeated_warnings_are_capped(paths: Paths) -> None:
    paths.config_file("web").write_text("".join(f"X{i}=1\n" for i in range(50_000)))
    done = vserver(paths, "web", "check")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) <= 25
    assert lines[-1].endswith("and 49980 more warnings like these")


def test_many_bad_lines_stop_the_parser(paths: Paths) -> None:
    paths.config_file("web").write_text("garbage line\n" * 50_000)
    done = vserver(paths, "web", "check")
    assert done.returncode == 1 and len(done.stderr.splitlines()) <= 25, done.stderr[-500:]
    assert "more than 20 errors: not read from here on" in done.stderr


def test_byte_order_mark_is_accepted_and_kept(paths: Paths) -> None:
    from engine.config import update_config

    paths.config_file("web").write_bytes(b"\xef\xbb\xbfS_HOSTNAME=www\n# mine\n")
    assert load_guest(paths, "web").hostname == "www"
    update_config(paths, "web", {"S_NICE": "5"})
    written = paths.config_file("web").read_bytes()
    assert written == b"\xef\xbb\xbfS_HOSTNAME=www\n# mine\nS_NICE=5\n"


def test_check_of_a_missing_guest_is_guest_not_found(paths: Paths) -> None:
    with pytest.raises(VstuiError, match="does not exist"):
        check_guest(paths, "web")


@pytest.mark.root
def test_disk_full_names_the_file_and_keeps_it(paths: Paths) -> None:
    from engine.config import update_config

    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(paths.config_dir)],
                   check=True)  # fmt: skip
    try:
        paths.config_file("web").write_text("S_HOSTNAME=www\n")
        fd = os.open(paths.config_dir / "filler", os.O_WRONLY | os.O_CREAT)
        with pytest.raises(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        with pytest.raises(VstuiError) as caught:
            update_config(paths, "web", {"V_INIT": "/bin/" + "x" * 8000})
        assert str(paths.config_file("web")) in str(caught.value)
        assert "No space left on device" in str(caught.value)
        assert paths.config_file("web").read_text() == "S_HOSTNAME=www\n"
        assert sorted(os.listdir(paths.config_dir)) == ["filler", "web.conf"]
    finally:
        subprocess.run(["umount", str(paths.config_dir)], check=True)


def _documented_range(key: str) -> str | None:
    found = re.search(r"(-?[0-9][0-9.]*[A-Za-z%]*)\.\.([0-9][0-9.]*[A-Za-z%]*)", KEYS[key].unit)
    return found.group(0) if found else None


@pytest.mark.parametrize("key", sorted(k for k in KEYS if _documented_range(k)))
def test_every_key_with_a_documented_range_enforces_it(key: str) -> None:
    """Keys added later too: a range in KEYS is one the parser says."""
    (err,) = errors_of(f"{key}={'9' * 400}{SUFFIX.get(key, '')}\n")
    assert f"use {_documented_range(key)}" in str(err) and len(str(err)) < 200
