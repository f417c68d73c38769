"""NAME.conf as data: shell-variable syntax read without ever running a shell.

Accepted, one statement per logical line::

    KEY=value            KEY="value"         KEY='value'
    export KEY=value     # comment           KEY=value  # trailing comment
    KEY="two \\
    lines"               (backslash continuations and multi-line quotes)

Curly quotes pasted from documents (”yes”, “x”, ‘x’) are read as straight
quotes, with a warning. Anything a shell would have to evaluate (``if``,
``case``, ``;;``, ``$VAR``, ``$(...)``, backticks, ``;``, pipes) is a
``ConfigError`` with file:line: we never guess what a script meant.

The parser keeps every physical line (``Entry.raw``) so the writer can change
one value and leave the user's comments, blank lines and order alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine._record import Record
from engine.errors import ConfigError
from engine.text import excerpt

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHELL_WORDS = frozenset(
    "if then else elif fi case esac for while until do done in function select".split()
)
_OPEN_DOUBLE = "\u201c\u201d\u201e"  # “ ” „ : read as "
_OPEN_SINGLE = "\u2018\u2019\u201a"  # ‘ ’ ‚ : read as '
_SPECIALS = ";|&<>(){}"
BOM = "\ufeff"  # editors on other systems start UTF-8 files with it
MAX_ERRORS = 20


class Entry(Record):
    """One logical line of the file (it may span several physical lines)."""

    __slots__ = _fields = ("raw", "line", "key", "value", "export", "indent", "quote", "trailer")
    _defaults = {
        "key": None,
        "value": "",
        "export": False,
        "indent": "",
        "quote": "",
        "trailer": "",
    }
    raw: str  # exact text, physical lines included, with the final newline
    line: int  # first physical line, 1-based
    key: str | None  # None: blank line, comment, or a line we could not read
    value: str  # decoded value
    export: bool
    indent: str
    quote: str  # quote the user wrote: '"', "'" or ""
    trailer: str  # blanks and trailing comment after the value


class Document(Record):
    """A parsed file: every line kept; errors collected, never raised here."""

    __slots__ = _fields = ("path", "entries", "warnings", "errors", "bom")
    _defaults = {"warnings": (), "errors": (), "bom": ""}
    path: Path | None
    entries: tuple[Entry, ...]
    warnings: tuple[str, ...]
    errors: tuple[ConfigError, ...]
    bom: str  # a UTF-8 byte order mark the file began with, kept on rewrite

    def assignments(self) -> dict[str, Entry]:
        """Key -> its last assignment (later ones win, as in a shell)."""
        found: dict[str, Entry] = {}
        for entry in self.entries:
            if entry.key is not None:
                found.pop(entry.key, None)  # keep the order of the winning line
                found[entry.key] = entry
        return found

    def text(self) -> str:
        return self.bom + "".join(e.raw for e in self.entries)


class _Bad(Exception):
    """A statement we cannot read as data; ``offset`` locates it in the text."""

    def __init__(self, message: str, offset: int, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.key = key


class _State:
    """What the parser collects while it reads one file."""

    __slots__ = _fields = ("entries", "errors", "guest", "path", "warnings")

    def __init__(self, path: Path | None, guest: str | None) -> None:
        self.path = path
        self.guest = guest
        self.entries: list[Entry] = []
        self.warnings: list[str] = []
        self.errors: list[ConfigError] = []


def parse_bytes(
    data: bytes, path: str | os.PathLike[str] | None = None, guest: str | None = None
) -> Document:
    """Decode ``data`` as UTF-8 and parse it; undecodable input is one error."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        err = ConfigError(
            f"byte {exc.start} is not UTF-8 text; save the file as UTF-8", path, line, None, guest
        )
        return Document(Path(path) if path else None, (), (), (err,))
    return parse_text(text, path, guest)


def parse_text(
    text: str, path: str | os.PathLike[str] | None = None, guest: str | None = None
) -> Document:
    """Parse NAME.conf text into a Document (errors collected, not raised).

    After ``MAX_ERRORS`` errors the rest of the text is kept as it is, unread:
    a file that is not a configuration at all costs one screen of errors.
    """
    state = _State(Path(path) if path else None, guest)
    bom = BOM if text.startswith(BOM) else ""
    pos, line = len(bom), 1
    while pos < len(text):
        if len(state.errors) >= MAX_ERRORS:
            _give_up(state, text[pos:], line)
            break
        end, opened = _statement_end(text, pos)
        raw = text[pos:end]
        if opened is not None:
            quote = '"' if text[opened] == '"' or text[opened] in _OPEN_DOUBLE else "'"
            message = f"this {quote} quote is never closed; close it"
            _record(state, raw, line, _Bad(message, opened - pos))
        else:
            _parse_statement(state, raw, line)
        line += raw.count("\n")
        pos = end
    return Document(
        state.path, tuple(state.entries), tuple(state.warnings), tuple(state.errors), bom
    )


def _give_up(state: _State, rest: str, line: int) -> None:
    message = f"more than {MAX_ERRORS} errors: not read from here on; fix these first"
    state.errors.append(ConfigError(message, state.path, line, None, state.guest))
    state.entries.append(Entry(rest, line))


def _statement_end(text: str, pos: int) -> tuple[int, int | None]:
    """End (after the newline) of the logical line starting at ``pos``.

    Follows quotes, backslash-newline continuations and comments, so that a
    quote inside a comment opens nothing. Returns an error for a quote left
    open at the end of the file: the offset of the quote that opened.
    """
    quote = ""
    opened = 0
    word_start = True
    i = pos
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"' and i + 1 < len(text):
                i += 2
                continue
            if _closes(quote, ch):
                quote = ""
            i += 1
            continue
        if ch == "\n":
            return i + 1, None
        if ch == "#" and word_start:
            nl = text.find("\n", i)
            return (len(text) if nl < 0 else nl + 1), None
        if ch == "\\":
            i += 2
            word_start = False
            continue
        if ch in "\"'" or ch in _OPEN_DOUBLE or ch in _OPEN_SINGLE:
            quote = '"' if ch == '"' or ch in _OPEN_DOUBLE else "'"
            opened = i
        word_start = ch in " \t"
        i += 1
    return len(text), (opened if quote else None)


def _closes(quote: str, ch: str) -> bool:
    return (
        ch == quote
        or (quote == '"' and ch in _OPEN_DOUBLE)
        or (quote == "'" and ch in _OPEN_SINGLE)
    )


def _record(state: _State, raw: str, line: int, bad: _Bad) -> None:
    at = line + raw[: bad.offset].count("\n")
    state.errors.append(ConfigError(bad.message, state.path, at, bad.key, state.guest))
    state.entries.append(Entry(raw, line))


def _parse_statement(state: _State, raw: str, line: int) -> None:
    body = raw[:-1] if raw.endswith("\n") else raw
    stripped = body.lstrip(" \t")
    if "\0" in body:
        _record(state, raw, line, _Bad("contains a NUL byte; this is not a text file", 0))
        return
    if not stripped or stripped.startswith("#"):
        state.entries.append(Entry(raw, line))
        return
    try:
        entry, warnings = _assignment(body, raw, line)
    except _Bad as bad:
        _record(state, raw, line, bad)
        return
    where = f"{state.path}:{line}: " if state.path else f"line {line}: "
    state.warnings.extend(f"{where}{entry.key}: {w}" for w in dict.fromkeys(warnings))
    state.entries.append(entry)


def _assignment(body: str, raw: str, line: int) -> tuple[Entry, list[str]]:
    indent = body[: len(body) - len(body.lstrip(" \t"))]
    pos = len(indent)
    export = False
    if re.match(r"export[ \t]+", body[pos:]):
        export = True
        pos += len(re.match(r"export[ \t]+", body[pos:]).group(0))  # type: ignore[union-attr]
    match = _KEY_RE.match(body, pos)
    if not match or body[match.end() : match.end() + 1] != "=":
        raise _Bad(_not_assignment(body[pos:]), pos)
    key = match.group(0)
    value, quote, end, warnings = _value(body, match.end() + 1, key)
    trailer = body[end:]
    rest = trailer.lstrip(" \t")
    if rest and not rest.startswith("#"):
        raise _Bad(_after_value(rest), end + len(trailer) - len(rest), key)
    entry = Entry(raw, line, key, value, export, indent, quote, trailer)
    return entry, warnings


def _not_assignment(text: str) -> str:
    first = re.split(r"[\s;()]", text, maxsplit=1)[0]
    if first in _SHELL_WORDS or text.startswith(";;") or re.match(r"[^\s=]*\)", text):
        return (
            f"'{_short(text)}' is shell code ({first or text[:2]}) that cannot be read as "
            "data; write plain KEY=value lines"
        )
    if "=" in first and not _KEY_RE.fullmatch(first.split("=", 1)[0]):
        name = _short(first.split("=", 1)[0])
        return f"'{name}' is not a variable name; use letters, digits and _"
    return f"'{_short(text)}' is not a KEY=value line"


def _after_value(rest: str) -> str:
    if rest[0] in _SPECIALS:
        return (
            f"'{_short(rest)}' is shell code that cannot be read as data; "
            "write one KEY=value per line"
        )
    return f"unquoted space before '{_short(rest)}'; quote the value, e.g. KEY=\"a b\""


def _short(text: str) -> str:
    # an excerpt, never the whole line: the file may be anything (a link to
    # /etc/shadow once had its hashes printed in these messages)
    return excerpt(" ".join(text.split()), 24)


def _value(body: str, pos: int, key: str) -> tuple[str, str, int, list[str]]:
    """Decode the word starting at ``pos``: (value, first quote, end, warnings)."""
    out: list[str] = []
    warnings: list[str] = []
    first_quote = ""
    i = pos
    while i < len(body):
        ch = body[i]
        if ch in " \t":
            break
        if ch == "\\":
            if i + 1 < len(body) and body[i + 1] != "\n":
                out.append(body[i + 1])
            i += 2
            continue
        if ch in "\"'" or ch in _OPEN_DOUBLE or ch in _OPEN_SINGLE:
            quote = '"' if ch == '"' or ch in _OPEN_DOUBLE else "'"
            if ch not in "\"'":
                warnings.append(f"curly quote {ch} read as a straight {quote}; use plain quotes")
            first_quote = first_quote or quote
            i = _quoted(body, i + 1, quote, out, warnings, key)
            continue
        _check_plain(ch, i, key)
        out.append(ch)
        i += 1
    return "".join(out), first_quote, i, warnings


def _check_plain(ch: str, i: int, key: str) -> None:
    if ch == "$":
        raise _Bad("'$' asks the shell to expand something; write the value itself", i, key)
    if ch == "`":
        raise _Bad("backticks run a command; write the value itself", i, key)
    if ch in _SPECIALS:
        raise _Bad(f"'{ch}' is shell syntax; quote the value, e.g. {key}=\"...\"", i, key)


def _quoted(body: str, i: int, quote: str, out: list[str], warnings: list[str], key: str) -> int:
    """Read a quoted part until its closing quote; returns the index after it."""
    while i < len(body):
        ch = body[i]
        if _closes(quote, ch):
            if ch != quote:
                warnings.append(f"curly quote {ch} read as a straight {quote}; use plain quotes")
            return i + 1
        if quote == '"':
            if ch == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                if nxt != "\n":
                    out.append(nxt if nxt in '$`"\\' else "\\" + nxt)
                i += 2
                continue
            if ch in "$`":
                _check_plain(ch, i, key)
        out.append(ch)
        i += 1
    raise _Bad(f"a {quote} quote is never closed", i, key)  # pragma: no cover - see _statement_end


# -- writing values back -----------------------------------------------------------
_PLAIN_RE = re.compile(r"[A-Za-z0-9_./:@%+,=-]+")


def quote_value(value: str, prefer: str = "") -> str:
    """Shell-quote ``value`` so that this parser (and sh) read it back exactly."""
    if prefer == "'" and "'" not in value:
        return f"'{value}'"
    if _PLAIN_RE.fullmatch(value) and prefer != '"':
        return value
    escaped = re.sub(r'([$`"\\])', r"\\\1", value)
    return f'"{escaped}"'


def render_entry(key: str, value: str, old: Entry | None = None) -> str:
    """One assignment line, keeping the old line's indent, export, quoting and comment."""
    if old is None:
        return f"{key}={quote_value(value, _default_quote(value))}\n"
    export = "export " if old.export else ""
    trailer = old.trailer if "\n" not in old.trailer else ""
    return f"{old.indent}{export}{key}={quote_value(value, old.quote)}{trailer}\n"


def _default_quote(value: str) -> str:
    return '"' if " " in value or value == "" else ""
