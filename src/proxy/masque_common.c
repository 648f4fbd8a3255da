/* SPDX-License-Identifier: MIT */
/* The capsule session connect-udp and connect-ip share (src/proxy/masque-int.h): after the
 * 101/200 the client connection carries capsules (RFC 9297 §3.2); this file reads them, skips
 * unknown types and hands the rest to the protocol, writes the capsules the protocol queued,
 * stops peer reads while 256 KiB wait for the client, and ends, logs and frees the session.
 * Also the request and URI template checks (RFC 9298 §2, §3; RFC 9484 §3, §4). */
#include "vd/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "masque-int.h"
#include "vd/access.h"
#include "vd/err.h"

static void pump(struct vd_masque *s);

/* ---- lifetime ------------------------------------------------------------------------------ */

static void
closed_one(struct vd_masque *s)
{
    if (--s->closes > 0) {
        return;
    }
    vd_buf_release(&s->in);
    vd_dbuf_free(&s->out);
    s->magic = 0;
    free(s); /* the protocol's session, of which @s is the first member */
}

static void
timer_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

static void
peer_closed(struct vd_sock *p)
{
    struct vd_masque *s = p->data;
    free(p);
    closed_one(s);
}

/* Releases the peer side and the handler state; the client socket is handed back to the front
 * (its callbacks restored) but not closed here. */
static void
session_free(struct vd_masque *s)
{
    if (s->q) {
        vd_resolve_cancel(s->q);
        s->q = NULL;
    }
    if (s->cs) {
        vd_sock_arm(s->cs, 0);
        s->cs->on_event = s->saved_cb;
        s->cs->data = s->saved_data;
        s->cs = NULL;
    }
    s->t = NULL;
    s->closes = 1 + (s->peer ? 1 : 0);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, timer_closed);
    if (s->peer) {
        struct vd_sock *p = s->peer;
        s->peer = NULL;
        p->data = s;
        p->on_close = peer_closed;
        vd_sock_close(p);
    }
    if (s->ops->release) {
        s->ops->release(s);
    }
}

/* Takes @s off its exchange and frees it; returns the exchange. */
static struct vd_txn *
detach(struct vd_masque *s)
{
    struct vd_txn *t = s->t;
    t->handler = NULL;
    t->handler_data = NULL;
    session_free(s);
    return t;
}

static void
stats(struct vd_masque *s, const char *end)
{
    struct vd_txn *t = s->t;
    t->stats.tunnel = true;
    t->stats.tun_proto = s->ops->name;
    t->stats.tun_up = s->bytes_up;
    t->stats.tun_down = s->bytes_down;
    t->stats.bytes_in += s->bytes_up;
    t->stats.bytes_out += s->bytes_down;
    t->stats.tun_end = end;
    t->stats.dgrams = true;
    t->stats.dg_up = s->dg_up;
    t->stats.dg_down = s->dg_down;
    if (s->ops->stats) {
        s->ops->stats(s);
    }
}

void
vd__masque_init(struct vd_masque *s, struct vd_txn *t, const struct vd_masque_ops *ops,
                const struct vd_handler_ops *hops)
{
    s->magic = ops->magic;
    s->ops = ops;
    s->t = t;
    vd_dbuf_init(&s->out, VD_MASQUE_OUT_HIGH + ops->capsule_max);
    uv_timer_init(&t->w->loop, &s->timer);
    s->timer.data = s;
    t->handler = hops;
    t->handler_data = s;
}

void
vd__masque_end(struct vd_masque *s, const char *end, bool reset)
{
    stats(s, end);
    if (reset && s->cs && s->cs->fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(s->cs->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (!reset && s->cs && s->cs->fd < 0) {
        (void)s->cs->ops->shutdown(s->cs);
    }
    struct vd_txn *t = detach(s);
    t->front->tunnel_end(t);
}

void
vd__masque_fail(struct vd_masque *s, int status, const char *detail)
{
    struct vd_txn *t = s->t;
    if (s->port) {
        vd_log(VD_LOG_INFO, &t->log, "%s %s:%u: %s", s->ops->name, s->host, s->port, detail);
    } else {
        vd_log(VD_LOG_INFO, &t->log, "%s %s: %s", s->ops->name, s->host, detail);
    }
    detach(s);
    /* Close after the error: bytes the client sent optimistically after its request must never
     * be read as a new request (RFC 9298 §3.2 and its update on optimistic upgrades). */
    vd_txn_respond_error(t, status, detail, true);
}

void
vd__masque_deny(struct vd_masque *s, const struct vd_conf_rule *rule)
{
    vd_txn_deny(detach(s), rule);
}

bool
vd__masque_resolved(struct vd_masque *s, int status, const struct vd_addrs *addrs)
{
    s->q = NULL;
    char detail[300];
    if (status < 0) {
        int code = vd_txn_dns_failure(detail, sizeof(detail), s->host, status);
        vd__masque_fail(s, code, detail);
        return false;
    }
    s->addrs = *addrs;
    if (s->pending_rules) {
        const struct vd_conf_rule *deny = NULL;
        if (vd_txn_check_addrs(s->t, s->host, s->port, false, &s->addrs, &deny) == VD_ACCESS_DENY) {
            vd__masque_deny(s, deny);
            return false;
        }
    }
    return true;
}

/* ---- the pump ------------------------------------------------------------------------------ */

static int
out_flush(struct vd_masque *s)
{
    while (s->out_off < s->out.len) {
        struct iovec iov = {s->out.p + s->out_off, s->out.len - s->out_off};
        ssize_t w = vd_sock_writev(s->cs, &iov, 1);
        if (w == VD_EAGAIN) {
            return 0;
        }
        if (w <= 0) {
            return w < 0 ? (int)w : VD_ECLOSED;
        }
        s->out_off += (size_t)w;
    }
    vd_dbuf_reset(&s->out);
    s->out_off = 0;
    return 0;
}

/* Parses the capsules in the input buffer. Returns 0, or an error that ends the session. */
static int
capsules_consume(struct vd_masque *s)
{
    for (;;) {
        if (s->skip) {
            uint32_t k = (uint32_t)VD_MIN(s->skip, (uint64_t)s->in.len);
            vd_buf_consume(&s->in, k);
            s->skip -= k;
            if (s->skip) {
                return 0;
            }
        }
        struct vd_capsule_hdr h;
        if (s->in.len == 0 || !vd_capsule_hdr_parse(vd_buf_data(&s->in), s->in.len, &h)) {
            return 0;
        }
        int r = s->ops->classify(s, &h);
        if (r < 0) {
            return r;
        }
        if (r == 0) {
            vd_buf_consume(&s->in, (uint32_t)h.hdr_len);
            s->skip = h.len;
            continue;
        }
        if (s->in.len < h.hdr_len + h.len) {
            size_t need = h.hdr_len + h.len;
            if (need > s->in.cap && vd_buf_grow(&s->in, (uint32_t)s->ops->capsule_max) < 0) {
                return VD_ENOMEM;
            }
            return 0;
        }
        r = s->ops->capsule(s, h.type, vd_buf_data(&s->in) + h.hdr_len, (size_t)h.len);
        if (r < 0) {
            return r;
        }
        vd_buf_consume(&s->in, (uint32_t)(h.hdr_len + h.len));
    }
}

/* Reads client bytes until the socket is drained. Returns 1 at EOF, 0, or an error. */
static int
client_read(struct vd_masque *s)
{
    for (;;) {
        if (!s->in.base && vd_buf_acquire(&s->in) < 0) {
            return VD_ENOMEM;
        }
        vd_buf_compact(&s->in);
        if (vd_buf_room(&s->in) == 0) {
            return 0; /* a capsule that waits for room: consume made room or grew */
        }
        ssize_t n = vd_sock_read(s->cs, vd_buf_tail(&s->in), vd_buf_room(&s->in));
        if (n == VD_EAGAIN) {
            return 0;
        }
        if (n == 0) {
            return 1;
        }
        if (n < 0) {
            return (int)n;
        }
        s->in.len += (uint32_t)n;
        s->last_ms = uv_now(s->peer->poll.loop);
        int r = capsules_consume(s);
        if (r < 0) {
            return r;
        }
    }
}

/* The access log's end for an error that ends a running session. */
static const char *
error_end(int err)
{
    return err == VD_ENOMEM ? "nomem" : err == VD_EPROTO ? "malformed" : "reset";
}

static void
pump(struct vd_masque *s)
{
    int r = out_flush(s);
    if (r == 0) {
        r = client_read(s);
    }
    if (r == 1) {
        vd__masque_end(s, "closed", false);
        return;
    }
    if (r < 0) {
        vd__masque_end(s, error_end(r), true);
        return;
    }
    if (s->out.len - s->out_off < VD_MASQUE_OUT_HIGH) {
        s->ops->peer_read(s);
        if (out_flush(s) < 0) {
            vd__masque_end(s, "reset", true);
            return;
        }
    }
    bool backlog = s->out.len > s->out_off;
    vd_sock_arm(s->cs, VD_WANT_READ | (backlog ? VD_WANT_WRITE : 0) | s->cs->want);
    vd_sock_arm(s->peer,
                backlog && s->out.len - s->out_off >= VD_MASQUE_OUT_HIGH ? 0 : VD_WANT_READ);
}

static void
on_event(struct vd_sock *sock, int ev)
{
    (void)ev;
    struct vd_masque *s = sock->data;
    VD_BUG_ON(s->magic != s->ops->magic);
    pump(s);
}

static void
on_idle(uv_timer_t *tm)
{
    struct vd_masque *s = tm->data;
    uint64_t now = uv_now(tm->loop), idle = s->t->conf->masque.idle_timeout;
    if (now - s->last_ms >= idle) {
        vd__masque_end(s, "idle", false);
        return;
    }
    uv_timer_start(&s->timer, on_idle, s->last_ms + idle - now, 0);
}

void
vd__masque_peer_attach(struct vd_masque *s, struct vd_sock *peer)
{
    peer->data = s;
    peer->on_event = on_event;
    peer->on_close = peer_closed;
    s->peer = peer;
}

/* ---- setting up ---------------------------------------------------------------------------- */

bool
vd__masque_open(struct vd_masque *s, int (*greet)(struct vd_masque *s))
{
    struct vd_txn *t = s->t;
    struct vd_hdr hdrs[3] = {
        {VD_IOV_LIT("Capsule-Protocol"), VD_IOV_LIT("?1")},
        {VD_IOV_LIT("Connection"), VD_IOV_LIT("Upgrade")},
        {VD_IOV_LIT("Upgrade"), {(const uint8_t *)s->ops->name, strlen(s->ops->name)}},
    };
    /* HTTP/1.1: 101 Switching Protocols (RFC 9298 §3.2, RFC 9484 §4.3); HTTP/2 and later: 200
     * to the extended CONNECT (RFC 9298 §3.4, RFC 9484 §4.5). */
    bool h1 = t->req.version < 20;
    struct vd_resp resp = {
        .status = h1 ? 101 : 200, .hdrs = hdrs, .nhdrs = h1 ? 3 : 1, .length = -1, .tunnel = true};
    struct vd_tunnel_end client;
    if (t->front->send_head(t, &resp) < 0 || t->front->tunnel(t, &client) < 0) {
        t->handler = NULL;
        session_free(s);
        t->front->abort(t);
        return false;
    }
    /* Capsules the client sent optimistically right after its request (RFC 9298 §3.2). */
    if (vd_buf_acquire(&s->in) < 0 ||
        (client.early.len > s->in.cap && vd_buf_grow(&s->in, (uint32_t)client.early.len) < 0) ||
        (client.unsent.len && vd_dbuf_add(&s->out, client.unsent.base, client.unsent.len) < 0) ||
        (greet && greet(s) < 0)) {
        t->front->tunnel(t, NULL);
        vd__masque_end(s, "nomem", true);
        return false;
    }
    if (client.early.len) {
        memcpy(s->in.base, client.early.base, client.early.len);
    }
    s->in.len = (uint32_t)client.early.len;
    t->front->tunnel(t, NULL);
    s->cs = client.sock;
    s->saved_cb = s->cs->on_event;
    s->saved_data = s->cs->data;
    s->cs->on_event = on_event;
    s->cs->data = s;
    s->running = true;
    s->last_ms = uv_now(&t->w->loop);
    uv_timer_start(&s->timer, on_idle, t->conf->masque.idle_timeout, 0);
    return true;
}

void
vd__masque_run(struct vd_masque *s)
{
    int r = capsules_consume(s);
    if (r < 0) {
        vd__masque_end(s, r == VD_EPROTO ? "malformed" : "nomem", true);
        return;
    }
    pump(s);
}

/* ---- handler ops --------------------------------------------------------------------------- */

ssize_t
vd__masque_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    (void)t;
    (void)p;
    (void)end;
    return (ssize_t)len; /* refused before this handler */
}

void
vd__masque_writable(struct vd_txn *t)
{
    (void)t;
}

void
vd__masque_abort(struct vd_txn *t)
{
    struct vd_masque *s = t->handler_data;
    VD_BUG_ON(s->magic != s->ops->magic);
    if (s->running) {
        stats(s, "reset");
    }
    t->handler_data = NULL;
    session_free(s);
}

/* ---- the request and its URI template ------------------------------------------------------ */

bool
vd__masque_request_refused(struct vd_txn *t, const char *token, const char *why)
{
    char detail[200];
    if (why) {
        snprintf(detail, sizeof(detail), "malformed %s request: %s", token, why);
        vd_txn_respond_error(t, 400, detail, true);
        return true;
    }
    bool conn_upgrade = false, cp_bad = false;
    for (size_t i = 0; i < t->req.nhdrs; i++) {
        const struct vd_hdr *h = &t->req.hdrs[i];
        if (vd_hdr_name_is(h->name, "connection")) {
            conn_upgrade |= vd_list_has(h->value, "upgrade");
        } else if (vd_hdr_name_is(h->name, "capsule-protocol")) {
            /* RFC 9297 §3.4: a Structured Field boolean; only true asks for capsules. */
            cp_bad |= !(h->value.len == 2 && memcmp(h->value.base, "?1", 2) == 0);
        }
    }
    bool declared = t->declared && strcmp(t->declared, token) == 0;
    /* RFC 9298 §3.4, RFC 9484 §4.4 (HTTP/2): extended CONNECT with :protocol @token. */
    bool h2 = t->req.version >= 20 && t->req.method.len == 7 &&
              memcmp(t->req.method.base, "CONNECT", 7) == 0 && t->req.protocol.len;
    if (h2 && (cp_bad || !declared)) {
        snprintf(detail, sizeof(detail),
                 "malformed %s request: Capsule-Protocol must be ?1 when present", token);
        vd_txn_respond_error(t, 400, detail, false);
        return true;
    }
    /* RFC 9298 §3.2, RFC 9484 §4.2 (HTTP/1.1): GET, Connection: Upgrade, Upgrade: @token, no
     * content. */
    if (!h2 && (t->req.method.len != 3 || memcmp(t->req.method.base, "GET", 3) != 0 ||
                t->req.version != 11 || !conn_upgrade || !declared ||
                t->req.framing.kind != VD_BODY_NONE || cp_bad)) {
        snprintf(detail, sizeof(detail),
                 "malformed %s request: expected an HTTP/1.1 GET with Connection: Upgrade and "
                 "Upgrade: %s, without a body",
                 token, token);
        vd_txn_respond_error(t, 400, detail, true);
        return true;
    }
    return false;
}

void *
vd__masque_admit(struct vd_txn *t, const char *dest, uint16_t port, size_t size, bool *pending)
{
    struct vd_access_facts f;
    vd_txn_facts(t, dest, port, false, &f);
    const struct vd_conf_rule *rule = NULL;
    enum vd_access_verdict v = vd_access_eval(t->conf, &f, &rule);
    if (v == VD_ACCESS_DENY) {
        vd_txn_deny(t, rule);
        return NULL;
    }
    void *m = calloc(1, size);
    if (!m) {
        vd_txn_respond_error(t, 503, "out of memory", true);
        return NULL;
    }
    *pending = v == VD_ACCESS_PENDING;
    return m;
}

int
vd__masque_template_split(const char *tpl, const char *v1, const char *v2, struct vd_iov path,
                          struct vd_iov *a, struct vd_iov *b)
{
    const char *h = tpl ? strstr(tpl, v1) : NULL;
    const char *p = tpl ? strstr(tpl, v2) : NULL;
    if (!h || !p) {
        return 0;
    }
    size_t pre = (size_t)(h - tpl);
    const char *mid = h + strlen(v1);
    size_t midl = (size_t)(p - mid);
    const char *suf = p + strlen(v2);
    size_t sufl = strlen(suf);
    if (path.len < pre || memcmp(path.base, tpl, pre) != 0) {
        return 0;
    }
    const uint8_t *s = path.base + pre, *e = path.base + path.len;
    const uint8_t *m = NULL;
    for (const uint8_t *q = s; q + midl <= e; q++) {
        if (memcmp(q, mid, midl) == 0) {
            m = q;
            break;
        }
    }
    if (!m || (size_t)(e - (m + midl)) < sufl || memcmp(e - sufl, suf, sufl) != 0) {
        return -1;
    }
    *a = (struct vd_iov){s, (size_t)(m - s)};
    *b = (struct vd_iov){m + midl, (size_t)((e - sufl) - (m + midl))};
    return 1;
}

static int
hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int
vd__masque_pct_decode(const uint8_t *s, size_t n, char *out, size_t cap, unsigned flags)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = s[i];
        if (ch == '/') {
            return -1;
        }
        if (ch == '%') {
            if (i + 2 >= n) {
                return -1;
            }
            int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
            if (a < 0 || b < 0) {
                return -1;
            }
            ch = a << 4 | b;
            i += 2;
        }
        if (ch == 0 || (ch == '/' && !(flags & VD_MASQUE_PCT_SLASH)) || o + 1 >= cap) {
            return -1;
        }
        if ((flags & VD_MASQUE_PCT_LOWER) && ch >= 'A' && ch <= 'Z') {
            ch += 32;
        }
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return (int)o;
}

bool
vd__masque_name_valid(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.')) {
            return false;
        }
    }
    return true;
}
