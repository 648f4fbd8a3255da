# SPDX-License-Identifier: MIT
"""TLS on both sides: SNI certificate choice, versions, resumption, ALPN, curl end to end,
upstream verification, and the forward HTTP-to-HTTPS gateway."""
import ssl
import subprocess

import pytest

from vdtest.client import client_tls_context
from vdtest.httpmsg import build_response

pytestmark = pytest.mark.feature("tls")


def tls_listener(pki, mode="reverse", min_version=None):
    lst = {"address": "127.0.0.1:0", "mode": mode,
           "tls": {"certificates": [{"cert": pki.server.cert, "key": pki.server.key},
                                    {"cert": pki.wildcard.cert, "key": pki.wildcard.key}]}}
    if min_version:
        lst["tls"]["min_version"] = min_version
    return lst


@pytest.fixture
def tls_vd(viaduct, pki, origin):
    return viaduct({"listeners": [tls_listener(pki)],
                    "routes": [{"upstream": "http://127.0.0.1:%d" % origin.port,
                                "forwarded": "x-forwarded"}]})


def san_dns(cert):
    return sorted(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")


def subject_cn(cert):
    return [v for rdn in cert["subject"] for k, v in rdn if k == "commonName"]


def test_sni_selects_certificate(tls_vd, pki):
    ctx = client_tls_context(pki.ca)
    with tls_vd.connect(tls=ctx, server_hostname="localhost") as c:
        cert = c.sock.getpeercert()
        assert subject_cn(cert) == ["localhost"]
        assert c.exchange("GET", "/", host="localhost").status == 200
    with tls_vd.connect(tls=ctx, server_hostname="api.example.test") as c:
        cert = c.sock.getpeercert()
        assert san_dns(cert) == ["*.example.test"]
        assert c.exchange("GET", "/", host="api.example.test").status == 200


def test_no_sni_gets_first_certificate(tls_vd, pki):
    ctx = client_tls_context(pki.ca)
    ctx.check_hostname = False
    with tls_vd.connect(tls=ctx, server_hostname=None) as c:
        assert subject_cn(c.sock.getpeercert()) == ["localhost"]


def test_unknown_sni_gets_first_certificate(tls_vd, pki):
    ctx = client_tls_context(pki.ca)
    ctx.check_hostname = False
    with tls_vd.connect(tls=ctx, server_hostname="unknown.test") as c:
        assert subject_cn(c.sock.getpeercert()) == ["localhost"]


@pytest.mark.parametrize("version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                          (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls_versions(tls_vd, pki, origin, version, name):
    ctx = client_tls_context(pki.ca, min_version=version, max_version=version)
    with tls_vd.connect(tls=ctx, server_hostname="localhost") as c:
        assert c.sock.version() == name
        r = c.exchange("GET", "/v", host="localhost")
        assert r.status == 200 and r.body == b"ok\n"
    (req,) = origin.wait_requests(1)
    assert req.headers.all("x-forwarded-proto") == ["https"]


def test_min_version_1_3_refuses_1_2(viaduct, pki, origin):
    vd = viaduct({"listeners": [tls_listener(pki, min_version="1.3")],
                  "routes": [{"upstream": "http://127.0.0.1:%d" % origin.port}]})
    ctx = client_tls_context(pki.ca, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        vd.connect(tls=ctx, server_hostname="localhost")
    ctx13 = client_tls_context(pki.ca)
    with vd.connect(tls=ctx13, server_hostname="localhost") as c:
        assert c.sock.version() == "TLSv1.3"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_session_resumption(tls_vd, pki, version):
    ctx = client_tls_context(pki.ca, min_version=version, max_version=version)
    with tls_vd.connect(tls=ctx, server_hostname="localhost") as c:
        # Read a response first: a TLS 1.3 ticket arrives after the handshake.
        assert c.exchange("GET", "/", host="localhost").status == 200
        session = c.sock.session
        assert not c.sock.session_reused
    assert session is not None
    with tls_vd.connect(tls=ctx, server_hostname="localhost", session=session) as c:
        assert c.exchange("GET", "/", host="localhost").status == 200
        assert c.sock.session_reused


def test_alpn_http11(tls_vd, pki):
    ctx = client_tls_context(pki.ca, alpn=["http/1.1"])
    with tls_vd.connect(tls=ctx, server_hostname="localhost") as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1"
        assert c.exchange("GET", "/", host="localhost").status == 200


def test_curl_end_to_end(tls_vd, pki, origin):
    port = tls_vd.port(0)
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--http1.1", "--cacert", pki.ca,
                        "--resolve", "localhost:%d:127.0.0.1" % port,
                        "-o", "-", "-w", "\n%{http_code} %{ssl_verify_result}",
                        "https://localhost:%d/curl?x=1" % port],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n\n200 0"
    (req,) = origin.wait_requests(1)
    assert req.target == "/curl?x=1"
    assert req.headers.all("host") == ["localhost:%d" % port]


def upstream_vd(viaduct, origin, pki, verify=None, ca=True):
    ups = {}
    if ca:
        ups["ca_file"] = pki.ca
    if verify is not None:
        ups["verify"] = verify
    return viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                    "routes": [{"upstream": "https://origin.test:%d" % origin.port}],
                    "upstream": ups})


def test_upstream_verified(viaduct, make_origin, pki):
    o = make_origin(build_response(200, b"verified"), tls="server")
    vd = upstream_vd(viaduct, o, pki)
    with vd.connect() as c:
        r = c.exchange("GET", "/", host="www.example")
    assert r.status == 200 and r.body == b"verified"
    (req,) = o.wait_requests(1)
    assert req.sni == "origin.test"


@pytest.mark.parametrize("leaf,words", [
    ("selfsigned", ["certificate"]),
    ("expired", ["certificate", "expired"]),
    ("wrongname", ["certificate", "hostname mismatch"]),
])
def test_upstream_bad_certificate_is_502(viaduct, make_origin, pki, leaf, words):
    o = make_origin(build_response(200, b"should not be seen"), tls=leaf)
    vd = upstream_vd(viaduct, o, pki)
    with vd.connect() as c:
        r = c.exchange("GET", "/", host="www.example")
    assert r.status == 502, r
    for w in words:
        assert w in r.text().lower(), r.text()
    assert o.requests == []


@pytest.mark.parametrize("leaf", ["selfsigned", "expired", "wrongname"])
def test_upstream_verify_false_accepts(viaduct, make_origin, pki, leaf):
    o = make_origin(build_response(200, b"unverified"), tls=leaf)
    vd = upstream_vd(viaduct, o, pki, verify=False)
    with vd.connect() as c:
        r = c.exchange("GET", "/", host="www.example")
    assert r.status == 200 and r.body == b"unverified"


def test_upstream_sni_override(viaduct, make_origin, pki):
    o = make_origin(build_response(200, b"sni"), tls="wildcard")
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                  "routes": [{"upstream": "https://origin.test:%d" % o.port,
                              "sni": "api.example.test"}],
                  "upstream": {"ca_file": pki.ca, "verify": False}})
    with vd.connect() as c:
        assert c.exchange("GET", "/", host="www.example").body == b"sni"
    (req,) = o.wait_requests(1)
    assert req.sni == "api.example.test"


def test_forward_gateway_to_https(viaduct, make_origin, pki):
    """A plain-HTTP client asks the forward proxy for an https:// URI; the proxy fetches it
    over TLS (verified against upstream.ca_file)."""
    o = make_origin(build_response(200, b"over tls"), tls="server")
    vd = viaduct({"upstream": {"ca_file": pki.ca}})
    with vd.connect() as c:
        r = c.exchange("GET", "https://origin.test:%d/g?x" % o.port)
    assert r.status == 200 and r.body == b"over tls"
    (req,) = o.wait_requests(1)
    assert req.tls_version in ("TLSv1.2", "TLSv1.3")
    assert req.sni == "origin.test"
    assert req.request_line == b"GET /g?x HTTP/1.1"
    assert req.headers.all("host") == ["origin.test:%d" % o.port]


def test_plaintext_on_tls_port_does_not_reach_origin(tls_vd, origin):
    with tls_vd.connect() as c:
        try:
            c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        except OSError:
            pass
        c.wait_closed()
    origin.assert_untouched(grace=0.1)
