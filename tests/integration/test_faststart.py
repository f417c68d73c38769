"""The compiled start: ``vserver NAME start`` replayed from the boot cache.

The first start of a guest goes through Python and writes the cache; the
next one through the compiled front end must give the very same guest
(namespaces, limits, masks, exec profile) without running Python before
the supervisor. ``VSTUI_FALLBACK=0`` makes the front end exit 125 instead
of handing a start it cannot replay to Python, so each test knows which
path ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.config import update_config
from engine.helpers import helper_path
from engine.paths import Paths
from engine.runtime import bootcache, netstrings, profile, state
from engine.runtime.build import build

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
NO_FALLBACK = 125


@pytest.fixture(scope="module")
def front() -> str:
    build()
    return str(helper_path("vserver"))


def python_cli(paths: Paths, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, **kw)


def compiled(front: str, paths: Paths, *args: str, fallback: bool = False, **kw):
    """The compiled front end; ``kw``: subprocess.run's (the user to run as)."""
    env = {**os.environ, "VSTUI_FALLBACK": "1" if fallback else "0"}
    cmd = [front, "--root", str(paths.root), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
                          **kw)  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def cached(vroot: Paths):
    """A busybox guest started once through Python (which writes the cache), stopped."""
    ok(python_cli(vroot, "g", "build", "-m", "busybox"))
    update_config(vroot, "g", {"V_MEMORY": "256M", "ULIMIT": "-H -u 200", "S_FLAGS": "nproc"})
    ok(python_cli(vroot, "g", "start"))
    ok(python_cli(vroot, "g", "stop"))
    assert os.path.exists(bootcache.cache_file(vroot, "g"))
    try:
        yield vroot
    finally:
        python_cli(vroot, "g", "stop")


def inside(front: str, paths: Paths, *cmd: str) -> str:
    return ok(compiled(front, paths, "g", "exec", *cmd))


def test_replayed_start_gives_the_same_guest(front: str, cached: Paths) -> None:
    ok(compiled(front, cached, "g", "start"))
    run = state.read(cached, "g")
    assert run.running and run.xid is not None and run.xid >= 40000
    assert inside(front, cached, "cat", "/proc/1/comm").strip() == ".vinit"
    assert inside(front, cached, "hostname").strip() == "g"
    caps = inside(front, cached, "grep", "CapBnd", "/proc/self/status").split()[1]
    plan = profile.read(os.fspath(cached.run_dir("g")))
    assert int(plan["confine"][0][0], 16) == int(caps, 16)
    assert "262144 kB" in inside(front, cached, "head", "-1", "/proc/meminfo")
    assert inside(front, cached, "cat", "/proc/keys") == ""  # masked
    assert compiled(front, cached, "g", "exec", "touch", "/proc/sys/kernel/x").returncode != 0
    status = json.loads(ok(python_cli(cached, "g", "status", "--json")))
    assert status["init_pid"] == run.init_pid
    log = Path(cached.log_file("g")).read_text()
    assert f"started, init pid {run.init_pid}" in log
    ok(python_cli(cached, "g", "stop"))
    assert not state.read(cached, "g").running


def test_limits_and_cgroups_are_replayed(front: str, cached: Paths) -> None:
    ok(compiled(front, cached, "g", "start"))
    init = state.read(cached, "g").init_pid
    groups = Path(f"/proc/{init}/cgroup").read_text()
    assert cached.cgroup_name("g") in groups
    from engine.cgroups import manager

    stats = manager().stats(cached.cgroup_name("g"))
    assert stats.memory_limit == 256 * 1024 * 1024
    assert stats.pids_limit == 200


def test_edited_config_goes_back_to_python(front: str, cached: Paths) -> None:
    update_config(cached, "g", {"S_HOSTNAME": "renamed"})
    assert compiled(front, cached, "g", "start").returncode == NO_FALLBACK
    assert not state.read(cached, "g").running
    ok(compiled(front, cached, "g", "start", fallback=True))
    assert inside(front, cached, "hostname").strip() == "renamed"
    ok(python_cli(cached, "g", "stop"))
    ok(compiled(front, cached, "g", "start"))  # the Python start cached the new config


def test_running_guest_is_left_to_python(front: str, cached: Paths) -> None:
    ok(compiled(front, cached, "g", "start"))
    assert compiled(front, cached, "g", "start").returncode == NO_FALLBACK
    again = compiled(front, cached, "g", "start", fallback=True)
    assert again.returncode == 0 and "already running" in again.stderr


def test_failed_replay_is_undone_then_python_reports(front: str, cached: Paths) -> None:
    proc = cached.guest_root("g") / "proc"
    proc.rmdir()
    proc.symlink_to("/tmp")  # B refuses it, after S made cgroups and run files
    try:
        assert compiled(front, cached, "g", "start").returncode == NO_FALLBACK
        result = compiled(front, cached, "g", "start", fallback=True)
    finally:
        proc.unlink()
        proc.mkdir()
    assert result.returncode != 0
    assert "/proc is not a directory" in result.stderr
    assert not state.read(cached, "g").running  # and the vroot fixture finds no leftovers


def test_two_concurrent_starts_start_it_once(front: str, cached: Paths) -> None:
    results: list[subprocess.CompletedProcess[str]] = []

    def start() -> None:
        results.append(compiled(front, cached, "g", "start", fallback=True))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0]
    assert sum("already running" in r.stderr for r in results) == 1
    assert state.read(cached, "g").running


# -- a stale entry is never replayed (issue 14) ------------------------------------------


def start_by(way: str, front: str, paths: Paths) -> subprocess.CompletedProcess[str]:
    """A start through the Python tool, or through the compiled front end's cache
    (which must refuse to replay, then hand the start to Python)."""
    if way == "python":
        return python_cli(paths, "g", "start")
    assert compiled(front, paths, "g", "start").returncode == NO_FALLBACK, "replayed"
    assert not state.read(paths, "g").running
    return compiled(front, paths, "g", "start", fallback=True)


@pytest.mark.parametrize("way", ["python", "cached"])
@pytest.mark.parametrize("swapped", ["itself", "parent"])
def test_share_source_swapped_for_a_symlink_is_refused(
    front: str, vroot: Paths, way: str, swapped: str
) -> None:
    share, secret = vroot.root / "srv/s/sub", vroot.root / "etc/sub"
    share.mkdir(parents=True)
    secret.mkdir(parents=True)
    (secret / "SECRET").write_text("host only\n")
    ok(python_cli(vroot, "g", "build", "-m", "busybox"))
    update_config(vroot, "g", {"V_SHARE": f"{share}:/mnt/share:ro"})
    ok(python_cli(vroot, "g", "start"))  # writes the cache
    ok(python_cli(vroot, "g", "stop"))
    if swapped == "itself":
        share.rename(share.with_name("old"))
        share.symlink_to(secret)
    else:
        share.parent.rename(share.parent.with_name("old"))
        share.parent.symlink_to(secret.parent)
    try:
        result = start_by(way, front, vroot)
        assert result.returncode != 0, "the host's directory was bound into the guest"
        message = f"'{share}' is a symlink into {secret}; share the real directory explicitly"
        assert message in result.stderr
        assert not state.read(vroot, "g").running
    finally:
        python_cli(vroot, "g", "stop")


def test_in_place_config_edit_with_size_and_times_kept_takes_effect(
    front: str, cached: Paths
) -> None:
    conf = cached.config_file("g")
    before = conf.stat()
    text = conf.read_text()
    assert 'ULIMIT="-H -u 200"' in text
    with open(conf, "r+") as f:  # same inode, same size (cp -p, an editor, a CM tool)
        f.write(text.replace('ULIMIT="-H -u 200"', 'ULIMIT="-H -u 100"'))
    os.utime(conf, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = conf.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)  # fmt: skip
    ok(start_by("cached", front, cached))
    from engine.cgroups import manager

    assert manager().stats(cached.cgroup_name("g")).pids_limit == 100  # the stricter limit


@pytest.mark.parametrize("binary", ["vinit", "vboot", "vexec", "vserver"])
def test_a_rebuilt_helper_or_front_end_is_never_replayed(
    front: str, cached: Paths, binary: str
) -> None:
    path = helper_path(binary)
    saved = path.with_name(f".{binary}.saved")
    os.link(path, saved)
    # another build of the same program: other bytes (ELF ignores a tail), a new inode
    rebuilt = path.with_name(f".{binary}.new")
    rebuilt.write_bytes(path.read_bytes() + b"\0rebuilt")
    rebuilt.chmod(0o755)
    os.replace(rebuilt, path)
    try:
        ok(start_by("cached", front, cached))
        ok(python_cli(cached, "g", "stop"))
        ok(compiled(front, cached, "g", "start"))  # the Python start recorded the new one
    finally:
        os.replace(saved, path)


def binary_record(paths: Paths, path: Path) -> list[bytes]:
    """The entry's ``binary`` record of path: SHA256 DEV INO SIZE MTIME_NS CTIME_NS."""
    entry = Path(bootcache.cache_file(paths, "g")).read_bytes()
    records = netstrings.ops(entry[len(netstrings.encode(bootcache.VERSION.encode())) :],
                             bootcache.CACHE_OPS)  # fmt: skip
    return next(fields[1:] for op, fields in records if op == "binary" and fields[0] == bytes(path))


def stat_fields(path: Path) -> list[bytes]:
    st = path.stat()
    return [str(v).encode() for v in (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                      st.st_ctime_ns)]  # fmt: skip


def test_a_helper_whose_stat_alone_changed_is_hashed_once(front: str, cached: Paths) -> None:
    """A new ctime with the same bytes (a hard link made by a backup tool or perf's
    build-id cache, chmod): the replay hashes the helper, then writes its new stat
    back, so that the next starts trust the stat again instead of hashing it each time;
    not while the change is under a second old (a same-size rewrite in the same time
    tick would keep that stat)."""
    path = helper_path("vinit")
    sha = binary_record(cached, path)[0]
    link = path.with_name(".vinit.link")
    os.link(path, link)  # the link count, so the ctime, changes; the bytes do not
    os.unlink(link)
    assert binary_record(cached, path)[1:] != stat_fields(path)
    changed = path.stat().st_ctime
    while time.time() < int(changed) + 2:  # the clock must pass the change by a second
        time.sleep(0.05)
    ok(compiled(front, cached, "g", "start"))
    ok(python_cli(cached, "g", "stop"))
    assert binary_record(cached, path) == [sha, *stat_fields(path)]
    ok(compiled(front, cached, "g", "start"))  # the rewritten entry replays


def test_the_one_cache_holds_the_plan_and_its_seccomp_program(front: str, cached: Paths) -> None:
    state_dir = Path(cached.state_dir)
    assert sorted(p.name for p in state_dir.iterdir() if p.is_dir()) == ["boot-cache"]
    entry = Path(bootcache.cache_file(cached, "g")).read_bytes()
    assert os.listdir(state_dir / "boot-cache") == ["g"]
    ok(compiled(front, cached, "g", "start"))
    program = profile.read(os.fspath(cached.run_dir("g")))["confine"][0][1]
    assert len(program) > 8 and program in entry  # inside the cached plan, not beside it


@pytest.mark.parametrize(
    "values",
    [{"S_FLAGS": "fakeinit"}, {"V_INIT": "/bin/sh -c 'exec sleep 1000'"}],
    ids=["fakeinit", "V_INIT"],
)
def test_guests_not_run_by_rc_local_are_replayed_too(
    front: str, vroot: Paths, values: dict[str, str]
) -> None:
    """The boot cache recorded rc.local as absent for these (the plan does not run it)
    while the file exists, so their every start went back to Python."""
    ok(python_cli(vroot, "g", "build", "-m", "busybox"))
    assert (vroot.guest_root("g") / "etc/rc.local").exists()
    update_config(vroot, "g", values)
    ok(python_cli(vroot, "g", "start"))
    ok(python_cli(vroot, "g", "stop"))
    try:
        ok(compiled(front, vroot, "g", "start"))  # VSTUI_FALLBACK=0: replayed or exit 125
    finally:
        python_cli(vroot, "g", "stop")


# The Python start with its lean supervisor held before its interpreter starts (a shell
# that waits on a FIFO, then execs it); the boot cache records the same held command.
HELD_SUPERVISOR = (
    "import sys; import engine.runtime.supervisor as s; lean = s.lean_command; "
    "s.lean_command = lambda *a: ['/bin/sh', '-c', 'read _ < \"$0\"; exec \"$@\"', "
    "sys.argv[1], *lean(*a)]; from vstui.cli.vserver import main; sys.exit(main(sys.argv[2:]))"
)


def release(fifo: Path) -> None:
    """Let a held supervisor go on (nothing happens when none waits)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.write(fd, b"\n")
    os.close(fd)


def test_a_vinit_guest_is_started_once_init_runs_with_its_console_served(
    front: str, vroot: Paths, tmp_path: Path
) -> None:
    """vinit running is ready: neither start waits for the supervisor's interpreter
    (it cost the cached start 20 ms, slower than lxc-start), and the console socket
    listens before the answer, so `vserver NAME console` right after a start finds it."""
    from engine.runtime.ptyconsole import connect

    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    ok(python_cli(vroot, "g", "build", "-m", "busybox"))
    held = [sys.executable, "-c", HELD_SUPERVISOR, str(fifo), "--root", str(vroot.root), "g"]
    try:
        for way in ("python", "cached"):
            if way == "python":
                start = subprocess.run([*held, "start"], cwd=REPO, capture_output=True,
                                       text=True, timeout=60)  # fmt: skip
            else:
                start = compiled(front, vroot, "g", "start")
            ok(start)
            run = state.read(vroot, "g")
            assert run.running and run.supervisor_pid is not None, way
            held_by = os.readlink(f"/proc/{run.supervisor_pid}/exe")
            assert "python" not in held_by, f"{way}: answered by the supervisor ({held_by})"
            sock = connect(os.fspath(vroot.run_dir("g")))
            assert sock is not None, f"{way}: no console served right after the start"
            sock.close()
            release(fifo)
            ok(python_cli(vroot, "g", "stop"))
    finally:
        release(fifo)
        python_cli(vroot, "g", "stop")
