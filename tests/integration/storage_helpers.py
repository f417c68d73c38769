"""What the storage tests share: the CLI, a pool per root, addresses per root."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from engine.config import list_guests
from engine.paths import Paths

REPO = Path(__file__).resolve().parents[2]


def vserver(paths: Paths, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rc={result.returncode} {result.stderr}{result.stdout}"
    return result.stdout


def refused(result: subprocess.CompletedProcess, name: str, *needles: str) -> str:
    """A one-line error ``vserver: NAME: ...`` holding every needle; returns it."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"vserver: {name}: " if name else "vserver: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def address(paths: Paths, host: int) -> str:
    """An address of 198.19.0.0/16 (benchmarking range) derived from the root: test
    roots side by side never route the same one."""
    return f"198.19.{int(paths.root_id[:2], 16)}.{host}/32"


@contextlib.contextmanager
def pool(paths: Paths, size: str = "256M") -> Iterator[Paths]:
    """A pool of this root for the test; its guests and the pool go afterwards."""
    ok(vserver(paths, "--pool", "create", size))
    try:
        yield paths
    finally:
        for name in list_guests(paths):
            vserver(paths, name, "stop")
            vserver(paths, name, "delete", "--force")
        vserver(paths, "--pool", "remove")


def tree(paths: Paths, name: str) -> Path:
    """Where a stopped guest's files can be read (pool subvolume, or /vservers/NAME)."""
    pooled = paths.pool_dir / "guests" / name
    return pooled if pooled.exists() else paths.guest_root(name)
