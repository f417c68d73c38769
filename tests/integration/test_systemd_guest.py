"""Debian guests booting their own systemd as PID 1 (issue 15), bookworm (252) and trixie (257).

Each guest is built with the ``debootstrap:SUITE`` template. The first run
on a machine downloads each suite once from the Debian mirror into
``/var/cache/vstui-tests`` (VSTUI_CACHE_DIR): later runs, CI included,
copy the cached tree in seconds. Every guest keeps the template's defaults
(``S_FLAGS="lock nproc fakeinit"``, the default capabilities plus SETPCAP,
the default seccomp filter).

A guest must reach ``systemctl is-system-running`` = ``running`` within 30 s:
no unit may fail (FAILED_UNITS lists the ones allowed, with the reason, and
is empty). Host-to-guest traffic goes only to the guest's 198.18.x address
over its veth.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from engine.paths import Paths
from engine.runtime import state
from tests.integration.debian_mirror import skip_if_unreachable
from tests.integration.test_debian_guest import (
    authorize_root_key,
    free_address,
    ssh_argv,
    wait_for_banner,
)
from tests.integration.test_runtime import ok, vserver

# the first run on a machine downloads each suite (debootstrap): more than the usual 300 s
# host_source: the host needs an IPv4 source address to reach the guests
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1800),
              pytest.mark.usefixtures("host_source")]  # fmt: skip

CACHE = "/var/cache/vstui-tests"  # outside the repo: survives runs, CI pays once
SUITES = ("bookworm", "trixie")
INCLUDE = "nginx,openssh-server,cron,libpam-systemd,procps"
BOOT_DEADLINE = 30.0
# units allowed to fail, per suite, with the reason (docs/systemd.md): none
FAILED_UNITS: dict[str, set[str]] = {"bookworm": set(), "trixie": set()}
SERVICES = ("systemd-journald", "systemd-logind", "dbus", "cron", "ssh", "nginx",
            "console-getty")  # fmt: skip


@pytest.fixture(autouse=True)
def shared_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSTUI_CACHE_DIR", CACHE)


class SystemdGuest:
    """A debootstrapped guest booting systemd; always stopped again."""

    def __init__(self, paths: Paths, suite: str, values: dict[str, str] | None = None) -> None:
        self.paths = paths
        self.suite = suite
        self.address = free_address()
        self.name = f"sd{uuid.uuid4().hex[:6]}"
        args = ["build", "-t", f"debootstrap:{suite}", "--include", INCLUDE,
                "--hostname", f"{self.name}.test", "--ip", f"{self.address}/24"]  # fmt: skip
        for key, value in (values or {}).items():
            args += ["--set", f"{key}={value}"]
        built = vserver(paths, self.name, *args, timeout=1800)
        if built.returncode != 0:
            skip_if_unreachable(built.stderr)
        ok(built)
        self.tree = paths.guest_root(self.name)
        self.started = 0.0

    def __enter__(self) -> SystemdGuest:
        self.started = time.monotonic()
        ok(vserver(self.paths, self.name, "start", timeout=120))
        return self

    def __exit__(self, *exc: object) -> None:
        vserver(self.paths, self.name, "stop", timeout=120)

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return vserver(self.paths, self.name, "exec", "/bin/sh", "-c", script, timeout=timeout)

    def run(self, script: str, timeout: float = 60) -> str:
        return ok(self.sh(script, timeout))

    def log(self) -> str:
        return self.paths.log_file(self.name).read_text(errors="replace")

    def init_pid(self) -> int | None:
        ident = state.init_identity(self.paths, self.name)
        return ident[0] if ident else None

    def wait_booted(self, deadline: float = BOOT_DEADLINE) -> str:
        """``systemctl is-system-running --wait``: the state once the boot is over.

        Asked again while systemd is not up yet (right after a reboot its
        socket does not exist: "Failed to connect to bus").
        """
        while True:
            left = deadline - (time.monotonic() - self.started)
            assert left > 0, f"not booted within {deadline:.0f} s\n{self.log()[-3000:]}"
            done = self.sh(f"timeout {left:.0f} systemctl is-system-running --wait",
                           timeout=left + 30)  # fmt: skip
            if done.stdout.strip() in ("running", "degraded", "maintenance"):
                return done.stdout.strip()
            time.sleep(0.1)

    def failed_units(self) -> set[str]:
        out = self.run("systemctl list-units --failed --plain --no-legend --no-pager")
        return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture(params=SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    return request.param


def assert_running(g: SystemdGuest) -> None:
    status = g.wait_booted()
    failed = g.failed_units()
    assert failed <= FAILED_UNITS[g.suite], f"failed units: {failed}\n{g.log()[-3000:]}"
    assert status == ("running" if not failed else "degraded"), status


# -- boot --------------------------------------------------------------------------------------


def test_boots_to_running_with_its_services(vroot: Paths, suite: str) -> None:
    with SystemdGuest(vroot, suite) as g:
        assert_running(g)
        assert g.run("cat /proc/1/comm").strip() == "systemd"
        for service in SERVICES:
            assert g.run(f"systemctl is-active {service}").strip() == "active", service
        assert g.run("systemd-detect-virt").strip() in ("container-other", "vstui")
        assert g.run("echo $container; tr '\\0' '\\n' < /proc/1/environ | grep ^container=") \
            .split() == ["vstui", "container=vstui"]  # fmt: skip
        # the container interface: fresh tmpfs /run and /run/lock, the guest's own cgroup2 tree
        mounts = g.run("findmnt -rno TARGET,FSTYPE,OPTIONS")
        kinds = {line.split()[0]: line.split()[1:] for line in mounts.splitlines()}
        assert kinds["/run"][0] == "tmpfs" and kinds["/run/lock"][0] == "tmpfs"
        assert kinds["/sys/fs/cgroup"][0] == "cgroup2" and "rw" in kinds["/sys/fs/cgroup"][1]
        assert g.run("cat /proc/1/cgroup").splitlines()[-1] == "0::/init.scope"
        assert "nginx.service" in g.run("ls /sys/fs/cgroup/system.slice")
        # users and groups are the guest's own
        assert g.run("getent passwd www-data").startswith("www-data:x:33:33:")
        assert g.run("stat -c %U /var/log/journal 2>/dev/null || echo root").strip() == "root"
        assert g.run("journalctl -b --no-pager -q | wc -l").strip() != "0"


def test_nginx_and_sshd_with_a_pty_from_the_host(vroot: Paths, suite: str) -> None:
    with SystemdGuest(vroot, suite) as g:
        assert_running(g)
        conn = http.client.HTTPConnection(g.address, 80, timeout=10)
        conn.request("GET", "/")
        reply = conn.getresponse()
        assert reply.status == 200 and b"nginx" in reply.read()
        conn.close()

        assert wait_for_banner(g.address).startswith("SSH-2.0-OpenSSH")
        key = authorize_root_key(g, vroot.root)  # type: ignore[arg-type]
        command = "tty; loginctl list-sessions --no-legend --no-pager; exit 3"
        session = subprocess.run(
            [*ssh_argv(key, g.address, "-tt"), command],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert session.returncode == 3, f"{session.stdout}{session.stderr}"
        lines = session.stdout.replace("\r", "").splitlines()
        assert lines[0].startswith("/dev/pts/")
        assert any(" root " in f" {line} " for line in lines[1:])  # logind's session
        assert g.failed_units() <= FAILED_UNITS[suite]


# -- reboot and stop ---------------------------------------------------------------------------


def test_systemctl_reboot_brings_a_new_init(vroot: Paths, suite: str) -> None:
    with SystemdGuest(vroot, suite) as g:
        assert_running(g)
        first = g.init_pid()
        g.sh("systemctl reboot")
        deadline = time.monotonic() + BOOT_DEADLINE
        while g.init_pid() in (first, None) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert g.init_pid() not in (first, None), g.log()[-2000:]
        g.started = time.monotonic()
        assert_running(g)
        assert "rebooting" in g.log()


def test_stop_is_systemds_clean_shutdown(vroot: Paths, suite: str) -> None:
    g = SystemdGuest(vroot, suite)
    with g:
        assert_running(g)
        pid = g.init_pid()
        began = time.monotonic()
        ok(vserver(vroot, g.name, "stop", timeout=120))
        took = time.monotonic() - began
    log = g.log()
    shutdown = log[log.rindex(f"init pid {pid}") :]
    # systemd's own shutdown, on its console, then how init ended: halted, nothing killed
    assert re.search(r"Stopp(ed|ing) .*(nginx|OpenBSD Secure Shell|Regular background)", shutdown)
    assert "Reached target" in shutdown and "System Shutdown" in shutdown, shutdown[-2000:]
    assert "Halting system." in shutdown  # SIGRTMIN+3: systemd's halt, as nspawn asks for it
    assert "init halted" in shutdown and "killed" not in shutdown, shutdown[-800:]
    assert took < 10, f"stop took {took:.1f} s"
    assert vserver(vroot, g.name, "status").returncode == 3


def test_poweroff_inside_stops_the_guest(vroot: Paths) -> None:
    with SystemdGuest(vroot, "bookworm") as g:
        assert_running(g)
        pid = g.init_pid()
        g.sh("poweroff")
        deadline = time.monotonic() + 20
        while vserver(vroot, g.name, "running").returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert vserver(vroot, g.name, "running").returncode == 1
        assert pid is not None and not os.path.exists(f"/proc/{pid}")
        assert "init halted" in g.log()


# -- the console -------------------------------------------------------------------------------


def test_console_attaches_to_the_getty_and_detaches(vroot: Paths) -> None:
    with SystemdGuest(vroot, "trixie") as g:
        assert_running(g)
        # `script` gives the console a terminal, as an administrator's would be
        tool = f"{sys.executable} -m vstui.cli.vserver --root {vroot.root} {g.name} console"
        cmd = ["script", "-qfec", tool, "/dev/null"]
        console = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert console.stdin is not None and console.stdout is not None
            os.set_blocking(console.stdout.fileno(), False)
            seen = b""
            console.stdin.write(b"\r")
            console.stdin.flush()
            deadline = time.monotonic() + 20
            while b"login:" not in seen and time.monotonic() < deadline:
                time.sleep(0.1)
                seen += console.stdout.read() or b""
            assert b"login:" in seen, seen[-500:]
            console.stdin.write(b"\x01q")  # Ctrl-a q detaches, as in lxc-console
            console.stdin.flush()
            assert console.wait(timeout=10) == 0
        finally:
            if console.poll() is None:
                console.send_signal(signal.SIGKILL)
                console.wait()
        assert vserver(vroot, g.name, "running").returncode == 0
        assert "login:" in g.log()  # the console's output is in the log too
