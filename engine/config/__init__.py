"""engine.config: a guest's NAME.conf, read as data, validated, written atomically.

The contract (docs/engine-api.md): ``GuestConfig`` and its parts, ``load_guest``,
``list_guests``, ``validate_name``, ``write_new_config``, ``update_config``,
``parse_size``, ``parse_rate``. Import cost stays small (standard library
only): ``vserver NAME exec`` loads a config on its fast path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine._record import Record
from engine.config import values as _values
from engine.config.files import read_config_bytes, read_toml
from engine.config.model import KEYS, GuestConfig, Key, build_config, keys_markdown, validate_name
from engine.config.parser import Document, parse_bytes, parse_text
from engine.config.values import ExtraMount, IPAddr, Route, Share, ULimit
from engine.config.writer import atomic_write, check_key, new_text, updated_text
from engine.errors import ConfigError, KernelError, VstuiError
from engine.paths import Paths


def parse_size(text: str) -> int:
    """``256M`` -> 268435456 (K/M/G/T = powers of 1024; plain = bytes)."""
    try:
        return _values.parse_size(text)
    except _values.Invalid as exc:
        raise ConfigError(str(exc)) from None


def parse_rate(text: str) -> int:
    """tc rate syntax -> bits/s: ``10mbit`` -> 10000000; plain number = bits/s."""
    try:
        return _values.parse_rate(text)
    except _values.Invalid as exc:
        raise ConfigError(str(exc)) from None


def read_document(path: Path, guest: str | None = None, within: Path | None = None) -> Document:
    """Parse a config file (errors collected in the Document, not raised).

    The file is opened safely (``engine.config.files``): a regular file of at
    most 1M, links followed only inside ``within``.
    """
    return parse_bytes(read_config_bytes(path, within, guest), path, guest)


def check_guest(paths: Paths, name: str) -> tuple[GuestConfig, list[ConfigError]]:
    """Every problem of NAME.conf at once: (config from the valid keys, errors)."""
    validate_name(name)
    doc = read_document(paths.config_file(name), name, paths.config_dir)
    return build_config(name, doc, name)


def load_file(path: Path, name: str) -> GuestConfig:
    """Load and validate any config file as guest ``name``; raises the first error."""
    return _valid(*build_config(name, read_document(path, name), name))


def _valid(cfg: GuestConfig, errors: list[ConfigError]) -> GuestConfig:
    if errors:
        raise first_error(errors)
    return cfg


def first_error(errors: list[ConfigError]) -> ConfigError:
    """The first error, its message noting how many more there are."""
    first = errors[0]
    if len(errors) == 1:
        return first
    more = len(errors) - 1
    reason = f"{first.reason} (and {more} more error{'s' if more > 1 else ''}; " + (
        f"see `vserver {first.guest} check`)" if first.guest else "fix them all)"
    )
    err = ConfigError(reason, first.path, first.line, first.key, first.guest)
    err.errors = list(errors)  # type: ignore[attr-defined]
    return err


# keys that name one guest: a default for every new guest would make them collide
PER_GUEST_KEYS = frozenset({"S_CONTEXT", "S_HOSTNAME", "IPROOT"})


def load_defaults(paths: Paths, guest: str | None = None) -> dict[str, str]:
    """Keys of /etc/vserver/defaults.conf for new guests ({} without the file).

    Validated like a NAME.conf (errors name defaults.conf:line and ``guest``,
    the guest being built); keys that belong to one guest (S_CONTEXT,
    S_HOSTNAME, IPROOT) are refused.
    """
    path = paths.defaults_file
    if not os.path.lexists(path):
        return {}
    doc = read_document(path, guest, paths.config_dir)
    _, errors = build_config(guest or "defaults", doc, guest)
    if errors:
        raise first_error(errors)
    found = doc.assignments()
    for key, entry in found.items():
        if key in PER_GUEST_KEYS:
            raise ConfigError("names one guest, so it cannot be a default for new guests; "
                              "remove it", path, entry.line, key, guest)  # fmt: skip
    return {key: entry.value for key, entry in found.items()}


def load_guest(paths: Paths, name: str) -> GuestConfig:
    """The guest's validated configuration; GuestNotFound / ConfigError / InvalidName."""
    return _valid(*check_guest(paths, name))


def list_guests(paths: Paths) -> list[str]:
    """Names that have a NAME.conf (valid names only), sorted.

    Every kind of entry counts (a FIFO, a directory, a dangling link): loading
    it then says what is wrong, instead of the guest silently vanishing.
    """
    try:
        files = os.listdir(paths.config_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KernelError.from_oserror("list", exc) from None
    stems = (file[: -len(".conf")] for file in files if file.endswith(".conf"))
    partial = {f[1:-8] for f in files if f.startswith(".") and f.endswith(".partial")}
    # a guest being made or deleted, or left half so by a killed vserver: engine.rootfs.staging
    return sorted(stem for stem in stems if _is_name(stem) and stem not in partial)


class Scanned(Record):
    """One guest of ``scan_guests``: its config as far as it could be read."""

    __slots__ = _fields = ("name", "config", "error")
    name: str
    config: GuestConfig | None  # from its valid keys, even when ``error`` is set
    error: VstuiError | None  # the first problem (ConfigError...), None when valid


def scan_guests(paths: Paths) -> list[Scanned]:
    """Every configured guest, each loaded as far as it can be.

    A broken NAME.conf (bad values, not a file, too big, a link out of the
    directory) is an entry carrying its error, never an exception: one guest's
    file must not stop context allocation, ``--list``, ``--onboot`` or the
    console for the others.
    """
    found = []
    for name in list_guests(paths):
        try:
            cfg, errors = check_guest(paths, name)
        except VstuiError as exc:
            found.append(Scanned(name, None, exc))
            continue
        found.append(Scanned(name, cfg, first_error(errors) if errors else None))
    return found


def _is_name(name: str) -> bool:
    try:
        validate_name(name)
    except VstuiError:
        return False
    return True


def write_new_config(
    paths: Paths,
    name: str,
    values: Mapping[str, str],
    *,
    comments: Iterable[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write a new NAME.conf (mode 0644, atomically) after validating ``values``.

    Refuses an existing file unless ``overwrite``. ``comments`` become
    ``#`` lines under the header.
    """
    validate_name(name)
    path = paths.config_file(name)
    for key in values:
        check_key(key, path, name)
    if path.exists() and not overwrite:
        raise ConfigError("already exists; remove it first or overwrite it", path, guest=name)
    text = new_text(name, values, comments)
    _valid(*build_config(name, parse_text(text, path, name), name))
    atomic_write(path, text, 0o644, name)
    return path


def update_config(paths: Paths, name: str, changes: Mapping[str, str | None]) -> GuestConfig:
    """Change keys of NAME.conf in place (None removes one), keeping comments
    and order; new keys are appended. The result is validated before the
    atomic write: on any error the file is left as it was."""
    validate_name(name)
    path = paths.config_file(name)
    for key in changes:
        check_key(key, path, name)
    doc = read_document(path, name, paths.config_dir)
    text = updated_text(doc, changes)
    cfg = _valid(*build_config(name, parse_text(text, path, name), name))
    mode = path.stat().st_mode & 0o7777
    atomic_write(path, text, mode, name)
    return cfg


__all__ = [
    "KEYS",
    "ConfigError",
    "Document",
    "ExtraMount",
    "GuestConfig",
    "IPAddr",
    "Key",
    "Route",
    "Share",
    "ULimit",
    "build_config",
    "check_guest",
    "first_error",
    "keys_markdown",
    "list_guests",
    "load_defaults",
    "load_file",
    "load_guest",
    "parse_bytes",
    "parse_rate",
    "parse_size",
    "parse_text",
    "read_document",
    "read_toml",
    "scan_guests",
    "update_config",
    "validate_name",
    "write_new_config",
]
