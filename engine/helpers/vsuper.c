/*
 * vsuper: a running guest's supervisor, init's parent outside the guest.
 *
 * The boot happens in Python (engine/runtime/supervisor.py, or cache.h for a
 * cached start); the process that booted the guest then execs vsuper, which
 * keeps the PID, the children and the subreaper flag: the guest's init stays
 * its child. While the guest runs vsuper only waits, in one epoll, for:
 *
 * - init's exit (a pidfd): then the console is drained and vsuper logs how
 *   init ended (kernel/reboot.c: reboot(2) in a PID namespace kills init
 *   with SIGHUP for a restart, SIGINT for a halt) and execs the Python
 *   supervisor once (supervisor.main "finish") for the teardown and, on a
 *   reboot, the next boot, which execs vsuper again; when a `vserver stop`
 *   holds the guest's lock, that stop cleans up and vsuper just exits;
 * - the sd_notify socket: READY=1 answers the waiting `vserver NAME start`,
 *   as does init's start (vinit) or a deadline (INIT_GRACE, READY_TIMEOUT);
 * - SIGTERM: asks init to stop the guest, with the signal `vserver stop` uses;
 * - the console pump's exit (it is forked again) and, with a memory cgroup
 *   on cgroup v1, usage thresholds (memory.usage_in_bytes via
 *   cgroup.event_control eventfds, Documentation/admin-guide/cgroup-v1/
 *   memory.rst 9): when the guest's use moves by STEP the guest's
 *   /proc/meminfo view is rendered again by Python (engine.rootfs.procview,
 *   the one renderer), at most once a second. An idle guest wakes nobody.
 *   The thresholds are registered at the first render, a second after the
 *   boot, not at once: each registration waits for an RCU grace period
 *   (mm/memcontrol-v1.c __mem_cgroup_usage_register_event: synchronize_rcu)
 *   inside its write to cgroup.event_control, and removing the cgroup waits
 *   for that write to end (kernfs_drain); two of them right after the start
 *   made a stop that followed at once 3-10 ms slower, and kept vsuper from
 *   noticing init's end meanwhile.
 *   On cgroup v2 (no usage notification) the view is refreshed every
 *   V2_REFRESH_MS.
 *
 * The console pump is a forked child (it holds the pty's master): a killed
 * vsuper leaves the pump, the guest's writes still reach the log and never
 * meet EPIPE; the pump ends at init's exit. It copies the guest's console
 * into the log (capped at LOG_MAX, the part before moved to NAME.log.1) and
 * serves one `vserver NAME console` client (engine/runtime/console.py: frames
 * "d" LEN(2) BYTES and "w" ROWS(2) COLS(2)).
 *
 * usage: vsuper PYTHON SEARCH ROOT NAME XID RUN_DIR LOG MEMORY FAKEINIT
 *               INIT_PID CONSOLE NOTIFY LISTEN READY [LOG_MARK]
 * (supervisor.lean_command; cache.h appends the five fds like the Python start;
 * READY is -1 when the start was answered already: vinit running is ready)
 */
#include "vstui.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef TIOCGPTPEER
#define TIOCGPTPEER 0x5441 /* include/uapi/asm-generic/ioctls.h, Linux 4.13 */
#endif

#define CHUNK 65536
#define STEP_MIN (4LL << 20)   /* a view is rendered again when use moves by this */
#define RENDER_GAP_MS 1000     /* and at most once a second */
#define V2_REFRESH_MS 5000     /* cgroup v2 has no usage thresholds */

enum { E_INIT, E_SIG, E_NOTIFY, E_PUMP, E_DEADLINE, E_UP, E_DOWN, E_RENDER };

static struct {
    char **argv; /* PYTHON SEARCH ROOT NAME XID RUN_DIR LOG MEMORY FAKEINIT */
    const char *name, *run_dir, *log, *memory;
    int fakeinit, log_fd, console, notify, ready, listen, ep;
    pid_t init, pump, render;
    int init_fd, pump_fd, sig_fd, deadline_fd, render_fd, usage_fd, up_fd, down_fd;
    int stop_requested, stop_sent, render_pending, v1, armed;
    long long log_mark, booted_ms, rendered_ms;
} s = {.init_fd = -1, .pump_fd = -1, .deadline_fd = -1, .render_fd = -1, .usage_fd = -1,
       .up_fd = -1, .down_fd = -1, .listen = -1, .ready = -1};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void log_line(int fd, const char *text) {
    vs_log_line(fd, s.name, text);
}

static int pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void watch(int fd, int tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)tag};
    epoll_ctl(s.ep, EPOLL_CTL_ADD, fd, &ev);
}

static void close_fd(int *fd) {
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* A one-shot timer ms from now (0: disarmed). */
static void arm(int fd, long long ms) {
    struct itimerspec its = {.it_value = {ms / 1000, (ms % 1000) * 1000000}};
    if (ms > 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    timerfd_settime(fd, 0, &its, NULL);
}

/* -- the console pump (a child: it outlives a killed vsuper) ------------------------- */

/* The log moves to NAME.log.1 and starts again (same inode: copy, then truncate). */
static void cap_log(int log_fd) {
    struct stat st;
    char older[4200], text[4400], stamp[32];
    if (fstat(log_fd, &st) < 0)
        return;
    snprintf(older, sizeof older, "%s.1", s.log);
    int src = open(s.log, O_RDONLY | O_CLOEXEC);
    int dst = open(older, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    for (off_t done = 0; src >= 0 && dst >= 0 && done < st.st_size;)
        if (sendfile(dst, src, &done, (size_t)(st.st_size - done)) <= 0)
            break; /* the source shrank meanwhile */
    close_fd(&src);
    close_fd(&dst);
    if (ftruncate(log_fd, 0) < 0)
        return;
    time_t t = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
    const char *base = strrchr(older, '/') ? strrchr(older, '/') + 1 : older;
    int n = snprintf(text, sizeof text, "--- log reached %lld bytes at %s; the part before is in "
                     "%s ---\n", (long long)st.st_size, stamp, base);
    (void)!write(log_fd, text, (size_t)n);
}

struct pump {
    int client;
    size_t pending;
    unsigned char frame[CHUNK + 3];
};

static void drop(struct pump *p) {
    close_fd(&p->client);
    p->pending = 0;
}

/* Copy what the guest wrote; 0 when there is nothing (more) to read. */
static int output(struct pump *p, char *buf) {
    ssize_t n = read(s.console, buf, CHUNK);
    if (n <= 0)
        return 0; /* EAGAIN; EIO: nobody holds the terminal right now */
    (void)vs_write_all(s.log_fd, buf, (size_t)n);
    struct stat st;
    if (fstat(s.log_fd, &st) == 0 && st.st_size > VS_LOG_MAX)
        cap_log(s.log_fd);
    if (p->client >= 0 && send(p->client, buf, (size_t)n, MSG_NOSIGNAL) != n)
        drop(p);
    return 1;
}

static void accept_client(struct pump *p) {
    int conn = accept4(s.listen, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0)
        return;
    if (p->client >= 0) {
        static const char busy[] = VS_CONSOLE_BUSY;
        (void)!send(conn, busy, sizeof busy - 1, MSG_NOSIGNAL);
        close(conn);
        return;
    }
    p->client = conn;
    p->pending = 0;
}

/* Frames from the client: keys typed ("d") and its window size ("w"). */
static void keys(struct pump *p) {
    ssize_t n = recv(p->client, p->frame + p->pending, sizeof p->frame - p->pending, 0);
    if (n <= 0) {
        drop(p);
        return;
    }
    p->pending += (size_t)n;
    while (p->pending >= 3) {
        size_t size = (size_t)p->frame[1] << 8 | p->frame[2];
        if (p->pending < 3 + size)
            break;
        unsigned char *body = p->frame + 3;
        if (p->frame[0] == 'd') {
            (void)!write(s.console, body, size); /* nobody reading: typed keys are dropped */
        } else if (p->frame[0] == 'w' && size == 4) {
            struct winsize ws = {.ws_row = (unsigned short)(body[0] << 8 | body[1]),
                                 .ws_col = (unsigned short)(body[2] << 8 | body[3])};
            ioctl(s.console, TIOCSWINSZ, &ws);
        }
        memmove(p->frame, p->frame + 3 + size, p->pending - 3 - size);
        p->pending -= 3 + size;
    }
}

/* Until init is gone: the console into the log (and the client). It keeps the
 * slave open itself, so the master never reads end of file while the guest
 * reopens its console (agetty's vhangup); the end is init's exit. */
static void serve(void) {
    static struct pump p = {.client = -1};
    static char buf[CHUNK];
    int peer = ioctl(s.console, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    fcntl(s.console, F_SETFL, fcntl(s.console, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd fds[4] = {{s.console, POLLIN, 0}, {s.listen, POLLIN, 0},
                                {s.init_fd, POLLIN, 0}, {p.client, POLLIN, 0}};
        if (poll(fds, p.client >= 0 ? 4 : 3, -1) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            output(&p, buf);
        if (fds[1].revents)
            accept_client(&p);
        if (p.client >= 0 && fds[3].revents)
            keys(&p);
        if (fds[2].revents) {
            while (output(&p, buf))
                ;
            break;
        }
    }
    if (peer >= 0)
        close(peer);
    _exit(0);
}

static void start_pump(void) {
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGTERM, SIG_DFL);
        close_fd(&s.ready); /* the CLI waits for the end of `ready`: only ours */
        close_fd(&s.notify);
        serve();
    }
    s.pump = pid;
    s.pump_fd = pid > 0 ? pidfd_open(pid) : -1;
    if (s.pump_fd >= 0)
        watch(s.pump_fd, E_PUMP);
}

/* -- answering `vserver NAME start` -------------------------------------------------- */

/* vinit (ready once it runs), systemd (READY=1) or another init (ready after a grace). */
static const char *init_kind(void) {
    char path[64], exe[4096];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)s.init);
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    if (n < 0)
        return "init";
    exe[n] = '\0';
    const char *base = strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe;
    return strcmp(base, ".vinit") == 0 ? "vinit" : strcmp(base, "systemd") == 0 ? "systemd"
                                                                                : "init";
}

static void answer(const char *note) {
    if (s.ready < 0)
        return;
    char text[64];
    int n = snprintf(text, sizeof text, "ok %d%s", (int)s.init, note);
    (void)!write(s.ready, text, (size_t)n); /* EPIPE: the CLI gave up waiting */
    close_fd(&s.ready);
}

static void on_notify(void) {
    char buf[4097];
    ssize_t n = recv(s.notify, buf, sizeof buf - 1, MSG_DONTWAIT);
    if (n <= 0)
        return;
    buf[n] = '\0';
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (strcmp(line, "READY=1") == 0)
            answer("");
        else if (strcmp(line, "STOPPING=1") == 0)
            log_line(s.log_fd, "init is shutting down");
    }
}

/* runfiles.stop_signal: vinit SIGTERM; systemd SIGRTMIN+3; other inits SIGPWR. */
static void ask_init_to_stop(void) {
    int sig = SIGTERM;
    if (s.fakeinit)
        sig = strcmp(init_kind(), "systemd") == 0 ? SIGRTMIN + 3 : SIGPWR;
    kill(s.init, sig);
    s.stop_sent = 1;
}

/* -- the /proc/meminfo view ---------------------------------------------------------- */

static long long usage_now(void) {
    char buf[64];
    ssize_t n = pread(s.usage_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return atoll(buf);
}

/* One threshold eventfd on memory.usage_in_bytes (cgroup v1 cgroup.event_control). */
static int threshold(long long bytes, int tag) {
    char path[4200];
    snprintf(path, sizeof path, "%s/cgroup.event_control", s.memory);
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int ctl = open(path, O_WRONLY | O_CLOEXEC);
    if (efd < 0 || ctl < 0 || dprintf(ctl, "%d %d %lld", efd, s.usage_fd, bytes) < 0) {
        close_fd(&ctl);
        close_fd(&efd);
        return -1;
    }
    close(ctl);
    watch(efd, tag);
    return efd;
}

/* Thresholds a STEP above and below today's use (a closed eventfd is unregistered). */
/* Explicitly out of the epoll: a render child between fork and exec still holds it. */
static void unwatch(int *fd) {
    if (*fd >= 0)
        epoll_ctl(s.ep, EPOLL_CTL_DEL, *fd, NULL);
    close_fd(fd);
}

static void rearm_thresholds(void) {
    unwatch(&s.up_fd);
    unwatch(&s.down_fd);
    long long usage = usage_now();
    if (usage < 0)
        return;
    s.up_fd = threshold(usage + STEP_MIN, E_UP);
    if (usage > STEP_MIN)
        s.down_fd = threshold(usage - STEP_MIN, E_DOWN);
}

/* The view rendered again by Python (supervisor.main "meminfo"), in a child. */
static void render(void) {
    if (s.render > 0) {
        s.render_pending = 1; /* once this one ends */
        return;
    }
    long long wait = s.rendered_ms + RENDER_GAP_MS - now_ms();
    if (wait > 0) {
        s.render_pending = 1;
        arm(s.render_fd, wait);
        return;
    }
    s.render_pending = 0;
    s.rendered_ms = now_ms();
    char view[4200];
    snprintf(view, sizeof view, "%s/" VS_MEMINFO_FILE, s.run_dir);
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char *argv[] = {s.argv[0], "-S", "-E", "-c", VS_SUPERVISOR_BOOTSTRAP, s.argv[1],
                        "meminfo", (char *)s.memory, view, NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    s.render = pid > 0 ? pid : 0;
}

static void on_child(void) {
    if (s.render > 0 && waitpid(s.render, NULL, WNOHANG) == s.render) {
        s.render = 0;
        if (s.render_pending)
            render();
    }
}

static void watch_memory(void) {
    if (!*s.memory)
        return; /* no memory controller: the guest sees the host's meminfo */
    s.render_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    watch(s.render_fd, E_RENDER);
    char path[4200];
    snprintf(path, sizeof path, "%s/memory.usage_in_bytes", s.memory);
    s.usage_fd = open(path, O_RDONLY | O_CLOEXEC);
    s.v1 = s.usage_fd >= 0; /* thresholds: at the first render (the header says why) */
    s.rendered_ms = now_ms();
    render(); /* the start's view has no use yet: again once the guest has booted */
}

/* -- init's end ---------------------------------------------------------------------- */

/* supervisor.how_init_ended's words (the Python supervisor logs the same). */
static void how_init_ended(int status, char *out, size_t size) {
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGHUP)
        snprintf(out, size, "init asked for a reboot");
    else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGINT)
        snprintf(out, size, "init halted");
    else if (WIFSIGNALED(status))
        snprintf(out, size, "init killed by signal SIG%s", sigabbrev_np(WTERMSIG(status))
                 ? sigabbrev_np(WTERMSIG(status)) : "?");
    else if (WEXITSTATUS(status) == 0)
        snprintf(out, size, "init halted");
    else
        snprintf(out, size, "init exited with status %d", WEXITSTATUS(status));
}

/* The pump drains the terminal and ends (killed when stuck); the console closes. */
static void end_console(void) {
    struct pollfd pfd = {s.pump_fd, POLLIN, 0};
    if (s.pump_fd >= 0 && poll(&pfd, 1, VS_PUMP_GRACE_MS) == 0)
        kill(s.pump, SIGKILL);
    if (s.pump > 0)
        waitpid(s.pump, NULL, 0);
    close_fd(&s.pump_fd);
    close_fd(&s.console);
}

/* No child outlives the supervision: `vserver stop` returns once vsuper is gone,
 * so vsuper is gone only after every process it made. A render in flight is
 * killed (its view goes with the guest; a reboot renders anew); then every child
 * is reaped, orphans of our subtree too (we are their subreaper), blocking:
 * what is left was SIGKILLed or ends on its own (the pump: at init's exit). */
static void end_children(void) {
    if (s.render > 0)
        kill(s.render, SIGKILL);
    s.render = 0;
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
}

/* Is the guest's lock held by someone else (a `vserver stop` that cleans up itself)? */
static int lock_busy(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/" VS_LOCK_FILE, s.run_dir);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int busy = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(fd);
    return busy;
}

static void finish(int status) {
    char ended[128], text[32], mark[32], ready[16], notify[16], listening[16];
    how_init_ended(status, ended, sizeof ended);
    int reboot = WIFSIGNALED(status) && WTERMSIG(status) == SIGHUP && !s.stop_requested;
    if (s.ready < 0 && lock_busy()) {
        log_line(s.log_fd, ended);
        log_line(s.log_fd, reboot ? "rebooting" : "stopped");
        _exit(0);
    }
    snprintf(text, sizeof text, "%d", status);
    snprintf(mark, sizeof mark, "%lld", s.log_mark);
    snprintf(ready, sizeof ready, "%d", s.ready);
    snprintf(notify, sizeof notify, "%d", s.notify);
    snprintf(listening, sizeof listening, "%d", s.listen);
    if (s.ready >= 0)
        fcntl(s.ready, F_SETFD, 0);
    fcntl(s.notify, F_SETFD, 0);
    fcntl(s.listen, F_SETFD, 0);
    char *argv[] = {s.argv[0], "-S", "-E", "-c", VS_SUPERVISOR_BOOTSTRAP, s.argv[1], "finish",
                    s.argv[2], s.argv[3], s.argv[4], s.argv[5], s.argv[6], s.argv[7],
                    s.argv[8], text, reboot ? "1" : "0", notify, listening, ready, mark, NULL};
    sigset_t term; /* SIGTERM stays blocked until Python has its handler */
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_SETMASK, &term, NULL);
    execv(argv[0], argv);
    log_line(s.log_fd, "cannot run the Python supervisor to tear the guest down");
    _exit(1);
}

/* -- setup and the loop -------------------------------------------------------------- */

static int setup(int argc, char **argv) {
    long long v[6] = {0, -1, -1, -1, -1, 0};
    if (argc < 15 || argc > 16)
        return -1;
    for (int k = 0; k < argc - 10; k++)
        if (vs_ll(argv[10 + k], 10, &v[k]) < 0)
            return -1;
    s.argv = argv + 1;
    s.name = argv[4], s.run_dir = argv[6], s.log = argv[7], s.memory = argv[8];
    s.fakeinit = strcmp(argv[9], "1") == 0;
    s.init = (pid_t)v[0], s.console = (int)v[1], s.notify = (int)v[2], s.listen = (int)v[3];
    s.ready = (int)v[4], s.log_mark = v[5];
    fcntl(s.console, F_SETFD, FD_CLOEXEC);
    fcntl(s.notify, F_SETFD, FD_CLOEXEC);
    fcntl(s.listen, F_SETFD, FD_CLOEXEC);
    if (s.ready >= 0)
        fcntl(s.ready, F_SETFD, FD_CLOEXEC);
    s.log_fd = open(s.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (chdir("/") < 0 || s.log_fd < 0)
        return -1;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    s.ep = epoll_create1(EPOLL_CLOEXEC);
    s.sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    s.init_fd = pidfd_open(s.init);
    s.deadline_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (s.ep < 0 || s.sig_fd < 0 || s.init_fd < 0 || s.listen < 0 || s.deadline_fd < 0)
        return -1;
    watch(s.init_fd, E_INIT);
    watch(s.sig_fd, E_SIG);
    watch(s.notify, E_NOTIFY);
    watch(s.deadline_fd, E_DEADLINE);
    return 0;
}

static void on_signal(void) {
    struct signalfd_siginfo si;
    while (read(s.sig_fd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGTERM) {
            s.stop_requested = 1;
            if (!s.stop_sent)
                ask_init_to_stop();
        } else if (si.ssi_signo == SIGCHLD) {
            on_child();
        }
    }
}

static void on_event(uint32_t tag, int *status) {
    uint64_t count;
    switch (tag) {
    case E_INIT:
        if (waitpid(s.init, status, 0) < 0)
            *status = 0; /* reaped elsewhere (cannot happen): end as a halt */
        return;
    case E_SIG:
        on_signal();
        return;
    case E_NOTIFY:
        on_notify();
        return;
    case E_PUMP: /* the pump died: a new one */
        unwatch(&s.pump_fd);
        waitpid(s.pump, NULL, 0);
        start_pump();
        return;
    case E_DEADLINE:
        (void)!read(s.deadline_fd, &count, sizeof count);
        answer(strcmp(init_kind(), "systemd") == 0 ? " booting" : "");
        return;
    case E_UP:
    case E_DOWN:
        rearm_thresholds();
        render();
        return;
    case E_RENDER:
        (void)!read(s.render_fd, &count, sizeof count);
        if (s.v1 && !s.armed) {
            s.armed = 1;
            rearm_thresholds();
        }
        render();
        if (!s.v1)
            arm(s.render_fd, V2_REFRESH_MS);
        return;
    }
}

int main(int argc, char **argv) {
    if (setup(argc, argv) < 0) {
        fprintf(stderr, "vsuper: bad arguments or no epoll/pidfd/socket: %s\n", strerror(errno));
        return 1;
    }
    s.booted_ms = now_ms();
    start_pump();
    const char *kind = init_kind();
    if (strcmp(kind, "vinit") == 0)
        answer(""); /* our own init: running is ready */
    else if (s.ready >= 0)
        arm(s.deadline_fd, strcmp(kind, "systemd") == 0 ? VS_READY_TIMEOUT_MS : VS_INIT_GRACE_MS);
    watch_memory();
    int status = -1;
    while (status == -1) {
        struct epoll_event ev[8];
        int n = epoll_wait(s.ep, ev, 8, -1);
        for (int k = 0; k < n && status == -1; k++)
            on_event(ev[k].data.u32, &status);
    }
    end_console();
    end_children();
    finish(status);
    return 1;
}
