/* SPDX-License-Identifier: MIT */
/* Payload memory: fixed-size chunks from a per-thread pool (counted globally), a linear buffer
 * over one chunk, and a capped string builder. Payload never lives in arenas. */
#ifndef VD_BUF_H
#define VD_BUF_H

#include <stdint.h>
#include <string.h>

#include "vd/common.h"
#include "vd/err.h"

#define VD_BUF_CHUNK 16384 /* bytes per pooled chunk */

/* A linear buffer over one pooled chunk; data is base[off .. off+len). base == NULL means no
 * chunk is held (idle connections hold none: that is what keeps them under 1 KiB). */
struct vd_buf {
    uint8_t *base;
    uint32_t cap; /* bytes in the chunk */
    uint32_t off; /* start of unread data */
    uint32_t len; /* bytes of unread data */
};

/* Takes a chunk from the calling thread's pool. Returns 0 or VD_ENOMEM (global budget reached). */
VD_MUST_CHECK int vd_buf_acquire(struct vd_buf *b);

/* Returns the chunk to the pool (no-op without one) and zeroes @b. */
void vd_buf_release(struct vd_buf *b);

/* Bytes of free space at the tail after compacting if needed. */
static inline uint8_t *
vd_buf_tail(struct vd_buf *b)
{
    return b->base + b->off + b->len;
}

static inline uint32_t
vd_buf_room(const struct vd_buf *b)
{
    return b->cap - b->off - b->len;
}

static inline const uint8_t *
vd_buf_data(const struct vd_buf *b)
{
    return b->base + b->off;
}

/* Consumes @n bytes from the head; releases nothing. */
static inline void
vd_buf_consume(struct vd_buf *b, uint32_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0) {
        b->off = 0;
    }
}

/* Moves the data into a private (non-pooled) allocation of @cap bytes, for a head that is
 * allowed to exceed one chunk. Returns 0 or VD_ENOMEM; @b is unchanged on failure. */
VD_MUST_CHECK int vd_buf_grow(struct vd_buf *b, uint32_t cap);

/* Moves unread data to the start of the chunk so the whole free space is at the tail. */
void vd_buf_compact(struct vd_buf *b);

/* Global accounting: chunks handed out now, and the budget (0 = unlimited). */
uint64_t vd_buf_chunks_in_use(void);
void vd_buf_set_budget(uint64_t max_chunks);

/* Frees the calling thread's cached chunks (call at thread exit). */
void vd_buf_thread_cleanup(void);

/* A capped, growable string builder (curl's dynbuf): never grows past @max. */
struct vd_dbuf {
    char *p;
    size_t len, cap, max;
};

void vd_dbuf_init(struct vd_dbuf *d, size_t max);
void vd_dbuf_free(struct vd_dbuf *d);
void vd_dbuf_reset(struct vd_dbuf *d);
/* The slow path of vd_dbuf_add: grows the buffer to take @len more bytes. Returns 0,
 * VD_ETOOBIG past the cap, or VD_ENOMEM. */
VD_MUST_CHECK int vd__dbuf_grow(struct vd_dbuf *d, size_t len);

/* Appends; returns 0, or VD_ETOOBIG past the cap, or VD_ENOMEM. The content stays NUL-terminated.
 * Inline: message heads are built from many short pieces, and the common case is one compare
 * and a memcpy. */
VD_MUST_CHECK static inline int
vd_dbuf_add(struct vd_dbuf *d, const void *data, size_t len)
{
    if (len > d->max - d->len) {
        return VD_ETOOBIG;
    }
    if (d->len + len + 1 > d->cap) {
        int r = vd__dbuf_grow(d, len);
        if (r < 0) {
            return r;
        }
    }
    memcpy(d->p + d->len, data, len);
    d->len += len;
    d->p[d->len] = '\0';
    return 0;
}

/* Writes @v in decimal at @out, which has room for 20 bytes; returns the length (no NUL). */
static inline size_t
vd_u64_dec(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

VD_MUST_CHECK int vd_dbuf_addf(struct vd_dbuf *d, const char *fmt, ...) VD_PRINTF(2, 3);

#endif
