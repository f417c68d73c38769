"""engine.rootfs: guest trees, templates, disk quota, shared directories, barrier.

The contract (docs/engine-api.md, "engine.rootfs")::

    TEMPLATES                      skeleton (default), busybox, tarball:PATH, debootstrap[:SUITE],
                                   export:FILE (a guest back from `vserver NAME export`)
    build(paths, name, template="skeleton", hostname=None, addresses=(), options={})
    delete(paths, name, force=False)
    check_barrier(paths)
    Bind(source, target, readonly, recursive); binds(cfg, paths) -> list[Bind]
    resolve_in_guest(root, guest_path) -> Path; open_target(root, guest_path) -> fd
    prepare_root(cfg, paths) -> RootHandle (.path, .release())
    release(cfg, paths)            undo prepare_root without its handle (idempotent)
    usage(cfg, paths) -> DiskUsage; set_quota(cfg, paths, size)
"""

from __future__ import annotations

from engine.rootfs.binds import Bind, binds, open_target, resolve_in_guest
from engine.rootfs.build import build, check_barrier, delete, is_running
from engine.rootfs.storage import DiskUsage, RootHandle, prepare_root, release, set_quota, usage

# templates.py (tarfile, logging, subprocess) is imported on first use (PEP 562):
# ``vserver NAME start`` never needs it.
_LAZY = {"KINDS": "templates", "parse_template": "templates"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'engine.rootfs' has no attribute '{name}'")
    from engine.rootfs import templates

    value = getattr(templates, name)
    globals()[name] = value
    return value


TEMPLATES = ("skeleton", "busybox", "tarball:PATH", "debootstrap[:SUITE]", "export:FILE")

__all__ = [
    "KINDS",
    "TEMPLATES",
    "Bind",
    "DiskUsage",
    "RootHandle",
    "binds",
    "build",
    "check_barrier",
    "delete",
    "is_running",
    "open_target",
    "parse_template",
    "prepare_root",
    "release",
    "resolve_in_guest",
    "set_quota",
    "usage",
]
