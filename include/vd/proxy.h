/* SPDX-License-Identifier: MIT */
/* The proxy layer: workers (one libuv loop per thread), the protocol-neutral transaction that
 * front sessions (HTTP/1 today; HTTP/2 and HTTP/3 streams later) hand to handlers, and the
 * handlers' view of the front. See docs/architecture.md for one request walked end to end. */
#ifndef VD_PROXY_H
#define VD_PROXY_H

#include <uv.h>

#include "vd/arena.h"
#include "vd/conf.h"
#include "vd/http.h"
#include "vd/log.h"
#include "vd/ltimer.h"
#include "vd/metrics.h"
#include "vd/resolve.h"
#include "vd/tls.h"
#include "vd/tunnel.h"

struct vd_txn;
struct vd_worker;

/* A request as every front end presents it (HTTP/1 request line or HTTP/2 pseudo-headers). All
 * views live in the transaction's arena. */
struct vd_req {
    struct vd_iov method;
    struct vd_iov target;    /* as received (h1); for the access log */
    struct vd_iov scheme;    /* "http"/"https"; empty for origin-form h1 */
    struct vd_iov authority; /* from absolute-form, or the Host field */
    /* The front's parse of authority (host without brackets, explicit port or 0), valid only
     * while authority is still the bytes auth_of names: a copied request parses its copy. */
    struct vd_iov auth_of;
    struct vd_iov auth_host;
    uint16_t auth_port;
    struct vd_iov path;     /* origin-form path and query ("/" default); "*" for asterisk */
    struct vd_iov protocol; /* :protocol of an extended CONNECT (RFC 8441); empty otherwise */
    enum vd_target_form form;
    uint8_t version;     /* 10, 11, 20, 30 */
    struct vd_hdr *hdrs; /* field lines, hop-by-hop ones included; the handler filters */
    size_t nhdrs;
    struct vd_framing framing; /* how the body arrives (already decoded for the handler) */
};

/* A response head on its way to the front. */
struct vd_resp {
    int status;
    struct vd_hdr *hdrs;
    size_t nhdrs;
    bool has_body;  /* false for HEAD, 1xx, 204, 304 */
    int64_t length; /* body length when known, else -1 */
    bool close;     /* the front closes the connection after this response */
    bool tunnel;    /* 2xx to CONNECT or 101: no framing fields; the front->tunnel call follows */
};

/* What a front session provides to the handler of one of its transactions. Write calls accept
 * what they can and return the number of bytes accepted (>= 0) or a negative error; a short
 * count means "full": the front calls handler->on_writable once it has drained. */
struct vd_front_ops {
    int (*send_interim)(struct vd_txn *t, int status, const struct vd_hdr *h, size_t n);
    int (*send_head)(struct vd_txn *t, const struct vd_resp *resp);
    ssize_t (*send_body)(struct vd_txn *t, const uint8_t *p, size_t len);
    /* Optional (NULL when the front cannot: HTTP/2, TLS): sends @len body bytes of the file
     * open at @fd from offset @off without copying them through user space, with send_body's
     * contract (bytes accepted, a short count means full and on_writable follows, or a negative
     * error). @map, when not NULL, is the same bytes mapped (map[0] is the byte at @off): the
     * front may write(2) from it instead of sendfile (cache.disk_send), never read it itself.
     * @fd and @map are borrowed for the call; the front keeps no reference to them. VD_ENOTIMPL
     * when this response cannot take it (TLS, chunked framing): the caller sends the bytes with
     * send_body instead, for the rest of the response. */
    ssize_t (*send_file)(struct vd_txn *t, int fd, off_t off, size_t len, const uint8_t *map);
    /* Optional (NULL when the front cannot: HTTP/2): moves up to @len body bytes that arrive
     * on the plain TCP socket @fd (borrowed for the call) to the client without copying them
     * through user space (splice through a pipe). Returns the bytes taken from @fd (>= 0) or a
     * negative error on the client side; taken bytes belong to the front, which writes them
     * before anything sent later. *@src says why it stopped: 0 when @len bytes were taken or
     * the client is full (a count below @len: on_writable follows once it drained), VD_EAGAIN
     * when @fd has nothing ready now (or the call used its share of the loop: wait for @fd's
     * read readiness), VD_ECLOSED at the end of @fd's stream, another negative error when
     * reading @fd failed. VD_ENOTIMPL (nothing taken) when this response cannot take it (TLS,
     * chunked framing, no body, no pipe): the caller goes on with send_body. */
    ssize_t (*send_splice)(struct vd_txn *t, int fd, size_t len, int *src);
    /* Ends the response body; @trailers may be NULL (raw "name: value\r\n" lines). */
    int (*send_end)(struct vd_txn *t, const struct vd_dbuf *trailers);
    /* Pauses or resumes delivery of request body (handler back-pressure). */
    void (*req_body_pause)(struct vd_txn *t, bool pause);
    /* The response cannot be completed: the front resets the stream (h1: closes the
     * connection so the client sees an incomplete message). */
    void (*abort)(struct vd_txn *t);
    /* After a send_head with resp->tunnel: stops HTTP processing on the client connection and
     * fills @end with its socket, the bytes read past the request head (early) and the head
     * bytes not yet written (unsent). The views stay valid until the same call with @end NULL,
     * which the handler makes once vd_tunnel_start has copied them. Returns 0, or VD_ENOTIMPL
     * when this front cannot give up its connection. */
    int (*tunnel)(struct vd_txn *t, struct vd_tunnel_end *end);
    /* The tunnel is over and the socket is the front's again: closes the client connection
     * (the tunnel already set an abortive close when it ended with a reset), logs and frees
     * the exchange. No front call may follow. */
    void (*tunnel_end)(struct vd_txn *t);
};

/* A handler produces the response for one transaction. */
struct vd_handler_ops {
    const char *name;
    /* Delivers request body bytes (decoded); returns bytes accepted (may be short: the handler
     * calls vd_txn_req_body_resume later). @end is set with the last call (len may be 0). */
    ssize_t (*on_req_body)(struct vd_txn *t, const uint8_t *p, size_t len, bool end);
    /* The front drained its output after a short send_body. */
    void (*on_writable)(struct vd_txn *t);
    /* The client side went away or the front is closing: release everything now; no front
     * calls may follow. */
    void (*on_abort)(struct vd_txn *t);
};

/* Timing and accounting for the access log. */
struct vd_txn_stats {
    uint64_t start_ns;    /* uv_hrtime when the head was complete */
    uint64_t upstream_ns; /* upstream request start to response head */
    bool upstream_used;
    bool upstream_reused;
    uint64_t bytes_in;      /* request bytes from the client (head + body on the wire) */
    uint64_t bytes_out;     /* response bytes to the client */
    uint64_t bytes_spliced; /* response body bytes of those moved by send_splice (splice(2)) */
    /* Tunnels (CONNECT, Upgrade): relayed payload and what was seen inside; NULLs when none. */
    bool tunnel;
    uint64_t tun_up, tun_down; /* client to server, server to client */
    const char *tun_proto;     /* observed protocol ("tls", "ssh", ... "unknown") */
    const char *tun_sni;       /* arena */
    const char *tun_alpn;      /* arena, comma-separated */
    const char *tun_end;       /* "closed", "reset", "idle", "denied", "nomem" */
    const char *deny_rule;     /* a rule that refused the tunnel after its first bytes */
    const char *cache;         /* what the cache did: the Cache-Status value after "viaduct; " */
    bool dgrams;               /* connect-udp, connect-ip: datagrams relayed each way */
    uint64_t dg_up, dg_down;
    bool dg_drops;                     /* connect-ip: packets dropped by the checks each way */
    uint64_t dg_drop_up, dg_drop_down; /* (RFC 9484 §7.2), malformed or unroutable */
    uint64_t dg_icmp; /* connect-ip: ICMP errors generated towards the client (§7.2.1) */
};

struct vd_txn {
    struct vd_arena arena; /* per-exchange metadata; freed when the txn ends */
    struct vd_req req;
    struct vd_conf *conf; /* reference held for the exchange */
    struct vd_worker *w;
    const struct vd_front_ops *front;
    void *front_data; /* the front's session/stream */
    const struct vd_handler_ops *handler;
    void *handler_data;
    struct vd_log_ctx log;
    const struct sockaddr *client; /* borrowed from the front connection */
    const char *client_text;       /* "ip:port", borrowed */
    bool client_tls;               /* the client connection is TLS (for X-Forwarded-Proto) */
    enum vd_listen_mode mode;
    int status; /* final status sent, 0 before */
    bool resp_started;
    const struct vd_dbuf *req_trailers; /* trailer lines of a chunked request, when complete */
    const char *user;                   /* authenticated proxy user (arena), NULL when none */
    const char *declared;               /* Upgrade token of a CONNECT/Upgrade request (arena) */
    bool access_pending; /* rules wait on the destination address: the handler checks it */
    struct vd_txn_stats stats;
};

/* A new transaction for a front: every field zero (the arena's inline block excepted: it is
 * written before it is read) and the arena set up with @arena_max. NULL when out of memory.
 * The front frees it (vd_arena_free, then vd_mc_free). */
struct vd_txn *vd_txn_new(size_t arena_max);

/* Starts processing a complete request head: access control, special methods, routing, then a
 * handler. The front must have filled t->req, t->conf, t->front*, t->w, t->client*. Any error
 * answer is sent through the front before this returns or later. */
void vd_txn_start(struct vd_txn *t);

/* Sends a complete proxy-generated error/short response: status, a text body "STATUS REASON:
 * DETAIL\n", Content-Type text/plain. @close asks the front to close after it. */
void vd_txn_respond_error(struct vd_txn *t, int status, const char *detail, bool close);
/* The same with up to two extra header fields (Proxy-Authenticate, Retry-After). */
void vd_txn_respond_with(struct vd_txn *t, int status, const struct vd_hdr *extra, size_t nextra,
                         const char *detail, bool close);

/* Handler back-pressure release: the front resumes delivering request body. */
void vd_txn_req_body_resume(struct vd_txn *t);

/* Called by the front when the exchange is over (response end sent or aborted); writes the
 * access log line. */
void vd_txn_log(struct vd_txn *t);

/* Upstream groups (balance.c), for routes with several servers (or health checks); a route with
 * one server and no checks has no state and always gets server 0. vd_lb_pick returns the index
 * of the server for an exchange from @client, skipping those in the bit mask @tried and those
 * marked down (by a failure within fail_timeout, or by active health checks); when every server
 * is marked down, the first pick (@tried 0) still returns one, a later pick -1. -1 also when
 * every server was tried. begin/end count exchanges in progress (least_conn); failed marks a server
 * down for the route's fail_timeout; ok (a request is being sent to it) clears the mark. Each
 * server counts requests sent and failures for the metrics. */
int vd_lb_pick(const struct vd_conf_route *r, const struct sockaddr *client, uint64_t tried);
void vd_lb_begin(const struct vd_conf_route *r, int i);
void vd_lb_end(const struct vd_conf_route *r, int i);
void vd_lb_failed(const struct vd_conf_route *r, int i);
void vd_lb_ok(const struct vd_conf_route *r, int i);

/* Active health checks (health.c) of every route of @conf with routes[].health_check, run on
 * @w's loop with its resolver and the shared TLS client context: one loop checks for the whole
 * process. Takes a new reference to @conf; the verdicts go into its routes' balancing state.
 * The first checks start from the loop (never before this returns). Returns NULL when no route
 * has checks (or, logged, when out of memory). Call on @w's thread, or before it runs. */
struct vd_health;
struct vd_health *vd_health_start(struct vd_worker *w, struct vd_conf *conf);

/* Stops @hc's checks (a check in progress is dropped, its verdict not counted). The memory and
 * the reference to the snapshot go once the last libuv close callback has run, so run the loop
 * afterwards; the worker's resolver must outlive this call. @hc may be NULL. */
void vd_health_stop(struct vd_health *hc);

/* Reads an HTTP/1 status line (RFC 9112 §4) at the start of @p: returns the status code (100 to
 * 599) once its line end is there, VD_EAGAIN when the bytes so far may still become one, or
 * VD_EPROTO when they cannot (not HTTP/1.x, a bad code, control bytes in the reason). */
int vd_health_status(const uint8_t *p, size_t len);

/* Whether forward-proxy traffic to @host goes through upstream.parent (set, and @host not in
 * parent_bypass). */
bool vd_parent_applies(const struct vd_conf *conf, const char *host);

/* The parent an exchange uses next (upstream.parent, in order of preference; with parent_select
 * round_robin, from a starting point that moves one parent further for each exchange when
 * @tried is 0): the first one not in @tried (bit i: parent i was tried already) that is not
 * marked down; when every untried one is, the one that comes back soonest. -1 when all were
 * tried. */
int vd_parent_pick(const struct vd_conf *conf, uint32_t tried);

/* The name an https:// parent at @host is reached by over TLS (SNI, unless an address, and the
 * certificate check): upstream.parent_sni, else @host. */
static inline const char *
vd_parent_tls_name(const struct vd_conf *conf, const char *host)
{
    return conf->upstream.parent_sni ? conf->upstream.parent_sni : host;
}

/* Parent @i could not be reached (connection or TLS handshake): later exchanges skip it for
 * upstream.parent_fail_timeout while another one is up. */
void vd_parent_failed(const struct vd_conf *conf, int i);

/* Failover of one exchange: parent @failed is marked down (vd_parent_failed) and added to
 * *@tried; returns the parent to try next (vd_parent_pick), or -1 when all were tried. */
int vd_parent_next(const struct vd_conf *conf, int failed, uint32_t *tried);

/* Appends viaduct's CONNECT request for @host:@port to the parent on behalf of @t (with
 * viaduct's credentials when configured, and the Via members of @t's request followed by
 * viaduct's own, so that a loop through the parent is seen) to @d. Returns 0 or the dbuf's
 * error. */
int vd_parent_connect_head(struct vd_dbuf *d, const struct vd_txn *t, const char *host,
                           uint16_t port);

struct vd_h1_resp_head;
/* The parent's answer to a CONNECT of viaduct's (@r and @h from vd_h1_parse_response, @why its
 * reason): 0 for 2xx, else the status for the client (502, or 504 for the parent's 504) with
 * @detail saying what the parent did. */
int vd_parent_refusal(const struct vd_conf *conf, int r, const struct vd_h1_resp_head *h,
                      const char *why, char *detail, size_t cap);

/* Handlers. */
void vd_forward_start(struct vd_txn *t, const char *host, uint16_t port, bool tls,
                      const struct vd_conf_route *route);
/* CONNECT (RFC 9110 §9.3.6) to @host:@port, already allowed by the port list and by the rules
 * decidable from the request alone; @verdict tells whether rules still wait on the address or
 * the tunnel's first bytes (VD_ACCESS_PENDING). */
void vd_connect_start(struct vd_txn *t, const char *host, uint16_t port, int verdict);

/* connect-udp over HTTP/1.1 (RFC 9298): when the request's path follows the configured URI
 * template, answers it (400/403/502 or 101 and a capsule relay) and returns true. */
bool vd_masque_udp_try(struct vd_txn *t);

/* connect-ip over HTTP/1.1 Upgrade or HTTP/2 extended CONNECT (RFC 9484): when the request's
 * path follows masque.ip_template, answers it (400/403/503 or 101/200 and a capsule relay to a
 * TUN device of its own) and returns true. */
bool vd_masque_ip_try(struct vd_txn *t);

/* Fills the access facts of @t as known from its request (client, user, method, destination
 * @host/@port, declared protocol). */
struct vd_access_facts;
void vd_txn_facts(const struct vd_txn *t, const char *host, uint16_t port, bool tunnel,
                  struct vd_access_facts *f);
/* Applies the rules that test the destination address to each of @addrs: denied ones are
 * removed. Returns VD_ACCESS_DENY when none is left (*@deny: the rule), VD_ACCESS_PENDING when
 * a rule still waits on a tunnel's first bytes, else VD_ACCESS_ALLOW. */
struct vd_addrs;
int vd_txn_check_addrs(struct vd_txn *t, const char *host, uint16_t port, bool tunnel,
                       struct vd_addrs *addrs, const struct vd_conf_rule **deny);

/* Tunnel options from the exchange's configuration (tunnel section) with @flags (VD_TUN_*). */
static inline struct vd_tunnel_opts
vd_txn_tunnel_opts(const struct vd_txn *t, unsigned flags)
{
    const struct vd_conf_tunnel *tc = &t->conf->tunnel;
    return (struct vd_tunnel_opts){
        .idle_ms = tc->idle_timeout,
        .splice = tc->splice,
        .sockbuf = tc->socket_buffer,
        .sockbuf_rtt = tc->socket_buffer_rtt,
        .flags = flags,
        .sniff_bytes = tc->sniff_bytes,
        .sniff_timeout = tc->sniff_timeout,
    };
}

/* Copies a finished tunnel's figures and classification into @t for the access log. */
void vd_txn_tunnel_stats(struct vd_txn *t, const struct vd_tunnel_stats *st);
/* Proxy authentication (Basic, RFC 7617) of a forward-proxy request: on success sets t->user
 * and calls @next (maybe later, after the password hash ran on the thread pool); otherwise
 * answers 407 (or 429 when the client address is throttled). */
void vd_txn_auth(struct vd_txn *t, void (*next)(struct vd_txn *t));
/* Writes the error detail for a failed lookup of @host (VD_ENOTFOUND: "DNS lookup failed: HOST
 * does not resolve") and returns the status to answer: 504 for a DNS timeout, else 502. */
int vd_txn_dns_failure(char *detail, size_t cap, const char *host, int status);
/* Answers 403 naming @rule (NULL: no rule matched) and logs it. */
void vd_txn_deny(struct vd_txn *t, const struct vd_conf_rule *rule);

/* Workers. */
struct vd_worker_shared {
    struct vd_tls_server **tls_servers; /* per listener index, NULL for plain */
    struct vd_tls_client *tls_client;
    struct vd_tls_client *tls_parent; /* https:// parents: their own with
                                       * upstream.parent_ca_file, else tls_client itself */
    int *listen_fds;                  /* per listener: the socket bound by the main thread */
    size_t nlisteners;
    /* Per listener: listening sockets taken over from the process this one replaces (binary
     * upgrade, src/app/main.c), inherit[l][0] being listen_fds[l]. Worker i owns
     * inherit[l][i] for i >= 1 and the ones past the last worker (i % workers), so that every
     * accept queue the old process had keeps being served. NULL when none. */
    int **inherit;
    size_t *ninherit;
    unsigned nworkers;
};

/* One listening socket a worker accepts on. */
struct vd_listen {
    uv_poll_t poll;
    int fd;
    uint32_t li; /* listener index */
    struct vd_worker *w;
};

struct vd_worker {
    uv_loop_t loop;
    unsigned id;
    uv_thread_t thread;
    uv_async_t async;
    struct vd_conf *conf; /* newest snapshot this worker knows; new connections take it */
    const struct vd_worker_shared *shared;
    struct vd_resolver *resolver;
    struct vd_listen *listens; /* the sockets this worker accepts on */
    size_t nlistens;
    int *listen_fds; /* per listener: this worker's first socket (metrics read its address) */
    size_t nlisteners;
    struct vd_list conns; /* client connections */
    size_t nconns;
    struct vd_list idle_upstreams; /* pooled upstream connections, most recent first */
    void *pool_keys;               /* forward.c: idle connections counted and listed per pool key */
    uint64_t next_conn_id;
    struct vd_hdr *hdr_scratch; /* head parsing scratch shared by the worker's connections */
    size_t hdr_scratch_cap;
    struct vd_dbuf alog; /* pending access log bytes */
    uv_timer_t alog_timer;
    uv_timer_t trim_timer; /* returns what a burst left in the thread's block cache */
    struct vd_timerq tq;   /* connection timeouts (vd/ltimer.h) */
    int alog_fd;           /* -1 none */
    bool alog_json;
    _Atomic int cmd;        /* VD_WCMD_* posted by the main thread */
    int splice_pipes[8][2]; /* front_h1.c: empty pipes kept for spliced response bodies */
    size_t nsplice_pipes;
    struct vd_sendpick file_send; /* front_h1.c: cache.disk_send auto, timed per worker */
    bool draining;
    uv_timer_t drain_timer;
    uint64_t drain_deadline;
    struct vd_wmetrics metrics; /* this worker's counters (vd/metrics.h) */
    struct vd_health *health;   /* worker 0: the process's active health checks; else NULL */
};

enum {
    VD_WCMD_NONE,
    VD_WCMD_RELOAD,
    VD_WCMD_DRAIN,
    VD_WCMD_DRAIN_UPGRADE, /* as DRAIN, with timeouts.upgrade_grace */
};

/* Initialises @w (loop, resolver, listeners) with @conf (a new reference is taken). Returns 0 or
 * an error with @err. Runs on the main thread before the worker thread starts. */
VD_MUST_CHECK int vd_worker_init(struct vd_worker *w, unsigned id, struct vd_conf *conf,
                                 const struct vd_worker_shared *sh, char *err, size_t errlen);

/* Binds and listens on the first socket of a listener, on the main thread, so that port 0
 * becomes a real port that every worker then shares through SO_REUSEPORT (worker 0 takes a dup
 * of it, the others bind their own to the same address). Returns the fd or -errno. */
int vd_worker_listen_shared(const struct vd_conf_listener *l);

/* Takes over @fd, a listening socket on @l's address inherited from the process this one
 * replaces: applies @l's backlog and congestion control to it. Returns 0 or -errno. */
int vd_worker_listen_adopt(const struct vd_conf_listener *l, int fd);

/* 0 when nothing listens on @l's address yet (port 0 always), else -errno (-EADDRINUSE): the
 * check that SO_REUSEPORT would otherwise skip. Call for every listener before the first
 * vd_worker_listen_shared, so that viaduct's own sockets (0.0.0.0:P next to 127.0.0.1:P) do
 * not count. */
int vd_worker_address_free(const struct vd_conf_listener *l);

/* Sets the access log of @w: @fd (not owned; -1 for none), text or JSON lines, flushed from the
 * worker's buffer every second and at 16 KiB. Call before the worker thread starts. */
void vd_worker_set_access_log(struct vd_worker *w, int fd, bool json);

/* Thread body: runs the loop until drained. */
void vd_worker_run(void *arg);

/* Posts a command from another thread (reload: pick up vd_conf_current(); drain: stop accepting
 * and exit when the last connection ends or the grace period runs out). */
void vd_worker_post(struct vd_worker *w, int cmd);

/* Frees what vd_worker_init allocated; call after the thread has been joined. */
void vd_worker_destroy(struct vd_worker *w);

/* Internal plumbing between proxy modules. */
void vd_front_h1_accept(struct vd_worker *w, int fd, size_t listener);
/* Closes the worker's client connections: only those idle between exchanges with no request on
 * its way (drain; see idle_expecting in front_h1.c), or all. */
void vd_front_h1_close(struct vd_worker *w, bool idle_only);
/* Sends GOAWAY on every HTTP/2 connection of @w (reload): running streams finish. */
void vd_front_h2_goaway_all(struct vd_worker *w);
void vd_pool_close_all(struct vd_worker *w);
void vd_alog_flush(struct vd_worker *w);

#endif
