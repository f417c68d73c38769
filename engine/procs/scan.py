"""The fast /proc scanner: one read of /proc/PID/stat per process per refresh.

What changes (state, times, memory, threads) comes from ``stat``, read on every
scan. What does not (user, command line, NSpid) is read once and cached per
(pid, start time, comm): a reused PID is a new process, and an ``exec`` changes
comm, so a process that forked before we saw it and then exec'd is re-read.
Vanished processes are skipped silently: /proc is a moving target.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from engine.procfs import split_stat
from engine.text import visible

CLK_TCK: int = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread


# What a scan may need beyond stat: bits of Static.have / the ``need`` argument.
NEED_UID = 1
NEED_CMDLINE = 2
NEED_NSPID = 4
NEED_ALL = NEED_UID | NEED_CMDLINE | NEED_NSPID
STAT_SIZE = 2048  # a stat line is ~300 bytes; 52 fields of at most 20 digits fit


class Static:
    """The parts of a process read once per (pid, starttime, comm).

    A plain slotted class, not a dataclass: generating a dataclass costs
    about a millisecond at import, and this module is on vps's start path.
    ``have`` says which parts were read (NEED_* bits); the others keep their
    empty values.
    """

    __slots__ = ("cmdline", "have", "nspid", "uid")

    def __init__(
        self, uid: int, cmdline: str, nspid: tuple[int, ...], have: int = NEED_ALL
    ) -> None:
        self.uid = uid
        self.cmdline = cmdline  # space-joined argv; "" for kernel threads and zombies
        self.nspid = nspid  # NSpid: host PID first, innermost last; () if unread
        self.have = have

    def __repr__(self) -> str:
        return f"Static(uid={self.uid}, cmdline={self.cmdline!r}, nspid={self.nspid})"


_NO_STATIC = Static(0, "", (), 0)

_PROC_FIELDS = ("pid", "comm", "state", "ppid", "pgrp", "session", "tty_nr", "tpgid", "flags",
                "utime", "stime", "cutime", "cstime", "priority", "nice", "threads",
                "starttime", "vsize", "rss")  # fmt: skip


class Proc:
    """One process from one scan (plain slotted class, see Static).

    vsize and rss are in bytes; times in clock ticks. Treat it as immutable:
    the scanner hands out the SAME object again while the process's stat line
    is byte for byte unchanged (a sleeping process costs one read, no parse),
    so ``is`` tells a caller that nothing changed. ``raw`` is that stat line;
    ``memo`` is free for the one caller that owns the scanner to hang what it
    derived from this object (ProcessTable keeps the ProcRow there).
    """

    __slots__ = (*_PROC_FIELDS, "memo", "raw", "static")

    def __init__(self, pid: int, comm: str, state: str, ppid: int, pgrp: int, session: int,
                 tty_nr: int, tpgid: int, flags: int, utime: int, stime: int, cutime: int,
                 cstime: int, priority: int, nice: int, threads: int, starttime: int,
                 vsize: int, rss: int) -> None:  # fmt: skip
        self.pid = pid
        self.comm = comm
        self.state = state
        self.ppid = ppid
        self.pgrp = pgrp
        self.session = session
        self.tty_nr = tty_nr
        self.tpgid = tpgid
        self.flags = flags
        self.utime = utime
        self.stime = stime
        self.cutime = cutime
        self.cstime = cstime
        self.priority = priority
        self.nice = nice
        self.threads = threads
        self.starttime = starttime
        self.vsize = vsize
        self.rss = rss
        self.static: Static = _NO_STATIC
        self.raw = b""
        self.memo: object = None

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in _PROC_FIELDS)
        return f"Proc({inner}, static={self.static!r})"

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.starttime)

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)

    @property
    def uid(self) -> int:
        return self.static.uid

    @property
    def cmdline(self) -> str:
        return self.static.cmdline

    @property
    def nspid(self) -> int:
        """PID in the innermost PID namespace (== pid for host processes)."""
        nspid = self.static.nspid
        return nspid[-1] if nspid else self.pid


def parse_stat(data: bytes, pid: int) -> Proc | None:
    """Parse one /proc/PID/stat line (engine.procfs.split_stat); None if it is not one."""
    parsed = split_stat(data, 22)  # state .. rss, then the rest unsplit
    if parsed is None or len(parsed[1]) < 22:
        return None
    comm, f = parsed
    try:
        v = list(map(int, f[1:22]))  # one C loop: ppid (v[0]) .. rss (v[20])
    except ValueError:
        return None
    # comm is whatever the process chose (a guest's too): made visible here,
    # where it enters, so no tool, console screen or JSON carries it raw
    return Proc(pid, visible(comm.decode("utf-8", "replace")), f[0].decode(),
                v[0], v[1], v[2], v[3], v[4], v[5], v[10], v[11], v[12], v[13], v[14],
                v[15], v[16], v[18], v[19], v[20] * PAGE_SIZE)  # fmt: skip


def parse_status(data: bytes) -> tuple[int | None, tuple[int, ...]]:
    """Effective uid and NSpid from /proc/PID/status."""
    uid: int | None = None
    nspid: tuple[int, ...] = ()
    at = data.find(b"\nUid:")
    if at >= 0:
        parts = data[at + 5 : data.find(b"\n", at + 5)].split()
        if len(parts) >= 2:
            uid = int(parts[1])
    at = data.find(b"\nNSpid:")
    if at >= 0:
        end = data.find(b"\n", at + 7)
        nspid = tuple(map(int, data[at + 7 : end if end >= 0 else None].split()))
    return uid, nspid


def _read(name: str, dir_fd: int, size: int = 4096) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        data = os.read(fd, size)
        if len(data) < size:
            return data
        chunks = [data]
        while data:
            data = os.read(fd, 65536)
            chunks.append(data)
        return b"".join(chunks)
    finally:
        os.close(fd)


class Scanner:
    """Scans a procfs (``/proc`` or a recorded fake tree) again and again.

    Keeps the processes of the last scan: a process whose stat line did not
    change is handed out again as the same ``Proc`` (no parse); its static
    parts are kept per (pid, start time, comm) and read only for new
    processes. Processes that are gone are dropped at the next scan.
    """

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc") -> None:
        self.proc_root = os.fspath(proc_root)
        self._last: dict[int, Proc] = {}
        self.reads = 0  # files opened by the last scan (for tests and benchmarks)

    def pids(self) -> list[int]:
        return [int(n) for n in os.listdir(self.proc_root) if n.isdigit()]

    def scan(
        self, want_nspid: Collection[int] = frozenset(), need: int = NEED_UID | NEED_CMDLINE
    ) -> dict[int, Proc]:
        """Every process now, by host PID, in PID order.

        ``need``: which static parts every process must have (NEED_UID: its
        uid from the ownership of /proc/PID; NEED_CMDLINE: its argv).
        ``want_nspid``: PIDs whose NSpid must be known too (guest members);
        their /proc/PID/status is read once per process lifetime, and gives
        the uid as well.
        """
        dir_fd = os.open(self.proc_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        procs: dict[int, Proc] = {}
        last = self._last
        reads = 0
        need_ns = need | NEED_NSPID
        # locals: this loop runs once per process per refresh
        open_, read, close, flags = os.open, os.read, os.close, os.O_RDONLY | os.O_CLOEXEC
        try:
            for name in os.listdir(dir_fd):
                if not name.isdigit():
                    continue
                try:
                    fd = open_(name + "/stat", flags, dir_fd=dir_fd)
                except OSError:  # gone, or not ours to read
                    continue
                try:
                    data = read(fd, STAT_SIZE)
                except OSError:
                    continue
                finally:
                    close(fd)
                reads += 1
                pid = int(name)
                wanted = need_ns if pid in want_nspid else need
                old = last.get(pid)
                if old is not None and old.raw == data and old.static.have & wanted == wanted:
                    procs[pid] = old
                    continue
                proc = parse_stat(data, pid)
                if proc is None:
                    continue
                proc.raw = data
                static = old.static if old is not None else _NO_STATIC
                if (
                    old is None
                    or old.starttime != proc.starttime  # a new process on a reused PID
                    or old.comm != proc.comm  # it exec'd
                ):
                    static = _NO_STATIC
                if static.have & wanted != wanted:
                    more = self._read_static(name, dir_fd, proc, static, wanted)
                    if more is None:
                        continue
                    static, extra = more
                    reads += extra
                proc.static = static
                procs[pid] = proc
        finally:
            os.close(dir_fd)
        self._last = procs
        self.reads = reads
        return procs

    def _read_static(
        self, name: str, dir_fd: int, proc: Proc, had: Static, wanted: int
    ) -> tuple[Static, int] | None:
        """``had`` completed with the parts in ``wanted``; None if the process is gone."""
        uid, cmdline, nspid, have = had.uid, had.cmdline, had.nspid, had.have
        missing = wanted & ~have
        reads = 0
        try:
            if missing & NEED_NSPID:
                try:
                    status_uid, nspid = parse_status(_read(name + "/status", dir_fd))
                    if status_uid is not None:
                        uid, have = status_uid, have | NEED_UID
                except PermissionError:
                    pass
                reads += 1
                have |= NEED_NSPID
            if wanted & ~have & NEED_UID:
                uid = os.stat(name, dir_fd=dir_fd).st_uid
                reads += 1
                have |= NEED_UID
            if missing & NEED_CMDLINE:
                if proc.flags & PF_KTHREAD:
                    raw = b""
                else:
                    try:
                        raw = _read(name + "/cmdline", dir_fd)
                    except PermissionError:
                        raw = b""
                    reads += 1
                # argv too: control characters visible, newlines included
                # (one process, one line), as ps shows them
                cmdline = visible(raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace"))
                have |= NEED_CMDLINE
        except OSError:  # gone (ENOENT, ESRCH) or unreadable: skip it this time
            return None
        return Static(uid, cmdline, nspid, have), reads


def read_uptime(proc_root: str = "/proc") -> float:
    """Seconds since boot (/proc/uptime)."""
    with open(os.path.join(proc_root, "uptime"), "rb") as f:
        return float(f.read().split()[0])


def read_meminfo(proc_root: str = "/proc") -> dict[str, int]:
    """/proc/meminfo in bytes, by key (MemTotal, MemAvailable, ...)."""
    out: dict[str, int] = {}
    with open(os.path.join(proc_root, "meminfo"), "rb") as f:
        for line in f:
            key, _, rest = line.partition(b":")
            parts = rest.split()
            if parts:
                value = int(parts[0])
                if len(parts) > 1 and parts[1] == b"kB":
                    value *= 1024
                out[key.decode()] = value
    return out


def boot_time(proc_root: str = "/proc") -> float:
    """Epoch seconds of boot (btime in /proc/stat)."""
    with open(os.path.join(proc_root, "stat"), "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise FileNotFoundError(os.path.join(proc_root, "stat"))


def pid_max(proc_root: str = "/proc") -> int:
    try:
        with open(os.path.join(proc_root, "sys/kernel/pid_max"), "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 32768


_TTY_NAMES: dict[int, str] = {}


def tty_name(tty_nr: int) -> str:
    """Name of a controlling terminal from its device number ("?" for none)."""
    if tty_nr == 0:
        return "?"
    name = _TTY_NAMES.get(tty_nr)
    if name is None:
        name = _tty_name(tty_nr)
        _TTY_NAMES[tty_nr] = name
    return name


def _tty_name(tty_nr: int) -> str:
    major = os.major(tty_nr)
    minor = os.minor(tty_nr)
    if 136 <= major <= 143:  # Unix98 pseudo terminals
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    if major == 5:
        return {0: "tty", 1: "console", 2: "ptmx"}.get(minor, "?")
    return "?"
