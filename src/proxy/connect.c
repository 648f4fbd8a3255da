/* SPDX-License-Identifier: MIT */
/* CONNECT handler (RFC 9110 §9.3.6): resolves and connects to the target, checks rules that
 * test the destination address, answers "200 Connection established" and hands both
 * connections to a tunnel (src/proxy/tunnel.c). Failures before the 200 are answered with a
 * status that says which step failed: DNS 502, refused 502, timeout 504, rule 403. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vd/access.h"
#include "vd/err.h"
#include "vd/h1.h"
#include "vd/proxy.h"
#include "vd/sock.h"
#include "vd/tls.h"
#include "vd/tunnel.h"

#define CNX_MAGIC 0x434e5831u

struct cnx {
    uint32_t magic;
    struct vd_txn *t; /* NULL once detached */
    char *host;       /* arena of t */
    uint16_t port;
    bool hold; /* rules wait for the tunnel's first bytes */
    struct vd_resolve_query *q;
    struct vd_addrs addrs;
    size_t ai;
    int last_err;
    struct vd_sock *sock; /* the current attempt or the tunnel's server side; NULL when none */
    uint64_t t0;          /* uv_hrtime when the connection attempts started */
    uv_timer_t timer;
    int closes; /* handles still closing */
    struct vd_tunnel *tn;
    const struct vd_conf_rule *denied_by; /* a rule that refused an address or the tunnel */
    /* upstream.parent: the tunnel is asked of the parent with a CONNECT of its own */
    bool via_parent;
    bool parent_tls;   /* the parent is https://: TLS to it before the CONNECT */
    bool handshaking;  /* that TLS handshake is under way */
    bool parent_later; /* the target is resolved first (address rules), then the parent */
    bool preached;     /* connected to the parent (TLS done): no other parent from here */
    int pidx;          /* the parent in use (cnx_use_parent); -1 before one is chosen */
    uint32_t ptried;   /* parents that could not be reached (bit i) */
    bool addrs_checked;
    const char *chost; /* where the connection goes: the target, or the parent */
    uint16_t cport;
    uint8_t *presp; /* the parent's answer so far (limits.header_block bytes at most) */
    size_t npresp, presp_cap;
};

static void cnx_connect_next(struct cnx *x);

static void
cnx_closed_one(struct cnx *x)
{
    if (--x->closes > 0) {
        return;
    }
    x->magic = 0;
    free(x);
}

static void
cnx_sock_closed(struct vd_sock *s)
{
    struct cnx *x = s->data;
    free(s);
    cnx_closed_one(x);
}

/* A failed attempt's socket: freed when libuv is done with it. */
static void
attempt_closed(struct vd_sock *s)
{
    free(s);
}

static void
cnx_timer_closed(uv_handle_t *h)
{
    cnx_closed_one(h->data);
}

/* Releases the target connection and the handler state; the transaction is not touched. */
static void
cnx_free(struct cnx *x)
{
    if (x->q) {
        vd_resolve_cancel(x->q);
        x->q = NULL;
    }
    x->t = NULL;
    free(x->presp);
    x->presp = NULL;
    x->closes = 1 + (x->sock ? 1 : 0);
    uv_timer_stop(&x->timer);
    uv_close((uv_handle_t *)&x->timer, cnx_timer_closed);
    if (x->sock) {
        struct vd_sock *s = x->sock;
        x->sock = NULL;
        s->data = x;
        s->on_close = cnx_sock_closed;
        vd_sock_close(s);
    }
}

static void cnx_resolved(void *arg, int status, const struct vd_addrs *addrs);
static bool cnx_next_parent(struct cnx *x, const char *detail);

static void
cnx_fail(struct cnx *x, int status, const char *detail)
{
    if (x->via_parent && x->pidx >= 0 && !x->preached && cnx_next_parent(x, detail)) {
        return;
    }
    struct vd_txn *t = x->t;
    vd_log(VD_LOG_INFO, &t->log, "CONNECT %s:%u: %s", x->host, x->port, detail);
    t->handler = NULL;
    t->handler_data = NULL;
    cnx_free(x);
    vd_txn_respond_error(t, status, detail, true);
}

/* ---- the tunnel ---------------------------------------------------------------------------- */

static void
sniff_facts(struct cnx *x, const struct vd_sniff *s, struct vd_access_facts *f, const char **alpn)
{
    vd_txn_facts(x->t, x->host, x->port, true, f);
    f->known = VD_FACT_ADDR | VD_FACT_SNIFF;
    f->dest_addr = (const struct sockaddr *)&x->addrs.a[x->ai - 1];
    f->protocol = vd_proto_name(s->proto);
    f->sni = s->has_sni ? s->sni : NULL;
    for (unsigned i = 0; i < s->nalpn; i++) {
        alpn[i] = s->alpn[i];
    }
    f->alpn = alpn;
    f->nalpn = s->nalpn;
}

static bool
cnx_sniffed(void *arg, const struct vd_sniff *s)
{
    struct cnx *x = arg;
    if (!x->hold) {
        return true;
    }
    struct vd_access_facts f;
    const char *alpn[VD_SNIFF_ALPN_MAX];
    sniff_facts(x, s, &f, alpn);
    const struct vd_conf_rule *rule = NULL;
    enum vd_access_verdict v = vd_access_eval(x->t->conf, &f, &rule);
    if (v == VD_ACCESS_ALLOW) {
        return true;
    }
    x->denied_by = rule;
    vd_log(VD_LOG_INFO, &x->t->log, "tunnel to %s:%u (%s%s%s) refused by rule \"%s\"", x->host,
           x->port, vd_proto_name(s->proto), s->has_sni ? " sni=" : "", s->has_sni ? s->sni : "",
           rule ? rule->name : "no rule matched");
    return false;
}

static const char *const end_names[] = {
    [VD_TUN_END_CLOSED] = "closed", [VD_TUN_END_RESET] = "reset", [VD_TUN_END_IDLE] = "idle",
    [VD_TUN_END_DENIED] = "denied", [VD_TUN_END_NOMEM] = "nomem",
};

/* Copies what the tunnel saw into the transaction for the access log. */
void
vd_txn_tunnel_stats(struct vd_txn *t, const struct vd_tunnel_stats *st)
{
    t->stats.tunnel = true;
    t->stats.tun_up = st->bytes[0];
    t->stats.tun_down = st->bytes[1];
    t->stats.bytes_in += st->bytes[0];
    t->stats.bytes_out += st->bytes[1];
    t->stats.tun_end = end_names[st->reason];
    if (!st->sniffed) {
        return;
    }
    t->stats.tun_proto = vd_proto_name(st->sniff.proto);
    if (st->sniff.has_sni) {
        t->stats.tun_sni = vd_arena_dup(&t->arena, st->sniff.sni, strlen(st->sniff.sni));
    }
    if (st->sniff.nalpn) {
        char list[VD_SNIFF_ALPN_MAX * (VD_SNIFF_ALPN_LEN + 1) + 1];
        size_t n = 0;
        for (unsigned i = 0; i < st->sniff.nalpn; i++) {
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? "," : "",
                                  st->sniff.alpn[i]);
        }
        t->stats.tun_alpn = vd_arena_dup(&t->arena, list, n);
    }
}

static void
cnx_tunnel_done(void *arg, const struct vd_tunnel_stats *st)
{
    struct cnx *x = arg;
    struct vd_txn *t = x->t;
    x->tn = NULL;
    vd_txn_tunnel_stats(t, st);
    if (x->denied_by) {
        t->stats.deny_rule = x->denied_by->name;
    }
    VD_TRACE(&t->log, VD_SUB_PROXY, "tunnel to %s:%u ended (%s): %llu up, %llu down", x->host,
             x->port, t->stats.tun_end, (unsigned long long)st->bytes[0],
             (unsigned long long)st->bytes[1]);
    t->handler = NULL;
    t->handler_data = NULL;
    cnx_free(x);
    t->front->tunnel_end(t);
}

static void
cnx_established(struct cnx *x)
{
    struct vd_txn *t = x->t;
    uv_timer_stop(&x->timer);
    vd_sock_arm(x->sock, 0);
    t->stats.upstream_ns = uv_hrtime() - x->t0;
    struct vd_resp resp = {.status = 200, .length = -1, .tunnel = true};
    struct vd_tunnel_end client;
    if (t->front->send_head(t, &resp) < 0 || t->front->tunnel(t, &client) < 0) {
        t->handler = NULL;
        cnx_free(x);
        t->front->abort(t);
        return;
    }
    struct vd_tunnel_opts o = vd_txn_tunnel_opts(t, VD_TUN_SNIFF | (x->hold ? VD_TUN_HOLD : 0));
    static const struct vd_tunnel_cbs cbs = {
        .on_done = cnx_tunnel_done,
        .on_sniffed = cnx_sniffed,
    };
    struct vd_tunnel_end server = {.sock = x->sock};
    if (x->presp) {
        server.early = (struct vd_iov){x->presp, x->npresp}; /* bytes after the parent's 200 */
    }
    x->tn = vd_tunnel_start(&t->w->loop, &client, &server, &o, &cbs, x);
    t->front->tunnel(t, NULL);
    free(x->presp); /* copied by vd_tunnel_start */
    x->presp = NULL;
    if (!x->tn) {
        vd_log(VD_LOG_ERR, &t->log, "out of memory for a tunnel");
        t->handler = NULL;
        cnx_free(x);
        t->front->tunnel_end(t);
    }
}

/* ---- connecting ---------------------------------------------------------------------------- */

static void
cnx_connect_failed(struct cnx *x, int err)
{
    struct vd_sock *s = x->sock;
    x->last_err = err;
    x->sock = NULL;
    uv_timer_stop(&x->timer);
    s->on_close = attempt_closed;
    vd_sock_close(s);
    cnx_connect_next(x);
}

static void cnx_parent_timeout(uv_timer_t *tm);

/* Points the connection at parent @i (of upstream.parent). */
static void
cnx_use_parent(struct cnx *x, int i)
{
    const struct vd_conf_server *p = &x->t->conf->upstream.parents[i];
    x->pidx = i;
    x->chost = p->host;
    x->cport = p->port;
    x->parent_tls = p->tls;
}

/* The parent in use could not be reached (before our CONNECT went to it): marks it down and
 * starts over with the next one. Returns false when every parent has been tried. */
static bool
cnx_next_parent(struct cnx *x, const char *detail)
{
    const struct vd_conf *conf = x->t->conf;
    int i = vd_parent_next(conf, x->pidx, &x->ptried);
    if (i < 0) {
        return false;
    }
    vd_log(VD_LOG_WARN, &x->t->log, "CONNECT %s:%u: %s; trying the parent proxy %s", x->host,
           x->port, detail, conf->upstream.parents[i].url);
    uv_timer_stop(&x->timer);
    if (x->sock) {
        struct vd_sock *s = x->sock;
        x->sock = NULL;
        s->on_close = attempt_closed;
        vd_sock_close(s);
    }
    x->handshaking = false;
    x->ai = 0;
    x->last_err = 0;
    cnx_use_parent(x, i);
    int r = vd_resolve(x->t->w->resolver, x->chost, &x->addrs, cnx_resolved, x, &x->q);
    if (r != VD_EAGAIN) {
        cnx_resolved(x, r, &x->addrs);
    }
    return true;
}

/* Connected to the parent (and TLS to it done): asks it for the tunnel (RFC 9110 §9.3.6), with
 * viaduct's own credentials when configured. */
static void
cnx_parent_ask(struct cnx *x)
{
    x->preached = true;
    struct vd_dbuf req;
    vd_dbuf_init(&req, 2048);
    int r = vd_parent_connect_head(&req, x->t, x->host, x->port);
    struct iovec iov = {req.p, req.len};
    x->presp_cap = x->t->conf->limits.header_block; /* the bound of any response head */
    x->presp = malloc(x->presp_cap);
    bool sent = r == 0 && x->presp && vd_sock_writev(x->sock, &iov, 1) == (ssize_t)req.len;
    vd_dbuf_free(&req);
    if (!sent) {
        /* A fresh connection takes a few hundred bytes at once. */
        cnx_fail(x, 502, "could not send the CONNECT request to the parent proxy");
        return;
    }
    x->npresp = 0;
    uv_timer_start(&x->timer, cnx_parent_timeout, x->t->conf->timeouts.upstream_first_byte, 0);
    vd_sock_arm(x->sock, VD_WANT_READ);
}

/* Reads the parent's answer to CONNECT: 2xx starts the tunnel (bytes after the head belong to
 * it), anything else is a 502 that names the parent's status. */
static void
cnx_parent_read(struct cnx *x)
{
    char detail[300];
    bool eof = false;
    while (x->npresp < x->presp_cap) {
        ssize_t n = vd_sock_read(x->sock, x->presp + x->npresp, x->presp_cap - x->npresp);
        if (n == VD_EAGAIN) {
            break;
        }
        if (n <= 0) {
            eof = true; /* an answer may still be complete (a refusal, then close) */
            break;
        }
        x->npresp += (size_t)n;
    }
    struct vd_hdr hdrs[64];
    struct vd_h1_resp_head h = {.hdrs = hdrs};
    struct vd_h1_limits lim = {.max_request_line = x->t->conf->limits.request_line,
                               .max_head = x->presp_cap,
                               .max_headers = 64};
    const char *why = NULL;
    int r = vd_h1_parse_response(x->presp, x->npresp, &lim, &h, &why);
    if (r == VD_EAGAIN && (eof || x->npresp == x->presp_cap)) {
        cnx_fail(x, 502,
                 eof ? "the parent proxy closed the connection before answering CONNECT"
                     : "the parent proxy's answer to CONNECT is too large");
        return;
    }
    if (r == VD_EAGAIN) {
        /* A TLS parent may want the socket writable to go on reading. */
        vd_sock_arm(x->sock, x->sock->want ? x->sock->want : VD_WANT_READ);
        return;
    }
    int st = vd_parent_refusal(x->t->conf, r, &h, why, detail, sizeof(detail));
    if (st) {
        cnx_fail(x, st, detail);
        return;
    }
    /* What followed the head is the target's first bytes (a server greeting). */
    memmove(x->presp, x->presp + r, x->npresp - (size_t)r);
    x->npresp -= (size_t)r;
    cnx_established(x);
}

static void
cnx_parent_timeout(uv_timer_t *tm)
{
    struct cnx *x = tm->data;
    cnx_fail(x, 504, "the parent proxy did not answer CONNECT in time");
}

static void
cnx_handshake_timeout(uv_timer_t *tm)
{
    struct cnx *x = tm->data;
    char detail[300];
    snprintf(detail, sizeof(detail), "TLS handshake with the parent proxy %s port %u timed out",
             x->chost, x->cport);
    cnx_fail(x, 504, detail);
}

/* An https:// parent: the TLS handshake with it (SNI and the certificate check name it, as for
 * an https origin), then the CONNECT goes over that connection, and the relay after it. */
static void
cnx_parent_handshake(struct cnx *x)
{
    char detail[300];
    int r = vd_tls_handshake(x->sock);
    if (r == VD_EAGAIN) {
        vd_sock_arm(x->sock, x->sock->want);
        return;
    }
    if (r < 0) {
        snprintf(detail, sizeof(detail),
                 r == VD_ETLSVERIFY
                     ? "the parent proxy's certificate failed verification for %s: %s"
                     : "TLS handshake with the parent proxy %s failed: %s",
                 vd_parent_tls_name(x->t->conf, x->chost), vd_tls_error_detail(x->sock));
        cnx_fail(x, 502, detail);
        return;
    }
    x->handshaking = false;
    x->sock->want = 0;
    uv_timer_stop(&x->timer);
    cnx_parent_ask(x);
}

static void
cnx_sock_event(struct vd_sock *s, int ev)
{
    struct cnx *x = s->data;
    VD_BUG_ON(x->magic != CNX_MAGIC);
    (void)ev;
    if (x->presp) {
        cnx_parent_read(x);
        return;
    }
    if (x->handshaking) {
        cnx_parent_handshake(x);
        return;
    }
    int r = vd_sock_connect_result(s);
    if (r < 0) {
        cnx_connect_failed(x, r);
        return;
    }
    if (x->via_parent && x->parent_tls) {
        const struct vd_worker_shared *sh = x->t->w->shared;
        const char *name = vd_parent_tls_name(x->t->conf, x->chost);
        if (vd_tls_attach_client(s, sh->tls_parent, name, name) < 0) {
            cnx_fail(x, 502, "cannot start TLS to the parent proxy");
            return;
        }
        /* TCP and TLS share timeouts.upstream_connect, as towards https origins; a handshake
         * that does not finish ends the request rather than trying the next address. */
        uint64_t left = uv_timer_get_due_in(&x->timer);
        uv_timer_start(&x->timer, cnx_handshake_timeout, left ? left : 1, 0);
        x->handshaking = true;
        cnx_parent_handshake(x);
        return;
    }
    if (x->via_parent) {
        uv_timer_stop(&x->timer);
        cnx_parent_ask(x);
        return;
    }
    cnx_established(x);
}

static void
cnx_timeout(uv_timer_t *tm)
{
    struct cnx *x = tm->data;
    cnx_connect_failed(x, VD_ETIMEDOUT);
}

static void
cnx_connect_next(struct cnx *x)
{
    struct vd_txn *t = x->t;
    char detail[300];
    if (x->ai >= x->addrs.n) {
        int e = x->last_err;
        const char *what = x->via_parent ? "the parent proxy " : "";
        if (e == VD_ETIMEDOUT || e == -ETIMEDOUT) {
            snprintf(detail, sizeof(detail), "connecting to %s%s port %u timed out", what, x->chost,
                     x->cport);
            cnx_fail(x, 504, detail);
        } else if (e == -ECONNREFUSED) {
            snprintf(detail, sizeof(detail), "connection to %s%s port %u refused", what, x->chost,
                     x->cport);
            cnx_fail(x, 502, detail);
        } else {
            snprintf(detail, sizeof(detail), "connection to %s%s port %u failed: %s", what,
                     x->chost, x->cport, vd_strerror(e));
            cnx_fail(x, 502, detail);
        }
        return;
    }
    struct sockaddr_storage sa = x->addrs.a[x->ai++];
    socklen_t sl;
    if (sa.ss_family == AF_INET) {
        ((struct sockaddr_in *)&sa)->sin_port = htons(x->cport);
        sl = sizeof(struct sockaddr_in);
    } else {
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons(x->cport);
        sl = sizeof(struct sockaddr_in6);
    }
    x->addrs.a[x->ai - 1] = sa;
    struct vd_sock *s = calloc(1, sizeof(*s));
    int r = s ? vd_sock_connect(&t->w->loop, s, (struct sockaddr *)&sa, sl,
                                t->w->conf->upstream.tcp_congestion)
              : VD_ENOMEM;
    if (r < 0) {
        free(s);
        x->last_err = r;
        cnx_connect_next(x);
        return;
    }
    x->sock = s;
    s->data = x;
    s->on_event = cnx_sock_event;
    s->on_close = cnx_sock_closed;
    uv_timer_start(&x->timer, cnx_timeout, t->conf->timeouts.upstream_connect, 0);
    vd_sock_arm(s, VD_WANT_WRITE);
}

static void
cnx_resolved(void *arg, int status, const struct vd_addrs *addrs)
{
    struct cnx *x = arg;
    VD_BUG_ON(x->magic != CNX_MAGIC);
    x->q = NULL;
    char detail[300];
    if (status < 0) {
        int code = vd_txn_dns_failure(detail, sizeof(detail), x->chost, status);
        cnx_fail(x, code, detail);
        return;
    }
    x->addrs = *addrs;
    if (x->hold && !x->addrs_checked) {
        x->addrs_checked = true; /* the target's, not the parent's */
        /* Rules that test the destination address are decided now; denied addresses are
         * skipped, and the tunnel holds its first bytes only when a rule still needs them. */
        int v = vd_txn_check_addrs(x->t, x->host, x->port, true, &x->addrs, &x->denied_by);
        if (v == VD_ACCESS_DENY) {
            struct vd_txn *t = x->t;
            const struct vd_conf_rule *rule = x->denied_by;
            t->handler = NULL;
            t->handler_data = NULL;
            cnx_free(x);
            vd_txn_deny(t, rule);
            return;
        }
        x->hold = v == VD_ACCESS_PENDING;
        x->denied_by = NULL;
    }
    if (x->parent_later) {
        /* The rules saw the target's addresses; the connection goes to the parent. */
        x->parent_later = false;
        cnx_use_parent(x, vd_parent_pick(x->t->conf, 0));
        int r = vd_resolve(x->t->w->resolver, x->chost, &x->addrs, cnx_resolved, x, &x->q);
        if (r != VD_EAGAIN) {
            cnx_resolved(x, r, &x->addrs);
        }
        return;
    }
    x->ai = 0;
    cnx_connect_next(x);
}

/* ---- handler ops --------------------------------------------------------------------------- */

static ssize_t
cnx_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    (void)t;
    (void)p;
    (void)end;
    return (ssize_t)len; /* CONNECT has no body (refused before this handler) */
}

static void
cnx_writable(struct vd_txn *t)
{
    (void)t;
}

static void
cnx_abort(struct vd_txn *t)
{
    struct cnx *x = t->handler_data;
    VD_BUG_ON(x->magic != CNX_MAGIC);
    if (x->tn) {
        struct vd_tunnel_stats st;
        vd_tunnel_abort(x->tn, &st);
        x->tn = NULL;
        vd_txn_tunnel_stats(t, &st);
    }
    t->handler_data = NULL;
    cnx_free(x);
}

static const struct vd_handler_ops cnx_ops = {
    .name = "connect",
    .on_req_body = cnx_req_body,
    .on_writable = cnx_writable,
    .on_abort = cnx_abort,
};

void
vd_connect_start(struct vd_txn *t, const char *host, uint16_t port, int verdict)
{
    struct cnx *x = calloc(1, sizeof(*x));
    if (!x) {
        vd_txn_respond_error(t, 503, "out of memory for a tunnel", true);
        return;
    }
    x->magic = CNX_MAGIC;
    x->t = t;
    x->host = (char *)host;
    x->port = port;
    x->hold = verdict == VD_ACCESS_PENDING;
    x->chost = host;
    x->cport = port;
    x->via_parent = vd_parent_applies(t->conf, host);
    x->pidx = -1;
    if (x->via_parent && !x->hold) {
        cnx_use_parent(x, vd_parent_pick(t->conf, 0));
    }
    x->parent_later = x->via_parent && x->hold;
    uv_timer_init(&t->w->loop, &x->timer);
    x->timer.data = x;
    t->handler = &cnx_ops;
    t->handler_data = x;
    t->stats.upstream_used = true;
    x->t0 = uv_hrtime();
    int r = vd_resolve(t->w->resolver, x->chost, &x->addrs, cnx_resolved, x, &x->q);
    if (r != VD_EAGAIN) {
        cnx_resolved(x, r, &x->addrs);
    }
}
