"""What the guest's filter allows and refuses, by family, with the reason for each.

The filter is default-deny: a call in no family here (an obsolete one, one
no Debian service needs, or one a future kernel adds) fails with ENOSYS,
which libc and systemd read as "this kernel lacks it" and fall back from.
``DENIED`` calls fail with EPERM instead: they exist, a guest may try them,
and the answer is "not for you". Argument checks (engine.seccomp.ARG_DENIALS)
refine a few allowed calls. docs/escapes.md shows these tables
(``markdown()``); a unit test keeps the two equal.

The allowlist is what a Debian system in a container uses: systemd as PID 1
and its services (journald, logind, networkd, resolved), sshd, postgres,
nginx, cron and apt/dpkg, plus a shell's tools.
Capabilities and namespaces still decide what an allowed call may do:
``mount`` is allowed, and works only where the guest's user namespace owns
the mount namespace; ``clock_settime`` is allowed and fails with EPERM
because CAP_SYS_TIME is only ever checked in the host's namespace.
"""

from __future__ import annotations

from engine._record import Record


class Family(Record):
    """System calls allowed (or denied) together, and why."""

    __slots__ = _fields = ("name", "reason", "calls")
    name: str
    reason: str
    calls: tuple[str, ...]


def _f(name: str, reason: str, calls: str) -> Family:
    return Family(name, reason, tuple(calls.split()))


ALLOWED: tuple[Family, ...] = (
    _f(
        "io",
        "every program: reading and writing descriptors, pipes and terminals "
        "(ioctl: TIOCSTI, TIOCLINUX and btrfs subvolume creation refused)",
        "read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 lseek "
        "close close_range dup dup2 dup3 fcntl ioctl pipe pipe2 sendfile splice tee vmsplice "
        "copy_file_range",
    ),
    _f(
        "files",
        "every program: paths, metadata, directories, links, ownership and modes "
        "(inside the guest's id range), extended attributes, locks, sync; inotify for "
        "systemd's path units, journald and apt",
        "open openat openat2 creat stat fstat lstat newfstatat statx access faccessat "
        "faccessat2 chdir fchdir getcwd mkdir mkdirat rmdir rename renameat renameat2 link "
        "linkat unlink unlinkat symlink symlinkat readlink readlinkat chmod fchmod fchmodat "
        "fchmodat2 chown fchown lchown fchownat truncate ftruncate fallocate getdents "
        "getdents64 utime utimes utimensat futimesat umask statfs fstatfs mknod mknodat "
        "fsync fdatasync syncfs sync sync_file_range fadvise64 readahead flock "
        "setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr "
        "flistxattr removexattr lremovexattr fremovexattr setxattrat getxattrat listxattrat "
        "removexattrat file_getattr file_setattr inotify_init inotify_init1 "
        "inotify_add_watch inotify_rm_watch",
    ),
    _f(
        "memory",
        "every program: mappings and the heap; mlock for sshd and gpg (apt's "
        "signature checks), memfd for systemd, NUMA policy calls for postgres",
        "mmap munmap mprotect mremap msync mincore madvise brk mlock mlock2 munlock mlockall "
        "munlockall memfd_create membarrier mbind set_mempolicy get_mempolicy "
        "set_mempolicy_home_node migrate_pages move_pages pkey_mprotect pkey_alloc pkey_free "
        "mseal cachestat map_shadow_stack process_madvise process_mrelease",
    ),
    _f(
        "processes",
        "fork, exec, wait and exit; clone without CLONE_NEWUSER (clone3 is "
        "left out: its flags live in memory a filter cannot read, and glibc falls back to "
        "clone on ENOSYS); ptrace, kcmp and pidfds stay inside the guest's PID namespace",
        "fork vfork clone execve execveat exit exit_group wait4 waitid getpid getppid gettid "
        "getpgid setpgid getpgrp getsid setsid set_tid_address set_robust_list "
        "get_robust_list rseq arch_prctl prctl personality ptrace kcmp process_vm_readv "
        "process_vm_writev pidfd_open pidfd_getfd pidfd_send_signal seccomp "
        "landlock_create_ruleset landlock_add_rule landlock_restrict_self capget capset "
        "lsm_get_self_attr lsm_list_modules",
    ),
    _f(
        "credentials",
        "sshd, cron, su and every daemon that drops root (ids are the "
        "guest's own: its user namespace maps them)",
        "getuid geteuid getgid getegid getresuid getresgid getgroups setuid setgid setreuid "
        "setregid setresuid setresgid setfsuid setfsgid setgroups",
    ),
    _f(
        "limits-and-scheduling",
        "rlimits, nice, CPU affinity and I/O priority (systemd "
        "units' LimitNOFILE=, Nice=, CPUAffinity=, IOSchedulingClass=; postgres)",
        "getrlimit setrlimit prlimit64 getrusage times getpriority setpriority sched_yield "
        "sched_setparam sched_getparam sched_setscheduler sched_getscheduler "
        "sched_get_priority_max sched_get_priority_min sched_rr_get_interval "
        "sched_setaffinity sched_getaffinity sched_setattr sched_getattr ioprio_set "
        "ioprio_get getcpu",
    ),
    _f(
        "signals-and-time",
        "signals, sleeping, timers and clocks, futexes; setting the "
        "clock is allowed and refused by the kernel (CAP_SYS_TIME counts only in the "
        "host's namespace)",
        "rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigtimedwait "
        "rt_sigqueueinfo rt_tgsigqueueinfo rt_sigsuspend sigaltstack kill tkill tgkill pause "
        "restart_syscall nanosleep clock_nanosleep clock_gettime clock_getres gettimeofday "
        "time alarm getitimer setitimer timer_create timer_settime timer_gettime "
        "timer_getoverrun timer_delete timerfd_create timerfd_settime timerfd_gettime "
        "signalfd signalfd4 eventfd eventfd2 futex futex_waitv futex_wake futex_wait "
        "futex_requeue clock_settime settimeofday adjtimex clock_adjtime",
    ),
    _f(
        "polling",
        "event loops: systemd (sd-event), nginx, sshd, postgres",
        "poll ppoll select pselect6 epoll_create epoll_create1 epoll_ctl epoll_wait "
        "epoll_pwait epoll_pwait2",
    ),
    _f(
        "network",
        "sockets in the guest's own network namespace (socket: AF_ALG and "
        "AF_VSOCK refused, the audit netlink socket looks absent)",
        "socket socketpair bind listen accept accept4 connect getsockname getpeername sendto "
        "recvfrom sendmsg recvmsg sendmmsg recvmmsg shutdown setsockopt getsockopt",
    ),
    _f(
        "ipc",
        "System V shared memory and semaphores (postgres), message queues, POSIX "
        "message queues (systemd's mqueue mount); all in the guest's IPC namespace",
        "shmget shmat shmctl shmdt semget semop semctl semtimedop msgget msgsnd msgrcv "
        "msgctl mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr",
    ),
    _f(
        "async-io",
        "Linux AIO (postgres, databases); io_uring stays refused",
        "io_setup io_destroy io_getevents io_pgetevents io_submit io_cancel",
    ),
    _f(
        "system",
        "a system container's own business: mounts in its mount namespace "
        "(systemd's PrivateTmp=, ProtectSystem=, /run), chroot and pivot_root, namespaces "
        "for its services (no new user namespace; with `lock`: none), host and domain name "
        "(UTS namespace), reboot (ends the guest's PID namespace), vhangup for getty, "
        "quotas, getrandom, uname, sysinfo and the process's own mounts (statmount, "
        "listmount)",
        "mount umount2 pivot_root chroot unshare setns sethostname setdomainname reboot "
        "vhangup quotactl quotactl_fd getrandom uname sysinfo statmount listmount",
    ),
)

DENIED: tuple[Family, ...] = (
    _f(
        "keyring",
        "the kernel keyring is not namespaced (CVE-2016-4470, CVE-2015-7550)",
        "add_key keyctl request_key",
    ),
    _f(
        "kernel-code",
        "loading kernel modules or a new kernel",
        "kexec_load kexec_file_load init_module finit_module delete_module",
    ),
    _f(
        "kernel-attack-surface",
        "widen kernel race windows or expose the kernel itself: "
        "userfaultfd, eBPF, perf events, io_uring",
        "userfaultfd bpf perf_event_open io_uring_setup io_uring_enter io_uring_register",
    ),
    _f(
        "file-handles",
        '"Shocker": opening files by handle walks past the guest\'s root',
        "open_by_handle_at name_to_handle_at",
    ),
    _f(
        "host-wide",
        "host-wide state: swap, process accounting, I/O ports, the kernel's " "log, dcookies",
        "swapon swapoff acct iopl ioperm syslog lookup_dcookie",
    ),
    _f(
        "new-mount-api",
        "fsconfig was CVE-2022-0185 (reachable from a user namespace); "
        "detached and idmapped mounts of the guest's own making are not needed "
        "(mount(2) still works where capabilities allow)",
        "fsopen fsconfig fsmount fspick move_mount open_tree open_tree_attr mount_setattr",
    ),
)

LOCK_DENIED = Family("lock", "S_FLAGS=lock: no namespaces at all", ("unshare", "setns"))


def names(families: tuple[Family, ...]) -> frozenset[str]:
    return frozenset(call for family in families for call in family.calls)


def markdown() -> str:
    """The two tables docs/escapes.md shows."""
    lines = ["| allowed | why | system calls |", "|---|---|---|"]
    lines += [f"| {f.name} | {f.reason} | `{' '.join(f.calls)}` |" for f in ALLOWED]
    lines += ["", "| refused (EPERM) | why | system calls |", "|---|---|---|"]
    lines += [f"| {f.name} | {f.reason} | `{' '.join(f.calls)}` |" for f in DENIED]
    return "\n".join(lines) + "\n"
