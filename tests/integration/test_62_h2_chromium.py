# SPDX-License-Identifier: MIT
"""A real browser as the RFC 8441 client: headless Chromium (Debian's package) loads a page
through viaduct over TLS + HTTP/2 and opens a WebSocket on the same connection, which Chromium
does with an extended CONNECT once the server has sent SETTINGS_ENABLE_CONNECT_PROTOCOL.
viaduct converts it to an HTTP/1.1 Upgrade towards a python3-websockets echo origin."""
import os
import shutil
import subprocess
import time

import pytest

from test_51_upgrade import WsOrigin
from vdtest.httpmsg import build_response

# The page answers the echo with a second message: the origin receiving "got:..." proves the
# round trip through the proxy in both directions (no DOM dump racing the WebSocket).
PAGE = b"""<!doctype html><html><head><title>start</title></head><body><script>
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.onopen = () => ws.send("hello from chromium");
ws.onmessage = (e) => { if (!e.data.startsWith("got:")) ws.send("got:" + e.data); };
</script></body></html>"""


@pytest.fixture
def ws_origin():
    o = WsOrigin()
    yield o
    o.stop()


def test_chromium_websocket_over_h2(viaduct, make_origin, ws_origin, pki, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by tools/install-deps.sh test"
    page = make_origin(build_response(200, PAGE, headers=[("Content-Type", "text/html"),
                                                           ("Cache-Control", "no-store")]))
    v = viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse",
                                "tls": {"certificates": [{"cert": pki.server.cert,
                                                          "key": pki.server.key}]}}],
                 "routes": [{"path": "/ws", "upstream": "http://127.0.0.1:%d" % ws_origin.port},
                            {"upstream": "http://127.0.0.1:%d" % page.port}]})
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--ignore-certificate-errors", "--user-data-dir=%s" % tmp_path,
                             "--remote-debugging-port=0",
                             "https://localhost:%d/page.html" % v.port()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, HOME=str(tmp_path)))
    try:
        deadline = time.monotonic() + 30
        while "got:hello from chromium" not in ws_origin.messages and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(10)
    assert ws_origin.messages[:2] == ["hello from chromium", "got:hello from chromium"]
    # The page and the WebSocket came over HTTP/2; the WebSocket as an extended CONNECT.
    v.wait_for_log(r'"GET /page\.html HTTP/2\.0" 200 ', access=True)
    v.wait_for_log(r'"CONNECT /ws HTTP/2\.0" 200 .*tunnel=websocket ', access=True)
    (h,) = ws_origin.headers
    assert {k.lower(): x for k, x in h.items()}["upgrade"].lower() == "websocket"
