/* SPDX-License-Identifier: MIT */
/* Admin listeners: Prometheus metrics (text exposition format 0.0.4) and a health check. Every
 * worker counts its own exchanges and connections (vd/metrics.h); a scrape, answered by whichever
 * worker accepted it, sums all workers' counters and adds the cache's and the process's figures.
 * Nothing here takes a lock on the request path. */
#include "vd/config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <uv.h>

#include "vd/cache.h"
#include "vd/err.h"
#include "vd/mcache.h"
#include "vd/metrics.h"
#include "vd/proxy.h"
#include "vd/sock.h"

#define MAX_REGISTERED 256       /* workers (conf: at most 256) */
#define BODY_MAX       (4 << 20) /* bound of one rendered scrape */

/* Written by the main thread only while no worker thread runs; read by workers. */
static struct vd_wmetrics *reg[MAX_REGISTERED];
static size_t nreg;
static int64_t start_time;
static _Atomic uint64_t reloads_applied, reloads_refused;

static const double dur_bounds[VD_METRICS_DUR_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
/* The same in nanoseconds, for the request path. */
static const uint64_t dur_bounds_ns[VD_METRICS_DUR_BUCKETS] = {
    500000,    1000000,   2500000,   5000000,    10000000,   25000000,   50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000};

int
vd_metrics_register(struct vd_wmetrics *m, size_t nlisteners)
{
    memset(m, 0, sizeof(*m));
    if (nreg == MAX_REGISTERED) {
        return VD_ENOMEM;
    }
    m->accepted = calloc(nlisteners ? nlisteners : 1, sizeof(*m->accepted));
    if (!m->accepted) {
        return VD_ENOMEM;
    }
    m->nlisteners = nlisteners;
    if (nreg == 0 && start_time == 0) {
        start_time = (int64_t)time(NULL);
    }
    reg[nreg++] = m;
    return 0;
}

void
vd_metrics_unregister(struct vd_wmetrics *m)
{
    for (size_t i = 0; i < nreg; i++) {
        if (reg[i] == m) {
            reg[i] = reg[--nreg];
            break;
        }
    }
    free(m->accepted);
    m->accepted = NULL;
    m->nlisteners = 0;
}

void
vd_metrics_reload(bool ok)
{
    atomic_fetch_add_explicit(ok ? &reloads_applied : &reloads_refused, 1, memory_order_relaxed);
}

/* The RFC 9211 outcome in a Cache-Status value after "viaduct; ": "hit; ttl=N" or "fwd=X; ...". */
static enum vd_metrics_cache
cache_outcome(const char *cs)
{
    static const struct {
        const char *name;
        enum vd_metrics_cache v;
    } fwd[] = {
        {"uri-miss", VD_MCS_URI_MISS}, {"vary-miss", VD_MCS_VARY_MISS}, {"miss", VD_MCS_MISS},
        {"stale", VD_MCS_STALE},       {"partial", VD_MCS_PARTIAL},     {"bypass", VD_MCS_BYPASS},
        {"method", VD_MCS_METHOD},     {"request", VD_MCS_REQUEST},
    };

    if (strncmp(cs, "hit", 3) == 0 && (cs[3] == '\0' || cs[3] == ';')) {
        return VD_MCS_HIT;
    }
    if (strncmp(cs, "fwd=", 4) != 0) {
        return VD_MCS_OTHER;
    }
    cs += 4;
    size_t n = strcspn(cs, "; ");
    for (size_t i = 0; i < VD_ARRAY_LEN(fwd); i++) {
        if (strlen(fwd[i].name) == n && memcmp(fwd[i].name, cs, n) == 0) {
            return fwd[i].v;
        }
    }
    return VD_MCS_OTHER;
}

static enum vd_metrics_tunnel
tunnel_type(const struct vd_txn *t)
{
    if (t->declared && strcmp(t->declared, "connect-udp") == 0) {
        return VD_MTUN_UDP;
    }
    if (t->declared && strcmp(t->declared, "connect-ip") == 0) {
        return VD_MTUN_IP;
    }
    if (t->req.method.len == 7 && memcmp(t->req.method.base, "CONNECT", 7) == 0 &&
        t->req.protocol.len == 0) {
        return VD_MTUN_CONNECT;
    }
    return VD_MTUN_UPGRADE;
}

void
vd_metrics_exchange(struct vd_wmetrics *m, const struct vd_txn *t, uint64_t dur_ns)
{
    const struct vd_txn_stats *s = &t->stats;
    size_t v = t->req.method.len == 0 ? 3 : t->req.version >= 20 ? 2 : t->req.version == 10 ? 0 : 1;
    if (v < 3) {
        vd_metric_add(&m->requests[v], 1);
    }
    if (t->status >= 100 && t->status <= 599) {
        vd_metric_add(&m->responses[t->status / 100 - 1], 1);
    } else {
        vd_metric_add(&m->no_response, 1);
    }
    vd_metric_add(&m->bytes_in, s->bytes_in);
    vd_metric_add(&m->bytes_out, s->bytes_out);
    if (s->upstream_used) {
        vd_metric_add(s->upstream_reused ? &m->upstream_reused : &m->upstream_new, 1);
    }
    if (s->cache) {
        vd_metric_add(&m->cache[cache_outcome(s->cache)], 1);
    }
    if (s->tunnel) {
        vd_metric_add(&m->tunnels[tunnel_type(t)], 1);
        vd_metric_add(&m->tun_up, s->tun_up);
        vd_metric_add(&m->tun_down, s->tun_down);
        if (s->dgrams) {
            vd_metric_add(&m->dgram_up, s->dg_up);
            vd_metric_add(&m->dgram_down, s->dg_down);
        }
        return; /* a tunnel's lifetime says nothing about request latency */
    }
    size_t b = 0;
    while (b < VD_METRICS_DUR_BUCKETS && dur_ns > dur_bounds_ns[b]) {
        b++;
    }
    vd_metric_add(&m->dur[b], 1);
    vd_metric_add(&m->dur_us, dur_ns / 1000);
}

/* ---- rendering ----------------------------------------------------------------------------- */

static uint64_t
rd(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Sum of one counter over every worker: @off is its offset in struct vd_wmetrics. */
static uint64_t
sum_at(size_t off)
{
    uint64_t s = 0;
    for (size_t i = 0; i < nreg; i++) {
        s += rd((const _Atomic uint64_t *)(const void *)((const char *)reg[i] + off));
    }
    return s;
}

#define SUM(field) sum_at(offsetof(struct vd_wmetrics, field))

static int
family(struct vd_dbuf *d, const char *name, const char *type, const char *help)
{
    return vd_dbuf_addf(d, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int
sample(struct vd_dbuf *d, const char *name, const char *labels, uint64_t v)
{
    return vd_dbuf_addf(d, "%s%s%s%s %" PRIu64 "\n", name, labels ? "{" : "", labels ? labels : "",
                        labels ? "}" : "", v);
}

/* A label value with backslash, double quote and line feed escaped (exposition format). */
static void
label_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            out[n++] = '\\';
            out[n++] = *s;
        } else if (*s == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
}

static int
render_connections(struct vd_dbuf *d, const struct vd_conf *conf, const int *fds)
{
    int r = family(d, "viaduct_connections_accepted_total", "counter",
                   "Client connections accepted, by listener address.");
    for (size_t l = 0; l < conf->nlisteners && r == 0; l++) {
        uint64_t s = 0;
        for (size_t i = 0; i < nreg; i++) {
            s += l < reg[i]->nlisteners ? rd(&reg[i]->accepted[l]) : 0;
        }
        /* The bound address: with port 0 in the file, the port the kernel chose. */
        char addr[80], esc[300], lab[320];
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        const char *name = conf->listeners[l].addr_text;
        if (fds && fds[l] >= 0 && getsockname(fds[l], (struct sockaddr *)&ss, &sl) == 0 &&
            vd_sockaddr_text((const struct sockaddr *)&ss, true, addr, sizeof(addr))) {
            name = addr;
        }
        label_escape(esc, sizeof(esc), name);
        snprintf(lab, sizeof(lab), "listener=\"%s\"", esc);
        r = sample(d, "viaduct_connections_accepted_total", lab, s);
    }
    r = r ? r
          : family(d, "viaduct_connections_refused_total", "counter",
                   "Client connections answered 503 and closed at limits.max_connections.");
    r = r ? r : sample(d, "viaduct_connections_refused_total", NULL, SUM(refused));
    r = r ? r : family(d, "viaduct_client_connections", "gauge", "Client connections open now.");
    return r ? r : sample(d, "viaduct_client_connections", NULL, SUM(conns_open));
}

static int
render_http(struct vd_dbuf *d)
{
    static const char *const ver[] = {"version=\"1.0\"", "version=\"1.1\"", "version=\"2\""};
    static const char *const cls[] = {"code=\"1xx\"", "code=\"2xx\"", "code=\"3xx\"",
                                      "code=\"4xx\"", "code=\"5xx\""};
    int r = family(d, "viaduct_http_requests_total", "counter",
                   "Exchanges by the HTTP version of the request (heads that did not parse are "
                   "counted in responses only).");
    for (size_t i = 0; i < 3 && r == 0; i++) {
        r = sample(d, "viaduct_http_requests_total", ver[i],
                   sum_at(offsetof(struct vd_wmetrics, requests) + i * sizeof(_Atomic uint64_t)));
    }
    r = r ? r
          : family(d, "viaduct_http_responses_total", "counter",
                   "Final responses sent to clients, by status class.");
    for (size_t i = 0; i < 5 && r == 0; i++) {
        r = sample(d, "viaduct_http_responses_total", cls[i],
                   sum_at(offsetof(struct vd_wmetrics, responses) + i * sizeof(_Atomic uint64_t)));
    }
    r = r ? r
          : family(d, "viaduct_http_aborted_total", "counter",
                   "Exchanges that ended before a final status was sent (client gone, reset).");
    r = r ? r : sample(d, "viaduct_http_aborted_total", NULL, SUM(no_response));
    r = r ? r
          : family(d, "viaduct_client_received_bytes_total", "counter",
                   "Request bytes read from clients (heads and bodies; tunnels excluded).");
    r = r ? r : sample(d, "viaduct_client_received_bytes_total", NULL, SUM(bytes_in));
    r = r ? r
          : family(d, "viaduct_client_sent_bytes_total", "counter",
                   "Response bytes sent to clients (heads and bodies; tunnels excluded).");
    r = r ? r : sample(d, "viaduct_client_sent_bytes_total", NULL, SUM(bytes_out));
    r = r ? r
          : family(d, "viaduct_upstream_requests_total", "counter",
                   "Requests sent to origins, by connection: newly opened or reused from the "
                   "pool.");
    r = r ? r
          : sample(d, "viaduct_upstream_requests_total", "connection=\"new\"", SUM(upstream_new));
    r = r ? r
          : sample(d, "viaduct_upstream_requests_total", "connection=\"reused\"",
                   SUM(upstream_reused));
    if (r) {
        return r;
    }
    /* Duration histogram: cumulative buckets. */
    r = family(d, "viaduct_http_exchange_duration_seconds", "histogram",
               "Time from a complete request head to the end of the exchange (tunnels excluded).");
    uint64_t cum = 0;
    for (size_t b = 0; b <= VD_METRICS_DUR_BUCKETS && r == 0; b++) {
        cum += sum_at(offsetof(struct vd_wmetrics, dur) + b * sizeof(_Atomic uint64_t));
        char lab[32];
        if (b < VD_METRICS_DUR_BUCKETS) {
            snprintf(lab, sizeof(lab), "le=\"%g\"", dur_bounds[b]);
        } else {
            snprintf(lab, sizeof(lab), "le=\"+Inf\"");
        }
        r = sample(d, "viaduct_http_exchange_duration_seconds_bucket", lab, cum);
    }
    uint64_t us = SUM(dur_us);
    r = r ? r
          : vd_dbuf_addf(d,
                         "viaduct_http_exchange_duration_seconds_sum %" PRIu64 ".%06" PRIu64 "\n",
                         us / 1000000, us % 1000000);
    return r ? r : sample(d, "viaduct_http_exchange_duration_seconds_count", NULL, cum);
}

static int
render_tunnels(struct vd_dbuf *d)
{
    static const char *const typ[VD_MTUN_N] = {"type=\"connect\"", "type=\"upgrade\"",
                                               "type=\"connect-udp\"", "type=\"connect-ip\""};
    int r = family(d, "viaduct_tunnels_total", "counter",
                   "Tunnels that ended: CONNECT, Upgrade (WebSocket), connect-udp, connect-ip.");
    for (size_t i = 0; i < VD_MTUN_N && r == 0; i++) {
        r = sample(d, "viaduct_tunnels_total", typ[i],
                   sum_at(offsetof(struct vd_wmetrics, tunnels) + i * sizeof(_Atomic uint64_t)));
    }
    r = r ? r
          : family(d, "viaduct_tunnel_bytes_total", "counter",
                   "Payload relayed by tunnels that ended: up is client to target.");
    r = r ? r : sample(d, "viaduct_tunnel_bytes_total", "direction=\"up\"", SUM(tun_up));
    r = r ? r : sample(d, "viaduct_tunnel_bytes_total", "direction=\"down\"", SUM(tun_down));
    r = r ? r
          : family(d, "viaduct_tunnel_datagrams_total", "counter",
                   "Datagrams relayed by connect-udp and connect-ip tunnels that ended.");
    r = r ? r : sample(d, "viaduct_tunnel_datagrams_total", "direction=\"up\"", SUM(dgram_up));
    return r ? r
             : sample(d, "viaduct_tunnel_datagrams_total", "direction=\"down\"", SUM(dgram_down));
}

static int
render_cache(struct vd_dbuf *d, const struct vd_conf *conf)
{
    static const char *const res[VD_MCS_N] = {
        "result=\"hit\"",     "result=\"uri-miss\"", "result=\"vary-miss\"", "result=\"miss\"",
        "result=\"stale\"",   "result=\"partial\"",  "result=\"bypass\"",    "result=\"method\"",
        "result=\"request\"", "result=\"other\""};
    int r = family(d, "viaduct_cache_responses_total", "counter",
                   "Exchanges the cache took part in, by Cache-Status outcome (RFC 9211: hit, or "
                   "the fwd parameter).");
    for (size_t i = 0; i < VD_MCS_N && r == 0; i++) {
        r = sample(d, "viaduct_cache_responses_total", res[i],
                   sum_at(offsetof(struct vd_wmetrics, cache) + i * sizeof(_Atomic uint64_t)));
    }
    if (r || conf->cache.memory == 0) {
        return r;
    }
    struct vd_cache_stats cs;
    vd_cache_get_stats(&cs);
    r = family(d, "viaduct_cache_memory_bytes", "gauge", "Bytes held by the memory tier.");
    r = r ? r : sample(d, "viaduct_cache_memory_bytes", NULL, cs.bytes);
    r = r ? r
          : family(d, "viaduct_cache_entries", "gauge", "Stored responses in the memory index.");
    r = r ? r : sample(d, "viaduct_cache_entries", NULL, cs.entries);
    r = r ? r
          : family(d, "viaduct_cache_memory_files", "gauge",
                   "Stored bodies held in sealed memory files (cache.memory_files).");
    r = r ? r : sample(d, "viaduct_cache_memory_files", NULL, cs.memory_files);
    r = r ? r
          : family(d, "viaduct_cache_memory_evictions_total", "counter",
                   "Entries evicted from the memory tier to stay within cache.memory.");
    r = r ? r : sample(d, "viaduct_cache_memory_evictions_total", NULL, cs.evictions);
    struct vd_cache_disk_stats ds;
    vd_cache_disk_get_stats(&ds);
    if (r || !ds.open) {
        return r;
    }

    static const struct {
        const char *name, *type, *help;
        size_t off;
    } disk[] = {
        {"viaduct_cache_disk_objects", "gauge", "Files in the disk tier's index.",
         offsetof(struct vd_cache_disk_stats, objects)},
        {"viaduct_cache_disk_bytes", "gauge", "Bytes of the disk tier's files.",
         offsetof(struct vd_cache_disk_stats, bytes)},
        {"viaduct_cache_disk_writes_total", "counter", "Files written by the disk tier.",
         offsetof(struct vd_cache_disk_stats, writes)},
        {"viaduct_cache_disk_write_errors_total", "counter",
         "Disk writes that failed (disk full, I/O error).",
         offsetof(struct vd_cache_disk_stats, write_errors)},
        {"viaduct_cache_disk_queue_drops_total", "counter",
         "Responses not written to disk because the write queue was full.",
         offsetof(struct vd_cache_disk_stats, queue_drops)},
        {"viaduct_cache_disk_hits_total", "counter", "Lookups answered from a disk file.",
         offsetof(struct vd_cache_disk_stats, hits)},
        {"viaduct_cache_disk_corrupt_total", "counter",
         "Damaged disk files found and deleted (magic, lengths, checksum).",
         offsetof(struct vd_cache_disk_stats, corrupt)},
        {"viaduct_cache_disk_evictions_total", "counter",
         "Files removed to stay within cache.disk_size and cache.disk_objects.",
         offsetof(struct vd_cache_disk_stats, evictions)},
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(disk) && r == 0; i++) {
        uint64_t v;
        memcpy(&v, (const char *)&ds + disk[i].off, sizeof(v));
        r = family(d, disk[i].name, disk[i].type, disk[i].help);
        r = r ? r : sample(d, disk[i].name, NULL, v);
    }
    return r;
}

/* Servers of upstream groups (routes with several, or with health checks): requests, failures,
 * state, and the active health checks. */
/* upstream.parent: 0 while a parent is skipped after it could not be reached, else 1. */
static int
render_parents(struct vd_dbuf *d, const struct vd_conf *conf)
{
    const struct vd_conf_upstream *u = &conf->upstream;
    if (!u->nparents) {
        return 0;
    }
    static const char name[] = "viaduct_parent_up";
    int r = family(d, name, "gauge",
                   "1 while the parent proxy is used, 0 while it is skipped for "
                   "upstream.parent_fail_timeout after it could not be reached.");
    uint64_t now = uv_hrtime();
    for (size_t i = 0; i < u->nparents && r == 0; i++) {
        char esc[600], lab[640];
        label_escape(esc, sizeof(esc), u->parents[i].url);
        snprintf(lab, sizeof(lab), "parent=\"%s\"", esc);
        r = sample(d, name, lab,
                   atomic_load_explicit(&u->parent_down[i], memory_order_relaxed) <= now);
    }
    return r;
}

static int
render_groups(struct vd_dbuf *d, const struct vd_conf *conf)
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"viaduct_upstream_server_requests_total", "counter",
         "Requests sent to a server of an upstream group (since the last reload)."},
        {"viaduct_upstream_server_failures_total", "counter",
         "Connections to a server of an upstream group that failed (since the last reload)."},
        {"viaduct_upstream_server_active", "gauge",
         "Exchanges in progress on a server of an upstream group."},
        {"viaduct_upstream_server_up", "gauge",
         "0 while a failure marks the server down for fail_timeout or health checks hold it "
         "down, else 1."},
    };

    static const char hc_name[] = "viaduct_upstream_health_checks_total";

    bool any = false;
    for (size_t i = 0; i < conf->nroutes && !any; i++) {
        any = conf->routes[i].lb != NULL;
    }
    if (!any) {
        return 0;
    }
    uint64_t now = uv_hrtime();
    int r = 0;
    for (size_t f = 0; f < VD_ARRAY_LEN(fam) && r == 0; f++) {
        r = family(d, fam[f].name, fam[f].type, fam[f].help);
        for (size_t i = 0; i < conf->nroutes && r == 0; i++) {
            const struct vd_conf_route *rt = &conf->routes[i];
            for (size_t k = 0; rt->lb && k < rt->nservers && r == 0; k++) {
                const struct vd_lb_server *s = &rt->lb->srv[k];
                uint64_t v = f == 0   ? rd(&s->sent)
                             : f == 1 ? rd(&s->failures)
                             : f == 2
                                 ? atomic_load_explicit(&s->active, memory_order_relaxed)
                                 : rd(&s->down_until) <= now &&
                                       !atomic_load_explicit(&s->hc_down, memory_order_relaxed);
                char esc[600], lab[700];
                label_escape(esc, sizeof(esc), rt->servers[k].url);
                snprintf(lab, sizeof(lab), "route=\"%zu\",server=\"%s\"", i, esc);
                r = sample(d, fam[f].name, lab, v);
            }
        }
    }
    bool checks = false;
    for (size_t i = 0; i < conf->nroutes && !checks; i++) {
        checks = conf->routes[i].health.path != NULL;
    }
    if (r == 0 && checks) {
        r = family(d, hc_name, "counter",
                   "Active health checks of a server of a route, passed or failed (since the "
                   "last reload).");
    }
    for (size_t i = 0; i < conf->nroutes && checks && r == 0; i++) {
        const struct vd_conf_route *rt = &conf->routes[i];
        for (size_t k = 0; rt->health.path && k < rt->nservers && r == 0; k++) {
            const struct vd_lb_server *s = &rt->lb->srv[k];
            char esc[600], lab[720];
            label_escape(esc, sizeof(esc), rt->servers[k].url);
            snprintf(lab, sizeof(lab), "route=\"%zu\",server=\"%s\",result=\"ok\"", i, esc);
            r = sample(d, hc_name, lab, rd(&s->checks_ok));
            snprintf(lab, sizeof(lab), "route=\"%zu\",server=\"%s\",result=\"fail\"", i, esc);
            r = r ? r : sample(d, hc_name, lab, rd(&s->checks_fail));
        }
    }
    return r;
}

int
vd_metrics_render(struct vd_dbuf *d, const struct vd_conf *conf, const int *listen_fds)
{
    int r = family(d, "viaduct_build_info", "gauge", "The running viaduct's version; always 1.");
    r = r ? r : vd_dbuf_addf(d, "viaduct_build_info{version=\"%s\"} 1\n", VD_VERSION);
    r = r ? r
          : family(d, "viaduct_start_time_seconds", "gauge",
                   "Start of the process, seconds since the Unix epoch.");
    r = r ? r : vd_dbuf_addf(d, "viaduct_start_time_seconds %" PRId64 "\n", start_time);
    r = r ? r : family(d, "viaduct_workers", "gauge", "Worker threads.");
    r = r ? r : sample(d, "viaduct_workers", NULL, nreg);
    r = r ? r
          : family(d, "viaduct_config_reloads_total", "counter",
                   "Configuration reloads (SIGHUP), applied or refused.");
    r = r ? r
          : sample(d, "viaduct_config_reloads_total", "result=\"applied\"",
                   atomic_load_explicit(&reloads_applied, memory_order_relaxed));
    r = r ? r
          : sample(d, "viaduct_config_reloads_total", "result=\"refused\"",
                   atomic_load_explicit(&reloads_refused, memory_order_relaxed));
    r = r ? r : render_connections(d, conf, listen_fds);
    r = r ? r : render_http(d);
    r = r ? r : render_tunnels(d);
    r = r ? r : render_cache(d, conf);
    r = r ? r : render_groups(d, conf);
    return r ? r : render_parents(d, conf);
}

/* ---- the admin handler --------------------------------------------------------------------- */

#define ADMIN_MAGIC 0x41444d31u

struct admin {
    uint32_t magic;
    struct vd_txn *t;
    struct vd_dbuf body;
    size_t off;
};

static void
admin_free(struct vd_txn *t, struct admin *a)
{
    t->handler = NULL;
    t->handler_data = NULL;
    vd_dbuf_free(&a->body);
    a->magic = 0;
    vd_mc_free(a);
}

static void
admin_pump(struct admin *a)
{
    struct vd_txn *t = a->t;
    while (a->off < a->body.len) {
        ssize_t k =
            t->front->send_body(t, (const uint8_t *)a->body.p + a->off, a->body.len - a->off);
        if (k < 0) {
            admin_free(t, a);
            t->front->abort(t);
            return;
        }
        a->off += (size_t)k;
        if (a->off < a->body.len) {
            return; /* full: on_writable resumes */
        }
    }
    admin_free(t, a);
    t->front->send_end(t, NULL);
}

static ssize_t
admin_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    (void)t;
    (void)p;
    (void)end;
    return (ssize_t)len; /* discarded: GET and HEAD bodies mean nothing here */
}

static void
admin_writable(struct vd_txn *t)
{
    struct admin *a = t->handler_data;
    VD_BUG_ON(a->magic != ADMIN_MAGIC);
    admin_pump(a);
}

static void
admin_abort(struct vd_txn *t)
{
    struct admin *a = t->handler_data;
    if (a) {
        VD_BUG_ON(a->magic != ADMIN_MAGIC);
        admin_free(t, a);
    }
}

static const struct vd_handler_ops admin_ops = {
    .name = "admin",
    .on_req_body = admin_req_body,
    .on_writable = admin_writable,
    .on_abort = admin_abort,
};

/* Whether the request's path (query ignored) is @p. */
static bool
path_is(const struct vd_txn *t, const char *p)
{
    struct vd_iov path = t->req.path;
    const uint8_t *q = memchr(path.base, '?', path.len);
    size_t n = q ? (size_t)(q - path.base) : path.len;
    return n == strlen(p) && memcmp(path.base, p, n) == 0;
}

void
vd_admin_start(struct vd_txn *t)
{
    bool metrics = path_is(t, "/metrics");
    if (!metrics && !path_is(t, "/healthz")) {
        vd_txn_respond_error(t, 404, "admin listeners serve /metrics and /healthz", false);
        return;
    }
    bool head = t->req.method.len == 4 && memcmp(t->req.method.base, "HEAD", 4) == 0;
    bool get = t->req.method.len == 3 && memcmp(t->req.method.base, "GET", 3) == 0;
    if (!get && !head) {
        struct vd_hdr allow = {VD_IOV_LIT("Allow"), VD_IOV_LIT("GET, HEAD")};
        vd_txn_respond_with(t, 405, &allow, 1, "admin endpoints answer GET and HEAD", false);
        return;
    }
    struct admin *a = vd_mc_calloc(1, sizeof(*a));
    if (!a) {
        vd_txn_respond_error(t, 503, "out of memory for the admin answer", false);
        return;
    }
    a->magic = ADMIN_MAGIC;
    a->t = t;
    vd_dbuf_init(&a->body, BODY_MAX);
    /* /healthz: answering at all is the check (a draining worker accepts nothing new). */
    int r = metrics ? vd_metrics_render(&a->body, t->conf, t->w->listen_fds)
                    : vd_dbuf_add(&a->body, "ok\n", 3);
    if (r < 0) {
        vd_dbuf_free(&a->body);
        vd_mc_free(a);
        vd_txn_respond_error(t, 500, "the metrics did not fit the answer buffer", false);
        return;
    }
    char date[VD_HTTP_DATE_LEN + 1];
    vd_http_date_now(date);
    struct vd_hdr hdrs[] = {
        {VD_IOV_LIT("Date"), {(const uint8_t *)date, VD_HTTP_DATE_LEN}},
        {VD_IOV_LIT("Content-Type"), metrics
                                         ? VD_IOV_LIT("text/plain; version=0.0.4; charset=utf-8")
                                         : VD_IOV_LIT("text/plain; charset=utf-8")},
        {VD_IOV_LIT("Cache-Control"), VD_IOV_LIT("no-store")},
    };
    struct vd_resp resp = {
        .status = 200,
        .hdrs = hdrs,
        .nhdrs = VD_ARRAY_LEN(hdrs),
        .has_body = !head,
        .length = (int64_t)a->body.len,
    };
    t->handler = &admin_ops;
    t->handler_data = a;
    if (t->front->send_head(t, &resp) < 0) {
        admin_free(t, a);
        t->front->abort(t);
        return;
    }
    if (head) {
        admin_free(t, a);
        t->front->send_end(t, NULL);
        return;
    }
    admin_pump(a);
}
