"""Text a hostile guest (or process) controls: every control character.

Shared by the terminal-safety tests: ``CONTROL_ARGS`` for argv, ``COMMS``
for comm (15 bytes each), ``CONSOLE`` for what a guest writes to its
console, and ``raw_controls(data)`` finding what must never reach a terminal.
"""

from __future__ import annotations

C0 = bytes(range(0x00, 0x20))
OSC52 = b"\x1b]52;c;cHduZWQK\x07"  # "set the clipboard to 'pwned'"
TITLE = b"\x1b]0;PWNED\x07\x1b[2J"  # retitle and clear the terminal
C1_CSI_UTF8 = "\u009b".encode()  # CSI as one character (UTF-8 C2 9B)
C1_CSI_BYTE = b"\x9b"  # CSI as a raw byte (not UTF-8)

# argv words: every C0 but NUL (the separator itself), DEL, CSI both ways, OSC 52
CONTROL_ARGS: list[bytes] = [
    TITLE, C0[1:16], C0[16:], b"\x7f", C1_CSI_UTF8 + b"2J", C1_CSI_BYTE + b"2J", OSC52,
    b"line1\nline2\rline3",
]  # fmt: skip
# bytes that are not UTF-8 (a name is any bytes): 0xff, a lone C1 CSI, a cut sequence
NOT_UTF8 = b"\xff\xfe" + C1_CSI_BYTE + b"2J\xe2\x82"
# comm is at most 15 bytes and ends at NUL: several processes share the set
COMMS: list[bytes] = [
    b"\x1b]0;PWNED\x07", C0[1:15], C0[15:29], C0[29:] + b"\x7f" + C1_CSI_UTF8, OSC52[:15],
    NOT_UTF8,
]  # fmt: skip
CONSOLE: bytes = C0 + b"\x7f" + C1_CSI_UTF8 + C1_CSI_BYTE + OSC52 + TITLE + b"\n"


def raw_controls(data: bytes | str, allowed: bytes = b"\n") -> list[str]:
    """Every raw control character in ``data`` that a terminal would act on:
    C0 (but ``allowed``), DEL, C1 as characters (U+0080..U+009F, UTF-8 C2 80..
    C2 9F) and as lone bytes 0x80..0x9f that are not part of UTF-8."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "surrogateescape")
    found = set()
    for ch in data:
        code = ord(ch)
        if (code < 0x20 and ch.encode() not in allowed) or code == 0x7F or 0x80 <= code <= 0x9F:
            found.add(f"U+{code:04X}")
        elif 0xDC80 <= code <= 0xDC9F:  # a raw byte 0x80..0x9f, not UTF-8
            found.add(f"byte 0x{code - 0xDC00:02x}")
    return sorted(found)


_HOLDER = """\
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode("utf-8", "surrogateescape"), 0, 0, 0)
print("ready", flush=True)
time.sleep(1000)
"""


def spawn(mark: str) -> list:
    """One process per entry of COMMS: argv[0] is TITLE + ``mark`` (so the
    hostile part leads its command line), comm the entry, then CONTROL_ARGS.
    Returns the Popen objects once every process has set its comm."""
    import subprocess
    import sys

    procs = []
    try:
        for comm in COMMS:
            argv = [TITLE + mark.encode(), "-c", _HOLDER, comm, *CONTROL_ARGS]
            procs.append(subprocess.Popen(argv, executable=sys.executable, stdout=subprocess.PIPE))
        for p in procs:
            assert p.stdout.readline() == b"ready\n"
    except BaseException:
        stop(procs)
        raise
    return procs


def stop(procs: list) -> None:
    for p in procs:
        p.kill()
        p.wait()
