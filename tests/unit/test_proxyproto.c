/* SPDX-License-Identifier: MIT */
/* PROXY protocol headers (haproxy.org proxy-protocol.txt): v1 lines and v2 binary headers, the
 * examples of the specification, every prefix of a valid header asking for more, and the
 * malformed headers a receiver must refuse. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "vd/err.h"
#include "vd/proxyproto.h"
#include "vd_test.h"

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static int
parse(const void *p, size_t n, struct vd_proxy_hdr *h)
{
    const char *why;
    int r = vd_proxyproto_parse(p, n, h, &why);
    if (r == VD_EPROTO) {
        assert_non_null(why);
    }
    return r;
}

/* Every proper prefix of a complete header asks for more. */
static void
assert_prefixes_incomplete(const uint8_t *p, size_t n)
{
    struct vd_proxy_hdr h;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(parse(p, i, &h), VD_EAGAIN);
    }
}

static void
assert_in4(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    char buf[INET_ADDRSTRLEN];
    assert_int_equal(a->sin_family, AF_INET);
    assert_string_equal(inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf)), ip);
    assert_int_equal(ntohs(a->sin_port), port);
}

static void
assert_in6(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    char buf[INET6_ADDRSTRLEN];
    assert_int_equal(a->sin6_family, AF_INET6);
    assert_string_equal(inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf)), ip);
    assert_int_equal(ntohs(a->sin6_port), port);
}

static void
test_v1(void **state)
{
    (void)state;
    struct vd_proxy_hdr h;
    const char *l4 = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    size_t hl = strlen("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert_int_equal(parse(l4, strlen(l4), &h), (int)hl);
    assert_true(h.has_addr);
    assert_int_equal(h.version, 1);
    assert_in4(&h.src, "192.168.0.1", 56324);
    assert_in4(&h.dst, "192.168.0.11", 443);
    assert_prefixes_incomplete((const uint8_t *)l4, hl);

    const char *l6 = "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
    assert_int_equal(parse(l6, strlen(l6), &h), (int)strlen(l6));
    assert_in6(&h.src, "2001:db8::1", 0);
    assert_in6(&h.dst, "::1", 65535);

    /* UNKNOWN: the rest of the line is ignored; the connection's own addresses stand. */
    const char *u = "PROXY UNKNOWN\r\n";
    assert_int_equal(parse(u, strlen(u), &h), (int)strlen(u));
    assert_false(h.has_addr);
    const char *u2 = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    assert_int_equal(parse(u2, strlen(u2), &h), (int)strlen(u2));
    assert_false(h.has_addr);

    /* The worst case of the specification: 107 bytes. */
    char big[120];
    snprintf(big, sizeof(big), "PROXY UNKNOWN %s %s 65535 65535\r\n",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    assert_int_equal(strlen(big), 107);
    assert_int_equal(parse(big, strlen(big), &h), 107);
}

static void
test_v1_malformed(void **state)
{
    (void)state;
    struct vd_proxy_hdr h;
    static const char *const bad[] = {
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",     /* LF without CR */
        "PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n",  /* two spaces */
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",       /* three fields */
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 9\r\n", /* five */
        "PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",  /* leading zero */
        "PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",   /* port range */
        "PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n",
        "PROXY TCP4 ::1 ::1 1 2\r\n", /* family mismatch */
        "PROXY TCP6 192.168.0.1 192.168.0.11 1 2\r\n",
        "PROXY TCP4 192.168.0.256 192.168.0.11 1 2\r\n",
        "PROXY UDP4 192.168.0.1 192.168.0.11 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY \r\n",
        "proxy TCP4 192.168.0.1 192.168.0.11 1 2\r\n",  /* case */
        "GET / HTTP/1.1\r\n",                           /* no header at all */
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], strlen(bad[i]), &h) != VD_EPROTO) {
            print_error("accepted: %s\n", bad[i]);
        }
        assert_int_equal(parse(bad[i], strlen(bad[i]), &h), VD_EPROTO);
    }
    /* No CRLF within 107 bytes. */
    char longl[200];
    memset(longl, 'x', sizeof(longl));
    memcpy(longl, "PROXY UNKNOWN ", 14);
    assert_int_equal(parse(longl, 106, &h), VD_EAGAIN);
    assert_int_equal(parse(longl, 107, &h), VD_EPROTO);
    assert_int_equal(parse(longl, sizeof(longl), &h), VD_EPROTO);
}

static size_t
v2(uint8_t *out, uint8_t vc, uint8_t ft, const void *addr, size_t alen, size_t tlv)
{
    memcpy(out, sig, 12);
    out[12] = vc;
    out[13] = ft;
    out[14] = (uint8_t)((alen + tlv) >> 8);
    out[15] = (uint8_t)(alen + tlv);
    if (alen) {
        memcpy(out + 16, addr, alen);
    }
    memset(out + 16 + alen, 0x20, tlv); /* TLV bytes: skipped whatever they hold */
    return 16 + alen + tlv;
}

static void
test_v2(void **state)
{
    (void)state;
    struct vd_proxy_hdr h;
    uint8_t b[VD_PROXYPROTO_MAX + 64];
    const uint8_t a4[12] = {203, 0, 113, 7, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb};
    size_t n = v2(b, 0x21, 0x11, a4, sizeof(a4), 0);
    b[n] = 'G'; /* the first byte after it is not part of the header */
    assert_int_equal(parse(b, n + 1, &h), (int)n);
    assert_true(h.has_addr);
    assert_int_equal(h.version, 2);
    assert_in4(&h.src, "203.0.113.7", 8080);
    assert_in4(&h.dst, "10.0.0.1", 443);
    assert_prefixes_incomplete(b, n);

    uint8_t a6[36] = {
        0x20, 0x01, 0x0d, 0xb8, [15] = 9, [31] = 1, [32] = 0xc3, [33] = 0x50, [34] = 0, [35] = 80};
    n = v2(b, 0x21, 0x21, a6, sizeof(a6), 300); /* with TLVs (SSL, unique ID...) */
    assert_int_equal(parse(b, n, &h), (int)n);
    assert_in6(&h.src, "2001:db8::9", 50000);
    assert_in6(&h.dst, "::1", 80);
    assert_prefixes_incomplete(b, n);

    /* LOCAL (a health check), UNSPEC, UNIX and UDP: no client address. */
    n = v2(b, 0x20, 0x00, NULL, 0, 0);
    assert_int_equal(parse(b, n, &h), 16);
    assert_false(h.has_addr);
    n = v2(b, 0x20, 0x11, a4, sizeof(a4), 0); /* LOCAL ignores the addresses */
    assert_int_equal(parse(b, n, &h), (int)n);
    assert_false(h.has_addr);
    n = v2(b, 0x21, 0x00, NULL, 0, 0);
    assert_int_equal(parse(b, n, &h), 16);
    assert_false(h.has_addr);
    uint8_t unix_addr[216] = {0};
    n = v2(b, 0x21, 0x31, unix_addr, sizeof(unix_addr), 0);
    assert_int_equal(parse(b, n, &h), (int)n);
    assert_false(h.has_addr);
    n = v2(b, 0x21, 0x12, a4, sizeof(a4), 0);
    assert_int_equal(parse(b, n, &h), (int)n);
    assert_false(h.has_addr);
}

static void
test_v2_malformed(void **state)
{
    (void)state;
    struct vd_proxy_hdr h;
    uint8_t b[VD_PROXYPROTO_MAX + 64];
    const uint8_t a4[12] = {203, 0, 113, 7, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb};
    size_t n = v2(b, 0x11, 0x11, a4, sizeof(a4), 0); /* version 1 in a v2 header */
    assert_int_equal(parse(b, n, &h), VD_EPROTO);
    n = v2(b, 0x22, 0x11, a4, sizeof(a4), 0); /* command 2 */
    assert_int_equal(parse(b, n, &h), VD_EPROTO);
    n = v2(b, 0x21, 0x11, a4, 8, 0); /* INET with 8 address bytes */
    assert_int_equal(parse(b, n, &h), VD_EPROTO);
    n = v2(b, 0x21, 0x21, a4, sizeof(a4), 0); /* INET6 with 12 */
    assert_int_equal(parse(b, n, &h), VD_EPROTO);
    /* Longer than accepted: refused as soon as the length is known. */
    n = v2(b, 0x21, 0x11, a4, sizeof(a4), VD_PROXYPROTO_MAX);
    assert_int_equal(parse(b, 16, &h), VD_EPROTO);
    /* A signature that breaks off. */
    memcpy(b, sig, 12);
    b[7] = 'X';
    assert_int_equal(parse(b, 12, &h), VD_EPROTO);
    assert_int_equal(parse(b, 7, &h), VD_EAGAIN);
    assert_int_equal(parse(b, 8, &h), VD_EPROTO);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1),
        cmocka_unit_test(test_v1_malformed),
        cmocka_unit_test(test_v2),
        cmocka_unit_test(test_v2_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
