/* SPDX-License-Identifier: MIT */
/* The URI template helpers connect-udp (RFC 9298 §2) and connect-ip (RFC 9484 §3) share:
 * splitting a path along a two-variable template, percent-decoding, DNS name checks. */
#include "vd/config.h"

#include <string.h>

#include "../../src/proxy/masque-int.h"
#include "vd_test.h"

static struct vd_iov
iov(const char *s)
{
    return (struct vd_iov){(const uint8_t *)s, strlen(s)};
}

static void
assert_iov(struct vd_iov v, const char *want)
{
    assert_int_equal(v.len, strlen(want));
    assert_memory_equal(v.base, want, v.len);
}

static void
test_template_split(void **state)
{
    (void)state;
    const char *udp = "/.well-known/masque/udp/{target_host}/{target_port}/";
    struct vd_iov a = {0}, b = {0};
    assert_int_equal(vd__masque_template_split(udp, "{target_host}", "{target_port}",
                                               iov("/.well-known/masque/udp/192.0.2.6/443/"), &a,
                                               &b),
                     1);
    assert_iov(a, "192.0.2.6");
    assert_iov(b, "443");
    /* Still encoded; the host ends at the first "/" (the literal between the variables). */
    assert_int_equal(vd__masque_template_split(udp, "{target_host}", "{target_port}",
                                               iov("/.well-known/masque/udp/2001%3Adb8%3A%3A1/53/"),
                                               &a, &b),
                     1);
    assert_iov(a, "2001%3Adb8%3A%3A1");
    assert_iov(b, "53");
    /* Empty values are the caller's to refuse. */
    assert_int_equal(vd__masque_template_split(udp, "{target_host}", "{target_port}",
                                               iov("/.well-known/masque/udp//53/"), &a, &b),
                     1);
    assert_int_equal(a.len, 0);
    assert_iov(b, "53");
    assert_int_equal(vd__masque_template_split(udp, "{target_host}", "{target_port}",
                                               iov("/.well-known/masque/udp/h//"), &a, &b),
                     1);
    assert_iov(a, "h");
    assert_int_equal(b.len, 0);
    /* Another prefix: not this protocol. */
    assert_int_equal(vd__masque_template_split(udp, "{target_host}", "{target_port}",
                                               iov("/.well-known/masque/ip/x/1/"), &a, &b),
                     0);
    assert_int_equal(
        vd__masque_template_split(udp, "{target_host}", "{target_port}", iov("/.well"), &a, &b), 0);
    /* The prefix matches but the rest breaks the template. */
    assert_int_equal(vd__masque_template_split(udp, "{target_host}", "{target_port}",
                                               iov("/.well-known/masque/udp/h"), &a, &b),
                     -1);
    assert_int_equal(vd__masque_template_split(udp, "{target_host}", "{target_port}",
                                               iov("/.well-known/masque/udp/h/53"), &a, &b),
                     -1);
    /* A template without both variables, or none, matches nothing. */
    assert_int_equal(vd__masque_template_split("/udp/{target_host}/", "{target_host}",
                                               "{target_port}", iov("/udp/h/"), &a, &b),
                     0);
    assert_int_equal(vd__masque_template_split(NULL, "{target}", "{ipproto}", iov("/x"), &a, &b),
                     0);
    /* connect-ip's variables, and a query-style template with no suffix. */
    assert_int_equal(vd__masque_template_split("/ip?t={target}&p={ipproto}", "{target}",
                                               "{ipproto}", iov("/ip?t=10.0.0.0%2F8&p=*"), &a, &b),
                     1);
    assert_iov(a, "10.0.0.0%2F8");
    assert_iov(b, "*");
}

static void
test_pct_decode(void **state)
{
    (void)state;
    char out[64];
    const char *in = "2001%3Adb8%3a%3A1";
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, strlen(in), out, sizeof(out), 0),
                     11);
    assert_string_equal(out, "2001:db8::1");
    in = "Example.COM";
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, strlen(in), out, sizeof(out), 0),
                     11);
    assert_string_equal(out, "Example.COM");
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, strlen(in), out, sizeof(out),
                                           VD_MASQUE_PCT_LOWER),
                     11);
    assert_string_equal(out, "example.com");
    /* An encoded letter is lowered too. */
    in = "%41b";
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, strlen(in), out, sizeof(out),
                                           VD_MASQUE_PCT_LOWER),
                     2);
    assert_string_equal(out, "ab");
    /* '/': never literal; encoded only with VD_MASQUE_PCT_SLASH. */
    in = "10.0.0.0%2F8";
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, strlen(in), out, sizeof(out), 0),
                     -1);
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, strlen(in), out, sizeof(out),
                                           VD_MASQUE_PCT_SLASH),
                     10);
    assert_string_equal(out, "10.0.0.0/8");
    in = "10.0.0.0/8";
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, strlen(in), out, sizeof(out),
                                           VD_MASQUE_PCT_SLASH),
                     -1);
    /* Bad escapes, NUL, and no room for the terminator. */
    static const char *bad[] = {"a%", "a%4", "%4g", "%g4", "a%00b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(vd__masque_pct_decode((const uint8_t *)bad[i], strlen(bad[i]), out,
                                               sizeof(out), VD_MASQUE_PCT_SLASH),
                         -1);
    }
    in = "abcd";
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, 4, out, 4, 0), -1);
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, 4, out, 5, 0), 4);
    assert_string_equal(out, "abcd");
    assert_int_equal(vd__masque_pct_decode((const uint8_t *)in, 0, out, 1, 0), 0);
    assert_string_equal(out, "");
}

static void
test_name_valid(void **state)
{
    (void)state;
    assert_true(vd__masque_name_valid("example.com"));
    assert_true(vd__masque_name_valid("A-1.Example"));
    assert_false(vd__masque_name_valid(""));
    assert_false(vd__masque_name_valid("a_b"));
    assert_false(vd__masque_name_valid("2001:db8::1"));
    assert_false(vd__masque_name_valid("a b"));
    char name[256];
    memset(name, 'a', 253);
    name[253] = '\0';
    assert_true(vd__masque_name_valid(name));
    name[253] = 'a';
    name[254] = '\0';
    assert_false(vd__masque_name_valid(name));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template_split),
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_name_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
