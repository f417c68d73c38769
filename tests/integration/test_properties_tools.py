"""Property tests (hypothesis): random argv for every tool, random bytes as NAME.conf.

No traceback, no hang, an exit status the README documents, and nothing a
terminal would obey in the output. The tools run in a fork server inside a
private PID and mount namespace (tests/forkserver.py), on a root of their
own with a built guest ``g`` and a guest ``bad`` whose NAME.conf is random
bytes; commands they may run are only ``true``/``false`` (PATH holds nothing
else, and words never contain a ``/``), so random argv cannot touch the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.paths import Paths
from tests import leaks
from tests.hostile_text import raw_controls
from vstui.cli.vserver import COMMANDS

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VSERVER_BIN = str(Path(sys.executable).parent / "vserver")
FUZZ = settings(max_examples=60, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])  # fmt: skip

# the exit statuses each tool documents (README, "Exit status")
EXIT = {
    "vserver": {0, 1, 2, 3}, "vps": {0, 1}, "vtop": {0, 1}, "vkill": {0, 1},
    "vserver-stat": {0, 1}, "chcontext": {0, 1, 126, 127}, "chbind": {0, 1, 126, 127},
    "reducecap": {0, 1, 126, 127}, "vstui": {0, 1, 2},
}  # fmt: skip
RUNS_A_COMMAND = {"exec", "suexec", "enter"}  # their status is the command's: true/false/127


class Server:
    """The fork server's client: one tool run per request."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        env = {**os.environ, "VSTUI_ROOT": str(root), "PATH": str(bin_dir),
               "PYTHONPATH": str(REPO)}  # fmt: skip
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        cmd = [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-m", "tests.forkserver"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     cwd=str(root), text=True)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"
        self.root = root

    def run(self, tool: str, argv: list[str], timeout: float = 30) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        req = {"tool": tool, "argv": argv, "timeout": timeout}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


@pytest.fixture(scope="module")
def server(guest_mode: str) -> Iterator[Server]:
    from tests.conftest import set_guest_mode

    root = Path(tempfile.mkdtemp(prefix="vstui-test-fuzz-", dir="/tmp"))
    paths = Paths.from_root(root)
    set_guest_mode(paths, guest_mode)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in ("true", "false"):
        (bin_dir / name).symlink_to(shutil.which(name) or f"/bin/{name}")
    built = subprocess.run([sys.executable, "-m", "vstui.cli.vserver", "--root", str(root), "g",
                            "build"], capture_output=True, text=True)  # fmt: skip
    assert built.returncode == 0, built.stderr
    paths.config_file("bad").write_bytes(b"\xff")
    srv = Server(root, bin_dir)
    try:
        yield srv
    finally:
        srv.close()
        leaks.clean(paths)
        shutil.rmtree(root, ignore_errors=True)


def check(result: dict, tool: str, argv: list[str], extra: set[int] = frozenset()) -> None:
    said = f"{tool} {argv!r}: rc={result['rc']}\n{result['err'][-2000:]}"
    event(f"{tool} exit {result['rc']}")  # --hypothesis-show-statistics: how far they got
    assert not result["timed_out"], said
    assert "Traceback" not in result["err"], said
    assert result["rc"] in EXIT[tool] | extra, said
    text = (result["out"] + result["err"]).encode("latin-1")
    assert raw_controls(text, allowed=b"\n") == [], said


# -- argv strategies -------------------------------------------------------------
# words: never a NUL (impossible in argv), never a '/' (no path to a program)
junk = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0/"), max_size=12)
junk = junk.filter(lambda w: not w.startswith("--host") and w not in ("migrate", "--pool"))
numbers = st.one_of(st.integers(-5, 5), st.integers(-(2**70), 2**70), st.integers(4194305, 2**40)
                    ).map(str)  # fmt: skip
floats = st.sampled_from(["0.5", "nan", "inf", "-inf", "-1", "1e400", "0", "1e-9", "86401"])


def words(
    vocab: list[str], extra: list[st.SearchStrategy[str]] = ()
) -> st.SearchStrategy[list[str]]:
    """Mostly the tool's own words (so examples get past the parser), some junk."""
    known = st.sampled_from(vocab)
    return st.lists(st.one_of(known, known, known, junk, numbers, *extra), max_size=6)


NAMES = ["g", "bad", "nosuch", "..", "-x", "g/..", ""]
COMMAND_NAMES = sorted(c for c in COMMANDS if c != "migrate")
VSERVER_ARGS = ["--json", "--force", "-f", "--dry-run", "-t", "skeleton", "busybox", "--hostname",
                "--ip", "198.18.3.4/24", "--context", "40100", "--set", "V_MEMORY=64M",
                "V_MEMORY=9999999999999999999999T", "start", "stop", "1G", "none", "--", "true",
                "false", "list", "create", "status", "--root"]  # fmt: skip


@st.composite
def vserver_argv(draw: st.DrawFn) -> list[str]:
    if draw(st.integers(0, 9)) == 0:
        head = [draw(st.sampled_from(["--list", "--onboot", "--help"]))]
    else:
        head = [draw(st.one_of(st.sampled_from(NAMES), junk)),
                draw(st.one_of(st.sampled_from(COMMAND_NAMES), junk))]  # fmt: skip
    return head + draw(words(VSERVER_ARGS))


TOOL_ARGV: dict[str, st.SearchStrategy[list[str]]] = {
    "vps": words(["ax", "aux", "-ef", "-e", "-o", "pid,ctx,user,cmd", "f", "--forest", "--xid",
                  "g", "0", "1", "99999", "--json", "ww", "-p", "1", "-u", "root", "-C"]),
    # a batch run ends after its frames; the last -d wins (0.5 s, or one to refuse)
    "vtop": st.tuples(words(["-b", "-n", "1", "-d", "--xid", "g", "0", "99999", "--batch"],
                            [floats]), floats).map(lambda t: [*t[0], "-n", "2", "-d", t[1]]),
    "vkill": words(["--xid", "-c", "g", "99999", "-s", "TERM", "KILL", "0", "--", "-9",
                    "--signal", "SIGSTOP", "4194305"]),
    "vserver-stat": words(["--json", "--help"]),
    "chcontext": words(["--xid", "40100", "--hostname", "h", "--domainname", "d", "--cap",
                        "NET_RAW", "!CHOWN", "--flag", "lock", "--silent", "--", "true", "false"]),
    "chbind": words(["--ip", "198.18.3.4", "127.0.0.1", "::1", "--silent", "--", "true",
                     "false", "--nid"]),
    "reducecap": words(["--show", "--list", "--cap", "NET_RAW", "!CHOWN", "--", "true",
                        "false"]),
    "vstui": words(["--json", "--guest", "g", "bad", "--min-severity", "high", "info", "bogus"]
                   ).map(lambda w: ["audit", *w]),
}  # fmt: skip


@FUZZ
@given(argv=vserver_argv())
def test_vserver_with_random_argv(server: Server, argv: list[str]) -> None:
    extra = {126, 127} if set(argv[1:2]) & RUNS_A_COMMAND else set()
    check(server.run("vserver", argv), "vserver", argv, extra)


@settings(FUZZ, max_examples=25)
@given(argv=vserver_argv())
def test_the_compiled_vserver_with_random_argv(server: Server, argv: list[str]) -> None:
    extra = {126, 127} if set(argv[1:2]) & RUNS_A_COMMAND else set()
    check(server.run(VSERVER_BIN, argv), "vserver", argv, extra)


@pytest.mark.parametrize("tool", sorted(TOOL_ARGV))
def test_every_other_tool_with_random_argv(server: Server, tool: str) -> None:
    @FUZZ
    @given(argv=TOOL_ARGV[tool])
    def run(argv: list[str]) -> None:
        check(server.run(tool, argv), tool, argv)

    run()


@settings(FUZZ, max_examples=40)
@given(data=st.one_of(st.binary(max_size=300),
                      st.lists(st.sampled_from([b"V_MEMORY=", b"9" * 30, b"T\n", b'"', b"'",
                                                b"ONBOOT=yes\n", b"\x1b]0;x\x07", b"\n", b"$",
                                                b"S_CONTEXT=40100\n", b"\xc2\x9b"]),
                               max_size=12).map(b"".join)))  # fmt: skip
def test_random_bytes_as_a_config_for_every_command(server: Server, data: bytes) -> None:
    Paths.from_root(server.root).config_file("bad").write_bytes(data)
    runs = [["bad", c] for c in ("check", "config", "status", "start", "stop", "running",
                                 "quota", "exec")]  # fmt: skip
    runs += [["bad", "config", "--json"], ["--list"], ["--list", "--json"], ["g", "start"],
             ["g", "stop"]]  # fmt: skip
    for argv in runs:
        check(server.run("vserver", argv), "vserver", argv)
    for tool, argv in (("vstui", ["audit"]), ("vps", ["ax"]), ("vserver-stat", [])):
        check(server.run(tool, argv), tool, argv)
