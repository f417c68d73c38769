"""The exec plan: what ``exec``/``enter``/``suexec`` apply, saved by the start.

The start writes ``run_dir/exec.plan`` (EXEC_OPS, netstrings like every plan
of engine.runtime.bootplan): the private and fakeinit flags, the rlimits and
nice floor, ``confine MASK PROGRAM`` (the capability mask and the packed
seccomp program), and the v1 ``tasks`` files and the cgroup2 group to join.
engine/helpers/vexec executes it, for the Python exec_in and the compiled
front end alike: exec gets exactly what the running guest was started with,
without parsing the config again. Python reads it only for its flags (the
supervisor: which signal stops init). Imports: os, netstrings, runfiles.
"""

from __future__ import annotations

import os

from engine.runtime import netstrings
from engine.runtime.runfiles import alive, read_value

PLAN_FILE = "exec.plan"

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
