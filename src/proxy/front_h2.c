/* SPDX-License-Identifier: MIT */
/* HTTP/2 front session (RFC 9113) on libnghttp2: every stream becomes a struct vd_txn behind the
 * same front ops as an HTTP/1.1 exchange, so handlers do not know which protocol the client
 * speaks. nghttp2 does the framing, HPACK and the message checks of RFC 9113 §8 (pseudo-header
 * rules, connection-specific fields, content-length against DATA); this file does the mapping,
 * the flow control as back-pressure (a stream's window opens only as its handler takes request
 * bytes; a stream's response queue is bounded and refills only when it drains), the flood
 * limits, and tunnels: a CONNECT stream is a virtual socket that the byte relay drives like a
 * TCP one.
 *
 * Re-entrancy: nghttp2 must not be fed (mem_recv) or drained (mem_send) from inside its own
 * callbacks, and handlers call the front ops at any time. So the front ops only queue and "kick"
 * the session; the session runs nghttp2 and the handlers' callbacks from its socket event or from
 * an idle handle, never nested. */
#include "vd/config.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front-int.h"
#include "vd/err.h"
#include "vd/mcache.h"

#define H2_MAGIC    0x48325332u
#define OUT_HIGH    (64 * 1024)  /* stop asking nghttp2 for frames past this much unsent */
#define OUT_NOREAD  (256 * 1024) /* stop reading a client that does not read our output */
#define READ_ROUNDS 8            /* reads per readiness event, for fairness between conns */

/* nghttp2 allocates per stream (stream state, outbound items, header copies): from the
 * per-thread block cache, which keeps enough blocks for 100 streams in flight. */
static void *
ng_malloc(size_t n, void *ud)
{
    (void)ud;
    return vd_mc_alloc(n);
}

static void
ng_free(void *p, void *ud)
{
    (void)ud;
    vd_mc_free(p);
}

static void *
ng_calloc(size_t nmemb, size_t n, void *ud)
{
    (void)ud;
    return vd_mc_calloc(nmemb, n);
}

static void *
ng_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    return vd_mc_realloc(p, n);
}

static nghttp2_mem ng_mem = {NULL, ng_malloc, ng_free, ng_calloc, ng_realloc};

/* A byte queue with consumption from the front and a cap. */
struct bq {
    uint8_t *p;
    size_t off, len, cap, max;
};

struct h2st {
    int32_t id;
    struct vd_h2 *h;
    struct vd_txn *t;
    struct vd_list link;  /* in h->streams */
    struct vd_list rlink; /* in h->ready when queued */
    bool queued;
    int busy; /* callbacks into handlers/tunnel on the stack: free later */

    /* request head */
    struct vd_hdr *hv;
    size_t nh, caph;
    size_t head_bytes;
    bool too_big; /* header list over the limits: answered 431 */
    bool headers_done;
    bool started;
    bool has_cl;
    uint64_t cl;
    struct vd_iov pm, ps, pa, pp, pproto; /* pseudo-header values */
    bool expect_100, sent_100;

    /* request body */
    struct bq rbody;
    bool rbody_end;   /* END_STREAM received */
    bool end_sent;    /* on_req_body(.., end) delivered */
    bool body_paused; /* the handler asked for a pause */
    struct vd_dbuf trailers;

    /* response */
    bool resp_has_body;
    struct bq obody;
    bool oend;          /* send_end called (or the tunnel shut its write side) */
    bool eof_sent;      /* the data provider returned EOF */
    bool deferred;      /* the data provider is deferred */
    bool handler_waits; /* a short send_body: on_writable when the queue drains */
    bool has_trailers;
    nghttp2_nv *tnv; /* trailers (arena) */
    size_t ntnv;
    bool done;      /* the handler is finished with the response */
    bool ng_closed; /* nghttp2 closed the stream */

    /* tunnel (CONNECT on a stream) */
    bool tunneling;
    bool connect; /* CONNECT: DATA waits for the tunnel (early data), never a body */
    struct vd_sock vs;
};

struct vd_h2 {
    uint32_t magic;
    nghttp2_session *ng;
    struct vd_h2_host host;
    struct vd_conf *conf;
    struct vd_log_ctx log;
    struct vd_buf in;
    struct bq out; /* frames nghttp2 produced that the socket did not take */
    uv_idle_t idle;
    bool kicked;
    bool in_io;
    bool dead;      /* the connection is closing: no socket calls */
    bool draining;  /* GOAWAY sent */
    bool want_read; /* the client may still send */
    bool read_more; /* reading stopped before EAGAIN: bytes may wait inside TLS, unseen by poll */
    bool flood;     /* a flood limit tripped: GOAWAY ENHANCE_YOUR_CALM, then close */
    uint32_t fatal_code;     /* a connection error found by a callback (GOAWAY code) */
    int32_t max_sid;         /* highest client stream id opened */
    int32_t closed_ring[32]; /* recently closed stream ids (late trailers are not errors) */
    unsigned closed_pos;
    struct vd_list streams;
    struct vd_list ready;
    size_t nstreams;
    /* flood limits: token buckets */
    double reset_tokens, control_tokens;
    uint64_t last_refill; /* ms */
};

static const struct vd_front_ops h2_front_ops;
static const struct vd_xport_ops h2_stream_xport;
static void kick(struct vd_h2 *h);
static void st_maybe_free(struct h2st *st);
static bool lower_stream_id(struct vd_h2 *h, int32_t id);

/* ---- byte queue ---------------------------------------------------------------------------- */

static void
bq_init(struct bq *q, size_t max)
{
    *q = (struct bq){.max = max};
}

static void
bq_free(struct bq *q)
{
    vd_mc_free(q->p);
    q->p = NULL;
    q->off = q->len = q->cap = 0;
}

static size_t
bq_room(const struct bq *q)
{
    return q->max > q->len ? q->max - q->len : 0;
}

/* Appends up to @n bytes within the cap (or all of them when @force); returns how many. */
static size_t
bq_add(struct bq *q, const void *p, size_t n, bool force)
{
    if (!force) {
        n = VD_MIN(n, bq_room(q));
    }
    if (n == 0) {
        return 0;
    }
    if (q->off + q->len + n > q->cap) {
        if (q->off) {
            memmove(q->p, q->p + q->off, q->len);
            q->off = 0;
        }
        if (q->len + n > q->cap) {
            size_t nc = q->cap ? q->cap : 4096;
            while (nc < q->len + n) {
                nc *= 2;
            }
            uint8_t *np = vd_mc_realloc(q->p, nc);
            if (!np) {
                return 0;
            }
            q->p = np;
            q->cap = nc;
        }
    }
    memcpy(q->p + q->off + q->len, p, n);
    q->len += n;
    return n;
}

static void
bq_consume(struct bq *q, size_t n)
{
    q->off += n;
    q->len -= n;
    if (q->len == 0) {
        q->off = 0;
        /* Keep no memory for an empty queue beyond one small block. */
        if (q->cap > 16384) {
            bq_free(q);
        }
    }
}

/* ---- streams ------------------------------------------------------------------------------- */

static struct h2st *
st_get(struct vd_h2 *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->ng, id);
}

static void
st_queue(struct h2st *st)
{
    if (!st->queued) {
        st->queued = true;
        vd_list_insert_tail(&st->h->ready, &st->rlink);
    }
    kick(st->h);
}

static struct h2st *
txn_stream(struct vd_txn *t)
{
    struct h2st *st = t->front_data;
    VD_BUG_ON(st->h->magic != H2_MAGIC);
    return st;
}

static void
txn_free(struct h2st *st)
{
    struct vd_txn *t = st->t;
    if (!t) {
        return;
    }
    st->t = NULL;
    vd_arena_free(&t->arena);
    vd_mc_free(t);
}

/* The exchange is over for the handler: log it and free it. */
static void
st_finish_txn(struct h2st *st)
{
    struct vd_txn *t = st->t;
    if (!t) {
        return;
    }
    if (t->handler && t->handler->on_abort) {
        const struct vd_handler_ops *hd = t->handler;
        t->handler = NULL;
        st->busy++;
        hd->on_abort(t);
        st->busy--;
    }
    if (t->status == 0) {
        t->status = 499;
    }
    vd_txn_log(t);
    txn_free(st);
}

static void
st_free(struct h2st *st)
{
    struct vd_h2 *h = st->h;
    if (st->queued) {
        vd_list_remove(&st->rlink);
    }
    vd_list_remove(&st->link);
    h->nstreams--;
    if (!st->ng_closed && !h->dead) {
        nghttp2_session_set_stream_user_data(h->ng, st->id, NULL);
    }
    txn_free(st);
    bq_free(&st->rbody);
    bq_free(&st->obody);
    vd_dbuf_free(&st->trailers);
    vd_mc_free(st->hv);
    vd_mc_free(st);
}

/* Frees @st once nghttp2 is done with it, no exchange holds it and no callback is running. */
static void
st_maybe_free(struct h2st *st)
{
    if (st->busy || !st->ng_closed || st->t || st->tunneling) {
        return;
    }
    st_free(st);
}

static void
st_reset(struct h2st *st, uint32_t code)
{
    if (!st->ng_closed && !st->h->dead) {
        (void)nghttp2_submit_rst_stream(st->h->ng, NGHTTP2_FLAG_NONE, st->id, code);
        kick(st->h);
    }
}

/* ---- flood limits -------------------------------------------------------------------------- */

static void
refill(struct vd_h2 *h)
{
    uint64_t now = uv_now(&h->host.w->loop);
    double dt = (double)(now - h->last_refill) / 1000.0;
    const struct vd_conf_h2 *c = &h->conf->h2;
    h->last_refill = now;
    h->reset_tokens = VD_MIN(h->reset_tokens + dt * c->reset_rate, (double)c->reset_burst);
    h->control_tokens = VD_MIN(h->control_tokens + dt * c->control_rate, (double)c->control_burst);
}

/* Ends the connection with GOAWAY ENHANCE_YOUR_CALM (RFC 9113 §5.4.1) for abuse. */
static int
calm(struct vd_h2 *h, const char *what)
{
    if (!h->flood) {
        vd_log(VD_LOG_NOTICE, &h->log, "HTTP/2 %s: closing the connection (ENHANCE_YOUR_CALM)",
               what);
    }
    h->flood = true;
    h->want_read = false;
    /* Stops nghttp2 at once (nothing more of the input is processed); feed() writes the
     * GOAWAY itself, since the session is no longer usable. */
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* ---- nghttp2 callbacks: request side --------------------------------------------------------- */

static int
cb_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    struct vd_h2 *h = ud;
    (void)ng;
    switch (hd->type) {
    case NGHTTP2_HEADERS:
        if ((hd->stream_id & 1) && lower_stream_id(h, hd->stream_id)) {
            vd_log(VD_LOG_INFO, &h->log,
                   "HTTP/2 protocol error: stream %d opened after stream %d (RFC 9113 §5.1.1)",
                   (int)hd->stream_id, (int)h->max_sid);
            h->fatal_code = NGHTTP2_PROTOCOL_ERROR;
            h->want_read = false;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
    case NGHTTP2_PRIORITY:
        refill(h);
        if (h->control_tokens < 1) {
            return calm(h, "control frame flood (SETTINGS/PING/PRIORITY)");
        }
        h->control_tokens -= 1;
        break;
    case NGHTTP2_DATA:
        /* Empty DATA frames without END_STREAM cost work and carry nothing. */
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM)) {
            refill(h);
            if (h->control_tokens < 1) {
                return calm(h, "empty DATA frame flood");
            }
            h->control_tokens -= 1;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* RFC 9113 §5.1.1: a new stream's id must be greater than every id the client used before.
 * libnghttp2 ignores such HEADERS (it cannot tell them from trailers sent after a reset), so
 * the check is here: below the highest id, not open and not recently closed is an error. */
static bool
lower_stream_id(struct vd_h2 *h, int32_t id)
{
    if (id > h->max_sid || nghttp2_session_find_stream(h->ng, id)) {
        return false;
    }
    for (size_t i = 0; i < VD_ARRAY_LEN(h->closed_ring); i++) {
        if (h->closed_ring[i] == id) {
            return false;
        }
    }
    return true;
}

static int
cb_begin_headers(nghttp2_session *ng, const nghttp2_frame *fr, void *ud)
{
    struct vd_h2 *h = ud;
    if (fr->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    struct h2st *st = st_get(h, fr->hd.stream_id);
    if (st) {
        return 0; /* trailers */
    }
    if (fr->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    st = vd_mc_calloc(1, sizeof(*st));
    if (!st) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->id = fr->hd.stream_id;
    st->h = h;
    h->max_sid = VD_MAX(h->max_sid, st->id);
    bq_init(&st->rbody, h->conf->h2.stream_window);
    bq_init(&st->obody, h->conf->h2.stream_buffer);
    vd_dbuf_init(&st->trailers, h->conf->limits.trailer_block + 64);
    vd_list_insert_tail(&h->streams, &st->link);
    h->nstreams++;
    struct vd_txn *t = vd_txn_new(h->conf->limits.request_arena + h->conf->limits.header_block);
    if (!t) {
        st->ng_closed = true; /* not attached: freed here */
        st_free(st);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    t->conf = h->conf;
    t->w = h->host.w;
    t->front = &h2_front_ops;
    t->front_data = st;
    t->client = h->host.peer;
    t->client_text = h->host.peer_text;
    t->client_tls = h->host.tls;
    t->log = h->log;
    t->log.stream_id = (uint32_t)st->id;
    t->stats.start_ns = uv_hrtime();
    t->req.version = 20;
    t->req_trailers = &st->trailers;
    const struct vd_conf *c = h->conf;
    t->mode = c->listeners[h->host.listener < c->nlisteners ? h->host.listener : 0].mode;
    st->t = t;
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static struct vd_iov
dup_iov(struct vd_txn *t, const uint8_t *p, size_t n)
{
    char *s = vd_arena_dup(&t->arena, p, n);
    return (struct vd_iov){(const uint8_t *)s, s ? n : 0};
}

static int
cb_header(nghttp2_session *ng, const nghttp2_frame *fr, const uint8_t *name, size_t namelen,
          const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct vd_h2 *h = ud;
    (void)ng;
    (void)flags;
    struct h2st *st = st_get(h, fr->hd.stream_id);
    if (!st || !st->t) {
        return 0;
    }
    struct vd_txn *t = st->t;
    const struct vd_conf_limits *lim = &h->conf->limits;
    if (st->headers_done) {
        /* Trailers (RFC 9113 §8.1): kept as "name: value" lines for the handler. */
        if (vd_dbuf_add(&st->trailers, name, namelen) || vd_dbuf_add(&st->trailers, ": ", 2) ||
            vd_dbuf_add(&st->trailers, value, valuelen) || vd_dbuf_add(&st->trailers, "\r\n", 2)) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return 0;
    }
    st->head_bytes += namelen + valuelen + 32; /* RFC 9113 §6.5.2 field size */
    if (st->too_big || st->head_bytes > lim->header_block || st->nh >= lim->header_count) {
        st->too_big = true;
        return 0;
    }
    struct vd_iov v = dup_iov(t, value, valuelen);
    if (name[0] == ':') {
        struct vd_iov *slot = NULL;
        if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
            slot = &st->pm;
        } else if (namelen == 7 && memcmp(name, ":scheme", 7) == 0) {
            slot = &st->ps;
        } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
            slot = &st->pa;
        } else if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
            slot = &st->pp;
        } else if (namelen == 9 && memcmp(name, ":protocol", 9) == 0) {
            slot = &st->pproto;
        }
        if (slot) {
            *slot = v;
        }
        return 0;
    }
    if (st->nh == st->caph) {
        size_t nc = st->caph ? st->caph * 2 : 16;
        struct vd_hdr *nv = vd_mc_realloc(st->hv, nc * sizeof(*nv));
        if (!nv) {
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        st->hv = nv;
        st->caph = nc;
    }
    st->hv[st->nh++] = (struct vd_hdr){.name = dup_iov(t, name, namelen), .value = v};
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
        uint64_t x = 0;
        bool ok = valuelen > 0 && valuelen <= 19;
        for (size_t i = 0; i < valuelen && ok; i++) {
            ok = value[i] >= '0' && value[i] <= '9';
            x = x * 10 + (uint64_t)(value[i] - '0');
        }
        if (ok) {
            st->has_cl = true;
            st->cl = x;
        }
    } else if (namelen == 6 && memcmp(name, "expect", 6) == 0 && valuelen == 12 &&
               strncasecmp((const char *)value, "100-continue", 12) == 0) {
        st->expect_100 = true;
    }
    return 0;
}

/* RFC 9113 §8.2.3: cookie crumbs are joined with "; " before the message goes to HTTP/1.1. */
static void
join_cookies(struct h2st *st)
{
    size_t first = SIZE_MAX, total = 0, n = 0;
    for (size_t i = 0; i < st->nh; i++) {
        if (vd_hdr_name_is(st->hv[i].name, "cookie")) {
            if (first == SIZE_MAX) {
                first = i;
            }
            total += st->hv[i].value.len + 2;
            n++;
        }
    }
    if (n < 2) {
        return;
    }
    char *p = vd_arena_alloc(&st->t->arena, total);
    if (!p) {
        return;
    }
    size_t len = 0, k = 0;
    for (size_t i = 0; i < st->nh; i++) {
        if (!vd_hdr_name_is(st->hv[i].name, "cookie")) {
            st->hv[k++] = st->hv[i];
            continue;
        }
        if (len) {
            memcpy(p + len, "; ", 2);
            len += 2;
        }
        memcpy(p + len, st->hv[i].value.base, st->hv[i].value.len);
        len += st->hv[i].value.len;
        if (i == first) {
            st->hv[k++] = st->hv[i];
        }
    }
    st->nh = k;
    for (size_t i = 0; i < st->nh; i++) {
        if (vd_hdr_name_is(st->hv[i].name, "cookie")) {
            st->hv[i].value = (struct vd_iov){(const uint8_t *)p, len};
            break;
        }
    }
}

static bool
iov_is(struct vd_iov v, const char *s)
{
    size_t l = strlen(s);
    return v.len == l && memcmp(v.base, s, l) == 0;
}

/* The request head is complete: builds the protocol-neutral request. Returns 0, or an HTTP
 * status to answer with @why. */
static int
build_request(struct h2st *st, bool end_stream, const char **why)
{
    struct vd_txn *t = st->t;
    struct vd_req *r = &t->req;
    if (st->too_big) {
        *why = "request header section over limits.header_block or limits.header_count";
        return 431;
    }
    join_cookies(st);
    struct vd_hdr *hv = vd_arena_alloc(&t->arena, sizeof(*hv) * (st->nh ? st->nh : 1));
    if (!hv) {
        *why = "out of memory for the request";
        return 503;
    }
    if (st->nh) {
        memcpy(hv, st->hv, sizeof(*hv) * st->nh);
    }
    r->hdrs = hv;
    r->nhdrs = st->nh;
    vd_mc_free(st->hv);
    st->hv = NULL;
    st->nh = st->caph = 0;
    r->method = st->pm;
    r->authority = st->pa;
    if (!r->authority.len) {
        const struct vd_hdr *host = vd_hdr_find(r->hdrs, r->nhdrs, "host");
        if (host) {
            r->authority = host->value;
        }
    }
    t->stats.bytes_in = st->head_bytes;
    if (iov_is(r->method, "CONNECT") && !st->pproto.len) {
        r->target = r->authority;
        r->form = VD_TARGET_AUTHORITY;
    } else {
        /* Extended CONNECT (RFC 8441 §4) names its target like a request: :scheme :authority
         * :path, and :protocol says what the stream will carry. */
        r->protocol = st->pproto;
        r->scheme = st->ps;
        r->path = st->pp;
        if (iov_is(r->path, "*")) {
            r->form = VD_TARGET_ASTERISK;
            r->target = r->path;
        } else if (t->mode == VD_MODE_FORWARD && r->authority.len) {
            /* A forward proxy reads the request as absolute-form (RFC 9113 §8.3.1). */
            size_t n = r->scheme.len + 3 + r->authority.len + r->path.len;
            char *u = vd_arena_alloc(&t->arena, n + 1);
            if (!u) {
                *why = "out of memory for the request";
                return 503;
            }
            snprintf(u, n + 1, "%.*s://%.*s%.*s", (int)r->scheme.len, (const char *)r->scheme.base,
                     (int)r->authority.len, (const char *)r->authority.base, (int)r->path.len,
                     (const char *)r->path.base);
            r->target = (struct vd_iov){(const uint8_t *)u, n};
            r->form = VD_TARGET_ABSOLUTE;
        } else {
            r->target = r->path;
            r->form = VD_TARGET_ORIGIN;
        }
    }
    if (iov_is(r->method, "CONNECT")) {
        /* The stream's DATA is the tunnel, not a body (RFC 9113 §8.5). */
        r->framing.kind = VD_BODY_NONE;
        st->connect = true;
    } else if (end_stream) {
        r->framing.kind = VD_BODY_NONE;
        st->rbody_end = true;
    } else if (st->has_cl) {
        r->framing.kind = st->cl ? VD_BODY_LENGTH : VD_BODY_NONE;
        r->framing.length = st->cl;
    } else {
        /* Length unknown: the handler frames it (chunked towards HTTP/1.1). */
        r->framing.kind = VD_BODY_CHUNKED;
    }
    uint64_t max = st->h->conf->limits.body;
    if (max && st->has_cl && st->cl > max) {
        *why = "request body larger than limits.body";
        return 413;
    }
    return 0;
}

static int
cb_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
              void *ud)
{
    struct vd_h2 *h = ud;
    (void)flags;
    struct h2st *st = st_get(h, id);
    if (!st || st->done || st->too_big || (st->t && !st->t->handler && st->started)) {
        /* Nobody takes these bytes any more: give the window back at once. */
        (void)nghttp2_session_consume(ng, id, len);
        return 0;
    }
    if (bq_add(&st->rbody, data, len, true) != len) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (st->t) {
        st->t->stats.bytes_in += len;
    }
    uint64_t max = h->conf->limits.body;
    if (max && st->t && st->t->stats.bytes_in > max + st->head_bytes && !st->started) {
        st->too_big = true;
    }
    st_queue(st);
    return 0;
}

static int
cb_frame_recv(nghttp2_session *ng, const nghttp2_frame *fr, void *ud)
{
    struct vd_h2 *h = ud;
    (void)ng;
    struct h2st *st = fr->hd.stream_id ? st_get(h, fr->hd.stream_id) : NULL;
    switch (fr->hd.type) {
    case NGHTTP2_HEADERS:
        if (!st) {
            break;
        }
        if (!st->headers_done) {
            st->headers_done = true;
            st->rbody_end = fr->hd.flags & NGHTTP2_FLAG_END_STREAM;
            st_queue(st);
        } else if (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            st->rbody_end = true; /* trailers */
            st_queue(st);
        }
        break;
    case NGHTTP2_DATA:
        if (st && (fr->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            st->rbody_end = true;
            st_queue(st);
        }
        break;
    case NGHTTP2_RST_STREAM:
        refill(h);
        if (h->reset_tokens < 1) {
            return calm(h, "stream reset flood (rapid reset, CVE-2023-44487)");
        }
        h->reset_tokens -= 1;
        break;
    default:
        break;
    }
    return 0;
}

/* RFC 9113 §8.1: once the response is complete, a request still being sent is not needed;
 * RST_STREAM NO_ERROR tells the client to stop (a tunnel's END_STREAM is only a half-close). */
static int
cb_frame_send(nghttp2_session *ng, const nghttp2_frame *fr, void *ud)
{
    struct vd_h2 *h = ud;
    if ((fr->hd.type == NGHTTP2_HEADERS || fr->hd.type == NGHTTP2_DATA) &&
        (fr->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct h2st *st = st_get(h, fr->hd.stream_id);
        if (st && !st->rbody_end && !st->tunneling) {
            (void)nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
        }
    }
    return 0;
}

static int
cb_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    struct vd_h2 *h = ud;
    (void)ng;
    struct h2st *st = st_get(h, id);
    h->closed_ring[h->closed_pos++ % VD_ARRAY_LEN(h->closed_ring)] = id;
    if (!st) {
        return 0;
    }
    st->ng_closed = true;
    if (st->tunneling) {
        /* The relay finds out through the virtual socket and ends; tunnel_end frees. */
        if (st->vs.on_event && st->vs.armed) {
            st_queue(st);
        }
        return 0;
    }
    if (st->t && !st->done && st->eof_sent) {
        st->done = true;
    }
    if (st->t) {
        if (!st->done && st->t->status == 0) {
            st->t->status = 499; /* the client cancelled the stream */
        }
        st->busy++;
        st_finish_txn(st);
        st->busy--;
    }
    st_maybe_free(st);
    return 0;
}

/* ---- request processing (outside nghttp2 callbacks) ------------------------------------------ */

static void
start_txn(struct h2st *st)
{
    struct vd_txn *t = st->t;
    const char *why = NULL;
    st->started = true;
    int status = build_request(st, st->rbody_end && st->rbody.len == 0, &why);
    if (status) {
        vd_log(VD_LOG_INFO, &t->log, "bad request: %s", why);
        char detail[200];
        snprintf(detail, sizeof(detail), "%s", why);
        vd_txn_respond_error(t, status, detail, false);
        return;
    }
    vd_txn_start(t);
}

/* Delivers buffered request body to the handler; the window opens by what it accepted. */
static void
deliver_body(struct h2st *st)
{
    for (;;) {
        struct vd_txn *t = st->t;
        if (!t || st->tunneling || st->connect || st->body_paused || st->end_sent || !t->handler) {
            return;
        }
        if (t->req.framing.kind == VD_BODY_NONE) {
            if (st->rbody.len) {
                /* DATA on a request that declared none (content-length: 0). */
                (void)nghttp2_session_consume(st->h->ng, st->id, st->rbody.len);
                bq_consume(&st->rbody, st->rbody.len);
            }
            return;
        }
        if (st->rbody.len == 0 && !st->rbody_end) {
            return;
        }
        bool end = st->rbody_end;
        size_t n = st->rbody.len;
        ssize_t k = t->handler->on_req_body(t, n ? st->rbody.p + st->rbody.off : NULL, n, end);
        if (st->t != t) {
            return;
        }
        if (k < 0) {
            st_reset(st, NGHTTP2_INTERNAL_ERROR);
            return;
        }
        if (k > 0) {
            (void)nghttp2_session_consume(st->h->ng, st->id, (size_t)k);
            bq_consume(&st->rbody, (size_t)k);
            kick(st->h);
        }
        if ((size_t)k == n && end) {
            st->end_sent = true;
            return;
        }
        if ((size_t)k < n) {
            st->body_paused = true;
            return;
        }
        if (n == 0) {
            return;
        }
    }
}

static void
process_stream(struct h2st *st)
{
    struct vd_txn *t = st->t;
    if (t && st->headers_done && !st->started) {
        start_txn(st);
    }
    if (st->t && st->started) {
        deliver_body(st);
    }
    if (st->tunneling && st->vs.on_event && !st->vs.closing) {
        int ev = 0;
        if ((st->vs.armed & VD_WANT_READ) && (st->rbody.len || st->rbody_end || st->ng_closed)) {
            ev |= VD_WANT_READ;
        }
        if ((st->vs.armed & VD_WANT_WRITE) && (bq_room(&st->obody) || st->ng_closed)) {
            ev |= VD_WANT_WRITE;
        }
        if (ev) {
            st->vs.on_event(&st->vs, ev);
        }
        return;
    }
    if (st->t && st->handler_waits && st->obody.len < st->obody.max / 2 && st->t->handler) {
        st->handler_waits = false;
        st->t->handler->on_writable(st->t);
    }
}

static void
process_ready(struct vd_h2 *h)
{
    while (!vd_list_empty(&h->ready) && !h->dead) {
        struct h2st *st = VD_CONTAINER_OF(h->ready.next, struct h2st, rlink);
        vd_list_remove(&st->rlink);
        st->queued = false;
        st->busy++;
        process_stream(st);
        st->busy--;
        st_maybe_free(st);
    }
}

/* ---- response side: the data provider ------------------------------------------------------- */

static ssize_t
cb_data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
             nghttp2_data_source *src, void *ud)
{
    struct h2st *st = src->ptr;
    (void)ng;
    (void)id;
    (void)ud;
    size_t n = VD_MIN(len, st->obody.len);
    if (n) {
        memcpy(buf, st->obody.p + st->obody.off, n);
        bq_consume(&st->obody, n);
        if (st->t) {
            st->t->stats.bytes_out += n;
            if (st->tunneling) {
                /* Room again: the relay may write. */
                if (st->vs.armed & VD_WANT_WRITE) {
                    st_queue(st);
                }
            } else if (st->handler_waits && st->obody.len < st->obody.max / 2) {
                st_queue(st);
            }
        }
    }
    if (st->obody.len == 0 && st->oend) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        st->eof_sent = true;
        if (st->has_trailers) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(st->h->ng, st->id, st->tnv, st->ntnv) != 0) {
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static void
resume(struct h2st *st)
{
    if (st->deferred && !st->ng_closed) {
        st->deferred = false;
        (void)nghttp2_session_resume_data(st->h->ng, st->id);
    }
    kick(st->h);
}

/* Connection-specific fields (RFC 9113 §8.2.2) and Content-Length (regenerated). */
static bool
not_sent(struct vd_iov n)
{
    switch (n.len) {
    case 7:
        return vd__hdr_name_eq(n, "upgrade", 7);
    case 10:
        return vd__hdr_name_eq(n, "connection", 10) || vd__hdr_name_eq(n, "keep-alive", 10);
    case 14:
        return vd__hdr_name_eq(n, "content-length", 14);
    case 16:
        return vd__hdr_name_eq(n, "proxy-connection", 16);
    case 17:
        return vd__hdr_name_eq(n, "transfer-encoding", 17);
    default:
        return false;
    }
}

/* Field names go lowercase on HTTP/2 (RFC 9113 §8.2.1); connection-specific fields are not
 * sent (§8.2.2). Returns the nv array in the arena, or NULL. */
static nghttp2_nv *
make_nv(struct vd_txn *t, int status, const struct vd_hdr *hd, size_t n, int64_t length,
        size_t *out_n)
{
    nghttp2_nv *nv = vd_arena_alloc(&t->arena, sizeof(*nv) * (n + 2));
    char *st = vd_arena_alloc(&t->arena, 4);
    if (!nv || !st) {
        return NULL;
    }
    size_t names = 0;
    for (size_t i = 0; i < n; i++) {
        names += hd[i].name.len;
    }
    uint8_t *lc = vd_arena_alloc(&t->arena, names ? names : 1); /* every lowercase name */
    if (!lc) {
        return NULL;
    }
    size_t k = 0;
    if (status) {
        st[0] = (char)('0' + status / 100 % 10);
        st[1] = (char)('0' + status / 10 % 10);
        st[2] = (char)('0' + status % 10);
        nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NONE};
    }
    for (size_t i = 0; i < n; i++) {
        if (not_sent(hd[i].name)) {
            continue;
        }
        uint8_t *name = lc;
        lc += hd[i].name.len;
        vd_hdr_lower(name, hd[i].name.base, hd[i].name.len);
        /* Copied by nghttp2 at submit: the values may live on the caller's stack. */
        nv[k++] = (nghttp2_nv){name, (uint8_t *)hd[i].value.base, hd[i].name.len, hd[i].value.len,
                               NGHTTP2_NV_FLAG_NONE};
    }
    if (length >= 0) {
        char *cl = vd_arena_alloc(&t->arena, 24);
        if (!cl) {
            return NULL;
        }
        size_t l = vd_u64_dec(cl, (uint64_t)length);
        nv[k++] =
            (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)cl, 14, l, NGHTTP2_NV_FLAG_NONE};
    }
    *out_n = k;
    return nv;
}

static size_t
nv_bytes(const nghttp2_nv *nv, size_t n)
{
    size_t b = 0;
    for (size_t i = 0; i < n; i++) {
        b += nv[i].namelen + nv[i].valuelen + 4;
    }
    return b;
}

/* ---- front ops ------------------------------------------------------------------------------ */

static int
fo_send_interim(struct vd_txn *t, int status, const struct vd_hdr *hd, size_t n)
{
    struct h2st *st = txn_stream(t);
    if (st->ng_closed || (status == 100 && (!st->expect_100 || st->sent_100))) {
        return 0;
    }
    if (status == 100) {
        st->sent_100 = true;
    }
    size_t nn = 0;
    nghttp2_nv *nv = make_nv(t, status, hd, n, -1, &nn);
    if (!nv) {
        return VD_ENOMEM;
    }
    if (nghttp2_submit_headers(st->h->ng, NGHTTP2_FLAG_NONE, st->id, NULL, nv, nn, NULL) != 0) {
        return VD_EPROTO;
    }
    kick(st->h);
    return 0;
}

static int
fo_send_head(struct vd_txn *t, const struct vd_resp *resp)
{
    struct h2st *st = txn_stream(t);
    t->status = resp->status;
    t->resp_started = true;
    st->resp_has_body = resp->has_body || resp->tunnel;
    if (st->ng_closed) {
        return 0;
    }
    int64_t len = -1;
    if (!resp->tunnel && resp->length >= 0 && resp->status >= 200 && resp->status != 204) {
        len = resp->length;
    }
    size_t nn = 0;
    nghttp2_nv *nv = make_nv(t, resp->status, resp->hdrs, resp->nhdrs, len, &nn);
    if (!nv) {
        return VD_ENOMEM;
    }
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = cb_data_read};
    int r = nghttp2_submit_response(st->h->ng, st->id, nv, nn, st->resp_has_body ? &prd : NULL);
    if (r != 0) {
        return VD_EPROTO;
    }
    if (!st->resp_has_body) {
        st->eof_sent = true;
    }
    t->stats.bytes_out += nv_bytes(nv, nn);
    kick(st->h);
    return 0;
}

static ssize_t
fo_send_body(struct vd_txn *t, const uint8_t *p, size_t len)
{
    struct h2st *st = txn_stream(t);
    if (st->ng_closed) {
        return -ECONNRESET;
    }
    if (!st->resp_has_body || len == 0) {
        return (ssize_t)len;
    }
    size_t k = bq_add(&st->obody, p, len, false);
    if (k < len) {
        st->handler_waits = true;
    }
    if (k) {
        resume(st);
    }
    return (ssize_t)k;
}

/* Raw trailer lines ("name: value\r\n") to an nv array in the arena. */
static int
parse_trailers(struct h2st *st, const struct vd_dbuf *tr)
{
    struct vd_txn *t = st->t;
    size_t lines = 0;
    for (size_t i = 0; i < tr->len; i++) {
        lines += tr->p[i] == '\n';
    }
    struct vd_hdr *hd = vd_arena_alloc(&t->arena, sizeof(*hd) * (lines + 1));
    if (!hd) {
        return VD_ENOMEM;
    }
    size_t n = 0;
    const char *p = tr->p, *end = tr->p + tr->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && colon > p) {
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) {
                ve--;
            }
            hd[n].name = (struct vd_iov){(const uint8_t *)p, (size_t)(colon - p)};
            hd[n].value = (struct vd_iov){(const uint8_t *)v, (size_t)(ve - v)};
            n++;
        }
        p = le + 1;
    }
    /* The lines live in the handler's buffer: copy what the nv array points at. */
    for (size_t i = 0; i < n; i++) {
        hd[i].name = dup_iov(t, hd[i].name.base, hd[i].name.len);
        hd[i].value = dup_iov(t, hd[i].value.base, hd[i].value.len);
    }
    if (n == 0) {
        return 0;
    }
    st->tnv = make_nv(t, 0, hd, n, -1, &st->ntnv);
    if (!st->tnv) {
        return VD_ENOMEM;
    }
    st->has_trailers = st->ntnv > 0;
    return 0;
}

static int
fo_send_end(struct vd_txn *t, const struct vd_dbuf *trailers)
{
    struct h2st *st = txn_stream(t);
    if (trailers && trailers->len && st->resp_has_body) {
        (void)parse_trailers(st, trailers);
    }
    st->oend = true;
    st->done = true;
    t->handler = NULL;
    if (!st->resp_has_body || st->ng_closed) {
        /* Logged when nghttp2 closes the stream (it may have already). */
        if (st->ng_closed) {
            st_finish_txn(st);
            st_maybe_free(st);
            return 0;
        }
    }
    if (st->rbody.len) {
        /* A request body nobody reads any more. */
        (void)nghttp2_session_consume(st->h->ng, st->id, st->rbody.len);
        bq_consume(&st->rbody, st->rbody.len);
    }
    resume(st);
    return 0;
}

static void
fo_req_body_pause(struct vd_txn *t, bool pause)
{
    struct h2st *st = txn_stream(t);
    st->body_paused = pause;
    if (!pause) {
        st_queue(st);
    }
}

static void
fo_abort(struct vd_txn *t)
{
    struct h2st *st = txn_stream(t);
    t->handler = NULL;
    if (t->status == 0) {
        t->status = 502;
    }
    st->done = true;
    st_reset(st, NGHTTP2_INTERNAL_ERROR);
    /* Logged and freed when the reset closes the stream. */
}

/* ---- tunnels on a stream: a virtual socket ----------------------------------------------------
 */

static ssize_t
vs_read(struct vd_sock *s, uint8_t *buf, size_t len)
{
    struct h2st *st = s->xp;
    if (st->rbody.len) {
        size_t n = VD_MIN(len, st->rbody.len);
        memcpy(buf, st->rbody.p + st->rbody.off, n);
        bq_consume(&st->rbody, n);
        if (!st->ng_closed) {
            (void)nghttp2_session_consume(st->h->ng, st->id, n);
            kick(st->h);
        }
        return (ssize_t)n;
    }
    if (st->rbody_end) {
        return 0;
    }
    if (st->ng_closed) {
        return -ECONNRESET;
    }
    s->want = VD_WANT_READ;
    return VD_EAGAIN;
}

static ssize_t
vs_writev(struct vd_sock *s, const struct iovec *iov, int iovcnt)
{
    struct h2st *st = s->xp;
    if (st->ng_closed || st->oend) {
        return -EPIPE;
    }
    size_t done = 0;
    for (int i = 0; i < iovcnt; i++) {
        size_t k = bq_add(&st->obody, iov[i].iov_base, iov[i].iov_len, false);
        done += k;
        if (k < iov[i].iov_len) {
            break;
        }
    }
    if (done == 0) {
        s->want = VD_WANT_WRITE;
        return VD_EAGAIN;
    }
    resume(st);
    return (ssize_t)done;
}

static int
vs_shutdown(struct vd_sock *s)
{
    struct h2st *st = s->xp;
    st->oend = true;
    resume(st);
    return 0;
}

static void
vs_destroy(struct vd_sock *s)
{
    (void)s;
}

static void
vs_arm(struct vd_sock *s, int events)
{
    struct h2st *st = s->xp;
    int ev = 0;
    if ((events & VD_WANT_READ) && (st->rbody.len || st->rbody_end || st->ng_closed)) {
        ev |= VD_WANT_READ;
    }
    if ((events & VD_WANT_WRITE) && (bq_room(&st->obody) || st->ng_closed)) {
        ev |= VD_WANT_WRITE;
    }
    if (ev) {
        st_queue(st); /* ready now: delivered from the session, never nested */
    }
}

static void
vs_close(struct vd_sock *s)
{
    (void)s; /* the stream ends in tunnel_end */
}

static const struct vd_xport_ops h2_stream_xport = {
    .name = "h2-stream",
    .read = vs_read,
    .writev = vs_writev,
    .shutdown = vs_shutdown,
    .destroy = vs_destroy,
    .arm = vs_arm,
    .close = vs_close,
};

static int
fo_tunnel(struct vd_txn *t, struct vd_tunnel_end *end)
{
    struct h2st *st = txn_stream(t);
    if (!end) {
        return 0;
    }
    st->tunneling = true;
    vd_sock_init_virtual(&st->vs, &h2_stream_xport, st);
    /* The request bytes already received are read through the socket: no early view. */
    *end = (struct vd_tunnel_end){.sock = &st->vs};
    return 0;
}

static void
fo_tunnel_end(struct vd_txn *t)
{
    struct h2st *st = txn_stream(t);
    t->handler = NULL;
    st->tunneling = false;
    st->done = true;
    st->vs.closing = true;
    if (!st->ng_closed) {
        if (!st->oend || !st->rbody_end) {
            /* A relay that ended with a reset, an error or a timeout (RFC 9113 §8.5: a TCP
             * error becomes RST_STREAM CONNECT_ERROR). */
            st_reset(st, NGHTTP2_CONNECT_ERROR);
        } else {
            resume(st); /* both sides finished: END_STREAM goes after the queued bytes */
        }
    }
    st_finish_txn(st);
    st_maybe_free(st);
}

static const struct vd_front_ops h2_front_ops = {
    .send_interim = fo_send_interim,
    .send_head = fo_send_head,
    .send_body = fo_send_body,
    .send_end = fo_send_end,
    .req_body_pause = fo_req_body_pause,
    .abort = fo_abort,
    .tunnel = fo_tunnel,
    .tunnel_end = fo_tunnel_end,
};

/* ---- session I/O ------------------------------------------------------------------------------
 */

static void
fatal(struct vd_h2 *h, const char *why)
{
    if (h->dead) {
        return;
    }
    if (why) {
        vd_log(VD_LOG_INFO, &h->log, "HTTP/2 connection ends: %s", why);
    }
    h->host.close(h->host.conn); /* calls vd_h2_free */
}

/* Gathers the frames nghttp2 has ready (up to OUT_HIGH bytes) and writes them with one call:
 * one syscall and, on TLS, one record for many small frames (a response's HEADERS and DATA, many
 * streams' responses). Repeats while the socket takes everything. Returns false when the
 * connection was closed. */
static bool
flush(struct vd_h2 *h)
{
    for (;;) {
        while (h->out.len < OUT_HIGH) {
            const uint8_t *d = NULL;
            ssize_t n = nghttp2_session_mem_send(h->ng, &d);
            if (n < 0) {
                fatal(h, nghttp2_strerror((int)n));
                return false;
            }
            if (n == 0) {
                break;
            }
            if (bq_add(&h->out, d, (size_t)n, true) != (size_t)n) {
                fatal(h, "out of memory");
                return false;
            }
        }
        if (h->out.len == 0) {
            return true;
        }
        while (h->out.len) {
            struct iovec iov = {h->out.p + h->out.off, h->out.len};
            ssize_t w = vd_sock_writev(h->host.sock, &iov, 1);
            if (w == VD_EAGAIN) {
                return true;
            }
            if (w < 0) {
                fatal(h, NULL);
                return false;
            }
            bq_consume(&h->out, (size_t)w);
        }
    }
}

static void
rearm(struct vd_h2 *h)
{
    if (h->dead) {
        return;
    }
    if (!nghttp2_session_want_read(h->ng) && !nghttp2_session_want_write(h->ng) &&
        h->out.len == 0) {
        fatal(h, NULL); /* GOAWAY exchanged and every stream done */
        return;
    }
    int ev = 0;
    if (h->want_read && h->out.len < OUT_NOREAD) {
        ev |= VD_WANT_READ;
        if (h->read_more) {
            kick(h); /* go on reading from the loop: poll may not see what TLS holds */
        }
    }
    if (h->out.len) {
        ev |= VD_WANT_WRITE;
    }
    struct vd_sock *s = h->host.sock;
    if (s->want && (s->want & ev) == 0 && ev) {
        ev |= s->want;
    }
    vd_sock_arm(s, ev);
    /* Timer: send stall while output waits, keep-alive while no stream runs. */
    if (h->out.len) {
        h->host.set_timer(h->host.conn, h->conf->timeouts.send);
    } else if (h->nstreams == 0) {
        h->host.set_timer(h->host.conn, h->conf->timeouts.keepalive);
    } else {
        h->host.set_timer(h->host.conn, 0);
    }
}

/* Writes GOAWAY with @code (RFC 9113 §6.8) by hand after what is queued: the nghttp2
 * session stopped at the abusive frame and produces nothing more. Best effort, non-blocking. */
static void
goaway_raw(struct vd_h2 *h, uint32_t code)
{
    int32_t last = nghttp2_session_get_last_proc_stream_id(h->ng);
    uint8_t f[17] = {0, 0, 8, 0x7, 0, 0, 0, 0, 0};
    f[9] = (uint8_t)((last >> 24) & 0x7f);
    f[10] = (uint8_t)(last >> 16);
    f[11] = (uint8_t)(last >> 8);
    f[12] = (uint8_t)last;
    f[16] = (uint8_t)code;
    (void)bq_add(&h->out, f, sizeof(f), true);
    while (h->out.len) {
        struct iovec iov = {h->out.p + h->out.off, h->out.len};
        ssize_t w = vd_sock_writev(h->host.sock, &iov, 1);
        if (w <= 0) {
            break;
        }
        bq_consume(&h->out, (size_t)w);
    }
    (void)h->host.sock->ops->shutdown(h->host.sock);
}

/* One round: feed @p, run ready streams, write. */
static bool
feed(struct vd_h2 *h, const uint8_t *p, size_t n)
{
    if (n) {
        ssize_t r = nghttp2_session_mem_recv(h->ng, p, n);
        if (r < 0) {
            /* A fatal error: the session is stopped and produces nothing more, so the GOAWAY
             * is written by hand. nghttp2 itself limits CONTINUATION frames (8 per header
             * block) and queued acknowledgements (FLOODED). */
            bool calm_down =
                h->flood || r == NGHTTP2_ERR_FLOODED || r == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS;
            if (!h->flood && !h->fatal_code) {
                vd_log(VD_LOG_NOTICE, &h->log, "HTTP/2 connection ends: %s%s",
                       nghttp2_strerror((int)r), calm_down ? " (ENHANCE_YOUR_CALM)" : "");
            }
            goaway_raw(h, h->fatal_code ? h->fatal_code
                          : calm_down   ? NGHTTP2_ENHANCE_YOUR_CALM
                                        : NGHTTP2_PROTOCOL_ERROR);
            fatal(h, NULL);
            return false;
        }
    }
    process_ready(h);
    return !h->dead;
}

static void
io(struct vd_h2 *h, int ev)
{
    if (h->in_io || h->dead) {
        return;
    }
    h->in_io = true;
    if ((ev & VD_WANT_WRITE) && !flush(h)) {
        goto out;
    }
    if ((ev & VD_WANT_READ) && h->want_read) {
        h->read_more = true;
        for (int round = 0; round < READ_ROUNDS && h->out.len < OUT_NOREAD; round++) {
            if (!h->in.base && vd_buf_acquire(&h->in) < 0) {
                fatal(h, "out of buffer memory");
                goto out;
            }
            h->in.off = 0;
            h->in.len = 0;
            ssize_t n = vd_sock_read(h->host.sock, vd_buf_tail(&h->in), vd_buf_room(&h->in));
            if (n == VD_EAGAIN) {
                h->read_more = false;
                break;
            }
            if (n <= 0) {
                /* An HTTP/2 client that closes is gone: nothing it asked for can be
                 * delivered (there is no half-closed connection in HTTP/2). */
                h->want_read = false;
                fatal(h, NULL);
                goto out;
            }
            if (!feed(h, vd_buf_data(&h->in), (size_t)n)) {
                goto out;
            }
            if (!flush(h)) {
                goto out;
            }
        }
        vd_buf_release(&h->in);
    }
    process_ready(h);
    if (!h->dead && flush(h)) {
        /* Streams that became ready while writing (queues drained). */
        while (!vd_list_empty(&h->ready) && !h->dead) {
            process_ready(h);
            if (!flush(h)) {
                break;
            }
        }
    }
out:
    h->in_io = false;
    if (!h->dead) {
        rearm(h);
    }
}

static void
idle_cb(uv_idle_t *idle)
{
    struct vd_h2 *h = idle->data;
    uv_idle_stop(&h->idle);
    h->kicked = false;
    if (!h->dead) {
        io(h, VD_WANT_WRITE | (h->read_more ? VD_WANT_READ : 0));
    }
}

static void
kick(struct vd_h2 *h)
{
    if (h->kicked || h->in_io || h->dead) {
        return;
    }
    h->kicked = true;
    uv_idle_start(&h->idle, idle_cb);
}

/* ---- session life -----------------------------------------------------------------------------
 */

static void
idle_closed(uv_handle_t *hd)
{
    struct vd_h2 *h = hd->data;
    h->magic = 0xdeadbeef;
    free(h);
}

struct vd_h2 *
vd_h2_start(const struct vd_h2_host *host)
{
    struct vd_h2 *h = calloc(1, sizeof(*h));
    if (!h) {
        return NULL;
    }
    h->magic = H2_MAGIC;
    h->host = *host;
    h->conf = host->conf;
    h->log = host->log;
    h->want_read = true;
    bq_init(&h->out, SIZE_MAX);
    vd_list_init(&h->streams);
    vd_list_init(&h->ready);
    const struct vd_conf_h2 *c = &h->conf->h2;
    h->reset_tokens = c->reset_burst;
    h->control_tokens = c->control_burst;
    h->last_refill = uv_now(&host->w->loop);

    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        free(h);
        return NULL;
    }
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        free(h);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, cb_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, cb_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cb_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, cb_frame_send);
    /* Window updates follow what handlers accept, not what arrived. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, 256 * 1024);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    int r = nghttp2_session_server_new3(&h->ng, cbs, h, opt, &ng_mem);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (r != 0) {
        free(h);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, h->conf->limits.header_block},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    /* Without the setting, nghttp2 treats a request with :protocol as malformed (RFC 8441 §3). */
    size_t niv = c->extended_connect ? VD_ARRAY_LEN(iv) : VD_ARRAY_LEN(iv) - 1;
    if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
        nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)c->conn_window) != 0) {
        nghttp2_session_del(h->ng);
        free(h);
        return NULL;
    }
    uv_idle_init(&host->w->loop, &h->idle);
    h->idle.data = h;
    return h;
}

void
vd_h2_input(struct vd_h2 *h, const uint8_t *early, size_t n)
{
    h->in_io = true;
    /* Our SETTINGS go first (RFC 9113 §3.4), whatever the early bytes hold. */
    bool ok = flush(h) && feed(h, early, n) && flush(h);
    h->in_io = false;
    if (ok) {
        rearm(h);
    }
}

void
vd_h2_event(struct vd_h2 *h, int ev)
{
    VD_BUG_ON(h->magic != H2_MAGIC);
    io(h, ev);
}

void
vd_h2_timeout(struct vd_h2 *h)
{
    if (h->out.len) {
        vd_log(VD_LOG_INFO, &h->log, "client send timeout: no write progress");
    } else {
        VD_TRACE(&h->log, VD_SUB_H1, "HTTP/2 idle timeout");
        /* RFC 9113 §6.8: say goodbye before closing an idle connection. */
        (void)nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE,
                                    nghttp2_session_get_last_proc_stream_id(h->ng),
                                    NGHTTP2_NO_ERROR, NULL, 0);
        h->in_io = true;
        (void)flush(h);
        h->in_io = false;
    }
    fatal(h, NULL);
}

void
vd_h2_drain(struct vd_h2 *h)
{
    if (h->draining || h->dead) {
        return;
    }
    h->draining = true;
    (void)nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE,
                                nghttp2_session_get_last_proc_stream_id(h->ng), NGHTTP2_NO_ERROR,
                                NULL, 0);
    if (h->nstreams == 0) {
        h->in_io = true;
        (void)flush(h);
        h->in_io = false;
        fatal(h, NULL);
        return;
    }
    kick(h);
}

void
vd_h2_free(struct vd_h2 *h)
{
    if (h->dead) {
        return;
    }
    h->dead = true;
    /* Abort every exchange: handlers release now; tunnels were told by on_abort. */
    while (!vd_list_empty(&h->streams)) {
        struct h2st *st = VD_CONTAINER_OF(h->streams.next, struct h2st, link);
        st->ng_closed = true;
        st->tunneling = false;
        st->busy++;
        st_finish_txn(st);
        st->busy--;
        st_free(st);
    }
    nghttp2_session_del(h->ng);
    h->ng = NULL;
    bq_free(&h->out);
    vd_buf_release(&h->in);
    uv_idle_stop(&h->idle);
    uv_close((uv_handle_t *)&h->idle, idle_closed);
}
