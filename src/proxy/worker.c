/* SPDX-License-Identifier: MIT */
/* Workers: one libuv loop per thread with its own SO_REUSEPORT listening sockets (the kernel
 * spreads connections), its own resolver, upstream pool and access-log buffer. The main thread
 * talks to workers only through an async handle and an atomic command word. */
#include "vd/config.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache-int.h"
#include "vd/err.h"
#include "vd/mcache.h"
#include "vd/proxy.h"

static void
on_accept(uv_poll_t *h, int status, int events)
{
    struct vd_listen *L = h->data;
    struct vd_worker *w = L->w;
    size_t li = L->li;
    if (status < 0 || w->draining) {
        return;
    }
    (void)events;
    /* Accept a bounded batch per wake-up so one busy listener cannot starve the loop. */
    for (int i = 0; i < 64; i++) {
        int fd = accept4(L->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                vd_log(VD_LOG_ERR, NULL, "accept: %s (raise the file descriptor limit)",
                       vd_strerror(-errno));
            }
            return;
        }
        if (w->nconns >= w->conf->limits.max_connections) {
            /* Over the limit: refuse at once rather than queueing work we cannot do. */
#define REFUSAL "503 Service Unavailable: too many connections\n"
            _Static_assert(sizeof(REFUSAL) - 1 == 46, "the Content-Length below");
            static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                      "text/plain; charset=utf-8\r\nContent-Length: 46\r\n"
                                      "Connection: close\r\n\r\n" REFUSAL;
#undef REFUSAL
            ssize_t n = write(fd, msg, sizeof(msg) - 1);
            (void)n;
            close(fd);
            vd_metric_add(&w->metrics.refused, 1);
            continue;
        }
        vd_metric_add(&w->metrics.accepted[li], 1);
        vd_front_h1_accept(w, fd, li);
    }
}

/* A TCP socket bound to @ss (SO_REUSEADDR, IPv6 only for IPv6; SO_REUSEPORT with @reuseport),
 * or -errno. */
static int
bound_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport) {
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    }
    if (ss->ss_family == AF_INET6) {
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (const struct sockaddr *)ss, len) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* Applies @l's settings to listening socket @fd (a new one, or one taken over): its congestion
 * control (which accepted connections inherit) and backlog. Returns 0 or -errno. */
int
vd_worker_listen_adopt(const struct vd_conf_listener *l, int fd)
{
    if ((l->tcp_congestion && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, l->tcp_congestion,
                                         (socklen_t)strlen(l->tcp_congestion)) < 0) ||
        listen(fd, (int)(l->backlog ? l->backlog : 511)) < 0) {
        return -errno;
    }
    return 0;
}

static int
listen_socket(const struct vd_conf_listener *l, const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = bound_socket(ss, len, true);
    if (fd < 0) {
        return fd;
    }
    /* Accepted connections inherit the listener's congestion control. */
    int e = vd_worker_listen_adopt(l, fd);
    if (e < 0) {
        close(fd);
        return e;
    }
    return fd;
}

/* SO_REUSEPORT lets every worker have its own socket on the address, but it would also let a
 * second viaduct (or any program of the same user that sets it) share the address without an
 * error, each getting part of the connections. A socket without the option binds first to
 * make sure the address is free; port 0 always is. */
int
vd_worker_address_free(const struct vd_conf_listener *l)
{
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&l->addr;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&l->addr;
    if ((l->addr.ss_family == AF_INET && s4->sin_port == 0) ||
        (l->addr.ss_family == AF_INET6 && s6->sin6_port == 0)) {
        return 0;
    }
    int fd = bound_socket(&l->addr, l->addrlen, false);
    if (fd < 0) {
        return fd;
    }
    close(fd);
    return 0;
}

int
vd_worker_listen_shared(const struct vd_conf_listener *l)
{
    return listen_socket(l, &l->addr, l->addrlen);
}

static void
alog_tick(uv_timer_t *t)
{
    struct vd_worker *w = t->data;
    if (w->alog.len) {
        vd_alog_flush(w);
    }
}

/* Every second: the thread's block cache (vd/mcache.h, which also holds arena blocks) gives
 * back what it kept unused for a whole period, and after a large give-back glibc returns free pages
 * to the system, so a burst of connections does not leave its peak memory behind. */
#define TRIM_PERIOD_MS   1000
#define TRIM_RELEASE_MIN (256 * 1024)

static void
trim_tick(uv_timer_t *t)
{
    (void)t;
    size_t freed = vd_mc_thread_trim();
    if (freed >= TRIM_RELEASE_MIN) {
        (void)malloc_trim(0);
    }
}

static void
close_listeners(struct vd_worker *w)
{
    for (size_t i = 0; i < w->nlistens; i++) {
        struct vd_listen *L = &w->listens[i];
        if (L->fd >= 0) {
            uv_poll_stop(&L->poll);
            uv_close((uv_handle_t *)&L->poll, NULL);
            close(L->fd);
            L->fd = -1;
        }
    }
    for (size_t i = 0; i < w->nlisteners; i++) {
        w->listen_fds[i] = -1;
    }
}

static void
walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static void
maybe_finish(struct vd_worker *w)
{
    if (!w->draining || w->nconns > 0) {
        return;
    }
    vd_pool_close_all(w);
    vd_alog_flush(w);
    uv_timer_stop(&w->drain_timer);
    uv_timer_stop(&w->alog_timer);
    uv_timer_stop(&w->trim_timer);
    vd_timerq_close(&w->tq);
    if (w->resolver) {
        vd_resolver_free(w->resolver);
        w->resolver = NULL;
    }
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_close((uv_handle_t *)&w->alog_timer, NULL);
    uv_close((uv_handle_t *)&w->trim_timer, NULL);
}

static void
drain_tick(uv_timer_t *t)
{
    struct vd_worker *w = t->data;
    vd_front_h1_close(w, true);
    vd_pool_close_all(w);
    if (uv_now(&w->loop) >= w->drain_deadline && w->nconns > 0) {
        vd_log(VD_LOG_NOTICE, NULL,
               "worker %u: shutdown grace period over, closing %zu "
               "connections",
               w->id, w->nconns);
        vd_front_h1_close(w, false);
    }
    maybe_finish(w);
}

static void
on_async(uv_async_t *a)
{
    struct vd_worker *w = a->data;
    int cmd = atomic_exchange(&w->cmd, VD_WCMD_NONE);
    bool upgrade = cmd == VD_WCMD_DRAIN_UPGRADE;
    if (upgrade) {
        cmd = VD_WCMD_DRAIN;
    }
    if (cmd == VD_WCMD_RELOAD || cmd == VD_WCMD_DRAIN) {
        struct vd_conf *c = vd_conf_current();
        if (c) {
            vd_conf_unref(w->conf);
            w->conf = c;
        }
    }
    if (cmd == VD_WCMD_RELOAD) {
        /* HTTP/2 sessions keep their configuration for their life: GOAWAY makes their clients
         * come back on new connections, which take the new one. */
        vd_front_h2_goaway_all(w);
        if (w->id == 0 && !w->draining) {
            /* The new snapshot's servers start up with fresh state; its checks replace the old
             * snapshot's, whose verdicts stay as they were for exchanges still using it. */
            vd_health_stop(w->health);
            w->health = vd_health_start(w, w->conf);
        }
    }
    if (cmd == VD_WCMD_DRAIN && !w->draining) {
        w->draining = true;
        /* Before the resolver goes (maybe_finish), and so that the loop can end. */
        vd_health_stop(w->health);
        w->health = NULL;
        /* Background revalidations (nothing waits for them; none starts while draining) and
         * transfers for collapsed requests whose leader left. */
        vd__detached_abort_all();
        close_listeners(w);
        const struct vd_conf_timeouts *to = &w->conf->timeouts;
        w->drain_deadline =
            uv_now(&w->loop) +
            (upgrade && to->upgrade_grace != UINT64_MAX ? to->upgrade_grace : to->shutdown_grace);
        vd_front_h1_close(w, true);
        uv_timer_start(&w->drain_timer, drain_tick, 100, 100);
        maybe_finish(w);
    }
}

static bool
reuseport(int fd)
{
    int v = 0;
    socklen_t vl = sizeof(v);
    return getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &v, &vl) == 0 && v;
}

/* Starts accepting on @fd for listener @li (the list has room: vd_worker_init sized it). */
static void
listen_add(struct vd_worker *w, uint32_t li, int fd)
{
    struct vd_listen *L = &w->listens[w->nlistens++];
    (void)fcntl(fd, F_SETFL, O_NONBLOCK);
    L->fd = fd;
    L->li = li;
    L->w = w;
    uv_poll_init_socket(&w->loop, &L->poll, fd);
    L->poll.data = L;
    uv_poll_start(&L->poll, UV_READABLE, on_accept);
}

int
vd_worker_init(struct vd_worker *w, unsigned id, struct vd_conf *conf,
               const struct vd_worker_shared *sh, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->shared = sh;
    w->conf = vd_conf_ref(conf);
    w->alog_fd = -1;
    vd_list_init(&w->conns);
    vd_list_init(&w->idle_upstreams);
    vd_dbuf_init(&w->alog, 1 << 20);
    int r = vd_metrics_register(&w->metrics, conf->nlisteners);
    if (r < 0) {
        snprintf(err, errlen, "metrics: %s", vd_strerror(r));
        return r;
    }
    r = uv_loop_init(&w->loop);
    if (r < 0) {
        snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(r));
        return r;
    }
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_timer_init(&w->loop, &w->alog_timer);
    w->alog_timer.data = w;
    uv_timer_init(&w->loop, &w->trim_timer);
    w->trim_timer.data = w;
    uv_timer_start(&w->trim_timer, trim_tick, TRIM_PERIOD_MS, TRIM_PERIOD_MS);
    uv_unref((uv_handle_t *)&w->trim_timer);
    vd_timerq_init(&w->tq, &w->loop);
    r = vd_resolver_new(&w->loop, &conf->resolver, &w->resolver, err, errlen);
    if (r < 0) {
        return r;
    }
    if (id == 0) {
        /* One loop probes for the whole process, so the workers do not multiply the checks. */
        w->health = vd_health_start(w, conf);
    }
    w->nlisteners = sh->nlisteners;
    w->listen_fds = calloc(sh->nlisteners ? sh->nlisteners : 1, sizeof(int));
    /* One socket per listener, plus inherited ones past the last worker (vd_worker_shared). */
    size_t cap = sh->nlisteners;
    for (size_t i = 0; sh->inherit && i < sh->nlisteners; i++) {
        for (size_t k = sh->nworkers; k < sh->ninherit[i]; k++) {
            cap += k % sh->nworkers == id;
        }
    }
    w->listens = calloc(cap ? cap : 1, sizeof(*w->listens));
    if (!w->listen_fds || !w->listens) {
        snprintf(err, errlen, "out of memory");
        return VD_ENOMEM;
    }
    for (size_t i = 0; i < sh->nlisteners; i++) {
        size_t ninh = sh->inherit ? sh->ninherit[i] : 0;
        int fd;
        if (id == 0) {
            fd = fcntl(sh->listen_fds[i], F_DUPFD_CLOEXEC, 0); /* not into CGI programs */
            if (fd < 0) {
                fd = -errno;
            }
        } else if (id < ninh) {
            fd = sh->inherit[i][id]; /* the old process's socket of this worker's rank */
        } else if (ninh && !reuseport(sh->listen_fds[i])) {
            /* A socket systemd made (socket activation) without SO_REUSEPORT: no other socket
             * may bind the address, so the workers share its accept queue. */
            fd = fcntl(sh->listen_fds[i], F_DUPFD_CLOEXEC, 0);
            if (fd < 0) {
                fd = -errno;
            }
        } else {
            /* A socket of its own on the same (now concrete) address: SO_REUSEPORT. */
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            if (getsockname(sh->listen_fds[i], (struct sockaddr *)&ss, &sl) < 0) {
                fd = -errno;
            } else {
                fd = listen_socket(&conf->listeners[i], &ss, sl);
            }
        }
        if (fd < 0) {
            snprintf(err, errlen, "listen on %s: %s", conf->listeners[i].addr_text,
                     vd_strerror(fd));
            return fd;
        }
        w->listen_fds[i] = fd;
        listen_add(w, (uint32_t)i, fd);
        for (size_t k = sh->nworkers; k < ninh; k++) {
            if (k % sh->nworkers == id) {
                listen_add(w, (uint32_t)i, sh->inherit[i][k]);
            }
        }
    }
    return 0;
}

void vd_worker_set_access_log(struct vd_worker *w, int fd, bool json);

void
vd_worker_set_access_log(struct vd_worker *w, int fd, bool json)
{
    w->alog_fd = fd;
    w->alog_json = json;
    if (fd >= 0) {
        uv_timer_start(&w->alog_timer, alog_tick, 1000, 1000);
        uv_unref((uv_handle_t *)&w->alog_timer);
    }
}

void
vd_worker_run(void *arg)
{
    struct vd_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Anything left (should be nothing) is closed so the loop can be closed cleanly. */
    uv_walk(&w->loop, walk_close, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    vd_timerq_free(&w->tq);
    vd_buf_thread_cleanup();
    vd_mc_thread_cleanup();
}

void
vd_worker_post(struct vd_worker *w, int cmd)
{
    atomic_store(&w->cmd, cmd);
    uv_async_send(&w->async);
}

void
vd_worker_destroy(struct vd_worker *w)
{
    if (uv_loop_close(&w->loop) != 0) {
        vd_log(VD_LOG_ALERT, NULL, "worker %u: handles left open at exit", w->id);
    }
    free(w->listen_fds);
    free(w->listens);
    free(w->hdr_scratch);
    vd_dbuf_free(&w->alog);
    vd_metrics_unregister(&w->metrics);
    vd_conf_unref(w->conf);
}
