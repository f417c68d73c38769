"""``vserver NAME migrate HOST``: move a guest to another host, keeping it whole.

The order is the safety: check the target first (name, context id and
addresses free there, a host that accepts changes), stop the guest, send
its configuration and tree as one export stream through the target's agent
(``engine.rootfs.archive``; the same ssh connection, base64 inside the
protocol), start it there, commit it, and only then delete it here (or
keep it stopped with ``keep``). Any failure before the commit leaves this
host as it was (the guest started again if it ran) and the target without
the guest: an import that fails removes what it made, the guest is
deleted there if it had arrived, and the target's agent removes a guest
that arrived but was never committed when its connection goes. Only a
connection lost during the commit itself leaves the outcome unknown: then
the guest stays stopped here and the message says so.

The context id moves with the guest: a fixed ``S_CONTEXT`` as it is, a
dynamic one recorded in the target's table; ``xid`` chooses another
(``S_CONTEXT`` there). Addresses move too; ``addresses`` replaces them
(``IPROOT``, with a new MAC as clone does).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.errors import ConnectionLost, HostError, ReadOnlyError, VstuiError
from engine.paths import Paths
from engine.remote.client import AgentClient
from engine.remote.hosts import Host

CHUNK = 1 << 16


# -- the target's side (run by its agent) ------------------------------------
def target_check(paths: Paths, name: str, xid: int | None,
                 addresses: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """What the sender must know: ``problems`` (why ``name`` with ``xid`` and
    ``addresses`` cannot arrive on this root) and whether ``btrfs`` guests can."""
    return {"problems": target_problems(paths, name, xid, addresses), "btrfs": takes_btrfs(paths)}


def takes_btrfs(paths: Paths) -> bool:
    """Whether a btrfs guest can live here (a pool, or /vservers on btrfs)."""
    from engine.rootfs import btrfs, pool

    try:
        return pool.exists(paths) or btrfs.is_btrfs(paths.vservers_dir)
    except (OSError, VstuiError):
        return False


def target_problems(paths: Paths, name: str, xid: int | None,
                    addresses: Sequence[str]) -> list[str]:  # fmt: skip
    """Why ``name`` with ``xid`` and ``addresses`` cannot arrive on this root."""
    from engine.config import list_guests, load_guest, validate_name
    from engine.runtime import xid as xids

    validate_name(name)
    problems = []
    if paths.config_file(name).exists():
        problems.append(f"a guest named {name} exists there (choose another name with --as)")
    owners: dict[int, str] = {x: n for n, x in xids.allocated(paths).items() if n != name}
    used: dict[str, str] = {}
    for other in list_guests(paths):
        try:
            cfg = load_guest(paths, other)
        except (VstuiError, OSError):
            continue  # a broken neighbour says nothing about what it holds
        if cfg.context is not None:
            owners[cfg.context] = other
        used.update({str(a.interface.ip): other for a in cfg.addresses})
    if xid is not None and xid in owners:
        problems.append(f"context id {xid} is taken there by {owners[xid]} (choose one with --xid)")
    for ip in addresses:
        if ip in used:
            problems.append(f"address {ip} is used there by {used[ip]} (choose one with --ip)")
    return problems


def receive(paths: Paths, name: str, source: Any, overrides: dict[str, str | None],
            xid: int | None, config_text: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Make ``name`` from ``source``: an export stream, or with ``config_text``
    a ``btrfs send`` stream; keep its dynamic ``xid``."""
    if config_text is not None:
        cfg = receive_btrfs(paths, name, source, config_text, overrides)
    else:
        from engine.rootfs.archive import import_guest

        cfg = import_guest(paths, name, source, overrides)
    if xid is not None and cfg.context is None:
        from engine.runtime import xid as xids

        try:
            xids.claim(paths, name, xid)
        except VstuiError:
            _remove(paths, name)
            raise
    return {"name": name}


def receive_btrfs(paths: Paths, name: str, source: Any, config_text: str,
                  overrides: dict[str, str | None]) -> Any:  # fmt: skip
    """A guest from NAME.conf's text and a ``btrfs send`` stream of its tree:
    ``btrfs receive`` into a hidden directory of the store, then a writable
    snapshot of it (O(1)) becomes the guest's subvolume, with its limit."""
    from engine import config
    from engine.rootfs import volumes
    from engine.rootfs.build import _remove_all, ensure_barrier, refuse_existing
    from engine.rootfs.clone import new_identity

    config.validate_name(name)
    refuse_existing(paths, name)
    ensure_barrier(paths)
    cfg = None
    try:
        config.atomic_write(paths.config_file(name), config_text, guest=name)
        cfg = config.update_config(paths, name, dict(overrides))
        incoming = volumes.store_for_new(paths, cfg).guests / f".{name}.incoming"
        with _received(incoming, source, name) as received:
            volumes.clone_from(cfg, paths, received)
        if "S_HOSTNAME" in overrides or "IPROOT" in overrides:
            from engine.rootfs import storage

            with storage.prepare_root(cfg, paths) as handle:
                new_identity(handle.path, cfg)
    except BaseException:
        _remove_all(paths, name, cfg)
        raise
    return cfg


@contextmanager
def _received(incoming: Path, source: Any, name: str) -> Iterator[Path]:
    """``btrfs receive`` of ``source`` into ``incoming``; the one subvolume it made."""
    from engine.rootfs import btrfs

    incoming.mkdir(mode=0o700)
    try:
        proc = subprocess.Popen(["btrfs", "receive", "-q", "-e", str(incoming)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stdin is not None and proc.stderr is not None
        try:
            while data := source.read(CHUNK):
                proc.stdin.write(data)
        except BrokenPipeError:
            pass  # it gave up: its status and message say why
        finally:
            proc.stdin.close()
        said = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0 or len(made := os.listdir(incoming)) != 1:
            raise VstuiError(f"btrfs receive failed: {said or 'no subvolume came'}", name)
        yield incoming / made[0]
    finally:
        for entry in os.listdir(incoming):
            btrfs.delete(incoming / entry)
        incoming.rmdir()


def _remove(paths: Paths, name: str) -> None:
    from engine import rootfs
    from engine.runtime import xid as xids

    rootfs.delete(paths, name, force=True)
    xids.forget(paths, name)


# -- this side --------------------------------------------------------------
class Plan:
    """What the move is: names, the context id and addresses at the target."""

    def __init__(self, paths: Paths, name: str, new_name: str | None, xid: int | None,
                 addresses: Sequence[str]) -> None:  # fmt: skip
        from engine.config import load_guest, validate_name
        from engine.runtime import xid as xids

        self.name = validate_name(name)
        self.new = validate_name(new_name or name)
        self.cfg = load_guest(paths, name)
        current = xids.xid_of(paths, name, self.cfg)
        self.xid = xid if xid is not None else current
        self.overrides: dict[str, str | None] = {}
        if xid is not None:
            self.overrides["S_CONTEXT"] = str(xid)
        if addresses:
            self.overrides["IPROOT"] = " ".join(addresses)
        # a dynamic id travels beside the config: the target records it as dynamic
        self.keep_xid = None if (xid is not None or self.cfg.context is not None) else current
        if addresses:
            from engine.config import values

            try:
                found = values.parse_iproot(" ".join(addresses), self.new)
            except values.Invalid as exc:
                raise VstuiError(f"--ip: {exc}", name) from None
        else:
            found = self.cfg.addresses
        self.addresses = [str(a.interface.ip) for a in found]  # as the target compares them
        from engine.rootfs import storage

        self.backend = storage.backend_of(self.cfg)
        self.btrfs = False  # set by the preflight when both sides keep btrfs guests


def migrate(paths: Paths, name: str, host: Host, *, new_name: str | None = None,
            keep: bool = False, xid: int | None = None, addresses: Sequence[str] = (),
            say: Callable[[str], None] = lambda text: None) -> None:  # fmt: skip
    """Move guest ``name`` of ``paths`` to ``host`` (see the module's doc)."""
    from engine import runtime

    try:
        import engine.rootfs.archive  # noqa: F401  (the export stream both ends speak)
    except ImportError:
        raise VstuiError("migrate needs the export stream (engine.rootfs.archive), which is "
                         "not in this build", name) from None  # fmt: skip
    plan = Plan(paths, name, new_name, xid, addresses)
    client = AgentClient(host)
    client.connect()
    try:
        _preflight(client, plan, say)
        running = runtime.is_running(paths, name)
        if running:
            say(f"stopping {name}")
            runtime.stop(paths, name)
        try:
            _move(paths, client, plan, running, say)
        except BaseException as exc:
            clean = _undo(paths, client, host, plan, running, say)
            if clean and not isinstance(exc, ConnectionLost):
                raise
            here = "runs here again" if running else "stays here"
            raise ConnectionLost(
                f"the connection was lost while {name} was moving: nothing was committed "
                f"there, so its agent removes what arrived; {name} {here}",
                host.name, name) from exc  # fmt: skip
        _commit(client, plan, running)
    finally:
        client.close()
    if keep:
        say(f"{name} stays here, stopped (--keep)")
        return
    _remove(paths, name)
    say(f"{name} removed here")


def _preflight(client: AgentClient, plan: Plan, say: Callable[[str], None]) -> None:
    """Refuse before anything changes; choose how the tree travels."""
    host = client.host.name
    if client.hello.get("host", {}).get("read_only"):
        raise ReadOnlyError(f"migrate refused: host '{host}' is read-only", plan.name)
    answer = client.call("migrate_check", name=plan.new, xid=plan.xid,
                         addresses=plan.addresses)  # fmt: skip
    problems = answer.get("problems", []) if isinstance(answer, dict) else ["a bad answer"]
    if problems:
        raise HostError(f"cannot move {plan.name} there: " + "; ".join(problems), host, plan.name)
    if plan.backend != "btrfs":
        return
    if answer.get("btrfs"):
        plan.btrfs = True  # both sides keep btrfs guests: btrfs send/receive
        return
    plan.overrides["V_DISK_BACKEND"] = "image" if plan.cfg.disk is not None else "none"
    say(
        f"{host} has no btrfs pool: {plan.name} arrives with V_DISK_BACKEND="
        f"{plan.overrides['V_DISK_BACKEND']} (make one there with `vserver --pool create SIZE`)"
    )


def _move(paths: Paths, client: AgentClient, plan: Plan, running: bool,
          say: Callable[[str], None]) -> None:  # fmt: skip
    host = client.host.name
    how = "btrfs send" if plan.btrfs else "the export stream"
    say(f"sending {plan.name} to {host}" + (f" as {plan.new}" if plan.new != plan.name else "")
        + f" ({how})")  # fmt: skip
    sent = send_btrfs(paths, client, plan) if plan.btrfs else send_export(paths, client, plan)
    say(f"{sent / 1e6:.1f} MB sent")
    if running:
        say(f"starting {plan.new} on {host}")
        client.call("start", name=plan.new)


def _commit(client: AgentClient, plan: Plan, running: bool) -> None:
    """Tell the target the guest stays (else its agent removes it when we go)."""
    host = client.host.name
    try:
        client.call("commit", name=plan.new)
    except ConnectionLost:
        here = "stays stopped here" if running else "stays here"
        raise ConnectionLost(
            f"the connection went while {plan.new} was being committed on {host}: whether it "
            f"stays there is unknown; {plan.name} {here} (see `vserver --host {host} "
            f"{plan.new} status`, then delete one of them)", host, plan.name) from None  # fmt: skip


def send_btrfs(paths: Paths, client: AgentClient, plan: Plan) -> int:
    """A read-only snapshot of the (stopped) guest's subvolume through
    ``btrfs send`` into the target's ``receive``, with NAME.conf; bytes sent."""
    from engine.rootfs import btrfs, volumes

    store = volumes.store_of(paths, plan.name)
    snap = store.guests / f".{plan.name}.migrate"
    if snap.exists():
        btrfs.delete(snap)  # left by a migrate that was killed
    btrfs.snapshot(volumes.subvolume(paths, plan.name), snap, readonly=True)
    try:
        proc = subprocess.Popen(["btrfs", "send", "-q", str(snap)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        try:
            args = {"name": plan.new, "overrides": plan.overrides, "xid": plan.keep_xid,
                    "config": plan.cfg.path.read_text()}  # fmt: skip
            sent = client.send_stream("receive", args, proc.stdout.fileno())
        finally:
            proc.stdout.close()
            said = proc.stderr.read().decode(errors="replace").strip()
            status = proc.wait()
        if status != 0:
            raise VstuiError(f"btrfs send failed: {said or f'exit {status}'}", plan.name)
        return sent
    finally:
        btrfs.delete(snap)


def send_export(paths: Paths, client: AgentClient, plan: Plan) -> int:
    """The guest's export stream into the target's ``receive``; bytes sent."""
    from engine.rootfs.archive import export_guest

    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    def export() -> None:
        try:
            export_guest(paths, plan.name, write_end)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        finally:
            os.close(write_end)

    writer = threading.Thread(target=export, daemon=True)
    writer.start()
    try:
        sent = client.send_stream("receive", {"name": plan.new, "overrides": plan.overrides,
                                              "xid": plan.keep_xid}, read_end)  # fmt: skip
    finally:
        os.close(read_end)
        writer.join()
    if failure:
        raise failure[0]
    return sent


def _undo(paths: Paths, client: AgentClient, host: Host, plan: Plan, running: bool,
          say: Callable[[str], None]) -> bool:  # fmt: skip
    """After a failure: the target without the guest, this host as it was.
    False when the target could not be reached to look."""
    from engine import runtime

    try:
        return _clean_target(client, host, plan, say)
    finally:
        if running and not runtime.is_running(paths, plan.name):
            say(f"starting {plan.name} here again")
            runtime.start(paths, plan.name)


def _clean_target(client: AgentClient, host: Host, plan: Plan,
                  say: Callable[[str], None]) -> bool:  # fmt: skip
    own = None
    if not client.alive:  # the connection went: a new one to look
        own = client = AgentClient(host)
        try:
            client.connect()
        except HostError:
            return False  # unreachable; its agent removes an uncommitted guest by itself
    try:
        if plan.new in client.call("list_guests"):
            say(f"removing {plan.new} from {host.name}")
            try:
                client.call("stop", name=plan.new)
            finally:
                client.call("delete", name=plan.new, force=True)
        return True
    finally:
        if own is not None:
            own.close()
