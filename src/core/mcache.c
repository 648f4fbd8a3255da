/* SPDX-License-Identifier: MIT */
/* Size-class block cache: each block carries a 16-byte header naming its class, so a free
 * needs no size and a block may be freed on any thread. Classes are 32 B to 32 KiB; larger
 * blocks go straight to libc. A thread keeps at most CLASS_KEEP bytes (and CLASS_MAX blocks)
 * per class and THREAD_KEEP bytes in all: what it had in use at its peak, up to those bounds,
 * much as glibc would keep the same freed blocks in its bins. */
#include "vd/config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vd/mcache.h"

#if defined(__SANITIZE_ADDRESS__)
#define MC_NOCACHE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define MC_NOCACHE 1
#endif
#endif
#ifndef MC_NOCACHE
#define MC_NOCACHE 0
#endif

#define MIN_SHIFT   5  /* 32 B */
#define MAX_SHIFT   15 /* 32 KiB */
#define NCLASS      (MAX_SHIFT - MIN_SHIFT + 1)
#define BIG         0xffffu
#define CLASS_KEEP  (1024 * 1024)     /* bytes a thread keeps per class */
#define CLASS_MAX   1024              /* blocks a thread keeps per class */
#define THREAD_KEEP (4 * 1024 * 1024) /* bytes a thread keeps in all */

struct hdr {
    union {
        struct hdr *next; /* while cached */
        uint32_t cls;     /* while in use: class index or BIG */
    } u;

    uint64_t pad; /* keeps the payload 16-byte aligned */
};

struct freelist {
    struct hdr *head;
    uint32_t n;
    uint32_t low; /* fewest blocks held since the last trim: those were not needed */
};

static _Thread_local struct freelist cache[NCLASS];
static _Thread_local size_t cached_bytes;
/* Set by vd_mc_thread_cleanup: what is freed later on this thread (OpenSSL frees its per-thread
 * state from a thread-exit handler, after the worker's cleanup) goes straight to libc, or the
 * exiting thread would take it with it. */
static _Thread_local bool thread_done;
static bool mc_off = MC_NOCACHE;

void
vd_mc_init(void)
{
    const char *e = getenv("VD_MCACHE");
    if (e && e[0] == '0') {
        mc_off = true;
    }
}

static inline unsigned
class_of(size_t n)
{
    if (n <= ((size_t)1 << MIN_SHIFT)) {
        return 0;
    }
    unsigned bits = (unsigned)(64 - __builtin_clzll((unsigned long long)(n - 1)));
    return bits - MIN_SHIFT;
}

static inline size_t
class_size(unsigned c)
{
    return (size_t)1 << (c + MIN_SHIFT);
}

static inline uint32_t
class_keep(unsigned c)
{
    uint32_t n = (uint32_t)(CLASS_KEEP >> (c + MIN_SHIFT));
    return n < CLASS_MAX ? n : CLASS_MAX;
}

void *
vd_mc_alloc(size_t n)
{
    unsigned c = class_of(n);
    struct hdr *h;
    if (c < NCLASS) {
        struct freelist *fl = &cache[c];
        h = fl->head;
        if (h) {
            fl->head = h->u.next;
            fl->n--;
            if (fl->n < fl->low) {
                fl->low = fl->n;
            }
            cached_bytes -= class_size(c);
        } else if (!(h = malloc(sizeof(*h) + class_size(c)))) {
            return NULL;
        }
        h->u.cls = c;
        return h + 1;
    }
    if (n > SIZE_MAX - sizeof(*h) || !(h = malloc(sizeof(*h) + n))) {
        return NULL;
    }
    h->u.cls = BIG;
    return h + 1;
}

void
vd_mc_free(void *p)
{
    if (!p) {
        return;
    }
    struct hdr *h = (struct hdr *)p - 1;
    uint32_t c = h->u.cls;
    if (c < NCLASS && !mc_off && !thread_done) {
        struct freelist *fl = &cache[c];
        if (fl->n < class_keep(c) && cached_bytes + class_size(c) <= THREAD_KEEP) {
            h->u.next = fl->head;
            fl->head = h;
            fl->n++;
            cached_bytes += class_size(c);
            return;
        }
    }
    free(h);
}

void *
vd_mc_calloc(size_t nmemb, size_t size)
{
    if (size && nmemb > SIZE_MAX / size) {
        return NULL;
    }
    void *p = vd_mc_alloc(nmemb * size);
    if (p) {
        memset(p, 0, nmemb * size);
    }
    return p;
}

void *
vd_mc_realloc(void *p, size_t n)
{
    if (!p) {
        return vd_mc_alloc(n);
    }
    struct hdr *h = (struct hdr *)p - 1;
    uint32_t c = h->u.cls;
    if (c == BIG) {
        if (n > SIZE_MAX - sizeof(*h)) {
            return NULL;
        }
        struct hdr *nh = realloc(h, sizeof(*h) + n);
        return nh ? nh + 1 : NULL;
    }
    size_t have = class_size(c);
    if (n <= have && (c == 0 || n > have / 2)) {
        return p; /* still the right class */
    }
    void *q = vd_mc_alloc(n);
    if (!q) {
        return NULL;
    }
    memcpy(q, p, n < have ? n : have);
    vd_mc_free(p);
    return q;
}

size_t
vd_mc_thread_trim(void)
{
    size_t freed = 0;
    for (unsigned c = 0; c < NCLASS; c++) {
        struct freelist *fl = &cache[c];
        for (uint32_t k = fl->low; k && fl->head; k--) {
            struct hdr *h = fl->head;
            fl->head = h->u.next;
            fl->n--;
            free(h);
            freed += class_size(c);
        }
        fl->low = fl->n;
    }
    cached_bytes -= freed;
    return freed;
}

void
vd_mc_thread_cleanup(void)
{
    for (unsigned c = 0; c < NCLASS; c++) {
        while (cache[c].head) {
            struct hdr *h = cache[c].head;
            cache[c].head = h->u.next;
            free(h);
        }
        cache[c].n = cache[c].low = 0;
    }
    cached_bytes = 0;
    thread_done = true;
}

size_t
vd_mc_thread_cached(void)
{
    size_t n = 0;
    for (unsigned c = 0; c < NCLASS; c++) {
        n += cache[c].n;
    }
    return n;
}

bool
vd_mc_caching(void)
{
    return !mc_off;
}
