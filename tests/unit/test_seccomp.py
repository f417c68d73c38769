"""The guest seccomp filter, on the real kernel.

Every probe runs in a forked child that installs the filter and reports back
over a pipe: the test process itself is never filtered. As root the child
installs the filter with CAP_SYS_ADMIN, as the runtime does (no
no_new_privs); as another user it sets no_new_privs first, which the kernel
requires then.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import mmap
import os
import shutil
import signal
import socket
import subprocess
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import engine.seccomp as sc
from engine import _libc
from engine.config import GuestConfig
from engine.errors import ConfigError
from engine.seccomp import bpf, families, syscalls

pytestmark = pytest.mark.skipif(
    syscalls.native_arch() not in syscalls.AUDIT_ARCH, reason="no filter for this arch"
)

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
ROOT = os.geteuid() == 0
NATIVE = syscalls.AUDIT_ARCH[syscalls.native_arch()]
ENOSYS = bpf.errno_action(errno.ENOSYS)
EPERM = bpf.errno_action(errno.EPERM)


class _Numbers(dict):
    """name -> this machine's number, resolved on first use."""

    def __missing__(self, name: str) -> int:
        nr = syscalls.number(name)
        if nr is None:
            raise KeyError(name)
        self[name] = nr
        return nr

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and syscalls.number(name) is not None


NR = _Numbers()


def guest(
    flags: tuple[str, ...] = (), seccomp: tuple[str, ...] = (), name: str = "probe"
) -> GuestConfig:
    return GuestConfig(name=name, flags=frozenset(flags), seccomp=seccomp,
                       path=Path(f"/etc/vserver/{name}.conf"))  # fmt: skip


DEFAULT = guest()
LOCKED = guest(flags=("lock",))


def call(name: str, *args: int) -> int:
    """Raw syscall by name: 0 or a result, or -errno."""
    ctypes.set_errno(0)
    result = LIBC.syscall(NR[name], *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if result == -1 else result


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(cfg: GuestConfig) -> None:
    """Load cfg's program into this process, as vboot and vexec do."""
    if not ROOT:
        _libc.prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    program = sc.build_filter(cfg)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _libc.prctl(22, 2, ctypes.addressof(prog))  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def in_child(probe: Callable[[], Any], cfg: GuestConfig | None = DEFAULT) -> Any:
    """Run ``probe`` in a child (filtered by ``cfg`` unless None); its JSON result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_end)
        try:
            if cfg is not None:
                install(cfg)
            payload = {"ok": probe()}
        except BaseException as exc:
            payload = {"error": repr(exc)}
        os.write(write_end, json.dumps(payload).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"probe child died: status {status:#x}"
    result = json.loads(data)
    assert "error" not in result, result["error"]
    return result["ok"]


def seccomp_mode() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return -1


# Harmless arguments: each call fails in the kernel (EFAULT, EBADF, EINVAL...)
# if the filter lets it through, so a broken filter cannot damage the host.
DENIED_PROBES: dict[str, tuple[int, ...]] = {
    "add_key": (0, 0, 0, 0, 0),
    "keyctl": (-1, 0, 0, 0, 0),
    "request_key": (0, 0, 0, 0),
    "userfaultfd": (-1,),
    "kexec_load": (0, 0, 0, 0xFFFF0000),
    "kexec_file_load": (-1, -1, 0, 0, 0xFFFF0000),
    "init_module": (0, 0, 0),
    "finit_module": (-1, 0, 0),
    "delete_module": (0, 0),
    "bpf": (-1, 0, 0),
    "perf_event_open": (0, 0, -1, -1, 0),
    "open_by_handle_at": (-1, 0, 0),
    "name_to_handle_at": (-1, 0, 0, 0, 0),
    "io_uring_setup": (0, 0),
    "io_uring_enter": (-1, 0, 0, 0, 0, 0),
    "io_uring_register": (-1, 0, 0, 0),
    "swapon": (0, 0),
    "swapoff": (0,),
    "acct": (1,),  # a bad pointer: EFAULT, never "accounting off"
    "iopl": (99,),
    "ioperm": (0, 0, 0),
    "lookup_dcookie": (0, 0, 0),
    "syslog": (99, 0, 0),  # no such action: EINVAL
    "fsopen": (0, 0),
    "fsconfig": (-1, 0, 0, 0, 0),
    "fsmount": (-1, 0, 0),
    "fspick": (-1, 0, 0),
    "move_mount": (-1, 0, -1, 0, 0),
    "open_tree": (-1, 0, 0),
    "open_tree_attr": (-1, 0, 0, 0, 0),
    "mount_setattr": (-1, 0, 0, 0, 0),
}


def test_probe_list_covers_default_denylist() -> None:
    assert set(DENIED_PROBES) == set(sc.DEFAULT_DENY)


def test_each_denied_call_fails_eperm_only_under_the_filter() -> None:
    probes = {name: args for name, args in DENIED_PROBES.items() if name in NR}

    def run_all() -> dict[str, int]:
        return {name: call(name, *args) for name, args in probes.items()}

    before = in_child(run_all, cfg=None)
    after = in_child(run_all)
    assert after == {name: -errno.EPERM for name in probes}
    if ROOT:  # without the filter root gets the kernel's own answer, not EPERM
        assert [n for n, r in before.items() if r == -errno.EPERM] == []


def test_filter_is_active_and_inherited_across_exec() -> None:
    def probe() -> list[str]:
        out = subprocess.run(
            ["/bin/sh", "-c", "grep Seccomp: /proc/self/status"],
            capture_output=True,
            text=True,
            check=True,
        )
        return [str(seccomp_mode()), out.stdout.split()[1]]

    assert in_child(probe) == ["2", "2"]
    assert in_child(lambda: seccomp_mode(), cfg=None) == 0


def test_basics_still_work() -> None:
    def probe() -> dict[str, Any]:
        with open("/etc/hostname", "rb") as f:
            f.read()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        sockets = []
        for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK):
            with socket.socket(family, socket.SOCK_DGRAM):
                sockets.append(int(family))
        true = subprocess.run(["/bin/true"]).returncode
        return {"fork": os.waitstatus_to_exitcode(status), "sockets": sockets, "true": true}

    assert in_child(probe) == {
        "fork": 7,
        "sockets": [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK],
        "true": 0,
    }


def test_guest_like_programs_run() -> None:
    commands = [
        ["/usr/bin/python3", "-c", "import os, subprocess, threading; print('py')"],
        ["/usr/bin/apt-get", "--version"],
        ["/bin/sh", "-c", "echo a | cat; (sleep 0 &); wait; echo sh"],
    ]

    def probe() -> list[int]:
        return [subprocess.run(c, capture_output=True).returncode for c in commands]

    assert in_child(probe) == [0] * len(commands)


def test_setuid_programs_still_switch_uid_under_filter(tmp_path: Path) -> None:
    # no no_new_privs: a setuid program (su, passwd, ping) still changes its
    # uid under the filter. A setuid-nobody copy of `id` shows it without
    # running the host's PAM stack (whose session modules make host cgroups).
    if not ROOT:
        pytest.skip("making a setuid file owned by nobody needs root")
    setuid_id = tmp_path / "id"
    shutil.copy2("/usr/bin/id", setuid_id)
    tmp_path.chmod(0o755)
    os.chown(setuid_id, 65534, 65534)
    setuid_id.chmod(0o4755)

    def probe() -> str:
        cmd = [str(setuid_id), "-u"]
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()

    assert in_child(probe) == str(65534)
    assert in_child(probe, cfg=None) == str(65534)


def _family(domain: int) -> int:
    return call("socket", domain, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC, 0)


def test_af_alg_and_af_vsock_refused() -> None:
    def probe() -> list[int]:
        # high word set: the kernel truncates the domain to int, so must the filter
        sneaky = call("socket", (1 << 32) | sc.AF_ALG, socket.SOCK_SEQPACKET, 0)
        return [_family(sc.AF_ALG), _family(sc.AF_VSOCK), sneaky]

    assert in_child(probe) == [-errno.EPERM] * 3
    unfiltered = in_child(lambda: [_family(sc.AF_ALG), _family(sc.AF_VSOCK)], cfg=None)
    assert -errno.EPERM not in unfiltered


def _netlink(protocol: int) -> int:
    fd = call("socket", sc.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    if fd >= 0:
        os.close(fd)
        return 0
    return fd


def test_audit_netlink_looks_absent_but_other_netlink_works() -> None:
    # sshd treats EPROTONOSUPPORT from the audit socket as "no audit in this
    # kernel" and lets a terminal login through; with EPERM it would kill it
    route = 0  # NETLINK_ROUTE
    assert in_child(lambda: [_netlink(sc.NETLINK_AUDIT), _netlink(route)]) == [
        -errno.EPROTONOSUPPORT,
        0,
    ]
    assert in_child(lambda: _netlink(sc.NETLINK_AUDIT), cfg=None) == 0


def test_audit_write_cap_keeps_the_audit_socket() -> None:
    class WithAudit:
        name, flags, seccomp, path = "audit", frozenset(), (), None

        def has_flag(self, flag: str) -> bool:
            return False

        def effective_caps(self) -> frozenset[str]:
            return frozenset({"AUDIT_WRITE"})

    args = (sc.AF_NETLINK, socket.SOCK_RAW, sc.NETLINK_AUDIT)
    plain = bpf.unpack(sc.build_filter(DEFAULT))
    granted = bpf.unpack(sc.build_filter(WithAudit()))
    assert bpf.run(plain, NR["socket"], NATIVE, args) == bpf.errno_action(errno.EPROTONOSUPPORT)
    assert bpf.run(granted, NR["socket"], NATIVE, args) == bpf.SECCOMP_RET_ALLOW
    # the other socket rules still hold beside the nested one
    for prog in (plain, granted):
        assert bpf.run(prog, NR["socket"], NATIVE, (sc.AF_ALG, 5, 0)) == EPERM


def _clone(flags: int) -> int:
    """clone(2) with ``flags``; a child that appears exits at once."""
    result = call("clone", flags | signal.SIGCHLD, 0, 0, 0, 0)
    if result == 0:  # pragma: no cover - in the new child
        os._exit(0)
    if result > 0:
        os.waitpid(result, 0)
        return 0
    return result


def test_default_refuses_new_user_namespaces_and_clone3() -> None:
    def probe() -> dict[str, int]:
        return {
            "unshare_user": call("unshare", _libc.CLONE_NEWUSER),
            "clone_user": _clone(_libc.CLONE_NEWUSER),
            "clone3": call("clone3", 0, 0),
            "setns": call("setns", -1, 0),
            "plain_clone": _clone(0),
        }

    assert in_child(probe) == {
        "unshare_user": -errno.EPERM,
        "clone_user": -errno.EPERM,
        "clone3": -errno.ENOSYS,
        "setns": -errno.EBADF,  # allowed: the kernel answers
        "plain_clone": 0,
    }


def test_lock_refuses_namespaces() -> None:
    def probe() -> dict[str, int]:
        return {
            "unshare_ns": call("unshare", _libc.CLONE_NEWNS),
            "unshare_files": call("unshare", 0x400),  # CLONE_FILES: unshare itself is refused
            "clone_user": _clone(_libc.CLONE_NEWUSER),
            "clone_net": _clone(_libc.CLONE_NEWNET),
            "setns": call("setns", -1, 0),
            "clone3": call("clone3", 0, 0),
            "fork": _clone(0),
        }

    result = in_child(probe, LOCKED)
    assert result == {
        "unshare_ns": -errno.EPERM,
        "unshare_files": -errno.EPERM,
        "clone_user": -errno.EPERM,
        "clone_net": -errno.EPERM,
        "setns": -errno.EPERM,
        "clone3": -errno.ENOSYS,
        "fork": 0,
    }
    if ROOT:  # without lock root may make a mount namespace (caps decide)
        assert in_child(lambda: call("unshare", _libc.CLONE_NEWNS)) == 0


def test_terminal_injection_ioctls_refused() -> None:
    # TIOCSTI on a pty we own: unfiltered the kernel accepts it, filtered EPERM
    def probe() -> list[int]:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # closing our controlling tty
        leader, follower = os.openpty()
        try:
            os.setsid()
            fcntl.ioctl(follower, termios.TIOCSCTTY, 0)
            char = ctypes.c_char(b"\n")  # a whole line: canonical mode counts it
            sti = LIBC.ioctl(follower, sc.TIOCSTI, ctypes.byref(char))
            sti_errno = ctypes.get_errno() if sti < 0 else 0
            queued = ctypes.c_int()
            LIBC.ioctl(follower, termios.FIONREAD, ctypes.byref(queued))
            return [-sti_errno, queued.value]
        finally:
            os.close(leader)
            os.close(follower)

    assert in_child(probe) == [-errno.EPERM, 0]
    assert in_child(probe, cfg=None) == [0, 1]  # the newline waits in the input queue


def test_reboot_stays_allowed() -> None:
    # reboot(2) with a wrong magic: the kernel says EINVAL (or EPERM without
    # CAP_SYS_BOOT), never the filter. Compared with the unfiltered answer.
    def probe() -> int:
        return call("reboot", 0, 0, 0, 0)

    assert in_child(probe) == in_child(probe, cfg=None)


def test_v_seccomp_allow_and_deny() -> None:
    cfg = guest(seccomp=("+perf_event_open", "+clone3", "-uname", "+socket"))

    def probe() -> dict[str, int]:
        try:
            os.uname()
            uname = 0
        except OSError as exc:
            uname = -(exc.errno or 0)
        return {
            "perf": call("perf_event_open", 0, 0, -1, -1, 0),
            "clone3": call("clone3", 0, 0),
            "uname": uname,
            "alg": _family(sc.AF_ALG),
            "keyctl": call("keyctl", -1, 0, 0, 0, 0),
        }

    result = in_child(probe, cfg)
    assert result["perf"] == -errno.EFAULT  # the kernel read the NULL attr
    assert result["clone3"] == -errno.EINVAL  # size 0: the kernel, not ENOSYS
    assert result["uname"] == -errno.EPERM
    assert result["alg"] != -errno.EPERM
    assert result["keyctl"] == -errno.EPERM  # the rest of the default holds


def test_v_seccomp_later_word_wins() -> None:
    cfg = guest(seccomp=("-getppid", "+getppid", "keyctl", "+keyctl"))
    policy = sc.policy(cfg)
    assert "getppid" not in policy.deny
    assert "keyctl" not in policy.deny


@pytest.mark.parametrize("word", ["+no_such_call", "frobnicate", "-", "+"])
def test_unknown_or_empty_name_is_a_config_error(word: str) -> None:
    cfg = guest(name="web", seccomp=("keyctl", word))
    with pytest.raises(ConfigError) as info:
        sc.build_filter(cfg)
    text = str(info.value)
    assert "V_SECCOMP" in text and repr(word) in text and info.value.guest == "web"
    assert "\n" not in text


def test_name_known_only_on_another_arch_is_accepted() -> None:
    # iopl exists on x86_64 only: an aarch64 filter simply has nothing to deny
    cfg = guest(seccomp=("-iopl",))
    assert "iopl" in sc.policy(cfg, "aarch64").deny
    sc.build_filter(cfg, "aarch64")


# -- the program itself (decoded) ------------------------------------------

I386 = 0x40000003  # AUDIT_ARCH_I386
ARM = 0x40000028  # AUDIT_ARCH_ARM (aarch32 compat)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_simulated_program_matches_policy(arch: str) -> None:
    prog = bpf.unpack(sc.build_filter(LOCKED, arch))
    native = syscalls.AUDIT_ARCH[arch]

    def nr(name: str) -> int:
        number = syscalls.number(name, arch)
        assert number is not None, name
        return number

    # a program for another machine leaves out what libseccomp cannot translate
    foreign_build = arch != syscalls.native_arch()
    for name in sc.DEFAULT_DENY | sc.LOCK_DENY:
        if syscalls.number(name, arch) is not None and not (
            foreign_build and name in syscalls.NEWER
        ):
            assert bpf.run(prog, nr(name), native) == EPERM, name
    for name in ("read", "write", "openat", "execve", "reboot", "ptrace", "mount"):
        assert bpf.run(prog, nr(name), native) == bpf.SECCOMP_RET_ALLOW, name
    if not foreign_build:  # a call newer than libseccomp, by our own number
        assert bpf.run(prog, nr("mseal"), native) == bpf.SECCOMP_RET_ALLOW
    for name in ("clone3", "fanotify_init", "memfd_secret"):
        assert bpf.run(prog, nr(name), native) == ENOSYS, name
    assert bpf.run(prog, 1000, native) == ENOSYS  # a future kernel's call
    assert bpf.run(prog, nr("socket"), native, [sc.AF_VSOCK]) == EPERM
    assert bpf.run(prog, nr("socket"), native, [2]) == bpf.SECCOMP_RET_ALLOW
    assert bpf.run(prog, nr("clone"), native, [_libc.CLONE_NEWPID]) == EPERM
    assert bpf.run(prog, nr("clone"), native, [0x11]) == bpf.SECCOMP_RET_ALLOW
    assert bpf.run(prog, nr("ioctl"), native, [0, sc.TIOCSTI]) == EPERM
    assert bpf.run(prog, nr("ioctl"), native, [sc.TIOCSTI, 0x5401]) == bpf.SECCOMP_RET_ALLOW
    foreign = ARM if arch == "aarch64" else I386
    for number in (0, 1, 20, nr("getpid")):
        assert bpf.run(prog, number, foreign) == bpf.SECCOMP_RET_KILL_PROCESS


@pytest.mark.parametrize("name", ["socket", "clone", "unshare", "ioctl"])
def test_argument_checks_see_through_high_bits(name: str) -> None:
    # the kernel truncates these arguments to 32 bits itself: a refused value
    # with the high word set must still be refused (64-bit argument checks)
    prog = bpf.unpack(sc.build_filter(DEFAULT))
    refused = {"socket": (sc.AF_ALG,), "clone": (_libc.CLONE_NEWUSER,),
               "unshare": (_libc.CLONE_NEWUSER,), "ioctl": (0, sc.TIOCSTI)}[name]  # fmt: skip
    sneaky = (*refused[:-1], (0xFFFFFFFF << 32) | refused[-1])
    assert bpf.run(prog, NR[name], NATIVE, refused) == EPERM
    assert bpf.run(prog, NR[name], NATIVE, sneaky) == EPERM


def test_x32_numbers_are_killed() -> None:
    prog = bpf.unpack(sc.build_filter(DEFAULT, "x86_64"))
    x86_64 = syscalls.AUDIT_ARCH["x86_64"]
    x32_keyctl = syscalls.X32_SYSCALL_BIT | NR["keyctl"]
    for nr in (x32_keyctl, syscalls.X32_SYSCALL_BIT, syscalls.X32_SYSCALL_BIT | 1000):
        assert bpf.run(prog, nr, x86_64) == bpf.SECCOMP_RET_KILL_PROCESS


def test_every_listed_name_is_a_system_call_somewhere() -> None:
    listed = sc.DEFAULT_ALLOW | sc.DEFAULT_DENY | sc.LOCK_DENY
    assert [name for name in sorted(listed) if not syscalls.known_name(name)] == []
    assert sc.DEFAULT_ALLOW.isdisjoint(sc.DEFAULT_DENY)


def test_docs_show_the_families() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "escapes.md"
    assert families.markdown() in docs.read_text()


def test_numbers_match_this_machines_header() -> None:
    header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
    if not os.path.exists(header) or syscalls.native_arch() != "x86_64":
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    found = {}
    with open(header) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "#define" and parts[1].startswith("__NR_"):
                found[parts[1][5:]] = int(parts[2])
    assert {k: syscalls.number(k) for k in found} == found


def test_unlisted_and_future_calls_get_enosys_on_the_kernel() -> None:
    # default-deny: libc reads ENOSYS as "not in this kernel" and falls back
    def probe() -> dict[str, int]:
        return {
            "uselib": call("uselib", 0),
            "fanotify_init": call("fanotify_init", 0, 0),
            "future": -ctypes.get_errno() if LIBC.syscall(ctypes.c_long(1000)) == -1 else 0,
        }

    assert in_child(probe) == dict.fromkeys(("uselib", "fanotify_init", "future"), -errno.ENOSYS)
    unfiltered = in_child(probe, cfg=None)
    assert unfiltered["fanotify_init"] != -errno.ENOSYS  # the kernel has it


# -- i386 entry point on the real kernel -----------------------------------

# mov eax, 20 (i386 getpid); int 0x80; ret
INT80_GETPID = bytes.fromhex("b814000000cd80c3")


def _int80_getpid() -> int:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(INT80_GETPID)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return ctypes.CFUNCTYPE(ctypes.c_long)(address)()


@pytest.mark.skipif(syscalls.native_arch() != "x86_64", reason="int 0x80 is x86 only")
def test_i386_entry_kills_the_process() -> None:
    # unfiltered: the i386 getpid answers (IA32 emulation on) or the kernel refuses
    unfiltered = in_child(lambda: _int80_getpid(), cfg=None)
    if unfiltered <= 0:
        pytest.skip(f"kernel has no IA32 emulation (int 0x80 returned {unfiltered})")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        install(DEFAULT)
        _int80_getpid()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS
