"""Build the static helpers next to their sources: ``python -m engine.helpers.build``.

Each ``*.c`` is one program; ``*.h`` files are code shared between them, so
a newer header rebuilds every program. Two paths are compiled in, as C
string macros: ``VSTUI_PYTHON`` (this interpreter, which the ``vserver``
front end falls back to) and ``VSTUI_HELPERS`` (this directory, where it
finds ``vexec`` and ``vinit``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from engine.helpers import HELPERS_DIR


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build(force: bool = False) -> list[str]:
    """Compile every helper whose binary is missing or older than its sources."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("helpers: no C compiler; install gcc (apt-get install gcc libc6-dev)")
    headers = [h.stat().st_mtime for h in HELPERS_DIR.glob("*.h")]
    defines = [f"-DVSTUI_PYTHON={_c_string(sys.executable)}",
               f"-DVSTUI_HELPERS={_c_string(str(HELPERS_DIR))}"]  # fmt: skip
    built = []
    for source in sorted(HELPERS_DIR.glob("*.c")):
        binary = source.with_suffix("")
        newest = max([source.stat().st_mtime, *headers])
        if not force and binary.exists() and binary.stat().st_mtime >= newest:
            continue
        # a fresh file renamed over the old one: a helper running (or being
        # copied by another build) at that moment keeps the complete old one
        tmp = binary.with_name(f".{binary.name}.{os.getpid()}")
        cmd = [cc, "-O2", "-static", "-s", "-Wall", *defines, "-o", str(tmp), str(source)]
        try:
            subprocess.run(cmd, check=True)
            os.replace(tmp, binary)
        finally:
            tmp.unlink(missing_ok=True)
        built.append(binary.name)
    return built


if __name__ == "__main__":
    names = build(force="--force" in sys.argv)
    if names:
        print("helpers: built " + " ".join(names), file=sys.stderr)
