"""Issue 19, terminal safety: a process's argv and comm never write to the
admin's terminal, whatever they hold; one process is one line.

Real processes on this host (no guest needed): one with every control
character in its argv, several whose comm carries them (set with prctl).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile_text import COMMS, NOT_UTF8, raw_controls, spawn, stop


@pytest.fixture(scope="module")
def marker() -> Iterator[str]:
    """Processes with hostile argv and comm; their argv carries the marker."""
    mark = f"HOSTILE{uuid.uuid4().hex[:8]}"
    procs = spawn(mark)
    try:
        yield mark
    finally:
        stop(procs)


def run(*argv: str) -> bytes:
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    "args",
    [["ax"], ["aux"], ["-ef"], ["axf"], ["-eo", "pid,ctx,user,comm,args"], ["-e", "-o", "comm"],
     ["axww"]],
)  # fmt: skip
def test_vps_shows_controls_visibly_one_process_per_line(marker: str, args: list[str]) -> None:
    out = run("vstui.cli.vps", *args)
    assert raw_controls(out) == []
    if args[-1] not in ("comm",):
        lines = [line for line in out.splitlines() if marker.encode() in line]
        assert len(lines) == len(COMMS), out[-2000:]
        assert all(b"^[]0;PWNED^G" in line for line in lines)


def test_vps_comm_is_visible(marker: str) -> None:
    out = run("vstui.cli.vps", "-eo", "comm")
    assert raw_controls(out) == []
    assert b"^[]0;PWNED^G" in out


def test_vps_json_escapes_everything(marker: str) -> None:
    out = run("vstui.cli.vps", "ax", "--json")
    assert raw_controls(out) == []
    rows = [r for r in json.loads(out) if marker in r["cmdline"]]
    assert len(rows) == len(COMMS)


def test_vtop_batch(marker: str) -> None:
    out = run("vstui.cli.vtop", "-b", "-n", "1", "-d", "0.5")
    assert raw_controls(out) == []


@pytest.mark.parametrize("tool", ["vserver_stat"])
def test_other_text_tools(marker: str, tool: str) -> None:
    assert raw_controls(run(f"vstui.cli.{tool}")) == []


def test_the_supervisors_multi_line_argv_is_one_line() -> None:
    argv = [sys.executable, "-c", "import time\n\n# a second line\ntime.sleep(1000)"]
    p = subprocess.Popen(argv)
    try:
        out = run("vstui.cli.vps", "axww")
        lines = [line for line in out.splitlines() if line.split()[:1] == [str(p.pid).encode()]]
        assert len(lines) == 1 and b"a second line" in lines[0], out[-3000:]
    finally:
        p.kill()
        p.wait()


def test_a_remote_agents_records_are_made_visible_too() -> None:
    """A hostile agent (or a remote engine of an older version) sends raw
    control characters in a snapshot: the console still shows none."""
    from engine.datamodel import ProcRow
    from engine.remote import protocol

    row = ProcRow(pid=5, ppid=1, starttime=1, xid=40001, guest="web", nspid=1, uid=0,
                  user="root\x1b[2J", state="S", nice=0, threads=1, vsz=0, rss=0, utime=0,
                  stime=0, cutime=0, cstime=0, cpu_percent=0.0, tty="?",
                  comm="\x1b]0;PWNED\x07", cmdline="sleep \x9b2J\nx")  # fmt: skip
    reader = protocol.RecordReader(protocol.schema())
    got = reader.read(ProcRow, protocol.to_wire(row))
    assert (got.comm, got.cmdline, got.user) == ("^[]0;PWNED^G", "sleep \\x9b2J^Jx", "root^[[2J")


def test_readers_of_proc_take_a_comm_that_is_not_utf8(marker: str) -> None:
    """A comm is any 15 bytes (prctl PR_SET_NAME); /proc/PID/status and comm
    carry it raw. A text-mode read failed on one that is not UTF-8: the
    audit's bounding-set check and ``vserver stop``'s list of survivors."""
    from engine import caps
    from engine.audit.running import read_capbnd
    from engine.runtime.stopping import _described

    pid = next(p for p in _pids_of(marker) if _comm(p) == NOT_UTF8)
    assert read_capbnd(pid) == caps.from_mask(caps.read_status_mask(pid, "CapBnd"))
    assert _described(pid) == f"{pid} (\\xff\\xfe\\x9b2J\\xe2\\x82)"


def test_readers_of_proc_take_names_that_are_not_utf8(tmp_path: Path) -> None:
    """Mount points, cgroup and link names are bytes too, chosen by a guest's
    root for its own (its mounts, delegated cgroups, links): each reader keeps
    them (os.fsdecode's surrogates), so a name still works as a path."""
    from engine import procfs
    from engine.audit.facts import netns_addresses
    from engine.net.counters import link_rows, read_net_dev

    name = NOT_UTF8.decode("utf-8", "surrogateescape")
    (tmp_path / "7" / "net").mkdir(parents=True)
    (tmp_path / "7" / "cgroup").write_bytes(b"0::/vstui-x/" + NOT_UTF8 + b"\n")
    assert procfs.cgroups(7, str(tmp_path)) == {"": "/vstui-x/" + name}
    info = b"36 35 98:0 / /mnt/" + NOT_UTF8 + b" rw,noatime master:1 - ext3 /dev/root rw\n"
    (tmp_path / "mountinfo").write_bytes(info)
    assert os.fsencode(procfs.mountinfo(str(tmp_path / "mountinfo"))[0].mount_point) == (
        b"/mnt/" + NOT_UTF8
    )
    head = b"Inter-|\n face |\n"
    row = b" 1 2 0 3 0 0 0 0 4 5 0 6 0 0 0 0\n"
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "dev").write_bytes(head + NOT_UTF8 + b":" + row + b"  veth0:" + row)
    assert dict(link_rows(read_net_dev(str(tmp_path)))).keys() == {name, "veth0"}
    (tmp_path / "7" / "net" / "fib_trie").write_bytes(b"")
    v6 = b"20010db8000000000000000000000001 03 40 00 80 " + NOT_UTF8 + b"\n"
    (tmp_path / "7" / "net" / "if_inet6").write_bytes(v6)
    assert netns_addresses(7, str(tmp_path)) == {"2001:db8::1"}


def _pids_of(mark: str) -> list[int]:
    return [
        int(p) for p in os.listdir("/proc")
        if p.isdigit() and mark.encode() in _read(f"/proc/{p}/cmdline")
    ]  # fmt: skip


def _comm(pid: int) -> bytes:
    return _read(f"/proc/{pid}/comm").rstrip(b"\n")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_a_socket_owner_named_in_bytes_that_are_not_utf8_shows_them() -> None:
    """The audit's owners of listening sockets read comm through procfs.read_text
    like every other reader: its bytes show as \\xNN, not as U+FFFD."""
    from engine.net.sockets import socket_owners

    holder = (
        "import ctypes, socket, sys, time\n"
        "ctypes.CDLL(None).prctl(15, sys.argv[1].encode('utf-8', 'surrogateescape'), 0, 0, 0)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print('ready', flush=True); time.sleep(1000)\n"
    )  # fmt: skip
    argv = [sys.executable, "-c", holder, NOT_UTF8]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        names = [comm for pid, comm in socket_owners().values() if pid == child.pid]
        assert names == ["\\xff\\xfe\\x9b2J\\xe2\\x82"]
    finally:
        child.kill()
        child.wait()
