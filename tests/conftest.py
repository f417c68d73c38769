"""Shared fixtures: a temporary host root per test, the leak check, the guest mode.

``vroot`` gives each test its own root prefix (``Paths``) under /tmp. After
the test, whatever it left behind under that root is torn down and the test
fails if anything was left: processes, mounts, cgroups, links (and their
qdiscs) and loop devices. Everything is matched by the root's own names, so
tests (and developers) running side by side never see each other's objects.

``guest_mode``: every integration test runs twice, with its root's new guests
in their own user namespace (``userns``, the default) and privileged
(``privileged``: V_USERNS=no in the root's /etc/vserver/defaults.conf), one
parametrized run (tests/integration/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.paths import Paths
from tests import leaks

ROOT_TESTS = Path(__file__).parent / "integration"
GUEST_MODES = ("userns", "privileged")


@pytest.fixture(scope="module")
def guest_mode() -> str:
    """How the guests built under the tests' roots run (parametrized for integration tests)."""
    return "userns"


def set_guest_mode(paths: Paths, mode: str) -> None:
    """New guests of ``paths`` run privileged in the ``privileged`` mode (defaults.conf)."""
    if mode == "privileged":
        paths.defaults_file.parent.mkdir(parents=True, exist_ok=True)
        paths.defaults_file.write_text("V_USERNS=no\n")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: integration tests run real guests")
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(skip)


@pytest.fixture
def vroot(request: pytest.FixtureRequest, guest_mode: str) -> Iterator[Paths]:
    """A fresh, empty host root for one test; checked for leaks afterwards."""
    yield from _temp_root(request, guest_mode)


@pytest.fixture
def vroot2(request: pytest.FixtureRequest, guest_mode: str) -> Iterator[Paths]:
    """A second root beside ``vroot`` (another "host" for the many-hosts tests)."""
    yield from _temp_root(request, guest_mode)


def _temp_root(request: pytest.FixtureRequest, mode: str) -> Iterator[Paths]:
    base = Path(tempfile.mkdtemp(prefix="vstui-test-", dir="/tmp"))
    paths = Paths.from_root(base)
    set_guest_mode(paths, mode)
    try:
        yield paths
    finally:
        found = leaks.find(paths)
        leaks.clean(paths)
        left = leaks.find(paths)
        shutil.rmtree(base, ignore_errors=True)
        if found and not _failed(request):
            pytest.fail("test left behind: " + "; ".join(found))
        if left:
            pytest.fail("could not clean up: " + "; ".join(left))


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return bool(report and report.failed)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
