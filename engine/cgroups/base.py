"""What both backends share: the guest's directories in every hierarchy.

A guest's cgroup is ``rel`` (``vstui-<rootid>/NAME``) under each hierarchy
the engine uses. Only directories whose first component starts with
``vstui`` are ever created, written or removed: the machine's own cgroups
are never touched.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from engine.cgroups.data import Limits
from engine.cgroups.probe import Hierarchy
from engine.errors import KernelError, VstuiError

ENGINE_PREFIX = "vstui"
# The guest's own part of its cgroup2 tree, one level below the directory that
# carries its limits: its processes live there, its cgroup namespace is rooted
# there, and its init (systemd) manages everything below (CGROUP_DELEGATION:
# a manager takes over the root it is given). v1 hierarchies have none: the
# guest only ever sees its cgroup2 subtree.
PAYLOAD = "payload"
KILL_TIMEOUT = 10.0
FREEZE_TIMEOUT = 5.0  # a task in uninterruptible sleep can hold a freeze back

# freezer states, as freezer_state() reports them
FROZEN, FREEZING, THAWED = "frozen", "freezing", "thawed"


def quota_us(percent: float, period: int) -> int:
    """Percent of one CPU -> microseconds of CPU per ``period`` (at least 1 ms)."""
    return max(1000, round(percent * period / 100))


def guest_of(rel: str) -> str:
    """The guest name in a relative cgroup path (its last component)."""
    return rel.rstrip("/").rsplit("/", 1)[-1]


def check_rel(rel: str) -> tuple[str, ...]:
    """Split ``rel`` into components, refusing anything outside the engine's tree."""
    parts = tuple(p for p in rel.split("/") if p)
    if (
        not parts
        or rel.startswith("/")
        or any(p in (".", "..") for p in parts)
        or not parts[0].startswith(ENGINE_PREFIX)
    ):
        raise VstuiError(
            f"cgroup path '{rel}' is not one of the engine's (expected {ENGINE_PREFIX}.../NAME)"
        )
    return parts


def read_text(path: Path) -> str:
    with open(path) as f:
        return f.read()


def read_int(path: str | Path) -> int | None:
    """An integer control file; None when missing or "max". One os-level read of
    bytes (a console reads a few per guest every second: a text-mode open costs
    about as much again)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            value = os.read(fd, 128).split(None, 1)
        finally:
            os.close(fd)
    except OSError:
        return None
    if not value or value[0] == b"max":
        return None
    try:
        return int(value[0])
    except ValueError:
        return None


# While a start plans its cgroups (Tree.setup_ops), mkdirs and writes are
# collected here as ops instead of being made: the C executor makes them.
_planned: list[tuple[str, ...]] | None = None


def planning() -> bool:
    """True while setup_ops records what create/apply would do (nothing is made)."""
    return _planned is not None


def write(path: Path, value: str, guest: str | None, hint: str = "") -> None:
    """Write one control file; KernelError naming the file on failure."""
    if _planned is not None:
        _planned.append(("write", str(path), value))
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise KernelError("write", str(path), exc.errno or errno.EIO, guest, hint) from None


def read_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in read_text(path).split()]
    except (OSError, ValueError):
        return []


def walk_dirs(top: Path) -> Iterator[Path]:
    """``top`` and every cgroup directory below it, parents before children."""
    stack = [top]
    while stack:
        current = stack.pop()
        yield current
        try:
            with os.scandir(current) as it:
                stack.extend(Path(e.path) for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue


class Freezer:
    """One cgroup's freezer: v1 ``freezer.state`` or v2 ``cgroup.freeze``/``cgroup.events``.

    v1 reports FREEZING until every task has stopped (Documentation/admin-guide/
    cgroup-v1/freezer-subsystem.rst); v2 sets ``frozen 1`` in cgroup.events once
    the whole subtree is frozen (Documentation/admin-guide/cgroup-v2.rst).
    """

    def __init__(self, version: int, directory: Path, guest: str) -> None:
        self.version = version
        self.directory = directory
        self.guest = guest

    def request(self, frozen: bool) -> None:
        if self.version == 1:
            write(self.directory / "freezer.state", "FROZEN" if frozen else "THAWED", self.guest)
        else:
            write(self.directory / "cgroup.freeze", "1" if frozen else "0", self.guest)

    def state(self) -> str:
        if self.version == 1:
            return {"FROZEN": FROZEN, "FREEZING": FREEZING}.get(
                read_text(self.directory / "freezer.state").strip(), THAWED
            )
        if read_int(self.directory / "cgroup.freeze") != 1:
            return THAWED
        events = read_text(self.directory / "cgroup.events").split()
        done = "frozen" in events and events[events.index("frozen") + 1] == "1"
        return FROZEN if done else FREEZING

    def wait(self, deadline: float) -> bool:
        """True once frozen; False at ``deadline``."""
        delay = 0.001
        while self.state() != FROZEN:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return True


class Tree:
    """Directory handling over a set of hierarchies; backends add the limits."""

    kind = "?"

    def __init__(self, hierarchies: tuple[Hierarchy, ...], primary: Hierarchy) -> None:
        self.hierarchies = hierarchies
        # procs/exists/list_guests look here: every guest process is in this one.
        self.primary = primary
        self._gauge_files: dict[str, tuple[str | None, ...]] = {}

    @property
    def has_cgroup2(self) -> bool:
        """A cgroup2 hierarchy is in use: each guest gets its own subtree of it (PAYLOAD)."""
        return any(h.version == 2 for h in self.hierarchies)

    # -- hooks -------------------------------------------------------------
    def _enable_below(self, h: Hierarchy, directory: Path, guest: str) -> None:
        """Called for each directory above the guest's; v2 enables controllers there."""

    # -- directories ---------------------------------------------------------
    def paths(self, rel: str) -> list[Path]:
        parts = check_rel(rel)
        return [h.mount.joinpath(*parts) for h in self.hierarchies]

    def exists(self, rel: str) -> bool:
        return self.primary.mount.joinpath(*check_rel(rel)).is_dir()

    def create(self, rel: str) -> None:
        """Make the guest's directory (and parents) in every hierarchy, and its cgroup2 payload."""
        parts = check_rel(rel)
        guest = guest_of(rel)
        for h in self.hierarchies:
            chain = (*parts, PAYLOAD) if h.version == 2 else parts
            for attempt in range(5):
                try:
                    self._make_chain(h, chain, guest)
                    break
                except FileNotFoundError:
                    # A parent vanished under us (another guest's remove); retry.
                    if attempt == 4:
                        raise

    def _make_chain(self, h: Hierarchy, parts: tuple[str, ...], guest: str) -> None:
        directory = h.mount
        for part in parts:
            self._enable_below(h, directory, guest)
            directory = directory / part
            if _planned is not None:
                _planned.append(("mkdir", str(directory)))
                continue
            try:
                os.mkdir(directory)
            except (FileExistsError, FileNotFoundError):
                if not directory.is_dir():
                    raise FileNotFoundError(errno.ENOENT, "gone", str(directory)) from None
            except OSError as exc:
                raise KernelError("mkdir", str(directory), exc.errno or errno.EIO, guest) from None

    def setup_ops(self, rel: str, limits: Limits) -> list[tuple[str, ...]]:
        """What ``create`` + ``apply`` would do, as ops for the start executor.

        ("mkdir", dir) and ("write", file, value), in order; nothing is made.
        """
        global _planned
        _planned = ops = []
        try:
            self.create(rel)
            self.apply(rel, limits)
        finally:
            _planned = None
        return ops

    def delegate_ops(self, rel: str, uid: int, gid: int) -> list[tuple[str, ...]]:
        """("chown", path, uid, gid) ops handing the guest's cgroup2 payload to its root.

        What cgroup-v2.rst's "Delegation" names: the directory, cgroup.procs,
        cgroup.threads, cgroup.subtree_control and the files the kernel lists in
        /sys/kernel/cgroup/delegate. The directory above, with the limits, stays
        root's: the guest manages its subtree and cannot change its limits.
        """
        parts = check_rel(rel)
        names = ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"]
        try:
            with open("/sys/kernel/cgroup/delegate") as f:
                names += [n for n in f.read().split() if n not in names]
        except OSError:
            pass
        ops: list[tuple[str, ...]] = []
        for h in self.hierarchies:
            if h.version == 2:
                payload = h.mount.joinpath(*parts, PAYLOAD)
                ops.append(("chown", str(payload), str(uid), str(gid)))
                ops += [("chown", str(payload / n), str(uid), str(gid)) for n in names]
        return ops

    def join_ops(self, rel: str) -> list[tuple[str, str]]:
        """How a new process enters the guest's cgroup: ("tasks", v1 file), ("cgroup2", dir).

        v1: writing "0" to ``tasks`` moves just the calling thread, without
        the kernel's global threadgroup lock and its RCU grace period (~10-20
        ms); a single-threaded process is then wholly moved. cgroup2 has no
        ``tasks``: the process is cloned straight into the group
        (clone3 CLONE_INTO_CGROUP), which costs nothing either. The guest's
        processes join its cgroup2 ``payload`` (the root its cgroup namespace
        and its init see), and the limits' directory on v1.
        """
        parts = check_rel(rel)
        return [(("tasks", str(h.mount.joinpath(*parts, "tasks"))) if h.version == 1
                 else ("cgroup2", str(h.mount.joinpath(*parts, PAYLOAD))))
                for h in self.hierarchies]  # fmt: skip

    def remove_ops(self, rel: str) -> list[tuple[str, str]]:
        """What ``remove`` does, for the compiled stop (STOP_OPS): ("cgroup", the
        guest's directory in each hierarchy: emptied, removed sub-directories
        first), then ("parent", each per-root parent: removed once empty)."""
        parts = check_rel(rel)
        ops = [("cgroup", str(h.mount.joinpath(*parts))) for h in self.hierarchies]
        return ops + [("parent", str(h.mount.joinpath(*parts[:up])))
                      for h in self.hierarchies for up in range(len(parts) - 1, 0, -1)]  # fmt: skip

    def memory_dir(self, rel: str) -> Path | None:
        """The guest's directory in the memory hierarchy (engine.cgroups.memstat reads it)."""
        return None

    def attach(self, rel: str, pid: int) -> None:
        """Move ``pid`` (the whole process) into the guest's cgroup (cgroup2: its payload)."""
        guest = guest_of(rel)
        for _, target in self.join_ops(rel):
            directory = target.removesuffix("/tasks")
            write(Path(directory) / "cgroup.procs", str(pid), guest, "is the process still alive?")

    def procs(self, rel: str) -> list[int]:
        """Every process in the guest's cgroup and its sub-cgroups."""
        return self.members(rel) or []

    def members(self, rel: str) -> list[int] | None:
        """``procs``, None when the guest has no cgroup: one read and one listing per
        directory, string paths (a console asks for every guest every second)."""
        top = os.path.join(self.primary.mount, *check_rel(rel))
        pids: list[int] = []
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                with open(directory + "/cgroup.procs", "rb") as f:
                    data = f.read()
                if os.stat(directory).st_nlink > 2:  # kernfs: 2 + its subdirectories
                    with os.scandir(directory) as it:
                        stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                if directory == top:
                    return None
                continue  # a sub-cgroup removed meanwhile
            except OSError:
                continue
            pids.extend(int(pid) for pid in data.split())
        return pids

    def memory_used(self, rel: str) -> int | None:
        """The guest's memory use in bytes (one read; a console asks every second)."""
        path = self._gauges(rel)[0]
        return read_int(path) if path else None

    def limit_gauges(self, rel: str) -> tuple[int | None, int | None]:
        """(memory limit, process limit) in two reads; None = unlimited or not controlled."""
        _, memory, pids = self._gauges(rel)
        limit = self.unlimited_as_none(read_int(memory)) if memory else None
        return limit, read_int(pids) if pids else None

    def _gauges(self, rel: str) -> tuple[str | None, ...]:
        files = self._gauge_files.get(rel)
        if files is None:
            files = self._gauge_files[rel] = self.gauge_files(rel)
        return files

    def gauge_files(self, rel: str) -> tuple[str | None, ...]:
        """Paths of (memory use, memory limit, process limit); None: not controlled."""
        raise NotImplementedError

    @staticmethod
    def unlimited_as_none(limit: int | None) -> int | None:
        return limit

    def location(self, pid: int) -> str | None:
        """``pid``'s cgroup in the hierarchy ``procs`` reads, from /proc/PID/cgroup
        (e.g. ``/vstui-1a2b/web/payload``); None when it is gone."""
        from engine import procfs

        h = self.primary
        return procfs.cgroups(pid).get("" if h.version == 2 else ",".join(sorted(h.controllers)))

    def list_guests(self, base: str) -> list[str]:
        top = self.primary.mount.joinpath(*check_rel(base))
        try:
            with os.scandir(top) as it:
                return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            return []

    def remove(self, rel: str) -> None:
        """Remove the guest's directories, children first; idempotent.

        The per-root parent goes too once it is empty, so a root leaves nothing.
        """
        parts = check_rel(rel)
        guest = guest_of(rel)
        for h in self.hierarchies:
            top = h.mount.joinpath(*parts)
            for directory in sorted(walk_dirs(top), key=lambda p: -len(p.parts)):
                self._rmdir(directory, guest)
            for up in range(len(parts) - 1, 0, -1):
                try:
                    os.rmdir(h.mount.joinpath(*parts[:up]))
                except OSError:
                    break  # not empty (other guests) or already gone

    def _rmdir(self, directory: Path, guest: str) -> None:
        delay, deadline = 0.0005, time.monotonic() + 1.0
        while True:
            try:
                os.rmdir(directory)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                # EBUSY right after the last process died: it is still exiting (a process
                # whose threads are all exiting is no longer listed, not yet out of the group)
                exiting = exc.errno == errno.EBUSY and not read_pids(directory / "cgroup.procs")
                if exiting and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02)
                    continue
                raise KernelError(
                    "rmdir", str(directory), exc.errno or errno.EIO, guest,
                    "processes are still in it; stop the guest first",
                ) from None  # fmt: skip

    # -- freezing ----------------------------------------------------------
    def freezer(self, rel: str) -> Freezer | None:
        """The guest's freezer, None when this host has none; backends choose."""
        return None

    def _need_freezer(self, rel: str) -> Freezer:
        freezer = self.freezer(rel)
        if freezer is None:
            raise KernelError(
                "freeze", rel, errno.ENODEV, guest_of(rel),
                "this host has neither the v1 freezer controller nor cgroup2",
            )  # fmt: skip
        if not freezer.directory.is_dir():
            raise KernelError("freeze", str(freezer.directory), errno.ENOENT, guest_of(rel),
                              "the guest is not running")  # fmt: skip
        return freezer

    def freeze(self, rel: str, timeout: float = FREEZE_TIMEOUT) -> None:
        """Stop every process of the guest where it is; returns once all are frozen.

        If they are not all frozen within ``timeout`` (a task in D state), the
        guest is thawed again and KernelError says so: never half frozen.
        """
        freezer = self._need_freezer(rel)
        freezer.request(True)
        if not freezer.wait(time.monotonic() + timeout):
            freezer.request(False)
            raise KernelError(
                "freeze", str(freezer.directory), errno.EBUSY, guest_of(rel),
                f"not every process stopped within {timeout:g}s (one may be in "
                "uninterruptible sleep); the guest was thawed again, try later",
            )  # fmt: skip

    def thaw(self, rel: str) -> None:
        """Let the guest's processes run again; idempotent."""
        self._need_freezer(rel).request(False)

    def freezer_state(self, rel: str) -> str | None:
        """ "frozen", "freezing" or "thawed"; None without a freezer or cgroup."""
        freezer = self.freezer(rel)
        if freezer is None:
            return None
        try:
            return freezer.state()
        except OSError:
            return None

    # -- killing -----------------------------------------------------------
    def kill_all(self, rel: str, timeout: float = KILL_TIMEOUT) -> int:
        """Kill every process of the guest, round after round, until it is empty.

        Each backend's ``_kill_pass`` does one round its kernel's best way
        (cgroup.kill, or freeze + SIGKILL each + thaw); returns how many died.
        """
        deadline = time.monotonic() + timeout
        killed: set[int] = set()
        while pids := self.procs(rel):
            self._kill_pass(rel, pids, killed, deadline)
            if self._wait_empty(rel, min(deadline, time.monotonic() + 1.0)):
                break
            if time.monotonic() >= deadline:
                raise self._timeout_error(rel, timeout)
        return len(killed)

    def _kill_pass(self, rel: str, pids: list[int], killed: set[int], deadline: float) -> None:
        self._kill_round(rel, killed)

    def _kill_round(self, rel: str, killed: set[int]) -> None:
        for pid in self.procs(rel):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass

    def _wait_empty(self, rel: str, deadline: float) -> bool:
        delay = 0.002
        while self.procs(rel):
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def _timeout_error(self, rel: str, timeout: float) -> KernelError:
        top = self.primary.mount.joinpath(*check_rel(rel))
        return KernelError(
            "kill", str(top), errno.EBUSY, guest_of(rel),
            f"processes left after {timeout:g}s: {sorted(self.procs(rel))[:10]}",
        )  # fmt: skip
