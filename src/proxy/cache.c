/* SPDX-License-Identifier: MIT */
/* The shared cache in the request path (RFC 9111): a lookup before forwarding, serving fresh
 * responses from memory with a computed Age (§4.2.3) and Cache-Status (RFC 9211), conditional
 * requests for stale ones (§4.3.1) and the 304 update (§3.2, §4.3.4), storing responses while
 * they stream to the client (never a partial one), and invalidation after unsafe methods (§4.4).
 * Range requests are cut from stored complete responses (RFC 9110 §14: 206, multipart/byteranges,
 * 416). Concurrent misses are collapsed into one origin request (src/proxy/cache_collapse.c).
 * The policy itself is in src/cache/policy.c, the store in src/cache/store.c. */
#include "vd/config.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cache-int.h"
#include "vd/err.h"
#include "vd/mcache.h"

#define HIT_MAGIC 0x48495431u

struct vd_cache_xfer {
    char *key;       /* primary key; for unsafe methods the URI to invalidate */
    char *origin;    /* "scheme://authority" of @key */
    bool unsafe;     /* a method that invalidates (§4.4) */
    bool lookup;     /* GET/HEAD that went through the lookup: gets Cache-Status */
    const char *fwd; /* fwd= parameter */
    struct vd_cache_cc req_cc;
    bool req_auth;
    struct vd_cache_entry *stored; /* being revalidated (reference) */
    char served[96];               /* Cache-Status parameters when @stored answers after all */
    time_t request_time;
    int64_t heuristic_max; /* s */
    char *const *targeted; /* cache.targeted_fields, borrowed from the exchange's conf */
    size_t ntargeted;
    uint64_t max_object;
    /* the copy being stored */
    bool storing;
    int status;
    const struct vd_hdr *hdrs; /* the txn's arena */
    size_t nhdrs;
    uint8_t *body;
    size_t len, cap;
    char *vary_names, *vary_key;
    struct vd_cache_times times;
    /* collapsed forwarding */
    struct vd__col *col; /* this exchange leads: other misses wait for its response */
    bool sharing;        /* ... and the response is shared: the body goes to @col, not @body */
    bool gave_up;        /* a waiter that forwards on its own: Cache-Status collapsed=?0 */
};

/* A digest of the limits last given to the store (by whichever worker saw a new snapshot
 * first); 0 before the first. */
static _Atomic uint64_t cur_limits;

static bool
method_is(const struct vd_txn *t, const char *m)
{
    size_t l = strlen(m);
    return t->req.method.len == l && memcmp(t->req.method.base, m, l) == 0;
}

/* Writes @v in decimal at @out (room for 21 bytes); returns the length (no NUL). */
static size_t
i64_dec(char *out, int64_t v)
{
    if (v < 0) {
        out[0] = '-';
        return 1 + vd_u64_dec(out + 1, (uint64_t)0 - (uint64_t)v);
    }
    return vd_u64_dec(out, (uint64_t)v);
}

/* The primary key "scheme://authority/path?query" of @t at @out (@cap bytes, NUL-terminated),
 * with the authority lowercased and a default port left out. Returns the length of its origin
 * part ("scheme://authority") and sets *@klen; 0 when @cap is too small (key_cap says how much
 * it takes). */
static size_t
key_cap(const struct vd_txn *t)
{
    return 9 + t->req.authority.len + t->req.path.len;
}

static size_t
key_into(const struct vd_txn *t, char *out, size_t cap, size_t *klen)
{
    bool https = t->req.form == VD_TARGET_ABSOLUTE ? t->req.scheme.len == 5 : t->client_tls;
    struct vd_iov a = t->req.authority, path = t->req.path;
    size_t sl = https ? 8 : 7; /* "https://" or "http://" */
    if (cap < key_cap(t)) {
        return 0;
    }
    memcpy(out, https ? "https://" : "http://", sl);
    vd_hdr_lower((uint8_t *)out + sl, a.base, a.len);
    size_t n = sl + a.len;
    size_t dl = https ? 4 : 3;
    if (n > sl + dl && memcmp(out + n - dl, https ? ":443" : ":80", dl) == 0) {
        n -= dl;
    }
    if (path.len) {
        memcpy(out + n, path.base, path.len);
    }
    *klen = n + path.len;
    out[*klen] = '\0';
    return n;
}

static char *
join(const char *a, const uint8_t *p, size_t n)
{
    size_t al = strlen(a);
    char *s = malloc(al + n + 1);
    if (s) {
        memcpy(s, a, al);
        memcpy(s + al, p, n);
        s[al + n] = '\0';
    }
    return s;
}

/* The response directives that govern @h for this cache: a targeted field (RFC 9213) when one
 * of cache.targeted_fields is valid, else Cache-Control. */
static void
resp_cc(const struct vd_cache_xfer *cx, const struct vd_hdr *h, size_t n, struct vd_cache_cc *cc)
{
    vd_cache_resp_cc(h, n, cx->targeted, cx->ntargeted, cc);
}

void
vd__cache_end(struct vd_cache_xfer *cx)
{
    if (!cx) {
        return;
    }
    vd__col_end(cx->col);
    vd_cache_entry_unref(cx->stored);
    free(cx->body);
    free(cx->vary_names);
    free(cx->vary_key);
    free(cx->key);
    free(cx->origin);
    vd_mc_free(cx);
}

static void
configure(const struct vd_conf *conf)
{
    /* Once per configuration and thread: the digest below costs more than a cache lookup. */
    static _Thread_local uint64_t seen;
    if (conf->serial && seen == conf->serial) {
        return;
    }
    seen = conf->serial;
    struct vd_cache_limits lim;
    vd_cache_limits_from_conf(&lim, &conf->cache);
    uint64_t d = vd_cache_limits_digest(&lim);
    if (atomic_load_explicit(&cur_limits, memory_order_relaxed) == d) {
        return;
    }
    vd_cache_configure(&lim);
    atomic_store_explicit(&cur_limits, d, memory_order_relaxed);
}

/* ---- serving a stored response ------------------------------------------------------------- */

/* A piece of the body sent to the client: part headers at @p, or (@body) the stored body's
 * bytes at offset @foff, at @p when they are in memory (NULL for a file-backed entry). */
struct seg {
    const uint8_t *p;
    size_t len;
    uint64_t foff;
    bool body;
};

struct hit {
    uint32_t magic;
    struct vd_txn *t;
    struct vd_cache_entry *e;
    struct vd_dbuf text; /* part headers of a multipart/byteranges body (RFC 9110 §14.6) */
    /* A file segment through send_body (no send_file, or VD_ENOTIMPL): one pooled chunk of the
     * file read ahead, holding the segment's bytes [off, off + buf.len). */
    struct vd_buf buf;
    bool copy;        /* the front refused send_file for this response */
    uint64_t by_file; /* body bytes sent with send_file, for the trace */
    uint64_t by_copy; /* body bytes of the file sent with send_body (read into buf, or from the
                       * mapping of a memory file) */
    size_t nseg;
    size_t cur; /* segment being sent */
    size_t off; /* bytes of it already sent */
    struct seg seg[];
};

static void
hit_free(struct hit *h)
{
    vd_cache_entry_unref(h->e);
    vd_dbuf_free(&h->text);
    vd_buf_release(&h->buf);
    h->magic = 0;
    vd_mc_free(h);
}

/* Whether body segments of @h go through hit_send_file: a file-backed entry, or a body in a
 * memory file. */
static bool
hit_by_file(const struct hit *h)
{
    return vd_cache_entry_in_file(h->e) || h->e->body_memfd >= 0;
}

/* Sends from body segment @s at h->off: send_file when the front has it, else from the memory
 * file's mapping, else chunk by chunk from the disk file through one pooled chunk until the
 * front is full. Returns what send_body would: the bytes accepted, short only when the front
 * is full (on_writable follows), or an error. */
static ssize_t
hit_send_file(struct hit *h, const struct seg *s)
{
    struct vd_txn *t = h->t;
    const struct vd_cache_entry *e = h->e;
    size_t left = s->len - h->off;
    if (!h->copy && t->front->send_file) {
        bool disk = vd_cache_entry_in_file(e);
        uint64_t at = (disk ? e->body_off : 0) + s->foff + h->off;
        /* The mapping goes along (a disk file's when it has one, a memory file's always): the
         * front may write from it instead of sendfile (cache.disk_send). */
        const uint8_t *map =
            disk ? (e->body_map ? e->body_map + at : NULL) : (s->p ? s->p + h->off : NULL);
        ssize_t k = t->front->send_file(t, disk ? e->body_fd : e->body_memfd, (off_t)at, left, map);
        if (k != VD_ENOTIMPL) {
            h->by_file += k > 0 ? (uint64_t)k : 0;
            return k;
        }
        h->copy = true;
    }
    if (s->p) {
        ssize_t k = t->front->send_body(t, s->p + h->off, left);
        h->by_copy += k > 0 ? (uint64_t)k : 0;
        return k;
    }
    size_t done = 0;
    while (done < left) {
        if (h->buf.len == 0) {
            if (!h->buf.base) {
                int r = vd_buf_acquire(&h->buf);
                if (r < 0) {
                    return r;
                }
            }
            h->buf.off = 0;
            size_t n = VD_MIN(left - done, (size_t)h->buf.cap);
            int r = vd_cache_entry_read(e, s->foff + h->off + done, h->buf.base, n);
            if (r < 0) {
                return r;
            }
            h->buf.len = (uint32_t)n;
        }
        uint32_t want = h->buf.len;
        ssize_t k = t->front->send_body(t, vd_buf_data(&h->buf), want);
        if (k < 0) {
            return k; /* not a short count: that would wait for on_writable */
        }
        vd_buf_consume(&h->buf, (uint32_t)k);
        h->by_copy += (uint64_t)k;
        done += (size_t)k;
        if ((uint32_t)k < want) {
            break; /* full: on_writable follows */
        }
    }
    return (ssize_t)done;
}

static void
hit_pump(struct hit *h)
{
    struct vd_txn *t = h->t;
    while (h->cur < h->nseg) {
        const struct seg *s = &h->seg[h->cur];
        if (h->off == s->len) {
            h->cur++;
            h->off = 0;
            continue;
        }
        ssize_t k = s->body && hit_by_file(h)
                        ? hit_send_file(h, s)
                        : t->front->send_body(t, s->p + h->off, s->len - h->off);
        if (k < 0) {
            t->handler = NULL;
            t->handler_data = NULL;
            hit_free(h);
            t->front->abort(t);
            return;
        }
        h->off += (size_t)k;
        if (h->off < s->len) {
            return; /* on_writable resumes */
        }
    }
    if (h->by_file || h->by_copy) {
        VD_TRACE(&t->log, VD_SUB_PROXY,
                 "cache hit from %sfile: %llu bytes by send_file, %llu copied",
                 h->e->body_memfd >= 0 ? "memory " : "", (unsigned long long)h->by_file,
                 (unsigned long long)h->by_copy);
    }
    t->handler = NULL;
    t->handler_data = NULL;
    hit_free(h);
    t->front->send_end(t, NULL);
}

static ssize_t
hit_req_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    return (ssize_t)len; /* discarded: the answer does not depend on it */
}

static void
hit_writable(struct vd_txn *t)
{
    struct hit *h = t->handler_data;
    VD_BUG_ON(h->magic != HIT_MAGIC);
    hit_pump(h);
}

static void
hit_abort(struct vd_txn *t)
{
    struct hit *h = t->handler_data;
    if (h) {
        VD_BUG_ON(h->magic != HIT_MAGIC);
        t->handler_data = NULL;
        hit_free(h);
    }
}

static const struct vd_handler_ops hit_ops = {
    .name = "cache",
    .on_req_body = hit_req_body,
    .on_writable = hit_writable,
    .on_abort = hit_abort,
};

/* Weak comparison of two entity-tags (RFC 9110 §8.8.3.2). */
static bool
etag_weak_eq(struct vd_iov a, struct vd_iov b)
{
    if (a.len >= 2 && a.base[0] == 'W' && a.base[1] == '/') {
        a.base += 2;
        a.len -= 2;
    }
    if (b.len >= 2 && b.base[0] == 'W' && b.base[1] == '/') {
        b.base += 2;
        b.len -= 2;
    }
    return a.len == b.len && a.len >= 2 && a.base[0] == '"' && memcmp(a.base, b.base, a.len) == 0;
}

/* RFC 9110 §13.1.1/§13.1.3 and §13.2.2 (If-None-Match wins over If-Modified-Since): true when
 * the client's conditional says it has the stored representation. */
static bool
client_has_it(const struct vd_txn *t, const struct vd_cache_entry *e)
{
    const struct vd_hdr *rh = t->req.hdrs;
    size_t rn = t->req.nhdrs;
    if (vd_hdr_find(rh, rn, "if-none-match")) {
        const struct vd_hdr *et = vd_hdr_find(e->hdrs, e->nhdrs, "etag");
        for (size_t i = 0; i < rn; i++) {
            if (!vd_hdr_name_is(rh[i].name, "if-none-match")) {
                continue;
            }
            struct vd_iov rest = rh[i].value, item;
            while (vd_list_next(&rest, &item)) {
                if ((item.len == 1 && item.base[0] == '*') ||
                    (et && etag_weak_eq(item, et->value))) {
                    return true;
                }
            }
        }
        return false;
    }
    const struct vd_hdr *ims = vd_hdr_find(rh, rn, "if-modified-since");
    time_t since, lm;
    if (ims && vd_http_date_parse(ims->value, &since) == 0) {
        const struct vd_hdr *l = vd_hdr_find(e->hdrs, e->nhdrs, "last-modified");
        if (l && vd_http_date_parse(l->value, &lm) == 0) {
            return lm <= since;
        }
        if (!l) {
            /* RFC 9111 §4.3.2: without Last-Modified, the stored response's Date (or, without
             * one, when it was received) stands in for it. */
            return e->times.date_value <= since;
        }
    }
    return false;
}

/* Fields a 304 carries (RFC 9110 §15.4.5). */
static bool
in_304(struct vd_iov name)
{
    return vd_hdr_name_is(name, "etag") || vd_hdr_name_is(name, "date") ||
           vd_hdr_name_is(name, "vary") || vd_hdr_name_is(name, "cache-control") ||
           vd_hdr_name_is(name, "expires") || vd_hdr_name_is(name, "content-location") ||
           vd_hdr_name_is(name, "last-modified");
}

/* The Range field of @t when a stored @e may answer it with partial content: a GET, a stored
 * 200, one Range line, and an If-Range (when present) that holds (RFC 9110 §14.2, §13.1.5).
 * Returns what vd_cache_range_parse does, with the ranges in @t's arena, or 0. */
static int
select_ranges(struct vd_txn *t, const struct vd_cache_entry *e, struct vd_cache_range **out)
{
    uint32_t max = t->conf->cache.max_ranges;
    if (max == 0 || e->status != 200 || !method_is(t, "GET")) {
        return 0; /* §14.2: GET is the only method with range handling */
    }
    const struct vd_hdr *r = NULL;
    for (size_t i = 0; i < t->req.nhdrs; i++) {
        if (vd_hdr_name_is(t->req.hdrs[i].name, "range")) {
            if (r) {
                return 0; /* a singleton field given twice: invalid, ignored */
            }
            r = &t->req.hdrs[i];
        }
    }
    if (!r) {
        return 0;
    }
    const struct vd_hdr *ir = vd_hdr_find(t->req.hdrs, t->req.nhdrs, "if-range");
    if (ir && !vd_cache_if_range(ir->value, e->hdrs, e->nhdrs)) {
        return 0; /* the client's copy is not current: it gets the whole representation */
    }
    *out = vd_arena_alloc(&t->arena, sizeof(**out) * max);
    return *out ? vd_cache_range_parse(r->value, e->body_len, *out, max) : 0;
}

/* A boundary (RFC 2046 §5.1.1) that appears in none of the selected parts of @e. */
static void
make_boundary(char out[27], const struct vd_cache_entry *e, const struct vd_cache_range *rg, int nr)
{
    static _Atomic uint64_t counter;
    for (int attempt = 0;; attempt++) {
        uint8_t rnd[12];
        if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
            /* No entropy yet (early boot): unpredictability does not matter here, uniqueness
             * against the body does, and that is checked below. */
            uint64_t x = (uint64_t)time(NULL) ^ atomic_fetch_add(&counter, 0x9e3779b97f4a7c15u);
            for (size_t i = 0; i < sizeof(rnd); i++) {
                rnd[i] = (uint8_t)(x >> (8 * (i % 8))) ^ (uint8_t)(attempt * 31 + (int)i);
            }
        }
        out[0] = 'v';
        out[1] = 'd';
        for (size_t i = 0; i < sizeof(rnd); i++) {
            out[2 + 2 * i] = "0123456789abcdef"[rnd[i] >> 4];
            out[3 + 2 * i] = "0123456789abcdef"[rnd[i] & 15];
        }
        out[26] = '\0';
        bool clash = false;
        for (int i = 0; i < nr && !clash; i++) {
            clash = memmem(e->body + rg[i].first, (size_t)(rg[i].last - rg[i].first + 1), out,
                           26) != NULL;
        }
        if (!clash || attempt == 8) {
            return;
        }
    }
}

/* Lays out a multipart/byteranges body (RFC 9110 §14.6) in @h: part headers in h->text, the
 * part data as slices of the stored body. Returns 0 or VD_ENOMEM / VD_ETOOBIG. */
static int
multipart(struct hit *h, const struct vd_cache_range *rg, int nr, const char *boundary)
{
    const struct vd_cache_entry *e = h->e;
    const struct vd_hdr *ct = vd_hdr_find(e->hdrs, e->nhdrs, "content-type");
    size_t ctl = ct ? ct->value.len : 0;
    vd_dbuf_init(&h->text, (size_t)nr * (ctl + 160) + 64);
    size_t *offs = calloc((size_t)nr + 1, sizeof(*offs));
    if (!offs) {
        return VD_ENOMEM;
    }
    int r = 0;
    for (int i = 0; i < nr && r == 0; i++) {
        offs[i] = h->text.len;
        r = vd_dbuf_addf(&h->text, "%s--%s\r\n", i ? "\r\n" : "", boundary);
        if (r == 0 && ct) {
            r = vd_dbuf_addf(&h->text, "Content-Type: %.*s\r\n", (int)ctl,
                             (const char *)ct->value.base);
        }
        r = r ? r
              : vd_dbuf_addf(&h->text, "Content-Range: bytes %llu-%llu/%llu\r\n\r\n",
                             (unsigned long long)rg[i].first, (unsigned long long)rg[i].last,
                             (unsigned long long)e->body_len);
    }
    offs[nr] = h->text.len;
    r = r ? r : vd_dbuf_addf(&h->text, "\r\n--%s--\r\n", boundary);
    if (r == 0) {
        const uint8_t *base = (const uint8_t *)h->text.p;
        for (int i = 0; i < nr; i++) {
            h->seg[2 * i] = (struct seg){base + offs[i], offs[i + 1] - offs[i], 0, false};
            h->seg[2 * i + 1] = (struct seg){
                e->body + rg[i].first, (size_t)(rg[i].last - rg[i].first + 1), rg[i].first, true};
        }
        h->seg[2 * nr] = (struct seg){base + offs[nr], h->text.len - offs[nr], 0, false};
        h->nseg = 2 * (size_t)nr + 1;
    }
    free(offs);
    return r;
}

/* The Cache-Status value for answering from @e: "viaduct; hit; ttl=N" for a plain hit, else
 * "viaduct; " and @status. In @t's arena; NULL when out of memory. */
static char *
status_value(struct vd_txn *t, const struct vd_cache_entry *e, const char *status, int64_t age,
             int *len)
{
    char *csv = vd_arena_alloc(&t->arena, 160);
    if (!csv) {
        return NULL;
    }
    size_t l;
    if (strcmp(status, "hit") == 0) {
        memcpy(csv, "viaduct; hit; ttl=", 18);
        l = 18 + i64_dec(csv + 18, e->lifetime - age);
    } else {
        size_t sl = VD_MIN(strlen(status), (size_t)150);
        memcpy(csv, "viaduct; ", 9);
        memcpy(csv + 9, status, sl);
        l = 9 + sl;
    }
    csv[l] = '\0';
    *len = (int)l;
    t->stats.cache = csv + 9; /* after "viaduct; ", for the access log */
    return csv;
}

/* RFC 9110 §15.5.17: 416 with the current length in Content-Range. */
static void
unsatisfiable(struct vd_txn *t, struct vd_cache_entry *e, const char *status, int64_t age)
{
    int cl = 0;
    char *csv = status_value(t, e, status, age, &cl);
    char *cr = vd_arena_alloc(&t->arena, 40);
    size_t body_len = e->body_len;
    vd_cache_entry_unref(e);
    if (!csv || !cr) {
        vd_txn_respond_error(t, 503, "out of memory", true);
        return;
    }
    int crl = snprintf(cr, 40, "bytes */%llu", (unsigned long long)body_len);
    struct vd_hdr extra[2] = {
        {VD_IOV_LIT("Content-Range"), {(const uint8_t *)cr, (size_t)crl}},
        {VD_IOV_LIT("Cache-Status"), {(const uint8_t *)csv, (size_t)cl}},
    };
    vd_txn_respond_with(t, 416, extra, 2, "no requested range overlaps the stored representation",
                        false);
}

void
vd__cache_serve(struct vd_txn *t, struct vd_cache_entry *e, const char *status)
{
    time_t now = time(NULL);
    int64_t age = vd_cache_current_age(&e->times, now);
    if (age < 0) {
        age = 0;
    }
    bool head = method_is(t, "HEAD");
    bool not_modified = client_has_it(t, e);
    struct vd_cache_range *rg = NULL;
    /* RFC 9110 §13.2.2: If-None-Match / If-Modified-Since come before Range. */
    int nr = not_modified ? 0 : select_ranges(t, e, &rg);
    if (nr > 1 && vd_cache_entry_in_file(e)) {
        /* multipart/byteranges is built from a body in memory; a file-backed entry answers
         * several ranges with the whole representation, which RFC 9110 §14.2 allows. */
        nr = 0;
    }
    if (nr == -ERANGE) {
        unsatisfiable(t, e, status, age);
        return;
    }
    if (nr < 0) {
        nr = 0;
    }
    size_t maxseg = nr > 1 ? 2 * (size_t)nr + 1 : 1;
    struct hit *h = vd_mc_calloc(1, sizeof(*h) + sizeof(h->seg[0]) * maxseg);
    struct vd_hdr *hd = vd_arena_alloc(&t->arena, sizeof(*hd) * (e->nhdrs + 4));
    char *agev = vd_arena_alloc(&t->arena, 24);
    char *extra = vd_arena_alloc(&t->arena, 96);
    int cl = 0;
    char *csv = status_value(t, e, status, age, &cl);
    if (!h || !hd || !agev || !extra || !csv) {
        vd_mc_free(h);
        vd_cache_entry_unref(e);
        vd_txn_respond_error(t, 503, "out of memory", true);
        return;
    }
    h->magic = HIT_MAGIC;
    h->t = t;
    h->e = e;
    size_t n = 0;
    for (size_t i = 0; i < e->nhdrs; i++) {
        struct vd_iov name = e->hdrs[i].name;
        if ((not_modified && !in_304(name)) || (nr > 0 && vd_hdr_name_is(name, "content-range")) ||
            (nr > 1 && vd_hdr_name_is(name, "content-type"))) {
            continue;
        }
        hd[n++] = e->hdrs[i];
    }
    size_t al = i64_dec(agev, age);
    agev[al] = '\0';
    hd[n++] = (struct vd_hdr){VD_IOV_LIT("Age"), {(const uint8_t *)agev, al}};
    if (t->conf->via_enabled && t->conf->via) {
        size_t pl = strlen(t->conf->via);
        char *via = vd_arena_alloc(&t->arena, pl + 5);
        if (via) {
            memcpy(via, "1.1 ", 4);
            memcpy(via + 4, t->conf->via, pl + 1);
            hd[n++] = (struct vd_hdr){VD_IOV_LIT("Via"), {(const uint8_t *)via, pl + 4}};
        }
    }
    hd[n++] = (struct vd_hdr){VD_IOV_LIT("Cache-Status"), {(const uint8_t *)csv, (size_t)cl}};
    int st = not_modified ? 304 : nr > 0 ? 206 : e->status;
    if (nr == 1) {
        /* RFC 9110 §14.4: one part, described by Content-Range in the head. */
        int xl = snprintf(extra, 96, "bytes %llu-%llu/%llu", (unsigned long long)rg[0].first,
                          (unsigned long long)rg[0].last, (unsigned long long)e->body_len);
        hd[n++] =
            (struct vd_hdr){VD_IOV_LIT("Content-Range"), {(const uint8_t *)extra, (size_t)xl}};
        size_t rl = (size_t)(rg[0].last - rg[0].first + 1);
        h->seg[0] = (struct seg){e->body ? e->body + rg[0].first : NULL, rl, rg[0].first, true};
        h->nseg = 1;
    } else if (nr > 1) {
        char boundary[27];
        make_boundary(boundary, e, rg, nr);
        int xl = snprintf(extra, 96, "multipart/byteranges; boundary=%s", boundary);
        hd[n++] = (struct vd_hdr){VD_IOV_LIT("Content-Type"), {(const uint8_t *)extra, (size_t)xl}};
        if (multipart(h, rg, nr, boundary) < 0) {
            hit_free(h);
            vd_txn_respond_error(t, 503, "out of memory", true);
            return;
        }
    } else if (!head && !not_modified && e->status != 204) {
        h->seg[0] = (struct seg){e->body, e->body_len, 0, true}; /* body NULL: from the file */
        h->nseg = 1;
    }
    int64_t length = 0;
    for (size_t i = 0; i < h->nseg; i++) {
        length += (int64_t)h->seg[i].len;
    }
    if (head && nr == 0) {
        length = (int64_t)e->body_len; /* RFC 9110 §8.6: what a GET would carry */
    }
    struct vd_resp resp = {
        .status = st,
        .hdrs = hd,
        .nhdrs = n,
        .has_body = !head && !not_modified && st != 204,
        .length = not_modified || st == 204 ? -1 : length,
    };
    t->handler = &hit_ops;
    t->handler_data = h;
    if (t->front->send_head(t, &resp) < 0) {
        t->handler = NULL;
        t->handler_data = NULL;
        hit_free(h);
        t->front->abort(t);
        return;
    }
    hit_pump(h);
}

/* ---- lookup -------------------------------------------------------------------------------- */

/* RFC 9111 §4.4: unsafe methods, including those whose safety is unknown, invalidate. */
static bool
invalidating(const struct vd_txn *t)
{
    return !method_is(t, "GET") && !method_is(t, "HEAD") && !method_is(t, "OPTIONS") &&
           !method_is(t, "TRACE") && !method_is(t, "CONNECT");
}

/* PURGE (the Squid and Varnish convention): removes every stored variant of the target URI
 * and answers 200, or 404 when nothing was stored. It is never forwarded; who may send it is
 * decided by the access rules (methods: [PURGE]) before this point. */
static void
purge(struct vd_txn *t)
{
    size_t klen;
    char *key = malloc(key_cap(t));
    if (key && key_into(t, key, key_cap(t), &klen) == 0) {
        free(key);
        key = NULL;
    }
    size_t n = key ? vd_cache_invalidate(key) : 0;
    char detail[96];
    snprintf(detail, sizeof(detail), "%zu stored response%s removed", n, n == 1 ? "" : "s");
    vd_log(VD_LOG_INFO, &t->log, "PURGE %s: %s", key ? key : "?", detail);
    free(key);
    if (n) {
        vd_txn_respond_error(t, 200, detail, false);
    } else {
        vd_txn_respond_error(t, 404, "not in the cache", false);
    }
}

/* Whether a miss of @t may wait for another request's response (collapsed forwarding), or lead
 * others: a plain GET whose answer does not depend on anything but the stored-response rules.
 * Requests that demand the origin (no-cache, no-store, max-age=0), carry credentials, or ask
 * for something conditional or partial are forwarded as they are. */
static bool
collapsible(const struct vd_txn *t, const struct vd_cache_xfer *cx)
{
    static const char *const conditional[] = {
        "if-none-match",       "if-modified-since", "if-match",
        "if-unmodified-since", "if-range",          "range",
    };
    if (!t->conf->cache.collapse || !method_is(t, "GET") || cx->req_auth || cx->req_cc.no_cache ||
        cx->req_cc.no_store || cx->req_cc.max_age == 0) {
        return false;
    }
    /* A request that already passed a proxy of this name may be one this proxy forwarded and is
     * waiting for (a loop through a parent or a route): waiting for it in turn would deadlock. */
    if (t->conf->via_enabled && t->conf->via &&
        vd_via_count(t->req.hdrs, t->req.nhdrs, t->conf->via) > 0) {
        return false;
    }
    for (size_t i = 0; i < VD_ARRAY_LEN(conditional); i++) {
        if (vd_hdr_find(t->req.hdrs, t->req.nhdrs, conditional[i])) {
            return false;
        }
    }
    return true;
}

/* The exchange's state for a miss, a revalidation or an invalidation: what the lookup found
 * out, with its own copies of the key and origin. NULL when out of memory. */
static struct vd_cache_xfer *
xfer_new(const struct vd_txn *t, const char *key, size_t klen, size_t olen, bool unsafe,
         const struct vd_cache_cc *req_cc, bool req_auth, time_t request_time)
{
    const struct vd_conf *conf = t->conf;
    struct vd_cache_xfer *cx = vd_mc_calloc(1, sizeof(*cx));
    if (!cx) {
        return NULL;
    }
    cx->key = strndup(key, klen);
    cx->origin = strndup(key, olen);
    if (!cx->key || !cx->origin) {
        vd__cache_end(cx);
        return NULL;
    }
    cx->unsafe = unsafe;
    cx->request_time = request_time;
    cx->heuristic_max = (int64_t)(conf->cache.heuristic_max / 1000);
    cx->targeted = conf->cache.targeted_fields;
    cx->ntargeted = conf->cache.ntargeted_fields;
    cx->max_object = conf->cache.max_object;
    cx->req_cc = *req_cc;
    cx->req_auth = req_auth;
    return cx;
}

/* The directives of stored entry @e (see resp_cc): its Cache-Control was parsed when the entry
 * was made, so only a targeted field is parsed here. */
static void
entry_cc(const struct vd_conf *conf, const struct vd_cache_entry *e, struct vd_cache_cc *cc)
{
    if (!vd_cache_targeted_cc(e->hdrs, e->nhdrs, conf->cache.targeted_fields,
                              conf->cache.ntargeted_fields, cc)) {
        *cc = e->cc;
    }
}

/* Request fields the lookup looks at, found in one pass. */
struct req_facts {
    bool auth;         /* Authorization (§3.5) */
    bool origin_preco; /* If-Match or If-Unmodified-Since: only the origin evaluates them */
};

static void
req_facts(const struct vd_txn *t, struct req_facts *f)
{
    *f = (struct req_facts){0};
    for (size_t i = 0; i < t->req.nhdrs; i++) {
        struct vd_iov n = t->req.hdrs[i].name;
        if (vd_hdr_name_is(n, "authorization")) {
            f->auth = true;
        } else if (vd_hdr_name_is(n, "if-match") || vd_hdr_name_is(n, "if-unmodified-since")) {
            f->origin_preco = true;
        }
    }
}

/* Looks @t up. A fresh hit (and a stale one within stale-while-revalidate) is answered here
 * without allocating the transfer state, which only misses, revalidations and invalidations
 * need. */
bool
vd__cache_begin(struct vd_txn *t, struct vd_cache_xfer **out, const char *host, uint16_t port,
                bool tls, const struct vd_conf_route *route)
{
    *out = NULL;
    bool gave_up = vd__col_take_fallback();
    const struct vd_conf *conf = t->conf;
    configure(conf); /* a reload to memory: 0 empties the store here */
    if (method_is(t, "PURGE")) {
        purge(t); /* answered here whatever the cache settings: never forwarded */
        return true;
    }
    if (conf->cache.memory == 0 || t->access_pending || t->declared ||
        t->req.form == VD_TARGET_ASTERISK || t->req.authority.len == 0) {
        return false;
    }
    bool get = method_is(t, "GET"), head = method_is(t, "HEAD");
    bool unsafe = invalidating(t);
    if (!get && !head && !unsafe) {
        return false;
    }
    char kstack[1024];
    size_t cap = key_cap(t);
    char *key = cap <= sizeof(kstack) ? kstack : malloc(cap);
    if (!key) {
        return false;
    }
    size_t klen, olen = key_into(t, key, cap, &klen);
    time_t request_time = time(NULL);
    struct vd_cache_cc req_cc;
    vd_cache_req_cc(t->req.hdrs, t->req.nhdrs, &req_cc);
    struct req_facts rf;
    req_facts(t, &rf);
    bool answered = false;
    struct vd_cache_xfer *cx = NULL;
    struct vd_cache_entry *e = NULL;
    const char *fwd = NULL;
    if (unsafe || t->req.framing.kind != VD_BODY_NONE) {
        *out = xfer_new(t, key, klen, olen, unsafe, &req_cc, rf.auth, request_time);
        goto done;
    }
    struct vd_cache_entry *bge = vd__cache_bg_entry(t);
    if (bge) {
        /* A background revalidation: the conditional request for the entry it was started for,
         * whatever the store holds now. */
        e = bge;
        vd_cache_entry_ref(e);
        fwd = "stale";
        goto forward;
    }
    bool vary_miss = false;
    e = vd_cache_lookup(key, t->req.hdrs, t->req.nhdrs, &vary_miss);
    fwd = vary_miss ? "vary-miss" : "uri-miss";
    if (e && rf.origin_preco) {
        /* Preconditions only the origin evaluates (RFC 9111 §4.3.2): forward as received. */
        vd_cache_entry_unref(e);
        e = NULL;
        fwd = "request";
    }
    if (e) {
        int64_t age = vd_cache_current_age(&e->times, request_time);
        struct vd_cache_cc ecc;
        entry_cc(conf, e, &ecc);
        if (vd_cache_usable(&req_cc, &ecc, e->lifetime, age) == VD_CACHE_USE_FRESH) {
            vd__cache_serve(t, e, "hit");
            answered = true;
            goto done;
        }
        /* RFC 5861 §3: within the window, the stale response answers now and one background
         * request revalidates it (RFC 9211: a hit with a negative ttl). */
        if (vd_cache_stale_while_revalidate(&req_cc, &ecc, e->lifetime, age) &&
            vd__cache_bg_start(t, e, host, port, tls, route)) {
            char st[96];
            snprintf(st, sizeof(st), "hit; ttl=%lld; detail=stale-while-revalidate",
                     (long long)(e->lifetime - age));
            vd__cache_serve(t, e, st);
            answered = true;
            goto done;
        }
        /* RFC 9211 §2.2: "request" when only the request's directives forced it. */
        struct vd_cache_cc none;
        vd_cache_cc_parse(NULL, 0, &none);
        fwd = vd_cache_usable(&none, &ecc, e->lifetime, age) == VD_CACHE_USE_FRESH ? "request"
                                                                                   : "stale";
    }
    if (req_cc.only_if_cached) {
        /* RFC 9111 §5.2.1.7 */
        char *csv = vd_arena_alloc(&t->arena, 64);
        struct vd_hdr extra = {VD_IOV_LIT("Cache-Status"), VD_IOV_LIT("viaduct; fwd=miss")};
        if (csv) {
            int l = snprintf(csv, 64, "viaduct; fwd=%s", e ? "stale" : "uri-miss");
            extra.value = (struct vd_iov){(const uint8_t *)csv, (size_t)l};
            t->stats.cache = csv + 9;
        }
        vd_cache_entry_unref(e);
        vd_txn_respond_with(t, 504, &extra, 1, "only-if-cached and no stored response", false);
        answered = true;
        goto done;
    }
forward:
    cx = xfer_new(t, key, klen, olen, false, &req_cc, rf.auth, request_time);
    if (!cx) {
        vd_cache_entry_unref(e);
        goto done;
    }
    cx->lookup = true;
    cx->gave_up = gave_up;
    cx->stored = e;
    cx->fwd = fwd;
    if (!bge && !cx->stored && !gave_up && collapsible(t, cx) &&
        vd__col_begin(t, cx->key, cx->fwd, host, port, tls, route, &cx->col) == 1) {
        vd__cache_end(cx); /* @t waits for another request's response */
        answered = true;
        goto done;
    }
    *out = cx;
done:
    if (key != kstack) {
        free(key);
    }
    return answered;
}

/* ---- the upstream request ------------------------------------------------------------------ */

bool
vd__cache_skip_req_field(const struct vd_cache_xfer *cx, struct vd_iov name)
{
    /* Our own validators replace the client's while revalidating (the client's conditional is
     * evaluated against the stored response afterwards). Range and If-Range go too: a 304 lets
     * the range be cut from the refreshed entry, and a 200 is a complete response to store. */
    return cx && cx->stored &&
           (vd_hdr_name_is(name, "if-none-match") || vd_hdr_name_is(name, "if-modified-since") ||
            vd_hdr_name_is(name, "range") || vd_hdr_name_is(name, "if-range"));
}

int
vd__cache_req_fields(struct vd_cache_xfer *cx, struct vd_dbuf *d)
{
    if (!cx || !cx->stored) {
        return 0;
    }
    const struct vd_cache_entry *e = cx->stored;
    const struct vd_hdr *et = vd_hdr_find(e->hdrs, e->nhdrs, "etag");
    const struct vd_hdr *lm = vd_hdr_find(e->hdrs, e->nhdrs, "last-modified");
    int r = 0;
    if (et) {
        r = vd_dbuf_addf(d, "If-None-Match: %.*s\r\n", (int)et->value.len,
                         (const char *)et->value.base);
    }
    if (r == 0 && lm) {
        r = vd_dbuf_addf(d, "If-Modified-Since: %.*s\r\n", (int)lm->value.len,
                         (const char *)lm->value.base);
    }
    return r;
}

/* ---- the response -------------------------------------------------------------------------- */

/* Invalidates the URI in @v (Location, Content-Location) when it has the same origin (§4.4). */
static void
invalidate_ref(struct vd_cache_xfer *cx, struct vd_iov v)
{
    char *k = NULL;
    size_t ol = strlen(cx->origin);
    if (v.len && v.base[0] == '/' && !(v.len > 1 && v.base[1] == '/')) {
        k = join(cx->origin, v.base, v.len);
    } else if (v.len > ol && strncasecmp((const char *)v.base, cx->origin, ol) == 0 &&
               v.base[ol] == '/') {
        k = join(cx->origin, v.base + ol, v.len - ol);
    }
    if (k) {
        vd_cache_invalidate(k);
        free(k);
    }
}

/* §3.2: the stored fields, with those the 304 carries replacing every line of the same name. */
static struct vd_cache_entry *
update_from_304(struct vd_cache_xfer *cx, struct vd_txn *t, const struct vd_resp *resp)
{
    const struct vd_cache_entry *e = cx->stored;
    struct vd_hdr *m = vd_arena_alloc(&t->arena, sizeof(*m) * (e->nhdrs + resp->nhdrs + 1));
    if (!m) {
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < e->nhdrs; i++) {
        bool replaced = false;
        for (size_t j = 0; j < resp->nhdrs && !replaced; j++) {
            struct vd_iov a = e->hdrs[i].name, b = resp->hdrs[j].name;
            replaced = a.len == b.len &&
                       strncasecmp((const char *)a.base, (const char *)b.base, a.len) == 0 &&
                       !vd_hdr_name_is(b, "content-length");
        }
        if (!replaced) {
            m[n++] = e->hdrs[i];
        }
    }
    for (size_t j = 0; j < resp->nhdrs; j++) {
        if (!vd_hdr_name_is(resp->hdrs[j].name, "content-length")) {
            m[n++] = resp->hdrs[j];
        }
    }
    struct vd_cache_times tm;
    vd_cache_times_init(&tm, resp->hdrs, resp->nhdrs, cx->request_time, time(NULL));
    struct vd_cache_cc cc;
    resp_cc(cx, m, n, &cc);
    bool heur;
    int64_t life =
        vd_cache_freshness(e->status, &cc, m, n, tm.response_time, cx->heuristic_max, &heur);
    if (!vd_cache_entry_in_file(e)) {
        return vd_cache_entry_new(e->key, e->vary, e->vary_key, e->status, m, n, e->body,
                                  e->body_len, &tm, life);
    }
    /* A file-backed entry: the updated one is an ordinary entry again, so that the disk tier
     * writes the new fields; the body (at most max_object) is read back for it once. */
    uint8_t *body = malloc(e->body_len ? e->body_len : 1);
    struct vd_cache_entry *ne = NULL;
    if (body && vd_cache_entry_read(e, 0, body, e->body_len) == 0) {
        ne = vd_cache_entry_new(e->key, e->vary, e->vary_key, e->status, m, n, body, e->body_len,
                                &tm, life);
    }
    free(body);
    return ne;
}

static void
add_status(struct vd_txn *t, struct vd_resp *resp, const struct vd_cache_xfer *cx, bool stored)
{
    char *csv = vd_arena_alloc(&t->arena, 96);
    if (!csv) {
        return;
    }
    /* RFC 9211 §2.8: collapsed=?0 when the request waited for another one's response and then
     * had to be forwarded after all. */
    int l = snprintf(csv, 96, "viaduct; fwd=%s%s%s", cx->fwd, stored ? "; stored" : "",
                     cx->gave_up ? "; collapsed=?0" : "");
    t->stats.cache = csv + 9;
    ((struct vd_hdr *)resp->hdrs)[resp->nhdrs++] =
        (struct vd_hdr){VD_IOV_LIT("Cache-Status"), {(const uint8_t *)csv, (size_t)l}};
}

struct vd_cache_entry *
vd__cache_on_head(struct vd_cache_xfer *cx, struct vd_txn *t, struct vd_resp *resp)
{
    if (!cx) {
        return NULL;
    }
    if (cx->unsafe) {
        if (resp->status >= 200 && resp->status < 400) {
            vd_cache_invalidate(cx->key);
            const struct vd_hdr *l = vd_hdr_find(resp->hdrs, resp->nhdrs, "location");
            if (l) {
                invalidate_ref(cx, l->value);
            }
            l = vd_hdr_find(resp->hdrs, resp->nhdrs, "content-location");
            if (l) {
                invalidate_ref(cx, l->value);
            }
        }
        return NULL;
    }
    if (resp->status == 304 && cx->stored) {
        struct vd_cache_entry *ne = update_from_304(cx, t, resp);
        if (ne) {
            vd_cache_entry_ref(ne);
            vd_cache_insert(ne);
            snprintf(cx->served, sizeof(cx->served), "fwd=%s; stored%s", vd__cache_fwd(cx),
                     cx->gave_up ? "; collapsed=?0" : "");
            return ne;
        }
    }
    if (resp->status == 500 || resp->status == 502 || resp->status == 503 || resp->status == 504) {
        struct vd_cache_entry *se = vd__cache_on_error(cx, resp->status);
        if (se) {
            /* RFC 9211 §2.3: the status the origin gave to the forwarded request. */
            snprintf(cx->served, sizeof(cx->served), "fwd=%s; fwd-status=%d; detail=stale-if-error",
                     vd__cache_fwd(cx), resp->status);
            return se;
        }
    }
    struct vd_cache_cc rcc;
    resp_cc(cx, resp->hdrs, resp->nhdrs, &rcc);
    enum vd_cache_store_verdict v = vd_cache_storable(t->req.method, resp->status, &cx->req_cc,
                                                      &rcc, cx->req_auth, resp->hdrs, resp->nhdrs);
    bool store =
        v == VD_CACHE_STORE_OK && (resp->length < 0 || (uint64_t)resp->length <= cx->max_object);
    if (store) {
        struct vd_dbuf names, key;
        vd_dbuf_init(&names, 4096);
        vd_dbuf_init(&key, 65536);
        if (vd_cache_vary_key(resp->hdrs, resp->nhdrs, t->req.hdrs, t->req.nhdrs, &names, &key) ==
            0) {
            cx->vary_names = strdup(names.p ? names.p : "");
            cx->vary_key = strdup(key.p ? key.p : "");
        }
        vd_dbuf_free(&names);
        vd_dbuf_free(&key);
        store = cx->vary_names && cx->vary_key;
    }
    if (store) {
        cx->storing = true;
        cx->status = resp->status;
        cx->hdrs = resp->hdrs;
        cx->nhdrs = resp->nhdrs;
        vd_cache_times_init(&cx->times, resp->hdrs, resp->nhdrs, cx->request_time, time(NULL));
    }
    if (cx->col) {
        /* Waiters get the response when this cache would store it and then answer a plain
         * request with it (fresh, not no-cache), and go to the origin themselves otherwise.
         * The published copy of the head outlives this exchange (the transfer may go on
         * without its client), so the store takes its fields from there. */
        bool share = store;
        int64_t life = 0;
        if (share) {
            bool heur;
            struct vd_cache_cc none;
            vd_cache_cc_parse(NULL, 0, &none);
            life = vd_cache_freshness(resp->status, &rcc, resp->hdrs, resp->nhdrs,
                                      cx->times.response_time, cx->heuristic_max, &heur);
            int64_t age = vd_cache_current_age(&cx->times, cx->times.response_time);
            share = vd_cache_usable(&none, &rcc, life, age) == VD_CACHE_USE_FRESH;
        }
        if (share && vd__col_publish(cx->col, resp, cx->vary_names, cx->vary_key, &rcc, life,
                                     &cx->times) == 0) {
            cx->sharing = true;
            cx->hdrs = vd__col_hdrs(cx->col, &cx->nhdrs);
        } else {
            vd__col_fail(cx->col);
        }
    }
    if (cx->lookup) {
        add_status(t, resp, cx, store);
    }
    return NULL;
}

struct vd_cache_entry *
vd__cache_on_error(struct vd_cache_xfer *cx, int status)
{
    if (!cx || !cx->stored || status < 500) {
        return NULL;
    }
    struct vd_cache_entry *e = cx->stored;
    int64_t age = vd_cache_current_age(&e->times, time(NULL));
    struct vd_cache_cc ecc;
    resp_cc(cx, e->hdrs, e->nhdrs, &ecc);
    if (!vd_cache_stale_if_error(&cx->req_cc, &ecc, e->lifetime, age)) {
        return NULL;
    }
    cx->stored = NULL;
    cx->storing = false;
    snprintf(cx->served, sizeof(cx->served), "fwd=%s; detail=stale-if-error", vd__cache_fwd(cx));
    return e;
}

const char *
vd__cache_served(const struct vd_cache_xfer *cx)
{
    return cx->served;
}

const char *
vd__cache_fwd(const struct vd_cache_xfer *cx)
{
    return cx && cx->fwd ? cx->fwd : "miss";
}

bool
vd__cache_wants_body(const struct vd_cache_xfer *cx)
{
    return cx && (cx->storing || cx->sharing);
}

void
vd__cache_on_body(struct vd_cache_xfer *cx, const uint8_t *p, size_t n)
{
    if (!cx || n == 0) {
        return;
    }
    if (cx->sharing) {
        int r = vd__col_append(cx->col, p, n);
        if (r == VD_ETOOBIG) {
            cx->storing = false; /* past max_object: still shared with the waiters streaming it */
        } else if (r < 0) {
            /* Nobody to share it with past max_object, or out of memory. */
            vd__col_fail(cx->col);
            cx->sharing = false;
            cx->storing = false;
        }
        return;
    }
    if (!cx->storing) {
        return;
    }
    if (cx->len + n > cx->max_object) {
        cx->storing = false; /* too big: dropped, never stored in part */
        free(cx->body);
        cx->body = NULL;
        return;
    }
    if (cx->len + n > cx->cap) {
        size_t nc = cx->cap ? cx->cap : 16384;
        while (nc < cx->len + n) {
            nc *= 2;
        }
        uint8_t *nb = realloc(cx->body, nc);
        if (!nb) {
            cx->storing = false;
            return;
        }
        cx->body = nb;
        cx->cap = nc;
    }
    memcpy(cx->body + cx->len, p, n);
    cx->len += n;
}

void
vd__cache_on_complete(struct vd_cache_xfer *cx)
{
    if (!cx) {
        return;
    }
    if (!cx->storing) {
        if (cx->sharing) {
            vd__col_complete(cx->col); /* too big to store, shared all the same */
        }
        return;
    }
    cx->storing = false;
    struct vd_cache_cc cc;
    resp_cc(cx, cx->hdrs, cx->nhdrs, &cc);
    bool heur;
    int64_t life = vd_cache_freshness(cx->status, &cc, cx->hdrs, cx->nhdrs, cx->times.response_time,
                                      cx->heuristic_max, &heur);
    const uint8_t *body = cx->body;
    size_t len = cx->len;
    uint8_t *tmp = NULL;
    if (cx->sharing) {
        body = vd__col_body(cx->col, &len, &tmp);
    }
    struct vd_cache_entry *e =
        body ? vd_cache_entry_new(cx->key, cx->vary_names, cx->vary_key, cx->status, cx->hdrs,
                                  cx->nhdrs, body, len, &cx->times, life)
             : NULL;
    free(tmp);
    if (e) {
        vd_cache_insert(e);
    }
    if (cx->sharing) {
        /* After the insert, so a request that no longer finds the leader finds the store. */
        vd__col_complete(cx->col);
    }
}

struct vd_txn *
vd__cache_adopt(struct vd_cache_xfer *cx, struct vd_txn *t, char **host, char **sni)
{
    return cx && cx->col ? vd__col_adopt(cx->col, t, host, sni) : NULL;
}
