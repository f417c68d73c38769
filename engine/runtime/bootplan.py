"""Plans written down for the C executors: the one format, the op tables.

Python decides WHAT a start or an exec does (engine.runtime.plan, starting,
engine.cgroups); the C helpers only do it, in exactly the order written
here. Each plan is a sequence of netstrings ``LEN:BYTES,``: an op's name,
then its arguments, one netstring each. Numbers are decimal, MODE octal,
MASK and FLAGS hexadecimal, booleans ``0``/``1``; HASDATA ``0`` means no
data (NULL). Text may not contain NUL (the executor makes every field a C
string); file content and programs may.

The op tables below are the only list of op names and arities: the build
generates them into engine/helpers/consts.h, and the executors' tables are
made from that (a missing C function for a new op is a compile error). To
add an op: a step in plan.py, its line in a table here and its writer in
this module, its ``op_NAME`` in the C executor.

- ``BOOT_OPS``: the guest's PID 1 from its new namespaces to init's exec
  (engine/helpers/boot.h). ``confine`` is the last step: the bounding set,
  the seccomp program, then permitted/effective cut to MASK.
- ``START_OPS``: the host side of a start (engine/helpers/start.h): run
  records, cgroup directories and limits, run files, then process A (joins,
  unshare) and B (``boot``), whether the plan was just made or replayed
  from the boot cache.
- ``STOP_OPS``: run_dir/stop.plan, written by a start only for a guest whose
  stop needs nothing but its cgroups removed (no network, no mounted tree:
  bootcache.eligible): ``vserver NAME stop`` (engine/helpers/stop.h) then
  asks the supervisor to stop init, waits, kills and removes the cgroups
  and the run directory without Python.
- ``EXEC_OPS`` (engine.runtime.profile): run_dir/exec.plan, what every
  later exec applies (engine/helpers/vexec.c): the same ``rlimit``, ``nice``
  and ``confine`` as the boot plan, the same ``tasks``/``cgroup2`` joins as
  the start plan, and the private flag.
"""

from __future__ import annotations

from engine._record import Record
from engine.caps import to_mask
from engine.errors import VstuiError
from engine.runtime import netstrings
from engine.runtime import plan as P
from engine.runtime.profile import EXEC_OPS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

COUNTED = -1  # one counted list: N FIELD...
TWO_COUNTED = -2  # exec N ARGV... M ENV...

BOOT_OPS: dict[str, int] = {
    "umask": 1,  # MODE
    "setsid": 0,
    "root": 3,  # PATH DEV INO: the tree, opened without symlinks, identity checked
    "hostbind": 6,  # SRC DEV INO TARGET RO REC: bound through the checked fd
    "hostmount": 6,  # SRC TARGET FSTYPE FLAGS HASDATA DATA
    "pivot": 0,
    "nosymlinks": COUNTED,  # PATH...: real directories (CVE-2019-16884)
    "mount": 6,  # SRC TARGET FSTYPE FLAGS HASDATA DATA
    "mask": 1,  # TARGET
    "readonly": 1,  # TARGET
    "bind": 3,  # SRC TARGET RO
    "device": 4,  # TARGET MAJOR MINOR MODE
    "symlink": 2,  # TARGET TO
    "file": 3,  # TARGET MODE CONTENT
    "vinit": 1,  # TARGET
    "viewmount": 1,  # TARGET: the next view, in plan order, attached read-only
    "consoleview": 0,  # before pivot: a detached bind of init's stdout, if it is a terminal
    "console": 1,  # TARGET: that terminal attached there, else /dev/null
    "hosttree": 2,  # SRC TARGET: before pivot, a host mount tree bound read-only into the tree
    "hostname": 1,
    "domainname": 1,
    "loopback": 0,
    "stdio": 0,
    "rlimit": 3,  # RES SOFT HARD (-1 = unlimited)
    "nice": 1,  # N: the nice value and its floor
    "signals": 0,
    "confine": 2,  # MASK PROGRAM
    "exec": TWO_COUNTED,  # N ARGV... M ENV...
}

START_OPS: dict[str, int] = {
    "barrier": 1,  # DIR: still mode 000 and root's
    "identity": 3,  # RUNDIR NAME XID: state=starting, xid, supervisor.pid/.start
    "mkdir": 1,  # PATH (a cgroup directory; removed again on failure)
    "write": 2,  # PATH VALUE (a cgroup control file)
    "chown": 3,  # PATH UID GID (not following a symlink): what the guest's root manages
    "ttyown": 2,  # UID GID of the console terminal (B's stdout), when it is one
    "runfile": 3,  # NAME MODE CONTENT (in the run directory)
    "tasks": 1,  # PATH: A joins this v1 cgroup (the thread's `tasks`)
    "cgroup2": 1,  # DIR: A is cloned straight into this cgroup2 group
    "userns": 2,  # BASE COUNT: the guest's user namespace (ids 0..COUNT-1 = BASE..)
    "idroot": 3,  # PATH DEV INO: the tree, checked, cloned and idmapped for A
    "idbind": 6,  # SRC DEV INO TARGET RO REC: a host directory, the same way
    "idmount": 6,  # SRC TARGET FSTYPE FLAGS HASDATA DATA: a new file system, idmapped
    # N TARGET FLAGS DATA (NAME MAJOR MINOR MODE)...: a tmpfs with these device nodes, idmapped
    "iddev": COUNTED,
    "rlimit": 3,  # RES SOFT HARD: A sets it before it becomes the guest's root
    "nice": 1,  # N: the same
    "unshare": 1,  # FLAGS
    "timens": 0,  # A's new time namespace starts its clocks at 0
    "vinit": 1,  # PATH of the host's vinit, bound read-only into the guest by B
    "view": 1,  # PATH: a detached bind of a host file, for B's viewmount (plan order)
    "boot": 1,  # PLAN: BOOT_OPS, run by B
}

STOP_OPS: dict[str, int] = {
    "config": 2,  # PATH SHA256: NAME.conf as planned (edited since: the Python stop decides)
    "log": 1,  # PATH: the console log, for the note when init has to be killed
    "timeout": 1,  # MS: init's time to halt after the stop signal, then SIGKILL
    "signal": 1,  # N: init's stop signal, when the plan knows it (vinit's); else the
    # supervisor is asked (SIGTERM), which picks it by init's kind
    "cgroup": 1,  # DIR: every process in it killed, it removed, sub-directories first
    "parent": 1,  # DIR: removed once empty (a per-root directory other guests share)
}

GUEST_DIRS = ("/proc", "/sys", "/dev", "/run")  # must be real directories (CVE-2019-16884)

Field = str | bytes | int | bool | None


class Writer:
    """Collects one plan's ops; text with a NUL byte is refused (C would cut it)."""

    def __init__(self, guest: str, table: dict[str, int]) -> None:
        self.guest = guest
        self.table = table
        self.parts: list[bytes] = []

    def op(self, name: str, *args: Field) -> None:
        arity = self.table[name]  # KeyError: an op the executor does not know
        assert arity < 0 or arity == len(args), (name, args)
        self.parts.append(netstrings.encode(name.encode()))
        self.parts += [netstrings.encode(self._encode(arg)) for arg in args]

    def blob(self, name: str, *args: Field, data: bytes) -> None:
        """An op whose last field is raw bytes (file content, a program, a plan)."""
        self.op(name, *args, b"")
        self.parts[-1] = netstrings.encode(bytes(data))

    def bytes(self) -> bytes:
        return b"".join(self.parts)

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


def _before(w: Writer, step: P.Step, kind: str = "host") -> None:
    """A before-pivot step as ``hostbind``/``hostmount`` (vboot binds it into the tree)
    or, with ``kind="id"``, ``idbind``/``idmount`` (cloned and idmapped on the host side)."""
    if isinstance(step, P.HostBind):
        w.op(f"{kind}bind", step.source, step.dev, step.ino, step.target, step.readonly,
             step.recursive)  # fmt: skip
    elif isinstance(step, P.HostMount):
        flags, data = P.mount_options(step.options)
        w.op(f"{kind}mount", *_mount_args(step.source, step.target, step.fstype, flags, data))
    elif isinstance(step, P.HostDev) and kind == "id":
        nodes = [field for node in step.nodes for field in (*node[:3], format(node[3], "o"))]
        w.op("iddev", 3 + len(nodes), step.target, step.flags, step.data, *nodes)
    else:
        raise TypeError(f"not a before-pivot step: {step!r}")


def _after(w: Writer, step: P.Step) -> None:
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
        w.blob("file", step.target, format(step.mode, "o"), data=step.content)
    elif isinstance(step, P.View):
        w.op("viewmount", step.target)
    elif isinstance(step, P.Console):
        w.op("console", step.target)
    else:
        raise TypeError(f"not an after-pivot step: {step!r}")


def _inroot(w: Writer, step: P.Step) -> None:
    """A mount inside the tree before pivot_root (a user-namespaced guest's /proc, /sys)."""
    if isinstance(step, P.Mount):
        w.op("hostmount", *_mount_args(step.source, step.target, step.fstype, step.flags,
                                       step.data))  # fmt: skip
    elif isinstance(step, P.HostTree):
        w.op("hosttree", step.source, step.target)
    else:
        raise TypeError(f"not an in-root step: {step!r}")


def limits(w: Writer, plan: Any) -> None:
    """rlimits and the nice floor: the same ops in the boot plan and the exec plan."""
    for res, soft, hard in plan.rlimits:
        w.op("rlimit", res, soft, hard)
    if plan.nice is not None:
        w.op("nice", plan.nice)


def serialize(plan: P.StartPlan, program: bytes | None = None) -> bytes:
    """The boot plan (BOOT_OPS): every step of the guest's PID 1, in order, up to init's exec.

    ``program``: the packed seccomp filter; a plan with ``seccomp`` set needs one.
    """
    if plan.seccomp and not program:
        raise VstuiError("no seccomp program: a guest never starts unfiltered", plan.name)
    w = Writer(plan.name, BOOT_OPS)
    w.op("umask", "22")
    w.op("setsid")
    if any(isinstance(step, P.Console) for step in plan.after):
        w.op("consoleview")
    # a user-namespaced guest's tree: B's working directory (A left it there; the
    # barrier keeps the guest's root from the path)
    w.op("root", plan.root if plan.idmap is None else ".", *plan.root_identity)
    if plan.idmap is None:  # else A attached them, idmapped (serialize_start)
        for step in plan.before:
            _before(w, step)
    if plan.inroot:  # the guest's own /proc and /sys must be real directories of the tree
        w.op("nosymlinks", 2, "/proc", "/sys")
    for step in plan.inroot:
        _inroot(w, step)
    w.op("pivot")
    w.op("nosymlinks", len(GUEST_DIRS), *GUEST_DIRS)
    for step in plan.after:
        _after(w, step)
    if plan.vinit:
        w.op("vinit", P.VINIT_PATH)
    w.op("hostname", plan.hostname)
    if plan.domainname is not None:
        w.op("domainname", plan.domainname)
    if plan.own_netns:
        w.op("loopback")
    w.op("stdio")
    if plan.idmap is None:  # else A set them, while it could still raise them
        limits(w, plan)
    w.op("signals")  # before the filter: it must not be able to refuse the reset
    w.blob("confine", format(to_mask(plan.caps), "x"), data=program if plan.seccomp else b"")
    env = [f"{key}={value}" for key, value in plan.env]
    w.op("exec", len(plan.argv), *plan.argv, len(env), *env)
    return w.bytes()


class HostSide(Record):
    """What the host side of a start does besides the boot plan (START_OPS)."""

    __slots__ = _fields = ("barrier", "run_dir", "xid", "cgroup_ops", "joins", "run_files",
                           "ns_flags", "timens", "vinit")  # fmt: skip
    barrier: str  # the guests' parent directory
    run_dir: str
    xid: int
    cgroup_ops: list[tuple[str, ...]]  # ("mkdir", path) / ("write", path, value)
    joins: list[tuple[str, str]]  # ("tasks", v1 file) / ("cgroup2", directory)
    run_files: list[tuple[str, int, bytes]]  # (name, mode, content) in the run directory
    ns_flags: int
    timens: bool
    vinit: str | None  # the host's vinit binary, when the guest runs it


def serialize_start(plan: P.StartPlan, host: HostSide, boot: bytes) -> bytes:
    """The whole start (START_OPS), as executed by start.h: fresh or from the boot cache."""
    w = Writer(plan.name, START_OPS)
    w.op("barrier", host.barrier)
    w.op("identity", host.run_dir, plan.name, host.xid)
    for kind, *args in host.cgroup_ops:
        w.op(kind, *args)
    for name, mode, content in host.run_files:
        w.blob("runfile", name, format(mode, "o"), data=content)
    for kind, path in host.joins:
        w.op(kind, path)
    if plan.idmap is not None:
        _userns(w, plan)
    w.op("unshare", format(host.ns_flags, "x"))
    if host.timens:
        w.op("timens")
    if host.vinit:
        w.op("vinit", host.vinit)
    for view in (step for step in plan.after if isinstance(step, P.View)):
        w.op("view", view.source)  # host files: out of reach after pivot_root
    w.blob("boot", data=boot)
    return w.bytes()


def _userns(w: Writer, plan: P.StartPlan) -> None:
    """The guest's user namespace and what A does before it becomes the guest's root:
    the tree and its binds, cloned and idmapped here, attached by A; the limits."""
    w.op("userns", *plan.idmap)
    w.op("idroot", plan.root, *plan.root_identity)
    for step in plan.before:
        _before(w, step, "id")
    limits(w, plan)


def serialize_exec(plan: P.StartPlan, flags: Any, program: bytes, joins: list) -> bytes:
    """run_dir/exec.plan (EXEC_OPS): what every exec into the running guest applies.

    ``flags``: has_flag of the guest's config; ``joins``: the start's cgroup joins.
    """
    w = Writer(plan.name, EXEC_OPS)
    w.op("private", flags("private"))
    w.op("fakeinit", flags("fakeinit"))
    limits(w, plan)
    w.blob("confine", format(to_mask(plan.caps), "x"), data=program)
    for kind, path in joins:
        w.op(kind, path)
    return w.bytes()


def parse(data: bytes) -> list[bytes]:
    """The fields of a serialized plan (for tests and display)."""
    return netstrings.parse(data)


def serialize_stop(
    name: str, config: tuple[str, str], log: str, halt: tuple[float, int | None], cgroups: list
) -> bytes:
    """run_dir/stop.plan (STOP_OPS): ``config`` is (NAME.conf, the SHA-256 of the
    bytes planned from); ``halt``: (stop timeout, init's stop signal or None);
    ``cgroups``: the cgroup manager's remove_ops."""
    w = Writer(name, STOP_OPS)
    w.op("config", *config)
    w.op("log", log)
    w.op("timeout", round(halt[0] * 1000))
    if halt[1] is not None:
        w.op("signal", halt[1])
    for kind, path in cgroups:
        w.op(kind, path)
    return w.bytes()
