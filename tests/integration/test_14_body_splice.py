# SPDX-License-Identifier: MIT
"""Zero-copy response bodies (upstream.splice, upstream.splice_min): a large Content-Length or
close-delimited body from a plain TCP origin to a plain HTTP/1.x client moves with splice(2)
through a pipe. The access log's spliced=N (body bytes written from the pipe) shows it ran;
everything else must look exactly as on the copying path: bytes, keep-alive on both sides,
incomplete responses, back-pressure, HEAD/204/304, the cache."""
import hashlib
import os
import re
import socket
import struct
import threading
import time

import pytest

from vdtest.httpmsg import IncompleteResponse, build_response
from vdtest.origins import Reply
from vdtest.tcp import TcpServer, recv_exact


# The default test configuration has the cache on; a stored response never splices.
NS = [("Cache-Control", "no-store")]


def url(origin, path="/"):
    return "http://origin.test:%d%s" % (origin.port, path)


def body_of(n, seed=b"x"):
    """@n bytes that differ everywhere (a shifted or dropped block would show)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(seed + b"%d" % i).digest()
        i += 1
    return bytes(out[:n])


def log_lines(v, n, timeout=5.0):
    """The first @n access log lines (the log is flushed every second)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in v.read_access_log().splitlines() if ln]
        if len(lines) >= n or time.monotonic() > deadline:
            assert len(lines) >= n, "access log: %r" % lines
            return lines


def spliced(line):
    m = re.search(r" spliced=(\d+)", line)
    return int(m.group(1)) if m else 0


def bytes_out(line):
    # time client "request line" status bytes_in bytes_out ...
    return int(line.split('"')[2].split()[2])


def test_large_body_spliced_byte_exact_and_both_sides_reused(proxy, make_origin):
    body = body_of(300 * 1024)
    o = make_origin(lambda req: build_response(200, body, NS))
    with proxy.connect() as c:
        r1 = c.exchange("GET", url(o, "/1"))
        r2 = c.exchange("GET", url(o, "/2"))
        sizes = [len(r1.raw), len(r2.raw)]
    assert r1.status == 200 and r1.body == body
    assert r2.status == 200 and r2.body == body
    assert o.conn_count == 1  # the origin connection went back to the pool after each
    l1, l2 = log_lines(proxy, 2)
    assert " new " in l1 and " reused " in l2, (l1, l2)
    for line, size in zip((l1, l2), sizes):
        assert bytes_out(line) == size
        # What arrived with the head went the normal way (at most one 16 KiB read).
        assert len(body) - 16384 <= spliced(line) <= len(body), line


def test_many_sizes_around_the_threshold(viaduct, make_origin):
    """Bodies below splice_min copy; from splice_min up they splice; every byte exact."""
    p = viaduct({"upstream": {"splice_min": "32k"}})
    sizes = [0, 1, 1000, 32 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 1 << 20]
    bodies = {n: body_of(n, b"%d" % n) for n in sizes}
    o = make_origin(lambda req: build_response(200, bodies[int(req.target[1:])], NS))
    with p.connect() as c:
        for n in sizes:
            r = c.exchange("GET", url(o, "/%d" % n))
            assert r.status == 200 and r.body == bodies[n], n
    assert o.conn_count == 1
    lines = log_lines(p, len(sizes))
    for n, line in zip(sizes, lines):
        if n < 32 * 1024:
            assert spliced(line) == 0, line
        elif n > 48 * 1024:
            assert spliced(line) > 0, line


def test_splice_off_copies(viaduct, make_origin):
    p = viaduct({"upstream": {"splice": False}})
    body = body_of(256 * 1024)
    o = make_origin(build_response(200, body, NS))
    with p.connect() as c:
        r = c.exchange("GET", url(o))
    assert r.body == body
    (line,) = log_lines(p, 1)
    assert spliced(line) == 0 and bytes_out(line) == len(r.raw)


@pytest.mark.parametrize("reset", [False, True])
def test_origin_gone_mid_body_client_sees_incomplete_response(proxy, make_origin, reset):
    body = body_of(1 << 20)
    head = b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: %d\r\n\r\n" % len(body)
    o = make_origin(Reply([head, body[:200 * 1024], 0.3, body[200 * 1024:400 * 1024], 0.3],
                          close=not reset, reset=reset))
    with proxy.connect() as c:
        c.request("GET", url(o))
        with pytest.raises(IncompleteResponse):
            c.response()
        c.assert_closed() if not reset else c.wait_closed()
    (line,) = log_lines(proxy, 1)
    assert spliced(line) > 0, line
    assert bytes_out(line) < len(head) + len(body)
    proxy.wait_for_log(r"upstream closed the connection in the middle of the response")


def test_close_delimited_body_to_http10_client(proxy, make_origin):
    """An HTTP/1.0 origin without Content-Length: the body ends with the connection; an
    HTTP/1.0 client gets it close-delimited too, spliced."""
    body = body_of(200 * 1024)
    o = make_origin(Reply([b"HTTP/1.0 200 OK\r\nCache-Control: no-store\r\n\r\n", body[:1000], 0.2, body[1000:]],
                          close=True))
    with proxy.connect() as c:
        r = c.exchange("GET", url(o), version="1.0")
        assert r.status == 200 and r.body == body and r.framing == "close"
        c.assert_closed()
    (line,) = log_lines(proxy, 1)
    # The first 1000 bytes may arrive with the head (then they are copied).
    assert spliced(line) in (len(body), len(body) - 1000), line
    assert bytes_out(line) == len(r.raw)


def test_chunked_origin_and_chunked_client_copy(proxy, make_origin):
    """Neither a chunked origin body nor re-chunking for an HTTP/1.1 client can splice."""
    body = body_of(100 * 1024)
    chunked = b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        len(body), body)
    o1 = make_origin(chunked)
    o2 = make_origin(Reply([b"HTTP/1.0 200 OK\r\nCache-Control: no-store\r\n\r\n", body], close=True))
    with proxy.connect() as c:
        assert c.exchange("GET", url(o1)).body == body
        r = c.exchange("GET", url(o2))
        assert r.body == body and r.framing == "chunked"
    for line in log_lines(proxy, 2):
        assert spliced(line) == 0, line


class BlockingOrigin(TcpServer):
    """Answers every request on a connection with @body (Content-Length, no-store), written
    with blocking sends that wait for the proxy as long as it takes (the scripted origins give
    up after 0.2 s). sent[i] is set once the i-th response was written completely."""

    def __init__(self, body):
        self.body = body
        self.sent = [threading.Event() for _ in range(4)]
        self.nsent = 0
        super().__init__(self._serve)

    def _serve(self, c):
        c.sock.settimeout(None)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                b = c.sock.recv(65536)
                if not b:
                    return
                buf += b
            buf = buf.split(b"\r\n\r\n", 1)[1]
            c.sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(self.body))
            c.sock.sendall(self.body)
            self.sent[self.nsent].set()
            self.nsent += 1


@pytest.fixture
def blocking_origin():
    started = []

    def make(body):
        o = BlockingOrigin(body)
        started.append(o)
        return o

    yield make
    for o in started:
        o.stop()


def test_slow_client_back_pressure_every_byte(proxy, blocking_origin):
    """A client with a small receive buffer that does not read: the proxy stops reading the
    origin (the origin cannot finish sending 16 MiB), then every byte arrives, slowly at first,
    and the connections on both sides serve a second request."""
    body = body_of(16 << 20)
    o = blocking_origin(body)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.connect(("127.0.0.1", proxy.port()))
    try:
        for i in range(2):
            s.sendall(b"GET %s HTTP/1.1\r\nHost: origin.test\r\n\r\n" % url(o, "/%d" % i).encode())
            if i == 0:
                time.sleep(1.5)
                assert not o.sent[0].is_set(), "the proxy read the whole body past a stalled client"
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            assert head.startswith(b"HTTP/1.1 200 ")
            got = bytearray()
            while len(got) < len(body):
                got += recv_exact(s, min(65536, len(body) - len(got)), timeout=30)
                if i == 0 and len(got) < 512 * 1024:
                    time.sleep(0.01)  # slowly at first: many pauses and resumes
            assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
            assert o.sent[i].wait(5)
    finally:
        s.close()
    assert len(o.conns) == 1
    lines = log_lines(proxy, 2)
    for line in lines:
        assert spliced(line) >= len(body) - 16384, line
        assert bytes_out(line) == len(head) + len(body)
    assert " reused " in lines[1]


def test_client_gone_mid_body(proxy, blocking_origin):
    """The client resets while the body is spliced: the exchange ends as on the copy path
    (status 200 logged with the bytes that left), and the origin connection is closed, not
    pooled: the next request opens a new one."""
    body = body_of(8 << 20)
    o = blocking_origin(body)
    s = socket.create_connection(("127.0.0.1", proxy.port()))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: origin.test\r\n\r\n" % url(o).encode())
    recv_exact(s, 200 * 1024, timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    (line,) = log_lines(proxy, 1)
    assert '" 200 ' in line and spliced(line) > 0, line
    assert bytes_out(line) < len(body)
    with proxy.connect() as c:
        c.request("GET", url(o, "/x"), headers=[("Connection", "close")])
        assert c.response(timeout=20).body == body
    assert len(o.conns) == 2


@pytest.mark.parametrize("status,method", [(200, "HEAD"), (204, "GET"), (304, "GET")])
def test_bodyless_responses_unaffected(proxy, make_origin, status, method):
    head = build_response(status, b"", [("Content-Length", "100000")], length=False)
    if status == 204:
        head = build_response(204, b"", length=False)
    o = make_origin(head)
    with proxy.connect() as c:
        for i in range(2):
            r = c.exchange(method, url(o, "/%d" % i))
            assert r.status == status and r.body == b""
    assert o.conn_count == 1
    for line in log_lines(proxy, 2):
        assert spliced(line) == 0, line


def test_cached_response_stored_whole(viaduct, make_origin):
    """A response the cache stores goes through user space (the store gets every byte); the
    hit is then the same body."""
    p = viaduct({"cache": {"memory": "16m", "max_object": "2m"}})
    body = body_of(512 * 1024)
    o = make_origin(build_response(200, body, [("Cache-Control", "max-age=300")]))
    with p.connect() as c:
        r1 = c.exchange("GET", url(o, "/c"))
        r2 = c.exchange("GET", url(o, "/c"))
    assert r1.body == body and r2.body == body
    assert len(o.requests) == 1
    l1, l2 = log_lines(p, 2)
    assert spliced(l1) == 0 and "stored" in l1, l1
    assert "hit" in l2, l2
    # Not storable (no-store): spliced.
    o2 = make_origin(build_response(200, body, [("Cache-Control", "no-store")]))
    with p.connect() as c:
        assert c.exchange("GET", url(o2, "/n")).body == body
    assert spliced(log_lines(p, 3)[2]) > 0


def test_reverse_proxy_splices(viaduct, make_origin):
    body = body_of(200 * 1024)
    o = make_origin(build_response(200, body, NS))
    p = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                 "routes": [{"upstream": "http://127.0.0.1:%d" % o.port}]})
    with p.connect() as c:
        for _ in range(3):
            r = c.exchange("GET", "/r", headers=[("Host", "a.test")])
            assert r.status == 200 and r.body == body
    assert o.conn_count == 1
    for line in log_lines(p, 3):
        assert spliced(line) > 0, line


@pytest.mark.feature("tls")
def test_tls_client_copies(viaduct, make_origin, pki):
    from vdtest.client import client_tls_context
    body = body_of(200 * 1024)
    o = make_origin(build_response(200, body, NS))
    p = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "forward",
                                "tls": {"certificates": [{"cert": pki.server.cert,
                                                          "key": pki.server.key}]}}]})
    ctx = client_tls_context(pki.ca)
    with p.connect(tls=ctx, server_hostname="localhost") as c:
        r = c.exchange("GET", url(o))
    assert r.body == body
    (line,) = log_lines(p, 1)
    assert spliced(line) == 0, line


def test_origin_stall_mid_body_times_out(viaduct, make_origin):
    """timeouts.upstream_read still runs while the body is spliced."""
    p = viaduct({"timeouts": {"upstream_read": "1s"}})
    body = body_of(1 << 20)
    o = make_origin(Reply([b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body), body[:300 * 1024]],
                          hang=True))
    with p.connect() as c:
        t0 = time.monotonic()
        c.request("GET", url(o))
        with pytest.raises(IncompleteResponse):
            c.response(timeout=10)
        assert 0.9 < time.monotonic() - t0 < 5
    p.wait_for_log(r"upstream stopped sending the response body")
    (line,) = log_lines(p, 1)
    assert spliced(line) > 0, line


def test_client_stall_send_timeout(viaduct, blocking_origin):
    """timeouts.send still runs while spliced bytes wait in the pipe for a client that does
    not read: the connection is reset after it."""
    p = viaduct({"timeouts": {"send": "1s"}})
    o = blocking_origin(body_of(16 << 20))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.connect(("127.0.0.1", p.port()))
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: origin.test\r\n\r\n" % url(o).encode())
        p.wait_for_log(r"client send timeout", timeout=10)
    finally:
        s.close()
    (line,) = log_lines(p, 1)
    assert spliced(line) > 0, line


def test_origin_stall_after_client_pause_times_out(viaduct):
    """The read timer is cleared while a slow client pauses the origin, and armed again when
    the relay resumes: an origin that stops sending after that is still timed out
    (timeouts.upstream_read), not waited on forever."""
    p = viaduct({"timeouts": {"upstream_read": "1s"}})
    total, sent = 8 << 20, 4 << 20
    stop = threading.Event()

    def serve(c):
        c.sock.settimeout(None)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.sock.recv(65536)
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n"
                       b"Content-Length: %d\r\n\r\n" % total)
        c.sock.sendall(body_of(sent))
        stop.wait(30)  # then nothing more: the origin stalls mid-body

    o = TcpServer(serve)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.connect(("127.0.0.1", p.port()))
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: origin.test\r\n\r\n" % url(o).encode())
        time.sleep(1.5)  # the client does not read: the proxy pauses the origin
        s.settimeout(10)
        got = 0
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
            t_last = time.monotonic()
        assert time.monotonic() - t_last < 5
        assert sent - 65536 <= got < total
    finally:
        stop.set()
        s.close()
        o.stop()
    p.wait_for_log(r"upstream stopped sending the response body")
    (line,) = log_lines(p, 1)
    assert spliced(line) > 0, line
