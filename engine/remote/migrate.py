"""``vserver NAME migrate HOST``: move a guest to another host, keeping it whole.

The order is the safety: check the target first (name, context id and
addresses free there, a host that accepts changes), stop the guest, send
its configuration and tree as one export stream through the target's agent
(``engine.rootfs.archive``; the same ssh connection, base64 inside the
protocol), start it there, and only then delete it here (or keep it
stopped with ``keep``). Any failure before the end leaves this host as it
was (the guest started again if it ran) and the target without the guest:
an import that fails removes what it made, and the guest is deleted there
if it had arrived.

The context id moves with the guest: a fixed ``S_CONTEXT`` as it is, a
dynamic one recorded in the target's table; ``xid`` chooses another
(``S_CONTEXT`` there). Addresses move too; ``addresses`` replaces them
(``IPROOT``, with a new MAC as clone does).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import ConnectionLost, HostError, ReadOnlyError, VstuiError
from engine.paths import Paths
from engine.remote.client import AgentClient
from engine.remote.hosts import Host

CHUNK = 1 << 16


# -- the target's side (run by its agent) ------------------------------------
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


def receive(paths: Paths, name: str, source_fd: int, overrides: dict[str, str | None],
            xid: int | None) -> dict[str, Any]:  # fmt: skip
    """Make ``name`` from the export stream on ``source_fd``; keep its dynamic ``xid``."""
    from engine.rootfs.archive import import_guest

    cfg = import_guest(paths, name, source_fd, overrides)
    if xid is not None and cfg.context is None:
        from engine.runtime import xid as xids

        try:
            xids.claim(paths, name, xid)
        except VstuiError:
            _remove(paths, name)
            raise
    return {"name": name}


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
        _preflight(client, plan)
        running = runtime.is_running(paths, name)
        if running:
            say(f"stopping {name}")
            runtime.stop(paths, name)
        try:
            _move(paths, client, plan, running, say)
        except BaseException:
            _undo(paths, client, host, plan, running, say)
            raise
    finally:
        client.close()
    if keep:
        say(f"{name} stays here, stopped (--keep)")
        return
    _remove(paths, name)
    say(f"{name} removed here")


def _preflight(client: AgentClient, plan: Plan) -> None:
    host = client.host.name
    if client.hello.get("host", {}).get("read_only"):
        raise ReadOnlyError(f"migrate refused: host '{host}' is read-only", plan.name)
    problems = client.call("migrate_check", name=plan.new, xid=plan.xid,
                           addresses=plan.addresses)  # fmt: skip
    if problems:
        raise HostError(f"cannot move {plan.name} there: " + "; ".join(problems), host, plan.name)


def _move(paths: Paths, client: AgentClient, plan: Plan, running: bool,
          say: Callable[[str], None]) -> None:  # fmt: skip
    host = client.host.name
    say(f"sending {plan.name} to {host}" + (f" as {plan.new}" if plan.new != plan.name else ""))
    sent = send_export(paths, client, plan)
    say(f"{sent / 1e6:.1f} MB sent")
    if running:
        say(f"starting {plan.new} on {host}")
        client.call("start", name=plan.new)


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
          say: Callable[[str], None]) -> None:  # fmt: skip
    """After a failure: the target without the guest, this host as it was."""
    from engine import runtime

    try:
        _clean_target(client, host, plan, say)
    finally:
        if running and not runtime.is_running(paths, plan.name):
            say(f"starting {plan.name} here again")
            runtime.start(paths, plan.name)


def _clean_target(client: AgentClient, host: Host, plan: Plan,
                  say: Callable[[str], None]) -> None:  # fmt: skip
    own = None
    if not client.alive:  # the connection went: a new one to look
        own = client = AgentClient(host)
        try:
            client.connect()
        except HostError as exc:
            raise ConnectionLost(f"{plan.new} may be left on {host.name} ({exc.message}); check "
                                 f"with `vserver --host {host.name} {plan.new} status`",
                                 host.name, plan.name) from None  # fmt: skip
    try:
        if plan.new in client.call("list_guests"):
            say(f"removing {plan.new} from {host.name}")
            try:
                client.call("stop", name=plan.new)
            finally:
                client.call("delete", name=plan.new, force=True)
    finally:
        if own is not None:
            own.close()
