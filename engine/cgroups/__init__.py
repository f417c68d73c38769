"""Guest cgroups: one interface, a v2 and a v1 backend (hybrid hosts too).

``manager()`` probes the host once (/proc/self/mountinfo, /proc/cgroups)
and returns the backend for it. Every call takes ``rel``, the guest's
relative cgroup path from ``Paths.cgroup_name(name)``; only paths under the
engine's own ``vstui...`` directory are ever touched.
"""

from __future__ import annotations

from functools import cache

from engine.cgroups.data import CgroupStats, Limits

TYPE_CHECKING = False  # not typing's: typing.Protocol costs every `vserver NAME start`
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Protocol
else:
    Protocol = object  # at run time the class below only documents the interface


class Cgroups(Protocol):
    """What runtime, observe and the tools use; both backends implement it."""

    kind: str  # "v2", "v1" or "hybrid"
    has_cgroup2: bool  # the guest gets its own cgroup2 subtree (payload)

    def create(self, rel: str) -> None: ...
    def apply(self, rel: str, limits: Limits) -> None: ...
    def setup_ops(self, rel: str, limits: Limits) -> list[tuple[str, ...]]: ...
    def delegate_ops(self, rel: str, uid: int, gid: int) -> list[tuple[str, ...]]: ...
    def join_ops(self, rel: str) -> list[tuple[str, str]]: ...
    def remove_ops(self, rel: str) -> list[tuple[str, str]]: ...
    def memory_dir(self, rel: str) -> Path | None: ...
    def attach(self, rel: str, pid: int) -> None: ...
    def procs(self, rel: str) -> list[int]: ...
    def stats(self, rel: str) -> CgroupStats: ...
    def kill_all(self, rel: str, timeout: float = ...) -> int: ...
    def remove(self, rel: str) -> None: ...
    def exists(self, rel: str) -> bool: ...
    def paths(self, rel: str) -> list[Path]: ...
    def list_guests(self, base: str) -> list[str]: ...
    def freeze(self, rel: str, timeout: float = ...) -> None: ...
    def thaw(self, rel: str) -> None: ...
    def freezer_state(self, rel: str) -> str | None: ...


@cache
def manager() -> Cgroups:
    """The backend for this host, chosen once per process."""
    from engine.cgroups.probe import probe

    layout = probe()
    if layout.kind == "v2":
        from engine.cgroups.v2 import V2Cgroups

        return V2Cgroups(layout)
    if not layout.hierarchies:
        from engine.errors import VstuiError

        raise VstuiError("no cgroup file system is mounted; mount cgroup2 on /sys/fs/cgroup")
    from engine.cgroups.v1 import V1Cgroups

    return V1Cgroups(layout)


__all__ = ["CgroupStats", "Cgroups", "Limits", "manager"]
