/* SPDX-License-Identifier: MIT */
/* UDP proxying in HTTP (RFC 9298) over HTTP/1.1: a GET to the connect-udp URI template with
 * "Upgrade: connect-udp" becomes, after a 101, a capsule stream (RFC 9297 §3.2) on the client
 * connection; DATAGRAM capsules with context ID 0 carry UDP payloads to and from a connected UDP
 * socket. Unknown capsule types are skipped, unknown context IDs dropped (RFC 9298 §4, §5). */
#include "vd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vd/access.h"
#include "vd/capsule.h"
#include "vd/err.h"
#include "vd/proxy.h"
#include "vd/sock.h"

#define MUDP_MAGIC  0x4d554450u
#define UDP_MAX     65527                 /* largest UDP payload over IPv4 */
#define CAPSULE_MAX (UDP_MAX + 1 + 8 + 8) /* a DATAGRAM capsule carrying it: ctx + header */
#define OUT_HIGH    (256 * 1024)          /* client-bound capsule bytes before UDP reads stop */
#define UDP_BURST   64                    /* datagrams read per wake-up */

struct mudp {
    uint32_t magic;
    struct vd_txn *t; /* NULL once detached */
    char *host;       /* decoded target host (arena) */
    uint16_t port;
    bool pending_rules; /* rules wait on the address */
    struct vd_resolve_query *q;
    struct vd_addrs addrs;
    struct vd_sock *udp; /* connected UDP socket (heap), NULL before */
    struct vd_sock *cs;  /* the client connection, after the 101 */
    vd_sock_cb saved_cb;
    void *saved_data;
    uv_timer_t timer; /* idle */
    int closes;
    struct vd_buf in;   /* client capsule bytes */
    uint64_t skip;      /* value bytes of an ignored capsule still to discard */
    struct vd_dbuf out; /* capsules towards the client */
    size_t out_off;
    uint64_t last_ms;
    uint64_t bytes_up, bytes_down, dg_up, dg_down, dg_dropped;
    bool running;
};

static void mudp_pump(struct mudp *m);

/* ---- the URI template (RFC 9298 §2) --------------------------------------------------------- */

static int
hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes @n bytes of @s into @out (capacity @cap, NUL-terminated). IPv6 literals come
 * with their colons encoded ("2001%3Adb8%3A%3A1"). Returns the length or -1. */
static int
pct_decode(const uint8_t *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = s[i];
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
        if (ch == 0 || ch == '/' || o + 1 >= cap) {
            return -1;
        }
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return (int)o;
}

static bool
valid_host(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1) {
        return true;
    }
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

/* Matches @path against the configured template. Returns 1 with the host (arena) and port, 0
 * when the path is not a connect-udp path, -1 when it is one but malformed (@why). */
static int
template_match(struct vd_txn *t, struct vd_iov path, char **host, uint16_t *port, const char **why)
{
    const char *tpl = t->conf->masque.udp_template;
    const char *h = strstr(tpl, "{target_host}");
    const char *p = strstr(tpl, "{target_port}");
    if (!tpl || !h || !p) {
        return 0;
    }
    size_t pre = (size_t)(h - tpl);
    const char *mid = h + strlen("{target_host}");
    size_t midl = (size_t)(p - mid);
    const char *suf = p + strlen("{target_port}");
    size_t sufl = strlen(suf);
    if (path.len < pre || memcmp(path.base, tpl, pre) != 0) {
        return 0;
    }
    const uint8_t *s = path.base + pre, *e = path.base + path.len;
    /* The host ends at the first occurrence of the literal between the two variables. */
    const uint8_t *m = NULL;
    for (const uint8_t *q = s; q + midl <= e; q++) {
        if (memcmp(q, mid, midl) == 0) {
            m = q;
            break;
        }
    }
    if (!m || (size_t)(e - (m + midl)) < sufl || memcmp(e - sufl, suf, sufl) != 0) {
        *why = "path does not follow the connect-udp template";
        return -1;
    }
    char hb[256];
    if (m == s || pct_decode(s, (size_t)(m - s), hb, sizeof(hb)) < 0 || !valid_host(hb)) {
        *why = "invalid target_host";
        return -1;
    }
    const uint8_t *ps = m + midl, *pe = e - sufl;
    uint32_t v = 0;
    if (ps == pe || pe - ps > 5) {
        *why = "invalid target_port";
        return -1;
    }
    for (const uint8_t *q = ps; q < pe; q++) {
        if (*q < '0' || *q > '9') {
            *why = "invalid target_port";
            return -1;
        }
        v = v * 10 + (uint32_t)(*q - '0');
    }
    if (v == 0 || v > 65535) {
        *why = "invalid target_port";
        return -1;
    }
    for (char *c = hb; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            *c = (char)(*c + 32);
        }
    }
    *host = vd_arena_dup(&t->arena, hb, strlen(hb));
    *port = (uint16_t)v;
    return *host ? 1 : -1;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static void
mudp_closed_one(struct mudp *m)
{
    if (--m->closes > 0) {
        return;
    }
    vd_buf_release(&m->in);
    vd_dbuf_free(&m->out);
    m->magic = 0;
    free(m);
}

static void
mudp_timer_closed(uv_handle_t *h)
{
    mudp_closed_one(h->data);
}

static void
mudp_udp_closed(struct vd_sock *s)
{
    struct mudp *m = s->data;
    free(s);
    mudp_closed_one(m);
}

/* Releases the UDP side and the handler state; the client socket is handed back to the front
 * (its callbacks restored) but not closed here. */
static void
mudp_free(struct mudp *m)
{
    if (m->q) {
        vd_resolve_cancel(m->q);
        m->q = NULL;
    }
    if (m->cs) {
        vd_sock_arm(m->cs, 0);
        m->cs->on_event = m->saved_cb;
        m->cs->data = m->saved_data;
        m->cs = NULL;
    }
    m->t = NULL;
    m->closes = 1 + (m->udp ? 1 : 0);
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->timer, mudp_timer_closed);
    if (m->udp) {
        struct vd_sock *s = m->udp;
        m->udp = NULL;
        s->data = m;
        s->on_close = mudp_udp_closed;
        vd_sock_close(s);
    }
}

static void
mudp_stats(struct mudp *m, const char *end)
{
    struct vd_txn *t = m->t;
    t->stats.tunnel = true;
    t->stats.tun_proto = "connect-udp";
    t->stats.tun_up = m->bytes_up;
    t->stats.tun_down = m->bytes_down;
    t->stats.bytes_in += m->bytes_up;
    t->stats.bytes_out += m->bytes_down;
    t->stats.tun_end = end;
    t->stats.dgrams = true;
    t->stats.dg_up = m->dg_up;
    t->stats.dg_down = m->dg_down;
}

/* The flow is over: log, give the client connection back to the front, which closes it
 * (HTTP/1.1) or ends the stream (HTTP/2: END_STREAM after a clean end, else RST_STREAM
 * CONNECT_ERROR). */
static void
mudp_end(struct mudp *m, const char *end, bool reset)
{
    struct vd_txn *t = m->t;
    mudp_stats(m, end);
    if (reset && m->cs && m->cs->fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(m->cs->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (!reset && m->cs && m->cs->fd < 0) {
        (void)m->cs->ops->shutdown(m->cs);
    }
    t->handler = NULL;
    t->handler_data = NULL;
    mudp_free(m);
    t->front->tunnel_end(t);
}

static void
mudp_fail(struct mudp *m, int status, const char *detail)
{
    struct vd_txn *t = m->t;
    vd_log(VD_LOG_INFO, &t->log, "connect-udp %s:%u: %s", m->host, m->port, detail);
    t->handler = NULL;
    t->handler_data = NULL;
    mudp_free(m);
    /* Close after the error: bytes the client sent optimistically after its request must never
     * be read as a new request (RFC 9298 §3.2 and its update on optimistic upgrades). */
    vd_txn_respond_error(t, status, detail, true);
}

/* ---- the pump ------------------------------------------------------------------------------ */

static int
out_flush(struct mudp *m)
{
    while (m->out_off < m->out.len) {
        struct iovec iov = {m->out.p + m->out_off, m->out.len - m->out_off};
        ssize_t w = vd_sock_writev(m->cs, &iov, 1);
        if (w == VD_EAGAIN) {
            return 0;
        }
        if (w <= 0) {
            return w < 0 ? (int)w : VD_ECLOSED;
        }
        m->out_off += (size_t)w;
    }
    vd_dbuf_reset(&m->out);
    m->out_off = 0;
    return 0;
}

/* UDP datagrams from the target become DATAGRAM capsules towards the client. */
static int
udp_read(struct mudp *m)
{
    uint8_t buf[UDP_MAX + 1];
    for (int i = 0; i < UDP_BURST && m->out.len - m->out_off < OUT_HIGH; i++) {
        ssize_t n = recv(m->udp->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            /* ICMP errors (port unreachable) on a connected UDP socket: the flow goes on, as
             * UDP would without a proxy. */
            continue;
        }
        uint8_t hdr[24];
        size_t hl = vd_capsule_datagram_hdr(hdr, (size_t)n);
        if (vd_dbuf_add(&m->out, hdr, hl) < 0 || vd_dbuf_add(&m->out, buf, (size_t)n) < 0) {
            m->dg_dropped++;
            continue;
        }
        m->dg_down++;
        m->bytes_down += (uint64_t)n;
        m->last_ms = uv_now(m->udp->poll.loop);
    }
    return 0;
}

/* Parses the capsules in the input buffer. Returns 0, or an error that ends the flow. */
static int
capsules_consume(struct mudp *m)
{
    for (;;) {
        if (m->skip) {
            uint32_t k = (uint32_t)VD_MIN(m->skip, (uint64_t)m->in.len);
            vd_buf_consume(&m->in, k);
            m->skip -= k;
            if (m->skip) {
                return 0;
            }
        }
        struct vd_capsule_hdr h;
        if (m->in.len == 0 || !vd_capsule_hdr_parse(vd_buf_data(&m->in), m->in.len, &h)) {
            return 0;
        }
        if (h.type != VD_CAPSULE_DATAGRAM || h.len > UDP_MAX + 8 || h.len == 0) {
            /* Unknown types are skipped (RFC 9297 §3.2); a DATAGRAM too large to be one UDP
             * payload, or without a context ID, is dropped the same way. */
            if (h.type == VD_CAPSULE_DATAGRAM) {
                m->dg_dropped++;
            }
            vd_buf_consume(&m->in, (uint32_t)h.hdr_len);
            m->skip = h.len;
            continue;
        }
        if (m->in.len < h.hdr_len + h.len) {
            size_t need = h.hdr_len + h.len;
            if (need > m->in.cap && vd_buf_grow(&m->in, (uint32_t)CAPSULE_MAX) < 0) {
                return VD_ENOMEM;
            }
            return 0;
        }
        const uint8_t *v = vd_buf_data(&m->in) + h.hdr_len;
        uint64_t ctx;
        size_t cl = vd_varint_decode(v, h.len, &ctx);
        if (cl == 0) {
            m->dg_dropped++; /* the context ID does not fit inside the capsule */
        } else if (ctx != 0) {
            m->dg_dropped++; /* RFC 9298 §4: unknown context IDs are dropped */
        } else {
            size_t pl = h.len - cl;
            ssize_t w = send(m->udp->fd, v + cl, pl, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w == (ssize_t)pl) {
                m->dg_up++;
                m->bytes_up += pl;
            } else {
                m->dg_dropped++; /* a full socket buffer drops, as UDP does */
            }
        }
        vd_buf_consume(&m->in, (uint32_t)(h.hdr_len + h.len));
    }
}

/* Reads client bytes until the socket is drained. Returns 1 at EOF, 0, or an error. */
static int
client_read(struct mudp *m)
{
    for (;;) {
        if (!m->in.base && vd_buf_acquire(&m->in) < 0) {
            return VD_ENOMEM;
        }
        vd_buf_compact(&m->in);
        if (vd_buf_room(&m->in) == 0) {
            return 0; /* a capsule that waits for room: consume made room or grew */
        }
        ssize_t n = vd_sock_read(m->cs, vd_buf_tail(&m->in), vd_buf_room(&m->in));
        if (n == VD_EAGAIN) {
            return 0;
        }
        if (n == 0) {
            return 1;
        }
        if (n < 0) {
            return (int)n;
        }
        m->in.len += (uint32_t)n;
        m->last_ms = uv_now(m->udp->poll.loop);
        int r = capsules_consume(m);
        if (r < 0) {
            return r;
        }
    }
}

static void
mudp_pump(struct mudp *m)
{
    int r = out_flush(m);
    if (r == 0) {
        r = client_read(m);
    }
    if (r == 1) {
        mudp_end(m, "closed", false);
        return;
    }
    if (r < 0) {
        mudp_end(m, r == VD_ENOMEM ? "nomem" : "reset", true);
        return;
    }
    if (m->out.len - m->out_off < OUT_HIGH) {
        (void)udp_read(m);
        if (out_flush(m) < 0) {
            mudp_end(m, "reset", true);
            return;
        }
    }
    bool backlog = m->out.len > m->out_off;
    vd_sock_arm(m->cs, VD_WANT_READ | (backlog ? VD_WANT_WRITE : 0) | m->cs->want);
    vd_sock_arm(m->udp, backlog && m->out.len - m->out_off >= OUT_HIGH ? 0 : VD_WANT_READ);
}

static void
mudp_event(struct vd_sock *s, int ev)
{
    (void)ev;
    struct mudp *m = s->data;
    VD_BUG_ON(m->magic != MUDP_MAGIC);
    mudp_pump(m);
}

static void
mudp_idle(uv_timer_t *tm)
{
    struct mudp *m = tm->data;
    uint64_t now = uv_now(tm->loop), idle = m->t->conf->masque.idle_timeout;
    if (now - m->last_ms >= idle) {
        mudp_end(m, "idle", false);
        return;
    }
    uv_timer_start(&m->timer, mudp_idle, m->last_ms + idle - now, 0);
}

/* ---- setting up ---------------------------------------------------------------------------- */

static void
mudp_start_flow(struct mudp *m)
{
    struct vd_txn *t = m->t;
    struct vd_hdr hdrs[3] = {
        {VD_IOV_LIT("Capsule-Protocol"), VD_IOV_LIT("?1")},
        {VD_IOV_LIT("Connection"), VD_IOV_LIT("Upgrade")},
        {VD_IOV_LIT("Upgrade"), VD_IOV_LIT("connect-udp")},
    };
    /* HTTP/1.1: 101 Switching Protocols; HTTP/2 and later: 200 to the extended CONNECT. */
    bool h1 = t->req.version < 20;
    struct vd_resp resp = {
        .status = h1 ? 101 : 200, .hdrs = hdrs, .nhdrs = h1 ? 3 : 1, .length = -1, .tunnel = true};
    struct vd_tunnel_end client;
    if (t->front->send_head(t, &resp) < 0 || t->front->tunnel(t, &client) < 0) {
        t->handler = NULL;
        mudp_free(m);
        t->front->abort(t);
        return;
    }
    /* Capsules the client sent optimistically right after its request (RFC 9298 §3.2). */
    if (vd_buf_acquire(&m->in) < 0 ||
        (client.early.len > m->in.cap && vd_buf_grow(&m->in, (uint32_t)client.early.len) < 0) ||
        (client.unsent.len && vd_dbuf_add(&m->out, client.unsent.base, client.unsent.len) < 0)) {
        t->front->tunnel(t, NULL);
        mudp_end(m, "nomem", true);
        return;
    }
    if (client.early.len) {
        memcpy(m->in.base, client.early.base, client.early.len);
    }
    m->in.len = (uint32_t)client.early.len;
    t->front->tunnel(t, NULL);
    m->cs = client.sock;
    m->saved_cb = m->cs->on_event;
    m->saved_data = m->cs->data;
    m->cs->on_event = mudp_event;
    m->cs->data = m;
    m->running = true;
    m->last_ms = uv_now(&t->w->loop);
    uv_timer_start(&m->timer, mudp_idle, t->conf->masque.idle_timeout, 0);
    if (capsules_consume(m) < 0) {
        mudp_end(m, "nomem", true);
        return;
    }
    mudp_pump(m);
}

static void
mudp_connect(struct mudp *m)
{
    struct vd_txn *t = m->t;
    char detail[300];
    int last = VD_ENOTFOUND;
    for (size_t i = 0; i < m->addrs.n; i++) {
        struct sockaddr_storage sa = m->addrs.a[i];
        socklen_t sl;
        if (sa.ss_family == AF_INET) {
            ((struct sockaddr_in *)&sa)->sin_port = htons(m->port);
            sl = sizeof(struct sockaddr_in);
        } else {
            ((struct sockaddr_in6 *)&sa)->sin6_port = htons(m->port);
            sl = sizeof(struct sockaddr_in6);
        }
        int fd = socket(sa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last = -errno;
            continue;
        }
        if (connect(fd, (struct sockaddr *)&sa, sl) < 0) {
            last = -errno;
            close(fd);
            continue;
        }
        struct vd_sock *s = calloc(1, sizeof(*s));
        if (!s || vd_sock_init(&t->w->loop, s, fd) < 0) {
            free(s);
            close(fd);
            last = VD_ENOMEM;
            continue;
        }
        s->data = m;
        s->on_event = mudp_event;
        s->on_close = mudp_udp_closed;
        m->udp = s;
        t->stats.upstream_used = true;
        mudp_start_flow(m);
        return;
    }
    snprintf(detail, sizeof(detail), "UDP socket to %s port %u failed: %s", m->host, m->port,
             vd_strerror(last));
    mudp_fail(m, 502, detail);
}

static void
mudp_resolved(void *arg, int status, const struct vd_addrs *addrs)
{
    struct mudp *m = arg;
    VD_BUG_ON(m->magic != MUDP_MAGIC);
    m->q = NULL;
    char detail[300];
    if (status < 0) {
        int code = vd_txn_dns_failure(detail, sizeof(detail), m->host, status);
        mudp_fail(m, code, detail);
        return;
    }
    m->addrs = *addrs;
    if (m->pending_rules) {
        const struct vd_conf_rule *deny = NULL;
        if (vd_txn_check_addrs(m->t, m->host, m->port, false, &m->addrs, &deny) == VD_ACCESS_DENY) {
            struct vd_txn *t = m->t;
            t->handler = NULL;
            t->handler_data = NULL;
            mudp_free(m);
            vd_txn_deny(t, deny);
            return;
        }
    }
    mudp_connect(m);
}

/* ---- handler ops --------------------------------------------------------------------------- */

static ssize_t
mudp_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    (void)t;
    (void)p;
    (void)end;
    return (ssize_t)len; /* refused before this handler */
}

static void
mudp_writable(struct vd_txn *t)
{
    (void)t;
}

static void
mudp_abort(struct vd_txn *t)
{
    struct mudp *m = t->handler_data;
    VD_BUG_ON(m->magic != MUDP_MAGIC);
    if (m->running) {
        mudp_stats(m, "reset");
    }
    t->handler_data = NULL;
    mudp_free(m);
}

static const struct vd_handler_ops mudp_ops = {
    .name = "connect-udp",
    .on_req_body = mudp_req_body,
    .on_writable = mudp_writable,
    .on_abort = mudp_abort,
};

bool
vd_masque_udp_try(struct vd_txn *t)
{
    char *host = NULL;
    uint16_t port = 0;
    const char *why = NULL;
    int r = template_match(t, t->req.path, &host, &port, &why);
    if (r == 0) {
        return false;
    }
    char detail[200];
    if (r < 0) {
        snprintf(detail, sizeof(detail), "malformed connect-udp request: %s", why);
        vd_txn_respond_error(t, 400, detail, true);
        return true;
    }
    /* RFC 9298 §3.2 (HTTP/1.1): GET, Connection: upgrade, Upgrade: connect-udp, no body. */
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
    /* RFC 9298 §3.4 (HTTP/2): extended CONNECT with :protocol connect-udp. */
    bool h2 = t->req.version >= 20 && t->req.method.len == 7 &&
              memcmp(t->req.method.base, "CONNECT", 7) == 0 && t->req.protocol.len;
    if (h2 && (cp_bad || !t->declared || strcmp(t->declared, "connect-udp") != 0)) {
        vd_txn_respond_error(t, 400,
                             "malformed connect-udp request: Capsule-Protocol must be ?1 when "
                             "present",
                             false);
        return true;
    }
    if (!h2 && (t->req.method.len != 3 || memcmp(t->req.method.base, "GET", 3) != 0 ||
                t->req.version != 11 || !conn_upgrade || !t->declared ||
                strcmp(t->declared, "connect-udp") != 0 || t->req.framing.kind != VD_BODY_NONE ||
                cp_bad)) {
        vd_txn_respond_error(t, 400,
                             "malformed connect-udp request: expected an HTTP/1.1 GET with "
                             "Connection: Upgrade and Upgrade: connect-udp, without a body",
                             true);
        return true;
    }
    const struct vd_conf_masque *mc = &t->conf->masque;
    bool port_ok = false;
    for (size_t i = 0; i < mc->nudp_ports && !port_ok; i++) {
        port_ok = mc->udp_ports[i] == port;
    }
    if (!port_ok) {
        snprintf(detail, sizeof(detail), "connect-udp to port %u is not allowed (masque.udp_ports)",
                 port);
        vd_txn_respond_error(t, 403, detail, true);
        return true;
    }
    struct vd_access_facts f;
    vd_txn_facts(t, host, port, false, &f);
    const struct vd_conf_rule *rule = NULL;
    enum vd_access_verdict v = vd_access_eval(t->conf, &f, &rule);
    if (v == VD_ACCESS_DENY) {
        vd_txn_deny(t, rule);
        return true;
    }
    struct mudp *m = calloc(1, sizeof(*m));
    if (!m) {
        vd_txn_respond_error(t, 503, "out of memory", true);
        return true;
    }
    m->magic = MUDP_MAGIC;
    m->t = t;
    m->host = host;
    m->port = port;
    m->pending_rules = v == VD_ACCESS_PENDING;
    vd_dbuf_init(&m->out, OUT_HIGH + CAPSULE_MAX);
    uv_timer_init(&t->w->loop, &m->timer);
    m->timer.data = m;
    t->handler = &mudp_ops;
    t->handler_data = m;
    int rr = vd_resolve(t->w->resolver, host, &m->addrs, mudp_resolved, m, &m->q);
    if (rr != VD_EAGAIN) {
        mudp_resolved(m, rr, &m->addrs);
    }
    return true;
}
