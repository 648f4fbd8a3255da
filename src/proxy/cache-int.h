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
/* True while the exchange still needs the body bytes through vd__cache_on_body (a copy being
 * stored or shared with collapsed requests): they must not bypass user space then. */
bool vd__cache_wants_body(const struct vd_cache_xfer *cx);
/* Body bytes sent to the client; stores a copy up to max_object. */
void vd__cache_on_body(struct vd_cache_xfer *cx, const uint8_t *p, size_t n);
/* The response is complete: inserts it when it was being stored. */
void vd__cache_on_complete(struct vd_cache_xfer *cx);
/* Frees @cx (NULL is fine); an unfinished copy is dropped. */
void vd__cache_end(struct vd_cache_xfer *cx);

/* The client of a leader (see collapsed forwarding below) went away while other requests wait
 * for its response: returns a transaction without a client that the forward handler continues
 * the transfer under (its handler fields are the caller's to set; *@host and *@sni are replaced
 * by copies in its arena), or NULL when nobody waits (then end as usual). @t is borrowed. */
struct vd_txn *vd__cache_adopt(struct vd_cache_xfer *cx, struct vd_txn *t, char **host, char **sni);

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

/* ---- collapsed forwarding (src/proxy/cache_collapse.c) -------------------------------------- */

/* One leader's response as its waiters see it (process-wide, reference-counted). */
struct vd__col;

/* For a GET miss of @t on primary key @key that may be collapsed: when another request for
 * @key is already on its way to the origin and its response may still be shared, @t becomes
 * one of its waiters and 1 is returned (nothing else may touch @t; it is answered later on its
 * own loop, or forwarded to @host:@port as vd_forward_start would, with @fwd as the Cache-Status
 * fwd= value, which must be a static string). Otherwise 0, and *@lead is the new leader's
 * reference (hand it to the vd__col_* calls below and drop it with vd__col_end), or NULL when
 * @t is forwarded without collapsing. Borrows everything. */
int vd__col_begin(struct vd_txn *t, const char *key, const char *fwd, const char *host,
                  uint16_t port, bool tls, const struct vd_conf_route *route,
                  struct vd__col **lead);
/* True (once) when the forward being started is a waiter going to the origin itself. */
bool vd__col_take_fallback(void);
/* The leader's response is storable and fresh: publishes a copy of its head @resp (the fields
 * as the client gets them, before Cache-Status), the Vary names and secondary key of the
 * leader's request, and what decides its reuse (@cc, @lifetime in s, @tm). Waiters start.
 * Returns 0, or VD_ENOMEM (the response is then marked failed). */
int vd__col_publish(struct vd__col *c, const struct vd_resp *resp, const char *vary_names,
                    const char *vary_key, const struct vd_cache_cc *cc, int64_t lifetime,
                    const struct vd_cache_times *tm);
/* The published fields (owned by @c, valid while a reference is held). */
const struct vd_hdr *vd__col_hdrs(const struct vd__col *c, size_t *n);
/* Appends body bytes (leader's thread). Returns 0; VD_ETOOBIG once the body is past
 * max_object: it can no longer be stored, but the waiters already streaming it go on reading
 * through a window of about max_object (the others go to the origin); -ECANCELED past
 * max_object when no waiter streams, or VD_ENOMEM: then call vd__col_fail. */
int vd__col_append(struct vd__col *c, const uint8_t *p, size_t n);
/* The whole body appended so far, contiguous: a view into @c, or a copy in *@tmp (free it);
 * NULL when out of memory. Only while the leader holds its reference. */
const uint8_t *vd__col_body(const struct vd__col *c, size_t *len, uint8_t **tmp);
/* The response is not shareable after all (not storable, Vary *, too big, failed): waiters
 * still waiting go to the origin themselves, those streaming are aborted. Later requests for
 * the key are forwarded without waiting while the leader's exchange lasts. */
void vd__col_fail(struct vd__col *c);
/* The body is complete: waiters finish, and the key leaves the registry (the store answers
 * from now on). */
void vd__col_complete(struct vd__col *c);
/* The leader's exchange is over: fails the response unless complete, and drops the leader's
 * reference. NULL is fine. */
void vd__col_end(struct vd__col *c);
/* See vd__cache_adopt. */
struct vd_txn *vd__col_adopt(struct vd__col *c, struct vd_txn *t, char **host, char **sni);

/* A transaction that has no client (cache_bg.c's background revalidations, cache_collapse.c's
 * orphaned leaders), embedded in its owner: its place in the worker thread's list of them, and
 * how the owner is freed. */
struct vd__detached {
    struct vd_list link;
    struct vd_txn *t;
    void (*finish)(struct vd__detached *d); /* removes @d (vd__detached_remove) and frees */
};

/* Puts @d (t and finish set) in the calling worker thread's list. */
void vd__detached_add(struct vd__detached *d);
void vd__detached_remove(struct vd__detached *d);
/* Aborts every client-less transaction of the calling worker thread (the worker drains):
 * nothing waits for background revalidations, and collapsed requests whose leader left fail
 * as they would have with the leader's client. */
void vd__detached_abort_all(void);

/* Front ops shared by the transactions that have no client (cache_bg.c's background
 * revalidations, cache_collapse.c's orphaned leaders): no 1xx, the head only records the status,
 * no request body to pause, no tunnels. */
int vd__detached_interim(struct vd_txn *t, int status, const struct vd_hdr *h, size_t n);
int vd__detached_head(struct vd_txn *t, const struct vd_resp *resp);
void vd__detached_pause(struct vd_txn *t, bool pause);
int vd__detached_tunnel(struct vd_txn *t, struct vd_tunnel_end *end);

#endif
