/*
 * vinit: the small PID 1 of a guest without the fakeinit flag.
 *
 * Runs the guest's start command, reaps every orphan that the PID namespace
 * hands it, and on SIGTERM/SIGINT/SIGPWR signals every process of the guest
 * (kill(-1) inside a PID namespace reaches only the guest), waits for them
 * and exits. Static and tiny, so that a guest's own helper costs ~100 KB RSS
 * and no host interpreter runs inside the guest. Copied into the guest tree
 * at start: /proc/1/exe never points at a host-owned file.
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
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) { stop_requested = sig; }

static void reap_all(void) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static void stop_guest(void) {
    kill(-1, SIGTERM);
    for (int i = 0; i < 100; i++) { /* up to 10 s; the supervisor may kill sooner */
        reap_all();
        if (kill(-1, 0) < 0 && errno == ESRCH)
            return;
        usleep(100000);
    }
    kill(-1, SIGKILL);
    reap_all();
}

int main(int argc, char **argv) {
    sigset_t all, old;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGPWR, &sa, NULL);
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);

    if (argc > 1) {
        pid_t child = fork();
        if (child == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            setsid();
            execvp(argv[1], argv + 1);
            fprintf(stderr, "vinit: cannot run %s: %s\n", argv[1], strerror(errno));
            _exit(127);
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    for (;;) {
        if (stop_requested) {
            stop_guest();
            return 0;
        }
        pid_t pid = waitpid(-1, NULL, 0);
        if (pid < 0 && errno == ECHILD)
            pause(); /* nothing to reap: sleep until a signal or an orphan */
    }
}
