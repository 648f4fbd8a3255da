# SPDX-License-Identifier: MIT
"""Collapsed forwarding (RFC 9111 §4, Cache-Status `collapsed` of RFC 9211 §2.8): concurrent
misses for one URL make one origin request when the response is shareable, and every client
gets the same bytes, streamed while they arrive; otherwise each goes to the origin itself.

The tests do not sleep to line things up: the origin holds its reply until the test opens a
gate, the test waits for the origin's request count, and viaduct's `proxy` trace says when a
request has started to wait ("collapsed forwarding: waiting for URL")."""
import re
import threading
import time

import pytest

from vdtest.cache import count
from vdtest.httpmsg import build_response, linger_reset
from vdtest.origins import Reply

GATE_TIMEOUT = 20


def url(origin, path="/c"):
    return "http://127.0.0.1:%d%s" % (origin.port, path)




def conf(**cache):
    c = {"memory": "16m", "max_object": "1m"}
    c.update(cache)
    return {"workers": 2, "cache": c, "log": {"trace": ["proxy"]}}


def wait_log_count(v, pattern, n, timeout=10.0, access=False):
    """Waits until @pattern occurs at least @n times in the error (or access) log."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = v.read_access_log() if access else v.read_error_log()
        found = len(rx.findall(text))
        if found >= n:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("%d of %d %r in the log:\n%s" % (found, n, pattern, text[-3000:]))
        time.sleep(0.02)


def waiting(v, o, path, n):
    wait_log_count(v, r"collapsed forwarding: waiting for %s\b" % re.escape(url(o, path)), n)


def gated(response, gate, first_only=True):
    """An origin reply: the first request's answer waits for @gate (every one's when not
    @first_only); the others are answered at once."""
    def reply(req):
        if first_only and req.index > 0:
            return Reply(response)
        return Reply([lambda: gate.wait(GATE_TIMEOUT), response])
    return reply


def send(v, target, headers=None):
    c = v.connect()
    c.request("GET", target, headers)
    return c


def cstatus(r):
    return r.header("cache-status")


CACHEABLE = [("Cache-Control", "max-age=100"), ("Content-Type", "text/plain")]


def start_leader_and_waiters(v, o, path, n_waiters, headers=None):
    leader = send(v, url(o, path), headers)
    o.wait_requests(1)
    waiters = [send(v, url(o, path), headers) for _ in range(n_waiters)]
    waiting(v, o, path, n_waiters)
    return leader, waiters


# ---- one origin request ----------------------------------------------------------------------

def test_concurrent_misses_make_one_origin_request(viaduct, make_origin):
    gate = threading.Event()
    body = b"collapsed body " * 1000
    o = make_origin(gated(build_response(200, body, CACHEABLE), gate))
    v = viaduct(conf())
    leader, waiters = start_leader_and_waiters(v, o, "/c", 7)
    assert count(o) == 1
    gate.set()
    r = leader.response()
    assert r.status == 200 and r.body == body
    assert cstatus(r) == "viaduct; fwd=uri-miss; stored"
    for c in waiters:
        w = c.response()
        assert w.status == 200 and w.body == body
        assert cstatus(w) == "viaduct; fwd=uri-miss; collapsed"
        assert w.header("content-type") == "text/plain"
        assert w.header("content-length") == str(len(body))
    assert count(o) == 1
    # Stored by the leader: the next request is an ordinary hit.
    with v.connect() as c:
        h = c.exchange("GET", url(o, "/c"))
    assert h.body == body and cstatus(h).startswith("viaduct; hit; ttl=")
    assert count(o) == 1
    # Each waiter is one access-log line with the cache field.
    wait_log_count(v, r"cache=fwd=uri-miss,collapsed", 7, access=True)
    assert len(re.findall(r"cache=fwd=uri-miss,collapsed", v.read_access_log())) == 7


def test_waiters_keep_their_connection_for_the_next_request(viaduct, make_origin):
    gate = threading.Event()
    o = make_origin(gated(build_response(200, b"x" * 10, CACHEABLE), gate))
    v = viaduct(conf())
    leader, waiters = start_leader_and_waiters(v, o, "/k", 2)
    gate.set()
    assert leader.response().body == b"x" * 10
    for c in waiters:
        assert c.response().body == b"x" * 10
        r = c.exchange("GET", url(o, "/k"))
        assert r.status == 200 and cstatus(r).startswith("viaduct; hit")
    assert count(o) == 1


# ---- not shareable: everyone goes to the origin -------------------------------------------

@pytest.mark.parametrize("headers,body,stored", [
    ([("Cache-Control", "no-store")], b"n" * 100, False),
    ([("Cache-Control", "private, max-age=100")], b"p" * 100, False),
    ([("Cache-Control", "max-age=100"), ("Vary", "*")], b"v" * 100, False),
    ([("Cache-Control", "max-age=100")], b"b" * (2 << 20), False),  # over max_object (1m)
    # Stored, but not to be reused without validation (RFC 9111 §5.2.2.4, §4.2.4):
    ([("Cache-Control", "no-cache, max-age=100")], b"c" * 100, True),
    ([("Cache-Control", "max-age=0")], b"z" * 100, True),
    ([("Cache-Control", "max-age=10"), ("Age", "20")], b"a" * 100, True),
], ids=["no-store", "private", "vary-star", "too-big", "no-cache", "max-age-0", "stale"])
def test_not_shareable_every_client_goes_to_the_origin(viaduct, make_origin, headers, body,
                                                       stored):
    gate = threading.Event()
    o = make_origin(gated(build_response(200, body, headers), gate))
    v = viaduct(conf())
    n = 4
    leader, waiters = start_leader_and_waiters(v, o, "/n", n - 1)
    gate.set()
    r = leader.response()
    assert r.status == 200 and r.body == body
    assert cstatus(r) == "viaduct; fwd=uri-miss" + ("; stored" if stored else "")
    for c in waiters:
        w = c.response()
        assert w.status == 200 and w.body == body
        assert re.fullmatch(r"viaduct; fwd=(uri-miss|stale)%s; collapsed=\?0" %
                            ("; stored" if stored else ""), cstatus(w)), cstatus(w)
    assert count(o) == n


def test_waiter_directives_decide_for_the_waiter(viaduct, make_origin):
    """A waiter whose request wants more freshness than the response has (min-fresh) goes to
    the origin; a plain one beside it takes the shared response."""
    gate = threading.Event()
    o = make_origin(gated(build_response(200, b"m", CACHEABLE), gate))
    v = viaduct(conf())
    leader = send(v, url(o, "/m"))
    o.wait_requests(1)
    picky = send(v, url(o, "/m"), [("Cache-Control", "min-fresh=1000")])
    plain = send(v, url(o, "/m"))
    waiting(v, o, "/m", 2)
    gate.set()
    assert leader.response().body == b"m"
    assert cstatus(plain.response()) == "viaduct; fwd=uri-miss; collapsed"
    p = picky.response()
    assert p.body == b"m" and p.header("cache-status").endswith("; collapsed=?0")
    assert count(o) == 2


def test_leader_upstream_failure_waiters_go_themselves(viaduct, make_origin):
    gate = threading.Event()
    ok = build_response(200, b"fine", CACHEABLE)

    def reply(req):
        if req.index == 0:
            return Reply([lambda: gate.wait(GATE_TIMEOUT)], close=True)  # no response at all
        return Reply(ok)
    o = make_origin(reply)
    v = viaduct(conf())
    leader, waiters = start_leader_and_waiters(v, o, "/f", 3)
    gate.set()
    assert leader.response().status == 502
    forwarded = 0
    for c in waiters:
        w = c.response()
        assert w.status == 200 and w.body == b"fine"
        # Each goes on its own; one that comes after another one's response was stored finds
        # it in the store.
        if cstatus(w) == "viaduct; fwd=uri-miss; stored; collapsed=?0":
            forwarded += 1
        else:
            assert cstatus(w).startswith("viaduct; hit; ttl=")
    assert forwarded >= 1 and count(o) == 1 + forwarded


def test_vary_mismatch_falls_back(viaduct, make_origin):
    gate = threading.Event()

    def reply(req):
        ae = req.header("accept-encoding")
        resp = build_response(200, ("body for %s" % ae).encode(),
                              CACHEABLE + [("Vary", "Accept-Encoding")])
        if req.index == 0:
            return Reply([lambda: gate.wait(GATE_TIMEOUT), resp])
        return Reply(resp)
    o = make_origin(reply)
    v = viaduct(conf())
    gz = [("Accept-Encoding", "gzip")]
    leader = send(v, url(o, "/v"), gz)
    o.wait_requests(1)
    same = send(v, url(o, "/v"), gz)
    other = send(v, url(o, "/v"), [("Accept-Encoding", "br")])
    waiting(v, o, "/v", 2)
    gate.set()
    assert leader.response().body == b"body for gzip"
    s = same.response()
    assert s.body == b"body for gzip" and cstatus(s) == "viaduct; fwd=uri-miss; collapsed"
    d = other.response()
    assert d.body == b"body for br"
    assert re.fullmatch(r"viaduct; fwd=(uri|vary)-miss; stored; collapsed=\?0", cstatus(d))
    reqs = o.wait_requests(2)
    assert count(o) == 2 and reqs[1].header("accept-encoding") == "br"


# ---- when collapsing does not apply ----------------------------------------------------------

def test_collapse_disabled(viaduct, make_origin):
    gate = threading.Event()
    o = make_origin(gated(build_response(200, b"d", CACHEABLE), gate, first_only=False))
    v = viaduct(conf(collapse=False))
    n = 4
    clients = [send(v, url(o, "/d")) for _ in range(n)]
    o.wait_requests(n)  # all four reach the origin while it holds its answers
    gate.set()
    for c in clients:
        r = c.response()
        assert r.body == b"d" and "collapsed" not in cstatus(r)
    assert count(o) == n
    assert "collapsed forwarding" not in v.read_error_log()


@pytest.mark.parametrize("headers", [
    [("Cache-Control", "no-cache")],
    [("Cache-Control", "max-age=0")],
    [("Pragma", "no-cache")],
    [("Authorization", "Bearer x")],
    [("If-None-Match", '"a"')],
    [("Range", "bytes=0-1")],
], ids=["no-cache", "max-age-0", "pragma", "authorization", "conditional", "range"])
def test_requests_that_demand_the_origin_do_not_wait(viaduct, make_origin, headers):
    gate = threading.Event()
    o = make_origin(gated(build_response(200, b"r", CACHEABLE), gate, first_only=False))
    v = viaduct(conf())
    leader = send(v, url(o, "/r"))
    o.wait_requests(1)
    other = send(v, url(o, "/r"), headers)
    o.wait_requests(2)  # forwarded at once, not held behind the leader
    gate.set()
    assert leader.response().status == 200
    assert other.response().status in (200, 206)
    assert count(o) == 2


def test_collapse_timeout(viaduct, make_origin):
    gate = threading.Event()
    o = make_origin(gated(build_response(200, b"t", CACHEABLE), gate))
    v = viaduct(conf(collapse_timeout="300ms"))
    leader = send(v, url(o, "/t"))
    o.wait_requests(1)
    t0 = time.monotonic()
    w = send(v, url(o, "/t"))
    r = w.response()  # the leader's answer is held: this one gave up and went itself
    waited = time.monotonic() - t0
    assert r.body == b"t"
    assert cstatus(r) == "viaduct; fwd=uri-miss; stored; collapsed=?0"
    assert 0.25 <= waited < 5
    assert count(o) == 2
    gate.set()
    assert leader.response().body == b"t"


def test_config_keys(viaduct_bin, tmp_path):
    from vdtest.proc import run_bin
    p = tmp_path / "v.yaml"
    p.write_text("cache:\n  collapse: maybe\n")
    r = run_bin(viaduct_bin, ["-t", "-c", str(p)])
    assert r.returncode != 0 and "cache.collapse" in r.stderr
    p.write_text("cache:\n  collapse_timeout: 0\n")
    r = run_bin(viaduct_bin, ["-t", "-c", str(p)])
    assert r.returncode != 0 and "cache.collapse_timeout" in r.stderr
    p.write_text("cache:\n  collapse: false\n  collapse_timeout: 2s\n")
    r = run_bin(viaduct_bin, ["-t", "-c", str(p)])
    assert r.returncode == 0, r.stderr


# ---- read-while-write ------------------------------------------------------------------------

def read_head(c):
    head = c.reader.read_head()
    lines = head[:-4].split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 200"), head
    fields = {}
    for ln in lines[1:]:
        k, _, val = ln.partition(b":")
        fields[k.strip().lower().decode()] = val.strip().decode()
    return fields


def read_body_part(c, fields, n):
    """Reads at least @n body bytes (whole chunks when chunked)."""
    if "content-length" in fields:
        return c.reader.read_exact(n)
    out = bytearray()
    while len(out) < n:
        size = int(c.reader.read_line().split(b";")[0], 16)
        assert size > 0, "the body ended early"
        out += c.reader.read_exact(size)
        assert c.reader.read_line() == b""
    return bytes(out)


def read_body_rest(c, fields, n):
    if "content-length" in fields:
        return c.reader.read_exact(n)
    out = bytearray()
    while True:
        size = int(c.reader.read_line().split(b";")[0], 16)
        if size == 0:
            assert c.reader.read_line() == b""
            return bytes(out)
        out += c.reader.read_exact(size)
        assert c.reader.read_line() == b""


def chunked(*parts):
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_streams_to_waiters_while_it_arrives(viaduct, make_origin, framing):
    head_gate, tail_gate = threading.Event(), threading.Event()
    part1 = bytes(range(256)) * 400           # 100 KiB
    part2 = b"the end " * 12800               # 100 KiB
    if framing == "length":
        head = (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=100\r\nContent-Length: %d\r\n\r\n"
                % (len(part1) + len(part2)))
        first, last = head + part1, part2
    else:
        head = (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=100\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        first, last = head + chunked(part1), chunked(part2) + b"0\r\n\r\n"

    def reply(req):
        return Reply([lambda: head_gate.wait(GATE_TIMEOUT), first,
                      lambda: tail_gate.wait(GATE_TIMEOUT), last])
    o = make_origin(reply)
    v = viaduct(conf())
    leader, waiters = start_leader_and_waiters(v, o, "/s", 3)
    head_gate.set()
    got = {}
    for c in [leader] + waiters:
        f = read_head(c)
        assert f["cache-status"].startswith("viaduct; fwd=uri-miss")
        # The first part arrives while the origin still holds the last one.
        got[c] = (f, read_body_part(c, f, len(part1)))
        assert got[c][1] == part1
        assert not tail_gate.is_set()
    # A request that comes while the body streams joins it from the first byte.
    late = send(v, url(o, "/s"))
    f = read_head(late)
    assert f["cache-status"] == "viaduct; fwd=uri-miss; collapsed"
    got[late] = (f, read_body_part(late, f, len(part1)))
    assert got[late][1] == part1
    assert count(o) == 1
    tail_gate.set()
    for c, (f, p1) in got.items():
        assert p1 + read_body_rest(c, f, len(part2)) == part1 + part2
    for c in waiters + [late]:
        assert got[c][0]["cache-status"] == "viaduct; fwd=uri-miss; collapsed"
    assert count(o) == 1


def test_chunked_body_past_max_object_keeps_streaming(viaduct, make_origin):
    """A chunked body that grows past max_object after waiters started: it is not stored, the
    waiters streaming it still get all of it, and a request that comes after that goes to the
    origin itself."""
    g1, g2 = threading.Event(), threading.Event()
    p1, p2, p3 = b"1" * 600000, b"2" * 600000, b"3" * 600000  # max_object is 1m
    head = (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=100\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")

    def reply(req):
        if req.index > 0:
            return Reply(head + chunked(b"late") + b"0\r\n\r\n")
        return Reply([lambda: g1.wait(GATE_TIMEOUT), head + chunked(p1),
                      lambda: g2.wait(GATE_TIMEOUT), chunked(p2), lambda: g2.wait(0.0),
                      lambda: late_done.wait(GATE_TIMEOUT), chunked(p3) + b"0\r\n\r\n"])
    late_done = threading.Event()
    o = make_origin(reply)
    v = viaduct(conf())
    leader, waiters = start_leader_and_waiters(v, o, "/big", 2)
    g1.set()
    heads = {c: read_head(c) for c in [leader] + waiters}
    got = {c: read_body_part(c, heads[c], len(p1)) for c in heads}
    g2.set()
    for c in heads:
        got[c] += read_body_part(c, heads[c], len(p2))  # past max_object now
    late = send(v, url(o, "/big"))
    r = late.response()
    assert r.body == b"late" and cstatus(r) == "viaduct; fwd=uri-miss; stored"
    assert count(o) == 2
    late_done.set()
    for c in heads:
        assert got[c] + read_body_rest(c, heads[c], len(p3)) == p1 + p2 + p3
    for c in waiters:
        assert heads[c]["cache-status"] == "viaduct; fwd=uri-miss; collapsed"
    # Too big to store: what the store holds is the late request's small response, which a
    # stored big one (it completed last) would have replaced.
    with v.connect() as c:
        r = c.exchange("GET", url(o, "/big"))
    assert r.body == b"late" and cstatus(r).startswith("viaduct; hit")
    assert count(o) == 2


def test_waiter_too_slow_for_a_window_is_cut_off(viaduct, make_origin):
    """Past max_object the buffer keeps about max_object: a waiter that stops reading falls
    behind by more and is cut off (its response is incomplete); the others finish."""
    gate = threading.Event()
    body = bytes(range(256)) * 32768  # 8 MiB, chunked
    head = (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=100\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    # Paced, so the clients that read keep up easily with each other.
    parts = [lambda: gate.wait(GATE_TIMEOUT), head]
    for i in range(0, len(body), 65536):
        parts += [chunked(body[i:i + 65536]), 0.005]
    o = make_origin(lambda req: Reply(parts + [b"0\r\n\r\n"]))
    v = viaduct(conf())
    leader = send(v, url(o, "/cut"))
    o.wait_requests(1)
    good = send(v, url(o, "/cut"))
    s = stalled_client(v, url(o, "/cut"))
    waiting(v, o, "/cut", 2)
    results = {}

    def read(name, c):
        results[name] = c.response()
    threads = [threading.Thread(target=read, args=(n, c)) for n, c in
               (("leader", leader), ("good", good))]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(30)
    assert results["leader"].body == body and results["good"].body == body
    wait_log_count(v, r"client too slow for a shared response larger than cache.max_object", 1)
    got = recv_all(s)
    assert len(got) < len(body) and not got.endswith(b"0\r\n\r\n")
    assert count(o) == 1


def stalled_client(v, target):
    """A client connection with a tiny receive buffer (set before connecting, so the window
    stays small) that sends one GET and reads nothing until told."""
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(20)
    s.connect((v.addr(), v.port()))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target.encode())
    return s


def recv_all(s):
    got = bytearray()
    while True:
        try:
            d = s.recv(1 << 20)
        except ConnectionResetError:
            break
        if not d:
            break
        got += d
    s.close()
    return bytes(got)


def test_slow_waiter_does_not_hold_the_others(viaduct, make_origin):
    """Each waiter reads at its own pace (back-pressure per waiter): one that does not read
    leaves the others and the leader to finish, and gets everything once it reads."""
    gate = threading.Event()
    body = bytes(range(256)) * 3600  # 900 KiB, under max_object
    o = make_origin(gated(build_response(200, body, CACHEABLE), gate))
    v = viaduct(conf())
    leader = send(v, url(o, "/slow"))
    o.wait_requests(1)
    stalled = stalled_client(v, url(o, "/slow"))
    others = [send(v, url(o, "/slow")) for _ in range(2)]
    waiting(v, o, "/slow", 3)
    gate.set()
    assert leader.response().body == body
    for c in others:
        assert c.response().body == body
    got = recv_all(stalled)
    head, _, rest = got.partition(b"\r\n\r\n")
    assert b"Cache-Status: viaduct; fwd=uri-miss; collapsed" in head
    assert rest == body
    assert count(o) == 1


# ---- clients that go away ----------------------------------------------------------------------

def test_waiter_that_disconnects_leaves_cleanly(viaduct, make_origin):
    gate = threading.Event()
    body = b"w" * 50000
    o = make_origin(gated(build_response(200, body, CACHEABLE), gate))
    v = viaduct(conf())
    leader, waiters = start_leader_and_waiters(v, o, "/w", 3)
    gone = waiters.pop(1)
    linger_reset(gone.sock)
    gone.closed = True
    wait_log_count(v, r"collapsed forwarding: the client left", 1)
    gate.set()
    assert leader.response().body == body
    for c in waiters:
        r = c.response()
        assert r.body == body and cstatus(r) == "viaduct; fwd=uri-miss; collapsed"
    assert count(o) == 1


@pytest.mark.parametrize("when", ["before-head", "mid-body"])
def test_leader_client_disconnects_transfer_goes_on(viaduct, make_origin, when):
    head_gate, tail_gate = threading.Event(), threading.Event()
    part1, part2 = b"a" * 60000, b"b" * 60000
    head = (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=100\r\nContent-Length: %d\r\n\r\n"
            % (len(part1) + len(part2)))

    def reply(req):
        return Reply([lambda: head_gate.wait(GATE_TIMEOUT), head + part1,
                      lambda: tail_gate.wait(GATE_TIMEOUT), part2])
    o = make_origin(reply)
    v = viaduct(conf())
    leader, waiters = start_leader_and_waiters(v, o, "/l", 3)
    if when == "before-head":
        linger_reset(leader.sock)
        leader.closed = True
        wait_log_count(v, r"the transfer goes on for the others", 1)
        head_gate.set()
        tail_gate.set()
    else:
        head_gate.set()
        f = read_head(leader)
        assert read_body_part(leader, f, len(part1)) == part1
        linger_reset(leader.sock)
        leader.closed = True
        wait_log_count(v, r"the transfer goes on for the others", 1)
        tail_gate.set()
    for c in waiters:
        r = c.response()
        assert r.status == 200 and r.body == part1 + part2
        assert cstatus(r) == "viaduct; fwd=uri-miss; collapsed"
    # The transfer that went on without its client stored the response.
    wait_log_count(v, r"transfer without a client ended \(200\)", 1)
    with v.connect() as c:
        h = c.exchange("GET", url(o, "/l"))
    assert h.body == part1 + part2 and cstatus(h).startswith("viaduct; hit")
    assert count(o) == 1


def test_leaderless_transfer_stops_when_not_shareable(viaduct, make_origin):
    """The leader's client left before the head; the response then turns out not to be
    shareable: the waiters go to the origin themselves and the transfer nobody needs stops
    without reading the rest of the body."""
    head_gate, tail_gate = threading.Event(), threading.Event()
    head = b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 20000\r\n\r\n"

    def reply(req):
        if req.index > 0:
            return Reply(build_response(200, b"own", [("Cache-Control", "no-store")]))
        return Reply([lambda: head_gate.wait(GATE_TIMEOUT), head + b"x" * 10000,
                      lambda: tail_gate.wait(GATE_TIMEOUT), b"y" * 10000])
    o = make_origin(reply)
    v = viaduct(conf())
    leader, waiters = start_leader_and_waiters(v, o, "/ns", 2)
    linger_reset(leader.sock)
    leader.closed = True
    wait_log_count(v, r"the transfer goes on for the others", 1)
    head_gate.set()
    for c in waiters:
        r = c.response()
        assert r.body == b"own" and cstatus(r) == "viaduct; fwd=uri-miss; collapsed=?0"
    # Ended while the origin still holds the second half.
    wait_log_count(v, r"transfer without a client ended \(200\)", 1)
    assert not tail_gate.is_set()
    tail_gate.set()
    assert count(o) == 3


def test_leader_client_disconnect_without_waiters_stops_the_transfer(viaduct, make_origin):
    gate = threading.Event()
    o = make_origin(gated(build_response(200, b"z" * 1000, CACHEABLE), gate))
    v = viaduct(conf())
    leader = send(v, url(o, "/z"))
    o.wait_requests(1)
    linger_reset(leader.sock)
    leader.closed = True
    v.wait_for_log(r'"GET %s HTTP/1.1" 499 ' % re.escape(url(o, "/z")), access=True)
    gate.set()
    assert "transfer goes on" not in v.read_error_log()
    # Nothing went on in the background, so nothing was stored: the next request is a miss.
    with v.connect() as c:
        r = c.exchange("GET", url(o, "/z"))
    assert r.body == b"z" * 1000 and cstatus(r) == "viaduct; fwd=uri-miss; stored"
    assert count(o) == 2


def test_shutdown_with_a_transfer_for_waiters(viaduct, make_origin):
    """SIGTERM while a leaderless transfer runs: it is cancelled, the waiters' clients are
    closed at the end of the grace period, and viaduct exits cleanly."""
    gate = threading.Event()
    o = make_origin(gated(build_response(200, b"q" * 1000, CACHEABLE), gate))
    v = viaduct(yaml_merge(conf(), {"timeouts": {"shutdown_grace": "1s"}}))
    leader, waiters = start_leader_and_waiters(v, o, "/q", 2)
    linger_reset(leader.sock)
    leader.closed = True
    wait_log_count(v, r"the transfer goes on for the others", 1)
    assert v.stop(close_clients=False) == 0
    gate.set()


def yaml_merge(a, b):
    from vdtest import yamlconf
    return yamlconf.merge(a, b)
