/*
 * boot.h: the executor of a guest's start plan, from unshare to init's exec.
 *
 * Python (engine/runtime/plan.py) decides WHAT a start does and
 * engine/runtime/bootplan.py writes it down; this code only does it, in the
 * order given (it holds no policy). It runs as the guest's PID 1 (process B:
 * already in the new mount, PID, UTS, IPC, cgroup, network and time
 * namespaces), from `vboot` or linked into a C start path. Header only: every
 * function is static; include it once.
 *
 *   static int vboot_run(char *plan, size_t len, int log_fd, int err_fd,
 *                        int seccomp_fd, int vinit_fd);
 *
 * never returns on success (it execs the guest's init); on failure it writes
 * ONE line to err_fd and returns 1. The plan buffer is modified in place.
 * log_fd becomes init's stdout and stderr; seccomp_fd holds the packed
 * program (struct sock_filter[]); vinit_fd the vinit binary to copy into the
 * guest; -1 = none. Those fds are read with pread from offset 0.
 *
 * THE PLAN FORMAT: a sequence of netstrings `LEN:BYTES,` (LEN decimal). The
 * parser replaces each trailing `,` by NUL, so every field is a C string
 * (file content uses its length). An op is a netstring with its name followed
 * by its arguments, each one netstring. Numbers are decimal, MODE octal,
 * MASK hexadecimal; booleans 0/1; HASDATA 0 means "no data" (NULL). The
 * whole plan is parsed and checked (names, arities) before the first op runs.
 *
 *   umask MODE            setsid
 *   view PATH             open_tree(OPEN_TREE_CLONE) of a host file, kept for viewmount
 *   root PATH             bind the tree onto itself (MS_REC), keep an O_PATH fd of it
 *   hostbind SRC TARGET RO REC
 *   hostmount SRC TARGET FSTYPE FLAGS HASDATA DATA
 *                         TARGET is created and resolved INSIDE the tree
 *                         (openat2 RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS) and
 *                         mounted on through /proc/self/fd/N; read-only is a
 *                         remount repeating the locked flags (mount_setattr
 *                         AT_RECURSIVE for a recursive bind); MS_RDONLY in
 *                         FLAGS means mount, then remount read-only
 *   pivot                 pivot_root(".", ".") in the tree, lazy unmount of the host
 *   nosymlinks N PATH...  each must be a real directory (created when missing)
 *   mount SRC TARGET FSTYPE FLAGS HASDATA DATA   (mkdir -p TARGET first)
 *   mask TARGET           /dev/null over a file, empty read-only tmpfs over a dir
 *   readonly TARGET       recursive bind onto itself, remounted read-only
 *   bind SRC TARGET RO    (skipped when SRC does not exist)
 *   device TARGET MAJOR MINOR MODE
 *   symlink TARGET TO
 *   file TARGET MODE CONTENT   fresh file: tmp (O_EXCL|O_NOFOLLOW) + rename
 *   vinit TARGET          the same, mode 0755, content from vinit_fd
 *   viewmount TARGET      move_mount the view there, read-only
 *   hostname NAME         domainname NAME        loopback (lo up)
 *   stdio                 /dev/null on 0, log_fd on 1 and 2, every other fd
 *                         closed but err_fd (close-on-exec) and seccomp_fd
 *   rlimit RES SOFT HARD  (-1 = RLIM_INFINITY)
 *   nice N                setpriority, RLIMIT_NICE ceiling 20-N (never raised)
 *   caps MASK             drop every cap not in MASK from the bounding set;
 *                         ambient and inheritable cleared
 *   signals               default dispositions, empty mask
 *   seccomp               PR_SET_SECCOMP with seccomp_fd's program
 *   exec N ARGV... M ENV...
 *
 * Error lines keep the wording of the former Python child (tests grep it):
 * "bind target /x: No such file or directory", "exec /sbin/init: ...".
 */
#ifndef VSTUI_BOOT_H
#define VSTUI_BOOT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* must come before the first system header of the includer */
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

/* the same numbers on every architecture (the unified syscall table, 5.x) */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#define VB_OPEN_TREE_CLONE 1
#define VB_MOVE_MOUNT_F_EMPTY_PATH 0x4
#define VB_AT_RECURSIVE 0x8000
#define VB_MOUNT_ATTR_RDONLY 0x1
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

struct vb_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

struct vb_field {
    char *s;
    size_t n;
};

struct vb {
    int log_fd, err_fd, seccomp_fd, vinit_fd;
    int root_fd, view_fd;
    const char *root; /* the host path `root` bound, for messages */
};

/* -- the one error line ---------------------------------------------------------- */

static int vb_say(const struct vb *b, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    for (int k = 0; k < n; k++) /* a path with a newline must not make two lines */
        if (line[k] == '\n' || line[k] == '\r')
            line[k] = ' ';
    line[n++] = '\n';
    (void)!write(b->err_fd, line, (size_t)n);
    return -1;
}

/* "WHAT TARGET: strerror(err)" */
static int vb_fail(const struct vb *b, const char *what, const char *target, int err) {
    return vb_say(b, "%s %s: %s", what, target, strerror(err));
}

/* -- small helpers ------------------------------------------------------------------ */

static int vb_number(const struct vb *b, const struct vb_field *f, int base, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(f->s, &end, base);
    if (errno || end == f->s || *end)
        return vb_say(b, "boot plan: '%s' is not a number", f->s);
    return 0;
}

static int vb_unsigned(const struct vb *b, const struct vb_field *f, int base,
                       unsigned long long *out) {
    char *end;
    errno = 0;
    *out = strtoull(f->s, &end, base);
    if (errno || end == f->s || *end || f->s[0] == '-')
        return vb_say(b, "boot plan: '%s' is not a number", f->s);
    return 0;
}

/* The whole of a file from offset 0 (the fd's shared offset is left alone). */
static char *vb_read_fd(int fd, size_t *len) {
    struct stat st;
    if (fstat(fd, &st) < 0)
        return NULL;
    size_t cap = st.st_size > 0 ? (size_t)st.st_size : 4096, done = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf)
            return NULL;
        ssize_t n = pread(fd, buf + done, cap - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return NULL;
        }
        if (n == 0)
            break;
        done += (size_t)n;
        if (done == cap) {
            char *more = realloc(buf, cap * 2 + 1);
            if (!more)
                free(buf);
            buf = more;
            cap *= 2;
        }
    }
    buf[done] = '\0';
    *len = done;
    return buf;
}

static int vb_write_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static void vb_fd_path(char *out, size_t size, int fd) {
    snprintf(out, size, "/proc/self/fd/%d", fd);
}

/* An fd on 0..2 would be overwritten by `stdio`: move it up (the original stays). */
static int vb_lift(int fd) {
    return fd >= 0 && fd <= 2 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : fd;
}

/* -- mounts ---------------------------------------------------------------------------- */

/* The per-mount flags a bind remount must repeat (else the kernel refuses or clears). */
static unsigned long vb_locked_flags(const char *path) {
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        return 0;
    unsigned long out = 0;
    if (sv.f_flag & ST_NOSUID)
        out |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV)
        out |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC)
        out |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME)
        out |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME)
        out |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME)
        out |= MS_RELATIME;
    return out;
}

static int vb_remount_ro(const char *path) {
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | vb_locked_flags(path);
    return mount(NULL, path, NULL, flags, NULL);
}

/* mkdir -p (after pivot_root: every path is the guest's own). */
static int vb_mkdir_p(const char *path) {
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(buf, path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char keep = *p;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = keep;
        if (!keep)
            return 0;
    }
}

/* -- inside the tree, before pivot_root ---------------------------------------------- */

static int vb_openat2(int dirfd, const char *path, int flags) {
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* Create PATH and its missing parents inside the tree; an O_PATH fd of it.
 * Each step is a fresh lookup from the root: a planted symlink or `..` stays
 * inside the tree (like engine.safepath.mkdirs_in_root). */
static int vb_mkdirs_in_root(int root_fd, const char *path) {
    char prefix[PATH_MAX];
    size_t used = 0;
    int cur = vb_openat2(root_fd, ".", O_PATH | O_DIRECTORY);
    const char *p = path;
    while (cur >= 0 && *p) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 0)
            break;
        if (!(len == 1 && p[0] == '.')) {
            if (used + len + 2 > sizeof prefix) {
                close(cur);
                errno = ENAMETOOLONG;
                return -1;
            }
            if (used)
                prefix[used++] = '/';
            memcpy(prefix + used, p, len);
            used += len;
            prefix[used] = '\0';
            const char *name = prefix + used - len;
            if (!(len == 2 && p[0] == '.' && p[1] == '.') && mkdirat(cur, name, 0755) < 0 &&
                errno != EEXIST) {
                int err = errno;
                close(cur);
                errno = err;
                return -1;
            }
            int next = vb_openat2(root_fd, prefix, O_PATH | O_DIRECTORY);
            int err = errno;
            close(cur);
            errno = err;
            cur = next;
        }
        p += len;
    }
    return cur;
}

/* Read-only for the mount now on TARGET (a fresh lookup lands on the mount
 * itself, not the directory under it); with `recursive` every submount too. */
static int vb_remount_ro_in_root(int root_fd, const char *target, int recursive) {
    int fd = vb_openat2(root_fd, target[0] == '/' ? target + 1 : target, O_PATH);
    if (fd < 0)
        return -1;
    char where[64];
    vb_fd_path(where, sizeof where, fd);
    int rc = vb_remount_ro(where);
    if (rc == 0 && recursive) {
        struct vb_mount_attr attr = {.attr_set = VB_MOUNT_ATTR_RDONLY};
        rc = (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | VB_AT_RECURSIVE, &attr,
                          sizeof attr);
    }
    int err = errno;
    close(fd);
    errno = err;
    return rc;
}

static const char *vb_data(const struct vb_field *hasdata, const struct vb_field *data) {
    return strcmp(hasdata->s, "0") ? data->s : NULL;
}

/* -- the ops ------------------------------------------------------------------------- */

typedef int (*vb_fn)(struct vb *, struct vb_field *);

static int op_umask(struct vb *b, struct vb_field *a) {
    long long mode;
    if (vb_number(b, &a[0], 8, &mode) < 0)
        return -1;
    umask((mode_t)mode);
    return 0;
}

static int op_setsid(struct vb *b, struct vb_field *a) {
    (void)a;
    if (setsid() < 0)
        return vb_fail(b, "setsid", "", errno);
    return 0;
}

static int op_view(struct vb *b, struct vb_field *a) {
    b->view_fd = (int)syscall(SYS_open_tree, AT_FDCWD, a[0].s, VB_OPEN_TREE_CLONE | O_CLOEXEC);
    if (b->view_fd < 0)
        return vb_say(b, "open_tree %s: %s", a[0].s, strerror(errno));
    return 0;
}

static int op_root(struct vb *b, struct vb_field *a) {
    b->root = a[0].s;
    if (mount(a[0].s, a[0].s, NULL, MS_BIND | MS_REC, NULL) < 0)
        return vb_fail(b, "bind guest tree", a[0].s, errno);
    b->root_fd = open(a[0].s, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (b->root_fd < 0)
        return vb_fail(b, "bind guest tree", a[0].s, errno);
    return 0;
}

static int vb_need_root(struct vb *b, const char *op) {
    if (b->root_fd < 0)
        return vb_say(b, "boot plan: %s before root", op);
    return 0;
}

static int op_hostbind(struct vb *b, struct vb_field *a) {
    const char *src = a[0].s, *target = a[1].s;
    int ro = strcmp(a[2].s, "0") != 0, rec = strcmp(a[3].s, "0") != 0;
    if (vb_need_root(b, "hostbind") < 0)
        return -1;
    int fd = vb_mkdirs_in_root(b->root_fd, target);
    if (fd < 0)
        return vb_fail(b, "bind target", target, errno);
    char where[64];
    vb_fd_path(where, sizeof where, fd);
    int rc = mount(src, where, NULL, MS_BIND | (rec ? MS_REC : 0), NULL);
    if (rc == 0 && ro)
        rc = vb_remount_ro_in_root(b->root_fd, target, rec);
    int err = errno;
    close(fd);
    if (rc < 0)
        return vb_say(b, "bind %s onto %s: %s", src, target, strerror(err));
    return 0;
}

static int op_hostmount(struct vb *b, struct vb_field *a) {
    const char *src = a[0].s, *target = a[1].s, *fstype = a[2].s;
    unsigned long long flags;
    if (vb_need_root(b, "hostmount") < 0 || vb_unsigned(b, &a[3], 10, &flags) < 0)
        return -1;
    int fd = vb_mkdirs_in_root(b->root_fd, target);
    if (fd < 0)
        return vb_fail(b, "mount target", target, errno);
    char where[64];
    vb_fd_path(where, sizeof where, fd);
    int rc = mount(src, where, fstype, (unsigned long)flags & ~MS_RDONLY, vb_data(&a[4], &a[5]));
    if (rc == 0 && (flags & MS_RDONLY))
        rc = vb_remount_ro_in_root(b->root_fd, target, 0);
    int err = errno;
    close(fd);
    if (rc < 0)
        return vb_say(b, "mount %s %s on %s: %s", fstype, src, target, strerror(err));
    return 0;
}

static int op_pivot(struct vb *b, struct vb_field *a) {
    (void)a;
    if (vb_need_root(b, "pivot") < 0)
        return -1;
    int rc = fchdir(b->root_fd);
    close(b->root_fd);
    b->root_fd = -1;
    /* new root and old root on the same spot; the old one is on top and goes
     * away with the lazy unmount (no directory needed for it) */
    if (rc < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0)
        return vb_fail(b, "pivot_root into", b->root, errno);
    if (chdir("/") < 0)
        return vb_fail(b, "pivot_root into", b->root, errno);
    return 0;
}

static int op_nosymlinks(struct vb *b, struct vb_field *a) {
    long long n = 0;
    vb_number(b, &a[0], 10, &n); /* checked by the parser */
    for (long long k = 1; k <= n; k++) {
        struct stat st;
        const char *path = a[k].s;
        if (lstat(path, &st) < 0) {
            if (errno == ENOENT && vb_mkdir_p(path) == 0)
                continue;
            return vb_fail(b, "guest tree:", path, errno);
        }
        if (!S_ISDIR(st.st_mode))
            return vb_say(b, "guest tree: %s is not a directory; make it a plain directory",
                          path);
    }
    return 0;
}

static int op_mount(struct vb *b, struct vb_field *a) {
    unsigned long long flags;
    if (vb_unsigned(b, &a[3], 10, &flags) < 0)
        return -1;
    if (vb_mkdir_p(a[1].s) < 0 ||
        mount(a[0].s, a[1].s, a[2].s, (unsigned long)flags, vb_data(&a[4], &a[5])) < 0)
        return vb_fail(b, "mount", a[1].s, errno);
    return 0;
}

static int op_mask(struct vb *b, struct vb_field *a) {
    struct stat st;
    const char *target = a[0].s;
    if (lstat(target, &st) < 0)
        return errno == ENOENT ? 0 : vb_fail(b, "mask", target, errno);
    int rc = S_ISDIR(st.st_mode)
                 ? mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         "mode=555,size=4k")
                 : mount("/dev/null", target, NULL, MS_BIND, NULL);
    if (rc < 0)
        return vb_fail(b, "mask", target, errno);
    return 0;
}

static int op_readonly(struct vb *b, struct vb_field *a) {
    struct stat st;
    const char *target = a[0].s;
    if (lstat(target, &st) < 0)
        return errno == ENOENT ? 0 : vb_fail(b, "readonly", target, errno);
    if (mount(target, target, NULL, MS_BIND | MS_REC, NULL) < 0 || vb_remount_ro(target) < 0)
        return vb_fail(b, "readonly", target, errno);
    return 0;
}

static int op_bind(struct vb *b, struct vb_field *a) {
    struct stat st;
    const char *src = a[0].s, *target = a[1].s;
    if (lstat(src, &st) < 0)
        return errno == ENOENT ? 0 : vb_fail(b, "bind", target, errno);
    if (mount(src, target, NULL, MS_BIND, NULL) < 0 ||
        (strcmp(a[2].s, "0") && vb_remount_ro(target) < 0))
        return vb_fail(b, "bind", target, errno);
    return 0;
}

static int op_device(struct vb *b, struct vb_field *a) {
    unsigned long long major, minor, mode;
    if (vb_unsigned(b, &a[1], 10, &major) < 0 || vb_unsigned(b, &a[2], 10, &minor) < 0 ||
        vb_unsigned(b, &a[3], 8, &mode) < 0)
        return -1;
    mode &= 07777;
    if (mknod(a[0].s, S_IFCHR | (mode_t)mode, makedev(major, minor)) < 0 ||
        chmod(a[0].s, (mode_t)mode) < 0)
        return vb_fail(b, "device", a[0].s, errno);
    return 0;
}

static int op_symlink(struct vb *b, struct vb_field *a) {
    if (symlink(a[1].s, a[0].s) < 0)
        return vb_fail(b, "symlink", a[0].s, errno);
    return 0;
}

/* Replace TARGET by a fresh file (never write through a planted symlink).
 * Content comes from `data` or, when it is NULL, from `src_fd`. */
static int vb_write_file(const char *target, const char *data, size_t len, int src_fd,
                         mode_t mode) {
    char dir[PATH_MAX], tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.vstui-tmp", target) >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    snprintf(dir, sizeof dir, "%s", target);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (vb_mkdir_p(dir) < 0)
            return -1;
    }
    if (unlink(tmp) < 0 && errno != ENOENT)
        return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    int rc = 0;
    if (data) {
        rc = vb_write_all(fd, data, len);
    } else {
        char buf[65536];
        off_t at = 0;
        for (;;) {
            ssize_t n = pread(src_fd, buf, sizeof buf, at);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0 || (rc = vb_write_all(fd, buf, (size_t)n)) < 0) {
                rc = n < 0 ? -1 : rc;
                break;
            }
            at += n;
        }
    }
    if (rc == 0)
        rc = fchmod(fd, mode);
    int err = errno;
    close(fd);
    if (rc == 0 && rename(tmp, target) < 0)
        return -1;
    errno = err;
    return rc;
}

static int op_file(struct vb *b, struct vb_field *a) {
    unsigned long long mode;
    if (vb_unsigned(b, &a[1], 8, &mode) < 0)
        return -1;
    if (vb_write_file(a[0].s, a[2].s, a[2].n, -1, (mode_t)(mode & 07777)) < 0)
        return vb_fail(b, "file", a[0].s, errno);
    return 0;
}

static int op_vinit(struct vb *b, struct vb_field *a) {
    if (b->vinit_fd < 0)
        return vb_say(b, "install init %s: no vinit binary was given", a[0].s);
    int rc = vb_write_file(a[0].s, NULL, 0, b->vinit_fd, 0755);
    int err = errno;
    close(b->vinit_fd);
    b->vinit_fd = -1;
    if (rc < 0)
        return vb_fail(b, "install init", a[0].s, err);
    return 0;
}

static int op_viewmount(struct vb *b, struct vb_field *a) {
    if (b->view_fd < 0)
        return vb_say(b, "boot plan: viewmount without view");
    int rc = (int)syscall(SYS_move_mount, b->view_fd, "", AT_FDCWD, a[0].s,
                          VB_MOVE_MOUNT_F_EMPTY_PATH);
    if (rc == 0)
        rc = vb_remount_ro(a[0].s);
    int err = errno;
    close(b->view_fd);
    b->view_fd = -1;
    if (rc < 0)
        return vb_fail(b, "bind view onto", a[0].s, err);
    return 0;
}

static int op_hostname(struct vb *b, struct vb_field *a) {
    if (sethostname(a[0].s, a[0].n) < 0)
        return vb_fail(b, "set", "hostname/loopback", errno);
    return 0;
}

static int op_domainname(struct vb *b, struct vb_field *a) {
    if (setdomainname(a[0].s, a[0].n) < 0)
        return vb_fail(b, "set", "hostname/loopback", errno);
    return 0;
}

static int op_loopback(struct vb *b, struct vb_field *a) {
    (void)a;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq req;
    memset(&req, 0, sizeof req);
    strcpy(req.ifr_name, "lo");
    int rc = sock < 0 ? -1 : ioctl(sock, SIOCGIFFLAGS, &req);
    if (rc == 0 && !(req.ifr_flags & IFF_UP)) {
        req.ifr_flags |= IFF_UP;
        rc = ioctl(sock, SIOCSIFFLAGS, &req);
    }
    int err = errno;
    if (sock >= 0)
        close(sock);
    if (rc < 0)
        return vb_fail(b, "set", "hostname/loopback", err);
    return 0;
}

/* Close every fd but the kept ones (sorted, unique, >= 0). */
static void vb_close_except(const int *keep, int n) {
    unsigned int low = 0;
    for (int k = 0; k <= n; k++) {
        unsigned int high = k < n ? (unsigned int)keep[k] : ~0U;
        if (high > low && syscall(SYS_close_range, low, high - 1, 0) < 0) {
            /* before Linux 5.9: one by one up to the fd limit */
            long top = sysconf(_SC_OPEN_MAX);
            for (long fd = low; fd < (long)high && fd < (top > 0 ? top : 65536); fd++)
                close((int)fd);
        }
        if (k < n)
            low = high + 1;
    }
}

static int op_stdio(struct vb *b, struct vb_field *a) {
    (void)a;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC); /* the guest's: ours, in the new /dev */
    if (null < 0)
        return vb_fail(b, "stdio", "/dev/null", errno);
    int out = b->log_fd >= 0 ? b->log_fd : null; /* never the starter's own 1 and 2 */
    if (dup2(out, 1) < 0 || dup2(out, 2) < 0 || dup2(null, 0) < 0)
        return vb_fail(b, "stdio", b->log_fd >= 0 ? "log" : "/dev/null", errno);
    fcntl(b->err_fd, F_SETFD, FD_CLOEXEC);
    int keep[5] = {0, 1, 2, b->err_fd, b->seccomp_fd}, n = b->seccomp_fd >= 0 ? 5 : 4;
    if (n == 5 && keep[4] < keep[3]) {
        keep[4] = b->err_fd;
        keep[3] = b->seccomp_fd;
    }
    vb_close_except(keep, n);
    b->log_fd = b->vinit_fd = b->view_fd = b->root_fd = -1;
    return 0;
}

static rlim_t vb_rlim(long long value) {
    return value < 0 ? RLIM_INFINITY : (rlim_t)value;
}

static int op_rlimit(struct vb *b, struct vb_field *a) {
    long long res, soft, hard;
    if (vb_number(b, &a[0], 10, &res) < 0 || vb_number(b, &a[1], 10, &soft) < 0 ||
        vb_number(b, &a[2], 10, &hard) < 0)
        return -1;
    struct rlimit rl = {vb_rlim(soft), vb_rlim(hard)};
    if (setrlimit((int)res, &rl) < 0)
        return vb_say(b, "ULIMIT/S_NICE: %s", strerror(errno));
    return 0;
}

static int op_nice(struct vb *b, struct vb_field *a) {
    long long nice;
    if (vb_number(b, &a[0], 10, &nice) < 0)
        return -1;
    struct rlimit rl;
    if (setpriority(PRIO_PROCESS, 0, (int)nice) < 0 || getrlimit(RLIMIT_NICE, &rl) < 0)
        return vb_say(b, "ULIMIT/S_NICE: %s", strerror(errno));
    /* the floor: a nice value down to 20 - rlim_cur; never raised (without
     * CAP_SYS_RESOURCE that fails, and lower is stricter) */
    rlim_t ceiling = nice >= 20 ? 0 : (rlim_t)(20 - nice);
    if (ceiling > rl.rlim_max)
        ceiling = rl.rlim_max;
    rl.rlim_cur = rl.rlim_max = ceiling;
    if (setrlimit(RLIMIT_NICE, &rl) < 0)
        return vb_say(b, "ULIMIT/S_NICE: %s", strerror(errno));
    return 0;
}

static int op_caps(struct vb *b, struct vb_field *a) {
    unsigned long long keep;
    if (vb_unsigned(b, &a[0], 16, &keep) < 0)
        return -1;
    /* up to the kernel's last capability, where the drop says EINVAL (no
     * /proc/sys/kernel/cap_last_cap: it is the guest's /proc by now); a
     * number the kernel lacks cannot be kept: bits above 63 never are */
    for (int cap = 0;; cap++) {
        if (cap < 64 && keep >> cap & 1)
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
            continue;
        if (errno == EINVAL && cap > 0 && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0)
            break; /* past the last capability */
        return vb_fail(b, "drop capabilities", "bounding set", errno);
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); /* no ambient set before 4.3 */
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &head, data) < 0)
        return vb_fail(b, "drop capabilities", "bounding set", errno);
    data[0].inheritable = data[1].inheritable = 0;
    if (syscall(SYS_capset, &head, data) < 0)
        return vb_fail(b, "drop capabilities", "bounding set", errno);
    return 0;
}

static int op_signals(struct vb *b, struct vb_field *a) {
    (void)b;
    (void)a;
    /* ignored signals survive exec (a Python parent ignores SIGPIPE, SIGXFSZ) */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL); /* SIGKILL, SIGSTOP: EINVAL, harmless */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    return 0;
}

static int op_seccomp(struct vb *b, struct vb_field *a) {
    (void)a;
    if (b->seccomp_fd < 0)
        return vb_say(b, "seccomp program: none was given; the guest never starts unfiltered");
    size_t len = 0;
    char *program = vb_read_fd(b->seccomp_fd, &len);
    int err = errno;
    close(b->seccomp_fd);
    b->seccomp_fd = -1;
    if (!program)
        return vb_fail(b, "seccomp", "program", err);
    size_t count = len / sizeof(struct sock_filter);
    if (count == 0 || len % sizeof(struct sock_filter) || count > 0xffff)
        return vb_fail(b, "seccomp", "program", EINVAL);
    struct sock_fprog prog = {(unsigned short)count, (struct sock_filter *)program};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) {
        err = errno;
        return vb_say(b, "prctl `PR_SET_SECCOMP`: %s%s", strerror(err),
                      err == EACCES ? " (needs CAP_SYS_ADMIN or no_new_privs)" : "");
    }
    return 0;
}

static int op_exec(struct vb *b, struct vb_field *a) {
    long long nargs, nenv;
    vb_number(b, &a[0], 10, &nargs); /* both checked by the parser */
    vb_number(b, &a[nargs + 1], 10, &nenv);
    char **argv = calloc((size_t)nargs + 1, sizeof *argv);
    char **envp = calloc((size_t)nenv + 1, sizeof *envp);
    if (!argv || !envp)
        return vb_fail(b, "exec", a[1].s, ENOMEM);
    for (long long k = 0; k < nargs; k++)
        argv[k] = a[1 + k].s;
    for (long long k = 0; k < nenv; k++)
        envp[k] = a[nargs + 2 + k].s;
    if (b->seccomp_fd >= 0) { /* a plan without `seccomp`: never leak the fd */
        close(b->seccomp_fd);
        b->seccomp_fd = -1;
    }
    execve(argv[0], argv, envp);
    return vb_fail(b, "exec", argv[0], errno);
}

/* -- the plan -------------------------------------------------------------------------- */

#define VB_VARIABLE (-1)

struct vb_op {
    const char *name;
    int nargs; /* VB_VARIABLE: counts in the arguments */
    vb_fn run;
};

static const struct vb_op vb_ops[] = {
    {"umask", 1, op_umask},
    {"setsid", 0, op_setsid},
    {"view", 1, op_view},
    {"root", 1, op_root},
    {"hostbind", 4, op_hostbind},
    {"hostmount", 6, op_hostmount},
    {"pivot", 0, op_pivot},
    {"nosymlinks", VB_VARIABLE, op_nosymlinks},
    {"mount", 6, op_mount},
    {"mask", 1, op_mask},
    {"readonly", 1, op_readonly},
    {"bind", 3, op_bind},
    {"device", 4, op_device},
    {"symlink", 2, op_symlink},
    {"file", 3, op_file},
    {"vinit", 1, op_vinit},
    {"viewmount", 1, op_viewmount},
    {"hostname", 1, op_hostname},
    {"domainname", 1, op_domainname},
    {"loopback", 0, op_loopback},
    {"stdio", 0, op_stdio},
    {"rlimit", 3, op_rlimit},
    {"nice", 1, op_nice},
    {"caps", 1, op_caps},
    {"signals", 0, op_signals},
    {"seccomp", 0, op_seccomp},
    {"exec", VB_VARIABLE, op_exec},
};

/* Split the buffer into fields (NUL-terminated in place); their number, or -1. */
static long vb_split(const struct vb *b, char *plan, size_t len, struct vb_field *out) {
    long count = 0;
    size_t at = 0;
    while (at < len) {
        size_t size = 0, start = at;
        while (at < len && plan[at] >= '0' && plan[at] <= '9' && at - start < 10)
            size = size * 10 + (size_t)(plan[at++] - '0');
        if (at == start || at >= len || plan[at] != ':' || at + 1 + size >= len ||
            plan[at + 1 + size] != ',')
            return vb_say(b, "boot plan: malformed at byte %zu", start);
        if (out) {
            out[count].s = plan + at + 1;
            out[count].n = size;
            plan[at + 1 + size] = '\0';
        }
        at += size + 2;
        count++;
    }
    return count;
}

static const struct vb_op *vb_find(const char *name) {
    for (size_t k = 0; k < sizeof vb_ops / sizeof vb_ops[0]; k++)
        if (strcmp(vb_ops[k].name, name) == 0)
            return &vb_ops[k];
    return NULL;
}

/* How many argument fields op takes at `args` (of `left`), or -1. */
static long vb_arity(const struct vb *b, const struct vb_op *op, struct vb_field *args,
                     long left) {
    if (op->nargs != VB_VARIABLE)
        return op->nargs <= left ? op->nargs : vb_say(b, "boot plan: %s: too few arguments",
                                                      op->name);
    long long first, second = 0;
    if (left < 1 || vb_number(b, &args[0], 10, &first) < 0 || first < 0 || first >= left)
        return vb_say(b, "boot plan: %s: bad count", op->name);
    if (strcmp(op->name, "nosymlinks") == 0)
        return 1 + first;
    /* exec N ARGV... M ENV...: at least argv[0] */
    if (first < 1 || first + 1 >= left || vb_number(b, &args[first + 1], 10, &second) < 0 ||
        second < 0 ||
        first + 2 + second > left)
        return vb_say(b, "boot plan: %s: bad count", op->name);
    return first + 2 + second;
}

/* Check every op's name and arity; the number of ops, or -1. */
static long vb_check(const struct vb *b, struct vb_field *f, long count) {
    long ops = 0;
    for (long at = 0; at < count; ops++) {
        const struct vb_op *op = vb_find(f[at].s);
        if (!op)
            return vb_say(b, "boot plan: unknown step '%s'", f[at].s);
        long used = vb_arity(b, op, f + at + 1, count - at - 1);
        if (used < 0)
            return -1;
        at += 1 + used;
    }
    return ops;
}

static int vboot_run(char *plan, size_t len, int log_fd, int err_fd, int seccomp_fd,
                     int vinit_fd) {
    struct vb b = {.err_fd = err_fd, .root_fd = -1, .view_fd = -1, .root = "?"};
    b.err_fd = vb_lift(err_fd);
    b.log_fd = vb_lift(log_fd);
    b.seccomp_fd = vb_lift(seccomp_fd);
    b.vinit_fd = vb_lift(vinit_fd);
    long count = vb_split(&b, plan, len, NULL);
    if (count < 0)
        return 1;
    struct vb_field *fields = calloc((size_t)count + 1, sizeof *fields);
    if (!fields) {
        vb_fail(&b, "boot plan:", "fields", ENOMEM);
        return 1;
    }
    vb_split(&b, plan, len, fields);
    if (vb_check(&b, fields, count) < 0)
        return 1;
    for (long at = 0; at < count;) {
        const struct vb_op *op = vb_find(fields[at].s);
        long used = vb_arity(&b, op, fields + at + 1, count - at - 1);
        if (op->run(&b, fields + at + 1) < 0)
            return 1;
        at += 1 + used;
    }
    vb_say(&b, "boot plan: no exec step");
    return 1;
}

#endif /* VSTUI_BOOT_H */
