"""The exec plan: what ``exec``/``enter``/``suexec`` apply, saved by the start.

The start writes ``run_dir/exec.plan`` (EXEC_OPS, netstrings like every plan
of engine.runtime.bootplan): the private and fakeinit flags, the rlimits and
nice floor, ``confine MASK PROGRAM`` (the capability mask and the packed
seccomp program), and the v1 ``tasks`` files and the cgroup2 group to join.
engine/helpers/vexec executes it, for the Python exec_in and the compiled
front end alike: exec gets exactly what the running guest was started with,
without parsing the config again. Python reads it only for its flags (the
supervisor: which signal stops init). Also here: the environment a command
starts with and vexec's refusals (the build writes both into consts.h).
Imports: os, netstrings, procfs, runfiles.
"""

from __future__ import annotations

import os

from engine.procfs import alive
from engine.runtime import netstrings
from engine.runtime.runfiles import read_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PLAN_FILE = "exec.plan"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# vexec's refusals: kind -> (engine error, message); {name} is the guest
REFUSALS = {
    "not_running": ("GuestNotRunning", "vserver '{name}' is not running; start it first"),
    "no_plan": ("GuestNotRunning", "vserver '{name}' has no exec plan or seccomp program in its "
                "run directory; restart the guest"),
    "private": ("PrivateGuest", "vserver '{name}' is private (S_FLAGS private): entering it "
                "from the host is refused; remove the flag and restart it to allow enter/exec"),
    "frozen": ("GuestFrozen", "vserver '{name}' is frozen; thaw it first (vserver {name} thaw)"),
}  # fmt: skip


EXEC_OPS: dict[str, int] = {
    "private": 1,  # 0|1: enter/exec from the host refused
    "fakeinit": 1,  # 0|1: init is the guest's own (its stop signal differs)
    "rlimit": 3,  # RES SOFT HARD (-1 = unlimited)
    "nice": 1,  # N: the nice value and its floor
    "confine": 2,  # MASK PROGRAM: bounding set, seccomp, permitted/effective
    "tasks": 1,  # PATH: a v1 cgroup joined through the thread's `tasks`
    "cgroup2": 1,  # DIR: the cgroup2 group the command is cloned into
}


def read(run_dir: str) -> dict[str, list[list[bytes]]] | None:
    """The running guest's exec plan, op -> argument lists; None when there is none."""
    try:
        with open(os.path.join(run_dir, PLAN_FILE), "rb") as f:
            data = f.read()
    except OSError:
        return None
    plan: dict[str, list[list[bytes]]] = {}
    for name, args in netstrings.ops(data, EXEC_OPS):
        plan.setdefault(name, []).append(args)
    return plan


def flag(run_dir: str, key: str) -> bool:
    """A ``private``/``fakeinit`` flag of the guest's exec plan (False when none)."""
    try:
        plan = read(run_dir)
    except ValueError:
        return False
    return bool(plan) and [b"1"] in plan.get(key, [])


def environment(user: Any, tty: bool) -> dict[str, str]:
    """The command's environment (``user``: guestusers.User or None for root)."""
    env = {"container": "vstui", "PATH": PATH_ENV}
    if tty:
        env["TERM"] = os.environ.get("TERM", "linux")
    if user is None:
        env.update(HOME="/root", USER="root", LOGNAME="root", SHELL="/bin/sh")
    else:
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name, SHELL=user.shell)
    return env


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def init_identity(run_dir: str) -> tuple[int, int] | None:
    """(pid, starttime) of the guest's live init, else None."""
    pid = _int(read_value(run_dir, "init.pid"))
    start = _int(read_value(run_dir, "init.start"))
    if pid is None or not alive(pid, start):
        return None
    return pid, start or 0
