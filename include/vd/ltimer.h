/* SPDX-License-Identifier: MIT */
/* A lazy one-shot timer over a libuv timer: the owner sets and clears one deadline many times
 * per exchange, and the timer heap is touched only when the deadline moves earlier. A cleared
 * or later deadline is noticed when the libuv timer fires (vd_ltimer_due). */
#ifndef VD_LTIMER_H
#define VD_LTIMER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct vd_ltimer {
    uv_timer_t uv;     /* uv.data is the owner's; closed by the owner with uv_close */
    uint64_t deadline; /* loop time the timeout expires; 0: none */
    uint64_t due;      /* loop time uv is armed for, while it is active */
};

/* Sets the timeout to @ms from now (loop time), 0 to clear it; @cb is the libuv callback, which
 * must begin with vd_ltimer_due. */
static inline void
vd_ltimer_set(struct vd_ltimer *t, uint64_t ms, uv_timer_cb cb)
{
    if (ms == 0) {
        t->deadline = 0;
        return;
    }
    t->deadline = uv_now(t->uv.loop) + ms;
    if (!uv_is_active((uv_handle_t *)&t->uv) || t->due > t->deadline) {
        t->due = t->deadline;
        uv_timer_start(&t->uv, cb, ms, 0);
    }
}

/* True while a timeout is set. */
static inline bool
vd_ltimer_pending(const struct vd_ltimer *t)
{
    return t->deadline != 0;
}

/* At the top of @cb: true when the deadline has passed (it is cleared; the owner acts now);
 * false when it was cleared meanwhile, or moved later (the timer is re-armed for the rest). */
static inline bool
vd_ltimer_due(struct vd_ltimer *t, uv_timer_cb cb)
{
    if (t->deadline == 0) {
        return false;
    }
    uint64_t now = uv_now(t->uv.loop);
    if (now < t->deadline) {
        t->due = t->deadline;
        uv_timer_start(&t->uv, cb, t->deadline - now, 0);
        return false;
    }
    t->deadline = 0;
    return true;
}

#endif
