"""``vserver NAME delete``: the whole guest goes, every file of it.

A running guest is refused unless ``force``; with it, the guest is stopped
first, never left running unmanaged (its processes would then count as the
host's, ``stop`` would no longer know it and its context id would be handed
out again). The storage part then removes the tree, image, config, run
directory and log; the runtime's own files of the guest go too: its context
id, boot cache (the only cache a start keeps) and rotated logs.
"""

from __future__ import annotations

import os

from engine.errors import GuestNotFound, GuestRunning, require_root
from engine.paths import Paths, check_name


def delete(paths: Paths, name: str, force: bool = False) -> None:
    """Remove the guest; GuestRunning while it runs unless ``force`` (then stopped first)."""
    from engine import rootfs
    from engine.runtime import state

    check_name(name)
    require_root("deleting a guest", name)
    if state.read(paths, name).running or rootfs.is_running(paths, name):
        if not force:
            raise GuestRunning(
                f"guest is running; stop it first (vserver {name} stop) or delete with --force",
                name,
            )
        from engine.runtime.stopping import stop

        stop(paths, name)
    from engine.runtime import bootcache

    bootcache.forget(paths, name)  # first: the compiled start never starts a half-deleted guest
    try:
        rootfs.delete(paths, name)  # refuses a guest started again meanwhile
    except GuestNotFound:
        forget(paths, name)  # leftovers of a guest whose files were removed by hand
        raise
    forget(paths, name)


def forget(paths: Paths, name: str) -> None:
    """The runtime's files of a deleted guest (idempotent)."""
    from engine.runtime import bootcache, idmap, supervisor, xid

    xid.forget(paths, name)
    idmap.forget(paths, name)
    bootcache.forget(paths, check_name(name))
    try:
        os.unlink(supervisor.older_log(os.fspath(paths.log_file(name))))
    except FileNotFoundError:
        pass
