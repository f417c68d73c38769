"""``vstui --demo``: a few small live guests so a newcomer sees something at once.

Builds two or three skeleton guests under a demo root (``--root`` if given,
else /var/lib/vstui-demo as root, ./demo-root otherwise) when they are
absent, gives them addresses from 198.18.0.0/15 (the benchmarking range,
never routed) on veth links that stay on this machine, and starts them with
a light shell loop as their init so the console has live figures to show.
Running it again reuses what is there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.errors import VstuiError
from engine.paths import Paths

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
    try:
        from engine import config, rootfs, runtime
    except ImportError as exc:
        raise VstuiError(f"--demo needs {exc.name}, which is not available in this build") from exc
    for guest in GUESTS:
        _ensure(paths, guest, config, rootfs, runtime)
    return chosen


def _ensure(paths: Paths, guest: DemoGuest, config, rootfs, runtime) -> None:
    if not paths.config_file(guest.name).exists():
        rootfs.build(paths, guest.name, template="skeleton", hostname=f"{guest.name}.demo",
                     addresses=(guest.address,))  # fmt: skip
        config.update_config(
            paths, guest.name,
            {"V_INIT": BUSY_LOOP, "V_MEMORY": guest.memory, "V_BANDWIDTH_OUT": guest.bandwidth},
        )  # fmt: skip
    if not runtime.is_running(paths, guest.name):
        runtime.start(paths, guest.name)
