"""Audit: the findings of engine.audit grouped by severity, each with its fix."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.errors import VstuiError
from engine.facade import Finding
from vstui.app.actions import AUDIT, bindings
from vstui.app.screens.base import VstuiScreen

NOT_AVAILABLE = "audit not available in this build"
SEVERITIES = ("critical", "high", "warning", "medium", "low", "info", "unread")
STYLE = {"critical": "bold red", "high": "red", "warning": "yellow", "medium": "yellow",
         "low": "cyan", "info": "dim", "unread": "magenta"}  # fmt: skip


def findings_text(findings: list[Finding]) -> RenderableType:
    """Findings by severity; a long why/fix wraps under itself, not under the label."""
    if not findings:
        return Text("no findings: nothing to fix", style="green")
    order = {s: i for i, s in enumerate(SEVERITIES)}
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.severity, []).append(f)
    parts: list[RenderableType] = []
    for severity in sorted(groups, key=lambda s: order.get(s, len(order))):
        items = groups[severity]
        parts.append(Text(f"{severity.upper()} ({len(items)})", style=STYLE.get(severity, "bold")))
        for f in items:
            who = f"{f.guest}: " if f.guest else ""
            parts.append(Text(f"  • {who}{f.title}"))
            details = Table.grid()
            details.add_column(no_wrap=True)
            details.add_column(ratio=1)
            if f.why:
                details.add_row("    why: ", Text(f.why, style="italic"))
            if f.fix:
                details.add_row("    fix: ", Text(f.fix, style="dim"))
            if details.row_count:
                parts.append(details)
        parts.append(Text(""))
    return Group(*parts)


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
        yield from self.footer()

    def on_mount(self) -> None:
        if not self.vapp.engine.available("engine.audit"):
            self.query_one("#findings", Static).update(NOT_AVAILABLE)
            return
        self.run_audit()

    @work(thread=True, exclusive=True, group="audit", exit_on_error=False, description="audit")
    def run_audit(self) -> None:
        try:
            text: RenderableType = findings_text(self.vapp.engine.audit())
        except VstuiError as exc:
            text = Text(exc.message, style="yellow")
        self.app.call_from_thread(self.query_one("#findings", Static).update, text)
