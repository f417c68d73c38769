"""Side groups in the cgroup v2 hierarchy (chbind's BPF-filtered group).

BPF cgroup programs attach only to cgroup v2 groups, on every layout (a
hybrid host too: its v2 mount has no controllers, which BPF does not need).
These are engine cgroups like a guest's (the first component starts with
``vstui``), made, joined and removed here so that no other part writes
cgroup files itself.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine import procfs
from engine.cgroups.base import check_rel


def cgroup2_mounts() -> list[Path]:
    """Every place a cgroup v2 hierarchy is mounted in this mount namespace."""
    return [Path(m.mount_point) for m in procfs.mountinfo() if m.fstype == "cgroup2"]


def make_group(rel: str) -> Path:
    """Create ``rel`` (and its parents) on the first cgroup v2 mount; its directory."""
    mounts = cgroup2_mounts()
    if not mounts:
        raise FileNotFoundError(errno.ENOENT, "no cgroup v2 hierarchy is mounted", "cgroup2")
    directory = mounts[0].joinpath(*check_rel(rel))
    directory.parent.mkdir(exist_ok=True)
    directory.mkdir()
    return directory


def join_group(directory: Path, pid: int) -> None:
    """Move ``pid`` (the whole process) into the group."""
    fd = os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)


def remove_group(directory: Path) -> None:
    """Remove the group and its parent once empty; kept while a process still lives in it."""
    for path in (directory, directory.parent):
        try:
            path.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
                raise


def own_group(pid: int | str = "self") -> str | None:
    """The cgroup v2 path of ``pid`` as it sees it ("/" inside its own cgroup namespace)."""
    return procfs.cgroups(pid).get("")
