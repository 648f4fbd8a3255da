#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""connect-udp (RFC 9298 over HTTP/1.1) throughput through viaduct: datagrams/s and MB/s with
one flow and with N flows, against a UDP echo server, all on 127.0.0.1.

    bench/connect-udp.py [--flows 1,100] [--seconds 5] [--size 1200] [--window 32]

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
        print("| flows | datagrams/s | MB/s (payload, one way) | viaduct CPU s per 10^6 datagrams |")
        print("|---:|---:|---:|---:|")
        for n in [int(x) for x in a.flows.split(",")]:
            dps, mbps, cpu = run_flows(proxy_port, echo_port, n, a.seconds, a.size, a.window,
                                       vd.pid)
            print("| %d | %.0f | %.1f | %.2f |" % (n, dps, mbps, cpu))
    finally:
        vd.send_signal(signal.SIGTERM)
        vd.wait(20)
        os.kill(echo, signal.SIGTERM)
        os.waitpid(echo, 0)


if __name__ == "__main__":
    main()
