"""What every check receives: the root, the guests' configurations, the facts."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.audit.facts import Facts
from engine.audit.model import Collector
from engine.config import GuestConfig
from engine.errors import ConfigError
from engine.paths import Paths


@dataclass
class Audit:
    """One audit run: inputs read once, findings collected."""

    paths: Paths
    facts: Facts
    col: Collector
    configs: dict[str, GuestConfig] = field(default_factory=dict)  # every guest
    errors: dict[str, list[ConfigError]] = field(default_factory=dict)
    scope: list[str] = field(default_factory=list)  # guests whose findings are wanted
    host_wide: bool = True  # False with --guest: host-only rules are skipped
    pid_owners: dict[int, str] | None = None  # pid -> guest, see guest_pids()
    _holders: list[Any] | None = None  # idmap.holders(), read once

    def id_holders(self) -> list[Any]:
        """Foreign subuid/subgid ranges and passwd/group ids of the root (read once)."""
        if self._holders is None:
            from engine.runtime import idmap

            self._holders = list(idmap.holders(self.paths))
        return self._holders

    def scoped(self) -> list[GuestConfig]:
        return [self.configs[n] for n in self.scope if n in self.configs]

    def lstat(self, path: Path, guest: str | None = None) -> os.stat_result | None:
        """lstat, or None when missing; unreadable recorded (also None)."""
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.col.cannot_read(path, exc, guest)
            return None

    @property
    def owner_uid(self) -> int:
        return self.facts.sources.owner_uid


def mode_text(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))[2:].zfill(3)


def writable_by_others(st: os.stat_result, owner_uid: int) -> bool:
    """Someone other than ``owner_uid`` (root) can write it."""
    mode = st.st_mode
    return bool(
        st.st_uid != owner_uid
        or mode & stat.S_IWOTH
        or (mode & stat.S_IWGRP and st.st_gid not in (0, owner_uid))
    )


def traversable_by_others(st: os.stat_result, owner_uid: int) -> bool:
    """A user other than ``owner_uid`` (root) can pass through this directory."""
    mode = st.st_mode
    return bool(
        mode & stat.S_IXOTH
        or (mode & stat.S_IXGRP and st.st_gid not in (0, owner_uid))
        or (mode & stat.S_IXUSR and st.st_uid != owner_uid)
    )


def guest_pids(audit: Audit) -> dict[int, str]:
    """pid -> guest name for every process of a running guest (read once)."""
    if audit.pid_owners is not None:
        return audit.pid_owners
    from engine.runtime import state

    owners: dict[int, str] = {}
    for name in audit.configs:
        try:
            running = state.read(audit.paths, name).running
        except OSError:
            running = False
        if not running:
            continue
        members = audit.facts.members(audit.paths, name) or set()
        owners.update(dict.fromkeys(members, name))
    audit.pid_owners = owners
    return owners
