"""The fast /proc scanner: one read of /proc/PID/stat per process per refresh.

What changes (state, times, memory, threads) comes from ``stat``, read on every
scan. What does not (user, command line, NSpid) is read once and cached per
(pid, start time, comm): a reused PID is a new process, and an ``exec`` changes
comm, so a process that forked before we saw it and then exec'd is re-read.
The parts a scan is not asked for are read when first used (``Static``): the
console shows a page of 10,000 processes, and each file read costs about as
much as the stat line itself. Vanished processes are skipped silently: /proc
is a moving target.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from engine.procfs import KeptFile, split_stat
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
    ``have`` says which parts were read (NEED_* bits). ``cmdline`` and
    ``nspid`` not read yet are read on first use, through ``where`` (proc
    root, pid, start time, kernel thread): a process that is gone by then, or
    whose PID was reused, leaves them empty. ``uid`` is what the scan read
    (0 if it read none); ``owner()`` reads it when it did not.
    """

    __slots__ = ("_cmdline", "_nspid", "have", "uid", "where")

    def __init__(
        self, uid: int, cmdline: str, nspid: tuple[int, ...], have: int = NEED_ALL,
        where: tuple[str, int, int, bool] | None = None,
    ) -> None:  # fmt: skip
        self.uid = uid
        self._cmdline = cmdline  # space-joined argv; "" for kernel threads and zombies
        self._nspid = nspid  # NSpid: host PID first, innermost last; () if unknown
        self.have = have
        self.where = where

    @property
    def cmdline(self) -> str:
        if not self.have & NEED_CMDLINE:
            self.fill(NEED_CMDLINE)
        return self._cmdline

    @property
    def nspid(self) -> tuple[int, ...]:
        if not self.have & NEED_NSPID:
            self.fill(NEED_NSPID)
        return self._nspid

    def owner(self) -> int:
        """The effective uid, read now if the scan did not (-1: gone meanwhile)."""
        if not self.have & NEED_UID:
            self.fill(NEED_UID)
        return self.uid

    def fill(self, parts: int) -> None:
        """Read ``parts`` now, from the very process the scan saw.

        A /proc/PID directory opened once stays bound to its process: when it
        exits its files fail with ESRCH, even after the PID is reused
        (fs/proc/base.c get_proc_task), so the stat read through it proves
        that what follows is that process's, not a newcomer's.
        """
        missing = parts & ~self.have
        if not missing or self.where is None:
            return
        root, pid, start, kthread = self.where
        try:
            dir_fd = os.open(f"{root}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # gone
            self._unknown(missing)
            return
        try:
            proc = parse_stat(_read("stat", dir_fd), pid)
            if proc is not None and proc.starttime == start:
                self._read(dir_fd, "", missing, kthread)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
        self._unknown(missing & ~self.have)

    def _unknown(self, parts: int) -> None:
        """``parts`` could not be read (the process is gone): they stay empty, and
        the uid is -1, nobody's, rather than root's."""
        if parts & NEED_UID:
            self.uid = -1
        self.have |= parts

    def _read(self, dir_fd: int, at: str, parts: int, kthread: bool) -> int:
        """Read ``parts`` of the process directory ``at`` ("" or "PID/" under ``dir_fd``);
        the number of files read. OSError: the process is gone."""
        reads = 0
        if parts & NEED_NSPID:
            try:
                uid, self._nspid = parse_status(_read(at + "status", dir_fd))
                if uid is not None:
                    self.uid, self.have = uid, self.have | NEED_UID
            except PermissionError:
                pass
            reads += 1
            self.have |= NEED_NSPID
        if parts & ~self.have & NEED_UID:
            # the owner of /proc/PID is the effective uid, dumpable or not
            # (fs/proc/base.c task_dump_owner): a stat() instead of status
            self.uid = os.stat(at or ".", dir_fd=dir_fd).st_uid
            reads += 1
            self.have |= NEED_UID
        if parts & NEED_CMDLINE:
            raw = b""
            if not kthread:
                try:
                    raw = _read(at + "cmdline", dir_fd)
                except PermissionError:
                    pass
                reads += 1
            # argv too: control characters visible, newlines included
            # (one process, one line), as ps shows them
            self._cmdline = visible(
                raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
            )
            self.have |= NEED_CMDLINE
        return reads

    def __repr__(self) -> str:
        return f"Static(uid={self.uid}, cmdline={self._cmdline!r}, nspid={self._nspid})"


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


# A repeated scan (``Scanner(gate=True)``) keeps each process's
# /proc/PID/schedstat open and reads its stat line only when the process ran
# since (schedstat's first field, its run time in ns, moved): a pread of an open
# schedstat costs a fifth of an open-read-close of stat (measured: 690 processes,
# 1.2 ms against 7.0 ms). What another process changes in a sleeping one's stat
# line (renice, setpgid by its parent, its terminal's foreground group, RSS
# reclaimed) is read again every RECHECK_EVERY scans, a share of the processes
# at each; a running (R) or multi-threaded one (schedstat is its main thread's
# alone) is read every time.
RECHECK_EVERY = 5
KTHREAD_RECHECK_EVERY = 25  # a kernel thread that did not run: only a renice changes its stat
KERNEL_EVERY = 5  # scan(kernel=False): a kernel thread is read at one scan in this many
HOLD_MAX = 4096  # at most this many schedstat descriptors (~4 KiB of kernel memory each)
# at most this many stat descriptors kept besides (a seq_file page each, fs/seq_file.c):
# a kept one is read again with one pread, 5.5 us here, where open, read and
# close cost 13 (do_task_stat runs either way)
STAT_HOLD_MAX = 1024
SCHED_SIZE = 128
MEMINFO_SIZE = 8192  # /proc/meminfo is ~1.5 KB: one read
LIST_EVERY = 8  # a repeated scan lists all of /proc at one scan in this many (see _listing)
TGID_OFFSET = 256 + 2  # fs/proc/base.c: FIRST_PROCESS_ENTRY, then "self" and "thread-self"


class Scanner:
    """Scans a procfs (``/proc`` or a recorded fake tree) again and again.

    Keeps the processes of the last scan: a process whose stat line did not
    change is handed out again as the same ``Proc`` (no parse); its static
    parts are kept per (pid, start time, comm) and read only for new
    processes. Processes that are gone are dropped at the next scan.
    ``gate``: skip the stat read of a process that did not run (see above);
    its ``Proc`` is handed out again. A tree without schedstat files is read
    in full.
    """

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc", gate: bool = False) -> None:
        self.proc_root = os.fspath(proc_root)
        self._last: dict[int, Proc] = {}
        self.reads = 0  # files opened by the last scan (for tests and benchmarks)
        self.gate = gate
        self._sched: dict[int, tuple[int, bytes]] = {}  # pid -> (schedstat fd, last read)
        self._stats: dict[int, int] = {}  # pid -> stat fd, of processes whose schedstat is kept
        # only in the live /proc: a kept descriptor of a file in a recorded tree
        # would read a deleted process on, where /proc's fails (ESRCH)
        live = gate and live_procfs(self.proc_root)
        self._hold_stats = STAT_HOLD_MAX if live else 0
        # the live /proc's loadavg, kept open: its last PID says whether any
        # process came since the last listing (see _listing)
        self._loadavg = _open_loadavg(self.proc_root) if live else None
        self._since: int | None = None  # the last PID read before the last listing
        self._round = 0
        self._hold_max = _hold_max() if gate else 0
        self.blind: frozenset[int] = frozenset()  # handed out unread by the last scan

    def pids(self) -> list[int]:
        return [int(n) for n in os.listdir(self.proc_root) if n.isdigit()]

    def scan(
        self,
        want_nspid: Collection[int] = frozenset(),
        need: int = NEED_UID | NEED_CMDLINE,
        kernel: bool = True,
    ) -> dict[int, Proc]:
        """Every process now, by host PID, in PID order.

        ``need``: which static parts to read now, for every process (NEED_UID:
        its uid from the ownership of /proc/PID; NEED_CMDLINE: its argv); the
        others are read when first used (``Static``).
        ``want_nspid``: PIDs whose NSpid is read now too (guest members);
        their /proc/PID/status is read once per process lifetime, and gives
        the uid as well.
        ``kernel=False``: a kernel thread seen by an earlier scan is read at
        one scan in KERNEL_EVERY (a share of them at each) and handed out again
        unread at the others (``blind`` lists them), for a view that does not
        show kernel threads: on a quiet host they are most of /proc (62 of 89
        processes here) and of the scan's reads.
        """
        dir_fd = os.open(self.proc_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        procs: dict[int, Proc] = {}
        last = self._last
        reads = 0
        need_ns = need | NEED_NSPID
        gate, self._round = self.gate, self._round + 1
        recheck = self._round % RECHECK_EVERY
        # locals: this loop runs once per process per refresh
        open_, read, close, flags = os.open, os.read, os.close, os.O_RDONLY | os.O_CLOEXEC
        blind: list[int] = []
        try:
            for pid in self._listing(dir_fd):
                old = last.get(pid)
                if (
                    not kernel
                    and old is not None
                    and old.flags & PF_KTHREAD  # a kernel thread never becomes anything else
                    and (pid + self._round) % KERNEL_EVERY
                ):
                    procs[pid] = old
                    blind.append(pid)
                    continue
                wanted = need_ns if pid in want_nspid else need
                if gate:
                    ran = self._ran(pid, dir_fd)
                    if (
                        not ran
                        and old is not None
                        and old.threads == 1
                        and old.state != "R"
                        and old.static.have & wanted == wanted
                        and self._unchanged(old, pid, recheck)
                    ):
                        procs[pid] = old
                        continue
                data = self._read_kept(pid) if pid in self._stats else None
                if data is None:
                    try:
                        fd = open_(f"{pid}/stat", flags, dir_fd=dir_fd)
                    except OSError:  # gone, or not ours to read
                        continue
                    try:
                        data = read(fd, STAT_SIZE)
                    except OSError:
                        close(fd)
                        continue
                    self._keep_or_close(pid, fd)
                reads += 1
                if old is not None and old.raw == data and old.static.have & wanted == wanted:
                    procs[pid] = old
                    continue
                proc = parse_stat(data, pid)
                if proc is None:
                    continue
                proc.raw = data
                if (
                    old is None
                    or old.starttime != proc.starttime  # a new process on a reused PID
                    or old.comm != proc.comm  # it exec'd
                ):
                    where = (self.proc_root, pid, proc.starttime, bool(proc.flags & PF_KTHREAD))
                    static = Static(0, "", (), 0, where)
                else:
                    static = old.static
                if static.have & wanted != wanted:
                    try:
                        reads += static._read(dir_fd, f"{pid}/", wanted & ~static.have,
                                              bool(proc.flags & PF_KTHREAD))  # fmt: skip
                    except OSError:  # gone (ENOENT, ESRCH) or unreadable: skip it this time
                        continue
                proc.static = static
                procs[pid] = proc
        finally:
            os.close(dir_fd)
        if gate:
            self._drop_gone(procs)
        self._last = procs
        self.reads = reads
        self.blind = frozenset(blind)
        return procs

    def _listing(self, dir_fd: int) -> list[int]:
        """The PIDs in /proc to look at (ints: a name is made only to open a file).
        In full (os.listdir) at the first scan, at one in LIST_EVERY and when the
        PIDs wrapped; else, in the live /proc,
        the last scan's processes (a gone one fails its read) and those whose
        PID is above the last PID read before that scan's listing: PIDs are
        handed out upwards (alloc_pid, kernel/pid.c), so none came below it.
        (Old processes may have PIDs above it, handed out before a wrap: they
        are among the last scan's.)
        /proc lists PIDs from the directory offset TGID_OFFSET + PID
        (proc_pid_readdir, fs/proc/base.c): that listing is of the new ones
        alone, a few entries where the full one is 2.5 us each (275 us here)."""
        since, now = self._since, self._last_pid()
        self._since = now
        if since is None or now is None or now < since or not self._round % LIST_EVERY:
            return [int(name) for name in os.listdir(dir_fd) if name.isdigit()]
        pids = list(self._last)  # all of them: some may be above ``since``, from before a wrap
        if now != since:
            os.lseek(dir_fd, TGID_OFFSET + since + 1, os.SEEK_SET)
            known = self._last
            new = [int(n) for n in os.listdir(dir_fd) if n.isdigit() and int(n) not in known]
            if new:  # the offset's listing; it rewinds when done
                pids = sorted(pids + new)
        return pids

    def _last_pid(self) -> int | None:
        """The last PID handed out in this PID namespace (loadavg's last field),
        or None when there is no kept loadavg or it cannot be read."""
        if self._loadavg is None:
            return None
        try:
            return int(os.pread(self._loadavg, 128, 0).rsplit(None, 1)[1])
        except (OSError, ValueError, IndexError):
            return None

    def _unchanged(self, old: Proc, pid: int, recheck: int) -> bool:
        """Whether a process that did not run is handed out unread: at the scans
        but one in RECHECK_EVERY (another process may renice it, or reclaim its
        memory, without it running); a kernel thread has no memory to reclaim:
        at the scans but one in KTHREAD_RECHECK_EVERY."""
        if old.flags & PF_KTHREAD:
            return bool((pid + self._round) % KTHREAD_RECHECK_EVERY)
        return bool((pid + recheck) % RECHECK_EVERY)

    def _read_kept(self, pid: int) -> bytes | None:
        """The stat line through the descriptor kept for ``pid``, or None (and
        the descriptor closed) when its process is gone (ESRCH)."""
        try:
            data = os.pread(self._stats[pid], STAT_SIZE, 0)
        except OSError:
            data = b""
        if data:
            return data
        os.close(self._stats.pop(pid))
        return None

    def _keep_or_close(self, pid: int, fd: int) -> None:
        """Keep a stat descriptor while its schedstat one is kept, within
        STAT_HOLD_MAX; close it otherwise."""
        if pid in self._sched and len(self._stats) < self._hold_stats:
            self._stats[pid] = fd
        else:
            os.close(fd)

    def _ran(self, pid: int, dir_fd: int) -> bool:
        """Whether ``pid`` ran since the last scan (True when it cannot tell): its
        schedstat read now, through the descriptor kept from the last scan. Read
        before its stat line, so that a run in between is seen at the next scan.
        A kept descriptor whose process is gone fails (ESRCH), also when its PID
        was reused (fs/proc/base.c: the file is bound to the process): opened anew."""
        held = self._sched.get(pid)
        if held is not None:
            try:
                now = os.pread(held[0], SCHED_SIZE, 0)
            except OSError:
                now = b""
            if now == held[1]:  # most processes, most seconds: nothing to keep anew
                return False
            if now:
                self._sched[pid] = (held[0], now)
                return True
            os.close(held[0])
            del self._sched[pid]
            if pid in self._stats:  # bound to the same process, gone too
                os.close(self._stats.pop(pid))
        if len(self._sched) >= self._hold_max:
            return True
        try:
            fd = os.open(f"{pid}/schedstat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:  # gone, or a tree without schedstat: read stat every time
            return True
        try:
            now = os.pread(fd, SCHED_SIZE, 0)
        except OSError:
            now = b""
        if not now:
            os.close(fd)
            return True
        self._sched[pid] = (fd, now)
        return True

    def _drop_gone(self, procs: dict[int, Proc]) -> None:
        """Close the schedstat descriptors of processes this scan did not find."""
        sched, stats = self._sched, self._stats
        for pid in sched.keys() - procs.keys():
            os.close(sched.pop(pid)[0])
        for pid in stats.keys() - procs.keys():
            os.close(stats.pop(pid))

    def close(self) -> None:
        """Close every kept descriptor (a later scan opens them again)."""
        for fd, _ in self._sched.values():
            os.close(fd)
        for fd in self._stats.values():
            os.close(fd)
        self._sched.clear()
        self._stats.clear()
        if self._loadavg is not None:
            os.close(self._loadavg)
            self._loadavg, self._since = None, None

    def __del__(self) -> None:
        if getattr(self, "_sched", None) or getattr(self, "_loadavg", None) is not None:
            self.close()


def live_procfs(proc_root: str) -> bool:
    """Whether ``proc_root`` is the procfs of this process's PID namespace (its
    ``self`` names this process), not a recorded tree."""
    try:
        return os.readlink(os.path.join(proc_root, "self")) == str(os.getpid())
    except OSError:
        return False


def _open_loadavg(proc_root: str) -> int | None:
    """A kept descriptor of /proc/loadavg, when /proc lists from a PID's offset
    as _listing expects (its first entry from our own PID's offset is us);
    None otherwise."""
    dir_fd = os.open(proc_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.lseek(dir_fd, TGID_OFFSET + os.getpid(), os.SEEK_SET)
        if next(iter(os.listdir(dir_fd)), None) != str(os.getpid()):
            return None
        return os.open("loadavg", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)


def _hold_max() -> int:
    """How many schedstat descriptors a gated scanner may keep: HOLD_MAX, or a
    quarter of the open-file limit when that is lower."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return HOLD_MAX if soft == resource.RLIM_INFINITY else min(HOLD_MAX, soft // 4)


def read_uptime(proc_root: str = "/proc") -> float:
    """Seconds since boot (/proc/uptime)."""
    with open(os.path.join(proc_root, "uptime"), "rb") as f:
        return float(f.read().split()[0])


def read_meminfo(
    proc_root: str = "/proc", until: str = "", kept: KeptFile | None = None
) -> dict[str, int]:
    """/proc/meminfo in bytes, by key (MemTotal, MemAvailable, ...); with
    ``until``, the lines up to that key only (the console's poll wants two).
    ``kept``: the live /proc/meminfo, read through its kept descriptor."""
    if kept is not None:
        data = kept.read(MEMINFO_SIZE)
    else:
        with open(os.path.join(proc_root, "meminfo"), "rb") as f:
            data = f.read()
    out: dict[str, int] = {}
    stop = until.encode()
    for line in data.splitlines():
        key, _, rest = line.partition(b":")
        parts = rest.split()
        if parts:
            value = int(parts[0])
            if len(parts) > 1 and parts[1] == b"kB":
                value *= 1024
            out[key.decode()] = value
            if stop and key == stop:
                break
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
