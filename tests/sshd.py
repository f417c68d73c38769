"""A real OpenSSH server on 127.0.0.1 for the many-hosts tests.

Everything is made per test under one private directory: the host key, a
client key, authorized_keys, known_hosts, the ssh client config (used with
``-F``: ssh would otherwise read root's own ~/.ssh/config), hosts.toml
(through XDG_CONFIG_HOME) and a short control directory for the master
sockets. sshd listens only on 127.0.0.1, on a port the kernel picked, runs
in the foreground (``-D``) so its PID is ours, and is killed by that PID,
with every connection process it forked, when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
VENV_BIN = Path(sys.executable).parent


def have_sshd() -> bool:
    return os.access(SSHD, os.X_OK) and shutil.which("ssh") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class TestSshd:
    """sshd on 127.0.0.1:PORT with keys, client config and hosts.toml of its own."""

    __test__ = False  # not a test class for pytest

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vsh-", dir="/tmp"))
        self.control = self.dir / "c"  # short: ControlPath=%C must fit 108 bytes
        self.control.mkdir(mode=0o700)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "ssh_config"
        self.hosts_toml = self.dir / "config" / "vstui" / "hosts.toml"
        self._keys()
        self._write_configs()

    # -- set-up --------------------------------------------------------
    def _keygen(self, path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vstui-test",
                        "-f", str(path)], check=True)  # fmt: skip

    def _keys(self) -> None:
        self._keygen(self.dir / "host_key")
        self._keygen(self.dir / "client_key")
        public = (self.dir / "client_key.pub").read_text()
        self.authorize(public)
        self.trust_host_key()

    def authorize(self, line: str) -> None:
        (self.dir / "authorized_keys").write_text(line)

    def trust_host_key(self) -> None:
        host_pub = (self.dir / "host_key.pub").read_text().split()
        known = f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n"
        (self.dir / "known_hosts").write_text(known)

    def _write_configs(self) -> None:
        d = self.dir
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n"
            f"PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\nLogLevel ERROR\nMaxSessions 200\nMaxStartups 200\n"
            "PrintMotd no\nPrintLastLog no\n"
        )
        self.config.write_text(
            f"Host *\n  User root\n  Port {self.port}\n  IdentityFile {d}/client_key\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n"
            "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n"
        )

    def write_hosts(self, hosts: dict[str, dict[str, object]]) -> None:
        """hosts.toml with one entry per name; ssh and options default to this sshd."""
        lines = []
        for name, entry in hosts.items():
            full = {"ssh": "root@127.0.0.1", "ssh_options": ["-F", str(self.config)],
                    "command": str(VENV_BIN / "vstui"), **entry}  # fmt: skip
            lines.append(f"[hosts.{name}]")
            for key, value in full.items():
                lines.append(f"{key} = {_toml(value)}")
        self.hosts_toml.parent.mkdir(parents=True, exist_ok=True)
        self.hosts_toml.write_text("\n".join(lines) + "\n")

    def env(self) -> dict[str, str]:
        """The environment for tools run against this sshd's hosts."""
        return {**os.environ, "XDG_CONFIG_HOME": str(self.dir / "config"),
                "VSTUI_SSH_DIR": str(self.control)}  # fmt: skip

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-F", str(self.config), "-o", f"ControlPath={self.control}/%C",
                "root@127.0.0.1"]  # fmt: skip

    # -- running -------------------------------------------------------
    def start(self) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        log = open(self.dir / "sshd.log", "ab")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not listen within 10 s")

    def kill(self) -> None:
        """sshd and every connection it serves, by PID (as a crash would)."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def drop(self) -> None:
        """sshd and its connection processes, but not the commands they run: those
        see their connection end (stdin closed), as when the network goes."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() != "sshd":
                        continue
                os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        self.proc.wait()
        self.proc = None

    def exit_masters(self) -> None:
        """Ask every master connection of ours to exit (ssh -O exit)."""
        for sock in self.control.iterdir() if self.control.is_dir() else []:
            subprocess.run(["ssh", "-F", str(self.config), "-o", f"ControlPath={sock}",
                            "-O", "exit", "root@127.0.0.1"], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=15, check=False)  # fmt: skip

    def close(self) -> None:
        self.exit_masters()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
