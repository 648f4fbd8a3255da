/* SPDX-License-Identifier: MIT */
/* IP proxying in HTTP (RFC 9484): a GET with "Upgrade: connect-ip" (HTTP/1.1, §4.2) or an
 * extended CONNECT with :protocol connect-ip (HTTP/2, §4.4) on the URI template
 * (§3, {target} and {ipproto}) becomes a capsule stream. Each session gets its own TUN device
 * and one address per configured family from masque.ip_pool, sent in ADDRESS_ASSIGN (§4.7.1,
 * also in answer to ADDRESS_REQUEST, §4.7.2), and the configured routes narrowed by the
 * request's scope (§4.6) in ROUTE_ADVERTISEMENT (§4.7.3). IP packets travel in DATAGRAM
 * capsules with context ID 0 (§6) and are checked both ways before they are forwarded (§7.2,
 * src/tunnel/ippkt.c); a packet from the client refused for its destination or its size is
 * answered with an ICMP error (§7.2.1, src/tunnel/icmp.c), rate limited per session. The kernel
 * routes them from the TUN device on. The capsule session itself (client I/O, back-pressure,
 * end, lifetime) is masque_common.c's. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "masque-int.h"
#include "vd/access.h"
#include "vd/err.h"
#include "vd/ippkt.h"
#include "vd/tun.h"

#define MIP_MAGIC   0x4d495050u
#define IP_MAX      65535                       /* largest IP packet (IPv4 Total Length) */
#define CAPSULE_MAX (IP_MAX + 1 + 8 + 8)        /* a DATAGRAM capsule carrying it */
#define CTRL_MAX    16384                       /* bytes of an address or route capsule we accept */
#define TUN_BURST   64                          /* packets read from the TUN device per wake-up */
#define ROUTES_MAX  (64 * VD_RESOLVE_MAX_ADDRS) /* config routes x target ranges, bounded */
#define ADDRS_MAX   16                          /* Assigned Addresses in one ADDRESS_ASSIGN */

/* Slots of the address pool, process-wide: slot i holds the i-th address of each pool prefix.
 * Taken and given back with atomic bit operations, so workers never wait on each other. */
static _Atomic uint64_t pool_slots[VD_MASQUE_IP_SESSIONS_MAX / 64];

/* A session; s.host is the decoded target: "*", an address, a prefix "a/len" or a name. */
struct mip {
    struct vd_masque s;        /* first: the shared part frees the session through it */
    struct vd_ip_range target; /* the target as a range when it is an address or a prefix */
    bool target_any, target_name;
    uint8_t ipproto;  /* 0: any (the URI said "*") */
    bool ipproto_set; /* the URI named a protocol number */
    int slot;         /* pool slot, -1 when none */
    struct vd_ip_prefix assigned[2];
    size_t nassigned;
    struct vd_ip_range routes[ROUTES_MAX];
    size_t nroutes;
    char ifname[VD_TUN_NAME_MAX]; /* the TUN device (s.peer) */
    int ifindex;
    uint64_t drop_up, drop_down;
    unsigned logged; /* bit per enum vd_ipcheck (+ 8 for malformed): reasons logged once */
    /* ICMP errors (§7.2.1): the source per family (IPv4, IPv6) and whether there is one */
    uint8_t icmp_src[2][16];
    bool icmp_src_ok[2];
    struct vd_icmp_bucket icmp_bucket;
    uint64_t icmp_sent;
    bool icmp_limit_logged;
};

_Static_assert(offsetof(struct mip, s) == 0, "struct vd_masque must come first");

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
        if (slash || !vd__masque_name_valid(tg)) {
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
    struct vd_iov tv, pv;
    int r = vd__masque_template_split(t->conf->masque.ip_template, "{target}", "{ipproto}",
                                      t->req.path, &tv, &pv);
    if (r <= 0) {
        if (r < 0) {
            *why = "path does not follow the connect-ip template";
        }
        return r;
    }
    /* A '/' may only come encoded (%2F, before a prefix length). */
    char tb[300], pb[8];
    if (tv.len == 0 || vd__masque_pct_decode(tv.base, tv.len, tb, sizeof(tb),
                                             VD_MASQUE_PCT_SLASH | VD_MASQUE_PCT_LOWER) < 0) {
        *why = "invalid target";
        return -1;
    }
    unsigned proto = 0;
    if (pv.len == 0 ||
        vd__masque_pct_decode(pv.base, pv.len, pb, sizeof(pb), VD_MASQUE_PCT_SLASH) < 0 ||
        (strcmp(pb, "*") != 0 && !parse_dec(pb, 3, 255, &proto))) {
        *why = "invalid ipproto";
        return -1;
    }
    m->s.host = vd_arena_dup(&t->arena, tb, strlen(tb));
    if (!m->s.host) {
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

/* ---- the session ---------------------------------------------------------------------------- */

static void
mip_stats(struct vd_masque *s)
{
    struct mip *m = (struct mip *)s;
    s->t->stats.dg_drops = true;
    s->t->stats.dg_drop_up = m->drop_up;
    s->t->stats.dg_drop_down = m->drop_down;
    s->t->stats.dg_icmp = m->icmp_sent;
}

/* The TUN device (and with it its routes) is closing: the pool slot goes back. */
static void
mip_release(struct vd_masque *s)
{
    struct mip *m = (struct mip *)s;
    if (m->slot >= 0) {
        pool_give(m->slot);
        m->slot = -1;
    }
}

/* ---- the pump ------------------------------------------------------------------------------- */

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
    vd_log(VD_LOG_INFO, &m->s.t->log,
           "connect-ip %s: dropped a packet %s (%s); further ones are counted", m->ifname,
           up ? "from the client" : "towards the client", what);
}

/* IP packets from the TUN device become DATAGRAM capsules (context ID 0) towards the client. */
static void
tun_read(struct vd_masque *s)
{
    struct mip *m = (struct mip *)s;
    uint8_t buf[IP_MAX];
    struct vd_ipscope sc = scope_of(m);
    for (int i = 0; i < TUN_BURST && m->s.out.len - m->s.out_off < VD_MASQUE_OUT_HIGH; i++) {
        ssize_t n = read(m->s.peer->fd, buf, sizeof(buf));
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
        if (vd_dbuf_add(&m->s.out, hdr, hl) < 0 || vd_dbuf_add(&m->s.out, buf, (size_t)n) < 0) {
            dropped(m, false, 9, "no room towards the client");
            continue;
        }
        m->s.dg_down++;
        m->s.bytes_down += (uint64_t)n;
        m->s.last_ms = uv_now(m->s.peer->poll.loop);
    }
}

/* Answers the refused packet @p (@len bytes, parsed into @pk) from the client with ICMP error
 * @e (RFC 9484 §7.2.1), unless turned off, forbidden by the ICMP rules (never about an ICMP
 * error, a later fragment, a multicast destination...), without a source address for its
 * family, or over the session's rate. The error goes out as any packet towards the client. */
static void
icmp_reply(struct mip *m, const uint8_t *p, size_t len, const struct vd_ippkt *pk,
           enum vd_icmp_err e)
{
    const struct vd_conf_masque *mc = &m->s.t->conf->masque;
    int fam = pk->ver == 6;
    if (!mc->ip_icmp || !m->icmp_src_ok[fam]) {
        return;
    }
    uint8_t buf[VD_ICMP6_ERR_MAX];
    size_t n = vd_icmp_error_build(buf, sizeof(buf), e, mc->ip_mtu, m->icmp_src[fam], p, len, pk);
    if (n == 0) {
        return;
    }
    if (!vd_icmp_bucket_take(&m->icmp_bucket, mc->ip_icmp_rate, mc->ip_icmp_burst,
                             uv_now(&m->s.t->w->loop))) {
        if (!m->icmp_limit_logged) {
            m->icmp_limit_logged = true;
            vd_log(VD_LOG_INFO, &m->s.t->log,
                   "connect-ip %s: ICMP errors over masque.ip_icmp_rate %u/s (burst %u); further "
                   "ones are not sent",
                   m->ifname, mc->ip_icmp_rate, mc->ip_icmp_burst);
        }
        return;
    }
    uint8_t hdr[24];
    size_t hl = vd_capsule_datagram_hdr(hdr, n);
    if (vd_dbuf_add(&m->s.out, hdr, hl) < 0 || vd_dbuf_add(&m->s.out, buf, n) < 0) {
        return; /* no room towards the client: the error is lost, as on a congested link */
    }
    m->icmp_sent++;
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
        /* §7.2.1 suggests Destination Unreachable for unroutable destinations. A packet whose
         * source the client was not given gets none, although §7.2.1 lists "source address
         * failed ingress/egress policy" as an example: the error would be addressed to that
         * forged source, which is not the client's, so the client would discard it. */
        if (c != VD_IPCHECK_SRC) {
            icmp_reply(m, p, len, &pk, VD_ICMP_ERR_PROHIBITED);
        }
        return;
    }
    uint32_t mtu = m->s.t->conf->masque.ip_mtu;
    if (len > mtu && (pk.ver == 6 || (p[6] & 0x40))) {
        /* Larger than the tunnel's link MTU, and not to be fragmented (IPv6 routers never
         * fragment, RFC 8200 §5; IPv4 with DF): Packet Too Big / fragmentation needed with the
         * MTU (§7.2.1). An IPv4 packet without DF is written as is: the kernel fragments it on
         * its way out, as a router does (RFC 791). */
        char what[64];
        snprintf(what, sizeof(what), "%zu bytes, larger than the MTU %u", len, mtu);
        dropped(m, true, 11, what);
        icmp_reply(m, p, len, &pk, VD_ICMP_ERR_TOO_BIG);
        return;
    }
    ssize_t w = write(m->s.peer->fd, p, len);
    if (w == (ssize_t)len) {
        m->s.dg_up++;
        m->s.bytes_up += len;
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
    return len && vd_dbuf_add(&m->s.out, buf, len) == 0 ? 0 : VD_ENOMEM;
}

static int
send_routes(struct mip *m)
{
    uint8_t buf[ROUTES_MAX * 34 + 16];
    size_t len = vd_capsule_routes_encode(buf, sizeof(buf), m->routes, m->nroutes);
    return len && vd_dbuf_add(&m->s.out, buf, len) == 0 ? 0 : VD_ENOMEM;
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
        vd_log(VD_LOG_INFO, &m->s.t->log,
               "connect-ip %s: malformed capsule 0x%x from the client: %s", m->ifname,
               (unsigned)type, why ? why : "?");
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

/* Address and route capsules are taken whole, as are DATAGRAMs that can hold an IP packet.
 * Unknown types are skipped (RFC 9297 §3.2); a DATAGRAM too large to hold one IP packet, or
 * without a context ID, is dropped the same way. */
static int
mip_classify(struct vd_masque *s, const struct vd_capsule_hdr *h)
{
    struct mip *m = (struct mip *)s;
    bool dgram = h->type == VD_CAPSULE_DATAGRAM;
    if (is_control(h->type) && h->len > CTRL_MAX) {
        vd_log(VD_LOG_INFO, &s->t->log, "connect-ip %s: capsule 0x%x of %llu bytes is too large",
               m->ifname, (unsigned)h->type, (unsigned long long)h->len);
        return VD_EPROTO;
    }
    if ((!dgram && !is_control(h->type)) || (dgram && (h->len > IP_MAX + 8 || h->len == 0))) {
        if (dgram) {
            m->drop_up++;
        }
        return 0;
    }
    return 1;
}

static int
mip_capsule(struct vd_masque *s, uint64_t type, const uint8_t *v, size_t len)
{
    struct mip *m = (struct mip *)s;
    if (type != VD_CAPSULE_DATAGRAM) {
        return control_capsule(m, type, v, len);
    }
    uint64_t ctx;
    size_t cl = vd_varint_decode(v, len, &ctx);
    if (cl == 0 || ctx != 0) {
        m->drop_up++; /* RFC 9484 §6: unknown context IDs are dropped */
    } else {
        packet_up(m, v + cl, len - cl);
    }
    return 0;
}

static const struct vd_masque_ops mip_mops = {
    .magic = MIP_MAGIC,
    .name = "connect-ip",
    .capsule_max = CAPSULE_MAX,
    .classify = mip_classify,
    .capsule = mip_capsule,
    .peer_read = tun_read,
    .stats = mip_stats,
    .release = mip_release,
};

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
    const struct vd_conf_masque *mc = &m->s.t->conf->masque;
    struct vd_ip_range targets[VD_RESOLVE_MAX_ADDRS];
    size_t nt = 0;
    if (m->target_name) {
        for (size_t i = 0; i < m->s.addrs.n && nt < VD_ARRAY_LEN(targets); i++) {
            const struct sockaddr_storage *sa = &m->s.addrs.a[i];
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

/* The source of the ICMP errors of each assigned family (§7.2.1): masque.ip_icmp_source, else
 * the address the host itself would send from towards the client's address (now routed through
 * the device), as the kernel picks it for the errors it generates. A family without one sends
 * no ICMP errors. */
static void
icmp_sources(struct mip *m)
{
    const struct vd_conf_masque *mc = &m->s.t->conf->masque;
    vd_icmp_bucket_init(&m->icmp_bucket, mc->ip_icmp_burst, uv_now(&m->s.t->w->loop));
    for (size_t i = 0; mc->ip_icmp && i < m->nassigned; i++) {
        uint8_t ver = m->assigned[i].ver;
        int fam = ver == 6;
        for (size_t k = 0; k < mc->nip_icmp_source; k++) {
            const struct sockaddr_storage *sa = &mc->ip_icmp_source[k].net;
            if (sa->ss_family == (ver == 4 ? AF_INET : AF_INET6)) {
                memcpy(m->icmp_src[fam],
                       ver == 4 ? (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr
                                : ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr,
                       ver == 4 ? 4 : 16);
                m->icmp_src_ok[fam] = true;
            }
        }
        if (!m->icmp_src_ok[fam]) {
            int r = vd_tun_source_addr(ver, m->assigned[i].addr, m->icmp_src[fam]);
            static const uint8_t lo6[16] = {[15] = 1};
            const uint8_t *a = m->icmp_src[fam];
            if (r == 0 && (ver == 4 ? a[0] == 127 : memcmp(a, lo6, 16) == 0)) {
                r = -EADDRNOTAVAIL; /* loopback only: no address a client could answer */
            }
            m->icmp_src_ok[fam] = r == 0;
            if (r < 0) {
                vd_log(VD_LOG_ERR, &m->s.t->log,
                       "connect-ip %s: no IPv%u address to send ICMP errors from (%s); set "
                       "masque.ip_icmp_source",
                       m->ifname, ver, vd_strerror(r));
            }
        }
    }
}

/* The first capsules of a session: ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT. */
static int
greet(struct vd_masque *s)
{
    struct mip *m = (struct mip *)s;
    return send_assign(m, NULL, 0) < 0 || send_routes(m) < 0 ? VD_ENOMEM : 0;
}

static void
mip_start_session(struct mip *m)
{
    struct vd_txn *t = m->s.t;
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
                 m->s.host);
        vd__masque_fail(&m->s, 403, detail);
        return;
    }
    m->slot = pool_take(cap);
    if (m->slot < 0) {
        vd__masque_fail(&m->s, 503,
                        "connect-ip address pool exhausted (masque.ip_pool, ip_max_sessions)");
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
        icmp_sources(m);
    }
    if (err == 0) {
        struct vd_sock *tun = calloc(1, sizeof(*tun));
        if (!tun || vd_sock_init(&t->w->loop, tun, fd) < 0) {
            free(tun);
            err = VD_ENOMEM;
        } else {
            vd__masque_peer_attach(&m->s, tun);
        }
    }
    if (err < 0) {
        if (fd >= 0 && !m->s.peer) {
            close(fd);
        }
        vd_log(VD_LOG_ERR, &t->log, "connect-ip: TUN device setup failed: %s", vd_strerror(err));
        snprintf(detail, sizeof(detail), "connect-ip: TUN device setup failed: %s",
                 vd_strerror(err));
        vd__masque_fail(&m->s, 503, detail);
        return;
    }

    /* §4.3: HTTP/1.1 101 Switching Protocols; §4.5: HTTP/2 200 to the extended CONNECT. Then
     * the address and the routes (§4.7) go out first. */
    if (!vd__masque_open(&m->s, greet)) {
        return;
    }
    char a[2][INET6_ADDRSTRLEN] = {"-", "-"};
    for (size_t i = 0; i < m->nassigned; i++) {
        inet_ntop(m->assigned[i].ver == 4 ? AF_INET : AF_INET6, m->assigned[i].addr, a[i],
                  sizeof(a[i]));
    }
    vd_log(VD_LOG_INFO, &t->log, "connect-ip %s: device %s, client address %s %s, %zu routes",
           m->s.host, m->ifname, a[0], a[1], m->nroutes);
    vd__masque_run(&m->s);
}

static void
mip_resolved(void *arg, int status, const struct vd_addrs *addrs)
{
    struct mip *m = arg;
    VD_BUG_ON(m->s.magic != MIP_MAGIC);
    if (vd__masque_resolved(&m->s, status, addrs)) {
        mip_start_session(m);
    }
}

static const struct vd_handler_ops mip_ops = {
    .name = "connect-ip",
    .on_req_body = vd__masque_req_body,
    .on_writable = vd__masque_writable,
    .on_abort = vd__masque_abort,
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
    if (vd__masque_request_refused(t, "connect-ip", r < 0 ? why : NULL)) {
        return true;
    }
    const struct vd_conf_masque *mc = &t->conf->masque;
    if (mc->nip_pool == 0) {
        vd_txn_respond_error(t, 403, "connect-ip is not enabled (masque.ip_pool)", true);
        return true;
    }
    if (probe.ipproto_set && ext_header_proto(probe.ipproto)) {
        char detail[200];
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
        dest = probe.s.host;
    }
    bool pending = false;
    struct mip *m = vd__masque_admit(t, dest, 0, sizeof(*m), &pending);
    if (!m) {
        return true;
    }
    *m = probe;
    m->slot = -1;
    m->s.pending_rules = pending;
    snprintf(m->ifname, sizeof(m->ifname), "-");
    vd__masque_init(&m->s, t, &mip_mops, &mip_ops);
    if (!m->target_name) {
        if (m->s.pending_rules && dest) {
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
                vd__masque_deny(&m->s, deny);
                return true;
            }
        }
        mip_start_session(m);
        return true;
    }
    /* §4.1: a DNS name is resolved before the answer. */
    int rr = vd_resolve(t->w->resolver, m->s.host, &m->s.addrs, mip_resolved, m, &m->s.q);
    if (rr != VD_EAGAIN) {
        mip_resolved(m, rr, &m->s.addrs);
    }
    return true;
}
