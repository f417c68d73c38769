"""The per-guest supervisor: init's parent outside the guest.

``spawn`` (called by ``vserver NAME start``) double-forks, and the
grandchild execs a fresh, lean interpreter (``python -S -E``) running
``main``: a detached supervisor in its own session with stdio on the guest's
console log. The CLI waits on a pipe until the guest's init runs or the start
failed. The supervisor:

- imports only os, select, signal, ctypes and runfiles: a running guest
  costs a few MB of supervisor memory (LXC's monitor: ~3 MB RSS);
- is a child subreaper, so the guest's PID 1 is reparented to it;
- boots the guest through a short-lived child (``start.launch``), which
  imports storage, cgroups and network code and exits;
- copies init's console (a pipe) into ``paths.log_file(NAME)``;
- waits for init: killed by SIGHUP means reboot(2) inside the guest's PID
  namespace (kernel/reboot.c reboot_pid_ns) -> full teardown and a new boot;
  SIGINT (halt/poweroff) or any other exit -> teardown and stop. SIGTERM to
  the supervisor asks init to stop the guest.

If the supervisor dies the guest keeps running (init has no parent-death
signal) and ``stop``/``enter``/``status`` work from the run directory and
the cgroup alone.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from engine.runtime import forked, runfiles

LOG_CHUNK = 65536

# the lean interpreter's whole program: sys.path from the CLI, then main()
BOOTSTRAP = (
    "import sys; sys.path[:] = sys.argv[1].split('\\n'); "
    "from engine.runtime.supervisor import main; main(sys.argv[2:])"
)

TYPE_CHECKING = False  # not typing's: keep the supervisor's imports minimal
if TYPE_CHECKING:
    from engine.paths import Paths


def spawn(paths: Paths, name: str, xid: int, lock: runfiles.RunLock) -> int:
    """Start the detached supervisor; the guest's init PID once it runs."""
    from engine import _libc
    from engine.errors import VstuiError

    r, w = os.pipe()
    import engine

    # the package's own parent first: an editable install finds it by a hook -S skips
    here = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
    search = "\n".join(p for p in [here, *sys.path] if p and "\n" not in p)
    argv = [sys.executable, "-S", "-E", "-c", BOOTSTRAP, search,
            str(paths.root), name, str(xid), str(lock.fd), str(w),
            os.fspath(paths.run_dir(name)), os.fspath(paths.log_file(name))]  # fmt: skip
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setsid()
            if os.fork() == 0:
                # kept across execve: the lean interpreter needs no ctypes for it
                _libc.set_child_subreaper()
                os.set_inheritable(w, True)
                os.set_inheritable(lock.fd or -1, True)
                os.execv(sys.executable, argv)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    reply = forked.read_all(r).decode(errors="replace").strip()
    kind, _, rest = reply.partition(" ")
    if kind == "ok":
        return int(rest)
    raise VstuiError(rest or "the supervisor died before the guest started; see its log", name)


def main(args: list[str]) -> None:
    root, name, xid, lock_fd, ready_fd, run_dir, log_file = args
    code = 1
    try:
        os.chdir("/")  # a daemon pins no directory
        sup = Supervisor(root, name, int(xid), int(lock_fd), int(ready_fd), run_dir, log_file)
        code = sup.run()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _paths(root: str) -> Paths:
    from engine.paths import Paths

    return Paths.from_root(root)


class Supervisor:
    def __init__(self, root: str, name: str, xid: int, lock_fd: int | None, ready_fd: int,
                 run_dir: str, log_file: str) -> None:  # fmt: skip
        self.root = root
        self.name = name
        self.xid = xid
        self.lock_fd = lock_fd
        self.ready_fd: int | None = ready_fd
        self.run_dir = run_dir
        self.log_file = log_file
        self.log_fd = -1
        self.log_r = self.log_w = -1
        self.wake_r = -1
        self.init_pid = 0
        self.stop_requested = False
        self.stop_sent = False

    # -- plumbing ---------------------------------------------------------------
    def _stdio(self) -> None:
        os.makedirs(os.path.dirname(self.log_file), exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self.log_fd = os.open(self.log_file, flags, 0o640)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(self.log_fd, 1)
        os.dup2(self.log_fd, 2)

    def _log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(self.log_fd, f"--- vserver {self.name}: {text} at {stamp} ---\n".encode())

    def _reply(self, text: str) -> None:
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, text.encode(errors="replace"))
            finally:
                os.close(self.ready_fd)
                self.ready_fd = None

    def _release_lock(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    # -- boot -------------------------------------------------------------------------
    def _boot(self) -> str | None:
        """One boot through a child; None on success (init_pid set), else the error."""
        runfiles.write_value(self.run_dir, "state", "starting")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                os.close(r)
                for fd in (self.lock_fd, self.ready_fd, self.log_r, self.wake_r):
                    if fd is not None and fd >= 0:
                        os.close(fd)
                signal.set_wakeup_fd(-1)
                from engine.runtime.start import launch

                init_pid, start = launch(_paths(self.root), self.name, self.log_w)
                os.write(w, f"ok {init_pid} {start}".encode())
                code = 0
            except BaseException as exc:
                os.write(w, f"error {forked.one_line(exc)}".encode(errors="replace"))
            finally:
                os._exit(code)
        os.close(w)
        reply = forked.read_all(r).decode(errors="replace")
        os.waitpid(pid, 0)
        kind, _, rest = reply.partition(" ")
        if kind != "ok":
            return rest or "the start helper died; see the log"
        pid_text, _, start_text = rest.partition(" ")
        self.init_pid = int(pid_text)
        runfiles.write_value(self.run_dir, "init.pid", self.init_pid)
        runfiles.write_value(self.run_dir, "init.start", int(start_text))
        runfiles.write_value(self.run_dir, "started", f"{time.time():.3f}")
        runfiles.write_value(self.run_dir, "state", "running")
        self._log(f"started, init pid {self.init_pid}")
        return None

    def _teardown(self) -> None:
        def work() -> None:
            from engine.runtime.stop import teardown

            teardown(_paths(self.root), self.name, keep_run_dir=True)

        try:
            forked.run(work, self.name)
        except Exception as exc:
            self._log(f"teardown: {forked.one_line(exc)}")

    # -- main ---------------------------------------------------------------------------
    def run(self) -> int:
        self._stdio()  # a child subreaper already: spawn() set it before exec
        for sig in (signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        os.makedirs(self.run_dir, exist_ok=True)
        me = os.getpid()
        runfiles.write_value(self.run_dir, "supervisor.pid", me)
        runfiles.write_value(self.run_dir, "supervisor.start", runfiles.proc_starttime(me) or 0)
        runfiles.write_value(self.run_dir, "xid", self.xid)
        self.log_r, self.log_w = os.pipe2(os.O_CLOEXEC)
        os.set_inheritable(self.log_w, True)
        error = self._boot()
        if error is not None:
            self._log(f"start failed: {error}")
            runfiles.remove_dir(self.run_dir)
            self._reply(f"error {error}")
            self._release_lock()
            return 1
        self._reply(f"ok {self.init_pid}")
        self._release_lock()
        while True:
            status = self._wait_init()
            reboot = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP
            if not self._finish(reboot and not self.stop_requested):
                return 0

    def _finish(self, reboot: bool) -> bool:
        """After init's exit: teardown, then reboot (True) or end (False)."""
        self._log("rebooting" if reboot else "stopped")
        lock = runfiles.RunLock(self.run_dir)
        if not lock.acquire(timeout=0):
            return False  # a `vserver stop` holds the lock and cleans up itself
        try:
            self._teardown()
            if not reboot:
                runfiles.remove_dir(self.run_dir)
                return False
            error = self._boot()
            if error is not None:
                self._log(f"restart failed: {error}")
                runfiles.remove_dir(self.run_dir)
                return False
            return True
        finally:
            lock.release()

    def _wait_init(self) -> int:
        """Copy the console to the log until init exits; its wait status."""
        pidfd = os.pidfd_open(self.init_pid)
        poller = select.poll()
        poller.register(self.log_r, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        try:
            while True:
                if self.stop_requested and not self.stop_sent:
                    self.stop_sent = True
                    _signal(self.init_pid, signal.SIGTERM)
                events = poller.poll()
                for fd, _ in events:
                    if fd == self.log_r:
                        os.write(self.log_fd, os.read(self.log_r, LOG_CHUNK))
                    elif fd == self.wake_r:
                        _drain_quietly(self.wake_r)
                if any(fd == pidfd for fd, _ in events):
                    _, status = os.waitpid(self.init_pid, 0)
                    self._drain()
                    self._reap()
                    return status
        finally:
            os.close(pidfd)

    def _drain(self) -> None:
        os.set_blocking(self.log_r, False)
        try:
            while data := os.read(self.log_r, LOG_CHUNK):
                os.write(self.log_fd, data)
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self.log_r, True)

    @staticmethod
    def _reap() -> None:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass


def _drain_quietly(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
