"""``chcontext``: run a command in a new security context, or in a guest's.

    chcontext [--root DIR] [--xid N] [--hostname H] [--domainname D|none]
              [--cap [!]CAP]... [--flag F]... [--secure] [--disconnect]
              [--silent] [--] CMD [ARGS...]

Without ``--xid``: a throw-away context on the host's file system, with its
own PID, UTS, IPC and mount namespaces (a fresh /proc, so ``ps`` shows only
its own processes), the guest capability bounding set adjusted by
``--cap``, and the host name if given. Its context id comes from a run-time
counter in util-vserver's dynamic range (49152..65535). A tiny reaper is
PID 1 and the command PID 2, so Ctrl-C and SIGTERM reach the command; with
``--flag fakeinit`` the command itself is PID 1.

With ``--xid N``: runs the command in the running guest whose context id is
N (``engine.runtime.exec_in``); ``--xid 0`` is the host itself.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine import caps
from engine.config import values
from engine.errors import GuestNotRunning, VstuiError, require_root
from engine.paths import Paths, is_name
from vstui.cli.common import report, run_tool
from vstui.cli.reducecap import drop_to, exec_command, is_option, take_value

TOOL = "chcontext"
USAGE = (
    "usage: chcontext [--xid N] [--hostname H] [--domainname D] [--cap [!]CAP]... "
    "[--flag F]... [--silent] [--disconnect] [--] CMD [ARGS...]"
)
FIRST_DYNAMIC_XID = 49152  # util-vserver's dynamic contexts; guests use 40000..49151
LAST_XID = 65535
XID_COUNTER = ".dynamic-xid"
# Flags that mean something for a throw-away context; the others belong to guests.
FLAGS = frozenset({"fakeinit", "namespace", "hideinfo", "sched", "lock"})
FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)


@dataclass
class Options:
    root: str | None = None
    xid: int | None = None
    hostname: str | None = None
    domainname: str | None = None
    cap_words: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    silent: bool = False
    disconnect: bool = False
    help: bool = False
    command: list[str] = field(default_factory=list)


VALUED = ("--root", "--xid", "--ctx", "--hostname", "--domainname", "--cap", "--flag")


def _xid(text: str) -> int:
    if not text.isdigit() or int(text) > LAST_XID:
        raise VstuiError(f"--xid '{text}' is not a context id (0..{LAST_XID})")
    return int(text)


def _apply(opts: Options, option: str, value: str) -> None:
    if option == "--root":
        opts.root = value
    elif option in ("--xid", "--ctx"):
        opts.xid = _xid(value)
    elif option in ("--hostname", "--domainname"):
        # the rules of S_HOSTNAME and S_DOMAINNAME: no control characters or
        # blanks in a name every prompt and log line will show
        parse = values.parse_hostname if option == "--hostname" else values.parse_domainname
        try:
            name = parse(value)
        except values.Invalid as exc:
            raise VstuiError(f"{option} {exc}") from None
        if option == "--hostname":
            opts.hostname = name
        else:
            opts.domainname = name
    elif option == "--cap":
        caps.normalize(value.lstrip("!~"))
        opts.cap_words.append(value)
    elif option == "--flag":
        for flag in value.replace(",", " ").split():
            name = flag.lower().lstrip("^~")
            if name not in FLAGS:
                raise VstuiError(f"--flag '{flag}' means nothing here; known: {sorted(FLAGS)}")
            opts.flags.add(name)


def parse(argv: Sequence[str]) -> Options:
    opts = Options()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        option = next((o for o in VALUED if is_option(arg, o)), None)
        if arg == "--":
            opts.command = args[i + 1 :]
            break
        if option:
            value, i = take_value(args, i, option)
            _apply(opts, option, value)
            continue
        if arg in ("-h", "--help"):
            opts.help = True
            break
        if arg == "--silent":
            opts.silent = True
        elif arg == "--disconnect":
            opts.disconnect = True
        elif arg == "--secure":  # util-vserver's switch: the default set already is
            pass
        elif arg.startswith("-"):
            raise VstuiError(f"unknown option '{arg}'; {USAGE}")
        else:
            opts.command = args[i:]
            break
        i += 1
    return opts


# -- context ids -----------------------------------------------------------------


def allocate_xid(paths: Paths) -> int:
    """Next dynamic context id from the run-time counter (wraps, skips guests' ids)."""
    counter = paths.run_base / XID_COUNTER
    counter.parent.mkdir(parents=True, exist_ok=True)
    in_use = {xid for _, xid in running_guests(paths)}
    fd = os.open(counter, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = os.read(fd, 32).decode().strip()
        xid = int(text) if text.isdigit() else FIRST_DYNAMIC_XID
        if not FIRST_DYNAMIC_XID <= xid <= LAST_XID:
            xid = FIRST_DYNAMIC_XID
        while xid in in_use:
            xid = xid + 1 if xid < LAST_XID else FIRST_DYNAMIC_XID
        following = xid + 1 if xid < LAST_XID else FIRST_DYNAMIC_XID
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{following}\n".encode())
        return xid
    finally:
        os.close(fd)


def running_guests(paths: Paths) -> list[tuple[str, int]]:
    """(name, xid) of every running guest of this root, from the run-state files."""
    from engine.runtime import state

    found = []
    try:
        names = sorted(e.name for e in os.scandir(paths.run_base) if is_name(e.name) and e.is_dir())
    except OSError:
        return []
    for name in names:
        run = state.read(paths, name)
        if run.running and run.xid is not None:
            found.append((name, run.xid))
    return found


def guest_by_xid(paths: Paths, xid: int) -> str:
    for name, guest_xid in running_guests(paths):
        if guest_xid == xid:
            return name
    raise GuestNotRunning(
        f"no running guest has context {xid}; `vserver-stat` lists the running contexts"
    )


# -- a new context ---------------------------------------------------------------


def _reap(command: list[int]) -> int:
    """PID 1's loop: reap orphans until the command exits; return its status."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        if pid == command[0]:
            return exit_status(status)


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def exit_status(status: int) -> int:
    """A shell's view of a wait status: the code, or 128 + signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _context_init(opts: Options, keep: frozenset[str]) -> int:
    """Runs as PID 1 of the new PID namespace; never returns to the caller's code."""
    from engine.runtime import context

    if opts.disconnect:
        os.setsid()
    else:
        context.die_with_parent()
    context.set_up(opts.hostname, opts.domainname)
    if "fakeinit" in opts.flags:
        _default_signals()
        drop_to(keep)
        return exec_command(TOOL, opts.command)
    # Handlers first: a PID 1 ignores every signal it has no handler for.
    command = [0]
    for sig in FORWARDED:
        signal.signal(sig, lambda num, _frame: command[0] and _forward(command[0], num))
    command[0] = os.fork()
    if command[0] == 0:
        _default_signals()
        drop_to(keep)
        os._exit(exec_command(TOOL, opts.command))
    drop_to(keep)
    caps.limit_own(keep)  # the reaper keeps no more than the command (SYS_PTRACE)
    return _reap(command)


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT, *FORWARDED):
        signal.signal(sig, signal.SIG_DFL)


def _child_main(opts: Options, keep: frozenset[str]) -> None:
    try:
        code = _context_init(opts, keep)
    except VstuiError as exc:
        code = report(TOOL, exc)
    except OSError as exc:
        code = report(TOOL, VstuiError(f"{exc.filename or 'setup'}: {exc.strerror}"))
    except BaseException as exc:  # never return into the parent's code in the child
        code = report(TOOL, VstuiError(f"{type(exc).__name__}: {exc}"))
    sys.stdout.flush()
    os._exit(code)


def new_context(paths: Paths, opts: Options) -> int:
    require_root("a new security context")
    keep = caps.effective_set(opts.cap_words)
    xid = allocate_xid(paths)
    if not opts.silent:
        if opts.hostname is not None:
            print(f"Host name is now {opts.hostname}")
        if opts.domainname is not None:
            print(f"Domain name is now {opts.domainname or 'none'}")
        print(f"New security context is {xid}")
    sys.stdout.flush()
    from engine.runtime import context

    context.unshare()
    # Like system(3): the terminal's Ctrl-C reaches the command directly.
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        _child_main(opts, keep)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda num, _frame: _forward(child, num))
    if opts.disconnect:
        return 0
    _, status = os.waitpid(child, 0)
    return exit_status(status)


# -- an existing context ---------------------------------------------------------


def in_context(paths: Paths, opts: Options) -> int:
    if opts.hostname is not None or opts.domainname is not None or opts.cap_words or opts.flags:
        raise VstuiError(
            "--hostname, --domainname, --cap and --flag apply to a new context only; "
            "drop them or drop --xid"
        )
    if opts.xid == 0:  # the host's own context
        return exec_command(TOOL, opts.command)
    name = guest_by_xid(paths, opts.xid or 0)
    from engine import runtime

    exec_in = getattr(runtime, "exec_in", None)
    if exec_in is None:
        raise VstuiError("engine.runtime.exec_in is not available in this build", name)
    return exec_in(paths, name, opts.command)


def _run(argv: Sequence[str]) -> int:
    opts = parse(argv)
    if opts.help:
        print(USAGE)
        return 0
    if not opts.command:
        raise VstuiError(f"no command given; {USAGE}")
    paths = Paths.from_root(opts.root)
    if opts.xid is not None:
        return in_context(paths, opts)
    return new_context(paths, opts)


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(TOOL, lambda: _run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
