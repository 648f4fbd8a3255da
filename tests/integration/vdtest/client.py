# SPDX-License-Identifier: MIT
"""Raw-socket client connections to the proxy: exact bytes out, framed responses in."""
import socket
import ssl
import time

from .httpmsg import DEFAULT_TIMEOUT, Eof, Reader, build_request, read_response


class ClientConn:
    def __init__(self, addr, port, timeout=DEFAULT_TIMEOUT, source=None, tls=None,
                 server_hostname=None, session=None):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect((addr, port))
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname=server_hostname, session=session)
        self.sock = s
        self.reader = Reader(s)
        self.sent = bytearray()
        self.closed = False

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sent += data
        self.sock.sendall(data)

    def request(self, method, target, headers=None, body=None, version="1.1", host=True):
        """Sends one request built by httpmsg.build_request; returns its bytes."""
        data = build_request(method, target, headers, body, version, host)
        self.send(data)
        return data

    def response(self, method="GET", timeout=None, stop_at_interim=False):
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            return read_response(self.reader, method, stop_at_interim)
        finally:
            if timeout is not None:
                self.sock.settimeout(DEFAULT_TIMEOUT)

    def exchange(self, method, target, headers=None, body=None, version="1.1", host=True):
        self.request(method, target, headers, body, version, host)
        return self.response(method)

    def wait_closed(self, timeout=5.0):
        """Waits for EOF/RST from the proxy and returns any bytes received first."""
        deadline = time.monotonic() + timeout
        extra = bytearray(self.reader.take(len(self.reader.buf)))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("connection still open after %.1fs (got %r)" %
                                     (timeout, bytes(extra[:200])))
            self.sock.settimeout(left)
            try:
                self.reader.fill()
            except Eof:
                return bytes(extra + self.reader.take(len(self.reader.buf)))
            except socket.timeout:
                continue
            except OSError:
                return bytes(extra)
            extra += self.reader.take(len(self.reader.buf))

    def assert_closed(self, timeout=5.0):
        extra = self.wait_closed(timeout)
        assert extra == b"", "bytes after the response before close: %r" % extra[:200]

    def is_open_after(self, seconds):
        """True when nothing (no bytes, no EOF) arrived during @seconds."""
        self.sock.settimeout(seconds)
        try:
            self.reader.fill()
        except socket.timeout:
            return True
        except Eof:
            return False
        finally:
            self.sock.settimeout(DEFAULT_TIMEOUT)
        return False

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def client_tls_context(ca_file=None, min_version=None, max_version=None, alpn=None,
                       verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(ca_file)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def connect_tunnel(proxy, target, timeout=None):
    """A new connection to @proxy that sends CONNECT @target; returns it and the response."""
    c = proxy.connect()
    c.send(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
    return c, c.response(method="CONNECT", timeout=timeout)
