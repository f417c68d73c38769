/*
 * vexec: the one executor of `vserver NAME exec|enter|suexec`.
 *
 * The Python exec_in and the compiled front end both exec this with the
 * same arguments: the guest's run directory, the user (for suexec and
 * enter) and the command. Everything the guest runs under was decided by
 * the start and written as run_dir/exec.plan (bootplan.EXEC_OPS): the
 * rlimits, the nice floor, the capability mask and seccomp program
 * (`confine`, the very routine boot.h ends with, vstui.h vs_confine), the
 * cgroups to join and the private flag. vexec, in order:
 *
 *  1. re-execs itself from a sealed memfd copy unless it runs from one (the
 *     compiled front end execs such a copy straight away): a guest reading
 *     /proc/PID/exe of anything vexec forks into it finds a private,
 *     unwritable copy, never a host file a guest root holding CAP_SYS_PTRACE
 *     could grab and rewrite (CVE-2019-5736, runc's exeseal);
 *  2. checks init's identity (PID + start time from the run directory) and
 *     reads the exec plan; refuses a private or a frozen guest (the messages
 *     are Python's, generated into consts.h);
 *  3. opens init's namespaces, then checks the identity again (a reused
 *     PID); joins the plan's v1 cgroups (the thread's `tasks`: no RCU grace
 *     period) and opens its cgroup2 group;
 *  4. joins ipc, uts, net, mnt (the kernel then sets root and cwd to the
 *     guest's /), applies the rlimits and the nice floor;
 *  5. creates a middle process with clone3(CLONE_INTO_CGROUP) straight into
 *     the guest's cgroup2 group (no cgroup.procs migration, ~14 ms). The
 *     middle process is still in the HOST's PID namespace: no guest process
 *     can see or ptrace it while it is unconfined. It joins the PID and time
 *     namespaces (for its child) and the cgroup namespace (after the clone:
 *     the kernel refuses a move from outside the caller's cgroup namespace
 *     root), confines itself and only then forks the command's process,
 *     born confined; the waiter (this process) confines itself the same way.
 *
 * The command's process starts a new session (no host terminal as its
 * controlling tty: TIOCSTI), takes the pty on fd 0 as its terminal with -t,
 * becomes the user with -u/-g/-G, resets signals, closes every fd above 2
 * and execs the command. The waiter and the middle process forward
 * SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGWINCH/SIGUSR1/SIGUSR2 down and exit with
 * its status (128+N when killed by signal N). A refusal or failure before
 * the command runs is one line, "vserver: NAME: message" on stderr or
 * "KIND message" on -E FD (Python raises the engine error of that kind),
 * and exit status 125.
 *
 * usage: vexec -R RUN_DIR -n GUEST [-t] [-u UID -g GID [-G G1,G2,...] [-d DIR]]
 *              [-E ERRFD] -- CMD [ARGS...]
 * The environment is the command's (PATH included: execvp searches it).
 */
#include "vstui.h" /* first: it defines _GNU_SOURCE */

#include <grp.h>
#include <stdarg.h>
#include <limits.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#define MAX_GROUPS 256
#define MAX_JOINS 32

static const char *guest = "guest";
static int err_fd = -1; /* -E: "KIND message" for Python, else stderr */

static void say(const char *kind, const char *fmt, ...) {
    char text[1024], shown[1024], line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    /* the text may quote the command (argv[0]): ESC, CR or a newline in it must not
     * reach the terminal nor split the -E pipe's one line per message */
    vs_visible(text, shown, sizeof shown);
    int n = err_fd >= 0 ? snprintf(line, sizeof line, "%s %s\n", kind, shown)
                        : snprintf(line, sizeof line, "vserver: %s: %s\n", guest, shown);
    if (n > 0)
        (void)!write(err_fd >= 0 ? err_fd : 2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void die(const char *what) {
    say("KernelError", "%s: %s", what, strerror(errno));
    _exit(125);
}

/* the refusals, worded by the engine (enter.REFUSALS -> consts.h) */
#define REFUSE(kind, cls, text)                                                                   \
    static void refuse_##kind(void) {                                                             \
        say(cls, text, guest);                                                                    \
        _exit(1);                                                                                 \
    }
VS_REFUSALS(REFUSE)

struct opts {
    const char *run_dir, *dir;
    int tty, ngroups;
    long uid, gid;
    gid_t groups[MAX_GROUPS];
    char **argv;
};

struct plan {
    int private_, nice_set, ntasks;
    long long nice;
    struct vs_field *rlimits[64], *tasks[MAX_JOINS], *cgroup2, *confine;
    int nrlimits;
};

/* -- 1. the sealed copy ----------------------------------------------------------- */

static void run_sealed(char **argv, char **envp) {
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        die("open /proc/self/exe");
    int seals = fcntl(self, F_GET_SEALS);
    if (seals >= 0 && (seals & VS_SEALS) == VS_SEALS) {
        close(self); /* already the sealed copy (the compiled front end makes it) */
        return;
    }
    int memfd = vs_sealed_copy(self, "vexec");
    if (memfd < 0)
        die("seal helper copy");
    fexecve(memfd, argv, envp);
    die("exec sealed helper copy");
}

/* -- 2. the running guest and its exec plan -------------------------------------------- */

static char *value(const struct opts *o, const char *key, char *buf, size_t size) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", o->run_dir, key);
    ssize_t n = vs_read_small(path, buf, size);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return n > 0 ? buf : NULL;
}

/* init's (pid, start), alive; refuses otherwise */
static long long init_pid(const struct opts *o, long long *start) {
    char a[64], b[64];
    long long pid;
    if (!value(o, "init.pid", a, sizeof a) || !value(o, "init.start", b, sizeof b) ||
        vs_ll(a, 10, &pid) < 0 || vs_ll(b, 10, start) < 0 || pid <= 0 ||
        vs_starttime(pid) != *start)
        refuse_not_running();
    return pid;
}

typedef void (*plan_fn)(struct plan *, struct vs_field *);

static void x_private(struct plan *p, struct vs_field *a) {
    p->private_ = strcmp(a[0].s, "0") != 0;
}
static void x_fakeinit(struct plan *p, struct vs_field *a) {
    (void)p, (void)a; /* the supervisor's: which signal stops init */
}
static void x_rlimit(struct plan *p, struct vs_field *a) {
    if (p->nrlimits < 64)
        p->rlimits[p->nrlimits++] = a;
}
static void x_nice(struct plan *p, struct vs_field *a) {
    p->nice_set = vs_ll(a[0].s, 10, &p->nice) == 0;
}
static void x_confine(struct plan *p, struct vs_field *a) {
    p->confine = a;
}
static void x_tasks(struct plan *p, struct vs_field *a) {
    if (p->ntasks < MAX_JOINS)
        p->tasks[p->ntasks++] = a;
}
static void x_cgroup2(struct plan *p, struct vs_field *a) {
    p->cgroup2 = a;
}

/* the table is bootplan.EXEC_OPS (consts.h) */
#define X_FN(name, n) x_##name,
#define X_OP(name, n) {#name, n},
static const plan_fn x_fns[] = {VS_EXEC_OPS(X_FN)};
static const struct vs_op x_ops[] = {VS_EXEC_OPS(X_OP)};
#define X_NOPS ((int)(sizeof x_ops / sizeof x_ops[0]))

static void read_plan(const struct opts *o, struct plan *p) {
    char path[PATH_MAX];
    const char *bad;
    size_t len = 0;
    long count;
    snprintf(path, sizeof path, "%s/exec.plan", o->run_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *data = fd < 0 ? NULL : vs_read_fd(fd, &len);
    struct vs_field *f = data ? vs_fields(data, len, &count) : NULL;
    if (fd >= 0)
        close(fd);
    if (!f || vs_check(x_ops, X_NOPS, f, count, &bad) < 0)
        refuse_no_plan();
    for (long at = 0; at < count;) {
        int k = vs_op_index(x_ops, X_NOPS, f[at].s);
        x_fns[k](p, f + at + 1);
        at += 1 + vs_arity(&x_ops[k], f + at + 1, count - at - 1);
    }
    if (!p->confine || !p->confine[1].n) /* never a command without the guest's filter */
        refuse_no_plan();
    if (p->private_)
        refuse_private();
    snprintf(path, sizeof path, "%s/" VS_FROZEN_FILE, o->run_dir);
    if (access(path, F_OK) == 0) /* joining its frozen cgroup would hang */
        refuse_frozen();
}

/* -- 3. host-side fds ---------------------------------------------------------------- */

static const char *const NAMESPACES[] = {"ipc",    "uts",  "net", "mnt",
                                          "pid",    "cgroup", "time", "user"};
enum { NS_PID = 4, NS_CGROUP = 5, NS_TIME = 6, NS_USER = 7, N_NS = 8 };

/* -1 instead of the namespace fds[k] when it is ours (nothing to join) */
static void drop_if_ours(int *fds, int k) {
    char path[64];
    struct stat theirs, ours;
    snprintf(path, sizeof path, "/proc/self/ns/%s", NAMESPACES[k]);
    if (fds[k] >= 0 && fstat(fds[k], &theirs) == 0 && stat(path, &ours) == 0 &&
        theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev) {
        close(fds[k]);
        fds[k] = -1;
    }
}

/* init's namespaces; time and user are -1 when they are ours (a privileged guest's
 * user namespace is the host's) */
static void open_namespaces(long long pid, int *fds) {
    char path[64];
    for (int k = 0; k < N_NS; k++) {
        snprintf(path, sizeof path, "/proc/%lld/ns/%s", pid, NAMESPACES[k]);
        fds[k] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[k] < 0 && !(k == NS_TIME && errno == ENOENT)) /* no time ns before 5.6 */
            refuse_not_running();
    }
    drop_if_ours(fds, NS_TIME);
    drop_if_ours(fds, NS_USER);
}

/* In a user-namespaced guest: its root, with every capability inside only (the
 * other namespaces were joined with the host's capabilities, which they need). */
static void become_guest_root(int *fds) {
    if (fds[NS_USER] >= 0 && vs_become_root_in(fds[NS_USER]) < 0)
        die("join user namespace");
    if (fds[NS_USER] >= 0)
        close(fds[NS_USER]);
    fds[NS_USER] = -1;
}

static void join(int fd) {
    if (fd >= 0 && setns(fd, 0) < 0) /* nstype 0: the fd names the namespace */
        die("setns");
    if (fd >= 0)
        close(fd);
}

/* -- 5. confinement and the processes ------------------------------------------------- */

static void confine(const struct plan *p) {
    unsigned long long keep;
    const char *step;
    if (vs_ull(p->confine[0].s, 16, &keep) < 0)
        refuse_no_plan();
    if (vs_confine(keep, p->confine[1].s, p->confine[1].n, &step) < 0)
        die(step);
}

static void limits(const struct plan *p) {
    for (int k = 0; k < p->nrlimits; k++) {
        long long res, soft, hard;
        struct vs_field *a = p->rlimits[k];
        if (vs_ll(a[0].s, 10, &res) < 0 || vs_ll(a[1].s, 10, &soft) < 0 ||
            vs_ll(a[2].s, 10, &hard) < 0 || vs_rlimit(res, soft, hard) < 0)
            die("limit: rlimit");
    }
    if (p->nice_set && vs_nice(p->nice) < 0)
        die("limit: nice");
}

/* The command's process: the first one in the guest's PID namespace, born
 * confined (filter and capabilities inherited from the middle process). */
static void child(const struct opts *o) {
    if (setsid() < 0 || (o->tty && ioctl(0, TIOCSCTTY, 0) < 0))
        die(o->tty ? "controlling terminal" : "setsid");
    if (o->uid >= 0 && (setgroups((size_t)o->ngroups, o->groups) < 0 ||
                        setgid((gid_t)o->gid) < 0 || setuid((uid_t)o->uid) < 0))
        die("become user");
    if (o->dir && chdir(o->dir) < 0)
        (void)!chdir("/");
    /* ignored signals survive exec (the interpreter ignored SIGPIPE, SIGXFSZ) */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int keep[3] = {0, 1, 2};
    vs_close_except(keep, 3);
    execvp(o->argv[0], o->argv);
    int err = errno;
    err_fd = -1; /* closed above: the command's own stderr */
    say("KernelError", "%s: %s", o->argv[0], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}

/* Forward the waited signals to pid until it ends; its status as an exit code. */
static int relay(pid_t pid, const sigset_t *waited) {
    for (;;) {
        int sig = sigwaitinfo(waited, NULL), status;
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(pid, sig);
            continue;
        }
        for (pid_t done; (done = waitpid(-1, &status, WNOHANG)) > 0;)
            if (done == pid)
                return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    }
}

/* The middle process: born in the guest's cgroup2 group but in the HOST's PID
 * namespace; joins the PID and time namespaces for its child and the cgroup
 * namespace, confines itself, and only then forks the command's process. */
static void middle(const struct opts *o, const struct plan *p, int *ns, int cg2, int moved,
                   const sigset_t *waited) {
    if (cg2 >= 0 && !moved && vs_enter_cgroup2(cg2) < 0)
        die("join cgroup");
    if (cg2 >= 0)
        close(cg2);
    join(ns[NS_PID]);
    join(ns[NS_TIME]);
    join(ns[NS_CGROUP]);
    become_guest_root(ns);
    confine(p);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0)
        child(o);
    _exit(relay(pid, waited));
}

/* -- the arguments ------------------------------------------------------------------------ */

static int parse_groups(const char *text, gid_t *out) {
    int n = 0;
    for (char *end; *text && n < MAX_GROUPS; text = *end == ',' ? end + 1 : end) {
        out[n++] = (gid_t)strtoul(text, &end, 10);
        if (end == text)
            break;
    }
    return n;
}

static int parse(int argc, char **argv, struct opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            return i + 1 < argc && o->run_dir && (o->uid >= 0) == (o->gid >= 0) ? i + 1 : -1;
        if (!strcmp(a, "-t")) {
            o->tty = 1;
            continue;
        }
        if (i + 1 >= argc || a[0] != '-' || !a[1] || a[2])
            return -1;
        const char *v = argv[++i];
        switch (a[1]) {
        case 'R': o->run_dir = v; break;
        case 'n': guest = v; break;
        case 'u': o->uid = strtol(v, NULL, 10); break;
        case 'g': o->gid = strtol(v, NULL, 10); break;
        case 'G': o->ngroups = parse_groups(v, o->groups); break;
        case 'd': o->dir = v; break;
        case 'E': err_fd = (int)strtol(v, NULL, 10); break;
        default: return -1;
        }
    }
    return -1;
}

int main(int argc, char **argv, char **envp) {
    static struct opts o = {.uid = -1, .gid = -1};
    static struct plan p;
    int i = parse(argc, argv, &o), ns[N_NS], moved, cg2 = -1;
    if (i < 0) {
        say("VstuiError", "usage: vexec -R RUN_DIR -n GUEST [-t] [-u UID -g GID [-G GIDS] "
                          "[-d DIR]] [-E FD] -- CMD...");
        return 125;
    }
    o.argv = argv + i;
    run_sealed(argv, envp);
    if (err_fd >= 0)
        fcntl(err_fd, F_SETFD, FD_CLOEXEC); /* closes when the command runs */
    long long start, pid = init_pid(&o, &start);
    read_plan(&o, &p);
    open_namespaces(pid, ns);
    if (vs_starttime(pid) != start) /* the PID was reused meanwhile */
        refuse_not_running();
    for (int k = 0; k < p.ntasks; k++) /* host paths: before leaving the host's mounts */
        if (vs_join_tasks(p.tasks[k]->s) < 0)
            die("join cgroup");
    if (p.cgroup2 && (cg2 = open(p.cgroup2->s, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        die("join cgroup");
    for (int k = 0; k < NS_PID; k++) /* ipc, uts, net, mnt: PID, cgroup and time later */
        join(ns[k]);
    if (chdir("/") < 0)
        die("chdir /");
    limits(&p);
    /* blocked before the clone: no signal is lost before sigwaitinfo */
    sigset_t waited;
    sigemptyset(&waited);
    int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGUSR1, SIGUSR2, SIGCHLD};
    for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++)
        sigaddset(&waited, forwarded[k]);
    sigprocmask(SIG_BLOCK, &waited, NULL);
    pid_t middle_pid = vs_clone_into(cg2, &moved);
    if (middle_pid < 0)
        die("fork");
    if (middle_pid == 0)
        middle(&o, &p, ns, cg2, moved, &waited);
    /* the waiter: as confined as the command, holding no host fd */
    if (cg2 >= 0)
        close(cg2);
    close(ns[NS_PID]);
    if (ns[NS_TIME] >= 0)
        close(ns[NS_TIME]);
    join(ns[NS_CGROUP]);
    become_guest_root(ns);
    confine(&p);
    return relay(middle_pid, &waited);
}
