/*
 * vinit: the small PID 1 of a guest without the fakeinit flag.
 *
 * Runs the guest's start command, reaps every orphan that the PID namespace
 * hands it, and on SIGTERM/SIGINT/SIGPWR signals every process of the guest
 * (kill(-1) inside a PID namespace reaches only the guest), waits for them
 * (at most VINIT_STOP_TIMEOUT seconds, then SIGKILL) and exits 0. Static and
 * tiny, so that a guest's own helper costs well under 1 MB RSS and no host
 * interpreter runs inside the guest. Bound read-only (and nosuid) from the
 * host's one copy at start (boot.h op_vinit): every guest runs one inode, and
 * /proc/1/exe reaches it only through a read-only mount.
 *
 * All signals stay blocked and are taken with sigwaitinfo/sigtimedwait: no
 * handler races, no polling. SIGCHLD wakes it to reap; when the start
 * command exits its status is logged on the console and vinit keeps reaping.
 *
 * usage: vinit CMD [ARGS...]   (CMD may be absent: then it only reaps)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STOP_TIMEOUT_S 10

static pid_t start_cmd = -1;

/* Reap every exited child; returns 1 when vinit has no children left. */
static int reap_all(void) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            if (pid == start_cmd) {
                if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
                    fprintf(stderr, "vinit: start command exited with status %d\n",
                            WEXITSTATUS(status));
                else if (WIFSIGNALED(status))
                    fprintf(stderr, "vinit: start command killed by signal %d\n",
                            WTERMSIG(status));
                start_cmd = -1;
            }
            continue;
        }
        return pid < 0 && errno == ECHILD;
    }
}

static void stop_guest(const sigset_t *set) {
    struct timespec deadline, now, slice = {0, 100 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += STOP_TIMEOUT_S;
    kill(-1, SIGTERM);
    kill(-1, SIGCONT); /* stopped processes must see the SIGTERM */
    while (!reap_all()) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > deadline.tv_sec ||
            (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
            kill(-1, SIGKILL);
            deadline.tv_sec += 3600; /* only once */
        }
        sigtimedwait(set, NULL, &slice); /* SIGCHLD or 100 ms, whichever first */
    }
}

int main(int argc, char **argv) {
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);

    if (argc > 1) {
        start_cmd = fork();
        if (start_cmd == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            setsid();
            execvp(argv[1], argv + 1);
            fprintf(stderr, "vinit: cannot run %s: %s\n", argv[1], strerror(errno));
            _exit(127);
        }
        if (start_cmd < 0)
            fprintf(stderr, "vinit: fork: %s\n", strerror(errno));
    }
    for (;;) {
        int sig = sigwaitinfo(&all, NULL);
        if (sig == SIGTERM || sig == SIGINT || sig == SIGPWR) {
            stop_guest(&all);
            return 0;
        }
        if (sig == SIGCHLD)
            reap_all();
    }
}
