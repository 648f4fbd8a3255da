/* SPDX-License-Identifier: MIT */
/* The shared cache as the forward handler sees it (src/proxy/cache.c): a lookup before
 * forwarding, hooks on the response head, body and end, and the handler that serves a stored
 * response. Private to src/proxy. */
#ifndef VD_PROXY_CACHE_INT_H
#define VD_PROXY_CACHE_INT_H

#include "vd/cache.h"
#include "vd/proxy.h"

/* Cache state of one forwarded exchange (malloc'd; the forward handler owns it). */
struct vd_cache_xfer;

/* Runs the cache lookup for @t, which is about to be forwarded to @host:@port (@tls, @route as
 * given to vd_forward_start: a background revalidation goes the same way). Returns true when
 * the exchange was answered from the cache (or with 504 for only-if-cached): nothing else may
 * touch @t. Otherwise *@cx is the state to hand to the hooks below (NULL: the cache is not
 * involved). */
bool vd__cache_begin(struct vd_txn *t, struct vd_cache_xfer **cx, const char *host, uint16_t port,
                     bool tls, const struct vd_conf_route *route);

/* Adds the conditional fields of a revalidation to the upstream request head (RFC 9111 §4.3.1)
 * and tells whether the client's own conditional field @name must be left out. */
int vd__cache_req_fields(struct vd_cache_xfer *cx, struct vd_dbuf *d);
bool vd__cache_skip_req_field(const struct vd_cache_xfer *cx, struct vd_iov name);

/* A final response head arrived (@resp: the filtered head, fields in @t's arena, with room for
 * one more field, to which Cache-Status is added). For a 304 that validates the stored
 * response, returns the updated entry, and for a 500/502/503/504 that stale-if-error lets the
 * stored response replace, that one: a reference the caller passes to vd__cache_serve with the
 * parameters from vd__cache_served (the response's body is not read). Otherwise NULL, and the
 * response streams through, tee'd into the store when storable. */
struct vd_cache_entry *vd__cache_on_head(struct vd_cache_xfer *cx, struct vd_txn *t,
                                         struct vd_resp *resp);
/* Forwarding failed before any response head (connect error, timeout, DNS, malformed answer)
 * and @status (>= 500) would be sent: returns the stored response being revalidated when
 * stale-if-error allows it (RFC 5861 §4; a reference for vd__cache_serve), else NULL. */
struct vd_cache_entry *vd__cache_on_error(struct vd_cache_xfer *cx, int status);
/* The Cache-Status parameters for serving what on_head / on_error returned (in @cx: copy them
 * before @cx is freed). */
const char *vd__cache_served(const struct vd_cache_xfer *cx);
/* The fwd= parameter of Cache-Status for this exchange ("uri-miss", "stale", ...). */
const char *vd__cache_fwd(const struct vd_cache_xfer *cx);
/* Body bytes sent to the client; stores a copy up to max_object. */
void vd__cache_on_body(struct vd_cache_xfer *cx, const uint8_t *p, size_t n);
/* The response is complete: inserts it when it was being stored. */
void vd__cache_on_complete(struct vd_cache_xfer *cx);
/* Frees @cx (NULL is fine); an unfinished copy is dropped. */
void vd__cache_end(struct vd_cache_xfer *cx);

/* Answers @t from @e (takes the reference): full response, 304 to a matching client
 * conditional, or the head alone for HEAD. @status is the Cache-Status parameters. */
void vd__cache_serve(struct vd_txn *t, struct vd_cache_entry *e, const char *status);

/* ---- background revalidation (src/proxy/cache_bg.c) ---------------------------------------- */

/* Makes sure the stale @e, which the request @t found, is being revalidated in the background
 * (RFC 5861 §3): starts a transaction without a client that forwards @t's request (as a GET,
 * without its conditionals, range and cache directives) to @host:@port with @e's validators,
 * unless one already runs for @e (in any worker). Returns true when one runs, false when none
 * could be started (the background limit, draining, memory): then revalidate in the
 * foreground. Borrows @e and everything in @t. */
bool vd__cache_bg_start(struct vd_txn *t, struct vd_cache_entry *e, const char *host, uint16_t port,
                        bool tls, const struct vd_conf_route *route);
/* The stored response a background transaction @t revalidates (borrowed), NULL when @t has a
 * client. */
struct vd_cache_entry *vd__cache_bg_entry(const struct vd_txn *t);
/* Aborts the calling worker thread's background revalidations (the worker drains). */
void vd__cache_bg_abort_all(void);

#endif
