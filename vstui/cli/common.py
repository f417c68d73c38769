"""What every tool shares: ``--root`` anywhere, and errors as one line.

Errors print as ``TOOL: NAME: message`` on stderr with a non-zero exit, no
usage dump; stdout stays clean for pipes.
"""

from __future__ import annotations

import os
import sys

from engine.errors import GuestNotRunning, VstuiError
from engine.text import visible

TYPE_CHECKING = False  # typing/collections.abc cost ~3 ms of every tool's start
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_CODES: dict[type[VstuiError], int] = {GuestNotRunning: 1}


def split_root(argv: Sequence[str], stop_at: int | None = None) -> tuple[str | None, list[str]]:
    """Remove ``--root DIR`` / ``--root=DIR`` from argv, wherever it is.

    Only the first ``stop_at`` positional words are scanned past (so a
    command run inside a guest keeps its own ``--root``); ``--`` ends the scan.
    """
    root: str | None = None
    rest: list[str] = []
    positionals = 0
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if stop_at is not None and positionals >= stop_at:
            rest.extend(args[i:])
            break
        if arg == "--root":
            if i + 1 >= len(args):
                raise VstuiError("--root needs a directory, e.g. --root /srv/vstui")
            root = args[i + 1]
            i += 2
            continue
        if arg.startswith("--root="):
            root = arg.split("=", 1)[1]
            i += 1
            continue
        if not arg.startswith("-"):
            positionals += 1
        rest.append(arg)
        i += 1
    return root, rest


def split_hosts(argv: Sequence[str], stop_at: int | None = None) -> tuple[list[str], list[str]]:
    """Remove every ``--host NAME`` / ``--host=NAME`` from argv (like split_root)."""
    hosts: list[str] = []
    rest: list[str] = []
    positionals = 0
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or (stop_at is not None and positionals >= stop_at):
            rest.extend(args[i:])
            break
        if arg == "--host":
            if i + 1 >= len(args):
                raise VstuiError("--host needs a name from hosts.toml or an ssh destination")
            hosts.append(args[i + 1])
            i += 2
            continue
        if arg.startswith("--host="):
            hosts.append(arg.split("=", 1)[1])
        else:
            positionals += not arg.startswith("-")
            rest.append(arg)
        i += 1
    return hosts, rest


def report(tool: str, exc: VstuiError) -> int:
    """Print ``TOOL: [host 'H': ]NAME: message`` and return the exit code for it."""
    where = f"host '{exc.host}': " if exc.host else ""
    who = f"{exc.guest}: " if exc.guest else ""
    # visible(): a message may quote what a guest or a hostile file chose
    # (a name, a path, a command); control characters never reach the terminal
    print(visible(f"{tool}: {where}{who}{exc.message}"), file=sys.stderr)
    return EXIT_CODES.get(type(exc), 1)


def run_tool(tool: str, body: Callable[[], int]) -> int:
    """Run a tool's body, turning engine errors into one-line messages."""
    try:
        return body()
    except VstuiError as exc:
        return report(tool, exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`vps ax | head`): not an error worth a trace.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        # A kernel or file error no command boundary named: still one line, no
        # trace, the tool as the operation and the file it concerns.
        from engine.errors import KernelError

        return report(tool, KernelError.from_oserror(tool, exc))
