/*
 * vboot: the Python start's executor, a main around start.h.
 *
 * engine/runtime/starting.py plans a start, writes it (bootplan.START_OPS)
 * into a memfd and forks this with two pipes: vboot reports "pid B" (the
 * guest's PID 1, not yet booting), waits for "g" (the network is set up),
 * then answers "ok PID STARTTIME" or "error LINE" and exits. The compiled
 * `vserver NAME start` runs the very same vs_start on the cached plan.
 *
 * usage: vboot PLAN_FD REPORT_FD GO_FD CONSOLE_FD SUPERVISOR_PID
 */
#include "start.h"

int main(int argc, char **argv) {
    long long arg[5];
    for (int k = 0; k < 5; k++)
        if (argc != 6 || vs_ll(argv[k + 1], 10, &arg[k]) < 0 || arg[k] < -1 || arg[k] > INT_MAX) {
            static const char usage[] =
                "usage: vboot PLAN_FD REPORT_FD GO_FD CONSOLE_FD SUPERVISOR_PID\n";
            (void)!write(2, usage, sizeof usage - 1);
            return 2;
        }
    struct st_io io = {.report = (int)arg[1], .go = (int)arg[2], .console = (int)arg[3],
                       .supervisor = (pid_t)arg[4]};
    size_t len = 0;
    char *plan = vs_read_fd((int)arg[0], &len);
    if (!plan) {
        dprintf(io.report, "error start plan: %s\n", strerror(errno));
        return 1;
    }
    close((int)arg[0]);
    return vs_start(plan, len, &io) > 0 ? 0 : 1;
}
