"""When to read a file again: the stat of what was last read, to compare."""

from __future__ import annotations

import os

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
