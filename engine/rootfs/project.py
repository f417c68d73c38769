"""Project quota on the host file system (V_DISK_BACKEND=project).

The guest root gets a project id with the inherit flag (FS_IOC_FSSETXATTR),
so everything created below it is charged to that project; the limit is set
with quotactl_fd(2) (Linux 5.14+) on the guest root itself. Needs a host
file system with project quota on (ext4 ``-O project,quota`` mounted with
``prjquota``, or XFS with ``prjquota``) and a kernel with quota support.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import zlib
from pathlib import Path
from typing import Any

from engine._libc import _libc
from engine.errors import QuotaError
from engine.paths import Paths

# include/uapi/linux/fs.h
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_XFLAG_PROJINHERIT = 0x200
# include/uapi/linux/quota.h
Q_GETINFO = 0x800005
Q_GETQUOTA = 0x800007
Q_SETQUOTA = 0x800008
USRQUOTA, PRJQUOTA = 0, 2  # GRPQUOTA (1) is not used
QIF_BLIMITS = 1
QIF_ILIMITS = 4
QIF_DQBLKSIZE = 1024
_SYS_QUOTACTL_FD = {"x86_64": 443, "aarch64": 443}.get(platform.machine(), 443)

UNSUPPORTED = (
    "host file system does not support project quota here ({why}); " "use V_DISK_BACKEND=image"
)


class FsXattr(ctypes.Structure):
    _fields_ = [
        ("xflags", ctypes.c_uint32),
        ("extsize", ctypes.c_uint32),
        ("nextents", ctypes.c_uint32),
        ("projid", ctypes.c_uint32),
        ("cowextsize", ctypes.c_uint32),
        ("pad", ctypes.c_ubyte * 8),
    ]


class DqInfo(ctypes.Structure):
    _fields_ = [
        ("bgrace", ctypes.c_uint64),
        ("igrace", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("valid", ctypes.c_uint32),
    ]


class DqBlk(ctypes.Structure):
    _fields_ = [
        ("bhardlimit", ctypes.c_uint64),
        ("bsoftlimit", ctypes.c_uint64),
        ("curspace", ctypes.c_uint64),
        ("ihardlimit", ctypes.c_uint64),
        ("isoftlimit", ctypes.c_uint64),
        ("curinodes", ctypes.c_uint64),
        ("btime", ctypes.c_uint64),
        ("itime", ctypes.c_uint64),
        ("valid", ctypes.c_uint32),
    ]


def quotactl_fd(fd: int, cmd: int, kind: int, qid: int, addr: ctypes.Structure) -> None:
    full = ctypes.c_uint((cmd << 8) | kind)
    result = _libc.syscall(
        _SYS_QUOTACTL_FD, ctypes.c_uint(fd), full, ctypes.c_uint(qid), ctypes.byref(addr)
    )
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)


def supported(path: Path) -> str | None:
    """None when project quota is on for ``path``'s file system, else why not."""
    fd = _open_dir(path)
    try:
        attr = FsXattr()
        try:
            fcntl.ioctl(fd, FS_IOC_FSGETXATTR, attr)
        except OSError as exc:
            return f"no project ids: {exc.strerror}"
        try:
            quotactl_fd(fd, Q_GETINFO, PRJQUOTA, 0, DqInfo())
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                return "kernel has no quotactl_fd (needs Linux 5.14)"
            if exc.errno == errno.ESRCH:
                return "project quota is not enabled; mount it with prjquota"
            return f"quotactl: {exc.strerror}"
        return None
    finally:
        os.close(fd)


def _require(cfg: Any, path: Path) -> None:
    why = supported(path)
    if why is not None:
        raise QuotaError(UNSUPPORTED.format(why=why), cfg.name)


def project_id(cfg: Any, paths: Paths) -> int:
    """The guest's project id: its context id, else a stable hash of root and name."""
    if getattr(cfg, "context", None):
        return int(cfg.context)
    return (1 << 20) + zlib.crc32(f"{paths.root}\0{cfg.name}".encode()) % (1 << 30)


def read_project(root: Path) -> int:
    fd = _open_dir(root)
    try:
        attr = FsXattr()
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, attr)
        return attr.projid
    finally:
        os.close(fd)


def _limits(size: int | None, inodes: int | None) -> DqBlk:
    blk = DqBlk()
    blk.bhardlimit = blk.bsoftlimit = (size or 0) // QIF_DQBLKSIZE
    blk.ihardlimit = blk.isoftlimit = inodes or 0
    blk.valid = QIF_BLIMITS | QIF_ILIMITS
    return blk


def _setquota(root: Path, projid: int, blk: DqBlk, guest: str) -> None:
    fd = _open_dir(root)
    try:
        quotactl_fd(fd, Q_SETQUOTA, PRJQUOTA, projid, blk)
    except OSError as exc:
        raise QuotaError(f"setting the project quota of {root}: {exc.strerror}", guest) from exc
    finally:
        os.close(fd)


def assign(cfg: Any, paths: Paths, root: Path) -> None:
    """Give a new, empty guest root its project id (inherited) and limit."""
    _require(cfg, root.parent)
    fd = _open_dir(root)
    try:
        attr = FsXattr()
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, attr)
        attr.projid = project_id(cfg, paths)
        attr.xflags |= FS_XFLAG_PROJINHERIT
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR, attr)
    finally:
        os.close(fd)
    _setquota(root, attr.projid, _limits(cfg.disk, cfg.inodes), cfg.name)


def check(cfg: Any, paths: Paths, root: Path) -> None:
    """At start: quota still on and the limit as configured."""
    _require(cfg, root)
    _setquota(root, read_project(root), _limits(cfg.disk, cfg.inodes), cfg.name)


def usage(cfg: Any, paths: Paths, root: Path) -> Any:
    from engine.rootfs.storage import DiskUsage

    _require(cfg, root)
    blk = DqBlk()
    fd = _open_dir(root)
    try:
        quotactl_fd(fd, Q_GETQUOTA, PRJQUOTA, read_project(root), blk)
    finally:
        os.close(fd)
    limit = blk.bhardlimit * QIF_DQBLKSIZE or None
    return DiskUsage(blk.curspace, limit, blk.curinodes, blk.ihardlimit or None)


def set_limit(cfg: Any, paths: Paths, root: Path, size: int) -> None:
    _require(cfg, root)
    _setquota(root, read_project(root), _limits(size, cfg.inodes), cfg.name)


def clear(cfg: Any, paths: Paths, root: Path) -> None:
    """Drop the project's limits when the guest is deleted (best effort)."""
    try:
        _setquota(root, read_project(root), _limits(None, None), cfg.name)
    except (OSError, QuotaError):
        pass
