"""One object for every operation the console uses, with a read-only mode.

``Engine(paths, read_only)`` delegates to the engine's parts
(``engine.runtime``, ``engine.rootfs``, ``engine.config``, ``engine.cgroups``,
``engine.net``, ``engine.observe``), imported lazily so that opening the
console does not pay for parts it never uses. In read-only mode every
mutating call raises ``ReadOnlyError`` before it imports or touches anything:
the UI hides those actions, and this is the second, independent gate
(k9s#857: a check that lives only in the UI leaks).

A part that is not in this build raises ``VstuiError`` saying so, never a
traceback and never a made-up result.
"""

from __future__ import annotations

import importlib
import os
import signal as _signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from engine.errors import (
    KernelError,
    ReadOnlyError,
    VstuiError,
    boundary,
)
from engine.paths import Paths, check_name
from engine.procfs import starttime as read_starttime
from engine.text import log_lines

T = TypeVar("T")

# NAME.conf keys whose new value a running guest takes at once, and how.
LIVE_CGROUP_KEYS = frozenset({"V_MEMORY", "V_PIDS", "V_CPU_WEIGHT", "V_CPU_QUOTA", "ULIMIT"})
LIVE_NET_KEYS = frozenset({"V_BANDWIDTH_OUT", "V_BANDWIDTH_IN"})
LIVE_DISK_KEYS = frozenset({"V_DISK"})
LIVE_KEYS = LIVE_CGROUP_KEYS | LIVE_NET_KEYS | LIVE_DISK_KEYS

MUTATING = frozenset(
    {
        "start",
        "stop",
        "restart",
        "build",
        "delete",
        "exec",
        "enter",
        "kill",
        "save_config",
        "apply_limits",
        "freeze",
        "thaw",
        "snapshot_create",
        "snapshot_restore",
        "snapshot_delete",
        "clone",
        "export",
        "vserver",
    }
)
"""Every facade operation that changes the host; refused in read-only mode."""

READ_ONLY_CONSOLE = "the console is read-only (run as root without --read-only)"

# the command-line tools a remote console may run, by module
TOOLS = {
    "vserver": "vstui.cli.vserver",
    "vps": "vstui.cli.vps",
    "vserver-stat": "vstui.cli.vserver_stat",
    "vtop": "vstui.cli.vtop",
    "vkill": "vstui.cli.vkill",
}
# vserver commands that only read (everything else changes the host);
# a command with a second word is only reading with exactly that word
VSERVER_READING = {
    "status": None, "running": None, "config": None, "check": None, "quota": "",
    "--list": None, "snapshot": "list", "--pool": "status",
}  # fmt: skip
VSERVER_PASS_THROUGH = frozenset({"exec", "suexec", "enter"})


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What a configuration save did: applied live, and what waits for a restart."""

    name: str
    changed: tuple[str, ...]
    applied: tuple[str, ...] = ()  # keys the running guest took at once
    needs_restart: tuple[str, ...] = ()  # keys that take effect at the next start
    errors: tuple[str, ...] = ()  # live-apply failures (the file is saved anyway)


@dataclass(frozen=True, slots=True)
class Finding:
    """One audit finding, as the console shows it."""

    severity: str
    title: str
    fix: str = ""
    guest: str | None = None
    why: str = ""


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """The engine's error boundary around one call of the console's door: an
    OSError leaves as a KernelError naming the call, the file and the guest
    (its first argument, or ``guest=``)."""
    import functools

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kw: Any) -> T:
        guest = args[0] if args and isinstance(args[0], str) else kw.get("guest")
        with boundary(method.__name__, guest or None):
            return method(self, *args, **kw)

    return call


@dataclass(slots=True)
class Engine:
    """The console's single door to the engine."""

    paths: Paths
    read_only: bool = False
    read_only_reason: str = READ_ONLY_CONSOLE
    _modules: dict[str, ModuleType] = field(default_factory=dict, repr=False)

    # -- plumbing ------------------------------------------------------
    def _refuse(self, op: str, name: str | None = None) -> None:
        """InvalidName for a bad guest name, then ReadOnlyError for a mutating
        ``op`` in read-only mode: before anything is imported, run or spawned."""
        if name is not None:
            check_name(name)
        if self.read_only and op in MUTATING:
            raise ReadOnlyError(f"{op} refused: {self.read_only_reason}", name)

    def check(self, op: str, name: str | None = None) -> None:
        """The read-only gate alone: ReadOnlyError for a mutating ``op`` (see MUTATING)."""
        self._refuse(op, name)

    def _mod(self, dotted: str) -> ModuleType:
        """Import an engine part on first use; say plainly if it is not built."""
        if dotted not in self._modules:
            try:
                self._modules[dotted] = importlib.import_module(dotted)
            except ModuleNotFoundError as exc:
                if exc.name and not dotted.startswith(exc.name) and exc.name != dotted:
                    raise
                raise VstuiError(f"{dotted} is not available in this build") from exc
        return self._modules[dotted]

    def available(self, dotted: str) -> bool:
        """Whether an engine part can be imported (for 'not available' screens)."""
        try:
            self._mod(dotted)
        except VstuiError:
            return False
        return True

    # -- reading (allowed in read-only mode) ----------------------------
    def snapshot_source(self) -> Any:
        """An ``Observer`` for this root (engine.observe)."""
        return self._mod("engine.observe").Observer(self.paths)

    def list_guests(self) -> list[str]:
        return list(self._mod("engine.config").list_guests(self.paths))

    @_guarded
    def load_config(self, name: str) -> Any:
        return self._mod("engine.config").load_guest(self.paths, name)

    def host_link(self, name: str) -> str:
        """The host end of a veth guest's link, as `ip link` names it."""
        return self.paths.link_name(check_name(name))

    @_guarded
    def restart_pending(self, name: str, cfg: Any) -> tuple[str, ...]:
        """What of ``cfg`` (NAME.conf now) the running guest does not have yet:
        "+CAP_X" / "-CAP_X" capabilities and "+flag" / "-flag" flags, which a
        restart applies; () for a stopped guest or one started before this
        was recorded."""
        from engine.runtime.runfiles import read_applied

        applied = read_applied(self.paths.run_dir(name))
        if applied is None:
            return ()
        caps, flags = applied
        want_caps, want_flags = frozenset(cfg.effective_caps()), frozenset(cfg.flags)
        return (
            *(f"+CAP_{c}" for c in sorted(want_caps - caps)),
            *(f"-CAP_{c}" for c in sorted(caps - want_caps)),
            *(f"+{f}" for f in sorted(want_flags - flags)),
            *(f"-{f}" for f in sorted(flags - want_flags)),
        )

    @_guarded
    def log_tail(self, name: str, lines: int = 200) -> list[str]:
        """The last ``lines`` lines of the guest's console log (empty if none)."""
        return tail_file(self.paths.log_file(name), lines)

    @_guarded
    def log_since(self, name: str, offset: int, lines: int = 200) -> tuple[int, list[str], bool]:
        """Follow the guest's console log: (new offset, new lines, reset).

        ``offset`` 0 (or a log that shrank: rotated) gives its last ``lines``
        lines and reset True; else the lines written after ``offset``.
        """
        path = self.paths.log_file(name)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return 0, [], offset != 0
        except OSError as exc:
            raise KernelError.from_oserror("stat", exc, name) from exc
        if offset == 0 or size < offset:
            return size, tail_file(path, lines), True
        if size == offset:
            return offset, [], False
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(min(size - offset, 1 << 20))
        return offset + len(data), log_lines(data), False

    @_guarded
    def config_text(self, name: str) -> tuple[str, bytes]:
        """NAME.conf's path and bytes, read as load_config reads them (for a remote editor)."""
        config = self._mod("engine.config")
        config.validate_name(name)
        path = self.paths.config_file(name)
        return str(path), config.read_config_bytes(path, self.paths.config_dir, name)

    def audit(self) -> list[Finding]:
        """Findings of engine.audit (worst first), plus what it could not read."""
        report = self._mod("engine.audit").run_audit(self.paths)
        found = [Finding(f.severity, f.title, f.fix, f.guest, f.why) for f in report.findings]
        found += [
            Finding("unread", f"not checked: {u.what} ({u.reason})", "", u.guest)
            for u in report.unreadable
        ]
        return found

    def enter_argv(self, name: str) -> list[str]:
        """The command that opens a login shell in the guest on this terminal."""
        self._refuse("enter", name)
        return [*self._vserver(), name, "enter"]

    # -- guests --------------------------------------------------------
    @_guarded
    def start(self, name: str) -> None:
        self._refuse("start", name)
        self._runtime("start")(self.paths, name)

    @_guarded
    def stop(self, name: str) -> None:
        self._refuse("stop", name)
        self._runtime("stop")(self.paths, name)

    @_guarded
    def restart(self, name: str) -> None:
        # stop, then start, here: engine.runtime.restart calls the package's
        # start/stop, which the shadowing below breaks.
        self._refuse("restart", name)
        self._runtime("stop")(self.paths, name)
        self._runtime("start")(self.paths, name)

    def _runtime(self, op: str) -> Callable[..., Any]:
        """engine.runtime's ``op`` (start, stop, ...)."""
        return getattr(self._mod("engine.runtime"), op)

    @_guarded
    def build(
        self, name: str, template: str = "skeleton", hostname: str | None = None,
        addresses: Iterable[str] = (), options: Mapping[str, str] | None = None,
    ) -> Any:  # fmt: skip
        """``options``: NAME.conf keys written at build (V_MEMORY, V_DISK, S_CAPS...)."""
        self._refuse("build", name)
        rootfs = self._mod("engine.rootfs")
        return rootfs.build(
            self.paths, name, template=template, hostname=hostname,
            addresses=tuple(addresses), options=dict(options or {}),
        )  # fmt: skip

    @_guarded
    def receive_check(self, name: str, xid: int | None,
                      addresses: Sequence[str]) -> dict[str, Any]:  # fmt: skip
        """migrate's preflight (reading only): ``problems``, why guest ``name``
        with this context id and these addresses cannot arrive here ([] when it
        can), and ``btrfs``, whether btrfs guests can live here."""
        check_name(name)
        return self._mod("engine.remote.migrate").target_check(
            self.paths, name, xid, list(addresses)
        )

    @_guarded
    def receive_guest(
        self,
        name: str,
        source: Any,
        overrides: Mapping[str, str | None],
        xid: int | None = None,
        config_text: str | None = None,
    ) -> dict[str, Any]:
        """Make guest ``name`` from ``source`` (a descriptor or a binary file
        object: migrate's receiving end): an export stream, or a ``btrfs send``
        stream with NAME.conf's ``config_text``; ``xid``: the dynamic context
        id it keeps."""
        self._refuse("build", name)
        return self._mod("engine.remote.migrate").receive(
            self.paths, name, source, dict(overrides), xid, config_text
        )

    @_guarded
    def delete(self, name: str, force: bool = False) -> None:
        self._refuse("delete", name)
        # the whole guest, as `vserver NAME delete` does: stopped first with
        # force, then every file of it (tree, config, caches, context id, logs)
        self._runtime("delete")(self.paths, name, force=force)

    def exec_argv(self, name: str, command: str) -> list[str]:
        """The command that runs ``command`` (a shell line) in the guest.

        Returned rather than run so the console can stream its output into a
        pane; the read-only gate applies before anything is spawned.
        """
        self._refuse("exec", name)
        return [*self._vserver(), name, "exec", "/bin/sh", "-c", command]

    def _vserver(self) -> list[str]:
        return [sys.executable, "-m", "vstui.cli.vserver", "--root", str(self.paths.root)]

    def tool_argv(self, tool: str, args: Sequence[str]) -> list[str]:
        """The command line of one of the classic tools, on this root.

        For a console on another host (``vstui agent``): a tool's command
        that changes the host passes the same read-only gate as the facade's
        own operations (``vserver web stop`` as ``stop``, ``vkill`` as
        ``kill``; a vserver command not known to be reading as ``vserver``).
        """
        if tool not in TOOLS:
            raise VstuiError(f"'{tool}' is not one of the tools: {', '.join(TOOLS)}")
        args = [str(a) for a in args]
        op, guest = tool_operation(tool, args)
        if op is not None:
            self._refuse(op, guest)
        return [sys.executable, "-m", TOOLS[tool], "--root", str(self.paths.root), *args]

    # -- freeze, snapshots, clones, backups --------------------------------
    @_guarded
    def freeze(self, name: str) -> None:
        self._refuse("freeze", name)
        self._mod("engine.runtime.freezing").freeze(self.paths, name)

    @_guarded
    def thaw(self, name: str) -> None:
        self._refuse("thaw", name)
        self._mod("engine.runtime.freezing").thaw(self.paths, name)

    @_guarded
    def snapshots(self, name: str) -> list[Any]:
        """The guest's snapshots, oldest first (engine.rootfs.snapshots.Snapshot)."""
        return list(self._mod("engine.rootfs.snapshots").list_snapshots(self.paths, name))

    @_guarded
    def snapshot_create(self, name: str, snap: str | None = None) -> Any:
        self._refuse("snapshot_create", name)
        return self._mod("engine.rootfs.snapshots").create(self.paths, name, snap)

    @_guarded
    def snapshot_restore(self, name: str, snap: str) -> None:
        self._refuse("snapshot_restore", name)
        self._mod("engine.rootfs.snapshots").restore(self.paths, name, snap)

    @_guarded
    def snapshot_delete(self, name: str, snap: str) -> None:
        self._refuse("snapshot_delete", name)
        self._mod("engine.rootfs.snapshots").delete(self.paths, name, snap)

    @_guarded
    def clone(self, name: str, target: str, addresses: Iterable[str] = (),
              hostname: str | None = None, snapshot: str | None = None) -> Any:  # fmt: skip
        self._refuse("clone", target)
        return self._mod("engine.rootfs.clone").clone(
            self.paths, name, target, tuple(addresses), hostname, snapshot
        )

    @_guarded
    def export(self, name: str, out: Any, snapshot: str | None = None) -> Any:
        """engine.rootfs.archive.export_guest: a path, a binary file object or an fd."""
        self._refuse("export", name)
        return self._mod("engine.rootfs.archive").export_guest(self.paths, name, out, snapshot)

    # -- processes -----------------------------------------------------
    @_guarded
    def kill(self, pid: int, starttime: int, sig: int = _signal.SIGTERM, guest: str = "") -> None:
        """Signal one process, only if it is still the one the user picked.

        engine.procs re-checks (pid, starttime, context) through a pidfd just
        before signalling, so a PID reused since the snapshot is never hit,
        and refuses a private guest's processes.
        """
        self._refuse("kill", guest or None)
        signals = self._mod("engine.procs.signals")
        nspid = pid
        target = signals.Target(pid=pid, starttime=starttime, guest=guest or None, nspid=nspid)
        for outcome in signals.send(self.paths, [target], int(sig)):
            if outcome.error is not None:
                raise VstuiError(f"process {pid}: {outcome.error}", guest or None)

    # -- configuration -------------------------------------------------
    @_guarded
    def save_config(self, name: str, changes: Mapping[str, str | None]) -> SaveResult:
        """Write NAME.conf atomically, then apply what a running guest can take live."""
        self._refuse("save_config", name)
        config = self._mod("engine.config")
        cfg = config.update_config(self.paths, name, dict(changes))
        keys = tuple(sorted(changes))
        live = tuple(k for k in keys if k in LIVE_KEYS)
        later = tuple(k for k in keys if k not in LIVE_KEYS)
        if not live or not self._running(name):
            return SaveResult(name, keys, (), later)
        applied, errors = self._apply(cfg, live)
        return SaveResult(name, keys, applied, later, errors)

    @_guarded
    def apply_limits(self, name: str) -> SaveResult:
        """Apply every limit of NAME.conf to the running guest."""
        self._refuse("apply_limits", name)
        cfg = self.load_config(name)
        applied, errors = self._apply(cfg, tuple(sorted(LIVE_KEYS)))
        return SaveResult(name, (), applied, (), errors)

    def _running(self, name: str) -> bool:
        try:
            return bool(self._mod("engine.runtime").is_running(self.paths, name))
        except VstuiError:
            return False

    def _apply(self, cfg: Any, keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        steps: list[tuple[frozenset[str], Callable[[], None]]] = [
            (LIVE_CGROUP_KEYS, lambda: self._apply_cgroup(cfg)),
            (LIVE_NET_KEYS, lambda: self._mod("engine.net").set_bandwidth(cfg, self.paths)),
            (
                LIVE_DISK_KEYS,
                lambda: self._mod("engine.rootfs").set_quota(cfg, self.paths, cfg.disk),
            ),
        ]
        applied: list[str] = []
        errors: list[str] = []
        for group, step in steps:
            wanted = [k for k in keys if k in group]
            if not wanted:
                continue
            try:
                step()
                applied.extend(wanted)
            except VstuiError as exc:
                errors.append(f"{', '.join(wanted)}: {exc.message}")
        return tuple(applied), tuple(errors)

    def _apply_cgroup(self, cfg: Any) -> None:
        cgroups = self._mod("engine.cgroups")
        limits = cgroups.Limits(
            memory=cfg.memory, pids=cfg.pids_limit(), cpu_weight=cfg.cpu_weight,
            cpu_quota=cfg.cpu_quota,
        )  # fmt: skip
        cgroups.manager().apply(self.paths.cgroup_name(cfg.name), limits)
        self._mod("engine.runtime").refresh_meminfo(self.paths, cfg.name)


def tool_operation(tool: str, args: Sequence[str]) -> tuple[str | None, str | None]:
    """What a tool's command line does: (None, guest) when it only reads, else
    (the facade operation it amounts to, guest). Refuses ``--root``/``--host``
    among the tool's own options: the root is the engine's."""
    words = _own_words(tool, args)
    for word in words:
        if word.split("=", 1)[0] in ("--root", "--host"):
            raise VstuiError(f"{tool}: {word.split('=', 1)[0]} cannot be given here: "
                             "the agent's root and host are fixed")  # fmt: skip
    if tool == "vkill":
        return "kill", None
    if tool == "vtop" and not {"-b", "--batch"} & set(words):
        raise VstuiError("vtop on another host runs in batch mode only (vtop -b)")
    if tool != "vserver":
        return None, None
    if words and words[0].startswith("--"):  # vserver --list, --pool status, --onboot ...
        guest, command = None, words[0]
        rest = [w for w in words[1:] if not w.startswith("-")]
    else:
        positional = [w for w in words if not w.startswith("-")]
        guest = positional[0] if positional else None
        command, rest = (positional[1] if len(positional) > 1 else ""), positional[2:]
    if command in VSERVER_READING:
        second = VSERVER_READING[command]
        if second is None or (rest[0] if rest else "") == second:
            return None, guest
    if command in ("suexec", "exec"):
        return "exec", guest
    return (command if command in MUTATING else "vserver"), guest


def _own_words(tool: str, args: Sequence[str]) -> list[str]:
    """The words that belong to the tool, not to a command it runs in a guest."""
    if tool != "vserver":
        return list(args)
    own: list[str] = []
    positionals = 0
    for word in args:
        if word == "--" or (positionals >= 2 and own[-1] in VSERVER_PASS_THROUGH):
            break
        own.append(word)
        positionals += not word.startswith("-")
    return own


def tail_file(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file, reading only its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KernelError.from_oserror("read", exc) from exc
    return log_lines(data)[-lines:]  # what the guest wrote, control characters made visible


__all__ = [
    "LIVE_KEYS",
    "MUTATING",
    "Engine",
    "Finding",
    "SaveResult",
    "read_starttime",
    "tail_file",
    "tool_operation",
]
