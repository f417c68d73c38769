/*
 * faststart.h: `vserver NAME start` replayed from the boot cache, no Python.
 *
 * engine/runtime/bootcache.py documents the cache: what the last Python
 * start of this guest decided, with the stat of every file that decision
 * depended on. When every stat still matches, this does the same start:
 *
 *   CLI:  lock run_dir/lock (never waits: busy -> Python, which waits),
 *         no leftover run files, the barrier holds; double fork S;
 *   S:    a child subreaper in its own session, stdio on the log; writes
 *         state=starting and its identity; replays the cgroup mkdirs and
 *         limit writes; renders the /proc/meminfo view; writes the exec
 *         profile and seccomp program; creates A with clone3 straight into
 *         the guest's cgroup2 group (no cgroup.procs migration, which waits
 *         out an RCU grace period); A joins the v1 cgroups through `tasks`,
 *         unshares, zeroes the time namespace's clocks, makes / a slave and
 *         forks B, the guest's PID 1, which runs vboot_run (boot.h, the
 *         same code the Python start execs) once S says go; S records
 *         init.pid/init.start/started/state=running, answers the CLI and
 *         execs the lean Python supervisor exactly as supervisor.py would.
 *
 * vserver.c includes this after its own helpers (proc_starttime, the
 * runfiles reader it shares with `exec`).
 *
 * Any failure in S is undone (B killed, cgroup directories removed, run
 * files removed) and answered "fallback": the CLI then runs the Python
 * start, which does it again and reports the error in its own words.
 */
#include <dirent.h>
#include <sched.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "cgclone.h" /* clone_into_cgroup */

#define FS_VERSION "vstui-boot-1"
#define FS_MAX_FIELDS 4096
#define FS_START_TIMEOUT_MS 30000
#define FS_CLI_TIMEOUT_MS 45000

struct fs_field {
    char *s;
    size_t len;
};

struct fs_cache {
    char *buf;
    size_t len;
    struct fs_field f[FS_MAX_FIELDS];
    int n;
};

/* what S needs beyond the cache */
struct fs_ctx {
    struct fs_cache *c;
    const char *name;
    char run_dir[4096];
    const char *log_file;
    const char *xid;
    int log_fd;
    pid_t a, b;
    int cgroup2_fd;
};

static const char *const fs_value_files[] = {
    "state", "xid", "init.pid", "init.start", "supervisor.pid", "supervisor.start",
    "started", "exec.profile", "seccomp.bpf", "meminfo", NULL};

/* -- the cache file ---------------------------------------------------------- */

/* Netstrings "LEN:BYTES," into fields; each ',' becomes the field's NUL. */
static int fs_parse(struct fs_cache *c)
{
    size_t i = 0;
    c->n = 0;
    while (i < c->len) {
        size_t n = 0, digits = 0;
        while (i < c->len && c->buf[i] >= '0' && c->buf[i] <= '9' && digits < 10) {
            n = n * 10 + (size_t)(c->buf[i++] - '0');
            digits++;
        }
        if (!digits || i >= c->len || c->buf[i] != ':' || c->n >= FS_MAX_FIELDS)
            return -1;
        i++;
        if (n >= c->len - i || c->buf[i + n] != ',')
            return -1;
        c->f[c->n].s = c->buf + i;
        c->f[c->n].len = n;
        c->buf[i + n] = '\0';
        c->n++;
        i += n + 1;
    }
    return c->n > 0 && strcmp(c->f[0].s, FS_VERSION) == 0 ? 0 : -1;
}

/* Root's own file only: anything else could smuggle a plan in. */
static int fs_load(struct fs_cache *c, const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 077) ||
        st.st_size <= 0 || st.st_size > (64 << 20)) {
        close(fd);
        return -1;
    }
    c->buf = malloc((size_t)st.st_size + 1);
    c->len = 0;
    while (c->buf && c->len < (size_t)st.st_size) {
        ssize_t got = read(fd, c->buf + c->len, (size_t)st.st_size - c->len);
        if (got <= 0)
            break;
        c->len += (size_t)got;
    }
    close(fd);
    if (!c->buf || c->len != (size_t)st.st_size)
        return -1;
    c->buf[c->len] = '\0';
    return fs_parse(c);
}

/* Fields of op `name` (the first one found), or NULL. */
static struct fs_field *fs_find(struct fs_cache *c, const char *name)
{
    for (int i = 1; i < c->n; i++)
        if (strcmp(c->f[i].s, name) == 0)
            return &c->f[i + 1];
    return NULL;
}

static long long fs_num(const struct fs_field *f)
{
    return strtoll(f->s, NULL, 10);
}

/* Number of fields after an op's name (super: its count + 1). */
static int fs_arity(struct fs_cache *c, int i)
{
    static const struct { const char *op; int n; } table[] = {
        {"stat", 4}, {"absent", 1}, {"vservers", 1}, {"mkdir", 1}, {"write", 2},
        {"tasks", 1}, {"cgroup2", 1}, {"nsflags", 1}, {"timens", 1},
        {"meminfo", 3}, {"profile", 1}, {"seccomp", 1}, {"vinit", 1}, {"plan", 1}, {"xid", 1},
        {"rundir", 1}, {"log", 1}, {NULL, 0}};
    if (strcmp(c->f[i].s, "super") == 0)
        return i + 1 < c->n ? 1 + (int)fs_num(&c->f[i + 1]) : -1;
    for (int k = 0; table[k].op; k++)
        if (strcmp(c->f[i].s, table[k].op) == 0)
            return table[k].n;
    return -1;
}

/* Calls fn(op, fields) for every op; -1 on a malformed cache or fn's -1. */
static int fs_each(struct fs_cache *c, int (*fn)(struct fs_ctx *, const char *, struct fs_field *),
                   struct fs_ctx *ctx)
{
    for (int i = 1; i < c->n;) {
        int n = fs_arity(c, i);
        if (n < 0 || i + n >= c->n)
            return -1;
        if (fn(ctx, c->f[i].s, &c->f[i + 1]) < 0)
            return -1;
        i += n + 1;
    }
    return 0;
}

/* -- checks in the CLI --------------------------------------------------------- */

static int fs_check_dep(struct fs_ctx *ctx, const char *op, struct fs_field *f)
{
    struct stat st;
    (void)ctx;
    if (strcmp(op, "absent") == 0)
        return stat(f[0].s, &st) < 0 && errno == ENOENT ? 0 : -1;
    if (strcmp(op, "stat") != 0)
        return 0;
    if (stat(f[0].s, &st) < 0)
        return -1;
    long long mtime = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    return mtime == fs_num(&f[1]) && st.st_size == fs_num(&f[2]) &&
                   (long long)st.st_ino == fs_num(&f[3])
               ? 0
               : -1;
}

/* rootfs.check_barrier: the guests' parent mode 000 root's; no guest root
 * a symlink or writable by others. */
static int fs_barrier(const char *top)
{
    struct stat st;
    if (lstat(top, &st) < 0 || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) || st.st_uid != 0)
        return -1;
    DIR *dir = opendir(top);
    if (!dir)
        return -1;
    int ok = 0;
    struct dirent *e;
    while (ok == 0 && (e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISLNK(st.st_mode))
            ok = -1;
        else if (S_ISDIR(st.st_mode) && (st.st_uid != 0 || (st.st_mode & 022)))
            ok = -1;
    }
    closedir(dir);
    return ok;
}

/* -- small file helpers ------------------------------------------------------------ */

static int fs_write_file(const char *path, const char *data, size_t len, int flags, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | flags, mode);
    if (fd < 0)
        return -1;
    ssize_t put = write(fd, data, len);
    int err = put == (ssize_t)len ? 0 : -1;
    if (close(fd) < 0)
        err = -1;
    return err;
}

/* runfiles.write_value: "VALUE\n" through a temp file and rename. */
static int fs_value(const char *run_dir, const char *key, const char *value)
{
    char tmp[4200], final[4200], text[4096];
    int n = snprintf(text, sizeof text, "%s\n", value);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", run_dir, key);
    snprintf(final, sizeof final, "%s/%s", run_dir, key);
    if (n < 0 || n >= (int)sizeof text)
        return -1;
    if (fs_write_file(tmp, text, (size_t)n, O_CREAT | O_TRUNC, 0644) < 0)
        return -1;
    return rename(tmp, final);
}

static int fs_value_num(const char *run_dir, const char *key, long long value)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", value);
    return fs_value(run_dir, key, text);
}

static void fs_log(int fd, const char *name, const char *text)
{
    char stamp[32], line[512];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    int n = snprintf(line, sizeof line, "--- vserver %s: %s at %s ---\n", name, text, stamp);
    if (n > 0 && write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0)
        return;
}

/* -- the /proc/meminfo view (engine.rootfs.procview.render_meminfo, usage 0) -- */

static int fs_is_pool_key(const char *keys, const char *key, size_t len)
{
    for (const char *p = keys; *p;) {
        size_t n = strcspn(p, " ");
        if (n == len && strncmp(p, key, len) == 0)
            return 1;
        p += n;
        while (*p == ' ')
            p++;
    }
    return 0;
}

/* One line of the host's meminfo, as the guest sees it at boot (nothing used). */
static size_t fs_meminfo_line(char *out, size_t room, const char *line, size_t len,
                              long long total, const char *pool)
{
    const char *colon = memchr(line, ':', len);
    size_t klen = colon ? (size_t)(colon - line) : len;
    char key[64];
    long long value = -1;
    if (colon && klen < sizeof key - 2) {
        memcpy(key, line, klen);
        key[klen] = '\0';
        if (!strcmp(key, "MemTotal") || !strcmp(key, "MemFree") || !strcmp(key, "MemAvailable"))
            value = total;
        else if (fs_is_pool_key(pool, key, klen) && len > 3 && !memcmp(line + len - 3, " kB", 3))
            value = 0;
    }
    if (value < 0) {
        int n = snprintf(out, room, "%.*s\n", (int)len, line);
        return n > 0 && (size_t)n < room ? (size_t)n : 0;
    }
    strcat(key, ":");
    int n = snprintf(out, room, "%-16s%8lld kB\n", key, value);
    return n > 0 && (size_t)n < room ? (size_t)n : 0;
}

static int fs_meminfo(const char *run_dir, long long limit, const char *pool)
{
    static char host[65536], view[65536];
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, host, sizeof host - 1);
    close(fd);
    if (n <= 0)
        return -1;
    host[n] = '\0';
    long long host_total = -1, total = limit / 1024;
    sscanf(host, "MemTotal: %lld", &host_total);
    size_t used = 0;
    if (host_total >= 0 && total >= host_total) {
        memcpy(view, host, (size_t)n); /* the guest may use all of the host's */
        used = (size_t)n;
    } else {
        for (char *line = host; *line;) {
            size_t len = strcspn(line, "\n");
            used += fs_meminfo_line(view + used, sizeof view - used, line, len, total, pool);
            line += len + (line[len] == '\n');
        }
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/meminfo", run_dir);
    fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int err = pwrite(fd, view, used, 0) == (ssize_t)used && ftruncate(fd, (off_t)used) == 0;
    close(fd);
    return err ? 0 : -1;
}

/* -- S: the host side of the boot -------------------------------------------------- */

static int fs_cgroup_op(struct fs_ctx *ctx, const char *op, struct fs_field *f)
{
    (void)ctx;
    if (strcmp(op, "mkdir") == 0)
        return mkdir(f[0].s, 0755) == 0 || errno == EEXIST ? 0 : -1;
    if (strcmp(op, "write") == 0)
        return fs_write_file(f[0].s, f[1].s, f[1].len, O_TRUNC, 0);
    return 0;
}

/* The cgroup directories made, deepest first; busy parents (other guests) stay. */
static void fs_remove_cgroups(struct fs_cache *c)
{
    for (int round = 0; round < 50; round++) {
        int busy = 0;
        for (int i = c->n - 2; i >= 1; i--) {
            if (strcmp(c->f[i].s, "mkdir") != 0)
                continue;
            if (rmdir(c->f[i + 1].s) < 0 && errno == EBUSY)
                busy = 1;
        }
        if (!busy)
            return;
        usleep(10000); /* the killed init is still exiting */
    }
}

static void fs_remove_run_files(const char *run_dir)
{
    char path[4200];
    for (int i = 0; fs_value_files[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", run_dir, fs_value_files[i]);
        unlink(path);
        snprintf(path, sizeof path, "%s/.%s.tmp", run_dir, fs_value_files[i]);
        unlink(path);
    }
}

static void fs_kill(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

static void fs_undo(struct fs_ctx *ctx)
{
    fs_kill(&ctx->b);
    fs_kill(&ctx->a);
    fs_remove_cgroups(ctx->c);
    fs_remove_run_files(ctx->run_dir);
}

/* Up to `room` bytes from fd until EOF, within the deadline; -1 on timeout. */
static ssize_t fs_read_until(int fd, char *buf, size_t room, long long deadline_ms,
                             int stop_at_newline)
{
    size_t got = 0;
    while (got < room) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long left = deadline_ms - (now.tv_sec * 1000LL + now.tv_nsec / 1000000);
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        ssize_t n = read(fd, buf + got, room - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (stop_at_newline && memchr(buf, '\n', got))
            break;
    }
    return (ssize_t)got;
}

static long long fs_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000LL + now.tv_nsec / 1000000;
}

/* -- A and B ------------------------------------------------------------------------ */

struct fs_boot {
    int pid_w, go_r, err_w, console_w, seccomp_fd, vinit_fd;
    char *plan;
    size_t plan_len;
};

static int fs_join_v1(struct fs_ctx *ctx, const char *op, struct fs_field *f)
{
    (void)ctx;
    /* `tasks` moves just this (single-threaded) process: no RCU grace period */
    return strcmp(op, "tasks") == 0 ? fs_write_file(f[0].s, "0", 1, 0, 0) : 0;
}

/* Offsets that start the new time namespace's clocks at 0 (= starting._zero_clocks). */
static int fs_zero_clocks(void)
{
    struct timespec mono, boot;
    char text[128];
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    int n = snprintf(text, sizeof text, "monotonic -%lld 0\nboottime -%lld 0\n",
                     (long long)mono.tv_sec, (long long)boot.tv_sec);
    return fs_write_file("/proc/self/timens_offsets", text, (size_t)n, 0, 0);
}

static void fs_fail_a(int err_w, const char *what)
{
    dprintf(err_w, "%s: %s", what, strerror(errno));
    _exit(1);
}

/* A: join the v1 cgroups, unshare, fork B (PID 1), report its host PID, exit. */
static void fs_child_a(struct fs_ctx *ctx, struct fs_boot *bt)
{
    struct fs_field *flags = fs_find(ctx->c, "nsflags");
    struct fs_field *timens = fs_find(ctx->c, "timens");
    if (fs_each(ctx->c, fs_join_v1, ctx) < 0)
        fs_fail_a(bt->err_w, "join cgroup");
    if (unshare((int)strtol(flags->s, NULL, 16)) < 0)
        fs_fail_a(bt->err_w, "unshare");
    if (timens && fs_num(timens) && fs_zero_clocks() < 0)
        fs_fail_a(bt->err_w, "timens_offsets");
    /* nothing we mount may reach the host (and host mounts may reach in) */
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        fs_fail_a(bt->err_w, "mount / slave");
    pid_t b = fork();
    if (b < 0)
        fs_fail_a(bt->err_w, "fork");
    if (b == 0) {
        char go = 0;
        close(bt->pid_w);
        if (read(bt->go_r, &go, 1) != 1 || go != 'g')
            _exit(1); /* the starter gave up */
        close(bt->go_r);
        vboot_run(bt->plan, bt->plan_len, bt->console_w, bt->err_w, bt->seccomp_fd, bt->vinit_fd);
        _exit(1);
    }
    dprintf(bt->pid_w, "%d\n", (int)b);
    _exit(0);
}

/* A straight into the guest's cgroup2 group when there is one (cgclone.h). */
static pid_t fs_spawn_a(struct fs_ctx *ctx)
{
    int moved;
    pid_t pid = clone_into_cgroup(ctx->cgroup2_fd, &moved);
    if (pid == 0 && ctx->cgroup2_fd >= 0 && !moved && /* an old kernel: migrate, the slow way */
        (fchdir(ctx->cgroup2_fd) < 0 || fs_write_file("cgroup.procs", "0", 1, 0, 0) < 0))
        _exit(1);
    return pid;
}

static int fs_open_cgroup2(struct fs_ctx *ctx)
{
    struct fs_field *dir = fs_find(ctx->c, "cgroup2");
    ctx->cgroup2_fd = -1;
    if (!dir)
        return 0;
    ctx->cgroup2_fd = open(dir->s, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return ctx->cgroup2_fd < 0 ? -1 : 0;
}

/* -- S ------------------------------------------------------------------------------- */

static int fs_host_side(struct fs_ctx *ctx)
{
    struct fs_field *mem = fs_find(ctx->c, "meminfo");
    struct fs_field *profile = fs_find(ctx->c, "profile");
    struct fs_field *program = fs_find(ctx->c, "seccomp");
    char tmp[4200], final[4200];
    if (fs_each(ctx->c, fs_cgroup_op, ctx) < 0 || fs_open_cgroup2(ctx) < 0)
        return -1;
    if (mem && fs_num(&mem[0]) > 0 && fs_meminfo(ctx->run_dir, fs_num(&mem[0]), mem[2].s) < 0)
        return -1;
    if (!profile || fs_value(ctx->run_dir, "exec.profile", profile->s) < 0)
        return -1;
    snprintf(final, sizeof final, "%s/seccomp.bpf", ctx->run_dir);
    if (!program)
        return unlink(final) == 0 || errno == ENOENT ? 0 : -1;
    /* the program exec uses: a copy in the run directory */
    snprintf(tmp, sizeof tmp, "%s/.seccomp.bpf.tmp", ctx->run_dir);
    int src = open(program->s, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    int dst = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    struct stat st;
    int ok = src >= 0 && dst >= 0 && fstat(src, &st) == 0 && st.st_uid == 0 &&
             copy_file_range(src, NULL, dst, NULL, (size_t)st.st_size, 0) == st.st_size;
    if (src >= 0)
        close(src);
    if (dst >= 0)
        close(dst);
    return ok && rename(tmp, final) == 0 ? 0 : -1;
}

/* Fork A, wait for B's PID, let B go, wait for its exec; B's PID or -1. */
static pid_t fs_boot(struct fs_ctx *ctx, int console_w, long long deadline)
{
    int pid_p[2], go_p[2], err_p[2];
    char line[32] = {0}, message[1024];
    struct fs_field *plan = fs_find(ctx->c, "plan");
    struct fs_field *vinit = fs_find(ctx->c, "vinit");
    struct fs_field *program = fs_find(ctx->c, "seccomp");
    struct fs_boot bt = {.console_w = console_w, .seccomp_fd = -1, .vinit_fd = -1};
    if (!plan || pipe2(pid_p, O_CLOEXEC) < 0 || pipe2(go_p, O_CLOEXEC) < 0 ||
        pipe2(err_p, O_CLOEXEC) < 0)
        return -1;
    bt.pid_w = pid_p[1], bt.go_r = go_p[0], bt.err_w = err_p[1];
    bt.plan = plan->s, bt.plan_len = plan->len;
    if (vinit)
        bt.vinit_fd = open(vinit->s, O_RDONLY | O_CLOEXEC);
    if (program)
        bt.seccomp_fd = open(program->s, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if ((vinit && bt.vinit_fd < 0) || (program && bt.seccomp_fd < 0))
        return -1;
    ctx->a = fs_spawn_a(ctx);
    if (ctx->a == 0)
        fs_child_a(ctx, &bt);
    close(pid_p[1]), close(go_p[0]), close(err_p[1]);
    if (ctx->a < 0 || fs_read_until(pid_p[0], line, sizeof line - 1, deadline, 1) <= 0)
        return -1;
    waitpid(ctx->a, NULL, 0);
    ctx->a = 0;
    ctx->b = (pid_t)atoi(line);
    if (ctx->b <= 0 || write(go_p[1], "g", 1) != 1)
        return -1;
    close(go_p[1]);
    /* B's error pipe closes on its exec; anything on it is a failed step */
    ssize_t said = fs_read_until(err_p[0], message, sizeof message - 1, deadline, 0);
    close(err_p[0]), close(pid_p[0]);
    if (bt.vinit_fd >= 0)
        close(bt.vinit_fd);
    if (bt.seccomp_fd >= 0)
        close(bt.seccomp_fd);
    return said == 0 ? ctx->b : -1;
}

static int fs_record_boot(struct fs_ctx *ctx, long long start)
{
    struct timespec now;
    char started[64], text[64];
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(started, sizeof started, "%lld.%03ld", (long long)now.tv_sec, now.tv_nsec / 1000000);
    if (fs_value_num(ctx->run_dir, "init.pid", ctx->b) < 0 ||
        fs_value_num(ctx->run_dir, "init.start", start) < 0 ||
        fs_value(ctx->run_dir, "started", started) < 0 ||
        fs_value(ctx->run_dir, "state", "running") < 0)
        return -1;
    snprintf(text, sizeof text, "started, init pid %d", (int)ctx->b);
    fs_log(ctx->log_fd, ctx->name, text);
    return 0;
}

/* exec the lean supervisor with the arguments supervisor.main expects */
static void fs_exec_supervisor(struct fs_ctx *ctx, int console_r)
{
    struct fs_field *sup = fs_find(ctx->c, "super");
    struct fs_field *mem = fs_find(ctx->c, "meminfo");
    int count = (int)fs_num(&sup[0]);
    char pid[32], limit[32], fd[32];
    char **argv = calloc((size_t)count + 5, sizeof *argv);
    for (int i = 0; i < count; i++)
        argv[i] = sup[1 + i].s;
    snprintf(pid, sizeof pid, "%d", (int)ctx->b);
    snprintf(limit, sizeof limit, "%lld", mem ? fs_num(&mem[0]) : 0LL);
    snprintf(fd, sizeof fd, "%d", console_r);
    argv[count] = pid, argv[count + 1] = limit, argv[count + 2] = fd;
    argv[count + 3] = mem && fs_num(&mem[0]) > 0 ? mem[1].s : "";
    fcntl(console_r, F_SETFD, 0);
    execv(argv[0], argv);
    fs_log(ctx->log_fd, ctx->name, "cannot exec the supervisor");
    _exit(1);
}

static int fs_open_log(const char *log_file)
{
    int fd = open(log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    int null = open("/dev/null", O_RDONLY);
    if (fd < 0 || null < 0)
        return -1;
    dup2(null, 0), dup2(fd, 1), dup2(fd, 2);
    close(null);
    return fd;
}

static int fs_identity(struct fs_ctx *ctx)
{
    return fs_value(ctx->run_dir, "state", "starting") < 0 ||
                   fs_value_num(ctx->run_dir, "supervisor.pid", getpid()) < 0 ||
                   fs_value_num(ctx->run_dir, "supervisor.start", proc_starttime(getpid())) < 0 ||
                   fs_value(ctx->run_dir, "xid", ctx->xid) < 0
               ? -1
               : 0;
}

/* S: boot, answer the CLI on ready_w ("ok PID" or "fallback"), become the supervisor. */
static void fs_supervise(struct fs_ctx *ctx, int ready_w)
{
    long long deadline = fs_now_ms() + FS_START_TIMEOUT_MS;
    int console[2] = {-1, -1};
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    ctx->log_fd = fs_open_log(ctx->log_file);
    if (ctx->log_fd < 0 || chdir("/") < 0 || fs_identity(ctx) < 0 || fs_host_side(ctx) < 0 ||
        pipe2(console, O_CLOEXEC) < 0 || fs_boot(ctx, console[1], deadline) < 0)
        goto fallback;
    long long start = proc_starttime(ctx->b);
    close(console[1]); /* the guest's init holds the write end now */
    if (start < 0 || fs_record_boot(ctx, start) < 0)
        goto fallback;
    dprintf(ready_w, "ok %d", (int)ctx->b);
    close(ready_w);
    fs_exec_supervisor(ctx, console[0]);
fallback:
    fs_undo(ctx);
    if (write(ready_w, "fallback", 8) < 0)
        _exit(1);
    _exit(1);
}

/* -- the CLI ----------------------------------------------------------------------- */

/* run_dir/lock, taken without waiting (RunLock's file); -1 when busy or odd. */
static int fs_lock(const char *run_dir)
{
    char path[4200];
    struct stat mine, now;
    snprintf(path, sizeof path, "%s/lock", run_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fstat(fd, &mine) < 0 || stat(path, &now) < 0 ||
        mine.st_ino != now.st_ino || mine.st_dev != now.st_dev) {
        close(fd);
        return -1;
    }
    return fd;
}

static int fs_leftovers(const char *run_dir)
{
    char path[4200];
    struct stat st;
    for (int i = 0; fs_value_files[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", run_dir, fs_value_files[i]);
        if (lstat(path, &st) == 0 || errno != ENOENT)
            return 1;
    }
    return 0;
}

static int fs_mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int bad = mkdir(path, 0777) < 0 && errno != EEXIST;
        *p = '/';
        if (bad)
            return -1;
    }
    return mkdir(path, 0777) < 0 && errno != EEXIST ? -1 : 0;
}

/* Everything before S: the cache, its dependencies, the lock, the barrier. */
static int fs_prepare(struct fs_ctx *ctx, const char *root, const char *name)
{
    char cache[4200];
    /* = bootcache.cache_file: ROOT/var/lib/vservers/boot-cache/NAME */
    snprintf(cache, sizeof cache, "%s/var/lib/vservers/boot-cache/%s",
             strcmp(root, "/") == 0 ? "" : root, name);
    if (fs_load(ctx->c, cache) < 0 || fs_each(ctx->c, fs_check_dep, ctx) < 0)
        return -1;
    struct fs_field *rundir = fs_find(ctx->c, "rundir"), *log = fs_find(ctx->c, "log");
    struct fs_field *xid = fs_find(ctx->c, "xid"), *top = fs_find(ctx->c, "vservers");
    struct fs_field *sup = fs_find(ctx->c, "super"), *flags = fs_find(ctx->c, "nsflags");
    if (!rundir || !log || !xid || !top || !sup || !flags || !fs_find(ctx->c, "plan") ||
        rundir->len >= sizeof ctx->run_dir)
        return -1;
    ctx->name = name, ctx->log_file = log->s, ctx->xid = xid->s;
    memcpy(ctx->run_dir, rundir->s, rundir->len + 1);
    return fs_barrier(top->s);
}

/* 0 when the guest was started here; -1: nothing done, let Python start it. */
static int fs_try_start(const char *root, const char *name)
{
    static struct fs_cache cache;
    struct fs_ctx ctx = {.c = &cache, .cgroup2_fd = -1};
    char reply[64] = {0};
    int ready[2];
    if (geteuid() != 0 || fs_prepare(&ctx, root, name) < 0 || fs_mkdirs(ctx.run_dir) < 0)
        return -1;
    int lock = fs_lock(ctx.run_dir);
    if (lock < 0)
        return -1;
    if (fs_leftovers(ctx.run_dir) || pipe2(ready, O_CLOEXEC) < 0) {
        close(lock);
        return -1;
    }
    pid_t middle = fork();
    if (middle == 0) {
        close(ready[0]);
        close(lock);
        setsid();
        if (fork() == 0)
            fs_supervise(&ctx, ready[1]);
        _exit(0);
    }
    close(ready[1]);
    if (middle > 0)
        waitpid(middle, NULL, 0);
    ssize_t n = middle > 0
                    ? fs_read_until(ready[0], reply, sizeof reply - 1, fs_now_ms() + FS_CLI_TIMEOUT_MS, 0)
                    : -1;
    close(ready[0]);
    flock(lock, LOCK_UN);
    close(lock);
    return n > 3 && strncmp(reply, "ok ", 3) == 0 ? 0 : -1;
}
