"""A StartPlan written down for ``vboot``, the C executor of the guest's PID 1.

Python decides WHAT a start does (engine.runtime.plan); engine/helpers/boot.h
does it, in exactly the order written here (the executor holds no policy).

The format: a sequence of netstrings ``LEN:BYTES,`` (LEN decimal). An op is
a netstring with its name, then its arguments, one netstring each. Numbers
are decimal, MODE octal, MASK hexadecimal, booleans ``0``/``1``; HASDATA
``0`` means no data (NULL). Text may not contain NUL (the executor makes
every field a C string); file content may. The ops (boot.h has the details)::

    umask MODE | setsid | view PATH | root PATH
    hostbind SRC TARGET RO REC | hostmount SRC TARGET FSTYPE FLAGS HASDATA DATA
    pivot | nosymlinks N PATH... | mount SRC TARGET FSTYPE FLAGS HASDATA DATA
    mask TARGET | readonly TARGET | bind SRC TARGET RO
    device TARGET MAJOR MINOR MODE | symlink TARGET TO | file TARGET MODE CONTENT
    vinit TARGET | viewmount TARGET | hostname NAME | domainname NAME | loopback
    stdio | rlimit RES SOFT HARD | nice N | caps MASK | signals | seccomp
    exec N ARGV... M ENV...

The seccomp filter is the last step before exec; signals are reset just
before it (the filter must not be able to refuse the reset).
"""

from __future__ import annotations

from engine import _libc
from engine.caps import to_mask
from engine.errors import VstuiError
from engine.runtime import plan as P

MEMINFO = "/proc/meminfo"  # where the host's meminfo view is attached
GUEST_DIRS = ("/proc", "/sys", "/dev", "/run")  # must be real directories (CVE-2019-16884)

_MOUNT_OPTIONS = {
    "ro": _libc.MS_RDONLY,
    "nosuid": _libc.MS_NOSUID,
    "nodev": _libc.MS_NODEV,
    "noexec": _libc.MS_NOEXEC,
    "bind": _libc.MS_BIND,
    "rbind": _libc.MS_BIND | _libc.MS_REC,
}
_DEFAULT_OPTIONS = ("rw", "defaults", "suid", "dev", "exec")

Field = str | bytes | int | bool | None


def mount_options(options: str) -> tuple[int, str | None]:
    """``ro,nosuid,size=10m`` -> (MS_* flags, "size=10m")."""
    flags, data = 0, []
    for word in filter(None, (options or "").split(",")):
        if word in _MOUNT_OPTIONS:
            flags |= _MOUNT_OPTIONS[word]
        elif word not in _DEFAULT_OPTIONS:
            data.append(word)
    return flags, ",".join(data) or None


class _Writer:
    """Collects netstrings; text with a NUL byte is refused (C would cut it)."""

    def __init__(self, guest: str) -> None:
        self.guest = guest
        self.parts: list[bytes] = []

    def op(self, name: str, *args: Field) -> None:
        self._add(name.encode())
        for arg in args:
            self._add(self._encode(arg))

    def content(self, name: str, target: str, mode: int, data: bytes) -> None:
        """An op whose last field is file content (NUL bytes allowed)."""
        self.op(name, target, format(mode, "o"))
        self._add(bytes(data))

    def _add(self, raw: bytes) -> None:
        self.parts.append(b"%d:%s," % (len(raw), raw))

    def _encode(self, value: Field) -> bytes:
        if value is None:
            return b""
        if isinstance(value, bool):
            return b"1" if value else b"0"
        if isinstance(value, int):
            return b"%d" % value
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        if b"\0" in raw:
            raise VstuiError(
                f"{value!r}: a NUL byte cannot reach the kernel; remove it from the config",
                self.guest,
            )
        return raw


def _mount_args(source: str, target: str, fstype: str, flags: int, data: str | None) -> tuple:
    return (source, target, fstype, flags, data is not None, data)


def _before(w: _Writer, step: P.Step) -> None:
    if isinstance(step, P.HostBind):
        w.op("hostbind", step.source, step.target, step.readonly, step.recursive)
    elif isinstance(step, P.HostMount):
        flags, data = mount_options(step.options)
        w.op("hostmount", *_mount_args(step.source, step.target, step.fstype, flags, data))
    else:
        raise TypeError(f"not a before-pivot step: {step!r}")


def _after(w: _Writer, step: P.Step) -> None:
    if isinstance(step, P.Mount):
        w.op("mount", *_mount_args(step.source, step.target, step.fstype, step.flags, step.data))
    elif isinstance(step, P.Mask):
        w.op("mask", step.target)
    elif isinstance(step, P.ReadOnly):
        w.op("readonly", step.target)
    elif isinstance(step, P.Bind):
        w.op("bind", step.source, step.target, step.readonly)
    elif isinstance(step, P.Device):
        w.op("device", step.target, step.major, step.minor, format(step.mode, "o"))
    elif isinstance(step, P.Symlink):
        w.op("symlink", step.target, step.points_to)
    elif isinstance(step, P.File):
        w.content("file", step.target, step.mode, step.content)
    else:
        raise TypeError(f"not an after-pivot step: {step!r}")


def _identity_and_limits(w: _Writer, plan: P.StartPlan) -> None:
    w.op("hostname", plan.hostname)
    if plan.domainname is not None:
        w.op("domainname", plan.domainname)
    if plan.own_netns:
        w.op("loopback")
    w.op("stdio")
    for res, soft, hard in plan.rlimits:
        w.op("rlimit", res, soft, hard)
    if plan.nice is not None:
        w.op("nice", plan.nice)
    w.op("caps", format(to_mask(plan.caps), "x"))


def serialize(plan: P.StartPlan) -> bytes:
    """The plan as vboot's input: every step of B, in order, up to init's exec."""
    w = _Writer(plan.name)
    w.op("umask", "22")
    w.op("setsid")
    if plan.meminfo_view is not None:  # the host file is out of reach after pivot_root
        w.op("view", plan.meminfo_view)
    w.op("root", plan.root)
    for step in plan.before:
        _before(w, step)
    w.op("pivot")
    w.op("nosymlinks", len(GUEST_DIRS), *GUEST_DIRS)
    for step in plan.after:
        _after(w, step)
    if plan.vinit:
        w.op("vinit", P.VINIT_PATH)
    if plan.meminfo_view is not None:
        w.op("viewmount", MEMINFO)
    _identity_and_limits(w, plan)
    w.op("signals")
    if plan.seccomp:
        w.op("seccomp")
    env = [f"{key}={value}" for key, value in plan.env]
    w.op("exec", len(plan.argv), *plan.argv, len(env), *env)
    return b"".join(w.parts)


def parse(data: bytes) -> list[bytes]:
    """The fields of a serialized plan (for tests and display): the inverse of netstrings."""
    fields, at = [], 0
    while at < len(data):
        colon = data.index(b":", at)
        if not data[at:colon].isdigit():
            raise ValueError(f"boot plan: malformed at byte {at}")
        size = int(data[at:colon])
        end = colon + 1 + size
        if data[end : end + 1] != b",":
            raise ValueError(f"boot plan: malformed at byte {at}")
        fields.append(data[colon + 1 : end])
        at = end + 1
    return fields
