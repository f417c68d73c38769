"""Thin ctypes wrappers for the syscalls Python 3.11's os module lacks.

unshare, setns, mount, umount2, prctl and capset. Each raises
OSError with errno and the path involved, like the os module does.
"""

from __future__ import annotations

import ctypes
import os

# find_library would run ldconfig (~20 ms); glibc's soname is stable.
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

# include/uapi/linux/sched.h
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# include/uapi/linux/mount.h
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# include/uapi/linux/prctl.h
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_MACHINE = os.uname().machine
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(_MACHINE, 155)
_SYS_CAPGET = {"x86_64": 125, "aarch64": 90}.get(_MACHINE, 125)
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(_MACHINE, 126)

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]  # fmt: skip


def _check(result: int, path: str | None = None, path2: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path, None, path2)
    return result


def _b(value: str | bytes | os.PathLike[str] | None) -> bytes | None:
    if value is None:
        return None
    return os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype))


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), target)


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), target)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5))


def capbset_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def clear_ambient() -> None:
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:  # kernels before 4.3 have no ambient set
        pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def clear_inheritable() -> None:
    """Empty this thread's inheritable set, keeping effective and permitted."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(_SYS_CAPGET, ctypes.byref(header), ctypes.byref(data)))
    for part in data:
        part.inheritable = 0
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)))


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc.setdomainname(raw, len(raw)))


# include/uapi/linux/mount.h, fcntl.h; mount_setattr(2) is 442 on every architecture
_SYS_MOUNT_SETATTR = 442


AT_FDCWD = -100
RENAME_EXCHANGE = 2  # include/uapi/linux/fs.h


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
    """renameat2(RENAME_EXCHANGE): ``a`` and ``b`` swap names in one step (both
    must exist; EINVAL where the file system cannot)."""
    _check(_libc.renameat2(AT_FDCWD, _b(a), AT_FDCWD, _b(b), RENAME_EXCHANGE),
           os.fspath(a), os.fspath(b))  # fmt: skip
