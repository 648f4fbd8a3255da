/* SPDX-License-Identifier: MIT */
/* Binary upgrade (see upgrade.h). The old process runs the binary at the path it was started
 * from with its own command line through uv_spawn, which places stdin, stdout and stderr at
 * 0-2, the listening sockets at 3..3+n-1 and the write end of a pipe after them; the environment
 * names them (VIADUCT_LISTEN_FDS=3,4,..., VIADUCT_UPGRADE_FD=k). The new process writes one byte
 * to the pipe once its workers run and its ready file is in place. */
#include "vd/config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "upgrade.h"
#include "vd/err.h"
#include "vd/log.h"
#include "vd/sock.h"

#define ENV_FDS   "VIADUCT_LISTEN_FDS"
#define ENV_READY "VIADUCT_UPGRADE_FD"

extern char **environ;

static struct {
    uv_loop_t *loop;
    char exe[PATH_MAX];
    char **argv;
    int ready_fd; /* the new process's side: where to say it serves; -1 */
    /* The old process's side: one upgrade at a time. */
    bool active;
    bool ready;
    uv_process_t proc;
    uv_pipe_t pipe;
    uv_timer_t timer;
    int nopen;         /* handles of the upgrade not closed yet */
    uint64_t ready_ms; /* how long the new process may take to serve */
    void (*on_ready)(void *);
    void *arg;
} U = {.ready_fd = -1};

/* ---- the new process ----------------------------------------------------------------------- */

static bool
listening_tcp(int fd, struct vd_inherited *out)
{
    int v = 0;
    socklen_t vl = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) != 0 || !v) {
        return false;
    }
    vl = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vl) != 0 || v != SOCK_STREAM) {
        return false;
    }
    out->addrlen = sizeof(out->addr);
    if (getsockname(fd, (struct sockaddr *)&out->addr, &out->addrlen) != 0 ||
        (out->addr.ss_family != AF_INET && out->addr.ss_family != AF_INET6)) {
        return false;
    }
    out->fd = fd;
    out->taken = false;
    return true;
}

/* The descriptor named by @s (a decimal number), or -1. */
static int
parse_fd(const char *s, const char **end)
{
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (e == s || errno || v < 3 || v > INT_MAX) {
        return -1;
    }
    *end = e;
    return (int)v;
}

/* Appends @fd to the list @v (@n of @cap) when it is a listening TCP socket (logged otherwise).
 * Returns false when out of memory. */
static bool
inherit_fd(struct vd_inherited **v, size_t *n, size_t *cap, int fd)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 8;
        struct vd_inherited *nv = realloc(*v, nc * sizeof(**v));
        if (!nv) {
            return false;
        }
        *v = nv;
        *cap = nc;
    }
    if (!listening_tcp(fd, &(*v)[*n])) {
        vd_log(VD_LOG_WARN, NULL, "upgrade: descriptor %d is not a listening TCP socket", fd);
        return true;
    }
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* not into CGI programs */
    (*n)++;
    return true;
}

size_t
vd_upgrade_inherited(struct vd_inherited **out, bool *activated)
{
    *out = NULL;
    *activated = false;
    const char *r = getenv(ENV_READY);
    if (r) {
        const char *e;
        int fd = parse_fd(r, &e);
        if (fd >= 0 && *e == '\0' && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0) {
            U.ready_fd = fd;
        }
    }
    size_t n = 0, cap = 0;
    struct vd_inherited *v = NULL;
    const char *list = getenv(ENV_FDS);
    for (const char *p = list; p && *p;) {
        const char *e;
        int fd = parse_fd(p, &e);
        if (fd < 0 || (*e != ',' && *e != '\0')) {
            vd_log(VD_LOG_ERR, NULL, "upgrade: %s=%s is not a list of descriptors", ENV_FDS, list);
            break;
        }
        p = *e ? e + 1 : e;
        if (!inherit_fd(&v, &n, &cap, fd)) {
            break;
        }
    }
    /* systemd's socket activation (sd_listen_fds(3)): LISTEN_FDS descriptors from 3, meant for
     * this process when LISTEN_PID says so. */
    const char *lp = getenv("LISTEN_PID"), *lf = getenv("LISTEN_FDS");
    if (!list && lp && lf && strtol(lp, NULL, 10) == (long)getpid()) {
        long nfd = strtol(lf, NULL, 10);
        for (long i = 0; i < nfd && i < INT_MAX - 3; i++) {
            if (!inherit_fd(&v, &n, &cap, (int)(3 + i))) {
                break;
            }
        }
        *activated = nfd > 0;
    }
    /* Not into the processes this one starts (CGI, a later upgrade builds its own). */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    unsetenv(ENV_FDS);
    unsetenv(ENV_READY);
    if (n == 0) {
        free(v);
        return 0;
    }
    *out = v;
    return n;
}

void
vd_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0]) {
        return;
    }
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t pl = strlen(path);
    if (pl >= sizeof(un.sun_path) || (path[0] != '/' && path[0] != '@')) {
        return;
    }
    memcpy(un.sun_path, path, pl);
    if (path[0] == '@') {
        un.sun_path[0] = '\0'; /* abstract namespace */
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (len <= 0 || (size_t)len >= sizeof(msg)) {
        return;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    if (sendto(fd, msg, (size_t)len, MSG_NOSIGNAL, (struct sockaddr *)&un,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pl)) < 0) {
        vd_log(VD_LOG_WARN, NULL, "NOTIFY_SOCKET %s: %s", path, vd_strerror(-errno));
    }
    close(fd);
}

void
vd_upgrade_ready(void)
{
    if (U.ready_fd < 0) {
        return;
    }
    ssize_t k;
    do {
        k = write(U.ready_fd, "1", 1);
    } while (k < 0 && errno == EINTR);
    close(U.ready_fd);
    U.ready_fd = -1;
}

/* ---- the old process ----------------------------------------------------------------------- */

void
vd_upgrade_init(uv_loop_t *loop, char **argv)
{
    U.loop = loop;
    U.argv = argv;
    ssize_t n = readlink("/proc/self/exe", U.exe, sizeof(U.exe) - 1);
    U.exe[n > 0 ? n : 0] = '\0';
}

static void
on_closed(uv_handle_t *h)
{
    (void)h;
    if (--U.nopen == 0) {
        U.active = false;
    }
}

/* Ends the upgrade's bookkeeping: the pipe and the timer are closed, and the process handle
 * once the child has exited (or at once, @detach, leaving it running). */
static void
finish(bool detach)
{
    if (!uv_is_closing((uv_handle_t *)&U.pipe)) {
        uv_close((uv_handle_t *)&U.pipe, on_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&U.timer)) {
        uv_close((uv_handle_t *)&U.timer, on_closed);
    }
    if (detach && !uv_is_closing((uv_handle_t *)&U.proc)) {
        uv_close((uv_handle_t *)&U.proc, on_closed);
    }
}

static void
on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    if (!U.ready) {
        vd_log(VD_LOG_ERR, NULL,
               "upgrade failed: the new process %d exited (status %lld, signal %d) before "
               "serving; this process keeps serving",
               p->pid, (long long)status, sig);
    }
    finish(true);
}

static void
on_pipe_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    static char b[16];
    (void)h;
    (void)size;
    *buf = uv_buf_init(b, sizeof(b));
}

static void
on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    if (n == 0) {
        return;
    }
    uv_read_stop(s);
    if (n > 0 && !U.ready) {
        U.ready = true;
        vd_log(VD_LOG_NOTICE, NULL, "upgrade: the new process %d serves; this one drains",
               U.proc.pid);
        /* Under systemd the new process becomes the service's main process. */
        vd_notify("MAINPID=%d", U.proc.pid);
        /* The child runs on its own from here; this process does not wait for it. */
        finish(true);
        U.on_ready(U.arg);
        return;
    }
    /* EOF without the byte: the child failed (its exit is logged by on_exit_cb). */
    if (!uv_is_closing((uv_handle_t *)&U.pipe)) {
        uv_close((uv_handle_t *)&U.pipe, on_closed);
    }
}

static void
on_timeout(uv_timer_t *t)
{
    (void)t;
    if (U.ready) {
        return;
    }
    vd_log(VD_LOG_ERR, NULL,
           "upgrade failed: the new process %d did not report serving within %" PRIu64
           " ms (timeouts.upgrade_start); stopping it, this process keeps serving",
           U.proc.pid, U.ready_ms);
    (void)uv_process_kill(&U.proc, SIGTERM);
    uv_close((uv_handle_t *)&U.timer, on_closed);
}

bool
vd_upgrade_start(const int *fds, size_t n, uint64_t ready_ms, void (*on_ready)(void *), void *arg)
{
    if (U.active) {
        vd_log(VD_LOG_WARN, NULL, "upgrade: one is already under way");
        return false;
    }
    if (!U.exe[0]) {
        vd_log(VD_LOG_ERR, NULL, "upgrade failed: the path of this binary is unknown");
        return false;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        vd_log(VD_LOG_ERR, NULL, "upgrade failed: pipe: %s", vd_strerror(-errno));
        return false;
    }
    size_t nenv = 0;
    while (environ[nenv]) {
        nenv++;
    }
    size_t nstdio = 3 + n + 1;
    char **env = calloc(nenv + 3, sizeof(*env));
    uv_stdio_container_t *stdio = calloc(nstdio, sizeof(*stdio));
    size_t fl = n * 12 + sizeof(ENV_FDS) + 2;
    char *fdlist = malloc(fl);
    char readyvar[sizeof(ENV_READY) + 16];
    bool ok = env && stdio && fdlist;
    if (ok) {
        size_t k = 0;
        for (size_t i = 0; i < nenv; i++) {
            if (strncmp(environ[i], ENV_FDS "=", sizeof(ENV_FDS)) != 0 &&
                strncmp(environ[i], ENV_READY "=", sizeof(ENV_READY)) != 0) {
                env[k++] = environ[i];
            }
        }
        size_t o = (size_t)snprintf(fdlist, fl, "%s=", ENV_FDS);
        for (size_t i = 0; i < n; i++) {
            o += (size_t)snprintf(fdlist + o, fl - o, "%s%zu", i ? "," : "", 3 + i);
        }
        snprintf(readyvar, sizeof(readyvar), "%s=%zu", ENV_READY, 3 + n);
        env[k++] = fdlist;
        env[k++] = readyvar;
        env[k] = NULL;
        for (size_t i = 0; i < nstdio; i++) {
            stdio[i].flags = UV_INHERIT_FD;
            stdio[i].data.fd = i < 3 ? (int)i : i < 3 + n ? fds[i - 3] : p[1];
        }
        uv_process_options_t opt = {
            .exit_cb = on_exit_cb,
            .file = U.exe,
            .args = U.argv,
            .env = env,
            .flags = UV_PROCESS_DETACHED, /* its own session: outlives this process */
            .stdio_count = (int)nstdio,
            .stdio = stdio,
        };
        int r = uv_spawn(U.loop, &U.proc, &opt);
        if (r < 0) {
            vd_log(VD_LOG_ERR, NULL, "upgrade failed: cannot start %s: %s", U.exe, uv_strerror(r));
            ok = false;
        }
    }
    free(env);
    free(stdio);
    free(fdlist);
    close(p[1]);
    if (!ok) {
        close(p[0]);
        return false;
    }
    U.active = true;
    U.ready = false;
    U.on_ready = on_ready;
    U.arg = arg;
    U.nopen = 3;
    uv_pipe_init(U.loop, &U.pipe, 0);
    uv_timer_init(U.loop, &U.timer);
    if (uv_pipe_open(&U.pipe, p[0]) < 0 ||
        uv_read_start((uv_stream_t *)&U.pipe, on_pipe_alloc, on_pipe_read) < 0) {
        close(p[0]);
    }
    U.ready_ms = ready_ms;
    uv_timer_start(&U.timer, on_timeout, ready_ms, 0);
    vd_log(VD_LOG_NOTICE, NULL, "upgrade: started %s as process %d with %zu listening socket%s",
           U.exe, U.proc.pid, n, n == 1 ? "" : "s");
    return true;
}

void
vd_upgrade_close(void)
{
    if (U.active) {
        finish(true);
    }
}
