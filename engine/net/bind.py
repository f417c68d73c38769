"""chbind: run one command so that it can use only some host addresses.

util-vserver's chbind put a process in a network context that shared the
host's stack but let it bind only to the context's addresses (its "ipv4root"):
a bind to 0.0.0.0 became a bind to the context's address. We do the same with
four tiny BPF programs on a private cgroup-v2 group that the command runs in:

* bind4/bind6: a bind to the wildcard address is rewritten to the first given
  address; a bind to a given address passes; any other bind fails (EPERM).
* connect4/connect6: the socket is bound to the first given address first,
  so outgoing connections leave from it.
* sendmsg4/sendmsg6 (UDP): the source becomes the first given address
  unless the program asked for a given one; others fail.

A family with no given address is refused entirely. Why not a network
namespace with an ipvlan slave: ipvlan is not built into every kernel (not
on the reference machine), macvlan cannot take traffic for an address the
host keeps (the host answers ARP first), and a namespace would steal every
packet for that address from the host's own services. See docs/network.md.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import platform
import signal
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import KernelError, NetError
from engine.paths import Paths

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
PROG_TYPE_CGROUP_SOCK_ADDR = 18
ATTACH = {"bind4": 8, "bind6": 9, "connect4": 10, "connect6": 11, "sendmsg4": 14,
          "sendmsg6": 15}  # fmt: skip
BPF_FUNC_BIND = 64
# struct bpf_sock_addr field offsets (include/uapi/linux/bpf.h)
USER_IP4, USER_IP6, MSG_SRC_IP4, MSG_SRC_IP6 = 4, 8, 40, 44
AF_INET, AF_INET6 = 2, 10


# -- a minimal eBPF assembler -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int | str = 0  # a label name for jumps, resolved by assemble()
    imm: int = 0


def _u32(packed: bytes, word: int) -> int:
    """The 32-bit word of an address as a BPF load sees it (memory order), signed."""
    (value,) = struct.unpack("<i", packed[4 * word : 4 * word + 4])
    return value


def load_w(dst: int, src: int, off: int) -> Insn:
    return Insn(0x61, dst, src, off)


def store_w(dst: int, src: int, off: int) -> Insn:
    return Insn(0x63, dst, src, off)


def store_imm(size: str, dst: int, off: int, imm: int) -> Insn:
    return Insn({"w": 0x62, "h": 0x6A, "dw": 0x7A}[size], dst, 0, off, imm)


def mov32_imm(dst: int, imm: int) -> Insn:
    return Insn(0xB4, dst, 0, 0, imm)


def mov64_imm(dst: int, imm: int) -> Insn:
    return Insn(0xB7, dst, 0, 0, imm)


def mov64_reg(dst: int, src: int) -> Insn:
    return Insn(0xBF, dst, src)


def add64_imm(dst: int, imm: int) -> Insn:
    return Insn(0x07, dst, 0, 0, imm)


def jeq32(dst: int, imm: int, label: str) -> Insn:
    return Insn(0x16, dst, 0, label, imm)


def jne32(dst: int, imm: int, label: str) -> Insn:
    return Insn(0x56, dst, 0, label, imm)


def jump(label: str) -> Insn:
    return Insn(0x05, 0, 0, label)


def call(func: int) -> Insn:
    return Insn(0x85, 0, 0, 0, func)


EXIT = Insn(0x95)


def assemble(program: Sequence[Insn | str]) -> bytes:
    """Instructions and label strings -> bytecode, jumps resolved to offsets."""
    labels: dict[str, int] = {}
    insns: list[Insn] = []
    for item in program:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    out = bytearray()
    for pc, insn in enumerate(insns):
        off = labels[insn.off] - pc - 1 if isinstance(insn.off, str) else insn.off
        out += struct.pack("<BBhi", insn.code, (insn.src << 4) | insn.dst, off, insn.imm)
    return bytes(out)


def _verdict(allow: bool) -> list[Insn]:
    return [mov64_imm(0, 1 if allow else 0), EXIT]


def restrict_program(field: int, addrs: Sequence[IPAddress]) -> bytes:
    """bind/sendmsg: wildcard -> first address; listed -> pass; else refuse.

    ``field`` is the ctx offset of the address (user_ip* or msg_src_ip*).
    """
    if not addrs:
        return assemble(_verdict(False))
    words = len(addrs[0].packed) // 4
    regs = list(range(2, 2 + words))  # r2..r5 hold the address words
    prog: list[Insn | str] = [load_w(r, 1, field + 4 * i) for i, r in enumerate(regs)]
    prog += [jne32(r, 0, "check") for r in regs]
    first = addrs[0].packed
    for i, r in enumerate(regs):
        prog += [mov32_imm(r, _u32(first, i)), store_w(1, r, field + 4 * i)]
    prog += [jump("allow"), "check"]
    for n, addr in enumerate(addrs):
        prog += [jne32(r, _u32(addr.packed, i), f"next{n}") for i, r in enumerate(regs)]
        prog += [jump("allow"), f"next{n}"]
    prog += [*_verdict(False), "allow", *_verdict(True)]
    return assemble(prog)


def connect_program(addrs: Sequence[IPAddress]) -> bytes:
    """connect: bpf_bind() the socket to the first address (a bound one stays as is)."""
    if not addrs:
        return assemble(_verdict(False))
    addr = addrs[0]
    if addr.version == 4:
        size, base = 16, -16  # struct sockaddr_in on the stack
        prog = [store_imm("dw", 10, -16, 0), store_imm("dw", 10, -8, 0)]
        prog += [store_imm("h", 10, -16, AF_INET), store_imm("w", 10, -12, _u32(addr.packed, 0))]
    else:
        size, base = 28, -32  # struct sockaddr_in6
        prog = [store_imm("dw", 10, off, 0) for off in (-32, -24, -16, -8)]
        prog += [store_imm("h", 10, -32, AF_INET6)]
        prog += [store_imm("w", 10, -24 + 4 * i, _u32(addr.packed, i)) for i in range(4)]
    prog += [mov64_reg(2, 10), add64_imm(2, base), mov64_imm(3, size), call(BPF_FUNC_BIND)]
    return assemble([*prog, *_verdict(True)])


# -- bpf(2) and the cgroup ----------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, 128)
    result = _libc.syscall(_SYS_BPF, cmd, buf, ctypes.c_uint(128))
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


def load_program(code: bytes, attach: str) -> int:
    """BPF_PROG_LOAD of a cgroup/sock_addr program; returns its fd (close-on-exec)."""
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = struct.pack(
        "<IIQQIIQII16sII", PROG_TYPE_CGROUP_SOCK_ADDR, len(code) // 8,
        ctypes.addressof(insns), ctypes.addressof(license), 1, len(log), ctypes.addressof(log),
        0, 0, f"vs_{attach}".encode(), 0, ATTACH[attach],
    )  # fmt: skip
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        detail = log.value.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise NetError(f"chbind: the kernel refused the {attach} program: {exc.strerror} "
                       f"{detail[0]}".strip()) from None  # fmt: skip


def attach_program(cgroup_fd: int, prog_fd: int, attach: str) -> None:
    _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", cgroup_fd, prog_fd, ATTACH[attach], 0))


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup or .../unified)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return Path(left.split()[4])
    raise NetError("chbind needs a cgroup v2 hierarchy; mount one: "
                   "mount -t cgroup2 none /sys/fs/cgroup/unified")  # fmt: skip


def programs(addrs: Sequence[IPAddress]) -> dict[str, bytes]:
    v4 = [a for a in addrs if a.version == 4]
    v6 = [a for a in addrs if a.version == 6]
    return {
        "bind4": restrict_program(USER_IP4, v4),
        "bind6": restrict_program(USER_IP6, v6),
        "sendmsg4": restrict_program(MSG_SRC_IP4, v4),
        "sendmsg6": restrict_program(MSG_SRC_IP6, v6),
        "connect4": connect_program(v4),
        "connect6": connect_program(v6),
    }


class BoundGroup:
    """A cgroup-v2 group whose members may use only ``addrs``; removed by close()."""

    def __init__(self, paths: Paths, addrs: Sequence[IPAddress]) -> None:
        self.base = cgroup2_mount() / f"{paths.cgroup_base}-chbind"
        self.path = self.base / str(os.getpid())
        self.base.mkdir(exist_ok=True)
        self.path.mkdir()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for attach, code in programs(addrs).items():
                    prog = load_program(code, attach)
                    try:
                        attach_program(fd, prog, attach)
                    finally:
                        os.close(prog)  # the attachment holds its own reference
            finally:
                os.close(fd)
        except BaseException:
            self.close()
            raise

    def join(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        """Remove the group (and its programs); kept while a daemon still lives in it."""
        for directory in (self.path, self.base):
            try:
                directory.rmdir()
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
                    raise


# -- addresses the host owns ----------------------------------------------------------
def host_addresses() -> dict[str, str]:
    """Every address of this network namespace -> the device that carries it."""
    from engine.net import nl

    with nl.host() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return {a.get_attr("IFA_ADDRESS"): names.get(a["index"], "?")
                for a in ipr.get_addr()}  # fmt: skip


def check_owned(wanted: Sequence[IPAddress]) -> dict[IPAddress, str]:
    """Map each wanted address to its host device, or refuse with the fix."""
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


def run_bound(paths: Paths, addrs: Sequence[IPAddress], argv: Sequence[str]) -> int:
    """Fork, put the child in a group limited to ``addrs``, exec argv; its exit status."""
    group = BoundGroup(paths, addrs)
    try:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: wait until it is in the group, then exec
            os.close(ready_w)
            os.read(ready_r, 1)
            try:
                os.execvp(argv[0], list(argv))
            except OSError as exc:
                os.write(2, f"chbind: {argv[0]}: {exc.strerror}\n".encode())
                os._exit(127)
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
