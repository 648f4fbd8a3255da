# SPDX-License-Identifier: MIT
"""Shared cache, disk tier (cache.disk_path): a stored response survives a restart and is served
without asking the origin again; a damaged file is deleted and the response fetched again; Vary
variants and PURGE across a restart; the origin counts every request it sees."""
import os
import re

import pytest

from vdtest.cache import count
from vdtest.httpmsg import build_response

BODY = b"persisted body\n" * 100




def object_files(root):
    """Paths of the stored objects: DIR/ab/c/<pk>-<id>."""
    out = []
    for a in sorted(os.listdir(root)):
        if len(a) != 2:
            continue
        for b in sorted(os.listdir(os.path.join(root, a))):
            d = os.path.join(root, a, b)
            out += [os.path.join(d, f) for f in sorted(os.listdir(d))]
    return out


@pytest.fixture
def disk_proxy(viaduct, tmp_path):
    """start() -> a reverse proxy in front of origin @o with a disk tier in one directory that
    every start shares (so a second start is a restart)."""
    cache_dir = tmp_path / "cache"

    def start(o):
        return viaduct({"listeners": [{"address": "127.0.0.1:0", "mode": "reverse"}],
                        "routes": [{"upstream": "http://127.0.0.1:%d" % o.port}],
                        "cache": {"memory": "16m", "max_object": "64k",
                                  "disk_path": str(cache_dir)}})
    start.dir = str(cache_dir)
    return start


def get(p, path="/a", headers=None, method="GET"):
    with p.connect() as c:
        return c.exchange(method, path, host="site.test", headers=headers)


def stop(p):
    assert p.stop() == 0
    p.check_clean()


def test_hit_survives_restart(disk_proxy, make_origin):
    o = make_origin(build_response(200, BODY, [("Cache-Control", "max-age=300"),
                                               ("Content-Type", "text/plain"),
                                               ("ETag", '"e1"')]))
    p = disk_proxy(o)
    r = get(p)
    assert r.status == 200 and r.body == BODY
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    stop(p)  # SIGTERM: the writer finishes what is queued before the process exits
    files = object_files(disk_proxy.dir)
    assert len(files) == 1
    with open(files[0], "rb") as f:
        assert f.read(4) == b"VDCF"
    assert not os.listdir(os.path.join(disk_proxy.dir, "tmp"))

    p = disk_proxy(o)  # asked at once: the file may not be indexed yet, and is found anyway
    r = get(p)
    assert r.status == 200 and r.body == BODY
    assert count(o) == 1
    assert re.fullmatch(r"viaduct; hit; ttl=\d+", r.header("cache-status"))
    assert r.header("content-type") == "text/plain" and r.header("etag") == '"e1"'
    assert r.header("content-length") == str(len(BODY))
    assert 0 <= int(r.header("age")) <= 30
    # A conditional from the client is answered from the restored entry as well.
    r = get(p, headers=[("If-None-Match", '"e1"')])
    assert r.status == 304 and count(o) == 1
    p.wait_for_log(r"cache disk: .*: 1 files \(\d+ bytes\) indexed")


@pytest.mark.parametrize("damage", ["flip-body", "flip-head", "truncate"])
def test_damaged_file_is_refetched(disk_proxy, make_origin, damage):
    o = make_origin(build_response(200, BODY, [("Cache-Control", "max-age=300")]))
    p = disk_proxy(o)
    get(p)
    stop(p)
    [path] = object_files(disk_proxy.dir)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(size // 2)
        else:
            at = size - 5 if damage == "flip-body" else 100  # 100: inside the stored key
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x01]))

    p = disk_proxy(o)
    r = get(p)
    assert r.status == 200 and r.body == BODY  # never the damaged copy
    assert r.header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert count(o) == 2
    why = {"flip-body": r"checksum mismatch \(body\)", "flip-head": r"checksum mismatch \(head\)",
           "truncate": "lengths do not match the file size"}[damage]
    p.wait_for_log(r"\[error\] cache disk: %s: %s; deleted" % (re.escape(path), why))
    assert get(p).header("cache-status").startswith("viaduct; hit")
    stop(p)

    # The fresh copy replaced the damaged one and serves the next start.
    [path2] = object_files(disk_proxy.dir)
    assert path2 == path and os.path.getsize(path2) == size
    p = disk_proxy(o)
    r = get(p)
    assert r.body == BODY and r.header("cache-status").startswith("viaduct; hit")
    assert count(o) == 2


def test_vary_variants_after_restart(disk_proxy, make_origin):
    def reply(req):
        lang = req.header("accept-language", "none")
        return build_response(200, b"body-" + lang.encode(),
                              [("Cache-Control", "max-age=300"), ("Vary", "Accept-Language")])
    o = make_origin(reply)
    p = disk_proxy(o)
    for lang in ("en", "fr"):
        assert get(p, headers=[("Accept-Language", lang)]).body == b"body-" + lang.encode()
    stop(p)
    assert len(object_files(disk_proxy.dir)) == 2

    p = disk_proxy(o)
    # Variants are found by the index scan (only the Vary-less file is known by name alone).
    p.wait_for_log(r"cache disk: .*: 2 files \(\d+ bytes\) indexed")
    for lang in ("fr", "en"):
        r = get(p, headers=[("Accept-Language", lang)])
        assert r.body == b"body-" + lang.encode()
        assert r.header("cache-status").startswith("viaduct; hit")
    assert count(o) == 2
    r = get(p, headers=[("Accept-Language", "de")])
    assert r.body == b"body-de" and r.header("cache-status") == "viaduct; fwd=vary-miss; stored"
    assert count(o) == 3


def test_purge_after_restart_removes_the_files(disk_proxy, make_origin):
    o = make_origin(build_response(200, BODY, [("Cache-Control", "max-age=300")]))
    p = disk_proxy(o)
    get(p, "/p")
    get(p, "/other")
    stop(p)
    assert len(object_files(disk_proxy.dir)) == 2

    p = disk_proxy(o)
    p.wait_for_log(r"cache disk: .*: 2 files \(\d+ bytes\) indexed")
    r = get(p, "/p", method="PURGE")
    assert r.status == 200 and b"1 stored response removed" in r.body
    assert len(object_files(disk_proxy.dir)) == 1
    assert get(p, "/p", method="PURGE").status == 404
    assert get(p, "/other").header("cache-status").startswith("viaduct; hit")
    assert count(o) == 2
    stop(p)

    p = disk_proxy(o)
    assert get(p, "/p").header("cache-status") == "viaduct; fwd=uri-miss; stored"
    assert count(o) == 3


def test_unusable_directory_is_a_config_error(viaduct_bin, tmp_path):
    from vdtest.proc import run_bin
    conf = tmp_path / "v.yaml"
    conf.write_text("cache:\n  disk_path: %s/missing/cache\n" % tmp_path)
    r = run_bin(viaduct_bin, ["-t", "-c", str(conf)])
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "%s:2:14: cache.disk_path: %s/missing/cache does not exist and cannot be created in "
        "%s/missing" % (conf, tmp_path, tmp_path))
