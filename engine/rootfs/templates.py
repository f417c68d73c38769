"""Templates that fill a guest tree: skeleton, busybox, tarball:PATH, debootstrap[:SUITE].

Every template writes the guest's own /etc (never a copy of the host's
secrets: no host shadow, no ssh host keys, nothing of /root). ``skeleton``
downloads nothing: it makes mount points for the host's /usr and system
dirs, which ``binds()`` fills read-only at start. ``busybox`` holds its
applet links and an empty /bin/busybox, over which every start binds the
host's static busybox read-only (one inode for all guests).
"""

from __future__ import annotations

import grp
import logging
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import VstuiError
from engine.rootfs.binds import BUSYBOX, SYSTEM_DIRS, host_busybox
from engine.rootfs.chroot import hosts_text, in_chroot

log = logging.getLogger("vstui.rootfs")

KINDS = ("skeleton", "busybox", "tarball", "debootstrap", "export")
HOST = Path("/")

# (path, mode): the directories every guest has
DIRS = (
    ("etc", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("mnt", 0o755),
    ("srv", 0o755),
    ("opt", 0o755),
    ("var", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
    ("var/lib", 0o755),
    ("var/cache", 0o755),
    ("var/spool", 0o755),
)

BUSYBOX_OS_RELEASE = """\
NAME="BusyBox"
ID=busybox
PRETTY_NAME="BusyBox guest (vstui)"
"""

NSSWITCH = """\
# vstui guest: local files only
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
"""

PROFILE = """\
# /etc/profile: written by vstui
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
if [ "$(id -u)" -eq 0 ]; then PS1='\\h:\\w# '; else PS1='\\h:\\w$ '; fi
export PS1
umask 022
"""

RC_LOCAL = """\
#!/bin/sh
# /etc/rc.local: run once when the guest starts (written by vstui).
# Start your services here; the guest's init keeps running after it exits.
exit 0
"""

RESOLV_CONF = """\
# vstui: no name servers configured for this guest.
# Add lines like "nameserver 198.18.0.1" when it has a network.
"""


@dataclass(frozen=True, slots=True)
class EtcFile:
    """One file the template writes under the guest's /etc."""

    content: str
    mode: int = 0o644
    gid: int = 0


@dataclass(frozen=True, slots=True)
class Template:
    kind: str
    arg: str | None


def parse_template(template: str | None) -> Template:
    """``tarball:/x.tgz`` -> Template("tarball", "/x.tgz"); VstuiError if unknown."""
    text = (template or "skeleton").strip()
    kind, _, arg = text.partition(":")
    if kind not in KINDS:
        raise VstuiError(
            f"unknown template '{text}'; use one of: skeleton, busybox, "
            "tarball:PATH, debootstrap[:SUITE], export:FILE"
        )
    if kind == "tarball" and not arg:
        raise VstuiError("template tarball needs a file: tarball:/path/to/image.tar.gz")
    if kind == "export" and not arg:
        raise VstuiError("template export needs a file: export:/path/to/NAME.tar.zst")
    if kind in ("skeleton", "busybox") and arg:
        raise VstuiError(f"template {kind} takes no argument (got '{text}')")
    return Template(kind, arg or None)


def shadow_gid(host: Path = HOST) -> int | None:
    """The host's shadow group id (a skeleton guest shares /usr, hence its tools)."""
    if host != HOST:
        return None
    try:
        return grp.getgrnam("shadow").gr_gid
    except KeyError:
        return None


def etc_files(
    hostname: str,
    addresses: Iterable[object] = (),
    shell: str = "/bin/sh",
    nologin: str = "/bin/false",
    os_release: str = BUSYBOX_OS_RELEASE,
    shadow_group: int | None = None,
    today: int | None = None,
) -> dict[str, EtcFile]:
    """The guest's fresh /etc: users, host names, name service, profile, rc.local."""
    day = today if today is not None else int(time.time() // 86400)
    groups = ["root:x:0:", "tty:x:5:"]
    if shadow_group is not None:
        groups.append(f"shadow:x:{shadow_group}:")
    groups.append("nogroup:x:65534:")
    return {
        "passwd": EtcFile(
            f"root:x:0:0:root:/root:{shell}\n"
            f"nobody:x:65534:65534:nobody:/nonexistent:{nologin}\n"
        ),
        "group": EtcFile("\n".join(groups) + "\n"),
        "shadow": EtcFile(
            f"root:!:{day}:0:99999:7:::\nnobody:*:{day}:0:99999:7:::\n",
            0o640 if shadow_group is not None else 0o600,
            shadow_group or 0,
        ),
        "hostname": EtcFile(hostname + "\n"),
        "hosts": EtcFile(hosts_text(hostname, addresses)),
        "resolv.conf": EtcFile(RESOLV_CONF),
        "os-release": EtcFile(os_release),
        "nsswitch.conf": EtcFile(NSSWITCH),
        "profile": EtcFile(PROFILE),
        "shells": EtcFile(f"/bin/sh\n{shell}\n" if shell != "/bin/sh" else "/bin/sh\n"),
        "fstab": EtcFile("# vstui mounts the guest's file systems itself\n"),
        "rc.local": EtcFile(RC_LOCAL, 0o755),
    }


# -- writing ---------------------------------------------------------------


def _write(path: Path, entry: EtcFile) -> None:
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, entry.mode
    )
    try:
        os.write(fd, entry.content.encode())
        os.fchown(fd, 0, entry.gid)
        os.fchmod(fd, entry.mode)
    finally:
        os.close(fd)


def make_dirs(tree: Path) -> None:
    for rel, mode in DIRS:
        path = tree / rel
        if path.is_symlink():
            continue  # an image's own layout (e.g. /var/run -> /run) wins
        path.mkdir(mode=mode, exist_ok=True)
        os.chmod(path, mode)  # mkdir obeys the umask; these modes must be exact
    for link, target in (("var/run", "../run"), ("etc/mtab", "../proc/self/mounts")):
        if not os.path.lexists(tree / link):
            os.symlink(target, tree / link)


def write_etc(tree: Path, files: dict[str, EtcFile], keep: Iterable[str] = ()) -> None:
    """Write ``files`` under tree/etc; names in ``keep`` are left alone when present."""
    etc = tree / "etc"
    for name, entry in files.items():
        if name in keep and os.path.lexists(etc / name):
            continue
        if (etc / name).is_symlink():
            (etc / name).unlink()  # never write through an image's symlink
        _write(etc / name, entry)


def host_os_release(host: Path = HOST) -> str:
    for candidate in (host / "usr/lib/os-release", host / "etc/os-release"):
        try:
            return candidate.read_text()
        except OSError:
            continue
    return 'NAME="Linux"\nID=linux\n'


# -- skeleton ------------------------------------------------------------


def system_mount_points(tree: Path, host: Path = HOST) -> None:
    """Empty mount points for /usr and the real system dirs; merged-usr symlinks copied."""
    for name in SYSTEM_DIRS:
        source = host / name
        if source.is_symlink():
            os.symlink(os.readlink(source), tree / name)
        elif source.is_dir():
            (tree / name).mkdir(mode=0o755)


# The dynamic loader's cache and its sources. The cache lists the libraries
# of the host's /usr, which a skeleton guest binds read-only: without it every
# exec in the guest probes ~20 hwcaps directories before it finds libc.
LD_SO_FILES = ("ld.so.cache", "ld.so.conf")
LD_SO_DIRS = ("ld.so.conf.d",)


def copy_loader_cache(tree: Path, host: Path = HOST) -> None:
    """Copy the host's /etc/ld.so.cache (+ ld.so.conf, ld.so.conf.d/) into tree/etc.

    Only for skeleton guests: their /usr is the host's. Missing host files
    are skipped (a static or musl host has no cache). Symlinks stay symlinks.
    """
    etc = tree / "etc"
    for name in LD_SO_FILES:
        source = host / "etc" / name
        if source.is_file() and not os.path.lexists(etc / name):
            shutil.copy2(source, etc / name, follow_symlinks=True)
    for name in LD_SO_DIRS:
        source = host / "etc" / name
        if source.is_dir() and not os.path.lexists(etc / name):
            shutil.copytree(source, etc / name, symlinks=True)


def populate_skeleton(tree: Path, hostname: str, addresses: Iterable[object]) -> None:
    system_mount_points(tree)
    make_dirs(tree)
    copy_loader_cache(tree)
    shell = "/bin/bash" if (HOST / "usr/bin/bash").exists() else "/bin/sh"
    nologin = "/usr/sbin/nologin" if (HOST / "usr/sbin/nologin").exists() else "/bin/false"
    files = etc_files(hostname, addresses, shell, nologin, host_os_release(), shadow_gid())
    write_etc(tree, files)


# -- busybox ---------------------------------------------------------------


def busybox_applets(busybox: Path) -> list[str]:
    out = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def populate_busybox(tree: Path, hostname: str, addresses: Iterable[object]) -> None:
    busybox = host_busybox()
    make_dirs(tree)
    for rel in ("bin", "sbin", "usr", "usr/bin", "usr/sbin"):
        (tree / rel).mkdir(mode=0o755, exist_ok=True)
    # a placeholder: every start binds the host's one copy over it, read-only
    # (binds.template_binds), so N guests share one inode, on disk and in memory
    (tree / BUSYBOX[1:]).touch(mode=0o755)
    for rel in busybox_applets(busybox):
        link = tree / rel
        if rel == "bin/busybox" or os.path.lexists(link):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    if not os.path.lexists(tree / "sbin/init"):
        os.symlink("/bin/busybox", tree / "sbin/init")
    write_etc(tree, etc_files(hostname, addresses))


# -- tarball ---------------------------------------------------------------

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _bad_name(name: str) -> bool:
    return name.startswith("/") or ".." in Path(name).parts


def check_member(member: tarfile.TarInfo, source: str) -> bool:
    """Whether to extract ``member``: VstuiError for an absolute or ``..`` name or a hard
    link leaving the tree (the whole archive is refused); False for a device node."""
    if _bad_name(member.name):
        raise VstuiError(
            f"{source}: member '{member.name}' leaves the guest tree; refusing this archive"
        )
    if member.islnk() and _bad_name(member.linkname):
        raise VstuiError(
            f"{source}: hard link '{member.name}' -> '{member.linkname}' "
            "leaves the guest tree; refusing this archive"
        )
    if member.ischr() or member.isblk():
        log.warning("%s: skipping device node %s (the guest gets its own /dev)", source,
                    member.name)  # fmt: skip
        return False
    return True


def safe_members(archive: tarfile.TarFile, source: str) -> list[tarfile.TarInfo]:
    """Members to extract (check_member's rules, the whole archive first)."""
    return [member for member in archive.getmembers() if check_member(member, source)]


def _open_archive(source: str) -> tarfile.TarFile:
    try:
        with open(source, "rb") as f:
            if f.read(4) == ZSTD_MAGIC:
                raise VstuiError(
                    f"{source}: zstd archives are not supported here; "
                    "unpack with `zstd -d` and use the .tar"
                )
        return tarfile.open(source, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise VstuiError(f"{source}: cannot read the archive: {exc}") from exc


# Members are extracted as they are: the checks above already refused what
# leaves the tree, and extraction runs chrooted into it. Python 3.12 warns, and
# 3.14 filters by default, without an explicit filter; the filter argument
# came in 3.11.4 (PEP 706), and Debian 12's Python is 3.11.2 (TypeError).
AS_IS: dict[str, str] = {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}


def populate_tarball(tree: Path, source: str, hostname: str, addresses: Iterable[object]) -> None:
    """Unpack ``source`` (checked first) and finish /etc, all inside a chroot."""
    source = os.path.abspath(source)
    with _open_archive(source) as archive:
        members = safe_members(archive, source)

        def unpack(root: Path) -> None:
            archive.extractall(root, members, numeric_owner=True, **AS_IS)
            finish_foreign(root, hostname, addresses)

        in_chroot(tree, unpack, f"{source}: unpacking")


def finish_foreign(tree: Path, hostname: str, addresses: Iterable[object]) -> None:
    """After an image or debootstrap: our dirs and names, the image's own users kept.

    Call it with the tree as / (``in_chroot``): foreign trees hold symlinks.
    """
    make_dirs(tree)
    shell = "/bin/bash" if os.path.lexists(tree / "bin/bash") else "/bin/sh"
    files = etc_files(hostname, addresses, shell, os_release=host_os_release(tree))
    keep = (
        "passwd",
        "group",
        "shadow",
        "os-release",
        "nsswitch.conf",
        "profile",
        "shells",
        "fstab",
        "rc.local",
        "resolv.conf",
    )
    write_etc(tree, files, keep=keep)


# -- debootstrap -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateArgs:
    """Options of one build that only some templates read (``vserver NAME build``'s words)."""

    include: tuple[str, ...] = ()  # debootstrap: extra packages
    mirror: str | None = None  # debootstrap: the Debian mirror (else debootstrap's default)
    flush_cache: bool = False  # debootstrap: build the cached tree again
    cache: Path | None = None  # where cached trees live (engine.rootfs.debootstrap.cache_dir)


def populate_debootstrap(
    tree: Path, suite: str | None, hostname: str, addresses: Iterable[object], args: TemplateArgs
) -> None:
    """The cached debootstrap tree (made first when missing), then this guest's own /etc."""
    from engine.rootfs import debootstrap

    req = debootstrap.request(suite, args.include, args.mirror)
    if args.cache is None:
        raise VstuiError("template debootstrap needs a cache directory")
    source = debootstrap.cached_tree(req, args.cache, args.flush_cache)
    debootstrap.copy_tree(source, tree)
    keys = debootstrap.host_keys(tree)

    def finish(root: Path) -> None:
        finish_foreign(root, hostname, addresses)
        debootstrap.write_host_keys(root, keys)

    in_chroot(tree, finish, "debootstrap setup")


def populate(
    template: Template,
    tree: Path,
    hostname: str,
    addresses: Iterable[object],
    args: TemplateArgs | None = None,
) -> None:
    """Fill ``tree`` (an empty, root-owned directory) from ``template``."""
    os.chmod(tree, 0o755)
    if template.kind == "skeleton":
        populate_skeleton(tree, hostname, addresses)
    elif template.kind == "busybox":
        populate_busybox(tree, hostname, addresses)
    elif template.kind == "tarball":
        populate_tarball(tree, template.arg or "", hostname, addresses)
    else:
        populate_debootstrap(tree, template.arg, hostname, addresses, args or TemplateArgs())
