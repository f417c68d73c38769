"""Per-guest traffic counters, cheap enough for 100 guests every second.

No netlink: a veth guest's numbers are the host end's
``/sys/class/net/LINK/statistics/*`` files; an ipvlan/macvlan guest's are its
own links in ``/proc/PID/net/dev`` (the table of PID's network namespace).
Counts are given from the guest's point of view: what the host end
receives is what the guest sent (rx and tx swap). Rates are the observer's job.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from engine.datamodel import NetStats
from engine.net import state as net_state
from engine.paths import Paths

SYS_NET = Path("/sys/class/net")
_FIELDS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_dropped", "tx_dropped")


def _read_int(path: Path) -> int:
    with open(path, "rb") as f:
        return int(f.read())


def host_end_stats(link: str) -> NetStats | None:
    """The guest's counters read from its veth host end (swapped), None if absent."""
    base = SYS_NET / link / "statistics"
    try:
        v = {f: _read_int(base / f) for f in _FIELDS}
    except (OSError, ValueError):
        return None
    return NetStats(
        rx_bytes=v["tx_bytes"], tx_bytes=v["rx_bytes"],
        rx_packets=v["tx_packets"], tx_packets=v["rx_packets"],
        rx_dropped=v["tx_dropped"], tx_dropped=v["rx_dropped"],
    )  # fmt: skip


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
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return None
    return parse_net_dev(text, links)


def counters(paths: Paths, names: Iterable[str]) -> dict[str, NetStats]:
    """NetStats for each named guest that has a network; others are left out."""
    found: dict[str, NetStats] = {}
    for name in names:
        stats = host_end_stats(paths.link_name(name))
        if stats is None:
            stats = _from_state(paths, name)
        if stats is not None:
            found[name] = stats
    return found


def _from_state(paths: Paths, name: str) -> NetStats | None:
    recorded = net_state.load(paths, name)
    if recorded is None or recorded.mode not in ("ipvlan", "macvlan") or not recorded.guest_links:
        return None
    slaves = [link for link in recorded.guest_links if not link.startswith("ifb")]
    return netns_stats(recorded.netns_pid, slaves)
