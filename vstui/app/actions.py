"""Every console action, declared once: key, description, where, and danger.

Screens build their ``BINDINGS`` from this registry, the help screen and
the command palette list it, and ``allowed`` is the one gate that read-only
mode goes through (each screen's and the app's ``check_action`` call it).
The engine facade refuses the same operations again.

Binding ids are ``vstui.<id>``, so a keymap file can rebind any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One action the user can trigger with a key."""

    id: str  # binding id without the "vstui." prefix; also the action name
    keys: str  # Textual key list, comma separated
    description: str
    scopes: tuple[str, ...]  # screens that bind it ("app" for global)
    dangerous: bool = False  # changes the host: hidden and refused in read-only mode
    show: bool = True  # shown in the footer
    key_display: str | None = None
    hide_in: tuple[str, ...] = ()  # screens whose (narrow) footer leaves it out

    @property
    def binding_id(self) -> str:
        return f"vstui.{self.id}"


GUESTS, DETAIL, PROCS, EDITOR, AUDIT = "guests", "detail", "processes", "editor", "audit"
SNAPSHOTS = "snapshots"  # the detail screen's Snapshots pane
TABLES = (GUESTS, DETAIL, PROCS)

REGISTRY: tuple[ActionSpec, ...] = (
    # global
    ActionSpec("help", "question_mark", "Help", ("app",), key_display="?"),
    ActionSpec("palette", "colon", "Commands", ("app",), show=False, key_display=":"),
    ActionSpec("quit", "q", "Quit", ("app",), show=False),
    ActionSpec("show_guests", "1", "Guests", ("app",), show=False),
    ActionSpec("show_processes", "2", "Procs", ("app",), show=False),
    ActionSpec("show_audit", "3", "Audit", ("app",), show=False),
    # navigation and views
    ActionSpec("open", "enter", "Open", (GUESTS, PROCS), show=False),
    ActionSpec("back", "escape", "Back", (GUESTS, DETAIL, PROCS, EDITOR, AUDIT), show=False),
    ActionSpec(
        "filter",
        "slash",
        "Filter",
        (GUESTS, PROCS, DETAIL),
        key_display="/",
        hide_in=(GUESTS, DETAIL),
    ),
    ActionSpec(
        "sort", "f6,greater_than_sign", "Sort", TABLES, key_display=">", hide_in=(GUESTS, DETAIL)
    ),
    ActionSpec("invert_sort", "I", "Invert", TABLES, show=False),
    ActionSpec("tree", "f5,t", "Tree", (PROCS, DETAIL), key_display="t"),
    ActionSpec("pause", "Z", "Pause", (PROCS, DETAIL, GUESTS), hide_in=(GUESTS, DETAIL)),
    ActionSpec("follow", "F", "Follow", (PROCS, DETAIL), show=False),
    ActionSpec("kernel", "K", "Kernel threads", (PROCS,), show=False),
    ActionSpec("mark", "space", "Mark", (PROCS, DETAIL), show=False),
    ActionSpec("unmark", "U", "Unmark all", (PROCS, DETAIL), show=False),
    ActionSpec("guest_filter", "g", "Guest", (PROCS,)),
    ActionSpec("log", "l", "Log", (GUESTS, DETAIL)),
    ActionSpec("edit", "e", "Edit", (GUESTS, DETAIL)),
    ActionSpec("snapshots", "S", "Snapshots", (DETAIL,), hide_in=(DETAIL,)),
    # dangerous: hidden and refused in read-only mode
    ActionSpec("start", "plus", "Start", (GUESTS, DETAIL), dangerous=True, key_display="+"),
    ActionSpec("stop", "minus", "Stop", (GUESTS, DETAIL), dangerous=True, key_display="-"),
    ActionSpec("restart", "R", "Restart", (GUESTS, DETAIL), dangerous=True),
    ActionSpec("build", "n", "New", (GUESTS,), dangerous=True),
    ActionSpec("enter", "s", "Shell", (GUESTS, DETAIL, PROCS), dangerous=True),
    ActionSpec("exec", "x", "Exec", (GUESTS, DETAIL, PROCS), dangerous=True),
    # F9 as in htop, ctrl+k as in k9s; never plain k, which moves up (vi)
    ActionSpec("kill", "f9,ctrl+k", "Kill", (PROCS, DETAIL), dangerous=True, key_display="F9"),
    ActionSpec("delete", "D", "Delete", (GUESTS,), dangerous=True),
    ActionSpec("freeze", "f", "Freeze", (GUESTS, DETAIL), dangerous=True, hide_in=(GUESTS, DETAIL)),
    ActionSpec("thaw", "u", "Thaw", (GUESTS, DETAIL), dangerous=True, hide_in=(GUESTS, DETAIL)),
    ActionSpec("clone", "c", "Clone", (GUESTS, DETAIL), dangerous=True, hide_in=(GUESTS, DETAIL)),
    ActionSpec("snap_create", "n", "New snapshot", (SNAPSHOTS,), dangerous=True),
    ActionSpec("snap_restore", "r", "Restore", (SNAPSHOTS,), dangerous=True),
    ActionSpec("snap_delete", "d", "Delete snapshot", (SNAPSHOTS,), dangerous=True),
    ActionSpec("save", "ctrl+s", "Save", (EDITOR,), dangerous=True, key_display="^s"),
)

BY_ID: dict[str, ActionSpec] = {spec.id: spec for spec in REGISTRY}
DANGEROUS: frozenset[str] = frozenset(spec.id for spec in REGISTRY if spec.dangerous)


def refused(action: str, read_only: bool) -> bool:
    """True for a key the read-only gate refuses (its key then explains why)."""
    return read_only and action in DANGEROUS


def allowed(action: str, read_only: bool) -> bool:
    """The one read-only gate: False hides the key and refuses the action."""
    return not (read_only and action in DANGEROUS)


def bindings(scope: str) -> list[Binding]:
    """The Textual bindings of one screen (or "app"), with ids for keymaps."""
    return [
        Binding(
            spec.keys,
            spec.id,
            spec.description,
            show=spec.show and scope not in spec.hide_in,
            key_display=spec.key_display,
            id=spec.binding_id,
            tooltip=spec.description + (" (changes the host)" if spec.dangerous else ""),
        )
        for spec in REGISTRY
        if scope in spec.scopes
    ]


# panes whose keys the help of their screen lists too
PANES = {DETAIL: (SNAPSHOTS,)}


def specs(scope: str) -> list[ActionSpec]:
    """Actions bound on a screen (and its panes) plus the global ones (for the help screen)."""
    wanted = {scope, "app", *PANES.get(scope, ())}
    return [spec for spec in REGISTRY if wanted & set(spec.scopes)]
