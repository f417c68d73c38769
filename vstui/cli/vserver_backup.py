"""``vserver NAME snapshot|clone|export``: snapshots, clones and backups.

vserver NAME snapshot create [SNAP]     default name: the UTC time, 20261204T153012Z
vserver NAME snapshot list [--json]
vserver NAME snapshot restore SNAP      the guest stopped; atomic
vserver NAME snapshot delete SNAP
vserver SRC clone DST [--ip ADDR]... [--hostname H] [--snapshot SNAP]
vserver NAME export FILE|- [--snapshot SNAP]   a tar.zst; `-` is stdout
(vserver NAME build -t export:FILE makes a guest back from an export)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from engine.errors import VstuiError
from engine.paths import Paths
from vstui.cli.vserver_storage import human as _human

TOOL = "vserver"
SNAPSHOT_USAGE = "snapshot create [SNAP] | list [--json] | restore SNAP | delete SNAP"


def _usage(name: str, text: str) -> int:
    print(f"{TOOL}: {name}: usage: vserver NAME {text}", file=sys.stderr)
    return 2


def _progress(done: int) -> None:
    if sys.stderr.isatty():
        print(f"\rcopying: {_human(done)}   ", end="", file=sys.stderr, flush=True)


def cmd_snapshot(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.rootfs import snapshots

    words = list(args)
    action = words.pop(0) if words else "list"
    if action == "create" and len(words) <= 1:
        snap = snapshots.create(paths, name, words[0] if words else None, _progress)
        if sys.stderr.isatty():
            print("\r", end="", file=sys.stderr)
        print(f"snapshot {snap.name} of {name} taken")
        return 0
    if action == "list" and words in ([], ["--json"]):
        return _list(snapshots.list_snapshots(paths, name), bool(words))
    if action == "restore" and len(words) == 1:
        snapshots.restore(paths, name, words[0])
        print(f"{name} restored to snapshot {words[0]}")
        return 0
    if action == "delete" and len(words) == 1:
        snapshots.delete(paths, name, words[0])
        return 0
    return _usage(name, SNAPSHOT_USAGE)


def _list(found: list, as_json: bool) -> int:
    if as_json:
        print(json.dumps([s._asdict() for s in found], indent=1))
        return 0
    if not found:
        return 0
    rows = [("NAME", "CREATED (UTC)", "SIZE", "EXCLUSIVE", "SHARED")]
    for s in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.created))
        rows.append((s.name, when, _human(s.size), _human(s.exclusive), _human(s.shared)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_clone(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.rootfs.clone import clone

    words = list(args)
    if not words or words[0].startswith("-"):
        return _usage(name, "clone DST [--ip ADDR]... [--hostname H] [--snapshot SNAP]")
    target, addresses, hostname, snap = words.pop(0), [], None, None
    while words:
        word = words.pop(0)
        if word in ("--ip", "--interface") and words:
            addresses.append(words.pop(0))
        elif word == "--hostname" and words:
            hostname = words.pop(0)
        elif word == "--snapshot" and words:
            snap = words.pop(0)
        else:
            raise VstuiError(f"clone: unknown option '{word}'; use DST [--ip ADDR]... "
                             "[--hostname H] [--snapshot SNAP]", name)  # fmt: skip
    clone(paths, name, target, addresses, hostname, snap)
    print(f"{target} cloned from {name}{f' (snapshot {snap})' if snap else ''}")
    return 0


def cmd_export(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.rootfs.archive import export_guest

    words = list(args)
    snap = None
    if "--snapshot" in words:
        at = words.index("--snapshot")
        if at + 1 >= len(words):
            return _usage(name, "export FILE|- [--snapshot SNAP]")
        snap = words[at + 1]
        del words[at : at + 2]
    if len(words) != 1:
        return _usage(name, "export FILE|- [--snapshot SNAP]")
    if words[0] == "-":
        if sys.stdout.isatty():
            raise VstuiError("export -: stdout is a terminal; redirect it to a file or a pipe",
                             name)  # fmt: skip
        sys.stdout.flush()
        info = export_guest(paths, name, sys.stdout.buffer, snap)
        sys.stdout.buffer.flush()
    else:
        info = export_guest(paths, name, words[0], snap)
        print(f"exported {name}: {info.files} files, {_human(info.bytes)} to {words[0]}")
    return 0
