"""Handmade snapshots and a recording engine for the console's tests.

The fixed source is what Pilot and snapshot tests (and the screenshots
script) run on; the end-to-end test uses the real engine instead.
"""

from __future__ import annotations

import importlib
import types
from dataclasses import dataclass, field, replace

from engine.datamodel import (
    HOST_NAME,
    Gauge,
    GuestStatus,
    NetStats,
    ProcRow,
    Snapshot,
)
from engine.facade import Engine
from engine.paths import Paths

GIB = 1 << 30
MIB = 1 << 20


def guest(name: str, xid: int, state: str = "running", **kw) -> GuestStatus:
    running = state == "running"
    base = dict(
        name=name, xid=xid, state=state, init_pid=1000 + xid if running else None,
        addresses=(f"198.18.0.{xid % 250}/24",), flags=("lock", "nproc"), nproc=4 if running else 0,
        cpu_percent=2.5 if running else 0.0,
        memory=Gauge(120 * MIB if running else 0, 256 * MIB), pids=Gauge(4, 500),
        disk=Gauge(600 * MIB, 2 * GIB), inodes=Gauge(9000, 100000),
        net=NetStats(10_000, 5_000, 10, 5, 0, 0, 1500.0, 800.0) if running else None,
        bandwidth_out=10_000_000, bandwidth_in=None, uptime=3725.0 if running else None,
        idmap=(524288 + 65536 * (xid % 100), 65536), userns=True,
    )  # fmt: skip
    base.update(kw)
    return GuestStatus(**base)


def host() -> GuestStatus:
    return GuestStatus(
        name=HOST_NAME, xid=0, state="running", init_pid=1, addresses=(), flags=(), nproc=120,
        cpu_percent=7.0, memory=Gauge(3 * GIB, 24 * GIB), pids=Gauge(120, None),
        disk=Gauge(None, None), inodes=Gauge(), net=None, bandwidth_out=None, bandwidth_in=None,
        uptime=86400.0 * 3,
    )  # fmt: skip


def proc(pid: int, ppid: int, guest_name: str, xid: int, cmd: str, **kw) -> ProcRow:
    base = dict(
        pid=pid, ppid=ppid, starttime=100 + pid, xid=xid, guest=guest_name,
        nspid=pid % 1000 or 1, uid=0, user="root", state="S", nice=0, threads=1,
        vsz=10 * MIB, rss=2 * MIB + pid * 4096, utime=10, stime=5, cutime=0, cstime=0,
        cpu_percent=0.0, tty="?", comm=cmd.split()[0].rsplit("/", 1)[-1], cmdline=cmd,
    )  # fmt: skip
    base.update(kw)
    return ProcRow(**base)


def small_snapshot() -> Snapshot:
    """Host plus web (running), db (running), mail (stopped); a dozen processes."""
    guests = (
        host(),
        guest("web", 101),
        guest("db", 102, cpu_percent=35.0, memory=Gauge(230 * MIB, 256 * MIB)),
        guest("mail", 103, state="stopped"),
    )
    procs = (
        proc(1, 0, HOST_NAME, 0, "/sbin/init"),
        proc(400, 1, HOST_NAME, 0, "/usr/sbin/sshd -D"),
        proc(401, 400, HOST_NAME, 0, "sshd: root@pts/0"),
        proc(1101, 1, "web", 101, "vinit /bin/sh /etc/rc.local", nspid=1),
        proc(1102, 1101, "web", 101, "/bin/sh -c while :; do sleep 1; done", nspid=2),
        proc(1103, 1102, "web", 101, "sleep 1", nspid=3, state="S"),
        proc(1104, 1101, "web", 101, "httpd -f", nspid=4, cpu_percent=4.0, user="www-data"),
        proc(1201, 1, "db", 102, "vinit /bin/sh /etc/rc.local", nspid=1),
        proc(
            1202,
            1201,
            "db",
            102,
            "postgres -D /var/lib/pg",
            nspid=2,
            cpu_percent=30.5,
            state="R",
            rss=180 * MIB,
            user="postgres",
        ),  # fmt: skip
        proc(1203, 1202, "db", 102, "postgres: writer", nspid=3, cpu_percent=3.0),
    )
    return Snapshot(taken=1000.0, wall=1_700_000_000.0, guests=guests, procs=procs, ncpu=2)


def big_snapshot(nprocs: int = 10_000, nguests: int = 50, tick: int = 0) -> Snapshot:
    """Many guests and processes; ``tick`` varies a few values like a live host."""
    guests = [host()] + [guest(f"g{i:02d}", 100 + i) for i in range(nguests)]
    procs = []
    for i in range(nprocs):
        g = guests[1 + i % nguests]
        pid = 10_000 + i
        ppid = 1 if i < nguests else 10_000 + (i % nguests)
        busy = (i * 7 + tick) % 97 == 0
        row = proc(pid, ppid, g.name, g.xid, f"/usr/bin/worker --id {i}",
                   cpu_percent=12.0 if busy else 0.0, state="R" if busy else "S")  # fmt: skip
        procs.append(row)
    return Snapshot(taken=1000.0 + tick, wall=1_700_000_000.0 + tick, guests=tuple(guests),
                    procs=tuple(procs), ncpu=2)  # fmt: skip


class FixedSource:
    """Returns the snapshots it was given, the last one forever."""

    def __init__(self, *snaps: Snapshot) -> None:
        self.snaps = list(snaps)
        self.calls = 0

    def snapshot(self) -> Snapshot:
        self.calls += 1
        snap = self.snaps[0] if len(self.snaps) == 1 else self.snaps.pop(0)
        return snap


@dataclass
class FakeConfig:
    """Just enough of engine.config.GuestConfig for the editor and detail screens."""

    name: str
    hostname: str = ""
    template: str = "skeleton"
    netmode: str = "veth"
    flags: frozenset[str] = frozenset({"lock"})
    caps: tuple[str, ...] = ("NET_RAW",)
    memory: int | None = 256 * MIB
    pids: int | None = 500
    cpu_weight: int | None = None
    cpu_quota: float | None = 50.0
    disk: int | None = 2 * GIB
    bandwidth_out: int | None = 10_000_000
    bandwidth_in: int | None = None
    nice: int | None = None

    def effective_caps(self) -> frozenset[str]:
        from engine.caps import effective_set

        return effective_set(self.caps)

    def pids_limit(self) -> int | None:
        return self.pids


@dataclass
class Recorder:
    """Stands in for the engine's parts: records calls, changes nothing."""

    calls: list[tuple] = field(default_factory=list)
    configs: dict[str, FakeConfig] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # parts to report as not built
    snapshots: dict[str, list] = field(default_factory=dict)  # guest -> Snapshot records

    def module(self, dotted: str) -> types.SimpleNamespace:
        rec = self
        if dotted in self.missing:
            raise ModuleNotFoundError(dotted, name=dotted)
        if dotted == "engine.procs.signals":  # real signals, real re-checks
            return importlib.import_module(dotted)
        if dotted == "engine.audit":
            return types.SimpleNamespace(run_audit=lambda paths: fixed_audit_report())

        def record(op):
            return lambda *a, **k: rec.calls.append((dotted, op, a[1:] if a else (), k))

        if dotted == "engine.config":

            def update_config(paths, name, changes):
                rec.calls.append((dotted, "update_config", (name, changes), {}))
                return rec.configs.setdefault(name, FakeConfig(name))

            return types.SimpleNamespace(
                load_guest=lambda paths, name: rec.configs.setdefault(name, FakeConfig(name)),
                list_guests=lambda paths: sorted(rec.configs),
                update_config=update_config,
            )
        if dotted == "engine.runtime":
            return types.SimpleNamespace(
                start=record("start"), stop=record("stop"), restart=record("restart"),
                delete=record("delete"), is_running=lambda paths, name: True,
                refresh_meminfo=record("refresh_meminfo"),
            )  # fmt: skip
        if dotted == "engine.rootfs":
            return types.SimpleNamespace(build=record("build"), delete=record("delete"),
                                         set_quota=record("set_quota"))  # fmt: skip
        if dotted == "engine.cgroups":
            mgr = types.SimpleNamespace(apply=record("apply"))
            return types.SimpleNamespace(Limits=lambda **k: k, manager=lambda: mgr)
        if dotted == "engine.net":
            return types.SimpleNamespace(set_bandwidth=record("set_bandwidth"))
        if dotted == "engine.runtime.freezing":
            return types.SimpleNamespace(freeze=record("freeze"), thaw=record("thaw"))
        if dotted == "engine.rootfs.snapshots":
            return types.SimpleNamespace(
                list_snapshots=lambda paths, name: list(rec.snapshots.get(name, ())),
                create=record("snapshot_create"), restore=record("snapshot_restore"),
                delete=record("snapshot_delete"),
            )  # fmt: skip
        if dotted == "engine.rootfs.clone":
            return types.SimpleNamespace(clone=record("clone"))
        raise ModuleNotFoundError(dotted, name=dotted)

    def ops(self) -> list[str]:
        return [op for _mod, op, _a, _k in self.calls]


class RecordingEngine(Engine):
    """The real facade (its read-only gate included) over recorded parts."""

    def __init__(self, paths: Paths, read_only: bool = False) -> None:
        super().__init__(paths, read_only)
        self.recorder = Recorder()
        self.exec_command: list[str] | None = None

    def _mod(self, dotted: str):
        try:
            return self.recorder.module(dotted)
        except ModuleNotFoundError as exc:
            from engine.errors import VstuiError

            raise VstuiError(f"{dotted} is not available in this build") from exc

    def host_link(self, name: str) -> str:
        return f"vs-{name}"  # the default root's name (a test root's id varies)

    def exec_argv(self, name: str, command: str) -> list[str]:
        argv = super().exec_argv(name, command)
        self.exec_command = argv
        return ["/bin/sh", "-c", command]  # run on the host: the test checks the streaming


def fixed_audit_report():
    """A handmade report in engine.audit's own types."""
    from engine.audit.model import AuditReport, Finding, Unreadable

    return AuditReport(
        findings=(
            Finding("barrier", "high", None, "/vservers is mode 0755, not 000",
                    "a guest's root can walk into another guest's tree",
                    "chmod 000 /vservers"),
            Finding("caps-sys-admin", "high", "web", "web keeps CAP_SYS_ADMIN",
                    "SYS_ADMIN is almost root on the host",
                    "remove CAP_SYS_ADMIN from S_CAPS in /etc/vserver/web.conf"),
            Finding("no-memory-limit", "medium", "db", "db has no memory limit",
                    "one guest can starve the host",
                    "set V_MEMORY=512M in /etc/vserver/db.conf"),
            Finding("onboot", "info", "mail", "mail is not started at boot", "", "set ONBOOT=yes"),
        ),
        unreadable=(Unreadable("/proc/sys/kernel/kptr_restrict", "permission denied"),),
    )  # fmt: skip


def tick(snap: Snapshot, n: int) -> Snapshot:
    """A copy of ``snap`` with a different time (to exercise updates)."""
    return replace(snap, taken=snap.taken + n, wall=snap.wall + n)
