/* SPDX-License-Identifier: MIT */
/* Background revalidation for stale-while-revalidate (RFC 5861 §3): the client that found a
 * stale response gets it at once, and one transaction with no client behind it (a "null
 * front" that discards what it is sent) runs the forward handler for the same request with the
 * stored validators; the ordinary cache hooks then refresh the entry on 304 or replace it on
 * 200. At most one runs per stored response (a process-wide registry), and at most
 * cache.background_revalidations at once. They run on the worker that started them and are
 * aborted when it drains. */
#include "vd/config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache-int.h"
#include "vd/err.h"

#define BG_MAGIC 0x42475231u

struct bg {
    uint32_t magic;
    struct vd_txn t;
    struct vd__detached d;        /* in this worker thread's list of client-less ones */
    struct vd_cache_entry *e;     /* the stored response being revalidated (reference) */
    char *reg;                    /* registry key "key\nvary_key" (malloc) */
    struct sockaddr_storage peer; /* copy of the client's address (X-Forwarded-For) */
};

/* ---- the registry: what is being revalidated now, process-wide ------------------------------ */

struct reg_item {
    struct reg_item *next;
    char key[]; /* "primary\nsecondary" */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct reg_item *reg_head;
static size_t reg_count;

/* Returns 1 when @key was registered now, 0 when it is already running, -1 when the registry
 * is full (@cap) or out of memory. */
static int
reg_claim(const char *key, size_t cap)
{
    int r = 1;
    pthread_mutex_lock(&reg_mu);
    for (struct reg_item *i = reg_head; i; i = i->next) {
        if (strcmp(i->key, key) == 0) {
            r = 0;
            break;
        }
    }
    if (r == 1) {
        size_t l = strlen(key);
        struct reg_item *it = reg_count < cap ? malloc(sizeof(*it) + l + 1) : NULL;
        if (it) {
            memcpy(it->key, key, l + 1);
            it->next = reg_head;
            reg_head = it;
            reg_count++;
        } else {
            r = -1;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    return r;
}

static void
reg_release(const char *key)
{
    pthread_mutex_lock(&reg_mu);
    for (struct reg_item **pp = &reg_head; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            struct reg_item *it = *pp;
            *pp = it->next;
            reg_count--;
            free(it);
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

/* ---- the transactions of this worker thread ------------------------------------------------ */

static _Thread_local struct vd_list detached;

void
vd__detached_add(struct vd__detached *d)
{
    if (!detached.next) {
        vd_list_init(&detached);
    }
    vd_list_insert_head(&detached, &d->link);
}

void
vd__detached_remove(struct vd__detached *d)
{
    vd_list_remove(&d->link);
}

void
vd__detached_abort_all(void)
{
    while (detached.next && !vd_list_empty(&detached)) {
        struct vd__detached *d = VD_CONTAINER_OF(detached.next, struct vd__detached, link);
        struct vd_txn *t = d->t;
        if (t->handler && t->handler->on_abort) {
            const struct vd_handler_ops *h = t->handler;
            t->handler = NULL;
            h->on_abort(t);
        }
        d->finish(d);
    }
}

static struct bg *
bg_of(struct vd_txn *t)
{
    struct bg *b = t->front_data;
    VD_BUG_ON(b->magic != BG_MAGIC);
    return b;
}

static void
bg_finish(struct bg *b)
{
    VD_TRACE(&b->t.log, VD_SUB_PROXY, "background revalidation of %s ended with %d", b->e->key,
             b->t.status);
    reg_release(b->reg);
    free(b->reg);
    vd__detached_remove(&b->d);
    vd_cache_entry_unref(b->e);
    struct vd_conf *conf = b->t.conf;
    vd_arena_free(&b->t.arena);
    b->magic = 0;
    free(b);
    vd_conf_unref(conf);
}

static void
bg_detached_finish(struct vd__detached *d)
{
    bg_finish(VD_CONTAINER_OF(d, struct bg, d));
}

/* ---- the null front ------------------------------------------------------------------------ */

int
vd__detached_interim(struct vd_txn *t, int status, const struct vd_hdr *h, size_t n)
{
    return 0;
}

int
vd__detached_head(struct vd_txn *t, const struct vd_resp *resp)
{
    t->status = resp->status;
    t->resp_started = true;
    return 0;
}

static ssize_t
nf_body(struct vd_txn *t, const uint8_t *p, size_t len)
{
    return (ssize_t)len; /* discarded; never "full", so the handler never waits on us */
}

static int
nf_end(struct vd_txn *t, const struct vd_dbuf *trailers)
{
    bg_finish(bg_of(t));
    return 0;
}

void
vd__detached_pause(struct vd_txn *t, bool pause)
{
    /* no request body */
}

static void
nf_abort(struct vd_txn *t)
{
    struct bg *b = bg_of(t);
    if (t->status == 0) {
        t->status = 502;
    }
    vd_log(VD_LOG_INFO, &t->log, "background revalidation of %s failed", b->e->key);
    bg_finish(b);
}

int
vd__detached_tunnel(struct vd_txn *t, struct vd_tunnel_end *end)
{
    return VD_ENOTIMPL;
}

static void
nf_tunnel_end(struct vd_txn *t)
{
    bg_finish(bg_of(t));
}

static const struct vd_front_ops null_front = {
    .send_interim = vd__detached_interim,
    .send_head = vd__detached_head,
    .send_body = nf_body,
    .send_end = nf_end,
    .req_body_pause = vd__detached_pause,
    .abort = nf_abort,
    .tunnel = vd__detached_tunnel,
    .tunnel_end = nf_tunnel_end,
};

/* ---- starting one -------------------------------------------------------------------------- */

/* Request fields the background request leaves out: the client's conditionals and range (the
 * cache sends its own validators and wants the whole representation), its cache directives
 * (this is the cache's request, not the client's), anything about a body or an upgrade, and
 * the client's proxy credentials. */
static bool
left_out(struct vd_iov name)
{
    static const char *const names[] = {
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
        "if-range",
        "range",
        "cache-control",
        "pragma",
        "expect",
        "content-length",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization", /* hop-by-hop anyway: not kept in memory longer than needed */
    };
    for (size_t i = 0; i < VD_ARRAY_LEN(names); i++) {
        if (vd_hdr_name_is(name, names[i])) {
            return true;
        }
    }
    return false;
}

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

/* Copies what the forward handler reads of @src into @b's transaction. Returns 0 or
 * VD_ENOMEM. */
static int
copy_request(struct bg *b, const struct vd_txn *src)
{
    struct vd_txn *t = &b->t;
    struct vd_arena *a = &t->arena;
    bool oom = false;
    const struct vd_req *sr = &src->req;
    struct vd_req *r = &t->req;
    r->method = VD_IOV_LIT("GET"); /* a HEAD that found the response refreshes the GET */
    r->target = dup_iov(a, sr->target, &oom);
    r->scheme = dup_iov(a, sr->scheme, &oom);
    r->authority = dup_iov(a, sr->authority, &oom);
    r->path = dup_iov(a, sr->path, &oom);
    r->form = sr->form;
    r->version = 11;
    r->framing = (struct vd_framing){.kind = VD_BODY_NONE};
    r->hdrs = vd_arena_alloc(a, sizeof(*r->hdrs) * (sr->nhdrs ? sr->nhdrs : 1));
    if (!r->hdrs) {
        return VD_ENOMEM;
    }
    for (size_t i = 0; i < sr->nhdrs; i++) {
        if (!left_out(sr->hdrs[i].name)) {
            r->hdrs[r->nhdrs].name = dup_iov(a, sr->hdrs[i].name, &oom);
            r->hdrs[r->nhdrs].value = dup_iov(a, sr->hdrs[i].value, &oom);
            r->nhdrs++;
        }
    }
    t->client_text =
        src->client_text ? vd_arena_dup(a, src->client_text, strlen(src->client_text)) : "-";
    t->log = src->log;
    t->log.peer = t->client_text;
    t->log.action = "while revalidating in the background";
    t->user = src->user ? vd_arena_dup(a, src->user, strlen(src->user)) : NULL;
    return oom || !t->client_text ? VD_ENOMEM : 0;
}

bool
vd__cache_bg_start(struct vd_txn *src, struct vd_cache_entry *e, const char *host, uint16_t port,
                   bool tls, const struct vd_conf_route *route)
{
    const struct vd_conf *conf = src->conf;
    if (conf->cache.background == 0 || src->w->draining) {
        return false;
    }
    size_t kl = strlen(e->key), vl = strlen(e->vary_key);
    char *reg = malloc(kl + vl + 2);
    if (!reg) {
        return false;
    }
    memcpy(reg, e->key, kl);
    reg[kl] = '\n';
    memcpy(reg + kl + 1, e->vary_key, vl + 1);
    int c = reg_claim(reg, conf->cache.background);
    if (c <= 0) {
        free(reg);
        return c == 0; /* already running: the client is served stale all the same */
    }
    struct bg *b = calloc(1, sizeof(*b));
    if (!b) {
        reg_release(reg);
        free(reg);
        return false;
    }
    /* The arena gets the usual per-exchange budget plus room for the copied request. */
    size_t need = strlen(host) + sizeof(struct vd_hdr) * (src->req.nhdrs + 1) + 512;
    for (size_t i = 0; i < src->req.nhdrs; i++) {
        need += src->req.hdrs[i].name.len + src->req.hdrs[i].value.len;
    }
    need += src->req.target.len + src->req.authority.len + src->req.path.len;
    b->magic = BG_MAGIC;
    b->reg = reg;
    struct vd_txn *t = &b->t;
    vd_arena_init(&t->arena, conf->limits.request_arena + need);
    t->conf = vd_conf_ref(src->conf);
    t->w = src->w;
    t->front = &null_front;
    t->front_data = b;
    if (src->client) {
        memcpy(&b->peer, src->client,
               src->client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                  : sizeof(struct sockaddr_in));
    }
    t->client = (const struct sockaddr *)&b->peer;
    t->client_tls = src->client_tls;
    t->mode = src->mode;
    t->stats.start_ns = uv_hrtime();
    b->d = (struct vd__detached){.t = t, .finish = bg_detached_finish};
    vd__detached_add(&b->d);
    vd_cache_entry_ref(e);
    b->e = e;
    char *h = vd_arena_dup(&t->arena, host, strlen(host));
    if (copy_request(b, src) < 0 || !h) {
        bg_finish(b);
        return false;
    }
    VD_TRACE(&t->log, VD_SUB_PROXY, "background revalidation of %s", e->key);
    /* May complete (and free @b) before it returns. */
    vd_forward_start(t, h, port, tls, route);
    return true;
}

struct vd_cache_entry *
vd__cache_bg_entry(const struct vd_txn *t)
{
    if (t->front != &null_front) {
        return NULL;
    }
    const struct bg *b = t->front_data;
    VD_BUG_ON(b->magic != BG_MAGIC);
    return b->e;
}
