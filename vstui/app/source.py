"""Where snapshots come from: the ``SnapshotSource`` protocol.

The real source wraps ``engine.observe.Observer``. When that part is not in
this build, ``ConfigOnlySource`` lists the configured guests and their run
state and says plainly that there are no live figures; it never invents a
number. Tests hand the app a fixed source of handmade ``Snapshot`` objects.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

from engine.datamodel import HOST_NAME, HOST_XID, Gauge, GuestStatus, Snapshot
from engine.facade import Engine

NO_OBSERVE = "engine.observe is not available in this build: no live figures"


class SnapshotSource(Protocol):
    """Anything that can take a snapshot (called from a worker thread)."""

    def snapshot(self) -> Snapshot: ...


def real_source(engine: Engine) -> SnapshotSource:
    """engine.observe's Observer, or the plain config-only fallback."""
    if engine.available("engine.observe"):
        return engine.snapshot_source()
    return ConfigOnlySource(engine)


class ConfigOnlySource:
    """Configured guests and their run state only; says what is missing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def snapshot(self) -> Snapshot:
        names = self._names()
        guests = [_status(HOST_NAME, HOST_XID, "running")]
        guests += [_status(n, self._xid(n), self._state(n)) for n in names]
        return Snapshot(
            taken=time.monotonic(), wall=time.time(), guests=tuple(guests), procs=(),
            ncpu=os.cpu_count() or 1, errors=(NO_OBSERVE,),
        )  # fmt: skip

    def _names(self) -> list[str]:
        try:
            return self.engine.list_guests()
        except Exception:  # engine.config missing: read the directory itself
            conf = self.engine.paths.config_dir
            return sorted(p.stem for p in conf.glob("*.conf")) if conf.is_dir() else []

    def _read(self, name: str, what: str) -> str | None:
        try:
            return (self.engine.paths.run_dir(name) / what).read_text().strip()
        except OSError:
            return None

    def _state(self, name: str) -> str:
        return self._read(name, "state") or "stopped"

    def _xid(self, name: str) -> int:
        value = self._read(name, "xid")
        return int(value) if value and value.isdigit() else -1


def _status(name: str, xid: int, state: str) -> GuestStatus:
    return GuestStatus(
        name=name, xid=xid, state=state, init_pid=None, addresses=(), flags=(), nproc=0,
        cpu_percent=0.0, memory=Gauge(), pids=Gauge(), disk=Gauge(), inodes=Gauge(), net=None,
        bandwidth_out=None, bandwidth_in=None, uptime=None, missing=("observe",),
    )  # fmt: skip
