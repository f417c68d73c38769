"""A minimal eBPF assembler and the bpf(2) calls chbind needs.

Programs are lists of instructions and label strings; ``assemble`` resolves
the labels into jump offsets. ``load`` and ``attach`` are BPF_PROG_LOAD and
BPF_PROG_ATTACH for cgroup programs (include/uapi/linux/bpf.h).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import NetError

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8

# program types and attach types (enum bpf_prog_type / bpf_attach_type)
PROG_CGROUP_SKB = 8
PROG_CGROUP_SOCK_ADDR = 18
ATTACH = {"ingress": 0, "egress": 1, "bind4": 8, "bind6": 9, "connect4": 10, "connect6": 11,
          "sendmsg4": 14, "sendmsg6": 15}  # fmt: skip

FUNC_SKB_LOAD_BYTES = 26
FUNC_BIND = 64


@dataclass(frozen=True, slots=True)
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int | str = 0  # a label name for jumps, resolved by assemble()
    imm: int = 0


def word(packed: bytes, index: int) -> int:
    """The 32-bit word of an address as a BPF load sees it (memory order), signed."""
    (value,) = struct.unpack("<i", packed[4 * index : 4 * index + 4])
    return value


def load_w(dst: int, src: int, off: int) -> Insn:
    return Insn(0x61, dst, src, off)


def load_dw(dst: int, src: int, off: int) -> Insn:
    return Insn(0x79, dst, src, off)


def store_w(dst: int, src: int, off: int) -> Insn:
    return Insn(0x63, dst, src, off)


def store_imm(size: str, dst: int, off: int, imm: int) -> Insn:
    return Insn({"w": 0x62, "h": 0x6A, "dw": 0x7A}[size], dst, 0, off, imm)


def mov32_imm(dst: int, imm: int) -> Insn:
    return Insn(0xB4, dst, 0, 0, imm)


def mov64_imm(dst: int, imm: int) -> Insn:
    return Insn(0xB7, dst, 0, 0, imm)


def mov64_reg(dst: int, src: int) -> Insn:
    return Insn(0xBF, dst, src)


def add64_imm(dst: int, imm: int) -> Insn:
    return Insn(0x07, dst, 0, 0, imm)


def jeq32(dst: int, imm: int, label: str) -> Insn:
    return Insn(0x16, dst, 0, label, imm)


def jne32(dst: int, imm: int, label: str) -> Insn:
    return Insn(0x56, dst, 0, label, imm)


def jump(label: str) -> Insn:
    return Insn(0x05, 0, 0, label)


def call(func: int) -> Insn:
    return Insn(0x85, 0, 0, 0, func)


EXIT = Insn(0x95)


def verdict(allow: bool) -> list[Insn]:
    return [mov64_imm(0, 1 if allow else 0), EXIT]


def assemble(program: Sequence[Insn | str]) -> bytes:
    """Instructions and label strings -> bytecode, jumps resolved to offsets."""
    labels: dict[str, int] = {}
    insns: list[Insn] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = bytearray()
    for pc, insn in enumerate(insns):
        off = labels[insn.off] - pc - 1 if isinstance(insn.off, str) else insn.off
        out += struct.pack("<BBhi", insn.code, (insn.src << 4) | insn.dst, off, insn.imm)
    return bytes(out)


_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, 128)
    result = _libc.syscall(_SYS_BPF, cmd, buf, ctypes.c_uint(128))
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


def load(code: bytes, attach: str) -> int:
    """BPF_PROG_LOAD of a cgroup program for ``attach``; its fd (close-on-exec)."""
    prog_type = PROG_CGROUP_SKB if attach in ("ingress", "egress") else PROG_CGROUP_SOCK_ADDR
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = struct.pack(
        "<IIQQIIQII16sII", prog_type, len(code) // 8,
        ctypes.addressof(insns), ctypes.addressof(license), 1, len(log), ctypes.addressof(log),
        0, 0, f"vs_{attach}".encode(), 0, ATTACH[attach],
    )  # fmt: skip
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        detail = log.value.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise NetError(f"chbind: the kernel refused the {attach} program: {exc.strerror} "
                       f"{detail[0]}".strip()) from None  # fmt: skip


def attach(cgroup_fd: int, prog_fd: int, attach: str) -> None:
    """BPF_PROG_ATTACH without flags: no group below may override the program."""
    _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", cgroup_fd, prog_fd, ATTACH[attach], 0))
