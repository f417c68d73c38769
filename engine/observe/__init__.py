"""Snapshots for the console: guests + their stats + their processes.

    from engine.observe import Observer, snapshot
    obs = Observer(paths)          # keep it: CPU% and net rates need two samples
    snap = obs.snapshot()          # engine.datamodel.Snapshot
    snap = snapshot(paths)         # one-shot (CPU% 0.0)

The data types live in the leaf ``engine.datamodel`` (shared with
engine.procs and engine.net, which never import this package);
``Observer``/``snapshot`` are loaded on first use.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs vps ~5 ms
if TYPE_CHECKING:
    from engine.observe.snapshot import Observer, snapshot

__all__ = ["Observer", "snapshot"]


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module 'engine.observe' has no attribute {name!r}")
    module = importlib.import_module("engine.observe.snapshot")
    # importing the submodule bound the name "snapshot" to the module here;
    # rebind it to the function (the module is callable too, see snapshot.py)
    globals()["Observer"] = module.Observer
    globals()["snapshot"] = module.snapshot
    return globals()[name]
