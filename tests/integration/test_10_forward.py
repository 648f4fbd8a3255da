# SPDX-License-Identifier: MIT
"""Forward proxy: absolute-form targets, hop-by-hop fields, Via, Max-Forwards, bodies
(RFC 9110 §7.2, §7.6, RFC 9112 §3.2)."""
import hashlib
import time

import pytest

from vdtest.asserts import assert_one_framing, end_to_end
from vdtest.httpmsg import build_response, chunked_body, via_list


def url(origin, path="/", host="origin.test"):
    return "http://%s:%d%s" % (host, origin.port, path)


def test_absolute_form_becomes_origin_form(proxy, make_origin, dns):
    o = make_origin(build_response(200, b"hello from origin\n", [("Content-Type", "text/plain")]))
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/p?q=1"))
    assert r.status == 200
    assert r.body == b"hello from origin\n"
    assert r.header("content-type") == "text/plain"
    (req,) = o.wait_requests(1)
    assert req.request_line == b"GET /p?q=1 HTTP/1.1"
    assert req.headers.all("host") == ["origin.test:%d" % o.port]
    assert dns.count("origin.test") >= 1


def test_absolute_form_authority_overrides_client_host(proxy, make_origin):
    """RFC 9112 §3.2.2: a proxy uses the absolute-form authority and replaces Host with it."""
    o = make_origin()
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/x"), headers=[("Host", "elsewhere.example:81")])
    assert r.status == 200
    (req,) = o.wait_requests(1)
    assert req.headers.all("host") == ["origin.test:%d" % o.port]


def test_absolute_form_host_is_still_checked(proxy, make_origin):
    """Where an absolute-form target's authority wins, Host is still checked as any Host (RFC
    9112 §3.2, RFC 9110 §7.2): the very bytes of the authority pass (viaduct skips parsing them
    twice), an empty port (allowed in a URI, RFC 3986 §3.2.3, not in Host) or a malformed Host
    is a 400, and nothing of those reaches the origin."""
    o = make_origin()
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/same"), headers=[("Host", "origin.test:%d" % o.port)])
    assert r.status == 200
    for target, host in (("http://origin.test:/x", "origin.test:"),
                         (url(o, "/y"), "origin.test:%d:1" % o.port),
                         (url(o, "/z"), "bad host")):
        with proxy.connect() as c:
            r = c.exchange("GET", target, headers=[("Host", host)])
        assert r.status == 400, (target, host)
        assert r.body == b"400 Bad Request: malformed request from client: invalid Host field\n", r.body
    assert [q.target for q in o.wait_requests(1)] == ["/same"]
    time.sleep(0.2)
    assert len(o.requests) == 1


def test_ip_literal_target_needs_no_dns(proxy, make_origin, dns):
    o = make_origin()
    with proxy.connect() as c:
        r = c.exchange("GET", "http://127.0.0.1:%d/ip" % o.port)
    assert r.status == 200 and r.body == b"ok\n"
    (req,) = o.wait_requests(1)
    assert req.request_line == b"GET /ip HTTP/1.1"
    assert req.headers.all("host") == ["127.0.0.1:%d" % o.port]
    assert sum(dns.queries.values()) == 0


def test_target_bytes_preserved(proxy, make_origin):
    """Path and query are forwarded byte for byte, %-escapes untouched (no normalisation)."""
    o = make_origin()
    path = "/a%20b/./c/%2e%2E/d;p=1?x=1&y=%2F&z=a+b"
    with proxy.connect() as c:
        assert c.exchange("GET", url(o, path)).status == 200
    (req,) = o.wait_requests(1)
    assert req.target == path


def test_empty_path_becomes_slash(proxy, make_origin):
    """RFC 9112 §3.2.1: an absolute URI with an empty path is sent as origin-form "/"."""
    o = make_origin()
    with proxy.connect() as c:
        assert c.exchange("GET", url(o, "")).status == 200
        assert c.exchange("GET", url(o, "?q=1")).status == 200
    reqs = o.wait_requests(2)
    assert reqs[0].target == "/"
    assert reqs[1].target == "/?q=1"


def test_request_hop_by_hop_fields_removed(proxy, make_origin):
    o = make_origin()
    hdrs = [
        ("Connection", "keep-alive, X-Hop-A, x-hop-b"),
        ("X-Hop-A", "1"),
        ("X-Hop-B", "2"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Upgrade", "example/1"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("X-End", "kept"),
        ("X-Dup", "first"),
        ("Accept", "text/plain"),
        ("X-Dup", "second"),
    ]
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/hop"), headers=hdrs)
    assert r.status == 200
    (req,) = o.wait_requests(1)
    names = req.headers.names()
    assert "x-hop-a" not in names and "x-hop-b" not in names
    for h in ("keep-alive", "proxy-connection", "te", "upgrade", "proxy-authorization",
              "transfer-encoding"):
        assert h not in names, (h, req.headers.items)
    # The proxy may send its own Connection field, but only with its own options.
    assert set(req.headers.tokens("connection")) <= {"keep-alive", "close"}, req.headers.items
    e2e = end_to_end(req.headers, drop=("host", "via", "connection"))
    assert e2e == [("x-end", "kept"), ("x-dup", "first"), ("accept", "text/plain"),
                   ("x-dup", "second")]


@pytest.mark.parametrize("cache", [False, True])
def test_named_fields_removed_at_every_length(viaduct, make_origin, cache):
    """Fields named by Connection are removed whatever their length, in both directions, and a
    field of the same length that is not named is kept: 14 names (fewer than the 16 viaduct
    collects up front) of 1 to 70 bytes, in mixed case. viaduct skips the compare for lengths no
    listed name has, with one length class for 63 bytes and more."""
    lens = [1, 2, 7, 9, 10, 13, 14, 17, 19, 40, 62, 63, 64, 70]
    named = [("x" + "Nn" * 40)[:n] if n > 1 else "n" for n in lens]
    kept = [("k" + "Kk" * 40)[:n] if n > 1 else "k" for n in lens]
    conn = ", ".join(n.upper() for n in named)
    fields = [("Connection", conn)] + [(n, "v") for n in named] + [(k, "w") for k in kept]
    o = make_origin(build_response(200, b"ok", headers=fields))
    vd = viaduct(None if cache else {"cache": {"memory": 0}})
    with vd.connect() as c:
        r = c.exchange("GET", url(o, "/len"), headers=fields)
    assert r.status == 200 and r.body == b"ok"
    (req,) = o.wait_requests(1)
    for got in (r.headers, req.headers):
        names = got.names()
        assert [n for n in names if n in {m.lower() for m in named}] == []
        assert [v for n, v in got.items if n.lower() in {k.lower() for k in kept}] == \
            ["w"] * len(kept)


def test_many_fields_named_by_connection_all_removed(proxy, make_origin):
    """Connection fields listing more names than viaduct collects up front (16), split over
    two fields, in both directions: every named field is removed, the others kept."""
    named = ["X-N%02d" % i for i in range(24)]
    resp = build_response(200, b"ok", headers=[("Connection", ", ".join(named[:12])),
                                               ("Connection", ", ".join(named[12:]))] +
                          [(n, "v") for n in named] + [("X-Resp-Kept", "1")])
    o = make_origin(resp)
    hdrs = ([("Connection", ", ".join(named[:20])), ("Connection", ", ".join(named[20:]))] +
            [(n, "v") for n in named] + [("X-Req-Kept", "1")])
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/many"), headers=hdrs)
    assert r.status == 200 and r.body == b"ok"
    assert [n for n in r.headers.names() if n.startswith("x-n")] == []
    assert r.headers.get("x-resp-kept") == "1"
    (req,) = o.wait_requests(1)
    assert [n for n in req.headers.names() if n.startswith("x-n")] == []
    assert req.headers.get("x-req-kept") == "1"


def test_response_hop_by_hop_fields_removed(proxy, make_origin):
    body = b"0123456789" * 5
    o = make_origin(
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: X-Resp-Hop\r\n"
        b"X-Resp-Hop: secret\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Proxy-Authenticate: Basic realm=\"x\"\r\n"
        b"Upgrade: example/1\r\n"
        b"X-Resp-End: kept\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked_body([body[:20], body[20:]]))
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/"))
    assert r.status == 200
    assert r.body == body
    names = r.headers.names()
    assert "x-resp-hop" not in names
    for h in ("keep-alive", "proxy-connection", "proxy-authenticate", "upgrade"):
        assert h not in names, (h, r.headers.items)
    assert set(r.headers.tokens("connection")) <= {"keep-alive", "close"}, r.headers.items
    assert r.header("x-resp-end") == "kept"
    # Re-framed: exactly one framing field.
    assert r.headers.has("content-length") != r.headers.has("transfer-encoding"), r.headers.items
    if r.headers.has("content-length"):
        assert r.header("content-length") == str(len(body))


def test_via_added_both_directions(proxy, make_origin):
    """RFC 9110 §7.6.3: received-protocol is the version of the message as received."""
    o = make_origin()
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/"))
    (req,) = o.wait_requests(1)
    assert via_list(req.headers) == ["1.1 viaduct"]
    assert via_list(r.headers) == ["1.1 viaduct"]


def test_via_for_http10_messages(proxy, make_origin):
    """A 1.0 request is received as 1.0 ("1.0 viaduct" towards the origin); the 1.0
    response is received as 1.0 ("1.0 viaduct" towards the client)."""
    o = make_origin(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold")
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/"), version="1.0")
    assert r.status == 200 and r.body == b"old"
    (req,) = o.wait_requests(1)
    assert via_list(req.headers) == ["1.0 viaduct"]
    assert via_list(r.headers) == ["1.0 viaduct"]


def test_via_appended_to_existing(proxy, make_origin):
    o = make_origin(build_response(200, b"x", [("Via", "1.0 backend, 1.1 cdn-edge")]))
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/"), headers=[("Via", "1.1 corp-proxy (squid)"),
                                                    ("Via", "2 lb")])
    (req,) = o.wait_requests(1)
    assert via_list(req.headers) == ["1.1 corp-proxy (squid)", "2 lb", "1.1 viaduct"]
    assert via_list(r.headers) == ["1.0 backend", "1.1 cdn-edge", "1.1 viaduct"]


def test_via_pseudonym(viaduct, make_origin):
    vd = viaduct({"via": "edge-7"})
    o = make_origin()
    with vd.connect() as c:
        r = c.exchange("GET", url(o, "/"))
    (req,) = o.wait_requests(1)
    assert via_list(req.headers) == ["1.1 edge-7"]
    assert via_list(r.headers) == ["1.1 edge-7"]


def test_via_disabled(viaduct, make_origin):
    """via: false adds no Via, and leaves an existing one exactly as received."""
    vd = viaduct({"via": False})
    o = make_origin(build_response(200, b"x", [("Via", "1.1 backend")]))
    with vd.connect() as c:
        r = c.exchange("GET", url(o, "/"), headers=[("Via", "1.1 client-side")])
        r2 = c.exchange("GET", url(o, "/2"))
    reqs = o.wait_requests(2)
    assert reqs[0].headers.all("via") == ["1.1 client-side"]
    assert reqs[1].headers.all("via") == []
    assert r.headers.all("via") == ["1.1 backend"]
    assert r2.headers.all("via") == ["1.1 backend"]


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
def test_max_forwards_zero_answered_by_proxy(proxy, origin, method):
    """RFC 9110 §7.6.2: with Max-Forwards: 0 the proxy is the final recipient."""
    target = url(origin, "/mf")
    with proxy.connect() as c:
        sent = c.request(method, target, headers=[("Max-Forwards", "0"), ("X-Trace-Me", "yes")])
        r = c.response(method)
        assert r.status == 200, r
        if method == "TRACE":
            # RFC 9110 §9.3.8: the final recipient reflects the request as message/http.
            assert r.header("content-type").split(";")[0].strip().lower() == "message/http"
            assert r.body.startswith(("TRACE %s HTTP/1.1\r\n" % target).encode()), r.body
            assert b"\r\nX-Trace-Me: yes\r\n" in r.body
            assert r.body.endswith(b"\r\n\r\n")
            assert len(r.body) <= len(sent) + 200
        # The connection stays usable.
        r2 = c.exchange("GET", url(origin, "/after"))
        assert r2.status == 200
    reqs = origin.wait_requests(1)
    assert [q.target for q in reqs] == ["/after"]


@pytest.mark.parametrize("method,value,expect", [("OPTIONS", "5", "4"), ("TRACE", "1", "0"),
                                                 ("OPTIONS", "10", "9")])
def test_max_forwards_decremented(proxy, make_origin, method, value, expect):
    o = make_origin(build_response(200, b"", [("Allow", "GET, OPTIONS")]))
    with proxy.connect() as c:
        c.request(method, url(o, "/mf"), headers=[("Max-Forwards", value)])
        r = c.response(method)
    assert r.status == 200
    (req,) = o.wait_requests(1)
    assert req.method == method
    assert req.headers.all("max-forwards") == [expect]


def test_max_forwards_ignored_for_other_methods(proxy, origin):
    """RFC 9110 §7.6.2: other methods may ignore it; viaduct forwards it unchanged."""
    with proxy.connect() as c:
        r = c.exchange("GET", url(origin, "/g"), headers=[("Max-Forwards", "0")])
    assert r.status == 200 and r.body == b"ok\n"
    (req,) = origin.wait_requests(1)
    assert req.headers.all("max-forwards") == ["0"]


def test_content_length_body_forwarded(proxy, origin):
    body = b"name=value&x=" + b"y" * 100
    with proxy.connect() as c:
        r = c.exchange("POST", url(origin, "/form"), body=body,
                       headers=[("Content-Type", "application/x-www-form-urlencoded")])
    assert r.status == 200
    (req,) = origin.wait_requests(1)
    assert req.method == "POST"
    assert req.body == body
    assert req.headers.all("content-length") == [str(len(body))]
    assert not req.headers.has("transfer-encoding")


def test_chunked_request_body_reframed(proxy, origin):
    parts = [b"hello ", b"chunked ", b"world"]
    with proxy.connect() as c:
        c.request("POST", url(origin, "/up"), headers=[("Transfer-Encoding", "chunked")])
        c.send(chunked_body(parts))
        r = c.response()
    assert r.status == 200
    (req,) = origin.wait_requests(1)
    assert req.body == b"".join(parts)
    assert_one_framing(req)


def test_chunked_request_trailers_forwarded(proxy, origin):
    """Trailers are forwarded when the request goes on chunked (if the proxy switched to
    Content-Length it could not carry them; then the body must still be exact)."""
    with proxy.connect() as c:
        c.request("POST", url(origin, "/t"), headers=[("Transfer-Encoding", "chunked"),
                                                     ("Trailer", "X-Checksum")])
        c.send(chunked_body([b"abc", b"def"], trailers=[("X-Checksum", "sha1-beef")]))
        r = c.response()
    assert r.status == 200
    (req,) = origin.wait_requests(1)
    assert req.body == b"abcdef"
    assert_one_framing(req)
    if req.framing == "chunked":
        assert req.trailers.all("x-checksum") == ["sha1-beef"]


def test_large_bodies_both_directions(proxy, make_origin):
    big_up = bytes(range(256)) * 4096  # 1 MiB
    big_down = hashlib.sha256(b"seed").digest() * 40000  # 1.28 MB

    def reply(req):
        assert req.body == big_up
        return build_response(200, big_down, [("Content-Type", "application/octet-stream")])

    o = make_origin(reply)
    with proxy.connect() as c:
        r = c.exchange("PUT", url(o, "/big"), body=big_up)
    assert r.status == 200
    assert len(r.body) == len(big_down)
    assert r.body == big_down
    (req,) = o.wait_requests(1)
    assert len(req.body) == len(big_up)


def test_one_client_connection_many_origins(proxy, make_origin):
    a = make_origin(build_response(200, b"A"))
    b = make_origin(build_response(200, b"B"))
    with proxy.connect() as c:
        bodies = [c.exchange("GET", url(o, "/%d" % i)).body for i, o in enumerate([a, b, a, b])]
    assert bodies == [b"A", b"B", b"A", b"B"]
    assert [q.target for q in a.wait_requests(2)] == ["/0", "/2"]
    assert [q.target for q in b.wait_requests(2)] == ["/1", "/3"]


def test_origin_form_request_on_forward_listener_is_400(proxy, origin):
    """A forward listener only serves proxy requests (absolute-form): an origin-form
    request is answered 400 and nothing is forwarded (interpretation of the spec)."""
    with proxy.connect() as c:
        c.request("GET", "/local", host="127.0.0.1:%d" % origin.port)
        r = c.response()
    assert r.status == 400
    origin.assert_untouched()


def test_response_status_and_fields_relayed(proxy, make_origin):
    o = make_origin(b"HTTP/1.1 404 Not Around\r\nContent-Length: 4\r\nX-A: 1\r\n"
                    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nnope")
    with proxy.connect() as c:
        r = c.exchange("GET", url(o, "/missing"))
    assert (r.status, r.body) == (404, b"nope")
    assert r.headers.all("set-cookie") == ["a=1", "b=2"]
    assert r.header("x-a") == "1"


@pytest.mark.parametrize("cache", [False, True])
def test_response_field_lines_exact(viaduct, make_origin, cache):
    """The client gets each end-to-end field line as "name: value" CRLF, in the origin's order
    and case, whatever whitespace the origin put around the value (RFC 9112 §5: OWS is not part
    of the value); lines already in that form are copied as they arrived, in runs, and a run
    ends at every line that is not (tab, no space, two spaces, trailing space) and at every
    field left out (Connection, the field it names, Content-Length, re-framed at the end).
    Without a cache the fields are views into the origin's bytes; with one, copies (and the
    cache adds its Cache-Status line after Via)."""
    vd = viaduct(None if cache else {"cache": {"memory": 0}})
    o = make_origin(b"HTTP/1.1 200 OK\r\n"
                    b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                    b"X-A: one\r\n"
                    b"X-Tab:\tv\t\r\n"
                    b"x-none:none\r\n"
                    b"X-Two:  two  \r\n"
                    b"X-Empty: \r\n"
                    b"X-Bare:\r\n"
                    b"Connection: x-hop\r\n"
                    b"X-Hop: secret\r\n"
                    b"X-B: after hop\r\n"
                    b"X-Trail: t \r\n"
                    b"X-UPPER: C\r\n"
                    b"Content-Length: 2\r\n"
                    b"X-D: d\r\n"
                    b"\r\n"
                    b"ok")
    with vd.connect() as c:
        for i in range(2):
            r = c.exchange("GET", url(o, "/%d" % i))
            raw = r.raw
            if cache:
                status = b"Cache-Status: viaduct; fwd=uri-miss; stored\r\n"
                assert raw.count(status) == 1, raw
                raw = raw.replace(status, b"")
            assert raw == (b"HTTP/1.1 200 OK\r\n"
                             b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                             b"X-A: one\r\n"
                             b"X-Tab: v\r\n"
                             b"x-none: none\r\n"
                             b"X-Two: two\r\n"
                             b"X-Empty: \r\n"
                             b"X-Bare: \r\n"
                             b"X-B: after hop\r\n"
                             b"X-Trail: t\r\n"
                             b"X-UPPER: C\r\n"
                             b"X-D: d\r\n"
                             b"Via: 1.1 viaduct\r\n"
                             b"Content-Length: 2\r\n"
                             b"\r\n"
                             b"ok"), raw


def test_date_added_only_when_missing(proxy, make_origin):
    """RFC 9110 §6.6.1: a recipient with a clock adds Date (IMF-fixdate, now) to a response it
    forwards without one, and leaves an origin's Date exactly as it was."""
    import email.utils
    import time
    o = make_origin([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",
                     b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                     b"Content-Length: 3\r\n\r\nyes"])
    with proxy.connect() as c:
        r1 = c.exchange("GET", url(o, "/1"))
        r2 = c.exchange("GET", url(o, "/2"))
    (d1,) = r1.headers.all("date")
    assert d1.endswith(" GMT") and len(d1) == 29, d1
    assert abs(email.utils.parsedate_to_datetime(d1).timestamp() - time.time()) < 5
    assert r2.headers.all("date") == ["Sun, 06 Nov 1994 08:49:37 GMT"]
