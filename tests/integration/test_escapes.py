"""Escape suite: real guests, probed from inside as guest root, on every way in.

One probe per escape class of isolation-anchors.md section 2 (numbers in the
test names), plus the resource behaviours of its section 4. Probes live in
escape_probes.py, copied into each guest as /opt/vstui-probes.py, and run as
guest root. Every class test runs once per way into a guest
(tests/integration/ways.py: the Python start, the cached start, the compiled
exec, the Python exec, enter, suexec and the console's exec): the way starts
the guest, or carries the probe into it. Each test checks the errno the
guest sees and, where a host knob is involved, that the host is unchanged.

Most probes share one guest per way with the default configuration of a
freshly built skeleton guest (module fixture, its own temporary root and
leak check). Guests whose trees attack the runtime get their own guest under
``vroot``, started by the way under test; the resource tests run once.

docs/escapes.md maps every class to its defence and to the test here.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import socket
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from engine.paths import Paths
from tests import leaks
from tests.conftest import set_guest_mode
from tests.integration.ways import NO_FALLBACK, WAYS, Way, python_cli

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROBES = Path(__file__).parent / "escape_probes.py"
PROBE_FILE = "/opt/vstui-probes.py"
GUEST_PYTHON = "/usr/bin/python3"
HOST_KNOBS = (
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/kernel/hostname",
    "/proc/sys/kernel/domainname",
)


class Target(NamedTuple):
    """A guest and the way into it under test."""

    paths: Paths
    name: str
    way: Way


# -- driving guests through the real tools ------------------------------------------


def vserver(
    paths: Paths, *args: str, check: bool = True, timeout: float = 120, **kw
) -> subprocess.CompletedProcess[str]:
    """The Python tool, for what no way is under test (build, stop, status)."""
    result = subprocess.run(python_cli(paths, *args), cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, check=False, **kw)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {result.returncode}: {result.stderr[-2000:]}")
    return result


def run_in(target: Target, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``argv`` in the guest, the way under test."""
    result = target.way.run(target.paths, target.name, list(argv))
    if check and result.returncode != 0:
        raise AssertionError(f"{target.way}: {argv[:3]} -> {result.returncode}: "
                             f"{result.stderr.strip()[-2000:]}")  # fmt: skip
    return result


def probe(target: Target, which: str, *args: str) -> dict:
    """Run one probe inside the guest; its JSON answer."""
    _copy_probes(target.paths, target.name)
    result = run_in(target, GUEST_PYTHON, PROBE_FILE, which, *args)
    return json.loads(result.stdout.strip().splitlines()[-1])


def start(target: Target) -> None:
    result = target.way.start(target.paths, target.name)
    assert result.returncode == 0, f"{target.way}: start -> {result.stderr.strip()[-2000:]}"


def build(paths: Paths, name: str, *settings: str) -> Path:
    """``vserver NAME build`` (skeleton, defaults) plus ``--set KEY=VALUE`` words; the probes."""
    extra = [w for s in settings for w in ("--set", s)]
    vserver(paths, name, "build", *extra)
    tree = paths.guest_root(name)
    _copy_probes(paths, name)
    return tree


def _copy_probes(paths: Paths, name: str) -> None:
    """Into the tree (an image guest's only while it is mounted: at start)."""
    opt = paths.guest_root(name) / "opt"
    if opt.is_dir() and not (opt / "vstui-probes.py").exists():
        shutil.copyfile(PROBES, opt / "vstui-probes.py")


def stop(paths: Paths, name: str) -> None:
    vserver(paths, name, "stop", check=False, timeout=60)


def host_knobs() -> dict[str, str]:
    return {path: Path(path).read_text() for path in HOST_KNOBS if os.path.exists(path)}


def tree_digest(base: Path) -> list[tuple[str, int, bytes]]:
    """Names, modes and contents under ``base``: to prove nothing changed there."""
    out = []
    for path in sorted(base.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out.append((str(path.relative_to(base)), st.st_mode, data))
    return out


@pytest.fixture(scope="module")
def host_before() -> dict[str, str]:
    return host_knobs()


@pytest.fixture(scope="module", params=WAYS)
def way(request: pytest.FixtureRequest) -> Way:
    return Way(request.param)


@pytest.fixture(scope="module")
def shared(way: Way, guest_mode: str) -> Iterator[Target]:
    """One default guest per way (and guest mode) for the probes that only look."""
    base = Path(tempfile.mkdtemp(prefix="vstui-test-esc-", dir="/tmp"))
    target = Target(Paths.from_root(base), "esc", way)
    set_guest_mode(target.paths, guest_mode)
    try:
        tree = build(target.paths, target.name)
        # copies of cat with file capabilities far outside the guest's bounding set:
        # permitted only (exec works, gains nothing) and effective (exec refused)
        for suffix, flags in (("ip", "+ip"), ("eip", "+eip")):
            copy = tree / f"opt/capcat_{suffix}"
            shutil.copy2("/usr/bin/cat", copy)
            caps = "cap_sys_admin,cap_net_raw,cap_sys_module" + flags
            subprocess.run(["setcap", caps, str(copy)], check=True)
        start(target)
        yield target
    finally:
        stop(target.paths, target.name)
        found = leaks.find(target.paths)
        leaks.clean(target.paths)
        shutil.rmtree(base, ignore_errors=True)
        assert not found, f"escape guest left behind: {found}"


@pytest.fixture
def guest(vroot: Paths, way: Way) -> Iterator[Target]:
    """A fresh guest name under vroot for the way under test, stopped at the end."""
    yield Target(vroot, "g", way)
    stop(vroot, "g")


@pytest.fixture
def plain_guest(vroot: Paths) -> Iterator[Target]:
    """A fresh guest for the resource tests (one way: the compiled exec)."""
    yield Target(vroot, "g", Way("compiled-exec"))
    stop(vroot, "g")


def assert_errno(result: dict, **expected: tuple[str, ...] | str) -> None:
    for key, allowed in expected.items():
        allowed = (allowed,) if isinstance(allowed, str) else allowed
        assert result[key] in allowed, f"{key}: got {result[key]}, expected {allowed}"


# -- the default guest: classes that need no special tree -----------------------------


def test_default_guest_is_filtered_and_proc_is_real(shared: Target) -> None:
    # class 10 (second half): a real procfs, and Seccomp: 2 in PID 1 and in exec'd processes
    result = probe(shared, "proc_is_real")
    assert result["proc_is_link"] is False
    assert result["f_type"] == "0x9fa0"  # PROC_SUPER_MAGIC
    assert result["init_seccomp"] == "2" and result["self_seccomp"] == "2"


def test_01_cgroup_release_agent(shared: Target) -> None:
    result = probe(shared, "release_agent")
    assert_errno(
        result,
        unshare_user_mnt_cgroup="EPERM",
        mount_cgroup_v1="EPERM",
        mount_cgroup2="EPERM",
        release_agent=("ENOENT", "EROFS", "EACCES"),
        notify=("ENOENT", "EROFS", "EACCES"),
    )


def test_02_core_pattern(shared: Target, host_before: dict[str, str]) -> None:
    assert_errno(probe(shared, "core_pattern"), core_pattern=("EROFS", "EACCES"))
    assert host_knobs() == host_before


def test_03_modprobe_and_binfmt_misc(shared: Target) -> None:
    result = probe(shared, "modprobe_binfmt")
    assert_errno(
        result,
        modprobe=("EROFS", "EACCES", "ENOENT"),
        binfmt_register=("EROFS", "ENOENT", "EACCES"),
        mount_binfmt="EPERM",
    )


def test_04_sysrq_trigger(shared: Target) -> None:
    assert_errno(probe(shared, "sysrq"), sysrq=("EROFS", "EACCES", "ENOENT"))


def test_05_info_leaks(shared: Target) -> None:
    result = probe(shared, "info_leaks")
    assert result.pop("thermal_throttle_readable") == []
    leaked = {k: v for k, v in result.items() if v not in ("empty", "ENOENT", "EACCES")}
    assert leaked == {}


def test_11_no_host_fd_or_cwd(shared: Target) -> None:
    result = probe(shared, "fds_and_cwd", str(shared.paths.root))
    assert result["bad"] == {}
    home = "/root" if shared.way.name == "suexec" else "/"  # suexec: the user's home
    assert result["getcwd"] == home and result["count"] > 4


def test_12_exe_not_writable(shared: Target) -> None:
    result = probe(shared, "exe_overwrite")
    assert result, "no /proc/PID/exe readable at all"
    assert {k: v for k, v in result.items() if v not in ("ETXTBSY", "EROFS", "EACCES")} == {}


def test_12_exec_helper_exe_not_reachable(shared: Target) -> None:
    # the guest races every `vserver exec` for /proc/PID/exe of the process the
    # runtime forks into its PID namespace, while it is still the host's binary
    paths, name = shared.paths, shared.name
    cmd = python_cli(paths, name, "exec", GUEST_PYTHON, PROBE_FILE, "exe_race", "6")
    watcher = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        for _ in range(30):
            run_in(shared, "/bin/true")  # the way under test
        out, _ = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["host_only_exes"] == {}


def test_13_chroot_breakout(shared: Target) -> None:
    result = probe(shared, "chroot_breakout")
    # SYS_CHROOT is in the default set: the trick runs, and only reaches the guest's /
    assert result == {"result": "ran", "same_root": True}


def test_14_fresh_proc_and_sysfs(shared: Target) -> None:
    assert_errno(probe(shared, "fresh_proc_sysfs"), proc="EPERM", sysfs="EPERM", tmpfs="EPERM")


def test_15_host_block_device(shared: Target) -> None:
    result = probe(shared, "block_device")
    assert result["block_nodes_in_dev"] == []
    assert_errno(result, mknod_block="EPERM", mknod_char_mem="EPERM", mknod_dev_block="EPERM",
                 mknod_dev_mem="EPERM", mount_ext4="EPERM")  # fmt: skip


def test_16_device_cgroup_rewrite(shared: Target) -> None:
    result = probe(shared, "device_cgroup")
    assert_errno(
        result,
        devices_allow=("ENOENT", "EROFS", "EACCES"),
        devices_allow_flat=("ENOENT", "EROFS", "EACCES"),
        bpf_prog_load="EPERM",
    )


def test_17_host_cgroup_tree(shared: Target) -> None:
    result = probe(shared, "cgroup_tree")
    v1 = {k: v for k, v in result["cgroup_paths"].items() if k != "cgroup2"}
    assert set(v1.values()) <= {"/"}  # cgroup namespace: the guest's cgroup is its /
    # its own cgroup2 subtree (docs/systemd.md): no v1 hierarchy, nothing above its payload
    entries = set(result["sys_fs_cgroup"])
    assert "cgroup.procs" in entries and not entries & {"memory", "pids", "cpu", "unified"}
    assert_errno(
        result, pids_max=("ENOENT", "EROFS", "EACCES"), memory_limit=("ENOENT", "EROFS", "EACCES")
    )


def test_17_exec_joins_every_guest_cgroup(shared: Target) -> None:
    result = probe(shared, "cgroup_tree")
    outside = {k: v for k, v in result["cgroup_paths"].items() if v != "/"}
    assert outside == {}


def test_18_ptrace_and_host_pids(shared: Target) -> None:
    result = probe(shared, "ptrace", str(os.getpid()))
    assert 1 in result["pids"] and len(result["pids"]) < 20
    assert not any("pytest" in c for c in result["cmdlines"].values())
    assert_errno(result, attach_host_pid="ESRCH", kill_host_pid="ESRCH")


def test_19_no_host_daemon_socket(shared: Target) -> None:
    assert probe(shared, "sockets") == {"sockets": [], "known": []}


def test_20_abstract_unix_socket(shared: Target) -> None:
    token = f"vstui-escape-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as host_sock:
        host_sock.bind("\0" + token)
        host_sock.listen(1)
        result = probe(shared, "abstract", token)
    assert result == {"listed": False, "connect": "ECONNREFUSED"}


def test_21_net_raw(shared: Target) -> None:
    # also class 23: without raw and packet sockets no RA or ARP can be forged
    assert_errno(probe(shared, "net_raw"), packet="EPERM", raw_ipv4="EPERM", raw_icmpv6="EPERM")


def test_22_net_admin(shared: Target) -> None:
    assert_errno(probe(shared, "net_admin"), set_flags="EPERM", set_mtu="EPERM")


def test_23_host_side_links_ignore_router_adverts(guest: Target) -> None:
    # a guest with an address: only those get a host-side veth end
    paths, name = guest.paths, guest.name
    build(paths, name, "IPROOT=198.18.23.2/24")
    start(guest)
    names = leaks.links(paths)
    assert names, "a guest with IPROOT has a host-side link"
    for link in names:
        accept_ra = Path(f"/proc/sys/net/ipv6/conf/{link}/accept_ra")
        if accept_ra.exists():
            assert accept_ra.read_text().strip() == "0", link
        rp_filter = Path(f"/proc/sys/net/ipv4/conf/{link}/rp_filter")
        assert rp_filter.read_text().strip() == "1", link


def test_24_nested_user_namespace(shared: Target) -> None:
    # the default config has S_FLAGS="lock": setns is refused too
    result = probe(shared, "userns")
    assert_errno(
        result,
        unshare_user="EPERM",
        clone_user="EPERM",
        unshare_net="EPERM",
        setns_bad_fd=("EPERM", "EBADF"),
        plain_fork="ok",
    )


def test_25_kernel_keyring(shared: Target) -> None:
    result = probe(shared, "keyring")
    assert_errno(
        result, join_session="EPERM", add_key="EPERM", proc_keys=("empty", "ENOENT", "EACCES")
    )


def test_26_to_30_dangerous_syscalls(shared: Target) -> None:
    # 26 userfaultfd, 27 perf_event_open, 28 modules/kexec, 29 clock, 30 open_by_handle_at
    before = time.clock_gettime(time.CLOCK_REALTIME) - time.monotonic()
    result = probe(shared, "dangerous_syscalls")
    assert {k: v for k, v in result.items() if v != "EPERM"} == {}
    drift = time.clock_gettime(time.CLOCK_REALTIME) - time.monotonic() - before
    assert abs(drift) < 5, "the host clock moved"


def test_31_sysfs_read_only(shared: Target) -> None:
    result = probe(shared, "sysfs")
    assert result["sys_ro"] is True
    assert_errno(
        result,
        uevent_helper=("EROFS", "EACCES", "ENOENT"),
        mount_debugfs="EPERM",
        mount_securityfs="EPERM",
    )


def test_32_no_inheritable_or_ambient_caps(shared: Target) -> None:
    from engine.caps import DEFAULT_GUEST_CAPS, number

    result = probe(shared, "caps", "/opt/capcat_ip", "/opt/capcat_eip")
    bounding = f"{sum(1 << number(c) for c in DEFAULT_GUEST_CAPS):016x}"
    for who in ("init", "self"):
        caps = result[who]
        assert caps["CapInh"] == "0" * 16 and caps["CapAmb"] == "0" * 16, who
        assert caps["CapBnd"] == bounding, who
    # file caps outside the bounding set give a uid-1000 process nothing; a
    # capability-dumb (+e) binary that cannot get them all is refused outright
    zero = "0" * 16
    assert result["/opt/capcat_ip"] == {"CapPrm": zero, "CapEff": zero, "CapAmb": zero}
    assert result["/opt/capcat_eip"] == "exec:EPERM"


def test_33_tiocsti_on_the_callers_terminal(shared: Target) -> None:
    leader, follower = pty.openpty()
    try:
        # on a terminal every way ends in Python's pty relay (the compiled exec hands over)
        cmd, typed = shared.way.command(shared.paths, shared.name,
                                        [GUEST_PYTHON, PROBE_FILE, "tiocsti"])  # fmt: skip
        if typed is not None:  # enter: typed into its login shell, on the terminal
            os.write(leader, typed.encode())

        def own_terminal() -> None:  # the admin's shell: the pty is our controlling tty
            os.setsid()
            import fcntl

            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=own_terminal,
            text=True,
        )
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        queued = _pending(follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert result["fd0"] in ("EPERM", "ENOTTY", "EIO"), result
    assert queued == 0, "something was typed into the caller's terminal"


def _pending(fd: int) -> int:
    import array
    import fcntl

    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def test_34_page_cache_surface(shared: Target) -> None:
    result = probe(shared, "page_cache")
    assert result["af_alg"] == "EPERM"  # Copy Fail (af_alg) and friends
    assert result["write_python"] in ("EROFS", "ETXTBSY", "EACCES")
    assert result["host_binds"] and set(result["host_binds"].values()) == {"ro"}


def test_35_loop_devices(shared: Target) -> None:
    assert_errno(probe(shared, "loop"), loop_control="ENOENT", loop0="ENOENT", mknod_loop="EPERM")


def test_36_uts_ipc_mounts(shared: Target, host_before: dict[str, str]) -> None:
    key = str(0x7E57_0000 + os.getpid() % 0xFFFF)
    result = probe(shared, "uts_ipc_mounts", key)
    assert result["sethostname"] == "EPERM"
    assert result["shmget"] == "ok"  # its own IPC namespace...
    with open("/proc/sysvipc/shm") as f:  # ...which the host does not see
        assert not any(line.split()[:1] == [key] for line in f)
    assert not any(w.startswith("shared:") for w in result["root_optional"])
    assert not any(p.startswith(("/work", "/tmp/vstui")) for p in result["mount_points"])
    assert host_knobs() == host_before


# -- guests built to attack the runtime -----------------------------------------------


def cache_first(target: Target) -> None:
    """The cached start replays a plan made for a clean tree: make it before the attack."""
    if target.way.name == "cached-start":
        vserver(target.paths, target.name, "start")
        stop(target.paths, target.name)


def _start_or_refused(target: Target) -> bool:
    """True if the guest started; a refusal must be a clean one-line error."""
    paths, name = target.paths, target.name
    result = target.way.start(paths, name)
    if result.returncode == 0:
        return True
    if target.way.name == "cached-start" and result.returncode == NO_FALLBACK:
        # the executor refused the replay and undid it; Python's own start must
        # then start it or refuse it in one line
        assert leaks.mounts(paths) == [], "a refused replay left mounts"
        result = vserver(paths, name, "start", check=False)
        if result.returncode == 0:
            return True
    lines = result.stderr.strip().splitlines()
    print(f"start refused: {result.stderr.strip()}")
    assert len(lines) == 1 and lines[0].startswith(f"vserver: {name}:"), result.stderr
    assert leaks.mounts(paths) == [], "a refused start left mounts"
    return False


def test_06_07_hostile_dev_links(guest: Target, host_before: dict[str, str]) -> None:
    paths, name = guest.paths, guest.name
    tree = build(paths, name)
    cache_first(guest)
    os.symlink("/proc/sys/kernel/core_pattern", tree / "dev/null")  # CVE-2025-31133
    os.symlink("/proc/sys/kernel/core_pattern", tree / "dev/console")  # CVE-2025-52565
    os.symlink("/proc/sysrq-trigger", tree / "dev/ptmx")
    os.symlink("/proc/sys/kernel", tree / "dev/pts")
    if _start_or_refused(guest):
        result = probe(guest, "dev_nodes")
        assert result["/dev/null"] == "chr 1:3"
        assert result["/dev/zero"] == "chr 1:5"
        assert result["/dev/console"] in ("chr 1:3", "chr 5:1") or result[
            "/dev/console"
        ].startswith("chr 136:")
        assert result["/dev/pts"] == "dir"
        assert result["/dev/ptmx"] in ("lnk -> pts/ptmx", "chr 5:2")
        assert result["core_pattern"] in ("EROFS", "EACCES")
    assert host_knobs() == host_before


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_09_dev_symlinked_to_host(guest: Target, how: str) -> None:
    paths, name = guest.paths, guest.name
    tree = build(paths, name)
    cache_first(guest)
    victim = paths.root / "victim"
    victim.mkdir()
    (victim / "keep").write_text("host file\n")
    before = tree_digest(victim)
    (tree / "dev").rmdir()
    target = str(victim) if how == "absolute" else os.path.relpath(victim, tree)
    os.symlink(target, tree / "dev")
    if _start_or_refused(guest):
        assert probe(guest, "dev_nodes")["/dev/null"] == "chr 1:3"
    assert tree_digest(victim) == before, "start created or removed files outside the tree"


@pytest.mark.parametrize("kind", ["symlink", "fake_dir"])
def test_10_proc_symlink_or_fake(guest: Target, kind: str) -> None:
    paths, name = guest.paths, guest.name
    tree = build(paths, name)
    cache_first(guest)
    victim = paths.root / "fakeproc"
    (victim / "self").mkdir(parents=True)
    (victim / "self/status").write_text("Seccomp:\t0\n")
    before = tree_digest(victim)
    (tree / "proc").rmdir()
    if kind == "symlink":
        os.symlink(str(victim), tree / "proc")
    else:
        shutil.copytree(victim, tree / "proc", symlinks=True)
    if _start_or_refused(guest):
        result = probe(guest, "proc_is_real")
        assert result["f_type"] == "0x9fa0" and result["proc_is_link"] is False
        assert result["init_seccomp"] == "2" and result["self_seccomp"] == "2"
    else:
        assert kind == "symlink", "a plain /proc directory must not stop a start"
    assert tree_digest(victim) == before


def test_08_share_target_swapped_during_start(guest: Target) -> None:
    paths, name = guest.paths, guest.name
    share = paths.root / "hostshare"
    share.mkdir()
    (share / "MARKER").write_text("host data\n")
    before = tree_digest(share)
    tree = build(paths, name, f"V_SHARE={share}:/srv/share:ro")
    target, parked = tree / "srv/share", tree / "srv/parked"
    target.mkdir(parents=True, exist_ok=True)
    cache_first(guest)
    stop_racing = threading.Event()
    swaps = [0]

    def racer() -> None:  # flip the target between a directory and a symlink
        while not stop_racing.is_set():
            try:
                os.rename(target, parked)
                os.symlink("/etc", target)
                os.unlink(target)
                os.rename(parked, target)
                swaps[0] += 1
            except OSError:
                pass

    started = 0
    for _ in range(4):
        thread = threading.Thread(target=racer, daemon=True)
        thread.start()
        try:
            ok = _start_or_refused(guest)
        finally:
            stop_racing.set()
            thread.join()
            stop_racing.clear()
        if ok:
            started += 1
            result = probe(guest, "page_cache")  # any probe: the guest is sane
            assert result["af_alg"] == "EPERM"
            script = (
                "for d in /srv/share /srv/parked /etc; do "
                "[ -e $d/MARKER ] && { echo x >> $d/MARKER && echo WROTE $d; }; done; true"
            )
            write = run_in(guest, "/bin/sh", "-c", script, check=False)
            assert "WROTE" not in write.stdout, write.stdout
            stop(paths, name)
        if target.is_symlink():
            target.unlink()
        if parked.exists() and not target.exists():
            os.rename(parked, target)
    assert swaps[0] > 0
    assert tree_digest(share) == before, "the read-only share was written"
    print(f"share swap race: {started}/4 starts succeeded, {swaps[0]} swaps")


# -- section 4: resources -------------------------------------------------------------


def _cgroup_file(paths: Paths, name: str, filename: str) -> Path | None:
    from engine.cgroups import manager

    for directory in manager().paths(paths.cgroup_name(name)):
        if (directory / filename).exists():
            return directory / filename
    return None


def _counter(path: Path | None, key: str) -> int | None:
    if path is None:
        return None
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == key:
            return int(words[1])
    return None


def test_fork_bomb_and_threads_stop_at_pids_limit(plain_guest: Target) -> None:
    paths, name = plain_guest.paths, plain_guest.name
    build(paths, name, "V_PIDS=64")
    vserver(paths, name, "start")
    result = probe(plain_guest, "fork_bomb")
    assert result.get("fork") == "EAGAIN" and result["forked"] < 64
    assert "thread" in result and result["threads"] < 64
    assert run_in(plain_guest, "/bin/true").returncode == 0  # the guest recovers
    events = _counter(_cgroup_file(paths, name, "pids.events"), "max")
    assert events is None or events > 0


def test_memory_oom_stays_inside_and_shm_is_bounded(plain_guest: Target) -> None:
    paths, name = plain_guest.paths, plain_guest.name
    build(paths, name, "V_MEMORY=128M")
    vserver(paths, name, "start")
    result = probe(plain_guest, "memory", "512")
    assert result["signal"] == 9, result  # SIGKILL by the guest's OOM killer
    assert vserver(paths, name, "status").returncode == 0  # init survived
    oom = _cgroup_file(paths, name, "memory.oom_control") or _cgroup_file(
        paths, name, "memory.events"
    )
    assert (_counter(oom, "oom_kill") or 0) > 0
    shm = probe(plain_guest, "fill", "/dev/shm/fill", "200")
    assert shm["error"] == "ENOSPC" and shm["written_mb"] <= 64, shm


def test_cpu_quota_half_a_cpu(plain_guest: Target) -> None:
    paths, name = plain_guest.paths, plain_guest.name
    build(paths, name, "V_CPU_QUOTA=50%")
    vserver(paths, name, "start")
    result = probe(plain_guest, "cpu", "3")
    print(f"cpu quota 50%: {result['cpu']:.2f} s CPU in {result['wall']:.2f} s wall")
    assert 0.3 <= result["ratio"] <= 0.7, result


def test_image_guest_disk_and_inodes_bounded(plain_guest: Target) -> None:
    paths, name = plain_guest.paths, plain_guest.name
    build(paths, name, "V_DISK_BACKEND=image", "V_DISK=64M", "V_INODES=4096")
    vserver(paths, name, "start")
    host_free = shutil.disk_usage("/tmp").free
    disk = probe(plain_guest, "fill", "/var/tmp/fill", "256")
    assert disk["error"] in ("ENOSPC", "EDQUOT") and disk["written_mb"] < 64, disk
    inodes = probe(plain_guest, "inodes", "/var/tmp/many", "100000")
    assert inodes["error"] in ("ENOSPC", "EDQUOT") and inodes["made"] < 4096, inodes
    # the host did not pay for it (other users of /tmp may move it a little)
    assert shutil.disk_usage("/tmp").free > host_free - (32 << 20)


def test_readonly_bind_keeps_its_submounts_readonly(plain_guest: Target) -> None:
    # a read-only share whose host directory has another file system mounted
    # below it: the submount must be read-only in the guest too (the same
    # holds for the skeleton's host /usr with a separate /usr/local)
    paths, name = plain_guest.paths, plain_guest.name
    share = paths.root / "srv-share"
    (share / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "subfs", str(share / "sub")],
                   check=True)  # fmt: skip
    try:
        build(paths, name, f"V_SHARE={share}:/mnt/share:ro")
        vserver(paths, name, "start")
        result = vserver(paths, name, "exec", "/bin/sh", "-c",
                         "touch /mnt/share/sub/x; echo rc=$?", check=False)  # fmt: skip
        assert "rc=0" not in result.stdout, "a submount of a read-only share was writable"
        assert "Read-only file system" in result.stderr
        assert not (share / "sub" / "x").exists()
    finally:
        stop(paths, name)
        subprocess.run(["umount", str(share / "sub")], check=False)


# -- the user-namespace classes (issue 16) --------------------------------------------------


def test_u1_id_maps_and_setgroups_cannot_be_rewritten(shared: Target, guest_mode: str) -> None:
    result = probe(shared, "userns_maps")
    assert_errno(result, write_uid_map="EPERM", write_gid_map="EPERM",
                 write_init_uid_map="EPERM", write_setgroups=("EPERM", "EACCES"))  # fmt: skip
    inside, base, count = (int(w) for w in result["uid_map"])
    if guest_mode == "userns":
        assert (inside, count) == (0, 65536) and base >= 524288 and base + count <= 2**31
    else:
        assert (inside, base, count) == (0, 0, 2**32 - 1)


def test_u2_fsopen_fsconfig_refused(shared: Target) -> None:
    # CVE-2022-0185 (fsconfig heap overflow, reachable from a user namespace)
    result = probe(shared, "fsopen")
    assert_errno(result, fsopen_tmpfs="EPERM", fsopen_ext4="EPERM", fsopen_cgroup2="EPERM",
                 mount_tmpfs="EPERM")  # fmt: skip


def test_u3_guest_cannot_idmap_a_host_path(shared: Target) -> None:
    assert_errno(probe(shared, "idmap_host_path"), open_tree="EPERM", mount_setattr="EPERM")


def test_u4_overlay_copy_up_of_an_unmapped_setuid_file(guest: Target, guest_mode: str) -> None:
    # CVE-2023-0386: a guest that may mount (SYS_ADMIN: in a user namespace only its
    # own) copies up a setuid file whose owner its ids do not map
    tree = build(guest.paths, guest.name, "S_CAPS=SYS_ADMIN")
    low = tree / "opt/low"
    low.mkdir(parents=True)
    suid = low / "suid"
    shutil.copy2("/usr/bin/id", suid)
    os.chown(suid, 100000, 100000)  # outside every guest's ids 0..65535
    suid.chmod(0o4755)
    start(guest)
    result = probe(guest, "overlay_copyup", "/opt/low", "suid")
    if guest_mode == "userns":
        assert result["mount_tmpfs"] == "ok"  # its own tmpfs: allowed
        # either the layer is refused or the copy-up is: never a setuid file of an
        # unmapped owner made by the guest
        refused = ("EOVERFLOW", "EPERM", "EACCES")
        assert result["mount_overlay"] != "ok" or result["copy_up"] in refused, result
        assert not isinstance(result.get("upper"), dict), result
    # whatever happened stayed in the guest's own tmpfs: nothing of it on the host's disk
    assert not (tree / "tmp/ov/upper/suid").exists()
    assert suid.stat().st_uid == 100000 and suid.stat().st_mode & 0o4000


def _sleeper(paths: Paths, name: str) -> int:
    """Host PID of a `sleep` run as uid 1000 in the guest (a child of its init)."""
    script = "setpriv --reuid=1000 --regid=1000 --clear-groups sleep 300 >/dev/null 2>&1 &"
    vserver(paths, name, "exec", "/bin/sh", "-c", script)
    init = int((paths.run_dir(name) / "init.pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if comm == "sleep" and ppid == init:
                return pid
        time.sleep(0.05)
    raise AssertionError("the guest's sleep did not appear")


def test_u5_signals_and_ptrace_across_guests_with_the_same_uid(
    guest: Target, guest_mode: str
) -> None:
    other = Target(guest.paths, "h", guest.way)
    for each in (guest, other):
        build(each.paths, each.name)
        start(each)
    victim = _sleeper(guest.paths, guest.name)
    try:
        result = probe(other, "signal_other_guest", "1000", str(victim))
        other_base = int(probe(other, "userns_maps")["uid_map"][1])
    finally:
        stop(other.paths, other.name)
    assert_errno(result, kill="ESRCH", ptrace_attach="ESRCH", pidfd_open="ESRCH", proc="ENOENT")
    if guest_mode == "userns":  # the same guest uid is another host uid in each guest
        with open(f"/proc/{victim}/status") as f:
            uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
        assert uid != other_base + 1000 and uid % 65536 == 1000


def test_u6_ownership_through_a_share(guest: Target, guest_mode: str) -> None:
    share = guest.paths.root / "srv-share"
    share.mkdir()
    share.chmod(0o777)
    (share / "foreign").write_text("a host user's file\n")
    os.chown(share / "foreign", 100000, 100000)
    (share / "foreign-dir").mkdir(mode=0o755)
    os.chown(share / "foreign-dir", 100000, 100000)
    build(guest.paths, guest.name, f"V_SHARE={share}:/srv/share:rw")
    start(guest)
    result = probe(guest, "share_ownership", "/srv/share")
    # the ids on disk are the ids inside: the guest's root writes root's files, its
    # uid 1000 writes uid 1000's, in every guest that shares the directory
    assert result["inside"] == {"by-root": 0, "by-1000": 1000}
    assert (share / "by-root").stat().st_uid == 0 and (share / "by-1000").stat().st_uid == 1000
    if guest_mode == "userns":
        # a host id outside the guest's 0..65535 is nobody inside: the guest's root
        # cannot take, change or write into what it owns
        assert result["foreign_owner"] == 65534
        assert_errno(result, write_foreign="EACCES", chown_foreign=("EPERM", "EOVERFLOW"),
                     chmod_foreign=("EPERM", "EOVERFLOW"),
                     create_in_foreign_dir="EACCES")  # fmt: skip
        assert (share / "foreign").stat().st_uid == 100000
    else:  # the privileged guest's root is the host's: it may (an audit finding)
        assert result["chown_foreign"] == "ok"
