# SPDX-License-Identifier: MIT
"""Small helpers shared by the cache tests (test_70 to test_74)."""
import email.utils


def url(origin, path="/"):
    """The absolute URL of @path on @origin (forward-proxy form)."""
    return "http://127.0.0.1:%d%s" % (origin.port, path)


def httpdate(t):
    return email.utils.formatdate(t, usegmt=True)


def get(proxy, target, headers=None, method="GET"):
    """One exchange on a new connection to @proxy."""
    with proxy.connect() as c:
        return c.exchange(method, target, headers=headers)


def count(o):
    """Requests @o has received so far."""
    with o.lock:
        return len(o.requests)


def reqs(o):
    with o.lock:
        return list(o.requests)
