/* SPDX-License-Identifier: MIT */
/* Unit tests for src/http: character classes, field helpers, URIs and authorities, message
 * framing (every smuggling variant we know of), the chunked decoder (split at every byte
 * boundary), and reason phrases. */
#include "vd/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vd/buf.h"
#include "vd/err.h"
#include "vd/http.h"
#include "vd_test.h"

static struct vd_iov
iov(const char *s)
{
    return (struct vd_iov){(const uint8_t *)s, strlen(s)};
}

static bool
iov_is(struct vd_iov v, const char *s)
{
    return v.len == strlen(s) && memcmp(v.base, s, v.len) == 0;
}

/* ---- character classes: recomputed from the ABNF and compared with the table ---- */

static void
test_ctype_table(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool digit = c >= '0' && c <= '9';
        bool tchar = alpha || digit || (c && strchr("!#$%&'*+-.^_`|~", c));
        bool vchar = c >= 0x21 && c <= 0x7e;
        bool value = vchar || c == ' ' || c == '\t' || c >= 0x80;
        bool hex = digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        bool unreserved = alpha || digit || (c && strchr("-._~", c));
        bool regname = unreserved || (c && strchr("!$&'()*+,;=", c));
        bool qdtext = c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
                      (c >= 0x5d && c <= 0x7e) || c >= 0x80;
        bool scheme = alpha || digit || (c && strchr("+-.", c));
        uint8_t f = vd_http_ctype[c];
        assert_int_equal(!!(f & VD_CT_TCHAR), tchar);
        assert_int_equal(!!(f & VD_CT_VALUE), value);
        assert_int_equal(!!(f & VD_CT_TARGET), vchar);
        assert_int_equal(!!(f & VD_CT_HEX), hex);
        assert_int_equal(!!(f & VD_CT_DIGIT), digit);
        assert_int_equal(!!(f & VD_CT_REGNAME), regname);
        assert_int_equal(!!(f & VD_CT_QDTEXT), qdtext);
        assert_int_equal(!!(f & VD_CT_SCHEME), scheme);
    }
}

/* ---- field helpers ---- */

static void
test_hdr_name_find(void **state)
{
    (void)state;
    struct vd_hdr h[] = {
        {VD_IOV_LIT("Host"), VD_IOV_LIT("a")},
        {VD_IOV_LIT("CONTENT-length"), VD_IOV_LIT("5")},
        {VD_IOV_LIT("content-length"), VD_IOV_LIT("6")},
    };
    assert_true(vd_hdr_name_is(VD_IOV_LIT("Content-Length"), "content-length"));
    assert_false(vd_hdr_name_is(VD_IOV_LIT("Content-Lengt"), "content-length"));
    assert_false(vd_hdr_name_is(VD_IOV_LIT("Content-Length2"), "content-length"));
    assert_false(vd_hdr_name_is(VD_IOV_LIT("Content_Length"), "content-length"));
    assert_true(vd_hdr_name_is(VD_IOV_NULL, ""));
    /* With a literal, the compare is inlined with the length known: one literal per size
     * class, matched in mixed case, and missed by one byte changed at each end. */
#define NAME_IS_CASE(mixed, lc)                                                                    \
    do {                                                                                           \
        uint8_t m[] = mixed;                                                                       \
        struct vd_iov v = {m, sizeof(m) - 1};                                                      \
        assert_true(vd_hdr_name_is(v, lc));                                                        \
        m[0] ^= 1;                                                                                 \
        assert_false(vd_hdr_name_is(v, lc));                                                       \
        m[0] ^= 1;                                                                                 \
        m[sizeof(m) - 2] ^= 1;                                                                     \
        assert_false(vd_hdr_name_is(v, lc));                                                       \
    } while (0)
    NAME_IS_CASE("Te", "te");
    NAME_IS_CASE("DaTe", "date");
    NAME_IS_CASE("UpGrade", "upgrade");
    NAME_IS_CASE("Location", "location");
    NAME_IS_CASE("Connection", "connection");
    NAME_IS_CASE("Content-LENGTH", "content-length");
    NAME_IS_CASE("Proxy-Connection", "proxy-connection");
    NAME_IS_CASE("Transfer-Encoding", "transfer-encoding");
    NAME_IS_CASE("Proxy-Authorization", "proxy-authorization");
#undef NAME_IS_CASE
    assert_ptr_equal(vd_hdr_find(h, 3, "content-length"), &h[1]);
    assert_ptr_equal(vd_hdr_find(h, 3, "host"), &h[0]);
    assert_null(vd_hdr_find(h, 3, "cookie"));
    assert_null(vd_hdr_find(NULL, 0, "host"));
}

/* vd_hdr_lower: every byte value at every position of a 19-byte name, and each length. */
static void
test_hdr_lower_every_byte(void **state)
{
    (void)state;
    uint8_t in[19], out[20];
    for (int pos = 0; pos < 19; pos++) {
        for (int c = 0; c < 256; c++) {
            for (size_t i = 0; i < sizeof(in); i++) {
                in[i] = (uint8_t)("Content-Type-AbcXYZ"[i]);
            }
            in[pos] = (uint8_t)c;
            memset(out, 0xee, sizeof(out));
            vd_hdr_lower(out, in, sizeof(in));
            for (size_t i = 0; i < sizeof(in); i++) {
                uint8_t b = in[i];
                assert_int_equal(out[i], (b >= 'A' && b <= 'Z') ? (b | 0x20) : b);
            }
            assert_int_equal(out[19], 0xee); /* nothing past n */
        }
    }
    for (size_t n = 0; n <= sizeof(in); n++) {
        memset(out, 0xee, sizeof(out));
        vd_hdr_lower(out, (const uint8_t *)"ABCDEFGHIJKLMNOPQRS", n);
        assert_memory_equal(out, "abcdefghijklmnopqrs", n);
        assert_int_equal(out[n], 0xee);
    }
}

/* The compare folds four or eight bytes at a time, with overlapping last words: every byte
 * value, at every position of names of every size class (under 4, 4-7, 8, 9-16 and past 16
 * bytes), against a byte-wise reference. */
static void
test_hdr_name_eq_every_byte(void **state)
{
    (void)state;
    static const size_t lens[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24};
    char lc[24];
    uint8_t name[24];
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        size_t n = lens[k];
        for (size_t pos = 0; pos < n; pos++) {
            for (int c = 0; c < 256; c++) {
                for (int l = 0; l < 256; l += 1) {
                    if (l >= 'A' && l <= 'Z') {
                        continue; /* the lowercase side never has upper case */
                    }
                    memset(lc, 'x', sizeof(lc));
                    memset(name, 'X', sizeof(name));
                    lc[pos] = (char)l;
                    name[pos] = (uint8_t)c;
                    uint8_t folded = (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : (uint8_t)c;
                    bool want = folded == (uint8_t)l;
                    struct vd_iov v = {name, n};
                    assert_true(vd__hdr_name_eq(v, lc, n) == want);
                }
            }
        }
    }
}

static void
test_list_next(void **state)
{
    (void)state;

    static const struct {
        const char *in;
        const char *items[6];
    } cases[] = {
        {"", {NULL}},
        {" , ,, ", {NULL}},
        {"a", {"a", NULL}},
        {"a,b", {"a", "b", NULL}},
        {" a , b\t,\tc ", {"a", "b", "c", NULL}},
        {",,a,,b,,", {"a", "b", NULL}},
        {"a b, c", {"a b", "c", NULL}},
        {"x=\"1,2\", y", {"x=\"1,2\"", "y", NULL}},
        {"x=\"a\\\",b\", y", {"x=\"a\\\",b\"", "y", NULL}},
        {"x=\"unterminated, y", {"x=\"unterminated, y", NULL}},
        {"x=\"ends in backslash\\", {"x=\"ends in backslash\\", NULL}},
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(cases); i++) {
        struct vd_iov rest = iov(cases[i].in), item;
        size_t k = 0;
        while (vd_list_next(&rest, &item)) {
            assert_non_null(cases[i].items[k]);
            if (!iov_is(item, cases[i].items[k])) {
                fail_msg("case %zu item %zu: got '%.*s' want '%s'", i, k, (int)item.len,
                         (const char *)item.base, cases[i].items[k]);
            }
            k++;
        }
        assert_null(cases[i].items[k]);
        assert_int_equal(rest.len, 0);
    }
    struct vd_iov none = VD_IOV_NULL, item;
    assert_false(vd_list_next(&none, &item));
}

static void
test_list_has_token(void **state)
{
    (void)state;
    assert_true(vd_list_has(VD_IOV_LIT("keep-alive, Close"), "close"));
    assert_true(vd_list_has(VD_IOV_LIT("close"), "close"));
    assert_false(vd_list_has(VD_IOV_LIT("closed, xclose"), "close"));
    assert_false(vd_list_has(VD_IOV_LIT("\"close\""), "close"));
    assert_false(vd_list_has(VD_IOV_LIT(""), "close"));
    assert_true(vd_is_token(VD_IOV_LIT("GET")));
    assert_true(vd_is_token(VD_IOV_LIT("x-a!#$%&'*+.^_`|~9")));
    assert_false(vd_is_token(VD_IOV_LIT("")));
    assert_false(vd_is_token(VD_IOV_LIT("a b")));
    assert_false(vd_is_token(VD_IOV_LIT("a:b")));
    assert_false(vd_is_token(VD_IOV_LIT("a\x80")));
    assert_false(vd_is_token(VD_IOV_LIT("a\"")));
}

/* ---- URIs ---- */

static void
test_uri_absolute(void **state)
{
    (void)state;

    static const struct {
        const char *in;
        int rc;
        const char *host, *path;
        int port;
        bool has_port, ipv6, https;
    } cases[] = {
        {"http://example.com/a?b", 0, "example.com", "/a?b", 80, false, false, false},
        {"http://example.com", 0, "example.com", "/", 80, false, false, false},
        {"HTTP://Example.COM:8080/", 0, "Example.COM", "/", 8080, true, false, false},
        {"https://example.com/x", 0, "example.com", "/x", 443, false, false, true},
        {"HtTpS://h:0/", 0, "h", "/", 0, true, false, true},
        {"http://h:65535/", 0, "h", "/", 65535, true, false, false},
        {"http://h:/p", 0, "h", "/p", 80, false, false, false},
        {"http://[::1]:8080/p", 0, "::1", "/p", 8080, true, true, false},
        {"http://[2001:db8::7]/", 0, "2001:db8::7", "/", 80, false, true, false},
        {"http://127.0.0.1:3128/", 0, "127.0.0.1", "/", 3128, true, false, false},
        {"http://a%41b.example/", 0, "a%41b.example", "/", 80, false, false, false},
        {"http://example.com./", 0, "example.com.", "/", 80, false, false, false},
        {"http://h/%zz", 0, "h", "/%zz", 80, false, false, false},
        {"ftp://h/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http:/h/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http//h/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"1http://h/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http:///p", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://:80/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://user@h/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://user:pw@h/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h:65536/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h:123456/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h:-1/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h:+80/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h:8a/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h:80:80/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://[::1/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://[::g]/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://[fe80::1%25eth0]/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://[v1.x]/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://[::1]x/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://::1/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://256.0.0.1/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://127.1/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://0x7f.0.0.1/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://evil.0x7f/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://1.2.3.4.5/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://01.2.3.4/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h_%/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h%4/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://a\"b/", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h?q", 0, "h", "?q", 80, false, false, false},
        {"http://h#f", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h/p#f", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h/p q", VD_EBADREQ, NULL, NULL, 0, false, false, false},
        {"http://h/\x7f", VD_EBADREQ, NULL, NULL, 0, false, false, false},
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(cases); i++) {
        struct vd_uri u;
        const char *why = NULL;
        size_t n = strlen(cases[i].in);
        uint8_t *b = malloc(n + 1); /* exact size so ASan sees any over-read */
        memcpy(b, cases[i].in, n);
        int rc = vd_uri_parse_absolute(b, n, &u, &why);
        if (rc != cases[i].rc) {
            fail_msg("case %zu '%s': rc %d want %d (%s)", i, cases[i].in, rc, cases[i].rc,
                     why ? why : "");
        }
        if (rc == 0) {
            assert_true(iov_is(u.host, cases[i].host));
            assert_true(iov_is(u.path, cases[i].path));
            assert_int_equal(u.port, cases[i].port);
            assert_int_equal(u.has_port, cases[i].has_port);
            assert_int_equal(u.ipv6, cases[i].ipv6);
            assert_int_equal(u.https, cases[i].https);
        } else {
            assert_non_null(why);
        }
        free(b);
    }
}

/* Every byte value at every position of an absolute URI's authority and of its path, in
 * authorities and paths of 1 to 40 bytes (the scans take 16 bytes per step), against the rules
 * byte by byte: in the authority, '/', '?' and '#' end it and '@' is userinfo (refused); in the
 * path, only 0x21-0x7e but '#' may appear. */
static void
test_uri_absolute_every_byte(void **state)
{
    (void)state;
    for (int len = 1; len <= 40; len++) {
        for (int k = 0; k < len; k++) {
            for (int c = 0; c < 256; c++) {
                uint8_t buf[96];
                struct vd_uri u;
                const char *why = NULL;
                /* Authority "aaa...a" with byte c at k, then "/p". */
                memcpy(buf, "http://", 7);
                memset(buf + 7, 'a', (size_t)len);
                buf[7 + k] = (uint8_t)c;
                memcpy(buf + 7 + len, "/p", 2);
                size_t n = 7 + (size_t)len + 2;
                uint8_t *b = malloc(n);
                memcpy(b, buf, n);
                int rc = vd_uri_parse_absolute(b, n, &u, &why);
                if (c == '@') {
                    assert_int_equal(rc, VD_EBADREQ);
                    assert_string_equal(why, "userinfo not allowed");
                } else if (c == '/' || c == '?') {
                    /* The authority ends at k: the rest is the path (valid bytes), unless
                     * the authority is empty. */
                    assert_int_equal(rc, k == 0 ? VD_EBADREQ : 0);
                    if (rc == 0) {
                        assert_int_equal(u.authority.len, (size_t)k);
                        assert_ptr_equal(u.path.base, b + 7 + k);
                    }
                } else if (c == '#') {
                    assert_int_equal(rc, VD_EBADREQ);
                } else if (rc == 0) {
                    assert_int_equal(u.authority.len, (size_t)len);
                    assert_ptr_equal(u.path.base, b + 7 + len);
                }
                free(b);
                /* Path "/bbb...b" with byte c at k + 1. */
                memcpy(buf, "http://h/", 9);
                memset(buf + 9, 'b', (size_t)len);
                buf[9 + k] = (uint8_t)c;
                n = 9 + (size_t)len;
                b = malloc(n);
                memcpy(b, buf, n);
                why = NULL;
                rc = vd_uri_parse_absolute(b, n, &u, &why);
                bool ok = c >= 0x21 && c <= 0x7e && c != '#';
                if (ok) {
                    assert_int_equal(rc, 0);
                    assert_int_equal(u.path.len, (size_t)len + 1);
                } else {
                    assert_int_equal(rc, VD_EBADREQ);
                    assert_string_equal(why, c == '#' ? "fragment in request target"
                                                      : "invalid character in path");
                }
                free(b);
            }
        }
    }
}

static void
test_uri_authority(void **state)
{
    (void)state;

    static const struct {
        const char *in;
        int rc;
        const char *host;
        int port;
        bool ipv6;
        const char *why;
    } cases[] = {
        {"example.com", 0, "example.com", 0, false, NULL},
        {"example.com:443", 0, "example.com", 443, false, NULL},
        {"EXAMPLE.com:00080", 0, "EXAMPLE.com", 80, false, NULL},
        {"[::1]:443", 0, "::1", 443, true, NULL},
        {"[::ffff:1.2.3.4]", 0, "::ffff:1.2.3.4", 0, true, NULL},
        {"10.0.0.1:22", 0, "10.0.0.1", 22, false, NULL},
        {"a-b_c~d!$&'()*+,;=:1", 0, "a-b_c~d!$&'()*+,;=", 1, false, NULL},
        {"", VD_EBADREQ, NULL, 0, false, "empty host"},
        {":443", VD_EBADREQ, NULL, 0, false, "empty host"},
        {"example.com:", VD_EBADREQ, NULL, 0, false, "empty port"},
        {"[::1]:", VD_EBADREQ, NULL, 0, false, "empty port"},
        {"u@example.com:443", VD_EBADREQ, NULL, 0, false, "userinfo not allowed"},
        {"example.com:65536", VD_EBADREQ, NULL, 0, false, "invalid port"},
        {"example.com:443x", VD_EBADREQ, NULL, 0, false, "invalid port"},
        {"example.com: 443", VD_EBADREQ, NULL, 0, false, "invalid port"},
        {"example.com:443/", VD_EBADREQ, NULL, 0, false, "invalid port"},
        {"exa mple.com", VD_EBADREQ, NULL, 0, false, "invalid character in host"},
        {"example.com/x", VD_EBADREQ, NULL, 0, false, "invalid character in host"},
        {"[::1", VD_EBADREQ, NULL, 0, false, "invalid IPv6 address"},
        {"[]:80", VD_EBADREQ, NULL, 0, false, "invalid IPv6 address"},
        {"[1.2.3.4]:80", VD_EBADREQ, NULL, 0, false, "invalid IPv6 address"},
        {"[::1]80", VD_EBADREQ, NULL, 0, false, "invalid authority"},
        {"1.2.3:80", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {"123", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {"1.2.3.04", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {"0.0.0.0", 0, "0.0.0.0", 0, false, NULL},
        {"255.255.255.255:1", 0, "255.255.255.255", 1, false, NULL},
        {"1.2.3.256", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {"1000.2.3.4", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {"1.2.3.4.", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {".1.2.3", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {"1..2.3", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {"00.1.2.3", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
        {"a.b.1", VD_EBADREQ, NULL, 0, false, "invalid IPv4 address"},
    };

    /* Each case twice, from two buffers: the second parse of a valid authority comes from the
     * per-thread memo of the last valid one, and must give views into its own input. */
    for (size_t i = 0; i < 2 * VD_ARRAY_LEN(cases); i++) {
        struct vd_iov host = VD_IOV_NULL;
        uint16_t port = 99;
        bool v6 = false;
        const char *why = NULL;
        size_t c = i / 2;
        size_t n = strlen(cases[c].in);
        uint8_t *b = malloc(n + 1);
        memcpy(b, cases[c].in, n);
        int rc = vd_uri_parse_authority(b, n, &host, &port, &v6, &why);
        if (rc != cases[c].rc) {
            fail_msg("case %zu '%s': rc %d want %d (%s)", c, cases[c].in, rc, cases[c].rc,
                     why ? why : "");
        }
        if (rc == 0) {
            assert_true(iov_is(host, cases[c].host));
            assert_true(host.base >= b && host.base + host.len <= b + n);
            assert_int_equal(port, cases[c].port);
            assert_int_equal(v6, cases[c].ipv6);
        } else {
            assert_string_equal(why, cases[c].why);
        }
        free(b);
    }
    /* The memo never answers for other bytes of the same length, nor keeps an empty port that
     * an absolute URI may have and an authority may not. */
    {
        struct vd_iov host;
        uint16_t port;
        bool v6;
        const char *why = NULL;
        struct vd_uri u;
        assert_int_equal(
            vd_uri_parse_authority((const uint8_t *)"example.com:443", 15, &host, &port, &v6, &why),
            0);
        assert_int_equal(
            vd_uri_parse_authority((const uint8_t *)"example.com:44x", 15, &host, &port, &v6, &why),
            VD_EBADREQ);
        assert_string_equal(why, "invalid port");
        assert_int_equal(
            vd_uri_parse_absolute((const uint8_t *)"http://h.example:/x", 19, &u, &why), 0);
        assert_int_equal(u.port, 80);
        assert_int_equal(
            vd_uri_parse_authority((const uint8_t *)"h.example:", 10, &host, &port, &v6, &why),
            VD_EBADREQ);
        assert_string_equal(why, "empty port");
        assert_int_equal(
            vd_uri_parse_absolute((const uint8_t *)"https://h.example:/x", 20, &u, &why), 0);
        assert_int_equal(u.port, 443);
    }
    /* A 255-byte name is accepted, 256 is not. */
    char big[300];
    memset(big, 'a', sizeof(big));
    struct vd_iov host;
    uint16_t port;
    bool v6;
    const char *why = NULL;
    assert_int_equal(vd_uri_parse_authority((const uint8_t *)big, 255, &host, &port, &v6, &why), 0);
    assert_int_equal(vd_uri_parse_authority((const uint8_t *)big, 256, &host, &port, &v6, &why),
                     VD_EBADREQ);
    assert_string_equal(why, "host name too long");
}

/* ---- framing ---- */

/* Splits "Name: value\nName: value" into fields the way the h1 parser would (OWS trimmed). */
static size_t
mkhdrs(const char *spec, struct vd_hdr *h, size_t max)
{
    size_t n = 0;
    const char *p = spec;
    while (*p && n < max) {
        const char *nl = strchr(p, '\n');
        const char *e = nl ? nl : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(e - p));
        assert_non_null(colon);
        h[n].name = (struct vd_iov){(const uint8_t *)p, (size_t)(colon - p)};
        const char *vs = colon + 1, *ve = e;
        while (vs < ve && (*vs == ' ' || *vs == '\t')) {
            vs++;
        }
        while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t')) {
            ve--;
        }
        h[n].value = (struct vd_iov){(const uint8_t *)vs, (size_t)(ve - vs)};
        n++;
        p = nl ? nl + 1 : e;
    }
    return n;
}

struct fcase {
    const char *hdrs;
    int minor;
    int rc;
    enum vd_body_kind kind;
    uint64_t length;
    const char *why;
};

/* Request framing, RFC 9112 §6.1/§6.3 and RFC 9110 §8.6: one row per attack. */
static const struct fcase req_cases[] = {
    {"", 1, 0, VD_BODY_NONE, 0, NULL},
    {"Host: a", 1, 0, VD_BODY_NONE, 0, NULL},
    {"Content-Length: 0", 1, 0, VD_BODY_LENGTH, 0, NULL},
    {"Content-Length: 5", 1, 0, VD_BODY_LENGTH, 5, NULL},
    {"Content-Length: 005", 1, 0, VD_BODY_LENGTH, 5, NULL},
    {"Content-Length: 5, 5", 1, 0, VD_BODY_LENGTH, 5, NULL},
    {"Content-Length: 5,5,5", 1, 0, VD_BODY_LENGTH, 5, NULL},
    {"Content-Length: 5\nContent-Length: 5", 1, 0, VD_BODY_LENGTH, 5, NULL},
    {"Content-Length: 5\ncontent-length: 05", 1, 0, VD_BODY_LENGTH, 5, NULL},
    {"Content-Length: 999999999999999999", 1, 0, VD_BODY_LENGTH, 999999999999999999ULL, NULL},
    {"Content-Length: 1000000000000000000", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: 99999999999999999999999", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: 5, 6", 1, VD_EBADREQ, 0, 0, "differing Content-Length values"},
    {"Content-Length: 5\nContent-Length: 6", 1, VD_EBADREQ, 0, 0,
     "differing Content-Length values"},
    {"Content-Length: +5", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: -1", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: 0x5", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: 5 5", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: 5.0", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: 1e3", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: ", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: 5,", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: ,5", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: 5,,5", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: \"5\"", 1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Content-Length: \x0b"
     "5",
     1, VD_EBADREQ, 0, 0, "invalid Content-Length"},
    {"Transfer-Encoding: chunked", 1, 0, VD_BODY_CHUNKED, 0, NULL},
    {"Transfer-Encoding: Chunked", 1, 0, VD_BODY_CHUNKED, 0, NULL},
    {"Transfer-Encoding: CHUNKED", 1, 0, VD_BODY_CHUNKED, 0, NULL},
    {"Transfer-Encoding:\tchunked\t", 1, 0, VD_BODY_CHUNKED, 0, NULL},
    {"Transfer-Encoding: , chunked", 1, 0, VD_BODY_CHUNKED, 0, NULL},
    {"Transfer-Encoding: chunked\nContent-Length: 5", 1, VD_EBADREQ, 0, 0,
     "Transfer-Encoding with Content-Length"},
    {"Content-Length: 5\nTransfer-Encoding: chunked", 1, VD_EBADREQ, 0, 0,
     "Transfer-Encoding with Content-Length"},
    {"Transfer-Encoding: chunked\nContent-Length: x", 1, VD_EBADREQ, 0, 0,
     "Transfer-Encoding with Content-Length"},
    {"Transfer-Encoding: chunked", 0, VD_EBADREQ, 0, 0, "Transfer-Encoding in HTTP/1.0 request"},
    {"Transfer-Encoding: chunked x", 1, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
    {"Transfer-Encoding: \x0b"
     "chunked",
     1, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
    {"Transfer-Encoding: chunked\x0b", 1, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
    {"Transfer-Encoding: chunked;x", 1, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
    {"Transfer-Encoding: chunked; q=1", 1, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
    {"Transfer-Encoding: \"chunked\"", 1, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
    {"Transfer-Encoding: xchunked", 1, VD_EBADREQ, 0, 0, "chunked not final transfer coding"},
    {"Transfer-Encoding: chunkedx", 1, VD_EBADREQ, 0, 0, "chunked not final transfer coding"},
    {"Transfer-Encoding: chunk", 1, VD_EBADREQ, 0, 0, "chunked not final transfer coding"},
    {"Transfer-Encoding: ", 1, VD_EBADREQ, 0, 0, "empty Transfer-Encoding"},
    {"Transfer-Encoding: ,", 1, VD_EBADREQ, 0, 0, "empty Transfer-Encoding"},
    {"Transfer-Encoding: chunked\nTransfer-Encoding: ", 1, VD_EBADREQ, 0, 0,
     "empty Transfer-Encoding"},
    {"Transfer-Encoding: identity", 1, VD_EBADREQ, 0, 0, "chunked not final transfer coding"},
    {"Transfer-Encoding: gzip", 1, VD_EBADREQ, 0, 0, "chunked not final transfer coding"},
    {"Transfer-Encoding: chunked, gzip", 1, VD_EBADREQ, 0, 0, "chunked not final transfer coding"},
    {"Transfer-Encoding: chunked\nTransfer-Encoding: gzip", 1, VD_EBADREQ, 0, 0,
     "chunked not final transfer coding"},
    {"Transfer-Encoding: chunked, chunked", 1, VD_EBADREQ, 0, 0, "chunked applied more than once"},
    {"Transfer-Encoding: chunked\nTransfer-Encoding: chunked", 1, VD_EBADREQ, 0, 0,
     "chunked applied more than once"},
    {"Transfer-Encoding: gzip, chunked", 1, VD_ENOTIMPL, 0, 0, "unsupported transfer coding"},
    {"Transfer-Encoding: deflate, chunked", 1, VD_ENOTIMPL, 0, 0, "unsupported transfer coding"},
    {"Transfer-Encoding: compress, chunked", 1, VD_ENOTIMPL, 0, 0, "unsupported transfer coding"},
    {"Transfer-Encoding: identity, chunked", 1, VD_ENOTIMPL, 0, 0, "unsupported transfer coding"},
    {"Transfer-Encoding: gzip\nTransfer-Encoding: chunked", 1, VD_ENOTIMPL, 0, 0,
     "unsupported transfer coding"},
    {"Transfer-Encoding: foo, chunked", 1, VD_ENOTIMPL, 0, 0, "unsupported transfer coding"},
    {"Transfer-Encoding: gzip;q=1, chunked", 1, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
    /* Look-alike names are other fields, not TE or CL. */
    {"Transfer_Encoding: chunked", 1, 0, VD_BODY_NONE, 0, NULL},
    {"Transfer-Encodings: chunked", 1, 0, VD_BODY_NONE, 0, NULL},
    {"Content-Length2: 5", 1, 0, VD_BODY_NONE, 0, NULL},
};

static void
run_fcases(const struct fcase *cases, size_t n, bool resp, int status, bool head, bool connect)
{
    for (size_t i = 0; i < n; i++) {
        struct vd_hdr h[8];
        size_t nh = mkhdrs(cases[i].hdrs, h, 8);
        struct vd_framing f = {VD_BODY_CLOSE, 77};
        const char *why = NULL;
        int rc = resp ? vd_http_resp_framing(h, nh, status, head, connect, &f, &why)
                      : vd_http_req_framing(h, nh, cases[i].minor, &f, &why);
        if (rc != cases[i].rc) {
            fail_msg("case %zu '%s': rc %d want %d (%s)", i, cases[i].hdrs, rc, cases[i].rc,
                     why ? why : "");
        }
        if (rc == 0) {
            if (f.kind != cases[i].kind || f.length != cases[i].length) {
                fail_msg("case %zu '%s': kind %d/%llu want %d/%llu", i, cases[i].hdrs, f.kind,
                         (unsigned long long)f.length, cases[i].kind,
                         (unsigned long long)cases[i].length);
            }
        } else {
            assert_non_null(why);
            if (strcmp(why, cases[i].why) != 0) {
                fail_msg("case %zu '%s': why '%s' want '%s'", i, cases[i].hdrs, why, cases[i].why);
            }
        }
    }
}

static void
test_req_framing(void **state)
{
    (void)state;
    run_fcases(req_cases, VD_ARRAY_LEN(req_cases), false, 0, false, false);
}

static void
test_resp_framing(void **state)
{
    (void)state;
    static const struct fcase cases[] = {
        {"", 1, 0, VD_BODY_CLOSE, 0, NULL},
        {"Content-Length: 12", 1, 0, VD_BODY_LENGTH, 12, NULL},
        {"Content-Length: 12, 12", 1, 0, VD_BODY_LENGTH, 12, NULL},
        {"Content-Length: 12\nContent-Length: 13", 1, VD_EBADRESP, 0, 0,
         "differing Content-Length values"},
        {"Content-Length: -12", 1, VD_EBADRESP, 0, 0, "invalid Content-Length"},
        {"Content-Length: 12a", 1, VD_EBADRESP, 0, 0, "invalid Content-Length"},
        {"Transfer-Encoding: chunked", 1, 0, VD_BODY_CHUNKED, 0, NULL},
        {"Transfer-Encoding: gzip, chunked", 1, 0, VD_BODY_CHUNKED, 0, NULL},
        {"Transfer-Encoding: gzip", 1, 0, VD_BODY_CLOSE, 0, NULL},
        {"Transfer-Encoding: chunked, gzip", 1, 0, VD_BODY_CLOSE, 0, NULL},
        {"Transfer-Encoding: chunked;x", 1, 0, VD_BODY_CLOSE, 0, NULL},
        {"Transfer-Encoding: xchunked", 1, 0, VD_BODY_CLOSE, 0, NULL},
        {"Transfer-Encoding: ", 1, 0, VD_BODY_CLOSE, 0, NULL},
        {"Transfer-Encoding: chunked, chunked", 1, VD_EBADRESP, 0, 0,
         "chunked applied more than once"},
        {"Transfer-Encoding: chunked\nContent-Length: 5", 1, VD_EBADRESP, 0, 0,
         "Transfer-Encoding with Content-Length"},
    };
    run_fcases(cases, VD_ARRAY_LEN(cases), true, 200, false, false);

    /* RFC 9112 §6.3 items 1-2: no body whatever the fields say. */
    static const struct fcase nobody[] = {
        {"Content-Length: 12", 1, 0, VD_BODY_NONE, 0, NULL},
        {"Transfer-Encoding: chunked", 1, 0, VD_BODY_NONE, 0, NULL},
        {"", 1, 0, VD_BODY_NONE, 0, NULL},
    };
    static const int statuses[] = {100, 101, 103, 199, 204, 304};
    for (size_t i = 0; i < VD_ARRAY_LEN(statuses); i++) {
        run_fcases(nobody, VD_ARRAY_LEN(nobody), true, statuses[i], false, false);
    }
    run_fcases(nobody, VD_ARRAY_LEN(nobody), true, 200, true, false); /* HEAD */
    run_fcases(nobody, VD_ARRAY_LEN(nobody), true, 404, true, false); /* HEAD */
    run_fcases(nobody, VD_ARRAY_LEN(nobody), true, 200, false, true); /* CONNECT 2xx */
    run_fcases(nobody, VD_ARRAY_LEN(nobody), true, 299, false, true); /* CONNECT 2xx */
    static const struct fcase connect_fail[] = {
        {"Content-Length: 12", 1, 0, VD_BODY_LENGTH, 12, NULL},
        {"", 1, 0, VD_BODY_CLOSE, 0, NULL},
    };
    run_fcases(connect_fail, VD_ARRAY_LEN(connect_fail), true, 407, false, true);
    run_fcases(connect_fail, VD_ARRAY_LEN(connect_fail), true, 205, false, false);
}

/* ---- chunked ---- */

#define BIG 8192

struct chk_result {
    int rc;
    const char *why;
    uint8_t out[BIG];
    size_t outlen;
    size_t consumed; /* bytes up to the end of the message */
    bool done;
};

/* Feeds @msg in pieces ending at @cuts (ascending, last == len) and collects the payload. */
static void
chk_feed(struct vd_chunked *c, const uint8_t *msg, size_t len, const size_t *cuts, size_t ncuts,
         struct chk_result *res)
{
    size_t off = 0;
    memset(res, 0, sizeof(*res));
    for (size_t k = 0; k < ncuts && !c->done; k++) {
        size_t end = cuts[k];
        /* copy the piece into its own exact-size buffer: ASan catches reads past it */
        size_t plen = end - off;
        uint8_t *piece = malloc(plen ? plen : 1);
        memcpy(piece, msg + off, plen);
        size_t poff = 0;
        while (poff < plen && !c->done) {
            struct vd_iov data;
            const char *why = NULL;
            int r = vd_chunked_decode(c, piece + poff, plen - poff, &data, &why);
            if (r < 0) {
                res->rc = r;
                res->why = why;
                free(piece);
                return;
            }
            assert_true(r > 0);
            assert_true((size_t)r <= plen - poff);
            if (data.len) {
                assert_true(data.base >= piece + poff && data.base + data.len <= piece + poff + r);
                assert_true(res->outlen + data.len <= BIG);
                memcpy(res->out + res->outlen, data.base, data.len);
                res->outlen += data.len;
            }
            poff += (size_t)r;
        }
        off += poff;
        free(piece);
        if (poff < plen) {
            break; /* done inside this piece */
        }
    }
    res->consumed = off;
    res->done = c->done;
}

static const char chk_msg[] = "5\r\nhello\r\n"
                              "1a;name=val;q=\"x\\\"y; z\" ; n2 = v2\r\n"
                              "abcdefghijklmnopqrstuvwxyz\r\n"
                              "00000000000000A\t;e\r\n"
                              "0123456789\r\n"
                              "0;last\r\n"
                              "X-Trailer:  one \t\r\n"
                              "Empty:\r\n"
                              "x-b:two  words\x80\r\n"
                              "\r\n"
                              "NEXT MESSAGE";
static const char chk_payload[] = "helloabcdefghijklmnopqrstuvwxyz0123456789";
static const char chk_trailers[] = "X-Trailer: one\r\nEmpty:\r\nx-b: two  words\x80\r\n";

static void
chk_check_ok(const struct chk_result *res, const struct vd_dbuf *tr)
{
    size_t msglen = sizeof(chk_msg) - 1 - strlen("NEXT MESSAGE");
    if (res->rc != 0) {
        fail_msg("rc %d (%s)", res->rc, res->why ? res->why : "");
    }
    assert_true(res->done);
    assert_int_equal(res->consumed, msglen);
    assert_int_equal(res->outlen, strlen(chk_payload));
    assert_memory_equal(res->out, chk_payload, res->outlen);
    assert_string_equal(tr->p, chk_trailers);
}

static void
test_chunked_whole(void **state)
{
    (void)state;
    struct vd_chunked c;
    struct vd_dbuf tr;
    static struct chk_result res;
    size_t len = sizeof(chk_msg) - 1;
    vd_dbuf_init(&tr, 1024);
    vd_chunked_init(&c, 64, 256, &tr);
    chk_feed(&c, (const uint8_t *)chk_msg, len, &len, 1, &res);
    chk_check_ok(&res, &tr);
    /* Once done, further calls consume nothing. */
    struct vd_iov data;
    const char *why;
    assert_int_equal(vd_chunked_decode(&c, (const uint8_t *)"x", 1, &data, &why), 0);
    assert_int_equal(data.len, 0);
    assert_int_equal(vd_chunked_decode(&c, NULL, 0, &data, &why), 0);
    vd_dbuf_free(&tr);
}

static void
test_chunked_every_split(void **state)
{
    (void)state;
    static struct chk_result res;
    size_t len = sizeof(chk_msg) - 1;
    struct vd_dbuf tr;
    vd_dbuf_init(&tr, 1024);
    /* two pieces, split at every byte boundary */
    for (size_t s = 0; s <= len; s++) {
        struct vd_chunked c;
        size_t cuts[2] = {s, len};
        vd_dbuf_reset(&tr);
        vd_chunked_init(&c, 64, 256, &tr);
        chk_feed(&c, (const uint8_t *)chk_msg, len, cuts, 2, &res);
        chk_check_ok(&res, &tr);
    }
    /* one byte at a time */
    {
        struct vd_chunked c;
        size_t cuts[sizeof(chk_msg)];
        for (size_t i = 0; i < len; i++) {
            cuts[i] = i + 1;
        }
        vd_dbuf_reset(&tr);
        vd_chunked_init(&c, 64, 256, &tr);
        chk_feed(&c, (const uint8_t *)chk_msg, len, cuts, len, &res);
        chk_check_ok(&res, &tr);
    }
    /* random splits (a fixed LCG, so runs are reproducible) */
    uint32_t seed = 12345;
    for (int iter = 0; iter < 2000; iter++) {
        struct vd_chunked c;
        size_t cuts[sizeof(chk_msg)], n = 0, at = 0;
        while (at < len) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 16) % 9;
            cuts[n++] = at < len ? at : len;
        }
        vd_dbuf_reset(&tr);
        vd_chunked_init(&c, 64, 256, &tr);
        chk_feed(&c, (const uint8_t *)chk_msg, len, cuts, n, &res);
        chk_check_ok(&res, &tr);
    }
    vd_dbuf_free(&tr);
}

struct ccase {
    const char *in;
    int rc; /* 0: completes; VD_EAGAIN: valid so far, not done */
    const char *why;
};

static void
test_chunked_cases(void **state)
{
    (void)state;
    static const struct ccase cases[] = {
        {"0\r\n\r\n", 0, NULL},
        {"000\r\n\r\n", 0, NULL},
        {"1\r\na\r\n0\r\n\r\n", 0, NULL},
        {"F\r\n0123456789abcde\r\n0\r\n\r\n", 0, NULL},
        {"f\r\n0123456789abcde\r\n0\r\n\r\n", 0, NULL},
        {"0000000000000001\r\na\r\n0\r\n\r\n", 0, NULL},
        {"1;a\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"1 ;a\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"1; a\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"1;a=b\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"1;a = b\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"1;a=\"\"\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"1;a=\"\\\\\"\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"1;a;b;c=d\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"1;a=b ;c\r\nx\r\n0\r\n\r\n", 0, NULL},
        {"0\r\nA: b\r\n\r\n", 0, NULL},
        {"0\r\nA:\r\n\r\n", 0, NULL},
        {"0\r\nA:b\r\nB: c d\r\n\r\n", 0, NULL},
        {"ffffffffffffffff\r\n", VD_EAGAIN, NULL},
        {"", VD_EAGAIN, NULL},
        {"5\r\nab", VD_EAGAIN, NULL},
        {"\r\n", VD_EBADREQ, "invalid chunk size"},
        {";a\r\n", VD_EBADREQ, "invalid chunk size"},
        {" 1\r\nx\r\n", VD_EBADREQ, "invalid chunk size"},
        {"\t1\r\nx\r\n", VD_EBADREQ, "invalid chunk size"},
        {"+1\r\nx\r\n", VD_EBADREQ, "invalid chunk size"},
        {"-1\r\nx\r\n", VD_EBADREQ, "invalid chunk size"},
        {"0x1\r\nx\r\n", VD_EBADREQ, "invalid chunk size"},
        {"1g\r\nx\r\n", VD_EBADREQ, "invalid chunk size"},
        {"00000000000000001\r\nx\r\n", VD_EBADREQ, "invalid chunk size"},
        {"10000000000000000\r\n", VD_EBADREQ, "invalid chunk size"},
        {"1 \r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1\n", VD_EBADREQ, "bare LF"},
        {"1\rx", VD_EBADREQ, "bare CR"},
        {"1;\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;=b\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a=\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a \r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a=b \r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a=b c\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a=\"b\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a=\"b\"c\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a=\"\x01\"\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a=\"\\\x01\"\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a,b\r\nx\r\n", VD_EBADREQ, "invalid chunk extension"},
        {"1;a\n", VD_EBADREQ, "bare LF"},
        {"1\r\nxy\r\n", VD_EBADREQ, "missing CRLF after chunk data"},
        {"1\r\nx\n", VD_EBADREQ, "bare LF"},
        {"1\r\nx\rz", VD_EBADREQ, "missing CRLF after chunk data"},
        {"1\r\nx\r\n\r\n", VD_EBADREQ, "invalid chunk size"},
        {"0\r\n\n", VD_EBADREQ, "bare LF"},
        {"0\r\n\rx", VD_EBADREQ, "bare CR"},
        {"0\r\nA: b\n", VD_EBADREQ, "bare LF"},
        {"0\r\nA: b\rx", VD_EBADREQ, "bare CR"},
        {"0\r\nA : b\r\n\r\n", VD_EBADREQ, "whitespace before colon"},
        {"0\r\n A: b\r\n\r\n", VD_EBADREQ, "obs-fold not allowed"},
        {"0\r\nA: b\r\n c\r\n\r\n", VD_EBADREQ, "obs-fold not allowed"},
        {"0\r\n: b\r\n\r\n", VD_EBADREQ, "empty field name"},
        {"0\r\nA\r\n\r\n", VD_EBADREQ, "invalid trailer field name"},
        {"0\r\nA(: b\r\n\r\n", VD_EBADREQ, "invalid trailer field name"},
        {"0\r\nA: \x7f\r\n\r\n", VD_EBADREQ, "invalid character in field value"},
        {"0\r\nA: b\r\r\n", VD_EBADREQ, "bare CR"},
    };
    for (size_t i = 0; i < VD_ARRAY_LEN(cases); i++) {
        const char *in = cases[i].in;
        size_t len = strlen(in);
        struct vd_chunked c;
        static struct chk_result res;
        vd_chunked_init(&c, 64, 256, NULL);
        chk_feed(&c, (const uint8_t *)in, len, &len, 1, &res);
        int rc = res.rc ? res.rc : res.done ? 0 : VD_EAGAIN;
        if (rc != cases[i].rc) {
            fail_msg("case %zu '%s': rc %d want %d (%s)", i, in, rc, cases[i].rc,
                     res.why ? res.why : "");
        }
        if (rc < 0 && rc != VD_EAGAIN && strcmp(res.why, cases[i].why) != 0) {
            fail_msg("case %zu '%s': why '%s' want '%s'", i, in, res.why, cases[i].why);
        }
    }
}

/* Embedded NUL bytes need explicit lengths. */
static void
test_chunked_nul(void **state)
{
    (void)state;

    static const struct {
        const char *in;
        size_t len;
        const char *why;
    } cases[] = {
        {"1;a\0b\r\n", 7, "invalid chunk extension"},
        {"\0\r\n", 3, "invalid chunk size"},
        {"1\0\r\n", 4, "invalid chunk size"},
        {"0\r\nA: b\0c\r\n\r\n", 13, "invalid character in field value"},
        {"0\r\nA\0: b\r\n\r\n", 12, "invalid trailer field name"},
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(cases); i++) {
        struct vd_chunked c;
        static struct chk_result res;
        size_t len = cases[i].len;
        vd_chunked_init(&c, 64, 256, NULL);
        chk_feed(&c, (const uint8_t *)cases[i].in, len, &len, 1, &res);
        assert_int_equal(res.rc, VD_EBADREQ);
        assert_string_equal(res.why, cases[i].why);
    }
}

static int
chk_run(const char *in, size_t max_line, size_t max_trailer, struct vd_dbuf *tr, const char **why)
{
    struct vd_chunked c;
    static struct chk_result res;
    size_t len = strlen(in);
    vd_chunked_init(&c, max_line, max_trailer, tr);
    chk_feed(&c, (const uint8_t *)in, len, &len, 1, &res);
    *why = res.why;
    return res.rc ? res.rc : res.done ? 0 : VD_EAGAIN;
}

static void
test_chunked_limits(void **state)
{
    (void)state;
    const char *why;
    /* size line cap: "1;aaaa" is 6 bytes (CRLF not counted) */
    assert_int_equal(chk_run("1;aaaa\r\nx\r\n0\r\n\r\n", 7, 100, NULL, &why), 0);
    assert_int_equal(chk_run("1;aaaa\r\nx\r\n0\r\n\r\n", 6, 100, NULL, &why), 0);
    assert_int_equal(chk_run("1;aaaa\r\nx\r\n0\r\n\r\n", 5, 100, NULL, &why), VD_ETOOBIG);
    assert_string_equal(why, "chunk size line too long");
    /* the cap also stops an unterminated line before its end arrives */
    assert_int_equal(chk_run("1;aaaaaaaaaa", 5, 100, NULL, &why), VD_ETOOBIG);
    /* trailer cap: "A: bc\r\n" is 7 bytes; the final CRLF is not counted */
    assert_int_equal(chk_run("0\r\nA: bc\r\n\r\n", 64, 8, NULL, &why), 0);
    assert_int_equal(chk_run("0\r\nA: bc\r\n\r\n", 64, 7, NULL, &why), 0);
    assert_int_equal(chk_run("0\r\nA: bc\r\n\r\n", 64, 6, NULL, &why), VD_ETOOBIG);
    assert_string_equal(why, "trailer section too large");
    assert_int_equal(chk_run("0\r\nA: bcdefghijklmnop", 64, 6, NULL, &why), VD_ETOOBIG);
    assert_int_equal(chk_run("0\r\n\r\n", 64, 0, NULL, &why), 0);
    /* the caller's dbuf cap maps to VD_ETOOBIG too */
    struct vd_dbuf tr;
    vd_dbuf_init(&tr, 8);
    assert_int_equal(chk_run("0\r\nA: b\r\n\r\n", 64, 100, &tr, &why), 0);
    assert_string_equal(tr.p, "A: b\r\n");
    vd_dbuf_reset(&tr);
    assert_int_equal(chk_run("0\r\nA: bcde\r\n\r\n", 64, 100, &tr, &why), VD_ETOOBIG);
    vd_dbuf_free(&tr);
    /* largest size: 16 hex digits, then data is only awaited */
    struct vd_chunked c;
    struct vd_iov data;
    vd_chunked_init(&c, 64, 64, NULL);
    const char *big = "FFFFFFFFFFFFFFFF\r\nabc";
    int r = vd_chunked_decode(&c, (const uint8_t *)big, strlen(big), &data, &why);
    assert_int_equal(r, (int)strlen(big));
    assert_int_equal(data.len, 3);
    assert_true(c.remain == UINT64_MAX - 3);
}

/* A payload run ends the call; framing before it is consumed in the same call. */
static void
test_chunked_runs(void **state)
{
    (void)state;
    struct vd_chunked c;
    struct vd_iov data;
    const char *why;
    const uint8_t *m = (const uint8_t *)"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET";
    size_t n = strlen((const char *)m);
    vd_chunked_init(&c, 64, 64, NULL);
    assert_int_equal(vd_chunked_decode(&c, m, n, &data, &why), 6);
    assert_true(data.base == m + 3 && data.len == 3);
    assert_int_equal(vd_chunked_decode(&c, m + 6, n - 6, &data, &why), 7);
    assert_true(data.base == m + 11 && data.len == 2);
    assert_false(c.done);
    assert_int_equal(vd_chunked_decode(&c, m + 13, n - 13, &data, &why), 7);
    assert_int_equal(data.len, 0);
    assert_true(c.done);
    /* input ending inside framing: all consumed, no data */
    vd_chunked_init(&c, 64, 64, NULL);
    assert_int_equal(vd_chunked_decode(&c, m, 2, &data, &why), 2);
    assert_int_equal(data.len, 0);
    assert_false(c.done);
}

/* RFC 9110 §7.6.3: received-protocol RWS received-by [RWS comment], in any number of fields. */
static void
test_via_count(void **state)
{
    (void)state;
    struct vd_hdr h[] = {
        {VD_IOV_LIT("Via"), VD_IOV_LIT("1.1 viaduct, 1.0 squid (squid/5.7), 2 VIADUCT")},
        {VD_IOV_LIT("Host"), VD_IOV_LIT("viaduct")},
        {VD_IOV_LIT("VIA"), VD_IOV_LIT("HTTP/1.1 viaduct (comment, \"with\" a comma)")},
        {VD_IOV_LIT("via"), VD_IOV_LIT("1.1 viaduct-edge,1.1 viaduct.example, 1.1\tviaduct")},
        {VD_IOV_LIT("Via"), VD_IOV_LIT(",, viaduct,1.1")},
    };
    assert_int_equal(vd_via_count(h, VD_ARRAY_LEN(h), "viaduct"), 4);
    assert_int_equal(vd_via_count(h, VD_ARRAY_LEN(h), "squid"), 1);
    assert_int_equal(vd_via_count(h, VD_ARRAY_LEN(h), "viaduct-edge"), 1);
    assert_int_equal(vd_via_count(h, VD_ARRAY_LEN(h), "via"), 0);
    assert_int_equal(vd_via_count(h, 0, "viaduct"), 0);
}

static void
test_reason(void **state)
{
    (void)state;
    static const int codes[] = {
        100, 101, 103, 200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 304, 305, 306, 307,
        308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416,
        417, 418, 421, 422, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 508, 511};
    for (size_t i = 0; i < VD_ARRAY_LEN(codes); i++) {
        assert_string_not_equal(vd_http_reason(codes[i]), "Unknown");
    }
    assert_string_equal(vd_http_reason(200), "OK");
    assert_string_equal(vd_http_reason(413), "Content Too Large");
    assert_string_equal(vd_http_reason(422), "Unprocessable Content");
    assert_string_equal(vd_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(vd_http_reason(511), "Network Authentication Required");
    assert_string_equal(vd_http_reason(508), "Loop Detected");
    assert_string_equal(vd_http_reason(299), "Unknown");
    assert_string_equal(vd_http_reason(0), "Unknown");
    assert_string_equal(vd_http_reason(-1), "Unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctype_table),
        cmocka_unit_test(test_hdr_name_find),
        cmocka_unit_test(test_hdr_name_eq_every_byte),
        cmocka_unit_test(test_hdr_lower_every_byte),
        cmocka_unit_test(test_list_next),
        cmocka_unit_test(test_list_has_token),
        cmocka_unit_test(test_uri_absolute),
        cmocka_unit_test(test_uri_absolute_every_byte),
        cmocka_unit_test(test_uri_authority),
        cmocka_unit_test(test_req_framing),
        cmocka_unit_test(test_resp_framing),
        cmocka_unit_test(test_chunked_whole),
        cmocka_unit_test(test_chunked_every_split),
        cmocka_unit_test(test_chunked_cases),
        cmocka_unit_test(test_chunked_nul),
        cmocka_unit_test(test_chunked_limits),
        cmocka_unit_test(test_chunked_runs),
        cmocka_unit_test(test_via_count),
        cmocka_unit_test(test_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
