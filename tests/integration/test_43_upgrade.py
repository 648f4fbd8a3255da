# SPDX-License-Identifier: MIT
"""Binary upgrade (SIGUSR2): the running viaduct starts its binary again with the same command
line, hands over its listening sockets, and drains once the new process serves. Clients that
connect all along are never refused or reset; a new process that cannot start leaves the old
one serving. The new process is detached (its own session), so each test stops it by PID."""
import os
import re
import signal
import socket
import threading

import pytest

from vdtest.client import connect_tunnel
from vdtest.httpmsg import build_response
from vdtest.proc import connect_refused, free_port, pid_alive, poll, stop_pid
from vdtest.tcp import TcpServer, recv_exact, recv_until_eof

pytestmark = pytest.mark.feature("upgrade")

SERVES = r"upgrade: the new process (\d+) serves; this one drains"


def under_valgrind(v):
    return "memcheck" in os.readlink("/proc/%d/exe" % v.pid)


def get(port, origin, path="/"):
    """One request through the forward proxy on a new connection; the status, or the error."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET http://127.0.0.1:%d%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                      b"Connection: close\r\n\r\n" % (origin.port, path.encode(), origin.port))
            data = recv_until_eof(s)
        m = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
        return int(m.group(1)) if m and data.endswith(b"ok\n") else data[:80]
    except OSError as e:
        return repr(e)


def start(viaduct, ports, workers=2, args=(), **extra):
    conf = {"workers": workers,
            "listeners": [{"address": "127.0.0.1:%d" % p, "mode": "forward"} for p in ports]}
    conf.update(extra)
    v = viaduct(conf, args=args)
    if under_valgrind(v):
        pytest.skip("under valgrind /proc/self/exe is valgrind itself")
    return v


def test_upgrade_hands_over_without_refusing_anyone(viaduct, make_origin):
    o = make_origin(build_response(200, b"ok\n"))
    port = free_port()
    v = start(viaduct, [port])
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set() and len(results) < 5000:
            results.append(get(port, o))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    assert poll(lambda: len(results) >= 20)
    v.proc.send_signal(signal.SIGUSR2)
    new = int(v.wait_for_log(SERVES, timeout=20).group(1))
    try:
        assert v.wait_exit() == 0  # the old one drained and exited
        before = len(results)
        assert poll(lambda: len(results) >= before + 20)  # served by the new one alone
        stop.set()
        t.join(10)
        bad = [r for r in results if r != 200]
        assert bad == [] and len(results) >= 40, (len(results), bad[:5])
        log = v.read_error_log()
        assert re.search(r"upgrade: started \S+ as process %d with 2 listening sockets" % new, log)
        assert "upgrade: took over 2 listening sockets on 127.0.0.1:%d" % port in log
        assert os.readlink("/proc/%d/exe" % new) == os.path.realpath(v.binary)
        with open("/proc/%d/cmdline" % new, "rb") as f:
            assert f.read().split(b"\0")[:-1] == [c.encode() for c in v.cmd]
    finally:
        stop.set()
        stop_pid(new)
    assert connect_refused("127.0.0.1", port)
    assert "viaduct stopped" in v.read_error_log()


def test_failed_upgrade_keeps_the_old_process_serving(viaduct, make_origin):
    o = make_origin(build_response(200, b"ok\n"))
    port = free_port()
    v = start(viaduct, [port])
    good = v.conf
    v.write_conf(text="listeners: [{address: 127.0.0.1:%d, mode: nonsense}]\n" % port)
    v.proc.send_signal(signal.SIGUSR2)
    m = v.wait_for_log(r"upgrade failed: the new process (\d+) exited \(status 1, signal 0\) "
                       r"before serving; this process keeps serving", timeout=20)
    assert not pid_alive(int(m.group(1)))
    assert get(port, o) == 200
    assert v.proc.poll() is None
    # Fixed, the next SIGUSR2 goes through.
    v.write_conf(good)
    v.proc.send_signal(signal.SIGUSR2)
    new = int(v.wait_for_log(SERVES, timeout=20).group(1))
    try:
        assert v.wait_exit() == 0
        assert get(port, o) == 200
    finally:
        stop_pid(new)


def test_new_process_that_does_not_serve_in_upgrade_start_is_stopped(viaduct, make_origin):
    """A new process that hangs before serving (here: writing its ready file blocks on a FIFO no
    one reads) is stopped after timeouts.upgrade_start, and the old one keeps serving."""
    o = make_origin(build_response(200, b"ok\n"))
    port = free_port()
    v = start(viaduct, [port], timeouts={"upgrade_start": "1500ms"})
    fifo = v.ready_path + ".tmp"
    os.mkfifo(fifo)
    new = None
    try:
        v.proc.send_signal(signal.SIGUSR2)
        new = int(v.wait_for_log(r"upgrade: started \S+ as process (\d+)", timeout=10).group(1))
        assert get(port, o) == 200  # the old process serves while the new one hangs
        v.wait_for_log(r"upgrade failed: the new process %d did not report serving within 1500 "
                       r"ms \(timeouts\.upgrade_start\); stopping it, this process keeps "
                       r"serving" % new, timeout=10)
        assert poll(lambda: not pid_alive(new), timeout=10)
        assert get(port, o) == 200
        assert v.proc.poll() is None
    finally:
        if os.path.exists(fifo):
            # Unblocks a writer that is somehow still there, so nothing is left hanging.
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
            os.unlink(fifo)
        if new and pid_alive(new):
            stop_pid(new)


def test_new_configuration_decides_listeners_and_workers(viaduct, make_origin):
    """Two workers with two listeners before; after, one worker and one listener: it takes both
    sockets of the remaining address and serves every connection that lands on either; the
    dropped address is closed once the old process is gone."""
    o = make_origin(build_response(200, b"ok\n"))
    keep, drop = free_port(), free_port()
    v = start(viaduct, [keep, drop])
    v.write_conf({"workers": 1,
                  "listeners": [{"address": "127.0.0.1:%d" % keep, "mode": "forward"}]})
    v.proc.send_signal(signal.SIGUSR2)
    new = int(v.wait_for_log(SERVES, timeout=20).group(1))
    try:
        assert v.wait_exit() == 0
        log = v.read_error_log()
        assert "upgrade: took over 2 listening sockets on 127.0.0.1:%d" % keep in log
        assert "upgrade: 127.0.0.1:%d is not a listener of this configuration: closed" % drop in log
        assert [get(keep, o) for _ in range(40)] == [200] * 40
        assert connect_refused("127.0.0.1", drop)
    finally:
        stop_pid(new)


def test_cache_directory_follows_the_new_process(viaduct, make_origin, tmp_path):
    """The disk tier's directory is locked by one process at a time: the new process caches in
    memory until the old one has written its queue and exited, then opens the directory and
    serves what the old one stored."""
    o = make_origin(build_response(200, b"ok\n", [("Cache-Control", "max-age=300")]))
    port = free_port()
    cache = str(tmp_path / "cache")
    v = start(viaduct, [port], cache={"memory": "16m", "disk_path": cache})

    def cache_status():
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET http://127.0.0.1:%d/c HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n" % o.port)
            data = b""
            while not data.endswith(b"ok\n"):
                b = s.recv(65536)
                if not b:
                    break
                data += b
        m = re.search(rb"\r\nCache-Status: ([^\r]*)", data)
        return m.group(1).decode() if m else None

    assert cache_status() == "viaduct; fwd=uri-miss; stored"
    v.proc.send_signal(signal.SIGUSR2)
    new = int(v.wait_for_log(SERVES, timeout=20).group(1))
    try:
        assert v.wait_exit() == 0
        v.wait_for_log(r"upgrade: the cache directory opens once the process this one "
                       r"replaces exits")
        v.wait_for_log(r"cache disk: %s: 1 files \(\d+ bytes\) indexed" % re.escape(cache),
                       timeout=10)
        assert len(re.findall(r"cache disk: %s opened" % re.escape(cache),
                              v.read_error_log())) == 2  # the old process, then the new one
        assert re.fullmatch(r"viaduct; hit; ttl=\d+", cache_status())
        assert len(o.requests) == 1
    finally:
        stop_pid(new)


def test_tunnels_outlive_the_upgrade_for_upgrade_grace(viaduct, make_origin):
    """timeouts.upgrade_grace: a CONNECT tunnel open in the old process keeps working past
    shutdown_grace while the new process serves new connections; the old one exits once the
    tunnel ends."""
    o = make_origin(build_response(200, b"ok\n"))
    echo_srv = TcpServer()
    port = free_port()
    v = start(viaduct, [port], timeouts={"shutdown_grace": "1s", "upgrade_grace": "1h"},
              connect={"ports": ["1-65535"]})
    c, r = connect_tunnel(v, "127.0.0.1:%d" % echo_srv.port)
    assert r.status == 200
    c.sock.sendall(b"before")
    assert recv_exact(c.sock, 6) == b"before"
    v.proc.send_signal(signal.SIGUSR2)
    new = int(v.wait_for_log(SERVES, timeout=20).group(1))
    try:
        assert get(port, o) == 200  # new connections: the new process
        poll(lambda: False, timeout=2.5)  # past shutdown_grace
        assert v.proc.poll() is None
        c.sock.sendall(b"after")
        assert recv_exact(c.sock, 5) == b"after"
        c.close()
        assert v.wait_exit() == 0
    finally:
        stop_pid(new)
        echo_srv.stop()


def test_pid_file_follows_the_upgrade(viaduct, make_origin, tmp_path):
    """--pid-file names the process that serves: the new one writes its ID over the old one's,
    the old one leaves it alone when it exits, and the new one removes it when it stops."""
    pidf = tmp_path / "viaduct.pid"
    v = start(viaduct, [free_port()], args=["--pid-file", str(pidf)])
    assert pidf.read_text() == "%d\n" % v.pid
    v.proc.send_signal(signal.SIGUSR2)
    new = int(v.wait_for_log(SERVES, timeout=20).group(1))
    try:
        assert v.wait_exit() == 0
        assert pidf.read_text() == "%d\n" % new
    finally:
        stop_pid(new)
    assert not pidf.exists()
