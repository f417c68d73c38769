"""engine.rootfs.chroot.in_chroot: a child that fails is always the caller's error.

Found by ``vserver NAME migrate``: an import whose child failed (a lazy import
after the chroot), and whose error pipe had been closed by number, went on
as a copy of its caller and exited 0: an empty tree reported as imported,
and the migrated guest's source then deleted.
"""

from __future__ import annotations

import os

import pytest

from engine.errors import VstuiError
from engine.rootfs.chroot import in_chroot

pytestmark = pytest.mark.root


class Unsayable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot even say why")


def test_a_child_whose_failure_cannot_be_said_still_fails_the_caller(tmp_path) -> None:
    def work(root):
        raise Unsayable()

    with pytest.raises(VstuiError, match="Unsayable"):
        in_chroot(tmp_path, work, "work")


def test_closing_a_reused_descriptor_number_keeps_the_error_pipe(tmp_path) -> None:
    gone = os.open(os.devnull, os.O_RDONLY)
    os.close(gone)  # its number is free: the next pipe may well get it

    def work(root):
        raise ValueError("the real reason")

    with pytest.raises(VstuiError, match="the real reason"):
        in_chroot(tmp_path, work, "work", close_fds=[gone, gone + 1])


def test_an_import_after_the_chroot_is_an_error_not_a_silent_success(tmp_path) -> None:
    def work(root):
        import engine.rootfs._nothing_here  # noqa: F401

    with pytest.raises(VstuiError, match="No module named"):
        in_chroot(tmp_path, work, "work")
