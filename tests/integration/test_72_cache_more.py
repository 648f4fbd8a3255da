# SPDX-License-Identifier: MIT
"""Shared cache, beyond the basics of test_70: Range requests answered from a stored complete
response (RFC 9110 §14), stale-if-error and stale-while-revalidate (RFC 5861), and targeted
cache-control fields such as CDN-Cache-Control (RFC 9213)."""
import re
import time

import pytest

from vdtest.cache import count, get, httpdate, reqs, url
from vdtest.httpmsg import build_response
from vdtest.origins import Reply


@pytest.fixture
def cproxy(viaduct):
    return viaduct({"cache": {"memory": "16m", "max_object": "64k"}})


BODY = b"0123456789"


def stored(make_origin, proxy, extra=(), body=BODY, path="/r"):
    """An origin whose one response is stored by a first GET."""
    o = make_origin(build_response(200, body, [("Cache-Control", "max-age=100"),
                                               ("Content-Type", "text/plain"),
                                               ("ETag", '"v1"')] + list(extra)))
    r = get(proxy, url(o, path))
    assert r.status == 200 and r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    return o


# ---- Range (RFC 9110 §14) ------------------------------------------------------------------

@pytest.mark.parametrize("rng,part,cr", [
    ("bytes=2-4", b"234", "bytes 2-4/10"),
    ("bytes=7-", b"789", "bytes 7-9/10"),
    ("bytes=-2", b"89", "bytes 8-9/10"),
    ("bytes=-50", BODY, "bytes 0-9/10"),
    ("bytes=5-1000", b"56789", "bytes 5-9/10"),
    ("bytes=0-3,2-5", b"012345", "bytes 0-5/10"),  # overlapping: coalesced into one part
    ("bytes=40-50, 1-1", b"1", "bytes 1-1/10"),     # the unsatisfiable one is dropped
])
def test_range_single_part_from_cache(cproxy, make_origin, rng, part, cr):
    o = stored(make_origin, cproxy)
    r = get(cproxy, url(o, "/r"), [("Range", rng)])
    assert r.status == 206 and r.body == part
    assert r.header("content-range") == cr
    assert r.header("content-length") == str(len(part))
    assert r.header("content-type") == "text/plain"
    assert r.header("etag") == '"v1"'
    assert r.header("cache-status").startswith("viaduct; hit; ttl=")
    assert r.header("age") is not None
    assert count(o) == 1


def test_range_multipart_from_cache(cproxy, make_origin):
    o = stored(make_origin, cproxy)
    with cproxy.connect() as c:
        r = c.exchange("GET", url(o, "/r"), headers=[("Range", "bytes=6-7,0-1")])
        assert r.status == 206
        assert r.header("content-range") is None  # RFC 9110 §14.6: per part only
        m = re.fullmatch(r"multipart/byteranges; boundary=(vd[0-9a-f]{24})",
                         r.header("content-type"))
        assert m
        b = m.group(1).encode()
        want = (b"--" + b + b"\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n"
                b"01\r\n--" + b + b"\r\nContent-Type: text/plain\r\n"
                b"Content-Range: bytes 6-7/10\r\n\r\n67\r\n--" + b + b"--\r\n")
        assert r.body == want
        assert r.header("content-length") == str(len(want))
        # the connection stays in sync after a multipart body
        r2 = c.exchange("GET", url(o, "/r"))
        assert r2.status == 200 and r2.body == BODY
    assert count(o) == 1


def test_range_multipart_boundary_fresh_each_time(cproxy, make_origin):
    o = stored(make_origin, cproxy)
    seen = set()
    for _ in range(3):
        r = get(cproxy, url(o, "/r"), [("Range", "bytes=0-0,2-2")])
        seen.add(r.header("content-type"))
    assert len(seen) == 3


def test_range_unsatisfiable_416(cproxy, make_origin):
    o = stored(make_origin, cproxy)
    with cproxy.connect() as c:
        r = c.exchange("GET", url(o, "/r"), headers=[("Range", "bytes=10-")])
        assert r.status == 416
        assert r.header("content-range") == "bytes */10"
        assert r.header("cache-status").startswith("viaduct; hit")
        r = c.exchange("GET", url(o, "/r"), headers=[("Range", "bytes=-0")])
        assert r.status == 416
        r = c.exchange("GET", url(o, "/r"))
        assert r.status == 200 and r.body == BODY
    assert count(o) == 1


@pytest.mark.parametrize("hdrs", [
    [("Range", "items=0-1")],                    # another unit
    [("Range", "bytes=5-2")],                    # last-pos before first-pos: invalid
    [("Range", "bytes 0-1")],                    # no "="
    [("Range", "bytes=" + ",".join("%d-%d" % (i, i) for i in range(10)) + ",0-0" * 7)],  # 17
    [("Range", "bytes=0-1"), ("Range", "bytes=2-3")],  # a singleton field twice
])
def test_range_ignored_full_200(cproxy, make_origin, hdrs):
    o = stored(make_origin, cproxy)
    r = get(cproxy, url(o, "/r"), hdrs)
    assert r.status == 200 and r.body == BODY
    assert r.header("content-range") is None
    assert count(o) == 1


def test_range_on_head_ignored(cproxy, make_origin):
    o = stored(make_origin, cproxy)
    with cproxy.connect() as c:
        r = c.exchange("HEAD", url(o, "/r"), headers=[("Range", "bytes=0-1")])
        assert r.status == 200 and r.body == b"" and r.header("content-length") == "10"
        assert c.exchange("GET", url(o, "/r")).body == BODY


def test_max_ranges_config(viaduct, make_origin):
    p = viaduct({"cache": {"max_ranges": 2}})
    o = stored(make_origin, p)
    assert get(p, url(o, "/r"), [("Range", "bytes=0-0,5-5")]).status == 206
    r = get(p, url(o, "/r"), [("Range", "bytes=0-0,5-5,8-8")])
    assert r.status == 200 and r.body == BODY
    p2 = viaduct({"cache": {"max_ranges": 0}})
    o2 = stored(make_origin, p2)
    r = get(p2, url(o2, "/r"), [("Range", "bytes=0-0")])
    assert r.status == 200 and r.body == BODY


def test_if_range(cproxy, make_origin):
    now = time.time()
    lm = httpdate(now - 1000)
    o = stored(make_origin, cproxy, [("Last-Modified", lm), ("Date", httpdate(now))])
    cases = [
        ('"v1"', 206),             # strong match
        ('"v0"', 200),             # another tag: the whole representation
        ('W/"v1"', 200),           # weak tags never match
        (lm, 206),                 # exactly the stored Last-Modified (1000 s before Date)
        (httpdate(now - 999), 200),
    ]
    for v, status in cases:
        r = get(cproxy, url(o, "/r"), [("Range", "bytes=1-2"), ("If-Range", v)])
        assert r.status == status, v
        assert r.body == (b"12" if status == 206 else BODY)
    assert count(o) == 1


def test_if_none_match_before_range(cproxy, make_origin):
    o = stored(make_origin, cproxy)
    r = get(cproxy, url(o, "/r"), [("Range", "bytes=1-2"), ("If-None-Match", '"v1"')])
    assert r.status == 304 and r.body == b""
    assert count(o) == 1


def test_range_on_a_miss_forwarded_206_not_stored(cproxy, make_origin):
    o = make_origin(build_response(206, b"234", [("Cache-Control", "max-age=100"),
                                                 ("Content-Range", "bytes 2-4/10")],
                                   reason="Partial Content"))
    for _ in range(2):
        r = get(cproxy, url(o, "/p"), [("Range", "bytes=2-4")])
        assert r.status == 206 and r.body == b"234"
        assert r.header("content-range") == "bytes 2-4/10"
        assert r.header("cache-status") == "viaduct; fwd=uri-miss"
    assert count(o) == 2
    assert [q.header("range") for q in reqs(o)] == ["bytes=2-4", "bytes=2-4"]


def test_range_after_304_revalidation(cproxy, make_origin):
    o = make_origin([
        build_response(200, BODY, [("Cache-Control", "max-age=0"), ("ETag", '"e"')]),
        build_response(304, b"", [("Cache-Control", "max-age=100"), ("ETag", '"e"')],
                       length=False),
    ])
    get(cproxy, url(o))
    r = get(cproxy, url(o), [("Range", "bytes=3-5")])
    assert r.status == 206 and r.body == b"345"
    assert r.header("content-range") == "bytes 3-5/10"
    assert r.header("cache-status") == "viaduct; fwd=stale; stored"
    assert reqs(o)[1].header("if-none-match") == '"e"'
    assert reqs(o)[1].header("range") is None  # the stored response is refreshed whole


# ---- stale-if-error (RFC 5861 §4) -----------------------------------------------------------

def stale_origin(make_origin, cc, second, extra=()):
    """First response stored (already stale with max-age=0), then @second for every request."""
    return make_origin([build_response(200, b"v1", [("Cache-Control", cc), ("ETag", '"e1"')]
                                       + list(extra)), second])


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_stale_if_error_on_5xx(cproxy, make_origin, status):
    o = stale_origin(make_origin, "max-age=0, stale-if-error=60",
                     build_response(status, b"origin trouble", [("Cache-Control", "no-store")],
                                    reason="Err"))
    get(cproxy, url(o))
    with cproxy.connect() as c:
        r = c.exchange("GET", url(o))
        assert r.status == 200 and r.body == b"v1"
        assert r.header("cache-status") == \
            "viaduct; fwd=stale; fwd-status=%d; detail=stale-if-error" % status
        assert r.header("etag") == '"e1"'
        assert reqs(o)[1].header("if-none-match") == '"e1"'  # it was a revalidation
        r = c.exchange("GET", url(o))  # the client connection is still in sync
        assert r.status == 200 and r.body == b"v1"
    assert count(o) == 3
    cproxy.wait_for_log(r'"GET %s HTTP/1\.1" 200 .* '
                        r'cache=fwd=stale,fwd-status=%d,detail=stale-if-error\n' % (url(o), status),
                        access=True)


def test_stale_if_error_origin_stopped(cproxy, make_origin):
    o = stale_origin(make_origin, "max-age=0, stale-if-error=60", build_response(200, b"v2"))
    get(cproxy, url(o))
    o.stop()
    r = get(cproxy, url(o))
    assert r.status == 200 and r.body == b"v1"
    assert r.header("cache-status") == "viaduct; fwd=stale; detail=stale-if-error"
    cproxy.wait_for_log(r"upstream connection refused .*the stored response answers "
                        r"\(stale-if-error\)")


def test_stale_if_error_on_timeout(viaduct, make_origin):
    p = viaduct({"timeouts": {"upstream_first_byte": "300ms"}})
    o = stale_origin(make_origin, "max-age=0, stale-if-error=60", Reply(b"", hang=True))
    get(p, url(o))
    t0 = time.monotonic()
    r = get(p, url(o))
    assert r.status == 200 and r.body == b"v1"
    assert r.header("cache-status") == "viaduct; fwd=stale; detail=stale-if-error"
    assert time.monotonic() - t0 < 3


def test_stale_if_error_request_directive(cproxy, make_origin):
    o = stale_origin(make_origin, "max-age=0", build_response(503, b"down", reason="Down"))
    get(cproxy, url(o))
    assert get(cproxy, url(o)).status == 503  # the response grants nothing
    r = get(cproxy, url(o), [("Cache-Control", "stale-if-error=30")])
    assert r.status == 200 and r.body == b"v1"
    assert r.header("cache-status") == "viaduct; fwd=stale; fwd-status=503; detail=stale-if-error"


@pytest.mark.parametrize("cc", [
    "max-age=0, stale-if-error=60, must-revalidate",
    "max-age=0, stale-if-error=60, proxy-revalidate",
    "max-age=100, stale-if-error=60, no-cache",
    "max-age=0, stale-if-error=2",  # Age 5: past the window
])
def test_stale_if_error_not_allowed(cproxy, make_origin, cc):
    o = stale_origin(make_origin, cc, build_response(500, b"boom", reason="Boom"),
                     [("Age", "5")])
    get(cproxy, url(o))
    r = get(cproxy, url(o))
    assert r.status == 500 and r.body == b"boom"
    assert count(o) == 2


def test_stale_if_error_s_maxage(cproxy, make_origin):
    """s-maxage's implied proxy-revalidate yields to an explicit stale-if-error."""
    o = stale_origin(make_origin, "s-maxage=0, stale-if-error=60",
                     build_response(502, b"bad", reason="Bad Gateway"))
    get(cproxy, url(o))
    r = get(cproxy, url(o))
    assert r.status == 200 and r.body == b"v1"


def test_stale_if_error_not_for_misses(cproxy, make_origin):
    o = make_origin(build_response(503, b"down", [("Cache-Control", "max-age=0, stale-if-error=60")],
                                   reason="Down"))
    assert get(cproxy, url(o)).status == 503
    o.stop()
    r = get(cproxy, url(o, "/other"))
    assert r.status == 502


# ---- stale-while-revalidate (RFC 5861 §3) ---------------------------------------------------

SWR_STATUS = re.compile(r"viaduct; hit; ttl=(-?\d+); detail=stale-while-revalidate")


def wait_until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met after %.0fs" % timeout)


def test_stale_while_revalidate_one_background_fetch(cproxy, make_origin):
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=0, stale-while-revalidate=30"),
                                    ("ETag", '"e1"')]),
        # the revalidation is slow: while it runs, clients keep getting the stale response
        Reply(build_response(200, b"v2", [("Cache-Control", "max-age=100"), ("ETag", '"e2"')]),
              delay=2.0),
    ])
    get(cproxy, url(o))
    with cproxy.connect() as c:
        for _ in range(3):
            r = c.exchange("GET", url(o), headers=[("Cache-Control", "no-transform"),
                                                   ("If-Modified-Since", httpdate(0))])
            assert r.status == 200 and r.body == b"v1"
            m = SWR_STATUS.fullmatch(r.header("cache-status"))
            assert m and int(m.group(1)) <= 0
    o.wait_requests(2)
    # a later request gets the response the background request stored, fresh
    r = wait_until(lambda: (lambda r: r if r.body == b"v2" else None)(get(cproxy, url(o))))
    assert r.header("cache-status").startswith("viaduct; hit; ttl=")
    o.quiet(0.5)
    assert count(o) == 2  # exactly one revalidation for the three stale answers
    bg = reqs(o)[1]
    assert bg.method == "GET" and bg.header("if-none-match") == '"e1"'
    # the client's own cache directives and conditionals are not the cache's
    assert bg.header("cache-control") is None and bg.header("if-modified-since") is None


def test_stale_while_revalidate_304_refreshes(cproxy, make_origin):
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=0, stale-while-revalidate=30"),
                                    ("ETag", '"e1"'), ("X-Gen", "1")]),
        build_response(304, b"", [("Cache-Control", "max-age=100"), ("ETag", '"e1"'),
                                  ("X-Gen", "2")], length=False),
    ])
    get(cproxy, url(o))
    r = get(cproxy, url(o), [("Accept", "text/plain")])
    assert r.body == b"v1" and r.header("x-gen") == "1"
    assert SWR_STATUS.fullmatch(r.header("cache-status"))
    r = wait_until(lambda: (lambda r: r if r.header("x-gen") == "2" else None)(
        get(cproxy, url(o))))
    assert r.body == b"v1" and r.header("cache-status").startswith("viaduct; hit; ttl=")
    assert count(o) == 2
    assert reqs(o)[1].header("accept") == "text/plain"  # the triggering request's fields


def test_stale_while_revalidate_head_triggers_get(cproxy, make_origin):
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=0, stale-while-revalidate=30")]),
        build_response(200, b"v2", [("Cache-Control", "max-age=100")]),
    ])
    get(cproxy, url(o))
    with cproxy.connect() as c:
        r = c.exchange("HEAD", url(o))
        assert r.status == 200 and r.header("content-length") == "2"
        assert SWR_STATUS.fullmatch(r.header("cache-status"))
    assert o.wait_requests(2)[1].method == "GET"
    wait_until(lambda: get(cproxy, url(o)).body == b"v2")


@pytest.mark.parametrize("cc,req", [
    ("max-age=0, stale-while-revalidate=30", [("Cache-Control", "no-cache")]),
    ("max-age=0, stale-while-revalidate=30", [("Cache-Control", "max-age=0")]),
    ("max-age=0, stale-while-revalidate=30, must-revalidate", []),
    ("max-age=0, stale-while-revalidate=30, no-cache", []),
    ("max-age=0, stale-while-revalidate=5", []),  # Age 10: past the window
])
def test_stale_while_revalidate_foreground(cproxy, make_origin, cc, req):
    o = make_origin([build_response(200, b"v1", [("Cache-Control", cc), ("Age", "10")]),
                     build_response(200, b"v2", [("Cache-Control", "max-age=100")])])
    get(cproxy, url(o))
    r = get(cproxy, url(o), req)
    assert r.body == b"v2"
    assert r.header("cache-status") in ("viaduct; fwd=stale; stored",
                                        "viaduct; fwd=request; stored")
    assert count(o) == 2


def test_stale_while_revalidate_disabled(viaduct, make_origin):
    p = viaduct({"cache": {"background_revalidations": 0}})
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=0, stale-while-revalidate=30")]),
        build_response(200, b"v2", [("Cache-Control", "max-age=100")]),
    ])
    get(p, url(o))
    r = get(p, url(o))
    assert r.body == b"v2" and r.header("cache-status") == "viaduct; fwd=stale; stored"


def test_stale_while_revalidate_origin_down(cproxy, make_origin):
    """A failed background request leaves the stale response; the next one tries again."""
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=0, stale-while-revalidate=30")]),
        build_response(500, b"no", reason="Oops"),
        build_response(200, b"v3", [("Cache-Control", "max-age=100")]),
    ])
    get(cproxy, url(o))
    assert get(cproxy, url(o)).body == b"v1"
    o.wait_requests(2)
    o.quiet(0.3)
    assert get(cproxy, url(o)).body == b"v1"  # still stale: another background request
    wait_until(lambda: get(cproxy, url(o)).body == b"v3")
    assert count(o) == 3


def test_background_revalidation_aborted_at_shutdown(viaduct, make_origin):
    p = viaduct({})
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=0, stale-while-revalidate=30")]),
        Reply(b"HTTP/1.1 200 OK\r\n", hang=True),  # the background request never completes
    ])
    get(p, url(o))
    assert get(p, url(o)).body == b"v1"
    o.wait_requests(2)
    t0 = time.monotonic()
    assert p.stop() == 0  # the teardown also checks: no alert, no sanitizer report
    assert time.monotonic() - t0 < 5


def test_stale_while_revalidate_reverse_route(viaduct, make_origin):
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "max-age=0, stale-while-revalidate=30"),
                                    ("ETag", '"e1"')]),
        build_response(304, b"", [("Cache-Control", "max-age=100"), ("ETag", '"e1"')],
                       length=False),
    ])
    p = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                 "routes": [{"upstream": "http://127.0.0.1:%d" % o.port, "forwarded": "x-forwarded"}]})
    with p.connect() as c:
        c.exchange("GET", "/x", host="site.test")
        r = c.exchange("GET", "/x", host="site.test")
        assert r.body == b"v1" and SWR_STATUS.fullmatch(r.header("cache-status"))
    bg = o.wait_requests(2)[1]
    assert bg.target == "/x" and bg.header("host") == "site.test"
    assert bg.header("x-forwarded-for") == "127.0.0.1"
    assert bg.header("if-none-match") == '"e1"'

    def fresh_hit():
        with p.connect() as c:
            r = c.exchange("GET", "/x", host="site.test")
        return r.header("cache-status").startswith("viaduct; hit; ttl=") and \
            not SWR_STATUS.fullmatch(r.header("cache-status"))
    wait_until(fresh_hit)
    assert count(o) == 2


# ---- targeted cache-control fields (RFC 9213) -----------------------------------------------

def cdn_origin(make_origin, fields):
    return make_origin(lambda req: build_response(200, b"r%d" % req.index, fields))


def ttl_of(r):
    m = re.fullmatch(r"viaduct; hit; ttl=(-?\d+)", r.header("cache-status"))
    assert m, r.header("cache-status")
    return int(m.group(1))


def test_cdn_cache_control_over_cache_control(cproxy, make_origin):
    o = cdn_origin(make_origin, [("Cache-Control", "max-age=1"),
                                 ("CDN-Cache-Control", "max-age=100")])
    r = get(cproxy, url(o))
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert r.header("cdn-cache-control") == "max-age=100"  # forwarded unchanged
    time.sleep(1.5)  # past Cache-Control's lifetime, well within CDN-Cache-Control's
    r = get(cproxy, url(o))
    assert r.body == b"r0" and 97 <= ttl_of(r) <= 100
    assert r.header("cdn-cache-control") == "max-age=100"  # and on hits
    assert r.header("cache-control") == "max-age=1"
    assert count(o) == 1


@pytest.mark.parametrize("fields,stored,second", [
    # a short CDN-Cache-Control wins over a long Cache-Control
    ([("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=0")], True, "fwd"),
    # no-store / private in CDN-Cache-Control, even with a fresh Cache-Control and Expires
    ([("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "no-store"),
      ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], False, "fwd"),
    ([("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "private")], False, "fwd"),
    # no-cache: stored, but never used without revalidation
    ([("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "no-cache")], True, "fwd"),
    # Expires is ignored along with Cache-Control
    ([("CDN-Cache-Control", "max-age=0"), ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], True,
     "fwd"),
    # Cache-Control: no-store does not count when CDN-Cache-Control gives a lifetime
    ([("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=100")], True, "hit"),
    ([("Cache-Control", "private"), ("CDN-Cache-Control", "public, max-age=100")], True, "hit"),
    # an invalid CDN-Cache-Control is ignored entirely: Cache-Control decides
    ([("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=10000, &&&&&")], False, "fwd"),
    ([("Cache-Control", "no-store"), ("CDN-Cache-Control", 'max-age="10000"')], False, "fwd"),
    ([("Cache-Control", "max-age=100"), ("CDN-Cache-Control", "")], True, "hit"),
])
def test_cdn_cache_control_decides(cproxy, make_origin, fields, stored, second):
    o = cdn_origin(make_origin, fields)
    r = get(cproxy, url(o))
    assert r.header("cache-status") == "viaduct; fwd=uri-miss" + ("; stored" if stored else "")
    r = get(cproxy, url(o))
    if second == "hit":
        assert r.body == b"r0" and r.header("cache-status").startswith("viaduct; hit; ttl=")
        assert count(o) == 1
    else:
        assert r.body == b"r1" and r.header("cache-status").startswith("viaduct; fwd=")
        assert count(o) == 2


def test_targeted_fields_configured(viaduct, make_origin):
    p = viaduct({"cache": {"targeted_fields": ["Edge-Cache-Control", "CDN-Cache-Control"]}})
    fields = [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=50"),
              ("Edge-Cache-Control", "max-age=500")]
    o = cdn_origin(make_origin, fields)
    get(p, url(o))
    r = get(p, url(o))
    assert 497 <= ttl_of(r) <= 500  # the first one listed wins
    assert r.header("edge-cache-control") == "max-age=500"
    # the first listed is invalid: the next one counts
    o2 = cdn_origin(make_origin, [("Edge-Cache-Control", "max-age=?1"),
                                  ("CDN-Cache-Control", "max-age=50")])
    get(p, url(o2))
    assert 47 <= ttl_of(get(p, url(o2))) <= 50


def test_targeted_fields_none(viaduct, make_origin):
    p = viaduct({"cache": {"targeted_fields": []}})
    o = cdn_origin(make_origin, [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=50")])
    r = get(p, url(o))
    assert r.header("cache-status") == "viaduct; fwd=uri-miss"
    get(p, url(o))
    assert count(o) == 2


def test_cdn_cache_control_stale_while_revalidate(cproxy, make_origin):
    o = make_origin([
        build_response(200, b"v1", [("Cache-Control", "no-cache"),
                                    ("CDN-Cache-Control", "max-age=0, stale-while-revalidate=30")]),
        build_response(200, b"v2", [("CDN-Cache-Control", "max-age=100")]),
    ])
    get(cproxy, url(o))
    r = get(cproxy, url(o))
    assert r.body == b"v1" and SWR_STATUS.fullmatch(r.header("cache-status"))
    wait_until(lambda: get(cproxy, url(o)).body == b"v2")
    assert count(o) == 2
