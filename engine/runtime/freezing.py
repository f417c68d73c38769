"""``vserver NAME freeze|thaw``: stop a running guest's processes where they are.

The kernel's cgroup freezer (v1 ``freezer.state``, v2 ``cgroup.freeze``)
holds every process of the guest; engine.cgroups does the writes. The run
directory's ``frozen`` file records when (epoch seconds): the exec fast path
and ``state.read`` see it without touching cgroups, and the audit reports a
guest frozen for too long. The kernel's state stays the truth: ``state()``
asks the freezer.
"""

from __future__ import annotations

import os
import time

from engine.errors import GuestNotRunning, require_root
from engine.paths import Paths
from engine.runtime import state
from engine.runtime.runfiles import FROZEN_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LOCK_TIMEOUT = 10.0  # a start or stop holds the guest's lock meanwhile


def _cgroups() -> Any:
    from engine.cgroups import manager

    return manager()


def _running(paths: Paths, name: str, what: str) -> None:
    from engine.config import validate_name

    validate_name(name)
    require_root(what, name)
    if state.init_identity(paths, name) is None:
        raise GuestNotRunning(f"guest is not running; start it first (vserver {name} start)",
                              name)  # fmt: skip


def freeze(paths: Paths, name: str) -> None:
    """Freeze every process of the running guest; returns once all are stopped."""
    _running(paths, name, "freezing a guest")
    lock = state.lock(paths, name, LOCK_TIMEOUT)
    try:
        _cgroups().freeze(paths.cgroup_name(name))
        if state.read_value(paths.run_dir(name), FROZEN_FILE) is None:
            state.write_value(paths.run_dir(name), FROZEN_FILE, f"{time.time():.3f}")
    finally:
        lock.release()


def thaw(paths: Paths, name: str) -> None:
    """Let the guest's processes run again; a guest that is not frozen is left alone."""
    _running(paths, name, "thawing a guest")
    lock = state.lock(paths, name, LOCK_TIMEOUT)
    try:
        _thaw(paths, name)
    finally:
        lock.release()


def _thaw(paths: Paths, name: str) -> None:
    _cgroups().thaw(paths.cgroup_name(name))
    try:
        os.unlink(paths.run_dir(name) / FROZEN_FILE)
    except FileNotFoundError:
        pass


def thaw_for_stop(paths: Paths, name: str) -> None:
    """Thaw before stopping (the caller holds the lock): a frozen init cannot halt."""
    if state.read_value(paths.run_dir(name), FROZEN_FILE) is not None:
        _thaw(paths, name)


def state_of(paths: Paths, name: str) -> str | None:
    """The kernel's word: "frozen", "freezing", "thawed"; None when not running."""
    if state.init_identity(paths, name) is None:
        return None
    return _cgroups().freezer_state(paths.cgroup_name(name))


class HeldStill:
    """Hold a running guest frozen for the body (a snapshot's instant); thaw after.

    A stopped guest needs nothing; a guest the administrator froze stays
    frozen afterwards. Not contextlib: it costs ~1 ms to import.
    """

    def __init__(self, paths: Paths, name: str) -> None:
        self.paths = paths
        self.name = name
        self.froze = False

    def __enter__(self) -> HeldStill:
        if state.init_identity(self.paths, self.name) is None:
            return self
        cg = _cgroups()
        rel = self.paths.cgroup_name(self.name)
        if cg.freezer_state(rel) != "frozen":
            cg.freeze(rel)
            self.froze = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.froze:
            _cgroups().thaw(self.paths.cgroup_name(self.name))
