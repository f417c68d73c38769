"""chbind inside a test namespace: a veth "uplink" with two addresses.

The namespace ``host`` plays the host (its up0 carries 198.18.12.1 and
198.18.12.2); ``client`` sits at the far end of up0. Nothing touches the
machine's real network.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from engine.net import bind
from tests.integration.test_net import PY, TOOL, Namespace

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
        for v6 in ("2001:2:12::1/64", "2001:2:12::2/64"):
            host.run("ip", "addr", "add", v6, "dev", "up0", "nodad")
        host.run("ip", "link", "set", "up0", "up")
        client.run("ip", "addr", "add", "198.18.12.9/24", "dev", "lan0")
        client.run("ip", "addr", "add", "2001:2:12::9/64", "dev", "lan0", "nodad")
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


# -- every socket of the command and its children stays on the given addresses ------------

# Runs under chbind: makes one socket the way the first argument says, prints
# its port, then reports every connection / datagram it gets until stdin closes.
PROBE = r"""
import os, select, socket, sys
kind = sys.argv[1]
if kind == "exec-child":  # a child that execs the real probe
    pid = os.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", sys.argv[2], *sys.argv[3:]])
    os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
if kind in ("listen4", "listen6", "bind6any"):
    s = socket.socket(socket.AF_INET if kind == "listen4" else socket.AF_INET6)
    if kind != "listen4":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    if kind == "bind6any":
        s.bind(("::", 0))
    s.listen(8)
else:  # udp4 / udp6: bound implicitly by the first sendto
    fam = socket.AF_INET if kind == "udp4" else socket.AF_INET6
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.sendto(b"hello", (sys.argv[2], int(sys.argv[3])))
print(s.getsockname()[1], flush=True)
while select.select([s, sys.stdin], [], [])[0] != [sys.stdin]:
    if s.type == socket.SOCK_STREAM:
        c, peer = s.accept(); print("got", c.getsockname()[0], flush=True); c.close()
    else:
        data, peer = s.recvfrom(100); print("got", data.decode(), flush=True)
"""

UDP_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
try:
    while True:
        data, peer = s.recvfrom(100); print(peer[0], flush=True)
except TimeoutError:
    pass
"""

TARGETS = ("127.0.0.1", "198.18.12.1", "198.18.12.2", "::1", "2001:2:12::1", "2001:2:12::2")


def knock(host: Namespace, proto: str, port: int, targets=TARGETS) -> None:
    """From the host namespace (outside the group), reach the port on every address."""
    code = r"""
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
for a in sys.argv[3:]:
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    if proto == "tcp":
        try:
            socket.create_connection((a, port), timeout=1.5).close()
        except OSError:
            pass
    else:
        socket.socket(fam, socket.SOCK_DGRAM).sendto(a.encode(), (a, port))
"""
    host.run(PY, "-c", code, proto, str(port), *targets)


def reached(vroot, host: Namespace, ips: list[str], kind: str, *args: str,
            extra: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """Addresses on which the socket a probe made under chbind was reached."""
    argv = chbind(vroot, host, "--silent", *[w for ip in ips for w in ("--ip", ip)], *extra,
                  PY, "-c", PROBE, kind, *args)  # fmt: skip
    probe = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None and probe.stdin is not None
        port = int(probe.stdout.readline())
        stream = {"listen4", "listen6", "bind6any"} & {kind, *args}
        proto = "tcp" if stream else "udp"
        knock(host, proto, port)
        probe.stdin.close()
        return sorted(line.split()[1] for line in probe.stdout if line.startswith("got"))
    finally:
        probe.kill()
        probe.wait()


def test_listen_without_bind_is_reached_only_on_the_given_address(vroot, lan):
    host, _ = lan
    assert reached(vroot, host, ["198.18.12.1"], "listen4") == ["198.18.12.1"]


def test_dual_stack_sockets_stay_on_the_given_addresses(vroot, lan):
    host, _ = lan
    both = ["198.18.12.1", "2001:2:12::1"]
    assert reached(vroot, host, both, "listen6") == ["2001:2:12::1", "::ffff:198.18.12.1"]
    assert reached(vroot, host, both, "bind6any") == ["2001:2:12::1"]
    # only IPv4 given: a dual-stack wildcard bind lands on the v4-mapped address
    assert reached(vroot, host, ["198.18.12.1"], "bind6any") == ["::ffff:198.18.12.1"]


def test_udp_bound_by_its_first_send_stays_on_the_given_address(vroot, lan):
    host, client = lan
    sink = subprocess.Popen(client.argv(PY, "-c", UDP_SINK, "198.18.12.9", "7100", "20"),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        got = reached(vroot, host, ["198.18.12.1"], "udp4", "198.18.12.9", "7100")
        assert got == ["198.18.12.1"]
        # the v6 socket sends to a v4-mapped address: it leaves from the given IPv4
        got = reached(vroot, host, ["198.18.12.1"], "udp6", "::ffff:198.18.12.9", "7100")
        assert got == ["198.18.12.1"]
        sink.kill()
        assert sink.stdout.read().split() == ["198.18.12.1", "198.18.12.1"]
    finally:
        sink.kill()
        sink.wait()


def test_a_child_after_exec_is_confined_too(vroot, lan):
    host, _ = lan
    assert reached(vroot, host, ["198.18.12.1"], "exec-child", PROBE, "listen4") == ["198.18.12.1"]


RAW = r"""
import errno, socket, struct, sys
def attempt(*args):
    try:
        socket.socket(*args).close(); return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
bnd = next(l for l in open("/proc/self/status") if l.startswith("CapBnd"))
print("NET_RAW" if int(bnd.split()[1], 16) & (1 << 13) else "-",
      attempt(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP),
      attempt(socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
      attempt(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP))
if len(sys.argv) > 1:  # forge UDP datagrams from each source with IP_HDRINCL
    def csum(b):
        s = sum(struct.unpack(f"!{len(b) // 2}H", b + b"\0" * (len(b) % 2)))
        s = (s >> 16) + (s & 0xFFFF); s += s >> 16
        return ~s & 0xFFFF
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst, port = sys.argv[1], int(sys.argv[2])
    for src in sys.argv[3:]:
        udp = struct.pack("!HHHH", 4000, port, 8 + 5, 0) + b"spoof"
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        try:
            r.sendto(ip + udp, (dst, 0))
        except OSError as e:
            print("send", src, errno.errorcode[e.errno])
"""


def test_raw_and_packet_sockets_are_refused_unless_asked(vroot, lan):
    host, client = lan
    argv = chbind(vroot, host, "--silent", "--ip", "198.18.12.1", PY, "-c", RAW)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["-", "EPERM", "EPERM", "EPERM"]
    sink = subprocess.Popen(client.argv(PY, "-c", UDP_SINK, "198.18.12.9", "7200", "3"),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        argv = chbind(vroot, host, "--silent", "--raw", "--ip", "198.18.12.1", PY, "-c", RAW,
                      "198.18.12.9", "7200", "198.18.12.2", "127.0.0.1", "198.18.12.1")  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        # raw IP sockets with --raw, packet sockets never; forged sources do not leave
        assert out.splitlines()[0].split() == ["NET_RAW", "ok", "EPERM", "ok"]
        assert sink.stdout.read().split() == ["198.18.12.1"]
    finally:
        sink.kill()
        sink.wait()


# Tries to move itself to the cgroup-v2 root, or to the parent of its own group
# (never anywhere else: other groups on this machine belong to others).
ESCAPE = r"""
import os, sys
moved = []
for line in open("/proc/self/mountinfo"):
    left, _, right = line.partition(" - ")
    if right.split()[0] == "cgroup2":
        for where in ("", sys.argv[1]):
            path = os.path.join(left.split()[4], where, "cgroup.procs")
            try:
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
                moved.append(path)
            except OSError:
                pass
print(os.getpid(), *moved, flush=True)
sys.stdin.read()
"""


def test_root_inside_cannot_move_out_of_the_group(vroot, lan):
    host, _ = lan
    argv = chbind(
        vroot,
        host,
        "--silent",
        "--ip",
        "198.18.12.1",
        PY,
        "-c",
        ESCAPE,
        f"{vroot.cgroup_base}-chbind",
    )
    probe = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None and probe.stdin is not None
        pid, *moved = probe.stdout.readline().split()
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        assert f"/{vroot.cgroup_base}-chbind/" in cgroup, (moved, cgroup)
        probe.stdin.close()
        assert probe.wait(timeout=10) == 0
    finally:
        probe.kill()
        probe.wait()


def test_a_command_that_could_leave_the_group_is_refused(vroot, lan):
    """The check before exec: here confine_self is skipped, so root keeps everything."""
    host, _ = lan
    code = (
        "import sys; from engine.net import bind; from engine.paths import Paths; "
        "bind.confine_self = lambda raw: None; "
        "sys.exit(bind.run_bound(Paths.from_root(sys.argv[1]), "
        "[bind.ipaddress.ip_address('198.18.12.1')], ['true']))"
    )
    done = subprocess.run(host.argv(PY, "-c", code, str(vroot.root)), capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 126
    assert done.stderr.startswith("chbind: refusing to run true: it would keep CAP_NET_ADMIN")
    assert "CAP_SYS_ADMIN" in done.stderr and "CAP_NET_RAW" in done.stderr


# -- sockets made outside the group (qa.md finding 1) ------------------------------------
# The holder makes a TCP listener on 0.0.0.0:PORT outside the group, prints
# its pid and descriptor and either execs chbind with the descriptor left
# open (inherit) or stays alive holding it (grab: the command takes it with
# pidfd_getfd). "accept" under chbind serves one connection on whatever it got.
HOLDER = r"""
import os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4)
print(os.getpid(), s.fileno(), flush=True)
if sys.argv[2] == "inherit":
    os.set_inheritable(s.fileno(), True)
    os.execvp(sys.argv[3], sys.argv[3:] + [str(s.fileno())])
time.sleep(30)
"""
TAKE = r"""
import ctypes, os, socket, sys
how, pid, fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if how == "grab":
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(438, os.pidfd_open(pid), fd, 0)  # pidfd_getfd
    if fd < 0:
        print("refused", ctypes.get_errno(), flush=True); sys.exit(0)
s = socket.socket(fileno=fd); s.settimeout(5)
print("serving", flush=True)
s.accept()[0].close(); print("accepted", flush=True)
"""


def chbind_cmd(vroot, *args: str) -> list[str]:
    """chbind's own argv, for a program already inside the host namespace to exec."""
    return [sys.executable, "-m", "vstui.cli.chbind", "--root", str(vroot.root), *args]


def test_an_inherited_socket_is_refused_not_run_unfiltered(vroot, lan):
    host, client = lan
    argv = chbind_cmd(vroot, "--silent", "--ip", "198.18.12.1", "--", sys.executable, "-c",
                      TAKE, "inherit", "0")  # fmt: skip
    holder = host.argv(sys.executable, "-c", HOLDER, "7100", "inherit", *argv)
    run = subprocess.Popen(holder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None and run.stderr is not None
        _, fd = run.stdout.readline().split()
        if run.stdout.readline().strip() == "serving":  # the hole: 198.18.12.2 reaches it
            client.run(sys.executable, "-c", CONNECT, "connect", "198.18.12.2", "7100")
        assert run.wait(timeout=30) == 126, run.stdout.read()
        error = run.stderr.read()
        assert f"it would inherit descriptor {fd}, a AF_INET socket on ('0.0.0.0', 7100)" in error
        assert f"close it first ({fd}<&-)" in error and len(error.splitlines()) == 1
    finally:
        run.kill()
        run.wait()
    # a Unix socket carries no address: it passes
    unix = (
        "import os, socket, sys\na, b = socket.socketpair()\n"
        "os.set_inheritable(a.fileno(), True)\nos.execvp(sys.argv[1], sys.argv[1:])"
    )
    done = subprocess.run(host.argv(sys.executable, "-c", unix, *chbind_cmd(
        vroot, "--silent", "--ip", "198.18.12.1", "--", "true")), capture_output=True, text=True,
        timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # a tun/tap descriptor: what it writes enters the host's stack from outside
    tun = (
        "import os, sys\nfd = os.open('/dev/net/tun', os.O_RDWR)\nos.set_inheritable(fd, True)\n"
        "print(fd, flush=True)\nos.execvp(sys.argv[1], sys.argv[1:])"
    )
    done = subprocess.run(host.argv(sys.executable, "-c", tun, *chbind_cmd(
        vroot, "--silent", "--ip", "198.18.12.1", "--", "true")), capture_output=True, text=True,
        timeout=30)  # fmt: skip
    fd = done.stdout.split()[0]
    assert done.returncode == 126, done.stderr
    assert f"it would inherit descriptor {fd}, a tun/tap device made outside" in done.stderr


def test_a_socket_of_another_process_cannot_be_taken(vroot, lan):
    host, client = lan
    # root with no capabilities left: a process chbind's command may otherwise trace
    holder = subprocess.Popen(host.argv("setpriv", "--bounding-set", "-all", sys.executable,
                                        "-c", HOLDER, "7101", "hold"),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None
        pid, fd = holder.stdout.readline().split()
        take = subprocess.Popen(chbind(vroot, host, "--silent", "--ip", "198.18.12.1", "--",
                                       sys.executable, "-c", TAKE, "grab", pid, fd),
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert take.stdout is not None
            first = take.stdout.readline().strip()
            if first == "serving":  # the hole: its accept answers on 198.18.12.2
                client.run(sys.executable, "-c", CONNECT, "connect", "198.18.12.2", "7101")
            assert first == f"refused {errno.EPERM}", take.stdout.read()
            assert take.wait(timeout=30) == 0  # and chbind removes its group
        finally:
            take.kill()
            take.wait()
    finally:
        holder.kill()
        holder.wait()
