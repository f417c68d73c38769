"""Modal dialogs: confirm, pick one, forms, typed-name delete, exec output.

Every dangerous confirmation opens with Cancel focused (k9s#146), so an
Enter pressed out of habit does nothing harmful.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Log, OptionList, Static
from textual.widgets.option_list import Option

from engine.text import log_lines

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


class ConfirmDialog(ModalScreen[bool]):
    """Yes/no with Cancel focused; returns True only on the confirm button."""

    DEFAULT_CSS = "ConfirmDialog { align: center middle; }" + DIALOG_CSS
    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: str, confirm: str = "OK", danger: bool = True) -> None:
        super().__init__()
        self.title_text, self.body, self.confirm, self.danger = title, body, confirm, danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title", markup=False)
            yield Static(self.body, markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(
                    self.confirm, id="confirm", variant="error" if self.danger else "primary"
                )

    def on_mount(self) -> None:
        self.query_one("#cancel").focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

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
            yield OptionList(*[Option(label, id=oid) for oid, label in self.options])

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        ids = [oid for oid, _ in self.options]
        options.highlighted = ids.index(self.preselect) if self.preselect in ids else 0
        options.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FormDialog(ModalScreen[dict[str, str] | None]):
    """A few labelled inputs; returns their values by field id."""

    DEFAULT_CSS = "FormDialog { align: center middle; }" + DIALOG_CSS
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
            for fid, label, default in self.fields:
                yield Input(value=default, placeholder=label, id=f"field-{fid}")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.submit, id="submit", variant="primary")

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


class TypeNameDialog(ModalScreen[bool]):
    """Destructive confirmation: the user types the guest's name (GitHub style)."""

    DEFAULT_CSS = "TypeNameDialog { align: center middle; }" + DIALOG_CSS
    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, body: str, name: str, confirm: str = "Delete") -> None:
        super().__init__()
        self.title_text, self.body, self.expected, self.confirm = title, body, name, confirm

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title", markup=False)
            yield Static(self.body, markup=False)
            yield Input(placeholder=f"type {self.expected} to confirm", id="typed")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.confirm, id="confirm", variant="error", disabled=True)

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value != self.expected

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value == self.expected:
            self.dismiss(True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)


class ExecOutput(ModalScreen[int | None]):
    """Runs a command, streams its output into a pane, shows its exit status."""

    DEFAULT_CSS = """
    ExecOutput { align: center middle; }
    ExecOutput > Vertical { width: 95%; height: 90%; border: thick $primary; background: $surface; }
    ExecOutput:ansi > Vertical { border: solid ansi_blue; background: ansi_default; }
    ExecOutput Log { height: 1fr; }
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
            yield Log(id="output")
            yield Label("running…", id="status")

    def on_mount(self) -> None:
        self.stream()

    @work(thread=True, exclusive=True, group="exec", exit_on_error=False, description="exec")
    def stream(self) -> None:
        log = self.query_one(Log)
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
            self.query_one(Log).write_line(note)
        word = "ok" if status == 0 else "failed"
        self.query_one("#status", Label).update(f"exit status {status} ({word}) — esc closes")
        self._done.set()

    def action_close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # our own child, by its Popen handle
        self.dismiss(self.status)
