# SPDX-License-Identifier: MIT
"""Size limits (RFC 9110 §15.5.14/15, RFC 6585 §5) and timeouts."""
import re
import socket
import time

import pytest

from vdtest.asserts import assert_proxy_error
from vdtest.httpmsg import IncompleteResponse, chunked_body
from vdtest.origins import Blackhole, Reply


def url(origin, path="/"):
    return "http://origin.test:%d%s" % (origin.port, path)


# ---------------------------------------------------------------- defaults

def test_default_request_line_limit(proxy, origin):
    """Default request_line 8192 bytes: a 9000-byte target is 414."""
    with proxy.connect() as c:
        r = c.exchange("GET", url(origin, "/" + "a" * 9000))
    assert_proxy_error(r, 414)
    origin.assert_untouched()


def test_default_limits_allow_long_target_and_many_fields(proxy, origin):
    path = "/" + "b" * 7000
    hdrs = [("X-F%02d" % i, "v" * 200) for i in range(90)]
    with proxy.connect() as c:
        r = c.exchange("GET", url(origin, path), headers=hdrs)
    assert r.status == 200
    (req,) = origin.wait_requests(1)
    assert req.target == path
    assert [(k, v) for k, v in req.headers if k.startswith("X-F")] == hdrs


def test_default_header_block_limit(proxy, origin):
    """Default header_block 32768 bytes: 40 fields of 1000 bytes is 431."""
    hdrs = [("X-Big%02d" % i, "x" * 1000) for i in range(40)]
    with proxy.connect() as c:
        r = c.exchange("GET", url(origin, "/"), headers=hdrs)
    assert_proxy_error(r, 431)
    origin.assert_untouched()


def test_default_header_count_limit(proxy, origin):
    """Default header_count 100: 120 small fields is 431."""
    hdrs = [("X-N%03d" % i, "1") for i in range(120)]
    with proxy.connect() as c:
        r = c.exchange("GET", url(origin, "/"), headers=hdrs)
    assert_proxy_error(r, 431)
    origin.assert_untouched()


# ---------------------------------------------------------------- configured

SMALL = {"limits": {"request_line": 256, "header_block": 1024, "header_count": 10, "body": 1000}}


@pytest.fixture
def small(viaduct):
    return viaduct(SMALL)


def test_small_request_line(small, origin):
    with small.connect() as c:
        ok = c.exchange("GET", url(origin, "/" + "a" * 150))
        assert ok.status == 200
    with small.connect() as c:
        r = c.exchange("GET", url(origin, "/" + "a" * 300))
        assert r.status == 414, r
    assert [q.target for q in origin.wait_requests(1)] == ["/" + "a" * 150]


def test_small_header_block(small, origin):
    with small.connect() as c:
        assert c.exchange("GET", url(origin, "/ok"), headers=[("X-A", "a" * 500)]).status == 200
    with small.connect() as c:
        r = c.exchange("GET", url(origin, "/no"), headers=[("X-A", "a" * 600), ("X-B", "b" * 600)])
        assert r.status == 431, r
    origin.quiet()
    assert [q.target for q in origin.requests] == ["/ok"]


def test_small_header_count(small, origin):
    with small.connect() as c:
        assert c.exchange("GET", url(origin, "/ok"),
                          headers=[("X-%d" % i, "1") for i in range(5)]).status == 200
    with small.connect() as c:
        r = c.exchange("GET", url(origin, "/no"), headers=[("X-%d" % i, "1") for i in range(12)])
        assert r.status == 431, r
    origin.quiet()
    assert [q.target for q in origin.requests] == ["/ok"]


def test_body_over_limit_by_content_length(small, origin):
    """413 from Content-Length alone; only the head is sent, the origin gets nothing."""
    with small.connect() as c:
        c.send(b"POST %s HTTP/1.1\r\nHost: origin.test:%d\r\nContent-Length: 2000\r\n\r\n" %
               (url(origin, "/big").encode(), origin.port))
        r = c.response()
    assert_proxy_error(r, 413)
    origin.assert_untouched()


def test_body_at_limit_passes(small, origin):
    body = bytes(range(250)) * 4  # exactly 1000 bytes
    with small.connect() as c:
        r = c.exchange("POST", url(origin, "/exact"), body=body)
    assert r.status == 200
    (req,) = origin.wait_requests(1)
    assert req.body == body


def test_chunked_body_over_limit(small, origin):
    """The chunked body passes 1000 bytes mid-stream: the origin has not answered yet, so the
    client gets 413 and the connection closes; the origin never sees a complete request."""
    with small.connect() as c:
        c.send(b"POST %s HTTP/1.1\r\nHost: origin.test:%d\r\nTransfer-Encoding: chunked\r\n\r\n" %
               (url(origin, "/chunks").encode(), origin.port) +
               chunked_body([b"x" * 400] * 4))
        r = c.response()
        assert r.status == 413, r
        c.wait_closed()
    origin.quiet()
    assert origin.requests == []


# ---------------------------------------------------------------- timeouts

def test_client_header_timeout(viaduct, origin):
    vd = viaduct({"timeouts": {"client_header": "1s"}})
    with vd.connect() as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: origin.test:%d\r\nX-Partial: " %
               (url(origin, "/").encode(), origin.port))
        t0 = time.monotonic()
        r = c.response(timeout=6)
        assert_proxy_error(r, 408)
        assert time.monotonic() - t0 >= 0.5
        assert "close" in r.headers.tokens("connection")
        c.assert_closed()
    origin.assert_untouched(grace=0)


def test_keepalive_timeout_closes_idle_connection(viaduct, origin):
    """An idle keep-alive connection is closed after timeouts.keepalive, silently (no 408)."""
    vd = viaduct({"timeouts": {"keepalive": "1s"}})
    with vd.connect() as c:
        assert c.exchange("GET", url(origin, "/")).status == 200
        t0 = time.monotonic()
        extra = c.wait_closed(timeout=6)
        elapsed = time.monotonic() - t0
    assert extra == b""
    assert 0.5 <= elapsed < 6, elapsed


def test_keepalive_timeout_counts_from_the_last_exchange(viaduct, origin):
    """Each exchange pushes the keep-alive deadline back (the timer is re-armed lazily, when the
    earlier deadline fires): a connection used again 0.8 s into a 1.5 s idle timeout is still
    open 1.5 s after it was first idle, and closes about 1.5 s after its last exchange."""
    vd = viaduct({"timeouts": {"keepalive": "1500ms"}})
    with vd.connect() as c:
        assert c.exchange("GET", url(origin, "/1")).status == 200
        time.sleep(0.8)
        assert c.exchange("GET", url(origin, "/2")).status == 200
        t_last = time.monotonic()
        time.sleep(0.9)  # 1.7 s after the first exchange, 0.9 s after the last
        assert c.exchange("GET", url(origin, "/3")).status == 200
        t_last = time.monotonic()
        extra = c.wait_closed(timeout=6)
        elapsed = time.monotonic() - t_last
    assert extra == b""
    assert 1.2 <= elapsed < 4, elapsed


def test_upstream_connect_timeout(viaduct):
    bh = Blackhole()
    try:
        if not bh.works:
            pytest.skip("cannot make a hanging connect on this kernel")
        vd = viaduct({"timeouts": {"upstream_connect": "1s"}})
        with vd.connect() as c:
            t0 = time.monotonic()
            r = c.exchange("GET", "http://origin.test:%d/" % bh.port)
            assert_proxy_error(r, 504)
            assert time.monotonic() - t0 < 8
    finally:
        bh.stop()


def test_upstream_first_byte_timeout(viaduct, make_origin):
    o = make_origin(Reply(b"", hang=True))
    vd = viaduct({"timeouts": {"upstream_first_byte": "1s"}})
    with vd.connect() as c:
        t0 = time.monotonic()
        r = c.exchange("GET", url(o, "/slow"))
        elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert re.search(r"(?i)time(d)?[ -]?out", r.text()), r.text()
    assert 0.5 <= elapsed < 8
    o.wait_requests(1)


def test_client_body_timeout(viaduct, origin):
    vd = viaduct({"timeouts": {"client_body": "1s"}})
    with vd.connect() as c:
        c.send(b"POST %s HTTP/1.1\r\nHost: origin.test:%d\r\nContent-Length: 10\r\n\r\nabc" %
               (url(origin, "/").encode(), origin.port))
        r = c.response(timeout=8)
        assert r.status == 408, r
        c.wait_closed()
    origin.quiet()
    assert origin.requests == []


def test_upstream_read_timeout(viaduct, make_origin):
    """The origin stalls mid-body: after timeouts.upstream_read the client connection is
    closed before the declared length (no fake completion)."""
    o = make_origin(Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", hang=True))
    vd = viaduct({"timeouts": {"upstream_read": "1s"}})
    with vd.connect() as c:
        c.request("GET", url(o, "/stall"))
        with pytest.raises(IncompleteResponse) as ei:
            c.response(timeout=8)
    assert ei.value.response.status == 200
    assert ei.value.response.body == b"0123456789"


def test_send_timeout_closes_stalled_client(viaduct, make_origin):
    """A client that stops reading a large response: after timeouts.send with no write progress
    the proxy closes the connection; the upstream read timer does not fire meanwhile (the stall
    is the client's), and the proxy keeps serving others."""
    big = 64 * 1024 * 1024  # far more than socket buffers on both sides can hold
    o = make_origin(Reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big))
    small = make_origin(Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    vd = viaduct({"timeouts": {"send": "1s", "upstream_read": "30s"}})
    with vd.connect() as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.request("GET", url(o, "/big"))
        t0 = time.monotonic()
        time.sleep(3)  # read nothing: the proxy's writes stall
        got = 0
        c.sock.settimeout(10)
        while True:
            try:
                d = c.sock.recv(1 << 20)
            except ConnectionResetError:
                break  # the proxy resets a connection whose client stopped reading
            if not d:
                break
            got += len(d)
        elapsed = time.monotonic() - t0
    assert got < big, "the whole response arrived: the client never stalled the proxy"
    assert elapsed < 10, "closed by the send timeout, not by the 30 s upstream_read timeout"
    with vd.connect() as c2:
        r = c2.exchange("GET", url(small, "/after"))
        assert (r.status, r.body) == (200, b"ok")
