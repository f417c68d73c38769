"""A fork server for property tests of the command-line tools.

Runs as PID 1 of its own PID and mount namespaces (started with
``unshare --pid --fork --mount-proc``), so that a tool given random argv
can signal or start nothing outside them: the kernel drops signals to a
namespace's init that it does not handle, and every process left in the
namespace dies with it. The tools' modules are imported once; each request
forks a child that runs one tool's ``main(argv)`` with fresh stdio, so an
example costs a fork, not an interpreter start.

Protocol: one JSON object per line on stdin, ``{"tool", "argv", "env",
"timeout"}``; one JSON reply per line on stdout, ``{"rc", "out", "err",
"timed_out"}`` (``out``/``err`` as latin-1 text of the raw bytes, ``rc`` the
exit status or minus the signal that ended the child).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback

MAINS = {
    "vserver": "vstui.cli.vserver", "vps": "vstui.cli.vps", "vtop": "vstui.cli.vtop",
    "vkill": "vstui.cli.vkill", "vserver-stat": "vstui.cli.vserver_stat",
    "chcontext": "vstui.cli.chcontext", "chbind": "vstui.cli.chbind",
    "reducecap": "vstui.cli.reducecap", "vstui": "vstui.app.main",
}  # fmt: skip


def _child(tool: str, argv: list[str], env: dict[str, str], out: int, err: int) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.environ.update(env)
    code = 70
    try:
        if tool.startswith("/"):  # a compiled tool: run the real binary
            os.execve(tool, [tool, *argv], dict(os.environ))
        code = importlib.import_module(MAINS[tool]).main(argv) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _wait(pid: int, timeout: float) -> tuple[int | None, bool]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, True
        time.sleep(0.005)


def _reap_orphans() -> None:
    """As PID 1: collect whatever the tools left (daemons that exited)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def serve() -> None:
    for module in MAINS.values():
        importlib.import_module(module)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        req = json.loads(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(req["tool"], req["argv"], req.get("env", {}), out.fileno(), err.fileno())
            rc, timed_out = _wait(pid, req.get("timeout", 20))
            _reap_orphans()
            out.seek(0)
            err.seek(0)
            reply = {"rc": rc, "timed_out": timed_out, "out": out.read().decode("latin-1"),
                     "err": err.read().decode("latin-1")}  # fmt: skip
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
