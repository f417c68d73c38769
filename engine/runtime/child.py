"""Process B's last Python step: exec ``vboot`` with the serialized start plan.

B is the guest's PID 1, already in the new mount, PID, UTS, IPC, cgroup and
network namespaces. What it does up to init's exec (the tree bound onto
itself, host binds resolved inside the tree, pivot_root, /dev, /proc with
masks, read-only /sys, names, loopback, stdio, rlimits, nice floor, bounding
set, signals, the seccomp filter) is engine/helpers/boot.h, run by the static
helper ``vboot``: no interpreter works inside the namespaces, and no import
can ever read a module from the guest's tree.

``prepare`` runs in the starter before any fork: it writes the plan
(engine.runtime.bootplan) and the seccomp program into memfds and opens
vinit, so B only waits for "go" and calls ``run``.
"""

from __future__ import annotations

import os

from engine._record import Record
from engine.errors import VstuiError
from engine.runtime import bootplan
from engine.runtime import plan as P


class ChildError(VstuiError):
    """One line saying which set-up step failed and why."""


class BootInputs(Record):
    """What B hands to vboot: the helper's path and fds (-1 = none)."""

    __slots__ = _fields = ("vboot", "plan_fd", "seccomp_fd", "vinit_fd", "plan")
    vboot: str
    plan_fd: int
    seccomp_fd: int
    vinit_fd: int
    plan: bytes  # the serialized plan (the boot cache keeps it too)

    def close(self) -> None:
        """The starter's copies, once B has them (or the start failed)."""
        for fd in (self.plan_fd, self.seccomp_fd, self.vinit_fd):
            if fd >= 0:
                os.close(fd)


HELPERS = ("vboot", "vinit")


def helpers_ready(names: tuple[str, ...] = HELPERS) -> dict[str, str]:
    """The helpers' paths; builds them when one is missing or older than its sources."""
    from engine.helpers import HELPERS_DIR, helper_path

    def stale(name: str) -> bool:
        binary = helper_path(name)
        if not binary.exists():
            return True
        built = binary.stat().st_mtime
        sources = [binary.with_suffix(".c"), *HELPERS_DIR.glob("*.h")]
        return any(s.exists() and s.stat().st_mtime > built for s in sources)

    if any(stale(name) for name in names):
        from engine.helpers.build import build

        build()
    return {name: os.fspath(helper_path(name)) for name in names}


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def prepare(plan: P.StartPlan, program: bytes | None) -> BootInputs:
    """Serialize ``plan`` and open everything vboot reads (close-on-exec fds)."""
    paths = helpers_ready()
    fds: list[int] = []
    try:
        serialized = bootplan.serialize(plan)
        fds.append(_memfd("vstui-plan", serialized))
        fds.append(_memfd("vstui-seccomp", program) if program is not None else -1)
        fds.append(os.open(paths["vinit"], os.O_RDONLY | os.O_CLOEXEC) if plan.vinit else -1)
    except BaseException:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        raise
    return BootInputs(paths["vboot"], *fds, serialized)


def run(boot: BootInputs, log_fd: int, err_fd: int) -> None:
    """Exec vboot (in B); returns only by raising ChildError."""
    for fd in (boot.plan_fd, boot.seccomp_fd, boot.vinit_fd, log_fd, err_fd):
        if fd >= 0:
            os.set_inheritable(fd, True)
    argv = [boot.vboot, *(str(fd) for fd in (boot.plan_fd, log_fd, err_fd, boot.seccomp_fd,
                                             boot.vinit_fd))]  # fmt: skip
    try:
        os.execve(boot.vboot, argv, {})
    except OSError as exc:
        raise ChildError(f"exec {boot.vboot}: {exc.strerror or exc}") from None
