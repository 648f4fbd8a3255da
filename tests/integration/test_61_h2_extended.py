# SPDX-License-Identifier: MIT
"""Extended CONNECT on HTTP/2 (RFC 8441): WebSocket converted to an HTTP/1.1 Upgrade towards a
real WebSocket origin (python3-websockets), connect-udp (RFC 9298 §3.4) with capsules (RFC 9297)
to a UDP echo server, and the refusals. python3-h2 does not itself check that the server sent
SETTINGS_ENABLE_CONNECT_PROTOCOL: these tests do, before every extended CONNECT."""
import base64
import os

import pytest

from test_51_upgrade import WsOrigin, frame
from test_55_masque import UdpEcho, datagram, capsule, varint
from vdtest.h2client import ENABLE_CONNECT_PROTOCOL, PROTOCOL_ERROR, H2Client, RawH2, ends, \
    stream_result
from vdtest.httpmsg import build_response
from vdtest.tcp import TcpServer


@pytest.fixture
def ws_origin():
    o = WsOrigin()
    yield o
    o.stop()


@pytest.fixture
def udp_echo():
    e = UdpEcho()
    yield e
    e.stop()


def reverse_to(viaduct, port, extra=None):
    c = {"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
         "routes": [{"upstream": "http://127.0.0.1:%d" % port}]}
    c.update(extra or {})
    return viaduct(c)


def client(v):
    c = H2Client("127.0.0.1", v.port())
    assert c.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1
    return c


def ws_frames(buf):
    """Parses unmasked server frames from @buf: [(opcode, payload)], rest."""
    out = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        off = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = int.from_bytes(buf[2:4], "big")
            off = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = int.from_bytes(buf[2:10], "big")
            off = 10
        if len(buf) < off + n:
            break
        out.append((buf[0] & 0x0F, bytes(buf[off:off + n])))
        buf = buf[off + n:]
    return out, buf


def parse_capsules(buf):
    out = []
    while buf:
        def vi(b):
            n = 1 << (b[0] >> 6)
            if len(b) < n:
                return None, 0
            return int.from_bytes(bytes([b[0] & 0x3F]) + bytes(b[1:n]), "big"), n
        t, a = vi(buf)
        if t is None:
            break
        ln, b2 = vi(buf[a:])
        if ln is None or len(buf) < a + b2 + ln:
            break
        out.append((t, bytes(buf[a + b2:a + b2 + ln])))
        buf = buf[a + b2 + ln:]
    return out


# ---- WebSocket (RFC 8441 §4, §5) --------------------------------------------------------------

def test_websocket_over_h2_to_http11_origin(viaduct, ws_origin):
    v = reverse_to(viaduct, ws_origin.port)
    with client(v) as c:
        sid = c.start("CONNECT", "/chat", protocol="websocket", authority=v.authority(),
                      headers=[("sec-websocket-version", "13"),
                               ("sec-websocket-key", "Y2xpZW50LWtleS1vbi1oMg=="),
                               ("sec-websocket-protocol", "chat"),
                               ("origin", "http://example.test")], end=False)
        st = c.wait_head(sid)
        assert st.status == 200
        assert st.header("sec-websocket-accept") is None
        assert st.header("upgrade") is None and st.header("connection") is None
        c.send_data(sid, frame(0x1, b"hello over h2") + frame(0x2, b"\x00\xffbin"))
        c.pump_until(lambda: len(ws_frames(st.data)[0]) >= 2)
        assert ws_frames(st.data)[0] == [(0x1, b"hello over h2"), (0x2, b"\x00\xffbin")]
        # Close handshake: the origin answers with its close frame.
        c.send_data(sid, frame(0x8, b"\x03\xe8done"))
        c.pump_until(lambda: any(op == 0x8 for op, _ in ws_frames(st.data)[0]))
        assert ws_frames(st.data)[0][-1] == (0x8, b"\x03\xe8done")
        c.conn.end_stream(sid)
        c.flush()
        c.wait(sid)
    (raw,) = ws_origin.headers
    h = {k.lower(): val for k, val in raw.items()}
    # The origin saw an HTTP/1.1 handshake with viaduct's own key, one version, the options.
    assert h["upgrade"].lower() == "websocket" and "upgrade" in h["connection"].lower()
    assert h["sec-websocket-version"] == "13"
    assert h["sec-websocket-key"] != "Y2xpZW50LWtleS1vbi1oMg=="
    assert len(base64.b64decode(h["sec-websocket-key"])) == 16
    assert h["sec-websocket-protocol"] == "chat"
    v.wait_for_log(r'"CONNECT /chat HTTP/2\.0" 200 ', access=True)


def test_websocket_bad_accept_is_502(viaduct):
    def bad(c):
        c.sock.settimeout(5)
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.sock.recv(4096)
        c.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n")
        c.sock.recv(100)
    o = TcpServer(bad)
    try:
        v = reverse_to(viaduct, o.port)
        with client(v) as c:
            st = c.request("CONNECT", "/ws", protocol="websocket", authority=v.authority(),
                           headers=[("sec-websocket-version", "13")], end=False)
            st = c.wait_head(st.id) if st.headers is None else st
            assert st.status == 502
            assert b"Sec-WebSocket-Accept does not match" in bytes(c.wait(st.id).data)
    finally:
        o.stop()


def test_websocket_refused_by_origin_is_its_answer(viaduct, make_origin):
    o = make_origin(build_response(404, b"no websocket here"))
    v = reverse_to(viaduct, o.port)
    with client(v) as c:
        sid = c.start("CONNECT", "/x", protocol="websocket", authority=v.authority(),
                      headers=[("sec-websocket-version", "13")], end=False)
        st = c.wait(sid)
        assert st.status == 404 and bytes(st.data) == b"no websocket here"
    (req,) = o.wait_requests(1)
    assert req.request_line == b"GET /x HTTP/1.1"
    # One handshake, viaduct's: its own 16-byte key, and the client's version not repeated.
    (key,) = req.headers.all("sec-websocket-key")
    assert len(base64.b64decode(key)) == 16
    assert req.headers.all("sec-websocket-version") == ["13"]


def test_websocket_not_allowed_and_unknown_protocol(viaduct, origin):
    v = reverse_to(viaduct, origin.port, {"tunnel": {"upgrade_protocols": ["h2c-test"]}})
    with client(v) as c:
        st = c.request("CONNECT", "/", protocol="websocket", authority=v.authority())
        assert st.status == 403
        assert b"tunnel.upgrade_protocols" in bytes(st.data)
        st = c.request("CONNECT", "/", protocol="webtransport", authority=v.authority())
        assert st.status == 501
    origin.assert_untouched()


def test_protocol_refused_without_the_setting(viaduct, origin):
    v = reverse_to(viaduct, origin.port, {"http2": {"extended_connect": False}})
    with RawH2("127.0.0.1", v.port()) as c:
        fs = c.collect(lambda f: f.type == 0x4 and "ACK" not in f.flags)
        assert ENABLE_CONNECT_PROTOCOL not in fs[-1].settings
        c.send(c.headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                             (":scheme", "http"), (":path", "/"), (":authority", "x")],
                         end_stream=False))
        fs = c.collect(ends(1))
        assert stream_result(fs, 1) == (None, b"", PROTOCOL_ERROR)
    origin.assert_untouched()


# ---- connect-udp over HTTP/2 (RFC 9298 §3.4, RFC 9297) ---------------------------------------

def udp_path(port, host="127.0.0.1"):
    return "/.well-known/masque/udp/%s/%d/" % (host, port)


def test_connect_udp_over_h2(viaduct, udp_echo):
    v = viaduct({"masque": {"udp_ports": [udp_echo.port]}})
    with client(v) as c:
        sid = c.start("CONNECT", udp_path(udp_echo.port), protocol="connect-udp",
                      scheme="https", authority=v.authority(),
                      headers=[("capsule-protocol", "?1")], end=False)
        st = c.wait_head(sid)
        assert st.status == 200 and st.header("capsule-protocol") == "?1"
        # Two datagrams, an unknown capsule type (skipped) and a datagram with an unknown
        # context ID (dropped), split across DATA frames.
        data = (datagram(b"one") + capsule(0x2a, b"ignore me") + datagram(b"x", ctx=4) +
                datagram(os.urandom(1200)))
        c.send_data(sid, data[:7])
        c.send_data(sid, data[7:])
        c.pump_until(lambda: len(parse_capsules(st.data)) >= 2)
        caps = parse_capsules(st.data)
        assert [t for t, _ in caps] == [0, 0]
        assert caps[0][1] == varint(0) + b"echo:one"
        assert caps[1][1][:6] == varint(0) + b"echo:" and len(caps[1][1]) == 1 + 5 + 1200
        assert udp_echo.got[0] == b"one" and len(udp_echo.got) == 2
        # The client ending its side ends the flow cleanly: END_STREAM back, no RST_STREAM.
        c.conn.end_stream(sid)
        c.flush()
        st = c.wait(sid)
        assert st.ended and st.reset is None
    v.wait_for_log(r'"CONNECT https://127\.0\.0\.1:\d+%s HTTP/2\.0" 200 .* tunnel=connect-udp '
                   r'up=1203 down=1213 end=closed dgrams_up=2 dgrams_down=2'
                   % udp_path(udp_echo.port), access=True)


def test_connect_udp_many_streams_one_connection(viaduct, udp_echo):
    v = viaduct({"masque": {"udp_ports": [udp_echo.port]}})
    with client(v) as c:
        sids = [c.start("CONNECT", udp_path(udp_echo.port), protocol="connect-udp",
                        scheme="https", authority=v.authority(), end=False) for _ in range(20)]
        for i, sid in enumerate(sids):
            assert c.wait_head(sid).status == 200
            c.send_data(sid, datagram(b"stream %d" % i))
        for i, sid in enumerate(sids):
            st = c.streams[sid]
            c.pump_until(lambda: parse_capsules(st.data))
            assert parse_capsules(st.data) == [(0, varint(0) + b"echo:stream %d" % i)]


def test_connect_udp_over_h2_refusals(viaduct, udp_echo):
    v = viaduct({"masque": {"udp_ports": [udp_echo.port]}})
    with client(v) as c:
        st = c.request("CONNECT", udp_path(udp_echo.port + 1), protocol="connect-udp",
                       scheme="https", authority=v.authority())
        assert st.status == 403 and b"masque.udp_ports" in bytes(st.data)
        st = c.request("CONNECT", "/somewhere/else", protocol="connect-udp", scheme="https",
                       authority=v.authority())
        assert st.status == 404
        st = c.request("CONNECT", udp_path(udp_echo.port), protocol="connect-udp",
                       scheme="https", authority=v.authority(),
                       headers=[("capsule-protocol", "?0")])
        assert st.status == 400
    assert udp_echo.got == []
