# SPDX-License-Identifier: MIT
"""Assertions shared by the test files."""
import re

REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
           413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 502: "Bad Gateway", 504: "Gateway Timeout",
           505: "HTTP Version Not Supported"}

# RFC 9110 §7.6.1 and the brief: fields a proxy must not forward.
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "transfer-encoding",
              "upgrade", "proxy-authorization", "proxy-authenticate")


def assert_proxy_error(resp, status, *needles):
    """A proxy-generated error: a complete HTTP/1.1 response, Content-Type exactly
    `text/plain; charset=utf-8`, a correct Content-Length, and a short body that names
    the status (its code or its reason phrase) and contains every @needles (case-insensitive)."""
    assert resp.version == "HTTP/1.1", resp
    assert resp.status == status, resp
    assert resp.header("content-type") == "text/plain; charset=utf-8", resp
    cl = resp.header("content-length")
    assert cl is not None and cl.isdigit() and int(cl) == len(resp.body), resp
    assert not resp.headers.has("transfer-encoding"), resp
    body = resp.text()
    assert 0 < len(resp.body) <= 1024, "error body should be short: %r" % body
    reason = REASONS.get(status, "")
    assert str(status) in body or (reason and reason.lower() in body.lower()), \
        "body does not name the status %d: %r" % (status, body)
    for n in needles:
        assert n.lower() in body.lower(), "body lacks %r: %r" % (n, body)


def assert_no_hop_by_hop(headers, extra=()):
    names = headers.names()
    for h in HOP_BY_HOP + tuple(x.lower() for x in extra):
        assert h not in names, "hop-by-hop field %s was forwarded: %r" % (h, headers.items)


def assert_one_framing(req):
    """Exactly one framing field at the origin: Content-Length or Transfer-Encoding: chunked."""
    has_cl = req.headers.has("content-length")
    has_te = req.headers.has("transfer-encoding")
    assert has_cl != has_te, "want exactly one framing field: %r" % req.headers.items
    if has_te:
        assert req.headers.tokens("transfer-encoding") == ["chunked"], req.headers.items
        assert req.framing == "chunked"
    else:
        assert len(req.headers.all("content-length")) == 1
        assert int(req.header("content-length")) == len(req.body)


def end_to_end(headers, drop=("host", "via", "content-length", "transfer-encoding")):
    """(lowercase name, value) pairs of @headers without the fields the proxy manages."""
    return [(k.lower(), v) for k, v in headers if k.lower() not in drop]


ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
