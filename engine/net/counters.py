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
from engine.procfs import KeptFile, read_text


def parse_net_dev(text: str, links: Iterable[str] | None, exclude: Iterable[str] = ()) -> NetStats:
    """Sum the rows of ``links`` (None: every link but ``exclude``) of a /proc/net/dev table."""
    wanted = None if links is None else set(links)
    skipped = set(exclude)
    totals = [0] * 6
    for name, row in link_rows(text):
        if (wanted is not None and name not in wanted) or name in skipped:
            continue
        totals = [a + b for a, b in zip(totals, row, strict=True)]
    return NetStats(*totals)


Counts = tuple[int, int, int, int, int, int]

# A line of a /proc/net/dev table -> its (link, counts), or None: see link_rows
_PARSED: dict[str, tuple[str, Counts] | None] = {}


def link_rows(text: str) -> list[tuple[str, Counts]]:
    """(link, (rx bytes, tx bytes, rx packets, tx packets, rx dropped, tx
    dropped)) of each row of a /proc/net/dev table. A line is parsed again only
    when it changed: at every poll most links' counters are those of the last
    (an idle guest's veth), and the console parses the table every second."""
    lines = text.splitlines()[2:]
    parsed = _PARSED
    if len(parsed) > 4 * len(lines) + 64:  # counters move on: drop the old lines
        parsed.clear()
    rows = []
    for line in lines:
        if line in parsed:
            row = parsed[line]
        else:
            row = parsed[line] = _link_row(line)
        if row is not None:
            rows.append(row)
    return rows


def _link_row(line: str) -> tuple[str, Counts] | None:
    name, _, rest = line.partition(":")
    cols = rest.split()
    if len(cols) < 12 or not all(c.isdigit() for c in cols):
        return None
    c = [int(x) for x in cols]  # receive: bytes packets errs drop ...(8), then transmit
    return name.strip(), (c[0], c[8], c[1], c[9], c[3], c[11])


def netns_stats(pid: int, links: Iterable[str]) -> NetStats | None:
    try:
        text = read_net_dev(f"/proc/{pid}")
    except OSError:
        return None
    return parse_net_dev(text, links)


def guest_side(counts: Counts) -> NetStats:
    """A host end's counts as its guest sees them: what the host end
    receives is what the guest sent."""
    rx, tx, rx_packets, tx_packets, rx_dropped, tx_dropped = counts
    return NetStats(
        rx_bytes=tx, tx_bytes=rx, rx_packets=tx_packets, tx_packets=rx_packets,
        rx_dropped=tx_dropped, tx_dropped=rx_dropped,
    )  # fmt: skip


def read_net_dev(proc_root: str = "/proc", kept: KeptFile | None = None) -> str:
    """A network namespace's /proc/net/dev (that of ``proc_root``'s reader).
    A link's name is any bytes but "/", ":", blanks and NUL (dev_valid_name,
    net/core/dev.c), chosen by a guest's root for its own links: procfs.read_text.
    ``kept``: the live /proc/net/dev, kept open (the console's poll)."""
    if kept is not None:
        return kept.read_text()
    return read_text(os.path.join(proc_root, "net/dev"))


def counters(paths: Paths, names: Iterable[str], net_dev: str | None = None) -> dict[str, NetStats]:
    """NetStats for each named guest that has a network; others are left out.
    ``net_dev``: the host's /proc/net/dev as the caller read it (read here if None)."""
    found: dict[str, NetStats] = {}
    if net_dev is None:
        try:
            net_dev = read_net_dev()
        except OSError:
            net_dev = ""
    ends = dict(link_rows(net_dev))  # a NetStats made for the guests' links alone
    for name in names:
        counts = ends.get(paths.link_name(name))
        stats = guest_side(counts) if counts is not None else _from_state(paths, name)
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
