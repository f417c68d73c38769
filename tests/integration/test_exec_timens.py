"""``vserver NAME exec|suexec`` run in the guest's time namespace.

A guest's monotonic and boot clocks start at zero (start.py's time
namespace); a command run through exec must see those clocks too: its
/proc/uptime is the guest's small uptime, not the host's.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from engine.paths import Paths
from tests.integration.test_runtime import Guest, ok, vserver

pytestmark = pytest.mark.root
HAVE_TIMENS = os.path.exists("/proc/self/ns/time")
CLONE_NEWTIME = 0x00000080


def vserver_command(paths: Paths, *args: str) -> list[str]:
    return [sys.executable, "-m", "vstui.cli.vserver", "--root", str(paths.root), *args]


def host_uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def guest_clock_offset(g: Guest) -> float:
    """How far the guest's boot clock is behind the host's, in seconds."""
    ident = g.init_pid
    assert ident is not None
    with open(f"/proc/{ident}/timens_offsets") as f:
        offsets = {line.split()[0]: int(line.split()[1]) for line in f}
    return -float(offsets["boottime"])


@pytest.mark.skipif(not HAVE_TIMENS, reason="kernel without time namespaces")
def test_exec_and_suexec_see_the_guests_uptime(vroot: Paths) -> None:
    with Guest(vroot) as g:
        offset = guest_clock_offset(g)
        if offset == 0:
            pytest.skip("the guest's boot clock is the host's (host up for less than 1 s)")
        up_exec = float(ok(g.sh("cat /proc/uptime")).split()[0])
        # suexec takes the other path: Python joins ipc/uts/net/mnt itself first
        out = ok(vserver(vroot, g.name, "suexec", "nobody", "cat", "/proc/uptime"))
        up_suexec = float(out.split()[0])
        ups = [up_exec, up_suexec]
        if shutil.which("script"):  # a terminal on stdin: the pty relay path
            cmd = vserver_command(vroot, g.name, "exec", "cat", "/proc/uptime")
            res = subprocess.run(["script", "-qec", shlex.join(cmd), "/dev/null"],
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
            found = re.search(r"(\d+\.\d+) \d+\.\d+", ok(res))  # the pty may echo ^@ first
            assert found, res.stdout
            ups.append(float(found.group(1)))
        host = host_uptime()
        for up in ups:
            # the guest's clock: the host's minus the offset, never the host's own
            assert 0 <= up <= host - offset + 1.0
            assert up < host
        # the very namespace of the guest's init, not just a similar clock
        same = ok(g.sh("readlink /proc/self/ns/time /proc/1/ns/time")).split()
        assert len(same) == 2 and same[0] == same[1]
        assert same[0] != os.readlink("/proc/self/ns/time")
