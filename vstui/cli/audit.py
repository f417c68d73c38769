"""``vstui audit``: read-only security checks of the host and the guests.

    vstui audit [--root DIR] [--json] [--guest NAME] [--min-severity S]

Exit status (for cron and CI): 0 when nothing at or above the threshold was
found and everything could be read, 1 when something was found or could not
be read (not known clean), 2 on an error (bad option, unknown guest).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from engine.errors import VstuiError
from engine.text import visible
from vstui.cli.common import report, split_root

TOOL = "vstui audit"
SEVERITIES = ("critical", "high", "medium", "low", "info")
STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow",
         "low": "cyan", "info": "dim"}  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 2, on one line
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(prog="vstui audit", description="Read-only checks of the host and guests.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--guest", metavar="NAME", help="only this guest's findings")
    parser.add_argument("--min-severity", metavar="S", default="info", choices=SEVERITIES,
                        help="leave out findings below S: " + ", ".join(SEVERITIES))  # fmt: skip
    return parser.parse_args(argv)


def exit_code(rep: Any) -> int:
    return 1 if rep.findings or rep.unreadable else 0


def as_json(rep: Any, root: str, args: argparse.Namespace) -> str:
    data = {"root": root, "guest": args.guest, "min_severity": args.min_severity,
            **rep.as_dict()}  # fmt: skip
    return json.dumps(data, indent=2)


def render(rep: Any, root: str, out: Any = None) -> None:
    """The readable report: findings worst first, then what could not be read."""
    from rich.console import Console
    from rich.text import Text

    console = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
    for f in rep.findings:
        head = Text()
        head.append(f" {f.severity.upper()} ", style=STYLE[f.severity])
        head.append(f" {f.rule_id}", style="bold")
        head.append(f"  {f.guest}: " if f.guest else "  ")
        head.append(f.title)
        console.print(head)
        console.print(Text("    why: ", style="dim") + Text(f.why))
        if f.fix:  # a command that works as printed; none for a note with nothing to run
            console.print(Text("    fix: ", style="dim") + Text(f.fix, style="green"))
        for line in f.details:
            console.print(Text(f"      {line}", style="dim"))
    if rep.unreadable:
        console.print(Text("\nnot checked (could not be read):", style="bold yellow"))
        for u in rep.unreadable:
            who = f"{u.guest}: " if u.guest else ""
            console.print(Text(f"  {who}{u.what}: {u.reason}", style="yellow"))
    counts = rep.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s])
    if not rep.findings and not rep.unreadable:
        console.print(Text(f"audit of {root}: no findings", style="green"))
    else:
        text = f"\naudit of {root}: {summary or 'no findings'}"
        if rep.unreadable:
            text += f"; {len(rep.unreadable)} item(s) not checked"
        console.print(Text(text, style="bold"))


def _run(argv: Sequence[str]) -> int:
    root, rest = split_root(argv)
    try:
        args = parse_args(rest)
    except _UsageError as exc:
        print(visible(f"{TOOL}: {exc}"), file=sys.stderr)  # it quotes the argument
        return 2
    from engine.audit import run_audit
    from engine.paths import Paths

    paths = Paths.from_root(root)
    rep = run_audit(paths, guest=args.guest, min_severity=args.min_severity)
    if args.json:
        print(as_json(rep, str(paths.root), args))
    else:
        render(rep, str(paths.root))
    return exit_code(rep)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except VstuiError as exc:
        report(TOOL, exc)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
