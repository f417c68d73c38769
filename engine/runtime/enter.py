"""``vserver NAME exec|suexec|enter``: run a command in a running guest.

One executor for every way in: engine/helpers/vexec, which the compiled
front end (``vserver NAME exec`` without Python) and this module exec with
the same arguments: the guest's run directory, the user, the command. vexec
reads what the start decided (run_dir/exec.plan: engine.runtime.profile)
and init's identity, joins the guest's namespaces and cgroups, confines
itself and runs the command (its docstring has the order and the reasons).
It refuses a guest that is not running, private or frozen with the
messages of engine.runtime.profile.REFUSALS (generated into consts.h).

Python adds only what needs the guest's own files, read from the host
through init's root (/proc/INIT/root, resolved with openat2
RESOLVE_IN_ROOT: a symlink the guest plants cannot lead out): the user of
``suexec`` (its /etc/passwd and /etc/group, parsed by hand: NSS would load
the guest's libraries into this process), the login shell of ``enter``, and
a fresh pty from the guest's own devpts, relayed here: the guest never holds
the caller's terminal (TIOCSTI, CVE-2017-5226). The fast path imports only
engine.errors, engine.runtime.profile/runfiles/netstrings.
"""

from __future__ import annotations

import os

from engine.errors import GuestFrozen, GuestNotRunning, PrivateGuest, VstuiError
from engine.runtime import profile as profiles
from engine.runtime.profile import REFUSALS, environment

TYPE_CHECKING = False  # importing typing costs ~4 ms of `vserver NAME exec`
if TYPE_CHECKING:
    from engine.guestusers import User
    from engine.paths import Paths

LOGIN_SHELLS = (("/bin/bash", "-l"), ("/bin/sh", "-l"))
HELPER = "vexec"

ERRORS: dict[str, type[VstuiError]] = {
    "GuestNotRunning": GuestNotRunning, "PrivateGuest": PrivateGuest, "GuestFrozen": GuestFrozen,
}  # fmt: skip


def _run_dir(paths: Paths, name: str) -> str:
    """run_dir as a string, without building Path objects when Paths can say."""
    fast = getattr(paths, "run_dir_str", None)
    return fast(name) if fast is not None else os.fspath(paths.run_dir(name))


def helper_binary() -> str:
    """Path of the built vexec (VstuiError with the fix when it is missing or stale)."""
    from engine.helpers import require

    return require(HELPER)[HELPER]


def refusal(kind: str, name: str) -> VstuiError:
    cls, text = REFUSALS[kind]
    return ERRORS[cls](text.format(name=name), name)


# -- the guest's own files, through init's root ------------------------------------------


def _guest_root(run_dir: str, name: str) -> int:
    """An O_PATH fd of the running guest's / (its mount namespace's root)."""
    ident = profiles.init_identity(run_dir)
    fd = -1
    if ident is not None:
        try:
            fd = os.open(f"/proc/{ident[0]}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            fd = -1
    if fd >= 0 and profiles.init_identity(run_dir) == ident:  # not a reused PID
        return fd
    if fd >= 0:
        os.close(fd)
    raise refusal("not_running", name)


def _read_guest_file(root: int, path: str) -> str:
    """A small regular file of the guest (never a planted FIFO or device); "" if none."""
    from engine import safepath

    try:
        return safepath.read_regular(root, path).decode(errors="replace")
    except OSError:
        return ""


def guest_user(root: int, who: str, guest: str) -> User:
    """Look ``who`` (name or number) up in the guest's /etc/passwd and /etc/group."""
    from engine import guestusers
    from engine.guestusers import User
    from engine.text import visible

    user = guestusers.find_user(_read_guest_file(root, "/etc/passwd"), who)
    if user is None:
        uid = guestusers.parse_id(who)
        if uid is None:
            raise VstuiError(
                f"no user '{visible(who)}' in the guest's /etc/passwd; give a name "
                f"it lists or a number 0..{guestusers.MAX_ID}",
                guest,
            )
        user = User(who, uid, uid)
    user.groups = guestusers.groups_of(_read_guest_file(root, "/etc/group"), user.name)
    return user


def _exists(root: int, path: str) -> bool:
    from engine import safepath

    try:
        os.close(safepath.open_in_root(root, path, os.O_PATH))
    except OSError:
        return False
    return True


def login_shell(root: int, user: User | None) -> list[str]:
    if user is not None and user.shell and _exists(root, user.shell):
        return [user.shell, "-l"]
    for shell, flag in LOGIN_SHELLS:
        if _exists(root, shell):
            return [shell, flag]
    return ["/bin/sh"]


# -- the command -----------------------------------------------------------------------


def vexec_argv(run_dir: str, name: str, argv: list[str], user: User | None, tty: bool) -> list[str]:
    """vexec's arguments (the compiled front end builds the same for a plain exec)."""
    out = [HELPER, "-R", run_dir, "-n", name]
    if tty:
        out.append("-t")
    if user is not None:
        out += ["-u", str(user.uid), "-g", str(user.gid), "-d", user.home]
        out += ["-G", ",".join(str(g) for g in user.groups)]
    return [*out, "--", *argv]


def exec_in(
    paths: Paths,
    name: str,
    argv: list[str] | None,
    user: str | None = None,
    tty: bool | None = None,
    replace: bool = False,
) -> int:
    """Run ``argv`` (None = a login shell) in the running guest; its exit status.

    ``user``: a name or number from the guest's /etc/passwd (suexec).
    ``tty=None``: a pty when any of fds 0-2 is a terminal (handing the
    caller's terminal, even on stdout alone, to a guest process would let it
    read the admin's keys). ``replace``: without a terminal, this process
    becomes vexec (the CLI's way: a fork and the interpreter's teardown
    saved) and never returns; vexec then prints its own refusal.
    """
    run_dir = _run_dir(paths, name)
    if tty is None:
        tty = any(os.isatty(fd) for fd in (0, 1, 2))
    who, pty = None, None
    if user is not None or argv is None or tty:  # the guest's own files are needed
        root = _guest_root(run_dir, name)
        try:
            who = guest_user(root, user, name) if user is not None else None
            argv = argv if argv is not None else login_shell(root, who)
            if tty:
                from engine.runtime.pty import open_guest_pty

                pty = open_guest_pty(root, name)
        finally:
            os.close(root)
    assert argv is not None
    binary = helper_binary()
    args = vexec_argv(run_dir, name, argv, who, tty)
    env = environment(who, tty)
    if pty is not None:
        from engine.runtime.pty import run_on_pty

        return run_on_pty(pty, lambda: os.execve(binary, args, env), name)
    if replace:
        os.execve(binary, args, env)  # returns only by raising
    return _run(binary, args, env, name)


def _run(binary: str, args: list[str], env: dict[str, str], name: str) -> int:
    """vexec in a child; its refusal as the engine's error, else the command's status.

    The joining happens in that child: the caller (the console app, a library
    user) keeps its own namespaces, cgroups and capabilities.
    """
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(err_r)
            os.set_inheritable(err_w, True)
            os.execve(binary, [args[0], "-E", str(err_w), *args[1:]], env)
        finally:
            os._exit(127)
    os.close(err_w)
    status = _wait_ignoring_interrupts(pid)
    line = _read_error(err_r)
    if line:
        kind, _, message = line.partition(" ")
        raise ERRORS.get(kind, VstuiError)(message, name)
    return wait_status(status)


def _wait_ignoring_interrupts(pid: int) -> int:
    """Wait for ``pid``; the command gets ^C and ^\\ (from the terminal or vexec)."""
    import _signal  # signal.py would import enum for its Signals class (~2 ms)

    sigs = (_signal.SIGINT, _signal.SIGQUIT)
    saved = [(sig, _signal.signal(sig, _signal.SIG_IGN)) for sig in sigs]
    try:
        while True:
            try:
                return os.waitpid(pid, 0)[1]
            except InterruptedError:
                continue
    finally:
        for sig, handler in saved:
            _signal.signal(sig, handler)


def _read_error(fd: int) -> str:
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode(errors="replace").strip()


def wait_status(status: int) -> int:
    """A wait status as a shell exit code (signals -> 128+N)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
