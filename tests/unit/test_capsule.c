/* SPDX-License-Identifier: MIT */
/* Varints (RFC 9000 §16 and its Appendix A.1 examples) and capsule headers (RFC 9297 §3.2). */
#include "vd/config.h"

#include <string.h>

#include "vd/capsule.h"
#include "vd_test.h"

static void
test_rfc9000_examples(void **state)
{
    (void)state;

    static const struct {
        const char *hex;
        size_t n;
        uint64_t v;
    } ex[] = {
        {"\xc2\x19\x7c\x5e\xff\x14\xe8\x8c", 8, 151288809941952652ull},
        {"\x9d\x7f\x3e\x7d", 4, 494878333},
        {"\x7b\xbd", 2, 15293},
        {"\x25", 1, 37},
        {"\x40\x25", 2, 37}, /* non-minimal, still valid */
    };

    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        uint64_t v = 0;
        assert_int_equal(vd_varint_decode((const uint8_t *)ex[i].hex, ex[i].n, &v), ex[i].n);
        assert_true(v == ex[i].v);
        /* One byte short: need more. */
        assert_int_equal(vd_varint_decode((const uint8_t *)ex[i].hex, ex[i].n - 1, &v), 0);
    }
    uint8_t out[8];
    assert_int_equal(vd_varint_encode(out, 151288809941952652ull), 8);
    assert_memory_equal(out, "\xc2\x19\x7c\x5e\xff\x14\xe8\x8c", 8);
    assert_int_equal(vd_varint_encode(out, 494878333), 4);
    assert_memory_equal(out, "\x9d\x7f\x3e\x7d", 4);
    assert_int_equal(vd_varint_encode(out, 15293), 2);
    assert_memory_equal(out, "\x7b\xbd", 2);
    assert_int_equal(vd_varint_encode(out, 37), 1);
    assert_memory_equal(out, "\x25", 1);
}

static void
test_varint_boundaries(void **state)
{
    (void)state;
    static const uint64_t vals[] = {0,          63,           64, 16383, 16384, (1ull << 30) - 1,
                                    1ull << 30, VD_VARINT_MAX};
    static const size_t lens[] = {1, 1, 2, 2, 4, 4, 8, 8};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint8_t out[8];
        uint64_t back = 1;
        assert_int_equal(vd_varint_len(vals[i]), lens[i]);
        assert_int_equal(vd_varint_encode(out, vals[i]), lens[i]);
        assert_int_equal(vd_varint_decode(out, lens[i], &back), lens[i]);
        assert_true(back == vals[i]);
    }
    assert_int_equal(vd_varint_len(VD_VARINT_MAX + 1), 0);
    uint64_t v;
    assert_int_equal(vd_varint_decode((const uint8_t *)"", 0, &v), 0);
}

static void
test_capsule_headers(void **state)
{
    (void)state;
    struct vd_capsule_hdr h;
    /* DATAGRAM (type 0), length 6: context ID 0 and "hello". */
    const uint8_t dg[] = {0x00, 0x06, 0x00, 'h', 'e', 'l', 'l', 'o'};
    assert_int_equal(vd_capsule_hdr_parse(dg, sizeof(dg), &h), 1);
    assert_true(h.type == 0 && h.len == 6 && h.hdr_len == 2);
    assert_int_equal(vd_capsule_hdr_parse(dg, 1, &h), 0);
    /* A two-byte type and a four-byte length. */
    const uint8_t big[] = {0x40, 0x2a, 0x80, 0x01, 0x00, 0x00};
    assert_int_equal(vd_capsule_hdr_parse(big, sizeof(big), &h), 1);
    assert_true(h.type == 0x2a && h.len == 65536 && h.hdr_len == 6);
    assert_int_equal(vd_capsule_hdr_parse(big, 5, &h), 0);
    /* The writer: DATAGRAM, length payload + 1, context 0. */
    uint8_t out[24];
    assert_int_equal(vd_capsule_datagram_hdr(out, 5), 3);
    assert_memory_equal(out, "\x00\x06\x00", 3);
    assert_int_equal(vd_capsule_datagram_hdr(out, 65527), 6);
    assert_memory_equal(out, "\x00\x80\x00\xff\xf8\x00", 6);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc9000_examples),
        cmocka_unit_test(test_varint_boundaries),
        cmocka_unit_test(test_capsule_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
