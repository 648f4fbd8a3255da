# SPDX-License-Identifier: MIT
"""Fixtures for viaduct's black-box integration tests.

Run: cd tests/integration && VIADUCT_BIN=/path/to/viaduct /usr/bin/python3 -m pytest -q -p no:cacheprovider
"""
import functools
import os
import subprocess

import pytest

from vdtest import yamlconf
from vdtest.certs import PKI
from vdtest.dns import DNSServer
from vdtest.origins import Origin, server_tls_context
from vdtest.proc import Viaduct, run_bin, stop_all

DNS_RECORDS = {
    "origin.test": ["127.0.0.1"],
    "a.test": ["127.0.0.1"],
    "b.test": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than about 3 seconds")
    config.addinivalue_line("markers", "feature(name): skip unless `viaduct --features` lists it")


def pytest_sessionstart(session):
    b = os.environ.get("VIADUCT_BIN")
    if not b or not os.access(b, os.X_OK):
        raise pytest.UsageError("set VIADUCT_BIN to the viaduct binary (got %r)" % b)


@functools.lru_cache(maxsize=None)
def binary_features():
    """The set printed by --features; None when the binary cannot tell (then nothing skips)."""
    try:
        r = run_bin(os.environ["VIADUCT_BIN"], ["--features"], timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return {ln.strip() for ln in r.stdout.splitlines() if ln.strip()}


def pytest_runtest_setup(item):
    for m in item.iter_markers(name="feature"):
        feats = binary_features()
        if feats is not None and m.args[0] not in feats:
            pytest.skip("viaduct built without feature %r" % m.args[0])


@pytest.fixture(scope="session")
def viaduct_bin():
    return os.environ["VIADUCT_BIN"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def dns():
    d = DNSServer(DNS_RECORDS)
    yield d
    d.stop()


@pytest.fixture
def make_origin(pki):
    """make_origin(replies, tls=None|'server'|Leaf, **kw) -> a started Origin."""
    started = []

    def make(replies=None, tls=None, **kw):
        ctx = None
        if tls is not None:
            leaf = getattr(pki, tls) if isinstance(tls, str) else tls
            ctx = server_tls_context(leaf.cert, leaf.key)
        o = Origin(replies, tls_context=ctx, name="origin%d" % len(started), **kw)
        started.append(o)
        return o

    yield make
    for o in started:
        o.stop()


@pytest.fixture
def origin(make_origin):
    """A plain origin answering every request with 200 and body b"ok\\n"."""
    return make_origin()


def default_conf(tmpdir, dns):
    return {
        "workers": 1,
        "listeners": [{"address": "127.0.0.1:0", "mode": "forward"}],
        "access": [{"allow": "127.0.0.0/8"}, {"allow": "::1/128"}],
        "resolver": {"nameservers": [dns.address]},
        "log": {"level": "info", "error_log": "stderr",
                "access_log": os.path.join(str(tmpdir), "access.log")},
    }


@pytest.fixture
def viaduct(viaduct_bin, tmp_path, dns):
    """viaduct(overrides=None, *, conf=None, conf_text=None, args=(), no_conf=False, env=None)

    Starts viaduct with the default test configuration deep-merged with @overrides (or
    exactly @conf / @conf_text, or with no -c at all). Teardown stops it with SIGTERM and
    asserts exit code 0, no [alert] and no sanitizer report."""
    started = []

    def start(overrides=None, *, conf=None, conf_text=None, args=(), no_conf=False, env=None,
              n_listeners=None):
        d = tmp_path / ("vd%d" % len(started))
        d.mkdir()
        if no_conf or conf_text is not None:
            c = None
        elif conf is not None:
            c = conf
        else:
            c = default_conf(d, dns)
            if overrides:
                c = yamlconf.merge(c, overrides)
        v = Viaduct(viaduct_bin, d, conf=c, conf_text=conf_text, args=args, env=env,
                    n_listeners=n_listeners)
        v.default_conf = default_conf(d, dns)
        started.append(v)
        return v

    start.default_conf = lambda: default_conf(tmp_path, dns)
    yield start
    stop_all(started)


@pytest.fixture
def proxy(viaduct):
    """A forward proxy with the default test configuration."""
    return viaduct()
