"""Text a guest controls, made safe to show on the administrator's terminal.

A guest chooses its processes' argv and comm, its log lines, user names and
file names. Written raw to a terminal, ESC, CSI (0x9b) and friends retitle
it, clear it, or set the clipboard (OSC 52). Every such text is passed
through :func:`visible` where it enters a tool or the console, so control
characters show as ``^[``, ``^?``, ``\\x9b`` (the way ``cat -v`` and ``ps``
make them visible) and one record stays one line.

Standard library only, no imports: ``vps`` and ``vserver`` load it on their
start path.
"""

from __future__ import annotations


def _table() -> dict[int, str]:
    table = {c: "^" + chr(c + 64) for c in range(0x20)}  # C0: ^@ .. ^_ (ESC = ^[)
    table[0x7F] = "^?"
    table.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})  # C1: CSI 0x9b, OSC 0x9d
    # bytes that were not UTF-8, kept by the surrogateescape error handler
    table.update({0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})
    # line and paragraph separators, bidirectional overrides ("Trojan Source")
    for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)):
        table[c] = f"\\u{c:04x}"
    return table


_VISIBLE = _table()


def visible(text: str) -> str:
    """``text`` with every control character shown as ``^X`` / ``\\xNN``."""
    if text.isprintable():  # the usual case, checked in C
        return text
    return text.translate(_VISIBLE)


def visible_lines(text: str) -> str:
    """``visible`` for text of several lines: the newlines are kept."""
    return "\n".join(map(visible, text.split("\n")))


def log_lines(data: bytes) -> list[str]:
    """A console log's bytes as visible lines: split at newlines only (a CR or
    form feed from the guest is shown, not obeyed), each line made visible."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [visible(line) for line in lines]


def excerpt(text: str, limit: int = 24) -> str:
    """A short, visible piece of ``text`` for an error message, never a whole line."""
    shown = visible(text)
    if len(shown) <= limit:
        return shown
    return shown[: limit - 3] + "..."
