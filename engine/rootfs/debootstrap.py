"""The ``debootstrap[:SUITE]`` template: a bootable Debian system, cached per package list.

``debootstrap --variant=minbase --include=systemd-sysv,dbus[,EXTRA...] SUITE``
makes a tree whose /sbin/init is systemd (the guest is built with the
``fakeinit`` flag, so it boots from it). The first build of a suite and
package list runs debootstrap into the cache (``VSTUI_CACHE_DIR`` or
``/var/cache/vservers`` under the root, mode 0700: the trees hold setuid
programs); later builds copy the cached tree, the way lxc-create's debian
template reuses /var/cache/lxc. ``--flush-cache`` rebuilds the entry.

What must differ between guests never enters the cache: /etc/machine-id
is left empty (systemd gives each guest its own at first boot), dbus's
copy and systemd's random seed are removed, and ssh host keys are made
for each guest (by the host's ``ssh-keygen -A``, written in from a chroot).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from engine._record import Record
from engine.errors import VstuiError

DEFAULT_SUITE = "bookworm"
PACKAGES = ("systemd-sysv", "dbus")  # systemd as /sbin/init, and the bus logind needs
VARIANT = "minbase"
CACHE_ENV = "VSTUI_CACHE_DIR"
CACHE_SUBDIR = "debootstrap"
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386",
          "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}  # fmt: skip

# per-machine identity a copied tree must not share (paths inside the tree)
IDENTITY_FILES = ("var/lib/dbus/machine-id", "var/lib/systemd/random-seed")
SSH_HOST_KEYS = "etc/ssh"


class Request(Record):
    """One debootstrap run: what is installed from where."""

    __slots__ = _fields = ("suite", "include", "mirror", "arch")
    _defaults = {"include": (), "mirror": None, "arch": None}
    suite: str
    include: tuple[str, ...]
    mirror: str | None
    arch: str | None

    @property
    def packages(self) -> tuple[str, ...]:
        """The base packages and the extra ones, each once, sorted (the cache key's part)."""
        return tuple(sorted({*PACKAGES, *self.include}))

    def key(self) -> str:
        """The cache entry's name: readable suite and arch, a hash of the rest."""
        spec = [self.suite, self.arch, VARIANT, list(self.packages), self.mirror]
        digest = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:12]
        return f"{self.suite}-{self.arch}-{digest}"


def parse_include(words: Iterable[str]) -> tuple[str, ...]:
    """``--include`` values (comma or space separated) as package names; VstuiError if bad."""
    names = [n for word in words for n in word.replace(",", " ").split()]
    for name in names:
        if not name[0].isalnum() or not all(c.isalnum() or c in "+-.:" for c in name):
            raise VstuiError(f"--include: '{name}' is not a Debian package name")
    return tuple(dict.fromkeys(names))


def host_arch() -> str:
    machine = os.uname().machine
    if machine in ARCHES:
        return ARCHES[machine]
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        raise VstuiError(f"template debootstrap: unknown architecture {machine}") from None


def request(suite: str | None, include: Iterable[str] = (), mirror: str | None = None) -> Request:
    return Request(suite or DEFAULT_SUITE, parse_include(include), mirror or None, host_arch())


def cache_dir(default: Path) -> Path:
    """Where cached trees live: $VSTUI_CACHE_DIR/debootstrap, else ``default``/debootstrap."""
    base = os.environ.get(CACHE_ENV) or os.fspath(default)
    return Path(base) / CACHE_SUBDIR


# -- running debootstrap --------------------------------------------------------------------


def argv(tool: str, req: Request, target: Path) -> list[str]:
    words = [tool, f"--variant={VARIANT}", f"--arch={req.arch}",
             f"--include={','.join(req.packages)}", req.suite, os.fspath(target)]  # fmt: skip
    return words + ([req.mirror] if req.mirror else [])


def run_debootstrap(req: Request, target: Path) -> None:
    """debootstrap into ``target``; VstuiError with debootstrap's own last line on failure."""
    tool = shutil.which("debootstrap")
    if tool is None:
        raise VstuiError("template debootstrap needs debootstrap; apt-get install debootstrap")
    done = subprocess.run(argv(tool, req, target), capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith("E:")] or lines or ["no output"]
        last = errors[-1]
        raise VstuiError(f"debootstrap {req.suite} failed: {last}")
    scrub(target)


def scrub(tree: Path) -> None:
    """Remove what makes a tree one machine: ids, seeds, ssh host keys, /dev nodes.

    The tree is our own debootstrap result (no foreign symlinks to follow),
    still only entries are removed, never followed.
    """
    machine_id = tree / "etc/machine-id"
    if machine_id.is_file() and not machine_id.is_symlink():
        machine_id.write_bytes(b"")  # empty: systemd makes the guest's own at first boot
    for rel in IDENTITY_FILES:
        if os.path.lexists(tree / rel):
            (tree / rel).unlink()
    keys = tree / SSH_HOST_KEYS
    if keys.is_dir() and not keys.is_symlink():
        for entry in keys.glob("ssh_host_*"):
            entry.unlink()
    dev = tree / "dev"
    if dev.is_dir() and not dev.is_symlink():
        for entry in dev.iterdir():  # the guest gets its own /dev at start
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


# -- the cache ------------------------------------------------------------------------------


def _private_dir(path: Path) -> None:
    """``path`` (and parents) as a root-only directory: cached trees hold setuid programs."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, 0o700)


def cached_tree(req: Request, cache: Path, flush: bool = False) -> Path:
    """The cached tree for ``req``, made first when missing (or when ``flush``)."""
    _private_dir(cache.parent)
    _private_dir(cache)
    entry = cache / req.key()
    with open(cache / f".{req.key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per entry; others wait and reuse it
        if flush and entry.exists():
            shutil.rmtree(entry)
        if not entry.is_dir():
            _fill(req, entry)
    return entry


def _fill(req: Request, entry: Path) -> None:
    work = entry.with_name(f".{entry.name}.tmp")
    if work.exists():
        shutil.rmtree(work)  # a build that died half-way
    work.mkdir(mode=0o755)
    try:
        run_debootstrap(req, work)
        (work / ".vstui-debootstrap.json").write_text(
            json.dumps(
                {
                    "suite": req.suite,
                    "arch": req.arch,
                    "packages": req.packages,
                    "mirror": req.mirror,
                },
                indent=1,
            )
            + "\n"  # fmt: skip
        )
        os.rename(work, entry)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def copy_tree(source: Path, tree: Path) -> None:
    """``cp -a`` the cached tree into the (empty) guest tree: owners, modes, links, xattrs."""
    done = subprocess.run(["cp", "-a", "--reflink=auto", f"{source}/.", f"{tree}/"],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise VstuiError(f"copying the cached tree {source} failed: {done.stderr.strip()}")
    marker = tree / ".vstui-debootstrap.json"
    if marker.is_file() and not marker.is_symlink():
        marker.unlink()


def host_keys(tree: Path) -> dict[str, tuple[bytes, int]]:
    """Fresh ssh host keys for a guest with sshd: {file name: (content, mode)}.

    Made by the host's ssh-keygen in a private temporary directory (no
    binary of the guest runs on the host); the caller writes them into the
    guest's /etc/ssh from inside a chroot. Empty when the guest has no sshd.
    """
    if not os.path.lexists(tree / "usr/sbin/sshd"):
        return {}
    tool = shutil.which("ssh-keygen")
    if tool is None:
        raise VstuiError("the guest has sshd: its host keys need ssh-keygen on the host; "
                         "apt-get install openssh-client")  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vstui-hostkeys-") as work:
        os.makedirs(os.path.join(work, "etc/ssh"))
        done = subprocess.run([tool, "-A", "-f", work], capture_output=True, text=True)
        if done.returncode != 0:
            raise VstuiError(f"ssh-keygen -A failed: {done.stderr.strip()}")
        keys = {}
        for entry in sorted(Path(work, "etc/ssh").iterdir()):
            mode = 0o644 if entry.name.endswith(".pub") else 0o600
            keys[entry.name] = (entry.read_bytes(), mode)
        return keys


def write_host_keys(root: Path, keys: dict[str, tuple[bytes, int]]) -> None:
    """In a chroot into the guest: write its host keys into /etc/ssh (root-owned)."""
    if not keys:
        return
    target = root / SSH_HOST_KEYS
    target.mkdir(mode=0o755, exist_ok=True)
    for name, (content, mode) in keys.items():
        path = target / name
        if os.path.lexists(path):
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.write(fd, content)
            os.fchown(fd, 0, 0)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
