# SPDX-License-Identifier: MIT
"""HTTP/2 front end (RFC 9113): h2c with prior knowledge and h2 through ALPN, real clients
(curl, nghttp) and python3-h2 for streams, flow control, the §8 message checks, flood limits
(GOAWAY ENHANCE_YOUR_CALM), graceful GOAWAY, and CONNECT on a stream (§8.5)."""
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

from vdtest.h2client import (ENABLE_CONNECT_PROTOCOL, ENHANCE_YOUR_CALM, PROTOCOL_ERROR,
                             REFUSED_STREAM, ContinuationFrame, H2Client, PingFrame, RawH2,
                             RstStreamFrame, ends, stream_result)
from vdtest.httpmsg import build_response, chunked_body
from vdtest.origins import Reply
from vdtest.tcp import TcpServer, echo


def reverse(viaduct, origin, extra=None, listener=None):
    lst = {"address": "127.0.0.1:0", "mode": "reverse"}
    lst.update(listener or {})
    c = {"listeners": [lst], "routes": [{"upstream": "http://127.0.0.1:%d" % origin.port}]}
    if extra:
        c.update(extra)
    return viaduct(c)


def by_path(req):
    body = ("path=%s" % req.target).encode()
    return build_response(200, body, headers=[("Content-Type", "text/plain")])


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- real clients ----------------------------------------------------------------------------

def test_h2c_prior_knowledge_curl(viaduct, make_origin):
    o = make_origin(build_response(200, b"hello"))
    v = reverse(viaduct, o)
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}",
                          "http://127.0.0.1:%d/x?y=1" % v.port()], capture_output=True, timeout=20)
    assert out.stdout == b"hello\n2 200", out.stderr
    (req,) = o.wait_requests(1)
    # Towards the origin: HTTP/1.1, origin-form, Host from :authority, Via names HTTP/2.
    assert req.request_line == b"GET /x?y=1 HTTP/1.1"
    assert req.headers.all("host") == ["127.0.0.1:%d" % v.port()]
    assert req.headers.all("via") == ["2 viaduct"]
    v.wait_for_log(r'"GET /x\?y=1 HTTP/2\.0" 200 ', access=True)


def test_h2_through_alpn_curl_and_nghttp(viaduct, make_origin, pki):
    o = make_origin(by_path)
    v = reverse(viaduct, o, listener={"tls": {"certificates": [
        {"cert": pki.server.cert, "key": pki.server.key}]}})
    url = "https://localhost:%d/tls" % v.port()
    resolve = "localhost:%d:127.0.0.1" % v.port()
    out = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki.ca, "--resolve", resolve,
                          "-w", "\n%{http_version} %{http_code}", url],
                         capture_output=True, timeout=20)
    assert out.stdout == b"path=/tls\n2 200", out.stderr
    # nghttp: several requests on one connection, each answered by its own stream.
    out = subprocess.run(["nghttp", "-nv", "--no-verify-peer", url, url + "2", url + "3"],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(b":status: 200") == 3
    assert sorted(r.target for r in o.wait_requests(4)) == ["/tls", "/tls", "/tls2", "/tls3"]
    # ALPN: h2 first, HTTP/1.1 for clients that only offer it.
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", v.port())) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            assert t.selected_alpn_protocol() == "h2"


def test_alpn_without_h2_when_disabled(viaduct, origin, pki):
    v = reverse(viaduct, origin, extra={"http2": {"enabled": False}},
                listener={"tls": {"certificates": [{"cert": pki.server.cert,
                                                    "key": pki.server.key}]}})
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", v.port())) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            assert t.selected_alpn_protocol() == "http/1.1"


def test_no_h2c_when_disabled(viaduct, origin):
    v = reverse(viaduct, origin, extra={"http2": {"enabled": False}})
    c = v.connect()
    c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    got = bytes(c.wait_closed())
    assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), got
    assert b"unsupported HTTP version" in got
    origin.assert_untouched()


def test_settings_announced(viaduct, origin):
    v = reverse(viaduct, origin, extra={"http2": {"max_concurrent_streams": 7,
                                                  "stream_window": "128KiB"}})
    with H2Client("127.0.0.1", v.port()) as c:
        assert c.server_settings[0x3] == 7
        assert c.server_settings[0x4] == 128 * 1024
        assert c.server_settings[ENABLE_CONNECT_PROTOCOL] == 1
        assert c.server_settings[0x6] == 32768  # limits.header_block


# ---- streams and bodies ----------------------------------------------------------------------

def test_many_streams_on_one_connection(viaduct, make_origin):
    o = make_origin(by_path)
    v = reverse(viaduct, o)
    with H2Client("127.0.0.1", v.port()) as c:
        sids = [c.start("GET", "/s/%d" % i) for i in range(40)]
        for i, sid in enumerate(sids):
            st = c.wait(sid)
            assert st.status == 200
            assert bytes(st.data) == b"path=/s/%d" % i
            assert st.header("content-length") == str(len(st.data))
            assert st.header("content-type") == "text/plain"
    assert len(o.wait_requests(40)) == 40


@pytest.mark.parametrize("with_length", [True, False])
def test_request_body(viaduct, make_origin, with_length):
    o = make_origin(build_response(201, b"got it"))
    v = reverse(viaduct, o)
    body = os.urandom(1024 * 1024 + 7)
    hdrs = [("content-length", str(len(body)))] if with_length else []
    with H2Client("127.0.0.1", v.port()) as c:
        st = c.request("POST", "/up", headers=hdrs, body=body)
        assert st.status == 201 and bytes(st.data) == b"got it"
    (req,) = o.wait_requests(1)
    assert req.body == body
    if with_length:
        assert req.framing == "cl" and req.headers.all("content-length") == [str(len(body))]
    else:
        assert req.framing == "chunked"


def test_cookie_crumbs_joined(viaduct, origin):
    v = reverse(viaduct, origin)
    with H2Client("127.0.0.1", v.port()) as c:
        st = c.request("GET", "/", headers=[("cookie", "a=1"), ("accept", "*/*"),
                                            ("cookie", "b=2")])
        assert st.status == 200
    (req,) = origin.wait_requests(1)
    assert req.headers.all("cookie") == ["a=1; b=2"]


def test_response_trailers_and_head(viaduct, make_origin):
    def reply(req):
        if req.method == "HEAD":
            return build_response(200, b"", headers=[("Content-Length", "5")], length=False)
        return build_response(200, chunked_body([b"ab", b"cde"], trailers=[("X-Sum", "42")]),
                              headers=[("Transfer-Encoding", "chunked"), ("Trailer", "X-Sum")])
    o = make_origin(reply)
    v = reverse(viaduct, o)
    with H2Client("127.0.0.1", v.port()) as c:
        st = c.request("GET", "/t", headers=[("te", "trailers")])
        assert st.status == 200 and bytes(st.data) == b"abcde"
        assert st.trailers == [("x-sum", "42")]
        assert st.header("transfer-encoding") is None
        st = c.request("HEAD", "/t")
        assert st.status == 200 and st.data == b"" and st.header("content-length") == "5"


def test_slow_stream_does_not_hold_others_and_memory_stays_bounded(viaduct):
    big = os.urandom(64 * 1024 * 1024)

    def serve(c):
        # A patient origin (the scripted ones give up on a stalled reader after 0.2 s).
        c.sock.settimeout(60)
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.sock.recv(4096)
            if not d:
                return
            head += d
        body = big if head.startswith(b"GET /big ") else b"small"
        c.sock.sendall(build_response(200, body, headers=[("Connection", "close")]))
        c.sock.shutdown(socket.SHUT_WR)

    o = TcpServer(serve)
    v = reverse(viaduct, o)
    with H2Client("127.0.0.1", v.port(), auto_window=False) as c:
        # A large connection window; each stream keeps the default 65,535 bytes.
        c.conn.increment_flow_control_window(1 << 30)
        c.flush()
        a = c.start("GET", "/big")
        c.wait_head(a)
        time.sleep(0.5)
        rss0 = vm_rss_kib(v.pid)
        b = c.start("GET", "/small")
        st = c.wait(b, timeout=5)
        assert st.status == 200 and bytes(st.data) == b"small"
        sa = c.streams[a]
        assert not sa.ended and len(sa.data) <= 65535
        time.sleep(1.0)
        # The stalled 64 MiB response is not buffered in the proxy.
        assert vm_rss_kib(v.pid) - rss0 < 16 * 1024
        # Reading resumes: the rest arrives intact.
        c.auto_window = True
        c.conn.acknowledge_received_data(len(sa.data), a)
        c.flush()
        c.wait(a, timeout=60)
        assert len(sa.data) == len(big) and sa.reset is None, (len(sa.data), sa.reset)
        assert bytes(sa.data) == big
    o.stop()


def test_max_concurrent_streams_refused(viaduct, make_origin):
    o = make_origin(Reply(build_response(200, b"slow"), delay=1.0))
    v = reverse(viaduct, o, extra={"http2": {"max_concurrent_streams": 2}})
    with RawH2("127.0.0.1", v.port()) as c:
        # A client that ignores the announced limit: the third stream is refused.
        c.send(c.request(1, "/1") + c.request(3, "/2") + c.request(5, "/3"))
        fs = c.collect(ends(5))
        assert stream_result(fs, 5) == (None, b"", REFUSED_STREAM)
        done = {f.stream_id for f in fs if ends(f.stream_id)(f)}
        while not {1, 3} <= done:
            f = c.next_frame()
            fs.append(f)
            if ends(f.stream_id)(f):
                done.add(f.stream_id)
        assert stream_result(fs, 1) == (200, b"slow", None)
        assert stream_result(fs, 3) == (200, b"slow", None)
    o.quiet()
    assert sorted(r.target for r in o.requests) == ["/1", "/2"]


# ---- RFC 9113 §8 message checks --------------------------------------------------------------

@pytest.mark.parametrize("field", [("connection", "keep-alive"), ("keep-alive", "300"),
                                   ("proxy-connection", "keep-alive"),
                                   ("transfer-encoding", "chunked"), ("upgrade", "h2c"),
                                   ("te", "gzip"), ("X-Upper", "1")])
def test_malformed_request_is_reset(viaduct, origin, field):
    v = reverse(viaduct, origin)
    with RawH2("127.0.0.1", v.port()) as c:
        c.send(c.request(1, "/bad", [field]))
        fs = c.collect(ends(1))
        assert stream_result(fs, 1) == (None, b"", PROTOCOL_ERROR)
        # The connection survives; a correct request still works.
        c.send(c.request(3, "/ok"))
        fs = c.collect(ends(3))
        assert stream_result(fs, 3) == (200, b"ok\n", None)
    (req,) = origin.wait_requests(1)
    assert req.target == "/ok"


def test_te_trailers_is_allowed(viaduct, origin):
    v = reverse(viaduct, origin)
    with H2Client("127.0.0.1", v.port()) as c:
        assert c.request("GET", "/", headers=[("te", "trailers")]).status == 200


def test_header_list_over_limit_is_431(viaduct, origin):
    v = reverse(viaduct, origin, extra={"limits": {"header_block": 4096}})
    with H2Client("127.0.0.1", v.port()) as c:
        st = c.request("GET", "/", headers=[("x-big", "a" * 5000)])
        assert st.status == 431
        assert b"limits.header_block" in bytes(st.data)
    origin.assert_untouched()


def test_content_length_mismatch_is_reset(viaduct, origin):
    v = reverse(viaduct, origin)
    with H2Client("127.0.0.1", v.port()) as c:
        sid = c.start("POST", "/", headers=[("content-length", "10")], body=b"12345")
        assert c.wait(sid).reset == PROTOCOL_ERROR


def test_lower_stream_id_is_a_connection_error(viaduct, origin):
    v = reverse(viaduct, origin)
    with RawH2("127.0.0.1", v.port()) as c:
        c.send(c.request(5, "/five"))
        fs = c.collect(ends(5))
        assert stream_result(fs, 5) == (200, b"ok\n", None)
        # RFC 9113 §5.1.1: stream 3 after stream 5 is a connection error.
        c.send(c.request(3, "/three"))
        assert c.wait_goaway() == (PROTOCOL_ERROR, 5)
    (req,) = origin.wait_requests(1)
    assert req.target == "/five"


# ---- floods ----------------------------------------------------------------------------------

def test_rapid_reset_flood_gets_enhance_your_calm(viaduct, make_origin):
    o = make_origin(Reply(build_response(200, b"x"), delay=0.5))
    v = reverse(viaduct, o, extra={"http2": {"reset_burst": 50, "reset_rate": 1}})
    with RawH2("127.0.0.1", v.port()) as c:
        data = bytearray()
        for i in range(200):
            sid = 1 + 2 * i
            data += c.request(sid, "/r")
            data += RstStreamFrame(sid, error_code=0x8).serialize()
        c.send(bytes(data))
        code, _ = c.wait_goaway()
        assert code == ENHANCE_YOUR_CALM
    v.wait_for_log(r"stream reset flood")


def test_ping_flood_gets_enhance_your_calm(viaduct, origin):
    v = reverse(viaduct, origin, extra={"http2": {"control_burst": 20, "control_rate": 1}})
    with RawH2("127.0.0.1", v.port()) as c:
        c.send(b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(100)))
        fs = c.collect(lambda f: f.type == 0x7)  # GOAWAY
        assert fs[-1].error_code == ENHANCE_YOUR_CALM
        assert sum(1 for f in fs if isinstance(f, PingFrame)) <= 20


def test_pings_within_limits_are_answered(viaduct, origin):
    v = reverse(viaduct, origin)
    with H2Client("127.0.0.1", v.port()) as c:
        for i in range(10):
            c.conn.ping(b"%08d" % i)
        c.flush()
        c.pump_until(lambda: c.pings == 10)
        assert c.goaway is None


def test_continuation_flood_gets_enhance_your_calm(viaduct, origin):
    v = reverse(viaduct, origin)
    with RawH2("127.0.0.1", v.port()) as c:
        data = c.headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                             (":authority", "x")], end_headers=False)
        for _ in range(40):
            data += ContinuationFrame(1, data=b"").serialize()
        c.send(data)
        code, _ = c.wait_goaway()
        assert code == ENHANCE_YOUR_CALM
    origin.assert_untouched()


# ---- connection life -------------------------------------------------------------------------

def test_idle_connection_gets_goaway(viaduct, origin):
    v = reverse(viaduct, origin, extra={"timeouts": {"keepalive": "300ms"}})
    with H2Client("127.0.0.1", v.port()) as c:
        assert c.request("GET", "/").status == 200
        code, last = c.wait_goaway(timeout=5)
        assert code == 0 and last == 1
        c.pump_until(lambda: c.closed, timeout=5)


def test_sigterm_sends_goaway_and_finishes_streams(viaduct, make_origin):
    o = make_origin(Reply(build_response(200, b"finished"), delay=1.0))
    v = reverse(viaduct, o)
    # Raw frames: python3-h2 treats a received GOAWAY as the end of the connection.
    with RawH2("127.0.0.1", v.port()) as c:
        c.send(c.request(1, "/slow"))
        o.wait_requests(1)
        v.signal(signal.SIGTERM)
        fs = c.collect(lambda f: f.type == 0x7)
        assert (fs[-1].error_code, fs[-1].last_stream_id) == (0, 1)
        fs += c.collect(ends(1))
        assert stream_result(fs, 1) == (200, b"finished", None)
        assert c.next_frame() is None  # then the connection closes
    v.wait_exit()


def test_reload_sends_goaway_and_finishes_streams(viaduct, make_origin):
    o = make_origin(Reply(build_response(200, b"old config"), delay=0.5))
    v = reverse(viaduct, o)
    with RawH2("127.0.0.1", v.port()) as c:
        c.send(c.request(1, "/slow"))
        o.wait_requests(1)
        v.reload()
        fs = c.collect(lambda f: f.type == 0x7)
        assert (fs[-1].error_code, fs[-1].last_stream_id) == (0, 1)
        fs += c.collect(ends(1))
        assert stream_result(fs, 1) == (200, b"old config", None)
    # A new connection is served as before.
    with H2Client("127.0.0.1", v.port()) as c:
        assert c.request("GET", "/again").status == 200
    assert v.running()


# ---- CONNECT on a stream (RFC 9113 §8.5) ------------------------------------------------------

def test_connect_tunnel_on_a_stream(viaduct):
    srv = TcpServer(echo)
    try:
        v = viaduct({"connect": {"ports": [srv.port]}})
        with H2Client("127.0.0.1", v.port()) as c:
            # Early data: bytes sent before the 200 are kept and delivered first.
            sid = c.start("CONNECT", None, authority="127.0.0.1:%d" % srv.port, body=b"early",
                          end=False)
            st = c.wait_head(sid)
            assert st.status == 200
            payload = os.urandom(300000)
            c.send_data(sid, payload)
            c.pump_until(lambda: len(st.data) >= len(payload) + 5)
            assert bytes(st.data) == b"early" + payload
            c.conn.end_stream(sid)
            c.flush()
            st = c.wait(sid)
            assert st.ended and st.reset is None
            # The connection carries other streams meanwhile and after.
            denied = c.request("CONNECT", None, authority="127.0.0.1:1")
            assert denied.status == 403
        v.wait_for_log(r'"CONNECT 127\.0\.0\.1:%d HTTP/2\.0" 200 .*up=300005 down=300005'
                       % srv.port, access=True)
    finally:
        srv.stop()


def test_connect_refused_target_is_502(viaduct):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    v = viaduct({"connect": {"ports": [port]}})
    with H2Client("127.0.0.1", v.port()) as c:
        st = c.request("CONNECT", None, authority="127.0.0.1:%d" % port)
        assert st.status == 502
