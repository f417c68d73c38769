"""What the guest's PID 1 does inside its new namespaces, up to exec.

Runs in process B (PID 1 of the new PID namespace, already in the new mount,
UTS, IPC, cgroup and network namespaces). It performs a StartPlan:

1. the guest tree bind-mounted onto itself, the host binds mounted into it
   (targets resolved inside the tree through fds, never by string);
2. pivot_root(".", ".") and a lazy unmount of the old root: from here on
   nothing of the host file system is reachable;
3. /dev, /proc (with masks, read-only parts), read-only /sys;
4. hostname, domainname, loopback up, rlimits, nice floor, stdio, fds;
5. the capability bounding set, then the seccomp hook, then exec.

Any failure raises ChildError with one line; the caller writes it to the
error pipe and exits, so the start fails cleanly.
"""

from __future__ import annotations

import _socket  # not socket.py: its import costs ~3 ms of every start
import ctypes
import fcntl
import os
import resource
import signal
import stat
import struct
from collections.abc import Callable

from engine import _libc, safepath
from engine.caps import drop_bounding_set
from engine.errors import VstuiError
from engine.runtime import plan as P


class ChildError(VstuiError):
    """One line saying which set-up step failed and why."""


def _fail(what: str, target: str, exc: OSError) -> ChildError:
    return ChildError(f"{what} {target}: {exc.strerror or exc}")


# -- mount helpers ------------------------------------------------------------------

_ST_TO_MS = {
    os.ST_NOSUID: _libc.MS_NOSUID,
    os.ST_NODEV: _libc.MS_NODEV,
    os.ST_NOEXEC: _libc.MS_NOEXEC,
    os.ST_NOATIME: 1024,  # MS_NOATIME
    os.ST_NODIRATIME: 2048,  # MS_NODIRATIME
    os.ST_RELATIME: 1 << 21,  # MS_RELATIME
}


def _locked_flags(target: str) -> int:
    """The per-mount flags a bind remount must repeat (else it clears them)."""
    flags = os.statvfs(target).f_flag
    return sum(ms for st, ms in _ST_TO_MS.items() if flags & st)


def _remount_ro(target: str, extra: int = 0) -> None:
    flags = _libc.MS_BIND | _libc.MS_REMOUNT | _libc.MS_RDONLY | _locked_flags(target) | extra
    _libc.mount(None, target, None, flags)


def _mount_options(options: str) -> tuple[int, str | None]:
    """``ro,nosuid,size=10m`` -> (MS_* flags, "size=10m")."""
    names = {"ro": _libc.MS_RDONLY, "nosuid": _libc.MS_NOSUID, "nodev": _libc.MS_NODEV,
             "noexec": _libc.MS_NOEXEC, "bind": _libc.MS_BIND,
             "rbind": _libc.MS_BIND | _libc.MS_REC}  # fmt: skip
    flags, data = 0, []
    for word in filter(None, (options or "").split(",")):
        if word in names:
            flags |= names[word]
        elif word not in ("rw", "defaults", "suid", "dev", "exec"):
            data.append(word)
    return flags, ",".join(data) or None


# -- before pivot_root ---------------------------------------------------------------


def _remount_ro_in_root(root_fd: int, target: str, recursive: bool = False) -> None:
    """Remount the mount now on ``target`` read-only (and every submount: recursive).

    The fd we mounted onto names the directory *under* the new mount; a fresh
    lookup (still inside the tree) lands on the mount itself. No guest process
    exists yet, so nothing can swap the path in between. A recursive bind
    (host /usr with, say, /usr/local on its own file system) needs every
    mount below made read-only too, or the guest could write host binaries.
    """
    fd = safepath.open_in_root(root_fd, target, os.O_PATH)
    try:
        _remount_ro(safepath.fd_path(fd))
        if recursive:
            _libc.make_tree_readonly(fd)
    finally:
        os.close(fd)


def _host_bind(root_fd: int, step: P.HostBind) -> None:
    try:
        target = safepath.mkdirs_in_root(root_fd, step.target)
    except OSError as exc:
        raise _fail("bind target", step.target, exc) from None
    try:
        where = safepath.fd_path(target)
        flags = _libc.MS_BIND | (_libc.MS_REC if step.recursive else 0)
        _libc.mount(step.source, where, None, flags)
        if step.readonly:
            _remount_ro_in_root(root_fd, step.target, recursive=step.recursive)
    except OSError as exc:
        raise _fail(f"bind {step.source} onto", step.target, exc) from None
    finally:
        os.close(target)


def _host_mount(root_fd: int, step: P.HostMount) -> None:
    flags, data = _mount_options(step.options)
    try:
        target = safepath.mkdirs_in_root(root_fd, step.target)
    except OSError as exc:
        raise _fail("mount target", step.target, exc) from None
    try:
        where = safepath.fd_path(target)
        _libc.mount(step.source, where, step.fstype, flags & ~_libc.MS_RDONLY, data)
        if flags & _libc.MS_RDONLY:
            _remount_ro_in_root(root_fd, step.target)
    except OSError as exc:
        raise _fail(f"mount {step.fstype} {step.source} on", step.target, exc) from None
    finally:
        os.close(target)


def enter_root(plan: P.StartPlan) -> None:
    """Bind the tree onto itself, mount the host binds, pivot_root into it."""
    root = plan.root
    try:
        _libc.mount(root, root, None, _libc.MS_BIND | _libc.MS_REC)
    except OSError as exc:
        raise _fail("bind guest tree", root, exc) from None
    root_fd = safepath.open_root(root)
    try:
        for step in plan.before:
            if isinstance(step, P.HostBind):
                _host_bind(root_fd, step)
            elif isinstance(step, P.HostMount):
                _host_mount(root_fd, step)
        os.fchdir(root_fd)
    finally:
        os.close(root_fd)
    try:
        # new root and old root on the same spot; the old one is on top and
        # goes away with the lazy unmount (no directory needed for it)
        _libc.pivot_root(".", ".")
        _libc.umount(".", _libc.MNT_DETACH)
    except OSError as exc:
        raise _fail("pivot_root into", root, exc) from None
    os.chdir("/")


# -- after pivot_root -------------------------------------------------------------------


def _refuse_symlinks(paths: tuple[str, ...]) -> None:
    """/proc, /sys, /dev, /run must be real directories (runc CVE-2019-16884 class)."""
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.makedirs(path, 0o755, exist_ok=True)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ChildError(f"guest tree: {path} is not a directory; make it a plain directory")


def _mkdir(path: str) -> None:
    os.makedirs(path, 0o755, exist_ok=True)


def _do_step(step: P.Step) -> None:
    if isinstance(step, P.Mount):
        _mkdir(step.target)
        _libc.mount(step.source, step.target, step.fstype, step.flags, step.data)
    elif isinstance(step, P.Mask):
        _mask(step.target)
    elif isinstance(step, P.ReadOnly):
        if os.path.lexists(step.target):
            _libc.mount(step.target, step.target, None, _libc.MS_BIND | _libc.MS_REC)
            _remount_ro(step.target)
    elif isinstance(step, P.Bind):
        if os.path.lexists(step.source):
            _libc.mount(step.source, step.target, None, _libc.MS_BIND)
            if step.readonly:
                _remount_ro(step.target)
    elif isinstance(step, P.Device):
        os.mknod(step.target, stat.S_IFCHR | step.mode, os.makedev(step.major, step.minor))
        os.chmod(step.target, step.mode)
    elif isinstance(step, P.Symlink):
        os.symlink(step.points_to, step.target)
    elif isinstance(step, P.File):
        _write_file(step.target, step.content, step.mode)


def _mask(target: str) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        _libc.mount("tmpfs", target, "tmpfs", _libc.MS_RDONLY | P.NOSUID_NODEV_NOEXEC,
                    "mode=555,size=4k")  # fmt: skip
    else:
        _libc.mount("/dev/null", target, None, _libc.MS_BIND)


def _write_file(target: str, content: bytes, mode: int) -> None:
    """Replace ``target`` by a fresh file (never write through a planted symlink)."""
    _mkdir(os.path.dirname(target))
    tmp = f"{target}.vstui-tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, content)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def setup_inside(plan: P.StartPlan, vinit: bytes | None) -> None:
    """Every guest-absolute step, then the guest's own copy of vinit."""
    _refuse_symlinks(("/proc", "/sys", "/dev", "/run"))
    for step in plan.after:
        try:
            _do_step(step)
        except OSError as exc:
            kind = type(step).__name__.lower()
            raise _fail(kind, getattr(step, "target", "?"), exc) from None
    if plan.vinit and vinit is not None:
        try:
            _write_file(P.VINIT_PATH, vinit, 0o755)
        except OSError as exc:
            raise _fail("install init", P.VINIT_PATH, exc) from None


_SYS_OPEN_TREE = 428  # same number on every architecture (5.2+)
_SYS_MOVE_MOUNT = 429
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100


def _open_view(host_path: str | None) -> int | None:
    """A detached bind mount of ``host_path`` (open_tree CLONE), kept across pivot_root.

    A plain bind from /proc/self/fd/N after pivot_root fails (EINVAL): the
    file's mount is no longer in this namespace. A cloned tree is not in any
    and can be attached anywhere later with move_mount.
    """
    if host_path is None:
        return None
    fd = _LIBC.syscall(_SYS_OPEN_TREE, _AT_FDCWD, host_path.encode(),
                       _OPEN_TREE_CLONE | os.O_CLOEXEC)  # fmt: skip
    if fd < 0:
        err = ctypes.get_errno()
        raise ChildError(f"open_tree {host_path}: {os.strerror(err)}")
    return fd


def _mount_view(fd: int, target: str) -> None:
    """Attach the detached mount ``fd`` on ``target``, read-only."""
    try:
        if _LIBC.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, target.encode(),
                         _MOVE_MOUNT_F_EMPTY_PATH) < 0:  # fmt: skip
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        _remount_ro(target)
    except OSError as exc:
        raise _fail("bind view onto", target, exc) from None
    finally:
        os.close(fd)


# -- identity, limits, privileges ---------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def loopback_up() -> None:
    """Bring up ``lo`` in the guest's fresh network namespace."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, req))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
    finally:
        sock.close()


def set_names(hostname: str, domainname: str | None) -> None:
    _socket.sethostname(hostname)
    if domainname is not None:
        _libc.setdomainname(domainname)


def apply_limits(rlimits: tuple[tuple[int, int, int], ...], nice: int | None) -> None:
    """ULIMIT values and the nice floor (RLIMIT_NICE = 20 - nice: no going below)."""
    for res, soft, hard in rlimits:
        resource.setrlimit(res, (soft, hard))
    if nice is not None:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        # never raise it: without CAP_SYS_RESOURCE that fails, and lower is stricter
        ceiling = min(max(0, 20 - nice), resource.getrlimit(resource.RLIMIT_NICE)[1])
        resource.setrlimit(resource.RLIMIT_NICE, (ceiling, ceiling))


def reset_signals() -> None:
    """Python ignores SIGPIPE/SIGXFSZ; ignored signals survive exec: undo that."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                signal.SIGCHLD):  # fmt: skip
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def drop_privileges(caps: frozenset[str]) -> None:
    drop_bounding_set(caps)


# -- the whole of B --------------------------------------------------------------------


def run(
    plan: P.StartPlan,
    log_fd: int,
    err_fd: int,
    vinit: bytes | None,
    seccomp_hook: Callable[[], None] | None,
) -> None:
    """Set up the guest and exec its init; returns only by raising ChildError.

    Imports nothing after pivot_root: the import system would then read
    modules from the guest's tree (a planted module would run as host root).
    """
    os.umask(0o022)
    os.setsid()
    view_fd = _open_view(plan.meminfo_view)  # the host file is out of reach after pivot_root
    enter_root(plan)
    setup_inside(plan, vinit)
    if view_fd is not None:
        _mount_view(view_fd, "/proc/meminfo")
    try:
        set_names(plan.hostname, plan.domainname)
        if plan.own_netns:
            loopback_up()
    except OSError as exc:
        raise _fail("set", "hostname/loopback", exc) from None
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.set_inheritable(err_fd, False)
    safepath.close_host_fds((0, 1, 2, err_fd))
    try:
        apply_limits(plan.rlimits, plan.nice)
    except (OSError, ValueError) as exc:
        raise ChildError(f"ULIMIT/S_NICE: {exc}") from None
    try:
        drop_privileges(plan.caps)
    except OSError as exc:
        raise _fail("drop capabilities", "bounding set", exc) from None
    # --- seccomp hook: engine.seccomp.install(cfg), the very last step before exec ---
    if seccomp_hook is not None:
        seccomp_hook()
    reset_signals()
    try:
        os.execve(plan.argv[0], list(plan.argv), dict(plan.env))
    except OSError as exc:
        raise _fail("exec", plan.argv[0], exc) from None
