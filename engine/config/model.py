"""The guest configuration model: every key, its syntax, default and meaning.

``KEYS`` is the one table of keys; docs/config.md is generated from it
(``keys_markdown``) and a test keeps the two equal. ``build_config`` turns a
parsed Document into a frozen ``GuestConfig``, collecting every error with
its file, line and key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine import caps as _caps
from engine._record import Record
from engine.config import values as v
from engine.config.parser import Document
from engine.errors import ConfigError
from engine.paths import check_name

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of every start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    _Parser = Callable[[str], Any]


def validate_name(name: str, guest_word: str = "guest") -> str:
    """A guest name is a hostname label: letters, digits, dash, 1..32 chars."""
    return check_name(name, guest_word)


class Key(Record):
    """One configuration key, as documented."""

    __slots__ = _fields = ("name", "example", "unit", "default", "meaning")
    name: str
    example: str
    unit: str
    default: str
    meaning: str


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("S_HOSTNAME", "web1.example.org", "host name", "guest name",
            "host name inside the guest (empty = the guest name)"),
        Key("S_DOMAINNAME", "example.org", "word", "host's",
            "NIS domain name inside the guest; `none` clears it"),
        Key("S_CONTEXT", "40001", "id 2..49151", "allocated",
            "fixed context id (xid); 0 (host) and 1 (spectator) are reserved"),
        Key("IPROOT", "eth0:10.0.0.5/24 10.0.0.6", "`[dev:]addr[/mask]` words", "none",
            "guest addresses, IPv4 or IPv6; prefix or dotted mask; empty or "
            "`0.0.0.0` = no address; IPv4 without mask gets IPROOTMASK or /24, IPv6 /64; "
            "unicast addresses of the guest's own only (no wildcard, loopback, multicast, "
            "broadcast, link-local, v4-mapped or host address)"),
        Key("IPROOTDEV", "eth0", "interface", "none",
            "device for addresses written without `dev:`"),
        Key("IPROOTMASK", "255.255.255.0", "mask or prefix", "/24",
            "IPv4 netmask for addresses written without one"),
        Key("IPROOTBCAST", "10.0.0.255", "IPv4 address", "none",
            "IPv4 broadcast address of the guest's addresses"),
        Key("ONBOOT", "yes", "yes/no", "no",
            "start with `vserver --onboot start` (yes/no/true/false/1/0)"),
        Key("PRIORITY", "100", "integer -100000..100000", "100",
            "boot order: lower starts first, stops last"),
        Key("S_NICE", "5", "-20..19", "none",
            "nice value of the whole guest; the guest cannot go below it"),
        Key("S_FLAGS", "lock nproc fakeinit", "words", "none",
            "guest flags: " + " ".join(f"`{f}`" for f in v.FLAGS)
            + " (see Flags below); `minit` is ignored with a warning"),
        Key("ULIMIT", "-HS -u 1000 -n 4096", "ulimit options", "none",
            "resource limits (bash ulimit syntax: -H/-S/-HS then -u -n -c -d -f -l -m "
            "-s -t -v with a number or `unlimited`; sizes in KiB)"),
        Key("S_CAPS", "CAP_NET_RAW !CAP_SYS_CHROOT", "capability words", "none",
            "capabilities added to the default guest set; `!X` or `~X` drops one"),
        Key("V_MEMORY", "256M", "bytes, K/M/G/T/P; 4K..1P", "unlimited",
            "memory limit of the whole guest"),
        Key("V_CPU_WEIGHT", "100", "1..10000", "100 (kernel)",
            "relative CPU share against other guests"),
        Key("V_CPU_QUOTA", "50%", "% of one CPU; 1%..100000%", "unlimited",
            "hard CPU cap (`150%` = 1.5 CPUs)"),
        Key("V_PIDS", "500", "count 1..4194304", "ULIMIT -u with nproc",
            "process limit of the whole guest"),
        Key("V_DISK", "2G", "bytes, K/M/G/T/P; 1M..1P", "unlimited",
            "disk quota of the guest tree"),
        Key("V_INODES", "100000", "count 1..4294967295", "unlimited",
            "file count quota of the guest tree"),
        Key("V_DISK_BACKEND", "btrfs", "image/btrfs/project/none",
            "btrfs when a pool exists, else image with V_DISK, else none",
            "quota backend: `image` (loop ext4), `btrfs` (subvolume + qgroup, on /vservers or "
            "the pool), `project` (file system project quota), `none`"),
        Key("V_NETMODE", "veth", "veth/ipvlan/macvlan/host", "veth",
            "how the guest is networked; `host` shares the host's network"),
        Key("V_BRIDGE", "br0", "interface", "none (routed)",
            "bridge the guest's veth joins"),
        Key("V_ROUTE", "eth0:nat", "`DEV[:nat]` words, `any`", "none",
            "host devices a routed veth guest may leave through (`:nat` masquerades "
            "behind the device's address); without it the guest reaches other guests "
            "and the host's own addresses only"),
        Key("V_NEIGH_LIMIT", "64", "count 1..65535", "64",
            "new next hops (LAN neighbours) a V_ROUTE guest may use per minute; "
            "more are rejected"),
        Key("V_NET_FILTER", "yes", "yes/no", "yes",
            "anti-spoofing on the host side: own MAC and addresses only, no RA, "
            "DHCP-server or foreign ARP/ND answers from a bridged guest; `no` turns it off"),
        Key("V_BANDWIDTH_OUT", "10mbit", "tc rate 8bit..34gbit", "unlimited",
            "egress limit (bit kbit mbit gbit, bps kbps mbps = bytes/s; plain = bits/s)"),
        Key("V_BANDWIDTH_IN", "10mbit", "tc rate 8bit..34gbit", "unlimited",
            "ingress limit"),
        Key("V_SHARE", "/srv/www:/var/www:ro", "`host:guest[:ro|rw]` words", "none",
            "host directories bound into the guest (read-only unless `rw`)"),
        Key("V_MOUNT", "nfs1:/export:/mnt/data:nfs:ro", "`src:target:fstype[:opts]` words",
            "none", "file systems the host mounts into the guest tree (NFS, CIFS, tmpfs...)"),
        Key("V_TEMPLATE", "skeleton", "word", "empty (full tree)",
            "template the guest was built from"),
        Key("V_INIT", "/etc/rc.local", "command", "none",
            "start command when `fakeinit` is not set"),
        Key("V_STOP_TIMEOUT", "10", "seconds 0.1..86400", "10",
            "time between the stop signal and killing the guest"),
        Key("V_PROC_HIDE", "/proc/kcore /proc/sys/", "/proc paths", "none",
            "extra /proc entries hidden from the guest"),
        Key("V_PROC_SHOW", "/proc/sysrq-trigger", "/proc paths", "none",
            "/proc entries the default mask would hide, shown anyway"),
        Key("V_USERNS", "no", "yes/no", "yes",
            "own user namespace: guest ids 0-65535 are the guest's block of host ids; `no` = "
            "privileged (guest root is host root; an audit finding)"),
        Key("V_SECCOMP", "-keyctl +perf_event_open", "`+name`/`-name` words", "none",
            "system calls allowed (`+`) or denied (`-` or bare, EPERM) on top of the default "
            "allowlist (listed in docs/escapes.md)"),
    )
}  # fmt: skip


class GuestConfig(Record):
    """A guest's configuration after parsing, validation and defaults."""

    __slots__ = _fields = (
        "name",
        "path",
        "hostname",
        "domainname",
        "context",
        "addresses",
        "iprootdev",
        "iprootmask",
        "iprootbcast",
        "onboot",
        "priority",
        "nice",
        "flags",
        "ulimits",
        "caps",
        "memory",
        "cpu_weight",
        "cpu_quota",
        "pids",
        "disk",
        "inodes",
        "disk_backend",
        "netmode",
        "bridge",
        "routes",
        "neigh_limit",
        "net_filter",
        "bandwidth_out",
        "bandwidth_in",
        "shares",
        "mounts",
        "template",
        "init",
        "stop_timeout",
        "proc_hide",
        "proc_show",
        "seccomp",
        "userns",
        "unknown",
        "warnings",
        "raw",
    )
    _defaults = {
        "path": None,
        "hostname": "",
        "domainname": None,
        "context": None,
        "addresses": (),
        "iprootdev": None,
        "iprootmask": None,
        "iprootbcast": None,
        "onboot": False,
        "priority": 100,
        "nice": None,
        "flags": frozenset(),
        "ulimits": (),
        "caps": (),
        "memory": None,
        "cpu_weight": None,
        "cpu_quota": None,
        "pids": None,
        "disk": None,
        "inodes": None,
        "disk_backend": "none",
        "netmode": "veth",
        "bridge": None,
        "routes": (),
        "neigh_limit": 64,
        "net_filter": True,
        "bandwidth_out": None,
        "bandwidth_in": None,
        "shares": (),
        "mounts": (),
        "template": "",
        "init": None,
        "stop_timeout": 10.0,
        "proc_hide": (),
        "proc_show": (),
        "seccomp": (),
        "userns": True,
        "unknown": (),
        "warnings": (),
        "raw": (),
    }
    name: str
    path: Path | None
    hostname: str
    domainname: str | None
    context: int | None
    addresses: tuple[v.IPAddr, ...]
    iprootdev: str | None
    iprootmask: int | None
    iprootbcast: str | None
    onboot: bool
    priority: int
    nice: int | None
    flags: frozenset[str]
    ulimits: tuple[v.ULimit, ...]
    caps: tuple[str, ...]
    memory: int | None
    cpu_weight: int | None
    cpu_quota: float | None
    pids: int | None
    disk: int | None
    inodes: int | None
    disk_backend: str
    netmode: str
    bridge: str | None
    routes: tuple[v.Route, ...]
    neigh_limit: int
    net_filter: bool
    bandwidth_out: int | None
    bandwidth_in: int | None
    shares: tuple[v.Share, ...]
    mounts: tuple[v.ExtraMount, ...]
    template: str
    init: str | None
    stop_timeout: float
    proc_hide: tuple[str, ...]
    proc_show: tuple[str, ...]
    seccomp: tuple[str, ...]
    userns: bool
    unknown: tuple[tuple[str, str, int], ...]
    warnings: tuple[str, ...]
    raw: tuple[tuple[str, str], ...]  # (key, value) as written

    def effective_caps(self) -> frozenset[str]:
        """The default guest set with S_CAPS applied."""
        return _caps.effective_set(self.caps, self.name)

    def pids_limit(self) -> int | None:
        """V_PIDS, else the hard ``ULIMIT -u`` when the ``nproc`` flag is set."""
        if self.pids is not None:
            return self.pids
        if "nproc" in self.flags:
            for lim in self.ulimits:
                if lim.resource == "nproc":
                    return lim.hard
        return None

    def has_flag(self, flag: str) -> bool:
        return flag.lower() in self.flags

    def ulimit(self, resource: str) -> v.ULimit | None:
        return next((lim for lim in self.ulimits if lim.resource == resource), None)

    def value(self, key: str) -> str | None:
        """The value as written in the file, or None when the key is not set."""
        return dict(self.raw).get(key)


# key -> (GuestConfig field, parser). IPROOT and S_FLAGS are built separately:
# IPROOT depends on IPROOTDEV/MASK/BCAST and S_FLAGS gives warnings.
_SIMPLE: dict[str, tuple[str, _Parser]] = {
    "S_HOSTNAME": ("hostname", v.parse_hostname),
    "S_DOMAINNAME": ("domainname", v.parse_domainname),
    "S_CONTEXT": ("context", lambda s: v.parse_int(s, 2, 49151)),
    "IPROOTDEV": ("iprootdev", v.parse_ifname),
    "IPROOTMASK": ("iprootmask", lambda s: v.parse_prefix(s, 4)),
    "IPROOTBCAST": ("iprootbcast", v.parse_ipv4),
    "ONBOOT": ("onboot", v.parse_bool),
    "PRIORITY": ("priority", lambda s: v.parse_int(s, -100000, 100000)),
    "S_NICE": ("nice", lambda s: v.parse_int(s, -20, 19)),
    "ULIMIT": ("ulimits", v.parse_ulimit),
    "S_CAPS": ("caps", v.parse_caps),
    "V_MEMORY": ("memory", lambda s: v.parse_size(s, 4 << 10)),
    "V_CPU_WEIGHT": ("cpu_weight", lambda s: v.parse_int(s, 1, 10000)),
    "V_CPU_QUOTA": ("cpu_quota", v.parse_percent),
    "V_PIDS": ("pids", lambda s: v.parse_int(s, 1, 4194304)),
    "V_DISK": ("disk", lambda s: v.parse_size(s, 1 << 20)),
    "V_INODES": ("inodes", lambda s: v.parse_int(s, 1, (1 << 32) - 1)),
    "V_DISK_BACKEND": (
        "disk_backend",
        lambda s: v.parse_choice(s, ("image", "btrfs", "project", "none")),
    ),
    "V_NETMODE": ("netmode", lambda s: v.parse_choice(s, ("veth", "ipvlan", "macvlan", "host"))),
    "V_BRIDGE": ("bridge", v.parse_ifname),
    "V_ROUTE": ("routes", v.parse_routes),
    "V_NEIGH_LIMIT": ("neigh_limit", lambda s: v.parse_int(s, 1, 65535)),
    "V_NET_FILTER": ("net_filter", v.parse_bool),
    "V_USERNS": ("userns", v.parse_bool),
    "V_BANDWIDTH_OUT": ("bandwidth_out", v.parse_rate),
    "V_BANDWIDTH_IN": ("bandwidth_in", v.parse_rate),
    "V_SHARE": ("shares", v.parse_shares),
    "V_MOUNT": ("mounts", v.parse_mounts),
    "V_TEMPLATE": ("template", lambda s: v.parse_word(s, "a template name")),
    "V_INIT": ("init", v.parse_command),
    "V_STOP_TIMEOUT": ("stop_timeout", v.parse_seconds),
    "V_PROC_HIDE": ("proc_hide", v.parse_proc_paths),
    "V_PROC_SHOW": ("proc_show", v.parse_proc_paths),
    "V_SECCOMP": ("seccomp", v.parse_seccomp),
}
# keys whose empty value means "not set" (the default applies)
_EMPTY_IS_UNSET = frozenset(_SIMPLE) - {"S_DOMAINNAME", "ONBOOT"}


class _Builder:
    """Field values, errors and warnings gathered while validating one file."""

    __slots__ = _fields = ("doc", "errors", "fields", "guest", "name", "warnings")

    def __init__(self, name: str, doc: Document, guest: str | None) -> None:
        self.name = name
        self.doc = doc
        self.guest = guest
        self.fields: dict[str, Any] = {}
        self.errors: list[ConfigError] = []
        self.warnings: list[str] = []

    def fail(self, key: str, line: int, message: str) -> None:
        self.errors.append(ConfigError(message, self.doc.path, line, key, self.guest))

    def warn(self, key: str, line: int, message: str) -> None:
        where = f"{self.doc.path}:{line}: " if self.doc.path else f"line {line}: "
        self.warnings.append(f"{where}{key}: {message}")


def build_config(
    name: str, doc: Document, guest: str | None = None
) -> tuple[GuestConfig, list[ConfigError]]:
    """Validate every assignment of ``doc``; returns the config and all errors.

    The config is built from the valid keys only (defaults for the rest), so
    an editor can still show it; callers that need a valid guest raise the
    first error (``load_guest`` does).
    """
    b = _Builder(name, doc, guest if guest is not None else name)
    assigned = doc.assignments()
    unknown: list[tuple[str, str, int]] = []
    for key, entry in assigned.items():
        if key in _SIMPLE:
            _simple(b, key, entry.value, entry.line)
        elif key == "S_FLAGS":
            _flags(b, entry.value, entry.line)
        elif key != "IPROOT":
            unknown.append((key, entry.value, entry.line))
            b.warn(key, entry.line, "unknown key, kept as is (see docs/config.md for the keys)")
    if "IPROOT" in assigned:
        _iproot(b, name, assigned["IPROOT"].value, assigned["IPROOT"].line)
    _defaults(b, name, assigned)
    _duplicates(b, doc)
    cfg = GuestConfig(
        name=name,
        path=doc.path,
        unknown=tuple(unknown),
        warnings=capped([*doc.warnings, *b.warnings]),
        raw=tuple((k, e.value) for k, e in assigned.items()),
        **b.fields,
    )
    return cfg, sorted([*doc.errors, *b.errors], key=lambda e: e.line or 0)


MAX_WARNINGS = 20


def capped(warnings: list[str]) -> tuple[str, ...]:
    """The first MAX_WARNINGS warnings and one line counting the rest: a file of
    50,000 unknown keys is one screen, not 50,000 lines on every command."""
    if len(warnings) <= MAX_WARNINGS:
        return tuple(warnings)
    more = len(warnings) - MAX_WARNINGS
    return (*warnings[:MAX_WARNINGS], f"... and {more} more warnings like these")


def _simple(b: _Builder, key: str, value: str, line: int) -> None:
    field_name, parse = _SIMPLE[key]
    if key in _EMPTY_IS_UNSET and not value.strip():
        return
    try:
        b.fields[field_name] = parse(value)
    except v.Invalid as exc:
        b.fail(key, line, str(exc))


def _flags(b: _Builder, value: str, line: int) -> None:
    try:
        flags, warnings = v.parse_flags(value)
    except v.Invalid as exc:
        b.fail("S_FLAGS", line, str(exc))
        return
    b.fields["flags"] = flags
    for w in warnings:
        b.warn("S_FLAGS", line, w)


def _iproot(b: _Builder, name: str, value: str, line: int) -> None:
    try:
        b.fields["addresses"] = v.parse_iproot(
            value,
            name,
            b.fields.get("iprootdev"),
            b.fields.get("iprootmask"),
            b.fields.get("iprootbcast"),
        )
    except v.Invalid as exc:
        b.fail("IPROOT", line, str(exc))


def _defaults(b: _Builder, name: str, assigned: dict[str, Any]) -> None:
    b.fields.setdefault("hostname", name)
    if "disk_backend" not in b.fields and b.fields.get("disk") is not None:
        b.fields["disk_backend"] = "image"
    if b.fields.get("disk_backend") == "none" and (
        b.fields.get("disk") is not None or b.fields.get("inodes") is not None
    ):
        line = assigned["V_DISK_BACKEND"].line
        b.warn("V_DISK_BACKEND", line, "is none, so V_DISK / V_INODES are not enforced")
    if b.fields.get("disk_backend") == "btrfs" and b.fields.get("inodes") is not None:
        b.fail("V_INODES", assigned["V_INODES"].line, "btrfs has no inode quota; remove "
               "V_INODES, or use V_DISK_BACKEND=image for an inode limit")  # fmt: skip
    if b.fields.get("bridge") and b.fields.get("netmode", "veth") != "veth":
        b.warn("V_BRIDGE", assigned["V_BRIDGE"].line, "is only used with V_NETMODE=veth")
    routed = b.fields.get("netmode", "veth") == "veth" and not b.fields.get("bridge")
    if b.fields.get("routes") and not routed:
        b.warn("V_ROUTE", assigned["V_ROUTE"].line,
               "is only used by a routed guest (V_NETMODE=veth without V_BRIDGE)")  # fmt: skip


def _duplicates(b: _Builder, doc: Document) -> None:
    seen: dict[str, int] = {}
    for entry in doc.entries:
        if entry.key is None:
            continue
        if entry.key in seen:
            b.warn(entry.key, entry.line, f"set again (line {seen[entry.key]}); this value wins")
        seen[entry.key] = entry.line


def keys_markdown() -> str:
    """The table of every key for docs/config.md and the README."""
    rows = ["| key | example | unit | default | meaning |", "|---|---|---|---|---|"]
    for k in KEYS.values():
        cells = (f"`{k.name}`", f"`{k.example}`", k.unit, k.default, k.meaning)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
