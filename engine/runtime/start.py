"""``vserver NAME start``: lock, check, then the supervisor boots the guest.

The host-side half of a boot (``launch``) runs in a short-lived child of the
supervisor, so the supervisor never imports storage, cgroups or network
code. ``launch``:

1. checks the barrier, prepares the tree (``rootfs.prepare_root``), builds
   the StartPlan, creates the cgroup and applies the limits;
2. forks A: A joins the cgroup, unshares mount/UTS/IPC/cgroup/PID(/net)
   namespaces, makes / a slave mount, forks B (PID 1 of the new PID
   namespace), reports B's host PID and exits. B is reparented to the
   supervisor (a child subreaper) and has no parent-death signal: the guest
   outlives its supervisor;
3. sets up the network with B's PID (``engine.net.setup``) when the guest
   has its own network namespace, then lets B go;
4. B runs child.run (mounts, pivot_root, /proc, /dev, limits, caps) and execs
   init; a failure comes back as one line on the error pipe, and every step
   already taken is undone, so a failed start leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from engine import _libc
from engine.errors import GuestRunning, VstuiError, require_root
from engine.paths import Paths
from engine.runtime import child, forked, state
from engine.runtime.plan import StartPlan

START_LOCK_TIMEOUT = 120.0

EXEC_PROFILE = "exec.profile"  # what `exec` applies: caps, rlimits, nice, private
SECCOMP_FILE = "seccomp.bpf"  # the guest's packed seccomp program, for `exec`


class StartFailed(VstuiError):
    """The guest's PID 1 reported a set-up failure."""


def start(paths: Paths, name: str) -> state.RunState:
    """Start the guest; GuestRunning (``already running``) when it runs."""
    from engine.config import load_guest
    from engine.runtime import supervisor, xid

    require_root("starting a guest", name)
    load_guest(paths, name)  # GuestNotFound / ConfigError before anything else
    lock = state.lock(paths, name, START_LOCK_TIMEOUT)
    try:
        current = state.read(paths, name)
        if current.running:
            raise GuestRunning(f"vserver '{name}' already running", name)
        if current.stale or _leftovers(paths, name):
            from engine.runtime.stop import teardown

            forked.run(lambda: teardown(paths, name), name)
        context = xid.xid_of(paths, name)
        supervisor.spawn(paths, name, context, lock)
    finally:
        lock.release()
    return state.read(paths, name)


def _leftovers(paths: Paths, name: str) -> bool:
    return any((paths.run_dir(name) / key).exists() for key in state.VALUE_FILES)


# -- the host-side half of one boot (runs in a child of the supervisor) ---------------


def limits_of(cfg: Any) -> Any:
    from engine.cgroups import Limits

    weight = cfg.cpu_weight
    if weight is None and cfg.has_flag("sched"):
        weight = 100
    return Limits(
        memory=cfg.memory, pids=cfg.pids_limit(), cpu_weight=weight, cpu_quota=cfg.cpu_quota
    )


def _vinit_bytes() -> bytes:
    from engine.helpers import helper_path

    binary = helper_path("vinit")
    source = binary.with_suffix(".c")
    if not binary.exists() or (source.exists() and source.stat().st_mtime > binary.stat().st_mtime):
        from engine.helpers.build import build

        build()
    return binary.read_bytes()


def _has_rc_local(root: str) -> bool:
    from engine import safepath

    root_fd = safepath.open_root(root)
    try:
        fd = safepath.open_in_root(root_fd, "/etc/rc.local", os.O_PATH)
    except OSError:
        return False
    finally:
        os.close(root_fd)
    os.close(fd)
    return True


def _seccomp_program(cfg: Any) -> bytes | None:
    try:
        import engine.seccomp as seccomp
    except ImportError:
        return None
    return seccomp.build_filter(cfg)


def _install_seccomp(program: bytes | None, name: str) -> Callable[[], None] | None:
    if program is None:
        return None
    from engine.seccomp import install_program  # now: nothing is imported after pivot_root

    def hook() -> None:
        install_program(program, name)

    return hook


def write_exec_profile(paths: Paths, cfg: Any, plan: StartPlan, program: bytes | None) -> None:
    """Save what `exec`/`enter` apply, so that they never parse the config again."""
    from engine.caps import to_mask

    run_dir = paths.run_dir(cfg.name)
    lines = [f"caps {to_mask(plan.caps):x}", f"private {int(cfg.has_flag('private'))}"]
    if plan.nice is not None:
        lines.append(f"nice {plan.nice}")
    lines += [f"rlimit {res} {soft} {hard}" for res, soft, hard in plan.rlimits]
    state.write_value(run_dir, EXEC_PROFILE, "\n".join(lines))
    target = run_dir / SECCOMP_FILE
    if program is None:
        target.unlink(missing_ok=True)
    else:
        tmp = run_dir / f".{SECCOMP_FILE}.tmp"
        tmp.write_bytes(program)
        os.replace(tmp, target)


class _Undo:
    """Steps to take back, last first, when the boot fails."""

    def __init__(self) -> None:
        self.steps: list[Callable[[], None]] = []

    def add(self, step: Callable[[], None]) -> None:
        self.steps.append(step)

    def run(self) -> None:
        for step in reversed(self.steps):
            try:
                step()
            except Exception:
                pass


def launch(paths: Paths, name: str, log_fd: int) -> tuple[int, int]:
    """Boot the guest once; (init host PID, init start time). Raises on failure."""
    from engine import rootfs
    from engine.cgroups import manager
    from engine.config import load_guest
    from engine.runtime import plan as plans

    cfg = load_guest(paths, name)
    rootfs.check_barrier(paths)
    undo = _Undo()
    try:
        handle = rootfs.prepare_root(cfg, paths)
        undo.add(handle.release)
        root = str(handle.path)
        plan = plans.build(cfg, root, rootfs.binds(cfg, paths), _has_rc_local(root))
        cg = manager()
        rel = paths.cgroup_name(name)
        cg.create(rel)
        undo.add(lambda: _remove_cgroup(cg, rel))
        cg.apply(rel, limits_of(cfg))
        program = _seccomp_program(cfg)
        write_exec_profile(paths, cfg, plan, program)
        vinit = _vinit_bytes() if plan.vinit else None
        return _boot(paths, cfg, plan, cg, rel, log_fd, vinit, program, undo)
    except BaseException:
        undo.run()
        raise


def _remove_cgroup(cg: Any, rel: str) -> None:
    if cg.exists(rel):
        cg.kill_all(rel)
        cg.remove(rel)


def _ns_flags(plan: StartPlan) -> int:
    flags = (
        _libc.CLONE_NEWNS
        | _libc.CLONE_NEWUTS
        | _libc.CLONE_NEWIPC
        | _libc.CLONE_NEWCGROUP
        | _libc.CLONE_NEWPID
    )
    return flags | (_libc.CLONE_NEWNET if plan.own_netns else 0)


def _read_line(fd: int) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data


def _boot(
    paths: Paths,
    cfg: Any,
    plan: StartPlan,
    cg: Any,
    rel: str,
    log_fd: int,
    vinit: bytes | None,
    program: bytes | None,
    undo: _Undo,
) -> tuple[int, int]:
    pid_r, pid_w = os.pipe()
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    hook = _install_seccomp(program, cfg.name)
    a = os.fork()
    if a == 0:  # pragma: no cover - runs in the child
        for fd in (pid_r, go_w, err_r):
            os.close(fd)
        _child_a(plan, cg, rel, pid_w, go_r, err_w, log_fd, vinit, hook)
    for fd in (pid_w, go_r, err_w):
        os.close(fd)
    try:
        line = _read_line(pid_r)
        os.close(pid_r)
        os.waitpid(a, 0)
        if not line:
            message = forked.read_all(err_r).decode(errors="replace").strip()
            raise StartFailed(f"start: {message or 'namespace set-up failed'}", cfg.name)
        init_pid = int(line)
        undo.add(lambda: _kill(init_pid))
        if plan.own_netns:
            _net_setup(cfg, paths, init_pid, undo)
        os.write(go_w, b"g")
        os.close(go_w)
        go_w = -1
        message = forked.read_all(err_r).decode(errors="replace").strip()
        if message:
            raise StartFailed(f"start: {message}", cfg.name)
        start = state.proc_starttime(init_pid)
        if start is None:
            raise StartFailed("start: the guest's init exited right away; see its log", cfg.name)
        return init_pid, start
    finally:
        if go_w >= 0:
            os.close(go_w)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _net_setup(cfg: Any, paths: Paths, pid: int, undo: _Undo) -> None:
    try:
        from engine import net
    except ImportError:  # no network part yet: the guest has its loopback only
        return
    undo.add(lambda: net.teardown(cfg, paths))
    net.setup(cfg, paths, pid)


def _join_cgroup(cg: Any, rel: str) -> None:
    """Move this (single-threaded) process into the guest's cgroup everywhere.

    On v1 hierarchies "0" goes to ``tasks``: moving just the calling thread
    skips the kernel's global threadgroup lock and its RCU grace period
    (~10-20 ms per start); v2 has only cgroup.procs.
    """
    for directory in cg.paths(rel):
        target = directory / "tasks"
        if not target.exists():
            target = directory / "cgroup.procs"
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def _child_a(
    plan: StartPlan,
    cg: Any,
    rel: str,
    pid_w: int,
    go_r: int,
    err_w: int,
    log_fd: int,
    vinit: bytes | None,
    hook: Callable[[], None] | None,
) -> None:
    """Join the cgroup, unshare, fork PID 1, report it, exit."""
    code = 1
    try:
        _join_cgroup(cg, rel)
        _libc.unshare(_ns_flags(plan))
        # nothing we mount may reach the host (and host mounts may reach in)
        _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_SLAVE)
        b = os.fork()
        if b == 0:
            os.close(pid_w)
            _child_b(plan, go_r, err_w, log_fd, vinit, hook)
        os.write(pid_w, f"{b}\n".encode())
        code = 0
    except BaseException as exc:
        try:
            os.write(err_w, forked.one_line(exc).encode(errors="replace"))
        except OSError:
            pass
    finally:
        os._exit(code)


def _child_b(
    plan: StartPlan,
    go_r: int,
    err_w: int,
    log_fd: int,
    vinit: bytes | None,
    hook: Callable[[], None] | None,
) -> None:
    """PID 1 of the guest until exec: wait for the network, then child.run."""
    try:
        if os.read(go_r, 1) != b"g":
            os._exit(1)  # the starter gave up
        os.close(go_r)
        child.run(plan, log_fd, err_w, vinit, hook)
    except BaseException as exc:
        try:
            os.write(err_w, forked.one_line(exc).encode(errors="replace"))
        except OSError:
            pass
    os._exit(1)
