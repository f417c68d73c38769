"""A pty from the guest's own devpts, relayed to the caller's terminal.

The guest's /dev/ptmx is opened through its root (/proc/INIT/root, openat2
RESOLVE_IN_ROOT): its devpts instance, so the command's terminal is a guest
pty, numbered and visible inside the guest. The caller's terminal stays in
this process: nothing in the guest can inject input into it with TIOCSTI.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import stat
import termios
from collections.abc import Callable

from engine.errors import VstuiError

TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
TTYAUX_MAJOR = 5  # /dev/ptmx is 5:2 (devpts' own ptmx too)
CHUNK = 16384


def open_guest_pty(root: int, guest: str) -> tuple[int, int]:
    """(master, slave) of a new pty in the devpts of the guest whose / is ``root``."""
    from engine import safepath

    try:
        master = safepath.open_in_root(root, "/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise VstuiError(f"cannot open the guest's /dev/ptmx: {exc.strerror}", guest) from None
    st = os.fstat(master)
    # 5:2 exactly: /dev/tty (5:0) would hand us the admin's own terminal
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (
        TTYAUX_MAJOR,
        2,
    ):
        os.close(master)
        raise VstuiError("the guest's /dev/ptmx is not a pty multiplexer; fix /dev/ptmx", guest)
    fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    os.set_blocking(master, True)
    return master, slave


def _copy_winsize(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            done = os.write(fd, data)
        except InterruptedError:
            continue
        data = data[done:]


def wait_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_on_pty(pty: tuple[int, int], child: Callable[[], None], guest: str) -> int:
    """Fork ``child`` with the guest pty ``pty`` as stdio, relay until it exits; its code.

    ``child`` execs vexec, whose own child (inside the guest's PID namespace)
    starts a session and takes the pty as its controlling terminal.
    """
    master, slave = pty
    stdin_tty = os.isatty(0)
    if stdin_tty:
        _copy_winsize(0, master)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 125
        try:
            os.close(master)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            if slave > 2:
                os.close(slave)
            child()
        except BaseException as exc:
            text = exc.message if isinstance(exc, VstuiError) else f"{type(exc).__name__}: {exc}"
            os.write(2, f"vserver: {guest}: {text}\r\n".encode(errors="replace"))
        finally:
            os._exit(code)
    os.close(slave)
    saved = termios.tcgetattr(0) if stdin_tty else None
    if saved is not None:
        raw = termios.tcgetattr(0)
        raw[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
        raw[1] &= ~termios.OPOST
        raw[2] = (raw[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
        raw[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
        raw[6][termios.VMIN] = 1
        raw[6][termios.VTIME] = 0
        termios.tcsetattr(0, termios.TCSANOW, raw)
    r_wake, w_wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(w_wake, warn_on_full_buffer=False)
    signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(0, master))
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    pidfd = os.pidfd_open(pid)
    try:
        _relay(master, r_wake, pidfd)
    finally:
        os.close(pidfd)
        signal.set_wakeup_fd(-1)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
    while True:
        try:
            return wait_status(os.waitpid(pid, 0)[1])
        except InterruptedError:
            continue


def _drain(master: int) -> None:
    """Copy what the command wrote before it exited (background holders aside)."""
    os.set_blocking(master, False)
    try:
        while data := os.read(master, CHUNK):
            _write_all(1, data)
    except OSError:
        pass


def _relay(master: int, wake: int, pidfd: int) -> None:
    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    poller.register(0, select.POLLIN)
    poller.register(wake, select.POLLIN)
    stdin_open = True
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == pidfd:
                _drain(master)
                return
            if fd == wake:
                try:
                    os.read(wake, 512)
                except BlockingIOError:
                    pass
            elif fd == master:
                try:
                    data = os.read(master, CHUNK)
                except OSError as exc:
                    if exc.errno == errno.EIO:  # every slave closed: the command is gone
                        return
                    raise
                if not data:
                    return
                _write_all(1, data)
            elif fd == 0 and stdin_open:
                data = os.read(0, CHUNK) if ev & (select.POLLIN | select.POLLHUP) else b""
                if not data:
                    stdin_open = False
                    poller.unregister(0)
                    _write_all(master, b"\x04")  # end of input: ^D to the guest side
                    continue
                _write_all(master, data)
