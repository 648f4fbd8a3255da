/* SPDX-License-Identifier: MIT */
/* Fuzz target: the cache's readers of untrusted fields (src/cache/policy.c). Each input line is
 * a field value, given to Cache-Control, a targeted field (CDN-Cache-Control, RFC 9213), the
 * three HTTP-date forms, Range and a Vary key. Invariants: delta-seconds stay within -1 and
 * 2^31 (or "any" for max-stale); satisfiable ranges are inside the representation, sorted and
 * apart; a Vary key is the same whether built from the response's Vary or from the stored
 * names; and, without quoted strings (whose quotes may pair differently once lines are joined),
 * a key's own value read again gives the same key (the Accept-Language/Accept-Encoding
 * normalisation is idempotent). */
#include "vd/config.h"

#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "vd/buf.h"
#include "vd/cache.h"
#include "vd/http.h"

#define LINES_MAX 16

static void
check_cc(const struct vd_cache_cc *cc)
{
    const int64_t d[] = {cc->max_age, cc->s_maxage, cc->min_fresh, cc->stale_while_revalidate,
                         cc->stale_if_error};
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
        CHECK(d[i] >= -1 && d[i] <= VD_CACHE_DELTA_MAX);
    }
    CHECK(cc->max_stale == VD_CACHE_ANY_STALE ||
          (cc->max_stale >= -1 && cc->max_stale <= VD_CACHE_DELTA_MAX));
}

/* The value after "name:" on the key's first line. */
static struct vd_iov
key_value(const struct vd_dbuf *k)
{
    const char *colon = memchr(k->p, ':', k->len);
    const char *nl = memchr(k->p, '\n', k->len);
    CHECK(colon && nl && colon < nl);
    return (struct vd_iov){(const uint8_t *)colon + 1, (size_t)(nl - colon - 1)};
}

static void
check_vary(const char *field, const struct vd_hdr *lines, size_t n)
{
    struct vd_hdr req[LINES_MAX],
        vary = {{(const uint8_t *)"Vary", 4}, {(const uint8_t *)field, strlen(field)}};
    for (size_t i = 0; i < n; i++) {
        req[i] = (struct vd_hdr){{(const uint8_t *)field, strlen(field)}, lines[i].value};
    }
    struct vd_dbuf names, k1, k2, k3;
    vd_dbuf_init(&names, 1 << 20);
    vd_dbuf_init(&k1, 1 << 20);
    vd_dbuf_init(&k2, 1 << 20);
    vd_dbuf_init(&k3, 1 << 20);
    if (vd_cache_vary_key(&vary, 1, req, n, &names, &k1) == 0 && vd_dbuf_add(&names, "", 1) == 0 &&
        vd_cache_vary_key_names(names.p, req, n, &k2) == 0) {
        CHECK(k1.len == k2.len && memcmp(k1.p, k2.p, k1.len) == 0);
        bool quotes = false;
        for (size_t i = 0; i < n; i++) {
            quotes |= memchr(lines[i].value.base, '"', lines[i].value.len) != NULL;
        }
        struct vd_hdr again = {req[0].name, key_value(&k1)};
        if (!quotes && vd_cache_vary_key(&vary, 1, &again, 1, NULL, &k3) == 0) {
            CHECK(k3.len == k1.len && memcmp(k3.p, k1.p, k1.len) == 0);
        }
    }
    vd_dbuf_free(&names);
    vd_dbuf_free(&k1);
    vd_dbuf_free(&k2);
    vd_dbuf_free(&k3);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vd_hdr lines[LINES_MAX];
    size_t n = 0;
    const uint8_t *p = data, *end = data + size;
    while (p < end && n < LINES_MAX) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *e = nl ? nl : end;
        lines[n].name = (struct vd_iov){(const uint8_t *)"Cache-Control", 13};
        lines[n].value = (struct vd_iov){p, (size_t)(e - p)};
        n++;
        p = nl ? nl + 1 : end;
    }
    if (n == 0) {
        return 0;
    }

    struct vd_cache_cc cc;
    vd_cache_cc_parse(lines, n, &cc);
    check_cc(&cc);
    struct vd_hdr targeted[LINES_MAX];
    for (size_t i = 0; i < n; i++) {
        targeted[i] = (struct vd_hdr){{(const uint8_t *)"CDN-Cache-Control", 17}, lines[i].value};
    }
    int r = vd_cache_targeted_parse(targeted, n, "cdn-cache-control", &cc);
    CHECK(r == 0 || r == -ENOENT || r == -EINVAL);
    if (r == 0) {
        check_cc(&cc);
        CHECK(cc.present && cc.targeted);
    }

    time_t t;
    (void)vd_http_date_parse(lines[0].value, &t);

    struct vd_cache_range rg[8];
    const uint64_t len = 1000;
    r = vd_cache_range_parse(lines[0].value, len, rg, 8);
    CHECK(r == -ERANGE || (r >= 0 && r <= 8));
    for (int i = 0; i < r; i++) {
        CHECK(rg[i].first <= rg[i].last && rg[i].last < len);
        CHECK(i == 0 || rg[i].first > rg[i - 1].last + 1);
    }

    check_vary("Accept-Language", lines, n);
    check_vary("Accept-Encoding", lines, n);
    check_vary("X-Other", lines, n);
    return 0;
}
