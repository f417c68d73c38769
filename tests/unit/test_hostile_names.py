"""Issue 19: the engine's entry points refuse a bad guest name before anything.

Not only the CLI: every public call that takes a guest name raises
InvalidName first, and nothing under the root (or in the kernel) is touched.
Paths itself refuses to derive a per-guest path from a bad name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import InvalidName
from engine.paths import Paths

BAD = ["../vservers/web", "../x", "..", ".", "x/..", "web/", "/etc", "-x", "a b", "",
       "x\x1b]0;PWNED\x07", "x" * 33, "x\ny", "\u00e9t\u00e9", "x.y"]  # fmt: skip


def _calls() -> dict[str, Callable[[Paths, str], Any]]:
    from engine import audit, config, facade, rootfs, runtime
    from engine.procs import attribution, signals
    from engine.runtime import enter, freezing, state, stopping, supervisor, xid

    def eng(op: str) -> Callable[[Paths, str], Any]:
        return lambda p, n: getattr(facade.Engine(p), op)(n)

    return {
        "runtime.start": runtime.start, "runtime.stop": runtime.stop,
        "runtime.restart": runtime.restart, "runtime.status": runtime.status,
        "runtime.is_running": runtime.is_running, "runtime.init_pid": runtime.init_pid,
        "runtime.exec_in": lambda p, n: runtime.exec_in(p, n, ["true"]),
        "runtime.xid_of": runtime.xid_of, "supervisor.boot": supervisor.boot,
        "stopping.stop": stopping.stop, "stopping.teardown": stopping.teardown,
        "state.read": state.read, "state.lock": state.lock,
        "enter.exec_in": lambda p, n: enter.exec_in(p, n, ["true"]),
        "xid.xid_of": xid.xid_of, "freezing.freeze": freezing.freeze,
        "freezing.thaw": freezing.thaw, "rootfs.build": rootfs.build,
        "rootfs.delete": lambda p, n: rootfs.delete(p, n, force=True),
        "runtime.delete": lambda p, n: runtime.delete(p, n, force=True),
        "rootfs.release": lambda p, n: rootfs.release(SimpleNamespace(name=n), p),
        "config.load_guest": config.load_guest, "config.check_guest": config.check_guest,
        "config.update_config": lambda p, n: config.update_config(p, n, {"S_NICE": "1"}),
        "config.write_new_config": lambda p, n: config.write_new_config(p, n, {}),
        "signals.choose": lambda p, n: signals.choose(p, n, []),
        "attribution.resolve_guest": attribution.resolve_guest,
        "audit.run_audit": lambda p, n: audit.run_audit(p, guest=n),
        "facade.start": eng("start"), "facade.stop": eng("stop"),
        "facade.restart": eng("restart"), "facade.delete": eng("delete"),
        "facade.load_config": eng("load_config"), "facade.log_tail": eng("log_tail"),
        "facade.enter_argv": eng("enter_argv"), "facade.apply_limits": eng("apply_limits"),
        "facade.save_config": lambda p, n: facade.Engine(p).save_config(n, {"S_NICE": "1"}),
        "facade.exec_argv": lambda p, n: facade.Engine(p).exec_argv(n, "true"),
    }  # fmt: skip


def _tree(root: Path) -> set[str]:
    return {os.path.join(top, n) for top, dirs, files in os.walk(root) for n in dirs + files}


@pytest.mark.parametrize("call", sorted(_calls()))
def test_entry_point_refuses_a_bad_name_before_anything(tmp_path: Path, call: str) -> None:
    paths = Paths.from_root(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.config_file("web").write_text("S_HOSTNAME=web\n")
    (tmp_path / "run" / "vservers").mkdir(parents=True)
    before = _tree(tmp_path)
    for name in BAD:
        with pytest.raises(InvalidName, match="is not a valid guest name"):
            _calls()[call](paths, name)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("method", ["config_file", "guest_root", "guest_image", "run_dir",
                                    "run_dir_str", "log_file", "cgroup_name",
                                    "legacy_config_file", "legacy_guest_dir",
                                    "netns_name"])  # fmt: skip
def test_paths_derive_nothing_from_a_bad_name(method: str) -> None:
    for name in BAD:
        with pytest.raises(InvalidName):
            getattr(Paths.from_root("/tmp/r"), method)(name)
        with pytest.raises(InvalidName):
            Paths.from_root("/tmp/r").state_file("du", name)


def test_the_message_shows_control_characters_visibly() -> None:
    with pytest.raises(InvalidName) as caught:
        Paths().run_dir("x\x1b]0;PWNED\x07")
    assert str(caught.value).startswith("'x^[]0;PWNED^G' is not a valid guest name")


# -- every entry point, found by enumeration ----------------------------------------
# A public engine function (or Engine method) that takes Paths and a guest name
# is an entry point: it must refuse a bad name before it uses anything else.
# New ones are found here without anyone listing them; the few whose `name` is
# no guest's are listed with the reason.
NAME_PARAMS = ("name", "guest")
NOT_GUEST_NAMES = {
    "engine.config.load_defaults": "guest only labels messages about defaults.conf",
    "engine.rootfs.binds.check_share_source": "guest only labels the message",
    "engine.rootfs.snapshots.mounted_image": "guest only labels the message; image is a path",
    "engine.facade.Engine.kill": "guest is optional: a pid's owner, checked against the pid",
}


class Poison:
    """Any argument besides the paths and the name: using it before the name
    check fails the test."""

    def __getattr__(self, attr: str) -> Any:
        raise AssertionError(f"used .{attr} before checking the name")

    def _used(self, *args: Any) -> Any:
        raise AssertionError("used an argument before checking the name")

    __iter__ = __len__ = __bool__ = __fspath__ = __int__ = __index__ = __str__ = _used
    __getitem__ = __contains__ = __call__ = __float__ = _used


def _entry_points() -> dict[str, Callable[..., Any]]:
    import importlib
    import inspect
    import pkgutil

    import engine
    from engine import facade

    found: dict[str, Callable[..., Any]] = {}
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        module = importlib.import_module(info.name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or not inspect.isfunction(obj):
                continue
            if obj.__module__ != info.name:
                continue
            params = inspect.signature(obj).parameters
            if "paths" in params and any(p in params for p in NAME_PARAMS):
                found[f"{info.name}.{attr}"] = obj
    for attr, obj in vars(facade.Engine).items():
        params = inspect.signature(obj).parameters if inspect.isfunction(obj) else {}
        if not attr.startswith("_") and any(p in params for p in NAME_PARAMS):
            found[f"engine.facade.Engine.{attr}"] = obj
    return {k: v for k, v in found.items() if k not in NOT_GUEST_NAMES}


def _call(func: Callable[..., Any], paths: Paths, bad: str) -> None:
    import inspect

    from engine import facade

    args: dict[str, Any] = {}
    for pname, param in inspect.signature(func).parameters.items():
        if pname == "self":
            args[pname] = facade.Engine(paths)
        elif pname == "paths":
            args[pname] = paths
        elif pname in NAME_PARAMS:
            args[pname] = bad
        elif param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        elif param.default is inspect.Parameter.empty:
            args[pname] = Poison()
    func(**args)


def test_the_enumeration_finds_the_known_entry_points() -> None:
    found = _entry_points()
    assert len(found) > 80
    for known in ("engine.rootfs.du.cached", "engine.rootfs.du.forget",
                  "engine.config.legacy.import_guest", "engine.runtime.start",
                  "engine.facade.Engine.start"):  # fmt: skip
        assert known in found


@pytest.mark.parametrize("entry", sorted(_entry_points()))
def test_every_entry_point_refuses_a_bad_name_first(tmp_path: Path, entry: str) -> None:
    paths = Paths.from_root(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.config_file("web").write_text("S_HOSTNAME=web\n")
    (tmp_path / "run" / "vservers").mkdir(parents=True)
    before = _tree(tmp_path)
    func = _entry_points()[entry]
    for name in ("../x", "..", "x\ny", "-x", ""):
        with pytest.raises(InvalidName, match="is not a valid guest name"):
            _call(func, paths, name)
    assert _tree(tmp_path) == before
