"""engine.audit on real running guests (root): a guest that matches its
configuration has no finding; a guest whose configuration was changed after
start (capabilities, memory, address) shows drift; a host process bound to a
guest's address is found; and the audit writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.audit import AuditReport, run_audit
from engine.config import update_config
from engine.paths import Paths
from tests import leaks
from vstui.cli.audit import main as audit_main

pytestmark = pytest.mark.root

IP_FREEBIND = 15  # include/uapi/linux/in.h: bind an address this namespace does not have
SAFE = {"S_FLAGS": "lock", "V_PIDS": "100", "V_MEMORY": "64M", "V_CPU_QUOTA": "50%"}


def subnet(paths: Paths) -> str:
    """A /24 of 198.19.0.0/16 (benchmarking range) of this root's own."""
    return f"198.19.{int(hashlib.sha1(str(paths.root).encode()).hexdigest()[:4], 16) % 250}"


@pytest.fixture
def guests(vroot: Paths) -> Iterator[tuple[Paths, str]]:
    """Two running guests: calm (matches its config) and drift (to be edited)."""
    from engine.rootfs import build
    from engine.runtime.stopping import stop
    from engine.runtime.supervisor import start

    net = subnet(vroot)
    build(vroot, "calm", options={**SAFE, "IPROOT": f"{net}.2/24", "V_DISK": "64M"})
    build(vroot, "drift", options={**SAFE, "IPROOT": f"{net}.3/24", "S_CAPS": "NET_RAW",
                                   "V_DISK": "64M"})  # fmt: skip
    started = []
    try:
        for name in ("calm", "drift"):
            start(vroot, name)
            started.append(name)
        yield vroot, net
    finally:
        for name in started:
            stop(vroot, name, timeout=5)


def rules(rep: AuditReport, guest: str) -> dict[str, list]:
    """The guest's findings by rule; a privileged guest's GUEST-PRIVILEGED (the guest
    mode's own finding) left out."""
    found: dict[str, list] = {}
    for f in rep.findings:
        if f.guest == guest and f.rule_id != "GUEST-PRIVILEGED":
            found.setdefault(f.rule_id, []).append(f)
    return found


def test_running_guests_match_then_drift(guests: tuple[Paths, str], guest_mode: str) -> None:
    paths, net = guests
    rep = run_audit(paths, min_severity="low")
    assert rules(rep, "calm") == {}
    assert set(rules(rep, "drift")) == {"GUEST-CAP-NET"}  # NET_RAW with veth: low
    # host-wide: only the machine's own wildcard listeners, which veth guests
    # reach through the host's addresses (they depend on the machine)
    assert {f.rule_id for f in rep.findings if f.guest is None} <= {"HOST-WILDCARD-LISTENER"}
    assert {u.what for u in rep.unreadable} <= {"owners of listening sockets"}

    # change the configuration after start: the running guest no longer matches it
    update_config(paths, "drift", {"S_CAPS": None, "V_MEMORY": "128M", "IPROOT": f"{net}.9/24"})
    found = rules(run_audit(paths), "drift")
    (caps,) = found["RUN-CAPS-DRIFT"]
    assert caps.severity == "high" and caps.fix == f"vserver --root {paths.root} drift restart"
    assert caps.details == ("running with, not configured: CAP_NET_RAW",)
    (limits,) = found["RUN-LIMIT-DRIFT"]
    assert limits.details == ("memory: configured 128M, in force 64M",)
    (addrs,) = found["RUN-ADDR-DRIFT"]
    assert addrs.details == (f"in the namespace, not in IPROOT: {net}.3",
                             f"in IPROOT, not in the namespace: {net}.9")  # fmt: skip
    assert rules(run_audit(paths), "calm") == {}

    # the CLI on the same root: findings -> 1; only calm, from low up -> 0
    assert audit_main(["--root", str(paths.root), "--json"]) == 1
    calm = audit_main(["--root", str(paths.root), "--guest", "calm", "--min-severity", "low"])
    assert calm == (1 if guest_mode == "privileged" else 0)  # GUEST-PRIVILEGED


def test_host_process_on_guest_address(guests: tuple[Paths, str]) -> None:
    paths, net = guests
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((f"{net}.2", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        found = rules(run_audit(paths), "calm")["RUN-HOST-LISTENER"]
    me = os.getpid()
    assert len(found) == 1
    assert found[0].title.endswith(
        f" (pid {me}) in context 0 listens on {net}.2:{port}/tcp, an address of calm"
    )
    assert found[0].fix.startswith(f"kill {me}")
    assert "RUN-HOST-LISTENER" not in rules(run_audit(paths), "calm")


# -- the audit changes nothing --------------------------------------------------------------


def tree_state(paths: Paths) -> dict[str, tuple]:
    """Every path under the root with mode, owner, size, mtime; inside a guest
    tree, image or log (which the running guests write themselves) only the
    entry itself."""
    busy = {paths.images_dir, paths.log_dir, *(paths.guest_root(n) for n in ("calm", "drift"))}
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(paths.root):
        here = Path(dirpath)
        if here in busy:
            dirnames[:] = []
            found[dirpath] = ("busy",)
            continue
        for name in [*dirnames, *filenames]:
            if name == "meminfo" and here.parent == paths.run_base:
                continue  # the supervisor rewrites the guest's /proc/meminfo view each second
            st = os.lstat(here / name)
            found[str(here / name)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                       st.st_mtime_ns)  # fmt: skip
        st = os.lstat(here)
        found[dirpath] = (st.st_mode, st.st_uid, st.st_mtime_ns)
    return found


def kernel_objects(paths: Paths) -> tuple:
    cgroups = sorted(
        str(p) for top in Path("/sys/fs/cgroup").glob(f"*/{paths.cgroup_base}")
        for p in [top, *top.rglob("*")] if p.is_dir()
    )  # fmt: skip
    netns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(line.split()[4] for line in f if str(paths.root) in line)
    return cgroups, leaks.links_seen_by(paths), netns, mounts


def test_audit_writes_nothing(
    guests: tuple[Paths, str], capsys: pytest.CaptureFixture[str]
) -> None:
    paths, net = guests
    update_config(paths, "drift", {"S_CAPS": None})  # drift, so the running checks all run
    tree, kernel = tree_state(paths), kernel_objects(paths)
    rep = run_audit(paths)
    assert audit_main(["--root", str(paths.root), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["findings"]
    assert any(f.rule_id == "RUN-CAPS-DRIFT" for f in rep.findings)
    assert tree_state(paths) == tree
    assert kernel_objects(paths) == kernel
