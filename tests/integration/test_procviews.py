"""A guest's own /proc views, its console without the supervisor, the boot deadline.

/proc/meminfo shows the guest's memory limit and use, /proc/uptime counts
from the guest's start (time namespace), V_PROC_HIDE / V_PROC_SHOW change
the masks; the console log keeps working after the supervisor is killed;
a boot that overruns its deadline is undone completely.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from engine.paths import Paths
from engine.runtime import state
from tests.integration.test_runtime import Guest, ok, vserver

pytestmark = [pytest.mark.root, pytest.mark.slow]

TICKER = "/bin/sh -c 'cat /proc/uptime; n=0; while :; do n=$((n+1)); echo tick$n; sleep 0.2; done'"


def meminfo(g: Guest) -> dict[str, int]:
    out = ok(g.sh("cat /proc/meminfo"))
    return {line.split(":")[0]: int(line.split()[1]) for line in out.splitlines() if "kB" in line}


def wait_for(check, timeout: float = 10.0, step: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_meminfo_shows_the_limit_and_follows_use(vroot: Paths) -> None:
    with Guest(vroot, {"V_MEMORY": "256M"}) as g:
        before = meminfo(g)
        assert before["MemTotal"] == 262144
        assert 0 < before["MemFree"] <= before["MemAvailable"] <= 262144

        # 100 MiB held inside by a background process: the view follows within ~1 s
        def dropped() -> bool:
            return meminfo(g)["MemFree"] < before["MemFree"] - 50 * 1024

        g.sh("nohup python3 -c 'import time; b = b\"x\" * (100 << 20); time.sleep(6)' "
             ">/dev/null 2>&1 &")  # fmt: skip
        assert wait_for(dropped, timeout=5.0, step=0.3)
        # the view is read-only for the guest's root
        res = g.sh("echo x > /proc/meminfo")
        assert res.returncode != 0


def test_meminfo_every_line_is_the_guests(vroot: Paths) -> None:
    """Buffers, Cached, Shmem... came from the host (free showed buff/cache at three times
    "used"); now each is the guest's own, and page cache counts as available."""
    with Guest(vroot, {"V_MEMORY": "256M"}) as g:
        shm = "head -c 40000000 /dev/zero > /dev/shm/held"
        ok(g.sh(f"{shm}; head -c 30000000 /dev/zero > /root/cached; cat /root/cached >/dev/null"))

        def settled() -> dict[str, int] | None:
            info = meminfo(g)
            return info if info["Shmem"] >= 39000 else None

        info = wait_for(settled, timeout=5.0, step=0.3)
        assert info, meminfo(g)
        total, used = info["MemTotal"], info["MemTotal"] - info["MemFree"]
        assert total == 262144 and info["Buffers"] == 0
        assert 39000 <= info["Shmem"] <= info["Cached"] <= used
        assert info["MemAvailable"] > info["MemFree"]  # the file's page cache can be reclaimed
        for key, value in info.items():  # nothing of the host's size shows through
            if key not in ("VmallocTotal", "CommitLimit"):
                assert value <= total, (key, value)
        free = ok(g.sh("free -k | grep Mem:")).split()
        assert int(free[1]) == total and int(free[5]) <= used  # buff/cache within use


def test_meminfo_follows_a_live_limit_change(vroot: Paths) -> None:
    from engine.facade import Engine

    with Guest(vroot, {"V_MEMORY": "256M"}) as g:
        assert meminfo(g)["MemTotal"] == 262144
        Engine(vroot).save_config(g.name, {"V_MEMORY": "128M"})
        assert wait_for(lambda: meminfo(g)["MemTotal"] == 131072, timeout=5.0, step=0.3)


def test_meminfo_without_limit_shows_the_hosts_memory_and_the_guests_use(vroot: Paths) -> None:
    with Guest(vroot) as g:
        with open("/proc/meminfo") as f:
            host = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if "kB" in ln}
        info = meminfo(g)
        assert info["MemTotal"] == host["MemTotal"]
        assert info["Cached"] < host["Cached"] and info["Buffers"] == 0
        assert (vroot.run_dir(g.name) / "meminfo").exists()


def test_uptime_counts_from_the_guest_start(vroot: Paths) -> None:
    with open("/proc/uptime") as f:
        host_up = float(f.read().split()[0])
    with Guest(vroot, {"V_INIT": TICKER}) as g:
        log = vroot.log_file(g.name)
        text = wait_for(lambda: "tick1" in log.read_text() and log.read_text(), 10.0)
        assert text, "the guest's init printed nothing"
        lines = [ln for ln in text.splitlines() if not ln.startswith("---")]
        guest_up = float(lines[0].split()[0])
        assert 0 <= guest_up < 5.0
        if host_up > 60:
            assert host_up - guest_up > 50


def test_proc_hide_and_show(vroot: Paths) -> None:
    values = {"V_PROC_HIDE": "/proc/cpuinfo /proc/sys/kernel", "V_PROC_SHOW": "/proc/interrupts"}
    with Guest(vroot, values) as g:
        assert ok(g.sh("cat /proc/cpuinfo | wc -c")).strip() == "0"
        assert ok(g.sh("ls -A /proc/sys/kernel | wc -l")).strip() == "0"
        assert int(ok(g.sh("cat /proc/interrupts | wc -l")).strip()) > 1  # unmasked
        assert ok(g.sh("cat /proc/kcore | wc -c")).strip() == "0"  # still masked by default


def test_console_survives_a_killed_supervisor(vroot: Paths) -> None:
    with Guest(vroot, {"V_INIT": TICKER}) as g:
        log = vroot.log_file(g.name)
        assert wait_for(lambda: "tick2" in log.read_text(), 10.0)
        run = state.read(vroot, g.name)
        assert run.supervisor_pid is not None and run.init_pid is not None
        pumps = children(run.supervisor_pid) - {run.init_pid}
        os.kill(run.supervisor_pid, signal.SIGKILL)
        assert wait_for(lambda: state.read(vroot, g.name).supervisor_pid is None, 5.0)
        seen = log.read_text().count("tick")
        # the guest keeps writing (no EPIPE, no SIGPIPE) and the text reaches the log
        assert wait_for(lambda: log.read_text().count("tick") >= seen + 5, 10.0)
        assert state.init_identity(vroot, g.name) is not None
        assert ok(g.sh("echo alive")).strip() == "alive"
    assert not state.read(vroot, g.name).running
    # the console pump ends at end of file, once the guest is gone
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pumps), 10.0)


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(w) for w in f.read().split()}


def test_boot_past_its_deadline_is_undone(vroot: Paths) -> None:
    from engine.runtime.starting import StartFailed, launch

    g = Guest(vroot, {"V_MEMORY": "64M"})
    run_dir = vroot.run_dir(g.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        with pytest.raises(StartFailed, match="timed out"):
            launch(vroot, g.name, 40000, null, os.getpid(), timeout=0.0)  # already late
    finally:
        os.close(null)
    assert not (run_dir / "meminfo").exists()
    ok(vserver(vroot, g.name, "stop"))  # removes the exec profile and the run directory
