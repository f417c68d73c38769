/*
 * stop.h: `vserver NAME stop` without Python, for a guest whose start wrote
 * run_dir/stop.plan (bootplan.STOP_OPS: a guest without network or mounted
 * tree, whose stop only removes its cgroups).
 *
 * It does what engine/runtime/stopping.stop does, in that order, under the
 * guest's lock: state "stopping"; init asked to halt (vinit with the plan's
 * SIGTERM, as the Python stop; a real init through its running supervisor,
 * vsuper, which sends the signal for init's kind, as runfiles.stop_signal);
 * init waited for, killed after the plan's timeout
 * (with the Python stop's note in the log); whatever is left in the guest's
 * cgroups killed and the cgroups removed, sub-directories first; the
 * supervisor waited for (it logs how init ended, reaps its children and
 * exits, as for the Python stop: the lock is held); the run directory
 * removed.
 *
 * Whatever the plan cannot decide is the Python stop's, before anything is
 * done: no plan, NAME.conf edited since the start, no live init or
 * supervisor, a frozen guest, the lock held. A cgroup that does not empty
 * afterwards, or a supervisor that does not exit within its grace, is handed
 * over too (the Python stop is idempotent, freezes before it kills, kills a
 * stuck supervision's session, and names what is wrong).
 */
#ifndef VSTUI_STOP_H
#define VSTUI_STOP_H

#include "cache.h" /* first: vstui.h defines _GNU_SOURCE */

#include <dirent.h>
#include <limits.h>
#include <poll.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

#define SP_EMPTY_MS 2000 /* a cgroup's last processes, SIGKILLed, to be gone */
#define SP_KILLED_MS 5000 /* init after its SIGKILL (stopping._shutdown) */

struct sp {
    struct vs_field *config, *log;
    long long timeout_ms, signal;
    int teardown, failed; /* the second pass: the cgroup ops act */
};

/* NAME.conf as planned: the boot cache's content record */
static int sp_config(struct sp *p, struct vs_field *a) {
    p->config = a;
    return p->teardown ? 0 : ch_content(NULL, a);
}

static int sp_log(struct sp *p, struct vs_field *a) {
    p->log = a;
    return 0;
}

static int sp_timeout(struct sp *p, struct vs_field *a) {
    return vs_ll(a[0].s, 10, &p->timeout_ms) < 0 || p->timeout_ms < 0 ? -1 : 0;
}

static int sp_signal(struct sp *p, struct vs_field *a) {
    return vs_ll(a[0].s, 10, &p->signal) < 0 || p->signal <= 0 || p->signal >= NSIG ? -1 : 0;
}

static long long sp_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* A short sleep, longer each time (50 us doubling to 2 ms): a cgroup that stays
 * busy with nobody listed (a process whose threads are all exiting is not
 * listed: kernel/cgroup/cgroup.c css_task_iter_advance) empties within one exit. */
static void sp_pause(int pass) {
    long us = pass < 6 ? 50L << pass : 2000;
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

#define SP_WATCH 64 /* killed processes waited for by their pidfds per pass */

/* Every process listed in dir/cgroup.procs SIGKILLed through a pidfd, and those
 * (SP_WATCH of them) waited for until gone or the deadline: a pidfd is readable
 * from exit_notify on, after the process left its cgroups (kernel/exit.c
 * do_exit: cgroup_exit first), so the cgroup is no longer busy with it. How
 * many were killed; -1 when the list cannot be read (gone: 0). */
static long sp_kill_listed(const char *dir, long long deadline) {
    char path[4200];
    size_t len = 0;
    long killed = 0;
    struct pollfd dying[SP_WATCH];
    int ndying = 0;
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *pids = fd < 0 ? NULL : vs_read_fd(fd, &len);
    if (fd >= 0)
        close(fd);
    if (!pids)
        return errno == ENOENT || fd < 0 ? 0 : -1;
    for (char *p = pids, *end; *p; p = end + (*end != '\0')) {
        long long pid = strtoll(p, &end, 10);
        if (end == p)
            break;
        int pidfd = pid > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)pid, 0) : -1;
        if (pidfd < 0)
            continue; /* gone since the list was read */
        if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0)
            killed++;
        if (ndying < SP_WATCH)
            dying[ndying++] = (struct pollfd){pidfd, POLLIN, 0};
        else
            close(pidfd); /* the next pass kills and waits for it */
    }
    free(pids);
    while (ndying > 0) {
        long long left = deadline - sp_now_ms();
        if (left <= 0 || poll(dying, (nfds_t)ndying, (int)(left > INT_MAX ? INT_MAX : left)) < 0)
            break;
        for (int k = 0; k < ndying;)
            if (dying[k].revents) {
                close(dying[k].fd);
                dying[k] = dying[--ndying];
            } else {
                k++;
            }
    }
    for (int k = 0; k < ndying; k++)
        close(dying[k].fd);
    return killed;
}

/* Empty dir (its processes killed until none is listed), then remove it; 0 or -1. */
static int sp_remove_group(const char *dir) {
    long long deadline = sp_now_ms() + SP_EMPTY_MS;
    for (int pass = 0;; pass++) {
        long left = sp_kill_listed(dir, deadline);
        if (left == 0 && (rmdir(dir) == 0 || errno == ENOENT))
            return 0;
        if (left < 0 || (left == 0 && errno != EBUSY) || sp_now_ms() > deadline)
            return -1;
        if (left == 0)
            sp_pause(pass); /* EBUSY with nobody listed: see sp_pause */
    }
}

/* The tree under dir, deepest first (a guest's own sub-groups), then dir itself. */
static int sp_remove_tree(const char *dir, int depth) {
    if (rmdir(dir) == 0 || errno == ENOENT)
        return 0; /* the usual case once init is gone: no process, no sub-group left */
    DIR *d = depth < 64 ? opendir(dir) : NULL;
    if (!d)
        return errno == ENOENT ? 0 : -1;
    int rc = 0;
    char sub[4200];
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name) >= (int)sizeof sub ||
            sp_remove_tree(sub, depth + 1) < 0)
            rc = -1;
    }
    closedir(d);
    return rc < 0 ? -1 : sp_remove_group(dir);
}

static int sp_cgroup(struct sp *p, struct vs_field *a) {
    if (p->teardown && sp_remove_tree(a[0].s, 0) < 0)
        p->failed = 1;
    return 0;
}

static int sp_parent(struct sp *p, struct vs_field *a) {
    if (p->teardown)
        rmdir(a[0].s); /* other guests' groups still in it: kept */
    return 0;
}

typedef int (*sp_fn)(struct sp *, struct vs_field *);
#define SP_FN(name, n) sp_##name,
#define SP_OP(name, n) {#name, n},
static const sp_fn sp_fns[] = {VS_STOP_OPS(SP_FN)};
static const struct vs_op sp_ops[] = {VS_STOP_OPS(SP_OP)};
#define SP_NOPS ((int)(sizeof sp_ops / sizeof sp_ops[0]))

/* Every op in order; -1 as soon as one says the plan does not hold. */
static int sp_run(struct sp *p, struct vs_field *f, long count) {
    for (long at = 0; at < count;) {
        int k = vs_op_index(sp_ops, SP_NOPS, f[at].s);
        if (sp_fns[k](p, f + at + 1) < 0)
            return -1;
        at += 1 + vs_arity(&sp_ops[k], f + at + 1, count - at - 1);
    }
    return 0;
}

/* The plan (root's own file, like the boot cache) read and its records true. */
static struct vs_field *sp_load(struct sp *p, const char *run_dir, long *count) {
    char path[4300];
    struct stat st;
    size_t len = 0;
    const char *bad;
    snprintf(path, sizeof path, "%s/" VS_STOP_PLAN, run_dir);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    char *buf = NULL;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 &&
        !(st.st_mode & 022))
        buf = vs_read_fd(fd, &len);
    if (fd >= 0)
        close(fd);
    struct vs_field *f = buf ? vs_fields(buf, len, count) : NULL;
    if (!f || vs_check(sp_ops, SP_NOPS, f, *count, &bad) < 0 || sp_run(p, f, *count) < 0 ||
        !p->config || !p->log)
        return NULL;
    return f;
}

/* run_dir/FILE's decimal number; -1 when missing or not one. */
static long long sp_number(const char *run_dir, const char *file) {
    char path[4200], text[64];
    long long value;
    snprintf(path, sizeof path, "%s/%s", run_dir, file);
    ssize_t n = vs_read_small(path, text, sizeof text);
    while (n > 0 && text[n - 1] == '\n')
        text[--n] = '\0';
    return n > 0 && vs_ll(text, 10, &value) == 0 && value >= 0 ? value : -1;
}

/* A pidfd of the process KEY.pid names if it is still the one KEY.start says, else -1. */
static int sp_pidfd(const char *run_dir, const char *key, pid_t *pid) {
    char pid_file[64], start_file[64];
    snprintf(pid_file, sizeof pid_file, "%s.pid", key);
    snprintf(start_file, sizeof start_file, "%s.start", key);
    long long value = sp_number(run_dir, pid_file), start = sp_number(run_dir, start_file);
    if (value <= 0 || start < 0)
        return -1;
    int fd = (int)syscall(SYS_pidfd_open, (pid_t)value, 0);
    if (fd >= 0 && vs_starttime(value) != start) /* checked after the open: no reuse race */
        close(fd), fd = -1;
    *pid = (pid_t)value;
    return fd;
}

/* Until the process is gone (its pidfd readable) or ms passed; 1 when gone. */
static int sp_wait(int pidfd, long long ms) {
    struct pollfd pfd = {pidfd, POLLIN, 0};
    return poll(&pfd, 1, ms > INT_MAX ? INT_MAX : (int)ms) > 0;
}

/* The run directory's value files (runfiles.clear_dir; not the lock). */
static void sp_clear(const char *run_dir) {
    static const char *const values[] = {VS_RUN_FILES};
    char path[4300];
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
        snprintf(path, sizeof path, "%s/%s", run_dir, values[k]);
        unlink(path);
        snprintf(path, sizeof path, "%s/.%s.tmp", run_dir, values[k]);
        unlink(path);
    }
}

/* init asked to halt (vinit: directly, as the Python stop; another init through its
 * supervisor, which knows its kind), waited for, killed after the timeout. */
static void sp_halt(struct sp *p, const char *name, pid_t super, int init_fd, pid_t init) {
    if (p->signal > 0)
        kill(init, (int)p->signal);
    else
        kill(super, SIGTERM); /* vsuper: the signal for init's kind (runfiles.stop_signal) */
    if (sp_wait(init_fd, p->timeout_ms))
        return;
    char text[128];
    snprintf(text, sizeof text, "init did not stop within %g s of the halt signal; killing "
             "the guest", (double)p->timeout_ms / 1000);
    int log = open(p->log->s, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (log >= 0) {
        vs_log_line(log, name, text);
        close(log);
    }
    kill(init, SIGKILL); /* PID 1 dies: the kernel kills the rest of its namespace */
    sp_wait(init_fd, SP_KILLED_MS);
}

/* The guest's lock, and pidfds of its live init and supervisor: 0, or -1 with
 * nothing held (no lock, a frozen guest, init or supervisor not running). */
static int sp_hold(const char *run_dir, int fds[3], pid_t pids[2]) {
    char frozen[4300];
    snprintf(frozen, sizeof frozen, "%s/" VS_FROZEN_FILE, run_dir);
    fds[0] = ch_lock(run_dir);
    fds[1] = fds[0] >= 0 && access(frozen, F_OK) < 0 ? sp_pidfd(run_dir, "init", &pids[0]) : -1;
    fds[2] = fds[1] >= 0 ? sp_pidfd(run_dir, "supervisor", &pids[1]) : -1;
    if (fds[2] >= 0)
        return 0;
    for (int k = 0; k < 2; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    return -1;
}

/* The supervisor gone (it logs init's end, reaps its children and exits), then
 * runfiles.remove_dir: waiters on the old lock file notice and retry. 0, or -1
 * when it lingers: the Python stop kills it and what its session left
 * (stopping.end_supervision), and says so in the log. */
static int sp_finish(const char *run_dir, int super_fd) {
    char lock[4300];
    if (!sp_wait(super_fd, VS_SUPERVISOR_GRACE_MS))
        return -1; /* the run files still name it */
    sp_clear(run_dir);
    snprintf(lock, sizeof lock, "%s/" VS_LOCK_FILE, run_dir);
    unlink(lock);
    rmdir(run_dir);
    return 0;
}

/* 0: stopped here; -1: nothing done (or a cgroup left): let the Python stop do it. */
static int cache_stop(const char *root, const char *name) {
    static struct sp p;
    char run_dir[4200];
    long count;
    int fds[3]; /* the lock, init's and the supervisor's pidfds */
    pid_t pids[2];
    if (geteuid() != 0 || snprintf(run_dir, sizeof run_dir, "%s/" VS_RUN_BASE "/%s",
                                   strcmp(root, "/") ? root : "", name) >= (int)sizeof run_dir)
        return -1;
    struct vs_field *f = sp_load(&p, run_dir, &count);
    if (!f || sp_hold(run_dir, fds, pids) < 0)
        return -1;
    (void)vs_value(run_dir, "state", VS_STOPPING); /* advisory: a full disk must not stop it */
    sp_halt(&p, name, pids[1], fds[1], pids[0]);
    p.teardown = 1;
    sp_run(&p, f, count);
    int done = !p.failed && sp_finish(run_dir, fds[2]) == 0;
    close(fds[0]);
    return done ? 0 : -1;
}

#endif /* VSTUI_STOP_H */
