/* SPDX-License-Identifier: MIT */
/* The memory tier of the shared cache: one store per process, used by every worker thread. A
 * hash table (chained, keyed by the primary key) holds immutable, reference-counted entries; one
 * mutex guards the table, the LRU list and the byte count (the critical sections are short:
 * lookups compare keys and take a reference, copies happen outside). Eviction drops the least
 * recently used entries until the total fits; an evicted entry that a reader still sends stays
 * alive until its last reference goes. The public entry points also route to the disk tier
 * (disk.c) when one is open: memory first, then disk. */
#include "vd/config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cache-int.h"
#include "vd/conf.h"
#include "vd/err.h"
#include "vd/mcache.h"

/* A memory hit records an access of the disk copy at most this often (s): enough for the disk
 * LRU, and one disk-mutex round trip per entry per minute at most on the hit path. */
#define TOUCH_EVERY 60

#define NBUCKETS 4096u

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct vd_cache_entry *buckets[NBUCKETS];
static struct vd_list lru = {&lru, &lru};    /* most recent first */
static struct vd_list flru = {&flru, &flru}; /* file-backed entries, most recent first */
static uint64_t total_bytes, nentries, nevictions, nfiles;
static struct vd_cache_limits limits = {.memory = 256u << 20,
                                        .max_object = 8u << 20,
                                        .sendfile_min = 64u << 10,
                                        .sendfile_files = 256,
                                        .memory_files = 1024};
/* Entries alive with a body in a memory file: taken before one is made, given back when it is
 * freed (which may happen under mu, so not guarded by it). */
static _Atomic uint64_t nmemfiles;

static uint32_t
hash_key(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

static void
entry_free(struct vd_cache_entry *e)
{
    if (e->parent) {
        vd_cache_entry_unref(e->parent);
        free(e->body);
        vd_mc_free(e);
        return;
    }
    if (e->body_fd >= 0) {
        close(e->body_fd);
    }
    if (e->body_map) {
        munmap((void *)e->body_map, e->map_len);
    }
    if (e->body_memfd >= 0) {
        munmap(e->body, e->body_len);
        close(e->body_memfd);
        e->body = NULL;
        atomic_fetch_sub_explicit(&nmemfiles, 1, memory_order_relaxed);
    }
    free(e->hdrs);
    free(e->body);
    free(e->key);
    free(e->vary);
    free(e->vary_key);
    vd_mc_free(e);
}

void
vd_cache_entry_ref(struct vd_cache_entry *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

void
vd_cache_entry_unref(struct vd_cache_entry *e)
{
    if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) {
        entry_free(e);
    }
}

/* Fields a cache does not store or replaces when serving (RFC 9111 §3.1): hop-by-hop ones are
 * already gone; Age is recomputed, Via re-added, Content-Length re-derived from the body. */
static bool
not_stored(struct vd_iov name)
{
    return vd_hdr_name_is(name, "age") || vd_hdr_name_is(name, "via") ||
           vd_hdr_name_is(name, "content-length") || vd_hdr_name_is(name, "cache-status");
}

/* Copies @body (@len bytes, for an entry charged @size bytes) into a new sealed memory file when
 * the memory tier would keep it as one (cache.memory_files): returns the file's read-only shared
 * mapping and sets *@fd, or returns NULL (*@fd -1) when not wanted or when making it failed
 * (out of descriptors or memory: the body then stays in ordinary memory). */
static uint8_t *
memfd_body(const uint8_t *body, size_t len, size_t size, int *fd)
{
    *fd = -1;
    pthread_mutex_lock(&mu);
    bool want = limits.sendfile_min && len >= limits.sendfile_min && len <= limits.max_object &&
                size <= limits.memory;
    uint64_t max = limits.memory_files;
    pthread_mutex_unlock(&mu);
    if (!want || atomic_fetch_add_explicit(&nmemfiles, 1, memory_order_relaxed) >= max) {
        if (want) {
            atomic_fetch_sub_explicit(&nmemfiles, 1, memory_order_relaxed);
        }
        return NULL;
    }
    int f = memfd_create("viaduct-cache", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    size_t done = 0;
    while (f >= 0 && done < len) {
        ssize_t k = pwrite(f, body + done, len - done, (off_t)done);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            break;
        }
        done += (size_t)k;
    }
    void *m = MAP_FAILED;
    if (f >= 0 && done == len &&
        fcntl(f, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0) {
        m = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, f, 0);
    }
    if (m == MAP_FAILED) {
        if (f >= 0) {
            close(f);
        }
        atomic_fetch_sub_explicit(&nmemfiles, 1, memory_order_relaxed);
        return NULL;
    }
    *fd = f;
    return m;
}

/* @body is copied unless @owned (then it becomes e->body, or is freed on failure). */
static struct vd_cache_entry *
entry_new(const char *key, const char *vary, const char *vary_key, int status,
          const struct vd_hdr *h, size_t n, uint8_t *body, size_t body_len, bool owned,
          const struct vd_cache_times *tm, int64_t lifetime)
{
    struct vd_cache_entry *e = vd_mc_calloc(1, sizeof(*e));
    if (!e) {
        if (owned) {
            free(body);
        }
        return NULL;
    }
    e->body_fd = -1;
    e->body_memfd = -1;
    size_t bytes = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (!not_stored(h[i].name)) {
            bytes += h[i].name.len + h[i].value.len + 2;
            kept++;
        }
    }
    /* One block: the field array, then the names and values (NUL-terminated for safety). */
    e->hdrs = malloc(sizeof(*e->hdrs) * (kept ? kept : 1) + bytes);
    e->key = strdup(key);
    e->vary = strdup(vary ? vary : "");
    e->vary_key = strdup(vary_key ? vary_key : "");
    size_t size = sizeof(*e) + bytes + sizeof(*e->hdrs) * kept + body_len + strlen(key) * 2 + 64;
    if (owned && body) {
        e->body = body;
    } else if (body_len && (e->body = memfd_body(body, body_len, size, &e->body_memfd))) {
        owned = true; /* copied already */
    } else {
        e->body = malloc(body_len ? body_len : 1);
        if (owned) {
            owned = false; /* NULL: nothing to take over */
        }
    }
    e->body_len = body_len; /* entry_free unmaps a memory file's body by it */
    if (!e->hdrs || !e->key || !e->vary || !e->vary_key || !e->body) {
        entry_free(e);
        return NULL;
    }
    char *p = (char *)(e->hdrs + (kept ? kept : 1));
    for (size_t i = 0; i < n; i++) {
        if (not_stored(h[i].name)) {
            continue;
        }
        struct vd_hdr *o = &e->hdrs[e->nhdrs++];
        memcpy(p, h[i].name.base, h[i].name.len);
        p[h[i].name.len] = '\0';
        o->name = (struct vd_iov){(const uint8_t *)p, h[i].name.len};
        p += h[i].name.len + 1;
        memcpy(p, h[i].value.base, h[i].value.len);
        p[h[i].value.len] = '\0';
        o->value = (struct vd_iov){(const uint8_t *)p, h[i].value.len};
        p += h[i].value.len + 1;
    }
    if (body_len && !owned) {
        memcpy(e->body, body, body_len);
    }
    e->status = status;
    e->times = *tm;
    e->lifetime = lifetime;
    vd_cache_cc_parse(e->hdrs, e->nhdrs, &e->cc);
    e->size = size;
    atomic_init(&e->refs, 1);
    atomic_init(&e->disk_touched, 0);
    vd_list_init(&e->lru);
    vd_list_init(&e->flru);
    return e;
}

struct vd_cache_entry *
vd_cache_entry_new(const char *key, const char *vary, const char *vary_key, int status,
                   const struct vd_hdr *h, size_t n, const uint8_t *body, size_t body_len,
                   const struct vd_cache_times *tm, int64_t lifetime)
{
    return entry_new(key, vary, vary_key, status, h, n, (uint8_t *)body, body_len, false, tm,
                     lifetime);
}

struct vd_cache_entry *
vd__cache_entry_new_owned(const char *key, const char *vary, const char *vary_key, int status,
                          const struct vd_hdr *h, size_t n, uint8_t *body, size_t body_len,
                          const struct vd_cache_times *tm, int64_t lifetime)
{
    return entry_new(key, vary, vary_key, status, h, n, body, body_len, true, tm, lifetime);
}

struct vd_cache_entry *
vd__cache_entry_new_file(const char *key, const char *vary, const char *vary_key, int status,
                         const struct vd_hdr *h, size_t n, int fd, uint64_t body_off,
                         size_t body_len, bool map, const struct vd_cache_times *tm,
                         int64_t lifetime)
{
    struct vd_cache_entry *e =
        entry_new(key, vary, vary_key, status, h, n, NULL, 0, false, tm, lifetime);
    if (!e) {
        close(fd);
        return NULL;
    }
    free(e->body); /* the 1-byte placeholder of an empty body */
    e->body = NULL;
    e->body_len = body_len;
    e->body_fd = fd;
    e->body_off = body_off;
    /* For fronts that send file bodies with write(2) rather than sendfile (see
     * vd_front_ops.send_file); a failed mapping only leaves sendfile. */
    size_t mlen = (size_t)body_off + body_len;
    void *m = map && mlen ? mmap(NULL, mlen, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (m != MAP_FAILED) {
        e->body_map = m;
        e->map_len = mlen;
    }
    return e;
}

struct vd_cache_entry *
vd__cache_entry_new_view(struct vd_cache_entry *parent, uint8_t *body, size_t body_len)
{
    struct vd_cache_entry *e = vd_mc_calloc(1, sizeof(*e));
    if (!e) {
        free(body);
        return NULL;
    }
    vd_cache_entry_ref(parent);
    e->parent = parent;
    e->key = parent->key;
    e->vary = parent->vary;
    e->vary_key = parent->vary_key;
    e->status = parent->status;
    e->hdrs = parent->hdrs;
    e->nhdrs = parent->nhdrs;
    e->body = body;
    e->body_len = body_len;
    e->body_fd = -1;
    e->body_memfd = -1;
    e->times = parent->times;
    e->lifetime = parent->lifetime;
    e->cc = parent->cc;
    e->size = parent->size + body_len;
    atomic_init(&e->refs, 1);
    atomic_init(&e->disk_touched, 0);
    vd_list_init(&e->lru);
    vd_list_init(&e->flru);
    return e;
}

bool
vd__cache_mem_would_keep(size_t size, size_t body_len)
{
    pthread_mutex_lock(&mu);
    bool keep = body_len <= limits.max_object && size <= limits.memory;
    pthread_mutex_unlock(&mu);
    return keep;
}

int
vd_cache_entry_read(const struct vd_cache_entry *e, uint64_t off, uint8_t *buf, size_t len)
{
    VD_BUG_ON(off > e->body_len || len > e->body_len - off);
    if (e->body_fd < 0) {
        memcpy(buf, e->body + off, len);
        return 0;
    }
    while (len) {
        ssize_t k = pread(e->body_fd, buf, len, (off_t)(e->body_off + off));
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0) {
            return -errno;
        }
        if (k == 0) {
            return -EIO; /* the file was cut short behind viaduct's back */
        }
        buf += k;
        len -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* Unlinks @e from the table and the LRU list and drops the store's reference. Locked. */
static void
unlink_locked(struct vd_cache_entry *e)
{
    struct vd_cache_entry **pp = &buckets[hash_key(e->key) % NBUCKETS];
    while (*pp && *pp != e) {
        pp = &(*pp)->hnext;
    }
    if (*pp) {
        *pp = e->hnext;
    }
    vd_list_remove(&e->lru);
    if (e->body_fd >= 0) {
        vd_list_remove(&e->flru);
        nfiles--;
    }
    e->linked = false;
    total_bytes -= e->size;
    nentries--;
    vd_cache_entry_unref(e);
}

static void
evict_locked(uint64_t want)
{
    while (total_bytes + want > limits.memory && !vd_list_empty(&lru)) {
        struct vd_cache_entry *old = VD_CONTAINER_OF(lru.prev, struct vd_cache_entry, lru);
        unlink_locked(old);
        nevictions++;
    }
}

void
vd_cache_configure(const struct vd_cache_limits *lim)
{
    pthread_mutex_lock(&mu);
    limits.memory = lim->memory;
    limits.max_object = lim->max_object;
    limits.sendfile_files = lim->sendfile_files;
    limits.sendfile_min = lim->sendfile_min;
    limits.memory_files = lim->memory_files;
    evict_locked(0);
    while (nfiles > limits.sendfile_files) {
        unlink_locked(VD_CONTAINER_OF(flru.prev, struct vd_cache_entry, flru));
    }
    pthread_mutex_unlock(&mu);
    vd__disk_configure(lim);
}

void
vd_cache_limits_from_conf(struct vd_cache_limits *lim, const struct vd_conf_cache *c)
{
    *lim = (struct vd_cache_limits){
        .memory = c->memory,
        .max_object = c->max_object,
        .disk_path = c->disk_path,
        .disk_size = c->disk_size,
        .disk_objects = c->disk_objects,
        .disk_queue = c->disk_queue,
        .disk_fsync = c->disk_fsync,
        .sendfile_min = c->sendfile_min,
        .sendfile_files = c->sendfile_files,
        .memory_files = c->memory_files,
    };
}

static uint64_t
fnv64(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211u;
    }
    return h;
}

uint64_t
vd_cache_limits_digest(const struct vd_cache_limits *lim)
{
    uint64_t v[] = {lim->memory,       lim->max_object,     lim->disk_size,
                    lim->disk_objects, lim->disk_queue,     lim->disk_fsync,
                    lim->sendfile_min, lim->sendfile_files, lim->memory_files};
    uint64_t h = fnv64(14695981039346656037u, v, sizeof(v));
    if (lim->disk_path) {
        h = fnv64(h, lim->disk_path, strlen(lim->disk_path) + 1);
    }
    return h;
}

void
vd_cache_insert(struct vd_cache_entry *e)
{
    if (vd__disk_on()) {
        vd__disk_insert(e);
        return;
    }
    vd__cache_mem_insert(e);
}

void
vd__cache_mem_insert(struct vd_cache_entry *e)
{
    pthread_mutex_lock(&mu);
    bool file = e->body_fd >= 0;
    /* A view is never kept: it would hold its parent's descriptor open past sendfile_files. */
    if (e->body_len > limits.max_object || e->size > limits.memory ||
        (file && limits.sendfile_files == 0) || e->parent) {
        pthread_mutex_unlock(&mu);
        vd_cache_entry_unref(e);
        return;
    }
    uint32_t b = hash_key(e->key) % NBUCKETS;
    for (struct vd_cache_entry *o = buckets[b]; o; o = o->hnext) {
        if (strcmp(o->key, e->key) == 0 && strcmp(o->vary_key, e->vary_key) == 0 &&
            strcmp(o->vary, e->vary) == 0) {
            unlink_locked(o);
            break;
        }
    }
    evict_locked(e->size);
    /* Open files are bounded apart from bytes: a file-backed entry costs little memory. */
    while (file && nfiles >= limits.sendfile_files && !vd_list_empty(&flru)) {
        unlink_locked(VD_CONTAINER_OF(flru.prev, struct vd_cache_entry, flru));
        nevictions++;
    }
    if (file) {
        vd_list_insert_head(&flru, &e->flru);
        nfiles++;
    }
    e->hnext = buckets[b];
    buckets[b] = e;
    e->linked = true;
    vd_list_insert_head(&lru, &e->lru);
    total_bytes += e->size;
    nentries++;
    pthread_mutex_unlock(&mu);
}

struct vd_cache_entry *
vd_cache_lookup(const char *key, const struct vd_hdr *req, size_t nreq, bool *vary_miss)
{
    *vary_miss = false;
    struct vd_dbuf k;
    vd_dbuf_init(&k, 65536);
    struct vd_cache_entry *best = NULL;
    pthread_mutex_lock(&mu);
    for (struct vd_cache_entry *o = buckets[hash_key(key) % NBUCKETS]; o; o = o->hnext) {
        if (strcmp(o->key, key) != 0) {
            continue;
        }
        if (o->vary[0]) {
            vd_dbuf_reset(&k);
            if (vd_cache_vary_key_names(o->vary, req, nreq, &k) < 0 ||
                strcmp(k.p ? k.p : "", o->vary_key) != 0) {
                *vary_miss = true;
                continue;
            }
        }
        if (!best || o->times.response_time > best->times.response_time) {
            best = o;
        }
    }
    if (best) {
        *vary_miss = false;
        vd_list_remove(&best->lru);
        vd_list_insert_head(&lru, &best->lru);
        if (best->body_fd >= 0) {
            vd_list_remove(&best->flru);
            vd_list_insert_head(&flru, &best->flru);
        }
        vd_cache_entry_ref(best);
    }
    pthread_mutex_unlock(&mu);
    vd_dbuf_free(&k);
    if (!vd__disk_on()) {
        return best;
    }
    if (best) {
        int64_t now = (int64_t)time(NULL);
        int64_t last = atomic_load_explicit(&best->disk_touched, memory_order_relaxed);
        if (now - last >= TOUCH_EVERY &&
            atomic_compare_exchange_strong(&best->disk_touched, &last, now)) {
            vd__disk_touch(best, now);
        }
        return best;
    }
    bool dvm = false;
    best = vd__disk_lookup(key, req, nreq, &dvm);
    *vary_miss = best ? false : (*vary_miss || dvm);
    return best;
}

size_t
vd__cache_mem_invalidate(const char *key, const uint64_t *ids, size_t nids)
{
    size_t n = 0;
    pthread_mutex_lock(&mu);
    struct vd_cache_entry *o = buckets[hash_key(key) % NBUCKETS];
    while (o) {
        struct vd_cache_entry *next = o->hnext;
        if (strcmp(o->key, key) == 0) {
            bool counted = false;
            uint64_t pk, id;
            if (nids && vd__cache_ids(o->key, o->vary, o->vary_key, &pk, &id)) {
                for (size_t i = 0; i < nids && !counted; i++) {
                    counted = ids[i] == id;
                }
            }
            n += !counted;
            unlink_locked(o);
        }
        o = next;
    }
    pthread_mutex_unlock(&mu);
    return n;
}

size_t
vd_cache_invalidate(const char *key)
{
    if (vd__disk_on()) {
        return vd__disk_invalidate(key);
    }
    return vd__cache_mem_invalidate(key, NULL, 0);
}

void
vd_cache_get_stats(struct vd_cache_stats *st)
{
    pthread_mutex_lock(&mu);
    st->bytes = total_bytes;
    st->entries = nentries;
    st->evictions = nevictions;
    st->files = nfiles;
    pthread_mutex_unlock(&mu);
    st->memory_files = atomic_load_explicit(&nmemfiles, memory_order_relaxed);
}

void
vd_cache_clear(void)
{
    pthread_mutex_lock(&mu);
    while (!vd_list_empty(&lru)) {
        unlink_locked(VD_CONTAINER_OF(lru.next, struct vd_cache_entry, lru));
    }
    pthread_mutex_unlock(&mu);
    if (vd__disk_on()) {
        vd__disk_forget_open();
    }
}
