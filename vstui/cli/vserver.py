"""``vserver``: util-vserver's guest manager.

    vserver [--root DIR] NAME COMMAND [ARGS...]
    vserver [--root DIR] --list [--json]
    vserver [--root DIR] --onboot start|stop
    vserver --host H NAME COMMAND [ARGS...]   (on another host, with its exit status)
    vserver [--root DIR] --pool create SIZE|status [--json]|grow SIZE|mount|remove

Each COMMAND lives in a ``vstui.cli.vserver_*`` module, imported only when
used, so that ``vserver NAME exec`` does not pay for the rest.
"""

from __future__ import annotations

import importlib
import sys

from engine.errors import boundary
from engine.paths import Paths, check_name
from engine.text import visible
from vstui.cli.common import run_tool, split_hosts, split_root

TYPE_CHECKING = False  # typing/collections.abc cost ~3 ms of every tool's start
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

TOOL = "vserver"

# command -> "module:function"; every function takes (paths, name, args) -> int
COMMANDS: dict[str, str] = {
    "config": "vstui.cli.vserver_config:cmd_config",
    "check": "vstui.cli.vserver_config:cmd_check",
    "set": "vstui.cli.vserver_config:cmd_set",
    "import": "vstui.cli.vserver_config:cmd_import",
    "build": "vstui.cli.vserver_runtime:cmd_build",
    "delete": "vstui.cli.vserver_runtime:cmd_delete",
    "start": "vstui.cli.vserver_runtime:cmd_start",
    "stop": "vstui.cli.vserver_runtime:cmd_stop",
    "restart": "vstui.cli.vserver_runtime:cmd_restart",
    "status": "vstui.cli.vserver_runtime:cmd_status",
    "running": "vstui.cli.vserver_runtime:cmd_running",
    "freeze": "vstui.cli.vserver_runtime:cmd_freeze",
    "thaw": "vstui.cli.vserver_runtime:cmd_thaw",
    "enter": "vstui.cli.vserver_exec:cmd_enter",
    "exec": "vstui.cli.vserver_exec:cmd_exec",
    "suexec": "vstui.cli.vserver_exec:cmd_suexec",
    "console": "vstui.cli.vserver_exec:cmd_console",
    "quota": "vstui.cli.vserver_storage:cmd_quota",
    "snapshot": "vstui.cli.vserver_backup:cmd_snapshot",
    "clone": "vstui.cli.vserver_backup:cmd_clone",
    "export": "vstui.cli.vserver_backup:cmd_export",
    "migrate": "vstui.cli.vserver_migrate:cmd_migrate",
}

# commands whose remaining words belong to a program run in the guest
PASS_THROUGH = frozenset({"exec", "suexec", "enter"})

# commands that run without a guest name: --flag -> "module:function" taking (paths, args)
GLOBAL_COMMANDS: dict[str, str] = {
    "--list": "vstui.cli.vserver_config:cmd_list",
    "--onboot": "vstui.cli.vserver_runtime:cmd_onboot",
    "--pool": "vstui.cli.vserver_pool:cmd_pool",
}

USAGE = """\
usage: vserver [--root DIR] [--host H] NAME COMMAND [ARGS...]
       vserver [--root DIR] --list [--json]
       vserver [--root DIR] --onboot start|stop
       vserver [--root DIR] --pool create SIZE|status [--json]|grow SIZE|mount|remove
commands: """ + " ".join(sorted(COMMANDS))


def _load(target: str) -> Callable[..., int]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _dispatch(argv: Sequence[str]) -> int:
    # --root and --host may come before NAME or after COMMAND, but never
    # inside the command that exec/suexec run in the guest.
    hosts, argv = split_hosts(argv, stop_at=2)
    if len(argv) < 2 or argv[1] not in PASS_THROUGH:
        more, argv = split_hosts(argv)
        hosts += more
    root, args = split_root(argv, stop_at=2)
    if len(args) < 2 or args[1] not in PASS_THROUGH:
        root, args = split_root(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 2 if not args else 0
    if args[0] not in GLOBAL_COMMANDS:
        check_name(args[0])  # before anything else, here or on a remote host
    if hosts:
        from vstui.cli import remote

        return remote.vserver(hosts, root, args)
    paths = Paths.from_root(root)
    if args[0] in GLOBAL_COMMANDS:
        return _load(GLOBAL_COMMANDS[args[0]])(paths, args[1:])
    if len(args) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    name, command, rest = args[0], args[1], args[2:]
    if command not in COMMANDS:
        shown = visible(command)
        print(f"{TOOL}: {name}: unknown command '{shown}'; see vserver --help", file=sys.stderr)
        return 2
    try:
        func = _load(COMMANDS[command])
    except ModuleNotFoundError:
        print(f"{TOOL}: {name}: '{command}' is not available in this build", file=sys.stderr)
        return 2
    with boundary(command, name):  # an OSError names the command, the file and the guest
        return func(paths, name, rest)


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(TOOL, lambda: _dispatch(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
