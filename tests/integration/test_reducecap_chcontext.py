"""reducecap and chcontext on the real kernel: bounding sets, namespaces, names."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from engine import _libc, caps
from engine.paths import Paths
from engine.runtime import state
from vstui.cli.chcontext import FIRST_DYNAMIC_XID, guest_by_xid

pytestmark = pytest.mark.root


def tool(name: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"vstui.cli.{name}", *args],
        capture_output=True, text=True, timeout=60, **kw,
    )  # fmt: skip


def status_field(text: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(key))


def own_mask() -> int:
    return caps.read_status_mask("self", "CapBnd")


def test_reducecap_show_prints_the_real_set() -> None:
    done = tool("reducecap", "--show")
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words == [f"CAP_{n}" for n in sorted(caps.from_mask(own_mask()), key=caps.number)]


def test_reducecap_drops_chown_and_clears_inheritable() -> None:
    done = tool("reducecap", "--cap", "!CAP_CHOWN", "--", "cat", "/proc/self/status")
    assert done.returncode == 0, done.stderr
    bounding = int(status_field(done.stdout, "CapBnd"), 16)
    expected = caps.to_mask(caps.DEFAULT_GUEST_CAPS - {"CHOWN"}) & own_mask()
    assert bounding == expected
    assert not bounding & 1 << caps.number("CHOWN")
    assert int(status_field(done.stdout, "CapInh"), 16) == 0
    assert int(status_field(done.stdout, "CapAmb"), 16) == 0
    # root's exec gets exactly the bounding set
    assert int(status_field(done.stdout, "CapEff"), 16) == expected


def test_reducecap_adds_and_shows_through_itself() -> None:
    done = tool("reducecap", "--cap", "NET_ADMIN", sys.executable, "-m",
                "vstui.cli.reducecap", "--show")  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = set(done.stdout.split())
    assert "CAP_NET_ADMIN" in shown and "CAP_SYS_ADMIN" not in shown
    assert shown == {f"CAP_{n}" for n in (caps.DEFAULT_GUEST_CAPS | {"NET_ADMIN"})
                     & caps.from_mask(own_mask())}  # fmt: skip


def test_reducecap_list_marks_the_guest_set() -> None:
    done = tool("reducecap", "--list")
    assert done.returncode == 0
    rows = [line.split(None, 3) for line in done.stdout.splitlines()[1:]]
    assert len(rows) == caps.last_cap() + 1
    kept = {name[4:] for _, name, guest, _ in rows if guest == "yes"}
    assert kept == caps.DEFAULT_GUEST_CAPS
    assert rows[0][:2] == ["0", "CAP_CHOWN"]


def test_reducecap_errors_are_one_line() -> None:
    done = tool("reducecap", "--cap", "FOO", "true")
    assert done.returncode == 1
    assert (
        done.stderr == "reducecap: unknown capability 'FOO'; see `reducecap --list` for the names\n"
    )
    done = tool("reducecap", "no-such-command-here")
    assert done.returncode == 127
    assert "no-such-command-here: command not found" in done.stderr
    # root without CAP_SETPCAP: exec gives root exactly the bounding set
    weak = tool("reducecap", "true", preexec_fn=lambda: _libc.capbset_drop(caps.number("SETPCAP")))
    assert weak.returncode == 1
    assert weak.stderr == (
        "reducecap: lowering the capability bounding set needs CAP_SETPCAP; run it as root\n"
    )


INSIDE = "echo $$; hostname; ls /proc | grep -c '^[0-9]'; grep CapBnd /proc/self/status"


def test_chcontext_new_context(vroot: Paths) -> None:
    host_name = socket.gethostname()
    done = tool("chcontext", "--root", str(vroot.root), "--hostname", "ctx-test",
                "--cap", "!CHOWN", "sh", "-c", INSIDE)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Host name is now ctx-test"
    assert lines[1] == f"New security context is {FIRST_DYNAMIC_XID}"
    assert lines[2] == "2"  # the command is PID 2 under a tiny reaper
    assert lines[3] == "ctx-test"
    assert int(lines[4]) <= 4  # reaper, sh, ls, grep: nothing of the host's
    bounding = int(lines[5].split()[1], 16)
    assert bounding == caps.to_mask(caps.DEFAULT_GUEST_CAPS - {"CHOWN"}) & own_mask()
    assert socket.gethostname() == host_name  # changed only inside


def test_chcontext_status_xids_and_fakeinit(vroot: Paths) -> None:
    root = ["--root", str(vroot.root)]
    done = tool("chcontext", *root, "--silent", "sh", "-c", "exit 7")
    assert (done.returncode, done.stdout) == (7, "")
    done = tool("chcontext", *root, "--flag", "fakeinit", "sh", "-c", "echo $$")
    assert done.stdout.splitlines() == [f"New security context is {FIRST_DYNAMIC_XID + 1}", "1"]
    done = tool("chcontext", *root, "--silent", "sh", "-c", "kill -TERM $$")
    assert done.returncode == 128 + 15


def test_chcontext_xid_of_a_missing_guest(vroot: Paths) -> None:
    done = tool("chcontext", "--root", str(vroot.root), "--xid", "40123", "true")
    assert done.returncode == 1
    assert done.stderr.startswith("chcontext: no running guest has context 40123")
    done = tool("chcontext", "--root", str(vroot.root), "--xid", "0", "sh", "-c", "exit 3")
    assert done.returncode == 3


def test_guest_found_by_xid_from_run_state(vroot: Paths) -> None:
    init = subprocess.Popen(["sleep", "60"])
    try:
        run_dir = vroot.run_dir("web")
        run_dir.mkdir(parents=True)
        for key, value in (("state", "running"), ("xid", 40007), ("init.pid", init.pid),
                           ("init.start", state.proc_starttime(init.pid))):  # fmt: skip
            state.write_value(run_dir, key, value)
        assert guest_by_xid(vroot, 40007) == "web"
    finally:
        init.kill()
        init.wait()
    with pytest.raises(Exception, match="no running guest has context 40007"):
        guest_by_xid(vroot, 40007)
