# SPDX-License-Identifier: MIT
"""Upstream groups on reverse routes: several servers per route, balanced by round robin,
least connections or client address hash, with passive health checks (a server whose
connection fails is skipped for fail_timeout, and the exchange moves to another server since
nothing was sent). Real origins count what each one received."""
import re
import threading
import time

import pytest

from vdtest.httpmsg import build_response
from vdtest.metrics import scrape, val
from vdtest.origins import Blackhole, Reply, closed_port


def named(name):
    return lambda req: build_response(200, name.encode(), headers=[("Content-Type", "text/plain")])


def group(viaduct, servers, **route):
    r = {"upstream": servers}
    r.update(route)
    return viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                    "routes": [r]})


def url(o):
    return "http://127.0.0.1:%d" % o if isinstance(o, int) else "http://127.0.0.1:%d" % o.port


def get(vd, path="/", source=None):
    c = vd.connect(source=source) if source else vd.connect()
    r = c.exchange("GET", path, host="app.test")
    c.close()
    return r


def refused_lines(vd, port):
    return len(re.findall(r"\[upstream 127\.0\.0\.1:%d\]" % port, vd.read_error_log()))


def test_round_robin_in_turn(viaduct, make_origin):
    os_ = [make_origin(named(n)) for n in ("a", "b", "c")]
    vd = group(viaduct, [url(o) for o in os_])
    c = vd.connect()
    bodies = [c.exchange("GET", "/%d" % i, host="app.test").body for i in range(9)]
    c.close()
    assert bodies == [b"a", b"b", b"c"] * 3
    assert [len(o.requests) for o in os_] == [3, 3, 3]
    # The client's Host goes to every server; each gets its own pooled connection.
    assert all(r.headers.all("host") == ["app.test"] for o in os_ for r in o.requests)


def test_one_url_or_a_list_of_one_is_the_same(viaduct, make_origin):
    o = make_origin(named("only"))
    vd = group(viaduct, [url(o)])
    assert [get(vd).body for _ in range(3)] == [b"only"] * 3


def test_refused_server_is_skipped_and_the_exchange_moves_on(viaduct, make_origin):
    dead = closed_port()
    live = make_origin(named("live"))
    vd = group(viaduct, [url(dead), url(live)], fail_timeout="60s")
    for _ in range(6):
        r = get(vd)
        assert (r.status, r.body) == (200, b"live")
    assert len(live.requests) == 6
    # One failed attempt, then the server is marked down and not tried again.
    vd.wait_for_log(r"\[upstream 127\.0\.0\.1:%d\]; trying http://127\.0\.0\.1:%d" %
                    (dead, live.port))
    assert refused_lines(vd, dead) == 1


def test_down_server_is_tried_again_after_fail_timeout(viaduct, make_origin):
    dead = closed_port()
    live = make_origin(named("live"))
    vd = group(viaduct, [url(dead), url(live)], fail_timeout="300ms")
    assert get(vd).body == b"live"
    assert refused_lines(vd, dead) == 1
    assert get(vd).body == b"live"  # within fail_timeout: not tried
    assert refused_lines(vd, dead) == 1
    time.sleep(0.4)
    # Round robin: two requests, one of them is the dead server's turn again.
    assert [get(vd).body for _ in range(2)] == [b"live", b"live"]
    assert refused_lines(vd, dead) == 2


def test_post_moves_to_the_next_server_with_its_body(viaduct, make_origin):
    dead = closed_port()
    live = make_origin(build_response(201, b"made"))
    vd = group(viaduct, [url(dead), url(live)])
    c = vd.connect()
    r = c.exchange("POST", "/items", host="app.test", body=b"payload-" * 1000)
    c.close()
    assert r.status == 201
    (req,) = live.wait_requests(1)
    assert req.body == b"payload-" * 1000


def test_every_server_down_is_502(viaduct):
    d1, d2 = closed_port(), closed_port()
    vd = group(viaduct, [url(d1), url(d2)])
    r = get(vd)
    assert r.status == 502
    assert r.body.startswith(b"502 Bad Gateway: ")
    assert refused_lines(vd, d1) == 1 and refused_lines(vd, d2) == 1
    # Both are marked down now: the next exchange still tries one (it may be back), but only
    # one, so a dead group costs a client at most one connect attempt.
    r = get(vd)
    assert r.status == 502
    assert refused_lines(vd, d1) + refused_lines(vd, d2) == 3


def test_connect_timeout_moves_on(viaduct, make_origin):
    bh = Blackhole()
    try:
        if not bh.works:
            pytest.skip("cannot make a port whose connects hang here")
        live = make_origin(named("live"))
        vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                      "timeouts": {"upstream_connect": "300ms"},
                      "routes": [{"upstream": [url(bh.port), url(live)]}]})
        t0 = time.monotonic()
        r = get(vd)
        assert (r.status, r.body) == (200, b"live")
        assert time.monotonic() - t0 >= 0.25
        vd.wait_for_log(r"timed out \[upstream 127\.0\.0\.1:%d\]; trying" % bh.port)
    finally:
        bh.stop()


def test_least_conn_avoids_the_busy_server(viaduct, make_origin):
    release = threading.Event()
    slow = make_origin(lambda req: Reply([release.wait, build_response(200, b"slow")]))
    fast = make_origin(named("fast"))
    vd = group(viaduct, [url(slow), url(fast)], balance="least_conn")
    busy = vd.connect()
    busy.request("GET", "/long", host="app.test")  # first in turn: the slow server
    slow.wait_requests(1)
    # While it is in progress, every other exchange goes to the idle server.
    assert [get(vd).body for _ in range(4)] == [b"fast"] * 4
    release.set()
    assert busy.response().body == b"slow"
    busy.close()
    assert len(slow.requests) == 1 and len(fast.requests) == 4


def test_client_hash_keeps_each_client_on_one_server(viaduct, make_origin):
    os_ = [make_origin(named(n)) for n in ("a", "b", "c")]
    vd = group(viaduct, [url(o) for o in os_], balance="client_hash")
    seen = {}
    for src in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"):
        bodies = {get(vd, source=src).body for _ in range(3)}
        assert len(bodies) == 1, (src, bodies)
        seen[src] = bodies.pop()
    # Six addresses over three servers: more than one server is used.
    assert len(set(seen.values())) > 1, seen


def test_client_hash_moves_on_when_its_server_is_down(viaduct, make_origin):
    live = make_origin(named("live"))
    dead = closed_port()
    vd = group(viaduct, [url(dead), url(live)], balance="client_hash")
    for src in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        assert get(vd, source=src).body == b"live"


def test_group_servers_in_metrics(viaduct, make_origin):
    dead = closed_port()
    live = make_origin(named("live"))
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"},
                                {"address": "127.0.0.1:0", "mode": "admin"}],
                  "routes": [{"path": "/solo/", "upstream": url(live)},
                             {"upstream": [url(dead), url(live)], "fail_timeout": "60s"}]})
    for _ in range(3):
        assert get(vd).body == b"live"
    assert get(vd, "/solo/x").body == b"live"  # single-server routes have no series
    m = scrape(vd)
    d, lv = {"route": "1", "server": url(dead)}, {"route": "1", "server": url(live)}
    assert val(m, "viaduct_upstream_server_requests_total", **lv) == 3
    assert val(m, "viaduct_upstream_server_requests_total", **d) == 0
    assert val(m, "viaduct_upstream_server_failures_total", **d) == 1
    assert val(m, "viaduct_upstream_server_failures_total", **lv) == 0
    assert val(m, "viaduct_upstream_server_up", **d) == 0
    assert val(m, "viaduct_upstream_server_up", **lv) == 1
    assert val(m, "viaduct_upstream_server_active", **lv) == 0
    assert not [k for k in m if k[0].startswith("viaduct_upstream_server") and
                ("route", "0") in k[1]]
