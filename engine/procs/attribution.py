"""Which context each process belongs to: by each guest's cgroup, read once.

A guest's members are the PIDs in its cgroup (and its sub-cgroups), read from
one hierarchy per refresh; every other process is the host's (context 0).
Guests and their xids come from the run state files that the runtime writes
(``paths.run_dir(NAME)/{state,xid,init.pid,started}``) and the configuration
directory for guests that are not running.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from engine import procfs
from engine._filekey import DirKey, dir_key
from engine.contexts import HOST_NAME, HOST_XID, SPECTATOR_XID
from engine.paths import Paths, check_name, is_name

TYPE_CHECKING = False  # not typing's: vps's start path
if TYPE_CHECKING:
    from typing import Any

CGROUP_FS = Path("/sys/fs/cgroup")
# hierarchies to read membership from when engine.cgroups is not there, best first
_FALLBACK_HIERARCHIES = ("pids", "memory", "cpu", "freezer", "unified", "")
UNKNOWN_XID = -1


# The records here are named tuples, not dataclasses: this module is on vps's
# start path, where importing dataclasses (~9 ms) and generating each class
# (~0.8 ms) would cost more than the rest of a small `vps`.


class RunInfo(namedtuple("RunInfo", "name state xid init_pid started")):
    """A guest's run state as the runtime recorded it.

    name: str; state: running, starting, stopping, stopped; xid: int | None;
    init_pid: int | None; started: epoch seconds | None.
    """

    __slots__ = ()
    name: str
    state: str
    xid: int | None
    init_pid: int | None
    started: float | None

    @property
    def active(self) -> bool:
        return self.state in ("running", "starting", "stopping")


class Context(namedtuple("Context", "xid name")):
    """A context as vps shows it: xid (int) and name (str)."""

    __slots__ = ()
    xid: int
    name: str


HOST = Context(HOST_XID, HOST_NAME)


def _read_value(path: str | os.PathLike[str]) -> str | None:
    """A small state file, stripped; None if missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def read_run_state(paths: Paths, name: str, proc_root: str = "/proc") -> RunInfo:
    """The run state files of one guest; ``stopped`` when there are none.

    A state that says running while init (pid + ``init.start``) is gone is
    reported as ``stopped``: the guest died without its supervisor cleaning up.
    """
    return _checked(name, _recorded(paths.run_dir_str(name)), proc_root)


# (state, started, init_pid, init_start, xid, frozen): what the run files say
_Recorded = tuple


def _recorded(run: str) -> _Recorded:
    state = _read_value(os.path.join(run, "state")) or "stopped"
    started_text = _read_value(os.path.join(run, "started"))
    try:
        started = float(started_text) if started_text else None
    except ValueError:
        started = None
    init_pid = _int_or_none(_read_value(os.path.join(run, "init.pid")))
    init_start = _int_or_none(_read_value(os.path.join(run, "init.start")))
    xid = _int_or_none(_read_value(os.path.join(run, "xid")))
    return state, started, init_pid, init_start, xid, os.path.exists(os.path.join(run, "frozen"))


def _checked(
    name: str, recorded: _Recorded, proc_root: str, seen: Mapping[int, Any] | None = None
) -> RunInfo:
    """The recorded state, ``stopped`` when init (pid + start time) is gone.

    ``seen``: a scan of /proc (pid -> Proc) taken a moment ago, which spares
    reading init's stat again; a PID it lacks is read."""
    state, started, init_pid, expected, xid, _frozen = recorded
    if init_pid is not None and state in ("running", "stopping"):
        proc = seen.get(init_pid) if seen else None
        if proc is not None and proc.state != "Z":
            now = proc.starttime
        else:
            now = procfs.starttime(init_pid, proc_root)
        if now is None or (expected is not None and now != expected):
            state, init_pid = "stopped", None
    return RunInfo(name, state, xid, init_pid, started)


class RunStates:
    """``read_run_state`` for a caller that asks every second (the console).

    Every run file is written by rename, which changes the run directory: a
    guest's files are read again only when its directory changed, or changed
    too recently to tell (engine._filekey.dir_key: a timestamp is coarse).
    Init's liveness is checked at every read (one read).
    """

    def __init__(self, paths: Paths, proc_root: str = "/proc") -> None:
        self.paths = paths
        self.proc_root = proc_root
        self._seen: dict[str, tuple[DirKey, _Recorded]] = {}
        self._frozen: dict[str, bool] = {}
        self._dirs: dict[str, str] = {}  # name -> run dir (a checked name, joined once)

    def _record(self, name: str) -> _Recorded:
        run = self._dirs.get(name)
        if run is None:
            run = self._dirs[name] = self.paths.run_dir_str(name)
        stamp = dir_key(run)
        if stamp is None:
            self._seen.pop(name, None)
            return _recorded(run)
        key, settled = stamp
        hit = self._seen.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        recorded = _recorded(run)
        if settled:
            self._seen[name] = (key, recorded)
        return recorded

    def read(self, name: str, seen: Mapping[int, Any] | None = None) -> RunInfo:
        """The guest's run state; ``seen``: the caller's last scan of /proc (init
        found there alive counts as alive: a guest that died since is seen at the
        next read)."""
        recorded = self._record(name)
        self._frozen[name] = bool(recorded[5])
        return _checked(name, recorded, self.proc_root, seen)

    def was_frozen(self, name: str) -> bool:
        """Whether run_dir/frozen was there at the last ``read`` of the guest."""
        return self._frozen.get(name, False)

    def frozen(self, name: str) -> bool:
        """run_dir/frozen exists (``vserver NAME freeze``)."""
        return bool(self._record(name)[5])


def configured_guests(paths: Paths) -> list[str]:
    """Names of configured guests (engine.config.list_guests when present)."""
    try:
        from engine.config import list_guests
    except ImportError:
        list_guests = None
    if list_guests is not None:
        return list(list_guests(paths))
    names: set[str] = set()
    for folder in (paths.config_dir, paths.legacy_config_dir):
        try:
            names.update(e.name[:-5] for e in os.scandir(folder) if e.name.endswith(".conf"))
        except OSError:
            continue
    return sorted(names)


def run_guests(paths: Paths) -> list[str]:
    """Names that have a run directory (running, or left by a crash)."""
    try:
        entries = os.scandir(paths.run_base)
        return sorted(e.name for e in entries if is_name(e.name) and e.is_dir())
    except OSError:
        return []


def all_guests(paths: Paths) -> list[str]:
    return sorted(set(configured_guests(paths)) | set(run_guests(paths)))


def running_guests(paths: Paths, proc_root: str = "/proc") -> list[RunInfo]:
    """Run state of every guest whose state says it has processes."""
    infos = (read_run_state(paths, name, proc_root) for name in run_guests(paths))
    return [info for info in infos if info.active]


def _fallback_members(paths: Paths, name: str, cgroup_fs: Path) -> set[int] | None:
    rel = paths.cgroup_name(name)
    for h in _FALLBACK_HIERARCHIES:
        top = cgroup_fs / h / rel if h else cgroup_fs / rel
        if not top.is_dir():
            continue
        pids: set[int] = set()
        from engine.cgroups.base import walk_dirs  # iterative: a guest may nest its cgroups deep

        for folder in walk_dirs(top):
            try:
                with open(folder / "cgroup.procs", "rb") as f:
                    pids.update(int(x) for x in f.read().split())
            except (OSError, ValueError):
                continue
        return pids
    return None


def cgroup_members(paths: Paths, name: str, cgroup_fs: Path | None = None) -> set[int] | None:
    """PIDs in the guest's cgroup and its sub-cgroups; None if it has no cgroup.

    Through engine.cgroups (one hierarchy: every member is in every one);
    ``cgroup_fs`` (tests, or no cgroup part) reads the files under that
    directory instead.
    """
    if cgroup_fs is None:
        try:
            from engine.cgroups import manager
        except ImportError:
            manager = None
        if manager is not None:
            try:
                members = manager().members(paths.cgroup_name(name))
                return None if members is None else set(members)
            except Exception:  # a broken cgroup part must not break vps: read files
                pass
        cgroup_fs = CGROUP_FS
    return _fallback_members(paths, name, cgroup_fs)


class Attribution(namedtuple("Attribution", "by_pid guests errors", defaults=((),))):
    """Processes by context for one refresh.

    by_pid: guest members only (everyone else is HOST); guests: the running
    guests (RunInfo); errors: what could not be attributed, said plainly.
    """

    __slots__ = ()
    by_pid: dict[int, Context]
    guests: tuple[RunInfo, ...]
    errors: tuple[str, ...]

    def context(self, pid: int) -> Context:
        return self.by_pid.get(pid, HOST)

    def names(self) -> dict[int, str]:
        """xid -> name for every known context."""
        out = {HOST_XID: HOST_NAME}
        for g in self.guests:
            if g.xid is not None:
                out[g.xid] = g.name
        return out


def attribute(
    paths: Paths,
    cgroup_fs: Path | None = None,
    guests: Iterable[RunInfo] | None = None,
) -> Attribution:
    """Read each running guest's cgroup members once."""
    running = tuple(guests) if guests is not None else tuple(running_guests(paths))
    by_pid: dict[int, Context] = {}
    errors: list[str] = []
    for info in running:
        ctx = Context(info.xid if info.xid is not None else UNKNOWN_XID, info.name)
        members = cgroup_members(paths, info.name, cgroup_fs)
        if members is None:
            errors.append(
                f"{info.name}: no cgroup {paths.cgroup_name(info.name)}; "
                "its processes are shown as the host's"
            )
            continue
        for pid in members:
            by_pid[pid] = ctx
    return Attribution(by_pid, running, tuple(errors))


def attribute_new(
    paths: Paths, previous: Attribution, new_pids: Iterable[int], alive: Collection[int]
) -> Attribution:
    """``previous`` (same running guests) with the processes seen for the first time.

    A process stays in the cgroup it was forked into (vexec clones new ones
    into a guest; nothing of vstui moves a running process into one), so a
    repeated refresh looks up only new PIDs, each by its own /proc/PID/cgroup
    line of the hierarchy ``attribute`` reads; ``alive`` prunes the gone.
    """
    from engine.cgroups import manager

    cgroups = manager()
    by_rel = {paths.cgroup_name(g.name): g for g in previous.guests}
    by_pid = {pid: ctx for pid, ctx in previous.by_pid.items() if pid in alive}
    for pid in new_pids:
        where = cgroups.location(pid)
        info = by_rel.get("/".join(where.strip("/").split("/")[:2])) if where else None
        if info is not None:
            by_pid[pid] = Context(info.xid if info.xid is not None else UNKNOWN_XID, info.name)
    return Attribution(by_pid, previous.guests, previous.errors)


def context_label(xid: int, names: dict[int, str]) -> str:
    """The name part of util-vserver's CONTEXT column."""
    if xid == HOST_XID:
        return "MAIN"
    if xid == SPECTATOR_XID:
        return "ALL_PROC"
    return names.get(xid, "")


def resolve_context(paths: Paths, word: str, proc_root: str = "/proc") -> int:
    """The running context a ``--xid`` word names (a number or a guest name).

    0 and 1 always exist; any other number or name must be a running guest:
    GuestNotFound for an unknown one, GuestNotRunning for a stopped one.
    """
    word = word.strip()
    if word.isascii() and word.isdigit() and int(word) in (HOST_XID, SPECTATOR_XID):
        return int(word)
    info = resolve_guest(paths, word, proc_root)
    if info is None:
        return HOST_XID
    if not info.active or info.xid is None:
        from engine.errors import GuestNotRunning

        raise GuestNotRunning(
            f"guest is not running; start it with `vserver {info.name} start`", info.name
        )
    return info.xid


def resolve_guest(paths: Paths, word: str, proc_root: str = "/proc") -> RunInfo | None:
    """A guest by name or by xid (a number); None for context 0."""
    if word.isascii() and word.isdigit() and len(word) <= 10:
        xid = int(word)
        if xid == HOST_XID:
            return None
        for info in running_guests(paths, proc_root):
            if info.xid == xid:
                return info
        for name in configured_guests(paths):
            if guest_context(paths, name) == xid:
                return read_run_state(paths, name, proc_root)
        from engine.errors import GuestNotFound

        raise GuestNotFound(f"no guest has context {xid}; see `vserver-stat` for running ones")
    from engine.errors import GuestNotFound

    check_name(word)
    if word not in all_guests(paths):
        raise GuestNotFound(
            f"no such guest; create {paths.config_file(word)} or see `vserver --list`", word
        )
    return read_run_state(paths, word, proc_root)


def guest_context(paths: Paths, name: str) -> int | None:
    """Configured S_CONTEXT of a guest (None if not fixed or unreadable)."""
    cfg = load_config(paths, name)
    return getattr(cfg, "context", None) if cfg is not None else None


def load_config(paths: Paths, name: str) -> object | None:
    """engine.config.load_guest, or None when the config part is absent/broken."""
    return config_or_error(paths, name)[0]


def config_or_error(paths: Paths, name: str) -> tuple[object | None, str | None]:
    """(engine.config.load_guest, None), or (None, why) for a broken NAME.conf."""
    check_name(name)
    try:
        from engine.config import load_guest
    except ImportError:
        return None, None
    from engine.errors import VstuiError

    try:
        return load_guest(paths, name), None
    except VstuiError as exc:  # a broken or vanished NAME.conf; a bug still shows
        return None, exc.message
    except OSError as exc:
        return None, str(exc)


def guest_flags(paths: Paths, name: str) -> frozenset[str]:
    """S_FLAGS of a guest, through engine.config, else read from the file."""
    cfg = load_config(paths, name)
    if cfg is not None:
        return frozenset(getattr(cfg, "flags", ()))
    for path in (paths.config_file(name), paths.legacy_config_file(name)):
        text = _read_value(path)
        if text is None:
            continue
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == "S_FLAGS":
                return frozenset(value.strip().strip("'\"").split())
        return frozenset()
    return frozenset()


def is_legacy(paths: Paths, name: str) -> bool:
    """A guest known only from util-vserver's legacy NAME.conf (shown `[name]`)."""
    return not paths.config_file(name).exists() and paths.legacy_config_file(name).exists()
