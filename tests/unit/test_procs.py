"""The /proc scanner, attribution, trees, CPU% and vkill's logic, on a recorded
fake /proc tree (tests/unit/fixtures/proc) plus a fake cgroup hierarchy."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.datamodel import HOST_XID, ProcRow
from engine.errors import GuestNotFound, PrivateGuest, VstuiError
from engine.paths import Paths
from engine.procs import attribution, scan, signals, tree
from engine.procs.collect import ProcessTable, user_name

FIXTURE = Path(__file__).parent / "fixtures" / "proc"


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A private copy of the recorded /proc tree (tests may edit it)."""
    target = tmp_path / "proc"
    shutil.copytree(FIXTURE, target)
    return target


@pytest.fixture
def host(tmp_path: Path) -> tuple[Paths, Path]:
    """A root with guest db1 running (xid 40001, init 2211) and its cgroup."""
    paths = Paths.from_root(tmp_path / "root")
    run = paths.run_dir("db1")
    run.mkdir(parents=True)
    for name, value in {
        "state": "running",
        "xid": "40001",
        "init.pid": "2211",
        "init.start": "8000000",
        "started": "1700080000.5",
    }.items():
        (run / name).write_text(value + "\n")
    cgfs = tmp_path / "cgroup"
    top = cgfs / "pids" / paths.cgroup_name("db1")
    (top / "sub").mkdir(parents=True)
    (top / "cgroup.procs").write_text("2211\n2300\n")
    (top / "sub" / "cgroup.procs").write_text("2301\n")
    return paths, cgfs


def _uids_as_on_a_real_proc(proc: Path) -> None:
    """status's Uid: lines made the owner of their /proc/PID, as the kernel has
    both (the euid: fs/proc/base.c task_dump_owner, proc_pid_status)."""
    for status in proc.glob("*/status"):
        owner = status.parent.stat().st_uid
        status.write_text(re.sub(r"Uid:\t\d+\t\d+", f"Uid:\t{owner}\t{owner}", status.read_text()))


def _set_stat_field(proc: Path, pid: int, index: int, value: str) -> None:
    """Change field ``index`` (0 = state) after the comm of /proc/PID/stat."""
    path = proc / str(pid) / "stat"
    data = path.read_text()
    head, _, tail = data.rpartition(") ")
    fields = tail.split()
    fields[index] = value
    path.write_text(head + ") " + " ".join(fields) + "\n")


# ------------------------------------------------------------------ parsing
def test_parse_stat_of_a_recorded_process_matches_what_ps_printed() -> None:
    data = (FIXTURE / "16388" / "stat").read_bytes()
    p = scan.parse_stat(data, 16388)
    assert p is not None
    ps_line = (FIXTURE / "16388.ps").read_text().split()
    # pid ppid stat vsz rss tty time bsdtime nlwp ni comm args...
    assert p.ppid == int(ps_line[1])
    assert p.state == ps_line[2][0]
    assert p.vsize // 1024 == int(ps_line[3])
    # ps takes RSS from status (VmRSS); stat's count is the kernel's cheaper,
    # slightly lagging per-CPU sum: close, not always equal
    assert abs(p.rss // 1024 - int(ps_line[4])) <= 256
    assert p.threads == int(ps_line[8])
    assert p.nice == int(ps_line[9])
    assert p.comm == ps_line[10]


def test_comm_with_spaces_and_parentheses_is_parsed_from_the_last_paren() -> None:
    p = scan.parse_stat((FIXTURE / "2300" / "stat").read_bytes(), 2300)
    assert p is not None
    assert p.comm == "a) b (c"
    assert (p.state, p.ppid, p.nice, p.threads) == ("R", 2211, 19, 3)
    assert (p.utime, p.stime, p.starttime) == (500, 100, 8100000)


def test_garbage_stat_is_rejected() -> None:
    assert scan.parse_stat(b"12 no parens here", 12) is None
    assert scan.parse_stat(b"12 (x) S 1 2", 12) is None


def test_parse_status_uid_and_nspid() -> None:
    uid, nspid = scan.parse_status((FIXTURE / "2300" / "status").read_bytes())
    assert (uid, nspid) == (33, (2300, 5))


def test_tty_names() -> None:
    assert scan.tty_name(0) == "?"
    assert scan.tty_name(os.makedev(136, 0)) == "pts/0"
    assert scan.tty_name(os.makedev(137, 2)) == "pts/258"
    assert scan.tty_name(os.makedev(4, 1)) == "tty1"
    assert scan.tty_name(os.makedev(4, 64)) == "ttyS0"


# ------------------------------------------------------------------ scanner
def test_scan_skips_vanished_and_non_processes(proc: Path) -> None:
    procs = scan.Scanner(proc).scan()
    assert sorted(procs) == [1, 2, 2200, 2211, 2300, 2301, 3011, 16388]  # not 4002, not self


def test_kernel_threads_and_zombies_have_no_cmdline(proc: Path) -> None:
    procs = scan.Scanner(proc).scan()
    assert procs[2].kernel_thread and procs[2].cmdline == ""
    assert procs[2301].state == "Z" and procs[2301].cmdline == ""
    assert procs[1].cmdline == "/sbin/init"
    assert procs[2300].cmdline == "worker --name a) b (c"


def test_static_parts_are_read_once_per_process(proc: Path) -> None:
    scanner = scan.Scanner(proc)
    first = scanner.scan()
    kthreads = sum(1 for p in first.values() if p.kernel_thread)  # no cmdline to read
    assert scanner.reads == 3 * len(first) - kthreads  # stat + status-or-stat() + cmdline
    scanner.scan()
    assert scanner.reads == len(first)  # only stat
    (proc / "1" / "cmdline").write_bytes(b"/sbin/other\0")
    assert scanner.scan()[1].cmdline == "/sbin/init"  # still the same process
    _set_stat_field(proc, 1, 19, "5")  # a new process with a reused PID
    assert scanner.scan()[1].cmdline == "/sbin/other"


def test_exec_is_noticed_by_its_comm(proc: Path) -> None:
    scanner = scan.Scanner(proc)
    scanner.scan()
    path = proc / "3011" / "stat"
    path.write_text(path.read_text().replace("(ps)", "(top)"))
    (proc / "3011" / "cmdline").write_bytes(b"top\0-b\0")
    assert scanner.scan()[3011].cmdline == "top -b"


def test_process_gone_between_scans_is_dropped(proc: Path) -> None:
    scanner = scan.Scanner(proc)
    scanner.scan()
    shutil.rmtree(proc / "3011")
    assert 3011 not in scanner.scan()


def test_nspid_read_at_once_for_requested_pids_and_on_first_use_for_others(
    proc: Path,
) -> None:
    scanner = scan.Scanner(proc)
    procs = scanner.scan(want_nspid={2300})
    assert scanner.reads == 3 * len(procs) - 1  # stat, status or stat(), cmdline (1 kthread)
    assert procs[2300].nspid == 5
    assert procs[2300].uid == 33  # from status Uid:
    (proc / "2211" / "status").write_text("Name:\tsshd\nNSpid:\t2211\t1\n")
    assert procs[2211].nspid == 1  # not asked: read when used
    (proc / "2211" / "status").write_text("Name:\tsshd\nNSpid:\t2211\t7\n")
    assert scanner.scan()[2211].nspid == 1  # once per process


def test_scanner_on_the_real_proc_sees_itself() -> None:
    procs = scan.Scanner().scan(want_nspid={os.getpid()})
    me = procs[os.getpid()]
    assert me.ppid == os.getppid()
    assert me.uid == os.geteuid()
    assert "pytest" in me.cmdline or "python" in me.cmdline


# ------------------------------------------------------------------ attribution
def test_run_state_and_cgroup_members(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, cgfs = host
    info = attribution.read_run_state(paths, "db1", str(proc))
    assert (info.state, info.xid, info.init_pid, info.started) == (
        "running",
        40001,
        2211,
        1700080000.5,
    )
    assert attribution.cgroup_members(paths, "db1", cgfs) == {2211, 2300, 2301}
    assert attribution.cgroup_members(paths, "nope", cgfs) is None


def test_stale_run_state_is_stopped(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, _ = host
    (paths.run_dir("db1") / "init.start").write_text("1234\n")  # init was replaced
    assert attribution.read_run_state(paths, "db1", str(proc)).state == "stopped"
    assert attribution.running_guests(paths, str(proc)) == []


def test_table_attributes_guest_processes(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, cgfs = host
    _uids_as_on_a_real_proc(proc)
    table = ProcessTable(paths, proc, cgfs).refresh()
    by_pid = {r.pid: r for r in table.rows}
    for pid, nspid in ((2211, 1), (2300, 5), (2301, 6)):
        assert (by_pid[pid].xid, by_pid[pid].guest, by_pid[pid].nspid) == (40001, "db1", nspid)
    for pid in (1, 2, 2200, 3011):
        assert (by_pid[pid].xid, by_pid[pid].guest, by_pid[pid].nspid) == (HOST_XID, "", pid)
    # the uid is the owner of /proc/PID (the kernel makes it the euid: fs/proc/base.c
    # task_dump_owner), not status's Uid: line, which is not read for it
    assert by_pid[2300].huid == (proc / "2300").stat().st_uid
    assert by_pid[2].cmdline == "[kthreadd]"
    assert table.attribution.names() == {0: "", 40001: "db1"}


def test_guest_without_cgroup_is_reported(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, cgfs = host
    shutil.rmtree(cgfs / "pids")
    table = ProcessTable(paths, proc, cgfs).refresh()
    assert all(r.xid == HOST_XID for r in table.rows)
    assert "db1: no cgroup" in table.attribution.errors[0]


def test_resolve_guest_by_name_and_xid(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, _ = host
    assert attribution.resolve_guest(paths, "db1", str(proc)).xid == 40001
    assert attribution.resolve_guest(paths, "40001", str(proc)).name == "db1"
    assert attribution.resolve_guest(paths, "0", str(proc)) is None
    with pytest.raises(GuestNotFound):
        attribution.resolve_guest(paths, "web9", str(proc))
    with pytest.raises(GuestNotFound):
        attribution.resolve_guest(paths, "777", str(proc))


# ------------------------------------------------------------------ trees
def test_guest_tree_is_rooted_at_its_init(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, cgfs = host
    rows = ProcessTable(paths, proc, cgfs).refresh().by_xid()[40001]
    order = [(d, p.pid) for d, p in tree.walk(rows, prefer_root=2211)]
    assert order == [(0, 2211), (1, 2300), (1, 2301)]


def test_host_tree_and_descendants(proc: Path) -> None:
    procs = list(scan.Scanner(proc).scan().values())
    order = [(d, p.pid) for d, p in tree.walk(procs)]
    assert order[0] == (0, 1)
    assert sorted(pid for _d, pid in order) == sorted(p.pid for p in procs)
    depth = dict((pid, d) for d, pid in order)
    assert (depth[2200], depth[2211], depth[2300]) == (1, 2, 3)
    assert sorted(p.pid for p in tree.descendants(procs, 2200)) == [2211, 2300, 2301]
    flat = [(d, p.pid) for d, p in tree.walk(procs, flat_init=True)]
    assert flat[0] == (0, 2) and (0, 2200) in flat  # ps f: kthreadd first, init's kids roots


def test_tree_survives_a_parent_loop() -> None:
    from engine.datamodel import ProcRow

    def row(pid: int, ppid: int) -> ProcRow:
        return ProcRow(pid, ppid, 1, 0, "", pid, 0, "root", "S", 0, 1, 0, 0, 0, 0, 0, 0, 0.0,
                       "?", "x", "x")  # fmt: skip

    rows = [row(10, 11), row(11, 10), row(12, 10)]
    assert sorted(p.pid for _d, p in tree.walk(rows)) == [10, 11, 12]


def test_forest_prefix_matches_ps() -> None:
    assert tree.forest_prefix(0) == ""
    assert tree.forest_prefix(1) == " \\_ "
    assert tree.forest_prefix(2) == "     \\_ "


# ------------------------------------------------------------------ CPU%
def test_cpu_percent_from_deltas(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, cgfs = host
    now = [100.0]
    table = ProcessTable(paths, proc, cgfs, clock=lambda: now[0])
    first = {r.pid: r for r in table.refresh().rows}
    assert all(r.cpu_percent == 0.0 for r in first.values())
    _set_stat_field(proc, 2300, 11, str(500 + scan.CLK_TCK))  # utime +1 s
    _set_stat_field(proc, 2300, 12, str(100 + scan.CLK_TCK // 2))  # stime +0.5 s
    now[0] = 102.0
    second = {r.pid: r for r in table.refresh().rows}
    assert second[2300].cpu_percent == pytest.approx(75.0)
    assert second[1].cpu_percent == 0.0
    _set_stat_field(proc, 2300, 19, "8100001")  # a new process on the same PID
    _set_stat_field(proc, 2300, 11, "900")
    now[0] = 103.0
    third = {r.pid: r for r in table.refresh().rows}
    assert third[2300].cpu_percent == 0.0


def test_observer_snapshot_on_fake_tree(proc: Path, host: tuple[Paths, Path]) -> None:
    from engine.observe.snapshot import Observer

    paths, cgfs = host
    snap = Observer(paths, proc, cgfs).snapshot()
    hostrow = snap.guests[0]
    assert (hostrow.xid, hostrow.name, hostrow.nproc) == (0, "", 5)
    assert hostrow.memory.limit == 24684960 * 1024
    db1 = snap.guest("db1")
    assert db1 is not None
    assert (db1.xid, db1.state, db1.init_pid, db1.nproc) == (40001, "running", 2211, 3)
    assert db1.uptime is not None and db1.uptime > 0
    assert [p.pid for p in snap.procs_of(40001)] == [2211, 2300, 2301]
    # no cgroup for db1 on this machine, no storage for a fake guest: said, not invented
    assert db1.memory.used is None and db1.disk.used is None
    assert any(m.startswith(("memory", "disk", "config")) for m in db1.missing)


def test_a_snapshot_reads_net_dev_once_and_pid_max_every_few_seconds(
    proc: Path, host: tuple[Paths, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's traffic totals and the running guests' veth counters come from
    one read of /proc/net/dev; the PID limit is read again every LIMITS_EVERY s."""
    import builtins

    from engine.observe.snapshot import Observer

    paths, cgfs = host
    (proc / "net").mkdir(exist_ok=True)
    (proc / "net" / "dev").write_text(
        "Inter-|   Receive\n face |bytes packets\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"
    )
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    real_os_open = os.open

    def counting_os_open(file, *args, **kwargs):
        opened.append(os.fspath(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)  # procfs.read_text's way
    observer = Observer(paths, proc, cgfs)
    observer.snapshot()
    assert sum(f.endswith("net/dev") for f in opened) == 1
    limits = sum(f.endswith("pid_max") for f in opened)
    observer.snapshot()
    assert sum(f.endswith("pid_max") for f in opened) == limits


def test_the_poll_reads_meminfo_and_net_dev_through_kept_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live /proc's meminfo and net/dev are opened once and read again at each
    snapshot (an open, reads to the end and a close, and Python's file object,
    were ~60% of reading them each second); what they say is read anew."""
    import builtins

    from engine.observe.snapshot import Observer

    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def counting_open(file, *args, **kwargs):
        opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    def counting_os_open(file, *args, **kwargs):
        opened.append(os.fspath(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    observer = Observer(Paths(tmp_path))
    host = [observer.snapshot().guests[0] for _ in range(3)]
    assert sum(f.endswith("/meminfo") for f in opened) == 1
    assert sum(f.endswith("/net/dev") for f in opened) == 1
    assert all(h.memory.limit and h.memory.used for h in host) and host[-1].net is not None


def test_a_kept_file_is_read_from_its_start_each_time_and_to_its_end(tmp_path: Path) -> None:
    from engine.procfs import KeptFile

    uptime = KeptFile("/proc/uptime")
    first = uptime.read()
    time.sleep(0.02)  # /proc/uptime moves every 10 ms
    assert uptime.read() != first and uptime.read().count(b" ") == 1
    uptime.close()
    long = tmp_path / "long"  # longer than one read
    long.write_bytes(bytes(range(256)) * 1000)
    assert KeptFile(str(long)).read() == long.read_bytes()
    assert KeptFile(str(long)).read(4096) == long.read_bytes()  # any read size: all of it


# ------------------------------------------------------------------ signals
@pytest.mark.parametrize(
    ("word", "number"),
    [("TERM", 15), ("sigterm", 15), ("SIGKILL", 9), ("9", 9), ("hup", 1), ("0", 0),
     ("RTMIN+1", int(signal.SIGRTMIN) + 1)],
)  # fmt: skip
def test_parse_signal(word: str, number: int) -> None:
    assert signals.parse_signal(word) == number


@pytest.mark.parametrize("word", ["FOO", "SIG", "999", "-1", ""])
def test_invalid_signal(word: str) -> None:
    with pytest.raises(signals.InvalidSignal, match="Invalid signal specified"):
        signals.parse_signal(word)


def test_choose_maps_guest_pids(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, cgfs = host
    targets = signals.choose(paths, "db1", [1, 5], str(proc), cgfs)
    assert [(t.pid, t.nspid, t.guest) for t in targets] == [(2211, 1, "db1"), (2300, 5, "db1")]
    everyone = signals.choose(paths, "40001", [], str(proc), cgfs)
    assert sorted(t.pid for t in everyone) == [2211, 2300, 2301]
    with pytest.raises(VstuiError, match="no process 3011 in the guest"):
        signals.choose(paths, "db1", [3011], str(proc), cgfs)


def test_choose_refuses(proc: Path, host: tuple[Paths, Path]) -> None:
    paths, cgfs = host
    with pytest.raises(signals.NoPid):
        signals.choose(paths, None, [], str(proc), cgfs)
    with pytest.raises(VstuiError, match="belongs to guest db1"):
        signals.choose(paths, "0", [2300], str(proc), cgfs)
    with pytest.raises(VstuiError, match="cannot signal"):
        signals.choose(paths, "1", [1], str(proc), cgfs)
    paths.config_dir.mkdir(parents=True)
    paths.config_file("db1").write_text('S_FLAGS="lock private"\n')
    with pytest.raises(PrivateGuest):
        signals.choose(paths, "db1", [1], str(proc), cgfs)
    with pytest.raises(PrivateGuest):
        signals.choose(paths, None, [2300], str(proc), cgfs)  # host PID of a private guest


def test_send_rechecks_start_time_before_signalling(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    child = subprocess.Popen(["sleep", "60"])
    try:
        start = scan.Scanner().scan()[child.pid].starttime
        wrong = signals.Target(child.pid, start + 1, None, child.pid)
        [outcome] = signals.send(paths, [wrong], signal.SIGTERM)
        assert outcome.error is not None and "exited" in outcome.error
        assert child.poll() is None  # a reused PID is never signalled
        right = signals.Target(child.pid, start, None, child.pid)
        [outcome] = signals.send(paths, [right], signal.SIGTERM)
        assert outcome.error is None
        assert child.wait(timeout=5) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# ------------------------------------------------------------------ caching (issue 6)
def _refreshed(proc: Path, host: tuple[Paths, Path]) -> tuple[ProcessTable, dict[int, ProcRow]]:
    """A table of the fake host's processes after its first refresh, and its rows by PID."""
    paths, cgfs = host
    table = ProcessTable(paths, proc, cgfs)
    return table, {r.pid: r for r in table.refresh().rows}


def test_unchanged_process_keeps_its_proc_and_row_objects(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    table, first = _refreshed(proc, host)
    second = {r.pid: r for r in table.refresh().rows}
    assert all(second[pid] is first[pid] for pid in first)  # nothing changed: same rows
    assert table.scanner.reads == len(first)  # one stat read each, nothing else
    _set_stat_field(proc, 2200, 21, "999")  # rss changes
    third = {r.pid: r for r in table.refresh().rows}
    assert third[2200] is not second[2200] and third[2200].rss == 999 * scan.PAGE_SIZE
    assert third[2200].cmdline == second[2200].cmdline  # static parts kept
    assert third[1] is second[1]


def test_exec_keeps_pid_and_starttime_but_changes_comm_and_cmdline(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    table, rows = _refreshed(proc, host)
    before = rows[3011]
    assert (before.comm, before.cmdline) == ("ps", "ps ax")
    path = proc / "3011" / "stat"
    path.write_text(path.read_text().replace("(ps)", "(top)"))
    (proc / "3011" / "cmdline").write_bytes(b"top\0-b\0")
    after = {r.pid: r for r in table.refresh().rows}[3011]
    assert (after.key, after.comm, after.cmdline) == (before.key, "top", "top -b")


def test_a_row_that_had_cpu_gets_zero_when_its_stat_stops_changing(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    paths, cgfs = host
    now = [100.0]
    table = ProcessTable(paths, proc, cgfs, clock=lambda: now[0])
    table.refresh()
    _set_stat_field(proc, 2300, 11, str(500 + scan.CLK_TCK))
    now[0] = 101.0
    busy = {r.pid: r for r in table.refresh().rows}[2300]
    assert busy.cpu_percent == pytest.approx(100.0)
    now[0] = 102.0
    idle = {r.pid: r for r in table.refresh().rows}[2300]
    assert idle.cpu_percent == 0.0 and idle is not busy
    now[0] = 103.0
    assert {r.pid: r for r in table.refresh().rows}[2300] is idle


def test_a_process_that_joins_a_guest_gets_its_context_and_guest_pid(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    paths, cgfs = host
    members = cgfs / "pids" / paths.cgroup_name("db1") / "cgroup.procs"
    members.write_text("2211\n")
    table = ProcessTable(paths, proc, cgfs)
    first = {r.pid: r for r in table.refresh().rows}
    assert (first[2300].xid, first[2300].nspid) == (HOST_XID, 2300)
    members.write_text("2211\n2300\n")  # same stat line: only the context changed
    second = {r.pid: r for r in table.refresh().rows}
    assert (second[2300].xid, second[2300].guest, second[2300].nspid) == (40001, "db1", 5)


def test_scanner_reads_only_the_parts_asked_for_and_adds_missing_ones_later(
    proc: Path,
) -> None:
    scanner = scan.Scanner(proc)
    bare = scanner.scan(need=0)
    assert scanner.reads == len(bare)  # stat only
    assert bare[3011].cmdline == "ps ax"  # read on first use
    full = scanner.scan({2300}, scan.NEED_UID | scan.NEED_CMDLINE)
    # stat, the uid (from status for 2300), argv: none for kthreadd, 3011's known
    assert scanner.reads == 3 * len(full) - 2
    assert full[1].cmdline == "/sbin/init" and full[2300].nspid == 5
    assert full[2300].uid == 33
    scanner.scan({2300}, scan.NEED_UID | scan.NEED_CMDLINE)
    assert scanner.reads == len(full)  # everything known now


def test_one_shot_rows_equal_procrows_field_by_field(proc: Path, host: tuple[Paths, Path]) -> None:
    from dataclasses import fields

    from engine.datamodel import ProcRow
    from engine.procs.collect import ROW_FIELDS, PsRow

    assert ROW_FIELDS == tuple(f.name for f in fields(ProcRow))
    paths, cgfs = host
    _uids_as_on_a_real_proc(proc)
    full = ProcessTable(paths, proc, cgfs).refresh().rows
    lite = ProcessTable(paths, proc, cgfs, one_shot=True).refresh().rows
    assert all(isinstance(r, ProcRow) for r in full) and all(type(r) is PsRow for r in lite)
    as_tuples = [tuple(getattr(r, f) for f in ROW_FIELDS) for r in lite]
    assert as_tuples == [tuple(getattr(r, f) for f in ROW_FIELDS) for r in full]


def test_procrow_fast_constructor_builds_equal_rows() -> None:
    from engine.datamodel import ProcRow, new_proc_row

    values = (7, 1, 5, 0, "", 7, 0, "root", "S", 0, 1, 4096, 4096, 1, 2, 3, 4, 0.5, "?",
              "x", "x -y", 7, 7, -1, 20, False, 0)  # fmt: skip
    fast = new_proc_row(*values)
    assert fast == ProcRow(*values) and hash(fast) == hash(ProcRow(*values))
    with pytest.raises(AttributeError):
        fast.pid = 8  # type: ignore[misc]


def test_lazy_rows_that_differ_in_their_stat_line_compare_without_reading_proc() -> None:
    """The console compares the row of a process that ran with the one it drew:
    the lazy fields (argv, owner, NSpid) come before the times in field order,
    and were read from /proc to find that the times differ."""
    from engine.datamodel import new_lazy_row

    class Static:
        reads = 0

        def owner(self) -> int:
            Static.reads += 1
            return 0

        @property
        def nspid(self) -> tuple[int, ...]:
            Static.reads += 1
            return (7,)

        @property
        def cmdline(self) -> str:
            Static.reads += 1
            return "x -y"

    def row(utime: int) -> ProcRow:
        return new_lazy_row(7, 1, 5, 0, "", None, None, None, "S", 0, 1, 4096, 4096, utime, 2,
                            3, 4, 0.5, "?", "x", None, 7, 7, -1, 20, False, None, Static(),
                            lambda huid: (huid, "root"))  # fmt: skip

    assert row(1) != row(2) and Static.reads == 0
    assert row(1) == row(1) and Static.reads > 0  # equal so far: the lazy fields decide


def test_snapshot_procs_of_index_is_not_carried_over_by_replace() -> None:
    import dataclasses

    from engine.datamodel import ProcRow, Snapshot

    def row(pid: int, xid: int) -> ProcRow:
        return ProcRow(pid, 1, 1, xid, "g" if xid else "", pid, 0, "root", "S", 0, 1, 0, 0,
                       0, 0, 0, 0, 0.0, "?", "x", "x")  # fmt: skip

    snap = Snapshot(1.0, 2.0, (), (row(10, 0), row(11, 5), row(12, 5)), 2)
    assert [p.pid for p in snap.procs_of(5)] == [11, 12] and snap.procs_of(9) == ()
    more = dataclasses.replace(snap, procs=(*snap.procs, row(13, 5)))
    assert [p.pid for p in more.procs_of(5)] == [11, 12, 13]
    assert more != snap and snap == dataclasses.replace(snap)


def test_observer_reloads_a_guest_config_only_when_it_changes(
    proc: Path, host: tuple[Paths, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    # the module itself: engine.observe rebinds its name "snapshot" to the function
    snapmod = importlib.import_module("engine.observe.snapshot")

    paths, cgfs = host
    paths.config_dir.mkdir(parents=True)
    conf = paths.config_file("db1")
    conf.write_text('S_FLAGS="lock"\n')
    loads: list[str] = []
    real = snapmod.config_or_error
    monkeypatch.setattr(snapmod, "config_or_error", lambda p, n: loads.append(n) or real(p, n))
    obs = snapmod.Observer(paths, proc, cgfs)
    assert obs.snapshot().guest("db1").flags == ("lock",)
    obs.snapshot()
    assert loads == ["db1"]
    conf.write_text('S_FLAGS="lock nproc"\n')
    assert obs.snapshot().guest("db1").flags == ("lock", "nproc")
    assert loads == ["db1", "db1"]


def test_run_states_read_a_guest_again_only_when_its_run_dir_changed(
    proc: Path, host: tuple[Paths, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _ = host
    run = paths.run_dir("db1")
    old = os.stat(run).st_mtime - 10  # changed long ago: not racy
    os.utime(run, (old, old))
    states = attribution.RunStates(paths, str(proc))
    first = states.read("db1")
    assert (first.xid, first.init_pid) == (40001, 2211) and not states.frozen("db1")
    reads = []
    real = attribution._recorded
    monkeypatch.setattr(attribution, "_recorded", lambda d: reads.append(d) or real(d))
    assert states.read("db1") == first and reads == []  # one stat, no file read
    (run / ".xid.tmp").write_text("40002\n")
    os.replace(run / ".xid.tmp", run / "xid")  # how the runtime writes: a rename
    (run / "frozen").write_text("1\n")
    assert states.read("db1").xid == 40002 and states.frozen("db1")  # seen at once
    assert reads  # read again: the directory changed (and is racy now)
    assert attribution.RunStates(paths, str(proc)).read("db2").state == "stopped"


class _CountingCgroups:
    """engine.cgroups' manager as the observer sees it, counting the reads."""

    def __init__(self) -> None:
        self.used = self.limits = 0

    def memory_used(self, rel: str) -> int:
        self.used += 1
        return 1000 * self.used

    def limit_gauges(self, rel: str) -> tuple[int, int]:
        self.limits += 1
        return 1 << 30, 500


def test_an_idle_guests_memory_is_not_read_again_until_one_of_its_processes_runs(
    proc: Path, host: tuple[Paths, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import engine.cgroups

    snapshot = importlib.import_module("engine.observe.snapshot")
    paths, cgfs = host
    counting = _CountingCgroups()
    monkeypatch.setattr(engine.cgroups, "manager", lambda: counting)
    observer = snapshot.Observer(paths, proc, cgfs)

    def db1():
        return next(g for g in observer.snapshot().guests if g.name == "db1")

    first = db1()
    assert (first.memory.used, first.memory.limit, first.pids.limit) == (1000, 1 << 30, 500)
    assert db1().memory.used == 1000 and counting.used == 1  # nothing ran: no read
    _set_stat_field(proc, 2300, 11, "999999")  # a guest process used CPU
    assert db1().memory.used == 2000 and counting.used == 2
    assert counting.limits == 1  # limits: every LIMITS_EVERY seconds


def test_an_idle_guests_status_is_carried_over_until_something_of_it_changes(
    proc: Path, host: tuple[Paths, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At many guests the console's idle cost is per guest per second: a guest
    whose processes, run files, config and traffic did not change keeps its
    figures (no gauge, disk or frozen check read again); its uptime moves."""
    import importlib

    import engine.cgroups

    snapshot = importlib.import_module("engine.observe.snapshot")
    paths, cgfs = host
    monkeypatch.setattr(engine.cgroups, "manager", lambda: _CountingCgroups())
    observer = snapshot.Observer(paths, proc, cgfs)
    worked: list[str] = []
    real = snapshot.Observer._disk_gauges
    monkeypatch.setattr(
        snapshot.Observer,
        "_disk_gauges",
        lambda self, name, *a: worked.append(name) or real(self, name, *a),
    )
    first = observer.snapshot().guest("db1")
    again = observer.snapshot().guest("db1")
    assert worked == ["db1"]  # nothing of db1 changed: carried over
    assert again.memory == first.memory and again.state == first.state == "running"
    _set_stat_field(proc, 2300, 11, "999999")  # a guest process used CPU
    observer.snapshot()
    assert worked == ["db1", "db1"]
    (paths.run_dir("db1") / "frozen").write_text("1\n")  # its run files changed
    assert observer.snapshot().guest("db1").state == "frozen"


# ------------------------------------------------------------------ read on first use (issue 20)
def test_console_rows_read_argv_and_guest_pid_only_when_asked(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    table, rows = _refreshed(proc, host)
    assert table.scanner.reads == len(rows)  # stat alone: no uid, status or cmdline
    (proc / "2300" / "cmdline").write_bytes(b"worker\0--later\0")
    assert (rows[2300].nspid, rows[2300].cmdline) == (5, "worker --later")
    owner = (proc / "3011").stat().st_uid
    assert (rows[3011].huid, rows[3011].uid, rows[3011].user) == (owner, owner, user_name(owner))
    (proc / "2300" / "cmdline").write_bytes(b"changed\0")
    assert rows[2300].cmdline == "worker --later"  # read once: the row does not change
    again = {r.pid: r for r in table.refresh().rows}
    assert again[2300] is rows[2300] and again[3011].cmdline == "ps ax"


def test_a_row_whose_process_is_gone_before_it_is_shown_says_so_plainly(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    paths, cgfs = host
    rows = {r.pid: r for r in ProcessTable(paths, proc, cgfs).refresh().rows}
    shutil.rmtree(proc / "2300")
    shutil.rmtree(proc / "3011")
    assert (rows[3011].cmdline, rows[3011].nspid) == ("[ps]", 3011)  # as ps shows a zombie
    assert (rows[3011].huid, rows[3011].uid, rows[3011].user) == (-1, -1, "?")  # not root
    assert (rows[2300].cmdline, rows[2300].nspid) == ("[a) b (c]", 2300)  # guest PID unknown


def test_a_reused_pid_never_lends_its_argv_to_the_row_of_the_process_before(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    paths, cgfs = host
    rows = {r.pid: r for r in ProcessTable(paths, proc, cgfs).refresh().rows}
    _set_stat_field(proc, 2300, 19, "9100000")  # 2300 exited, a newcomer took its PID
    (proc / "2300" / "cmdline").write_bytes(b"newcomer\0")
    (proc / "2300" / "status").write_text("Name:\tnewcomer\nNSpid:\t2300\t77\n")
    assert (rows[2300].cmdline, rows[2300].nspid) == ("[a) b (c]", 2300)


def test_console_rows_on_the_real_proc(tmp_path: Path) -> None:
    table = ProcessTable(Paths.from_root(tmp_path))
    me = next(r for r in table.refresh().rows if r.pid == os.getpid())
    assert (me.uid, me.nspid, me.ppid) == (os.geteuid(), os.getpid(), os.getppid())
    assert "pytest" in me.cmdline or "python" in me.cmdline


def test_a_user_namespaced_guests_rows_name_their_owner_inside_it_when_asked(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    paths, cgfs = host
    base = 524288  # the guest's block; 2300 runs as its uid 33
    if os.geteuid() != 0:
        pytest.skip("needs root to give /proc/2300 of the fake tree its owner")
    _uids_as_on_a_real_proc(proc)
    os.chown(proc / "2300", base + 33, -1)
    (proc / "2300" / "status").write_text("Name:\tworker\nNSpid:\t2300\t5\n")
    (proc / "2211" / "uid_map").write_text(f"0 {base} 65536\n")
    (proc / "2211" / "root" / "etc").mkdir(parents=True)
    (proc / "2211" / "root" / "etc" / "passwd").write_text("www:x:33:33::/:/bin/false\n")
    rows = {r.pid: r for r in ProcessTable(paths, proc, cgfs).refresh().rows}
    assert (rows[2300].huid, rows[2300].uid, rows[2300].user) == (base + 33, 33, "www")
    assert rows[2200].user == user_name(rows[2200].huid)  # the host's: its own names


def test_guest_ids_read_uid_map_once_per_running_init(tmp_path):
    """A uid_map is written once per user namespace: a running guest's init's map
    is read once, not every refresh; a starting guest's again (it may not be
    written yet); a restart (new start recorded) reads the new one."""
    from engine.procs.attribution import RunInfo
    from engine.procs.guestids import Cache

    (tmp_path / "40").mkdir()
    (tmp_path / "40" / "uid_map").write_text("")  # not written yet
    cache = Cache(tmp_path)
    starting = RunInfo("g1", "starting", 7, 40, 100.0)
    assert cache.update([starting]) == {} and cache.update([starting]) == {}
    assert cache.reads == 2
    (tmp_path / "40" / "uid_map").write_text("         0     655360      65536\n")
    running = starting._replace(state="running")
    for _ in range(3):
        assert cache.update([running])["g1"].base == 655360
    assert cache.reads == 3
    (tmp_path / "40" / "uid_map").write_text("         0     720896      65536\n")
    assert cache.update([running._replace(started=200.0)])["g1"].base == 720896
    assert cache.reads == 4
    host = RunInfo("g2", "running", 8, 41, 100.0)  # no user namespace: the host's map
    (tmp_path / "41").mkdir()
    (tmp_path / "41" / "uid_map").write_text("0 0 4294967295\n")
    cache.update([host]), cache.update([host])
    assert cache.reads == 5 and "g2" not in cache.update([host])


def test_stopped_guests_id_blocks_read_the_table_once_until_it_changes(
    proc: Path, host: tuple[Paths, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stopped user-namespaced guest shows its recorded id block: the table
    is read once for all of them, and again when it was replaced."""
    from engine.observe.snapshot import Observer
    from engine.runtime import idmap

    paths, cgfs = host
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    for name in ("st1", "st2"):
        paths.config_file(name).write_text('V_USERNS="yes"\n')
    table = idmap.table_path(paths)
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("st1 20\nst2 21\n")
    reads: list[int] = []
    real = idmap.recorded
    monkeypatch.setattr(idmap, "recorded", lambda p: reads.append(1) or real(p))
    snap = Observer(paths, proc, cgfs).snapshot()
    assert snap.guest("st1").idmap == (20 * idmap.BLOCK, idmap.BLOCK)
    assert snap.guest("st2").idmap == (21 * idmap.BLOCK, idmap.BLOCK)
    assert len(reads) == 1
    observer = Observer(paths, proc, cgfs)
    observer.snapshot()
    tmp = table.with_name("new")
    tmp.write_text("st1 20\nst2 22\n")
    os.replace(tmp, table)  # as idmap writes it
    observer._carried.clear()  # measured again (as LIMITS_EVERY seconds later)
    observer._disk.clear()
    assert observer.snapshot().guest("st2").idmap == (22 * idmap.BLOCK, idmap.BLOCK)


# ------------------------------------------------------------------ gated scan (issue 22)
def _schedstat(proc: Path, pid: int, runtime: int) -> None:
    (proc / str(pid) / "schedstat").write_text(f"{runtime} 0 1\n")


def test_a_gated_scan_reads_a_process_stat_only_when_it_ran(proc: Path) -> None:
    """The console's repeated scan keeps each schedstat open: a process whose run
    time did not move keeps its Proc without a stat read; one that ran is read."""
    for entry in proc.iterdir():
        if entry.name.isdigit():
            _schedstat(proc, int(entry.name), 1000)
    scanner = scan.Scanner(proc, gate=True)
    first = scanner.scan((), 0)
    assert scanner.reads == len(first)
    _set_stat_field(proc, 2200, 21, "999")  # rss moved, but 2200 did not run
    second = scanner.scan((), 0)
    assert second[2200] is first[2200]
    assert scanner.reads < len(first)
    _schedstat(proc, 2200, 2000)  # it ran
    third = scanner.scan((), 0)
    assert third[2200].rss == 999 * scan.PAGE_SIZE
    scanner.close()


def test_a_gated_scan_reads_every_stat_again_within_recheck_every_scans(proc: Path) -> None:
    """What another process changes in a sleeping one (renice, RSS reclaimed) is
    seen within RECHECK_EVERY scans; a multi-threaded process is read every time
    (schedstat is its main thread's alone)."""
    for entry in proc.iterdir():
        if entry.name.isdigit():
            _schedstat(proc, int(entry.name), 1000)
    scanner = scan.Scanner(proc, gate=True)
    scanner.scan((), 0)
    _set_stat_field(proc, 2200, 16, "7")  # reniced by someone else
    seen = [scanner.scan((), 0)[2200].nice for _ in range(scan.RECHECK_EVERY)]
    assert seen[-1] == 7
    _set_stat_field(proc, 2211, 17, "3")  # it started two threads: it ran
    _schedstat(proc, 2211, 2000)
    assert scanner.scan((), 0)[2211].threads == 3
    _set_stat_field(proc, 2211, 21, "777")  # a worker thread ran: main's schedstat is still
    assert scanner.scan((), 0)[2211].rss == 777 * scan.PAGE_SIZE
    scanner.close()


def test_a_gated_scan_reads_a_kernel_thread_that_did_not_run_once_in_kthread_recheck_every(
    proc: Path,
) -> None:
    """A kernel thread has no memory to reclaim and no terminal or group: what
    another process changes in its stat line without it running is a renice,
    read within KTHREAD_RECHECK_EVERY scans; not read at every RECHECK_EVERY."""
    for entry in proc.iterdir():
        if entry.name.isdigit():
            _schedstat(proc, int(entry.name), 1000)
    scanner = scan.Scanner(proc, gate=True)
    last = scanner.scan((), 0)[2]
    assert last.kernel_thread
    _set_stat_field(proc, 2, 16, "-5")  # reniced by someone else
    reads = 0
    for _ in range(scan.KTHREAD_RECHECK_EVERY):
        now = scanner.scan((), 0)[2]
        reads += now is not last
        last = now
    assert reads == 1 and last.nice == -5
    scanner.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_gated_scan_of_the_real_proc_reads_a_running_process_through_kept_descriptors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that runs at every scan is read again through descriptors kept
    from the scan before: no file of it is opened. Its descriptors are closed
    when it is gone, and the rest by close()."""
    child = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    before = _open_fds()
    try:
        scanner = scan.Scanner(gate=True)
        scanner.scan((), 0), scanner.scan((), 0)
        opened: list[str] = []
        real_open = os.open
        monkeypatch.setattr(
            os,
            "open",
            lambda path, *a, **k: opened.append(os.fsdecode(path)) or real_open(path, *a, **k),
        )
        first = scanner.scan((), 0)[child.pid]
        time.sleep(0.05)
        again = scanner.scan((), 0)[child.pid]
        monkeypatch.undo()
        assert again is not first and again.utime + again.stime >= first.utime + first.stime
        assert not [path for path in opened if path.startswith(f"{child.pid}/")]
        child.kill()
        child.wait()
        assert child.pid not in scanner.scan((), 0)
        scanner.close()
        assert _open_fds() == before
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_repeated_scan_of_the_real_proc_lists_only_the_pids_above_the_last_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between two scans of the live /proc, new processes have PIDs above the
    last one handed out before the first scan's listing: the second lists
    those alone, finds the new process and misses no old one; a process gone
    is dropped. When the PIDs wrapped (the last PID went down), all of /proc
    is listed again."""
    scanner = scan.Scanner(gate=True)
    first = scanner.scan((), 0)
    listed: list[int] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda d: listed.append(len(got := real_listdir(d))) or got)
    child = subprocess.Popen(["sleep", "30"])
    try:
        second = scanner.scan((), 0)
        assert child.pid in second
        assert all(pid in second for pid in first if os.path.exists(f"/proc/{pid}/stat"))
        assert sum(listed) < len(first)  # not /proc again: the new PIDs alone
        child.kill()
        child.wait()
        assert child.pid not in scanner.scan((), 0)
        scanner._since = 1 << 30  # as if the last PID went down: they wrapped
        listed.clear()
        with subprocess.Popen(["sleep", "30"]) as other:
            assert other.pid in scanner.scan((), 0) and sum(listed) > len(first)
            other.kill()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        scanner.close()


def test_a_repeated_scan_keeps_processes_whose_pid_is_above_the_last_one_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a wrap, long-lived processes have PIDs above the last one handed
    out: a scan that lists nothing new (no PID handed out since) keeps them,
    and so does one that lists the new PIDs (the console's process count went
    83, 89, 83 on a host whose PIDs had wrapped)."""
    with subprocess.Popen(["sleep", "30"]) as child:
        scanner = scan.Scanner(gate=True)
        try:
            assert child.pid in scanner.scan((), 0)
            low = [child.pid - 1]  # as if the PIDs wrapped and restarted below it
            monkeypatch.setattr(scanner, "_last_pid", lambda: low[0])
            assert child.pid in scanner.scan((), 0)  # went down: all of /proc listed
            assert child.pid in scanner.scan((), 0)  # none handed out: none listed
            low[0] += 1  # one handed out (below the child): listed from the offset
            assert child.pid in scanner.scan((), 0)
        finally:
            scanner.close()
            child.kill()


def test_a_scan_for_a_view_hiding_kernel_threads_reads_each_once_in_kernel_every(
    proc: Path,
) -> None:
    """kernel=False: a kernel thread seen before is read at one scan in
    KERNEL_EVERY and handed out as it was at the others (most of /proc on a
    quiet host); other processes are read as always; kernel=True reads it."""
    for entry in proc.iterdir():
        if entry.name.isdigit():
            _schedstat(proc, int(entry.name), 1000)
    scanner = scan.Scanner(proc, gate=True)
    first = scanner.scan((), 0)
    assert first[2].kernel_thread and not first[2300].kernel_thread
    read = []
    for runtime in range(2000, 2000 + scan.KERNEL_EVERY):
        for pid in (2, 2300):  # both ran
            _set_stat_field(proc, pid, 11, str(runtime))
            _schedstat(proc, pid, runtime)
        procs = scanner.scan((), 0, kernel=False)
        assert procs[2300].utime == runtime
        read.append(procs[2].utime == runtime)
        assert (2 in scanner.blind) != read[-1]
    assert read.count(True) == 1
    _set_stat_field(proc, 2, 11, "9999")
    _schedstat(proc, 2, 9999)
    assert scanner.scan((), 0)[2].utime == 9999 and not scanner.blind
    scanner.close()


def test_an_unread_kernel_thread_keeps_the_cpu_of_its_last_read_over_its_window(
    proc: Path, host: tuple[Paths, Path]
) -> None:
    """Read once in KERNEL_EVERY refreshes, a kernel thread's CPU% is its time
    since its read before over the seconds since then (not over the last
    interval: a spike), and it keeps that figure while unread, so the host's
    total keeps it too."""
    paths, cgfs = host
    now = [100.0]
    table = ProcessTable(paths, proc, cgfs, clock=lambda: now[0])
    table.refresh()
    ticks = 0
    shown: list[float] = []
    for step in range(1, 2 * scan.KERNEL_EVERY + 1):
        ticks += scan.CLK_TCK // 2  # half a CPU, all the time
        _set_stat_field(proc, 2, 11, str(ticks))
        now[0] = 100.0 + step
        rows = {r.pid: r for r in table.refresh(kernel=False).rows}
        shown.append(rows[2].cpu_percent)
    read_again = shown[scan.KERNEL_EVERY :]  # each a whole window after the first read
    assert all(value == pytest.approx(50.0) for value in read_again)
    assert max(shown) <= 50.0 + 1e-6


def test_a_gated_scan_of_the_real_proc_keeps_and_closes_descriptors() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.3)  # done loading: asleep from now on
        scanner = scan.Scanner(gate=True)
        first = scanner.scan((), 0)
        assert child.pid in first and child.pid in scanner._sched
        before = first[child.pid]
        again = [scanner.scan((), 0)[child.pid] for _ in range(scan.RECHECK_EVERY)]
        assert any(p is before for p in again)  # asleep: not read again every time
        assert all(p.key == before.key for p in again)
        child.kill()
        child.wait()
        assert child.pid not in scanner.scan((), 0) and child.pid not in scanner._sched
        scanner.close()
        assert not scanner._sched
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_observer_lists_guests_again_only_when_their_directories_changed(
    proc: Path, host: tuple[Paths, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.observe import Observer

    snapshot = sys.modules[Observer.__module__]  # the module (its all_guests)
    paths, cgfs = host
    for folder in (paths.config_dir, paths.run_base):  # changed long ago
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder, (1_600_000_000, 1_600_000_000))
    listed: list[int] = []
    real = snapshot.all_guests
    monkeypatch.setattr(snapshot, "all_guests", lambda p: listed.append(1) or real(p))
    observer = snapshot.Observer(paths, proc, cgfs)
    assert [g.name for g in observer.snapshot().guests][1:] == ["db1"]
    observer.snapshot()
    assert len(listed) == 1
    (paths.config_dir / "web.conf").write_text("S_HOSTNAME=web\n")
    assert [g.name for g in observer.snapshot().guests][1:] == ["db1", "web"]
    assert len(listed) == 2
