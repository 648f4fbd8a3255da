/* SPDX-License-Identifier: MIT */
/* Bump allocator: an inline first block, then heap blocks of growing size up to the cap. The
 * blocks come from the per-thread block cache (vd/mcache.h) and are sized to fill its classes
 * exactly (4 KiB, 8 KiB, ...), so most requests that outgrow the inline block reuse a block a
 * finished request gave back instead of a malloc and free of 4 KiB. */
#include "vd/config.h"

#include <string.h>

#include "vd/arena.h"
#include "vd/mcache.h"

struct vd_arena_blk {
    struct vd_arena_blk *prev;
    size_t size, off;
    _Alignas(16) uint8_t data[];
};

#define BLK_FIRST 4096 /* the first heap block, header included */

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
        size_t total = a->blk ? (sizeof(struct vd_arena_blk) + a->blk->size) * 2 : BLK_FIRST;
        while (total - sizeof(struct vd_arena_blk) < n) {
            total *= 2;
        }
        struct vd_arena_blk *b = vd_mc_alloc(total);
        if (!b) {
            return NULL;
        }
        b->prev = a->blk;
        b->size = total - sizeof(*b);
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
        vd_mc_free(b);
    }
    a->used = 0;
    a->first_off = 0;
}
