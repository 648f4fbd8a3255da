# SPDX-License-Identifier: MIT
"""Proxy-generated errors: complete text/plain responses that say what failed; one failed
exchange never harms another."""
import threading

import pytest

from vdtest.asserts import assert_proxy_error
from vdtest.httpmsg import IncompleteResponse, build_response
from vdtest.origins import Reply, closed_port


def url(origin, path="/"):
    return "http://origin.test:%d%s" % (origin.port, path)


def test_unknown_host_is_502(proxy, dns):
    with proxy.connect() as c:
        r = c.exchange("GET", "http://nosuch.test:8080/")
        assert_proxy_error(r, 502, "did not resolve")
        assert "nosuch.test" in r.text()
        # The connection stays usable after a 502.
        r2 = c.exchange("GET", "http://nosuch.test:8080/again")
        assert r2.status == 502
    assert dns.count("nosuch.test") >= 1


def test_connection_refused_is_502(proxy):
    port = closed_port()
    with proxy.connect() as c:
        r = c.exchange("GET", "http://origin.test:%d/" % port)
    assert_proxy_error(r, 502, "refused")


def test_bad_request_format(proxy, origin):
    with proxy.connect() as c:
        c.send(b"GET http://origin.test:%d/ HTTP/1.1\r\nHost: x\r\nBad Field: 1\r\n\r\n" % origin.port)
        r = c.response()
    assert_proxy_error(r, 400)


@pytest.mark.parametrize("status,kind", [(414, "line"), (431, "fields")])
def test_limit_error_format(viaduct, origin, status, kind):
    vd = viaduct({"limits": {"request_line": 256, "header_block": 1024}})
    with vd.connect() as c:
        if kind == "line":
            r = c.exchange("GET", url(origin, "/" + "x" * 400))
        else:
            r = c.exchange("GET", url(origin, "/"), headers=[("X-Big", "y" * 2000)])
    assert_proxy_error(r, status)


def test_acl_deny_all_is_403(viaduct, origin):
    vd = viaduct({"access": [{"deny": "all"}]})
    with vd.connect() as c:
        r = c.exchange("GET", url(origin, "/"))
    assert_proxy_error(r, 403)
    origin.assert_untouched()


def test_gateway_timeout_format(viaduct, make_origin):
    o = make_origin(Reply(b"", hang=True))
    vd = viaduct({"timeouts": {"upstream_first_byte": "1s"}})
    with vd.connect() as c:
        r = c.exchange("GET", url(o, "/"))
    assert_proxy_error(r, 504)


def test_head_request_error_has_no_body(proxy):
    """RFC 9110 §9.3.2: even an error answer to HEAD carries no body."""
    port = closed_port()
    with proxy.connect() as c:
        c.request("HEAD", "http://origin.test:%d/" % port)
        r = c.response("HEAD")
        assert r.status == 502
        # If a body had been sent it would now be read as the next response.
        c.request("HEAD", "http://origin.test:%d/" % port)
        r2 = c.response("HEAD", timeout=5)
        assert r2.status == 502


def test_origin_reset_mid_body(proxy, make_origin):
    """The origin resets after 1000 of 100000 declared bytes: the client connection ends
    before the declared length (the proxy must not fake completion, e.g. with a final
    chunk), and a second client connection still works."""
    def reply(req):
        if req.target == "/reset":
            return Reply([b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"r" * 1000, 0.1],
                         reset=True)
        return build_response(200, b"still fine")

    o = make_origin(reply)
    with proxy.connect() as c:
        c.request("GET", url(o, "/reset"))
        with pytest.raises(IncompleteResponse) as ei:
            c.response(timeout=8)
        part = ei.value.response
        assert part.status == 200
        assert len(part.body) < 100000
        assert set(part.body) <= {ord("r")}
    with proxy.connect() as c2:
        r = c2.exchange("GET", url(o, "/ok"))
    assert r.status == 200 and r.body == b"still fine"


def test_stalled_exchange_does_not_block_others(proxy, make_origin):
    """One client waits on an origin that never answers; another is served meanwhile."""
    slow = make_origin(Reply(b"", hang=True))
    fast = make_origin(build_response(200, b"fast"))
    stuck = proxy.connect()
    stuck.request("GET", url(slow, "/never"))
    slow.wait_requests(1)
    with proxy.connect() as c:
        for _ in range(3):
            r = c.exchange("GET", url(fast, "/"))
            assert r.status == 200 and r.body == b"fast"
    stuck.close()


def test_concurrent_clients(proxy, make_origin):
    o = make_origin(lambda req: build_response(200, req.target.encode() * 50))
    results, errors = {}, []

    def run(i):
        try:
            with proxy.connect() as c:
                for j in range(5):
                    path = "/c%d-%d" % (i, j)
                    r = c.exchange("GET", url(o, path))
                    results[path] = r.body == path.encode() * 50
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(results) == 40 and all(results.values())
