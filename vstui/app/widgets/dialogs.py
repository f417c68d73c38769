"""Modal dialogs: confirm, pick one, forms, typed-name delete, kill, exec output.

A confirmation says what it will do to what, and its default (the focused
button, what Enter does) is chosen per action: Cancel where one key
reached it by accident (stop, restart: k9s#146), the action where the user
already chose it on purpose in the dialog itself (the signal to send).
``y`` confirms and ``n``/Esc cancel in every confirmation.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from engine.text import log_lines
from vstui.app.widgets.lists import CheckBox, KeyList, KeyLog, KeyScroll

DIALOG_CSS = """
.dialog { width: 70; max-width: 95%; height: auto; max-height: 90%; padding: 1 2;
          border: thick $primary; background: $surface; }
.dialog:ansi { border: solid ansi_blue; background: ansi_default; }
.dialog .title { text-style: bold; margin-bottom: 1; }
.dialog .buttons { height: auto; margin-top: 1; align-horizontal: right; }
.dialog Button { margin-left: 2; }
.dialog Input { margin-bottom: 1; }
.dialog OptionList { height: auto; max-height: 16; }
"""


CONFIRM_KEYS: list[Binding] = [
    Binding("escape,n", "cancel", "Cancel"),
    Binding("y", "confirm", "Yes", show=False),
]


class ConfirmDialog(ModalScreen[bool]):
    """Yes/no; returns True only when confirmed. ``default`` is the button
    Enter presses: "cancel" (the safe one) or "confirm"."""

    DEFAULT_CSS = "ConfirmDialog { align: center middle; }" + DIALOG_CSS
    BINDINGS: ClassVar = CONFIRM_KEYS

    def __init__(
        self, title: str, body: str, confirm: str = "OK", danger: bool = True,
        default: str = "cancel",
    ) -> None:  # fmt: skip
        super().__init__()
        self.title_text, self.body, self.confirm, self.danger = title, body, confirm, danger
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title", markup=False)
            yield Static(self.body, markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel (n)", id="cancel")
                yield Button(
                    f"{self.confirm} (y)", id="confirm",
                    variant="error" if self.danger else "primary",
                )  # fmt: skip

    def on_mount(self) -> None:
        self.query_one(f"#{self.default}").focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


class PickDialog(ModalScreen[str | None]):
    """Pick one option; ``preselect`` is highlighted (TERM for kill)."""

    DEFAULT_CSS = "PickDialog { align: center middle; }" + DIALOG_CSS
    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, options: Sequence[tuple[str, str]], preselect: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.options = list(options)  # (id, label)
        self.preselect = preselect

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title", markup=False)
            yield KeyList(*[Option(label, id=oid) for oid, label in self.options])

    def on_mount(self) -> None:
        options = self.query_one(KeyList)
        ids = [oid for oid, _ in self.options]
        options.highlighted = ids.index(self.preselect) if self.preselect in ids else 0
        options.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FormDialog(ModalScreen[dict[str, str] | None]):
    """A few labelled inputs, one line each (seven fit 80x24 with room to
    spare); returns their values by field id. Each field is (id, hint,
    default): the id names the line, the hint is the empty input's text."""

    DEFAULT_CSS = (
        "FormDialog { align: center middle; }" + DIALOG_CSS + """
    FormDialog .dialog { width: 80; }
    FormDialog .field { height: 1; margin-bottom: 1; }
    FormDialog .field Label { width: 14; }
    FormDialog .field Input { width: 1fr; height: 1; border: none; padding: 0 1;
                              margin: 0; background: $boost; }
    FormDialog .field Input:focus { background: $primary 30%; }
    FormDialog .buttons Button { min-width: 10; }
    """
    )  # fmt: skip
    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, title: str, fields: Sequence[tuple[str, str, str]], submit: str = "OK"
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = list(fields)  # (id, label, default)
        self.submit = submit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title", markup=False)
            for fid, hint, default in self.fields:
                with Horizontal(classes="field"):
                    yield Label(fid.replace("_", " "), markup=False)
                    yield Input(value=default, placeholder=hint, id=f"field-{fid}")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button(self.submit, id="submit", variant="primary", compact=True)

    def values(self) -> dict[str, str]:
        return {
            fid: self.query_one(f"#field-{fid}", Input).value.strip() for fid, _, _ in self.fields
        }

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.dismiss(self.values())

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.values() if event.button.id == "submit" else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TypeNameDialog(ModalScreen[str | None]):
    """Destructive confirmation: the user types the guest's name (GitHub style).

    A running guest is offered a stop first, in this dialog, before the name
    is asked for (ticked by default; without it Delete stays off, as the
    engine refuses to delete a running guest). Returns "delete",
    "stop+delete", or None when cancelled.
    """

    DEFAULT_CSS = "TypeNameDialog { align: center middle; }" + DIALOG_CSS
    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, title: str, body: str, name: str, confirm: str = "Delete", running: bool = False
    ) -> None:
        super().__init__()
        self.title_text, self.body, self.expected, self.confirm = title, body, name, confirm
        self.running = running

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title", markup=False)
            yield Static(self.body, markup=False)
            if self.running:
                yield CheckBox(
                    f"{self.expected} is running: stop it first", True, id="stop-first",
                    compact=True,
                )  # fmt: skip
            yield Input(placeholder=f"type {self.expected} to confirm", id="typed")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.confirm, id="confirm", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#typed", Input).focus()

    def _ready(self) -> bool:
        typed = self.query_one("#typed", Input).value == self.expected
        return typed and (not self.running or self._stop_first())

    def _stop_first(self) -> bool:
        return self.running and self.query_one("#stop-first", CheckBox).value

    @on(Input.Changed)
    @on(CheckBox.Changed)
    def _changed(self) -> None:
        self.query_one("#confirm", Button).disabled = not self._ready()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        if self._ready():
            self._done()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self._done()
        else:
            self.dismiss(None)

    def _done(self) -> None:
        self.dismiss("stop+delete" if self._stop_first() else "delete")

    def action_cancel(self) -> None:
        self.dismiss(None)


class KillDialog(ModalScreen[str | None]):
    """One confirmation for a signal: every target listed, the signal picked
    from a list (TERM highlighted). Enter sends the highlighted signal (the
    default is the action: the user chose it here), Esc cancels."""

    DEFAULT_CSS = (
        "KillDialog { align: center middle; }" + DIALOG_CSS + """
    KillDialog .dialog { width: 90; padding: 0 1; }
    KillDialog .dialog #targets { height: auto; max-height: 6; }
    KillDialog .dialog #targets:focus { background: $boost; }
    KillDialog .dialog KeyList { max-height: 7; }
    KillDialog .buttons Button { min-width: 10; }
    """
    )  # fmt: skip
    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
        signals: Sequence[tuple[str, str]], preselect: str = "TERM",
    ) -> None:  # fmt: skip
        super().__init__()
        self.title_text = title
        self.header, self.rows = list(header), [list(r) for r in rows]
        self.signals, self.preselect = list(signals), preselect

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title", markup=False)
            with KeyScroll(id="targets"):
                yield Static(self._table())
            if len(self.rows) > 5:
                yield Label(f"{len(self.rows)} targets: shift+tab, then j/k, scrolls the list",
                            markup=False)  # fmt: skip
            yield Label("signal (enter sends it, esc cancels):", markup=False)
            yield KeyList(*[Option(label, id=oid) for oid, label in self.signals])
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button(f"Send {self.preselect}", id="send", variant="error", compact=True)

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, show_edge=False, expand=False)
        for i, title in enumerate(self.header):
            table.add_column(title, no_wrap=True, justify="right" if i in (0, 2) else "left",
                             overflow="ellipsis", max_width=None if i < 3 else 48)  # fmt: skip
        for row in self.rows:
            table.add_row(*[Text(cell) for cell in row])
        return table

    def on_mount(self) -> None:
        options = self.query_one(KeyList)
        ids = [oid for oid, _ in self.signals]
        options.highlighted = ids.index(self.preselect) if self.preselect in ids else 0
        options.focus()

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one("#send", Button).label = f"Send {event.option.id}"

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "send":
            self.dismiss(None)
            return
        options = self.query_one(KeyList)
        option = options.get_option_at_index(options.highlighted or 0)
        self.dismiss(option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ExecOutput(ModalScreen[int | None]):
    """Runs a command, streams its output into a pane, shows its exit status."""

    DEFAULT_CSS = """
    ExecOutput { align: center middle; }
    ExecOutput > Vertical { width: 95%; height: 90%; border: thick $primary; background: $surface; }
    ExecOutput:ansi > Vertical { border: solid ansi_blue; background: ansi_default; }
    ExecOutput KeyLog { height: 1fr; }
    ExecOutput #status { height: 1; text-style: bold; }
    """
    BINDINGS: ClassVar = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, argv: Sequence[str]) -> None:
        super().__init__()
        self.title_text = title
        self.argv = list(argv)
        self.status: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._done = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title", markup=False)
            yield KeyLog(id="output", auto_scroll=False)
            yield Label("running…", id="status")

    def on_mount(self) -> None:
        self.stream()

    @work(thread=True, exclusive=True, group="exec", exit_on_error=False, description="exec")
    def stream(self) -> None:
        log = self.query_one(KeyLog)
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self.app.call_from_thread(self._finish, 127, f"cannot run: {exc}")
            return
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:  # what the guest's command printed: made visible
            for line in log_lines(raw):
                self.app.call_from_thread(log.write_line, line)
        self.app.call_from_thread(self._finish, self._proc.wait(), "")

    def _finish(self, status: int, note: str) -> None:
        self.status = status
        if note:
            self.query_one(KeyLog).write_line(note)
        word = "ok" if status == 0 else "failed"
        self.query_one("#status", Label).update(f"exit status {status} ({word}) — esc closes")
        self._done.set()

    def action_close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # our own child, by its Popen handle
        self.dismiss(self.status)
