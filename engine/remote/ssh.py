"""OpenSSH as the transport: command lines, the control directory, ssh's errors.

One TCP connection per host: every ssh we start for a host shares one
master (``ControlMaster=auto``, ``ControlPersist``), whose socket lives in a
short private directory as ``%C`` (a hash): a socket path over 108 bytes
fails with a misleading "authentication failed". The user's own
``ssh_options`` come first and so win (ssh keeps the first value of an
option); ``~/.ssh/config`` still applies to everything we do not set.

ssh's stderr always goes to a file, never a pipe: a master that goes to
the background keeps the stderr it was given, and whoever reads a pipe
would wait until it exits (OpenSSH bz#1988).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from engine.errors import HostError
from engine.remote.hosts import Host
from engine.text import visible

CONTROL_ENV = "VSTUI_SSH_DIR"
PERSIST = 60  # seconds a master outlives its last session
SUN_PATH = 108  # bytes of sockaddr_un.sun_path on Linux, with the NUL
SSH_TEMP = 17  # random characters ssh appends while it creates the socket
# lines of ssh's output that explain a failure best, most telling first
TELLING = (
    "has changed and you have requested strict checking",
    "Host key verification failed",
    "No ED25519 host key is known", "No RSA host key is known", "No ECDSA host key is known",
    "Permission denied", "Too many authentication failures", "Connection refused",
    "Could not resolve hostname", "No route to host", "Connection timed out",
    "Network is unreachable", "Connection closed", "Connection reset",
    "Broken pipe", "command not found", "not found", "No such file",
)  # fmt: skip


def control_dir() -> str:
    """A private directory for master sockets (made 0700; refused if not ours)."""
    path = os.environ.get(CONTROL_ENV)
    if not path:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        path = os.path.join(runtime, "vstui-ssh") if runtime else f"/tmp/vstui-ssh-{os.getuid()}"
    if len(os.fsencode(path)) + 1 + 40 + 1 + SSH_TEMP >= SUN_PATH:
        raise HostError(f"ssh control directory {path} is too long for a socket path; "
                        f"set {CONTROL_ENV} to a short directory")  # fmt: skip
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise HostError(f"cannot make the ssh control directory {path}: {exc.strerror}") from exc
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise HostError(f"ssh control directory {path} is not a private directory of yours "
                        f"(mode 0700); remove it or set {CONTROL_ENV}")  # fmt: skip
    return path


def base_argv(host: Host, *, tty: bool = False, persist: bool = True) -> list[str]:
    """``ssh`` with the host's options and our multiplexing, up to the destination.

    ``persist=False`` (a console's long session): when this ssh is the
    master it serves the session itself instead of forking a background
    master, one process per host instead of two, gone with the console.
    """
    assert host.ssh is not None
    ours = [
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
        "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
        "-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir()}/%C",
        "-o", f"ControlPersist={PERSIST if persist else 'no'}",
    ]  # fmt: skip
    return ["ssh", *host.ssh_options, *ours, "-t" if tty else "-T", "--", host.ssh]


def command_argv(host: Host, remote: str, *, tty: bool = False, persist: bool = True) -> list[str]:
    """The local command that runs the shell line ``remote`` on ``host``."""
    return [*base_argv(host, tty=tty, persist=persist), remote]


def agent_argv(host: Host, persist: bool = True) -> list[str]:
    """The command that starts the host's agent: ssh, or the local one directly."""
    if host.local:
        argv = [sys.executable, "-m", "vstui.app.main", "--root", host.root, "agent"]
        return [*argv, "--read-only"] if host.read_only else argv
    return command_argv(host, host.agent_command(), persist=persist)


def exit_master(host: Host) -> None:
    """Close the host's master connection now (``ssh -O exit``), if there is one."""
    if host.local:
        return
    argv = base_argv(host)
    argv[-2:-2] = ["-O", "exit"]
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=15, check=False)  # fmt: skip


def explain(text: str) -> str:
    """ssh's own words for a failure, as one line (its banners dropped)."""
    lines = [visible(x.strip()) for x in text.splitlines()]
    lines = [x for x in lines if x and not x.startswith("@") and not x.startswith("Warning:")]
    for phrase in TELLING:
        found = [x for x in lines if phrase in x]
        if found:
            first = found[0]
            if "has changed" in first or "host key is known" in first:
                return f"{first.rstrip('.')}: Host key verification failed"
            return first
    return lines[-1] if lines else ""


def is_mux_race(text: str) -> bool:
    """A master that was just going away: the command is worth one more try."""
    return any(s in text for s in ("mux_client_hello_exchange", "Control socket connect",
                                   "master is dead", "mux_client_request_session"))  # fmt: skip
