"""The exec profile: what ``exec``/``enter``/``suexec`` apply, saved by the start.

``start.write_exec_profile`` writes ``run_dir/exec.profile`` (one ``key
value...`` line each: ``caps HEXMASK``, ``private 0|1``, ``nice N``,
``rlimit RES SOFT HARD``) and the guest's packed seccomp program in
``run_dir/seccomp.bpf``. The exec path reads only these and init's identity:
no config parse, no dataclasses, no seccomp assembly, and exec gets exactly
what the running guest was started with. Imports: os and runfiles only.
"""

from __future__ import annotations

import os

from engine.runtime.runfiles import alive, read_value

PROFILE_FILE = "exec.profile"
SECCOMP_FILE = "seccomp.bpf"


class Profile:
    """The running guest's capability mask, rlimits, nice floor, private flag, filter."""

    __slots__ = ("caps_mask", "nice", "private", "rlimits", "seccomp")

    def __init__(self) -> None:
        self.caps_mask = 0
        self.private = False
        self.nice: int | None = None
        self.rlimits: list[tuple[int, int, int]] = []
        self.seccomp: bytes | None = None


def parse(text: str) -> Profile:
    """``exec.profile`` text -> Profile (unknown keys are skipped: newer starts)."""
    profile = Profile()
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        key = words[0]
        if key == "caps":
            profile.caps_mask = int(words[1], 16)
        elif key == "private":
            profile.private = words[1] == "1"
        elif key == "nice":
            profile.nice = int(words[1])
        elif key == "rlimit":
            profile.rlimits.append((int(words[1]), int(words[2]), int(words[3])))
    return profile


def read(run_dir: str, program: bool = True) -> Profile | None:
    """The saved profile of a running guest; None when the start wrote none.

    ``program=False`` leaves ``seccomp`` None: exec passes vexec an fd of
    ``seccomp.bpf`` instead of reading it.
    """
    text = read_value(run_dir, PROFILE_FILE)
    if text is None:
        return None
    profile = parse(text)
    if not program:
        return profile
    try:
        with open(os.path.join(run_dir, SECCOMP_FILE), "rb") as f:
            profile.seccomp = f.read() or None
    except FileNotFoundError:
        pass
    return profile


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


def init_identity_matches(pid: int, start: int) -> bool:
    """True while ``pid`` is still the init that started at ``start``."""
    return alive(pid, start or None)
