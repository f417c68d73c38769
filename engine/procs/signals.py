"""vkill's logic: signal processes of a guest by their PID inside it.

Targets are chosen from one scan, then each is re-checked just before the
signal: a pidfd pins the process, and its start time and context must still
be what was chosen (a PID reused in between is never signalled). Signals go
through ``pidfd_send_signal``, so the check and the kill name one process.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.datamodel import SPECTATOR_XID
from engine.errors import GuestNotRunning, PrivateGuest, VstuiError
from engine.paths import Paths
from engine.procs.attribution import (
    RunInfo,
    attribute,
    cgroup_members,
    guest_flags,
    resolve_guest,
    running_guests,
)
from engine.procs.scan import Proc, Scanner, parse_stat


class InvalidSignal(VstuiError):
    """util-vserver: "Invalid signal specified"."""


class NoPid(VstuiError):
    """util-vserver: "No pid specified"."""


def parse_signal(word: str) -> int:
    """A signal by number or name, ``SIG`` prefix optional (``9``, ``KILL``, ``sigterm``)."""
    text = word.strip().upper()
    if text.isdigit():
        number = int(text)
        if 0 <= number < signal.NSIG:
            return number
        raise InvalidSignal(f"Invalid signal specified: '{word}' (see `kill -l`)")
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(signal.Signals[name])
    except KeyError:
        pass
    if name.startswith(("SIGRTMIN+", "SIGRTMAX-")) and name[9:].isdigit():
        base = signal.SIGRTMIN if name.startswith("SIGRTMIN") else signal.SIGRTMAX
        number = base + int(name[9:]) * (1 if name.startswith("SIGRTMIN") else -1)
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return int(number)
    raise InvalidSignal(f"Invalid signal specified: '{word}' (see `kill -l`)")


@dataclass(frozen=True, slots=True)
class Target:
    """One process chosen to be signalled."""

    pid: int  # host PID
    starttime: int
    guest: str | None  # None: a host process
    nspid: int  # as given / as seen in the guest


EXITED = "process exited before it could be signalled"


@dataclass(frozen=True, slots=True)
class Outcome:
    target: Target
    error: str | None  # None: signalled


def _stat_of(proc_root: str, pid: int) -> Proc | None:
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            return parse_stat(f.read(), pid)
    except OSError:
        return None


def _refuse_private(paths: Paths, name: str) -> None:
    if "private" in guest_flags(paths, name):
        raise PrivateGuest(
            "guest is private: its processes cannot be signalled from the host "
            f"(remove `private` from S_FLAGS in {paths.config_file(name)})",
            name,
        )


def choose(
    paths: Paths,
    xid_word: str | None,
    pids: Sequence[int],
    proc_root: str = "/proc",
    cgroup_fs: Path | None = None,
) -> list[Target]:
    """The processes vkill would signal, checked against the guest.

    With a guest (name or xid): PIDs are as seen inside it (1 = its init);
    no PIDs = every process of the guest. Without: host PIDs, which must not
    belong to a private guest.
    """
    if xid_word is not None and xid_word.strip() == str(SPECTATOR_XID):
        raise VstuiError("context 1 (ALL_PROC) only watches: it cannot signal")
    guest = resolve_guest(paths, xid_word, proc_root) if xid_word is not None else None
    if guest is None:
        if not pids:
            raise NoPid("No pid specified (a PID, or --xid NAME for every process of a guest)")
        if xid_word is not None:  # --xid 0: host PIDs that are the host's
            return _host_targets(paths, pids, proc_root, cgroup_fs, host_only=True)
        return _host_targets(paths, pids, proc_root, cgroup_fs, host_only=False)
    return _guest_targets(paths, guest, pids, proc_root, cgroup_fs)


def _host_targets(
    paths: Paths, pids: Sequence[int], proc_root: str, cgroup_fs: Path | None, host_only: bool
) -> list[Target]:
    attribution = attribute(paths, cgroup_fs, running_guests(paths, proc_root))
    out = []
    for pid in pids:
        ctx = attribution.by_pid.get(pid)
        if ctx is not None:
            if host_only:
                raise VstuiError(
                    f"process {pid} belongs to guest {ctx.name} (context {ctx.xid}), "
                    "not to context 0; use --xid " + ctx.name
                )
            _refuse_private(paths, ctx.name)
        proc = _stat_of(proc_root, pid)
        if proc is None:
            raise VstuiError(f"no process {pid}")
        out.append(Target(pid, proc.starttime, ctx.name if ctx else None, pid))
    return out


def _guest_targets(
    paths: Paths, guest: RunInfo, pids: Sequence[int], proc_root: str, cgroup_fs: Path | None
) -> list[Target]:
    name = guest.name
    if not guest.active:
        raise GuestNotRunning(f"guest is not running; start it with `vserver {name} start`", name)
    _refuse_private(paths, name)
    members = cgroup_members(paths, name, cgroup_fs)
    if members is None:
        raise GuestNotRunning(
            f"guest has no cgroup {paths.cgroup_name(name)}; is it running?", name
        )
    procs = Scanner(proc_root).scan(want_nspid=members)
    mine = {pid: p for pid, p in procs.items() if pid in members}
    if not pids:
        return [Target(p.pid, p.starttime, name, p.nspid) for p in mine.values()]
    by_nspid = {p.nspid: p for p in mine.values()}
    if guest.init_pid is not None and guest.init_pid in mine:
        by_nspid[1] = mine[guest.init_pid]  # PID 1 is always the guest's init
    out = []
    for pid in pids:
        proc = by_nspid.get(pid)
        if proc is None:
            raise VstuiError(f"no process {pid} in the guest (PIDs are as seen inside it)", name)
        out.append(Target(proc.pid, proc.starttime, name, pid))
    return out


def _still_same(target: Target, proc_root: str, members: set[int] | None) -> str | None:
    proc = _stat_of(proc_root, target.pid)
    if proc is None or proc.starttime != target.starttime:
        return EXITED
    if members is not None and target.pid not in members:
        return "process left the guest before it could be signalled"
    return None


def send(
    paths: Paths,
    targets: Iterable[Target],
    signo: int,
    proc_root: str = "/proc",
    cgroup_fs: Path | None = None,
) -> list[Outcome]:
    """Signal each target after re-checking (pid, starttime, context)."""
    targets = list(targets)
    members: dict[str | None, set[int] | None] = {None: None}
    for name in {t.guest for t in targets if t.guest is not None}:
        _refuse_private(paths, name)  # here too: callers may build targets themselves
        members[name] = cgroup_members(paths, name, cgroup_fs) or set()
    private_now: dict[int, str] = {}
    if any(t.guest is None for t in targets):
        # a host PID that moved into a private guest since it was chosen
        for pid, ctx in attribute(
            paths, cgroup_fs, running_guests(paths, proc_root)
        ).by_pid.items():
            if "private" in guest_flags(paths, ctx.name):
                private_now[pid] = ctx.name
    return [
        Outcome(t, _send_one(t, signo, proc_root, members.get(t.guest), private_now))
        for t in targets
    ]


def _send_one(
    target: Target,
    signo: int,
    proc_root: str,
    members: set[int] | None,
    private_now: dict[int, str],
) -> str | None:
    try:
        pidfd = os.pidfd_open(target.pid)
    except ProcessLookupError:
        return EXITED
    except OSError as exc:
        return os.strerror(exc.errno or errno.EIO)
    try:
        # the pidfd pins the process: if it is still the one we chose now, the
        # signal below reaches it and no other
        why = _still_same(target, proc_root, members)
        if why is None and target.guest is None and target.pid in private_now:
            why = f"process is in private guest {private_now[target.pid]}"
        if why is not None:
            return why
        try:
            signal.pidfd_send_signal(pidfd, signo)
        except ProcessLookupError:
            return EXITED
        except OSError as exc:  # an outcome like the others: later targets still get theirs
            return os.strerror(exc.errno or errno.EIO)
        return None
    finally:
        os.close(pidfd)
