"""Build the static helpers next to their sources: ``python -m engine.helpers.build``."""

from __future__ import annotations

import shutil
import subprocess
import sys

from engine.helpers import HELPERS_DIR


def build(force: bool = False) -> list[str]:
    """Compile every helper whose binary is missing or older than its source."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("helpers: no C compiler; install gcc (apt-get install gcc libc6-dev)")
    built = []
    for source in sorted(HELPERS_DIR.glob("*.c")):
        binary = source.with_suffix("")
        if not force and binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
            continue
        cmd = [cc, "-O2", "-static", "-s", "-Wall", "-o", str(binary), str(source)]
        subprocess.run(cmd, check=True)
        built.append(binary.name)
    return built


if __name__ == "__main__":
    names = build(force="--force" in sys.argv)
    if names:
        print("helpers: built " + " ".join(names), file=sys.stderr)
