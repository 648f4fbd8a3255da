# SPDX-License-Identifier: MIT
"""connect-ip (RFC 9484) over HTTP/1.1 Upgrade and HTTP/2 extended CONNECT, with real TUN
devices. Nothing touches the machine's own network: each test creates two network namespaces,
runs viaduct inside the first (its listener on that namespace's loopback, its TUN devices there)
and puts the peer that answers ping in the second, joined by a veth pair:

    client --127.0.0.1--> viaduct [ns A] --TUN, routing--> veth 198.19.0.1 / fd01::1
                                                    veth 198.19.0.2 / fd01::2 [ns B]

The test's client sockets are created in namespace A by a thread that entered it (setns), so
the test process itself stays in the root namespace. Addresses come from the benchmarking range
198.18.0.0/15 (RFC 2544) and unique-local fd00::/8. The client speaks capsules written from the
RFCs (RFC 9297 §3.2, RFC 9484 §4.7) and builds its own ICMP packets (RFC 792, RFC 4443)."""
import ctypes
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import default_conf
from test_55_masque import (capsule, datagram, expect_capsule_101, read_capsule,
                            send_capsule_upgrade, varint)
from test_61_h2_extended import parse_capsules
from vdtest import yamlconf
from vdtest.dns import DNSServer
from vdtest.h2client import ENABLE_CONNECT_PROTOCOL, H2Client
from vdtest.proc import Viaduct, run_bin, stop_all

CLONE_NEWNET = 0x40000000
POOL4, POOL6 = "198.18.0.0/24", "fd00:18::/120"
ROUTES = ["198.19.0.0/24", "fd01::/64"]
PEER4, PEER6 = "198.19.0.2", "fd01::2"
CLIENT4, CLIENT6 = "198.18.0.1", "fd00:18::1"  # the first address of each pool
# viaduct's ICMP errors come from the address namespace A would send from towards the client:
# its veth addresses (RFC 9484 §7.2.1; masque.ip_icmp_source unset).
PROXY4, PROXY6 = "198.19.0.1", "fd01::1"
TEMPLATE = "/.well-known/masque/ip/%s/%s/"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="connect-ip tests need root (network namespaces, TUN devices) and iproute2's ip")


# ---- namespaces ---------------------------------------------------------------------------------

def sh(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError("%s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns, fn):
    """Runs fn() on a thread that entered namespace @ns; sockets it creates stay in @ns."""
    out = {}

    def run():
        try:
            fd = os.open("/run/netns/" + ns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns " + ns)
            finally:
                os.close(fd)
            out["v"] = fn()
        except BaseException as e:  # noqa: B902 -- re-raised on the test's thread
            out["e"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["v"]


class Net:
    def __init__(self):
        tag = "%d-%d" % (os.getpid(), time.monotonic_ns() % 100000)
        self.a, self.b = "vdci-%s-a" % tag, "vdci-%s-b" % tag
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        # Both veth ends are created inside the namespaces, never in the root one.
        sh("ip", "-n", self.a, "link", "add", "vca", "type", "veth", "peer", "name", "vcb",
           "netns", self.b)
        for ns, dev, v4, v6 in ((self.a, "vca", "198.19.0.1/24", "fd01::1/64"),
                                (self.b, "vcb", "198.19.0.2/24", "fd01::2/64")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            sh("ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", self.b, "route", "add", "default", "via", "198.19.0.1")
        sh("ip", "-n", self.b, "-6", "route", "add", "default", "via", "fd01::1")
        # Forwarding in namespace A only (/proc/sys/net is per namespace).
        sh("ip", "netns", "exec", self.a, "sh", "-c",
           "echo 1 > /proc/sys/net/ipv4/ip_forward && "
           "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")

    def links(self):
        return sh("ip", "-n", self.a, "-o", "link", "show")

    def close(self):
        for ns in (self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def net():
    n = Net()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def vd_ns(viaduct_bin, tmp_path, net):
    """Starts viaduct inside namespace A with the default test configuration merged with
    overrides; teardown as the viaduct fixture (exit 0, no [alert], no sanitizer report)."""
    started = []

    def start(overrides=None):
        d = tmp_path / ("vd%d" % len(started))
        d.mkdir()
        wrapper = d / "viaduct-in-netns"
        wrapper.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (net.a, viaduct_bin))
        wrapper.chmod(0o755)
        conf = default_conf(d, _NoDns())
        conf["masque"] = {"ip_pool": [POOL4, POOL6], "ip_routes": ROUTES}
        if overrides:
            conf = yamlconf.merge(conf, overrides)
        v = Viaduct(str(wrapper), d, conf=conf)
        started.append(v)
        return v

    yield start
    stop_all(started)


class _NoDns:
    address = "127.0.0.1:53"  # namespace A has no resolver; tests that need one bring theirs


# ---- packets ----------------------------------------------------------------------------------

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, ttl=64, df=False):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0x4000 if df else 0, ttl,
                    proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def ping4(src, dst, ident, seq, data=b"viaduct-connect-ip"):
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    return ipv4(src, dst, 1, icmp)


def ping6(src, dst, ident, seq, data=b"viaduct-connect-ip"):
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    icmp = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + data
    pseudo = s + d + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", csum(pseudo + icmp)) + icmp[4:]
    return struct.pack("!IHBB", 0x60000000, len(icmp), 58, 64) + s + d + icmp


def udp4(src, dst, sport, dport, data):
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    return ipv4(src, dst, 17, u)


def udp6(src, dst, sport, dport, data):
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    pseudo = s + d + struct.pack("!I3xB", len(u), 17)
    u = u[:6] + struct.pack("!H", csum(pseudo + u) or 0xFFFF) + u[8:]
    return struct.pack("!IHBB", 0x60000000, len(u), 17, 64) + s + d + u


def parse_ip(p):
    """(version, src, dst, proto, payload) of a whole packet."""
    if p[0] >> 4 == 4:
        hl = (p[0] & 15) * 4
        return 4, socket.inet_ntoa(p[12:16]), socket.inet_ntoa(p[16:20]), p[9], p[hl:]
    return (6, socket.inet_ntop(socket.AF_INET6, p[8:24]),
            socket.inet_ntop(socket.AF_INET6, p[24:40]), p[6], p[40:])


def echo_requests(raw):
    """(source, sequence) of the ICMP echo requests a raw socket received so far."""
    raw.settimeout(0.3)
    got = []
    while True:
        try:
            p = raw.recv(65535)
        except socket.timeout:
            return got
        _, src, _, _, body = parse_ip(p)
        if body[0] == 8:
            got.append((src, struct.unpack("!H", body[6:8])[0]))


def assert_echo_reply(pkt, ver, src, dst, ident, seq, data=b"viaduct-connect-ip"):
    v, s, d, proto, body = parse_ip(pkt)
    assert (v, s, d) == (ver, src, dst), parse_ip(pkt)
    assert proto == (1 if ver == 4 else 58)
    typ, code, _, i, q = struct.unpack("!BBHHH", body[:8])
    assert (typ, code, i, q) == ((0 if ver == 4 else 129), 0, ident, seq)
    assert body[8:] == data


def assert_icmp_error(pkt, ver, src, dst, typ, code, invoking, mtu=None):
    """An ICMP error generated by viaduct (RFC 9484 §7.2.1): addresses, type and code, the MTU
    field, both checksums computed here, and the invoking packet quoted as far as RFC 1812
    §4.3.2.3 (576 bytes in all) or RFC 4443 §2.4 (c) (1280) allows."""
    v, s, d, proto, body = parse_ip(pkt)
    assert (v, s, d) == (ver, src, dst), parse_ip(pkt)[:3]
    if ver == 4:
        assert proto == 1 and csum(pkt[:20]) == 0 and csum(body) == 0
        assert pkt[1] == 0xC0  # precedence 6, internetwork control (RFC 1812 §4.3.2.5)
        assert len(pkt) == min(576, 28 + len(invoking))
        assert body[:2] == bytes([typ, code])
        assert struct.unpack("!H", body[6:8])[0] == (mtu or 0)
    else:
        assert proto == 58 and struct.unpack("!H", pkt[4:6])[0] == len(body)
        pseudo = pkt[8:40] + struct.pack("!I3xB", len(body), 58)
        assert csum(pseudo + body) == 0
        assert len(pkt) == min(1280, 48 + len(invoking))
        assert body[:2] == bytes([typ, code])
        assert struct.unpack("!I", body[4:8])[0] == (mtu or 0)
    assert body[8:] == invoking[:len(body) - 8]


# ---- capsules ---------------------------------------------------------------------------------

def addr_bytes(a):
    return ipaddress.ip_address(a).packed


def assigned(entries):
    """ADDRESS_ASSIGN / ADDRESS_REQUEST value from [(req_id, "addr", plen)]."""
    out = b""
    for rid, a, plen in entries:
        ip = ipaddress.ip_address(a)
        out += varint(rid) + bytes([ip.version]) + ip.packed + bytes([plen])
    return out


def routes(entries):
    """ROUTE_ADVERTISEMENT value from [("start", "end", proto)]."""
    out = b""
    for s, e, proto in entries:
        ip = ipaddress.ip_address(s)
        out += bytes([ip.version]) + ip.packed + addr_bytes(e) + bytes([proto])
    return out


ALL_ROUTES = routes([("198.19.0.0", "198.19.0.255", 0),
                     ("fd01::", "fd01::ffff:ffff:ffff:ffff", 0)])
BOTH_ADDRS = assigned([(0, CLIENT4, 32), (0, CLIENT6, 128)])


def open_ip(vd, net, target="*", proto="*", early=b"", extra=b""):
    c = in_netns(net.a, vd.connect)
    return send_capsule_upgrade(c, vd, "connect-ip", TEMPLATE % (target, proto), early, extra)


def expect_101(c):
    expect_capsule_101(c, "connect-ip")


def next_datagram(c):
    ctype, value = read_capsule(c.reader)
    assert ctype == 0, (ctype, value)
    assert value[0] == 0  # context ID 0: an IP packet
    return value[1:]


# ---- HTTP/1.1 ---------------------------------------------------------------------------------

def test_ping_both_families_and_spoofed_source_dropped(vd_ns, net):
    vd = vd_ns()
    c = open_ip(vd, net)
    expect_101(c)
    # The proxy speaks first: every address it assigned (Request ID 0), then its routes.
    assert read_capsule(c.reader) == (1, BOTH_ADDRS)
    assert read_capsule(c.reader) == (3, ALL_ROUTES)
    dev = [ln for ln in net.links().splitlines() if ": vdip" in ln]
    assert len(dev) == 1 and "UP" in dev[0], net.links()

    c.send(datagram(ping4(CLIENT4, PEER4, 0x77, 1)))
    assert_echo_reply(next_datagram(c), 4, PEER4, CLIENT4, 0x77, 1)
    c.send(datagram(ping6(CLIENT6, PEER6, 0x78, 1)))
    assert_echo_reply(next_datagram(c), 6, PEER6, CLIENT6, 0x78, 1)

    # A spoofed source never reaches the peer (a raw ICMP socket there sees every echo request
    # that arrives); the next genuine ping is the next answer.
    seen = in_netns(net.b, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                 socket.IPPROTO_ICMP))
    try:
        c.send(datagram(ping4("198.18.0.99", PEER4, 0x77, 2)))
        c.send(datagram(ping4(CLIENT4, PEER4, 0x77, 3)))
        assert_echo_reply(next_datagram(c), 4, PEER4, CLIENT4, 0x77, 3)
        assert echo_requests(seen) == [(CLIENT4, 3)]
    finally:
        seen.close()
    c.close()
    vd.wait_for_log(r"connect-ip vdip\d+: dropped a packet from the client \(source 198\.18\.0\.99 "
                    r"not allowed, protocol 1\)")
    n4, n6 = len(ping4(CLIENT4, PEER4, 0, 0)), len(ping6(CLIENT6, PEER6, 0, 0))
    vd.wait_for_log(r'"GET /\.well-known/masque/ip/\*/\*/ HTTP/1\.1" 101 .*tunnel=connect-ip '
                    r'up=%d down=%d end=closed dgrams_up=3 dgrams_down=3 dropped_up=1 '
                    r'dropped_down=\d+' % (2 * n4 + n6, 2 * n4 + n6), access=True)
    # The device (and its routes) went with the session.
    deadline = time.monotonic() + 5
    while ": vdip" in net.links() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ": vdip" not in net.links()


def test_destination_outside_routes_and_link_local_dropped(vd_ns, net):
    vd = vd_ns()
    c = open_ip(vd, net, early=datagram(ping4(CLIENT4, PEER4, 5, 1)))
    expect_101(c)
    assert read_capsule(c.reader) == (1, BOTH_ADDRS)
    assert read_capsule(c.reader) == (3, ALL_ROUTES)
    # The optimistic ping, sent before the 101, went through.
    assert_echo_reply(next_datagram(c), 4, PEER4, CLIENT4, 5, 1)
    outside, link_local = ping4(CLIENT4, "203.0.113.7", 5, 2), ping6(CLIENT6, "fe80::1", 5, 3)
    c.send(datagram(outside) +
           datagram(link_local) +
           datagram(ping6(CLIENT6, "ff0e::1", 5, 4)) +
           datagram(b"\x45\x00garbage") +
           datagram(ping4(CLIENT4, PEER4, 5, 4), ctx=2) +
           capsule(0x2A, b"unknown, skipped") +
           datagram(ping4(CLIENT4, PEER4, 5, 5)))
    # RFC 9484 §7.2.1: the refused destinations are answered with Destination Unreachable,
    # administratively prohibited, in order; the multicast one (RFC 4443 §2.4 (e)), the
    # malformed packet and the unknown context ID get nothing.
    assert_icmp_error(next_datagram(c), 4, PROXY4, CLIENT4, 3, 13, outside)
    assert_icmp_error(next_datagram(c), 6, PROXY6, CLIENT6, 1, 1, link_local)
    assert_echo_reply(next_datagram(c), 4, PEER4, CLIENT4, 5, 5)
    c.close()
    vd.wait_for_log(r"dropped a packet from the client \(destination 203\.0\.113\.7 not allowed")
    vd.wait_for_log(r"dropped a packet from the client \(link-local fe80::1 not allowed")
    vd.wait_for_log(r"tunnel=connect-ip .* dgrams_up=2 dgrams_down=2 dropped_up=5 dropped_down=\d+ "
                    r"icmp=2", access=True)


def test_address_request_answered_and_empty_request_aborts(vd_ns, net):
    vd = vd_ns()
    c = open_ip(vd, net)
    expect_101(c)
    assert read_capsule(c.reader) == (1, BOTH_ADDRS)
    assert read_capsule(c.reader) == (3, ALL_ROUTES)
    # RFC 9484 §4.7.2: one Assigned Address per Requested Address, with its Request ID; the
    # full list (§4.7.1) keeps the IPv6 address.
    c.send(capsule(2, assigned([(7, "0.0.0.0", 32)])))
    assert read_capsule(c.reader) == (1, assigned([(7, CLIENT4, 32), (0, CLIENT6, 128)]))
    # The client's own routes are validated, not installed: nothing comes back.
    c.send(capsule(3, routes([("10.0.0.0", "10.0.0.255", 0)])))
    c.send(capsule(2, b""))  # §4.7.2: zero Requested Addresses: abort the stream
    c.assert_closed()
    vd.wait_for_log(r"malformed capsule 0x2 from the client: ADDRESS_REQUEST without a "
                    r"Requested Address")
    vd.wait_for_log(r"tunnel=connect-ip .* end=malformed", access=True)


def test_scoped_request(vd_ns, net):
    """target 198.19.0.2, ipproto 17 (UDP): one IPv4 address, one route for UDP only. ICMP is
    always allowed (§4.6), so both the ping and the port-unreachable error come through; TCP is
    dropped."""
    vd = vd_ns()
    c = open_ip(vd, net, target=PEER4, proto="17")
    expect_101(c)
    assert read_capsule(c.reader) == (1, assigned([(0, CLIENT4, 32)]))
    assert read_capsule(c.reader) == (3, routes([(PEER4, PEER4, 17)]))
    c.send(datagram(ping4(CLIENT4, PEER4, 9, 1)))
    assert_echo_reply(next_datagram(c), 4, PEER4, CLIENT4, 9, 1)
    tcp_syn = ipv4(CLIENT4, PEER4, 6, struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02,
                                                  1024, 0, 0))
    c.send(datagram(tcp_syn))
    c.send(datagram(udp4(CLIENT4, PEER4, 40000, 9, b"nobody listens")))
    # viaduct refuses the TCP segment with an ICMP error from an address outside the scope,
    # which the client must accept (RFC 9484 §4.6, §7.2.1).
    assert_icmp_error(next_datagram(c), 4, PROXY4, CLIENT4, 3, 13, tcp_syn)
    v, s, d, proto, body = parse_ip(next_datagram(c))
    assert (v, s, d, proto) == (4, PEER4, CLIENT4, 1)
    assert body[:2] == b"\x03\x03"  # destination unreachable, port unreachable
    c.close()
    vd.wait_for_log(r"dropped a packet from the client \(protocol 198\.19\.0\.2 not allowed, "
                    r"protocol 6\)")


def test_hostname_target_resolved(vd_ns, net):
    dns = in_netns(net.a, lambda: DNSServer({"peer.test": [PEER4, PEER6]}))
    try:
        vd = vd_ns({"resolver": {"nameservers": [dns.address]}})
        c = open_ip(vd, net, target="peer.test")
        expect_101(c)
        assert read_capsule(c.reader) == (1, BOTH_ADDRS)
        assert read_capsule(c.reader) == (3, routes([(PEER4, PEER4, 0), (PEER6, PEER6, 0)]))
        c.send(datagram(ping6(CLIENT6, PEER6, 3, 3)))
        assert_echo_reply(next_datagram(c), 6, PEER6, CLIENT6, 3, 3)
    finally:
        dns.stop()


def test_pool_exhausted_then_reused(vd_ns, net):
    vd = vd_ns({"masque": {"ip_max_sessions": 1}})
    c1 = open_ip(vd, net)
    expect_101(c1)
    assert read_capsule(c1.reader) == (1, BOTH_ADDRS)
    c2 = open_ip(vd, net)
    resp = c2.response()
    assert resp.status == 503 and b"address pool exhausted" in resp.body
    c1.close()
    vd.wait_for_log(r"tunnel=connect-ip .* end=closed", access=True)
    c3 = open_ip(vd, net)
    expect_101(c3)
    assert read_capsule(c3.reader) == (1, BOTH_ADDRS)  # the same slot, free again


def test_two_sessions_own_addresses_and_devices_then_idle(vd_ns, net):
    vd = vd_ns({"masque": {"idle_timeout": "600ms"}})
    c1, c2 = open_ip(vd, net), open_ip(vd, net)
    for c in (c1, c2):
        expect_101(c)
    assert read_capsule(c1.reader) == (1, BOTH_ADDRS)
    assert read_capsule(c2.reader) == (1, assigned([(0, "198.18.0.2", 32),
                                                    (0, "fd00:18::2", 128)]))
    assert len([ln for ln in net.links().splitlines() if ": vdip" in ln]) == 2
    for c in (c1, c2):
        assert read_capsule(c.reader)[0] == 3
    # Each session only receives what is addressed to it.
    c2.send(datagram(ping4("198.18.0.2", PEER4, 2, 1)))
    c1.send(datagram(ping4(CLIENT4, PEER4, 1, 1)))
    assert_echo_reply(next_datagram(c1), 4, PEER4, CLIENT4, 1, 1)
    assert_echo_reply(next_datagram(c2), 4, PEER4, "198.18.0.2", 2, 1)
    # c2 also may not use c1's address.
    c2.send(datagram(ping4(CLIENT4, PEER4, 2, 2)))
    # Both fall idle: the streams close, the devices go.
    c1.assert_closed(timeout=5)
    c2.assert_closed(timeout=5)
    vd.wait_for_log(r"tunnel=connect-ip .*end=idle dgrams_up=1 dgrams_down=1 dropped_up=0 ",
                    access=True)
    vd.wait_for_log(r"tunnel=connect-ip .*end=idle dgrams_up=1 dgrams_down=1 dropped_up=1 ",
                    access=True)
    deadline = time.monotonic() + 5
    while ": vdip" in net.links() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ": vdip" not in net.links()


@pytest.mark.parametrize("path,extra,status,text", [
    (TEMPLATE % ("198.19.0.1%2F24", "*"), b"", 400, b"bits set past its length"),
    (TEMPLATE % ("198.19.0.0%2F33", "*"), b"", 400, b"invalid prefix length"),
    (TEMPLATE % ("*", "256"), b"", 400, b"invalid ipproto"),
    (TEMPLATE % ("bad%zz", "*"), b"", 400, b"invalid target"),
    (TEMPLATE % ("*", "*"), b"Capsule-Protocol: ?0\r\n", 400, b"malformed connect-ip"),
    (TEMPLATE % ("*", "*"), b"Content-Length: 2\r\n", 400, b"malformed connect-ip"),
    (TEMPLATE % ("*", "0"), b"", 403, b"IPv6 extension header"),
    (TEMPLATE % ("203.0.113.0%2F24", "*"), b"", 403, b"nothing to route"),
])
def test_refusals(vd_ns, net, path, extra, status, text):
    vd = vd_ns()
    c = in_netns(net.a, vd.connect)
    c.send(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: connect-ip\r\n%s\r\n"
           % (path.encode(), extra))
    resp = c.response()
    assert resp.status == status and text in resp.body, (resp.status, resp.body)
    assert ": vdip" not in net.links()


def test_off_by_default(vd_ns, net):
    vd = vd_ns({"masque": {"ip_pool": []}})
    c = open_ip(vd, net)
    resp = c.response()
    assert resp.status == 403 and b"masque.ip_pool" in resp.body


def test_icmp_packet_too_big(vd_ns, net):
    """RFC 9484 §7.2.1: a packet larger than the tunnel's MTU that may not be fragmented gets
    IPv4 fragmentation needed (RFC 1191 §4) or ICMPv6 Packet Too Big (RFC 4443 §3.2) with the
    MTU; an IPv4 packet without DF goes on, and the kernel fragments it."""
    vd = vd_ns({"masque": {"ip_mtu": 1280}})
    sink = in_netns(net.b, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        sink.bind((PEER4, 9999))
        sink.settimeout(5)
        c = open_ip(vd, net)
        expect_101(c)
        assert read_capsule(c.reader) == (1, BOTH_ADDRS)
        assert read_capsule(c.reader) == (3, ALL_ROUTES)
        big4 = ipv4(CLIENT4, PEER4, 17, struct.pack("!HHHH", 40000, 9999, 1380, 0) + b"d" * 1372,
                    df=True)
        big6 = udp6(CLIENT6, PEER6, 40000, 9999, b"e" * 1352)
        assert len(big4) == len(big6) == 1400
        c.send(datagram(big4) + datagram(big6))
        assert_icmp_error(next_datagram(c), 4, PROXY4, CLIENT4, 3, 4, big4, mtu=1280)
        assert_icmp_error(next_datagram(c), 6, PROXY6, CLIENT6, 2, 0, big6, mtu=1280)
        # Exactly the MTU passes; so does a larger IPv4 packet without DF.
        fits = udp4(CLIENT4, PEER4, 40000, 9999, b"f" * (1280 - 28))
        c.send(datagram(fits) + datagram(udp4(CLIENT4, PEER4, 40000, 9999, b"g" * 1372)))
        assert sink.recv(2000) == b"f" * 1252
        assert sink.recv(2000) == b"g" * 1372
        c.send(datagram(ping4(CLIENT4, PEER4, 6, 1)))
        assert_echo_reply(next_datagram(c), 4, PEER4, CLIENT4, 6, 1)
        c.close()
    finally:
        sink.close()
    vd.wait_for_log(r"dropped a packet from the client \(1400 bytes, larger than the MTU 1280\)")
    vd.wait_for_log(r"tunnel=connect-ip .* dgrams_up=3 dgrams_down=1 dropped_up=2 dropped_down=\d+ "
                    r"icmp=2", access=True)


def test_icmp_rate_limited_and_source_configured(vd_ns, net):
    """masque.ip_icmp_burst errors at once, then masque.ip_icmp_rate a second; the source is
    masque.ip_icmp_source when set. A spoofed source never gets an error."""
    vd = vd_ns({"masque": {"ip_icmp_rate": 1, "ip_icmp_burst": 3,
                           "ip_icmp_source": ["192.0.2.1", "2001:db8::1"]}})
    c = open_ip(vd, net)
    expect_101(c)
    assert read_capsule(c.reader) == (1, BOTH_ADDRS)
    assert read_capsule(c.reader) == (3, ALL_ROUTES)
    refused = [ping4(CLIENT4, "203.0.113.%d" % i, 7, i) for i in range(1, 11)]
    c.send(datagram(ping4("198.18.0.99", "203.0.113.1", 7, 0)) +
           b"".join(datagram(p) for p in refused) + datagram(ping4(CLIENT4, PEER4, 7, 99)))
    for p in refused[:3]:
        assert_icmp_error(next_datagram(c), 4, "192.0.2.1", CLIENT4, 3, 13, p)
    # The fourth datagram is the echo reply: the other seven errors were over the rate.
    assert_echo_reply(next_datagram(c), 4, PEER4, CLIENT4, 7, 99)
    c.close()
    vd.wait_for_log(r"ICMP errors over masque\.ip_icmp_rate 1/s \(burst 3\)")
    vd.wait_for_log(r"tunnel=connect-ip .* dgrams_up=1 dgrams_down=1 dropped_up=11 "
                    r"dropped_down=\d+ icmp=3", access=True)


def test_icmp_off(vd_ns, net):
    vd = vd_ns({"masque": {"ip_icmp": False, "ip_mtu": 1280}})
    c = open_ip(vd, net)
    expect_101(c)
    assert read_capsule(c.reader) == (1, BOTH_ADDRS)
    assert read_capsule(c.reader) == (3, ALL_ROUTES)
    c.send(datagram(ping4(CLIENT4, "203.0.113.7", 8, 1)) +
           datagram(udp6(CLIENT6, PEER6, 40000, 9, b"h" * 1400)) +
           datagram(ping6(CLIENT6, PEER6, 8, 2)))
    assert_echo_reply(next_datagram(c), 6, PEER6, CLIENT6, 8, 2)
    c.close()
    vd.wait_for_log(r"tunnel=connect-ip .* dgrams_up=1 dgrams_down=1 dropped_up=2 "
                    r"dropped_down=\d+ icmp=0", access=True)


# ---- HTTP/2 -----------------------------------------------------------------------------------

def test_ping_over_h2(vd_ns, net):
    vd = vd_ns()
    c = in_netns(net.a, lambda: H2Client("127.0.0.1", vd.port()))
    with c:
        assert c.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1
        sid = c.start("CONNECT", TEMPLATE % ("*", "*"), protocol="connect-ip", scheme="https",
                      authority=vd.authority(), headers=[("capsule-protocol", "?1")], end=False)
        st = c.wait_head(sid)
        assert st.status == 200 and st.header("capsule-protocol") == "?1"
        c.pump_until(lambda: len(parse_capsules(st.data)) >= 2)
        assert parse_capsules(st.data)[:2] == [(1, BOTH_ADDRS), (3, ALL_ROUTES)]
        data = datagram(ping4(CLIENT4, PEER4, 0x42, 1)) + datagram(ping4("198.18.0.7", PEER4, 1, 1))
        c.send_data(sid, data[:9])  # a capsule split across DATA frames
        c.send_data(sid, data[9:] + datagram(ping6(CLIENT6, PEER6, 0x43, 1)))
        c.pump_until(lambda: len(parse_capsules(st.data)) >= 4)
        caps = parse_capsules(st.data)
        assert [t for t, _ in caps] == [1, 3, 0, 0]
        replies = sorted((v[1:] for _, v in caps[2:]), key=lambda p: p[0])
        assert_echo_reply(replies[0], 4, PEER4, CLIENT4, 0x42, 1)
        assert_echo_reply(replies[1], 6, PEER6, CLIENT6, 0x43, 1)
        c.conn.end_stream(sid)
        c.flush()
        c.wait(sid)
    vd.wait_for_log(r'"CONNECT https://127\.0\.0\.1:\d+/\.well-known/masque/ip/\*/\*/ HTTP/2\.0" '
                    r'200 .*tunnel=connect-ip .*end=closed dgrams_up=2 dgrams_down=2 '
                    r'dropped_up=1 ', access=True)


def test_h2_refusals(vd_ns, net):
    vd = vd_ns()
    c = in_netns(net.a, lambda: H2Client("127.0.0.1", vd.port()))
    with c:
        st = c.request("CONNECT", "/not/the/template", protocol="connect-ip", scheme="https",
                       authority=vd.authority())
        assert st.status == 404
        st = c.request("CONNECT", TEMPLATE % ("*", "*"), protocol="connect-ip", scheme="https",
                       authority=vd.authority(), headers=[("capsule-protocol", "?0")])
        assert st.status == 400
        st = c.request("CONNECT", TEMPLATE % ("10.9.0.0%2F16", "*"), protocol="connect-ip",
                       scheme="https", authority=vd.authority())
        assert st.status == 403 and b"nothing to route" in bytes(st.data)


# ---- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("masque,key,text", [
    ("ip_pool: [10.0.0.0/24, 10.1.0.0/24]", "masque.ip_pool[1]", "one IPv4 and one IPv6"),
    ("ip_pool: [all]", "masque.ip_pool[0]", "'all' is not a prefix here"),
    ("ip_routes: [10.0.0.0/33]", "masque.ip_routes[0]", "bad CIDR"),
    ("tun_name: way-too-long-name", "masque.tun_name", "1 to 12 letters"),
    ("tun_name: 'a/b'", "masque.tun_name", "1 to 12 letters"),
    ("ip_mtu: 1000", "masque.ip_mtu", "from 1280 to 65535"),
    ("ip_max_sessions: 70000", "masque.ip_max_sessions", "from 1 to 65536"),
    ("ip_icmp: maybe", "masque.ip_icmp", "expected true or false"),
    ("ip_icmp_rate: 0", "masque.ip_icmp_rate", "from 1 to 100000"),
    ("ip_icmp_burst: 100001", "masque.ip_icmp_burst", "from 1 to 100000"),
    ("ip_icmp_source: [192.0.2.0/24]", "masque.ip_icmp_source[0]", "expected an address"),
    ("ip_icmp_source: [192.0.2.1, 192.0.2.2]", "masque.ip_icmp_source[1]",
     "one IPv4 and one IPv6"),
    ("ip_template: /ip/{ipproto}/{target}/", "masque.ip_template", "{target} and then {ipproto}"),
])
def test_config_errors(viaduct_bin, tmp_path, masque, key, text):
    path = tmp_path / "bad.yaml"
    path.write_text("masque:\n  %s\n" % masque)
    r = run_bin(viaduct_bin, ["-t", "-c", str(path)])
    assert r.returncode == 1
    assert "%s:2:" % path in r.stderr and key + ": " in r.stderr and text in r.stderr, r.stderr


def test_config_icmp_source_in_pool(viaduct_bin, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("masque:\n  ip_pool: [198.18.0.0/24]\n  ip_icmp_source: [198.18.0.9]\n")
    r = run_bin(viaduct_bin, ["-t", "-c", str(path)])
    assert r.returncode == 1
    assert "%s:3:" % path in r.stderr and "masque.ip_icmp_source[0]: " in r.stderr
    assert "inside masque.ip_pool" in r.stderr, r.stderr


def test_config_ok(viaduct_bin, tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("masque:\n  ip_pool: [198.18.0.0/24, 'fd00:18::/120']\n"
                    "  ip_routes: [0.0.0.0/0, '::/0']\n  tun_name: mip\n  ip_mtu: 1280\n"
                    "  ip_max_sessions: 65536\n  ip_template: /ip/{target}/{ipproto}\n"
                    "  ip_icmp: true\n  ip_icmp_rate: 100000\n  ip_icmp_burst: 1\n"
                    "  ip_icmp_source: ['2001:db8::1', 192.0.2.1]\n")
    r = run_bin(viaduct_bin, ["-t", "-c", str(path)])
    assert r.returncode == 0, r.stderr
