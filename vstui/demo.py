"""``vstui --demo``: a few small live guests so a newcomer sees something at once.

Builds two or three skeleton guests under a demo root (``--root`` if given,
else /var/lib/vstui-demo as root, ./demo-root otherwise) when they are
absent, gives them addresses from 198.18.0.0/15 (the benchmarking range,
never routed) on veth links that stay on this machine, and starts them with
a light shell loop as their init so the console has live figures to show.
Running it again reuses what is there; ``vstui --demo-clean`` stops and
deletes the demo guests and removes the demo root's emptied directories.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import VstuiError
from engine.paths import Paths

MODULES = ("config", "rootfs", "runtime.supervisor", "runtime.stopping", "runtime.state")
DEFAULT_ROOT = "/var/lib/vstui-demo"
USER_ROOT = "./demo-root"

# A shell loop that uses a little CPU every two seconds, plus a sleeper
# child so the process tree has some shape.
BUSY_LOOP = (
    "/bin/sh -c 'sleep 100000 & "
    "while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 2; done'"
)


@dataclass(frozen=True, slots=True)
class DemoGuest:
    name: str
    address: str
    memory: str
    bandwidth: str


GUESTS = (
    DemoGuest("web", "198.18.0.11/24", "256M", "10mbit"),
    DemoGuest("db", "198.18.0.12/24", "512M", "20mbit"),
    DemoGuest("cache", "198.18.0.13/24", "128M", "5mbit"),
)


def names() -> str:
    return ", ".join(g.name for g in GUESTS)


def demo_root(root: str | None) -> str:
    if root:
        return root
    return DEFAULT_ROOT if os.geteuid() == 0 else os.path.abspath(USER_ROOT)


def prepare(root: str | None = None) -> str:
    """Build and start the demo guests under the demo root; return the root."""
    chosen = demo_root(root)
    if os.geteuid() != 0:
        raise VstuiError("--demo builds and starts guests and needs root; run it as root (sudo)")
    paths = Paths.from_root(chosen)
    for guest in GUESTS:
        _ensure(paths, guest)
    return chosen


def _engine():
    """The engine parts the demo uses."""
    try:
        mods = [importlib.import_module(f"engine.{m}") for m in MODULES]
    except ImportError as exc:
        raise VstuiError(f"--demo needs {exc.name}, which is not available in this build") from exc
    return tuple(mods)


def _running(paths: Paths, name: str) -> bool:
    return _engine()[4].init_identity(paths, name) is not None


def _ensure(paths: Paths, guest: DemoGuest) -> None:
    config, rootfs, start, _stop, _state = _engine()
    if not paths.config_file(guest.name).exists():
        rootfs.build(paths, guest.name, template="skeleton", hostname=f"{guest.name}.demo",
                     addresses=(guest.address,))  # fmt: skip
        config.update_config(
            paths, guest.name,
            {"V_INIT": BUSY_LOOP, "V_MEMORY": guest.memory, "V_BANDWIDTH_OUT": guest.bandwidth},
        )  # fmt: skip
    if not _running(paths, guest.name):
        start.start(paths, guest.name)


def clean(root: str | None = None) -> str:
    """Stop and delete the demo guests under the demo root; return the root.

    Only the demo guests are touched; afterwards the root's vstui
    directories left empty are removed (another guest built there by hand
    stays, with the directories that hold it).
    """
    chosen = demo_root(root)
    if os.geteuid() != 0:
        raise VstuiError("--demo-clean stops and deletes guests and needs root; run it as root")
    if not os.path.isdir(chosen):
        return chosen
    _config, rootfs, _start, stop, _state = _engine()
    xid = importlib.import_module("engine.runtime.xid")
    paths = Paths.from_root(chosen)
    for guest in GUESTS:
        if paths.config_file(guest.name).exists():
            if _running(paths, guest.name):
                stop.stop(paths, guest.name)
            rootfs.delete(paths, guest.name)
        xid.forget(paths, guest.name)  # rootfs.delete keeps the allocation
    _remove_empty_registry(paths)
    _remove_empty_dirs(paths, chosen)
    return chosen


def _remove_empty_registry(paths: Paths) -> None:
    """The xid table and its lock, once no guest of this root is left in it."""
    table = paths.state_dir / "xids"
    try:
        if table.read_text().strip():
            return
        table.unlink()
        table.with_name("xids.lock").unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def _remove_empty_dirs(paths: Paths, top: str) -> None:
    """The root's own vstui directories, and their parents up to the root,
    when empty; nothing on the real host root, nothing outside ``top``."""
    base = Path(top).resolve()
    if base == Path("/"):
        return
    for where in (paths.config_dir, paths.vservers_dir, paths.images_dir, paths.run_base,
                  paths.log_dir, paths.state_dir, base):  # fmt: skip
        here = Path(where).resolve()
        while here == base or base in here.parents:
            try:
                here.rmdir()  # fails (and is left) unless empty
            except OSError:
                break
            here = here.parent
