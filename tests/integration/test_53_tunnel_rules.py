# SPDX-License-Identifier: MIT
"""Access rules on what is known later than the request head: the destination address (after
DNS), and what a tunnel carries (TLS SNI/ALPN from the ClientHello, SSH/HTTP first bytes, a
server greeting, the protocol declared with Upgrade on CONNECT). Checked with openssl s_client
-proxy as the TLS client and raw sockets for the rest."""
import socket
import subprocess
import time

import pytest

from vdtest.asserts import assert_proxy_error
from vdtest.tcp import TcpServer, greeting, record, recv_exact, recv_until_eof

OK_200 = b"HTTP/1.1 200 Connection established\r\n\r\n"
PORTS = {"ports": ["1024-65535"]}


@pytest.fixture
def servers():
    started = []

    def make(handler=None):
        s = TcpServer(handler)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def rules(*items):
    return list(items) + [{"allow": "127.0.0.0/8"}]


def read_head(sock):
    sock.settimeout(5)
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        b = sock.recv(1)
        if not b:
            raise EOFError(bytes(head))
        head += b
    return bytes(head)


def s_client(vd, port, servername, pki):
    """openssl s_client through the proxy; returns (returncode, stdout+stderr)."""
    r = subprocess.run(["openssl", "s_client", "-proxy", vd.authority(),
                        "-connect", "localhost:%d" % port, "-servername", servername,
                        "-CAfile", pki.ca, "-verify_return_error", "-brief"],
                       input=b"Q\n", capture_output=True, timeout=20)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


def test_dest_nets_denies_after_dns(viaduct, dns, servers):
    dns.set("metadata.test", ["127.0.0.2"])
    srv = servers()
    vd = viaduct({"connect": PORTS, "access": rules(
        {"name": "no-metadata", "deny": {"dest_nets": ["127.0.0.2/32"]}})})
    c = vd.connect()
    resp = c.exchange("CONNECT", "metadata.test:%d" % srv.port)
    assert_proxy_error(resp, 403, 'access rule "no-metadata"')
    # The same guard for plain forwarding.
    c = vd.connect()
    resp = c.exchange("GET", "http://metadata.test:%d/latest" % srv.port)
    assert_proxy_error(resp, 403, 'access rule "no-metadata"')
    srv.assert_untouched()


def test_dest_nets_skips_denied_addresses(viaduct, dns, servers):
    dns.set("mixed.test", ["127.0.0.2", "127.0.0.1"])
    srv = servers(record)
    vd = viaduct({"connect": PORTS, "access": rules(
        {"deny": {"dest_nets": ["127.0.0.2/32"]}})})
    c = vd.connect()
    c.send(b"CONNECT mixed.test:%d HTTP/1.1\r\nHost: mixed.test:%d\r\n\r\n" % (srv.port, srv.port))
    assert read_head(c.sock) == OK_200
    c.sock.sendall(b"via 127.0.0.1")
    c.sock.shutdown(socket.SHUT_WR)
    conn = srv.wait_conns(1)
    assert conn.eof.wait(5) and bytes(conn.received) == b"via 127.0.0.1"


def test_sni_rule_refuses_with_tls_alert(viaduct, make_origin, pki):
    o = make_origin(tls="server")
    vd = viaduct({"connect": PORTS, "access": rules(
        {"name": "only-localhost", "deny": {"methods": ["CONNECT"], "sni": ["other.test"]}})})
    rc, out = s_client(vd, o.port, "other.test", pki)
    assert rc != 0
    assert "access denied" in out.lower(), out
    assert o.requests == [] and o.conn_count == 1  # connected, but no TLS byte reached it
    vd.wait_for_log(r'"CONNECT localhost:%d HTTP/1\.[01]" 200 .* tunnel=tls sni=other\.test .*'
                    r'end=denied deny=only-localhost' % o.port, access=True)
    rc, out = s_client(vd, o.port, "localhost", pki)
    assert rc == 0, out


def test_sni_mismatch_rule(viaduct, make_origin, pki):
    o = make_origin(tls="server")
    vd = viaduct({"connect": PORTS, "access": rules(
        {"name": "sni-must-match", "deny": {"sni_mismatch": True}})})
    rc, out = s_client(vd, o.port, "api.example.test", pki)
    assert rc != 0 and "access denied" in out.lower(), out
    rc, out = s_client(vd, o.port, "localhost", pki)
    assert rc == 0, out


def test_protocol_rule_holds_first_bytes(viaduct, servers):
    """Only TLS may be tunnelled: an SSH client is refused before any byte reaches the target."""
    srv = servers(record)
    vd = viaduct({"connect": PORTS, "access": [
        {"name": "tls-only", "allow": {"methods": ["CONNECT"], "protocols": ["tls"]}},
        {"name": "rest", "deny": {"methods": ["CONNECT"]}},
        {"allow": "127.0.0.0/8"}]})
    c = vd.connect()
    c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % srv.port)
    assert read_head(c.sock) == OK_200
    c.sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    with pytest.raises((ConnectionResetError, EOFError)):
        data = recv_until_eof(c.sock)
        raise EOFError(data)
    conn = srv.wait_conns(1)
    assert conn.eof.wait(5)
    assert bytes(conn.received) == b""
    vd.wait_for_log(r"tunnel=ssh up=0 down=0 end=denied deny=rest", access=True)


def test_declared_protocol_rule(viaduct, servers):
    srv = servers(greeting(b"* OK IMAP4rev1\r\n"))
    vd = viaduct({"connect": PORTS, "access": rules(
        {"name": "no-smtp", "deny": {"declared": ["smtp"]}},
        {"name": "honest", "deny": {"declared_mismatch": True}})})
    c = vd.connect()
    resp = c.exchange("CONNECT", "127.0.0.1:%d" % srv.port, headers=[("Upgrade", "SMTP")])
    assert_proxy_error(resp, 403, 'access rule "no-smtp"')
    # Declared imap, and the server greets as IMAP: allowed.
    c = vd.connect()
    c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\nUpgrade: imap\r\n\r\n" % srv.port)
    assert read_head(c.sock) == OK_200
    assert recv_exact(c.sock, 16) == b"* OK IMAP4rev1\r\n"
    c.close()


def test_declared_mismatch_refused(viaduct, servers):
    srv = servers(greeting(b"SSH-2.0-OpenSSH_9.2\r\n"))
    vd = viaduct({"connect": PORTS, "access": rules(
        {"name": "honest", "deny": {"declared_mismatch": True}})})
    c = vd.connect()
    c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\nUpgrade: imap\r\n\r\n" % srv.port)
    assert read_head(c.sock) == OK_200
    got = b""
    with pytest.raises((ConnectionResetError, EOFError)):
        got = recv_until_eof(c.sock)
        raise EOFError(got)
    vd.wait_for_log(r"tunnel=ssh .*end=denied deny=honest", access=True)


def test_sniff_timeout_decides_unknown(viaduct, servers):
    """A client that sends nothing while a rule waits: after sniff_timeout it is 'unknown'."""
    srv = servers(record)
    vd = viaduct({"connect": PORTS, "tunnel": {"sniff_timeout": "300ms"}, "access": [
        {"name": "tls-only", "allow": {"methods": ["CONNECT"], "protocols": ["tls"]}},
        {"name": "rest", "deny": {"methods": ["CONNECT"]}},
        {"allow": "127.0.0.0/8"}]})
    c = vd.connect()
    c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % srv.port)
    assert read_head(c.sock) == OK_200
    t0 = time.monotonic()
    with pytest.raises((ConnectionResetError, EOFError)):
        data = recv_until_eof(c.sock)
        raise EOFError(data)
    assert time.monotonic() - t0 >= 0.25
    vd.wait_for_log(r"tunnel=unknown up=0 down=0 end=denied deny=rest", access=True)
