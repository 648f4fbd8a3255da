# SPDX-License-Identifier: MIT
"""Admin listeners: Prometheus metrics in the text exposition format 0.0.4, read back with the
official Python client's parser (python3-prometheus-client), and /healthz. Every counter is
checked against exactly the traffic the test sent: requests by version, responses by class,
bytes both ways, upstream reuse, cache outcomes, tunnels, connections, reloads, workers."""
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from vdtest import yamlconf
from vdtest.httpmsg import build_response
from vdtest.metrics import SCRAPE_REQ, parse, scrape, scrape_raw, val
from vdtest.proc import poll
from vdtest.tcp import TcpServer, echo, recv_exact

ADMIN = {"address": "127.0.0.1:0", "mode": "admin"}
FWD = {"address": "127.0.0.1:0", "mode": "forward"}


def with_admin(viaduct, extra=None, listeners=None):
    conf = {"listeners": listeners or [FWD, ADMIN]}
    if extra:
        conf = yamlconf.merge(conf, extra)
    return viaduct(conf)


def url(origin, path="/"):
    return "http://origin.test:%d%s" % (origin.port, path)


def by_path(req):
    if req.target.startswith("/fail"):
        return build_response(503, b"down\n")
    return build_response(200, b"hello\n")


# ---- the exposition -------------------------------------------------------------------------

def test_metrics_format_and_headers(viaduct):
    vd = with_admin(viaduct, {"workers": 2})
    r = scrape_raw(vd)
    assert r.status == 200
    assert r.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    assert r.header("cache-control") == "no-store"
    assert int(r.header("content-length")) == len(r.body)
    fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    # Every family has HELP and TYPE; the client strips the _total suffix of counters.
    assert fams["viaduct_http_requests"].type == "counter"
    assert fams["viaduct_client_connections"].type == "gauge"
    assert fams["viaduct_http_exchange_duration_seconds"].type == "histogram"
    assert all(f.documentation for f in fams.values())
    m = scrape(vd)
    assert val(m, "viaduct_workers") == 2
    assert val(m, "viaduct_build_info", version=vd_version(vd)) == 1
    assert abs(val(m, "viaduct_start_time_seconds") - time.time()) < 120
    # One series per listener, named by the address it is bound to (the file says port 0).
    assert [k[1] for k in m if k[0] == "viaduct_connections_accepted_total"] == \
        [(("listener", lname(vd, i)),) for i in range(2)]


def lname(vd, i):
    return "127.0.0.1:%d" % vd.port(i)


def vd_version(vd):
    out = subprocess.run([vd.binary, "--version"], capture_output=True, text=True, timeout=20)
    return out.stdout.split()[1]


def test_metrics_count_exchanges_exactly(viaduct, make_origin):
    o = make_origin(by_path)
    vd = with_admin(viaduct, {"cache": {"memory": 0}})
    sent = received = 0
    # Three requests on one keep-alive connection, one of them answered 503 by the origin.
    c = vd.connect(0)
    for p in ("/a", "/fail", "/b"):
        r = c.exchange("GET", url(o, p))
        received += len(r.raw)
    sent += len(c.sent)
    c.close()
    # One HTTP/1.0 request on a connection of its own.
    c = vd.connect(0)
    r = c.exchange("GET", url(o, "/old"), version="1.0")
    assert r.status == 200
    sent += len(c.sent)
    received += len(r.raw)
    c.close()
    # One request the proxy refuses (two different Content-Length values: 400, RFC 9112 §6.3).
    c = vd.connect(0)
    c.send(b"POST %s HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 1\r\n"
           b"Content-Length: 2\r\n\r\nab" % url(o, "/bad").encode())
    r = c.response()
    assert r.status == 400
    sent += len(c.sent) - 2  # the head; its body was never read
    received += len(r.raw)
    c.close()
    # The gauge drops as viaduct sees each close; the scrape's own connection stays open.
    scrapes = 0

    def counted():
        nonlocal scrapes
        scrapes += 1
        return scrape(vd)

    assert poll(lambda: val(counted(), "viaduct_client_connections") == 1)
    m = counted()
    earlier = scrapes - 1  # each scrape is counted once it has ended, so in the next one
    assert val(m, "viaduct_http_requests_total", version="1.1") == 4 + earlier
    assert val(m, "viaduct_http_requests_total", version="1.0") == 1
    assert val(m, "viaduct_http_requests_total", version="2") == 0
    assert val(m, "viaduct_http_responses_total", code="2xx") == 3 + earlier
    assert val(m, "viaduct_http_responses_total", code="4xx") == 1
    assert val(m, "viaduct_http_responses_total", code="5xx") == 1
    assert val(m, "viaduct_http_responses_total", code="1xx") == 0
    assert val(m, "viaduct_http_aborted_total") == 0
    # Four requests reached the origin, over one upstream connection kept in the pool.
    assert val(m, "viaduct_upstream_requests_total", connection="new") == 1
    assert val(m, "viaduct_upstream_requests_total", connection="reused") == 3
    assert val(m, "viaduct_connections_accepted_total", listener=lname(vd, 0)) == 3
    assert val(m, "viaduct_connections_accepted_total", listener=lname(vd, 1)) == scrapes
    assert val(m, "viaduct_connections_refused_total") == 0
    # Bytes: what the proxy's clients sent and received, plus what the earlier scrapes did.
    assert val(m, "viaduct_client_received_bytes_total") == sent + earlier * len(SCRAPE_REQ)
    assert val(m, "viaduct_client_sent_bytes_total") > received
    # Histogram: cumulative, +Inf equals the count, one per exchange.
    buckets = sorted((float(k[1][0][1]), v) for k, v in m.items()
                     if k[0] == "viaduct_http_exchange_duration_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (float("inf"), 5 + earlier)
    assert val(m, "viaduct_http_exchange_duration_seconds_count") == 5 + earlier
    assert 0 < val(m, "viaduct_http_exchange_duration_seconds_sum") < 60


def test_metrics_requests_of_every_client_sum_over_workers(viaduct, make_origin):
    o = make_origin(by_path)
    vd = with_admin(viaduct, {"workers": 2})
    for i in range(20):
        c = vd.connect(0)
        assert c.exchange("GET", url(o, "/w%d" % i)).status == 200
        c.close()
    m = scrape(vd)
    assert val(m, "viaduct_workers") == 2
    assert val(m, "viaduct_http_responses_total", code="2xx") == 20
    assert val(m, "viaduct_connections_accepted_total", listener=lname(vd, 0)) == 20


def test_metrics_http2_requests(viaduct, make_origin):
    o = make_origin(by_path)
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}, ADMIN],
                  "routes": [{"upstream": "http://127.0.0.1:%d" % o.port}]})
    for p in ("/x", "/y"):
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
                              "-w", "%{http_version} %{http_code}",
                              "http://127.0.0.1:%d%s" % (vd.port(0), p)],
                             capture_output=True, timeout=20)
        assert out.stdout == b"2 200", out.stderr
    m = scrape(vd)
    assert val(m, "viaduct_http_requests_total", version="2") == 2
    assert val(m, "viaduct_http_requests_total", version="1.1") == 0


def test_metrics_connect_tunnel(viaduct):
    srv = TcpServer(echo)
    try:
        vd = with_admin(viaduct, {"connect": {"ports": ["1024-65535"]}})
        c = vd.connect(0)
        c.send(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" %
               (srv.port, srv.port))
        r = c.response(method="CONNECT")
        assert r.status == 200
        payload = b"x" * 100000
        c.sock.sendall(payload)
        assert recv_exact(c.sock, len(payload)) == payload
        c.close()
        assert poll(lambda: val(scrape(vd), "viaduct_tunnels_total", type="connect") == 1)
        m = scrape(vd)
        assert val(m, "viaduct_tunnel_bytes_total", direction="up") == len(payload)
        assert val(m, "viaduct_tunnel_bytes_total", direction="down") == len(payload)
        assert val(m, "viaduct_tunnels_total", type="upgrade") == 0
        # A tunnel's lifetime is not an exchange duration: only the scrapes are in it.
        n = val(m, "viaduct_http_requests_total", version="1.1")
        assert val(m, "viaduct_http_exchange_duration_seconds_count") == n - 1
    finally:
        srv.stop()


def test_metrics_cache_outcomes(viaduct, make_origin):
    o = make_origin(build_response(200, b"cached\n", headers=[("Cache-Control", "max-age=60")]))
    vd = with_admin(viaduct, {"cache": {"memory": "16m"}})
    c = vd.connect(0)
    for _ in range(3):
        assert c.exchange("GET", url(o, "/c")).body == b"cached\n"
    c.close()
    m = scrape(vd)
    assert val(m, "viaduct_cache_responses_total", result="uri-miss") == 1
    assert val(m, "viaduct_cache_responses_total", result="hit") == 2
    assert val(m, "viaduct_cache_entries") == 1
    assert val(m, "viaduct_cache_memory_bytes") > len(b"cached\n")
    assert len(o.requests) == 1


def test_metrics_refused_connections(viaduct):
    vd = with_admin(viaduct, {"limits": {"max_connections": 1}})
    hold = vd.connect(0)
    c = vd.connect(0)
    r = c.response()
    assert r.status == 503
    assert r.body == b"503 Service Unavailable: too many connections\n"
    assert r.header("connection") == "close"
    hold.close()
    c.close()
    refused = 0

    def try_scrape():
        nonlocal refused
        r = scrape_raw(vd)
        if r.status == 503:  # viaduct has not seen the close yet
            refused += 1
            return None
        return parse(r)

    m = poll(try_scrape)
    assert m, "admin listener never answered"
    assert val(m, "viaduct_connections_refused_total") == 1 + refused


def test_metrics_count_reloads(viaduct, make_origin):
    o = make_origin(by_path)
    vd = with_admin(viaduct, {"via": "one", "cache": {"memory": 0}})
    c = vd.connect(0)
    assert c.exchange("GET", url(o, "/before")).status == 200
    c.close()
    vd.write_conf(yamlconf.merge(vd.conf, {"via": "two"}))
    vd.reload()
    vd.wait_for_log(r"configuration reloaded")
    vd.write_conf(text=yamlconf.dump(vd.conf) + "\nbogus_key: 1\n")
    vd.reload()
    vd.wait_for_log(r"bogus_key")
    m = scrape(vd)
    assert val(m, "viaduct_config_reloads_total", result="applied") == 1
    assert val(m, "viaduct_config_reloads_total", result="refused") == 1
    # Counters survive a reload: the exchange before it is still counted.
    assert val(m, "viaduct_upstream_requests_total", connection="new") == 1
    assert val(m, "viaduct_http_responses_total", code="2xx") == 1


# ---- the admin listener -----------------------------------------------------------------------

def test_healthz(viaduct):
    vd = with_admin(viaduct)
    c = vd.connect(1)
    r = c.exchange("GET", "/healthz", host="127.0.0.1")
    assert (r.status, r.body) == (200, b"ok\n")
    assert r.header("content-type") == "text/plain; charset=utf-8"
    r = c.exchange("HEAD", "/healthz", host="127.0.0.1")
    assert (r.status, r.body, r.header("content-length")) == (200, b"", "3")
    c.close()


def test_admin_head_other_paths_and_methods(viaduct):
    vd = with_admin(viaduct)
    c = vd.connect(1)
    r = c.exchange("HEAD", "/metrics?x=1", host="127.0.0.1")
    assert r.status == 200 and r.body == b"" and int(r.header("content-length")) > 1000
    r = c.exchange("GET", "/", host="127.0.0.1")
    assert r.status == 404
    assert r.body == b"404 Not Found: admin listeners serve /metrics and /healthz\n"
    # Nothing is proxied from an admin listener.
    r = c.exchange("GET", "http://127.0.0.1:1/metrics")
    assert r.status == 200 and b"viaduct_workers" in r.body
    c.close()
    # Answered before its body was read, so the connection closes after the answer.
    c = vd.connect(1)
    r = c.exchange("POST", "/metrics", host="127.0.0.1", body=b"x")
    assert r.status == 405
    assert r.header("allow") == "GET, HEAD"
    assert r.header("connection") == "close"
    c.assert_closed()


def test_admin_listener_obeys_client_rules(viaduct):
    vd = with_admin(viaduct, {"access": [{"deny": "127.0.0.0/8"}, {"allow": "::1/128"}]})
    r = scrape_raw(vd)
    assert r.status == 403


def test_admin_over_tls_and_http2(viaduct, pki):
    tls = {"tls": {"certificates": [{"cert": pki.server.cert, "key": pki.server.key}]}}
    vd = with_admin(viaduct, listeners=[FWD, dict(ADMIN, **tls)])
    out = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki.ca, "--resolve",
                          "localhost:%d:127.0.0.1" % vd.port(1),
                          "-w", "\n%{http_version} %{http_code}",
                          "https://localhost:%d/metrics" % vd.port(1)],
                         capture_output=True, timeout=20)
    body, _, tail = out.stdout.rpartition(b"\n")
    assert tail == b"2 200", out.stderr
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "viaduct_http_requests" in names


def test_check_config_accepts_admin_mode(viaduct_bin, tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("listeners:\n  - address: 127.0.0.1:0\n  - address: 127.0.0.1:0\n"
                 "    mode: admin\n")
    r = subprocess.run([viaduct_bin, "-t", "-c", str(p)], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    p.write_text("listeners:\n  - address: 127.0.0.1:0\n    mode: admn\n")
    r = subprocess.run([viaduct_bin, "-t", "-c", str(p)], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1
    assert "listeners[0].mode: unknown mode 'admn' (expected forward, reverse or admin)" in r.stderr, \
        r.stderr
