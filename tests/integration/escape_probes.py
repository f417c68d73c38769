"""Escape probes run INSIDE a guest as guest root (stdlib only, no vstui imports).

test_escapes.py runs it through ``vserver NAME exec /usr/bin/python3 -c
SOURCE PROBE [ARG...]`` (nothing is copied into the guest); the probe prints
one JSON object. Outcomes are errno names ("EPERM", "EROFS"...) or "ok" when a call
succeeded, so the host-side assertions read like the reference table
(isolation-anchors.md section 2). Probes never write to a host-global knob:
they open for writing and close without writing, or pass arguments the
kernel rejects even when the call is allowed.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
MACHINE = os.uname().machine
NR = {
    "x86_64": {
        "keyctl": 250,
        "userfaultfd": 323,
        "perf_event_open": 298,
        "finit_module": 313,
        "kexec_load": 246,
        "open_by_handle_at": 304,
        "bpf": 321,
        "unshare": 272,
        "clone": 56,
        "setns": 308,
        "ptrace": 101,
        "add_key": 248,
        "io_uring_setup": 425,
        "clock_settime": 227,
        "adjtimex": 159,
        "name_to_handle_at": 303,
        "mknodat": 259,
    },
    "aarch64": {
        "keyctl": 219,
        "userfaultfd": 282,
        "perf_event_open": 241,
        "finit_module": 273,
        "kexec_load": 104,
        "open_by_handle_at": 265,
        "bpf": 280,
        "unshare": 97,
        "clone": 220,
        "setns": 268,
        "ptrace": 117,
        "add_key": 217,
        "io_uring_setup": 425,
        "clock_settime": 112,
        "adjtimex": 171,
        "name_to_handle_at": 264,
        "mknodat": 33,
    },
}[MACHINE]

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUSER = 0x20000, 0x02000000, 0x10000000
CLONE_NEWNET = 0x40000000


def name_of(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def sys_call(name: str, *args: int) -> str:
    """Raw syscall; "ok" or the errno name."""
    ctypes.set_errno(0)
    result = LIBC.syscall(NR[name], *(ctypes.c_long(a) for a in args))
    return name_of(ctypes.get_errno()) if result == -1 else "ok"


def attempt(func, *args) -> str:
    try:
        result = func(*args)
    except OSError as exc:
        return name_of(exc.errno or 0)
    if isinstance(result, int) and not isinstance(result, bool) and result >= 0:
        try:
            os.close(result)
        except OSError:
            pass
    return "ok"


def open_for_write(path: str) -> str:
    """Open for writing and close again: never writes a byte."""
    return attempt(os.open, path, os.O_WRONLY | os.O_CLOEXEC)


def read_file(path: str) -> str:
    """ "empty", "data" or the errno name."""
    try:
        with open(path, "rb") as f:
            return "data" if f.read(4096) else "empty"
    except OSError as exc:
        return name_of(exc.errno or 0)


def libc_mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> str:
    ctypes.set_errno(0)
    result = LIBC.mount(
        source.encode(),
        target.encode(),
        fstype.encode(),
        ctypes.c_ulong(flags),
        data.encode() or None,
    )
    return name_of(ctypes.get_errno()) if result != 0 else "ok"


def unshare(flags: int) -> str:
    return sys_call("unshare", flags)


# -- the probes, by escape class number -----------------------------------------------


def p01_release_agent() -> dict:
    os.makedirs("/mnt/cg", exist_ok=True)
    return {
        "unshare_user_mnt_cgroup": unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP),
        "mount_cgroup_v1": libc_mount("cgroup", "/mnt/cg", "cgroup", 0, "rdma"),
        "mount_cgroup2": libc_mount("cgroup2", "/mnt/cg", "cgroup2"),
        "release_agent": open_for_write("/sys/fs/cgroup/release_agent"),
        "notify": open_for_write("/sys/fs/cgroup/notify_on_release"),
    }


def p02_core_pattern() -> dict:
    return {"core_pattern": open_for_write("/proc/sys/kernel/core_pattern")}


def p03_modprobe_binfmt() -> dict:
    os.makedirs("/mnt/binfmt", exist_ok=True)
    return {
        "modprobe": open_for_write("/proc/sys/kernel/modprobe"),
        "binfmt_register": open_for_write("/proc/sys/fs/binfmt_misc/register"),
        "mount_binfmt": libc_mount("binfmt_misc", "/mnt/binfmt", "binfmt_misc"),
    }


def p04_sysrq() -> dict:
    return {"sysrq": open_for_write("/proc/sysrq-trigger")}


def p05_info_leaks() -> dict:
    files = [
        "/proc/kcore",
        "/proc/kallsyms",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/interrupts",
        "/proc/key-users",
        "/proc/vmallocinfo",
    ]
    out = {path: read_file(path) for path in files}
    for directory in ("/sys/devices/virtual/powercap", "/sys/firmware", "/sys/kernel/debug"):
        try:
            out[directory] = "entries" if os.listdir(directory) else "empty"
        except OSError as exc:
            out[directory] = name_of(exc.errno or 0)
    throttle = [
        f"/sys/devices/system/cpu/{cpu}/thermal_throttle"
        for cpu in os.listdir("/sys/devices/system/cpu")
        if cpu.startswith("cpu") and cpu[3:].isdigit()
    ]
    out["thermal_throttle_readable"] = [p for p in throttle if os.path.exists(p)]
    return out


def p_dev_nodes() -> dict:
    """What /dev/null and /dev/console really are inside the guest (classes 6, 7, 9)."""
    out = {}
    for path in ("/dev/null", "/dev/zero", "/dev/console", "/dev/ptmx", "/dev/pts"):
        try:
            st = os.lstat(path)
            kind = (
                "chr"
                if stat.S_ISCHR(st.st_mode)
                else "lnk"
                if stat.S_ISLNK(st.st_mode)
                else "dir"
                if stat.S_ISDIR(st.st_mode)
                else "reg"
            )
            dev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if kind == "chr" else ""
            out[path] = kind + (" " + dev if dev else "")
            if kind == "lnk":
                out[path] += " -> " + os.readlink(path)
        except OSError as exc:
            out[path] = name_of(exc.errno or 0)
    out["core_pattern"] = open_for_write("/proc/sys/kernel/core_pattern")
    return out


def p10_proc_is_real() -> dict:
    fs = os.statvfs("/proc")
    with open("/proc/1/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open("/proc/self/status") as f:
        mine = dict(line.split(":", 1) for line in f if ":" in line)
    proc_is_link = os.path.islink("/proc")
    magic = 0
    try:  # statfs f_type via ctypes: PROC_SUPER_MAGIC 0x9fa0
        buf = ctypes.create_string_buffer(120)
        if LIBC.statfs(b"/proc", buf) == 0:
            magic = struct.unpack_from("l", buf)[0]
    except OSError:
        pass
    return {
        "proc_is_link": proc_is_link,
        "f_type": hex(magic),
        "ro": bool(fs.f_flag & 1),
        "init_seccomp": status["Seccomp"].strip(),
        "self_seccomp": mine["Seccomp"].strip(),
    }


def p11_fds_and_cwd(host_root: str) -> dict:
    seen = {}
    for pid in ("self", "1"):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                seen[f"/proc/{pid}/fd/{fd}"] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
    for link in ("/proc/1/cwd", "/proc/1/root", "/proc/self/cwd", "/proc/self/root"):
        seen[link] = os.readlink(link)
    bad = {k: v for k, v in seen.items() if "(unreachable)" in v or v.startswith(host_root)}
    return {"bad": bad, "getcwd": os.getcwd(), "count": len(seen)}


def p12_exe_overwrite() -> dict:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() or entry == "self":
            try:
                target = os.readlink(f"/proc/{entry}/exe")
            except OSError:
                continue
            out[f"{entry}:{target}"] = open_for_write(f"/proc/{entry}/exe")
    return out


F_GET_SEALS = 1034  # include/uapi/linux/fcntl.h
F_SEAL_WRITE = 0x0008


def _sealed_memfd(path_fd: int) -> bool:
    """True for the runtime's own sealed memfd copy (as runc's): never the host's file."""
    try:
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        import fcntl

        return bool(fcntl.fcntl(fd, F_GET_SEALS) & F_SEAL_WRITE)
    except OSError:
        return False
    finally:
        os.close(fd)


def p12_exe_race(seconds: str) -> dict:
    """Watch for processes the runtime puts into the guest (``vserver exec``) and
    grab their /proc/PID/exe while it is still a host binary (CVE-2019-5736)."""
    seen: dict[str, str] = {}
    mine = {str(os.getpid()), "1"}
    known = set(os.listdir("/proc"))
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid in known or pid in mine:
                continue
            try:
                fd = os.open(f"/proc/{pid}/exe", os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
                st = os.fstat(fd)
                try:
                    here = os.stat(target)
                    visible = (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)
                except OSError:
                    visible = False
                if not visible and not _sealed_memfd(fd):  # open for writing, then close
                    seen[target] = open_for_write(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
            known.add(pid)
    return {"host_only_exes": seen}


def p13_chroot_breakout() -> dict:
    before = os.stat("/")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.makedirs("/tmp/jail", exist_ok=True)
            os.chroot("/tmp/jail")  # cwd stays outside the new root: the classic trick
            for _ in range(64):
                os.chdir("..")
            os.chroot(".")
            st = os.stat("/")
            with open("/proc/self/mountinfo") as f:
                mounts = f.read()
            os.write(write_end, json.dumps([st.st_dev, st.st_ino, len(mounts)]).encode())
        except OSError as exc:
            os.write(write_end, json.dumps(name_of(exc.errno or 0)).encode())
        os._exit(0)
    os.close(write_end)
    data = json.loads(os.read(read_end, 4096))
    os.waitpid(pid, 0)
    if isinstance(data, str):
        return {"result": data}
    return {"result": "ran", "same_root": [data[0], data[1]] == [before.st_dev, before.st_ino]}


def p14_fresh_proc_sysfs() -> dict:
    os.makedirs("/mnt/p", exist_ok=True)
    return {
        "proc": libc_mount("proc", "/mnt/p", "proc"),
        "sysfs": libc_mount("sysfs", "/mnt/p", "sysfs"),
        "tmpfs": libc_mount("tmpfs", "/mnt/p", "tmpfs"),
    }


def p15_block_device() -> dict:
    blocks = [n for n in os.listdir("/dev") if stat.S_ISBLK(os.lstat(f"/dev/{n}").st_mode)]
    return {
        "mknod_block": attempt(os.mknod, "/tmp/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0)),
        "mknod_char_mem": attempt(os.mknod, "/tmp/mem", stat.S_IFCHR | 0o600, os.makedev(1, 1)),
        # /dev is a tmpfs without nodev (in a user-namespaced guest the host's own)
        "mknod_dev_block": attempt(os.mknod, "/dev/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0)),
        "mknod_dev_mem": attempt(os.mknod, "/dev/mem", stat.S_IFCHR | 0o600, os.makedev(1, 1)),
        "block_nodes_in_dev": blocks,
        "mount_ext4": libc_mount("/dev/sda", "/mnt", "ext4"),
    }


def p16_device_cgroup() -> dict:
    return {
        "devices_allow": open_for_write("/sys/fs/cgroup/devices/devices.allow"),
        "devices_allow_flat": open_for_write("/sys/fs/cgroup/devices.allow"),
        "bpf_prog_load": sys_call("bpf", 5, 0, 0),  # BPF_PROG_LOAD with a NULL attr
    }


def p17_cgroup_tree() -> dict:
    with open("/proc/self/cgroup") as f:
        paths = {
            (parts[1] or "cgroup2"): parts[2]
            for parts in (line.rstrip("\n").split(":", 2) for line in f)
        }
    try:
        entries = os.listdir("/sys/fs/cgroup")
    except OSError as exc:
        entries = [name_of(exc.errno or 0)]
    return {
        "cgroup_paths": paths,
        "sys_fs_cgroup": entries,
        "pids_max": open_for_write("/sys/fs/cgroup/pids/pids.max"),
        "memory_limit": open_for_write("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    }


def p18_ptrace(host_pid: str) -> dict:
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    cmdlines = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdlines[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
        except OSError:
            continue
    target = int(host_pid)
    return {
        "pids": pids,
        "cmdlines": cmdlines,
        "attach_host_pid": sys_call("ptrace", 16, target, 0, 0)
        if target not in pids
        else "visible",
        "kill_host_pid": attempt(os.kill, target, 0) if target not in pids else "visible",
    }


def p19_sockets() -> dict:
    found = []
    for top in os.listdir("/"):
        if top in ("proc", "sys", "dev"):
            continue
        for dirpath, _dirs, filenames in os.walk(f"/{top}"):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        found.append(path)
                except OSError:
                    continue
    known = [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/vservers",
        "/var/run/vservers",
    ]
    return {"sockets": found, "known": [p for p in known if os.path.exists(p)]}


def p20_abstract(name: str) -> dict:
    with open("/proc/net/unix") as f:
        listed = name in f.read()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        result = attempt(sock.connect, "\0" + name)
    finally:
        sock.close()
    return {"listed": listed, "connect": result}


def p21_net_raw() -> dict:
    return {
        "packet": attempt(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0),
        "raw_ipv4": attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "raw_icmpv6": attempt(socket.socket, socket.AF_INET6, socket.SOCK_RAW, 58),
    }


def p22_net_admin() -> dict:
    siocsifflags, siocgifflags, siocsifmtu = 0x8914, 0x8913, 0x8922
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, req))[1]
        down = attempt(fcntl.ioctl, sock, siocsifflags, struct.pack("16sH14x", b"lo", flags))
        mtu = attempt(fcntl.ioctl, sock, siocsifmtu, struct.pack("16si12x", b"lo", 1280))
    return {
        "set_flags": down,
        "set_mtu": mtu,
        "ip_forward": open_for_write("/proc/sys/net/ipv4/ip_forward"),
    }


def p24_userns() -> dict:
    def clone(flags: int) -> str:
        ctypes.set_errno(0)
        result = LIBC.syscall(NR["clone"], ctypes.c_long(flags | signal.SIGCHLD), 0, 0, 0, 0)
        if result == 0:
            os._exit(0)
        if result > 0:
            os.waitpid(result, 0)
            return "ok"
        return name_of(ctypes.get_errno())

    return {
        "unshare_user": unshare(CLONE_NEWUSER),
        "clone_user": clone(CLONE_NEWUSER),
        "unshare_net": unshare(CLONE_NEWNET),
        "setns_bad_fd": sys_call("setns", -1, 0),
        "plain_fork": clone(0),
    }


def p25_keyring() -> dict:
    return {
        "join_session": sys_call("keyctl", 1, 0, 0, 0, 0),  # KEYCTL_JOIN_SESSION_KEYRING
        "add_key": sys_call("add_key", 0, 0, 0, 0, 0),
        "proc_keys": read_file("/proc/keys"),
    }


def p26_dangerous_syscalls() -> dict:
    empty = "/tmp/empty.ko"
    with open(empty, "wb"):
        pass
    fd = os.open(empty, os.O_RDONLY)
    try:
        finit = sys_call("finit_module", fd, 0, 0)
    finally:
        os.close(fd)
    now = time.clock_gettime(time.CLOCK_REALTIME)
    ts = struct.pack("qq", int(now), 0)
    buf = ctypes.create_string_buffer(ts)
    timex = ctypes.create_string_buffer(256)
    struct.pack_into("I", timex, 0, 0x0001)  # ADJ_OFFSET: a change, needs CAP_SYS_TIME
    return {
        "userfaultfd": sys_call("userfaultfd", 0),
        "perf_event_open": sys_call("perf_event_open", 0, 0, -1, -1, 0),
        "finit_module": finit,
        "kexec_load": sys_call("kexec_load", 0, 0, 0, 0xFFFF0000),
        "clock_settime": sys_call("clock_settime", 0, ctypes.addressof(buf)),
        "adjtimex": sys_call("adjtimex", ctypes.addressof(timex)),
        "open_by_handle_at": sys_call("open_by_handle_at", -100, 0, 0),
        "io_uring_setup": sys_call("io_uring_setup", 1, 0),
    }


def p31_sysfs() -> dict:
    os.makedirs("/mnt/dbg", exist_ok=True)
    return {
        "uevent_helper": open_for_write("/sys/kernel/uevent_helper"),
        "mount_debugfs": libc_mount("debugfs", "/mnt/dbg", "debugfs"),
        "mount_securityfs": libc_mount("securityfs", "/mnt/dbg", "securityfs"),
        "sys_ro": bool(os.statvfs("/sys").f_flag & 1),
    }


def _caps(pid: str) -> dict:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {
        k: fields[k].strip()
        for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
    }


def _run_as_1000(program: str) -> dict | str:
    """Caps of ``program`` (a cat) run as uid 1000, or the errno name of its exec."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.dup2(write_end, 1)
        try:
            os.setgroups([])
            os.setgid(1000)
            os.setuid(1000)
            os.execv(program, [program, "/proc/self/status"])
        except OSError as exc:
            os.write(write_end, f"exec:{name_of(exc.errno or 0)}".encode())
        os._exit(1)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        text = f.read()
    os.waitpid(pid, 0)
    if text.startswith("exec:"):
        return text
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: fields[k].strip() for k in ("CapPrm", "CapEff", "CapAmb")}


def p32_caps(*programs: str) -> dict:
    out = {"init": _caps("1"), "self": _caps("self")}
    # programs with file capabilities (planted from the host), run as uid 1000
    for program in programs:
        out[program] = _run_as_1000(program)
    return out


def p33_tiocsti() -> dict:
    char = ctypes.c_char(b"\n")
    out = {}
    for fd in (0, 1, 2):
        ctypes.set_errno(0)
        result = LIBC.ioctl(fd, 0x5412, ctypes.byref(char))
        out[f"fd{fd}"] = name_of(ctypes.get_errno()) if result < 0 else "ok"
    out["dev_tty"] = attempt(os.open, "/dev/tty", os.O_RDWR)
    out["sid_is_self"] = os.getsid(0) == os.getpid()
    return out


def p34_page_cache() -> dict:
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    binds = {}
    for row in rows:
        if row[4] in ("/usr", "/bin", "/sbin", "/lib", "/lib64"):
            binds[row[4]] = "ro" if "ro" in row[5].split(",") else "rw"
    return {
        "af_alg": attempt(socket.socket, 38, socket.SOCK_SEQPACKET, 0),
        "write_python": open_for_write(os.path.realpath(sys.executable)),
        "host_binds": binds,
    }


def p35_loop() -> dict:
    return {
        "loop_control": attempt(os.open, "/dev/loop-control", os.O_RDWR),
        "loop0": attempt(os.open, "/dev/loop0", os.O_RDWR),
        "mknod_loop": attempt(os.mknod, "/tmp/loopc", stat.S_IFCHR | 0o600, os.makedev(10, 237)),
    }


def p36_uts_ipc_mounts(key: str) -> dict:
    out = {"sethostname": attempt(socket.sethostname, "escaped")}
    shmget = LIBC.shmget
    shmget.restype = ctypes.c_int
    ident = shmget(ctypes.c_int(int(key)), 4096, 0o1000 | 0o600)  # IPC_CREAT
    out["shmget"] = "ok" if ident >= 0 else name_of(ctypes.get_errno())
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    root = [r for r in rows if r[4] == "/"]
    out["root_optional"] = root[0][6 : root[0].index("-")] if root else []
    out["mount_points"] = [r[4] for r in rows]
    return out


def p_fork_bomb() -> dict:
    children, threads, result = [], [], {}
    stop = threading.Event()
    try:
        while len(children) < 10000:
            pid = os.fork()
            if pid == 0:
                signal.pause()
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        result["fork"] = name_of(exc.errno or 0)
    result["forked"] = len(children)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    try:
        while len(threads) < 10000:
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()
            threads.append(t)
    except RuntimeError as exc:  # "can't start new thread"
        result["thread"] = str(exc)
    result["threads"] = len(threads)
    stop.set()
    for t in threads:
        t.join()
    return result


def p_memory(megabytes: str) -> dict:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        chunks = []
        for i in range(int(megabytes)):
            chunks.append(bytearray(1 << 20))  # touched: zero-filled pages are written
            if i % 16 == 0:
                os.write(write_end, b".")
        os._exit(0)
    os.close(write_end)
    progress = len(os.read(read_end, 1 << 16) or b"")
    while chunk := os.read(read_end, 1 << 16):
        progress += len(chunk)
    _, status = os.waitpid(pid, 0)
    return {
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "progress_16m": progress,
    }


def p_fill(path: str, limit_mb: str) -> dict:
    written, error = 0, "none"
    block = b"\xa5" * (1 << 20)
    try:
        with open(path, "wb") as f:
            while written < int(limit_mb) << 20:
                f.write(block)
                f.flush()
                written += len(block)
            os.fsync(f.fileno())
    except OSError as exc:
        error = name_of(exc.errno or 0)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return {"error": error, "written_mb": written >> 20}


def p_inodes(directory: str, limit: str) -> dict:
    os.makedirs(directory, exist_ok=True)
    made, error = 0, "none"
    try:
        while made < int(limit):
            os.close(os.open(f"{directory}/{made}", os.O_CREAT | os.O_WRONLY, 0o600))
            made += 1
    except OSError as exc:
        error = name_of(exc.errno or 0)
    for i in range(made):
        os.unlink(f"{directory}/{i}")
    return {"error": error, "made": made}


def p_cpu(seconds: str) -> dict:
    """Two busy processes for ``seconds`` of wall time: (their CPU time) / wall."""
    deadline = time.monotonic() + float(seconds)
    pids = []
    start = time.monotonic()
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            while time.monotonic() < deadline:
                pass
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    wall = time.monotonic() - start
    usage = os.times()
    cpu = usage.children_user + usage.children_system
    return {"cpu": cpu, "wall": wall, "ratio": cpu / wall}


# -- the user-namespace classes (issue 16) ------------------------------------------

FSOPEN, OPEN_TREE, MOUNT_SETATTR = 430, 428, 442  # the unified table: every architecture


def _write_once(path: str, text: str) -> str:
    """Open and write ``text``; "ok" or the errno name (writes the kernel always refuses)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        return name_of(exc.errno or 0)
    try:
        os.write(fd, text.encode())
        return "ok"
    except OSError as exc:
        return name_of(exc.errno or 0)
    finally:
        os.close(fd)


def p_userns_maps() -> dict:
    # every map is written already (in the host's namespace too): the kernel refuses a
    # second write, so these writes can never change anything
    with open("/proc/self/uid_map") as f:
        uid_map = f.read().split()
    return {
        "uid_map": uid_map,
        "write_uid_map": _write_once("/proc/self/uid_map", "0 0 4294967295\n"),
        "write_gid_map": _write_once("/proc/self/gid_map", "0 0 4294967295\n"),
        "write_init_uid_map": _write_once("/proc/1/uid_map", "0 0 4294967295\n"),
        "write_setgroups": _write_once("/proc/self/setgroups", "deny"),
    }


def _string_call(nr: int, text: str, *rest: int) -> str:
    ctypes.set_errno(0)
    result = LIBC.syscall(ctypes.c_long(nr), ctypes.c_char_p(text.encode()),
                          *(ctypes.c_long(a) for a in rest))  # fmt: skip
    if result >= 0:
        os.close(result)
        return "ok"
    return name_of(ctypes.get_errno())


def p_fsopen() -> dict:
    # CVE-2022-0185: fsconfig of a file system a user namespace may create
    os.makedirs("/mnt/fs", exist_ok=True)
    out = {f"fsopen_{fs}": _string_call(FSOPEN, fs, 0) for fs in ("tmpfs", "ext4", "cgroup2")}
    out["mount_tmpfs"] = libc_mount("none", "/mnt/fs", "tmpfs")
    return out


def p_idmap_host_path() -> dict:
    # a detached clone of /usr, idmapped by the guest: the filter refuses both calls,
    # and mount_setattr would want CAP_SYS_ADMIN over the host's file system anyway
    ctypes.set_errno(0)
    fd = LIBC.syscall(ctypes.c_long(OPEN_TREE), ctypes.c_long(-100), ctypes.c_char_p(b"/usr"),
                      ctypes.c_long(1))  # AT_FDCWD, OPEN_TREE_CLONE  # fmt: skip
    opened = name_of(ctypes.get_errno()) if fd < 0 else "ok"
    if fd >= 0:
        os.close(fd)
    return {"open_tree": opened, "mount_setattr": sys_call_nr(MOUNT_SETATTR, -1, 0, 0, 0, 0)}


def sys_call_nr(nr: int, *args: int) -> str:
    ctypes.set_errno(0)
    result = LIBC.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return name_of(ctypes.get_errno()) if result == -1 else "ok"


def p_overlay_copyup(lower: str, name: str) -> dict:
    # CVE-2023-0386: copy-up of a setuid file whose owner the guest's ids do not map
    base = "/tmp/ov"
    out = {"mount_tmpfs": "skipped", "mount_overlay": "skipped", "copy_up": "skipped"}
    os.makedirs(base, exist_ok=True)
    out["mount_tmpfs"] = libc_mount("none", base, "tmpfs")
    if out["mount_tmpfs"] != "ok":
        return out
    for sub in ("upper", "work", "merged"):
        os.makedirs(f"{base}/{sub}", exist_ok=True)
    data = f"lowerdir={lower},upperdir={base}/upper,workdir={base}/work,userxattr"
    out["mount_overlay"] = libc_mount("overlay", f"{base}/merged", "overlay", 0, data)
    if out["mount_overlay"] != "ok":
        return out
    out["copy_up"] = attempt(os.open, f"{base}/merged/{name}", os.O_WRONLY | os.O_APPEND)
    try:
        st = os.lstat(f"{base}/upper/{name}")
        out["upper"] = {"uid": st.st_uid, "mode": st.st_mode & 0o7777}
    except OSError as exc:
        out["upper"] = name_of(exc.errno or 0)
    return out


def p_signal_other_guest(uid: str, pid: str) -> dict:
    # as the same guest uid as the other guest's process: its host PID is not ours
    os.setgroups([])
    os.setresgid(int(uid), int(uid), int(uid))
    os.setresuid(int(uid), int(uid), int(uid))
    target = int(pid)
    return {
        "kill": attempt(os.kill, target, 0),
        "ptrace_attach": sys_call("ptrace", 16, target, 0, 0),
        "pidfd_open": sys_call_nr(434, target, 0),
        "proc": attempt(os.stat, f"/proc/{target}"),
    }


def p_share_ownership(share: str) -> dict:
    # the host left a file and a directory owned by a host id outside every guest's range
    out = {}
    foreign, folder = f"{share}/foreign", f"{share}/foreign-dir"
    out["foreign_owner"] = os.stat(foreign).st_uid
    out["write_foreign"] = attempt(os.open, foreign, os.O_WRONLY | os.O_APPEND)
    out["chown_foreign"] = attempt(os.chown, foreign, 0, 0)
    out["chmod_foreign"] = attempt(os.chmod, foreign, 0o4755)
    out["create_in_foreign_dir"] = attempt(os.open, f"{folder}/x", os.O_WRONLY | os.O_CREAT)
    with open(f"{share}/by-root", "w") as f:
        f.write("root\n")
    pid = os.fork()
    if pid == 0:
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        with open(f"{share}/by-1000", "w") as f:
            f.write("1000\n")
        os._exit(0)
    os.waitpid(pid, 0)
    out["inside"] = {n: os.stat(f"{share}/{n}").st_uid for n in ("by-root", "by-1000")}
    return out


PROBES = {
    name.split("_", 1)[1]: func
    for name, func in dict(globals()).items()
    if callable(func) and name.startswith("p") and "_" in name and name[1:2] in "0123_"
}


if __name__ == "__main__":
    print(json.dumps(PROBES[sys.argv[1]](*sys.argv[2:])))
