"""engine.paths.Paths is a plain class now (no dataclasses import on every
tool's start); it must still behave as the frozen dataclass it replaced."""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path

import pytest

from engine.paths import Paths


def test_paths_compare_hash_and_print_by_root(tmp_path: Path) -> None:
    a, b = Paths.from_root(tmp_path), Paths(root=tmp_path)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Paths() and Paths() == Paths.from_root("/")
    assert repr(a) == f"Paths(root={tmp_path!r})"
    assert a != (tmp_path,)  # not a tuple


def test_paths_are_immutable(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    with pytest.raises(AttributeError):
        paths.root = Path("/")  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del paths.root
    assert paths.root == tmp_path


def test_paths_copy_pickle_and_match(tmp_path: Path) -> None:
    paths = Paths.from_root(tmp_path)
    root_id = paths.root_id  # cached on the instance
    for twin in (copy.copy(paths), copy.deepcopy(paths), pickle.loads(pickle.dumps(paths))):
        assert twin == paths and twin.root_id == root_id
    match paths:
        case Paths(root=root):
            assert root == tmp_path
        case _:
            pytest.fail("Paths(root=...) pattern did not match")


def test_default_root_needs_no_hashlib() -> None:
    import subprocess

    code = "import sys; from engine.paths import Paths; Paths().cgroup_name('a'); " \
           "print('hashlib' in sys.modules)"  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)  # fmt: skip
    assert run.stdout.strip() == "False", run.stderr
