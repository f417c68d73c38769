"""System call names and numbers: libseccomp's tables, plus the calls it is too old to know.

libseccomp (2.5.4 on Debian 12) knows every architecture's numbers up to
about kernel 6.6. ``NEWER`` adds the calls of kernels 6.8-6.17, numbered
alike on every architecture since the tables were unified at 424, so that
the allowlist and ``V_SECCOMP`` can name them.
"""

from __future__ import annotations

import os

from engine.seccomp import libseccomp

# include/uapi/linux/audit.h: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE, EM_AARCH64 | ...
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# x86_64: syscall numbers with this bit set are the x32 ABI (arch/x86/include/asm/unistd.h)
X32_SYSCALL_BIT = 0x40000000

# fmt: off
NEWER: dict[str, int] = {
    "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
    "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463, "getxattrat": 464,
    "listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467, "file_getattr": 468,
    "file_setattr": 469,
}
# fmt: on


_MACHINE = os.uname().machine


def native_arch() -> str:
    """The machine name the running kernel reports, e.g. ``x86_64``."""
    return _MACHINE


def number(name: str, arch: str | None = None) -> int | None:
    """The number of ``name`` on ``arch`` (default: this machine), None where it has none."""
    token = AUDIT_ARCH[arch or native_arch()]
    nr = libseccomp.resolve(name, token)
    return nr if nr is not None else NEWER.get(name)


def known_name(name: str) -> bool:
    """True if any supported architecture has a system call called ``name``."""
    return any(number(name, arch) is not None for arch in AUDIT_ARCH)
