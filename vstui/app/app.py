"""The vstui console: polling, screens, and the guest operations.

Data flows one way: the poller's thread takes a snapshot off the UI thread,
posts it, and the screen on top updates its rows by key. The next poll is
armed only after one finishes (dolphie), so polls never overlap and a slow
/proc walk stretches the interval instead of piling up.

Every operation that changes the host goes through ``check_action`` (the
registry's ``allowed``), and then again through the engine facade, which
refuses it in read-only mode before touching anything.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from textual import events, work
from textual.actions import ActionParseResult
from textual.actions import parse as parse_action
from textual.app import App
from textual.binding import Binding
from textual.dom import DOMNode
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver
from textual.message import Message
from textual.worker import Worker, WorkerState

from engine.datamodel import ProcRow, Snapshot
from engine.errors import VstuiError
from engine.facade import Engine, SaveResult
from engine.text import visible
from vstui.app.actions import BY_ID, allowed, bindings, refused
from vstui.app.commands import VstuiCommands
from vstui.app.driver import QuickEscDriver
from vstui.app.fleet import FleetEngine
from vstui.app.gcpolicy import GcPolicy
from vstui.app.history import History
from vstui.app.nocolor import NOCOLOR_CSS, strip_colors
from vstui.app.poller import Handover, Poller
from vstui.app.procview import ProcIndex, ViewSpec
from vstui.app.screens.audit import AuditScreen
from vstui.app.screens.base import VstuiScreen
from vstui.app.screens.detail import DetailScreen, LogTail
from vstui.app.screens.editor import EditorScreen
from vstui.app.screens.guests import GuestsScreen
from vstui.app.screens.help import HelpScreen
from vstui.app.screens.procs import ProcessesScreen
from vstui.app.shell import ShellRunner, SuspendRunner
from vstui.app.source import SnapshotSource
from vstui.app.steady import Steadier
from vstui.app.themes import DEFAULT_THEME, load_themes
from vstui.app.widgets.dialogs import ConfirmDialog, ExecOutput, FormDialog, TypeNameDialog
from vstui.app.widgets.paint import paint_now

MIN_INTERVAL = 0.5

# The new-guest dialog: (field, hint, default); the last three are NAME.conf keys.
BUILD_FIELDS = (
    ("name", "a hostname label, e.g. web2", ""),
    ("template", "skeleton, busybox, debootstrap[:SUITE], tarball:PATH", "skeleton"),
    ("hostname", "default: the name", ""),
    ("address", "e.g. 198.18.0.20/24 (none: no network address)", ""),
    ("memory", "V_MEMORY, e.g. 256M (empty: unlimited)", ""),
    ("disk", "V_DISK, e.g. 2G (empty: unlimited)", ""),
    ("capabilities", "S_CAPS: added or !removed, e.g. NET_RAW !SYS_CHROOT", ""),
)
BUILD_KEYS = {"memory": "V_MEMORY", "disk": "V_DISK", "capabilities": "S_CAPS"}


class SnapshotReady(Message):
    """A new snapshot from the poll worker; newer ones replace older unread ones.

    ``index`` is its processes prepared off the UI thread (sorted for the
    view on screen), so showing it costs the UI thread next to nothing.
    """

    def __init__(self, snap: Snapshot, index: ProcIndex | None = None) -> None:
        super().__init__()
        self.snap = snap
        self.index = index

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


class PollFailed(Message):
    """A snapshot failed (the poller goes on and tries again)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error


class VstuiApp(App[int]):
    """Linux virtual servers at a glance, with start/enter/exec/kill."""

    TITLE = "vstui"
    CSS = "Screen { background: $background; }" + NOCOLOR_CSS
    BINDINGS: ClassVar = [*bindings("app"), Binding("ctrl+c", "quit", show=False)]
    COMMANDS = App.COMMANDS | {VstuiCommands}
    ENABLE_COMMAND_PALETTE = True

    def __init__(
        self,
        engine: Engine,
        source: SnapshotSource,
        *,
        interval: float = 1.0,
        theme: str | None = None,
        runner: ShellRunner | None = None,
        first_screen: str = "guests",
        keymap: dict[str, str] | None = None,
        notices: Iterable[str] = (),
        guest: str | None = None,
    ) -> None:
        super().__init__()
        if self.no_color:
            self._filters = strip_colors(self._filters)
        self.engine = engine
        self.source = source
        self.interval = max(MIN_INTERVAL, interval)
        self.runner = runner or SuspendRunner()
        self.first_screen = first_screen
        self.snapshot: Snapshot | None = None
        self.history = History()
        self.keymap = keymap or {}
        self._notices = list(notices)
        self._poll_error = ""
        self._theme_name = theme or DEFAULT_THEME
        self.guest_filter = guest
        # The process view on screen (set by the UI thread, read by the poll
        # worker to sort and filter the next snapshot before handing it over).
        self.view_hint: ViewSpec | None = None
        self._index: tuple[Snapshot, ProcIndex] | None = None
        self.steady = Steadier()  # used by the poller's thread only
        self.gc_policy = GcPolicy()
        # per kind of screen: (sort column, reversed, tree), kept across visits
        self.views: dict[str, tuple[str, bool, bool]] = {}
        self.poller = Poller(self.take_snapshot, self.interval,
                             lambda exc: self.post_message(PollFailed(exc)))  # fmt: skip
        self._handover: Handover[tuple[Snapshot, ProcIndex | None]] | None = None

    @property
    def read_only(self) -> bool:
        return self.engine.read_only

    def notify(self, message: str, *, title: str = "", **kw: Any) -> None:
        """Every notification, made safe once: messages quote guests' names,
        paths and commands (engine.text.visible; the data is visible already)."""
        super().notify(visible(str(message)), title=visible(title), **kw)

    def get_driver_class(self) -> type[Driver]:
        driver = super().get_driver_class()
        return QuickEscDriver if driver is LinuxDriver else driver

    # -- start-up ------------------------------------------------------
    def on_mount(self) -> None:
        self.gc_policy.start()
        self._handover = Handover(asyncio.get_running_loop(), self._show_poll,
                                  contextvars.copy_context(), self._handle_exception)  # fmt: skip
        self._load_themes()
        if self.keymap:
            self.set_keymap(self.keymap)
        for text in self._notices:
            self.notify(text, severity="warning", timeout=8)
        self.push_screen(self._guests_screen())
        if self.first_screen == "processes":
            self.focus_host(self.guest_filter)
            self.push_screen(ProcessesScreen(self.guest_filter))
        elif self.first_screen == "audit":
            self.push_screen(AuditScreen())
        self.call_after_refresh(self.poller.start)  # the first screen is up by then
        if self.fleet is not None:  # a host's news polls at once, twice an interval at most
            self.poller.min_gap = self.interval / 2
            self.fleet.wake = self.poller.wake

    def _load_themes(self) -> None:
        themes, failures = load_themes()
        for theme in themes.values():
            self.register_theme(theme)
        if failures:
            names = ", ".join(f"{p.name} ({err})" for p, err in failures)
            self.notify(f"failed to read {len(failures)} theme(s): {names}", severity="warning")
        if self._theme_name in themes or self._theme_name in self.available_themes:
            self.theme = self._theme_name
        else:
            self.notify(
                f"unknown theme '{self._theme_name}'; using {DEFAULT_THEME}", severity="warning"
            )
            self.theme = DEFAULT_THEME if DEFAULT_THEME in themes else "textual-dark"

    # -- polling -------------------------------------------------------
    def take_snapshot(self) -> None:
        """One poll (in the poller's thread): snapshot, steady figures, and
        the processes sorted and filtered for the view on screen."""
        self.gc_policy.tick()  # while nobody types: the oldest objects, ~50 ms
        hint = self.view_hint
        if hasattr(self.source, "kernel_threads"):  # read every second only when listed
            self.source.kernel_threads = hint is not None and hint.kernel
        snap = self.steady.apply(self.source.snapshot())
        index = ProcIndex(snap.procs)
        if hint is not None:
            index.view(hint)
        if self._handover is not None:
            self._handover.put((snap, index))

    def index_for(self, snap: Snapshot) -> ProcIndex:
        """The prepared processes of ``snap`` (made here if the worker did not)."""
        if self._index is None or self._index[0] is not snap:
            self._index = (snap, ProcIndex(snap.procs))
        return self._index[1]

    def on_poll_failed(self, message: PollFailed) -> None:
        text = f"snapshot failed: {message.error}"
        if text != self._poll_error:  # once per distinct failure, not every second
            self._poll_error = text
            self.notify(text, severity="error", timeout=10)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR:
            self.notify(f"{worker.description or worker.name}: {worker.error}", severity="error")

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self.gc_policy.input()
        await super().on_event(event)

    def on_unmount(self) -> None:
        self.gc_policy.stop()
        self.poller.stop()
        if self.fleet is not None:
            self.fleet.close()

    # -- many hosts (vstui --host) ---------------------------------------
    @property
    def fleet(self) -> FleetEngine | None:
        """The engine door of many hosts, when the console has them."""
        return self.engine if isinstance(self.engine, FleetEngine) else None

    def _guests_screen(self) -> GuestsScreen:
        if self.fleet is None:
            return GuestsScreen()
        from vstui.app.screens.fleet import FleetGuestsScreen

        return FleetGuestsScreen()

    def focus_host(self, name: str | None) -> None:
        """Processes travel for one host at a time: the one of ``name`` (HOST/NAME),
        else the guests screen's current row, else the first host."""
        fleet = self.fleet
        if fleet is None:
            return
        host = name.partition("/")[0] if name else self.default_host()
        fleet.source.watch_processes(host)

    def log_tail_for(self, name: str) -> LogTail:
        """How the detail screen follows a guest's console log (the agent's, on a host)."""
        if self.fleet is not None:
            from vstui.app.fleet import RemoteLogTail

            return RemoteLogTail(self.fleet, name)  # type: ignore[return-value]
        return LogTail(self.engine.paths.log_file(name))

    def default_host(self) -> str:
        """The host of the guests screen's current row (else the first host)."""
        fleet = self.fleet
        assert fleet is not None
        for screen in self.screen_stack:
            if isinstance(screen, GuestsScreen) and screen.is_mounted:
                key = screen.table.cursor_key
                if key:
                    return str(key).partition("/")[0]
        return next(iter(fleet.hosts))

    @property
    def suspended(self) -> bool:
        return self.poller.paused

    @suspended.setter
    def suspended(self, value: bool) -> None:
        self.poller.paused = value

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self._show_poll((message.snap, message.index))

    def _show_poll(self, poll: tuple[Snapshot, ProcIndex | None]) -> None:
        """A snapshot on screen (the UI thread): the poll thread's by the
        Handover, a test's by a SnapshotReady message."""
        snap, index = poll
        self._poll_error = ""
        self.snapshot = snap
        if index is not None:
            self._index = (snap, index)
        self.history.add(snap)
        if not self.screen_stack:  # shutting down: the poller's last word
            return
        screen = self.screen
        # A screen still composing shows the newest snapshot from its on_mount.
        if isinstance(screen, VstuiScreen) and screen.bar is not None:
            screen.show_snapshot(snap)
            paint_now(screen)  # this poll's changes, without a second wake

    # -- the gate ------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return allowed(action, self.read_only)

    async def run_action(
        self, action: str | ActionParseResult, default_namespace: DOMNode | None = None,
        namespaces: Mapping[str, DOMNode] | None = None,
    ) -> bool:  # fmt: skip
        """Every key and command comes here: one the read-only gate refuses
        says why in the footer instead of doing nothing."""
        name = (parse_action(action) if isinstance(action, str) else action)[1]
        if refused(name, self.read_only):
            self.explain_refusal(name)
            return True
        return await super().run_action(action, default_namespace, namespaces)

    def explain_refusal(self, action: str) -> None:
        spec = BY_ID[action]
        why = "not root" if os.geteuid() != 0 else "--read-only"
        text = (f"read-only ({why}): {spec.description} changes the host and is off; "
                "vstui as root without --read-only can")  # fmt: skip
        screen = self.screen
        if isinstance(screen, VstuiScreen):
            screen.say(text)
        else:
            self.notify(text, severity="warning")

    # -- navigation ----------------------------------------------------
    def action_help(self) -> None:
        screen = self.screen
        scope = getattr(screen, "SCOPE", "app") or "app"
        title = getattr(screen, "TITLE_TEXT", "vstui")
        self.push_screen(HelpScreen(scope, title, self.read_only, self.keymap))

    def action_palette(self) -> None:
        self.action_command_palette()

    def _base(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def action_show_guests(self) -> None:
        self._base()

    def action_show_processes(self) -> None:
        self.open_processes()

    def action_show_audit(self) -> None:
        self._base()
        self.push_screen(AuditScreen())

    def go_back(self) -> None:
        if len(self.screen_stack) > 2:
            self.pop_screen()

    def open_detail(self, name: str, log: bool = False) -> None:
        self.focus_host(name)
        self.push_screen(DetailScreen(name, log=log))

    def open_processes(self, guest: str | None = None) -> None:
        self.focus_host(guest)
        self._base()
        self.push_screen(ProcessesScreen(guest))

    def open_editor(self, name: str) -> None:
        self.push_screen(EditorScreen(name))

    # -- operations (workers; errors become notifications) -------------
    @work(thread=True, group="ops", exit_on_error=False, description="operation")
    def _run(
        self, what: str, call: Callable[[], object], done: Callable[[object], None] | None
    ) -> None:
        try:
            result = call()
        except VstuiError as exc:
            who = f"{exc.guest}: " if exc.guest else ""
            self.call_from_thread(self.notify, f"{what}: {who}{exc.message}", severity="error")
            return
        if done is not None:
            self.call_from_thread(done, result)
        else:
            self.call_from_thread(self.notify, f"{what}: done")

    def op_start(self, name: str) -> None:
        self._run(f"start {name}", lambda: self.engine.start(name), None)

    def op_stop(self, name: str) -> None:
        """Stop asks, as restart does: ``-`` is also htop's fold key."""
        dialog = ConfirmDialog(
            f"Stop {name}?", f"Every process of {name} is stopped (TERM, then KILL).", "Stop"
        )
        self.push_screen(dialog, lambda ok: ok and self.op_stop_now(name))

    def op_stop_now(self, name: str) -> None:
        self._run(f"stop {name}", lambda: self.engine.stop(name), None)

    def op_restart(self, name: str) -> None:
        dialog = ConfirmDialog(
            f"Restart {name}?", f"Every process of {name} is stopped.", "Restart"
        )
        self.push_screen(dialog, lambda ok: ok and self.op_restart_now(name))

    def op_restart_now(self, name: str) -> None:
        self._run(f"restart {name}", lambda: self.engine.restart(name), None)

    def op_build(self) -> None:
        self.push_screen(FormDialog("Build a new guest", BUILD_FIELDS, "Build"), self._build)

    def _build(self, values: dict[str, str] | None) -> None:
        if not values or not values.get("name"):
            return
        name = values["name"]
        if self.fleet is not None and "/" not in name:
            name = f"{self.default_host()}/{name}"  # HOST/NAME: the current row's host
        addresses = values.get("address", "").split()
        options = {key: values[fid] for fid, key in BUILD_KEYS.items() if values.get(fid)}
        call = lambda: self.engine.build(  # noqa: E731
            name, values.get("template") or "skeleton", values.get("hostname") or None,
            addresses, options,
        )  # fmt: skip
        self._run(f"build {name}", call, lambda _cfg: self.notify(f"built {name}"))

    def op_delete(self, name: str) -> None:
        body = f"Deletes {name}'s tree, image, configuration and state. This cannot be undone."
        status = self.snapshot.guest(name) if self.snapshot is not None else None
        running = status is not None and status.state not in ("stopped", "unknown")
        dialog = TypeNameDialog(f"Delete {name}?", body, name, running=running)
        self.push_screen(dialog, lambda choice: self._delete(name, choice))

    def _delete(self, name: str, choice: str | None) -> None:
        if choice:
            force = choice == "stop+delete"  # the engine stops it first, then deletes
            self._run(f"delete {name}", lambda: self.engine.delete(name, force=force), None)

    def op_enter(self, name: str) -> None:
        """A login shell in the guest on the real terminal, then back."""
        try:
            argv = self.engine.enter_argv(name)
        except VstuiError as exc:
            self.notify(exc.message, severity="error")
            return
        self.suspended = True
        try:
            status = self.runner.interactive(self, argv)
        except Exception as exc:  # SuspendNotSupported and OSError alike
            self.notify(f"enter {name}: {exc}", severity="error")
            return
        finally:
            self.suspended = False
        self.notify(f"left {name} (exit status {status})")
        self.refresh(layout=True)

    def op_exec(self, name: str) -> None:
        fields = [("command", "command run with /bin/sh -c in the guest", "")]
        self.push_screen(FormDialog(f"Run in {name}", fields, "Run"), lambda v: self._exec(name, v))

    def _exec(self, name: str, values: dict[str, str] | None) -> None:
        if not values or not values.get("command"):
            return
        try:
            argv = self.engine.exec_argv(name, values["command"])
        except VstuiError as exc:
            self.notify(exc.message, severity="error")
            return
        self.push_screen(ExecOutput(f"{name}: {values['command']}", argv))

    def op_kill(self, targets: list[ProcRow], sig: signal.Signals) -> None:
        def call() -> str:
            failed = []
            for p in targets:
                try:
                    self.engine.kill(p.pid, p.starttime, sig, p.guest)
                except VstuiError as exc:
                    failed.append(f"{p.pid}: {exc.message}")
            if failed:
                raise VstuiError("; ".join(failed))
            return f"sent {sig.name} to {len(targets)} process(es)"

        self._run("kill", call, lambda text: self.notify(str(text)))

    def op_save(
        self, name: str, changes: dict[str, str | None], done: Callable[[SaveResult], None]
    ) -> None:
        self._run(f"save {name}", lambda: self.engine.save_config(name, changes), done)
