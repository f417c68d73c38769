"""Per-guest traffic counters, cheap enough for 100 guests every second.

No netlink: a veth guest's numbers are the host end's row of the host's
/proc/net/dev (one read for every guest); an ipvlan/macvlan guest's are its
own links in ``/proc/PID/net/dev`` (the table of PID's network namespace).
Counts are given from the guest's point of view: what the host end
receives is what the guest sent (rx and tx swap). Rates are the observer's job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from engine.datamodel import NetStats
from engine.net import state as net_state
from engine.paths import Paths


def parse_net_dev(text: str, links: Iterable[str] | None, exclude: Iterable[str] = ()) -> NetStats:
    """Sum the rows of ``links`` (None: every link but ``exclude``) of a /proc/net/dev table."""
    wanted = None if links is None else set(links)
    skipped = set(exclude)
    totals = [0] * 6
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        if (wanted is not None and name not in wanted) or name in skipped:
            continue
        cols = [int(c) for c in rest.split()]
        if len(cols) < 12:
            continue
        # receive: bytes packets errs drop ...(8 cols); transmit: bytes packets errs drop ...
        row = (cols[0], cols[8], cols[1], cols[9], cols[3], cols[11])
        totals = [a + b for a, b in zip(totals, row, strict=True)]
    return NetStats(*totals)


def netns_stats(pid: int, links: Iterable[str]) -> NetStats | None:
    try:
        text = read_net_dev(f"/proc/{pid}")
    except OSError:
        return None
    return parse_net_dev(text, links)


def host_ends(text: str) -> dict[str, NetStats]:
    """Every link of the host's /proc/net/dev table, from the guest's side (swapped):
    one read for all veth guests instead of six sysfs files each."""
    found = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        cols = rest.split()
        if len(cols) >= 12:
            c = [int(x) for x in cols]  # rx: bytes packets errs drop ..., then tx
            found[name.strip()] = NetStats(
                rx_bytes=c[8], tx_bytes=c[0], rx_packets=c[9], tx_packets=c[1],
                rx_dropped=c[11], tx_dropped=c[3],
            )  # fmt: skip
    return found


def read_net_dev(proc_root: str = "/proc") -> str:
    """A network namespace's /proc/net/dev (that of ``proc_root``'s reader)."""
    with open(os.path.join(proc_root, "net/dev")) as f:
        return f.read()


def counters(paths: Paths, names: Iterable[str], net_dev: str | None = None) -> dict[str, NetStats]:
    """NetStats for each named guest that has a network; others are left out.
    ``net_dev``: the host's /proc/net/dev as the caller read it (read here if None)."""
    found: dict[str, NetStats] = {}
    if net_dev is None:
        try:
            net_dev = read_net_dev()
        except OSError:
            net_dev = ""
    ends = host_ends(net_dev)
    for name in names:
        stats = ends.get(paths.link_name(name))
        if stats is None:
            stats = _from_state(paths, name)
        if stats is not None:
            found[name] = stats
    return found


# (paths, name) -> the guest's net state file: joined (and its name checked) once
_STATE_FILES: dict[tuple[Paths, str], str] = {}


def _state_file(paths: Paths, name: str) -> str:
    key = (paths, name)
    path = _STATE_FILES.get(key)
    if path is None:
        if len(_STATE_FILES) > 10_000:  # names come and go: never grow without bound
            _STATE_FILES.clear()
        path = _STATE_FILES[key] = os.path.join(paths.run_dir_str(name), net_state.FILE_NAME)
    return path


def _from_state(paths: Paths, name: str) -> NetStats | None:
    if not os.path.exists(_state_file(paths, name)):
        return None  # no network of its own recorded (no links): nothing to count
    recorded = net_state.load(paths, name)
    if recorded is None or recorded.mode not in ("ipvlan", "macvlan") or not recorded.guest_links:
        return None
    slaves = [link for link in recorded.guest_links if not link.startswith("ifb")]
    return netns_stats(recorded.netns_pid, slaves)
