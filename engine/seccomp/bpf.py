"""Classic BPF for seccomp: instructions, a policy, and the assembler.

The program the kernel runs on every system call sees ``struct seccomp_data``
(include/uapi/linux/seccomp.h): ``nr`` at offset 0, ``arch`` at 4, the
instruction pointer at 8 and six 64-bit ``args`` from 16. We only compare
the low 32 bits of an argument: every argument we check (socket's domain,
clone's and unshare's flags, ioctl's request) is truncated to 32 bits by the kernel itself
(``lower_32_bits(clone_flags)``, ``int family``), so the high word cannot be
used to slip past the check.

Layout of the assembled program::

    load arch;  arch != native            -> KILL_PROCESS (i386/x32 entry points)
    load nr;    x86_64 and nr has X32 bit -> KILL_PROCESS
    for each denied nr:  nr == N          -> ERRNO(EPERM)
    for each ENOSYS nr:  nr == N          -> ERRNO(ENOSYS)   (clone3: libc falls back to clone)
    argument blocks (socket, clone, unshare, ioctl): each ends in a RET, so the
        "not this call" branch jumps over it with the syscall number still loaded
    ALLOW

A foreign-arch call is killed, not refused: a 32-bit program that gets EPERM
from exit(2) would spin forever, SIGSYS tells the admin what happened.
"""

from __future__ import annotations

import errno
import struct

from engine._record import Record
from engine.seccomp import syscalls

TYPE_CHECKING = False  # not typing's: a start builds the filter
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# include/uapi/linux/filter.h, bpf_common.h
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K

# include/uapi/linux/seccomp.h
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_DATA = 0x0000FFFF

OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARGS = 16  # args[i] at 16 + 8*i; little-endian: the low word first

BPF_MAXINSNS = 4096  # include/uapi/linux/bpf_common.h
_INSN = struct.Struct("=HBBI")  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}


class Insn(Record):
    """One classic BPF instruction."""

    __slots__ = _fields = ("code", "jt", "jf", "k")
    code: int
    jt: int
    jf: int
    k: int


class ArgRule(Record):
    """Refuse ``nr`` with EPERM when argument ``arg`` (its low word) matches.

    ``values``: refused exact values (socket domains, ioctl requests);
    ``mask``: refused when any of these bits is set (clone/unshare namespace
    flags). Either may be empty.
    """

    __slots__ = _fields = ("name", "values", "mask", "arg", "nested")
    _defaults = {"values": frozenset(), "mask": 0, "arg": 0, "nested": ()}
    name: str
    values: frozenset[int]
    mask: int
    arg: int
    nested: tuple[NestedRule, ...]


class NestedRule(Record):
    """When ``arg`` of the ArgRule equals ``when``, fail with ``err`` if
    argument ``arg`` here equals ``value`` (e.g. socket(AF_NETLINK, *,
    NETLINK_AUDIT) -> EPROTONOSUPPORT)."""

    __slots__ = _fields = ("when", "arg", "value", "err")
    when: int
    arg: int
    value: int
    err: int


class Policy(Record):
    """What the filter does, by syscall name, for one architecture."""

    __slots__ = _fields = ("arch", "deny", "enosys", "arg_rules")
    arch: str
    deny: frozenset[str]  # ERRNO(EPERM)
    enosys: frozenset[str]  # ERRNO(ENOSYS)
    arg_rules: tuple[ArgRule, ...]


def ld(offset: int) -> Insn:
    return Insn(BPF_LD_W_ABS, 0, 0, offset)


def jeq(k: int, jt: int, jf: int) -> Insn:
    return Insn(BPF_JEQ_K, jt, jf, k)


def jset(k: int, jt: int, jf: int) -> Insn:
    return Insn(BPF_JSET_K, jt, jf, k)


def ret(k: int) -> Insn:
    return Insn(BPF_RET_K, 0, 0, k)


def ret_errno(err: int) -> Insn:
    return ret(SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA))


def _numbers(names: Iterable[str], table: dict[str, int]) -> list[int]:
    """Numbers of the names this architecture has (others do not exist here)."""
    return sorted({table[n] for n in names if n in table})


def _arg_block(rule: ArgRule, nr: int) -> list[Insn]:
    """``nr == N`` -> check the argument, RET; otherwise jump over the whole block."""
    load = ld(OFFSET_ARGS + 8 * rule.arg)
    nested: list[Insn] = []
    for i, sub in enumerate(rule.nested):
        # reload the rule's argument after the first block: a nested block
        # leaves another argument in the accumulator
        nested += [load] if i else []
        nested += [jeq(sub.when, 0, 3), ld(OFFSET_ARGS + 8 * sub.arg), jeq(sub.value, 0, 1),
                   ret_errno(sub.err)]  # fmt: skip
    values = sorted(rule.values)
    # after the value compares, the optional jset and the nested blocks come:
    # ret ALLOW, ret EPERM
    tests = len(values) + (1 if rule.mask else 0)
    body: list[Insn] = [load]
    for i, value in enumerate(values):
        to_eperm = tests - i + len(nested)  # skip the rest, the nested blocks and ALLOW
        body.append(jeq(value, to_eperm, 0))
    if rule.mask:
        body.append(jset(rule.mask, 1 + len(nested), 0))
    body += [*nested, ret(SECCOMP_RET_ALLOW), ret_errno(errno.EPERM)]
    return [jeq(nr, 0, len(body)), *body]


def assemble(policy: Policy) -> list[Insn]:
    """The instruction list for ``policy`` (see the module docstring)."""
    table = syscalls.table(policy.arch)
    prog = [ld(OFFSET_ARCH), jeq(syscalls.AUDIT_ARCH[policy.arch], 1, 0)]
    prog += [ret(SECCOMP_RET_KILL_PROCESS), ld(OFFSET_NR)]
    if policy.arch == "x86_64":
        prog += [jset(syscalls.X32_SYSCALL_BIT, 0, 1), ret(SECCOMP_RET_KILL_PROCESS)]
    for nr in _numbers(policy.deny, table):
        prog += [jeq(nr, 0, 1), ret_errno(errno.EPERM)]
    for nr in _numbers(policy.enosys - policy.deny, table):
        prog += [jeq(nr, 0, 1), ret_errno(errno.ENOSYS)]
    for rule in policy.arg_rules:
        if rule.name in table and rule.name not in policy.deny:
            prog += _arg_block(rule, table[rule.name])
    prog.append(ret(SECCOMP_RET_ALLOW))
    if len(prog) > BPF_MAXINSNS:
        raise ValueError(f"seccomp program too long: {len(prog)} instructions")
    return prog


def pack(prog: Sequence[Insn]) -> bytes:
    """The bytes of a ``struct sock_filter`` array."""
    return b"".join(_INSN.pack(i.code, i.jt, i.jf, i.k) for i in prog)


def unpack(data: bytes) -> list[Insn]:
    """Inverse of pack(): decode a program (for tests and inspection)."""
    return [Insn(*fields) for fields in _INSN.iter_unpack(data)]


def run(prog: Sequence[Insn], nr: int, arch: int, args: Sequence[int] = ()) -> int:
    """Interpret ``prog`` on one seccomp_data, as the kernel would: the action.

    Only the instructions assemble() emits are understood. Used by the tests
    to check paths a real process cannot easily take (foreign arch, x32).
    """
    words = [nr, arch, 0, 0]
    for value in (*args, 0, 0, 0, 0, 0, 0)[:6]:
        words += [value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF]
    acc, pc = 0, 0
    while True:
        insn = prog[pc]
        if insn.code == BPF_LD_W_ABS:
            acc = words[insn.k // 4]
        elif insn.code == BPF_RET_K:
            return insn.k
        elif insn.code in (BPF_JEQ_K, BPF_JSET_K):
            hit = acc == insn.k if insn.code == BPF_JEQ_K else bool(acc & insn.k)
            pc += insn.jt if hit else insn.jf
        else:
            raise ValueError(f"unknown BPF opcode {insn.code:#x} at {pc}")
        pc += 1
