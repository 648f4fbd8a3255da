/* SPDX-License-Identifier: MIT */
/* Bump allocator: an inline first block, then malloc'd blocks of growing size up to the cap. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "vd/arena.h"

struct vd_arena_blk {
    struct vd_arena_blk *prev;
    size_t size, off;
    _Alignas(16) uint8_t data[];
};

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
        size_t sz = a->blk ? a->blk->size * 2 : 4096;
        while (sz < n) {
            sz *= 2;
        }
        struct vd_arena_blk *b = malloc(sizeof(*b) + sz);
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
        free(b);
    }
    a->used = 0;
    a->first_off = 0;
}
