/* SPDX-License-Identifier: MIT */
/* Unit tests for the per-worker timer queue (src/net/ltimer.c) on a real libuv loop. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "vd/common.h"
#include "vd/ltimer.h"
#include "vd_test.h"

struct owner {
    struct vd_ltimer t;
    int id;
    int fired;
    uint64_t at;           /* loop time of the last firing */
    uint64_t again_ms;     /* set again from the callback */
    struct owner *release; /* released from the callback */
};

static int order[64];
static int norder;

static void
on_fire(struct vd_ltimer *t)
{
    struct owner *o = VD_CONTAINER_OF(t, struct owner, t);
    o->fired++;
    o->at = uv_now(t->q->uv.loop);
    if (norder < 64) {
        order[norder++] = o->id;
    }
    if (o->release) {
        vd_ltimer_release(&o->release->t);
    }
    if (o->again_ms) {
        uint64_t ms = o->again_ms;
        o->again_ms = 0;
        vd_ltimer_set(t, ms);
    }
}

static void
run_until_idle(uv_loop_t *loop)
{
    /* The queue's timer keeps the loop alive while anything is pending. */
    uv_run(loop, UV_RUN_DEFAULT);
}

static void
test_ltimer_order_and_laziness(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct vd_timerq q;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(vd_timerq_init(&q, &loop), 0);

    enum { N = 100 };
    struct owner *o = calloc(N, sizeof(*o));
    assert_non_null(o);
    norder = 0;
    for (int i = 0; i < N; i++) {
        o[i].id = i;
        assert_int_equal(vd_ltimer_init(&o[i].t, &q, on_fire), 0); /* grows past 64 slots */
    }
    uint64_t t0 = uv_now(&loop);
    /* Deadlines in reverse order of index, some cleared, some moved earlier or later. */
    for (int i = 0; i < 10; i++) {
        vd_ltimer_set(&o[i].t, (uint64_t)(100 - i * 5)); /* 100, 95, ... 55 ms */
    }
    vd_ltimer_set(&o[10].t, 30);
    vd_ltimer_set(&o[10].t, 0); /* cleared: never fires */
    assert_false(vd_ltimer_pending(&o[10].t));
    vd_ltimer_set(&o[11].t, 20);
    vd_ltimer_set(&o[11].t, 120); /* moved later: fires at 120, not 20 */
    vd_ltimer_set(&o[12].t, 200);
    vd_ltimer_set(&o[12].t, 10); /* moved earlier: fires first */
    vd_ltimer_set(&o[13].t, 40);
    o[13].again_ms = 100; /* set again from its callback: fires twice */
    vd_ltimer_set(&o[14].t, 50);
    o[14].release = &o[15]; /* releases a pending timer from a callback */
    vd_ltimer_set(&o[15].t, 60);
    vd_ltimer_set(&o[16].t, 70);
    vd_ltimer_release(&o[16].t); /* released before it fires */
    assert_true(vd_ltimer_pending(&o[0].t));
    run_until_idle(&loop);

    int want[] = {12, 13, 14, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 13};
    assert_int_equal(norder, (int)(sizeof(want) / sizeof(want[0])));
    for (int i = 0; i < norder; i++) {
        assert_int_equal(order[i], want[i]);
    }
    assert_int_equal(o[10].fired, 0);
    assert_int_equal(o[15].fired, 0);
    assert_int_equal(o[16].fired, 0);
    assert_int_equal(o[13].fired, 2);
    /* Never early; the loop's clock has millisecond steps. */
    assert_true(o[12].at >= t0 + 10);
    assert_true(o[11].at >= t0 + 120);
    assert_true(o[0].at >= t0 + 100);
    assert_true(o[13].at >= t0 + 140);
    for (int i = 0; i < N; i++) {
        assert_false(vd_ltimer_pending(&o[i].t));
        vd_ltimer_release(&o[i].t); /* twice for 15 and 16: a no-op */
    }
    assert_int_equal(q.reserved, 0);
    assert_int_equal(q.n, 0);
    vd_timerq_close(&q);
    uv_run(&loop, UV_RUN_DEFAULT);
    vd_timerq_free(&q);
    assert_int_equal(uv_loop_close(&loop), 0);
    free(o);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ltimer_order_and_laziness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
