"""The guest's seccomp filter: default-deny, built with libseccomp at plan time.

``build_filter(cfg)`` returns the finished, packed classic-BPF program; the
plan carries it and the executor loads it as the very last step before the
guest's first exec (init, and every ``vserver NAME exec``/``enter``), while
the process still holds CAP_SYS_ADMIN over the guest.

What it does (the families and their reasons: engine.seccomp.families,
shown in docs/escapes.md):

- a system call in the allowlist is allowed (capabilities and namespaces
  still decide what it may do);
- the known-dangerous ones (keyring, modules and kexec, bpf, perf,
  userfaultfd, io_uring, file handles, swap, acct, iopl, the new mount API)
  fail with EPERM;
- any other call, and any a future kernel adds, fails with ENOSYS, so libc
  and systemd take their fallback (clone3 is one: glibc then uses clone,
  whose flags the filter can read);
- argument checks on allowed calls (``ARG_DENIALS``): socket(AF_ALG) and
  socket(AF_VSOCK) EPERM, socket(AF_NETLINK, *, NETLINK_AUDIT)
  EPROTONOSUPPORT unless the guest has CAP_AUDIT_WRITE (sshd reads it as
  "no audit in this kernel"; with EPERM it would end terminal logins),
  ioctl TIOCSTI/TIOCLINUX EPERM (typing into a terminal, CVE-2017-5226),
  ioctl BTRFS_IOC_SUBVOL_CREATE/SNAP_CREATE (and _V2) EPERM (a new subvolume
  escapes its parent's qgroup, so a btrfs guest could pass its V_DISK),
  clone/unshare with CLONE_NEWUSER EPERM (with ``lock``: any namespace flag,
  and unshare and setns entirely). Each compares the argument's low 32
  bits only, under a mask: the kernel truncates these arguments to int
  itself, so a value with high bits set cannot slip past the check;
- a call through a foreign entry point (i386 ``int 0x80``, x32) kills the
  process: a 32-bit program that got an error from exit(2) would spin.

``V_SECCOMP`` words adjust it per guest, in order: ``+name`` allows a call
(and drops its argument checks), ``-name`` or ``name`` refuses it with
EPERM.

no_new_privs is NOT set: a system container runs setuid programs (su,
passwd, sudo, ping). The filter is installed with CAP_SYS_ADMIN instead and
is inherited across fork and execve, setuid or not.
"""

from __future__ import annotations

import errno

from engine import _libc
from engine._record import Record
from engine.errors import ConfigError, KernelError
from engine.seccomp import families, libseccomp, syscalls

PR_SET_SECCOMP = 22  # include/uapi/linux/prctl.h
SECCOMP_MODE_FILTER = 2  # include/uapi/linux/seccomp.h

# include/uapi/asm-generic/ioctls.h (same on x86_64 and aarch64): typing into
# a terminal's input queue, the injection behind CVE-2017-5226 / CVE-2023-1523
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
# include/uapi/linux/btrfs.h: _IOW(0x94, nr, struct btrfs_ioctl_vol_args[_v2]), 4096 bytes.
# They need no capability, and a new subvolume is not counted in its parent's
# qgroup, so a btrfs guest could write past its V_DISK (canonical/lxd#3135).
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
LOW_WORD = 0xFFFFFFFF

DEFAULT_ALLOW: frozenset[str] = families.names(families.ALLOWED)
DEFAULT_DENY: frozenset[str] = families.names(families.DENIED)
LOCK_DENY: frozenset[str] = frozenset(families.LOCK_DENIED.calls)


class Denial(Record):
    """Refuse allowed call ``name`` with ``err`` when, for every (arg, mask, value),
    ``args[arg] & mask == value``."""

    __slots__ = _fields = ("name", "err", "conds")
    name: str
    err: int
    conds: tuple[tuple[int, int, int], ...]


class Policy(Record):
    """What the filter does, by system call name, for one architecture."""

    __slots__ = _fields = ("arch", "allow", "deny", "denials")
    arch: str
    allow: frozenset[str]
    deny: frozenset[str]  # EPERM; everything in neither set: ENOSYS
    denials: tuple[Denial, ...]  # argument checks on allowed calls


TYPE_CHECKING = False  # not typing's: a fresh start plan builds the filter
if TYPE_CHECKING:
    from typing import Protocol

    class SeccompConfig(Protocol):
        """What the filter reads from a guest's configuration (GuestConfig has it)."""

        name: str
        seccomp: tuple[str, ...]

        def has_flag(self, flag: str) -> bool: ...


def known_name(name: str) -> bool:
    """True if any supported architecture has a system call called ``name``."""
    return syscalls.known_name(name)


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


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(32) if mask >> i & 1]


def arg_denials(cfg: SeccompConfig) -> tuple[Denial, ...]:
    """The argument checks of ``cfg``'s filter (before V_SECCOMP words)."""
    locked = cfg.has_flag("lock")
    clone_mask = NAMESPACE_FLAGS if locked else _libc.CLONE_NEWUSER
    unshare_mask = clone_mask | (CLONE_NEWTIME if locked else 0)
    out = [Denial("socket", errno.EPERM, ((0, LOW_WORD, family),)) for family in (AF_ALG, AF_VSOCK)]
    if not _has_cap(cfg, "AUDIT_WRITE"):
        audit = ((0, LOW_WORD, AF_NETLINK), (2, LOW_WORD, NETLINK_AUDIT))
        out.append(Denial("socket", errno.EPROTONOSUPPORT, audit))
    out += [Denial("clone", errno.EPERM, ((0, bit, bit),)) for bit in _bits(clone_mask)]
    out += [Denial("unshare", errno.EPERM, ((0, bit, bit),)) for bit in _bits(unshare_mask)]
    requests = sorted({TIOCSTI, TIOCLINUX} | BTRFS_SUBVOLUME_MAKERS)
    out += [Denial("ioctl", errno.EPERM, ((1, LOW_WORD, req),)) for req in requests]
    return tuple(out)


def policy(cfg: SeccompConfig, arch: str | None = None) -> Policy:
    """The filter's rules for ``cfg`` on ``arch`` (default: this machine)."""
    arch = arch or syscalls.native_arch()
    if arch not in syscalls.AUDIT_ARCH:
        raise KernelError("seccomp", arch, errno.ENOSYS, cfg.name, "no syscall table")
    allow = set(DEFAULT_ALLOW)
    deny = set(DEFAULT_DENY | (LOCK_DENY if cfg.has_flag("lock") else frozenset()))
    denials = list(arg_denials(cfg))
    for allowed, name in parse_words(cfg):
        if allowed:
            allow.add(name)
            deny.discard(name)
            denials = [d for d in denials if d.name != name]
        else:
            deny.add(name)
    allow -= deny
    denials = [d for d in denials if d.name in allow]
    return Policy(arch, frozenset(allow), frozenset(deny), tuple(denials))


def build_filter(cfg: SeccompConfig, arch: str | None = None) -> bytes:
    """The packed BPF program (``struct sock_filter[]``) for ``cfg``."""
    return compile_policy(policy(cfg, arch))


def _rule_number(name: str, arch: str) -> int | None:
    """The number libseccomp takes for ``name`` in a filter for ``arch``.

    libseccomp reads rule numbers as this machine's and translates them by
    name; for another architecture (tests, inspection) a call only our own
    table knows cannot be translated and is left out.
    """
    if arch != syscalls.native_arch():
        token = syscalls.AUDIT_ARCH[arch]
        if libseccomp.resolve(name, token) is None:
            return None
    return syscalls.number(name)


def denylist_program(deny: frozenset[str], denials: tuple[Denial, ...] = ()) -> bytes:
    """A program that allows everything but ``deny`` (EPERM) and ``denials``.

    For confining a host tool (chbind), never a guest: guests get build_filter().
    """
    pol = Policy(syscalls.native_arch(), frozenset(), deny, denials)
    return compile_policy(pol, default=libseccomp.ACT_ALLOW)


def install_program(program: bytes, guest: str | None = None) -> None:
    """Load a packed program into the calling thread (inherited by children).

    For chbind (engine.net.bind), which filters a host command in Python; a
    guest's program is installed by the C executors (vstui.h vs_confine).
    Needs CAP_SYS_ADMIN or no_new_privs.
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


def compile_policy(pol: Policy, default: int = libseccomp.act_errno(errno.ENOSYS)) -> bytes:
    """libseccomp's program for ``pol``: ``default`` (ENOSYS), kill on a foreign arch."""
    numbers = {
        n: _rule_number(n, pol.arch) for n in pol.allow | pol.deny | {d.name for d in pol.denials}
    }
    filt = libseccomp.Filter(default, syscalls.AUDIT_ARCH[pol.arch])
    try:
        for name in sorted(pol.deny):
            if numbers[name] is not None:
                filt.add(libseccomp.act_errno(errno.EPERM), numbers[name])
        checked: dict[str, int] = {}
        for d in pol.denials:
            if numbers[d.name] is not None:
                conds = [
                    (arg, libseccomp.CMP_MASKED_EQ, mask, value) for arg, mask, value in d.conds
                ]
                filt.add(libseccomp.act_errno(d.err), numbers[d.name], conds)
                checked.setdefault(d.name, d.conds[0][0])
        for name in sorted(pol.allow):
            if numbers[name] is None:
                continue
            # an allowed call with argument checks is allowed through an
            # always-true comparison on the same argument: libseccomp then
            # tests the refusals first (an unconditional rule would swallow them)
            arg = checked.get(name)
            conds = [(arg, libseccomp.CMP_GE, 0, 0)] if arg is not None else []
            filt.add(libseccomp.ACT_ALLOW, numbers[name], conds)
        return filt.export()
    finally:
        filt.release()
