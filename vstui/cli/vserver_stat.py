"""``vserver-stat``: one line per running context, util-vserver's columns.

    vserver-stat [--root DIR] [--json]
    vserver-stat --host H [--host H2 ...] [--json]   (a HOST column; "host" in JSON)

CTX PROC VSZ RSS userTIME sysTIME UPTIME NAME; context 0 is `root server`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from engine.errors import VstuiError
from engine.paths import Paths
from engine.text import visible
from vstui.cli.common import run_tool, split_hosts, split_root

TOOL = "vserver-stat"


def _body(argv: Sequence[str]) -> int:
    hosts, argv = split_hosts(argv)
    root, args = split_root(argv)
    if hosts:
        from vstui.cli import remote

        return remote.merged_tool(TOOL, hosts, root, args, "--json" in args)
    as_json = False
    for arg in args:
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        if arg == "--json":
            as_json = True
        else:
            raise VstuiError(f"unknown argument '{arg}' (usage: vserver-stat [--json])")
    paths = Paths.from_root(root)

    from engine.procs.attribution import is_legacy
    from engine.procs.collect import ProcessTable
    from engine.procs.format import context_stats, render_vstat
    from engine.procs.scan import read_uptime

    table = ProcessTable(paths, need=0, one_shot=True).refresh()  # stat is enough
    for err in table.attribution.errors:
        print(visible(f"{TOOL}: {err}"), file=sys.stderr)
    try:
        uptime = read_uptime()
    except OSError:
        print(f"{TOOL}: /proc/uptime is hidden; UPTIME is not right", file=sys.stderr)
        uptime = 0.0
    names = table.attribution.names()
    legacy = frozenset(g.name for g in table.attribution.guests if is_legacy(paths, g.name))
    frozen = _frozen(paths, names)
    stats = [
        s._replace(name=f"{s.name} (frozen)") if s.xid in frozen else s
        for s in context_stats(table.rows, uptime, names, legacy)
    ]
    if as_json:
        out = []
        for s in stats:
            item = s._asdict()
            item["guest"] = names.get(s.xid, "")
            item["frozen"] = s.xid in frozen
            out.append(item)
        print(json.dumps(out, indent=1))
    else:
        sys.stdout.write("\n".join(render_vstat(stats)) + "\n")
    return 0


def _frozen(paths: Paths, names: dict[int, str]) -> set[int]:
    """Contexts of frozen guests (run_dir/frozen: no cgroup read); NAME gets ``(frozen)``."""
    import os

    return {
        xid for xid, name in names.items()
        if name and os.path.exists(os.path.join(paths.run_dir_str(name), "frozen"))
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(TOOL, lambda: _body(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
