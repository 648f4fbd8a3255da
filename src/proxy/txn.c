/* SPDX-License-Identifier: MIT */
/* Transactions: what happens between a complete request head and a handler. Client access
 * control, requests the proxy answers itself (Max-Forwards: 0, RFC 9110 §7.6.2), routing for
 * forward and reverse listeners, proxy-generated error responses, and the access log line. */
#include "vd/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vd/access.h"
#include "vd/err.h"
#include "vd/proxy.h"

void
vd_txn_respond_error(struct vd_txn *t, int status, const char *detail, bool close)
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
    struct vd_hdr hdrs[2] = {
        {VD_IOV_LIT("Date"), {(const uint8_t *)date, VD_HTTP_DATE_LEN}},
        {VD_IOV_LIT("Content-Type"), VD_IOV_LIT("text/plain; charset=utf-8")},
    };
    bool head = t->req.method.len == 4 && memcmp(t->req.method.base, "HEAD", 4) == 0;
    struct vd_resp resp = {
        .status = status,
        .hdrs = hdrs,
        .nhdrs = 2,
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
    r = r ? r : vd_dbuf_addf(&d, " HTTP/1.%d\r\n", t->req.version - 10);
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
    if (auth.len == 0 || vd_uri_parse_authority(auth.base, auth.len, &h, &p, &v6, &why) < 0) {
        return VD_EBADREQ;
    }
    char *s = vd_arena_dup(&t->arena, h.base, h.len);
    if (!s) {
        return VD_ENOMEM;
    }
    for (char *q = s; *q; q++) {
        if (*q >= 'A' && *q <= 'Z') {
            *q = (char)(*q + 32);
        }
    }
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

void
vd_txn_start(struct vd_txn *t)
{
    /* Access rules over what the head alone tells: client and method. A rule that needs a
     * later fact (destination address, a tunnel's first bytes) cannot decide yet, and PENDING
     * lets the request through for now. */
    const struct vd_conf_rule *rule = NULL;
    struct vd_access_facts facts = {.client = t->client, .method = t->req.method};
    if (vd_access_eval(t->conf, &facts, &rule) == VD_ACCESS_DENY) {
        char detail[160];
        const char *name = rule ? rule->name : "default deny: no rule matched";
        snprintf(detail, sizeof(detail), "request not allowed by access rule \"%s\"", name);
        vd_log(VD_LOG_INFO, &t->log, "access denied by rule \"%s\"", name);
        vd_txn_respond_error(t, 403, detail, true);
        return;
    }
    if (method_is(t, "CONNECT")) {
        vd_txn_respond_error(t, 501, "CONNECT tunnels are not supported yet", true);
        return;
    }
    if (answer_max_forwards(t)) {
        return;
    }
    char *host = NULL;
    uint16_t port = 0;
    if (t->req.form == VD_TARGET_ABSOLUTE) {
        bool https = t->req.scheme.len == 5;
        if (split_authority(t, t->req.authority, https ? 443 : 80, &host, &port) < 0) {
            vd_txn_respond_error(t, 400, "malformed request from client: invalid authority", true);
            return;
        }
        if (t->mode == VD_MODE_FORWARD) {
            vd_forward_start(t, host, port, https, NULL);
            return;
        }
    } else if (t->req.authority.len) {
        if (split_authority(t, t->req.authority, 80, &host, &port) < 0) {
            vd_txn_respond_error(t, 400, "malformed request from client: invalid Host", true);
            return;
        }
    }
    const struct vd_conf_route *route = find_route(t->conf, host, t->req.path);
    if (route) {
        vd_forward_start(t, route->up_host, route->up_port, route->up_tls, route);
        return;
    }
    if (t->mode == VD_MODE_FORWARD) {
        vd_txn_respond_error(t, 400,
                             "not a proxy request: a forward proxy needs an absolute URI "
                             "(http://host/path)",
                             false);
        return;
    }
    vd_txn_respond_error(t, 404, "no route matches this host and path", false);
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

void
vd_txn_log(struct vd_txn *t)
{
    struct vd_worker *w = t->w;
    if (w->alog_fd < 0) {
        return;
    }
    char tm[40], method[64], target[1024], up[32];
    fmt_time(tm, sizeof(tm));
    vd_log_escape_as(method, sizeof(method), t->req.method.base, t->req.method.len, w->alog_json);
    vd_log_escape_as(target, sizeof(target), t->req.target.base, t->req.target.len, w->alog_json);
    double total = (double)(uv_hrtime() - t->stats.start_ns) / 1e6;
    const char *reuse = !t->stats.upstream_used ? "-" : t->stats.upstream_reused ? "reused" : "new";
    if (t->stats.upstream_used) {
        snprintf(up, sizeof(up), "%.3f", (double)t->stats.upstream_ns / 1e6);
    } else {
        snprintf(up, sizeof(up), w->alog_json ? "null" : "-");
    }
    int r;
    if (w->alog_json) {
        r = vd_dbuf_addf(
            &w->alog,
            "{\"time\":\"%s\",\"client\":\"%s\",\"method\":\"%s\",\"target\":\"%s\","
            "\"version\":\"HTTP/%d.%d\",\"status\":%d,\"bytes_in\":%llu,"
            "\"bytes_out\":%llu,\"upstream_ms\":%s,\"total_ms\":%.3f,"
            "\"upstream_conn\":\"%s\",\"conn\":%llu}\n",
            tm, t->client_text, method, target, t->req.version / 10, t->req.version % 10, t->status,
            (unsigned long long)t->stats.bytes_in, (unsigned long long)t->stats.bytes_out, up,
            total, t->stats.upstream_used ? reuse : "none", (unsigned long long)t->log.conn_id);
    } else if (t->req.method.len) {
        r = vd_dbuf_addf(&w->alog, "%s %s \"%s %s HTTP/%d.%d\" %d %llu %llu %s %.3f %s c=%llu\n",
                         tm, t->client_text, method, target, t->req.version / 10,
                         t->req.version % 10, t->status, (unsigned long long)t->stats.bytes_in,
                         (unsigned long long)t->stats.bytes_out, up, total, reuse,
                         (unsigned long long)t->log.conn_id);
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
