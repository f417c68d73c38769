"""``vserver --onboot start|stop``: the guests with ONBOOT=yes, in PRIORITY order.

Start goes by ascending PRIORITY (then name); stop in the reverse order. A
guest that fails does not stop the others: its error is reported and counted,
and so is a broken NAME.conf that may have asked for a boot (it is skipped
with one line; the host's other guests still start).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import GuestRunning, VstuiError
from engine.paths import Paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from engine.config import Scanned


def _plan(paths: Paths, report: Callable[[str], None]) -> tuple[list[tuple[int, str]], list[str]]:
    """(valid ONBOOT guests, broken configs that may be ONBOOT guests)."""
    from engine.config import scan_guests

    valid: list[tuple[int, str]] = []
    broken: list[str] = []
    for found in scan_guests(paths):
        if found.error is not None:
            report(f"vserver: {found.name}: warning: skipped: {found.error.message}")
            if _may_boot(found):
                broken.append(found.name)
        elif found.config is not None and found.config.onboot:
            valid.append((found.config.priority, found.name))
    return valid, broken


def _may_boot(found: Scanned) -> bool:
    cfg, error = found.config, found.error
    if cfg is None or cfg.onboot:
        return True
    errors = getattr(error, "errors", [error])
    return any(getattr(e, "key", None) == "ONBOOT" for e in errors)


def _mount_pool(paths: Paths, report: Callable[[str], None]) -> int:
    """Mount the btrfs pool again after a reboot (its guests live in it); 1 on failure."""
    from engine.rootfs.storage import pool_exists

    if not pool_exists(paths):
        return 0
    from engine.rootfs import pool

    try:
        pool.mount(paths)
    except VstuiError as exc:
        report(f"vserver: pool: {exc.message}")
        return 1
    return 0


def onboot(paths: Paths, action: str, report: Callable[[str], None] = lambda _: None) -> int:
    """Start or stop every ONBOOT guest; the number that failed (or were skipped).

    A broken config is not started (it cannot be) and counts as a failure;
    ``stop`` still stops such a guest, which needs no valid configuration.
    """
    from engine.runtime.stopping import stop
    from engine.runtime.supervisor import start

    valid, broken = _plan(paths, report)
    guests = sorted(valid)
    if action == "stop":
        guests = [(0, name) for name in broken] + guests[::-1]
    failures = len(broken) if action == "start" else 0
    if action == "start":
        failures += _mount_pool(paths, report)  # before its guests: they live in it
    for _, name in guests:
        try:
            if action == "start":
                start(paths, name)
            else:
                stop(paths, name)
        except GuestRunning:
            report(f"vserver '{name}' already running")
        except VstuiError as exc:
            failures += 1
            report(f"vserver: {name}: {exc.message}")
        except Exception as exc:  # one guest's bug must not keep the host's others down
            failures += 1
            report(f"vserver: {name}: unexpected {type(exc).__name__}: {exc} (a bug; report it)")
    return failures
