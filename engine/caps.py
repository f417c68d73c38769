"""Linux capabilities: names <-> numbers, the guest's default set, S_CAPS.

The default guest set is util-vserver's "secure" bounding set (reference
section 3): file-owner powers, setuid/setgid, kill, binding low ports,
chroot, ptrace (inside the guest's own PID namespace), tty config and
leases. We add SYS_BOOT: inside a PID namespace reboot(2) only signals the
guest's own init (kernel/reboot.c, reboot_pid_ns), which is how a guest
reboots itself; util-vserver also kept it when vshelper was available.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from engine.errors import UnknownCapability
from engine.procfs import read_text

# include/uapi/linux/capability.h; one line of explanation each (for the editor).
CAPABILITIES: dict[str, tuple[int, str]] = {
    "CHOWN": (0, "change file owners and groups"),
    "DAC_OVERRIDE": (1, "bypass file read/write/execute permission checks"),
    "DAC_READ_SEARCH": (2, "bypass file read and directory search checks"),
    "FOWNER": (3, "act as the owner of any file (chmod, utime, ...)"),
    "FSETID": (4, "keep set-user/group-id bits when changing a file"),
    "KILL": (5, "send signals to processes of other users"),
    "SETGID": (6, "change group ids"),
    "SETUID": (7, "change user ids"),
    "SETPCAP": (8, "change capability sets and securebits"),
    "LINUX_IMMUTABLE": (9, "set the immutable and append-only file attributes"),
    "NET_BIND_SERVICE": (10, "bind to ports below 1024"),
    "NET_BROADCAST": (11, "broadcast and listen to multicast"),
    "NET_ADMIN": (12, "configure interfaces, routes, firewall, addresses"),
    "NET_RAW": (13, "use raw and packet sockets (ping, spoofing)"),
    "IPC_LOCK": (14, "lock memory (mlock, SHM_LOCK)"),
    "IPC_OWNER": (15, "bypass System V IPC permission checks"),
    "SYS_MODULE": (16, "load and unload kernel modules"),
    "SYS_RAWIO": (17, "raw I/O: iopl, ioperm, /dev/mem"),
    "SYS_CHROOT": (18, "use chroot(2)"),
    "SYS_PTRACE": (19, "trace any process (within the guest's PID namespace)"),
    "SYS_PACCT": (20, "switch process accounting on and off"),
    "SYS_ADMIN": (21, "mount, namespaces and much more: almost root on the host"),
    "SYS_BOOT": (22, "reboot; inside a guest it restarts the guest only"),
    "SYS_NICE": (23, "raise priority, change other processes' scheduling"),
    "SYS_RESOURCE": (24, "override resource limits and quotas"),
    "SYS_TIME": (25, "set the system clock (the host's clock)"),
    "SYS_TTY_CONFIG": (26, "vhangup and other tty configuration"),
    "MKNOD": (27, "create device nodes"),
    "LEASE": (28, "take file leases"),
    "AUDIT_WRITE": (29, "write to the kernel audit log"),
    "AUDIT_CONTROL": (30, "configure kernel auditing"),
    "SETFCAP": (31, "set file capabilities"),
    "MAC_OVERRIDE": (32, "override mandatory access control"),
    "MAC_ADMIN": (33, "configure mandatory access control"),
    "SYSLOG": (34, "read and clear the kernel log"),
    "WAKE_ALARM": (35, "set alarms that wake the system"),
    "BLOCK_SUSPEND": (36, "block system suspend"),
    "AUDIT_READ": (37, "read the audit log over netlink"),
    "PERFMON": (38, "use perf_event_open and other performance monitoring"),
    "BPF": (39, "load BPF programs and create maps"),
    "CHECKPOINT_RESTORE": (40, "checkpoint/restore operations (set_tid, ns_last_pid)"),
}

NAMES_BY_NUMBER: dict[int, str] = {num: name for name, (num, _) in CAPABILITIES.items()}

DEFAULT_GUEST_CAPS: frozenset[str] = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
        "SETGID", "SETUID", "NET_BIND_SERVICE", "SYS_CHROOT", "SYS_PTRACE",
        "SYS_TTY_CONFIG", "LEASE", "SYS_BOOT",
    }
)  # fmt: skip


@cache
def last_cap() -> int:
    """The running kernel's highest capability number."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(NAMES_BY_NUMBER)


def all_caps() -> frozenset[str]:
    """Every capability the running kernel knows by name."""
    top = last_cap()
    return frozenset(n for n, (num, _) in CAPABILITIES.items() if num <= top)


def normalize(word: str, guest: str | None = None) -> str:
    """``cap_net_raw`` / ``CAP_NET_RAW`` / ``net_raw`` -> ``NET_RAW``."""
    name = word.strip().upper()
    if name.startswith("CAP_"):
        name = name[4:]
    if name not in CAPABILITIES:
        raise UnknownCapability(
            f"unknown capability '{word}'; see `reducecap --list` for the names", guest
        )
    return name


def number(name: str) -> int:
    return CAPABILITIES[normalize(name)][0]


def explain(name: str) -> str:
    return CAPABILITIES[normalize(name)][1]


def effective_set(words: Iterable[str], guest: str | None = None) -> frozenset[str]:
    """The default guest set with S_CAPS words applied (``X`` adds, ``!X`` drops)."""
    caps = set(DEFAULT_GUEST_CAPS)
    for word in words:
        if word.startswith(("!", "~")):
            caps.discard(normalize(word[1:], guest))
        else:
            caps.add(normalize(word, guest))
    return frozenset(caps)


def to_mask(caps: Iterable[str]) -> int:
    mask = 0
    for cap in caps:
        mask |= 1 << number(cap)
    return mask


def from_mask(mask: int) -> frozenset[str]:
    return frozenset(name for num, name in NAMES_BY_NUMBER.items() if mask >> num & 1)


def read_bounding_set(pid: int | str = "self") -> frozenset[str]:
    """CapBnd of a process, by name."""
    return from_mask(read_status_mask(pid, "CapBnd"))


def read_status_mask(pid: int | str, field: str) -> int:
    for line in read_text(f"/proc/{pid}/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise KeyError(field)


def drop_bounding_set(keep: Iterable[str]) -> None:
    """Drop every capability not in ``keep`` from this process's bounding set.

    Also clears the ambient set and the inheritable set, so an exec'd
    program cannot get back what was dropped. Needs CAP_SETPCAP.
    """
    from engine import _libc

    keep_numbers = {number(c) for c in keep}
    for num in range(last_cap() + 1):
        if num not in keep_numbers:
            _libc.capbset_drop(num)
    _libc.clear_ambient()
    _libc.clear_inheritable()


def limit_own(keep: Iterable[str]) -> None:
    """Cut this process's effective and permitted sets to ``keep`` (python-prctl).

    For a process that stays around beside a confined one (chcontext's
    reaper): it must not be a ptrace target holding capabilities the
    confined process lacks.
    """
    import prctl

    wanted = [getattr(prctl, f"CAP_{name}") for name in keep if hasattr(prctl, f"CAP_{name}")]
    prctl.cap_effective.limit(*wanted)
    prctl.cap_permitted.limit(*wanted)


def show(caps: Iterable[str]) -> str:
    """Names sorted by number, the way reducecap --show prints them."""
    return " ".join(f"CAP_{n}" for n in sorted(caps, key=number))


__all__ = [
    "CAPABILITIES",
    "DEFAULT_GUEST_CAPS",
    "all_caps",
    "drop_bounding_set",
    "effective_set",
    "explain",
    "from_mask",
    "last_cap",
    "normalize",
    "number",
    "read_bounding_set",
    "show",
    "to_mask",
]
