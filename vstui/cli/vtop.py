"""``vtop``: top with a CONTEXT column.

    vtop [--root DIR] [--xid X]                      the console's process screen
    vtop [--root DIR] -b [-n N] [-d SECONDS] [--xid X]   batch frames, for scripts
    vtop --host H [--host H2 ...] [-b ...]   other hosts (batch lines start with the host)

Batch mode prints top-like frames: a header (uptime, load, tasks, CPU,
memory), then PID CONTEXT USER PR NI VIRT RES S %CPU %MEM TIME+ COMMAND
sorted by %CPU, a blank line between frames.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import VstuiError
from engine.paths import Paths
from vstui.cli.common import run_tool, split_hosts, split_root

TOOL = "vtop"
FIRST_INTERVAL = 0.2  # seconds between the two samples behind the first frame


@dataclass
class Options:
    batch: bool = False
    frames: int | None = None
    delay: float = 3.0
    xid: str | None = None


MAX_DELAY = 86400  # a day between frames; more is a typo (and inf overflows time.sleep)


def parse_args(args: Sequence[str]) -> Options:
    opts = Options()
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, attached = word.partition("=") if word.startswith("--") else (word, "", "")
        if flag in ("-b", "--batch"):
            opts.batch = True
        elif flag in ("-n", "-d", "--xid", "--iterations", "--delay") or (
            len(word) > 2 and word[:2] in ("-n", "-d")
        ):
            if len(word) > 2 and word[:2] in ("-n", "-d") and not word.startswith("--"):
                flag, text = word[:2], word[2:]
            elif eq:
                text = attached
            else:
                i += 1
                if i >= len(words):
                    raise VstuiError(f"option {word} needs a value")
                text = words[i]
            try:
                if flag in ("-n", "--iterations"):
                    opts.frames = int(text)
                elif flag in ("-d", "--delay"):
                    opts.delay = float(text)
                else:
                    opts.xid = text
            except ValueError:
                raise VstuiError(f"option {flag}: '{text}' is not a number") from None
        else:
            raise VstuiError(f"unknown option '{word}' (usage: vtop [-b] [-n N] [-d SECONDS])")
        i += 1
    if not 0 <= opts.delay <= MAX_DELAY:  # also nan; inf overflowed time.sleep
        raise VstuiError(f"option -d: '{opts.delay}' is not a delay; use 0..{MAX_DELAY} seconds")
    return opts


# ------------------------------------------------------------------ CPU line
def _cpu_line(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    d = [b - a for a, b in zip(before, after, strict=False)] + [0.0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = d[:8]
    total = sum(d[:8]) or 1

    def pct(x: float) -> float:
        return x * 100.0 / total

    return (
        f"%Cpu(s):{pct(user):5.1f} us,{pct(system):5.1f} sy,{pct(nice):5.1f} ni,"
        f"{pct(idle):5.1f} id,{pct(iowait):5.1f} wa,{pct(irq):5.1f} hi,"
        f"{pct(softirq):5.1f} si,{pct(steal):5.1f} st"
    )


def _frame(table, host, cpu_before, xid_filter) -> list[str]:
    from engine.procs.format import top_header, top_row, top_uptime
    from engine.procs.scan import pid_max

    rows = table.rows
    counts = {"R": 0, "S": 0, "T": 0, "Z": 0}
    for r in rows:
        key = "S" if r.state in "SDI" else ("T" if r.state in "tT" else r.state)
        counts[key] = counts.get(key, 0) + 1
    load, mib, total = host.load, 1024 * 1024, host.mem_total
    swap_total, swap_free = host.swap_total, host.swap_total - host.swap_used
    lines = [
        f"top - {time.strftime('%H:%M:%S', time.localtime(table.wall))} "
        f"up {top_uptime(host.uptime)},  "
        f"load average: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}",
        f"Tasks: {len(rows):3d} total, {counts['R']:3d} running, {counts['S']:3d} sleeping, "
        f"{counts['T']:3d} stopped, {counts['Z']:3d} zombie",
        _cpu_line(cpu_before, host.cpu),
        f"MiB Mem : {total / mib:8.1f} total, {host.mem_free / mib:8.1f} free, "
        f"{host.mem_used / mib:8.1f} used, {host.mem_cached / mib:8.1f} buff/cache",
        f"MiB Swap: {swap_total / mib:8.1f} total, {swap_free / mib:8.1f} free, "
        f"{(swap_total - swap_free) / mib:8.1f} used. "
        f"{host.mem_available / mib:8.1f} avail Mem",
        "",
    ]
    width = max(5, len(str(pid_max())))
    lines.append(top_header(width))
    names = table.attribution.names()
    shown = [r for r in rows if xid_filter is None or r.xid == xid_filter]
    shown.sort(key=lambda r: (-r.cpu_percent, r.pid))
    lines.extend(top_row(r, names, total, width) for r in shown)
    return lines


def batch(paths: Paths, opts: Options) -> int:
    from engine import hoststats
    from engine.procs.collect import ProcessTable

    procs = ProcessTable(paths)
    xid_filter = _resolve_xid(paths, opts.xid)
    procs.refresh()
    cpu_before = hoststats.totals().cpu  # the header's totals: psutil (engine.hoststats)
    time.sleep(FIRST_INTERVAL)
    shown = 0
    while opts.frames is None or shown < opts.frames:
        if shown:
            time.sleep(opts.delay)
        table = procs.refresh()
        host = hoststats.totals()
        lines = _frame(table, host, cpu_before, xid_filter)
        cpu_before = host.cpu
        sys.stdout.write("\n".join(lines) + "\n\n")
        sys.stdout.flush()
        shown += 1
    return 0


def _resolve_xid(paths: Paths, word: str | None) -> int | None:
    if word is None:
        return None
    from engine.procs.attribution import resolve_context

    return resolve_context(paths, word)  # no such guest / context, or not running


def interactive(paths: Paths, opts: Options, root: str | None) -> int:
    _resolve_xid(paths, opts.xid)  # a bad or unknown --xid: one line, not a console
    try:
        from vstui import app
    except ImportError:
        app = None
    run = getattr(app, "run", None)
    if run is None or not sys.stdout.isatty():
        why = "the console is not installed" if run is None else "stdout is not a terminal"
        print(f"{TOOL}: {why}; printing batch frames instead (vtop -b)", file=sys.stderr)
        return batch(paths, opts)
    result = run(root=root, screen="processes", xid=opts.xid)
    return result if isinstance(result, int) else 0


def _body(argv: Sequence[str]) -> int:
    hosts, argv = split_hosts(argv)
    root, args = split_root(argv)
    if hosts:
        from vstui.cli import remote

        if "-b" not in args and "--batch" not in args:
            raise VstuiError(
                "vtop --host prints batch frames (-b); the console with hosts "
                "is `vstui --host H`"
            )
        return remote.streamed_tool(TOOL, hosts, root, args)
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    opts = parse_args(args)
    paths = Paths.from_root(root)
    if opts.batch:
        return batch(paths, opts)
    return interactive(paths, opts, root)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("VSTUI_TOOL", TOOL)
    return run_tool(TOOL, lambda: _body(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
