"""What setup created for one guest, kept in ``run_dir(NAME)/net.json``.

Teardown removes exactly what is recorded here, so it never touches a link
it did not make, and running it twice is harmless. Setup rewrites the file
after every object it creates: a start that dies half way still leaves a
record of what to remove.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from engine.paths import Paths

FILE_NAME = "net.json"


@dataclass(frozen=True, slots=True)
class HostRoute:
    """A route setup added in the host namespace (destination CIDR via a link)."""

    dst: str
    dev: str


@dataclass(frozen=True, slots=True)
class NetState:
    """The network objects of one guest (links by name; routes; shaping; nft tables)."""

    name: str
    mode: str  # veth | ipvlan | macvlan | host
    netns_pid: int  # the process whose network namespace is the guest's
    netns_inode: int | None  # that namespace's inode, to notice a reused PID
    host_link: str | None = None  # veth host end
    guest_links: tuple[str, ...] = ()  # created inside the guest's namespace
    host_links: tuple[str, ...] = ()  # other links in the host namespace (ifb)
    host_routes: tuple[HostRoute, ...] = ()
    bridge: str | None = None
    bandwidth_out: int | None = None  # bits/s as applied
    bandwidth_in: int | None = None
    addresses: tuple[str, ...] = field(default=())  # "198.18.0.1/24" as configured
    nft_tables: tuple[str, ...] = ()  # "inet vstui-web": the guest's filtering

    def adding(self, **changes: object) -> NetState:
        """A copy with tuple fields extended (``host_links=("x",)`` appends x)."""
        merged = {}
        for key, value in changes.items():
            current = getattr(self, key)
            merged[key] = current + tuple(value) if isinstance(current, tuple) else value
        return replace(self, **merged)

    def dropping(self, key: str, item: object) -> NetState:
        """A copy without ``item`` in tuple field ``key``."""
        return replace(self, **{key: tuple(x for x in getattr(self, key) if x != item)})


def path(paths: Paths, name: str) -> Path:
    return paths.run_dir(name) / FILE_NAME


def save(paths: Paths, state: NetState) -> None:
    """Write net.json atomically (temp file, fsync, rename)."""
    import tempfile  # only writers pay for it; counters() reads

    target = path(paths, state.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(state)
    fd, tmp = tempfile.mkstemp(prefix=".net.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(paths: Paths, name: str) -> NetState | None:
    """The recorded state, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(path(paths, name).read_text())
    except (OSError, ValueError):
        return None
    try:
        data["host_routes"] = tuple(HostRoute(**r) for r in data.get("host_routes", ()))
        for key in ("guest_links", "host_links", "addresses", "nft_tables"):
            data[key] = tuple(data.get(key, ()))
        return NetState(**data)
    except (TypeError, KeyError):
        return None


def remove(paths: Paths, name: str) -> None:
    path(paths, name).unlink(missing_ok=True)
