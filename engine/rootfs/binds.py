"""Host directories bound into a guest at start, and safe guest-side targets.

Two kinds of binds, in this order: a skeleton guest's host system dirs
(/usr and the real /bin, /sbin, /lib* directories, read-only), then the
guest's ``V_SHARE`` shares. Host sources are checked here; guest-side
targets are resolved by the runtime at mount time with ``open_target``,
inside the guest tree, so a symlink the guest plants at a share's target
cannot redirect the mount onto the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine._libc import _libc
from engine.errors import ConfigError, VstuiError
from engine.paths import Paths

# Host system directories a skeleton guest shares with the host, read-only.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32")

# A share reached through a symlink must not land in (or under) one of these.
SENSITIVE = ("/etc", "/boot", "/root", "/run", "/var/run")
# A share never lands in (or under) one of these, however it is spelled.
FORBIDDEN = ("/proc", "/sys", "/dev")
# Guest-side places a share may not cover: the runtime mounts its own there.
GUEST_RESERVED = ("/proc", "/sys", "/dev")

# include/uapi/linux/openat2.h
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine(), 437)
_MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS
_O_PATH_DIR = os.O_PATH | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Bind:
    """One host directory bound onto a guest path."""

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


def binds(cfg: Any, paths: Paths) -> list[Bind]:
    """Host dirs to bind into ``cfg``'s guest at start, in mount order."""
    # only an explicit skeleton: an imported full tree (no V_TEMPLATE) keeps its own /usr
    found = system_binds() if template_kind(cfg.template or "none") == "skeleton" else []
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


def open_source(bind: Bind) -> int:
    """O_PATH fd of a bind's host source, checked to still be that directory."""
    fd = os.open(bind.source, _O_PATH_DIR | os.O_DIRECTORY | os.O_NOFOLLOW)
    if os.readlink(f"/proc/self/fd/{fd}") != str(bind.source):
        os.close(fd)
        raise VstuiError(f"share source {bind.source} changed under us (symlink swapped in)")
    return fd


# -- guest side -----------------------------------------------------------


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_works: bool | None = None


def _openat2(rootfd: int, rel: str, flags: int) -> int:
    how = _OpenHow(flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(
        _SYS_OPENAT2, rootfd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how)
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return fd


def _walk(rootfd: int, rel: str) -> int:
    """O_PATH walk that resolves symlinks as if ``rootfd`` were / (openat2 fallback)."""
    stack = [os.dup(rootfd)]
    queue = deque(rel.split("/"))
    followed = 0
    try:
        while queue:
            part = queue.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(part, _O_PATH_DIR | os.O_NOFOLLOW, dir_fd=stack[-1])
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                stack.append(fd)
                continue
            os.close(fd)
            followed += 1
            if followed > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel)
            link = os.readlink(part, dir_fd=stack[-1])
            if link.startswith("/"):
                while len(stack) > 1:
                    os.close(stack.pop())
            queue.extendleft(reversed(link.split("/")))
        return os.dup(stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def _open_in_root(rootfd: int, rel: str) -> int:
    global _openat2_works
    if _openat2_works is not False:
        try:
            fd = _openat2(rootfd, rel or ".", _O_PATH_DIR)
            _openat2_works = True
            return fd
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
                raise
            _openat2_works = False  # old kernel or seccomp: walk by hand
    return _walk(rootfd, rel)


def _parts(guest_path: str) -> list[str]:
    return [p for p in guest_path.split("/") if p not in ("", ".")]


def _open_creating(rootfd: int, parts: list[str]) -> int:
    for i in range(len(parts)):
        prefix = "/".join(parts[: i + 1])
        try:
            os.close(_open_in_root(rootfd, prefix))
            continue
        except FileNotFoundError:
            pass
        parent = _open_in_root(rootfd, "/".join(parts[:i]))
        try:
            os.mkdir(parts[i], 0o755, dir_fd=parent)
        except FileExistsError:
            pass  # a dangling symlink: reported by the final open below
        finally:
            os.close(parent)
    return _open_in_root(rootfd, "/".join(parts))


def open_target(root: str | os.PathLike[str], guest_path: str, create_dir: bool = True) -> int:
    """O_PATH fd of ``guest_path`` resolved inside ``root`` (symlinks stay in the tree).

    Mount onto ``/proc/self/fd/N`` of the result. With ``create_dir``,
    missing directories are made (inside the tree) and the target must be
    a directory.
    """
    rootfd = os.open(root, _O_PATH_DIR | os.O_DIRECTORY)
    try:
        parts = _parts(guest_path)
        try:
            fd = (
                _open_creating(rootfd, parts)
                if create_dir
                else _open_in_root(rootfd, "/".join(parts))
            )
        except OSError as exc:
            raise VstuiError(
                f"{root}: cannot resolve '{guest_path}' inside the guest: {exc.strerror}; "
                "fix or remove that path in the guest tree"
            ) from exc
    finally:
        os.close(rootfd)
    if create_dir and not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise VstuiError(f"{root}: '{guest_path}' is not a directory in the guest; remove it")
    return fd


def resolve_in_guest(
    root: str | os.PathLike[str], guest_path: str, create_dir: bool = False
) -> Path:
    """Host path of ``guest_path`` as seen with ``root`` as /; never outside ``root``."""
    fd = open_target(root, guest_path, create_dir=create_dir)
    try:
        found = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    real_root = os.path.realpath(root)
    if not _inside(found, real_root):  # cannot happen with IN_ROOT; checked anyway
        raise VstuiError(f"{root}: '{guest_path}' resolved outside the guest ({found})")
    return Path(found)
