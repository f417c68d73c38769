"""Many hosts without ssh: hosts.toml, the wire format, the read-only gate, the agent."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.datamodel import Snapshot
from engine.errors import (
    GuestNotFound,
    HostError,
    ProtocolError,
    ReadOnlyError,
    VstuiError,
)
from engine.facade import Engine, tool_operation
from engine.paths import Paths
from engine.remote import hosts, protocol, ssh
from engine.remote.client import AgentClient
from tests.tui.fakes import big_snapshot, small_snapshot, tick
from vstui.cli.common import split_hosts

REPO = Path(__file__).resolve().parents[2]


# -- hosts.toml -------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_hosts_toml_entries_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, """
[hosts.web1]
ssh = "root@web1.example.org"
ssh_options = ["-p", "2222"]
root = "/srv/v"
read_only = true
[hosts.db]
ssh = "db"
""")  # fmt: skip
    found = hosts.load(path)
    assert found["web1"] == hosts.Host("web1", "root@web1.example.org", ("-p", "2222"),
                                       "/srv/v", "vstui", True, str(path))  # fmt: skip
    assert (found["db"].root, found["db"].command, found["db"].read_only) == ("/", "vstui", False)
    assert found["web1"].agent_command() == "vstui agent --root /srv/v --read-only"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[hosts.a]\nssh = "a"\nport = 22\n', "[hosts.a]: unknown key 'port'"),
        ('[hosts.a]\nroot = "/"\n', "ssh is missing"),
        ('[hosts.a]\nssh = "a"\nread_only = "yes"\n', "read_only must be a bool"),
        ('[hosts.a]\nssh = "a"\nssh_options = "-p 22"\n', "ssh_options must be a list"),
        ('[hosts.a]\nssh = "a"\nroot = "srv"\n', "root must be an absolute path"),
        ('[hosts.a]\nssh = "-oProxyCommand=x"\n', "is not an ssh destination"),
        ("[hosts.a\nssh = 1\n", "fix the TOML syntax"),
        ('[servers.a]\nssh = "a"\n', "unknown table 'servers'"),
    ],
)
def test_a_bad_hosts_toml_is_one_line_naming_file_and_key(tmp_path, text, words) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HostError) as err:
        hosts.load(path)
    assert str(path) in err.value.message and words in err.value.message
    assert "\n" not in err.value.message


def test_names_resolve_to_entries_local_or_bare_destinations(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "vstui").mkdir()
    write(tmp_path / "vstui", '[hosts.a]\nssh = "root@10.0.0.1"\n')
    assert hosts.resolve("a").ssh == "root@10.0.0.1"
    assert hosts.resolve("admin@b.example").ssh == "admin@b.example"
    assert hosts.resolve("local").local
    with pytest.raises(HostError, match="unknown host") as err:
        hosts.resolve("-oProxyCommand=sh")
    assert err.value.host == "-oProxyCommand=sh"
    assert [h.name for h in hosts.resolve_all(["a", "b", "a"])] == ["a", "b"]


def test_remote_command_lines_quote_the_root() -> None:
    host = hosts.Host("h", "h", root="/srv/my root", command="/opt/v/bin/vstui")
    assert host.agent_command() == "/opt/v/bin/vstui agent --root '/srv/my root'"
    assert host.vserver_command("web", "enter") == (
        "/opt/v/bin/vserver --root '/srv/my root' web enter")  # fmt: skip
    assert hosts.Host("h", "h", command="sudo vstui").vserver_command("w", "enter") == (
        "sudo vserver --root / w enter")  # fmt: skip


def test_split_hosts_keeps_a_guest_command_s_own_options() -> None:
    assert split_hosts(["--host", "a", "--host=b", "ax"]) == (["a", "b"], ["ax"])
    assert split_hosts(["--host", "a", "web", "exec", "tool", "--host", "x"], stop_at=2) == (
        ["a"], ["web", "exec", "tool", "--host", "x"])  # fmt: skip
    with pytest.raises(VstuiError, match="--host needs"):
        split_hosts(["--host"])


# -- ssh -------------------------------------------------------------------
HOST_KEY_CHANGED = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
The fingerprint for the ED25519 key sent by the remote host is
SHA256:abc.
Add correct host key in /root/.ssh/known_hosts to get rid of this message.
Offending ED25519 key in /root/.ssh/known_hosts:3
Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.
Host key verification failed.
"""


def test_ssh_failures_become_ssh_s_own_line() -> None:
    assert ssh.explain(HOST_KEY_CHANGED) == (
        "Host key for [127.0.0.1]:2222 has changed and you have requested strict checking: "
        "Host key verification failed")  # fmt: skip
    assert ssh.explain("root@h: Permission denied (publickey).\n") == (
        "root@h: Permission denied (publickey).")  # fmt: skip
    assert ssh.explain("ssh: connect to host h port 22: Connection refused\r\n") == (
        "ssh: connect to host h port 22: Connection refused")  # fmt: skip
    assert ssh.explain("\x1b]0;owned\x07odd\n") == "^[]0;owned^Godd"


def test_control_dir_is_private_and_short(monkeypatch) -> None:
    import shutil
    import tempfile

    private = Path(tempfile.mkdtemp(dir="/tmp")) / "c"
    monkeypatch.setenv(ssh.CONTROL_ENV, str(private))
    try:
        assert ssh.control_dir() == str(private)
        assert private.stat().st_mode & 0o777 == 0o700
        private.chmod(0o755)
        with pytest.raises(HostError, match="not a private directory"):
            ssh.control_dir()
    finally:
        shutil.rmtree(private.parent)
    monkeypatch.setenv(ssh.CONTROL_ENV, "/tmp/" + "x" * 60)
    with pytest.raises(HostError, match="too long for a socket path"):
        ssh.control_dir()


def test_ssh_argv_puts_the_user_s_options_first() -> None:
    host = hosts.Host("h", "root@h", ("-o", "ControlPersist=5", "-p", "2222"))
    argv = ssh.command_argv(host, "vstui agent")
    assert argv[:5] == ["ssh", "-o", "ControlPersist=5", "-p", "2222"]
    assert argv[-3:] == ["--", "root@h", "vstui agent"]
    assert any(a.startswith("ControlPath=") and a.endswith("/%C") for a in argv)


# -- the read-only gate for tools --------------------------------------------
@pytest.mark.parametrize(
    ("tool", "args", "op"),
    [
        ("vserver", ["web", "status"], None),
        ("vserver", ["web", "status", "--json"], None),
        ("vserver", ["--list", "--json"], None),
        ("vserver", ["web", "quota"], None),
        ("vserver", ["web", "quota", "2G"], "vserver"),
        ("vserver", ["web", "stop"], "stop"),
        ("vserver", ["web", "exec", "status"], "exec"),
        ("vserver", ["web", "suexec", "nobody", "id"], "exec"),
        ("vserver", ["web", "snapshot", "list"], None),
        ("vserver", ["web", "snapshot", "create"], "vserver"),
        ("vserver", ["web", "frobnicate"], "vserver"),
        ("vserver", ["--onboot", "start"], "vserver"),
        ("vserver", ["--pool", "status"], None),
        ("vps", ["ax"], None),
        ("vserver-stat", [], None),
        ("vtop", ["-b", "-n", "1"], None),
        ("vkill", ["--xid", "web"], "kill"),
    ],
)
def test_tool_commands_are_classified(tool, args, op) -> None:
    assert tool_operation(tool, args)[0] == op


def test_a_tool_cannot_choose_another_root_or_host() -> None:
    with pytest.raises(VstuiError, match="--root cannot be given"):
        tool_operation("vps", ["--root=/", "ax"])
    with pytest.raises(VstuiError, match="--host cannot be given"):
        tool_operation("vserver", ["--host", "x", "web", "stop"])
    # the command run in a guest keeps its own words
    assert tool_operation("vserver", ["web", "exec", "ls", "--root"])[0] == "exec"


def test_read_only_engine_refuses_changing_tool_commands(tmp_path) -> None:
    engine = Engine(Paths.from_root(tmp_path), read_only=True)
    assert engine.tool_argv("vserver", ["web", "status"])[-2:] == ["web", "status"]
    for args in (["web", "stop"], ["web", "exec", "true"], ["web", "quota", "1G"]):
        with pytest.raises(ReadOnlyError):
            engine.tool_argv("vserver", args)
    with pytest.raises(ReadOnlyError):
        engine.tool_argv("vkill", ["1"])
    with pytest.raises(VstuiError, match="not one of the tools"):
        engine.tool_argv("sh", ["-c", "id"])


# -- snapshots on the wire ----------------------------------------------------
def roundtrip(snaps: list[Snapshot], procs: str = "all") -> tuple[list[Snapshot], list[int]]:
    enc = protocol.SnapshotEncoder()
    dec = protocol.SnapshotDecoder(json.loads(json.dumps(protocol.schema())))
    out, sizes = [], []
    for snap in snaps:
        line = protocol.encode(enc.frame(snap, snap.procs if procs == "all" else ()))
        sizes.append(len(line))
        out.append(dec.apply(protocol.decode(line), snap.taken))
    return out, sizes


def same(a: Snapshot, b: Snapshot) -> None:
    assert [dataclasses.replace(g, uptime=None) for g in a.guests] == [
        dataclasses.replace(g, uptime=None) for g in b.guests]  # fmt: skip
    for x, y in zip(a.guests, b.guests, strict=True):
        assert (x.uptime is None) == (y.uptime is None)
        if x.uptime is not None:
            assert abs(x.uptime - y.uptime) < 1.0
    assert sorted(a.procs, key=lambda p: p.key) == sorted(b.procs, key=lambda p: p.key)
    assert (a.ncpu, a.errors) == (b.ncpu, b.errors)


def test_snapshots_arrive_whole_then_as_deltas() -> None:
    first = small_snapshot()
    later = [tick(first, n) for n in range(1, 4)]
    got, sizes = roundtrip([first, *later])
    for want, have in zip([first, *later], got, strict=True):
        same(want, have)
    assert all(s < sizes[0] / 2 for s in sizes[1:]), sizes


def test_an_unchanged_host_costs_a_few_bytes_and_keeps_its_records() -> None:
    snap = small_snapshot()
    moved = dataclasses.replace(snap, wall=snap.wall + 1, taken=snap.taken + 1)
    got, sizes = roundtrip([snap, moved, dataclasses.replace(moved, wall=moved.wall + 1)])
    assert sizes[2] < 120, sizes
    assert got[2].procs is got[1].procs
    assert all(a is b for a, b in zip(got[1].procs, got[2].procs, strict=True))
    running = [g for g in got[2].guests if g.uptime is not None]
    before = {g.name: g.uptime for g in got[1].guests}
    assert running and all(g.uptime == pytest.approx(before[g.name] + 1, abs=1) for g in running)


def test_removed_guests_and_processes_go_away() -> None:
    snap = small_snapshot()
    fewer = dataclasses.replace(snap, guests=snap.guests[:-1], procs=snap.procs[:-2])
    got, _ = roundtrip([snap, fewer])
    same(fewer, got[1])


def test_a_large_host_in_deltas() -> None:
    snaps = [big_snapshot(2000, 20, tick=n) for n in range(3)]
    got, sizes = roundtrip(snaps)
    same(snaps[2], got[2])
    assert sizes[2] < sizes[0]


def test_fields_one_side_lacks_are_defaults_or_a_clear_error() -> None:
    schema = protocol.schema()
    snap = small_snapshot()
    enc = protocol.SnapshotEncoder()
    frame = json.loads(protocol.encode(enc.frame(snap, snap.procs)))
    # an agent with an extra field at the end of ProcRow: ignored here
    theirs = {**schema, "ProcRow": [*schema["ProcRow"], "future"]}
    for row in frame["p"]:
        row.append("x")
    got = protocol.SnapshotDecoder(theirs).apply(frame, 0.0)
    assert len(got.procs) == len(snap.procs)
    older = {**schema, "ProcRow": [f for f in schema["ProcRow"] if f != "pid"]}
    with pytest.raises(ProtocolError, match="lacks 'pid'"):
        protocol.SnapshotDecoder(older)


def test_lost_frames_and_garbage_are_protocol_errors() -> None:
    snap = small_snapshot()
    enc = protocol.SnapshotEncoder()
    dec = protocol.SnapshotDecoder(protocol.schema())
    dec.apply(enc.frame(snap, ()), 0)
    enc.frame(snap, ())
    with pytest.raises(ProtocolError, match="frames were lost"):
        dec.apply(enc.frame(snap, ()), 0)
    with pytest.raises(ProtocolError, match="not a protocol message"):
        protocol.decode(b"Welcome!\n")
    with pytest.raises(ProtocolError, match="bad snapshot frame"):
        protocol.SnapshotDecoder(protocol.schema()).apply({"s": 1, "full": 1, "w": "x"}, 0)


def test_errors_cross_as_the_same_class_marked_with_the_host() -> None:
    wire = protocol.error_to_wire(GuestNotFound("no such guest", "web"))
    exc = protocol.error_from_wire(json.loads(json.dumps(wire)), "b")
    assert type(exc) is GuestNotFound
    assert (exc.message, exc.guest, exc.host) == ("no such guest", "web", "b")
    assert type(protocol.error_from_wire({"type": "os.system", "message": "x"}, "b")) is (
        VstuiError)  # fmt: skip


def test_bytes_travel_exactly() -> None:
    for data in (bytes(range(256)) + "é".encode(), "text é\n".encode()):
        line = protocol.encode(protocol.pack(data))
        assert line.isascii()
        assert protocol.unpack(protocol.decode(line)) == data
    assert "data" in protocol.pack(b"plain\n") and "b64" in protocol.pack(b"\xff\x00")


# -- a real agent, locally (no ssh) -------------------------------------------
@pytest.fixture
def local_client(tmp_path) -> AgentClient:
    client = AgentClient(hosts.Host("local", None, root=str(tmp_path), read_only=True))
    client.connect()
    yield client
    client.close()


def test_local_agent_answers_and_refuses_changes_when_read_only(local_client) -> None:
    assert local_client.hello["protocol"] == protocol.PROTOCOL
    assert local_client.hello["host"]["read_only"] is True
    assert local_client.call("list_guests") == []
    with pytest.raises(ReadOnlyError, match="read-only") as err:
        local_client.call("stop", name="web")
    assert err.value.host == "local"
    with pytest.raises(VstuiError, match="unknown operation 'frob'"):
        local_client.call("frob")
    with pytest.raises(GuestNotFound):
        local_client.call("config", name="nope")
    assert local_client.ping() > 0


def test_local_agent_streams_a_tool_and_its_status(local_client) -> None:
    out: list[tuple[int, bytes]] = []
    status = local_client.stream("tool", {"tool": "vserver", "args": ["nope", "status"]},
                                 lambda fd, data: out.append((fd, data)))  # fmt: skip
    assert status != 0
    assert b"nope" in b"".join(data for _fd, data in out)


def test_local_agent_watch_sends_snapshots(local_client) -> None:
    import threading

    got = threading.Event()
    local_client.on_snapshot = lambda snap: got.set()
    local_client.watch(0.2, "none")
    assert got.wait(20)
    assert local_client.snapshot is not None and local_client.snapshot.guests[0].xid == 0
    assert local_client.snapshot.procs == ()


def test_the_agent_keeps_its_protocol_clean_and_exits_at_eof(tmp_path) -> None:
    """A print or a child writing to fd 1 cannot corrupt the stream; EOF ends it."""
    code = (
        "import os, sys\n"
        "from engine.remote import agent\n"
        "inp, out = agent.protect_stdio()\n"
        "print('stray print'); os.system('echo stray child')\n"
        'out.write(b\'{"t":"only"}\\n\'); sys.exit(0)\n'
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.stdout == b'{"t":"only"}\n'
    assert b"stray print" in proc.stderr and b"stray child" in proc.stderr
    agent = subprocess.Popen([sys.executable, "-m", "vstui.app.main", "--root", str(tmp_path),
                              "agent", "--read-only"], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)  # fmt: skip
    out, _ = agent.communicate(b"not json\n", timeout=30)
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[0]["t"] == "hello" and lines[1]["t"] == "err"
    assert agent.returncode == 0


# -- the fleet: hosts kept connected in the background ------------------------
def wait_for(pred, timeout: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_fleet_marks_a_lost_host_stale_and_reconnects(tmp_path, monkeypatch) -> None:
    from engine.remote import fleet as fleet_mod

    monkeypatch.setattr(fleet_mod, "BACKOFF_FIRST", 0.2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    two = [hosts.Host(n, None, root=str(tmp_path / n)) for n in ("a", "b")]
    fleet = fleet_mod.Fleet(two, interval=0.5)
    try:
        fleet.start()
        assert wait_for(lambda: all(v.state == "up" and v.snapshot for v in fleet.views()))
        view = fleet.views()[0]
        assert view.facts["root"] == str(tmp_path / "a") and view.rtt is not None
        first = fleet.client("a")
        first._proc.kill()  # the connection drops, as when sshd dies
        assert wait_for(lambda: fleet.views()[0].state == "stale", 10)
        stale = fleet.views()[0]
        assert stale.snapshot is not None and stale.error and stale.age is not None
        assert fleet.views()[1].state == "up"  # the other host never noticed
        assert wait_for(lambda: fleet.views()[0].state == "up"
                        and fleet._links["a"].client not in (None, first))  # fmt: skip
    finally:
        fleet.close()
    assert all(link.client is None or not link.client.alive for link in fleet._links.values())


def test_fleet_reports_a_host_it_never_reached(tmp_path) -> None:
    from engine.remote.fleet import Fleet

    fleet = Fleet([hosts.Host("x", None, root=str(tmp_path), command="x")], interval=0.5)
    fleet._links["x"].host = hosts.Host("x", "bad", ssh_options=("-o", "ProxyCommand=false"))
    try:
        fleet.start()
        assert wait_for(lambda: fleet.views()[0].state == "down" and fleet.views()[0].error)
        with pytest.raises(HostError, match="not connected"):
            fleet.client("x")
    finally:
        fleet.close()


def test_log_since_follows_a_log_by_offset(tmp_path) -> None:
    engine = Engine(Paths.from_root(tmp_path), read_only=True)
    log = engine.paths.log_file("web")
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\n")
    offset, lines, reset = engine.log_since("web", 0)
    assert (lines, reset) == (["one", "two"], True)
    with open(log, "a") as f:
        f.write("three\n")
    offset, lines, reset = engine.log_since("web", offset)
    assert (lines, reset) == (["three"], False)
    assert engine.log_since("web", offset) == (offset, [], False)
    log.write_text("new\n")  # rotated: shorter than the offset
    assert engine.log_since("web", offset)[1:] == (["new"], True)


def test_a_remote_config_is_parsed_here(tmp_path) -> None:
    conf = tmp_path / "etc" / "vserver" / "web.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# mine\nS_HOSTNAME=web.example\nV_MEMORY=256M\n")
    client = AgentClient(hosts.Host("local", None, root=str(tmp_path), read_only=True))
    client.connect()
    try:
        cfg = client.load_config("web")
        assert (cfg.hostname, cfg.memory, str(cfg.path)) == ("web.example", 256 << 20, str(conf))
        assert client.call("log_since", name="web", offset=0) == [0, [], False]
    finally:
        client.close()


# -- migrate's checks ----------------------------------------------------------
def test_migrate_options() -> None:
    from vstui.cli.vserver_migrate import parse

    assert parse(["b", "--as", "web2", "--keep", "--xid=40100", "--ip", "198.18.0.9/24"]) == {
        "host": "b", "new_name": "web2", "keep": True, "xid": 40100,
        "addresses": ["198.18.0.9/24"]}  # fmt: skip
    bad_args = [(["b", "--xid", "x"], "not a context id"), ([], "usage"),
                (["b", "c"], "unexpected 'c'"), (["b", "--as"], "needs a value")]  # fmt: skip
    for bad, words in bad_args:
        with pytest.raises(VstuiError, match=words):
            parse(bad)


def test_target_problems_name_what_is_taken(tmp_path) -> None:
    from engine.config import write_new_config
    from engine.remote.migrate import target_check, target_problems
    from engine.runtime import xid as xids

    paths = Paths.from_root(tmp_path)
    write_new_config(paths, "db", {"S_CONTEXT": "40123", "IPROOT": "198.18.0.7/24"})
    write_new_config(paths, "web", {})
    xids.assign(paths, "web", None)  # 40000, dynamic
    assert target_problems(paths, "new", 40200, ["198.18.0.8"]) == []
    assert target_check(paths, "new", None, []) == {"problems": [], "btrfs": False}
    problems = target_problems(paths, "web", 40123, ["198.18.0.7"])
    assert problems == [
        "a guest named web exists there (choose another name with --as)",
        "context id 40123 is taken there by db (choose one with --xid)",
        "address 198.18.0.7 is used there by db (choose one with --ip)",
    ]
    assert "taken there by web" in target_problems(paths, "new", 40000, [])[0]
    xids.claim(paths, "new", 40200)
    with pytest.raises(VstuiError, match="taken here by guest new"):
        xids.claim(paths, "other", 40200)


def test_another_host_s_text_arrives_made_visible() -> None:
    """A hostile (or older) agent's snapshot cannot write control characters to
    the console's terminal: every text field is made visible as it is decoded."""
    snap = small_snapshot()
    evil = "\x1b]0;PWNED\x07\x9b2J"
    proc = dataclasses.replace(snap.procs[0], cmdline=evil, comm=evil, user=evil)
    guest = dataclasses.replace(snap.guests[1], flags=(evil,), addresses=(evil,))
    bad = dataclasses.replace(snap, procs=(proc,), guests=(snap.guests[0], guest),
                              errors=(evil,))  # fmt: skip
    got, _ = roundtrip([bad])
    row = got[0].procs[0]
    shown = [row.cmdline, row.comm, row.user, *got[0].guests[1].flags,
             *got[0].guests[1].addresses, *got[0].errors]  # fmt: skip
    assert all(x == "^[]0;PWNED^G\\x9b2J" for x in shown), shown
