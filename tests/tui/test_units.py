"""The console's pure parts: formatting, process views, themes, keymap, facade gate."""

from __future__ import annotations

import asyncio
import gc
import itertools
import signal
import subprocess
import threading
import time

import pytest

from engine.errors import ReadOnlyError, VstuiError
from engine.facade import MUTATING, Engine, read_starttime, tail_file
from engine.paths import Paths
from tests.tui.fakes import big_snapshot, proc, small_snapshot
from tests.tui.helpers import make_app
from vstui.app import fmt, guest_of
from vstui.app.gcpolicy import NEVER, GcPolicy
from vstui.app.keymap import load_keymap, parse_keymap
from vstui.app.procview import ProcIndex, ViewSpec, build_view, matcher
from vstui.app.themes import SHIPPED_DIR, load_themes, parse_theme


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (512, "512"), (1536, "1.5K"), (256 << 20, "256M"), (3 << 30, "3.0G")],
)
def test_size(value, text):
    assert fmt.size(value) == text


def test_rate_duration_bar_sparkline():
    assert fmt.rate(1250) == "10kb/s" and fmt.rate(0) == "0b/s"  # rates carry their unit
    assert fmt.rate(125_000) == "1.0Mb/s" and fmt.rate(60) == "480b/s" and fmt.rate(None) == "-"
    assert fmt.gauge(0.62, 10) == "██░░   62%" and fmt.gauge(None, 10) == " " * 10
    assert fmt.bits(10_000_000) == "10Mbit/s" and fmt.bits(None) == "unlimited"
    assert [fmt.duration(s) for s in (None, 5, 125, 3725, 90000)] == [
        "-",
        "5s",
        "2m",
        "1h02m",
        "1d01h",
    ]
    assert fmt.bar(0.5, 4) == "██░░" and fmt.bar(None, 3) == "   " and fmt.bar(2.0, 2) == "██"
    assert fmt.sparkline([0, 50, 100], 4, top=100) == " ▁▅█"
    assert fmt.used_of(None, 5) == "?" and fmt.used_of(1024, None) == "1.0K/-"


def test_config_round_trip_formats():
    assert fmt.config_size(256 << 20) == "256M" and fmt.config_size(1000) == "1000"
    assert fmt.config_rate(10_000_000) == "10mbit" and fmt.config_rate(None) == ""
    assert fmt.config_percent(150.0) == "150%"


def test_matcher_substring_regex_inverse():
    assert matcher("HTTP")("httpd -f")
    assert matcher("^post")("postgres") and not matcher("^post")("xpostgres")
    assert matcher("!sleep")("httpd") and not matcher("!sleep")("sleep 1")
    assert matcher("[unclosed")("a [unclosed b")  # bad regex: plain substring


def test_flat_sort_is_stable_on_pid():
    rows = [proc(5, 1, "a", 1, "x"), proc(3, 1, "a", 1, "y"), proc(4, 1, "a", 1, "z")]
    view = build_view(rows, ViewSpec(sort="cpu", reverse=False))
    assert [k[0] for k in view.order] == [3, 4, 5]


def test_tree_orders_children_under_parents_with_prefixes():
    view = build_view(small_snapshot().procs, ViewSpec(sort="pid", reverse=False, tree=True))
    pids = [k[0] for k in view.order]
    assert pids == [1, 400, 401, 1101, 1102, 1103, 1104, 1201, 1202, 1203]
    assert view.prefixes[(401, 501)] == "│  └─ "
    assert (1, 101) not in view.prefixes


def test_tree_filter_by_guest_makes_orphans_roots():
    view = build_view(small_snapshot().procs, ViewSpec(guest="db", tree=True, sort="pid",
                                                      reverse=False))  # fmt: skip
    assert [k[0] for k in view.order] == [1201, 1202, 1203]


def test_tree_survives_a_deep_chain():
    rows = [proc(i, i - 1, "a", 1, "sh") for i in range(2, 3000)]
    assert len(build_view(rows, ViewSpec(tree=True)).order) == 2998


def test_view_of_10k_rows_is_built():
    snap = big_snapshot(10_000, 50)
    assert len(build_view(snap.procs, ViewSpec(tree=True)).order) == 10_000
    assert len(build_view(snap.procs, ViewSpec(text="--id 99")).order) == 111


def test_narrowed_filters_match_a_fresh_search():
    """The index reuses earlier matches; the result must equal a cold search."""
    snap = big_snapshot(2_000, 20)
    warm = ProcIndex(snap.procs)
    texts = ["w", "wo", "worker --id 1", "worker --id 12", "worker --id 1", "ID 1[0-2]",
             "!worker", "!worker --id 1", "", "(host)"]  # fmt: skip
    for guest in (None, "g03"):
        for text in texts:
            for sort, reverse, tree in (("cpu", True, False), ("rss", False, False),
                                        ("pid", False, True)):  # fmt: skip
                spec = ViewSpec(text, guest, sort, reverse, tree)
                assert warm.view(spec) == ProcIndex(snap.procs).view(spec), spec


def test_hidden_kernel_threads_leave_the_rest_in_order():
    """Kernel threads hidden (the default): the other rows in the order of
    the full view, whether there are kernel threads to hide or none."""
    from dataclasses import replace

    from vstui.app.procview import SORT_FIELDS

    procs = big_snapshot(2_000, 20).procs
    for rows in (procs, [replace(p, kernel=True) if i % 7 == 0 else p
                         for i, p in enumerate(procs)]):  # fmt: skip
        index = ProcIndex(rows)
        for sort in SORT_FIELDS:
            for reverse in (False, True):
                every = index.view(ViewSpec(sort=sort, reverse=reverse)).order
                shown = [k for k in every if not index.items[k].kernel]
                hidden = ViewSpec(sort=sort, reverse=reverse, kernel=False)
                assert index.view(hidden).order == shown == ProcIndex(rows).view(hidden).order


def test_inverted_sort_is_the_reverse_and_ties_go_by_pid():
    rows = [proc(5, 1, "a", 1, "x"), proc(3, 1, "a", 1, "y", cpu_percent=9.0),
            proc(4, 1, "a", 1, "z")]  # fmt: skip
    index = ProcIndex(rows)
    up = [k[0] for k in index.view(ViewSpec(sort="cpu", reverse=False)).order]
    down = [k[0] for k in index.view(ViewSpec(sort="cpu", reverse=True)).order]
    assert up == [4, 5, 3] and down == [3, 5, 4]


def test_tree_keeps_processes_in_a_parent_loop():
    rows = [proc(1, 0, "a", 1, "init"), proc(10, 11, "a", 1, "x"), proc(11, 10, "a", 1, "y")]
    view = build_view(rows, ViewSpec(tree=True, sort="pid", reverse=False))
    assert sorted(k[0] for k in view.order) == [1, 10, 11]


def test_xid_names_the_guest_to_show(tmp_path):
    paths = Paths.from_root(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.config_file("web").write_text("")
    assert guest_of(paths, "web") == "web" and guest_of(paths, "0") == ""
    with pytest.raises(VstuiError, match="no running guest has context 4242"):
        guest_of(paths, "4242")
    with pytest.raises(VstuiError, match="no such guest") as err:
        guest_of(paths, "nosuch")
    assert err.value.guest == "nosuch"


def test_shipped_themes_all_load():
    themes, failures = load_themes([SHIPPED_DIR])
    assert failures == []
    assert {"dark", "light", "high-contrast", "ansi"} <= set(themes)
    assert themes["ansi"].ansi and not themes["light"].dark


def test_bad_theme_files_fail_soft(tmp_path):
    (tmp_path / "broken.toml").write_text("this is = = not toml")
    (tmp_path / "noprimary.toml").write_text("[colors]\nbackground = '#000000'\n")
    (tmp_path / "badcolour.toml").write_text("[colors]\nprimary = 'not-a-colour'\n")
    (tmp_path / "good.toml").write_text("[colors]\nprimary = '#123456'\n")
    themes, failures = load_themes([tmp_path])
    assert set(themes) == {"good"}
    assert sorted(p.name for p, _ in failures) == [
        "badcolour.toml",
        "broken.toml",
        "noprimary.toml",
    ]
    with pytest.raises(ValueError, match="unknown colour"):
        parse_theme("x", {"colors": {"primary": "#fff", "bogus": "#000"}})


def test_keymap_by_binding_id(tmp_path):
    keymap, problems = parse_keymap({"keys": {"kill": "f9, K", "nope": "x", "enter": ""}})
    assert keymap == {"vstui.kill": "f9,K"}
    assert len(problems) == 2
    path = tmp_path / "keymap.toml"
    path.write_text('[keys]\nenter = "ctrl+e"\n')
    assert load_keymap(path) == ({"vstui.enter": "ctrl+e"}, [])
    path.write_text("[keys\n")
    assert load_keymap(path)[1]


# -- the facade's read-only gate ------------------------------------------
class Untouchable(Engine):
    """A read-only engine whose parts explode if anything reaches them."""

    def _mod(self, dotted):
        raise AssertionError(f"read-only facade touched {dotted}")


CALLS = {
    "start": lambda e: e.start("web"),
    "stop": lambda e: e.stop("web"),
    "restart": lambda e: e.restart("web"),
    "build": lambda e: e.build("web"),
    "delete": lambda e: e.delete("web"),
    "exec": lambda e: e.exec_argv("web", "true"),
    "enter": lambda e: e.enter_argv("web"),
    "kill": lambda e: e.kill(1, 0, signal.SIGTERM, "web"),
    "save_config": lambda e: e.save_config("web", {"V_MEMORY": "1G"}),
    "apply_limits": lambda e: e.apply_limits("web"),
    "vserver": lambda e: e.tool_argv("vserver", ["web", "quota", "2G"]),
    "freeze": lambda e: e.freeze("web"),
    "thaw": lambda e: e.thaw("web"),
    "snapshot_create": lambda e: e.snapshot_create("web", "s1"),
    "snapshot_restore": lambda e: e.snapshot_restore("web", "s1"),
    "snapshot_delete": lambda e: e.snapshot_delete("web", "s1"),
    "clone": lambda e: e.clone("web", "web2"),
    "export": lambda e: e.export("web", "/tmp/web.tar.zst"),
}


def test_every_mutating_call_is_covered():
    assert set(CALLS) == MUTATING


@pytest.mark.parametrize("op", sorted(CALLS))
def test_read_only_facade_refuses_before_touching(tmp_path, op):
    engine = Untouchable(Paths.from_root(tmp_path), read_only=True)
    with pytest.raises(ReadOnlyError, match="read-only"):
        CALLS[op](engine)


def test_read_only_kill_leaves_the_process_alive(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        engine = Engine(Paths.from_root(tmp_path), read_only=True)
        with pytest.raises(ReadOnlyError):
            engine.kill(sleeper.pid, read_starttime(sleeper.pid), signal.SIGKILL)
        time.sleep(0.05)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_kill_refuses_a_reused_pid(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        engine = Engine(Paths.from_root(tmp_path))
        with pytest.raises(VstuiError, match="exited"):
            engine.kill(sleeper.pid, read_starttime(sleeper.pid) - 1)
        assert sleeper.poll() is None
        engine.kill(sleeper.pid, read_starttime(sleeper.pid))
        assert sleeper.wait(5) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


def test_reading_is_allowed_and_missing_parts_are_named(tmp_path):
    engine = Engine(Paths.from_root(tmp_path), read_only=True)
    assert engine.log_tail("web") == []
    log = engine.paths.log_file("web")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(500)))
    assert tail_file(log, 3) == ["line 497", "line 498", "line 499"]
    assert not engine.available("engine.nosuchpart")
    with pytest.raises(VstuiError, match="not available in this build"):
        engine._mod("engine.nosuchpart")


def test_main_routes_audit_and_checks_the_delay(capsys):
    from vstui.app import main as main_mod

    assert main_mod._first_word(["--root", "audit", "--read-only"]) is None
    assert main_mod._first_word(["--root", "/x", "audit", "--json"]) == 2
    with pytest.raises(SystemExit):
        main_mod.parse_args(["-d", "0.1"])
    assert "minimum is 0.5" in capsys.readouterr().err
    assert main_mod.parse_args(["-d", "2", "--theme", "ansi"]).delay == 2.0


def test_runtime_functions_survive_importing_their_modules(tmp_path):
    """engine.runtime.start/stop stay functions once their modules are imported."""
    import importlib

    start_module = importlib.import_module("engine.runtime.supervisor")
    stop_module = importlib.import_module("engine.runtime.stopping")
    engine = Engine(Paths.from_root(tmp_path))
    assert callable(engine._runtime("start")) and callable(engine._runtime("stop"))
    assert engine._runtime("start").__module__ == "engine.runtime"
    assert start_module.start is not engine._runtime("start")
    assert stop_module.stop is not None


# -- the poller and news from the hosts of a fleet --------------------------------------
def polls_into(times: list[float], seen: threading.Event, count: int):
    def take() -> None:
        times.append(time.monotonic())
        if len(times) >= count:
            seen.set()

    return take


def test_news_from_a_host_polls_the_fleet_console_at_once() -> None:
    """A host's frame wakes the console's poll: a change shows within the host's
    frame and half an interval, not a whole console interval later."""
    from engine.remote.hosts import Host
    from vstui.app.fleet import FleetEngine
    from vstui.app.poller import Poller

    engine = FleetEngine([Host("a", "root@a.invalid")], interval=60)  # never connected
    times: list[float] = []
    seen = threading.Event()
    poller = Poller(polls_into(times, seen, 2), 60, lambda exc: None)
    engine.wake = poller.wake
    poller.start()
    try:
        engine.fleet.changed()  # what a host's link calls when a frame arrived
        assert seen.wait(30), "the news did not poll before the 60 s interval"
    finally:
        poller.stop()


def test_wakes_are_paced_by_the_min_gap() -> None:
    """Ten hosts' news a second polls at most once per ``min_gap``."""
    from vstui.app.poller import Poller

    times: list[float] = []
    seen = threading.Event()
    poller = Poller(polls_into(times, seen, 4), 60, lambda exc: None, min_gap=0.2)
    poller.start()
    try:
        while not seen.wait(0.01):
            poller.wake()
    finally:
        poller.stop()
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times))


def test_storage_actions_on_a_remote_guest_say_the_command_to_run() -> None:
    """freeze, thaw, clone and snapshots are not routed to other hosts by the
    console: each says so in one line with the vserver --host command."""
    from engine.remote.hosts import Host
    from vstui.app.fleet import FleetEngine

    engine = FleetEngine([Host("a", "root@a.invalid")])  # never connected
    calls = {
        "vserver --host a web freeze": lambda: engine.freeze("a/web"),
        "vserver --host a web thaw": lambda: engine.thaw("a/web"),
        "vserver --host a web clone web2": lambda: engine.clone("a/web", "web2", (), None, None),
        "vserver --host a web snapshot list": lambda: engine.snapshots("a/web"),
        "vserver --host a web snapshot create": lambda: engine.snapshot_create("a/web"),
        "vserver --host a web snapshot restore s1": lambda: engine.snapshot_restore("a/web", "s1"),
        "vserver --host a web snapshot delete s1": lambda: engine.snapshot_delete("a/web", "s1"),
    }
    for command, call in calls.items():
        with pytest.raises(VstuiError) as caught:
            call()
        assert caught.value.message.endswith(f"run {command}"), caught.value.message
        assert "\n" not in caught.value.message


def test_gc_policy_collects_the_oldest_objects_when_nobody_types():
    """CPython's own collection of the oldest generation stopped the UI for
    40-60 ms every 2-3 s at 10,000 processes, whatever key it was answering:
    the console collects it itself, when no key came for a second (at most
    every 30 s), and after a minute whatever the user does."""
    now = [0.0]
    runs: list[float] = []
    policy = GcPolicy(quiet=1, every=30, at_most=60, first=30, clock=lambda: now[0],
                      collect=lambda: runs.append(now[0]))  # fmt: skip

    def at(t: float, typing: bool = False) -> bool:
        now[0] = t
        if typing:
            policy.input()
        return policy.tick()

    assert not at(10) and not at(29.5)
    assert at(30) and runs == [30]  # quiet since the start
    assert not at(45) and not at(59.9, typing=True) and not at(60.5)  # a key 0.6 s ago
    assert at(61) and runs == [30, 61]
    for t in range(62, 122):  # typing all the time
        at(t, typing=True)
    assert runs == [30, 61, 121]  # a minute after the last one
    saved = gc.get_threshold()
    policy.start()
    try:
        assert gc.get_threshold() == (saved[0], saved[1], NEVER)
    finally:
        policy.stop()
    assert gc.get_threshold() == saved


def test_gc_policy_collects_first_once_the_console_is_up():
    """The first full collection walks all the console built while starting
    (14 ms at 160x48) and freezes what survives: it comes ``first`` seconds in,
    a cost of the start, not in the middle of the first half-minute of use;
    later ones every ``every`` seconds. A key pressed puts it off as any."""
    now = [0.0]
    runs: list[float] = []
    policy = GcPolicy(clock=lambda: now[0], collect=lambda: runs.append(now[0]), freeze=list)
    policy.start()
    try:
        for t in range(1, 70):
            now[0] = float(t)
            if t == 5:
                policy.input()  # a key at 5 s: a second later
            policy.tick()
    finally:
        policy.stop()
    assert runs == [6.0, 36.0, 66.0]


def test_gc_policy_freezes_what_survives_its_first_collection_once():
    """What the console built while starting (screens, widgets) survives the
    first full collection; each later one walked it again: it is frozen then,
    once, and only while the policy runs."""
    now = [0.0]
    events: list[str] = []
    policy = GcPolicy(clock=lambda: now[0], collect=lambda: events.append("collect"),
                      freeze=lambda: events.append("freeze"))  # fmt: skip
    saved = gc.get_threshold()
    policy.start()
    try:
        for t in (30, 60, 90):
            now[0] = t
            assert policy.tick()
    finally:
        policy.stop()
    assert events == ["freeze", "collect", "freeze", "collect", "collect"]
    assert gc.get_threshold() == saved


def test_gc_policy_leaves_what_the_app_was_built_from_out_of_collections():
    """Each full collection walked the 40,000 objects of the imported modules
    again (40-45 ms every 30 s on an idle host): they are frozen while the
    policy runs, and thawed when it stops (many apps run in one test process)."""
    policy = GcPolicy()
    policy.start()
    try:
        assert gc.get_freeze_count() > 1000
    finally:
        policy.stop()
    assert gc.get_freeze_count() == 0


def test_the_console_holds_off_the_oldest_generation_while_it_runs(tmp_path):
    """The policy is on while the app runs, CPython's thresholds are back after."""
    saved = gc.get_threshold()
    app = make_app(tmp_path, interval=3600)

    async def main() -> None:
        async with app.run_test() as pilot:
            await pilot.pause()
            assert gc.get_threshold()[2] == NEVER
            before = app.gc_policy.last_input
            await pilot.press("f12")
            assert app.gc_policy.last_input > before

    asyncio.run(main())
    assert gc.get_threshold() == saved


def test_handover_shows_the_newest_value_once_on_the_loop() -> None:
    """Values put from another thread while the loop is busy are not shown one
    after the other: the newest alone, once, on the loop's thread, in the
    context given (where Textual finds its app)."""
    import asyncio
    import contextvars

    from vstui.app.poller import Handover

    where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="none")
    shown: list[tuple[int, str, bool]] = []
    loop = asyncio.new_event_loop()
    try:
        context = contextvars.copy_context()
        context.run(where.set, "ui")
        ui = threading.get_ident()

        def show(value: int) -> None:
            shown.append((value, where.get(), threading.get_ident() == ui))

        box = Handover(loop, show, context, failed=lambda exc: None)
        putter = threading.Thread(target=lambda: [box.put(n) for n in (1, 2, 3)])
        putter.start()
        putter.join()
        loop.run_until_complete(asyncio.sleep(0))
        box.put(4)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert shown == [(3, "ui", True), (4, "ui", True)]


def test_handover_hands_what_show_raised_to_failed_and_goes_on() -> None:
    import asyncio
    import contextvars

    from vstui.app.poller import Handover

    failures: list[Exception] = []
    shown: list[int] = []

    def show(value: int) -> None:
        if value == 1:
            raise ValueError("bad poll")
        shown.append(value)

    loop = asyncio.new_event_loop()
    try:
        box = Handover(loop, show, contextvars.copy_context(), failures.append)
        for value in (1, 2):
            box.put(value)
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert [str(e) for e in failures] == ["bad poll"] and shown == [2]
    box.put(3)  # the loop is closed (the app ended): nothing happens, nothing raises
