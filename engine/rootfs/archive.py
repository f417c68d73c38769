"""Guest backups: ``export`` writes one tar.zst stream, ``import_guest`` reads it back.

The stream (format 1) is a POSIX pax tar, compressed by ``zstd``::

    vstui-export.json    {"format": 1, "guest", "created", "backend", "files", "bytes"}
    guest.conf           NAME.conf as it was
    rootfs/...           the tree: numeric owners (no names), modes, times, hard
                         links, symlinks, device nodes; every extended attribute
                         as a SCHILY.xattr.* pax record (GNU tar and bsdtar read
                         them), which carries ACLs (system.posix_acl_*) and file
                         capabilities (security.capability) byte for byte

Both ends take a path, a binary file object or a file descriptor, so that a
caller can pipe the stream elsewhere (``vserver NAME migrate`` over ssh):

    export_guest(paths, name, out, snapshot=None) -> ExportInfo
    import_guest(paths, name, source, overrides=None) -> GuestConfig

A running guest is frozen for a snapshot, exported from the snapshot, and
the snapshot deleted again. Import checks every member with the rules of
the ``tarball:`` template (no absolute or ``..`` names, no hard link leaving
the tree, device nodes skipped) and unpacks inside a chroot of the new tree,
so a symlink in the archive never leads a later member onto the host. An
archive of a newer format is refused before anything is made; a failed
import leaves nothing behind, a failed export to a path leaves no file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from engine import safepath
from engine._record import Record
from engine.errors import VstuiError, require_root
from engine.paths import Paths
from engine.rootfs import staging

FORMAT = 1
HEADER = "vstui-export.json"
CONFIG = "guest.conf"
TREE = "rootfs"
XATTR = "SCHILY.xattr."
ZSTD_LEVEL = "-3"
COPY_CHUNK = 1 << 20

Target = str | os.PathLike[str] | int | IO[bytes]


class ExportInfo(Record):
    """What an export wrote: files and bytes of the tree, and where from."""

    __slots__ = _fields = ("guest", "files", "bytes", "snapshot")
    guest: str
    files: int
    bytes: int
    snapshot: str | None  # the snapshot it was read from (a temporary one for a running guest)


# -- the zstd pipe ---------------------------------------------------------------------


def _zstd(guest: str | None) -> str:
    tool = shutil.which("zstd")
    if tool is None:
        raise VstuiError("export and import need zstd; apt-get install zstd", guest)
    return tool


def _fd_of(obj: Any) -> int | None:
    if isinstance(obj, int):
        return obj
    try:
        return obj.fileno()
    except (AttributeError, io.UnsupportedOperation, OSError):
        return None


class _Pump(threading.Thread):
    """Copies between a pipe and a file object that has no descriptor (BytesIO...)."""

    def __init__(self, read: Any, write: Any, done: Any = None) -> None:
        super().__init__(daemon=True)
        self.read_chunk, self.write_chunk, self.done = read, write, done
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while chunk := self.read_chunk(COPY_CHUNK):
                self.write_chunk(chunk)
        except BaseException as exc:  # reported by the caller after join()
            self.error = exc
        finally:
            if self.done is not None:
                try:
                    self.done()
                except OSError:
                    pass


# -- export ----------------------------------------------------------------------------


def _open_target(out: Target, guest: str) -> tuple[Any, Path | None, Path | None]:
    """(file descriptor or object, temp path, final path) for ``out``."""
    if isinstance(out, str | os.PathLike):
        final = Path(out).absolute()
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise VstuiError(f"cannot write {final}: {exc.strerror}; choose a writable "
                             "path", guest) from None  # fmt: skip
        return fd, tmp, final
    return out, None, None


def export_guest(paths: Paths, name: str, out: Target, snapshot: str | None = None) -> ExportInfo:
    """Write guest ``name`` (NAME.conf and tree) as a tar.zst stream to ``out``.

    ``out``: a path (written to a temporary file, renamed at the end), a
    binary file object or a descriptor (written, not closed). ``snapshot``
    exports that snapshot; else a running guest is frozen for a temporary
    snapshot and a stopped guest is read as it is.
    """
    from engine.config import load_guest, validate_name
    from engine.rootfs import snapshots

    validate_name(name)
    cfg = load_guest(paths, name)
    require_root("exporting a guest", name)
    tool = _zstd(name)
    if snapshot is not None:
        snapshots.get(paths, name, snapshot)  # exists? before anything is written
    sink, tmp, final = _open_target(out, name)
    taken = None
    try:
        if snapshot is None and snapshots._running(paths, name):
            taken = snapshots.create(paths, name, f"export-{snapshots.default_name()}").name
        with snapshots.readable_tree(paths, cfg, snapshot or taken) as tree:
            info = _write(tool, sink, cfg, tree, name)
        if final is not None:
            os.fsync(sink)
            os.rename(tmp, final)
            tmp = None
    finally:
        if final is not None:
            os.close(sink)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if taken is not None:
            snapshots.delete(paths, name, taken)
    return ExportInfo(name, info[0], info[1], snapshot or taken)


def _write(tool: str, sink: Any, cfg: Any, tree: Path, name: str) -> tuple[int, int]:
    fd = _fd_of(sink)
    proc = subprocess.Popen([tool, "-q", ZSTD_LEVEL, "-T0", "-c"], stdin=subprocess.PIPE,
                            stdout=fd if fd is not None else subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    pump = None
    if fd is None:
        pump = _Pump(proc.stdout.read, sink.write)  # type: ignore[union-attr]
        pump.start()
    try:
        counts = _tar(proc.stdin, cfg, tree)  # type: ignore[arg-type]
    except BrokenPipeError:
        counts = (0, 0)
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
    err = proc.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
    proc.wait()
    if pump is not None:
        pump.join()
        if pump.error is not None:
            raise VstuiError(f"export: writing the stream failed: {pump.error}", name)
    if proc.returncode != 0:
        last = err.splitlines()[-1] if err else f"status {proc.returncode}"
        raise VstuiError(f"export: zstd failed: {last} (is the target full?)", name)
    return counts


def _tar(stream: IO[bytes], cfg: Any, tree: Path) -> tuple[int, int]:
    """The archive into ``stream``; (files, bytes) of the tree."""
    from engine.rootfs.storage import backend_of

    conf = cfg.path.read_bytes() if cfg.path else b""
    counts = _count(tree)
    header = {"format": FORMAT, "guest": cfg.name, "created": time.time(),
              "backend": backend_of(cfg), "files": counts[0], "bytes": counts[1]}  # fmt: skip
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, HEADER, json.dumps(header).encode())
        _add_bytes(tar, CONFIG, conf)
        for source, arcname in _walk(tree):
            info = tar.gettarinfo(str(source), arcname)
            if info is None:
                continue  # a socket: it means nothing in a backup
            _owners_and_xattrs(info, source)
            if info.isreg():
                with open(source, "rb", opener=_guest_file) as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return counts


def _guest_file(path: str, flags: int) -> int:
    """A running guest may swap a file for a FIFO after gettarinfo: never wait on it."""
    return safepath.open_regular(path, flags)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _walk(tree: Path) -> Iterator[tuple[Path, str]]:
    """(path, member name) of the tree and everything in it, parents first; the
    walk never follows a symlink (a guest's link to /etc stays a link)."""
    yield tree, TREE
    stack = [(tree, TREE)]
    while stack:
        top, arc = stack.pop()
        with os.scandir(top) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            path, name = Path(entry.path), f"{arc}/{entry.name}"
            yield path, name
            if entry.is_dir(follow_symlinks=False):
                stack.append((path, name))


def _count(tree: Path) -> tuple[int, int]:
    files = size = 0
    for path, _ in _walk(tree):
        st = os.lstat(path)
        files += 1
        size += st.st_size if not os.path.isdir(path) else 0
    return files, size


def _owners_and_xattrs(info: tarfile.TarInfo, source: Path) -> None:
    info.uname = info.gname = ""  # numeric owners only: names mean nothing on another host
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError:
        return
    for key in names:
        try:
            value = os.getxattr(source, key, follow_symlinks=False)
        except OSError:
            continue
        info.pax_headers[XATTR + key] = value.decode("utf-8", "surrogateescape")


# -- import ----------------------------------------------------------------------------


def _open_source(source: Target, guest: str) -> tuple[Any, bool, str]:
    """(descriptor or object, close it, a name for messages)."""
    if isinstance(source, str | os.PathLike):
        try:
            return os.open(source, os.O_RDONLY | os.O_CLOEXEC), True, os.fspath(source)
        except OSError as exc:
            raise VstuiError(f"cannot read {os.fspath(source)}: {exc.strerror}", guest) from None
    return source, False, "the stream"


def import_guest(paths: Paths, name: str, source: Target,
                 overrides: Mapping[str, str | None] | None = None) -> Any:  # fmt: skip
    """Make guest ``name`` from an export stream; returns its GuestConfig.

    ``overrides`` changes NAME.conf keys of the archive (None removes one):
    another hostname, addresses or backend. The new name may differ from the
    exported one. Nothing is left behind when it fails.
    """
    from engine.config import validate_name
    from engine.rootfs.build import ensure_barrier, refuse_existing

    validate_name(name)
    require_root("importing a guest", name)
    refuse_existing(paths, name)
    tool = _zstd(name)
    handle, close, label = _open_source(source, name)
    try:
        with staging.partial(paths, name), _reader(tool, handle, label, name) as (tar, keep_out):
            conf = _read_head(tar, label, name)
            ensure_barrier(paths)
            return _make(paths, name, conf, overrides or {}, tar, label, keep_out)
    finally:
        if close:
            os.close(handle)


@contextmanager
def _reader(tool: str, handle: Any, label: str,
            name: str) -> Iterator[tuple[tarfile.TarFile, list[int]]]:  # fmt: skip
    """The tar stream decompressed by zstd, and the descriptors that the unpacking
    child must close (the pump's end of zstd's input: held open, zstd never ends)."""
    fd = _fd_of(handle)
    proc = subprocess.Popen([tool, "-q", "-d", "-c"], stdin=fd if fd is not None else
                            subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    pump = None
    keep_out: list[int] = []
    if fd is None:
        keep_out.append(proc.stdin.fileno())  # type: ignore[union-attr]
        pump = _Pump(handle.read, proc.stdin.write, proc.stdin.close)  # type: ignore[union-attr]
        pump.start()
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            yield tar, keep_out
    except tarfile.TarError as exc:
        raise VstuiError(f"{label}: not a readable export ({_zstd_error(proc) or exc})",
                         name) from None  # fmt: skip
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
        proc.kill()
        proc.wait()
        if pump is not None:
            pump.join(timeout=1)


def _zstd_error(proc: subprocess.Popen[bytes]) -> str:
    try:
        proc.wait(timeout=1)
        return proc.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
    except subprocess.TimeoutExpired:
        return ""


def _read_head(tar: tarfile.TarFile, label: str, name: str) -> str:
    """The header's format check and NAME.conf's text, before anything is made."""
    first = tar.next()
    if first is None or first.name != HEADER:
        raise VstuiError(f"{label}: not a vstui export (no {HEADER} first)", name)
    try:
        header = json.loads(tar.extractfile(first).read())  # type: ignore[union-attr]
        version = int(header["format"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise VstuiError(f"{label}: its {HEADER} is damaged", name) from None
    if version > FORMAT:
        raise VstuiError(f"{label}: made by a newer vstui (archive format {version}; this one "
                         f"reads up to {FORMAT}); upgrade vstui to import it", name)  # fmt: skip
    conf = tar.next()
    if conf is None or conf.name != CONFIG or not conf.isreg():
        raise VstuiError(f"{label}: not a vstui export (no {CONFIG})", name)
    return tar.extractfile(conf).read().decode()  # type: ignore[union-attr]


def _make(paths: Paths, name: str, conf: str, overrides: Mapping[str, str | None],
          tar: tarfile.TarFile, label: str, keep_out: list[int]) -> Any:  # fmt: skip
    from engine import config
    from engine.rootfs import storage
    from engine.rootfs.build import _remove_all

    cfg = None
    try:
        config.atomic_write(paths.config_file(name), conf, guest=name)
        if overrides:
            config.update_config(paths, name, dict(overrides))
        cfg = config.load_guest(paths, name)
        with storage.full_guard(paths, cfg):
            storage.create(cfg, paths)
            with storage.prepare_root(cfg, paths) as handle:
                _unpack(tar, handle.path, label, name, keep_out)
                if "S_HOSTNAME" in overrides or "IPROOT" in overrides:
                    from engine.rootfs.clone import new_identity

                    new_identity(handle.path, cfg)
    except BaseException:
        _remove_all(paths, name, cfg)
        raise
    return cfg


def _unpack(tar: tarfile.TarFile, tree: Path, label: str, name: str,
            keep_out: list[int]) -> None:  # fmt: skip
    from engine.rootfs.chroot import in_chroot
    from engine.rootfs.templates import AS_IS, check_member

    def work(root: Path) -> None:
        _extract_all(tar, root, label, check_member, AS_IS)

    try:
        in_chroot(tree, work, "import", close_fds=keep_out)
    except VstuiError as exc:
        raise VstuiError(exc.message, name) from None


def _extract_all(tar: tarfile.TarFile, root: Path, label: str,
                 check_member: Callable[[tarfile.TarInfo, str], bool],
                 as_is: Mapping[str, str]) -> None:  # fmt: skip
    """In the chroot: every member checked, then made, xattrs after owner and mode.
    Nothing is imported here: after chroot the engine's files are out of reach."""
    dirs: list[tarfile.TarInfo] = []
    while (member := tar.next()) is not None:  # after the header and NAME.conf, read before
        if not _in_tree(member, label):
            continue
        if not check_member(member, label):
            continue
        if member.name == ".":
            dirs.append(member)
            continue
        tar.extract(member, root, set_attrs=not member.isdir(), numeric_owner=True, **as_is)
        if member.isdir():
            dirs.append(member)
        else:
            _set_xattrs(root / member.name, member)
    for member in sorted(dirs, key=lambda m: m.name, reverse=True):  # children first
        target = root / member.name
        tar.chown(member, str(target), numeric_owner=True)
        tar.chmod(member, str(target))
        tar.utime(member, str(target))
        _set_xattrs(target, member)


def _in_tree(member: tarfile.TarInfo, label: str) -> bool:
    """Strip ``rootfs/`` from the member (and a hard link's target); refuse strays."""
    if member.name != TREE and not member.name.startswith(TREE + "/"):
        raise VstuiError(f"{label}: member '{member.name}' is outside {TREE}/; "
                         "refusing this archive")  # fmt: skip
    member.name = member.name[len(TREE) + 1 :] or "."
    if member.islnk():
        if not member.linkname.startswith(TREE + "/"):
            raise VstuiError(f"{label}: hard link '{member.name}' -> '{member.linkname}' "
                             "leaves the guest tree; refusing this archive")  # fmt: skip
        member.linkname = member.linkname[len(TREE) + 1 :]
    return True


def _set_xattrs(path: Path, member: tarfile.TarInfo) -> None:
    for key, value in member.pax_headers.items():
        if not key.startswith(XATTR):
            continue
        raw = value.encode("utf-8", "surrogateescape")
        try:
            os.setxattr(path, key[len(XATTR) :], raw, follow_symlinks=False)
        except OSError as exc:
            raise VstuiError(f"setting {key[len(XATTR):]} on /{member.name}: "
                             f"{exc.strerror}") from None  # fmt: skip
