"""``vserver NAME stop``: signal init, wait, kill what is left, clean up.

Idempotent: on a stopped or half-started guest it still removes whatever is
left (cgroup, network, storage mount, run files) and succeeds. Works
without the supervisor (it may have been killed): init is found through the
run directory (PID + start time), the rest through the cgroup.
"""

from __future__ import annotations

import os
import select
import signal
import time

from engine.errors import require_root
from engine.paths import Paths, check_name
from engine.procfs import read_text
from engine.runtime import forked, runfiles, state
from engine.text import visible

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of every start
if TYPE_CHECKING:
    from typing import Any

STOP_LOCK_TIMEOUT = 120.0
SUPERVISOR_GRACE = 5.0
ORPHAN_GRACE = 2.0  # for the supervision's orphans to end on their own (vsuper's pump grace)
KILL_GRACE = 5.0  # for a SIGKILLed process to be gone


stop_signal = runfiles.stop_signal  # shared with the supervisor, which stays lean


def wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    """Wait until ``pid`` (with that start time) is gone; False on timeout."""
    if not state.alive(pid, start):
        return True
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        deadline = time.monotonic() + timeout
        while state.alive(pid, start):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # readable once it exits; poll in slices in case nobody reaps it
            select.select([pidfd], [], [], min(left, 0.2))
        return True
    finally:
        os.close(pidfd)


def stop(paths: Paths, name: str, timeout: float | None = None) -> bool:
    """Stop the guest; True if it was running, False if only cleaned up."""
    check_name(name)  # before anything: ../vservers/web once stopped the real web
    require_root("stopping a guest", name)
    cfg = _config(paths, name)
    if timeout is None:
        timeout = cfg.stop_timeout if cfg is not None else 10.0
    lock = state.lock(paths, name, STOP_LOCK_TIMEOUT)
    try:
        current = state.read(paths, name)
        supervisor = state.supervisor_identity(paths, name)  # before teardown clears it
        supervised = current.supervisor_pid is not None
        was_running = current.init_pid is not None
        if was_running:
            _say_stopping(paths, name)
            if current.frozen_since is not None:  # a frozen init cannot halt
                from engine.runtime.freezing import thaw_for_stop

                thaw_for_stop(paths, name)
            _shutdown(paths, name, cfg, timeout)
        forked.run(lambda: teardown(paths, name), name)
        end_supervision(paths, name, supervisor, supervised)
        state.remove(paths, name)  # waiters on the old lock file notice and retry
        return was_running
    finally:
        lock.release()


def _say_stopping(paths: Paths, name: str) -> None:
    """Tell observers the guest is stopping, if the disk lets us: a guest that
    filled the file system holding its run directory must still be stoppable,
    so stopping never needs a free block (the rest only unlinks files)."""
    try:
        state.write_value(paths.run_dir(name), "state", state.STOPPING)
    except OSError:
        pass  # advisory only: the init PID and its start time say what runs


def _shutdown(paths: Paths, name: str, cfg: Any, timeout: float) -> None:
    ident = state.init_identity(paths, name)
    if ident is None:
        return
    pid, start = ident
    fakeinit = cfg is not None and cfg.has_flag("fakeinit")
    try:
        os.kill(pid, stop_signal(pid, fakeinit))
    except ProcessLookupError:
        return
    if not wait_gone(pid, start, timeout):
        _note(paths, name, f"init did not stop within {timeout:g} s of the halt signal; "
                           "killing the guest")  # fmt: skip
        try:
            os.kill(pid, signal.SIGKILL)  # PID 1 dies: the kernel kills the rest
        except ProcessLookupError:
            pass
        wait_gone(pid, start, 5.0)


def _note(paths: Paths, name: str, text: str) -> None:
    """One line in the guest's console log, as the supervisor writes them."""
    try:
        fd = os.open(paths.log_file(name), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return
    try:
        runfiles.log_line(fd, name, text)
    finally:
        os.close(fd)


def end_supervision(
    paths: Paths,
    name: str,
    supervisor: tuple[int, int] | None,
    supervised: bool,
    grace: float = SUPERVISOR_GRACE,
) -> None:
    """Return once the supervisor and every process of its session are gone.

    ``supervised``: the supervisor was alive when the stop began; ``grace``: how
    long it may take to end before it is killed. vsuper exits
    only after its children (console pump, meminfo renderer): its exit is the
    event waited for. One that must be killed, or was dead already (killed by
    hand: its children live on, orphaned), leaves its session (its PID: S is
    the session leader) to be waited for, then killed.
    """
    check_name(name)
    if supervisor is None:
        return
    pid, start = supervisor
    # the start time read before the teardown: by now the PID may belong to another
    if supervised:
        if wait_gone(pid, start, grace):
            return
        if grace > 0:  # (none: the caller abandons a stuck start and says so)
            _note(paths, name, f"the supervisor did not exit within {grace:g} s of init's "
                               "end; killing it")  # fmt: skip
        _kill(pid)
        wait_gone(pid, start, KILL_GRACE)
    _end_session(paths, name, pid, start)


def _end_session(paths: Paths, name: str, sid: int, start: int) -> None:
    """What is left of the supervision's session: given ORPHAN_GRACE to end (the pump
    ends at init's exit), then killed, by PID, and said in the log."""
    from engine.procfs import session_members

    left = [m for m in session_members(sid) if _supervision_member(m, sid, start, name)]
    deadline = time.monotonic() + ORPHAN_GRACE
    left = [(p, s) for p, s in left if not wait_gone(p, s, max(deadline - time.monotonic(), 0))]
    if not left:
        return
    for pid, _ in left:
        _kill(pid)
    _note(paths, name, f"killed what the supervision left running: "
                       f"{', '.join(_described(pid) for pid, _ in left)}")  # fmt: skip
    stuck = [pid for pid, begun in left if not wait_gone(pid, begun, KILL_GRACE)]
    if stuck:  # in an uninterruptible sleep: nothing more a stop can do
        _note(paths, name, f"still running after SIGKILL: {', '.join(map(str, stuck))}")


def _supervision_member(member: tuple[int, int], sid: int, start: int, name: str) -> bool:
    """A process of this guest's supervision session: started with or after its
    leader (a session outlives its leader; its ID is not reused meanwhile) and
    naming the guest in its command line (vsuper, pump, renderer, S)."""
    pid, begun = member
    if begun < start or (pid == sid and begun != start):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().replace(b"/", b"\0").split(b"\0")
    except OSError:
        return False
    return os.fsencode(name) in words


def _described(pid: int) -> str:
    try:
        return f"{pid} ({visible(read_text(f'/proc/{pid}/comm').strip())})"
    except OSError:
        return str(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _config(paths: Paths, name: str) -> Any:
    from engine.config import load_guest
    from engine.errors import GuestNotFound

    try:
        return load_guest(paths, name)
    except GuestNotFound:
        if paths.run_dir(name).exists():
            return None  # config deleted under a running guest: still stop it
        raise
    except Exception:
        return None


def teardown(paths: Paths, name: str, keep_run_dir: bool = False) -> None:
    """Kill the guest's processes and remove its cgroup, network and storage mount.

    Idempotent; heavy imports (cgroups, net, rootfs): run it in a forked child.
    """
    from engine.cgroups import manager

    errors: list[str] = []
    cg = manager()
    rel = paths.cgroup_name(name)
    try:
        if cg.exists(rel):
            cg.kill_all(rel)
        cg.remove(rel)
    except Exception as exc:
        errors.append(forked.one_line(exc))
    cfg = _config(paths, name)
    for step in (_net_teardown, _release_root):
        try:
            step(paths, name, cfg)
        except Exception as exc:
            errors.append(forked.one_line(exc))
    # the /proc/meminfo view (not a runfiles value file: removed here)
    (paths.run_dir(name) / "meminfo").unlink(missing_ok=True)
    if not keep_run_dir:
        state.clear(paths, name)
    if errors:
        from engine.errors import VstuiError

        raise VstuiError("cleanup: " + "; ".join(errors), name)


def _net_teardown(paths: Paths, name: str, cfg: Any) -> None:
    if cfg is not None and cfg.netmode == "host":
        return  # no namespace of its own: nothing was set up
    if not _net_leftovers(paths, name):
        return  # nothing recorded, no link named after it: no network code needed
    try:
        from engine import net
    except ImportError:
        return
    net.teardown(cfg if cfg is not None else name, paths)


def _net_leftovers(paths: Paths, name: str) -> bool:
    """net.json or a host link named after the guest (what net.teardown removes)."""
    if (paths.run_dir(name) / "net.json").exists():
        return True
    links = (paths.link_name(name), paths.link_name(name, kind="ifb"))
    return any(os.path.lexists(f"/sys/class/net/{link}") for link in links)


def _release_root(paths: Paths, name: str, cfg: Any) -> None:
    """Unmount an image-backed tree (prepare_root's mount in the host namespace).

    Only this guest's own loop-image mount is undone, never a mount someone
    else put on the guest root.
    """
    from types import SimpleNamespace

    from engine.rootfs import storage

    storage.release(cfg if cfg is not None else SimpleNamespace(name=name), paths)
