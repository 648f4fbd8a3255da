# SPDX-License-Identifier: MIT
"""A tiny UDP DNS server (RFC 1035) on 127.0.0.1 for the proxy's resolver.

Answers A and AAAA queries from a dict {name: [ip, ...]} (IPv4 and IPv6 addresses
mixed; the query type picks). A known name without records of the asked type gets
NOERROR with no answers; an unknown name gets NXDOMAIN with an SOA in the authority
section (negative TTL). Counts queries per (name, type).
"""
import collections
import ipaddress
import socket
import struct
import threading

QTYPE_A, QTYPE_AAAA = 1, 28


class DNSServer:
    def __init__(self, records=None, ttl=60):
        self.records = {k.lower().rstrip("."): list(v) for k, v in (records or {}).items()}
        self.ttl = ttl
        self.queries = collections.Counter()
        self.log = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="dns", daemon=True)
        self.thread.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def set(self, name, ips):
        with self.lock:
            self.records[name.lower().rstrip(".")] = list(ips)

    def count(self, name, qtype=None):
        name = name.lower().rstrip(".")
        with self.lock:
            return sum(n for (q, t), n in self.queries.items()
                       if q == name and (qtype is None or t == qtype))

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def _loop(self):
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                resp = self._answer(data)
            except Exception:  # a malformed query gets no answer
                continue
            if resp:
                try:
                    self.sock.sendto(resp, peer)
                except OSError:
                    pass

    def _answer(self, q):
        qid, flags, qd, _an, _ns, _ar = struct.unpack("!6H", q[:12])
        if qd != 1 or flags & 0x8000:
            return None
        off = 12
        labels = []
        while True:
            n = q[off]
            off += 1
            if n == 0:
                break
            labels.append(q[off:off + n].decode("ascii", "replace"))
            off += n
        qtype, qclass = struct.unpack("!2H", q[off:off + 4])
        question = q[12:off + 4]
        name = ".".join(labels).lower()
        with self.lock:
            self.queries[(name, qtype)] += 1
            self.log.append((name, qtype))
            ips = self.records.get(name)
        rd = flags & 0x0100
        answers = []
        if ips is not None and qclass == 1:
            for ip in ips:
                a = ipaddress.ip_address(ip)
                if qtype == QTYPE_A and a.version == 4 or qtype == QTYPE_AAAA and a.version == 6:
                    rtype = QTYPE_A if a.version == 4 else QTYPE_AAAA
                    answers.append(b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, self.ttl,
                                                             len(a.packed)) + a.packed)
        rcode = 0 if ips is not None else 3
        hflags = 0x8000 | 0x0400 | rd | 0x0080 | rcode  # QR, AA, RD copied, RA
        auth = b""
        nscount = 0
        if not answers:
            # SOA for negative caching (RFC 2308): MNAME/RNAME at the root, minimum = ttl.
            soa = b"\x00\x00" + struct.pack("!5I", 1, 60, 60, 60, self.ttl)
            auth = b"\x00" + struct.pack("!HHIH", 6, 1, self.ttl, len(soa)) + soa
            nscount = 1
        hdr = struct.pack("!6H", qid, hflags, 1, len(answers), nscount, 0)
        return hdr + question + b"".join(answers) + auth
