"""/proc and mountinfo: the one reader of each, for every part of the engine.

A leaf (it imports only engine._record): the lean supervisor, the
exec path and ``vps`` use it too. Each kernel format's quirks live here:

- ``/proc/PID/stat``: comm is whatever the program set, spaces and ``)``
  included, so the fields start after the LAST ``)`` (fs/proc/array.c
  do_task_stat). For every identity check (pid + start time, field 22) a
  zombie counts as gone: it runs nothing and its PID is about to be reused.
- ``/proc/self/mountinfo``: the root, the mount point and the source escape
  space, tab, newline and backslash as ``\\040 \\011 \\012 \\134``
  (fs/proc_namespace.c show_mountinfo, mangle()); optional fields end at a
  lone ``-``.
- ``/proc/PID/cgroup``: ``ID:CONTROLLERS:PATH`` lines; CONTROLLERS is empty
  for the unified (v2) hierarchy.
- Names in these files are bytes chosen by someone else, a guest's root
  among them (comm by prctl, mount points, cgroup and link names): UTF-8 or
  not. ``read_text`` keeps the others as surrogates (os.fsdecode's way), so a
  name still works as a path and ``engine.text.visible`` shows them as \\xNN.
"""

from __future__ import annotations

import os

from engine._record import Record

PROC = "/proc"
READ_SIZE = 65536
STARTTIME = 19  # field 22 counted from the state (field 3): index 19 of the split
SESSION = 3  # field 6, the session id


def read_text(path: str) -> str:
    """A /proc file as text (see the module's notes). A text-mode open
    decoded it strictly: one name that was not UTF-8 (a guest process named
    "\\xff" by prctl, a link or cgroup so named) failed every read of the
    file, and with it every console snapshot, ``vserver stop`` and the audit."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, READ_SIZE):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "surrogateescape")


class KeptFile:
    """A /proc file the console reads every second, through one descriptor kept
    open and read again from offset 0 (a seq_file starts over: seq_read_iter,
    fs/seq_file.c): an open, a read to the end and a close, 4-6 calls a file,
    and Python's file object around them, were ~60% of reading /proc/meminfo
    or /proc/net/dev at each poll. Only for the live procfs: a file of a
    recorded tree may be replaced by another, which a kept descriptor would
    not see. What the file shows is fixed at the open (/proc/net/dev: the
    network namespace of the reader then)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self, size: int = READ_SIZE) -> bytes:
        """All of the file from its start, in reads of ``size`` bytes (one
        read when it is shorter)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        chunks = [os.pread(self._fd, size, 0)]
        while len(chunks[-1]) == size:  # a full read: there may be more
            chunks.append(os.pread(self._fd, size, size * len(chunks)))
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def read_text(self) -> str:
        """All of it as text, names kept as they are (see ``read_text``)."""
        return self.read().decode("utf-8", "surrogateescape")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def split_stat(data: bytes, maxsplit: int = -1) -> tuple[bytes, list[bytes]] | None:
    """(comm, [state, ppid, ...]) of one /proc/PID/stat line; None if it is not one."""
    head, sep, tail = data.rpartition(b")")
    open_at = head.find(b"(")
    if not sep or open_at < 0:
        return None
    return head[open_at + 1 :], tail.split(None, maxsplit)


def starttime(pid: int, proc_root: str = PROC) -> int | None:
    """Start time of ``pid`` in clock ticks after boot; None when gone or a zombie."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            parsed = split_stat(f.read(), STARTTIME + 1)
    except OSError:
        return None
    if parsed is None or len(parsed[1]) <= STARTTIME or parsed[1][0] == b"Z":
        return None
    try:
        return int(parsed[1][STARTTIME])
    except ValueError:
        return None


def session_members(sid: int, proc_root: str = PROC) -> list[tuple[int, int]]:
    """(pid, start time) of every live process of session ``sid``, zombies left out.

    One pass over /proc: for the rare clean-up of a session whose leader is gone.
    """
    found = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc_root}/{entry}/stat", "rb") as f:
                parsed = split_stat(f.read(), STARTTIME + 1)
        except OSError:
            continue  # gone meanwhile
        if parsed is None or len(parsed[1]) <= STARTTIME or parsed[1][0] == b"Z":
            continue
        fields = parsed[1]
        if fields[SESSION] == str(sid).encode() and fields[STARTTIME].isdigit():
            found.append((int(entry), int(fields[STARTTIME])))
    return found


def alive(pid: int | None, start: int | None, proc_root: str = PROC) -> bool:
    """True when ``pid`` exists (not a zombie) and started at ``start`` (when known)."""
    if pid is None:
        return False
    now = starttime(pid, proc_root)
    return now is not None and (start is None or now == start)


_ESCAPES = (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\"))


def unescape(field: str) -> str:
    """A mountinfo field as the path it is (backslash last: ``\\134040`` is ``\\040``)."""
    if "\\" not in field:
        return field
    for code, char in _ESCAPES:
        field = field.replace(code, char)
    return field


class Mount(Record):
    """One line of mountinfo, unescaped."""

    __slots__ = _fields = ("mount_id", "parent_id", "device", "root", "mount_point",
                           "options", "fstype", "source", "super_options")  # fmt: skip
    mount_id: int
    parent_id: int
    device: str  # major:minor
    root: str  # the directory of the file system mounted here
    mount_point: str
    options: str  # per-mount options (ro, nosuid, ...)
    fstype: str
    source: str
    super_options: str  # the file system's options (cgroup controllers, ...)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount of a mountinfo text, in its order (later lines are on top)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        mounts.append(Mount(int(fields[0]), int(fields[1]), fields[2], unescape(fields[3]),
                            unescape(fields[4]), fields[5], tail[0], unescape(tail[1]),
                            tail[2] if len(tail) > 2 else ""))  # fmt: skip
    return mounts


def mountinfo(path: str = f"{PROC}/self/mountinfo") -> list[Mount]:
    return parse_mountinfo(read_text(path))


def mounts_under(path: str, table: list[Mount] | None = None) -> list[Mount]:
    """The mounts at or below ``path`` (a normalised absolute path), in order."""
    base = path.rstrip("/") or "/"
    prefix = base if base == "/" else base + "/"
    table = mountinfo() if table is None else table
    return [m for m in table if m.mount_point == base or m.mount_point.startswith(prefix)]


def parse_cgroups(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> hierarchy (its controllers sorted, "" for v2) -> path."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[",".join(sorted(parts[1].split(","))) if parts[1] else ""] = parts[2]
    return out


def cgroups(pid: int | str = "self", proc_root: str = PROC) -> dict[str, str]:
    """The cgroup of ``pid`` in each hierarchy (see parse_cgroups); {} when it is gone."""
    try:
        return parse_cgroups(read_text(f"{proc_root}/{pid}/cgroup"))
    except OSError:
        return {}
