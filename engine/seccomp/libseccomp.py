"""The few libseccomp calls the filter needs, through ctypes (libseccomp2, Debian 12: 2.5.4).

libseccomp knows every architecture's system call numbers and lays a large
allowlist out as a binary tree of comparisons; we only describe the rules and
export the finished classic-BPF program (``seccomp_export_bpf``) at plan
time. Nothing here loads a filter: the executor does that, with the program
the plan carries.
"""

from __future__ import annotations

import ctypes
import errno
import os

from engine.errors import KernelError

TYPE_CHECKING = False  # not typing's: a fresh start plan builds the filter
if TYPE_CHECKING:
    from collections.abc import Sequence

# include/seccomp.h
ACT_KILL_PROCESS = 0x80000000
ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
ATTR_ACT_BADARCH = 2
ATTR_CTL_NNP = 3
ATTR_CTL_OPTIMIZE = 8  # 2 = binary tree of syscall numbers (2.5.0+)
CMP_GE = 5
CMP_MASKED_EQ = 7
NR_ERROR = -1  # __NR_SCMP_ERROR: the name is unknown on that architecture


def act_errno(err: int) -> int:
    return _ACT_ERRNO | (err & 0xFFFF)


class _Cmp(ctypes.Structure):
    """struct scmp_arg_cmp: argument index, operator, two 64-bit data."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]  # fmt: skip


_lib: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError:
            raise KernelError("dlopen", "libseccomp.so.2", errno.ENOENT, None,
                              "install libseccomp2 (./setup.sh install)") from None  # fmt: skip
        ctx, u32 = ctypes.c_void_p, ctypes.c_uint32
        lib.seccomp_init.restype = ctx
        lib.seccomp_init.argtypes = [u32]
        lib.seccomp_release.argtypes = [ctx]
        lib.seccomp_attr_set.argtypes = [ctx, ctypes.c_int, u32]
        lib.seccomp_arch_add.argtypes = [ctx, u32]
        lib.seccomp_arch_remove.argtypes = [ctx, u32]
        lib.seccomp_arch_native.restype = u32
        lib.seccomp_rule_add_array.argtypes = [ctx, u32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_Cmp)]  # fmt: skip
        lib.seccomp_export_bpf.argtypes = [ctx, ctypes.c_int]
        lib.seccomp_syscall_resolve_name_arch.argtypes = [u32, ctypes.c_char_p]
        _lib = lib
    return _lib


def resolve(name: str, arch_token: int) -> int | None:
    """The number of system call ``name`` on ``arch_token``, or None if libseccomp has none."""
    nr = _library().seccomp_syscall_resolve_name_arch(arch_token, name.encode())
    return None if nr < 0 else nr


def native_token() -> int:
    return int(_library().seccomp_arch_native())


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise KernelError("libseccomp", what, -rc)


class Filter:
    """One libseccomp context for one architecture; release() when done."""

    def __init__(self, default_action: int, arch_token: int) -> None:
        lib = _library()
        self._lib = lib
        self._ctx = lib.seccomp_init(default_action)
        if not self._ctx:
            raise KernelError("libseccomp", "seccomp_init", errno.ENOMEM)
        native = native_token()
        if arch_token != native:  # a program for another machine (tests, inspection)
            _check(lib.seccomp_arch_add(self._ctx, arch_token), "seccomp_arch_add")
            _check(lib.seccomp_arch_remove(self._ctx, native), "seccomp_arch_remove")
        # i386 `int 0x80` and x32 calls: kill, never guess (see the package doc)
        _check(lib.seccomp_attr_set(self._ctx, ATTR_ACT_BADARCH, ACT_KILL_PROCESS), "badarch")
        # no_new_privs is the executor's choice, not the program's
        _check(lib.seccomp_attr_set(self._ctx, ATTR_CTL_NNP, 0), "nnp")
        _check(lib.seccomp_attr_set(self._ctx, ATTR_CTL_OPTIMIZE, 2), "optimize")

    def add(self, action: int, nr: int, conds: Sequence[tuple[int, int, int, int]] = ()) -> None:
        """A rule: ``action`` for syscall ``nr`` when every (arg, op, a, b) holds."""
        array = (_Cmp * len(conds))(*(_Cmp(*c) for c in conds)) if conds else None
        _check(self._lib.seccomp_rule_add_array(self._ctx, action, nr, len(conds), array),
               f"rule for syscall {nr}")  # fmt: skip

    def export(self) -> bytes:
        """The packed ``struct sock_filter[]`` program."""
        fd = os.memfd_create("vstui-seccomp", os.MFD_CLOEXEC)
        try:
            _check(self._lib.seccomp_export_bpf(self._ctx, fd), "seccomp_export_bpf")
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None
