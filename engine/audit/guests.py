"""Guest configuration checks: capabilities, flags, limits, network, shares,
duplicates between guests, configuration errors. Pure reading of NAME.conf
(plus the host's device addresses for the subnet check)."""

from __future__ import annotations

import ipaddress
import os
import shlex
from pathlib import Path
from typing import Any

from engine import caps as _caps
from engine.audit import fixes
from engine.audit.context import Audit
from engine.config import GuestConfig, Share
from engine.errors import VstuiError

SHARED_DEVICE_MODES = ("host", "ipvlan", "macvlan")

# capability -> (rule, why); anything else added is GUEST-CAP-OTHER
CAP_RULES: dict[str, tuple[str, str | None]] = {
    "SYS_ADMIN": ("GUEST-CAP-SYS_ADMIN", None),
    "SYS_MODULE": ("GUEST-CAP-SYS_MODULE", None),
    "SYS_RAWIO": ("GUEST-CAP-SYS_RAWIO", None),
    "SYS_TIME": ("GUEST-CAP-HIGH", "SYS_TIME sets the host's real-time clock, which no "
                 "namespace separates"),
    "MKNOD": ("GUEST-CAP-HIGH", "MKNOD creates device nodes, e.g. for the host's disks"),
    "BPF": ("GUEST-CAP-HIGH", "BPF loads programs into the host's kernel"),
    "PERFMON": ("GUEST-CAP-HIGH", "PERFMON observes every process on the host and widens "
                "the kernel's attack surface"),
    "SYSLOG": ("GUEST-CAP-HIGH", "SYSLOG reads the host's kernel log, including kernel "
               "addresses"),
    "MAC_ADMIN": ("GUEST-CAP-HIGH", "MAC_ADMIN changes the host's mandatory access policy"),
    "MAC_OVERRIDE": ("GUEST-CAP-HIGH", "MAC_OVERRIDE bypasses the host's mandatory access "
                     "policy"),
}  # fmt: skip

# host paths no guest should see; the first group is critical even read-only
CRITICAL_PATHS = ("/", "/etc", "/root", "/run", "/var/run", "/var/run/docker.sock",
                  "/run/docker.sock", "/dev", "/proc", "/sys")  # fmt: skip
SENSITIVE_PATHS = (*CRITICAL_PATHS, "/home", "/boot")


def check(audit: Audit) -> None:
    for name in audit.scope:
        cfg = audit.configs.get(name)
        if cfg is None:
            continue
        config_errors(audit, cfg)
        capabilities(audit, cfg)
        seccomp(audit, cfg)
        user_namespace(audit, cfg)
        flags_and_limits(audit, cfg)
        guest_init(audit, cfg)
        network(audit, cfg)
        shares(audit, cfg)
        subnet(audit, cfg)
    duplicates(audit)


def config_errors(audit: Audit, cfg: GuestConfig) -> None:
    errors = audit.errors.get(cfg.name) or []
    if not errors:
        return
    count = len(errors)
    audit.col.add(
        "GUEST-CONFIG-ERROR",
        f"{count} configuration error{'s' if count > 1 else ''}"
        + (" in a guest started at boot" if cfg.onboot else ""),
        fixes.vserver(audit.paths, cfg.name, "check"),  # names each line to fix
        guest=cfg.name,
        details=[e.message for e in errors],
        severity=None if cfg.onboot else "low",
    )


# -- capabilities and system calls ---------------------------------------------------------


def capabilities(audit: Audit, cfg: GuestConfig) -> None:
    try:
        live = cfg.effective_caps()
    except VstuiError as exc:
        audit.col.cannot_read(f"S_CAPS of {cfg.name}", exc, cfg.name)
        return
    for cap in sorted(live - _caps.DEFAULT_GUEST_CAPS, key=_caps.number):
        rule, why, severity = _cap_rule(cap, cfg)
        audit.col.add(
            rule,
            f"S_CAPS adds CAP_{cap} ({_caps.explain(cap)})",
            fixes.drop_cap(cfg, audit.paths, cap),
            guest=cfg.name,
            severity=severity,
            why=why,
        )
    dac_read_search(audit, cfg, live)


# in a user namespace these are checked against the host's namespace only: no effect
HOST_ONLY_CAPS = frozenset({"SYS_MODULE", "SYS_RAWIO", "SYS_TIME", "MKNOD", "BPF", "PERFMON",
                            "SYSLOG", "MAC_ADMIN", "MAC_OVERRIDE"})  # fmt: skip


def _cap_rule(cap: str, cfg: GuestConfig) -> tuple[str, str | None, str | None]:
    if cfg.userns and cap in HOST_ONLY_CAPS:
        return "GUEST-CAP-OTHER", f"in the guest's user namespace CAP_{cap} is never checked " \
            "where it matters (the kernel asks for it in the host's namespace): no effect", \
            "info"  # fmt: skip
    if cfg.userns and cap == "SYS_ADMIN":
        return "GUEST-CAP-OTHER", "in the guest's user namespace SYS_ADMIN mounts what a user " \
            "namespace may mount (tmpfs, proc, overlay) and makes namespaces: more kernel code " \
            "within reach, not the host", "medium"  # fmt: skip
    if cap in CAP_RULES:
        rule, why = CAP_RULES[cap]
        return rule, why, None
    if cap == "NET_ADMIN":
        if cfg.netmode == "host" and cfg.userns:
            return "GUEST-CAP-NET", "with V_NETMODE=host and a user namespace NET_ADMIN " \
                "is checked against the host's network namespace: no effect", "info"  # fmt: skip
        if cfg.netmode == "host":
            return "GUEST-CAP-HIGH", "with V_NETMODE=host NET_ADMIN reconfigures the host's " \
                "own interfaces, routes and firewall", None  # fmt: skip
        return "GUEST-CAP-NET", None, None
    if cap == "NET_RAW":
        severity, why = net_raw_rating(cfg)
        return "GUEST-CAP-NET", why, severity
    return "GUEST-CAP-OTHER", f"CAP_{cap} lets the guest's root {_caps.explain(cap)}", None


def net_raw_rating(cfg: GuestConfig) -> tuple[str, str]:
    """Severity of CAP_NET_RAW for the guest's network mode, and why."""
    if cfg.netmode in SHARED_DEVICE_MODES:
        where = "the host's own interfaces" if cfg.netmode == "host" else "the LAN"
        return "high", f"with V_NETMODE={cfg.netmode} NET_RAW sniffs and forges frames on " \
                       f"{where}, and nothing of the host filters them"  # fmt: skip
    if cfg.bridge:
        if not cfg.net_filter:
            return "high", "on a bridge without V_NET_FILTER, NET_RAW forges ARP, neighbour " \
                           "and router advertisements for the whole segment"  # fmt: skip
        return "medium", "on a bridge NET_RAW reaches the segment's other hosts at layer 2 " \
                         "(the bridge filter drops forged sources and advertisements)"  # fmt: skip
    if not cfg.net_filter:
        return "medium", "with V_NET_FILTER=no the host end does not drop forged sources"
    return "low", "a routed guest's forged sources are dropped on its host end"


def _allowed_calls(cfg: GuestConfig) -> list[str]:
    return [w[1:] for w in cfg.seccomp if w.startswith("+")]


def dac_read_search(audit: Audit, cfg: GuestConfig, live: frozenset[str]) -> None:
    if "DAC_READ_SEARCH" not in live:
        return
    shocker = "open_by_handle_at" in _allowed_calls(cfg)
    skeleton = (cfg.template or "").split(":", 1)[0] == "skeleton"
    if not cfg.shares and not (shocker and skeleton):
        return
    shared = [s.host for s in cfg.shares] or ["the host's /usr (skeleton)"]
    audit.col.add(
        "GUEST-CAP-DAC_READ_SEARCH",
        "keeps CAP_DAC_READ_SEARCH with host directories shared"
        + (" and open_by_handle_at allowed" if shocker else ""),
        _drop_call(audit, cfg, "open_by_handle_at") if shocker
        else fixes.add_cap(cfg, audit.paths, "!CAP_DAC_READ_SEARCH"),
        guest=cfg.name,
        details=[f"shared: {', '.join(shared)}"],
        severity=None if shocker else "low",
    )  # fmt: skip


def _drop_call(audit: Audit, cfg: GuestConfig, call: str) -> str:
    return fixes.edit(audit.paths, cfg.name, f"V_SECCOMP-=+{call}")


def seccomp(audit: Audit, cfg: GuestConfig) -> None:
    from engine import seccomp as sc

    checked = {d.name for d in sc.arg_denials(cfg)}
    for call in _allowed_calls(cfg):
        if call not in sc.DEFAULT_ALLOW or call in checked | sc.LOCK_DENY:
            audit.col.add(
                "GUEST-SECCOMP-ALLOW",
                f"V_SECCOMP allows {call}, which the default filter refuses or restricts",
                _drop_call(audit, cfg, call),
                guest=cfg.name,
            )


def user_namespace(audit: Audit, cfg: GuestConfig) -> None:
    if not cfg.userns:
        audit.col.add(
            "GUEST-PRIVILEGED",
            "V_USERNS=no: the guest's root is the host's root",
            fixes.set_keys(audit.paths, cfg.name, {"V_USERNS": "yes"}),
            guest=cfg.name,
        )
        return
    from engine.runtime import idmap

    mapping = idmap.planned(audit.paths, cfg.name, _xid(audit, cfg))
    if mapping is None:
        return
    for holder in idmap.overlapping(mapping, audit.id_holders()):
        what = {"subuid": "/etc/subuid range", "subgid": "/etc/subgid range",
                "user": "host user", "group": "host group"}[holder.what]  # fmt: skip
        ids = f"{holder.first}" + (
            f"-{holder.first + holder.count - 1}" if holder.count > 1 else ""
        )
        audit.col.add(
            "GUEST-IDS-SHARED",
            f"{what} {holder.name} ({ids}) lies inside the guest's host ids {mapping.text()}",
            _ids_fix(holder),
            guest=cfg.name,
        )
    for other, block in idmap.recorded(audit.paths).items():
        if other != cfg.name and block == mapping.block and other < cfg.name:
            audit.col.add("GUEST-IDS-SHARED", f"guests {other} and {cfg.name} share host ids "
                          f"{mapping.text()}", f"delete {other}'s line in "
                          f"{audit.paths.state_dir / 'idblocks'} while it is stopped",
                          guest=cfg.name, severity="critical")  # fmt: skip


def _ids_fix(holder: Any) -> str:
    what, name = holder.what, holder.name
    if what in ("subuid", "subgid"):
        return f"remove {name}'s range from /etc/{what} (or move it: usermod --del-sub{what[3:]}s)"
    flag = "-u" if what == "user" else "-g"
    command = "usermod" if what == "user" else "groupmod"
    return f"give {what} {name} an id below 524288 ({command} {flag} NEWID {name})"


def _xid(audit: Audit, cfg: GuestConfig) -> int:
    if cfg.context is not None:
        return cfg.context
    from engine.runtime import xid

    return xid.allocated(audit.paths).get(cfg.name, -1)


# -- flags, limits, network mode ----------------------------------------------------------


def flags_and_limits(audit: Audit, cfg: GuestConfig) -> None:
    add = audit.col.add
    n = cfg.name
    if not cfg.has_flag("lock"):
        add("GUEST-NO-LOCK", "S_FLAGS has no lock flag", fixes.flags(cfg, audit.paths, "lock"),
            guest=n)  # fmt: skip
    put = lambda key, value: fixes.set_keys(audit.paths, n, {key: value})  # noqa: E731
    if cfg.pids_limit() is None:
        add("GUEST-NO-PROC-LIMIT", "no process limit", put("V_PIDS", "500"), guest=n)
    if cfg.memory is None:
        add("GUEST-NO-MEMORY-LIMIT", "no memory limit", put("V_MEMORY", "512M"), guest=n)
    if cfg.cpu_quota is None and cfg.cpu_weight is None:
        add("GUEST-NO-CPU-LIMIT", "no CPU limit", put("V_CPU_QUOTA", "100%"), guest=n)
    if cfg.disk is None:
        # without a backend the limit needs a tree of its own: an image
        fix = put("V_DISK", "2G") if cfg.disk_backend != "none" else _rebuild_with_image(
            audit, cfg, "V_DISK=2G")  # fmt: skip
        add("GUEST-NO-DISK-LIMIT", "no disk limit", fix, guest=n)
    elif cfg.disk_backend == "none":
        add("GUEST-NO-DISK-LIMIT", "V_DISK is set but not enforced (V_DISK_BACKEND=none)",
            _rebuild_with_image(audit, cfg),
            guest=n)  # fmt: skip


def _rebuild_with_image(audit: Audit, cfg: GuestConfig, *settings: str) -> str:
    """A tree cannot change its backend in place: export, delete, build again
    from the export on a disk image (its configuration, context id and files
    come back)."""
    archive = str(audit.paths.state_dir / f"{cfg.name}.export.tar.zst")
    run = lambda *words: fixes.vserver(audit.paths, cfg.name, *words)  # noqa: E731
    sets = [w for s in ("V_DISK_BACKEND=image", *settings) for w in ("--set", s)]
    steps = (shlex.join(["mkdir", "-p", str(audit.paths.state_dir)]), run("export", archive),
             run("delete", "--force"),
             run("build", "-t", f"export:{archive}", *sets))  # fmt: skip
    return " && ".join(steps)


INIT_RULES = {"missing": "GUEST-INIT-MISSING", "setpcap": "GUEST-SYSTEMD-SETPCAP"}


def guest_init(audit: Audit, cfg: GuestConfig) -> None:
    """fakeinit without an executable /sbin/init; systemd without CAP_SETPCAP."""
    from engine.rootfs import guestinit

    for kind, message in guestinit.findings(cfg, audit.paths.guest_root(cfg.name)):
        fix = (fixes.flags(cfg, audit.paths, remove="fakeinit") if kind == "missing"
               else fixes.add_cap(cfg, audit.paths, "SETPCAP"))  # fmt: skip
        audit.col.add(INIT_RULES[kind], message, fix, guest=cfg.name)


def network(audit: Audit, cfg: GuestConfig) -> None:
    if cfg.netmode == "host":
        audit.col.add("GUEST-NETMODE-HOST", "V_NETMODE=host shares the host's network stack",
                      fixes.set_keys(audit.paths, cfg.name, {"V_NETMODE": "veth"}),
                      guest=cfg.name)  # fmt: skip
        return
    if cfg.netmode != "veth":
        return
    if not cfg.net_filter:
        audit.col.add("GUEST-NET-FILTER-OFF",
                      f"V_NET_FILTER=no: {'bridge' if cfg.bridge else 'host end'} filtering off",
                      fixes.set_keys(audit.paths, cfg.name, {"V_NET_FILTER": ""}), guest=cfg.name,
                      severity=None if cfg.bridge else "low")  # fmt: skip
    if cfg.routes and not cfg.bridge:
        words = " ".join((r.dev or "any") + (":nat" if r.nat else "") for r in cfg.routes)
        anywhere = any(r.dev is None for r in cfg.routes)
        audit.col.add("GUEST-NET-ROUTE", f"V_ROUTE={words}: the guest leaves through host "
                      "devices" + (" (every network the host reaches)" if anywhere else ""),
                      fixes.set_keys(audit.paths, cfg.name, {"V_ROUTE": ""}),  # host, guests
                      guest=cfg.name, severity="medium" if anywhere else None)  # fmt: skip


# -- shared directories ------------------------------------------------------------------


def _inside(path: str, base: str) -> bool:
    """``path`` is ``base`` or below it (``/`` only contains itself here: the
    caller treats a share of ``/`` on its own)."""
    return path == base or (base != "/" and path.startswith(base.rstrip("/") + "/"))


def _own_dirs(audit: Audit) -> list[str]:
    p = audit.paths
    dirs = (p.vservers_dir, p.config_dir, p.legacy_config_dir, p.run_base, p.state_dir)
    return [os.path.normpath(d) for d in dirs]


def sensitive_hit(host: str, own: list[str]) -> str | None:
    """The sensitive path a share's host side is, lies in, or contains."""
    candidates = {os.path.normpath(host)}
    try:
        candidates.add(os.path.realpath(host))
    except OSError:
        pass
    for path in sorted(candidates):
        if path == "/":
            return "/"
        for base in (*SENSITIVE_PATHS, *own):
            if _inside(path, base) or _inside(base, path):
                return base
    return None


def _share_as_written(cfg: GuestConfig, share: Share) -> str:
    """The V_SHARE word that made ``share``."""
    for word in fixes.raw(cfg, "V_SHARE").split():
        if word.split(":")[:2] == [share.host, share.guest]:
            return word
    return _share_word(share, share.readonly)


def _shares_without(audit: Audit, cfg: GuestConfig, gone: Share) -> str:
    """V_SHARE without ``gone`` (share a dedicated directory instead)."""
    return fixes.edit(audit.paths, cfg.name, f"V_SHARE-={_share_as_written(cfg, gone)}")


def _share_word(s: Share, readonly: bool) -> str:
    return f"{s.host}:{s.guest}" + (":ro" if readonly else ":rw")


def shares(audit: Audit, cfg: GuestConfig) -> None:
    own = _own_dirs(audit)
    for share in cfg.shares:
        hit = sensitive_hit(share.host, own)
        usr_rw = not share.readonly and any(
            _inside(p, "/usr") or _inside("/usr", p)
            for p in {os.path.normpath(share.host)})  # fmt: skip
        if hit is not None or usr_rw:
            hit = hit or "/usr"
            critical = not share.readonly or hit in CRITICAL_PATHS or hit in own
            audit.col.add(
                "GUEST-SHARE-SENSITIVE",
                f"V_SHARE {share.host} -> {share.guest} ({'ro' if share.readonly else 'rw'}) "
                f"exposes the host's {hit}",
                _shares_without(audit, cfg, share),
                guest=cfg.name,
                severity=None if critical else "high",
            )
        elif not share.readonly:
            audit.col.add(
                "GUEST-SHARE-RW",
                f"V_SHARE {share.host} -> {share.guest} is read-write",
                fixes.edit(
                    audit.paths,
                    cfg.name,
                    f"V_SHARE-={_share_as_written(cfg, share)}",
                    f"V_SHARE+={_share_word(share, True)}",
                ),  # fmt: skip
                guest=cfg.name,
            )


# -- addresses and context ids -----------------------------------------------------------


def duplicates(audit: Audit) -> None:
    by_ip: dict[str, list[str]] = {}
    by_xid: dict[int, list[str]] = {}
    for cfg in audit.configs.values():
        for ip in dict.fromkeys(str(a.interface.ip) for a in cfg.addresses):
            if not ipaddress.ip_address(ip).is_unspecified:
                by_ip.setdefault(ip, []).append(cfg.name)
        if cfg.context is not None:
            by_xid.setdefault(cfg.context, []).append(cfg.name)
    for ip, names in sorted(by_ip.items()):
        for name, others in _pairs(audit, names):
            audit.col.add("GUEST-DUP-ADDRESS", f"address {ip} is also configured for {others}",
                          _readdress(audit, name, ip, by_ip), guest=name)  # fmt: skip
    for xid, names in sorted(by_xid.items()):
        for name, others in _pairs(audit, names):
            # without S_CONTEXT an id is allocated at the next start
            audit.col.add("GUEST-DUP-CONTEXT", f"context id {xid} (S_CONTEXT) is also used by "
                          f"{others}", fixes.set_keys(audit.paths, name, {"S_CONTEXT": ""}),
                          guest=name)  # fmt: skip


def _readdress(audit: Audit, name: str, ip: str, by_ip: dict[str, list[str]]) -> str:
    """IPROOT with ``ip`` replaced by the first free address of its subnet."""
    cfg = audit.configs[name]
    taken = {ipaddress.ip_address(a) for a in by_ip}
    words = []
    for addr in cfg.addresses:
        iface = addr.interface
        if str(iface.ip) == ip:
            free = next((h for h in iface.network.hosts() if h not in taken), None)
            if free is not None:
                taken.add(free)
                iface = ipaddress.ip_interface(f"{free}/{iface.network.prefixlen}")
        words.append((f"{addr.dev}:" if addr.dev else "") + str(iface))
    return fixes.set_keys(audit.paths, name, {"IPROOT": " ".join(words)})


def _routed(audit: Audit, cfg: GuestConfig) -> str:
    """A routed veth guest needs no host device on its subnet."""
    return fixes.set_keys(audit.paths, cfg.name, {"V_NETMODE": "veth", "IPROOTDEV": ""})


def _pairs(audit: Audit, names: list[str]) -> list[tuple[str, str]]:
    """(guest in scope, the others) for a value more than one guest has."""
    if len(names) < 2:
        return []
    return [(n, ", ".join(o for o in names if o != n)) for n in names if n in audit.scope]


def subnet(audit: Audit, cfg: GuestConfig) -> None:
    if cfg.netmode not in ("ipvlan", "macvlan") or not cfg.addresses:
        return
    devices = audit.facts.host_addresses
    if "host device addresses" in audit.facts.errors:
        audit.col.cannot_read("host device addresses", audit.facts.errors["host device addresses"],
                              cfg.name)  # fmt: skip
        return
    for addr in cfg.addresses:
        dev = addr.dev or cfg.iprootdev
        ip = addr.interface.ip
        if dev is None:
            audit.col.add("GUEST-ADDR-SUBNET", f"address {ip} has no host device for "
                          f"V_NETMODE={cfg.netmode}", _routed(audit, cfg),
                          guest=cfg.name)  # fmt: skip
            continue
        if dev not in devices and not Path(f"/sys/class/net/{dev}").exists():
            audit.col.add("GUEST-ADDR-SUBNET", f"host device {dev} of address {ip} does not "
                          "exist", _routed(audit, cfg), guest=cfg.name)  # fmt: skip
            continue
        nets = [a.network for a in devices.get(dev, ()) if a.version == ip.version]
        if not any(ip in net for net in nets):
            shown = ", ".join(str(n) for n in nets) or f"no IPv{ip.version} subnet"
            audit.col.add(
                "GUEST-ADDR-SUBNET",
                f"address {ip} is not on a subnet of host device {dev}",
                _routed(audit, cfg),
                guest=cfg.name,
                details=[f"{dev}: {shown}"],
            )
