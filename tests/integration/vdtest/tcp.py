# SPDX-License-Identifier: MIT
"""Plain TCP peers for tunnel tests: a listener that runs a handler per connection in a thread
and records what each connection received, plus small helpers for exact socket behaviour."""
import os
import socket
import struct
import threading
import time


def recv_exact(sock, n, timeout=5.0):
    sock.settimeout(timeout)
    data = bytearray()
    while len(data) < n:
        b = sock.recv(n - len(data))
        if not b:
            raise EOFError("EOF after %d of %d bytes: %r" % (len(data), n, bytes(data[:100])))
        data += b
    return bytes(data)


def recv_until_eof(sock, timeout=5.0, limit=1 << 30):
    """All bytes until EOF. Raises ConnectionResetError on a reset, socket.timeout if open."""
    sock.settimeout(timeout)
    data = bytearray()
    while len(data) < limit:
        b = sock.recv(65536)
        if not b:
            return bytes(data)
        data += b
    return bytes(data)


def reset_close(sock):
    """Closes with an RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class TcpConn:
    def __init__(self, sock, peer):
        self.sock = sock
        self.peer = peer
        self.received = bytearray()
        self.eof = threading.Event()
        self.error = None


class TcpServer:
    """Accepts on 127.0.0.1 (or ::1); @handler(conn) runs per connection in its own thread.
    Without a handler it echoes. conns lists every accepted connection in order."""

    def __init__(self, handler=None, host="127.0.0.1", backlog=64):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.lsock = socket.socket(fam, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, 0))
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        self.host = host
        self.handler = handler or echo
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                s, peer = self.lsock.accept()
            except OSError:
                return
            c = TcpConn(s, peer)
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c)
        except Exception as e:  # recorded for the test to inspect
            c.error = e
        finally:
            try:
                c.sock.close()
            except OSError:
                pass

    def wait_conns(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.conns) >= n:
                    return self.conns[n - 1]
            time.sleep(0.01)
        raise AssertionError("expected %d connections, got %d" % (n, len(self.conns)))

    def assert_untouched(self, grace=0.3):
        time.sleep(grace)
        assert not self.conns, "the target was contacted %d times" % len(self.conns)

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.sock.close()
                except OSError:
                    pass


def echo(c):
    """Echoes until EOF, then shuts down its write side."""
    c.sock.settimeout(30)
    while True:
        b = c.sock.recv(65536)
        if not b:
            c.eof.set()
            c.sock.shutdown(socket.SHUT_WR)
            return
        c.received += b
        c.sock.sendall(b)


def record(c):
    """Records until EOF (or reset), then closes."""
    c.sock.settimeout(30)
    try:
        while True:
            b = c.sock.recv(65536)
            if not b:
                break
            c.received += b
    except ConnectionResetError as e:
        c.error = e
    c.eof.set()


def greeting(banner, then=record):
    """Sends @banner first (a server-speaks-first protocol), then runs @then."""
    def h(c):
        c.sock.sendall(banner)
        then(c)
    return h


def blackhole_port():
    """A port whose accept queue is full, so a new connection attempt gets no answer (SYNs
    are dropped): returns (port, [sockets to keep alive])."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    keep = [ls]
    for _ in range(3):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        keep.append(s)
    time.sleep(0.1)
    return port, keep


def congestion_controls():
    """(the system's default TCP congestion control, the names a socket of this process may be
    given with TCP_CONGESTION: available ones, and for a non-root process only allowed ones)."""
    def names(which):
        with open("/proc/sys/net/ipv4/tcp_%scongestion_control" % which) as f:
            return f.read().split()
    usable = names("available_")
    if os.geteuid() != 0:
        allowed = names("allowed_")
        usable = [a for a in usable if a in allowed]
    return names("")[0], usable


def listening(port, timeout=10.0):
    """Waits until 127.0.0.1:@port accepts connections; returns whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False
