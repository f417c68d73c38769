"""The boot cache: a start replayed by the compiled ``vserver`` without Python.

A start in Python (``starting.launch``) decides everything a guest's boot
does: the cgroup directories and limit writes, the exec profile, the
seccomp program, the plan vboot executes as the guest's PID 1, the lean
supervisor's command line. When it succeeds, it writes all of that here,
``state_dir/boot-cache/NAME``, with the stat of every file the decision
depended on: the guest's config, the context-id table, the guest's /etc
(its rc.local decides init's command) and every engine source. The next
``vserver NAME start`` of the compiled front end (engine/helpers/faststart.h)
replays the file when every one of those stats still matches; anything
else, or any failure on the way (undone first), falls back to this Python
path, which gives the proper message and writes a fresh cache.

Only guests whose start needs no Python at all are cached: plain-directory
storage (no loop image to mount, no project quota to check) and no links
to make through netlink (a guest with addresses gets its veth from
engine.net). Others always start through Python.

Format: netstrings (``LEN:BYTES,``), one op name then a fixed number of
fields per op (``super`` carries its count first). The file is root's
alone (0600 in a 0700 directory); the front end refuses any other.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: this runs on every Python start
if TYPE_CHECKING:
    from typing import Any

    from engine.paths import Paths

CACHE_DIR = "boot-cache"
VERSION = b"vstui-boot-1"


def cache_file(paths: Paths, name: str) -> str:
    return os.path.join(os.fspath(paths.state_dir), CACHE_DIR, name)


def netstring(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return b"%d:%s," % (len(raw), raw)


def op(name: str, *fields: str | bytes | int) -> bytes:
    return b"".join(netstring(str(f) if isinstance(f, int) else f) for f in (name, *fields))


def eligible(cfg: Any, plan: Any) -> bool:
    """True when this guest's start can be replayed without Python."""
    from engine.rootfs.storage import backend_of

    if backend_of(cfg) != "none":
        return False
    if plan.own_netns and (cfg.netmode or "veth") != "host":
        return not (cfg.addresses or cfg.bridge or cfg.bandwidth_out or cfg.bandwidth_in)
    return True


def _stat_op(path: str) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return op("absent", path)
    return op("stat", path, st.st_mtime_ns, st.st_size, st.st_ino)


def dependencies(paths: Paths, name: str, root: str) -> list[str]:
    """Every file whose change must send the next start through Python."""
    import engine

    package = os.path.dirname(os.path.abspath(engine.__file__))
    sources = []
    for top, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        sources += [os.path.join(top, f) for f in sorted(files) if f.endswith(".py")]
    sources.append(os.path.join(package, "helpers", "vinit"))
    guest = [os.path.join(root, "etc"), os.path.join(root, "etc", "rc.local")]
    state = [os.path.join(os.fspath(paths.state_dir), "xids")]
    return [os.fspath(paths.config_file(name)), *state, *guest, *sources]


def body(
    paths: Paths,
    cfg: Any,
    root: str,
    journal: list[tuple[str, ...]],
    joins: tuple[list[str], list[str]],
    boot: dict[str, Any],
) -> list[bytes]:
    """The cache's ops for one successful start, up to the supervisor's part.

    ``journal``: the cgroup mkdirs and writes (engine.cgroups.base.record);
    ``joins``: (v1 ``tasks`` files, cgroup2 directories) the guest enters;
    ``boot``: ns_flags, timens, profile (exec.profile text), program (the
    packed seccomp filter or None), vinit (path or None), plan (vboot's
    serialized plan), mem_limit and mem_usage (the meminfo view's, or None).
    """
    ops = [_stat_op(path) for path in dependencies(paths, cfg.name, root)]
    ops.append(op("vservers", os.fspath(paths.vservers_dir)))
    ops += [op(kind, *rest) for kind, *rest in journal]
    tasks, cgroup2 = joins
    ops += [op("tasks", path) for path in tasks]
    ops += [op("cgroup2", path) for path in cgroup2]
    ops.append(op("nsflags", f"{boot['ns_flags']:x}"))
    ops.append(op("timens", int(boot["timens"])))
    from engine.rootfs.procview import POOL_KEYS

    pool = " ".join(sorted(POOL_KEYS))  # counters a fresh guest has used none of
    ops.append(op("meminfo", boot["mem_limit"] or 0, boot["mem_usage"] or "", pool))
    ops.append(op("profile", boot["profile"]))
    if boot["program"]:
        program = cache_file(paths, cfg.name) + ".bpf"
        _write_private(program, boot["program"])
        ops.append(op("seccomp", program))
    if boot["vinit"]:
        ops.append(op("vinit", boot["vinit"]))
    ops.append(op("plan", boot["plan"]))
    return ops


def supervisor_ops(xid: int, run_dir: str, log_file: str, argv: list[str]) -> list[bytes]:
    """The identity and the lean supervisor's command (init pid etc. are appended)."""
    return [op("xid", xid), op("rundir", run_dir), op("log", log_file),
            op("super", len(argv), *argv)]  # fmt: skip


def _write_private(target: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(target), 0o700, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def write(paths: Paths, name: str, body: list[bytes]) -> None:
    """Atomically replace the guest's cache; best effort (a failure costs speed only)."""
    try:
        _write_private(cache_file(paths, name), b"".join([netstring(VERSION), *body]))
    except OSError:
        pass


def forget(paths: Paths, name: str) -> None:
    """Drop the cache (a failed start, a deleted guest)."""
    for path in (cache_file(paths, name), cache_file(paths, name) + ".bpf"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
