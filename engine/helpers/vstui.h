/*
 * vstui.h: what the helpers share (header only: every function static inline, vs_*).
 *
 * Plans as netstrings and their op tables (consts.h, generated from
 * engine/runtime/bootplan.py), small file and number helpers, the start
 * time of a pid, and the one implementation of what confines a process:
 * rlimits, the nice floor, the bounding set, the seccomp program, the
 * capability sets. boot.h (a guest's PID 1) and vexec (every exec) both
 * confine through these, so the guest's init and a command run later get
 * exactly the same treatment.
 */
#ifndef VSTUI_H
#define VSTUI_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* must come before the first system header of the includer */
#endif
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/sched.h> /* struct clone_args, CLONE_INTO_CGROUP */
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "consts.h"

/* the same numbers on every architecture (the unified syscall table, 5.x) */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* -- plans: netstrings and op tables ------------------------------------------ */

struct vs_field {
    char *s; /* NUL-terminated in place (the trailing ',' becomes the NUL) */
    size_t n;
};

struct vs_op {
    const char *name;
    int nargs; /* >= 0, VS_COUNTED (N FIELD...) or VS_TWO_COUNTED (N ... M ...) */
};

/* Split netstrings into fields (out may be NULL: count only); their number or -1. */
static inline long vs_split(char *buf, size_t len, struct vs_field *out) {
    long count = 0;
    size_t at = 0;
    while (at < len) {
        size_t size = 0, start = at;
        while (at < len && buf[at] >= '0' && buf[at] <= '9' && at - start < 10)
            size = size * 10 + (size_t)(buf[at++] - '0');
        if (at == start || at >= len || buf[at] != ':' || size >= len - at - 1 ||
            buf[at + 1 + size] != ',')
            return -1;
        if (out) {
            out[count].s = buf + at + 1;
            out[count].n = size;
            buf[at + 1 + size] = '\0';
        }
        at += size + 2;
        count++;
    }
    return count;
}

/* The fields of a plan (calloc'd), or NULL; the buffer is cut in place. */
static inline struct vs_field *vs_fields(char *buf, size_t len, long *count) {
    *count = vs_split(buf, len, NULL);
    struct vs_field *f = *count < 0 ? NULL : calloc((size_t)*count + 1, sizeof *f);
    if (f)
        vs_split(buf, len, f);
    return f;
}

/* A whole decimal (or other base) number; -1 unless the field is exactly one. */
static inline int vs_ll(const char *text, int base, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(text, &end, base);
    return errno || end == text || *end ? -1 : 0;
}

static inline int vs_ull(const char *text, int base, unsigned long long *out) {
    char *end;
    errno = 0;
    *out = strtoull(text, &end, base);
    return errno || end == text || *end || text[0] == '-' ? -1 : 0;
}

static inline int vs_op_index(const struct vs_op *table, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (strcmp(table[k].name, name) == 0)
            return k;
    return -1;
}

/* How many argument fields op takes at args (of left), or -1. */
static inline long vs_arity(const struct vs_op *op, const struct vs_field *args, long left) {
    long long first, second;
    if (op->nargs >= 0)
        return op->nargs <= left ? op->nargs : -1;
    if (left < 1 || vs_ll(args[0].s, 10, &first) < 0 || first < 0 || first >= left)
        return -1;
    if (op->nargs == VS_COUNTED)
        return 1 + first;
    if (first + 1 >= left || vs_ll(args[first + 1].s, 10, &second) < 0 || second < 0 ||
        first + 2 + second > left)
        return -1;
    return first + 2 + second;
}

/* Check every op's name and arity; 0, or -1 with *bad the offending field. */
static inline int vs_check(const struct vs_op *table, int n, struct vs_field *f, long count,
                    const char **bad) {
    for (long at = 0; at < count;) {
        int k = vs_op_index(table, n, f[at].s);
        long used = k < 0 ? -1 : vs_arity(&table[k], f + at + 1, count - at - 1);
        if (used < 0) {
            *bad = f[at].s;
            return -1;
        }
        at += 1 + used;
    }
    return 0;
}

/* -- files ------------------------------------------------------------------------ */

/* The whole of a file from offset 0 (the fd's shared offset is left alone). */
static inline char *vs_read_fd(int fd, size_t *len) {
    struct stat st;
    if (fstat(fd, &st) < 0)
        return NULL;
    size_t cap = st.st_size > 0 ? (size_t)st.st_size : 4096, done = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf)
            return NULL;
        ssize_t n = pread(fd, buf + done, cap - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return NULL;
        }
        if (n == 0)
            break;
        done += (size_t)n;
        if (done == cap) {
            char *more = realloc(buf, cap * 2 + 1);
            if (!more)
                free(buf);
            buf = more;
            cap *= 2;
        }
    }
    buf[done] = '\0';
    *len = done;
    return buf;
}

static inline int vs_write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Write data to path (never through a symlink); 0 or -1. */
static inline int vs_write_file(const char *path, const void *data, size_t len, int flags, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | flags, mode);
    if (fd < 0)
        return -1;
    int rc = vs_write_all(fd, data, len);
    int err = errno;
    if (close(fd) < 0 && rc == 0)
        return -1;
    errno = err;
    return rc;
}

/* dir/name replaced atomically (temp file + rename), as runfiles.write_value. */
static inline int vs_replace(const char *dir, const char *name, const void *data, size_t len,
                      mode_t mode) {
    char tmp[4200], final[4200];
    if (snprintf(final, sizeof final, "%s/%s", dir, name) >= (int)sizeof final) {
        errno = ENAMETOOLONG;
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    if (vs_write_file(tmp, data, len, O_CREAT | O_TRUNC, mode) < 0)
        return -1;
    return rename(tmp, final);
}

/* A run-directory value: "VALUE\n". */
static inline int vs_value(const char *dir, const char *key, const char *value) {
    char text[4096];
    int n = snprintf(text, sizeof text, "%s\n", value);
    if (n < 0 || n >= (int)sizeof text) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return vs_replace(dir, key, text, (size_t)n, 0644);
}

static inline int vs_value_ll(const char *dir, const char *key, long long value) {
    char text[32];
    snprintf(text, sizeof text, "%lld", value);
    return vs_value(dir, key, text);
}

/* The length of the UTF-8 sequence at s (1..4), or 0 when s does not start a valid one. */
static inline int vs_utf8_len(const unsigned char *s) {
    int len = s[0] > 0xf4 ? 0 : s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* engine.text.visible for C: text a caller chose (a command, a guest's reply) shown
 * on a terminal with C0 as ^X, DEL as ^?, C1 and non-UTF-8 bytes as \xNN; out is
 * always NUL-terminated and cut, never overflowed. */
static inline const char *vs_visible(const char *text, char *out, size_t size) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = 0;
    while (*s && n + 5 < size) {
        int len = vs_utf8_len(s);
        if (*s < 0x20 || *s == 0x7f) {
            n += (size_t)snprintf(out + n, size - n, "^%c", *s == 0x7f ? '?' : *s + 64);
            s++;
        } else if (*s < 0x80 || (len > 1 && !(s[0] == 0xc2 && s[1] < 0xa0))) {
            int take = len > 1 ? len : 1;
            memcpy(out + n, s, (size_t)take);
            n += (size_t)take, s += take;
        } else { /* C1 as a character (C2 80..9F) or a byte that is not UTF-8 */
            n += (size_t)snprintf(out + n, size - n, "\\x%02x", len == 2 ? s[1] : s[0]);
            s += len == 2 ? 2 : 1;
        }
    }
    out[n] = 0;
    return out;
}

/* runfiles.log_line: "--- vserver NAME: TEXT at TIME ---" in a guest's console log. */
static inline void vs_log_line(int fd, const char *name, const char *text) {
    char stamp[32], line[1024];
    time_t t = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
    int n = snprintf(line, sizeof line, "--- vserver %s: %s at %s ---\n", name, text, stamp);
    if (n > 0)
        (void)!write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* A small file into buf (NUL-terminated); its length or -1 (also when too big). */
static inline ssize_t vs_read_small(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t done = 0;
    ssize_t n;
    for (;;) {
        n = read(fd, buf + done, size - 1 - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (done += (size_t)n) == size - 1)
            break;
    }
    close(fd);
    if (n < 0 || done == size - 1)
        return -1;
    buf[done] = '\0';
    return (ssize_t)done;
}

/* Field 22 of /proc/PID/stat (clock ticks after boot); -1 when gone or a zombie
 * (engine/procfs.py's rule: a zombie is dead for every identity check). */
static inline long long vs_proc_starttime(long long pid, int zombie_ok) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%lld/stat", pid);
    if (vs_read_small(path, buf, sizeof buf) < 0)
        return -1;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || (p[2] == 'Z' && !zombie_ok))
        return -1;
    p += 2;
    for (int field = 3; field < 22; field++) { /* p is at field 3 (state) */
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    char *end;
    errno = 0;
    long long start = strtoll(p, &end, 10);
    return errno || end == p || (*end != ' ' && *end != '\n' && *end) ? -1 : start;
}

/* A live process's start time (a zombie is dead for our purposes: -1). */
static inline long long vs_starttime(long long pid) {
    return vs_proc_starttime(pid, 0);
}

/* -- confinement: one implementation for the guest's init and for exec ------------- */

static inline int vs_rlimit(long long res, long long soft, long long hard) {
    struct rlimit rl = {soft < 0 ? RLIM_INFINITY : (rlim_t)soft,
                        hard < 0 ? RLIM_INFINITY : (rlim_t)hard};
    return setrlimit((int)res, &rl);
}

/* The nice value, and its floor: RLIMIT_NICE allows down to 20 - rlim_cur.
 * The ceiling is never raised (without CAP_SYS_RESOURCE that fails, and
 * lower is stricter). */
static inline int vs_nice(long long nice) {
    struct rlimit rl;
    if (setpriority(PRIO_PROCESS, 0, (int)nice) < 0 || getrlimit(RLIMIT_NICE, &rl) < 0)
        return -1;
    rlim_t ceiling = nice >= 20 ? 0 : (rlim_t)(20 - nice);
    if (ceiling > rl.rlim_max)
        ceiling = rl.rlim_max;
    rl.rlim_cur = rl.rlim_max = ceiling;
    return setrlimit(RLIMIT_NICE, &rl);
}

/* Keep only the capabilities in `keep`: bounding set, ambient and inheritable
 * first, then the seccomp program (installing one without no_new_privs needs
 * CAP_SYS_ADMIN, which the last step may remove), then permitted and
 * effective. 0, or -1 with *step naming what failed. */
static inline int vs_confine(uint64_t keep, const void *program, size_t len, const char **step) {
    /* up to the kernel's last capability, where the drop says EINVAL (no
     * /proc/sys/kernel/cap_last_cap: /proc may be the guest's by now); a
     * number the kernel lacks cannot be kept: bits above 63 never are */
    *step = "bounding set";
    for (int cap = 0;; cap++) {
        if (cap < 64 && keep >> cap & 1)
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
            continue;
        if (errno == EINVAL && cap > 0 && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0)
            break; /* past the last capability */
        return -1;
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); /* no ambient set before 4.3 */
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    *step = "capabilities";
    if (syscall(SYS_capget, &head, data) < 0)
        return -1;
    data[0].inheritable = data[1].inheritable = 0;
    if (syscall(SYS_capset, &head, data) < 0)
        return -1;
    size_t count = len / sizeof(struct sock_filter);
    *step = "seccomp";
    if (len % sizeof(struct sock_filter) || count > 0xffff) {
        errno = EINVAL;
        return -1;
    }
    struct sock_fprog prog = {(unsigned short)count, (struct sock_filter *)program};
    if (count && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        return -1;
    *step = "capabilities";
    for (int k = 0; k < 2; k++) {
        uint32_t word = (uint32_t)(keep >> (32 * k));
        data[k].permitted &= word;
        data[k].effective &= word;
    }
    return syscall(SYS_capset, &head, data) < 0 ? -1 : 0;
}

/* Close every fd but the kept ones (sorted, unique, >= 0). */
static inline void vs_close_except(const int *keep, int n) {
    unsigned int low = 0;
    for (int k = 0; k <= n; k++) {
        unsigned int high = k < n ? (unsigned int)keep[k] : ~0U;
        if (high > low && syscall(SYS_close_range, low, high - 1, 0) < 0) {
            /* before Linux 5.9: one by one up to the fd limit */
            long top = sysconf(_SC_OPEN_MAX);
            for (long fd = low; fd < (long)high && fd < (top > 0 ? top : 65536); fd++)
                close((int)fd);
        }
        if (k < n)
            low = high + 1;
    }
}

/* -- the sealed copy of vexec ----------------------------------------------------------- */

#ifndef MFD_EXEC
#define MFD_EXEC 0x10U /* kernel >= 6.3: say so, or vm.memfd_noexec may refuse */
#endif
#define VS_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

/* A copy of the file open at fd in a memfd named `name`, sealed against every change
 * (what vexec runs from: runc's exeseal); its fd (close-on-exec), or -1. */
static inline int vs_sealed_copy(int fd, const char *name) {
    struct stat st;
    unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
    int memfd = memfd_create(name, flags | MFD_EXEC);
    if (memfd < 0 && errno == EINVAL) /* a kernel before 6.3 */
        memfd = memfd_create(name, flags);
    if (memfd < 0)
        return -1;
    int ok = fstat(fd, &st) == 0;
    for (off_t at = 0; ok && at < st.st_size;) {
        ssize_t sent = sendfile(memfd, fd, &at, (size_t)(st.st_size - at));
        ok = sent > 0 || (sent < 0 && errno == EINTR);
    }
    if (!ok || fcntl(memfd, F_ADD_SEALS, VS_SEALS) < 0) {
        int err = errno;
        close(memfd);
        errno = err;
        return -1;
    }
    return memfd;
}

/* -- cgroups ------------------------------------------------------------------------- */

/* fork, or clone3(CLONE_INTO_CGROUP) straight into the cgroup2 group cgroup_fd
 * (-1: plain fork); *moved says whether the child is already there. Moving a
 * process afterwards through cgroup.procs waits out an RCU grace period
 * (~10-14 ms here). Without clone3 (ENOSYS) or CLONE_INTO_CGROUP (E2BIG,
 * EINVAL): a plain fork. */
static inline pid_t vs_clone_into(int cgroup_fd, int *moved) {
    *moved = 0;
    if (cgroup_fd >= 0) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_INTO_CGROUP;
        args.exit_signal = SIGCHLD;
        args.cgroup = (uint64_t)cgroup_fd;
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid >= 0) {
            *moved = 1;
            return (pid_t)pid;
        }
        if (errno != ENOSYS && errno != E2BIG && errno != EINVAL)
            return -1;
    }
    return fork();
}

/* The slow way into a cgroup2 group (a child vs_clone_into could not place). */
static inline int vs_enter_cgroup2(int cgroup_fd) {
    int fd = openat(cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : vs_write_all(fd, "0", 1);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* A v1 cgroup through `tasks` (this thread only: no RCU grace period). */
static inline int vs_join_tasks(const char *tasks) {
    return vs_write_file(tasks, "0", 1, 0, 0);
}

/* -- user namespaces ------------------------------------------------------------------ */

/* The child of vs_make_userns: it shares our memory (CLONE_VM), so it makes only raw
 * system calls (no errno, no libc state): it waits for EOF on the pipe, then exits. */
static inline int vs_userns_holder(void *arg) {
    const int *done = arg;
    char c;
    syscall(SYS_close, done[1]);
    syscall(SYS_read, done[0], &c, 1);
    syscall(SYS_exit, 0);
    return 0;
}

/* A new user namespace whose ids 0..count-1 are host ids base..: its fd, or -1.
 * Its owner is host uid/gid `base` (the guest's root), not root: the kernel
 * charges per-user counts (inotify instances and watches, user namespaces,
 * mqueue bytes) to the namespace's owner on the host as well, so each guest
 * gets its own budget instead of sharing root's (kernel/ucount.c). The owner is
 * the creator's effective id, so we take `base` as effective id just around a
 * clone(CLONE_NEWUSER): the namespace exists when clone returns and we write
 * its maps at once, without waiting for the child to run (each such hand-off
 * cost a scheduler wait, about 3 ms at the median on a busy host). Only the
 * effective ids change: real and saved stay 0, so going back to euid 0
 * restores the effective capabilities (security/commoncap.c
 * cap_emulate_setxuid). The child only holds the namespace until we have
 * its fd; it exits on EOF and is reaped by the caller (`*child`). It shares
 * our memory (CLONE_VM), on a stack of its own: no copy of our page tables to
 * make (the whole step took 0.17 ms of a start with a fork, 0.12-0.15 now). The
 * stack is never freed: the child may still run after we return; one per call,
 * and a start makes one namespace. */
static inline int vs_make_userns(unsigned long long base, unsigned long long count,
                                 pid_t *child) {
    enum { STACK = 16384 };
    int *done = malloc(2 * sizeof(int) + STACK), fd = -1, err = 0;
    char path[64], map[64];
    long pid = -1;
    *child = -1;
    if (!done || pipe2(done, O_CLOEXEC) < 0) {
        free(done);
        return -1;
    }
    char *stack = (char *)(done + 2) + STACK; /* it grows down */
    stack = (char *)((uintptr_t)stack & ~(uintptr_t)15);
    if (setresgid(-1, (gid_t)base, -1) < 0 || setresuid(-1, (uid_t)base, -1) < 0) {
        err = errno;
    } else {
        pid = clone(vs_userns_holder, stack, CLONE_VM | CLONE_NEWUSER | SIGCHLD, done);
        err = pid < 0 ? errno : 0;
    }
    /* back to root before anything else; failing that, nothing may go on as `base` */
    if (setresuid(-1, 0, -1) < 0 || setresgid(-1, 0, -1) < 0)
        abort();
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); /* the id change cleared it */
    if (pid > 0) {
        int n = snprintf(map, sizeof map, "0 %llu %llu\n", base, count);
        snprintf(path, sizeof path, "/proc/%ld/ns/user", pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        for (int k = 0; fd >= 0 && k < 2; k++) {
            snprintf(path, sizeof path, "/proc/%ld/%s", pid, k ? "gid_map" : "uid_map");
            if (vs_write_file(path, map, (size_t)n, 0, 0) < 0) {
                err = errno;
                close(fd);
                fd = -1;
            }
        }
        if (fd < 0 && !err)
            err = errno;
        *child = (pid_t)pid;
    }
    /* the child reads EOF once both write ends are closed (its own copy, in its own
     * descriptor table, it closes first); the pipe's memory is its stack: kept */
    close(done[0]);
    close(done[1]);
    if (pid < 0)
        free(done);
    errno = err;
    return fd;
}

/* Join user namespace `fd` and become its root (every capability, inside it). The
 * id change made us non-dumpable, which hands our /proc files to host root: dumpable
 * again, they are the guest root's (its own /proc/self/timens_offsets, say). */
static inline int vs_become_root_in(int fd) {
    if (setns(fd, CLONE_NEWUSER) < 0)
        return -1;
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        return -1;
    return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

#endif /* VSTUI_H */
