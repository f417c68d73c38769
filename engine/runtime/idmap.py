"""Each guest's block of host ids: 65,536 of them, chosen once and kept.

A guest in its own user namespace sees ids 0..65535; on the host they are
``base .. base + 65535``, one 65,536-aligned block (systemd's UIDS-GIDS
convention: the upper 16 bits name the container, the lower 16 are the id
inside). Blocks lie in the range systemd sets aside for containers,
524288..1879048191 (blocks 8..28671), so every host id stays below 2**31,
above which signed-uid bugs live.

Like Linux-VServer, the context id names the range where it can: a guest
with xid 40000 or more gets block ``xid - 40000 + 8`` (xid 40000 -> host uid
524288 is its root), so a host uid reads as "guest X, uid Y". A guest whose
xid does not fit (S_CONTEXT below 40000), or whose derived block another
guest of this root already holds, gets a free block allocated from the top
of the range down. Either way the block is recorded (``state_dir/idblocks``,
"NAME BLOCK" lines under an flock) and kept across restarts, until the guest
is deleted.

Registered for the other tools of the host (under the root prefix):

- /etc/subuid and /etc/subgid: ``vstui:BASE:65536`` per guest, under the
  dedicated owner ``vstui``, so that useradd, newuidmap and podman never
  hand the same ids to someone else;
- /etc/passwd and /etc/group: ``vs-NAME`` with the block's first id, because
  systemd-nspawn's ``--private-users=pick`` checks only NSS, and only the
  first id of a range. On the host, the guest's root then shows as
  ``vs-NAME`` in ps and ls.

Allocation skips blocks that hold any id of another subuid/subgid owner or
of a passwd/group entry; the audit reports such overlaps for blocks derived
from an xid (engine.audit).
"""

from __future__ import annotations

import fcntl
import os

from engine._record import Record
from engine.errors import VstuiError
from engine.paths import check_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

    from engine.paths import Paths

BLOCK = 65536
FIRST_BLOCK = 8  # 524288: the start of systemd's container range
LAST_BLOCK = 28671  # its end, 1879048191, is this block's last id
XID_BASE = 40000  # util-vserver's first dynamic context: block FIRST_BLOCK
SUBID_OWNER = "vstui"
NSS_PREFIX = "vs-"
NOLOGIN = "/usr/sbin/nologin"


class IdMap(Record):
    """A guest's id block: ids ``0..count-1`` inside are ``base..`` on the host."""

    __slots__ = _fields = ("base", "count")
    _defaults = {"count": BLOCK}
    base: int
    count: int

    @property
    def block(self) -> int:
        return self.base // BLOCK

    @property
    def last(self) -> int:
        return self.base + self.count - 1

    def host(self, inner: int) -> int:
        """The host id of id ``inner`` inside the guest."""
        return self.base + inner

    def inner(self, host: int) -> int | None:
        """The id inside the guest of host id ``host``, or None outside the block."""
        return host - self.base if self.base <= host <= self.last else None

    def line(self) -> str:
        """The uid_map / gid_map line: ``0 BASE COUNT``."""
        return f"0 {self.base} {self.count}"

    def text(self) -> str:
        return f"{self.base}-{self.last}"


def of_block(block: int) -> IdMap:
    return IdMap(block * BLOCK)


def derived_block(xid: int) -> int | None:
    """The block an xid names, or None when it names none (below 40000, or too high)."""
    block = xid - XID_BASE + FIRST_BLOCK
    return block if xid >= XID_BASE and block <= LAST_BLOCK else None


# -- the record -------------------------------------------------------------------------


def _table(paths: Paths) -> Path:
    return paths.state_dir / "idblocks"


def table_path(paths: Paths) -> Path:
    """The table ``recorded`` reads (replaced by rename at every change)."""
    return _table(paths)


def recorded(paths: Paths) -> dict[str, int]:
    """Every guest's recorded block in this root: name -> block."""
    out: dict[str, int] = {}
    try:
        with open(_table(paths)) as f:
            for line in f:
                words = line.split()
                if len(words) == 2 and words[1].isdigit():
                    out[words[0]] = int(words[1])
    except FileNotFoundError:
        pass
    return out


def _write_table(paths: Paths, table: dict[str, int]) -> None:
    text = "".join(f"{n} {b}\n" for n, b in sorted(table.items(), key=lambda kv: kv[1]))
    _replace(_table(paths), text, 0o644)


def _replace(path: Path, text: str, mode: int) -> None:
    """Atomically replace ``path`` (temp file, fsync, rename), keeping its mode."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.vstui-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class _Locked:
    """The host's user database lock (lckpwdf's /etc/.pwd.lock) and our record's."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.files: list[int] = []

    def __enter__(self) -> _Locked:
        etc = self.paths.root / "etc"
        paths = [_table(self.paths).with_name("idblocks.lock"), etc / ".pwd.lock"]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self.files.append(fd)
            fcntl.lockf(fd, fcntl.LOCK_EX)  # fcntl locks: what lckpwdf() takes
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in reversed(self.files):
            os.close(fd)


# -- what the host already uses ----------------------------------------------------------


class Holder(Record):
    """Someone else's ids on this host: a subuid/subgid range or a user/group id."""

    __slots__ = _fields = ("what", "name", "first", "count")
    what: str  # "subuid", "subgid", "user", "group"
    name: str
    first: int
    count: int


def _lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def holders(paths: Paths) -> Iterator[Holder]:
    """Every foreign id of the root's /etc/subuid, subgid, passwd and group (ours left out)."""
    etc = paths.root / "etc"
    for what in ("subuid", "subgid"):
        for line in _lines(etc / what):
            parts = line.split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                if parts[0] != SUBID_OWNER:
                    yield Holder(what, parts[0], int(parts[1]), int(parts[2]))
    for what, file in (("user", "passwd"), ("group", "group")):
        for line in _lines(etc / file):
            parts = line.split(":")
            if len(parts) >= 3 and parts[2].isdigit() and not parts[0].startswith(NSS_PREFIX):
                yield Holder(what, parts[0], int(parts[2]), 1)


def overlapping(idmap: IdMap, found: list[Holder]) -> list[Holder]:
    """The holders with an id inside ``idmap``'s block."""
    return [h for h in found if h.first <= idmap.last and h.first + h.count > idmap.base]


# -- choosing and keeping -----------------------------------------------------------------


def planned(paths: Paths, name: str, xid: int) -> IdMap | None:
    """The guest's block without choosing one: recorded, else derived if free, else None."""
    check_name(name)
    table = recorded(paths)
    if name in table:
        return of_block(table[name])
    block = derived_block(xid)
    taken = {b for n, b in table.items() if n != name}
    return of_block(block) if block is not None and block not in taken else None


def of_uid_map(text: str) -> IdMap | None:
    """The block a /proc/PID/uid_map shows: None for the host's own (no user namespace)."""
    words = text.split()
    if len(words) != 3 or not all(w.isdigit() for w in words) or words[0] != "0":
        return None
    base, count = int(words[1]), int(words[2])
    return None if (base, count) == (0, 2**32 - 1) else IdMap(base, count)


def of_guest(paths: Paths, name: str, cfg: Any = None) -> IdMap | None:
    """The guest's block: a running guest's from its init, else planned (see runtime.id_map)."""
    from engine.runtime import state, xid

    pid = state.init_identity(paths, name)
    if pid:
        try:
            with open(f"/proc/{pid[0]}/uid_map") as f:
                return of_uid_map(f.read())
        except OSError:
            pass  # gone meanwhile: as a stopped guest
    if cfg is None:
        from engine.config import load_guest

        cfg = load_guest(paths, name)
    if not cfg.userns:
        return None
    number = cfg.context if cfg.context is not None else xid.allocated(paths).get(name, -1)
    return planned(paths, name, number)


def assign(paths: Paths, name: str, xid: int, reserved: set[int] = frozenset()) -> IdMap:
    """The guest's block: recorded, else derived from ``xid``, else allocated; recorded
    and registered. ``reserved``: blocks other guests' xids derive (never allocated)."""
    check_name(name)  # it becomes a passwd/subuid line: vs-NAME
    with _Locked(paths):
        table = recorded(paths)
        block = table.get(name)
        if block is None:
            block = _choose(paths, name, xid, table, reserved)
            table[name] = block
            paths.state_dir.mkdir(parents=True, exist_ok=True)
            _write_table(paths, table)
        idmap = of_block(block)
        _register(paths, name, idmap)
    return idmap


def _choose(paths: Paths, name: str, xid: int, table: dict[str, int], reserved: set[int]) -> int:
    taken = {b for n, b in table.items() if n != name}
    derived = derived_block(xid)
    if derived is not None and derived not in taken:
        return derived
    found = list(holders(paths))
    for block in range(LAST_BLOCK, FIRST_BLOCK - 1, -1):
        if block in taken or block in reserved or overlapping(of_block(block), found):
            continue
        return block
    raise VstuiError("no free block of 65536 host ids left in 524288..1879048191; delete "
                     "unused guests", name)  # fmt: skip


def reserved_blocks(paths: Paths, name: str) -> set[int]:
    """Blocks the other guests' xids derive (fixed S_CONTEXT or allocated): never
    handed to a guest whose xid derives none."""
    check_name(name)
    from engine.config import list_guests, load_guest
    from engine.runtime import xid

    xids = {n: x for n, x in xid.allocated(paths).items() if n != name}
    for other in list_guests(paths):
        if other == name:
            continue
        try:
            context = load_guest(paths, other).context
        except (VstuiError, OSError):  # a broken neighbour config must not block this guest
            continue
        if context is not None:
            xids[other] = context
    return {b for b in map(derived_block, xids.values()) if b is not None}


def forget(paths: Paths, name: str) -> None:
    """A deleted guest's block: its record and its registrations go."""
    check_name(name)
    if name not in recorded(paths):
        return
    with _Locked(paths):
        table = recorded(paths)
        block = table.pop(name, None)
        _write_table(paths, table)
        _unregister(paths, name, None if block is None else of_block(block))


# -- the registrations ----------------------------------------------------------------------


def nss_name(name: str) -> str:
    """The user and group name of a guest's block (at most 32 characters)."""
    full = NSS_PREFIX + name
    if len(full) <= 32:
        return full
    import hashlib

    return full[:25] + "-" + hashlib.sha1(name.encode()).hexdigest()[:6]


def _ours(kind: str, name: str) -> str:
    return f"{nss_name(name)}:" if kind in ("passwd", "group") else f"{SUBID_OWNER}:"


def _entry(kind: str, name: str, idmap: IdMap) -> str:
    user = nss_name(name)
    return {
        "subuid": f"{SUBID_OWNER}:{idmap.base}:{idmap.count}",
        "subgid": f"{SUBID_OWNER}:{idmap.base}:{idmap.count}",
        "passwd": f"{user}:x:{idmap.base}:{idmap.base}:vstui guest {name} "
                  f"(host ids {idmap.text()}):/nonexistent:{NOLOGIN}",
        "group": f"{user}:x:{idmap.base}:",
    }[kind]  # fmt: skip


def _edit(path: Path, drop: str | None, add: str | None) -> None:
    lines = _lines(path)
    kept = [line for line in lines if line != drop and (add is None or line != add)]
    if add is not None:
        kept.append(add)
    if kept != lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace(path, "".join(f"{line}\n" for line in kept), 0o644)


def _current(path: Path, kind: str, name: str, idmap: IdMap | None) -> str | None:
    """Our present line for this guest in ``path`` (subuid: the one with its base)."""
    for line in _lines(path):
        if kind in ("passwd", "group") and line.startswith(_ours(kind, name)):
            return line
        if (
            kind in ("subuid", "subgid")
            and idmap
            and line.startswith(f"{SUBID_OWNER}:{idmap.base}:")
        ):
            return line
    return None


def _register(paths: Paths, name: str, idmap: IdMap) -> None:
    etc = paths.root / "etc"
    for kind in ("subuid", "subgid", "passwd", "group"):
        path = etc / kind
        _edit(path, _current(path, kind, name, idmap), _entry(kind, name, idmap))


def _unregister(paths: Paths, name: str, idmap: IdMap | None) -> None:
    etc = paths.root / "etc"
    for kind in ("subuid", "subgid", "passwd", "group"):
        path = etc / kind
        _edit(path, _current(path, kind, name, idmap), None)
