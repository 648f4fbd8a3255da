/* SPDX-License-Identifier: MIT */
/* Unit tests for src/cache: Cache-Control parsing, HTTP-date forms, storability, freshness,
 * the RFC 9111 §4.2.3 age calculation, request directives, Vary keys, and the memory store
 * (replacement, Vary variants, invalidation, LRU eviction, max_object, references, large bodies
 * in sealed memory files). */
#include "vd/config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vd/cache.h"
#include "vd/err.h"
#include "vd_test.h"

#define H(n, v)                                                                                    \
    {                                                                                              \
        VD_IOV_LIT(n), VD_IOV_LIT(v)                                                               \
    }

static struct vd_cache_cc
cc_of(const char *v)
{
    struct vd_hdr h = {VD_IOV_LIT("Cache-Control"), {(const uint8_t *)v, strlen(v)}};
    struct vd_cache_cc cc;
    vd_cache_cc_parse(&h, 1, &cc);
    return cc;
}

static void
test_cc_parse(void **state)
{
    (void)state;
    struct vd_cache_cc cc = cc_of("max-age=60, s-maxage=\"30\", no-cache=\"Set-Cookie, X\", "
                                  "Private, foo=bar, public");
    assert_int_equal(cc.max_age, 60);
    assert_int_equal(cc.s_maxage, 30);
    assert_true(cc.no_cache && cc.private_ && cc.public_);
    assert_false(cc.no_store);
    /* first occurrence wins */
    cc = cc_of("max-age=5, max-age=100");
    assert_int_equal(cc.max_age, 5);
    /* invalid values read as 0 (stale) */
    assert_int_equal(cc_of("max-age=abc").max_age, 0);
    assert_int_equal(cc_of("max-age").max_age, 0);
    assert_int_equal(cc_of("max-age=-1").max_age, 0);
    /* overflow clamps to 2^31 */
    assert_int_equal(cc_of("max-age=99999999999999999999").max_age, VD_CACHE_DELTA_MAX);
    /* request directives */
    cc = cc_of("max-stale, min-fresh=10, only-if-cached, no-store");
    assert_int_equal(cc.max_stale, VD_CACHE_ANY_STALE);
    assert_int_equal(cc.min_fresh, 10);
    assert_true(cc.only_if_cached && cc.no_store);
    assert_int_equal(cc_of("max-stale=7").max_stale, 7);
    assert_int_equal(cc_of("").max_age, -1);
    /* several field lines */
    struct vd_hdr two[] = {H("Cache-Control", "no-transform"), H("cache-control", "max-age=3")};
    vd_cache_cc_parse(two, 2, &cc);
    assert_true(cc.no_transform);
    assert_int_equal(cc.max_age, 3);
}

static void
test_pragma(void **state)
{
    (void)state;
    struct vd_hdr p[] = {H("Pragma", "no-cache")};
    struct vd_cache_cc cc;
    vd_cache_req_cc(p, 1, &cc);
    assert_true(cc.no_cache);
    struct vd_hdr p2[] = {H("Pragma", "no-cache"), H("Cache-Control", "max-age=10")};
    vd_cache_req_cc(p2, 2, &cc);
    assert_false(cc.no_cache);
    assert_int_equal(cc.max_age, 10);
}

static void
test_dates(void **state)
{
    (void)state;
    time_t t;
    assert_int_equal(vd_http_date_parse(VD_IOV_LIT("Sun, 06 Nov 1994 08:49:37 GMT"), &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(vd_http_date_parse(VD_IOV_LIT("Sunday, 06-Nov-94 08:49:37 GMT"), &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(vd_http_date_parse(VD_IOV_LIT("Sun Nov  6 08:49:37 1994"), &t), 0);
    assert_int_equal(t, 784111777);
    assert_true(vd_http_date_parse(VD_IOV_LIT("0"), &t) < 0);
    assert_true(vd_http_date_parse(VD_IOV_LIT("Sun, 06 Nov 1994 08:49:37 UTC"), &t) < 0);
    assert_true(vd_http_date_parse(VD_IOV_LIT("Sun, 06 Foo 1994 08:49:37 GMT"), &t) < 0);
    /* Case does not matter in the names (weekday, month, zone; RFC 9110 §5.6.7 asks recipients
     * to be robust), everything else does. */
    t = 0;
    assert_int_equal(vd_http_date_parse(VD_IOV_LIT("SUN, 06 NOV 1994 08:49:37 gMT"), &t), 0);
    assert_int_equal(t, 784111777);
    t = 0;
    assert_int_equal(vd_http_date_parse(VD_IOV_LIT("Sunday, 06-nov-94 08:49:37 gmt"), &t), 0);
    assert_int_equal(t, 784111777);
    assert_true(vd_http_date_parse(VD_IOV_LIT("Sun, 06 Nov 1994 08:49:37 GMX"), &t) < 0);
}

static enum vd_cache_store_verdict
storable(const char *method, int status, const char *req_cc, const char *resp_cc, bool auth,
         const struct vd_hdr *extra, size_t nextra)
{
    struct vd_cache_cc rq = cc_of(req_cc), rs = cc_of(resp_cc);
    return vd_cache_storable((struct vd_iov){(const uint8_t *)method, strlen(method)}, status, &rq,
                             &rs, auth, extra, nextra);
}

static void
test_storable(void **state)
{
    (void)state;
    struct vd_hdr none[1] = {H("X", "y")};
    assert_int_equal(storable("GET", 200, "", "", false, none, 0), VD_CACHE_STORE_OK);
    assert_int_equal(storable("POST", 200, "", "max-age=5", false, none, 0), VD_CACHE_NO_METHOD);
    assert_int_equal(storable("GET", 206, "", "max-age=5", false, none, 0), VD_CACHE_NO_STATUS);
    assert_int_equal(storable("GET", 304, "", "max-age=5", false, none, 0), VD_CACHE_NO_STATUS);
    /* A status this cache does not know: storable with explicit freshness or public (§3), not
     * with must-understand (§5.2.2.3), never a 1xx or a class RFC 9110 does not define. */
    assert_int_equal(storable("GET", 599, "", "max-age=5", false, none, 0), VD_CACHE_STORE_OK);
    assert_int_equal(storable("GET", 299, "", "public", false, none, 0), VD_CACHE_STORE_OK);
    assert_int_equal(storable("GET", 499, "", "", false, none, 0), VD_CACHE_NOT_WORTH);
    assert_int_equal(storable("GET", 599, "", "max-age=5, must-understand", false, none, 0),
                     VD_CACHE_NO_STATUS);
    assert_int_equal(storable("GET", 103, "", "max-age=5", false, none, 0), VD_CACHE_NO_STATUS);
    assert_int_equal(storable("GET", 600, "", "max-age=5", false, none, 0), VD_CACHE_NO_STATUS);
    /* must-understand with an understood status overrides no-store (a fallback for caches that
     * do not know it); the request's no-store still wins. */
    assert_int_equal(
        storable("GET", 200, "", "no-store, must-understand, max-age=5", false, none, 0),
        VD_CACHE_STORE_OK);
    assert_int_equal(
        storable("GET", 599, "", "no-store, must-understand, max-age=5", false, none, 0),
        VD_CACHE_NO_STATUS);
    assert_int_equal(
        storable("GET", 200, "no-store", "no-store, must-understand, max-age=5", false, none, 0),
        VD_CACHE_NO_STORE);
    assert_int_equal(storable("GET", 200, "no-store", "", false, none, 0), VD_CACHE_NO_STORE);
    assert_int_equal(storable("GET", 200, "", "no-store", false, none, 0), VD_CACHE_NO_STORE);
    assert_int_equal(storable("GET", 200, "", "private", false, none, 0), VD_CACHE_PRIVATE);
    assert_int_equal(storable("GET", 200, "", "max-age=5", true, none, 0), VD_CACHE_AUTH);
    assert_int_equal(storable("GET", 200, "", "s-maxage=5", true, none, 0), VD_CACHE_STORE_OK);
    assert_int_equal(storable("GET", 200, "", "public", true, none, 0), VD_CACHE_STORE_OK);
    assert_int_equal(storable("GET", 200, "", "must-revalidate", true, none, 0), VD_CACHE_STORE_OK);
    assert_int_equal(storable("GET", 302, "", "", false, none, 0), VD_CACHE_NOT_WORTH);
    assert_int_equal(storable("GET", 302, "", "max-age=3", false, none, 0), VD_CACHE_STORE_OK);
    struct vd_hdr exp[] = {H("Expires", "Sun, 06 Nov 2094 08:49:37 GMT")};
    assert_int_equal(storable("GET", 307, "", "", false, exp, 1), VD_CACHE_STORE_OK);
    struct vd_hdr vs[] = {H("Vary", "Accept, *")};
    assert_int_equal(storable("GET", 200, "", "", false, vs, 1), VD_CACHE_VARY_STAR);
    assert_int_equal(storable("GET", 404, "", "", false, none, 0), VD_CACHE_STORE_OK);
}

static void
test_freshness(void **state)
{
    (void)state;
    bool heur;
    struct vd_hdr h[] = {
        H("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        H("Expires", "Sun, 06 Nov 1994 08:50:37 GMT"),
        H("Last-Modified", "Sat, 05 Nov 1994 08:49:37 GMT"),
    };
    struct vd_cache_cc cc = cc_of("max-age=10, s-maxage=20");
    assert_int_equal(vd_cache_freshness(200, &cc, h, 3, 0, 86400, &heur), 20);
    cc = cc_of("max-age=10");
    assert_int_equal(vd_cache_freshness(200, &cc, h, 3, 0, 86400, &heur), 10);
    cc = cc_of("");
    assert_int_equal(vd_cache_freshness(200, &cc, h, 3, 0, 86400, &heur), 60);
    assert_false(heur);
    /* heuristic: 10% of a day, capped */
    assert_int_equal(
        vd_cache_freshness(200, &cc, (struct vd_hdr[]){h[0], h[2]}, 2, 0, 86400, &heur), 8640);
    assert_true(heur);
    assert_int_equal(vd_cache_freshness(200, &cc, (struct vd_hdr[]){h[0], h[2]}, 2, 0, 100, &heur),
                     100);
    /* not for a status that is not heuristically cacheable */
    assert_int_equal(vd_cache_freshness(302, &cc, (struct vd_hdr[]){h[0], h[2]}, 2, 0, 100, &heur),
                     0);
    /* an invalid Expires is in the past */
    struct vd_hdr bad[] = {H("Date", "Sun, 06 Nov 1994 08:49:37 GMT"), H("Expires", "0"), h[2]};
    assert_int_equal(vd_cache_freshness(200, &cc, bad, 3, 0, 86400, &heur), 0);
}

static void
test_age(void **state)
{
    (void)state;
    /* Date 100, request sent at 110, response at 112 with Age 5; now 120. */
    struct vd_cache_times tm = {
        .request_time = 110, .response_time = 112, .date_value = 100, .age_value = 5};
    /* apparent 12, delay 2, corrected age value 7, initial 12, resident 8 -> 20 */
    assert_int_equal(vd_cache_current_age(&tm, 120), 20);
    /* Age dominates when the clocks agree */
    tm = (struct vd_cache_times){
        .request_time = 100, .response_time = 101, .date_value = 101, .age_value = 30};
    assert_int_equal(vd_cache_current_age(&tm, 101), 31);
    /* a Date in the future does not make the age negative */
    tm = (struct vd_cache_times){
        .request_time = 100, .response_time = 100, .date_value = 200, .age_value = 0};
    assert_int_equal(vd_cache_current_age(&tm, 100), 0);
    struct vd_hdr h[] = {H("Age", "17"), H("Date", "Sun, 06 Nov 1994 08:49:37 GMT")};
    vd_cache_times_init(&tm, h, 2, 5, 6);
    assert_int_equal(tm.age_value, 17);
    assert_int_equal(tm.date_value, 784111777);
    struct vd_hdr two[] = {H("Age", "7200, 0")};
    vd_cache_times_init(&tm, two, 1, 5, 6);
    assert_int_equal(tm.age_value, 7200);
    struct vd_hdr bad[] = {H("Age", "x")};
    vd_cache_times_init(&tm, bad, 1, 5, 6);
    assert_int_equal(tm.age_value, 0);
    assert_int_equal(tm.date_value, 6);
}

static void
test_usable(void **state)
{
    (void)state;
    struct vd_cache_cc none = cc_of(""), rs = cc_of("max-age=100");
    assert_int_equal(vd_cache_usable(&none, &rs, 100, 10), VD_CACHE_USE_FRESH);
    assert_int_equal(vd_cache_usable(&none, &rs, 100, 100), VD_CACHE_USE_REVALIDATE);
    struct vd_cache_cc q = cc_of("max-age=0");
    assert_int_equal(vd_cache_usable(&q, &rs, 100, 0), VD_CACHE_USE_REVALIDATE);
    q = cc_of("max-age=5");
    assert_int_equal(vd_cache_usable(&q, &rs, 100, 6), VD_CACHE_USE_REVALIDATE);
    assert_int_equal(vd_cache_usable(&q, &rs, 100, 5), VD_CACHE_USE_FRESH);
    q = cc_of("min-fresh=50");
    assert_int_equal(vd_cache_usable(&q, &rs, 100, 60), VD_CACHE_USE_REVALIDATE);
    q = cc_of("no-cache");
    assert_int_equal(vd_cache_usable(&q, &rs, 100, 1), VD_CACHE_USE_REVALIDATE);
    struct vd_cache_cc nc = cc_of("no-cache, max-age=100");
    assert_int_equal(vd_cache_usable(&none, &nc, 100, 1), VD_CACHE_USE_REVALIDATE);
    q = cc_of("max-stale=10");
    assert_int_equal(vd_cache_usable(&q, &rs, 100, 105), VD_CACHE_USE_FRESH);
    assert_int_equal(vd_cache_usable(&q, &rs, 100, 111), VD_CACHE_USE_REVALIDATE);
    struct vd_cache_cc mr = cc_of("max-age=100, must-revalidate");
    assert_int_equal(vd_cache_usable(&q, &mr, 100, 105), VD_CACHE_USE_REVALIDATE);
    q = cc_of("max-stale");
    assert_int_equal(vd_cache_usable(&q, &rs, 100, 100000), VD_CACHE_USE_FRESH);
}

static void
test_stale_directives(void **state)
{
    (void)state;
    struct vd_cache_cc cc = cc_of("max-age=1, stale-while-revalidate=30, stale-if-error=\"60\"");
    assert_int_equal(cc.stale_while_revalidate, 30);
    assert_int_equal(cc.stale_if_error, 60);
    cc = cc_of("max-age=1");
    assert_int_equal(cc.stale_while_revalidate, -1);
    assert_int_equal(cc.stale_if_error, -1);
    /* an invalid or missing value grants nothing */
    assert_int_equal(cc_of("stale-if-error=x").stale_if_error, -1);
    assert_int_equal(cc_of("stale-if-error").stale_if_error, -1);
    assert_int_equal(cc_of("stale-while-revalidate=-5").stale_while_revalidate, -1);
    assert_int_equal(cc_of("stale-if-error=5, stale-if-error=50").stale_if_error, 5);

    struct vd_cache_cc none = cc_of("");
    struct vd_cache_cc sie = cc_of("max-age=10, stale-if-error=60");
    /* within the window (staleness = age - lifetime), at its edge, past it */
    assert_true(vd_cache_stale_if_error(&none, &sie, 10, 5));
    assert_true(vd_cache_stale_if_error(&none, &sie, 10, 70));
    assert_false(vd_cache_stale_if_error(&none, &sie, 10, 71));
    /* no permission at all */
    struct vd_cache_cc plain = cc_of("max-age=10");
    assert_false(vd_cache_stale_if_error(&none, &plain, 10, 11));
    /* the request directive grants it too, and the larger window counts */
    struct vd_cache_cc rq = cc_of("stale-if-error=100");
    assert_true(vd_cache_stale_if_error(&rq, &plain, 10, 110));
    assert_false(vd_cache_stale_if_error(&rq, &plain, 10, 111));
    assert_true(vd_cache_stale_if_error(&rq, &sie, 10, 100));
    /* forbidden by the response */
    const char *forbid[] = {"max-age=10, stale-if-error=60, must-revalidate",
                            "max-age=10, stale-if-error=60, proxy-revalidate",
                            "max-age=10, stale-if-error=60, no-cache"};
    for (size_t i = 0; i < VD_ARRAY_LEN(forbid); i++) {
        struct vd_cache_cc f = cc_of(forbid[i]);
        assert_false(vd_cache_stale_if_error(&rq, &f, 10, 11));
    }
    /* s-maxage yields to an explicit stale-if-error */
    struct vd_cache_cc sm = cc_of("s-maxage=10, stale-if-error=60");
    assert_true(vd_cache_stale_if_error(&none, &sm, 10, 20));

    /* stale-while-revalidate: only stale, only within the window */
    struct vd_cache_cc swr = cc_of("max-age=10, stale-while-revalidate=30");
    assert_false(vd_cache_stale_while_revalidate(&none, &swr, 10, 9)); /* fresh: a plain hit */
    assert_true(vd_cache_stale_while_revalidate(&none, &swr, 10, 10));
    assert_true(vd_cache_stale_while_revalidate(&none, &swr, 10, 40));
    assert_false(vd_cache_stale_while_revalidate(&none, &swr, 10, 41));
    assert_false(vd_cache_stale_while_revalidate(&none, &plain, 10, 11));
    const char *no_swr[] = {"max-age=10, stale-while-revalidate=30, no-cache",
                            "max-age=10, stale-while-revalidate=30, must-revalidate",
                            "max-age=10, stale-while-revalidate=30, proxy-revalidate"};
    for (size_t i = 0; i < VD_ARRAY_LEN(no_swr); i++) {
        struct vd_cache_cc f = cc_of(no_swr[i]);
        assert_false(vd_cache_stale_while_revalidate(&none, &f, 10, 11));
    }
    struct vd_cache_cc smw = cc_of("s-maxage=10, stale-while-revalidate=30");
    assert_true(vd_cache_stale_while_revalidate(&none, &smw, 10, 11));
    /* what the request asks for */
    const char *req_no[] = {"no-cache", "max-age=0", "max-age=15", "min-fresh=1"};
    for (size_t i = 0; i < VD_ARRAY_LEN(req_no); i++) {
        struct vd_cache_cc q = cc_of(req_no[i]);
        assert_false(vd_cache_stale_while_revalidate(&q, &swr, 10, 20));
    }
    struct vd_cache_cc old_ok = cc_of("max-age=100, max-stale=5");
    assert_true(vd_cache_stale_while_revalidate(&old_ok, &swr, 10, 20));
}

static int
tp(const char *v, struct vd_cache_cc *cc)
{
    struct vd_hdr h = {VD_IOV_LIT("CDN-Cache-Control"), {(const uint8_t *)v, strlen(v)}};
    return vd_cache_targeted_parse(&h, 1, "cdn-cache-control", cc);
}

static void
test_targeted(void **state)
{
    (void)state;
    struct vd_cache_cc cc;
    assert_int_equal(tp("max-age=3600", &cc), 0);
    assert_true(cc.present && cc.targeted);
    assert_int_equal(cc.max_age, 3600);
    assert_int_equal(cc.s_maxage, -1);
    assert_int_equal(tp("no-store", &cc), 0);
    assert_true(cc.no_store);
    assert_int_equal(tp("private, no-cache=\"set-cookie\", public=?0", &cc), 0);
    assert_true(cc.private_ && cc.no_cache && !cc.public_);
    /* extension members of any valid type, parameters: ignored */
    assert_int_equal(tp("foobar, max-age=60;x=1, ext=(a \"b\" 1.5 ?0 :AQID:);p, t=tok/x:y", &cc),
                     0);
    assert_int_equal(cc.max_age, 60);
    assert_int_equal(tp("s-maxage=5, stale-while-revalidate=7, stale-if-error=9", &cc), 0);
    assert_true(cc.s_maxage == 5 && cc.stale_while_revalidate == 7 && cc.stale_if_error == 9);
    /* a later member overrides an earlier one; big values clamp */
    assert_int_equal(tp("max-age=5, max-age=100", &cc), 0);
    assert_int_equal(cc.max_age, 100);
    assert_int_equal(tp("max-age=99999999999", &cc), 0);
    assert_int_equal(cc.max_age, VD_CACHE_DELTA_MAX);
    assert_int_equal(tp("no-store, no-store=?0", &cc), 0);
    assert_false(cc.no_store);
    /* empty: ignored */
    assert_int_equal(tp("", &cc), -ENOENT);
    assert_int_equal(tp("   ", &cc), -ENOENT);
    struct vd_hdr none = H("Cache-Control", "max-age=1");
    assert_int_equal(vd_cache_targeted_parse(&none, 1, "cdn-cache-control", &cc), -ENOENT);
    /* not a Dictionary, or a known directive of the wrong type: the field is ignored */
    const char *bad[] = {
        "max-age=10000, &&&&&",
        "max-age=\"10000\"",
        "max-age =100",
        "max-age= 100",
        "MaX-aGe=3600",
        "max-age=-1",
        "max-age=1.5",
        "max-age=,",
        "max-age=1,",
        "no-store=1",
        "public=\"x\"",
        "a=\"unterminated",
        "a=(1 2",
        "a=:bad!:",
        "a=?2",
        "max-age=1234567890123456",
        "a;=1",
        "a=1 b=2",
    };
    for (size_t i = 0; i < VD_ARRAY_LEN(bad); i++) {
        assert_int_equal(tp(bad[i], &cc), -EINVAL);
        assert_int_equal(cc.max_age, -1);
    }
    /* lines parse on their own and members accumulate */
    struct vd_hdr two[] = {H("CDN-Cache-Control", "max-age=10"), H("cdn-cache-control", "private")};
    assert_int_equal(vd_cache_targeted_parse(two, 2, "cdn-cache-control", &cc), 0);
    assert_true(cc.max_age == 10 && cc.private_);

    /* precedence: the first valid targeted field, else Cache-Control (RFC 9213 §2.2) */
    char *names[] = {"x-mine-cache-control", "cdn-cache-control"};
    struct vd_hdr h[] = {H("Cache-Control", "max-age=3600"), H("CDN-Cache-Control", "max-age=1"),
                         H("X-Mine-Cache-Control", "max-age=\"bad\"")};
    vd_cache_resp_cc(h, 3, names, 2, &cc);
    assert_true(cc.targeted && cc.max_age == 1);
    vd_cache_resp_cc(h, 3, names, 0, &cc); /* none configured */
    assert_true(!cc.targeted && cc.max_age == 3600);
    struct vd_hdr h2[] = {H("Cache-Control", "no-store"), H("X-Mine-Cache-Control", "max-age=7"),
                          H("CDN-Cache-Control", "max-age=1")};
    vd_cache_resp_cc(h2, 3, names, 2, &cc);
    assert_true(cc.targeted && cc.max_age == 7 && !cc.no_store);

    /* with a targeted field, Expires counts for neither freshness nor storability */
    struct vd_hdr e[] = {H("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                         H("Expires", "Sun, 06 Nov 1994 09:49:37 GMT"),
                         H("CDN-Cache-Control", "no-transform")};
    bool heur;
    struct vd_cache_cc rq = cc_of("");
    vd_cache_resp_cc(e, 3, names, 2, &cc);
    assert_int_equal(vd_cache_freshness(200, &cc, e, 3, 0, 100, &heur), 0);
    assert_int_equal(vd_cache_storable(VD_IOV_LIT("GET"), 302, &rq, &cc, false, e, 3),
                     VD_CACHE_NOT_WORTH);
    vd_cache_resp_cc(e, 2, names, 2, &cc); /* no targeted field: Expires - Date */
    assert_int_equal(vd_cache_freshness(200, &cc, e, 2, 0, 100, &heur), 3600);
}

static void
test_vary(void **state)
{
    (void)state;
    struct vd_hdr resp[] = {H("Vary", "Accept-Encoding, X-Foo"), H("Vary", "accept")};
    struct vd_hdr req[] = {H("accept-encoding", "gzip,  br"), H("Accept", "text/html"),
                           H("ACCEPT-ENCODING", "zstd")};
    struct vd_dbuf names, key;
    vd_dbuf_init(&names, 1024);
    vd_dbuf_init(&key, 1024);
    assert_int_equal(vd_cache_vary_key(resp, 2, req, 3, &names, &key), 0);
    assert_string_equal(names.p, "accept-encoding,x-foo,accept");
    /* Accept-Encoding and Accept-Language: by weight, then name, lowercase, weights written. */
    assert_string_equal(key.p, "accept-encoding:br, gzip, zstd\nx-foo:\naccept:text/html\n");
    struct vd_dbuf k2;
    vd_dbuf_init(&k2, 1024);
    assert_int_equal(vd_cache_vary_key_names(names.p, req, 3, &k2), 0);
    assert_string_equal(k2.p, key.p);
    struct vd_hdr al[] = {H("Vary", "accept-language")};
    struct vd_hdr l1[] = {H("Accept-Language", "en, de;q=0.5, FR;q=0.50")};
    struct vd_hdr l2[] = {H("accept-language", "Fr ; q=0.5,De;Q=0.500"),
                          H("Accept-Language", "EN")};
    struct vd_dbuf a, b;
    vd_dbuf_init(&a, 1024);
    vd_dbuf_init(&b, 1024);
    assert_int_equal(vd_cache_vary_key(al, 1, l1, 1, NULL, &a), 0);
    assert_int_equal(vd_cache_vary_key(al, 1, l2, 2, NULL, &b), 0);
    assert_string_equal(a.p, "accept-language:en, de;q=0.5, fr;q=0.5\n");
    assert_string_equal(b.p, a.p);
    /* A weight of 0 is kept (it refuses that language); anything else stays as sent. */
    struct vd_hdr l3[] = {H("Accept-Language", "en, *;q=0")};
    vd_dbuf_reset(&a);
    assert_int_equal(vd_cache_vary_key(al, 1, l3, 1, NULL, &a), 0);
    assert_string_equal(a.p, "accept-language:en, *;q=0\n");
    struct vd_hdr l6[] = {H("Accept-Language", "a;q=0.001, b;q=0.51, c;q=0.990, d;q=1.000")};
    vd_dbuf_reset(&a);
    assert_int_equal(vd_cache_vary_key(al, 1, l6, 1, NULL, &a), 0);
    assert_string_equal(a.p, "accept-language:d, c;q=0.99, b;q=0.51, a;q=0.001\n");
    struct vd_hdr l4[] = {H("Accept-Language", "en;level=1, de")};
    vd_dbuf_reset(&a);
    assert_int_equal(vd_cache_vary_key(al, 1, l4, 1, NULL, &a), 0);
    assert_string_equal(a.p, "accept-language:en;level=1, de\n");
    struct vd_hdr l5[] = {H("Accept-Language", "en;q=1.5, de")};
    vd_dbuf_reset(&a);
    assert_int_equal(vd_cache_vary_key(al, 1, l5, 1, NULL, &a), 0);
    assert_string_equal(a.p, "accept-language:en;q=1.5, de\n");
    vd_dbuf_free(&a);
    vd_dbuf_free(&b);
    struct vd_hdr star[] = {H("Vary", "Accept, *")};
    vd_dbuf_reset(&key);
    assert_int_equal(vd_cache_vary_key(star, 1, req, 3, NULL, &key), -EINVAL);
    vd_dbuf_free(&names);
    vd_dbuf_free(&key);
    vd_dbuf_free(&k2);
}

static struct vd_cache_entry *
mk(const char *key, const char *vary, const char *vkey, size_t body_len, time_t rt)
{
    static uint8_t body[4096];
    struct vd_hdr h[] = {H("Content-Type", "text/plain"), H("Age", "3"), H("Via", "1.1 x"),
                         H("Content-Length", "9")};
    struct vd_cache_times tm = {.request_time = rt, .response_time = rt, .date_value = rt};
    return vd_cache_entry_new(key, vary, vkey, 200, h, 4, body, body_len, &tm, 60);
}

static void
test_store(void **state)
{
    (void)state;
    vd_cache_clear();
    struct vd_cache_limits lim = {.memory = 1 << 20, .max_object = 2000};
    vd_cache_configure(&lim);
    struct vd_cache_entry *e = mk("http://a/x", "", "", 100, 1);
    assert_int_equal(e->nhdrs, 1); /* Age, Via and Content-Length are not stored */
    vd_cache_insert(e);
    bool vm;
    struct vd_cache_entry *got = vd_cache_lookup("http://a/x", NULL, 0, &vm);
    assert_ptr_equal(got, e);
    /* a replacement: the reader keeps the old one alive */
    vd_cache_insert(mk("http://a/x", "", "", 50, 2));
    struct vd_cache_entry *got2 = vd_cache_lookup("http://a/x", NULL, 0, &vm);
    assert_int_equal(got2->body_len, 50);
    assert_int_equal(got->body_len, 100);
    vd_cache_entry_unref(got);
    vd_cache_entry_unref(got2);
    /* too big for max_object */
    vd_cache_insert(mk("http://a/big", "", "", 3000, 1));
    assert_null(vd_cache_lookup("http://a/big", NULL, 0, &vm));
    /* Vary variants */
    vd_cache_insert(mk("http://a/v", "accept", "accept:a\n", 10, 1));
    vd_cache_insert(mk("http://a/v", "accept", "accept:b\n", 20, 1));
    struct vd_hdr ra[] = {H("Accept", "a")}, rb[] = {H("Accept", "b")}, rc[] = {H("Accept", "c")};
    got = vd_cache_lookup("http://a/v", ra, 1, &vm);
    assert_int_equal(got->body_len, 10);
    vd_cache_entry_unref(got);
    got = vd_cache_lookup("http://a/v", rb, 1, &vm);
    assert_int_equal(got->body_len, 20);
    vd_cache_entry_unref(got);
    assert_null(vd_cache_lookup("http://a/v", rc, 1, &vm));
    assert_true(vm);
    /* invalidation removes every variant */
    vd_cache_invalidate("http://a/v");
    assert_null(vd_cache_lookup("http://a/v", ra, 1, &vm));
    assert_false(vm);
    /* LRU: a small store keeps the most recently used */
    vd_cache_clear();
    struct vd_cache_entry *probe = mk("http://s/0", "", "", 1000, 1);
    lim.memory = 3 * probe->size + 10;
    vd_cache_entry_unref(probe);
    vd_cache_configure(&lim);
    vd_cache_insert(mk("http://l/1", "", "", 1000, 1));
    vd_cache_insert(mk("http://l/2", "", "", 1000, 1));
    vd_cache_insert(mk("http://l/3", "", "", 1000, 1));
    got = vd_cache_lookup("http://l/1", NULL, 0, &vm); /* 1 becomes most recent */
    vd_cache_entry_unref(got);
    vd_cache_insert(mk("http://l/4", "", "", 1000, 1)); /* evicts 2 */
    assert_null(vd_cache_lookup("http://l/2", NULL, 0, &vm));
    got = vd_cache_lookup("http://l/1", NULL, 0, &vm);
    assert_non_null(got);
    vd_cache_entry_unref(got);
    struct vd_cache_stats st;
    vd_cache_get_stats(&st);
    assert_int_equal(st.entries, 3);
    assert_true(st.evictions >= 1);
    vd_cache_clear();
    vd_cache_get_stats(&st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
}

/* An entry with a @len-byte body whose bytes depend on their position. */
static struct vd_cache_entry *
mk_big(const char *key, size_t len)
{
    uint8_t *body = malloc(len);
    assert_non_null(body);
    for (size_t i = 0; i < len; i++) {
        body[i] = (uint8_t)(i * 7 + i / 251);
    }
    struct vd_hdr h[] = {H("Content-Type", "application/octet-stream")};
    struct vd_cache_times tm = {.request_time = 1, .response_time = 1, .date_value = 1};
    struct vd_cache_entry *e = vd_cache_entry_new(key, "", "", 200, h, 1, body, len, &tm, 60);
    assert_non_null(e);
    assert_memory_equal(e->body, body, len);
    free(body);
    return e;
}

static void
test_memory_files(void **state)
{
    (void)state;
    vd_cache_clear();
    struct vd_cache_limits lim = {
        .memory = 8 << 20, .max_object = 2 << 20, .sendfile_min = 64 << 10, .memory_files = 2};
    vd_cache_configure(&lim);
    struct vd_cache_stats st;
    /* At sendfile_min and past it: a sealed memory file holding exactly the body. */
    struct vd_cache_entry *a = mk_big("http://m/a", 64 << 10);
    assert_true(a->body_memfd >= 0);
    assert_false(vd_cache_entry_in_file(a));
    int seals = fcntl(a->body_memfd, F_GET_SEALS);
    int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
    assert_int_equal(seals & want, want);
    struct stat sb;
    assert_int_equal(fstat(a->body_memfd, &sb), 0);
    assert_int_equal(sb.st_size, 64 << 10);
    assert_int_equal(pwrite(a->body_memfd, "x", 1, 0), -1); /* sealed against writes */
    uint8_t probe[16];
    assert_int_equal(vd_cache_entry_read(a, 1000, probe, sizeof(probe)), 0);
    assert_memory_equal(probe, a->body + 1000, sizeof(probe));
    /* Under sendfile_min: ordinary memory. */
    struct vd_cache_entry *small = mk_big("http://m/small", (64 << 10) - 1);
    assert_int_equal(small->body_memfd, -1);
    /* memory_files bounds them: the third large body stays in ordinary memory. */
    struct vd_cache_entry *b = mk_big("http://m/b", 1 << 20);
    struct vd_cache_entry *c = mk_big("http://m/c", 1 << 20);
    assert_true(b->body_memfd >= 0);
    assert_int_equal(c->body_memfd, -1);
    vd_cache_get_stats(&st);
    assert_int_equal(st.memory_files, 2);
    /* Stored, looked up, replaced: the store's reference keeps a memory file; the last one
     * closes it and frees its slot. */
    vd_cache_insert(a);
    vd_cache_insert(small);
    vd_cache_insert(c);
    bool vm;
    struct vd_cache_entry *got = vd_cache_lookup("http://m/a", NULL, 0, &vm);
    assert_ptr_equal(got, a);
    vd_cache_entry_unref(got);
    vd_cache_entry_unref(b);
    vd_cache_get_stats(&st);
    assert_int_equal(st.memory_files, 1);
    struct vd_cache_entry *d = mk_big("http://m/d", 1 << 20);
    assert_true(d->body_memfd >= 0);
    vd_cache_entry_unref(d);
    /* Too big for the memory tier, or for max_object: no file is made for it. */
    struct vd_cache_limits tiny = lim;
    tiny.memory = 100 << 10;
    vd_cache_configure(&tiny);
    struct vd_cache_entry *e = mk_big("http://m/e", 200 << 10);
    assert_int_equal(e->body_memfd, -1);
    vd_cache_entry_unref(e);
    /* memory_files 0 or sendfile_min 0: none. */
    struct vd_cache_limits off = lim;
    off.memory_files = 0;
    vd_cache_configure(&off);
    e = mk_big("http://m/e", 1 << 20);
    assert_int_equal(e->body_memfd, -1);
    vd_cache_entry_unref(e);
    off = lim;
    off.sendfile_min = 0;
    vd_cache_configure(&off);
    e = mk_big("http://m/e", 1 << 20);
    assert_int_equal(e->body_memfd, -1);
    vd_cache_entry_unref(e);
    vd_cache_clear();
    vd_cache_get_stats(&st);
    assert_int_equal(st.memory_files, 0);
    struct vd_cache_limits dflt = {.memory = 1 << 20, .max_object = 2000};
    vd_cache_configure(&dflt);
}

/* vd_cache_range_parse over a 10-byte representation; returns the count and fills @out. */
static int
rp(const char *v, uint64_t len, struct vd_cache_range *out, size_t max)
{
    return vd_cache_range_parse((struct vd_iov){(const uint8_t *)v, strlen(v)}, len, out, max);
}

static void
test_range(void **state)
{
    (void)state;
    struct vd_cache_range r[16];
    /* one range; open and suffix forms; last-pos past the end is clipped */
    assert_int_equal(rp("bytes=0-1", 10, r, 16), 1);
    assert_true(r[0].first == 0 && r[0].last == 1);
    assert_int_equal(rp("bytes=4-", 10, r, 16), 1);
    assert_true(r[0].first == 4 && r[0].last == 9);
    assert_int_equal(rp("bytes=-3", 10, r, 16), 1);
    assert_true(r[0].first == 7 && r[0].last == 9);
    assert_int_equal(rp("bytes=-30", 10, r, 16), 1); /* longer suffix: the whole thing */
    assert_true(r[0].first == 0 && r[0].last == 9);
    assert_int_equal(rp("bytes=5-99999999999999999999999", 10, r, 16), 1);
    assert_true(r[0].first == 5 && r[0].last == 9);
    assert_int_equal(rp("BYTES=9-9", 10, r, 16), 1); /* the unit is case-insensitive */
    assert_true(r[0].first == 9 && r[0].last == 9);
    /* several, sorted; overlapping and adjacent ones coalesced; empty elements skipped */
    assert_int_equal(rp("bytes=6-7, 0-1", 10, r, 16), 2);
    assert_true(r[0].first == 0 && r[0].last == 1 && r[1].first == 6 && r[1].last == 7);
    assert_int_equal(rp("bytes=0-3,2-5,,6-6, 8-", 10, r, 16), 2);
    assert_true(r[0].first == 0 && r[0].last == 6 && r[1].first == 8 && r[1].last == 9);
    assert_int_equal(rp("bytes=0-0,0-0,0-0,0-0", 10, r, 16), 1);
    assert_true(r[0].first == 0 && r[0].last == 0);
    assert_int_equal(rp("bytes=-2,0-", 10, r, 16), 1);
    assert_true(r[0].first == 0 && r[0].last == 9);
    /* unsatisfiable ones are dropped; none left: -ERANGE (416) */
    assert_int_equal(rp("bytes=20-30, 1-2", 10, r, 16), 1);
    assert_true(r[0].first == 1 && r[0].last == 2);
    assert_int_equal(rp("bytes=10-", 10, r, 16), -ERANGE);
    assert_int_equal(rp("bytes=-0", 10, r, 16), -ERANGE);
    assert_int_equal(rp("bytes=10-20,30-", 10, r, 16), -ERANGE);
    /* ignored (0): other units, bad syntax, last < first, too many specs, empty representation */
    assert_int_equal(rp("items=0-1", 10, r, 16), 0);
    assert_int_equal(rp("bytes 0-1", 10, r, 16), 0);
    assert_int_equal(rp("bytes=", 10, r, 16), 0);
    assert_int_equal(rp("bytes=,", 10, r, 16), 0);
    assert_int_equal(rp("bytes=5-2", 10, r, 16), 0);
    assert_int_equal(rp("bytes=1-2,5-2", 10, r, 16), 0);
    assert_int_equal(rp("bytes=a-2", 10, r, 16), 0);
    assert_int_equal(rp("bytes=1-2x", 10, r, 16), 0);
    assert_int_equal(rp("bytes=-", 10, r, 16), 0);
    assert_int_equal(rp("bytes=--1", 10, r, 16), 0);
    assert_int_equal(rp("bytes=1", 10, r, 16), 0);
    assert_int_equal(rp("bytes=0-1", 0, r, 16), 0);
    assert_int_equal(rp("bytes=0-0,1-1,2-2", 10, r, 2), 0); /* over the cap */
    assert_int_equal(rp("bytes=0-0,1-1", 10, r, 2), 1);     /* at the cap, coalesced */
    assert_true(r[0].first == 0 && r[0].last == 1);
    assert_int_equal(rp("bytes=0-1", 10, r, 0), 0); /* max_ranges 0: never */
}

static void
test_if_range(void **state)
{
    (void)state;
    struct vd_hdr h[] = {H("ETag", "\"v1\""), H("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                         H("Date", "Sun, 06 Nov 1994 08:50:37 GMT")};
#define IR(v, hh, n) vd_cache_if_range(VD_IOV_LIT(v), hh, n)
    assert_true(IR("\"v1\"", h, 3));
    assert_false(IR("\"v2\"", h, 3));
    assert_false(IR("W/\"v1\"", h, 3)); /* weak tags never match (strong comparison) */
    struct vd_hdr weak[] = {H("ETag", "W/\"v1\"")};
    assert_false(IR("\"v1\"", weak, 1));
    assert_false(IR("\"v1\"", h + 1, 2)); /* nothing stored to compare with */
    /* a date: exact match with Last-Modified, at least 60 s before Date (strong) */
    assert_true(IR("Sun, 06 Nov 1994 08:49:37 GMT", h, 3));
    assert_false(IR("Sun, 06 Nov 1994 08:49:38 GMT", h, 3));
    assert_false(IR("Sunday, 06-Nov-94 08:49:37 GMT", h, 3)); /* not the same field value */
    struct vd_hdr close[] = {H("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
                             H("Date", "Sun, 06 Nov 1994 08:50:00 GMT")};
    assert_false(IR("Sun, 06 Nov 1994 08:49:37 GMT", close, 2)); /* weak: 23 s apart */
    assert_false(IR("Sun, 06 Nov 1994 08:49:37 GMT", close, 1)); /* no Date: not strong */
    assert_false(IR("garbage", h, 3));
#undef IR
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cc_parse),  cmocka_unit_test(test_pragma),
        cmocka_unit_test(test_dates),     cmocka_unit_test(test_storable),
        cmocka_unit_test(test_freshness), cmocka_unit_test(test_age),
        cmocka_unit_test(test_usable),    cmocka_unit_test(test_vary),
        cmocka_unit_test(test_store),     cmocka_unit_test(test_range),
        cmocka_unit_test(test_if_range),  cmocka_unit_test(test_stale_directives),
        cmocka_unit_test(test_targeted),  cmocka_unit_test(test_memory_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
