"""Many hosts at once for a console: one agent connection per host, each on its own thread.

``Fleet(hosts).start()`` connects to every host in the background;
``views()`` returns at once with an immutable ``HostView`` per host (state,
round-trip time, load, the newest snapshot and its age). A host that cannot
be reached, or whose connection drops, never blocks the others or the
caller: it is marked ``stale`` (its last data kept, with its age) or
``down`` and reconnected with exponential backoff. Pings every few seconds
measure the round trip and bring the load average.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.datamodel import Snapshot
from engine.errors import HostError, VstuiError
from engine.remote.client import AgentClient
from engine.remote.hosts import Host

PING_EVERY = 5.0  # seconds between round-trip measurements
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 15.0  # seconds between reconnection attempts

CONNECTING, UP, STALE, DOWN = "connecting", "up", "stale", "down"


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as the console shows it, at one instant."""

    name: str
    state: str  # connecting, up, stale (lost, last data kept), down (never reached)
    read_only: bool
    snapshot: Snapshot | None = None
    age: float | None = None  # seconds since its last snapshot arrived
    rtt: float | None = None  # seconds, the last ping's round trip
    load: tuple[float, ...] | None = None  # its 1/5/15-minute load averages
    error: str = ""  # why it is stale or down (one line)
    retry_in: float | None = None  # seconds to the next connection attempt
    facts: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def guests(self) -> int:
        """Guests on the host (its own row excluded); 0 before the first snapshot."""
        return max(0, len(self.snapshot.guests) - 1) if self.snapshot else 0


class _Link:
    """One host's connection, kept up by its own thread."""

    def __init__(self, fleet: Fleet, host: Host) -> None:
        self.fleet, self.host = fleet, host
        self.client: AgentClient | None = None
        self.connecting: AgentClient | None = None  # closed by Fleet.close() too
        self.state = CONNECTING
        self.error = ""
        self.snapshot: Snapshot | None = None
        self.frame_at: float | None = None
        self.rtt: float | None = None
        self.load: tuple[float, ...] | None = None
        self.facts: dict[str, Any] = {}
        self.retry_at: float | None = None
        self.procs: str | list[str] = "none"
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"host-{host.name}")

    def view(self, now: float) -> HostView:
        age = now - self.frame_at if self.frame_at is not None else None
        state = self.state
        if state == UP and age is not None and age > self.fleet.stale_after:
            state = STALE  # connected, but nothing arrives: show it as such
        retry = max(0.0, self.retry_at - now) if self.retry_at is not None else None
        return HostView(self.host.name, state, self.host.read_only, self.snapshot, age,
                        self.rtt, self.load, self.error, retry, self.facts)  # fmt: skip

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self.fleet.closed:
            if self._connect():
                backoff = BACKOFF_FIRST
                self._serve()
            if self.fleet.closed:
                break
            delay = backoff * random.uniform(0.8, 1.2)  # hosts lost together retry apart
            self.retry_at = time.monotonic() + delay
            self.fleet.changed()
            self.wake.wait(delay)
            self.wake.clear()
            self.retry_at = None
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _connect(self) -> bool:
        client = AgentClient(self.host, on_snapshot=self._snapshot, on_lost=self._lost,
                             persist=False)  # fmt: skip
        self.connecting = client
        try:
            client.connect()
            client.watch(self.fleet.interval, self.procs)
        except VstuiError as exc:
            client.close()
            self.state = STALE if self.snapshot is not None else DOWN
            self.error = exc.message
            return False
        finally:
            self.connecting = None
        self.client, self.state, self.error = client, UP, ""
        self.facts = dict(client.hello.get("host", {}))
        self.rtt = client.rtt
        self.fleet.changed()
        return True

    def _serve(self) -> None:
        client = self.client
        assert client is not None
        while not self.fleet.closed and client.alive:
            self._ping(client)
            self.wake.wait(PING_EVERY)
            self.wake.clear()
        if client.error is not None and not self.fleet.closed:
            self.state, self.error = STALE, client.error.message
        client.close()
        self.client = None
        self.fleet.changed()

    def _ping(self, client: AgentClient) -> None:
        try:
            answer = client.call("ping", timeout=PING_EVERY * 2)
        except HostError:
            return  # the reader thread has seen the end too and says why
        except VstuiError:
            return
        self.rtt = client.rtt
        load = answer.get("load") if isinstance(answer, dict) else None
        if isinstance(load, list):
            self.load = tuple(float(x) for x in load)

    def _snapshot(self, snap: Snapshot) -> None:
        self.snapshot, self.frame_at = snap, time.monotonic()
        if self.state != UP:
            self.state = UP
        self.fleet.changed()

    def _lost(self, error: HostError) -> None:
        self.state, self.error = STALE, error.message
        self.wake.set()
        self.fleet.changed()

    def set_procs(self, scope: str | list[str]) -> None:
        if scope == self.procs:
            return
        self.procs = scope
        client = self.client
        if client is not None and client.alive:
            threading.Thread(target=self._rewatch, args=(client,), daemon=True).start()

    def _rewatch(self, client: AgentClient) -> None:
        try:
            client.watch(self.fleet.interval, self.procs)
        except VstuiError:
            pass  # the connection is going; the next one watches with the new scope


class Fleet:
    """Every host's connection, views of them, and their clients for actions."""

    def __init__(self, hosts: list[Host], interval: float = 1.0,
                 on_change: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.interval = interval
        self.stale_after = max(3 * interval, 5.0)
        self.on_change = on_change
        self.closed = False
        self._links = {h.name: _Link(self, h) for h in hosts}

    @property
    def names(self) -> list[str]:
        return list(self._links)

    def start(self) -> Fleet:
        for link in self._links.values():
            link.thread.start()
        return self

    def changed(self) -> None:
        if self.on_change is not None and not self.closed:
            self.on_change()

    def views(self) -> tuple[HostView, ...]:
        now = time.monotonic()
        return tuple(link.view(now) for link in self._links.values())

    def host(self, name: str) -> Host:
        return self._links[name].host

    def client(self, name: str) -> AgentClient:
        """The host's live connection, for an action; HostError when it has none."""
        link = self._links.get(name)
        if link is None:
            raise HostError("not one of this console's hosts", name)
        client = link.client
        if client is None or not client.alive:
            why = f": {link.error}" if link.error else ""
            raise HostError(f"not connected{why}", name)
        return client

    def set_procs(self, name: str, scope: str | list[str]) -> None:
        """Which processes the host sends: 'none', 'all' or some guests' names."""
        self._links[name].set_procs(scope)

    def reconnect(self, name: str) -> None:
        """Try the host again now instead of waiting out its backoff."""
        self._links[name].wake.set()

    def close(self) -> None:
        self.closed = True
        for link in self._links.values():
            link.wake.set()
            if link.connecting is not None:
                link.connecting.close()
        for link in self._links.values():
            if link.thread.is_alive():
                link.thread.join(10)
            if link.client is not None:
                link.client.close()
