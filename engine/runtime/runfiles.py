"""The run directory's files and lock, with nothing but os and fcntl.

The per-guest supervisor lives as long as its guest and imports only this
(plus os, select, signal), so that a running guest costs a few MB of
supervisor memory. state.py builds RunState and the Paths-based API on it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterable

LOCK_FILE = "lock"
FROZEN_FILE = "frozen"  # epoch seconds of `vserver NAME freeze` (engine.runtime.freezing)
NOTIFY_FILE = "notify"  # the supervisor's sd_notify socket (the guest's /run/host/notify)
CONSOLE_FILE = "console"  # the console pump's socket (`vserver NAME console`)
APPLIED_FILE = "applied"  # the capabilities and flags the guest was started with
STOP_PLAN = "stop.plan"  # bootplan.STOP_OPS: the compiled stop (engine/helpers/stop.h)
VALUE_FILES = ("state", "xid", "init.pid", "init.start", "supervisor.pid",
               "supervisor.start", "started", "exec.plan", "meminfo",
               FROZEN_FILE, NOTIFY_FILE, CONSOLE_FILE, APPLIED_FILE, STOP_PLAN)  # fmt: skip


def write_value(run_dir: str | os.PathLike[str], key: str, value: object) -> None:
    """Write one value atomically (temp file + rename); a failed write (a full
    disk) leaves the old value and no temporary file."""
    tmp = os.path.join(run_dir, f".{key}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
        os.replace(tmp, os.path.join(run_dir, key))
    except OSError as exc:
        _unlink(tmp)
        if exc.filename is None:  # write(2), close(2): ENOSPC names no file by itself
            exc.filename = tmp
        raise


def read_value(run_dir: str | os.PathLike[str], key: str) -> str | None:
    try:
        with open(os.path.join(run_dir, key)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def log_line(log_fd: int, name: str, text: str) -> None:
    """One ``--- vserver NAME: TEXT at TIME ---`` line in a guest's console log."""
    import time

    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(log_fd, f"--- vserver {name}: {text} at {stamp} ---\n".encode())


def bind_socket(run_dir: str, name: str, kind: int) -> int:
    """A unix socket bound at run_dir/NAME (a stale one replaced), root's only; its fd."""
    import socket

    path = os.path.join(run_dir, name)
    _unlink(path)
    sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    return sock.detach()


def applied_record(caps: Iterable[str], flags: Iterable[str]) -> bytes:
    """The ``applied`` run file: what a later edit of NAME.conf is compared
    with to say what waits for a restart (written by the start plan, so a
    start replayed from the boot cache writes it too)."""
    return f"caps {' '.join(sorted(caps))}\nflags {' '.join(sorted(flags))}\n".encode()


def read_applied(run_dir: str | os.PathLike[str]) -> tuple[frozenset[str], frozenset[str]] | None:
    """(capabilities, flags) the running guest started with; None if unrecorded."""
    try:
        with open(os.path.join(run_dir, APPLIED_FILE)) as f:
            lines = dict(line.rstrip("\n").partition(" ")[::2] for line in f)
    except OSError:
        return None
    if "caps" not in lines or "flags" not in lines:
        return None
    return frozenset(lines["caps"].split()), frozenset(lines["flags"].split())


def clear_dir(run_dir: str | os.PathLike[str]) -> None:
    """Remove the value files (not the lock: others may wait on it)."""
    for key in VALUE_FILES:
        _unlink(os.path.join(run_dir, key))
        _unlink(os.path.join(run_dir, f".{key}.tmp"))


def remove_dir(run_dir: str | os.PathLike[str]) -> None:
    """Remove the whole run directory (a stopped guest leaves nothing in /run)."""
    clear_dir(run_dir)
    _unlink(os.path.join(run_dir, LOCK_FILE))
    try:
        os.rmdir(run_dir)
    except OSError:
        pass


class RunLock:
    """flock on ``run_dir/lock``; survives the file being unlinked meanwhile.

    Whoever holds it may remove the run directory: a waiter that then gets
    the old (unlinked) inode notices and locks the new file instead.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_FILE)
        self.fd: int | None = None

    def acquire(self, timeout: float | None = 60.0) -> bool:
        """Take the lock; False when ``timeout`` (0 = try once) runs out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            os.makedirs(self.run_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            if self._same_inode(fd):
                self.fd = fd
                return True
            os.close(fd)  # unlinked by the previous holder: lock the new one

    def _same_inode(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def stop_signal(pid: int, fakeinit: bool) -> int:
    """The signal that asks init to shut the guest down.

    vinit: SIGTERM. A real init (fakeinit): systemd halts on SIGRTMIN+3,
    sysvinit and others get SIGPWR (and are killed after the timeout).
    """
    import signal

    if not fakeinit:
        return signal.SIGTERM
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    return signal.SIGRTMIN + 3 if "systemd" in exe else signal.SIGPWR
