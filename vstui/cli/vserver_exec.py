"""``vserver NAME exec|suexec|enter``: the commands that must start fast.

Apart from vserver_runtime (whose imports serve build/start/stop) so that
``vserver NAME exec`` loads nothing but engine.runtime.enter and its few
modules: os, fcntl, errors, profile, runfiles.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing/collections.abc cost ~3 ms of the start
if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.paths import Paths

TOOL = "vserver"


def _usage(name: str, text: str) -> int:
    print(f"{TOOL}: {name}: usage: vserver NAME {text}", file=sys.stderr)
    return 2


def _command(args: Sequence[str]) -> list[str]:
    words = list(args)
    if words and words[0] == "--":
        words = words[1:]
    return words


def cmd_exec(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.enter import exec_in

    argv = _command(args)
    if not argv:
        return _usage(name, "exec COMMAND [ARGS...]")
    return exec_in(paths, name, argv, replace=True)


def cmd_suexec(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.enter import exec_in

    words = _command(args)
    if len(words) < 2:
        return _usage(name, "suexec USER COMMAND [ARGS...]")
    return exec_in(paths, name, words[1:], user=words[0], replace=True)


def cmd_enter(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.enter import exec_in

    words = _command(args)
    return exec_in(paths, name, words or None, tty=None)


def cmd_console(paths: Paths, name: str, args: Sequence[str]) -> int:
    """Attach to the guest's /dev/console, as lxc-console does; Ctrl-a q detaches."""
    from engine.runtime import console

    if args:
        return _usage(name, "console")
    if sys.stdin.isatty():
        print(f"Connected to the console of '{name}'; type Ctrl-a q to detach\r",
              file=sys.stderr)  # fmt: skip
    how = console(paths, name)
    if how == "busy":
        print(f"{TOOL}: {name}: the console is attached elsewhere", file=sys.stderr)
        return 1
    if how == "stopped":
        print(f"\r\n{TOOL}: {name}: the guest stopped", file=sys.stderr)
    return 0
