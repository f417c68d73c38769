"""Disk use of ``none`` guests: a walk of the tree, cached with its time.

A plain directory has no counter to read, so its use costs a walk of every
inode. The walk runs in the background (``refresh_async``: the console's
observer, never its UI thread) or on request, and its result is kept in
``/var/lib/vservers/du/NAME`` (bytes, inodes, epoch seconds) so that every
tool reads the same figure and says how old it is.
"""

from __future__ import annotations

import json
import os
import threading
import time

from engine._filekey import FileKey, file_key
from engine._record import Record
from engine.paths import Paths

STALE_AFTER = 300.0  # seconds: an older figure is measured again in the background
CACHE_DIR = "du"

_running: set[tuple[str, str]] = set()
# cache file -> (its stat key, what it said): see cached
_parsed: dict[str, tuple[FileKey, Measured]] = {}
_guard = threading.Lock()


class Measured(Record):
    __slots__ = _fields = ("bytes", "inodes", "measured")
    bytes: int
    inodes: int
    measured: float  # epoch seconds of the walk's end


def _cache(paths: Paths, name: str) -> str:
    return paths.state_file(CACHE_DIR, name)


def cached(paths: Paths, name: str) -> Measured | None:
    """The last walk's result, or None when there was none. The file is parsed
    again only when its stat changed (``measure`` replaces it by rename): a
    console asks for every guest every few seconds."""
    path = _cache(paths, name)
    key = file_key(path)
    if key is None:
        _parsed.pop(path, None)
        return None
    hit = _parsed.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        with open(path) as f:
            data = json.load(f)
        result = Measured(int(data["bytes"]), int(data["inodes"]), float(data["measured"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    _parsed[path] = (key, result)
    return result


def walk(top: str | os.PathLike[str]) -> tuple[int, int]:
    """(bytes allocated, inodes) below ``top``, each hard-linked inode once, links not followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [os.fspath(top)]
    try:
        st = os.lstat(stack[0])
        total, seen = st.st_blocks * 512, {(st.st_dev, st.st_ino)}
    except OSError:
        return 0, 0
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue  # vanished or unreadable meanwhile: count what can be seen
    return total, len(seen)


def measure(paths: Paths, name: str) -> Measured:
    """Walk the guest's tree now and keep the result."""
    used, inodes = walk(paths.guest_root(name))
    result = Measured(used, inodes, time.time())
    path = _cache(paths, name)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(result._asdict(), f)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only host or not root: the figure is still returned
    return result


def refresh_async(paths: Paths, name: str, now: float | None = None) -> bool:
    """Start a background walk when the cached figure is missing or stale; True if started.

    One walk per guest at a time; the caller never waits for it.
    """
    current = cached(paths, name)
    now = time.time() if now is None else now
    if current is not None and now - current.measured < STALE_AFTER:
        return False
    key = (os.fspath(paths.root), name)
    with _guard:
        if key in _running:
            return False
        _running.add(key)

    def work() -> None:
        try:
            measure(paths, name)
        finally:
            with _guard:
                _running.discard(key)

    threading.Thread(target=work, name=f"du-{name}", daemon=True).start()
    return True


def forget(paths: Paths, name: str) -> None:
    _parsed.pop(_cache(paths, name), None)
    try:
        os.unlink(_cache(paths, name))
    except FileNotFoundError:
        pass
