# SPDX-License-Identifier: MIT
"""Shared cache, disk tier with a memory tier that keeps nothing (cache.memory: 1), so every hit
is a disk hit: after the first one the verified file stays open (cache.sendfile_files) and later
hits neither open nor parse it. A small body is read and its CRC checked on every hit, so a
byte flipped after the file was kept is caught and the response fetched again; a file cut short
is caught for small and large bodies; a large body (cache.sendfile_min) is sent as verified
when its file was opened, and a flipped byte is caught when it is opened again (a restart). The
origin counts every request it sees."""
import os
import re
import time

import pytest

from test_71_cache_disk import object_files
from vdtest.cache import count
from vdtest.httpmsg import build_response

SMALL = b"small body, kept open\n" * 40
BIG = bytes((i * 31 + (i >> 8)) & 0xFF for i in range(128 << 10))  # above sendfile_min (64k)


def wait_one_file(root, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        files = object_files(root) if os.path.isdir(root) else []
        if len(files) == 1 or time.monotonic() > deadline:
            assert len(files) == 1, files
            return files[0]
        time.sleep(0.02)


@pytest.fixture
def open_proxy(viaduct, tmp_path):
    """start(o) -> a reverse proxy whose every hit comes from the disk tier; one directory for
    every start (a second start is a restart)."""
    cache_dir = tmp_path / "cache"

    def start(o):
        return viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                        "routes": [{"upstream": "http://127.0.0.1:%d" % o.port}],
                        "cache": {"memory": 1, "max_object": "1m", "sendfile_files": 8,
                                  "disk_path": str(cache_dir)}})
    start.dir = str(cache_dir)
    return start


def get(p):
    with p.connect() as c:
        return c.exchange("GET", "/a", host="site.test")


def served_twice_from_disk(p, root, o, body):
    """Stores /a, then two disk hits (the first opens and keeps the file, the second uses it);
    returns the file's path."""
    r = get(p)
    assert r.status == 200 and r.body == body
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    path = wait_one_file(root)
    for _ in range(2):
        r = get(p)
        assert r.status == 200 and r.body == body
        assert re.fullmatch(r"viaduct; hit; ttl=\d+", r.header("cache-status"))
    assert count(o) == 1
    return path


@pytest.mark.parametrize("size,damage", [("small", "flip"), ("small", "truncate"),
                                         ("big", "truncate")])
def test_damage_after_kept_is_refetched(open_proxy, make_origin, size, damage):
    body = SMALL if size == "small" else BIG
    o = make_origin(build_response(200, body, [("Cache-Control", "max-age=300")]))
    p = open_proxy(o)
    path = served_twice_from_disk(p, open_proxy.dir, o, body)
    fsize = os.path.getsize(path)
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(fsize - 1)
        else:
            f.seek(fsize - 5)
            b = f.read(1)
            f.seek(fsize - 5)
            f.write(bytes([b[0] ^ 0x01]))

    r = get(p)
    assert r.status == 200 and r.body == body  # never the damaged copy
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert count(o) == 2
    why = ("checksum mismatch \\(body\\) on a kept file" if damage == "flip"
           else "lengths do not match the file size")
    p.wait_for_log(r"\[error\] cache disk: %s: %s; deleted" % (re.escape(path), why))
    # The fresh copy is written under the same name and serves the next hits.
    assert wait_one_file(open_proxy.dir) == path
    deadline = time.monotonic() + 5
    while os.path.getsize(path) != fsize and time.monotonic() < deadline:
        time.sleep(0.02)
    r = get(p)
    assert r.body == body and r.header("cache-status").startswith("viaduct; hit")
    assert count(o) == 2
    assert p.stop() == 0
    p.check_clean()


def test_big_flip_while_kept_is_caught_when_opened_again(open_proxy, make_origin):
    o = make_origin(build_response(200, BIG, [("Cache-Control", "max-age=300")]))
    p = open_proxy(o)
    path = served_twice_from_disk(p, open_proxy.dir, o, BIG)
    at = os.path.getsize(path) - 5
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x01]))
    # Documented limit: a large body is checked when its file is opened, not on every hit, so
    # the kept descriptor still sends the file as it now is.
    r = get(p)
    assert re.fullmatch(r"viaduct; hit; ttl=\d+", r.header("cache-status"))
    assert r.body[:len(BIG) - 5] == BIG[:-5] and r.body[-5] == BIG[-5] ^ 0x01
    assert count(o) == 1
    assert p.stop() == 0
    p.check_clean()

    p = open_proxy(o)  # opened again: the CRC over the body catches it
    r = get(p)
    assert r.status == 200 and r.body == BIG
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert count(o) == 2
    p.wait_for_log(r"\[error\] cache disk: %s: checksum mismatch \(body\); deleted"
                   % re.escape(path))
