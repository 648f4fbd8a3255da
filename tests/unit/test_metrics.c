/* SPDX-License-Identifier: MIT */
/* Metrics: what one finished exchange adds (version, status class, cache outcome from the
 * Cache-Status value, tunnel type, histogram bucket edges) and the exposition text built from
 * two workers' counters. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "vd/buf.h"
#include "vd/conf.h"
#include "vd/metrics.h"
#include "vd/proxy.h"
#include "vd_test.h"

static struct vd_txn
txn(const char *method, int version, int status)
{
    struct vd_txn t;
    memset(&t, 0, sizeof(t));
    t.req.method = (struct vd_iov){(const uint8_t *)method, strlen(method)};
    t.req.version = version;
    t.status = status;
    return t;
}

static uint64_t
rd(const _Atomic uint64_t *c)
{
    return atomic_load(c);
}

static void
test_exchange_counts(void **state)
{
    (void)state;
    struct vd_wmetrics m;
    assert_int_equal(vd_metrics_register(&m, 2), 0);
    struct vd_txn t = txn("GET", 11, 200);
    t.stats.bytes_in = 100;
    t.stats.bytes_out = 1000;
    t.stats.upstream_used = true;
    t.stats.cache = "hit; ttl=30";
    vd_metrics_exchange(&m, &t, 1000000); /* exactly 1 ms: the le="0.001" bucket */
    t = txn("GET", 20, 503);
    t.stats.upstream_used = true;
    t.stats.upstream_reused = true;
    t.stats.cache = "fwd=uri-miss; stored";
    vd_metrics_exchange(&m, &t, 1000001); /* just over: le="0.0025" */
    t = txn("GET", 10, 304);
    t.stats.cache = "fwd=stale; fwd-status=304";
    vd_metrics_exchange(&m, &t, 20ull * 1000000000); /* over every bound: +Inf only */
    t = txn("", 0, 400);                             /* a head that did not parse */
    t.stats.cache = "fwd=something-new";
    vd_metrics_exchange(&m, &t, 0);
    t = txn("GET", 11, 0); /* ended before any status */
    vd_metrics_exchange(&m, &t, 0);

    assert_int_equal(rd(&m.requests[0]), 1);
    assert_int_equal(rd(&m.requests[1]), 2);
    assert_int_equal(rd(&m.requests[2]), 1);
    assert_int_equal(rd(&m.responses[0]), 0);
    assert_int_equal(rd(&m.responses[1]), 1);
    assert_int_equal(rd(&m.responses[2]), 1);
    assert_int_equal(rd(&m.responses[3]), 1);
    assert_int_equal(rd(&m.responses[4]), 1);
    assert_int_equal(rd(&m.no_response), 1);
    assert_int_equal(rd(&m.bytes_in), 100);
    assert_int_equal(rd(&m.bytes_out), 1000);
    assert_int_equal(rd(&m.upstream_new), 1);
    assert_int_equal(rd(&m.upstream_reused), 1);
    assert_int_equal(rd(&m.cache[VD_MCS_HIT]), 1);
    assert_int_equal(rd(&m.cache[VD_MCS_URI_MISS]), 1);
    assert_int_equal(rd(&m.cache[VD_MCS_STALE]), 1);
    assert_int_equal(rd(&m.cache[VD_MCS_OTHER]), 1);
    /* Buckets: 0.0005 0.001 0.0025 ...; two zero-length exchanges in the first. */
    assert_int_equal(rd(&m.dur[0]), 2);
    assert_int_equal(rd(&m.dur[1]), 1);
    assert_int_equal(rd(&m.dur[2]), 1);
    assert_int_equal(rd(&m.dur[VD_METRICS_DUR_BUCKETS]), 1);
    assert_int_equal(rd(&m.dur_us), 1000 + 1000 + 20000000);
    vd_metrics_unregister(&m);
}

static void
test_tunnel_types(void **state)
{
    (void)state;
    struct vd_wmetrics m;
    assert_int_equal(vd_metrics_register(&m, 1), 0);
    struct vd_txn t = txn("CONNECT", 11, 200);
    t.stats.tunnel = true;
    t.stats.tun_up = 5;
    t.stats.tun_down = 7;
    vd_metrics_exchange(&m, &t, 5000000000ull);
    t.declared = "websocket";
    t.req.protocol = (struct vd_iov){(const uint8_t *)"websocket", 9};
    vd_metrics_exchange(&m, &t, 0);
    t = txn("GET", 11, 101);
    t.stats.tunnel = true;
    t.declared = "websocket";
    vd_metrics_exchange(&m, &t, 0);
    t.declared = "connect-udp";
    t.stats.dgrams = true;
    t.stats.dg_up = 3;
    t.stats.dg_down = 4;
    vd_metrics_exchange(&m, &t, 0);
    t.declared = "connect-ip";
    vd_metrics_exchange(&m, &t, 0);
    assert_int_equal(rd(&m.tunnels[VD_MTUN_CONNECT]), 1);
    assert_int_equal(rd(&m.tunnels[VD_MTUN_UPGRADE]), 2);
    assert_int_equal(rd(&m.tunnels[VD_MTUN_UDP]), 1);
    assert_int_equal(rd(&m.tunnels[VD_MTUN_IP]), 1);
    assert_int_equal(rd(&m.tun_up), 10);
    assert_int_equal(rd(&m.tun_down), 14);
    assert_int_equal(rd(&m.dgram_up), 6);
    assert_int_equal(rd(&m.dgram_down), 8);
    /* Tunnels stay out of the duration histogram. */
    for (size_t b = 0; b <= VD_METRICS_DUR_BUCKETS; b++) {
        assert_int_equal(rd(&m.dur[b]), 0);
    }
    vd_metrics_unregister(&m);
}

static void
test_render_sums_workers(void **state)
{
    (void)state;
    struct vd_wmetrics a, b;
    assert_int_equal(vd_metrics_register(&a, 2), 0);
    assert_int_equal(vd_metrics_register(&b, 2), 0);
    vd_metric_add(&a.accepted[0], 3);
    vd_metric_add(&b.accepted[0], 4);
    vd_metric_add(&b.accepted[1], 1);
    vd_metric_set(&a.conns_open, 2);
    vd_metric_set(&b.conns_open, 5);
    struct vd_txn t = txn("GET", 11, 200);
    vd_metrics_exchange(&a, &t, 2000000);
    vd_metrics_exchange(&b, &t, 3000000);
    vd_metrics_reload(true);

    struct vd_conf *conf = vd_conf_default();
    assert_non_null(conf);
    /* Without sockets the listener is named as written; a label value escapes \\, " and LF. */
    assert_int_equal(conf->nlisteners, 1);
    free(conf->listeners[0].addr_text);
    conf->listeners[0].addr_text = strdup("a\"b\\c\n");
    conf->cache.memory = 0;
    struct vd_dbuf d;
    vd_dbuf_init(&d, 1 << 20);
    assert_int_equal(vd_metrics_render(&d, conf, NULL), 0);
    assert_non_null(strstr(d.p,
                           "# TYPE viaduct_connections_accepted_total counter\n"
                           "viaduct_connections_accepted_total{listener=\"a\\\"b\\\\c\\n\"} 7\n"));
    assert_non_null(strstr(d.p, "\nviaduct_client_connections 7\n"));
    assert_non_null(strstr(d.p, "\nviaduct_workers 2\n"));
    assert_non_null(strstr(d.p, "\nviaduct_http_requests_total{version=\"1.1\"} 2\n"));
    assert_non_null(strstr(d.p, "\nviaduct_config_reloads_total{result=\"applied\"} 1\n"));
    assert_non_null(strstr(d.p, "\nviaduct_http_exchange_duration_seconds_bucket{le=\"0.001\"} 0\n"
                                "viaduct_http_exchange_duration_seconds_bucket{le=\"0.0025\"} 1\n"
                                "viaduct_http_exchange_duration_seconds_bucket{le=\"0.005\"} 2\n"));
    assert_non_null(strstr(d.p, "\nviaduct_http_exchange_duration_seconds_sum 0.005000\n"
                                "viaduct_http_exchange_duration_seconds_count 2\n"));
    /* No cache lines beyond the outcome counters when the cache is off. */
    assert_null(strstr(d.p, "viaduct_cache_entries"));
    vd_dbuf_free(&d);
    vd_conf_unref(conf);
    vd_metrics_unregister(&a);
    vd_metrics_unregister(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exchange_counts),
        cmocka_unit_test(test_tunnel_types),
        cmocka_unit_test(test_render_sums_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
