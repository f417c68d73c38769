"""Every way into a guest, for suites that must hold on each of them.

A start and an exec can each be reached several ways; a guest is only as
safe as the weakest one. ``WAYS`` names them; each Way starts a guest and
runs a command in it:

- ``python-start``: ``python -m vstui.cli.vserver NAME start`` (the Python
  planner and the C executor, no cache); commands by the compiled exec;
- ``cached-start``: the guest started once through Python (which writes the
  boot cache) and stopped, then ``vserver NAME start`` of the compiled front
  end, which must replay the cache (``VSTUI_FALLBACK=0``: no hand-over);
  guests the cache cannot hold (addresses, loop images) start in Python;
- ``compiled-exec``: ``vserver NAME exec`` of the compiled front end
  (``VSTUI_FALLBACK=0``: it must not hand the command to Python);
- ``python-exec``: ``python -m vstui.cli.vserver NAME exec``;
- ``enter``: ``vserver NAME enter``, the command typed into its login shell;
- ``suexec``: ``vserver NAME suexec 0`` (the user looked up in the guest);
- ``console-exec``: the argv the console's exec action runs
  (``engine.facade.Engine.exec_argv``, a shell line).

The exec ways' guests are started the way an administrator starts them
(the compiled front end, which replays the cache or hands over to Python).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from engine.helpers import helper_path
from engine.paths import Paths
from engine.runtime import bootcache

REPO = Path(__file__).resolve().parents[2]
NO_FALLBACK = 125  # the front end's exit status when VSTUI_FALLBACK=0 forbids the hand-over

WAYS = ("python-start", "cached-start", "compiled-exec", "python-exec", "enter", "suexec",
        "console-exec")  # fmt: skip

Result = subprocess.CompletedProcess


def python_cli(paths: Paths, *args: str) -> list[str]:
    return [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]


def front_end(paths: Paths, *args: str) -> list[str]:
    return [str(helper_path("vserver")), "--root", str(paths.root), *args]


def run(cmd: list[str], fallback: bool = True, timeout: float = 120, **kw) -> Result:
    env = {**os.environ, "VSTUI_FALLBACK": "1" if fallback else "0"}
    kw.setdefault("stdin", subprocess.DEVNULL if "input" not in kw else None)
    if kw["stdin"] is None:
        del kw["stdin"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env, **kw)  # fmt: skip


class Way:
    """How a guest is started and how a command reaches it."""

    def __init__(self, name: str) -> None:
        assert name in WAYS, name
        self.name = name

    def __repr__(self) -> str:
        return self.name

    # -- starting --------------------------------------------------------------
    def start(self, paths: Paths, guest: str) -> Result:
        if self.name == "python-start":
            return run(python_cli(paths, guest, "start"))
        if self.name == "cached-start":
            return self._cached_start(paths, guest)
        return run(front_end(paths, guest, "start"))  # as an administrator starts it

    def _cached_start(self, paths: Paths, guest: str) -> Result:
        """Through the replayed cache; a refusal there is the executor's (undone)."""
        if not os.path.exists(bootcache.cache_file(paths, guest)):
            first = run(python_cli(paths, guest, "start"))  # writes the cache
            if first.returncode != 0:
                return first
            run(python_cli(paths, guest, "stop"))
        if not os.path.exists(bootcache.cache_file(paths, guest)):
            return run(front_end(paths, guest, "start"))  # not cacheable: Python's start
        return run(front_end(paths, guest, "start"), fallback=False)

    # -- running a command --------------------------------------------------------
    def command(self, paths: Paths, guest: str, argv: list[str]) -> tuple[list[str], str | None]:
        """(command line, what to type into it) running ``argv`` in the guest."""
        if self.name == "python-exec":
            return python_cli(paths, guest, "exec", *argv), None
        if self.name == "enter":
            return python_cli(paths, guest, "enter"), f"exec {shlex.join(argv)}\n"
        if self.name == "suexec":
            return python_cli(
                paths, guest, "suexec", "0", *argv
            ), None  # by number: found in passwd, else uid 0
        if self.name == "console-exec":
            from engine.facade import Engine

            return Engine(paths).exec_argv(guest, shlex.join(argv)), None
        return front_end(paths, guest, "exec", *argv), None  # the compiled exec

    def run(self, paths: Paths, guest: str, argv: list[str], **kw) -> Result:
        cmd, typed = self.command(paths, guest, argv)
        if typed is not None:
            kw["input"] = typed
        # the compiled exec must not hand over to Python (no terminal here)
        fallback = self.name not in ("compiled-exec", "python-start", "cached-start")
        return run(cmd, fallback=fallback, **kw)
