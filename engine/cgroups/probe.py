"""Which cgroup layout this host has: v2, v1, or hybrid (v1 controllers + a v2 mount).

Decided once, from /proc/self/mountinfo, /proc/cgroups and the v2 mount's
``cgroup.controllers``. The parsing functions take text so they can be
tested on any host's files.
"""

from __future__ import annotations

from pathlib import Path

from engine import procfs
from engine._record import Record

# The controllers a guest's limits and stats use. cpuset is left out on
# purpose: a v1 cpuset child starts with empty cpus/mems and rejects tasks.
WANTED_V1 = frozenset({"memory", "pids", "cpu", "cpuacct", "freezer"})
WANTED_V2 = frozenset({"memory", "pids", "cpu"})


class CgroupMount(Record):
    """One line of mountinfo for a cgroup or cgroup2 file system."""

    __slots__ = _fields = ("mount_point", "version", "device", "root", "options")
    mount_point: Path
    version: int  # 1 or 2
    device: str  # major:minor, one per hierarchy
    root: str  # the hierarchy's directory mounted here ("/" for the whole tree)
    options: frozenset[str]  # super options: controllers and name=X for v1


class Hierarchy(Record):
    """A hierarchy the engine uses: where it is mounted and what it controls."""

    __slots__ = _fields = ("mount", "version", "controllers")
    mount: Path
    version: int
    controllers: frozenset[str]


class Layout(Record):
    """The host's layout: ``kind`` is "v2", "v1" or "hybrid"."""

    __slots__ = _fields = ("kind", "hierarchies")
    kind: str
    hierarchies: tuple[Hierarchy, ...]

    def controller(self, name: str) -> Hierarchy | None:
        for h in self.hierarchies:
            if name in h.controllers:
                return h
        return None

    @property
    def unified(self) -> Hierarchy | None:
        return next((h for h in self.hierarchies if h.version == 2), None)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """Every cgroup/cgroup2 mount, in mountinfo order (engine.procfs reads the lines)."""
    return [
        CgroupMount(mount_point=Path(m.mount_point), version=2 if m.fstype == "cgroup2" else 1,
                    device=m.device, root=m.root, options=frozenset(m.super_options.split(",")))
        for m in procfs.parse_mountinfo(text)
        if m.fstype in ("cgroup", "cgroup2")
    ]  # fmt: skip


def parse_proc_cgroups(text: str) -> frozenset[str]:
    """Names of the controllers the kernel has enabled (/proc/cgroups)."""
    enabled = set()
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split()
        if len(parts) >= 4 and parts[3] == "1":
            enabled.add(parts[0])
    return frozenset(enabled)


def decide(
    mounts: list[CgroupMount], enabled: frozenset[str], v2_controllers: frozenset[str]
) -> Layout:
    """Pick the hierarchies to use.

    v2 when the unified mount offers every controller we want that v1 does
    not hold; otherwise v1 for each wanted controller, plus the v2 mount (if
    any) so the guest's cgroup namespace is clean there too (hybrid).
    """
    seen: set[str] = set()
    v1: list[Hierarchy] = []
    unified: Path | None = None
    # Whole-tree mounts first; a bind mount of a sub-directory is a fallback.
    for m in sorted(mounts, key=lambda m: m.root != "/"):
        if m.device in seen:
            continue
        seen.add(m.device)
        if m.version == 2:
            unified = unified or m.mount_point
            continue
        controllers = (m.options & enabled) & WANTED_V1
        if controllers:
            v1.append(Hierarchy(m.mount_point, 1, frozenset(controllers)))
    v1_held = frozenset().union(*(h.controllers for h in v1)) if v1 else frozenset()
    if unified is not None and not (v1_held & WANTED_V2):
        v2 = Hierarchy(unified, 2, v2_controllers & WANTED_V2)
        return Layout("v2", (v2,))
    if unified is not None:
        return Layout("hybrid", (*v1, Hierarchy(unified, 2, frozenset())))
    return Layout("v1", tuple(v1))


def _read(path: str | Path) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def probe() -> Layout:
    """The running host's layout."""
    mounts = parse_mountinfo(_read("/proc/self/mountinfo"))
    enabled = parse_proc_cgroups(_read("/proc/cgroups"))
    v2_mount = next((m.mount_point for m in mounts if m.version == 2), None)
    v2_controllers = (
        frozenset(_read(v2_mount / "cgroup.controllers").split()) if v2_mount else frozenset()
    )
    return decide(mounts, enabled, v2_controllers)
