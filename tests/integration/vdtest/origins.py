# SPDX-License-Identifier: MIT
"""Scripted origin servers on 127.0.0.1, one thread per connection.

Each origin records, per connection, exactly the raw bytes it received and the
requests it parsed from them, and counts connections. What it sends back is given
by the test: bytes (the same reply for every request), a list (the i-th request,
counted across connections, gets the i-th reply; the last one repeats), or a
callable(request) returning bytes or a Reply.
"""
import socket
import ssl
import threading
import time

from .httpmsg import (BadMessage, Eof, Headers, Reader, build_response, linger_reset,
                      parse_fields, read_chunked)


class Reply:
    """What an origin sends for one request.

    parts: bytes, or a list of bytes, floats (a float sleeps that many seconds) and callables
    (called with no argument, e.g. a threading.Event's wait, so a test decides when the next
    part goes).
    close: FIN after the parts. reset: RST (SO_LINGER 0) after the parts.
    hang: after the parts, send nothing more; wait until the peer closes or the origin stops.
    """

    def __init__(self, parts=b"", close=False, reset=False, hang=False, delay=0.0):
        if isinstance(parts, (bytes, bytearray)):
            parts = [bytes(parts)]
        if delay:
            parts = [float(delay)] + list(parts)
        self.parts = list(parts)
        self.close = close
        self.reset = reset
        self.hang = hang


def drop():
    """Closes the connection without sending a response."""
    return Reply(b"", close=True)


class Request:
    def __init__(self):
        self.method = self.target = self.version = None
        self.headers = Headers()
        self.head = b""
        self.body = b""
        self.body_raw = b""
        self.trailers = Headers()
        self.framing = None  # "cl", "chunked" or None
        self.chunk_extensions = []
        self.conn = None  # index of the origin connection
        self.seq = None  # index of the request on its connection
        self.index = None  # index across the origin
        self.sni = None
        self.tls_version = None

    @property
    def raw(self):
        return self.head + self.body_raw

    @property
    def request_line(self):
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def __repr__(self):
        return "<Request %s %s %s %r>" % (self.method, self.target, self.version,
                                          self.headers.items)


class OriginConn:
    def __init__(self, index, sock, peer):
        self.index = index
        self.sock = sock
        self.peer = peer
        self.raw = bytearray()
        self.requests = []
        self.closed = threading.Event()
        self.error = None
        self.sni = None
        self.tls_version = None


class Origin:
    def __init__(self, replies=None, tls_context=None, expect_continue=True, name="origin"):
        self.replies = replies if replies is not None else build_response(200, b"ok\n")
        self.tls_context = tls_context
        self.expect_continue = expect_continue
        self.name = name
        self.conns = []
        self.requests = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        if tls_context is not None:
            tls_context.sni_callback = self._sni_cb
        t = threading.Thread(target=self._accept_loop, name="%s-accept" % name, daemon=True)
        t.start()
        self.threads.append(t)

    # ------------------------------------------------------------ public
    @property
    def addr(self):
        return "127.0.0.1"

    def authority(self, host="127.0.0.1"):
        return "%s:%d" % (host, self.port)

    def url(self, path="/", host="127.0.0.1"):
        scheme = "https" if self.tls_context is not None else "http"
        return "%s://%s:%d%s" % (scheme, host, self.port, path)

    @property
    def conn_count(self):
        with self.lock:
            return len(self.conns)

    def total_bytes(self):
        with self.lock:
            return sum(len(c.raw) for c in self.conns)

    def wait_requests(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError("%s: %d requests after %.1fs, expected %d" %
                             (self.name, len(self.requests), timeout, n))

    def wait_conns(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.conn_count >= n:
                return
            time.sleep(0.01)
        raise AssertionError("%s: %d connections, expected %d" % (self.name, self.conn_count, n))

    def quiet(self, grace=0.3):
        """Lets in-flight bytes arrive before a test asserts that nothing did."""
        time.sleep(grace)

    def assert_untouched(self, grace=0.3):
        self.quiet(grace)
        with self.lock:
            raws = [bytes(c.raw) for c in self.conns]
        assert sum(len(r) for r in raws) == 0, \
            "%s received bytes: %r" % (self.name, [r[:300] for r in raws])

    def stop(self):
        self.stopping.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.sock.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)

    # ------------------------------------------------------------ internals
    def _sni_cb(self, sslobj, name, ctx):
        sslobj._vd_sni = name

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                s, peer = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                c = OriginConn(len(self.conns), s, peer)
                self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), name="%s-conn%d" % (self.name, c.index),
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def _pick(self, req):
        r = self.replies
        if callable(r):
            r = r(req)
        elif isinstance(r, list):
            r = r[min(req.index, len(r) - 1)]
        if isinstance(r, (bytes, bytearray)):
            r = Reply(bytes(r))
        return r

    def _sleep(self, secs):
        return self.stopping.wait(secs)

    def _serve(self, c):
        s = c.sock
        try:
            s.settimeout(0.2)
        except OSError:
            return  # stop() closed the connection before its thread ran
        try:
            if self.tls_context is not None:
                s.settimeout(10)
                s = self.tls_context.wrap_socket(s, server_side=True)
                c.sock = s
                c.sni = getattr(s, "_vd_sni", None)
                c.tls_version = s.version()
                s.settimeout(0.2)
            reader = Reader(s, c.raw)
            seq = 0
            while not self.stopping.is_set():
                req = self._read_request(reader, c)
                if req is None:
                    break
                req.conn, req.seq, req.sni, req.tls_version = c.index, seq, c.sni, c.tls_version
                seq += 1
                with self.lock:
                    req.index = len(self.requests)
                    self.requests.append(req)
                    c.requests.append(req)
                reply = self._pick(req)
                for p in reply.parts:
                    if callable(p):
                        p()
                    elif isinstance(p, float) or isinstance(p, int) and not isinstance(p, bool):
                        if self._sleep(float(p)):
                            return
                    elif p:
                        # The 0.2 s poll timeout is for reads; a proxy that reads slowly
                        # (back-pressure, valgrind) must not make sendall give up.
                        s.settimeout(10)
                        s.sendall(p)
                        s.settimeout(0.2)
                if reply.reset:
                    linger_reset(s)
                    return
                if reply.close:
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    # Drain what the peer still sends so the close is a FIN, not an RST.
                    self._drain(s, reader, 1.0)
                    return
                if reply.hang:
                    self._drain(s, reader, None)
                    return
        except (Eof, ConnectionError, BrokenPipeError):
            pass
        except (BadMessage, ssl.SSLError, OSError, ValueError) as e:
            c.error = e
        finally:
            c.closed.set()
            try:
                s.close()
            except OSError:
                pass

    def _drain(self, s, reader, limit):
        deadline = None if limit is None else time.monotonic() + limit
        while not self.stopping.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return
            try:
                reader.fill()
            except socket.timeout:
                continue
            except (Eof, OSError, ssl.SSLError):
                return
            reader.buf.clear()

    def _fill_wait(self, reader):
        """fill() that tolerates the 0.2 s poll timeout; False on stop."""
        while True:
            if self.stopping.is_set():
                return False
            try:
                reader.fill()
                return True
            except socket.timeout:
                continue

    def _read_request(self, reader, c):
        # Head: wait for CRLFCRLF, polling so stop() is honoured.
        while True:
            i = reader.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = reader.take(i + 4)
                break
            try:
                if not self._fill_wait(reader):
                    return None
            except Eof as e:
                if e.partial:
                    c.error = BadMessage("EOF inside a request head")
                return None
        req = Request()
        req.head = head
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise BadMessage("bad request line %r" % lines[0])
        req.method, req.target, req.version = (p.decode("latin-1") for p in parts)
        req.headers = Headers(parse_fields(lines[1:]))
        te = req.headers.tokens("transfer-encoding")
        if (self.expect_continue and "100-continue" in req.headers.tokens("expect")
                and (te or req.headers.get("content-length", "0") != "0")):
            reader.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        reader.sock.settimeout(10)
        try:
            if te:
                req.framing = "chunked"
                body, trailers, raw, exts = read_chunked(reader)
                req.body, req.trailers, req.body_raw, req.chunk_extensions = body, trailers, raw, exts
            elif req.headers.has("content-length"):
                req.framing = "cl"
                n = int(req.headers.get("content-length"))
                req.body = req.body_raw = reader.read_exact(n)
        finally:
            reader.sock.settimeout(0.2)
        return req


class Blackhole:
    """A TCP port whose accept queue is full, so connect() to it hangs (SYNs are dropped).

    Made with listen(0) and a few connections that are never accepted; used for the
    upstream connect timeout."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fillers = []
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except (BlockingIOError, OSError):
                pass
            self.fillers.append(s)
        # Confirm that a further connect really hangs.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", self.port))
            self.works = False
        except socket.timeout:
            self.works = True
        except OSError:
            self.works = False
        finally:
            probe.close()

    def stop(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()


def closed_port():
    """A 127.0.0.1 port with nothing listening (bound, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def server_tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
