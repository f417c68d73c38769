"""Many hosts over a real sshd on 127.0.0.1: two roots as hosts ``a`` and ``b``
(the ``fleet`` and ``guests`` fixtures: tests/integration/conftest.py). The
tools are the installed console scripts, run the way an administrator would,
with XDG_CONFIG_HOME pointing at the test's hosts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.paths import Paths
from tests.integration.remote_helpers import (
    GUEST_A,
    GUEST_B,
    SLEEP,
    build_and_start,
    one_line,
    stop_and_delete,
    tool,
)
from tests.sshd import VENV_BIN, TestSshd, free_port, have_sshd

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not have_sshd(), reason="openssh-server is not installed (./setup.sh)"),
]


# -- the classic tools merge hosts ----------------------------------------
def test_vserver_stat_merges_hosts_with_a_host_column(guests: TestSshd) -> None:
    out = tool(guests, "vserver-stat", "--host", "a", "--host", "b")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["HOST", "CTX"]
    rows = {(x.split()[0], x.split()[-1]) for x in lines[1:]}
    assert ("a", GUEST_A) in rows and ("b", GUEST_B) in rows
    assert ("a", GUEST_B) not in rows and ("b", GUEST_A) not in rows
    data = json.loads(tool(guests, "vserver-stat", "--host", "a", "--host", "b", "--json").stdout)
    assert {(d["host"], d["guest"]) for d in data} >= {("a", GUEST_A), ("b", GUEST_B)}


def test_vps_merges_hosts(guests: TestSshd) -> None:
    out = tool(guests, "vps", "--host", "a", "--host", "b", "ax")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["HOST", "PID", "CONTEXT"]
    on_a = {x.split()[3] for x in lines if x.startswith("a ") and x.endswith(SLEEP[GUEST_A])}
    on_b = {x.split()[3] for x in lines if x.startswith("b ") and x.endswith(SLEEP[GUEST_B])}
    assert (on_a, on_b) == ({GUEST_A}, {GUEST_B})
    rows = json.loads(tool(guests, "vps", "--host", "b", "ax", "--json").stdout)
    assert {r["host"] for r in rows} == {"b"}
    assert any(r["guest"] == GUEST_B for r in rows)


def test_remote_exec_streams_output_and_returns_the_exit_status(guests: TestSshd) -> None:
    out = tool(guests, "vserver", "--host", "a", GUEST_A, "exec",
               "/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 7")  # fmt: skip
    assert out.returncode == 7, out.stderr
    assert out.stdout == "to-out\n" and out.stderr == "to-err\n"
    piped = tool(guests, "vserver", "--host", "b", GUEST_B, "exec", "cat", stdin="piped\n")
    assert (piped.returncode, piped.stdout) == (0, "piped\n")
    hostname = tool(guests, "vserver", "--host", "b", GUEST_B, "exec", "hostname")
    assert hostname.stdout.strip() == GUEST_B
    status = tool(guests, "vserver", "--host", "a", GUEST_A, "status")
    assert status.returncode == 0 and "running" in status.stdout


def test_read_only_host_refuses_a_stop_and_the_guest_keeps_running(
    guests: TestSshd, vroot: Paths
) -> None:
    from engine import runtime

    out = tool(guests, "vserver", "--host", "ro", GUEST_A, "stop")
    assert out.returncode == 1
    assert "read-only" in one_line(out.stderr)
    assert runtime.is_running(vroot, GUEST_A)
    killed = tool(guests, "vkill", "--host", "ro", "--xid", GUEST_A)
    assert killed.returncode == 1 and "read-only" in killed.stderr
    assert runtime.is_running(vroot, GUEST_A)
    # reading still works there
    assert tool(guests, "vserver", "--host", "ro", GUEST_A, "status").returncode == 0


def test_a_key_forced_to_the_read_only_agent_refuses_whatever_the_console_says(
    guests: TestSshd, vroot: Paths
) -> None:
    """authorized_keys command="vstui agent --read-only": the agent enforces it,
    though hosts.toml (the client's own file) says nothing of read-only."""
    from engine import runtime

    key = (guests.dir / "client_key.pub").read_text()
    forced = f"{VENV_BIN / 'vstui'} --root {vroot.root} agent --read-only"
    guests.exit_masters()
    guests.authorize(f'command="{forced}",restrict {key}')
    out = tool(guests, "vserver", "--host", "a", GUEST_A, "stop")
    assert out.returncode == 1 and "read-only" in one_line(out.stderr)
    assert runtime.is_running(vroot, GUEST_A)
    assert tool(guests, "vserver-stat", "--host", "a").returncode == 0


# -- faults: one line each, naming the host --------------------------------
def fake_agent(fleet: TestSshd, name: str, body: str) -> str:
    """A script standing in for the remote vstui."""
    path = fleet.dir / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def test_faults_are_one_line_errors_naming_the_host(fleet: TestSshd, vroot: Paths) -> None:
    wrong_key = fleet.dir / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)],
                   check=True)  # fmt: skip
    changed_known = fleet.dir / "changed_known_hosts"
    pub = (wrong_key.with_suffix(".pub")).read_text().split()
    changed_known.write_text(f"[127.0.0.1]:{fleet.port} {pub[0]} {pub[1]}\n")
    stranger = fleet.dir / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)  # fmt: skip
    opts = ["-F", str(fleet.config)]
    stranger_config = fleet.dir / "stranger_config"
    stranger_config.write_text(fleet.config.read_text().replace(
        str(fleet.dir / "client_key"), str(stranger)))  # fmt: skip
    root = str(vroot.root)
    fleet.write_hosts({
        "down": {"root": root, "ssh_options": [*opts, "-p", str(free_port())]},
        "keychanged": {"root": root,
                       "ssh_options": [*opts, "-o", f"UserKnownHostsFile={changed_known}"]},
        "noauth": {"root": root, "ssh_options": ["-F", str(stranger_config)]},
        "missing": {"root": root, "command": "/nonexistent/vstui"},
        "old": {"root": root, "command": fake_agent(fleet, "old", """
            import sys
            print("usage: vstui [--root DIR]", file=sys.stderr)
            sys.exit(2)
            """)},
        "future": {"root": root, "command": fake_agent(fleet, "future", """
            import json
            print(json.dumps({"t": "hello", "protocol": 99, "vstui": "9.0"}), flush=True)
            """)},
        "garbage": {"root": root, "command": fake_agent(fleet, "garbage", """
            print("Welcome to the machine!", flush=True)
            """)},
    })  # fmt: skip
    expect = {
        "down": "Connection refused",
        "keychanged": "has changed",
        "noauth": "Permission denied",
        "missing": "`/nonexistent/vstui` cannot run",
        "old": "did not start the agent (exit 2",
        "future": "speaks agent protocol 99, this one 1",
        "garbage": "'Welcome to the machine!' instead of the agent's hello",
        "bad name!": "unknown host",
    }
    for host, words in expect.items():
        fleet.exit_masters()  # hosts of one destination share a master connection
        out = tool(fleet, "vserver-stat", "--host", host)
        assert out.returncode == 1, (host, out)
        line = one_line(out.stderr)
        assert line.startswith(f"vserver-stat: host '{host}': "), line
        assert words in line, (host, line)
    # one broken host does not hide the good one
    fleet.write_hosts({"a": {"root": root}, "down": {"root": root, "ssh_options": [
        *opts, "-p", str(free_port())]}})  # fmt: skip
    out = tool(fleet, "vserver-stat", "--host", "a", "--host", "down")
    assert out.returncode == 1 and "Connection refused" in one_line(out.stderr)
    assert out.stdout.splitlines()[1].startswith("a ")


def test_unknown_bare_name_says_ssh_could_not_resolve_it(fleet: TestSshd) -> None:
    # in a network namespace of its own (loopback only): no lookup leaves the machine
    out = subprocess.run(["unshare", "-n", str(VENV_BIN / "vserver"), "--host", "nosuchhost",
                          "--list"], env=fleet.env(), capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    line = one_line(out.stderr)
    assert out.returncode == 1
    assert "host 'nosuchhost'" in line and "Could not resolve hostname nosuchhost" in line
    assert "no [hosts.nosuchhost]" in line


def test_a_connection_dropped_mid_action_reports_the_outcome_as_unknown(
    fleet: TestSshd, vroot: Paths
) -> None:
    from engine.errors import ConnectionLost
    from engine.remote.client import AgentClient
    from engine.remote.hosts import resolve

    dropper = fake_agent(
        fleet,
        "dropper",
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from engine.facade import Engine
        from engine.paths import Paths
        from engine.remote import agent, protocol
        engine = Engine(Paths.from_root({str(vroot.root)!r}))
        os.write(1, protocol.encode(agent.hello(engine)))
        sys.stdin.readline()  # the request arrives; the connection drops
        """,
    )
    fleet.write_hosts({"d": {"root": str(vroot.root), "command": dropper}})
    os.environ["XDG_CONFIG_HOME"] = fleet.env()["XDG_CONFIG_HOME"]
    os.environ["VSTUI_SSH_DIR"] = str(fleet.control)
    try:
        client = AgentClient(resolve("d"))
        client.connect()
        with pytest.raises(ConnectionLost, match="whether it happened is unknown"):
            client.call("stop", name="web")
        client.close()
    finally:
        del os.environ["XDG_CONFIG_HOME"], os.environ["VSTUI_SSH_DIR"]


def test_the_agent_exits_when_its_connection_goes(fleet: TestSshd, vroot: Paths) -> None:
    from tests.sshd import children

    proc = subprocess.Popen([*fleet.ssh_argv(), f"{VENV_BIN / 'vstui'} --root {vroot.root} "
                             "agent"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=fleet.env())  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    hello = json.loads(proc.stdout.readline())
    assert hello["t"] == "hello" and hello["protocol"] == 1
    assert hello["host"]["root"] == str(vroot.root)
    agents = [p for p in children(fleet.proc.pid) if _is_agent(p)]  # type: ignore[union-attr]
    assert agents
    proc.stdin.close()
    assert proc.wait(30) == 0
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") and _is_agent(p) for p in agents):
        assert time.monotonic() < deadline, "the agent outlived its stdin"
        time.sleep(0.05)


def _is_agent(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"agent" in f.read()
    except OSError:
        return False


# -- migrate -----------------------------------------------------------------
def test_migrate_moves_a_running_guest_with_its_files(
    fleet: TestSshd, vroot: Paths, vroot2: Paths
) -> None:
    from engine import config, runtime

    build_and_start(vroot, GUEST_A)
    moved = False
    try:
        (vroot.guest_root(GUEST_A) / "root" / "mine.txt").write_text("kept\n")
        xid = runtime.xid_of(vroot, GUEST_A)
        out = tool(fleet, "vserver", "--root", str(vroot.root), GUEST_A, "migrate", "b")
        assert out.returncode == 0, out.stderr
        moved = True
        assert runtime.is_running(vroot2, GUEST_A)
        assert runtime.xid_of(vroot2, GUEST_A) == xid
        assert GUEST_A not in config.list_guests(vroot)
        assert not vroot.guest_root(GUEST_A).exists()
        seen = tool(fleet, "vserver", "--host", "b", GUEST_A, "exec", "cat", "/root/mine.txt")
        assert (seen.returncode, seen.stdout) == (0, "kept\n"), seen.stderr
    finally:
        fleet.exit_masters()
        stop_and_delete(vroot2 if moved else vroot, GUEST_A)


def test_migrate_refusals_leave_both_hosts_as_they_were(
    fleet: TestSshd, vroot: Paths, vroot2: Paths
) -> None:
    from engine import config, runtime

    build_and_start(vroot, GUEST_A)
    try:
        config.write_new_config(vroot2, GUEST_A, {"S_CONTEXT": str(runtime.xid_of(vroot, GUEST_A)),
                                                  "IPROOT": "198.18.0.77/24"})  # fmt: skip
        before = config.update_config(vroot, GUEST_A, {"IPROOT": "198.18.0.77/24"})
        runs = {
            "b": ("exists there", "is taken there", "is used there"),
            "ro": ("read-only",),
        }
        for host, words in runs.items():
            out = tool(fleet, "vserver", "--root", str(vroot.root), GUEST_A, "migrate", host)
            line = one_line(out.stderr)
            assert out.returncode == 1 and all(w in line for w in words), line
            assert runtime.is_running(vroot, GUEST_A)
        assert config.load_guest(vroot, GUEST_A) == before
        assert not vroot2.guest_root(GUEST_A).exists()  # the other's config only, untouched
    finally:
        fleet.exit_masters()
        stop_and_delete(vroot, GUEST_A)
        config_file = vroot2.config_file(GUEST_A)
        config_file.unlink(missing_ok=True)


def test_migrate_cut_off_midway_restarts_the_source_and_leaves_the_target_clean(
    fleet: TestSshd, vroot: Paths, vroot2: Paths
) -> None:
    from engine import config, runtime

    build_and_start(vroot, GUEST_A)
    try:
        with open(vroot.guest_root(GUEST_A) / "root" / "big", "wb") as f:
            f.write(os.urandom(256 << 20))  # time to cut the connection while it travels
        proc = subprocess.Popen([str(VENV_BIN / "vserver"), "--root", str(vroot.root), GUEST_A,
                                 "migrate", "b"], env=fleet.env(), stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        assert proc.stderr is not None
        for line in proc.stderr:
            if "sending" in line:
                break
        time.sleep(0.3)
        fleet.drop()  # the connection, mid-transfer (the agent there sees it end)
        rest = proc.stderr.read()
        assert proc.wait(120) == 1, rest
        last = rest.strip().splitlines()[-1]
        assert last.startswith("vserver: host 'b': ra: ") and "nothing was committed" in last
        assert runtime.is_running(vroot, GUEST_A)
        assert (vroot.guest_root(GUEST_A) / "root" / "big").stat().st_size == 256 << 20
        deadline = time.monotonic() + 30  # the target's agent saw the end and undid the import
        while vroot2.config_file(GUEST_A).exists() or vroot2.guest_root(GUEST_A).exists():
            assert time.monotonic() < deadline, "the target kept a half-received guest"
            time.sleep(0.1)
        assert GUEST_A not in config.list_guests(vroot2)
    finally:
        stop_and_delete(vroot, GUEST_A)


def test_migrate_between_btrfs_pools_uses_btrfs_send(
    fleet: TestSshd, vroot: Paths, vroot2: Paths
) -> None:
    from engine import runtime
    from engine.rootfs import btrfs
    from tests.integration.storage_helpers import ok, pool, tree, vserver

    with pool(vroot), pool(vroot2):
        init = f"V_INIT=/bin/sh -c '{SLEEP[GUEST_A]} & wait'"
        ok(vserver(vroot, GUEST_A, "build", "--set", "V_DISK_BACKEND=btrfs", "--set",
                   "V_DISK=64M", "--set", init))  # fmt: skip
        (tree(vroot, GUEST_A) / "root" / "mine.txt").write_text("on btrfs\n")
        ok(vserver(vroot, GUEST_A, "start"))
        out = tool(fleet, "vserver", "--root", str(vroot.root), GUEST_A, "migrate", "b")
        assert out.returncode == 0, out.stderr
        assert "(btrfs send)" in out.stderr
        assert runtime.is_running(vroot2, GUEST_A)
        moved = vroot2.pool_dir / "guests" / GUEST_A
        assert btrfs.is_subvolume(moved) and not btrfs.readonly(moved)
        assert (moved / "root" / "mine.txt").read_text() == "on btrfs\n"
        assert btrfs.qgroup(moved).limit == 64 << 20  # type: ignore[union-attr]
        assert not (vroot.pool_dir / "guests" / GUEST_A).exists()
        assert not [p for p in (vroot2.pool_dir / "guests").iterdir() if p.name.startswith(".")]
        fleet.exit_masters()
