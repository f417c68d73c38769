"""When to read a file again: the stat of what was last read, to compare."""

from __future__ import annotations

import os
import time

FileKey = tuple[int, int, int, int]


def file_key(path: str | os.PathLike[str]) -> FileKey | None:
    """(inode, size, mtime ns, ctime ns) of ``path``; None when it cannot be
    stat'ed. A file replaced by rename gets a new inode, one written in place
    a new mtime and ctime: a cached parse stays good while the key is equal."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


DirKey = tuple[int, int, int]

# A directory's timestamps are coarse (a jiffy or a file system's granularity):
# two changes within one tick leave the same key, so a listing read less than
# RACY seconds after the last change may already be stale when the next comes.
RACY = 1.0


def dir_key(path: str | os.PathLike[str]) -> tuple[DirKey, bool] | None:
    """(inode, mtime ns, ctime ns) of the directory ``path`` and whether it has
    settled (last changed more than RACY seconds ago): only a settled key may
    stand for what was listed or read under it. None when it cannot be stat'ed.
    An entry added, removed or renamed in place changes mtime and ctime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns), time.time() - st.st_mtime > RACY
