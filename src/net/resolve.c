/* SPDX-License-Identifier: MIT */
/* Asynchronous name resolution: one c-ares channel per worker loop, its sockets watched with
 * uv_poll_t and its retransmits driven by a uv_timer_t set from ares_timeout(). In front sit a
 * positive cache bounded by the answer's TTL (RFC 1035 §3.2.1, RFC 2181 §8), a negative cache for
 * NXDOMAIN/NODATA (RFC 2308 §5), LRU eviction, and coalescing of concurrent lookups. */
#include "vd/config.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "vd/err.h"
#include "vd/log.h"
#include "vd/resolve.h"

#define RESOLVER_MAGIC 0x7265736fu /* "reso" */
#define QUERY_MAGIC    0x71727971u /* "qryq" */
#define DEAD_MAGIC     0xdeadbeefu

/* RFC 1035 §2.3.4: 255 octets on the wire, i.e. 253 characters in text form without the final
 * dot; one trailing dot (an absolute name) is accepted on top. */
#define NAME_MAX_LEN  253
#define LABEL_MAX_LEN 63

#define MAX_BUCKETS (1u << 20)

enum entry_state {
    E_PENDING, /* a c-ares lookup is running; waiters attach here */
    E_POS,     /* cached addresses until @expires */
    E_NEG,     /* cached NXDOMAIN/NODATA until @expires */
};

/* One name: a lookup in flight or a cached answer. Lives in the hash table while reachable by
 * name; a completed answer that may not be cached is "detached" (out of the table) and is freed
 * as soon as its waiters have been told. */
struct entry {
    struct entry *hnext;    /* hash chain */
    struct vd_list lru;     /* in r->lru while E_POS/E_NEG; head is most recent */
    struct vd_list waiters; /* struct vd_resolve_query, while E_PENDING */
    struct vd_list dlink;   /* in r->done while its completion waits to be dispatched */
    struct vd_resolver *r;
    uint32_t hash;
    enum entry_state state;
    bool detached;    /* not in the hash table; freed after dispatch */
    bool sync_done;   /* completed inside ares_getaddrinfo() (hosts file) */
    int status;       /* 0 or VD_E*, valid once completed */
    uint64_t expires; /* uv_now() ms */
    struct vd_addrs addrs;
    char name[]; /* lowercase, NUL-terminated */
};

struct vd_resolve_query {
    uint32_t magic;
    struct vd_list link; /* in entry->waiters, or a dispatch list on the stack */
    vd_resolve_cb cb;
    void *arg;
};

/* A c-ares socket and its poll handle; freed in the handle's close callback. */
struct rsock {
    uv_poll_t poll;
    struct vd_list link; /* in r->socks while open */
    struct vd_resolver *r;
    ares_socket_t fd;
};

struct vd_resolver {
    uint32_t magic;
    uv_loop_t *loop; /* borrowed */
    ares_channel channel;
    uv_timer_t timer; /* fires at ares_timeout() for retransmits and timeouts */
    uv_timer_t defer; /* 0 ms: completions that arrived inside vd_resolve() */
    struct vd_list socks;
    struct vd_list done; /* entries whose waiters must be told from the loop */
    struct vd_list lru;  /* cached entries, most recent first */
    struct entry **buckets;
    uint32_t nbuckets; /* power of two */
    uint32_t ncached;  /* entries in @lru */
    uint32_t cache_size;
    uint64_t cache_max_ttl;   /* ms; 0: no positive cache */
    uint64_t negative_ttl;    /* ms; 0: no negative cache */
    struct entry *submitting; /* entry passed to ares_getaddrinfo() right now */
    unsigned depth;           /* > 0 while inside vd_resolve() */
    unsigned busy;            /* > 0 while inside c-ares or user callbacks */
    unsigned pending_closes;  /* libuv handles whose close callback has not run */
    bool closing;             /* vd_resolver_free() called: no more callbacks */
    bool torn_down;           /* channel destroyed and handles closing */
    struct vd_resolver_stats st;
};

static uv_once_t lib_once = UV_ONCE_INIT;
static int lib_status = ARES_ENOTINITIALIZED;

static void
lib_init(void)
{
    lib_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* ---- small helpers --------------------------------------------------------------------------- */

static int
map_status(int st)
{
    switch (st) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
        return VD_ENOTFOUND;
    case ARES_ETIMEOUT:
        return VD_ETIMEDOUT;
    default:
        return VD_EDNS;
    }
}

/* FNV-1a over the lowercase name. */
static uint32_t
name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 16777619u;
    }
    return h;
}

/* Copies @host lowercased into @key (capacity NAME_MAX_LEN + 2) if it is a syntactically valid
 * host name: letters, digits, '-' and '_' in labels of 1..63 characters (RFC 1123 §2.1; '_' is
 * common in practice), 253 characters at most plus an optional final dot. */
static bool
name_normalize(const char *host, char *key)
{
    size_t len = 0, label = 0;
    for (const char *p = host; *p; p++, len++) {
        char c = *p;
        if (len > NAME_MAX_LEN) {
            return false;
        }
        if (c == '.') {
            if (label == 0) {
                return false;
            }
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            label++;
        } else if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
            label++;
        } else {
            return false;
        }
        if (label > LABEL_MAX_LEN) {
            return false;
        }
        key[len] = c;
    }
    if (len == 0 || (len > NAME_MAX_LEN && !(len == NAME_MAX_LEN + 1 && label == 0))) {
        return false;
    }
    key[len] = '\0';
    return true;
}

static bool
literal_parse(const char *host, struct vd_addrs *out)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        memset(out, 0, sizeof(*out));
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->a[0];
        sin->sin_family = AF_INET;
        sin->sin_addr = a4;
        out->n = 1;
        return true;
    }
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        memset(out, 0, sizeof(*out));
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->a[0];
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = a6;
        out->n = 1;
        return true;
    }
    return false;
}

static bool
addrs_contains(const struct vd_addrs *a, int family, const void *addr)
{
    for (size_t i = 0; i < a->n; i++) {
        if (a->a[i].ss_family != family) {
            continue;
        }
        if (family == AF_INET &&
            memcmp(&((const struct sockaddr_in *)&a->a[i])->sin_addr, addr, 4) == 0) {
            return true;
        }
        if (family == AF_INET6 &&
            memcmp(&((const struct sockaddr_in6 *)&a->a[i])->sin6_addr, addr, 16) == 0) {
            return true;
        }
    }
    return false;
}

/* Fills @out from @ai: IPv4 first, then IPv6, without duplicates, at most VD_RESOLVE_MAX_ADDRS,
 * port 0. Returns the smallest TTL (s) among the records used and the CNAMEs that led to them. */
static uint32_t
addrs_from_ai(const struct ares_addrinfo *ai, struct vd_addrs *out)
{
    static const int order[2] = {AF_INET, AF_INET6};
    uint32_t ttl = UINT32_MAX;
    memset(out, 0, sizeof(*out));
    for (int k = 0; k < 2; k++) {
        for (const struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next) {
            if (n->ai_family != order[k] || !n->ai_addr || out->n == VD_RESOLVE_MAX_ADDRS) {
                continue;
            }
            const void *addr;
            if (n->ai_family == AF_INET) {
                addr = &((const struct sockaddr_in *)(const void *)n->ai_addr)->sin_addr;
            } else {
                addr = &((const struct sockaddr_in6 *)(const void *)n->ai_addr)->sin6_addr;
            }
            if (addrs_contains(out, n->ai_family, addr)) {
                continue;
            }
            struct sockaddr_storage *ss = &out->a[out->n++];
            if (n->ai_family == AF_INET) {
                struct sockaddr_in *sin = (struct sockaddr_in *)ss;
                sin->sin_family = AF_INET;
                memcpy(&sin->sin_addr, addr, 4);
            } else {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
                sin6->sin6_family = AF_INET6;
                memcpy(&sin6->sin6_addr, addr, 16);
                sin6->sin6_scope_id =
                    ((const struct sockaddr_in6 *)(const void *)n->ai_addr)->sin6_scope_id;
            }
            /* RFC 2181 §8: a TTL with the top bit set is treated as zero. */
            uint32_t t = n->ai_ttl < 0 ? 0 : (uint32_t)n->ai_ttl;
            ttl = VD_MIN(ttl, t);
        }
    }
    for (const struct ares_addrinfo_cname *c = ai->cnames; c; c = c->next) {
        ttl = VD_MIN(ttl, c->ttl < 0 ? 0u : (uint32_t)c->ttl);
    }
    return ttl == UINT32_MAX ? 0 : ttl;
}

/* ---- cache table ----------------------------------------------------------------------------- */

static struct entry *
table_find(struct vd_resolver *r, const char *name, uint32_t hash)
{
    for (struct entry *e = r->buckets[hash & (r->nbuckets - 1)]; e; e = e->hnext) {
        if (e->hash == hash && strcmp(e->name, name) == 0) {
            return e;
        }
    }
    return NULL;
}

static void
table_insert(struct vd_resolver *r, struct entry *e)
{
    struct entry **b = &r->buckets[e->hash & (r->nbuckets - 1)];
    e->hnext = *b;
    *b = e;
}

static void
table_remove(struct vd_resolver *r, struct entry *e)
{
    for (struct entry **pp = &r->buckets[e->hash & (r->nbuckets - 1)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            e->hnext = NULL;
            return;
        }
    }
}

static void
entry_drop_waiters(struct entry *e)
{
    while (!vd_list_empty(&e->waiters)) {
        struct vd_resolve_query *q =
            VD_CONTAINER_OF(e->waiters.next, struct vd_resolve_query, link);
        vd_list_remove(&q->link);
        q->magic = DEAD_MAGIC;
        free(q);
    }
}

/* Removes a cached (not pending) entry from the table and the LRU and frees it, or, when its
 * waiters have yet to be told (in r->done), detaches it for entry_dispatch() to free. */
static void
entry_evict(struct vd_resolver *r, struct entry *e)
{
    VD_BUG_ON(e->state == E_PENDING);
    table_remove(r, e);
    vd_list_remove(&e->lru);
    r->ncached--;
    if (!vd_list_empty(&e->dlink)) {
        e->detached = true;
        return;
    }
    free(e);
}

/* Stores a completed answer for @ttl ms, or detaches @e when it may not be cached. */
static void
entry_complete(struct vd_resolver *r, struct entry *e, uint64_t ttl)
{
    if (ttl == 0 || r->cache_size == 0) {
        table_remove(r, e);
        e->detached = true;
        return;
    }
    e->state = e->status == 0 ? E_POS : E_NEG;
    e->expires = uv_now(r->loop) + ttl;
    vd_list_insert_head(&r->lru, &e->lru);
    r->ncached++;
    while (r->ncached > r->cache_size) {
        entry_evict(r, VD_CONTAINER_OF(r->lru.prev, struct entry, lru));
    }
}

/* ---- completion ------------------------------------------------------------------------------ */

static void
enter(struct vd_resolver *r)
{
    r->busy++;
}

static void teardown(struct vd_resolver *r);
static void on_timer(uv_timer_t *t);
static void on_defer(uv_timer_t *t);

/* Leaves a c-ares or user callback section; the last one out performs a deferred free. */
static void
leave(struct vd_resolver *r)
{
    r->busy--;
    if (r->busy == 0 && r->closing && !r->torn_down) {
        teardown(r);
    }
}

static void
timer_arm(struct vd_resolver *r)
{
    struct timeval tv, *tvp;
    if (r->closing) {
        return;
    }
    tvp = ares_timeout(r->channel, NULL, &tv);
    if (!tvp) {
        uv_timer_stop(&r->timer);
        return;
    }
    /* Round up so that the timer never fires before c-ares considers the deadline passed. */
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    uv_timer_start(&r->timer, on_timer, ms, 0);
}

/* Tells every waiter of @e its result. The waiters move to a list on the stack and the result is
 * copied first, so a callback may free the resolver, cancel other waiters or start lookups that
 * evict @e. */
static void
entry_dispatch(struct vd_resolver *r, struct entry *e)
{
    struct vd_list local;
    int status = e->status;
    struct vd_addrs addrs = e->addrs;

    vd_list_init(&local);
    if (!vd_list_empty(&e->waiters)) {
        local.next = e->waiters.next;
        local.prev = e->waiters.prev;
        local.next->prev = &local;
        local.prev->next = &local;
        vd_list_init(&e->waiters);
    }
    if (e->detached) {
        free(e);
    }
    enter(r);
    while (!vd_list_empty(&local)) {
        struct vd_resolve_query *q = VD_CONTAINER_OF(local.next, struct vd_resolve_query, link);
        vd_list_remove(&q->link);
        vd_resolve_cb cb = q->cb;
        void *arg = q->arg;
        q->magic = DEAD_MAGIC;
        free(q);
        if (!r->closing) {
            cb(arg, status, status == 0 ? &addrs : NULL);
        }
    }
    leave(r);
}

/* ares_getaddrinfo() callback. May run inside ares_getaddrinfo() (hosts file, immediate send
 * failure), inside ares_process_fd(), or inside ares_destroy() with ARES_EDESTRUCTION. */
static void
on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct entry *e = arg;
    struct vd_resolver *r = e->r;
    uint64_t ttl = 0;
    (void)timeouts;

    VD_BUG_ON(r->magic != RESOLVER_MAGIC);
    if (r->closing) {
        /* Destruction or a late answer: nobody is waiting, and teardown() frees @e. */
        ares_freeaddrinfo(ai);
        return;
    }
    VD_BUG_ON(e->state != E_PENDING);
    e->status = map_status(status);
    if (e->status == 0) {
        uint32_t ttl_s = ai ? addrs_from_ai(ai, &e->addrs) : 0;
        if (e->addrs.n == 0) {
            e->status = VD_ENOTFOUND;
        } else if (r->submitting == e) {
            /* Answered before any packet could be sent: the hosts file, which has no TTL. */
            ttl = r->cache_max_ttl;
        } else {
            /* RFC 1035 §3.2.1, RFC 2181 §8: cache no longer than the records allow. */
            ttl = VD_MIN((uint64_t)ttl_s * 1000, r->cache_max_ttl);
        }
    }
    ares_freeaddrinfo(ai);
    if (e->status == VD_ENOTFOUND) {
        /* RFC 2308 §5: NXDOMAIN and NODATA answers may be cached. Timeouts and server failures
         * are not: they say nothing about the name. */
        ttl = r->negative_ttl;
    }
    if (e->status == 0) {
        VD_TRACE(NULL, VD_SUB_DNS, "dns: %s answered, %zu addresses, cached %llu ms", e->name,
                 e->addrs.n, (unsigned long long)ttl);
    } else {
        r->st.failures++;
        VD_TRACE(NULL, VD_SUB_DNS, "dns: %s failed: %s (c-ares: %s)", e->name,
                 vd_strerror(e->status), ares_strerror(status));
    }
    entry_complete(r, e, ttl);
    if (r->submitting == e) {
        e->sync_done = true; /* vd_resolve() returns the result itself */
        return;
    }
    if (r->depth > 0) {
        /* A callback must not run inside vd_resolve(): hand it to the loop. */
        vd_list_insert_tail(&r->done, &e->dlink);
        uv_timer_start(&r->defer, on_defer, 0, 0);
        return;
    }
    entry_dispatch(r, e);
}

static void
on_defer(uv_timer_t *t)
{
    struct vd_resolver *r = t->data;
    VD_BUG_ON(r->magic != RESOLVER_MAGIC);
    if (r->closing) {
        return;
    }
    enter(r);
    while (!vd_list_empty(&r->done) && !r->closing) {
        struct entry *e = VD_CONTAINER_OF(r->done.next, struct entry, dlink);
        vd_list_remove(&e->dlink);
        entry_dispatch(r, e);
    }
    leave(r);
}

/* ---- libuv plumbing -------------------------------------------------------------------------- */

static void
on_timer(uv_timer_t *t)
{
    struct vd_resolver *r = t->data;
    VD_BUG_ON(r->magic != RESOLVER_MAGIC);
    if (r->closing) {
        return;
    }
    enter(r);
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    timer_arm(r);
    leave(r);
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
    struct rsock *s = h->data;
    struct vd_resolver *r = s->r;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

    VD_BUG_ON(r->magic != RESOLVER_MAGIC);
    if (r->closing) {
        return;
    }
    if (status < 0) {
        /* Let c-ares see the error on its own read or write. */
        rfd = wfd = s->fd;
    } else {
        rfd = (events & UV_READABLE) ? s->fd : ARES_SOCKET_BAD;
        wfd = (events & UV_WRITABLE) ? s->fd : ARES_SOCKET_BAD;
    }
    enter(r);
    ares_process_fd(r->channel, rfd, wfd); /* may close @s */
    timer_arm(r);
    leave(r);
}

static void
free_if_done(struct vd_resolver *r)
{
    if (r->torn_down && r->pending_closes == 0) {
        r->magic = DEAD_MAGIC;
        free(r);
    }
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct vd_resolver *r = h->data;
    r->pending_closes--;
    free_if_done(r);
}

static void
on_sock_closed(uv_handle_t *h)
{
    struct rsock *s = h->data;
    struct vd_resolver *r = s->r;
    free(s);
    r->pending_closes--;
    free_if_done(r);
}

static void
sock_close(struct vd_resolver *r, struct rsock *s)
{
    vd_list_remove(&s->link);
    /* Stop polling before c-ares closes the descriptor, which it does right after this. */
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
    r->pending_closes++;
}

/* ARES_OPT_SOCK_STATE_CB: c-ares opened, changed interest in, or is about to close @fd. */
static void
on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct vd_resolver *r = data;
    struct rsock *s = NULL;

    VD_BUG_ON(r->magic != RESOLVER_MAGIC);
    for (struct vd_list *l = r->socks.next; l != &r->socks; l = l->next) {
        struct rsock *c = VD_CONTAINER_OF(l, struct rsock, link);
        if (c->fd == fd) {
            s = c;
            break;
        }
    }
    if (!readable && !writable) {
        if (s) {
            sock_close(r, s);
        }
        return;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            /* The query on this socket will time out through the timer. */
            vd_log(VD_LOG_ERR, NULL, "dns: out of memory for a resolver socket");
            return;
        }
        int err = uv_poll_init_socket(r->loop, &s->poll, fd);
        if (err < 0) {
            vd_log(VD_LOG_ERR, NULL, "dns: cannot poll resolver socket: %s", uv_strerror(err));
            free(s);
            return;
        }
        s->r = r;
        s->fd = fd;
        s->poll.data = s;
        vd_list_insert_tail(&r->socks, &s->link);
    }
    int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    int err = uv_poll_start(&s->poll, events, on_poll);
    if (err < 0) {
        vd_log(VD_LOG_ERR, NULL, "dns: cannot poll resolver socket: %s", uv_strerror(err));
    }
}

/* Destroys the channel and closes every handle; the last close callback frees @r. */
static void
teardown(struct vd_resolver *r)
{
    r->torn_down = true;
    /* Calls on_addrinfo (ignored: closing) and on_sock_state (closes the poll handles). */
    ares_destroy(r->channel);
    r->channel = NULL;
    while (!vd_list_empty(&r->socks)) {
        sock_close(r, VD_CONTAINER_OF(r->socks.next, struct rsock, link));
    }
    while (!vd_list_empty(&r->done)) {
        struct entry *e = VD_CONTAINER_OF(r->done.next, struct entry, dlink);
        vd_list_remove(&e->dlink);
        if (e->detached) {
            entry_drop_waiters(e);
            free(e);
        }
    }
    for (uint32_t i = 0; i < r->nbuckets; i++) {
        while (r->buckets[i]) {
            struct entry *e = r->buckets[i];
            r->buckets[i] = e->hnext;
            entry_drop_waiters(e);
            free(e);
        }
    }
    free(r->buckets);
    r->buckets = NULL;
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->defer, on_handle_closed);
    r->pending_closes += 2;
}

/* ---- API ------------------------------------------------------------------------------------- */

int
vd_resolver_new(uv_loop_t *loop, const struct vd_conf_resolver *rc, struct vd_resolver **out,
                char *err, size_t errlen)
{
    struct ares_options opts;
    int optmask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS;
    char lookups[] = "fb"; /* RFC 6761 §6.3 and /etc/hosts before DNS, whatever nsswitch says */
    struct vd_resolver *r;
    int st;

    *out = NULL;
    uv_once(&lib_once, lib_init);
    if (lib_status != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(lib_status));
        return VD_EDNS;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "resolver: out of memory");
        return VD_ENOMEM;
    }
    r->magic = RESOLVER_MAGIC;
    r->loop = loop;
    vd_list_init(&r->socks);
    vd_list_init(&r->done);
    vd_list_init(&r->lru);
    r->cache_size = rc->cache_size;
    r->cache_max_ttl = rc->cache_max_ttl;
    r->negative_ttl = rc->negative_ttl;
    r->nbuckets = 16;
    while (r->nbuckets < r->cache_size && r->nbuckets < MAX_BUCKETS) {
        r->nbuckets <<= 1;
    }
    r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
    if (!r->buckets) {
        free(r);
        snprintf(err, errlen, "resolver: out of memory");
        return VD_ENOMEM;
    }

    memset(&opts, 0, sizeof(opts));
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = r;
    opts.lookups = lookups;
    if (rc->timeout > 0) {
        opts.timeout = (int)VD_MIN(rc->timeout, (uint64_t)INT32_MAX);
        optmask |= ARES_OPT_TIMEOUTMS;
    }
    if (rc->tries > 0) {
        opts.tries = (int)VD_MIN(rc->tries, 100u);
        optmask |= ARES_OPT_TRIES;
    }
    st = ares_init_options(&r->channel, &opts, optmask);
    if (st != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares init: %s", ares_strerror(st));
        free(r->buckets);
        free(r);
        return VD_EDNS;
    }
    if (rc->nameservers && *rc->nameservers) {
        st = ares_set_servers_ports_csv(r->channel, rc->nameservers);
        if (st != ARES_SUCCESS) {
            snprintf(err, errlen, "resolver nameservers \"%s\": %s", rc->nameservers,
                     ares_strerror(st));
            ares_destroy(r->channel);
            free(r->buckets);
            free(r);
            return VD_ECONF;
        }
    }
    /* Nothing below fails, so no handle needs closing on an error path. */
    uv_timer_init(loop, &r->timer);
    uv_timer_init(loop, &r->defer);
    r->timer.data = r;
    r->defer.data = r;
    *out = r;
    return 0;
}

void
vd_resolver_free(struct vd_resolver *r)
{
    if (!r || r->closing) {
        return;
    }
    VD_BUG_ON(r->magic != RESOLVER_MAGIC);
    r->closing = true;
    /* No callback may run from now on: drop every waiter. */
    for (struct vd_list *l = r->done.next; l != &r->done; l = l->next) {
        entry_drop_waiters(VD_CONTAINER_OF(l, struct entry, dlink));
    }
    for (uint32_t i = 0; i < r->nbuckets; i++) {
        for (struct entry *e = r->buckets[i]; e; e = e->hnext) {
            entry_drop_waiters(e);
        }
    }
    if (r->busy == 0) {
        teardown(r);
    }
}

int
vd_resolve(struct vd_resolver *r, const char *host, struct vd_addrs *out, vd_resolve_cb cb,
           void *arg, struct vd_resolve_query **qp)
{
    char key[NAME_MAX_LEN + 2];
    struct vd_resolve_query *q;
    struct entry *e;
    uint32_t hash;
    size_t klen;

    VD_BUG_ON(r->magic != RESOLVER_MAGIC);
    *qp = NULL;
    if (r->closing) {
        return VD_EDNS;
    }
    if (literal_parse(host, out)) {
        return 0;
    }
    if (!name_normalize(host, key)) {
        return VD_ENOTFOUND;
    }
    hash = name_hash(key);
    e = table_find(r, key, hash);
    if (e && e->state != E_PENDING) {
        if (e->expires > uv_now(r->loop)) {
            vd_list_remove(&e->lru);
            vd_list_insert_head(&r->lru, &e->lru);
            if (e->state == E_NEG) {
                r->st.negative_hits++;
                VD_TRACE(NULL, VD_SUB_DNS, "dns: %s negative cache hit", key);
                return VD_ENOTFOUND;
            }
            r->st.cache_hits++;
            VD_TRACE(NULL, VD_SUB_DNS, "dns: %s cache hit", key);
            *out = e->addrs;
            return 0;
        }
        entry_evict(r, e);
        e = NULL;
    }

    q = malloc(sizeof(*q));
    if (!q) {
        return VD_ENOMEM;
    }
    q->magic = QUERY_MAGIC;
    q->cb = cb;
    q->arg = arg;
    if (e) {
        /* Coalesce with the lookup in flight. */
        vd_list_insert_tail(&e->waiters, &q->link);
        *qp = q;
        return VD_EAGAIN;
    }

    klen = strlen(key);
    e = calloc(1, sizeof(*e) + klen + 1);
    if (!e) {
        free(q);
        return VD_ENOMEM;
    }
    memcpy(e->name, key, klen + 1);
    e->r = r;
    e->hash = hash;
    e->state = E_PENDING;
    vd_list_init(&e->lru);
    vd_list_init(&e->waiters);
    vd_list_init(&e->dlink);
    table_insert(r, e);
    vd_list_insert_tail(&e->waiters, &q->link);

    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    /* We order the answer ourselves; c-ares's RFC 6724 sort would open a socket per address. */
    hints.ai_flags = ARES_AI_NOSORT;
    r->st.queries++;
    VD_TRACE(NULL, VD_SUB_DNS, "dns: query %s", key);
    r->depth++;
    r->submitting = e;
    ares_getaddrinfo(r->channel, e->name, NULL, &hints, on_addrinfo, e);
    r->submitting = NULL;
    r->depth--;

    if (e->sync_done) {
        int status = e->status;
        vd_list_remove(&q->link);
        q->magic = DEAD_MAGIC;
        free(q);
        if (status == 0) {
            *out = e->addrs;
        }
        if (e->detached) {
            free(e);
        }
        return status;
    }
    timer_arm(r);
    *qp = q;
    return VD_EAGAIN;
}

void
vd_resolve_cancel(struct vd_resolve_query *q)
{
    if (!q) {
        return;
    }
    VD_BUG_ON(q->magic != QUERY_MAGIC);
    /* The lookup itself goes on and fills the cache. */
    vd_list_remove(&q->link);
    q->magic = DEAD_MAGIC;
    free(q);
}

void
vd_resolver_stats(const struct vd_resolver *r, struct vd_resolver_stats *st)
{
    *st = r->st;
}
