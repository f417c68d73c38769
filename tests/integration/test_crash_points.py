"""QA round of #19: build, clone, import and delete SIGKILLed half-way leave
the old state or nothing that is listed or starts, and the next run (or
`delete --force`) removes the leftovers (engine.rootfs.staging)."""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from engine import config, runtime
from engine.errors import VstuiError
from engine.paths import Paths
from engine.rootfs import snapshots, staging, templates

# the modules (engine.rootfs exports functions of the same names)
building = importlib.import_module("engine.rootfs.build")
cloning = importlib.import_module("engine.rootfs.clone")

pytestmark = pytest.mark.root


def _killed_in(target: Any, attr: str, work: Callable[[], object]) -> None:
    """Run ``work`` in a child that SIGKILLs itself when it reaches target.attr."""
    pid = os.fork()
    if pid == 0:  # the child: nothing of it may return into pytest
        try:
            setattr(target, attr, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
            work()
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _hidden(paths: Paths, name: str) -> None:
    assert name not in config.list_guests(paths)
    with pytest.raises(VstuiError, match="incomplete.*delete --force"):
        runtime.start(paths, name)


def _gone(paths: Paths, name: str) -> None:
    assert not os.path.lexists(paths.guest_root(name))
    assert not os.path.lexists(paths.config_file(name))
    assert not os.path.lexists(staging.mark(paths, name))


def test_a_killed_clone_is_hidden_and_cleaned_by_the_next_clone(vroot: Paths) -> None:
    building.build(vroot, "src")
    _killed_in(cloning, "new_identity", lambda: cloning.clone(vroot, "src", "dst"))
    assert (vroot.guest_root("dst") / "etc").is_dir()  # the copy was made, then the kill
    _hidden(vroot, "dst")
    cloning.clone(vroot, "src", "dst")  # the leftovers go first
    assert config.list_guests(vroot) == ["dst", "src"]
    runtime.delete(vroot, "dst")
    runtime.delete(vroot, "src")
    _gone(vroot, "dst")


def test_a_killed_build_is_hidden_and_cleaned_by_delete_force(vroot: Paths) -> None:
    _killed_in(templates, "populate", lambda: building.build(vroot, "web"))
    _hidden(vroot, "web")
    runtime.delete(vroot, "web", force=True)
    _gone(vroot, "web")
    building.build(vroot, "web")
    runtime.delete(vroot, "web")


def test_a_killed_delete_is_hidden_and_finished_by_the_next(vroot: Paths) -> None:
    building.build(vroot, "web")
    _killed_in(snapshots, "remove_all", lambda: runtime.delete(vroot, "web"))
    _hidden(vroot, "web")
    runtime.delete(vroot, "web", force=True)
    _gone(vroot, "web")


def test_an_operation_in_progress_is_refused_not_cleaned(vroot: Paths) -> None:
    with staging.partial(vroot, "web"):
        with pytest.raises(VstuiError, match="being built"):
            building.build(vroot, "web")
        assert staging.state(vroot, "web") == "busy"
    assert staging.state(vroot, "web") is None


def test_a_restart_whose_caller_is_killed_after_the_stop_still_starts(vroot: Paths) -> None:
    """`restart` killed between its stop and its start left the guest stopped."""
    from engine.runtime import state, stopping
    from tests.integration.storage_helpers import ok, vserver

    ok(vserver(vroot, "web", "build", "-m", "busybox"))
    ok(vserver(vroot, "web", "start"))
    first = state.read(vroot, "web").init_pid
    try:
        caller = os.fork()
        if caller == 0:  # the child: the caller, killed as soon as the stop is done
            try:
                real_stop = stopping.stop

                def stop_then_kill_caller(*args: Any, **kwargs: Any) -> Any:
                    result = real_stop(*args, **kwargs)
                    os.kill(caller_pid, signal.SIGKILL)
                    return result

                caller_pid = os.getpid()
                stopping.stop = stop_then_kill_caller
                runtime.restart(vroot, "web")
            finally:
                os._exit(3)
        _, status = os.waitpid(caller, 0)
        assert os.WIFSIGNALED(status)
        assert _wait_for(lambda: state.read(vroot, "web").init_pid not in (None, first))
    finally:
        runtime.stop(vroot, "web")


def _wait_for(check: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll for the restart's own child (not ours to wait for) to finish its start."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()
