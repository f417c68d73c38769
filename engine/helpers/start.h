/*
 * start.h: the one executor of a start plan (bootplan.START_OPS), host side.
 *
 * Both ways of starting a guest run this routine with the same plan: the
 * Python start (engine/runtime/starting.py plans, then execs `vboot`, whose
 * main is this) and the compiled `vserver NAME start` replaying the plan from
 * the boot cache (cache.h). In plan order it
 *
 *   checks the barrier; writes the run records (state=starting, xid, the
 *   supervisor's identity); makes the cgroup directories and writes the
 *   limits; writes the run files (exec profile, seccomp program, meminfo
 *   view); opens the cgroup2 group and vinit; then creates A straight into
 *   the cgroup2 group (clone3), A joins the v1 groups through `tasks`,
 *   unshares, zeroes the new time namespace's clocks, makes / a slave and
 *   forks B, the guest's PID 1, which runs the boot plan (boot.h) once told
 *   to go. With a controller (the Python start: the network is set up from
 *   there) it reports "pid B" and waits for "g" first. When B has exec'd
 *   init, it records init.pid/init.start/started/state=running and logs the
 *   start on stderr (the guest's log).
 *
 * In plan order but for the host ops that neither A nor B needs (st_later):
 * the run records, cgroup limits and owners run while A sets up, the run files
 * (and init.pid/init.start, staged) while B boots: S would only wait then.
 *
 * Any failure undoes what this routine made (B and A killed, the cgroup
 * directories it created removed, the run files removed) and leaves one
 * line in io->error; the caller reports it (the Python start) or hands the
 * start to Python (the compiled start).
 */
#ifndef VSTUI_START_H
#define VSTUI_START_H

#include "boot.h" /* first: vstui.h defines _GNU_SOURCE */

#include <poll.h>
#include <sched.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>

struct st_io {
    int report, go;   /* the controller's pipes; -1: none (go at once) */
    int console;      /* B's stdout and stderr: the write end of the console pipe */
    pid_t supervisor; /* the process the run records name as supervisor */
    char error[1024]; /* the failure, one line */
    /* set: A and the user namespace's holder, which exit by themselves (A's exit frees
     * its mount namespace: an RCU grace period, longer on a busy host), are left for
     * the caller to reap after it answers (vs_reap), not waited for before */
    int reap_late;
    pid_t exited[2];
};

/* What a vs_start with reap_late left: reaped now (they are gone or going). */
static void vs_reap(struct st_io *io) {
    for (int k = 0; k < 2; k++)
        if (io->exited[k] > 0)
            waitpid(io->exited[k], NULL, 0);
}

#define ST_MOUNTS 64
#define ST_LIMITS 32

struct st {
    struct st_io *io;
    /* a user-namespaced guest: its namespace, the tree and the mounts made here for
     * A to attach (mounts[0] is the tree; the others' targets are inside it) */
    int userns, plain;
    pid_t userns_child; /* holds the namespace until we have its fd; reaped at the end */
    const char *tree;
    unsigned long long tree_dev, tree_ino;
    struct {
        int fd;
        const char *target;
    } mounts[ST_MOUNTS];
    int nmounts;
    struct vs_field *limits[ST_LIMITS]; /* rlimit RES SOFT HARD (3 fields) or nice N (1) */
    int nlimits;
    int views[VB_VIEWS], nviews; /* detached host files B attaches (boot.h viewmount) */
    const char *run_dir, *name;
    struct vs_field *boot, *tasks[32];
    long *made; /* field indexes of the mkdirs that made a directory */
    int nmade, ntasks, timens, cgroup2, vinit, records;
    /* ops run later than their place in the plan (st_later), by field index: while A
     * sets up (identity's run records, the cgroup limits and owners, the console's
     * owner) and while B boots (the run files) */
    long while_a[64], while_b[16];
    int nwhile_a, nwhile_b;
    int staged; /* init.pid and init.start written while B boots, not yet in place */
    unsigned long long ns_flags;
    const char *files[16]; /* run files written */
    int nfiles;
    pid_t a, b;
    int a_mnt_ns; /* A: its host-userns mount namespace, held past the guest's unshare */
    int chown_dir;  /* the last `chown` path reached from the root (st_chown), opened */
    const char *chown_path;
    long long deadline;
};

static int st_fail(struct st *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->io->error, sizeof s->io->error, fmt, ap);
    va_end(ap);
    for (char *p = s->io->error; *p; p++)
        if (*p == '\n')
            *p = ' ';
    return -1;
}

static long long st_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000LL + now.tv_nsec / 1000000;
}

/* Up to room bytes from fd until EOF (or a newline), within the deadline; -1 on timeout. */
static ssize_t st_read(int fd, char *buf, size_t room, long long deadline, int line) {
    size_t got = 0;
    while (got < room) {
        long long left = deadline - st_now_ms();
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        ssize_t n = read(fd, buf + got, room - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (line && memchr(buf, '\n', got))
            break;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

static void st_log(const char *name, const char *text) {
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    dprintf(2, "--- vserver %s: %s at %s ---\n", name, text, stamp);
}

/* -- the host-side ops, in plan order ---------------------------------------------- */

typedef int (*st_fn)(struct st *, struct vs_field *, long);

static int st_barrier(struct st *s, struct vs_field *a, long at) {
    struct stat st;
    (void)at;
    if (lstat(a[0].s, &st) < 0 || !S_ISDIR(st.st_mode) || (st.st_mode & 07777) || st.st_uid)
        return st_fail(s, "barrier %s: no longer a mode 000 directory of root's", a[0].s);
    return 0;
}

static int st_identity(struct st *s, struct vs_field *a, long at) {
    (void)at;
    s->run_dir = a[0].s, s->name = a[1].s, s->records = 1;
    if (vs_value(s->run_dir, "state", "starting") < 0 || vs_value(s->run_dir, "xid", a[2].s) < 0 ||
        vs_value_ll(s->run_dir, "supervisor.pid", s->io->supervisor) < 0 ||
        vs_value_ll(s->run_dir, "supervisor.start", vs_starttime(s->io->supervisor)) < 0)
        return st_fail(s, "run file in %s: %s", s->run_dir, strerror(errno));
    return 0;
}

static int st_mkdir(struct st *s, struct vs_field *a, long at) {
    if (mkdir(a[0].s, 0755) == 0)
        s->made[s->nmade++] = at;
    else if (errno != EEXIST)
        return st_fail(s, "mkdir `%s`: %s", a[0].s, strerror(errno));
    return 0;
}

static int st_write(struct st *s, struct vs_field *a, long at) {
    (void)at;
    if (vs_write_file(a[0].s, a[1].s, a[1].n, O_TRUNC, 0) < 0)
        return st_fail(s, "write `%s`: %s", a[0].s, strerror(errno));
    return 0;
}

static int st_runfile(struct st *s, struct vs_field *a, long at) {
    unsigned long long mode;
    (void)at;
    if (!s->run_dir || s->nfiles == 16 || vs_ull(a[1].s, 8, &mode) < 0)
        return st_fail(s, "start plan: runfile %s out of place", a[0].s);
    s->files[s->nfiles++] = a[0].s;
    if (vs_replace(s->run_dir, a[0].s, a[2].s, a[2].n, (mode_t)mode) < 0)
        return st_fail(s, "write `%s/%s`: %s", s->run_dir, a[0].s, strerror(errno));
    return 0;
}

static int st_tasks(struct st *s, struct vs_field *a, long at) {
    (void)at;
    if (s->ntasks == 32)
        return st_fail(s, "start plan: too many cgroup hierarchies");
    s->tasks[s->ntasks++] = a;
    return 0;
}

static int st_cgroup2(struct st *s, struct vs_field *a, long at) {
    (void)at;
    s->cgroup2 = open(a[0].s, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return s->cgroup2 < 0 ? st_fail(s, "cgroup `%s`: %s", a[0].s, strerror(errno)) : 0;
}

static int st_unshare(struct st *s, struct vs_field *a, long at) {
    (void)at;
    return vs_ull(a[0].s, 16, &s->ns_flags) < 0 ? st_fail(s, "start plan: bad flags") : 0;
}

static int st_timens(struct st *s, struct vs_field *a, long at) {
    (void)a, (void)at;
    s->timens = 1;
    return 0;
}

static int st_vinit(struct st *s, struct vs_field *a, long at) {
    (void)at;
    s->vinit = open(a[0].s, O_RDONLY | O_CLOEXEC);
    return s->vinit < 0 ? st_fail(s, "open %s: %s", a[0].s, strerror(errno)) : 0;
}

static int st_boot(struct st *s, struct vs_field *a, long at) {
    (void)at;
    s->boot = a;
    return 0;
}

/* -- a user-namespaced guest: its namespace, its idmapped mounts, its limits ------------- */

static int st_userns(struct st *s, struct vs_field *a, long at) {
    unsigned long long base, count;
    (void)at;
    if (vs_ull(a[0].s, 10, &base) < 0 || vs_ull(a[1].s, 10, &count) < 0)
        return st_fail(s, "start plan: bad id range");
    s->userns = vs_make_userns(base, count, &s->userns_child);
    if (s->userns < 0)
        return st_fail(s, "user namespace for host ids %llu-%llu: %s", base, base + count - 1,
                       strerror(errno));
    return 0;
}

/* The file system's name for a message (statfs magic numbers of linux/magic.h). */
static const char *st_fs_name(int fd, char *buf, size_t size) {
    static const struct { unsigned long magic; const char *name; } known[] = {
        {0xEF53, "ext4"}, {0x58465342, "xfs"}, {0x9123683E, "btrfs"}, {0x01021994, "tmpfs"},
        {0x6969, "nfs"}, {0x65735546, "fuse"}, {0x794c7630, "overlay"}, {0xFF534D42, "cifs"},
        {0x01021997, "9p"}, {0x2FC12FC1, "zfs"}, {0x4d44, "vfat"}, {0x73717368, "squashfs"}};
    struct statfs sf;
    if (fstatfs(fd, &sf) < 0)
        return "its file system";
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        if ((unsigned long)sf.f_type == known[k].magic)
            return known[k].name;
    snprintf(buf, size, "file system 0x%lx", (unsigned long)sf.f_type);
    return buf;
}

/* Detached mount `tree` seen through the guest's ids (read-only if asked), a slave of
 * its source (nothing the guest mounts there reaches the host); kept for A. */
static int st_keep(struct st *s, int tree, int rec, int ro, const char *what, const char *target) {
    char fs[48];
    struct vb_mount_attr attr = {.attr_set = VB_MOUNT_ATTR_IDMAP | (ro ? VB_MOUNT_ATTR_RDONLY : 0),
                                 .propagation = MS_SLAVE, .userns_fd = (uint64_t)s->userns};
    if (s->userns < 0 || s->nmounts == ST_MOUNTS) {
        close(tree);
        return st_fail(s, "start plan: %s without a user namespace (or too many mounts)", what);
    }
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | (rec ? VB_AT_RECURSIVE : 0), &attr,
                sizeof attr) < 0) {
        int err = errno;
        const char *name = st_fs_name(tree, fs, sizeof fs);
        close(tree);
        if (err == EINVAL)
            return st_fail(s, "%s: %s cannot be idmapped (the guest's ids would not match its "
                              "files); use a file system that can (ext4, xfs, btrfs, tmpfs) or "
                              "set V_USERNS=no", what, name);
        return st_fail(s, "%s: idmapped mount: %s", what, strerror(err));
    }
    s->mounts[s->nmounts].fd = tree;
    s->mounts[s->nmounts++].target = target;
    return 0;
}

static int st_clone(int fd, int rec) {
    unsigned flags = VB_OPEN_TREE_CLONE | O_CLOEXEC | AT_EMPTY_PATH | (rec ? VB_AT_RECURSIVE : 0);
    return (int)syscall(SYS_open_tree, fd, "", flags);
}

/* PATH DEV INO: the tree, checked as boot.h checks it, cloned for the guest's ids. */
static int st_idroot(struct st *s, struct vs_field *a, long at) {
    int why;
    (void)at;
    s->tree = a[0].s;
    if (s->nmounts || vs_ull(a[1].s, 10, &s->tree_dev) < 0 || vs_ull(a[2].s, 10, &s->tree_ino) < 0)
        return st_fail(s, "start plan: idroot out of place");
    int dir = 0;
    s->plain = vb_open_identity(s->tree, s->tree_dev, s->tree_ino, &why, &dir);
    if (s->plain < 0)
        return st_fail(s, "source %s: %s", s->tree, vb_identity_text(why));
    if (!dir)
        return st_fail(s, "guest tree %s: not a directory", s->tree);
    int tree = st_clone(s->plain, 1);
    if (tree < 0)
        return st_fail(s, "bind guest tree %s: %s", s->tree, strerror(errno));
    return st_keep(s, tree, 1, 0, s->tree, NULL);
}

/* TARGET made inside the tree as it is on disk (host root's: 0 inside too): a
 * directory, or a file to bind a host file onto when `dir` is 0. */
static int st_target(struct st *s, const char *what, const char *target, int dir) {
    if (s->plain < 0)
        return st_fail(s, "start plan: a mount before idroot");
    int fd = dir ? vb_mkdirs_in_root(s->plain, target) : vb_file_in_root(s->plain, target);
    if (fd < 0)
        return st_fail(s, "%s target %s: %s", what, target, strerror(errno));
    close(fd);
    return 0;
}

/* SRC DEV INO TARGET RO REC: a checked host directory or file, seen through the
 * guest's ids. */
static int st_idbind(struct st *s, struct vs_field *a, long at) {
    unsigned long long dev, ino;
    int why, dir = 0, ro = strcmp(a[4].s, "0") != 0, rec = strcmp(a[5].s, "0") != 0;
    (void)at;
    if (vs_ull(a[1].s, 10, &dev) < 0 || vs_ull(a[2].s, 10, &ino) < 0)
        return st_fail(s, "start plan: bad identity of %s", a[0].s);
    int src = vb_open_identity(a[0].s, dev, ino, &why, &dir);
    if (src < 0)
        return st_fail(s, "source %s: %s", a[0].s, vb_identity_text(why));
    if (st_target(s, "bind", a[3].s, dir) < 0) {
        close(src);
        return -1;
    }
    int tree = st_clone(src, rec);
    int err = errno;
    close(src);
    if (tree < 0)
        return st_fail(s, "bind %s onto %s: %s", a[0].s, a[3].s, strerror(err));
    return st_keep(s, tree, rec, ro, a[0].s, a[3].s);
}

/* Each comma-separated word of DATA: key=value (a string) or key (a flag). */
static int st_fsconfig(int fs, const char *source, const char *data) {
    char buf[4096];
    if (source[0] && syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", source, 0) < 0)
        return -1;
    snprintf(buf, sizeof buf, "%s", data ? data : "");
    for (char *word = strtok(buf, ","); word; word = strtok(NULL, ",")) {
        char *eq = strchr(word, '=');
        if (eq)
            *eq = '\0';
        long rc = eq ? syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, word, eq + 1, 0)
                     : syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, word, NULL, 0);
        if (rc < 0)
            return -1;
    }
    return (int)syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
}

/* SRC TARGET FSTYPE FLAGS HASDATA DATA: a V_MOUNT file system, made here (a user
 * namespace may not mount most of them), seen through the guest's ids. */
static int st_idmount(struct st *s, struct vs_field *a, long at) {
    unsigned long long flags;
    (void)at;
    if (vs_ull(a[3].s, 10, &flags) < 0)
        return st_fail(s, "start plan: bad mount flags");
    if (st_target(s, "mount", a[1].s, 1) < 0)
        return -1;
    unsigned attrs = (flags & MS_NOSUID ? MOUNT_ATTR_NOSUID : 0) |
                     (flags & MS_NODEV ? MOUNT_ATTR_NODEV : 0) |
                     (flags & MS_NOEXEC ? MOUNT_ATTR_NOEXEC : 0);
    int fs = (int)syscall(SYS_fsopen, a[2].s, FSOPEN_CLOEXEC), tree = -1;
    if (fs >= 0 && st_fsconfig(fs, a[0].s, vb_data(&a[4], &a[5])) == 0)
        tree = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs);
    int err = errno;
    if (fs >= 0)
        close(fs);
    if (tree < 0)
        return st_fail(s, "mount %s %s on %s: %s", a[2].s, a[0].s, a[1].s, strerror(err));
    return st_keep(s, tree, 0, (flags & MS_RDONLY) != 0, a[0].s, a[1].s);
}

/* N TARGET FLAGS DATA (NAME MAJOR MINOR MODE)...: a user-namespaced guest's /dev, made
 * here: a tmpfs with these character devices in it (the guest may make none: mknod
 * needs CAP_MKNOD in the host's user namespace), seen through the guest's ids. One
 * file system instead of a host node bound per device (each a clone here, a file and
 * a mount in B). The superblock is the host's: the guest cannot remount it (size,
 * nodev) nor, the mount being locked, take nosuid or noexec off. */
static int st_iddev(struct st *s, struct vs_field *a, long at) {
    long long n;
    unsigned long long flags;
    (void)at;
    vs_ll(a[0].s, 10, &n); /* checked by the parser */
    if (n < 3 || (n - 3) % 4 || vs_ull(a[2].s, 10, &flags) < 0)
        return st_fail(s, "start plan: bad iddev");
    const char *target = a[1].s;
    if (st_target(s, "mount", target, 1) < 0)
        return -1;
    unsigned attrs = (flags & MS_NOSUID ? MOUNT_ATTR_NOSUID : 0) |
                     (flags & MS_NODEV ? MOUNT_ATTR_NODEV : 0) |
                     (flags & MS_NOEXEC ? MOUNT_ATTR_NOEXEC : 0) |
                     (flags & MS_STRICTATIME ? MOUNT_ATTR_STRICTATIME : 0);
    int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC), tree = -1;
    if (fs >= 0 && st_fsconfig(fs, "tmpfs", a[3].s) == 0)
        tree = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs);
    int err = errno;
    if (fs >= 0)
        close(fs);
    if (tree < 0)
        return st_fail(s, "mount tmpfs on %s: %s", target, strerror(err));
    mode_t mask = umask(0); /* the modes as planned, without a chmod each */
    for (long long k = 4; k + 3 <= n; k += 4) { /* made before the idmapping: host root's */
        unsigned long long major, minor, mode;
        const char *name = a[k].s;
        if (vs_ull(a[k + 1].s, 10, &major) < 0 || vs_ull(a[k + 2].s, 10, &minor) < 0 ||
            vs_ull(a[k + 3].s, 8, &mode) < 0 || strchr(name, '/')) {
            umask(mask);
            close(tree);
            return st_fail(s, "start plan: bad device %s", name);
        }
        if (mknodat(tree, name, S_IFCHR | (mode_t)(mode & 0777), makedev(major, minor)) < 0) {
            err = errno;
            umask(mask);
            close(tree);
            return st_fail(s, "device %s/%s: %s", target, name, strerror(err));
        }
    }
    umask(mask);
    return st_keep(s, tree, 0, 0, "tmpfs", target);
}

/* PATH: a detached bind of a host file, for B to attach after pivot_root (B, maybe the
 * guest's root already, may not reach it: run directories are root's). */
static int st_view(struct st *s, struct vs_field *a, long at) {
    (void)at;
    if (s->nviews == VB_VIEWS)
        return st_fail(s, "start plan: more than %d views", VB_VIEWS);
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, a[0].s, VB_OPEN_TREE_CLONE | O_CLOEXEC);
    if (fd < 0)
        return st_fail(s, "open_tree %s: %s", a[0].s, strerror(errno));
    s->views[s->nviews++] = fd;
    return 0;
}

/* PATH UID GID: handed to the guest's root (its cgroup subtree, the notify socket);
 * never through a symlink. A file that is not there (a controller's) is skipped. A
 * path right inside the one chowned before (the payload group, then its files) is
 * reached from that one's descriptor: one short lookup instead of the whole path. */
static int st_chown(struct st *s, struct vs_field *a, long at) {
    unsigned long long uid, gid;
    const char *path = a[0].s, *name = path;
    int dir = AT_FDCWD, flags = AT_SYMLINK_NOFOLLOW;
    (void)at;
    if (vs_ull(a[1].s, 10, &uid) < 0 || vs_ull(a[2].s, 10, &gid) < 0)
        return st_fail(s, "start plan: bad owner of %s", path);
    size_t len = s->chown_path ? strlen(s->chown_path) : 0;
    if (len && !strncmp(path, s->chown_path, len) && path[len] == '/' &&
        !strchr(path + len + 1, '/') && path[len + 1]) {
        dir = s->chown_dir, name = path + len + 1;
    } else {
        if (s->chown_dir >= 0)
            close(s->chown_dir);
        s->chown_path = NULL;
        s->chown_dir = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (s->chown_dir < 0)
            return errno == ENOENT ? 0 : st_fail(s, "chown `%s`: %s", path, strerror(errno));
        s->chown_path = path;
        dir = s->chown_dir, name = "", flags |= AT_EMPTY_PATH;
    }
    if (fchownat(dir, name, (uid_t)uid, (gid_t)gid, flags) < 0 && errno != ENOENT)
        return st_fail(s, "chown `%s`: %s", path, strerror(errno));
    return 0;
}

/* UID GID: the console terminal, init's stdout, when it is one (systemd opens it). */
static int st_ttyown(struct st *s, struct vs_field *a, long at) {
    unsigned long long uid, gid;
    (void)at;
    if (vs_ull(a[0].s, 10, &uid) < 0 || vs_ull(a[1].s, 10, &gid) < 0)
        return st_fail(s, "start plan: bad console owner");
    if (s->io->console >= 0 && isatty(s->io->console) &&
        fchown(s->io->console, (uid_t)uid, (gid_t)gid) < 0)
        return st_fail(s, "console terminal: %s", strerror(errno));
    return 0;
}

static int st_limit(struct st *s, struct vs_field *a) {
    if (s->nlimits == ST_LIMITS)
        return st_fail(s, "start plan: too many limits");
    s->limits[s->nlimits++] = a - 1; /* the op's name, then its arguments */
    return 0;
}

static int st_rlimit(struct st *s, struct vs_field *a, long at) {
    (void)at;
    return st_limit(s, a);
}

static int st_nice(struct st *s, struct vs_field *a, long at) {
    (void)at;
    return st_limit(s, a);
}

/* the table is bootplan.START_OPS (consts.h): a new op needs its st_NAME here */
#define ST_FN(name, n) st_##name,
#define ST_OP(name, n) {#name, n},
static const st_fn st_fns[] = {VS_START_OPS(ST_FN)};
static const struct vs_op st_ops[] = {VS_START_OPS(ST_OP)};
#define ST_NOPS ((int)(sizeof st_ops / sizeof st_ops[0]))

/* -- host ops that wait for A or B ------------------------------------------------- */

/* Whether the op at field `at` runs later: S only waits while A joins the cgroups and
 * makes the namespaces (1-2 ms) and while B boots (1-2 ms), so the host ops that
 * neither needs run then, on the start's way no more (0.4 ms of it): the run
 * records of `identity` (state=starting and the supervisor's identity, for
 * readers of a starting guest), the limits and owners of the cgroups (A joins
 * them by path; nothing of the guest runs before "go"), the console's owner
 * (init opens it), the run files (read once the start is answered: exec.plan,
 * stop.plan, the views). Their plan order among themselves is kept. */
static int st_later(struct st *s, struct vs_field *f, long count, long at) {
    const char *op = f[at].s;
    int identity = !strcmp(op, "identity");
    if (identity || !strcmp(op, "write") || !strcmp(op, "chown") || !strcmp(op, "ttyown")) {
        if (s->nwhile_a == (int)(sizeof s->while_a / sizeof *s->while_a))
            return 0; /* in its place, then */
        if (identity) /* what the ops after it need; its run records are written later */
            s->run_dir = f[at + 1].s, s->name = f[at + 2].s, s->records = 1;
        s->while_a[s->nwhile_a++] = at;
        return 1;
    }
    if (strcmp(op, "runfile") || !s->run_dir ||
        s->nwhile_b == (int)(sizeof s->while_b / sizeof *s->while_b))
        return 0;
    size_t dir = strlen(s->run_dir); /* a file B sees (`view` RUN_DIR/NAME) is made in place */
    for (long k = at + 4; k + 1 < count; k++)
        if (!strcmp(f[k].s, "view") && !strncmp(f[k + 1].s, s->run_dir, dir) &&
            f[k + 1].s[dir] == '/' && !strcmp(f[k + 1].s + dir + 1, f[at + 1].s))
            return 0;
    s->while_b[s->nwhile_b++] = at;
    return 1;
}

/* The ops put off (st_later), in plan order; 0, or -1 at the first failure (said). */
static int st_run_later(struct st *s, struct vs_field *f, const long *ats, int n) {
    for (int j = 0; j < n; j++) {
        int k = vs_op_index(st_ops, ST_NOPS, f[ats[j]].s);
        if (st_fns[k](s, f + ats[j] + 1, ats[j]) < 0)
            return -1;
    }
    return 0;
}

/* init.pid and init.start written while B boots, under their temporary names
 * (vs_replace's first half): st_record then only renames them, once B has exec'd
 * init (B's start time does not change at its exec). Best effort: st_record
 * writes them itself when this did not. */
static void st_stage(struct st *s) {
    char tmp[4200], text[2][32];
    long long start = vs_proc_starttime(s->b, 1);
    snprintf(text[0], sizeof text[0], "%d\n", (int)s->b);
    snprintf(text[1], sizeof text[1], "%lld\n", start);
    const char *names[2] = {"init.pid", "init.start"};
    for (int k = 0; start >= 0 && k < 2; k++) {
        snprintf(tmp, sizeof tmp, "%s/.%s.tmp", s->run_dir, names[k]);
        if (vs_write_file(tmp, text[k], strlen(text[k]), O_CREAT | O_TRUNC, 0644) < 0)
            return;
    }
    s->staged = start >= 0;
}

/* -- A and B ------------------------------------------------------------------------- */

/* Offsets that start the new time namespace's monotonic and boot clocks at 0
 * (whole seconds: they start between 0 and 1 s, never below 0). */
static int st_zero_clocks(void) {
    struct timespec mono, boot;
    char text[128];
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    int n = snprintf(text, sizeof text, "monotonic -%lld 0\nboottime -%lld 0\n",
                     (long long)mono.tv_sec, (long long)boot.tv_sec);
    return vs_write_file("/proc/self/timens_offsets", text, (size_t)n, 0, 0);
}

static void st_die(int err_w, const char *what) {
    dprintf(err_w, "%s: %s", what, strerror(errno));
    _exit(1);
}

/* A's failure: "WHAT: strerror(errno)" on its error pipe. */
static void st_a_fail(int err_w, const char *fmt, ...) {
    int err = errno;
    va_list ap;
    va_start(ap, fmt);
    vdprintf(err_w, fmt, ap);
    va_end(ap);
    dprintf(err_w, ": %s", strerror(err));
    _exit(1);
}

/* A, user-namespaced guest: in a mount namespace of the host's user namespace, the
 * tree and its binds attached (copied into the guest's own mount namespace next,
 * they are locked there: no read-only bind can be made writable, none removed);
 * the limits set while raising them is still allowed; then the guest's root. */
static void st_as_guest_root(struct st *s, int err_w) {
    int why;
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        st_die(err_w, "mount namespace");
    /* Held until A exits: the guest's unshare would otherwise free this namespace on the
     * start's path, and freeing one waits for an RCU grace period (fs/namespace.c
     * namespace_unlock: synchronize_rcu_expedited), 1-9 ms on a busy host. A's exit
     * frees it while B boots; the starter reaps A last. */
    s->a_mnt_ns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (s->a_mnt_ns < 0)
        st_die(err_w, "mount namespace");
    int at = vb_open_identity(s->tree, s->tree_dev, s->tree_ino, &why, NULL);
    if (at < 0) {
        dprintf(err_w, "source %s: %s", s->tree, vb_identity_text(why));
        _exit(1);
    }
    if (vb_attach(s->mounts[0].fd, at) < 0)
        st_a_fail(err_w, "bind guest tree %s", s->tree);
    close(at);
    /* B finds the tree as its working directory: the kernel carries it into the guest's
     * mount namespace, while as the guest's root B could not pass the barrier to it */
    if (fchdir(s->mounts[0].fd) < 0)
        st_a_fail(err_w, "chdir %s", s->tree);
    for (int k = 1; k < s->nmounts; k++) {
        const char *target = s->mounts[k].target;
        int fd = vb_openat2(s->mounts[0].fd, target[0] == '/' ? target + 1 : target, O_PATH);
        if (fd < 0)
            st_a_fail(err_w, "bind target %s", target);
        if (vb_attach(s->mounts[k].fd, fd) < 0)
            st_a_fail(err_w, "bind onto %s", target);
        close(fd);
        close(s->mounts[k].fd);
    }
    close(s->mounts[0].fd);
    for (int k = 0; k < s->nlimits; k++) {
        struct vs_field *f = s->limits[k];
        long long v[3] = {0, 0, 0};
        for (int j = 0; j < (f[0].s[0] == 'n' ? 1 : 3); j++)
            vs_ll(f[1 + j].s, 10, &v[j]);
        if ((f[0].s[0] == 'n' ? vs_nice(v[0]) : vs_rlimit(v[0], v[1], v[2])) < 0)
            st_a_fail(err_w, "ULIMIT/S_NICE");
    }
    if (vs_become_root_in(s->userns) < 0)
        st_die(err_w, "become the guest's root");
}

/* A: into every cgroup, new namespaces, fork B (PID 1), report B's host PID, exit. */
static void st_child_a(struct st *s, int moved, int pid_w, int go_r, int err_w) {
    if (s->cgroup2 >= 0 && !moved && vs_enter_cgroup2(s->cgroup2) < 0)
        st_die(err_w, "join cgroup");
    for (int k = 0; k < s->ntasks; k++)
        if (vs_join_tasks(s->tasks[k]->s) < 0)
            st_die(err_w, "join cgroup");
    if (s->userns >= 0)
        st_as_guest_root(s, err_w);
    if (unshare((int)s->ns_flags) < 0)
        st_die(err_w, "unshare");
    if (s->timens && st_zero_clocks() < 0)
        st_die(err_w, "timens_offsets");
    /* nothing we mount may reach the host (and host mounts may reach in) */
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        st_die(err_w, "mount / slave");
    pid_t b = fork();
    if (b < 0)
        st_die(err_w, "fork");
    if (b == 0) {
        char go = 0;
        if (s->a_mnt_ns >= 0) /* the host's user namespace's: never the guest's to keep */
            close(s->a_mnt_ns);
        if (read(go_r, &go, 1) != 1 || go != 'g')
            _exit(1); /* the starter gave up */
        close(go_r);
        vboot_run(s->boot->s, s->boot->n, s->io->console, err_w, s->vinit, s->views, s->nviews);
        _exit(1);
    }
    dprintf(pid_w, "%d\n", (int)b);
    _exit(0);
}

/* The controller's word between B's creation and its boot (the network). */
static int st_ask(struct st *s) {
    char go = 0;
    if (s->io->report < 0 || s->io->go < 0)
        return 0;
    dprintf(s->io->report, "pid %d\n", (int)s->b);
    struct pollfd p = {s->io->go, POLLIN, 0};
    long long left = s->deadline - st_now_ms();
    if (left <= 0 || poll(&p, 1, (int)left) <= 0 || read(s->io->go, &go, 1) != 1 || go != 'g')
        return st_fail(s, "start aborted before the guest's boot");
    return 0;
}

/* Fork A, learn B, let B boot, wait for its exec; 0 or -1. The ops put off run while
 * A and B work (st_later); a failure of one is reported once B is known (and killed). */
static int st_launch(struct st *s, struct vs_field *f) {
    int pid_p[2], go_p[2], err_p[2], moved;
    char line[1024];
    if (!s->boot || !(s->ns_flags & CLONE_NEWNS)) /* A makes / a slave: never the host's */
        return st_fail(s, "start plan: no boot step or no mount namespace");
    if (s->userns >= 0 && (!s->nmounts || s->mounts[0].target))
        return st_fail(s, "start plan: a user namespace without the guest's tree");
    if (pipe2(pid_p, O_CLOEXEC) < 0 || pipe2(go_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0)
        return st_fail(s, "pipe: %s", strerror(errno));
    s->a = vs_clone_into(s->cgroup2, &moved);
    if (s->a == 0)
        st_child_a(s, moved, pid_p[1], go_p[0], err_p[1]);
    close(pid_p[1]), close(go_p[0]), close(err_p[1]);
    int later = s->a < 0 ? 0 : st_run_later(s, f, s->while_a, s->nwhile_a);
    if (s->chown_dir >= 0) /* B has no use for it (and A never had it) */
        close(s->chown_dir);
    s->chown_dir = -1;
    ssize_t n = s->a < 0 ? -1 : st_read(pid_p[0], line, sizeof line - 1, s->deadline, 1);
    close(pid_p[0]);
    if (n > 0) /* A exits now; reaped after the answer (vs_start), not waited for here */
        s->b = (pid_t)atoi(line);
    if (later < 0) { /* said; B (if A made it) never gets its go: killed by st_undo */
        close(err_p[0]), close(go_p[1]);
        return -1;
    }
    if (n <= 0 || s->b <= 0) {
        n = st_read(err_p[0], line, sizeof line - 1, s->deadline, 0);
        return st_fail(s, "%s", n > 0 ? line : "namespace set-up failed");
    }
    if (st_ask(s) < 0 || write(go_p[1], "g", 1) != 1)
        return -1;
    close(go_p[1]);
    later = st_run_later(s, f, s->while_b, s->nwhile_b);
    if (later == 0)
        st_stage(s);
    /* B's error pipe closes on its exec; anything on it is a failed step */
    n = later < 0 ? 0 : st_read(err_p[0], line, sizeof line - 1, s->deadline, 0);
    close(err_p[0]);
    if (later < 0)
        return -1; /* said; B is killed by st_undo */
    if (n < 0)
        return st_fail(s, "start timed out: a boot step did not finish in time (a hung "
                          "V_MOUNT?); everything was undone");
    return n > 0 ? st_fail(s, "%s", line) : 0;
}

/* -- records and undo ---------------------------------------------------------------- */

/* A staged value (st_stage) renamed into place: vs_replace's second half. */
static int st_unstage(const char *dir, const char *name) {
    char tmp[4200], final[4200];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    snprintf(final, sizeof final, "%s/%s", dir, name);
    return rename(tmp, final);
}

static int st_record(struct st *s) {
    struct timespec now;
    char started[64], text[64];
    /* an init that already exited is recorded too: the supervisor reaps it and the
     * start fails with its exit status and its last console lines */
    long long start = s->staged ? 0 : vs_proc_starttime(s->b, 1);
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(started, sizeof started, "%lld.%03ld", (long long)now.tv_sec, now.tv_nsec / 1000000);
    if (start < 0)
        return st_fail(s, "the guest's init is gone; see its log");
    if (s->staged ? st_unstage(s->run_dir, "init.pid") < 0 ||
                        st_unstage(s->run_dir, "init.start") < 0
                  : vs_value_ll(s->run_dir, "init.pid", s->b) < 0 ||
                        vs_value_ll(s->run_dir, "init.start", start) < 0)
        return st_fail(s, "run file in %s: %s", s->run_dir, strerror(errno));
    if (vs_value(s->run_dir, "started", started) < 0 ||
        vs_value(s->run_dir, "state", "running") < 0)
        return st_fail(s, "run file in %s: %s", s->run_dir, strerror(errno));
    snprintf(text, sizeof text, "started, init pid %d", (int)s->b);
    st_log(s->name, text);
    return 0;
}

static void st_kill(pid_t *pid) {
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

static void st_unlink(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    snprintf(path, sizeof path, "%s/.%s.tmp", dir, name);
    unlink(path);
}

static void st_undo(struct st *s, struct vs_field *f) {
    static const char *const values[] = {VS_RUN_FILES};
    st_kill(&s->b);
    st_kill(&s->a);
    for (int round = 0; round < 50; round++) { /* deepest first; the killed B may still exit */
        int busy = 0;
        for (int k = s->nmade - 1; k >= 0; k--)
            if (rmdir(f[s->made[k] + 1].s) < 0 && errno == EBUSY)
                busy = 1;
        if (!busy)
            break;
        usleep(10000);
    }
    for (int k = 0; k < s->nfiles; k++)
        st_unlink(s->run_dir, s->files[k]);
    for (size_t k = 0; s->records && k < sizeof values / sizeof values[0]; k++)
        st_unlink(s->run_dir, values[k]);
}

/* Execute a start plan; B's PID (the guest's init, booted and recorded) or -1. */
static pid_t vs_start(char *plan, size_t len, struct st_io *io) {
    struct st s = {.io = io, .cgroup2 = -1, .vinit = -1, .userns = -1, .plain = -1,
                   .userns_child = -1, .a_mnt_ns = -1, .chown_dir = -1};
    long count;
    const char *bad = "?";
    struct vs_field *f = vs_fields(plan, len, &count);
    s.deadline = st_now_ms() + VS_START_TIMEOUT_MS;
    io->error[0] = '\0';
    if (!f || vs_check(st_ops, ST_NOPS, f, count, &bad) < 0 || !(s.made = calloc(count + 1, sizeof(long)))) {
        st_fail(&s, "start plan: bad op '%s'", f ? bad : "?");
        goto report;
    }
    for (long at = 0; at < count;) {
        int k = vs_op_index(st_ops, ST_NOPS, f[at].s);
        long used = vs_arity(&st_ops[k], f + at + 1, count - at - 1);
        if (!st_later(&s, f, count, at) && st_fns[k](&s, f + at + 1, at) < 0)
            break;
        at += 1 + used;
    }
    if (!io->error[0] && !s.run_dir)
        st_fail(&s, "start plan: no identity");
    if (!io->error[0] && st_launch(&s, f) == 0)
        st_record(&s);
    if (io->error[0])
        st_undo(&s, f);
report:
    if (s.chown_dir >= 0) /* a failure before the launch ran no chown (they wait for A) */
        close(s.chown_dir);
    for (int k = 0; k < s.nmounts; k++) /* detached: they vanish with their last fd */
        close(s.mounts[k].fd);
    for (int k = 0; k < s.nviews; k++)
        close(s.views[k]);
    if (s.userns >= 0)
        close(s.userns);
    if (s.plain >= 0)
        close(s.plain);
    if (s.cgroup2 >= 0)
        close(s.cgroup2);
    if (s.vinit >= 0)
        close(s.vinit);
    if (io->report >= 0) {
        if (io->error[0])
            dprintf(io->report, "error %s\n", io->error);
        else
            dprintf(io->report, "ok %d %lld\n", (int)s.b, vs_starttime(s.b));
    }
    io->exited[0] = s.userns_child, io->exited[1] = s.a;
    if (!io->reap_late) /* exited long ago: reaped after the answer, never waited for */
        vs_reap(io); /* A told B's PID and exited (its last namespace's release) */
    free(s.made);
    free(f);
    return io->error[0] ? -1 : s.b;
}

#endif /* VSTUI_START_H */
