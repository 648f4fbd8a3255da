#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""connect-udp (RFC 9298) throughput through viaduct: datagrams/s and MB/s with one flow and
with N flows, against a UDP echo server, all on 127.0.0.1. Flows are HTTP/1.1 connections
(Upgrade), or with --h2 streams of one HTTP/2 connection (h2c, extended CONNECT).

    bench/connect-udp.py [--h2] [--flows 1,100] [--seconds 5] [--size 1200] [--window 32]

Starts build/viaduct (release build) with a config allowing the echo port, a UDP echo server in
a child process, and for each flow count one client process that opens the flows and keeps up to
--window datagrams in flight per flow (a closed loop: a datagram is sent when an echo comes
back), for --seconds. Reports echoed datagrams per second (each counted once, though it crossed
the proxy twice), payload MB/s one way, and viaduct's CPU seconds per million datagrams from
/proc/PID/stat. Every loop is bounded by time; only loopback addresses are used."""
import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def varint(v):
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return (v | 0x4000).to_bytes(2, "big")
    return (v | 0x80000000).to_bytes(4, "big")


def datagram(payload):
    value = b"\x00" + payload
    return b"\x00" + varint(len(value)) + value


def echo_server(port_w):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    os.write(port_w, b"%d\n" % s.getsockname()[1])
    s.settimeout(120)
    while True:
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            return
        s.sendto(data, peer)


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def open_flow(proxy_port, echo_port):
    c = socket.create_connection(("127.0.0.1", proxy_port))
    c.sendall(b"GET /.well-known/masque/udp/127.0.0.1/%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Connection: Upgrade\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n"
              % echo_port)
    head = b""
    while b"\r\n\r\n" not in head:
        b = c.recv(1)
        if not b:
            sys.exit("proxy closed the flow: %r" % head)
        head += b
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit("no 101: %r" % head)
    c.setblocking(False)
    return c


class H2Flows:
    """N connect-udp streams on one h2c connection, written with raw frames (hpack for the
    request heads); honours the proxy's flow-control windows and opens its own wide."""

    def __init__(self, proxy_port, echo_port, flows):
        import hpack
        self.sock = socket.create_connection(("127.0.0.1", proxy_port))
        self.enc = hpack.Encoder()
        self.buf = bytearray()
        self.conn_win = 65535
        self.stream_win = {}
        self.init_win = 65535
        self.got = {}
        # Preface, SETTINGS (our windows as wide as allowed), a wide connection window.
        out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        out += self.frame(0x4, 0, 0, (0x4).to_bytes(2, "big") + (2**31 - 1).to_bytes(4, "big"))
        out += self.frame(0x8, 0, 0, (2**31 - 1 - 65535).to_bytes(4, "big"))
        self.sids = [1 + 2 * i for i in range(flows)]
        for sid in self.sids:
            head = self.enc.encode([(":method", "CONNECT"), (":protocol", "connect-udp"),
                                    (":scheme", "https"), (":authority", "127.0.0.1"),
                                    (":path", "/.well-known/masque/udp/127.0.0.1/%d/" % echo_port),
                                    ("capsule-protocol", "?1")])
            out += self.frame(0x1, 0x4, sid, head)
            self.stream_win[sid] = None
            self.got[sid] = bytearray()
        self.sock.sendall(out)
        self.ok = set()
        self.sock.settimeout(10)
        while len(self.ok) < flows:
            self.read_frames(self.sock.recv(1 << 20))
        self.sock.setblocking(False)

    @staticmethod
    def frame(ftype, flags, sid, payload):
        return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload

    def read_frames(self, data):
        if not data:
            sys.exit("proxy closed the HTTP/2 connection")
        self.buf += data
        acks = b""
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self.buf[9:9 + n])
            del self.buf[:9 + n]
            if ftype == 0x4 and not flags & 1:  # SETTINGS
                for i in range(0, len(payload), 6):
                    if int.from_bytes(payload[i:i + 2], "big") == 0x4:
                        self.init_win = int.from_bytes(payload[i + 2:i + 6], "big")
                acks += self.frame(0x4, 1, 0, b"")
            elif ftype == 0x8:  # WINDOW_UPDATE
                inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
                if sid == 0:
                    self.conn_win += inc
                elif sid in self.stream_win:
                    self.stream_win[sid] = self.win(sid) + inc
            elif ftype == 0x1 and sid in self.got:  # HEADERS: the 200
                self.ok.add(sid)
            elif ftype == 0x0 and sid in self.got:
                self.got[sid] += payload
            elif ftype in (0x3, 0x7):
                sys.exit("proxy reset the stream or connection: type %d" % ftype)
        if acks:
            t = self.sock.gettimeout()
            self.sock.setblocking(True)
            self.sock.sendall(acks)
            self.sock.settimeout(t)

    def win(self, sid):
        w = self.stream_win[sid]
        return self.init_win if w is None else w

    def send(self, sid, data):
        """Sends what the windows allow; returns the bytes sent."""
        n = min(len(data), self.conn_win, self.win(sid), 16384)
        if n < len(data):
            return 0  # capsules go whole, so a datagram is never split across a stall
        self.sock.setblocking(True)
        self.sock.sendall(self.frame(0x0, 0, sid, data))
        self.sock.setblocking(False)
        self.conn_win -= n
        self.stream_win[sid] = self.win(sid) - n
        return n


def run_h2(proxy_port, echo_port, flows, seconds, size, window, vd_pid):
    h = H2Flows(proxy_port, echo_port, flows)
    cap = datagram(os.urandom(size))
    pending = {sid: window for sid in h.sids}  # datagrams owed to each flow
    got = 0
    t0 = time.monotonic()
    c0 = cpu_ticks(vd_pid)
    deadline = t0 + seconds
    sel = selectors.DefaultSelector()
    sel.register(h.sock, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        for sid in h.sids:
            while pending[sid] and h.send(sid, cap):
                pending[sid] -= 1
        for _ in sel.select(timeout=0.5):
            try:
                data = h.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            h.read_frames(data)
            for sid in h.sids:
                b = h.got[sid]
                n = len(b) // len(cap)
                if n:
                    del b[:n * len(cap)]
                    got += n
                    pending[sid] += n
    elapsed = time.monotonic() - t0
    c1 = cpu_ticks(vd_pid)
    h.sock.close()
    hz = os.sysconf("SC_CLK_TCK")
    return got / elapsed, got * size / elapsed / 1e6, (c1 - c0) / hz / max(got, 1) * 1e6


def run_flows(proxy_port, echo_port, flows, seconds, size, window, vd_pid):
    socks = [open_flow(proxy_port, echo_port) for _ in range(flows)]
    payload = os.urandom(size)
    cap = datagram(payload)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        s.sendall(cap * window)
    got = 0
    bufs = {s: bytearray() for s in socks}
    t0 = time.monotonic()
    c0 = cpu_ticks(vd_pid)
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                sys.exit("flow closed")
            b = bufs[s]
            b += data
            n = len(b) // len(cap)
            if n:
                del b[:n * len(cap)]
                got += n
                try:
                    s.sendall(cap * n)
                except BlockingIOError:
                    pass
    elapsed = time.monotonic() - t0
    c1 = cpu_ticks(vd_pid)
    for s in socks:
        s.close()
    hz = os.sysconf("SC_CLK_TCK")
    cpu = (c1 - c0) / hz
    return got / elapsed, got * size / elapsed / 1e6, cpu / max(got, 1) * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", default="1,100")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=1200)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--h2", action="store_true", help="streams of one HTTP/2 connection")
    a = ap.parse_args()
    binary = os.path.join(ROOT, "build", "viaduct")
    if not os.access(binary, os.X_OK):
        sys.exit("build first: make build")
    r, w = os.pipe()
    echo = os.fork()
    if echo == 0:
        os.close(r)
        echo_server(w)
        os._exit(0)
    os.close(w)
    echo_port = int(os.read(r, 32).split()[0])
    d = tempfile.mkdtemp(prefix="vd-udp-")
    ps = socket.socket()
    ps.bind(("127.0.0.1", 0))
    proxy_port = ps.getsockname()[1]
    ps.close()
    conf = os.path.join(d, "v.yaml")
    with open(conf, "w") as f:
        f.write("workers: 1\nlisteners:\n  - address: 127.0.0.1:%d\n    mode: forward\n"
                "log: {level: warn, access_log: off}\nlimits: {max_connections: 20000}\n"
                "masque: {udp_ports: [%d]}\n" % (proxy_port, echo_port))
    vd = subprocess.Popen([binary, "-c", conf, "--ready-file", os.path.join(d, "ready")])
    try:
        for _ in range(100):
            if os.path.exists(os.path.join(d, "ready")):
                break
            time.sleep(0.05)
        print("| %s | datagrams/s | MB/s (payload, one way) | viaduct CPU s per 10^6 datagrams |"
              % ("HTTP/2 streams" if a.h2 else "HTTP/1.1 flows"))
        print("|---:|---:|---:|---:|")
        for n in [int(x) for x in a.flows.split(",")]:
            run = run_h2 if a.h2 else run_flows
            dps, mbps, cpu = run(proxy_port, echo_port, n, a.seconds, a.size, a.window, vd.pid)
            print("| %d | %.0f | %.1f | %.2f |" % (n, dps, mbps, cpu))
    finally:
        vd.send_signal(signal.SIGTERM)
        vd.wait(20)
        os.kill(echo, signal.SIGTERM)
        os.waitpid(echo, 0)


if __name__ == "__main__":
    main()
