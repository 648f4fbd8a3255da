/* SPDX-License-Identifier: MIT */
/* Lazy one-shot timers on a per-worker queue: one libuv timer per worker drives a binary heap of
 * struct vd_ltimer, so a connection carries 40 bytes of timer state instead of a 152-byte
 * uv_timer_t (idle memory counts). The owner sets and clears one deadline many times per
 * exchange; the heap is touched only when the deadline moves earlier, and a cleared or later
 * deadline is noticed when its old position comes due. Every timer holds a reserved heap slot
 * from vd_ltimer_init to vd_ltimer_release, so setting one never allocates or fails. */
#ifndef VD_LTIMER_H
#define VD_LTIMER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct vd_ltimer;
typedef void (*vd_ltimer_cb)(struct vd_ltimer *t);

/* One per worker loop. */
struct vd_timerq {
    uv_timer_t uv;
    struct vd_ltimer **heap; /* min-heap on due */
    uint32_t n, cap;
    uint32_t reserved;  /* timers initialised and not released: the heap can hold them all */
    uint64_t armed_for; /* loop time uv fires at; UINT64_MAX when stopped */
};

struct vd_ltimer {
    struct vd_timerq *q;
    vd_ltimer_cb cb;
    uint64_t deadline; /* loop time the timeout expires; 0: none */
    uint64_t due;      /* heap key while in the heap (<= deadline unless cleared) */
    uint32_t idx;      /* heap position + 1; 0: not in the heap */
};

int vd_timerq_init(struct vd_timerq *q, uv_loop_t *loop);
/* Closes the libuv timer (the loop must still run once); timers may still be set and released,
 * they just never fire. */
void vd_timerq_close(struct vd_timerq *q);
/* Frees the heap once the loop has ended. */
void vd_timerq_free(struct vd_timerq *q);

/* Reserves a heap slot for @t: 0, or VD_ENOMEM. @cb runs once the deadline has passed (the
 * deadline is cleared first; @cb may set it again). */
int vd_ltimer_init(struct vd_ltimer *t, struct vd_timerq *q, vd_ltimer_cb cb);

/* Takes @t off the queue and gives its slot back; call before freeing its owner. */
void vd_ltimer_release(struct vd_ltimer *t);

/* Sets the timeout to @ms from now (loop time), 0 to clear it. */
void vd_ltimer_set(struct vd_ltimer *t, uint64_t ms);

/* True while a timeout is set. */
static inline bool
vd_ltimer_pending(const struct vd_ltimer *t)
{
    return t->deadline != 0;
}

#endif
