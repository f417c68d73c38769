"""``vserver NAME build|delete|start|stop|restart|status|running|enter|exec|suexec``
and ``vserver --onboot start|stop``, with util-vserver's wording and exit codes.

Imports stay inside the commands: ``vserver NAME exec`` loads only the
runtime's state and enter modules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from engine.errors import VstuiError
from engine.paths import Paths
from engine.text import visible

TOOL = "vserver"
EXIT_STOPPED = 3  # util-vserver: `status` of a stopped guest


def _warn(text: str) -> None:
    print(visible(text), file=sys.stderr)


def _usage(name: str, text: str) -> int:
    _warn(f"{TOOL}: {name}: usage: vserver NAME {text}")
    return 2


# -- build / delete ------------------------------------------------------------------


BUILD_USAGE = (
    "[-t TEMPLATE] [--hostname H] [--ip ADDR]... [--context N] [--set KEY=VALUE]... "
    "[--include PKG,...] [--mirror URL] [--flush-cache]"
)


def _parse_build(name: str, args: Sequence[str]) -> tuple[str, str | None, list[str], dict, dict]:
    """(template, hostname, addresses, NAME.conf options, template options)."""
    template, hostname, addresses, options = "skeleton", None, [], {}
    extra: dict = {"include": []}
    words = list(args)
    while words:
        word = words.pop(0)
        if word.startswith(("--include=", "--mirror=")):
            word, _, value = word.partition("=")
            words.insert(0, value)
        if word in ("-t", "-m", "--method", "--template") and words:
            template = words.pop(0)
        elif word == "--hostname" and words:
            hostname = words.pop(0)
        elif word in ("--ip", "--interface") and words:
            addresses.append(words.pop(0))
        elif word == "--context" and words:
            options["context"] = words.pop(0)
        elif word == "--set" and words and "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            options[key] = value
        elif word == "--include" and words:
            extra["include"].append(words.pop(0))
        elif word == "--mirror" and words:
            extra["mirror"] = words.pop(0)
        elif word == "--flush-cache":
            extra["flush_cache"] = True
        elif word == "--":
            continue
        else:
            raise VstuiError(f"build: unknown option '{word}'; use {BUILD_USAGE}", name)
    if (len(extra) > 1 or extra["include"]) and not template.startswith("debootstrap"):
        raise VstuiError(
            "build: --include, --mirror and --flush-cache are for -t debootstrap[:SUITE]", name
        )
    return template, hostname, addresses, options, extra


def cmd_build(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine import rootfs
    from engine.rootfs.debootstrap import parse_include
    from engine.rootfs.templates import TemplateArgs

    template, hostname, addresses, options, extra = _parse_build(name, args)
    try:
        include = parse_include(extra.pop("include"))
    except VstuiError as exc:
        raise VstuiError(str(exc), name) from None
    if template == "export:-":  # the stream on stdin (`... | ssh HOST vserver NAME build ...`)
        from engine.rootfs.archive import import_guest
        from engine.rootfs.build import _overrides

        if sys.stdin.isatty():
            raise VstuiError("build -t export:-: stdin is a terminal; pipe an export into it",
                             name)  # fmt: skip
        import_guest(paths, name, sys.stdin.buffer, _overrides(hostname, addresses, options))
        return 0
    rootfs.build(paths, name, template=template, hostname=hostname, addresses=addresses,
                 options=options, template_args=TemplateArgs(include=include, **extra))  # fmt: skip
    return 0


def cmd_delete(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.deleting import delete

    delete(paths, name, force="--force" in args or "-f" in args)
    return 0


# -- start / stop ---------------------------------------------------------------------


def cmd_start(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.errors import GuestRunning
    from engine.runtime.supervisor import boot

    try:
        boot(paths, name)
    except GuestRunning:
        _warn(f"vserver '{name}' already running")
    return 0


def cmd_stop(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.stopping import stop

    if not stop(paths, name):
        _warn(f"vserver '{name}' is not running")
    return 0


def cmd_restart(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.forked import detached

    # in a child of its own session: killed between the stop and the start,
    # the guest stayed stopped (QA, #19)
    return detached(lambda: _restart(paths, name, args), name)


def _restart(paths: Paths, name: str, args: Sequence[str]) -> int:
    cmd_stop(paths, name, args)
    code = cmd_start(paths, name, args)
    sys.stdout.flush()
    return code


def cmd_freeze(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.freezing import freeze

    if args:
        return _usage(name, "freeze")
    freeze(paths, name)
    return 0


def cmd_thaw(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.freezing import thaw

    if args:
        return _usage(name, "thaw")
    thaw(paths, name)
    return 0


# -- status ---------------------------------------------------------------------------------


def format_uptime(seconds: float) -> str:
    """util-vserver's ``D days, HH:MM`` or ``HH:MM``."""
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    clock = f"{hours:02d}:{minutes:02d}"
    return f"{days} days, {clock}" if days else clock


def _stats(paths: Paths, name: str):
    from engine.cgroups import manager

    cg = manager()
    rel = paths.cgroup_name(name)
    if not cg.exists(rel):
        return None
    return cg.stats(rel)


def _require_guest(paths: Paths, name: str) -> None:
    """GuestNotFound unless NAME has a configuration or run files (util-vserver
    called any name "stopped"; a typo then looked like a stopped guest)."""
    if not os.path.lexists(paths.config_file(name)) and not paths.run_dir(name).exists():
        from engine.errors import GuestNotFound

        raise GuestNotFound(
            f"no such guest: {paths.config_file(name)} does not exist; see `vserver --list`", name
        )


def disk_figures(paths: Paths, name: str, cfg: object | None = None) -> dict[str, object]:
    """disk_used, disk_limit, inodes_used, inodes_limit (bytes, counts; None: unknown or
    unlimited) and disk_measured (epoch of a cached walk, for `none` guests)."""
    from engine.config import load_guest
    from engine.rootfs import usage

    keys = ("disk_used", "disk_limit", "inodes_used", "inodes_limit", "disk_measured")
    try:
        use = usage(cfg if cfg is not None else load_guest(paths, name), paths)
    except VstuiError as exc:
        return {**dict.fromkeys(keys), "disk_error": exc.message}
    except OSError as exc:  # an image that is missing or unreadable
        return {**dict.fromkeys(keys), "disk_error": f"{exc.filename}: {exc.strerror}"}
    return dict(zip(keys, use._astuple(), strict=True))


def _ids(paths: Paths, name: str, running: bool) -> dict[str, object]:
    """``userns`` and ``idmap`` (base, count, last of the guest's host ids, or null).

    A running guest's from its init; a stopped one's as configured and recorded
    (null until its first start chooses a block)."""
    from engine.config import load_guest
    from engine.runtime import id_map
    from vstui.cli.vserver_config import idmap_dict

    cfg = None if running else load_guest(paths, name)
    ids = id_map(paths, name, cfg)
    return {"userns": ids is not None if cfg is None else cfg.userns, "idmap": idmap_dict(ids)}


def cmd_status(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.state import read

    current = read(paths, name)
    as_json = "--json" in args
    if not current.running:
        _require_guest(paths, name)
        if as_json:
            import json

            data = {"name": name, "state": "stopped", "running": False, **_ids(paths, name, False)}
            print(json.dumps({**data, **disk_figures(paths, name)}))
        else:
            print(f"Vserver '{name}' is stopped")
        return EXIT_STOPPED
    stats = _stats(paths, name)
    nproc = stats.nproc if stats is not None else None
    from engine.runtime.freezing import state_of

    frozen = state_of(paths, name) in ("frozen", "freezing")
    if as_json:
        import json

        data = {
            "name": name, "state": "frozen" if frozen else current.state, "running": True,
            "frozen": frozen, "frozen_since": current.frozen_since if frozen else None,
            "xid": current.xid, "init_pid": current.init_pid,
            "supervisor_pid": current.supervisor_pid, "started": current.started,
            "uptime": current.uptime, "processes": nproc,
            "stats": stats._asdict() if stats is not None else None,
            **_ids(paths, name, True), **disk_figures(paths, name),
        }  # fmt: skip
        print(json.dumps(data))
        return 0
    print(f"Vserver '{name}' is {'frozen' if frozen else 'running'} at context '{current.xid}'")
    print(f"Number of processes: {nproc if nproc is not None else '?'}")
    print(f"Uptime: {format_uptime(current.uptime or 0)}")
    return 0


def cmd_running(paths: Paths, name: str, args: Sequence[str]) -> int:
    from engine.runtime.state import init_identity

    return 0 if init_identity(paths, name) else 1


# enter / exec / suexec live in vserver_exec.py: their start path stays light.


# -- onboot -------------------------------------------------------------------------------------


def cmd_onboot(paths: Paths, args: Sequence[str]) -> int:
    from engine.runtime.onboot import onboot

    if len(args) != 1 or args[0] not in ("start", "stop"):
        _warn(f"{TOOL}: usage: vserver --onboot start|stop")
        return 2
    failures = onboot(paths, args[0], report=_warn)
    return 1 if failures else 0
