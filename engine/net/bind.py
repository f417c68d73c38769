"""chbind: run one command so that it can use only some host addresses.

util-vserver's chbind put a process in a network context that shared the
host's stack but let it use only the context's addresses (its "ipv4root").
We get there with BPF programs on a private cgroup-v2 group that the command
and all its children run in, in two layers:

* the socket calls (``cgroup/sock_addr``): a bind to the wildcard becomes a
  bind to the first given address of that family (a dual-stack ``::`` bind
  with no IPv6 given lands on the first IPv4, v4-mapped), a bind to another
  address fails with EPERM; connect binds the socket to the first address
  first; a datagram from an unbound socket gets the first address as source;
* every packet (``cgroup_skb`` ingress and egress): what a socket of the
  group sends must come from a given address and what it receives must be
  addressed to one, or the kernel drops it. This is the guarantee: the
  kernel's implicit binds (listen() without bind(), the first send on an
  unbound UDP socket) and raw sockets call no sock_addr hook, and are held
  here.

The programs only ever hold the group's own sockets: the kernel finds them
through the cgroup a socket was made in, so chbind refuses to run a command
that would inherit a network socket (see inherited_socket) and takes away
pidfd_getfd, which copies one from another process.

The command also loses what could undo this: CAP_SYS_ADMIN, CAP_NET_ADMIN,
CAP_BPF, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_BOOT and,
unless asked, CAP_NET_RAW (raw and packet sockets); it runs in its own cgroup
and mount namespaces where no cgroup-v2 file system is reachable, so even
root cannot write itself into another group. See docs/network.md for what
root can still do.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import signal
import socket
import stat
from collections.abc import Sequence
from pathlib import Path

from engine.cgroups import unified
from engine.errors import KernelError, NetError
from engine.net import ebpf
from engine.net.ebpf import (
    Insn,
    add64_imm,
    assemble,
    call,
    jeq32,
    jne32,
    jump,
    load_dw,
    load_w,
    mov32_imm,
    mov64_imm,
    mov64_reg,
    store_imm,
    store_w,
    verdict,
    word,
)
from engine.paths import Paths
from engine.text import visible

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# struct bpf_sock_addr and struct bpf_sock field offsets (include/uapi/linux/bpf.h)
USER_IP4, USER_IP6, MSG_SRC_IP4, MSG_SRC_IP6, SOCK_ADDR_SK = 4, 8, 40, 44, 64
SK_SRC_IP4, SK_SRC_IP6 = 24, 28
SKB_PROTOCOL = 16  # struct __sk_buff
AF_INET, AF_INET6, AF_PACKET, AF_XDP = 2, 10, 17, 44
ETH_P_IP, ETH_P_IPV6 = word(b"\x08\x00\0\0", 0), word(b"\x86\xdd\0\0", 0)  # as loaded
V4_MAPPED = word(b"\0\0\xff\xff", 0)  # the third word of ::ffff:a.b.c.d
# IP header offsets of the source and destination address
V4_SRC, V4_DST, V6_SRC, V6_DST = 12, 16, 8, 24

# Capabilities that could undo the confinement: mounts, namespaces and setns
# (SYS_ADMIN), addresses, routes and program detach (NET_ADMIN, BPF), other
# processes (SYS_PTRACE), the kernel itself (SYS_MODULE, SYS_RAWIO, SYS_BOOT).
UNDOING_CAPS = frozenset({"SYS_ADMIN", "NET_ADMIN", "BPF", "SYS_PTRACE", "SYS_MODULE",
                          "SYS_RAWIO", "SYS_BOOT"})  # fmt: skip


def mapped(addr: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed)


def _words(addr: IPAddress) -> list[int]:
    return [word(addr.packed, i) for i in range(len(addr.packed) // 4)]


def _load(regs: list[int], base: int, field: int) -> list[Insn]:
    return [load_w(r, base, field + 4 * i) for i, r in enumerate(regs)]


def _store(regs: list[int], field: int, addr: IPAddress) -> list[Insn]:
    """ctx->field = addr, through the registers (the verifier wants stores from registers)."""
    out: list[Insn] = []
    for i, (r, value) in enumerate(zip(regs, _words(addr), strict=True)):
        out += [mov32_imm(r, value), store_w(1, r, field + 4 * i)]
    return out


def _match(regs: list[int], addrs: Sequence[IPAddress], label: str, tag: str) -> list[Insn | str]:
    """Jump to ``label`` when the registers hold one of ``addrs``."""
    out: list[Insn | str] = []
    for n, addr in enumerate(addrs):
        miss = f"{tag}{n}"
        out += [jne32(r, w, miss) for r, w in zip(regs, _words(addr), strict=True)]
        out += [jump(label), miss]
    return out


def _zero(regs: list[int], label: str) -> list[Insn]:
    """Fall through when every register is zero, else jump to ``label``."""
    return [jne32(r, 0, label) for r in regs]


def _regs(version: int) -> list[int]:
    return [2, 3, 4, 5] if version == 6 else [2]


def restrict_bind(field: int, addrs: Sequence[IPAddress], version: int) -> bytes:
    """bind: the wildcard becomes the first address; listed ones pass; others fail."""
    if not addrs:
        return assemble(verdict(False))
    regs = _regs(version)
    prog: list[Insn | str] = [*_load(regs, 1, field), *_zero(regs, "check")]
    prog += [*_store(regs, field, addrs[0]), jump("allow"), "check"]
    prog += [*_match(regs, addrs, "allow", "next"), *verdict(False), "allow", *verdict(True)]
    return assemble(prog)


def restrict_send(version: int, addrs: Sequence[IPAddress],
                  mapped_addrs: Sequence[IPAddress] = ()) -> bytes:  # fmt: skip
    """sendmsg: an explicit source must be listed; an unbound socket gets the first.

    A socket bound to an address (the bind program allowed it) keeps it. For
    IPv6, a datagram to a v4-mapped destination gets the first of
    ``mapped_addrs`` (the given IPv4 addresses, v4-mapped).
    """
    if not addrs and not mapped_addrs:
        return assemble(verdict(False))
    field = MSG_SRC_IP4 if version == 4 else MSG_SRC_IP6
    sk_field = SK_SRC_IP4 if version == 4 else SK_SRC_IP6
    regs = _regs(version)
    prog: list[Insn | str] = [*_load(regs, 1, field), *_zero(regs, "check")]
    prog += [load_dw(6, 1, SOCK_ADDR_SK), *_load(regs, 6, sk_field), *_zero(regs, "allow")]
    if mapped_addrs:
        prog += [*_load(regs, 1, USER_IP6), *_v4_mapped(regs, "native")]
        prog += [*_store(regs, field, mapped_addrs[0]), jump("allow"), "native"]
    prog += [*_store(regs, field, addrs[0]), jump("allow")] if addrs else verdict(False)
    prog += ["check", *_match(regs, [*addrs, *mapped_addrs], "allow", "next")]
    return assemble([*prog, *verdict(False), "allow", *verdict(True)])


def _v4_mapped(regs: list[int], otherwise: str) -> list[Insn]:
    """Fall through when the registers hold a ::ffff:a.b.c.d address."""
    return [jne32(regs[0], 0, otherwise), jne32(regs[1], 0, otherwise),
            jne32(regs[2], V4_MAPPED, otherwise)]  # fmt: skip


def _bpf_bind(addr: IPAddress) -> list[Insn]:
    """bpf_bind(ctx, &sockaddr, len) with ``addr`` and port 0 built on the stack."""
    if addr.version == 4:
        size, base = 16, -16  # struct sockaddr_in
        prog = [store_imm("dw", 10, -16, 0), store_imm("dw", 10, -8, 0)]
        prog += [store_imm("h", 10, -16, AF_INET), store_imm("w", 10, -12, word(addr.packed, 0))]
    else:
        size, base = 28, -32  # struct sockaddr_in6
        prog = [store_imm("dw", 10, off, 0) for off in (-32, -24, -16, -8)]
        prog += [store_imm("h", 10, -32, AF_INET6)]
        prog += [store_imm("w", 10, -24 + 4 * i, w) for i, w in enumerate(_words(addr))]
    return [*prog, mov64_reg(2, 10), add64_imm(2, base), mov64_imm(3, size), call(ebpf.FUNC_BIND)]


def connect_program(addrs: Sequence[IPAddress], mapped_first: IPAddress | None = None) -> bytes:
    """connect: bpf_bind() the socket to the first address (a bound one stays as is).

    For IPv6, a v4-mapped destination binds to ``mapped_first`` instead.
    """
    if not addrs and mapped_first is None:
        return assemble(verdict(False))
    prog: list[Insn | str] = []
    if mapped_first is not None:
        regs = _regs(6)
        prog += [*_load(regs, 1, USER_IP6), *_v4_mapped(regs, "native")]
        prog += [*_bpf_bind(mapped_first), jump("allow"), "native"]
    prog += [*_bpf_bind(addrs[0]), jump("allow")] if addrs else verdict(False)
    return assemble([*prog, "allow", *verdict(True)])


def packet_program(direction: str, v4: Sequence[IPAddress], v6: Sequence[IPAddress]) -> bytes:
    """cgroup_skb: pass a packet only if its address on our side is a given one.

    ``egress`` checks the source, ``ingress`` the destination; anything that
    is neither IPv4 nor IPv6, or too short to read, is dropped.
    """
    offsets = {"egress": (V4_SRC, V6_SRC), "ingress": (V4_DST, V6_DST)}[direction]
    prog: list[Insn | str] = [mov64_reg(6, 1), load_w(2, 6, SKB_PROTOCOL)]
    prog += [jeq32(2, ETH_P_IP, "v4"), jeq32(2, ETH_P_IPV6, "v6"), jump("drop")]
    for version, offset, addrs in ((4, offsets[0], v4), (6, offsets[1], v6)):
        size = 4 if version == 4 else 16
        prog += [f"v{version}", mov64_reg(1, 6), mov64_imm(2, offset), mov64_reg(3, 10),
                 add64_imm(3, -16), mov64_imm(4, size), call(ebpf.FUNC_SKB_LOAD_BYTES),
                 Insn(0x55, 0, 0, "drop", 0)]  # fmt: skip
        regs = _regs(version)
        prog += [load_w(r, 10, -16 + 4 * i) for i, r in enumerate(regs)]
        prog += [*_match(regs, addrs, "pass", f"miss{version}_"), jump("drop")]
    return assemble([*prog, "drop", *verdict(False), "pass", *verdict(True)])


def programs(addrs: Sequence[IPAddress]) -> dict[str, bytes]:
    """attach type -> program for a group limited to ``addrs``."""
    v4 = [a for a in addrs if a.version == 4]
    v6 = [a for a in addrs if a.version == 6]
    v4_mapped = [mapped(a) for a in v4]  # what a dual-stack socket uses for IPv4
    return {
        "bind4": restrict_bind(USER_IP4, v4, 4),
        "bind6": restrict_bind(USER_IP6, [*v6, *v4_mapped], 6),
        "sendmsg4": restrict_send(4, v4),
        "sendmsg6": restrict_send(6, v6, v4_mapped),
        "connect4": connect_program(v4),
        "connect6": connect_program(v6, v4_mapped[0] if v4 else None),
        "ingress": packet_program("ingress", v4, v6),
        "egress": packet_program("egress", v4, v6),
    }


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup or .../unified)."""
    mounts = unified.cgroup2_mounts()
    if not mounts:
        raise NetError("chbind needs a cgroup v2 hierarchy; mount one: "
                       "mount -t cgroup2 none /sys/fs/cgroup/unified")  # fmt: skip
    return mounts[0]


class BoundGroup:
    """A cgroup-v2 group whose members may use only ``addrs``; removed by close()."""

    def __init__(self, paths: Paths, addrs: Sequence[IPAddress]) -> None:
        cgroup2_mount()  # or the NetError naming the fix
        self.path = unified.make_group(f"{paths.cgroup_base}-chbind/{os.getpid()}")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for attach, code in programs(addrs).items():
                    prog = ebpf.load(code, attach)
                    try:
                        ebpf.attach(fd, prog, attach)
                    finally:
                        os.close(prog)  # the attachment holds its own reference
            finally:
                os.close(fd)
        except BaseException:
            self.close()
            raise

    def join(self, pid: int) -> None:
        unified.join_group(self.path, pid)

    def close(self) -> None:
        """Remove the group (and its programs); kept while a daemon still lives in it."""
        unified.remove_group(self.path)


# -- addresses the host owns ----------------------------------------------------------
def check_owned(wanted: Sequence[IPAddress]) -> dict[IPAddress, str]:
    """Map each wanted address to its host device, or refuse with the fix."""
    from engine.net.addrs import host_addresses

    owned = {ipaddress.ip_address(a.split("%")[0]): dev for a, dev in host_addresses().items()}
    found = {}
    for addr in wanted:
        if addr not in owned:
            raise NetError(
                f"{addr} is not an address of this host; add it first "
                f"(ip addr add {addr}/PREFIX dev DEV) or pick one of `ip -br addr`"
            )
        found[addr] = owned[addr]
    return found


def run_bound(paths: Paths, addrs: Sequence[IPAddress], argv: Sequence[str],
              raw: bool = False) -> int:  # fmt: skip
    """Fork, put the child in a group limited to ``addrs``, exec argv; its exit status.

    ``raw`` keeps CAP_NET_RAW (raw IP sockets, still held to the addresses
    by the packet programs); packet sockets stay refused either way.
    """
    group = BoundGroup(paths, addrs)
    try:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: wait until it is in the group, confine itself, exec
            os.close(ready_w)
            os.read(ready_r, 1)
            _exec_confined(argv, raw)
        os.close(ready_r)
        try:
            group.join(pid)
        except OSError as exc:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise KernelError.from_oserror("join cgroup", exc) from None
        finally:
            os.write(ready_w, b"x")
            os.close(ready_w)
        return _wait_forwarding_signals(pid)
    finally:
        group.close()


def _exec_confined(argv: Sequence[str], raw: bool) -> None:
    """In the forked child: give up what could undo the group, check, exec (never returns)."""
    try:
        confine_self(raw)
        refusal = what_could_undo(raw) or inherited_socket()
        if refusal:
            _say(f"refusing to run {argv[0]}: {refusal}")
            os._exit(126)
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        _say(f"{argv[0]}: {exc.strerror}")
        os._exit(127)
    except BaseException as exc:  # never return into the parent's code
        _say(str(exc))
        os._exit(126)


def _say(text: str) -> None:
    """One visible line on stderr: ``text`` may quote the command, which the caller chose."""
    os.write(2, f"chbind: {visible(text)}\n".encode(errors="surrogateescape"))


def confine_self(raw: bool) -> None:
    """Make this process (already in the group) unable to leave it, then drop the caps.

    Own cgroup namespace (its group is its "/") and own mount namespace, a
    slave of the host's (later host mounts still arrive), in which every
    cgroup-v2 mount point is covered by an empty read-only tmpfs: with
    CAP_SYS_ADMIN gone nothing can uncover or mount one again, and no
    cgroup.procs outside the group can be named. Without ``raw``, CAP_NET_RAW
    goes too; with it, a seccomp filter still refuses packet sockets (they
    bypass the IP layer the packet programs see) and io_uring (which makes
    sockets without the socket system call).
    """
    from engine import _libc, caps

    _libc.unshare(_libc.CLONE_NEWNS | _libc.CLONE_NEWCGROUP)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_SLAVE)
    hide = _libc.MS_RDONLY | _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC
    for mount_point in unified.cgroup2_mounts():
        _libc.mount("none", str(mount_point), "tmpfs", hide, "size=4k,mode=555")
    _refuse_foreign_sockets(raw)
    caps.drop_bounding_set(caps.all_caps() - UNDOING_CAPS - ({"NET_RAW"} if not raw else set()))


def _refuse_foreign_sockets(raw: bool) -> None:
    """seccomp: no pidfd_getfd (it copies another process's socket, made outside
    the group); with ``raw`` no packet sockets and no io_uring either."""
    from engine import seccomp

    refused = tuple(seccomp.Denial("socket", errno.EPERM, ((0, seccomp.LOW_WORD, family),))
                    for family in (AF_PACKET, AF_XDP)) if raw else ()  # fmt: skip
    calls = {"pidfd_getfd", "io_uring_setup"} if raw else {"pidfd_getfd"}
    seccomp.install_program(seccomp.denylist_program(frozenset(calls), refused))


def inherited_socket() -> str | None:
    """Why this process may not exec: a way to the network it would keep, or None.

    A socket belongs to the cgroup of the task that made it, recorded once
    at creation (net/core/sock.c sk_alloc -> cgroup_sk_alloc, which takes
    current's css_set in kernel/cgroup/cgroup.c), and the kernel runs the
    programs of that cgroup for it (__cgroup_bpf_run_filter_skb and
    __cgroup_bpf_run_filter_sock_addr read sock_cgroup_ptr(&sk->sk_cgrp_data)).
    A socket made before the fork, and passed down without close-on-exec, is
    not held by our group at all: it would listen and send on every address.
    So is a tun/tap descriptor (what it writes enters the host's stack as
    received from a device) and an io_uring instance (its registered files).
    Unix sockets carry no addresses and may pass.
    """
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                continue  # closed by the exec
            what = _network_way(fd)
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if what:
            return (f"it would inherit descriptor {fd}, {what} made outside the group, "
                    f"which no filter sees; close it first ({fd}<&-)")  # fmt: skip
    return None


TUN = os.makedev(10, 200)  # /dev/net/tun (Documentation/admin-guide/devices.txt)


def _network_way(fd: int) -> str | None:
    mode = os.fstat(fd)
    if stat.S_ISCHR(mode.st_mode) and mode.st_rdev == TUN:
        return "a tun/tap device"
    if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[io_uring]":
        return "an io_uring instance"
    if not stat.S_ISSOCK(mode.st_mode):
        return None
    family, where = _socket_family(fd)
    return None if family == socket.AF_UNIX else f"a {family.name} socket{where}"


def _socket_family(fd: int) -> tuple[socket.AddressFamily, str]:
    """The family of socket ``fd`` and ' on ADDR' where it is bound, fd left open."""
    probe = socket.socket(fileno=fd)
    try:
        try:
            where = f" on {probe.getsockname()}"
        except OSError:
            where = ""
        return probe.family, where
    finally:
        probe.detach()


def what_could_undo(raw: bool) -> str | None:
    """Why this process could still leave its group or its addresses, or None."""
    from engine import caps

    kept = caps.read_bounding_set() & (UNDOING_CAPS | (set() if raw else {"NET_RAW"}))
    if kept:
        return f"it would keep {caps.show(kept)}"
    if unified.own_group() != "/":
        return "its cgroup namespace is not rooted at its group"
    for mount_point in unified.cgroup2_mounts():
        if (mount_point / "cgroup.procs").exists():
            return f"the cgroup file system at {mount_point} is still reachable"
    return None


def _wait_forwarding_signals(pid: int) -> int:
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {s: signal.signal(s, lambda sig, _f: os.kill(pid, sig)) for s in forwarded}
    try:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return (
        os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else (128 + os.WTERMSIG(status))
    )
