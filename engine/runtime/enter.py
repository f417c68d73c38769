"""``vserver NAME exec|suexec|enter``: join a running guest and run a command.

The fast path: only engine.paths, engine.runtime.profile/runfiles and
engine._libc are imported; the config is not parsed again. What the guest
runs under (its capability set, rlimits, nice floor, private flag, seccomp
program) was saved by the start in ``run_dir/exec.profile`` and
``seccomp.bpf`` (engine/runtime/profile.py).

Order matters:

1. init's identity (PID + start time) is checked; the namespace fds of
   /proc/INIT/ns/* are opened first, then the identity is checked again;
2. every host-side read and write happens before joining the mount
   namespace: profile, seccomp program, the sealed memfd copy of
   engine/helpers/vexec, cgroup.procs/tasks of every guest cgroup (v1 and
   the cgroup2 one, hybrid hosts included);
3. setns: ipc, uts, net, cgroup, mnt last (the kernel then sets our root
   and cwd to the guest's /); then pid, which only decides where children go;
4. rlimits and nice, seccomp, then the bounding set, permitted and effective
   cut to the guest's set;
5. exec of the sealed memfd vexec (no fork in Python after setns(pid)):
   vexec forks the first process inside the guest's PID namespace and that
   one execs the command. /proc/PID/exe of anything in the guest is thus
   never a host file: no host interpreter or binary a guest root holding
   CAP_SYS_PTRACE could grab and rewrite (CVE-2019-5736, runc's exeseal).
   With a terminal, the command gets a fresh pty from the guest's own devpts
   and we relay: the guest never holds the caller's terminal (TIOCSTI,
   CVE-2017-5226); without one, vexec's child starts a new session.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import stat

from engine import _libc
from engine.errors import GuestNotRunning, KernelError, PrivateGuest, VstuiError
from engine.paths import Paths
from engine.runtime import profile as profiles
from engine.runtime.profile import Profile

NAMESPACES = ("ipc", "uts", "net", "cgroup", "mnt")  # pid is joined last, apart
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOGIN_SHELLS = (("/bin/bash", "-l"), ("/bin/sh", "-l"))
HELPER = "vexec"
MFD_EXEC = 0x10  # kernel >= 6.3: say so, or vm.memfd_noexec may refuse or warn
SEALS = ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")


def read_profile(paths: Paths, name: str) -> Profile:
    found = profiles.read(os.fspath(paths.run_dir(name)))
    if found is None:
        raise GuestNotRunning(f"vserver '{name}' is not running (no exec profile)", name)
    return found


# -- the helper binary ----------------------------------------------------------------


def _helper_binary() -> str:
    """Path of the built vexec, built first when missing or older than its source."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers")
    binary = os.path.join(here, HELPER)
    try:
        fresh = os.stat(binary).st_mtime >= os.stat(f"{binary}.c").st_mtime
    except FileNotFoundError:
        fresh = os.path.exists(binary)
    if not fresh:
        from engine.helpers.build import build

        build()
    return binary


def sealed_helper(name: str) -> int:
    """A sealed, close-on-exec memfd holding a copy of vexec (runc's exeseal).

    A guest that opens /proc/PID/exe of the process vexec forks into it gets
    this private copy: nothing to write (F_SEAL_WRITE), nothing of the host's.
    """
    import fcntl

    binary = _helper_binary()
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        memfd = os.memfd_create(HELPER, flags | MFD_EXEC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a kernel before 6.3
            raise KernelError("memfd_create", HELPER, exc.errno or 0, name) from None
        memfd = os.memfd_create(HELPER, flags)
    try:
        src = os.open(binary, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(src).st_size
            done = 0
            while done < size:
                sent = os.sendfile(memfd, src, done, size - done)
                if sent == 0:
                    break
                done += sent
        finally:
            os.close(src)
        seals = 0
        for seal in SEALS:
            seals |= getattr(fcntl, seal)
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, seals)
    except OSError as exc:
        os.close(memfd)
        raise KernelError("seal helper copy", binary, exc.errno or 0, name) from None
    return memfd


# -- cgroups ------------------------------------------------------------------------


def _cgroup_mounts() -> list[tuple[str, frozenset[str]]]:
    """(mount point, super options) of every cgroup/cgroup2 mount."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = right.split()
            if fields and fields[0] in ("cgroup", "cgroup2"):
                opts = (
                    frozenset(["", *fields[2].split(",")])
                    if fields[0] == "cgroup2"
                    else (frozenset(fields[2].split(",")))
                )
                mounts.append((left.split()[4], opts))
    return mounts


def _mount_of(mounts: list[tuple[str, frozenset[str]]], key: str) -> str | None:
    """The mount of the hierarchy ``key`` ("" = cgroup2, else its controllers)."""
    want = frozenset(key.split(",")) if key else frozenset([""])
    for point, opts in mounts:
        if want <= opts and (key or "" in opts):
            return point
    return None


def _parse_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> hierarchy key (sorted controllers) -> path."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[",".join(sorted(parts[1].split(","))) if parts[1] else ""] = parts[2]
    return out


def _cgroup_file(point: str, path: str, key: str) -> str:
    """Where to write "0" to move this process into ``path`` of one hierarchy.

    v1: ``tasks`` moves just the calling thread, which the kernel does without
    the global threadgroup lock (and its RCU grace period, ~10 ms); we are
    single-threaded, so that is the whole process. cgroup2 has only
    cgroup.procs, and is joined on hybrid hosts too: otherwise the command
    sits outside the guest's cgroup2 cgroup (``0::/../..`` inside the guest),
    out of reach of its cgroup.procs and cgroup.kill.
    """
    base = f"{point}{path.rstrip('/')}"
    return f"{base}/tasks" if key else f"{base}/cgroup.procs"


def join_cgroups(init_pid: int, name: str) -> None:
    """Put this process into each of init's cgroups that differs from ours."""
    with open(f"/proc/{init_pid}/cgroup") as f:
        theirs = _parse_cgroup(f.read())
    with open("/proc/self/cgroup") as f:
        ours = _parse_cgroup(f.read())
    mounts: list[tuple[str, frozenset[str]]] | None = None
    for key, path in sorted(theirs.items(), key=lambda kv: not kv[0]):  # v1 first
        if ours.get(key) == path or ".." in path.split("/"):
            continue
        if mounts is None:
            mounts = _cgroup_mounts()
        point = _mount_of(mounts, key)
        if point is None:
            continue
        target = _cgroup_file(point, path, key)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as exc:
            raise KernelError("join cgroup", target, exc.errno or errno.EIO, name) from None


# -- capabilities ---------------------------------------------------------------------

_SYS_CAPSET = 126 if os.uname().machine != "aarch64" else 91


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def limit_caps(mask: int, last_cap: int) -> None:
    """Bounding set, permitted and effective cut to ``mask``; inheritable/ambient empty."""
    for cap in range(last_cap + 1):
        if not mask >> cap & 1:
            _libc.capbset_drop(cap)
    _libc.clear_ambient()
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    if _libc._libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "capset")


def _install_seccomp(program: bytes) -> None:
    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    prog = _Fprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _libc.prctl(22, 2, ctypes.addressof(prog))  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


# -- users inside the guest ---------------------------------------------------------


def _read_guest_file(path: str, limit: int = 1 << 20) -> str:
    """A small regular file of the guest (never block on a planted FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


class User:
    def __init__(self, name: str, uid: int, gid: int, home: str, shell: str) -> None:
        self.name, self.uid, self.gid, self.home, self.shell = name, uid, gid, home, shell
        self.groups: list[int] = []


def guest_user(who: str, guest: str) -> User:
    """Look ``who`` (name or number) up in the guest's /etc/passwd and /etc/group.

    Parsed by hand: NSS would load libraries from the guest into this process.
    """
    try:
        passwd = _read_guest_file("/etc/passwd")
    except OSError:
        passwd = ""
    for line in passwd.splitlines():
        f = line.split(":")
        if len(f) >= 7 and (f[0] == who or f[2] == who):
            user = User(f[0], int(f[2]), int(f[3]), f[5] or "/", f[6] or "/bin/sh")
            break
    else:
        if who.isdigit():
            user = User(who, int(who), int(who), "/", "/bin/sh")
        else:
            raise VstuiError(f"no user '{who}' in the guest's /etc/passwd", guest)
    try:
        group = _read_guest_file("/etc/group")
    except OSError:
        group = ""
    for line in group.splitlines():
        f = line.split(":")
        if len(f) >= 4 and user.name in f[3].split(",") and f[2].isdigit():
            user.groups.append(int(f[2]))
    return user


# -- the command --------------------------------------------------------------------


def _open_namespaces(pid: int, name: str) -> tuple[list[tuple[str, int]], int]:
    """(the fds of NAMESPACES in order, the pid namespace fd)."""
    fds: list[tuple[str, int]] = []
    try:
        for ns in (*NAMESPACES, "pid"):
            fds.append((ns, os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as exc:
        for _, fd in fds:
            os.close(fd)
        raise GuestNotRunning(f"vserver '{name}' is not running ({exc.strerror})", name) from None
    return fds[:-1], fds[-1][1]


def _environment(user: User | None, tty: bool) -> dict[str, str]:
    env = {"container": "vstui", "PATH": PATH_ENV}
    if tty:
        env["TERM"] = os.environ.get("TERM", "linux")
    if user is None:
        env.update(HOME="/root", USER="root", LOGNAME="root", SHELL="/bin/sh")
    else:
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name, SHELL=user.shell)
    return env


def _login_shell(user: User | None) -> list[str]:
    if user is not None and user.shell and os.path.exists(user.shell):
        return [user.shell, "-l"]
    for shell, flag in LOGIN_SHELLS:
        if os.path.exists(shell):
            return [shell, flag]
    return ["/bin/sh"]


def _not_running(name: str) -> GuestNotRunning:
    return GuestNotRunning(f"vserver '{name}' is not running; start it first", name)


def exec_in(
    paths: Paths,
    name: str,
    argv: list[str] | None,
    user: str | None = None,
    tty: bool | None = None,
) -> int:
    """Run ``argv`` (None = a login shell) in the running guest; its exit status."""
    run_dir = os.fspath(paths.run_dir(name))
    ident = profiles.init_identity(run_dir)
    if ident is None:
        raise _not_running(name)
    pid, start = ident
    profile = read_profile(paths, name)
    if profile.private:
        raise PrivateGuest(
            f"vserver '{name}' is private (S_FLAGS private): entering it from the host is "
            "refused; remove the flag and restart it to allow enter/exec",
            name,
        )
    if tty is None:
        tty = os.isatty(0)
    # Nothing may be imported once we are in the guest's mount namespace: the
    # import system would read modules from the guest's tree.
    run_on_pty = _pty_runner() if tty else None
    # The joining happens in a helper child: the caller (the console app,
    # a library user) keeps its own namespaces, cgroups and capabilities.
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:  # pragma: no cover - child
        code = 125
        try:
            os.close(err_r)
            code = _attach_and_run(pid, start, name, profile, argv, user, run_on_pty, err_w)
        except BaseException as exc:
            text = exc.message if isinstance(exc, VstuiError) else f"{type(exc).__name__}: {exc}"
            try:
                os.write(err_w, text.encode(errors="replace"))
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(err_w)
    # the command gets ^C and ^\ from the terminal (or vexec forwards them)
    saved = [(sig, signal.signal(sig, signal.SIG_IGN)) for sig in (signal.SIGINT, signal.SIGQUIT)]
    try:
        status = _wait(helper)
    finally:
        for sig, handler in saved:
            signal.signal(sig, handler)
    message = _read_error(err_r)
    if message:
        raise VstuiError(message, name)
    return wait_status(status)


def _read_error(fd: int) -> str:
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode(errors="replace").strip()


def _wait(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _attach_and_run(
    pid: int,
    start: int,
    name: str,
    profile: Profile,
    argv: list[str] | None,
    user: str | None,
    run_on_pty,
    err_w: int,
) -> int:
    """In the helper: join cgroups and namespaces, then exec vexec (or relay a pty)."""
    fds, pid_ns = _open_namespaces(pid, name)
    try:
        if not profiles.init_identity_matches(pid, start):  # PID reused meanwhile
            raise _not_running(name)
        helper = sealed_helper(name)  # a host file: read it before leaving the host's mounts
        last_cap = _last_cap()
        join_cgroups(pid, name)
        for ns, fd in fds:
            try:
                _libc.setns(fd, 0)
            except OSError as exc:
                raise KernelError("setns", f"/proc/{pid}/ns/{ns}", exc.errno or 0, name) from None
    finally:
        for _, fd in fds:
            os.close(fd)
    os.chdir("/")
    who = guest_user(user, name) if user is not None and user not in ("root", "0") else None
    if argv is None:
        argv = _login_shell(who)
    env = _environment(who, run_on_pty is not None)
    vexec_argv = _vexec_argv(name, argv, who, run_on_pty is not None)

    def finish() -> None:
        """Last step of the process that becomes vexec: pidns, limits, exec."""
        try:
            _libc.setns(pid_ns, _libc.CLONE_NEWPID)
        except OSError as exc:
            raise KernelError("setns", f"/proc/{pid}/ns/pid", exc.errno or 0, name) from None
        os.close(pid_ns)
        _apply_profile(profile, last_cap, name)
        os.execve(helper, vexec_argv, env)  # fexecve: execveat(fd, "", AT_EMPTY_PATH)

    if run_on_pty is None:
        finish()  # returns only by raising
    os.close(err_w)  # the pty's child keeps its copy until its exec
    return run_on_pty(finish, name, (helper, pid_ns))


def _vexec_argv(name: str, argv: list[str], who: User | None, tty: bool) -> list[str]:
    out = [HELPER, "-n", name]
    if tty:
        out.append("-t")
    if who is not None:
        out += ["-u", str(who.uid), "-g", str(who.gid), "-d", who.home]
        if who.groups:
            out += ["-G", ",".join(str(g) for g in who.groups)]
        else:
            out += ["-G", ""]
    return [*out, "--", *argv]


def _pty_runner():
    from engine.runtime.pty import run_on_pty

    return run_on_pty


def _apply_profile(profile: Profile, last_cap: int, name: str) -> None:
    try:
        for res, soft, hard in profile.rlimits:
            resource.setrlimit(res, (soft, hard))
        if profile.nice is not None:
            if os.getpriority(os.PRIO_PROCESS, 0) < profile.nice:
                os.setpriority(os.PRIO_PROCESS, 0, profile.nice)
            ceiling = min(max(0, 20 - profile.nice), resource.getrlimit(resource.RLIMIT_NICE)[1])
            resource.setrlimit(resource.RLIMIT_NICE, (ceiling, ceiling))
        if profile.seccomp:
            _install_seccomp(profile.seccomp)
        limit_caps(profile.caps_mask, last_cap)
    except OSError as exc:
        raise KernelError("limit", "exec profile", exc.errno or 0, name) from None


def wait_status(status: int) -> int:
    """A wait status as a shell exit code (signals -> 128+N)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
