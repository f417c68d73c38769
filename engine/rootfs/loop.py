"""Loop devices through /dev/loop-control and the loop ioctls (no losetup).

A guest image is attached with LOOP_CONFIGURE and LO_FLAGS_AUTOCLEAR: the
kernel detaches the device by itself when its last user goes away (the
mount, or our own fd when the mount never happened), so a crashed start
cannot leave a loop device behind.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import time
from pathlib import Path

from engine._record import Record
from engine.errors import KernelError

# include/uapi/linux/loop.h
LOOP_CLR_FD = 0x4C01
LOOP_SET_CAPACITY = 0x4C07
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_NAME_SIZE = 64
LOOP_MAJOR = 7

CONTROL = "/dev/loop-control"
SYS_BLOCK = Path("/sys/block")


class LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_encrypt_key", ctypes.c_ubyte * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


class Attached(Record):
    """A loop device we configured; ``fd`` keeps it alive until closed."""

    __slots__ = _fields = ("device", "fd")
    device: str
    fd: int


def _device_node(number: int) -> str:
    """/dev/loopN, created if devtmpfs has not made it (static /dev)."""
    path = f"/dev/loop{number}"
    try:
        if stat.S_ISBLK(os.stat(path).st_mode):
            return path
    except FileNotFoundError:
        os.mknod(path, 0o660 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, number))
    return path


def _free_number() -> int:
    try:
        ctl = os.open(CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelError.from_oserror("open", exc, hint="no loop support in this kernel") from exc
    try:
        return fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
    except OSError as exc:
        raise KernelError("LOOP_CTL_GET_FREE", CONTROL, exc.errno or errno.EIO) from exc
    finally:
        os.close(ctl)


def attach(image: str | os.PathLike[str], read_only: bool = False) -> Attached:
    """Attach ``image`` to a free loop device with autoclear; return it open.

    The caller mounts ``Attached.device`` and then closes ``Attached.fd``:
    from then on the mount alone holds the device, and unmounting frees it.
    """
    image = os.fspath(image)
    mode = os.O_RDONLY if read_only else os.O_RDWR
    backing = os.open(image, mode | os.O_CLOEXEC)
    try:
        for _ in range(16):  # another process may take the free device first
            device = _device_node(_free_number())
            dev_fd = os.open(device, mode | os.O_CLOEXEC)
            config = LoopConfig()
            config.fd = backing
            config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
            config.info.lo_file_name = os.fsencode(image)[: LO_NAME_SIZE - 1]
            try:
                fcntl.ioctl(dev_fd, LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(dev_fd)
                if exc.errno == errno.EBUSY:
                    continue
                raise KernelError("LOOP_CONFIGURE", device, exc.errno or errno.EIO) from exc
            return Attached(device, dev_fd)
        raise KernelError("LOOP_CONFIGURE", image, errno.EBUSY, hint="no free loop device")
    finally:
        os.close(backing)


def detach(attached: Attached) -> None:
    """Give up a device that was never mounted: clear it and close our fd."""
    try:
        fcntl.ioctl(attached.fd, LOOP_CLR_FD)
    except OSError:
        pass  # autoclear already pending: closing the fd detaches it
    finally:
        os.close(attached.fd)


def set_capacity(device: str) -> None:
    """Make the device pick up a grown backing file (LOOP_SET_CAPACITY)."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY)
    except OSError as exc:
        raise KernelError("LOOP_SET_CAPACITY", device, exc.errno or errno.EIO) from exc
    finally:
        os.close(fd)


def wait_detached(device: str, timeout: float = 2.0) -> bool:
    """Wait for an autoclear device to let go of its backing file.

    Since Linux 5.17 the last close of an autoclear device only queues the
    clear (drivers/block/loop.c, lo_release -> __loop_clr_fd on a work
    item), so right after the unmount the device still shows its image:
    a quota change or a test that looks then sees an attached, unmounted
    image. False when the device is still bound after ``timeout``.
    """
    backing = SYS_BLOCK / os.path.basename(device) / "loop" / "backing_file"
    deadline = time.monotonic() + timeout
    while backing.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def devices_for(image: str | os.PathLike[str]) -> list[str]:
    """Loop devices whose backing file is ``image`` (from sysfs)."""
    wanted = os.path.realpath(image)
    found = []
    for backing in sorted(SYS_BLOCK.glob("loop*/loop/backing_file")):
        try:
            name = backing.read_text().strip()
        except OSError:
            continue
        if name.removesuffix(" (deleted)") == wanted:
            found.append("/dev/" + backing.parent.parent.name)
    return found
