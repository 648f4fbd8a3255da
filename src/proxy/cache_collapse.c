/* SPDX-License-Identifier: MIT */
/* Collapsed forwarding for the shared cache (RFC 9111 §4: a cache may reuse one response to a
 * forwarded request for others): concurrent GET misses for one primary key make one origin
 * request. The first becomes the leader and forwards; the others wait for its response head
 * and, when the response turns out to be storable and fresh, read its body as it arrives from a
 * shared, reference-counted buffer (read-while-write), each at its own pace. When it is not,
 * does not match their Vary or directives, fails, or does not come in time, they go to the
 * origin themselves.
 * Cache-Status says `collapsed` (RFC 9211 §2.8). Leaders and waiters may be on different
 * workers: the registry is process-wide behind one mutex, and a leader wakes a waiter only
 * through the waiter's own loop (an async handle per worker); handlers never run on a foreign
 * loop. */
#include "vd/config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache-int.h"
#include "vd/err.h"

#define CW_MAGIC     0x43575431u
#define ORPHAN_MAGIC 0x4f525031u
#define NBUCKETS     256
#define CHUNK_MIN    16384u
#define CHUNK_MAX    (1u << 20)

/* A piece of the shared body. Written once by the leader and never moved; freed with the
 * body, or once every reader has passed it when the body became a window. */
struct chunk {
    struct chunk *next;
    size_t start; /* offset of data[0] in the body */
    size_t cap;
    uint8_t data[];
};

enum col_state {
    C_HEAD,   /* the leader waits for its response head */
    C_STREAM, /* head published, body arriving */
    C_DONE,   /* complete body published */
    C_FAILED, /* not shareable, too big, or the leader failed: nobody else may use it */
};

/* One leader's response, shared with its waiters. The fields marked "under col_mu" change under
 * the mutex; the head is written by the leader before the state leaves C_HEAD and is immutable
 * after; body bytes below @len are immutable too. */
struct vd__col {
    struct vd__col *hnext;  /* registry chain (under col_mu) */
    char *key;              /* primary key */
    bool registered;        /* under col_mu */
    int refs;               /* under col_mu: the leader, and each waiter */
    enum col_state state;   /* under col_mu */
    struct vd_list waiters; /* struct cw (under col_mu) */
    size_t nwaiters;        /* under col_mu */
    size_t readers;         /* waiters streaming the body (under col_mu) */
    /* the head */
    int status;
    struct vd_hdr *hdrs; /* one block with the names and values */
    size_t nhdrs;
    bool has_body;
    int64_t length; /* Content-Length, -1 when unknown */
    char *vary_names, *vary_key;
    struct vd_cache_cc cc;       /* the directives that govern it (targeted field or CC) */
    int64_t lifetime;            /* s */
    struct vd_cache_times times; /* §4.2.3 inputs */
    /* the body: chunks appended by the leader, @len published under col_mu */
    struct chunk *first; /* under col_mu once a window (trimmed from the front) */
    struct chunk *last;  /* leader only */
    size_t len;          /* under col_mu */
    size_t written;      /* leader only */
    size_t next_cap;     /* leader only: size of the next chunk */
    uint64_t max;        /* max_object: what the buffer holds */
    /* A body that grew past max_object while waiters streamed it: no longer stored nor joined;
     * the buffer keeps only what some reader still needs (under col_mu). */
    bool window;
};

/* Each worker's wake-up: leaders queue a waiter on its worker's ready list and send the async;
 * the worker runs it on its own loop. The storage is thread-local (it lives as long as the
 * worker thread); the handle is unreferenced, so it never keeps a draining loop alive, and is
 * closed with the others when the worker ends, after its last waiter left (a waiter is a client
 * exchange, and leaders wake only waiters still listed). */
struct wq {
    bool init;
    uv_async_t async;
    struct vd_list ready; /* struct cw (under col_mu) */
};

enum cw_state {
    W_HEAD,   /* waiting for the leader's head */
    W_STREAM, /* head sent to the client, body flowing */
};

/* A waiter: one client exchange on its worker, the handler of its transaction. */
struct cw {
    uint32_t magic;
    struct vd_txn *t;
    struct vd__col *c;    /* reference; NULL once left */
    struct wq *q;         /* its worker's */
    struct vd_list link;  /* in c->waiters (under col_mu) */
    struct vd_list qlink; /* in q->ready (under col_mu) */
    bool listed;          /* in c->waiters (under col_mu) */
    bool queued;          /* in q->ready (under col_mu) */
    bool want;            /* caught up with the body: wake it when more arrives (under col_mu) */
    bool dropped;         /* fell more than max_object behind a window (under col_mu) */
    size_t pos;           /* body bytes it has finished with (under col_mu) */
    enum cw_state state;  /* written under col_mu */
    uv_timer_t timer;     /* cache.collapse_timeout while waiting for the head */
    /* where it goes itself when it cannot use the leader's response (borrowed from the
     * transaction's arena or its conf snapshot) */
    const char *host;
    uint16_t port;
    bool tls;
    const struct vd_conf_route *route;
    const char *fwd;  /* Cache-Status fwd= of its own lookup (static string) */
    struct chunk *ch; /* chunk holding @off */
    size_t off;       /* body bytes sent */
};

static pthread_mutex_t col_mu = PTHREAD_MUTEX_INITIALIZER;
static struct vd__col *buckets[NBUCKETS];
static _Thread_local struct wq tl_wq;
/* Set while a waiter that gave up forwards its request itself (see vd__col_take_fallback). */
static _Thread_local bool tl_fallback;

static void cw_run(struct cw *w);

/* ---- the shared response -------------------------------------------------------------------- */

static uint32_t
hash_key(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

static void
body_free(struct vd__col *c)
{
    struct chunk *ch = c->first;
    while (ch) {
        struct chunk *n = ch->next;
        free(ch);
        ch = n;
    }
    c->first = c->last = NULL;
}

static void
col_free(struct vd__col *c)
{
    body_free(c);
    free(c->hdrs);
    free(c->vary_names);
    free(c->vary_key);
    free(c->key);
    free(c);
}

/* Drops one reference (under col_mu); returns true when the caller must free @c after
 * unlocking. */
static bool
unref_locked(struct vd__col *c)
{
    VD_BUG_ON(c->refs <= 0);
    return --c->refs == 0;
}

static void
unregister_locked(struct vd__col *c)
{
    if (!c->registered) {
        return;
    }
    struct vd__col **pp = &buckets[hash_key(c->key) % NBUCKETS];
    while (*pp != c) {
        pp = &(*pp)->hnext;
    }
    *pp = c->hnext;
    c->hnext = NULL;
    c->registered = false;
}

static void
wake_locked(struct cw *w)
{
    if (!w->queued) {
        vd_list_insert_tail(&w->q->ready, &w->qlink);
        w->queued = true;
        uv_async_send(&w->q->async);
    }
}

/* Wakes every waiter (@all) or those that caught up with the body. */
static void
wake_waiters_locked(struct vd__col *c, bool all)
{
    for (struct vd_list *n = c->waiters.next; n != &c->waiters; n = n->next) {
        struct cw *w = VD_CONTAINER_OF(n, struct cw, link);
        if (all || w->want) {
            w->want = false;
            wake_locked(w);
        }
    }
}

/* Marks @c unusable and tells every waiter; the body goes at once when nobody reads it. */
static void
fail_locked(struct vd__col *c)
{
    if (c->state == C_FAILED || c->state == C_DONE) {
        return;
    }
    c->state = C_FAILED;
    wake_waiters_locked(c, true);
    if (c->readers == 0) {
        body_free(c);
    }
}

/* Window mode: frees the chunks every streaming waiter has finished with. A reader's current
 * chunk always ends at or after its @pos (strict comparison: a reader at the very end of a
 * chunk may still hold it), so nothing freed here is in use. A chunk that ends below the
 * published length is never the leader's last one and its @next was set before that length
 * was published, so neither @last nor the leader's writes are touched. */
static void
trim_locked(struct vd__col *c)
{
    if (!c->window || !c->first) {
        return;
    }
    size_t min = c->len;
    for (struct vd_list *n = c->waiters.next; n != &c->waiters; n = n->next) {
        struct cw *w = VD_CONTAINER_OF(n, struct cw, link);
        if (w->state == W_STREAM && w->pos < min) {
            min = w->pos;
        }
    }
    while (c->first && c->first->start + c->first->cap < min) {
        struct chunk *ch = c->first;
        c->first = ch->next;
        free(ch);
    }
}

/* Window mode, before @n more bytes: the readers that would then be more than max_object
 * behind are cut off (woken to abort), so the buffer stays near max_object whatever one slow
 * client does. */
static void
drop_laggards_locked(struct vd__col *c, size_t n)
{
    size_t end = c->len + n;
    for (struct vd_list *l = c->waiters.next; l != &c->waiters; l = l->next) {
        struct cw *w = VD_CONTAINER_OF(l, struct cw, link);
        if (w->state == W_STREAM && !w->dropped && end - w->pos > c->max) {
            w->dropped = true;
            w->want = false;
            wake_locked(w);
        }
    }
}

/* ---- leader side ---------------------------------------------------------------------------- */

bool
vd__col_take_fallback(void)
{
    bool f = tl_fallback;
    tl_fallback = false;
    return f;
}

void
vd__col_fail(struct vd__col *c)
{
    pthread_mutex_lock(&col_mu);
    fail_locked(c);
    pthread_mutex_unlock(&col_mu);
}

int
vd__col_publish(struct vd__col *c, const struct vd_resp *resp, const char *vary_names,
                const char *vary_key, const struct vd_cache_cc *cc, int64_t lifetime,
                const struct vd_cache_times *tm)
{
    size_t bytes = 0;
    for (size_t i = 0; i < resp->nhdrs; i++) {
        bytes += resp->hdrs[i].name.len + resp->hdrs[i].value.len + 2;
    }
    /* One block: the field array, then the names and values, NUL-terminated. */
    struct vd_hdr *h = malloc(sizeof(*h) * (resp->nhdrs ? resp->nhdrs : 1) + bytes);
    char *vn = strdup(vary_names ? vary_names : "");
    char *vk = strdup(vary_key ? vary_key : "");
    if (!h || !vn || !vk) {
        free(h);
        free(vn);
        free(vk);
        vd__col_fail(c);
        return VD_ENOMEM;
    }
    char *p = (char *)(h + (resp->nhdrs ? resp->nhdrs : 1));
    for (size_t i = 0; i < resp->nhdrs; i++) {
        const struct vd_hdr *s = &resp->hdrs[i];
        memcpy(p, s->name.base, s->name.len);
        p[s->name.len] = '\0';
        h[i].name = (struct vd_iov){(const uint8_t *)p, s->name.len};
        p += s->name.len + 1;
        memcpy(p, s->value.base, s->value.len);
        p[s->value.len] = '\0';
        h[i].value = (struct vd_iov){(const uint8_t *)p, s->value.len};
        p += s->value.len + 1;
    }
    c->hdrs = h;
    c->nhdrs = resp->nhdrs;
    c->status = resp->status;
    c->has_body = resp->has_body;
    c->length = resp->has_body ? resp->length : -1;
    c->vary_names = vn;
    c->vary_key = vk;
    c->cc = *cc;
    c->lifetime = lifetime;
    c->times = *tm;
    /* A known length is one chunk of exactly that size (the store then takes it as it is). */
    c->next_cap = resp->length > 0 ? (size_t)resp->length : CHUNK_MIN;
    pthread_mutex_lock(&col_mu);
    c->state = C_STREAM;
    wake_waiters_locked(c, true);
    pthread_mutex_unlock(&col_mu);
    return 0;
}

const struct vd_hdr *
vd__col_hdrs(const struct vd__col *c, size_t *n)
{
    *n = c->nhdrs;
    return c->hdrs;
}

int
vd__col_append(struct vd__col *c, const uint8_t *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    int r = 0;
    if (c->written + n > c->max) {
        /* Too big to store. Waiters not streaming yet go to the origin themselves; those
         * already streaming keep going through a window of about max_object, unless none
         * is left. */
        pthread_mutex_lock(&col_mu);
        if (!c->window) {
            c->window = true;
            wake_waiters_locked(c, true);
        }
        trim_locked(c);
        drop_laggards_locked(c, n);
        bool readers = c->readers > 0;
        pthread_mutex_unlock(&col_mu);
        if (!readers) {
            return -ECANCELED;
        }
        r = VD_ETOOBIG;
    }
    size_t done = 0;
    while (done < n) {
        struct chunk *ch = c->last;
        if (!ch || c->written == ch->start + ch->cap) {
            size_t cap = VD_MIN(c->next_cap, (size_t)c->max);
            if (c->written < c->max && cap > c->max - c->written) {
                cap = (size_t)(c->max - c->written); /* exactly max_object until a window */
            }
            struct chunk *nc = malloc(sizeof(*nc) + cap);
            if (!nc) {
                return VD_ENOMEM;
            }
            nc->next = NULL;
            nc->start = c->written;
            nc->cap = cap;
            /* Readers follow @next only below the published length, which the mutex orders
             * after this store. */
            if (ch) {
                ch->next = nc;
            } else {
                c->first = nc;
            }
            c->last = ch = nc;
            c->next_cap = VD_MIN((size_t)CHUNK_MAX, cap * 2);
        }
        size_t room = ch->start + ch->cap - c->written;
        size_t take = VD_MIN(room, n - done);
        memcpy(ch->data + (c->written - ch->start), p + done, take);
        c->written += take;
        done += take;
    }
    pthread_mutex_lock(&col_mu);
    c->len = c->written;
    wake_waiters_locked(c, false);
    pthread_mutex_unlock(&col_mu);
    return r;
}

const uint8_t *
vd__col_body(const struct vd__col *c, size_t *len, uint8_t **tmp)
{
    *tmp = NULL;
    *len = c->written;
    if (!c->first) {
        return (const uint8_t *)"";
    }
    if (!c->first->next) {
        return c->first->data;
    }
    uint8_t *b = malloc(c->written);
    if (!b) {
        return NULL;
    }
    for (const struct chunk *ch = c->first; ch; ch = ch->next) {
        memcpy(b + ch->start, ch->data, VD_MIN(ch->cap, c->written - ch->start));
    }
    *tmp = b;
    return b;
}

void
vd__col_complete(struct vd__col *c)
{
    pthread_mutex_lock(&col_mu);
    if (c->state == C_STREAM) {
        c->state = C_DONE;
        wake_waiters_locked(c, false);
    }
    /* The store has the response now (or could not take it): later misses look there. */
    unregister_locked(c);
    pthread_mutex_unlock(&col_mu);
}

void
vd__col_end(struct vd__col *c)
{
    if (!c) {
        return;
    }
    pthread_mutex_lock(&col_mu);
    fail_locked(c); /* a no-op once complete */
    unregister_locked(c);
    bool last = unref_locked(c);
    pthread_mutex_unlock(&col_mu);
    if (last) {
        col_free(c);
    }
}

/* ---- waiters -------------------------------------------------------------------------------- */

static void
wq_async(uv_async_t *a)
{
    struct wq *q = a->data;
    /* One waiter at a time, each unlinked under the mutex before it runs, so a waiter that
     * ends (and is freed) is never left on a list being walked. Bounded per wake-up so a fast
     * leader cannot hold this loop; the rest runs on the next turn. */
    for (int i = 0; i < 256; i++) {
        pthread_mutex_lock(&col_mu);
        if (vd_list_empty(&q->ready)) {
            pthread_mutex_unlock(&col_mu);
            return;
        }
        struct cw *w = VD_CONTAINER_OF(q->ready.next, struct cw, qlink);
        vd_list_remove(&w->qlink);
        w->queued = false;
        pthread_mutex_unlock(&col_mu);
        VD_BUG_ON(w->magic != CW_MAGIC);
        cw_run(w);
    }
    uv_async_send(a);
}

/* The calling worker's wake-up, set up on first use; NULL when libuv refuses. */
static struct wq *
wq_get(struct vd_worker *wk)
{
    struct wq *q = &tl_wq;
    if (!q->init) {
        vd_list_init(&q->ready);
        if (uv_async_init(&wk->loop, &q->async, wq_async) < 0) {
            return NULL;
        }
        q->async.data = q;
        uv_unref((uv_handle_t *)&q->async);
        q->init = true;
    }
    return q;
}

static void
cw_closed(uv_handle_t *h)
{
    struct cw *w = h->data;
    VD_BUG_ON(w->magic != CW_MAGIC);
    w->magic = 0;
    free(w);
}

/* Takes @w off the shared response (every list, its reference). On its own thread. */
static void
cw_leave(struct cw *w)
{
    struct vd__col *c = w->c;
    if (!c) {
        return;
    }
    w->c = NULL;
    pthread_mutex_lock(&col_mu);
    if (w->listed) {
        vd_list_remove(&w->link);
        w->listed = false;
        c->nwaiters--;
    }
    if (w->queued) {
        vd_list_remove(&w->qlink);
        w->queued = false;
    }
    if (w->state == W_STREAM && --c->readers == 0 && c->state == C_FAILED) {
        body_free(c);
    }
    trim_locked(c);
    bool last = unref_locked(c);
    pthread_mutex_unlock(&col_mu);
    if (last) {
        col_free(c);
    }
}

/* Leaves and detaches from the transaction; the memory goes with the timer's close. */
static struct vd_txn *
cw_end(struct cw *w)
{
    struct vd_txn *t = w->t;
    cw_leave(w);
    w->t = NULL;
    if (t) {
        t->handler = NULL;
        t->handler_data = NULL;
    }
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, cw_closed);
    return t;
}

/* The leader's response cannot serve this request: it goes to the origin on its own, through
 * the ordinary forward path, which adds `collapsed=?0` to its Cache-Status. */
static void
cw_fallback(struct cw *w, const char *why)
{
    const char *host = w->host;
    uint16_t port = w->port;
    bool tls = w->tls;
    const struct vd_conf_route *route = w->route;
    struct vd_txn *t = cw_end(w);
    VD_TRACE(&t->log, VD_SUB_PROXY, "collapsed forwarding: %s, forwarding on its own", why);
    tl_fallback = true;
    vd_forward_start(t, host, port, tls, route); /* may end @t before it returns */
    tl_fallback = false;
}

/* True when the request of @w selects the same variant as the leader's (RFC 9111 §4.1). */
static bool
cw_vary_matches(const struct cw *w)
{
    const struct vd__col *c = w->c;
    if (c->vary_names[0] == '\0') {
        return true;
    }
    struct vd_dbuf k;
    vd_dbuf_init(&k, 65536);
    bool same = vd_cache_vary_key_names(c->vary_names, w->t->req.hdrs, w->t->req.nhdrs, &k) == 0 &&
                strcmp(k.p ? k.p : "", c->vary_key) == 0;
    vd_dbuf_free(&k);
    return same;
}

/* RFC 9111 §4.2.4: the waiter gets the response only where it would take it from the store
 * a moment later, that is fresh by its own request's directives (max-age, min-fresh); a stale
 * or no-cache response goes back to the origin for it. */
static bool
cw_fresh_enough(const struct cw *w)
{
    const struct vd__col *c = w->c;
    struct vd_cache_cc rq;
    vd_cache_req_cc(w->t->req.hdrs, w->t->req.nhdrs, &rq);
    int64_t age = vd_cache_current_age(&c->times, time(NULL));
    return vd_cache_usable(&rq, &c->cc, c->lifetime, age < 0 ? 0 : age) == VD_CACHE_USE_FRESH;
}

/* Sends what the leader has published so far; ends the exchange once all of it was sent. */
static void
cw_pump(struct cw *w)
{
    struct vd_txn *t = w->t;
    struct vd__col *c = w->c;
    for (;;) {
        pthread_mutex_lock(&col_mu);
        size_t avail = c->len;
        enum col_state st = c->state;
        w->pos = w->off;
        if (w->dropped) {
            pthread_mutex_unlock(&col_mu);
            vd_log(VD_LOG_INFO, &t->log,
                   "collapsed forwarding: client too slow for a shared response larger than "
                   "cache.max_object (%s)",
                   c->key);
            cw_end(w);
            t->front->abort(t);
            return;
        }
        if (st == C_FAILED) {
            pthread_mutex_unlock(&col_mu);
            /* Too big after all, or the origin failed mid-body: the response cannot be
             * completed, as when an origin breaks off. */
            vd_log(VD_LOG_INFO, &t->log,
                   "collapsed forwarding: the shared response for %s broke off", c->key);
            cw_end(w);
            t->front->abort(t);
            return;
        }
        if (w->off >= avail) {
            if (st == C_DONE) {
                pthread_mutex_unlock(&col_mu);
                cw_end(w);
                t->front->send_end(t, NULL);
                return;
            }
            w->want = true;
            pthread_mutex_unlock(&col_mu);
            return;
        }
        if (!w->ch) {
            w->ch = c->first;
        }
        while (w->off >= w->ch->start + w->ch->cap) {
            w->ch = w->ch->next;
        }
        pthread_mutex_unlock(&col_mu);
        struct chunk *ch = w->ch;
        size_t end = VD_MIN(avail, ch->start + ch->cap);
        size_t n = end - w->off;
        ssize_t k = t->front->send_body(t, ch->data + (w->off - ch->start), n);
        if (k < 0) {
            cw_end(w);
            t->front->abort(t);
            return;
        }
        w->off += (size_t)k;
        if ((size_t)k < n) {
            return; /* on_writable resumes */
        }
    }
}

/* The leader's head is known: send it with this waiter's own Cache-Status. */
static void
cw_start(struct cw *w)
{
    struct vd_txn *t = w->t;
    struct vd__col *c = w->c;
    pthread_mutex_lock(&col_mu);
    bool failed = c->state == C_FAILED || c->window;
    if (!failed) {
        c->readers++;
        w->state = W_STREAM;
    }
    pthread_mutex_unlock(&col_mu);
    if (failed) {
        cw_fallback(w, "the response is not shareable");
        return;
    }
    uv_timer_stop(&w->timer);
    struct vd_hdr *hd = vd_arena_alloc(&t->arena, sizeof(*hd) * (c->nhdrs + 1));
    char *csv = vd_arena_alloc(&t->arena, 96);
    if (!hd || !csv) {
        cw_end(w);
        vd_txn_respond_error(t, 503, "out of memory", true);
        return;
    }
    memcpy(hd, c->hdrs, sizeof(*hd) * c->nhdrs);
    /* RFC 9211 §2.8: the response to another forwarded request was reused. */
    int l = snprintf(csv, 96, "viaduct; fwd=%s; collapsed", w->fwd);
    t->stats.cache = csv + 9;
    hd[c->nhdrs] = (struct vd_hdr){VD_IOV_LIT("Cache-Status"), {(const uint8_t *)csv, (size_t)l}};
    struct vd_resp resp = {
        .status = c->status,
        .hdrs = hd,
        .nhdrs = c->nhdrs + 1,
        .has_body = c->has_body,
        .length = c->length,
    };
    if (t->front->send_head(t, &resp) < 0) {
        cw_end(w);
        t->front->abort(t);
        return;
    }
    cw_pump(w);
}

/* Something changed for @w (head, body, end, failure). On its own thread. */
static void
cw_run(struct cw *w)
{
    if (!w->c) {
        return;
    }
    if (w->state == W_STREAM) {
        cw_pump(w);
        return;
    }
    pthread_mutex_lock(&col_mu);
    enum col_state st = w->c->state;
    bool window = w->c->window;
    pthread_mutex_unlock(&col_mu);
    if (st == C_HEAD) {
        return; /* nothing yet */
    }
    if (window) {
        cw_fallback(w, "the response is larger than cache.max_object");
        return;
    }
    if (st == C_FAILED) {
        cw_fallback(w, "the response is not shareable");
        return;
    }
    /* The head is immutable from here on: reading it without the mutex is safe. */
    if (!cw_vary_matches(w)) {
        cw_fallback(w, "the response varies on fields this request does not share");
        return;
    }
    if (!cw_fresh_enough(w)) {
        cw_fallback(w, "the response is not fresh enough for this request");
        return;
    }
    cw_start(w);
}

static void
cw_timeout(uv_timer_t *tm)
{
    struct cw *w = tm->data;
    VD_BUG_ON(w->magic != CW_MAGIC);
    if (!w->c || w->state != W_HEAD) {
        return;
    }
    pthread_mutex_lock(&col_mu);
    bool waiting = w->c->state == C_HEAD;
    pthread_mutex_unlock(&col_mu);
    if (!waiting) {
        cw_run(w); /* the news is queued already; take it now */
        return;
    }
    cw_fallback(w, "no response head within cache.collapse_timeout");
}

static ssize_t
cw_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    return (ssize_t)len; /* a GET without a body: nothing arrives */
}

static void
cw_writable(struct vd_txn *t)
{
    struct cw *w = t->handler_data;
    VD_BUG_ON(w->magic != CW_MAGIC);
    if (w->state == W_STREAM && w->c) {
        cw_pump(w);
    }
}

static void
cw_abort(struct vd_txn *t)
{
    struct cw *w = t->handler_data;
    if (!w) {
        return;
    }
    VD_BUG_ON(w->magic != CW_MAGIC);
    VD_TRACE(&t->log, VD_SUB_PROXY, "collapsed forwarding: the client left");
    cw_end(w);
}

static const struct vd_handler_ops cw_ops = {
    .name = "cache",
    .on_req_body = cw_req_body,
    .on_writable = cw_writable,
    .on_abort = cw_abort,
};

int
vd__col_begin(struct vd_txn *t, const char *key, const char *fwd, const char *host, uint16_t port,
              bool tls, const struct vd_conf_route *route, struct vd__col **lead)
{
    *lead = NULL;
    struct wq *q = wq_get(t->w);
    if (!q) {
        return 0;
    }
    /* Allocated before the lock; the one not needed is freed after it. */
    struct vd__col *nc = calloc(1, sizeof(*nc));
    struct cw *w = calloc(1, sizeof(*w));
    if (nc) {
        nc->key = strdup(key);
    }
    if (!nc || !nc->key || !w) {
        if (nc) {
            free(nc->key);
        }
        free(nc);
        free(w);
        return 0;
    }
    int r = 0;
    pthread_mutex_lock(&col_mu);
    struct vd__col **bucket = &buckets[hash_key(key) % NBUCKETS], *c = *bucket;
    while (c && strcmp(c->key, key) != 0) {
        c = c->hnext;
    }
    if (!c) {
        /* The first miss: the leader. */
        nc->refs = 1;
        nc->state = C_HEAD;
        nc->length = -1;
        nc->max = t->conf->cache.max_object;
        vd_list_init(&nc->waiters);
        nc->registered = true;
        nc->hnext = *bucket;
        *bucket = nc;
        *lead = nc;
        nc = NULL;
    } else if (c->state == C_HEAD || (c->state == C_STREAM && !c->window)) {
        /* A response is on its way: wait for it (or join it while it streams). */
        w->c = c;
        c->refs++;
        vd_list_insert_tail(&c->waiters, &w->link);
        w->listed = true;
        c->nwaiters++;
        w->q = q;
        if (c->state == C_STREAM) {
            wake_locked(w);
        }
        r = 1;
    }
    /* Otherwise (not shareable, already failed): this request is forwarded on its own. */
    pthread_mutex_unlock(&col_mu);
    if (nc) {
        free(nc->key);
        free(nc);
    }
    if (r == 0) {
        free(w);
        if (*lead) {
            VD_TRACE(&t->log, VD_SUB_PROXY, "collapsed forwarding: leading %s", key);
        }
        return 0;
    }
    w->magic = CW_MAGIC;
    w->t = t;
    w->host = host;
    w->port = port;
    w->tls = tls;
    w->route = route;
    w->fwd = fwd;
    uv_timer_init(&t->w->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, cw_timeout, t->conf->cache.collapse_timeout, 0);
    t->handler = &cw_ops;
    t->handler_data = w;
    VD_TRACE(&t->log, VD_SUB_PROXY, "collapsed forwarding: waiting for %s", key);
    return 1;
}

/* ---- a leader whose client left -------------------------------------------------------------- */

/* The transaction that carries on a leader's transfer for its waiters: no client, a front that
 * discards what it is sent and frees the transaction at the end. */
struct orphan {
    uint32_t magic;
    struct vd_txn t;
    struct vd__detached d; /* in this worker thread's list of client-less ones */
    struct vd__col *c;     /* reference: the response it reads for the waiters */
    struct sockaddr_storage peer;
};

static struct orphan *
orphan_of(struct vd_txn *t)
{
    struct orphan *o = t->front_data;
    VD_BUG_ON(o->magic != ORPHAN_MAGIC);
    return o;
}

static void
orphan_finish(struct orphan *o)
{
    VD_TRACE(&o->t.log, VD_SUB_PROXY, "collapsed forwarding: transfer without a client ended (%d)",
             o->t.status);
    vd__detached_remove(&o->d);
    pthread_mutex_lock(&col_mu);
    bool last = unref_locked(o->c);
    pthread_mutex_unlock(&col_mu);
    if (last) {
        col_free(o->c);
    }
    struct vd_conf *conf = o->t.conf;
    vd_arena_free(&o->t.arena);
    o->magic = 0;
    free(o);
    vd_conf_unref(conf);
}

static void
orphan_detached_finish(struct vd__detached *d)
{
    orphan_finish(VD_CONTAINER_OF(d, struct orphan, d));
}

static ssize_t
of_body(struct vd_txn *t, const uint8_t *p, size_t len)
{
    /* Nobody reads it here: the waiters read the shared copy. When the response turned out
     * not to be shared after all, nobody needs the rest: the transfer stops (as a client
     * that went away). */
    struct orphan *o = orphan_of(t);
    pthread_mutex_lock(&col_mu);
    bool failed = o->c->state == C_FAILED;
    pthread_mutex_unlock(&col_mu);
    return failed ? -ECANCELED : (ssize_t)len;
}

static int
of_end(struct vd_txn *t, const struct vd_dbuf *trailers)
{
    orphan_finish(orphan_of(t));
    return 0;
}

static void
of_abort(struct vd_txn *t)
{
    orphan_finish(orphan_of(t));
}

static void
of_tunnel_end(struct vd_txn *t)
{
    orphan_finish(orphan_of(t));
}

static const struct vd_front_ops orphan_front = {
    .send_interim = vd__detached_interim,
    .send_head = vd__detached_head,
    .send_body = of_body,
    .send_end = of_end,
    .req_body_pause = vd__detached_pause,
    .abort = of_abort,
    .tunnel = vd__detached_tunnel,
    .tunnel_end = of_tunnel_end,
};

static struct vd_iov
dup_iov(struct vd_arena *a, struct vd_iov v, bool *oom)
{
    if (v.len == 0) {
        return (struct vd_iov){(const uint8_t *)"", 0};
    }
    char *p = vd_arena_dup(a, v.base, v.len);
    if (!p) {
        *oom = true;
        return VD_IOV_NULL;
    }
    return (struct vd_iov){(const uint8_t *)p, v.len};
}

static char *
dup_str(struct vd_arena *a, const char *s, bool *oom)
{
    if (!s) {
        return NULL;
    }
    char *p = vd_arena_dup(a, s, strlen(s));
    *oom |= p == NULL;
    return p;
}

struct vd_txn *
vd__col_adopt(struct vd__col *c, struct vd_txn *src, char **host, char **sni)
{
    struct orphan *o = src->w->draining ? NULL : calloc(1, sizeof(*o));
    if (!o) {
        return NULL;
    }
    pthread_mutex_lock(&col_mu);
    bool needed = c->nwaiters > 0 && (c->state == C_HEAD || c->state == C_STREAM);
    if (needed) {
        c->refs++;
        o->c = c;
    }
    pthread_mutex_unlock(&col_mu);
    if (!needed) {
        free(o);
        return NULL;
    }
    const struct vd_req *sr = &src->req;
    size_t need = sizeof(struct vd_hdr) * (sr->nhdrs + 1) + 1024 + strlen(*host) +
                  (*sni ? strlen(*sni) : 0) + sr->target.len + sr->scheme.len + sr->authority.len +
                  sr->path.len + sr->method.len + (src->client_text ? strlen(src->client_text) : 0);
    for (size_t i = 0; i < sr->nhdrs; i++) {
        need += sr->hdrs[i].name.len + sr->hdrs[i].value.len;
    }
    o->magic = ORPHAN_MAGIC;
    struct vd_txn *t = &o->t;
    vd_arena_init(&t->arena, src->conf->limits.request_arena + need);
    t->conf = vd_conf_ref(src->conf);
    t->w = src->w;
    t->front = &orphan_front;
    t->front_data = o;
    if (src->client) {
        memcpy(&o->peer, src->client,
               src->client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                  : sizeof(struct sockaddr_in));
    }
    t->client = (const struct sockaddr *)&o->peer;
    t->client_tls = src->client_tls;
    t->mode = src->mode;
    t->status = src->status;
    t->resp_started = src->resp_started;
    t->stats = src->stats;
    t->stats.cache = NULL;
    o->d = (struct vd__detached){.t = t, .finish = orphan_detached_finish};
    vd__detached_add(&o->d);
    /* What the forward handler and the cache hooks still read: the request (method, fields for
     * Vary), the origin's name, the log context. */
    struct vd_arena *a = &t->arena;
    bool oom = false;
    struct vd_req *r = &t->req;
    *r = *sr;
    r->method = dup_iov(a, sr->method, &oom);
    r->target = dup_iov(a, sr->target, &oom);
    r->scheme = dup_iov(a, sr->scheme, &oom);
    r->authority = dup_iov(a, sr->authority, &oom);
    r->path = dup_iov(a, sr->path, &oom);
    r->protocol = dup_iov(a, sr->protocol, &oom);
    r->hdrs = vd_arena_alloc(a, sizeof(*r->hdrs) * (sr->nhdrs ? sr->nhdrs : 1));
    oom |= r->hdrs == NULL;
    for (size_t i = 0; i < sr->nhdrs && !oom; i++) {
        r->hdrs[i].name = dup_iov(a, sr->hdrs[i].name, &oom);
        r->hdrs[i].value = dup_iov(a, sr->hdrs[i].value, &oom);
    }
    t->client_text = src->client_text ? dup_str(a, src->client_text, &oom) : "-";
    t->log = src->log;
    t->log.peer = t->client_text;
    t->log.action = "while reading a response for collapsed requests";
    t->user = dup_str(a, src->user, &oom);
    char *h = dup_str(a, *host, &oom);
    char *s = dup_str(a, *sni, &oom);
    if (oom) {
        orphan_finish(o);
        return NULL;
    }
    *host = h;
    *sni = s;
    VD_TRACE(&t->log, VD_SUB_PROXY,
             "collapsed forwarding: the client of %s left, the transfer goes on for the others",
             c->key);
    return t;
}
