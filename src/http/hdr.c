/* SPDX-License-Identifier: MIT */
/* Header field helpers (RFC 9110 §5): the shared character-class table, case-insensitive name
 * lookup, and the comma-separated list iterator of RFC 9110 §5.6.1 with quoted-string
 * awareness (§5.6.4). Views only; nothing here allocates. */
#include "vd/config.h"

#include <string.h>
#include <strings.h>

#include "vd/http.h"

/* Generated from the RFC 9110 / RFC 3986 ABNF; tests/unit/test_http.c recomputes every class
 * from the grammar and compares, so an edit here that drifts from the ABNF fails the tests. */
/* clang-format off */
const uint8_t vd_http_ctype[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 00-07 */
    0x00, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 08-0f */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 10-17 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 18-1f */
    0x42, 0x67, 0x06, 0x47, 0x67, 0x47, 0x67, 0x67, /* 20-27 */
    0x66, 0x66, 0x67, 0xe7, 0x66, 0xe7, 0xe7, 0x46, /* 28-2f */
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* 30-37 */
    0xff, 0xff, 0x46, 0x66, 0x46, 0x66, 0x46, 0x46, /* 38-3f */
    0x46, 0xef, 0xef, 0xef, 0xef, 0xef, 0xef, 0xe7, /* 40-47 */
    0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, /* 48-4f */
    0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, /* 50-57 */
    0xe7, 0xe7, 0xe7, 0x46, 0x06, 0x46, 0x47, 0x67, /* 58-5f */
    0x47, 0xef, 0xef, 0xef, 0xef, 0xef, 0xef, 0xe7, /* 60-67 */
    0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, /* 68-6f */
    0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, /* 70-77 */
    0xe7, 0xe7, 0xe7, 0x46, 0x47, 0x46, 0x67, 0x00, /* 78-7f */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* 80-87 */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* 88-8f */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* 90-97 */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* 98-9f */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* a0-a7 */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* a8-af */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* b0-b7 */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* b8-bf */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* c0-c7 */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* c8-cf */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* d0-d7 */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* d8-df */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* e0-e7 */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* e8-ef */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* f0-f7 */
    0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, /* f8-ff */
};

/* clang-format on */

static inline uint8_t
lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c;
}

bool
vd__hdr_name_eq(struct vd_iov name, const char *lc, size_t n)
{
    return name.len == n && vd__hdr_name_eqn(name.base, lc, n);
}

void
vd_hdr_lower(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t a;
        memcpy(&a, src + i, 8);
        a = vd__lower8(a);
        memcpy(dst + i, &a, 8);
    }
    for (; i < n; i++) {
        dst[i] = lower(src[i]);
    }
}

const struct vd_hdr *
vd_hdr_find(const struct vd_hdr *h, size_t n, const char *lc)
{
    for (size_t i = 0; i < n; i++) {
        if (vd_hdr_name_is(h[i].name, lc)) {
            return &h[i];
        }
    }
    return NULL;
}

static inline bool
is_ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

bool
vd_list_next(struct vd_iov *rest, struct vd_iov *item)
{
    if (rest->len == 0) {
        return false;
    }
    const uint8_t *p = rest->base, *e = p + rest->len;
    /* RFC 9110 §5.6.1: empty elements ("a,,b", leading/trailing commas) are ignored. */
    while (p < e && (is_ows(*p) || *p == ',')) {
        p++;
    }
    if (p == e) {
        rest->base = e;
        rest->len = 0;
        return false;
    }
    const uint8_t *s = p;
    bool quoted = false;
    for (; p < e; p++) {
        uint8_t c = *p;
        if (quoted) {
            /* RFC 9110 §5.6.4: a backslash quotes the next byte, so \" does not close. */
            if (c == '\\' && p + 1 < e) {
                p++;
            } else if (c == '"') {
                quoted = false;
            }
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            break;
        }
    }
    const uint8_t *t = p;
    while (t > s && is_ows(t[-1])) {
        t--;
    }
    item->base = s;
    item->len = (size_t)(t - s);
    rest->base = p;
    rest->len = (size_t)(e - p);
    return true;
}

bool
vd_list_has(struct vd_iov v, const char *lc)
{
    struct vd_iov item;
    while (vd_list_next(&v, &item)) {
        if (vd_hdr_name_is(item, lc)) {
            return true;
        }
    }
    return false;
}

bool
vd_is_token(struct vd_iov v)
{
    if (v.len == 0) {
        return false;
    }
    for (size_t i = 0; i < v.len; i++) {
        if (!(vd_http_ctype[v.base[i]] & VD_CT_TCHAR)) {
            return false;
        }
    }
    return true;
}

size_t
vd_via_count(const struct vd_hdr *h, size_t n, const char *received_by)
{
    size_t want = strlen(received_by), count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!vd_hdr_name_is(h[i].name, "via")) {
            continue;
        }
        struct vd_iov rest = h[i].value, m;
        while (vd_list_next(&rest, &m)) {
            /* Skip received-protocol and the whitespace after it; received-by ends at the next
             * whitespace (a comment may follow). */
            const uint8_t *p = m.base, *e = m.base + m.len;
            while (p < e && !is_ows(*p)) {
                p++;
            }
            while (p < e && is_ows(*p)) {
                p++;
            }
            const uint8_t *s = p;
            while (p < e && !is_ows(*p)) {
                p++;
            }
            if ((size_t)(p - s) == want && strncasecmp((const char *)s, received_by, want) == 0) {
                count++;
            }
        }
    }
    return count;
}
