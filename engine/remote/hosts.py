"""Named hosts: ``$XDG_CONFIG_HOME/vstui/hosts.toml`` (default ~/.config).

One table per host::

    [hosts.web1]
    ssh = "root@web1.example.org"     # the destination given to ssh
    ssh_options = ["-p", "2222"]      # extra ssh arguments (optional)
    root = "/"                        # the remote root prefix (default /)
    command = "vstui"                 # the remote vstui (default vstui)
    read_only = false                 # refuse every change (default false)

A name that is not in the file is used as an ssh destination as it is
(``user@host`` or an alias of ~/.ssh/config); ``local`` (unless the file
defines it) is this machine without SSH. A bad file is one line naming the
file, the host and the key.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import HostError, VstuiError

LOCAL = "local"
KEYS = {"ssh": str, "ssh_options": list, "root": str, "command": str, "read_only": bool}
# what may stand as an ssh destination: [user@]host, no options, no spaces
DESTINATION = re.compile(r"^(?!-)(?:[A-Za-z0-9._+-]+@)?[A-Za-z0-9._:\[\]-]+$")


@dataclass(frozen=True, slots=True)
class Host:
    """Where a host's engine is and how to reach it."""

    name: str
    ssh: str | None  # None: this machine, no SSH
    ssh_options: tuple[str, ...] = ()
    root: str = "/"
    command: str = "vstui"
    read_only: bool = False
    source: str = ""  # the hosts.toml that named it, "" for a bare destination

    @property
    def local(self) -> bool:
        return self.ssh is None

    def agent_command(self) -> str:
        """The remote shell line that starts the agent (ssh passes one string)."""
        words = [self.command, "agent", "--root", shlex.quote(self.root)]
        if self.read_only:
            words.append("--read-only")
        return " ".join(words)

    def vserver_command(self, *args: str) -> str:
        """The remote shell line for ``vserver --root ROOT ARGS`` beside the remote vstui."""
        words = shlex.split(self.command)
        for i in range(len(words) - 1, -1, -1):
            if words[i].endswith("vstui"):
                words[i] = words[i][: -len("vstui")] + "vserver"
                break
        else:
            words.append("vserver")
        rest = ["--root", self.root, *args]
        return " ".join([*map(shlex.quote, words), *map(shlex.quote, rest)])

    def describe(self) -> str:
        """How the host is reached, for messages: 'ssh root@h -p 2222'."""
        if self.local:
            return f"this machine, root {self.root}"
        return " ".join(["ssh", *self.ssh_options, self.ssh or ""])


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "vstui" / "hosts.toml"


def load(path: Path | None = None) -> dict[str, Host]:
    """Every host of ``hosts.toml`` by name ({} when the file does not exist)."""
    from engine.config.files import read_toml

    path = path or config_file()
    try:
        data = read_toml(path)
    except VstuiError as exc:
        raise HostError(exc.message) from None  # names the file and the fix
    if data is None:
        return {}
    table = data.get("hosts", {})
    extra = sorted(set(data) - {"hosts"})
    if extra or not isinstance(table, dict):
        what = f"unknown table '{extra[0]}'" if extra else "'hosts' must be a table"
        raise HostError(f"{path}: {what}; hosts are [hosts.NAME] tables")
    return {name: _entry(path, name, value) for name, value in table.items()}


def _entry(path: Path, name: str, value: Any) -> Host:
    where = f"{path}: [hosts.{name}]"
    if not isinstance(value, dict):
        raise HostError(f'{where}: must be a table with at least ssh = "user@host"')
    for key, item in value.items():
        kind = KEYS.get(key)
        if kind is None:
            raise HostError(f"{where}: unknown key '{key}'; known: {', '.join(KEYS)}")
        if not isinstance(item, kind):
            raise HostError(f"{where}: {key} must be a {kind.__name__}")
    options = value.get("ssh_options", [])
    if not all(isinstance(o, str) for o in options):
        raise HostError(f"{where}: ssh_options must be a list of strings")
    if "ssh" not in value:
        raise HostError(f'{where}: ssh is missing, e.g. ssh = "root@{name}"')
    root = value.get("root", "/")
    if not root.startswith("/"):
        raise HostError(f"{where}: root must be an absolute path, not '{root}'")
    command = value.get("command", "vstui").strip()
    if not command:
        raise HostError(f"{where}: command is empty; leave it out for 'vstui'")
    return Host(name, _destination(where, value["ssh"]), tuple(options), root, command,
                value.get("read_only", False), str(path))  # fmt: skip


def _destination(where: str, text: str) -> str:
    if not DESTINATION.match(text):
        raise HostError(f"{where}: ssh = '{text}' is not an ssh destination ([user@]host)")
    return text


def resolve(name: str, hosts: dict[str, Host] | None = None) -> Host:
    """The host called ``name``: an entry, ``local``, or a bare ssh destination."""
    hosts = load() if hosts is None else hosts
    if name in hosts:
        return hosts[name]
    if name == LOCAL:
        return Host(LOCAL, None, root=os.environ.get("VSTUI_ROOT") or "/")
    if not DESTINATION.match(name):
        raise HostError(f"unknown host: not in {config_file()} and not an ssh destination "
                        "([user@]host)", name)  # fmt: skip
    return Host(name, name)


def resolve_all(names: list[str]) -> list[Host]:
    """Hosts for every ``--host`` word, in order, each once."""
    hosts = load()
    seen: dict[str, Host] = {}
    for name in names:
        seen.setdefault(name, resolve(name, hosts))
    return list(seen.values())
