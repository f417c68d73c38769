"""Fixtures of the integration tests in this directory.

Every test here runs in both guest modes, user-namespaced and privileged
(``guest_mode``, tests/conftest.py), as one parametrized run.

``fleet``: an sshd on 127.0.0.1 (tests.sshd) with hosts ``a`` (vroot), ``b``
(vroot2) and ``ro`` (vroot, read_only) in its hosts.toml; ``guests``: the
same with a running guest on each of a and b. Requested fixtures are torn
down in reverse, so the sshd and its connections are gone before the roots
are checked for leaks.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator

import pytest

from engine.paths import Paths
from tests.conftest import GUEST_MODES
from tests.integration.remote_helpers import GUEST_A, GUEST_B, build_and_start, stop_and_delete
from tests.sshd import TestSshd


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # module scope: a module's shared guests are made once per mode; a test
    # about one mode (@pytest.mark.guest_mode("userns")) runs only in that one
    if "guest_mode" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("guest_mode")
        modes = only.args if only else GUEST_MODES
        metafunc.parametrize("guest_mode", modes, scope="module")


@pytest.fixture
def fleet(vroot: Paths, vroot2: Paths) -> Iterator[TestSshd]:
    """sshd on 127.0.0.1 with hosts a (vroot), b (vroot2) and ro (vroot, read_only)."""
    sshd = TestSshd()
    try:
        sshd.start()
        sshd.write_hosts({
            "a": {"root": str(vroot.root)},
            "b": {"root": str(vroot2.root)},
            "ro": {"root": str(vroot.root), "read_only": True},
        })  # fmt: skip
        yield sshd
    finally:
        sshd.close()


@pytest.fixture
def guests(fleet: TestSshd, vroot: Paths, vroot2: Paths) -> Iterator[TestSshd]:
    """A running guest on each host: ra on a, rb on b."""
    made: list[tuple[Paths, str]] = []
    try:
        for paths, name in ((vroot, GUEST_A), (vroot2, GUEST_B)):
            made.append((paths, name))
            build_and_start(paths, name)
        yield fleet
    finally:
        fleet.exit_masters()
        for paths, name in made:
            stop_and_delete(paths, name)


@pytest.fixture
def host_source(vroot: Paths) -> Iterator[str]:
    """A host IPv4 address for host-to-guest connections, on a test-made veth.

    A routed guest's host end has no address (the guest reaches the host through
    169.254.0.1, a neighbour entry): the host's replies and connections take a
    source from its other links. A host whose only IPv4 address is 127.0.0.1
    (this machine's eth0 may have none) has no source, and connections time
    out. The pair is named from the root, so the leak check knows it.
    """
    host, peer = f"h{vroot.root_id[:4]}-src", f"p{vroot.root_id[:4]}-src"
    address = f"198.18.149.{random.randint(2, 250)}"
    subprocess.run(["ip", "link", "add", host, "type", "veth", "peer", "name", peer], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", host], check=True)
        for link in (host, peer):
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        yield address
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True)
