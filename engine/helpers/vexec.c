/*
 * vexec: the last step of `vserver NAME exec|enter|suexec`.
 *
 * Python (engine/runtime/enter.py) checks init's identity, opens the
 * namespace fds of /proc/INIT/ns, the guest's seccomp program and its
 * cgroup2 directory, joins the v1 cgroups (the cheap `tasks` file), then
 * execs this helper from a sealed memfd copy with those fds. vexec, in order:
 *
 *  1. reads the seccomp program (-S FD), a host file, and closes it;
 *  2. joins the namespaces of -s FD in the order given (ipc, uts, net, mnt,
 *     then pid and time, which only decide where *children* go: a time
 *     namespace is joined as time_for_children, and only while the caller
 *     is single-threaded, as vexec is), chdir("/"). The guest's seccomp
 *     filter (which may deny setns) is installed only after the clone;
 *  3. applies the rlimits (-r) and the nice floor (-i);
 *  4. creates a middle process with clone3(CLONE_INTO_CGROUP) straight into
 *     the guest's cgroup2 group (-C FD): no cgroup.procs write, whose
 *     migration waits out an RCU grace period (~14 ms). The middle process
 *     is still in the HOST's PID namespace: no guest process can see or
 *     ptrace it while it is unconfined. It joins the PID and time
 *     namespaces (for its child), the cgroup namespace (-a FD: after the
 *     clone, as the kernel refuses a move from outside the caller's cgroup
 *     namespace root), installs the seccomp filter and cuts the bounding
 *     set, permitted and effective to -c MASK (inheritable and ambient
 *     empty), and only then forks the command's process, born confined;
 *     on a kernel without clone3 it writes cgroup.procs itself;
 *  5. the waiter (this process) confines itself the same way.
 *
 * The command's process is the first in the guest's PID namespace; its
 * /proc/PID/exe is the sealed memfd, never a host file a guest root with
 * CAP_SYS_PTRACE could grab and rewrite (CVE-2019-5736). The child starts a
 * new session (no host terminal as controlling tty: TIOCSTI), takes the pty
 * on fd 0 as its terminal with -t, becomes the user with -u/-g/-G, resets
 * signals, closes every fd above 2 and execs the command inside the guest.
 * The waiter and the middle process forward SIGINT/SIGTERM/SIGHUP/SIGQUIT/
 * SIGWINCH down and exit with its status (128+N when killed by signal N).
 *
 * usage: vexec [-t] [-u UID -g GID] [-G G1,G2,...] [-d DIR] [-n GUEST]
 *              [-s NSFD]... [-a NSFD]... [-C CGROUP2FD] [-S BPFFD] [-c HEXMASK]
 *              [-r RES,SOFT,HARD]... [-i NICE] -- CMD [ARGS...]
 * The environment is the command's (PATH included: execvp searches it).
 */
#define _GNU_SOURCE
#include "vstui.h" /* vs_clone_into */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/nsfs.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>



#define MAX_GROUPS 256
#define MAX_NS 8
#define MAX_LIMITS 32
#define MAX_FILTER (1 << 20)

static const char *guest = "guest";

static void say(const char *what, const char *detail) {
    /* one line, one write(2): no stdio buffers to flush */
    char line[512];
    int n = snprintf(line, sizeof line, "vserver: %s: %s: %s\n", guest, what, detail);
    if (n > 0)
        (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void die(const char *what) {
    say(what, strerror(errno));
    _exit(125);
}

static int parse_groups(const char *text, gid_t *out) {
    int n = 0;
    while (*text && n < MAX_GROUPS) {
        char *end;
        out[n++] = (gid_t)strtoul(text, &end, 10);
        text = *end == ',' ? end + 1 : end;
        if (end == text && *text)
            break;
    }
    return n;
}

struct limit {
    int resource;
    rlim_t soft, hard;
};

struct opts {
    int tty;
    long uid, gid;
    int ngroups;
    gid_t groups[MAX_GROUPS];
    const char *dir;
    char **argv;
    int ns_before[MAX_NS], n_before; /* joined before the clone, in order */
    int ns_after[MAX_NS], n_after;   /* joined after it (the cgroup namespace) */
    int cgroup2;                     /* the guest's cgroup2 directory, or -1 */
    int filter_fd;                   /* the packed seccomp program, or -1 */
    struct sock_filter *filter;
    unsigned short filter_len;
    int cut_caps;
    uint64_t caps;
    struct limit limits[MAX_LIMITS];
    int nlimits;
    int nice_set, nice;
};

static rlim_t to_rlim(long long value) {
    return value < 0 ? RLIM_INFINITY : (rlim_t)value;
}

static int parse_limit(const char *text, struct limit *out) {
    char *end;
    out->resource = (int)strtol(text, &end, 10);
    if (*end != ',')
        return -1;
    out->soft = to_rlim(strtoll(end + 1, &end, 10));
    if (*end != ',')
        return -1;
    out->hard = to_rlim(strtoll(end + 1, &end, 10));
    return *end ? -1 : 0;
}

static void read_filter(struct opts *o) {
    static unsigned char buf[MAX_FILTER];
    size_t done = 0;
    for (;;) {
        ssize_t n = read(o->filter_fd, buf + done, sizeof buf - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("read seccomp program");
        if (n == 0 || (done += (size_t)n) == sizeof buf)
            break;
    }
    close(o->filter_fd);
    if (done % sizeof(struct sock_filter) || done / sizeof(struct sock_filter) > 0xffff) {
        errno = EINVAL;
        die("seccomp program");
    }
    o->filter = (struct sock_filter *)buf;
    o->filter_len = (unsigned short)(done / sizeof(struct sock_filter));
}

static void join(const int *fds, int n) {
    for (int k = 0; k < n; k++) {
        /* nstype 0: the fd names the namespace (ipc ... pid, time, cgroup) */
        if (setns(fds[k], 0) < 0)
            die("setns");
        close(fds[k]);
    }
}

/* PID and time namespaces decide only where the caller's *children* go. */
static int for_children(int fd) {
    int type = ioctl(fd, NS_GET_NSTYPE);
    if (type < 0)
        die("namespace type");
    return type == CLONE_NEWPID || type == CLONE_NEWTIME;
}

/* Join the fds of one kind (children's namespaces or the caller's own), in order. */
static void join_some(int *fds, int n, int children) {
    for (int k = 0; k < n; k++) {
        if (fds[k] < 0 || for_children(fds[k]) != children)
            continue;
        if (setns(fds[k], 0) < 0)
            die("setns");
        close(fds[k]);
        fds[k] = -1;
    }
}

static void apply_limits(const struct opts *o) {
    for (int k = 0; k < o->nlimits; k++) {
        struct rlimit rl = {o->limits[k].soft, o->limits[k].hard};
        if (setrlimit(o->limits[k].resource, &rl) < 0)
            die("limit: rlimit");
    }
    if (!o->nice_set)
        return;
    errno = 0;
    int now = getpriority(PRIO_PROCESS, 0);
    if (errno == 0 && now < o->nice && setpriority(PRIO_PROCESS, 0, o->nice) < 0)
        die("limit: nice");
    /* the floor: RLIMIT_NICE allows a nice value down to 20 - rlim_cur */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NICE, &rl) < 0)
        die("limit: RLIMIT_NICE");
    long wanted = 20L - o->nice;
    rlim_t ceiling = wanted < 0 ? 0 : (rlim_t)wanted;
    if (ceiling > rl.rlim_max)
        ceiling = rl.rlim_max;
    rl.rlim_cur = rl.rlim_max = ceiling;
    if (setrlimit(RLIMIT_NICE, &rl) < 0)
        die("limit: RLIMIT_NICE");
}

struct cap_header {
    uint32_t version;
    int pid;
};
struct cap_data {
    uint32_t effective, permitted, inheritable;
};

/* The guest's seccomp filter, then the bounding set, permitted and effective
 * cut to its mask; inheritable and ambient empty. The filter first: installing
 * one without no_new_privs needs CAP_SYS_ADMIN, which the cut may remove. */
static void confine(const struct opts *o) {
    if (o->filter_len) {
        struct sock_fprog prog = {o->filter_len, o->filter};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
            die("limit: seccomp");
    }
    if (!o->cut_caps)
        return;
    for (int cap = 0; cap < 64; cap++) {
        if (o->caps >> cap & 1)
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            die("limit: bounding set");
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        die("limit: ambient capabilities");
    struct cap_header header = {0x20080522, 0}; /* _LINUX_CAPABILITY_VERSION_3 */
    struct cap_data data[2];
    for (int k = 0; k < 2; k++) {
        uint32_t word = (uint32_t)(o->caps >> (32 * k));
        data[k].effective = data[k].permitted = word;
        data[k].inheritable = 0;
    }
    if (syscall(SYS_capset, &header, data) < 0)
        die("limit: capset");
}

/* The command's process: the first one in the guest's PID namespace, born
 * confined (filter and capabilities inherited from the middle process). */
static void child(const struct opts *o) {
    if (setsid() < 0) {
        say("setsid", strerror(errno));
        _exit(126);
    }
    if (o->tty && ioctl(0, TIOCSCTTY, 0) < 0) {
        say("controlling terminal", strerror(errno));
        _exit(126);
    }
    if (o->uid >= 0) {
        if (setgroups((size_t)o->ngroups, o->groups) < 0 || setgid((gid_t)o->gid) < 0 ||
            setuid((uid_t)o->uid) < 0) {
            say("become user", strerror(errno));
            _exit(126);
        }
    }
    if (o->dir && chdir(o->dir) < 0)
        (void)!chdir("/");
    /* ignored signals survive exec (the interpreter ignored SIGPIPE, SIGXFSZ) */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
        for (int fd = 3; fd < 65536; fd++)
            close(fd);
    execvp(o->argv[0], o->argv);
    int err = errno;
    say(o->argv[0], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}

/* fork, or clone3 straight into the cgroup2 group; *moved says which. */
static pid_t spawn(const struct opts *o, int *moved) {
    return vs_clone_into(o->cgroup2, moved);
}

/* Forward the waited signals to pid until it ends; its status as an exit code. */
static int relay(pid_t pid, const sigset_t *waited) {
    for (;;) {
        int sig = sigwaitinfo(waited, NULL);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(pid, sig);
            continue;
        }
        int status;
        pid_t done;
        while ((done = waitpid(-1, &status, WNOHANG)) > 0) {
            if (done != pid)
                continue;
            if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
            return WEXITSTATUS(status);
        }
    }
}

/* The middle process: born in the guest's cgroup2 group but in the HOST's PID
 * namespace, so no guest process can see (or ptrace) it while it still holds
 * every capability and no filter. It joins the PID and time namespaces for
 * its child, confines itself, and only then forks the command's process. */
static void middle(struct opts *o, int moved, const sigset_t *waited) {
    if (o->cgroup2 >= 0) {
        if (!moved) {
            int fd = openat(o->cgroup2, "cgroup.procs", O_WRONLY | O_CLOEXEC);
            if (fd < 0 || write(fd, "0", 1) != 1)
                die("join cgroup");
            close(fd);
        }
        close(o->cgroup2);
    }
    join_some(o->ns_before, o->n_before, 1);
    join(o->ns_after, o->n_after);
    confine(o);
    pid_t pid = fork();
    if (pid < 0) {
        say("fork", strerror(errno));
        _exit(125);
    }
    if (pid == 0)
        child(o);
    _exit(relay(pid, waited));
}

static int add_fd(int *fds, int *n, const char *text) {
    if (*n >= MAX_NS)
        return -1;
    fds[(*n)++] = (int)strtol(text, NULL, 10);
    return 0;
}

static int parse(int argc, char **argv, struct opts *o) {
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            return i + 1;
        if (!strcmp(a, "-t")) {
            o->tty = 1;
            continue;
        }
        if (i + 1 >= argc || a[0] != '-' || !a[1] || a[2])
            return -1;
        const char *v = argv[++i];
        switch (a[1]) {
        case 'u': o->uid = strtol(v, NULL, 10); break;
        case 'g': o->gid = strtol(v, NULL, 10); break;
        case 'G': o->ngroups = parse_groups(v, o->groups); break;
        case 'd': o->dir = v; break;
        case 'n': guest = v; break;
        case 's': if (add_fd(o->ns_before, &o->n_before, v) < 0) return -1; break;
        case 'a': if (add_fd(o->ns_after, &o->n_after, v) < 0) return -1; break;
        case 'C': o->cgroup2 = (int)strtol(v, NULL, 10); break;
        case 'S': o->filter_fd = (int)strtol(v, NULL, 10); break;
        case 'c': o->cut_caps = 1; o->caps = strtoull(v, NULL, 16); break;
        case 'i': o->nice_set = 1; o->nice = (int)strtol(v, NULL, 10); break;
        case 'r':
            if (o->nlimits >= MAX_LIMITS || parse_limit(v, &o->limits[o->nlimits++]) < 0)
                return -1;
            break;
        default: return -1;
        }
    }
    return -1;
}

int main(int argc, char **argv) {
    static struct opts o = {.uid = -1, .gid = -1, .cgroup2 = -1, .filter_fd = -1};
    int i = parse(argc, argv, &o);
    if (i < 0 || i >= argc || (o.uid >= 0) != (o.gid >= 0)) {
        say("vexec", "usage: vexec [-t] [-u UID -g GID] [-G GIDS] [-d DIR] [-n GUEST] "
                     "[-s FD]... [-a FD]... [-C FD] [-S FD] [-c MASK] [-r R,S,H]... [-i N] "
                     "-- CMD...");
        return 125;
    }
    o.argv = argv + i;
    if (o.filter_fd >= 0)
        read_filter(&o); /* a host file: read before leaving the host's mounts */
    join_some(o.ns_before, o.n_before, 0); /* ipc, uts, net, mnt: PID and time later */
    if (o.n_before && chdir("/") < 0)
        die("chdir /");
    apply_limits(&o);

    /* blocked before the clone: no signal is lost before sigwaitinfo */
    sigset_t waited;
    sigemptyset(&waited);
    int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGUSR1, SIGUSR2};
    for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++)
        sigaddset(&waited, forwarded[k]);
    sigaddset(&waited, SIGCHLD);
    sigprocmask(SIG_BLOCK, &waited, NULL);

    int moved;
    pid_t pid = spawn(&o, &moved);
    if (pid < 0) {
        say("fork", strerror(errno));
        return 125;
    }
    if (pid == 0)
        middle(&o, moved, &waited);
    /* the waiter: as confined as the command, holding no host fd */
    if (o.cgroup2 >= 0)
        close(o.cgroup2);
    for (int k = 0; k < o.n_before; k++)
        if (o.ns_before[k] >= 0)
            close(o.ns_before[k]); /* the PID and time fds: the middle's now */
    join(o.ns_after, o.n_after);
    confine(&o);
    return relay(pid, &waited);
}
