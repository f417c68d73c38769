"""``vps``: ps with util-vserver's CONTEXT column after PID.

    vps [--root DIR] [ps args] [--xid X] [--json]
    vps --host H [--host H2 ...] [ps args]   (a HOST column first; "host" in JSON)

ps args understood: BSD ``a x u w f r`` (e.g. ``ax``, ``aux``), UNIX ``-e -A
-f -H -w -o LIST -p PIDS -u USERS -C NAMES`` (e.g. ``-ef``,
``-o pid,ctx,user,cmd``), ``--forest``. ``ctx`` (or ``context``) is the
CONTEXT column; ``vpid`` the PID inside the guest; ``xid`` the bare number.
``--xid X`` (a number or a guest name) shows only that context.

The columns are formatted here from our own scan (running ps and inserting
a column would double the cost).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from engine.errors import VstuiError
from engine.paths import Paths
from engine.text import visible
from vstui.cli.common import run_tool, split_hosts, split_root

TOOL = "vps"
BSD_LETTERS = frozenset("axuwfrce")
UNIX_LETTERS = frozenset("eAfHwajlx")


class Options:
    """What the arguments asked for (a plain class: no dataclasses import on
    vps's start path, see engine.procs.attribution)."""

    def __init__(self) -> None:
        self.bsd: set[str] = set()
        self.unix: set[str] = set()
        self.fmt: list[str] = []
        self.pids: set[int] = set()
        self.users: set[str] = set()
        self.commands: set[str] = set()
        self.xid: str | None = None
        self.json = False
        self.forest = False
        self.wide = 0

    def __repr__(self) -> str:
        return f"Options({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _split_list(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def parse_args(args: Sequence[str]) -> Options:
    opts = Options()
    words = list(args)
    i = 0

    def value(flag: str, attached: str) -> str:
        nonlocal i
        if attached:
            return attached
        i += 1
        if i >= len(words):
            raise VstuiError(f"option {flag} needs a value")
        return words[i]

    while i < len(words):
        word = words[i]
        if word in ("--json",):
            opts.json = True
        elif word == "--forest":
            opts.forest = True
        elif word == "--xid" or word.startswith("--xid="):
            opts.xid = value("--xid", word.partition("=")[2])
        elif word in ("--pid", "--format") or word.startswith(("--pid=", "--format=")):
            flag = word.partition("=")[0]
            text = value(flag, word.partition("=")[2])
            if flag == "--pid":
                opts.pids.update(_pid_list(text))
            else:
                opts.fmt.append(text)
        elif word.startswith("--"):
            raise VstuiError(f"unknown option '{word}' (see `vps --help`)")
        elif word.startswith("-") and len(word) > 1:
            _unix(opts, word, value)
        elif word:
            _bsd(opts, word)
        i += 1
    return opts


def _pid_list(text: str) -> list[int]:
    try:
        return [int(w) for w in _split_list(text)]
    except ValueError:
        raise VstuiError(f"process ID list syntax error: '{text}'") from None


def _unix(opts: Options, word: str, value) -> None:
    letters = word[1:]
    for pos, letter in enumerate(letters):
        rest = letters[pos + 1 :]
        if letter in "opuUC":
            text = value("-" + letter, rest)
            if letter == "o":
                opts.fmt.append(text)
            elif letter == "p":
                opts.pids.update(_pid_list(text))
            elif letter in "uU":
                opts.users.update(_split_list(text))
            else:
                opts.commands.update(_split_list(text))
            return
        if letter not in UNIX_LETTERS:
            raise VstuiError(
                f"unsupported option '-{letter}' (vps knows -e -A -f -H -w -o -p -u -C)"
            )
        if letter == "w":
            opts.wide += 1
        elif letter == "H":
            opts.forest = True
        else:
            opts.unix.add(letter)


def _bsd(opts: Options, word: str) -> None:
    for letter in word:
        if letter not in BSD_LETTERS:
            raise VstuiError(f"unsupported option '{letter}' (vps knows a x u w f r and -o)")
        if letter == "w":
            opts.wide += 1
        elif letter == "f":
            opts.forest = True
        else:
            opts.bsd.add(letter)


def layout_for(opts: Options) -> list[tuple[str, str]]:
    from engine.procs.format import LAYOUTS, parse_format

    if opts.fmt:
        out: list[tuple[str, str]] = []
        for spec in opts.fmt:
            try:
                out.extend(parse_format(spec))
            except ValueError as exc:
                raise VstuiError(str(exc)) from None
        return out
    if "u" in opts.bsd:
        return list(LAYOUTS["user"])
    if "f" in opts.unix:
        return list(LAYOUTS["full"])
    if opts.bsd or (opts.forest and not opts.unix):
        return list(LAYOUTS["bsd"])
    return list(LAYOUTS["default"])


def select(rows, opts: Options, me, xid: int | None):
    """ps's selection: -e/ax everything; default = mine on my terminal."""
    everything = "e" in opts.unix or "A" in opts.unix or {"a", "x"} <= opts.bsd
    if opts.pids or opts.users or opts.commands:
        chosen = [
            r
            for r in rows
            if r.pid in opts.pids
            or r.user in opts.users
            or str(r.uid) in opts.users
            or r.comm in opts.commands
        ]
    elif everything or (xid is not None and not opts.bsd):
        chosen = list(rows)
    elif "a" in opts.bsd:
        chosen = [r for r in rows if r.tty != "?"]
    elif "x" in opts.bsd:
        chosen = [r for r in rows if r.uid == me.uid]
    elif opts.bsd:
        chosen = [r for r in rows if r.uid == me.uid and r.tty != "?"]
    else:
        chosen = [r for r in rows if r.uid == me.uid and r.tty == me.tty]
    if "r" in opts.bsd:
        chosen = [r for r in chosen if r.state == "R"]
    if xid is not None:
        chosen = [r for r in chosen if r.xid == xid]
    return chosen


def _xid_filter(paths: Paths, word: str | None, names: dict[int, str]) -> int | None:
    if word is None:
        return None
    for xid, name in names.items():  # the running contexts, already read
        if word and word in (name, str(xid)):
            return xid
    from engine.procs.attribution import resolve_context

    return resolve_context(paths, word)  # no such guest / context, or not running


def _width(opts: Options) -> int | None:
    if opts.wide >= 2 or not sys.stdout.isatty():
        return None
    try:
        cols = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size(1).columns
    except (ValueError, OSError):
        cols = 80
    return max(cols, 132) if opts.wide == 1 else cols


def _json_rows(rows, names: dict[int, str]) -> str:
    import json

    from engine.procs.attribution import context_label
    from engine.procs.collect import ROW_FIELDS

    out = []
    for r in rows:
        item = {k: getattr(r, k) for k in ROW_FIELDS}
        item["context"] = context_label(r.xid, names)
        out.append(item)
    return json.dumps(out, indent=1)


def needs(opts: Options, layout: list[tuple[str, str]]) -> int:
    """What the scan must read beyond stat for these columns and this selection
    (NEED_* bits): `vps ax` needs argv only, not the user nor the guest PIDs."""
    from engine.procs.scan import NEED_ALL, NEED_CMDLINE, NEED_NSPID, NEED_UID

    if opts.json:
        return NEED_ALL
    keys = {key for key, _header in layout}
    need = 0
    if keys & {"user", "euser", "fuser", "uid", "huid"} or _selects_by_uid(opts):
        need |= NEED_UID
    if "args" in keys:
        need |= NEED_CMDLINE
    if "vpid" in keys:
        need |= NEED_NSPID
    return need


def _selects_by_uid(opts: Options) -> bool:
    """Mirrors select(): does the chosen set depend on the processes' uid?"""
    if opts.pids or opts.users or opts.commands:
        return bool(opts.users)
    everything = "e" in opts.unix or "A" in opts.unix or {"a", "x"} <= opts.bsd
    if everything or (opts.xid is not None and not opts.bsd) or "a" in opts.bsd:
        return False
    return True


def _body(argv: Sequence[str]) -> int:
    hosts, argv = split_hosts(argv)
    root, args = split_root(argv)
    if hosts:
        from vstui.cli import remote

        return remote.merged_tool(TOOL, hosts, root, args, "--json" in args)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    opts = parse_args(args)
    layout = layout_for(opts)
    paths = Paths.from_root(root)

    from engine.procs.collect import ProcessTable
    from engine.procs.format import Clock, render_ps
    from engine.procs.scan import boot_time, pid_max, read_meminfo, read_uptime

    # one refresh: no CPU% deltas, no tree unless asked, only the files the columns need
    table = ProcessTable(paths, need=needs(opts, layout), one_shot=True).refresh()
    names = table.attribution.names()
    for err in table.attribution.errors:
        print(visible(f"{TOOL}: {err}"), file=sys.stderr)
    xid = _xid_filter(paths, opts.xid, names)
    me = next((r for r in table.rows if r.pid == os.getpid()), None)
    rows = select(table.rows, opts, me, xid) if me else list(table.rows)
    if opts.json:
        print(_json_rows(rows, names))
        return 0
    depths = None
    if opts.forest:
        from engine.procs.tree import walk

        ordered = list(walk(rows, flat_init=True))
        rows = [p for _d, p in ordered]
        depths = {p.pid: d for d, p in ordered}
    try:
        uptime = read_uptime()
    except OSError:
        print(f"{TOOL}: /proc/uptime is hidden; times are not right", file=sys.stderr)
        uptime = 0.0
    clock = Clock(
        uptime=uptime,
        boot=boot_time(),
        mem_total=read_meminfo().get("MemTotal", 0),
        now=table.wall,
        pid_width=max(5, len(str(pid_max()))),
    )
    lines = render_ps(rows, layout, clock, names, _width(opts), depths)
    lines.append("")
    sys.stdout.write("\n".join(lines))
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(TOOL, lambda: _body(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
