"""The boot cache: a start replayed by the compiled ``vserver`` without Python.

The one cache of a start. A Python start (``starting.launch``) decides
everything a guest's boot does and hands it, as one start plan
(engine.runtime.bootplan.START_OPS: cgroups, run files, the seccomp program,
the boot plan of the guest's PID 1), to the C executor. When the guest can
be started without Python (plain-directory storage, no links to make through
netlink), the supervisor then writes that very plan here,
``state_dir/boot-cache/NAME``, with the lean supervisor's command and a
record of everything the plan depends on (CACHE_OPS):

- ``content``: NAME.conf, by SHA-256 of its bytes (an edit that keeps size
  and times is still an edit);
- ``line``: this guest's own line of a table all guests share (its context
  id in ``xids``): another guest's first start, build or delete rewrites
  the table but never this line, so it never invalidates this entry;
- ``binary``: the helpers and the compiled front end, by SHA-256 (their
  stat, ctime included, is only a shortcut for "unchanged"; cache.h writes a
  new stat back once the same bytes were hashed under it);
- ``code``: the engine's sources (the planner itself), by stat identity;
- ``inroot``: whether the guest's /etc/rc.local exists (init's command);
- ``inlink``: the guest files that decide whether its systemd wants a tmpfs
  /tmp (engine.rootfs.guestinit.tmp_facts: a mask is a symlink to /dev/null);
- ``source``: each host bind source and the tree, by device and inode,
  reached without any symlink.

engine/helpers/cache.h replays the entry only when every record still holds
and the running front end is one of the recorded binaries; the executor
then checks each bind source again when it binds it. Anything else falls
back to the Python start, which plans again, names what is wrong and writes
a fresh entry. A stale entry is never replayed.

The file is root's alone (0600 in a 0700 directory); the front end refuses
any other. It is the only cache a start keeps.
"""

from __future__ import annotations

import os

from engine.runtime import netstrings
from engine.runtime.bootplan import COUNTED

TYPE_CHECKING = False  # not typing's: this runs on every Python start
if TYPE_CHECKING:
    from typing import Any

    from engine.paths import Paths

CACHE_DIR = "boot-cache"
VERSION = "vstui-boot-6"

CACHE_OPS: dict[str, int] = {
    "content": 2,  # PATH SHA256
    "line": 3,  # PATH KEY VALUE: the shared table PATH has the line "KEY VALUE"
    "binary": 7,  # PATH SHA256 DEV INO SIZE MTIME_NS CTIME_NS
    "code": 6,  # PATH DEV INO SIZE MTIME_NS CTIME_NS
    "inroot": 3,  # ROOT PATH PRESENT
    "inlink": 3,  # ROOT PATH PRESENT: the entry itself (a symlink is not followed)
    "source": 3,  # PATH DEV INO
    "rundir": 1,  # PATH
    "log": 1,  # PATH: the supervisor's stdout and stderr
    "plan": 1,  # START_PLAN, exactly as vboot executed it
    "super": COUNTED,  # N ARGV...: the lean supervisor (init's PID and the console fd follow)
    "ready": 0,  # init is vinit: the start is answered once it runs, not by the supervisor
}


def cache_file(paths: Paths, name: str) -> str:
    return paths.state_file(CACHE_DIR, name)


def op(name: str, *fields: str | bytes | int) -> bytes:
    assert CACHE_OPS[name] < 0 or CACHE_OPS[name] == len(fields), name
    raw = [f if isinstance(f, bytes) else str(f).encode() for f in (name, *fields)]
    return b"".join(map(netstrings.encode, raw))


def eligible(cfg: Any, own_netns: bool) -> bool:
    """True when this guest's start can be replayed without Python."""
    from engine.rootfs.storage import backend_of

    if backend_of(cfg) != "none":
        return False
    if own_netns and (cfg.netmode or "veth") != "host":
        return not (cfg.addresses or cfg.bridge or cfg.bandwidth_out or cfg.bandwidth_in)
    return True


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def content(path: str) -> bytes | None:
    """A ``content`` record of ``path`` as it is now (None when unreadable)."""
    try:
        with open(path, "rb") as f:
            return op("content", path, sha256(f.read()))
    except OSError:
        return None


def _stat(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def binary(path: str) -> bytes:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        return op("binary", path, sha256(f.read()), *_stat(st))


def binaries() -> list[str]:
    """The helpers a start runs and every copy of the compiled front end."""
    import sys

    from engine.helpers import HELPERS_DIR

    names = ("vboot", "vinit", "vexec", "vsuper", "vserver")
    found = [os.fspath(HELPERS_DIR / name) for name in names]
    installed = os.path.join(sys.prefix, "bin", "vserver")  # setup.sh's copy
    if os.path.isfile(installed) and not os.path.islink(installed):
        found.append(installed)
    return [path for path in found if os.path.exists(path)]


def sources() -> list[str]:
    """The engine's Python sources: the planner whose decisions the plan holds."""
    import engine

    package = os.path.dirname(os.path.abspath(engine.__file__))
    found = []
    for top, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.join(top, f) for f in sorted(files) if f.endswith(".py")]
    return found


def table_line(path: str, key: str, value: object) -> bytes:
    """A ``line`` record: the guest's own entry in a table shared by all guests."""
    return op("line", path, key, value)


def records(
    conf: bytes,
    lines: list[bytes],
    root: str,
    plan: Any,
    has_rc_local: bool,
    links: tuple[tuple[str, bool], ...] = (),
) -> list[bytes]:
    """What the plan was made from, taken when it was made (``conf``: the ``content``
    record of NAME.conf as parsed; ``lines``: the guest's own lines of shared tables;
    ``links``: guest entries and whether they existed). The binaries are added by
    ``entry``."""
    from engine.runtime.plan import HostBind

    out = [conf, *lines]
    out += [op("code", path, *_stat(os.stat(path))) for path in sources()]
    out.append(op("inroot", root, "/etc/rc.local", int(has_rc_local)))
    out += [op("inlink", root, path, int(present)) for path, present in links]
    out.append(op("source", root, *plan.root_identity))
    out += [op("source", s.source, s.dev, s.ino) for s in plan.before if isinstance(s, HostBind)]
    return out


def entry(
    deps: list[bytes], run_dir: str, log: str, plan: bytes, command: list[str], ready: bool
) -> bytes:
    """The whole cache file: version, records, where to run, the plan, the supervisor.

    ``ready``: the start is answered once init runs (Booted.ready). The binaries
    are hashed here, after the guest runs: not on the start's path.
    """
    deps = [*deps, *(binary(path) for path in binaries())]
    tail = [op("rundir", run_dir), op("log", log), op("plan", plan),
            op("super", len(command), *command), *([op("ready")] if ready else [])]  # fmt: skip
    return b"".join([netstrings.encode(VERSION.encode()), *deps, *tail])


def write(paths: Paths, name: str, data: bytes) -> None:
    """Atomically replace the guest's entry; best effort (a failure costs speed only)."""
    target = cache_file(paths, name)
    try:
        os.makedirs(os.path.dirname(target), 0o700, exist_ok=True)
        tmp = f"{target}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(tmp, flags, 0o600), "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except OSError:
        pass


def forget(paths: Paths, name: str) -> None:
    """Drop the entry (a failed start, a deleted guest, a guest that is not cacheable)."""
    try:
        os.unlink(cache_file(paths, name))
    except FileNotFoundError:
        pass
