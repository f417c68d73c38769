"""``reducecap``: run a command with a reduced capability bounding set.

    reducecap [--show] [--list] [--secure] [--cap [!]CAP]... [--] [CMD [ARGS...]]

The set kept is the default guest set (``engine.caps.DEFAULT_GUEST_CAPS``)
with ``--cap X`` added and ``--cap !X`` dropped. The inheritable and
ambient sets are cleared too, so the command cannot get back what was
dropped. ``--show`` prints this process's bounding set; ``--list`` prints
every capability, its number, whether guests keep it and what it allows.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine import caps
from engine.errors import NotRoot, VstuiError
from vstui.cli.common import report, run_tool

TOOL = "reducecap"
USAGE = "usage: reducecap [--show] [--list] [--cap [!]CAP]... [--] [CMD [ARGS...]]"


@dataclass
class Options:
    show: bool = False
    list_all: bool = False
    help: bool = False
    cap_words: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)


def take_value(args: list[str], i: int, option: str) -> tuple[str, int]:
    """The value of ``--opt V`` / ``--opt=V`` at ``args[i]``; returns (value, next index)."""
    arg = args[i]
    if arg.startswith(option + "="):
        return arg.split("=", 1)[1], i + 1
    if i + 1 >= len(args):
        raise VstuiError(f"{option} needs a value; see `{TOOL} --help`")
    return args[i + 1], i + 2


def is_option(arg: str, option: str) -> bool:
    return arg == option or arg.startswith(option + "=")


def parse(argv: Sequence[str]) -> Options:
    """Options up to the first word that is not one: the rest is the command."""
    opts = Options()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            opts.command = args[i + 1 :]
            break
        if arg in ("-h", "--help"):
            opts.help = True
            break
        if arg == "--show":
            opts.show, i = True, i + 1
        elif arg == "--list":
            opts.list_all, i = True, i + 1
        elif arg == "--secure":  # util-vserver's switch: the default set already is
            i += 1
        elif is_option(arg, "--cap"):
            word, i = take_value(args, i, "--cap")
            caps.normalize(word.lstrip("!~"))  # UnknownCapability names the word
            opts.cap_words.append(word)
        elif arg.startswith("-"):
            raise VstuiError(f"unknown option '{arg}'; {USAGE}")
        else:
            opts.command = args[i:]
            break
    return opts


def list_lines() -> list[str]:
    """Every capability: number, name, kept by guests by default, meaning."""
    lines = [f"{'NR':>2}  {'CAPABILITY':<24} {'GUEST':<5}  MEANING"]
    for name, (num, meaning) in sorted(caps.CAPABILITIES.items(), key=lambda kv: kv[1][0]):
        if num > caps.last_cap():
            continue
        kept = "yes" if name in caps.DEFAULT_GUEST_CAPS else "-"
        lines.append(f"{num:>2}  CAP_{name:<20} {kept:<5}  {meaning}")
    return lines


def drop_to(keep: frozenset[str]) -> None:
    """Lower this process's bounding set to ``keep``; NotRoot without CAP_SETPCAP."""
    try:
        caps.drop_bounding_set(keep)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise NotRoot(
                "lowering the capability bounding set needs CAP_SETPCAP; run it as root"
            ) from None
        raise


def exec_command(tool: str, command: list[str]) -> int:
    """Replace this process with ``command``; 127/126 with a message when it cannot."""
    try:
        if not command[0]:
            raise FileNotFoundError  # execvp refuses "" with ValueError
        os.execvp(command[0], command)
    except FileNotFoundError:
        report(tool, VstuiError(f"{command[0]}: command not found"))
        return 127
    except OSError as exc:
        report(tool, VstuiError(f"{command[0]}: {exc.strerror}"))
        return 126


def _run(argv: Sequence[str]) -> int:
    opts = parse(argv)
    if opts.help:
        print(USAGE)
        return 0
    if opts.list_all:
        print("\n".join(list_lines()))
    if opts.show:
        print(caps.show(caps.read_bounding_set()))
    if opts.list_all or opts.show:
        return 0
    if not opts.command:
        raise VstuiError(f"no command given; {USAGE}")
    drop_to(caps.effective_set(opts.cap_words))
    sys.stdout.flush()
    return exec_command(TOOL, opts.command)


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(TOOL, lambda: _run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
