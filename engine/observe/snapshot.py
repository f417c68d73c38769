"""Periodic snapshots for the console: guests, their stats and their processes.

``Observer`` keeps what is needed between samples (the process table's cache
and previous CPU ticks, previous network counters, disk usage that is only
re-measured every ``DISK_EVERY`` seconds). Every optional part (cgroups,
storage, network, configuration) is imported lazily and guarded: when it is
not there, or fails, the guest's ``missing`` says so in plain words and the
value stays unknown. Numbers are never made up.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path
from typing import Any

from engine import hoststats
from engine._filekey import DirKey, FileKey, dir_key, file_key
from engine.datamodel import (
    HOST_NAME,
    HOST_XID,
    Gauge,
    GuestStatus,
    NetStats,
    ProcRow,
    Snapshot,
    with_rates,
    with_uptime,
)
from engine.paths import Paths
from engine.procfs import KeptFile
from engine.procs.attribution import (
    UNKNOWN_XID,
    RunInfo,
    RunStates,
    all_guests,
    config_or_error,
)
from engine.procs.collect import ProcessTable
from engine.procs.scan import live_procfs, pid_max
from engine.text import visible

# seconds between two readings of a guest's disk use: every backend's reading is
# cheap (statvfs, sysfs, a cache file); a `none` tree is walked in the background
DISK_EVERY = 2.0
# seconds between two readings of a guest's memory and process limits (they change
# only when an administrator changes them; the use is read at every snapshot)
LIMITS_EVERY = 5.0


def _optional(module: str) -> Any | None:
    """Import an optional engine part; None if it is not there (yet)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


class Observer:
    """Takes snapshots again and again; CPU% and net rates are since the last."""

    def __init__(
        self,
        paths: Paths,
        proc_root: str | os.PathLike[str] = "/proc",
        cgroup_fs: Path | None = None,
    ) -> None:
        self.paths = paths
        self.proc_root = os.fspath(proc_root)
        self.table = ProcessTable(paths, proc_root, cgroup_fs)
        self.runs = RunStates(paths, self.proc_root)
        self._config_dir = os.fspath(paths.config_dir)  # names come from all_guests: checked
        self._prev_net: dict[str, tuple[float, NetStats]] = {}
        self._disk: dict[str, tuple[float, Gauge, Gauge, str | None]] = {}
        self._limits: dict[str, tuple[float, int | None, int | None]] = {}  # name -> (when, ...)
        self._memory: dict[str, tuple[float, tuple[ProcRow, ...], int | None]] = {}
        # name -> (when measured, (run, frozen, net), config, rows, status): see _guest
        self._carried: dict[str, tuple[float, tuple, object, tuple[ProcRow, ...], GuestStatus]] = {}
        # name -> (stat key of NAME.conf, config or None, why it could not be loaded)
        self._configs: dict[str, tuple[FileKey | None, object | None, str | None]] = {}
        # name -> (config, addresses, flags): see _shown_config
        self._shown: dict[str, tuple[object | None, tuple[str, ...], tuple[str, ...]]] = {}
        self._idblocks: tuple[FileKey | None, dict[str, int]] | None = None
        self._run_base = os.fspath(paths.run_base)
        self._listed: tuple[list[DirKey | None], list[str]] | None = None  # see _names
        self.ncpu = os.cpu_count() or 1
        # False while the caller shows no kernel thread: each is read once in
        # KERNEL_EVERY snapshots and keeps its CPU% in between (ProcessTable.refresh)
        self.kernel_threads = True
        self._pid_limit: tuple[float, int] | None = None  # (when read, pid_max)
        # the host's memory and links, read every second through kept descriptors
        live = live_procfs(self.proc_root)
        self._meminfo = KeptFile(os.path.join(self.proc_root, "meminfo")) if live else None
        self._net_dev_file = KeptFile(os.path.join(self.proc_root, "net/dev")) if live else None

    # ------------------------------------------------------------ public
    def snapshot(self) -> Snapshot:
        errors: list[str] = []
        names = self._names()
        seen = self.table.last_scan
        runs = {name: self.runs.read(name, seen) for name in names}
        active = [info for info in runs.values() if info.active]
        table = self.table.refresh(active, self.kernel_threads)
        errors.extend(table.attribution.errors)
        by_guest: dict[str, list[ProcRow]] = {}
        for row in table.rows:
            by_guest.setdefault(row.guest, []).append(row)
        net_dev = self._net_dev()  # one read for the host's totals and the guests' veths
        net = self._net_counters([i.name for i in active], table.taken, errors, net_dev[0])
        guests = [self._host(by_guest.get(HOST_NAME, []), table.taken, names, net_dev)]
        for name in names:
            guests.append(
                self._guest(runs[name], by_guest.get(name, []), net, table.wall, table.taken)
            )
            why = self._configs.get(name, (None, None, None))[2]
            if why:  # one line per broken NAME.conf; the other guests go on
                errors.append(f"{name}: configuration skipped: {why}")
        if len(self._memory) > len(names):  # deleted guests: forget what was kept for them
            for cache in (self._memory, self._limits, self._disk, self._configs, self._carried,
                          self._shown):  # fmt: skip
                for gone in cache.keys() - set(names):
                    del cache[gone]
        return Snapshot(
            taken=table.taken,
            wall=table.wall,
            guests=tuple(guests),
            procs=table.rows,
            ncpu=self.ncpu,
            errors=tuple(map(visible, errors)),  # they quote paths and messages
        )

    def _names(self) -> list[str]:
        """all_guests, listed again only when the configuration or run directory
        changed (a NAME.conf or a run directory comes or goes), or changed too
        recently to tell (engine._filekey.dir_key)."""
        stamps = [dir_key(folder) for folder in (self._config_dir, self._run_base)]
        key = [stamp[0] if stamp else None for stamp in stamps]
        if self._listed is not None and self._listed[0] == key:
            return self._listed[1]
        names = all_guests(self.paths)
        if all(stamp[1] for stamp in stamps if stamp):
            self._listed = (key, names)
        return names

    # ------------------------------------------------------------ host
    def _host(
        self, rows: list[ProcRow], taken: float, names: list[str],
        net_dev: tuple[str | None, str],
    ) -> GuestStatus:  # fmt: skip
        missing: list[str] = []
        memory, uptime = Gauge(), None
        try:
            memory = Gauge(*hoststats.memory(self.proc_root, self._meminfo))
            uptime = hoststats.uptime(self.proc_root)
        except (OSError, RuntimeError) as exc:
            missing.append(f"memory: {exc}")
        disk = inodes = Gauge()
        try:
            used, total, inodes_used, inodes_total = hoststats.disk(os.fspath(self.paths.root))
            disk, inodes = Gauge(used, total), Gauge(inodes_used, inodes_total)
        except OSError as exc:
            missing.append(f"disk: {exc}")
        net = self._host_net(taken, missing, names, net_dev)
        return GuestStatus(
            name=HOST_NAME,
            xid=HOST_XID,
            state="running",
            init_pid=1,
            addresses=(),
            flags=(),
            nproc=len(rows),
            cpu_percent=sum(r.cpu_percent for r in rows),
            memory=memory,
            pids=Gauge(sum(r.threads for r in rows), self._pid_max(taken)),
            disk=disk,
            inodes=inodes,
            net=net,
            bandwidth_out=None,
            bandwidth_in=None,
            uptime=uptime,
            missing=tuple(missing),
        )

    def _pid_max(self, taken: float) -> int:
        """The kernel's PID limit (the host's pids gauge), read again every
        LIMITS_EVERY seconds: a sysctl, set at boot if ever."""
        kept = self._pid_limit
        if kept is None or taken - kept[0] >= LIMITS_EVERY:
            kept = self._pid_limit = (taken, pid_max(self.proc_root))
        return kept[1]

    def _net_dev(self) -> tuple[str | None, str]:
        """The host's /proc/net/dev, or None and why it could not be read."""
        from engine.net.counters import read_net_dev

        try:
            return read_net_dev(self.proc_root, self._net_dev_file), ""
        except OSError as exc:
            return None, str(exc)

    def _host_net(
        self, taken: float, missing: list[str], names: list[str], net_dev: tuple[str | None, str]
    ) -> NetStats | None:
        """Totals of the host's network namespace from /proc/net/dev, without
        loopback and without the guests' own links (their veth host ends and
        ingress ifbs): a guest's traffic is its row's, not the host's too."""
        from engine.net.counters import parse_net_dev

        text, why = net_dev
        if text is None:
            missing.append(f"net: {why}")
            return None
        links = {"lo"}
        for name in names:
            links.update((self.paths.link_name(name), self.paths.link_name(name, kind="ifb")))
        return self._rated(HOST_NAME, parse_net_dev(text, None, exclude=links), taken)

    def _rated(self, key: str, now: NetStats, taken: float) -> NetStats:
        prev = self._prev_net.get(key)
        self._prev_net[key] = (taken, now)
        if prev is None or taken <= prev[0]:
            return now
        dt = taken - prev[0]
        return with_rates(
            now,
            max(now.rx_bytes - prev[1].rx_bytes, 0) / dt,
            max(now.tx_bytes - prev[1].tx_bytes, 0) / dt,
        )

    # ------------------------------------------------------------ guests
    def _net_counters(
        self, names: list[str], taken: float, errors: list[str], net_dev: str | None = None
    ) -> dict[str, NetStats] | None:
        """engine.net.counters for the running guests; None if unavailable."""
        if not names:
            return {}
        net = _optional("engine.net")
        if net is None or not hasattr(net, "counters"):
            return None
        try:
            raw = net.counters(self.paths, names, net_dev)
        except Exception as exc:  # the console must keep running
            errors.append(f"net counters: {exc}")
            return None
        return {name: self._rated(name, stats, taken) for name, stats in raw.items()}

    def _guest(
        self,
        run: RunInfo,
        rows: list[ProcRow],
        net: dict[str, NetStats] | None,
        wall: float,
        taken: float,
    ) -> GuestStatus:
        """The guest's status; carried over from the last snapshot (its uptime
        moved on) when nothing it is made of changed: the same run state and
        config, the very process rows of then (none ran, came or went), the
        same traffic, within LIMITS_EVERY seconds. At hundreds of idle guests
        that is most of the console's work per second otherwise."""
        cfg = self._config(run.name)
        mark = (run, self.runs.was_frozen(run.name), net is None, net and net.get(run.name))
        last = self._carried.get(run.name)
        if (
            last is not None
            and taken - last[0] < LIMITS_EVERY
            and last[1] == mark
            and last[2] is cfg
            and len(last[3]) == len(rows)
            and all(a is b for a, b in zip(last[3], rows, strict=True))
        ):
            return _with_uptime(last[4], _uptime(run, wall))
        status = self._measure(run, cfg, rows, net, wall, taken)
        self._carried[run.name] = (taken, mark, cfg, tuple(rows), status)
        return status

    def _measure(
        self,
        run: RunInfo,
        cfg: object | None,
        rows: list[ProcRow],
        net: dict[str, NetStats] | None,
        wall: float,
        taken: float,
    ) -> GuestStatus:
        missing: list[str] = []
        if cfg is None:
            missing.append("config: configuration part not available or config unreadable")
        running = run.active
        memory, pids = self._cgroup_gauges(run.name, running, rows, taken, missing)
        disk, inodes = self._disk_gauges(run.name, cfg, taken, missing)
        guest_net: NetStats | None = None
        if running and getattr(cfg, "netmode", None) != "host":
            if net is None:
                missing.append("net: network part not available")
            else:
                guest_net = net.get(run.name)
        xid = run.xid if run.xid is not None else getattr(cfg, "context", None)
        addresses, flags = self._shown_config(run.name, cfg)
        return GuestStatus(
            name=run.name,
            xid=xid if xid is not None else UNKNOWN_XID,
            state=self._state(run, running),
            init_pid=run.init_pid if running else None,
            addresses=addresses,
            flags=flags,
            nproc=len(rows),
            cpu_percent=sum(r.cpu_percent for r in rows),
            memory=memory,
            pids=pids,
            disk=disk,
            inodes=inodes,
            net=guest_net,
            bandwidth_out=getattr(cfg, "bandwidth_out", None),
            bandwidth_in=getattr(cfg, "bandwidth_in", None),
            uptime=_uptime(run, wall),
            missing=tuple(missing),
            idmap=self._idmap(run.name, running, cfg),
            userns=getattr(cfg, "userns", None),
        )

    def _shown_config(
        self, name: str, cfg: object | None
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(addresses, flags) of a guest's configuration as shown, made again only
        for a new parse of it (_config keeps the parsed object while NAME.conf
        is unchanged)."""
        kept = self._shown.get(name)
        if kept is None or kept[0] is not cfg:
            addresses = tuple(str(a.interface) for a in getattr(cfg, "addresses", ()))
            kept = self._shown[name] = (cfg, addresses, tuple(sorted(getattr(cfg, "flags", ()))))
        return kept[1], kept[2]

    def _idmap(self, name: str, running: bool, cfg: Any) -> tuple[int, int] | None:
        """A running guest's id block from its init (the scan read it); a stopped one's
        as recorded."""
        if running:
            ids = self.table.ids_of(name)
            return (ids.base, ids.count) if ids is not None else None
        if not getattr(cfg, "userns", False):
            return None
        from engine.runtime import idmap

        block = self._blocks().get(name)
        return None if block is None else (block * idmap.BLOCK, idmap.BLOCK)

    def _blocks(self) -> dict[str, int]:
        """idmap.recorded, read again only when its table changed (it is replaced
        by rename at every change): a stopped guest's measure read the whole
        table, every guest's, so N stopped guests cost N² a few seconds apart."""
        from engine.runtime import idmap

        key = file_key(idmap.table_path(self.paths))
        if key is None or self._idblocks is None or self._idblocks[0] != key:
            self._idblocks = (key, idmap.recorded(self.paths))
        return self._idblocks[1]

    def _state(self, run: Any, running: bool) -> str:
        """The run state; ``frozen`` for a running guest with run_dir/frozen (no cgroup read)."""
        if running and self.runs.was_frozen(run.name):
            return "frozen"
        return run.state if run.state else "unknown"

    def _config(self, name: str) -> object | None:
        """load_config, parsed again only when NAME.conf changed (it is read
        for every guest every second otherwise)."""
        key = file_key(os.path.join(self._config_dir, name + ".conf"))
        hit = self._configs.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        cfg, why = config_or_error(self.paths, name)
        self._configs[name] = (key, cfg, why)
        return cfg

    def _cgroup_gauges(
        self, name: str, running: bool, rows: list[ProcRow], taken: float, missing: list[str]
    ) -> tuple[Gauge, Gauge]:
        """Memory used, tasks counted from the guest's rows (the cgroup's pids.current),
        limits read again every LIMITS_EVERY seconds."""
        if not running:
            return Gauge(), Gauge()
        cgroups = _optional("engine.cgroups")
        if cgroups is None:
            missing.append("memory, pids: cgroups part not available")
            return Gauge(), Gauge()
        try:
            cg, rel = cgroups.manager(), self.paths.cgroup_name(name)
            used = self._memory_used(cg, rel, name, rows, taken)
            cached = self._limits.get(name)
            if cached is None or taken - cached[0] >= LIMITS_EVERY:
                cached = self._limits[name] = (taken, *cg.limit_gauges(rel))
        except Exception as exc:
            missing.append(f"memory, pids: {exc}")
            return Gauge(), Gauge()
        return Gauge(used, cached[1]), Gauge(sum(r.threads for r in rows), cached[2])

    def _memory_used(
        self, cg: Any, rel: str, name: str, rows: list[ProcRow], taken: float
    ) -> int | None:
        """The guest's memory use: read again when one of its processes ran, came or
        went (its rows are not the very objects of the last snapshot), else at least
        every LIMITS_EVERY seconds (what changes it without its processes running,
        the host reclaiming its page cache or socket buffers filling, is slow)."""
        last = self._memory.get(name)
        if (
            last is not None
            and taken - last[0] < LIMITS_EVERY
            and len(last[1]) == len(rows)
            and all(a is b for a, b in zip(last[1], rows, strict=True))
        ):
            return last[2]
        used = cg.memory_used(rel)
        self._memory[name] = (taken, tuple(rows), used)
        return used

    def _disk_gauges(
        self, name: str, cfg: object | None, taken: float, missing: list[str]
    ) -> tuple[Gauge, Gauge]:
        cached = self._disk.get(name)
        if cached is not None and taken - cached[0] < DISK_EVERY:
            if cached[3]:
                missing.append(cached[3])
            return cached[1], cached[2]
        disk, inodes, why = Gauge(), Gauge(), None
        rootfs = _optional("engine.rootfs")
        if rootfs is None or not hasattr(rootfs, "usage"):
            why = "disk: storage part not available"
        elif cfg is None:
            why = "disk: no configuration to measure"
        else:
            try:
                use = rootfs.usage(cfg, self.paths)
                disk = Gauge(use.bytes_used, use.bytes_limit)
                inodes = Gauge(use.inodes_used, use.inodes_limit)
                du = _optional("engine.rootfs.du")
                if getattr(cfg, "disk_backend", "none") == "none" and du is not None:
                    # a walk, in its own thread, when usage found none or an old one
                    # (refresh_async would read the cache file usage just read again)
                    if use.measured is None or time.time() - use.measured >= du.STALE_AFTER:
                        du.refresh_async(self.paths, name)
                    why = None if use.bytes_used is not None else "disk: being measured"
            except Exception as exc:
                why = f"disk: {exc}"
        self._disk[name] = (taken, disk, inodes, why)
        if why:
            missing.append(why)
        return disk, inodes


def _uptime(run: RunInfo, wall: float) -> float | None:
    return max(wall - run.started, 0.0) if run.active and run.started else None


def _with_uptime(status: GuestStatus, uptime: float | None) -> GuestStatus:
    return status if uptime == status.uptime else with_uptime(status, uptime)


def snapshot(paths: Paths | None = None) -> Snapshot:
    """One snapshot (CPU% and rates are 0.0: there is no previous sample)."""
    return Observer(paths if paths is not None else Paths.from_root()).snapshot()


class _CallableModule(types.ModuleType):
    """``engine.observe.snapshot(paths)`` works even when this module object,
    not the function, is what ``engine.observe.snapshot`` names."""

    def __call__(self, paths: Paths | None = None) -> Snapshot:
        return snapshot(paths)


sys.modules[__name__].__class__ = _CallableModule
