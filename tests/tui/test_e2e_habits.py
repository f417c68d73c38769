"""End to end (tmux, real guests): readable without colour (issue #20 item 3)
and the layout and habits of item 4. Each test opens its own console on
the module's two running guests (A has an address and a memory limit).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine.paths import Paths
from tests.tui.tmux import REPO, Tmux, console, live_root, ok, tmux, vserver

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]

A, B = f"ha{uuid.uuid4().hex[:4]}", f"hb{uuid.uuid4().hex[:4]}"
A_ADDR = f"198.18.{uuid.uuid4().int % 200 + 20}.10"
INIT = "/bin/sh -c 'exec sleep 100000'"


@pytest.fixture(scope="module")
def live():
    with live_root([B], INIT) as paths:
        ok(vserver(paths, A, "build", "-m", "skeleton", "--ip", f"{A_ADDR}/24",
                   "--set", "V_MEMORY=256M", "--set", f"V_INIT={INIT}"))  # fmt: skip
        ok(vserver(paths, A, "start"))
        try:
            yield paths
        finally:
            vserver(paths, A, "stop")


def guests_screen(t: Tmux) -> str:
    return t.wait_for(lambda s: A in s and B in s and "running" in s, "the guest list")


def row(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if f" {name} " in f" {line} "), "")


# -- item 3: readable without colour ------------------------------------------------------


def test_checkboxes_read_x_or_blank(live):
    with tmux(console(live)) as t:
        guests_screen(t)
        t.filter(A)
        t.keys("Down", "e")
        screen = t.wait_for(lambda s: "CHOWN" in s, "the editor's capabilities")
    assert "[x] * CHOWN" in screen and "[ ]   SETPCAP" in screen, screen


def test_no_color_sends_no_colour_codes(live, tmp_path: Path):
    """The console's own output (pane piped to a file), not tmux's rendering."""
    gate, log = tmp_path / "go", tmp_path / "out"
    held = ["sh", "-c", f'while [ ! -e {gate} ]; do sleep 0.05; done; exec "$@"', "sh",
            *console(live)]  # fmt: skip
    with tmux(held, env={"NO_COLOR": "1"}) as t:
        t.run("pipe-pane", "-o", "-t", "e2e", f"cat >> {log}")
        gate.touch()
        guests_screen(t)
        t.keys("2")
        t.wait_for(lambda s: "COMMAND" in s, "the process screen")
        t.keys("F9")
        t.wait_for(lambda s: "Send TERM" in s, "a dialog")
        t.keys("Escape")
        time.sleep(1)
    params = {p for seq in re.findall(rb"\x1b\[([0-9;:]*)m", log.read_bytes())
              for p in seq.split(b";")}  # fmt: skip
    colours = {p for p in params if len(p) >= 2 and p[:1] in b"349"}  # 30-49, 90-107
    assert b"7" in params  # the cursor row and the header are drawn in reverse
    assert not colours, sorted(colours)


def test_gauges_carry_their_number(live):
    with tmux(console(live), size=(160, 48)) as t:
        screen = t.wait_for(lambda s: A in s and "MEM%" in s and "%" in row(s, A), "the gauges")
    assert re.search(r"[█░]+ +\d+%", row(screen, A)), row(screen, A)


# -- item 4: layout and habits ------------------------------------------------------------


def test_guests_header_follows_a_resize(live):
    with tmux(console(live), size=(80, 24)) as t:
        guests_screen(t)
        assert "ADDRESSES" not in t.screen()
        t.resize(160, 48)
        t.wait_for(lambda s: "ADDRESSES" in s.splitlines()[1] and A_ADDR in s, "wide header")
        t.resize(80, 24)
        t.wait_for(lambda s: "ADDRESSES" not in s and "XID" in s.splitlines()[1], "narrow again")


def test_new_guest_dialog_fits_80x24_and_sets_memory_disk_and_capabilities(live):
    name = f"hn{uuid.uuid4().hex[:4]}"
    try:
        with tmux(console(live), size=(80, 24)) as t:
            guests_screen(t)
            t.keys("n")
            screen = t.wait_for(lambda s: "Build a new guest" in s, "the dialog")
            for field in ("name", "template", "hostname", "address", "memory", "disk",
                          "capabilities", "Build", "Cancel"):  # fmt: skip
                assert field in screen, (field, screen)
            t.type(name)
            for _ in range(4):
                t.keys("Tab")  # template, hostname, address, memory
            t.type("128M")
            t.keys("Tab")
            t.type("64M")
            t.keys("Tab")
            t.type("NET_RAW")
            t.keys("Enter")
            t.wait_for(lambda s: f"built {name}" in s, "the build done", timeout=90)
        text = live.config_file(name).read_text()
        assert "V_MEMORY=128M" in text and "V_DISK=64M" in text and "S_CAPS=NET_RAW" in text
    finally:
        vserver(live, name, "delete", "--force")


def test_sort_stays_when_switching_screens(live):
    with tmux(console(live)) as t:
        guests_screen(t)
        t.keys("2")
        t.wait_for(lambda s: "CPU%▼" in s, "the default sort")
        t.keys(">")
        t.wait_for(lambda s: "Sort by" in s, "the sort picker")
        t.keys("Down", "Down", "Enter")  # CPU%, memory, PID
        t.wait_for(lambda s: re.search("PID[▲▼]", s), "sorted by PID")
        t.keys("1")
        guests_screen(t)
        t.keys("2")
        t.wait_for(lambda s: "COMMAND" in s, "the process screen again")
        assert re.search("PID[▲▼]", t.screen()) and not re.search("CPU%[▲▼]", t.screen())


RATE = re.compile(r"^([\d.]+)([kMG]?)b/s$")


def bits(cell: str) -> float:
    number, unit = RATE.match(cell).groups()  # type: ignore[union-attr]
    return float(number) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[unit]


def rates(screen: str, name: str) -> tuple[str, str]:
    cells = [c for c in row(screen, name).split() if c.endswith("b/s")]
    return cells[0], cells[1]


def test_rates_carry_units_and_the_host_row_does_not_count_guest_traffic(live):
    """UDP from the host to A: A's RX rises; the host's TX does not rise with it."""
    out = subprocess.run(["ip", "-o", "route", "get", A_ADDR], capture_output=True, text=True)
    assert live.link_name(A) in out.stdout and "via" not in out.stdout  # stays on A's veth
    stop = time.monotonic() + 12
    sender = subprocess.Popen([sys.executable, "-c", (
        "import socket, time, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"end = time.monotonic() + 12\n"
        "while time.monotonic() < end:\n"
        f"    for _ in range(200): s.sendto(b'x' * 1400, ('{A_ADDR}', 9))\n"
        "    time.sleep(0.01)\n"
    )])  # fmt: skip
    try:
        with tmux(console(live), size=(120, 30)) as t:
            screen = t.wait_for(lambda s: "Mb/s" in row(s, A), "A receiving", timeout=10)
            a_rx, _ = rates(screen, A)
            host_rx, host_tx = rates(screen, "(host)")
    finally:
        sender.kill()
        sender.wait()
    assert time.monotonic() < stop
    assert bits(host_tx) < bits(a_rx) / 4, (host_tx, a_rx)  # not A's traffic again


def test_vserver_list_shows_state_and_the_context_of_running_guests(live):
    xid = (live.run_dir(A) / "xid").read_text().strip()
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(live.root), "--list"]
    with tmux(["sh", "-c", " ".join(cmd) + "; sleep 60"], env={"PYTHONPATH": str(REPO)}) as t:
        screen = t.wait_for(lambda s: "STATE" in s and A in s, "the list")
    assert re.search(rf"^{A}\s+running\s+{xid}\s", screen, re.M), screen


def test_exec_window_opens_at_the_top(live):
    with tmux(console(live)) as t:
        guests_screen(t)
        t.filter(A)
        t.keys("Down", "x")
        t.wait_for(lambda s: f"Run in {A}" in s, "the exec dialog")
        t.type("seq 1 300")
        t.keys("Enter")
        screen = t.wait_for(lambda s: "exit status 0" in s, "the command's end")
    lines = [line.strip(" │▎▊█") for line in screen.splitlines()]
    assert "1" in lines and "2" in lines and "300" not in lines, screen


def test_esc_goes_back_without_waiting_for_more_keys(live):
    """A key 60 ms after Esc is its own key (Textual waited 100 ms and read
    Esc then 3 as alt+3, so Esc itself took 125-160 ms)."""
    with tmux(console(live)) as t:
        guests_screen(t)
        t.keys("2")
        t.wait_for(lambda s: "COMMAND" in s, "the process screen")
        t.run("send-keys", "-t", "e2e", "Escape")
        time.sleep(0.06)
        t.run("send-keys", "-t", "e2e", "3")
        t.wait_for(lambda s: "Audit" in s.splitlines()[0], "Esc back, then 3: the audit screen")


def test_detail_screen_marks_what_waits_for_a_restart_and_names_the_host_link(live):
    ok(vserver(live, A, "set", "S_CAPS=NET_RAW", "S_FLAGS=lock"))
    try:
        with tmux(console(live), size=(120, 40)) as t:
            guests_screen(t)
            t.filter(A)
            t.keys("Down", "Enter")
            screen = t.wait_for(lambda s: "waits for a restart" in s, "the restart mark")
            assert "+CAP_NET_RAW" in screen
            link = live.link_name(A)
            assert f"host link {link}" in screen
    finally:
        ok(vserver(live, A, "set", "S_CAPS=", "S_FLAGS="))
    names = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f" {link}@" in names  # the console names the real link
    readme = (REPO / "README.md").read_text()
    rule = next(line for line in readme.splitlines() if line.startswith("| host link |"))
    assert "`vs-NAME`" in rule and "`vXXXX-NAME`" in rule
    assert link == f"v{live.root_id[:4]}-{A}"  # what the README says for another root


def test_audit_fixes_are_commands_that_work_as_printed(vroot: Paths):
    """Every fix the audit prints for a root, run as printed, works (exit 0)
    and removes its finding."""
    name = f"hf{uuid.uuid4().hex[:4]}"
    share = vroot.root / "srv"
    share.mkdir()
    # privileged (V_USERNS=no): SYS_ADMIN is then the host's (critical), and the fix
    # that gives the guest its own user namespace is tried too
    ok(vserver(vroot, name, "build", "-m", "skeleton", "--set", "S_CAPS=SYS_ADMIN",
               "--set", f"V_SHARE={share}:/srv:rw", "--set", "V_USERNS=no"))  # fmt: skip
    os.chmod(vroot.vservers_dir, 0o755)  # the barrier broken
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}  # fmt: skip

    def audit() -> list[dict]:
        out = subprocess.run(
            [sys.executable, "-m", "vstui.app.main", "--root", str(vroot.root), "audit", "--json"],
            capture_output=True,
            text=True,
            env=env,
        )
        return [f for f in json.loads(out.stdout)["findings"] if f["guest"] in (None, name)]

    with tmux(console(vroot, "--screen", "audit"), size=(160, 48)) as t:
        screen = t.wait_for(lambda s: "fix:" in s, "the audit screen")
        assert f"vserver --root {vroot.root} {name} set" in screen
    before = audit()
    assert {"HOST-BARRIER", "GUEST-CAP-SYS_ADMIN", "GUEST-SHARE-RW", "GUEST-NO-MEMORY-LIMIT",
            "GUEST-NO-DISK-LIMIT", "GUEST-PRIVILEGED"} <= {f["rule"] for f in before}, \
        before  # fmt: skip
    for f in before:
        if f["fix"]:
            done = subprocess.run(["sh", "-c", f["fix"]], capture_output=True, text=True, env=env)
            assert done.returncode == 0, (f["rule"], f["fix"], done.stderr)
    fixed = {(f["rule"], f["title"]) for f in before if f["fix"]}
    left = {(f["rule"], f["title"]) for f in audit()}
    assert not left & fixed, left & fixed
    vserver(vroot, name, "delete", "--force")
