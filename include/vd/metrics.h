/* SPDX-License-Identifier: MIT */
/* Counters behind the Prometheus endpoint of admin listeners (docs/configuration.md, "Admin
 * listeners and metrics"). Each worker owns one struct vd_wmetrics and is its only writer:
 * an update is a relaxed atomic load and store (plain moves on x86-64, no locked instruction on
 * the request path). The worker that answers a scrape reads every worker's counters with relaxed
 * loads, so a scrape sees each counter whole, never a torn value, and counters never go back. */
#ifndef VD_METRICS_H
#define VD_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vd/common.h"

struct vd_txn;
struct vd_conf;
struct vd_dbuf;

/* Upper bounds (seconds) of the exchange duration histogram; +Inf is the count. */
#define VD_METRICS_DUR_BUCKETS 14

enum vd_metrics_cache {
    VD_MCS_HIT,
    VD_MCS_URI_MISS,
    VD_MCS_VARY_MISS,
    VD_MCS_MISS,
    VD_MCS_STALE,
    VD_MCS_PARTIAL,
    VD_MCS_BYPASS,
    VD_MCS_METHOD,
    VD_MCS_REQUEST,
    VD_MCS_OTHER,
    VD_MCS_N
};

enum vd_metrics_tunnel {
    VD_MTUN_CONNECT, /* CONNECT, HTTP/1.1 or an HTTP/2 stream */
    VD_MTUN_UPGRADE, /* HTTP/1.1 Upgrade or extended CONNECT websocket relayed to an origin */
    VD_MTUN_UDP,     /* connect-udp */
    VD_MTUN_IP,      /* connect-ip */
    VD_MTUN_N
};

struct vd_wmetrics {
    _Atomic uint64_t *accepted; /* per listener index: connections taken */
    size_t nlisteners;
    _Atomic uint64_t refused;      /* connections answered 503 at limits.max_connections */
    _Atomic uint64_t conns_open;   /* gauge: client connections now open */
    _Atomic uint64_t requests[3];  /* HTTP/1.0, HTTP/1.1, HTTP/2 */
    _Atomic uint64_t responses[5]; /* 1xx .. 5xx final status sent */
    _Atomic uint64_t no_response;  /* exchanges that ended before any status was sent */
    _Atomic uint64_t bytes_in, bytes_out;
    _Atomic uint64_t upstream_new, upstream_reused;
    _Atomic uint64_t cache[VD_MCS_N];
    _Atomic uint64_t tunnels[VD_MTUN_N];
    _Atomic uint64_t tun_up, tun_down;     /* payload bytes client to target, target to client */
    _Atomic uint64_t dgram_up, dgram_down; /* connect-udp and connect-ip datagrams */
    _Atomic uint64_t dur[VD_METRICS_DUR_BUCKETS + 1]; /* per bucket, not cumulative; last: > top */
    _Atomic uint64_t dur_us;                          /* sum of durations, microseconds */
};

/* Adds @n to counter @c. Only @c's owning worker calls this. */
static inline void
vd_metric_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void
vd_metric_set(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

/* Sets up @m for @nlisteners listeners and lists it for scrapes. Main thread, before the worker
 * threads start. Returns 0 or VD_ENOMEM. */
VD_MUST_CHECK int vd_metrics_register(struct vd_wmetrics *m, size_t nlisteners);

/* Takes @m off the list and frees what it holds. Main thread, after the worker threads ended. */
void vd_metrics_unregister(struct vd_wmetrics *m);

/* Counts a configuration reload: applied or refused. Main thread. */
void vd_metrics_reload(bool ok);

/* Counts one finished exchange of worker metrics @m: version, status class, bytes, upstream
 * connection reuse, cache outcome, tunnel type and bytes, and the duration @dur_ns. */
void vd_metrics_exchange(struct vd_wmetrics *m, const struct vd_txn *t, uint64_t dur_ns);

/* Appends the Prometheus text exposition (format 0.0.4) of every registered worker, the cache
 * and the process to @out. Listeners are labelled with the address their socket in
 * @listen_fds (one per listener of @conf, or NULL) is bound to, else as @conf writes them.
 * Returns 0 or the dbuf's error. */
VD_MUST_CHECK int vd_metrics_render(struct vd_dbuf *out, const struct vd_conf *conf,
                                    const int *listen_fds);

/* The admin listener's handler: GET or HEAD /metrics and /healthz; 404 for other paths, 405 for
 * other methods. */
void vd_admin_start(struct vd_txn *t);

#endif
