# SPDX-License-Identifier: MIT
"""An HTTP/2 client for tests, on python3-h2 (Debian's package): ordinary requests over any
number of streams, extended CONNECT (RFC 8441: python3-h2 does not check the server's
SETTINGS_ENABLE_CONNECT_PROTOCOL, so the tests do), and raw frames (hyperframe) for the error
cases of RFC 9113 that a correct client library refuses to produce."""
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.exceptions
import h2.events
import h2.settings
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENABLE_CONNECT_PROTOCOL = 0x8
ENHANCE_YOUR_CALM = 0xB
PROTOCOL_ERROR = 0x1
REFUSED_STREAM = 0x7
CONNECT_ERROR = 0xA


class Stream:
    def __init__(self, sid):
        self.id = sid
        self.headers = None  # final response head: list of (name, value) str
        self.interim = []
        self.trailers = None
        self.data = bytearray()
        self.ended = False
        self.reset = None  # error code of a RST_STREAM from the server

    @property
    def status(self):
        return int(self.header(":status")) if self.headers else None

    def header(self, name, default=None):
        for k, v in self.headers or ():
            if k == name:
                return v
        return default

    def all(self, name):
        return [v for k, v in self.headers or () if k == name]


class H2Client:
    """One HTTP/2 connection. tls: an ssl.SSLContext offering h2 (ALPN), or None for h2c with
    prior knowledge. auto_window: give flow-control credit back as data is read."""

    def __init__(self, addr, port, tls=None, server_hostname="localhost", timeout=10.0,
                 auto_window=True, settings=None):
        s = socket.create_connection((addr, port), timeout=timeout)
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname=server_hostname)
            assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
        self.sock = s
        self.timeout = timeout
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        if settings:
            self.conn.local_settings.update(settings)
        self.conn.initiate_connection()
        self.auto_window = auto_window
        self.streams = {}
        self.goaway = None  # (error_code, last_stream_id)
        self.closed = False
        self.server_settings = {}
        self.pings = 0
        self.flush()
        # The server's SETTINGS come first (RFC 9113 §3.4).
        self.pump_until(lambda: self.server_settings)

    # ---- plumbing
    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def pump(self, timeout=None):
        """Reads once (blocking up to @timeout) and handles the events."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for ev in events:
            self.handle(ev)
        self.flush()
        return True

    def pump_until(self, cond, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("HTTP/2 condition not met in time")
            if not self.pump(left) and self.closed:
                if cond():
                    return
                raise ConnectionError("the server closed the connection")

    def handle(self, ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            for k, v in ev.changed_settings.items():
                self.server_settings[int(k)] = v.new_value
        elif isinstance(ev, h2.events.ResponseReceived):
            self._st(ev.stream_id).headers = ev.headers
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self._st(ev.stream_id).interim.append(ev.headers)
        elif isinstance(ev, h2.events.TrailersReceived):
            self._st(ev.stream_id).trailers = ev.headers
        elif isinstance(ev, h2.events.DataReceived):
            st = self._st(ev.stream_id)
            st.data += ev.data
            if self.auto_window and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self._st(ev.stream_id).ended = True
        elif isinstance(ev, h2.events.StreamReset):
            self._st(ev.stream_id).reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.error_code, ev.last_stream_id)
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings += 1

    def _st(self, sid):
        if sid not in self.streams:
            self.streams[sid] = Stream(sid)
        return self.streams[sid]

    # ---- requests
    def start(self, method, path, authority="localhost", scheme="http", headers=(), body=None,
              end=True, protocol=None):
        sid = self.conn.get_next_available_stream_id()
        h = [(":method", method)]
        if protocol is not None:
            h.append((":protocol", protocol))
        if method != "CONNECT" or protocol is not None:
            h += [(":scheme", scheme), (":path", path)]
        h.append((":authority", authority))
        h += list(headers)
        no_body = body is None and end
        self.conn.send_headers(sid, h, end_stream=no_body)
        self._st(sid)
        if body is not None:
            self.send_data(sid, body, end=end)
        self.flush()
        return sid

    def send_data(self, sid, data, end=False):
        """Sends @data within the flow-control windows, reading while they are closed."""
        view = memoryview(data)
        while view:
            win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if win <= 0:
                self.flush()
                self.pump(1.0)
                continue
            chunk, view = view[:win], view[win:]
            self.conn.send_data(sid, bytes(chunk))
            self.flush()
        if end:
            self.conn.end_stream(sid)
        self.flush()

    def wait(self, sid, timeout=None):
        st = self._st(sid)
        self.pump_until(lambda: st.ended or st.reset is not None, timeout)
        return st

    def wait_head(self, sid, timeout=None):
        st = self._st(sid)
        self.pump_until(lambda: st.headers is not None or st.reset is not None, timeout)
        return st

    def request(self, method, path, **kw):
        return self.wait(self.start(method, path, **kw))

    def wait_goaway(self, timeout=None):
        self.pump_until(lambda: self.goaway is not None, timeout)
        return self.goaway

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class RawH2:
    """A hand-driven HTTP/2 connection for malformed and abusive input: frames are built with
    hyperframe and HPACK, and the server's frames are read one by one (SETTINGS acknowledged,
    header blocks decoded)."""

    def __init__(self, addr, port, timeout=10.0):
        import hpack
        self.sock = socket.create_connection((addr, port), timeout=timeout)
        self.timeout = timeout
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.closed = False
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def send(self, data):
        self.sock.sendall(data)

    def headers(self, sid, headers, end_stream=True, end_headers=True):
        f = HeadersFrame(sid)
        f.data = self.encoder.encode(headers)
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return f.serialize()

    def request(self, sid, path="/", extra=(), end_stream=True):
        return self.headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", path),
                                  (":authority", "localhost")] + list(extra), end_stream)

    def next_frame(self, timeout=None):
        """The next frame from the server, or None once the connection is closed."""
        from hyperframe.frame import Frame
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if len(self.buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) >= 9 + length:
                    f.parse_body(memoryview(self.buf[9:9 + length]))
                    self.buf = self.buf[9 + length:]
                    if isinstance(f, HeadersFrame):
                        f.headers = [(k.decode() if isinstance(k, bytes) else k,
                                      v.decode() if isinstance(v, bytes) else v)
                                     for k, v in self.decoder.decode(f.data)]
                    if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                        ack = SettingsFrame(0)
                        ack.flags.add("ACK")
                        self.sock.sendall(ack.serialize())
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the server in time")
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame from the server in time")
            except (ConnectionResetError, OSError):
                d = b""
            if not d:
                self.closed = True
                return None
            self.buf += d

    def collect(self, until, timeout=None):
        """Reads frames until @until(frame) is true; returns every frame read."""
        out = []
        while True:
            f = self.next_frame(timeout)
            if f is None:
                raise ConnectionError("closed before the expected frame; got %r" % out)
            out.append(f)
            if until(f):
                return out

    def wait_goaway(self, timeout=None):
        from hyperframe.frame import GoAwayFrame
        fs = self.collect(lambda f: isinstance(f, GoAwayFrame), timeout)
        return fs[-1].error_code, fs[-1].last_stream_id

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def stream_result(frames, sid):
    """(status, data, rst error code or None) of stream @sid among @frames."""
    status, data, rst = None, b"", None
    for f in frames:
        if f.stream_id != sid:
            continue
        if isinstance(f, HeadersFrame) and status is None:
            status = int(dict(f.headers)[":status"])
        elif isinstance(f, DataFrame):
            data += f.data
        elif isinstance(f, RstStreamFrame):
            rst = f.error_code
    return status, data, rst


def ends(sid):
    """A collect() condition: stream @sid ended (END_STREAM or RST_STREAM)."""
    return lambda f: f.stream_id == sid and (isinstance(f, RstStreamFrame) or
                                             "END_STREAM" in f.flags)


__all__ = ["H2Client", "RawH2", "stream_result", "ends", "PREFACE", "ContinuationFrame",
           "DataFrame", "HeadersFrame", "PingFrame", "RstStreamFrame", "SettingsFrame",
           "ENABLE_CONNECT_PROTOCOL", "ENHANCE_YOUR_CALM", "PROTOCOL_ERROR", "REFUSED_STREAM",
           "CONNECT_ERROR"]
