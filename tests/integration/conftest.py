"""Fixtures of the integration tests in this directory.

``fleet``: an sshd on 127.0.0.1 (tests.sshd) with hosts ``a`` (vroot), ``b``
(vroot2) and ``ro`` (vroot, read_only) in its hosts.toml; ``guests``: the
same with a running guest on each of a and b. Requested fixtures are torn
down in reverse, so the sshd and its connections are gone before the roots
are checked for leaks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.paths import Paths
from tests.integration.remote_helpers import GUEST_A, GUEST_B, build_and_start, stop_and_delete
from tests.sshd import TestSshd


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
