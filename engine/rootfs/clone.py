"""``vserver SRC clone DST``: a new guest from another's tree (or one of its snapshots).

The clone gets its own identity, never the source's:

- its own context id (S_CONTEXT is dropped: one is allocated at its first start),
  hostname (``--hostname``, else DST) and addresses (``--ip``, else none);
- a MAC of its own: links get kernel-random MACs at every start, and the tree's
  /etc/machine-id (from which systemd derives interface MACs, DHCP client ids
  and more) is emptied, so the clone's systemd makes a new one at first boot;
- its /etc/hostname and /etc/hosts rewritten for the new name and addresses.

The tree is a writable btrfs snapshot (O(1)) for btrfs guests, a sparse copy
of the image for image guests, ``cp -a --reflink=auto`` otherwise. A running
source is frozen for the instant of the copy. A failed clone leaves nothing
and the source exactly as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from engine import safepath
from engine.errors import VstuiError, require_root
from engine.paths import Paths
from engine.rootfs import snapshots, staging, storage, volumes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DROPPED_KEYS = ("S_CONTEXT",)  # the clone's context id is its own


def clone(paths: Paths, source: str, name: str, addresses: Iterable[object] = (),
          hostname: str | None = None, snapshot: str | None = None) -> Any:  # fmt: skip
    """Make guest ``name`` from guest ``source``; returns the clone's GuestConfig."""
    from engine import config
    from engine.rootfs.build import _iproot, ensure_barrier, refuse_existing

    config.validate_name(name)
    src = snapshots._load(paths, source)
    require_root("cloning a guest", name)
    if snapshot is not None:
        snapshots.get(paths, source, snapshot)  # exists?
    refuse_existing(paths, name)
    addresses = tuple(addresses)
    changes: dict[str, str | None] = {key: None for key in DROPPED_KEYS}
    changes["S_HOSTNAME"] = hostname or name
    changes["IPROOT"] = _iproot(addresses) or None
    ensure_barrier(paths)
    with staging.partial(paths, name):
        return _make(paths, name, src, changes, snapshot)


def _make(paths: Paths, name: str, src: Any, changes: dict[str, str | None],
          snapshot: str | None) -> Any:  # fmt: skip
    from engine import config
    from engine.rootfs.build import _remove_all

    cfg = None
    try:
        config.atomic_write(paths.config_file(name), src.path.read_text(), guest=name)
        cfg = config.update_config(paths, name, changes)
        with storage.full_guard(paths, cfg):
            _copy_tree(paths, src, cfg, snapshot)
            with storage.prepare_root(cfg, paths) as handle:
                new_identity(handle.path, cfg, machine_id=True)
    except BaseException:
        _remove_all(paths, name, cfg)
        raise
    return cfg


def _copy_tree(paths: Paths, src: Any, cfg: Any, snapshot: str | None) -> None:
    from engine.runtime.freezing import HeldStill

    backend = storage.backend_of(src)
    if backend == "project":
        raise VstuiError("cloning a project-quota guest is not supported; use "
                         "V_DISK_BACKEND=btrfs or image", src.name)  # fmt: skip
    if snapshot is not None:
        _from(paths, src, cfg, snapshots._stored(paths, src, snapshot), backend)
        return
    if backend == "btrfs":
        origin = volumes.subvolume(paths, src.name)
    elif backend == "image":
        origin = paths.guest_image(src.name)
    else:
        origin = paths.guest_root(src.name)
    with HeldStill(paths, src.name):
        if backend == "image":
            with snapshots._fs_frozen(paths, src):
                _from(paths, src, cfg, origin, backend)
        else:
            _from(paths, src, cfg, origin, backend)


def _from(paths: Paths, src: Any, cfg: Any, origin: Path, backend: str) -> None:
    """The clone's tree from ``origin`` (a subvolume, an image file or a directory)."""
    if backend == "btrfs":
        volumes.clone_from(cfg, paths, origin)
    elif backend == "image":
        paths.images_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        snapshots.copy_image(origin, paths.guest_image(cfg.name), cfg.name)
        paths.guest_root(cfg.name).mkdir(mode=0o755)
    else:
        snapshots.copy_tree(origin, paths.guest_root(cfg.name), cfg.name)


def new_identity(tree: Path, cfg: Any, machine_id: bool = False) -> None:
    """/etc/hostname and /etc/hosts for ``cfg`` (and an empty machine-id), written in a
    chroot of the tree: it is the guest's, a symlink there must not lead onto the host."""
    from engine.rootfs.chroot import in_chroot

    in_chroot(tree, lambda root: _rewrite(root, cfg, machine_id), f"{cfg.name}: new identity")


def _rewrite(root: Path, cfg: Any, machine_id: bool) -> None:
    from engine.rootfs.chroot import hosts_text

    etc = root / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    for name, text in (
        ("hostname", cfg.hostname + "\n"),
        ("hosts", hosts_text(cfg.hostname, cfg.addresses)),
    ):
        safepath.replace_regular(etc / name, text.encode())  # never through the guest's link
    if not machine_id:
        return
    for path in (root / "etc/machine-id", root / "var/lib/dbus/machine-id"):
        try:  # systemd makes a new one at first boot
            os.close(safepath.open_regular(path, os.O_WRONLY | os.O_TRUNC))
        except OSError:
            pass  # none, or not a file: nothing of the source's to forget
