"""Audit: the findings of engine.audit grouped by severity, each with its fix."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from engine.errors import VstuiError
from engine.facade import Finding
from vstui.app.actions import AUDIT, bindings
from vstui.app.screens.base import VstuiScreen

NOT_AVAILABLE = "audit not available in this build"
SEVERITIES = ("critical", "high", "warning", "medium", "low", "info", "unread")
STYLE = {"critical": "bold red", "high": "red", "warning": "yellow", "medium": "yellow",
         "low": "cyan", "info": "dim", "unread": "magenta"}  # fmt: skip


def findings_text(findings: list[Finding]) -> Text:
    if not findings:
        return Text("no findings: nothing to fix", style="green")
    order = {s: i for i, s in enumerate(SEVERITIES)}
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.severity, []).append(f)
    out = Text()
    for severity in sorted(groups, key=lambda s: order.get(s, len(order))):
        items = groups[severity]
        out.append(f"{severity.upper()} ({len(items)})\n", style=STYLE.get(severity, "bold"))
        for f in items:
            who = f"{f.guest}: " if f.guest else ""
            out.append(f"  • {who}{f.title}\n")
            if f.why:
                out.append(f"    why: {f.why}\n", style="italic")
            if f.fix:
                out.append(f"    fix: {f.fix}\n", style="dim")
        out.append("\n")
    return out


class AuditScreen(VstuiScreen):
    """Read-only checks of the host and the guests."""

    SCOPE = AUDIT
    TITLE_TEXT = "Audit"
    BINDINGS: ClassVar = bindings(AUDIT)

    def compose(self) -> ComposeResult:
        yield self.top_bar()
        yield self.notice()
        with VerticalScroll():
            yield Static("running the audit…", id="findings", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        if not self.vapp.engine.available("engine.audit"):
            self.query_one("#findings", Static).update(NOT_AVAILABLE)
            return
        self.run_audit()

    @work(thread=True, exclusive=True, group="audit", exit_on_error=False, description="audit")
    def run_audit(self) -> None:
        try:
            text = findings_text(self.vapp.engine.audit())
        except VstuiError as exc:
            text = Text(exc.message, style="yellow")
        self.app.call_from_thread(self.query_one("#findings", Static).update, text)
