/* SPDX-License-Identifier: MIT */
/* Unit tests for src/core: errors, escaping, arena, buffers, dbuf. */
#include "vd/config.h"

#include <string.h>

#include "vd/arena.h"
#include "vd/buf.h"
#include "vd/err.h"
#include "vd/log.h"
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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_names), cmocka_unit_test(test_escape),
        cmocka_unit_test(test_arena),     cmocka_unit_test(test_buf_pool),
        cmocka_unit_test(test_dbuf_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
