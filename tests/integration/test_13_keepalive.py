# SPDX-License-Identifier: MIT
"""Persistent connections on both sides (RFC 9112 §9): no blind-relay hang, pipelining,
upstream pooling, and retry rules for stale pooled connections (RFC 9112 §9.3.1.1)."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from vdtest.httpmsg import build_request, build_response
from vdtest.origins import Reply, drop


def url(origin, path="/"):
    return "http://origin.test:%d%s" % (origin.port, path)


def test_keepalive_second_request_does_not_hang(proxy, make_origin):
    """The seed bug: both sides say keep-alive; the second request on the same client
    connection is answered at once (a blind relay of Connection: keep-alive would hang)."""
    o = make_origin(lambda req: build_response(
        200, req.target.encode(), [("Connection", "keep-alive"), ("Keep-Alive", "timeout=30")]))
    with proxy.connect() as c:
        r1 = c.exchange("GET", url(o, "/one"), headers=[("Connection", "keep-alive")])
        assert r1.status == 200 and r1.body == b"/one"
        t0 = time.monotonic()
        c.request("GET", url(o, "/two"), headers=[("Connection", "keep-alive")])
        r2 = c.response(timeout=2)
        assert time.monotonic() - t0 < 2
        assert r2.status == 200 and r2.body == b"/two"
    assert o.conn_count in (1, 2)
    assert [q.target for q in o.wait_requests(2)] == ["/one", "/two"]


def test_http11_default_persistence(proxy, origin):
    with proxy.connect() as c:
        for i in range(5):
            r = c.exchange("GET", url(origin, "/%d" % i))
            assert r.status == 200 and r.body == b"ok\n"
            assert "close" not in r.headers.tokens("connection")
    assert origin.conn_count == 1


def test_http10_client_keepalive(proxy, make_origin):
    """An HTTP/1.0 client asking for keep-alive gets a complete, delimited response: either
    Connection: keep-alive with a Content-Length (then the connection is reusable), or the
    proxy closes after the response. Never chunked (RFC 9112 §6.1)."""
    o = make_origin(lambda req: build_response(200, b"body:" + req.target.encode()))
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/a"), version="1.0", headers=[("Connection", "keep-alive")])
        assert r.status == 200 and r.body == b"body:/a"
        assert not r.headers.has("transfer-encoding")
        if "keep-alive" in r.headers.tokens("connection"):
            assert r.framing == "cl"
            r2 = c.exchange("GET", url(o, "/b"), version="1.0",
                            headers=[("Connection", "keep-alive")])
            assert r2.status == 200 and r2.body == b"body:/b"
        else:
            c.assert_closed()


def test_http10_client_without_keepalive_is_closed(proxy, origin):
    with proxy.connect() as c:
        r = c.exchange("GET", url(origin, "/"), version="1.0")
        assert r.status == 200 and r.body == b"ok\n"
        c.assert_closed()


def test_client_connection_close(proxy, origin):
    """RFC 9112 §9.6: the proxy answers with Connection: close and closes."""
    with proxy.connect() as c:
        r = c.exchange("GET", url(origin, "/"), headers=[("Connection", "close")])
        assert r.status == 200 and r.body == b"ok\n"
        assert "close" in r.headers.tokens("connection")
        c.assert_closed()


def test_origin_connection_close_does_not_close_client(proxy, make_origin):
    """Connection: close from the origin is hop-by-hop: the client connection stays usable
    and the next request uses a new origin connection."""
    o = make_origin(Reply(build_response(200, b"bye", [("Connection", "close")]), close=True))
    with proxy.connect() as c:
        r1 = c.exchange("GET", url(o, "/1"))
        assert r1.status == 200 and r1.body == b"bye"
        r2 = c.exchange("GET", url(o, "/2"))
        assert r2.status == 200 and r2.body == b"bye"
    assert o.conn_count == 2


@pytest.mark.parametrize("fields,conns", [
    ([("Connection", "keep-alive")], 1),
    ([("Connection", "keep-alive, close")], 2),
    ([("Connection", "keep-alive"), ("Connection", "close")], 2),
    ([("Connection", "close"), ("Connection", "keep-alive")], 2),
])
def test_origin_close_option_wins(proxy, make_origin, fields, conns):
    """RFC 9112 §9.6: "close" in any Connection field of a response means the origin will close
    after it, whatever other options say (and in whatever order): viaduct sends no further
    request on that connection. The origin here keeps its side open, so a reuse would show."""
    o = make_origin(build_response(200, b"ok", fields))
    with proxy.connect() as c:
        for i in range(2):
            r = c.exchange("GET", url(o, "/%d" % i))
            assert r.status == 200 and r.body == b"ok"
    assert o.conn_count == conns
    assert [q.conn for q in o.requests] == ([0, 1] if conns == 2 else [0, 0])


def test_pipelined_requests_answered_in_order(proxy, make_origin):
    o = make_origin(lambda req: build_response(200, b"resp" + req.target.encode()))
    data = b"".join(b"GET %s HTTP/1.1\r\nHost: origin.test:%d\r\n\r\n" %
                    (url(o, "/%d" % i).encode(), o.port) for i in (1, 2, 3))
    with proxy.connect() as c:
        c.send(data)
        bodies = [c.response().body for _ in range(3)]
    assert bodies == [b"resp/1", b"resp/2", b"resp/3"]


def test_pipelined_with_bodies_and_head(proxy, make_origin):
    def reply(req):
        text = b"%s %s %s" % (req.method.encode(), req.target.encode(), req.body)
        if req.method == "HEAD":
            return build_response(200, b"", [("Content-Length", str(len(text)))])
        return build_response(200, text)

    o = make_origin(reply)
    data = (build_request("POST", url(o, "/p"), body=b"first")
            + build_request("HEAD", url(o, "/h"))
            + build_request("POST", url(o, "/c"), headers=[("Transfer-Encoding", "chunked")])
            + b"3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n"
            + build_request("GET", url(o, "/g")))
    with proxy.connect() as c:
        c.send(data)
        r1 = c.response("POST")
        r2 = c.response("HEAD")
        r3 = c.response("POST")
        r4 = c.response("GET")
    assert r1.body == b"POST /p first"
    assert r2.body == b"" and r2.header("content-length") == str(len(b"HEAD /h "))
    assert r3.body == b"POST /c second"
    assert r4.body == b"GET /g "


def test_upstream_connection_pooled_across_clients(proxy, origin):
    for i in range(3):
        with proxy.connect() as c:
            r = c.exchange("GET", url(origin, "/%d" % i))
            assert r.status == 200
    assert origin.conn_count == 1
    assert [q.conn for q in origin.requests] == [0, 0, 0]


def test_pool_disabled_with_zero_idle(viaduct, origin):
    vd = viaduct({"upstream": {"pool_idle_max": 0}})
    for i in range(2):
        with vd.connect() as c:
            assert c.exchange("GET", url(origin, "/%d" % i)).status == 200
    assert origin.conn_count == 2


@pytest.mark.parametrize("idle_max,expect_conns", [(None, 40), (2, 78)])
def test_pool_keeps_a_burst_up_to_idle_max(viaduct, make_origin, idle_max, expect_conns):
    """Forty requests at once need forty upstream connections. After the burst the pool keeps
    all of them by default (sized for real concurrency: a pool smaller than the load opens a
    connection for every request beyond it; the default was 32), so a second burst reuses
    them; with pool_idle_max 2 only two are kept and the second burst opens 38 new ones."""
    burst = 40
    o = make_origin(lambda req: Reply(build_response(200, b"x"), delay=0.5))
    vd = viaduct({"upstream": {"pool_idle_max": idle_max}} if idle_max else None)

    def one(i):
        with vd.connect() as c:
            return c.exchange("GET", url(o, "/%d" % i)).status

    with ThreadPoolExecutor(burst) as ex:
        assert list(ex.map(one, range(burst))) == [200] * burst
        assert o.conn_count == burst
        assert list(ex.map(one, range(burst, 2 * burst))) == [200] * burst
    assert o.conn_count == expect_conns


def test_pool_idle_timeout(viaduct, origin):
    """A pooled connection idle longer than pool_idle_timeout is closed by the proxy."""
    vd = viaduct({"upstream": {"pool_idle_timeout": "500ms"}})
    with vd.connect() as c:
        assert c.exchange("GET", url(origin, "/")).status == 200
    assert origin.conns[0].closed.wait(5), "pooled connection not closed after its idle timeout"


def test_pool_idle_timeout_counts_from_last_use(viaduct, origin):
    """A pooled connection used again before its idle timeout is not closed at the first
    deadline: the idle time counts from its last release (lazy re-arm of the one timer that
    also serves the first-byte and read timeouts)."""
    vd = viaduct({"upstream": {"pool_idle_timeout": "1s"}})
    with vd.connect() as c:
        assert c.exchange("GET", url(origin, "/1")).status == 200
        time.sleep(0.6)
        assert c.exchange("GET", url(origin, "/2")).status == 200
        t_last = time.monotonic()
    assert len(origin.conns) == 1
    assert not origin.conns[0].closed.wait(0.7), "closed at the first use's deadline"
    assert origin.conns[0].closed.wait(5), "pooled connection not closed after its idle timeout"
    assert time.monotonic() - t_last >= 0.9


def test_stale_pooled_connection_closed_by_origin_get_succeeds(proxy, make_origin):
    """The origin closes its side right after responding (without Connection: close); the
    next GET still gets 200 (the proxy notices the close or retries once)."""
    o = make_origin(Reply(build_response(200, b"fresh"), close=True))
    with proxy.connect() as c:
        assert c.exchange("GET", url(o, "/1")).body == b"fresh"
        o.conns[0].closed.wait(5)
        r = c.exchange("GET", url(o, "/2"))
        assert r.status == 200 and r.body == b"fresh"


def _dropping_origin(make_origin):
    """Connection 0 answers its first request, then closes on the second without a byte
    of response: exactly what a request on a stale pooled connection sees."""
    def reply(req):
        if req.conn == 0 and req.seq == 1:
            return drop()
        return build_response(200, b"conn%d" % req.conn)
    return make_origin(reply)


def test_stale_pooled_get_retried_once(proxy, make_origin):
    o = _dropping_origin(make_origin)
    with proxy.connect() as c:
        assert c.exchange("GET", url(o, "/warm")).body == b"conn0"
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/again"))
    assert r.status == 200 and r.body == b"conn1"
    reqs = o.wait_requests(3)
    assert [(q.conn, q.target) for q in reqs] == [(0, "/warm"), (0, "/again"), (1, "/again")]


def test_stale_pooled_post_not_retried(proxy, make_origin):
    """RFC 9112 §9.3.1.1: a proxy MUST NOT automatically retry non-idempotent requests.
    If viaduct sends the POST on the pooled connection, the origin closes it without an
    answer and the client gets 502; a proxy that never puts a POST on a reused connection
    (also correct) gets the answer from a new connection. Either way: sent exactly once."""
    o = _dropping_origin(make_origin)
    with proxy.connect() as c:
        assert c.exchange("GET", url(o, "/warm")).body == b"conn0"
    with proxy.connect() as c:
        r = c.exchange("POST", url(o, "/order"), body=b"buy=1")
    o.quiet()
    posts = [q for q in o.requests if q.method == "POST"]
    assert len(posts) == 1, [(q.conn, q.method, q.target) for q in o.requests]
    if posts[0].conn == 0:
        assert r.status == 502, r
    else:
        assert r.status == 200 and r.body == b"conn%d" % posts[0].conn


@pytest.mark.parametrize("n", [20])
def test_many_sequential_exchanges_one_connection(proxy, make_origin, n):
    o = make_origin(lambda req: build_response(200, req.target.encode() * 100))
    with proxy.connect() as c:
        for i in range(n):
            r = c.exchange("GET", url(o, "/%d" % i))
            assert r.body == ("/%d" % i).encode() * 100
    assert o.conn_count == 1
