"""Value syntaxes of NAME.conf: sizes, rates, addresses, ULIMIT, S_CAPS, words.

Each ``parse_*`` function takes the decoded string of one key and returns a
Python value or raises :class:`Invalid` with a message saying what would be
accepted. The model turns ``Invalid`` into a ``ConfigError`` naming the file,
line and key. Standard library only: ``vserver NAME exec`` imports this.
"""

from __future__ import annotations

import ipaddress
import re

from engine import caps as _caps
from engine._record import Record
from engine.errors import UnknownCapability
from engine.text import excerpt

IFNAMSIZ = 15


class Invalid(ValueError):
    """A value that does not fit its key's syntax; the message says what fits."""


# -- numbers ------------------------------------------------------------
# Numbers are read digit by digit into Python ints, never through float: a
# float turns 400 digits into inf (OverflowError) and 1.001kbit into 1000 bit/s.
# A word longer than this is out of range whatever it says (and int() of more
# than 4300 digits raises).
_MAX_DIGITS = 40


def shown(text: str) -> str:
    """A value quoted for an error message: short, control characters visible."""
    return f"'{excerpt(text.strip())}'"


def _out_of_range(text: str, low: str, high: str) -> Invalid:
    return Invalid(f"{shown(text)} is out of range; use {low}..{high}")


def parse_int(text: str, low: int | None = None, high: int | None = None) -> int:
    """A decimal integer, optionally within ``low..high``."""
    word = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", word):
        raise Invalid(f"{shown(text)} is not a whole number{_range(low, high)}")
    if len(word) > _MAX_DIGITS:
        raise Invalid(f"{shown(text)} is out of range{_range(low, high)}")
    value = int(word)
    if (low is not None and value < low) or (high is not None and value > high):
        raise Invalid(f"{value} is out of range{_range(low, high)}")
    return value


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"; use {low}..{high}"
    if low is not None:
        return f"; use {low} or more"
    return ""


def _decimal(whole: str, fraction: str | None, scale: int) -> int | None:
    """``whole.fraction`` times ``scale``, rounded down; None when too long."""
    fraction = fraction or ""
    if len(whole) + len(fraction) > _MAX_DIGITS:
        return None
    return int(whole + fraction) * scale // 10 ** len(fraction)


def parse_bool(text: str) -> bool:
    """``yes``/``no``/``true``/``false``/``1``/``0`` (any case); empty is no."""
    word = text.strip().lower()
    if word in ("yes", "true", "1"):
        return True
    if word in ("no", "false", "0", ""):
        return False
    raise Invalid(f"{shown(text)} is not a yes/no value; use yes, no, true, false, 1 or 0")


STOP_TIMEOUT_MAX = 86400  # a day: longer is a typo, and time.sleep() of inf raises


def parse_seconds(text: str) -> float:
    """Seconds, 0.1..86400, e.g. ``10`` or ``2.5`` (an ``s`` suffix is accepted)."""
    match = re.fullmatch(r"([0-9]+)(?:\.([0-9]+))?", text.strip().lower().removesuffix("s"))
    if not match:
        raise Invalid(f"{shown(text)} is not a number of seconds; use e.g. 10 or 2.5")
    tenths = _decimal(match.group(1), match.group(2), 10)
    if tenths is None or not 1 <= tenths <= STOP_TIMEOUT_MAX * 10:
        raise _out_of_range(text, "0.1", str(STOP_TIMEOUT_MAX))
    return float(match.group(0))


# -- sizes and rates ------------------------------------------------------
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_RE = re.compile(r"([0-9]+)(?:\.([0-9]+))?\s*([kmgtp]?)(?:i?b)?", re.IGNORECASE)
SIZE_MAX = 1 << 50  # 1P: no guest has more memory or disk; the kernel's counters stay far off


def size_text(n: int) -> str:
    """Bytes in the largest unit that divides them exactly: 268435456 -> 256M."""
    for unit in "PTGMK":
        size = _SIZE_UNITS[unit.lower()]
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def parse_size(text: str, low: int = 1, high: int = SIZE_MAX) -> int:
    """``256M`` -> 268435456. K/M/G/T/P are powers of 1024; a plain number is bytes.

    A fraction is allowed (``1.5G``) and rounded down to whole bytes.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if not match or (match.group(3) == "" and text.strip().lower().endswith("b")):
        raise Invalid(f"{shown(text)} is not a size; use bytes or a K/M/G/T/P suffix, e.g. 256M")
    value = _decimal(match.group(1), match.group(2), _SIZE_UNITS[match.group(3).lower()])
    if value is None or not low <= value <= high:
        raise _out_of_range(text, size_text(low), size_text(high))
    return value


# tc(8) rate units: SI prefixes are powers of 1000, IEC (ki, mi..) of 1024;
# "bit" counts bits, "bps" counts bytes.
_RATE_PREFIX = {
    "": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40,
}  # fmt: skip
_RATE_RE = re.compile(r"([0-9]+)(?:\.([0-9]+))?\s*(|k|m|g|t|ki|mi|gi|ti)(bit|bps|)", re.I)
# tbf's rate field is 32 bits of bytes/s (engine.net.shaping); a byte/s is its unit
RATE_MIN = 8
RATE_MAX = 34 * 10**9


def parse_rate(text: str) -> int:
    """tc rate syntax -> bits/s: ``10mbit``, ``1gbit``, ``500kbps``; plain = bits/s."""
    match = _RATE_RE.fullmatch(text.strip())
    if not match or (match.group(3) and not match.group(4)):
        raise Invalid(
            f"{shown(text)} is not a rate; use tc syntax, e.g. 10mbit, 1gbit, 500kbps "
            "(bit = bits/s, bps = bytes/s, plain number = bits/s)"
        )
    whole, fraction, prefix, unit = match.groups()
    scale = _RATE_PREFIX[prefix.lower()] * (8 if unit.lower() == "bps" else 1)
    bits = _decimal(whole, fraction, scale)
    if bits is None or not RATE_MIN <= bits <= RATE_MAX:
        raise _out_of_range(text, f"{RATE_MIN}bit", f"{RATE_MAX // 10**9}gbit")
    return bits


CPU_QUOTA_MIN, CPU_QUOTA_MAX = 1, 100_000  # percent: cgroups take 1 ms per 100 ms at least


def parse_percent(text: str) -> float:
    """``50%`` -> 50.0 (percent of one CPU; ``150%`` = 1.5 CPUs), 1%..100000%."""
    match = re.fullmatch(r"([0-9]+)(?:\.([0-9]+))?\s*%", text.strip())
    if not match:
        raise Invalid(f"{shown(text)} is not a CPU percentage; use e.g. 50% or 150% (1.5 CPUs)")
    hundredths = _decimal(match.group(1), match.group(2), 100)
    if hundredths is None or not CPU_QUOTA_MIN * 100 <= hundredths <= CPU_QUOTA_MAX * 100:
        raise _out_of_range(text, f"{CPU_QUOTA_MIN}%", f"{CPU_QUOTA_MAX}%")
    return hundredths / 100


# -- names ------------------------------------------------------------------
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


def parse_hostname(text: str) -> str:
    """A host name: dot-separated labels of letters, digits, dash; <= 64 bytes."""
    word = text.strip()
    if (
        len(word) > 64
        or not _HOSTNAME_RE.fullmatch(word)
        or any(len(label) > 63 for label in word.split("."))
    ):
        raise Invalid(
            f"{shown(text)} is not a host name; use letters, digits, dashes and dots, "
            "at most 64 characters"
        )
    return word


def parse_domainname(text: str) -> str:
    """NIS domain name; ``none`` (or empty) clears it."""
    word = text.strip()
    if word.lower() in ("none", ""):
        return ""
    if len(word) > 64 or re.search(r"[\s/]", word) or not word.isprintable():
        raise Invalid(
            f"{shown(text)} is not a domain name; use one word of at most 64 characters, or none"
        )
    return word


def parse_ifname(text: str) -> str:
    """A network interface name (1..15 bytes, no slash, colon or blank)."""
    word = text.strip()
    if (
        not 0 < len(word.encode()) <= IFNAMSIZ
        or re.search(r"[\s/:]", word)
        or word
        in (
            ".",
            "..",
        )
    ):
        raise Invalid(
            f"{shown(text)} is not an interface name; "
            "use 1..15 characters without '/', ':' or spaces"
        )
    return word


# -- addresses ----------------------------------------------------------------
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class IPAddr(Record):
    """One guest address: device (None = IPROOTDEV or routed), address/prefix,
    alias label (``dev:NAME``, ``dev:NAME1``.. as util-vserver made them) and
    IPv4 broadcast."""

    __slots__ = _fields = ("dev", "interface", "label", "bcast")
    _defaults = {"label": None, "bcast": None}
    dev: str | None
    interface: IPInterface
    label: str | None
    bcast: str | None

    @property
    def address(self) -> str:
        return str(self.interface.ip)

    @property
    def prefixlen(self) -> int:
        return self.interface.network.prefixlen

    def __str__(self) -> str:
        return f"{self.dev}:{self.interface}" if self.dev else str(self.interface)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise Invalid(f"{shown(text)} is not an IPv4 or IPv6 address") from None


def parse_ipv4(text: str) -> str:
    address = parse_ip(text.strip())
    if address.version != 4:
        raise Invalid(f"{shown(text)} is not an IPv4 address")
    return str(address)


def parse_prefix(text: str, version: int) -> int:
    """``24`` or ``255.255.255.0`` -> 24; IPv6 takes a prefix length only."""
    word = text.strip()
    top = 32 if version == 4 else 128
    if re.fullmatch(r"[0-9]{1,3}", word) and int(word) <= top:
        return int(word)
    if version == 4 and "." in word:
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{word}").prefixlen
        except ValueError:
            pass
    kind = (
        "a prefix length 0..32 or a netmask like 255.255.255.0"
        if version == 4
        else ("a prefix length 0..128")
    )
    raise Invalid(f"{shown(text)} is not a netmask; use {kind}")


def split_address_word(word: str) -> tuple[str | None, str, str | None]:
    """``[dev:]addr[/mask]`` -> (dev, addr, mask). IPv6 addresses contain colons,
    so the device part is only split off when the whole word is no address."""
    addr, _, mask = word.partition("/")
    if _is_ip(addr) or ":" not in addr:
        return None, addr, mask if "/" in word else None
    dev, _, addr = addr.partition(":")
    return dev, addr, mask if "/" in word else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_iproot(
    text: str,
    name: str,
    default_dev: str | None = None,
    default_prefix: int | None = None,
    bcast: str | None = None,
) -> tuple[IPAddr, ...]:
    """IPROOT: words ``[dev:]addr[/mask-or-prefix]``; empty or ``0.0.0.0`` = none.

    Without a mask an IPv4 address gets IPROOTMASK, else /24; IPv6 gets /64.
    Labels follow util-vserver: ``dev:NAME``, ``dev:NAME1``, ``dev:NAME2``...
    """
    found: list[IPAddr] = []
    seen: set[str] = set()
    for word in text.split():
        if word == "0.0.0.0":
            continue
        if word.upper() == "ALL":
            raise Invalid("'ALL' (every host address) is not supported; list the addresses")
        found.append(_address(word, name, len(found), default_dev, default_prefix, bcast))
        if found[-1].address in seen:
            raise Invalid(f"'{found[-1].address}' is listed twice")
        seen.add(found[-1].address)
    return tuple(found)


def _address(
    word: str,
    name: str,
    index: int,
    default_dev: str | None,
    default_prefix: int | None,
    bcast: str | None,
) -> IPAddr:
    dev, addr, mask = split_address_word(word)
    if dev is not None:
        dev = parse_ifname(dev)
    ip = parse_ip(addr)
    if mask is not None:
        prefix = parse_prefix(mask, ip.version)
    elif ip.version == 4:
        prefix = default_prefix if default_prefix is not None else 24
    else:
        prefix = 64
    interface = ipaddress.ip_interface(f"{ip}/{prefix}")
    unusable = unusable_address(interface, bcast if ip.version == 4 else None)
    if unusable:
        raise Invalid(f"{shown(word)} is {unusable}; give the guest a unicast address of "
                      "its own (for tests: 198.18.0.0/15, 2001:2::/48)")  # fmt: skip
    device = dev or default_dev
    # Linux has alias labels for IPv4 only
    label = f"{device}:{name}{index or ''}"[:IFNAMSIZ] if device and ip.version == 4 else None
    return IPAddr(dev, interface, label, bcast if ip.version == 4 else None)


def unusable_address(interface: IPInterface, bcast: str | None = None) -> str | None:
    """Why a guest cannot own this address, or None.

    The kernel takes most of these on a link and then routes traffic for
    the whole host through the guest: a host route to 255.255.255.255 or
    224.0.0.1 via the guest's veth, a loopback or wildcard address that
    every host service answers on. Link-local ones are made by vstui itself
    (the IPv6 one from the MAC, 169.254.0.1 / fe80::1 on the host end).
    """
    ip = interface.ip
    if ip.is_unspecified:
        return "the unspecified (wildcard) address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address (vstui makes those itself)"
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip in _V4_COMPATIBLE):
        return "an IPv4 address written as IPv6 (write it as IPv4)"
    broadcast = _broadcast(interface, bcast) if ip.version == 4 else None
    if broadcast:
        return broadcast
    return "a reserved address" if ip.is_reserved else None


_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (RFC 4291 2.5.5.1)


def _broadcast(interface: ipaddress.IPv4Interface, bcast: str | None) -> str | None:
    ip, network = interface.ip, interface.network
    if str(ip) == bcast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "a broadcast address"
    if network.prefixlen <= 30 and ip == network.broadcast_address:
        return f"the broadcast address of {network}"
    if network.prefixlen <= 30 and ip == network.network_address:
        return f"the network address of {network} (not a host address)"
    return None


# -- ULIMIT --------------------------------------------------------------------
class ULimit(Record):
    """One resource limit in setrlimit units (bytes, seconds or a count).

    None = unlimited. A ULIMIT option given with only ``-H`` or only ``-S``
    sets both sides to that value: the soft limit can never exceed the hard
    one, and we never make the other side more permissive than written.
    """

    __slots__ = _fields = ("resource", "soft", "hard")
    resource: str
    soft: int | None
    hard: int | None


# ulimit option -> (resource name, multiplier to setrlimit units); bash counts
# sizes in KiB (-f too, outside POSIX mode).
ULIMIT_OPTIONS: dict[str, tuple[str, int]] = {
    "u": ("nproc", 1), "n": ("nofile", 1), "c": ("core", 1024), "d": ("data", 1024),
    "f": ("fsize", 1024), "l": ("memlock", 1024), "m": ("rss", 1024),
    "s": ("stack", 1024), "t": ("cpu", 1), "v": ("as", 1024),
}  # fmt: skip
ULIMIT_LETTERS = {res: (letter, mult) for letter, (res, mult) in ULIMIT_OPTIONS.items()}


def parse_ulimit(text: str) -> tuple[ULimit, ...]:
    """``-HS -u 1000 -n 4096``: bash ``ulimit`` options, each limit with its value.

    ``-H``, ``-S`` or ``-HS`` apply to the limits after them (so one string can
    hold different hard and soft values: ``-H -n 4096 -S -n 1024``); limits
    before any of them set both sides, as bash does.
    """
    words = text.split()
    mode = "HS"
    wanted: list[tuple[str, str, str]] = []  # (mode, resource letter, value)
    i = 0
    while i < len(words):
        word = words[i]
        if not re.fullmatch(r"-[A-Za-z]+", word):
            raise Invalid(_ulimit_hint(f"{shown(word)} is not a ulimit option"))
        letters = [c for c in word[1:] if c not in "HS"]
        if "H" in word or "S" in word:
            mode = "".join(c for c in "HS" if c in word)
        for letter in letters:
            if letter not in ULIMIT_OPTIONS:
                raise Invalid(_ulimit_hint(f"'-{letter}' is not a supported ulimit option"))
        if len(letters) > 1:
            raise Invalid(_ulimit_hint(f"{shown(word)} names several limits; give each its value"))
        if letters:
            if i + 1 >= len(words):
                raise Invalid(_ulimit_hint(f"{shown(word)} needs a value"))
            wanted.append((mode, letters[0], words[i + 1]))
            i += 1
        i += 1
    return _merge_ulimits(wanted)


def _merge_ulimits(wanted: list[tuple[str, str, str]]) -> tuple[ULimit, ...]:
    limits: dict[str, ULimit] = {}
    for mode, letter, value in wanted:
        resource = ULIMIT_OPTIONS[letter][0]
        amount = _ulimit_value(value, letter)
        old = limits.get(resource)
        new_soft = amount if "S" in mode or old is None else old.soft
        new_hard = amount if "H" in mode or old is None else old.hard
        limits[resource] = ULimit(resource, new_soft, new_hard)
    for resource, lim in limits.items():
        if lim.hard is not None and (lim.soft is None or lim.soft > lim.hard):
            raise Invalid(f"the soft {resource} limit is above the hard one")
    return tuple(limits.values())


# setrlimit(2) takes 64-bit values below RLIM_INFINITY; Python's resource module
# and our C helpers take signed ones. nproc stops at PID_MAX_LIMIT, nofile at
# the kernel's sysctl_nr_open_max (fs/file.c); beyond them setrlimit fails at start.
RLIM_MAX = (1 << 63) - 1
_ULIMIT_MAX = {"nproc": 4194304, "nofile": 2147483584}


def _ulimit_value(word: str, letter: str) -> int | None:
    if word.lower() in ("unlimited", "inf", "infinity"):
        return None
    if not re.fullmatch(r"[0-9]+", word):
        raise Invalid(_ulimit_hint(f"{shown(word)} is not a limit value"))
    resource, mult = ULIMIT_OPTIONS[letter]
    high = _ULIMIT_MAX.get(resource, RLIM_MAX // mult)
    if len(word) > _MAX_DIGITS or int(word) > high:
        raise Invalid(f"-{letter} {shown(word)} is out of range; use 0..{high} or unlimited")
    return int(word) * mult


def _ulimit_hint(what: str) -> str:
    letters = " ".join(f"-{c}" for c in ULIMIT_OPTIONS)
    return f"{what}; use -H/-S/-HS with {letters} and a number or unlimited, e.g. -HS -u 1000"


def format_ulimit(limits: tuple[ULimit, ...]) -> str:
    """The ULIMIT string that parses back to ``limits``."""
    parts: list[str] = []
    current = ""
    for lim in limits:
        letter, mult = ULIMIT_LETTERS[lim.resource]
        sides = (("HS", lim.hard),) if lim.soft == lim.hard else (("H", lim.hard), ("S", lim.soft))
        for mode, amount in sides:
            if mode != current:
                parts.append(f"-{mode}")
                current = mode
            value = "unlimited" if amount is None else str(amount // mult)
            parts.append(f"-{letter} {value}")
    return " ".join(parts)


# -- flags and capabilities ------------------------------------------------------
FLAGS: dict[str, str] = {
    "lock": "legacy: the guest may not switch contexts (kept for compatibility)",
    "nproc": "ULIMIT -u counts the guest's processes together (a pids limit)",
    "private": "nobody can enter the guest or signal it from the host",
    "sched": "legacy 2.4 scheduler flag; use V_CPU_WEIGHT / V_CPU_QUOTA",
    "fakeinit": "run the guest's own /sbin/init as its PID 1",
    "hideinfo": "hide context information in /proc",
    "ulimit": "ULIMIT applies to the whole guest",
    "namespace": "private mount namespace (every vstui guest has one)",
}


def parse_flags(text: str) -> tuple[frozenset[str], list[str]]:
    """S_FLAGS words -> (flags, warnings). ``minit`` is accepted with a warning."""
    flags: set[str] = set()
    warnings: list[str] = []
    for word in text.replace(",", " ").split():
        flag = word.lower()
        if flag == "minit":
            warnings.append(
                "'minit' is not supported and is ignored; "
                "set V_INIT=/sbin/minit-start or the fakeinit flag"
            )
            continue
        if flag not in FLAGS:
            raise Invalid(f"{shown(word)} is not a flag; use {' '.join(FLAGS)}")
        flags.add(flag)
    return frozenset(flags), warnings


def parse_caps(text: str) -> tuple[str, ...]:
    """S_CAPS words -> ``("NET_RAW", "!SYS_CHROOT")``; ``!``/``~`` drop one."""
    words: list[str] = []
    for word in text.replace(",", " ").split():
        drop = word[:1] in ("!", "~")
        try:
            name = _caps.normalize(word[1:] if drop else word)
        except UnknownCapability:
            raise Invalid(
                f"{shown(word)} is not a capability; use names like CAP_NET_RAW or NET_RAW, "
                "!NAME to drop one (see `reducecap --list`)"
            ) from None
        words.append(f"!{name}" if drop else name)
    return tuple(words)


def parse_choice(text: str, choices: tuple[str, ...]) -> str:
    word = text.strip().lower()
    if word not in choices:
        raise Invalid(f"{shown(text)} is not one of {', '.join(choices)}")
    return word


# -- paths ---------------------------------------------------------------------------
class Route(Record):
    """One V_ROUTE word: a host device a routed guest may leave through
    (None: any), masqueraded behind that device's address when ``nat``."""

    __slots__ = _fields = ("dev", "nat")
    _defaults = {"nat": False}
    dev: str | None
    nat: bool


def parse_routes(text: str) -> tuple[Route, ...]:
    """V_ROUTE words: ``DEV``, ``DEV:nat``, or ``any`` alone; ``none``/empty = none."""
    words = text.split()
    if words in ([], ["none"]):
        return ()
    if "any" in words:
        if words != ["any"]:
            raise Invalid("'any' already allows every host device; write it alone")
        return (Route(None),)
    routes = []
    for word in words:
        dev, colon, how = word.partition(":")
        if colon and how != "nat":
            raise Invalid(f"'{word}' is not a route; use DEV or DEV:nat, e.g. eth0:nat")
        routes.append(Route(parse_ifname(dev), bool(colon)))
    return tuple(routes)


class Share(Record):
    """A host directory bound into the guest (read-only unless ``rw``)."""

    __slots__ = _fields = ("host", "guest", "readonly")
    _defaults = {"readonly": True}
    host: str
    guest: str
    readonly: bool


class ExtraMount(Record):
    """A file system the host mounts into the guest tree (NFS, CIFS, tmpfs..)."""

    __slots__ = _fields = ("source", "target", "fstype", "options")
    _defaults = {"options": ""}
    source: str
    target: str
    fstype: str
    options: str


def _abs_path(text: str, what: str, allow_root: bool = True) -> str:
    if not text.startswith("/"):
        raise Invalid(f"{what} {shown(text)} is not an absolute path")
    if ".." in text.split("/"):
        raise Invalid(f"{what} {shown(text)} must not contain '..'")
    if not allow_root and text.rstrip("/") == "":
        raise Invalid(f"{what} {shown(text)} cannot be the guest's root")
    return text


def parse_shares(text: str) -> tuple[Share, ...]:
    """V_SHARE words ``host:guest[:ro|rw]`` (default ro)."""
    shares: list[Share] = []
    for word in text.split():
        parts = word.split(":")
        mode = "ro"
        if len(parts) == 3:
            mode = parts.pop()
        if len(parts) != 2 or mode not in ("ro", "rw"):
            raise Invalid(
                f"{shown(word)} is not a share; use host:guest[:ro|rw], e.g. /srv/www:/var/www:ro"
            )
        host = _abs_path(parts[0], "host path")
        guest = _abs_path(parts[1], "guest path", allow_root=False)
        shares.append(Share(host, guest, mode == "ro"))
    return tuple(shares)


_FSTYPE_RE = re.compile(r"[a-z0-9_][a-z0-9_.+-]*")


def parse_mounts(text: str) -> tuple[ExtraMount, ...]:
    """V_MOUNT words ``source:target:fstype[:options]``; the source may hold a
    colon (``nfs1:/export``), so the target is the first absolute part that is
    followed by a file system type."""
    mounts: list[ExtraMount] = []
    for word in text.split():
        parts = word.split(":")
        for i in range(1, len(parts) - 1):
            if parts[i].startswith("/") and _FSTYPE_RE.fullmatch(parts[i + 1]):
                source = ":".join(parts[:i])
                target = _abs_path(parts[i], "mount target", allow_root=False)
                mounts.append(ExtraMount(source, target, parts[i + 1], ":".join(parts[i + 2 :])))
                break
        else:
            raise Invalid(
                f"{shown(word)} is not a mount; use source:target:fstype[:options], "
                "e.g. nfs1:/export:/mnt/data:nfs:ro"
            )
        if not mounts[-1].source:
            raise Invalid(f"{shown(word)} has an empty source")
    return tuple(mounts)


def parse_proc_paths(text: str) -> tuple[str, ...]:
    """V_PROC_HIDE / V_PROC_SHOW words: absolute paths under /proc."""
    paths: list[str] = []
    for word in text.split():
        if not (word == "/proc" or word.startswith("/proc/")) or ".." in word.split("/"):
            raise Invalid(f"{shown(word)} is not a /proc path; use e.g. /proc/kcore or /proc/sys/")
        paths.append(word)
    return tuple(paths)


def parse_seccomp(text: str) -> tuple[str, ...]:
    """V_SECCOMP words: ``+name`` allows, ``-name`` or ``name`` denies."""
    rules: list[str] = []
    for word in text.split():
        sign, name = (word[0], word[1:]) if word[:1] in "+-" else ("-", word)
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise Invalid(
                f"{shown(word)} is not a seccomp rule; use +name to allow or -name to deny "
                "a system call (names are [a-z0-9_]+)"
            )
        if not _known_syscall(name):
            raise Invalid(
                f"{shown(word)}: no system call is called {shown(name)} (on x86_64 or aarch64); "
                "check the spelling, e.g. +ptrace or -keyctl"
            )
        rules.append(sign + name)
    return tuple(rules)


def _known_syscall(name: str) -> bool:
    # lazy: the syscall tables (~10 ms) load only for a config that sets V_SECCOMP,
    # whose guest's exec imports engine.seccomp anyway to install the filter
    from engine.seccomp import known_name

    return known_name(name)


def parse_command(text: str) -> str:
    """V_INIT: a command line whose program is an absolute path."""
    word = text.strip()
    if not word.startswith("/"):
        raise Invalid(
            f"{shown(text)} does not start with an absolute program path, e.g. /etc/rc.local"
        )
    import shlex  # only for configs that set V_INIT

    try:
        shlex.split(word)  # the start splits it like a shell: catch bad quoting here
    except ValueError as exc:
        raise Invalid(f"{shown(text)}: {exc}; quote it like a shell command") from None
    return word


def parse_word(text: str, what: str = "value") -> str:
    word = text.strip()
    if not word or re.search(r"\s", word):
        raise Invalid(f"{shown(text)} is not a single word ({what})")
    return word
