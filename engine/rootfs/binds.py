"""Host directories bound into a guest at start, and safe guest-side targets.

Two kinds of binds, in this order: what the guest's template shares with
the host, read-only (a skeleton's /usr and real /bin, /sbin, /lib*
directories; a busybox guest's /bin/busybox binary), then the
guest's ``V_SHARE`` shares. Host sources are checked here; guest-side
targets are resolved by the runtime at mount time with ``open_target``,
inside the guest tree, so a symlink the guest plants at a share's target
cannot redirect the mount onto the host.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from engine import safepath
from engine._record import Record
from engine.errors import ConfigError, VstuiError
from engine.paths import Paths

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of every start
if TYPE_CHECKING:
    from typing import Any

# Host system directories a skeleton guest shares with the host, read-only.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32")
# Where a busybox guest sees the host's busybox (its applet links point here).
BUSYBOX = "/bin/busybox"

# A share reached through a symlink must not land in (or under) one of these.
SENSITIVE = ("/etc", "/boot", "/root", "/run", "/var/run")
# A share never lands in (or under) one of these, however it is spelled.
FORBIDDEN = ("/proc", "/sys", "/dev")
# Guest-side places a share may not cover: the runtime mounts its own there.
GUEST_RESERVED = ("/proc", "/sys", "/dev")
_O_PATH_DIR = os.O_PATH | os.O_CLOEXEC


class Bind(Record):
    """One host directory (or file) bound onto a guest path."""

    __slots__ = _fields = ("source", "target", "readonly", "recursive")
    source: Path
    target: str
    readonly: bool
    recursive: bool


def template_kind(template: str | None) -> str:
    """``tarball:/x.tar`` -> ``tarball``; empty -> ``skeleton``."""
    return (template or "skeleton").split(":", 1)[0]


def system_binds(host: Path = Path("/")) -> list[Bind]:
    """The skeleton's host dirs: /usr plus every non-symlink /bin /sbin /lib*."""
    found = []
    for name in SYSTEM_DIRS:
        source = host / name
        if source.is_symlink() or not source.is_dir():
            continue  # merged /usr: the guest has the same symlink
        found.append(Bind(source, "/" + name, readonly=True, recursive=True))
    return found


def host_busybox() -> Path:
    """The host's static busybox (its real path: binds never follow symlinks)."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and is_static(path):
            return path.resolve()
    raise VstuiError("template busybox needs a static busybox; apt-get install busybox-static")


def is_static(binary: Path) -> bool:
    """True for an ELF without a program interpreter (PT_INTERP)."""
    import struct

    with open(binary, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    kinds = (struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum))
    return 3 not in kinds  # PT_INTERP


def template_binds(template: str | None) -> list[Bind]:
    """What a template's guests share with the host, read-only: a skeleton the
    host's system dirs, a busybox guest the host's one busybox binary (one inode
    and one page cache for every guest; the tree holds an empty placeholder)."""
    kind = template_kind(template or "none")
    if kind == "skeleton":  # only an explicit one: an imported tree keeps its own /usr
        return system_binds()
    if kind == "busybox":
        return [Bind(host_busybox(), BUSYBOX, readonly=True, recursive=False)]
    return []


def binds(cfg: Any, paths: Paths) -> list[Bind]:
    """Host dirs (and files) to bind into ``cfg``'s guest at start, in mount order."""
    found = template_binds(cfg.template)
    for share in cfg.shares:
        source = check_share_source(share.host, paths, cfg.name)
        target = check_share_target(share.guest, cfg.name)
        found.append(Bind(source, target, readonly=share.readonly, recursive=True))
    return found


# -- host side ------------------------------------------------------------


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _own_dirs(paths: Paths) -> list[str]:
    dirs = [
        paths.vservers_dir,
        paths.state_dir,
        paths.config_dir,
        paths.legacy_config_dir,
        paths.run_base,
    ]
    return [os.path.realpath(d) for d in dirs]


def check_share_source(host: str, paths: Paths, guest: str | None = None) -> Path:
    """The real directory behind a share's host path, or ConfigError saying why not."""
    where = paths.config_file(guest) if guest else None

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"'{host}' {why}", where, key="V_SHARE", guest=guest)

    if not os.path.isabs(host):
        raise refuse("is not an absolute path; write the host side as /srv/data")
    literal = os.path.normpath(host)
    real = os.path.realpath(host)
    if not os.path.exists(real):
        raise refuse("does not exist on the host; create it (mkdir -p) or fix V_SHARE")
    if not os.path.isdir(real):
        raise refuse(f"is not a directory (resolves to {real}); share a directory")
    if real == "/":
        raise refuse("resolves to the host's / ; share a dedicated directory")
    for base in FORBIDDEN:
        if _inside(real, base):
            raise refuse(f"resolves into {base}; share a regular directory")
    for base in _own_dirs(paths):
        if _inside(real, base) or _inside(base, real):
            raise refuse(f"resolves to vstui's own {base}; guests must not see it")
    if real != literal:
        prefixed = [str(paths.root / b.lstrip("/")) for b in SENSITIVE]
        for base in (*SENSITIVE, *prefixed):
            if _inside(real, os.path.realpath(base)) or _inside(real, base):
                raise refuse(f"is a symlink into {real}; share the real directory explicitly")
    return Path(real)


def check_share_target(guest_path: str, guest: str | None = None) -> str:
    """A share's guest-side path, normalised; refuses / and the runtime's own mounts."""
    if not guest_path.startswith("/"):
        raise VstuiError(f"V_SHARE: guest path '{guest_path}' must be absolute", guest)
    norm = os.path.normpath(guest_path)
    norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise VstuiError("V_SHARE: a share cannot cover the guest's /", guest)
    for base in GUEST_RESERVED:
        if _inside(norm, base):
            raise VstuiError(f"V_SHARE: '{guest_path}' is under {base}, which vstui mounts", guest)
    return norm


# -- guest side (engine.safepath: openat2 RESOLVE_IN_ROOT, O_PATH walk fallback) --


def _open_in_tree(rootfd: int, guest_path: str, create_dir: bool) -> int:
    if create_dir:
        return safepath.mkdirs_in_root(rootfd, guest_path)
    return safepath.open_in_root(rootfd, guest_path, os.O_PATH)


def open_target(root: str | os.PathLike[str], guest_path: str, create_dir: bool = True) -> int:
    """O_PATH fd of ``guest_path`` resolved inside ``root`` (symlinks stay in the tree).

    Mount onto ``safepath.fd_path(fd)`` of the result. With ``create_dir``,
    missing directories are made (inside the tree) and the target must be
    a directory.
    """
    rootfd = safepath.open_root(root)
    try:
        fd = _open_in_tree(rootfd, guest_path, create_dir)
    except NotADirectoryError:
        if not create_dir:
            raise _unresolved(root, guest_path, "Not a directory") from None
        raise _not_a_dir(root, guest_path) from None
    except OSError as exc:
        raise _unresolved(root, guest_path, exc.strerror) from exc
    finally:
        os.close(rootfd)
    # safepath's O_PATH walk (kernels without openat2) does not enforce O_DIRECTORY
    if create_dir and not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_dir(root, guest_path)
    return fd


def _not_a_dir(root: str | os.PathLike[str], guest_path: str) -> VstuiError:
    return VstuiError(
        f"{root}: '{guest_path}' (or a directory above it) is not a directory "
        "in the guest; remove it"
    )


def _unresolved(root: str | os.PathLike[str], guest_path: str, why: str | None) -> VstuiError:
    return VstuiError(
        f"{root}: cannot resolve '{guest_path}' inside the guest: {why}; "
        "fix or remove that path in the guest tree"
    )


def resolve_in_guest(
    root: str | os.PathLike[str], guest_path: str, create_dir: bool = False
) -> Path:
    """Host path of ``guest_path`` as seen with ``root`` as /; never outside ``root``."""
    fd = open_target(root, guest_path, create_dir=create_dir)
    try:
        found = os.readlink(safepath.fd_path(fd))
    finally:
        os.close(fd)
    real_root = os.path.realpath(root)
    if not _inside(found, real_root):  # cannot happen with IN_ROOT; checked anyway
        raise VstuiError(f"{root}: '{guest_path}' resolved outside the guest ({found})")
    return Path(found)
