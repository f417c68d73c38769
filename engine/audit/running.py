"""Running guests: drift between the configuration and what is in force
(capability bounding set, cgroup limits, addresses), guests near a limit,
host processes on guest addresses, stale run directories.

Reads /proc/PID/status, /proc/PID/net/{fib_trie,if_inet6}, the guest's
cgroup control files and the disk usage; never enters a namespace.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from engine import caps as _caps
from engine.audit import fixes
from engine.audit.context import Audit, guest_pids
from engine.audit.facts import netns_addresses
from engine.config import GuestConfig
from engine.errors import VstuiError
from engine.procfs import read_text

NEAR = 0.9  # share of a limit that counts as near it
FROZEN_TOO_LONG = 3600.0  # seconds
PAGE = 4096  # v1 rounds memory limits down to whole pages
ACTIVE = ("running", "starting", "stopping")


def check(audit: Audit) -> None:
    from engine.runtime import state

    for cfg in audit.scoped():
        try:
            rs = state.read(audit.paths, cfg.name)
        except OSError as exc:
            audit.col.cannot_read(audit.paths.run_dir(cfg.name), exc, cfg.name)
            continue
        if rs.running:
            running_guest(audit, cfg, rs.init_pid)
            frozen_too_long(audit, cfg, rs.frozen_since)
        elif rs.stale and state.read_value(audit.paths.run_dir(cfg.name), "state") in ACTIVE:
            audit.col.add("RUN-STALE", f"run directory says {cfg.name} runs, but its init is "
                          "gone", fixes.vserver(audit.paths, cfg.name, "stop"),
                          guest=cfg.name)  # fmt: skip
        disk_near_limit(audit, cfg)
    host_listeners(audit)


def frozen_too_long(audit: Audit, cfg: GuestConfig, since: float | None) -> None:
    """RUN-FROZEN: run_dir/frozen older than an hour, and the freezer agrees."""
    import time

    if since is None or time.time() - since < FROZEN_TOO_LONG:
        return
    from engine.cgroups import manager

    try:
        kernel = manager().freezer_state(audit.paths.cgroup_name(cfg.name))
    except VstuiError:
        kernel = None
    if kernel not in ("frozen", "freezing"):
        return  # thawed behind our back: the record is stale, the guest runs
    hours = (time.time() - since) / 3600
    audit.col.add("RUN-FROZEN", f"{cfg.name} has been frozen for {hours:.1f} hours",
                  fixes.vserver(audit.paths, cfg.name, "thaw"), guest=cfg.name)  # fmt: skip


def running_guest(audit: Audit, cfg: GuestConfig, pid: int) -> None:
    caps_drift(audit, cfg, pid)
    stats = limits_drift(audit, cfg)
    if stats is not None:
        near_limit(audit, cfg, stats)
    if cfg.netmode != "host":
        addresses_drift(audit, cfg, pid)


def _restart(audit: Audit, cfg: GuestConfig) -> str:
    return fixes.vserver(audit.paths, cfg.name, "restart")


# -- capabilities ---------------------------------------------------------------------------


def read_capbnd(pid: int, proc_root: str = "/proc") -> frozenset[str]:
    for line in read_text(f"{proc_root}/{pid}/status").splitlines():
        if line.startswith("CapBnd:"):
            return _caps.from_mask(int(line.split()[1], 16))
    raise OSError(f"{proc_root}/{pid}/status has no CapBnd line")


def caps_drift(audit: Audit, cfg: GuestConfig, pid: int) -> None:
    try:
        live = read_capbnd(pid, audit.facts.sources.proc_root) & _caps.all_caps()
        want = cfg.effective_caps() & _caps.all_caps()
    except (OSError, VstuiError) as exc:
        audit.col.cannot_read(f"capabilities of {cfg.name} (init pid {pid})", exc, cfg.name)
        return
    extra, missing = live - want, want - live
    if not extra and not missing:
        return
    details = []
    if extra:
        details.append("running with, not configured: " + _caps.show(extra))
    if missing:
        details.append("configured, not in force: " + _caps.show(missing))
    audit.col.add(
        "RUN-CAPS-DRIFT",
        f"init (pid {pid}) has a capability bounding set other than S_CAPS gives",
        _restart(audit, cfg),
        guest=cfg.name,
        details=details,
        severity=None if extra else "low",
    )


# -- cgroup limits --------------------------------------------------------------------------


def _cpu_quota(directories: list[Path]) -> tuple[bool, float | None]:
    """(found, percent of one CPU or None when unlimited) from cpu.max / cfs files."""
    for d in directories:
        try:
            if (d / "cpu.cfs_quota_us").exists():
                quota = int((d / "cpu.cfs_quota_us").read_text())
                period = int((d / "cpu.cfs_period_us").read_text())
                return True, None if quota < 0 else quota * 100 / period
            if (d / "cpu.max").exists():
                words = (d / "cpu.max").read_text().split()
                return True, None if words[0] == "max" else int(words[0]) * 100 / int(words[1])
        except (OSError, ValueError, IndexError):
            continue
    return False, None


def limits_drift(audit: Audit, cfg: GuestConfig) -> Any | None:
    """Compare the cgroup's limits with the config; the stats, for near_limit."""
    try:
        from engine.cgroups import manager

        cg = manager()
        rel = audit.paths.cgroup_name(cfg.name)
        if not cg.exists(rel):
            audit.col.add("RUN-LIMIT-DRIFT", f"running guest has no cgroup {rel}: no limit "
                          "is enforced", _restart(audit, cfg), guest=cfg.name)  # fmt: skip
            return None
        stats = cg.stats(rel)
        has_cpu, live_cpu = _cpu_quota(cg.paths(rel))
    except (OSError, VstuiError) as exc:
        audit.col.cannot_read(f"cgroup of {cfg.name}", exc, cfg.name)
        return None
    want_memory = cfg.memory // PAGE * PAGE if cfg.memory is not None else None
    live_memory = stats.memory_limit // PAGE * PAGE if stats.memory_limit is not None else None
    drift = []
    if want_memory != live_memory:
        drift.append(f"memory: configured {_size(cfg.memory)}, in force {_size(live_memory)}")
    if cfg.pids_limit() != stats.pids_limit:
        drift.append(f"pids: configured {_num(cfg.pids_limit())}, in force "
                     f"{_num(stats.pids_limit)}")  # fmt: skip
    if has_cpu and not _same_quota(cfg.cpu_quota, live_cpu):
        drift.append(f"cpu quota: configured {_pct(cfg.cpu_quota)}, in force {_pct(live_cpu)}")
    if drift:
        audit.col.add("RUN-LIMIT-DRIFT", "cgroup limits differ from the configuration",
                      _restart(audit, cfg), guest=cfg.name, details=drift)  # fmt: skip
    return stats


def _same_quota(want: float | None, live: float | None) -> bool:
    if want is None or live is None:
        return want is live
    return abs(want - live) < 0.5


def _size(value: int | None) -> str:
    if value is None:
        return "unlimited"
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if value >= 1 << shift and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return str(value)


def _num(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}%"


# -- near a limit ---------------------------------------------------------------------------


def _near(used: int | None, limit: int | None) -> bool:
    return used is not None and bool(limit) and used > NEAR * limit  # type: ignore[operator]


def near_limit(audit: Audit, cfg: GuestConfig, stats: Any) -> None:
    if _near(stats.memory_used, stats.memory_limit):
        _near_finding(audit, cfg, "memory", stats.memory_used, stats.memory_limit,
                      _set(audit, cfg, "V_MEMORY", _size(_double(stats.memory_limit))),
                      _size)  # fmt: skip
    if _near(stats.pids_current, stats.pids_limit):
        _near_finding(audit, cfg, "processes", stats.pids_current, stats.pids_limit,
                      _set(audit, cfg, "V_PIDS", str(stats.pids_limit * 2)), str)  # fmt: skip


def _set(audit: Audit, cfg: GuestConfig, key: str, value: str) -> str:
    return fixes.set_keys(audit.paths, cfg.name, {key: value})


def _double(value: int) -> int:
    return value * 2 // (1 << 20) * (1 << 20) or value * 2


def _near_finding(audit, cfg, what, used, limit, fix, fmt) -> None:
    audit.col.add(
        "RUN-NEAR-LIMIT",
        f"{what}: {fmt(used)} of {fmt(limit)} used ({used * 100 // limit}%)",
        fix,
        guest=cfg.name,
    )


def disk_near_limit(audit: Audit, cfg: GuestConfig) -> None:
    if cfg.disk is None or cfg.disk_backend == "none":
        return
    from engine.rootfs import usage

    try:
        du = usage(cfg, audit.paths)
    except FileNotFoundError:
        return  # not built yet
    except (OSError, VstuiError) as exc:
        audit.col.cannot_read(f"disk usage of {cfg.name}", exc, cfg.name)
        return
    if _near(du.bytes_used, du.bytes_limit):
        grow = _size(_double(du.bytes_limit))
        _near_finding(audit, cfg, "disk", du.bytes_used, du.bytes_limit,
                      fixes.vserver(audit.paths, cfg.name, "quota", grow), _size)  # fmt: skip
    if _near(du.inodes_used, du.inodes_limit):
        _near_finding(audit, cfg, "files (inodes)", du.inodes_used, du.inodes_limit,
                      _set(audit, cfg, "V_INODES", str(du.inodes_limit * 2)), str)  # fmt: skip


# -- addresses --------------------------------------------------------------------------------


def configured_ips(cfg: GuestConfig) -> frozenset[str]:
    found = set()
    for a in cfg.addresses:
        ip = a.interface.ip
        if not (ip.is_unspecified or ip.is_loopback or ip.is_link_local):
            found.add(str(ip))
    return frozenset(found)


def addresses_drift(audit: Audit, cfg: GuestConfig, pid: int) -> None:
    try:
        live = netns_addresses(pid, audit.facts.sources.proc_root)
    except OSError as exc:
        audit.col.cannot_read(f"addresses of {cfg.name} (/proc/{pid}/net)", exc, cfg.name)
        return
    want = configured_ips(cfg)
    extra, missing = sorted(live - want, key=_ip_key), sorted(want - live, key=_ip_key)
    if not extra and not missing:
        return
    details = []
    if extra:
        details.append("in the namespace, not in IPROOT: " + " ".join(extra))
    if missing:
        details.append("in IPROOT, not in the namespace: " + " ".join(missing))
    audit.col.add("RUN-ADDR-DRIFT", "addresses in the guest's network namespace differ from "
                  "IPROOT", _restart(audit, cfg), guest=cfg.name, details=details)  # fmt: skip


def _ip_key(text: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(text)
    return ip.version, int(ip)


# -- host processes on guest addresses ----------------------------------------------------------


def host_listeners(audit: Audit) -> None:
    ips: dict[str, list[str]] = {}
    for cfg in audit.scoped():
        for ip in configured_ips(cfg):
            ips.setdefault(str(ipaddress.ip_address(ip)), []).append(cfg.name)
    if not ips:
        return
    owners = guest_pids(audit)
    for sock in audit.facts.listeners:
        names = ips.get(sock.address)
        if not names or (sock.pid is not None and sock.pid in owners):
            continue
        who = f"{sock.process} (pid {sock.pid})" if sock.pid else "a host process"
        shown = f"[{sock.address}]" if ":" in sock.address else sock.address
        for name in names:
            audit.col.add(
                "RUN-HOST-LISTENER",
                f"{who} in context 0 listens on {shown}:{sock.port}/{sock.proto}, an "
                f"address of {name}",
                f"kill {sock.pid}, or bind that service to a host address"
                if sock.pid else "find the process (ss -lntup) and bind it to a host address",
                guest=name,
            )  # fmt: skip
    if "listening sockets" in audit.facts.errors:
        audit.col.cannot_read("listening sockets", audit.facts.errors["listening sockets"])
