"""``vserver NAME exec|suexec|enter``: join a running guest and run a command.

The fast path imports only engine.errors, engine.runtime.profile/runfiles
and fcntl: no ctypes, no pathlib, no config parse. What the guest runs under
(its capability set, rlimits, nice floor, private flag, seccomp program) was
saved by the start in ``run_dir/exec.profile`` and ``seccomp.bpf``
(engine/runtime/profile.py); the work is done by the static helper
engine/helpers/vexec, run from a sealed memfd copy.

Order matters:

1. init's identity (PID + start time) is checked; the namespace fds of
   /proc/INIT/ns/* are opened first, then the identity is checked again;
2. every host-side read and write happens here, in the host's mounts: the
   profile, the seccomp program (opened, read by vexec before any setns),
   the sealed memfd copy of vexec, the v1 cgroups (the calling thread's
   ``tasks``: no RCU grace period) and the cgroup2 directory (an fd);
3. exec of the sealed memfd vexec, which joins ipc, uts, net, mnt (the
   kernel then sets root and cwd to the guest's /), pid and time (both
   decide where vexec's child goes: the guest's uptime and boot clock),
   applies rlimits and nice, clone3()s its child straight into the guest's cgroup2 group
   (CLONE_INTO_CGROUP: no cgroup.procs migration, ~14 ms saved), joins the
   cgroup namespace, installs the seccomp filter and cuts the bounding set,
   permitted and effective to the guest's set (inheritable/ambient empty)
   in both processes. The child, first in the guest's PID namespace, starts
   a session and execs the command. /proc/PID/exe of anything in the guest
   is thus never a host file: no host interpreter or binary a guest root
   holding CAP_SYS_PTRACE could grab and rewrite (CVE-2019-5736, runc's
   exeseal). With a terminal or a user to look up (``enter``, ``suexec``),
   Python joins ipc, uts, net and mnt itself first, to read the guest's
   /etc/passwd or open a fresh pty from the guest's own devpts and relay: the
   guest never holds the caller's terminal (TIOCSTI, CVE-2017-5226).
"""

from __future__ import annotations

import errno
import os
import stat

from engine.errors import GuestFrozen, GuestNotRunning, KernelError, PrivateGuest, VstuiError
from engine.runtime import profile as profiles
from engine.runtime import runfiles

TYPE_CHECKING = False  # importing typing costs ~4 ms of `vserver NAME exec`
if TYPE_CHECKING:
    from engine.paths import Paths

NAMESPACES = ("ipc", "uts", "net", "mnt")  # joined before vexec's clone, pid last
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOGIN_SHELLS = (("/bin/bash", "-l"), ("/bin/sh", "-l"))
HELPER = "vexec"
MFD_EXEC = 0x10  # kernel >= 6.3: say so, or vm.memfd_noexec may refuse or warn
SEALS = ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")
HELPERS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers")


def _run_dir(paths: Paths, name: str) -> str:
    """run_dir as a string, without building Path objects when Paths can say."""
    fast = getattr(paths, "run_dir_str", None)
    return fast(name) if fast is not None else os.fspath(paths.run_dir(name))


# -- the helper binary ----------------------------------------------------------------


def _helper_binary() -> str:
    """Path of the built vexec, built first when missing or older than its source."""
    binary = os.path.join(HELPERS_DIR, HELPER)
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
            runfiles.copy_fd(src, memfd, os.fstat(src).st_size)
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


def join_cgroups(init_pid: int, name: str) -> int:
    """Join each of init's v1 cgroups that differs from ours; its cgroup2 dir fd.

    The fd (inheritable, -1 when init's cgroup2 group is ours or unknown) is
    for vexec's clone3(CLONE_INTO_CGROUP): creating the command there costs
    nothing, moving a process there costs an RCU grace period.
    """
    with open(f"/proc/{init_pid}/cgroup") as f:
        theirs = _parse_cgroup(f.read())
    with open("/proc/self/cgroup") as f:
        ours = _parse_cgroup(f.read())
    mounts: list[tuple[str, frozenset[str]]] | None = None
    cgroup2 = -1
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
            if not key:
                cgroup2 = _open_inheritable(os.path.dirname(target), os.O_DIRECTORY)
                continue
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as exc:
            if cgroup2 >= 0:
                os.close(cgroup2)
            raise KernelError("join cgroup", target, exc.errno or errno.EIO, name) from None
    return cgroup2


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


def _open_namespaces(pid: int, name: str) -> dict[str, int]:
    """Inheritable fds of init's namespaces, by name (vexec joins them)."""
    fds: dict[str, int] = {}
    try:
        for ns in (*NAMESPACES, "pid", "cgroup"):
            fds[ns] = _open_inheritable(f"/proc/{pid}/ns/{ns}")
        fds["time"] = _open_time_namespace(pid)
    except OSError as exc:
        _close_all(fds.values())
        raise GuestNotRunning(f"vserver '{name}' is not running ({exc.strerror})", name) from None
    return fds


def _open_time_namespace(pid: int) -> int:
    """Inheritable fd of init's time namespace; -1 when it is ours (nothing to join).

    A guest started before guests had their own time namespace (or on a
    kernel without them: no ns/time file) shares the host's clocks.
    """
    try:
        fd = _open_inheritable(f"/proc/{pid}/ns/time")
    except FileNotFoundError:  # kernel < 5.6 (or init just died: checked next)
        return -1
    theirs = os.fstat(fd)
    ours = os.stat("/proc/self/ns/time")
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        os.close(fd)
        return -1
    return fd


def _open_inheritable(path: str, flags: int = 0) -> int:
    """An fd vexec inherits (Python opens fds close-on-exec: PEP 446)."""
    fd = os.open(path, os.O_RDONLY | flags)
    os.set_inheritable(fd, True)
    return fd


def _close_all(fds) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def environment(user: User | None, tty: bool) -> dict[str, str]:
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
    replace: bool = False,
) -> int:
    """Run ``argv`` (None = a login shell) in the running guest; its exit status.

    ``replace``: without a terminal, this process itself becomes the exec
    helper instead of forking one and waiting (the CLI's way: a fork and the
    interpreter's teardown saved); it then never returns, the helper exits
    with the command's status.
    """
    run_dir = _run_dir(paths, name)
    ident = profiles.init_identity(run_dir)
    if ident is None:
        raise _not_running(name)
    pid, start = ident
    profile = profiles.read(run_dir, program=False)
    if profile is None:
        raise GuestNotRunning(f"vserver '{name}' is not running (no exec profile)", name)
    if profile.private:
        raise PrivateGuest(
            f"vserver '{name}' is private (S_FLAGS private): entering it from the host is "
            "refused; remove the flag and restart it to allow enter/exec",
            name,
        )
    if os.path.exists(os.path.join(run_dir, runfiles.FROZEN_FILE)):  # joining it would hang
        raise GuestFrozen(f"vserver '{name}' is frozen; thaw it first (vserver {name} thaw)", name)
    if tty is None:
        # any terminal among 0-2: handing the caller's terminal to a guest
        # process (even on stdout alone) would let it read the admin's keys
        tty = any(os.isatty(fd) for fd in (0, 1, 2))
    # Nothing may be imported once we are in the guest's mount namespace: the
    # import system would read modules from the guest's tree.
    slow = tty or (user is not None and user not in ("root", "0")) or argv is None
    run_on_pty = _pty_runner() if tty else None
    setns = _setns() if slow else None
    target = (pid, start, name, run_dir, profile)
    if replace and run_on_pty is None:
        return _attach_and_run(target, argv, user, None, setns, -1)
    # The joining happens in a helper child: the caller (the console app,
    # a library user) keeps its own namespaces, cgroups and capabilities.
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:  # pragma: no cover - child
        code = 125
        try:
            os.close(err_r)
            code = _attach_and_run(target, argv, user, run_on_pty, setns, err_w)
        except BaseException as exc:
            text = exc.message if isinstance(exc, VstuiError) else f"{type(exc).__name__}: {exc}"
            try:
                os.write(err_w, text.encode(errors="replace"))
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(err_w)
    status = _wait_ignoring_interrupts(helper)
    message = _read_error(err_r)
    if message:
        raise VstuiError(message, name)
    return wait_status(status)


def _wait_ignoring_interrupts(pid: int) -> int:
    """Wait for ``pid``; the command gets ^C and ^\\ (from the terminal or vexec)."""
    import _signal  # signal.py would import enum for its Signals class (~2 ms)

    sigs = (_signal.SIGINT, _signal.SIGQUIT)
    saved = [(sig, _signal.signal(sig, _signal.SIG_IGN)) for sig in sigs]
    try:
        return _wait(pid)
    finally:
        for sig, handler in saved:
            _signal.signal(sig, handler)


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


def _open_program(run_dir: str) -> int:
    """Inheritable fd of the guest's seccomp program (every start writes one)."""
    try:
        return _open_inheritable(os.path.join(run_dir, profiles.SECCOMP_FILE))
    except FileNotFoundError:
        # never run a command unfiltered because a file went missing
        name = os.path.basename(run_dir)
        raise GuestNotRunning(
            f"vserver '{name}' has no seccomp program in {run_dir}; restart the guest", name
        ) from None


def _attach_and_run(target, argv, user, run_on_pty, setns, err_w: int) -> int:
    """In the helper: gather the host-side fds, then exec vexec (or relay a pty)."""
    pid, start, name, run_dir, profile = target
    fds = _open_namespaces(pid, name)
    program = cgroup2 = -1
    try:
        if not profiles.init_identity_matches(pid, start):  # PID reused meanwhile
            raise _not_running(name)
        helper = sealed_helper(name)  # a host file: read it before leaving the host's mounts
        program = _open_program(run_dir)
        cgroup2 = join_cgroups(pid, name)
    except BaseException:
        _close_all([*fds.values(), program, cgroup2])
        raise
    passed = [fds["pid"], fds["time"], fds["cgroup"], program, cgroup2]
    who = None
    if setns is not None:  # Python needs the guest's files (passwd, devpts) itself
        for ns in NAMESPACES:
            try:
                setns(fds[ns], 0)
            except OSError as exc:
                raise KernelError("setns", f"/proc/{pid}/ns/{ns}", exc.errno or 0, name) from None
            os.close(fds[ns])
        os.chdir("/")
        who = guest_user(user, name) if user is not None and user not in ("root", "0") else None
        if argv is None:
            argv = _login_shell(who)
        before = [fds["pid"]]
    else:
        before = [fds[ns] for ns in NAMESPACES] + [fds["pid"]]
    if fds["time"] >= 0:  # like pid, it decides where vexec's child goes
        before.append(fds["time"])
    joins = (before, fds["cgroup"], cgroup2, program)
    env = environment(who, run_on_pty is not None)
    vexec_argv = _vexec_argv(name, argv, who, run_on_pty is not None, profile, joins)

    def finish() -> None:
        os.execve(helper, vexec_argv, env)  # fexecve: execveat(fd, "", AT_EMPTY_PATH)

    if run_on_pty is None:
        finish()  # returns only by raising
    os.close(err_w)  # the pty's child keeps its copy until its exec
    return run_on_pty(finish, name, (helper, *(fd for fd in passed if fd >= 0)))


def _vexec_argv(name, argv, who, tty, profile, joins) -> list[str]:
    """vexec's options: the user, the fds to join and the profile to apply."""
    before, cgroup_ns, cgroup2, program = joins
    out = [HELPER, "-n", name]
    if tty:
        out.append("-t")
    if who is not None:
        out += ["-u", str(who.uid), "-g", str(who.gid), "-d", who.home]
        out += ["-G", ",".join(str(g) for g in who.groups)]
    for fd in before:
        out += ["-s", str(fd)]
    out += ["-a", str(cgroup_ns)]
    if cgroup2 >= 0:
        out += ["-C", str(cgroup2)]
    if program >= 0:
        out += ["-S", str(program)]
    for res, soft, hard in profile.rlimits:
        out += ["-r", f"{res},{soft},{hard}"]
    if profile.nice is not None:
        out += ["-i", str(profile.nice)]
    out += ["-c", f"{profile.caps_mask:x}"]
    return [*out, "--", *argv]


def _pty_runner():
    from engine.runtime.pty import run_on_pty

    return run_on_pty


def _setns():
    from engine._libc import setns  # ctypes: only when Python joins namespaces itself

    return setns


def wait_status(status: int) -> int:
    """A wait status as a shell exit code (signals -> 128+N)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
