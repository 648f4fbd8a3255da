# SPDX-License-Identifier: MIT
"""connect-udp (RFC 9298) over HTTP/1.1: the Upgrade request on the URI template, the 101, and
DATAGRAM capsules (RFC 9297) relayed to and from a UDP echo server. No packaged client speaks
this, so the client here is written from the RFCs (varints: RFC 9000 §16; capsules: RFC 9297
§3.2; the HTTP/1.1 request: RFC 9298 §3.2)."""
import os
import socket
import threading
import time

import pytest

from vdtest.asserts import assert_proxy_error


def varint(v):
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 1 << 30:
        return (v | 0x80000000).to_bytes(4, "big")
    return (v | 0xC000000000000000).to_bytes(8, "big")


def read_varint(reader):
    b = reader.read_exact(1)
    n = 1 << (b[0] >> 6)
    rest = reader.read_exact(n - 1) if n > 1 else b""
    return int.from_bytes(bytes([b[0] & 0x3F]) + rest, "big")


def datagram(payload, ctx=0):
    value = varint(ctx) + payload
    return varint(0) + varint(len(value)) + value


def capsule(ctype, value):
    return varint(ctype) + varint(len(value)) + value


def read_capsule(reader):
    ctype = read_varint(reader)
    n = read_varint(reader)
    return ctype, reader.read_exact(n)


class UdpEcho:
    """Echoes every datagram back, prefixed with b"echo:"; records what it got."""

    def __init__(self, host="127.0.0.1"):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.got = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.got.append(data)
            self.sock.sendto(b"echo:" + data[:65000], peer)

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def echo():
    e = UdpEcho()
    yield e
    e.stop()


def masque_conf(port, **kw):
    m = {"udp_ports": [port]}
    m.update(kw)
    return {"masque": m}


def send_capsule_upgrade(c, vd, token, path, early=b"", extra=b""):
    """Sends the HTTP/1.1 Upgrade request of capsule protocol @token (RFC 9298 §3.2, RFC 9484
    §4) for @path on client connection @c, then @early bytes (optimistic capsules)."""
    c.send(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
           b"Capsule-Protocol: ?1\r\n%s\r\n" % (path.encode(), vd.authority().encode(),
                                                token.encode(), extra) + early)
    return c


def expect_capsule_101(c, token):
    resp = c.response()
    assert resp.status == 101, resp
    assert resp.headers.get("upgrade") == token
    assert "upgrade" in resp.headers.tokens("connection")
    assert resp.headers.get("capsule-protocol") == "?1"
    return resp


def open_udp(vd, host, port, early=b"", extra=b"", path=None):
    path = path or "/.well-known/masque/udp/%s/%d/" % (host, port)
    return send_capsule_upgrade(vd.connect(), vd, "connect-udp", path, early, extra)


def expect_101(c):
    return expect_capsule_101(c, "connect-udp")


def test_datagrams_both_ways(viaduct, echo):
    vd = viaduct(masque_conf(echo.port))
    c = open_udp(vd, "127.0.0.1", echo.port)
    expect_101(c)
    for i in range(20):
        payload = b"dgram-%d-" % i + os.urandom(i * 37)
        c.send(datagram(payload))
        assert read_capsule(c.reader) == (0, b"\x00echo:" + payload)
    c.close()
    vd.wait_for_log(r'"GET /\.well-known/masque/udp/127\.0\.0\.1/%d/ HTTP/1\.1" 101 .*'
                    r'tunnel=connect-udp up=\d+ down=\d+ end=closed dgrams_up=20 dgrams_down=20'
                    % echo.port, access=True)


def test_large_datagram_and_hostname_target(viaduct, echo):
    vd = viaduct(masque_conf(echo.port))
    c = open_udp(vd, "origin.test", echo.port)
    expect_101(c)
    big = os.urandom(60000)
    c.send(datagram(big))
    ctype, value = read_capsule(c.reader)
    assert ctype == 0 and value == b"\x00echo:" + big


def test_ipv6_target_percent_encoded(viaduct):
    e = UdpEcho("::1")
    try:
        vd = viaduct(masque_conf(e.port))
        c = open_udp(vd, "%3A%3A1", e.port)
        expect_101(c)
        c.send(datagram(b"v6"))
        assert read_capsule(c.reader) == (0, b"\x00echo:v6")
    finally:
        e.stop()


def test_optimistic_capsules_before_101(viaduct, echo):
    vd = viaduct(masque_conf(echo.port))
    c = open_udp(vd, "127.0.0.1", echo.port, early=datagram(b"early"))
    expect_101(c)
    assert read_capsule(c.reader) == (0, b"\x00echo:early")


def test_unknown_capsules_skipped_and_contexts_dropped(viaduct, echo):
    vd = viaduct(masque_conf(echo.port))
    c = open_udp(vd, "127.0.0.1", echo.port)
    expect_101(c)
    c.send(capsule(0x2A, os.urandom(3000)) + datagram(b"ctx7", ctx=7) + datagram(b"after"))
    assert read_capsule(c.reader) == (0, b"\x00echo:after")
    time.sleep(0.2)
    assert echo.got == [b"after"]


def test_port_not_allowed_is_403(viaduct, echo):
    vd = viaduct(masque_conf(echo.port + 1))
    c = open_udp(vd, "127.0.0.1", echo.port, early=datagram(b"x"))
    resp = c.response()
    assert_proxy_error(resp, 403, "connect-udp to port %d is not allowed" % echo.port)
    c.assert_closed()  # the optimistic capsule is never read as a request
    time.sleep(0.2)
    assert echo.got == []


def test_default_allows_no_udp_port(viaduct, echo):
    vd = viaduct()
    c = open_udp(vd, "127.0.0.1", echo.port)
    assert c.response().status == 403


@pytest.mark.parametrize("path,extra", [
    ("/.well-known/masque/udp/127.0.0.1/0/", b""),
    ("/.well-known/masque/udp/127.0.0.1/99999/", b""),
    ("/.well-known/masque/udp/bad%zz/53/", b""),
    ("/.well-known/masque/udp/127.0.0.1/53", b""),
    ("/.well-known/masque/udp/127.0.0.1/53/", b"Content-Length: 3\r\n"),
    ("/.well-known/masque/udp/127.0.0.1/53/", b"Capsule-Protocol: ?0\r\n"),
])
def test_malformed_requests_are_400(viaduct, echo, path, extra):
    vd = viaduct(masque_conf(53))
    c = open_udp(vd, "x", 53, path=path, extra=extra)
    resp = c.response()
    assert_proxy_error(resp, 400, "connect-udp")


def test_rules_apply_to_targets(viaduct, echo, dns):
    dns.set("inside.test", ["127.0.0.2"])
    vd = viaduct(dict(masque_conf(echo.port), access=[
        {"name": "no-inside", "deny": {"dest_nets": ["127.0.0.2/32"]}},
        {"allow": "127.0.0.0/8"}]))
    c = open_udp(vd, "inside.test", echo.port)
    assert_proxy_error(c.response(), 403, 'access rule "no-inside"')


def test_idle_timeout(viaduct, echo):
    vd = viaduct(masque_conf(echo.port, idle_timeout="400ms"))
    c = open_udp(vd, "127.0.0.1", echo.port)
    expect_101(c)
    c.send(datagram(b"one"))
    assert read_capsule(c.reader) == (0, b"\x00echo:one")
    t0 = time.monotonic()
    assert c.wait_closed(5) == b""
    assert time.monotonic() - t0 >= 0.3
    vd.wait_for_log(r"tunnel=connect-udp .*end=idle dgrams_up=1 dgrams_down=1", access=True)


def test_plain_get_on_template_path_is_not_captured(viaduct, make_origin):
    """Without Upgrade: connect-udp the path is an ordinary request (reverse routing here)."""
    o = make_origin()
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                  "routes": [{"upstream": "http://127.0.0.1:%d" % o.port}]})
    c = vd.connect()
    resp = c.exchange("GET", "/.well-known/masque/udp/127.0.0.1/53/", host="localhost")
    assert resp.status == 200
