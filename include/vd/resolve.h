/* SPDX-License-Identifier: MIT */
/* Asynchronous DNS with c-ares on a worker's libuv loop, with a TTL-bounded positive cache and a
 * negative cache in front. Name servers from /etc/resolv.conf or the configuration. /etc/hosts is
 * honoured (c-ares reads it). IP literals never reach DNS. */
#ifndef VD_RESOLVE_H
#define VD_RESOLVE_H

#include <sys/socket.h>
#include <uv.h>

#include "vd/common.h"
#include "vd/conf.h"

#define VD_RESOLVE_MAX_ADDRS 8

struct vd_addrs {
    size_t n;
    struct sockaddr_storage a[VD_RESOLVE_MAX_ADDRS]; /* port 0; IPv4 first, then IPv6 */
};

struct vd_resolver;
struct vd_resolve_query;

/* Called once with 0 and the addresses, or VD_ENOTFOUND (NXDOMAIN/no data), VD_ETIMEDOUT or
 * VD_EDNS (other failures). Never called after vd_resolve_cancel(). */
typedef void (*vd_resolve_cb)(void *arg, int status, const struct vd_addrs *addrs);

/* Creates a resolver on @loop. Returns 0 or VD_EDNS/VD_ECONF with @err. */
VD_MUST_CHECK int vd_resolver_new(uv_loop_t *loop, const struct vd_conf_resolver *rc,
                                  struct vd_resolver **out, char *err, size_t errlen);

/* Cancels all queries (their callbacks are not called) and closes handles; memory is freed when
 * the last libuv close callback has run, so run the loop afterwards. May be called from inside a
 * vd_resolve_cb. Query handles from vd_resolve() are invalid afterwards (do not cancel them). */
void vd_resolver_free(struct vd_resolver *r);

/* Resolves @host (NUL-terminated, no brackets). Returns 0 with *@out filled when answered at
 * once (IP literal, cache hit, or an /etc/hosts entry, which c-ares answers synchronously),
 * VD_ENOTFOUND when negatively cached or not a valid host name, or VD_EAGAIN when a query is
 * pending: then *@q is set and @cb fires later from the loop (never before this returns). A lookup
 * that fails before any packet is sent returns its status (VD_EDNS...) at once; VD_ENOMEM when out
 * of memory. *@q is NULL unless VD_EAGAIN is returned. */
VD_MUST_CHECK int vd_resolve(struct vd_resolver *r, const char *host, struct vd_addrs *out,
                             vd_resolve_cb cb, void *arg, struct vd_resolve_query **q);

/* Cancels a pending query; its callback will not be called. The lookup itself continues and fills
 * the cache. @q is invalid once its callback has run or after vd_resolver_free(). */
void vd_resolve_cancel(struct vd_resolve_query *q);

/* Counters for tests and metrics. queries: lookups handed to c-ares (coalesced waiters and cache
 * answers not counted; one lookup sends A and AAAA); cache_hits / negative_hits: answers from the
 * positive / negative cache; failures: lookups that completed with an error. */
struct vd_resolver_stats {
    uint64_t queries, cache_hits, negative_hits, failures;
};

void vd_resolver_stats(const struct vd_resolver *r, struct vd_resolver_stats *st);

#endif
