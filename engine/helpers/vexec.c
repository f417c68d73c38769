/*
 * vexec: the last step of `vserver NAME exec|enter|suexec`.
 *
 * Python (engine/runtime/enter.py) joins the guest's cgroups and its ipc,
 * uts, net, cgroup, mnt and pid namespaces (setns(pid) only decides where
 * *children* go), applies rlimits, nice, the bounding set and the seccomp
 * filter, then execs this helper from a sealed memfd copy. vexec forks: the
 * child is the first process in the guest's PID namespace, and its
 * /proc/PID/exe is that sealed memfd, never a host file a guest root with
 * CAP_SYS_PTRACE could grab and rewrite (CVE-2019-5736). The child starts a
 * new session (no host terminal as controlling tty: TIOCSTI), takes the pty
 * on fd 0 as its terminal with -t, becomes the user with -u/-g/-G, resets
 * signals, closes every fd above 2 and execs the command inside the guest.
 * The parent forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGWINCH to it and exits
 * with its status (128+N when killed by signal N).
 *
 * usage: vexec [-t] [-u UID -g GID] [-G G1,G2,...] [-d DIR] [-n GUEST] -- CMD [ARGS...]
 * The environment is the command's (PATH included: execvp searches it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_GROUPS 256

static const char *guest = "guest";

static void say(const char *what, const char *detail) {
    /* one line, one write(2): no stdio buffers to flush */
    char line[512];
    int n = snprintf(line, sizeof line, "vserver: %s: %s: %s\n", guest, what, detail);
    if (n > 0)
        (void)!write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
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

struct opts {
    int tty;
    long uid, gid;
    int ngroups;
    gid_t groups[MAX_GROUPS];
    const char *dir;
    char **argv;
};

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

int main(int argc, char **argv) {
    struct opts o = {.uid = -1, .gid = -1};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (!strcmp(a, "-t"))
            o.tty = 1;
        else if (i + 1 < argc && !strcmp(a, "-u"))
            o.uid = strtol(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(a, "-g"))
            o.gid = strtol(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(a, "-G"))
            o.ngroups = parse_groups(argv[++i], o.groups);
        else if (i + 1 < argc && !strcmp(a, "-d"))
            o.dir = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "-n"))
            guest = argv[++i];
        else
            break;
    }
    if (i >= argc || (o.uid >= 0) != (o.gid >= 0)) {
        say("vexec", "usage: vexec [-t] [-u UID -g GID] [-G GIDS] [-d DIR] [-n GUEST] -- CMD...");
        return 125;
    }
    o.argv = argv + i;

    /* blocked before fork: no signal is lost between fork and sigwaitinfo */
    sigset_t waited;
    sigemptyset(&waited);
    int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGUSR1, SIGUSR2};
    for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++)
        sigaddset(&waited, forwarded[k]);
    sigaddset(&waited, SIGCHLD);
    sigprocmask(SIG_BLOCK, &waited, NULL);

    pid_t pid = fork();
    if (pid < 0) {
        say("fork", strerror(errno));
        return 125;
    }
    if (pid == 0)
        child(&o);
    for (;;) {
        int sig = sigwaitinfo(&waited, NULL);
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
