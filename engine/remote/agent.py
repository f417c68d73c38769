"""``vstui agent``: this host's engine for a console elsewhere, on stdin/stdout.

It runs as ``ssh HOST vstui agent --root ROOT`` and lives as long as its
stdin: when the console (or the connection) goes, the agent stops its
streams, lets an action in progress finish, and exits. Every operation goes
through ``engine.facade.Engine``, so ``--read-only`` (or a non-root user)
refuses every change here, whatever the console asks: put
``command="vstui agent --read-only",restrict`` in authorized_keys and a
key can only look.

The protocol's file descriptors are taken away from fds 0 and 1 before
anything else runs (Mercurial's sshserver does the same): fd 0 becomes
/dev/null and fd 1 a copy of stderr, so a ``print`` or a child that
inherits them cannot corrupt the stream.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from engine.errors import ProtocolError, VstuiError
from engine.facade import Engine
from engine.remote import protocol

STOP_GRACE = 5.0  # seconds a stream's process gets after SIGTERM when the console goes
INPUT_QUEUE = 64  # chunks (of up to 64 KiB) of a stream's input held before reading stops
MIN_INTERVAL = 0.2


def protect_stdio() -> tuple[IO[bytes], IO[bytes]]:
    """The protocol's input and output, moved off fds 0 and 1."""
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return inp, out


class _Diagnostics:
    """stderr that never raises: when the connection is gone, so is the pipe
    behind it, and a warning must not stop the agent from cleaning up."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass


def host_facts(engine: Engine) -> dict[str, Any]:
    """What the console shows about a host before the first snapshot."""
    u = os.uname()
    return {
        "hostname": u.nodename, "kernel": u.release, "machine": u.machine,
        "ncpu": os.cpu_count() or 1, "root": str(engine.paths.root),
        "read_only": engine.read_only, "uid": os.geteuid(), "python": sys.version.split()[0],
    }  # fmt: skip


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vstui")
    except PackageNotFoundError:
        return "unknown"


def hello(engine: Engine) -> dict[str, Any]:
    return {"t": "hello", "protocol": protocol.PROTOCOL, "vstui": version(),
            "schema": protocol.schema(), "host": host_facts(engine)}  # fmt: skip


class Input:
    """Bytes the console sends for a stream, written to a pipe by a thread of
    their own. The queue is bounded: when the reader is slow, the agent stops
    reading the connection, and ssh's flow control slows the console down."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=INPUT_QUEUE)
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        broken = False
        while (data := self.queue.get()) is not None:
            while data and not broken:
                try:
                    data = data[os.write(self.fd, data) :]
                except OSError:
                    broken = True  # the reader closed its end: drop the rest, as a pipe would
        os.close(self.fd)


class Stream:
    """A process whose output goes to the console as it comes, then its exit status."""

    def __init__(self, agent: Agent, ident: int, argv: list[str], stdin: bool) -> None:
        self.agent, self.id = agent, ident
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        self._input = Input(os.dup(self.proc.stdin.fileno())) if self.proc.stdin else None
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        pumps = [(self.proc.stdout, 1), (self.proc.stderr, 2)]
        self._threads = [threading.Thread(target=self._pump, args=a, daemon=True) for a in pumps]
        for t in self._threads:
            t.start()
        threading.Thread(target=self._finish, daemon=True).start()

    def _pump(self, pipe: IO[bytes], fd: int) -> None:
        while data := os.read(pipe.fileno(), 65536):
            self.agent.send({"t": "out", "id": self.id, "fd": fd, **protocol.pack(data)})
        pipe.close()

    def _finish(self) -> None:
        status = self.proc.wait()
        for t in self._threads:
            t.join()
        if self._input is not None:
            self._input.queue.put(None)
        self.agent.stream_done(self.id, 128 - status if status < 0 else status)

    def write(self, data: bytes | None) -> None:
        if self._input is not None:
            self._input.queue.put(data)

    def signal(self, signo: int) -> None:
        try:
            os.killpg(self.proc.pid, signo)
        except ProcessLookupError:
            pass

    def stop(self, grace: float) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()


class Inbox:
    """Bytes from the console as a file object (``read``) for a reader in this
    process. No pipe: a child the reader forks (the unpacking chroot) would
    inherit its write end and the reader would never see the end."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=INPUT_QUEUE)
        self.closed = False  # the reader is done: what still comes is dropped
        self._rest = b""
        self._ended = False

    def put(self, data: bytes | None) -> None:
        while not self.closed:
            try:
                self.queue.put(data, timeout=0.2)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        if not self._rest and not self._ended:
            chunk = self.queue.get()
            self._ended = chunk is None
            self._rest = chunk or b""
        if size < 0:
            size = len(self._rest)
        data, self._rest = self._rest[:size], self._rest[size:]
        return data

    def close(self) -> None:
        self.closed = True


class Receive:
    """Bytes from the console into an engine call that reads them (the receiving
    end of ``vserver NAME migrate``); answers ok or err."""

    def __init__(self, agent: Agent, ident: int, work: Callable[[Inbox], Any]) -> None:
        self.agent, self.id = agent, ident
        self.inbox = Inbox()
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[Inbox], Any]) -> None:
        try:
            self.agent.answer(self.id, lambda: work(self.inbox))
        finally:
            self.inbox.close()  # a sender still sending: the rest is dropped
            self.agent.stream_gone(self.id)

    def write(self, data: bytes | None) -> None:
        self.inbox.put(data)

    def signal(self, signo: int) -> None:
        self.inbox.put(None)  # the reader sees the end of a cut stream and gives up

    def stop(self, grace: float) -> None:
        self.inbox.put(None)
        self.thread.join()


class Watch:
    """Snapshots every ``interval`` seconds, sent as deltas, until stopped."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.observer = agent.engine.snapshot_source()
        self.encoder = protocol.SnapshotEncoder()
        self.interval = 1.0
        self.procs: str | list[str] = "none"
        self.wake = threading.Event()
        self.stopped = False
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def set(self, interval: float, procs: str | list[str]) -> None:
        with self.lock:
            self.interval = max(MIN_INTERVAL, interval)
            self.procs = procs
            self.encoder.reset()
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        self.wake.set()

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    def _run(self) -> None:
        while not self.stopped:
            self.wake.clear()
            try:
                snap = self.observer.snapshot()
            except Exception as exc:  # a failed sample must not end the watch
                print(f"vstui agent: snapshot failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr)  # fmt: skip
            else:
                with self.lock:
                    frame = self.encoder.frame(snap, self._rows(snap))
                self.agent.send(frame)
            self.wake.wait(self.interval)

    def _rows(self, snap: Any) -> tuple[Any, ...]:
        scope = self.procs
        if scope == "all":
            return snap.procs
        if isinstance(scope, list):
            wanted = set(scope)
            return tuple(p for p in snap.procs if p.guest in wanted)
        return ()


class Agent:
    """Reads requests, runs them through the facade, writes answers."""

    def __init__(self, engine: Engine, inp: IO[bytes], out: IO[bytes]) -> None:
        self.engine = engine
        self._inp, self._out = inp, out
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream | Receive] = {}
        self._calls: list[threading.Thread] = []
        self._watch: Watch | None = None
        self._arrived: set[str] = set()  # guests received and not yet committed
        self._gone = False
        self.calls: dict[str, Callable[[dict[str, Any]], Any]] = self._call_table()

    # -- output --------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        data = protocol.encode(msg)
        with self._send_lock:
            if self._gone:
                return
            try:
                self._out.write(data)
            except OSError:
                self._gone = True  # the console went away; stdin's EOF ends the loop

    def stream_done(self, ident: int, status: int) -> None:
        self._streams.pop(ident, None)
        self.send({"t": "exit", "id": ident, "status": status})

    def stream_gone(self, ident: int) -> None:
        self._streams.pop(ident, None)

    # -- the loop ------------------------------------------------------
    def serve(self) -> int:
        self.send(hello(self.engine))
        for line in self._lines():
            try:
                msg = protocol.decode(line)
                self.dispatch(msg)
            except ProtocolError as exc:
                print(f"vstui agent: {exc.message}", file=sys.stderr)
                self.send({"t": "err", "id": None, "error": protocol.error_to_wire(exc)})
        self.shutdown()
        return 0

    def _lines(self) -> Iterator[bytes]:
        buf = b""
        while chunk := self._inp.read(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            yield from (line for line in lines if line.strip())
            if len(buf) > protocol.MAX_LINE:
                print("vstui agent: a request line is too long; closing", file=sys.stderr)
                return

    def shutdown(self) -> None:
        """The console went away: stop watching and streaming, finish actions."""
        if self._watch is not None:
            self._watch.stop()
        for stream in list(self._streams.values()):
            stream.stop(STOP_GRACE)
        for thread in self._calls:
            thread.join()
        for name in sorted(self._arrived):
            self._send_back(name)

    def _send_back(self, name: str) -> None:
        """A guest that arrived (migrate) but was never committed: the console
        that sent it is gone, so it is removed, as if it had never come."""
        try:
            if name not in self.engine.list_guests():
                return  # the sender removed it already
        except VstuiError:
            pass
        print(f"vstui agent: {name} arrived but was not committed; removing it", file=sys.stderr)
        try:
            self.engine.stop(name)
        except VstuiError:
            pass  # not running
        try:
            self.engine.delete(name, force=True)
        except VstuiError as exc:
            print(f"vstui agent: {name}: {exc.message}", file=sys.stderr)

    def dispatch(self, msg: dict[str, Any]) -> None:
        op, ident = msg.get("op"), msg.get("id")
        if op in ("stdin", "eof", "cancel"):
            self._control(op, msg)
        elif not isinstance(ident, int) or not isinstance(op, str):
            raise ProtocolError(f"a request needs an integer id and an op: {msg!r:.80}")
        elif op == "watch":
            self.answer(ident, lambda: self._start_watch(msg))
        elif op == "receive":
            self._start_receive(ident, msg)
        elif op in ("exec", "tool"):
            self._start_stream(ident, op, msg)
        elif op in self.calls:
            call = self.calls[op]
            thread = threading.Thread(target=self.answer, args=(ident, lambda: call(msg)))
            self._calls = [t for t in self._calls if t.is_alive()] + [thread]
            thread.start()
        else:
            self.send(
                {
                    "t": "err",
                    "id": ident,
                    "error": protocol.error_to_wire(
                        VstuiError(f"unknown operation '{op}'; this agent is vstui {version()}")
                    ),
                }
            )

    def answer(self, ident: int, call: Callable[[], Any]) -> None:
        """Run ``call`` and send its result, or its error as one engine error."""
        try:
            result = call()
        except VstuiError as exc:
            self.send({"t": "err", "id": ident, "error": protocol.error_to_wire(exc)})
        except (TypeError, KeyError, ValueError) as exc:
            bad = VstuiError(f"bad request: {type(exc).__name__}: {exc}")
            self.send({"t": "err", "id": ident, "error": protocol.error_to_wire(bad)})
        except OSError as exc:
            from engine.errors import KernelError

            err = KernelError.from_oserror("request", exc)  # the facade names most
            self.send({"t": "err", "id": ident, "error": protocol.error_to_wire(err)})
        else:
            self.send({"t": "ok", "id": ident, "result": result})

    # -- operations ----------------------------------------------------
    def _call_table(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        e = self.engine
        return {
            "ping": lambda m: {"wall": time.time(), "load": list(os.getloadavg())},
            "list_guests": lambda m: e.list_guests(),
            "log_tail": lambda m: e.log_tail(_name(m), int(m.get("lines", 200))),
            "audit": lambda m: [_finding(f) for f in e.audit()],
            "config": lambda m: _config(*e.config_text(_name(m))),
            "log_since": lambda m: e.log_since(_name(m), int(m.get("offset", 0)),
                                               int(m.get("lines", 200))),
            "start": lambda m: e.start(_name(m)),
            "stop": lambda m: e.stop(_name(m)),
            "restart": lambda m: e.restart(_name(m)),
            "delete": lambda m: e.delete(_name(m), force=bool(m.get("force", False))),
            "kill": lambda m: e.kill(int(m["pid"]), int(m["starttime"]),
                                     int(m.get("sig", signal.SIGTERM)), str(m.get("guest", ""))),
            "save_config": lambda m: _saved(e.save_config(_name(m), _changes(m))),
            "apply_limits": lambda m: _saved(e.apply_limits(_name(m))),
            "migrate_check": lambda m: e.receive_check(_name(m), _xid(m), _words(m, "addresses")),
            "commit": lambda m: self._commit(_name(m)),
        }  # fmt: skip

    def _start_watch(self, msg: dict[str, Any]) -> dict[str, Any]:
        procs = msg.get("procs", "none")
        if not (procs in ("none", "all") or isinstance(procs, list)):
            raise VstuiError("watch: procs is 'none', 'all' or a list of guest names")
        if self._watch is None:
            self._watch = Watch(self)
        self._watch.set(float(msg.get("interval", 1.0)), procs)
        return {}

    def _start_stream(self, ident: int, op: str, msg: dict[str, Any]) -> None:
        try:
            if op == "exec":
                argv = self.engine.exec_argv(_name(msg), str(msg["command"]))
            else:
                argv = self.engine.tool_argv(str(msg["tool"]), list(msg.get("args", [])))
            self._streams[ident] = Stream(self, ident, argv, bool(msg.get("stdin", False)))
        except (VstuiError, KeyError, TypeError, OSError) as exc:
            if not isinstance(exc, VstuiError):
                exc = VstuiError(f"bad request: {type(exc).__name__}: {exc}")
            self.send({"t": "err", "id": ident, "error": protocol.error_to_wire(exc)})

    def _commit(self, name: str) -> dict[str, Any]:
        """The sender is done (the guest started here): the guest stays."""
        if name not in self._arrived:
            raise VstuiError("nothing to commit: no guest of that name arrived here", name)
        self._arrived.discard(name)
        return {}

    def _start_receive(self, ident: int, msg: dict[str, Any]) -> None:
        """A guest arriving as a stream (migrate): refused at once when read-only."""
        try:
            name, overrides, xid = _name(msg), _changes(msg, "overrides"), _xid(msg)
            text = msg.get("config")
            if text is not None and not isinstance(text, str):
                raise VstuiError("bad request: config must be NAME.conf's text")
            self.engine.check("build", name)
        except VstuiError as exc:
            self.send({"t": "err", "id": ident, "error": protocol.error_to_wire(exc)})
            return

        def work(inbox: Inbox) -> Any:
            result = self.engine.receive_guest(name, inbox, overrides, xid, text)
            self._arrived.add(name)  # until "commit": removed again if the console goes
            return result

        self._streams[ident] = Receive(self, ident, work)

    def _control(self, op: str, msg: dict[str, Any]) -> None:
        stream = self._streams.get(msg.get("to"))  # type: ignore[arg-type]
        if stream is None:
            return  # it ended meanwhile: its exit is on the way
        if op == "stdin":
            stream.write(protocol.unpack(msg))
        elif op == "eof":
            stream.write(None)
        else:
            stream.signal(int(msg.get("sig", signal.SIGTERM)))


def _name(msg: dict[str, Any]) -> str:
    name = msg.get("name")
    if not isinstance(name, str) or not name:
        raise VstuiError("bad request: a guest name is needed")
    return name


def _changes(msg: dict[str, Any], key: str = "changes") -> dict[str, str | None]:
    changes = msg.get(key, {} if key == "overrides" else None)
    if not isinstance(changes, dict):
        raise VstuiError(f"bad request: {key} must be an object")
    return {str(k): (None if v is None else str(v)) for k, v in changes.items()}


def _xid(msg: dict[str, Any]) -> int | None:
    xid = msg.get("xid")
    if xid is not None and (not isinstance(xid, int) or isinstance(xid, bool) or xid <= 0):
        raise VstuiError("bad request: xid must be a positive integer")
    return xid


def _words(msg: dict[str, Any], key: str) -> list[str]:
    words = msg.get(key, [])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise VstuiError(f"bad request: {key} must be a list of strings")
    return words


def _finding(f: Any) -> dict[str, Any]:
    return {"severity": f.severity, "title": f.title, "fix": f.fix, "guest": f.guest,
            "why": f.why}  # fmt: skip


def _saved(result: Any) -> dict[str, Any]:
    return {"name": result.name, "changed": result.changed, "applied": result.applied,
            "needs_restart": result.needs_restart, "errors": result.errors}  # fmt: skip


def _config(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, **protocol.pack(data)}


def main(root: str | None, read_only: bool) -> int:
    """``vstui agent [--root DIR] [--read-only]``."""
    inp, out = protect_stdio()
    sys.stderr = _Diagnostics(sys.stderr)  # type: ignore[assignment]
    original = os.environ.get("SSH_ORIGINAL_COMMAND")
    if original is not None and " agent" not in f" {original}":
        # a forced command (authorized_keys command="vstui agent ...") met a
        # client that asked for something else: say so instead of speaking
        # the protocol to a terminal
        print(f"vstui agent: this key only runs the agent; refused: {original[:80]}",
              file=sys.stderr)  # fmt: skip
        return 1
    from engine.paths import Paths

    reason = "the host is read-only (vstui agent --read-only)"
    if os.geteuid() != 0 and not read_only:
        reason = "the agent does not run as root"
    engine = Engine(Paths.from_root(root), read_only=read_only or os.geteuid() != 0,
                    read_only_reason=reason)  # fmt: skip
    return Agent(engine, inp, out).serve()
