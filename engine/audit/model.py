"""The audit's data: rules, findings, what could not be read, the report.

``RULES`` is the one catalogue of checks; docs/audit.md is generated from it
(``rules_markdown``) and a test keeps the two equal. A ``Finding`` takes its
rule's severity and reason unless the check has a sharper one.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any

from engine.text import visible

SEVERITIES = ("critical", "high", "medium", "low", "info")  # worst first
_RANK = {name: len(SEVERITIES) - i for i, name in enumerate(SEVERITIES)}


def rank(severity: str) -> int:
    """critical 5 ... info 1; ValueError for an unknown word."""
    try:
        return _RANK[severity]
    except KeyError:
        raise ValueError(
            f"unknown severity '{severity}'; use one of {', '.join(SEVERITIES)}"
        ) from None


@dataclass(frozen=True, slots=True)
class Rule:
    """One check, as documented: id, severity, what it finds, why, the fix."""

    id: str
    severity: str
    area: str  # host | guest | running
    what: str
    why: str
    fix: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found: what, why it matters (one sentence), the exact fix."""

    rule_id: str
    severity: str
    guest: str | None
    title: str
    why: str
    fix: str
    details: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule_id,
            "severity": self.severity,
            "guest": self.guest,
            "title": self.title,
            "why": self.why,
            "fix": self.fix,
            "details": list(self.details),
        }


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Something the audit could not read: not checked, so not known clean."""

    what: str
    reason: str
    guest: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "reason": self.reason, "guest": self.guest}


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Findings worst first, and what could not be read."""

    findings: tuple[Finding, ...] = ()
    unreadable: tuple[Unreadable, ...] = ()

    def at_or_above(self, severity: str) -> tuple[Finding, ...]:
        floor = rank(severity)
        return tuple(f for f in self.findings if rank(f.severity) >= floor)

    @property
    def clean(self) -> bool:
        """No finding and nothing left unread."""
        return not self.findings and not self.unreadable

    def counts(self) -> dict[str, int]:
        found = {s: 0 for s in SEVERITIES}
        for f in self.findings:
            found[f.severity] += 1
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "counts": self.counts(),
            "findings": [f.as_dict() for f in self.findings],
            "unreadable": [u.as_dict() for u in self.unreadable],
        }


@dataclass(slots=True)
class Collector:
    """What the checks add to while they run; ``report()`` freezes it."""

    findings: list[Finding] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    def add(
        self,
        rule_id: str,
        title: str,
        fix: str,
        guest: str | None = None,
        details: tuple[str, ...] | list[str] = (),
        severity: str | None = None,
        why: str | None = None,
    ) -> None:
        rule = RULES[rule_id]
        # titles and details quote what guests chose (file names, commands,
        # process names): made visible once, here, for every front end
        self.findings.append(
            Finding(rule_id, severity or rule.severity, guest, visible(title),
                    visible(why or rule.why), visible(fix), tuple(map(visible, details)))
        )  # fmt: skip

    def cannot_read(self, what: str, exc: BaseException | str, guest: str | None = None) -> None:
        self.unreadable.append(Unreadable(visible(str(what)), visible(reason_of(exc)), guest))

    def report(self) -> AuditReport:
        findings = sorted(
            dict.fromkeys(self.findings),
            key=lambda f: (-rank(f.severity), f.guest or "", f.rule_id, f.title),
        )
        unread = sorted(dict.fromkeys(self.unreadable), key=lambda u: (u.guest or "", u.what))
        return AuditReport(tuple(findings), tuple(unread))


def reason_of(exc: BaseException | str) -> str:
    """A short reason; permission errors say that root would see more."""
    if isinstance(exc, str):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (run the audit as root)"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


# -- the catalogue -----------------------------------------------------------------

_R = Rule
RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        # host
        _R("HOST-BARRIER", "high", "host",
           "/vservers (the guests' parent) is not mode 000 or not owned by root",
           "a non-root host user who can enter /vservers can reach guest trees and run "
           "a guest's setuid programs or read its files",
           "chown root:root /vservers && chmod 000 /vservers"),
        _R("HOST-GUEST-REACHABLE", "critical", "host",
           "a guest root can be reached by a non-root host user: every directory above it "
           "is traversable by others and the barrier is missing",
           "a host user can run setuid-root programs that the guest's root planted, "
           "and so become root on the host",
           "chmod 000 /vservers"),
        _R("HOST-GUEST-ROOT-PERMS", "high", "host",
           "a guest root is a symlink, not owned by root, or writable by group or others",
           "whoever can write the guest's / can replace its programs and take over the guest",
           "chown root:root /vservers/NAME && chmod 755 /vservers/NAME"),
        _R("HOST-WILDCARD-LISTENER", "high", "host",
           "a host service listens on a wildcard address (0.0.0.0 or ::) while guests share "
           "the host's devices (V_NETMODE host/ipvlan/macvlan or a guest address on a host "
           "device), or while veth guests reach it through the host's own addresses (a routed "
           "guest through every host address, a bridged one through the bridge's); medium "
           "when only ipvlan/macvlan or veth guests do",
           "the host service then also answers on the guests' side of the network, where "
           "the guests' users and clients can reach it",
           "bind the service to 127.0.0.1 or the host address it serves (e.g. sshd: "
           "`ListenAddress ADDR`); veth guests reach every host address, so a wildcard is "
           "never private to the host"),
        _R("HOST-BRIDGE-ACCEPT-RA", "medium", "host",
           "a bridge that carries guests (V_BRIDGE) takes router advertisements "
           "(net.ipv6.conf.BR.accept_ra 1 without forwarding, or 2); high when a guest on it "
           "has V_NET_FILTER=no, low when every guest on it is filtered",
           "one router advertisement from the bridge's segment sets the host's hop limit, "
           "MTU and default route on that bridge",
           "sysctl -w net.ipv6.conf.BR.accept_ra=0 (and in /etc/sysctl.d), unless the host "
           "takes its own IPv6 configuration from that LAN"),
        _R("HOST-SSHD-PASSWORD", "medium", "host",
           "the host's sshd accepts passwords (PasswordAuthentication, or keyboard-interactive "
           "through PAM; OpenSSH's default is yes)",
           "a host that runs guests for others is a target for password guessing, and one "
           "guessed password opens the host",
           "`PasswordAuthentication no` (and `KbdInteractiveAuthentication no`) first in "
           "/etc/ssh/sshd_config, then reload sshd"),
        _R("HOST-SSHD-ROOT-PASSWORD", "high", "host",
           "the host's sshd lets root log in with a password (PermitRootLogin yes and "
           "passwords accepted)",
           "root's password then opens every guest at once",
           "`PermitRootLogin prohibit-password` in /etc/ssh/sshd_config, then reload sshd"),
        _R("HOST-CONFIG-WRITABLE", "critical", "host",
           "/etc/vserver, /etc/vservers or a NAME.conf is writable by someone other than root",
           "whoever writes a guest's configuration chooses its capabilities and shares, "
           "which is root on the host at the guest's next start",
           "chown root:root PATH && chmod go-w PATH"),
        _R("HOST-RUNDIR-WRITABLE", "high", "host",
           "a vstui run, state, log or image directory (or a file in /run/vservers) is "
           "writable by someone other than root",
           "a forged init.pid makes `vserver stop` signal the wrong process, and a changed "
           "image is a file system the host mounts as root",
           "chown root:root PATH && chmod go-w PATH"),
        _R("HOST-CGROUP-CONTROLLER", "high", "host",
           "a guest configures a limit (memory, pids, cpu) whose cgroup controller the host "
           "does not have",
           "the limit cannot be enforced: the guest fails to start or runs unlimited",
           "mount the controller (v1: `mount -t cgroup -o memory cgroup "
           "/sys/fs/cgroup/memory`) or enable it on cgroup2 (`echo +memory > "
           "/sys/fs/cgroup/cgroup.subtree_control`)"),
        _R("HOST-USERNS", "high", "host",
           "user namespaces are switched off (user.max_user_namespaces = 0) while guests "
           "run in their own (V_USERNS=yes, the default)",
           "those guests cannot start",
           "sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d)"),
        # guest configuration
        _R("GUEST-CONFIG-ERROR", "high", "guest",
           "a guest started at boot (ONBOOT=yes) has configuration errors (`vserver NAME "
           "check` fails); low for guests not started at boot",
           "the guest will not come up after a reboot, which nobody notices until it is needed",
           "fix each line `vserver NAME check` names, then run it again"),
        _R("GUEST-CAP-SYS_ADMIN", "critical", "guest",
           "S_CAPS adds CAP_SYS_ADMIN",
           "SYS_ADMIN allows mounts, namespaces and many device ioctls: effectively root "
           "on the host",
           'remove CAP_SYS_ADMIN from S_CAPS (e.g. S_CAPS="")'),
        _R("GUEST-CAP-SYS_MODULE", "critical", "guest",
           "S_CAPS adds CAP_SYS_MODULE",
           "loading a kernel module is running code in the host's kernel",
           "remove CAP_SYS_MODULE from S_CAPS"),
        _R("GUEST-CAP-SYS_RAWIO", "critical", "guest",
           "S_CAPS adds CAP_SYS_RAWIO",
           "raw I/O (iopl, /dev/mem, raw disk access) reads and writes the host's memory "
           "and disks directly",
           "remove CAP_SYS_RAWIO from S_CAPS"),
        _R("GUEST-CAP-HIGH", "high", "guest",
           "S_CAPS adds a capability that reaches the host: SYS_TIME (host clock), MKNOD "
           "(device nodes), BPF, PERFMON, SYSLOG, MAC_ADMIN, MAC_OVERRIDE, or NET_ADMIN with "
           "V_NETMODE=host (SYS_PTRACE is in the default set "
           "and never sees the host: a guest always has its own PID namespace)",
           "each of these acts on kernel-wide state that the guest shares with the host",
           "remove the capability from S_CAPS"),
        _R("GUEST-CAP-NET", "medium", "guest",
           "S_CAPS adds NET_ADMIN (own network namespace) or NET_RAW, rated by network mode: "
           "low for a routed veth guest (the host end drops foreign sources), medium bridged "
           "(it reaches the segment's other hosts at layer 2) or routed with V_NET_FILTER=no, "
           "high with V_NETMODE host, ipvlan or macvlan, or bridged with V_NET_FILTER=no",
           "NET_RAW forges packets and NET_ADMIN reconfigures the guest's links, routes and "
           "firewall, around the host's filtering",
           "remove CAP_NET_ADMIN / CAP_NET_RAW from S_CAPS"),
        _R("GUEST-CAP-OTHER", "low", "guest",
           "S_CAPS adds another capability beyond the default set",
           "every capability beyond the default set widens what the guest's root can do",
           "remove it from S_CAPS unless the guest needs it"),
        _R("GUEST-CAP-DAC_READ_SEARCH", "high", "guest",
           "the guest keeps CAP_DAC_READ_SEARCH, has shared directories and V_SECCOMP allows "
           "open_by_handle_at (low when seccomp still refuses it)",
           "with open_by_handle_at, DAC_READ_SEARCH opens any file of the shared file system "
           "by inode number, outside the share (the \"Shocker\" escape)",
           'remove +open_by_handle_at from V_SECCOMP, or add !CAP_DAC_READ_SEARCH to S_CAPS'),
        _R("GUEST-SECCOMP-ALLOW", "high", "guest",
           "V_SECCOMP allows a system call the default filter refuses (+name)",
           "the default filter refuses these calls because they reach host-wide kernel state "
           "or widen kernel attack surface",
           "remove the +NAME word from V_SECCOMP"),
        _R("GUEST-PRIVILEGED", "high", "guest",
           "V_USERNS=no: the guest runs without a user namespace, its root is the host's root",
           "the capability bounding set, seccomp and the barrier are then the only walls "
           "between the guest's root and the host: one kernel bug reachable with its "
           "capabilities, or one S_CAPS too many, and it owns the host",
           "remove V_USERNS=no (the guest then gets its own block of host ids, and its tree "
           "is seen through an idmapped mount: nothing is chowned); keep it only for guests "
           "that need host ids, with S_CAPS at the default and S_FLAGS=\"lock\""),
        _R("GUEST-IDS-SHARED", "high", "guest",
           "a host user or group, another owner's /etc/subuid or /etc/subgid range, or "
           "another guest holds ids inside the guest's block of host ids (critical for "
           "two guests)",
           "the guest's users are then that user on the host: its files, its processes' "
           "per-user limits, and signals or ptrace where both meet",
           "move the host user or group to an id below 524288, or remove the range from "
           "/etc/subuid and /etc/subgid"),
        _R("GUEST-NO-LOCK", "low", "guest",
           "S_FLAGS has no `lock` flag",
           "without it the guest's processes may call unshare and setns, which widens what "
           "a compromised guest can try against the kernel",
           'add lock to S_FLAGS (S_FLAGS="lock ...")'),
        _R("GUEST-NO-PROC-LIMIT", "medium", "guest",
           "no process limit (V_PIDS, or ULIMIT -u with the nproc flag)",
           "a fork bomb in the guest exhausts the host's process table",
           "V_PIDS=500"),
        _R("GUEST-NO-MEMORY-LIMIT", "medium", "guest",
           "no memory limit (V_MEMORY)",
           "the guest can use all the host's memory and make the kernel kill host processes",
           "V_MEMORY=512M"),
        _R("GUEST-NO-CPU-LIMIT", "low", "guest",
           "no CPU limit (V_CPU_QUOTA or V_CPU_WEIGHT)",
           "the guest can keep every CPU of the host busy",
           "V_CPU_QUOTA=100%"),
        _R("GUEST-NO-DISK-LIMIT", "medium", "guest",
           "no disk limit (V_DISK), or V_DISK_BACKEND=none so V_DISK is not enforced",
           "the guest can fill the host's file system, and the host's own services fail "
           "with it",
           "V_DISK=2G (with V_DISK_BACKEND=image or project)"),
        _R("GUEST-INIT-MISSING", "high", "guest",
           "S_FLAGS has fakeinit but /sbin/init in the guest tree is missing or not "
           "executable",
           "the guest cannot start: its init cannot be executed",
           "install an init in the guest (apt-get install systemd-sysv) or remove fakeinit"),
        _R("GUEST-SYSTEMD-SETPCAP", "low", "guest",
           "the guest boots systemd without CAP_SETPCAP",
           "systemd drops capabilities from each service's bounding set, which needs "
           "CAP_SETPCAP: journald, logind and others fail with 218/CAPABILITIES",
           "add S_CAPS=SETPCAP"),
        _R("GUEST-NET-FILTER-OFF", "medium", "guest",
           "V_NET_FILTER=no: a bridged guest's frames are not checked (low for a routed "
           "guest: no source check on its host end)",
           "the guest can send from other MACs and addresses, answer ARP and neighbour "
           "discovery for them, and send router advertisements and DHCP offers to the segment",
           "remove V_NET_FILTER=no unless the guest must route or serve DHCP on that segment"),
        _R("GUEST-NET-ROUTE", "info", "guest",
           "V_ROUTE lets a routed guest leave through host devices (medium for `any`: every "
           "network the host reaches)",
           "the guest reaches those networks, not only other guests and the host",
           "V_ROUTE names only the devices the guest needs (DEV or DEV:nat)"),
        _R("GUEST-NETMODE-HOST", "high", "guest",
           "V_NETMODE=host: the guest shares the host's network stack",
           "the guest sees and binds every host address and port and reaches host-only "
           "services on 127.0.0.1",
           "V_NETMODE=veth"),
        _R("GUEST-SHARE-RW", "medium", "guest",
           "a shared directory (V_SHARE) is read-write",
           "the guest's root can change files that the host or other guests trust",
           "V_SHARE=\"HOST:GUEST:ro\" (ro is the default when no mode is written)"),
        _R("GUEST-SHARE-SENSITIVE", "critical", "guest",
           "a shared directory holds host-sensitive paths (/, /etc, /root, /home, /run, "
           "/var/run/docker.sock, /boot, /dev, /proc, /sys, vstui's own directories, or /usr "
           "read-write); high when read-only and not one of /, /etc, /root, /run, /dev, "
           "/proc, /sys or the docker socket",
           "the guest's root reads host secrets or changes what the host runs",
           "share a dedicated directory instead (e.g. V_SHARE=\"/srv/NAME:/srv:ro\")"),
        _R("GUEST-DUP-ADDRESS", "high", "guest",
           "two guests are configured with the same IP address",
           "the second one to start fails, or both answer for the address and traffic goes "
           "to the wrong guest",
           "give one of them another address in IPROOT"),
        _R("GUEST-DUP-CONTEXT", "high", "guest",
           "two guests have the same context id (S_CONTEXT)",
           "tools that work by context id (vps, vkill, quota) then mix the two guests up",
           "remove S_CONTEXT from one of them (an id is then allocated) or give it another"),
        _R("GUEST-ADDR-SUBNET", "medium", "guest",
           "an ipvlan/macvlan guest's address is not on a subnet of its host device "
           "(IPROOTDEV or dev:), or that device does not exist",
           "the guest cannot reach its gateway and its packets leave with an address the "
           "network does not route back",
           "use an address from the device's subnet in IPROOT, or set IPROOTDEV to the "
           "device that carries that subnet"),
        # running guests
        _R("RUN-HOST-LISTENER", "high", "running",
           "a host process (context 0) listens on a guest's address",
           "clients of the guest talk to a host service instead, with the host's privileges",
           "stop that service or bind it to a host address (kill PID, or fix its "
           "listen option)"),
        _R("RUN-CAPS-DRIFT", "high", "running",
           "a running guest's capability bounding set (CapBnd of its init) is not what its "
           "configuration says; low when it has fewer than configured",
           "the guest runs with powers the configuration no longer grants, so the "
           "configuration lies about the guest",
           "vserver NAME restart"),
        _R("RUN-LIMIT-DRIFT", "medium", "running",
           "a running guest's cgroup limits (memory, pids, cpu quota) differ from its "
           "configuration, or its cgroup is missing",
           "the limits in force are not the ones the configuration promises",
           "vserver NAME restart"),
        _R("RUN-ADDR-DRIFT", "medium", "running",
           "a running guest's addresses (inside its network namespace) differ from IPROOT",
           "the guest answers on addresses its configuration does not list, or misses its own",
           "vserver NAME restart"),
        _R("RUN-NEAR-LIMIT", "medium", "running",
           "a guest uses over 90% of a limit: memory, processes or disk",
           "at the limit its programs fail (out of memory, fork or write errors)",
           "raise the limit (e.g. V_MEMORY=1G, V_PIDS=1000, `vserver NAME quota 4G`) or "
           "free space in the guest"),
        _R("RUN-FROZEN", "medium", "running",
           "a guest has been frozen (vserver NAME freeze) for more than an hour",
           "its services answer nobody while it looks up in every list; a freeze taken for "
           "a backup and forgotten is an outage",
           "vserver NAME thaw"),
        _R("RUN-STALE", "low", "running",
           "a guest's run directory says it runs but its init is gone",
           "status, vps and the console show a guest that is not there",
           "vserver NAME stop"),
    )
}  # fmt: skip


def rules_markdown() -> str:
    """docs/audit.md's table of rules, generated from ``RULES``."""
    rows = ["| id | severity | what | why | fix |", "|---|---|---|---|---|"]
    for r in RULES.values():
        cells = (f"`{r.id}`", r.severity, r.what, r.why, r.fix)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
