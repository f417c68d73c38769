"""The classic tools on other hosts: ``--host NAME`` (repeatable where it merges).

Each host's own tool runs there through its agent (``vstui agent`` over
ssh, so a read-only host refuses changes there too), and the outputs are
merged in the tool's usual format: a HOST column first, or a ``host``
field in JSON. A host that fails is one line on stderr; the others are
still shown, and the exit status says something failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from engine.errors import HostError, VstuiError
from engine.remote import ssh
from engine.remote.client import AgentClient
from engine.remote.hosts import Host, resolve_all
from engine.text import visible


class HostRun:
    """One host's run of a tool: its output, its status, or why it failed."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.out = bytearray()
        self.err = bytearray()
        self.status = 0
        self.error: VstuiError | None = None

    def output(self, fd: int, data: bytes) -> None:
        (self.out if fd == 1 else self.err).extend(data)


def hosts_for(tool: str, names: Sequence[str], root: str | None, many: bool) -> list[Host]:
    """The hosts named on the command line; one only where the tool acts on one."""
    if root is not None:
        raise VstuiError("--root and --host do not mix: a host's root is root = \"DIR\" "
                         "in hosts.toml")  # fmt: skip
    if not many and len(set(names)) > 1:
        raise VstuiError(f"{tool} works on one host at a time; give --host once")
    return resolve_all(list(names))


def run_one(run: HostRun, tool: str, args: Sequence[str], stdin: int | None = None,
            output: Callable[[int, bytes], None] | None = None) -> None:  # fmt: skip
    """Run ``tool args`` on one host, filling ``run``; never raises."""
    client = AgentClient(run.host)
    try:
        client.connect()
        run.status = client.stream("tool", {"tool": tool, "args": list(args)},
                                   output or run.output, stdin)  # fmt: skip
    except VstuiError as exc:
        run.error = exc
        run.status = 1
    finally:
        client.close()


def run_all(hosts: list[Host], tool: str, args: Sequence[str]) -> list[HostRun]:
    """``tool args`` on every host at once; results in the hosts' order."""
    runs = [HostRun(h) for h in hosts]
    threads = [threading.Thread(target=run_one, args=(r, tool, args)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs


def report_failures(tool: str, runs: list[HostRun]) -> int:
    """Every host's error and stderr, one line each; the worst exit status."""
    status = 0
    for run in runs:
        for line in run.err.decode("utf-8", "replace").splitlines():
            if line.strip():
                print(_host_line(tool, run.host.name, line), file=sys.stderr)
        if run.error is not None:
            exc = run.error
            if exc.host is None:
                exc.host = run.host.name
            from vstui.cli.common import report

            report(tool, exc)
        status = max(status, run.status)
    return status


def _host_line(tool: str, host: str, line: str) -> str:
    line = visible(line)
    prefix = f"{tool}: "
    rest = line[len(prefix) :] if line.startswith(prefix) else line
    return f"{tool}: host '{host}': {rest}"


def merge_columns(runs: list[HostRun], header: bool = True) -> list[str]:
    """Text output with a HOST column in front (the header line taken once)."""
    width = max([4, *(len(r.host.name) for r in runs)])
    lines: list[str] = []
    head: str | None = None
    for run in runs:
        if run.error is not None:
            continue
        text = run.out.decode("utf-8", "replace").splitlines()
        if header and text:
            head = head or text[0]
            text = text[1:]
        lines += [f"{run.host.name:<{width}} {visible(line)}" for line in text]
    if head is not None:
        lines.insert(0, f"{'HOST':<{width}} {head}")
    return lines


def merge_json(runs: list[HostRun]) -> list[object]:
    """JSON lists from every host as one list, each item with its ``host``."""
    merged: list[object] = []
    for run in runs:
        if run.error is not None or run.status != 0:
            continue
        try:
            items = json.loads(run.out)
        except ValueError:
            run.error = HostError("its output is not JSON", run.host.name)
            run.status = 1
            continue
        for item in items if isinstance(items, list) else [items]:
            merged.append({"host": run.host.name, **item} if isinstance(item, dict) else item)
    return merged


def merged_tool(tool: str, names: Sequence[str], root: str | None, args: Sequence[str],
                as_json: bool) -> int:  # fmt: skip
    """vps / vserver-stat on several hosts, merged; the exit status."""
    hosts = hosts_for(tool, names, root, many=True)
    runs = run_all(hosts, tool, args)
    if as_json:
        text = json.dumps(merge_json(runs), indent=1)
    else:
        text = "\n".join(merge_columns(runs))
    status = report_failures(tool, runs)
    if text:
        sys.stdout.write(text + "\n")
    return status


def streamed_tool(tool: str, names: Sequence[str], root: str | None,
                  args: Sequence[str]) -> int:  # fmt: skip
    """A tool whose output goes through as it comes (vtop -b, vkill); lines
    carry the host's name when there are several hosts."""
    hosts = hosts_for(tool, names, root, many=tool == "vtop")
    lock = threading.Lock()
    runs = [HostRun(h) for h in hosts]

    def printer(run: HostRun) -> Callable[[int, bytes], None]:
        partial = {1: b"", 2: b""}

        def output(fd: int, data: bytes) -> None:
            if fd == 2:
                run.err.extend(data)
                return
            if len(runs) == 1:
                _write(data)
                return
            *lines, partial[1] = (partial[1] + data).split(b"\n")
            with lock:
                for line in lines:
                    _write(f"{run.host.name} ".encode() + line + b"\n")

        return output

    threads = [threading.Thread(target=run_one, args=(r, tool, args),
                                kwargs={"output": printer(r)}) for r in runs]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return report_failures(tool, runs)


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def vserver(names: Sequence[str], root: str | None, args: Sequence[str]) -> int:
    """``vserver --host H NAME CMD ...``: the command runs there, output and status here."""
    (host,) = hosts_for("vserver", names, root, many=False)
    if len(args) >= 2 and args[1] == "enter":
        return enter(host, args[0])
    run = HostRun(host)
    passing = len(args) >= 2 and args[1] in ("exec", "suexec")
    stdin = sys.stdin.fileno() if passing and _readable(sys.stdin.fileno()) else None
    run_one(run, "vserver", args, stdin, output=_passthrough)
    if run.error is not None:
        if run.error.host is None:
            run.error.host = host.name
        raise run.error
    return run.status


def _passthrough(fd: int, data: bytes) -> None:
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.buffer.write(data)
    stream.buffer.flush()


def _readable(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def enter(host: Host, name: str) -> int:
    """A login shell in a guest on another host, on this terminal (``ssh -t``)."""
    if host.read_only:
        raise HostError(f"enter refused: host '{host.name}' is read-only", host.name, name)
    if host.local:
        argv = [sys.executable, "-m", "vstui.cli.vserver", "--root", host.root, name, "enter"]
    else:
        argv = ssh.command_argv(host, host.vserver_command(name, "enter"), tty=True)
    return subprocess.call(argv)
