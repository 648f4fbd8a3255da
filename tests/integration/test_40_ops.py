# SPDX-License-Identifier: MIT
"""Operations: command line, configuration check, access log, secrets, reload, shutdown,
client ACL."""
import datetime
import json
import os
import re
import resource
import signal
import subprocess
import time

import pytest

from vdtest import yamlconf
from vdtest.asserts import ISO_MS, assert_proxy_error
from vdtest.httpmsg import build_response
from vdtest.origins import Reply
from vdtest.proc import connect_refused, poll, run_bin
from vdtest.tcp import TcpServer, congestion_controls, echo


def url(origin, path="/"):
    return "http://origin.test:%d%s" % (origin.port, path)


# ---------------------------------------------------------------- command line

def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_check_config_ok(viaduct_bin, viaduct, tmp_path):
    path = write(tmp_path, "ok.yaml", yamlconf.dump(viaduct.default_conf()) + "\n")
    r = run_bin(viaduct_bin, ["-t", "-c", path])
    assert r.returncode == 0, r.stderr
    assert "configuration %s ok" % path in r.stdout + r.stderr


def test_check_config_unknown_key(viaduct_bin, tmp_path):
    path = write(tmp_path, "bad.yaml", "workers: 1\ntimeouts:\n  kepalive: 5s\n")
    r = run_bin(viaduct_bin, ["-t", "-c", path])
    assert r.returncode == 1
    assert "%s:3:3: timeouts.kepalive: unknown key" % path in r.stderr, r.stderr
    assert "ok" not in r.stdout


@pytest.mark.parametrize("text,line,key", [
    ("workers: 1\ntimeouts:\n  keepalive: 5 parsecs\n", 3, "timeouts.keepalive"),
    ("limits:\n  body: lots\n", 2, "limits.body"),
    ("log:\n  level: chatty\n", 2, "log.level"),
    ("workers: -3\n", 1, "workers"),
    ("tunnel:\n  socket_buffer: 4k\n", 2, "tunnel.socket_buffer"),
    ("tunnel:\n  socket_buffer_rtt: 2s\n", 2, "tunnel.socket_buffer_rtt"),
    ("tunnel:\n  socket_buffer_rtt: 5 fortnights\n", 2, "tunnel.socket_buffer_rtt"),
])
def test_check_config_bad_value(viaduct_bin, tmp_path, text, line, key):
    path = write(tmp_path, "bad.yaml", text)
    r = run_bin(viaduct_bin, ["-t", "-c", path])
    assert r.returncode == 1
    assert re.search(r"%s:%d:\d+: %s: \S" % (re.escape(path), line, re.escape(key)), r.stderr), \
        r.stderr


def test_check_config_bad_listener_mode(viaduct_bin, tmp_path):
    path = write(tmp_path, "bad.yaml",
                 "listeners:\n  - address: 127.0.0.1:0\n    mode: sideways\n")
    r = run_bin(viaduct_bin, ["-t", "-c", path])
    assert r.returncode == 1
    assert re.search(r"%s:3:\d+: \S*mode: \S" % re.escape(path), r.stderr), r.stderr


def test_check_config_yaml_syntax_error(viaduct_bin, tmp_path):
    path = write(tmp_path, "bad.yaml", "workers: 1\nlimits: [unclosed\n")
    r = run_bin(viaduct_bin, ["-t", "-c", path])
    assert r.returncode == 1
    assert re.search(r"%s:\d+:\d+: " % re.escape(path), r.stderr), r.stderr


def test_check_config_missing_file(viaduct_bin, tmp_path):
    path = str(tmp_path / "nope.yaml")
    r = run_bin(viaduct_bin, ["-t", "-c", path])
    assert r.returncode == 1
    assert path in r.stderr


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(viaduct_bin, flag):
    r = run_bin(viaduct_bin, [flag])
    assert r.returncode == 0
    assert re.match(r"viaduct \d+\.\d+\.\d+", r.stdout), r.stdout


def test_help(viaduct_bin):
    r = run_bin(viaduct_bin, ["-h"])
    assert r.returncode == 0
    for opt in ("-c", "-t", "-l", "-w", "--ready-file", "--pid-file", "--features", "SIGUSR2"):
        assert opt in r.stdout + r.stderr


def test_unknown_option(viaduct_bin):
    r = run_bin(viaduct_bin, ["--no-such-option"])
    assert r.returncode != 0
    assert r.stderr.strip()


def test_features(viaduct_bin):
    r = run_bin(viaduct_bin, ["--features"])
    assert r.returncode == 0
    feats = set(r.stdout.split())
    assert {"http1", "tls", "forward", "reverse", "upgrade"} <= feats
    assert all(ln == ln.strip() and " " not in ln for ln in r.stdout.splitlines() if ln)


def test_listen_flag_without_config(viaduct, make_origin):
    o = make_origin(build_response(200, b"via -l"))
    vd = viaduct(no_conf=True, args=["-l", "127.0.0.1:0", "-l", "127.0.0.1:0"])
    assert len(vd.addrs) == 2
    for i in (0, 1):
        assert vd.addr(i) == "127.0.0.1"
        with vd.connect(i) as c:
            r = c.exchange("GET", "http://127.0.0.1:%d/l" % o.port)
            assert r.status == 200 and r.body == b"via -l"


def test_listen_flag_replaces_config_listeners(viaduct, origin):
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                  "routes": [{"upstream": "http://127.0.0.1:1"}]},
                 args=["-l", "127.0.0.1:0"])
    assert len(vd.addrs) == 1
    with vd.connect() as c:
        r = c.exchange("GET", url(origin, "/fwd"))
    assert r.status == 200 and r.body == b"ok\n"


def test_workers_flag(viaduct, origin):
    vd = viaduct(args=["-w", "2"])
    for i in range(4):
        with vd.connect() as c:
            assert c.exchange("GET", url(origin, "/%d" % i)).status == 200


def test_address_in_use_is_refused(viaduct, viaduct_bin, origin):
    # Listeners set SO_REUSEPORT (a socket per worker); a second viaduct on the same address
    # must still fail instead of silently taking part of the connections.
    vd = viaduct()
    r = run_bin(viaduct_bin, ["-l", vd.authority()], timeout=10)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "cannot listen on %s: Address already in use" % vd.authority() in r.stderr, r.stderr
    for i in range(3):
        with vd.connect() as c:
            assert c.exchange("GET", url(origin, "/still-%d" % i)).status == 200


def test_ready_file_format(viaduct):
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "forward"},
                                {"address": "127.0.0.1:0", "mode": "forward"}]})
    with open(vd.ready_path) as f:
        lines = f.read().splitlines()
    assert lines == ["127.0.0.1:%d" % vd.port(0), "127.0.0.1:%d" % vd.port(1)]
    assert all(p > 0 for _, p in vd.addrs)


# ---------------------------------------------------------------- TCP congestion control

def other_congestion_control():
    """A congestion control viaduct may set that is not the system default (None if none)."""
    default, usable = congestion_controls()
    others = [a for a in usable if a != default]
    return default, ("reno" if "reno" in others else (others[0] if others else None))


def socket_cc(local_port, peer_port):
    """The congestion control ss(8) reports for the TCP socket 127.0.0.1:local -> :peer."""
    out = subprocess.run(["ss", "-tinH", "state", "established", "( sport = :%d and dport = :%d )"
                          % (local_port, peer_port)], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout
    return lines[1].split()[0]


def test_tcp_congestion_listener_and_upstream(viaduct, origin):
    default, cc = other_congestion_control()
    if cc is None:
        pytest.skip("the kernel offers one congestion control only")
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "forward",
                                 "tcp_congestion": cc}],
                  "upstream": {"tcp_congestion": cc}})
    plain = viaduct()
    with vd.connect() as c, plain.connect() as p:
        assert c.exchange("GET", url(origin, "/cc")).status == 200
        assert p.exchange("GET", url(origin, "/plain")).status == 200
        me = c.sock.getsockname()[1]
        assert socket_cc(vd.port(), me) == cc  # accepted: inherited from the listener
        assert socket_cc(me, vd.port()) == default  # the client's own socket: not ours
        assert socket_cc(p.sock.getsockname()[1], plain.port()) == default
        assert socket_cc(plain.port(), p.sock.getsockname()[1]) == default
        ups = subprocess.run(["ss", "-tinH", "state", "established", "( dport = :%d )"
                              % origin.port], capture_output=True, text=True, check=True)
        ccs = sorted(ln.split()[0] for ln in ups.stdout.splitlines()[1::2])
        assert ccs == sorted([cc, default]), ups.stdout  # one pooled origin connection each


def test_tcp_congestion_connect_target(viaduct):
    default, cc = other_congestion_control()
    if cc is None:
        pytest.skip("the kernel offers one congestion control only")
    srv = TcpServer(echo)
    try:
        vd = viaduct({"connect": {"ports": ["1024-65535"]}, "upstream": {"tcp_congestion": cc}})
        with vd.connect() as c:
            auth = "127.0.0.1:%d" % srv.port
            c.send(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (auth, auth)).encode())
            head = c.sock.recv(4096)
            assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
            c.send(b"ping")
            assert c.sock.recv(16) == b"ping"
            ups = subprocess.run(["ss", "-tinH", "state", "established", "( dport = :%d )"
                                  % srv.port], capture_output=True, text=True, check=True)
            lines = ups.stdout.splitlines()
            assert len(lines) == 2 and lines[1].split()[0] == cc, ups.stdout
    finally:
        srv.stop()


def test_tcp_congestion_unknown_is_a_config_error(viaduct_bin, tmp_path):
    path = write(tmp_path, "bad.yaml",
                 "listeners:\n  - address: 127.0.0.1:0\n    tcp_congestion: nosuchcc\n")
    r = run_bin(viaduct_bin, ["-t", "-c", path])
    assert r.returncode == 1
    assert re.search(r"%s:3:21: listeners\[0\]\.tcp_congestion: congestion control 'nosuchcc' is "
                     r"not available \(available: [a-z0-9 _-]+\)" % re.escape(path), r.stderr), \
        r.stderr


# ---------------------------------------------------------------- access log

TEXT_LINE = re.compile(
    r'(?P<time>\S+) (?P<client>\S+) "(?P<req>[^"]*)" (?P<status>\d{3}) (?P<bin>\d+) '
    r'(?P<bout>\d+) (?P<ums>\d+\.\d{3}|-) (?P<tms>\d+\.\d{3}) (?P<reuse>new|reused|-) '
    r'c=(?P<conn>\d+)(?P<extra>( [a-z_]+=\S+)*)')


def access_lines(vd):
    text = vd.read_access_log()
    assert text.endswith("\n"), repr(text[-200:])
    return text.splitlines()


def check_time(ts):
    assert ISO_MS.fullmatch(ts), ts
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - t).total_seconds()) < 120, (ts, now)


def started_with_soft_nofile(viaduct, soft, conf):
    """viaduct started with @conf while this process's soft open-files limit is @soft (the
    child inherits it); returns it and the hard limit."""
    was = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, was[1]))
    try:
        return viaduct(conf), was[1]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, was)


def soft_nofile(v):
    with open("/proc/%d/limits" % v.pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return line.split()[3]
    raise AssertionError("no open files line")


def under_valgrind(v):
    """valgrind keeps descriptors of its own above the limit it shows and refuses to raise it
    (CONTRIBUTING.md runs the suite under it)."""
    return "memcheck" in os.readlink("/proc/%d/exe" % v.pid)


def test_open_files_soft_limit_is_raised_to_the_hard_one(viaduct, origin):
    v, hard = started_with_soft_nofile(viaduct, 256, {"limits": {"max_connections": 100}})
    if under_valgrind(v):
        pytest.skip("valgrind does not let a program raise its open files limit")
    want = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert soft_nofile(v) == want
    v.wait_for_log(r"\[info\] open files limit raised from 256 to %s" % want)
    # 100 connections x 2, the cache's files and a margin fit: nothing more is said.
    assert "is below the" not in v.read_error_log()
    with v.connect() as c:
        assert c.exchange("GET", url(origin)).status == 200


def test_open_files_limit_below_the_configuration_is_named(viaduct, origin):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard > 1000000:
        pytest.skip("hard open files limit too high to exceed")
    v = viaduct({"workers": 2, "limits": {"max_connections": hard}})
    need = 2 * hard * 2 + 1024 + 2 * 256 + 256
    m = v.wait_for_log(r"\[notice\] open files limit (\d+) is below the %d descriptors this "
                       r"configuration may use \(2 workers x limits.max_connections %d x 2, "
                       r"cache files\)" % (need, hard))
    # The hard limit; under valgrind a few less (its own descriptors).
    assert hard - 32 <= int(m.group(1)) <= hard
    with v.connect() as c:
        assert c.exchange("GET", url(origin)).status == 200
    # A reload names it again when it still holds; not when it no longer does.
    v.write_conf(yamlconf.merge(v.conf, {"limits": {"max_connections": 10}}))
    v.reload()
    v.wait_for_log(r"configuration reloaded")
    assert len(re.findall(r"is below the", v.read_error_log())) == 1


def test_access_log_text(viaduct, origin):
    vd = viaduct()
    c1 = vd.connect()
    s1 = c1.request("GET", url(origin, "/a?x=1"))
    r1 = c1.response()
    s2 = c1.request("POST", url(origin, "/b"), body=b"12345")
    r2 = c1.response()
    p1 = c1.local_port
    c1.close()
    c2 = vd.connect()
    s3 = b"GET http://origin.test:%d/bad HTTP/1.1\r\nBad Field: x\r\n\r\n" % origin.port
    c2.send(s3)
    r3 = c2.response()
    p2 = c2.local_port
    c2.close()
    assert (r1.status, r2.status, r3.status) == (200, 200, 400)
    assert vd.stop() == 0
    lines = access_lines(vd)
    assert len(lines) == 3, lines
    m = [TEXT_LINE.fullmatch(ln) for ln in lines]
    assert all(m), lines
    for x in m:
        check_time(x["time"])
        assert float(x["tms"]) >= 0
    assert m[0]["client"] == "127.0.0.1:%d" % p1 and m[1]["client"] == m[0]["client"]
    assert m[2]["client"] == "127.0.0.1:%d" % p2
    assert m[0]["req"] == "GET %s HTTP/1.1" % url(origin, "/a?x=1")
    assert m[1]["req"] == "POST %s HTTP/1.1" % url(origin, "/b")
    assert (m[0]["status"], m[1]["status"], m[2]["status"]) == ("200", "200", "400")
    # Bytes are counted on the client side: the request as received, the response as sent.
    assert (int(m[0]["bin"]), int(m[0]["bout"])) == (len(s1), len(r1.raw))
    assert (int(m[1]["bin"]), int(m[1]["bout"])) == (len(s2), len(r2.raw))
    assert int(m[2]["bout"]) == len(r3.raw)
    assert m[0]["ums"] != "-" and m[1]["ums"] != "-"
    assert (m[0]["reuse"], m[1]["reuse"]) == ("new", "reused")
    assert (m[2]["ums"], m[2]["reuse"]) == ("-", "-")
    assert m[0]["conn"] == m[1]["conn"] != m[2]["conn"]
    # Optional fields: the GET went through the cache lookup (a 200 is heuristically
    # cacheable, so it was stored), the POST and the malformed request did not.
    assert (m[0]["extra"], m[1]["extra"], m[2]["extra"]) == (" cache=fwd=uri-miss,stored", "", "")


def test_access_log_json(viaduct, origin):
    vd = viaduct({"log": {"access_format": "json"}})
    with vd.connect() as c:
        s1 = c.request("GET", url(origin, "/j"))
        r1 = c.response()
        port = c.local_port
    assert r1.status == 200
    assert vd.stop() == 0
    lines = access_lines(vd)
    assert len(lines) == 1
    rec = json.loads(lines[0])
    keys = {"time", "client", "method", "target", "version", "status", "bytes_in", "bytes_out",
            "upstream_ms", "total_ms", "upstream_conn", "conn"}
    assert keys <= set(rec), sorted(rec)
    check_time(rec["time"])
    assert rec["client"] == "127.0.0.1:%d" % port
    assert (rec["method"], rec["target"]) == ("GET", url(origin, "/j"))
    assert rec["version"] in ("HTTP/1.1", "1.1")
    assert rec["status"] == 200
    assert (rec["bytes_in"], rec["bytes_out"]) == (len(s1), len(r1.raw))
    # Milliseconds with microsecond precision (three decimals).
    assert isinstance(rec["upstream_ms"], float) and isinstance(rec["total_ms"], float)
    assert rec["upstream_conn"] == "new"


def test_access_log_escapes_peer_bytes(viaduct, origin):
    """Bytes the peer controls are written as \\xHH (quote, backslash, controls, DEL)."""
    vd = viaduct()
    with vd.connect() as c:
        c.send(b'GET http://origin.test:%d/q"b\\s\x7fz HTTP/1.1\r\nHost: origin.test\r\n\r\n' %
               origin.port)
        r = c.response()
    assert r.status == 400
    assert vd.stop() == 0
    raw = open(vd.access_log, "rb").read()
    assert b"\x7f" not in raw and b'q"b' not in raw
    (line,) = raw.decode().splitlines()
    assert " 400 " in line
    assert "\\x22" in line and "\\x5c" in line and "\\x7f" in line, line


def test_access_log_json_stays_valid(viaduct, origin):
    vd = viaduct({"log": {"access_format": "json"}})
    with vd.connect() as c:
        c.send(b'GET http://origin.test:%d/q"b\\s\x7fz\x01 HTTP/1.1\r\nHost: origin.test\r\n\r\n' %
               origin.port)
        assert c.response().status == 400
    assert vd.stop() == 0
    raw = open(vd.access_log, "rb").read()
    assert b"\x7f" not in raw and b"\x01" not in raw
    for ln in raw.decode().splitlines():
        rec = json.loads(ln)
        assert rec["status"] == 400


SECRETS = ("SECRET-AUTH-7f3a", "U0VDUkVULVBST1hZ", "SECRET-COOKIE-91c2")


def test_secrets_never_logged(viaduct, origin):
    vd = viaduct({"log": {"level": "debug"}})
    hdrs = [("Authorization", "Bearer " + SECRETS[0]),
            ("Proxy-Authorization", "Basic " + SECRETS[1]),
            ("Cookie", "session=" + SECRETS[2])]
    with vd.connect() as c:
        assert c.exchange("GET", url(origin, "/s"), headers=hdrs).status == 200
    with vd.connect() as c:
        # A malformed request carrying the same fields (error paths log more).
        c.request("GET", url(origin, "/s2"), headers=hdrs + [("Bad Field", "x")])
        assert c.response().status == 400
    with vd.connect() as c:
        assert c.exchange("GET", "http://nosuch.test:1/", headers=hdrs).status == 502
    (req,) = origin.wait_requests(1)
    assert req.header("authorization") == "Bearer " + SECRETS[0]  # still forwarded
    assert vd.stop() == 0
    logs = vd.read_error_log() + vd.read_access_log()
    for s in SECRETS:
        assert s not in logs, "secret %s found in the logs" % s


# ---------------------------------------------------------------- reload

def via_of(vd, origin):
    with vd.connect() as c:
        r = c.exchange("GET", url(origin, "/via"))
    assert r.status == 200
    return r.headers.list("via")


def test_reload_applies_new_config(viaduct, origin):
    vd = viaduct({"via": "before"})
    keep = vd.connect()
    assert keep.exchange("GET", url(origin, "/k1")).headers.list("via") == ["1.1 before"]
    vd.write_conf(yamlconf.merge(vd.conf, {"via": "after"}))
    vd.reload()
    assert poll(lambda: via_of(vd, origin) == ["1.1 after"]), "reload not applied"
    # The connection opened before the reload keeps working.
    r = keep.exchange("GET", url(origin, "/k2"))
    assert r.status == 200
    assert r.headers.list("via") in (["1.1 before"], ["1.1 after"])
    keep.close()
    assert vd.running()


def test_reload_with_broken_file_keeps_old_config(viaduct, origin):
    vd = viaduct({"via": "old"})
    assert via_of(vd, origin) == ["1.1 old"]
    good = yamlconf.dump(yamlconf.merge(vd.conf, {"via": "new"}))
    line = len(good.split("\n")) + 1
    vd.write_conf(text=good + "\nbogus_key: 1\n")
    vd.reload()
    vd.wait_for_log(r"%s:%d:1: bogus_key" % (re.escape(vd.conf_path), line))
    assert via_of(vd, origin) == ["1.1 old"]
    assert vd.running()


def test_reload_refuses_listener_congestion_change(viaduct, origin):
    _, cc = other_congestion_control()
    if cc is None:
        pytest.skip("the kernel offers one congestion control only")
    vd = viaduct({"via": "old"})
    conf = yamlconf.merge(vd.conf, {"via": "new"})
    conf["listeners"] = [dict(conf["listeners"][0], tcp_congestion=cc)]
    vd.write_conf(conf)
    vd.reload()
    vd.wait_for_log(r"reload refused: listener addresses, modes, certificates or tcp_congestion "
                    r"changed")
    assert via_of(vd, origin) == ["1.1 old"]
    assert vd.running()


# ---------------------------------------------------------------- shutdown

def test_sigterm_lets_inflight_request_finish(viaduct, make_origin):
    o = make_origin(Reply(build_response(200, b"finished"), delay=2.0))
    vd = viaduct()
    c = vd.connect()
    c.request("GET", url(o, "/slow"))
    o.wait_requests(1)
    vd.signal(signal.SIGTERM)
    assert poll(lambda: connect_refused(vd.addr(0), vd.port(0)), timeout=1.5), \
        "listener still accepting after SIGTERM"
    r = c.response(timeout=10)
    assert r.status == 200 and r.body == b"finished"
    c.close()
    assert vd.wait_exit(15) == 0


def test_sigterm_closes_idle_keepalive_connections(viaduct, origin):
    vd = viaduct()
    c = vd.connect()
    assert c.exchange("GET", url(origin, "/")).status == 200
    t0 = time.monotonic()
    vd.signal(signal.SIGTERM)
    assert c.wait_closed(timeout=5) == b""
    assert vd.wait_exit(10) == 0
    assert time.monotonic() - t0 < 5
    c.close()


def test_sigterm_serves_a_connection_accepted_just_before(viaduct, origin):
    """A client that connected just before the drain and sends its request right after is
    served (with Connection: close), not closed unanswered; one that stays silent is closed
    about a second later."""
    vd = viaduct()
    c = vd.connect()
    silent = vd.connect()
    c.send(b"")  # nothing yet: the worker accepts both, neither has sent a byte
    time.sleep(0.2)
    vd.signal(signal.SIGTERM)
    time.sleep(0.3)
    r = c.exchange("GET", url(origin, "/"))
    assert r.status == 200 and r.header("connection") == "close"
    assert c.wait_closed(timeout=5) == b""
    t0 = time.monotonic()
    assert silent.wait_closed(timeout=5) == b""
    assert time.monotonic() - t0 < 2
    assert vd.wait_exit(10) == 0
    c.close()
    silent.close()


def test_shutdown_grace_bounds_drain(viaduct, make_origin):
    o = make_origin(Reply(b"", hang=True))
    vd = viaduct({"timeouts": {"shutdown_grace": "1s"}})
    c = vd.connect()
    c.request("GET", url(o, "/never"))
    o.wait_requests(1)
    t0 = time.monotonic()
    vd.signal(signal.SIGTERM)
    assert vd.wait_exit(10) == 0
    assert time.monotonic() - t0 < 8
    c.wait_closed(timeout=3)
    c.close()


# ---------------------------------------------------------------- ACL

def test_acl_first_match_wins(viaduct, origin):
    vd = viaduct({"access": [{"deny": "127.0.0.2/32"}, {"allow": "127.0.0.0/8"}]})
    with vd.connect(source="127.0.0.2") as c:
        r = c.exchange("GET", url(origin, "/"))
        assert r.status == 403
    with vd.connect(source="127.0.0.3") as c:
        assert c.exchange("GET", url(origin, "/ok")).status == 200
    assert [q.target for q in origin.wait_requests(1)] == ["/ok"]


def test_acl_no_match_is_denied(viaduct, origin):
    vd = viaduct({"access": [{"allow": "127.0.0.5/32"}]})
    with vd.connect(source="127.0.0.1") as c:
        assert c.exchange("GET", url(origin, "/")).status == 403
    with vd.connect(source="127.0.0.5") as c:
        assert c.exchange("GET", url(origin, "/")).status == 200


def test_access_rule_named_in_403(viaduct, origin):
    vd = viaduct({"access": [{"name": "no-delete", "deny": {"methods": ["DELETE"]}},
                             {"allow": {"clients": ["127.0.0.0/8"], "methods": "GET"}}]})
    with vd.connect() as c:
        r = c.exchange("DELETE", url(origin, "/"))
    assert_proxy_error(r, 403, 'access rule "no-delete"')
    with vd.connect() as c:
        r = c.exchange("HEAD", url(origin, "/"))
    assert r.status == 403  # no rule matched
    with vd.connect() as c:
        r = c.exchange("OPTIONS", url(origin, "/"))
    assert_proxy_error(r, 403, "no rule matched")
    with vd.connect() as c:
        assert c.exchange("GET", url(origin, "/ok")).status == 200
    assert [q.target for q in origin.wait_requests(1)] == ["/ok"]


def test_error_log_to_file(viaduct, origin, tmp_path):
    path = str(tmp_path / "error.log")
    vd = viaduct({"log": {"error_log": path, "level": "debug"}})
    with vd.connect() as c:
        assert c.exchange("GET", url(origin, "/")).status == 200
    assert vd.stop() == 0
    assert os.path.exists(path)
    text = open(path).read()
    assert text == "" or re.match(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\w+\] ", text), text[:300]

