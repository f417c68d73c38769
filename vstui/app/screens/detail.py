"""Guest detail: configuration summary, gauges with history, the guest's
process tree, its console log tail and its addresses.
"""

from __future__ import annotations

import os
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import ContentSwitcher, Log

from engine.datamodel import GuestStatus, Snapshot
from engine.errors import VstuiError
from engine.text import log_lines
from vstui.app import fmt
from vstui.app.actions import DETAIL, bindings
from vstui.app.history import Series
from vstui.app.procview import ProcIndex, ViewSpec
from vstui.app.screens.procs import GUEST_PROC_COLUMNS, ProcActions, format_guest_proc, proc_face
from vstui.app.widgets.linetable import LineTable
from vstui.app.widgets.lists import KeyLog
from vstui.app.widgets.snapshots import SnapshotsPane
from vstui.app.widgets.textlines import TextLines
from vstui.app.widgets.topbar import TopBar

BAR = 16
SPARK = 16


class LogTail:
    """Follows a console log by offset: only new bytes are read each time."""

    def __init__(self, path: os.PathLike[str], lines: int = 200) -> None:
        self.path = path
        self.lines = lines
        self.offset = 0

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def wants_first(self) -> bool:
        """Whether the caller should hand read_new() the log's last lines."""
        return self.offset == 0

    def read_new(self, first: list[str]) -> tuple[list[str], bool]:
        """(new lines, reset) where reset means the log was rotated or truncated."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return [], False
        if self.offset == 0 or size < self.offset:
            self.offset = size
            return first, True
        if size == self.offset:
            return [], False
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset = size
        return log_lines(data), False  # a guest's bytes: never raw to the terminal


def gauge_line(label: str, used: int | None, limit: int | None, unit=fmt.size) -> Text:
    text = Text(f"{label:<5}")
    if used is None:
        return text + Text("not measured", style="dim")
    ratio = used / limit if limit else None
    text.append(f"{fmt.used_of(used, limit, unit):>13} ")
    style = "red" if (ratio or 0) > 0.9 else "yellow" if (ratio or 0) > 0.7 else "green"
    if ratio is None:
        return text + Text("no limit", style="dim")
    text.append(fmt.bar(ratio, BAR), style=style)
    return text + Text(f" {ratio * 100:3.0f}%")


def ids_text(g: GuestStatus) -> str:
    """The guest's host ids: ``524288-589823``, ``host`` (no user namespace) or ``-``."""
    if g.idmap is not None:
        base, count = g.idmap
        return f"{base}-{base + count - 1}"
    return "host" if g.userns is False else "-"


def header_text(
    g: GuestStatus | None, cfg: object | None, cfg_error: str, hist: Series,
    pending: tuple[str, ...] = (), link: str = "",
) -> Text:  # fmt: skip
    """The detail header: what the guest is, then one gauge per resource."""
    if g is None:
        return Text("not in the last snapshot (deleted, or the observer failed)", style="yellow")
    out = Text()
    out.append(f"{g.name}  ", style="bold")
    if g.state == "frozen":
        out.append("FROZEN", style="bold cyan")
    else:
        out.append(g.state, style="green" if g.state == "running" else "dim")
    out.append(
        f"  xid {g.xid}  ids {ids_text(g)}  up {fmt.duration(g.uptime)}  "
        f"init {g.init_pid or '-'}\n"
    )
    out.append(_config_summary(cfg, cfg_error) + "\n")
    if pending and g.state == "running":
        out.append("waits for a restart (R): " + " ".join(pending) + "\n", style="bold yellow")
    out.append("addr " + (" ".join(g.addresses) or "none"))
    shown = link and g.state == "running" and g.addresses
    out.append(f"  host link {link}\n" if shown else "\n")
    if g.missing:
        out.append(f"not measured: {', '.join(g.missing)}\n", style="yellow")
    out.append(gauge_line("MEM", g.memory.used, g.memory.limit))
    out.append("  " + fmt.sparkline(hist.memory, SPARK, top=g.memory.limit or None) + "\n", "cyan")
    out.append(gauge_line("PIDS", g.pids.used, g.pids.limit, unit=str) + "\n")
    out.append(gauge_line("DISK", g.disk.used, g.disk.limit) + "\n")
    out.append(f"CPU  {g.cpu_percent:12.1f}% ")
    out.append(fmt.sparkline(hist.cpu, SPARK, top=100.0) + "\n", "cyan")
    out.append(_net_line(g, hist))
    return out


def _net_line(g: GuestStatus, hist: Series) -> Text:
    if g.net is None:
        return Text("NET  no network figures" + (" (host mode)" if g.state == "running" else ""))
    limit = g.bandwidth_out
    text = Text(f"NET  rx {fmt.rate(g.net.rx_rate):>8} tx {fmt.rate(g.net.tx_rate):>8}")
    text.append(f" / {fmt.bits(limit)} ")
    if limit:
        ratio = g.net.tx_rate * 8 / limit
        text.append(fmt.gauge(ratio, 13), "green" if ratio < 0.7 else "yellow")
    top = limit / 8 if limit else None
    text.append(" " + fmt.sparkline(hist.tx, SPARK, top=top), "magenta")
    return text


def _config_summary(cfg: object | None, error: str) -> str:
    if cfg is None:
        return f"config: {error}"
    get = lambda attr, default=None: getattr(cfg, attr, default)  # noqa: E731
    flags = " ".join(sorted(get("flags", ()) or ())) or "none"
    caps = " ".join(get("caps", ()) or ()) or "default"
    return (
        f"host {get('hostname', '?')}  template {get('template', '?')}  "
        f"net {get('netmode', '?')}  flags {flags}  caps {caps}"
    )


class DetailScreen(ProcActions):
    """One guest: header with gauges, its process tree, its log."""

    SCOPE = DETAIL
    TITLE_TEXT = "Guest"
    BINDINGS: ClassVar = bindings(DETAIL)
    DEFAULT_CSS = """
    DetailScreen #header { height: auto; max-height: 11; padding: 0 1; }
    DetailScreen ContentSwitcher { height: 1fr; }
    DetailScreen Log { height: 1fr; }
    """

    def __init__(self, name: str, log: bool = False) -> None:
        super().__init__()
        self.guest = name
        self.start_with_log = log
        self.cfg: object | None = None
        self.cfg_error = ""
        self.tail: LogTail | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_table()
        yield TextLines(id="header")
        with ContentSwitcher(initial="procs"):
            yield LineTable(GUEST_PROC_COLUMNS, format_guest_proc, id="procs", face=proc_face)
            yield KeyLog(id="log", max_lines=2000)
            yield SnapshotsPane(self.guest, id="snapshots")
        yield from self.footer()

    def on_mount(self) -> None:
        self.query_one(TopBar).title = f"Guest {self.guest}"
        self.restore_view("pid", False, tree=True)
        self.tail = self.vapp.log_tail_for(self.guest)
        self.load_config()
        self.procs_table.focus()
        if self.start_with_log:
            self.action_log()
        if self.vapp.snapshot is not None:
            self.show_snapshot(self.vapp.snapshot)

    pending: tuple[str, ...] = ()
    _conf_stat: tuple[float, int] | None = None

    def _config_changed(self) -> None:
        """Read NAME.conf again when it changed (an edit elsewhere, a save)."""
        try:  # a remote guest (HOST/NAME) has no local file: read once
            st = os.stat(self.vapp.engine.paths.config_file(self.guest))
            key = (st.st_mtime, st.st_size)
        except (OSError, VstuiError):
            key = None
        if key != self._conf_stat:
            self._conf_stat = key
            self.load_config()

    def _host_link(self) -> str:
        """The veth's host end (as `ip link` names it), for veth guests."""
        if getattr(self.cfg, "netmode", "") != "veth":
            return ""
        return self.vapp.engine.host_link(self.guest)

    def load_config(self) -> None:
        """NAME.conf, and what of it the running guest waits a restart for."""
        engine = self.vapp.engine
        try:
            self.cfg, self.cfg_error = engine.load_config(self.guest), ""
            self.pending = engine.restart_pending(self.guest, self.cfg)
        except VstuiError as exc:
            self.cfg, self.cfg_error, self.pending = None, exc.message, ()

    def on_screen_resume(self) -> None:
        self.load_config()
        super().on_screen_resume()

    def current_guest(self) -> str | None:
        return self.guest

    _index: tuple[Snapshot, ProcIndex] | None = None

    def proc_index(self, snap: Snapshot) -> ProcIndex:
        """Only this guest's processes (a small index, made once per snapshot)."""
        if self._index is None or self._index[0] is not snap:
            self._index = (snap, ProcIndex(p for p in snap.procs if p.guest == self.guest))
        return self._index[1]

    def remember_view(self, spec: ViewSpec) -> None:
        """The worker prepares the processes screen's view, not this pane's."""

    def show_snapshot(self, snap: Snapshot) -> None:
        if self.paused:
            return
        super().show_snapshot(snap)
        guest = snap.guest(self.guest)
        self._config_changed()
        text = header_text(guest, self.cfg, self.cfg_error, self.vapp.history.of(self.guest),
                           self.pending, self._host_link())  # fmt: skip
        self.query_one("#header", TextLines).show(text.split("\n"))
        self._update_log()

    def _update_log(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        if switcher.current != "log" or self.tail is None:
            return
        log = self.query_one(Log)
        if not self.tail.exists():
            if not self._said_no_log:
                self._said_no_log = True
                log.write_line(f"(no console log yet at {self.tail.path})")
            return
        try:
            first = self.vapp.engine.log_tail(self.guest, 200) if self.tail.wants_first() else []
        except VstuiError as exc:
            first = [f"cannot read the log: {exc.message}"]
        lines, reset = self.tail.read_new(first)
        if reset:
            log.clear()
            self._said_no_log = False
            if not lines:
                log.write_line(f"(empty log: {self.tail.path})")
        if lines:
            log.write_lines(lines)

    _said_no_log = False

    def _show_pane(self, pane: str) -> bool:
        """``pane`` in place of the process tree; pressed again, the tree comes back
        (then False)."""
        switcher = self.query_one(ContentSwitcher)
        if switcher.current == pane:
            switcher.current = "procs"
            self.procs_table.focus()
            return False
        switcher.current = pane
        return True

    def action_snapshots(self) -> None:
        if self._show_pane("snapshots"):
            pane = self.query_one(SnapshotsPane)
            pane.reload()
            pane.focus_table()

    def action_log(self) -> None:
        if not self._show_pane("log"):
            return
        if self.tail is not None:
            self.tail.offset = 0
        self.query_one(Log).clear()
        self._said_no_log = False
        self._update_log()
        self.query_one(Log).focus()
