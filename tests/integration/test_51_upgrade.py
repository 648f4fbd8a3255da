# SPDX-License-Identifier: MIT
"""Upgrade relays (RFC 9110 §7.8) and WebSocket (RFC 6455) through the proxy, in forward and
reverse mode, against a real WebSocket origin (python3-websockets). The reverse-mode client is
the websockets library itself; the forward-mode client writes its frames by hand because the
library cannot send an absolute-form request."""
import asyncio
import base64
import hashlib
import os
import struct
import threading
import time

import pytest
import websockets  # python3-websockets, installed by tools/install-deps.sh test

from vdtest.httpmsg import build_response

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsOrigin:
    """A websockets echo server on its own event loop thread; records request headers."""

    def __init__(self):
        self.headers = []
        self.messages = []  # every message received, in order
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def echo(ws, path):
            self.headers.append(dict(ws.request_headers.raw_items()))
            async for msg in ws:
                self.messages.append(msg)
                await ws.send(msg)

        async def main():
            self.server = await websockets.serve(echo, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(main())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10)

    def stop(self):
        async def shut():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def ws_origin():
    o = WsOrigin()
    yield o
    o.stop()


def frame(opcode, payload, mask=True):
    head = bytes([0x80 | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frame(reader):
    b0, b1 = reader.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", reader.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", reader.read_exact(8))[0]
    assert not b1 & 0x80, "server frames are not masked"
    return b0 & 0x0F, reader.read_exact(n)


def test_websocket_forward_mode_handmade_client(proxy, ws_origin):
    key = base64.b64encode(os.urandom(16))
    c = proxy.connect()
    c.send(b"GET http://127.0.0.1:%d/chat HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
           b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (ws_origin.port, ws_origin.port, key))
    resp = c.response(stop_at_interim=True)
    assert resp.status == 101
    assert resp.headers.get("upgrade").lower() == "websocket"
    assert "upgrade" in resp.headers.tokens("connection")
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    assert resp.headers.get("sec-websocket-accept") == accept
    assert not resp.headers.has("content-length") and not resp.headers.has("transfer-encoding")
    # The origin saw exactly one Upgrade and a Connection naming it, and the proxy's Via. Its
    # handler records them after sending the 101, so wait for it.
    deadline = time.monotonic() + 5
    while not ws_origin.headers and time.monotonic() < deadline:
        time.sleep(0.01)
    h = {k.lower(): v for k, v in ws_origin.headers[0].items()}
    assert h["upgrade"] == "websocket"
    assert h["connection"].lower() == "upgrade"
    assert h["via"] == "1.1 viaduct"
    c.send(frame(0x1, b"hello over a proxy"))
    assert read_frame(c.reader) == (0x1, b"hello over a proxy")
    big = os.urandom(70000)
    c.send(frame(0x2, big))
    assert read_frame(c.reader) == (0x2, big)
    c.send(frame(0x8, struct.pack("!H", 1000)))
    op, payload = read_frame(c.reader)
    assert op == 0x8 and payload[:2] == struct.pack("!H", 1000)
    assert c.wait_closed() == b""
    c.close()
    proxy.wait_for_log(r'"GET http://127\.0\.0\.1:%d/chat HTTP/1\.1" 101 .* tunnel=websocket '
                       r'up=\d+ down=\d+ end=closed' % ws_origin.port, access=True)


def test_websocket_reverse_mode_real_client(viaduct, ws_origin):
    vd = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                  "routes": [{"upstream": "http://127.0.0.1:%d" % ws_origin.port}]})

    async def session():
        async with websockets.connect("ws://%s/echo" % vd.authority()) as ws:
            await ws.send("text frame")
            assert await ws.recv() == "text frame"
            await ws.send(b"\x00\x01binary\xff")
            assert await ws.recv() == b"\x00\x01binary\xff"
            await ws.close(code=1000, reason="done")
            return ws.close_code

    assert asyncio.run(asyncio.wait_for(session(), 20)) == 1000


def test_token_not_allowed_is_stripped(proxy, make_origin):
    o = make_origin()
    c = proxy.connect()
    resp = c.exchange("GET", o.url("/"), headers=[("Connection", "Upgrade"), ("Upgrade", "h2c")])
    assert resp.status == 200
    req = o.requests[0]
    assert req.header("upgrade") is None and req.header("connection") is None
    # The connection stays an HTTP connection.
    assert c.exchange("GET", o.url("/again")).status == 200


def test_upgrade_tokens_configurable(viaduct, make_origin):
    o = make_origin([build_response(101, headers=[("Upgrade", "myproto"),
                                                  ("Connection", "Upgrade")], length=False)
                     + b"server-first"])
    vd = viaduct({"tunnel": {"upgrade_protocols": ["myproto"]}})
    c = vd.connect()
    c.request("GET", o.url("/"), headers=[("Connection", "upgrade"), ("Upgrade", "MyProto/2")])
    resp = c.response(stop_at_interim=True)
    assert resp.status == 101
    assert c.reader.read_exact(12) == b"server-first"
    assert o.requests[0].header("upgrade") == "MyProto/2"


def test_non_101_answer_is_an_ordinary_response(proxy, make_origin):
    o = make_origin([build_response(426, b"upgrade refused\n", headers=[("Upgrade", "websocket")]),
                     build_response(200, b"next\n")])
    c = proxy.connect()
    resp = c.exchange("GET", o.url("/ws"), headers=[("Connection", "Upgrade"),
                                                    ("Upgrade", "websocket"),
                                                    ("Sec-WebSocket-Version", "13"),
                                                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
    assert resp.status == 426 and resp.body == b"upgrade refused\n"
    assert not resp.headers.has("upgrade")
    assert c.exchange("GET", o.url("/next")).body == b"next\n"


def test_upgrade_with_body_is_not_relayed(proxy, make_origin):
    o = make_origin()
    c = proxy.connect()
    resp = c.exchange("POST", o.url("/"), headers=[("Connection", "Upgrade"),
                                                   ("Upgrade", "websocket")], body=b"data")
    assert resp.status == 200
    assert o.requests[0].header("upgrade") is None
