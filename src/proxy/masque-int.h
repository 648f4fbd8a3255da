/* SPDX-License-Identifier: MIT */
/* What connect-udp (masque.c, RFC 9298) and connect-ip (masque_ip.c, RFC 9484) share: the
 * client side of a capsule session (RFC 9297 §3.2) once the front has handed the connection
 * over, with its bounded output, idle timer, end and failure paths and lifetime, and the request
 * and URI template checks both make the same way. Each protocol keeps its own peer socket (UDP
 * socket, TUN device) and its own capsules behind a few callbacks. Private to src/proxy. */
#ifndef VD_PROXY_MASQUE_INT_H
#define VD_PROXY_MASQUE_INT_H

#include "vd/capsule.h"
#include "vd/proxy.h"
#include "vd/resolve.h"
#include "vd/sock.h"

/* Client-bound capsule bytes queued before peer reads stop (back-pressure towards the peer,
 * whose kernel buffer then drops, as UDP and IP would). */
#define VD_MASQUE_OUT_HIGH (256 * 1024)

struct vd_masque;

/* The protocol's part. Callbacks run on the loop with the session alive and attached to its
 * exchange (s->t set). */
struct vd_masque_ops {
    uint32_t magic;     /* of the protocol's session, checked on every callback */
    const char *name;   /* "connect-udp": Upgrade token, access log protocol, log prefix */
    size_t capsule_max; /* largest capsule taken whole (input growth, output cap) */
    /* A capsule header @h arrived: returns 1 to have the whole capsule passed to capsule(), 0
     * to skip its value (RFC 9297 §3.2: unknown types), or an error that ends the session. */
    int (*classify)(struct vd_masque *s, const struct vd_capsule_hdr *h);
    /* A whole capsule classify() asked for: @type and its value @v of @len bytes (borrowed
     * until return). Returns 0, or an error that ends the session (VD_EPROTO: "malformed"). */
    int (*capsule)(struct vd_masque *s, uint64_t type, const uint8_t *v, size_t len);
    /* The peer socket may have data: reads a bounded burst, queueing DATAGRAM capsules in
     * s->out while fewer than VD_MASQUE_OUT_HIGH bytes wait there. */
    void (*peer_read)(struct vd_masque *s);
    /* Adds the protocol's own figures to s->t->stats after the shared ones (NULL: none). */
    void (*stats)(struct vd_masque *s);
    /* The session is being freed: releases what the protocol holds besides the peer socket
     * (NULL: nothing). Runs after the peer socket's close has started. */
    void (*release)(struct vd_masque *s);
};

/* The shared session state: the first member of the protocol's session, which is allocated
 * with calloc and freed here (after the last close callback) with free(). */
struct vd_masque {
    uint32_t magic; /* ops->magic while alive, 0 once freed */
    const struct vd_masque_ops *ops;
    struct vd_txn *t;   /* NULL once detached */
    char *host;         /* decoded target (t's arena), for log lines */
    uint16_t port;      /* target port; 0 when the protocol has none (connect-ip) */
    bool pending_rules; /* rules wait on the resolved address */
    struct vd_resolve_query *q;
    struct vd_addrs addrs;
    struct vd_sock *peer; /* UDP socket or TUN device (heap, owned), NULL before */
    struct vd_sock *cs;   /* the client connection after the 101/200 (borrowed from the front) */
    vd_sock_cb saved_cb;  /* the front's callbacks on cs, restored when the session ends */
    void *saved_data;
    uv_timer_t timer;   /* idle (masque.idle_timeout) */
    int closes;         /* handle closes pending before the memory goes */
    struct vd_buf in;   /* client capsule bytes */
    uint64_t skip;      /* value bytes of a skipped capsule still to discard */
    struct vd_dbuf out; /* capsules towards the client */
    size_t out_off;     /* bytes of out already written */
    uint64_t last_ms;   /* loop time of the last traffic either way */
    uint64_t bytes_up, bytes_down, dg_up, dg_down;
    bool running; /* the capsule session started (101/200 sent, connection taken over) */
};

/* Sets up @s (zeroed by calloc, or filled by the protocol but for these fields) for exchange
 * @t: magic, output buffer, idle timer, and @t's handler (@hops, data @s). No I/O. */
void vd__masque_init(struct vd_masque *s, struct vd_txn *t, const struct vd_masque_ops *ops,
                     const struct vd_handler_ops *hops);

/* Takes ownership of @peer (an initialised socket) as the session's peer socket: its events
 * run the pump, its close counts towards freeing the session. */
void vd__masque_peer_attach(struct vd_masque *s, struct vd_sock *peer);

/* The resolver answered (a vd_resolve callback's arguments): on failure answers 502/504, when
 * the rules that wait on the address deny all of @addrs answers 403; both free @s and return
 * false. Otherwise keeps the addresses in s->addrs and returns true. */
VD_MUST_CHECK bool vd__masque_resolved(struct vd_masque *s, int status,
                                       const struct vd_addrs *addrs);

/* Answers 101 (HTTP/1.1) or 200 (HTTP/2 and later) with Capsule-Protocol, takes the client
 * connection over from the front, queues the bytes the front had not sent, then calls @greet
 * (NULL: none) to queue the protocol's first capsules, and keeps the capsules the client sent
 * optimistically (RFC 9298 §3.2, RFC 9484 §4). Returns true when the session runs, and the
 * caller then calls vd__masque_run; false when it has already ended (and @s is freed). */
VD_MUST_CHECK bool vd__masque_open(struct vd_masque *s, int (*greet)(struct vd_masque *s));

/* Parses the early capsules and starts the pump. May end the session (and free @s). */
void vd__masque_run(struct vd_masque *s);

/* The session is over: fills the access log figures with @end, gives the client connection
 * back to the front, which closes it (HTTP/1.1) or ends the stream (HTTP/2: END_STREAM after a
 * clean end, RST_STREAM when @reset; over TCP @reset aborts with SO_LINGER 0). Frees @s. */
void vd__masque_end(struct vd_masque *s, const char *end, bool reset);

/* Before the session runs: logs "NAME HOST[:PORT]: @detail" at info, frees @s, and answers
 * @status with @detail and Connection: close (optimistic capsules must never be read as a
 * request). */
void vd__masque_fail(struct vd_masque *s, int status, const char *detail);

/* Before the session runs: frees @s and answers 403 naming @rule (vd_txn_deny). */
void vd__masque_deny(struct vd_masque *s, const struct vd_conf_rule *rule);

/* Handler ops shared by both protocols: the request body is refused before the handler,
 * nothing waits on the front's writability, and an abort by the front frees the session
 * (figures logged as "reset" once it ran). */
ssize_t vd__masque_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end);
void vd__masque_writable(struct vd_txn *t);
void vd__masque_abort(struct vd_txn *t);

/* Checks a request whose path matched the URI template of capsule protocol @token
 * ("connect-udp"; @why: what is malformed in the path, NULL when nothing): HTTP/1.1 GET with
 * Connection: Upgrade and Upgrade: @token and no body, or an extended CONNECT with :protocol
 * @token (HTTP/2 and later); Capsule-Protocol, when present, must be ?1 (RFC 9297 §3.4).
 * Returns false when it is well-formed; otherwise answers 400 and returns true. */
VD_MUST_CHECK bool vd__masque_request_refused(struct vd_txn *t, const char *token, const char *why);

/* Applies the access rules decidable from the request, with destination @dest:@port (@dest
 * NULL: none), then allocates a zeroed session of @size bytes. Returns it, with *@pending set
 * when rules wait on the destination address; NULL after answering 403 (denied) or 503. */
VD_MUST_CHECK void *vd__masque_admit(struct vd_txn *t, const char *dest, uint16_t port, size_t size,
                                     bool *pending);

/* Splits @path along URI template @tpl with two variables (@v1 before @v2, e.g.
 * "{target_host}", "{target_port}"). Returns 1 with their raw (still percent-encoded) values in
 * @a and @b (views into @path, either may be empty), 0 when @tpl lacks a variable or @path does not
 * start with what precedes @v1 (not a request for this protocol), -1 when it does but the rest
 * does not follow @tpl. The value of @v1 ends at the first occurrence of the literal between
 * the variables. */
VD_MUST_CHECK int vd__masque_template_split(const char *tpl, const char *v1, const char *v2,
                                            struct vd_iov path, struct vd_iov *a, struct vd_iov *b);

#define VD_MASQUE_PCT_SLASH 1u /* %2F may decode to '/' (a literal '/' never may) */
#define VD_MASQUE_PCT_LOWER 2u /* ASCII upper case letters are lowered after decoding */

/* Percent-decodes @n bytes of @s into @out (capacity @cap, NUL-terminated) with @flags
 * (VD_MASQUE_PCT_*). IPv6 literals come with their colons encoded ("2001%3Adb8%3A%3A1").
 * Returns the length, or -1 for a bad escape, a NUL, a '/', or no room. */
VD_MUST_CHECK int vd__masque_pct_decode(const uint8_t *s, size_t n, char *out, size_t cap,
                                        unsigned flags);

/* True when @h is a DNS name as a target may give it: 1 to 253 letters, digits, '-' and '.'. */
bool vd__masque_name_valid(const char *h);

#endif
