/* SPDX-License-Identifier: MIT */
/* Bump allocator: an inline first block, then malloc'd blocks of growing size up to the cap.
 * Each thread keeps a few freed first-size blocks for the next request (most requests that
 * outgrow the inline block need exactly one: a malloc and free of 4 KiB per request saved). */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "vd/arena.h"

struct vd_arena_blk {
    struct vd_arena_blk *prev;
    size_t size, off;
    _Alignas(16) uint8_t data[];
};

#define BLK_FIRST 4096 /* size of the first malloc'd block */
#define SPARE_MAX 64   /* first-size blocks kept per thread: 256 KiB at most (100 streams) */

static _Thread_local struct vd_arena_blk *spare[SPARE_MAX];
static _Thread_local unsigned nspare;
static _Thread_local unsigned nspare_low; /* fewest spares held since the last trim */

void
vd_arena_init(struct vd_arena *a, size_t max)
{
    a->blk = NULL;
    a->used = 0;
    a->max = max;
    a->first_off = 0;
}

void *
vd_arena_alloc(struct vd_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) {
        n = 16;
    }
    if (a->used + n > a->max) {
        return NULL;
    }
    if (!a->blk) {
        uintptr_t base = (uintptr_t)a->first;
        size_t pad = (16 - ((base + a->first_off) & 15)) & 15;
        if (a->first_off + pad + n <= sizeof(a->first)) {
            void *p = a->first + a->first_off + pad;
            a->first_off += pad + n;
            a->used += n;
            return p;
        }
    }
    if (!a->blk || a->blk->off + n > a->blk->size) {
        size_t sz = a->blk ? a->blk->size * 2 : BLK_FIRST;
        while (sz < n) {
            sz *= 2;
        }
        struct vd_arena_blk *b =
            sz == BLK_FIRST && nspare ? spare[--nspare] : malloc(sizeof(*b) + sz);
        if (nspare < nspare_low) {
            nspare_low = nspare;
        }
        if (!b) {
            return NULL;
        }
        b->prev = a->blk;
        b->size = sz;
        b->off = 0;
        a->blk = b;
    }
    void *p = a->blk->data + a->blk->off;
    a->blk->off += n;
    a->used += n;
    return p;
}

char *
vd_arena_dup(struct vd_arena *a, const void *p, size_t n)
{
    char *d = vd_arena_alloc(a, n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

void
vd_arena_free(struct vd_arena *a)
{
    while (a->blk) {
        struct vd_arena_blk *b = a->blk;
        a->blk = b->prev;
        if (b->size == BLK_FIRST && nspare < SPARE_MAX) {
            spare[nspare++] = b;
        } else {
            free(b);
        }
    }
    a->used = 0;
    a->first_off = 0;
}

size_t
vd_arena_thread_trim(void)
{
    size_t freed = 0;
    for (; nspare_low && nspare; nspare_low--) {
        free(spare[--nspare]);
        freed += BLK_FIRST;
    }
    nspare_low = nspare;
    return freed;
}

void
vd_arena_thread_cleanup(void)
{
    while (nspare) {
        free(spare[--nspare]);
    }
    nspare_low = 0;
}
