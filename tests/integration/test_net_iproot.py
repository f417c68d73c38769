"""IPROOT addresses a guest must not own are refused by `check` and `start`.

qa.md finding 4: 0.0.0.0, loopback, multicast, broadcast and link-local
addresses passed `check` (224.0.0.1 and 255.255.255.255 then got host routes
through the guest's veth), and the host's own address was taken, so the
guest sent as the host towards other guests. Each is refused with one line
naming the guest, IPROOT and the fix, before anything is made.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator

import pytest

from engine.config import update_config
from engine.paths import Paths
from tests.integration.test_runtime import build, vserver

pytestmark = pytest.mark.root


@pytest.fixture
def host_address(vroot: Paths) -> Iterator[tuple[str, str]]:
    """(address, device): a 198.19.x.y/24 address of this root on a veth the test
    makes (up, so the host's local table holds its broadcast address too)."""
    link, peer = vroot.link_name("own", kind="xo"), vroot.link_name("own", kind="yo")
    h = int(hashlib.sha1(str(vroot.root).encode()).hexdigest()[:4], 16)
    address = f"198.19.{h >> 8}.{(h & 0x7F) + 1}"
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", peer], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/24", "dev", link], check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        yield address, link
    finally:
        subprocess.run(["ip", "link", "del", link], capture_output=True)


def refused(paths: Paths, name: str, *needles: str) -> None:
    """`check` and `start` both fail with one line holding ``needles``; nothing made."""
    check = vserver(paths, name, "check")
    assert check.returncode == 1, check.stdout + check.stderr
    line = next(x for x in check.stderr.splitlines() if "IPROOT" in x)
    assert all(n in line for n in (name, *needles)), check.stderr
    start = vserver(paths, name, "start")
    assert start.returncode != 0 and "Traceback" not in start.stderr, start.stderr
    assert any(all(n in x for n in (name, "IPROOT", *needles))
               for x in start.stderr.splitlines()), start.stderr  # fmt: skip
    assert not paths.run_dir(name).exists()
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert paths.link_name(name) not in links


@pytest.mark.parametrize(("word", "why"), [
    ("224.0.0.1", "a multicast address"),
    ("255.255.255.255", "a broadcast address"),
    ("127.0.0.1", "a loopback address"),
    ("0.0.0.0/24", "the unspecified"),
    ("::1", "a loopback address"),
    ("fe80::1", "a link-local address"),
    ("ff02::1", "a multicast address"),
])  # fmt: skip
def test_unusable_addresses_are_refused_before_anything_is_made(vroot, word, why):
    name = build(vroot)
    with vroot.config_file(name).open("a") as conf:  # update_config refuses it already
        conf.write(f'IPROOT="198.18.47.5/24 {word}"\n')
    refused(vroot, name, word, why, "give the guest a unicast address")


def test_an_address_of_the_host_is_refused(vroot, host_address):
    address, device = host_address
    name = build(vroot, {"IPROOT": f"{address}/24"})
    refused(vroot, name, address, f"is an address of this host (on {device})")
    broadcast = address.rsplit(".", 1)[0] + ".255"  # a /32 of the guest: no broadcast of its own
    update_config(vroot, name, {"IPROOT": f"{broadcast}/32"})
    refused(vroot, name, broadcast, f"is a broadcast address of this host (on {device})")
    update_config(vroot, name, {"IPROOT": "2001:2:47::5/64"})
    assert vserver(vroot, name, "check").returncode == 0
