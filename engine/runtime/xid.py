"""Context ids (xids): S_CONTEXT when set, else allocated from 40000 upward.

util-vserver seeded static ids from ``context.start`` = 40000. Allocations
are kept per root in ``paths.state_dir/xids`` ("NAME XID" lines, under an
flock), so a guest keeps its id across restarts and two guests of one root
never share one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from engine.errors import VstuiError
from engine.paths import Paths, check_name

TYPE_CHECKING = False  # not typing's: on the start path
if TYPE_CHECKING:
    from typing import Any

FIRST_DYNAMIC = 40000
LAST_XID = 49151  # util-vserver's static range ends here; dynamic ids above


def table_path(paths: Paths) -> Path:
    return paths.state_dir / "xids"


def _read_table(path: Path) -> dict[str, int]:
    table: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) == 2 and words[1].isdigit():
                    table[words[0]] = int(words[1])
    except FileNotFoundError:
        pass
    return table


def _write_table(path: Path, table: dict[str, int]) -> None:
    tmp = path.with_name(".xids.tmp")
    with open(tmp, "w") as f:
        for name, xid in sorted(table.items(), key=lambda kv: kv[1]):
            f.write(f"{name} {xid}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def allocated(paths: Paths) -> dict[str, int]:
    """Every recorded allocation of this root: name -> xid."""
    return _read_table(table_path(paths))


def assign(paths: Paths, name: str, fixed: int | None, reserved: set[int] | None = None) -> int:
    """The guest's xid: ``fixed`` (S_CONTEXT) or its recorded/new dynamic id.

    ``reserved`` are ids other guests fix with S_CONTEXT: never handed out.
    """
    check_name(name)
    if fixed is not None:
        return fixed
    path = table_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name("xids.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = _read_table(path)
        if name in table:
            return table[name]
        used = set(table.values()) | (reserved or set())
        xid = FIRST_DYNAMIC
        while xid in used:
            xid += 1
        if xid > LAST_XID:
            raise VstuiError(
                f"no free context id left in {FIRST_DYNAMIC}..{LAST_XID}; "
                "delete unused guests or set S_CONTEXT",
                name,
            )
        table[name] = xid
        _write_table(path, table)
        return xid


def claim(paths: Paths, name: str, xid: int) -> None:
    """Record ``xid`` as the dynamic id of ``name`` (a guest that arrived with
    its id: migrate); VstuiError when another guest has it."""
    check_name(name)
    path = table_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name("xids.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = _read_table(path)
        owner = next((n for n, x in table.items() if x == xid and n != name), None)
        if owner is not None:
            raise VstuiError(f"context id {xid} is taken here by guest {owner}", name)
        table[name] = xid
        _write_table(path, table)


def forget(paths: Paths, name: str) -> None:
    """Drop a deleted guest's allocation."""
    check_name(name)
    path = table_path(paths)
    if not path.exists():
        return
    with open(path.with_name("xids.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = _read_table(path)
        if table.pop(name, None) is not None:
            _write_table(path, table)


def xid_of(paths: Paths, name: str, cfg: Any = None) -> int:
    """The guest's context id: the running one, else S_CONTEXT, else allocated.

    ``cfg``: the guest's configuration when the caller already loaded it.
    """
    from engine.runtime import state

    running = state.read_value(paths.run_dir(name), "xid")
    if running and running.isdigit() and state.init_identity(paths, name):
        return int(running)
    from engine.config import load_guest, scan_guests

    if cfg is None:
        cfg = load_guest(paths, name)
    if cfg.context is not None:
        return cfg.context
    known = allocated(paths).get(name)
    if known is not None:
        return known
    # a broken neighbour must not block this guest; its S_CONTEXT still
    # counts when that line itself is valid (the partial config has it)
    reserved = {
        other.config.context
        for other in scan_guests(paths)
        if other.name != name and other.config is not None and other.config.context is not None
    }
    return assign(paths, name, None, reserved)
