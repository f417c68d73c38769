"""Guest snapshots: create, list, restore, delete, for every storage backend.

=========  ==========================================  ===============================
backend    a snapshot is                               where
=========  ==========================================  ===============================
btrfs      a read-only subvolume snapshot, O(1)        STORE/snapshots/NAME/SNAP
image      a sparse (reflinked where possible) copy    /var/lib/vservers/snapshots/
           of the image                                NAME/SNAP.img
none       ``cp -a --reflink=auto`` of the tree        /var/lib/vservers/snapshots/
                                                       NAME/SNAP/
=========  ==========================================  ===============================

Each has ``SNAP.json`` beside it: the time, the backend, the guest's NAME.conf
then, and the size where the backend knows it. A running guest is frozen
(cgroup freezer) for the instant of the snapshot and thawed after; an image
is also FIFREEZE'd, so the copy is a clean file system. Restore needs the
guest stopped and is atomic: the current tree stays until the restored one
is in place, then goes. Snapshot names follow the guest-name rules.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine import _libc
from engine._record import Record
from engine.errors import (
    GuestRunning,
    KernelError,
    QuotaError,
    VstuiError,
    require_root,
)
from engine.paths import Paths, check_name
from engine.rootfs import btrfs, loop, storage, volumes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# subprocess, shutil and tempfile (~15 ms together) are imported where copies
# happen: a btrfs snapshot, the common case, needs none of them

FORMAT = 1
FIFREEZE = 0xC0045877  # _IOWR('X', 119, int): include/uapi/linux/fs.h
FITHAW = 0xC0045878
PROGRESS_EVERY = 0.5  # seconds between two progress calls of a copy

Progress = Callable[[int], None]  # bytes copied so far


class Snapshot(Record):
    """One snapshot of a guest; sizes in bytes, None where the backend cannot tell."""

    __slots__ = _fields = ("guest", "name", "created", "backend", "size", "exclusive", "shared")
    guest: str
    name: str
    created: float  # epoch seconds
    backend: str
    size: int | None  # referenced (btrfs), allocated (image), used (none)
    exclusive: int | None  # what deleting it would free (btrfs)
    shared: int | None  # shared with the guest or other snapshots (btrfs)


# -- where -------------------------------------------------------------------------


def directory(paths: Paths, cfg: Any) -> Path:
    """The guest's snapshot directory (on the guest's own btrfs for btrfs guests)."""
    if storage.backend_of(cfg) == "btrfs":
        return volumes.store_of(paths, cfg.name).snapshots / cfg.name
    return paths.snapshots_dir / cfg.name


def _stored(paths: Paths, cfg: Any, snap: str) -> Path:
    suffix = ".img" if storage.backend_of(cfg) == "image" else ""
    return directory(paths, cfg) / f"{snap}{suffix}"


def default_name(now: float | None = None) -> str:
    """A UTC timestamp, valid as a name: ``20261204T153012Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def _load(paths: Paths, name: str) -> Any:
    from engine.config import load_guest, validate_name

    validate_name(name)
    return load_guest(paths, name)


def _check_snap(snap: str) -> str:
    from engine.config import validate_name

    return validate_name(snap, guest_word="snapshot")


def _running(paths: Paths, name: str) -> bool:
    from engine.runtime.state import init_identity

    return init_identity(paths, name) is not None


class _Locked:
    """The guest's start/stop lock for a snapshot operation; a stopped guest's
    run directory (made by the lock) goes again at the end."""

    def __init__(self, paths: Paths, name: str) -> None:
        from engine.runtime import state

        self.paths = paths
        self.name = name
        self.lock = state.lock(paths, name, 60.0)

    def __enter__(self) -> _Locked:
        return self

    def __exit__(self, *exc: object) -> None:
        from engine.runtime import state

        try:
            if state.read_value(self.paths.run_dir(self.name), "state") is None:
                state.remove(self.paths, self.name)
        finally:
            self.lock.release()


# -- create ------------------------------------------------------------------------


def create(paths: Paths, name: str, snap: str | None = None,
           progress: Progress | None = None) -> Snapshot:  # fmt: skip
    """Snapshot guest ``name`` as ``snap`` (default: the UTC time); running guests too."""
    cfg = _load(paths, name)
    require_root("taking a snapshot", name)
    snap = _check_snap(snap or default_name())
    with _Locked(paths, name):
        target = _stored(paths, cfg, snap)
        if os.path.lexists(target) or os.path.lexists(_meta(target)):
            raise VstuiError(f"snapshot '{snap}' exists already; choose another name or delete "
                             f"it (vserver {name} snapshot delete {snap})", name)  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = time.time()
        with storage.full_guard(paths, cfg, snapshot=True):
            try:
                size = _take(paths, cfg, target, progress)
                _write_meta(target, cfg, snap, created, size)
            except BaseException:
                _discard(target)
                raise
    return _read(paths, cfg, snap)


def _take(paths: Paths, cfg: Any, target: Path, progress: Progress | None) -> int | None:
    from engine.runtime.freezing import HeldStill

    backend = storage.backend_of(cfg)
    with HeldStill(paths, cfg.name):
        if backend == "btrfs":
            try:
                btrfs.snapshot(volumes.subvolume(paths, cfg.name), target, readonly=True)
            except KernelError as exc:
                raise _full(exc, cfg.name) from None
            return None
        if backend == "image":
            with _fs_frozen(paths, cfg):
                copy_image(paths.guest_image(cfg.name), target, cfg.name)
            return os.stat(target).st_blocks * 512
        if backend == "project":
            raise VstuiError("snapshots of project-quota guests are not supported; use "
                             "V_DISK_BACKEND=btrfs or image", cfg.name)  # fmt: skip
        copy_tree(paths.guest_root(cfg.name), target, cfg.name, progress)
    return tree_bytes(target)


def _full(exc: KernelError, name: str) -> VstuiError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return QuotaError("no space left for the snapshot; free space or grow the pool "
                          "(vserver --pool grow SIZE)", name)  # fmt: skip
    return exc


@contextmanager
def _fs_frozen(paths: Paths, cfg: Any) -> Iterator[None]:
    """FIFREEZE the mounted image (a running guest's) so its copy is a clean file system."""
    root = paths.guest_root(cfg.name)
    if storage.mounted_source(root) not in loop.devices_for(paths.guest_image(cfg.name)):
        yield  # not mounted: the image file is all there is
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
        try:
            yield
        finally:
            fcntl.ioctl(fd, FITHAW, 0)
    except OSError as exc:
        raise KernelError("FIFREEZE", str(root), exc.errno or errno.EIO, cfg.name) from None
    finally:
        os.close(fd)


def _cp(argv: list[str], what: str, guest: str, progress: Progress | None = None,
        watch: Path | None = None) -> None:  # fmt: skip
    """Run cp; with ``progress``, report the bytes ``watch``'s file system gained meanwhile."""
    import shutil
    import subprocess

    tool = shutil.which("cp") or "/bin/cp"
    proc = subprocess.Popen([tool, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    start = _fs_used(watch) if progress is not None and watch is not None else 0
    while progress is not None and watch is not None:
        try:
            proc.wait(PROGRESS_EVERY)
            break
        except subprocess.TimeoutExpired:
            progress(max(0, _fs_used(watch) - start))
    _, err = proc.communicate()
    if proc.returncode != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()] or [f"status {proc.returncode}"]
        full = "No space left" in err or "Disk quota exceeded" in err
        fix = "; free space on the host first" if full else ""
        raise VstuiError(f"{what}: {lines[-1]}{fix}", guest)


def _fs_used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def copy_image(source: Path, target: Path, guest: str) -> None:
    """A sparse copy (a reflink where the file system can): holes stay holes."""
    _cp(["--sparse=always", "--reflink=auto", "--", str(source), str(target)],
        f"copying {source}", guest)  # fmt: skip
    os.chmod(target, 0o600)


def copy_tree(source: Path, target: Path, guest: str, progress: Progress | None = None) -> None:
    """``cp -a --reflink=auto``: owners, modes, times, links, xattrs, ACLs, file caps."""
    _cp(["-a", "--reflink=auto", "--no-target-directory", "--", str(source), str(target)],
        f"copying {source}", guest, progress, target.parent)  # fmt: skip


def tree_bytes(top: Path) -> int:
    """Bytes allocated below ``top`` (each hard-linked inode once)."""
    from engine.rootfs.du import walk

    return walk(top)[0]


def _meta(stored: Path) -> Path:
    return stored.with_name(stored.name.removesuffix(".img") + ".json")


def _write_meta(target: Path, cfg: Any, snap: str, created: float, size: int | None) -> None:
    from engine.config import atomic_write

    meta = {
        "format": FORMAT, "guest": cfg.name, "name": snap, "created": created,
        "backend": storage.backend_of(cfg), "size": size,
        "config": cfg.path.read_text() if cfg.path else "",
    }  # fmt: skip
    atomic_write(_meta(target), json.dumps(meta, indent=1) + "\n", mode=0o600)


def _discard(target: Path) -> None:
    """Remove a snapshot's data and record, whatever state they are in."""
    from engine import safepath

    if btrfs.is_subvolume(target):
        btrfs.delete(target)
    elif target.is_dir() and not target.is_symlink():
        safepath.remove_tree(target)
    elif os.path.lexists(target):
        target.unlink()
    _meta(target).unlink(missing_ok=True)


# -- list --------------------------------------------------------------------------


def _read(paths: Paths, cfg: Any, snap: str) -> Snapshot:
    target = _stored(paths, cfg, snap)
    try:
        meta = json.loads(_meta(target).read_text())
    except (OSError, ValueError) as exc:
        raise VstuiError(f"no snapshot '{snap}' (see vserver {cfg.name} snapshot list)",
                         cfg.name) from exc  # fmt: skip
    size, exclusive, shared = meta.get("size"), None, None
    if meta.get("backend") == "btrfs" and btrfs.is_subvolume(target):
        group = btrfs.qgroup(target)
        if group is not None:
            size, exclusive = group.referenced, group.exclusive
            shared = group.referenced - group.exclusive
    return Snapshot(cfg.name, snap, float(meta.get("created", 0)), meta.get("backend", "?"),
                    size, exclusive, shared)  # fmt: skip


def list_snapshots(paths: Paths, name: str) -> list[Snapshot]:
    """The guest's snapshots, oldest first."""
    cfg = _load(paths, name)
    try:
        files = os.listdir(directory(paths, cfg))
    except FileNotFoundError:
        return []
    found = [_read(paths, cfg, f[: -len(".json")]) for f in files if f.endswith(".json")]
    return sorted(found, key=lambda s: (s.created, s.name))


def get(paths: Paths, name: str, snap: str) -> Snapshot:
    """One snapshot; VstuiError naming the list command when there is none."""
    return _read(paths, _load(paths, name), _check_snap(snap))


# -- restore and delete --------------------------------------------------------------


def _existing(paths: Paths, name: str, snap: str, what: str) -> tuple[Any, str]:
    """(config, name) of an existing snapshot, as root; one-line errors otherwise."""
    cfg = _load(paths, name)
    require_root(what, name)
    snap = _check_snap(snap)
    _read(paths, cfg, snap)  # VstuiError "no snapshot 'SNAP'" when it is not there
    return cfg, snap


def _stopped(paths: Paths, name: str, what: str) -> None:
    if _running(paths, name):
        raise GuestRunning(f"{what} needs the guest stopped; stop it first "
                           f"(vserver {name} stop)", name)  # fmt: skip


def restore(paths: Paths, name: str, snap: str) -> None:
    """Bring the guest's tree back to ``snap``; atomic, the guest stopped."""
    cfg, snap = _existing(paths, name, snap, "restoring a snapshot")
    with _Locked(paths, name):
        _stopped(paths, name, "restoring a snapshot")
        backend = storage.backend_of(cfg)
        source = _stored(paths, cfg, snap)
        with storage.full_guard(paths, cfg):
            if backend == "btrfs":
                _restore_btrfs(paths, cfg, source)
            elif backend == "image":
                _restore_image(paths, cfg, source)
            else:
                _swap_tree(paths.guest_root(cfg.name),
                           lambda tmp: copy_tree(source, tmp, cfg.name))  # fmt: skip


def _swap_tree(current: Path, make: Callable[[Path], None],
               discard: Callable[[Path], None] | None = None) -> None:  # fmt: skip
    """Make the new tree beside ``current``, then exchange them by rename; the old one
    goes only once the new one is in place, and any failure leaves ``current`` as it was."""
    fresh = current.with_name(f".{current.name}.restore")
    old = current.with_name(f".{current.name}.old")
    discard = discard or _remove_tree
    for leftover in (fresh, old):
        if os.path.lexists(leftover):
            discard(leftover)
    try:
        make(fresh)
    except BaseException:
        if os.path.lexists(fresh):
            discard(fresh)
        raise
    try:
        _libc.exchange(fresh, current)  # one step: no instant without a tree
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EXDEV):
            discard(fresh)
            raise
        try:
            _two_renames(current, fresh, old)  # a file system without RENAME_EXCHANGE
        except BaseException:
            discard(fresh)
            raise
        fresh = old
    discard(fresh)  # now the old tree


def _two_renames(current: Path, fresh: Path, old: Path) -> None:
    os.rename(current, old)
    try:
        os.rename(fresh, current)
    except BaseException:
        os.rename(old, current)
        raise


def _remove_tree(path: Path) -> None:
    from engine import safepath

    if path.is_dir() and not path.is_symlink():
        safepath.remove_tree(path)
    else:
        path.unlink()


def _restore_btrfs(paths: Paths, cfg: Any, source: Path) -> None:
    current = volumes.subvolume(paths, cfg.name)

    def make(fresh: Path) -> None:
        try:
            btrfs.snapshot(source, fresh)
        except KernelError as exc:
            raise _full(exc, cfg.name) from None
        if cfg.disk is not None:
            btrfs.set_limit(fresh, cfg.disk)

    _swap_tree(current, make, btrfs.delete)


def _restore_image(paths: Paths, cfg: Any, source: Path) -> None:
    image = paths.guest_image(cfg.name)
    fresh = image.with_name(f".{image.name}.restore")
    fresh.unlink(missing_ok=True)
    try:
        copy_image(source, fresh, cfg.name)
        os.replace(fresh, image)  # atomic: the old image is whole until this instant
    finally:
        fresh.unlink(missing_ok=True)
    size = image.stat().st_size
    if cfg.disk != size:  # the snapshot's size comes back with it
        from engine.config import update_config

        update_config(paths, cfg.name, {"V_DISK": storage._config_size(size)})


def delete(paths: Paths, name: str, snap: str) -> None:
    cfg, snap = _existing(paths, name, snap, "deleting a snapshot")
    with _Locked(paths, name):
        _discard(_stored(paths, cfg, snap))
    _rmdir_empty(directory(paths, cfg))


def _rmdir_empty(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # other snapshots remain, or it is gone


def remove_all(paths: Paths, name: str) -> None:
    """Every snapshot of ``name`` (the guest is being deleted), whatever its backend was."""
    check_name(name)
    from engine import safepath

    places = [paths.snapshots_dir / name, paths.vservers_dir / volumes.VSERVERS_SNAPSHOTS / name]
    if storage.pool_exists(paths):
        from engine.rootfs import pool

        pool.require(paths)
        places.append(paths.pool_dir / pool.SNAPSHOTS / name)
    for place in places:
        if not place.is_dir() or place.is_symlink():
            continue
        for entry in sorted(place.iterdir()):
            if entry.suffix != ".json":
                _discard(entry)
        safepath.remove_tree(place)
    _rmdir_empty(paths.vservers_dir / volumes.VSERVERS_SNAPSHOTS)  # /vservers stays clean


# -- reading a snapshot or a stopped tree (export, clone) ------------------------------


@contextmanager
def readable_tree(paths: Paths, cfg: Any, snap: str | None = None) -> Iterator[Path]:
    """A directory holding the guest's files as of ``snap`` (None: the stopped tree).

    Image guests and image snapshots are loop-mounted read-only for the
    while; nothing written there reaches the guest.
    """
    backend = storage.backend_of(cfg)
    if snap is not None:
        source = _stored(paths, cfg, snap)
    elif backend == "image":
        source = paths.guest_image(cfg.name)
    elif backend == "btrfs":
        source = volumes.subvolume(paths, cfg.name)
    else:
        source = paths.guest_root(cfg.name)
    if backend != "image":
        yield source
        return
    with mounted_image(paths, source, cfg.name) as tree:
        yield tree


@contextmanager
def mounted_image(paths: Paths, image: Path, guest: str) -> Iterator[Path]:
    """``image`` loop-attached read-only and mounted on a private directory."""
    import tempfile

    paths.state_dir.mkdir(parents=True, exist_ok=True)
    point = Path(tempfile.mkdtemp(prefix=".mnt-", dir=paths.state_dir))
    os.chmod(point, 0o700)
    dev = loop.attach(image, read_only=True)
    try:
        flags = _libc.MS_RDONLY | _libc.MS_NODEV | _libc.MS_NOSUID
        _libc.mount(dev.device, str(point), "ext4", flags, "noload")
    except OSError as exc:
        loop.detach(dev)
        os.rmdir(point)
        raise KernelError.from_oserror("mount", exc, guest, hint="run e2fsck -f on the image") \
            from exc  # fmt: skip
    os.close(dev.fd)
    try:
        yield point
    finally:
        storage.RootHandle(point, mounted=True, image=image).release()
        os.rmdir(point)
