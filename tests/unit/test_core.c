/* SPDX-License-Identifier: MIT */
/* Unit tests for src/core: errors, escaping, arena, buffers, dbuf. */
#include "vd/config.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "vd/arena.h"
#include "vd/buf.h"
#include "vd/err.h"
#include "vd/log.h"
#include "vd/mcache.h"
#include "vd_test.h"

static void
test_err_names(void **state)
{
    (void)state;
    assert_string_equal(vd_err_name(VD_EBADREQ), "VD_EBADREQ");
    assert_string_equal(vd_strerror(VD_ENOTFOUND), "name does not resolve");
    assert_string_equal(vd_err_name(-ECONNREFUSED), "ECONNREFUSED");
    assert_string_equal(vd_strerror(-ECONNREFUSED), "Connection refused");
}

static void
test_escape(void **state)
{
    char out[64];
    (void)state;
    const uint8_t in[] = "a\"b\\c\r\n\x01\xff";
    size_t n = vd_log_escape(out, sizeof(out), in, sizeof(in) - 1);
    assert_string_equal(out, "a\\x22b\\x5cc\\x0d\\x0a\\x01\\xff");
    assert_int_equal(n, strlen(out));
    /* Truncation never splits an escape and always terminates. */
    n = vd_log_escape(out, 5, in, sizeof(in) - 1);
    assert_string_equal(out, "a");
    /* JSON style: \u00HH, still never cut in half by the cap. */
    n = vd_log_escape_as(out, sizeof(out), in, 3, true);
    assert_string_equal(out, "a\\u0022b");
    assert_int_equal(n, 8);
    n = vd_log_escape_as(out, 7, in, 3, true);
    assert_string_equal(out, "a");
}

static void
test_arena(void **state)
{
    struct vd_arena a;
    (void)state;
    vd_arena_init(&a, 10000);
    char *s = vd_arena_dup(&a, "hello", 5);
    assert_string_equal(s, "hello");
    assert_int_equal((uintptr_t)s % 16, 0);
    void *big = vd_arena_alloc(&a, 5000);
    assert_non_null(big);
    memset(big, 1, 5000);
    assert_null(vd_arena_alloc(&a, 6000)); /* over the cap */
    vd_arena_free(&a);
    assert_int_equal(a.used, 0);
}

static void
test_buf_pool(void **state)
{
    struct vd_buf b = {0}, c = {0};
    (void)state;
    uint64_t before = vd_buf_chunks_in_use();
    assert_int_equal(vd_buf_acquire(&b), 0);
    assert_int_equal(vd_buf_chunks_in_use(), before + 1);
    memcpy(vd_buf_tail(&b), "abcdef", 6);
    b.len = 6;
    vd_buf_consume(&b, 2);
    vd_buf_compact(&b);
    assert_memory_equal(vd_buf_data(&b), "cdef", 4);
    assert_int_equal(vd_buf_room(&b), VD_BUF_CHUNK - 4);
    vd_buf_set_budget(before + 1);
    assert_int_equal(vd_buf_acquire(&c), VD_ENOMEM);
    vd_buf_set_budget(0);
    vd_buf_release(&b);
    assert_null(b.base);
    assert_int_equal(vd_buf_chunks_in_use(), before);
    vd_buf_thread_cleanup();
}

static void
test_dbuf_cap(void **state)
{
    struct vd_dbuf d;
    (void)state;
    vd_dbuf_init(&d, 8);
    assert_int_equal(vd_dbuf_add(&d, "1234", 4), 0);
    assert_int_equal(vd_dbuf_addf(&d, "%d", 567), 0);
    assert_string_equal(d.p, "1234567");
    assert_int_equal(vd_dbuf_add(&d, "89", 2), VD_ETOOBIG);
    assert_string_equal(d.p, "1234567");
    vd_dbuf_free(&d);
}

static void *
mc_free_elsewhere(void *p)
{
    vd_mc_free(p); /* a block freed on another thread than its own */
    vd_mc_thread_cleanup();
    return NULL;
}

/* Empties the calling thread's cache and keeps it caching: two trims with nothing taken
 * between them give back every block. */
static void
mc_drain(void)
{
    (void)vd_mc_thread_trim();
    (void)vd_mc_thread_trim();
}

static void
test_mcache(void **state)
{
    (void)state;
    mc_drain();
    assert_int_equal(vd_mc_thread_cached(), 0);
    /* calloc zeroes, also a block that was used before */
    uint8_t *a = vd_mc_alloc(100);
    assert_non_null(a);
    memset(a, 0xab, 100);
    vd_mc_free(a);
    uint8_t *z = vd_mc_calloc(10, 10);
    assert_non_null(z);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(z[i], 0);
    }
    if (vd_mc_caching()) {
        assert_ptr_equal(z, a); /* same class: the cached block came back */
        assert_int_equal(vd_mc_thread_cached(), 0);
    }
    assert_int_equal((uintptr_t)z % 16, 0);
    /* realloc keeps the contents across classes and to and from big blocks */
    for (int i = 0; i < 100; i++) {
        z[i] = (uint8_t)i;
    }
    uint8_t *r = vd_mc_realloc(z, 5000);
    assert_non_null(r);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(r[i], i);
    }
    r[4999] = 7;
    r = vd_mc_realloc(r, 100000); /* over the largest class */
    assert_non_null(r);
    assert_int_equal(r[99], 99);
    assert_int_equal(r[4999], 7);
    r = vd_mc_realloc(r, 40);
    assert_non_null(r);
    assert_int_equal(r[39], 39);
    vd_mc_free(r);
    vd_mc_free(vd_mc_realloc(NULL, 0));
    assert_null(vd_mc_calloc(SIZE_MAX / 2, 4)); /* overflow */
    vd_mc_free(NULL);

    /* the cache is bounded: many blocks of one class do not all stay */
    enum { N = 3000 };

    static void *many[N];
    mc_drain();
    for (int i = 0; i < N; i++) {
        many[i] = vd_mc_alloc(24);
        assert_non_null(many[i]);
    }
    for (int i = 0; i < N; i++) {
        vd_mc_free(many[i]);
    }
    assert_true(vd_mc_thread_cached() <= 1024);
    if (vd_mc_caching()) {
        assert_true(vd_mc_thread_cached() > 0);
    }
    /* a block may be freed on another thread */
    void *x = vd_mc_alloc(3000);
    assert_non_null(x);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, mc_free_elsewhere, x), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    /* a trim gives back only what stayed unused since the previous one */
    mc_drain();
    void *k1 = vd_mc_alloc(200), *k2 = vd_mc_alloc(200);
    vd_mc_free(k1);
    vd_mc_free(k2);
    (void)vd_mc_thread_trim(); /* both were taken since the last trim: kept */
    if (vd_mc_caching()) {
        assert_int_equal(vd_mc_thread_cached(), 2);
    }
    vd_mc_free(vd_mc_alloc(200)); /* one taken and given back: one unused all along */
    (void)vd_mc_thread_trim();
    if (vd_mc_caching()) {
        assert_int_equal(vd_mc_thread_cached(), 1);
    }
    /* after the thread's cleanup nothing is cached on it any more (thread-exit handlers) */
    vd_mc_thread_cleanup();
    assert_int_equal(vd_mc_thread_cached(), 0);
    vd_mc_free(vd_mc_alloc(64));
    assert_int_equal(vd_mc_thread_cached(), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_names), cmocka_unit_test(test_escape),
        cmocka_unit_test(test_arena),     cmocka_unit_test(test_buf_pool),
        cmocka_unit_test(test_dbuf_cap),  cmocka_unit_test(test_mcache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
