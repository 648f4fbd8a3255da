/* SPDX-License-Identifier: MIT */
/* The per-worker timer queue behind vd/ltimer.h: a binary min-heap of timers keyed on the loop
 * time their slot comes due, and one libuv timer armed for the earliest. */
#include "vd/config.h"

#include <stdlib.h>

#include "vd/err.h"
#include "vd/ltimer.h"

#define HEAP_MIN 64

static void fire(uv_timer_t *uv);

static inline bool
before(const struct vd_ltimer *a, const struct vd_ltimer *b)
{
    return a->due < b->due;
}

static inline void
place(struct vd_timerq *q, uint32_t i, struct vd_ltimer *t)
{
    q->heap[i] = t;
    t->idx = i + 1;
}

static void
sift_up(struct vd_timerq *q, uint32_t i)
{
    struct vd_ltimer *t = q->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!before(t, q->heap[p])) {
            break;
        }
        place(q, i, q->heap[p]);
        i = p;
    }
    place(q, i, t);
}

static void
sift_down(struct vd_timerq *q, uint32_t i)
{
    struct vd_ltimer *t = q->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= q->n) {
            break;
        }
        if (c + 1 < q->n && before(q->heap[c + 1], q->heap[c])) {
            c++;
        }
        if (!before(q->heap[c], t)) {
            break;
        }
        place(q, i, q->heap[c]);
        i = c;
    }
    place(q, i, t);
}

static void
heap_remove(struct vd_timerq *q, struct vd_ltimer *t)
{
    uint32_t i = t->idx - 1;
    t->idx = 0;
    struct vd_ltimer *last = q->heap[--q->n];
    if (i == q->n) {
        return;
    }
    place(q, i, last);
    sift_down(q, i);
    sift_up(q, last->idx - 1);
}

/* Arms the libuv timer for the earliest slot when that is earlier than what it is armed for
 * (@force: re-arm or stop to match the heap exactly). */
static void
rearm(struct vd_timerq *q, bool force)
{
    if (q->n == 0) {
        if (force && q->armed_for != UINT64_MAX) {
            uv_timer_stop(&q->uv);
            q->armed_for = UINT64_MAX;
        }
        return;
    }
    uint64_t due = q->heap[0]->due;
    if (!force && due >= q->armed_for) {
        return;
    }
    uint64_t now = uv_now(q->uv.loop);
    uv_timer_start(&q->uv, fire, due > now ? due - now : 0, 0);
    q->armed_for = due;
}

static void
fire(uv_timer_t *uv)
{
    struct vd_timerq *q = uv->data;
    uint64_t now = uv_now(uv->loop);
    q->armed_for = UINT64_MAX;
    while (q->n && q->heap[0]->due <= now) {
        struct vd_ltimer *t = q->heap[0];
        if (t->deadline == 0) {
            heap_remove(q, t); /* cleared since */
        } else if (t->deadline > now) {
            t->due = t->deadline; /* moved later since: wait for the rest */
            sift_down(q, 0);
        } else {
            heap_remove(q, t);
            t->deadline = 0;
            t->cb(t); /* may set, clear or release any timer, this one included */
        }
    }
    rearm(q, true);
}

int
vd_timerq_init(struct vd_timerq *q, uv_loop_t *loop)
{
    q->heap = NULL;
    q->n = q->cap = q->reserved = 0;
    q->armed_for = UINT64_MAX;
    int r = uv_timer_init(loop, &q->uv);
    q->uv.data = q;
    return r;
}

void
vd_timerq_close(struct vd_timerq *q)
{
    uv_timer_stop(&q->uv);
    q->armed_for = 0; /* never armed again: rearm only ever moves it earlier */
    uv_close((uv_handle_t *)&q->uv, NULL);
}

void
vd_timerq_free(struct vd_timerq *q)
{
    free(q->heap);
    q->heap = NULL;
    q->n = q->cap = q->reserved = 0;
}

int
vd_ltimer_init(struct vd_ltimer *t, struct vd_timerq *q, vd_ltimer_cb cb)
{
    if (q->reserved == q->cap) {
        uint32_t ncap = q->cap ? q->cap * 2 : HEAP_MIN;
        struct vd_ltimer **h = realloc(q->heap, sizeof(*h) * ncap);
        if (!h) {
            return VD_ENOMEM;
        }
        q->heap = h;
        q->cap = ncap;
    }
    q->reserved++;
    t->q = q;
    t->cb = cb;
    t->deadline = t->due = 0;
    t->idx = 0;
    return 0;
}

void
vd_ltimer_release(struct vd_ltimer *t)
{
    if (!t->q) {
        return;
    }
    if (t->idx) {
        heap_remove(t->q, t);
    }
    t->deadline = 0;
    t->q->reserved--;
    t->q = NULL;
}

void
vd_ltimer_set(struct vd_ltimer *t, uint64_t ms)
{
    if (ms == 0) {
        t->deadline = 0; /* its slot, if any, is dropped when it comes due */
        return;
    }
    struct vd_timerq *q = t->q;
    t->deadline = uv_now(q->uv.loop) + ms;
    if (t->idx == 0) {
        t->due = t->deadline;
        place(q, q->n++, t); /* q->n < q->cap: every timer has its slot reserved */
        sift_up(q, q->n - 1);
    } else if (t->due > t->deadline) {
        t->due = t->deadline;
        sift_up(q, t->idx - 1);
    } else {
        return; /* the earlier slot stays; noticed when it comes due */
    }
    rearm(q, false);
}
