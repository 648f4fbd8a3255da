# SPDX-License-Identifier: MIT
"""CONNECT tunnels (RFC 9110 §9.3.6): target forms, the port allow-list, failures that say which
step failed, the exact 200, early data, half-close in both orders, resets, idle timeout, the
zero-copy and buffered paths, and curl/openssl through the tunnel to a TLS origin."""
import hashlib
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from vdtest.asserts import assert_proxy_error
from vdtest.tcp import (TcpServer, blackhole_port, echo, greeting, record, recv_exact,
                        recv_until_eof, reset_close)

OK_200 = b"HTTP/1.1 200 Connection established\r\n\r\n"
ANY_PORT = {"connect": {"ports": ["1024-65535"]}}


@pytest.fixture
def servers():
    started = []

    def make(handler=None, host="127.0.0.1"):
        s = TcpServer(handler, host=host)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def tproxy(viaduct):
    return viaduct(ANY_PORT)


def read_head(c):
    """Reads the proxy's response head byte by byte (so no tunnel byte is consumed)."""
    c.sock.settimeout(5)
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        b = c.sock.recv(1)
        if not b:
            raise EOFError("closed after %r" % bytes(head))
        head += b
    return bytes(head)


def open_tunnel(proxy, authority, early=b"", headers=b""):
    c = proxy.connect()
    c.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (authority.encode(), authority.encode(),
                                                          headers) + early)
    assert read_head(c) == OK_200
    return c


def test_200_is_exact_and_relays_both_ways(tproxy, servers):
    srv = servers()
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(b"ping")
    assert recv_exact(c.sock, 4) == b"ping"
    c.sock.shutdown(socket.SHUT_WR)
    assert recv_until_eof(c.sock) == b""
    line = tproxy.wait_for_log(r'"CONNECT 127\.0\.0\.1:%d HTTP/1\.1" 200 .* tunnel=unknown '
                               r'up=4 down=4 end=closed' % srv.port, access=True)
    assert line


def test_hostname_target_resolved_through_dns(tproxy, servers):
    srv = servers()
    c = open_tunnel(tproxy, "origin.test:%d" % srv.port)
    c.sock.sendall(b"x")
    assert recv_exact(c.sock, 1) == b"x"


def test_ipv6_literal_target(tproxy, servers):
    srv = servers(host="::1")
    c = open_tunnel(tproxy, "[::1]:%d" % srv.port)
    c.sock.sendall(b"six")
    assert recv_exact(c.sock, 3) == b"six"


@pytest.mark.parametrize("target", [
    b"/path", b"origin.test", b"http://origin.test:443/", b"origin.test:", b"origin.test:0",
    b"origin.test:99999", b"[::1:443", b"user@origin.test:443",
])
def test_malformed_targets_are_400(tproxy, servers, target):
    c = tproxy.connect()
    resp = c.exchange("CONNECT", target.decode(), host="origin.test:443")
    assert_proxy_error(resp, 400, "malformed request")
    c.assert_closed()


def test_connect_with_body_is_400(tproxy, servers):
    srv = servers()
    c = tproxy.connect()
    c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" % srv.port)
    resp = c.response("CONNECT")
    assert_proxy_error(resp, 400, "CONNECT with a body")
    srv.assert_untouched()


def test_default_allows_only_443(viaduct, servers):
    vd = viaduct()
    srv = servers()
    c = vd.connect()
    resp = c.exchange("CONNECT", "127.0.0.1:%d" % srv.port)
    assert_proxy_error(resp, 403, "CONNECT to port %d is not allowed (connect.ports)" % srv.port)
    srv.assert_untouched()


def test_port_list_and_ranges(viaduct, servers):
    srv = servers()
    vd = viaduct({"connect": {"ports": [443, "%d-%d" % (srv.port, srv.port + 1)]}})
    c = open_tunnel(vd, "127.0.0.1:%d" % srv.port)
    c.close()
    c = vd.connect()
    resp = c.exchange("CONNECT", "127.0.0.1:%d" % (srv.port + 2))
    assert resp.status == 403


def test_dns_failure_is_502(tproxy):
    c = tproxy.connect()
    resp = c.exchange("CONNECT", "nx.test:8443")
    assert_proxy_error(resp, 502, "DNS lookup failed: nx.test does not resolve")


def test_refused_is_502(tproxy):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = tproxy.connect()
    resp = c.exchange("CONNECT", "127.0.0.1:%d" % port)
    assert_proxy_error(resp, 502, "connection to 127.0.0.1 port %d refused" % port)


def test_connect_timeout_is_504(viaduct):
    port, keep = blackhole_port()
    try:
        vd = viaduct({"connect": {"ports": ["1024-65535"]},
                      "timeouts": {"upstream_connect": "300ms"}})
        c = vd.connect()
        resp = c.exchange("CONNECT", "127.0.0.1:%d" % port)
        assert_proxy_error(resp, 504, "connecting to 127.0.0.1 port %d timed out" % port)
    finally:
        for s in keep:
            s.close()


def test_early_data_is_delivered_first(tproxy, servers):
    srv = servers(record)
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port, early=b"EARLY-BYTES")
    c.sock.sendall(b"+late")
    c.sock.shutdown(socket.SHUT_WR)
    conn = srv.wait_conns(1)
    assert conn.eof.wait(5)
    assert bytes(conn.received) == b"EARLY-BYTES+late"


def test_early_data_larger_than_a_segment(tproxy, servers):
    srv = servers(record)
    early = os.urandom(40000)
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port, early=early)
    c.sock.shutdown(socket.SHUT_WR)
    conn = srv.wait_conns(1)
    assert conn.eof.wait(5)
    assert bytes(conn.received) == early


def test_client_half_closes_first(tproxy, servers):
    """Client FIN reaches the target; the target's reply still reaches the client."""
    def h(c):
        c.sock.settimeout(10)
        got = recv_until_eof(c.sock)
        c.received += got
        c.eof.set()
        time.sleep(0.2)
        c.sock.sendall(b"reply-after-fin:" + got)
        c.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)

    srv = servers(h)
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(b"abc")
    c.sock.shutdown(socket.SHUT_WR)
    assert recv_until_eof(c.sock) == b"reply-after-fin:abc"
    tproxy.wait_for_log(r"up=3 down=19 end=closed", access=True)


def test_target_half_closes_first(tproxy, servers):
    """Target FIN reaches the client; the client can keep sending to the target."""
    def h(c):
        c.sock.sendall(b"server-done")
        c.sock.shutdown(socket.SHUT_WR)
        record(c)

    srv = servers(h)
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port)
    assert recv_until_eof(c.sock) == b"server-done"
    c.sock.sendall(b"still sending")
    time.sleep(0.1)
    c.sock.sendall(b" after EOF")
    c.sock.shutdown(socket.SHUT_WR)
    conn = srv.wait_conns(1)
    assert conn.eof.wait(5)
    assert bytes(conn.received) == b"still sending after EOF"


def test_target_reset_resets_client(tproxy, servers):
    def h(c):
        recv_exact(c.sock, 2)
        reset_close(c.sock)

    srv = servers(h)
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(b"go")
    with pytest.raises(ConnectionResetError):
        recv_until_eof(c.sock)
    tproxy.wait_for_log(r"end=reset", access=True)


def test_client_reset_resets_target(tproxy, servers):
    srv = servers(record)
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(b"bye")
    conn = srv.wait_conns(1)
    time.sleep(0.1)
    reset_close(c.sock)
    assert conn.eof.wait(5)
    assert isinstance(conn.error, ConnectionResetError)


def test_idle_timeout_closes_both(viaduct, servers):
    vd = viaduct({"connect": {"ports": ["1024-65535"]}, "tunnel": {"idle_timeout": "500ms"}})
    srv = servers(record)
    c = open_tunnel(vd, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(b"hi")
    t0 = time.monotonic()
    conn = srv.wait_conns(1)
    assert conn.eof.wait(5)
    with pytest.raises((ConnectionResetError, EOFError)):
        data = recv_until_eof(c.sock)
        raise EOFError(data)
    assert time.monotonic() - t0 >= 0.4
    vd.wait_for_log(r"end=idle", access=True)


@pytest.mark.parametrize("splice", [True, False])
def test_large_transfer_both_ways(viaduct, servers, splice):
    vd = viaduct({"connect": {"ports": ["1024-65535"]}, "tunnel": {"splice": splice}})
    srv = servers(echo)
    c = open_tunnel(vd, "127.0.0.1:%d" % srv.port)
    payload = os.urandom(8 << 20)
    got = bytearray()

    def reader():
        got.extend(recv_until_eof(c.sock, timeout=30))

    th = threading.Thread(target=reader)
    th.start()
    c.sock.sendall(payload)
    c.sock.shutdown(socket.SHUT_WR)
    th.join(60)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    vd.wait_for_log(r"up=%d down=%d end=closed" % (len(payload), len(payload)), access=True)


def test_stalled_tunnel_does_not_slow_another(tproxy, servers):
    """A client that stops reading fills its tunnel; a second tunnel keeps working."""
    def flood(c):
        c.sock.settimeout(20)
        try:
            while True:
                c.sock.sendall(b"x" * 65536)
        except OSError:
            pass

    slow = servers(flood)
    fast = servers(echo)
    stalled = open_tunnel(tproxy, "127.0.0.1:%d" % slow.port)
    time.sleep(0.5)
    c = open_tunnel(tproxy, "127.0.0.1:%d" % fast.port)
    for i in range(50):
        msg = b"msg%d" % i
        c.sock.sendall(msg)
        assert recv_exact(c.sock, len(msg)) == msg
    stalled.close()


def test_server_greeting_names_protocol(tproxy, servers):
    srv = servers(greeting(b"* OK IMAP4rev1 ready\r\n"))
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port)
    assert recv_exact(c.sock, 22) == b"* OK IMAP4rev1 ready\r\n"
    c.sock.shutdown(socket.SHUT_WR)
    c.close()
    tproxy.wait_for_log(r"tunnel=imap ", access=True)


@pytest.mark.parametrize("first,proto", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "ssh"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "http"),
    (b"\x00\x01\x02garbage", "unknown"),
])
def test_client_first_bytes_name_protocol(tproxy, servers, first, proto):
    srv = servers(record)
    c = open_tunnel(tproxy, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(first)
    c.sock.shutdown(socket.SHUT_WR)
    conn = srv.wait_conns(1)
    assert conn.eof.wait(5)
    assert bytes(conn.received) == first
    c.close()
    tproxy.wait_for_log(r"tunnel=%s up=%d" % (proto, len(first)), access=True)


def test_curl_https_through_tunnel(tproxy, make_origin, pki):
    o = make_origin(tls="server")
    url = "https://localhost:%d/secret?q=1" % o.port
    r = subprocess.run(["curl", "-sS", "--cacert", pki.ca, "-x", "http://" + tproxy.authority(),
                        "--resolve", "localhost:%d:127.0.0.1" % o.port, url],
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ok\n"
    assert o.requests[0].request_line == b"GET /secret?q=1 HTTP/1.1"
    # The proxy never saw the inner request: only SNI and ALPN from the ClientHello.
    tproxy.wait_for_log(r'"CONNECT localhost:%d HTTP/1\.1" 200 .* tunnel=tls sni=localhost '
                        r'alpn=(h2,)?http/1\.1 up=\d+ down=\d+ end=closed' % o.port, access=True)


def socket_buffers(pid, peer_port=None, local_port=None):
    """(rb, tb) of viaduct's established TCP socket with that peer or local port, from ss."""
    out = subprocess.run(["ss", "-tmnpH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    for i, line in enumerate(out):
        f = line.split()
        if "pid=%d," % pid not in line or len(f) < 4:
            continue
        local, peer = f[2].rsplit(":", 1)[1], f[3].rsplit(":", 1)[1]
        if (peer_port and peer == str(peer_port)) or (local_port and local == str(local_port)):
            mem = line if "skmem:" in line else out[i + 1]
            rb = int(re.search(r"\brb(\d+)", mem).group(1))
            tb = int(re.search(r"\btb(\d+)", mem).group(1))
            return rb, tb
    raise AssertionError("no socket of pid %d with port %s/%s in %r" % (pid, peer_port,
                                                                      local_port, out))


def sysctl_int(name):
    with open("/proc/sys/net/core/" + name) as f:
        return int(f.read())


@pytest.mark.parametrize("tunnel,fixed", [
    ({}, 512 << 10),
    ({"socket_buffer": "256k"}, 256 << 10),
    ({"socket_buffer": "256k", "socket_buffer_rtt": "0us"}, None),
    ({"socket_buffer": 0}, None),
    ({"socket_buffer": "256k", "splice": False}, None),
])
def test_short_path_tunnels_get_fixed_socket_buffers(viaduct, servers, tunnel, fixed):
    """A spliced tunnel whose two paths are short (loopback here) fixes both sockets' send and
    receive buffers at tunnel.socket_buffer (the kernel doubles what it is given, and caps it at
    net.core.wmem_max/rmem_max); an RTT threshold nothing meets, 0, or the buffered path leave
    the kernel's autotuning alone. Bytes still arrive exactly."""
    vd = viaduct({"connect": {"ports": ["1024-65535"]}, "tunnel": tunnel})
    srv = servers(echo)
    c = open_tunnel(vd, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(b"ping")
    assert recv_exact(c.sock, 4) == b"ping"
    up = socket_buffers(vd.pid, peer_port=srv.port)
    down = socket_buffers(vd.pid, peer_port=c.sock.getsockname()[1])
    if fixed:
        want = (2 * min(fixed, sysctl_int("rmem_max")), 2 * min(fixed, sysctl_int("wmem_max")))
        assert up == want and down == want, (up, down, want)
    else:
        for rb, tb in (up, down):
            assert rb != 2 * (256 << 10) and tb != 2 * (256 << 10), (up, down)
            assert rb != 2 * (512 << 10) and tb != 2 * (512 << 10), (up, down)
    payload = os.urandom(1 << 20)
    got = bytearray()
    th = threading.Thread(target=lambda: got.extend(recv_until_eof(c.sock, timeout=30)))
    th.start()
    c.sock.sendall(payload)
    c.sock.shutdown(socket.SHUT_WR)
    th.join(60)
    assert bytes(got) == payload


def test_tunnel_through_tls_listener(viaduct, servers, pki):
    """CONNECT on a TLS listener: the client side is TLS, so the buffered path relays."""
    from vdtest.client import client_tls_context
    lst = {"address": "127.0.0.1:0", "mode": "forward",
           "tls": {"certificates": [{"cert": pki.server.cert, "key": pki.server.key}]}}
    vd = viaduct({"listeners": [lst], "connect": {"ports": ["1024-65535"]}})
    srv = servers(echo)
    c = vd.connect(tls=client_tls_context(pki.ca), server_hostname="localhost")
    c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\nearly" % srv.port)
    assert read_head(c) == OK_200
    assert recv_exact(c.sock, 5) == b"early"
    # One thread: an SSL socket must not be read and written from two threads at once.
    for i in range(40):
        block = os.urandom(8192 + i * 997)
        c.sock.sendall(block)
        assert recv_exact(c.sock, len(block), 10) == block


def test_drain_closes_tunnels_after_grace(viaduct, servers):
    vd = viaduct({"connect": {"ports": ["1024-65535"]}, "timeouts": {"shutdown_grace": "500ms"}})
    srv = servers(echo)
    c = open_tunnel(vd, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(b"a")
    assert recv_exact(c.sock, 1) == b"a"
    t0 = time.monotonic()
    assert vd.stop(close_clients=False) == 0
    assert time.monotonic() - t0 < 10


def test_json_access_log_tunnel_fields(viaduct, servers):
    import json
    vd = viaduct({"connect": {"ports": ["1024-65535"]}, "log": {"access_format": "json"}})
    srv = servers(echo)
    c = open_tunnel(vd, "127.0.0.1:%d" % srv.port)
    c.sock.sendall(b"SSH-2.0-test\r\n")
    assert recv_exact(c.sock, 14) == b"SSH-2.0-test\r\n"
    c.sock.shutdown(socket.SHUT_WR)
    assert recv_until_eof(c.sock) == b""
    m = vd.wait_for_log(r'\{[^\n]*"tunnel"[^\n]*\}', access=True)
    rec = json.loads(m.group(0))
    assert rec["method"] == "CONNECT" and rec["status"] == 200
    assert rec["tunnel"] == "ssh" and rec["up"] == 14 and rec["down"] == 14
    assert rec["end"] == "closed"
