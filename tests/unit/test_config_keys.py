"""Every NAME.conf key: valid forms, invalid forms and their messages; names."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from engine.config import (
    KEYS,
    GuestConfig,
    IPAddr,
    Route,
    Share,
    ULimit,
    build_config,
    keys_markdown,
    load_guest,
    parse_rate,
    parse_size,
    parse_text,
    validate_name,
)
from engine.config.values import ExtraMount
from engine.errors import ConfigError, GuestNotFound, InvalidName
from engine.paths import Paths

PATH = "/etc/vserver/web.conf"
FIXTURES = Path(__file__).parent / "fixtures" / "config"
DOCS = Path(__file__).parents[2] / "docs" / "config.md"


def cfg_of(text: str, name: str = "web") -> GuestConfig:
    cfg, errors = build_config(name, parse_text(text, PATH, name))
    assert not errors, [str(e) for e in errors]
    return cfg


def error_of(text: str, name: str = "web") -> str:
    _, errors = build_config(name, parse_text(text, PATH, name))
    assert errors, f"expected an error for {text!r}"
    return str(errors[0])


def v4(text: str) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(text)


# -- valid values ------------------------------------------------------------------------
VALID: list[tuple[str, str, Any]] = [
    ("S_HOSTNAME=web1.example.org", "hostname", "web1.example.org"),
    ("S_HOSTNAME=", "hostname", "web"),
    ("S_DOMAINNAME=example.org", "domainname", "example.org"),
    ("S_DOMAINNAME=none", "domainname", ""),
    ("S_DOMAINNAME=", "domainname", ""),
    ("S_CONTEXT=2", "context", 2),
    ("S_CONTEXT=49151", "context", 49151),
    ("IPROOTDEV=eth0.231", "iprootdev", "eth0.231"),
    ("IPROOTMASK=255.255.255.192", "iprootmask", 26),
    ("IPROOTMASK=16", "iprootmask", 16),
    ("IPROOTBCAST=10.0.0.255", "iprootbcast", "10.0.0.255"),
    ("ONBOOT=yes", "onboot", True),
    ("ONBOOT=TRUE", "onboot", True),
    ("ONBOOT=1", "onboot", True),
    ("ONBOOT=no", "onboot", False),
    ("ONBOOT=false", "onboot", False),
    ("ONBOOT=0", "onboot", False),
    ("PRIORITY=20", "priority", 20),
    ("S_NICE=-20", "nice", -20),
    ("S_NICE=19", "nice", 19),
    ('S_FLAGS="lock nproc private sched fakeinit hideinfo ulimit namespace"', "flags",
     frozenset("lock nproc private sched fakeinit hideinfo ulimit namespace".split())),
    ("S_FLAGS=LOCK,nproc", "flags", frozenset({"lock", "nproc"})),
    ('ULIMIT="-HS -u 1000"', "ulimits", (ULimit("nproc", 1000, 1000),)),
    ('ULIMIT="-u 10 -n 4096"', "ulimits", (ULimit("nproc", 10, 10), ULimit("nofile", 4096, 4096))),
    ('ULIMIT="-H -c unlimited"', "ulimits", (ULimit("core", None, None),)),
    ('ULIMIT="-S -c 0 -H -c 1024"', "ulimits", (ULimit("core", 0, 1024 * 1024),)),
    ('ULIMIT="-H -n 4096 -S -n 1024"', "ulimits", (ULimit("nofile", 1024, 4096),)),
    ('ULIMIT="-Hn 100"', "ulimits", (ULimit("nofile", 100, 100),)),
    ('ULIMIT="-d 1 -f 2 -l 3 -m 4 -s 5 -t 6 -v 7"', "ulimits",
     (ULimit("data", 1024, 1024), ULimit("fsize", 2048, 2048), ULimit("memlock", 3072, 3072),
      ULimit("rss", 4096, 4096), ULimit("stack", 5120, 5120), ULimit("cpu", 6, 6),
      ULimit("as", 7168, 7168))),
    ('S_CAPS="CAP_NET_RAW !CAP_SYS_CHROOT"', "caps", ("NET_RAW", "!SYS_CHROOT")),
    ('S_CAPS="net_raw ~sys_chroot cap_mknod"', "caps", ("NET_RAW", "!SYS_CHROOT", "MKNOD")),
    ("V_MEMORY=256M", "memory", 256 << 20),
    ("V_MEMORY=1048576", "memory", 1 << 20),
    ("V_MEMORY=2g", "memory", 2 << 30),
    ("V_MEMORY=1T", "memory", 1 << 40),
    ("V_MEMORY=512K", "memory", 512 << 10),
    ("V_MEMORY=1.5G", "memory", 3 << 29),
    ("V_MEMORY=64MiB", "memory", 64 << 20),
    ("V_CPU_WEIGHT=1", "cpu_weight", 1),
    ("V_CPU_WEIGHT=10000", "cpu_weight", 10000),
    ("V_CPU_QUOTA=50%", "cpu_quota", 50.0),
    ("V_CPU_QUOTA=150%", "cpu_quota", 150.0),
    ("V_CPU_QUOTA=12.5%", "cpu_quota", 12.5),
    ("V_PIDS=500", "pids", 500),
    ("V_DISK=2G", "disk", 2 << 30),
    ("V_INODES=100000", "inodes", 100000),
    ("V_DISK_BACKEND=image", "disk_backend", "image"),
    ("V_DISK_BACKEND=project", "disk_backend", "project"),
    ("V_DISK_BACKEND=none", "disk_backend", "none"),
    ("V_NETMODE=ipvlan", "netmode", "ipvlan"),
    ("V_NETMODE=macvlan", "netmode", "macvlan"),
    ("V_NETMODE=host", "netmode", "host"),
    ("V_BRIDGE=br0", "bridge", "br0"),
    ("V_ROUTE=none", "routes", ()),
    ("V_ROUTE=any", "routes", (Route(None),)),
    ('V_ROUTE="eth0 wlan0:nat"', "routes", (Route("eth0"), Route("wlan0", True))),
    ("V_NEIGH_LIMIT=8", "neigh_limit", 8),
    ("V_NET_FILTER=no", "net_filter", False),
    ("V_USERNS=no", "userns", False),
    ("V_USERNS=", "userns", True),
    ("V_NET_FILTER=", "net_filter", True),
    ("V_BANDWIDTH_OUT=10mbit", "bandwidth_out", 10_000_000),
    ("V_BANDWIDTH_OUT=1gbit", "bandwidth_out", 10**9),
    ("V_BANDWIDTH_OUT=500kbit", "bandwidth_out", 500_000),
    ("V_BANDWIDTH_OUT=800bit", "bandwidth_out", 800),
    ("V_BANDWIDTH_OUT=64000", "bandwidth_out", 64000),
    ("V_BANDWIDTH_IN=1mbps", "bandwidth_in", 8_000_000),
    ("V_BANDWIDTH_IN=100kbps", "bandwidth_in", 800_000),
    ("V_BANDWIDTH_IN=10bps", "bandwidth_in", 80),
    ("V_BANDWIDTH_IN=1Mibit", "bandwidth_in", 1 << 20),
    ("V_BANDWIDTH_IN=2.5Mbit", "bandwidth_in", 2_500_000),
    ('V_SHARE="/srv/www:/var/www /data:/data:rw /a:/b:ro"', "shares",
     (Share("/srv/www", "/var/www", True), Share("/data", "/data", False),
      Share("/a", "/b", True))),
    ('V_MOUNT="nfs1:/export:/mnt/data:nfs:ro,vers=4 //srv/s:/mnt/s:cifs tmpfs:/t:tmpfs"',
     "mounts", (ExtraMount("nfs1:/export", "/mnt/data", "nfs", "ro,vers=4"),
                ExtraMount("//srv/s", "/mnt/s", "cifs", ""),
                ExtraMount("tmpfs", "/t", "tmpfs", ""))),
    ("V_TEMPLATE=skeleton", "template", "skeleton"),
    ("V_TEMPLATE=tarball:/srv/img.tar", "template", "tarball:/srv/img.tar"),
    ('V_INIT="/etc/rc.local start"', "init", "/etc/rc.local start"),
    ("V_STOP_TIMEOUT=3", "stop_timeout", 3.0),
    ("V_STOP_TIMEOUT=2.5s", "stop_timeout", 2.5),
    ('V_PROC_HIDE="/proc/kcore /proc/sys/"', "proc_hide", ("/proc/kcore", "/proc/sys/")),
    ("V_PROC_SHOW=/proc/uptime", "proc_show", ("/proc/uptime",)),
    ('V_SECCOMP="-keyctl +ptrace mount"', "seccomp", ("-keyctl", "+ptrace", "-mount")),
]  # fmt: skip


@pytest.mark.parametrize(("line", "field", "expected"), VALID)
def test_valid_values(line: str, field: str, expected: Any) -> None:
    assert getattr(cfg_of(line + "\n"), field) == expected


# -- invalid values and their messages ------------------------------------------------------
INVALID: list[tuple[str, str]] = [
    ("S_HOSTNAME=bad_name!", "S_HOSTNAME: 'bad_name!' is not a host name"),
    ("S_HOSTNAME=" + "a" * 65, "at most 64 characters"),
    ("S_HOSTNAME=-x", "is not a host name"),
    ("S_DOMAINNAME=a/b", "S_DOMAINNAME: 'a/b' is not a domain name"),
    ("S_CONTEXT=0", "S_CONTEXT: 0 is out of range; use 2..49151"),
    ("S_CONTEXT=1", "S_CONTEXT: 1 is out of range; use 2..49151"),
    ("S_CONTEXT=49152", "out of range; use 2..49151"),
    ("S_CONTEXT=abc", "S_CONTEXT: 'abc' is not a whole number; use 2..49151"),
    ("IPROOT=10.0.0.300", "IPROOT: '10.0.0.300' is not an IPv4 or IPv6 address"),
    ("IPROOT=web.example.org", "'web.example.org' is not an IPv4 or IPv6 address"),
    ("IPROOT=10.0.0.1/33", "IPROOT: '33' is not a netmask"),
    ("IPROOT=10.0.0.1/255.0.255.0", "'255.0.255.0' is not a netmask"),
    ("IPROOT=2001:db8::1/255.255.255.0", "use a prefix length 0..128"),
    ('IPROOT="10.0.0.1 10.0.0.1"', "'10.0.0.1' is listed twice"),
    ("IPROOT=ALL", "'ALL' (every host address) is not supported"),
    ("IPROOT=averyverylongname0:10.0.0.1", "is not an interface name"),
    ("IPROOTDEV=averyverylongname0", "IPROOTDEV: 'averyverylongname0' is not an interface name"),
    ("IPROOTMASK=255.255.0.255", "IPROOTMASK: '255.255.0.255' is not a netmask"),
    ("IPROOTBCAST=2001:db8::ff", "IPROOTBCAST: '2001:db8::ff' is not an IPv4 address"),
    ("ONBOOT=maybe", "ONBOOT: 'maybe' is not a yes/no value; use yes, no, true, false, 1 or 0"),
    ("PRIORITY=high", "PRIORITY: 'high' is not a whole number"),
    ("S_NICE=20", "S_NICE: 20 is out of range; use -20..19"),
    ("S_NICE=-21", "S_NICE: -21 is out of range; use -20..19"),
    ("S_FLAGS=turbo", "S_FLAGS: 'turbo' is not a flag; use lock nproc private"),
    ("ULIMIT=-u", "ULIMIT: '-u' needs a value"),
    ('ULIMIT="-x 10"', "ULIMIT: '-x' is not a supported ulimit option"),
    ('ULIMIT="-u lots"', "ULIMIT: 'lots' is not a limit value"),
    ('ULIMIT="1000"', "ULIMIT: '1000' is not a ulimit option"),
    ('ULIMIT="-un 10"', "names several limits"),
    ('ULIMIT="-H -n 10 -S -n 20"', "the soft nofile limit is above the hard one"),
    ('S_CAPS="CAP_FLY"', "S_CAPS: 'CAP_FLY' is not a capability"),
    ('S_CAPS="!NOPE"', "S_CAPS: '!NOPE' is not a capability"),
    ("V_MEMORY=lots", "V_MEMORY: 'lots' is not a size; use bytes or a K/M/G/T/P suffix"),
    ("V_MEMORY=0", "V_MEMORY: '0' is out of range; use 4K..1P"),
    ("V_MEMORY=5X", "is not a size"),
    ("V_MEMORY=5b", "is not a size"),
    ("V_CPU_WEIGHT=0", "V_CPU_WEIGHT: 0 is out of range; use 1..10000"),
    ("V_CPU_WEIGHT=10001", "out of range; use 1..10000"),
    ("V_CPU_QUOTA=50", "V_CPU_QUOTA: '50' is not a CPU percentage; use e.g. 50% or 150%"),
    ("V_CPU_QUOTA=0%", "V_CPU_QUOTA: '0%' is out of range; use 1%..100000%"),
    ("V_PIDS=0", "V_PIDS: 0 is out of range"),
    ("V_DISK=-1G", "V_DISK: '-1G' is not a size"),
    ("V_INODES=0", "V_INODES: 0 is out of range; use 1..4294967295"),
    ("V_DISK_BACKEND=zfs", "V_DISK_BACKEND: 'zfs' is not one of image, btrfs, project, none"),
    ("V_NETMODE=bridge", "V_NETMODE: 'bridge' is not one of veth, ipvlan, macvlan, host"),
    ("V_BRIDGE=br/0", "V_BRIDGE: 'br/0' is not an interface name"),
    ("V_ROUTE=eth0:masq", "V_ROUTE: 'eth0:masq' is not a route; use DEV or DEV:nat"),
    ('V_ROUTE="any eth0"', "V_ROUTE: 'any' already allows every host device; write it alone"),
    ("V_ROUTE=eth/0", "V_ROUTE: 'eth/0' is not an interface name"),
    ("V_NEIGH_LIMIT=0", "V_NEIGH_LIMIT: 0 is out of range; use 1..65535"),
    ("V_NET_FILTER=maybe", "V_NET_FILTER: 'maybe' is not a yes/no value"),
    ("V_USERNS=root", "V_USERNS: 'root' is not a yes/no value"),
    ("V_BANDWIDTH_OUT=fast", "V_BANDWIDTH_OUT: 'fast' is not a rate; use tc syntax"),
    ("V_BANDWIDTH_OUT=10m", "V_BANDWIDTH_OUT: '10m' is not a rate"),
    ("V_BANDWIDTH_IN=0", "V_BANDWIDTH_IN: '0' is out of range; use 8bit..34gbit"),
    ("V_SHARE=/srv", "V_SHARE: '/srv' is not a share; use host:guest[:ro|rw]"),
    ("V_SHARE=srv:/x", "V_SHARE: host path 'srv' is not an absolute path"),
    ("V_SHARE=/srv:x", "guest path 'x' is not an absolute path"),
    ("V_SHARE=/srv:/var/../etc", "guest path '/var/../etc' must not contain '..'"),
    ("V_SHARE=/srv:/", "guest path '/' cannot be the guest's root"),
    ("V_SHARE=/srv:/x:rx", "is not a share"),
    ("V_MOUNT=nfs1:/export", "V_MOUNT: 'nfs1:/export' is not a mount"),
    ("V_MOUNT=:/mnt:nfs", "has an empty source"),
    ("V_MOUNT=a:/mnt/../x:nfs", "must not contain '..'"),
    ('V_TEMPLATE="two words"', "V_TEMPLATE: 'two words' is not a single word"),
    ("V_INIT=rc.local", "V_INIT: 'rc.local' does not start with an absolute program path"),
    ("V_STOP_TIMEOUT=soon", "V_STOP_TIMEOUT: 'soon' is not a number of seconds"),
    ("V_STOP_TIMEOUT=0", "V_STOP_TIMEOUT: '0' is out of range; use 0.1..86400"),
    ("V_PROC_HIDE=/sys/kernel", "V_PROC_HIDE: '/sys/kernel' is not a /proc path"),
    ("V_PROC_SHOW=/proc/../etc", "V_PROC_SHOW: '/proc/../etc' is not a /proc path"),
    ("V_SECCOMP=Mount", "V_SECCOMP: 'Mount' is not a seccomp rule"),
    ("V_SECCOMP=+", "is not a seccomp rule"),
    ('V_SECCOMP="+ptrace -keyctll"', "V_SECCOMP: '-keyctll': no system call is called 'keyctll'"),
    ("V_SECCOMP=frobnicate", "no system call is called 'frobnicate'"),
]


@pytest.mark.parametrize(("line", "message"), INVALID)
def test_invalid_values_name_file_line_key_and_fix(line: str, message: str) -> None:
    text = "# comment\n" + line + "\n"
    got = error_of(text)
    assert got.startswith(f"{PATH}:2: "), got
    assert message in got
    assert "\n" not in got


def test_error_carries_path_line_key_and_guest() -> None:
    _, errors = build_config("web", parse_text("A=1\n\nS_NICE=99\n", PATH, "web"))
    err = errors[0]
    assert (err.path, err.line, err.key, err.guest) == (PATH, 3, "S_NICE", "web")
    assert str(err) == f"{PATH}:3: S_NICE: 99 is out of range; use -20..19"


def test_every_key_has_a_test_of_each_kind() -> None:
    valid = {line.split("=")[0] for line, _, _ in VALID}
    invalid = {line.split("=")[0] for line, _ in INVALID}
    assert set(KEYS) <= valid | {"IPROOT"}
    assert set(KEYS) <= invalid


# -- IPROOT ---------------------------------------------------------------------------------
def test_iproot_single_address() -> None:
    cfg = cfg_of("IPROOT=192.168.1.10\nIPROOTDEV=eth0\n", "web1")
    assert cfg.addresses == (IPAddr(None, v4("192.168.1.10/24"), "eth0:web1", None),)


def test_iproot_words_with_devices_masks_and_labels() -> None:
    cfg = cfg_of(
        'IPROOT="eth0:10.0.0.5 eth1:172.16.3.1/255.255.255.192 10.0.0.6 2001:db8::1 '
        'eth2:2001:db8:2::2/48"\nIPROOTDEV=eth0\nIPROOTMASK=255.255.0.0\nIPROOTBCAST=10.0.255.255\n',
        "multi",
    )
    a = cfg.addresses
    assert [str(x) for x in a] == [
        "eth0:10.0.0.5/16", "eth1:172.16.3.1/26", "10.0.0.6/16", "2001:db8::1/64",
        "eth2:2001:db8:2::2/48",
    ]  # fmt: skip
    assert [x.label for x in a] == ["eth0:multi", "eth1:multi1", "eth0:multi2", None, None]
    assert [x.bcast for x in a] == ["10.0.255.255"] * 3 + [None, None]
    assert a[1].prefixlen == 26 and a[1].address == "172.16.3.1"


@pytest.mark.parametrize("value", ["", "0.0.0.0", '""', "' '"])
def test_iproot_empty_or_zero_means_no_address(value: str) -> None:
    assert cfg_of(f"IPROOT={value}\n").addresses == ()


# Addresses a guest must not own: the kernel takes most of them on a link and
# then routes them for the whole host through the guest (qa.md finding 4).
UNUSABLE = [
    ("0.0.0.0/24", "the unspecified (wildcard) address"),
    ("eth0:0.0.0.0", "the unspecified (wildcard) address"),
    ("::", "the unspecified (wildcard) address"),
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10/8", "a loopback address"),
    ("::1", "a loopback address"),
    ("224.0.0.1", "a multicast address"),
    ("239.1.2.3/32", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("ff02::2/16", "a multicast address"),
    ("ff05::1:3", "a multicast address"),
    ("255.255.255.255", "a broadcast address"),
    ("198.18.7.255/24", "the broadcast address of 198.18.7.0/24"),
    ("198.18.7.0/24", "the network address of 198.18.7.0/24"),
    ("169.254.0.1/16", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("fe80::", "a link-local address"),
    ("febf::9/64", "a link-local address"),
    ("::ffff:198.18.0.1", "an IPv4 address written as IPv6"),
    ("::198.18.0.1", "an IPv4 address written as IPv6"),
    ("240.0.0.1", "a reserved address"),
]


@pytest.mark.parametrize(("word", "why"), UNUSABLE)
def test_iproot_refuses_addresses_a_guest_cannot_own(word: str, why: str) -> None:
    message = error_of(f'IPROOT="198.18.7.5 {word}"\n', "web")
    assert message.startswith(f"{PATH}:1: IPROOT: '{word}' is {why}"), message
    assert "give the guest a unicast address of its own" in message and "\n" not in message


def test_iproot_broadcast_refusal_follows_the_mask() -> None:
    assert error_of("IPROOT=198.18.7.0/25\nIPROOTBCAST=198.18.7.0\n")
    assert cfg_of("IPROOT=198.18.6.255/23\n").addresses[0].address == "198.18.6.255"
    assert cfg_of("IPROOT=198.18.7.0/31\n").addresses[0].address == "198.18.7.0"
    assert "broadcast" in error_of("IPROOT=198.18.7.9\nIPROOTBCAST=198.18.7.9\n")


def test_long_labels_are_cut_to_an_interface_name() -> None:
    cfg = cfg_of("IPROOT=eth0.1234:10.0.0.1\n", "a-long-guest-name")
    assert cfg.addresses[0].label == "eth0.1234:a-lon"


# -- model behaviour --------------------------------------------------------------------------
def test_defaults() -> None:
    cfg = cfg_of("")
    assert (cfg.hostname, cfg.domainname, cfg.context, cfg.addresses) == ("web", None, None, ())
    assert (cfg.onboot, cfg.priority, cfg.nice, cfg.flags) == (False, 100, None, frozenset())
    assert (cfg.netmode, cfg.disk_backend, cfg.stop_timeout, cfg.template) == (
        "veth", "none", 10.0, ""
    )  # fmt: skip
    assert cfg.pids_limit() is None


def test_disk_backend_defaults_to_image_with_a_quota() -> None:
    assert cfg_of("V_DISK=1G\n").disk_backend == "image"
    cfg = cfg_of("V_DISK=1G\nV_DISK_BACKEND=none\n")
    assert any("V_DISK / V_INODES are not enforced" in w for w in cfg.warnings)


def test_bridge_outside_veth_is_warned() -> None:
    cfg = cfg_of("V_NETMODE=host\nV_BRIDGE=br0\n")
    assert any("V_BRIDGE: is only used with V_NETMODE=veth" in w for w in cfg.warnings)
    cfg = cfg_of("V_BRIDGE=br0\nV_ROUTE=eth0\n")
    assert any("V_ROUTE: is only used by a routed guest" in w for w in cfg.warnings)


def test_minit_flag_is_accepted_with_a_warning() -> None:
    cfg = cfg_of('S_FLAGS="lock minit"\n')
    assert cfg.flags == frozenset({"lock"})
    assert any(f"{PATH}:1: S_FLAGS: 'minit' is not supported" in w for w in cfg.warnings)


def test_unknown_keys_are_kept_and_warned() -> None:
    cfg = cfg_of("PROFILE=prod\nV_FUTURE='x y'\n")
    assert cfg.unknown == (("PROFILE", "prod", 1), ("V_FUTURE", "x y", 2))
    assert f"{PATH}:2: V_FUTURE: unknown key, kept as is" in " ".join(cfg.warnings)
    assert cfg.value("V_FUTURE") == "x y"


def test_effective_caps_and_flags() -> None:
    cfg = cfg_of('S_CAPS="CAP_NET_RAW !CAP_SYS_CHROOT"\nS_FLAGS="lock fakeinit"\n')
    caps = cfg.effective_caps()
    assert "NET_RAW" in caps and "SYS_CHROOT" not in caps and "CHOWN" in caps
    assert cfg.has_flag("fakeinit") and cfg.has_flag("LOCK") and not cfg.has_flag("private")


def test_pids_limit() -> None:
    assert cfg_of('ULIMIT="-HS -u 1000"\n').pids_limit() is None  # no nproc flag
    assert cfg_of('ULIMIT="-HS -u 1000"\nS_FLAGS=nproc\n').pids_limit() == 1000
    assert cfg_of('ULIMIT="-S -u 10 -H -u 50"\nS_FLAGS=nproc\n').pids_limit() == 50
    assert cfg_of('ULIMIT="-u 1000"\nS_FLAGS=nproc\nV_PIDS=200\n').pids_limit() == 200
    assert cfg_of('ULIMIT="-u unlimited"\nS_FLAGS=nproc\n').pids_limit() is None


def test_full_fixture_uses_every_key() -> None:
    text = (FIXTURES / "full.conf").read_text()
    cfg = cfg_of(text, "full")
    written = {k for k, _ in cfg.raw}
    assert written == set(KEYS)
    assert cfg.unknown == () and cfg.warnings == ()
    assert cfg.ulimits == (
        ULimit("nproc", 300, 300), ULimit("nofile", 4096, 4096), ULimit("core", 0, 0)
    )  # fmt: skip
    assert [str(a.interface) for a in cfg.addresses] == [
        "198.18.0.10/24", "198.18.1.10/24", "2001:db8::10/64",
    ]  # fmt: skip


def test_parse_size_and_rate_helpers() -> None:
    assert parse_size("256M") == 268435456
    assert parse_rate("10mbit") == 10_000_000
    with pytest.raises(ConfigError, match="is not a size"):
        parse_size("big")
    with pytest.raises(ConfigError, match="is not a rate"):
        parse_rate("fast")


# -- names --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["web", "db1", "a", "x-y-z", "A9", "a" * 32, "1web"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", "-web", "a" * 33, "web.example", "web_1", "wéb", "a b", ".", ".."]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name(name)
    message = str(info.value)
    assert f"'{name}' is not a valid guest name" in message
    assert "1..32 letters, digits and dashes, not starting with a dash" in message


def test_invalid_name_word() -> None:
    with pytest.raises(InvalidName, match="not a valid template name"):
        validate_name("../x", "template")


def test_load_guest(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    with pytest.raises(GuestNotFound, match="no configuration for guest 'web'"):
        load_guest(paths, "web")
    with pytest.raises(InvalidName):
        load_guest(paths, "../etc/passwd")
    paths.config_dir.mkdir(parents=True)
    paths.config_file("web").write_text("S_NICE=50\nS_CONTEXT=1\nIPROOT=1.2.3\n")
    with pytest.raises(ConfigError) as info:
        load_guest(paths, "web")
    err = info.value
    assert err.line == 1 and err.key == "S_NICE" and err.guest == "web"
    assert str(err).endswith("(and 2 more errors; see `vserver web check`)")
    assert len(err.errors) == 3  # type: ignore[attr-defined]


def test_docs_table_lists_every_key() -> None:
    text = DOCS.read_text()
    assert keys_markdown() in text
    for key in KEYS:
        assert f"| `{key}` |" in text


def test_v_init_with_bad_quoting_is_refused_at_load() -> None:
    from engine.config import values

    assert values.parse_command("/bin/sh -c 'sleep 1'") == "/bin/sh -c 'sleep 1'"
    with pytest.raises(values.Invalid, match="No closing quotation"):
        values.parse_command("/bin/sh -c 'sleep 1")
