"""The btrfs pool: a sparse file formatted btrfs, loop-mounted, holding btrfs guests.

For hosts whose /vservers is not btrfs (machinectl's /var/lib/machines.raw
and Incus's default loop pool are the habit). Everything lives under the
root prefix::

    /var/lib/vservers/pool.img        the sparse file (paths.pool_image)
    /var/lib/vservers/pool/           its mount point, mode 700 (paths.pool_dir)
        guests/NAME                   one subvolume per guest, with a qgroup limit
        snapshots/NAME/SNAP           read-only snapshots (+ SNAP.json)

The loop device is attached with autoclear (engine.rootfs.loop): unmounting
the pool frees it; it is found again by its backing file, never by number.
Quotas are enabled once, at create, and stay on (on disk). Guests of other
backends are not touched. ``vserver --onboot start`` (and so the systemd
unit) mounts the pool again after a reboot; so does the first use.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine import _libc
from engine._record import Record
from engine.errors import KernelError, QuotaError, VstuiError, require_root
from engine.paths import Paths
from engine.rootfs import btrfs, loop
from engine.rootfs.storage import _human, mounts_under, top_mount

MIN_POOL = 128 << 20  # mkfs.btrfs needs ~110 MiB for its default profiles
GUESTS = "guests"
SNAPSHOTS = "snapshots"
MOUNT_FLAGS = _libc.MS_NODEV  # as image guests: device nodes in a guest tree stay inert


class PoolStatus(Record):
    """What ``vserver --pool status`` shows; sizes in bytes."""

    __slots__ = _fields = ("image", "mount", "mounted", "size", "allocated", "used", "free",
                           "guests", "snapshots", "device")  # fmt: skip
    image: str
    mount: str
    mounted: bool
    size: int  # the file's apparent size: the pool's capacity
    allocated: int  # host bytes the sparse file takes
    used: int | None  # bytes used inside the pool (statvfs), None when not mounted
    free: int | None
    guests: tuple[str, ...]
    snapshots: int
    device: str | None


def exists(paths: Paths) -> bool:
    return paths.pool_image.is_file()


def _host_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _check_room(paths: Paths, grow_by: int, size: int) -> None:
    """Refuse a pool bigger than the host can ever hold: full, the guests would see EIO."""
    free = _host_free(paths.state_dir)
    if grow_by > free:
        raise QuotaError(
            f"a {_human(size)} pool needs {_human(grow_by)} more on the host file system "
            f"holding {paths.state_dir}, which has {_human(free)} free; choose a smaller SIZE"
        )


def mounted_device(paths: Paths) -> str | None:
    """The loop device of the pool when it is mounted at paths.pool_dir, else None."""
    entry = top_mount(paths.pool_dir)
    if entry is None or entry.fstype != "btrfs" or entry.root != "/":
        return None
    return entry.source if entry.source in loop.devices_for(paths.pool_image) else None


def create(paths: Paths, size: int) -> PoolStatus:
    """Make the sparse file, format it btrfs, mount it, turn quotas on."""
    require_root("creating the pool")
    if size < MIN_POOL:
        raise QuotaError(f"a pool of {_human(size)} is too small; use 128M or more")
    if os.path.lexists(paths.pool_image):
        raise VstuiError(f"a pool exists already ({paths.pool_image}); grow it instead "
                         "(vserver --pool grow SIZE)")  # fmt: skip
    if mounts_under(paths.pool_dir):
        raise VstuiError(f"something is mounted on {paths.pool_dir}; unmount it first")
    paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    _check_room(paths, size, size)
    fd = os.open(paths.pool_image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size - size % 4096)
    finally:
        os.close(fd)
    try:
        _mkfs(paths.pool_image)
        mount(paths)
        btrfs.enable_quota(paths.pool_dir)
        for sub, mode in ((GUESTS, 0o000), (SNAPSHOTS, 0o700)):  # guests/: a barrier too
            os.mkdir(paths.pool_dir / sub, mode)
            os.chmod(paths.pool_dir / sub, mode)
    except BaseException:
        _unmount(paths)
        paths.pool_image.unlink(missing_ok=True)
        _rmdir(paths.pool_dir)
        raise
    return status(paths)


def _mkfs(image: Path) -> None:
    import shutil
    import subprocess

    tool = shutil.which("mkfs.btrfs")
    if tool is None:
        raise VstuiError("the pool needs mkfs.btrfs; apt-get install btrfs-progs")
    argv = [tool, "-q", "-f", "-L", "vstui-pool", str(image)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise VstuiError(f"formatting {image}: mkfs.btrfs failed: "
                         f"{lines[-1] if lines else 'no output'}")  # fmt: skip


def mount(paths: Paths) -> bool:
    """Mount the pool if it exists and is not mounted; True when this call mounted it."""
    if not exists(paths) or mounted_device(paths) is not None:
        return False
    require_root("mounting the pool")
    stale = loop.devices_for(paths.pool_image)
    if stale:
        raise VstuiError(
            f"{paths.pool_image} is attached to {stale[0]} but not mounted on "
            f"{paths.pool_dir}; detach it (losetup -d {stale[0]}) or mount it there"
        )
    paths.pool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(paths.pool_dir, 0o700)
    dev = loop.attach(paths.pool_image)
    try:
        _libc.mount(dev.device, str(paths.pool_dir), "btrfs", MOUNT_FLAGS, None)
    except OSError as exc:
        loop.detach(dev)
        raise KernelError.from_oserror(
            "mount", exc, hint=f"check it: btrfs check {paths.pool_image}"
        ) from exc
    os.close(dev.fd)  # the mount holds the device now: unmounting frees it (autoclear)
    return True


def require(paths: Paths) -> Path:
    """The mounted pool's directory (mounting it first); VstuiError when there is none."""
    if not exists(paths):
        raise VstuiError("there is no pool; make one: vserver --pool create 20G")
    mount(paths)
    return paths.pool_dir


def _unmount(paths: Paths) -> None:
    device = mounted_device(paths)
    for _ in range(4):
        if top_mount(paths.pool_dir) is None:
            if device is not None:
                loop.wait_detached(device, 10.0)  # the pool is gone only once its device is
            return
        try:
            _libc.umount(str(paths.pool_dir))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise VstuiError(f"the pool {paths.pool_dir} is busy; stop its guests "
                                 "and leave the directory, then try again") from None  # fmt: skip
            if exc.errno != errno.EINVAL:
                raise KernelError.from_oserror("umount", exc) from exc


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def guests(paths: Paths) -> tuple[str, ...]:
    """Names of the guest subvolumes in the mounted pool."""
    try:
        names = os.listdir(paths.pool_dir / GUESTS)
    except OSError:
        return ()
    return tuple(sorted(n for n in names if not n.startswith(".")))  # .NAME.restore: not one


def _snapshot_count(paths: Paths) -> int:
    top = paths.pool_dir / SNAPSHOTS
    try:
        return sum(
            1 for guest in os.listdir(top) for f in os.listdir(top / guest) if f.endswith(".json")
        )
    except OSError:
        return 0


def status(paths: Paths) -> PoolStatus:
    if not exists(paths):
        raise VstuiError("there is no pool; make one: vserver --pool create 20G")
    st = os.stat(paths.pool_image)
    device = mounted_device(paths)
    used = free = None
    if device is not None:
        fs = os.statvfs(paths.pool_dir)
        used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        free = fs.f_bavail * fs.f_frsize
    return PoolStatus(
        str(paths.pool_image), str(paths.pool_dir), device is not None, st.st_size,
        st.st_blocks * 512, used, free, guests(paths) if device else (),
        _snapshot_count(paths) if device else 0, device,
    )  # fmt: skip


def grow(paths: Paths, size: int) -> PoolStatus:
    """Grow the file, tell the loop device, resize btrfs: online, guests keep running."""
    require_root("growing the pool")
    require(paths)
    current = os.stat(paths.pool_image).st_size
    size -= size % 4096
    if size < current:
        raise QuotaError(f"the pool is {_human(current)}; it can only grow "
                         f"(asked {_human(size)})")  # fmt: skip
    if size == current:
        return status(paths)
    _check_room(paths, size - current, size)
    os.truncate(paths.pool_image, size)
    device = mounted_device(paths)
    try:
        loop.set_capacity(device or "")
        btrfs.resize_max(paths.pool_dir)
    except BaseException:
        os.truncate(paths.pool_image, current)  # btrfs still ends where it ended
        loop.set_capacity(device or "")
        raise
    return status(paths)


def remove(paths: Paths) -> None:
    """Unmount the pool and delete its file; refused while it holds guests or snapshots."""
    require_root("removing the pool")
    if not exists(paths):
        raise VstuiError("there is no pool to remove")
    mount(paths)
    held = guests(paths)
    if held:
        raise VstuiError(f"the pool holds guests ({', '.join(held)}); delete them first "
                         f"(vserver {held[0]} delete)")  # fmt: skip
    if _snapshot_count(paths):
        raise VstuiError("the pool holds snapshots; delete them first (vserver NAME snapshot "
                         "delete SNAP)")  # fmt: skip
    _unmount(paths)
    paths.pool_image.unlink()
    _rmdir(paths.pool_dir)
