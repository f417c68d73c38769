/*
 * vboot: the guest's PID 1 from its new namespaces to init's exec.
 *
 * The starter (engine/runtime/starting.py) forks process B into the new
 * namespaces and, once the network is in place, B execs this helper with the
 * serialized start plan in a memfd. vboot reads it, closes it and runs it
 * (boot.h): mounts, pivot_root, /proc, /dev, names, limits, capabilities,
 * the seccomp filter, then execs the guest's init. A failure is one line on
 * ERR_FD and exit status 1.
 *
 * usage: vboot PLAN_FD LOG_FD ERR_FD SECCOMP_FD VINIT_FD   (-1 = none)
 */
#include "boot.h"

static int fd_arg(const char *text, int *out) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < -1 || value > INT_MAX)
        return -1;
    *out = (int)value;
    return 0;
}

int main(int argc, char **argv) {
    int fds[5];
    for (int k = 0; k < 5; k++)
        if (argc != 6 || fd_arg(argv[k + 1], &fds[k]) < 0) {
            static const char usage[] =
                "usage: vboot PLAN_FD LOG_FD ERR_FD SECCOMP_FD VINIT_FD (-1 = none)\n";
            (void)!write(2, usage, sizeof usage - 1);
            return 2;
        }
    int err_fd = fds[2] >= 0 ? fds[2] : 2;
    size_t len = 0;
    char *plan = fds[0] >= 0 ? vb_read_fd(fds[0], &len) : NULL;
    if (!plan) {
        struct vb b = {.err_fd = err_fd};
        vb_fail(&b, "boot plan:", "read", fds[0] >= 0 ? errno : EBADF);
        return 1;
    }
    close(fds[0]);
    return vboot_run(plan, len, fds[1], err_fd, fds[3], fds[4]);
}
