# SPDX-License-Identifier: MIT
"""systemd integration: readiness and state notifications on NOTIFY_SOCKET (sd_notify(3):
READY=1 with MAINPID, RELOADING=1 and READY=1 around a reload, STOPPING=1 on SIGTERM, MAINPID
handed to the new process of a binary upgrade), and socket activation through systemd's own
systemd-socket-activate (the listening socket passed as LISTEN_FDS, and a connection made
before viaduct started answered by it)."""
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from vdtest.httpmsg import build_response
from vdtest.proc import free_port, poll, sanitizer_env, stop_pid
from vdtest.tcp import recv_until_eof

pytestmark = pytest.mark.feature("upgrade")


class Notify:
    """The receiving end of NOTIFY_SOCKET: one datagram per state change."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(10)

    def next(self):
        return self.sock.recv(4096).decode()

    def close(self):
        self.sock.close()


def test_notify_ready_reload_and_stopping(viaduct, tmp_path):
    n = Notify(tmp_path / "notify")
    try:
        v = viaduct(env={"NOTIFY_SOCKET": n.path})
        assert n.next() == "READY=1\nMAINPID=%d" % v.pid
        v.reload()
        m = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", n.next())
        assert m and int(m.group(1)) > 0
        assert n.next() == "READY=1"
        # A file that does not load: refused, and the service is ready again all the same.
        v.write_conf(text="listeners: [{address: 127.0.0.1:0, mode: nonsense}]\n")
        v.reload()
        assert n.next().startswith("RELOADING=1\n")
        assert n.next() == "READY=1"
        v.wait_for_log(r"reload refused")
        assert v.stop() == 0
        assert n.next() == "STOPPING=1"
    finally:
        n.close()


def test_notify_mainpid_moves_to_the_upgraded_process(viaduct, make_origin, tmp_path):
    n = Notify(tmp_path / "notify")
    port = free_port()
    new = None
    try:
        v = viaduct({"listeners": [{"address": "127.0.0.1:%d" % port, "mode": "forward"}]},
                    env={"NOTIFY_SOCKET": n.path})
        if "memcheck" in os.readlink("/proc/%d/exe" % v.pid):
            pytest.skip("under valgrind /proc/self/exe is valgrind itself")
        assert n.next() == "READY=1\nMAINPID=%d" % v.pid
        v.proc.send_signal(signal.SIGUSR2)
        # The new process says it is ready (systemd takes that from the main process only) and
        # the old one, still the main process, names the new one, in either order; the old one
        # then drains without STOPPING=1.
        got = sorted([n.next(), n.next()])
        m = re.fullmatch(r"MAINPID=(\d+)", got[0])
        new = int(m.group(1))
        assert new != v.pid
        assert got == ["MAINPID=%d" % new, "READY=1\nMAINPID=%d" % new]
        assert v.wait_exit() == 0
        n.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            n.next()
    finally:
        if new:
            stop_pid(new)
        n.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate not installed")
def test_socket_activation_serves_the_connection_that_started_it(viaduct_bin, make_origin,
                                                                 tmp_path):
    o = make_origin(build_response(200, b"ok\n"))
    port = free_port()
    conf = tmp_path / "viaduct.yaml"
    conf.write_text("workers: 2\nlisteners:\n  - address: 127.0.0.1:%d\n    mode: forward\n"
                    "log:\n  level: info\n" % port)
    err = open(tmp_path / "stderr.txt", "wb")
    p = subprocess.Popen(["systemd-socket-activate", "-l", "127.0.0.1:%d" % port, viaduct_bin,
                          "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err,
                         env=sanitizer_env())
    try:
        # systemd-socket-activate listens, and starts viaduct on the first connection; viaduct
        # adopts the socket (LISTEN_FDS) and answers the connection waiting in its queue.
        s = None
        for _ in range(100):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                poll(lambda: False, timeout=0.05)
        assert s is not None
        s.sendall(b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  % o.port)
        data = recv_until_eof(s, timeout=10)
        s.close()
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nok\n")
        log = (tmp_path / "stderr.txt").read_text()
        assert "socket activation: took over 1 listening socket on 127.0.0.1:%d" % port in log
        assert "Address already in use" not in log
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        log = (tmp_path / "stderr.txt").read_text()
        assert "viaduct stopped" in log
        assert "ERROR: AddressSanitizer" not in log and "runtime error" not in log
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        err.close()
