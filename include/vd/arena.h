/* SPDX-License-Identifier: MIT */
/* Per-request bump allocator with a hard cap (varnish workspace + nginx pool). Everything in it
 * is freed in one call; nothing is freed individually. Allocation fails (NULL) past the cap. */
#ifndef VD_ARENA_H
#define VD_ARENA_H

#include <stddef.h>

#include "vd/common.h"

struct vd_arena_blk;

/* The inline first block. The arena lives in struct vd_txn, which the block cache (vd/mcache.h)
 * serves from its 2 KiB class: 1,488 bytes fill that class, and hold a proxied request's
 * fields and the response's field table, so most exchanges allocate nothing more. */
#define VD_ARENA_FIRST 1488

struct vd_arena {
    struct vd_arena_blk *blk;      /* current block, linked to older ones */
    size_t used;                   /* bytes handed out, all blocks */
    size_t max;                    /* cap on @used */
    uint8_t first[VD_ARENA_FIRST]; /* inline first block: small requests never call malloc */
    size_t first_off;
};

void vd_arena_init(struct vd_arena *a, size_t max);

/* Returns 16-byte aligned memory or NULL when the cap is reached or malloc fails. */
void *vd_arena_alloc(struct vd_arena *a, size_t n);

/* Copies @n bytes (and a NUL) into the arena; NULL on failure. */
char *vd_arena_dup(struct vd_arena *a, const void *p, size_t n);

/* Frees all blocks (back to the calling thread's block cache, vd/mcache.h); @a may be reused
 * after vd_arena_init. */
void vd_arena_free(struct vd_arena *a);

#endif
