# SPDX-License-Identifier: MIT
"""Active health checks of upstream servers (routes[].health_check): one loop sends
`GET path` to every server of the route each interval; `fall` failed checks in a row take a
server out of the group, `rise` passed ones bring it back. Origins count the checks they get
apart from client requests, and a gate can hold a check open so that a test reads the state
between two checks: check N+1 starts only after the verdict of check N."""
import re
import signal
import threading

import pytest

from vdtest import yamlconf
from vdtest.httpmsg import build_response
from vdtest.metrics import scrape, val
from vdtest.origins import Reply, closed_port, drop
from vdtest.proc import poll, run_bin

HEALTHY = build_response(200, b"healthy")
SICK = build_response(503, b"sick", reason="Service Unavailable")
FAST = {"path": "/healthz", "interval": "100ms", "timeout": "2s", "fall": 2, "rise": 2}


class Backend:
    """An origin that answers a health path with checks[path](i) for its i-th check there
    (0-based) and every other request with its name."""

    def __init__(self, make_origin, name, checks=None, tls=None, host="127.0.0.1"):
        self.name = name
        self.checks = checks if checks is not None else {"/healthz": lambda i: HEALTHY}
        self.counts = {}
        self.lock = threading.Lock()
        self.o = make_origin(self._reply, tls=tls)
        self.port = self.o.port
        self.url = "%s://%s:%d" % ("https" if tls else "http", host, self.port)

    def _reply(self, req):
        fn = self.checks.get(req.target)
        if fn is None:
            return build_response(200, self.name.encode())
        with self.lock:
            i = self.counts.get(req.target, 0)
            self.counts[req.target] = i + 1
        return fn(i)

    def checks_seen(self, path="/healthz"):
        return [r for r in self.o.requests if r.target == path]

    def served(self):
        return [r for r in self.o.requests if r.target not in self.checks]

    def wait_checks(self, n, path="/healthz", timeout=10.0):
        assert poll(lambda: len(self.checks_seen(path)) >= n, timeout), \
            "%s: %d checks of %s, expected %d" % (self.name, len(self.checks_seen(path)), path, n)


@pytest.fixture
def gate():
    """gate() -> a threading.Event a scripted reply waits on; all are set at teardown, before
    the origins stop, so no origin thread is left waiting."""
    made = []

    def make():
        e = threading.Event()
        made.append(e)
        return e

    yield make
    for e in made:
        e.set()


def held(event, reply=HEALTHY):
    return Reply([event.wait, reply])


def group_conf(urls, hc=FAST, **route):
    r = {"upstream": urls}
    if hc is not None:
        r["health_check"] = hc
    r.update(route)
    return {"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"},
                          {"address": "127.0.0.1:0", "mode": "admin"}],
            "routes": [r]}


def bodies(vd, n, path="/"):
    out = []
    for _ in range(n):
        c = vd.connect()
        r = c.exchange("GET", path, host="app.test")
        c.close()
        assert r.status == 200, r.raw
        out.append(r.body)
    return out


def down_line(url, why, n):
    return (r"\[warn\] server %s of route 0 down: %s \(health check failed %d times in a "
            r"row\)" % (re.escape(url), why, n))


def up_line(url, n):
    return (r"\[warn\] server %s of route 0 up again \(health check passed %d times in a "
            r"row\)" % (re.escape(url), n))


def checks(m, url, result, route="0"):
    return val(m, "viaduct_upstream_health_checks_total", route=route, server=url, result=result)


def is_up(m, url, route="0"):
    return val(m, "viaduct_upstream_server_up", route=route, server=url)


def test_check_request_bytes(viaduct, make_origin):
    named = Backend(make_origin, "named", host="origin.test")
    plain = Backend(make_origin, "plain", checks={"/status?full=1": lambda i: HEALTHY})
    site = Backend(make_origin, "site")
    both = Backend(make_origin, "both")
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                  "routes": [{"path": "/n/", "upstream": [named.url],
                              "health_check": {"path": "/healthz", "interval": "1h"}},
                             {"path": "/s/", "upstream": [site.url], "host_header": "site.example",
                              "health_check": {"path": "/healthz", "interval": "1h"}},
                             {"path": "/b/", "upstream": [both.url], "host_header": "site.example",
                              "health_check": {"path": "/healthz", "interval": "1h",
                                               "host": "health.example"}},
                             {"upstream": [plain.url],
                              "health_check": {"path": "/status?full=1", "interval": "1h",
                                               "host": "health.example"}}]})
    # The first check runs at once (not an interval after the start).
    named.wait_checks(1)
    plain.wait_checks(1, path="/status?full=1")
    # The route's host_header, as real traffic; the check's own host over it.
    site.wait_checks(1)
    both.wait_checks(1)
    assert [r.headers.all("host") for r in site.checks_seen()] == [["site.example"]]
    assert [r.headers.all("host") for r in both.checks_seen()] == [["health.example"]]
    (req,) = named.checks_seen()
    assert req.raw == (b"GET /healthz HTTP/1.1\r\nHost: origin.test:%d\r\n"
                       b"User-Agent: viaduct-health\r\nConnection: close\r\n\r\n" % named.port)
    (req,) = plain.checks_seen("/status?full=1")
    assert req.raw == (b"GET /status?full=1 HTTP/1.1\r\nHost: health.example\r\n"
                       b"User-Agent: viaduct-health\r\nConnection: close\r\n\r\n")
    # One connection per check, closed by viaduct once the status line was read.
    for b in (named, plain):
        assert b.o.conn_count == 1
        assert b.o.conns[0].closed.wait(5)
        assert len(b.o.conns[0].requests) == 1
    assert named.served() == [] and plain.served() == []
    assert bodies(vd, 1, "/n/x") == [b"named"]


def test_down_after_fall_checks_and_up_after_rise(viaduct, make_origin, gate):
    g2, g3, g4 = gate(), gate(), gate()

    def b_check(i):
        if i < 2:
            return SICK
        return held({2: g2, 3: g3, 4: g4}[i]) if i <= 4 else HEALTHY

    a = Backend(make_origin, "a")
    b = Backend(make_origin, "b", {"/healthz": b_check})
    vd = viaduct(group_conf([a.url, b.url]))
    # Check 2 (held) started, so the verdict of checks 0 and 1 is in: b is down.
    b.wait_checks(3)
    log = vd.read_error_log()
    assert len(re.findall(down_line(b.url, "status 503", 2), log)) == 1, log
    assert "server %s of route 0 down" % a.url not in log
    m = scrape(vd)
    assert (is_up(m, a.url), is_up(m, b.url)) == (1, 0)
    assert (checks(m, b.url, "ok"), checks(m, b.url, "fail")) == (0, 2)
    assert checks(m, a.url, "fail") == 0 and checks(m, a.url, "ok") >= 1
    assert bodies(vd, 6) == [b"a"] * 6
    assert b.served() == []
    # One check passes: not enough (rise 2), b stays out.
    g2.set()
    b.wait_checks(4)
    m = scrape(vd)
    assert is_up(m, b.url) == 0
    assert (checks(m, b.url, "ok"), checks(m, b.url, "fail")) == (1, 2)
    assert bodies(vd, 4) == [b"a"] * 4
    assert b.served() == []
    # The second one in a row: b is back and takes its turn again.
    g3.set()
    b.wait_checks(5)
    log = vd.read_error_log()
    assert len(re.findall(up_line(b.url, 2), log)) == 1, log
    m = scrape(vd)
    assert is_up(m, b.url) == 1
    assert (checks(m, b.url, "ok"), checks(m, b.url, "fail")) == (2, 2)
    assert sorted(bodies(vd, 4)) == [b"a", b"a", b"b", b"b"]
    assert len(b.served()) == 2
    # Passive counters saw no failure: the down server was never tried.
    assert val(m, "viaduct_upstream_server_failures_total", route="0", server=b.url) == 0


@pytest.mark.parametrize("kind,why", [
    ("503", "status 503"),
    ("expect", "status 204"),
    ("hang", "timed out after 300 ms waiting for the status line"),
    ("not-http", "not an HTTP response"),
    ("empty", "connection closed without a response"),
    ("refused", "connect: Connection refused"),
])
def test_failure_takes_the_server_out(viaduct, make_origin, kind, why):
    replies = {"503": SICK, "expect": build_response(204),
               "hang": Reply(HEALTHY[:9], hang=True),
               "not-http": b"SSH-2.0-OpenSSH_9.2p1\r\n", "empty": drop()}
    hc = dict(FAST, timeout="300ms")
    if kind == "expect":
        hc["expect"] = "200"  # 204 passes the default 200-399
    a = Backend(make_origin, "a")
    if kind == "refused":
        b, burl = None, "http://127.0.0.1:%d" % closed_port()
    else:
        b = Backend(make_origin, "b", {"/healthz": lambda i: replies[kind]})
        burl = b.url
    vd = viaduct(group_conf([a.url, burl], hc))
    vd.wait_for_log(down_line(burl, re.escape(why), 2))
    assert bodies(vd, 4) == [b"a"] * 4
    if b:
        assert b.served() == []
    m = scrape(vd)
    assert is_up(m, burl) == 0 and is_up(m, a.url) == 1
    assert checks(m, burl, "fail") >= 2 and checks(m, burl, "ok") == 0
    assert val(m, "viaduct_upstream_server_failures_total", route="0", server=burl) == 0


def test_every_server_down_still_tries_one(viaduct, make_origin):
    a = Backend(make_origin, "a", {"/healthz": lambda i: SICK})
    b = Backend(make_origin, "b", {"/healthz": lambda i: SICK})
    vd = viaduct(group_conf([a.url, b.url]))
    vd.wait_for_log(down_line(a.url, "status 503", 2))
    vd.wait_for_log(down_line(b.url, "status 503", 2))
    # As with passive marks: rather than fail outright, an exchange tries one server.
    assert bodies(vd, 2) in ([b"a", b"b"], [b"b", b"a"], [b"a", b"a"], [b"b", b"b"])
    assert len(a.served()) + len(b.served()) == 2


def test_single_server_route_reports_its_health(viaduct, make_origin):
    only = Backend(make_origin, "only", {"/healthz": lambda i: SICK})
    vd = viaduct(group_conf(only.url, dict(FAST, fall=1)))
    vd.wait_for_log(down_line(only.url, "status 503", 1))
    m = scrape(vd)
    assert is_up(m, only.url) == 0 and checks(m, only.url, "fail") >= 1
    # With no other server, it still gets the traffic.
    assert bodies(vd, 2) == [b"only"] * 2


@pytest.mark.feature("tls")
def test_https_server_checked_over_verified_tls(viaduct, make_origin, pki):
    good = Backend(make_origin, "good", tls="server", host="origin.test")
    bad = Backend(make_origin, "bad", tls=pki.wrongname, host="origin.test")
    conf = group_conf([good.url, bad.url])
    conf["upstream"] = {"ca_file": pki.ca}
    vd = viaduct(conf)
    vd.wait_for_log(down_line(bad.url, r"certificate verification failed: [^\n]*hostname "
                              r"mismatch[^\n]*", 2))
    good.wait_checks(2)
    req = good.checks_seen()[0]
    assert req.sni == "origin.test"
    assert req.raw.startswith(b"GET /healthz HTTP/1.1\r\nHost: origin.test:%d\r\n" % good.port)
    assert bad.checks_seen() == []  # the handshake failed before any request
    m = scrape(vd)
    assert checks(m, good.url, "fail") == 0 and is_up(m, good.url) == 1
    assert bodies(vd, 3) == [b"good"] * 3


def test_one_loop_checks_for_every_worker(viaduct, make_origin, gate):
    g = gate()
    b = Backend(make_origin, "b", {"/healthz": lambda i: held(g)})
    conf = group_conf([b.url], dict(FAST, interval="50ms"))
    conf["workers"] = 3
    vd = viaduct(conf)
    b.wait_checks(1)
    # Three workers, one checker: while the first check is held, no other one starts.
    b.o.quiet(0.5)
    assert len(b.checks_seen()) == 1
    g.set()
    b.wait_checks(3)
    assert vd.running()


def test_reload_restarts_the_checks(viaduct, make_origin):
    a = Backend(make_origin, "a", {"/h1": lambda i: HEALTHY, "/h2": lambda i: HEALTHY})
    b = Backend(make_origin, "b", {"/h1": lambda i: Reply(SICK, delay=0.02),
                                   "/h2": lambda i: HEALTHY})
    conf = group_conf([a.url, b.url], dict(FAST, path="/h1"))
    vd = viaduct(conf)
    vd.wait_for_log(down_line(b.url, "status 503", 2))
    assert bodies(vd, 2) == [b"a", b"a"]
    # Reloads while checks are in flight: each stops the old checks and starts new ones.
    for _ in range(4):
        vd.reload()
        vd.wait_for_log(r"configuration reloaded", timeout=5)
    conf = yamlconf.merge(conf, {})
    conf["routes"][0]["health_check"]["path"] = "/h2"
    vd.write_conf(conf)
    n_log = vd.read_error_log().count("configuration reloaded")
    vd.reload()
    assert poll(lambda: vd.read_error_log().count("configuration reloaded") > n_log)
    b.wait_checks(2, path="/h2")
    # The new snapshot started b up, with counters of its own; the old checks stopped.
    m = scrape(vd)
    assert checks(m, b.url, "fail") == 0 and checks(m, b.url, "ok") >= 1
    assert is_up(m, b.url) == 1
    h1 = len(b.checks_seen("/h1"))
    b.wait_checks(len(b.checks_seen("/h2")) + 3, path="/h2")
    assert len(b.checks_seen("/h1")) == h1
    assert sorted(bodies(vd, 2)) == [b"a", b"b"]
    # Without health_check, no checks at all and no series.
    vd.write_conf(yamlconf.merge(conf, {"routes": [{"upstream": [a.url, b.url]}]}))
    n_log = vd.read_error_log().count("configuration reloaded")
    vd.reload()
    assert poll(lambda: vd.read_error_log().count("configuration reloaded") > n_log)
    a.o.quiet(0.2)  # a check that started just before the worker took the reload
    n = len(a.o.requests) + len(b.o.requests)
    a.o.quiet(0.4)
    assert len(a.o.requests) + len(b.o.requests) == n
    m = scrape(vd)
    assert not [k for k in m if k[0].startswith("viaduct_upstream_health_checks")]
    assert sorted(bodies(vd, 2)) == [b"a", b"b"]


def test_sigterm_with_checks_in_flight(viaduct, make_origin, gate):
    g = gate()
    b = Backend(make_origin, "b", {"/healthz": lambda i: held(g)})
    vd = viaduct(group_conf([b.url]))
    b.wait_checks(1)
    vd.signal(signal.SIGTERM)
    assert vd.wait_exit() == 0


@pytest.mark.parametrize("hc,line,col,msg", [
    ("{path: /h, intervall: 1s}", 3, 30,
     "routes[0].health_check.intervall: unknown key (expected path, interval, timeout, rise, "
     "fall, expect or host)"),
    ("{interval: 1s}", 3, 19, "routes[0].health_check.path: required key is missing"),
    ("{path: healthz}", 3, 26,
     "routes[0].health_check.path: bad path 'healthz': expected an origin-form path starting "
     "with '/' (at most 1024 bytes, no spaces, control characters or '#')"),
    ("{path: /h, expect: 200-99}", 3, 38,
     "routes[0].health_check.expect: bad status range '200-99': expected a status code from "
     "100 to 599 or a range LOW-HIGH of them such as 200-399"),
    ("{path: /h, fall: 0}", 3, 36,
     "routes[0].health_check.fall: expected an integer from 1 to 1000, got '0'"),
    ("{path: /h, interval: 0}", 3, 40,
     "routes[0].health_check.interval: duration must be greater than 0"),
])
def test_config_errors(viaduct_bin, tmp_path, hc, line, col, msg):
    p = tmp_path / "bad.yaml"
    p.write_text("routes:\n  - upstream: [http://127.0.0.1:1, http://127.0.0.1:2]\n"
                 "    health_check: %s\n" % hc)
    r = run_bin(viaduct_bin, ["-t", "-c", str(p)])
    assert r.returncode == 1
    assert r.stderr.strip() == "%s:%d:%d: %s" % (p, line, col, msg), r.stderr
