"""Build and delete guests; the /vservers barrier.

``build`` writes NAME.conf through engine.config, then the tree (through
the storage backend) from a template; on any failure it removes whatever
it made. ``delete`` removes tree, image, config, run state and log, and
refuses while the guest runs or while anything is mounted below its tree.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.errors import (
    BarrierError,
    ConfigError,
    GuestNotFound,
    GuestRunning,
    VstuiError,
    require_root,
)
from engine.paths import Paths
from engine.rootfs import staging, storage

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of every start
if TYPE_CHECKING:
    from typing import Any

# build(options=...) short names -> NAME.conf keys; other keys pass through as written
OPTION_KEYS = {
    "disk": "V_DISK",
    "backend": "V_DISK_BACKEND",
    "inodes": "V_INODES",
    "memory": "V_MEMORY",
    "context": "S_CONTEXT",
}
TEMPLATE_DEFAULTS = {"S_FLAGS": "lock nproc", "ULIMIT": "-HS -u 1000"}
# what a template's tree needs on top: a debootstrap tree boots its own systemd
# (fakeinit), and systemd drops capabilities from each service's bounding set
# (CapabilityBoundingSet=), which needs CAP_SETPCAP: without it journald, logind
# and others fail with status 218/CAPABILITIES
KIND_DEFAULTS = {"debootstrap": {"S_FLAGS": "lock nproc fakeinit", "S_CAPS": "SETPCAP"}}
LIVE_STATES = ("starting", "running", "stopping")


# -- barrier ---------------------------------------------------------------


def ensure_barrier(paths: Paths) -> None:
    """Create the guests' parent mode 000 root:root if missing, then check it."""
    top = paths.vservers_dir
    if not os.path.lexists(top):
        top.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(top, 0)
        os.chown(top, 0, 0)
        os.chmod(top, 0)
    check_barrier(paths)


def check_barrier(paths: Paths) -> None:
    """BarrierError unless the guests' parent is a mode-000 root-owned directory.

    Also checks each guest root: a real directory owned by root and not
    writable by group or others (the guest's / must not be anyone's).
    """
    top = paths.vservers_dir
    fix = f"chown root:root {top} && chmod 000 {top}"
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        raise BarrierError(f"{top} is missing; create it: mkdir -m 000 {top}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise BarrierError(f"{top} is not a directory; make it one: rm {top} && mkdir -m 000 {top}")
    if stat.S_IMODE(st.st_mode) != 0 or st.st_uid != 0:
        mode = oct(stat.S_IMODE(st.st_mode))[2:].zfill(3)
        raise BarrierError(f"{top} is mode {mode} uid {st.st_uid}, not a barrier; fix: {fix}")
    for entry in os.scandir(top):
        _check_guest_root(Path(entry.path))


def _check_guest_root(root: Path) -> None:
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode):
        raise BarrierError(f"guest root {root} is a symlink; replace it with the real tree")
    if not stat.S_ISDIR(st.st_mode):
        return  # a stray file: not a guest
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BarrierError(
            f"guest root {root} is writable by others; fix: "
            f"chown root:root {root} && chmod 755 {root}"
        )


# -- run state (read directly: see docs/engine-api.md "Run state") ---------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def is_running(paths: Paths, name: str) -> bool:
    """State file says live and init.pid is a live process."""
    run = paths.run_dir(name)
    if _read(run / "state") not in LIVE_STATES:
        return False
    pid = _read(run / "init.pid")
    return bool(pid and pid.isdigit() and os.path.exists(f"/proc/{pid}"))


# -- build -----------------------------------------------------------------


def _iproot(addresses: Iterable[object]) -> str:
    words = []
    for addr in addresses:
        iface = getattr(addr, "interface", None)
        if iface is None:
            words.append(str(addr))
        else:
            dev = getattr(addr, "dev", None)
            words.append(f"{dev}:{iface}" if dev else str(iface))
    return " ".join(words)


def config_values(
    name: str,
    template: str,
    hostname: str | None,
    addresses: Iterable[object],
    options: Mapping[str, str],
    defaults: Mapping[str, str] | None = None,
    pooled: bool = False,
) -> dict[str, str]:
    """NAME.conf keys for a new guest: util-vserver's template defaults, then the
    host's defaults.conf, then the options given; new guests go to the pool if any."""
    values = {"S_HOSTNAME": hostname or name}
    iproot = _iproot(addresses)
    if iproot:
        values["IPROOT"] = iproot
    values.update(TEMPLATE_DEFAULTS)
    values.update(KIND_DEFAULTS.get(template.partition(":")[0], {}))
    values.update(defaults or {})
    values["V_TEMPLATE"] = template
    for key, value in options.items():
        values[OPTION_KEYS.get(key, key)] = str(value)
    fallback = "btrfs" if pooled else "image" if "V_DISK" in values else "none"
    values.setdefault("V_DISK_BACKEND", fallback)
    return values


def _exists(paths: Paths, name: str) -> Path | None:
    for path in (paths.config_file(name), paths.guest_root(name), paths.guest_image(name)):
        if os.path.lexists(path):
            return path
    if storage.pool_exists(paths):  # a subvolume left in the pool
        from engine.rootfs import volumes

        return volumes.find(paths, name)
    return None


def build(
    paths: Paths,
    name: str,
    template: str = "skeleton",
    hostname: str | None = None,
    addresses: Iterable[object] = (),
    options: Mapping[str, str] | None = None,
    template_args: Any = None,
) -> Any:
    """Write NAME.conf and the guest tree from ``template``; returns the GuestConfig.

    ``template_args``: a ``templates.TemplateArgs`` (debootstrap's --include,
    --mirror, --flush-cache); its cache directory defaults to the root's.
    """
    from engine import config

    config.validate_name(name)
    require_root("building a guest", name)
    from engine.rootfs.templates import TemplateArgs, parse_template, populate

    chosen = parse_template(template)
    refuse_existing(paths, name)
    if chosen.kind in ("tarball", "export") and not os.path.isfile(chosen.arg or ""):
        raise VstuiError(f"template {chosen.kind}: {chosen.arg} is not a file", name)
    addresses = tuple(addresses)
    if chosen.kind == "export":
        from engine.rootfs import archive

        changes = _overrides(hostname, addresses, options or {})
        return archive.import_guest(paths, name, chosen.arg or "", overrides=changes)
    defaults = config.load_defaults(paths, name)
    pooled = storage.pool_exists(paths)
    values = config_values(name, template, hostname, addresses, options or {}, defaults, pooled)
    args = template_args or TemplateArgs()
    if args.cache is None:
        import dataclasses

        from engine.rootfs.debootstrap import cache_dir

        args = dataclasses.replace(args, cache=cache_dir(paths.cache_dir))
    ensure_barrier(paths)
    with staging.partial(paths, name):
        config.write_new_config(paths, name, values)
        cfg = None
        try:
            cfg = config.load_guest(paths, name)
            with storage.full_guard(paths, cfg):
                storage.create(cfg, paths)
                with storage.prepare_root(cfg, paths) as handle:
                    populate(chosen, handle.path, cfg.hostname, addresses, args)
        except BaseException:
            _remove_all(paths, name, cfg)  # with cfg: a project-quota id is cleared too
            raise
    return cfg


def refuse_existing(paths: Paths, name: str) -> None:
    """VstuiError when anything of guest ``name`` exists (config, tree, image,
    subvolume); the leftovers of a killed build, clone, import or delete go first."""
    _clear_leftovers(paths, name)
    found = _exists(paths, name)
    if found is not None:
        raise VstuiError(
            f"guest already exists ({found}); delete it first: vserver {name} delete", name
        )


def _clear_leftovers(paths: Paths, name: str) -> bool:
    """Remove what a killed build, clone, import or delete of ``name`` left
    (staging's mark nobody holds); VstuiError while one runs. Whether any was."""
    found = staging.state(paths, name)
    if found == "busy":
        staging.refuse_partial(paths, name)
    if found != "left":
        return False
    from engine import config

    with staging.partial(paths, name):
        try:
            cfg = config.load_guest(paths, name)
        except VstuiError:
            cfg = None
        _remove_all(paths, name, cfg)
    return True


def _overrides(hostname: str | None, addresses: tuple[object, ...],
               options: Mapping[str, str]) -> dict[str, str]:  # fmt: skip
    """What ``build -t export:FILE`` changes in the archived NAME.conf."""
    changes = {OPTION_KEYS.get(k, k): str(v) for k, v in options.items()}
    if hostname:
        changes["S_HOSTNAME"] = hostname
    if addresses:
        changes["IPROOT"] = _iproot(addresses)
    return changes


# -- delete ----------------------------------------------------------------


def _remove_all(paths: Paths, name: str, cfg: Any | None) -> None:
    from engine.rootfs import du, snapshots

    snapshots.remove_all(paths, name)
    storage.remove(cfg, paths, name)
    du.forget(paths, name)
    for path in (paths.config_file(name), paths.log_file(name)):
        if os.path.lexists(path):
            path.unlink()
    run = paths.run_dir(name)
    if run.is_dir() and not run.is_symlink():
        import shutil

        shutil.rmtree(run)


def delete(paths: Paths, name: str, force: bool = False) -> None:
    """Remove the guest's tree, image, config, run state and log."""
    from engine import config

    config.validate_name(name)
    require_root("deleting a guest", name)
    if _clear_leftovers(paths, name) and _exists(paths, name) is None:
        return  # delete --force of what a killed operation left
    if _exists(paths, name) is None:
        raise GuestNotFound(f"no guest {name} ({paths.config_file(name)} missing)", name)
    if is_running(paths, name) and not force:
        raise GuestRunning(
            f"guest is running; stop it first (vserver {name} stop) " "or delete with --force", name
        )
    root = paths.guest_root(name)
    mounted = storage.mounts_under(root)
    if mounted:
        raise GuestRunning(
            f"{mounted[0][0]} is mounted ({mounted[0][1]}); stop the guest "
            f"or unmount it first (umount {mounted[0][0]})",
            name,
        )
    try:
        cfg = config.load_guest(paths, name)
    except (ConfigError, GuestNotFound):
        cfg = None  # a broken or missing config must not block removal
    with staging.partial(paths, name):  # killed half-way: hidden, finished by the next delete
        _remove_all(paths, name, cfg)
