"""Classic BPF as seccomp runs it: decoding a packed program and interpreting it.

libseccomp writes the program; this module only reads it back, for the
tests and for inspection: ``run()`` executes a program on one
``struct seccomp_data`` (include/uapi/linux/seccomp.h: ``nr`` at offset 0,
``arch`` at 4, the instruction pointer at 8, six 64-bit ``args`` from 16) the
way the kernel's seccomp_check_filter() allows programs to be written.
"""

from __future__ import annotations

import struct

from engine._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

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

# include/uapi/linux/bpf_common.h: instruction classes and fields
_LD, _LDX, _ST, _STX, _ALU, _JMP, _RET, _MISC = range(8)
_W, _ABS, _IMM, _MEM, _LEN = 0x00, 0x20, 0x00, 0x60, 0x80
_SRC_X = 0x08
_ALU_OPS = {
    0x00: lambda a, b: a + b, 0x10: lambda a, b: a - b, 0x20: lambda a, b: a * b,
    0x30: lambda a, b: a // b, 0x40: lambda a, b: a | b, 0x50: lambda a, b: a & b,
    0x60: lambda a, b: a << b, 0x70: lambda a, b: a >> b, 0x90: lambda a, b: a % b,
    0xA0: lambda a, b: a ^ b,
}  # fmt: skip
_JMP_OPS = {
    0x10: lambda a, b: a == b, 0x20: lambda a, b: a > b, 0x30: lambda a, b: a >= b,
    0x40: lambda a, b: bool(a & b),
}  # fmt: skip


class Insn(Record):
    """One classic BPF instruction."""

    __slots__ = _fields = ("code", "jt", "jf", "k")
    code: int
    jt: int
    jf: int
    k: int


def errno_action(err: int) -> int:
    """The action value of ``SECCOMP_RET_ERRNO`` with ``err``."""
    return SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA)


def pack(prog: Sequence[Insn]) -> bytes:
    """The bytes of a ``struct sock_filter`` array."""
    return b"".join(_INSN.pack(i.code, i.jt, i.jf, i.k) for i in prog)


def unpack(data: bytes) -> list[Insn]:
    """Inverse of pack(): decode a program."""
    return [Insn(*fields) for fields in _INSN.iter_unpack(data)]


def _data_words(nr: int, arch: int, args: Sequence[int]) -> list[int]:
    words = [nr & 0xFFFFFFFF, arch, 0, 0]
    for value in (*args, 0, 0, 0, 0, 0, 0)[:6]:
        words += [value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF]
    return words


def _load(mode: int, k: int, words: list[int], mem: list[int]) -> int:
    """The value a BPF_LD/BPF_LDX of ``mode`` reads."""
    if mode == _ABS:
        return words[k // 4]
    if mode == _MEM:
        return mem[k]
    return 64 if mode == _LEN else k  # sizeof(struct seccomp_data), or BPF_IMM


def run(prog: Sequence[Insn], nr: int, arch: int, args: Sequence[int] = ()) -> int:
    """The action ``prog`` returns for one system call, as the kernel computes it."""
    words = _data_words(nr, arch, args)
    acc = x = pc = 0
    mem = [0] * 16
    while True:
        insn = prog[pc]
        cls, k, pc = insn.code & 0x07, insn.k, pc + 1
        if cls == _RET:
            return acc if insn.code & 0x18 == 0x10 else k  # BPF_A or BPF_K
        if cls in (_LD, _LDX):
            value = _load(insn.code & 0xE0, k, words, mem)
            acc, x = (value, x) if cls == _LD else (acc, value)
        elif cls in (_ST, _STX):
            mem[k] = acc if cls == _ST else x
        elif cls == _ALU:
            op, operand = insn.code & 0xF0, x if insn.code & _SRC_X else k
            acc = (-acc if op == 0x80 else _ALU_OPS[op](acc, operand)) & 0xFFFFFFFF
        elif cls == _JMP and insn.code & 0xF0 == 0x00:  # BPF_JA
            pc += k
        elif cls == _JMP:
            hit = _JMP_OPS[insn.code & 0xF0](acc, x if insn.code & _SRC_X else k)
            pc += insn.jt if hit else insn.jf
        elif insn.code & 0xF8 == 0x80:  # BPF_MISC | BPF_TXA
            acc = x
        else:  # BPF_MISC | BPF_TAX
            x = acc
