"""``vstui``: the console's command line.

vstui [--root DIR] [--read-only] [--theme NAME] [-d SECONDS] [--demo]
vstui [--root DIR] --demo-clean    (stop and delete the demo guests)
vstui audit ...        (the audit tool, vstui.cli.audit)
vstui [--root DIR] agent [--read-only]   (this host's engine on stdin/stdout, for ssh)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

USAGE = (
    "vstui [--root DIR | --host NAME...] [--read-only] [--theme NAME] [-d SECONDS] [--demo]"
    " [--demo-clean] [audit ...|agent]"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse quotes the bad argument: make it visible
        from engine.text import visible

        self.print_usage(sys.stderr)
        self.exit(2, visible(f"{self.prog}: error: {message}") + "\n")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(prog="vstui", usage=USAGE, description=(
        "Console for Linux virtual servers: guests, processes, limits, audit."))  # fmt: skip
    parser.add_argument("--root", metavar="DIR", help="host root prefix (default VSTUI_ROOT or /)")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="a host of hosts.toml or an ssh destination (repeatable; "
                        "'local' is this machine)")  # fmt: skip
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="show everything, change nothing (forced for non-root users)",
    )
    parser.add_argument(
        "--theme",
        metavar="NAME",
        help="dark (default), light, high-contrast, ansi, or one of yours",
    )
    parser.add_argument(
        "-d",
        "--delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between updates (default 1, minimum 0.5)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="build and start demo guests first (under --root, default /var/lib/vstui-demo), "
        "then open the console",
    )
    parser.add_argument(
        "--demo-clean",
        action="store_true",
        help="stop and delete the demo guests (under --root, default /var/lib/vstui-demo)",
    )
    parser.add_argument("--screen", choices=("guests", "processes", "audit"), default=None,
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.delay < 0.5:
        parser.error("-d: the minimum is 0.5 seconds")
    return args


def _audit(argv: Sequence[str]) -> int:
    try:
        module = importlib.import_module("vstui.cli.audit")
    except ModuleNotFoundError:
        print("vstui: audit: not available in this build", file=sys.stderr)
        return 2
    return int(module.main(list(argv)) or 0)


WITH_VALUE = frozenset({"--root", "--theme", "-d", "--delay", "--screen", "--host"})


def _first_word(args: list[str]) -> int | None:
    """Index of the first positional word (skipping options and their values)."""
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return i
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    i = _first_word(args_in)
    if i is not None and args_in[i] == "audit":
        # `vstui [--root DIR] audit ...`: hand the rest to the audit tool.
        return _audit(args_in[:i] + args_in[i + 1 :])
    if i is not None and args_in[i] == "agent":
        return _agent(args_in[:i] + args_in[i + 1 :])
    args = parse_args(args_in)
    from engine.errors import VstuiError
    from vstui.app import run
    from vstui.cli.common import report

    if args.demo_clean:
        return _demo_clean(args.root)
    if args.host:
        from vstui.app import run_fleet

        if args.root or args.demo:
            return report(
                "vstui",
                VstuiError(
                    "--host does not mix with --root or --demo: a "
                    'host\'s root is root = "DIR" in hosts.toml'
                ),
            )
        try:
            return run_fleet(args.host, read_only=args.read_only, theme=args.theme,
                             interval=args.delay, screen=args.screen)  # fmt: skip
        except VstuiError as exc:
            return report("vstui", exc)
    if not _on_terminal():
        return 1
    try:
        return run(root=args.root, read_only=args.read_only, theme=args.theme,
                   interval=args.delay, demo=args.demo, screen=args.screen)  # fmt: skip
    except VstuiError as exc:
        return report("vstui", exc)


def _on_terminal() -> bool:
    """The console draws on a terminal and reads keys from it; without one it
    would write escape codes into a file and never exit. Says so instead."""
    missing = [name for name, f in (("input", sys.stdin), ("output", sys.stdout))
               if f is None or not f.isatty()]  # fmt: skip
    if not missing:
        return True
    print(f"vstui: the console needs a terminal (its {' and '.join(missing)} is not one); "
          "for text use `vtop -b` (processes) or `vserver-stat` (guests), "
          "and `vstui audit` for the audit", file=sys.stderr)  # fmt: skip
    return False


def _agent(argv: Sequence[str]) -> int:
    parser = _Parser(prog="vstui agent", description=(
        "This host's engine behind a JSON-lines protocol on stdin/stdout, for a console "
        "that reaches it with ssh; exits when stdin closes."))  # fmt: skip
    parser.add_argument("--root", metavar="DIR", help="host root prefix (default VSTUI_ROOT or /)")
    parser.add_argument("--read-only", action="store_true", help="refuse every change")
    args = parser.parse_args(argv)
    from engine.remote import agent

    return agent.main(args.root, args.read_only)


def _demo_clean(root: str | None) -> int:
    from engine.errors import VstuiError
    from vstui import demo
    from vstui.cli.common import report

    try:
        chosen = demo.clean(root)
    except VstuiError as exc:
        return report("vstui", exc)
    print(f"vstui: demo guests stopped and deleted under {chosen}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
