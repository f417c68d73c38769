/*
 * cgclone.h: create a child straight inside a cgroup2 group.
 *
 * clone3(CLONE_INTO_CGROUP) puts the child in the group at birth. Moving a
 * process there afterwards through cgroup.procs waits out an RCU grace
 * period (~10-14 ms here). Shared by vexec (exec's command) and the
 * compiled start (faststart.h, process A).
 */
#ifndef VSTUI_CGCLONE_H
#define VSTUI_CGCLONE_H

#include <errno.h>
#include <linux/sched.h> /* struct clone_args, CLONE_INTO_CGROUP */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* fork, or clone3 into the group cgroup_fd (-1: plain fork); *moved says
 * whether the child is already there. A kernel without clone3 (ENOSYS) or
 * without CLONE_INTO_CGROUP (E2BIG, EINVAL) gets a plain fork. */
static pid_t clone_into_cgroup(int cgroup_fd, int *moved)
{
    *moved = 0;
    if (cgroup_fd >= 0) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_INTO_CGROUP;
        args.exit_signal = SIGCHLD;
        args.cgroup = (uint64_t)cgroup_fd;
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid >= 0) {
            *moved = 1;
            return (pid_t)pid;
        }
        if (errno != ENOSYS && errno != E2BIG && errno != EINVAL)
            return -1;
    }
    return fork();
}

#endif
