"""Shared fixtures: a temporary host root per test, and the leak check.

``vroot`` gives each test its own root prefix (``Paths``) under /tmp. After
the test, whatever it left behind under that root is torn down and the test
fails if anything was left: processes, mounts, cgroups, links (and their
qdiscs) and loop devices. Everything is matched by the root's own names, so
tests (and developers) running side by side never see each other's objects.
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: integration tests run real guests")
    for item in items:
        if item.get_closest_marker("root"):
            item.add_marker(skip)


@pytest.fixture
def vroot(request: pytest.FixtureRequest) -> Iterator[Paths]:
    """A fresh, empty host root for one test; checked for leaks afterwards."""
    yield from _temp_root(request)


@pytest.fixture
def vroot2(request: pytest.FixtureRequest) -> Iterator[Paths]:
    """A second root beside ``vroot`` (another "host" for the many-hosts tests)."""
    yield from _temp_root(request)


def _temp_root(request: pytest.FixtureRequest) -> Iterator[Paths]:
    base = Path(tempfile.mkdtemp(prefix="vstui-test-", dir="/tmp"))
    paths = Paths.from_root(base)
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
