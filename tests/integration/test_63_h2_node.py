# SPDX-License-Identifier: MIT
"""Node's http2 module (Debian's nodejs) as a second, independent RFC 8441 client: unlike
python3-h2 it refuses to send :protocol before the server's SETTINGS enabled it, so these tests
also show that a strict real peer accepts viaduct's SETTINGS. The client is node/h2_extended.js
(WebSocket frames and RFC 9297 capsules written from the RFCs); the origins are the same real
servers as in test_61 (python3-websockets, a UDP echo server)."""
import json
import os
import shutil
import subprocess

from test_61_h2_extended import udp_echo, ws_origin  # noqa: F401 (fixtures)

SCRIPT = os.path.join(os.path.dirname(__file__), "node", "h2_extended.js")


def node(*args):
    exe = shutil.which("node") or shutil.which("nodejs")
    assert exe, "nodejs is installed by tools/install-deps.sh test"
    p = subprocess.run([exe, SCRIPT] + [str(a) for a in args], capture_output=True, timeout=30)
    out = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return p.returncode, out


def h2c_url(v):
    return "http://%s" % v.authority()


def test_node_sees_extended_connect_setting(viaduct):
    v = viaduct()
    assert node("settings", h2c_url(v)) == (0, {"enableConnectProtocol": True,
                                                 "maxConcurrentStreams": 100})


def test_node_without_the_setting_sends_no_protocol(viaduct):
    v = viaduct({"http2": {"extended_connect": False, "max_concurrent_streams": 7}})
    assert node("settings", h2c_url(v)) == (0, {"enableConnectProtocol": False,
                                                 "maxConcurrentStreams": 7})
    rc, out = node("websocket", h2c_url(v), "/chat", "x")
    assert rc == 1 and "did not send SETTINGS_ENABLE_CONNECT_PROTOCOL" in out["error"]


def test_node_websocket_over_h2(viaduct, ws_origin):
    v = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                 "routes": [{"upstream": "http://127.0.0.1:%d" % ws_origin.port}]})
    rc, out = node("websocket", h2c_url(v), "/chat", "first", "second message")
    assert rc == 0, out
    assert out["status"] == 200
    assert out["received"] == ["first", "second message"]
    assert out["closeCode"] == 1000
    assert ws_origin.messages == ["first", "second message"]
    (h,) = ws_origin.headers
    h = {k.lower(): x for k, x in h.items()}
    assert h["upgrade"].lower() == "websocket" and h["sec-websocket-version"] == "13"
    v.wait_for_log(r'"CONNECT /chat HTTP/2\.0" 200 .*tunnel=websocket ', access=True)


def test_node_connect_udp_over_h2(viaduct, udp_echo):
    v = viaduct({"masque": {"udp_ports": [udp_echo.port]}})
    path = "/.well-known/masque/udp/127.0.0.1/%d/" % udp_echo.port
    rc, out = node("connect-udp", h2c_url(v), path, "one", "two", "three")
    assert rc == 0, out
    assert out["status"] == 200 and out["capsuleProtocol"] == "?1"
    assert out["received"] == ["echo:one", "echo:two", "echo:three"]
    assert out["skipped"] == 0
    assert udp_echo.got == [b"one", b"two", b"three"]
    v.wait_for_log(r'"CONNECT https://127\.0\.0\.1:\d+%s HTTP/2\.0" 200 .* tunnel=connect-udp '
                   r'up=11 down=26 .*dgrams_up=3 dgrams_down=3' % path, access=True)


def test_node_connect_udp_refused_port(viaduct, udp_echo):
    v = viaduct({"masque": {"udp_ports": [udp_echo.port]}})
    path = "/.well-known/masque/udp/127.0.0.1/%d/" % (udp_echo.port + 1)
    rc, out = node("connect-udp", h2c_url(v), path, "never")
    assert rc == 0, out
    assert out["status"] == 403 and out["received"] == []
    assert udp_echo.got == []
