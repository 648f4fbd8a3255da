/* SPDX-License-Identifier: MIT */
/* Active health checks (src/proxy/health.c, balance.c, metrics.c): the status-line reader that
 * judges a check, vd_lb_pick skipping servers the checks hold down (and trying one when every
 * server is down), and the metric series of a route with checks. The checks themselves run
 * against real origins in tests/integration/test_22_health.py. */
#include "vd/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vd/buf.h"
#include "vd/conf.h"
#include "vd/err.h"
#include "vd/metrics.h"
#include "vd/proxy.h"
#include "vd_test.h"

static int
status(const char *s)
{
    return vd_health_status((const uint8_t *)s, strlen(s));
}

static void
test_status_line(void **state)
{
    (void)state;
    assert_int_equal(status("HTTP/1.1 200 OK\r\n"), 200);
    assert_int_equal(status("HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n"), 503);
    assert_int_equal(status("HTTP/1.1 204\r\n"), 204);          /* no SP before an empty reason */
    assert_int_equal(status("HTTP/1.1 204 \r\n"), 204);         /* an empty reason */
    assert_int_equal(status("HTTP/1.1 302 Found\n"), 302);      /* a bare LF ends it too */
    assert_int_equal(status("HTTP/1.1 200 \tO\x80K\r\n"), 200); /* HTAB, obs-text */
    assert_int_equal(status("HTTP/1.1 100 Continue\r\n"), 100);
    assert_int_equal(status("HTTP/1.1 599 x\r\n"), 599);
    /* Not complete yet: every prefix of a good line. */
    static const char good[] = "HTTP/1.1 200 OK\r\n";
    for (size_t n = 0; n + 1 < sizeof(good) - 1; n++) {
        assert_int_equal(vd_health_status((const uint8_t *)good, n), VD_EAGAIN);
    }
    /* Not HTTP/1.x, decided at the first byte that cannot fit. */
    assert_int_equal(status("SSH-2.0-OpenSSH_9.2p1\r\n"), VD_EPROTO);
    assert_int_equal(status("S"), VD_EPROTO);
    assert_int_equal(status("http/1.1 200 OK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/2 200\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.x 200 OK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1  200 OK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1 20 OK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1 2000 OK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1 099 OK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1 600 OK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1 200 O\x01K\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1 200 O\x7fK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1 200 O\rK\r\n"), VD_EPROTO);
    assert_int_equal(status("HTTP/1.1 200 OK\r"), VD_EAGAIN); /* the LF may follow */
}

/* Loads @yaml (a temporary file) and returns the snapshot. */
static struct vd_conf *
load(const char *yaml)
{
    char path[] = "/tmp/vdhealth-XXXXXX", err[512];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(yaml);
    assert_int_equal(write(fd, yaml, len), (ssize_t)len);
    close(fd);
    struct vd_conf *c = NULL;
    int rc = vd_conf_load(path, &c, err, sizeof(err));
    unlink(path);
    if (rc) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, 0);
    return c;
}

static void
hc_down(const struct vd_conf_route *r, int i, bool down)
{
    atomic_store(&r->lb->srv[i].hc_down, down ? 1u : 0u);
}

static void
test_pick_skips_servers_held_down(void **state)
{
    (void)state;
    struct vd_conf *c = load("routes:\n"
                             "  - upstream: [http://a, http://b, http://c]\n"
                             "    health_check: {path: /h}\n");
    const struct vd_conf_route *r = &c->routes[0];
    /* All up: each in turn. */
    int seen[3] = {0};
    for (int k = 0; k < 6; k++) {
        seen[vd_lb_pick(r, NULL, 0)]++;
    }
    assert_int_equal(seen[0], 2);
    assert_int_equal(seen[1], 2);
    assert_int_equal(seen[2], 2);
    /* b held down: never picked, not even on a failover. */
    hc_down(r, 1, true);
    memset(seen, 0, sizeof(seen));
    for (int k = 0; k < 6; k++) {
        seen[vd_lb_pick(r, NULL, 0)]++;
    }
    assert_int_equal(seen[1], 0);
    assert_int_equal(seen[0] + seen[2], 6);
    assert_int_equal(vd_lb_pick(r, NULL, 1u << 0), 2);
    assert_int_equal(vd_lb_pick(r, NULL, 1u << 2), 0);
    assert_int_equal(vd_lb_pick(r, NULL, (1u << 0) | (1u << 2)), -1);
    /* c down by a failure (passive), b by its checks: a alone is left. */
    vd_lb_failed(r, 2);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(vd_lb_pick(r, NULL, 0), 0);
    }
    /* Every server down one way or the other: the first pick still tries one, a failover
     * none. */
    hc_down(r, 0, true);
    int i = vd_lb_pick(r, NULL, 0);
    assert_true(i >= 0 && i < 3);
    assert_int_equal(vd_lb_pick(r, NULL, 1u << i), -1);
    /* A request sent to a server clears only the passive mark; the checks decide the rest. */
    vd_lb_ok(r, 1);
    assert_int_equal(atomic_load(&r->lb->srv[1].hc_down), 1);
    vd_lb_ok(r, 2);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(vd_lb_pick(r, NULL, 0), 2);
    }
    /* least_conn skips them as well. */
    vd_conf_unref(c);
    c = load("routes:\n"
             "  - upstream: [http://a, http://b]\n"
             "    balance: least_conn\n"
             "    health_check: {path: /h}\n");
    r = &c->routes[0];
    vd_lb_begin(r, 1);
    hc_down(r, 0, true);
    assert_int_equal(vd_lb_pick(r, NULL, 0), 1);
    hc_down(r, 0, false);
    assert_int_equal(vd_lb_pick(r, NULL, 0), 0);
    vd_lb_end(r, 1);
    vd_conf_unref(c);
}

static void
test_single_server_with_checks(void **state)
{
    (void)state;
    struct vd_conf *c = load("routes:\n"
                             "  - upstream: http://only\n"
                             "    health_check: {path: /h}\n");
    const struct vd_conf_route *r = &c->routes[0];
    assert_non_null(r->lb);
    assert_int_equal(vd_lb_pick(r, NULL, 0), 0);
    /* Down, but there is no other: the exchange still goes there. */
    hc_down(r, 0, true);
    assert_int_equal(vd_lb_pick(r, NULL, 0), 0);
    assert_int_equal(vd_lb_pick(r, NULL, 1), -1);
    vd_conf_unref(c);
}

static void
test_metric_series(void **state)
{
    (void)state;
    struct vd_conf *c = load("routes:\n"
                             "  - upstream: [http://a, http://b]\n"
                             "  - upstream: [http://a, http://b]\n"
                             "    health_check: {path: /h}\n");
    c->cache.memory = 0;
    const struct vd_conf_route *r = &c->routes[1];
    atomic_store(&r->lb->srv[0].checks_ok, 7);
    atomic_store(&r->lb->srv[1].checks_ok, 1);
    atomic_store(&r->lb->srv[1].checks_fail, 3);
    hc_down(r, 1, true);
    struct vd_dbuf d;
    vd_dbuf_init(&d, 1 << 20);
    assert_int_equal(vd_metrics_render(&d, c, NULL), 0);
    assert_non_null(strstr(d.p, "\nviaduct_upstream_server_up{route=\"0\",server=\"http://b\"} 1\n"
                                "viaduct_upstream_server_up{route=\"1\",server=\"http://a\"} 1\n"
                                "viaduct_upstream_server_up{route=\"1\",server=\"http://b\"} "
                                "0\n"));
    /* Only routes with checks have check series. */
    assert_non_null(strstr(
        d.p,
        "# TYPE viaduct_upstream_health_checks_total counter\n"
        "viaduct_upstream_health_checks_total{route=\"1\",server=\"http://a\",result=\"ok\"} 7\n"
        "viaduct_upstream_health_checks_total{route=\"1\",server=\"http://a\",result=\"fail\"} "
        "0\n"
        "viaduct_upstream_health_checks_total{route=\"1\",server=\"http://b\",result="
        "\"ok\"} 1\n"
        "viaduct_upstream_health_checks_total{route=\"1\",server=\"http://b\",result="
        "\"fail\"} 3\n"));
    assert_null(strstr(d.p, "viaduct_upstream_health_checks_total{route=\"0\""));
    vd_dbuf_free(&d);
    vd_conf_unref(c);
    /* No route with checks: no family at all. */
    c = load("routes:\n  - upstream: [http://a, http://b]\n");
    c->cache.memory = 0;
    vd_dbuf_init(&d, 1 << 20);
    assert_int_equal(vd_metrics_render(&d, c, NULL), 0);
    assert_null(strstr(d.p, "viaduct_upstream_health_checks_total"));
    assert_non_null(strstr(d.p, "viaduct_upstream_server_up{route=\"0\",server=\"http://a\"} 1\n"));
    vd_dbuf_free(&d);
    vd_conf_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_line),
        cmocka_unit_test(test_pick_skips_servers_held_down),
        cmocka_unit_test(test_single_server_with_checks),
        cmocka_unit_test(test_metric_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
