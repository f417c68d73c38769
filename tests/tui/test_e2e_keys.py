"""End to end (tmux, real guests): keys that change things ask first and are
hard to hit by accident (issue #20 item 2).

Two guests run for the whole module; each test opens its own console.
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from tests.tui.tmux import (
    console,
    guest_pids,
    live_root,
    ok,
    spawn_in_guest,
    tmux,
    vserver,
    wait_until,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]

A, B = f"ka{uuid.uuid4().hex[:4]}", f"kb{uuid.uuid4().hex[:4]}"
INIT = "/bin/sh -c 'exec sleep 100000'"
# The victims' `sleep` arguments start with this run's own digits: the process
# screen shows every process of the host, and another run of these tests
# beside this one must not be listed, marked or killed by this one.
RUN = str(10_000 + uuid.uuid4().int % 90_000)


@pytest.fixture(scope="module")
def live():
    with live_root([A, B], INIT) as paths:
        yield paths


def victims(live, mark: str, count: int, guest: str = A) -> list[int]:
    """``count`` fresh `sleep MARK` processes in ``guest`` (host PIDs)."""
    argv = b"sleep\0" + mark.encode() + b"\0"
    for _ in range(count):
        spawn_in_guest(live, guest, f"exec sleep {mark}")
    wait_until(lambda: len(guest_pids(live, argv)) >= count, f"{count} sleep {mark}")
    return sorted(guest_pids(live, argv))


def processes_filtered(t, text: str) -> str:
    t.keys("2")
    t.wait_for(lambda s: "COMMAND" in s, "the process screen")
    return t.filter(text)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def guest_state(live, name: str) -> str:
    return vserver(live, name, "status").stdout


def test_stop_asks_first_and_enter_keeps_the_guest_running(live):
    with tmux(console(live)) as t:
        t.wait_for(lambda s: A in s and "running" in s, "the guest list")
        t.keys("Down")  # the first guest below the host row
        t.keys("-")
        t.wait_for(lambda s: f"Stop {A}?" in s, "the stop question")
        t.keys("Enter")  # Cancel is the default
        t.wait_for(lambda s: f"Stop {A}?" not in s, "the dialog closed")
    assert "is running" in guest_state(live, A)


def test_kill_dialog_lists_the_target_and_enter_sends_the_signal(live):
    pid = victims(live, RUN + "37", 1)[0]
    with tmux(console(live)) as t:
        t.wait_for(lambda s: A in s, "the guest list")
        processes_filtered(t, f"sleep {RUN}37")
        t.keys("F9")
        screen = t.wait_for(lambda s: "Send TERM" in s, "the kill dialog")
        row = next(line for line in screen.splitlines() if str(pid) in line)
        assert A in row and f"sleep {RUN}37" in row  # host PID, guest, command
        t.keys("Enter")  # the default is the action
        wait_until(lambda: not alive(pid), "the victim to die", timeout=10)


def test_one_confirmation_lists_every_marked_target_and_ctrl_k_opens_it(live):
    pids = victims(live, RUN + "38", 3, guest=B)
    with tmux(console(live)) as t:
        t.wait_for(lambda s: A in s, "the guest list")
        processes_filtered(t, f"sleep {RUN}38")
        t.keys("t", "Home")  # PID order (rows do not move), from the first row
        t.keys("Space", "Space", "Space")
        t.wait_for(lambda s: "3 marked" in s, "the mark count in the header")
        t.keys("C-k")
        screen = t.wait_for(lambda s: "Send a signal to 3 processes" in s, "one dialog for all")
        for pid in pids:
            assert str(pid) in screen, screen
        t.keys("Escape")
        t.wait_for(lambda s: "Send a signal" not in s, "the dialog closed")
    assert all(alive(pid) for pid in pids)  # cancelled: nobody got anything


def test_k_moves_up_and_never_kills(live):
    pids = victims(live, RUN + "39", 2)
    with tmux(console(live)) as t:
        t.wait_for(lambda s: A in s, "the guest list")
        processes_filtered(t, f"sleep {RUN}39")
        t.keys("j")
        t.wait_for(lambda s: " 2/2 " in s or "2/2" in s.splitlines()[1], "the cursor on row 2")
        t.keys("k", "k", "Enter")
        screen = t.screen()
        assert "Send" not in screen and "Signal" not in screen, screen
    assert all(alive(pid) for pid in pids)


def test_marks_stay_on_their_process_through_a_filter_and_U_clears_them(live):
    victims(live, RUN + "40", 2)
    with tmux(console(live)) as t:
        t.wait_for(lambda s: A in s, "the guest list")
        processes_filtered(t, f"sleep {RUN}4")
        t.keys("t", "Home")  # PID order (rows do not move), from the first row
        t.keys("Space", "Space")
        t.wait_for(lambda s: "2 marked" in s, "two marks")
        t.filter(f"sleep {RUN}41")  # the old filter is selected: typing replaces it
        t.wait_for(lambda s: "2 marked, 2 hidden by the filter" in s, "marks kept while hidden")
        t.filter(f"sleep {RUN}4")
        t.wait_for(lambda s: "2 marked" in s and "hidden" not in s, "marks shown again")
        t.keys("U")
        t.wait_for(lambda s: "marked" not in s, "marks cleared")
        t.keys("?")
        t.wait_for(lambda s: "Unmark all" in s, "help naming the key")


def test_deleting_a_running_guest_offers_to_stop_it_first(live):
    name = f"kd{uuid.uuid4().hex[:4]}"
    ok(vserver(live, name, "build", "-m", "skeleton"))
    try:
        ok(vserver(live, name, "start"))
        with tmux(console(live)) as t:
            t.wait_for(lambda s: name in s and "running" in s, "the guest list")
            t.filter(name)
            t.keys("Down")
            t.keys("D")
            t.wait_for(lambda s: f"{name} is running: stop it first" in s and "[x]" in s,
                       "the stop offer")  # fmt: skip
            t.type(name)
            t.keys("Enter")
            wait_until(lambda: not live.config_file(name).exists(), "the guest deleted", 60)
    finally:
        vserver(live, name, "delete", "--force")
    assert name not in vserver(live, "--list").stdout


def test_read_only_refusal_is_explained_in_the_footer(live):
    with tmux(console(live, "--read-only")) as t:
        t.wait_for(lambda s: A in s and "READ-ONLY" in s, "the guest list")
        t.keys("Down", "-")
        screen = t.wait_for(lambda s: "read-only" in s.splitlines()[-1], "the footer note")
        assert "Stop" in screen.splitlines()[-1]
    assert "is running" in guest_state(live, A)
