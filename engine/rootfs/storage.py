"""Where a guest tree lives and how big it may grow: backends image, btrfs, project, none.

``image``: an ext4 file system in paths.guest_image(NAME), fallocated to
V_DISK (the host cannot run out under it: the guest sees ENOSPC, never EIO),
loop-attached with autoclear and mounted on paths.guest_root(NAME) in the
host's mount namespace while the guest runs. ``btrfs``: a subvolume with a
qgroup limit, on /vservers or in the pool (engine.rootfs.volumes). ``project``:
a project quota on the host file system (ext4/XFS with project quota on).
``none``: a plain directory, no limit.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

from engine import _libc, procfs
from engine._record import Record
from engine.errors import KernelError, QuotaError, VstuiError
from engine.paths import Paths
from engine.text import visible

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of every start
if TYPE_CHECKING:
    from typing import Any


class _Lazy:
    """A module imported on first attribute access: a plain-directory guest's
    start never pays for subprocess, the loop ioctls or the quota code."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


loop: Any = _Lazy("engine.rootfs.loop")
project: Any = _Lazy("engine.rootfs.project")
volumes: Any = _Lazy("engine.rootfs.volumes")
shutil: Any = _Lazy("shutil")
subprocess: Any = _Lazy("subprocess")

BACKENDS = ("none", "image", "btrfs", "project")
MIN_IMAGE = 16 << 20  # smaller ext4 images hold little more than their journal
EXT4_SUPER = 1024
EXT4_MAGIC = 0xEF53


class DiskUsage(Record):
    """Bytes and inodes used and allowed; None where unknown or unlimited."""

    __slots__ = _fields = ("bytes_used", "bytes_limit", "inodes_used", "inodes_limit",
                           "measured")  # fmt: skip
    _defaults = {"measured": None}
    bytes_used: int | None
    bytes_limit: int | None
    inodes_used: int | None
    inodes_limit: int | None
    measured: float | None  # epoch seconds of a cached walk (none); None: read just now


class RootHandle:
    """A prepared guest tree: ``path`` to pivot into; ``release()`` undoes the mount."""

    def __init__(self, path: Path, mounted: bool = False, image: Path | None = None) -> None:
        self.path = path
        self._mounted = mounted
        self._image = image  # a loop-mounted image (not a bind): wait for its device to go

    def release(self) -> None:
        """Unmount the image (the loop device detaches itself); safe to call twice."""
        if not self._mounted:
            return
        self._mounted = False
        device = mounted_source(self.path) if self._image is not None else None
        try:
            _libc.umount(str(self.path))
            if device and device.startswith("/dev/loop"):
                loop.wait_detached(device)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return  # already unmounted by someone else
            if exc.errno != errno.EBUSY:
                raise KernelError.from_oserror("umount", exc) from exc
            # still in use (a shell's cwd): detach now, the kernel frees it later
            _libc.umount(str(self.path), _libc.MNT_DETACH)

    def __enter__(self) -> RootHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- mount table -----------------------------------------------------------


def mounts_under(path: Path, mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """(mount point, source) of every mount at or below ``path`` (engine.procfs)."""
    table = procfs.mounts_under(str(path), procfs.mountinfo(mountinfo))
    return [(m.mount_point, m.source) for m in table]


def mounted_source(path: Path) -> str | None:
    """Source of the top mount exactly at ``path``, or None."""
    found = [src for target, src in mounts_under(path) if target == str(path).rstrip("/")]
    return found[-1] if found else None


class MountEntry(Record):
    """The top mount at a path: the directory of its file system mounted there
    (``/guests/web`` for a bind of a pool subvolume), its source and type."""

    __slots__ = _fields = ("root", "source", "fstype")
    root: str
    source: str
    fstype: str


def top_mount(path: Path, mountinfo: str = "/proc/self/mountinfo") -> MountEntry | None:
    """The last (top) mount exactly at ``path``, or None."""
    wanted = str(path).rstrip("/")
    found = [m for m in procfs.mountinfo(mountinfo) if m.mount_point == wanted]
    return MountEntry(found[-1].root, found[-1].source, found[-1].fstype) if found else None


# -- ext4 images -----------------------------------------------------------


class Ext4Super(Record):
    __slots__ = _fields = ("block_size", "blocks", "free_blocks", "inodes", "free_inodes")
    block_size: int
    blocks: int
    free_blocks: int
    inodes: int
    free_inodes: int


def read_ext4_super(image: Path) -> Ext4Super:
    """The counters of an (unmounted) ext4 image, straight from its superblock."""
    with open(image, "rb") as f:
        f.seek(EXT4_SUPER)
        sb = f.read(1024)
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 0x38)[0] != EXT4_MAGIC:
        raise VstuiError(f"{image}: not an ext4 image; rebuild the guest or restore the image")
    inodes, blocks_lo, _, free_lo, free_inodes, _, log_bs = struct.unpack_from("<7I", sb, 0)
    incompat = struct.unpack_from("<I", sb, 0x60)[0]
    blocks_hi = free_hi = 0
    if incompat & 0x80:  # INCOMPAT_64BIT
        blocks_hi = struct.unpack_from("<I", sb, 0x150)[0]
        free_hi = struct.unpack_from("<I", sb, 0x158)[0]
    # s_overhead_clusters: metadata that statvfs leaves out of f_blocks (mke2fs >= 1.46.5)
    overhead = struct.unpack_from("<I", sb, 0x248)[0]
    blocks = (blocks_lo | blocks_hi << 32) - overhead
    return Ext4Super(1024 << log_bs, blocks, free_lo | free_hi << 32, inodes, free_inodes)


def kernel_has_ext4_quota() -> bool:
    """Can this kernel mount ext4's quota feature (CONFIG_QUOTA + CONFIG_QFMT_V2)?"""
    import gzip

    release = os.uname().release
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{release}", open)):
        try:
            with opener(path, "rt") as f:
                text = f.read()
        except OSError:
            continue
        return "CONFIG_QFMT_V2=y" in text or "CONFIG_QFMT_V2=m" in text
    return True  # no config to read: assume a distribution kernel


def _run(argv: list[str], what: str, guest: str, ok: tuple[int, ...] = (0,)) -> None:
    tool = shutil.which(argv[0])
    if tool is None:
        raise VstuiError(f"{what} needs {argv[0]}; apt-get install e2fsprogs", guest)
    done = subprocess.run([tool, *argv[1:]], capture_output=True, text=True)
    if done.returncode not in ok:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise VstuiError(f"{what}: {argv[0]} failed: {lines[-1]}", guest)


def _image_size(cfg: Any) -> int:
    if cfg.disk is None:
        raise QuotaError(f"{cfg.path}: V_DISK_BACKEND=image needs V_DISK, e.g. V_DISK=2G", cfg.name)
    if cfg.disk < MIN_IMAGE:
        raise QuotaError(f"V_DISK={cfg.disk} is too small for an image; use 16M or more", cfg.name)
    return cfg.disk - cfg.disk % 4096


def create_image(cfg: Any, paths: Paths) -> Path:
    """A new, fallocated ext4 image for ``cfg`` (V_DISK bytes, V_INODES inodes)."""
    image = paths.guest_image(cfg.name)
    paths.images_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    size = _image_size(cfg)
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        os.close(fd)
        image.unlink()
        raise QuotaError(
            f"cannot allocate {size} bytes for {image}: {exc.strerror}; "
            "free host space or choose a smaller V_DISK",
            cfg.name,
        ) from exc
    os.close(fd)
    argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard,root_owner=0:0"]
    if kernel_has_ext4_quota():
        argv[-1] += ",quotatype=usrquota:grpquota"
        argv += ["-O", "quota"]
    if getattr(cfg, "inodes", None):
        argv += ["-N", str(cfg.inodes)]
    _run([*argv, str(image)], f"formatting {image}", cfg.name)
    return image


def _mount_options(image: Path) -> str | None:
    with open(image, "rb") as f:
        f.seek(EXT4_SUPER + 0x64)  # s_feature_ro_compat
        ro_compat = struct.unpack("<I", f.read(4))[0]
    return "usrquota,grpquota" if ro_compat & 0x100 else None  # RO_COMPAT_QUOTA


def _prepare_image(cfg: Any, paths: Paths) -> RootHandle:
    root = paths.guest_root(cfg.name)
    image = paths.guest_image(cfg.name)
    if not image.is_file():
        raise VstuiError(
            f"disk image {image} is missing; restore it or rebuild the guest", cfg.name
        )
    attached = loop.devices_for(image)
    current = mounted_source(root)
    if current is not None:
        if current in attached:
            return RootHandle(root, mounted=True, image=image)  # a supervisor before us did
        raise VstuiError(f"{current} is mounted on {root}; unmount it (umount {root})", cfg.name)
    for device in attached:  # an unmount a moment ago: autoclear frees it from a work queue
        loop.wait_detached(device, 10.0)
    attached = loop.devices_for(image)
    if attached:
        raise VstuiError(
            f"{image} is attached to {', '.join(attached)} but not mounted; "
            f"detach it (losetup -d {attached[0]})",
            cfg.name,
        )
    root.mkdir(mode=0o755, exist_ok=True)
    dev = loop.attach(image)
    try:
        _libc.mount(dev.device, str(root), "ext4", _libc.MS_NODEV, _mount_options(image))
    except OSError as exc:
        loop.detach(dev)
        raise KernelError.from_oserror(
            "mount", exc, cfg.name, hint="run e2fsck -f on the image"
        ) from exc
    os.close(dev.fd)  # the mount holds the device now; unmounting frees it
    return RootHandle(root, mounted=True, image=image)


# -- the contract ----------------------------------------------------------


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class FullGuard:
    """Turns "no space" from any step of a storage operation into one QuotaError that
    names the guest, the full file system and the fix (a copy's cp, a btrfs ioctl,
    a write in a chroot child: each says it its own way)."""

    def __init__(self, name: str, pooled: bool, where: Path) -> None:
        self.name, self.pooled, self.where = name, pooled, where

    def __enter__(self) -> FullGuard:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, QuotaError) or not _no_space(exc):
            return
        if self.pooled:
            text = ("the pool is full; grow it (vserver --pool grow SIZE) or delete snapshots "
                    "or guests there, then try again")  # fmt: skip
        else:
            text = f"the file system holding {self.where} is full; free space there, then try again"
        raise QuotaError(text, self.name) from exc


def _no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError | KernelError) and exc.errno in NO_SPACE:
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def full_guard(paths: Paths, cfg: Any, snapshot: bool = False) -> FullGuard:
    """FullGuard for an operation writing ``cfg``'s storage: the pool for a btrfs guest,
    else the snapshots directory (``snapshot``), the images or the guests' directory."""
    backend = backend_of(cfg)
    if snapshot:
        where = paths.snapshots_dir
    else:
        where = paths.images_dir if backend == "image" else paths.vservers_dir
    return FullGuard(cfg.name, backend == "btrfs" and pool_exists(paths), where)


def pool_exists(paths: Paths) -> bool:
    """Is there a btrfs pool (engine.rootfs.pool) under this root?"""
    return os.path.exists(paths.pool_image)


def backend_of(cfg: Any) -> str:
    backend = getattr(cfg, "disk_backend", None) or "none"
    if backend not in BACKENDS:
        raise VstuiError(
            f"V_DISK_BACKEND '{backend}' is unknown; use image, btrfs, project or none", cfg.name
        )
    return backend


def create(cfg: Any, paths: Paths) -> None:
    """Make an empty guest tree (and image, or project quota) for a new guest."""
    backend = backend_of(cfg)
    root = paths.guest_root(cfg.name)
    if backend == "image":
        create_image(cfg, paths)
        root.mkdir(mode=0o755)
        return
    if backend == "btrfs":
        volumes.create(cfg, paths)
        return
    root.mkdir(mode=0o755)
    os.chown(root, 0, 0)
    if backend == "project":
        project.assign(cfg, paths, root)


def prepare_root(cfg: Any, paths: Paths) -> RootHandle:
    """Make the guest tree ready to pivot into; ``release()`` undoes it."""
    backend = backend_of(cfg)
    if backend == "image":
        return _prepare_image(cfg, paths)
    if backend == "btrfs":
        return volumes.prepare_root(cfg, paths)
    root = paths.guest_root(cfg.name)
    if not root.is_dir() or root.is_symlink():
        raise VstuiError(
            f"guest tree {root} is missing; rebuild the guest (vserver " f"{cfg.name} build)",
            cfg.name,
        )
    if backend == "project":
        project.check(cfg, paths, root)
    return RootHandle(root)


def release(cfg: Any, paths: Paths) -> None:
    """Undo ``prepare_root`` when its RootHandle is gone (another process, a dead supervisor).

    Unmounts the guest root while its top mount is a loop device backed by
    this guest's image (found in /proc/self/mountinfo); autoclear then
    detaches the device. Anything else mounted there is not ours and is left
    alone. Idempotent; nothing to do for backends none and project (they
    mount nothing). Only ``cfg.name`` is used, so a stand-in with a name
    works when NAME.conf is gone.
    """
    root = paths.guest_root(cfg.name)
    image = paths.guest_image(cfg.name)
    for _ in range(8):  # a stacked second mount of the image, should one exist
        source = mounted_source(root)
        if source is None or source not in loop.devices_for(image):
            break
        RootHandle(root, mounted=True, image=image).release()
    if pool_exists(paths):
        volumes.release(cfg.name, paths)  # a pool subvolume bound there


def _statvfs_usage(path: Path) -> DiskUsage:
    st = os.statvfs(path)
    return DiskUsage(
        (st.f_blocks - st.f_bfree) * st.f_frsize,
        st.f_blocks * st.f_frsize,
        st.f_files - st.f_ffree,
        st.f_files,
    )


def usage(cfg: Any, paths: Paths) -> DiskUsage:
    """Used and allowed space and inodes, cheaply (no tree walk).

    image: statvfs when mounted, else the image's superblock. btrfs: the
    qgroup (sysfs). project: the quota report. none: the last background walk
    (engine.rootfs.du) with its time in ``measured``, else all None.
    """
    backend = backend_of(cfg)
    if backend == "image":
        root = paths.guest_root(cfg.name)
        image = paths.guest_image(cfg.name)
        if mounted_source(root) in loop.devices_for(image):
            return _statvfs_usage(root)
        sb = read_ext4_super(image)
        return DiskUsage(
            (sb.blocks - sb.free_blocks) * sb.block_size,
            sb.blocks * sb.block_size,
            sb.inodes - sb.free_inodes,
            sb.inodes,
        )
    if backend == "btrfs":
        return volumes.usage(cfg, paths)
    if backend == "project":
        return project.usage(cfg, paths, paths.guest_root(cfg.name))
    from engine.rootfs import du

    walked = du.cached(paths, cfg.name)
    if walked is None:
        return DiskUsage(None, None, None, None)
    return DiskUsage(walked.bytes, None, walked.inodes, None, walked.measured)


def _human(size: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.1f}{unit}"
    return str(size)


def set_quota(cfg: Any, paths: Paths, size: int | None) -> None:
    """Set the guest's disk limit to ``size`` bytes; grows online, never below use.

    ``None`` lifts a project quota; an image always has a size.
    """
    backend = backend_of(cfg)
    if size is None:
        if backend == "project":
            project.set_limit(cfg, paths, paths.guest_root(cfg.name), 0)
            return
        if backend == "btrfs":
            volumes.set_limit(cfg, paths, None)
            return
        if backend == "image":
            raise QuotaError("an image guest needs V_DISK (its image size); set a size", cfg.name)
    if backend == "none":
        raise QuotaError(
            "this guest has no disk quota (V_DISK_BACKEND=none); rebuild it "
            "with V_DISK_BACKEND=btrfs or image to limit it",
            cfg.name,
        )
    if backend == "btrfs":
        used = volumes.used_now(cfg, paths)
    else:
        used = usage(cfg, paths).bytes_used or 0
    if size < used:
        raise QuotaError(
            f"guest uses {_human(used)}; cannot shrink its quota to {_human(size)} "
            "(free space in the guest first)",
            cfg.name,
        )
    if backend == "project":
        project.set_limit(cfg, paths, paths.guest_root(cfg.name), size)
    elif backend == "btrfs":
        volumes.set_limit(cfg, paths, size)
    else:
        _resize_image(cfg, paths, size)
    _record(paths, cfg.name, size)


def _record(paths: Paths, name: str, size: int) -> None:
    from engine.config import update_config

    update_config(paths, name, {"V_DISK": _config_size(size)})


def _config_size(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


CAP_SYS_RESOURCE = 24


def has_cap(cap: int) -> bool:
    """Is ``cap`` in this process's effective set?"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def _extend(image: Path, current: int, size: int, guest: str) -> None:
    fd = os.open(image, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.posix_fallocate(fd, current, size - current)
    except OSError as exc:
        os.ftruncate(fd, current)
        raise QuotaError(
            f"cannot grow {image} to {_human(size)}: {exc.strerror}; free host space first",
            guest,
        ) from exc
    finally:
        os.close(fd)


def _resize_image(cfg: Any, paths: Paths, size: int) -> None:
    image = paths.guest_image(cfg.name)
    size -= size % 4096
    if size < MIN_IMAGE:
        raise QuotaError(f"{size} bytes is too small for an image; use 16M or more", cfg.name)
    current = image.stat().st_size
    devices = loop.devices_for(image)
    if devices:
        _grow_online(cfg, paths, image, devices[0], current, size)
        return
    # offline: resize2fs always runs, so an earlier failed online grow is completed
    _run(["e2fsck", "-f", "-p", str(image)], f"checking {image}", cfg.name, ok=(0, 1))
    if size > current:
        _extend(image, current, size, cfg.name)
    _run(["resize2fs", str(image), f"{size // 1024}K"], f"resizing {image}", cfg.name)
    if size < current:
        os.truncate(image, size)


def _grow_online(cfg: Any, paths: Paths, image: Path, device: str, current: int,
                 size: int) -> None:  # fmt: skip
    if mounted_source(paths.guest_root(cfg.name)) != device:
        raise QuotaError(
            f"{image} is attached to {device} but not mounted on the guest root here; "
            "stop the guest to resize it",
            cfg.name,
        )
    if size < current:
        raise QuotaError("ext4 shrinks only offline; stop the guest, then shrink its quota",
                         cfg.name)  # fmt: skip
    if size == current:
        return
    if not has_cap(CAP_SYS_RESOURCE):  # ext4's online resize ioctl demands it
        raise QuotaError(
            "growing a mounted image needs CAP_SYS_RESOURCE, which this process lacks; "
            "stop the guest and grow it offline",
            cfg.name,
        )
    _extend(image, current, size, cfg.name)
    loop.set_capacity(device)
    _run(["resize2fs", device], f"growing {image}", cfg.name)


def remove(cfg: Any | None, paths: Paths, name: str) -> None:
    """Remove the tree and the image of ``name`` (mounts were checked by the caller)."""
    root = paths.guest_root(name)
    if cfg is not None and backend_of(cfg) == "project" and root.is_dir():
        project.clear(cfg, paths, root)
    volumes.remove(paths, name)  # a btrfs subvolume, wherever the config says it is
    if root.is_symlink():
        root.unlink()
    elif root.exists():
        from engine import safepath

        safepath.remove_tree(root)  # iterative, never follows the guest's symlinks
    image = paths.guest_image(name)
    if os.path.lexists(image):
        devices = loop.devices_for(image)
        if devices:
            raise VstuiError(
                f"{image} is still attached to {devices[0]}; stop the guest "
                f"or detach it (losetup -d {devices[0]})",
                name,
            )
        image.unlink()


def _guest_uid(root: Path, user: str, guest: str) -> int:
    """``user`` (name or number) looked up in the guest's own /etc/passwd."""
    from engine import guestusers, safepath

    uid = guestusers.parse_id(user)
    if uid is not None:
        return uid
    rootfd = safepath.open_root(root)
    try:
        text = safepath.read_regular(rootfd, "/etc/passwd").decode(errors="replace")
    except OSError as exc:  # a FIFO the guest planted would hang a plain open
        raise QuotaError(f"the guest's /etc/passwd cannot be read ({exc.strerror}); "
                         "give a uid", guest) from None  # fmt: skip
    finally:
        os.close(rootfd)
    found = guestusers.find_user(text, user)
    if found is None:
        raise QuotaError(f"no user '{visible(user)}' in the guest's /etc/passwd; "
                         f"give a uid 0..{guestusers.MAX_ID}", guest)  # fmt: skip
    return found.uid


def set_user_quota(cfg: Any, paths: Paths, user: str, size: int | None) -> None:
    """Limit one guest user's space inside an image guest (None removes the limit).

    The guest's own root cannot: quotactl(Q_SETQUOTA) needs CAP_SYS_ADMIN,
    which guests never have. The image must be mounted (guest running).
    """
    if backend_of(cfg) != "image":
        raise QuotaError("per-user quotas need V_DISK_BACKEND=image", cfg.name)
    root = paths.guest_root(cfg.name)
    image = paths.guest_image(cfg.name)
    if mounted_source(root) not in loop.devices_for(image):
        raise QuotaError(f"start the guest first: {image} is not mounted", cfg.name)
    if _mount_options(image) is None:
        why = "its image has no quota feature" if kernel_has_ext4_quota() else (
            "this kernel lacks ext4 quota support (CONFIG_QFMT_V2)")  # fmt: skip
        raise QuotaError(f"per-user quotas are unavailable: {why}", cfg.name)
    uid = _guest_uid(root, user, cfg.name)
    blk = project.DqBlk()
    blk.bhardlimit = blk.bsoftlimit = (size or 0) // project.QIF_DQBLKSIZE
    blk.valid = project.QIF_BLIMITS
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        project.quotactl_fd(fd, project.Q_SETQUOTA, project.USRQUOTA, uid, blk)
    except OSError as exc:
        raise QuotaError(f"setting the quota of uid {uid}: {exc.strerror}", cfg.name) from exc
    finally:
        os.close(fd)
