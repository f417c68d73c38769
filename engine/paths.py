"""Every host path and kernel-global name, derived from one root prefix.

The root prefix comes from ``--root DIR`` or ``VSTUI_ROOT`` and defaults to
``/``. Tests build whole hosts under a temporary root, several side by side,
so names that are global in the kernel (cgroup directories, link names) are
derived from the root too: two roots never collide.

pathlib is imported on first use, not here: every tool imports this module
first, and ``import pathlib`` costs ~10 ms (fnmatch, re, urllib.parse) of the
~25 ms that ``vserver NAME exec`` may take. Every method still returns
``pathlib.Path``; the ``*_str`` variants serve that fast path.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

ROOT_ENV = "VSTUI_ROOT"
IFNAMSIZ = 15  # usable bytes of a Linux interface name (include/uapi/linux/if.h)
NAME_MAX = 32
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
RESERVED = frozenset({"defaults"})  # /etc/vserver/defaults.conf: keys for new guests


def is_name(name: object) -> bool:
    """A guest name is a hostname label: letters, digits, dash, 1..32, no dash first."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= NAME_MAX
        and name[0] != "-"
        and _NAME_CHARS.issuperset(name)
    )


def check_name(name: str, guest_word: str = "guest") -> str:
    """``name`` if it is a guest name, else InvalidName.

    Every per-guest path and kernel name below goes through it, so no engine
    call can be steered outside its directories (``../vservers/web`` once
    stopped the real guest web, ``../x`` made ``run/x/lock``).
    """
    if is_name(name):
        if guest_word == "guest" and name in RESERVED:
            from engine.errors import InvalidName

            raise InvalidName(f"'{name}' is reserved (/etc/vserver/{name}.conf holds the "
                              "defaults for new guests); choose another name")  # fmt: skip
        return name
    from engine.errors import InvalidName
    from engine.text import excerpt

    shown = excerpt(name, 40) if isinstance(name, str) else repr(name)
    raise InvalidName(
        f"'{shown}' is not a valid {guest_word} name; use 1..{NAME_MAX} letters, digits "
        "and dashes, not starting with a dash (a hostname label)"
    )


def default_root() -> Path:
    """The root prefix from VSTUI_ROOT, else ``/``."""
    from pathlib import Path

    return Path(_default_root_str())


def _default_root_str() -> str:
    return os.environ.get(ROOT_ENV) or "/"


def _sha1_hex(data: bytes) -> str:
    import hashlib  # ~3 ms; only roots other than / need it

    return hashlib.sha1(data).hexdigest()


def _normal(path: str) -> str:
    """What str(Path(path)) would be: no trailing or doubled slash, no '.'."""
    if not path:
        return "."
    head = "//" if path.startswith("//") and not path.startswith("///") else ""
    parts = [p for p in path.split("/") if p and p != "."]
    if path.startswith("/"):
        return (head or "/") + "/".join(parts)
    return "/".join(parts) or "."


class FrozenPathsError(AttributeError):
    """Paths is immutable (as a frozen dataclass would be)."""


class Paths:
    """Host paths for one root prefix.

    Immutable, compared and hashed by ``root``. A plain class rather than a
    frozen dataclass: every tool imports this module first, and importing
    dataclasses costs ~9 ms of a tool's start.
    """

    __match_args__ = ("root",)
    root: Path

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        # the root as a normalised string; ``root`` builds its Path on first use
        object.__setattr__(self, "_root", _normal(os.fspath(root)))

    def __getattr__(self, name: str) -> object:
        # only reached for the lazily built attributes
        if name == "root":
            from pathlib import Path

            value: object = Path(self._root)
        elif name == "root_id":
            value = "" if self._root == "/" else _sha1_hex(os.fsencode(self._root))[:6]
        else:
            raise AttributeError(f"'Paths' object has no attribute '{name}'")
        object.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenPathsError(f"cannot assign to field '{name}'")

    def __delattr__(self, name: str) -> None:
        raise FrozenPathsError(f"cannot delete field '{name}'")

    def __repr__(self) -> str:
        return f"Paths(root={self.root!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._root == other._root  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self._root,))

    def __reduce__(self) -> tuple[type[Paths], tuple[str]]:
        return (self.__class__, (self._root,))

    @classmethod
    def from_root(cls, root: str | os.PathLike[str] | None = None) -> Paths:
        """Paths for ``root``, or for VSTUI_ROOT / ``/`` when None."""
        chosen = os.fspath(root) if root else _default_root_str()
        return cls(os.path.abspath(chosen))

    def _under_str(self, path: str) -> str:
        return os.path.join(self._root, path.lstrip("/"))

    def _under(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    # -- configuration -------------------------------------------------
    @property
    def config_dir(self) -> Path:
        """Directory of NAME.conf files (``/etc/vserver``)."""
        return self._under("/etc/vserver")

    def config_file(self, name: str) -> Path:
        return self.config_dir / f"{check_name(name)}.conf"

    @property
    def legacy_config_dir(self) -> Path:
        """util-vserver's directory (``/etc/vservers``), read for import."""
        return self._under("/etc/vservers")

    def legacy_config_file(self, name: str) -> Path:
        return self.legacy_config_dir / f"{check_name(name)}.conf"

    def legacy_guest_dir(self, name: str) -> Path:
        return self.legacy_config_dir / check_name(name)

    # -- guest trees ---------------------------------------------------
    @property
    def vservers_dir(self) -> Path:
        """Parent of all guest trees: mode 000, the barrier."""
        return self._under("/vservers")

    def guest_root(self, name: str) -> Path:
        return self.vservers_dir / check_name(name)

    @property
    def images_dir(self) -> Path:
        """Loop images of image-backed guests (outside the barrier's guests)."""
        return self._under("/var/lib/vservers/images")

    def guest_image(self, name: str) -> Path:
        return self.images_dir / f"{check_name(name)}.img"

    @property
    def pool_image(self) -> Path:
        """The btrfs pool's sparse file (``vserver --pool create``)."""
        return self._under("/var/lib/vservers/pool.img")

    @property
    def pool_dir(self) -> Path:
        """Where the pool is mounted: ``guests/NAME`` subvolumes, ``snapshots/NAME/SNAP``."""
        return self._under("/var/lib/vservers/pool")

    @property
    def snapshots_dir(self) -> Path:
        """Snapshots of image and plain-directory guests (``NAME/SNAP...``)."""
        return self._under("/var/lib/vservers/snapshots")

    @property
    def defaults_file(self) -> Path:
        """Default keys for new guests (util-vserver's .defaults habit)."""
        return self.config_dir / "defaults.conf"

    # -- run state and logs --------------------------------------------
    @property
    def run_base(self) -> Path:
        return self._under("/run/vservers")

    def run_dir(self, name: str) -> Path:
        """Supervisor pid, init pid, state and lock of one guest."""
        return self.run_base / check_name(name)

    def run_dir_str(self, name: str) -> str:
        """``run_dir`` as a string, without importing pathlib (the exec path)."""
        return os.path.join(self._under_str("/run/vservers"), check_name(name))

    @property
    def log_dir(self) -> Path:
        return self._under("/var/log/vservers")

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{check_name(name)}.log"

    @property
    def state_dir(self) -> Path:
        """Persistent engine state (context id allocation)."""
        return self._under("/var/lib/vservers")

    def state_file(self, kind: str, name: str) -> str:
        """The guest's file in the state directory ``kind`` (du, boot cache)."""
        return os.path.join(self._under_str("/var/lib/vservers"), kind, check_name(name))

    @property
    def cache_dir(self) -> Path:
        """Downloaded template trees (debootstrap), kept between builds."""
        return self._under("/var/cache/vservers")

    # -- kernel-global names -------------------------------------------
    # root_id: short stable id of this root, empty for ``/`` (see __getattr__)
    root_id: str

    @property
    def cgroup_base(self) -> str:
        """Relative cgroup directory holding this root's guests."""
        return "vstui" if not self.root_id else f"vstui-{self.root_id}"

    def cgroup_name(self, name: str) -> str:
        """Relative cgroup path of one guest, the same under every controller."""
        return f"{self.cgroup_base}/{check_name(name)}"

    def link_name(self, name: str, kind: str = "vs") -> str:
        """Host-side link name for a guest, at most IFNAMSIZ bytes.

        ``vs-NAME`` for the default root; ``vXXXX-NAME`` under another root
        (XXXX from the root id). Long names are cut and given a hash tail so
        two guests never share a link name.
        """
        prefix = f"{kind}-" if not self.root_id else f"{kind[0]}{self.root_id[:4]}-"
        full = prefix + name
        if len(full) <= IFNAMSIZ:
            return full
        tail = _sha1_hex(f"{self._root}\0{name}".encode())[:4]
        return (prefix + name)[: IFNAMSIZ - 5] + "-" + tail

    def nft_table(self, name: str) -> str:
        """nftables table of a guest's filtering (``vstui-web``, ``vstui-ROOTID-web``)."""
        return f"{self.cgroup_base}-{name}"

    def netns_name(self, name: str) -> str:
        """Name of the guest's network namespace as shown by ``ip netns``."""
        check_name(name)
        return f"vs-{name}" if not self.root_id else f"vs{self.root_id}-{name}"
