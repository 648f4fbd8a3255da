# SPDX-License-Identifier: MIT
"""HTTP/1 message reading and building shared by the test client and the origins.

The reader is deliberately simple and explicit: it frames messages by the rules of
RFC 9112 §6.3 so that a test sees exactly where the proxy put message boundaries.
"""
import re
import socket
import ssl

DEFAULT_TIMEOUT = 10.0


class Eof(Exception):
    """The peer closed (or reset) the connection; .partial holds unconsumed bytes."""

    def __init__(self, partial=b"", reset=False):
        super().__init__("connection closed%s with %d unparsed bytes" %
                         (" by reset" if reset else "", len(partial)))
        self.partial = bytes(partial)
        self.reset = reset


class BadMessage(Exception):
    pass


class IncompleteResponse(Exception):
    """The connection ended before the response's declared end."""

    def __init__(self, response, why):
        super().__init__("incomplete response (%s): status %s, %d body bytes so far" %
                         (why, response.status, len(response.body)))
        self.response = response
        self.why = why


class Reader:
    """Buffered reads from a socket. Every received byte is appended to @record."""

    def __init__(self, sock, record=None):
        self.sock = sock
        self.buf = bytearray()
        self.record = record
        self.eof = False
        self.reset = False

    def fill(self):
        if self.eof:
            raise Eof(self.buf, self.reset)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
            self.reset = True
        except ssl.SSLError as e:
            # An abrupt TLS close (no close_notify) reads as EOF for framing purposes.
            if "EOF" in str(e) or "UNEXPECTED_EOF" in str(e):
                data = b""
            else:
                raise
        if self.record is not None and data:
            self.record += data
        if not data:
            self.eof = True
            raise Eof(self.buf, self.reset)
        self.buf += data

    def take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_line(self, lenient_lf=False, limit=1 << 20):
        """Returns one line without its CRLF (or LF when @lenient_lf)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = self.take(i + 1)
                if line.endswith(b"\r\n"):
                    return line[:-2]
                if lenient_lf:
                    return line[:-1]
                raise BadMessage("bare LF line ending: %r" % line[:80])
            if len(self.buf) > limit:
                raise BadMessage("line too long")
            self.fill()

    def read_head(self, lenient_lf=False):
        """Reads up to and including the empty line; returns the raw head bytes."""
        while True:
            i = self.buf.find(b"\r\n\r\n")
            j = self.buf.find(b"\n\n") if lenient_lf else -1
            if i >= 0 and (j < 0 or i < j):
                return self.take(i + 4)
            if j >= 0:
                return self.take(j + 2)
            self.fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        return self.take(n)

    def read_available(self, n):
        """Like read_exact, but on EOF returns what there was (raises nothing)."""
        try:
            return self.read_exact(n)
        except Eof:
            return self.take(len(self.buf))

    def read_until_close(self):
        while True:
            try:
                self.fill()
            except Eof:
                return self.take(len(self.buf))


def parse_fields(lines):
    out = []
    for ln in lines:
        if b":" not in ln:
            raise BadMessage("field line without colon: %r" % ln[:80])
        name, _, value = ln.partition(b":")
        out.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return out


class Headers:
    """An ordered list of (name, value) with case-insensitive lookups."""

    def __init__(self, items=()):
        self.items = list(items)

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)

    def __repr__(self):
        return "Headers(%r)" % (self.items,)

    def all(self, name):
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def get(self, name, default=None):
        """The single value of @name; asserts that the field appears at most once."""
        vals = self.all(name)
        assert len(vals) <= 1, "field %s appears %d times: %r" % (name, len(vals), vals)
        return vals[0] if vals else default

    def has(self, name):
        return bool(self.all(name))

    def names(self):
        return [k.lower() for k, _ in self.items]

    def list(self, name):
        """All values of a comma-separated list field, combined (RFC 9110 §5.3), trimmed."""
        return split_list(", ".join(self.all(name)))

    def tokens(self, name):
        return [t.lower() for t in self.list(name)]


def split_list(value):
    """Splits a comma-separated field value, honouring quoted strings."""
    out, cur, inq, esc = [], [], False, False
    for ch in value:
        if esc:
            cur.append(ch)
            esc = False
        elif inq and ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == '"':
            cur.append(ch)
            inq = not inq
        elif ch == "," and not inq:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [x for x in out if x]


def read_chunked(reader, lenient_lf=False):
    """Decodes a chunked body (RFC 9112 §7.1). Returns (body, trailers, raw, extensions)."""
    raw = bytearray()
    body = bytearray()
    exts = []
    while True:
        line = reader.read_line(lenient_lf)
        raw += line + b"\r\n"
        size_s, _, ext = line.partition(b";")
        size_s = size_s.strip(b" \t")
        if not re.fullmatch(rb"[0-9A-Fa-f]+", size_s):
            raise BadMessage("bad chunk size line %r" % line[:80])
        size = int(size_s, 16)
        if ext:
            exts.append(ext.decode("latin-1"))
        if size == 0:
            break
        data = reader.read_exact(size)
        raw += data
        body += data
        crlf = reader.read_exact(2)
        raw += crlf
        if crlf != b"\r\n":
            raise BadMessage("chunk data not followed by CRLF")
    trailer_lines = []
    while True:
        line = reader.read_line(lenient_lf)
        raw += line + b"\r\n"
        if line == b"":
            break
        trailer_lines.append(line)
    return bytes(body), Headers(parse_fields(trailer_lines)), bytes(raw), exts


def framing_of(headers):
    """'chunked', 'cl', 'te-other' or None for a message's framing header fields."""
    if headers.has("transfer-encoding"):
        codings = headers.tokens("transfer-encoding")
        return "chunked" if codings and codings[-1] == "chunked" else "te-other"
    if headers.has("content-length"):
        return "cl"
    return None


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = Headers()
        self.body = b""
        self.trailers = Headers()
        self.interim = []  # list of (status, reason, Headers) for 1xx responses
        self.raw = b""  # every byte of this response, interim ones included
        self.framing = None  # "chunked", "cl", "close", "none"
        self.chunk_extensions = []

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %s %s %s %r body=%r>" % (self.version, self.status, self.reason,
                                                   self.headers.items, self.body[:200])


def parse_status_line(line):
    m = re.fullmatch(rb"(HTTP/\d\.\d) (\d{3}) ?(.*)", line)
    if not m:
        raise BadMessage("bad status line %r" % line[:100])
    return m.group(1).decode(), int(m.group(2)), m.group(3).decode("latin-1")


def read_response(reader, method="GET", stop_at_interim=False):
    """Reads one response (and any 1xx before it) framed per RFC 9112 §6.3.

    Raises Eof when the connection ends before any byte of a status line, and
    IncompleteResponse when it ends inside the message.
    """
    resp = Response()
    raw = bytearray()
    while True:
        try:
            head = reader.read_head()
        except Eof as e:
            if raw or e.partial:
                resp.raw = bytes(raw) + e.partial
                raise IncompleteResponse(resp, "closed inside the head") from None
            raise
        raw += head
        lines = head[:-4].split(b"\r\n")
        version, status, reason = parse_status_line(lines[0])
        headers = Headers(parse_fields(lines[1:]))
        if 100 <= status < 200 and status != 101:
            resp.interim.append((status, reason, headers))
            if stop_at_interim:
                resp.version, resp.status, resp.reason, resp.headers = version, status, reason, headers
                resp.raw = bytes(raw)
                return resp
            continue
        break
    resp.version, resp.status, resp.reason, resp.headers = version, status, reason, headers
    fr = framing_of(headers)
    try:
        if method.upper() == "HEAD" or status in (204, 304) or status == 101:
            resp.framing = "none"
        elif method.upper() == "CONNECT" and 200 <= status < 300:
            resp.framing = "none"
        elif fr == "chunked":
            resp.framing = "chunked"
            body, trailers, braw, exts = read_chunked(reader)
            raw += braw
            resp.body, resp.trailers, resp.chunk_extensions = body, trailers, exts
        elif fr == "te-other":
            resp.framing = "close"
            resp.body = reader.read_until_close()
            raw += resp.body
        elif fr == "cl":
            cls = set(headers.list("content-length"))
            if len(cls) != 1 or not re.fullmatch(r"\d+", next(iter(cls))):
                raise BadMessage("bad Content-Length %r" % headers.all("content-length"))
            n = int(next(iter(cls)))
            resp.framing = "cl"
            resp.body = b""
            got = reader.read_available(n)
            resp.body = got
            raw += got
            if len(got) < n:
                resp.raw = bytes(raw)
                raise IncompleteResponse(resp, "closed after %d of %d body bytes" % (len(got), n))
        else:
            resp.framing = "close"
            resp.body = reader.read_until_close()
            raw += resp.body
    except Eof as e:
        resp.raw = bytes(raw) + e.partial
        raise IncompleteResponse(resp, "closed inside a chunked body") from None
    resp.raw = bytes(raw)
    return resp


# ---------------------------------------------------------------- builders

def _hdr_items(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def _b(x):
    return x if isinstance(x, bytes) else str(x).encode("latin-1")


def authority_of(target):
    m = re.match(r"(?i)https?://([^/?#]*)", target)
    return m.group(1) if m else None


def build_request(method, target, headers=None, body=None, version="1.1", host=True):
    """Exact request bytes. @host True: add Host from an absolute-form target (or use the
    one in @headers); a str: use it; None/False: send no Host. @body bytes gets a
    Content-Length unless @headers already carries a framing field."""
    items = _hdr_items(headers)
    names = [k.lower() for k, _ in items]
    out = bytearray(b"%s %s HTTP/%s\r\n" % (_b(method), _b(target), _b(version)))
    if host is True and "host" not in names:
        a = authority_of(target)
        if a is None and _b(method) == b"CONNECT":
            a = target  # authority-form: Host is the target itself (RFC 9112 §3.2.3)
        if a is not None:
            out += b"Host: %s\r\n" % _b(a)
    elif isinstance(host, str):
        out += b"Host: %s\r\n" % _b(host)
    for k, v in items:
        out += b"%s: %s\r\n" % (_b(k), _b(v))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        out += b"Content-Length: %d\r\n" % len(body)
    out += b"\r\n"
    if body is not None:
        out += body
    return bytes(out)


def build_response(status=200, body=b"", headers=None, reason=None, version="1.1", length=True):
    """Exact response bytes; adds Content-Length unless @length is False or @headers frames."""
    reasons = {100: "Continue", 103: "Early Hints", 200: "OK", 201: "Created", 204: "No Content",
               301: "Moved Permanently", 304: "Not Modified", 400: "Bad Request",
               404: "Not Found", 500: "Internal Server Error", 502: "Bad Gateway"}
    items = _hdr_items(headers)
    names = [k.lower() for k, _ in items]
    if reason is None:
        reason = reasons.get(status, "Status")
    out = bytearray(b"HTTP/%s %d %s\r\n" % (_b(version), status, _b(reason)))
    for k, v in items:
        out += b"%s: %s\r\n" % (_b(k), _b(v))
    if length and "content-length" not in names and "transfer-encoding" not in names:
        out += b"Content-Length: %d\r\n" % len(body)
    out += b"\r\n" + body
    return bytes(out)


def chunked_body(parts, trailers=None, ext=None):
    """Encodes @parts (list of bytes) as chunked, with optional trailer fields."""
    out = bytearray()
    for p in parts:
        if not p:
            continue
        out += b"%x" % len(p)
        if ext:
            out += b";" + _b(ext)
        out += b"\r\n" + p + b"\r\n"
    out += b"0\r\n"
    for k, v in _hdr_items(trailers):
        out += b"%s: %s\r\n" % (_b(k), _b(v))
    out += b"\r\n"
    return bytes(out)


def via_list(headers):
    """The Via field's members (RFC 9110 §7.6.3), in order, across all Via field lines."""
    return headers.list("via")


TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_forwarded(value):
    """Strict RFC 7239 §4 parser: list of dicts {param(lowercase): value}. Values must be a
    token or a quoted-string; anything else raises BadMessage."""
    elems = []
    for elem in split_list(value):
        d = {}
        for pair in _split_semis(elem):
            name, eq, val = pair.partition("=")
            if not eq or not TCHAR.fullmatch(name.strip()):
                raise BadMessage("bad forwarded-pair %r" % pair)
            val = val.strip()
            if val.startswith('"'):
                if len(val) < 2 or not val.endswith('"'):
                    raise BadMessage("bad quoted-string %r" % val)
                val = re.sub(r"\\(.)", r"\1", val[1:-1])
            elif not TCHAR.fullmatch(val):
                raise BadMessage("forwarded value %r must be a token or a quoted-string" % val)
            d[name.strip().lower()] = val
        elems.append(d)
    return elems


def _split_semis(s):
    out, cur, inq = [], [], False
    for ch in s:
        if ch == '"':
            inq = not inq
        if ch == ";" and not inq:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [x for x in out if x]


def set_timeout(sock, t=DEFAULT_TIMEOUT):
    sock.settimeout(t)
    return sock


def linger_reset(sock):
    """Closes @sock with an RST (SO_LINGER 0)."""
    import struct
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
