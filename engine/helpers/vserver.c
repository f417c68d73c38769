/*
 * vserver: the compiled front end of `vserver` (installed as .venv/bin/vserver).
 *
 * `vserver NAME exec CMD...` must start about as fast as lxc-attach, and the
 * Python interpreter alone takes 13-20 ms to start. So for exactly
 *
 *     vserver [--root DIR | --root=DIR] NAME exec [--] CMD [ARGS...]
 *
 * run as root with no terminal on fds 0-2, this program does what
 * engine/runtime/enter.py exec_in(..., replace=True) does on that path:
 * checks init's identity, reads exec.profile, opens init's namespace fds,
 * re-checks the identity, makes a sealed memfd copy of vexec, opens the
 * seccomp program, joins init's v1 cgroups and opens its cgroup2 directory,
 * then fexecve()s the memfd with the same argv and environment.
 *
 * Everything else (other commands, other forms, a terminal, a stopped or
 * private guest, any unexpected error) falls back to the Python
 * implementation with the user's words unchanged, which prints the proper
 * one-line error or does the work. This program prints nothing itself
 * unless even that exec fails.
 *
 * VSTUI_PYTHON (the venv's interpreter) and VSTUI_HELPERS (this directory)
 * are compiled in by engine/helpers/build.py. VSTUI_FALLBACK=0 in the
 * environment makes every fallback exit 125 instead (tests: which path ran).
 */
#define _GNU_SOURCE
#include "cache.h" /* cache_start: `start` replayed from the boot cache */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>


#ifndef VSTUI_PYTHON
#error "build with -DVSTUI_PYTHON=... (python -m engine.helpers.build)"
#endif
#ifndef VSTUI_HELPERS
#error "build with -DVSTUI_HELPERS=... (python -m engine.helpers.build)"
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x10U /* kernel >= 6.3: say so, or vm.memfd_noexec may refuse */
#endif
#ifndef F_SEAL_WRITE
#define F_ADD_SEALS 1033
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif

#define PATH_ENV "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define SMALL_FILE 65536 /* run files and /proc/PID/cgroup: more is not ours */
#define MAX_LIMITS 64
#define MAX_HIER 64    /* cgroup hierarchies in /proc/PID/cgroup */
#define MAX_MOUNTS 512 /* cgroup mounts in mountinfo */
#define MAX_HELD 16

/* The words of the command line, as the Python dispatcher would split them. */
struct request {
    const char *root;
    const char *name;
    const char *command;
    char **rest; /* the words after COMMAND, NULL-terminated */
    int nrest;
};

/* Every fd opened on the way: closed before falling back to Python. */
struct held {
    int fd[MAX_HELD];
    int n;
};

static int hold(struct held *h, int fd) {
    if (fd >= 0 && h->n < MAX_HELD)
        h->fd[h->n++] = fd;
    return fd;
}

static void release(struct held *h) {
    while (h->n > 0)
        close(h->fd[--h->n]);
}

/* -- small file helpers ------------------------------------------------------ */

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* runfiles.read_value: the stripped text of run_dir/key, NULL when empty or absent. */
static char *read_value(const char *run_dir, const char *key, char *buf, size_t size) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", run_dir, key) >= (int)sizeof path)
        return NULL;
    ssize_t n = vs_read_small(path, buf, size);
    if (n < 0)
        return NULL;
    while (n > 0 && is_space(buf[n - 1]))
        buf[--n] = '\0';
    char *text = buf;
    while (is_space(*text))
        text++;
    return *text ? text : NULL;
}

/* A whole decimal number (optional sign), as int() of a plain word. */
static int parse_ll(const char *text, long long *out) {
    char *end;
    if (!*text || is_space(*text))
        return -1;
    errno = 0;
    *out = strtoll(text, &end, 10);
    return errno || *end ? -1 : 0;
}

/* -- init's identity --------------------------------------------------------- */

/* profile.init_identity, requiring both files (anything else: Python decides). */
static int init_identity(const char *run_dir, long long *pid, long long *start) {
    char buf[256];
    const char *text = read_value(run_dir, "init.pid", buf, sizeof buf);
    if (text == NULL || parse_ll(text, pid) < 0 || *pid <= 0)
        return -1;
    text = read_value(run_dir, "init.start", buf, sizeof buf);
    if (text == NULL || parse_ll(text, start) < 0)
        return -1;
    return vs_starttime(*pid) == *start ? 0 : -1;
}

/* -- exec.profile ------------------------------------------------------------ */

struct profile {
    uint64_t caps;
    int private_;
    int nice_set;
    long long nice;
    long long limits[MAX_LIMITS][3];
    int nlimits;
};

/* Split one line into at most 5 words (profile lines have at most 4). */
static int split_words(char *line, char **words) {
    int n = 0;
    for (char *save = NULL, *w = strtok_r(line, " \t", &save); w && n < 5;
         w = strtok_r(NULL, " \t", &save))
        words[n++] = w;
    return n;
}

/* One `key value...` line; unknown keys are skipped (newer starts). */
static int parse_profile_line(char *line, struct profile *p) {
    char *w[5];
    int n = split_words(line, w);
    if (n == 0)
        return 0;
    if (strcmp(w[0], "caps") == 0) {
        char *end;
        if (n < 2 || !*w[1])
            return -1;
        errno = 0;
        unsigned long long mask = strtoull(w[1], &end, 16);
        if (errno || *end || w[1][0] == '-')
            return -1;
        p->caps = mask;
    } else if (strcmp(w[0], "private") == 0) {
        if (n < 2)
            return -1;
        p->private_ = strcmp(w[1], "1") == 0;
    } else if (strcmp(w[0], "nice") == 0) {
        if (n < 2 || parse_ll(w[1], &p->nice) < 0)
            return -1;
        p->nice_set = 1;
    } else if (strcmp(w[0], "rlimit") == 0) {
        if (n < 4 || p->nlimits == MAX_LIMITS)
            return -1;
        for (int k = 0; k < 3; k++)
            if (parse_ll(w[1 + k], &p->limits[p->nlimits][k]) < 0)
                return -1;
        p->nlimits++;
    }
    return 0;
}

/* profile.read(program=False); -1 when absent or not what we can parse. */
static int read_profile(const char *run_dir, struct profile *p) {
    static char buf[SMALL_FILE];
    char *text = read_value(run_dir, "exec.profile", buf, sizeof buf);
    if (text == NULL)
        return -1;
    memset(p, 0, sizeof *p);
    for (char *save = NULL, *line = strtok_r(text, "\n\r\v\f", &save); line;
         line = strtok_r(NULL, "\n\r\v\f", &save))
        if (parse_profile_line(line, p) < 0)
            return -1;
    return 0;
}

/* -- namespaces -------------------------------------------------------------- */

static const char *const NAMESPACES[] = {"ipc", "uts", "net", "mnt", "pid", "cgroup"};
#define N_NS 6 /* time is apart: joined only when it differs from ours */

struct nsfds {
    int fd[N_NS]; /* in NAMESPACES order */
    int time;     /* -1: the same as ours */
};

/* An fd vexec inherits (no O_CLOEXEC). */
static int open_inheritable(const char *path, int flags) {
    return open(path, O_RDONLY | flags);
}

static int open_time_namespace(long long pid, struct held *h) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/ns/time", pid);
    int fd = hold(h, open_inheritable(path, 0));
    if (fd < 0)
        return errno == ENOENT ? -1 : -2; /* ENOENT: no time namespaces here */
    struct stat theirs, ours;
    if (fstat(fd, &theirs) < 0 || stat("/proc/self/ns/time", &ours) < 0)
        return -2;
    if (theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino) {
        close(fd);
        h->n--; /* it was the last one held */
        return -1;
    }
    return fd;
}

static int open_namespaces(long long pid, struct nsfds *ns, struct held *h) {
    char path[64];
    for (int k = 0; k < N_NS; k++) {
        snprintf(path, sizeof path, "/proc/%lld/ns/%s", pid, NAMESPACES[k]);
        if ((ns->fd[k] = hold(h, open_inheritable(path, 0))) < 0)
            return -1;
    }
    ns->time = open_time_namespace(pid, h);
    return ns->time == -2 ? -1 : 0;
}

/* -- the sealed copy of vexec ------------------------------------------------ */

/* enter._helper_binary: a vexec older than its source is Python's to rebuild. */
static int helper_is_fresh(const char *binary) {
    struct stat bin, src;
    if (stat(binary, &bin) < 0)
        return 0;
    if (stat(VSTUI_HELPERS "/vexec.c", &src) < 0)
        return 1;
    if (bin.st_mtim.tv_sec != src.st_mtim.tv_sec)
        return bin.st_mtim.tv_sec > src.st_mtim.tv_sec;
    return bin.st_mtim.tv_nsec >= src.st_mtim.tv_nsec;
}

static int copy_into(int memfd, const char *binary) {
    int src = open(binary, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (src < 0)
        return -1;
    if (fstat(src, &st) < 0) {
        close(src);
        return -1;
    }
    off_t offset = 0;
    ssize_t sent = 0;
    while (offset < st.st_size) {
        sent = sendfile(memfd, src, &offset, (size_t)(st.st_size - offset));
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0)
            break; /* 0: the source shrank meanwhile (runfiles.copy_fd stops too) */
    }
    close(src);
    return sent < 0 ? -1 : 0;
}

/* enter.sealed_helper: a guest reading /proc/PID/exe finds a private, sealed copy. */
static int sealed_helper(struct held *h) {
    const char *binary = VSTUI_HELPERS "/vexec";
    if (!helper_is_fresh(binary))
        return -1;
    unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
    int memfd = memfd_create("vexec", flags | MFD_EXEC);
    if (memfd < 0 && errno == EINVAL) /* a kernel before 6.3 */
        memfd = memfd_create("vexec", flags);
    if (hold(h, memfd) < 0)
        return -1;
    if (copy_into(memfd, binary) < 0)
        return -1;
    int seals = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
    return fcntl(memfd, F_ADD_SEALS, seals) < 0 ? -1 : memfd;
}

/* -- cgroups ----------------------------------------------------------------- */

struct hier {
    char key[256]; /* sorted controllers, "" for cgroup2 */
    const char *path;
};

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The hierarchy key: its controllers sorted and comma-joined (enter._parse_cgroup). */
static int sorted_key(char *controllers, char *out, size_t size) {
    char *items[64];
    int n = 0;
    char *p = controllers;
    for (;;) { /* split(","), empty items kept like Python's */
        if (n == 64)
            return -1;
        items[n++] = p;
        char *comma = strchr(p, ',');
        if (comma == NULL)
            break;
        *comma = '\0';
        p = comma + 1;
    }
    qsort(items, (size_t)n, sizeof *items, cmp_str);
    size_t used = 0;
    out[0] = '\0';
    for (int k = 0; k < n; k++) {
        int w = snprintf(out + used, size - used, "%s%s", k ? "," : "", items[k]);
        if (w < 0 || (size_t)w >= size - used)
            return -1;
        used += (size_t)w;
    }
    return 0;
}

/* /proc/PID/cgroup (in buf, cut in place) -> hierarchies; count or -1. */
static int parse_cgroup(char *buf, struct hier *out) {
    int n = 0;
    for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        if (n == MAX_HIER)
            return -1;
        *c2 = '\0';
        out[n].path = c2 + 1;
        if (c1[1] == '\0')
            out[n].key[0] = '\0';
        else if (sorted_key(c1 + 1, out[n].key, sizeof out[n].key) < 0)
            return -1;
        n++;
    }
    return n;
}

static const char *path_of(const struct hier *h, int n, const char *key) {
    const char *found = NULL;
    for (int k = 0; k < n; k++)
        if (strcmp(h[k].key, key) == 0)
            found = h[k].path; /* a dict: the last one wins */
    return found;
}

/* ".." in path.split("/"): never follow a path out of the hierarchy. */
static int has_dotdot(const char *path) {
    for (const char *p = path; (p = strstr(p, "..")) != NULL; p += 2)
        if ((p == path || p[-1] == '/') && (p[2] == '/' || p[2] == '\0'))
            return 1;
    return 0;
}

struct mount {
    const char *point;
    const char *opts; /* the super options */
    int cgroup2;      /* cgroup2's options also hold "" (enter._cgroup_mounts) */
};

static char *nth_field(char *s, int n) {
    for (int k = 0; *s; k++) {
        while (*s == ' ')
            s++;
        if (k == n)
            return *s ? s : NULL;
        while (*s && *s != ' ')
            s++;
    }
    return NULL;
}

static void cut_field(char *s) {
    while (*s && *s != ' ')
        s++;
    *s = '\0';
}

/* One mountinfo line (cut in place) -> a cgroup mount; 1 if it is one, -1 on junk. */
static int parse_mount(char *line, struct mount *m) {
    char *dash = strstr(line, " - ");
    if (dash == NULL)
        return 0;
    *dash = '\0';
    char *right = dash + 3;
    char *type = nth_field(right, 0);
    if (type == NULL)
        return 0;
    int v2 = strncmp(type, "cgroup2 ", 8) == 0;
    if (!v2 && strncmp(type, "cgroup ", 7) != 0)
        return 0;
    char *opts = nth_field(right, 2), *point = nth_field(line, 4);
    if (opts == NULL || point == NULL)
        return -1;
    cut_field(opts);
    cut_field(point);
    *m = (struct mount){.point = point, .opts = opts, .cgroup2 = v2};
    return 1;
}

static int read_mounts(char *buf, struct mount *out) {
    int n = 0;
    for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        int found = parse_mount(line, &out[n]);
        if (found < 0 || (found && n == MAX_MOUNTS))
            return -1;
        n += found;
    }
    return n;
}

/* item is one of the comma-separated words of list (empty words count). */
static int has_item(const char *list, const char *item, size_t len) {
    for (const char *p = list;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == len && strncmp(p, item, len) == 0)
            return 1;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

/* enter._mount_of: the first mount whose options hold every controller of key. */
static const char *mount_of(const struct mount *m, int n, const char *key) {
    for (int k = 0; k < n; k++) {
        int all = 1;
        for (const char *p = key; all;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            all = (m[k].cgroup2 && len == 0) || has_item(m[k].opts, p, len);
            if (comma == NULL)
                break;
            p = comma + 1;
        }
        if (all)
            return m[k].point;
    }
    return NULL;
}

/* Join one v1 hierarchy through `tasks` (this thread only: no RCU grace period). */
static int join_v1(const char *dir) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/tasks", dir) >= (int)sizeof path)
        return -1;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, "0", 1);
    close(fd);
    return n == 1 ? 0 : -1;
}

/* point + path without its trailing slashes (enter._cgroup_file's base). */
static int cgroup_dir(const char *point, const char *path, char *out, size_t size) {
    size_t len = strlen(path);
    while (len > 0 && path[len - 1] == '/')
        len--;
    return snprintf(out, size, "%s%.*s", point, (int)len, path) >= (int)size ? -1 : 0;
}

/* One of init's hierarchies: join it (v1) or open its directory (cgroup2). */
static int join_one(const struct hier *h, struct mount *mounts, int nmounts, int *cgroup2,
                    struct held *held) {
    const char *point = mount_of(mounts, nmounts, h->key);
    char dir[PATH_MAX];
    if (point == NULL)
        return 0;
    if (cgroup_dir(point, h->path, dir, sizeof dir) < 0)
        return -1;
    if (h->key[0])
        return join_v1(dir);
    *cgroup2 = hold(held, open_inheritable(dir, O_DIRECTORY));
    return *cgroup2 < 0 ? -1 : 0;
}

/* enter.join_cgroups: v1 first, in file order, then cgroup2; 0 or -1. */
static int join_cgroups(long long pid, int *cgroup2, struct held *held) {
    static char theirs_buf[SMALL_FILE], ours_buf[SMALL_FILE], mount_buf[1 << 20];
    static struct hier theirs[MAX_HIER], ours[MAX_HIER];
    static struct mount mounts[MAX_MOUNTS];
    char path[64];
    snprintf(path, sizeof path, "/proc/%lld/cgroup", pid);
    if (vs_read_small(path, theirs_buf, sizeof theirs_buf) < 0 ||
        vs_read_small("/proc/self/cgroup", ours_buf, sizeof ours_buf) < 0)
        return -1;
    int nt = parse_cgroup(theirs_buf, theirs), no = parse_cgroup(ours_buf, ours);
    int nmounts = -1; /* mountinfo is read only when something needs joining */
    if (nt < 0 || no < 0)
        return -1;
    for (int pass = 0; pass < 2; pass++) {
        for (int k = 0; k < nt; k++) {
            const struct hier *h = &theirs[k];
            const char *mine = path_of(ours, no, h->key);
            if ((pass == 0) != (h->key[0] != '\0'))
                continue;
            if ((mine && strcmp(mine, h->path) == 0) || has_dotdot(h->path))
                continue;
            if (nmounts < 0 && (vs_read_small("/proc/self/mountinfo", mount_buf, sizeof mount_buf) < 0 ||
                                (nmounts = read_mounts(mount_buf, mounts)) < 0))
                return -1;
            if (join_one(h, mounts, nmounts, cgroup2, held) < 0)
                return -1;
        }
    }
    return 0;
}

/* -- the exec ---------------------------------------------------------------- */

/* What vexec gets: enter._attach_and_run's fds and the saved profile. */
struct joins {
    struct nsfds ns;
    int cgroup2; /* -1: init's cgroup2 group is ours or unknown */
    int program; /* seccomp.bpf */
};

static char *fmt(char **pool, const char *format, long long a, long long b, long long c) {
    char *out = *pool;
    int n = sprintf(out, format, a, b, c);
    *pool += n + 1;
    return out;
}

/* enter._vexec_argv for no user and no tty: vexec -n NAME -s FD... -a FD ... -- CMD. */
static char **vexec_argv(const char *name, const struct joins *j, const struct profile *p,
                         char **cmd, int ncmd) {
    static char pool[MAX_LIMITS * 72 + 512];
    char *sp = pool;
    char **out = calloc((size_t)(2 * (N_NS + 1 + MAX_LIMITS) + 16 + ncmd), sizeof *out);
    int n = 0;
    if (out == NULL)
        return NULL;
    out[n++] = "vexec", out[n++] = "-n", out[n++] = (char *)name;
    for (int k = 0; k < N_NS - 1; k++) /* ipc uts net mnt pid: not cgroup */
        out[n++] = "-s", out[n++] = fmt(&sp, "%lld", j->ns.fd[k], 0, 0);
    if (j->ns.time >= 0) /* like pid, it decides where vexec's child goes */
        out[n++] = "-s", out[n++] = fmt(&sp, "%lld", j->ns.time, 0, 0);
    out[n++] = "-a", out[n++] = fmt(&sp, "%lld", j->ns.fd[N_NS - 1], 0, 0);
    if (j->cgroup2 >= 0)
        out[n++] = "-C", out[n++] = fmt(&sp, "%lld", j->cgroup2, 0, 0);
    out[n++] = "-S", out[n++] = fmt(&sp, "%lld", j->program, 0, 0);
    for (int k = 0; k < p->nlimits; k++)
        out[n++] = "-r", out[n++] = fmt(&sp, "%lld,%lld,%lld", p->limits[k][0],
                                        p->limits[k][1], p->limits[k][2]);
    if (p->nice_set)
        out[n++] = "-i", out[n++] = fmt(&sp, "%lld", p->nice, 0, 0);
    out[n++] = "-c", out[n++] = sp;
    sp += sprintf(sp, "%llx", (unsigned long long)p->caps) + 1;
    out[n++] = "--";
    for (int k = 0; k < ncmd; k++)
        out[n++] = cmd[k];
    return out;
}

/* enter._environment(None, False), in the same order. */
static char *const ENVIRONMENT[] = {
    "container=vstui", "PATH=" PATH_ENV, "HOME=/root", "USER=root",
    "LOGNAME=root",    "SHELL=/bin/sh",  NULL,
};

/* -- the checks before any work ---------------------------------------------- */

/* Paths.from_root would normalise it; only an already normal one is ours. */
static int root_is_normal(const char *root) {
    if (root[0] != '/')
        return 0;
    if (strcmp(root, "/") == 0)
        return 1;
    for (const char *p = root; *p; p++) {
        if (*p != '/')
            continue;
        const char *next = p + 1; /* a component starts here */
        if (*next == '\0' || *next == '/')
            return 0; /* trailing or doubled slash */
        if (next[0] == '.' && (next[1] == '/' || next[1] == '\0'))
            return 0;
        if (next[0] == '.' && next[1] == '.' && (next[2] == '/' || next[2] == '\0'))
            return 0;
    }
    return 1;
}

static int name_is_plain(const char *name) {
    return *name && name[0] != '-' && !strchr(name, '/') && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

/* The Python path relays a pty when any of 0-2 is a terminal. */
static int any_tty(void) {
    return isatty(0) || isatty(1) || isatty(2);
}

/* Gather the fds as enter._attach_and_run does; 0 when ready to exec. */
static int gather(const char *run_dir, long long pid, long long start, struct joins *j,
                  int *helper, struct held *h) {
    char path[PATH_MAX];
    if (open_namespaces(pid, &j->ns, h) < 0)
        return -1;
    if (vs_starttime(pid) != start) /* the PID was reused meanwhile */
        return -1;
    if ((*helper = sealed_helper(h)) < 0) /* a host file: read before leaving */
        return -1;
    if (snprintf(path, sizeof path, "%s/seccomp.bpf", run_dir) >= (int)sizeof path)
        return -1;
    if ((j->program = hold(h, open_inheritable(path, 0))) < 0)
        return -1; /* never run a command unfiltered: Python names the fix */
    j->cgroup2 = -1;
    return join_cgroups(pid, &j->cgroup2, h);
}

/* run_dir/frozen (engine.runtime.freezing): Python refuses with the message. */
static int is_frozen(const char *run_dir) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/frozen", run_dir) >= (int)sizeof path)
        return 1;
    return access(path, F_OK) == 0 || errno != ENOENT;
}

/* `vserver NAME exec CMD...` without Python; returns only to fall back. */
static void try_fast_exec(const struct request *req) {
    char **cmd = req->rest;
    int ncmd = req->nrest;
    if (ncmd > 0 && strcmp(cmd[0], "--") == 0)
        cmd++, ncmd--;
    if (ncmd == 0 || geteuid() != 0 || any_tty() || !root_is_normal(req->root) ||
        !name_is_plain(req->name))
        return;
    char run_dir[PATH_MAX];
    const char *sep = strcmp(req->root, "/") == 0 ? "" : "/";
    if (snprintf(run_dir, sizeof run_dir, "%s%srun/vservers/%s", req->root, sep, req->name) >=
        (int)sizeof run_dir)
        return;
    long long pid, start;
    static struct profile profile;
    if (init_identity(run_dir, &pid, &start) < 0 || read_profile(run_dir, &profile) < 0 ||
        profile.private_ || is_frozen(run_dir))
        return;
    struct held held = {.n = 0};
    struct joins j;
    int helper;
    char **argv;
    if (gather(run_dir, pid, start, &j, &helper, &held) == 0 &&
        (argv = vexec_argv(req->name, &j, &profile, cmd, ncmd)) != NULL)
        fexecve(helper, argv, ENVIRONMENT);
    release(&held);
}

/* -- the dispatch ------------------------------------------------------------ */

/* [--root DIR | --root=DIR] NAME COMMAND [REST...]; 0 when argv has that form. */
static int parse_request(int argc, char **argv, struct request *req) {
    int i = 1;
    const char *env = getenv("VSTUI_ROOT");
    req->root = env && *env ? env : "/";
    if (i < argc && strcmp(argv[i], "--root") == 0) {
        if (i + 1 >= argc)
            return -1;
        req->root = argv[i + 1];
        i += 2;
    } else if (i < argc && strncmp(argv[i], "--root=", 7) == 0) {
        req->root = argv[i] + 7;
        i++;
    }
    if (i + 2 > argc)
        return -1;
    req->name = argv[i];
    req->command = argv[i + 1];
    req->rest = argv + i + 2;
    req->nrest = argc - i - 2;
    return 0;
}

/* The Python implementation, with the user's words: sys.argv[1:] are argv[1:].
 * VSTUI_FALLBACK=0 exits 125 instead, so that a test knows which path ran. */
static void fallback(int argc, char **argv) {
    const char *allowed = getenv("VSTUI_FALLBACK");
    if (allowed && strcmp(allowed, "0") == 0)
        _exit(125);
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (args != NULL) {
        args[0] = VSTUI_PYTHON;
        args[1] = "-P"; /* never import from the caller's cwd (it may be a guest's tree) */
        args[2] = "-c";
        args[3] = "import sys; from vstui.cli.vserver import main; sys.exit(main())";
        for (int k = 1; k < argc; k++)
            args[3 + k] = argv[k];
        execv(VSTUI_PYTHON, args);
    }
    int err = errno;
    char line[512];
    int n = snprintf(line, sizeof line, "vserver: cannot run %s: %s\n", VSTUI_PYTHON,
                     strerror(err));
    if (n > 0)
        (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    _exit(127);
}


int main(int argc, char **argv) {
    struct request req;
    if (parse_request(argc, argv, &req) == 0) {
        if (strcmp(req.command, "exec") == 0)
            try_fast_exec(&req);
        else if (strcmp(req.command, "start") == 0 && req.nrest == 0 &&
                 root_is_normal(req.root) && name_is_plain(req.name) &&
                 cache_start(req.root, req.name) == 0)
            return 0; /* replayed from the boot cache (cache.h) */
    }
    fallback(argc, argv);
}
