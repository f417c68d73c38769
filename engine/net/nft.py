"""nftables through the ``nft`` tool, one script per call.

A script of nft commands runs as one netlink transaction: all of it applies
or none does. It runs in a child (``nft -f -``), not through libnftables in
this process: libnftables 1.0.6 waits for its netlink socket with select(),
and glibc's FD_SET aborts the whole process once that socket's descriptor is
1024 or more (FORTIFY_SOURCE: "bit out of range 0 - FD_SETSIZE"). A console
keeping a few thousand /proc files open, or any long-lived caller, would die
mid-start without undoing it; the child starts with descriptors 0-2 only.
A host without the tool gets a NetError naming the package.
"""

from __future__ import annotations

import shutil
import subprocess

from engine.errors import NetError

COMMAND = "nft"


class NftError(NetError):
    """nftables refused a script; ``missing`` when it named something that is not there."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def _tool() -> str:
    path = shutil.which(COMMAND, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise NetError(f"nftables tool {COMMAND} not found; install it "
                       "(apt-get install nftables)")  # fmt: skip
    return path


def run(script: str) -> str:
    """Run nft commands (one transaction); their output, or NftError."""
    try:
        done = subprocess.run([_tool(), "-f", "-"], input=script, capture_output=True,
                              text=True, check=False)  # fmt: skip
    except OSError as exc:
        raise NetError(f"cannot run {COMMAND}: {exc.strerror}") from None
    if done.returncode:
        error = done.stderr or f"{COMMAND} exited with status {done.returncode}"
        first = next((line for line in error.splitlines() if line.startswith("Error")), error)
        missing = "No such file or directory" in error
        raise NftError(f"nftables refused the rules: {first.strip()}", missing)
    return done.stdout


def available() -> bool:
    """Whether the nft tool is there (without it no table can exist)."""
    try:
        _tool()
    except NetError:
        return False
    return True


def delete_table(family: str, name: str) -> bool:
    """Remove a table and everything in it; False when it was not there."""
    if not available():
        return False
    try:
        run(f"delete table {family} {name}")
    except NftError as exc:
        if exc.missing:
            return False
        raise
    return True
