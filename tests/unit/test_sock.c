/* SPDX-License-Identifier: MIT */
/* Unit tests for src/net/sock.c: the per-worker choice between sendfile and a write from the
 * mapping (vd_sendpick). */
#include "vd/config.h"

#include <stdbool.h>
#include <stdint.h>

#include "vd/sock.h"
#include "vd_test.h"

#define MIB (1u << 20)
#define MS  UINT64_C(1000000)

/* The clocks the tests drive: thread CPU and wall time, in ns. */
struct clk {
    uint64_t cpu, wall;
};

/* Runs one span: picks the way, then sends VD_SENDPICK_SPAN bytes 8 MiB at a time, each MiB
 * costing @sf_ns (sendfile) or @wr_ns (the write) of CPU and 1 ms of wall time. Checks the way
 * holds for the whole span and returns it. */
static enum vd_send_way
span(struct vd_sendpick *sp, struct clk *k, uint64_t sf_ns, uint64_t wr_ns)
{
    enum vd_send_way w = vd_sendpick_choose(sp);
    for (unsigned i = 0; i < VD_SENDPICK_SPAN / (8 * MIB); i++) {
        assert_true(sp->open);
        assert_int_equal(vd_sendpick_choose(sp), w);
        k->cpu += 8 * (w == VD_SEND_SENDFILE ? sf_ns : wr_ns);
        k->wall += 8 * MS;
        vd_sendpick_sent_at(sp, 8 * MIB, k->cpu, k->wall);
    }
    assert_false(sp->open);
    return w;
}

/* The way of exploring step @s: pairs, sendfile first in even pairs, the write in odd ones. */
static enum vd_send_way
explore_way(unsigned s)
{
    bool first = s % 2 == 0, even = (s / 2) % 2 == 0;
    return first == even ? VD_SEND_SENDFILE : VD_SEND_WRITE;
}

static void
test_sendpick_explores_in_pairs_then_keeps_the_cheaper(void **state)
{
    (void)state;
    struct vd_sendpick sp = {0};
    struct clk k = {1000 * MS, 5000 * MS};
    for (unsigned s = 0; s < 2 * VD_SENDPICK_PAIRS; s++) {
        assert_int_equal(sp.step, s);
        assert_int_equal(span(&sp, &k, 300000, 150000), explore_way(s));
    }
    /* Each way's cost is the thread's CPU per MiB over the second half of its last span. */
    assert_int_equal(sp.cost[VD_SEND_SENDFILE], 300000);
    assert_int_equal(sp.cost[VD_SEND_WRITE], 150000);
    assert_int_equal(sp.votes, VD_SENDPICK_PAIRS);
    assert_int_equal(sp.votes_write, VD_SENDPICK_PAIRS);
    assert_int_equal(sp.decided, 1);
    assert_int_equal(sp.best, VD_SEND_WRITE);
    /* Then the cheaper for VD_SENDPICK_EXPLOIT spans, whatever they would cost now, and no
     * clock is needed there (cost stays as measured). */
    for (unsigned i = 0; i < VD_SENDPICK_EXPLOIT; i++) {
        assert_int_equal(span(&sp, &k, 1, 999999), VD_SEND_WRITE);
    }
    assert_int_equal(sp.cost[VD_SEND_WRITE], 150000);
    assert_int_equal(sp.spans, 2 * VD_SENDPICK_PAIRS + VD_SENDPICK_EXPLOIT);
    /* A new cycle explores again, from fresh votes, and follows the change. */
    assert_int_equal(sp.step, 0);
    for (unsigned s = 0; s < 2 * VD_SENDPICK_PAIRS; s++) {
        assert_int_equal(span(&sp, &k, 200000, 500000), explore_way(s));
    }
    assert_int_equal(sp.votes_write, 0);
    assert_int_equal(sp.best, VD_SEND_SENDFILE);
    assert_int_equal(sp.decided, 2);
}

static void
test_sendpick_decides_by_most_pairs(void **state)
{
    (void)state;
    /* The write clearly cheaper in 2 pairs of 5 (sendfile much dearer in those), sendfile in
     * the other 3: the majority of pairs decides, not the sum. */
    struct vd_sendpick sp = {0};
    struct clk k = {0, 0};
    for (unsigned s = 0; s < 2 * VD_SENDPICK_PAIRS; s++) {
        bool dear = s / 2 < 2;
        span(&sp, &k, dear ? 900000 : 200000, 250000);
    }
    assert_int_equal(sp.votes, VD_SENDPICK_PAIRS);
    assert_int_equal(sp.votes_write, 2);
    assert_int_equal(sp.best, VD_SEND_SENDFILE);

    /* A write only slightly cheaper in every pair (85 % of sendfile's cost) gets no vote: it must
     * be at most VD_SENDPICK_MARGIN %; at exactly that it does. */
    struct vd_sendpick near = {0};
    for (unsigned s = 0; s < 2 * VD_SENDPICK_PAIRS; s++) {
        span(&near, &k, 200000, 170000);
    }
    assert_int_equal(near.votes, VD_SENDPICK_PAIRS);
    assert_int_equal(near.votes_write, 0);
    assert_int_equal(near.best, VD_SEND_SENDFILE);
    struct vd_sendpick clear = {0};
    for (unsigned s = 0; s < 2 * VD_SENDPICK_PAIRS; s++) {
        span(&clear, &k, 200000, 200000 * VD_SENDPICK_MARGIN / 100);
    }
    assert_int_equal(clear.votes_write, VD_SENDPICK_PAIRS);
    assert_int_equal(clear.best, VD_SEND_WRITE);
}

static void
test_sendpick_measures_the_second_half_only(void **state)
{
    (void)state;
    struct vd_sendpick sp = {0};
    assert_int_equal(vd_sendpick_choose(&sp), VD_SEND_SENDFILE);
    /* The first half costs what it costs (the connections settle): not counted. */
    vd_sendpick_sent_at(&sp, 0, 10, 10); /* socket full at once: nothing */
    vd_sendpick_sent_at(&sp, VD_SENDPICK_SETTLE - 1, 10, 10);
    assert_false(sp.timing);
    /* The send crossing the half mark starts the clock at its end; its bytes past the mark
     * are dropped (they were sent before the clock started). */
    vd_sendpick_sent_at(&sp, MIB, 7000 * MS, 100 * MS);
    assert_true(sp.timing);
    assert_int_equal(sp.bytes, VD_SENDPICK_SETTLE);
    uint64_t rest = VD_SENDPICK_SPAN - VD_SENDPICK_SETTLE;
    vd_sendpick_sent_at(&sp, rest, 7000 * MS + (rest >> 20) * 250000, 200 * MS);
    assert_false(sp.open);
    assert_int_equal(sp.cost[VD_SEND_SENDFILE], 250000);
    assert_int_equal(sp.step, 1);

    /* One send over the whole second half: nothing measured, the pair does not vote. */
    assert_int_equal(vd_sendpick_choose(&sp), VD_SEND_WRITE);
    vd_sendpick_sent_at(&sp, VD_SENDPICK_SPAN, 9000 * MS, 300 * MS);
    assert_false(sp.open);
    assert_int_equal(sp.cost[VD_SEND_WRITE], 0);
    assert_int_equal(sp.votes, 0);

    /* A measured half over more than VD_SENDPICK_WALL_MS of wall time (bodies were rare, the
     * thread did mostly other work): no cost, no vote. */
    assert_int_equal(vd_sendpick_choose(&sp), VD_SEND_WRITE); /* pair 2: the write first */
    vd_sendpick_sent_at(&sp, VD_SENDPICK_SETTLE, 9000 * MS, 300 * MS);
    vd_sendpick_sent_at(&sp, rest, 9100 * MS, (300 + VD_SENDPICK_WALL_MS + 1) * MS);
    assert_int_equal(sp.cost[VD_SEND_WRITE], 0);
    assert_false(sp.pair_ok);
    /* Bytes outside a span (none chosen) are not counted. */
    vd_sendpick_sent_at(&sp, MIB, 0, 0);
    assert_false(sp.open);

    /* With no pair voting in a cycle, the last choice stays: sendfile at first. */
    struct vd_sendpick idle = {0};
    struct clk k = {0, 0};
    for (unsigned s = 0; s < 2 * VD_SENDPICK_PAIRS; s++) {
        enum vd_send_way w = vd_sendpick_choose(&idle);
        vd_sendpick_sent_at(&idle, VD_SENDPICK_SETTLE, k.cpu, k.wall);
        k.wall += (uint64_t)(VD_SENDPICK_WALL_MS + 1) * MS;
        k.cpu += 5 * MS;
        vd_sendpick_sent_at(&idle, VD_SENDPICK_SPAN - VD_SENDPICK_SETTLE, k.cpu, k.wall);
        assert_int_equal(w, explore_way(s));
    }
    assert_int_equal(idle.decided, 0);
    assert_int_equal(vd_sendpick_choose(&idle), VD_SEND_SENDFILE);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sendpick_explores_in_pairs_then_keeps_the_cheaper),
        cmocka_unit_test(test_sendpick_decides_by_most_pairs),
        cmocka_unit_test(test_sendpick_measures_the_second_half_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
