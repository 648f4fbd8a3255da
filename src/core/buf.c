/* SPDX-License-Identifier: MIT */
/* Chunk pool: each thread keeps a small free list so the hot path takes no lock; a global
 * atomic counts chunks in use against an optional budget. */
#include "vd/config.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vd/buf.h"
#include "vd/err.h"
#include "vd/mcache.h"

#define POOL_KEEP 64 /* chunks cached per thread: 1 MiB */

struct free_chunk {
    struct free_chunk *next;
};

static _Thread_local struct free_chunk *pool_head;
static _Thread_local unsigned pool_count;
static atomic_uint_fast64_t chunks_in_use;
static uint64_t chunks_budget;

uint64_t
vd_buf_chunks_in_use(void)
{
    return atomic_load(&chunks_in_use);
}

void
vd_buf_set_budget(uint64_t max_chunks)
{
    chunks_budget = max_chunks;
}

int
vd_buf_acquire(struct vd_buf *b)
{
    uint8_t *p;
    if (chunks_budget && atomic_load(&chunks_in_use) >= chunks_budget) {
        return VD_ENOMEM;
    }
    if (pool_head) {
        p = (uint8_t *)pool_head;
        pool_head = pool_head->next;
        pool_count--;
    } else {
        p = malloc(VD_BUF_CHUNK);
        if (!p) {
            return VD_ENOMEM;
        }
    }
    atomic_fetch_add(&chunks_in_use, 1);
    b->base = p;
    b->cap = VD_BUF_CHUNK;
    b->off = 0;
    b->len = 0;
    return 0;
}

int
vd_buf_grow(struct vd_buf *b, uint32_t cap)
{
    if (cap <= b->cap) {
        return 0;
    }
    uint8_t *p = malloc(cap);
    if (!p) {
        return VD_ENOMEM;
    }
    if (b->len) {
        memcpy(p, b->base + b->off, b->len);
    }
    uint32_t len = b->len;
    vd_buf_release(b);
    atomic_fetch_add(&chunks_in_use, 1);
    b->base = p;
    b->cap = cap;
    b->off = 0;
    b->len = len;
    return 0;
}

void
vd_buf_release(struct vd_buf *b)
{
    if (!b->base) {
        return;
    }
    atomic_fetch_sub(&chunks_in_use, 1);
    if (b->cap != VD_BUF_CHUNK) {
        free(b->base);
    } else if (pool_count < POOL_KEEP) {
        struct free_chunk *f = (struct free_chunk *)(void *)b->base;
        f->next = pool_head;
        pool_head = f;
        pool_count++;
    } else {
        free(b->base);
    }
    memset(b, 0, sizeof(*b));
}

void
vd_buf_thread_cleanup(void)
{
    while (pool_head) {
        struct free_chunk *f = pool_head;
        pool_head = f->next;
        free(f);
    }
    pool_count = 0;
}

void
vd_buf_compact(struct vd_buf *b)
{
    if (b->off == 0) {
        return;
    }
    if (b->len) {
        memmove(b->base, b->base + b->off, b->len);
    }
    b->off = 0;
}

void
vd_dbuf_init(struct vd_dbuf *d, size_t max)
{
    d->p = NULL;
    d->len = d->cap = 0;
    d->max = max;
}

void
vd_dbuf_free(struct vd_dbuf *d)
{
    vd_mc_free(d->p);
    d->p = NULL;
    d->len = d->cap = 0;
}

void
vd_dbuf_reset(struct vd_dbuf *d)
{
    d->len = 0;
    if (d->p) {
        d->p[0] = '\0';
    }
}

int
vd__dbuf_grow(struct vd_dbuf *d, size_t len)
{
    if (len > d->max || d->len + len > d->max) {
        return VD_ETOOBIG;
    }
    if (d->len + len + 1 > d->cap) {
        size_t ncap = d->cap ? d->cap : 256;
        while (ncap < d->len + len + 1) {
            ncap *= 2;
        }
        char *np = vd_mc_realloc(d->p, ncap);
        if (!np) {
            return VD_ENOMEM;
        }
        d->p = np;
        d->cap = ncap;
    }
    return 0;
}

int
vd_dbuf_addf(struct vd_dbuf *d, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return VD_EPROTO;
    }
    if ((size_t)n < sizeof(tmp)) {
        return vd_dbuf_add(d, tmp, (size_t)n);
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        return VD_ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int r = vd_dbuf_add(d, big, (size_t)n);
    free(big);
    return r;
}
