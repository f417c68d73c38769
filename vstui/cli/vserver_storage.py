"""``vserver NAME quota``: show or change a guest's disk quota.

vserver NAME quota                   used / limit of space and inodes
vserver NAME quota SIZE              set the limit (grows a running guest online)
vserver NAME quota --user U SIZE     limit one guest user (image guests, running)
vserver NAME quota --json            the numbers as JSON
"""

from __future__ import annotations

import json
import sys

from engine.errors import VstuiError, require_root
from engine.paths import Paths

USAGE = "usage: vserver NAME quota [--json] | SIZE | --user USER SIZE|none"


def human(size: int | None) -> str:
    """``1.5G``, ``640.0M``; ``-`` for unknown or unlimited (every vserver storage command)."""
    if size is None:
        return "-"
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.1f}{unit}"
    return str(size)


_human = human


def _percent(used: int | None, limit: int | None) -> str:
    return f" ({100 * used / limit:.0f}%)" if used is not None and limit else ""


def _show(paths: Paths, name: str, as_json: bool) -> int:
    from engine.config import load_guest
    from engine.rootfs import usage

    cfg = load_guest(paths, name)
    use = usage(cfg, paths)
    if as_json:
        print(json.dumps({"guest": name, "backend": cfg.disk_backend, "bytes_used": use.bytes_used,
                          "bytes_limit": use.bytes_limit, "inodes_used": use.inodes_used,
                          "inodes_limit": use.inodes_limit}))  # fmt: skip
        return 0
    print(f"backend  {cfg.disk_backend}")
    if use.bytes_used is None and use.bytes_limit is None:
        print("space    unlimited (not measured: it would cost a walk of the tree)")
        return 0
    print(f"space    {_human(use.bytes_used)} / {_human(use.bytes_limit)}"
          f"{_percent(use.bytes_used, use.bytes_limit)}")  # fmt: skip
    inodes = lambda v: "-" if v is None else str(v)  # noqa: E731
    print(f"inodes   {inodes(use.inodes_used)} / {inodes(use.inodes_limit)}"
          f"{_percent(use.inodes_used, use.inodes_limit)}")  # fmt: skip
    return 0


def cmd_quota(paths: Paths, name: str, args: list[str]) -> int:
    if args in ([], ["--json"]):
        return _show(paths, name, bool(args))
    if args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    from engine.config import load_guest, parse_size
    from engine.rootfs import set_quota
    from engine.rootfs.storage import set_user_quota

    if args[0] == "--user":
        if len(args) != 3:
            print(f"vserver: {name}: {USAGE}", file=sys.stderr)
            return 2
        require_root("setting a quota", name)
        size = None if args[2] == "none" else parse_size(args[2])
        set_user_quota(load_guest(paths, name), paths, args[1], size)
        return 0
    if len(args) != 1:
        print(f"vserver: {name}: {USAGE}", file=sys.stderr)
        return 2
    require_root("setting a quota", name)
    try:
        size = parse_size(args[0])
    except VstuiError as exc:
        raise VstuiError(f"quota: {exc.message}", name) from None
    set_quota(load_guest(paths, name), paths, size)
    return _show(paths, name, False)
