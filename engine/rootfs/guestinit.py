"""What a guest's own init is, read from its tree: for the start plan, `check` and the audit.

With ``fakeinit`` the guest boots its own /sbin/init. Whether that is
systemd decides how the guest is stopped (SIGRTMIN+3, systemd's halt in a
container; SIGTERM only makes it re-execute itself), whether it reports
readiness, and what it needs (CAP_SETPCAP for its services' bounding sets).
The path is resolved inside the tree (symlinks stay in it, as at start).
"""

from __future__ import annotations

import os
import stat

from engine import safepath
from engine._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FAKEINIT = "/sbin/init"
SYSTEMD_NAMES = ("systemd",)  # the binary /sbin/init leads to: /usr/lib/systemd/systemd


class GuestInit(Record):
    """The guest's init as found in its tree.

    ``target`` is the guest path the init resolves to (``/usr/lib/systemd/systemd``),
    None when it cannot be resolved; ``problem`` says why it cannot run.
    """

    __slots__ = _fields = ("path", "target", "problem")
    path: str
    target: str | None
    problem: str | None

    @property
    def systemd(self) -> bool:
        return self.target is not None and os.path.basename(self.target) in SYSTEMD_NAMES


def inspect(root: str | os.PathLike[str], path: str = FAKEINIT) -> GuestInit:
    """Resolve ``path`` inside the tree at ``root`` and check it can be executed."""
    try:
        rootfd = safepath.open_root(root)
    except OSError as exc:
        return GuestInit(path, None, f"the guest tree {root} cannot be opened: {exc.strerror}")
    try:
        fd = safepath.open_in_root(rootfd, path, os.O_PATH)
    except OSError as exc:
        return GuestInit(path, None, f"{path} does not exist in the guest ({exc.strerror})")
    finally:
        os.close(rootfd)
    try:
        st = os.fstat(fd)
        found = os.readlink(safepath.fd_path(fd))
    finally:
        os.close(fd)
    real_root = os.path.realpath(root)
    rel = os.path.relpath(found, real_root)
    target = "/" if rel == "." else "/" + rel
    if not stat.S_ISREG(st.st_mode):
        return GuestInit(path, target, f"{path} is not a file in the guest ({target})")
    if not st.st_mode & 0o111:
        return GuestInit(path, target, f"{path} is not executable in the guest ({target})")
    return GuestInit(path, target, None)


# systemd's tmp.mount enabled for local-fs.target (trixie's default), or masked by the admin
UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
TMP_WANTS = tuple(f"{d}/local-fs.target.wants/tmp.mount" for d in UNIT_DIRS)
TMP_UNIT_OVERRIDE = "/etc/systemd/system/tmp.mount"


def present(root: str | os.PathLike[str], path: str) -> bool:
    """Whether the entry ``path`` exists in the tree (a symlink, even dangling, counts)."""
    rootfd = safepath.open_root(root)
    try:
        os.close(safepath.open_in_root(rootfd, path, os.O_PATH | os.O_NOFOLLOW))
        return True
    except OSError:
        return False
    finally:
        os.close(rootfd)


def tmp_facts(root: str | os.PathLike[str]) -> tuple[tuple[str, bool], ...]:
    """(path, present) of every entry that decides whether the guest wants a tmpfs /tmp."""
    return tuple((path, present(root, path)) for path in (*TMP_WANTS, TMP_UNIT_OVERRIDE))


def wants_tmpfs_tmp(facts: tuple[tuple[str, bool], ...]) -> bool:
    """The guest's systemd would mount a tmpfs on /tmp (it cannot: no CAP_SYS_ADMIN).

    Its tmp.mount is wanted by local-fs.target and not masked or replaced in
    /etc; vstui then mounts it, with the unit's options, before init runs.
    """
    found = dict(facts)
    return any(found[p] for p in TMP_WANTS) and not found[TMP_UNIT_OVERRIDE]


def tree_present(cfg: Any, root: str | os.PathLike[str]) -> bool:
    """False when the tree lives in an image that is not mounted (nothing to read)."""
    if getattr(cfg, "disk_backend", "none") != "image":
        return os.path.isdir(root)
    return os.path.ismount(root)


def findings(cfg: Any, root: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(kind, message) about the guest's init: ``missing`` or ``setpcap``; empty when fine.

    Nothing is said when the tree cannot be read now (an unmounted image).
    """
    if not cfg.has_flag("fakeinit") or not tree_present(cfg, root):
        return []
    found = inspect(root)
    if found.problem:
        return [("missing", f"S_FLAGS has fakeinit but {found.problem}; the start would fail")]
    if found.systemd and "SETPCAP" not in cfg.effective_caps():
        return [("setpcap", "the guest boots systemd, whose services (journald, logind...) "
                 "fail with 218/CAPABILITIES without CAP_SETPCAP")]  # fmt: skip
    return []


FIXES = {
    "missing": "install an init in the guest (apt-get install systemd-sysv) or remove fakeinit",
    "setpcap": "add S_CAPS=SETPCAP",
}


def warnings(cfg: Any, root: str | os.PathLike[str]) -> list[str]:
    """What `vserver NAME check` prints about the guest's init."""
    return [f"{message}; {FIXES[kind]}" for kind, message in findings(cfg, root)]
