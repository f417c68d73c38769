"""Opening a configuration file as only a configuration file.

NAME.conf is read by every tool and, through context id allocation, by every
other guest's start. So it must never hang a command (a FIFO), read a device,
follow a link out of the configuration directory (a link to /etc/shadow
once had its lines printed in error messages), or take seconds and hundreds
of megabytes (a 10 MB file). Every refusal is one line naming the file.
"""

from __future__ import annotations

import os
import stat

from engine.errors import ConfigError, GuestNotFound, KernelError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

MAX_SIZE = 1 << 20  # a configuration is a few hundred bytes; 1M is generous

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_config_bytes(path: Path, within: Path | None, guest: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most MAX_SIZE.

    ``within``: links may point anywhere inside this directory, never outside
    it (None: the caller named the file itself, links are followed).
    Raises GuestNotFound when there is no file, ConfigError when it is not one
    we read, KernelError when the kernel refuses.
    """
    real = _resolved(path, within, guest)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise GuestNotFound(_missing(path, guest), guest) from None
    except OSError as exc:
        raise KernelError.from_oserror("open", exc, guest) from None
    try:
        _check_file(path, os.fstat(fd), guest)
        return _read_capped(fd, path, guest)
    except OSError as exc:
        raise KernelError("read", str(path), exc.errno or 5, guest) from None
    finally:
        os.close(fd)


def _resolved(path: Path, within: Path | None, guest: str | None) -> str:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise GuestNotFound(_missing(path, guest), guest) from None
    except OSError as exc:
        raise KernelError.from_oserror("stat", exc, guest) from None
    if not stat.S_ISLNK(st.st_mode):
        _check_file(path, st, guest)  # before open(2): opening a device may act
        return os.fspath(path)
    real = os.path.realpath(path)
    top = os.path.realpath(within) if within is not None else None
    if top is not None and os.path.commonpath([real, top]) != top:
        raise ConfigError(
            f"is a symbolic link to {real}, outside {within}; copy the file there "
            "instead (configuration is read only from that directory)",
            path,
            guest=guest,
        )
    try:
        _check_file(path, os.stat(real), guest)
    except FileNotFoundError:
        raise ConfigError(f"is a symbolic link to {real}, which does not exist", path,
                          guest=guest) from None  # fmt: skip
    return real


def _check_file(path: Path, st: os.stat_result, guest: str | None) -> None:
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise ConfigError(
                f"{path} is {kind}, not a regular file; a configuration is a text file",
                None,
                guest=guest,
            )
    if st.st_size > MAX_SIZE:
        raise ConfigError(f"is {_mib(st.st_size)}, more than the 1M a configuration may have; "
                          "is this the right file?", path, guest=guest)  # fmt: skip


def _read_capped(fd: int, path: Path, guest: str | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_SIZE:
        chunk = os.read(fd, MAX_SIZE + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_SIZE:  # it grew since fstat
        raise ConfigError("is more than the 1M a configuration may have", path, guest=guest)
    return b"".join(chunks)


def _mib(size: int) -> str:
    return f"{size >> 20}M" if size >= 1 << 20 else f"{size >> 10}K"


def _missing(path: Path, guest: str | None) -> str:
    name = guest or os.path.basename(path).removesuffix(".conf")
    return (
        f"no configuration for guest '{name}': {path} does not exist; create it with "
        f"`vserver {name} build` or `vserver {name} import`"
    )


def read_toml(path: Path) -> dict[str, Any] | None:
    """A TOML file of the host's own configuration (hosts.toml, keymap.toml,
    themes), read as safely as NAME.conf: regular files only (a FIFO hung every
    `--host` command), at most 1M, strict UTF-8, nesting that the parser's
    recursion cannot follow refused. None when there is no file; otherwise a
    ConfigError or KernelError that names it."""
    import tomllib

    try:
        data = read_config_bytes(path, None)
    except GuestNotFound:
        return None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError("is not UTF-8 text; save it as UTF-8", path, line) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{exc}; fix the TOML syntax", path) from None
    except RecursionError:  # tomllib recurses into nested arrays and tables
        raise ConfigError("is nested too deep to read; fix the TOML syntax", path) from None
