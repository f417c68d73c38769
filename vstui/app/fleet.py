"""The console over many hosts: one snapshot source and one engine door for all.

``vstui --host a --host b`` runs the same screens as on one host. Guests
are named ``HOST/NAME`` inside the console (the host's own row is
``HOST/``), so that every screen keys, filters and remembers them as it
does local guests, and ``FleetEngine`` routes each operation to the host
in the name, through that host's agent. A read-only host (hosts.toml, or
an agent started ``--read-only``) is refused here before anything is sent,
and by its agent again.
"""

from __future__ import annotations

import dataclasses
import os
import signal as _signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.datamodel import HOST_NAME, HOST_XID, Gauge, GuestStatus, ProcRow, Snapshot
from engine.errors import HostError, ReadOnlyError, VstuiError
from engine.facade import READ_ONLY_CONSOLE, Finding, SaveResult
from engine.paths import Paths
from engine.remote import ssh
from engine.remote.fleet import Fleet, HostView
from engine.remote.hosts import Host
from engine.text import visible

SEP = "/"


def qualify(host: str, name: str) -> str:
    return f"{host}{SEP}{name}"


def split(qualified: str) -> tuple[str, str]:
    """('a', 'web') for 'a/web'; ('a', '') for the host row 'a/'."""
    host, sep, name = qualified.partition(SEP)
    if not sep:
        raise VstuiError(f"'{qualified}' names no host (HOST/NAME)")
    return host, name


class FleetSource:
    """Every host's newest snapshot, merged; never waits for a host."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.focus: str | None = None  # the host whose processes are watched
        self._renamed: dict[int, tuple[Any, Any]] = {}  # id(original) -> (original, renamed)
        self.views: dict[str, HostView] = {}

    def watch_processes(self, host: str | None) -> None:
        """Processes travel for one host at a time: the one the console looks into."""
        if host == self.focus:
            return
        if self.focus is not None:
            self.fleet.set_procs(self.focus, "none")
        if host is not None:
            self.fleet.set_procs(host, "all")
        self.focus = host

    def snapshot(self) -> Snapshot:
        views = self.fleet.views()
        self.views = {v.name: v for v in views}
        guests: list[GuestStatus] = []
        procs: tuple[ProcRow, ...] = ()
        errors: list[str] = []
        ncpu = 1
        renamed: dict[int, tuple[Any, Any]] = {}
        for view in views:
            if view.error and view.state != "up":
                errors.append(f"{view.name}: {view.error}")
            snap = view.snapshot
            if snap is None:
                guests.append(placeholder(view))
                continue
            guests += [self._renamed_guest(view.name, g, renamed) for g in snap.guests]
            if view.name == self.focus:
                procs = tuple(self._renamed_proc(view.name, p, renamed) for p in snap.procs)
                ncpu = snap.ncpu
        self._renamed = renamed
        return Snapshot(taken=time.monotonic(), wall=time.time(), guests=tuple(guests),
                        procs=procs, ncpu=ncpu, errors=tuple(errors))  # fmt: skip

    def _renamed_guest(self, host: str, g: GuestStatus, renamed: dict) -> GuestStatus:
        known = self._renamed.get(id(g))
        if known is not None and known[0] is g:
            renamed[id(g)] = known
            return known[1]
        new = dataclasses.replace(g, name=qualify(host, g.name))
        renamed[id(g)] = (g, new)
        return new

    def _renamed_proc(self, host: str, p: ProcRow, renamed: dict) -> ProcRow:
        known = self._renamed.get(id(p))
        if known is not None and known[0] is p:
            renamed[id(p)] = known
            return known[1]
        new = dataclasses.replace(p, guest=qualify(host, p.guest))
        renamed[id(p)] = (p, new)
        return new


def placeholder(view: HostView) -> GuestStatus:
    """A host row for a host with no data yet: its connection state, nothing measured."""
    return GuestStatus(
        name=qualify(view.name, HOST_NAME), xid=HOST_XID, state=view.state, init_pid=None,
        addresses=(), flags=(), nproc=0, cpu_percent=0.0, memory=Gauge(), pids=Gauge(),
        disk=Gauge(), inodes=Gauge(), net=None, bandwidth_out=None, bandwidth_in=None,
        uptime=None, missing=("observe",),
    )  # fmt: skip


class FleetEngine:
    """The console's engine door for many hosts: each call goes to the named host."""

    def __init__(self, hosts: list[Host], interval: float = 1.0, read_only: bool = False) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.read_only = read_only
        self.fleet = Fleet(hosts, interval, on_change=self._changed)
        self.source = FleetSource(self.fleet)
        self.wake: Callable[[], None] | None = None  # the console's poller, to poll now
        self.paths = Paths.from_root(None)  # nothing local is read in this mode

    # -- plumbing ------------------------------------------------------
    def _changed(self) -> None:
        """A host sent news: the console polls now (its poller paces the wakes),
        so a change shows within the host's frame and half a console interval,
        not a whole console interval after the frame came."""
        wake = self.wake
        if wake is not None:
            wake()

    def connect(self) -> None:
        """Start keeping every host connected (in the background)."""
        self.fleet.start()

    def close(self) -> None:
        self.fleet.close()

    def host_read_only(self, qualified: str) -> bool:
        host = self.hosts.get(qualified.partition(SEP)[0])
        view = self.source.views.get(host.name) if host else None
        remote = bool(view and view.facts.get("read_only"))
        return self.read_only or bool(host and host.read_only) or remote

    def _refuse(self, op: str, qualified: str) -> None:
        host, name = split(qualified)
        if self.read_only:
            raise ReadOnlyError(f"{op} refused: {READ_ONLY_CONSOLE}", name or None)
        if self.host_read_only(qualified):
            raise ReadOnlyError(f"{op} refused: host '{host}' is read-only", name or None)

    def _call(self, op: str, qualified: str, **args: Any) -> Any:
        host, name = split(qualified)
        try:
            return self.fleet.client(host).call(op, name=name, **args)
        except VstuiError as exc:
            if exc.host is None:
                exc.host = host
            raise

    def available(self, dotted: str) -> bool:
        return dotted in ("engine.observe", "engine.audit", "engine.config")

    def snapshot_source(self) -> FleetSource:
        return self.source

    # -- reading -------------------------------------------------------
    def list_guests(self) -> list[str]:
        snap = self.source.snapshot()
        return [g.name for g in snap.guests if split(g.name)[1]]

    def load_config(self, qualified: str) -> Any:
        host, name = split(qualified)
        return self.fleet.client(host).load_config(name)

    def host_link(self, qualified: str) -> str:
        return ""  # a link is named on its own host: the detail screen leaves it out

    def restart_pending(self, qualified: str, cfg: Any) -> tuple[str, ...]:
        return ()  # the agent does not report it (yet)

    def log_tail(self, qualified: str, lines: int = 200) -> list[str]:
        return list(self._call("log_tail", qualified, lines=lines))

    def log_since(
        self, qualified: str, offset: int, lines: int = 200
    ) -> tuple[int, list[str], bool]:
        new, text, reset = self._call("log_since", qualified, offset=offset, lines=lines)
        return int(new), [str(x) for x in text], bool(reset)

    def audit(self) -> list[Finding]:
        """Every connected host's findings (in parallel), guests named HOST/NAME."""
        results: dict[str, list[Finding]] = {}

        def one(host: str) -> None:
            try:
                found = self.fleet.client(host).call("audit", timeout=300)
                results[host] = [_finding(host, f) for f in found]
            except VstuiError as exc:
                results[host] = [Finding("unread", f"not checked: host {host} ({exc.message})",
                                         "", qualify(host, ""))]  # fmt: skip

        threads = [threading.Thread(target=one, args=(h,)) for h in self.hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [f for h in self.hosts for f in results.get(h, [])]

    # -- changing ------------------------------------------------------
    def start(self, qualified: str) -> None:
        self._refuse("start", qualified)
        self._call("start", qualified)

    def stop(self, qualified: str) -> None:
        self._refuse("stop", qualified)
        self._call("stop", qualified)

    def restart(self, qualified: str) -> None:
        self._refuse("restart", qualified)
        self._call("restart", qualified)

    def delete(self, qualified: str, force: bool = False) -> None:
        self._refuse("delete", qualified)
        self._call("delete", qualified, force=force)

    def build(self, qualified: str, template: str = "skeleton", hostname: str | None = None,
              addresses: Any = (), options: Any = None) -> Any:  # fmt: skip
        self._refuse("build", qualified)
        args = ["build", "-t", template] + (["--hostname", hostname] if hostname else [])
        for address in addresses:
            args += ["--ip", address]
        for key, value in (options or {}).items():
            args += ["--set", f"{key}={value}"]
        return self._cli(qualified, args)

    def kill(self, pid: int, starttime: int, sig: int = _signal.SIGTERM, guest: str = "") -> None:
        self._refuse("kill", guest)
        host, name = split(guest)
        try:
            self.fleet.client(host).call("kill", pid=pid, starttime=starttime, sig=int(sig),
                                         guest=name)  # fmt: skip
        except VstuiError as exc:
            exc.host = exc.host or host
            raise

    def save_config(self, qualified: str, changes: dict[str, str | None]) -> SaveResult:
        self._refuse("save_config", qualified)
        return _saved(self._call("save_config", qualified, changes=dict(changes)))

    def apply_limits(self, qualified: str) -> SaveResult:
        self._refuse("apply_limits", qualified)
        return _saved(self._call("apply_limits", qualified))

    def enter_argv(self, qualified: str) -> list[str]:
        """``ssh -t HOST vserver NAME enter`` (the host's multiplexed connection)."""
        self._refuse("enter", qualified)
        host, name = split(qualified)
        target = self.hosts[host]
        if target.local:
            return [sys.executable, "-m", "vstui.cli.vserver", "--root", target.root, name, "enter"]
        return ssh.command_argv(target, target.vserver_command(name, "enter"), tty=True)

    def exec_argv(self, qualified: str, command: str) -> list[str]:
        """``vserver --host HOST NAME exec /bin/sh -c COMMAND``: through the agent, streamed."""
        self._refuse("exec", qualified)
        host, name = split(qualified)
        return [sys.executable, "-m", "vstui.cli.vserver", "--host", host, name, "exec",
                "/bin/sh", "-c", command]  # fmt: skip

    # -- not routed to other hosts (yet): a plain refusal naming the command ------
    def _not_routed(self, qualified: str, *words: str) -> VstuiError:
        host, name = split(qualified)
        command = " ".join(["vserver", "--host", host, name, *words])
        return VstuiError(f"{words[0]} of a guest on another host is not in the console yet: "
                          f"run {command}", name or None)  # fmt: skip

    def freeze(self, qualified: str) -> None:
        raise self._not_routed(qualified, "freeze")

    def thaw(self, qualified: str) -> None:
        raise self._not_routed(qualified, "thaw")

    def clone(self, qualified: str, target: str, *args: Any) -> Any:
        raise self._not_routed(qualified, "clone", target)

    def snapshots(self, qualified: str) -> list[Any]:
        raise self._not_routed(qualified, "snapshot", "list")

    def snapshot_create(self, qualified: str, snap: str | None = None) -> Any:
        raise self._not_routed(qualified, "snapshot", "create")

    def snapshot_restore(self, qualified: str, snap: str) -> None:
        raise self._not_routed(qualified, "snapshot", "restore", snap)

    def snapshot_delete(self, qualified: str, snap: str) -> None:
        raise self._not_routed(qualified, "snapshot", "delete", snap)

    def _cli(self, qualified: str, args: list[str]) -> Any:
        import subprocess

        host, name = split(qualified)
        argv = [sys.executable, "-m", "vstui.cli.vserver", "--host", host, name, *args]
        done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy(),
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise HostError(visible(last), host, name)
        return done.stdout


def _finding(host: str, wire: dict[str, Any]) -> Finding:
    guest = wire.get("guest")
    return Finding(str(wire.get("severity", "info")), visible(str(wire.get("title", ""))),
                   visible(str(wire.get("fix", ""))),
                   qualify(host, guest or ""), visible(str(wire.get("why", ""))))  # fmt: skip


def _saved(wire: dict[str, Any]) -> SaveResult:
    return SaveResult(str(wire["name"]), tuple(wire.get("changed", ())),
                      tuple(wire.get("applied", ())), tuple(wire.get("needs_restart", ())),
                      tuple(wire.get("errors", ())))  # fmt: skip


class RemoteLogTail:
    """A guest's console log on its host, followed by offset through the agent.

    ``read_new`` never waits for the network: it returns what the last fetch
    brought and starts the next one in a thread (the detail screen calls it
    on every snapshot, on the UI thread).
    """

    def __init__(self, engine: FleetEngine, guest: str) -> None:
        self.engine, self.guest = engine, guest
        self.path = f"the console log of {guest}"
        self._offset = 0
        self._generation = 0  # a fetch for an older offset is dropped
        self._arrived: list[tuple[list[str], bool]] = []
        self._busy = False
        self._lock = threading.Lock()

    @property
    def offset(self) -> int:
        return self._offset

    @offset.setter
    def offset(self, value: int) -> None:
        with self._lock:
            self._offset, self._arrived = value, []
            self._generation += 1

    def exists(self) -> bool:
        return True  # the agent answers an empty log when there is none

    def wants_first(self) -> bool:
        return False  # the first fetch (offset 0) brings the last lines itself

    def read_new(self, first: list[str]) -> tuple[list[str], bool]:
        with self._lock:
            arrived, self._arrived = self._arrived, []
            start = not self._busy
            self._busy = True
            offset, generation = self._offset, self._generation
        if start:
            threading.Thread(target=self._fetch, args=(offset, generation), daemon=True).start()
        lines: list[str] = []
        reset = False
        for new, was_reset in arrived:
            lines = list(new) if was_reset else lines + list(new)
            reset = reset or was_reset
        return [visible(x) for x in lines], reset

    def _fetch(self, offset: int, generation: int) -> None:
        try:
            new, lines, reset = self.engine.log_since(self.guest, offset)
        except VstuiError as exc:
            new, lines, reset = offset, [f"(cannot read the log: {exc.message})"], False
        with self._lock:
            self._busy = False
            if generation == self._generation:
                self._offset = new
                self._arrived.append((lines, reset))
