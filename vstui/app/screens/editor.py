"""Capabilities, flags and limits of one guest, saved to NAME.conf.

Saving writes the file atomically (engine.config.update_config through the
facade), applies limits at once to a running guest, and says which changes
wait for a restart (capabilities, flags, nice) and offers the restart.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, SelectionList, Static
from textual.widgets.selection_list import Selection

from engine import caps as capmod
from engine.errors import VstuiError
from engine.facade import SaveResult
from vstui.app import fmt
from vstui.app.actions import EDITOR, bindings
from vstui.app.screens.base import VstuiScreen
from vstui.app.widgets.dialogs import ConfirmDialog
from vstui.app.widgets.lists import CheckList

FLAGS: tuple[tuple[str, str], ...] = (
    ("lock", "no new contexts from inside (no nested guests)"),
    ("nproc", "ULIMIT -u becomes the guest's process limit"),
    ("private", "refuse enter, exec and signals from the host"),
    ("sched", "enforce the CPU weight and quota"),
    ("fakeinit", "run the guest's own /sbin/init as PID 1"),
    ("hideinfo", "hide host figures in /proc (uptime, loadavg)"),
    ("ulimit", "apply ULIMIT to the guest's init"),
    ("namespace", "a private mount namespace for the guest"),
)

# (NAME.conf key, label, GuestConfig attribute, formatter back to conf syntax)
LIMITS: tuple[tuple[str, str, str, object], ...] = (
    ("V_PIDS", "processes (nproc)", "pids", lambda v: "" if v is None else str(v)),
    ("V_MEMORY", "memory, e.g. 256M", "memory", fmt.config_size),
    ("V_CPU_WEIGHT", "CPU weight 1..10000", "cpu_weight", lambda v: "" if v is None else str(v)),
    ("V_CPU_QUOTA", "CPU quota, e.g. 50%", "cpu_quota", fmt.config_percent),
    ("V_DISK", "disk quota, e.g. 2G", "disk", fmt.config_size),
    ("V_BANDWIDTH_OUT", "bandwidth out, e.g. 10mbit", "bandwidth_out", fmt.config_rate),
    ("V_BANDWIDTH_IN", "bandwidth in, e.g. 10mbit", "bandwidth_in", fmt.config_rate),
    ("S_NICE", "nice -20..19", "nice", lambda v: "" if v is None else str(v)),
)


def caps_value(selected: set[str]) -> str | None:
    """S_CAPS for a chosen set: additions, then ``!`` removals from the default."""
    added = sorted(selected - capmod.DEFAULT_GUEST_CAPS, key=capmod.number)
    removed = sorted(capmod.DEFAULT_GUEST_CAPS - selected, key=capmod.number)
    words = [f"CAP_{c}" for c in added] + [f"!CAP_{c}" for c in removed]
    return " ".join(words) or None


def flags_value(selected: set[str], keep: frozenset[str]) -> str | None:
    """S_FLAGS: the editor's flags plus any other flags the file already had."""
    known = {name for name, _ in FLAGS}
    words = [name for name, _ in FLAGS if name in selected] + sorted(keep - known)
    return " ".join(words) or None


class EditorScreen(VstuiScreen):
    """Edit one guest's capabilities, flags and limits."""

    SCOPE = EDITOR
    TITLE_TEXT = "Edit"
    BINDINGS: ClassVar = bindings(EDITOR)
    DEFAULT_CSS = """
    EditorScreen SelectionList { height: auto; max-height: 20; }
    EditorScreen .section { text-style: bold; margin-top: 1; padding: 0 1; }
    EditorScreen .limit { height: 3; }
    EditorScreen .limit Label { width: 28; padding: 1 1 0 1; }
    EditorScreen .limit Input { width: 1fr; }
    EditorScreen #hint { color: $text-muted; padding: 0 1; }
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.guest = name
        self.cfg = None
        self.original: dict[str, str | None] = {}

    def compose(self) -> ComposeResult:
        yield self.top_bar()
        yield self.notice()
        with VerticalScroll(id="form"):
            yield Static("", id="hint", markup=False)
            yield Label("Capabilities  (* = in the default guest set)", classes="section")
            yield CheckList(id="caps")
            yield Label("Flags  (need a restart)", classes="section")
            yield CheckList(id="flags")
            yield Label("Limits  (applied at once to a running guest; empty = none)",
                        classes="section")  # fmt: skip
            for key, label, _attr, _f in LIMITS:
                with Horizontal(classes="limit"):
                    yield Label(f"{label}", markup=False)
                    yield Input(id=f"limit-{key}", placeholder=key)
        yield from self.footer()

    def on_mount(self) -> None:
        from vstui.app.widgets.topbar import TopBar

        self.query_one(TopBar).title = f"Edit {self.guest}"
        try:
            self.cfg = self.vapp.engine.load_config(self.guest)
        except VstuiError as exc:
            self.set_notice(f"cannot edit: {exc.message}")
            self.query_one("#form").disabled = True
            return
        self._fill()
        if self.vapp.read_only:
            self.set_notice("read-only: shown, not editable")
            self.query_one("#form").disabled = True
        hint = "ctrl+s saves NAME.conf; limits apply live, capabilities and flags at restart"
        self.query_one("#hint", Static).update(hint)
        self.query_one("#caps").focus()

    def _fill(self) -> None:
        cfg = self.cfg
        effective = set(cfg.effective_caps())
        caps = self.query_one("#caps", SelectionList)
        for name in sorted(capmod.all_caps(), key=capmod.number):
            star = "*" if name in capmod.DEFAULT_GUEST_CAPS else " "
            label = f"{star} {name:<19} {capmod.explain(name)}"
            caps.add_option(Selection(label, name, name in effective))
        flags = self.query_one("#flags", SelectionList)
        for name, explain in FLAGS:
            flags.add_option(Selection(f"{name:<10} {explain}", name, name in cfg.flags))
        for key, _label, attr, to_text in LIMITS:
            value = to_text(getattr(cfg, attr, None))
            self.query_one(f"#limit-{key}", Input).value = value
            self.original[key] = value
        self.original["S_CAPS"] = caps_value(effective)
        self.original["S_FLAGS"] = flags_value(set(cfg.flags), frozenset(cfg.flags))

    def changes(self) -> dict[str, str | None]:
        """The NAME.conf keys whose value the user changed (None removes)."""
        if self.cfg is None:
            return {}
        current: dict[str, str | None] = {
            "S_CAPS": caps_value(set(self.query_one("#caps", SelectionList).selected)),
            "S_FLAGS": flags_value(
                set(self.query_one("#flags", SelectionList).selected), frozenset(self.cfg.flags)
            ),
        }
        for key, *_ in LIMITS:
            current[key] = self.query_one(f"#limit-{key}", Input).value.strip()
        return {
            k: (v or None)
            for k, v in current.items()
            if (v or None) != (self.original.get(k) or None)
        }

    def action_save(self) -> None:
        changes = self.changes()
        if not changes:
            self.notify("nothing changed")
            return
        self.vapp.op_save(self.guest, changes, self._saved)

    def _saved(self, result: SaveResult) -> None:
        self.cfg = self.vapp.engine.load_config(self.guest)
        self.original.clear()
        self.query_one("#caps", SelectionList).clear_options()
        self.query_one("#flags", SelectionList).clear_options()
        self._fill()
        parts = [f"saved {', '.join(result.changed)}"]
        if result.applied:
            parts.append(f"applied live: {', '.join(result.applied)}")
        if result.errors:
            parts.append("not applied: " + "; ".join(result.errors))
        self.notify("; ".join(parts), severity="error" if result.errors else "information")
        snap = self.vapp.snapshot
        status = snap.guest(self.guest) if snap else None
        if result.needs_restart and status is not None and status.state == "running":
            body = f"{', '.join(result.needs_restart)} take effect when {self.guest} restarts."
            dialog = ConfirmDialog(f"Restart {self.guest} now?", body, "Restart")
            self.app.push_screen(dialog, lambda ok: ok and self.vapp.op_restart_now(self.guest))
