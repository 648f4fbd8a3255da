# SPDX-License-Identifier: MIT
"""An https:// parent proxy (upstream.parent: https://HOST[:PORT]): the connection to the parent
is TLS, verified like https origins (SNI and the name check are the parent's), and everything
the plain parent does goes over it: http:// requests in absolute form (pooled apart from direct
and plain-parent connections), CONNECT tunnels relayed over the TLS connection with the bytes
that follow the parent's 200, and the HTTP-to-HTTPS gateway, whose TLS to the origin runs inside
the TLS to the parent (TLS in TLS). The parents are a second viaduct with a TLS forward listener
and recording origins that speak TLS, which show the SNI and the exact bytes a parent gets."""
import pytest

from vdtest.client import connect_tunnel as connect
from vdtest.httpmsg import build_response
from vdtest.origins import Reply, closed_port
from vdtest.tcp import TcpServer, echo, greeting, recv_exact, recv_until_eof

pytestmark = pytest.mark.feature("tls")

CREDS = "vdchild:s3cret-pass"
CREDS_B64 = "dmRjaGlsZDpzM2NyZXQtcGFzcw=="  # base64 of CREDS
PARENT = "proxy.example.test"  # covered by the wildcard leaf (*.example.test)


def tls_listener(leaf):
    return {"address": "127.0.0.1:0", "mode": "forward",
            "tls": {"certificates": [{"cert": leaf.cert, "key": leaf.key}]}}


def viaduct_parent(viaduct, pki, leaf=None, **extra):
    """A second viaduct as the parent: a forward listener that speaks TLS."""
    conf = {"listeners": [tls_listener(leaf or pki.wildcard)],
            "connect": {"ports": ["1-65535"]}}
    conf.update(extra)
    return viaduct(conf)


def child(viaduct, tmp_path, dns, pki, port, host=PARENT, ca=True, creds=False, **extra):
    """The viaduct under test, with https://@host:@port as its parent (@host resolves to
    127.0.0.1 through the test DNS server)."""
    if host != "127.0.0.1":
        dns.set(host, ["127.0.0.1"])
    up = {"parent": "https://%s:%d" % (host, port)}
    if ca:
        up["ca_file"] = pki.ca
    if creds:
        p = tmp_path / "parent.creds"
        p.write_text(CREDS + "\n")
        up["parent_credentials"] = str(p)
    up.update(extra.pop("upstream", {}))
    conf = {"upstream": up, "connect": {"ports": ["1-65535"]}}
    conf.update(extra)
    return viaduct(conf)


# ---- http:// requests through the https parent -------------------------------------------------

def test_request_goes_to_the_parent_over_tls(viaduct, make_origin, tmp_path, dns, pki):
    parent = make_origin(build_response(200, b"from the tls parent"), tls="wildcard")
    vd = child(viaduct, tmp_path, dns, pki, parent.port, creds=True)
    c = vd.connect()
    r = c.exchange("GET", "http://origin.test:8080/a/b?c=1",
                   headers=[("Proxy-Authorization", "Basic Y2xpZW50OnNlY3JldA=="),
                            ("Proxy-Connection", "keep-alive")])
    assert (r.status, r.body) == (200, b"from the tls parent")
    (req,) = parent.wait_requests(1)
    assert req.sni == PARENT
    assert req.tls_version in ("TLSv1.2", "TLSv1.3")
    assert req.raw == (b"GET http://origin.test:8080/a/b?c=1 HTTP/1.1\r\n"
                       b"Host: origin.test:8080\r\n"
                       b"Proxy-Authorization: Basic " + CREDS_B64.encode() + b"\r\n"
                       b"Via: 1.1 viaduct\r\n\r\n")


def test_parent_by_address_gets_no_sni(viaduct, make_origin, tmp_path, dns, pki):
    """RFC 6066 §3: no SNI for an address; the certificate is checked against the address (the
    server leaf has IP:127.0.0.1)."""
    parent = make_origin(build_response(200, b"by address"), tls="server")
    vd = child(viaduct, tmp_path, dns, pki, parent.port, host="127.0.0.1")
    r = vd.connect().exchange("GET", "http://origin.test/ip")
    assert (r.status, r.body) == (200, b"by address")
    assert parent.wait_requests(1)[0].sni is None


def test_parent_sni_names_a_parent_written_as_an_address(viaduct, make_origin, tmp_path, dns,
                                                        pki):
    """upstream.parent_sni: a parent written as an address is reached by that name (SNI and the
    certificate check), for requests and for CONNECT; without it the same parent's certificate
    (*.example.test, no IP address) does not name the address and the exchange is a 502."""
    parent = make_origin(build_response(200, b"by name"), tls="wildcard")
    vd = child(viaduct, tmp_path, dns, pki, parent.port, host="127.0.0.1",
               upstream={"parent_sni": "Proxy.Example.Test"})
    r = vd.connect().exchange("GET", "http://origin.test/named")
    assert (r.status, r.body) == (200, b"by name")
    assert parent.wait_requests(1)[0].sni == PARENT

    tparent = make_origin(Reply(b"HTTP/1.1 200 OK\r\n\r\n", hang=True), tls="wildcard")
    vd2 = child(viaduct, tmp_path, dns, pki, tparent.port, host="127.0.0.1",
                upstream={"parent_sni": PARENT})
    c, r = connect(vd2, "mail.test:143")
    assert r.status == 200
    assert tparent.wait_requests(1)[0].sni == PARENT

    plain = child(viaduct, tmp_path, dns, pki, parent.port, host="127.0.0.1")
    r = plain.connect().exchange("GET", "http://origin.test/named")
    assert r.status == 502
    assert r.body.startswith(b"502 Bad Gateway: the parent proxy's certificate failed "
                             b"verification for 127.0.0.1: "), r.body
    assert len(parent.requests) == 1


def test_parent_sni_mismatch_names_the_name(viaduct, make_origin, tmp_path, dns, pki):
    parent = make_origin(build_response(200, b"never"), tls="wildcard")
    vd = child(viaduct, tmp_path, dns, pki, parent.port, host="127.0.0.1",
               upstream={"parent_sni": "proxy.other.test"})
    r = vd.connect().exchange("GET", "http://origin.test/x")
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: the parent proxy's certificate failed verification for " \
        b"proxy.other.test: hostname mismatch\n"
    assert parent.requests == []


def test_connections_to_the_parent_are_pooled(viaduct, make_origin, tmp_path, dns, pki):
    """One TLS connection to the parent carries every origin's requests, and it is not shared
    with a direct connection to the same address (parent_bypass): that one is plain HTTP."""
    parent = make_origin(build_response(200, b"ok"), tls="server")
    vd = child(viaduct, tmp_path, dns, pki, parent.port, host="127.0.0.1",
               upstream={"parent_bypass": ["127.0.0.0/8"]})
    for target in ("http://a.test/1", "http://b.test/2", "http://a.test/3"):
        c = vd.connect()
        assert c.exchange("GET", target).status == 200
        c.close()
    reqs = parent.wait_requests(3)
    assert [q.request_line for q in reqs] == [b"GET http://a.test/1 HTTP/1.1",
                                              b"GET http://b.test/2 HTTP/1.1",
                                              b"GET http://a.test/3 HTTP/1.1"]
    assert {q.conn for q in reqs} == {0}
    # Direct to the parent's own address: a new, plain connection (which this TLS-only peer
    # cannot read), never the pooled TLS one.
    c = vd.connect()
    r = c.exchange("GET", "http://127.0.0.1:%d/direct" % parent.port)
    assert r.status == 502
    parent.wait_conns(2)
    assert parent.conns[1].closed.wait(5)
    assert parent.conns[1].sni is None and parent.conns[1].requests == []
    assert parent.conns[1].raw == b""  # no TLS was set up on it: nothing was decrypted
    # The pooled TLS connection is still there for the parent's traffic.
    assert c.exchange("GET", "http://a.test/4").status == 200
    assert parent.wait_requests(4)[3].conn == 0


def test_large_bodies_both_ways(viaduct, make_origin, tmp_path, dns, pki):
    """A real viaduct as the https parent: a 300 KB upload and a 1 MiB download cross the TLS
    connection (many records each way; the response is read until the TLS layer is empty)."""
    big = bytes(range(256)) * 4096
    o = make_origin(lambda req: build_response(200, big if req.method == "GET" else
                                               b"got %d" % len(req.body)))
    parent = viaduct_parent(viaduct, pki)
    vd = child(viaduct, tmp_path, dns, pki, parent.port(0))
    c = vd.connect()
    up = b"u" * 300000
    r = c.exchange("POST", "http://origin.test:%d/up" % o.port, body=up)
    assert (r.status, r.body) == (200, b"got 300000")
    r = c.exchange("GET", "http://origin.test:%d/down" % o.port)
    assert r.status == 200 and r.body == big
    reqs = o.wait_requests(2)
    assert reqs[0].body == up
    assert reqs[1].request_line == b"GET /down HTTP/1.1"
    assert reqs[1].headers.all("via") in (["1.1 viaduct, 1.1 viaduct"],
                                          ["1.1 viaduct", "1.1 viaduct"])


def test_parent_refusing_credentials_is_502(viaduct, make_origin, tmp_path, dns, pki):
    parent = make_origin(build_response(407, b"no", headers=[
        ("Proxy-Authenticate", 'Basic realm="parent"')]), tls="wildcard")
    vd = child(viaduct, tmp_path, dns, pki, parent.port, creds=True)
    r = vd.connect().exchange("GET", "http://origin.test/x")
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: the parent proxy refused viaduct's credentials (407)\n"
    assert r.headers.all("proxy-authenticate") == []


# ---- the parent's certificate ------------------------------------------------------------------

def test_parent_certificate_for_another_name_is_502(viaduct, make_origin, tmp_path, dns, pki):
    parent = make_origin(build_response(200, b"never"), tls="wrongname")
    vd = child(viaduct, tmp_path, dns, pki, parent.port)
    c = vd.connect()
    r = c.exchange("GET", "http://origin.test/x")
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: the parent proxy's certificate failed verification for " \
        b"proxy.example.test: hostname mismatch\n"
    # CONNECT and the gateway check it the same way.
    for req in (b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n",
                b"GET https://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n"):
        c = vd.connect()
        c.send(req)
        r = c.response(method=req.split(b" ")[0].decode())
        assert r.status == 502
        assert r.body == b"502 Bad Gateway: the parent proxy's certificate failed verification " \
            b"for proxy.example.test: hostname mismatch\n"
    assert parent.requests == []
    vd.wait_for_log("certificate failed verification for proxy.example.test: hostname mismatch")


def test_parent_certificate_from_an_unknown_ca_is_502(viaduct, tmp_path, dns, pki):
    """Without upstream.ca_file the system store decides, and it does not know the test CA."""
    parent = viaduct_parent(viaduct, pki)
    vd = child(viaduct, tmp_path, dns, pki, parent.port(0), ca=False)
    r = vd.connect().exchange("GET", "http://origin.test/x")
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: the parent proxy's certificate failed verification for " \
        b"proxy.example.test: unable to get local issuer certificate\n"
    _, r = connect(vd, "origin.test:443")
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: the parent proxy's certificate failed verification for " \
        b"proxy.example.test: unable to get local issuer certificate\n"


def test_parent_ca_file_trusts_the_parent_apart_from_origins(viaduct, make_origin, tmp_path, dns,
                                                             pki):
    """upstream.parent_ca_file: the parent is verified with its own CA bundle, while origins
    (here an https origin reached through the parent) still go by upstream.ca_file (none: the
    system store, which does not know the test CA)."""
    o = make_origin(build_response(200, b"x"), tls="server")
    parent = viaduct_parent(viaduct, pki)
    vd = child(viaduct, tmp_path, dns, pki, parent.port(0), ca=False,
               upstream={"parent_ca_file": pki.ca})
    r = vd.connect().exchange("GET", "http://origin.test:%d/plain" % o.port)
    assert r.status == 502  # reached through the parent: a plain request to a TLS-only origin
    assert b"the parent proxy" not in r.body
    c, r = connect(vd, "127.0.0.1:%d" % o.port)
    assert r.status == 200  # the tunnel through the verified parent
    c.close()
    r = vd.connect().exchange("GET", "https://origin.test:%d/" % o.port)
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: upstream certificate verification failed for origin.test: " \
        b"unable to get local issuer certificate\n"
    assert o.requests == []


def test_verify_false_accepts_any_parent_certificate(viaduct, make_origin, tmp_path, dns, pki):
    parent = make_origin(build_response(200, b"unverified"), tls="selfsigned")
    vd = child(viaduct, tmp_path, dns, pki, parent.port, ca=False,
               upstream={"verify": False})
    r = vd.connect().exchange("GET", "http://origin.test/x")
    assert (r.status, r.body) == (200, b"unverified")
    assert parent.wait_requests(1)[0].sni == PARENT


def test_plain_http_parent_behind_an_https_url_is_502(viaduct, tmp_path, dns, pki):
    """`https://` written for a proxy that speaks plain HTTP: its answer to the ClientHello is
    not TLS, and the 502 says the handshake with the parent failed."""
    def plain(c):
        c.sock.recv(65536)
        c.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        c.sock.close()
    parent = TcpServer(plain)
    try:
        vd = child(viaduct, tmp_path, dns, pki, parent.port)
        r = vd.connect().exchange("GET", "http://origin.test/x")
        assert r.status == 502
        assert r.body.startswith(b"502 Bad Gateway: TLS handshake with the parent proxy "
                                 b"proxy.example.test failed: "), r.body
        _, r = connect(vd, "origin.test:443")
        assert r.status == 502
        assert r.body.startswith(b"502 Bad Gateway: TLS handshake with the parent proxy "
                                 b"proxy.example.test failed: "), r.body
    finally:
        parent.stop()


def test_parent_silent_in_the_handshake_is_504(viaduct, tmp_path, dns, pki):
    silent = TcpServer(lambda c: c.sock.recv(65536) and c.eof.wait(10))
    try:
        vd = child(viaduct, tmp_path, dns, pki, silent.port,
                   timeouts={"upstream_connect": "1s"})
        r = vd.connect().exchange("GET", "http://origin.test/x")
        assert r.status == 504
        assert r.body == ("504 Gateway Timeout: TLS handshake with the parent proxy %s port %d "
                          "timed out\n" % (PARENT, silent.port)).encode()
        _, r = connect(vd, "origin.test:443", timeout=10)
        assert r.status == 504
        assert r.body == ("504 Gateway Timeout: TLS handshake with the parent proxy %s port %d "
                          "timed out\n" % (PARENT, silent.port)).encode()
    finally:
        silent.stop()


# ---- CONNECT through the https parent ----------------------------------------------------------

def test_connect_is_asked_over_tls(viaduct, make_origin, tmp_path, dns, pki):
    """The parent (a recording TLS peer) sees the CONNECT head over TLS with SNI; the greeting it
    sends right after its 200 reaches the client."""
    parent = make_origin(Reply(b"HTTP/1.1 200 OK\r\nX-Parent: 1\r\n\r\n* OK IMAP ready\r\n",
                               hang=True), tls="wildcard")
    vd = child(viaduct, tmp_path, dns, pki, parent.port, creds=True)
    c, r = connect(vd, "mail.test:143")
    assert r.status == 200
    assert r.raw == b"HTTP/1.1 200 Connection established\r\n\r\n"
    got = c.reader.take(len(c.reader.buf))
    assert got + recv_exact(c.sock, 17 - len(got)) == b"* OK IMAP ready\r\n"
    (req,) = parent.wait_requests(1)
    assert req.sni == PARENT
    assert req.raw == (b"CONNECT mail.test:143 HTTP/1.1\r\nHost: mail.test:143\r\n"
                       b"Proxy-Authorization: Basic " + CREDS_B64.encode() + b"\r\n"
                       b"Via: 1.1 viaduct\r\n\r\n")


def test_connect_relays_through_a_viaduct_parent(viaduct, tmp_path, dns, pki):
    """Bytes both ways through the TLS connection to the parent (buffered relay: splice would
    hand the client TLS records), then the server's greeting and its close."""
    parent = viaduct_parent(viaduct, pki)
    vd = child(viaduct, tmp_path, dns, pki, parent.port(0))
    srv = TcpServer(echo)
    hello = TcpServer(greeting(b"220 ready\r\n", then=lambda c: c.sock.close()))
    try:
        c, r = connect(vd, "127.0.0.1:%d" % srv.port)
        assert r.status == 200
        data = bytes(range(256)) * 2000  # 512000 bytes
        c.sock.sendall(data)
        assert recv_exact(c.sock, len(data), timeout=20) == data
        c.sock.shutdown(1)  # half-close travels through both viaducts to the echo server
        assert recv_until_eof(c.sock) == b""
        assert bytes(srv.conns[0].received) == data

        c, r = connect(vd, "127.0.0.1:%d" % hello.port)
        assert r.status == 200
        got = c.reader.take(len(c.reader.buf))
        assert got + recv_until_eof(c.sock) == b"220 ready\r\n"
        c.close()
    finally:
        srv.stop()
        hello.stop()
    # The parent relayed both tunnels, byte for byte (its access log: up= and down=).
    line = parent.wait_for_log(r'"CONNECT 127\.0\.0\.1:%d HTTP/1\.1" 200 .*' % srv.port,
                               access=True).group(0)
    assert " up=512000 down=512000 end=closed" in line
    line = parent.wait_for_log(r'"CONNECT 127\.0\.0\.1:%d HTTP/1\.1" 200 .*' % hello.port,
                               access=True).group(0)
    assert " up=0 down=11 " in line


@pytest.mark.parametrize("answer,status,detail", [
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 502,
     b"the parent proxy answered CONNECT with 403 Forbidden"),
    (b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", 502,
     b"the parent proxy wants credentials (407)"),
    (b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n", 504,
     b"the parent proxy answered CONNECT with 504 Gateway Timeout"),
])
def test_connect_refused_by_the_parent(viaduct, make_origin, tmp_path, dns, pki, answer,
                                       status, detail):
    parent = make_origin(answer, tls="wildcard")
    vd = child(viaduct, tmp_path, dns, pki, parent.port)
    _, r = connect(vd, "origin.test:443")
    assert r.status == status
    assert r.body == b"%d %s: %s\n" % (status, r.reason.encode(), detail)


def test_connect_bypass_goes_direct(viaduct, make_origin, tmp_path, dns, pki):
    target = TcpServer(greeting(b"hello\r\n"))
    parent = make_origin(b"HTTP/1.1 500 no\r\n\r\n", tls="wildcard")
    try:
        vd = child(viaduct, tmp_path, dns, pki, parent.port,
                   upstream={"parent_bypass": ["127.0.0.1"]})
        c, r = connect(vd, "127.0.0.1:%d" % target.port)
        assert r.status == 200
        got = c.reader.take(len(c.reader.buf))
        assert got + recv_exact(c.sock, 7 - len(got)) == b"hello\r\n"
        parent.assert_untouched(grace=0.1)
    finally:
        target.stop()


# ---- the HTTP-to-HTTPS gateway: TLS to the origin inside TLS to the parent ---------------------

def test_gateway_tls_inside_tls(viaduct, make_origin, tmp_path, dns, pki):
    """GET https://... from a plain-HTTP client: TLS to the parent, CONNECT over it, then TLS to
    the origin inside that (SNI origin.test, checked against origin.test); the tunnelled
    connection is pooled."""
    o = make_origin(build_response(200, b"tls in tls"), tls="server")
    parent = viaduct_parent(viaduct, pki)
    vd = child(viaduct, tmp_path, dns, pki, parent.port(0), creds=False)
    c = vd.connect()
    for i in range(3):
        r = c.exchange("GET", "https://origin.test:%d/g%d" % (o.port, i))
        assert (r.status, r.body) == (200, b"tls in tls")
    reqs = o.wait_requests(3)
    assert [q.raw for q in reqs] == [b"GET /g%d HTTP/1.1\r\nHost: origin.test:%d\r\n"
                                     b"Via: 1.1 viaduct\r\n\r\n" % (i, o.port) for i in range(3)]
    assert reqs[0].sni == "origin.test"
    assert {q.conn for q in reqs} == {0}  # one tunnel, pooled
    # The parent relayed one tunnel (logged when it ends: when the pooled connection closes), in
    # which it saw the ClientHello that viaduct sent inside its TLS connection to the parent:
    # TLS, SNI origin.test.
    vd.stop()
    line = parent.wait_for_log(r'"CONNECT origin\.test:%d HTTP/1\.1" 200 .*' % o.port,
                               access=True).group(0)
    assert " tunnel=tls sni=origin.test " in line


def test_gateway_large_bodies(viaduct, make_origin, tmp_path, dns, pki):
    """Many inner records in both directions: the outer TLS layer holds parts of the inner
    stream that poll cannot see, and the response must still arrive whole."""
    big = bytes(range(251)) * 8000  # 2008000 bytes, not a multiple of any record size
    o = make_origin(lambda req: build_response(200, big if req.method == "GET" else
                                               b"got %d" % len(req.body)), tls="server")
    parent = viaduct_parent(viaduct, pki)
    vd = child(viaduct, tmp_path, dns, pki, parent.port(0))
    c = vd.connect()
    up = bytes(range(256)) * 1200
    r = c.exchange("POST", "https://origin.test:%d/up" % o.port, body=up)
    assert (r.status, r.body) == (200, b"got %d" % len(up))
    r = c.exchange("GET", "https://origin.test:%d/down" % o.port)
    assert r.status == 200 and len(r.body) == len(big) and r.body == big
    reqs = o.wait_requests(2)
    assert reqs[0].body == up
    assert reqs[0].conn == reqs[1].conn


def test_gateway_head_split_over_records(viaduct, make_origin, tmp_path, dns, pki):
    """The origin writes its head in pieces (separate inner records); the parent may relay them
    in one outer record, so the rest of the head can wait inside the outer layer."""
    o = make_origin(Reply([b"HTTP/1.1 200 OK\r\n", 0.05, b"Content-Length: 5\r\n",
                           b"X-A: 1\r\n", b"\r\n", b"split"]), tls="server")
    parent = viaduct_parent(viaduct, pki)
    vd = child(viaduct, tmp_path, dns, pki, parent.port(0))
    c = vd.connect()
    for i in range(2):
        r = c.exchange("GET", "https://origin.test:%d/s%d" % (o.port, i))
        assert (r.status, r.body, r.headers.all("x-a")) == (200, b"split", ["1"])


def test_gateway_checks_the_origins_certificate(viaduct, make_origin, tmp_path, dns, pki):
    o = make_origin(build_response(200, b"x"), tls="wrongname")
    parent = viaduct_parent(viaduct, pki)
    vd = child(viaduct, tmp_path, dns, pki, parent.port(0))
    r = vd.connect().exchange("GET", "https://origin.test:%d/" % o.port)
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: upstream certificate verification failed for origin.test: " \
        b"hostname mismatch\n"
    assert o.requests == []


# ---- loops -------------------------------------------------------------------------------------

def test_request_looping_through_the_tls_parent_is_508(viaduct, make_origin, tmp_path, dns, pki):
    """A viaduct whose https parent is its own TLS listener: Via ends the loop."""
    port = closed_port()  # free until viaduct listens on it
    dns.set(PARENT, ["127.0.0.1"])
    o = make_origin(build_response(200, b"never"))
    lst = tls_listener(pki.wildcard)
    lst["address"] = "127.0.0.1:%d" % port
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "forward"}, lst],
                  "upstream": {"parent": "https://%s:%d" % (PARENT, port), "ca_file": pki.ca},
                  "limits": {"via_loop": 3}})
    r = vd.connect(0).exchange("GET", "http://127.0.0.1:%d/loop" % o.port)
    assert r.status == 508
    assert r.body == b"508 Loop Detected: forwarding loop: the request already passed a proxy " \
        b"named viaduct 3 times (Via)\n"
    assert o.requests == []
