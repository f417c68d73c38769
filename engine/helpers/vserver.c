/*
 * vserver: the compiled front end of `vserver` (installed as .venv/bin/vserver).
 *
 * The Python interpreter alone takes 13-20 ms to start; two commands must be
 * faster than that, so they run here, through the same C executors the
 * Python tool uses:
 *
 *   vserver [--root DIR | --root=DIR] NAME exec [--] CMD [ARGS...]
 *       run as root with no terminal on fds 0-2: exec of vexec (its sealed
 *       copy, as vexec would make it) with exactly the arguments
 *       engine/runtime/enter.py gives it (the run directory and the command);
 *       vexec checks, joins, confines and refuses by itself;
 *   vserver [--root DIR | --root=DIR] NAME start
 *       a start replayed from the boot cache (cache.h, then start.h's
 *       vs_start, the Python start's own executor);
 *   vserver [--root DIR | --root=DIR] NAME stop
 *       a guest whose start wrote a stop plan, stopped through its running
 *       supervisor and torn down by that plan (stop.h).
 *
 * Everything else (other commands, other forms, a terminal, a start the
 * cache cannot replay) is handed to the Python implementation with the
 * user's words unchanged, which prints the proper one-line error or does
 * the work. VSTUI_PYTHON (the venv's interpreter) and VSTUI_HELPERS (this
 * directory) are compiled in by engine/runtime/build.py. VSTUI_FALLBACK=0
 * in the environment makes every fallback exit 125 instead (tests: which
 * path ran).
 */
#include "stop.h" /* first: vstui.h defines _GNU_SOURCE */

#include <limits.h>

#ifndef VSTUI_PYTHON
#error "build with -DVSTUI_PYTHON=... (python -m engine.runtime.build)"
#endif
#ifndef VSTUI_HELPERS
#error "build with -DVSTUI_HELPERS=... (python -m engine.runtime.build)"
#endif

/* The words of the command line, as the Python dispatcher would split them. */
struct request {
    const char *root, *name, *command;
    char **rest; /* the words after COMMAND, NULL-terminated */
    int nrest;
};

/* Paths.from_root would normalise it; only an already normal one is ours. */
static int root_is_normal(const char *root) {
    if (root[0] != '/')
        return 0;
    for (const char *p = root; strcmp(root, "/") && *p; p++) {
        const char *next = p + 1; /* a component starts after each slash */
        if (*p == '/' && (*next == '\0' || *next == '/' ||
                          (next[0] == '.' && (next[1] == '/' || next[1] == '\0')) ||
                          (next[0] == '.' && next[1] == '.' && (next[2] == '/' || !next[2]))))
            return 0;
    }
    return 1;
}

/* Anything else (and every other name rule) is the Python tool's to judge. */
static int name_is_plain(const char *name) {
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              (p > name && (*p == '-' || *p == '.' || *p == '_'))))
            return 0;
    return *name != '\0';
}

/* `vserver NAME exec CMD...` as enter.exec_in(..., replace=True) would run it;
 * returns only to fall back (a terminal: Python relays a guest pty). */
static void try_exec(const struct request *req) {
    static char *const env[] = {VS_EXEC_ENV};
    char run_dir[PATH_MAX], **cmd = req->rest;
    int ncmd = req->nrest;
    if (ncmd > 0 && strcmp(cmd[0], "--") == 0)
        cmd++, ncmd--;
    if (ncmd == 0 || geteuid() != 0 || isatty(0) || isatty(1) || isatty(2))
        return;
    if (snprintf(run_dir, sizeof run_dir, "%s/" VS_RUN_BASE "/%s",
                 strcmp(req->root, "/") ? req->root : "", req->name) >= (int)sizeof run_dir)
        return;
    char **argv = calloc((size_t)ncmd + 7, sizeof *argv);
    if (!argv)
        return;
    char *head[] = {"vexec", "-R", run_dir, "-n", (char *)req->name, "--"};
    memcpy(argv, head, sizeof head);
    memcpy(argv + 6, cmd, (size_t)ncmd * sizeof *argv);
    /* vexec's sealed copy made here and exec'd: vexec would otherwise make it and exec
     * itself again (one exec of a 0.7 MB static binary fewer, ~0.3 ms) */
    int bin = open(VSTUI_HELPERS "/vexec", O_RDONLY | O_CLOEXEC);
    int sealed = bin < 0 ? -1 : vs_sealed_copy(bin, "vexec");
    if (bin >= 0)
        close(bin);
    if (sealed >= 0) {
        fexecve(sealed, argv, env);
        close(sealed);
    }
    execve(VSTUI_HELPERS "/vexec", argv, env); /* it seals itself */
    free(argv);
}

/* [--root DIR | --root=DIR] NAME COMMAND [REST...]; 0 when argv has that form. */
static int parse_request(int argc, char **argv, struct request *req) {
    int i = 1;
    const char *env = getenv("VSTUI_ROOT");
    req->root = env && *env ? env : "/";
    if (i + 1 < argc && strcmp(argv[i], "--root") == 0) {
        req->root = argv[i + 1];
        i += 2;
    } else if (i < argc && strncmp(argv[i], "--root=", 7) == 0) {
        req->root = argv[i++] + 7;
    }
    if (i + 2 > argc)
        return -1;
    req->name = argv[i];
    req->command = argv[i + 1];
    req->rest = argv + i + 2;
    req->nrest = argc - i - 2;
    return root_is_normal(req->root) && name_is_plain(req->name) ? 0 : -1;
}

/* The Python implementation, with the user's words: sys.argv[1:] are argv[1:]. */
static void fallback(int argc, char **argv) {
    const char *allowed = getenv("VSTUI_FALLBACK");
    if (allowed && strcmp(allowed, "0") == 0)
        _exit(125);
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (args != NULL) {
        args[0] = VSTUI_PYTHON;
        args[1] = "-P"; /* never import from the caller's cwd (it may be a guest's tree) */
        args[2] = "-c";
        args[3] = "import sys; from vstui.cli.vserver import main; sys.exit(main())";
        for (int k = 1; k < argc; k++)
            args[3 + k] = argv[k];
        execv(VSTUI_PYTHON, args);
    }
    dprintf(2, "vserver: cannot run %s: %s\n", VSTUI_PYTHON, strerror(errno));
    _exit(127);
}

int main(int argc, char **argv) {
    struct request req;
    if (parse_request(argc, argv, &req) == 0) {
        if (strcmp(req.command, "exec") == 0)
            try_exec(&req);
        else if (strcmp(req.command, "start") == 0 && req.nrest == 0) {
            int started = cache_start(req.root, req.name);
            if (started >= 0)
                return started; /* replayed from the boot cache (or its init failed) */
        } else if (strcmp(req.command, "stop") == 0 && req.nrest == 0) {
            if (cache_stop(req.root, req.name) == 0)
                return 0; /* stopped through its supervisor, torn down by its stop plan */
        }
    }
    fallback(argc, argv);
}
