/* SPDX-License-Identifier: MIT */
/* Upstream groups: which server of a route with several serves an exchange (round robin, least
 * connections, client address hash), and passive health: a server whose connection failed is
 * skipped for the route's fail_timeout while another is left. A server that active health
 * checks (health.c) hold down is skipped the same way. The state lives in the route's
 * configuration snapshot and is shared by the workers through relaxed atomics. */
#include "vd/config.h"

#include <netinet/in.h>
#include <uv.h>

#include "vd/proxy.h"

static uint64_t
client_hash(const struct sockaddr *sa)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    if (sa && sa->sa_family == AF_INET) {
        p = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
        n = 4;
    } else if (sa && sa->sa_family == AF_INET6) {
        p = (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        n = 16;
    }
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

int
vd_lb_pick(const struct vd_conf_route *r, const struct sockaddr *client, uint64_t tried)
{
    size_t n = r->nservers;
    if (!r->lb) {
        return tried & 1 ? -1 : 0;
    }
    struct vd_lb *lb = r->lb;
    size_t start = r->balance == VD_BALANCE_CLIENT_HASH
                       ? (size_t)(client_hash(client) % n)
                       : atomic_fetch_add_explicit(&lb->next, 1, memory_order_relaxed) % n;
    uint64_t now = uv_hrtime();
    int best = -1, fallback = -1;
    uint32_t best_active = UINT32_MAX;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (tried & (1ull << i)) {
            continue;
        }
        if (fallback < 0) {
            fallback = (int)i;
        }
        if (atomic_load_explicit(&lb->srv[i].down_until, memory_order_relaxed) > now ||
            atomic_load_explicit(&lb->srv[i].hc_down, memory_order_relaxed)) {
            continue;
        }
        if (r->balance != VD_BALANCE_LEAST_CONN) {
            return (int)i;
        }
        uint32_t a = atomic_load_explicit(&lb->srv[i].active, memory_order_relaxed);
        if (a < best_active) {
            best = (int)i;
            best_active = a;
        }
    }
    /* Every server is marked down (by a failure or by health checks): the exchange tries one
     * anyway rather than fail outright (a server may be back before its fail_timeout ends or
     * before its next check), but a failover never picks a marked one, so an exchange waits for
     * at most one server that is down. */
    return best >= 0 ? best : tried == 0 ? fallback : -1;
}

void
vd_lb_begin(const struct vd_conf_route *r, int i)
{
    if (r->lb) {
        atomic_fetch_add_explicit(&r->lb->srv[i].active, 1, memory_order_relaxed);
    }
}

void
vd_lb_end(const struct vd_conf_route *r, int i)
{
    if (r->lb) {
        atomic_fetch_sub_explicit(&r->lb->srv[i].active, 1, memory_order_relaxed);
    }
}

void
vd_lb_failed(const struct vd_conf_route *r, int i)
{
    if (!r->lb) {
        return;
    }
    atomic_fetch_add_explicit(&r->lb->srv[i].failures, 1, memory_order_relaxed);
    if (r->fail_timeout) {
        atomic_store_explicit(&r->lb->srv[i].down_until, uv_hrtime() + r->fail_timeout * 1000000ull,
                              memory_order_relaxed);
    }
}

void
vd_lb_ok(const struct vd_conf_route *r, int i)
{
    if (!r->lb) {
        return;
    }
    atomic_fetch_add_explicit(&r->lb->srv[i].sent, 1, memory_order_relaxed);
    if (atomic_load_explicit(&r->lb->srv[i].down_until, memory_order_relaxed)) {
        atomic_store_explicit(&r->lb->srv[i].down_until, 0, memory_order_relaxed);
    }
}
