"""QA round of #19: operations killed at any step leave the old state or the
new one, never a guest without its tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import _libc
from engine.rootfs import snapshots


class Killed(BaseException):
    """What SIGKILL would do right after a step: nothing more runs."""


def _kill_after_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def renamed(*args: object, **kwargs: object) -> None:
        real_rename(*args, **kwargs)
        raise Killed

    def exchanged(a: object, b: object) -> None:
        real_exchange(a, b)
        raise Killed

    real_rename, real_exchange = os.rename, _libc.exchange
    monkeypatch.setattr(os, "rename", renamed)
    monkeypatch.setattr(_libc, "exchange", exchanged)


def test_restore_swaps_the_tree_in_one_step(tmp_path: Path, monkeypatch) -> None:
    """The tree was renamed away, then the new one renamed in: killed between
    the two, the guest had no tree at all."""
    current = tmp_path / "web"
    current.mkdir()
    (current / "old").write_text("old")

    def make(fresh: Path) -> None:
        fresh.mkdir()
        (fresh / "new").write_text("new")

    _kill_after_first_step(monkeypatch)
    with pytest.raises(Killed):
        snapshots._swap_tree(current, make)
    assert (current / "new").exists()  # the restored tree, whole
    monkeypatch.undo()
    snapshots._swap_tree(current, make)  # the next restore clears the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web"]


def test_restore_without_rename_exchange_falls_back(tmp_path: Path, monkeypatch) -> None:
    import errno

    def unsupported(a: object, b: object) -> None:
        raise OSError(errno.EINVAL, "not here")

    monkeypatch.setattr(_libc, "exchange", unsupported)
    current = tmp_path / "web"
    current.mkdir()
    snapshots._swap_tree(current, lambda fresh: fresh.mkdir() or (fresh / "n").touch())
    assert [p.name for p in current.iterdir()] == ["n"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web"]
