"""``vserver NAME config|check|import`` and ``vserver --list``.

vserver NAME config [--json]     the effective configuration (defaults applied)
vserver NAME check               validate NAME.conf; exit 1 printing each problem
vserver NAME import [PATH] [--force] [--dry-run]
                                 util-vserver's /etc/vservers/NAME[.conf] -> NAME.conf
vserver --list [--json]          configured guests
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine import caps as _caps
from engine.config import (
    GuestConfig,
    check_guest,
    load_guest,
    scan_guests,
    validate_name,
    write_new_config,
)
from engine.config import values as _values
from engine.config.legacy import import_guest
from engine.config.writer import new_text
from engine.errors import ConfigError, VstuiError
from engine.paths import Paths
from engine.text import visible, visible_lines

TOOL = "vserver"


def _options(
    args: Sequence[str], allowed: set[str], name: str | None, command: str
) -> tuple[set[str], list[str]]:
    """Split ``args`` into known ``--options`` and positional words."""
    opts: set[str] = set()
    words: list[str] = []
    for arg in args:
        if arg.startswith("--") and arg in allowed:
            opts.add(arg)
        elif arg.startswith("-") and arg != "-":
            usable = " ".join(sorted(allowed)) or "none"
            raise VstuiError(f"{command}: unknown option '{arg}' (options: {usable})", name)
        else:
            words.append(arg)
    return opts, words


# -- rendering ----------------------------------------------------------------------
format_size = _values.size_text  # bytes in the largest exact unit: 268435456 -> 256M


def format_rate(bits: int) -> str:
    """Bits/s in tc syntax: 10000000 -> 10mbit."""
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits % size == 0:
            return f"{bits // size}{unit}"
    return f"{bits}bit"


def _opt(value: Any, render: Any = str, empty: str = "-") -> str:
    return empty if value is None else render(value)


def effective_rows(cfg: GuestConfig) -> list[tuple[str, str]]:
    """(KEY, effective value) for every key, in the documented order."""
    addresses = " ".join(str(a) for a in cfg.addresses)
    return [
        ("S_HOSTNAME", cfg.hostname),
        ("S_DOMAINNAME", _opt(cfg.domainname, lambda d: d or "none", "(host's)")),
        ("S_CONTEXT", _opt(cfg.context, empty="(allocated at start)")),
        ("IPROOT", addresses or "(no address)"),
        ("IPROOTDEV", _opt(cfg.iprootdev)),
        ("IPROOTMASK", _opt(cfg.iprootmask, lambda p: f"/{p}")),
        ("IPROOTBCAST", _opt(cfg.iprootbcast)),
        ("ONBOOT", "yes" if cfg.onboot else "no"),
        ("PRIORITY", str(cfg.priority)),
        ("S_NICE", _opt(cfg.nice)),
        ("S_FLAGS", " ".join(sorted(cfg.flags)) or "-"),
        ("ULIMIT", _values.format_ulimit(cfg.ulimits) or "-"),
        ("S_CAPS", " ".join(cfg.caps) or "-"),
        ("V_MEMORY", _opt(cfg.memory, format_size, "unlimited")),
        ("V_CPU_WEIGHT", _opt(cfg.cpu_weight, empty="100 (kernel default)")),
        ("V_CPU_QUOTA", _opt(cfg.cpu_quota, lambda q: f"{q:g}%", "unlimited")),
        ("V_PIDS", _opt(cfg.pids, empty="unlimited")),
        ("V_DISK", _opt(cfg.disk, format_size, "unlimited")),
        ("V_INODES", _opt(cfg.inodes, empty="unlimited")),
        ("V_DISK_BACKEND", cfg.disk_backend),
        ("V_NETMODE", cfg.netmode),
        ("V_BRIDGE", _opt(cfg.bridge, empty="(routed)")),
        ("V_ROUTE", " ".join(_route_word(r) for r in cfg.routes) or "none (guests and host only)"),
        ("V_NEIGH_LIMIT", str(cfg.neigh_limit)),
        ("V_NET_FILTER", "yes" if cfg.net_filter else "no"),
        ("V_BANDWIDTH_OUT", _opt(cfg.bandwidth_out, format_rate, "unlimited")),
        ("V_BANDWIDTH_IN", _opt(cfg.bandwidth_in, format_rate, "unlimited")),
        ("V_SHARE", " ".join(f"{s.host}:{s.guest}:{'ro' if s.readonly else 'rw'}"
                             for s in cfg.shares) or "-"),
        ("V_MOUNT", " ".join(f"{m.source}:{m.target}:{m.fstype}" + (f":{m.options}" if m.options
                             else "") for m in cfg.mounts) or "-"),
        ("V_TEMPLATE", cfg.template or "-"),
        ("V_INIT", _opt(cfg.init)),
        ("V_STOP_TIMEOUT", f"{cfg.stop_timeout:g}"),
        ("V_PROC_HIDE", " ".join(cfg.proc_hide) or "-"),
        ("V_PROC_SHOW", " ".join(cfg.proc_show) or "-"),
        ("V_SECCOMP", " ".join(cfg.seccomp) or "-"),
        ("V_USERNS", "yes" if cfg.userns else "no"),
    ]  # fmt: skip


def _route_word(route: Any) -> str:
    return (route.dev or "any") + (":nat" if route.nat else "")


def config_dict(cfg: GuestConfig) -> dict[str, Any]:
    """The effective configuration as JSON-ready data."""
    return {
        "name": cfg.name,
        "path": str(cfg.path) if cfg.path else None,
        "hostname": cfg.hostname,
        "domainname": cfg.domainname,
        "context": cfg.context,
        "addresses": [_address(a) for a in cfg.addresses],
        "iprootdev": cfg.iprootdev,
        "iprootmask": cfg.iprootmask,
        "iprootbcast": cfg.iprootbcast,
        "onboot": cfg.onboot,
        "priority": cfg.priority,
        "nice": cfg.nice,
        "flags": sorted(cfg.flags),
        "ulimits": [{"resource": u.resource, "soft": u.soft, "hard": u.hard} for u in cfg.ulimits],
        "caps": list(cfg.caps),
        "effective_caps": sorted(cfg.effective_caps(), key=_caps.number),
        "memory": cfg.memory,
        "cpu_weight": cfg.cpu_weight,
        "cpu_quota": cfg.cpu_quota,
        "pids": cfg.pids,
        "pids_limit": cfg.pids_limit(),
        "disk": cfg.disk,
        "inodes": cfg.inodes,
        "disk_backend": cfg.disk_backend,
        "netmode": cfg.netmode,
        "bridge": cfg.bridge,
        "routes": [{"dev": r.dev, "nat": r.nat} for r in cfg.routes],
        "neigh_limit": cfg.neigh_limit,
        "net_filter": cfg.net_filter,
        "bandwidth_out": cfg.bandwidth_out,
        "bandwidth_in": cfg.bandwidth_in,
        "shares": [{"host": s.host, "guest": s.guest, "readonly": s.readonly} for s in cfg.shares],
        "mounts": [
            {"source": m.source, "target": m.target, "fstype": m.fstype, "options": m.options}
            for m in cfg.mounts
        ],
        "template": cfg.template,
        "init": cfg.init,
        "stop_timeout": cfg.stop_timeout,
        "proc_hide": list(cfg.proc_hide),
        "proc_show": list(cfg.proc_show),
        "seccomp": list(cfg.seccomp),
        "userns": cfg.userns,
        "unknown": {key: value for key, value, _ in cfg.unknown},
        "warnings": list(cfg.warnings),
    }


def idmap_dict(ids: Any) -> dict[str, int] | None:
    """A guest's block of host ids as JSON: base, count, last (None: none)."""
    return None if ids is None else {"base": ids.base, "count": ids.count, "last": ids.last}


def idmap_text(userns: bool, ids: Any) -> str:
    """``0-65535 -> 524288-589823`` (the guest's ids, the host's)."""
    if not userns and ids is None:
        return "the host's own (V_USERNS=no: guest root is host root)"
    if ids is None:
        return "a block of 65536 in 524288-1879048191, chosen at the first start"
    return f"0-{ids.count - 1} -> {ids.text()}"


def _address(a: _values.IPAddr) -> dict[str, Any]:
    return {
        "dev": a.dev,
        "address": a.address,
        "prefix": a.prefixlen,
        "label": a.label,
        "bcast": a.bcast,
    }


def _table(rows: list[list[str]]) -> str:
    """Aligned columns; the last one is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _warn(name: str | None, messages: Sequence[str]) -> None:
    who = f"{name}: " if name else ""
    for message in messages:
        print(visible(f"{TOOL}: {who}warning: {message}"), file=sys.stderr)


# -- commands -------------------------------------------------------------------------
def cmd_config(paths: Paths, name: str, args: Sequence[str]) -> int:
    opts, words = _options(args, {"--json"}, name, "config")
    if words:
        raise VstuiError(f"config: unexpected argument '{words[0]}'", name)
    cfg = load_guest(paths, name)
    from engine.runtime import id_map

    ids = id_map(paths, name, cfg)
    if "--json" in opts:
        print(json.dumps({**config_dict(cfg), "idmap": idmap_dict(ids)}, indent=2))
        return 0
    _warn(name, cfg.warnings)
    written = {key for key, _ in cfg.raw}
    rows = [
        [key, value if key in written else f"{value}  (default)"]
        for key, value in effective_rows(cfg)
    ]
    rows.append(["caps (effective)", _caps.show(cfg.effective_caps())])
    rows.append(["pids limit", _opt(cfg.pids_limit(), empty="unlimited")])
    rows.append(["host ids", idmap_text(cfg.userns, ids)])
    rows.extend([key, f"{value}  (unknown key)"] for key, value, _ in cfg.unknown)
    print(visible_lines(_table(rows)))  # values as written: control characters shown
    return 0


def cmd_set(paths: Paths, name: str, args: Sequence[str]) -> int:
    """``vserver NAME set KEY=VALUE | KEY+=WORD | KEY-=WORD ...``: write NAME.conf
    atomically (comments kept; an empty VALUE removes the key; += adds a word
    to a list key such as S_CAPS or S_FLAGS, -= removes it), apply the limits
    a running guest can take at once, and say what waits for a restart."""
    from engine.facade import Engine

    _, words = _options(args, set(), name, "set")
    if not words:
        raise VstuiError("set: give KEY=VALUE words, e.g. vserver NAME set V_MEMORY=512M", name)
    raw = dict(load_guest(paths, name).raw) if any("+=" in w or "-=" in w for w in words) else {}
    changes: dict[str, str | None] = {}
    for word in words:
        key, op, value = _assignment(word, name)
        current = changes.get(key, raw.get(key, "")) or ""
        if op == "+=":
            value = " ".join([*current.split(), value])
        elif op == "-=":
            value = " ".join(w for w in current.split() if not _same_word(key, w, value))
        changes[key] = value or None
    result = Engine(paths).save_config(name, changes)
    print(f"{name}: saved {', '.join(result.changed)}")
    if result.applied:
        print(f"{name}: applied to the running guest: {', '.join(result.applied)}")
    for error in result.errors:
        print(visible(f"vserver: {name}: not applied: {error}"), file=sys.stderr)
    if result.needs_restart and _state(paths, name)[0] != "stopped":
        print(f"{name}: {', '.join(result.needs_restart)} take effect at the next start "
              f"(vserver {name} restart)")  # fmt: skip
    return 1 if result.errors else 0


def _assignment(word: str, name: str) -> tuple[str, str, str]:
    """(KEY, "=" or "+=" or "-=", VALUE) of one ``set`` word."""
    key, eq, value = word.partition("=")
    op = "="
    if key.endswith(("+", "-")):
        key, op = key[:-1], key[-1] + "="
    if not eq or not key:
        raise VstuiError(f"set: '{word}' is not KEY=VALUE, KEY+=WORD or KEY-=WORD", name)
    if op != "=" and not value:
        raise VstuiError(f"set: '{word}': {op} needs a word", name)
    return key, op, value


def _same_word(key: str, word: str, other: str) -> bool:
    """Whether two words of ``key`` name the same thing (S_CAPS: CAP_ prefix
    and case do not matter; elsewhere the words as written)."""
    if key != "S_CAPS":
        return word == other
    bare = lambda w: (w[:1] if w[:1] in "!~" else "") + w.lstrip("!~").upper().removeprefix("CAP_")  # noqa: E731
    return bare(word).replace("~", "!") == bare(other).replace("~", "!")


def cmd_check(paths: Paths, name: str, args: Sequence[str]) -> int:
    _, words = _options(args, set(), name, "check")
    if words:
        raise VstuiError(f"check: unexpected argument '{words[0]}'", name)
    cfg, errors = check_guest(paths, name)
    errors += _host_owned(paths, cfg)
    _warn(name, cfg.warnings)
    from engine.rootfs import guestinit

    _warn(name, guestinit.warnings(cfg, paths.guest_root(name)))
    for err in errors:
        print(visible(f"{TOOL}: {name}: {err.message}"), file=sys.stderr)
    if errors:
        count = len(errors)
        print(f"{TOOL}: {name}: {count} error{'s' if count > 1 else ''}", file=sys.stderr)
        return 1
    print(f"{paths.config_file(name)}: ok")
    return 0


def _host_owned(paths: Paths, cfg: Any) -> list[ConfigError]:
    """A guest address the host itself carries (checked against the live host)."""
    if not cfg.addresses:
        return []
    from engine.net import addrs

    try:
        addrs.refuse_host_owned(cfg, paths.config_file(cfg.name))
    except ConfigError as err:
        return [err]
    return []


def cmd_import(paths: Paths, name: str, args: Sequence[str]) -> int:
    opts, words = _options(args, {"--force", "--dry-run"}, name, "import")
    if len(words) > 1:
        raise VstuiError(f"import: give at most one PATH, not {len(words)}", name)
    validate_name(name)
    target = paths.config_file(name)
    if target.exists() and "--force" not in opts and "--dry-run" not in opts:
        raise ConfigError("already exists; add --force to replace it", target, guest=name)
    result = import_guest(paths, name, Path(words[0]) if words else None)
    comments = [f"imported from {result.source}"]
    comments += [f"note: {n}" for n in result.warnings]
    comments += [f"not imported: {u}" for u in result.unmapped]
    if "--dry-run" in opts:
        print(visible_lines(new_text(name, result.as_dict(), comments)), end="")
        return 0
    written = write_new_config(
        paths, name, result.as_dict(), comments=comments, overwrite="--force" in opts
    )
    print(visible(f"imported {result.source} -> {written}"))
    for note in result.warnings:
        print(visible(f"  note: {note}"))
    for item in result.unmapped:
        print(visible(f"  not imported: {item}"))
    return 0


def disk_figures(paths: Paths, name: str, cfg: object) -> dict[str, object]:
    from vstui.cli.vserver_runtime import disk_figures as figures

    return figures(paths, name, cfg)


def _state(paths: Paths, name: str) -> tuple[str, int | None]:
    """(running, stopped or frozen -- the freezer's word for a running guest;
    the context id it runs with, None when stopped)."""
    from engine.runtime.freezing import state_of
    from engine.runtime.state import read

    current = read(paths, name)
    if not current.running:
        return "stopped", None
    frozen = state_of(paths, name) in ("frozen", "freezing")
    return ("frozen" if frozen else current.state), current.xid


def cmd_list(paths: Paths, args: Sequence[str]) -> int:
    opts, words = _options(args, {"--json"}, None, "--list")
    if words:
        raise VstuiError(f"--list: unexpected argument '{words[0]}'")
    entries: list[dict[str, Any]] = []
    status = 0
    for found in scan_guests(paths):
        cfg = found.config
        if found.error is not None or cfg is None:
            message = found.error.message if found.error is not None else "unreadable"
            _warn(found.name, [f"skipped: {message}"])
            entries.append({"name": found.name, "error": message})
            status = 1
            continue
        state, xid = _state(paths, found.name)
        entries.append(
            {
                "name": found.name,
                "state": state,
                # a running guest's own context id, else the fixed one (S_CONTEXT)
                "context": xid if xid is not None else cfg.context,
                "hostname": cfg.hostname,
                "addresses": [str(a.interface) for a in cfg.addresses],
                "onboot": cfg.onboot,
                "backend": cfg.disk_backend,
                **disk_figures(paths, found.name, cfg),
            }
        )
    if "--json" in opts:
        print(json.dumps(entries, indent=2))
        return status
    rows = [["NAME", "STATE", "CONTEXT", "HOSTNAME", "ADDRESSES", "ONBOOT"]]
    for e in entries:
        if "error" in e:
            rows.append([e["name"], "?", "?", "?", "(config error)", "?"])
            continue
        rows.append(
            [
                e["name"],
                e["state"],
                _opt(e["context"]),
                e["hostname"],
                ",".join(e["addresses"]) or "-",
                "yes" if e["onboot"] else "no",
            ]
        )
    if len(rows) > 1:
        print(visible_lines(_table(rows)))
    return status
