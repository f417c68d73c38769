"""A console's end of ``vstui agent``: calls, streams and snapshots over ssh.

``AgentClient(host).connect()`` starts the agent (through ssh, or directly
for ``local``), checks its hello and protocol version, and reads its
messages on a thread of its own. Everything that can go wrong becomes one
``HostError`` line naming the host: ssh's own words when ssh fails, the
remote command when it is missing or of another version, an excerpt of
what arrived when the agent speaks garbage. A connection that drops while
an action runs fails that action with ``ConnectionLost``: its outcome is
unknown, and the message says so instead of pretending either way.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from engine.datamodel import Snapshot
from engine.errors import ConnectionLost, HostError, ProtocolError, VstuiError
from engine.remote import protocol, ssh
from engine.remote.hosts import Host, config_file

HELLO_TIMEOUT = 30.0  # seconds from starting ssh to the agent's hello
CLOSE_TIMEOUT = 5.0
OutputFn = Callable[[int, bytes], None]


class _Pending:
    """One request waiting for its answer (or, for a stream, its exit)."""

    def __init__(self, op: str, name: str | None, output: OutputFn | None = None) -> None:
        self.op, self.name, self.output = op, name, output
        self.done = threading.Event()
        self.result: Any = None
        self.error: VstuiError | None = None

    def finish(self, result: Any = None, error: VstuiError | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()

    def what(self) -> str:
        return f"{self.op} {self.name}" if self.name else self.op


class AgentClient:
    """One host's agent: call(), stream(), watch(); thread-safe."""

    def __init__(
        self,
        host: Host,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        on_lost: Callable[[HostError], None] | None = None,
        persist: bool = True,
    ) -> None:
        self.host = host
        self.persist = persist  # False: a long session; see ssh.base_argv
        self.on_snapshot, self.on_lost = on_snapshot, on_lost
        self.hello: dict[str, Any] = {}
        self.snapshot: Snapshot | None = None
        self.frame_at: float | None = None  # monotonic time of the last snapshot frame
        self.rtt: float | None = None
        self.bytes_in = 0
        self.error: HostError | None = None
        self.said = ""  # what ssh wrote on stderr when the connection ended
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._hello = threading.Event()
        self._decoder: protocol.SnapshotDecoder | None = None
        self._reader: threading.Thread | None = None
        self._closing = False

    @property
    def alive(self) -> bool:
        return self._hello.is_set() and self.error is None

    # -- connecting ----------------------------------------------------
    def connect(self, timeout: float = HELLO_TIMEOUT) -> dict[str, Any]:
        """Start the agent and wait for its hello; HostError when that fails."""
        try:
            return self._connect(timeout)
        except HostError:
            if self.host.local or not ssh.is_mux_race(self.said):
                raise
            self.__init__(self.host, self.on_snapshot, self.on_lost, self.persist)  # type: ignore[misc]
            return self._connect(timeout)  # a master that was just exiting: once more

    def _connect(self, timeout: float) -> dict[str, Any]:
        argv = ssh.agent_argv(self.host, self.persist)
        self._stderr = tempfile.TemporaryFile(prefix="vstui-ssh-")
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise HostError(f"cannot run {argv[0]}: {exc.strerror}", self.host.name) from exc
        started = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"agent-{self.host.name}")  # fmt: skip
        self._reader.start()
        if not self._hello.wait(timeout) and self.error is None:
            self._fail(HostError(f"no answer within {timeout:.0f} s from "
                                 f"`{self._shown_command()}`", self.host.name))  # fmt: skip
        if self.error is not None:
            self.close()
            raise self.error
        self.rtt = time.monotonic() - started
        return self.hello

    def _shown_command(self) -> str:
        if self.host.local:
            return f"vstui --root {self.host.root} agent"
        return f"{self.host.describe()} {self.host.agent_command()}"

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            return self._stderr.read(65536).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    # -- reading -------------------------------------------------------
    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            while line := stdout.readline(protocol.MAX_LINE):
                self.bytes_in += len(line)
                if not line.endswith(b"\n"):
                    raise ProtocolError(f"a line longer than {protocol.MAX_LINE} bytes")
                self._handle(line)
        except HostError as exc:
            if not exc.host:
                exc.host = self.host.name
            self._fail(exc)
            self._stop_process()
            return
        except (OSError, ValueError):
            pass
        self._fail(self._ended())

    def _handle(self, line: bytes) -> None:
        if not self._hello.is_set():
            self._take_hello(line)
            return
        msg = protocol.decode(line)
        kind = msg.get("t")
        if kind == "snap":
            self._take_snapshot(msg)
        elif kind in ("ok", "err", "out", "exit"):
            self._take_answer(kind, msg)
        elif kind is None:
            raise ProtocolError(f"a message without a type: {protocol.excerpt(line)}")

    def _take_hello(self, line: bytes) -> None:
        try:
            msg = protocol.decode(line)
        except ProtocolError:
            raise ProtocolError(
                f"`{self._shown_command()}` answered {protocol.excerpt(line)} instead of the "
                "agent's hello (a shell start-up file that prints, or not vstui?)"
            ) from None
        if msg.get("t") != "hello":
            raise ProtocolError(f"the agent's first message is not a hello: "
                                f"{protocol.excerpt(line)}")  # fmt: skip
        theirs = msg.get("protocol")
        if theirs != protocol.PROTOCOL:
            from engine.remote.agent import version

            raise ProtocolError(
                f"its vstui {msg.get('vstui', '?')} speaks agent protocol {theirs}, this one "
                f"{protocol.PROTOCOL}: install vstui {version()} there "
                f"(it runs `{self._shown_command()}`)"
            )
        try:
            self._decoder = protocol.SnapshotDecoder(msg.get("schema") or {})
        except ProtocolError as exc:
            raise ProtocolError(f"the agent's hello is not usable: {exc.message}") from None
        self.hello = msg
        self._hello.set()

    def _take_snapshot(self, msg: dict[str, Any]) -> None:
        assert self._decoder is not None
        now = time.monotonic()
        self.snapshot = self._decoder.apply(msg, now)
        self.frame_at = now
        if self.on_snapshot is not None:
            self.on_snapshot(self.snapshot)

    def _take_answer(self, kind: str, msg: dict[str, Any]) -> None:
        ident = msg.get("id")
        with self._lock:
            pending = self._pending.get(ident)  # type: ignore[arg-type]
        if pending is None:
            if ident is None and kind == "err":
                return  # the agent complained about a message of ours; it said so on stderr
            raise ProtocolError(f"an answer to no request: {protocol.excerpt(str(msg))}")
        if kind == "out":
            if pending.output is not None:
                pending.output(int(msg.get("fd", 1)), protocol.unpack(msg))
            return
        with self._lock:
            self._pending.pop(ident, None)  # type: ignore[arg-type]
        if kind == "err":
            pending.finish(error=protocol.error_from_wire(msg.get("error"), self.host.name))
        elif kind == "exit":
            pending.finish(result=int(msg.get("status", 1)))
        else:
            pending.finish(result=msg.get("result"))

    def _ended(self) -> HostError:
        """Why the agent's output ended: ssh's words, a missing command, an old vstui."""
        code = self._wait_exit(2.0)
        self.said = self._stderr_text()
        said = ssh.explain(self.said)
        name = self.host.name
        if self._closing:
            return HostError("connection closed", name)
        if self._hello.is_set():
            why = f": {said}" if said and code == 255 else ""
            return ConnectionLost(f"connection lost{why}", name)
        if code == 255 and not self.host.local:
            if "Could not resolve" in said and not self.host.source:
                said += f" (and there is no [hosts.{name}] in {config_file()})"
            return HostError(said or "ssh failed (exit 255)", name)
        command = self.host.command
        if code in (126, 127):
            return HostError(
                f"the remote command `{command}` cannot run ({said or f'exit {code}'}); install "
                f"vstui there or set command = \"/path/to/vstui\" under [hosts.{name}] in "
                "hosts.toml", name)  # fmt: skip
        from engine.remote.agent import version

        return HostError(
            f"`{self._shown_command()}` did not start the agent (exit {code}"
            f"{': ' + said if said else ''}): install vstui {version()} there, or set "
            f"command = \"/path/to/vstui\" under [hosts.{name}] in hosts.toml", name)  # fmt: skip

    def _wait_exit(self, timeout: float) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _fail(self, error: HostError) -> None:
        """The connection is over: every waiting request learns why."""
        with self._lock:
            if self.error is not None:
                return
            self.error = error
            pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.op in ("ping", "watch", "list_guests", "log_tail", "audit", "config"):
                p.finish(error=error)
            else:
                p.finish(error=ConnectionLost(
                    f"connection lost during {p.what()}: whether it happened is unknown; check "
                    f"with `vserver --host {self.host.name} {p.name or '--list'} "
                    f"{'status' if p.name else ''}`".rstrip(), self.host.name))  # fmt: skip
        self._hello.set()
        if self.on_lost is not None and not self._closing:
            self.on_lost(error)

    # -- requests ------------------------------------------------------
    def _send(self, msg: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        data = protocol.encode(msg)
        with self._lock:
            if self.error is not None:
                raise self.error
            try:
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
            except (OSError, ValueError):
                pass  # the reader sees the end and fails what waits

    def _request(self, op: str, args: dict[str, Any], output: OutputFn | None) -> tuple[
            int, _Pending]:  # fmt: skip
        if not self.alive:
            raise self.error or HostError("not connected", self.host.name)
        ident = next(self._ids)
        pending = _Pending(op, args.get("name"), output)
        with self._lock:
            self._pending[ident] = pending
        self._send({"id": ident, "op": op, **args})
        return ident, pending

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        """Run one operation on the host and return its result (or raise its error)."""
        started = time.monotonic()
        _ident, pending = self._request(op, args, None)
        if not pending.done.wait(timeout):
            raise HostError(f"{pending.what()}: no answer within {timeout:.0f} s", self.host.name)
        if op == "ping":
            self.rtt = time.monotonic() - started
        if pending.error is not None:
            raise pending.error
        return pending.result

    def stream(self, op: str, args: dict[str, Any], output: OutputFn,
               stdin: int | None = None) -> int:  # fmt: skip
        """Run a command on the host, ``output(fd, data)`` as it comes; its exit status.

        ``stdin`` (a file descriptor) is copied to the command until its end.
        Ctrl-C here stops the command there.
        """
        ident, pending = self._request(op, {**args, "stdin": stdin is not None}, output)
        if stdin is not None:
            threading.Thread(target=self._copy_stdin, args=(ident, stdin), daemon=True).start()
        try:
            pending.done.wait()
        except KeyboardInterrupt:
            self.cancel(ident)
            pending.done.wait(10)
            raise
        if pending.error is not None:
            raise pending.error
        return int(pending.result)

    def send_stream(self, op: str, args: dict[str, Any], source: int) -> int:
        """Send the bytes of ``source`` (a descriptor, to its end) as the input
        of ``op`` there and return how many were sent once it answered ok;
        its error (raised) as soon as it gives up."""
        ident, pending = self._request(op, {**args, "stdin": True}, None)
        sent = 0
        while not pending.done.is_set():
            data = os.read(source, 1 << 16)
            self.send_input(ident, data or None)
            if not data:
                break
            sent += len(data)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return sent

    def send_input(self, ident: int, data: bytes | None) -> None:
        """Bytes for a stream's stdin; None closes it."""
        if data is None:
            self._send({"op": "eof", "to": ident})
        else:
            self._send({"op": "stdin", "to": ident, **protocol.pack(data)})

    def cancel(self, ident: int, sig: int = 15) -> None:
        try:
            self._send({"op": "cancel", "to": ident, "sig": sig})
        except HostError:
            pass

    def _copy_stdin(self, ident: int, fd: int) -> None:
        try:
            while data := os.read(fd, 65536):
                self.send_input(ident, data)
            self._send({"op": "eof", "to": ident})
        except (OSError, HostError):
            pass

    def watch(self, interval: float = 1.0, procs: str | list[str] = "none") -> None:
        """Ask for a snapshot every ``interval`` s (procs: 'none', 'all' or guest names)."""
        self.call("watch", interval=interval, procs=procs)

    def load_config(self, name: str) -> Any:
        """The guest's GuestConfig, read there and parsed here as load_config would."""
        from pathlib import Path

        from engine.config import build_config, first_error, parse_bytes

        answer = self.call("config", name=name)
        try:
            path, data = Path(answer["path"]), protocol.unpack(answer)
        except (TypeError, KeyError, AttributeError):
            raise ProtocolError("a malformed config answer", self.host.name) from None
        cfg, errors = build_config(name, parse_bytes(data, path, name), name)
        if errors:
            raise first_error(errors)
        return cfg

    def ping(self, timeout: float = 10.0) -> float:
        self.call("ping", timeout=timeout)
        return self.rtt or 0.0

    # -- closing -------------------------------------------------------
    def close(self) -> None:
        """Close the agent's stdin (it exits), then reap ssh; never leaves a child."""
        self._closing = True
        proc = self._proc
        if proc is not None:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            if self._wait_exit(CLOSE_TIMEOUT) is None:
                self._stop_process()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(CLOSE_TIMEOUT)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _stop_process(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def connect(host: Host, **kwargs: Any) -> AgentClient:
    client = AgentClient(host, **kwargs)
    client.connect()
    return client
