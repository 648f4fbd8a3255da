# SPDX-License-Identifier: MIT
"""A parent proxy for forward-proxy traffic (upstream.parent): http:// requests go to it in
absolute form with viaduct's own credentials (never the client's), connections to it are pooled
across origins, CONNECT tunnels are asked of it with a CONNECT of their own, parent_bypass goes
direct, and a parent that refuses says so in a 502. tinyproxy (with Basic authentication) and a
second viaduct are the real parents; a recording origin shows the exact bytes."""
import os
import re
import subprocess

import pytest

from vdtest.client import connect_tunnel as connect
from vdtest.httpmsg import build_response
from vdtest.metrics import scrape, val
from vdtest.origins import closed_port
from vdtest.tcp import TcpServer, echo, greeting, listening, recv_exact

CREDS = "vdchild:s3cret-pass"
CREDS_B64 = "dmRjaGlsZDpzM2NyZXQtcGFzcw=="  # base64 of CREDS


def child(viaduct, tmp_path, parent_port, **extra):
    up = {"parent": "http://127.0.0.1:%d" % parent_port}
    if extra.pop("creds", False):
        p = tmp_path / "parent.creds"
        p.write_text(CREDS + "\n")
        up["parent_credentials"] = str(p)
    up.update(extra.pop("upstream", {}))
    conf = {"upstream": up, "connect": {"ports": ["1-65535"]}}
    conf.update(extra)
    return viaduct(conf)


def test_request_goes_to_the_parent_in_absolute_form(viaduct, make_origin, tmp_path):
    parent = make_origin(build_response(200, b"from parent"))  # records what a parent receives
    vd = child(viaduct, tmp_path, parent.port, creds=True)
    c = vd.connect()
    r = c.exchange("GET", "http://origin.test:8080/a/b?c=1",
                   headers=[("Proxy-Authorization", "Basic Y2xpZW50OnNlY3JldA=="),
                            ("Proxy-Connection", "keep-alive")])
    assert (r.status, r.body) == (200, b"from parent")
    (req,) = parent.wait_requests(1)
    assert req.request_line == b"GET http://origin.test:8080/a/b?c=1 HTTP/1.1"
    assert req.headers.all("host") == ["origin.test:8080"]
    # viaduct's credentials for the parent, never the client's.
    assert req.headers.all("proxy-authorization") == ["Basic " + CREDS_B64]
    assert req.headers.all("proxy-connection") == []
    assert req.headers.all("via") == ["1.1 viaduct"]


def test_connections_to_the_parent_are_shared_by_origins(viaduct, make_origin, tmp_path):
    parent = make_origin(build_response(200, b"ok"))
    vd = child(viaduct, tmp_path, parent.port)
    for target in ("http://a.test/1", "http://b.test/2", "http://a.test/3"):
        c = vd.connect()
        assert c.exchange("GET", target).status == 200
        c.close()
    reqs = parent.wait_requests(3)
    assert [r.request_line for r in reqs] == [b"GET http://a.test/1 HTTP/1.1",
                                              b"GET http://b.test/2 HTTP/1.1",
                                              b"GET http://a.test/3 HTTP/1.1"]
    assert {r.conn for r in reqs} == {0}  # one connection to the parent
    assert "proxy-authorization" not in reqs[0].headers.names()


@pytest.mark.parametrize("bypass", [[".test"], ["origin.test"], ["127.0.0.0/8"]])
def test_bypass_goes_direct(viaduct, make_origin, tmp_path, bypass):
    parent = make_origin(build_response(200, b"parent"))
    o = make_origin(build_response(200, b"direct"))
    vd = child(viaduct, tmp_path, parent.port, upstream={"parent_bypass": bypass})
    host = "127.0.0.1" if bypass == ["127.0.0.0/8"] else "origin.test"
    c = vd.connect()
    r = c.exchange("GET", "http://%s:%d/d" % (host, o.port))
    assert (r.status, r.body) == (200, b"direct")
    assert o.wait_requests(1)[0].request_line == b"GET /d HTTP/1.1"
    # Not bypassed: other names still go through the parent.
    r = c.exchange("GET", "http://other.example/p")
    assert (r.status, r.body) == (200, b"parent")
    assert [q.request_line for q in parent.requests] == [b"GET http://other.example/p HTTP/1.1"]


def test_cache_hits_do_not_reach_the_parent(viaduct, make_origin, tmp_path):
    parent = make_origin(build_response(200, b"cacheable", headers=[
        ("Cache-Control", "max-age=60")]))
    vd = child(viaduct, tmp_path, parent.port, cache={"memory": "8m"})
    c = vd.connect()
    for _ in range(3):
        assert c.exchange("GET", "http://origin.test/c").body == b"cacheable"
    assert len(parent.requests) == 1


def test_parent_refusing_credentials_is_502(viaduct, make_origin, tmp_path):
    parent = make_origin(build_response(407, b"no", headers=[
        ("Proxy-Authenticate", 'Basic realm="parent"')]))
    vd = child(viaduct, tmp_path, parent.port, creds=True)
    c = vd.connect()
    r = c.exchange("GET", "http://origin.test/x")
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: the parent proxy refused viaduct's credentials (407)\n"
    assert r.headers.all("proxy-authenticate") == []


def test_parent_down_is_502(viaduct, tmp_path):
    vd = child(viaduct, tmp_path, closed_port())
    c = vd.connect()
    assert c.exchange("GET", "http://origin.test/x").status == 502
    c.send(b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n")
    r = c.response(method="CONNECT")
    assert r.status == 502
    assert r.body.startswith(b"502 Bad Gateway: connection to the parent proxy 127.0.0.1 port ")


def test_https_gateway_through_the_parent(viaduct, make_origin, tmp_path, pki):
    """GET https://... from a plain-HTTP client: CONNECT through the parent, then TLS to the
    origin inside it, verified against the origin's name (not the parent's)."""
    o = make_origin(build_response(200, b"over tls via parent"), tls="server")
    parent = viaduct({"connect": {"ports": ["1-65535"]}})
    vd = child(viaduct, tmp_path, parent.port(0), upstream={"ca_file": pki.ca})
    c = vd.connect()
    for i in range(2):
        r = c.exchange("GET", "https://origin.test:%d/g%d" % (o.port, i))
        assert (r.status, r.body) == (200, b"over tls via parent")
    reqs = o.wait_requests(2)
    assert [q.request_line for q in reqs] == [b"GET /g0 HTTP/1.1", b"GET /g1 HTTP/1.1"]
    assert reqs[0].sni == "origin.test"
    assert reqs[0].conn == reqs[1].conn  # the tunnelled TLS connection is pooled


def test_https_gateway_checks_the_origins_certificate(viaduct, make_origin, tmp_path, pki):
    o = make_origin(build_response(200, b"x"), tls="wrongname")
    parent = viaduct({"connect": {"ports": ["1-65535"]}})
    vd = child(viaduct, tmp_path, parent.port(0), upstream={"ca_file": pki.ca})
    c = vd.connect()
    r = c.exchange("GET", "https://origin.test:%d/" % o.port)
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: upstream certificate verification failed for origin.test: " \
        b"hostname mismatch\n"
    assert o.requests == []


def test_https_gateway_refused_by_the_parent(viaduct, tmp_path):
    parent = scripted_parent(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    try:
        vd = child(viaduct, tmp_path, parent.port, creds=True)
        c = vd.connect()
        r = c.exchange("GET", "https://origin.test/")
        assert r.status == 502
        assert r.body == b"502 Bad Gateway: the parent proxy answered CONNECT with 403 Forbidden\n"
        head = bytes(parent.wait_conns(1).received).split(b"\r\n\r\n")[0]
        assert head.split(b"\r\n") == [b"CONNECT origin.test:443 HTTP/1.1",
                                       b"Host: origin.test:443",
                                       b"Proxy-Authorization: Basic " + CREDS_B64.encode(),
                                       b"Via: 1.1 viaduct"]
    finally:
        parent.stop()


# ---- CONNECT through the parent ---------------------------------------------------------------

def scripted_parent(answer, then=None):
    """A parent that records the CONNECT head, sends @answer, then runs @then (or closes)."""
    def h(c):
        c.sock.settimeout(10)
        while b"\r\n\r\n" not in c.received:
            b = c.sock.recv(4096)
            if not b:
                return
            c.received += b
        c.sock.sendall(answer)
        if then:
            then(c)
    return TcpServer(h)


def test_connect_asks_the_parent(viaduct, tmp_path):
    def relay_echo(c):
        echo(c)
    parent = scripted_parent(b"HTTP/1.1 200 Connection established\r\n\r\n", relay_echo)
    try:
        vd = child(viaduct, tmp_path, parent.port, creds=True)
        c, r = connect(vd, "origin.test:993")
        assert r.status == 200
        c.sock.sendall(b"ping")
        assert recv_exact(c.sock, 4) == b"ping"
        head = bytes(parent.wait_conns(1).received).split(b"\r\n\r\n")[0]
        assert head.split(b"\r\n") == [b"CONNECT origin.test:993 HTTP/1.1",
                                       b"Host: origin.test:993",
                                       b"Proxy-Authorization: Basic " + CREDS_B64.encode(),
                                       b"Via: 1.1 viaduct"]
    finally:
        parent.stop()


def test_connect_keeps_bytes_that_follow_the_parents_200(viaduct, tmp_path):
    parent = scripted_parent(b"HTTP/1.1 200 OK\r\nX-Parent: 1\r\n\r\n* OK IMAP ready\r\n",
                             lambda c: c.sock.recv(10))
    try:
        vd = child(viaduct, tmp_path, parent.port)
        c, r = connect(vd, "mail.test:143")
        assert r.status == 200
        assert r.raw == b"HTTP/1.1 200 Connection established\r\n\r\n"
        got = c.reader.take(len(c.reader.buf))  # what the response reader read past the head
        assert got + recv_exact(c.sock, 17 - len(got)) == b"* OK IMAP ready\r\n"
    finally:
        parent.stop()


@pytest.mark.parametrize("answer,status,detail", [
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 502,
     b"the parent proxy answered CONNECT with 403 Forbidden"),
    (b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", 502,
     b"the parent proxy wants credentials (407)"),
    (b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n", 504,
     b"the parent proxy answered CONNECT with 504 Gateway Timeout"),
    (b"HTTP/1.1 200\nbroken\r\n\r\n", 502, b"malformed answer from the parent proxy"),
])
def test_connect_refused_by_the_parent(viaduct, tmp_path, answer, status, detail):
    parent = scripted_parent(answer)
    try:
        vd = child(viaduct, tmp_path, parent.port)
        _, r = connect(vd, "origin.test:443")
        assert r.status == status
        assert detail in r.body, r.body
    finally:
        parent.stop()


def test_connect_bypass_goes_direct(viaduct, tmp_path):
    target = TcpServer(greeting(b"hello\r\n"))
    parent = scripted_parent(b"HTTP/1.1 500 no\r\n\r\n")
    try:
        vd = child(viaduct, tmp_path, parent.port, upstream={"parent_bypass": ["127.0.0.1"]})
        c, r = connect(vd, "127.0.0.1:%d" % target.port)
        assert r.status == 200
        got = c.reader.take(len(c.reader.buf))
        assert got + recv_exact(c.sock, 7 - len(got)) == b"hello\r\n"
        parent.assert_untouched(grace=0.1)
    finally:
        target.stop()
        parent.stop()


# ---- real parents -----------------------------------------------------------------------------

@pytest.fixture
def tinyproxy(tmp_path):
    if not os.path.exists("/usr/bin/tinyproxy"):
        pytest.fail("tinyproxy is missing: tools/install-deps.sh test installs it")
    port = closed_port()
    user, pw = CREDS.split(":")
    cfg = tmp_path / "tinyproxy.conf"
    cfg.write_text("Port %d\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 20\n"
                   "BasicAuth %s %s\nLogLevel Warning\nLogFile \"%s\"\n"
                   % (port, user, pw, tmp_path / "tinyproxy.log"))
    p = subprocess.Popen(["tinyproxy", "-d", "-c", str(cfg)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    assert listening(port), "tinyproxy did not start"
    yield port
    p.terminate()
    p.wait(timeout=10)


def test_tinyproxy_as_parent(viaduct, make_origin, tmp_path, tinyproxy, pki):
    o = make_origin(build_response(200, b"through tinyproxy"))
    vd = child(viaduct, tmp_path, tinyproxy, creds=True, upstream={"ca_file": pki.ca})
    c = vd.connect()
    r = c.exchange("GET", "http://127.0.0.1:%d/t" % o.port)
    assert (r.status, r.body) == (200, b"through tinyproxy")
    (req,) = o.wait_requests(1)
    assert req.request_line == b"GET /t HTTP/1.1"
    assert req.headers.all("proxy-authorization") == []  # tinyproxy consumed ours
    # The HTTP-to-HTTPS gateway through tinyproxy.
    t = make_origin(build_response(200, b"tls through tinyproxy"), tls="server")
    r = c.exchange("GET", "https://localhost:%d/s" % t.port)
    assert (r.status, r.body) == (200, b"tls through tinyproxy")
    # CONNECT through tinyproxy to an echo server.
    srv = TcpServer(echo)
    try:
        c2, r = connect(vd, "127.0.0.1:%d" % srv.port)
        assert r.status == 200
        c2.sock.sendall(b"x" * 100000)
        assert recv_exact(c2.sock, 100000) == b"x" * 100000
    finally:
        srv.stop()


def test_tinyproxy_refuses_without_credentials(viaduct, tmp_path, tinyproxy):
    vd = child(viaduct, tmp_path, tinyproxy)
    c = vd.connect()
    r = c.exchange("GET", "http://127.0.0.1:9/t")
    assert r.status == 502
    assert b"the parent proxy wants credentials (407)" in r.body


def test_viaduct_as_parent(viaduct, make_origin, tmp_path):
    o = make_origin(build_response(200, b"two hops"))
    parent = viaduct({"connect": {"ports": ["1-65535"]}})
    vd = child(viaduct, tmp_path, parent.port(0))
    c = vd.connect()
    r = c.exchange("GET", "http://origin.test:%d/two" % o.port)
    assert (r.status, r.body) == (200, b"two hops")
    assert o.wait_requests(1)[0].headers.all("via") == ["1.1 viaduct, 1.1 viaduct"] or \
        o.requests[0].headers.all("via") == ["1.1 viaduct", "1.1 viaduct"]


# ---- forwarding loops (RFC 9110 §7.6.3 Via, RFC 5842 508) --------------------------------------

def looping(viaduct, tmp_path, **limits):
    """A viaduct whose parent is itself: every request it forwards comes back to it."""
    port = closed_port()  # free until viaduct listens on it
    conf = {"listeners": [{"address": "127.0.0.1:%d" % port, "mode": "forward"}],
            "upstream": {"parent": "http://127.0.0.1:%d" % port},
            "connect": {"ports": ["1-65535"]}}
    if limits:
        conf["limits"] = limits
    return viaduct(conf)


def test_request_looping_through_the_parent_is_508(viaduct, make_origin, tmp_path):
    o = make_origin(build_response(200, b"never"))
    vd = looping(viaduct, tmp_path, via_loop=3)
    c = vd.connect()
    r = c.exchange("GET", "http://127.0.0.1:%d/loop" % o.port)
    # The fourth pass sees three Via members naming viaduct and answers; the passes before it
    # relay that answer back.
    assert r.status == 508
    assert r.body == b"508 Loop Detected: forwarding loop: the request already passed a proxy " \
        b"named viaduct 3 times (Via)\n"
    assert o.requests == []
    vd.wait_for_log("forwarding loop")


def test_connect_looping_through_the_parent_ends(viaduct, tmp_path):
    """A CONNECT carries Via to the parent too, so a loop through it ends: the innermost pass
    answers 508, every pass outside it reports the parent's refusal as 502."""
    vd = looping(viaduct, tmp_path, via_loop=2)
    c = vd.connect()
    c.send(b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n")
    r = c.response(method="CONNECT", timeout=10)
    assert r.status == 502
    assert r.body == b"502 Bad Gateway: the parent proxy answered CONNECT with 502 Bad Gateway\n"
    vd.wait_for_log("the request already passed a proxy named viaduct 2 times")


def test_via_members_of_other_proxies_do_not_count(viaduct, make_origin):
    o = make_origin(build_response(200, b"ok"))
    vd = viaduct({"limits": {"via_loop": 2}})
    c = vd.connect()
    hops = [("Via", "1.1 viaduct, 1.0 squid (squid/5.7)"), ("Via", "1.1 viaduct-edge, 2 lb")]
    r = c.exchange("GET", "http://127.0.0.1:%d/" % o.port, headers=hops)
    assert r.status == 200  # one member names viaduct: under the limit
    assert o.wait_requests(1)[0].headers.all("via")[-1].endswith("1.1 viaduct")
    r = c.exchange("GET", "http://127.0.0.1:%d/" % o.port,
                   headers=[("Via", "1.1 viaduct (comment), HTTP/1.1 VIADUCT")])
    assert r.status == 508  # names compare case-insensitively, comments and protocol names aside


def test_loop_check_off_with_zero(viaduct, make_origin):
    o = make_origin(build_response(200, b"ok"))
    vd = viaduct({"limits": {"via_loop": 0}})
    c = vd.connect()
    r = c.exchange("GET", "http://127.0.0.1:%d/" % o.port,
                   headers=[("Via", ", ".join(["1.1 viaduct"] * 20))])
    assert r.status == 200


# ---- several parents -------------------------------------------------------------------------

def parents_child(viaduct, ports, **up):
    """A forward proxy (listener 0) with these parents, and an admin listener (1)."""
    up = dict({"parent": ["http://127.0.0.1:%d" % p for p in ports]}, **up)
    return viaduct({"upstream": up, "connect": {"ports": ["1-65535"]},
                    "listeners": [{"address": "127.0.0.1:0", "mode": "forward"},
                                  {"address": "127.0.0.1:0", "mode": "admin"}]})


def test_first_parent_up_takes_everything(viaduct, make_origin):
    p1 = make_origin(build_response(200, b"one"))
    p2 = make_origin(build_response(200, b"two"))
    vd = parents_child(viaduct, [p1.port, p2.port])
    for i in range(3):
        with vd.connect() as c:
            assert c.exchange("GET", "http://origin.test/%d" % i).body == b"one"
    assert len(p1.wait_requests(3)) == 3
    assert p2.requests == []


def test_round_robin_spreads_exchanges_over_the_parents(viaduct, make_origin):
    p1 = make_origin(build_response(200, b"one"))
    p2 = make_origin(build_response(200, b"two"))
    vd = parents_child(viaduct, [p1.port, p2.port], parent_select="round_robin")
    bodies = []
    with vd.connect() as c:
        for i in range(4):
            bodies.append(c.exchange("GET", "http://origin.test/%d" % i).body)
    assert bodies == [b"one", b"two", b"one", b"two"]
    assert [q.target for q in p1.wait_requests(2)] == ["http://origin.test/0",
                                                       "http://origin.test/2"]
    assert [q.target for q in p2.wait_requests(2)] == ["http://origin.test/1",
                                                       "http://origin.test/3"]


def test_unreachable_parent_fails_over_and_is_skipped(viaduct, make_origin):
    """The first parent refuses connections: the request goes to the second one (nothing was
    sent to the first), and later requests skip the first for parent_fail_timeout."""
    down = closed_port()
    p2 = make_origin(build_response(200, b"two"))
    vd = parents_child(viaduct, [down, p2.port], parent_fail_timeout="1h")
    for i in range(3):
        with vd.connect() as c:
            r = c.exchange("GET", "http://origin.test/%d" % i)
            assert (r.status, r.body) == (200, b"two")
    assert [q.request_line for q in p2.wait_requests(3)] == [
        b"GET http://origin.test/%d HTTP/1.1" % i for i in range(3)]
    log = vd.read_error_log()
    tries = re.findall(r"\[parent http://127\.0\.0\.1:%d\]; trying the parent proxy "
                       r"http://127\.0\.0\.1:%d" % (down, p2.port), log)
    assert len(tries) == 1  # the first request only: then the first parent is marked down
    m = scrape(vd)
    assert val(m, "viaduct_parent_up", parent="http://127.0.0.1:%d" % down) == 0
    assert val(m, "viaduct_parent_up", parent="http://127.0.0.1:%d" % p2.port) == 1


def test_connect_fails_over_to_the_next_parent(viaduct, tmp_path):
    parent = scripted_parent(b"HTTP/1.1 200 Connection established\r\n\r\n", echo)
    down = closed_port()
    try:
        vd = parents_child(viaduct, [down, parent.port])
        c, r = connect(vd, "origin.test:993")
        assert r.status == 200
        c.sock.sendall(b"ping")
        assert recv_exact(c.sock, 4) == b"ping"
        head = bytes(parent.wait_conns(1).received).split(b"\r\n\r\n")[0]
        assert head.split(b"\r\n")[0] == b"CONNECT origin.test:993 HTTP/1.1"
        vd.wait_for_log(r"CONNECT origin\.test:993: connection to the parent proxy 127\.0\.0\.1 "
                        r"port %d refused; trying the parent proxy http://127\.0\.0\.1:%d"
                        % (down, parent.port))
    finally:
        parent.stop()


def test_https_gateway_fails_over_to_the_next_parent(viaduct, make_origin, pki):
    """GET https://... when the first parent is down: CONNECT through the second one, TLS to
    the origin inside it, checked against the origin's name and port (not the failed parent's),
    and that tunnelled connection pooled for the next request."""
    o = make_origin(build_response(200, b"over tls via parent 2"), tls="server")
    parent = viaduct({"connect": {"ports": ["1-65535"]}})
    vd = parents_child(viaduct, [closed_port(), parent.port(0)], ca_file=pki.ca)
    with vd.connect() as c:
        for i in range(2):
            r = c.exchange("GET", "https://origin.test:%d/g%d" % (o.port, i))
            assert (r.status, r.body) == (200, b"over tls via parent 2")
    reqs = o.wait_requests(2)
    assert [q.request_line for q in reqs] == [b"GET /g0 HTTP/1.1", b"GET /g1 HTTP/1.1"]
    assert reqs[0].sni == "origin.test"
    assert reqs[0].conn == reqs[1].conn
    vd.stop()  # the parent logs the tunnel when it ends
    parent.wait_for_log(r'"CONNECT origin\.test:%d HTTP/1\.1" 200 ' % o.port, access=True)


def test_a_parent_that_answers_is_not_failed_over(viaduct, tmp_path):
    """A parent that was reached and refused the CONNECT (407) is an answer, not an outage: the
    client gets the 502 and the next parent is not asked."""
    refusing = scripted_parent(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                               b"Content-Length: 0\r\n\r\n", lambda c: None)
    other = scripted_parent(b"HTTP/1.1 200 Connection established\r\n\r\n", echo)
    try:
        vd = parents_child(viaduct, [refusing.port, other.port])
        c, r = connect(vd, "origin.test:993")
        assert r.status == 502
        assert b"the parent proxy wants credentials (407)" in r.body
        assert other.conns == []
    finally:
        refusing.stop()
        other.stop()


def test_every_parent_down_is_502(viaduct):
    a, b = closed_port(), closed_port()
    vd = parents_child(viaduct, [a, b])
    with vd.connect() as c:
        r = c.exchange("GET", "http://origin.test/x")
        assert r.status == 502
        # Both were tried, in order; the answer names the last one.
        assert r.body == b"502 Bad Gateway: upstream connection refused by 127.0.0.1 port %d\n" % b
    vd.wait_for_log(r"\[parent http://127\.0\.0\.1:%d\]; trying the parent proxy "
                    r"http://127\.0\.0\.1:%d" % (a, b))
