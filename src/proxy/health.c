/* SPDX-License-Identifier: MIT */
/* Active health checks of upstream servers (routes[].health_check): every interval, a GET of the
 * configured path to each server of the route (over TLS for https servers, verified as real
 * traffic is), judged by its status line alone (RFC 9112 §4). `fall` failures in a row mark a
 * server down for vd_lb_pick, `rise` passes in a row mark it up again. One loop (worker 0's)
 * runs the checks of the whole process; the verdicts go into the snapshot's shared state. */
#include "vd/config.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vd/err.h"
#include "vd/proxy.h"

#define HC_MAGIC    0x48434b31u /* "HCK1" */
#define PROBE_MAGIC 0x50524231u /* "PRB1" */
#define HCONN_MAGIC 0x48434e31u /* "HCN1" */
#define HC_READ_MAX 4096        /* response bytes read to find the status line */

struct probe;

/* The connection of one check in progress. Freed in its socket's close callback. */
struct hconn {
    uint32_t magic;
    struct vd_sock sock;
    struct probe *p; /* NULL once the check is over and the socket closes */
    struct vd_health *hc;
    bool connected;
    bool handshaken;
    size_t out_off; /* request bytes written */
    size_t in_len;  /* response bytes read */
    uint8_t in[HC_READ_MAX];
};

/* The checks of one server of one route. */
struct probe {
    uint32_t magic;
    struct vd_health *hc;
    const struct vd_conf_route *route; /* borrowed from hc->conf */
    const struct vd_conf_server *srv;  /* borrowed from hc->conf */
    struct vd_lb_server *st;           /* the shared verdict and counters */
    size_t ri;                         /* route index, for the log */
    uv_timer_t timer;                  /* the next check, or the deadline of the running one */
    bool running;
    uint64_t started;  /* ms (uv_now) when the running or the last check started */
    const char *phase; /* what the running check waits for (a timeout's reason) */
    struct vd_resolve_query *q;
    struct vd_addrs addrs;
    size_t ai;    /* next address to try */
    int last_err; /* of the last connect attempt */
    struct hconn *c;
    char *req; /* the request, built once; owned */
    size_t req_len;
    const char *sni;     /* borrowed from hc->conf: the name https checks ask for */
    uint32_t oks, fails; /* checks passed, failed, in a row */
    bool down;           /* the verdict (this loop is st->hc_down's only writer) */
};

struct vd_health {
    uint32_t magic;
    struct vd_conf *conf; /* a reference, for the routes the probes borrow */
    uv_loop_t *loop;
    struct vd_resolver *resolver; /* the worker's; outlives this (stopped before it is freed) */
    struct vd_tls_client *tls;    /* process-wide */
    struct probe *probes;
    size_t nprobes;
    size_t closing; /* handle closes whose callback has not run yet */
    bool stopping;
};

int
vd_health_status(const uint8_t *p, size_t len)
{
    static const char ver[] = "HTTP/1.";
    /* RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]. Each byte
     * is checked as it arrives, so a peer that speaks something else fails at its first byte. */
    for (size_t i = 0; i < len && i < 12; i++) {
        uint8_t ch = p[i];
        bool ok = i < 7 ? ch == (uint8_t)ver[i] : i == 8 ? ch == ' ' : ch >= '0' && ch <= '9';
        if (!ok) {
            return VD_EPROTO;
        }
    }
    if (len < 13) {
        return VD_EAGAIN;
    }
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    /* RFC 9110 §15: status codes are 100 to 599. The SP before an empty reason is often left
     * out; accept the line end there too. */
    if (status < 100 || status > 599 || (p[12] != ' ' && p[12] != '\r' && p[12] != '\n')) {
        return VD_EPROTO;
    }
    for (size_t i = 12; i < len; i++) {
        uint8_t ch = p[i];
        if (ch == '\n') {
            return status;
        }
        /* reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ); CR only right before the LF
         * (which may not have arrived yet). */
        bool bad =
            ch == '\r' ? i + 1 < len && p[i + 1] != '\n' : (ch < 0x20 && ch != '\t') || ch == 0x7f;
        if (bad) {
            return VD_EPROTO;
        }
    }
    return VD_EAGAIN;
}

static void check_start(struct probe *p);
static void check_done(struct probe *p, bool ok, const char *why);
static void connect_next(struct probe *p);

/* Frees @hc once it is stopped and its last close callback has run. */
static void
maybe_free(struct vd_health *hc)
{
    if (!hc->stopping || hc->closing > 0) {
        return;
    }
    for (size_t i = 0; i < hc->nprobes; i++) {
        free(hc->probes[i].req);
        hc->probes[i].magic = 0;
    }
    free(hc->probes);
    vd_conf_unref(hc->conf);
    hc->magic = 0;
    free(hc);
}

static void
hconn_closed(struct vd_sock *s)
{
    struct hconn *c = s->data;
    VD_BUG_ON(c->magic != HCONN_MAGIC);
    struct vd_health *hc = c->hc;
    c->magic = 0;
    free(c);
    hc->closing--;
    maybe_free(hc);
}

/* Ends @p's connection, if any: the socket closes and frees itself later. */
static void
conn_drop(struct probe *p)
{
    struct hconn *c = p->c;
    if (!c) {
        return;
    }
    p->c = NULL;
    c->p = NULL;
    p->hc->closing++;
    vd_sock_close(&c->sock);
}

static void
on_timer(uv_timer_t *t)
{
    struct probe *p = t->data;
    VD_BUG_ON(p->magic != PROBE_MAGIC);
    if (p->hc->stopping) {
        return;
    }
    if (!p->running) {
        check_start(p);
        return;
    }
    char why[96];
    snprintf(why, sizeof(why), "timed out after %" PRIu64 " ms %s", p->route->health.timeout,
             p->phase);
    check_done(p, false, why);
}

/* The running check of @p ended: passed (@ok) or failed for @why. Counts it, moves the verdict
 * when `rise` or `fall` checks in a row agree (logged once at warn), and schedules the next one
 * an interval after this one started. */
static void
check_done(struct probe *p, bool ok, const char *why)
{
    const struct vd_conf_health *h = &p->route->health;
    conn_drop(p);
    if (p->q) {
        vd_resolve_cancel(p->q);
        p->q = NULL;
    }
    p->running = false;
    VD_TRACE(NULL, VD_SUB_PROXY, "health check of %s (route %zu): %s", p->srv->url, p->ri,
             ok ? "passed" : why);
    if (ok) {
        atomic_fetch_add_explicit(&p->st->checks_ok, 1, memory_order_relaxed);
        p->fails = 0;
        p->oks = p->oks < UINT32_MAX ? p->oks + 1 : p->oks;
        if (p->down && p->oks >= h->rise) {
            p->down = false;
            atomic_store_explicit(&p->st->hc_down, 0, memory_order_relaxed);
            vd_log(VD_LOG_WARN, NULL,
                   "server %s of route %zu up again (health check passed %u times in a row)",
                   p->srv->url, p->ri, p->oks);
        }
    } else {
        atomic_fetch_add_explicit(&p->st->checks_fail, 1, memory_order_relaxed);
        p->oks = 0;
        p->fails = p->fails < UINT32_MAX ? p->fails + 1 : p->fails;
        if (!p->down && p->fails >= h->fall) {
            p->down = true;
            atomic_store_explicit(&p->st->hc_down, 1, memory_order_relaxed);
            vd_log(VD_LOG_WARN, NULL,
                   "server %s of route %zu down: %s (health check failed %u times in a row)",
                   p->srv->url, p->ri, why, p->fails);
        }
    }
    uint64_t now = uv_now(p->hc->loop), next = p->started + h->interval;
    uv_timer_start(&p->timer, on_timer, next > now ? next - now : 0, 0);
}

/* Judges what the server sent (@eof: nothing more will come). Returns true when the check is
 * decided (and over). */
static bool
judge(struct probe *p, struct hconn *c, bool eof)
{
    const struct vd_conf_health *h = &p->route->health;
    char why[96];
    int st = vd_health_status(c->in, c->in_len);
    if (st > 0) {
        if (st >= h->expect_lo && st <= h->expect_hi) {
            check_done(p, true, NULL);
            return true;
        }
        snprintf(why, sizeof(why), "status %d", st);
        check_done(p, false, why);
        return true;
    }
    if (st == VD_EPROTO) {
        check_done(p, false, "not an HTTP response");
        return true;
    }
    if (eof) {
        check_done(p, false,
                   c->in_len ? "connection closed inside the status line"
                             : "connection closed without a response");
        return true;
    }
    if (c->in_len == sizeof(c->in)) {
        snprintf(why, sizeof(why), "no status line in the first %zu bytes", sizeof(c->in));
        check_done(p, false, why);
        return true;
    }
    return false;
}

static void
hconn_event(struct vd_sock *s, int ev)
{
    struct hconn *c = s->data;
    VD_BUG_ON(c->magic != HCONN_MAGIC);
    struct probe *p = c->p;
    char why[160];
    ssize_t n;
    (void)ev;
    if (!p) {
        return;
    }
    VD_BUG_ON(p->magic != PROBE_MAGIC);
    if (!c->connected) {
        int r = vd_sock_connect_result(s);
        if (r < 0) {
            conn_drop(p);
            p->last_err = r;
            connect_next(p);
            return;
        }
        c->connected = true;
        if (p->srv->tls) {
            /* The same checks as real traffic: SNI and the certificate for the server's name. */
            if (vd_tls_attach_client(s, p->hc->tls, p->sni, p->srv->host) < 0) {
                check_done(p, false, "out of memory for TLS");
                return;
            }
            p->phase = "in the TLS handshake";
        } else {
            p->phase = "sending the request";
        }
    }
    if (p->srv->tls && !c->handshaken) {
        int r = vd_tls_handshake(s);
        if (r == VD_EAGAIN) {
            vd_sock_arm(s, s->want);
            return;
        }
        if (r < 0) {
            snprintf(why, sizeof(why), "%s: %s",
                     r == VD_ETLSVERIFY ? "certificate verification failed"
                                        : "TLS handshake failed",
                     vd_tls_error_detail(s));
            check_done(p, false, why);
            return;
        }
        c->handshaken = true;
        s->want = 0;
        p->phase = "sending the request";
    }
    if (c->out_off < p->req_len) {
        struct iovec iov = {p->req + c->out_off, p->req_len - c->out_off};
        n = vd_sock_writev(s, &iov, 1);
        if (n == VD_EAGAIN) {
            vd_sock_arm(s, s->want);
            return;
        }
        if (n < 0) {
            snprintf(why, sizeof(why), "sending the request: %s", vd_strerror((int)n));
            check_done(p, false, why);
            return;
        }
        c->out_off += (size_t)n;
        if (c->out_off < p->req_len) {
            vd_sock_arm(s, VD_WANT_WRITE);
            return;
        }
        p->phase = "waiting for the status line";
    }
    /* Read until the status line is complete, the buffer is full, or the socket is empty: the
     * TLS transport may hold decrypted bytes that poll cannot see. */
    for (;;) {
        n = vd_sock_read(s, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n == VD_EAGAIN) {
            vd_sock_arm(s, s->want ? s->want : VD_WANT_READ);
            return;
        }
        if (n < 0 && n != VD_ECLOSED) {
            snprintf(why, sizeof(why), "reading the response: %s", vd_strerror((int)n));
            check_done(p, false, why);
            return;
        }
        if (n > 0) {
            c->in_len += (size_t)n;
        }
        if (judge(p, c, n <= 0)) {
            return;
        }
    }
}

/* Connects to the next address of the server, or fails the check when none is left. */
static void
connect_next(struct probe *p)
{
    struct vd_health *hc = p->hc;
    while (p->ai < p->addrs.n) {
        struct sockaddr_storage sa = p->addrs.a[p->ai++];
        socklen_t sl;
        if (sa.ss_family == AF_INET) {
            ((struct sockaddr_in *)&sa)->sin_port = htons(p->srv->port);
            sl = sizeof(struct sockaddr_in);
        } else {
            ((struct sockaddr_in6 *)&sa)->sin6_port = htons(p->srv->port);
            sl = sizeof(struct sockaddr_in6);
        }
        struct hconn *c = calloc(1, sizeof(*c));
        if (!c) {
            check_done(p, false, "out of memory for a connection");
            return;
        }
        int r = vd_sock_connect(hc->loop, &c->sock, (struct sockaddr *)&sa, sl,
                                hc->conf->upstream.tcp_congestion);
        if (r < 0) {
            free(c);
            p->last_err = r;
            continue;
        }
        c->magic = HCONN_MAGIC;
        c->p = p;
        c->hc = hc;
        c->sock.data = c;
        c->sock.on_event = hconn_event;
        c->sock.on_close = hconn_closed;
        p->c = c;
        p->phase = "connecting";
        vd_sock_arm(&c->sock, VD_WANT_WRITE);
        return;
    }
    char why[128];
    snprintf(why, sizeof(why), "connect: %s",
             p->last_err ? vd_strerror(p->last_err) : "no address to try");
    check_done(p, false, why);
}

static void
resolved(void *arg, int status, const struct vd_addrs *addrs)
{
    struct probe *p = arg;
    VD_BUG_ON(p->magic != PROBE_MAGIC);
    p->q = NULL;
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof(why), "DNS lookup of %s failed: %s", p->srv->host,
                 vd_strerror(status));
        check_done(p, false, why);
        return;
    }
    if (addrs != &p->addrs) {
        p->addrs = *addrs;
    }
    p->ai = 0;
    p->last_err = 0;
    connect_next(p);
}

static void
check_start(struct probe *p)
{
    p->running = true;
    p->started = uv_now(p->hc->loop);
    p->phase = "resolving the name";
    uv_timer_start(&p->timer, on_timer, p->route->health.timeout, 0);
    int r = vd_resolve(p->hc->resolver, p->srv->host, &p->addrs, resolved, p, &p->q);
    if (r != VD_EAGAIN) {
        resolved(p, r, &p->addrs);
    }
}

static void
timer_closed(uv_handle_t *h)
{
    struct probe *p = h->data;
    VD_BUG_ON(p->magic != PROBE_MAGIC);
    struct vd_health *hc = p->hc;
    hc->closing--;
    maybe_free(hc);
}

/* The request of @p's checks: GET of the path with Host (the check's own, else the route's
 * host_header, which real traffic sends too, else the server's authority without a default
 * port, RFC 9110 §7.2). Returns 0 or VD_ENOMEM. */
static int
build_request(struct probe *p)
{
    const struct vd_conf_health *h = &p->route->health;
    const struct vd_conf_server *s = p->srv;
    char host[300];
    if (h->host || p->route->host_header) {
        snprintf(host, sizeof(host), "%s", h->host ? h->host : p->route->host_header);
    } else {
        bool v6 = strchr(s->host, ':') != NULL;
        int o = snprintf(host, sizeof(host), v6 ? "[%s]" : "%s", s->host);
        if (o > 0 && (size_t)o < sizeof(host) && s->port != (s->tls ? 443 : 80)) {
            snprintf(host + o, sizeof(host) - (size_t)o, ":%u", s->port);
        }
    }
    static const char fmt[] = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: viaduct-health\r\n"
                              "Connection: close\r\n\r\n";
    size_t cap = sizeof(fmt) + strlen(h->path) + strlen(host);
    p->req = malloc(cap);
    if (!p->req) {
        return VD_ENOMEM;
    }
    int n = snprintf(p->req, cap, fmt, h->path, host);
    VD_BUG_ON(n < 0 || (size_t)n >= cap);
    p->req_len = (size_t)n;
    return 0;
}

struct vd_health *
vd_health_start(struct vd_worker *w, struct vd_conf *conf)
{
    size_t n = 0;
    for (size_t i = 0; i < conf->nroutes; i++) {
        if (conf->routes[i].health.path) {
            n += conf->routes[i].nservers;
        }
    }
    if (n == 0) {
        return NULL;
    }
    struct vd_health *hc = calloc(1, sizeof(*hc));
    struct probe *probes = calloc(n, sizeof(*probes));
    if (!hc || !probes) {
        goto nomem;
    }
    hc->probes = probes;
    size_t k = 0;
    for (size_t i = 0; i < conf->nroutes; i++) {
        const struct vd_conf_route *r = &conf->routes[i];
        if (!r->health.path) {
            continue;
        }
        VD_BUG_ON(!r->lb);
        for (size_t j = 0; j < r->nservers; j++, k++) {
            struct probe *p = &probes[k];
            p->hc = hc;
            p->route = r;
            p->srv = &r->servers[j];
            p->st = &r->lb->srv[j];
            p->ri = i;
            /* As real traffic (forward.c): the route's sni, else the host; the TLS layer sends
             * none for an IP literal (RFC 6066 §3). */
            p->sni = r->sni ? r->sni : p->srv->host;
            if (build_request(p) < 0) {
                goto nomem;
            }
        }
    }
    hc->magic = HC_MAGIC;
    hc->conf = vd_conf_ref(conf);
    hc->loop = &w->loop;
    hc->resolver = w->resolver;
    hc->tls = w->shared->tls_client;
    hc->nprobes = n;
    for (size_t i = 0; i < n; i++) {
        struct probe *p = &probes[i];
        p->magic = PROBE_MAGIC;
        uv_timer_init(hc->loop, &p->timer);
        p->timer.data = p;
        /* Servers start up (traffic flows at once); the first check runs now. */
        uv_timer_start(&p->timer, on_timer, 0, 0);
    }
    return hc;
nomem:
    for (size_t i = 0; probes && i < n; i++) {
        free(probes[i].req);
    }
    free(probes);
    free(hc);
    vd_log(VD_LOG_ERR, NULL, "health checks not started: out of memory");
    return NULL;
}

void
vd_health_stop(struct vd_health *hc)
{
    if (!hc) {
        return;
    }
    VD_BUG_ON(hc->magic != HC_MAGIC || hc->stopping);
    hc->stopping = true;
    for (size_t i = 0; i < hc->nprobes; i++) {
        struct probe *p = &hc->probes[i];
        if (p->q) {
            vd_resolve_cancel(p->q);
            p->q = NULL;
        }
        conn_drop(p);
        uv_timer_stop(&p->timer);
        hc->closing++;
        uv_close((uv_handle_t *)&p->timer, timer_closed);
    }
}
