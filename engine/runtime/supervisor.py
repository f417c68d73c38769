"""The per-guest supervisor: init's parent outside the guest.

``start``/``boot`` (``vserver NAME start``: lock, check, clean a dead guest's
leftovers) hands the boot to ``spawn``, which double-forks the CLI process:
the grandchild S, a child subreaper in its own session, boots the guest with
the modules the CLI already imported (no second interpreter), answers the
CLI through vsuper, and execs ``engine/helpers/vsuper`` (C, static): exec
keeps the PID, the children and the subreaper flag, so the guest's init
stays its child. vsuper (see its header) is all a running guest costs
outside it: no interpreter, no periodic wake-up. It

- answers the waiting start (vinit at once, systemd at READY=1 on the
  notify socket or READY_TIMEOUT, other inits after INIT_GRACE);
- forks the console pump, which copies the guest's /dev/console into
  ``paths.log_file(NAME)`` capped at LOG_MAX (the part before goes to
  NAME.log.1) and serves ``vserver NAME console``; a SIGKILLed supervisor
  leaves the pump running, so the guest's writes never meet EPIPE and still
  reach the log; the pump exits at init's exit;
- has the guest's /proc/meminfo view rendered again (``main(["meminfo",
  ...])``, engine.rootfs.procview) when the guest's memory use moves;
- at init's exit execs this module once more (``main(["finish", ...])``):
  killed by SIGHUP means reboot(2) inside the guest's PID namespace
  (kernel/reboot.c reboot_pid_ns) -> full teardown and a new boot through a
  short-lived child (``start.launch``), then vsuper again; SIGINT (halt or
  power-off) or any other exit -> teardown and stop. SIGTERM asks init to
  stop the guest.

The guest's console is a pty whose master only the pump holds (never a
host file: a guest could reopen that through /proc/1/fd, escape class 11).
If the supervisor dies the guest keeps running (init has no parent-death
signal) and ``stop``/``enter``/``status`` work from the run directory and
the cgroup.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from engine.errors import boundary
from engine.runtime import forked, runfiles

LOG_MAX = 8 * 1024 * 1024  # console log cap; the part before goes to NAME.log.1
PUMP_GRACE = 2.0  # seconds the pump gets to reach end of file after init's exit
START_TIMEOUT = 30.0  # a boot (every step up to init's exec) must finish within this
SPAWN_GRACE = 15.0  # the CLI kills a supervisor whose boot overran by this much
MEMINFO_VIEW = "meminfo"  # run_dir file bind-mounted over the guest's /proc/meminfo
NOTIFY = runfiles.NOTIFY_FILE  # run_dir socket: the guest's /run/host/notify (READY=1)
READY_TIMEOUT = 30.0  # a systemd guest's boot: `start` waits this long for READY=1
INIT_GRACE = 1.0  # another init must live this long for the start to count
CONSOLE_TAIL = 8  # console lines a failed start shows

# the Python supervisor's whole program (run by vsuper): sys.path from the CLI, then main()
BOOTSTRAP = (
    "import sys; sys.path[:] = sys.argv[1].split('\\n'); "
    "from engine.runtime.supervisor import main; main(sys.argv[2:])"
)

TYPE_CHECKING = False  # not typing's: keep the supervisor's imports minimal
if TYPE_CHECKING:
    from engine.paths import Paths
    from engine.runtime.state import RunState


START_LOCK_TIMEOUT = 120.0


def start(paths: Paths, name: str) -> RunState:
    """Start the guest; GuestRunning (``already running``) when it runs."""
    from engine.runtime import state

    boot(paths, name)
    return state.read(paths, name)


def boot(paths: Paths, name: str) -> int:
    """``start`` without reading the state back: the guest's init PID (for the CLI)."""
    from engine.config import load_guest
    from engine.paths import check_name
    from engine.runtime import state, xid

    check_name(name)
    from engine.errors import GuestRunning, require_root

    require_root("starting a guest", name)
    if os.path.lexists(paths.config_dir / f".{name}.partial"):  # engine.rootfs.staging
        from engine.rootfs.staging import refuse_partial

        refuse_partial(paths, name)
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
        return spawn(paths, name, context)
    finally:
        lock.release()


def _leftovers(paths: Paths, name: str) -> bool:
    return any((paths.run_dir(name) / key).exists() for key in runfiles.VALUE_FILES)


def spawn(paths: Paths, name: str, xid: int) -> int:
    """Boot the guest in a detached supervisor; the guest's init PID once it runs.

    Waits at most START_TIMEOUT + SPAWN_GRACE: the supervisor's own deadline
    (START_TIMEOUT) normally fires first and undoes the boot itself; past
    the grace the supervisor is killed and everything is torn down here.
    """
    from engine import _libc
    from engine.errors import VstuiError

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setsid()
            if os.fork() == 0:
                # S leads a session of its own: its PID (supervisor.pid) names every
                # process of the supervision, its orphans too (stopping.end_supervision)
                os.setsid()
                _libc.set_child_subreaper()
                _boot_then_supervise(paths, name, xid, w)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    reply = _read_until(r, START_TIMEOUT + READY_TIMEOUT + SPAWN_GRACE)
    if reply is None:
        _abandon(paths, name)
        raise VstuiError(f"start timed out after {START_TIMEOUT:.0f} s (a hung boot step, "
                         "e.g. an unreachable V_MOUNT); everything was undone", name)  # fmt: skip
    if not reply:  # it died without a word: its traceback is the log's end
        said = _last_line(os.fspath(paths.log_file(name)))
        _abandon(paths, name)
        raise VstuiError(f"the supervisor died before the guest started ({said}); "
                         "everything was undone", name)  # fmt: skip
    return answer(reply.decode(errors="replace"), name)


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - 4096, 0))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "nothing in the log"


def answer(reply: str, name: str) -> int:
    """The supervisor's answer to the CLI: init's PID, else the start's error.

    ``ok PID``, ``ok PID booting`` (not ready within READY_TIMEOUT: a warning)
    or ``error LINE`` with the console's last lines after it.
    """
    from engine.errors import VstuiError

    kind, _, rest = reply.strip().partition(" ")
    if kind == "ok":
        pid, _, note = rest.partition(" ")
        if note:
            print(f"vserver: {name}: init has not reported its boot finished after "
                  f"{READY_TIMEOUT:.0f} s; it is still booting", file=sys.stderr)  # fmt: skip
        return int(pid)
    raise VstuiError(rest or "the supervisor died before the guest started; see its log", name)


def _read_until(fd: int, timeout: float) -> bytes | None:
    """The pipe's whole content, or None when it is still open after ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _abandon(paths: Paths, name: str) -> None:
    """A supervisor stuck in its boot: kill it, undo everything it made."""
    from engine.runtime import state
    from engine.runtime.stopping import end_supervision, teardown

    run_dir = paths.run_dir(name)
    supervisor = state.supervisor_identity(paths, name)
    # killed at once, gone (with every process of its session) before the teardown
    end_supervision(paths, name, supervisor, supervised=True, grace=0)
    try:
        forked.run(lambda: teardown(paths, name), name)
    finally:
        _remove_run_dir(os.fspath(run_dir))


def _remove_run_dir(run_dir: str) -> None:
    try:
        os.unlink(os.path.join(run_dir, MEMINFO_VIEW))
    except FileNotFoundError:
        pass
    runfiles.remove_dir(run_dir)


def _boot_then_supervise(paths: Paths, name: str, xid: int, ready_fd: int) -> None:
    """In S: boot with the CLI's modules, then exec vsuper, which answers the CLI."""
    from engine.runtime.ptyconsole import listen, open_pty
    from engine.runtime.starting import launch

    run_dir = os.fspath(paths.run_dir(name))
    log_file = os.fspath(paths.log_file(name))
    log_fd = _stdio(log_file)
    os.chdir("/")  # a daemon pins no directory
    master, slave = open_pty()
    notify = notify_socket(run_dir)
    listening = listen(run_dir)  # before any answer: `vserver NAME console` right after it
    try:
        with boundary("start", name):
            booted = launch(paths, name, xid, slave, os.getpid(), START_TIMEOUT)
    except BaseException as exc:
        error = forked.one_line(exc)
        _log(log_fd, name, f"start failed: {error}")
        _remove_run_dir(run_dir)
        _answer(ready_fd, f"error {error}", last=True)
        os._exit(1)
    os.close(slave)  # the guest's init holds the terminal now
    command = lean_command(paths, name, xid, (run_dir, log_file), booted.memory_dir)
    if booted.cache:
        from engine.runtime import bootcache

        deps, plan = booted.cache
        entry = bootcache.entry(deps, run_dir, log_file, plan, command, booted.ready)
        bootcache.write(paths, name, entry)
    if booted.ready:  # vinit runs: that is ready (no wait for the supervisor's start)
        _answer(ready_fd, f"ok {booted.init_pid}")
        ready_fd = -1
    _exec_vsuper(command, booted.init_pid, (master, notify, listening, ready_fd))


def _exec_vsuper(command: list[str], init_pid: int, fds: tuple[int, ...], *more: str) -> None:
    """Become vsuper: init's PID and the console, notify, console socket and ready fds
    follow its command (ready: -1 when the start was answered already)."""
    for fd in fds:
        if fd >= 0:
            os.set_inheritable(fd, True)
    os.execv(command[0], [*command, str(init_pid), *map(str, fds), *more])


def notify_socket(run_dir: str) -> int:
    """The sd_notify datagram socket at run_dir/notify (the guest's /run/host/notify)."""
    import socket

    return runfiles.bind_socket(run_dir, NOTIFY, socket.SOCK_DGRAM)


def _answer(ready_fd: int, text: str, last: bool = False) -> None:
    """Tell the CLI how the boot went, if it still listens: a `vserver start`
    killed meanwhile (EPIPE) must not take the guest's supervisor with it.

    ``last``: this process's final word; the pipe ends with its exit, so a failed
    start returns when nothing of the guest is left, this process included.
    """
    try:
        os.write(ready_fd, text.encode(errors="replace"))
    except OSError:
        pass
    if not last:
        os.close(ready_fd)


def lean_command(
    paths: Paths, name: str, xid: int, files: tuple[str, str], memory: str | None
) -> list[str]:
    """vsuper's command line, but for init's PID and the console, notify, console socket
    and ready fds.

    ``files``: (run dir, log file); ``memory``: the memory cgroup the meminfo
    view is made from, or None. The compiled start (cache.h) appends the same
    five. vsuper runs this interpreter with BOOTSTRAP and the search path for
    ``main``; the stop signal depends on the fakeinit flag of the exec plan.
    """
    from engine.paths import check_name

    check_name(name)
    import engine
    from engine.helpers import require
    from engine.runtime.profile import flag

    vsuper = require("vsuper")["vsuper"]
    # the package's own parent first: an editable install finds it by a hook -S skips
    here = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
    search = "\n".join(p for p in [here, *sys.path] if p and "\n" not in p)
    fakeinit = "1" if flag(files[0], "fakeinit") else "0"
    return [vsuper, sys.executable, search, str(paths.root), name, str(xid), *files,
            memory or "", fakeinit]  # fmt: skip


def _stdio(log_file: str) -> int:
    """stdin /dev/null, stdout/stderr and the returned fd: the log, O_APPEND."""
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    log_fd = os.open(log_file, flags, 0o640)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    return log_fd


_log = runfiles.log_line


def main(args: list[str]) -> None:
    """What vsuper runs Python for: ``finish`` (init ended) or ``meminfo`` (render the view)."""
    code = 1
    try:
        if args[0] == "meminfo":
            refresh_meminfo(args[1], args[2])
            code = 0
        else:
            code = _finish_main(args[1:])
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _finish_main(args: list[str]) -> int:
    """After init's exit (vsuper has drained the console): teardown, then reboot or end."""
    # memory and fakeinit (args 5, 6): the next boot finds both anew
    root, name, xid, run_dir, log_file, _, _, status, reboot, notify, listening, ready, mark = args
    sup = Supervisor(root, name, int(xid), run_dir, log_file)
    sup.notify, sup.listen, sup.ready = int(notify), int(listening), int(ready)
    sup.log_mark = int(mark)
    for fd in (sup.notify, sup.listen, sup.ready):
        if fd >= 0:
            os.set_inheritable(fd, False)
    sup.log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, sup.on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # vsuper kept it blocked
    if sup.finish(how_init_ended(int(status)), reboot == "1"):
        sup.supervise()  # rebooted: vsuper again (does not return)
    return 0


def refresh_meminfo(memory: str, view: str) -> None:
    """The guest's /proc/meminfo, every line from its memory cgroup (a live limit too).

    procview and memstat loaded on their own: their packages import heavier code.
    """
    procview = _load("engine.rootfs.procview", "rootfs/procview.py")
    memstat = _load("engine.cgroups.memstat", "cgroups/memstat.py")
    with open("/proc/meminfo") as f:
        host = f.read()
    try:
        figures = memstat.read(memory)  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return  # the cgroup went away under a dying guest: keep the last view
    text = procview.render_guest_meminfo(figures, host)  # type: ignore[attr-defined]
    procview.write_view(view, text)  # type: ignore[attr-defined]


def _paths(root: str) -> Paths:
    from engine.paths import Paths

    return Paths.from_root(root)


def _load(module: str, rel: str) -> object:
    """One engine module alone (``rel`` from engine/): their packages import heavier code."""
    import importlib.util

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(module, os.path.join(here, rel))
    loaded = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(loaded)  # type: ignore[union-attr]
    return loaded


def how_init_ended(status: int) -> str:
    """The log's words for init's wait status (kernel/reboot.c: reboot(2) in a PID
    namespace kills init with SIGHUP for a restart, SIGINT for a halt or power-off).
    vsuper.c's how_init_ended says the same when a `vserver stop` cleans up."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGHUP:
            return "init asked for a reboot"
        if sig == signal.SIGINT:
            return "init halted"
        return f"init killed by signal {signal.Signals(sig).name}"
    code = os.WEXITSTATUS(status)
    return "init halted" if code == 0 else f"init exited with status {code}"


class Supervisor:
    """The Python half of a guest's supervision: what follows init's end."""

    def __init__(self, root: str, name: str, xid: int, run_dir: str, log_file: str) -> None:
        self.root = root
        self.name = name
        self.xid = xid
        self.run_dir = run_dir
        self.log_file = log_file
        self.log_fd = -1
        self.console = -1  # the pty's master: the guest's /dev/console
        self.notify = -1  # the sd_notify socket
        self.listen = -1  # the console socket
        self.ready = -1  # the CLI waiting for the start's answer, until it has it
        self.init_pid = 0
        self.memory: str | None = None
        self.stop_requested = False
        self.log_mark = 0  # the log's size when this boot started (a failed start's tail)

    def _log(self, text: str) -> None:
        _log(self.log_fd, self.name, text)

    def on_signal(self, _signum: int, _frame: object) -> None:
        self.stop_requested = True  # during a reboot: the guest stops after it

    # -- boot (reboot only: the first boot happened before vsuper) ------------------------
    def _boot(self) -> str | None:
        """One boot through a child; None on success (init_pid set), else the error."""
        from engine.runtime.ptyconsole import open_pty

        runfiles.write_value(self.run_dir, "state", "starting")
        self.log_mark = os.fstat(self.log_fd).st_size
        master, slave = open_pty()
        os.close(self.notify)
        self.notify = notify_socket(self.run_dir)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                os.close(r)
                os.close(master)
                self._close_own_fds()
                from engine.runtime.starting import launch

                paths = _paths(self.root)
                with boundary("reboot", self.name):
                    b = launch(paths, self.name, self.xid, slave, os.getppid(), START_TIMEOUT)
                os.write(w, f"ok {b.init_pid} {b.memory_dir or ''}".encode())
                code = 0
            except BaseException as exc:
                os.write(w, f"error {forked.one_line(exc)}".encode(errors="replace"))
            finally:
                os._exit(code)
        os.close(w)
        os.close(slave)
        reply = forked.read_all(r).decode(errors="replace")
        os.waitpid(pid, 0)
        kind, _, rest = reply.partition(" ")
        if kind != "ok":
            os.close(master)
            return rest or "the start helper died; see the log"
        self.console = master
        pid_text, _, memory = rest.partition(" ")
        self.init_pid, self.memory = int(pid_text), memory or None
        return None  # vboot recorded init.pid etc. and logged the start

    def _close_own_fds(self) -> None:
        """In a forked child: what only the supervisor may hold."""
        for fd in (self.ready, self.notify, self.listen):
            if fd >= 0:
                os.close(fd)

    def _teardown(self) -> None:
        def work() -> None:
            from engine.runtime.stopping import teardown

            teardown(_paths(self.root), self.name, keep_run_dir=True)

        try:
            forked.run(work, self.name)
        except Exception as exc:
            self._log(f"teardown: {forked.one_line(exc)}")

    def supervise(self) -> None:
        """The rebooted guest's supervision: vsuper, with this boot's log mark."""
        paths = _paths(self.root)
        command = lean_command(paths, self.name, self.xid, (self.run_dir, self.log_file),
                               self.memory)  # fmt: skip
        # vsuper takes SIGTERM from a signalfd: blocked across the exec, one that
        # came during the reboot stays pending for it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        if self.stop_requested:
            os.kill(os.getpid(), signal.SIGTERM)
        fds = (self.console, self.notify, self.listen, self.ready)
        _exec_vsuper(command, self.init_pid, fds, str(self.log_mark))

    def finish(self, ended: str, reboot: bool) -> bool:
        """After init's exit: teardown, then reboot (True) or end (False).

        While `vserver NAME start` still waits for its answer, it holds the
        guest's lock for this start: everything is undone first, then the
        start is told it failed, with init's end and the console's last lines.
        """
        reboot = reboot and not self.stop_requested
        self._log(ended)
        self._log("rebooting" if reboot else "stopped")
        waiting = self.ready >= 0
        failure = f"{ended}{self._console_tail()}"
        lock = runfiles.RunLock(self.run_dir)
        if not waiting and not lock.acquire(timeout=0):
            return False  # a `vserver stop` holds the lock and cleans up itself
        try:
            self._teardown()
            if reboot:
                error = self._boot()
                if error is None:
                    return True
                self._log(f"restart failed: {error}")
                failure = error
            _remove_run_dir(self.run_dir)
            self._answer(f"error {failure}", last=True)
            return False
        finally:
            if not waiting:
                lock.release()

    def _answer(self, text: str, last: bool = False) -> None:
        """Tell the waiting `vserver NAME start` how the start went (once); ``last``
        as for the module's ``_answer`` (the supervisor exits right after)."""
        if self.ready < 0:
            return
        _answer(self.ready, text[:65536], last)
        self.ready = -1

    def _console_tail(self) -> str:
        """The console's last lines of this boot, for a failed start's message."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self.log_mark)
                text = f.read()[-16384:].decode(errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.replace("\\r", "\\n").splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("--- vserver ")]
        if not lines:
            return ""
        return "; the console said: " + " | ".join(lines[-CONSOLE_TAIL:])


def older_log(log_file: str) -> str:
    """Where the capped part of a console log goes (``vserver delete`` removes it;
    vsuper's pump writes it)."""
    return f"{log_file}.1"
