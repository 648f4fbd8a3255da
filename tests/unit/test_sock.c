/* SPDX-License-Identifier: MIT */
/* Unit tests for src/net/sock.c: the per-worker choice between sendfile and a write from the
 * mapping (vd_sendpick). */
#include "vd/config.h"

#include <stdint.h>

#include "vd/sock.h"
#include "vd_test.h"

#define MIB (1u << 20)

/* Records @n sends of 1 MiB by @way at @ns each. */
static void
feed(struct vd_sendpick *sp, enum vd_send_way way, unsigned n, uint64_t ns)
{
    for (unsigned i = 0; i < n; i++) {
        vd_sendpick_record(sp, way, MIB, ns);
    }
}

static void
test_sendpick_warms_both_ways(void **state)
{
    (void)state;
    struct vd_sendpick sp = {0};
    /* Until each way has VD_SENDPICK_WARM samples: the one with fewer, sendfile on a tie. */
    for (unsigned i = 0; i < 2 * VD_SENDPICK_WARM; i++) {
        enum vd_send_way w = vd_sendpick_choose(&sp);
        assert_int_equal(w, i % 2 == 0 ? VD_SEND_SENDFILE : VD_SEND_WRITE);
        vd_sendpick_record(&sp, w, MIB, w == VD_SEND_SENDFILE ? 300000 : 150000);
    }
    assert_int_equal(sp.samples[VD_SEND_SENDFILE], VD_SENDPICK_WARM);
    assert_int_equal(sp.samples[VD_SEND_WRITE], VD_SENDPICK_WARM);
    assert_int_equal(sp.cost[VD_SEND_SENDFILE], 300000);
    assert_int_equal(sp.cost[VD_SEND_WRITE], 150000);
    /* A send that moved nothing (socket full at once) is not a sample: the same way again. */
    struct vd_sendpick cold = {0};
    assert_int_equal(vd_sendpick_choose(&cold), VD_SEND_SENDFILE);
    vd_sendpick_record(&cold, VD_SEND_SENDFILE, 0, 5000);
    vd_sendpick_record(&cold, VD_SEND_SENDFILE, VD_SENDPICK_MIN_SEND - 1, 5000);
    assert_int_equal(cold.samples[VD_SEND_SENDFILE], 0);
    assert_int_equal(vd_sendpick_choose(&cold), VD_SEND_SENDFILE);
}

static void
test_sendpick_keeps_the_cheaper_and_probes(void **state)
{
    (void)state;
    struct vd_sendpick sp = {0};
    feed(&sp, VD_SEND_SENDFILE, VD_SENDPICK_WARM, 300000);
    feed(&sp, VD_SEND_WRITE, VD_SENDPICK_WARM, 150000);
    unsigned writes = 0, sendfiles = 0;
    for (unsigned i = 0; i < 4 * VD_SENDPICK_PROBE; i++) {
        enum vd_send_way w = vd_sendpick_choose(&sp);
        if (sp.picks % VD_SENDPICK_PROBE == 0) {
            assert_int_equal(w, VD_SEND_SENDFILE); /* the probe of the other way */
            sendfiles++;
        } else {
            assert_int_equal(w, VD_SEND_WRITE);
            writes++;
        }
    }
    assert_int_equal(sendfiles, 4);
    assert_int_equal(writes, 4 * VD_SENDPICK_PROBE - 4);

    /* Costs are per byte: a half-size send at half the time costs the same. */
    struct vd_sendpick half = {0};
    vd_sendpick_record(&half, VD_SEND_WRITE, MIB / 2, 75000);
    assert_int_equal(half.cost[VD_SEND_WRITE], 150000);
}

static void
test_sendpick_follows_a_change(void **state)
{
    (void)state;
    struct vd_sendpick sp = {0};
    feed(&sp, VD_SEND_SENDFILE, VD_SENDPICK_WARM, 300000);
    feed(&sp, VD_SEND_WRITE, VD_SENDPICK_WARM, 150000);
    /* Writes get dear (the machine changed): their average follows by 1/8 per sample, and the
     * choice turns to sendfile once it passes sendfile's. */
    unsigned n = 0;
    while (vd_sendpick_choose(&sp) == VD_SEND_WRITE || sp.picks % VD_SENDPICK_PROBE == 0) {
        vd_sendpick_record(&sp, VD_SEND_WRITE, MIB, 600000);
        assert_true(++n < 20);
    }
    assert_true(sp.cost[VD_SEND_WRITE] > sp.cost[VD_SEND_SENDFILE]);
    assert_true(n >= 3); /* one dear send does not flip it */
    /* Falling costs are followed the same way. */
    vd_sendpick_record(&sp, VD_SEND_SENDFILE, MIB, 100000);
    assert_int_equal(sp.cost[VD_SEND_SENDFILE], 300000 - (300000 - 100000) / 8);
    /* A send of a second or more (stopped, preempted) is not a sample. */
    uint64_t before = sp.cost[VD_SEND_SENDFILE];
    vd_sendpick_record(&sp, VD_SEND_SENDFILE, MIB, 1000000000u);
    assert_int_equal(sp.cost[VD_SEND_SENDFILE], before);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sendpick_warms_both_ways),
        cmocka_unit_test(test_sendpick_keeps_the_cheaper_and_probes),
        cmocka_unit_test(test_sendpick_follows_a_change),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
