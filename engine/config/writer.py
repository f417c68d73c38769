"""Writing NAME.conf: atomic, and keeping what the user wrote.

A write goes to a temporary file in the same directory, is fsync'ed, renamed
over the old file and the directory is fsync'ed: a crash or a full disk
leaves either the old file or the new one, never half of either, and no
temporary file behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.config.parser import Document, Entry, render_entry
from engine.errors import ConfigError, KernelError
from engine.text import visible

_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def atomic_write(path: Path, text: str, mode: int = 0o644, guest: str | None = None) -> None:
    """Replace ``path`` with ``text`` atomically (same-directory temp + rename)."""
    directory = path.parent
    # a hidden, unique name in the same directory, so rename(2) stays atomic
    tmp = str(directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise KernelError.from_oserror("create", exc, guest, path=tmp) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            raise KernelError.from_oserror(
                "write", exc, guest, "the old file is unchanged", path
            ) from None
        raise
    _fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_key(key: str, path: Path | None = None, guest: str | None = None) -> str:
    if not key or key[0].isdigit() or not set(key) <= _KEY_CHARS:
        raise ConfigError(
            f"'{key}' is not a variable name; use letters, digits and _", path, None, None, guest
        )
    return key


def updated_text(doc: Document, changes: Mapping[str, str | None]) -> str:
    """The document's text with ``changes`` applied (None removes a key).

    A changed key keeps its line, indent, ``export``, quoting and trailing
    comment; an earlier assignment of the same key (dead in a shell) is
    dropped; new keys are appended at the end in the order given.
    """
    last = {key: entry for key, entry in doc.assignments().items()}
    out: list[str] = []
    for entry in doc.entries:
        out.append(_changed_line(entry, changes, last))
    text = doc.bom + "".join(out)
    added = [
        render_entry(key, value)
        for key, value in changes.items()
        if value is not None and key not in last
    ]
    if added and text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(added)


def _changed_line(
    entry: Entry, changes: Mapping[str, str | None], last: Mapping[str, Entry]
) -> str:
    if entry.key is None or entry.key not in changes:
        return entry.raw
    value = changes[entry.key]
    if value is None or last[entry.key] is not entry:
        return ""
    return render_entry(entry.key, value, entry)


def comment_line(text: str) -> str:
    """``text`` as one ``#`` line: its control characters (a newline above all)
    shown, never written, so text from a file's name or contents (legacy
    import's notes) can never become a line of its own, an assignment."""
    return f"# {visible(text)}\n" if text else "#\n"


def new_text(name: str, values: Mapping[str, str], comments: Iterable[str] = ()) -> str:
    """A fresh NAME.conf: a header, optional comment lines, then the values."""
    lines = [f"# vstui guest '{name}'; the keys are described in docs/config.md\n"]
    lines.extend(comment_line(c) for c in comments)
    lines.extend(render_entry(key, value) for key, value in values.items())
    return "".join(lines)
