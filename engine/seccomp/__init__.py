"""The guest's seccomp filter: a denylist the engine assembles itself.

Every guest gets it: ``build_filter(cfg)`` assembles the program at start,
the start plan carries it, and the C executors install it as their very
last step before the guest's first exec (init, and every ``vserver NAME
exec``/``enter``), while the process is still privileged. Denied calls fail
with EPERM.

Default (comparable to moby's profile where it matters for a system
container, reference isolation-anchors.md section 1):

- refused: the kernel keyring (not namespaced), userfaultfd, kexec, module
  loading, bpf, perf_event_open, open_by_handle_at ("Shocker") and
  name_to_handle_at, io_uring, swap, acct, iopl/ioperm, lookup_dcookie and
  the new mount API (fsopen, fsconfig, fsmount, fspick, move_mount,
  open_tree, open_tree_attr, mount_setattr);
- socket(AF_NETLINK, *, NETLINK_AUDIT) fails with EPROTONOSUPPORT unless
  the guest has CAP_AUDIT_WRITE: guests are not in a user namespace, so
  their audit records would land in the host's audit log; sshd and libaudit
  read this error as "no audit in this kernel" and carry on (with EPERM,
  sshd kills every login that asks for a terminal);
- socket(AF_ALG) and socket(AF_VSOCK) refused; ioctl TIOCSTI and TIOCLINUX
  refused (a guest process holding a host terminal cannot type into it);
- ioctl BTRFS_IOC_SUBVOL_CREATE(_V2) and BTRFS_IOC_SNAP_CREATE(_V2) refused:
  they need no capability, and a new subvolume is not counted in its parent's
  qgroup, so a btrfs guest could write past its V_DISK (canonical/lxd#3135);
- new user namespaces refused (clone/unshare with CLONE_NEWUSER): the only
  namespace an unprivileged process may create, and the classic amplifier
  for kernel bugs. The other namespace flags need CAP_SYS_ADMIN, which
  guests lack. clone3 gets ENOSYS (its flags live in memory the filter
  cannot read); glibc then falls back to clone;
- foreign system call entry points (i386 ``int 0x80``, x32) kill the
  process;
- allowed on purpose: reboot (a guest's reboot only signals its own PID
  namespace), ptrace and kcmp (PID namespace + capabilities), quotactl,
  mount/umount/pivot_root (capabilities decide), personality.

With the ``lock`` flag: unshare and setns are refused, and clone with any
namespace flag.

``V_SECCOMP`` words adjust it per guest, in order: ``+name`` allows a call
(removes it from every rule, including the socket/clone/unshare/ioctl
argument checks and clone3's ENOSYS), ``-name`` or ``name`` refuses it with EPERM.

no_new_privs is NOT set: a system container runs setuid programs (su,
passwd, sudo, ping) that must keep working. The filter is installed with
CAP_SYS_ADMIN instead, and it is inherited across fork and execve, setuid
or not, so the guest cannot shed it.
"""

from __future__ import annotations

import errno

from engine import _libc
from engine.errors import ConfigError, KernelError
from engine.seccomp import bpf, syscalls

PR_SET_SECCOMP = 22  # include/uapi/linux/prctl.h
SECCOMP_MODE_FILTER = 2  # include/uapi/linux/seccomp.h

# include/uapi/asm-generic/ioctls.h (same on x86_64 and aarch64): typing into
# a terminal's input queue, the injection behind CVE-2017-5226 / CVE-2023-1523
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
# include/uapi/linux/btrfs.h: _IOW(0x94, nr, struct btrfs_ioctl_vol_args[_v2]), 4096 bytes
BTRFS_SUBVOLUME_MAKERS = frozenset(
    0x40000000 | 4096 << 16 | 0x94 << 8 | nr
    for nr in (1, 14, 23, 24)  # SNAP_CREATE, SUBVOL_CREATE, SNAP_CREATE_V2, SUBVOL_CREATE_V2
)

AF_NETLINK = 16  # include/linux/socket.h
AF_ALG = 38
AF_VSOCK = 40
NETLINK_AUDIT = 9  # include/uapi/linux/netlink.h

# include/uapi/linux/sched.h. CLONE_NEWTIME (0x80) exists for unshare and
# clone3 only: in clone()'s flags that byte is the exit signal.
CLONE_NEWTIME = 0x00000080
NAMESPACE_FLAGS = (
    _libc.CLONE_NEWNS
    | _libc.CLONE_NEWCGROUP
    | _libc.CLONE_NEWUTS
    | _libc.CLONE_NEWIPC
    | _libc.CLONE_NEWUSER
    | _libc.CLONE_NEWPID
    | _libc.CLONE_NEWNET
)

DEFAULT_DENY: frozenset[str] = frozenset(
    {
        # kernel keyring: one keyring per uid for the whole host
        "add_key", "keyctl", "request_key",
        "userfaultfd",  # widens kernel race windows
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "bpf", "perf_event_open",
        "open_by_handle_at", "name_to_handle_at",  # "Shocker": opens files by inode
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        "swapon", "swapoff", "acct", "iopl", "ioperm", "lookup_dcookie",
        # new mount API: needs CAP_SYS_ADMIN anyway; fsconfig was CVE-2022-0185
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
        "open_tree_attr", "mount_setattr",
    }
)  # fmt: skip
LOCK_DENY: frozenset[str] = frozenset({"unshare", "setns"})
DEFAULT_ENOSYS: frozenset[str] = frozenset({"clone3"})


TYPE_CHECKING = False  # not typing's: this is on every start's path
if TYPE_CHECKING:
    from typing import Protocol

    class SeccompConfig(Protocol):
        """What the filter reads from a guest's configuration (GuestConfig has it)."""

        name: str
        seccomp: tuple[str, ...]

        def has_flag(self, flag: str) -> bool: ...


def known_name(name: str) -> bool:
    """True if any supported architecture has a system call called ``name``."""
    return any(name in table for table in syscalls.TABLES.values())


def _word_error(cfg: SeccompConfig, word: str, reason: str) -> ConfigError:
    return ConfigError(
        f"{reason} {word!r} (words are +NAME to allow, -NAME to deny a system call)",
        path=getattr(cfg, "path", None),
        key="V_SECCOMP",
        guest=cfg.name,
    )


def parse_words(cfg: SeccompConfig) -> list[tuple[bool, str]]:
    """``(allow, name)`` for each V_SECCOMP word; ConfigError on a bad word."""
    parsed = []
    for word in cfg.seccomp:
        allow = word.startswith("+")
        name = word[1:] if word[:1] in "+-" else word
        if not name:
            raise _word_error(cfg, word, "empty system call name in")
        if not known_name(name):
            raise _word_error(cfg, word, "unknown system call")
        parsed.append((allow, name))
    return parsed


def _has_cap(cfg: SeccompConfig, cap: str) -> bool:
    effective = getattr(cfg, "effective_caps", None)
    return callable(effective) and cap in effective()


def policy(cfg: SeccompConfig, arch: str | None = None) -> bpf.Policy:
    """The filter's rules for ``cfg`` on ``arch`` (default: this machine)."""
    arch = arch or syscalls.native_arch()
    if arch not in syscalls.TABLES:
        raise KernelError("seccomp", arch, errno.ENOSYS, cfg.name, "no syscall table")
    locked = cfg.has_flag("lock")
    deny = set(DEFAULT_DENY | (LOCK_DENY if locked else frozenset()))
    enosys = set(DEFAULT_ENOSYS)
    ns_mask = NAMESPACE_FLAGS if locked else _libc.CLONE_NEWUSER
    no_audit = (
        ()
        if _has_cap(cfg, "AUDIT_WRITE")
        else (bpf.NestedRule(AF_NETLINK, 2, NETLINK_AUDIT, errno.EPROTONOSUPPORT),)
    )
    rules = {
        "socket": bpf.ArgRule("socket", values=frozenset({AF_ALG, AF_VSOCK}), nested=no_audit),
        "clone": bpf.ArgRule("clone", mask=ns_mask),
        "unshare": bpf.ArgRule("unshare", mask=ns_mask | (CLONE_NEWTIME if locked else 0)),
        "ioctl": bpf.ArgRule(
            "ioctl", values=frozenset({TIOCSTI, TIOCLINUX}) | BTRFS_SUBVOLUME_MAKERS, arg=1
        ),
    }
    for allow, name in parse_words(cfg):
        if allow:
            deny.discard(name)
            enosys.discard(name)
            rules.pop(name, None)
        else:
            deny.add(name)
            enosys.discard(name)
    return bpf.Policy(arch, frozenset(deny), frozenset(enosys), tuple(rules.values()))


def build_filter(cfg: SeccompConfig, arch: str | None = None) -> bytes:
    """The packed BPF program (``struct sock_filter[]``) for ``cfg``."""
    return bpf.pack(bpf.assemble(policy(cfg, arch)))


def install_program(program: bytes, guest: str | None = None) -> None:
    """Load a packed program into the calling thread (inherited by children).

    For chbind (engine.net.bind), which filters a host command in Python; a
    guest's program is installed by the C executors (vstui.h vs_confine).
    """
    import ctypes  # here: a start only builds programs

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    try:
        _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))
    except OSError as exc:
        hint = "needs CAP_SYS_ADMIN or no_new_privs" if exc.errno == errno.EACCES else ""
        raise KernelError("prctl", "PR_SET_SECCOMP", exc.errno or errno.EIO, guest, hint) from None
