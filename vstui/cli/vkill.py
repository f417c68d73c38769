"""``vkill``: send a signal to processes of a guest, by their PID inside it.

    vkill [--root DIR] [--xid X|-c X] [-s SIG] [--] [PID...]
    vkill --host H ...      (on another host: hosts.toml or an ssh destination)

With ``--xid`` (a guest name or context number) PIDs are as seen inside the
guest and PID 1 is its init; ``--xid`` without PIDs signals every process of
the guest. Without ``--xid`` PIDs are host PIDs. SIG is a number or a name,
``SIG`` prefix optional; default TERM. A private guest is refused, and so is
a PID that is not in the named guest.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine.errors import VstuiError
from engine.paths import Paths
from engine.text import visible
from vstui.cli.common import run_tool, split_hosts, split_root

TOOL = "vkill"


def parse_args(args: Sequence[str]) -> tuple[str | None, str, list[int]]:
    xid: str | None = None
    sig = "TERM"
    pids: list[int] = []
    words = list(args)
    i = 0
    only_pids = False
    while i < len(words):
        word = words[i]
        if not only_pids and word == "--":
            only_pids = True
        elif not only_pids and word in ("--xid", "-c", "-s", "--signal"):
            if i + 1 >= len(words):
                raise VstuiError(f"option {word} needs a value")
            i += 1
            if word in ("--xid", "-c"):
                xid = words[i]
            else:
                sig = words[i]
        elif not only_pids and word.startswith("--xid="):
            xid = word.partition("=")[2]
        elif not only_pids and word.startswith("-") and not word[1:].isdigit():
            raise VstuiError(f"unknown option '{word}' (usage: vkill [--xid X] [-s SIG] [PID...])")
        else:
            try:
                pid = int(word)
            except ValueError:
                raise VstuiError(f"'{word}' is not a PID") from None
            if pid <= 0:
                raise VstuiError(f"'{word}' is not a PID (process groups are not supported)")
            pids.append(pid)
        i += 1
    return xid, sig, pids


def _body(argv: Sequence[str]) -> int:
    hosts, argv = split_hosts(argv)
    root, args = split_root(argv)
    if hosts:
        from vstui.cli import remote

        return remote.streamed_tool(TOOL, hosts, root, args)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    xid, sig, pids = parse_args(args)

    from engine.procs.signals import EXITED, NoPid, choose, parse_signal, send

    signo = parse_signal(sig)
    if xid is None and not pids:
        raise NoPid("No pid specified")
    paths = Paths.from_root(root)
    targets = choose(paths, xid, pids)
    failed = 0
    whole_guest = not pids
    for outcome in send(paths, targets, signo):
        if outcome.error is None:
            continue
        # signalling a whole guest: processes that died meanwhile (killing its
        # init takes the rest with it) are the goal reached, not an error
        if whole_guest and outcome.error == EXITED:
            continue
        failed += 1
        who = f"{outcome.target.guest}: " if outcome.target.guest else ""
        print(visible(f"{TOOL}: {who}{outcome.target.nspid}: {outcome.error}"), file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(TOOL, lambda: _body(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
