/*
 * cache.h: `vserver NAME start` replayed from the boot cache, without Python.
 *
 * engine/runtime/bootcache.py writes the cache after a successful Python
 * start: bootcache.CACHE_OPS, the format version first. It holds the start
 * plan exactly as the Python start handed it to vboot (seccomp program
 * included), the lean supervisor's command, and a record of everything the
 * plan depends on, each with the value it had when the plan was made:
 *
 *   content PATH SHA256          NAME.conf: by content
 *   line PATH KEY VALUE          the guest's own line of a table all guests share
 *                                (its context id): another guest's start never
 *                                changes it, so it never invalidates this entry
 *   binary PATH SHA256 DEV INO SIZE MTIME CTIME
 *                                the helpers and this front end: by content,
 *                                the stat (ctime included) only as a shortcut;
 *                                a binary whose stat changed but whose bytes
 *                                did not (a hard link, chmod, touch) gets its
 *                                new stat written back: hashed once, not at
 *                                every start (ch_save)
 *   code PATH DEV INO SIZE MTIME CTIME   the engine's sources (the planner)
 *   inroot ROOT PATH PRESENT     a guest file whose presence decides the plan
 *   inlink ROOT PATH PRESENT     the same for the entry itself (a symlink not followed)
 *   source PATH DEV INO          a host bind source (directory or file), reached
 *                                without symlinks
 *
 * The plan is replayed only when every record still holds and this very
 * binary is one of the recorded ones; anything else, or any failure on the
 * way (undone by start.h), hands the start to the Python tool, which plans
 * again, names what is wrong and writes a fresh entry.
 */
#ifndef VSTUI_CACHE_H
#define VSTUI_CACHE_H

#include "start.h" /* first: vstui.h defines _GNU_SOURCE */

#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/un.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* How long the supervisor, having answered, lets the CLI end before it becomes vsuper. */
#define CH_CLI_GRACE_MS 20

/* -- SHA-256 (FIPS 180-4), for content records ----------------------------------- */

struct ch_sha {
    uint32_t h[8];
    uint64_t bytes;
    unsigned char block[64];
};

#define CH_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void ch_sha_block(struct ch_sha *c, const unsigned char *p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = CH_ROR(w[i - 15], 7) ^ CH_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = CH_ROR(w[i - 2], 17) ^ CH_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, c->h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (CH_ROR(v[4], 6) ^ CH_ROR(v[4], 11) ^ CH_ROR(v[4], 25)) +
                      ((v[4] & v[5]) ^ (~v[4] & v[6])) + k[i] + w[i];
        uint32_t t2 = (CH_ROR(v[0], 2) ^ CH_ROR(v[0], 13) ^ CH_ROR(v[0], 22)) +
                      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        c->h[i] += v[i];
}

/* The hex SHA-256 of data (out: 65 bytes). */
static void ch_sha256(const void *data, size_t len, char *out) {
    struct ch_sha c = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
                        0x1f83d9ab, 0x5be0cd19},
                       0,
                       {0}};
    const unsigned char *p = data;
    size_t left = len;
    for (; left >= 64; p += 64, left -= 64)
        ch_sha_block(&c, p);
    unsigned char tail[128] = {0};
    memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t end = left < 56 ? 64 : 128;
    for (int i = 0; i < 8; i++)
        tail[end - 1 - i] = (unsigned char)((uint64_t)len * 8 >> (8 * i));
    for (size_t at = 0; at < end; at += 64)
        ch_sha_block(&c, tail + at);
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", c.h[i / 4] >> (24 - 8 * (i % 4)) & 0xff);
}

/* -- the dependency records ---------------------------------------------------------- */

struct ch {
    struct vs_field *f;
    long count;
    struct vs_field *rundir, *log, *plan, *super, *ready;
    struct stat self;
    int self_ok;
    int restated; /* a binary record's stat was renewed: ch_save writes the entry back */
};

/* The hex SHA-256 of the file; st (when not NULL): its stat before it was read. */
static int ch_file_sha(const char *path, char *hex, struct stat *st) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    char *data = fd < 0 || (st && fstat(fd, st) < 0) ? NULL : vs_read_fd(fd, &len);
    if (fd >= 0)
        close(fd);
    if (!data)
        return -1;
    ch_sha256(data, len, hex);
    free(data);
    return 0;
}

/* dev ino size mtime ctime (ns) of st against five fields */
static int ch_same_stat(const struct stat *st, const struct vs_field *a) {
    long long want[5], have[5] = {(long long)st->st_dev, (long long)st->st_ino,
                                  (long long)st->st_size,
                                  st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
                                  st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec};
    for (int k = 0; k < 5; k++)
        if (vs_ll(a[k].s, 10, &want[k]) < 0 || want[k] != have[k])
            return 0;
    return 1;
}

static int ch_content(struct ch *c, struct vs_field *a) {
    char hex[65];
    (void)c;
    return ch_file_sha(a[0].s, hex, NULL) == 0 && strcmp(hex, a[1].s) == 0 ? 0 : -1;
}

/* The file holds the line "KEY VALUE" (its other lines are other guests'). */
static int ch_line(struct ch *c, struct vs_field *a) {
    int fd = open(a[0].s, O_RDONLY | O_CLOEXEC);
    size_t len = 0, klen = a[1].n, vlen = a[2].n;
    char *data = fd < 0 ? NULL : vs_read_fd(fd, &len);
    int found = 0;
    (void)c;
    if (fd >= 0)
        close(fd);
    for (size_t at = 0; data && at < len && !found;) {
        char *end = memchr(data + at, '\n', len - at);
        size_t n = (end ? (size_t)(end - data) : len) - at;
        const char *l = data + at;
        found = n == klen + 1 + vlen && memcmp(l, a[1].s, klen) == 0 && l[klen] == ' ' &&
                memcmp(l + klen + 1, a[2].s, vlen) == 0;
        at += n + 1;
    }
    free(data);
    return found ? 0 : -1;
}

/* Five stat fields (dev ino size mtime ctime) renewed from st; kept as they were when
 * the change is younger than a second: a same-size rewrite within the file system's
 * coarse time tick after our read would keep the stat we record ("racy git"). */
static void ch_restat(struct ch *c, struct vs_field *a, const struct stat *st) {
    long long v[5] = {(long long)st->st_dev, (long long)st->st_ino, (long long)st->st_size,
                      st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
                      st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (st->st_ctim.tv_sec + 1 >= now.tv_sec)
        return;
    for (int k = 0; k < 5; k++) {
        char *text = malloc(24);
        if (!text)
            return;
        a[k].n = (size_t)snprintf(text, 24, "%lld", v[k]);
        a[k].s = text;
    }
    c->restated = 1;
}

static int ch_binary(struct ch *c, struct vs_field *a) {
    struct stat st, hashed;
    char hex[65];
    if (stat(a[0].s, &st) < 0)
        return -1;
    if (!ch_same_stat(&st, &a[2])) {
        if (ch_file_sha(a[0].s, hex, &hashed) < 0 || strcmp(hex, a[1].s))
            return -1;
        ch_restat(c, &a[2], &hashed); /* the stat of the very bytes just hashed */
    }
    if (st.st_dev == c->self.st_dev && st.st_ino == c->self.st_ino)
        c->self_ok = 1;
    return 0;
}

static int ch_code(struct ch *c, struct vs_field *a) {
    struct stat st;
    (void)c;
    return stat(a[0].s, &st) == 0 && ch_same_stat(&st, &a[1]) ? 0 : -1;
}

static int ch_open(int dirfd, const char *path, int flags, uint64_t resolve) {
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* Whether PATH resolves inside ROOT as it did (nofollow: the last component itself). */
static int ch_presence(struct vs_field *a, int nofollow) {
    int root = ch_open(AT_FDCWD, a[0].s, O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS);
    if (root < 0)
        return -1;
    int fd = ch_open(root, a[1].s, O_PATH | (nofollow ? O_NOFOLLOW : 0),
                     RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
    int err = errno;
    close(root);
    if (fd >= 0)
        close(fd);
    if (fd < 0 && err != ENOENT)
        return -1;
    return (fd >= 0) == (strcmp(a[2].s, "1") == 0) ? 0 : -1;
}

static int ch_inroot(struct ch *c, struct vs_field *a) {
    (void)c;
    return ch_presence(a, 0);
}

static int ch_inlink(struct ch *c, struct vs_field *a) {
    (void)c;
    return ch_presence(a, 1);
}

static int ch_source(struct ch *c, struct vs_field *a) {
    struct stat st;
    long long dev, ino;
    (void)c;
    int fd = ch_open(AT_FDCWD, a[0].s, O_PATH, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
    int ok = fd >= 0 && fstat(fd, &st) == 0 && vs_ll(a[1].s, 10, &dev) == 0 &&
             vs_ll(a[2].s, 10, &ino) == 0 && (long long)st.st_dev == dev &&
             (long long)st.st_ino == ino;
    if (fd >= 0)
        close(fd);
    return ok ? 0 : -1;
}

#define CH_KEEP(slot)                                                                          \
    static int ch_##slot(struct ch *c, struct vs_field *a) {                                   \
        c->slot = a;                                                                           \
        return 0;                                                                              \
    }
CH_KEEP(rundir)
CH_KEEP(log)
CH_KEEP(plan)
CH_KEEP(super)
CH_KEEP(ready)

/* the table is bootcache.CACHE_OPS (consts.h): a new record needs its ch_NAME here */
typedef int (*ch_fn)(struct ch *, struct vs_field *);
#define CH_FN(name, n) ch_##name,
#define CH_OP(name, n) {#name, n},
static const ch_fn ch_fns[] = {VS_CACHE_OPS(CH_FN)};
static const struct vs_op ch_ops[] = {VS_CACHE_OPS(CH_OP)};
#define CH_NOPS ((int)(sizeof ch_ops / sizeof ch_ops[0]))

/* Root's own file only (anything else could smuggle a plan in), every record
 * still true; 0 when the entry may be replayed. */
static int ch_load(struct ch *c, const char *path) {
    struct stat st;
    size_t len = 0;
    const char *bad;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    char *buf = NULL;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 &&
        !(st.st_mode & 077) && st.st_size < (64 << 20))
        buf = vs_read_fd(fd, &len);
    if (fd >= 0)
        close(fd);
    if (!buf || !(c->f = vs_fields(buf, len, &c->count)) || c->count < 1 ||
        strcmp(c->f[0].s, VS_CACHE_VERSION) ||
        vs_check(ch_ops, CH_NOPS, c->f + 1, c->count - 1, &bad) < 0 ||
        stat("/proc/self/exe", &c->self) < 0)
        return -1;
    for (long at = 1; at < c->count;) {
        int k = vs_op_index(ch_ops, CH_NOPS, c->f[at].s);
        if (ch_fns[k](c, c->f + at + 1) < 0)
            return -1;
        at += 1 + vs_arity(&ch_ops[k], c->f + at + 1, c->count - at - 1);
    }
    return c->self_ok && c->rundir && c->log && c->plan && c->super ? 0 : -1;
}

/* The entry written back with its renewed records, as bootcache.write writes it (a
 * private temporary file renamed over it); best effort: a failure costs speed only.
 * Safe against any race: an entry is replayed only when its every record holds. */
static void ch_save(const struct ch *c, const char *path) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *out = fd < 0 ? NULL : fdopen(fd, "w");
    int bad = !out;
    for (long k = 0; out && k < c->count; k++)
        bad |= fprintf(out, "%zu:", c->f[k].n) < 0 ||
               fwrite(c->f[k].s, 1, c->f[k].n, out) != c->f[k].n || fputc(',', out) == EOF;
    if (out)
        bad |= fclose(out) != 0;
    else if (fd >= 0)
        close(fd);
    if (bad || rename(tmp, path) < 0)
        unlink(tmp);
}

/* -- the replay ------------------------------------------------------------------------ */

/* run_dir/lock (RunLock's file), taken without waiting; -1 when busy or odd. */
static int ch_lock(const char *run_dir) {
    char path[4200];
    struct stat mine, now;
    snprintf(path, sizeof path, "%s/" VS_LOCK_FILE, run_dir);
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

/* Run files left by a dead guest: Python cleans those up. */
static int ch_leftovers(const char *run_dir) {
    static const char *const values[] = {VS_RUN_FILES};
    char path[4200];
    struct stat st;
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
        snprintf(path, sizeof path, "%s/%s", run_dir, values[k]);
        if (lstat(path, &st) == 0 || errno != ENOENT)
            return 1;
    }
    return 0;
}

static int ch_mkdirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int bad = mkdir(path, 0755) < 0 && errno != EEXIST;
        *p = '/';
        if (bad)
            return -1;
    }
    return mkdir(path, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

/* The guest's console: a pty whose slave init gets (boot.h binds it on /dev/console). */
static int ch_pty(int *master, int *slave) {
    *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0 || grantpt(*master) < 0 || unlockpt(*master) < 0)
        return -1;
    *slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    return *slave < 0 ? -1 : 0;
}

/* A socket bound at run_dir/FILE, root's only (runfiles.bind_socket): the sd_notify
 * datagrams (the guest's READY=1) or the console's stream, listening before the start
 * is answered, so `vserver NAME console` right after it finds the guest's console. */
static int ch_socket(const char *run_dir, const char *file, int type) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%s", run_dir, file) >=
        sizeof addr.sun_path)
        return -1;
    unlink(addr.sun_path);
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    mode_t old = umask(077);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old);
    if (rc == 0 && type == SOCK_STREAM)
        rc = listen(fd, 4);
    if (rc < 0 && fd >= 0)
        close(fd), fd = -1;
    return fd;
}

/* The CLI (our parent, `cli`) gone, or CH_CLI_GRACE_MS passed. It was woken by our
 * answer, and the pipe's write wakes a reader on the writer's CPU (a "sync" wake-up,
 * fs/pipe.c pipe_write): had we exec'd vsuper (0.3-0.5 ms) at once, the CLI would
 * often have waited for that, and for vsuper's set-up, on our CPU, while the other
 * ran the guest's start command. Blocked here, we leave it the CPU. */
static void ch_let_cli_end(pid_t cli) {
    int fd = (int)syscall(SYS_pidfd_open, cli, 0);
    if (fd < 0)
        return;
    struct pollfd p = {fd, POLLIN, 0};
    if (getppid() == cli) /* not re-parented: the pidfd is the CLI's */
        poll(&p, 1, CH_CLI_GRACE_MS);
    close(fd);
}

/* S: a subreaper with its stdio on the log; boot, become the supervisor, which answers
 * the CLI (`cli`, our parent) once the guest's init is up (supervisor.Supervisor._answer). */
static void ch_supervise(struct ch *c, int ready_w, pid_t cli) {
    int master, slave;
    setsid(); /* S's PID names its session: the supervision's (stopping.end_supervision) */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    int log = open(c->log->s, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    int null = open("/dev/null", O_RDONLY);
    if (log < 0 || null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0 ||
        chdir("/") < 0 || ch_pty(&master, &slave) < 0)
        _exit(1);
    int notify = ch_socket(c->rundir->s, VS_NOTIFY_FILE, SOCK_DGRAM);
    int listening = ch_socket(c->rundir->s, VS_CONSOLE_FILE, SOCK_STREAM);
    if (notify < 0 || listening < 0)
        _exit(1);
    struct st_io io = {.report = -1, .go = -1, .console = slave, .supervisor = getpid(),
                       .reap_late = 1};
    pid_t b = vs_start(c->plan->s, c->plan->n, &io);
    /* the CLI may have been killed meanwhile: its gone reader must not kill us
     * (SIGPIPE) before the supervisor's exec. Only now: B, the guest's init,
     * keeps the default disposition. */
    signal(SIGPIPE, SIG_IGN);
    if (b < 0) {
        dprintf(2, "vserver: cached start refused (%s); starting through Python\n", io.error);
        vs_reap(&io);
        (void)!write(ready_w, "fallback", 8);
        _exit(1);
    }
    close(slave); /* the guest's init holds the terminal now */
    if (c->ready) { /* the plan says vinit: running is ready, answer now */
        sigset_t term; /* one sent until vsuper runs stays pending for it (it blocks it) */
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, NULL);
        dprintf(ready_w, "ok %d", (int)b);
        close(ready_w);
        ready_w = -1;
        ch_let_cli_end(cli);
    }
    vs_reap(&io); /* A and the user namespace's holder: after the answer */
    signal(SIGPIPE, SIG_DFL);
    /* the lean supervisor: its command, then init's PID, the console, notify, console
     * socket and ready fds (supervisor.main) */
    long long n;
    vs_ll(c->super[0].s, 10, &n);
    char **argv = calloc((size_t)n + 6, sizeof *argv), pid[32], fds[4][32];
    int pass[4] = {master, notify, listening, ready_w};
    for (long long k = 0; argv && k < n; k++)
        argv[k] = c->super[1 + k].s;
    snprintf(pid, sizeof pid, "%d", (int)b);
    if (argv) {
        argv[n] = pid;
        for (int k = 0; k < 4; k++) {
            snprintf(fds[k], sizeof fds[k], "%d", pass[k]);
            argv[n + 1 + k] = fds[k];
            if (pass[k] >= 0)
                fcntl(pass[k], F_SETFD, 0);
        }
        execv(argv[0], argv);
    }
    dprintf(2, "vserver: cannot exec the supervisor: %s\n", strerror(errno));
    _exit(1);
}

/* The supervisor's answer: 0 started (a warning if still booting), 1 failed (said on
 * stderr), -1 no answer or a refused replay: let Python start it. */
static int ch_answer(const char *name, const char *reply, ssize_t n) {
    if (n > 3 && strncmp(reply, "ok ", 3) == 0) {
        if (strstr(reply, " booting"))
            dprintf(2, "vserver: %s: init has not reported its boot finished after %d s; it is "
                       "still booting\n", name, VS_READY_TIMEOUT_MS / 1000);
        return 0;
    }
    if (n > 6 && strncmp(reply, "error ", 6) == 0) {
        char shown[1024];
        dprintf(2, "vserver: %s: %s\n", name, vs_visible(reply + 6, shown, sizeof shown));
        return 1;
    }
    return -1;
}

/* 0 when the guest was started here, 1 when its start failed; -1: nothing done, let
 * Python start it. */
static int cache_start(const char *root, const char *name) {
    static struct ch c;
    static char reply[65536];
    char path[4200];
    int ready[2];
    snprintf(path, sizeof path, "%s/" VS_STATE_DIR "/" VS_CACHE_DIR "/%s",
             strcmp(root, "/") == 0 ? "" : root, name);
    if (geteuid() != 0 || ch_load(&c, path) < 0 || ch_mkdirs(c.rundir->s) < 0)
        return -1;
    if (c.restated)
        ch_save(&c, path);
    int lock = ch_lock(c.rundir->s);
    if (lock < 0)
        return -1;
    if (ch_leftovers(c.rundir->s) || pipe2(ready, O_CLOEXEC) < 0) {
        close(lock);
        return -1;
    }
    /* S is our child (it starts a session of its own), not a grandchild: no middle
     * process to fork and reap on the start's path. Re-parented when we exit, as a
     * grandchild would have been once its parent exited. */
    pid_t cli = getpid(), sup = fork();
    if (sup == 0) {
        close(ready[0]);
        close(lock);
        ch_supervise(&c, ready[1], cli);
    }
    close(ready[1]);
    long long wait = VS_START_TIMEOUT_MS + VS_READY_TIMEOUT_MS + 15000;
    ssize_t n = sup > 0 ? st_read(ready[0], reply, sizeof reply - 1, st_now_ms() + wait, 0) : -1;
    close(ready[0]);
    flock(lock, LOCK_UN);
    close(lock);
    int answer = ch_answer(name, reply, n);
    if (answer < 0 && sup > 0) /* S refused the replay and exits: Python must not inherit it */
        waitpid(sup, NULL, n > 0 ? 0 : WNOHANG);
    return answer;
}

#endif /* VSTUI_CACHE_H */
