/*
 * start.h: the one executor of a start plan (bootplan.START_OPS), host side.
 *
 * Both ways of starting a guest run this routine with the same plan: the
 * Python start (engine/runtime/starting.py plans, then execs `vboot`, whose
 * main is this) and the compiled `vserver NAME start` replaying the plan from
 * the boot cache (cache.h). In plan order it
 *
 *   checks the barrier; writes the run records (state=starting, xid, the
 *   supervisor's identity); makes the cgroup directories and writes the
 *   limits; writes the run files (exec profile, seccomp program, meminfo
 *   view); opens the cgroup2 group and vinit; then creates A straight into
 *   the cgroup2 group (clone3), A joins the v1 groups through `tasks`,
 *   unshares, zeroes the new time namespace's clocks, makes / a slave and
 *   forks B, the guest's PID 1, which runs the boot plan (boot.h) once told
 *   to go. With a controller (the Python start: the network is set up from
 *   there) it reports "pid B" and waits for "g" first. When B has exec'd
 *   init, it records init.pid/init.start/started/state=running and logs the
 *   start on stderr (the guest's log).
 *
 * Any failure undoes what this routine made (B and A killed, the cgroup
 * directories it created removed, the run files removed) and leaves one
 * line in io->error; the caller reports it (the Python start) or hands the
 * start to Python (the compiled start).
 */
#ifndef VSTUI_START_H
#define VSTUI_START_H

#include "boot.h" /* first: vstui.h defines _GNU_SOURCE */

#include <poll.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>

struct st_io {
    int report, go;   /* the controller's pipes; -1: none (go at once) */
    int console;      /* B's stdout and stderr: the write end of the console pipe */
    pid_t supervisor; /* the process the run records name as supervisor */
    char error[1024]; /* the failure, one line */
};

struct st {
    struct st_io *io;
    const char *run_dir, *name;
    struct vs_field *boot, *tasks[32];
    long *made; /* field indexes of the mkdirs that made a directory */
    int nmade, ntasks, timens, cgroup2, vinit, records;
    unsigned long long ns_flags;
    const char *files[16]; /* run files written */
    int nfiles;
    pid_t a, b;
    long long deadline;
};

static int st_fail(struct st *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->io->error, sizeof s->io->error, fmt, ap);
    va_end(ap);
    for (char *p = s->io->error; *p; p++)
        if (*p == '\n')
            *p = ' ';
    return -1;
}

static long long st_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000LL + now.tv_nsec / 1000000;
}

/* Up to room bytes from fd until EOF (or a newline), within the deadline; -1 on timeout. */
static ssize_t st_read(int fd, char *buf, size_t room, long long deadline, int line) {
    size_t got = 0;
    while (got < room) {
        long long left = deadline - st_now_ms();
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        ssize_t n = read(fd, buf + got, room - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (line && memchr(buf, '\n', got))
            break;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

static void st_log(const char *name, const char *text) {
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    dprintf(2, "--- vserver %s: %s at %s ---\n", name, text, stamp);
}

/* -- the host-side ops, in plan order ---------------------------------------------- */

typedef int (*st_fn)(struct st *, struct vs_field *, long);

static int st_barrier(struct st *s, struct vs_field *a, long at) {
    struct stat st;
    (void)at;
    if (lstat(a[0].s, &st) < 0 || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) || st.st_uid)
        return st_fail(s, "barrier %s: no longer a mode 000 directory of root's", a[0].s);
    return 0;
}

static int st_identity(struct st *s, struct vs_field *a, long at) {
    (void)at;
    s->run_dir = a[0].s, s->name = a[1].s, s->records = 1;
    if (vs_value(s->run_dir, "state", "starting") < 0 || vs_value(s->run_dir, "xid", a[2].s) < 0 ||
        vs_value_ll(s->run_dir, "supervisor.pid", s->io->supervisor) < 0 ||
        vs_value_ll(s->run_dir, "supervisor.start", vs_starttime(s->io->supervisor)) < 0)
        return st_fail(s, "run file in %s: %s", s->run_dir, strerror(errno));
    return 0;
}

static int st_mkdir(struct st *s, struct vs_field *a, long at) {
    if (mkdir(a[0].s, 0755) == 0)
        s->made[s->nmade++] = at;
    else if (errno != EEXIST)
        return st_fail(s, "mkdir `%s`: %s", a[0].s, strerror(errno));
    return 0;
}

static int st_write(struct st *s, struct vs_field *a, long at) {
    (void)at;
    if (vs_write_file(a[0].s, a[1].s, a[1].n, O_TRUNC, 0) < 0)
        return st_fail(s, "write `%s`: %s", a[0].s, strerror(errno));
    return 0;
}

static int st_runfile(struct st *s, struct vs_field *a, long at) {
    unsigned long long mode;
    (void)at;
    if (!s->run_dir || s->nfiles == 16 || vs_ull(a[1].s, 8, &mode) < 0)
        return st_fail(s, "start plan: runfile %s out of place", a[0].s);
    s->files[s->nfiles++] = a[0].s;
    if (vs_replace(s->run_dir, a[0].s, a[2].s, a[2].n, (mode_t)mode) < 0)
        return st_fail(s, "write `%s/%s`: %s", s->run_dir, a[0].s, strerror(errno));
    return 0;
}

static int st_tasks(struct st *s, struct vs_field *a, long at) {
    (void)at;
    if (s->ntasks == 32)
        return st_fail(s, "start plan: too many cgroup hierarchies");
    s->tasks[s->ntasks++] = a;
    return 0;
}

static int st_cgroup2(struct st *s, struct vs_field *a, long at) {
    (void)at;
    s->cgroup2 = open(a[0].s, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return s->cgroup2 < 0 ? st_fail(s, "cgroup `%s`: %s", a[0].s, strerror(errno)) : 0;
}

static int st_unshare(struct st *s, struct vs_field *a, long at) {
    (void)at;
    return vs_ull(a[0].s, 16, &s->ns_flags) < 0 ? st_fail(s, "start plan: bad flags") : 0;
}

static int st_timens(struct st *s, struct vs_field *a, long at) {
    (void)a, (void)at;
    s->timens = 1;
    return 0;
}

static int st_vinit(struct st *s, struct vs_field *a, long at) {
    (void)at;
    s->vinit = open(a[0].s, O_RDONLY | O_CLOEXEC);
    return s->vinit < 0 ? st_fail(s, "open %s: %s", a[0].s, strerror(errno)) : 0;
}

static int st_boot(struct st *s, struct vs_field *a, long at) {
    (void)at;
    s->boot = a;
    return 0;
}

/* the table is bootplan.START_OPS (consts.h): a new op needs its st_NAME here */
#define ST_FN(name, n) st_##name,
#define ST_OP(name, n) {#name, n},
static const st_fn st_fns[] = {VS_START_OPS(ST_FN)};
static const struct vs_op st_ops[] = {VS_START_OPS(ST_OP)};
#define ST_NOPS ((int)(sizeof st_ops / sizeof st_ops[0]))

/* -- A and B ------------------------------------------------------------------------- */

/* Offsets that start the new time namespace's monotonic and boot clocks at 0
 * (whole seconds: they start between 0 and 1 s, never below 0). */
static int st_zero_clocks(void) {
    struct timespec mono, boot;
    char text[128];
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    int n = snprintf(text, sizeof text, "monotonic -%lld 0\nboottime -%lld 0\n",
                     (long long)mono.tv_sec, (long long)boot.tv_sec);
    return vs_write_file("/proc/self/timens_offsets", text, (size_t)n, 0, 0);
}

static void st_die(int err_w, const char *what) {
    dprintf(err_w, "%s: %s", what, strerror(errno));
    _exit(1);
}

/* A: into every cgroup, new namespaces, fork B (PID 1), report B's host PID, exit. */
static void st_child_a(struct st *s, int moved, int pid_w, int go_r, int err_w) {
    if (s->cgroup2 >= 0 && !moved && vs_enter_cgroup2(s->cgroup2) < 0)
        st_die(err_w, "join cgroup");
    for (int k = 0; k < s->ntasks; k++)
        if (vs_join_tasks(s->tasks[k]->s) < 0)
            st_die(err_w, "join cgroup");
    if (unshare((int)s->ns_flags) < 0)
        st_die(err_w, "unshare");
    if (s->timens && st_zero_clocks() < 0)
        st_die(err_w, "timens_offsets");
    /* nothing we mount may reach the host (and host mounts may reach in) */
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        st_die(err_w, "mount / slave");
    pid_t b = fork();
    if (b < 0)
        st_die(err_w, "fork");
    if (b == 0) {
        char go = 0;
        if (read(go_r, &go, 1) != 1 || go != 'g')
            _exit(1); /* the starter gave up */
        close(go_r);
        vboot_run(s->boot->s, s->boot->n, s->io->console, err_w, s->vinit);
        _exit(1);
    }
    dprintf(pid_w, "%d\n", (int)b);
    _exit(0);
}

/* The controller's word between B's creation and its boot (the network). */
static int st_ask(struct st *s) {
    char go = 0;
    if (s->io->report < 0 || s->io->go < 0)
        return 0;
    dprintf(s->io->report, "pid %d\n", (int)s->b);
    struct pollfd p = {s->io->go, POLLIN, 0};
    long long left = s->deadline - st_now_ms();
    if (left <= 0 || poll(&p, 1, (int)left) <= 0 || read(s->io->go, &go, 1) != 1 || go != 'g')
        return st_fail(s, "start aborted before the guest's boot");
    return 0;
}

/* Fork A, learn B, let B boot, wait for its exec; 0 or -1. */
static int st_launch(struct st *s) {
    int pid_p[2], go_p[2], err_p[2], moved;
    char line[1024];
    if (!s->boot || !(s->ns_flags & CLONE_NEWNS)) /* A makes / a slave: never the host's */
        return st_fail(s, "start plan: no boot step or no mount namespace");
    if (pipe2(pid_p, O_CLOEXEC) < 0 || pipe2(go_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0)
        return st_fail(s, "pipe: %s", strerror(errno));
    s->a = vs_clone_into(s->cgroup2, &moved);
    if (s->a == 0)
        st_child_a(s, moved, pid_p[1], go_p[0], err_p[1]);
    close(pid_p[1]), close(go_p[0]), close(err_p[1]);
    ssize_t n = s->a < 0 ? -1 : st_read(pid_p[0], line, sizeof line - 1, s->deadline, 1);
    close(pid_p[0]);
    if (n > 0) {
        waitpid(s->a, NULL, 0);
        s->a = 0;
        s->b = (pid_t)atoi(line);
    }
    if (n <= 0 || s->b <= 0) {
        n = st_read(err_p[0], line, sizeof line - 1, s->deadline, 0);
        return st_fail(s, "%s", n > 0 ? line : "namespace set-up failed");
    }
    if (st_ask(s) < 0 || write(go_p[1], "g", 1) != 1)
        return -1;
    close(go_p[1]);
    /* B's error pipe closes on its exec; anything on it is a failed step */
    n = st_read(err_p[0], line, sizeof line - 1, s->deadline, 0);
    close(err_p[0]);
    if (n < 0)
        return st_fail(s, "start timed out: a boot step did not finish in time (a hung "
                          "V_MOUNT?); everything was undone");
    return n > 0 ? st_fail(s, "%s", line) : 0;
}

/* -- records and undo ---------------------------------------------------------------- */

static int st_record(struct st *s) {
    struct timespec now;
    char started[64], text[64];
    /* an init that already exited is recorded too: the supervisor reaps it and the
     * start fails with its exit status and its last console lines */
    long long start = vs_proc_starttime(s->b, 1);
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(started, sizeof started, "%lld.%03ld", (long long)now.tv_sec, now.tv_nsec / 1000000);
    if (start < 0)
        return st_fail(s, "the guest's init is gone; see its log");
    if (vs_value_ll(s->run_dir, "init.pid", s->b) < 0 ||
        vs_value_ll(s->run_dir, "init.start", start) < 0 ||
        vs_value(s->run_dir, "started", started) < 0 ||
        vs_value(s->run_dir, "state", "running") < 0)
        return st_fail(s, "run file in %s: %s", s->run_dir, strerror(errno));
    snprintf(text, sizeof text, "started, init pid %d", (int)s->b);
    st_log(s->name, text);
    return 0;
}

static void st_kill(pid_t *pid) {
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

static void st_unlink(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    snprintf(path, sizeof path, "%s/.%s.tmp", dir, name);
    unlink(path);
}

static void st_undo(struct st *s, struct vs_field *f) {
    static const char *const values[] = {VS_RUN_FILES};
    st_kill(&s->b);
    st_kill(&s->a);
    for (int round = 0; round < 50; round++) { /* deepest first; the killed B may still exit */
        int busy = 0;
        for (int k = s->nmade - 1; k >= 0; k--)
            if (rmdir(f[s->made[k] + 1].s) < 0 && errno == EBUSY)
                busy = 1;
        if (!busy)
            break;
        usleep(10000);
    }
    for (int k = 0; k < s->nfiles; k++)
        st_unlink(s->run_dir, s->files[k]);
    for (size_t k = 0; s->records && k < sizeof values / sizeof values[0]; k++)
        st_unlink(s->run_dir, values[k]);
}

/* Execute a start plan; B's PID (the guest's init, booted and recorded) or -1. */
static pid_t vs_start(char *plan, size_t len, struct st_io *io) {
    struct st s = {.io = io, .cgroup2 = -1, .vinit = -1};
    long count;
    const char *bad = "?";
    struct vs_field *f = vs_fields(plan, len, &count);
    s.deadline = st_now_ms() + VS_START_TIMEOUT_MS;
    io->error[0] = '\0';
    if (!f || vs_check(st_ops, ST_NOPS, f, count, &bad) < 0 || !(s.made = calloc(count + 1, sizeof(long)))) {
        st_fail(&s, "start plan: bad op '%s'", f ? bad : "?");
        goto report;
    }
    for (long at = 0; at < count;) {
        int k = vs_op_index(st_ops, ST_NOPS, f[at].s);
        long used = vs_arity(&st_ops[k], f + at + 1, count - at - 1);
        if (st_fns[k](&s, f + at + 1, at) < 0)
            break;
        at += 1 + used;
    }
    if (!io->error[0] && !s.run_dir)
        st_fail(&s, "start plan: no identity");
    if (!io->error[0] && st_launch(&s) == 0)
        st_record(&s);
    if (io->error[0])
        st_undo(&s, f);
report:
    if (s.cgroup2 >= 0)
        close(s.cgroup2);
    if (s.vinit >= 0)
        close(s.vinit);
    if (io->report >= 0) {
        if (io->error[0])
            dprintf(io->report, "error %s\n", io->error);
        else
            dprintf(io->report, "ok %d %lld\n", (int)s.b, vs_starttime(s.b));
    }
    free(s.made);
    free(f);
    return io->error[0] ? -1 : s.b;
}

#endif /* VSTUI_START_H */
