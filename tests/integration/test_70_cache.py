# SPDX-License-Identifier: MIT
"""Shared cache, memory tier (RFC 9111): hits with Age and Cache-Status (RFC 9211), what is not
stored, freshness precedence, heuristics, revalidation and the 304 update, client conditionals,
Vary, invalidation, HEAD from a stored GET, only-if-cached, incomplete and oversized responses,
LRU eviction."""
import time

import pytest

from vdtest.cache import count, get, httpdate, reqs, url
from vdtest.httpmsg import build_response
from vdtest.origins import Reply


@pytest.fixture
def cproxy(viaduct):
    return viaduct({"cache": {"memory": "16m", "max_object": "64k"}})


def test_second_get_is_a_hit(cproxy, make_origin):
    o = make_origin(build_response(200, b"cached body\n", [("Cache-Control", "max-age=100"),
                                                            ("Date", httpdate(time.time())),
                                                            ("Content-Type", "text/plain")]))
    r1 = get(cproxy, url(o, "/a"))
    assert r1.status == 200 and r1.body == b"cached body\n"
    assert r1.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    r2 = get(cproxy, url(o, "/a"))
    assert r2.status == 200 and r2.body == b"cached body\n"
    assert count(o) == 1
    assert r2.header("content-type") == "text/plain"
    age = int(r2.header("age"))
    assert 0 <= age <= 2
    assert r2.header("cache-status") == "viaduct; hit; ttl=%d" % (100 - age)
    assert "viaduct" in r2.header("via")
    assert r2.header("content-length") == "12"


def test_long_target_is_cached_and_purged(cproxy, make_origin):
    """A key longer than the lookup's stack buffer (1 KiB) takes the allocated path: stored,
    hit, and removed by PURGE like any other."""
    o = make_origin(build_response(200, b"long", [("Cache-Control", "max-age=100")]))
    path = "/" + "p" * 3000 + "?q=" + "v" * 1000
    assert get(cproxy, url(o, path)).header("cache-status") == "viaduct; fwd=uri-miss; stored"
    r = get(cproxy, url(o, path))
    assert (r.body, count(o)) == (b"long", 1)
    assert r.header("cache-status").startswith("viaduct; hit; ttl=")
    assert get(cproxy, url(o, path[:-1])).header("cache-status") == \
        "viaduct; fwd=uri-miss; stored"  # a different key
    assert get(cproxy, url(o, path), method="PURGE").status == 200
    assert get(cproxy, url(o, path)).header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert count(o) == 3


def test_age_from_origin_counts(cproxy, make_origin):
    o = make_origin(build_response(200, b"x", [("Cache-Control", "max-age=100"), ("Age", "30")]))
    get(cproxy, url(o))
    r = get(cproxy, url(o))
    assert count(o) == 1
    assert 30 <= int(r.header("age")) <= 32
    assert r.header("cache-status").startswith("viaduct; hit; ttl=")


@pytest.mark.parametrize("resp_cc,req_hdrs", [
    ("no-store, max-age=100", []),
    ("private, max-age=100", []),
    ("max-age=100", [("Authorization", "Bearer x")]),
    ("max-age=100", [("Cache-Control", "no-store")]),
])
def test_not_stored(cproxy, make_origin, resp_cc, req_hdrs):
    o = make_origin(build_response(200, b"x", [("Cache-Control", resp_cc)]))
    r = get(cproxy, url(o), req_hdrs)
    assert r.header("cache-status") == "viaduct; fwd=uri-miss"
    get(cproxy, url(o), req_hdrs)
    assert count(o) == 2


@pytest.mark.parametrize("cc", ["s-maxage=100, must-revalidate", "public, max-age=100"])
def test_authorization_stored_when_allowed(cproxy, make_origin, cc):
    o = make_origin(build_response(200, b"x", [("Cache-Control", cc)]))
    get(cproxy, url(o), [("Authorization", "Bearer x")])
    r = get(cproxy, url(o), [("Authorization", "Bearer x")])
    assert count(o) == 1 and r.header("cache-status").startswith("viaduct; hit")


def test_freshness_precedence(cproxy, make_origin):
    now = time.time()
    hdr = [("Date", httpdate(now)), ("Expires", httpdate(now + 1000))]
    cases = {
        "/s": [("Cache-Control", "max-age=5, s-maxage=50")] + hdr,
        "/m": [("Cache-Control", "max-age=5")] + hdr,
        "/e": hdr,
    }
    o = make_origin(lambda req: build_response(200, b"x", cases[req.target]))
    ttl = {}
    for p in cases:
        get(cproxy, url(o, p))
        r = get(cproxy, url(o, p))
        ttl[p] = int(r.header("cache-status").split("ttl=")[1])
    assert count(o) == 3
    assert 47 <= ttl["/s"] <= 50
    assert 3 <= ttl["/m"] <= 5
    assert 997 <= ttl["/e"] <= 1000


def test_heuristic_freshness(cproxy, make_origin):
    now = time.time()
    o = make_origin(build_response(200, b"x", [("Date", httpdate(now)),
                                               ("Last-Modified", httpdate(now - 1000))]))
    get(cproxy, url(o))
    r = get(cproxy, url(o))
    assert count(o) == 1
    ttl = int(r.header("cache-status").split("ttl=")[1])
    assert 97 <= ttl <= 100


def test_heuristic_cap(viaduct, make_origin):
    p = viaduct({"cache": {"heuristic_max": "10s"}})
    now = time.time()
    o = make_origin(build_response(200, b"x", [("Date", httpdate(now)),
                                               ("Last-Modified", httpdate(now - 100000))]))
    get(p, url(o))
    r = get(p, url(o))
    assert 7 <= int(r.header("cache-status").split("ttl=")[1]) <= 10


def test_no_heuristic_for_302(cproxy, make_origin):
    now = time.time()
    o = make_origin(build_response(302, b"", [("Location", "/x"), ("Date", httpdate(now)),
                                              ("Last-Modified", httpdate(now - 1000))]))
    get(cproxy, url(o))
    get(cproxy, url(o))
    assert count(o) == 2


def test_request_max_age_0_revalidates(cproxy, make_origin):
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=100"), ("ETag", '"e1"')]),
        build_response(304, b"", [("Cache-Control", "max-age=200"), ("ETag", '"e1"'),
                                  ("X-New", "yes")], length=False),
    ])
    get(cproxy, url(o))
    r = get(cproxy, url(o), [("Cache-Control", "max-age=0")])
    assert r.status == 200 and r.body == b"v1"
    assert r.header("cache-status") == "viaduct; fwd=request; stored"
    rq = reqs(o)
    assert len(rq) == 2 and rq[1].header("if-none-match") == '"e1"'
    # the 304 updated the stored headers
    r = get(cproxy, url(o))
    assert count(o) == 2
    assert r.header("x-new") == "yes"
    assert r.header("cache-control") == "max-age=200"
    assert r.header("cache-status").startswith("viaduct; hit; ttl=")


def test_stale_revalidation_with_last_modified(cproxy, make_origin):
    lm = httpdate(time.time() - 5000)
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=0"), ("Last-Modified", lm)]),
        build_response(304, b"", [("Cache-Control", "max-age=0")], length=False),
        build_response(200, b"v2", [("Cache-Control", "max-age=0"), ("Last-Modified", lm)]),
    ])
    get(cproxy, url(o))
    r = get(cproxy, url(o))
    assert r.body == b"v1" and r.header("cache-status") == "viaduct; fwd=stale; stored"
    assert reqs(o)[1].header("if-modified-since") == lm
    r = get(cproxy, url(o))
    assert r.body == b"v2" and r.header("cache-status") == "viaduct; fwd=stale; stored"


def test_pragma_no_cache(cproxy, make_origin):
    o = make_origin(build_response(200, b"x", [("Cache-Control", "max-age=100")]))
    get(cproxy, url(o))
    get(cproxy, url(o), [("Pragma", "no-cache")])
    assert count(o) == 2


def test_client_etag_answered_304_from_cache(cproxy, make_origin):
    o = make_origin(build_response(200, b"body", [("Cache-Control", "max-age=100"),
                                                  ("ETag", 'W/"v7"'), ("Content-Type", "a/b")]))
    get(cproxy, url(o))
    r = get(cproxy, url(o), [("If-None-Match", '"x", "v7"')])
    assert r.status == 304 and r.body == b""
    assert r.header("etag") == 'W/"v7"'
    assert r.header("content-type") is None
    r = get(cproxy, url(o), [("If-None-Match", '"other"')])
    assert r.status == 200 and r.body == b"body"
    assert count(o) == 1


def test_client_if_modified_since(cproxy, make_origin):
    lm = time.time() - 1000
    o = make_origin(build_response(200, b"body", [("Cache-Control", "max-age=100"),
                                                  ("Last-Modified", httpdate(lm))]))
    get(cproxy, url(o))
    assert get(cproxy, url(o), [("If-Modified-Since", httpdate(lm))]).status == 304
    assert get(cproxy, url(o), [("If-Modified-Since", httpdate(lm - 10))]).status == 200
    assert count(o) == 1


def test_client_if_modified_since_without_last_modified_uses_date(cproxy, make_origin):
    """RFC 9111 §4.3.2: a stored response without Last-Modified is judged by its Date."""
    date = time.time() - 100
    o = make_origin(build_response(200, b"body", [("Cache-Control", "max-age=1000"),
                                                  ("Date", httpdate(date))]))
    get(cproxy, url(o))
    r = get(cproxy, url(o), [("If-Modified-Since", httpdate(date + 50))])
    assert (r.status, r.body) == (304, b"")
    assert get(cproxy, url(o), [("If-Modified-Since", httpdate(date))]).status == 304
    r = get(cproxy, url(o), [("If-Modified-Since", httpdate(date - 10))])
    assert (r.status, r.body) == (200, b"body")
    assert count(o) == 1


@pytest.mark.parametrize("status,cc", [(599, "max-age=100"), (299, "max-age=100"),
                                       (499, "public, max-age=100")])
def test_unknown_status_with_explicit_freshness_is_stored(cproxy, make_origin, status, cc):
    """RFC 9111 §3: a final status the cache does not know is stored when the response says how
    long it is fresh; the hit repeats its status code."""
    o = make_origin(Reply(b"HTTP/1.1 %d Whatever\r\nCache-Control: %s\r\nContent-Length: 4\r\n"
                          b"\r\nbody" % (status, cc.encode())))
    assert get(cproxy, url(o)).header("cache-status") == "viaduct; fwd=uri-miss; stored"
    r = get(cproxy, url(o))
    assert (r.status, r.body) == (status, b"body")
    assert r.header("cache-status").startswith("viaduct; hit; ttl=")
    assert count(o) == 1


def test_unknown_status_heuristic_only_when_public(cproxy, make_origin):
    now = time.time()
    lm = [("Date", httpdate(now)), ("Last-Modified", httpdate(now - 1000))]
    plain = make_origin(build_response(599, b"x", lm))
    get(cproxy, url(plain))
    get(cproxy, url(plain))
    assert count(plain) == 2
    public = make_origin(build_response(599, b"x", lm + [("Cache-Control", "public")]))
    get(cproxy, url(public))
    r = get(cproxy, url(public))
    assert r.status == 599 and count(public) == 1


def test_must_understand(cproxy, make_origin):
    """RFC 9111 §5.2.2.3: must-understand stores an understood status in spite of no-store (a
    fallback for caches that do not know the directive), and never an unknown one."""
    cc = [("Cache-Control", "no-store, must-understand, max-age=100")]
    known = make_origin(build_response(200, b"ok", cc))
    assert get(cproxy, url(known)).header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert get(cproxy, url(known)).header("cache-status").startswith("viaduct; hit; ttl=")
    assert count(known) == 1
    unknown = make_origin(build_response(599, b"no", cc))
    get(cproxy, url(unknown))
    get(cproxy, url(unknown))
    assert count(unknown) == 2


def test_expires_zone_in_any_case(cproxy, make_origin):
    exp = time.strftime("%a, %d %b %Y %H:%M:%S gMT", time.gmtime(time.time() + 100))
    o = make_origin(build_response(200, b"x", [("Expires", exp), ("Date", httpdate(time.time()))]))
    get(cproxy, url(o))
    assert get(cproxy, url(o)).header("cache-status").startswith("viaduct; hit; ttl=")
    assert count(o) == 1


def test_vary_two_variants(cproxy, make_origin):
    o = make_origin(lambda req: build_response(
        200, ("lang=%s" % req.header("accept-language")).encode(),
        [("Cache-Control", "max-age=100"), ("Vary", "Accept-Language")]))
    for lang in ("en", "de", "en", "de"):
        r = get(cproxy, url(o), [("Accept-Language", lang)])
        assert r.body == ("lang=%s" % lang).encode()
    assert count(o) == 2
    r = get(cproxy, url(o), [("Accept-Language", "fr")])
    assert r.header("cache-status") == "viaduct; fwd=vary-miss; stored"


@pytest.mark.parametrize("field,first,same,other", [
    ("Accept-Language", "en, de;q=0.5", ["de;q=0.5, en", "EN,DE;Q=0.500", "en , de ; q=0.5"],
     "en, de;q=0.4"),
    ("Accept-Encoding", "gzip, br", ["br, gzip", "BR,GZIP;q=1"], "gzip"),
])
def test_vary_weighted_lists_share_a_variant(cproxy, make_origin, field, first, same, other):
    """Accept-Language and Accept-Encoding nominated by Vary are compared as what they ask for:
    order among equal weights, case and spacing do not make another variant; weights do."""
    o = make_origin(build_response(200, b"v", [("Cache-Control", "max-age=100"),
                                               ("Vary", field)]))
    assert get(cproxy, url(o), [(field, first)]).header("cache-status") == \
        "viaduct; fwd=uri-miss; stored"
    for v in same:
        assert get(cproxy, url(o), [(field, v)]).header("cache-status").startswith(
            "viaduct; hit; ttl="), v
    assert get(cproxy, url(o), [(field, other)]).header("cache-status") == \
        "viaduct; fwd=vary-miss; stored"
    assert count(o) == 2


def test_vary_star_never_hits(cproxy, make_origin):
    o = make_origin(build_response(200, b"x", [("Cache-Control", "max-age=100"),
                                               ("Vary", "*")]))
    get(cproxy, url(o))
    r = get(cproxy, url(o))
    assert count(o) == 2 and r.header("cache-status") == "viaduct; fwd=uri-miss"


def test_post_invalidates(cproxy, make_origin):
    o = make_origin(lambda req: build_response(
        201 if req.method == "POST" else 200, b"r%d" % req.index,
        [("Cache-Control", "max-age=100"), ("Location", "/other")]))
    get(cproxy, url(o, "/r"))
    get(cproxy, url(o, "/other"))
    assert get(cproxy, url(o, "/r")).header("cache-status").startswith("viaduct; hit")
    with cproxy.connect() as c:
        r = c.exchange("POST", url(o, "/r"), body=b"data")
    assert r.status == 201 and r.header("cache-status") is None
    n = count(o)
    r = get(cproxy, url(o, "/r"))
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    r = get(cproxy, url(o, "/other"))
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert count(o) == n + 2


def test_head_from_stored_get(cproxy, make_origin):
    o = make_origin(build_response(200, b"0123456789", [("Cache-Control", "max-age=100")]))
    get(cproxy, url(o))
    with cproxy.connect() as c:
        r = c.exchange("HEAD", url(o))
        assert r.status == 200 and r.body == b""
        assert r.header("content-length") == "10"
        assert r.header("cache-status").startswith("viaduct; hit")
        r = c.exchange("GET", url(o))  # the connection is still in sync
        assert r.body == b"0123456789"
    assert count(o) == 1


def test_only_if_cached(cproxy, make_origin):
    o = make_origin(build_response(200, b"x", [("Cache-Control", "max-age=100")]))
    r = get(cproxy, url(o), [("Cache-Control", "only-if-cached")])
    assert r.status == 504 and count(o) == 0
    assert r.header("cache-status") == "viaduct; fwd=uri-miss"
    get(cproxy, url(o))
    r = get(cproxy, url(o), [("Cache-Control", "only-if-cached")])
    assert r.status == 200 and count(o) == 1


def test_incomplete_response_not_stored(cproxy, make_origin):
    head = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=100\r\nContent-Length: 100\r\n\r\n"
    o = make_origin([Reply(head + b"only part", close=True),
                     build_response(200, b"full", [("Cache-Control", "max-age=100")])])
    with cproxy.connect() as c:
        c.request("GET", url(o))
        with pytest.raises(Exception):
            c.response()
    r = get(cproxy, url(o))
    assert r.body == b"full" and r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert count(o) == 2


def test_over_max_object_not_stored(cproxy, make_origin):
    big = b"z" * (65 * 1024)
    o = make_origin(build_response(200, big, [("Cache-Control", "max-age=100")]))
    r = get(cproxy, url(o))
    assert r.body == big and r.header("cache-status") == "viaduct; fwd=uri-miss"
    get(cproxy, url(o))
    assert count(o) == 2


def test_chunked_over_max_object_not_stored(cproxy, make_origin):
    # Chunks below 16 KiB: a chunked response whose chunk outgrows the client's output buffer
    # stalls in front_h1 (reported separately; not a cache matter).
    part = b"y" * 8000
    body = b"%x\r\n%s\r\n" % (len(part), part) * 10 + b"0\r\n\r\n"
    o = make_origin(build_response(200, body, [("Cache-Control", "max-age=100"),
                                               ("Transfer-Encoding", "chunked")]))
    r = get(cproxy, url(o))
    assert r.body == part * 10
    get(cproxy, url(o))
    assert count(o) == 2


def test_chunked_response_stored(cproxy, make_origin):
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    o = make_origin(build_response(200, body, [("Cache-Control", "max-age=100"),
                                               ("Transfer-Encoding", "chunked")]))
    get(cproxy, url(o))
    r = get(cproxy, url(o))
    assert r.body == b"hello world" and count(o) == 1
    assert r.header("content-length") == "11"


def test_lru_eviction(viaduct, make_origin):
    p = viaduct({"cache": {"memory": "100k", "max_object": "64k"}})
    o = make_origin(build_response(200, b"q" * 30000, [("Cache-Control", "max-age=100")]))
    for i in range(3):
        get(p, url(o, "/%d" % i))
    get(p, url(o, "/0"))  # hit: /0 becomes the most recent
    assert count(o) == 3
    get(p, url(o, "/3"))  # evicts /1, the least recently used
    assert get(p, url(o, "/0")).header("cache-status").startswith("viaduct; hit")
    assert get(p, url(o, "/1")).header("cache-status").startswith("viaduct; fwd=uri-miss")
    assert count(o) == 5


def test_cache_disabled(viaduct, make_origin):
    p = viaduct({"cache": {"memory": 0}})
    o = make_origin(build_response(200, b"x", [("Cache-Control", "max-age=100")]))
    r = get(p, url(o))
    get(p, url(o))
    assert count(o) == 2 and r.header("cache-status") is None


def test_reverse_route_hit(viaduct, make_origin):
    o = make_origin(build_response(200, b"rev", [("Cache-Control", "max-age=100")]))
    p = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                 "routes": [{"upstream": "http://127.0.0.1:%d" % o.port}]})
    with p.connect() as c:
        c.exchange("GET", "/x", host="site.test")
        r = c.exchange("GET", "/x", host="SITE.test:80")
    assert r.body == b"rev" and r.header("cache-status").startswith("viaduct; hit")
    assert count(o) == 1



def test_large_hit_streams_with_back_pressure(viaduct, make_origin):
    p = viaduct({"cache": {"max_object": "4m"}})
    big = bytes(range(256)) * 8192  # 2 MiB
    o = make_origin(build_response(200, big, [("Cache-Control", "max-age=100")]))
    assert get(p, url(o)).body == big
    with p.connect() as c:
        c.request("GET", url(o))
        time.sleep(0.3)  # the client reads late: the hit waits on the front, not the origin
        r = c.response()
        assert r.body == big and r.header("cache-status").startswith("viaduct; hit")
        r = c.exchange("GET", url(o))  # the connection is reusable after a hit
        assert r.body == big
    assert count(o) == 1


def test_unknown_method_invalidates(cproxy, make_origin):
    o = make_origin(build_response(200, b"x", [("Cache-Control", "max-age=100")]))
    get(cproxy, url(o))
    with cproxy.connect() as c:
        assert c.exchange("PURGEISH", url(o)).status == 200
    assert get(cproxy, url(o)).header("cache-status") == "viaduct; fwd=uri-miss; stored"


def test_error_status_does_not_invalidate(make_origin, cproxy):
    o = make_origin(lambda req: build_response(
        500 if req.method == "DELETE" else 200, b"x", [("Cache-Control", "max-age=100")]))
    get(cproxy, url(o))
    with cproxy.connect() as c:
        assert c.exchange("DELETE", url(o)).status == 500
    assert get(cproxy, url(o)).header("cache-status").startswith("viaduct; hit")


def test_if_match_goes_to_the_origin(cproxy, make_origin):
    o = make_origin(build_response(200, b"x", [("Cache-Control", "max-age=100"),
                                               ("ETag", '"a"')]))
    get(cproxy, url(o))
    r = get(cproxy, url(o), [("If-Match", '"b"')])
    assert count(o) == 2 and r.header("cache-status") == "viaduct; fwd=request; stored"
    assert reqs(o)[1].header("if-match") == '"b"'
    assert reqs(o)[1].header("if-none-match") is None


def test_shared_by_workers_under_concurrency(viaduct, make_origin):
    import threading
    p = viaduct({"workers": 2, "cache": {"memory": "200k", "max_object": "64k"}})
    o = make_origin(lambda req: build_response(
        200, req.target.encode() * 500, [("Cache-Control", "max-age=100")]))
    errors = []

    def run(k):
        try:
            with p.connect() as c:
                for i in range(40):
                    path = "/p%d" % ((i * 7 + k) % 12)
                    r = c.exchange("GET", url(o, path))
                    assert r.status == 200 and r.body == path.encode() * 500
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert count(o) < 240  # most were hits, with evictions in a store smaller than the set


def test_purge_removes_every_variant(cproxy, make_origin):
    """PURGE (Squid/Varnish convention): 200 and every Vary variant gone, 404 when nothing was
    stored; never forwarded."""
    def reply(req):
        lang = req.header("accept-language", "none")
        return build_response(200, b"body-" + lang.encode(),
                              [("Cache-Control", "max-age=100"), ("Vary", "Accept-Language")])
    o = make_origin(reply)
    for lang in ("en", "fr"):
        get(cproxy, url(o, "/p"), headers=[("Accept-Language", lang)])
        assert get(cproxy, url(o, "/p"), headers=[("Accept-Language", lang)]).header(
            "cache-status").startswith("viaduct; hit")
    assert count(o) == 2
    r = get(cproxy, url(o, "/p"), method="PURGE")
    assert r.status == 200 and b"2 stored responses removed" in r.body
    r = get(cproxy, url(o, "/p"), method="PURGE")
    assert r.status == 404 and b"not in the cache" in r.body
    assert count(o) == 2  # PURGE never reached the origin
    get(cproxy, url(o, "/p"), headers=[("Accept-Language", "en")])
    assert count(o) == 3  # the variant was really gone


def test_purge_restricted_by_rules(viaduct, make_origin):
    o = make_origin(build_response(200, b"x", [("Cache-Control", "max-age=100")]))
    vd = viaduct({"access": [{"name": "no-purge", "deny": {"methods": ["PURGE"]}},
                             {"allow": "127.0.0.0/8"}]})
    get(vd, url(o, "/q"))
    r = get(vd, url(o, "/q"), method="PURGE")
    assert r.status == 403 and b'access rule "no-purge"' in r.body
    assert get(vd, url(o, "/q")).header("cache-status").startswith("viaduct; hit")


def test_access_log_shows_cache_status(cproxy, make_origin):
    o = make_origin(build_response(200, b"logged", [("Cache-Control", "max-age=100")]))
    get(cproxy, url(o, "/log"))
    get(cproxy, url(o, "/log"))
    cproxy.wait_for_log(r'"GET %s HTTP/1\.1" 200 .* cache=fwd=uri-miss,stored\n' % url(o, "/log"),
                        access=True)
    cproxy.wait_for_log(r'"GET %s HTTP/1\.1" 200 .* cache=hit,ttl=\d+\n' % url(o, "/log"),
                        access=True)


def test_reload_turns_cache_off_and_on(viaduct, make_origin):
    """A reload that sets cache.memory to 0 stops lookups and empties the store; one that
    turns it back on starts from an empty store (the limits are applied once per
    configuration and thread, not per request)."""
    from vdtest import yamlconf

    def first_status(want_none):
        """Requests until the worker runs the new configuration; returns that answer's
        Cache-Status (None when the cache is off)."""
        deadline = time.monotonic() + 5
        while True:
            cs = get(vd, url(o, "/r")).header("cache-status")
            if (cs is None) == want_none or time.monotonic() > deadline:
                return cs

    vd = viaduct({"cache": {"memory": "16m"}})
    o = make_origin(build_response(200, b"body", [("Cache-Control", "max-age=100"),
                                                  ("Date", httpdate(time.time()))]))
    assert get(vd, url(o, "/r")).header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert get(vd, url(o, "/r")).header("cache-status").startswith("viaduct; hit")
    vd.write_conf(yamlconf.merge(vd.conf, {"cache": {"memory": 0}}))
    vd.reload()
    assert first_status(True) is None, "still caching after the reload"
    n = count(o)
    assert get(vd, url(o, "/r")).header("cache-status") is None and count(o) == n + 1
    vd.write_conf(yamlconf.merge(vd.conf, {"cache": {"memory": "16m"}}))
    vd.reload()
    # The entry stored before the cache was turned off is gone: a miss that stores it again.
    assert first_status(False) == "viaduct; fwd=uri-miss; stored"
    assert get(vd, url(o, "/r")).header("cache-status").startswith("viaduct; hit")
