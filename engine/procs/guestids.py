"""Who a guest's process is inside its guest: the guest's uid and user name.

A user-namespaced guest's process runs as host uid ``base + N``; inside it is
uid N, named in the guest's own /etc/passwd. For each running guest this
reads its init's uid_map (the kernel's word) and the guest's passwd, through
its init's root with openat2(RESOLVE_IN_ROOT) (a guest's symlinks stay inside
it), once per init: a uid_map is written once per user namespace and never
again (kernel/user_namespace.c map_write: EPERM once the map has extents), and
an init is known by its PID and the start its run files record (a restart
writes new ones). Read again while the guest is only starting (the map may not
be written yet).
A guest without a user namespace shows host uids and host names, as before.
"""

from __future__ import annotations

import os

from engine.text import visible

TYPE_CHECKING = False
if TYPE_CHECKING:
    from engine.procs.attribution import RunInfo

PASSWD_LIMIT = 1 << 20  # a hostile guest's passwd is read this far and no further


class GuestIds:
    """A guest's id block and user names: ``inside(host_uid)`` -> (uid, name)."""

    __slots__ = ("base", "count", "names")

    def __init__(self, base: int, count: int, names: dict[int, str]) -> None:
        self.base, self.count, self.names = base, count, names

    def inside(self, host_uid: int) -> tuple[int, str] | None:
        """The guest's uid and name for a host uid of its block; None outside it."""
        uid = host_uid - self.base
        if not 0 <= uid < self.count:
            return None
        return uid, self.names.get(uid) or str(uid)


def _read(path: str, limit: int = 4096) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return None


def _passwd(proc_root: str, pid: int) -> dict[int, str]:
    from engine import safepath

    names: dict[int, str] = {}
    try:
        root = safepath.open_root(f"{proc_root}/{pid}/root")
    except OSError:
        return names
    try:
        fd = safepath.open_in_root(root, "/etc/passwd", os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            text = f.read(PASSWD_LIMIT).decode(errors="replace")
    except OSError:
        return names
    finally:
        os.close(root)
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            names.setdefault(int(parts[2]), visible(parts[0]))
    return names


class Cache:
    """GuestIds of the running guests, kept while their init lives."""

    def __init__(self, proc_root: str | os.PathLike[str] = "/proc") -> None:
        self.proc_root = os.fspath(proc_root)
        # name -> (init PID, recorded start, its ids, final: no need to read again)
        self._known: dict[str, tuple[int, float | None, GuestIds | None, bool]] = {}
        self.reads = 0  # uid_map files read (for tests)

    def update(self, guests: list[RunInfo]) -> dict[str, GuestIds]:
        """name -> GuestIds for the running user-namespaced guests."""
        out: dict[str, GuestIds] = {}
        known: dict[str, tuple[int, float | None, GuestIds | None, bool]] = {}
        for info in guests:
            if info.init_pid is None:
                continue
            had = self._known.get(info.name)
            if had is not None and had[3] and had[:2] == (info.init_pid, info.started):
                known[info.name] = had
            else:
                known[info.name] = self._of(info, had)
            ids = known[info.name][2]
            if ids is not None:
                out[info.name] = ids
        self._known = known
        return out

    def _of(
        self, info: RunInfo, had: tuple[int, float | None, GuestIds | None, bool] | None
    ) -> tuple[int, float | None, GuestIds | None, bool]:
        """(init PID, start, ids, final) read from init's uid_map (and passwd)."""
        pid = info.init_pid
        assert pid is not None
        self.reads += 1
        text = _read(f"{self.proc_root}/{pid}/uid_map")
        words = text.split() if text else []
        final = info.state == "running" and len(words) == 3  # a written map stays
        if len(words) != 3 or not all(w.isdigit() for w in words) or words[:2] == ["0", "0"]:
            return pid, info.started, None, final  # the host's ids, init gone, not yet mapped
        base, count = int(words[1]), int(words[2])
        if had and had[0] == pid and had[2] is not None and had[2].base == base:
            return pid, info.started, had[2], final
        return pid, info.started, GuestIds(base, count, _passwd(self.proc_root, pid)), final
