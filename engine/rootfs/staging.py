"""A guest being made or deleted, crash-consistent as every reader sees it.

Building, cloning, importing or deleting a guest changes several places at
once (NAME.conf, the tree, subvolume or image, snapshots, caches) that no one
rename can change together. So the operation first creates the hidden mark
/etc/vserver/.NAME.partial and holds an exclusive flock(2) on it while it
works; its last step removes the mark. The kernel drops the lock of a killed
process, so a mark nobody holds is what a killed operation left behind:

- a marked guest is listed nowhere (``--list``, the console, ``--onboot``)
  and does not start;
- the next build, clone or import of NAME, or ``vserver NAME delete
  --force``, removes the leftovers first.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from engine.errors import VstuiError
from engine.paths import Paths, check_name

SUFFIX = ".partial"


def mark(paths: Paths, name: str) -> Path:
    return paths.config_dir / f".{check_name(name)}{SUFFIX}"


def marked(files: list[str]) -> set[str]:
    """The guests a listing of the config directory shows as partial."""
    return {f[1 : -len(SUFFIX)] for f in files if f.startswith(".") and f.endswith(SUFFIX)}


def partial(paths: Paths, name: str) -> AbstractContextManager[None]:
    """Hold NAME's mark while the block runs; removed when it ends (also by an
    exception: the caller has cleaned up by then), kept when the process dies."""
    return _held(mark(paths, name), name)  # the name is checked now, not at `with`


@contextmanager
def _held(path: Path, name: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _lock(fd, name)
        yield
        path.unlink(missing_ok=True)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _lock(fd: int, name: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno != errno.EWOULDBLOCK:
            raise
        raise VstuiError("another vserver is building, cloning, importing or deleting "
                         "this guest now; wait for it to finish", name) from None  # fmt: skip


def state(paths: Paths, name: str) -> str | None:
    """None (no mark), "busy" (an operation holds it) or "left" (a killed one's)."""
    try:
        fd = os.open(mark(paths, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "busy"
    finally:
        os.close(fd)
    return "left"


def refuse_partial(paths: Paths, name: str) -> None:
    """VstuiError for a guest whose build, clone, import or delete has not finished."""
    found = state(paths, name)
    if found == "busy":
        raise VstuiError("the guest is being built, cloned, imported or deleted now; "
                         "wait for it to finish", name)  # fmt: skip
    if found == "left":
        why = "the guest is incomplete: its build, clone, import or delete was interrupted"
        raise VstuiError(f"{why}; remove it with `vserver {name} delete --force`", name)
