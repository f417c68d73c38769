"""``vserver --pool create SIZE | status [--json] | grow SIZE | mount | remove``.

The btrfs pool (engine.rootfs.pool): a sparse file under /var/lib/vservers/,
formatted btrfs and mounted; new guests are built on it while it exists.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from engine.paths import Paths
from vstui.cli.vserver_storage import human as _human

TOOL = "vserver"
USAGE = "usage: vserver --pool create SIZE | status [--json] | grow SIZE | mount | remove"


def _show(status, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status._asdict()))
        return
    print(f"pool      {status.image} ({_human(status.allocated)} on the host, sparse)")
    state = f"mounted on {status.mount} ({status.device})" if status.mounted else "not mounted"
    print(f"state     {state}")
    print(f"size      {_human(status.size)}")
    if status.mounted:
        print(f"used      {_human(status.used)}, {_human(status.free)} free")
        print(f"guests    {' '.join(status.guests) or '-'}")
        print(f"snapshots {status.snapshots}")


def cmd_pool(paths: Paths, args: Sequence[str]) -> int:
    from engine.config import parse_size
    from engine.rootfs import pool

    words = list(args)
    if words and words[0] in ("create", "grow") and len(words) == 2:
        size = parse_size(words[1])
        status = pool.create(paths, size) if words[0] == "create" else pool.grow(paths, size)
        _show(status, False)
        return 0
    if words in (["status"], ["status", "--json"]):
        _show(pool.status(paths), len(words) == 2)
        return 0
    if words == ["mount"]:
        pool.require(paths)  # mounts it; says so when there is no pool
        return 0
    if words == ["remove"]:
        pool.remove(paths)
        return 0
    print(f"{TOOL}: {USAGE}", file=sys.stderr)
    return 2
