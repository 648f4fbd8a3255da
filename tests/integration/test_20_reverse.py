# SPDX-License-Identifier: MIT
"""Reverse proxy: routing by host and path prefix, X-Forwarded-* and Forwarded (RFC 7239),
host_header, https upstreams."""
import socket

import pytest

from vdtest.asserts import assert_proxy_error
from vdtest.httpmsg import build_response, parse_forwarded, split_list


def reverse_conf(routes, **extra):
    c = {"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}], "routes": routes}
    c.update(extra)
    return c


def up(origin, host="127.0.0.1"):
    return "http://%s:%d" % (host, origin.port)


@pytest.fixture
def abc(make_origin):
    return [make_origin(build_response(200, name)) for name in (b"A", b"B", b"C")]


@pytest.fixture
def routed(viaduct, abc):
    a, b, c = abc
    return viaduct(reverse_conf([
        {"host": "a.test", "upstream": up(a)},
        {"path": "/api/", "upstream": up(b)},
        {"upstream": up(c)},
    ]))


@pytest.mark.parametrize("host,path,expect", [
    ("a.test", "/x", b"A"),
    ("a.test", "/api/v1", b"A"),        # first match wins
    ("A.TEST", "/x", b"A"),             # host names compare case-insensitively
    ("a.test:8080", "/x", b"A"),        # the port of Host is not part of the match
    ("b.test", "/api/v1?q=1", b"B"),
    ("b.test", "/api/", b"B"),
    ("b.test", "/api", b"C"),           # prefix "/api/" does not match "/api"
    ("b.test", "/apix/", b"C"),
    ("b.test", "/", b"C"),
])
def test_routing(routed, abc, host, path, expect):
    with routed.connect() as c:
        r = c.exchange("GET", path, host=host)
    assert r.status == 200 and r.body == expect
    target = {b"A": abc[0], b"B": abc[1], b"C": abc[2]}[expect]
    (req,) = target.wait_requests(1)
    assert req.target == path
    assert req.request_line == ("GET %s HTTP/1.1" % path).encode()
    assert req.headers.all("host") == [host]


def test_routing_on_one_connection(routed, abc):
    with routed.connect() as c:
        got = [c.exchange("GET", p, host=h).body
               for h, p in [("a.test", "/"), ("x.test", "/api/1"), ("x.test", "/z"), ("a.test", "/")]]
    assert got == [b"A", b"B", b"C", b"A"]


def test_host_checked_on_every_request(routed, abc):
    """A Host seen valid before is still compared byte for byte: a request whose Host differs
    (a bad port, a space, a second colon, a bracket) is a 400 that never reaches an origin, and
    the valid Host routes as before (viaduct remembers the last valid Host per worker and skips
    only parsing the same bytes again)."""
    with routed.connect() as c:
        assert c.exchange("GET", "/", host="a.test").body == b"A"
        assert c.exchange("GET", "/", host="a.test:8080").body == b"A"
    for bad in ("a.test:99999", "a.test:8080:1", "a test", "[a.test]", "a.test:"):
        with routed.connect() as c:
            r = c.exchange("GET", "/", host=bad)
            assert r.status == 400, bad
            assert r.body == b"400 Bad Request: malformed request from client: invalid Host field\n"
    with routed.connect() as c:
        assert c.exchange("GET", "/", host="a.test").body == b"A"
    assert [len(o.requests) for o in abc] == [3, 0, 0]


def test_no_route_is_404(viaduct, origin):
    """No route matches: 404 (the brief's choice), and nothing is forwarded."""
    vd = viaduct(reverse_conf([{"host": "a.test", "upstream": up(origin)}]))
    with vd.connect() as c:
        r = c.exchange("GET", "/", host="b.test")
        assert_proxy_error(r, 404)
    origin.assert_untouched()


def test_host_header_override(viaduct, origin):
    vd = viaduct(reverse_conf([{"upstream": up(origin), "host_header": "backend.internal"}]))
    with vd.connect() as c:
        assert c.exchange("GET", "/h", host="www.example").status == 200
    (req,) = origin.wait_requests(1)
    assert req.headers.all("host") == ["backend.internal"]


def test_upstream_by_name_uses_resolver(viaduct, origin, dns):
    vd = viaduct(reverse_conf([{"upstream": up(origin, "origin.test")}]))
    with vd.connect() as c:
        assert c.exchange("GET", "/n", host="www.example").body == b"ok\n"
    assert dns.count("origin.test") >= 1


def test_x_forwarded(viaduct, origin):
    vd = viaduct(reverse_conf([{"upstream": up(origin), "forwarded": "x-forwarded"}]))
    with vd.connect() as c:
        c.exchange("GET", "/1", host="a.test")
        c.exchange("GET", "/2", host="a.test", headers=[("X-Forwarded-For", "203.0.113.7"),
                                                        ("X-Forwarded-For", "198.51.100.1")])
    r1, r2 = origin.wait_requests(2)
    assert r1.headers.all("x-forwarded-for") == ["127.0.0.1"]
    assert r1.headers.all("x-forwarded-proto") == ["http"]
    assert split_list(", ".join(r2.headers.all("x-forwarded-for"))) == \
        ["203.0.113.7", "198.51.100.1", "127.0.0.1"]
    assert r2.headers.all("x-forwarded-proto") == ["http"]
    assert not r1.headers.has("forwarded")


def test_forwarded_rfc7239(viaduct, origin):
    vd = viaduct(reverse_conf([{"upstream": up(origin), "forwarded": "rfc7239"}]))
    with vd.connect() as c:
        c.exchange("GET", "/1", host="a.test")
        c.exchange("GET", "/2", host="a.test:8080",
                   headers=[("Forwarded", 'for=192.0.2.60;proto=https;by="[2001:db8::1]"')])
    r1, r2 = origin.wait_requests(2)
    assert parse_forwarded(", ".join(r1.headers.all("forwarded"))) == \
        [{"for": "127.0.0.1", "proto": "http", "host": "a.test"}]
    # RFC 7239 §4: "a.test:8080" is not a token, so it must be a quoted-string.
    assert parse_forwarded(", ".join(r2.headers.all("forwarded"))) == [
        {"for": "192.0.2.60", "proto": "https", "by": "[2001:db8::1]"},
        {"for": "127.0.0.1", "proto": "http", "host": "a.test:8080"}]
    assert not r1.headers.has("x-forwarded-for")


def test_forwarded_both(viaduct, origin):
    vd = viaduct(reverse_conf([{"upstream": up(origin), "forwarded": "both"}]))
    with vd.connect() as c:
        c.exchange("GET", "/", host="a.test")
    (req,) = origin.wait_requests(1)
    assert req.headers.all("x-forwarded-for") == ["127.0.0.1"]
    assert req.headers.all("x-forwarded-proto") == ["http"]
    assert parse_forwarded(req.header("forwarded")) == \
        [{"for": "127.0.0.1", "proto": "http", "host": "a.test"}]


def test_forwarded_none_passes_client_fields_untouched(viaduct, origin):
    vd = viaduct(reverse_conf([{"upstream": up(origin), "forwarded": "none"}]))
    with vd.connect() as c:
        c.exchange("GET", "/", host="a.test", headers=[("X-Forwarded-For", "203.0.113.7"),
                                                       ("Forwarded", "for=192.0.2.1")])
    (req,) = origin.wait_requests(1)
    assert req.headers.all("x-forwarded-for") == ["203.0.113.7"]
    assert req.headers.all("forwarded") == ["for=192.0.2.1"]
    assert not req.headers.has("x-forwarded-proto")


def _has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1")
def test_forwarded_ipv6_client_is_quoted(viaduct, origin):
    """RFC 7239 §6: an IPv6 node is written in brackets and quoted: for="[::1]"."""
    vd = viaduct(reverse_conf([{"upstream": up(origin), "forwarded": "both"}],
                              listeners=[{"address": "[::1]:0", "mode": "reverse"}]))
    assert vd.addr(0) == "::1"
    with vd.connect() as c:
        assert c.exchange("GET", "/6", host="a.test").status == 200
    (req,) = origin.wait_requests(1)
    assert '"[::1]"' in req.header("forwarded"), req.header("forwarded")
    assert parse_forwarded(req.header("forwarded")) == \
        [{"for": "[::1]", "proto": "http", "host": "a.test"}]
    assert req.headers.all("x-forwarded-for") == ["::1"]


@pytest.mark.feature("tls")
def test_https_upstream(viaduct, make_origin, pki):
    o = make_origin(build_response(200, b"secure"), tls="server")
    vd = viaduct(reverse_conf([{"upstream": "https://origin.test:%d" % o.port}],
                              upstream={"ca_file": pki.ca}))
    with vd.connect() as c:
        r = c.exchange("GET", "/s", host="www.example")
    assert r.status == 200 and r.body == b"secure"
    (req,) = o.wait_requests(1)
    assert req.sni == "origin.test"
    assert req.headers.all("host") == ["www.example"]


def test_reverse_adds_via(viaduct, origin):
    vd = viaduct(reverse_conf([{"upstream": up(origin)}]))
    with vd.connect() as c:
        r = c.exchange("GET", "/", host="a.test")
    (req,) = origin.wait_requests(1)
    assert req.headers.list("via") == ["1.1 viaduct"]
    assert r.headers.list("via") == ["1.1 viaduct"]


def test_multiple_listeners_in_order(viaduct, abc):
    a, b, _ = abc
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"},
                                {"address": "127.0.0.1:0", "mode": "forward"}],
                  "routes": [{"upstream": up(a)}]})
    assert len(vd.addrs) == 2 and vd.port(0) != vd.port(1)
    with vd.connect(0) as c:
        assert c.exchange("GET", "/", host="x.test").body == b"A"
    with vd.connect(1) as c:
        assert c.exchange("GET", "http://origin.test:%d/" % b.port).body == b"B"
