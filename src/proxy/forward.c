/* SPDX-License-Identifier: MIT */
/* Forward handler: sends a transaction's request to an origin over HTTP/1.1 (plain or TLS) and
 * streams the response back through the front. Hop-by-hop fields are removed in both directions
 * and bodies re-framed (RFC 9110 §7.6.1), Via is added (§7.6.3), Max-Forwards decremented
 * (§7.6.2). Upstream connections are pooled per worker and per origin; a request that fails on a
 * reused connection before any response byte is retried once when it is idempotent and has no
 * body (RFC 9110 §9.2.2, RFC 9112 §9.3.1). */
#include "vd/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache-int.h"
#include "vd/access.h"
#include "vd/err.h"
#include "vd/h1.h"
#include "vd/ltimer.h"
#include "vd/mcache.h"
#include "vd/proxy.h"
#include "vd/sock.h"
#include "vd/tls.h"

#define UPC_MAGIC  0x55504331u
#define FWD_MAGIC  0x46574431u
#define UP_OUT_MAX (256 * 1024) /* request bytes queued towards an origin */

struct fwd;

/* The idle connections of one pool key ("host:port:tls:sni"), so that taking and returning a
 * connection costs one hash lookup however many origins and idle connections there are. */
struct pkey {
    struct pkey *next; /* hash chain */
    uint64_t h;
    size_t n;           /* idle connections */
    struct vd_list lru; /* most recent first */
    char key[];
};

#define PKEY_BUCKETS 256

struct upc {
    uint32_t magic;
    struct vd_sock sock;
    struct vd_ltimer timer; /* connect, first byte, read stall or pool idle (upc_timer_set) */
    struct vd_list link;    /* in w->idle_upstreams while idle */
    struct vd_list klink;   /* in its pkey's list while idle */
    struct pkey *pk;        /* while idle */
    struct vd_worker *w;
    struct fwd *f;     /* current user, NULL while idle */
    char key[320];     /* host:port:tls:sni */
    uint64_t key_hash; /* pkey_hash(key), for returning to the pool */
    bool closing;      /* upc_close ran: the socket's close callback frees @u */
    bool connected;
    bool used_before; /* served a request already: a failure may be a stale keep-alive */
    bool idle;
    struct vd_buf in;
    struct vd_dbuf out; /* request head, framing and body bytes waiting to be written */
    size_t out_off;
};

enum fwd_state {
    F_RESOLVING,
    F_CONNECTING,
    F_PHANDSHAKE, /* TLS handshake with an https:// upstream.parent */
    F_PARENT,     /* https:// through upstream.parent: its answer to our CONNECT is awaited */
    F_HANDSHAKE,  /* TLS handshake with the origin (inside the parent's tunnel, if any) */
    F_SENDING,    /* head (and body) being sent; response may already arrive */
    F_BODY,       /* response body streaming */
    F_TUNNEL,     /* 101: both connections belong to a tunnel */
    F_DONE,
};

struct fwd {
    uint32_t magic;
    struct vd_txn *t;
    struct upc *u;
    const struct vd_conf_route *route;
    int srv;               /* server of a route with several (vd_lb_*), -1 otherwise */
    uint64_t tried;        /* servers of the group that failed to connect */
    struct vd_conf *lbref; /* keeps route->lb alive with @srv set */
    char *host;            /* arena, or the configuration's (a group's server, the parent) */
    bool via_parent;       /* upstream.parent: the request goes to it in absolute form */
    bool parent_tunnel;    /* https:// through the parent: CONNECT, then TLS to the origin */
    bool parent_tls;       /* the parent is https://: TLS to it first (fwd_use_parent) */
    const char *tls_name;  /* the origin's name for certificate checks when f->host is not it */
    uint16_t tport;        /* the origin's port (parent_tunnel) */
    bool parent_later;     /* resolve the origin first (address rules), then the parent */
    bool preached;         /* connected to the parent (TLS done): no other parent from here */
    int pidx;              /* the parent in use (fwd_use_parent) */
    uint32_t ptried;       /* parents that could not be reached (bit i) */
    uint16_t port;
    bool tls;
    char *sni;
    uint64_t key_hash; /* pkey_hash(key) */
    enum fwd_state state;
    struct vd_resolve_query *q;
    size_t ai;
    struct vd_dbuf head; /* serialized request head, kept for a retry */
    bool retried;
    bool req_done;    /* the whole request body has been queued */
    bool req_chunked; /* re-chunking the request body */
    bool head_method;
    bool resp_head_sent;
    bool got_bytes;    /* any response byte arrived */
    bool up_keepalive; /* the origin allows reuse */
    bool paused_by_front;
    bool splicing;        /* the body goes origin socket -> client with front->send_splice */
    bool no_splice;       /* the front refused it for this response: copy (send_body) to the end */
    bool upgrade;         /* Upgrade request forwarded with Connection: upgrade (RFC 9110 §7.8) */
    bool ws_h2;           /* RFC 8441 extended CONNECT :protocol websocket, sent as an Upgrade */
    char ws_key[32];      /* the Sec-WebSocket-Key viaduct generated for it (base64, NUL) */
    struct vd_tunnel *tn; /* after a 101 */
    struct vd_framing rf; /* response framing */
    uint64_t remain;
    struct vd_chunked chk;
    struct vd_dbuf trailers;
    const uint8_t *pend_p;
    size_t pend_n;
    uint64_t t0;              /* uv_hrtime at upstream start */
    struct vd_cache_xfer *cx; /* shared-cache state (src/proxy/cache.c), NULL when none */
    unsigned holds; /* callers on the stack that may see the front free us (re-entrancy) */
    bool dead;      /* freed while held: the last holder frees the memory */
    /* Last, and not zeroed by fwd_new (1.3 KiB of the struct's 1.7): addresses are read only
     * below addrs.n, the key only as the string it holds. */
    struct vd_addrs addrs;
    char key[320]; /* pool key "host:port:tls:sni", formatted once */
};

/* A zeroed fwd, but for the address slots and the key (an empty string). */
static struct fwd *
fwd_new(void)
{
    struct fwd *f = vd_mc_alloc(sizeof(*f));
    if (f) {
        memset(f, 0, offsetof(struct fwd, addrs) + offsetof(struct vd_addrs, a));
        f->key[0] = '\0';
    }
    return f;
}

static const struct vd_handler_ops fwd_ops;
static void fo_writable(struct vd_txn *t);
static void upc_release(struct upc *u, bool reusable);
static void upc_arm(struct upc *u);
static void fwd_connect_next(struct fwd *f);
static bool fwd_send(struct fwd *f);
static void fwd_read(struct fwd *f);
static void fwd_resolve(struct fwd *f);
static void fwd_switch(struct fwd *f, const struct vd_h1_resp_head *h, size_t headlen);

/* ---- small helpers ------------------------------------------------------------------------- */

/* Fields not forwarded as received (RFC 9110 §7.6.1): the hop-by-hop ones, and Content-Length,
 * which is regenerated from the framing. Dispatched on the length so that most fields cost one
 * switch and no compare: this runs for every field of every message. */
static bool
is_hop_by_hop(struct vd_iov name)
{
    switch (name.len) {
    case 2:
        return vd_hdr_name_is(name, "te");
    case 7:
        return vd_hdr_name_is(name, "upgrade");
    case 10:
        return vd_hdr_name_is(name, "connection") || vd_hdr_name_is(name, "keep-alive");
    case 14:
        return vd_hdr_name_is(name, "content-length");
    case 16:
        return vd_hdr_name_is(name, "proxy-connection");
    case 17:
        return vd_hdr_name_is(name, "transfer-encoding");
    case 18:
        return vd_hdr_name_is(name, "proxy-authenticate");
    case 19:
        return vd_hdr_name_is(name, "proxy-authorization");
    default:
        return false;
    }
}

#define CONN_NAMES_MAX 16

/* The field names listed by a message's Connection fields (RFC 9110 §7.6.1), collected once per
 * message instead of once per field. A message naming more than CONN_NAMES_MAX (never seen in
 * practice; "keep-alive" or "close" is the usual one) falls back to scanning its fields. The
 * same pass notes the persistence options (RFC 9112 §9.3), from every field. */
struct conn_names {
    const struct vd_hdr *all;
    size_t nall;
    size_t n;
    uint64_t lens; /* bit len_bit(l) set for each length l of a listed name (all on overflow) */
    bool overflow;
    bool close, keep_alive; /* "close" / "keep-alive" in any Connection field */
    struct vd_iov item[CONN_NAMES_MAX];
};

/* The bit standing for names of @len bytes in a length mask: one per length up to 62, the
 * last for every longer one. */
static inline uint64_t
len_bit(size_t len)
{
    return (uint64_t)1 << (len < 63 ? len : 63);
}

/* The lengths of the names is_hop_by_hop knows. */
#define HOP_LENS                                                                                   \
    (len_bit(2) | len_bit(7) | len_bit(10) | len_bit(14) | len_bit(16) | len_bit(17) |             \
     len_bit(18) | len_bit(19))

static void
conn_names_init(struct conn_names *cn, const struct vd_hdr *all, size_t n)
{
    cn->all = all;
    cn->nall = n;
    cn->n = 0;
    cn->lens = 0;
    cn->overflow = false;
    cn->close = false;
    cn->keep_alive = false;
    for (size_t i = 0; i < n; i++) {
        if (all[i].name.len != 10 || !vd_hdr_name_is(all[i].name, "connection")) {
            continue;
        }
        struct vd_iov rest = all[i].value, item;
        while (vd_list_next(&rest, &item)) {
            cn->close = cn->close || vd_hdr_name_is(item, "close");
            cn->keep_alive = cn->keep_alive || vd_hdr_name_is(item, "keep-alive");
            if (cn->n < CONN_NAMES_MAX) {
                cn->item[cn->n++] = item;
                cn->lens |= len_bit(item.len);
            } else {
                cn->overflow = true;
                cn->lens = ~(uint64_t)0;
            }
        }
    }
}

static bool
iov_caseeq(struct vd_iov a, struct vd_iov b)
{
    return a.len == b.len && strncasecmp((const char *)a.base, (const char *)b.base, a.len) == 0;
}

/* True when a Connection field of the message names @name. */
static bool
conn_names_has(const struct conn_names *cn, struct vd_iov name)
{
    if (!cn->overflow) {
        for (size_t i = 0; i < cn->n; i++) {
            if (iov_caseeq(cn->item[i], name)) {
                return true;
            }
        }
        return false;
    }
    for (size_t i = 0; i < cn->nall; i++) {
        if (!vd_hdr_name_is(cn->all[i].name, "connection")) {
            continue;
        }
        struct vd_iov rest = cn->all[i].value, item;
        while (vd_list_next(&rest, &item)) {
            if (iov_caseeq(item, name)) {
                return true;
            }
        }
    }
    return false;
}

/* True when field @name of the message whose Connection names are @cn travels end to end. A
 * name of a length no hop-by-hop name and no listed name has (most of them) needs no compare. */
static inline bool
end_to_end(const struct conn_names *cn, struct vd_iov name)
{
    if (!((HOP_LENS | cn->lens) & len_bit(name.len))) {
        return true;
    }
    return !is_hop_by_hop(name) && !(cn->n && conn_names_has(cn, name));
}

static bool
method_idempotent(struct vd_iov m)
{
    static const char *const ok[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i < VD_ARRAY_LEN(ok); i++) {
        size_t l = strlen(ok[i]);
        if (m.len == l && memcmp(m.base, ok[i], l) == 0) {
            return true;
        }
    }
    return false;
}

/* Writes the protocol version of a message (major * 10 + minor) as Via carries it (RFC 9110
 * §7.6.3): "1.1", "1.0", "2". @out has room for 3 bytes; returns the length. */
static size_t
via_version(char *out, int version)
{
    size_t n = 0;
    out[n++] = (char)('0' + version / 10 % 10);
    if (version < 20) {
        out[n++] = '.';
        out[n++] = (char)('0' + version % 10);
    }
    return n;
}

/* Appends @len bytes of @p to @out at *@at, as far as @cap allows (one byte kept for the NUL). */
static void
key_add(char *out, size_t cap, size_t *at, const char *p, size_t len)
{
    size_t k = VD_MIN(len, cap - 1 - *at);
    memcpy(out + *at, p, k);
    *at += k;
}

/* The upstream pool key "host:port:tls:sni" into @out (NUL-terminated, truncated to @cap like
 * snprintf would), without the cost of a format string per request. */
static void
pool_key_format(char *out, size_t cap, const char *host, uint16_t port, bool tls, const char *sni)
{
    char num[24];
    size_t at = 0, nl = vd_u64_dec(num, port);
    num[nl++] = ':';
    num[nl++] = tls ? '1' : '0';
    num[nl++] = ':';
    key_add(out, cap, &at, host, strlen(host));
    key_add(out, cap, &at, ":", 1);
    key_add(out, cap, &at, num, nl);
    if (sni) {
        key_add(out, cap, &at, sni, strlen(sni));
    }
    out[at] = '\0';
}

/* ---- request head -------------------------------------------------------------------------- */

static int
add_field(struct vd_dbuf *d, struct vd_iov name, struct vd_iov value)
{
    int r = vd_dbuf_add(d, name.base, name.len);
    r = r ? r : vd_dbuf_add(d, ": ", 2);
    r = r ? r : vd_dbuf_add(d, value.base, value.len);
    return r ? r : vd_dbuf_add(d, "\r\n", 2);
}

static int
build_request_head(struct fwd *f)
{
    struct vd_txn *t = f->t;
    struct vd_req *req = &t->req;
    const struct vd_conf *conf = t->conf;
    struct vd_dbuf *d = &f->head;
    bool mf_method = (req->method.len == 7 && memcmp(req->method.base, "OPTIONS", 7) == 0) ||
                     (req->method.len == 5 && memcmp(req->method.base, "TRACE", 5) == 0);
    /* RFC 8441 §5: an extended CONNECT for websocket is an HTTP/1.1 GET with Upgrade. */
    int r = f->ws_h2 ? vd_dbuf_add(d, "GET", 3) : vd_dbuf_add(d, req->method.base, req->method.len);
    r = r ? r : vd_dbuf_add(d, " ", 1);
    if (f->via_parent) {
        /* RFC 9112 §3.2.2: absolute-form towards a proxy. */
        r = r ? r : vd_dbuf_add(d, "http://", 7);
        r = r ? r : vd_dbuf_add(d, req->authority.base, req->authority.len);
    }
    r = r ? r : vd_dbuf_add(d, req->path.base, req->path.len);
    r = r ? r : vd_dbuf_add(d, " HTTP/1.1\r\nHost: ", 17);
    if (f->route && f->route->host_header) {
        r = r ? r : vd_dbuf_add(d, f->route->host_header, strlen(f->route->host_header));
    } else {
        r = r ? r : vd_dbuf_add(d, req->authority.base, req->authority.len);
    }
    r = r ? r : vd_dbuf_add(d, "\r\n", 2);
    if (f->via_parent && conf->upstream.parent_auth) {
        /* viaduct's own credentials for the parent; the client's never travel (§11.7.2). */
        r = r ? r : vd_dbuf_add(d, "Proxy-Authorization: ", 21);
        r = r ? r : vd_dbuf_add(d, conf->upstream.parent_auth, strlen(conf->upstream.parent_auth));
        r = r ? r : vd_dbuf_add(d, "\r\n", 2);
    }
    /* Fields named by Connection are hop-by-hop too. */
    struct conn_names cn;
    conn_names_init(&cn, req->hdrs, req->nhdrs);
    struct vd_dbuf xff; /* every X-Forwarded-For line, in order, as one list */
    vd_dbuf_init(&xff, conf->limits.header_block);
    for (size_t i = 0; i < req->nhdrs && r == 0; i++) {
        struct vd_iov name = req->hdrs[i].name;
        if (!end_to_end(&cn, name) || vd_hdr_name_is(name, "host") ||
            vd__cache_skip_req_field(f->cx, name)) {
            continue;
        }
        /* A key or version sent on HTTP/2 is not the handshake of this hop (RFC 8441 §5). */
        if (f->ws_h2 && (vd_hdr_name_is(name, "sec-websocket-key") ||
                         vd_hdr_name_is(name, "sec-websocket-version"))) {
            continue;
        }
        if (vd_hdr_name_is(name, "max-forwards") && mf_method) {
            /* RFC 9110 §7.6.2: decrement (0 was answered by the proxy). */
            unsigned long v = strtoul((const char *)req->hdrs[i].value.base, NULL, 10);
            r = vd_dbuf_addf(d, "Max-Forwards: %lu\r\n", v ? v - 1 : 0);
            continue;
        }
        if (f->route && f->route->forwarded != VD_FWD_NONE &&
            vd_hdr_name_is(name, "x-forwarded-for")) {
            /* Re-emitted as one list with the client appended (RFC 9110 §5.3). */
            r = xff.len ? vd_dbuf_add(&xff, ", ", 2) : 0;
            r = r ? r : vd_dbuf_add(&xff, req->hdrs[i].value.base, req->hdrs[i].value.len);
            continue;
        }
        if (f->route && (f->route->forwarded == VD_FWD_XFF || f->route->forwarded == VD_FWD_BOTH) &&
            vd_hdr_name_is(name, "x-forwarded-proto")) {
            continue;
        }
        r = add_field(d, name, req->hdrs[i].value);
    }
    if (r == 0 && f->route && f->route->forwarded != VD_FWD_NONE) {
        char ip[VD_SOCKADDR_TEXT];
        bool v6 = t->client->sa_family == AF_INET6;
        vd_sockaddr_text(t->client, false, ip, sizeof(ip));
        const char *proto = t->client_tls ? "https" : "http";
        if (f->route->forwarded == VD_FWD_XFF || f->route->forwarded == VD_FWD_BOTH) {
            if (xff.len) {
                r = vd_dbuf_addf(d, "X-Forwarded-For: %s, %s\r\n", xff.p, ip);
            } else {
                r = vd_dbuf_addf(d, "X-Forwarded-For: %s\r\n", ip);
            }
            r = r ? r : vd_dbuf_addf(d, "X-Forwarded-Proto: %s\r\n", proto);
        } else if (xff.len) {
            r = vd_dbuf_addf(d, "X-Forwarded-For: %s\r\n", xff.p);
        }
        if (r == 0 &&
            (f->route->forwarded == VD_FWD_RFC7239 || f->route->forwarded == VD_FWD_BOTH)) {
            /* RFC 7239 §4: an IPv6 address is quoted and bracketed; a new element is appended
             * as its own field line, which joins the list. */
            if (v6) {
                r = vd_dbuf_addf(d, "Forwarded: for=\"[%s]\";proto=%s", ip, proto);
            } else {
                r = vd_dbuf_addf(d, "Forwarded: for=%s;proto=%s", ip, proto);
            }
            if (r == 0 && req->authority.len) {
                r = vd_dbuf_addf(d, ";host=\"%.*s\"", (int)req->authority.len,
                                 (const char *)req->authority.base);
            }
            r = r ? r : vd_dbuf_add(d, "\r\n", 2);
        }
    }
    r = r ? r : vd__cache_req_fields(f->cx, d);
    if (r == 0 && conf->via_enabled && conf->via) {
        /* RFC 9110 §7.6.3: the received protocol's version ("1.1", "2"). */
        char ver[3];
        size_t vl = via_version(ver, req->version);
        r = vd_dbuf_add(d, "Via: ", 5);
        r = r ? r : vd_dbuf_add(d, ver, vl);
        r = r ? r : vd_dbuf_add(d, " ", 1);
        r = r ? r : vd_dbuf_add(d, conf->via, strlen(conf->via));
        r = r ? r : vd_dbuf_add(d, "\r\n", 2);
    }
    if (r == 0 && f->ws_h2) {
        r = vd_dbuf_addf(d,
                         "Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: "
                         "13\r\nSec-WebSocket-Key: %s\r\n",
                         f->ws_key);
    } else if (r == 0 && f->upgrade) {
        /* The one exception to hop-by-hop removal: an allowed Upgrade travels with its
         * Connection option, so the next hop can switch too. */
        r = vd_dbuf_add(d, "Connection: upgrade\r\n", 21);
        for (size_t i = 0; i < req->nhdrs && r == 0; i++) {
            if (vd_hdr_name_is(req->hdrs[i].name, "upgrade")) {
                r = add_field(d, VD_IOV_LIT("Upgrade"), req->hdrs[i].value);
            }
        }
    }
    if (r == 0) {
        switch (req->framing.kind) {
        case VD_BODY_LENGTH:
            r = vd_dbuf_addf(d, "Content-Length: %llu\r\n",
                             (unsigned long long)req->framing.length);
            break;
        case VD_BODY_CHUNKED:
            f->req_chunked = true;
            r = vd_dbuf_add(d, "Transfer-Encoding: chunked\r\n", 28);
            break;
        default:
            break;
        }
    }
    vd_dbuf_free(&xff);
    return r ? r : vd_dbuf_add(d, "\r\n", 2);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void
fwd_free(struct fwd *f)
{
    if (f->q) {
        vd_resolve_cancel(f->q);
        f->q = NULL;
    }
    if (f->holds) {
        /* A caller further up the stack still uses @f: it frees it when it lets go. */
        f->dead = true;
        return;
    }
    vd_dbuf_free(&f->head);
    vd_dbuf_free(&f->trailers);
    vd__cache_end(f->cx);
    if (f->srv >= 0) {
        vd_lb_end(f->route, f->srv);
        vd_conf_unref(f->lbref);
    }
    f->magic = 0;
    vd_mc_free(f);
}

/* Resumes the client's request body, which can re-enter this handler (and even end the
 * exchange). Returns true when @f is still alive and attached. */
static bool
fwd_resume_body(struct fwd *f)
{
    f->holds++;
    vd_txn_req_body_resume(f->t);
    f->holds--;
    if (f->dead) {
        fwd_free(f);
        return false;
    }
    return f->t != NULL;
}

/* Detaches @f from its transaction and frees it. */
static void
fwd_detach(struct fwd *f)
{
    if (f->t) {
        f->t->handler = NULL;
        f->t->handler_data = NULL;
        f->t = NULL;
    }
    fwd_free(f);
}

/* The client is gone, but collapsed requests wait for this response (src/proxy/cache_collapse.c):
 * the transfer goes on under a transaction without a client. Returns true when it does; the
 * caller then lets the old transaction go and calls fo_writable on the new one. */
static bool
fwd_adopt(struct fwd *f)
{
    struct vd_txn *t = f->t;
    struct vd_txn *nt = f->state == F_TUNNEL || f->state == F_DONE
                            ? NULL
                            : vd__cache_adopt(f->cx, t, &f->host, &f->sni);
    if (!nt) {
        return false;
    }
    t->handler = NULL;
    t->handler_data = NULL;
    nt->handler = &fwd_ops;
    nt->handler_data = f;
    f->t = nt;
    return true;
}

static void fwd_use_server(struct fwd *f, int i);
static void fwd_use_parent(struct fwd *f, int i);
static int fwd_tls_start(struct fwd *f, bool to_parent);
static void fwd_setup(struct fwd *f);
static void fwd_parent_ask(struct fwd *f);
static int fwd_parent_read(struct fwd *f);
static bool fwd_use_pooled(struct fwd *f);

/* Starts @f over towards where it now points (another server or parent): the connection that
 * failed is closed, then a pooled one is taken or the name resolved. */
static void
fwd_restart(struct fwd *f)
{
    if (f->u) {
        struct upc *u = f->u;
        f->u = NULL;
        u->f = NULL;
        upc_release(u, false);
    }
    if (!f->t->access_pending && fwd_use_pooled(f)) {
        return;
    }
    fwd_resolve(f);
}

/* A server of a group could not be reached (nothing was sent to it): marks it down and starts
 * over with another server. Returns false when every server has been tried. */
static bool
fwd_next_server(struct fwd *f, const char *detail)
{
    vd_lb_failed(f->route, f->srv);
    f->tried |= 1ull << f->srv;
    int i = vd_lb_pick(f->route, f->t->client, f->tried);
    if (i < 0) {
        return false;
    }
    vd_log(VD_LOG_WARN, &f->t->log, "%s [upstream %s:%u]; trying %s", detail, f->host, f->port,
           f->route->servers[i].url);
    vd_lb_end(f->route, f->srv);
    fwd_use_server(f, i);
    fwd_restart(f);
    return true;
}

/* The parent in use could not be reached (nothing was sent to it): marks it down and starts
 * over with the next one. Returns false when every parent has been tried. */
static bool
fwd_next_parent(struct fwd *f, const char *detail)
{
    const struct vd_conf *conf = f->t->conf;
    int i = vd_parent_next(conf, f->pidx, &f->ptried);
    if (i < 0) {
        return false;
    }
    vd_log(VD_LOG_WARN, &f->t->log, "%s [parent %s]; trying the parent proxy %s", detail,
           conf->upstream.parents[f->pidx].url, conf->upstream.parents[i].url);
    fwd_use_parent(f, i);
    fwd_restart(f);
    return true;
}

/* Fails the exchange: an error response when nothing was sent yet, else an abort. Releases the
 * upstream connection (closed) and the forward state. A server of a group that could not be
 * reached hands the exchange to another server instead. */
static void
fwd_fail(struct fwd *f, int status, const char *detail)
{
    struct vd_txn *t = f->t;
    if (f->srv >= 0 && f->state < F_SENDING && status != 499 && fwd_next_server(f, detail)) {
        return;
    }
    if ((f->via_parent || f->parent_tunnel) && !f->parent_later && !f->preached &&
        f->state < F_SENDING && status != 499 && fwd_next_parent(f, detail)) {
        return;
    }
    if (status == 499 && fwd_adopt(f)) {
        t->front->abort(t);
        fo_writable(f->t); /* may complete and free @f */
        return;
    }
    if (f->u) {
        struct upc *u = f->u;
        f->u = NULL;
        u->f = NULL;
        upc_release(u, false);
    }
    bool started = f->resp_head_sent;
    /* RFC 5861 §4: a stored response being revalidated may stand in for the error. */
    char cs[96];
    struct vd_cache_entry *stale = NULL;
    if (!started && status != 499 && (stale = vd__cache_on_error(f->cx, status))) {
        snprintf(cs, sizeof(cs), "%s", vd__cache_served(f->cx));
    }
    /* A client that goes away mid-response is routine (a browser cancelling, a benchmark
     * stopping): info; anything on the upstream side is a warning. */
    vd_log(status == 499 ? VD_LOG_INFO : VD_LOG_WARN, &t->log, "%s [upstream %s:%u]%s", detail,
           f->host, f->port, stale ? "; the stored response answers (stale-if-error)" : "");
    fwd_detach(f);
    if (stale) {
        vd__cache_serve(t, stale, cs);
    } else if (started || status == 499) {
        t->front->abort(t); /* 499: the client is gone; there is no one to answer */
    } else {
        /* The client connection survives an upstream failure unless its request body is
         * still arriving (the front decides that). */
        vd_txn_respond_error(t, status, detail, false);
    }
}

static void
fwd_fail_err(struct fwd *f, int err, const char *what)
{
    char detail[256];
    int status = err == VD_ETIMEDOUT || err == -ETIMEDOUT ? 504 : 502;
    if (err == -ECONNREFUSED) {
        snprintf(detail, sizeof(detail), "upstream connection refused by %s port %u", f->host,
                 f->port);
    } else {
        snprintf(detail, sizeof(detail), "%s %s port %u: %s", what, f->host, f->port,
                 vd_strerror(err));
    }
    fwd_fail(f, status, detail);
}

/* ---- upstream connections ------------------------------------------------------------------ */

static void
upc_sock_closed(struct vd_sock *s)
{
    struct upc *u = s->data;
    vd_buf_release(&u->in);
    vd_dbuf_free(&u->out);
    u->magic = 0xdeadbeef;
    free(u);
}

static uint64_t
pkey_hash(const char *k)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *k; k++) {
        h = (h ^ (uint8_t)*k) * 0x100000001b3ull;
    }
    return h;
}

/* The pkey of @key, whose pkey_hash() is @h; created when @create. NULL when absent (or out of
 * memory). */
static struct pkey *
pkey_get(struct vd_worker *w, const char *key, uint64_t h, bool create)
{
    struct pkey **b = w->pool_keys;
    if (!b) {
        if (!create || !(b = calloc(PKEY_BUCKETS, sizeof(*b)))) {
            return NULL;
        }
        w->pool_keys = b;
    }
    struct pkey **slot = &b[h % PKEY_BUCKETS];
    for (struct pkey *p = *slot; p; p = p->next) {
        if (p->h == h && strcmp(p->key, key) == 0) {
            return p;
        }
    }
    if (!create) {
        return NULL;
    }
    size_t kl = strlen(key) + 1;
    struct pkey *p = malloc(sizeof(*p) + kl);
    if (!p) {
        return NULL;
    }
    p->h = h;
    p->n = 0;
    vd_list_init(&p->lru);
    memcpy(p->key, key, kl);
    p->next = *slot;
    *slot = p;
    return p;
}

/* Takes @u out of the idle lists. */
static void
upc_unidle(struct upc *u)
{
    struct pkey *p = u->pk;
    vd_list_remove(&u->link);
    vd_list_remove(&u->klink);
    u->idle = false;
    u->pk = NULL;
    if (--p->n == 0) {
        struct pkey **slot = &((struct pkey **)u->w->pool_keys)[p->h % PKEY_BUCKETS];
        while (*slot != p) {
            slot = &(*slot)->next;
        }
        *slot = p->next;
        free(p);
    }
}

static void upc_timeout(struct vd_ltimer *tm);

/* Sets the connection's one timeout (connect, first byte, read stall, or idle in the pool) to
 * @ms from now, 0 for none; lazily, as the client side does (vd/ltimer.h). */
static void
upc_timer_set(struct upc *u, uint64_t ms)
{
    vd_ltimer_set(&u->timer, ms);
}

static void
upc_close(struct upc *u)
{
    if (u->closing) {
        return;
    }
    if (u->idle) {
        upc_unidle(u);
    }
    u->f = NULL;
    u->closing = true;
    vd_ltimer_release(&u->timer);
    vd_sock_close(&u->sock);
}

static void
upc_release(struct upc *u, bool reusable)
{
    struct vd_worker *w = u->w;
    u->f = NULL;
    /* Bytes left inside TLS are bytes the origin sent past the response, as u->in.len. */
    if (!reusable || w->draining || u->in.len || u->out.len > u->out_off ||
        vd_sock_pending(&u->sock)) {
        upc_close(u);
        return;
    }
    struct pkey *p = pkey_get(w, u->key, u->key_hash, true);
    if (!p || p->n >= w->conf->upstream.pool_idle_max) {
        if (p && p->n == 0) {
            /* pool_idle_max 0: the entry was only just made */
            struct pkey **slot = &((struct pkey **)w->pool_keys)[p->h % PKEY_BUCKETS];
            *slot = p->next;
            free(p);
        }
        upc_close(u);
        return;
    }
    vd_buf_release(&u->in);
    vd_dbuf_reset(&u->out);
    u->out_off = 0;
    u->used_before = true;
    u->idle = true;
    u->pk = p;
    p->n++;
    vd_list_insert_head(&p->lru, &u->klink);
    vd_list_insert_head(&w->idle_upstreams, &u->link);
    upc_timer_set(u, w->conf->upstream.pool_idle_timeout);
    /* Watch for the origin closing the idle connection. */
    vd_sock_arm(&u->sock, VD_WANT_READ);
}

void
vd_pool_close_all(struct vd_worker *w)
{
    while (!vd_list_empty(&w->idle_upstreams)) {
        struct upc *u = VD_CONTAINER_OF(w->idle_upstreams.next, struct upc, link);
        upc_close(u);
    }
    free(w->pool_keys); /* every chain is empty now */
    w->pool_keys = NULL;
}

static struct upc *
pool_take(struct vd_worker *w, const char *key, uint64_t h)
{
    struct pkey *p = pkey_get(w, key, h, false);
    if (!p) {
        return NULL;
    }
    struct upc *u = VD_CONTAINER_OF(p->lru.next, struct upc, klink);
    upc_unidle(u);
    upc_timer_set(u, 0);
    return u;
}

static void
upc_arm(struct upc *u)
{
    struct fwd *f = u->f;
    int ev = 0;
    if (!f) {
        vd_sock_arm(&u->sock, VD_WANT_READ);
        return;
    }
    if (!u->connected) {
        ev = VD_WANT_WRITE;
    } else if (f->state == F_PARENT) {
        /* A TLS parent may want the socket writable to go on reading (s->want). */
        ev = u->sock.want ? u->sock.want : VD_WANT_READ;
    } else if (f->state == F_PHANDSHAKE || f->state == F_HANDSHAKE) {
        ev = u->sock.want ? u->sock.want : VD_WANT_WRITE;
    } else {
        if (u->out.len > u->out_off) {
            ev |= VD_WANT_WRITE;
        }
        if (!f->paused_by_front && !f->pend_n) {
            ev |= VD_WANT_READ;
        }
        if (u->sock.want && ev && !(u->sock.want & ev)) {
            ev |= u->sock.want;
        }
    }
    vd_sock_arm(&u->sock, ev);
}

static void
upc_timeout(struct vd_ltimer *tm)
{
    struct upc *u = VD_CONTAINER_OF(tm, struct upc, timer);
    struct fwd *f = u->f;
    if (!f) {
        upc_close(u);
        return;
    }
    char detail[160];
    if (f->state == F_PARENT) {
        fwd_fail(f, 504, "the parent proxy did not answer CONNECT in time");
    } else if (f->state == F_PHANDSHAKE) {
        snprintf(detail, sizeof(detail), "TLS handshake with the parent proxy %s port %u timed out",
                 f->host, f->port);
        fwd_fail(f, 504, detail);
    } else if (f->state == F_CONNECTING || f->state == F_HANDSHAKE) {
        snprintf(detail, sizeof(detail), "upstream connect to %s port %u timed out", f->host,
                 f->port);
        fwd_fail(f, 504, detail);
    } else if (!f->resp_head_sent) {
        snprintf(detail, sizeof(detail), "upstream did not answer within %llu ms",
                 (unsigned long long)f->t->conf->timeouts.upstream_first_byte);
        fwd_fail(f, 504, detail);
    } else {
        fwd_fail(f, 504, "upstream stopped sending the response body");
    }
}

/* Writes queued request bytes. Returns 0 or an error. */
static int
upc_flush(struct upc *u)
{
    while (u->out.len > u->out_off) {
        struct iovec iov = {.iov_base = u->out.p + u->out_off, .iov_len = u->out.len - u->out_off};
        ssize_t n = vd_sock_writev(&u->sock, &iov, 1);
        if (n == VD_EAGAIN) {
            return 0;
        }
        if (n < 0) {
            return (int)n;
        }
        u->out_off += (size_t)n;
    }
    vd_dbuf_reset(&u->out);
    u->out_off = 0;
    return 0;
}

/* ---- response ------------------------------------------------------------------------------ */

/* The body length the response announces for a GET (what HEAD and 304 responses carry in
 * Content-Length without a body, RFC 9110 §8.6), parsed by the same strict rules as framing;
 * -1 when there is none or it is not a plain length. */
static int64_t
announced_length(const struct vd_h1_resp_head *h)
{
    struct vd_framing gf;
    const char *why;
    if (vd_http_resp_framing(h->hdrs, h->nhdrs, 200, false, false, &gf, &why) < 0 ||
        gf.kind != VD_BODY_LENGTH) {
        return -1;
    }
    return (int64_t)gf.length;
}

/* Completes the exchange: the upstream goes back to the pool (or is closed), then the front
 * ends the response. */
static void
fwd_complete(struct fwd *f)
{
    struct vd_txn *t = f->t;
    struct upc *u = f->u;
    f->state = F_DONE;
    f->u = NULL;
    if (u) {
        u->f = NULL;
        upc_release(u, f->up_keepalive && f->req_done);
    }
    /* Trailers must outlive send_end, which copies them; the forward state goes after. */
    t->handler = NULL;
    t->handler_data = NULL;
    f->t = NULL;
    vd__cache_on_complete(f->cx);
    t->front->send_end(t, f->rf.kind == VD_BODY_CHUNKED ? &f->trailers : NULL);
    fwd_free(f);
}

/* The client is slower than the origin: stop reading the origin, and stop its read timer too,
 * since the stall is the client's (the front's send timeout watches that side). */
static void
fwd_pause(struct fwd *f)
{
    f->paused_by_front = true;
    upc_timer_set(f->u, 0);
    upc_arm(f->u);
}

/* Whether the rest of the body may go by splice(2): both connections plain TCP (the front
 * refuses TLS and HTTP/2 itself), Content-Length framing with at least upstream.splice_min
 * bytes to come, or close-delimited, and no cache copy or collapsed readers that need the
 * bytes. Called only when the input buffer is empty (bytes already read go by send_body);
 * once splicing, the exchange keeps splicing. */
static bool
fwd_splice_ok(struct fwd *f)
{
    if (f->splicing) {
        return true;
    }
    const struct vd_conf_upstream *uc = &f->t->conf->upstream;
    if (f->no_splice || !uc->splice || !f->t->front->send_splice ||
        !vd_sock_is_plain(&f->u->sock) || vd__cache_wants_body(f->cx)) {
        return false;
    }
    if (f->rf.kind == VD_BODY_LENGTH ? f->remain < uc->splice_min : f->rf.kind != VD_BODY_CLOSE) {
        return false;
    }
    VD_TRACE(&f->t->log, VD_SUB_PROXY, "response body by splice: %llu bytes to come",
             (unsigned long long)f->remain);
    f->splicing = true;
    return true;
}

/* Moves response body from the origin socket to the client through the front's pipe; the
 * counterpart of fwd_read + fwd_pump_body, with the same outcomes (timeouts, pause, errors).
 * Returns as fwd_pump_body. */
static bool
fwd_splice(struct fwd *f)
{
    struct upc *u = f->u;
    struct vd_txn *t = f->t;
    bool length = f->rf.kind == VD_BODY_LENGTH;
    if (length && f->remain == 0) {
        fwd_complete(f);
        return false;
    }
    ssize_t k = VD_ENOTIMPL;
    int src = 0;
    if (t->front->send_splice) { /* a transaction adopted for collapsed readers has none */
        /* Close-delimited: any count will do, the front takes at most its share per call. */
        size_t want = (size_t)VD_MIN(length ? f->remain : UINT64_MAX, (uint64_t)1 << 30);
        k = t->front->send_splice(t, u->sock.fd, want, &src);
    }
    if (k == VD_ENOTIMPL) {
        f->splicing = false;
        f->no_splice = true;
        upc_arm(u);
        return true;
    }
    if (k < 0) {
        fwd_fail(f, 499, "client write failed");
        return false;
    }
    if (k > 0) {
        f->got_bytes = true;
        if (length) {
            f->remain -= (uint64_t)k;
        }
        upc_timer_set(u, t->conf->timeouts.upstream_read);
    }
    if (length && f->remain == 0) {
        /* Exactly Content-Length bytes left the origin socket: it may go back to the pool
         * while the last of them still drain from the pipe to the client. */
        fwd_complete(f);
        return false;
    }
    if (src == 0) {
        fwd_pause(f); /* the client is full: on_writable resumes */
        return true;
    }
    if (src == VD_EAGAIN) {
        upc_arm(u);
        return true;
    }
    if (src == VD_ECLOSED && !length) {
        f->up_keepalive = false;
        fwd_complete(f);
        return false;
    }
    /* As fwd_read: an end or error of the origin socket before the whole body. */
    VD_TRACE(&t->log, VD_SUB_PROXY, "splice from upstream: %s", vd_strerror(src));
    fwd_fail(f, 502, "upstream closed the connection in the middle of the response");
    return false;
}

/* Pushes buffered response body to the front. Returns true while the exchange goes on (paused
 * or waiting for input), false when it completed or failed: @f and its transaction are gone. */
static bool
fwd_pump_body(struct fwd *f)
{
    struct upc *u = f->u;
    struct vd_txn *t = f->t;
    for (;;) {
        if (f->pend_n) {
            ssize_t k = t->front->send_body(t, f->pend_p, f->pend_n);
            if (k < 0) {
                fwd_fail(f, 499, "client write failed");
                return false;
            }
            vd__cache_on_body(f->cx, f->pend_p, (size_t)k);
            f->pend_p += k;
            f->pend_n -= (size_t)k;
            if (f->pend_n) {
                fwd_pause(f);
                return true;
            }
            continue;
        }
        switch (f->rf.kind) {
        case VD_BODY_NONE:
            fwd_complete(f);
            return false;
        case VD_BODY_LENGTH: {
            if (f->remain == 0) {
                fwd_complete(f);
                return false;
            }
            size_t avail = (size_t)VD_MIN((uint64_t)u->in.len, f->remain);
            if (avail == 0 && fwd_splice_ok(f)) {
                return fwd_splice(f);
            }
            if (avail == 0) {
                upc_arm(u);
                return true;
            }
            ssize_t k = t->front->send_body(t, vd_buf_data(&u->in), avail);
            if (k < 0) {
                fwd_fail(f, 499, "client write failed");
                return false;
            }
            vd__cache_on_body(f->cx, vd_buf_data(&u->in), (size_t)k);
            vd_buf_consume(&u->in, (uint32_t)k);
            f->remain -= (uint64_t)k;
            if ((size_t)k < avail) {
                fwd_pause(f);
                return true;
            }
            continue;
        }
        case VD_BODY_CHUNKED: {
            if (f->chk.done) {
                fwd_complete(f);
                return false;
            }
            if (u->in.len == 0) {
                upc_arm(u);
                return true;
            }
            struct vd_iov data;
            const char *why = NULL;
            int r = vd_chunked_decode(&f->chk, vd_buf_data(&u->in), u->in.len, &data, &why);
            if (r < 0) {
                char detail[160];
                snprintf(detail, sizeof(detail), "malformed chunked response from upstream: %s",
                         why ? why : "invalid");
                fwd_fail(f, 502, detail);
                return false;
            }
            vd_buf_consume(&u->in, (uint32_t)r);
            if (data.len) {
                f->pend_p = data.base;
                f->pend_n = data.len;
            } else if (r == 0 && !f->chk.done) {
                upc_arm(u);
                return true;
            }
            continue;
        }
        case VD_BODY_CLOSE:
            if (u->in.len == 0 && fwd_splice_ok(f)) {
                return fwd_splice(f);
            }
            if (u->in.len == 0) {
                upc_arm(u);
                return true;
            }
            {
                ssize_t k = t->front->send_body(t, vd_buf_data(&u->in), u->in.len);
                if (k < 0) {
                    fwd_fail(f, 499, "client write failed");
                    return false;
                }
                vd__cache_on_body(f->cx, vd_buf_data(&u->in), (size_t)k);
                vd_buf_consume(&u->in, (uint32_t)k);
                if (u->in.len) {
                    fwd_pause(f);
                    return true;
                }
            }
            continue;
        }
    }
}

/* The response head @h as the client gets it: its end-to-end fields (@cn: its Connection names),
 * Date and Via added. The fields stay views into the upstream input buffer, which holds them
 * until its next read: the front copies what it sends within send_head. A cache transfer keeps
 * them longer (until the entry is stored), so then they are copied into the arena. */
static int
filter_response_head(struct fwd *f, const struct vd_h1_resp_head *h, const struct conn_names *cn,
                     struct vd_resp *resp)
{
    struct vd_txn *t = f->t;
    const struct vd_conf *conf = t->conf;
    struct vd_hdr *out = vd_arena_alloc(&t->arena, sizeof(*out) * (h->nhdrs + 5));
    if (!out) {
        return VD_ENOMEM;
    }
    size_t n = 0;
    bool has_date = false;
    for (size_t i = 0; i < h->nhdrs; i++) {
        struct vd_iov name = h->hdrs[i].name;
        if (end_to_end(cn, name)) {
            out[n++] = h->hdrs[i];
            has_date = has_date || vd_hdr_name_is(name, "date");
        }
    }
    if (f->cx) {
        /* Names and values (each NUL-terminated) in one block. */
        size_t bytes = 0;
        for (size_t i = 0; i < n; i++) {
            bytes += out[i].name.len + out[i].value.len + 2;
        }
        char *p = vd_arena_alloc(&t->arena, bytes ? bytes : 1);
        if (!p) {
            return VD_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            struct vd_iov *fl[2] = {&out[i].name, &out[i].value};
            for (int k = 0; k < 2; k++) {
                memcpy(p, fl[k]->base, fl[k]->len);
                p[fl[k]->len] = '\0';
                fl[k]->base = (const uint8_t *)p;
                p += fl[k]->len + 1;
            }
        }
    }
    if (!has_date) {
        /* RFC 9110 §6.6.1: a recipient with a clock adds Date when forwarding without one. */
        char *d = vd_arena_alloc(&t->arena, VD_HTTP_DATE_LEN + 1);
        if (!d) {
            return VD_ENOMEM;
        }
        vd_http_date_now(d);
        out[n].name = VD_IOV_LIT("Date");
        out[n].value = (struct vd_iov){(const uint8_t *)d, VD_HTTP_DATE_LEN};
        n++;
    }
    if (conf->via_enabled && conf->via) {
        size_t pl = strlen(conf->via);
        char *v = vd_arena_alloc(&t->arena, 4 + pl);
        if (!v) {
            return VD_ENOMEM;
        }
        size_t l = via_version(v, 10 + h->minor);
        v[l++] = ' ';
        memcpy(v + l, conf->via, pl);
        l += pl;
        out[n].name = VD_IOV_LIT("Via");
        out[n].value = (struct vd_iov){(const uint8_t *)v, l};
        n++;
    }
    resp->hdrs = out;
    resp->nhdrs = n;
    return 0;
}

/* Parses response heads from the buffer. Returns 1 when the final head was handled and the body
 * may be pumped, 0 when more input is needed, -1 when the exchange failed (@f is freed). */
static int
fwd_parse_head(struct fwd *f)
{
    struct upc *u = f->u;
    struct vd_txn *t = f->t;
    const struct vd_conf_limits *lim = &t->conf->limits;
    for (;;) {
        struct vd_hdr hdrs_stack[128];
        struct vd_hdr *hdrs = hdrs_stack;
        size_t cap = lim->header_count;
        if (cap > VD_ARRAY_LEN(hdrs_stack)) {
            hdrs = vd_arena_alloc(&t->arena, sizeof(*hdrs) * cap);
            if (!hdrs) {
                fwd_fail(f, 502, "out of memory for the response head");
                return -1;
            }
        }
        struct vd_h1_limits hl = {
            .max_request_line = lim->request_line,
            .max_head = lim->header_block,
            .max_headers = cap,
        };
        struct vd_h1_resp_head h = {.hdrs = hdrs};
        const char *why = NULL;
        int r = vd_h1_parse_response(vd_buf_data(&u->in), u->in.len, &hl, &h, &why);
        if (r == VD_EAGAIN) {
            return 0;
        }
        if (r < 0) {
            char detail[200];
            snprintf(detail, sizeof(detail), "malformed response from upstream: %s",
                     why ? why : vd_strerror(r));
            fwd_fail(f, 502, detail);
            return -1;
        }
        if (h.status < 200) {
            if (h.status == 101) {
                if (!f->upgrade) {
                    fwd_fail(f, 502, "upstream switched protocols without an Upgrade request");
                } else {
                    fwd_switch(f, &h, (size_t)r);
                }
                return -1;
            }
            /* RFC 9110 §15.2: 1xx responses pass through to HTTP/1.1 clients, with the same
             * end-to-end filtering as final responses and every field kept. */
            struct vd_hdr *keep = vd_arena_alloc(&t->arena, sizeof(*keep) * (h.nhdrs + 1));
            if (!keep) {
                fwd_fail(f, 502, "out of memory for an interim response");
                return -1;
            }
            struct conn_names cn;
            conn_names_init(&cn, h.hdrs, h.nhdrs);
            size_t nk = 0;
            for (size_t i = 0; i < h.nhdrs; i++) {
                if (end_to_end(&cn, h.hdrs[i].name)) {
                    keep[nk++] = h.hdrs[i];
                }
            }
            (void)t->front->send_interim(t, h.status, keep, nk);
            vd_buf_consume(&u->in, (uint32_t)r);
            if (f->t != t) {
                return -1; /* the client went away while we sent the 1xx */
            }
            continue;
        }
        if (f->via_parent && h.status == 407) {
            fwd_fail(f, 502,
                     t->conf->upstream.parent_auth
                         ? "the parent proxy refused viaduct's credentials (407)"
                         : "the parent proxy wants credentials (407): set "
                           "upstream.parent_credentials");
            return -1;
        }
        t->stats.upstream_ns = uv_hrtime() - f->t0;
        struct vd_framing rf;
        if (vd_http_resp_framing(h.hdrs, h.nhdrs, h.status, f->head_method, false, &rf, &why) < 0) {
            char detail[200];
            snprintf(detail, sizeof(detail), "malformed response from upstream: %s",
                     why ? why : "framing");
            fwd_fail(f, 502, detail);
            return -1;
        }
        f->rf = rf;
        f->remain = rf.kind == VD_BODY_LENGTH ? rf.length : 0;
        /* RFC 9112 §9.3: "close" in any Connection field ends the connection after this
         * response; an HTTP/1.0 origin keeps it only with "keep-alive". */
        struct conn_names cn;
        conn_names_init(&cn, h.hdrs, h.nhdrs);
        bool ka = !cn.close && (h.minor >= 1 || cn.keep_alive);
        f->up_keepalive = ka && rf.kind != VD_BODY_CLOSE;
        struct vd_resp resp = {.status = h.status};
        if (filter_response_head(f, &h, &cn, &resp) < 0) {
            fwd_fail(f, 502, "out of memory for the response head");
            return -1;
        }
        resp.has_body = rf.kind != VD_BODY_NONE;
        switch (rf.kind) {
        case VD_BODY_LENGTH:
            resp.length = (int64_t)rf.length;
            break;
        case VD_BODY_NONE:
            /* HEAD and 304 keep the length the origin announced (RFC 9110 §8.6). */
            resp.length = (f->head_method || h.status == 304) ? announced_length(&h)
                                                              : (h.status == 204 ? -1 : 0);
            break;
        default:
            resp.length = -1;
            break;
        }
        struct vd_cache_entry *ce = vd__cache_on_head(f->cx, t, &resp);
        if (ce) {
            /* A 304 validated the stored response, or stale-if-error lets it replace a 5xx:
             * the client gets it from memory. The origin connection is reusable only after a
             * response without a body (a 304); a 5xx body is not read. */
            char cs[96];
            snprintf(cs, sizeof(cs), "%s", vd__cache_served(f->cx));
            vd_buf_consume(&u->in, (uint32_t)r);
            f->u = NULL;
            u->f = NULL;
            upc_release(u, f->up_keepalive && f->req_done && rf.kind == VD_BODY_NONE);
            fwd_detach(f);
            vd__cache_serve(t, ce, cs);
            return -1;
        }
        if (rf.kind == VD_BODY_CHUNKED) {
            vd_dbuf_init(&f->trailers, t->conf->limits.trailer_block + 64);
            vd_chunked_init(&f->chk, t->conf->limits.chunk_line, t->conf->limits.trailer_block,
                            &f->trailers);
        }
        vd_buf_consume(&u->in, (uint32_t)r);
        if (t->front->send_head(t, &resp) < 0) {
            fwd_fail(f, 502, "response head too large for the client");
            return -1;
        }
        f->resp_head_sent = true;
        f->state = F_BODY;
        return 1;
    }
}

/* ---- Upgrade (RFC 9110 §7.8, RFC 6455) --------------------------------------------------- */

/* An HTTP/1.1 request without a body that asks, with Connection: upgrade, for a protocol the
 * configuration relays (tunnel.upgrade_protocols). Others lose their Upgrade field like any
 * hop-by-hop field and are forwarded as ordinary requests. */
static bool
wants_upgrade(const struct vd_txn *t)
{
    if (!t->declared || t->req.version < 11 || t->req.framing.kind != VD_BODY_NONE) {
        return false;
    }
    /* RFC 8441: the extended CONNECT itself asks for the protocol. */
    bool conn_upgrade = t->req.version >= 20 && t->req.protocol.len > 0;
    for (size_t i = 0; i < t->req.nhdrs && !conn_upgrade && t->req.version < 20; i++) {
        if (vd_hdr_name_is(t->req.hdrs[i].name, "connection")) {
            conn_upgrade = vd_list_has(t->req.hdrs[i].value, "upgrade");
        }
    }
    if (!conn_upgrade) {
        return false;
    }
    const struct vd_conf_tunnel *tc = &t->conf->tunnel;
    for (size_t i = 0; i < tc->nupgrade_protocols; i++) {
        if (strcmp(tc->upgrade_protocols[i], t->declared) == 0) {
            return true;
        }
    }
    return false;
}

/* The Upgrade tunnel is over: the origin connection is closed (never pooled again), the client
 * connection is the front's to close. */
static void
fwd_tunnel_close(struct fwd *f)
{
    struct vd_txn *t = f->t;
    struct upc *u = f->u;
    f->u = NULL;
    u->f = NULL;
    upc_close(u);
    fwd_detach(f);
    t->front->tunnel_end(t);
}

static void
fwd_tunnel_done(void *arg, const struct vd_tunnel_stats *st)
{
    struct fwd *f = arg;
    f->tn = NULL;
    vd_txn_tunnel_stats(f->t, st);
    f->t->stats.tun_proto = f->t->declared;
    fwd_tunnel_close(f);
}

/* A fresh Sec-WebSocket-Key (RFC 6455 §4.1: 16 random bytes, base64) into f->ws_key. */
static int
ws_new_key(struct fwd *f)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return VD_ENOMEM;
    }
    EVP_EncodeBlock((unsigned char *)f->ws_key, raw, sizeof(raw)); /* 24 chars + NUL */
    return 0;
}

/* RFC 6455 §4.2.2: Sec-WebSocket-Accept = base64(SHA-1(key + the GUID)). */
static bool
ws_accept_ok(const struct fwd *f, const struct vd_h1_resp_head *h)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    const struct vd_hdr *acc = vd_hdr_find(h->hdrs, h->nhdrs, "sec-websocket-accept");
    const struct vd_hdr *up = vd_hdr_find(h->hdrs, h->nhdrs, "upgrade");
    if (!acc || !up || !vd_list_has(up->value, "websocket")) {
        return false;
    }
    char in[64];
    int n = snprintf(in, sizeof(in), "%s%s", f->ws_key, guid);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    if (n <= 0 || EVP_Digest(in, (size_t)n, md, &ml, EVP_sha1(), NULL) != 1) {
        return false;
    }
    char want[64];
    int wl = EVP_EncodeBlock((unsigned char *)want, md, (int)ml);
    return acc->value.len == (size_t)wl && memcmp(acc->value.base, want, (size_t)wl) == 0;
}

/* A 101 to an Upgrade request: the client gets the 101 with the origin's Upgrade, then both
 * connections become a tunnel. Bytes the origin sent after its 101 go to the client first. */
static void
fwd_switch(struct fwd *f, const struct vd_h1_resp_head *h, size_t headlen)
{
    struct vd_txn *t = f->t;
    struct upc *u = f->u;
    const struct vd_hdr *up = vd_hdr_find(h->hdrs, h->nhdrs, "upgrade");
    if (!up) {
        fwd_fail(f, 502, "upstream sent 101 without an Upgrade field");
        return;
    }
    t->stats.upstream_ns = uv_hrtime() - f->t0;
    struct vd_resp resp = {.status = 101, .length = -1, .tunnel = true};
    if (f->ws_h2 && !ws_accept_ok(f, h)) {
        fwd_fail(f, 502,
                 "upstream WebSocket handshake failed: Sec-WebSocket-Accept does not match");
        return;
    }
    struct conn_names cn;
    conn_names_init(&cn, h->hdrs, h->nhdrs);
    if (filter_response_head(f, h, &cn, &resp) < 0) {
        fwd_fail(f, 502, "out of memory for the response head");
        return;
    }
    struct vd_hdr *hd = (struct vd_hdr *)resp.hdrs;
    if (f->ws_h2) {
        /* RFC 8441 §5: the client gets 200; the accept value belonged to this hop only. */
        size_t k = 0;
        for (size_t i = 0; i < resp.nhdrs; i++) {
            if (!vd_hdr_name_is(hd[i].name, "sec-websocket-accept")) {
                hd[k++] = hd[i];
            }
        }
        resp.nhdrs = k;
        resp.status = 200;
    }
    char *uv = vd_arena_dup(&t->arena, up->value.base, up->value.len);
    if (!uv) {
        fwd_fail(f, 502, "out of memory for the response head");
        return;
    }
    if (!f->ws_h2) {
        hd[resp.nhdrs++] = (struct vd_hdr){VD_IOV_LIT("Connection"), VD_IOV_LIT("upgrade")};
        hd[resp.nhdrs++] =
            (struct vd_hdr){VD_IOV_LIT("Upgrade"), {(const uint8_t *)uv, up->value.len}};
    }
    vd_buf_consume(&u->in, (uint32_t)headlen);
    struct vd_tunnel_end client;
    if (t->front->send_head(t, &resp) < 0 || t->front->tunnel(t, &client) < 0) {
        fwd_fail(f, 502, "cannot switch the client connection to a tunnel");
        return;
    }
    f->resp_head_sent = true;
    f->state = F_TUNNEL;
    upc_timer_set(u, 0);
    struct vd_tunnel_end server = {
        .sock = &u->sock,
        .early = {u->in.base ? vd_buf_data(&u->in) : NULL, u->in.len},
        .unsent = {(const uint8_t *)u->out.p + u->out_off, u->out.len - u->out_off},
    };
    struct vd_tunnel_opts o = vd_txn_tunnel_opts(t, 0);
    static const struct vd_tunnel_cbs cbs = {.on_done = fwd_tunnel_done};
    f->tn = vd_tunnel_start(&t->w->loop, &client, &server, &o, &cbs, f);
    t->front->tunnel(t, NULL);
    vd_buf_release(&u->in);
    vd_dbuf_reset(&u->out);
    u->out_off = 0;
    if (!f->tn) {
        vd_log(VD_LOG_ERR, &t->log, "out of memory for a tunnel");
        fwd_tunnel_close(f);
    }
}

static void
fwd_retry_or_fail(struct fwd *f, int err)
{
    struct upc *u = f->u;
    bool stale = u && u->used_before && !f->got_bytes;
    if (stale && !f->retried && method_idempotent(f->t->req.method) &&
        f->t->req.framing.kind == VD_BODY_NONE) {
        /* RFC 9112 §9.3.1: the origin may have closed the idle connection as we reused it. */
        f->retried = true;
        f->u = NULL;
        u->f = NULL;
        upc_close(u);
        VD_TRACE(&f->t->log, VD_SUB_PROXY, "retrying on a new connection after %s",
                 vd_strerror(err));
        f->ai = 0;
        if (f->addrs.n == 0) {
            /* The first attempt came from the pool and never resolved the name. */
            fwd_resolve(f);
        } else {
            fwd_connect_next(f);
        }
        return;
    }
    if (err == 0 || err == -ECONNRESET || err == -EPIPE) {
        fwd_fail(f, 502, "upstream closed the connection before sending a complete response");
        return;
    }
    fwd_fail_err(f, err, "upstream read from");
}

/* Reads from the origin and pushes what arrived. While the client takes everything and the
 * origin fills the whole buffer, it reads again at once instead of going back to epoll: a
 * 64 KiB body then costs four read/writev pairs and one wake-up, not four wake-ups. Over TLS
 * it reads on until VD_EAGAIN, and past the round limit while a layer still holds bytes: epoll
 * cannot report those (an outer TLS layer holding the next records of the origin's TLS). */
static void
fwd_read(struct fwd *f)
{
    struct upc *u = f->u;
    for (int round = 0; round < 16 || vd_sock_pending(&u->sock); round++) {
        if (f->pend_n || f->paused_by_front) {
            return;
        }
        if (f->state == F_BODY && u->in.len == 0 && fwd_splice_ok(f)) {
            (void)fwd_splice(f);
            return;
        }
        if (!u->in.base && vd_buf_acquire(&u->in) < 0) {
            fwd_fail(f, 502, "out of buffer memory");
            return;
        }
        vd_buf_compact(&u->in);
        if (vd_buf_room(&u->in) == 0) {
            if (!f->resp_head_sent && u->in.cap < f->t->conf->limits.header_block + 1024 &&
                vd_buf_grow(&u->in, f->t->conf->limits.header_block + 1024) == 0) {
                /* a long response head */
            } else if (!f->resp_head_sent) {
                fwd_fail(f, 502, "upstream response head too large");
                return;
            } else {
                (void)fwd_pump_body(f);
                return;
            }
        }
        size_t room = vd_buf_room(&u->in);
        ssize_t n = vd_sock_read(&u->sock, vd_buf_tail(&u->in), room);
        if (n == VD_EAGAIN) {
            upc_arm(u);
            return;
        }
        if (n <= 0) {
            if (f->state == F_BODY && f->rf.kind == VD_BODY_CLOSE && n == 0) {
                f->up_keepalive = false;
                fwd_complete(f);
                return;
            }
            if (f->state == F_BODY) {
                fwd_fail(f, 502, "upstream closed the connection in the middle of the response");
                return;
            }
            fwd_retry_or_fail(f, (int)n);
            return;
        }
        f->got_bytes = true;
        u->in.len += (uint32_t)n;
        if (f->state != F_BODY) {
            int hr = fwd_parse_head(f);
            if (hr < 0) {
                return;
            }
            if (hr == 0 && vd_sock_is_plain(&u->sock)) {
                upc_arm(u);
                return;
            }
            if (hr == 0) {
                continue; /* the rest of the head may be inside TLS already */
            }
        }
        upc_timer_set(u, f->t->conf->timeouts.upstream_read);
        if (!fwd_pump_body(f)) {
            return;
        }
        if ((size_t)n < room && vd_sock_is_plain(&u->sock)) {
            return; /* the socket is drained: wait for epoll (TLS may hold more: read on) */
        }
    }
    upc_arm(u);
}

/* ---- request sending ----------------------------------------------------------------------- */

/* Writes queued request bytes and, once the queue is empty, asks the client for more body.
 * Returns false when the exchange ended meanwhile (@f is gone or detached). */
static bool
fwd_send(struct fwd *f)
{
    struct upc *u = f->u;
    int r = upc_flush(u);
    if (r < 0) {
        fwd_retry_or_fail(f, r);
        return false;
    }
    if (u->out.len == 0 && !f->req_done) {
        /* Room again for request body. */
        if (!fwd_resume_body(f) || f->u != u) {
            return false;
        }
    }
    upc_arm(u);
    return true;
}

static void
fwd_start_request(struct fwd *f)
{
    struct upc *u = f->u;
    struct vd_txn *t = f->t;
    f->state = F_SENDING;
    f->t0 = uv_hrtime();
    if (f->srv >= 0) {
        vd_lb_ok(f->route, f->srv);
    }
    t->stats.upstream_used = true;
    t->stats.upstream_reused = u->used_before;
    vd_dbuf_reset(&u->out);
    u->out_off = 0;
    if (vd_dbuf_add(&u->out, f->head.p, f->head.len) < 0) {
        fwd_fail(f, 502, "request head too large");
        return;
    }
    if (t->req.framing.kind == VD_BODY_NONE ||
        (t->req.framing.kind == VD_BODY_LENGTH && t->req.framing.length == 0)) {
        f->req_done = true;
    }
    upc_timer_set(u, t->conf->timeouts.upstream_first_byte);
    (void)fwd_send(f);
}

static void
upc_event(struct vd_sock *s, int ev)
{
    struct upc *u = s->data;
    VD_BUG_ON(u->magic != UPC_MAGIC);
    struct fwd *f = u->f;
    if (!f) {
        /* Idle in the pool: any readiness means the origin closed or misbehaved. */
        upc_close(u);
        return;
    }
    if (!u->connected) {
        int r = vd_sock_connect_result(s);
        if (r < 0) {
            f->u = NULL;
            u->f = NULL;
            upc_close(u);
            if (f->ai < f->addrs.n) {
                fwd_connect_next(f);
                return;
            }
            fwd_fail_err(f, r, "upstream connect to");
            return;
        }
        u->connected = true;
    }
    if (f->state < F_SENDING) {
        fwd_setup(f);
        return;
    }
    if (ev & VD_WANT_WRITE && u->out.len > u->out_off) {
        if (!fwd_send(f)) {
            return;
        }
    }
    if (ev & VD_WANT_READ) {
        fwd_read(f);
        return;
    }
    upc_arm(u);
}

/* Attaches TLS to the parent (@to_parent: f->host is the parent; SNI is upstream.parent_sni, else
 * its name unless it is an address, and its certificate must name that) or to the origin (directly,
 * or inside the parent's tunnel, on top of the parent's TLS when it has some). 0, or -1 when @f
 * failed. */
static int
fwd_tls_start(struct fwd *f, bool to_parent)
{
    const char *pname = vd_parent_tls_name(f->t->conf, f->host);
    const char *sni = to_parent ? pname : f->sni;
    const char *name = to_parent ? pname : f->tls_name ? f->tls_name : f->host;
    f->state = to_parent ? F_PHANDSHAKE : F_HANDSHAKE;
    const struct vd_worker_shared *sh = f->t->w->shared;
    struct vd_tls_client *ctx = to_parent ? sh->tls_parent : sh->tls_client;
    if (vd_tls_attach_client(&f->u->sock, ctx, sni, name) < 0) {
        fwd_fail(f, 502, "cannot start TLS to upstream");
        return -1;
    }
    return 0;
}

/* Drives a TLS handshake (the parent's in F_PHANDSHAKE, the origin's in F_HANDSHAKE): 0 when
 * done, VD_EAGAIN (armed), or -1 when @f failed with a 502 that says whose certificate or
 * handshake failed and why. */
static int
fwd_handshake(struct fwd *f)
{
    struct upc *u = f->u;
    int r = vd_tls_handshake(&u->sock);
    if (r == VD_EAGAIN) {
        upc_arm(u);
        return VD_EAGAIN;
    }
    if (r < 0) {
        char detail[300];
        const char *why = vd_tls_error_detail(&u->sock);
        if (f->state == F_PHANDSHAKE) {
            snprintf(detail, sizeof(detail),
                     r == VD_ETLSVERIFY
                         ? "the parent proxy's certificate failed verification for %s: %s"
                         : "TLS handshake with the parent proxy %s failed: %s",
                     vd_parent_tls_name(f->t->conf, f->host), why);
        } else {
            const char *name = f->tls_name ? f->tls_name : f->host;
            snprintf(detail, sizeof(detail),
                     r == VD_ETLSVERIFY ? "upstream certificate verification failed for %s: %s"
                                        : "TLS handshake with upstream %s failed: %s",
                     name, why);
        }
        fwd_fail(f, 502, detail);
        return -1;
    }
    u->sock.want = 0;
    return 0;
}

/* Takes a new connection from TCP-connected to ready for the request, one step per readiness:
 * TLS to an https:// parent; for an https:// origin through the parent, the CONNECT and its
 * answer; TLS to the origin (inside the parent's tunnel, and so inside the parent's TLS when it
 * has some: TLS in TLS); then the request. Returns when waiting for the socket or when @f ended
 * or failed. */
static void
fwd_setup(struct fwd *f)
{
    for (;;) {
        switch (f->state) {
        case F_CONNECTING:
            if (f->parent_tls) {
                if (fwd_tls_start(f, true) < 0) {
                    return;
                }
                continue;
            }
            break;
        case F_PHANDSHAKE:
            if (fwd_handshake(f) != 0) {
                return;
            }
            break;
        case F_PARENT:
            if (fwd_parent_read(f) != 0 || fwd_tls_start(f, false) < 0) {
                return;
            }
            continue; /* the origin's ClientHello goes now */
        case F_HANDSHAKE:
            if (fwd_handshake(f) == 0) {
                fwd_start_request(f);
            }
            return;
        default:
            VD_BUG_ON(true);
            return;
        }
        /* Connected to where the request goes (the origin or the parent), TLS to the parent
         * done if any: a tunnel through the parent next, or TLS to the origin, or the request. */
        f->preached = true;
        if (f->parent_tunnel) {
            fwd_parent_ask(f);
            return;
        }
        if (f->tls) {
            if (fwd_tls_start(f, false) < 0) {
                return;
            }
            continue;
        }
        fwd_start_request(f);
        return;
    }
}

/* https:// through the parent: asks it for a tunnel to the origin (RFC 9110 §9.3.6). */
static void
fwd_parent_ask(struct fwd *f)
{
    struct upc *u = f->u;
    vd_dbuf_reset(&u->out);
    u->out_off = 0;
    int r = vd_parent_connect_head(&u->out, f->t, f->tls_name, f->tport);
    if (r < 0 || upc_flush(u) < 0 || u->out.len > u->out_off) {
        /* A fresh connection takes a few hundred bytes at once. */
        fwd_fail(f, 502, "could not send the CONNECT request to the parent proxy");
        return;
    }
    f->state = F_PARENT;
    upc_timer_set(u, f->t->conf->timeouts.upstream_first_byte);
    upc_arm(u);
}

/* Reads the parent's answer to fwd_parent_ask: 0 on 2xx (the tunnel to the origin is open),
 * VD_EAGAIN, or -1 when @f failed. */
static int
fwd_parent_read(struct fwd *f)
{
    struct upc *u = f->u;
    char detail[300];
    if (!u->in.base && vd_buf_acquire(&u->in) < 0) {
        fwd_fail(f, 502, "out of memory for the parent proxy's answer");
        return -1;
    }
    size_t max = f->t->conf->limits.header_block; /* the bound of any response head */
    if (u->in.cap < max + 1024 && vd_buf_grow(&u->in, (uint32_t)max + 1024) < 0) {
        fwd_fail(f, 502, "out of memory for the parent proxy's answer");
        return -1;
    }
    bool eof = false;
    while (vd_buf_room(&u->in)) {
        ssize_t n = vd_sock_read(&u->sock, vd_buf_tail(&u->in), vd_buf_room(&u->in));
        if (n == VD_EAGAIN) {
            break;
        }
        if (n <= 0) {
            eof = true; /* a refusal may be complete, then the close */
            break;
        }
        u->in.len += (uint32_t)n;
    }
    struct vd_hdr hdrs[64];
    struct vd_h1_resp_head h = {.hdrs = hdrs};
    struct vd_h1_limits lim = {
        .max_request_line = f->t->conf->limits.request_line, .max_head = max, .max_headers = 64};
    const char *why = NULL;
    int r = vd_h1_parse_response(vd_buf_data(&u->in), u->in.len, &lim, &h, &why);
    if (r == VD_EAGAIN && (eof || vd_buf_room(&u->in) == 0)) {
        fwd_fail(f, 502,
                 eof ? "the parent proxy closed the connection before answering CONNECT"
                     : "the parent proxy's answer to CONNECT is too large");
        return -1;
    }
    if (r == VD_EAGAIN) {
        upc_arm(u);
        return VD_EAGAIN;
    }
    int st = vd_parent_refusal(f->t->conf, r, &h, why, detail, sizeof(detail));
    if (st == 0 && (size_t)r != u->in.len) {
        st = 502;
        snprintf(detail, sizeof(detail), "the parent proxy sent bytes before the TLS handshake");
    }
    if (st) {
        fwd_fail(f, st, detail);
        return -1;
    }
    vd_buf_release(&u->in);
    upc_timer_set(u, f->t->conf->timeouts.upstream_connect);
    return 0;
}

static struct upc *
upc_new(struct vd_worker *w, const char *key, uint64_t h)
{
    struct upc *u = calloc(1, sizeof(*u));
    if (!u) {
        return NULL;
    }
    u->magic = UPC_MAGIC;
    u->w = w;
    snprintf(u->key, sizeof(u->key), "%s", key);
    u->key_hash = h;
    vd_dbuf_init(&u->out, UP_OUT_MAX + 65536);
    vd_list_init(&u->link);
    return u;
}

/* Takes an idle pooled connection to the same origin and starts the request on it. Returns false
 * when there is none. */
static bool
fwd_use_pooled(struct fwd *f)
{
    struct upc *u = pool_take(f->t->w, f->key, f->key_hash);
    if (!u) {
        return false;
    }
    u->f = f;
    f->u = u;
    fwd_start_request(f);
    return true;
}

static void
fwd_connect_next(struct fwd *f)
{
    struct vd_worker *w = f->t->w;
    /* A connection may have gone idle while we resolved; a retry wants a fresh one. */
    if (!f->retried && !f->t->access_pending && fwd_use_pooled(f)) {
        return;
    }
    if (f->ai >= f->addrs.n) {
        fwd_fail(f, 502, "no upstream address left to try");
        return;
    }
    struct sockaddr_storage sa = f->addrs.a[f->ai++];
    socklen_t sl;
    if (sa.ss_family == AF_INET) {
        ((struct sockaddr_in *)&sa)->sin_port = htons(f->port);
        sl = sizeof(struct sockaddr_in);
    } else {
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons(f->port);
        sl = sizeof(struct sockaddr_in6);
    }
    struct upc *u = upc_new(w, f->key, f->key_hash);
    if (!u) {
        fwd_fail(f, 502, "out of memory for an upstream connection");
        return;
    }
    int r = vd_ltimer_init(&u->timer, &w->tq, upc_timeout);
    if (r == 0) {
        r = vd_sock_connect(&w->loop, &u->sock, (struct sockaddr *)&sa, sl,
                            w->conf->upstream.tcp_congestion);
        if (r < 0) {
            vd_ltimer_release(&u->timer);
        }
    }
    if (r < 0) {
        vd_dbuf_free(&u->out);
        free(u);
        if (f->ai < f->addrs.n) {
            fwd_connect_next(f);
            return;
        }
        fwd_fail_err(f, r, "upstream connect to");
        return;
    }
    u->sock.data = u;
    u->sock.on_event = upc_event;
    u->sock.on_close = upc_sock_closed;
    u->f = f;
    f->u = u;
    f->state = F_CONNECTING;
    upc_timer_set(u, f->t->conf->timeouts.upstream_connect);
    upc_arm(u);
}

static void
resolved(void *arg, int status, const struct vd_addrs *addrs)
{
    struct fwd *f = arg;
    VD_BUG_ON(f->magic != FWD_MAGIC);
    f->q = NULL;
    if (status < 0) {
        char detail[300];
        if (status == VD_ENOTFOUND) {
            snprintf(detail, sizeof(detail), "upstream name did not resolve: %s", f->host);
        } else {
            snprintf(detail, sizeof(detail), "DNS lookup for upstream %s failed: %s", f->host,
                     vd_strerror(status));
        }
        fwd_fail(f, status == VD_ETIMEDOUT ? 504 : 502, detail);
        return;
    }
    f->addrs = *addrs;
    f->ai = 0;
    if (f->t->access_pending) {
        /* Rules that test the destination address (an SSRF guard) are decided here. */
        const struct vd_conf_rule *deny = NULL;
        if (vd_txn_check_addrs(f->t, f->host, f->port, false, &f->addrs, &deny) == VD_ACCESS_DENY) {
            struct vd_txn *t = f->t;
            fwd_detach(f);
            vd_txn_deny(t, deny);
            return;
        }
    }
    if (f->parent_later) {
        /* The rules saw the origin's addresses; the connection goes to the parent. */
        f->parent_later = false;
        fwd_use_parent(f, vd_parent_pick(f->t->conf, 0));
        fwd_resolve(f);
        return;
    }
    fwd_connect_next(f);
}

static void
fwd_resolve(struct fwd *f)
{
    f->state = F_RESOLVING;
    int r = vd_resolve(f->t->w->resolver, f->host, &f->addrs, resolved, f, &f->q);
    if (r == VD_EAGAIN) {
        return;
    }
    resolved(f, r, &f->addrs);
}

/* ---- handler ops ---------------------------------------------------------------------------- */

static ssize_t
fo_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    struct fwd *f = t->handler_data;
    VD_BUG_ON(f->magic != FWD_MAGIC);
    struct upc *u = f->u;
    if (!u || f->state < F_SENDING) {
        /* Not connected yet: hold the body in the client's buffer (back-pressure). */
        t->front->req_body_pause(t, true);
        return 0;
    }
    if (u->out.len - u->out_off >= UP_OUT_MAX) {
        return 0;
    }
    size_t take = VD_MIN(len, UP_OUT_MAX - (u->out.len - u->out_off));
    int r = 0;
    if (take && f->req_chunked) {
        r = vd_dbuf_addf(&u->out, "%zx\r\n", take);
        r = r ? r : vd_dbuf_add(&u->out, p, take);
        r = r ? r : vd_dbuf_add(&u->out, "\r\n", 2);
    } else if (take) {
        r = vd_dbuf_add(&u->out, p, take);
    }
    if (r == 0 && end && take == len) {
        if (f->req_chunked) {
            r = vd_dbuf_add(&u->out, "0\r\n", 3);
            if (r == 0 && t->req_trailers && t->req_trailers->len) {
                r = vd_dbuf_add(&u->out, t->req_trailers->p, t->req_trailers->len);
            }
            r = r ? r : vd_dbuf_add(&u->out, "\r\n", 2);
        }
        f->req_done = true;
    }
    if (r < 0) {
        return VD_ETOOBIG;
    }
    int e = upc_flush(u);
    if (e < 0) {
        /* The origin went away while we sent the body: its response, if any, is read next. */
        VD_TRACE(&t->log, VD_SUB_PROXY, "upstream write failed: %s", vd_strerror(e));
    }
    upc_arm(u);
    return (ssize_t)take;
}

static void
fo_writable(struct vd_txn *t)
{
    struct fwd *f = t->handler_data;
    VD_BUG_ON(f->magic != FWD_MAGIC);
    f->paused_by_front = false;
    if (f->state == F_BODY) {
        if (f->u) {
            upc_timer_set(f->u, t->conf->timeouts.upstream_read);
        }
        /* TLS may hold decrypted bytes that poll cannot see: read at once after a pause. */
        if (fwd_pump_body(f) && f->u && !vd_sock_is_plain(&f->u->sock) && !f->paused_by_front &&
            !f->pend_n) {
            fwd_read(f);
        }
    }
}

static void
fo_abort_h(struct vd_txn *t)
{
    struct fwd *f = t->handler_data;
    if (!f) {
        return;
    }
    VD_BUG_ON(f->magic != FWD_MAGIC);
    if (fwd_adopt(f)) {
        fo_writable(f->t); /* may complete and free @f */
        return;
    }
    if (f->tn) {
        struct vd_tunnel_stats st;
        vd_tunnel_abort(f->tn, &st);
        f->tn = NULL;
        vd_txn_tunnel_stats(t, &st);
        t->stats.tun_proto = t->declared; /* as fwd_tunnel_done: the Upgrade protocol */
    }
    if (f->u) {
        struct upc *u = f->u;
        f->u = NULL;
        u->f = NULL;
        upc_close(u);
    }
    f->t = NULL;
    fwd_free(f);
}

static const struct vd_handler_ops fwd_ops = {
    .name = "forward",
    .on_req_body = fo_req_body,
    .on_writable = fo_writable,
    .on_abort = fo_abort_h,
};

/* The TLS server name for f->host: the route's sni, or the host when it is a name (RFC 6066
 * §3: no SNI for IP literals). */
static void
fwd_set_sni(struct fwd *f)
{
    f->sni = NULL;
    if (!f->tls) {
        return;
    }
    const char *sni = f->route && f->route->sni ? f->route->sni : f->host;
    struct in6_addr tmp;
    if (inet_pton(AF_INET, sni, &tmp) == 1 || inet_pton(AF_INET6, sni, &tmp) == 1) {
        return;
    }
    f->sni = vd_arena_dup(&f->t->arena, sni, strlen(sni));
}

/* Whether forward-proxy traffic to @host goes through upstream.parent (not in parent_bypass:
 * ".example.com" matches it and its subdomains, other names exactly, addresses and prefixes
 * match IP-literal targets). */
bool
vd_parent_applies(const struct vd_conf *conf, const char *host)
{
    const struct vd_conf_upstream *u = &conf->upstream;
    if (!u->nparents) {
        return false;
    }
    size_t hl = strlen(host);
    for (size_t i = 0; i < u->nbypass_names; i++) {
        const char *b = u->bypass_names[i];
        size_t bl = strlen(b);
        if (b[0] == '.' ? (hl == bl - 1 && strcmp(host, b + 1) == 0) ||
                              (hl > bl && strcmp(host + hl - bl, b) == 0)
                        : strcmp(host, b) == 0) {
            return false;
        }
    }
    struct sockaddr_storage ss;
    if (u->nbypass_nets && vd_ip_literal(host, &ss)) {
        for (size_t i = 0; i < u->nbypass_nets; i++) {
            if (vd_cidr_match(&u->bypass_nets[i], (const struct sockaddr *)&ss)) {
                return false;
            }
        }
    }
    return true;
}

int
vd_parent_pick(const struct vd_conf *conf, uint32_t tried)
{
    const struct vd_conf_upstream *u = &conf->upstream;
    uint64_t now = uv_hrtime(), soonest = UINT64_MAX;
    int best = -1;
    /* round_robin: each exchange starts one parent further along; a failover (@tried set)
     * takes the first untried one in order. */
    size_t start =
        u->parent_round_robin && !tried && u->nparents
            ? atomic_fetch_add_explicit(u->parent_turn, 1, memory_order_relaxed) % u->nparents
            : 0;
    for (size_t k = 0; k < u->nparents; k++) {
        size_t i = (start + k) % u->nparents;
        if (tried & (1u << i)) {
            continue;
        }
        uint64_t down = atomic_load_explicit(&u->parent_down[i], memory_order_relaxed);
        if (down <= now) {
            return (int)i;
        }
        if (down < soonest) {
            soonest = down;
            best = (int)i;
        }
    }
    return best;
}

int
vd_parent_next(const struct vd_conf *conf, int failed, uint32_t *tried)
{
    vd_parent_failed(conf, failed);
    *tried |= 1u << failed;
    return vd_parent_pick(conf, *tried);
}

void
vd_parent_failed(const struct vd_conf *conf, int i)
{
    const struct vd_conf_upstream *u = &conf->upstream;
    if (i >= 0 && (size_t)i < u->nparents) {
        atomic_store_explicit(&u->parent_down[i], uv_hrtime() + u->parent_fail_timeout * 1000000ull,
                              memory_order_relaxed);
    }
}

int
vd_parent_connect_head(struct vd_dbuf *d, const struct vd_txn *t, const char *host, uint16_t port)
{
    const struct vd_conf *conf = t->conf;
    bool v6 = strchr(host, ':') != NULL;
    const char *o = v6 ? "[" : "", *c = v6 ? "]" : "";
    int r = vd_dbuf_addf(d, "CONNECT %s%s%s:%u HTTP/1.1\r\nHost: %s%s%s:%u\r\n", o, host, c, port,
                         o, host, c, port);
    if (r == 0 && conf->upstream.parent_auth) {
        r = vd_dbuf_addf(d, "Proxy-Authorization: %s\r\n", conf->upstream.parent_auth);
    }
    if (r == 0 && conf->via_enabled && conf->via) {
        for (size_t i = 0; r == 0 && i < t->req.nhdrs; i++) {
            if (vd_hdr_name_is(t->req.hdrs[i].name, "via")) {
                r = add_field(d, t->req.hdrs[i].name, t->req.hdrs[i].value);
            }
        }
        char ver[3];
        size_t vl = via_version(ver, t->req.version);
        r = r ? r : vd_dbuf_addf(d, "Via: %.*s %s\r\n", (int)vl, ver, conf->via);
    }
    return r ? r : vd_dbuf_add(d, "\r\n", 2);
}

int
vd_parent_refusal(const struct vd_conf *conf, int r, const struct vd_h1_resp_head *h,
                  const char *why, char *detail, size_t cap)
{
    if (r < 0) {
        snprintf(detail, cap, "malformed answer from the parent proxy: %s",
                 why ? why : vd_strerror(r));
        return 502;
    }
    if (h->status / 100 == 2) {
        return 0;
    }
    if (h->status == 407) {
        snprintf(detail, cap, "the parent proxy %s credentials (407)",
                 conf->upstream.parent_auth ? "refused viaduct's" : "wants");
    } else {
        snprintf(detail, cap, "the parent proxy answered CONNECT with %d %.*s", h->status,
                 (int)VD_MIN(h->reason.len, (size_t)100), (const char *)h->reason.base);
    }
    return h->status == 504 ? 504 : 502;
}

/* The last pool key this worker thread formatted, with the parts it was made from: a reverse
 * proxy formats the same key request after request, and comparing the parts costs less than
 * formatting and hashing them again. */
static _Thread_local struct {
    bool valid, tls, has_sni;
    uint16_t port;
    uint64_t h;
    size_t klen;
    char host[256], sni[256], key[320];
} pk_memo;

/* f->key and f->key_hash from f's host, port, TLS flag and SNI name. */
static void
fwd_pool_key(struct fwd *f)
{
    if (pk_memo.valid && pk_memo.port == f->port && pk_memo.tls == f->tls &&
        pk_memo.has_sni == (f->sni != NULL) && strcmp(pk_memo.host, f->host) == 0 &&
        (!f->sni || strcmp(pk_memo.sni, f->sni) == 0)) {
        memcpy(f->key, pk_memo.key, pk_memo.klen + 1);
        f->key_hash = pk_memo.h;
        return;
    }
    pool_key_format(f->key, sizeof(f->key), f->host, f->port, f->tls, f->sni);
    f->key_hash = pkey_hash(f->key);
    size_t hl = strlen(f->host), sl = f->sni ? strlen(f->sni) : 0, kl = strlen(f->key);
    pk_memo.valid = hl < sizeof(pk_memo.host) && sl < sizeof(pk_memo.sni);
    if (pk_memo.valid) {
        memcpy(pk_memo.host, f->host, hl + 1);
        memcpy(pk_memo.sni, f->sni ? f->sni : "", sl + 1);
        memcpy(pk_memo.key, f->key, kl + 1); /* kl < sizeof(f->key) == sizeof(pk_memo.key) */
        pk_memo.klen = kl;
        pk_memo.port = f->port;
        pk_memo.tls = f->tls;
        pk_memo.has_sni = f->sni != NULL;
        pk_memo.h = f->key_hash;
    }
}

/* Points @f's connection at the parent proxy; its connections are pooled apart from direct
 * ones to the same address (and by the parent's scheme: a reload may turn http:// into https://
 * at the same address) and shared by every origin. */
static void
fwd_use_parent(struct fwd *f, int i)
{
    f->pidx = i < 0 ? 0 : i;
    const struct vd_conf_server *p = &f->t->conf->upstream.parents[f->pidx];
    const char *scheme = p->tls ? "https" : "http";
    /* A reload may change the name the parent's certificate is checked against. */
    const char *pn =
        p->tls && f->t->conf->upstream.parent_sni ? f->t->conf->upstream.parent_sni : "";
    if (f->parent_tunnel) {
        /* A TLS connection to one origin through the parent: pooled for that origin only. */
        char okey[288]; /* f->key cuts what does not fit, as with any pool key */
        if (!f->ptried) {
            f->tport = f->port; /* the origin's, before f->port becomes the parent's */
        }
        /* The origin by tls_name and tport: after a failover f->host is the last parent. */
        pool_key_format(okey, sizeof(okey), f->tls_name, f->tport, f->tls, f->sni);
        snprintf(f->key, sizeof(f->key), "parent|%s://%s:%u|%s|%s", scheme, p->host, p->port, pn,
                 okey);
    } else {
        snprintf(f->key, sizeof(f->key), "parent|%s://%s:%u|%s", scheme, p->host, p->port, pn);
    }
    f->key_hash = pkey_hash(f->key);
    f->host = p->host;
    f->port = p->port;
    f->parent_tls = p->tls;
    f->ai = 0;
}

/* Points @f at server @i of its route's group (counted as in progress there). */
static void
fwd_use_server(struct fwd *f, int i)
{
    const struct vd_conf_server *s = &f->route->servers[i];
    f->srv = i;
    f->host = s->host;
    f->port = s->port;
    f->tls = s->tls;
    f->ai = 0;
    fwd_set_sni(f);
    fwd_pool_key(f);
    vd_lb_begin(f->route, i);
}

void
vd_forward_start(struct vd_txn *t, const char *host, uint16_t port, bool tls,
                 const struct vd_conf_route *route)
{
    struct vd_cache_xfer *cx = NULL;
    if (!wants_upgrade(t) && vd__cache_begin(t, &cx, host, port, tls, route)) {
        return; /* answered from the cache */
    }
    struct fwd *f = fwd_new();
    if (!f) {
        vd__cache_end(cx);
        vd_txn_respond_error(t, 503, "out of memory", true);
        return;
    }
    f->magic = FWD_MAGIC;
    f->t = t;
    f->route = route;
    f->srv = -1;
    f->host = (char *)host;
    f->port = port;
    f->tls = tls;
    f->head_method = t->req.method.len == 4 && memcmp(t->req.method.base, "HEAD", 4) == 0;
    fwd_set_sni(f);
    f->upgrade = wants_upgrade(t);
    f->ws_h2 =
        f->upgrade && t->req.version >= 20 && t->declared && strcmp(t->declared, "websocket") == 0;
    if (f->ws_h2 && ws_new_key(f) < 0) {
        vd_mc_free(f);
        vd__cache_end(cx);
        vd_txn_respond_error(t, 503, "no random bytes for a WebSocket key", false);
        return;
    }
    vd_dbuf_init(&f->head, t->conf->limits.header_block + 8192);
    vd_dbuf_init(&f->trailers, 0);
    t->handler = &fwd_ops;
    t->handler_data = f;
    f->cx = cx;
    f->via_parent = !route && t->mode == VD_MODE_FORWARD && vd_parent_applies(t->conf, host);
    if (f->via_parent && tls) {
        /* The gateway reaches an https:// origin through the parent with CONNECT, then TLS to
         * the origin inside the tunnel; the request itself is an ordinary origin-form one. */
        f->via_parent = false;
        f->parent_tunnel = true;
        f->tls_name = host;
    }
    if (build_request_head(f) < 0) {
        fwd_detach(f);
        vd_txn_respond_error(t, 431, "request head too large to forward", true);
        return;
    }
    if (route && route->lb) {
        f->lbref = vd_conf_ref(t->conf);
        fwd_use_server(f, vd_lb_pick(route, t->client, 0));
    } else if ((f->via_parent || f->parent_tunnel) && !t->access_pending) {
        fwd_use_parent(f, vd_parent_pick(f->t->conf, 0));
    } else {
        /* With address rules, the origin is resolved for them first (parent_later). */
        f->parent_later = f->via_parent || f->parent_tunnel;
        fwd_pool_key(f);
    }
    /* A pooled connection needs no DNS (unless rules test the address). */
    if (!t->access_pending && fwd_use_pooled(f)) {
        return;
    }
    fwd_resolve(f);
}
