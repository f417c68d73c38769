"""engine.audit: each unsafe case built under a temporary root yields its
finding with the fix; the safe case yields none. No root needed: host
readers (listening sockets, device addresses, controllers) are injected."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.audit import RULES, Sources, run_audit
from engine.audit.host import SSHD_RELOAD as RELOAD
from engine.audit.model import AuditReport, rank, rules_markdown
from engine.errors import GuestNotFound, VstuiError
from engine.net.sockets import Listener
from engine.paths import Paths
from tests import leaks

ME = os.geteuid()
DOCS = Path(__file__).parents[2] / "docs" / "audit.md"
SAFE = """\
S_FLAGS="lock"
IPROOT="198.18.0.10/24"
V_PIDS=200
V_MEMORY=256M
V_CPU_QUOTA=50%
V_DISK=1G
"""


@pytest.fixture
def root() -> Iterator[Paths]:
    """A host root whose directories are as vstui makes them (barrier 000)."""
    base = Path(tempfile.mkdtemp(prefix="vstui-audit-", dir="/tmp"))
    paths = Paths.from_root(base)
    for d in (paths.config_dir, paths.run_base, paths.state_dir, paths.log_dir):
        d.mkdir(parents=True, mode=0o755)
    paths.vservers_dir.mkdir(mode=0o755)
    try:
        yield paths
    finally:
        for d in (base, *base.rglob("*")):
            if d.is_dir() and not d.is_symlink():
                d.chmod(0o755)
        shutil.rmtree(base)


def sources(**changes: object) -> Sources:
    base: dict[str, object] = {
        "listeners": lambda: [],
        "host_addresses": lambda: {"up0": (ipaddress.ip_interface("198.18.0.1/24"),)},
        "controllers": lambda: frozenset({"memory", "pids", "cpu", "cpuacct", "freezer"}),
        "max_user_namespaces": lambda: 1000,
        "owner_uid": ME,
        "members": lambda paths, name: set(),
    }
    base.update(changes)
    return Sources(**base)  # type: ignore[arg-type]


def guest(paths: Paths, name: str, text: str, tree: bool = True, mode: int = 0o644) -> None:
    conf = paths.config_file(name)
    conf.write_text(text)
    conf.chmod(mode)
    if tree:
        (paths.guest_root(name)).mkdir(mode=0o755, exist_ok=True)


def barrier(paths: Paths) -> None:
    paths.vservers_dir.chmod(0)


def audit(paths: Paths, **kw: object) -> AuditReport:
    src = kw.pop("src", None) or sources()
    return run_audit(paths, sources=src, **kw)  # type: ignore[arg-type]


def by_rule(rep: AuditReport, rule: str, guest_name: str | None = "*") -> list:
    return [f for f in rep.findings if f.rule_id == rule and guest_name in ("*", f.guest)]


def one(rep: AuditReport, rule: str, guest_name: str | None = "*"):
    found = by_rule(rep, rule, guest_name)
    assert len(found) == 1, (rule, [f.title for f in rep.findings])
    return found[0]


# -- the safe case ------------------------------------------------------------------------------


def test_safe_root_has_no_finding_above_info(root: Paths) -> None:
    guest(root, "web", SAFE)
    barrier(root)
    rep = audit(root, min_severity="low")
    assert rep.findings == ()
    if ME == 0:
        assert rep.unreadable == ()
    else:  # a user cannot pass the barrier: said, not taken as clean
        assert any("web" in u.what for u in rep.unreadable)


def test_empty_root_is_clean(root: Paths) -> None:
    barrier(root)
    rep = audit(root)
    assert rep.clean and rep.findings == () and rep.unreadable == ()


def test_safe_guest_has_no_findings(root: Paths) -> None:
    guest(root, "web", SAFE)
    barrier(root)
    assert audit(root).findings == ()


def test_privileged_guest_is_a_finding(root: Paths) -> None:
    guest(root, "web", SAFE + "V_USERNS=no\n")
    barrier(root)
    f = one(audit(root), "GUEST-PRIVILEGED", "web")
    assert f.severity == "high" and "host's root" in f.title
    assert f.fix == f"vserver --root {root.root} web set V_USERNS=yes"


# -- host ----------------------------------------------------------------------------------------


def test_barrier_open(root: Paths) -> None:
    guest(root, "web", SAFE)
    root.vservers_dir.chmod(0o711)
    f = one(audit(root), "HOST-BARRIER")
    assert f.severity == "high"
    assert f.fix == f"chown root:root {root.vservers_dir} && chmod 000 {root.vservers_dir}"
    assert "711" in f.title


def test_guest_root_reachable_only_when_every_ancestor_is_open(root: Paths) -> None:
    guest(root, "web", SAFE)
    root.root.chmod(0o700)  # mkdtemp's mode: others stop here
    assert by_rule(audit(root), "HOST-GUEST-REACHABLE") == []
    root.root.chmod(0o755)
    f = one(audit(root), "HOST-GUEST-REACHABLE", "web")
    assert f.severity == "critical" and "chmod 000" in f.fix
    barrier(root)
    assert by_rule(audit(root), "HOST-GUEST-REACHABLE") == []


def test_guest_root_writable_by_others(root: Paths) -> None:
    guest(root, "web", SAFE)
    root.guest_root("web").chmod(0o777)
    f = one(audit(root), "HOST-GUEST-ROOT-PERMS", "web")
    assert (
        f.fix == f"chown root:root {root.guest_root('web')} && chmod 755 {root.guest_root('web')}"
    )


def test_config_writable_by_others(root: Paths) -> None:
    guest(root, "web", SAFE, mode=0o666)
    f = one(audit(root), "HOST-CONFIG-WRITABLE")
    conf = root.config_file("web")
    assert f.severity == "critical" and f.fix == f"chown root:root {conf} && chmod go-w {conf}"
    root.config_dir.chmod(0o777)
    assert len(by_rule(audit(root), "HOST-CONFIG-WRITABLE")) == 2


def test_run_dir_writable_by_others(root: Paths) -> None:
    guest(root, "web", SAFE)
    run = root.run_dir("web")
    run.mkdir()
    (run / "init.pid").write_text("1\n")
    (run / "init.pid").chmod(0o666)
    f = one(audit(root), "HOST-RUNDIR-WRITABLE", "web")
    assert f.fix.endswith(f"chmod go-w {run / 'init.pid'}")
    root.state_dir.chmod(0o757)
    assert len(by_rule(audit(root), "HOST-RUNDIR-WRITABLE")) == 2


SSHD_LISTENER = Listener("tcp", "0.0.0.0", 22, 4242, "sshd")


@pytest.mark.parametrize(
    ("extra", "severity"),
    [("V_NETMODE=host\n", "high"), ("V_NETMODE=ipvlan\nIPROOTDEV=up0\n", "medium")],
)
def test_wildcard_listener_when_guests_share_devices(
    root: Paths, extra: str, severity: str
) -> None:
    guest(root, "web", SAFE + extra)
    listeners = [SSHD_LISTENER, Listener("tcp", "127.0.0.1", 25, 99, "exim"),
                 Listener("udp", "::", 53, 77, "named")]  # fmt: skip
    rep = audit(root, src=sources(listeners=lambda: listeners))
    found = by_rule(rep, "HOST-WILDCARD-LISTENER")
    assert sorted(f.title for f in found) == [
        "named (pid 77) listens on [::]:53/udp",
        "sshd (pid 4242) listens on 0.0.0.0:22/tcp",
    ]
    assert {f.severity for f in found} == {severity}
    ssh = next(f for f in found if "sshd" in f.title)
    # the guest on a host device gets its own link: a command, --root included
    assert ssh.fix == f"vserver --root {root.root} web set V_NETMODE=veth"
    assert "web" in ssh.details[0]


def test_wildcard_listener_when_a_guest_address_is_on_the_host(root: Paths) -> None:
    guest(root, "web", SAFE.replace("198.18.0.10", "198.18.0.1"))
    f = one(audit(root, src=sources(listeners=lambda: [SSHD_LISTENER])), "HOST-WILDCARD-LISTENER")
    assert f.severity == "high" and "address 198.18.0.1 is on the host" in f.details[0]


def test_wildcard_listener_reachable_from_veth_guests(root: Paths) -> None:
    """A routed guest reaches every host address, a bridged one its bridge's."""
    guest(root, "web", SAFE)
    guest(root, "db", SAFE.replace("198.18.0.10/24", "198.18.5.2/24") + "V_BRIDGE=br0\n")
    guest(root, "v6", SAFE.replace("198.18.0.10/24", "2001:2::10/64"))
    hosts = {"up0": (ipaddress.ip_interface("198.18.0.1/24"),),
             "br0": (ipaddress.ip_interface("198.18.5.1/24"),
                     ipaddress.ip_interface("fe80::1/64")),
             "lo": (ipaddress.ip_interface("127.0.0.1/8"),)}  # fmt: skip
    listeners = [SSHD_LISTENER, Listener("tcp", "127.0.0.1", 25, 99, "exim"),
                 Listener("udp", "::", 53, 77, "named")]  # fmt: skip
    rep = audit(root, src=sources(listeners=lambda: listeners, host_addresses=lambda: hosts))
    found = {f.title: f for f in by_rule(rep, "HOST-WILDCARD-LISTENER")}
    assert sorted(found) == ["named (pid 77) listens on [::]:53/udp",
                             "sshd (pid 4242) listens on 0.0.0.0:22/tcp"]  # fmt: skip
    ssh = found["sshd (pid 4242) listens on 0.0.0.0:22/tcp"]
    assert ssh.severity == "medium"
    assert ssh.details == (
        "db (bridged on br0) reaches it through 198.18.5.1 on br0",
        "web (routed veth) reaches it through 198.18.5.1 on br0, 198.18.0.1 on up0",
    )  # the IPv6-only guest does not reach an IPv4 socket
    named = found["named (pid 77) listens on [::]:53/udp"]
    assert [d.split()[0] for d in named.details] == ["db", "v6", "web"]


def test_no_wildcard_finding_without_guests_that_reach_the_host(root: Paths) -> None:
    guest(root, "web", SAFE.replace('IPROOT="198.18.0.10/24"', 'IPROOT=""'))
    rep = audit(root, src=sources(listeners=lambda: [SSHD_LISTENER]))
    assert by_rule(rep, "HOST-WILDCARD-LISTENER") == []


def test_unknown_listener_owner_is_unreadable(root: Paths) -> None:
    guest(root, "web", SAFE + "V_NETMODE=host\n")
    rep = audit(root, src=sources(listeners=lambda: [Listener("tcp", "::", 80)]))
    assert one(rep, "HOST-WILDCARD-LISTENER").title == "a process listens on [::]:80/tcp"
    assert any(u.what == "owners of listening sockets" for u in rep.unreadable)


def write_sshd(paths: Paths, main: str, extra: dict[str, str] | None = None) -> Path:
    ssh = paths.root / "etc/ssh"
    (ssh / "sshd_config.d").mkdir(parents=True, exist_ok=True)
    (ssh / "sshd_config").write_text(main)
    for name, text in (extra or {}).items():
        (ssh / "sshd_config.d" / name).write_text(text)
    return ssh / "sshd_config"


def test_sshd_password_by_default(root: Paths) -> None:
    main = write_sshd(root, "Port 22\n")
    f = one(audit(root), "HOST-SSHD-PASSWORD")
    assert f.fix == f"sed -i '1i PasswordAuthentication no' {main} && {RELOAD}"
    assert by_rule(audit(root), "HOST-SSHD-ROOT-PASSWORD") == []


def test_sshd_root_password_and_first_value_wins_through_include(root: Paths) -> None:
    main = write_sshd(
        root,
        "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n"
        "PermitRootLogin=yes\nMatch User backup\n  PasswordAuthentication no\n",
        {"10-site.conf": "# site\npasswordauthentication yes\n"},
    )
    rep = audit(root)
    pw = one(rep, "HOST-SSHD-PASSWORD")
    site = root.root / "etc/ssh/sshd_config.d/10-site.conf"
    assert pw.fix == f"sed -i '2c PasswordAuthentication no' {site} && {RELOAD}"
    rootpw = one(rep, "HOST-SSHD-ROOT-PASSWORD")
    assert rootpw.fix == f"sed -i '3c PermitRootLogin prohibit-password' {main} && {RELOAD}"


def test_sshd_safe(root: Paths) -> None:
    write_sshd(root, "Include sshd_config.d/*.conf\nPermitRootLogin yes\n",
               {"00-hard.conf": "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                                "UsePAM yes\n"})  # fmt: skip
    rep = audit(root)
    assert by_rule(rep, "HOST-SSHD-PASSWORD") == [] == by_rule(rep, "HOST-SSHD-ROOT-PASSWORD")


def test_sshd_keyboard_interactive_with_pam(root: Paths) -> None:
    write_sshd(root, "PasswordAuthentication no\nUsePAM yes\n")
    f = one(audit(root), "HOST-SSHD-PASSWORD")
    assert "KbdInteractiveAuthentication no" in f.fix


def test_cgroup_controller_missing(root: Paths) -> None:
    guest(root, "web", SAFE)
    rep = audit(root, src=sources(controllers=lambda: frozenset({"cpu", "pids"})))
    f = one(rep, "HOST-CGROUP-CONTROLLER", "web")
    assert "V_MEMORY" in f.title and "-o memory" in f.fix
    assert by_rule(audit(root), "HOST-CGROUP-CONTROLLER") == []


def test_cgroup_probe_failure_is_unreadable(root: Paths) -> None:
    guest(root, "web", SAFE)

    def broken() -> frozenset[str]:
        raise OSError(13, "Permission denied")

    rep = audit(root, src=sources(controllers=broken))
    assert [u.what for u in rep.unreadable if "cgroup" in u.what] == ["cgroup controllers"]


def test_user_namespaces_off_while_guests_need_them(root: Paths) -> None:
    guest(root, "web", SAFE)
    guest(root, "old", SAFE.replace("198.18.0.10", "198.18.0.11") + "V_USERNS=no\n")
    f = one(audit(root, src=sources(max_user_namespaces=lambda: 0)), "HOST-USERNS")
    assert f.severity == "high" and f.details == ("guests with V_USERNS=yes: web",)
    assert not [x for x in audit(root).findings if x.rule_id == "HOST-USERNS"]


def test_host_users_and_subuid_owners_inside_a_guests_block(root: Paths) -> None:
    from engine.runtime import idmap

    guest(root, "web", SAFE + "S_CONTEXT=40002\n")
    barrier(root)
    base = idmap.of_block(10).base
    (root.root / "etc").mkdir(exist_ok=True)
    (root.root / "etc/passwd").write_text(
        f"root:x:0:0::/root:/bin/sh\nmallory:x:{base + 5}:5::/:/bin/sh\n"
    )
    (root.root / "etc/subuid").write_text(f"podman:{base - 10}:20\n")
    found = [f for f in audit(root).findings if f.rule_id == "GUEST-IDS-SHARED"]
    titles = sorted(f.title for f in found)
    assert len(found) == 2 and all(f.guest == "web" and f.severity == "high" for f in found)
    assert "/etc/subuid range podman" in titles[0]
    assert "host user mallory" in titles[1] and f"{base}-{base + 65535}" in titles[1]
    idmap.assign(root, "web", 40002)  # our own registrations are never findings
    assert len([f for f in audit(root).findings if f.rule_id == "GUEST-IDS-SHARED"]) == 2


# -- guest configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "rule", "severity"),
    [("CAP_SYS_ADMIN", "GUEST-CAP-SYS_ADMIN", "critical"),
     ("SYS_MODULE", "GUEST-CAP-SYS_MODULE", "critical"),
     ("sys_rawio", "GUEST-CAP-SYS_RAWIO", "critical"),
     ("SYS_TIME", "GUEST-CAP-HIGH", "high"),
     ("MKNOD", "GUEST-CAP-HIGH", "high"),
     ("NET_ADMIN", "GUEST-CAP-NET", "medium"),
     ("NET_RAW", "GUEST-CAP-NET", "low"),
     ("IPC_LOCK", "GUEST-CAP-OTHER", "low")],
)  # fmt: skip
def test_added_capabilities_ranked(root: Paths, cap: str, rule: str, severity: str) -> None:
    guest(root, "web", SAFE + f'S_CAPS="{cap}"\nV_USERNS=no\n')
    f = one(audit(root), rule, "web")
    assert f.severity == severity
    name = cap.upper().removeprefix("CAP_")
    assert f.fix == f"vserver --root {root.root} web set S_CAPS-={name}"  # composes with others


@pytest.mark.parametrize(
    ("cap", "severity"), [("SYS_ADMIN", "medium"), ("SYS_MODULE", "info"), ("MKNOD", "info")]
)
def test_capabilities_count_inside_a_user_namespace(root: Paths, cap: str, severity: str) -> None:
    guest(root, "web", SAFE + f'S_CAPS="{cap}"\n')
    f = one(audit(root), "GUEST-CAP-OTHER", "web")
    assert f.severity == severity and "user namespace" in f.why


def test_net_caps_rank_higher_when_sharing_the_host_network(root: Paths) -> None:
    guest(root, "web", SAFE + 'S_CAPS="NET_ADMIN NET_RAW"\nV_NETMODE=host\nV_USERNS=no\n')
    rep = audit(root)
    assert one(rep, "GUEST-CAP-HIGH").title.startswith("S_CAPS adds CAP_NET_ADMIN")
    assert one(rep, "GUEST-CAP-NET").severity == "high"


@pytest.mark.parametrize(
    ("extra", "severity"),
    [("", "low"), ("V_NET_FILTER=no\n", "medium"), ("V_BRIDGE=br0\n", "medium"),
     ("V_BRIDGE=br0\nV_NET_FILTER=no\n", "high"), ("V_NETMODE=macvlan\nIPROOTDEV=up0\n", "high"),
     ("V_NETMODE=host\n", "high")],
)  # fmt: skip
def test_net_raw_is_rated_by_network_mode(root: Paths, extra: str, severity: str) -> None:
    guest(root, "web", SAFE + 'S_CAPS="NET_RAW"\n' + extra)
    f = one(audit(root), "GUEST-CAP-NET", "web")
    assert f.severity == severity and f.why


def test_network_keys_that_widen_a_guest_are_reported(root: Paths) -> None:
    guest(root, "web", SAFE + "V_BRIDGE=br0\nV_NET_FILTER=no\n")
    guest(root, "db", SAFE + "V_NET_FILTER=no\nV_ROUTE=any\n")
    guest(root, "mail", SAFE + 'V_ROUTE="up0:nat"\n')
    rep = audit(root)
    assert one(rep, "GUEST-NET-FILTER-OFF", "web").severity == "medium"
    assert one(rep, "GUEST-NET-FILTER-OFF", "db").severity == "low"
    assert one(rep, "GUEST-NET-ROUTE", "db").severity == "medium"
    route = one(rep, "GUEST-NET-ROUTE", "mail")
    assert route.severity == "info" and route.title.startswith("V_ROUTE=up0:nat")


@pytest.mark.parametrize(
    ("accept_ra", "forwarding", "filtered", "severity"),
    [("1", "0", True, "low"), ("2", "1", False, "high"), ("1", "1", True, None),
     ("0", "0", False, None)],
)  # fmt: skip
def test_bridge_taking_router_adverts_is_flagged(
    root: Paths, accept_ra: str, forwarding: str, filtered: bool, severity: str | None
) -> None:
    guest(root, "web", SAFE + "V_BRIDGE=br0\n" + ("" if filtered else "V_NET_FILTER=no\n"))
    conf = {"ipv6/conf/br0/accept_ra": accept_ra, "ipv6/conf/br0/forwarding": forwarding}
    rep = audit(root, src=sources(net_sysctl=conf.get))
    found = by_rule(rep, "HOST-BRIDGE-ACCEPT-RA")
    assert [f.severity for f in found] == ([severity] if severity else [])
    if found:
        title = f"bridge br0 takes router advertisements (accept_ra={accept_ra})"
        assert found[0].title == title + " and carries guests web"


def test_default_caps_and_drops_are_no_finding(root: Paths) -> None:
    guest(root, "web", SAFE + 'S_CAPS="CAP_CHOWN !SYS_CHROOT SYS_PTRACE"\n')
    assert [f for f in audit(root).findings if f.rule_id.startswith("GUEST-CAP")] == []


def test_dac_read_search_with_shares(root: Paths) -> None:
    share = root.root / "srv"
    share.mkdir()
    guest(root, "web", SAFE + f'V_SHARE="{share}:/srv"\nV_SECCOMP="+open_by_handle_at"\n')
    rep = audit(root)
    f = one(rep, "GUEST-CAP-DAC_READ_SEARCH")
    assert f.severity == "high"
    assert f.fix == f"vserver --root {root.root} web set V_SECCOMP-=+open_by_handle_at"
    assert one(rep, "GUEST-SECCOMP-ALLOW").title.startswith("V_SECCOMP allows open_by_handle_at")
    guest(root, "web", SAFE + f'V_SHARE="{share}:/srv"\nS_CAPS="!DAC_READ_SEARCH"\n')
    assert by_rule(audit(root), "GUEST-CAP-DAC_READ_SEARCH") == []


def test_no_lock_and_no_limits(root: Paths) -> None:
    guest(root, "web", 'S_FLAGS="fakeinit"\n')
    rep = audit(root)
    run = f"vserver --root {root.root} web set"
    assert one(rep, "GUEST-NO-LOCK").fix == f"{run} S_FLAGS+=lock"
    assert one(rep, "GUEST-NO-PROC-LIMIT").fix == f"{run} V_PIDS=500"
    assert one(rep, "GUEST-NO-MEMORY-LIMIT").fix == f"{run} V_MEMORY=512M"
    assert one(rep, "GUEST-NO-CPU-LIMIT").fix == f"{run} V_CPU_QUOTA=100%"
    assert one(rep, "GUEST-NO-DISK-LIMIT").fix.endswith(
        "--set V_DISK_BACKEND=image --set V_DISK=2G"
    )


def test_nproc_ulimit_counts_as_process_limit(root: Paths) -> None:
    guest(
        root, "web", SAFE.replace("V_PIDS=200\n", "") + 'S_FLAGS="lock nproc"\nULIMIT="-H -u 100"\n'
    )
    assert by_rule(audit(root), "GUEST-NO-PROC-LIMIT") == []


def test_disk_limit_not_enforced(root: Paths) -> None:
    guest(root, "web", SAFE + "V_DISK_BACKEND=none\n")
    assert "not enforced" in one(audit(root), "GUEST-NO-DISK-LIMIT").title


def test_host_network_mode(root: Paths) -> None:
    guest(root, "web", SAFE + "V_NETMODE=host\n")
    assert one(audit(root), "GUEST-NETMODE-HOST").fix == (
        f"vserver --root {root.root} web set V_NETMODE=veth"
    )


def test_read_write_share(root: Paths) -> None:
    a, b = root.root / "a", root.root / "b"
    a.mkdir(), b.mkdir()
    guest(root, "web", SAFE + f'V_SHARE="{a}:/a:rw {b}:/b"\n')
    f = one(audit(root), "GUEST-SHARE-RW")
    assert f.fix == f"vserver --root {root.root} web set V_SHARE-={a}:/a:rw V_SHARE+={a}:/a:ro"
    guest(root, "web", SAFE + f'V_SHARE="{a}:/a {b}:/b:ro"\n')
    assert by_rule(audit(root), "GUEST-SHARE-RW") == []


@pytest.mark.parametrize(
    ("host", "mode", "severity"),
    [("/etc", "ro", "critical"), ("/", "ro", "critical"), ("/var/run/docker.sock", "ro",
     "critical"), ("/var", "ro", "critical"), ("/home/alice", "ro", "high"),
     ("/boot", "rw", "critical"), ("/usr", "rw", "critical"), ("/usr/share", "rw", "critical")],
)  # fmt: skip
def test_sensitive_shares(root: Paths, host: str, mode: str, severity: str) -> None:
    guest(root, "web", SAFE + f'V_SHARE="{host}:/mnt/x:{mode}"\n')
    f = one(audit(root), "GUEST-SHARE-SENSITIVE", "web")
    assert f.severity == severity
    assert f.fix == f"vserver --root {root.root} web set V_SHARE-={host}:/mnt/x:{mode}"


def test_usr_read_only_is_not_sensitive(root: Paths) -> None:
    guest(root, "web", SAFE + 'V_SHARE="/usr/share/doc:/doc"\n')
    assert by_rule(audit(root), "GUEST-SHARE-SENSITIVE") == []


def test_share_of_vstui_own_directory(root: Paths) -> None:
    guest(root, "web", SAFE + f'V_SHARE="{root.config_dir}:/cfg"\n')
    assert one(audit(root), "GUEST-SHARE-SENSITIVE").severity == "critical"


def test_onboot_guest_with_config_errors(root: Paths) -> None:
    guest(root, "web", SAFE + "ONBOOT=yes\nS_NICE=99\nV_PIDS=lots\n")
    f = one(audit(root), "GUEST-CONFIG-ERROR", "web")
    assert f.severity == "high" and len(f.details) == 2
    assert f.fix == f"vserver --root {root.root} web check"  # names each line to fix
    assert any("S_NICE" in d for d in f.details)
    guest(root, "web", SAFE + "S_NICE=99\n")
    assert one(audit(root), "GUEST-CONFIG-ERROR").severity == "low"


def test_duplicate_addresses_and_contexts(root: Paths) -> None:
    guest(root, "a", SAFE + "S_CONTEXT=40010\n")
    guest(root, "b", SAFE + "S_CONTEXT=40010\n")
    guest(root, "c", SAFE.replace("198.18.0.10", "198.18.0.11") + "S_CONTEXT=40011\n")
    rep = audit(root)
    assert {f.guest for f in by_rule(rep, "GUEST-DUP-ADDRESS")} == {"a", "b"}
    assert {f.guest for f in by_rule(rep, "GUEST-DUP-CONTEXT")} == {"a", "b"}
    assert (
        one(rep, "GUEST-DUP-ADDRESS", "a").title == "address 198.18.0.10 is also configured for b"
    )
    scoped = audit(root, guest="c")
    assert by_rule(scoped, "GUEST-DUP-ADDRESS") == [] == by_rule(scoped, "GUEST-DUP-CONTEXT")


def test_address_not_on_the_host_device_subnet(root: Paths) -> None:
    guest(
        root,
        "web",
        SAFE.replace("198.18.0.10", "198.19.5.5") + "V_NETMODE=macvlan\nIPROOTDEV=up0\n",
    )
    f = one(audit(root), "GUEST-ADDR-SUBNET")
    assert f.title == "address 198.19.5.5 is not on a subnet of host device up0"
    assert f.fix == f"vserver --root {root.root} web set V_NETMODE=veth IPROOTDEV="
    guest(root, "web", SAFE + "V_NETMODE=macvlan\nIPROOTDEV=up0\n")
    assert by_rule(audit(root), "GUEST-ADDR-SUBNET") == []
    guest(root, "web", SAFE + "V_NETMODE=ipvlan\nIPROOTDEV=nosuchdev9\n")
    assert "does not exist" in one(audit(root), "GUEST-ADDR-SUBNET").title


# -- running guests (this test process stands in for a guest's init) -----------------------------


def fake_running(paths: Paths, name: str, pid: int | None = None, start: int | None = None) -> None:
    from engine.runtime.state import proc_starttime

    pid = pid or os.getpid()
    run = paths.run_dir(name)
    run.mkdir(parents=True, exist_ok=True)
    values = {"state": "running", "init.pid": pid, "xid": 40001, "started": 1.0,
              "init.start": start if start is not None else proc_starttime(pid)}  # fmt: skip
    for key, value in values.items():
        (run / key).write_text(f"{value}\n")


def caps_words_matching(pid: int) -> str:
    """S_CAPS that gives exactly the bounding set ``pid`` has."""
    from engine import caps

    live = caps.read_bounding_set(pid) & caps.all_caps()
    words = [*sorted(live - caps.DEFAULT_GUEST_CAPS), *(f"!{c}" for c in sorted(
        caps.DEFAULT_GUEST_CAPS - live))]  # fmt: skip
    return " ".join(words)


def test_running_caps_drift(root: Paths) -> None:
    from engine import caps

    guest(root, "web", SAFE)
    fake_running(root, "web")
    f = one(audit(root), "RUN-CAPS-DRIFT", "web")
    extra = caps.read_bounding_set(os.getpid()) - caps.DEFAULT_GUEST_CAPS
    assert f.fix == f"vserver --root {root.root} web restart"
    assert f.severity == ("high" if extra else "low")
    guest(root, "web", SAFE + f'S_CAPS="{caps_words_matching(os.getpid())}"\n')
    assert by_rule(audit(root), "RUN-CAPS-DRIFT") == []


def test_running_addresses_drift(root: Paths) -> None:
    from engine.audit.facts import netns_addresses

    guest(root, "web", SAFE.replace("198.18.0.10", "198.18.77.7"))
    fake_running(root, "web")
    f = one(audit(root), "RUN-ADDR-DRIFT", "web")
    assert any("198.18.77.7" in d for d in f.details)
    live = " ".join(sorted(netns_addresses(os.getpid())))
    guest(root, "web", SAFE.replace('IPROOT="198.18.0.10/24"', f'IPROOT="{live}"'))
    assert by_rule(audit(root), "RUN-ADDR-DRIFT") == []


def test_running_guest_without_cgroup(root: Paths) -> None:
    guest(root, "web", SAFE)
    fake_running(root, "web")
    f = one(audit(root), "RUN-LIMIT-DRIFT", "web")
    assert "has no cgroup" in f.title and f.fix == f"vserver --root {root.root} web restart"


def test_stale_run_directory(root: Paths) -> None:
    guest(root, "web", SAFE)
    fake_running(root, "web", start=1)  # another start time: not that process any more
    rep = audit(root)
    assert one(rep, "RUN-STALE", "web").fix == f"vserver --root {root.root} web stop"
    assert by_rule(rep, "RUN-CAPS-DRIFT") == []


def test_host_process_on_a_guest_address(root: Paths) -> None:
    guest(root, "web", SAFE)
    listeners = [Listener("tcp", "198.18.0.10", 80, 555, "nginx"),
                 Listener("tcp", "198.18.0.99", 80, 556, "nginx")]  # fmt: skip
    f = one(audit(root, src=sources(listeners=lambda: listeners)), "RUN-HOST-LISTENER", "web")
    assert f.title.startswith("nginx (pid 555) in context 0 listens on 198.18.0.10:80/tcp")
    assert f.fix.startswith("kill 555")


def test_guest_process_on_its_own_address_is_fine(root: Paths) -> None:
    guest(root, "web", SAFE)
    fake_running(root, "web")
    me = os.getpid()
    src = sources(listeners=lambda: [Listener("tcp", "198.18.0.10", 80, me, "nginx")],
                  members=lambda paths, name: {me})  # fmt: skip
    assert by_rule(audit(root, src=src), "RUN-HOST-LISTENER") == []


def test_near_limits() -> None:
    from engine.audit.context import Audit
    from engine.audit.facts import Facts
    from engine.audit.model import Collector
    from engine.audit.running import near_limit
    from engine.cgroups import CgroupStats
    from engine.config import GuestConfig

    a = Audit(Paths.from_root("/nonexistent"), Facts(sources()), Collector())
    cfg = GuestConfig(name="web")
    near_limit(a, cfg, CgroupStats(950 << 20, 1 << 30, 95, 100, 0, 3))
    near_limit(a, cfg, CgroupStats(10 << 20, 1 << 30, 5, 100, 0, 3))
    titles = sorted(f.title for f in a.col.findings)
    assert titles == ["memory: 950M of 1G used (92%)", "processes: 95 of 100 used (95%)"]
    assert {f.fix for f in a.col.findings} == {
        "vserver --root /nonexistent web set V_MEMORY=2G",
        "vserver --root /nonexistent web set V_PIDS=200",
    }


# -- the whole ---------------------------------------------------------------------------------


def tree_state(base: Path) -> dict[str, tuple[int, int, int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [".", *dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            found[p] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns)
    return found


def cgroup_and_links(paths: Paths) -> tuple[list[str], list[str]]:
    cg = sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{paths.cgroup_base}"))
    return cg, leaks.links_seen_by(paths)


def test_audit_writes_nothing(root: Paths) -> None:
    guest(root, "web", SAFE + 'S_CAPS="SYS_ADMIN"\nV_NETMODE=host\nV_SHARE="/etc:/e:rw"\n',
          mode=0o666)  # fmt: skip
    guest(root, "db", "S_NICE=99\nONBOOT=yes\n")
    write_sshd(root, "PermitRootLogin yes\n")
    fake_running(root, "db")
    fake_running(root, "web", start=1)
    root.vservers_dir.chmod(0o755)
    before, kernel = tree_state(root.root), cgroup_and_links(root)
    rep = audit(root, src=sources(listeners=lambda: [SSHD_LISTENER]))
    assert len(rep.findings) > 10
    assert tree_state(root.root) == before
    assert cgroup_and_links(root) == kernel


def test_guest_scope_and_errors(root: Paths) -> None:
    guest(root, "web", SAFE + "V_NETMODE=host\n")
    guest(root, "db", 'S_FLAGS="fakeinit"\n')
    root.vservers_dir.chmod(0o755)
    rep = audit(root, guest="web")
    assert {f.guest for f in rep.findings} == {"web"}
    assert by_rule(rep, "HOST-BARRIER") == []
    with pytest.raises(GuestNotFound):
        audit(root, guest="nope")
    with pytest.raises(VstuiError, match="unknown severity"):
        audit(root, min_severity="urgent")


def test_min_severity_filters(root: Paths) -> None:
    guest(root, "web", 'S_CAPS="SYS_ADMIN"\n')
    rep = audit(root, min_severity="high")
    assert rep.findings and all(rank(f.severity) >= rank("high") for f in rep.findings)


def test_unreadable_config_is_reported_not_clean(root: Paths) -> None:
    if ME == 0:
        pytest.skip("root reads every file")
    guest(root, "web", SAFE, mode=0o000)
    rep = audit(root)
    assert any(u.guest == "web" for u in rep.unreadable) and not rep.clean


def test_every_rule_documented() -> None:
    assert all(r.severity in ("critical", "high", "medium", "low", "info") for r in RULES.values())
    assert rules_markdown() in DOCS.read_text()


def test_findings_frozen(root: Paths) -> None:
    guest(root, "web", 'S_CAPS="SYS_ADMIN"\n')
    f = audit(root).findings[0]
    with pytest.raises(AttributeError):
        f.severity = "low"  # type: ignore[misc]
    assert stat.S_ISDIR(os.lstat(root.root).st_mode)
