/* SPDX-License-Identifier: MIT */
/* IP proxying in HTTP (RFC 9484): a GET with "Upgrade: connect-ip" (HTTP/1.1, §4.2) or an
 * extended CONNECT with :protocol connect-ip (HTTP/2, §4.4) on the URI template
 * (§3, {target} and {ipproto}) becomes a capsule stream. Each session gets its own TUN device
 * and one address per configured family from masque.ip_pool, sent in ADDRESS_ASSIGN (§4.7.1,
 * also in answer to ADDRESS_REQUEST, §4.7.2), and the configured routes narrowed by the
 * request's scope (§4.6) in ROUTE_ADVERTISEMENT (§4.7.3). IP packets travel in DATAGRAM
 * capsules with context ID 0 (§6) and are checked both ways before they are forwarded (§7.2,
 * src/tunnel/ippkt.c); the kernel routes them from the TUN device on. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vd/access.h"
#include "vd/capsule.h"
#include "vd/err.h"
#include "vd/ippkt.h"
#include "vd/proxy.h"
#include "vd/sock.h"
#include "vd/tun.h"

#define MIP_MAGIC   0x4d495050u
#define IP_MAX      65535                /* largest IP packet (IPv4 Total Length) */
#define CAPSULE_MAX (IP_MAX + 1 + 8 + 8) /* a DATAGRAM capsule carrying it */
#define CTRL_MAX    16384                /* bytes of an address or route capsule we accept */
#define OUT_HIGH    (256 * 1024)         /* client-bound capsule bytes before TUN reads stop */
#define TUN_BURST   64                   /* packets read from the TUN device per wake-up */
#define ROUTES_MAX  (64 * VD_RESOLVE_MAX_ADDRS) /* config routes x target ranges, bounded */
#define ADDRS_MAX   16                          /* Assigned Addresses in one ADDRESS_ASSIGN */

/* Slots of the address pool, process-wide: slot i holds the i-th address of each pool prefix.
 * Taken and given back with atomic bit operations, so workers never wait on each other. */
static _Atomic uint64_t pool_slots[VD_MASQUE_IP_SESSIONS_MAX / 64];

struct mip {
    uint32_t magic;
    struct vd_txn *t; /* NULL once detached */
    char *host;       /* decoded target: "*", an address, a prefix "a/len" or a name (arena) */
    struct vd_ip_range target; /* the target as a range when it is an address or a prefix */
    bool target_any, target_name;
    uint8_t ipproto;  /* 0: any (the URI said "*") */
    bool ipproto_set; /* the URI named a protocol number */
    bool pending_rules;
    struct vd_resolve_query *q;
    struct vd_addrs addrs;
    int slot; /* pool slot, -1 when none */
    struct vd_ip_prefix assigned[2];
    size_t nassigned;
    struct vd_ip_range routes[ROUTES_MAX];
    size_t nroutes;
    struct vd_sock *tun; /* the TUN device (heap), NULL before */
    char ifname[VD_TUN_NAME_MAX];
    int ifindex;
    struct vd_sock *cs; /* the client connection, after the 101/200 */
    vd_sock_cb saved_cb;
    void *saved_data;
    uv_timer_t timer; /* idle */
    int closes;
    struct vd_buf in;   /* client capsule bytes */
    uint64_t skip;      /* value bytes of an ignored capsule still to discard */
    struct vd_dbuf out; /* capsules towards the client */
    size_t out_off;
    uint64_t last_ms;
    uint64_t bytes_up, bytes_down, dg_up, dg_down, drop_up, drop_down;
    unsigned logged; /* bit per enum vd_ipcheck (+ 8 for malformed): reasons logged once */
    bool running;
};

static void mip_pump(struct mip *m);

/* ---- the address pool ----------------------------------------------------------------------- */

/* Addresses of pool prefix @c left out at its start and its end: an IPv4 prefix shorter than
 * /31 loses its network and broadcast addresses, an IPv6 prefix shorter than /128 its
 * Subnet-Router anycast address (RFC 4291 §2.6.1). */
static unsigned
pool_skip(const struct vd_conf_cidr *c, bool end)
{
    bool v4 = c->net.ss_family == AF_INET;
    unsigned bits = (v4 ? 32 : 128) - c->prefix;
    return v4 ? bits >= 2 : !end && bits >= 1;
}

/* Addresses of pool prefix @c handed out, at most @max. */
static uint64_t
pool_size(const struct vd_conf_cidr *c, uint32_t max)
{
    unsigned bits = (c->net.ss_family == AF_INET ? 32 : 128) - c->prefix;
    uint64_t n = bits >= 32 ? UINT64_MAX : ((uint64_t)1 << bits);
    n -= pool_skip(c, false) + pool_skip(c, true);
    return n < max ? n : max;
}

/* The @slot-th address of pool prefix @c into @out (a /32 or /128). */
static void
pool_addr(const struct vd_conf_cidr *c, uint32_t slot, struct vd_ip_prefix *out)
{
    bool v4 = c->net.ss_family == AF_INET;
    size_t al = v4 ? 4 : 16;
    const uint8_t *base = v4 ? (const uint8_t *)&((const struct sockaddr_in *)&c->net)->sin_addr
                             : ((const struct sockaddr_in6 *)&c->net)->sin6_addr.s6_addr;
    struct vd_ip_range r;
    vd_ip_range_from_prefix(&r, v4 ? 4 : 6, base, c->prefix, 0);
    memset(out, 0, sizeof(*out));
    out->ver = v4 ? 4 : 6;
    out->plen = (uint8_t)(al * 8);
    memcpy(out->addr, r.start, al);
    uint64_t add = (uint64_t)slot + pool_skip(c, false);
    for (size_t i = al; i-- > 0 && add;) {
        uint64_t s = out->addr[i] + (add & 0xff);
        out->addr[i] = (uint8_t)s;
        add = (add >> 8) + (s >> 8);
    }
}

static int
pool_take(uint32_t cap)
{
    for (uint32_t i = 0; i < cap; i++) {
        uint64_t bit = (uint64_t)1 << (i % 64);
        if (atomic_load(&pool_slots[i / 64]) & bit) {
            continue;
        }
        if (!(atomic_fetch_or(&pool_slots[i / 64], bit) & bit)) {
            return (int)i;
        }
    }
    return -1;
}

static void
pool_give(int slot)
{
    uint64_t bit = (uint64_t)1 << (slot % 64);
    atomic_fetch_and(&pool_slots[slot / 64], ~bit);
}

/* ---- the URI template (RFC 9484 §3, §4.6) --------------------------------------------------- */

static int
hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes @n bytes of @s into @out (capacity @cap, NUL-terminated). A '/' may only come
 * encoded (%2F, before a prefix length). Returns the length or -1. */
static int
pct_decode(const uint8_t *s, size_t n, char *out, size_t cap)
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
        if (ch == 0 || o + 1 >= cap) {
            return -1;
        }
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return (int)o;
}

static bool
valid_name(const char *h)
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

/* Parses "1*N DIGIT" of at most @maxd digits into *@v (<= @max). */
static bool
parse_dec(const char *s, size_t maxd, unsigned max, unsigned *v)
{
    size_t n = strlen(s);
    if (n == 0 || n > maxd) {
        return false;
    }
    unsigned x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        x = x * 10 + (unsigned)(s[i] - '0');
    }
    *v = x;
    return x <= max;
}

/* Reads the decoded target (Figure 6): "*", an IPv4 or IPv6 address with an optional prefix
 * length whose host bits are 0, or a DNS name. Returns false when malformed (@why). */
static bool
parse_target(struct mip *m, char *tg, const char **why)
{
    if (strcmp(tg, "*") == 0) {
        m->target_any = true;
        return true;
    }
    char *slash = strchr(tg, '/');
    if (slash) {
        *slash = '\0';
    }
    uint8_t a[16] = {0};
    uint8_t ver = inet_pton(AF_INET, tg, a) == 1 ? 4 : inet_pton(AF_INET6, tg, a) == 1 ? 6 : 0;
    if (ver == 0) {
        if (slash || !valid_name(tg)) {
            *why = "invalid target";
            return false;
        }
        m->target_name = true;
        return true;
    }
    unsigned bits = ver == 4 ? 32 : 128, plen = bits;
    if (slash) {
        *slash = '/';
        if (!parse_dec(slash + 1, ver == 4 ? 2 : 3, bits, &plen)) {
            *why = "invalid prefix length in target";
            return false;
        }
    }
    struct vd_ip_prefix pf = {.ver = ver, .plen = (uint8_t)plen};
    memcpy(pf.addr, a, 16);
    vd_ip_range_from_prefix(&m->target, ver, a, plen, 0);
    /* §4.6: the bits past the prefix length MUST be 0. */
    if (memcmp(m->target.start, a, ver == 4 ? 4 : 16) != 0) {
        *why = "target prefix has bits set past its length";
        return false;
    }
    return true;
}

/* Matches @path against masque.ip_template. Returns 1 with @m's target and ipproto set, 0 when
 * the path is not a connect-ip path, -1 when it is one but malformed (@why). */
static int
template_match(struct vd_txn *t, struct mip *m, const char **why)
{
    struct vd_iov path = t->req.path;
    const char *tpl = t->conf->masque.ip_template;
    const char *h = tpl ? strstr(tpl, "{target}") : NULL;
    const char *p = tpl ? strstr(tpl, "{ipproto}") : NULL;
    if (!h || !p) {
        return 0;
    }
    size_t pre = (size_t)(h - tpl);
    const char *mid = h + strlen("{target}");
    size_t midl = (size_t)(p - mid);
    const char *suf = p + strlen("{ipproto}");
    size_t sufl = strlen(suf);
    if (path.len < pre || memcmp(path.base, tpl, pre) != 0) {
        return 0;
    }
    const uint8_t *s = path.base + pre, *e = path.base + path.len;
    const uint8_t *mm = NULL;
    for (const uint8_t *q = s; q + midl <= e; q++) {
        if (memcmp(q, mid, midl) == 0) {
            mm = q;
            break;
        }
    }
    if (!mm || (size_t)(e - (mm + midl)) < sufl || memcmp(e - sufl, suf, sufl) != 0) {
        *why = "path does not follow the connect-ip template";
        return -1;
    }
    char tb[300], pb[8];
    if (mm == s || pct_decode(s, (size_t)(mm - s), tb, sizeof(tb)) < 0) {
        *why = "invalid target";
        return -1;
    }
    const uint8_t *ps = mm + midl, *pe = e - sufl;
    unsigned proto = 0;
    if (ps >= pe || pct_decode(ps, (size_t)(pe - ps), pb, sizeof(pb)) < 0 ||
        (strcmp(pb, "*") != 0 && !parse_dec(pb, 3, 255, &proto))) {
        *why = "invalid ipproto";
        return -1;
    }
    for (char *c = tb; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') {
            *c = (char)(*c + 32);
        }
    }
    m->host = vd_arena_dup(&t->arena, tb, strlen(tb));
    if (!m->host) {
        *why = "out of memory";
        return -1;
    }
    if (!parse_target(m, tb, why)) {
        return -1;
    }
    m->ipproto = (uint8_t)proto;
    m->ipproto_set = strcmp(pb, "*") != 0;
    return 1;
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void
mip_closed_one(struct mip *m)
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
mip_timer_closed(uv_handle_t *h)
{
    mip_closed_one(h->data);
}

static void
mip_tun_closed(struct vd_sock *s)
{
    struct mip *m = s->data;
    free(s);
    mip_closed_one(m);
}

/* Releases the TUN device (and with it its routes), the pool slot and the handler state; the
 * client socket is handed back to the front (callbacks restored) but not closed here. */
static void
mip_free(struct mip *m)
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
    m->closes = 1 + (m->tun ? 1 : 0);
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->timer, mip_timer_closed);
    if (m->tun) {
        struct vd_sock *s = m->tun;
        m->tun = NULL;
        s->data = m;
        s->on_close = mip_tun_closed;
        vd_sock_close(s);
    }
    if (m->slot >= 0) {
        pool_give(m->slot);
        m->slot = -1;
    }
}

static void
mip_stats(struct mip *m, const char *end)
{
    struct vd_txn *t = m->t;
    t->stats.tunnel = true;
    t->stats.tun_proto = "connect-ip";
    t->stats.tun_up = m->bytes_up;
    t->stats.tun_down = m->bytes_down;
    t->stats.bytes_in += m->bytes_up;
    t->stats.bytes_out += m->bytes_down;
    t->stats.tun_end = end;
    t->stats.dgrams = true;
    t->stats.dg_up = m->dg_up;
    t->stats.dg_down = m->dg_down;
    t->stats.dg_drops = true;
    t->stats.dg_drop_up = m->drop_up;
    t->stats.dg_drop_down = m->drop_down;
}

/* The session is over: log, give the client connection back to the front, which closes it
 * (HTTP/1.1) or ends the stream (HTTP/2: END_STREAM after a clean end, else RST_STREAM). */
static void
mip_end(struct mip *m, const char *end, bool reset)
{
    struct vd_txn *t = m->t;
    mip_stats(m, end);
    if (m->cs && m->cs->fd >= 0 && reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(m->cs->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (m->cs && m->cs->fd < 0 && !reset) {
        (void)m->cs->ops->shutdown(m->cs);
    }
    t->handler = NULL;
    t->handler_data = NULL;
    mip_free(m);
    t->front->tunnel_end(t);
}

static void
mip_fail(struct mip *m, int status, const char *detail)
{
    struct vd_txn *t = m->t;
    vd_log(VD_LOG_INFO, &t->log, "connect-ip %s: %s", m->host, detail);
    t->handler = NULL;
    t->handler_data = NULL;
    mip_free(m);
    /* Close after the error: capsules sent optimistically must never be read as a request. */
    vd_txn_respond_error(t, status, detail, true);
}

/* ---- the pump ------------------------------------------------------------------------------- */

static int
out_flush(struct mip *m)
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

static struct vd_ipscope
scope_of(const struct mip *m)
{
    return (struct vd_ipscope){m->assigned, m->nassigned, m->routes, m->nroutes};
}

/* Counts a dropped packet and logs the first drop of each reason in the session. */
static void
dropped(struct mip *m, bool up, int reason, const char *what)
{
    *(up ? &m->drop_up : &m->drop_down) += 1;
    unsigned bit = 1u << (reason + (up ? 0 : 16));
    if (m->logged & bit) {
        return;
    }
    m->logged |= bit;
    vd_log(VD_LOG_INFO, &m->t->log,
           "connect-ip %s: dropped a packet %s (%s); further ones are counted", m->ifname,
           up ? "from the client" : "towards the client", what);
}

/* IP packets from the TUN device become DATAGRAM capsules (context ID 0) towards the client. */
static void
tun_read(struct mip *m)
{
    uint8_t buf[IP_MAX];
    struct vd_ipscope sc = scope_of(m);
    for (int i = 0; i < TUN_BURST && m->out.len - m->out_off < OUT_HIGH; i++) {
        ssize_t n = read(m->tun->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* EAGAIN, or the device went away: the idle timer ends the session */
        }
        struct vd_ippkt pk;
        const char *why = NULL;
        if (vd_ippkt_parse(buf, (size_t)n, &pk, &why) < 0) {
            dropped(m, false, 8, why);
            continue;
        }
        enum vd_ipcheck c = vd_ippkt_check_down(&pk, &sc);
        if (c != VD_IPCHECK_OK) {
            dropped(m, false, (int)c, vd_ipcheck_name(c));
            continue;
        }
        uint8_t hdr[24];
        size_t hl = vd_capsule_datagram_hdr(hdr, (size_t)n);
        if (vd_dbuf_add(&m->out, hdr, hl) < 0 || vd_dbuf_add(&m->out, buf, (size_t)n) < 0) {
            dropped(m, false, 9, "no room towards the client");
            continue;
        }
        m->dg_down++;
        m->bytes_down += (uint64_t)n;
        m->last_ms = uv_now(m->tun->poll.loop);
    }
}

/* One IP packet from the client: checked (RFC 9484 §7.2), then written to the TUN device. */
static void
packet_up(struct mip *m, const uint8_t *p, size_t len)
{
    struct vd_ippkt pk;
    const char *why = NULL;
    if (vd_ippkt_parse(p, len, &pk, &why) < 0) {
        dropped(m, true, 8, why);
        return;
    }
    struct vd_ipscope sc = scope_of(m);
    enum vd_ipcheck c = vd_ippkt_check_up(&pk, &sc);
    if (c != VD_IPCHECK_OK) {
        char what[96], a[INET6_ADDRSTRLEN];
        const uint8_t *addr = c == VD_IPCHECK_SRC ? pk.src : pk.dst;
        inet_ntop(pk.ver == 4 ? AF_INET : AF_INET6, addr, a, sizeof(a));
        snprintf(what, sizeof(what), "%s %s not allowed, protocol %u", vd_ipcheck_name(c), a,
                 pk.proto);
        dropped(m, true, (int)c, what);
        return;
    }
    ssize_t w = write(m->tun->fd, p, len);
    if (w == (ssize_t)len) {
        m->dg_up++;
        m->bytes_up += len;
    } else {
        dropped(m, true, 10, "the TUN device refused it");
    }
}

/* Queues an ADDRESS_ASSIGN with every assigned address (RFC 9484 §4.7.1: the full list) and,
 * answering @req (@nreq entries), one entry per Requested Address: the assigned address of its
 * family with its Request ID, or the all-zero rejection (§4.7.2). */
static int
send_assign(struct mip *m, const struct vd_ip_prefix *req, size_t nreq)
{
    struct vd_ip_prefix out[ADDRS_MAX];
    size_t n = 0;
    bool answered[2] = {false, false};
    for (size_t i = 0; i < nreq && n < ADDRS_MAX; i++) {
        struct vd_ip_prefix a = {.req_id = req[i].req_id, .ver = req[i].ver};
        a.plen = (uint8_t)(vd_ip_addr_len(a.ver) * 8);
        for (size_t k = 0; k < m->nassigned; k++) {
            if (m->assigned[k].ver == a.ver) {
                a = m->assigned[k];
                a.req_id = req[i].req_id;
                m->assigned[k].req_id = req[i].req_id;
                answered[k] = true;
            }
        }
        out[n++] = a;
    }
    for (size_t k = 0; k < m->nassigned && n < ADDRS_MAX; k++) {
        if (!answered[k]) {
            out[n++] = m->assigned[k];
        }
    }
    uint8_t buf[ADDRS_MAX * (8 + 18) + 16];
    size_t len = vd_capsule_addresses_encode(buf, sizeof(buf), VD_CAPSULE_ADDRESS_ASSIGN, out, n);
    return len && vd_dbuf_add(&m->out, buf, len) == 0 ? 0 : VD_ENOMEM;
}

static int
send_routes(struct mip *m)
{
    uint8_t buf[ROUTES_MAX * 34 + 16];
    size_t len = vd_capsule_routes_encode(buf, sizeof(buf), m->routes, m->nroutes);
    return len && vd_dbuf_add(&m->out, buf, len) == 0 ? 0 : VD_ENOMEM;
}

/* A whole address or route capsule from the client. Returns 0, or VD_EPROTO to abort the
 * stream (RFC 9297 §3.3 for malformed capsules; RFC 9484 §4.7.2, §4.7.3). */
static int
control_capsule(struct mip *m, uint64_t type, const uint8_t *v, size_t len)
{
    const char *why = NULL;
    int n;
    if (type == VD_CAPSULE_ROUTE_ADVERTISEMENT) {
        /* Routes the client offers (network-to-network use) are validated, not installed. */
        struct vd_ip_range r[64];
        n = vd_capsule_routes_parse(v, len, r, VD_ARRAY_LEN(r), &why);
    } else {
        struct vd_ip_prefix a[ADDRS_MAX];
        n = vd_capsule_addresses_parse(type, v, len, a, VD_ARRAY_LEN(a), &why);
        if (n == 0 && type == VD_CAPSULE_ADDRESS_REQUEST) {
            n = VD_EPROTO;
            why = "ADDRESS_REQUEST without a Requested Address";
        }
        if (n > 0 && type == VD_CAPSULE_ADDRESS_REQUEST && send_assign(m, a, (size_t)n) < 0) {
            return VD_ENOMEM;
        }
        /* An ADDRESS_ASSIGN from the client (addresses for the proxy) is validated only. */
    }
    if (n < 0) {
        vd_log(VD_LOG_INFO, &m->t->log, "connect-ip %s: malformed capsule 0x%x from the client: %s",
               m->ifname, (unsigned)type, why ? why : "?");
        return VD_EPROTO;
    }
    return 0;
}

static bool
is_control(uint64_t type)
{
    return type == VD_CAPSULE_ADDRESS_ASSIGN || type == VD_CAPSULE_ADDRESS_REQUEST ||
           type == VD_CAPSULE_ROUTE_ADVERTISEMENT;
}

/* Parses the capsules in the input buffer. Returns 0, or an error that ends the session. */
static int
capsules_consume(struct mip *m)
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
        bool dgram = h.type == VD_CAPSULE_DATAGRAM;
        if (is_control(h.type) && h.len > CTRL_MAX) {
            vd_log(VD_LOG_INFO, &m->t->log,
                   "connect-ip %s: capsule 0x%x of %llu bytes is too large", m->ifname,
                   (unsigned)h.type, (unsigned long long)h.len);
            return VD_EPROTO;
        }
        if ((!dgram && !is_control(h.type)) || (dgram && (h.len > IP_MAX + 8 || h.len == 0))) {
            /* Unknown types are skipped (RFC 9297 §3.2); a DATAGRAM too large to hold one IP
             * packet, or without a context ID, is dropped the same way. */
            if (dgram) {
                m->drop_up++;
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
        if (!dgram) {
            int r = control_capsule(m, h.type, v, (size_t)h.len);
            if (r < 0) {
                return r;
            }
        } else {
            uint64_t ctx;
            size_t cl = vd_varint_decode(v, h.len, &ctx);
            if (cl == 0 || ctx != 0) {
                m->drop_up++; /* RFC 9484 §6: unknown context IDs are dropped */
            } else {
                packet_up(m, v + cl, (size_t)h.len - cl);
            }
        }
        vd_buf_consume(&m->in, (uint32_t)(h.hdr_len + h.len));
    }
}

/* Reads client bytes until the socket is drained. Returns 1 at EOF, 0, or an error. */
static int
client_read(struct mip *m)
{
    for (;;) {
        if (!m->in.base && vd_buf_acquire(&m->in) < 0) {
            return VD_ENOMEM;
        }
        vd_buf_compact(&m->in);
        if (vd_buf_room(&m->in) == 0) {
            return 0;
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
        m->last_ms = uv_now(m->tun->poll.loop);
        int r = capsules_consume(m);
        if (r < 0) {
            return r;
        }
    }
}

static void
mip_pump(struct mip *m)
{
    int r = out_flush(m);
    if (r == 0) {
        r = client_read(m);
    }
    if (r == 1) {
        mip_end(m, "closed", false);
        return;
    }
    if (r < 0) {
        mip_end(m, r == VD_ENOMEM ? "nomem" : r == VD_EPROTO ? "malformed" : "reset", true);
        return;
    }
    if (m->out.len - m->out_off < OUT_HIGH) {
        tun_read(m);
        if (out_flush(m) < 0) {
            mip_end(m, "reset", true);
            return;
        }
    }
    bool backlog = m->out.len > m->out_off;
    vd_sock_arm(m->cs, VD_WANT_READ | (backlog ? VD_WANT_WRITE : 0) | m->cs->want);
    vd_sock_arm(m->tun, backlog && m->out.len - m->out_off >= OUT_HIGH ? 0 : VD_WANT_READ);
}

static void
mip_event(struct vd_sock *s, int ev)
{
    (void)ev;
    struct mip *m = s->data;
    VD_BUG_ON(m->magic != MIP_MAGIC);
    mip_pump(m);
}

static void
mip_idle(uv_timer_t *tm)
{
    struct mip *m = tm->data;
    uint64_t now = uv_now(tm->loop), idle = m->t->conf->masque.idle_timeout;
    if (now - m->last_ms >= idle) {
        mip_end(m, "idle", false);
        return;
    }
    uv_timer_start(&m->timer, mip_idle, m->last_ms + idle - now, 0);
}

/* ---- setting up ----------------------------------------------------------------------------- */

static void
cidr_range(const struct vd_conf_cidr *c, uint8_t proto, struct vd_ip_range *r)
{
    bool v4 = c->net.ss_family == AF_INET;
    const uint8_t *a = v4 ? (const uint8_t *)&((const struct sockaddr_in *)&c->net)->sin_addr
                          : ((const struct sockaddr_in6 *)&c->net)->sin6_addr.s6_addr;
    vd_ip_range_from_prefix(r, v4 ? 4 : 6, a, c->prefix, proto);
}

/* The routes to advertise: masque.ip_routes narrowed to the target (§4.6), each carrying the
 * requested protocol. */
static void
compute_routes(struct mip *m)
{
    const struct vd_conf_masque *mc = &m->t->conf->masque;
    struct vd_ip_range targets[VD_RESOLVE_MAX_ADDRS];
    size_t nt = 0;
    if (m->target_name) {
        for (size_t i = 0; i < m->addrs.n && nt < VD_ARRAY_LEN(targets); i++) {
            const struct sockaddr_storage *sa = &m->addrs.a[i];
            if (sa->ss_family == AF_INET) {
                vd_ip_range_from_prefix(
                    &targets[nt++], 4, (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr,
                    32, 0);
            } else if (sa->ss_family == AF_INET6) {
                vd_ip_range_from_prefix(&targets[nt++], 6,
                                        ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, 128,
                                        0);
            }
        }
    } else if (!m->target_any) {
        targets[nt++] = m->target;
    }
    m->nroutes = 0;
    for (size_t i = 0; i < mc->nip_routes; i++) {
        struct vd_ip_range base;
        cidr_range(&mc->ip_routes[i], m->ipproto, &base);
        if (m->target_any) {
            m->routes[m->nroutes++] = base;
            continue;
        }
        for (size_t k = 0; k < nt && m->nroutes < ROUTES_MAX; k++) {
            struct vd_ip_range r = base;
            if (vd_ip_range_clip(&r, &targets[k])) {
                m->routes[m->nroutes++] = r;
            }
        }
    }
    m->nroutes = vd_ip_ranges_normalize(m->routes, m->nroutes);
}

static void
mip_start_session(struct mip *m)
{
    struct vd_txn *t = m->t;
    const struct vd_conf_masque *mc = &t->conf->masque;
    char detail[300];
    compute_routes(m);
    /* §4.6: addresses only for the families that have routes, so every assigned family is
     * usable and every advertised range reachable from an assigned address. */
    bool fam[2] = {false, false};
    for (size_t i = 0; i < m->nroutes; i++) {
        fam[m->routes[i].ver == 6] = true;
    }
    uint32_t cap = 0;
    for (size_t i = 0; i < mc->nip_pool; i++) {
        bool v6 = mc->ip_pool[i].net.ss_family == AF_INET6;
        uint64_t n = pool_size(&mc->ip_pool[i], mc->ip_max_sessions);
        if (fam[v6] && n > cap) {
            cap = (uint32_t)n;
        }
    }
    if (cap == 0) {
        snprintf(detail, sizeof(detail),
                 "connect-ip to %s: nothing to route (masque.ip_routes and masque.ip_pool have no "
                 "family in common with the target)",
                 m->host);
        mip_fail(m, 403, detail);
        return;
    }
    m->slot = pool_take(cap);
    if (m->slot < 0) {
        mip_fail(m, 503, "connect-ip address pool exhausted (masque.ip_pool, ip_max_sessions)");
        return;
    }
    for (size_t i = 0; i < mc->nip_pool; i++) {
        bool v6 = mc->ip_pool[i].net.ss_family == AF_INET6;
        if (fam[v6] && (uint64_t)m->slot < pool_size(&mc->ip_pool[i], mc->ip_max_sessions)) {
            pool_addr(&mc->ip_pool[i], (uint32_t)m->slot, &m->assigned[m->nassigned++]);
        }
    }
    /* Keep only the routes of the families that got an address. */
    size_t k = 0;
    for (size_t i = 0; i < m->nroutes; i++) {
        for (size_t a = 0; a < m->nassigned; a++) {
            if (m->assigned[a].ver == m->routes[i].ver) {
                m->routes[k++] = m->routes[i];
                break;
            }
        }
    }
    m->nroutes = k;

    int fd = vd_tun_open(mc->tun_name, mc->ip_mtu, m->ifname, &m->ifindex);
    int err = fd < 0 ? fd : 0;
    for (size_t i = 0; err == 0 && i < m->nassigned; i++) {
        err = vd_tun_route_add(m->ifindex, m->assigned[i].ver, m->assigned[i].addr,
                               m->assigned[i].plen);
    }
    if (err == 0) {
        struct vd_sock *s = calloc(1, sizeof(*s));
        if (!s || vd_sock_init(&t->w->loop, s, fd) < 0) {
            free(s);
            err = VD_ENOMEM;
        } else {
            s->data = m;
            s->on_event = mip_event;
            s->on_close = mip_tun_closed;
            m->tun = s;
        }
    }
    if (err < 0) {
        if (fd >= 0 && !m->tun) {
            close(fd);
        }
        vd_log(VD_LOG_ERR, &t->log, "connect-ip: TUN device setup failed: %s", vd_strerror(err));
        snprintf(detail, sizeof(detail), "connect-ip: TUN device setup failed: %s",
                 vd_strerror(err));
        mip_fail(m, 503, detail);
        return;
    }

    struct vd_hdr hdrs[3] = {
        {VD_IOV_LIT("Capsule-Protocol"), VD_IOV_LIT("?1")},
        {VD_IOV_LIT("Connection"), VD_IOV_LIT("Upgrade")},
        {VD_IOV_LIT("Upgrade"), VD_IOV_LIT("connect-ip")},
    };
    /* §4.3: HTTP/1.1 101 Switching Protocols; §4.5: HTTP/2 200 to the extended CONNECT. */
    bool h1 = t->req.version < 20;
    struct vd_resp resp = {
        .status = h1 ? 101 : 200, .hdrs = hdrs, .nhdrs = h1 ? 3 : 1, .length = -1, .tunnel = true};
    struct vd_tunnel_end client;
    if (t->front->send_head(t, &resp) < 0 || t->front->tunnel(t, &client) < 0) {
        t->handler = NULL;
        mip_free(m);
        t->front->abort(t);
        return;
    }
    /* Capsules the client sent optimistically right after its request. */
    if (vd_buf_acquire(&m->in) < 0 ||
        (client.early.len > m->in.cap && vd_buf_grow(&m->in, (uint32_t)client.early.len) < 0) ||
        (client.unsent.len && vd_dbuf_add(&m->out, client.unsent.base, client.unsent.len) < 0) ||
        send_assign(m, NULL, 0) < 0 || send_routes(m) < 0) {
        t->front->tunnel(t, NULL);
        mip_end(m, "nomem", true);
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
    m->cs->on_event = mip_event;
    m->cs->data = m;
    m->running = true;
    m->last_ms = uv_now(&t->w->loop);
    uv_timer_start(&m->timer, mip_idle, t->conf->masque.idle_timeout, 0);
    char a[2][INET6_ADDRSTRLEN] = {"-", "-"};
    for (size_t i = 0; i < m->nassigned; i++) {
        inet_ntop(m->assigned[i].ver == 4 ? AF_INET : AF_INET6, m->assigned[i].addr, a[i],
                  sizeof(a[i]));
    }
    vd_log(VD_LOG_INFO, &t->log, "connect-ip %s: device %s, client address %s %s, %zu routes",
           m->host, m->ifname, a[0], a[1], m->nroutes);
    int r = capsules_consume(m);
    if (r < 0) {
        mip_end(m, r == VD_EPROTO ? "malformed" : "nomem", true);
        return;
    }
    mip_pump(m);
}

static void
mip_resolved(void *arg, int status, const struct vd_addrs *addrs)
{
    struct mip *m = arg;
    VD_BUG_ON(m->magic != MIP_MAGIC);
    m->q = NULL;
    char detail[300];
    if (status < 0) {
        int code = vd_txn_dns_failure(detail, sizeof(detail), m->host, status);
        mip_fail(m, code, detail);
        return;
    }
    m->addrs = *addrs;
    if (m->pending_rules) {
        const struct vd_conf_rule *deny = NULL;
        if (vd_txn_check_addrs(m->t, m->host, 0, false, &m->addrs, &deny) == VD_ACCESS_DENY) {
            struct vd_txn *t = m->t;
            t->handler = NULL;
            t->handler_data = NULL;
            mip_free(m);
            vd_txn_deny(t, deny);
            return;
        }
    }
    mip_start_session(m);
}

/* ---- handler ops ---------------------------------------------------------------------------- */

static ssize_t
mip_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    (void)t;
    (void)p;
    (void)end;
    return (ssize_t)len; /* refused before this handler */
}

static void
mip_writable(struct vd_txn *t)
{
    (void)t;
}

static void
mip_abort(struct vd_txn *t)
{
    struct mip *m = t->handler_data;
    VD_BUG_ON(m->magic != MIP_MAGIC);
    if (m->running) {
        mip_stats(m, "reset");
    }
    t->handler_data = NULL;
    mip_free(m);
}

static const struct vd_handler_ops mip_ops = {
    .name = "connect-ip",
    .on_req_body = mip_req_body,
    .on_writable = mip_writable,
    .on_abort = mip_abort,
};

/* RFC 9484 §4.8: a scope to an IPv6 extension header number may be refused. */
static bool
ext_header_proto(unsigned p)
{
    return p == 0 || p == 43 || p == 44 || p == 51 || p == 60 || p == 135 || p == 139 || p == 140 ||
           p == 253 || p == 254;
}

bool
vd_masque_ip_try(struct vd_txn *t)
{
    struct mip probe;
    memset(&probe, 0, sizeof(probe));
    const char *why = NULL;
    int r = template_match(t, &probe, &why);
    if (r == 0) {
        return false;
    }
    char detail[200];
    if (r < 0) {
        snprintf(detail, sizeof(detail), "malformed connect-ip request: %s", why);
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
    /* §4.4 (HTTP/2): extended CONNECT with :protocol connect-ip. */
    bool h2 = t->req.version >= 20 && t->req.method.len == 7 &&
              memcmp(t->req.method.base, "CONNECT", 7) == 0 && t->req.protocol.len;
    if (h2 && (cp_bad || !t->declared || strcmp(t->declared, "connect-ip") != 0)) {
        vd_txn_respond_error(t, 400,
                             "malformed connect-ip request: Capsule-Protocol must be ?1 when "
                             "present",
                             false);
        return true;
    }
    /* §4.2 (HTTP/1.1): GET, Connection: Upgrade, Upgrade: connect-ip, no content (§4). */
    if (!h2 &&
        (t->req.method.len != 3 || memcmp(t->req.method.base, "GET", 3) != 0 ||
         t->req.version != 11 || !conn_upgrade || !t->declared ||
         strcmp(t->declared, "connect-ip") != 0 || t->req.framing.kind != VD_BODY_NONE || cp_bad)) {
        vd_txn_respond_error(t, 400,
                             "malformed connect-ip request: expected an HTTP/1.1 GET with "
                             "Connection: Upgrade and Upgrade: connect-ip, without a body",
                             true);
        return true;
    }
    const struct vd_conf_masque *mc = &t->conf->masque;
    if (mc->nip_pool == 0) {
        vd_txn_respond_error(t, 403, "connect-ip is not enabled (masque.ip_pool)", true);
        return true;
    }
    if (probe.ipproto_set && ext_header_proto(probe.ipproto)) {
        snprintf(detail, sizeof(detail),
                 "connect-ip cannot be scoped to protocol %u, an IPv6 extension header",
                 probe.ipproto);
        vd_txn_respond_error(t, 403, detail, true);
        return true;
    }
    /* Rules see the target when it names one host: a name or a single address. A wildcard or a
     * prefix is bounded by masque.ip_routes instead. */
    const char *dest = NULL;
    if (probe.target_name ||
        (!probe.target_any && memcmp(probe.target.start, probe.target.end, 16) == 0)) {
        dest = probe.host;
    }
    struct vd_access_facts f;
    vd_txn_facts(t, dest, 0, false, &f);
    const struct vd_conf_rule *rule = NULL;
    enum vd_access_verdict v = vd_access_eval(t->conf, &f, &rule);
    if (v == VD_ACCESS_DENY) {
        vd_txn_deny(t, rule);
        return true;
    }
    struct mip *m = calloc(1, sizeof(*m));
    if (!m) {
        vd_txn_respond_error(t, 503, "out of memory", true);
        return true;
    }
    *m = probe;
    m->magic = MIP_MAGIC;
    m->t = t;
    m->slot = -1;
    m->pending_rules = v == VD_ACCESS_PENDING;
    snprintf(m->ifname, sizeof(m->ifname), "-");
    vd_dbuf_init(&m->out, OUT_HIGH + CAPSULE_MAX);
    uv_timer_init(&t->w->loop, &m->timer);
    m->timer.data = m;
    t->handler = &mip_ops;
    t->handler_data = m;
    if (!m->target_name) {
        if (m->pending_rules && dest) {
            /* A single address: the rules that test it decide now. */
            const struct vd_conf_rule *deny = NULL;
            struct vd_addrs one = {.n = 1};
            struct sockaddr_storage *sa = &one.a[0];
            if (m->target.ver == 4) {
                sa->ss_family = AF_INET;
                memcpy(&((struct sockaddr_in *)sa)->sin_addr, m->target.start, 4);
            } else {
                sa->ss_family = AF_INET6;
                memcpy(((struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, m->target.start, 16);
            }
            if (vd_txn_check_addrs(t, dest, 0, false, &one, &deny) == VD_ACCESS_DENY) {
                t->handler = NULL;
                t->handler_data = NULL;
                mip_free(m);
                vd_txn_deny(t, deny);
                return true;
            }
        }
        mip_start_session(m);
        return true;
    }
    /* §4.1: a DNS name is resolved before the answer. */
    int rr = vd_resolve(t->w->resolver, m->host, &m->addrs, mip_resolved, m, &m->q);
    if (rr != VD_EAGAIN) {
        mip_resolved(m, rr, &m->addrs);
    }
    return true;
}
