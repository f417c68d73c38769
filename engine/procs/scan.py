"""The fast /proc scanner: one read of /proc/PID/stat per process per refresh.

What changes (state, times, memory, threads) comes from ``stat``, read on every
scan. What does not (user, command line, NSpid) is read once and cached per
(pid, start time, comm): a reused PID is a new process, and an ``exec`` changes
comm, so a process that forked before we saw it and then exec'd is re-read.
Vanished processes are skipped silently: /proc is a moving target.
"""

from __future__ import annotations

import os

CLK_TCK: int = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread

# errors that mean "the process went away while we looked"
_GONE = (FileNotFoundError, ProcessLookupError)


class Static:
    """The parts of a process read once per (pid, starttime, comm).

    A plain slotted class, not a dataclass: generating a dataclass costs
    about a millisecond at import, and this module is on vps's start path.
    """

    __slots__ = ("cmdline", "nspid", "uid")

    def __init__(self, uid: int, cmdline: str, nspid: tuple[int, ...]) -> None:
        self.uid = uid
        self.cmdline = cmdline  # space-joined argv; "" for kernel threads and zombies
        self.nspid = nspid  # NSpid: host PID first, innermost last; () if unread

    def __repr__(self) -> str:
        return f"Static(uid={self.uid}, cmdline={self.cmdline!r}, nspid={self.nspid})"


_PROC_FIELDS = ("pid", "comm", "state", "ppid", "pgrp", "session", "tty_nr", "tpgid", "flags",
                "utime", "stime", "cutime", "cstime", "priority", "nice", "threads",
                "starttime", "vsize", "rss")  # fmt: skip


class Proc:
    """One process from one scan (plain slotted class, see Static).

    vsize and rss are in bytes; times in clock ticks.
    """

    __slots__ = (*_PROC_FIELDS, "static")

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
        self.static: Static | None = None

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
        return self.static.uid if self.static else 0

    @property
    def cmdline(self) -> str:
        return self.static.cmdline if self.static else ""

    @property
    def nspid(self) -> int:
        """PID in the innermost PID namespace (== pid for host processes)."""
        if self.static and self.static.nspid:
            return self.static.nspid[-1]
        return self.pid


def parse_stat(data: bytes, pid: int) -> Proc | None:
    """Parse one /proc/PID/stat line; None if it is not one.

    comm may hold spaces and ')' (it is whatever the program set), so the
    fields start after the LAST ')'.
    """
    open_at = data.find(b"(")
    close_at = data.rfind(b")")
    if open_at < 0 or close_at < open_at:
        return None
    f = data[close_at + 2 :].split()
    if len(f) < 22:
        return None
    v = list(map(int, f[1:22]))  # one C loop: ppid (v[0]) .. rss (v[20])
    return Proc(
        pid,
        data[open_at + 1 : close_at].decode("utf-8", "replace"),
        f[0].decode(),
        v[0],
        v[1],
        v[2],
        v[3],
        v[4],
        v[5],
        v[10],
        v[11],
        v[12],
        v[13],
        v[14],
        v[15],
        v[16],
        v[18],
        v[19],
        v[20] * PAGE_SIZE,
    )


def parse_status(data: bytes) -> tuple[int | None, tuple[int, ...]]:
    """Effective uid and NSpid from /proc/PID/status."""
    uid: int | None = None
    nspid: tuple[int, ...] = ()
    for line in data.split(b"\n"):
        if line.startswith(b"Uid:"):
            parts = line.split()
            if len(parts) >= 3:
                uid = int(parts[2])
        elif line.startswith(b"NSpid:"):
            nspid = tuple(int(x) for x in line.split()[1:])
            break  # NSpid comes after Uid
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

    Keeps the static parts of every process it has seen; entries of processes
    that are gone are dropped at the next scan.
    """

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc") -> None:
        self.proc_root = os.fspath(proc_root)
        self._cache: dict[int, tuple[int, str, bool, Static]] = {}
        self.reads = 0  # files opened by the last scan (for tests and benchmarks)

    def pids(self) -> list[int]:
        return [int(n) for n in os.listdir(self.proc_root) if n.isdigit()]

    def scan(self, want_nspid: frozenset[int] | set[int] = frozenset()) -> dict[int, Proc]:
        """Every process now, by host PID.

        ``want_nspid``: PIDs whose NSpid must be known (guest members); their
        /proc/PID/status is read once per process lifetime. Others get their
        uid from the ownership of /proc/PID (no extra file read).
        """
        dir_fd = os.open(self.proc_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        procs: dict[int, Proc] = {}
        reads = 0
        cache = self._cache
        try:
            for name in os.listdir(dir_fd):
                if not name.isdigit():
                    continue
                pid = int(name)
                try:
                    data = _read(name + "/stat", dir_fd, 1024)
                except _GONE:
                    continue
                except OSError:
                    continue
                reads += 1
                proc = parse_stat(data, pid)
                if proc is None:
                    continue
                need_ns = pid in want_nspid
                hit = cache.get(pid)
                if (
                    hit is not None
                    and hit[0] == proc.starttime
                    and hit[1] == proc.comm
                    and (hit[2] or not need_ns)
                ):
                    proc.static = hit[3]
                else:
                    static = self._read_static(name, dir_fd, proc, need_ns)
                    if static is None:
                        continue
                    reads += 2
                    cache[pid] = (proc.starttime, proc.comm, need_ns, static)
                    proc.static = static
                procs[pid] = proc
        finally:
            os.close(dir_fd)
        if len(cache) > len(procs):
            for pid in [p for p in cache if p not in procs]:
                del cache[pid]
        self.reads = reads
        return procs

    def _read_static(self, name: str, dir_fd: int, proc: Proc, need_ns: bool) -> Static | None:
        nspid: tuple[int, ...] = ()
        uid: int | None = None
        try:
            if need_ns:
                try:
                    uid, nspid = parse_status(_read(name + "/status", dir_fd))
                except PermissionError:
                    pass
            if uid is None:
                uid = os.stat(name, dir_fd=dir_fd).st_uid
            try:
                raw = b"" if proc.kernel_thread else _read(name + "/cmdline", dir_fd)
            except PermissionError:
                raw = b""
        except _GONE:
            return None
        except OSError:
            return None
        cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
        return Static(uid, cmdline, nspid)


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


def read_loadavg(proc_root: str = "/proc") -> tuple[float, float, float]:
    with open(os.path.join(proc_root, "loadavg"), "rb") as f:
        parts = f.read().split()
    return float(parts[0]), float(parts[1]), float(parts[2])


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
