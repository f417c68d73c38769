"""``vserver NAME start``: lock, check, then the supervisor boots the guest.

The host-side half of a boot (``launch``) runs in the supervisor forked from
the CLI before it execs its lean interpreter (first boot), or in a
short-lived child of the lean supervisor (reboot), so the running supervisor
never holds storage, cgroups or network code. ``launch``:

1. checks the barrier, prepares the tree (``rootfs.prepare_root``), builds
   the StartPlan, creates the cgroup and applies the limits;
2. forks A: A joins the cgroup, unshares mount/UTS/IPC/cgroup/PID(/net)
   namespaces, makes / a slave mount, forks B (PID 1 of the new PID
   namespace), reports B's host PID and exits. B is reparented to the
   supervisor (a child subreaper) and has no parent-death signal: the guest
   outlives its supervisor. A also unshares a time namespace whose
   monotonic and boot clocks start at zero, so the guest's /proc/uptime
   counts from its start;
3. sets up the network with B's PID (``engine.net.setup``) when the guest
   has links or addresses to set up (pyroute2 is imported only then), then
   lets B go;
4. B execs ``vboot`` (child.run), the static C executor of the plan that
   the starter serialized into a memfd before the first fork
   (engine.runtime.bootplan): mounts, pivot_root, /proc, /dev, limits, caps,
   seccomp, then init's exec. No Python runs inside the namespaces. A
   failure comes back as one line on the error pipe, and every step already
   taken is undone, so a failed start leaves nothing behind. So does a boot
   that overruns its deadline (a hung V_MOUNT, say).

With a memory limit, run_dir/meminfo (rendered by engine.rootfs.procview)
is bind-mounted read-only over the guest's /proc/meminfo; the supervisor
refreshes it once a second from the cgroup's usage file.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable

from engine import _libc
from engine._record import Record
from engine.errors import GuestRunning, VstuiError, require_root
from engine.paths import Paths, check_name
from engine.runtime import child, forked, state
from engine.runtime.plan import StartPlan

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of every start
if TYPE_CHECKING:
    from typing import Any

START_LOCK_TIMEOUT = 120.0

EXEC_PROFILE = "exec.profile"  # what `exec` applies: caps, rlimits, nice, private
SECCOMP_FILE = "seccomp.bpf"  # the guest's packed seccomp program, for `exec`


class StartFailed(VstuiError):
    """The guest's PID 1 reported a set-up failure."""


class Booted(Record):
    """A guest whose init runs: what the supervisor needs to watch it."""

    __slots__ = _fields = ("init_pid", "start", "mem_limit", "mem_usage_file", "replay")
    _defaults = {"mem_limit": None, "mem_usage_file": None, "replay": None}
    init_pid: int
    start: int  # init's start time in clock ticks
    mem_limit: int | None  # bytes, when /proc/meminfo is the guest's view
    mem_usage_file: str | None  # the cgroup file with the guest's memory use
    replay: list[bytes] | None  # the boot cache's ops (engine.runtime.bootcache), if cacheable


def start(paths: Paths, name: str) -> state.RunState:
    """Start the guest; GuestRunning (``already running``) when it runs."""
    boot(paths, name)
    return state.read(paths, name)


def boot(paths: Paths, name: str) -> int:
    """``start`` without reading the state back: the guest's init PID (for the CLI)."""
    from engine.config import load_guest
    from engine.runtime import supervisor, xid

    check_name(name)
    require_root("starting a guest", name)
    cfg = load_guest(paths, name)  # GuestNotFound / ConfigError before anything else
    lock = state.lock(paths, name, START_LOCK_TIMEOUT)
    try:
        current = state.read(paths, name)
        if current.running:
            raise GuestRunning(f"vserver '{name}' already running", name)
        if current.stale or _leftovers(paths, name):
            from engine.runtime.stopping import teardown

            forked.run(lambda: teardown(paths, name), name)
        context = xid.xid_of(paths, name, cfg)
        return supervisor.spawn(paths, name, context)
    finally:
        lock.release()


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


def _seccomp_program(cfg: Any, paths: Paths) -> bytes | None:
    """The guest's packed program, from the cache when nothing it depends on changed.

    Building it imports engine.seccomp (typing, dataclasses, inspect: ~15 ms
    of every start); the cache is keyed by every config field, the
    architecture and the seccomp sources' stat, so any change rebuilds it.
    """
    sources = _seccomp_sources()
    key = _seccomp_key(cfg, sources) if sources is not None else None
    cache = _seccomp_cache(paths, cfg.name)
    if key is not None:
        cached = _read_cache(cache, key)
        if cached is not None:
            return cached
    # part of the engine: a guest never starts unfiltered because it is missing
    import engine.seccomp as seccomp

    program = seccomp.build_filter(cfg)
    if key is not None:
        _write_cache(cache, key, program)
    return program


SECCOMP_CACHE_DIR = "seccomp-cache"  # under paths.state_dir, root-only


def _seccomp_cache(paths: Paths, name: str) -> str:
    return os.path.join(os.fspath(paths.state_dir), SECCOMP_CACHE_DIR, f"{name}.bpf")


def forget_seccomp(paths: Paths, name: str) -> None:
    """Drop a deleted guest's cached seccomp program."""
    try:
        os.unlink(_seccomp_cache(paths, check_name(name)))
    except FileNotFoundError:
        pass


def _seccomp_sources() -> str | None:
    import engine

    where = os.path.join(os.path.dirname(os.path.abspath(engine.__file__)), "seccomp")
    try:
        entries = sorted(os.scandir(where), key=lambda e: e.name)
    except FileNotFoundError:
        return None
    stats = [(e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries
             if e.name.endswith(".py")]  # fmt: skip
    if not stats:
        return None
    # the filter also depends on the default capabilities and the CLONE_* flags
    base = os.path.dirname(where)
    for other in ("caps.py", "_libc.py"):
        st = os.stat(os.path.join(base, other))
        stats.append((other, st.st_mtime_ns, st.st_size))
    return repr(stats)


def _canonical(value: Any) -> str:
    """repr, with sets sorted (their order changes with the hash seed)."""
    if isinstance(value, set | frozenset):
        return repr(sorted(map(_canonical, value)))
    if isinstance(value, tuple | list):
        return repr([_canonical(v) for v in value])
    return repr(value)


def _seccomp_key(cfg: Any, sources: str) -> bytes:
    fields = [f"{f}={_canonical(getattr(cfg, f))}" for f in cfg.__slots__]
    return "\n".join([os.uname().machine, sources, *fields]).encode(errors="replace")


def _read_cache(cache: str, key: bytes) -> bytes | None:
    try:
        fd = os.open(cache, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != 0 or st.st_mode & 0o077:
            return None  # not ours alone: never trust it
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    finally:
        os.close(fd)
    stored, sep, program = data.partition(b"\0")
    if not sep or stored != key or not program or len(program) % 8:
        return None
    return program


def _write_cache(cache: str, key: bytes, program: bytes) -> None:
    """Best effort: a failed write costs the next start a rebuild, nothing more."""
    try:
        os.makedirs(os.path.dirname(cache), 0o700, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)  # fmt: skip
        try:
            os.write(fd, key + b"\0" + program)
        finally:
            os.close(fd)
        os.replace(tmp, cache)
    except OSError:
        pass


def write_exec_profile(paths: Paths, cfg: Any, plan: StartPlan, program: bytes | None) -> str:
    """Save what `exec`/`enter` apply, so that they never parse the config again; the text."""
    from engine.caps import to_mask

    run_dir = paths.run_dir(cfg.name)
    lines = [f"caps {to_mask(plan.caps):x}", f"private {int(cfg.has_flag('private'))}",
             f"fakeinit {int(cfg.has_flag('fakeinit'))}"]  # fmt: skip
    if plan.nice is not None:
        lines.append(f"nice {plan.nice}")
    lines += [f"rlimit {res} {soft} {hard}" for res, soft, hard in plan.rlimits]
    text = "\n".join(lines)
    state.write_value(run_dir, EXEC_PROFILE, text)
    target = run_dir / SECCOMP_FILE
    if program is None:
        target.unlink(missing_ok=True)
    else:
        tmp = run_dir / f".{SECCOMP_FILE}.tmp"
        tmp.write_bytes(program)
        os.replace(tmp, target)
    return text


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


def launch(paths: Paths, name: str, log_fd: int, timeout: float = 30.0) -> Booted:
    """Boot the guest once, within ``timeout`` seconds; raises on failure (all undone)."""
    from engine import rootfs
    from engine.cgroups import manager
    from engine.config import load_guest
    from engine.runtime import plan as plans

    deadline = time.monotonic() + timeout
    cfg = load_guest(paths, name)
    rootfs.check_barrier(paths)
    undo = _Undo()
    try:
        handle = rootfs.prepare_root(cfg, paths)
        undo.add(handle.release)
        root = str(handle.path)
        cg = manager()
        rel = paths.cgroup_name(name)
        undo.add(lambda: _remove_cgroup(cg, rel))  # first: a half-made create is undone too
        journal = _create_cgroup(cg, rel, cfg)
        usage_file = _meminfo_view(paths, cfg, cg, rel, undo)
        view = os.fspath(paths.run_dir(name) / MEMINFO_VIEW) if usage_file else None
        binds = rootfs.binds(cfg, paths)
        plan = plans.build(cfg, root, binds, _has_rc_local(root), meminfo_view=view)
        program = _seccomp_program(cfg, paths)
        profile = write_exec_profile(paths, cfg, plan, program)
        boot = child.prepare(plan, program)  # before any fork: B only execs vboot
        try:
            pid, start = _boot(paths, cfg, plan, cg, rel, log_fd, boot, undo, deadline)
        finally:
            boot.close()
        mem_limit = cfg.memory if usage_file else None
        facts = {"ns_flags": _ns_flags(plan), "timens": HAVE_TIMENS, "profile": profile,
                 "program": program, "mem_limit": mem_limit, "mem_usage": usage_file,
                 "plan": boot.plan}  # fmt: skip
        replay = _replay(paths, cfg, root, plan, (journal, cg.paths(rel)), facts)
        return Booted(pid, start, mem_limit, usage_file, replay)
    except BaseException:
        undo.run()
        from engine.runtime import bootcache

        bootcache.forget(paths, name)  # the next start goes through Python again
        raise


def _create_cgroup(cg: Any, rel: str, cfg: Any) -> list[tuple[str, ...]]:
    """Create the guest's cgroup and apply its limits; every mkdir and write done."""
    from engine.cgroups import base

    journal: list[tuple[str, ...]] = []
    base.record(journal)
    try:
        cg.create(rel)
        cg.apply(rel, limits_of(cfg))
    finally:
        base.record(None)
    return journal


def _replay(
    paths: Paths, cfg: Any, root: str, plan: StartPlan, cgroups: tuple, facts: dict[str, Any]
) -> list[bytes] | None:
    """The boot cache's ops for this start, when the compiled start can replay it."""
    from engine.helpers import helper_path
    from engine.runtime import bootcache

    if not bootcache.eligible(cfg, plan):
        bootcache.forget(paths, cfg.name)
        return None
    journal, directories = cgroups
    tasks = [os.fspath(d / "tasks") for d in directories if (d / "tasks").exists()]
    cgroup2 = [os.fspath(d) for d in directories if not (d / "tasks").exists()]
    facts = {**facts, "vinit": os.fspath(helper_path("vinit")) if plan.vinit else None}
    return bootcache.body(paths, cfg, root, journal, (tasks, cgroup2), facts)


MEMINFO_VIEW = "meminfo"  # = supervisor.MEMINFO_VIEW


def _meminfo_view(paths: Paths, cfg: Any, cg: Any, rel: str, undo: _Undo) -> str | None:
    """With V_MEMORY: write the first run_dir/meminfo; the usage file to refresh it from."""
    if not cfg.memory:
        return None
    usage_file = None
    for directory in cg.paths(rel):
        for candidate in ("memory.usage_in_bytes", "memory.current"):
            if (directory / candidate).exists():
                usage_file = os.fspath(directory / candidate)
                break
        if usage_file:
            break
    if usage_file is None:
        return None  # no memory controller: the guest sees the host's meminfo
    from engine.rootfs import procview

    target = paths.run_dir(cfg.name) / MEMINFO_VIEW
    with open("/proc/meminfo") as f:
        procview.write_view(target, procview.render_meminfo(cfg.memory, 0, f.read()))
    undo.add(lambda: target.unlink(missing_ok=True))
    return usage_file


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
    if HAVE_TIMENS:
        flags |= CLONE_NEWTIME
    return flags | (_libc.CLONE_NEWNET if plan.own_netns else 0)


CLONE_NEWTIME = 0x00000080  # Linux 5.6; like PID, it applies to the children
HAVE_TIMENS = os.path.exists("/proc/self/ns/time")


def _zero_clocks() -> None:
    """Offsets that make the new time namespace's monotonic and boot clocks start at 0.

    Written before the first process enters it (the kernel refuses later);
    whole seconds, so the clocks start between 0 and 1 s, never below 0.
    """
    mono = int(time.clock_gettime(time.CLOCK_MONOTONIC))
    boot = int(time.clock_gettime(time.CLOCK_BOOTTIME))
    with open("/proc/self/timens_offsets", "w") as f:
        f.write(f"monotonic -{mono} 0\nboottime -{boot} 0\n")


class _Timeout(StartFailed):
    pass


def _wait_readable(fd: int, deadline: float, name: str) -> None:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([fd], [], [], left)[0]:
        raise _Timeout("start timed out: a boot step did not finish in time (a hung "
                       "V_MOUNT?); everything was undone", name)  # fmt: skip


def _read_line(fd: int, deadline: float, name: str) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        _wait_readable(fd, deadline, name)
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data


def _read_all(fd: int, deadline: float, name: str) -> bytes:
    chunks = []
    try:
        while True:
            _wait_readable(fd, deadline, name)
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _boot(
    paths: Paths,
    cfg: Any,
    plan: StartPlan,
    cg: Any,
    rel: str,
    log_fd: int,
    boot: child.BootInputs,
    undo: _Undo,
    deadline: float,
) -> tuple[int, int]:
    pid_r, pid_w = os.pipe()
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    a = os.fork()
    if a == 0:  # pragma: no cover - runs in the child
        for fd in (pid_r, go_w, err_r):
            os.close(fd)
        _child_a(plan, cg, rel, pid_w, go_r, err_w, log_fd, boot)
    for fd in (pid_w, go_r, err_w):
        os.close(fd)
    reaped: list[int] = []
    undo.add(lambda: reaped or _kill_and_reap(a))  # A hung (a timeout): never a reused PID
    try:
        line = _read_line(pid_r, deadline, cfg.name)
        os.close(pid_r)
        os.waitpid(a, 0)
        reaped.append(a)
        if not line:
            message = _read_all(err_r, deadline, cfg.name).decode(errors="replace").strip()
            raise StartFailed(f"start: {message or 'namespace set-up failed'}", cfg.name)
        init_pid = int(line)
        undo.add(lambda: _kill(init_pid))
        if plan.own_netns:
            _net_setup(cfg, paths, init_pid, undo)
        os.write(go_w, b"g")
        os.close(go_w)
        go_w = -1
        message = _read_all(err_r, deadline, cfg.name).decode(errors="replace").strip()
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


def _kill_and_reap(pid: int) -> None:
    """Process A, if a timeout left it hanging."""
    _kill(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _net_setup(cfg: Any, paths: Paths, pid: int, undo: _Undo) -> None:
    if not (cfg.addresses or cfg.bridge or cfg.bandwidth_out or cfg.bandwidth_in):
        return  # = net.needs_netlink: B brings its loopback up itself, no import needed
    try:
        from engine import net
    except ImportError:  # no network part yet: the guest has its loopback only
        return
    if not net.needs_netlink(cfg):
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
    boot: child.BootInputs,
) -> None:
    """Join the cgroup, unshare, fork PID 1, report it, exit."""
    code = 1
    try:
        _join_cgroup(cg, rel)
        _libc.unshare(_ns_flags(plan))
        if HAVE_TIMENS:
            _zero_clocks()
        # nothing we mount may reach the host (and host mounts may reach in)
        _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_SLAVE)
        b = os.fork()
        if b == 0:
            os.close(pid_w)
            _child_b(go_r, err_w, log_fd, boot)
        os.write(pid_w, f"{b}\n".encode())
        code = 0
    except BaseException as exc:
        try:
            os.write(err_w, forked.one_line(exc).encode(errors="replace"))
        except OSError:
            pass
    finally:
        os._exit(code)


def _child_b(go_r: int, err_w: int, log_fd: int, boot: child.BootInputs) -> None:
    """PID 1 of the guest until exec: wait for the network, then exec vboot."""
    try:
        if os.read(go_r, 1) != b"g":
            os._exit(1)  # the starter gave up
        os.close(go_r)
        child.run(boot, log_fd, err_w)
    except BaseException as exc:
        try:
            os.write(err_w, forked.one_line(exc).encode(errors="replace"))
        except OSError:
            pass
    os._exit(1)
