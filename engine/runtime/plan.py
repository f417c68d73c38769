"""A guest's start as data: the steps child.py performs inside the namespaces.

Like bubblewrap's SetupOp list or systemd-nspawn's mount table, the whole
set-up is computed up front from the GuestConfig and the storage part's
binds, so it can be read, tested and shown without starting anything.

Two phases:

- ``before``: binds from the host into the guest tree, run before
  pivot_root; every guest-side target is resolved inside the tree (a
  symlink the guest plants cannot redirect a mount onto the host);
- ``after``: guest-absolute steps run after pivot_root, when nothing of the
  host is reachable any more: /dev, /proc with its masks, a read-only /sys.
"""

from __future__ import annotations

import os
import resource
import shlex

from engine import _libc, safepath
from engine._record import Record

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of every start
if TYPE_CHECKING:
    from typing import Any

# -- step kinds -------------------------------------------------------------------


class HostBind(Record):
    """Bind a host directory onto a guest path (before pivot_root).

    ``dev``/``ino``: the source's identity when the plan was made; the
    executor opens ``source`` without following any symlink and binds it
    only if it is still that object.
    """

    __slots__ = _fields = ("source", "target", "readonly", "recursive", "dev", "ino")
    _defaults = {"readonly": False, "recursive": True, "dev": 0, "ino": 0}
    source: str
    target: str
    readonly: bool
    recursive: bool
    dev: int
    ino: int


class HostMount(Record):
    """An extra file system from the config (V_MOUNT-style), before pivot_root."""

    __slots__ = _fields = ("source", "target", "fstype", "options")
    source: str
    target: str
    fstype: str
    options: str


class Mount(Record):
    """mount(2) onto a guest path, creating the directory."""

    __slots__ = _fields = ("source", "target", "fstype", "flags", "data")
    _defaults = {"flags": 0, "data": None}
    source: str
    target: str
    fstype: str
    flags: int
    data: str | None


class Bind(Record):
    """Bind a guest path onto another guest path (after pivot_root)."""

    __slots__ = _fields = ("source", "target", "readonly")
    _defaults = {"readonly": False}
    source: str
    target: str
    readonly: bool


class Mask(Record):
    """Hide a path: /dev/null over a file, an empty read-only tmpfs over a dir."""

    __slots__ = _fields = ("target",)
    target: str


class ReadOnly(Record):
    """Make a path read-only (recursive bind onto itself, top remounted ro)."""

    __slots__ = _fields = ("target",)
    target: str


class Device(Record):
    """A character device node."""

    __slots__ = _fields = ("target", "major", "minor", "mode")
    _defaults = {"mode": 0o666}
    target: str
    major: int
    minor: int
    mode: int


class Symlink(Record):
    __slots__ = _fields = ("target", "points_to")
    target: str
    points_to: str


class File(Record):
    """A small file with fixed content (e.g. /run/systemd/container)."""

    __slots__ = _fields = ("target", "content", "mode")
    _defaults = {"mode": 0o644}
    target: str
    content: bytes
    mode: int


class View(Record):
    """A host file the guest sees at ``target`` (read-only).

    Opened before pivot_root (the host is out of reach after it) and
    attached here, in plan order: e.g. the guest's /proc/meminfo, the
    supervisor's notify socket.
    """

    __slots__ = _fields = ("source", "target")
    source: str
    target: str


class HostDev(Record):
    """A user-namespaced guest's /dev, made on the host side (before pivot_root, like the
    tree's binds): a fresh tmpfs with the device ``nodes`` (name, major, minor, mode) in it,
    seen through the guest's ids. The guest may make no device node (mknod needs
    CAP_MKNOD in the host's user namespace); the file system is the host's, so its
    size and options are not the guest's to change either."""

    __slots__ = _fields = ("target", "flags", "data", "nodes")
    target: str
    flags: int  # MS_* of the mount (no MS_NODEV: the nodes must work)
    data: str
    nodes: tuple[tuple[str, int, int, int], ...]


class Console(Record):
    """The console terminal (init's stdout, a pty the supervisor reads) bound onto ``target``.

    /dev/null when init's stdout is no terminal.
    """

    __slots__ = _fields = ("target",)
    target: str


class HostTree(Record):
    """A host mount tree, read-only with its submounts, onto a path inside the guest's
    tree (before pivot_root): the host's /sys for a user-namespaced guest without its
    own network namespace, which may not mount a sysfs of its own."""

    __slots__ = _fields = ("source", "target")
    source: str
    target: str


Step = (
    HostBind
    | HostMount
    | Mount
    | Bind
    | Mask
    | ReadOnly
    | Device
    | Symlink
    | File
    | View
    | HostDev
    | Console
    | HostTree
)

# -- constants -------------------------------------------------------------------

VINIT_PATH = "/run/.vinit"  # engine/helpers/vinit, bound read-only
MEMINFO = "/proc/meminfo"  # where the host's meminfo view is attached
NOTIFY_SOCKET = "/run/host/notify"  # the supervisor's sd_notify socket (READY=1), as nspawn's
LOCK_SIZE = 5 * 1024 * 1024  # Debian's run-lock.mount
SHM_SIZE = 64 * 1024 * 1024
DEV_SIZE = 512 * 1024
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

NOSUID_NODEV_NOEXEC = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC

# /proc entries that leak host data or reach host hardware (runc, moby,
# nspawn lists; isolation-anchors.md section 1 and escape classes 4 and 5).
PROC_MASKED = (
    "/proc/kcore", "/proc/keys", "/proc/key-users", "/proc/timer_list", "/proc/sched_debug",
    "/proc/latency_stats", "/proc/timer_stats", "/proc/kallsyms", "/proc/interrupts",
    "/proc/kpagecount", "/proc/kpageflags", "/proc/kpagecgroup", "/proc/vmallocinfo",
    "/proc/acpi", "/proc/scsi", "/proc/asound", "/proc/driver", "/proc/tty/driver",
)  # fmt: skip
PROC_READONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq")
SYS_MASKED = ("/sys/firmware", "/sys/devices/virtual/powercap", "/sys/kernel/debug",
              "/sys/kernel/security")  # fmt: skip
CGROUP = "/sys/fs/cgroup"  # the guest's own cgroup2 tree, or masked without one

# (name, major, minor): drivers/char/mem.c and tty_io.c numbers
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))  # fmt: skip

RLIMITS = {
    "nproc": resource.RLIMIT_NPROC, "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE, "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE, "memlock": resource.RLIMIT_MEMLOCK,
    "rss": resource.RLIMIT_RSS, "stack": resource.RLIMIT_STACK,
    "cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS,
}  # fmt: skip


class StartPlan(Record):
    """Everything the guest's PID 1 does between unshare and exec."""

    __slots__ = _fields = (
        "name",
        "root",
        "root_identity",
        "before",
        "after",
        "hostname",
        "domainname",
        "own_netns",
        "rlimits",
        "nice",
        "caps",
        "argv",
        "env",
        "vinit",
        "seccomp",
        "notes",
        "idmap",
        "inroot",
    )
    _defaults = {"root_identity": (0, 0), "seccomp": True, "notes": (), "idmap": None,
                 "inroot": ()}  # fmt: skip
    name: str
    root: str  # host path of the tree pivot_root enters
    root_identity: tuple[int, int]  # its (dev, ino) when planned: checked again at boot
    before: tuple[Step, ...]
    after: tuple[Step, ...]
    hostname: str
    domainname: str | None
    own_netns: bool
    rlimits: tuple[tuple[int, int, int], ...]  # (resource, soft, hard), -1 = unlimited
    nice: int | None
    caps: frozenset[str]
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    vinit: bool  # bind vinit at VINIT_PATH before exec
    seccomp: bool
    notes: tuple[str, ...]
    # (base, count): the guest's user namespace maps ids 0..count-1 to host ids base..;
    # None: no user namespace (V_USERNS=no)
    idmap: tuple[int, int] | None
    # mounts made inside the tree before pivot_root (a user namespace may mount a fresh
    # /proc or /sys only while the host's are still visible in its mount namespace)
    inroot: tuple[Step, ...]


# -- building --------------------------------------------------------------------


DEV_FLAGS = _libc.MS_NOSUID | _libc.MS_NOEXEC | _libc.MS_STRICTATIME
DEV_DATA = f"mode=755,size={DEV_SIZE}"


def host_dev() -> HostDev:
    """A user-namespaced guest's /dev tmpfs with its nodes, made on the host side."""
    return HostDev("/dev", DEV_FLAGS, DEV_DATA, tuple((n, ma, mi, 0o666) for n, ma, mi in DEVICES))


def dev_steps(shm_size: int = SHM_SIZE, userns: bool = False) -> list[Step]:
    """A minimal /dev on tmpfs: nodes, devpts (own instance), shm, mqueue, links. In a user
    namespace the tmpfs and its nodes come from the host side (host_dev): the rest here."""
    steps: list[Step] = []
    if not userns:
        steps.append(Mount("tmpfs", "/dev", "tmpfs", DEV_FLAGS, DEV_DATA))
        steps += [Device(f"/dev/{name}", major, minor) for name, major, minor in DEVICES]
    steps += [
        Mount(
            "devpts",
            "/dev/pts",
            "devpts",
            _libc.MS_NOSUID | _libc.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),  # fmt: skip
        Symlink("/dev/ptmx", "pts/ptmx"),
        Mount(
            "shm",
            "/dev/shm",
            "tmpfs",
            _libc.MS_NOSUID | _libc.MS_NODEV,
            f"mode=1777,size={shm_size}",
        ),  # fmt: skip
        Mount("mqueue", "/dev/mqueue", "mqueue", NOSUID_NODEV_NOEXEC),
        Symlink("/dev/fd", "/proc/self/fd"),
        Symlink("/dev/stdin", "/proc/self/fd/0"),
        Symlink("/dev/stdout", "/proc/self/fd/1"),
        Symlink("/dev/stderr", "/proc/self/fd/2"),
        File("/dev/console", b"", 0o600),
        Console("/dev/console"),  # the pty whose other end the supervisor logs
    ]
    return steps


PROC_MOUNT = Mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC)


def proc_steps(
    own_netns: bool, hide: tuple[str, ...] = (), show: tuple[str, ...] = ()
) -> list[Step]:
    """Masks of the fresh /proc (PROC_MOUNT): V_PROC_HIDE adds masks, V_PROC_SHOW lifts
    a mask or read-only."""
    shown = {p.rstrip("/") for p in show}
    steps: list[Step] = []
    masked = [*PROC_MASKED, *(p.rstrip("/") for p in hide)]
    steps += [Mask(p) for p in dict.fromkeys(masked) if p not in shown]
    if own_netns:
        # /proc/sys/net belongs to the guest's own network namespace (LXC proc:mixed)
        steps.append(Bind("/proc/sys/net", "/proc/sys/net"))
    steps += [ReadOnly(p) for p in PROC_READONLY if p not in shown]
    return steps


def sys_mount(own_netns: bool, userns: bool) -> Step:
    """A fresh read-only sysfs; a user namespace without its own network namespace may
    not mount one (kernel 3.11, "sysfs: Restrict mounting sysfs"): the host's, read-only."""
    if userns and not own_netns:
        return HostTree("/sys", "/sys")
    return Mount("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC | _libc.MS_RDONLY)


def sys_steps(cgroup2: bool = True) -> list[Step]:
    """What hides parts of /sys (mounted before: sys_mount); at /sys/fs/cgroup the
    guest's own cgroup2 tree (docs/systemd.md).

    B runs in the guest's cgroup namespace, rooted at its payload: the mount
    shows that subtree only, read-write for the guest's init to manage,
    while the limits stay on the directory above it, out of sight. Without
    a cgroup2 hierarchy on the host the path is masked.
    """
    steps: list[Step] = [Mask(p) for p in SYS_MASKED]
    own = Mount("cgroup2", CGROUP, "cgroup2", NOSUID_NODEV_NOEXEC)
    steps.append(own if cgroup2 else Mask(CGROUP))
    return steps


def run_steps(memory: int | None, tmp: bool = False) -> list[Step]:
    """A fresh /run and /run/lock at every start (and /tmp when the guest's systemd wants one).

    systemd mounts these itself, which needs CAP_SYS_ADMIN; for every guest
    they also mean no pid file or socket of a previous run survives.
    """
    run_size = f"{max(memory // 4, 8 << 20)}" if memory else "20%"
    nosuid_nodev = _libc.MS_NOSUID | _libc.MS_NODEV
    steps: list[Step] = [
        Mount("tmpfs", "/run", "tmpfs", nosuid_nodev, f"mode=755,size={run_size}"),
        Mount("tmpfs", "/run/lock", "tmpfs", NOSUID_NODEV_NOEXEC, f"mode=1777,size={LOCK_SIZE}"),
    ]
    if tmp:  # trixie's tmp.mount options (mode=1777,strictatime,nosuid,nodev,size=50%)
        tmp_size = f"{memory // 2}" if memory else "50%"
        data = f"mode=1777,size={tmp_size},nr_inodes=1m"
        steps.append(Mount("tmpfs", "/tmp", "tmpfs", nosuid_nodev | _libc.MS_STRICTATIME, data))
    return steps


def rlimits_of(cfg: Any) -> tuple[tuple[int, int, int], ...]:
    """ULIMIT as setrlimit triples; ``None`` (unlimited) becomes RLIM_INFINITY."""
    out = []
    for lim in cfg.ulimits:
        res = RLIMITS.get(lim.resource)
        if res is None:
            continue
        soft = resource.RLIM_INFINITY if lim.soft is None else lim.soft
        hard = resource.RLIM_INFINITY if lim.hard is None else lim.hard
        out.append((res, soft, hard))
    return tuple(out)


def init_argv(cfg: Any, has_rc_local: bool) -> tuple[tuple[str, ...], bool]:
    """(argv, uses_vinit): /sbin/init with fakeinit, else vinit running V_INIT."""
    if cfg.has_flag("fakeinit"):
        return ("/sbin/init",), False
    if cfg.init:
        return (VINIT_PATH, *shlex.split(cfg.init)), True
    if has_rc_local:
        return (VINIT_PATH, "/bin/sh", "/etc/rc.local"), True
    return (VINIT_PATH,), True


def init_env(cfg: Any, notify: bool = False) -> tuple[tuple[str, str], ...]:
    """Init's environment: CONTAINER_INTERFACE's ``container``; NOTIFY_SOCKET for a real init."""
    env = (("container", "vstui"), ("PATH", PATH_ENV), ("TERM", "linux"), ("HOME", "/root"),
           ("HOSTNAME", cfg.hostname))  # fmt: skip
    return (*env, ("NOTIFY_SOCKET", NOTIFY_SOCKET)) if notify else env


_MOUNT_OPTIONS = {
    "ro": _libc.MS_RDONLY,
    "nosuid": _libc.MS_NOSUID,
    "nodev": _libc.MS_NODEV,
    "noexec": _libc.MS_NOEXEC,
    "bind": _libc.MS_BIND,
    "rbind": _libc.MS_BIND | _libc.MS_REC,
}
_DEFAULT_OPTIONS = ("rw", "defaults", "suid", "dev", "exec")


def mount_options(options: str) -> tuple[int, str | None]:
    """``ro,nosuid,size=10m`` -> (MS_* flags, "size=10m")."""
    flags, data = 0, []
    for word in filter(None, (options or "").split(",")):
        if word in _MOUNT_OPTIONS:
            flags |= _MOUNT_OPTIONS[word]
        elif word not in _DEFAULT_OPTIONS:
            data.append(word)
    return flags, ",".join(data) or None


def identity(path: Any) -> tuple[int, int]:
    """(dev, ino) of a host directory now; (0, 0), which nothing matches, when it is missing
    (a plan made for display: a real start has checked its sources exist)."""
    try:
        return safepath.identity(path)
    except FileNotFoundError:
        return 0, 0


def host_bind(source: Any, target: str, readonly: bool, recursive: bool) -> HostBind:
    """A bind of a host directory, with the identity the executor checks."""
    return HostBind(str(source), target, readonly, recursive, *identity(source))


def extra_mount(mount: Any) -> Step:
    """A V_MOUNT word; a bind of a host directory is a HostBind (checked like a share)."""
    flags, _ = mount_options(mount.options)
    if not flags & _libc.MS_BIND:
        return HostMount(mount.source, mount.target, mount.fstype, mount.options)
    source = os.path.realpath(mount.source)
    readonly, recursive = bool(flags & _libc.MS_RDONLY), bool(flags & _libc.MS_REC)
    return host_bind(source, mount.target, readonly, recursive)


class Facts(Record):
    """What a start found that the plan depends on, besides the config and the binds.

    ``meminfo_view``: a host file the guest sees as /proc/meminfo; ``notify``:
    the supervisor's notify socket (a host path), given to a guest booting
    its own init; ``cgroup2``: the host has a cgroup2 hierarchy (the guest's
    /sys/fs/cgroup); ``tmp``: the guest's systemd mounts a tmpfs on /tmp
    (engine.rootfs.guestinit.wants_tmpfs_tmp); ``idmap``: (base, count) of
    the guest's user namespace, its block of host ids (None: V_USERNS=no).
    """

    __slots__ = _fields = ("meminfo_view", "notify", "cgroup2", "tmp", "idmap")
    _defaults = {"meminfo_view": None, "notify": None, "cgroup2": True, "tmp": False,
                 "idmap": None}  # fmt: skip
    meminfo_view: str | None
    notify: str | None
    cgroup2: bool
    tmp: bool
    idmap: tuple[int, int] | None


def build(
    cfg: Any, root: str, binds: list[Any], has_rc_local: bool = False, facts: Facts | None = None
) -> StartPlan:
    """The start plan for ``cfg`` with its tree at ``root`` and rootfs ``binds``."""
    facts = facts or Facts()
    own_netns = cfg.netmode != "host"
    userns = facts.idmap is not None
    before: list[Step] = [host_dev()] if userns else []
    before += [host_bind(b.source, b.target, b.readonly, b.recursive) for b in binds]
    before += [extra_mount(m) for m in cfg.mounts]
    shm = SHM_SIZE if not cfg.memory else min(SHM_SIZE, max(cfg.memory // 2, 1 << 20))
    fresh = [PROC_MOUNT, sys_mount(own_netns, userns)]
    proc = proc_steps(own_netns, tuple(cfg.proc_hide), tuple(cfg.proc_show))
    after: list[Step] = [*dev_steps(shm, userns), *([] if userns else fresh), *proc,
                         *sys_steps(facts.cgroup2)]  # fmt: skip
    if facts.meminfo_view is not None:
        after.append(View(facts.meminfo_view, MEMINFO))
    after += run_steps(cfg.memory, facts.tmp)
    after.append(File("/run/systemd/container", b"vstui\n"))
    argv, vinit = init_argv(cfg, has_rc_local)
    notify = facts.notify is not None and not vinit
    if notify:
        after += [File(NOTIFY_SOCKET, b"", 0o600), View(facts.notify, NOTIFY_SOCKET)]
    return StartPlan(
        name=cfg.name,
        root=str(root),
        root_identity=identity(root),
        before=tuple(before),
        after=tuple(after),
        hostname=cfg.hostname,
        domainname=cfg.domainname or None,
        own_netns=own_netns,
        rlimits=rlimits_of(cfg),
        nice=cfg.nice,
        caps=frozenset(cfg.effective_caps()),
        argv=argv,
        env=init_env(cfg, notify),
        vinit=vinit,
        idmap=facts.idmap,
        inroot=tuple(fresh) if userns else (),
    )
