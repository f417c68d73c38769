"""Import util-vserver's configuration into NAME.conf values.

Two sources (reference util-vserver.md sections 1, 2 and 8):

* the legacy sh fragment ``/etc/vservers/NAME.conf``: read as data like our
  own files; lines a shell would have to evaluate (``if``/``case``...) are
  reported, never guessed;
* the directory ``/etc/vservers/NAME/`` (one value per file), mapped to our
  keys; every file we cannot map is reported.

Nothing here writes: ``import_guest`` returns the values and the report, the
caller writes them with ``write_new_config``.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import values as v
from engine.config.files import read_config_bytes
from engine.config.model import KEYS, build_config
from engine.config.parser import parse_bytes, parse_text
from engine.config.writer import new_text
from engine.errors import GuestNotFound
from engine.paths import Paths, check_name

# the order keys are written in
_ORDER = tuple(KEYS)
_DEFAULT_MOUNTS = {("proc", "/proc"), ("tmpfs", "/tmp"), ("devpts", "/dev/pts"), ("sysfs", "/sys")}
_RLIMIT_TO_ULIMIT = ("nofile", "core", "data", "fsize", "memlock", "stack", "cpu", "nproc", "as")


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import found: NAME.conf values and what could not be mapped."""

    source: Path
    kind: str  # "conf" (legacy NAME.conf) or "dir" (/etc/vservers/NAME/)
    values: tuple[tuple[str, str], ...]
    unmapped: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, str]:
        return dict(self.values)


def default_source(paths: Paths, name: str) -> Path:
    """``/etc/vservers/NAME/`` if it exists, else ``/etc/vservers/NAME.conf``.

    util-vserver itself prefers the directory and falls back to the legacy
    file only when there is no directory.
    """
    directory = paths.legacy_guest_dir(name)
    return directory if directory.is_dir() else paths.legacy_config_file(name)


def import_guest(paths: Paths, name: str, source: Path | None = None) -> ImportResult:
    """Read util-vserver's configuration of ``name`` (file or directory)."""
    check_name(name)  # the name of the NAME.conf it becomes
    src = Path(source) if source is not None else default_source(paths, name)
    if src.is_dir():
        return import_directory(src, name, paths, _within(paths, src))
    if not src.exists() and not src.is_symlink():
        raise GuestNotFound(
            f"no util-vserver configuration at {src}; give the path: "
            f"`vserver {name} import /etc/vservers/{name}`",
            name,
        )
    return import_conf(src, name, _within(paths, src.parent))


def _within(paths: Paths, src: Path) -> Path:
    """Where links in a legacy configuration may point: /etc/vservers (its
    .defaults too) for the usual place, else the directory the admin named."""
    top = os.path.abspath(paths.legacy_config_dir)
    inside = os.path.commonpath([os.path.abspath(src), top]) == top
    return paths.legacy_config_dir if inside else src


# -- legacy NAME.conf -----------------------------------------------------------------
def import_conf(path: Path, name: str, within: Path | None = None) -> ImportResult:
    """Map a legacy sh-fragment NAME.conf; shell code is reported, not run."""
    check_name(name)  # the name of the NAME.conf it becomes
    doc = parse_bytes(read_config_bytes(path, within, name), path, name)
    unmapped = [str(err) for err in doc.errors]
    values = {key: entry.value for key, entry in doc.assignments().items()}
    notes: list[str] = []
    _map_minit(values, notes)
    hook = path.with_suffix(".sh")
    if hook.exists():
        unmapped.append(f"{hook}: start/stop hook script: not imported (run it yourself)")
    values, dropped = _keep_valid(name, values)
    return ImportResult(path, "conf", _ordered(values), tuple(unmapped + dropped), tuple(notes))


def _map_minit(values: dict[str, str], notes: list[str]) -> None:
    flags = values.get("S_FLAGS", "").split()
    if "minit" not in (f.lower() for f in flags):
        return
    values["S_FLAGS"] = " ".join(f for f in flags if f.lower() != "minit")
    if not values["S_FLAGS"]:
        del values["S_FLAGS"]
    if "V_INIT" not in values:
        values["V_INIT"] = "/sbin/minit-start"
        notes.append("S_FLAGS minit: mapped to V_INIT=/sbin/minit-start")


def _keep_valid(name: str, values: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Drop values that do not validate; each dropped one is reported."""
    dropped: list[str] = []
    for _ in range(len(values) + 1):
        text = new_text(name, values)
        _, errors = build_config(name, parse_text(text), name)
        bad = [e for e in errors if e.key in values]
        if not bad:
            break
        for err in bad:
            dropped.append(f"{err.key}={values.pop(err.key)!r}: {err.reason}")
    return values, dropped


def _ordered(values: dict[str, str]) -> tuple[tuple[str, str], ...]:
    known = [(k, values[k]) for k in _ORDER if k in values]
    return tuple(known + [(k, val) for k, val in values.items() if k not in KEYS])


# -- /etc/vservers/NAME/ --------------------------------------------------------------
@dataclass(slots=True)
class _Dir:
    top: Path
    name: str
    within: Path | None = None  # links may point inside it only (config.files)
    values: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    consumed: set[str] = field(default_factory=set)
    flags: list[str] = field(default_factory=list)
    ulimit: dict[str, dict[str, int | None]] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        return self.top / rel

    def scalar(self, rel: str) -> str | None:
        """First line of a file (marks it consumed), None if absent."""
        lines = self._lines(rel)
        return lines[0].strip() if lines else (None if lines is None else "")

    def items(self, rel: str) -> list[str] | None:
        """List file: one item per line, blanks and # lines skipped."""
        lines = self._lines(rel)
        if lines is None:
            return None
        return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]

    def exists(self, rel: str) -> bool:
        p = self.path(rel)
        if p.exists() or p.is_symlink():
            self.consumed.add(rel)
            return True
        return False

    def _lines(self, rel: str) -> list[str] | None:
        p = self.path(rel)
        if not p.is_file():
            return None
        self.consumed.add(rel)
        data = read_config_bytes(p, self.within or self.top, self.name)
        return data.decode("utf-8", errors="replace").splitlines()

    def skip(self, rel: str, why: str) -> None:
        """Report ``rel`` (file or whole directory) as not imported, and why."""
        if self.exists(rel):
            for sub in _walk(self.path(rel), rel):
                self.consumed.add(sub)
            self.unmapped.append(f"{rel}: {why}")


def import_directory(
    top: Path, name: str, paths: Paths | None = None, within: Path | None = None
) -> ImportResult:
    """Map a util-vserver ``/etc/vservers/NAME/`` directory to NAME.conf values."""
    check_name(name)  # the name of the NAME.conf it becomes
    d = _Dir(top, name, within)
    _identity(d)
    _interfaces(d)
    _caps_and_flags(d)
    _limits(d)
    _init(d)
    _fstabs(d)
    _storage(d, paths)
    if d.flags:
        d.values["S_FLAGS"] = " ".join(dict.fromkeys(d.flags))
    if d.ulimit:
        d.values["ULIMIT"] = v.format_ulimit(_ulimits(d.ulimit))
    for rel in _unconsumed(d):
        d.unmapped.append(f"{rel}: not mapped (no vstui equivalent)")
    values, dropped = _keep_valid(name, d.values)
    return ImportResult(top, "dir", _ordered(values), tuple(d.unmapped + dropped), tuple(d.notes))


def _identity(d: _Dir) -> None:
    context = d.scalar("context")
    if context:
        d.values["S_CONTEXT"] = context
    own = d.scalar("name")
    if own and own != d.name:
        d.notes.append(f"name: '{own}' differs; the guest is imported as '{d.name}'")
    hostname = d.scalar("uts/nodename") or d.scalar("hostname")
    if hostname:
        d.values["S_HOSTNAME"] = hostname
    domain = d.scalar("uts/domainname")
    if domain is None:
        domain = d.scalar("domainname")
    if domain is not None:
        d.values["S_DOMAINNAME"] = domain or "none"
    nice = d.scalar("nice")
    if nice:
        d.values["S_NICE"] = nice
    if d.exists("disabled"):
        d.notes.append("disabled: the guest was disabled; ONBOOT stays no")
    d.exists("run")


def _interfaces(d: _Dir) -> None:
    base = d.path("interfaces")
    if not base.is_dir():
        return
    d.consumed.add("interfaces")
    default_dev = d.scalar("interfaces/dev")
    default_prefix = d.scalar("interfaces/prefix")
    default_mask = d.scalar("interfaces/mask")
    bcast = d.scalar("interfaces/bcast")
    words: list[str] = []
    bcasts: set[str] = {bcast} if bcast else set()
    for sub in sorted(p.name for p in base.iterdir() if p.is_dir() and not p.is_symlink()):
        word = _interface(
            d, f"interfaces/{sub}", default_dev, default_prefix, default_mask, len(words)
        )
        if word:
            words.append(word)
            own = d.scalar(f"interfaces/{sub}/bcast")
            if own:
                bcasts.add(own)
    if words:
        d.values["IPROOT"] = " ".join(words)
    if len(bcasts) == 1:
        d.values["IPROOTBCAST"] = bcasts.pop()
    elif bcasts:
        d.unmapped.append(f"interfaces/*/bcast: several broadcasts {sorted(bcasts)}: set one")


def _interface(
    d: _Dir, rel: str, dev: str | None, prefix: str | None, mask: str | None, index: int
) -> str | None:
    if d.exists(f"{rel}/disabled"):
        d.skip(rel, "disabled address: not imported")
        return None
    ip = d.scalar(f"{rel}/ip")
    if not ip:
        d.skip(rel, "no ip file: not imported")
        return None
    own_prefix = d.scalar(f"{rel}/prefix") or d.scalar(f"{rel}/mask") or prefix or mask
    own_dev = None if d.exists(f"{rel}/nodev") else (d.scalar(f"{rel}/dev") or dev)
    label = d.scalar(f"{rel}/name")
    word = f"{own_dev}:{ip}" if own_dev else ip
    word += f"/{own_prefix}" if own_prefix else ""
    if label and label != f"{d.name}{index or ''}":
        d.notes.append(
            f"{rel}/name: label '{label}' not kept; vstui labels addresses "
            f"dev:{d.name}, dev:{d.name}1..."
        )
    return word


_CFLAGS = frozenset(v.FLAGS) - {"sched"}


def _caps_and_flags(d: _Dir) -> None:
    caps = (d.items("bcapabilities") or []) + (d.items("capabilities") or [])
    if caps:
        d.values["S_CAPS"] = " ".join(caps)
    ccaps = d.items("ccapabilities")
    if ccaps:
        d.unmapped.append(
            f"ccapabilities: {' '.join(ccaps)}: context capabilities need the vserver kernel; "
            "not imported"
        )
    for rel in ("cflags", "flags"):
        for flag in d.items(rel) or []:
            word = flag.lower().removeprefix("vxf_")
            if word in _CFLAGS:
                d.flags.append(word)
            elif word == "sched_hard":
                d.unmapped.append(f"{rel}: sched_hard: set V_CPU_QUOTA for a hard CPU cap")
            else:
                d.unmapped.append(f"{rel}: {flag}: no vstui equivalent")


def _limits(d: _Dir) -> None:
    rl = d.path("rlimits")
    if rl.is_dir():
        d.consumed.add("rlimits")
        for entry in sorted(p.name for p in rl.iterdir()):
            _rlimit(d, "rlimits", entry, guest_wide=True)
    ul = d.path("ulimits")
    if ul.is_dir():
        d.consumed.add("ulimits")
        for entry in sorted(p.name for p in ul.iterdir()):
            _rlimit(d, "ulimits", entry, guest_wide=False)
    for rel in ("schedule", "sched"):
        d.skip(rel, "CPU token bucket: not imported; set V_CPU_QUOTA / V_CPU_WEIGHT")


def _rlimit(d: _Dir, base: str, entry: str, guest_wide: bool) -> None:
    resource, _, side = entry.partition(".")
    rel = f"{base}/{entry}"
    if side not in ("", "hard", "soft") or resource not in (*_RLIMIT_TO_ULIMIT, "rss"):
        return  # reported by the walk as not mapped
    text = d.scalar(rel) or ""
    try:
        amount = _limit_value(text, resource, pages=guest_wide and resource in ("rss", "as"))
    except v.Invalid as exc:
        d.unmapped.append(f"{rel}: {exc}")
        return
    if guest_wide and resource == "rss":
        if side in ("", "hard") and amount is not None:
            d.values["V_MEMORY"] = str(amount)
        elif side == "soft":
            d.unmapped.append(f"{rel}: soft memory limit: not imported (V_MEMORY is hard)")
        return
    if guest_wide and resource == "nproc":
        d.flags.append("nproc")  # util-vserver's nproc rlimit counts the whole guest
    elif guest_wide:
        d.notes.append(f"{rel}: a whole-guest limit in util-vserver; imported per process (ULIMIT)")
    limit = d.ulimit.setdefault(resource, {})
    for s in ("hard", "soft") if side == "" else (side,):
        limit[s] = amount


def _limit_value(text: str, resource: str, pages: bool) -> int | None:
    if text.lower() in ("inf", "infinity", "unlimited", "-1"):
        return None
    if not text.isdigit() or not text.isascii() or len(text) > 40:
        raise v.Invalid(f"{v.shown(text)} is not a limit; use a number or inf")
    return int(text) * (os.sysconf("SC_PAGESIZE") if pages else 1)


def _ulimits(found: dict[str, dict[str, int | None]]) -> tuple[v.ULimit, ...]:
    out = []
    for resource, sides in found.items():
        hard = sides.get("hard", sides.get("soft"))
        soft = sides.get("soft", hard)
        _, mult = v.ULIMIT_LETTERS[resource]
        # ULIMIT counts sizes in KiB: round bytes up to whole KiB
        hard = None if hard is None else -(-hard // mult) * mult
        soft = None if soft is None else -(-soft // mult) * mult
        out.append(v.ULimit(resource, soft, hard))
    return tuple(out)


_STYLE_INIT = {"minit": "/sbin/minit-start", "arch": "/etc/rc.multi"}


def _init(d: _Dir) -> None:
    style = d.scalar("apps/init/style")
    if style == "plain":
        d.flags.append("fakeinit")
    elif style in _STYLE_INIT:
        d.values["V_INIT"] = _STYLE_INIT[style]
    elif style and style != "sysv":
        d.unmapped.append(f"apps/init/style: '{style}': set V_INIT to the guest's start command")
    mark = d.scalar("apps/init/mark")
    if mark == "default":
        d.values["ONBOOT"] = "yes"
    elif mark:
        d.unmapped.append(f"apps/init/mark: '{mark}': only 'default' maps to ONBOOT=yes")
    start = d.items("apps/init/cmd.start")
    if start:
        d.values["V_INIT"] = shlex.join(start)
    d.consumed.update({"apps", "apps/init"})


def _fstabs(d: _Dir) -> None:
    shares: list[str] = []
    mounts: list[str] = []
    for rel in ("fstab", "fstab.local", "fstab.remote"):
        for line in d.items(rel) or []:
            _fstab_line(d, rel, line, shares, mounts)
    if shares:
        d.values["V_SHARE"] = " ".join(shares)
    if mounts:
        d.values["V_MOUNT"] = " ".join(mounts)


def _fstab_line(d: _Dir, rel: str, line: str, shares: list[str], mounts: list[str]) -> None:
    fields = line.split()
    if len(fields) < 3:
        d.unmapped.append(f"{rel}: `{line}`: not an fstab line")
        return
    source, target, fstype = fields[:3]
    options = [o for o in (fields[3] if len(fields) > 3 else "").split(",") if o]
    if (fstype, target.rstrip("/") or "/") in _DEFAULT_MOUNTS:
        return  # vstui mounts /proc, /tmp, /dev/pts and /sys itself
    try:
        if "bind" in options or "rbind" in options:
            word = f"{source}:{target}:{'ro' if 'ro' in options else 'rw'}"
            v.parse_shares(word)
            shares.append(word)
        else:
            kept = ",".join(o for o in options if o != "defaults")
            word = f"{source}:{target}:{fstype}" + (f":{kept}" if kept else "")
            v.parse_mounts(word)
            mounts.append(word)
    except v.Invalid as exc:
        d.unmapped.append(f"{rel}: `{line}`: {exc}")


def _storage(d: _Dir, paths: Paths | None) -> None:
    dl = d.path("dlimits")
    if dl.is_dir():
        d.consumed.add("dlimits")
        for sub in sorted(p.name for p in dl.iterdir() if p.is_dir()):
            space = d.scalar(f"dlimits/{sub}/space_total")
            inodes = d.scalar(f"dlimits/{sub}/inodes_total")
            d.scalar(f"dlimits/{sub}/directory")
            if space and space.isdigit():
                d.values["V_DISK"] = f"{space}K"
                d.values["V_DISK_BACKEND"] = "project"
            if inodes and inodes.isdigit():
                d.values["V_INODES"] = inodes
    vdir = d.path("vdir")
    if vdir.is_symlink() and paths is not None:
        d.consumed.add("vdir")
        where = os.readlink(vdir)
        expected = "/" + str(paths.guest_root(d.name).relative_to(paths.root))
        if os.path.normpath(where) != os.path.normpath(expected):
            d.notes.append(f"vdir: the tree is at {where}; vstui expects it at {expected}")


def _walk(top: Path, rel: str) -> list[str]:
    """``rel`` and every path below it (symlinks are not followed)."""
    found = [rel] if rel else []
    if not top.is_dir() or top.is_symlink():
        return found
    stack = [(top, rel)]  # iterative: os.walk of 3.11 recurses (RecursionError when deep)
    while stack:
        folder, here = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    below = f"{here}/{entry.name}" if here else entry.name
                    found.append(below)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), below))
        except OSError:
            continue  # unreadable: os.walk skipped it too
    return found


def _unconsumed(d: _Dir) -> list[str]:
    """Files and directories nobody read, each reported at its highest level."""
    everything = _walk(d.top, "")
    touched = set()
    for rel in d.consumed:
        parts = rel.split("/")
        touched.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    report: list[str] = []
    for rel in sorted(everything):
        if rel in touched or any(rel.startswith(r + "/") for r in report):
            continue
        report.append(rel)
    return [r + ("/" if d.path(r).is_dir() and not d.path(r).is_symlink() else "") for r in report]


__all__ = ["ImportResult", "default_source", "import_conf", "import_directory", "import_guest"]
