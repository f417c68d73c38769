"""chbind inside a test namespace: a veth "uplink" with two addresses.

The namespace ``host`` plays the host (its up0 carries 198.18.12.1 and
198.18.12.2); ``client`` sits at the far end of up0. Nothing touches the
machine's real network.
"""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from engine.net import bind
from tests.integration.test_net import TOOL, Namespace

pytestmark = pytest.mark.root

CONNECT = (
    TOOL
    + r"""
if cmd == "connect":
    try:
        socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5).close(); print(0)
    except OSError as e:
        print(e.errno)
"""
)


@pytest.fixture
def lan(vroot):
    host, client = Namespace(), Namespace()
    try:
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "lan0",
                 "netns", str(client.pid))  # fmt: skip
        host.run("ip", "addr", "add", "198.18.12.1/24", "dev", "up0")
        host.run("ip", "addr", "add", "198.18.12.2/24", "dev", "up0")
        host.run("ip", "link", "set", "up0", "up")
        client.run("ip", "addr", "add", "198.18.12.9/24", "dev", "lan0")
        client.run("ip", "link", "set", "lan0", "up")
        yield host, client
    finally:
        host.close()
        client.close()


def chbind(vroot, host: Namespace, *args: str) -> list[str]:
    return host.argv(sys.executable, "-m", "vstui.cli.chbind", "--root", str(vroot.root), *args)


def test_server_under_chbind_is_reachable_only_on_its_address(vroot, lan):
    host, client = lan
    server = subprocess.Popen(
        chbind(vroot, host, "--ip", "198.18.12.1", "--", sys.executable, "-c", TOOL,
               "serve", "0.0.0.0", "5050", "10"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ipv4root is now 198.18.12.1"
        assert server.stdout.readline().strip() == "ready"
        assert client.run(
            sys.executable, "-c", CONNECT, "connect", "198.18.12.2", "5050"
        ).strip() == (str(errno.ECONNREFUSED))
        sent = client.tool("send", "198.18.12.1", "5050", "1000", "5")
        assert '"sent": 1000' in sent
        assert '"peer": "198.18.12.9"' in server.stdout.readline()
        assert server.wait(timeout=10) == 0
    finally:
        server.kill()
        server.wait()
    assert not (bind.cgroup2_mount() / f"{vroot.cgroup_base}-chbind").exists()


def test_chbind_restricts_binds_and_sources(vroot, lan):
    host, client = lan
    probe = r"""
import socket
out = []
for a in ("0.0.0.0", "198.18.12.1", "198.18.12.2", "127.0.0.1"):
    s = socket.socket()
    try:
        s.bind((a, 0)); out.append(s.getsockname()[0])
    except OSError as e:
        out.append(str(e.errno))
c = socket.create_connection(("198.18.12.9", 5051)); out.append(c.getsockname()[0])
print(" ".join(out))
"""
    serve = client.argv(sys.executable, "-c", TOOL, "serve", "198.18.12.9", "5051", "0")
    server = subprocess.Popen(serve, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        argv = chbind(vroot, host, "--silent", "--ip", "198.18.12.1", sys.executable, "-c", probe)
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        eperm = str(errno.EPERM)
        assert out.stdout.split() == ["198.18.12.1", "198.18.12.1", eperm, eperm, "198.18.12.1"]
        assert '"peer": "198.18.12.1"' in server.stdout.readline()
    finally:
        server.kill()
        server.wait()


def test_chbind_refuses_an_address_the_host_does_not_have(vroot, lan):
    host, _ = lan
    done = subprocess.run(chbind(vroot, host, "--ip", "198.18.12.77", "true"),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("chbind: 198.18.12.77 is not an address of this host")
    assert done.stdout == ""
