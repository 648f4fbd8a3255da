# SPDX-License-Identifier: MIT
"""Proxy authentication (RFC 9110 §11.7.1, RFC 7617 Basic) against htpasswd files made by the
real tools (htpasswd -B from apache2-utils, openssl passwd -6): 407 with the challenge for every
method including CONNECT, credentials never forwarded, users in rules and in the access log,
and the failure throttle in both modes."""
import base64
import socket
import subprocess
import time

import pytest

from vdtest.asserts import assert_proxy_error
from vdtest.tcp import TcpServer, record

REALM = "viaduct test"


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    path = d / "htpasswd"
    subprocess.run(["htpasswd", "-B", "-b", "-c", str(path), "alice", "wonder land"], check=True,
                   capture_output=True)
    sha = subprocess.run(["openssl", "passwd", "-6", "s3cret:with:colons"], check=True,
                         capture_output=True).stdout.decode().strip()
    with open(path, "a") as f:
        f.write("# a comment\n\nbob:%s\n" % sha)
    return str(path)


def auth_conf(htpasswd, **kw):
    a = {"htpasswd": htpasswd, "realm": REALM}
    a.update(kw)
    return {"auth": a, "connect": {"ports": ["1024-65535"]}}


@pytest.fixture
def avd(viaduct, htpasswd):
    return viaduct(auth_conf(htpasswd))


def assert_challenge(resp):
    assert_proxy_error(resp, 407, "proxy authentication required")
    assert resp.header("proxy-authenticate") == 'Basic realm="%s", charset="UTF-8"' % REALM


def test_missing_credentials_407(avd, origin):
    c = avd.connect()
    assert_challenge(c.exchange("GET", origin.url("/")))
    # The connection stays usable: the client retries with credentials on it.
    resp = c.exchange("GET", origin.url("/"), headers=[("Proxy-Authorization",
                                                        basic("alice", "wonder land"))])
    assert resp.status == 200
    origin.wait_requests(1)


def test_connect_needs_credentials_too(avd):
    srv = TcpServer(record)
    try:
        c = avd.connect()
        assert_challenge(c.exchange("CONNECT", "127.0.0.1:%d" % srv.port))
        srv.assert_untouched()
    finally:
        srv.stop()


@pytest.mark.parametrize("user,password", [("alice", "wonder land"),
                                           ("bob", "s3cret:with:colons")])
def test_bcrypt_and_sha512crypt_users(avd, origin, user, password):
    c = avd.connect()
    resp = c.exchange("GET", origin.url("/x"), headers=[("Proxy-Authorization",
                                                         basic(user, password))])
    assert resp.status == 200
    req = origin.wait_requests(1)[0]
    assert req.header("proxy-authorization") is None
    avd.wait_for_log(r'"GET %s HTTP/1\.1" 200 .* user=%s' % (origin.url("/x"), user), access=True)


@pytest.mark.parametrize("value", [
    basic("alice", "wrong"), basic("mallory", "wonder land"), "Basic !!!notbase64",
    "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer abc", "Basic",
])
def test_wrong_or_malformed_credentials_407(avd, origin, value):
    c = avd.connect()
    resp = c.exchange("GET", origin.url("/"), headers=[("Proxy-Authorization", value)])
    assert resp.status == 407
    assert resp.header("proxy-authenticate").startswith("Basic realm=")
    origin.assert_untouched()


def test_curl_with_proxy_user(avd, origin):
    r = subprocess.run(["curl", "-sS", "-x", "http://" + avd.authority(), "-U", "alice:wonder land",
                        origin.url("/curl")], capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ok\n"
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x",
                        "http://" + avd.authority(), origin.url("/curl")],
                       capture_output=True, timeout=20)
    assert r.stdout == b"407"


def test_users_in_rules(viaduct, htpasswd, origin):
    vd = viaduct(dict(auth_conf(htpasswd), access=[
        {"name": "bob-no-connect", "deny": {"users": ["bob"], "methods": ["CONNECT"]}},
        {"name": "staff", "allow": {"users": ["alice", "bob"]}},
        {"deny": "all"}]))
    c = vd.connect()
    resp = c.exchange("CONNECT", "127.0.0.1:%d" % origin.port,
                      headers=[("Proxy-Authorization", basic("bob", "s3cret:with:colons"))])
    assert_proxy_error(resp, 403, 'access rule "bob-no-connect"')
    c = vd.connect()
    resp = c.exchange("GET", origin.url("/"), headers=[("Proxy-Authorization",
                                                        basic("bob", "s3cret:with:colons"))])
    assert resp.status == 200


def test_refuse_mode_429_after_failures(viaduct, htpasswd, origin):
    vd = viaduct(auth_conf(htpasswd, fail_limit=3, fail_window="60s", fail_mode="refuse"))
    c = vd.connect()
    for _ in range(3):
        resp = c.exchange("GET", origin.url("/"), headers=[("Proxy-Authorization",
                                                            basic("alice", "guess"))])
        assert resp.status == 407
    c = vd.connect()
    resp = c.exchange("GET", origin.url("/"), headers=[("Proxy-Authorization",
                                                        basic("alice", "wonder land"))])
    assert_proxy_error(resp, 429, "too many failed proxy authentication attempts")
    assert 0 < int(resp.header("retry-after")) <= 60
    origin.assert_untouched()


def test_delay_mode_slows_failures(viaduct, htpasswd, origin):
    vd = viaduct(auth_conf(htpasswd, fail_limit=2, fail_window="60s", fail_mode="delay",
                           fail_delay="800ms"))
    c = vd.connect()
    for _ in range(2):
        t0 = time.monotonic()
        assert c.exchange("GET", origin.url("/"), headers=[
            ("Proxy-Authorization", basic("alice", "guess"))]).status == 407
    # Over the limit now: the next failure is answered only after the delay.
    t0 = time.monotonic()
    resp = c.exchange("GET", origin.url("/"), headers=[("Proxy-Authorization",
                                                        basic("alice", "guess"))])
    assert resp.status == 407
    assert time.monotonic() - t0 >= 0.7
    # The right password still works at once.
    resp = c.exchange("GET", origin.url("/"), headers=[("Proxy-Authorization",
                                                        basic("alice", "wonder land"))])
    assert resp.status == 200


def test_client_gone_while_verifying(avd, origin):
    """The hash runs on the thread pool; a client that leaves meanwhile must not crash it."""
    for i in range(5):
        s = socket.create_connection((avd.addr(), avd.port()))
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n"
                  % (origin.url("/").encode(), basic("alice", "try%d" % i).encode()))
        s.close()
    c = avd.connect()
    resp = c.exchange("GET", origin.url("/"), headers=[("Proxy-Authorization",
                                                        basic("alice", "wonder land"))])
    assert resp.status == 200


def test_reverse_listener_not_challenged(viaduct, htpasswd, origin):
    vd = viaduct(dict(auth_conf(htpasswd),
                      listeners=[{"address": "127.0.0.1:0", "mode": "reverse"}],
                      routes=[{"upstream": "http://127.0.0.1:%d" % origin.port}]))
    c = vd.connect()
    assert c.exchange("GET", "/", host="localhost").status == 200


def test_bad_htpasswd_is_config_error(viaduct_bin, tmp_path):
    from vdtest.proc import run_bin
    bad = tmp_path / "htpasswd"
    bad.write_text("carol:$apr1$abc$defghijklmnopqrstuv/\n")
    conf = tmp_path / "v.yaml"
    conf.write_text("auth:\n  htpasswd: %s\n" % bad)
    r = run_bin(viaduct_bin, ["-t", "-c", str(conf)])
    assert r.returncode != 0
    assert "%s:1" % bad in r.stderr
    assert "carol" in r.stderr
