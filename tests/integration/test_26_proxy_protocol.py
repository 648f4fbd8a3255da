# SPDX-License-Identifier: MIT
"""PROXY protocol v1 and v2 on listeners (listeners[].proxy_protocol): the client address a
load balancer passes on is the one access rules, X-Forwarded-For and the access log see; a
connection without a valid header, or from a peer not in proxy_protocol_from, is closed before
anything reaches an origin. HAProxy (send-proxy, send-proxy-v2) is the real sender."""
import os
import socket
import ssl
import struct
import subprocess
import time

import pytest

from vdtest.httpmsg import build_response
from vdtest.proc import poll
from vdtest.origins import closed_port
from vdtest.tcp import listening

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, sport, dst, dport, cmd=1, tlv=b""):
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    addr = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst) + struct.pack(">HH", sport, dport)
    ft = 0x21 if fam == socket.AF_INET6 else 0x11
    body = addr + tlv
    return SIG + bytes([0x20 | cmd, ft]) + struct.pack(">H", len(body)) + body


def reverse(viaduct, origin, listener=None, access=None):
    lst = {"address": "127.0.0.1:0", "mode": "reverse", "proxy_protocol": True}
    lst.update(listener or {})
    conf = {"listeners": [lst],
            "routes": [{"upstream": "http://127.0.0.1:%d" % origin.port,
                        "forwarded": "x-forwarded"}]}
    if access is not None:
        conf["access"] = access
    return viaduct(conf)


ANY = [{"allow": "0.0.0.0/0"}, {"allow": "::/0"}]
REQ = b"GET /pp HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"


def raw(vd, data, read=True):
    s = socket.create_connection((vd.addr(0), vd.port(0)), timeout=5)
    s.sendall(data)
    if not read:
        return s
    return read_all(s)


def read_all(s):
    """Everything until the peer closes; a reset (a close with our bytes unread) ends it too."""
    out = bytearray()
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except ConnectionResetError:
        pass
    s.close()
    return bytes(out)


@pytest.mark.parametrize("hdr,client", [
    (b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 443\r\n", "203.0.113.7:5555"),
    (b"PROXY TCP6 2001:db8::7 ::1 6000 443\r\n", "[2001:db8::7]:6000"),
    (v2("203.0.113.8", 7777, "10.0.0.1", 443), "203.0.113.8:7777"),
    (v2("2001:db8::8", 8888, "2001:db8::1", 443, tlv=b"\x04\x00\x03abc"), "[2001:db8::8]:8888"),
])
def test_header_names_the_client(viaduct, make_origin, hdr, client):
    o = make_origin(build_response(200, b"ok"))
    vd = reverse(viaduct, o, access=ANY)
    out = raw(vd, hdr + REQ)  # header and request in one segment
    assert out.startswith(b"HTTP/1.1 200 ")
    (req,) = o.wait_requests(1)
    ip = client.rsplit(":", 1)[0].strip("[]")
    assert req.headers.all("x-forwarded-for") == [ip]
    vd.wait_for_log(r"(?m)^\S+ %s \"GET /pp HTTP/1\.1\" 200 " % client.replace("[", r"\[")
                    .replace("]", r"\]").replace(".", r"\."), access=True)


def test_header_in_pieces(viaduct, make_origin):
    o = make_origin(build_response(200, b"ok"))
    vd = reverse(viaduct, o, access=ANY)
    data = v2("198.51.100.3", 4000, "10.0.0.1", 80) + REQ
    s = raw(vd, b"", read=False)
    for i in range(0, len(data), 3):  # a few bytes at a time
        s.sendall(data[i:i + 3])
        time.sleep(0.005)
    s.settimeout(5)
    out = read_all(s)
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert o.wait_requests(1)[0].headers.all("x-forwarded-for") == ["198.51.100.3"]


def test_header_then_http2_prior_knowledge(viaduct, make_origin):
    o = make_origin(build_response(200, b"h2 ok"))
    vd = reverse(viaduct, o, access=ANY)
    s = raw(vd, v2("203.0.113.30", 4444, "10.0.0.1", 80), read=False)
    # The HTTP/2 connection preface, SETTINGS, and a HEADERS frame for GET / (HPACK: static
    # table indexes for :method GET, :scheme http, :path /, and :authority literal).
    auth = b"app.test"
    block = b"\x82\x86\x84\x41" + bytes([len(auth)]) + auth
    frames = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" +
              len(block).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + block)
    s.sendall(frames)
    (req,) = o.wait_requests(1)
    assert req.headers.all("x-forwarded-for") == ["203.0.113.30"]
    assert req.headers.all("via") == ["2 viaduct"]
    s.close()


def test_access_rules_see_the_passed_address(viaduct, make_origin):
    o = make_origin(build_response(200, b"ok"))
    vd = reverse(viaduct, o, access=[{"deny": "203.0.113.0/24"}, {"allow": "0.0.0.0/0"}])
    out = raw(vd, b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\r\n" + REQ)
    assert out.startswith(b"HTTP/1.1 403 ")
    out = raw(vd, b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 443\r\n" + REQ)
    assert out.startswith(b"HTTP/1.1 200 ")
    assert len(o.requests) == 1


@pytest.mark.parametrize("data", [
    REQ,                                                    # no header at all
    b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 443\n" + REQ,  # LF without CR
    b"PROXY TCP4 203.0.113.7 127.0.0.1 05555 443\r\n" + REQ,
    b"PROXY TCP4 ::1 127.0.0.1 5555 443\r\n" + REQ,
    SIG + b"\x31\x11\x00\x0c" + bytes(12) + REQ,           # version 3
])
def test_missing_or_bad_header_closes_before_any_origin(viaduct, make_origin, data):
    o = make_origin(build_response(200, b"ok"))
    vd = reverse(viaduct, o, access=ANY)
    assert raw(vd, data) == b""
    time.sleep(0.2)
    assert o.requests == []
    assert "PROXY protocol header" in vd.read_error_log() or \
        poll(lambda: "PROXY protocol header" in vd.read_error_log())


def test_local_command_keeps_the_connection_address(viaduct, make_origin):
    o = make_origin(build_response(200, b"ok"))
    vd = reverse(viaduct, o)  # default rules: loopback only
    out = raw(vd, v2("203.0.113.7", 1, "10.0.0.1", 2, cmd=0) + REQ)
    assert out.startswith(b"HTTP/1.1 200 ")
    assert o.wait_requests(1)[0].headers.all("x-forwarded-for") == ["127.0.0.1"]
    out = raw(vd, b"PROXY UNKNOWN\r\n" + REQ)
    assert out.startswith(b"HTTP/1.1 200 ")


def test_only_trusted_peers_may_send_it(viaduct, make_origin):
    o = make_origin(build_response(200, b"ok"))
    vd = reverse(viaduct, o, listener={"proxy_protocol_from": ["10.0.0.0/8"]}, access=ANY)
    assert raw(vd, b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 443\r\n" + REQ) == b""
    vd.wait_for_log(r"PROXY protocol header not accepted from this address")
    assert o.requests == []


def test_proxy_protocol_then_tls(viaduct, make_origin, pki):
    o = make_origin(build_response(200, b"over tls"))
    vd = reverse(viaduct, o, access=ANY, listener={
        "tls": {"certificates": [{"cert": pki.server.cert, "key": pki.server.key}]}})
    s = socket.create_connection((vd.addr(0), vd.port(0)), timeout=5)
    s.sendall(v2("203.0.113.20", 1234, "10.0.0.1", 443))
    ctx = ssl.create_default_context(cafile=pki.ca)
    ts = ctx.wrap_socket(s, server_hostname="localhost")
    ts.sendall(REQ)
    out = read_all(ts)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"over tls")
    assert o.wait_requests(1)[0].headers.all("x-forwarded-for") == ["203.0.113.20"]


# ---- a real sender: HAProxy ------------------------------------------------------------------

def haproxy_in_front(tmp_path, vport, option):
    port = closed_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("""global
  maxconn 100
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:%d
  default_backend b
backend b
  server v 127.0.0.1:%d %s
""" % (port, vport, option))
    p = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    if not listening(port):
        p.kill()
        raise AssertionError("haproxy did not start: %r" % p.stderr.read())
    return p, port


@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
def test_haproxy_passes_the_client(viaduct, make_origin, tmp_path, option):
    if not os.path.exists("/usr/sbin/haproxy"):
        pytest.fail("haproxy is missing: tools/install-deps.sh test installs it")
    o = make_origin(build_response(200, b"ok"))
    vd = reverse(viaduct, o)
    hp, port = haproxy_in_front(tmp_path, vd.port(0), option)
    try:
        for src in ("127.0.0.9", "127.0.0.10"):
            s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
            s.sendall(REQ)
            local_port = s.getsockname()[1]
            out = read_all(s)
            assert out.startswith(b"HTTP/1.1 200 "), out
            vd.wait_for_log(r"(?m)^\S+ %s:%d \"GET /pp HTTP/1\.1\" 200 " %
                            (src.replace(".", r"\."), local_port), access=True)
        assert [r.headers.all("x-forwarded-for") for r in o.wait_requests(2)] == \
            [["127.0.0.9"], ["127.0.0.10"]]
    finally:
        hp.terminate()
        hp.wait(timeout=10)
