"""btrfs through its ioctls and sysfs (no ``btrfs`` tool on the hot paths).

Subvolumes, read-only snapshots, quota groups (qgroups) and online resize,
as include/uapi/linux/btrfs.h defines them. Usage figures come from
/sys/fs/btrfs/FSID/qgroups/0_ID/ (kernel 5.9+). Facts this module relies on
(Documentation/ch-quota-intro.rst; fs/btrfs/qgroup.c):

- a limit is set on *referenced* bytes, and any exclusive limit is cleared:
  with an exclusive limit a snapshot would let the guest write about twice
  its quota (canonical/lxd#7062);
- a new subvolume gets its own 0/ID qgroup but is *not* counted in its
  parent's: a nested subvolume escapes the parent's limit, so guests may not
  create them (engine.seccomp refuses the create/snapshot ioctls);
- enabling quotas starts a rescan; limits are enforced only after it, so
  ``enable_quota`` waits for it;
- deleting a subvolume leaves its qgroup until the cleaner drops it (kernel
  6.8+ then removes it, older kernels keep it stale); ``delete`` destroys the
  qgroup first where the kernel allows.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from engine._record import Record
from engine.errors import KernelError

_MAGIC = 0x94
_W, _R, _WR = 1, 2, 3


def _ioc(direction: int, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | _MAGIC << 8 | nr


VOL_ARGS_SIZE = 4096  # struct btrfs_ioctl_vol_args(_v2)
RESIZE = _ioc(_W, 3, VOL_ARGS_SIZE)
INO_LOOKUP = _ioc(_WR, 18, 4096)
SNAP_CREATE_V2 = _ioc(_W, 23, VOL_ARGS_SIZE)
SUBVOL_CREATE_V2 = _ioc(_W, 24, VOL_ARGS_SIZE)
SUBVOL_GETFLAGS = _ioc(_R, 25, 8)
SUBVOL_SETFLAGS = _ioc(_W, 26, 8)
FS_INFO = _ioc(_R, 31, 1024)
QUOTA_CTL = _ioc(_WR, 40, 16)
QGROUP_CREATE = _ioc(_W, 42, 16)
QGROUP_LIMIT = _ioc(_R, 43, 48)
QUOTA_RESCAN_WAIT = _ioc(0, 46, 0)
SNAP_DESTROY_V2 = _ioc(_W, 63, VOL_ARGS_SIZE)

SUBVOL_RDONLY = 1 << 1
QUOTA_CTL_ENABLE = 1
QGROUP_LIMIT_MAX_RFER = 1 << 0
QGROUP_LIMIT_MAX_EXCL = 1 << 1
CLEAR_VALUE = (1 << 64) - 1  # "no limit" in a qgroup limit field
FIRST_FREE_OBJECTID = 256  # the root directory inode of every subvolume
NAME_MAX_V2 = 4039  # BTRFS_SUBVOL_NAME_MAX
SYS_FS = Path("/sys/fs/btrfs")


class Qgroup(Record):
    """A subvolume's quota group: bytes referenced and exclusive, the limit (None: none)."""

    __slots__ = _fields = ("referenced", "exclusive", "limit")
    referenced: int
    exclusive: int
    limit: int | None


def _open_dir(path: str | os.PathLike[str]) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelError.from_oserror("open", exc) from exc


def _ioctl(fd: int, request: int, arg: bytearray | int, what: str,
           target: str | os.PathLike[str]) -> None:  # fmt: skip
    try:
        if isinstance(arg, bytearray):
            fcntl.ioctl(fd, request, arg, True)  # the kernel writes results back into arg
        else:
            fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise KernelError(what, os.fspath(target), exc.errno or errno.EIO) from None


def _vol_args(name: str = "", fd: int = 0, flags: int = 0) -> bytearray:
    raw = os.fsencode(name)
    if len(raw) > NAME_MAX_V2 or "/" in name:
        raise KernelError("btrfs", name, errno.ENAMETOOLONG if raw else errno.EINVAL)
    args = bytearray(VOL_ARGS_SIZE)
    struct.pack_into("<qQQ", args, 0, fd, 0, flags)  # fd, transid, flags; then 32 bytes union
    args[56 : 56 + len(raw)] = raw
    return args


def is_btrfs(path: str | os.PathLike[str]) -> bool:
    """Is ``path`` (a directory) on a btrfs file system?"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, FS_INFO, bytearray(1024), True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def is_subvolume(path: str | os.PathLike[str]) -> bool:
    """A subvolume's root directory is inode 256 on btrfs."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_ino == FIRST_FREE_OBJECTID and is_btrfs(path)


def fsid(path: str | os.PathLike[str]) -> str:
    """The file system's UUID, as /sys/fs/btrfs names it."""
    fd = _open_dir(path)
    try:
        info = bytearray(1024)
        _ioctl(fd, FS_INFO, info, "BTRFS_IOC_FS_INFO", path)
    finally:
        os.close(fd)
    raw = info[16:32].hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def subvolume_id(path: str | os.PathLike[str]) -> int:
    """The id of the subvolume holding ``path`` (BTRFS_IOC_INO_LOOKUP, treeid 0)."""
    fd = _open_dir(path)
    try:
        args = bytearray(4096)
        struct.pack_into("<QQ", args, 0, 0, FIRST_FREE_OBJECTID)
        _ioctl(fd, INO_LOOKUP, args, "BTRFS_IOC_INO_LOOKUP", path)
    finally:
        os.close(fd)
    return struct.unpack_from("<Q", args, 0)[0]


def _in_parent(path: Path, request: int, what: str, source_fd: int = 0, flags: int = 0) -> None:
    parent = _open_dir(path.parent)
    try:
        _ioctl(parent, request, _vol_args(path.name, source_fd, flags), what, path)
    finally:
        os.close(parent)


def create_subvolume(path: str | os.PathLike[str]) -> None:
    """A new, empty subvolume at ``path`` (its parent must exist)."""
    _in_parent(Path(path), SUBVOL_CREATE_V2, "BTRFS_IOC_SUBVOL_CREATE_V2")


def snapshot(source: str | os.PathLike[str], dest: str | os.PathLike[str],
             readonly: bool = False) -> None:  # fmt: skip
    """Snapshot subvolume ``source`` at ``dest``: O(1), whatever its size.

    The kernel flushes the source's dirty data first (btrfs_start_delalloc_snapshot).
    """
    src = _open_dir(source)
    try:
        _in_parent(Path(dest), SNAP_CREATE_V2, "BTRFS_IOC_SNAP_CREATE_V2", src,
                   SUBVOL_RDONLY if readonly else 0)  # fmt: skip
    finally:
        os.close(src)


def readonly(path: str | os.PathLike[str]) -> bool:
    fd = _open_dir(path)
    try:
        flags = bytearray(8)
        _ioctl(fd, SUBVOL_GETFLAGS, flags, "BTRFS_IOC_SUBVOL_GETFLAGS", path)
        return bool(struct.unpack("<Q", flags)[0] & SUBVOL_RDONLY)
    finally:
        os.close(fd)


def set_readonly(path: str | os.PathLike[str], value: bool) -> None:
    fd = _open_dir(path)
    try:
        flags = bytearray(8)
        _ioctl(fd, SUBVOL_GETFLAGS, flags, "BTRFS_IOC_SUBVOL_GETFLAGS", path)
        old = struct.unpack("<Q", flags)[0]
        new = old | SUBVOL_RDONLY if value else old & ~SUBVOL_RDONLY
        if new != old:
            _ioctl(fd, SUBVOL_SETFLAGS, bytearray(struct.pack("<Q", new)),
                   "BTRFS_IOC_SUBVOL_SETFLAGS", path)  # fmt: skip
    finally:
        os.close(fd)


def nested_subvolumes(path: str | os.PathLike[str]) -> list[Path]:
    """Subvolumes below ``path`` (not itself), deepest first; symlinks never followed."""
    found: list[Path] = []
    stack = [Path(path)]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    child = Path(entry.path)
                    if entry.inode() == FIRST_FREE_OBJECTID:
                        found.append(child)
                    stack.append(child)
        except OSError:
            continue
    return sorted(found, key=lambda p: -len(p.parts))


def delete(path: str | os.PathLike[str]) -> None:
    """Delete subvolume ``path`` with any nested ones (bottom-up), read-only or not."""
    path = Path(path)
    for inner in [*nested_subvolumes(path), path]:
        if readonly(inner):
            set_readonly(inner, False)
        _destroy_qgroup(inner)
        _in_parent(inner, SNAP_DESTROY_V2, "BTRFS_IOC_SNAP_DESTROY_V2")


def _destroy_qgroup(path: Path) -> None:
    """Remove the 0/ID qgroup before the subvolume goes, where the kernel allows it.

    Kernels before 6.8 would keep it stale (a later create of the same id then
    fails with EEXIST, canonical/lxd#11210); 6.8+ refuse while the subvolume
    lives (EBUSY) and drop it themselves with the subvolume.
    """
    try:
        qgroup = subvolume_id(path)
        fd = _open_dir(path)
    except KernelError:
        return
    try:
        fcntl.ioctl(fd, QGROUP_CREATE, bytearray(struct.pack("<QQ", 0, qgroup)), True)
    except OSError:
        pass  # EBUSY (live subvolume, 6.8+), ENOTCONN (quotas off), ENOENT
    finally:
        os.close(fd)


# -- quotas ----------------------------------------------------------------------


def enable_quota(mount: str | os.PathLike[str]) -> None:
    """Turn qgroups on and wait for the initial rescan (limits hold only after it)."""
    fd = _open_dir(mount)
    try:
        _ioctl(fd, QUOTA_CTL, bytearray(struct.pack("<QQ", QUOTA_CTL_ENABLE, 0)),
               "BTRFS_IOC_QUOTA_CTL", mount)  # fmt: skip
        _ioctl(fd, QUOTA_RESCAN_WAIT, 0, "BTRFS_IOC_QUOTA_RESCAN_WAIT", mount)
    finally:
        os.close(fd)


def set_limit(path: str | os.PathLike[str], size: int | None) -> None:
    """Limit the referenced bytes of subvolume ``path`` (None: no limit); no exclusive limit."""
    fd = _open_dir(path)
    try:
        args = bytearray(48)  # qgroupid 0: the subvolume of fd
        flags = QGROUP_LIMIT_MAX_RFER | QGROUP_LIMIT_MAX_EXCL
        struct.pack_into("<QQQQQQ", args, 0, 0, flags,
                         CLEAR_VALUE if size is None else size, CLEAR_VALUE, 0, 0)  # fmt: skip
        _ioctl(fd, QGROUP_LIMIT, args, "BTRFS_IOC_QGROUP_LIMIT", path)
    finally:
        os.close(fd)


def sync(path: str | os.PathLike[str]) -> None:
    """syncfs(2): commits the transaction, after which qgroup numbers are exact."""
    import ctypes

    fd = _open_dir(path)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise KernelError("syncfs", os.fspath(path), ctypes.get_errno())
    finally:
        os.close(fd)


def qgroup(path: str | os.PathLike[str]) -> Qgroup | None:
    """Usage and limit of the subvolume at ``path`` from sysfs; None when quotas are off."""
    base = SYS_FS / fsid(path) / "qgroups" / f"0_{subvolume_id(path)}"
    try:
        referenced = int((base / "referenced").read_text())
        exclusive = int((base / "exclusive").read_text())
        flags = int((base / "limit_flags").read_text())
        limit = int((base / "max_referenced").read_text())
    except (OSError, ValueError):
        return None
    return Qgroup(referenced, exclusive, limit if flags & QGROUP_LIMIT_MAX_RFER else None)


def quota_enabled(path: str | os.PathLike[str]) -> bool:
    try:
        return (SYS_FS / fsid(path) / "qgroups").is_dir()
    except KernelError:
        return False


def resize_max(mount: str | os.PathLike[str]) -> None:
    """Grow the file system to its (single) device's new size, online."""
    fd = _open_dir(mount)
    args = bytearray(VOL_ARGS_SIZE)  # struct btrfs_ioctl_vol_args: s64 fd, then the name
    args[8:11] = b"max"
    try:
        _ioctl(fd, RESIZE, args, "BTRFS_IOC_RESIZE", mount)
    finally:
        os.close(fd)
