"""``vserver NAME migrate HOST [--as NEWNAME] [--keep] [--xid N] [--ip ADDR]...``

Moves the guest to HOST (a hosts.toml name or an ssh destination): stop,
send configuration and tree, start there, then delete here (``--keep``:
leave it here, stopped). A failure at any step leaves this host as it was
and the target without the guest. See engine.remote.migrate.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine.errors import VstuiError
from engine.paths import Paths
from engine.text import visible

TOOL = "vserver"
USAGE = "usage: vserver NAME migrate HOST [--as NEWNAME] [--keep] [--xid N] [--ip ADDR]..."


def parse(args: Sequence[str]) -> dict[str, object]:
    """The migrate options; VstuiError naming the bad word."""
    opts: dict[str, object] = {"host": None, "new_name": None, "keep": False, "xid": None,
                               "addresses": []}  # fmt: skip
    words = list(args)
    while words:
        word = words.pop(0)
        flag, eq, attached = word.partition("=") if word.startswith("--") else (word, "", "")
        if flag == "--keep":
            opts["keep"] = True
        elif flag in ("--as", "--xid", "--ip"):
            if not eq and not words:
                raise VstuiError(f"{flag} needs a value; {USAGE}")
            value = attached if eq else words.pop(0)
            if flag == "--as":
                opts["new_name"] = value
            elif flag == "--ip":
                opts["addresses"].append(value)  # type: ignore[attr-defined]
            elif not value.isdigit() or int(value) <= 0:
                raise VstuiError(f"--xid: '{value}' is not a context id (a positive number)")
            else:
                opts["xid"] = int(value)
        elif word.startswith("-") or opts["host"] is not None:
            raise VstuiError(f"unexpected '{word}'; {USAGE}")
        else:
            opts["host"] = word
    if opts["host"] is None:
        raise VstuiError(USAGE)
    return opts


def cmd_migrate(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.remote.hosts import resolve
    from engine.remote.migrate import migrate

    opts = parse(args)
    host = resolve(str(opts.pop("host")))
    target = host.name

    def say(text: str) -> None:
        print(visible(f"{TOOL}: {name}: {text}"), file=sys.stderr)  # the far host's words

    migrate(paths, name, host, say=say, **opts)  # type: ignore[arg-type]
    new = opts["new_name"] or name
    print(f"{name} moved to {target}" + (f" as {new}" if new != name else ""))
    return 0
