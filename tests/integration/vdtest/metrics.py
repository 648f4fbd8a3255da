# SPDX-License-Identifier: MIT
"""Scraping an admin listener's /metrics and reading it with the official Prometheus client's
parser (python3-prometheus-client)."""
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_REQ = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def scrape_raw(vd, i=1):
    """The response to GET /metrics on listener @i of @vd."""
    c = vd.connect(i)
    c.send(SCRAPE_REQ)
    r = c.response()
    c.close()
    return r


def parse(r):
    """{(name, ((label, value), ...)): value} of every sample of a 200 answer."""
    assert r.status == 200, r.raw
    out = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(vd, i=1):
    return parse(scrape_raw(vd, i))


def val(m, name, **labels):
    return m[(name, tuple(sorted(labels.items())))]
