/* SPDX-License-Identifier: MIT */
/* UDP proxying in HTTP (RFC 9298) over HTTP/1.1: a GET to the connect-udp URI template with
 * "Upgrade: connect-udp" becomes, after a 101, a capsule stream (RFC 9297 §3.2) on the client
 * connection; DATAGRAM capsules with context ID 0 carry UDP payloads to and from a connected UDP
 * socket. Unknown capsule types are skipped, unknown context IDs dropped (RFC 9298 §4, §5).
 * The capsule session itself (client I/O, back-pressure, end, lifetime) is masque_common.c's. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "masque-int.h"
#include "vd/err.h"

#define MUDP_MAGIC  0x4d554450u
#define UDP_MAX     65527                 /* largest UDP payload over IPv4 */
#define CAPSULE_MAX (UDP_MAX + 1 + 8 + 8) /* a DATAGRAM capsule carrying it: ctx + header */
#define UDP_BURST   64                    /* datagrams read per wake-up */

struct mudp {
    struct vd_masque s; /* first: the shared part frees the session through it */
    uint64_t dg_dropped;
};

_Static_assert(offsetof(struct mudp, s) == 0, "struct vd_masque must come first");

/* ---- the URI template (RFC 9298 §2) --------------------------------------------------------- */

static bool
valid_host(const char *h)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1 ||
           vd__masque_name_valid(h);
}

/* Matches @path against the configured template. Returns 1 with the host (arena, lowercase)
 * and port, 0 when the path is not a connect-udp path, -1 when it is one but malformed (@why). */
static int
template_match(struct vd_txn *t, struct vd_iov path, char **host, uint16_t *port, const char **why)
{
    struct vd_iov hv, pv;
    int r = vd__masque_template_split(t->conf->masque.udp_template, "{target_host}",
                                      "{target_port}", path, &hv, &pv);
    if (r <= 0) {
        if (r < 0) {
            *why = "path does not follow the connect-udp template";
        }
        return r;
    }
    char hb[256];
    if (hv.len == 0 ||
        vd__masque_pct_decode(hv.base, hv.len, hb, sizeof(hb), VD_MASQUE_PCT_LOWER) < 0 ||
        !valid_host(hb)) {
        *why = "invalid target_host";
        return -1;
    }
    uint32_t v = 0;
    if (pv.len == 0 || pv.len > 5) {
        *why = "invalid target_port";
        return -1;
    }
    for (size_t i = 0; i < pv.len; i++) {
        if (pv.base[i] < '0' || pv.base[i] > '9') {
            *why = "invalid target_port";
            return -1;
        }
        v = v * 10 + (uint32_t)(pv.base[i] - '0');
    }
    if (v == 0 || v > 65535) {
        *why = "invalid target_port";
        return -1;
    }
    *host = vd_arena_dup(&t->arena, hb, strlen(hb));
    *port = (uint16_t)v;
    return *host ? 1 : -1;
}

/* ---- datagrams ----------------------------------------------------------------------------- */

/* UDP datagrams from the target become DATAGRAM capsules towards the client. */
static void
udp_read(struct vd_masque *s)
{
    struct mudp *m = (struct mudp *)s;
    uint8_t buf[UDP_MAX + 1];
    for (int i = 0; i < UDP_BURST && s->out.len - s->out_off < VD_MASQUE_OUT_HIGH; i++) {
        ssize_t n = recv(s->peer->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            /* ICMP errors (port unreachable) on a connected UDP socket: the flow goes on, as
             * UDP would without a proxy. */
            continue;
        }
        uint8_t hdr[24];
        size_t hl = vd_capsule_datagram_hdr(hdr, (size_t)n);
        if (vd_dbuf_add(&s->out, hdr, hl) < 0 || vd_dbuf_add(&s->out, buf, (size_t)n) < 0) {
            m->dg_dropped++;
            continue;
        }
        s->dg_down++;
        s->bytes_down += (uint64_t)n;
        s->last_ms = uv_now(s->peer->poll.loop);
    }
}

/* Only DATAGRAM capsules are taken whole. Unknown types are skipped (RFC 9297 §3.2); a DATAGRAM
 * too large to be one UDP payload, or without a context ID, is dropped the same way. */
static int
udp_classify(struct vd_masque *s, const struct vd_capsule_hdr *h)
{
    if (h->type != VD_CAPSULE_DATAGRAM) {
        return 0;
    }
    if (h->len > UDP_MAX + 8 || h->len == 0) {
        ((struct mudp *)s)->dg_dropped++;
        return 0;
    }
    return 1;
}

/* A DATAGRAM capsule from the client: one send on the connected UDP socket. */
static int
udp_capsule(struct vd_masque *s, uint64_t type, const uint8_t *v, size_t len)
{
    (void)type;
    struct mudp *m = (struct mudp *)s;
    uint64_t ctx;
    size_t cl = vd_varint_decode(v, len, &ctx);
    if (cl == 0) {
        m->dg_dropped++; /* the context ID does not fit inside the capsule */
    } else if (ctx != 0) {
        m->dg_dropped++; /* RFC 9298 §4: unknown context IDs are dropped */
    } else {
        size_t pl = len - cl;
        ssize_t w = send(s->peer->fd, v + cl, pl, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w == (ssize_t)pl) {
            s->dg_up++;
            s->bytes_up += pl;
        } else {
            m->dg_dropped++; /* a full socket buffer drops, as UDP does */
        }
    }
    return 0;
}

static const struct vd_masque_ops mudp_mops = {
    .magic = MUDP_MAGIC,
    .name = "connect-udp",
    .capsule_max = CAPSULE_MAX,
    .classify = udp_classify,
    .capsule = udp_capsule,
    .peer_read = udp_read,
};

/* ---- setting up ---------------------------------------------------------------------------- */

static void
mudp_connect(struct mudp *m)
{
    struct vd_masque *s = &m->s;
    struct vd_txn *t = s->t;
    char detail[300];
    int last = VD_ENOTFOUND;
    for (size_t i = 0; i < s->addrs.n; i++) {
        struct sockaddr_storage sa = s->addrs.a[i];
        socklen_t sl;
        if (sa.ss_family == AF_INET) {
            ((struct sockaddr_in *)&sa)->sin_port = htons(s->port);
            sl = sizeof(struct sockaddr_in);
        } else {
            ((struct sockaddr_in6 *)&sa)->sin6_port = htons(s->port);
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
        struct vd_sock *u = calloc(1, sizeof(*u));
        if (!u || vd_sock_init(&t->w->loop, u, fd) < 0) {
            free(u);
            close(fd);
            last = VD_ENOMEM;
            continue;
        }
        vd__masque_peer_attach(s, u);
        t->stats.upstream_used = true;
        if (vd__masque_open(s, NULL)) {
            vd__masque_run(s);
        }
        return;
    }
    snprintf(detail, sizeof(detail), "UDP socket to %s port %u failed: %s", s->host, s->port,
             vd_strerror(last));
    vd__masque_fail(s, 502, detail);
}

static void
mudp_resolved(void *arg, int status, const struct vd_addrs *addrs)
{
    struct mudp *m = arg;
    VD_BUG_ON(m->s.magic != MUDP_MAGIC);
    if (vd__masque_resolved(&m->s, status, addrs)) {
        mudp_connect(m);
    }
}

static const struct vd_handler_ops mudp_ops = {
    .name = "connect-udp",
    .on_req_body = vd__masque_req_body,
    .on_writable = vd__masque_writable,
    .on_abort = vd__masque_abort,
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
    if (vd__masque_request_refused(t, "connect-udp", r < 0 ? why : NULL)) {
        return true;
    }
    const struct vd_conf_masque *mc = &t->conf->masque;
    bool port_ok = false;
    for (size_t i = 0; i < mc->nudp_ports && !port_ok; i++) {
        port_ok = mc->udp_ports[i] == port;
    }
    if (!port_ok) {
        char detail[200];
        snprintf(detail, sizeof(detail), "connect-udp to port %u is not allowed (masque.udp_ports)",
                 port);
        vd_txn_respond_error(t, 403, detail, true);
        return true;
    }
    bool pending = false;
    struct mudp *m = vd__masque_admit(t, host, port, sizeof(*m), &pending);
    if (!m) {
        return true;
    }
    struct vd_masque *s = &m->s;
    s->host = host;
    s->port = port;
    s->pending_rules = pending;
    vd__masque_init(s, t, &mudp_mops, &mudp_ops);
    int rr = vd_resolve(t->w->resolver, host, &s->addrs, mudp_resolved, m, &s->q);
    if (rr != VD_EAGAIN) {
        mudp_resolved(m, rr, &s->addrs);
    }
    return true;
}
