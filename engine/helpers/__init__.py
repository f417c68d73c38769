"""The C executors and their sources (engine.runtime.build compiles them).

``vboot`` (a start, start.h with boot.h), ``vexec`` (every exec), ``vinit``
(a guest's small PID 1), ``vsuper`` (a running guest's supervisor) and
``vserver`` (the compiled front end).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # the exec path imports this: no typing, no pathlib (~10 ms)
if TYPE_CHECKING:
    from pathlib import Path

    HELPERS_DIR: Path

_DIR = os.path.dirname(os.path.realpath(__file__))


def __getattr__(name: str) -> object:
    if name == "HELPERS_DIR":  # a Path, built on first use
        from pathlib import Path

        return Path(_DIR)
    raise AttributeError(f"module 'engine.helpers' has no attribute {name!r}")


def helper_path(name: str) -> Path:
    """Path of a built helper binary, e.g. ``vinit``."""
    from pathlib import Path

    return Path(_DIR, name)


def require(*names: str) -> dict[str, str]:
    """The built helpers' paths; VstuiError with the fix when one is missing or stale.

    Stale: older than its source or a header (consts.h is rewritten whenever
    the Python op tables change). Nothing is compiled here: ``./setup.sh
    install`` (python -m engine.runtime.build) does that.
    """
    headers = [e.path for e in os.scandir(_DIR) if e.name.endswith(".h")]
    found = {}
    for name in names:
        binary = os.path.join(_DIR, name)
        try:
            built = os.stat(binary).st_mtime
            fresh = all(os.stat(s).st_mtime <= built for s in [f"{binary}.c", *headers])
        except FileNotFoundError:
            fresh = False
        if not fresh:
            from engine.errors import VstuiError

            raise VstuiError(f"helper {binary} is missing or older than its sources; build it: "
                             "./setup.sh install (python -m engine.runtime.build)")  # fmt: skip
        found[name] = binary
    return found
