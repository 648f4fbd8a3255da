# SPDX-License-Identifier: MIT
"""Shared cache, large bodies in memory (cache.memory_files): a stored body of at least
cache.sendfile_min bytes lives in a sealed memory file, so a hit on a plain HTTP/1.1 connection
leaves by the front's send_file (sendfile(2), or a write from the mapping: cache.disk_send),
and TLS and HTTP/2 clients read its mapping. The `proxy` trace line
"cache hit from memory file: N bytes by send_file, M copied" says which way a body went; the
descriptors of the process (/proc/PID/fd, "memfd:viaduct-cache") and the metric
viaduct_cache_memory_files say how many such files are alive."""
import os
import re
import socket
import subprocess
import time

import pytest

from vdtest.cache import count
from vdtest.client import client_tls_context
from vdtest.httpmsg import build_response
from vdtest.metrics import scrape, val

pytestmark = pytest.mark.feature("tls")

MIB = 1 << 20


def pattern(n, salt=0):
    """@n bytes where each 16-byte piece names its position: a misplaced piece cannot compare
    equal by accident."""
    return b"".join(b"%08d:" % (i + salt) + bytes([(i * 7 + j + salt) & 0xFF for j in range(7)])
                    for i in range(n // 16))


BIG = pattern(MIB)
OTHER = pattern(MIB, salt=5)
TRACE = r"cache hit from memory file: (\d+) bytes by send_file, (\d+) copied"


def replies(bodies):
    """An origin reply for each path in @bodies, cacheable, with an ETag per path."""
    def reply(req):
        path = req.target.split("?")[0]
        body = bodies[path]
        return build_response(200, body, [("Cache-Control", "max-age=300"),
                                           ("Content-Type", "application/octet-stream"),
                                           ("ETag", '"%s"' % path.strip("/"))])
    return reply


@pytest.fixture
def mf_proxy(viaduct, pki):
    """start(o, **cache) -> a reverse proxy: listener 0 plain, 1 TLS (h2 and HTTP/1.1), 2 admin;
    a memory tier only."""
    def start(o, **cache):
        c = {"memory": "64m", "max_object": "16m"}
        c.update(cache)
        tls = {"certificates": [{"cert": pki.server.cert, "key": pki.server.key}]}
        return viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"},
                                      {"address": "127.0.0.1:0", "mode": "reverse", "tls": tls},
                                      {"address": "127.0.0.1:0", "mode": "admin"}],
                        "routes": [{"upstream": "http://127.0.0.1:%d" % o.port}],
                        "cache": c, "log": {"trace": ["proxy", "h1"]}})
    return start


def tls_kw(pki):
    return {"tls": client_tls_context(pki.ca), "server_hostname": "localhost"}


def memfds(p):
    """Descriptors of @p that are viaduct's memory files."""
    n = 0
    for fd in os.listdir("/proc/%d/fd" % p.pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (p.pid, fd)).startswith("/memfd:viaduct-cache"):
                n += 1
        except FileNotFoundError:
            pass
    return n


def wait_memfds(p, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while memfds(p) != n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert memfds(p) == n
    assert val(scrape(p, 2), "viaduct_cache_memory_files") == n


def traces(p):
    return [(int(a), int(b)) for a, b in re.findall(TRACE, p.read_error_log())]


def wait_traces(p, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while len(traces(p)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    t = traces(p)
    assert len(t) == n, t
    return t


def store(p, path="/big", body=BIG, i=0, **kw):
    """Stores @path through listener @i (the scheme is part of the cache key)."""
    with p.connect(i, **kw) as c:
        r = c.exchange("GET", path, host="site.test")
    assert r.status == 200 and r.body == body
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"


@pytest.mark.parametrize("send,way", [("sendfile", "sendfile"), ("mapped", "write")])
def test_plain_hits_leave_by_send_file(mf_proxy, make_origin, send, way):
    """A plain HTTP/1.1 hit hands the memory file to the front's send_file: sendfile(2) from its
    descriptor, or one write(2) from its mapping (cache.disk_send; auto measures both,
    test_74_cache_sendfile.py)."""
    o = make_origin(replies({"/big": BIG}))
    p = mf_proxy(o, disk_send=send)
    store(p)
    wait_memfds(p, 1)
    with p.connect() as c:
        for _ in range(2):
            r = c.exchange("GET", "/big", host="site.test")
            assert r.status == 200 and r.body == BIG
            assert re.fullmatch(r"viaduct; hit; ttl=\d+", r.header("cache-status"))
            assert r.header("content-length") == str(MIB)
            assert r.header("etag") == '"big"'
        r = c.exchange("HEAD", "/big", host="site.test")
        assert r.status == 200 and r.body == b"" and r.header("content-length") == str(MIB)
    assert wait_traces(p, 2) == [(MIB, 0), (MIB, 0)]
    assert re.findall(r"file body by (\w+)", p.read_error_log()) == [way] * 2
    assert count(o) == 1
    assert p.stop() == 0
    p.check_clean()


def test_tls_and_h2_clients_read_the_mapping(mf_proxy, make_origin, pki):
    o = make_origin(replies({"/big": BIG}))
    p = mf_proxy(o)
    store(p, i=1, **tls_kw(pki))
    with p.connect(1, **tls_kw(pki)) as c:
        r = c.exchange("GET", "/big", host="site.test")
        assert r.status == 200 and r.body == BIG
        assert r.header("cache-status").startswith("viaduct; hit")
    assert wait_traces(p, 1) == [(0, MIB)]  # TLS: send_file refused, the mapping sent
    # HTTP/2 (curl; the name the test certificate carries, so another cache key): stored,
    # then a hit from the memory file's mapping.
    url = "https://localhost:%d/big" % p.port(1)
    for status in ("viaduct; fwd=uri-miss; stored", "viaduct; hit"):
        out = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki.ca, "-D", "-", url],
                             capture_output=True, timeout=20)
        assert out.returncode == 0, out.stderr
        head, _, body = out.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/2 200")
        assert b"\r\ncache-status: " + status.encode() in head
        assert body == BIG
    assert wait_traces(p, 2)[1] == (0, MIB)
    assert count(o) == 2
    assert p.stop() == 0
    p.check_clean()


@pytest.mark.parametrize("tls", [False, True])
def test_ranges_from_a_memory_file(mf_proxy, make_origin, pki, tls):
    o = make_origin(replies({"/big": BIG}))
    p = mf_proxy(o)
    kw = tls_kw(pki) if tls else {}
    store(p, i=1 if tls else 0, **kw)
    with p.connect(1 if tls else 0, **kw) as c:
        r = c.exchange("GET", "/big", host="site.test", headers=[("Range", "bytes=1000-300999")])
        assert r.status == 206
        assert r.header("content-range") == "bytes 1000-300999/%d" % MIB
        assert r.body == BIG[1000:301000]
        r = c.exchange("GET", "/big", host="site.test", headers=[("Range", "bytes=-17")])
        assert r.status == 206 and r.body == BIG[-17:]
        # Several ranges: multipart/byteranges, each part's data from the memory file.
        r = c.exchange("GET", "/big", host="site.test",
                       headers=[("Range", "bytes=0-9,500000-599999")])
        assert r.status == 206
        m = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", r.header("content-type"))
        b = m.group(1).encode()
        want = (b"--" + b + b"\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Range: bytes 0-9/1048576\r\n\r\n" + BIG[:10] +
                b"\r\n--" + b + b"\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Range: bytes 500000-599999/1048576\r\n\r\n" + BIG[500000:600000] +
                b"\r\n--" + b + b"--\r\n")
        assert r.body == want
    by_file = [(300000, 0), (17, 0), (100010, 0)]
    assert wait_traces(p, 3) == ([(0, n) for n, _ in by_file] if tls else by_file)
    assert count(o) == 1
    assert p.stop() == 0
    p.check_clean()


def test_memory_files_bounds_them(mf_proxy, make_origin):
    """memory_files: 1 -- the second large body stays in ordinary memory and is sent from it;
    both are hits with their own bytes."""
    o = make_origin(replies({"/a": BIG, "/b": OTHER}))
    p = mf_proxy(o, memory_files=1)
    store(p, "/a", BIG)
    store(p, "/b", OTHER)
    wait_memfds(p, 1)
    with p.connect() as c:
        for path, body in (("/a", BIG), ("/b", OTHER), ("/a", BIG)):
            r = c.exchange("GET", path, host="site.test")
            assert r.status == 200 and r.body == body
            assert r.header("cache-status").startswith("viaduct; hit")
    assert wait_traces(p, 2) == [(MIB, 0), (MIB, 0)]  # /a twice, /b not from a file
    assert count(o) == 2
    assert p.stop() == 0
    p.check_clean()


@pytest.mark.parametrize("cache", [{"memory_files": 0}, {"sendfile_min": "2m"}])
def test_off_keeps_bodies_in_ordinary_memory(mf_proxy, make_origin, cache):
    o = make_origin(replies({"/big": BIG}))
    p = mf_proxy(o, **cache)
    store(p)
    with p.connect() as c:
        r = c.exchange("GET", "/big", host="site.test")
        assert r.status == 200 and r.body == BIG
        assert r.header("cache-status").startswith("viaduct; hit")
    wait_memfds(p, 0)
    assert traces(p) == []
    assert p.stop() == 0
    p.check_clean()


def test_purge_and_replacement_close_the_file(mf_proxy, make_origin):
    o = make_origin(replies({"/big": BIG}))
    p = mf_proxy(o)
    store(p)
    wait_memfds(p, 1)
    with p.connect() as c:
        assert c.exchange("PURGE", "/big", host="site.test").status == 200
    wait_memfds(p, 0)
    store(p)
    # A replacement (Cache-Control: no-cache on the request: stored again) frees the old file.
    with p.connect() as c:
        r = c.exchange("GET", "/big", host="site.test", headers=[("Cache-Control", "no-cache")])
        assert r.status == 200 and r.body == BIG
    wait_memfds(p, 1)
    assert count(o) == 3
    assert p.stop() == 0
    p.check_clean()


def test_revalidated_entry_keeps_a_memory_file(mf_proxy, make_origin):
    """A stale entry answered 304 by the origin: the updated entry is a new memory file with the
    same bytes, and the old one is closed."""
    def reply(req):
        if req.headers.get("if-none-match") == '"v1"':
            return build_response(304, b"", [("Cache-Control", "max-age=0"), ("ETag", '"v1"')],
                                  length=False)
        return build_response(200, BIG, [("Cache-Control", "max-age=0"), ("ETag", '"v1"')])
    o = make_origin(reply)
    p = mf_proxy(o)
    store(p)
    wait_memfds(p, 1)
    with p.connect() as c:
        for _ in range(2):
            r = c.exchange("GET", "/big", host="site.test")
            assert r.status == 200 and r.body == BIG
            assert r.header("cache-status").startswith("viaduct; fwd=stale")
    wait_memfds(p, 1)
    reqs = o.wait_requests(3)
    assert [r.headers.get("if-none-match") for r in reqs] == [None, '"v1"', '"v1"']
    assert wait_traces(p, 2) == [(MIB, 0), (MIB, 0)]
    assert p.stop() == 0
    p.check_clean()


def test_bytes_in_flight_outlive_a_purged_file(mf_proxy, make_origin):
    """A client that reads slowly: the hit hands the last bytes to the kernel and ends while
    much of the body still waits in the socket buffers; a PURGE meanwhile drops the entry, so
    its memory file is closed and unmapped with those bytes unread. The client still reads
    every byte as stored (the kernel holds the pages, and the seals kept them unchanged)."""
    big = pattern(6 * MIB, salt=3)
    o = make_origin(replies({"/big": big}))
    p = mf_proxy(o)
    store(p, "/big", big)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((p.addr(0), p.port(0)))
    s.sendall(b"GET /big HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
    data = bytearray(s.recv(65536))
    with p.connect() as c:
        assert c.exchange("PURGE", "/big", host="site.test").status == 200
    # Read slowly until the hit has handed over its last byte, then stop reading.
    while not traces(p):
        data += s.recv(65536)
        time.sleep(0.002)
    assert traces(p) == [(6 * MIB, 0)]
    wait_memfds(p, 0)
    assert len(data) < 6 * MIB  # bytes of the closed file are still on their way
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == big
    assert p.stop() == 0
    p.check_clean()
