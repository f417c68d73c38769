/*
 * boot.h: the executor of a guest's boot plan, from its new namespaces to
 * init's exec.
 *
 * Python (engine/runtime/plan.py) decides WHAT a start does and
 * engine/runtime/bootplan.py writes it down (BOOT_OPS: the format and every
 * op's arguments are documented there); this code only does it, in the
 * order given. It runs as the guest's PID 1 (process B of start.h: already
 * in the new mount, PID, UTS, IPC, cgroup, network and time namespaces).
 * Header only: every function is static; include it once.
 *
 *   static int vboot_run(char *plan, size_t len, int log_fd, int err_fd, int vinit_fd,
 *                        const int *views, int nviews);
 *
 * never returns on success (it execs the guest's init); on failure it writes
 * ONE line to err_fd and returns 1. The plan buffer is cut in place. log_fd
 * becomes init's stdout and stderr; vinit_fd holds the host's vinit binary,
 * bound read-only into the guest (one inode for every guest); -1 = none. The whole plan
 * is parsed and checked (names, arities) before the first op runs.
 *
 * Checks made here, because only execution time can make them: the tree and
 * every host bind source are opened with openat2(RESOLVE_NO_SYMLINKS) and
 * must still be the (device, inode) the plan was made for, and are bound
 * through that fd (open_tree + move_mount): a source swapped for a symlink
 * or another directory after planning, or a cached plan replayed later, is
 * refused with "source PATH: ..." (Python then names the fix); guest-side
 * targets are created and resolved INSIDE the tree (RESOLVE_IN_ROOT).
 *
 * Error lines keep the wording of the former Python child (tests grep it):
 * "bind target /x: No such file or directory", "exec /sbin/init: ...".
 */
#ifndef VSTUI_BOOT_H
#define VSTUI_BOOT_H

#include "vstui.h" /* first: it defines _GNU_SOURCE before any system header */

#include <limits.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>

#define VB_OPEN_TREE_CLONE 1
#define VB_MOVE_MOUNT_F_EMPTY_PATH 0x4
#define VB_MOVE_MOUNT_T_EMPTY_PATH 0x40
#define VB_AT_RECURSIVE 0x8000
#define VB_MOUNT_ATTR_RDONLY 0x1
#define VB_MOUNT_ATTR_NOSUID 0x2
#define VB_MOUNT_ATTR_NODEV 0x4
#define VB_MOUNT_ATTR_IDMAP 0x00100000

struct vb_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

#define vb_field vs_field

#define VB_VIEWS 16

struct vb {
    int log_fd, err_fd, vinit_fd;
    int root_fd;
    int views[VB_VIEWS], nviews, nextview; /* detached host files, `viewmount` attaches in order */
    int console_fd;                        /* `consoleview` opens it, `console` attaches it */
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
    return vs_ll(f->s, base, out) < 0 ? vb_say(b, "boot plan: '%s' is not a number", f->s) : 0;
}

static int vb_unsigned(const struct vb *b, const struct vb_field *f, int base,
                       unsigned long long *out) {
    return vs_ull(f->s, base, out) < 0 ? vb_say(b, "boot plan: '%s' is not a number", f->s) : 0;
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

static int vb_open(int dirfd, const char *path, int flags, uint64_t resolve) {
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

static int vb_openat2(int dirfd, const char *path, int flags) {
    return vb_open(dirfd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

/* A host directory or file opened without following any symlink, still the
 * (dev, ino) the plan was made for: an O_PATH fd (*dir says which of the two, if
 * dir is not NULL), or -1 with *why = VB_SYMLINK, VB_OTHER (another object) or 0
 * (errno says). */
enum { VB_SYMLINK = 1, VB_OTHER = 2 };

static int vb_open_identity(const char *path, unsigned long long dev, unsigned long long ino,
                            int *why, int *dir) {
    struct stat st;
    *why = 0;
    int fd = vb_open(AT_FDCWD, path, O_PATH, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
    if (fd < 0 && errno == ELOOP)
        *why = VB_SYMLINK;
    if (fd < 0)
        return -1;
    int ok = fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
    if (!ok || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))) {
        close(fd);
        *why = VB_OTHER;
        return -1;
    }
    if (dir)
        *dir = S_ISDIR(st.st_mode);
    return fd;
}

/* The message every executor gives for a source vb_open_identity refused. */
static const char *vb_identity_text(int why) {
    return why == VB_SYMLINK ? "a component is a symlink now"
           : why == VB_OTHER ? "not the directory or file the start was planned for"
                             : strerror(errno);
}

/* A host directory or file the plan names (vb_open_identity); an O_PATH fd, or -1
 * (said). `dir` (may be NULL) tells which of the two it is. */
static int vb_open_checked(struct vb *b, const char *path, struct vb_field *dev,
                           struct vb_field *ino, int *dir) {
    unsigned long long want_dev, want_ino;
    int why;
    if (vb_unsigned(b, dev, 10, &want_dev) < 0 || vb_unsigned(b, ino, 10, &want_ino) < 0)
        return -1;
    int fd = vb_open_identity(path, want_dev, want_ino, &why, dir);
    return fd < 0 ? vb_say(b, "source %s: %s", path, vb_identity_text(why)) : fd;
}

/* A detached copy of the mount tree at fd (recursive or not), read-only if asked. */
static int vb_clone_tree(int fd, int recursive, int readonly) {
    unsigned flags = VB_OPEN_TREE_CLONE | O_CLOEXEC | AT_EMPTY_PATH;
    int tree = (int)syscall(SYS_open_tree, fd, "", flags | (recursive ? VB_AT_RECURSIVE : 0));
    if (tree < 0 || !readonly)
        return tree;
    struct vb_mount_attr attr = {.attr_set = VB_MOUNT_ATTR_RDONLY};
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | (recursive ? VB_AT_RECURSIVE : 0),
                &attr, sizeof attr) < 0) {
        int err = errno;
        close(tree);
        errno = err;
        return -1;
    }
    return tree;
}

static int vb_attach(int tree, int target_fd) {
    return (int)syscall(SYS_move_mount, tree, "", target_fd, "",
                        VB_MOVE_MOUNT_F_EMPTY_PATH | VB_MOVE_MOUNT_T_EMPTY_PATH);
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

/* A regular file at PATH inside the tree to bind a host file onto (made empty,
 * with its parents, when missing); an O_PATH fd of it. Symlinks resolve inside
 * the tree; anything but a regular file is refused (ENOTDIR/EISDIR style). */
static int vb_file_in_root(int root_fd, const char *path) {
    char parent[PATH_MAX];
    struct stat st;
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 0;
    if (len >= sizeof parent) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(parent, path, len);
    parent[len] = '\0';
    int dir = vb_mkdirs_in_root(root_fd, len ? parent : ".");
    if (dir < 0)
        return -1;
    struct open_how how = {.flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, .mode = 0755,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    int made = (int)syscall(SYS_openat2, dir, slash ? slash + 1 : path, &how, sizeof how);
    close(dir);
    if (made >= 0)
        close(made);
    int fd = vb_openat2(root_fd, path, O_PATH);
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        errno = EISDIR;
        return -1;
    }
    return fd;
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

/* The tree, bound onto itself (a mount pivot_root can enter); root_fd is that mount. */
static int op_root(struct vb *b, struct vb_field *a) {
    b->root = a[0].s;
    int dir = 0, fd = vb_open_checked(b, a[0].s, &a[1], &a[2], &dir);
    if (fd >= 0 && !dir) {
        close(fd);
        return vb_say(b, "guest tree %s: not a directory", a[0].s);
    }
    if (fd < 0)
        return -1;
    int tree = vb_clone_tree(fd, 1, 0);
    int rc = tree < 0 ? -1 : vb_attach(tree, fd);
    int err = errno;
    close(fd);
    if (rc < 0) {
        if (tree >= 0)
            close(tree);
        return vb_fail(b, "bind guest tree", a[0].s, err);
    }
    b->root_fd = tree; /* after move_mount: the attached mount's root */
    return 0;
}

static int vb_need_root(struct vb *b, const char *op) {
    if (b->root_fd < 0)
        return vb_say(b, "boot plan: %s before root", op);
    return 0;
}

/* SRC DEV INO TARGET RO REC: the checked source, bound through its fd; read-only
 * before it is attached (never writable in the guest, not even for a moment). */
static int op_hostbind(struct vb *b, struct vb_field *a) {
    const char *src = a[0].s, *target = a[3].s;
    int ro = strcmp(a[4].s, "0") != 0, rec = strcmp(a[5].s, "0") != 0;
    if (vb_need_root(b, "hostbind") < 0)
        return -1;
    int dir = 0, source = vb_open_checked(b, src, &a[1], &a[2], &dir);
    if (source < 0)
        return -1;
    int fd = dir ? vb_mkdirs_in_root(b->root_fd, target) : vb_file_in_root(b->root_fd, target);
    if (fd < 0) {
        close(source);
        return vb_fail(b, "bind target", target, errno);
    }
    int tree = vb_clone_tree(source, rec, ro);
    int rc = tree < 0 ? -1 : vb_attach(tree, fd);
    int err = errno;
    close(fd);
    close(source);
    if (tree >= 0)
        close(tree);
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

/* SRC TARGET: a mount tree of this namespace (the host's, before pivot_root), with its
 * submounts, read-only onto TARGET inside the tree. */
static int op_hosttree(struct vb *b, struct vb_field *a) {
    if (vb_need_root(b, "hosttree") < 0)
        return -1;
    int src = vb_open(AT_FDCWD, a[0].s, O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS);
    int fd = src < 0 ? -1 : vb_mkdirs_in_root(b->root_fd, a[1].s);
    int tree = fd < 0 ? -1 : vb_clone_tree(src, 1, 1);
    int rc = tree < 0 ? -1 : vb_attach(tree, fd);
    int err = errno;
    for (int k = 0, fds[3] = {src, fd, tree}; k < 3; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    if (rc < 0)
        return vb_say(b, "bind %s onto %s: %s", a[0].s, a[1].s, strerror(err));
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

/* N PATH...: real directories, made if missing; before pivot_root, PATH is inside the
 * tree (each one component below its root). */
static int op_nosymlinks(struct vb *b, struct vb_field *a) {
    long long n = 0;
    vb_number(b, &a[0], 10, &n); /* checked by the parser */
    int dir = b->root_fd >= 0 ? b->root_fd : AT_FDCWD;
    for (long long k = 1; k <= n; k++) {
        struct stat st;
        const char *path = a[k].s, *rel = dir == AT_FDCWD ? path : path + strspn(path, "/");
        if (fstatat(dir, rel, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT &&
                (dir == AT_FDCWD ? vb_mkdir_p(path) : mkdirat(dir, rel, 0755)) == 0)
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

/* Replace TARGET by a fresh file with `data` (never write through a planted symlink). */
static int vb_write_file(const char *target, const char *data, size_t len, mode_t mode) {
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
    int rc = vs_write_all(fd, data, len);
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
    if (vb_write_file(a[0].s, a[2].s, a[2].n, (mode_t)(mode & 07777)) < 0)
        return vb_fail(b, "file", a[0].s, errno);
    return 0;
}

/* Before pivot_root: a detached read-only, nosuid bind of the host's vinit, found by
 * its path in this mount namespace and checked to be the file vinit_fd holds. Every
 * guest runs that one inode (one copy on disk and in the page cache); /proc/1/exe
 * reaches it only through a read-only mount (writing it fails with EROFS). */
static int vb_vinit_tree(int vinit_fd) {
    char link[64], path[PATH_MAX];
    struct stat want, got;
    vb_fd_path(link, sizeof link, vinit_fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return -1;
    path[n] = '\0';
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, path, VB_OPEN_TREE_CLONE | O_CLOEXEC);
    struct vb_mount_attr attr = {.attr_set = VB_MOUNT_ATTR_RDONLY | VB_MOUNT_ATTR_NOSUID |
                                             VB_MOUNT_ATTR_NODEV};
    if (tree >= 0 && (fstat(tree, &got) < 0 || fstat(vinit_fd, &want) < 0 ||
                      got.st_dev != want.st_dev || got.st_ino != want.st_ino)) {
        close(tree);
        errno = ESTALE; /* another file at that path now */
        return -1;
    }
    if (tree >= 0 &&
        syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
        int err = errno;
        close(tree);
        errno = err;
        return -1;
    }
    return tree;
}

/* vinit at TARGET (in the guest's fresh /run): the detached bind on an empty file. */
static int op_vinit(struct vb *b, struct vb_field *a) {
    if (b->vinit_fd < 0)
        return vb_say(b, "install init %s: no vinit binary was given", a[0].s);
    int rc = vb_write_file(a[0].s, "", 0, 0755);
    if (rc == 0)
        rc = (int)syscall(SYS_move_mount, b->vinit_fd, "", AT_FDCWD, a[0].s,
                          VB_MOVE_MOUNT_F_EMPTY_PATH);
    int err = errno;
    close(b->vinit_fd);
    b->vinit_fd = -1;
    if (rc < 0)
        return vb_fail(b, "install init", a[0].s, err);
    return 0;
}

/* TARGET: the next view, in plan order, attached read-only. */
static int op_viewmount(struct vb *b, struct vb_field *a) {
    if (b->nextview >= b->nviews)
        return vb_say(b, "boot plan: viewmount without view");
    int fd = b->views[b->nextview];
    b->views[b->nextview++] = -1;
    int rc = (int)syscall(SYS_move_mount, fd, "", AT_FDCWD, a[0].s, VB_MOVE_MOUNT_F_EMPTY_PATH);
    if (rc == 0)
        rc = vb_remount_ro(a[0].s);
    int err = errno;
    close(fd);
    if (rc < 0)
        return vb_fail(b, "bind view onto", a[0].s, err);
    return 0;
}

/* Before pivot_root: when init's stdout is a terminal (the supervisor's pty), a detached
 * bind of it, found by its path in this mount namespace and checked to be that terminal. */
static int op_consoleview(struct vb *b, struct vb_field *a) {
    char link[64], tty[PATH_MAX];
    struct stat want, got;
    (void)a;
    if (b->log_fd < 0 || !isatty(b->log_fd))
        return 0;
    vb_fd_path(link, sizeof link, b->log_fd);
    ssize_t n = readlink(link, tty, sizeof tty - 1);
    if (n < 0)
        return vb_fail(b, "console", link, errno);
    tty[n] = '\0';
    b->console_fd = (int)syscall(SYS_open_tree, AT_FDCWD, tty, VB_OPEN_TREE_CLONE | O_CLOEXEC);
    if (b->console_fd < 0)
        return vb_fail(b, "console", tty, errno);
    if (fstat(b->console_fd, &got) < 0 || fstat(b->log_fd, &want) < 0 ||
        got.st_rdev != want.st_rdev)
        return vb_say(b, "console %s: not the terminal the supervisor gave", tty);
    return 0;
}

/* The console: that terminal on TARGET, which systemd and console-getty open as
 * /dev/console; /dev/null when init's stdout is no terminal. */
static int op_console(struct vb *b, struct vb_field *a) {
    int rc = b->console_fd < 0
                 ? mount("/dev/null", a[0].s, NULL, MS_BIND, NULL)
                 : (int)syscall(SYS_move_mount, b->console_fd, "", AT_FDCWD, a[0].s,
                                VB_MOVE_MOUNT_F_EMPTY_PATH);
    if (rc < 0)
        return vb_fail(b, "bind console", a[0].s, errno);
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

static int op_stdio(struct vb *b, struct vb_field *a) {
    (void)a;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC); /* the guest's: ours, in the new /dev */
    if (null < 0)
        return vb_fail(b, "stdio", "/dev/null", errno);
    int out = b->log_fd >= 0 ? b->log_fd : null; /* never the starter's own 1 and 2 */
    if (dup2(out, 1) < 0 || dup2(out, 2) < 0 || dup2(null, 0) < 0)
        return vb_fail(b, "stdio", b->log_fd >= 0 ? "log" : "/dev/null", errno);
    fcntl(b->err_fd, F_SETFD, FD_CLOEXEC);
    int keep[4] = {0, 1, 2, b->err_fd};
    vs_close_except(keep, 4);
    b->log_fd = b->vinit_fd = b->root_fd = b->console_fd = -1;
    b->nviews = b->nextview = 0;
    return 0;
}

static int op_rlimit(struct vb *b, struct vb_field *a) {
    long long res, soft, hard;
    if (vb_number(b, &a[0], 10, &res) < 0 || vb_number(b, &a[1], 10, &soft) < 0 ||
        vb_number(b, &a[2], 10, &hard) < 0)
        return -1;
    if (vs_rlimit(res, soft, hard) < 0)
        return vb_say(b, "ULIMIT/S_NICE: %s", strerror(errno));
    return 0;
}

static int op_nice(struct vb *b, struct vb_field *a) {
    long long nice;
    if (vb_number(b, &a[0], 10, &nice) < 0)
        return -1;
    if (vs_nice(nice) < 0)
        return vb_say(b, "ULIMIT/S_NICE: %s", strerror(errno));
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

/* MASK PROGRAM: the last step before exec (an empty PROGRAM: no filter). */
static int op_confine(struct vb *b, struct vb_field *a) {
    unsigned long long keep;
    const char *step;
    if (vb_unsigned(b, &a[0], 16, &keep) < 0)
        return -1;
    if (vs_confine(keep, a[1].s, a[1].n, &step) == 0)
        return 0;
    int err = errno;
    if (strcmp(step, "seccomp") == 0)
        return vb_say(b, "prctl `PR_SET_SECCOMP`: %s%s", strerror(err),
                      err == EACCES ? " (needs CAP_SYS_ADMIN or no_new_privs)" : "");
    return vb_fail(b, "drop capabilities:", step, err);
}

static int op_exec(struct vb *b, struct vb_field *a) {
    long long nargs, nenv;
    vb_number(b, &a[0], 10, &nargs); /* both checked by the parser */
    vb_number(b, &a[nargs + 1], 10, &nenv);
    if (nargs < 1)
        return vb_say(b, "boot plan: exec without a command");
    char **argv = calloc((size_t)nargs + 1, sizeof *argv);
    char **envp = calloc((size_t)nenv + 1, sizeof *envp);
    if (!argv || !envp)
        return vb_fail(b, "exec", a[1].s, ENOMEM);
    for (long long k = 0; k < nargs; k++)
        argv[k] = a[1 + k].s;
    for (long long k = 0; k < nenv; k++)
        envp[k] = a[nargs + 2 + k].s;
    execve(argv[0], argv, envp);
    return vb_fail(b, "exec", argv[0], errno);
}

/* -- the plan -------------------------------------------------------------------------- */

/* the table is bootplan.BOOT_OPS (consts.h): a new op needs its op_NAME here */
#define VB_FN(name, n) op_##name,
#define VB_OP(name, n) {#name, n},
static const vb_fn vb_fns[] = {VS_BOOT_OPS(VB_FN)};
static const struct vs_op vb_ops[] = {VS_BOOT_OPS(VB_OP)};
#define VB_NOPS ((int)(sizeof vb_ops / sizeof vb_ops[0]))

static int vboot_run(char *plan, size_t len, int log_fd, int err_fd, int vinit_fd,
                     const int *views, int nviews) {
    struct vb b = {.root_fd = -1, .console_fd = -1, .root = "?"};
    for (; b.nviews < nviews && b.nviews < VB_VIEWS; b.nviews++)
        b.views[b.nviews] = views[b.nviews];
    b.err_fd = vb_lift(err_fd);
    b.log_fd = vb_lift(log_fd);
    b.vinit_fd = vinit_fd >= 0 ? vb_vinit_tree(vinit_fd) : -1;
    if (vinit_fd >= 0 && b.vinit_fd < 0)
        return vb_fail(&b, "install init: bind", "the host's vinit", errno), 1;
    long count;
    const char *bad;
    struct vb_field *f = vs_fields(plan, len, &count);
    if (!f)
        return vb_say(&b, "boot plan: malformed"), 1;
    if (vs_check(vb_ops, VB_NOPS, f, count, &bad) < 0)
        return vb_say(&b, "boot plan: bad step '%s'", bad), 1;
    for (long at = 0; at < count;) {
        int k = vs_op_index(vb_ops, VB_NOPS, f[at].s);
        long used = vs_arity(&vb_ops[k], f + at + 1, count - at - 1);
        if (vb_fns[k](&b, f + at + 1) < 0)
            return 1;
        at += 1 + used;
    }
    vb_say(&b, "boot plan: no exec step");
    return 1;
}

#endif /* VSTUI_BOOT_H */
