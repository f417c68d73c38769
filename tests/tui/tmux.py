"""The real console in tmux, against real guests: helpers for the end-to-end tests.

Every tmux server is private (its own socket) and killed at the end; every
guest is built under a temporary root and stopped and checked for leaks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from engine.config import update_config
from engine.paths import Paths
from tests import leaks

REPO = Path(__file__).resolve().parents[2]


def vserver(paths: Paths, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"rc={result.returncode} {result.stderr}{result.stdout}"


def console(paths: Paths, *args: str) -> list[str]:
    """The command that opens the console on ``paths`` (from this checkout)."""
    return ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "vstui.app.main",
            "--root", str(paths.root), *args]  # fmt: skip


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


class Tmux:
    """A private tmux server (own socket) running one command."""

    def __init__(self, command: Sequence[str], size: tuple[int, int] = (120, 40),
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.socket = f"vstui-e2e-{uuid.uuid4().hex[:6]}"
        # COLUMNS/LINES from pytest's environment would override the pane's size
        words = ["env", "-u", "COLUMNS", "-u", "LINES"]
        words += [f"{k}={v}" for k, v in (env or {}).items()]
        line = " ".join(_quote(w) for w in [*words, *command])
        self.run("new-session", "-d", "-s", "e2e", "-x", str(size[0]), "-y", str(size[1]), line)

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                             timeout=10)  # fmt: skip
        return out.stdout

    def keys(self, *keys: str, pause: float = 0.25) -> None:
        # one at a time, slower than ESCDELAY: ESC then "1" must not read as alt+1
        for key in keys:
            self.run("send-keys", "-t", "e2e", key)
            time.sleep(pause)

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "e2e", "-l", text)
        time.sleep(0.3)  # a burst of text straight followed by Enter can merge into one read

    def screen(self, escapes: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "e2e")

    def resize(self, cols: int, rows: int) -> None:
        self.run("resize-window", "-t", "e2e", "-x", str(cols), "-y", str(rows))

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if check(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")

    def filter(self, text: str) -> str:
        """Type ``text`` into the console's / filter and wait until the table
        has the focus again (else the next letters would go to the box, or
        the box's letters to the table as keys)."""
        self.keys("/")
        self.wait_for(lambda s: "▔" in "".join(s.splitlines()[-5:]), "the filter box")
        self.type(text)
        focused = self._box_border()
        self.keys("Enter")
        self.wait_for(lambda s: self._box_border() != focused, "the table focused again")
        return self.screen()

    def _box_border(self) -> str:
        """The filter box's top border with its colours (they follow the focus)."""
        lines = self.screen(escapes=True).splitlines()
        return next((line for line in lines[-6:] if "▔" in line), "")

    def close(self) -> None:
        """Kill the server, and wait for the program it ran (ours) to be gone,
        so a test's leak check does not find it still exiting."""
        pane = self.run("display-message", "-p", "-t", "e2e", "#{pane_pid}").strip()
        self.run("kill-server")
        if pane.isdigit():
            _wait_gone(int(pane))


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.path.exists(f"/proc/{pid}"):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def tmux(command: Sequence[str], **kw: object) -> Iterator[Tmux]:
    session = Tmux(command, **kw)  # type: ignore[arg-type]
    try:
        yield session
    finally:
        session.close()


@contextmanager
def live_root(guests: Sequence[str], init: str) -> Iterator[Paths]:
    """A temporary root with ``guests`` built (skeleton) and running ``init``;
    stopped, removed and checked for leaks at the end."""
    base = Path(tempfile.mkdtemp(prefix="vstui-e2e-", dir="/tmp"))
    paths = Paths.from_root(base)
    started: list[str] = []
    try:
        for name in guests:
            ok(vserver(paths, name, "build", "-m", "skeleton", "--hostname", f"{name}.e2e"))
            update_config(paths, name, {"V_INIT": init})
            ok(vserver(paths, name, "start"))
            started.append(name)
        yield paths
    finally:
        for name in started:
            vserver(paths, name, "stop")
        found = leaks.find(paths)
        leaks.clean(paths)
        shutil.rmtree(base, ignore_errors=True)
        assert not found, "left behind: " + "; ".join(found)


def guest_pids(paths: Paths, argv: bytes) -> list[int]:
    """Host PIDs of this root's processes whose argv is exactly ``argv``."""
    found = []
    mine = leaks.processes(paths)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) in mine:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == argv:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def spawn_in_guest(paths: Paths, guest: str, command: str) -> None:
    """Start ``command`` in the background inside ``guest`` (detached)."""
    ok(vserver(paths, guest, "exec", "/bin/sh", "-c", f"({command}) </dev/null >/dev/null 2>&1 &"))


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
