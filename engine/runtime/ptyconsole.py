"""A guest's console: the pty behind its /dev/console, the log, and `vserver NAME console`.

The guest's init gets the slave end of a pty as its stdout and stderr, and
the boot plan binds that terminal onto the guest's /dev/console (systemd
writes its boot and shutdown there; console-getty needs a terminal). The
master end stays outside with the console pump, a child of the supervisor
(engine/helpers/vsuper.c): it copies everything the guest writes into the
console log and serves one attached client at a time on ``run_dir/console``,
a unix stream socket only root reaches, as lxc-console attaches to a
container:

- pump -> client: the guest's output, as it comes;
- client -> pump: frames of ``b"d" LEN(2) BYTES`` (keys typed) and
  ``b"w" ROWS(2) COLS(2)`` (the client's window size, set on the pty).

``attach`` is the client: its terminal goes raw, Ctrl-a q detaches (Ctrl-a
Ctrl-a sends one Ctrl-a), as in lxc-console.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import termios

from engine.runtime.runfiles import CONSOLE_FILE, bind_socket

SOCKET = CONSOLE_FILE  # in the guest's run directory
ESCAPE = 0x01  # Ctrl-a
DETACH = ord("q")
CHUNK = 65536
FRAME = struct.Struct("!cH")
BUSY = b"\r\n[vstui: this console is attached elsewhere; try again later]\r\n"


# -- the pty ---------------------------------------------------------------------------------


def open_pty() -> tuple[int, int]:
    """(master, slave) of a fresh pty, both close-on-exec (the caller hands them on)."""
    master, slave = os.openpty()
    for fd in (master, slave):
        os.set_inheritable(fd, False)
    return master, slave


def listen(run_dir: str) -> int:
    """The console socket's listening fd, root's only."""
    fd = bind_socket(run_dir, SOCKET, socket.SOCK_STREAM)
    with socket.socket(fileno=os.dup(fd)) as sock:
        sock.listen(4)
    return fd


# -- the client: vserver NAME console ----------------------------------------------------------


def connect(run_dir: str) -> socket.socket | None:
    """The guest's console, or None when no console is served (the guest does not run)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(os.path.join(run_dir, SOCKET))
    except OSError:
        sock.close()
        return None
    return sock


def _window(fd: int) -> bytes | None:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return FRAME.pack(b"w", 4) + struct.pack("!HH", rows, cols)


class _Keys:
    """Ctrl-a q detaches; Ctrl-a Ctrl-a sends one Ctrl-a; Ctrl-a then anything sends both."""

    def __init__(self) -> None:
        self.escaped = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to send, whether to detach)."""
        out = bytearray()
        for byte in data:
            if self.escaped:
                self.escaped = False
                if byte == DETACH:
                    return bytes(out), True
                out += bytes([ESCAPE]) if byte == ESCAPE else bytes([ESCAPE, byte])
            elif byte == ESCAPE:
                self.escaped = True
            else:
                out.append(byte)
        return bytes(out), False


def relay(sock: socket.socket, stdin: int, stdout: int) -> str:
    """Keys to the console, its output to ``stdout``, until detach or the guest's end.

    Returns ``"detached"``, ``"stopped"`` (the console went away) or ``"busy"``.
    """
    keys = _Keys()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old = signal.signal(signal.SIGWINCH, lambda *_: None)
    previous = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    try:
        frame = _window(stdin)
        if frame:
            sock.sendall(frame)
        while True:
            ready = select.select([stdin, sock, wake_r], [], [])[0]
            if wake_r in ready:
                os.read(wake_r, 512)
                frame = _window(stdin)
                if frame:
                    sock.sendall(frame)
            if sock in ready:
                data = sock.recv(CHUNK)
                if not data:
                    return "stopped"
                if data == BUSY:
                    return "busy"
                os.write(stdout, data)
            if stdin in ready:
                data, detach = keys.feed(os.read(stdin, CHUNK))
                if data:
                    sock.sendall(FRAME.pack(b"d", len(data)) + data)
                if detach:
                    return "detached"
    finally:
        signal.set_wakeup_fd(previous)
        signal.signal(signal.SIGWINCH, old)
        os.close(wake_r)
        os.close(wake_w)


def attach(run_dir: str, stdin: int = 0, stdout: int = 1) -> str:
    """`vserver NAME console`: the terminal raw while attached; see ``relay``."""
    sock = connect(run_dir)
    if sock is None:
        return "stopped"
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved is not None:
            raw = termios.tcgetattr(stdin)
            raw[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                        | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)  # fmt: skip
            raw[1] &= ~termios.OPOST
            raw[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG
                        | termios.IEXTEN)  # fmt: skip
            raw[6][termios.VMIN], raw[6][termios.VTIME] = 1, 0
            termios.tcsetattr(stdin, termios.TCSAFLUSH, raw)
        return relay(sock, stdin, stdout)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSAFLUSH, saved)
        sock.close()
