"""engine.audit: read-only checks of the host and its guests.

    run_audit(paths, guest=None, min_severity="info", sources=None) -> AuditReport

Each finding names its rule (``RULES``, documented in docs/audit.md), a
severity, what was found, why it matters and the exact fix. The audit never
changes anything: no file, directory, cgroup, link or namespace is created,
written or entered. It runs as any user; what that user cannot read is
listed in ``AuditReport.unreadable``, never taken as clean.
"""

from __future__ import annotations

from engine.audit.facts import Sources
from engine.audit.model import (
    RULES,
    SEVERITIES,
    AuditReport,
    Finding,
    Rule,
    Unreadable,
    rank,
    rules_markdown,
)
from engine.errors import GuestNotFound, VstuiError
from engine.paths import Paths, check_name

__all__ = [
    "RULES",
    "SEVERITIES",
    "AuditReport",
    "Finding",
    "Rule",
    "Sources",
    "Unreadable",
    "rank",
    "rules_markdown",
    "run_audit",
]


def run_audit(
    paths: Paths,
    guest: str | None = None,
    min_severity: str = "info",
    sources: Sources | None = None,
) -> AuditReport:
    """Audit the host and every guest (or only ``guest``'s findings).

    Findings below ``min_severity`` are left out; ``sources`` replaces the
    host readers (tests). Raises GuestNotFound / InvalidName for a bad
    ``guest`` and VstuiError for an unknown severity.
    """
    from engine.audit import guests, host, running
    from engine.audit.context import Audit
    from engine.audit.facts import Facts
    from engine.audit.model import Collector

    if guest is not None:
        check_name(guest)
    try:
        rank(min_severity)
    except ValueError as exc:
        raise VstuiError(str(exc)) from None
    _require_something(paths)
    audit = Audit(paths, Facts(sources or Sources()), Collector())
    names = _guest_names(audit)
    if guest is not None:
        _require_guest(paths, guest, names)
    _load_configs(audit, names)
    audit.scope = [guest] if guest is not None else names
    audit.host_wide = guest is None
    host.check(audit)
    guests.check(audit)
    running.check(audit)
    report = audit.col.report()
    return AuditReport(report.at_or_above(min_severity), report.unreadable)


def _require_something(paths: Paths) -> None:
    """A root without anything of vstui's is a mistake (a typo in --root), not
    a clean host: "no findings" there would be a false all-clear."""
    root = paths.root
    if not root.is_dir():
        raise VstuiError(f"{root} does not exist: nothing was found to check")
    if str(root) == "/":
        return  # the host's own checks always apply
    ours = (paths.config_dir, paths.legacy_config_dir, paths.vservers_dir, paths.run_base)
    if not any(p.exists() for p in ours):
        raise VstuiError(
            f"nothing was found to check under {root}: no etc/vserver, etc/vservers, "
            "vservers or run/vservers there; is --root right?"
        )


def _guest_names(audit) -> list[str]:
    from engine.config import list_guests

    try:
        return list_guests(audit.paths)
    except VstuiError as exc:
        audit.col.cannot_read(audit.paths.config_dir, exc.message)
        return []


def _require_guest(paths: Paths, guest: str, names: list[str]) -> None:
    from engine.config import validate_name

    validate_name(guest)
    if guest not in names:
        raise GuestNotFound(
            f"no configuration for guest '{guest}': {paths.config_file(guest)} does not exist; "
            f"see `vserver --list`",
            guest,
        )


def _load_configs(audit, names: list[str]) -> None:
    from engine.config import check_guest

    for name in names:
        try:
            cfg, errors = check_guest(audit.paths, name)
        except VstuiError as exc:
            audit.col.cannot_read(audit.paths.config_file(name), exc.message, name)
            continue
        audit.configs[name] = cfg
        if errors:
            audit.errors[name] = errors
