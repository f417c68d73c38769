"""vps / vserver-stat / vtop text formats against util-vserver's golden lines
(reference F8, F9) and procps' layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.datamodel import ProcRow
from engine.errors import VstuiError
from engine.paths import Paths
from engine.procs import format as fmt
from engine.procs.collect import ProcessTable
from engine.procs.scan import CLK_TCK

FIXTURE = Path(__file__).parent / "fixtures" / "proc"
MIB = 1024 * 1024

F8 = """\
CTX   PROC    VSZ    RSS  userTIME   sysTIME    UPTIME NAME
0       92   1.8G 468.7M  1h02m03  15m54s32   1d01h01  root server
40001   17   512M 117.1M  1m05s43   0m12s34   5h01m01  db1
40002    3    20M   3.5M  0m01s23   0m00s56   0m59s00  [web1]"""

F9 = """\
  PID CONTEXT             TTY      STAT   TIME COMMAND
    1     0 MAIN          ?        Ss     0:02 /sbin/init
 2211 40001 db1           ?        Ss     0:00 /usr/sbin/sshd
 3011     1 ALL_PROC      pts/0    R+     0:00 ps ax"""


def row(pid: int, **kw: object) -> ProcRow:
    base: dict[str, object] = dict(
        pid=pid, ppid=1, starttime=100, xid=0, guest="", nspid=pid, uid=0, user="root",
        state="S", nice=0, threads=1, vsz=0, rss=0, utime=0, stime=0, cutime=0, cstime=0,
        cpu_percent=0.0, tty="?", comm="x", cmdline="x", pgrp=pid, session=pid, tpgid=-1,
    )  # fmt: skip
    base.update(kw)
    return ProcRow(**base)  # type: ignore[arg-type]


CLOCK = fmt.Clock(uptime=90061.0, boot=1_700_000_000.0, mem_total=24684960 * 1024,
                  now=1_700_090_061.0, pid_width=5, hz=100)  # fmt: skip


# ------------------------------------------------------------------ vserver-stat (F8)
def test_vserver_stat_golden_f8() -> None:
    stats = [
        fmt.ContextStat(0, 92, int(1.85 * 1024 * MIB), int(468.75 * MIB),
                        3_723_000, 954_320, 90_060_000, "root server"),
        fmt.ContextStat(40001, 17, 512 * MIB, int(117.15 * MIB), 65_430, 12_340,
                        18_061_000, "db1"),
        fmt.ContextStat(40002, 3, 20 * MIB, int(3.55 * MIB), 1_230, 560, 59_000, "[web1]"),
    ]  # fmt: skip
    assert "\n".join(fmt.render_vstat(stats)) == F8


def test_vserver_stat_column_positions() -> None:
    header, line = fmt.render_vstat([fmt.ContextStat(0, 1, 0, 0, 0, 0, 0, "root server")])
    assert header.index("NAME") == 55 and line.index("root server") == 55


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (5, "0m00s05"),  # quirk: first two digits of the ms count
        (50, "0m00s50"),
        (500, "0m00s50"),
        (10, "0m00s10"),
        (0, "0m00s00"),
        (3_599_990, "59m59s99"),
        (3_600_000, "1h00m00"),
        (86_400_000, "1d00h00"),
        (366 * 86_400_000 + 3_600_000, "1y001d01"),
    ],
)
def test_vserver_stat_times(ms: int, text: str) -> None:
    assert fmt.vstat_time(ms) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0 "), (1023, "1023 "), (1024, "1K"), (1536, "1.5K"), (1000 * 1024 + 512, "1000K"),
     (512 * MIB, "512M"), (int(1.85 * 1024 * MIB), "1.8G"), (3 * 1024**4, "3T")],
)  # fmt: skip
def test_vserver_stat_sizes(value: int, text: str) -> None:
    assert fmt.vstat_size(value) == text


def test_vserver_stat_names() -> None:
    assert fmt.vstat_name(0, "") == "root server"
    assert fmt.vstat_name(1, "") == "monitoring server"
    assert fmt.vstat_name(40001, "a" * 30) == "a" * 20
    assert fmt.vstat_name(40002, "b" * 30, legacy=True) == "[" + "b" * 18 + "]"
    assert fmt.vstat_name(40003, "") == ""


def test_context_stats_sums(tmp_path: Path) -> None:
    rows = [
        row(1, starttime=0, vsz=3 * MIB, rss=MIB, utime=100, cutime=50, stime=20, cstime=5),
        row(2, starttime=500, vsz=MIB, rss=MIB, utime=10),
        row(9, xid=40001, guest="db1", starttime=1000, utime=7),
    ]
    host, db1 = fmt.context_stats(rows, 100.0, {0: "", 40001: "db1"}, hz=100)
    assert (host.xid, host.nproc, host.vsz, host.rss) == (0, 2, 4 * MIB, 2 * MIB)
    assert (host.user_ms, host.sys_ms, host.uptime_ms) == (1600, 250, 100_000)
    assert (db1.name, db1.nproc, db1.uptime_ms, db1.user_ms) == ("db1", 1, 90_000, 70)


# ------------------------------------------------------------------ vps (F9)
def test_vps_ax_golden_f9() -> None:
    rows = [
        row(1, state="S", utime=150, stime=50, cmdline="/sbin/init", session=1),
        row(2211, xid=40001, guest="db1", cmdline="/usr/sbin/sshd", session=2211),
        row(3011, xid=1, tty="pts/0", state="R", pgrp=3011, tpgid=3011, session=1,
            cmdline="ps ax"),
    ]  # fmt: skip
    lines = fmt.render_ps(rows, fmt.LAYOUTS["bsd"], CLOCK, {0: "", 40001: "db1"})
    assert "\n".join(lines) == F9


def test_vps_ax_on_the_recorded_tree(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(FIXTURE, proc)
    paths = Paths.from_root(tmp_path / "root")
    run = paths.run_dir("db1")
    run.mkdir(parents=True)
    for name, value in {"state": "running", "xid": "40001", "init.pid": "2211"}.items():
        (run / name).write_text(value)
    cg = tmp_path / "cg" / "pids" / paths.cgroup_name("db1")
    cg.mkdir(parents=True)
    (cg / "cgroup.procs").write_text("2211\n2300\n2301\n")
    table = ProcessTable(paths, proc, tmp_path / "cg").refresh()
    names = table.attribution.names()
    lines = fmt.render_ps(table.rows, fmt.LAYOUTS["bsd"], CLOCK, names)
    assert lines[1] == "    1     0 MAIN          ?        Ss     0:02 /sbin/init"
    assert lines[2] == "    2     0 MAIN          ?        S      0:00 [kthreadd]"
    assert lines[4] == " 2211 40001 db1           ?        Ss     0:00 /usr/sbin/sshd"
    assert lines[5] == " 2300 40001 db1           ?        RNl    0:06 worker --name a) b (c"
    assert lines[6] == " 2301 40001 db1           ?        Z      0:00 [defunct-kid] <defunct>"
    assert lines[7] == " 3011     0 MAIN          pts/0    R+     0:00 ps ax"
    vpid = fmt.render_ps(table.rows, fmt.parse_format("pid,vpid,ctx,comm"), CLOCK, names)
    assert vpid[5] == " 2300     5 40001 db1           a) b (c"


def test_ps_layouts_match_procps_headers() -> None:
    r = row(1, utime=150, stime=50, vsz=170_000_000, rss=3000 * 4096, cmdline="/sbin/init",
            starttime=1, session=1)  # fmt: skip
    names = {0: ""}
    aux = fmt.render_ps([r], fmt.LAYOUTS["user"], CLOCK, names)
    head = "USER       PID CONTEXT             %CPU %MEM    VSZ   RSS TTY      STAT START   TIME"
    assert aux[0] == head + " COMMAND"
    assert aux[1].startswith(
        "root         1     0 MAIN           0.0  0.0 166015 12000 ?        Ss"
    )
    assert aux[1].endswith("   0:02 /sbin/init")
    ef = fmt.render_ps([r], fmt.LAYOUTS["full"], CLOCK, names)
    assert ef[0] == "UID        PID CONTEXT              PPID  C STIME TTY          TIME CMD"
    assert ef[1].startswith("root         1     0 MAIN              1  0 ")
    assert ef[1].endswith(" ?        00:00:02 /sbin/init")
    default = fmt.render_ps([r], fmt.LAYOUTS["default"], CLOCK, names)
    assert default[0] == "  PID CONTEXT             TTY          TIME CMD"


def test_o_format_with_ctx() -> None:
    r = row(2211, xid=40001, guest="db1", user="a-very-long-user", cmdline="/usr/sbin/sshd -D")
    lines = fmt.render_ps([r], fmt.parse_format("pid,ctx,user,cmd"), CLOCK, {40001: "db1"})
    assert lines == [
        "  PID CONTEXT             USER     CMD",
        " 2211 40001 db1           a-very-+ /usr/sbin/sshd -D",
    ]
    assert fmt.parse_format("pid=,ctx=") == [("pid", ""), ("ctx", "")]
    assert fmt.render_ps([r], fmt.parse_format("pid=,ctx="), CLOCK, {})[0] == " 2211 40001"
    assert fmt.parse_format("pid=X,comm") == [("pid", "X"), ("comm", "COMMAND")]
    with pytest.raises(ValueError, match="unknown format specifier 'bogus'"):
        fmt.parse_format("pid,bogus")


def test_context_cell() -> None:
    assert fmt.context_cell(0, {}) == "    0 MAIN"
    assert fmt.context_cell(1, {}) == "    1 ALL_PROC"
    assert fmt.context_cell(40001, {40001: "db1"}) == "40001 db1"
    assert fmt.context_cell(40009, {}) == "40009 "


def test_stat_letters() -> None:
    assert fmt.bsd_stat(row(5, session=5, threads=4, nice=-5)) == "S<sl"
    assert fmt.bsd_stat(row(5, session=1, pgrp=7, tpgid=7, state="R")) == "R+"
    assert fmt.bsd_stat(row(5, session=1, nice=3)) == "SN"


def test_times_and_width() -> None:
    assert fmt.bsd_time(12345 * CLK_TCK, CLK_TCK) == "205:45"
    assert fmt.unix_time(90061 * CLK_TCK, CLK_TCK) == "1-01:01:01"
    assert fmt.top_time(6123 * CLK_TCK // 100, CLK_TCK) == "1:01.23"
    assert fmt.elapsed_text(3725) == "01:02:05"
    long = row(1, cmdline="x" * 300)
    lines = fmt.render_ps([long], fmt.LAYOUTS["bsd"], CLOCK, {}, width=80)
    assert max(len(line) for line in lines) == 80


# ------------------------------------------------------------------ vps arguments
def test_vps_argument_forms() -> None:
    from vstui.cli import vps

    ax = vps.parse_args(["ax"])
    assert ax.bsd == {"a", "x"} and [k for k, _ in vps.layout_for(ax)][:3] == ["pid", "ctx", "tty"]
    aux = vps.parse_args(["aux"])
    assert vps.layout_for(aux)[0] == ("user", "USER")
    ef = vps.parse_args(["-ef"])
    assert ef.unix == {"e", "f"} and vps.layout_for(ef)[0] == ("fuser", "UID")
    o = vps.parse_args(["-o", "pid,ctx,user,cmd", "--xid", "db1", "--json"])
    assert (o.xid, o.json) == ("db1", True)
    assert vps.layout_for(o) == [("pid", "PID"), ("ctx", "CONTEXT"), ("user", "USER"),
                                 ("args", "CMD")]  # fmt: skip
    assert vps.parse_args(["-p", "1,2", "--xid=40001"]).pids == {1, 2}
    assert vps.parse_args(["-opid"]).fmt == ["pid"]
    with pytest.raises(VstuiError, match="unsupported option"):
        vps.parse_args(["-Z"])
    with pytest.raises(VstuiError, match="needs a value"):
        vps.parse_args(["-o"])


def test_vps_selection() -> None:
    from vstui.cli import vps

    me = row(50, uid=1000, tty="pts/1")
    rows = [me, row(51, uid=1000), row(52, uid=0, tty="pts/2"), row(53, xid=40001, uid=0)]

    def pick(*args: str) -> list[int]:
        opts = vps.parse_args(list(args))
        xid = int(opts.xid) if opts.xid else None
        return [r.pid for r in vps.select(rows, opts, me, xid)]

    assert pick() == [50]
    assert pick("ax") == [50, 51, 52, 53]
    assert pick("-e") == [50, 51, 52, 53]
    assert pick("a") == [50, 52]
    assert pick("x") == [50, 51]
    assert pick("--xid", "40001") == [53]
    assert pick("ax", "--xid", "0") == [50, 51, 52]
    assert pick("-p", "52") == [52]


# ------------------------------------------------------------------ vtop / vkill args
def test_top_row_has_context_column() -> None:
    r = row(2211, xid=40001, guest="db1", vsz=10 * MIB, rss=2 * MIB, cpu_percent=12.34,
            utime=6123, comm="sshd")  # fmt: skip
    line = fmt.top_row(r, {40001: "db1"}, 100 * MIB)
    assert line.startswith(" 2211 40001 db1           root       20   0   10240   2048 S  12.3")
    assert line.endswith("   2.0   1:01.23 sshd")
    header = fmt.top_header()
    assert header.index("CONTEXT") == line.index("40001") and header.index("COMMAND") == line.index(
        "sshd"
    )


def test_vtop_and_vkill_arguments() -> None:
    from vstui.cli import vkill, vtop

    o = vtop.parse_args(["-b", "-n", "3", "-d0.5", "--xid", "db1"])
    assert (o.batch, o.frames, o.delay, o.xid) == (True, 3, 0.5, "db1")
    with pytest.raises(VstuiError):
        vtop.parse_args(["-n", "x"])
    assert vkill.parse_args(["--xid", "db1", "-s", "KILL", "1", "7"]) == ("db1", "KILL", [1, 7])
    assert vkill.parse_args(["-c", "40001"]) == ("40001", "TERM", [])
    assert vkill.parse_args(["--", "12"]) == (None, "TERM", [12])
    with pytest.raises(VstuiError, match="is not a PID"):
        vkill.parse_args(["abc"])


def test_vkill_errors_as_util_vserver(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from vstui.cli import vkill

    assert vkill.main(["--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "vkill: No pid specified\n"
    assert vkill.main(["--root", str(tmp_path), "-s", "NOPE", "1"]) == 1
    assert capsys.readouterr().err.startswith("vkill: Invalid signal specified")


# ------------------------------------------------------------------ vps reads only what it shows
@pytest.mark.parametrize(
    "args",
    [(), ("ax",), ("a",), ("x",), ("u",), ("aux",), ("axr",), ("-e",), ("-ef",), ("-A", "f"),
     ("-o", "pid,cmd"), ("-p", "50"), ("-u", "root"), ("-C", "x"), ("--xid", "40001"),
     ("--xid", "40001", "x"), ("-eo", "pid,vpid,ctx")],
)  # fmt: skip
def test_vps_reads_the_uid_only_when_the_selection_or_a_column_uses_it(args: tuple) -> None:
    from engine.procs import scan
    from vstui.cli import vps

    opts = vps.parse_args(list(args))
    layout = vps.layout_for(opts)
    need = vps.needs(opts, layout)
    keys = {k for k, _h in layout}
    assert bool(need & scan.NEED_CMDLINE) == ("args" in keys)
    assert bool(need & scan.NEED_NSPID) == ("vpid" in keys)
    if not need & scan.NEED_UID:
        assert not keys & {"user", "euser", "fuser", "uid"}
        me = row(50, uid=1000, tty="pts/1")
        rows = [me, row(51, uid=1000), row(52, uid=0, tty="pts/2"), row(53, xid=40001, uid=0)]
        unread = [row(r.pid, uid=0, user="?", tty=r.tty, xid=r.xid) for r in rows]
        xid = int(opts.xid) if opts.xid else None
        chosen = [r.pid for r in vps.select(rows, opts, me, xid)]
        assert chosen == [r.pid for r in vps.select(unread, opts, unread[0], xid)]


def test_vps_ax_reads_argv_only_and_json_everything() -> None:
    from engine.procs import scan
    from vstui.cli import vps

    ax = vps.parse_args(["ax"])
    assert vps.needs(ax, vps.layout_for(ax)) == scan.NEED_CMDLINE
    js = vps.parse_args(["ax", "--json"])
    assert vps.needs(js, vps.layout_for(js)) == scan.NEED_ALL


def test_vps_start_path_imports_nothing_heavy(tmp_path: Path) -> None:
    """`vps ax` must not pay for dataclasses, typing, hashlib or engine.observe."""
    import subprocess
    import sys

    heavy = ("dataclasses", "typing", "hashlib", "engine.observe", "engine.datamodel")
    code = (
        "import io, sys; from vstui.cli import vps; out = sys.stdout; sys.stdout = io.StringIO(); "
        f"rc = vps.main(['--root', {str(tmp_path)!r}, 'ax']); sys.stdout = out; "
        f"print(rc, [m for m in {heavy!r} if m in sys.modules])"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert run.stdout.split(" ", 1) == ["0", "[]\n"], run.stderr
