/* SPDX-License-Identifier: MIT */
/* Unit tests for src/h1: request and status lines, field lines, the request-target forms,
 * limits at their exact boundaries, incremental input, and request framing end to end (raw
 * bytes through the parser into vd_http_req_framing). Every input is copied into an
 * exact-size heap buffer so the sanitizer build catches any read past the end. */
#include "vd/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vd/err.h"
#include "vd/h1.h"
#include "vd_test.h"

static uint8_t *g_buf;
static struct vd_hdr g_hdrs[256];
static const struct vd_h1_limits deflim = {
    .max_request_line = 8192,
    .max_head = 65536,
    .max_headers = 100,
};

static const uint8_t *
copy_in(const char *s, size_t n)
{
    free(g_buf);
    g_buf = malloc(n ? n : 1);
    memcpy(g_buf, s, n);
    return g_buf;
}

static int
preq_n(const char *s, size_t n, const struct vd_h1_limits *lim, struct vd_h1_req_head *req,
       const char **why)
{
    const uint8_t *b = copy_in(s, n);
    *req = (struct vd_h1_req_head){.hdrs = g_hdrs};
    *why = NULL;
    return vd_h1_parse_request(b, n, lim, req, why);
}

static int
preq(const char *s, struct vd_h1_req_head *req, const char **why)
{
    return preq_n(s, strlen(s), &deflim, req, why);
}

static int
presp_n(const char *s, size_t n, const struct vd_h1_limits *lim, struct vd_h1_resp_head *resp,
        const char **why)
{
    const uint8_t *b = copy_in(s, n);
    *resp = (struct vd_h1_resp_head){.hdrs = g_hdrs};
    *why = NULL;
    return vd_h1_parse_response(b, n, lim, resp, why);
}

static int
presp(const char *s, struct vd_h1_resp_head *resp, const char **why)
{
    return presp_n(s, strlen(s), &deflim, resp, why);
}

static bool
iov_is(struct vd_iov v, const char *s)
{
    return v.len == strlen(s) && memcmp(v.base, s, v.len) == 0;
}

static int
teardown(void **state)
{
    (void)state;
    free(g_buf);
    g_buf = NULL;
    return 0;
}

static const char browser_req[] =
    "GET /search?q=viaduct&lang=en HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=0123456789abcdef; theme=dark\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "X-Empty:\r\n"
    "X-Ows: \t padded \t \r\n"
    "X-Obs-Text: caf\xc3\xa9\r\n"
    "\r\n";

static void
test_req_basic(void **state)
{
    (void)state;
    struct vd_h1_req_head req;
    const char *why;
    size_t n = sizeof(browser_req) - 1;
    assert_int_equal(preq(browser_req, &req, &why), (int)n);
    assert_true(iov_is(req.method, "GET"));
    assert_true(iov_is(req.target, "/search?q=viaduct&lang=en"));
    assert_int_equal(req.form, VD_TARGET_ORIGIN);
    assert_int_equal(req.minor, 1);
    assert_int_equal(req.nhdrs, 11);
    assert_true(iov_is(req.hdrs[0].name, "Host"));
    assert_true(iov_is(req.hdrs[0].value, "www.example.com"));
    assert_true(iov_is(req.hdrs[7].name, "Upgrade-Insecure-Requests"));
    assert_true(iov_is(req.hdrs[8].name, "X-Empty"));
    assert_int_equal(req.hdrs[8].value.len, 0);
    assert_true(iov_is(req.hdrs[9].value, "padded"));
    assert_true(iov_is(req.hdrs[10].value, "caf\xc3\xa9"));
    /* Views point into the caller's buffer. */
    assert_true(req.method.base == g_buf);

    /* Bytes after the head (a body, a pipelined request) are not part of it. */
    char buf[1024];
    int k = snprintf(buf, sizeof(buf), "%sbody bytes", browser_req);
    assert_true(k > 0);
    assert_int_equal(preq(buf, &req, &why), (int)n);

    /* One leading empty line is skipped (RFC 9112 §2.2) and counted in the length. */
    assert_int_equal(preq("\r\nGET / HTTP/1.0\r\n\r\n", &req, &why), 20);
    assert_int_equal(req.minor, 0);
    assert_int_equal(req.nhdrs, 0);
    assert_int_equal(preq("\r\n\r\nGET / HTTP/1.1\r\n\r\n", &req, &why), VD_EBADREQ);
    assert_int_equal(preq("\nGET / HTTP/1.1\r\n\r\n", &req, &why), VD_EBADREQ);
    assert_string_equal(why, "bare LF");
    assert_int_equal(preq("\rGET / HTTP/1.1\r\n\r\n", &req, &why), VD_EBADREQ);
    assert_string_equal(why, "bare CR");
    assert_int_equal(preq("", &req, &why), VD_EAGAIN);
    assert_int_equal(preq("\r", &req, &why), VD_EAGAIN);
    assert_int_equal(preq("\r\n", &req, &why), VD_EAGAIN);
}

struct rcase {
    const char *in;
    int rc; /* 0: parses; otherwise the error */
    int form;
    const char *why;
};

static void
run_req_cases(const struct rcase *cases, size_t n, const char *suffix)
{
    for (size_t i = 0; i < n; i++) {
        char buf[512];
        struct vd_h1_req_head req;
        const char *why;
        int k = snprintf(buf, sizeof(buf), "%s%s", cases[i].in, suffix);
        assert_true(k > 0 && (size_t)k < sizeof(buf));
        int rc = preq_n(buf, (size_t)k, &deflim, &req, &why);
        if (cases[i].rc == 0) {
            if (rc != k) {
                fail_msg("case %zu '%s': rc %d want %d (%s)", i, cases[i].in, rc, k,
                         why ? why : "");
            }
            if ((int)req.form != cases[i].form) {
                fail_msg("case %zu '%s': form %d want %d", i, cases[i].in, req.form, cases[i].form);
            }
            /* An http(s) absolute target comes with its parse; no other does. */
            const char *tg = strchr(cases[i].in, ' ') + 1;
            bool web = req.form == VD_TARGET_ABSOLUTE &&
                       (strncasecmp(tg, "http:", 5) == 0 || strncasecmp(tg, "https:", 6) == 0);
            if (req.has_uri != web) {
                fail_msg("case %zu '%s': has_uri %d", i, cases[i].in, req.has_uri);
            }
        } else {
            if (rc != cases[i].rc) {
                fail_msg("case %zu '%s': rc %d want %d (%s)", i, cases[i].in, rc, cases[i].rc,
                         why ? why : "");
            }
            if (cases[i].why && (!why || strcmp(why, cases[i].why) != 0)) {
                fail_msg("case %zu '%s': why '%s' want '%s'", i, cases[i].in, why ? why : "",
                         cases[i].why);
            }
        }
    }
}

/* RFC 9112 §3.2: each form with the methods it belongs to. */
static void
test_req_forms(void **state)
{
    (void)state;
    static const struct rcase cases[] = {
        {"GET / HTTP/1.1", 0, VD_TARGET_ORIGIN, NULL},
        {"GET /a/b?c=d&e=%20 HTTP/1.1", 0, VD_TARGET_ORIGIN, NULL},
        {"GET //x HTTP/1.1", 0, VD_TARGET_ORIGIN, NULL},
        {"POST /upload HTTP/1.0", 0, VD_TARGET_ORIGIN, NULL},
        {"GET http://example.com/ HTTP/1.1", 0, VD_TARGET_ABSOLUTE, NULL},
        {"GET http://example.com:8080/x?y HTTP/1.1", 0, VD_TARGET_ABSOLUTE, NULL},
        {"GET http://example.com HTTP/1.1", 0, VD_TARGET_ABSOLUTE, NULL},
        {"GET HTTPS://[::1]:443/ HTTP/1.1", 0, VD_TARGET_ABSOLUTE, NULL},
        {"GET ftp://example.com/f.txt HTTP/1.1", 0, VD_TARGET_ABSOLUTE, NULL},
        {"OPTIONS http://h/ HTTP/1.1", 0, VD_TARGET_ABSOLUTE, NULL},
        {"GET http://user@h/ HTTP/1.1", VD_EBADREQ, 0, "userinfo not allowed"},
        {"GET http://h:99999/ HTTP/1.1", VD_EBADREQ, 0, "invalid port"},
        {"GET http://h/#frag HTTP/1.1", VD_EBADREQ, 0, "fragment in request target"},
        {"GET http:/h/ HTTP/1.1", VD_EBADREQ, 0, "invalid request target"},
        {"CONNECT example.com:443 HTTP/1.1", 0, VD_TARGET_AUTHORITY, NULL},
        {"CONNECT [::1]:443 HTTP/1.1", 0, VD_TARGET_AUTHORITY, NULL},
        {"CONNECT 10.0.0.1:8443 HTTP/1.1", 0, VD_TARGET_AUTHORITY, NULL},
        {"CONNECT example.com HTTP/1.1", VD_EBADREQ, 0, "CONNECT target without port"},
        {"CONNECT [::1] HTTP/1.1", VD_EBADREQ, 0, "CONNECT target without port"},
        {"CONNECT example.com: HTTP/1.1", VD_EBADREQ, 0, "empty port"},
        {"CONNECT example.com:0 HTTP/1.1", VD_EBADREQ, 0, "invalid port"},
        {"CONNECT example.com:65536 HTTP/1.1", VD_EBADREQ, 0, "invalid port"},
        {"CONNECT u@example.com:443 HTTP/1.1", VD_EBADREQ, 0, "userinfo not allowed"},
        {"CONNECT / HTTP/1.1", VD_EBADREQ, 0, "CONNECT requires authority-form"},
        {"CONNECT /x:443 HTTP/1.1", VD_EBADREQ, 0, "CONNECT requires authority-form"},
        {"CONNECT http://example.com:443/ HTTP/1.1", VD_EBADREQ, 0,
         "CONNECT requires authority-form"},
        {"CONNECT * HTTP/1.1", VD_EBADREQ, 0, "asterisk-form only with OPTIONS"},
        {"OPTIONS * HTTP/1.1", 0, VD_TARGET_ASTERISK, NULL},
        {"OPTIONS / HTTP/1.1", 0, VD_TARGET_ORIGIN, NULL},
        {"GET * HTTP/1.1", VD_EBADREQ, 0, "asterisk-form only with OPTIONS"},
        {"options * HTTP/1.1", VD_EBADREQ, 0, "asterisk-form only with OPTIONS"},
        {"OPTIONS *x HTTP/1.1", VD_EBADREQ, 0, "invalid request target"},
        {"OPTIONS ** HTTP/1.1", VD_EBADREQ, 0, "invalid request target"},
        {"GET example.com:443 HTTP/1.1", VD_EBADREQ, 0, "invalid request target"},
        {"connect example.com:443 HTTP/1.1", VD_EBADREQ, 0, "invalid request target"},
        {"GET x HTTP/1.1", VD_EBADREQ, 0, "invalid request target"},
        {"GET ?q HTTP/1.1", VD_EBADREQ, 0, "invalid request target"},
        {"GET 1http://h/ HTTP/1.1", VD_EBADREQ, 0, "invalid request target"},
    };
    run_req_cases(cases, VD_ARRAY_LEN(cases), "\r\nHost: h\r\n\r\n");

    /* The parse that comes with an absolute target: views into the target. */
    static const char in[] = "GET https://Example.com:8443/a?b HTTP/1.1\r\nHost: h\r\n\r\n";
    struct vd_h1_req_head req;
    const char *why;
    assert_int_equal(preq_n(in, sizeof(in) - 1, &deflim, &req, &why), (int)sizeof(in) - 1);
    assert_true(req.has_uri && req.uri.https && req.uri.has_port);
    assert_int_equal(req.uri.port, 8443);
    assert_memory_equal(req.uri.host.base, "Example.com", req.uri.host.len);
    assert_int_equal(req.uri.host.len, 11);
    assert_memory_equal(req.uri.path.base, "/a?b", 4);
    assert_ptr_equal(req.uri.authority.base, req.target.base + 8);
}

/* RFC 9112 §3 and §2.3: the request line, strictly. */
static void
test_req_line(void **state)
{
    (void)state;
    static const struct rcase cases[] = {
        {"PROPFIND /dav HTTP/1.1", 0, VD_TARGET_ORIGIN, NULL},
        {"M-SEARCH~!#$%&'*+.^_`| / HTTP/1.1", 0, VD_TARGET_ORIGIN, NULL},
        {"GET /~a!$&'()*+,;=:@[]{}|\\^`\"<> HTTP/1.1", 0, VD_TARGET_ORIGIN, NULL},
        {"GET / HTTP/1.1 ", VD_EBADREQ, 0, "malformed request line"},
        {"GET  / HTTP/1.1", VD_EBADREQ, 0, "malformed request line"},
        {"GET /  HTTP/1.1", VD_EBADREQ, 0, "malformed request line"},
        {" GET / HTTP/1.1", VD_EBADREQ, 0, "invalid method"},
        {"GET\t/ HTTP/1.1", VD_EBADREQ, 0, "malformed request line"},
        {"GET /\tHTTP/1.1", VD_EBADREQ, 0, "invalid character in request target"},
        {"GET / \tHTTP/1.1", VD_EBADREQ, 0, "malformed request line"},
        {"G(ET / HTTP/1.1", VD_EBADREQ, 0, "malformed request line"},
        {"G\x80T / HTTP/1.1", VD_EBADREQ, 0, "malformed request line"},
        {"GET /\x7f HTTP/1.1", VD_EBADREQ, 0, "invalid character in request target"},
        {"GET /\x80 HTTP/1.1", VD_EBADREQ, 0, "invalid character in request target"},
        {"GET /\x01 HTTP/1.1", VD_EBADREQ, 0, "invalid character in request target"},
        {"GET /a\rb HTTP/1.1", VD_EBADREQ, 0, "bare CR"},
        {"GET / HTTP/1.1\rX", VD_EBADREQ, 0, "bare CR"},
        {"GET / HTTP/1.2", VD_EBADREQ, 0, "unsupported HTTP version"},
        {"GET / HTTP/2.0", VD_EBADREQ, 0, "unsupported HTTP version"},
        {"GET / HTTP/0.9", VD_EBADREQ, 0, "unsupported HTTP version"},
        {"GET / HTTP/2", VD_EBADREQ, 0, "unsupported HTTP version"},
        {"GET / HTTP/3", VD_EBADREQ, 0, "unsupported HTTP version"},
        {"GET / http/1.1", VD_EBADREQ, 0, "malformed request line"},
        {"GET / HTTP/1.1.1", VD_EBADREQ, 0, "malformed request line"},
        {"GET / HTTP/1.10", VD_EBADREQ, 0, "malformed request line"},
        {"GET / HTTP/11", VD_EBADREQ, 0, "malformed request line"},
        {"GET / HTTP/1.", VD_EBADREQ, 0, "malformed request line"},
        {"GET / HTTP/1", VD_EBADREQ, 0, "unsupported HTTP version"},
        {"GET / HTTPS/1.1", VD_EBADREQ, 0, "malformed request line"},
        {"GET / XTTP/1.1", VD_EBADREQ, 0, "malformed request line"},
        {"GET / ", VD_EBADREQ, 0, "malformed request line"},
        {"GET /", VD_EBADREQ, 0, "malformed request line"},
        {"GET", VD_EBADREQ, 0, "malformed request line"},
        {"", VD_EBADREQ, 0, NULL},
    };
    run_req_cases(cases, VD_ARRAY_LEN(cases), "\r\nHost: h\r\n\r\n");
    struct vd_h1_req_head req;
    const char *why;
    assert_int_equal(preq("GET / HTTP/1.1\nHost: h\r\n\r\n", &req, &why), VD_EBADREQ);
    assert_string_equal(why, "bare LF");
    assert_int_equal(preq("GET / HTTP/1.1\n\n", &req, &why), VD_EBADREQ);
    assert_string_equal(why, "bare LF");
    /* NUL bytes need an explicit length */
    static const char nul1[] = "GET /\0 HTTP/1.1\r\n\r\n";
    assert_int_equal(preq_n(nul1, sizeof(nul1) - 1, &deflim, &req, &why), VD_EBADREQ);
    static const char nul2[] = "GET\0/ HTTP/1.1\r\n\r\n";
    assert_int_equal(preq_n(nul2, sizeof(nul2) - 1, &deflim, &req, &why), VD_EBADREQ);
    static const char nul3[] = "GET / HTTP/1.1\0\r\n\r\n";
    assert_int_equal(preq_n(nul3, sizeof(nul3) - 1, &deflim, &req, &why), VD_EBADREQ);
    /* Garbage fails as soon as it is seen, without waiting for a line end. */
    assert_int_equal(preq("\x16\x03\x01\x02\x00", &req, &why), VD_EBADREQ);
    assert_int_equal(preq("GET /\x01", &req, &why), VD_EBADREQ);
    assert_int_equal(preq("GET / HTTP/2", &req, &why), VD_EBADREQ);
    assert_string_equal(why, "unsupported HTTP version");
    assert_int_equal(preq("GET / HTTP/1.1 ", &req, &why), VD_EBADREQ);
    assert_int_equal(preq("GET / HTTP/1.1", &req, &why), VD_EAGAIN);
    assert_int_equal(preq("GET / HTTP/1.", &req, &why), VD_EAGAIN);
    assert_int_equal(preq("GET / HTTP/1.1\r", &req, &why), VD_EAGAIN);
}

/* RFC 9112 §5 / RFC 9110 §5.5: field lines. */
static void
test_fields(void **state)
{
    (void)state;
    static const struct rcase cases[] = {
        {"Host: h\r\nA:b\r\n", 0, VD_TARGET_ORIGIN, NULL},
        {"Host: h\r\nA:\t b \t\r\n", 0, VD_TARGET_ORIGIN, NULL},
        {"Host: h\r\nA: b\tc  d\r\n", 0, VD_TARGET_ORIGIN, NULL},
        {"Host: h\r\nA: \x80\xff\r\n", 0, VD_TARGET_ORIGIN, NULL},
        {"Host: h\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n", 0, VD_TARGET_ORIGIN, NULL},
        {"Host: h\r\nA : b\r\n", VD_EBADREQ, 0, "whitespace before colon"},
        {"Host: h\r\nA\t: b\r\n", VD_EBADREQ, 0, "whitespace before colon"},
        {"Host: h\r\nA: b\r\n c\r\n", VD_EBADREQ, 0, "obs-fold not allowed"},
        {"Host: h\r\nA: b\r\n\tc\r\n", VD_EBADREQ, 0, "obs-fold not allowed"},
        {" Host: h\r\n", VD_EBADREQ, 0, "whitespace after start line"},
        {"Host: h\r\n: b\r\n", VD_EBADREQ, 0, "empty field name"},
        {"Host: h\r\nA\r\n", VD_EBADREQ, 0, "invalid header field name"},
        {"Host: h\r\nA(b: c\r\n", VD_EBADREQ, 0, "invalid header field name"},
        {"Host: h\r\nA\x80: c\r\n", VD_EBADREQ, 0, "invalid header field name"},
        {"Host: h\r\n\"A\": c\r\n", VD_EBADREQ, 0, "invalid header field name"},
        {"Host: h\r\nA: b\x7f\r\n", VD_EBADREQ, 0, "invalid character in field value"},
        {"Host: h\r\nA: b\x01\r\n", VD_EBADREQ, 0, "invalid character in field value"},
        {"Host: h\r\nA: b\x0b\r\n", VD_EBADREQ, 0, "invalid character in field value"},
        {"Host: h\r\nA: b\x1b[0m\r\n", VD_EBADREQ, 0, "invalid character in field value"},
        {"Host: h\r\nA: b\rc\r\n", VD_EBADREQ, 0, "bare CR"},
        {"Host: h\r\nA: b\r\r\n", VD_EBADREQ, 0, "bare CR"},
        {"Host: h\r\nA: b\nB: c\r\n", VD_EBADREQ, 0, "bare LF"},
        {"Host: h\nA: b\r\n", VD_EBADREQ, 0, "bare LF"},
        {"Host: h\r\nA: b\r\n\n", VD_EBADREQ, 0, "bare LF"},
        {"Host: h\r\nA\n", VD_EBADREQ, 0, "bare LF"},
        {"Host: h\r\n\rX", VD_EBADREQ, 0, "bare CR"},
    };
    /* Each case is the field block; the final empty line is added. */
    for (size_t i = 0; i < VD_ARRAY_LEN(cases); i++) {
        char buf[512];
        struct vd_h1_req_head req;
        const char *why;
        int k = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n%s\r\n", cases[i].in);
        assert_true(k > 0 && (size_t)k < sizeof(buf));
        int rc = preq_n(buf, (size_t)k, &deflim, &req, &why);
        int want = cases[i].rc ? cases[i].rc : k;
        if (rc != want) {
            fail_msg("case %zu '%s': rc %d want %d (%s)", i, cases[i].in, rc, want, why ? why : "");
        }
        if (cases[i].why && strcmp(why, cases[i].why) != 0) {
            fail_msg("case %zu: why '%s' want '%s'", i, why, cases[i].why);
        }
    }
    struct vd_h1_req_head req;
    const char *why;
    static const char nul[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
    assert_int_equal(preq_n(nul, sizeof(nul) - 1, &deflim, &req, &why), VD_EBADREQ);
    assert_string_equal(why, "invalid character in field value");
    static const char nul2[] = "GET / HTTP/1.1\r\nA\0: c\r\n\r\n";
    assert_int_equal(preq_n(nul2, sizeof(nul2) - 1, &deflim, &req, &why), VD_EBADREQ);
    /* Values: OWS trimmed, inner whitespace kept, empty allowed. */
    assert_true(preq("GET / HTTP/1.1\r\nA:  x \t y  \r\nB:\r\nC: \t \r\n\r\n", &req, &why) > 0);
    assert_int_equal(req.nhdrs, 3);
    assert_true(iov_is(req.hdrs[0].value, "x \t y"));
    assert_int_equal(req.hdrs[1].value.len, 0);
    assert_int_equal(req.hdrs[2].value.len, 0);
    /* A long value exercises the vector scan across 16-byte blocks with a tab in each. */
    char big[600];
    int k = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nLong: ");
    for (int i = 0; i < 500; i++) {
        big[k++] = (i % 37 == 5) ? '\t' : (char)('a' + i % 26);
    }
    k += snprintf(big + k, sizeof(big) - (size_t)k, "x\r\n\r\n");
    assert_int_equal(preq_n(big, (size_t)k, &deflim, &req, &why), k);
    assert_int_equal(req.hdrs[0].value.len, 501);
    big[k - 100] = '\x01';
    assert_int_equal(preq_n(big, (size_t)k, &deflim, &req, &why), VD_EBADREQ);
}

/* Every byte value at every position of field names of 1 to 40 bytes (the scan takes 16 bytes
 * per step: this crosses two steps and the tail loop), against tchar as RFC 9110 §5.6.2 lists
 * it, in requests and responses. Names are "N...N" with the byte at position @k. */
static void
test_field_name_bytes(void **state)
{
    (void)state;
    static const char extra[] = "!#$%&'*+-.^_`|~";
    for (int len = 1; len <= 40; len++) {
        for (int k = 0; k < len; k++) {
            for (int b = 0; b < 256; b++) {
                bool tchar = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') ||
                             (b >= 'A' && b <= 'Z') || (b && strchr(extra, b));
                char buf[128];
                int at = snprintf(buf, sizeof(buf), "%s",
                                  k % 2 ? "HTTP/1.1 200 OK\r\n" : "GET / HTTP/1.1\r\n");
                int ns = at;
                memset(buf + at, 'N', (size_t)len);
                buf[at + k] = (char)b;
                at += len;
                at += snprintf(buf + at, sizeof(buf) - (size_t)at, ": v\r\n\r\n");
                const char *why;
                int rc;
                size_t nh;
                struct vd_iov name;
                if (k % 2) {
                    struct vd_h1_resp_head resp;
                    rc = presp_n(buf, (size_t)at, &deflim, &resp, &why);
                    nh = resp.nhdrs;
                    name = resp.hdrs[0].name;
                } else {
                    struct vd_h1_req_head req;
                    rc = preq_n(buf, (size_t)at, &deflim, &req, &why);
                    nh = req.nhdrs;
                    name = req.hdrs[0].name;
                }
                if (tchar) {
                    if (rc != at || nh != 1 || name.len != (size_t)len || name.base != g_buf + ns) {
                        fail_msg("len %d byte %d at %d: rc %d want %d (%s)", len, b, k, rc, at,
                                 why ? why : "");
                    }
                } else if (rc >= 0) {
                    /* A colon inside the name ends it, and the rest is the value. */
                    if (b != ':' || k == 0 || name.len != (size_t)k) {
                        fail_msg("len %d byte %d at %d: accepted", len, b, k);
                    }
                }
            }
        }
    }
}

/* Builds "GET /aaa... HTTP/1.1" with a request line of exactly @linelen bytes. */
static size_t
mkline(char *buf, size_t linelen)
{
    size_t t = linelen - 13; /* "GET " + target + " HTTP/1.1" */
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', t - 1);
    memcpy(buf + 4 + t, " HTTP/1.1", 9);
    return linelen;
}

static void
test_limits(void **state)
{
    (void)state;
    struct vd_h1_req_head req;
    const char *why;
    char buf[4096];
    const size_t L = 100;
    struct vd_h1_limits lim = {.max_request_line = L, .max_head = 4096, .max_headers = 100};

    /* request line: limit-1, limit, limit+1 (complete) */
    for (size_t len = L - 1; len <= L + 1; len++) {
        size_t n = mkline(buf, len);
        memcpy(buf + n, "\r\n\r\n", 4);
        int rc = preq_n(buf, n + 4, &lim, &req, &why);
        if (len <= L) {
            assert_int_equal(rc, (int)(n + 4));
            assert_int_equal(req.target.len, len - 13);
        } else {
            assert_int_equal(rc, VD_EURITOOLONG);
            assert_string_equal(why, "request line too long");
        }
    }
    /* request line: answered as soon as limit+1 bytes arrived without a CRLF */
    mkline(buf, L + 50);
    assert_int_equal(preq_n(buf, L, &lim, &req, &why), VD_EAGAIN);
    assert_int_equal(preq_n(buf, L + 1, &lim, &req, &why), VD_EURITOOLONG);
    mkline(buf, L);
    buf[L] = '\r';
    assert_int_equal(preq_n(buf, L + 1, &lim, &req, &why), VD_EAGAIN); /* CRLF may follow */
    buf[L + 1] = 'x';
    assert_int_equal(preq_n(buf, L + 2, &lim, &req, &why), VD_EBADREQ); /* syntax first */
    assert_string_equal(why, "bare CR");

    /* head size: "GET / HTTP/1.1\r\n" + "X: " + pad + "\r\n\r\n" is 23 + pad bytes */
    const size_t H = 200;
    lim = (struct vd_h1_limits){.max_request_line = 100, .max_head = H, .max_headers = 100};
    for (size_t total = H - 1; total <= H + 1; total++) {
        size_t pad = total - 23;
        int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nX: ");
        memset(buf + n, 'p', pad);
        memcpy(buf + n + pad, "\r\n\r\nBODY", 8);
        int rc = preq_n(buf, total + 4, &lim, &req, &why);
        if (total <= H) {
            assert_int_equal(rc, (int)total);
        } else {
            assert_int_equal(rc, VD_EHDRTOOBIG);
            assert_string_equal(why, "header section too large");
        }
        /* incomplete: max_head bytes already here means the head is too big */
        rc = preq_n(buf, VD_MIN(total - 1, H), &lim, &req, &why);
        assert_int_equal(rc, total - 1 < H ? VD_EAGAIN : VD_EHDRTOOBIG);
    }
    /* the skipped leading CRLF does not count against max_head */
    {
        size_t pad = H - 23;
        int n = snprintf(buf, sizeof(buf), "\r\nGET / HTTP/1.1\r\nX: ");
        memset(buf + n, 'p', pad);
        memcpy(buf + n + pad, "\r\n\r\n", 4);
        assert_int_equal(preq_n(buf, H + 2, &lim, &req, &why), (int)H + 2);
    }

    /* field count: limit-1, limit, limit+1 */
    const size_t N = 5;
    lim = (struct vd_h1_limits){.max_request_line = 100, .max_head = 4096, .max_headers = N};
    for (size_t nf = N - 1; nf <= N + 1; nf++) {
        int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n");
        for (size_t i = 0; i < nf; i++) {
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, "F%zu: v\r\n", i);
        }
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "\r\n");
        int rc = preq_n(buf, (size_t)n, &lim, &req, &why);
        if (nf <= N) {
            assert_int_equal(rc, n);
            assert_int_equal(req.nhdrs, nf);
        } else {
            assert_int_equal(rc, VD_EHDRTOOBIG);
            assert_string_equal(why, "too many header fields");
        }
    }
    /* zero fields allowed: any field is too many, an empty head is fine */
    lim.max_headers = 0;
    assert_int_equal(preq_n("GET / HTTP/1.1\r\n\r\n", 18, &lim, &req, &why), 18);
    assert_int_equal(preq_n("GET / HTTP/1.1\r\nA: b\r\n\r\n", 24, &lim, &req, &why), VD_EHDRTOOBIG);

    /* response: the status line cap gives 431-class VD_EHDRTOOBIG */
    struct vd_h1_resp_head resp;
    lim = (struct vd_h1_limits){.max_request_line = 22, .max_head = 4096, .max_headers = 10};
    assert_int_equal(presp_n("HTTP/1.1 200 123456789\r\n\r\n", 26, &lim, &resp, &why), 26);
    assert_int_equal(presp_n("HTTP/1.1 200 1234567890\r\n\r\n", 27, &lim, &resp, &why),
                     VD_EHDRTOOBIG);
    assert_int_equal(presp_n("HTTP/1.1 200 123456789", 22, &lim, &resp, &why), VD_EAGAIN);
    assert_int_equal(presp_n("HTTP/1.1 200 1234567890", 23, &lim, &resp, &why), VD_EHDRTOOBIG);
    assert_string_equal(why, "status line too long");
}

/* A head fed one byte more per call: VD_EAGAIN until the last byte, then its length. */
static void
feed_prefixes(const char *msg, bool resp)
{
    size_t n = strlen(msg);
    for (size_t k = 0; k < n; k++) {
        const char *why;
        int rc;
        if (resp) {
            struct vd_h1_resp_head r;
            rc = presp_n(msg, k, &deflim, &r, &why);
        } else {
            struct vd_h1_req_head r;
            rc = preq_n(msg, k, &deflim, &r, &why);
        }
        if (rc != VD_EAGAIN) {
            fail_msg("prefix %zu of %zu: rc %d (%s)", k, n, rc, why ? why : "");
        }
    }
    const char *why;
    if (resp) {
        struct vd_h1_resp_head r;
        assert_int_equal(presp_n(msg, n, &deflim, &r, &why), (int)n);
    } else {
        struct vd_h1_req_head r;
        assert_int_equal(preq_n(msg, n, &deflim, &r, &why), (int)n);
    }
}

static void
test_incremental(void **state)
{
    (void)state;
    feed_prefixes(browser_req, false);
    feed_prefixes("\r\nOPTIONS * HTTP/1.0\r\n\r\n", false);
    feed_prefixes("CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n", false);
    feed_prefixes("GET http://example.com:8080/p?q HTTP/1.1\r\nA:\r\n\r\n", false);
    feed_prefixes("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Tab:\ta\tb\r\n\r\n", true);
    feed_prefixes("HTTP/1.0 404\r\n\r\n", true);
    feed_prefixes("HTTP/1.1 204 \r\n\r\n", true);
}

static void
test_resp(void **state)
{
    (void)state;

    static const struct {
        const char *in;
        int rc;
        int status;
        const char *reason;
        const char *why;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\n\r\n", 0, 200, "OK", NULL},
        {"HTTP/1.0 404 Not Found\r\n\r\n", 0, 404, "Not Found", NULL},
        {"HTTP/1.1 200\r\n\r\n", 0, 200, "", NULL},
        {"HTTP/1.1 200 \r\n\r\n", 0, 200, "", NULL},
        {"HTTP/1.1 999 x\r\n\r\n", 0, 999, "x", NULL},
        {"HTTP/1.1 100 Continue\r\n\r\n", 0, 100, "Continue", NULL},
        {"HTTP/1.1 200 A\tB  C \xe9\r\n\r\n", 0, 200, "A\tB  C \xe9", NULL},
        {"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n", 0, 200, "OK", NULL},
        {"\r\nHTTP/1.1 200 OK\r\n\r\n", 0, 200, "OK", NULL},
        {"HTTP/1.1 099 x\r\n\r\n", VD_EBADRESP, 0, NULL, "invalid status code"},
        {"HTTP/1.1 20 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "invalid status code"},
        {"HTTP/1.1 2000 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "invalid status code"},
        {"HTTP/1.1 2x0 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "invalid status code"},
        {"HTTP/1.1 -20 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "invalid status code"},
        {"HTTP/1.1 200\tOK\r\n\r\n", VD_EBADRESP, 0, NULL, "invalid status code"},
        {"HTTP/1.1  200 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "invalid status code"},
        {"HTTP/1.1\t200 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "malformed status line"},
        {"HTTP/1.1\r\n\r\n", VD_EBADRESP, 0, NULL, "malformed status line"},
        {"HTTP/1.1 \r\n\r\n", VD_EBADRESP, 0, NULL, "invalid status code"},
        {"HTTP/2 200 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "unsupported HTTP version"},
        {"HTTP/1.2 200 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "unsupported HTTP version"},
        {"http/1.1 200 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "malformed status line"},
        {"ICY 200 OK\r\n\r\n", VD_EBADRESP, 0, NULL, "malformed status line"},
        {"HTTP/1.1 200 O\x7fK\r\n\r\n", VD_EBADRESP, 0, NULL, "invalid character in reason phrase"},
        {"HTTP/1.1 200 O\rK\r\n\r\n", VD_EBADRESP, 0, NULL, "bare CR"},
        {"HTTP/1.1 200 OK\n\r\n", VD_EBADRESP, 0, NULL, "bare LF"},
        {"HTTP/1.1 200 OK\r\nA: b\n\r\n", VD_EBADRESP, 0, NULL, "bare LF"},
        {"HTTP/1.1 200 OK\r\nA : b\r\n\r\n", VD_EBADRESP, 0, NULL, "whitespace before colon"},
        {"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", VD_EBADRESP, 0, NULL, "obs-fold not allowed"},
        {"HTTP/1.1 200 OK\r\n\tA: b\r\n\r\n", VD_EBADRESP, 0, NULL, "whitespace after start line"},
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(cases); i++) {
        struct vd_h1_resp_head resp;
        const char *why;
        int n = (int)strlen(cases[i].in);
        int rc = presp(cases[i].in, &resp, &why);
        int want = cases[i].rc ? cases[i].rc : n;
        if (rc != want) {
            fail_msg("case %zu '%s': rc %d want %d (%s)", i, cases[i].in, rc, want, why ? why : "");
        }
        if (rc > 0) {
            assert_int_equal(resp.status, cases[i].status);
            assert_true(iov_is(resp.reason, cases[i].reason));
        } else if (strcmp(why, cases[i].why) != 0) {
            fail_msg("case %zu: why '%s' want '%s'", i, why, cases[i].why);
        }
    }
    struct vd_h1_resp_head resp;
    const char *why;
    assert_int_equal(presp("HTTP/1.0 301 Moved\r\nLocation: /x\r\n\r\n", &resp, &why), 36);
    assert_int_equal(resp.minor, 0);
    assert_int_equal(resp.nhdrs, 1);
    assert_true(iov_is(resp.hdrs[0].value, "/x"));
    assert_int_equal(presp("HTTP/1.1 200 OK\r\n", &resp, &why), VD_EAGAIN);
    assert_int_equal(presp("HTTP/1.1 200", &resp, &why), VD_EAGAIN);
    assert_int_equal(presp("HTTP/1.1 2", &resp, &why), VD_EAGAIN);
    assert_int_equal(presp("HTTP/1.1 2x", &resp, &why), VD_EBADRESP);
    assert_int_equal(presp("<html>", &resp, &why), VD_EBADRESP);
}

/* Request framing end to end: raw bytes through the parser, then vd_http_req_framing. Each row
 * is one smuggling variant; @prc is the parser's verdict (0 = head accepted). */
static void
test_framing_e2e(void **state)
{
    (void)state;

    static const struct {
        const char *fields;
        int prc;
        int frc;
        enum vd_body_kind kind;
        uint64_t length;
        const char *why;
    } cases[] = {
        {"Content-Length: 5", 0, 0, VD_BODY_LENGTH, 5, NULL},
        {"Content-Length: 5, 5", 0, 0, VD_BODY_LENGTH, 5, NULL},
        {"Content-Length: 5\r\nContent-Length: 5", 0, 0, VD_BODY_LENGTH, 5, NULL},
        {"Content-Length: 5\r\nContent-Length: 6", 0, VD_EBADREQ, 0, 0,
         "differing Content-Length values"},
        {"Content-Length: 5, 6", 0, VD_EBADREQ, 0, 0, "differing Content-Length values"},
        {"Content-Length: +5", 0, VD_EBADREQ, 0, 0, "invalid Content-Length"},
        {"Content-Length: -5", 0, VD_EBADREQ, 0, 0, "invalid Content-Length"},
        {"Content-Length: 5 5", 0, VD_EBADREQ, 0, 0, "invalid Content-Length"},
        {"Content-Length: 0x10", 0, VD_EBADREQ, 0, 0, "invalid Content-Length"},
        {"Content-Length: 1234567890123456789", 0, VD_EBADREQ, 0, 0, "invalid Content-Length"},
        {"Content-Length:", 0, VD_EBADREQ, 0, 0, "invalid Content-Length"},
        {"Content-Length : 5", VD_EBADREQ, 0, 0, 0, "whitespace before colon"},
        {"Content-Length: 5\r\n 6", VD_EBADREQ, 0, 0, 0, "obs-fold not allowed"},
        {"Transfer-Encoding: chunked", 0, 0, VD_BODY_CHUNKED, 0, NULL},
        {"Transfer-Encoding: CHUNKED ", 0, 0, VD_BODY_CHUNKED, 0, NULL},
        {"Transfer-Encoding: chunked\r\nContent-Length: 5", 0, VD_EBADREQ, 0, 0,
         "Transfer-Encoding with Content-Length"},
        {"Content-Length: 5\r\nTransfer-Encoding: chunked", 0, VD_EBADREQ, 0, 0,
         "Transfer-Encoding with Content-Length"},
        {"Transfer-Encoding: chunked x", 0, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
        {"Transfer-Encoding: chunked;x", 0, VD_EBADREQ, 0, 0, "invalid Transfer-Encoding"},
        {"Transfer-Encoding: \x0b"
         "chunked",
         VD_EBADREQ, 0, 0, 0, "invalid character in field value"},
        {"Transfer-Encoding: chunked\x0b", VD_EBADREQ, 0, 0, 0, "invalid character in field value"},
        {"Transfer-Encoding: xchunked", 0, VD_EBADREQ, 0, 0, "chunked not final transfer coding"},
        {"Transfer-Encoding:", 0, VD_EBADREQ, 0, 0, "empty Transfer-Encoding"},
        {"Transfer-Encoding: chunked, identity", 0, VD_EBADREQ, 0, 0,
         "chunked not final transfer coding"},
        {"Transfer-Encoding: chunked, chunked", 0, VD_EBADREQ, 0, 0,
         "chunked applied more than once"},
        {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 0, VD_EBADREQ, 0, 0,
         "chunked applied more than once"},
        {"Transfer-Encoding: gzip, chunked", 0, VD_ENOTIMPL, 0, 0, "unsupported transfer coding"},
        {"Transfer-Encoding: identity, chunked", 0, VD_ENOTIMPL, 0, 0,
         "unsupported transfer coding"},
        {"Transfer-Encoding : chunked", VD_EBADREQ, 0, 0, 0, "whitespace before colon"},
        {"Transfer-Encoding:\r\n chunked", VD_EBADREQ, 0, 0, 0, "obs-fold not allowed"},
        {" Transfer-Encoding: chunked", VD_EBADREQ, 0, 0, 0, "obs-fold not allowed"},
        {"Transfer-Encoding\n: chunked", VD_EBADREQ, 0, 0, 0, "bare LF"},
        {"Transfer_Encoding: chunked", 0, 0, VD_BODY_NONE, 0, NULL},
        {"X: y\r\nTransfer-Encoding: chunked\n", VD_EBADREQ, 0, 0, 0, "bare LF"},
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(cases); i++) {
        char buf[512];
        struct vd_h1_req_head req;
        const char *why = NULL;
        int k =
            snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: h\r\n%s\r\n\r\n", cases[i].fields);
        assert_true(k > 0 && (size_t)k < sizeof(buf));
        int rc = preq_n(buf, (size_t)k, &deflim, &req, &why);
        if (cases[i].prc) {
            if (rc != cases[i].prc || strcmp(why, cases[i].why) != 0) {
                fail_msg("case %zu '%s': parse rc %d (%s) want %d (%s)", i, cases[i].fields, rc,
                         why ? why : "", cases[i].prc, cases[i].why);
            }
            continue;
        }
        assert_int_equal(rc, k);
        struct vd_framing f;
        why = NULL;
        rc = vd_http_req_framing(req.hdrs, req.nhdrs, req.minor, &f, &why);
        if (rc != cases[i].frc) {
            fail_msg("case %zu '%s': framing rc %d (%s) want %d", i, cases[i].fields, rc,
                     why ? why : "", cases[i].frc);
        }
        if (rc == 0) {
            assert_int_equal(f.kind, cases[i].kind);
            assert_true(f.length == cases[i].length);
        } else {
            assert_string_equal(why, cases[i].why);
        }
    }
    /* TE in HTTP/1.0 */
    struct vd_h1_req_head req;
    struct vd_framing f;
    const char *why;
    int k = preq("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &req, &why);
    assert_true(k > 0);
    assert_int_equal(vd_http_req_framing(req.hdrs, req.nhdrs, req.minor, &f, &why), VD_EBADREQ);
    assert_string_equal(why, "Transfer-Encoding in HTTP/1.0 request");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_req_basic, teardown),
        cmocka_unit_test_teardown(test_req_forms, teardown),
        cmocka_unit_test_teardown(test_req_line, teardown),
        cmocka_unit_test_teardown(test_fields, teardown),
        cmocka_unit_test_teardown(test_field_name_bytes, teardown),
        cmocka_unit_test_teardown(test_limits, teardown),
        cmocka_unit_test_teardown(test_incremental, teardown),
        cmocka_unit_test_teardown(test_resp, teardown),
        cmocka_unit_test_teardown(test_framing_e2e, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
