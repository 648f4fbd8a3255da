/* SPDX-License-Identifier: MIT */
/* Transactions: what happens between a complete request head and a handler. Client access
 * control, requests the proxy answers itself (Max-Forwards: 0, RFC 9110 §7.6.2), routing for
 * forward and reverse listeners, proxy-generated error responses, and the access log line. */
#include "vd/config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vd/access.h"
#include "vd/err.h"
#include "vd/mcache.h"
#include "vd/proxy.h"

void
vd_txn_respond_error(struct vd_txn *t, int status, const char *detail, bool close)
{
    vd_txn_respond_with(t, status, NULL, 0, detail, close);
}

void
vd_txn_respond_with(struct vd_txn *t, int status, const struct vd_hdr *extra, size_t nextra,
                    const char *detail, bool close)
{
    char body[512];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, vd_http_reason(status), detail);
    if (n < 0) {
        n = 0;
    }
    if ((size_t)n >= sizeof(body)) {
        n = sizeof(body) - 1;
        body[n - 1] = '\n';
    }
    char date[VD_HTTP_DATE_LEN + 1];
    vd_http_date_now(date);
    struct vd_hdr hdrs[4] = {
        {VD_IOV_LIT("Date"), {(const uint8_t *)date, VD_HTTP_DATE_LEN}},
        {VD_IOV_LIT("Content-Type"), VD_IOV_LIT("text/plain; charset=utf-8")},
    };
    size_t nh = 2;
    for (size_t i = 0; i < nextra && nh < VD_ARRAY_LEN(hdrs); i++) {
        hdrs[nh++] = extra[i];
    }
    bool head = t->req.method.len == 4 && memcmp(t->req.method.base, "HEAD", 4) == 0;
    struct vd_resp resp = {
        .status = status,
        .hdrs = hdrs,
        .nhdrs = nh,
        .has_body = !head,
        .length = n,
        .close = close,
    };
    if (t->front->send_head(t, &resp) < 0) {
        t->front->abort(t);
        return;
    }
    if (!head) {
        ssize_t k = t->front->send_body(t, (const uint8_t *)body, (size_t)n);
        if (k < 0) {
            t->front->abort(t);
            return;
        }
        /* The body is smaller than one output chunk, so it is always accepted whole. */
    }
    t->front->send_end(t, NULL);
}

void
vd_txn_req_body_resume(struct vd_txn *t)
{
    t->front->req_body_pause(t, false);
}

static bool
method_is(const struct vd_txn *t, const char *m)
{
    size_t l = strlen(m);
    return t->req.method.len == l && memcmp(t->req.method.base, m, l) == 0;
}

/* RFC 9110 §7.6.2: OPTIONS and TRACE with Max-Forwards: 0 are answered here. Returns true when
 * the request was answered. */
static bool
answer_max_forwards(struct vd_txn *t)
{
    if (!method_is(t, "OPTIONS") && !method_is(t, "TRACE")) {
        return false;
    }
    const struct vd_hdr *mf = vd_hdr_find(t->req.hdrs, t->req.nhdrs, "max-forwards");
    if (!mf || mf->value.len != 1 || mf->value.base[0] != '0') {
        return false;
    }
    if (method_is(t, "OPTIONS")) {
        struct vd_hdr hdrs[1] = {
            {VD_IOV_LIT("Allow"),
             VD_IOV_LIT("GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH")},
        };
        struct vd_resp resp = {.status = 200, .hdrs = hdrs, .nhdrs = 1, .length = 0};
        if (t->front->send_head(t, &resp) < 0) {
            t->front->abort(t);
            return true;
        }
        t->front->send_end(t, NULL);
        return true;
    }
    /* TRACE: echo the request head as message/http, without fields that carry credentials
     * (RFC 9110 §9.3.8). */
    struct vd_dbuf d;
    vd_dbuf_init(&d, 65536);
    int r = vd_dbuf_add(&d, t->req.method.base, t->req.method.len);
    r = r ? r : vd_dbuf_add(&d, " ", 1);
    r = r ? r : vd_dbuf_add(&d, t->req.target.base, t->req.target.len);
    r = r ? r : vd_dbuf_addf(&d, " HTTP/%d.%d\r\n", t->req.version / 10, t->req.version % 10);
    for (size_t i = 0; i < t->req.nhdrs && r == 0; i++) {
        struct vd_iov name = t->req.hdrs[i].name;
        if (vd_hdr_name_is(name, "authorization") || vd_hdr_name_is(name, "proxy-authorization") ||
            vd_hdr_name_is(name, "cookie")) {
            continue;
        }
        r = vd_dbuf_add(&d, name.base, name.len);
        r = r ? r : vd_dbuf_add(&d, ": ", 2);
        r = r ? r : vd_dbuf_add(&d, t->req.hdrs[i].value.base, t->req.hdrs[i].value.len);
        r = r ? r : vd_dbuf_add(&d, "\r\n", 2);
    }
    r = r ? r : vd_dbuf_add(&d, "\r\n", 2);
    if (r < 0) {
        vd_dbuf_free(&d);
        vd_txn_respond_error(t, 500, "TRACE echo too large", false);
        return true;
    }
    struct vd_hdr hdrs[1] = {{VD_IOV_LIT("Content-Type"), VD_IOV_LIT("message/http")}};
    struct vd_resp resp = {
        .status = 200, .hdrs = hdrs, .nhdrs = 1, .has_body = true, .length = (int64_t)d.len};
    if (t->front->send_head(t, &resp) < 0) {
        vd_dbuf_free(&d);
        t->front->abort(t);
        return true;
    }
    /* The echo is bounded by the header limit; a short write is queued by the front up to one
     * chunk, so echo only what it takes and end (bounded, never more than the head). */
    size_t off = 0;
    while (off < d.len) {
        ssize_t k = t->front->send_body(t, (const uint8_t *)d.p + off, d.len - off);
        if (k <= 0) {
            break;
        }
        off += (size_t)k;
    }
    vd_dbuf_free(&d);
    if (off < (size_t)resp.length) {
        t->front->abort(t);
        return true;
    }
    t->front->send_end(t, NULL);
    return true;
}

/* Splits an authority into a NUL-terminated lowercase host (no brackets) and a port. */
static int
split_authority(struct vd_txn *t, struct vd_iov auth, uint16_t dflt_port, char **host,
                uint16_t *port)
{
    struct vd_iov h;
    uint16_t p = 0;
    bool v6 = false;
    const char *why = NULL;
    if (auth.len && auth.base == t->req.auth_of.base && auth.len == t->req.auth_of.len) {
        h = t->req.auth_host; /* the front parsed these very bytes */
        p = t->req.auth_port;
    } else if (auth.len == 0 ||
               vd_uri_parse_authority(auth.base, auth.len, &h, &p, &v6, &why) < 0) {
        return VD_EBADREQ;
    }
    char *s = vd_arena_alloc(&t->arena, h.len + 1);
    if (!s) {
        return VD_ENOMEM;
    }
    vd_hdr_lower((uint8_t *)s, h.base, h.len);
    s[h.len] = '\0';
    *host = s;
    *port = p ? p : dflt_port;
    return 0;
}

static bool
host_matches(const char *pattern, const char *host)
{
    if (!pattern) {
        return true;
    }
    if (pattern[0] == '*' && pattern[1] == '.') {
        size_t pl = strlen(pattern + 1), hl = strlen(host);
        return hl > pl && strcmp(host + hl - pl, pattern + 1) == 0;
    }
    return strcmp(pattern, host) == 0;
}

static const struct vd_conf_route *
find_route(const struct vd_conf *conf, const char *host, struct vd_iov path)
{
    for (size_t i = 0; i < conf->nroutes; i++) {
        const struct vd_conf_route *r = &conf->routes[i];
        if (!host_matches(r->host, host ? host : "")) {
            continue;
        }
        const char *pp = r->path_prefix ? r->path_prefix : "/";
        size_t pl = strlen(pp);
        if (path.len >= pl && memcmp(path.base, pp, pl) == 0) {
            return r;
        }
    }
    return NULL;
}

/* ---- access rules ---------------------------------------------------------------------- */

void
vd_txn_facts(const struct vd_txn *t, const char *host, uint16_t port, bool tunnel,
             struct vd_access_facts *f)
{
    *f = (struct vd_access_facts){
        .client = t->client,
        .user = t->user,
        .method = t->req.method,
        .dest_host = host,
        .dest_port = port,
        .declared = t->declared,
        .tunnel = tunnel,
    };
}

int
vd_txn_dns_failure(char *detail, size_t cap, const char *host, int status)
{
    if (status == VD_ENOTFOUND) {
        snprintf(detail, cap, "DNS lookup failed: %s does not resolve", host);
    } else {
        snprintf(detail, cap, "DNS lookup for %s failed: %s", host, vd_strerror(status));
    }
    return status == VD_ETIMEDOUT ? 504 : 502;
}

void
vd_txn_deny(struct vd_txn *t, const struct vd_conf_rule *rule)
{
    char detail[200];
    const char *name = rule ? rule->name : "default deny: no rule matched";
    snprintf(detail, sizeof(detail), "request not allowed by access rule \"%s\"", name);
    vd_log(VD_LOG_INFO, &t->log, "access denied by rule \"%s\"", name);
    vd_txn_respond_error(t, 403, detail, true);
}

int
vd_txn_check_addrs(struct vd_txn *t, const char *host, uint16_t port, bool tunnel,
                   struct vd_addrs *addrs, const struct vd_conf_rule **deny)
{
    struct vd_access_facts f;
    vd_txn_facts(t, host, port, tunnel, &f);
    f.known = VD_FACT_ADDR;
    size_t k = 0;
    bool pending = false;
    *deny = NULL;
    for (size_t i = 0; i < addrs->n; i++) {
        const struct vd_conf_rule *rule = NULL;
        f.dest_addr = (const struct sockaddr *)&addrs->a[i];
        enum vd_access_verdict v = vd_access_eval(t->conf, &f, &rule);
        if (v == VD_ACCESS_DENY) {
            if (!*deny) {
                *deny = rule;
            }
            continue;
        }
        pending |= v == VD_ACCESS_PENDING;
        addrs->a[k++] = addrs->a[i];
    }
    addrs->n = k;
    if (k == 0) {
        return VD_ACCESS_DENY;
    }
    *deny = NULL;
    return pending ? VD_ACCESS_PENDING : VD_ACCESS_ALLOW;
}

/* A lowercase copy of [@p, @p + @n) in the exchange's arena (NULL when out of memory). */
static char *
arena_lower(struct vd_txn *t, const uint8_t *p, size_t n)
{
    char *s = vd_arena_dup(&t->arena, p, n);
    for (char *q = s; q && *q; q++) {
        if (*q >= 'A' && *q <= 'Z') {
            *q = (char)(*q + 32);
        }
    }
    return s;
}

/* The first token of the Upgrade field, lowercased into the arena (the protocol a client
 * declares, RFC 9110 §7.8). NULL when absent. */
static const char *
declared_protocol(struct vd_txn *t)
{
    const struct vd_hdr *up = vd_hdr_find(t->req.hdrs, t->req.nhdrs, "upgrade");
    if (!up) {
        return NULL;
    }
    struct vd_iov rest = up->value, item;
    if (!vd_list_next(&rest, &item)) {
        return NULL;
    }
    /* "websocket/13": the protocol name without its version. */
    const uint8_t *slash = memchr(item.base, '/', item.len);
    return arena_lower(t, item.base, slash ? (size_t)(slash - item.base) : item.len);
}

/* CONNECT (RFC 9110 §9.3.6): authority-form target (checked by the parser), port allow-list,
 * rules, then the connect handler. */
static void
start_connect(struct vd_txn *t)
{
    if (t->mode != VD_MODE_FORWARD) {
        vd_txn_respond_error(t, 405, "CONNECT is served on forward proxy listeners only", true);
        return;
    }
    if (t->req.framing.kind != VD_BODY_NONE) {
        /* A body on CONNECT has no defined meaning and would be read as tunnel data by some
         * hops and as a body by others: refuse it (RFC 9110 §9.3.6). */
        vd_txn_respond_error(t, 400, "malformed request from client: CONNECT with a body", true);
        return;
    }
    char *host = NULL;
    uint16_t port = 0;
    if (split_authority(t, t->req.authority, 0, &host, &port) < 0 || port == 0) {
        vd_txn_respond_error(t, 400, "malformed request from client: CONNECT target", true);
        return;
    }
    if (!vd_connect_port_allowed(t->conf, port)) {
        char detail[120];
        snprintf(detail, sizeof(detail), "CONNECT to port %u is not allowed (connect.ports)", port);
        vd_log(VD_LOG_INFO, &t->log, "CONNECT %s:%u refused: port not allowed", host, port);
        vd_txn_respond_error(t, 403, detail, true);
        return;
    }
    struct vd_access_facts f;
    vd_txn_facts(t, host, port, true, &f);
    const struct vd_conf_rule *rule = NULL;
    enum vd_access_verdict v = vd_access_eval(t->conf, &f, &rule);
    if (v == VD_ACCESS_DENY) {
        vd_txn_deny(t, rule);
        return;
    }
    vd_connect_start(t, host, port, (int)v);
}

/* True when the rules refuse @client whatever else the request says: no rule that could allow
 * it comes before a rule that tests nothing but the client address (or the end of the list). */
static bool
client_surely_denied(const struct vd_conf *c, const struct sockaddr *client,
                     const struct vd_conf_rule **rule)
{
    for (size_t i = 0; i < c->nrules; i++) {
        const struct vd_conf_rule *r = &c->rules[i];
        bool in = r->nclients == 0;
        for (size_t k = 0; k < r->nclients && !in; k++) {
            in = vd_cidr_match(&r->clients[k], client);
        }
        if (!in) {
            continue;
        }
        bool only_client = r->nusers == 0 && r->nmethods == 0 && r->ndest_hosts == 0 &&
                           r->ndest_nets == 0 && r->ndest_ports == 0 && r->ndeclared == 0 &&
                           r->nprotocols == 0 && r->nsnis == 0 && r->nalpns == 0 &&
                           r->sni_mismatch <= 0 && r->declared_mismatch <= 0;
        if (only_client) {
            *rule = r;
            return !r->allow;
        }
        if (r->allow) {
            return false;
        }
    }
    *rule = NULL;
    return true;
}

/* Routing after authentication: CONNECT, requests answered here, forward and reverse. */
/* Extended CONNECT (RFC 8441) on an HTTP/2 stream: connect-udp (RFC 9298) and connect-ip
 * (RFC 9484) go to the MASQUE handlers; websocket goes through routing like a request, and the
 * forward handler turns it into an HTTP/1.1 Upgrade. Returns true when answered here. */
static bool
route_extended(struct vd_txn *t)
{
    char *p = arena_lower(t, t->req.protocol.base, t->req.protocol.len);
    t->declared = p;
    if (p && strcmp(p, "connect-udp") == 0) {
        if (!vd_masque_udp_try(t)) {
            vd_txn_respond_error(t, 404, "no connect-udp URI template matches this path", false);
        }
        return true;
    }
    if (p && strcmp(p, "connect-ip") == 0) {
        if (!vd_masque_ip_try(t)) {
            vd_txn_respond_error(t, 404, "no connect-ip URI template matches this path", false);
        }
        return true;
    }
    if (p && strcmp(p, "websocket") == 0) {
        const struct vd_conf_tunnel *tc = &t->conf->tunnel;
        for (size_t i = 0; i < tc->nupgrade_protocols; i++) {
            if (strcmp(tc->upgrade_protocols[i], p) == 0) {
                return false; /* routed like a request; forward.c does the Upgrade */
            }
        }
        vd_txn_respond_error(t, 403, "websocket is not allowed (tunnel.upgrade_protocols)", false);
        return true;
    }
    char detail[160];
    snprintf(detail, sizeof(detail), "extended CONNECT for protocol '%.60s' is not supported",
             p ? p : "");
    vd_txn_respond_error(t, 501, detail, false);
    return true;
}

/* RFC 9110 §7.6.3: a request whose Via already names this proxy limits.via_loop times went round
 * a loop (a parent or a route that leads back here): 508 (RFC 5842), never forwarded again. Each
 * pass adds one member, so a loop ends after that many passes instead of when every hop's
 * connections or the header block run out. */
static bool
forwarding_loop(struct vd_txn *t)
{
    const struct vd_conf *c = t->conf;
    if (!c->limits.via_loop || !c->via_enabled || !c->via) {
        return false;
    }
    size_t k = vd_via_count(t->req.hdrs, t->req.nhdrs, c->via);
    if (k < c->limits.via_loop) {
        return false;
    }
    char detail[160];
    snprintf(detail, sizeof(detail),
             "forwarding loop: the request already passed a proxy named %s %zu times (Via)", c->via,
             k);
    vd_log(VD_LOG_INFO, &t->log, "%s", detail);
    vd_txn_respond_error(t, 508, detail, false);
    return true;
}

static void
txn_route(struct vd_txn *t)
{
    t->declared = declared_protocol(t);
    if (forwarding_loop(t)) {
        return;
    }
    if (method_is(t, "CONNECT") && t->req.protocol.len) {
        if (route_extended(t)) {
            return;
        }
    } else if (method_is(t, "CONNECT")) {
        start_connect(t);
        return;
    }
    if (answer_max_forwards(t)) {
        return;
    }
    if (t->req.form == VD_TARGET_ORIGIN && t->declared && strcmp(t->declared, "connect-udp") == 0 &&
        vd_masque_udp_try(t)) {
        return;
    }
    if (t->req.form == VD_TARGET_ORIGIN && t->declared && strcmp(t->declared, "connect-ip") == 0 &&
        vd_masque_ip_try(t)) {
        return;
    }
    char *host = NULL;
    uint16_t port = 0;
    bool https = false;
    if (t->req.form == VD_TARGET_ABSOLUTE) {
        https = t->req.scheme.len == 5;
        if (split_authority(t, t->req.authority, https ? 443 : 80, &host, &port) < 0) {
            vd_txn_respond_error(t, 400, "malformed request from client: invalid authority", true);
            return;
        }
    } else if (t->req.authority.len) {
        if (split_authority(t, t->req.authority, 80, &host, &port) < 0) {
            vd_txn_respond_error(t, 400, "malformed request from client: invalid Host", true);
            return;
        }
    }
    const struct vd_conf_route *route = NULL;
    if (t->req.form != VD_TARGET_ABSOLUTE || t->mode != VD_MODE_FORWARD) {
        route = find_route(t->conf, host, t->req.path);
        if (!route) {
            if (t->mode == VD_MODE_FORWARD) {
                vd_txn_respond_error(t, 400,
                                     "not a proxy request: a forward proxy needs an absolute URI "
                                     "(http://host/path)",
                                     false);
            } else {
                vd_txn_respond_error(t, 404, "no route matches this host and path", false);
            }
            return;
        }
    }
    /* Rules see the destination the client asked for (reverse: the Host it named). */
    struct vd_access_facts f;
    vd_txn_facts(t, host, port, false, &f); /* Upgrade relays are not sniffed */
    const struct vd_conf_rule *rule = NULL;
    enum vd_access_verdict v = vd_access_eval(t->conf, &f, &rule);
    if (v == VD_ACCESS_DENY) {
        vd_txn_deny(t, rule);
        return;
    }
    t->access_pending = v == VD_ACCESS_PENDING;
    if (route) {
        const struct vd_conf_server *s = &route->servers[0]; /* a group picks its own later */
        vd_forward_start(t, s->host, s->port, s->tls, route);
    } else {
        vd_forward_start(t, host, port, https, NULL);
    }
}

/* The 2 KiB class of vd_mc_alloc (its 16-byte header included): VD_ARENA_FIRST was sized to
 * fill it. A field added to struct vd_txn comes out of VD_ARENA_FIRST. */
_Static_assert(sizeof(struct vd_txn) + 16 <= 2048, "struct vd_txn outgrew its size class");

struct vd_txn *
vd_txn_new(size_t arena_max)
{
    struct vd_txn *t = vd_mc_alloc(sizeof(*t));
    if (!t) {
        return NULL;
    }
    /* Most of the struct is the arena's first block, which calloc would zero for nothing. */
    size_t a0 = offsetof(struct vd_txn, arena) + offsetof(struct vd_arena, first);
    size_t a1 = a0 + sizeof(t->arena.first);
    memset(t, 0, a0);
    memset((char *)t + a1, 0, sizeof(*t) - a1);
    vd_arena_init(&t->arena, arena_max);
    return t;
}

void
vd_txn_start(struct vd_txn *t)
{
    /* Client address rules first, so that a client from a refused network is told so without
     * being asked for credentials. */
    const struct vd_conf_rule *rule = NULL;
    if (client_surely_denied(t->conf, t->client, &rule)) {
        vd_txn_deny(t, rule);
        return;
    }
    if (t->mode == VD_MODE_ADMIN) {
        vd_admin_start(t);
        return;
    }
    if (t->mode == VD_MODE_FORWARD && t->conf->auth.db) {
        vd_txn_auth(t, txn_route);
        return;
    }
    txn_route(t);
}

/* ---- access log ---------------------------------------------------------------------------- */

static size_t
fmt_time(char *out, size_t cap)
{
    static _Thread_local time_t last_sec = -1;
    static _Thread_local char last[32];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != last_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(last, sizeof(last), "%Y-%m-%dT%H:%M:%S", &tm);
        last_sec = ts.tv_sec;
    }
    int n = snprintf(out, cap, "%.20s.%03dZ", last, (int)(ts.tv_nsec / 1000000) % 1000);
    return n > 0 ? (size_t)n : 0;
}

/* Optional fields: the authenticated user, and for tunnels what was relayed and seen inside.
 * Text: " user=U tunnel=P sni=S alpn=A up=N down=N end=E deny=R"; JSON: the same as members. */
static void
log_extra(const struct vd_txn *t, bool json, char *out, size_t cap)
{
    size_t n = 0;
    char esc[300];
    out[0] = '\0';
#define ADD(...)                                                                                   \
    do {                                                                                           \
        int k_ = snprintf(out + n, cap - n, __VA_ARGS__);                                          \
        if (k_ > 0) {                                                                              \
            n = VD_MIN(cap - 1, n + (size_t)k_);                                                   \
        }                                                                                          \
    } while (0)
#define ADDS(key, val)                                                                             \
    do {                                                                                           \
        vd_log_escape_as(esc, sizeof(esc), (const uint8_t *)(val), strlen(val), json);             \
        if (json) {                                                                                \
            ADD(",\"%s\":\"%s\"", key, esc);                                                       \
        } else {                                                                                   \
            ADD(" %s=%s", key, esc);                                                               \
        }                                                                                          \
    } while (0)
#define ADDN(key, val) ADD(json ? ",\"%s\":%llu" : " %s=%llu", key, (unsigned long long)(val))
    if (t->user) {
        ADDS("user", t->user);
    }
    if (t->stats.cache) {
        /* "fwd=uri-miss; stored" is logged as one token: "fwd=uri-miss,stored". */
        char cs[96];
        size_t k = 0;
        for (const char *q = t->stats.cache; *q && k + 1 < sizeof(cs); q++) {
            if (*q == ';') {
                cs[k++] = ',';
            } else if (*q != ' ') {
                cs[k++] = *q;
            }
        }
        cs[k] = '\0';
        ADDS("cache", cs);
    }
    if (t->stats.bytes_spliced) {
        ADDN("spliced", t->stats.bytes_spliced);
    }
    if (t->stats.tunnel) {
        ADDS("tunnel", t->stats.tun_proto ? t->stats.tun_proto : "unknown");
        if (t->stats.tun_sni) {
            ADDS("sni", t->stats.tun_sni);
        }
        if (t->stats.tun_alpn) {
            ADDS("alpn", t->stats.tun_alpn);
        }
        ADDN("up", t->stats.tun_up);
        ADDN("down", t->stats.tun_down);
        if (t->stats.tun_end) {
            ADDS("end", t->stats.tun_end);
        }
        if (t->stats.deny_rule) {
            ADDS("deny", t->stats.deny_rule);
        }
        if (t->stats.dgrams) {
            ADDN("dgrams_up", t->stats.dg_up);
            ADDN("dgrams_down", t->stats.dg_down);
        }
        if (t->stats.dg_drops) {
            ADDN("dropped_up", t->stats.dg_drop_up);
            ADDN("dropped_down", t->stats.dg_drop_down);
            ADDN("icmp", t->stats.dg_icmp);
        }
    }
#undef ADDN
#undef ADDS
#undef ADD
}

void
vd_txn_log(struct vd_txn *t)
{
    struct vd_worker *w = t->w;
    uint64_t dur = uv_hrtime() - t->stats.start_ns;
    vd_metrics_exchange(&w->metrics, t, dur);
    if (w->alog_fd < 0) {
        return;
    }
    char tm[40], method[64], target[1024], up[32];
    fmt_time(tm, sizeof(tm));
    vd_log_escape_as(method, sizeof(method), t->req.method.base, t->req.method.len, w->alog_json);
    vd_log_escape_as(target, sizeof(target), t->req.target.base, t->req.target.len, w->alog_json);
    double total = (double)dur / 1e6;
    const char *reuse = !t->stats.upstream_used ? "-" : t->stats.upstream_reused ? "reused" : "new";
    if (t->stats.upstream_used) {
        snprintf(up, sizeof(up), "%.3f", (double)t->stats.upstream_ns / 1e6);
    } else {
        snprintf(up, sizeof(up), w->alog_json ? "null" : "-");
    }
    char extra[1024];
    log_extra(t, w->alog_json, extra, sizeof(extra));
    int r;
    if (w->alog_json) {
        r = vd_dbuf_addf(&w->alog,
                         "{\"time\":\"%s\",\"client\":\"%s\",\"method\":\"%s\",\"target\":\"%s\","
                         "\"version\":\"HTTP/%d.%d\",\"status\":%d,\"bytes_in\":%llu,"
                         "\"bytes_out\":%llu,\"upstream_ms\":%s,\"total_ms\":%.3f,"
                         "\"upstream_conn\":\"%s\",\"conn\":%llu%s}\n",
                         tm, t->client_text, method, target, t->req.version / 10,
                         t->req.version % 10, t->status, (unsigned long long)t->stats.bytes_in,
                         (unsigned long long)t->stats.bytes_out, up, total,
                         t->stats.upstream_used ? reuse : "none",
                         (unsigned long long)t->log.conn_id, extra);
    } else if (t->req.method.len) {
        r = vd_dbuf_addf(&w->alog, "%s %s \"%s %s HTTP/%d.%d\" %d %llu %llu %s %.3f %s c=%llu%s\n",
                         tm, t->client_text, method, target, t->req.version / 10,
                         t->req.version % 10, t->status, (unsigned long long)t->stats.bytes_in,
                         (unsigned long long)t->stats.bytes_out, up, total, reuse,
                         (unsigned long long)t->log.conn_id, extra);
    } else {
        /* A request that did not parse: log the escaped first line as received. */
        r = vd_dbuf_addf(&w->alog, "%s %s \"%s\" %d %llu %llu %s %.3f %s c=%llu\n", tm,
                         t->client_text, target, t->status, (unsigned long long)t->stats.bytes_in,
                         (unsigned long long)t->stats.bytes_out, up, total, reuse,
                         (unsigned long long)t->log.conn_id);
    }
    if (r < 0 || w->alog.len > 16384) {
        vd_alog_flush(w);
        if (r < 0) {
            vd_log(VD_LOG_ERR, NULL, "access log buffer full; a line was dropped");
        }
    }
}

void
vd_alog_flush(struct vd_worker *w)
{
    size_t off = 0;
    while (off < w->alog.len) {
        ssize_t n = write(w->alog_fd, w->alog.p + off, w->alog.len - off);
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    vd_dbuf_reset(&w->alog);
}
