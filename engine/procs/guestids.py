"""Who a guest's process is inside its guest: the guest's uid and user name.

A user-namespaced guest's process runs as host uid ``base + N``; inside it is
uid N, named in the guest's own /etc/passwd. For each running guest this
reads its init's uid_map (the kernel's word, every refresh: a restart may
change nothing else) and the guest's passwd, through its init's root with
openat2(RESOLVE_IN_ROOT) (a guest's symlinks stay inside it), once per init.
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
        self._known: dict[str, tuple[int, GuestIds | None]] = {}

    def update(self, guests: list[RunInfo]) -> dict[str, GuestIds]:
        """name -> GuestIds for the running user-namespaced guests."""
        out: dict[str, GuestIds] = {}
        known: dict[str, tuple[int, GuestIds | None]] = {}
        for info in guests:
            if info.init_pid is None:
                continue
            ids = self._of(info.name, info.init_pid)
            known[info.name] = (info.init_pid, ids)
            if ids is not None:
                out[info.name] = ids
        self._known = known
        return out

    def _of(self, name: str, pid: int) -> GuestIds | None:
        text = _read(f"{self.proc_root}/{pid}/uid_map")
        words = text.split() if text else []
        if len(words) != 3 or not all(w.isdigit() for w in words) or words[:2] == ["0", "0"]:
            return None  # the host's ids (no user namespace) or init gone
        base, count = int(words[1]), int(words[2])
        had = self._known.get(name)
        if had and had[0] == pid and had[1] is not None and had[1].base == base:
            return had[1]
        return GuestIds(base, count, _passwd(self.proc_root, pid))
