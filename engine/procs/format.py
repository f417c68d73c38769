"""Text columns: procps ``ps`` layouts with util-vserver's CONTEXT column,
util-vserver ``vserver-stat``, and ``top`` batch frames.

Pure functions of ``ProcRow`` data and a ``Clock`` (uptime, boot time, memory
size): the tools and the tests feed them, nothing here reads /proc.
"""

from __future__ import annotations

import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence

from engine.contexts import HOST_XID, SPECTATOR_XID
from engine.procs.scan import CLK_TCK

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs vps ~5 ms
if TYPE_CHECKING:
    from engine.datamodel import ProcRow  # or collect.PsRow: the same fields

# The records here are named tuples, not dataclasses: this module is on vps's
# start path (see engine.procs.attribution).

CONTEXT_WIDTH = 19  # util-vserver: 20 characters with the separating space
VSTAT_HEADER = "CTX   PROC    VSZ    RSS  userTIME   sysTIME    UPTIME NAME"


class Clock(namedtuple("Clock", "uptime boot mem_total now pid_width hz", defaults=(5, CLK_TCK))):
    """What the column functions need besides the process itself.

    uptime: seconds since boot; boot: epoch seconds of boot; mem_total:
    bytes; now: epoch seconds; pid_width: PID column width; hz: clock ticks/s.
    """

    __slots__ = ()
    uptime: float
    boot: float
    mem_total: int
    now: float
    pid_width: int
    hz: int


# ---------------------------------------------------------------- helpers
def context_cell(xid: int, names: dict[int, str]) -> str:
    """``xid`` right-aligned in 5, a space, the name (MAIN / ALL_PROC / guest)."""
    if xid == HOST_XID:
        label = "MAIN"
    elif xid == SPECTATOR_XID:
        label = "ALL_PROC"
    else:
        label = names.get(xid, "")
    return f"{xid:>5} {label}"


def bsd_stat(row: ProcRow) -> str:
    """ps STAT: state, then < N, s, l, + as procps prints them."""
    out = row.state
    if row.nice < 0:
        out += "<"
    elif row.nice > 0:
        out += "N"
    if row.session == row.pid and not row.kernel:
        out += "s"
    if row.threads > 1:
        out += "l"
    if row.tpgid != -1 and row.pgrp == row.tpgid:
        out += "+"
    return out


def lifetime_permille(row: ProcRow, clock: Clock) -> int:
    """ps %CPU: CPU time over the process's whole life, in tenths of a percent."""
    seconds = clock.uptime - row.starttime / clock.hz
    if seconds <= 0:
        return 0
    return int((row.utime + row.stime) * 1000 / clock.hz / seconds)


def pcpu_text(permille: int) -> str:
    return f"{permille // 10}" if permille > 999 else f"{permille // 10}.{permille % 10}"


def pmem_text(row: ProcRow, clock: Clock) -> str:
    if not clock.mem_total:
        return "0.0"
    permille = row.rss * 1000 // clock.mem_total
    return pcpu_text(permille)


def bsd_time(ticks: int, hz: int = CLK_TCK) -> str:
    """ps ax TIME: M:SS."""
    seconds = ticks // hz
    return f"{seconds // 60}:{seconds % 60:02d}"


def unix_time(ticks: int, hz: int = CLK_TCK) -> str:
    """ps -f TIME: [DD-]HH:MM:SS."""
    seconds = ticks // hz
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def top_time(ticks: int, hz: int = CLK_TCK) -> str:
    """top TIME+: M:SS.hh."""
    hundredths = ticks * 100 // hz
    minutes, rest = divmod(hundredths, 6000)
    return f"{minutes}:{rest // 100:02d}.{rest % 100:02d}"


def elapsed_text(seconds: int) -> str:
    """ps etime: [[DD-]hh:]mm:ss."""
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{rest // 60:02d}:{rest % 60:02d}"
    if days:
        return f"{days}-{hours:02d}:{text}"
    return f"{hours:02d}:{text}" if hours else text


def started_epoch(row: ProcRow, clock: Clock) -> float:
    return clock.boot + row.starttime / clock.hz


def start_text(row: ProcRow, clock: Clock) -> str:
    """ps START (BSD): HH:MM within a day, MonDD within a year, else the year."""
    started = started_epoch(row, clock)
    age = clock.now - started
    if age > 365 * 86400:
        return time.strftime("%Y", time.localtime(started))
    if age > 86400:
        return time.strftime("%b%d", time.localtime(started))
    return time.strftime("%H:%M", time.localtime(started))


def stime_text(row: ProcRow, clock: Clock) -> str:
    """ps -f STIME: HH:MM today, MonDD this year, else the year."""
    started = time.localtime(started_epoch(row, clock))
    now = time.localtime(clock.now)
    if started.tm_year != now.tm_year:
        return time.strftime("%Y", started)
    if started.tm_yday != now.tm_yday:
        return time.strftime("%b%d", started)
    return time.strftime("%H:%M", started)


def short_user(name: str, width: int = 8) -> str:
    """procps cuts long user names and marks the cut with '+'."""
    return name if len(name) <= width else name[: width - 1] + "+"


def args_text(row: ProcRow) -> str:
    if row.state == "Z":
        return f"[{row.comm}] <defunct>"
    return row.cmdline


def comm_text(row: ProcRow) -> str:
    return f"{row.comm} <defunct>" if row.state == "Z" else row.comm


# ---------------------------------------------------------------- ps columns
if TYPE_CHECKING:
    Cell = Callable[[ProcRow, Clock, dict[int, str]], str]


class Column(namedtuple("Column", "header width right cell pid_sized", defaults=(False,))):
    """One ps column. width 0: as wide as the header (the last column:
    unlimited); pid_sized: the width follows pid_max (procps)."""

    __slots__ = ()
    header: str
    width: int
    right: bool
    cell: Cell
    pid_sized: bool


def _c(header: str, width: int, right: bool, cell: Cell, pid_sized: bool = False) -> Column:
    return Column(header, width, right, cell, pid_sized)


COLUMNS: dict[str, Column] = {
    "pid": _c("PID", 5, True, lambda r, c, n: str(r.pid), True),
    "ppid": _c("PPID", 5, True, lambda r, c, n: str(r.ppid), True),
    "vpid": _c("VPID", 5, True, lambda r, c, n: str(r.nspid), True),
    "ctx": _c("CONTEXT", CONTEXT_WIDTH, False, lambda r, c, n: context_cell(r.xid, n)),
    "xid": _c("XID", 5, True, lambda r, c, n: str(r.xid)),
    "user": _c("USER", 8, False, lambda r, c, n: short_user(r.user)),
    "euser": _c("EUSER", 8, False, lambda r, c, n: short_user(r.user)),
    "fuser": _c("UID", 8, False, lambda r, c, n: short_user(r.user)),  # -f's UID column
    "uid": _c("UID", 5, True, lambda r, c, n: str(r.uid)),
    "huid": _c("HUID", 7, True, lambda r, c, n: str(r.huid)),
    "%cpu": _c("%CPU", 4, True, lambda r, c, n: pcpu_text(lifetime_permille(r, c))),
    "%mem": _c("%MEM", 4, True, lambda r, c, n: pmem_text(r, c)),
    "c": _c("C", 2, True, lambda r, c, n: str(min(lifetime_permille(r, c) // 10, 99))),
    "vsz": _c("VSZ", 6, True, lambda r, c, n: str(r.vsz // 1024)),
    "rss": _c("RSS", 5, True, lambda r, c, n: str(r.rss // 1024)),
    "tty": _c("TT", 8, False, lambda r, c, n: r.tty),
    "stat": _c("STAT", 4, False, lambda r, c, n: bsd_stat(r)),
    "s": _c("S", 1, False, lambda r, c, n: r.state),
    "ni": _c("NI", 3, True, lambda r, c, n: "-" if r.kernel and r.priority < 0 else str(r.nice)),
    "nlwp": _c("NLWP", 4, True, lambda r, c, n: str(r.threads)),
    "start": _c("START", 5, True, lambda r, c, n: start_text(r, c)),
    "stime": _c("STIME", 5, False, lambda r, c, n: stime_text(r, c)),
    "bsdtime": _c("TIME", 6, True, lambda r, c, n: bsd_time(r.utime + r.stime, c.hz)),
    "time": _c("TIME", 8, True, lambda r, c, n: unix_time(r.utime + r.stime, c.hz)),
    "etime": _c(
        "ELAPSED", 11, True, lambda r, c, n: elapsed_text(int(c.uptime - r.starttime / c.hz))
    ),
    "comm": _c("COMMAND", 0, False, lambda r, c, n: comm_text(r)),
    "args": _c("COMMAND", 0, False, lambda r, c, n: args_text(r)),
}

# -o names (procps spellings) -> (column key, default header)
ALIASES: dict[str, tuple[str, str]] = {
    "pid": ("pid", "PID"),
    "tgid": ("pid", "TGID"),
    "ppid": ("ppid", "PPID"),
    "vpid": ("vpid", "VPID"),
    "nspid": ("vpid", "VPID"),
    "ctx": ("ctx", "CONTEXT"),
    "context": ("ctx", "CONTEXT"),
    "xid": ("xid", "XID"),
    "user": ("user", "USER"),
    "uname": ("user", "USER"),
    "euser": ("euser", "EUSER"),
    "uid": ("uid", "UID"),
    "huid": ("huid", "HUID"),
    "euid": ("uid", "EUID"),
    "pcpu": ("%cpu", "%CPU"),
    "%cpu": ("%cpu", "%CPU"),
    "pmem": ("%mem", "%MEM"),
    "%mem": ("%mem", "%MEM"),
    "c": ("c", "C"),
    "vsz": ("vsz", "VSZ"),
    "vsize": ("vsz", "VSZ"),
    "rss": ("rss", "RSS"),
    "rssize": ("rss", "RSS"),
    "tty": ("tty", "TT"),
    "tt": ("tty", "TT"),
    "tname": ("tty", "TTY"),
    "stat": ("stat", "STAT"),
    "s": ("s", "S"),
    "state": ("s", "S"),
    "ni": ("ni", "NI"),
    "nice": ("ni", "NI"),
    "nlwp": ("nlwp", "NLWP"),
    "thcount": ("nlwp", "THCNT"),
    "start": ("start", "STARTED"),
    "start_time": ("stime", "START"),
    "stime": ("stime", "STIME"),
    "bsdtime": ("bsdtime", "TIME"),
    "time": ("time", "TIME"),
    "cputime": ("time", "TIME"),
    "etime": ("etime", "ELAPSED"),
    "comm": ("comm", "COMMAND"),
    "ucmd": ("comm", "CMD"),
    "ucomm": ("comm", "COMMAND"),
    "args": ("args", "COMMAND"),
    "cmd": ("args", "CMD"),
    "command": ("args", "COMMAND"),
}

# The standard layouts: (column key, header) in order.
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "default": (("pid", "PID"), ("ctx", "CONTEXT"), ("tty", "TTY"), ("time", "TIME"),
                ("comm", "CMD")),
    "bsd": (("pid", "PID"), ("ctx", "CONTEXT"), ("tty", "TTY"), ("stat", "STAT"),
            ("bsdtime", "TIME"), ("args", "COMMAND")),
    "user": (("user", "USER"), ("pid", "PID"), ("ctx", "CONTEXT"), ("%cpu", "%CPU"),
             ("%mem", "%MEM"), ("vsz", "VSZ"), ("rss", "RSS"), ("tty", "TTY"), ("stat", "STAT"),
             ("start", "START"), ("bsdtime", "TIME"), ("args", "COMMAND")),
    "full": (("fuser", "UID"), ("pid", "PID"), ("ctx", "CONTEXT"), ("ppid", "PPID"), ("c", "C"),
             ("stime", "STIME"), ("tty", "TTY"), ("time", "TIME"), ("args", "CMD")),
}  # fmt: skip


def parse_format(spec: str) -> list[tuple[str, str]]:
    """A ps ``-o`` list: ``pid,ctx,user,cmd``; ``pid=MYPID`` renames, ``pid=`` hides."""
    out: list[tuple[str, str]] = []
    for word in spec.replace(" ", ",").split(","):
        if not word:
            continue
        name, eq, header = word.partition("=")
        key = name.strip().lower()
        if key not in ALIASES:
            raise ValueError(f"unknown format specifier '{name}'")
        column, default = ALIASES[key]
        out.append((column, header if eq else default))
    return out


def render_ps(
    rows: Iterable[ProcRow],
    layout: Sequence[tuple[str, str]],
    clock: Clock,
    names: dict[int, str],
    width: int | None = None,
    depths: dict[int, int] | None = None,
) -> list[str]:
    """Lines of ps output (header first unless every header is empty)."""
    cols = [(COLUMNS[key], header) for key, header in layout]
    last = len(cols) - 1
    specs = []
    for i, (col, header) in enumerate(cols):
        w = (clock.pid_width if col.pid_sized else col.width) or len(header)
        if i == last and not col.right:
            specs.append("{}")  # the last column is not padded (and may be long)
        else:
            specs.append(f"{{:>{w}}}" if col.right else f"{{:<{w}}}")
    # one str.format per line pads every cell in C; runs 10,000 times for `vps ax`
    template = " ".join(specs).format
    cells = [col.cell for col, _h in cols]
    tree_column = depths is not None and layout[last][0] in ("args", "comm")
    if tree_column:
        from engine.procs.tree import forest_prefix

    lines = []
    if any(header for _c, header in cols):
        lines.append(template(*[header for _c, header in cols]).rstrip())
    for row in rows:
        texts = [cell(row, clock, names) for cell in cells]
        if tree_column:
            texts[last] = forest_prefix(depths.get(row.pid, 0)) + texts[last]  # type: ignore[union-attr]
        lines.append(template(*texts).rstrip())
    if width:
        lines = [line[:width] for line in lines]
    return lines


# ------------------------------------------------------------ vserver-stat
def vstat_size(value: int) -> str:
    """util-vserver memory size: 1024-based, suffix ' ', K, M, G, T; one
    decimal (truncated) when under 1000 units and the division left a rest."""
    suffixes = (" ", "K", "M", "G", "T")
    index = 0
    rest = 0
    while value >= 1024 and index + 1 < len(suffixes):
        rest = value % 1024
        value //= 1024
        index += 1
    if value < 1000 and rest > 0:
        return f"{value}.{rest * 10 // 1024}{suffixes[index]}"
    return f"{value}{suffixes[index]}"


def vstat_time(ms: int) -> str:
    """util-vserver duration: 1m05s43, 1h02m03, 1d01h01, 1y002d03.

    The sub-second part is the first two digits of the millisecond count
    (5 ms -> 05, 50 and 500 ms -> 50): util-vserver's quirk, kept.
    """
    seconds, millis = divmod(max(ms, 0), 1000)
    minutes, sec = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    years, dys = divmod(days, 365)
    if years:
        return f"{years}y{dys:03d}d{hrs:02d}"
    if days:
        return f"{days}d{hrs:02d}h{mins:02d}"
    if hours:
        return f"{hours}h{mins:02d}m{sec:02d}"
    return f"{minutes}m{sec:02d}s{str(millis)[:2].rjust(2, '0')}"


class ContextStat(namedtuple("ContextStat", "xid nproc vsz rss user_ms sys_ms uptime_ms name")):
    """One vserver-stat line: the sums over a context's processes.

    vsz, rss: bytes; user_ms: utime + cutime; sys_ms: stime + cstime;
    uptime_ms: now - the oldest process's start; name: already decorated
    ("root server", "db1", "[web1]").
    """

    __slots__ = ()
    xid: int
    nproc: int
    vsz: int
    rss: int
    user_ms: int
    sys_ms: int
    uptime_ms: int
    name: str


def vstat_name(xid: int, name: str, legacy: bool = False) -> str:
    if xid == HOST_XID:
        return "root server"
    if xid == SPECTATOR_XID:
        return "monitoring server"
    if not name:
        return ""
    return f"[{name[:18]}]" if legacy else name[:20]


def context_stats(
    rows: Iterable[ProcRow], uptime: float, names: dict[int, str],
    legacy: frozenset[str] = frozenset(), hz: int = CLK_TCK,
) -> list[ContextStat]:  # fmt: skip
    """Sum processes by context, host first then by xid."""
    acc: dict[int, list[int]] = {}
    for r in rows:
        a = acc.setdefault(r.xid, [0, 0, 0, 0, 0, r.starttime])
        a[0] += 1
        a[1] += r.vsz
        a[2] += r.rss
        a[3] += r.utime + r.cutime
        a[4] += r.stime + r.cstime
        a[5] = min(a[5], r.starttime)
    out = []
    for xid in sorted(acc):
        n, vsz, rss, user, system, oldest = acc[xid]
        name = names.get(xid, "")
        out.append(
            ContextStat(
                xid, n, vsz, rss, user * 1000 // hz, system * 1000 // hz,
                int(round((uptime - oldest / hz) * 1000)),
                vstat_name(xid, name, name in legacy),
            )
        )  # fmt: skip
    return out


def render_vstat(stats: Iterable[ContextStat]) -> list[str]:
    lines = [VSTAT_HEADER]
    for s in stats:
        lines.append(
            f"{s.xid:<5}{s.nproc:>5}{vstat_size(s.vsz):>7}{vstat_size(s.rss):>7}"
            f"{vstat_time(s.user_ms):>9} {vstat_time(s.sys_ms):>9} "
            f"{vstat_time(s.uptime_ms):>9}  {s.name}".rstrip()
        )
    return lines


# ---------------------------------------------------------------- top
def top_uptime(seconds: float) -> str:
    """top's "up ..." text: ``3 days,  2:04`` / `` 2:04`` / ``5 min``."""
    minutes_total = int(seconds) // 60
    days, rest = divmod(minutes_total, 1440)
    hours, minutes = divmod(rest, 60)
    text = f"{days} day{'s' if days != 1 else ''}, " if days else ""
    text += f"{hours:2d}:{minutes:02d}" if hours else f"{minutes} min"
    return text


def top_mem(value: int) -> str:
    """top VIRT/RES in KiB, switching to m/g when it does not fit 7 columns."""
    kib = value // 1024
    if kib < 10_000_000:
        return str(kib)
    mib = kib / 1024
    if mib < 10_000:
        return f"{mib:.1f}m"
    return f"{mib / 1024:.1f}g"


TOP_HEADER = " ".join(
    ("  PID", "CONTEXT".ljust(CONTEXT_WIDTH), "USER".ljust(9), " PR", " NI", "   VIRT",
     "   RES", "S", " %CPU", " %MEM", "    TIME+", "COMMAND")
)  # fmt: skip


def top_row(row: ProcRow, names: dict[int, str], mem_total: int, pid_width: int = 5) -> str:
    pr = "rt" if row.priority < -99 else str(row.priority)
    pmem = row.rss * 100 / mem_total if mem_total else 0.0
    return (
        f"{row.pid:>{pid_width}} {context_cell(row.xid, names):<{CONTEXT_WIDTH}} "
        f"{short_user(row.user, 9):<9} {pr:>3} {row.nice:>3} {top_mem(row.vsz):>7} "
        f"{top_mem(row.rss):>6} {row.state} {row.cpu_percent:5.1f} {pmem:5.1f} "
        f"{top_time(row.utime + row.stime):>9} {row.comm}"
    )


def top_header(pid_width: int = 5) -> str:
    return " " * (pid_width - 5) + TOP_HEADER
