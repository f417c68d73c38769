"""The ``btrfs`` backend: each guest tree a subvolume, its V_DISK a qgroup limit.

Where the subvolume lives (its *store*):

- the pool, when ``vserver --pool create`` made one: ``pool/guests/NAME``,
  bind-mounted on /vservers/NAME while the guest runs (as an image is);
- else /vservers itself when it is on btrfs: /vservers/NAME is the subvolume.

Snapshots go to the same file system (``pool/snapshots/NAME/`` or
``/vservers/.snapshots/NAME/``): a snapshot is O(1) only there. Growing and
shrinking are a qgroup change, online; shrinking below use is refused.
btrfs has no inode quota: V_INODES is refused when the config is read.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine import _libc
from engine._record import Record
from engine.errors import KernelError, QuotaError, VstuiError
from engine.paths import Paths, check_name
from engine.rootfs import btrfs, pool
from engine.rootfs.storage import DiskUsage, RootHandle, top_mount

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VSERVERS_SNAPSHOTS = ".snapshots"


class Store(Record):
    """A btrfs place for guests: their subvolumes' directory and the snapshots'."""

    __slots__ = _fields = ("guests", "snapshots", "pooled")
    guests: Path
    snapshots: Path
    pooled: bool  # True: bind-mount the subvolume on /vservers/NAME at start


def _pool_store(paths: Paths) -> Store:
    return Store(paths.pool_dir / pool.GUESTS, paths.pool_dir / pool.SNAPSHOTS, True)


def _vservers_store(paths: Paths) -> Store:
    return Store(paths.vservers_dir, paths.vservers_dir / VSERVERS_SNAPSHOTS, False)


def store_for_new(paths: Paths, cfg: Any) -> Store:
    """Where a new btrfs guest goes: the pool when there is one, else /vservers on btrfs."""
    if pool.exists(paths):
        pool.require(paths)
        return _pool_store(paths)
    if btrfs.is_btrfs(paths.vservers_dir):
        if cfg.disk is not None and not btrfs.quota_enabled(paths.vservers_dir):
            raise QuotaError(
                f"V_DISK needs btrfs quotas, which are off on {paths.vservers_dir}; enable them "
                f"(btrfs quota enable {paths.vservers_dir}) or make a pool "
                "(vserver --pool create 20G)",
                cfg.name,
            )
        return _vservers_store(paths)
    raise QuotaError(
        f"V_DISK_BACKEND=btrfs needs {paths.vservers_dir} on btrfs or a pool; make one: "
        "vserver --pool create 20G",
        cfg.name,
    )


def store_of(paths: Paths, name: str) -> Store:
    """The store holding guest ``name``'s subvolume; VstuiError naming the fix if none does."""
    if pool.exists(paths):
        pool.require(paths)
        if os.path.lexists(paths.pool_dir / pool.GUESTS / name):
            return _pool_store(paths)
    if btrfs.is_subvolume(paths.guest_root(name)):
        return _vservers_store(paths)
    where = "the pool" if pool.exists(paths) else f"{paths.vservers_dir} (not btrfs, no pool)"
    raise VstuiError(
        f"no btrfs subvolume for this guest in {where}; restore it from a backup "
        f"(vserver {name} build -t export:FILE) or delete the guest",
        name,
    )


def find(paths: Paths, name: str) -> Path | None:
    """The guest's subvolume, or None (for existence checks and removal)."""
    check_name(name)
    try:
        return store_of(paths, name).guests / name
    except VstuiError:
        return None


def subvolume(paths: Paths, name: str) -> Path:
    return store_of(paths, name).guests / name


def create(cfg: Any, paths: Paths) -> None:
    """A new subvolume for ``cfg`` with its limit; the mount point too when pooled."""
    store = store_for_new(paths, cfg)
    store.guests.mkdir(exist_ok=True, mode=0)
    path = store.guests / cfg.name
    _create_limited(path, cfg, lambda: btrfs.create_subvolume(path))
    if store.pooled:
        paths.guest_root(cfg.name).mkdir(mode=0o755)
    os.chown(path, 0, 0)
    os.chmod(path, 0o755)


def _create_limited(path: Path, cfg: Any, make: Any) -> None:
    try:
        make()
    except KernelError as exc:
        raise _full(exc, cfg.name) from None
    try:
        if cfg.disk is not None:
            btrfs.set_limit(path, cfg.disk)
    except BaseException:
        btrfs.delete(path)
        raise


def _full(exc: KernelError, name: str) -> VstuiError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return QuotaError("the btrfs file system is full; free space or grow the pool "
                          "(vserver --pool grow SIZE)", name)  # fmt: skip
    return exc


def clone_from(cfg: Any, paths: Paths, source: Path) -> None:
    """A new guest's subvolume as a writable snapshot of ``source`` (O(1)), with its limit."""
    store = store_for_new(paths, cfg)
    path = store.guests / cfg.name
    _create_limited(path, cfg, lambda: btrfs.snapshot(source, path))
    if store.pooled:
        paths.guest_root(cfg.name).mkdir(mode=0o755)


def prepare_root(cfg: Any, paths: Paths) -> RootHandle:
    """The tree to pivot into: the subvolume itself, or bound on /vservers/NAME from the pool."""
    store = store_of(paths, cfg.name)
    root = paths.guest_root(cfg.name)
    if not store.pooled:
        return RootHandle(root)
    entry = top_mount(root)
    if entry is not None:
        if _is_ours(paths, cfg.name, entry):
            return RootHandle(root, mounted=True)  # a supervisor before us bound it
        raise VstuiError(f"{entry.source} is mounted on {root}; unmount it (umount {root})",
                         cfg.name)  # fmt: skip
    root.mkdir(mode=0o755, exist_ok=True)
    try:
        _libc.mount(str(store.guests / cfg.name), str(root), None, _libc.MS_BIND, None)
    except OSError as exc:
        raise KernelError.from_oserror("mount", exc, cfg.name) from exc
    return RootHandle(root, mounted=True)


def _is_ours(paths: Paths, name: str, entry: Any) -> bool:
    """Is ``entry`` (the top mount on /vservers/NAME) this guest's pool subvolume?"""
    return entry.root == f"/{pool.GUESTS}/{name}" and entry.source == pool.mounted_device(paths)


def release(name: str, paths: Paths) -> None:
    """Unbind the pool subvolume from /vservers/NAME (only ours); idempotent."""
    check_name(name)
    if not pool.exists(paths) or pool.mounted_device(paths) is None:
        return
    root = paths.guest_root(name)
    for _ in range(8):
        entry = top_mount(root)
        if entry is None or not _is_ours(paths, name, entry):
            return
        RootHandle(root, mounted=True).release()


def usage(cfg: Any, paths: Paths) -> DiskUsage:
    """Referenced bytes and the limit, from the qgroup (sysfs); btrfs counts no inodes."""
    group = btrfs.qgroup(subvolume(paths, cfg.name))
    if group is None:
        return DiskUsage(None, None, None, None)
    return DiskUsage(group.referenced, group.limit, None, None)


def used_now(cfg: Any, paths: Paths) -> int:
    """Referenced bytes after a commit (qgroup numbers lag until one)."""
    path = subvolume(paths, cfg.name)
    btrfs.sync(path)
    group = btrfs.qgroup(path)
    return group.referenced if group is not None else 0


def set_limit(cfg: Any, paths: Paths, size: int | None) -> None:
    """A new limit, online: a qgroup change, no resize step."""
    path = subvolume(paths, cfg.name)
    if size is not None and not btrfs.quota_enabled(path):
        raise QuotaError(f"btrfs quotas are off on the file system of {path}; enable them "
                         f"(btrfs quota enable {path})", cfg.name)  # fmt: skip
    btrfs.set_limit(path, size)


def remove(paths: Paths, name: str) -> None:
    """Delete the guest's subvolume (nested ones too) and its pool mount point."""
    path = find(paths, name)
    if path is not None:
        btrfs.delete(path)
        if path.parent != paths.vservers_dir:
            root = paths.guest_root(name)
            if root.is_dir() and not root.is_symlink():
                root.rmdir()
