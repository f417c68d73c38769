"""Host checks: the barrier, who can reach guest trees, vstui's own files,
wildcard listeners, sshd, cgroup controllers, user namespaces.

Everything is read with lstat/stat/open: nothing is created or changed.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.audit import fixes
from engine.audit.context import (
    Audit,
    guest_pids,
    mode_text,
    traversable_by_others,
    writable_by_others,
)

SHARING_MODES = ("host", "ipvlan", "macvlan")


def check(audit: Audit) -> None:
    if audit.host_wide:
        barrier(audit)
        own_directories(audit)
        wildcard_listeners(audit)
        bridges_taking_router_adverts(audit)
        sshd(audit)
        user_namespaces(audit)
    for name in audit.scope:
        guest_root(audit, name)
        guest_files(audit, name)
    cgroup_controllers(audit)


# -- the barrier and the guest trees -----------------------------------------------


def _chown_fix(path: Path, mode: str) -> str:
    return (
        shlex.join(["chown", "root:root", str(path)])
        + " && "
        + shlex.join(["chmod", mode, str(path)])
    )


def barrier(audit: Audit) -> None:
    top = audit.paths.vservers_dir
    st = audit.lstat(top)
    if st is None:
        return  # no guest tree yet: `vserver NAME build` creates it mode 000
    if not stat.S_ISDIR(st.st_mode):
        audit.col.add("HOST-BARRIER", f"{top} is not a directory",
                      shlex.join(["rm", str(top)]) + " && "
                      + shlex.join(["mkdir", "-m", "000", str(top)]))  # fmt: skip
        return
    if stat.S_IMODE(st.st_mode) != 0 or st.st_uid != audit.owner_uid:
        audit.col.add(
            "HOST-BARRIER",
            f"{top} is mode {mode_text(st)} owned by uid {st.st_uid}, not mode 000 root",
            _chown_fix(top, "000"),
        )


def guest_root(audit: Audit, name: str) -> None:
    root = audit.paths.guest_root(name)
    st = _reachable_stat(audit, root, name)
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        audit.col.add("HOST-GUEST-ROOT-PERMS", f"guest root {root} is a symlink",
                      _unlink_fix(root),
                      guest=name)  # fmt: skip
    elif stat.S_ISDIR(st.st_mode) and writable_by_others(st, audit.owner_uid):
        audit.col.add(
            "HOST-GUEST-ROOT-PERMS",
            f"guest root {root} is mode {mode_text(st)} owned by uid {st.st_uid}",
            _chown_fix(root, "755"),
            guest=name,
        )


def _reachable_stat(audit: Audit, root: Path, name: str) -> os.stat_result | None:
    """lstat of the guest root; HOST-GUEST-REACHABLE when others can walk to it."""
    chain = [*reversed(root.parents), root]
    open_to_others = True
    for directory in chain:
        try:
            st = os.lstat(directory) if directory == root else os.stat(directory)
        except FileNotFoundError:
            return None
        except OSError as exc:
            audit.col.cannot_read(directory, exc, name)
            return None
        if directory != root and not traversable_by_others(st, audit.owner_uid):
            open_to_others = False
    if open_to_others and stat.S_ISDIR(st.st_mode) and traversable_by_others(st, audit.owner_uid):
        top = audit.paths.vservers_dir
        audit.col.add(
            "HOST-GUEST-REACHABLE",
            f"guest root {root} is reachable by non-root users (every directory above it "
            "is traversable and the barrier is missing)",
            _chown_fix(top, "000"),
            guest=name,
            details=[f"{d}: mode {mode_text(os.stat(d))}" for d in chain[1:-1]],
        )
    return st


# -- vstui's own files -------------------------------------------------------------------


def own_directories(audit: Audit) -> None:
    p = audit.paths
    for directory in (p.config_dir, p.legacy_config_dir):
        _not_writable(audit, directory, "HOST-CONFIG-WRITABLE", None)
        for conf in _entries(audit, directory):
            if conf.name.endswith(".conf"):
                _not_writable(audit, conf, "HOST-CONFIG-WRITABLE", None)
    for directory in (p.run_base, p.state_dir, p.images_dir, p.log_dir):
        _not_writable(audit, directory, "HOST-RUNDIR-WRITABLE", None)
    for run_dir in _entries(audit, p.run_base):
        _run_dir(audit, run_dir, None)


def guest_files(audit: Audit, name: str) -> None:
    """With --guest: the guest's own NAME.conf and run directory."""
    if audit.host_wide:
        return  # own_directories covered them
    _not_writable(audit, audit.paths.config_file(name), "HOST-CONFIG-WRITABLE", name)
    _run_dir(audit, audit.paths.run_dir(name), name)


def _run_dir(audit: Audit, run_dir: Path, guest: str | None) -> None:
    owner = guest or run_dir.name
    _not_writable(audit, run_dir, "HOST-RUNDIR-WRITABLE", owner)
    for item in _entries(audit, run_dir, owner):
        _not_writable(audit, item, "HOST-RUNDIR-WRITABLE", owner)


def _entries(audit: Audit, directory: Path, guest: str | None = None) -> list[Path]:
    try:
        return sorted(directory / e for e in os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        audit.col.cannot_read(directory, exc, guest)
        return []


def _not_writable(audit: Audit, path: Path, rule: str, guest: str | None) -> None:
    try:
        st = os.stat(path)  # follows a symlink: its target is what gets written
    except FileNotFoundError:
        return
    except OSError as exc:
        audit.col.cannot_read(path, exc, guest)
        return
    if writable_by_others(st, audit.owner_uid):
        audit.col.add(
            rule,
            f"{path} is mode {mode_text(st)} owned by uid {st.st_uid} gid {st.st_gid}",
            f"chown root:root {path} && chmod go-w {path}",
            guest=guest,
        )


# -- network -----------------------------------------------------------------------------


def sharing_guests(audit: Audit) -> dict[str, str]:
    """Guests that share a host device -> how (netmode, or "address on DEV")."""
    found: dict[str, str] = {}
    host_ips: frozenset[str] | None = None
    for cfg in audit.configs.values():
        if cfg.netmode in SHARING_MODES:
            found[cfg.name] = cfg.netmode
            continue
        if not cfg.addresses:
            continue
        if host_ips is None:
            host_ips = audit.facts.host_ips
        on_host = [str(a.interface.ip) for a in cfg.addresses if str(a.interface.ip) in host_ips]
        if on_host:
            found[cfg.name] = f"address {on_host[0]} is on the host"
    return found


def wildcard_listeners(audit: Audit) -> None:
    sharing = sharing_guests(audit)
    veth = veth_guests(audit)
    if not sharing and not veth:
        return
    severe = any(how in ("host",) or how.startswith("address") for how in sharing.values())
    owners = guest_pids(audit)
    unresolved = 0
    for sock in audit.facts.listeners:
        if not sock.wildcard or (sock.pid is not None and sock.pid in owners):
            continue
        details = [f"guests sharing host devices: {_named(sharing)}"] if sharing else []
        details += _veth_reach(audit, veth, sock)
        if not details:
            continue
        who = f"{sock.process} (pid {sock.pid})" if sock.pid else "a process"
        unresolved += sock.pid is None
        shown = f"[{sock.address}]" if ":" in sock.address else sock.address
        audit.col.add(
            "HOST-WILDCARD-LISTENER",
            f"{who} listens on {shown}:{sock.port}/{sock.proto}",
            _listener_fix(audit, sock, sharing, veth),
            details=details,
            severity=None if severe else "medium",
        )
    if unresolved:
        audit.col.cannot_read(
            "owners of listening sockets", f"{unresolved} socket(s) without a known process "
            "(/proc/PID/fd of other users; run the audit as root)")  # fmt: skip
    if "listening sockets" in audit.facts.errors:
        audit.col.cannot_read("listening sockets", audit.facts.errors["listening sockets"])


def _named(guests: dict[str, str]) -> str:
    return ", ".join(f"{n} ({how})" for n, how in sorted(guests.items()))


def veth_guests(audit: Audit) -> dict[str, Any]:
    """veth guests with addresses (they reach the host's own addresses), by name."""
    return {cfg.name: cfg for cfg in audit.configs.values()
            if cfg.netmode == "veth" and cfg.addresses}  # fmt: skip


def _veth_reach(audit: Audit, veth: dict[str, Any], sock: Any) -> list[str]:
    """Which veth guests reach a wildcard listener, and through which host addresses.

    0.0.0.0 serves guests with an IPv4 address; :: every guest (dual-stack
    unless the socket is IPv6-only, which /proc/net does not tell).
    """
    families = (4,) if sock.address == "0.0.0.0" else (4, 6)
    lines = []
    for name, cfg in sorted(veth.items()):
        if not any(a.interface.version in families for a in cfg.addresses):
            continue
        devices = [cfg.bridge] if cfg.bridge else None
        through = _host_addresses(audit, families, devices)
        if not through:
            continue
        how = f"bridged on {cfg.bridge}" if cfg.bridge else "routed veth"
        lines.append(f"{name} ({how}) reaches it through {through}")
    return lines


def _host_addresses(audit: Audit, families: tuple[int, ...], devices: list[str] | None) -> str:
    """Up to three host addresses (not loopback or link-local) as "ADDR on DEV"."""
    found = [f"{a.ip} on {dev}" for dev, addrs in sorted(audit.facts.host_addresses.items())
             if devices is None or dev in devices
             for a in addrs
             if a.version in families and not (a.ip.is_loopback or a.ip.is_link_local)]  # fmt: skip
    if len(found) > 3:
        return ", ".join(found[:3]) + f" and {len(found) - 3} more"
    return ", ".join(found)


def bridges_taking_router_adverts(audit: Audit) -> None:
    """A bridge with guests whose IPv6 takes router advertisements."""
    bridged: dict[str, list[Any]] = {}
    for cfg in audit.configs.values():
        if cfg.netmode == "veth" and cfg.bridge:
            bridged.setdefault(cfg.bridge, []).append(cfg)
    for bridge, cfgs in sorted(bridged.items()):
        accept = audit.facts.sources.net_sysctl(f"ipv6/conf/{bridge}/accept_ra")
        forwarding = audit.facts.sources.net_sysctl(f"ipv6/conf/{bridge}/forwarding")
        if accept is None or not (accept == "2" or (accept == "1" and forwarding == "0")):
            continue
        unfiltered = [c.name for c in cfgs if not c.net_filter]
        audit.col.add(
            "HOST-BRIDGE-ACCEPT-RA",
            f"bridge {bridge} takes router advertisements (accept_ra={accept}) and carries "
            f"guests {', '.join(sorted(c.name for c in cfgs))}",
            _accept_ra_fix(bridge),
            details=[f"unfiltered (V_NET_FILTER=no): {', '.join(sorted(unfiltered))}"]
            if unfiltered
            else [],
            severity="high" if unfiltered else "low",
        )


def _unlink_fix(root: Path) -> str:
    """The symlinked guest root replaced by the tree it points to."""
    q = shlex.quote(str(root))
    return f't=$(readlink -f {q}) && rm {q} && mv "$t" {q}'


def _accept_ra_fix(bridge: str) -> str:
    key = f"net.ipv6.conf.{bridge}.accept_ra"
    return (f"sysctl -w {key}=0 && echo {key}=0 > "
            f"/etc/sysctl.d/90-vstui-{bridge}.conf")  # fmt: skip


def _listener_fix(audit: Audit, sock: Any, sharing: dict[str, str], veth: dict[str, Any]) -> str:
    """Commands that take the listener out of the guests' reach: guests on a
    host device get their own link (veth); veth guests' packets to that port
    are dropped on the host (an nftables table of this root's own)."""
    commands = [fixes.set_keys(audit.paths, name, {"V_NETMODE": "veth"})
                for name in sorted(sharing) if audit.configs[name].netmode != "veth"]  # fmt: skip
    families = (4,) if sock.address == "0.0.0.0" else (4, 6)
    sources = {4: set(), 6: set()}
    for cfg in veth.values():
        for a in cfg.addresses:
            if a.interface.version in families:
                sources[a.interface.version].add(str(a.interface.ip))
    proto = "udp" if sock.proto.startswith("udp") else "tcp"
    table = f"inet {audit.paths.nft_table('_guard')}"  # "_": never a guest's table
    rules = [
        f"{'ip' if version == 4 else 'ip6'} saddr {{ {', '.join(sorted(ips))} }} "
        f"{proto} dport {sock.port} drop"
        for version, ips in sorted(sources.items())
        if ips
    ]
    if rules:
        chain = f"add chain {table} input {{ type filter hook input priority 0; }}"
        commands += [f"nft add table {table}", shlex.join(["nft", chain])]
        commands += [shlex.join(["nft", f"add rule {table} input {r}"]) for r in rules]
    return " && ".join(commands)


# -- sshd --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SshValue:
    value: str
    where: str  # FILE:LINE, or "default"


SSHD_DEFAULTS = {
    "passwordauthentication": "yes",
    "kbdinteractiveauthentication": "yes",
    "usepam": "no",
    "permitrootlogin": "prohibit-password",
}
_SPLIT = re.compile(r"[\s=]+")


def sshd_settings(root: Path, main: Path, audit: Audit | None = None) -> dict[str, SshValue]:
    """The global (outside Match) value of each keyword, the first one read winning,
    following Include like sshd does."""
    values: dict[str, SshValue] = {}
    _read_sshd(root, main, values, audit, depth=0)
    return values


def _read_sshd(
    root: Path, path: Path, values: dict[str, SshValue], audit: Audit | None, depth: int
) -> None:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return
    except OSError as exc:
        if audit is not None:
            audit.col.cannot_read(path, exc)
        return
    in_match = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = _SPLIT.split(line, maxsplit=1)
        key = parts[0].lower()
        rest = parts[1] if len(parts) > 1 else ""
        if key == "match":
            in_match = rest.strip().lower() != "all"
            continue
        if in_match:
            continue  # conditional: applies to some connections only
        if key == "include":
            for word in rest.split():
                _include(root, word, values, audit, depth)
            continue
        word = rest.split()[0].strip('"').lower() if rest.split() else ""
        if key == "challengeresponseauthentication":
            key = "kbdinteractiveauthentication"  # the old name of the same setting
        if key not in values:
            values[key] = SshValue(word, f"{path}:{number}")


def _include(
    root: Path, word: str, values: dict[str, SshValue], audit: Audit | None, depth: int
) -> None:
    if depth >= 8:
        return
    pattern = word if word.startswith("/") else f"/etc/ssh/{word}"
    for found in sorted(glob.glob(str(root / pattern.lstrip("/")))):
        _read_sshd(root, Path(found), values, audit, depth + 1)


def _effective(values: dict[str, SshValue], key: str) -> SshValue:
    return values.get(key) or SshValue(SSHD_DEFAULTS[key], "default")


def sshd(audit: Audit) -> None:
    root = audit.paths.root
    main = root / "etc/ssh/sshd_config"
    if not os.path.lexists(main):
        return
    values = sshd_settings(root, main, audit)
    pw = _effective(values, "passwordauthentication")
    kbd = _effective(values, "kbdinteractiveauthentication")
    pam = _effective(values, "usepam")
    by_pw = pw.value == "yes"
    by_kbd = kbd.value == "yes" and pam.value == "yes"
    if not (by_pw or by_kbd):
        return
    details = [f"PasswordAuthentication {pw.value} ({pw.where})"]
    commands = []
    if by_pw:
        commands.append(_ssh_fix("PasswordAuthentication no", pw, main))
    if by_kbd:
        details.append(f"KbdInteractiveAuthentication {kbd.value} ({kbd.where}) with UsePAM yes "
                       f"({pam.where})")  # fmt: skip
        commands.append(_ssh_fix("KbdInteractiveAuthentication no", kbd, main))
    audit.col.add("HOST-SSHD-PASSWORD", "sshd accepts password logins",
                  " && ".join([*commands, SSHD_RELOAD]), details=details)  # fmt: skip
    root_login = _effective(values, "permitrootlogin")
    if root_login.value == "yes":
        audit.col.add(
            "HOST-SSHD-ROOT-PASSWORD",
            "sshd lets root log in with a password",
            _ssh_fix("PermitRootLogin prohibit-password", root_login, main) + " && " + SSHD_RELOAD,
            details=[f"PermitRootLogin yes ({root_login.where})", *details],
        )


SSHD_RELOAD = 'kill -HUP "$(cat /run/sshd.pid)"'  # sshd reads its config again on SIGHUP


def _ssh_fix(line: str, current: SshValue, main: Path) -> str:
    """A sed command: the setting's own line replaced, or the line added first
    (sshd takes the first value it reads)."""
    if current.where == "default":
        return shlex.join(["sed", "-i", f"1i {line}", str(main)])
    where, _, number = current.where.rpartition(":")
    return shlex.join(["sed", "-i", f"{number}c {line}", where])


# -- kernel features ---------------------------------------------------------------------


CONTROLLER_NEEDS = (
    ("memory", "V_MEMORY", lambda c: c.memory is not None),
    ("pids", "V_PIDS", lambda c: c.pids_limit() is not None),
    ("cpu", "V_CPU_QUOTA/V_CPU_WEIGHT", lambda c: c.cpu_quota is not None
     or c.cpu_weight is not None),
)  # fmt: skip


def cgroup_controllers(audit: Audit) -> None:
    wanted = [
        (cfg, controller, key)
        for cfg in audit.scoped()
        for controller, key, needs in CONTROLLER_NEEDS
        if needs(cfg)
    ]
    if not wanted:
        return
    have = audit.facts.controllers
    if have is None:
        audit.col.cannot_read("cgroup controllers", audit.facts.errors["cgroup controllers"])
        return
    for cfg, controller, key in wanted:
        if controller not in have:
            audit.col.add(
                "HOST-CGROUP-CONTROLLER",
                f"{key} is set but the host has no {controller} cgroup controller",
                _controller_fix(controller),
                guest=cfg.name,
            )


def _controller_fix(controller: str) -> str:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # a cgroup2-only host
        return f"echo +{controller} > /sys/fs/cgroup/cgroup.subtree_control"
    where = f"/sys/fs/cgroup/{controller}"
    return f"mkdir -p {where} && mount -t cgroup -o {controller} cgroup {where}"


def user_namespaces(audit: Audit) -> None:
    wanting = sorted(n for n, cfg in audit.configs.items() if cfg.userns)
    if not wanting or audit.facts.sources.max_user_namespaces() != 0:
        return
    audit.col.add(
        "HOST-USERNS",
        "user namespaces are switched off, and guests need them",
        "sysctl -w user.max_user_namespaces=15000 && "
        "echo user.max_user_namespaces=15000 > /etc/sysctl.d/60-vstui-userns.conf",
        details=[f"guests with V_USERNS=yes: {', '.join(wanting)}"],
    )
