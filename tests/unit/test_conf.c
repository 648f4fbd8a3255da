/* SPDX-License-Identifier: MIT */
/* Unit tests for the YAML configuration loader (src/conf/load.c): exact struct values, defaults,
 * relative paths, access rules (both forms) and the tunnel section, every validation error's
 * "file:line:col: key: message", and the shipped examples. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vd/access.h"
#include "vd/conf.h"
#include "vd/err.h"
#include "vd/log.h"
#include "vd/proxy.h"
#include "vd_test.h"

/* A temporary directory with files in it; everything is removed by tmp_done(). */
struct tmp {
    char dir[64];
    char paths[16][PATH_MAX];
    bool is_dir[16];
    int n;
};

static void
tmp_init(struct tmp *t)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "/tmp/vdconf.XXXXXX");
    assert_non_null(mkdtemp(t->dir));
}

static const char *
tmp_mkdir(struct tmp *t, const char *rel)
{
    char dir[sizeof(t->dir)];
    assert_true(t->n < 16);
    memcpy(dir, t->dir, sizeof(dir));
    snprintf(t->paths[t->n], PATH_MAX, "%s/%s", dir, rel);
    assert_int_equal(mkdir(t->paths[t->n], 0700), 0);
    t->is_dir[t->n] = true;
    return t->paths[t->n++];
}

static const char *
tmp_write(struct tmp *t, const char *rel, const char *content)
{
    char dir[sizeof(t->dir)];
    assert_true(t->n < 16);
    memcpy(dir, t->dir, sizeof(dir));
    snprintf(t->paths[t->n], PATH_MAX, "%s/%s", dir, rel);
    FILE *f = fopen(t->paths[t->n], "w");
    assert_non_null(f);
    assert_int_equal(fputs(content, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    t->is_dir[t->n] = false;
    return t->paths[t->n++];
}

static void
tmp_done(struct tmp *t)
{
    for (int i = t->n - 1; i >= 0; i--) {
        if (t->is_dir[i]) {
            rmdir(t->paths[i]);
        } else {
            unlink(t->paths[i]);
        }
    }
    rmdir(t->dir);
}

/* Writes @yaml to a mkstemp file and loads it; @path gets the file name (already removed). */
static int
load_str(const char *yaml, struct vd_conf **out, char *err, size_t errlen, char *path)
{
    snprintf(path, 64, "/tmp/vdconf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(yaml);
    assert_int_equal(write(fd, yaml, len), (ssize_t)len);
    close(fd);
    int rc = vd_conf_load(path, out, err, errlen);
    unlink(path);
    return rc;
}

/* Asserts that @yaml is refused with exactly "<tmpfile>:" @want. */
static void
expect_err(const char *yaml, const char *want)
{
    char path[64], err[512], full[600];
    struct vd_conf *c = (struct vd_conf *)1;
    int rc = load_str(yaml, &c, err, sizeof(err), path);
    snprintf(full, sizeof(full), "%s:%s", path, want);
    if (rc != VD_ECONF || strcmp(err, full) != 0) {
        print_error("yaml:\n%s\nwant: %s\ngot:  %s (rc %d)\n", yaml, full, err, rc);
    }
    assert_int_equal(rc, VD_ECONF);
    assert_null(c);
    assert_string_equal(err, full);
}

static void
assert_addr(const struct sockaddr_storage *ss, int family, const char *ip, unsigned port)
{
    char buf[INET6_ADDRSTRLEN];
    assert_int_equal(ss->ss_family, family);
    if (family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        assert_non_null(inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf)));
        assert_int_equal(ntohs(s4->sin_port), port);
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        assert_non_null(inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof(buf)));
        assert_int_equal(ntohs(s6->sin6_port), port);
    }
    assert_string_equal(buf, ip);
}

/* A GET from @ip through the access rules; @rule gets the deciding rule's name or NULL. */
static bool
acl_allows(const struct vd_conf *c, const char *ip, const char **rule)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    struct vd_access_facts f = {.client = (const struct sockaddr *)&ss,
                                .method = {(const uint8_t *)"GET", 3}};
    const struct vd_conf_rule *r = NULL;
    bool ok = vd_access_eval(c, &f, &r) == VD_ACCESS_ALLOW;
    *rule = r ? r->name : NULL;
    return ok;
}

static const char full_yaml[] = "# every key\n"
                                "workers: 4\n"
                                "listeners:\n"
                                "  - address: 127.0.0.1:3128\n"
                                "  - address: \"[::1]:8443\"\n"
                                "    mode: reverse\n"
                                "    backlog: 128\n"
                                "    tcp_congestion: reno\n"
                                "    tls:\n"
                                "      certificates:\n"
                                "        - cert: certs/a.pem\n"
                                "          key: certs/a.key\n"
                                "        - cert: %s/certs/b.pem\n"
                                "          key: ./certs/b.key\n"
                                "      min_version: \"1.3\"\n"
                                "  - address: :8080\n"
                                "    proxy_protocol: true\n"
                                "    tls:\n"
                                "      certificates: [{cert: certs/a.pem, key: certs/a.key}]\n"
                                "  - address: '*:8081'\n"
                                "    mode: admin\n"
                                "access:\n"
                                "  - allow: 127.0.0.0/8\n"
                                "  - allow: ::1\n"
                                "  - deny: 10.0.0.0/8\n"
                                "  - allow: 10.1.0.0/16\n"
                                "  - allow: 2001:db8::/32\n"
                                "  - deny: all\n"
                                "via: edge-1\n"
                                "server_name: viaduct test\n"
                                "limits:\n"
                                "  request_line: 16KiB\n"
                                "  header_block: 64k\n"
                                "  header_count: 50\n"
                                "  body: 10MiB\n"
                                "  chunk_line: 1024\n"
                                "  trailer_block: 2KiB\n"
                                "  max_connections: 500\n"
                                "  request_arena: 128KiB\n"
                                "  via_loop: 3\n"
                                "timeouts:\n"
                                "  client_header: 5s\n"
                                "  keepalive: 2m\n"
                                "  upstream_connect: 1500ms\n"
                                "  upstream_first_byte: 1h\n"
                                "  send: 7\n"
                                "  client_body: 8s\n"
                                "  upstream_read: 9s\n"
                                "  shutdown_grace: 0\n"
                                "  upgrade_grace: 2h\n"
                                "  upgrade_start: 5m\n"
                                "upstream:\n"
                                "  pool_idle_max: 8\n"
                                "  pool_idle_timeout: 90s\n"
                                "  ca_file: certs/ca.pem\n"
                                "  ca_path: certs\n"
                                "  verify: false\n"
                                "  tcp_congestion: reno\n"
                                "routes:\n"
                                "  - host: Example.COM\n"
                                "    path: /api/\n"
                                "    upstream: https://127.0.0.1:8443\n"
                                "    host_header: origin.example:8443\n"
                                "    sni: Origin.Example\n"
                                "    forwarded: rfc7239\n"
                                "  - host: \"*.example.org\"\n"
                                "    upstream: http://[::1]:8080\n"
                                "    forwarded: both\n"
                                "  - upstream: HTTP://Backend.Local\n"
                                "    forwarded: none\n"
                                "  - upstream: https://origin.example\n"
                                "resolver:\n"
                                "  nameservers: [127.0.0.1:5353, \"[::1]:53\", 10.0.0.53]\n"
                                "  cache_max_ttl: 5m\n"
                                "  negative_ttl: 0\n"
                                "  timeout: 2s\n"
                                "  tries: 3\n"
                                "  cache_size: 100\n"
                                "log:\n"
                                "  level: debug\n"
                                "  error_log: logs/error.log\n"
                                "  access_log: stdout\n"
                                "  access_format: json\n"
                                "  trace: [h1, proxy]\n"
                                "connect:\n"
                                "  ports: [443, 8443, \"8000-8002\", 8001]\n"
                                "tunnel:\n"
                                "  idle_timeout: 5m\n"
                                "  splice: false\n"
                                "  socket_buffer: 1MiB\n"
                                "  socket_buffer_rtt: 2ms\n"
                                "  sniff_bytes: 4k\n"
                                "  sniff_timeout: 2500ms\n"
                                "  upgrade_protocols: [WebSocket, h2c]\n";

static void
make_certs(struct tmp *t)
{
    tmp_mkdir(t, "certs");
    tmp_write(t, "certs/a.pem", "dummy\n");
    tmp_write(t, "certs/a.key", "dummy\n");
    tmp_write(t, "certs/b.pem", "dummy\n");
    tmp_write(t, "certs/b.key", "dummy\n");
    tmp_write(t, "certs/ca.pem", "dummy\n");
}

static void
test_full(void **state)
{
    struct tmp t;
    char yaml[sizeof(full_yaml) + 64], err[512], want[PATH_MAX];
    struct vd_conf *c = NULL;
    (void)state;
    tmp_init(&t);
    make_certs(&t);
    tmp_mkdir(&t, "logs");
    snprintf(yaml, sizeof(yaml), full_yaml, t.dir);
    const char *path = tmp_write(&t, "viaduct.yaml", yaml);
    int rc = vd_conf_load(path, &c, err, sizeof(err));
    if (rc) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, 0);
    assert_non_null(c);
    assert_int_equal(atomic_load(&c->refs), 1);
    assert_string_equal(c->source, path);
    assert_int_equal(c->workers, 4);

    assert_int_equal(c->nlisteners, 4);
    const struct vd_conf_listener *l = &c->listeners[0];
    assert_string_equal(l->addr_text, "127.0.0.1:3128");
    assert_addr(&l->addr, AF_INET, "127.0.0.1", 3128);
    assert_int_equal(l->addrlen, sizeof(struct sockaddr_in));
    assert_int_equal(l->mode, VD_MODE_FORWARD);
    assert_int_equal(l->backlog, 511);
    assert_false(l->tls);
    assert_null(l->certs);
    assert_int_equal(l->ncerts, 0);
    assert_null(l->tls_min_version);
    l = &c->listeners[1];
    assert_string_equal(l->addr_text, "[::1]:8443");
    assert_addr(&l->addr, AF_INET6, "::1", 8443);
    assert_int_equal(l->addrlen, sizeof(struct sockaddr_in6));
    assert_int_equal(l->mode, VD_MODE_REVERSE);
    assert_int_equal(l->backlog, 128);
    assert_string_equal(l->tcp_congestion, "reno");
    assert_true(l->tls);
    assert_int_equal(l->ncerts, 2);
    snprintf(want, sizeof(want), "%s/certs/a.pem", t.dir);
    assert_string_equal(l->certs[0].cert_file, want);
    snprintf(want, sizeof(want), "%s/certs/a.key", t.dir);
    assert_string_equal(l->certs[0].key_file, want);
    snprintf(want, sizeof(want), "%s/certs/b.pem", t.dir);
    assert_string_equal(l->certs[1].cert_file, want);
    snprintf(want, sizeof(want), "%s/./certs/b.key", t.dir);
    assert_string_equal(l->certs[1].key_file, want);
    assert_string_equal(l->tls_min_version, "1.3");
    l = &c->listeners[2];
    assert_string_equal(l->addr_text, ":8080");
    /* proxy_protocol without proxy_protocol_from: loopback senders only. */
    assert_true(l->proxy_protocol);
    assert_int_equal(l->nproxy_from, 2);
    assert_int_equal(l->proxy_from[0].net.ss_family, AF_INET);
    assert_int_equal(l->proxy_from[0].prefix, 8);
    assert_int_equal(l->proxy_from[1].net.ss_family, AF_INET6);
    assert_int_equal(l->proxy_from[1].prefix, 128);
    assert_false(c->listeners[0].proxy_protocol);
    assert_addr(&l->addr, AF_INET, "0.0.0.0", 8080);
    assert_true(l->tls);
    assert_int_equal(l->ncerts, 1);
    assert_string_equal(l->tls_min_version, "1.2");
    l = &c->listeners[3];
    assert_string_equal(l->addr_text, "*:8081");
    assert_addr(&l->addr, AF_INET, "0.0.0.0", 8081);
    assert_false(l->tls);
    assert_int_equal(l->mode, VD_MODE_ADMIN);

    assert_int_equal(c->nrules, 6);
    const struct vd_conf_rule *ru = &c->rules[0];
    assert_true(ru->allow);
    assert_string_equal(ru->name, "access[0]");
    assert_int_equal(ru->nclients, 1);
    assert_int_equal(ru->clients[0].net.ss_family, AF_INET);
    assert_int_equal(ru->clients[0].prefix, 8);
    assert_int_equal(ru->nusers + ru->nmethods + ru->ndest_hosts + ru->ndest_nets, 0);
    assert_int_equal(ru->sni_mismatch, -1);
    assert_int_equal(ru->declared_mismatch, -1);
    assert_string_equal(c->rules[1].name, "access[1]");
    assert_int_equal(c->rules[1].clients[0].net.ss_family, AF_INET6);
    assert_int_equal(c->rules[1].clients[0].prefix, 128);
    assert_false(c->rules[2].allow);
    assert_int_equal(c->rules[4].clients[0].prefix, 32);
    assert_false(c->rules[5].allow);
    assert_int_equal(c->rules[5].nclients, 0); /* all: no condition */
    assert_string_equal(c->rules[5].name, "access[5]");

    assert_int_equal(c->tunnel.idle_timeout, 300000);
    assert_false(c->tunnel.splice);
    assert_int_equal(c->tunnel.socket_buffer, 1u << 20);
    assert_int_equal(c->tunnel.socket_buffer_rtt, 2000);
    assert_int_equal(c->tunnel.sniff_bytes, 4096);
    assert_int_equal(c->tunnel.sniff_timeout, 2500);
    assert_int_equal(c->tunnel.nupgrade_protocols, 2);
    assert_string_equal(c->tunnel.upgrade_protocols[0], "websocket");
    assert_string_equal(c->tunnel.upgrade_protocols[1], "h2c");

    assert_true(c->via_enabled);
    assert_string_equal(c->via, "edge-1");
    assert_string_equal(c->server_name, "viaduct test");

    assert_int_equal(c->limits.request_line, 16384);
    assert_int_equal(c->limits.header_block, 65536);
    assert_int_equal(c->limits.header_count, 50);
    assert_int_equal(c->limits.body, 10 * 1048576);
    assert_int_equal(c->limits.chunk_line, 1024);
    assert_int_equal(c->limits.trailer_block, 2048);
    assert_int_equal(c->limits.max_connections, 500);
    assert_int_equal(c->limits.request_arena, 131072);
    assert_int_equal(c->limits.via_loop, 3);

    assert_int_equal(c->timeouts.client_header, 5000);
    assert_int_equal(c->timeouts.keepalive, 120000);
    assert_int_equal(c->timeouts.upstream_connect, 1500);
    assert_int_equal(c->timeouts.upstream_first_byte, 3600000);
    assert_int_equal(c->timeouts.send, 7000);
    assert_int_equal(c->timeouts.client_body, 8000);
    assert_int_equal(c->timeouts.upstream_read, 9000);
    assert_int_equal(c->timeouts.shutdown_grace, 0);
    assert_int_equal(c->timeouts.upgrade_grace, 7200000);
    assert_int_equal(c->timeouts.upgrade_start, 300000);

    assert_int_equal(c->upstream.pool_idle_max, 8);
    assert_int_equal(c->upstream.pool_idle_timeout, 90000);
    snprintf(want, sizeof(want), "%s/certs/ca.pem", t.dir);
    assert_string_equal(c->upstream.ca_file, want);
    snprintf(want, sizeof(want), "%s/certs", t.dir);
    assert_string_equal(c->upstream.ca_path, want);
    assert_false(c->upstream.verify);
    assert_string_equal(c->upstream.tcp_congestion, "reno");

    assert_int_equal(c->nroutes, 4);
    const struct vd_conf_route *r = &c->routes[0];
    assert_string_equal(r->host, "example.com");
    assert_string_equal(r->path_prefix, "/api/");
    assert_string_equal(r->servers[0].url, "https://127.0.0.1:8443");
    assert_true(r->servers[0].tls);
    assert_string_equal(r->servers[0].host, "127.0.0.1");
    assert_int_equal(r->servers[0].port, 8443);
    assert_string_equal(r->host_header, "origin.example:8443");
    assert_string_equal(r->sni, "origin.example");
    assert_int_equal(r->forwarded, VD_FWD_RFC7239);
    r = &c->routes[1];
    assert_string_equal(r->host, "*.example.org");
    assert_string_equal(r->path_prefix, "/");
    assert_false(r->servers[0].tls);
    assert_string_equal(r->servers[0].host, "::1");
    assert_int_equal(r->servers[0].port, 8080);
    assert_null(r->host_header);
    assert_null(r->sni);
    assert_int_equal(r->forwarded, VD_FWD_BOTH);
    r = &c->routes[2];
    assert_null(r->host);
    assert_string_equal(r->servers[0].url, "HTTP://Backend.Local");
    assert_false(r->servers[0].tls);
    assert_string_equal(r->servers[0].host, "backend.local");
    assert_int_equal(r->servers[0].port, 80);
    assert_int_equal(r->forwarded, VD_FWD_NONE);
    r = &c->routes[3];
    assert_true(r->servers[0].tls);
    assert_int_equal(r->servers[0].port, 443);
    assert_int_equal(r->forwarded, VD_FWD_XFF);

    assert_string_equal(c->resolver.nameservers, "127.0.0.1:5353,[::1]:53,10.0.0.53");
    assert_int_equal(c->resolver.cache_max_ttl, 300000);
    assert_int_equal(c->resolver.negative_ttl, 0);
    assert_int_equal(c->resolver.timeout, 2000);
    assert_int_equal(c->resolver.tries, 3);
    assert_int_equal(c->resolver.cache_size, 100);

    assert_int_equal(c->log.level, VD_LOG_DEBUG);
    snprintf(want, sizeof(want), "%s/logs/error.log", t.dir);
    assert_string_equal(c->log.error_log, want);
    assert_string_equal(c->log.access_log, "stdout");
    assert_int_equal(c->log.access_format, VD_ALOG_JSON);
    assert_int_equal(c->log.trace_mask, (1u << VD_SUB_H1) | (1u << VD_SUB_PROXY));

    assert_int_equal(c->nconnect_ports, 5);
    static const uint16_t ports[] = {443, 8000, 8001, 8002, 8443};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(c->connect_ports[i], ports[i]);
    }
    vd_conf_unref(c);
    tmp_done(&t);
}

/* Omitted keys keep vd_conf_default()'s values. */
static void
test_defaults(void **state)
{
    char path[64], err[512];
    struct vd_conf *c = NULL;
    struct vd_conf *d = vd_conf_default();
    (void)state;
    assert_int_equal(load_str("via: viaduct\n", &c, err, sizeof(err), path), 0);
    assert_int_equal(c->workers, d->workers);
    assert_int_equal(c->nlisteners, 1);
    assert_string_equal(c->listeners[0].addr_text, "127.0.0.1:3128");
    assert_addr(&c->listeners[0].addr, AF_INET, "127.0.0.1", 3128);
    assert_int_equal(c->listeners[0].mode, VD_MODE_FORWARD);
    assert_int_equal(c->listeners[0].backlog, 511);
    assert_null(c->listeners[0].tcp_congestion);
    assert_int_equal(c->nrules, 2);
    assert_string_equal(c->rules[0].name, "access[0]");
    assert_true(c->rules[0].allow);
    assert_int_equal(c->rules[0].nclients, 1);
    assert_int_equal(c->rules[0].clients[0].net.ss_family, AF_INET);
    assert_int_equal(c->rules[0].clients[0].prefix, 8);
    assert_string_equal(c->rules[1].name, "access[1]");
    assert_int_equal(c->rules[1].clients[0].net.ss_family, AF_INET6);
    assert_int_equal(c->rules[1].clients[0].prefix, 128);
    assert_int_equal(c->rules[1].sni_mismatch, -1);
    assert_int_equal(c->tunnel.idle_timeout, 3600000);
    assert_int_equal(c->timeouts.upgrade_start, 60000);
    assert_true(c->tunnel.splice);
    assert_int_equal(c->tunnel.socket_buffer, 512u << 10);
    assert_int_equal(c->tunnel.socket_buffer_rtt, 250);
    assert_int_equal(c->tunnel.sniff_bytes, 16384);
    assert_int_equal(c->cache.memory, 256u << 20);
    assert_int_equal(c->cache.max_object, 8u << 20);
    assert_int_equal(c->cache.heuristic_max, 86400000);
    assert_int_equal(c->tunnel.sniff_timeout, 10000);
    assert_int_equal(c->tunnel.nupgrade_protocols, 1);
    assert_string_equal(c->tunnel.upgrade_protocols[0], "websocket");
    assert_true(c->via_enabled);
    assert_string_equal(c->via, d->via);
    assert_string_equal(c->server_name, d->server_name);
    assert_memory_equal(&c->limits, &d->limits, sizeof(d->limits));
    assert_memory_equal(&c->timeouts, &d->timeouts, sizeof(d->timeouts));
    assert_int_equal(c->upstream.pool_idle_max, d->upstream.pool_idle_max);
    assert_int_equal(c->upstream.pool_idle_timeout, d->upstream.pool_idle_timeout);
    assert_null(c->upstream.ca_file);
    assert_null(c->upstream.ca_path);
    assert_null(c->upstream.tcp_congestion);
    assert_true(c->upstream.verify);
    assert_int_equal(c->nroutes, 0);
    assert_null(c->resolver.nameservers);
    assert_memory_equal(&c->resolver.cache_max_ttl, &d->resolver.cache_max_ttl,
                        sizeof(uint64_t) * 3);
    assert_int_equal(c->resolver.tries, d->resolver.tries);
    assert_int_equal(c->resolver.cache_size, d->resolver.cache_size);
    assert_int_equal(c->log.level, VD_LOG_INFO);
    assert_null(c->log.error_log);
    assert_string_equal(c->log.access_log, "stdout");
    assert_int_equal(c->log.access_format, VD_ALOG_TEXT);
    assert_int_equal(c->log.trace_mask, 0);
    assert_int_equal(c->nconnect_ports, 1);
    assert_int_equal(c->connect_ports[0], 443);
    vd_conf_unref(c);

    /* Per-listener defaults; sections may be given partly. */
    assert_int_equal(load_str("workers: auto\n"
                              "listeners: [{address: '127.0.0.1:0'}, {address: '127.0.0.1:0'}]\n"
                              "limits: {body: 1m}\n"
                              "timeouts: {keepalive: 5s}\n"
                              "via: false\n"
                              "access: []\n"
                              "log: {access_log: 'off', error_log: stderr, trace: [all]}\n"
                              "connect: {ports: []}\n"
                              "tunnel: {upgrade_protocols: []}\n",
                              &c, err, sizeof(err), path),
                     0);
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->nlisteners, 2); /* port 0 twice is not a duplicate */
    assert_int_equal(c->listeners[1].backlog, 511);
    assert_int_equal(c->limits.body, 1048576);
    assert_int_equal(c->limits.request_line, d->limits.request_line);
    assert_int_equal(c->timeouts.keepalive, 5000);
    assert_int_equal(c->timeouts.client_header, d->timeouts.client_header);
    assert_false(c->via_enabled);
    assert_null(c->via);
    assert_int_equal(c->nrules, 0);
    assert_int_equal(c->tunnel.nupgrade_protocols, 0);
    assert_null(c->log.access_log);
    assert_null(c->log.error_log);
    assert_int_equal(c->log.trace_mask, (1u << VD_SUB_MAX) - 1);
    assert_int_equal(c->nconnect_ports, 0);
    const char *rule = "x";
    assert_false(acl_allows(c, "127.0.0.1", &rule)); /* empty ACL: nothing matches, deny */
    assert_null(rule);
    vd_conf_unref(c);
    vd_conf_unref(d);
}

/* Relative paths are resolved against the configuration file's directory, whatever the working
 * directory and however the file itself was named. */
static void
test_relative_paths(void **state)
{
    struct tmp t;
    char err[512], cwd[PATH_MAX], rel[2 * PATH_MAX], want[PATH_MAX], base[64];
    struct vd_conf *c = NULL;
    (void)state;
    tmp_init(&t);
    memcpy(base, t.dir + 5, sizeof(t.dir) - 5);
    make_certs(&t);
    tmp_write(&t, "viaduct.yaml",
              "listeners:\n"
              "  - address: 127.0.0.1:8443\n"
              "    tls:\n"
              "      certificates:\n"
              "        - cert: certs/a.pem\n"
              "          key: certs/a.key\n"
              "log:\n"
              "  access_log: access.log\n");
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir("/tmp"), 0);
    /* "vdconf.XXXXXX/viaduct.yaml", relative to /tmp */
    snprintf(rel, sizeof(rel), "./%s/viaduct.yaml", base);
    int rc = vd_conf_load(rel, &c, err, sizeof(err));
    assert_int_equal(chdir(cwd), 0);
    if (rc) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, 0);
    snprintf(want, sizeof(want), "%s/certs/a.pem", t.dir);
    assert_string_equal(c->listeners[0].certs[0].cert_file, want);
    snprintf(want, sizeof(want), "%s/certs/a.key", t.dir);
    assert_string_equal(c->listeners[0].certs[0].key_file, want);
    snprintf(want, sizeof(want), "%s/access.log", t.dir);
    assert_string_equal(c->log.access_log, want);
    assert_string_equal(c->source, rel);
    vd_conf_unref(c);

    /* A missing key file is reported with the resolved path. */
    const char *bad = tmp_write(&t, "bad.yaml",
                                "listeners:\n"
                                "  - address: 127.0.0.1:8443\n"
                                "    tls:\n"
                                "      certificates:\n"
                                "        - {cert: certs/a.pem, key: certs/a.key}\n"
                                "        - cert: certs/b.pem\n"
                                "          key: certs/nope.key\n");
    assert_int_equal(vd_conf_load(bad, &c, err, sizeof(err)), VD_ECONF);
    snprintf(want, sizeof(want),
             "%s:7:16: listeners[0].tls.certificates[1].key: cannot read %s/certs/nope.key: No "
             "such file or directory",
             bad, t.dir);
    assert_string_equal(err, want);
    assert_null(c);

    bad = tmp_write(&t, "bad2.yaml",
                    "listeners:\n"
                    "  - address: 127.0.0.1:8443\n"
                    "    tls:\n"
                    "      certificates:\n"
                    "        - cert: /nonexistent/x.pem\n"
                    "          key: certs/a.key\n");
    assert_int_equal(vd_conf_load(bad, &c, err, sizeof(err)), VD_ECONF);
    snprintf(want, sizeof(want),
             "%s:5:17: listeners[0].tls.certificates[0].cert: cannot read /nonexistent/x.pem: No "
             "such file or directory",
             bad);
    assert_string_equal(err, want);

    bad = tmp_write(&t, "bad3.yaml",
                    "listeners:\n"
                    "  - address: 127.0.0.1:8443\n"
                    "    tls: {certificates: [{cert: certs, key: certs/a.key}]}\n");
    assert_int_equal(vd_conf_load(bad, &c, err, sizeof(err)), VD_ECONF);
    snprintf(want, sizeof(want),
             "%s:3:33: listeners[0].tls.certificates[0].cert: %s/certs is not a regular file", bad,
             t.dir);
    assert_string_equal(err, want);

    /* Unreadable (permission bits do not stop root, so only checked as another user). */
    if (geteuid() != 0) {
        snprintf(want, sizeof(want), "%s/certs/b.key", t.dir);
        assert_int_equal(chmod(want, 0), 0);
        bad = tmp_write(&t, "bad4.yaml",
                        "listeners:\n"
                        "  - address: 127.0.0.1:8443\n"
                        "    tls: {certificates: [{cert: certs/b.pem, key: certs/b.key}]}\n");
        assert_int_equal(vd_conf_load(bad, &c, err, sizeof(err)), VD_ECONF);
        snprintf(rel, sizeof(rel),
                 "%s:3:55: listeners[0].tls.certificates[0].key: cannot read %s: Permission "
                 "denied",
                 bad, want);
        assert_string_equal(err, rel);
    }
    tmp_done(&t);
}

static void
test_acl(void **state)
{
    char path[64], err[512];
    struct vd_conf *c = NULL;
    const char *rule;
    (void)state;
    assert_int_equal(load_str("access:\n"
                              "  - deny: 10.9.0.0/16\n"
                              "  - allow: 10.0.0.0/8\n"
                              "  - allow: 192.168.1.7\n"
                              "  - allow: fd00::/8\n"
                              "  - deny: all\n",
                              &c, err, sizeof(err), path),
                     0);
    assert_true(acl_allows(c, "10.1.2.3", &rule));
    assert_string_equal(rule, "access[1]");
    assert_false(acl_allows(c, "10.9.200.1", &rule));
    assert_string_equal(rule, "access[0]");
    assert_true(acl_allows(c, "192.168.1.7", &rule));
    assert_false(acl_allows(c, "192.168.1.8", &rule));
    assert_string_equal(rule, "access[4]");
    assert_true(acl_allows(c, "::ffff:10.0.0.1", &rule)); /* v4-mapped */
    assert_string_equal(rule, "access[1]");
    assert_false(acl_allows(c, "::ffff:10.9.0.1", &rule));
    assert_string_equal(rule, "access[0]");
    assert_true(acl_allows(c, "fd12::1", &rule));
    assert_string_equal(rule, "access[3]");
    assert_false(acl_allows(c, "::1", &rule));
    assert_string_equal(rule, "access[4]");
    vd_conf_unref(c);

    assert_int_equal(load_str("access: [allow: 10.0.0.0/8]\n", &c, err, sizeof(err), path), 0);
    assert_false(acl_allows(c, "1.2.3.4", &rule));
    assert_null(rule);
    vd_conf_unref(c);
}

/* The long form of access rules, every condition, into the snapshot's structures. */
static void
test_access_long(void **state)
{
    char path[64], err[512], buf[INET6_ADDRSTRLEN];
    struct vd_conf *c = NULL;
    (void)state;
    int rc = load_str("access:\n"
                      "  - name: no-metadata\n"
                      "    deny:\n"
                      "      dest_nets: [169.254.0.0/16, \"fd00:ec2::/32\"]\n"
                      "  - allow:\n"
                      "      clients: [10.0.0.0/8]\n"
                      "      users: [alice, \"*\"]\n"
                      "      methods: [CONNECT, GET]\n"
                      "      dest_hosts: [\"*.Example.com\", example.com, '[::0:1]', 2001:DB8::1, "
                      "192.0.2.1]\n"
                      "      dest_ports: [443, \"8000-8100\"]\n"
                      "      declared: [IMAP, websocket]\n"
                      "      protocols: [tls, ssh]\n"
                      "      sni: [\"*.example.COM\", \"\"]\n"
                      "      alpn: [h2, http/1.1]\n"
                      "      sni_mismatch: true\n"
                      "      declared_mismatch: True\n"
                      "  - name: single.scalars_1\n"
                      "    allow: {clients: 192.0.2.0/24, users: bob, methods: GET, dest_hosts: "
                      "a.test, dest_nets: all, dest_ports: 80, declared: h2c, protocols: http, "
                      "sni: a.test, alpn: h2}\n"
                      "  - deny: {}\n",
                      &c, err, sizeof(err), path);
    if (rc) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(c->nrules, 4);

    const struct vd_conf_rule *r = &c->rules[0];
    assert_false(r->allow);
    assert_string_equal(r->name, "no-metadata");
    assert_int_equal(r->ndest_nets, 2);
    assert_int_equal(r->dest_nets[0].net.ss_family, AF_INET);
    assert_int_equal(r->dest_nets[0].prefix, 16);
    assert_int_equal(r->dest_nets[1].net.ss_family, AF_INET6);
    assert_int_equal(r->dest_nets[1].prefix, 32);
    assert_non_null(inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&r->dest_nets[1].net)->sin6_addr,
                              buf, sizeof(buf)));
    assert_string_equal(buf, "fd00:ec2::");
    assert_int_equal(r->nclients + r->nusers + r->nmethods + r->ndest_hosts + r->ndest_ports +
                         r->ndeclared + r->nprotocols + r->nsnis + r->nalpns,
                     0);
    assert_int_equal(r->sni_mismatch, -1);
    assert_int_equal(r->declared_mismatch, -1);

    r = &c->rules[1];
    assert_true(r->allow);
    assert_string_equal(r->name, "access[1]");
    assert_int_equal(r->nclients, 1);
    assert_int_equal(r->clients[0].prefix, 8);
    assert_int_equal(r->nusers, 2);
    assert_string_equal(r->users[0], "alice");
    assert_string_equal(r->users[1], "*");
    assert_int_equal(r->nmethods, 2);
    assert_string_equal(r->methods[0], "CONNECT");
    assert_string_equal(r->methods[1], "GET");
    assert_int_equal(r->ndest_hosts, 5);
    assert_string_equal(r->dest_hosts[0], "*.example.com");
    assert_string_equal(r->dest_hosts[1], "example.com");
    assert_string_equal(r->dest_hosts[2], "::1");
    assert_string_equal(r->dest_hosts[3], "2001:db8::1");
    assert_string_equal(r->dest_hosts[4], "192.0.2.1");
    assert_int_equal(r->ndest_ports, 2);
    assert_int_equal(r->dest_ports[0].lo, 443);
    assert_int_equal(r->dest_ports[0].hi, 443);
    assert_int_equal(r->dest_ports[1].lo, 8000);
    assert_int_equal(r->dest_ports[1].hi, 8100);
    assert_int_equal(r->ndeclared, 2);
    assert_string_equal(r->declared[0], "imap");
    assert_string_equal(r->declared[1], "websocket");
    assert_int_equal(r->nprotocols, 2);
    assert_string_equal(r->protocols[0], "tls");
    assert_string_equal(r->protocols[1], "ssh");
    assert_int_equal(r->nsnis, 2);
    assert_string_equal(r->snis[0], "*.example.com");
    assert_string_equal(r->snis[1], "");
    assert_int_equal(r->nalpns, 2);
    assert_string_equal(r->alpns[0], "h2");
    assert_string_equal(r->alpns[1], "http/1.1");
    assert_int_equal(r->sni_mismatch, 1);
    assert_int_equal(r->declared_mismatch, 1);
    assert_int_equal(r->ndest_nets, 0);

    r = &c->rules[2];
    assert_string_equal(r->name, "single.scalars_1");
    assert_int_equal(r->nclients, 1);
    assert_int_equal(r->clients[0].prefix, 24);
    assert_int_equal(r->nusers, 1);
    assert_string_equal(r->users[0], "bob");
    assert_int_equal(r->nmethods, 1);
    assert_int_equal(r->ndest_hosts, 1);
    assert_int_equal(r->ndest_nets, 1);
    assert_int_equal(r->dest_nets[0].net.ss_family, AF_UNSPEC);
    assert_int_equal(r->ndest_ports, 1);
    assert_int_equal(r->dest_ports[0].lo, 80);
    assert_string_equal(r->declared[0], "h2c");
    assert_string_equal(r->protocols[0], "http");
    assert_string_equal(r->snis[0], "a.test");
    assert_string_equal(r->alpns[0], "h2");

    r = &c->rules[3];
    assert_false(r->allow);
    assert_string_equal(r->name, "access[3]");
    assert_int_equal(r->nclients + r->ndest_nets + r->nsnis, 0);
    vd_conf_unref(c);
}

/* Anchors and aliases are plain YAML and work; !!str makes a plain scalar a string. */
static void
test_yaml_features(void **state)
{
    char path[64], err[512];
    struct vd_conf *c = NULL;
    (void)state;
    assert_int_equal(load_str("%YAML 1.2\n"
                              "---\n"
                              "timeouts:\n"
                              "  send: &t 12s\n"
                              "  client_body: *t\n"
                              "via: !!str false\n"
                              "routes:\n"
                              "  - &r {upstream: 'http://a:1', forwarded: none}\n"
                              "  - *r\n"
                              "...\n",
                              &c, err, sizeof(err), path),
                     0);
    assert_int_equal(c->timeouts.send, 12000);
    assert_int_equal(c->timeouts.client_body, 12000);
    assert_true(c->via_enabled);
    assert_string_equal(c->via, "false");
    assert_int_equal(c->nroutes, 2);
    assert_string_equal(c->routes[1].servers[0].host, "a");
    assert_int_equal(c->routes[1].servers[0].port, 1);
    vd_conf_unref(c);
}

static const char *const top_keys =
    "workers, listeners, access, via, server_name, limits, timeouts, upstream, routes, resolver, "
    "log, connect, tunnel, auth, masque, cache or http2";

static void
test_errors_syntax(void **state)
{
    char want[512];
    (void)state;
    expect_err("workers: 2\nlisteners: [{address: 127.0.0.1:1}\n",
               "3:1: syntax error: flow sequence without a closing bracket");
    expect_err("workers: 2\nlog:\n\tlevel: info\n",
               "3:1: syntax error: tab character may not be used as indentation");
    expect_err("via: \"abc\n", "1:7: syntax error: double-quoted scalar without closing quote");
    /* Checked before libfyaml sees it: libfyaml 0.7.12 hangs on "%\xba". */
    expect_err("%\xba\n", "1:2: syntax error: invalid UTF-8 (byte 0xba at offset 1)");
    expect_err("via: caf\xc3\xa9\nserver_name: \xed\xa0\x80\n",
               "2:14: syntax error: invalid UTF-8 (byte 0xed at offset 24)");
    expect_err("workers: 1\n---\nworkers: 2\n", "2:1: (yaml): only one YAML document is allowed");
    expect_err("workers: *n\n", "1:10: (yaml): alias *n refers to no complete anchored node");
    expect_err("workers: !int 2\n", "1:10: (yaml): unsupported tag '!int'");
    expect_err("", "1:1: (root): the file holds no settings; expected a mapping such as "
                   "'listeners: ...'");
    expect_err("# only a comment\n", "1:1: (root): the file holds no settings; expected a "
                                     "mapping such as 'listeners: ...'");
    expect_err("- workers\n", "1:1: (root): expected a mapping, got a sequence");
    snprintf(want, sizeof(want), "1:1: worker: unknown key (expected %s)", top_keys);
    expect_err("worker: 2\n", want);
    expect_err("workers: 2\nvia: a\nworkers: 3\n",
               "3:1: workers: duplicate key (first at line 1, column 1)");
    expect_err("{[1]: 2}\n", "1:2: (root): keys must be non-empty strings, got a sequence");

    char path[64], err[128];
    struct vd_conf *c = NULL;
    assert_int_equal(vd_conf_load("/nonexistent/viaduct.yaml", &c, err, sizeof(err)), VD_ECONF);
    assert_string_equal(err, "/nonexistent/viaduct.yaml: cannot open: No such file or directory");
    assert_null(c);
    /* A small error buffer truncates but stays terminated; NULL is accepted. */
    assert_int_equal(load_str("workers: 0\n", &c, err, 10, path), VD_ECONF);
    assert_int_equal(strlen(err), 9);
    assert_int_equal(load_str("workers: 0\n", &c, NULL, 0, path), VD_ECONF);
}

static void
test_errors_types(void **state)
{
    (void)state;
    expect_err("workers: 0\n", "1:10: workers: expected an integer from 1 to 256 or auto, got '0'");
    expect_err("workers: 257\n",
               "1:10: workers: expected an integer from 1 to 256 or auto, got '257'");
    expect_err("workers: -1\n",
               "1:10: workers: expected an integer from 1 to 256 or auto, got '-1'");
    expect_err("workers:\n", "1:8: workers: expected an integer or auto, got an empty value");
    expect_err("workers: [2]\n", "1:10: workers: expected an integer or auto, got a sequence");
    expect_err("listeners: {address: 127.0.0.1:1}\n",
               "1:12: listeners: expected a sequence of listeners, got a mapping");
    expect_err("limits:\n  body: {}\n", "2:9: limits.body: expected a size, got a mapping");
    expect_err("limits: 5\n", "1:9: limits: expected a mapping, got a scalar");
    expect_err("upstream:\n  verify: yes\n",
               "2:11: upstream.verify: expected true or false, got 'yes'");
    expect_err("upstream:\n  verify: 'true'\n",
               "2:11: upstream.verify: expected true or false, got 'true'");
    expect_err("limits:\n  header_count: 1k\n",
               "2:17: limits.header_count: expected an integer from 1 to 4294967295, got '1k'");
    expect_err("limits:\n  max_connections: 0\n",
               "2:20: limits.max_connections: expected an integer from 1 to 4294967295, got '0'");
    expect_err("resolver: {tries: 0}\n",
               "1:19: resolver.tries: expected an integer from 1 to 16, got '0'");
    expect_err("via: \"a b\"\n", "1:6: via: bad pseudonym 'a b': only letters, digits and "
                                 "!#$%&'*+-.^_`|~ are allowed");
    expect_err("via: true\n", "1:6: via: expected a pseudonym (a token) or false, got true");
    expect_err("via: ''\n", "1:6: via: pseudonym must not be empty (write false to disable Via)");
    expect_err("server_name: \"a\\x01\"\n",
               "1:14: server_name: must be 1 to 255 printable ASCII characters, without leading "
               "or trailing spaces");
    expect_err("via: \"a\\0b\"\n",
               "1:6: via: expected a pseudonym (a token) or false, got a value containing a NUL "
               "character");
}

static void
test_cache_section(void **state)
{
    char path[64], err[512];
    struct vd_conf *c = NULL;
    (void)state;
    assert_int_equal(load_str("cache:\n  memory: 1g\n  max_object: 16m\n  heuristic_max: 6h\n", &c,
                              err, sizeof(err), path),
                     0);
    assert_int_equal(c->cache.memory, 1ull << 30);
    assert_int_equal(c->cache.max_object, 16u << 20);
    assert_int_equal(c->cache.heuristic_max, 6 * 3600000);
    assert_null(c->cache.disk_path); /* disk tier defaults */
    assert_int_equal(c->cache.disk_size, 1ull << 30);
    assert_int_equal(c->cache.disk_objects, 1000000);
    assert_int_equal(c->cache.disk_queue, 16u << 20);
    assert_false(c->cache.disk_fsync);
    assert_int_equal(c->cache.sendfile_min, 64u << 10);
    assert_int_equal(c->cache.sendfile_files, 256);
    assert_int_equal(c->cache.memory_files, 1024);
    assert_int_equal(c->cache.disk_send, VD_DISK_SEND_AUTO);
    vd_conf_unref(c);
    assert_int_equal(load_str("cache: {sendfile_min: 0, sendfile_files: 8, disk_send: mapped, "
                              "memory_files: 0}\n",
                              &c, err, sizeof(err), path),
                     0);
    assert_int_equal(c->cache.sendfile_min, 0);
    assert_int_equal(c->cache.sendfile_files, 8);
    assert_int_equal(c->cache.memory_files, 0);
    assert_int_equal(c->cache.disk_send, VD_DISK_SEND_MAPPED);
    vd_conf_unref(c);
    assert_int_equal(load_str("cache: {disk_send: sendfile}\n", &c, err, sizeof(err), path), 0);
    assert_int_equal(c->cache.disk_send, VD_DISK_SEND_SENDFILE);
    vd_conf_unref(c);
    expect_err("cache:\n  sendfile_files: 70000\n",
               "2:19: cache.sendfile_files: expected an integer from 0 to 65536, got '70000'");
    expect_err("cache:\n  memory_files: -1\n",
               "2:17: cache.memory_files: expected an integer from 0 to 65536, got '-1'");
    expect_err("cache:\n  disk_send: mmap\n",
               "2:14: cache.disk_send: unknown disk_send 'mmap' (expected auto, sendfile or "
               "mapped)");
    char dir[] = "/tmp/vdconf-disk-XXXXXX", text[256];
    assert_non_null(mkdtemp(dir));
    snprintf(text, sizeof(text),
             "cache:\n  disk_path: %s\n  disk_size: 2g\n  disk_objects: 5000\n"
             "  disk_queue: 1m\n  disk_fsync: true\n",
             dir);
    assert_int_equal(load_str(text, &c, err, sizeof(err), path), 0);
    assert_string_equal(c->cache.disk_path, dir);
    assert_int_equal(c->cache.disk_size, 2ull << 30);
    assert_int_equal(c->cache.disk_objects, 5000);
    assert_int_equal(c->cache.disk_queue, 1u << 20);
    assert_true(c->cache.disk_fsync);
    vd_conf_unref(c);
    assert_int_equal(rmdir(dir), 0);
    expect_err("cache:\n  disk_path: /nonexistent-vd/x\n",
               "2:14: cache.disk_path: /nonexistent-vd/x does not exist and cannot be created in "
               "/nonexistent-vd");
    expect_err("cache:\n  disk_size: 1k\n",
               "2:14: cache.disk_size: size '1k' is out of range: 1048576 to 18446744073709551615 "
               "bytes");
    assert_int_equal(load_str("cache: {memory: 0, heuristic_max: 0}\n", &c, err, sizeof(err), path),
                     0);
    assert_int_equal(c->cache.memory, 0);
    assert_int_equal(c->cache.heuristic_max, 0);
    vd_conf_unref(c);
    expect_err("cache:\n  max_object: 0\n",
               "2:15: cache.max_object: size '0' is out of range: 1 to 4294967295 bytes");
    expect_err("cache:\n  nosuch: 1g\n",
               "2:3: cache.nosuch: unknown key (expected memory, max_object, heuristic_max, "
               "max_ranges, background_revalidations, targeted_fields, disk_path, disk_size, "
               "disk_objects, disk_queue, disk_fsync, sendfile_min, sendfile_files, memory_files, "
               "disk_send, collapse or collapse_timeout)");
    assert_int_equal(
        load_str("cache: {collapse: false, collapse_timeout: 250ms}\n", &c, err, sizeof(err), path),
        0);
    assert_false(c->cache.collapse);
    assert_int_equal(c->cache.collapse_timeout, 250);
    vd_conf_unref(c);
    expect_err("cache:\n  collapse_timeout: 0\n",
               "2:21: cache.collapse_timeout: duration must be greater than 0");
    assert_int_equal(load_str("cache: {max_ranges: 0}\n", &c, err, sizeof(err), path), 0);
    assert_int_equal(c->cache.max_ranges, 0);
    vd_conf_unref(c);
    assert_int_equal(load_str("cache: {}\n", &c, err, sizeof(err), path), 0);
    assert_int_equal(c->cache.max_ranges, 16);
    assert_int_equal(c->cache.background, 64);
    assert_true(c->cache.collapse);
    assert_int_equal(c->cache.collapse_timeout, 5000);
    assert_int_equal(c->cache.ntargeted_fields, 1);
    assert_string_equal(c->cache.targeted_fields[0], "cdn-cache-control");
    vd_conf_unref(c);
    assert_int_equal(load_str("cache: {targeted_fields: [Edge-CC, CDN-Cache-Control]}\n", &c, err,
                              sizeof(err), path),
                     0);
    assert_int_equal(c->cache.ntargeted_fields, 2);
    assert_string_equal(c->cache.targeted_fields[0], "edge-cc");
    assert_string_equal(c->cache.targeted_fields[1], "cdn-cache-control");
    vd_conf_unref(c);
    assert_int_equal(load_str("cache: {targeted_fields: []}\n", &c, err, sizeof(err), path), 0);
    assert_int_equal(c->cache.ntargeted_fields, 0);
    vd_conf_unref(c);
    expect_err("cache:\n  targeted_fields: [\"a b\"]\n",
               "2:21: cache.targeted_fields[0]: bad field name 'a b': expected a token such as "
               "CDN-Cache-Control");
    assert_int_equal(load_str("cache: {background_revalidations: 0}\n", &c, err, sizeof(err), path),
                     0);
    assert_int_equal(c->cache.background, 0);
    vd_conf_unref(c);
    expect_err("cache:\n  max_ranges: 257\n",
               "2:15: cache.max_ranges: expected an integer from 0 to 256, got '257'");
}

static void
test_errors_values(void **state)
{
    (void)state;
    expect_err("limits:\n  request_line: 8 KB x\n",
               "2:17: limits.request_line: bad size '8 KB x': expected a whole number of bytes "
               "with an optional unit (B; k, KB or KiB; m, MB or MiB; g, GB or GiB; all powers of "
               "1024)");
    expect_err("limits:\n  header_block: 0\n",
               "2:17: limits.header_block: size '0' is out of range: 1 to 4294967295 bytes");
    expect_err("limits:\n  request_arena: 4GiB\n",
               "2:18: limits.request_arena: size '4GiB' is out of range: 1 to 4294967295 bytes");
    expect_err("timeouts:\n  keepalive: 1.5s\n",
               "2:14: timeouts.keepalive: bad duration '1.5s': expected a whole number with an "
               "optional unit ms, s, m, h or d (no unit: seconds)");
    expect_err("timeouts:\n  send: 0s\n", "2:9: timeouts.send: duration must be greater than 0");
    expect_err("log:\n  level: verbose\n",
               "2:10: log.level: unknown level 'verbose' (expected emerg, alert, crit, error, "
               "warn, notice, info or debug)");
    expect_err("log:\n  access_format: xml\n",
               "2:18: log.access_format: unknown format 'xml' (expected text or json)");
    expect_err("log:\n  trace: [h1, h2]\n",
               "2:15: log.trace[1]: unknown trace subsystem 'h2' (expected loop, net, tls, h1, "
               "proxy, dns, conf or all)");
    expect_err("log:\n  error_log: /nonexistent/dir/error.log\n",
               "2:14: log.error_log: cannot create /nonexistent/dir/error.log: directory "
               "/nonexistent/dir: No such file or directory");
    expect_err("upstream:\n  ca_file: /nonexistent.pem\n",
               "2:12: upstream.ca_file: cannot read /nonexistent.pem: No such file or directory");
    expect_err("upstream:\n  ca_path: /etc/passwd\n",
               "2:12: upstream.ca_path: /etc/passwd is not a directory");
    expect_err("connect:\n  ports: [443, 9000-8000]\n",
               "2:16: connect.ports[1]: bad port '9000-8000': expected a port from 1 to 65535 or "
               "a range LOW-HIGH");
    expect_err("connect:\n  ports: [0]\n", "2:11: connect.ports[0]: bad port '0': expected a port "
                                           "from 1 to 65535 or a range LOW-HIGH");
    expect_err("resolver:\n  nameservers: [127.0.0.1:53, dns.example]\n",
               "2:31: resolver.nameservers[1]: bad name server 'dns.example': expected "
               "IPV4[:PORT], [IPV6][:PORT] or IPV6");
}

static void
test_errors_listeners(void **state)
{
    (void)state;
    expect_err("listeners: []\n", "1:12: listeners: at least one listener is required");
    expect_err("listeners:\n  - mode: forward\n",
               "2:5: listeners[0].address: required key is missing");
    expect_err(
        "listeners:\n  - address: 127.0.0.1:1\n    adress: x\n",
        "3:5: listeners[0].adress: unknown key (expected address, mode, backlog, tcp_congestion, "
        "proxy_protocol, proxy_protocol_from or tls)");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    proxy_protocol_from: [10.0.0.0/8]\n",
               "3:26: listeners[0].proxy_protocol_from: set proxy_protocol: true to use it");
    expect_err(
        "listeners:\n  - address: 127.0.0.1:1\n    proxy_protocol: true\n"
        "    proxy_protocol_from: [10.0.0.0/33]\n",
        "4:27: listeners[0].proxy_protocol_from[0]: bad CIDR '10.0.0.0/33': prefix length 33 "
        "is longer than 32");
    expect_err("listeners:\n  - address: localhost:99999\n",
               "2:14: listeners[0].address: bad address 'localhost:99999': expected IPV4:PORT, "
               "[IPV6]:PORT, :PORT or *:PORT with PORT from 0 to 65535");
    expect_err("listeners:\n  - address: example.com:80\n",
               "2:14: listeners[0].address: bad address 'example.com:80': expected IPV4:PORT, "
               "[IPV6]:PORT, :PORT or *:PORT with PORT from 0 to 65535");
    expect_err("listeners:\n"
               "  - address: 127.0.0.1:3128\n"
               "  - address: '[::1]:3128'\n"
               "  - address: 127.0.0.1:3128\n",
               "4:14: listeners[2].address: duplicate listener address 127.0.0.1:3128 "
               "(listeners[0] at line 2, column 14 has the same)");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    mode: transparent\n",
               "3:11: listeners[0].mode: unknown mode 'transparent' (expected forward, "
               "reverse or admin)");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    backlog: 0\n",
               "3:14: listeners[0].backlog: expected an integer from 1 to 65535, got '0'");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    tcp_congestion: Reno\n",
               "3:21: listeners[0].tcp_congestion: bad congestion control name 'Reno': expected 1 "
               "to 15 of a-z, 0-9, '_', '-'");
    expect_err("upstream:\n  tcp_congestion: [reno]\n",
               "2:19: upstream.tcp_congestion: expected a congestion control name, got a sequence");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n  - address: 127.0.0.1:2\n"
               "    mode: reverse\n",
               "4:11: listeners[1].mode: a reverse listener needs at least one entry in routes");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    mode: reverse\nroutes: []\n",
               "3:11: listeners[0].mode: a reverse listener needs at least one entry in routes");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    tls: {}\n",
               "3:10: listeners[0].tls.certificates: required key is missing");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    tls:\n      certificates: []\n",
               "4:21: listeners[0].tls.certificates: at least one certificate is required");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    tls:\n"
               "      certificates:\n        - cert: /etc/passwd\n",
               "5:11: listeners[0].tls.certificates[0].key: required key is missing");
    expect_err("listeners:\n  - address: 127.0.0.1:1\n    tls:\n"
               "      certificates: [{cert: /etc/passwd, key: /etc/passwd}]\n"
               "      min_version: 1.1\n",
               "5:20: listeners[0].tls.min_version: unknown TLS version '1.1' (expected \"1.2\" "
               "or \"1.3\")");
}

static void
test_errors_access(void **state)
{
    (void)state;
    expect_err("access:\n  - allow: 10.0.0.0/33\n",
               "2:12: access[0].allow: bad CIDR '10.0.0.0/33': prefix length 33 is longer than "
               "32");
    expect_err("access:\n  - allow: 10.0.0.0/8\n  - deny: 'fd00::/129'\n",
               "3:11: access[1].deny: bad CIDR 'fd00::/129': prefix length 129 is longer than 128");
    expect_err("access:\n  - allow: 10.0.0.0/\n",
               "2:12: access[0].allow: bad CIDR '10.0.0.0/': expected a prefix length from 0 to "
               "32 after '/'");
    expect_err("access:\n  - allow: 10.0.0/8\n",
               "2:12: access[0].allow: bad CIDR '10.0.0/8': expected an IPv4 or IPv6 address, "
               "optionally with /PREFIX, or all");
    expect_err("access:\n  - allow: localhost\n",
               "2:12: access[0].allow: bad CIDR 'localhost': expected an IPv4 or IPv6 address, "
               "optionally with /PREFIX, or all");
    expect_err("access:\n  - permit: all\n",
               "2:5: access[0].permit: unknown key (expected name, allow or deny)");
    expect_err("access:\n  - allow: 10.0.0.0/8\n    deny: all\n",
               "2:5: access[0]: expected exactly one of allow or deny, as in '- allow: CIDR'");
    expect_err("access:\n  - 10.0.0.0/8\n", "2:5: access[0]: expected a mapping, got a scalar");
    expect_err("access: all\n",
               "1:9: access: expected a sequence of allow or deny rules, got a scalar");
}

static void
test_errors_rules(void **state)
{
    (void)state;
    expect_err("access:\n  - allow: {client: 10.0.0.0/8}\n",
               "2:13: access[0].allow.client: unknown key (expected clients, users, methods, "
               "dest_hosts, dest_nets, dest_ports, declared, protocols, sni, alpn, sni_mismatch or "
               "declared_mismatch)");
    expect_err("access:\n  - allow: {clients: []}\n",
               "2:22: access[0].allow.clients: an empty list is not allowed: omit the key to match "
               "any value");
    expect_err("access:\n  - allow: {clients: {a: b}}\n",
               "2:22: access[0].allow.clients: expected an address, a CIDR or all, or a sequence "
               "of them, got a mapping");
    expect_err("access:\n  - allow: {clients: }\n",
               "2:20: access[0].allow.clients: expected an address, a CIDR or all, or a sequence "
               "of them, got an empty value");
    expect_err("access:\n  - allow: {clients: [10.0.0.0/8, 10.0.0.0/40]}\n",
               "2:35: access[0].allow.clients[1]: bad CIDR '10.0.0.0/40': prefix length 40 is "
               "longer than 32");
    expect_err("access:\n  - deny: {dest_nets: example.com}\n",
               "2:23: access[0].deny.dest_nets: bad CIDR 'example.com': expected an IPv4 or IPv6 "
               "address, optionally with /PREFIX, or all");
    expect_err("access:\n  - allow: {users: ['a:b']}\n",
               "2:21: access[0].allow.users[0]: bad user name 'a:b': expected 1 to 255 characters "
               "without ':' or control characters, or * for any authenticated user");
    expect_err("access:\n  - allow: {users: ['']}\n",
               "2:21: access[0].allow.users[0]: bad user name '': expected 1 to 255 characters "
               "without ':' or control characters, or * for any authenticated user");
    expect_err("access:\n  - allow: {methods: ['GE T']}\n",
               "2:23: access[0].allow.methods[0]: bad method 'GE T': expected a method token such "
               "as GET or CONNECT (case-sensitive)");
    expect_err("access:\n  - allow: {dest_hosts: ['a.example:80']}\n",
               "2:26: access[0].allow.dest_hosts[0]: bad host 'a.example:80': expected a host name "
               "without port, *.domain, an IPv4 address or an IPv6 address");
    expect_err("access:\n  - allow: {dest_hosts: ['*']}\n",
               "2:26: access[0].allow.dest_hosts[0]: bad host '*': expected a host name without "
               "port, *.domain, an IPv4 address or an IPv6 address");
    expect_err("access:\n  - allow: {dest_hosts: ['*.']}\n",
               "2:26: access[0].allow.dest_hosts[0]: bad host '*.': expected a host name without "
               "port, *.domain, an IPv4 address or an IPv6 address");
    expect_err("access:\n  - allow: {dest_ports: [0]}\n",
               "2:26: access[0].allow.dest_ports[0]: bad port '0': expected a port from 1 to 65535 "
               "or a range LOW-HIGH");
    expect_err("access:\n  - allow: {dest_ports: ['90-80']}\n",
               "2:26: access[0].allow.dest_ports[0]: bad port '90-80': expected a port from 1 to "
               "65535 or a range LOW-HIGH");
    expect_err("access:\n  - allow: {dest_ports: [65536]}\n",
               "2:26: access[0].allow.dest_ports[0]: bad port '65536': expected a port from 1 to "
               "65535 or a range LOW-HIGH");
    expect_err("access:\n  - allow: {declared: ['web socket']}\n",
               "2:24: access[0].allow.declared[0]: bad protocol name 'web socket': expected an "
               "Upgrade protocol name such as websocket");
    expect_err("access:\n  - allow: {protocols: [rdp]}\n",
               "2:25: access[0].allow.protocols[0]: unknown protocol 'rdp' (expected tls, ssh, "
               "http, imap, pop3, smtp, ftp or unknown)");
    expect_err("access:\n  - allow: {protocols: [TLS]}\n",
               "2:25: access[0].allow.protocols[0]: unknown protocol 'TLS' (expected tls, ssh, "
               "http, imap, pop3, smtp, ftp or unknown)");
    expect_err("access:\n  - allow: {sni: [192.0.2.1]}\n",
               "2:19: access[0].allow.sni[0]: bad server name '192.0.2.1': expected a DNS name, "
               "*.domain, or \"\" for a ClientHello without SNI");
    expect_err("access:\n  - allow: {sni: ['*.']}\n",
               "2:19: access[0].allow.sni[0]: bad server name '*.': expected a DNS name, *.domain, "
               "or \"\" for a ClientHello without SNI");
    expect_err("access:\n  - allow: {alpn: ['h 2']}\n",
               "2:20: access[0].allow.alpn[0]: bad ALPN protocol id 'h 2': expected 1 to 255 "
               "visible ASCII characters, such as h2 or http/1.1");
    expect_err("access:\n  - allow: {alpn: ['']}\n",
               "2:20: access[0].allow.alpn[0]: bad ALPN protocol id '': expected 1 to 255 visible "
               "ASCII characters, such as h2 or http/1.1");
    expect_err("access:\n  - allow: {sni_mismatch: false}\n",
               "2:27: access[0].allow.sni_mismatch: only true is meaningful (the rule then applies "
               "when the TLS server name differs from the requested host); omit the key otherwise");
    expect_err("access:\n  - allow: {declared_mismatch: false}\n",
               "2:32: access[0].allow.declared_mismatch: only true is meaningful (the rule then "
               "applies when the protocol seen in the tunnel differs from the declared one); omit "
               "the key otherwise");
    expect_err("access:\n  - allow: {sni_mismatch: yes}\n",
               "2:27: access[0].allow.sni_mismatch: expected true or false, got 'yes'");
    expect_err("access:\n  - name: a\n    allow: all\n  - name: a\n    deny: all\n",
               "4:11: access[1].name: duplicate rule name 'a' (access[0] at line 2, column 11 has "
               "the same)");
    expect_err("access:\n  - name: 'a b'\n    allow: all\n",
               "2:11: access[0].name: bad rule name 'a b': expected 1 to 64 letters, digits, '-', "
               "'_' or '.'");
    expect_err("access:\n  - name: 'access[1]'\n    allow: all\n",
               "2:11: access[0].name: bad rule name 'access[1]': expected 1 to 64 letters, digits, "
               "'-', '_' or '.'");
    expect_err("access:\n  - name: a\n",
               "2:5: access[0]: expected exactly one of allow or deny, as in '- allow: CIDR'");
    expect_err("access:\n  - allow: [10.0.0.0/8]\n",
               "2:12: access[0].allow: expected an address, a CIDR, all or a mapping of "
               "conditions, got a sequence");
    expect_err("access:\n  - allow:\n", "2:10: access[0].allow: expected an address, a CIDR, all "
                                        "or a mapping of conditions, got an empty value");
    expect_err("access:\n  - name: a\n    allow: all\n    deny: all\n",
               "2:5: access[0]: expected exactly one of allow or deny, as in '- allow: CIDR'");
}

static void
test_errors_tunnel(void **state)
{
    (void)state;
    expect_err("tunnel: {idle_timeout: 0}\n",
               "1:24: tunnel.idle_timeout: duration must be greater than 0");
    expect_err("tunnel: {sniff_timeout: 0}\n",
               "1:25: tunnel.sniff_timeout: duration must be greater than 0");
    expect_err("tunnel: {sniff_bytes: 511}\n",
               "1:23: tunnel.sniff_bytes: size '511' is out of range: 512 to 1048576 bytes");
    expect_err("tunnel: {sniff_bytes: 2MiB}\n",
               "1:23: tunnel.sniff_bytes: size '2MiB' is out of range: 512 to 1048576 bytes");
    expect_err("tunnel: {splice: yes}\n", "1:18: tunnel.splice: expected true or false, got 'yes'");
    expect_err(
        "tunnel: {upgrade_protocols: websocket}\n",
        "1:29: tunnel.upgrade_protocols: expected a sequence of protocol names, got a scalar");
    expect_err("tunnel: {upgrade_protocols: ['web socket']}\n",
               "1:30: tunnel.upgrade_protocols[0]: bad protocol name 'web socket': expected an "
               "Upgrade protocol name such as websocket");
    expect_err("tunnel: {upgrade: []}\n",
               "1:10: tunnel.upgrade: unknown key (expected idle_timeout, splice, socket_buffer, "
               "socket_buffer_rtt, sniff_bytes, sniff_timeout or upgrade_protocols)");
    expect_err(
        "tunnel: {socket_buffer: 32k}\n",
        "1:25: tunnel.socket_buffer: must be 0 (the kernel's autotuning) or at least 64 KiB");
    expect_err("tunnel: {socket_buffer: 65MiB}\n",
               "1:25: tunnel.socket_buffer: size '65MiB' is out of range: 0 to 67108864 bytes");
    expect_err("tunnel: {socket_buffer_rtt: 1001ms}\n",
               "1:29: tunnel.socket_buffer_rtt: duration '1001ms' is out of range: 0 to 1 s");
    expect_err(
        "tunnel: {socket_buffer_rtt: 5ns}\n",
        "1:29: tunnel.socket_buffer_rtt: bad duration '5ns': expected a whole number with an "
        "optional unit us, ms or s (no unit: seconds)");
    expect_err("tunnel: []\n", "1:9: tunnel: expected a mapping, got a sequence");
}

static void
test_route_groups(void **state)
{
    (void)state;
    char path[64], err[512];
    struct vd_conf *c = NULL;
    assert_int_equal(load_str("routes:\n"
                              "  - upstream: [http://A.test:81, 'https://[::1]:8443', http://b]\n"
                              "    balance: least_conn\n"
                              "    fail_timeout: 2500ms\n"
                              "  - upstream: http://one\n",
                              &c, err, sizeof(err), path),
                     0);
    const struct vd_conf_route *r = &c->routes[0];
    assert_int_equal(r->nservers, 3);
    assert_string_equal(r->servers[0].url, "http://A.test:81");
    assert_string_equal(r->servers[0].host, "a.test");
    assert_int_equal(r->servers[0].port, 81);
    assert_false(r->servers[0].tls);
    assert_string_equal(r->servers[1].host, "::1");
    assert_int_equal(r->servers[1].port, 8443);
    assert_true(r->servers[1].tls);
    assert_int_equal(r->servers[2].port, 80);
    assert_int_equal(r->balance, VD_BALANCE_LEAST_CONN);
    assert_int_equal(r->fail_timeout, 2500);
    assert_non_null(r->lb);
    r = &c->routes[1];
    assert_int_equal(r->nservers, 1);
    assert_null(r->lb);
    assert_int_equal(r->balance, VD_BALANCE_ROUND_ROBIN);
    assert_int_equal(r->fail_timeout, 10000);
    vd_conf_unref(c);

    expect_err("routes:\n  - upstream: []\n",
               "2:15: routes[0].upstream: at least one upstream URL is required");
    expect_err("routes:\n  - upstream: [http://a, ftp://b]\n",
               "2:26: routes[0].upstream[1]: bad upstream 'ftp://b': the scheme must be http:// "
               "or https://");
    expect_err("routes:\n  - upstream: [http://a, 'http://A:80']\n",
               "2:26: routes[0].upstream[1]: the same server as routes[0].upstream[0]");
    expect_err("routes:\n  - upstream: [{x: 1}]\n",
               "2:16: routes[0].upstream[0]: expected an upstream URL, got a mapping");
    expect_err("routes:\n  - upstream: [http://a, http://b]\n    balance: random\n",
               "3:14: routes[0].balance: unknown balance 'random' (expected round_robin, "
               "least_conn or client_hash)");
    expect_err("routes:\n  - upstream: http://a\n    fail_timeout: soon\n",
               "3:19: routes[0].fail_timeout: bad duration 'soon': expected a whole number with an "
               "optional unit ms, s, m, h or d (no unit: seconds)");
}

static void
test_route_health(void **state)
{
    (void)state;
    char path[64], err[512];
    struct vd_conf *c = NULL;
    assert_int_equal(load_str("routes:\n"
                              "  - upstream: [http://a, http://b]\n"
                              "    health_check: {path: /healthz}\n"
                              "  - upstream: https://one\n"
                              "    health_check:\n"
                              "      path: '/status?full=1&x=%41'\n"
                              "      interval: 250ms\n"
                              "      timeout: 1s\n"
                              "      rise: 1\n"
                              "      fall: 1000\n"
                              "      expect: 204\n"
                              "      host: health.example:8080\n"
                              "  - upstream: [http://a, http://b]\n",
                              &c, err, sizeof(err), path),
                     0);
    /* Defaults. */
    const struct vd_conf_health *h = &c->routes[0].health;
    assert_string_equal(h->path, "/healthz");
    assert_null(h->host);
    assert_int_equal(h->interval, 5000);
    assert_int_equal(h->timeout, 2000);
    assert_int_equal(h->rise, 2);
    assert_int_equal(h->fall, 3);
    assert_int_equal(h->expect_lo, 200);
    assert_int_equal(h->expect_hi, 399);
    assert_non_null(c->routes[0].lb);
    /* Every key; a single server with checks gets balancing state for their verdict. */
    h = &c->routes[1].health;
    assert_string_equal(h->path, "/status?full=1&x=%41");
    assert_string_equal(h->host, "health.example:8080");
    assert_int_equal(h->interval, 250);
    assert_int_equal(h->timeout, 1000);
    assert_int_equal(h->rise, 1);
    assert_int_equal(h->fall, 1000);
    assert_int_equal(h->expect_lo, 204);
    assert_int_equal(h->expect_hi, 204);
    assert_int_equal(c->routes[1].nservers, 1);
    assert_non_null(c->routes[1].lb);
    /* No checks. */
    assert_null(c->routes[2].health.path);
    assert_non_null(c->routes[2].lb);
    vd_conf_unref(c);

#define HC_ROUTE "routes:\n  - upstream: [http://a, http://b]\n    health_check: "
    expect_err(HC_ROUTE "{path: /h, intervall: 1s}\n",
               "3:30: routes[0].health_check.intervall: unknown key (expected path, interval, "
               "timeout, rise, fall, expect or host)");
    expect_err(HC_ROUTE "{interval: 1s}\n",
               "3:19: routes[0].health_check.path: required key is missing");
    expect_err(HC_ROUTE "/healthz\n",
               "3:19: routes[0].health_check: expected a mapping, got a scalar");
    expect_err(HC_ROUTE "{path: [/h]}\n",
               "3:26: routes[0].health_check.path: expected a path, got a sequence");
    expect_err(HC_ROUTE "{path: healthz}\n",
               "3:26: routes[0].health_check.path: bad path 'healthz': expected an origin-form "
               "path starting with '/' (at most 1024 bytes, no spaces, control characters or "
               "'#')");
    expect_err(HC_ROUTE "{path: '/a b'}\n",
               "3:26: routes[0].health_check.path: bad path '/a b': expected an origin-form "
               "path starting with '/' (at most 1024 bytes, no spaces, control characters or "
               "'#')");
    expect_err(HC_ROUTE "{path: '/a#top'}\n",
               "3:26: routes[0].health_check.path: bad path '/a#top': expected an origin-form "
               "path starting with '/' (at most 1024 bytes, no spaces, control characters or "
               "'#')");
    expect_err(HC_ROUTE "{path: /h, interval: 0}\n",
               "3:40: routes[0].health_check.interval: duration must be greater than 0");
    expect_err(HC_ROUTE "{path: /h, timeout: soon}\n",
               "3:39: routes[0].health_check.timeout: bad duration 'soon': expected a whole "
               "number with an optional unit ms, s, m, h or d (no unit: seconds)");
    expect_err(HC_ROUTE "{path: /h, rise: 0}\n",
               "3:36: routes[0].health_check.rise: expected an integer from 1 to 1000, got '0'");
    expect_err(HC_ROUTE "{path: /h, fall: 1001}\n",
               "3:36: routes[0].health_check.fall: expected an integer from 1 to 1000, got "
               "'1001'");
    static const char *const bad_ranges[] = {"200-99", "99",   "600",       "200-600", "2xx",
                                             "200-",   "-399", "200 - 399", "0200"};
    for (size_t i = 0; i < VD_ARRAY_LEN(bad_ranges); i++) {
        char yaml[200], want[300];
        snprintf(yaml, sizeof(yaml), HC_ROUTE "{path: /h, expect: '%s'}\n", bad_ranges[i]);
        snprintf(want, sizeof(want),
                 "3:38: routes[0].health_check.expect: bad status range '%s': expected a status "
                 "code from 100 to 599 or a range LOW-HIGH of them such as 200-399",
                 bad_ranges[i]);
        expect_err(yaml, want);
    }
    expect_err(HC_ROUTE "{path: /h, host: 'a b'}\n",
               "3:36: routes[0].health_check.host: bad Host value 'a b': expected HOST or "
               "HOST:PORT");
    expect_err(HC_ROUTE "{path: /h, host: a/b}\n",
               "3:36: routes[0].health_check.host: bad Host value 'a/b': expected HOST or "
               "HOST:PORT");
    /* The longest path allowed, and one byte more. */
    char yaml[VD_HEALTH_PATH_MAX + 200], want[VD_HEALTH_PATH_MAX + 400];
    char longp[VD_HEALTH_PATH_MAX + 2];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[VD_HEALTH_PATH_MAX] = '\0';
    snprintf(yaml, sizeof(yaml), HC_ROUTE "{path: %s}\n", longp);
    assert_int_equal(load_str(yaml, &c, err, sizeof(err), path), 0);
    assert_int_equal(strlen(c->routes[0].health.path), VD_HEALTH_PATH_MAX);
    vd_conf_unref(c);
    longp[VD_HEALTH_PATH_MAX] = 'a';
    longp[VD_HEALTH_PATH_MAX + 1] = '\0';
    snprintf(yaml, sizeof(yaml), HC_ROUTE "{path: %s}\n", longp);
    assert_int_equal(load_str(yaml, &c, err, sizeof(err), path), VD_ECONF);
    snprintf(want, sizeof(want), "%s:3:26: routes[0].health_check.path: bad path", path);
    assert_memory_equal(err, want, strlen(want));
#undef HC_ROUTE
}

static void
test_parent(void **state)
{
    (void)state;
    char path[64], err[512], yaml[512], creds[] = "/tmp/vdcreds-XXXXXX";
    int fd = mkstemp(creds);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "user:pa:ss\n", 11), 11);
    close(fd);
    struct vd_conf *c = NULL;
    snprintf(yaml, sizeof(yaml),
             "upstream:\n  parent: http://Proxy.Example:3128\n  parent_credentials: %s\n"
             "  parent_bypass: [.Internal.example, localhost, 10.0.0.0/8, '::1']\n",
             creds);
    assert_int_equal(load_str(yaml, &c, err, sizeof(err), path), 0);
    const struct vd_conf_upstream *u = &c->upstream;
    assert_int_equal(u->nparents, 1);
    assert_string_equal(u->parents[0].url, "http://Proxy.Example:3128");
    assert_string_equal(u->parents[0].host, "proxy.example");
    assert_int_equal(u->parents[0].port, 3128);
    assert_false(u->parents[0].tls);
    assert_int_equal(u->parent_fail_timeout, 10000);
    assert_string_equal(u->parent_auth, "Basic dXNlcjpwYTpzcw=="); /* user:pa:ss */
    assert_int_equal(u->nbypass_names, 2);
    assert_string_equal(u->bypass_names[0], ".internal.example");
    assert_string_equal(u->bypass_names[1], "localhost");
    assert_int_equal(u->nbypass_nets, 2);
    assert_int_equal(u->bypass_nets[0].prefix, 8);
    assert_int_equal(u->bypass_nets[1].net.ss_family, AF_INET6);
    /* Which destinations go through it. */
    assert_true(vd_parent_applies(c, "example.com"));
    assert_false(vd_parent_applies(c, "internal.example"));
    assert_false(vd_parent_applies(c, "a.b.internal.example"));
    assert_true(vd_parent_applies(c, "xinternal.example"));
    assert_false(vd_parent_applies(c, "localhost"));
    assert_true(vd_parent_applies(c, "localhost.example"));
    assert_false(vd_parent_applies(c, "10.1.2.3"));
    assert_true(vd_parent_applies(c, "11.1.2.3"));
    assert_false(vd_parent_applies(c, "::1"));
    assert_true(vd_parent_applies(c, "::2"));
    vd_conf_unref(c);
    c = vd_conf_default();
    assert_false(vd_parent_applies(c, "example.com"));
    vd_conf_unref(c);

    /* https://: TLS to the parent; the port defaults by scheme, as for routes. */
    const struct {
        const char *yaml, *url, *host;
        uint16_t port;
        bool tls;
    } ok[] = {
        {"upstream:\n  parent: https://Proxy.Example:8443\n", "https://Proxy.Example:8443",
         "proxy.example", 8443, true},
        {"upstream:\n  parent: HTTPS://proxy.example\n", "HTTPS://proxy.example", "proxy.example",
         443, true},
        {"upstream:\n  parent: https://[::1]\n", "https://[::1]", "::1", 443, true},
        {"upstream:\n  parent: https://127.0.0.1:3129\n", "https://127.0.0.1:3129", "127.0.0.1",
         3129, true},
        {"upstream:\n  parent: http://proxy.example\n", "http://proxy.example", "proxy.example", 80,
         false},
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(ok); i++) {
        assert_int_equal(load_str(ok[i].yaml, &c, err, sizeof(err), path), 0);
        assert_string_equal(c->upstream.parents[0].url, ok[i].url);
        assert_string_equal(c->upstream.parents[0].host, ok[i].host);
        assert_int_equal(c->upstream.parents[0].port, ok[i].port);
        assert_int_equal(c->upstream.parents[0].tls, ok[i].tls);
        assert_true(vd_parent_applies(c, "example.com"));
        vd_conf_unref(c);
    }
    expect_err("upstream:\n  parent: https://p:3128/path\n",
               "2:11: upstream.parent: bad upstream 'https://p:3128/path': no path, query or "
               "fragment allowed; write https://HOST[:PORT]");
    expect_err("upstream:\n  parent: https://user@p\n",
               "2:11: upstream.parent: bad upstream 'https://user@p': user information is not "
               "allowed");
    expect_err(
        "upstream:\n  parent: https://p:0\n",
        "2:11: upstream.parent: bad upstream 'https://p:0': the port must be a number from 1 "
        "to 65535");
    expect_err(
        "upstream:\n  parent: socks5://p:1080\n",
        "2:11: upstream.parent: bad upstream 'socks5://p:1080': the scheme must be http:// or "
        "https://");
    expect_err(
        "upstream:\n  parent: p:3128\n",
        "2:11: upstream.parent: bad upstream 'p:3128': the scheme must be http:// or https://");
    expect_err("upstream:\n  parent_bypass: [a.example]\n",
               "2:18: upstream.parent_bypass: set upstream.parent to use it");
    expect_err("upstream:\n  parent_fail_timeout: 5s\n",
               "2:24: upstream.parent_fail_timeout: set upstream.parent to use it");
    expect_err("upstream:\n  parent_ca_file: /etc/hostname\n",
               "2:19: upstream.parent_ca_file: set upstream.parent to use it");
    expect_err("upstream:\n  parent: https://p\n  parent_ca_file: /nonexistent/ca.pem\n",
               "3:19: upstream.parent_ca_file: cannot read /nonexistent/ca.pem: No such file or "
               "directory");

    /* Several parents, in order of preference; the first one up is used. */
    assert_int_equal(load_str("upstream:\n  parent: [http://a:3128, 'https://b', http://c:8080]\n"
                              "  parent_fail_timeout: 250ms\n",
                              &c, err, sizeof(err), path),
                     0);
    assert_int_equal(c->upstream.nparents, 3);
    assert_string_equal(c->upstream.parents[1].host, "b");
    assert_int_equal(c->upstream.parents[1].port, 443);
    assert_true(c->upstream.parents[1].tls);
    assert_int_equal(c->upstream.parent_fail_timeout, 250);
    assert_int_equal(vd_parent_pick(c, 0), 0);
    assert_int_equal(vd_parent_pick(c, 1), 1); /* a tried */
    assert_int_equal(vd_parent_pick(c, 7), -1);
    /* One exchange's failover: a fails, b is next; then b fails, c is next; then none. */
    uint32_t tried = 0;
    assert_int_equal(vd_parent_next(c, 0, &tried), 1);
    assert_int_equal(vd_parent_next(c, 1, &tried), 2);
    assert_int_equal(tried, 3);
    assert_int_equal(vd_parent_next(c, 2, &tried), -1);
    vd_conf_unref(c);
    assert_int_equal(load_str("upstream:\n  parent: [http://a:3128, 'https://b', http://c:8080]\n"
                              "  parent_fail_timeout: 250ms\n",
                              &c, err, sizeof(err), path),
                     0);
    vd_parent_failed(c, 0);
    assert_int_equal(vd_parent_pick(c, 0), 1); /* a down for 250 ms */
    vd_parent_failed(c, 1);
    vd_parent_failed(c, 2);
    /* All down: the one that comes back soonest (a, marked first). */
    assert_int_equal(vd_parent_pick(c, 0), 0);
    assert_int_equal(vd_parent_pick(c, 1), 1);
    vd_conf_unref(c);
    /* round_robin: each exchange starts one further along, skipping parents marked down. */
    assert_int_equal(load_str("upstream:\n  parent: [http://a, http://b, http://c]\n"
                              "  parent_select: round_robin\n",
                              &c, err, sizeof(err), path),
                     0);
    assert_true(c->upstream.parent_round_robin);
    assert_int_equal(vd_parent_pick(c, 0), 0);
    assert_int_equal(vd_parent_pick(c, 0), 1);
    assert_int_equal(vd_parent_pick(c, 0), 2);
    assert_int_equal(vd_parent_pick(c, 0), 0);
    vd_parent_failed(c, 1);
    assert_int_equal(vd_parent_pick(c, 0), 2); /* would start at b: down */
    assert_int_equal(vd_parent_pick(c, 0), 2);
    assert_int_equal(vd_parent_pick(c, 0), 0);
    vd_conf_unref(c);
    /* parent_sni: the TLS name of https:// parents written as addresses. */
    assert_int_equal(load_str("upstream:\n  parent: https://10.0.0.5:3129\n"
                              "  parent_sni: Proxy.Corp.Example\n",
                              &c, err, sizeof(err), path),
                     0);
    assert_string_equal(c->upstream.parent_sni, "proxy.corp.example");
    assert_string_equal(vd_parent_tls_name(c, c->upstream.parents[0].host), "proxy.corp.example");
    vd_conf_unref(c);
    assert_int_equal(
        load_str("upstream:\n  parent: https://p.example\n", &c, err, sizeof(err), path), 0);
    assert_null(c->upstream.parent_sni);
    assert_string_equal(vd_parent_tls_name(c, c->upstream.parents[0].host), "p.example");
    vd_conf_unref(c);
    expect_err("upstream:\n  parent: https://10.0.0.5\n  parent_sni: 10.0.0.5\n",
               "3:15: upstream.parent_sni: bad SNI name '10.0.0.5': expected a DNS name (no IP "
               "address)");
    expect_err("upstream:\n  parent_sni: p.example\n",
               "2:15: upstream.parent_sni: set upstream.parent to use it");
    expect_err("upstream:\n  parent: http://a\n  parent_select: random\n",
               "3:18: upstream.parent_select: unknown parent_select 'random' (expected failover "
               "or round_robin)");
    expect_err("upstream:\n  parent: [http://a, http://A:80]\n",
               "2:22: upstream.parent[1]: the same server as upstream.parent[0]");
    expect_err("upstream:\n  parent: []\n",
               "2:11: upstream.parent: at least one parent URL is required");
    expect_err("upstream:\n  parent: [{url: http://a}]\n",
               "2:12: upstream.parent[0]: expected a parent URL, got a mapping");
    expect_err("upstream:\n  parent: http://p\n  parent_bypass: [all]\n",
               "3:19: upstream.parent_bypass[0]: bad entry 'all': leave upstream.parent out to go "
               "direct");
    expect_err("upstream:\n  parent: http://p\n  parent_credentials: /nonexistent/creds\n",
               "3:23: upstream.parent_credentials: cannot read /nonexistent/creds: No such file or "
               "directory");
    fd = open(creds, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "nocolon\n", 8), 8);
    close(fd);
    snprintf(yaml, sizeof(yaml), "upstream:\n  parent: http://p\n  parent_credentials: %s\n",
             creds);
    char want[300];
    snprintf(want, sizeof(want),
             "3:23: upstream.parent_credentials: %s: the first line must be user:password", creds);
    expect_err(yaml, want);
    unlink(creds);
}

static void
test_errors_routes(void **state)
{
    (void)state;
    expect_err("routes:\n  - upstream: http://127.0.0.1:8080/api\n",
               "2:15: routes[0].upstream: bad upstream 'http://127.0.0.1:8080/api': no path, "
               "query or fragment allowed; write http://HOST[:PORT]");
    expect_err("routes:\n  - upstream: https://origin/\n",
               "2:15: routes[0].upstream: bad upstream 'https://origin/': no path, query or "
               "fragment allowed; write https://HOST[:PORT]");
    expect_err("routes:\n  - upstream: ftp://127.0.0.1\n",
               "2:15: routes[0].upstream: bad upstream 'ftp://127.0.0.1': the scheme must be "
               "http:// or https://");
    expect_err("routes:\n  - upstream: 127.0.0.1:8080\n",
               "2:15: routes[0].upstream: bad upstream '127.0.0.1:8080': the scheme must be "
               "http:// or https://");
    expect_err("routes:\n  - upstream: http://127.0.0.1:0\n",
               "2:15: routes[0].upstream: bad upstream 'http://127.0.0.1:0': the port must be a "
               "number from 1 to 65535");
    expect_err("routes:\n  - upstream: http://127.0.0.1:http\n",
               "2:15: routes[0].upstream: bad upstream 'http://127.0.0.1:http': the port must be "
               "a number from 1 to 65535");
    expect_err("routes:\n  - upstream: http://[::1\n",
               "2:15: routes[0].upstream: bad upstream 'http://[::1': bad IPv6 literal");
    expect_err("routes:\n  - upstream: http://u@h\n",
               "2:15: routes[0].upstream: bad upstream 'http://u@h': user information is not "
               "allowed");
    expect_err("routes:\n  - upstream: http://bad_-.x\n",
               "2:15: routes[0].upstream: bad upstream 'http://bad_-.x': the host must be a DNS "
               "name, an IPv4 address or an [IPv6] address");
    expect_err("routes:\n  - host: a.example\n",
               "2:5: routes[0].upstream: required key is missing");
    expect_err("routes:\n  - upstream: http://a\n    host: a.example:80\n",
               "3:11: routes[0].host: bad host 'a.example:80': expected a host name without port, "
               "*.domain, an IPv4 address or an [IPv6] address");
    expect_err("routes:\n  - upstream: http://a\n    path: api\n",
               "3:11: routes[0].path: bad path prefix 'api': must start with '/' and hold no "
               "spaces, control characters, '?' or '#'");
    expect_err("routes:\n  - upstream: http://a\n    sni: 127.0.0.1\n",
               "3:10: routes[0].sni: bad SNI name '127.0.0.1': expected a DNS name (no IP "
               "address)");
    expect_err("routes:\n  - upstream: http://a\n    host_header: 'a b'\n",
               "3:18: routes[0].host_header: bad Host value 'a b': expected HOST or HOST:PORT");
    expect_err("routes:\n  - upstream: http://a\n    forwarded: xff\n",
               "3:16: routes[0].forwarded: unknown forwarded mode 'xff' (expected none, "
               "x-forwarded, rfc7239 or both)");
    expect_err("routes:\n  - upstream: http://a\n    timeout: 5s\n",
               "3:5: routes[0].timeout: unknown key (expected host, path, upstream, balance, "
               "fail_timeout, health_check, host_header, sni or forwarded)");
}

/* Aliases cannot multiply a small file into a huge snapshot. */
static void
test_caps(void **state)
{
    size_t cap = 64 * 1024, o;
    char *yaml = malloc(cap), want[128];
    (void)state;
    assert_non_null(yaml);
    o = (size_t)snprintf(yaml, cap,
                         "upstream: {pool_idle_max: &c {cert: /etc/passwd, key: "
                         "/etc/passwd}}\nlisteners:\n  - &l {address: '127.0.0.1:0', "
                         "tls: {certificates: [*c");
    for (int i = 1; i < 400; i++) {
        o += (size_t)snprintf(yaml + o, cap - o, ", *c");
    }
    o += (size_t)snprintf(yaml + o, cap - o, "]}}\n");
    for (int i = 1; i < 300; i++) {
        o += (size_t)snprintf(yaml + o, cap - o, "  - *l\n");
    }
    assert_true(o < cap);
    /* 300 listeners, then 400 certificates each: the 250th crosses 100000. */
    snprintf(want, sizeof(want),
             "3:53: listeners[249].tls.certificates: more than 100000 list entries in all "
             "(aliases counted each time)");
    expect_err(yaml, want);

    o = (size_t)snprintf(yaml, cap, "listeners:\n  - &l {address: '127.0.0.1:0'}\n");
    for (int i = 1; i < 1025; i++) {
        o += (size_t)snprintf(yaml + o, cap - o, "  - *l\n");
    }
    expect_err(yaml, "2:3: listeners: more than 1024 listeners");
    free(yaml);
}

/* libfyaml must not write to stderr: the loader reports through @err only. */
static void
test_quiet(void **state)
{
    char path[64], err[512], tmpl[] = "/tmp/vdconf-stderr-XXXXXX";
    struct vd_conf *c = NULL;
    struct stat st;
    (void)state;
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    int rc1 = load_str("a: [1, 2\nb: 3\n", &c, err, sizeof(err), path);
    int rc2 = load_str("a: 1\n  b: 2\n", &c, err, sizeof(err), path);
    int rc3 = load_str("listeners: [{address: 127.0.0.1:1}]]\n", &c, err, sizeof(err), path);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    assert_int_equal(fstat(fd, &st), 0);
    close(fd);
    unlink(tmpl);
    assert_int_equal(rc1, VD_ECONF);
    assert_int_equal(rc2, VD_ECONF);
    assert_int_equal(rc3, VD_ECONF);
    assert_int_equal(st.st_size, 0);
}

/* The examples directory: $VD_SOURCE_ROOT/examples, else found from this file's path as the
 * compiler saw it (relative to the build directory, where meson runs tests), else ./examples. */
static bool
find_examples(char *dir, size_t cap)
{
    struct stat st;
    const char *root = getenv("VD_SOURCE_ROOT");
    const char *slash = strrchr(__FILE__, '/');
    for (int i = 0; i < 3; i++) {
        if (i == 0 && root) {
            snprintf(dir, cap, "%s/examples", root);
        } else if (i == 1 && slash) {
            snprintf(dir, cap, "%.*s/../../examples", (int)(slash - __FILE__), __FILE__);
        } else if (i == 2) {
            snprintf(dir, cap, "examples");
        } else {
            continue;
        }
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
            return true;
        }
    }
    return false;
}

static void
copy_file(const char *from, const char *to)
{
    char buf[4096];
    FILE *in = fopen(from, "r"), *out = fopen(to, "w");
    size_t n;
    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
        assert_int_equal(fwrite(buf, 1, n, out), n);
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* One bcrypt user, made with htpasswd -B (password "pw"). */
#define AUTH_ALICE "alice:$2y$05$aUd5tSji/n5pWrdZ.4IdvORGZu.mB7yrHlnoOYRLYtKJ6pk4oH/RK\n"

/* Every .yaml file in examples/ loads. The copies live in a temporary directory with dummy
 * certs/server.pem and certs/server.key: the loader only checks that they are readable. */
static void
test_examples(void **state)
{
    char dir[PATH_MAX], from[PATH_MAX + 300], to[PATH_MAX + 300], err[512];
    struct tmp t;
    struct dirent *de;
    int loaded = 0;
    (void)state;
    assert_true(find_examples(dir, sizeof(dir)));
    tmp_init(&t);
    tmp_mkdir(&t, "certs");
    tmp_write(&t, "certs/server.pem", "dummy\n");
    tmp_write(&t, "certs/server.key", "dummy\n");
    /* egress.yaml names an htpasswd file: one bcrypt user (made with htpasswd -B). */
    tmp_write(&t, "users", AUTH_ALICE);
    DIR *d = opendir(dir);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".yaml") != 0) {
            continue;
        }
        struct vd_conf *c = NULL;
        snprintf(from, sizeof(from), "%s/%s", dir, de->d_name);
        snprintf(to, sizeof(to), "%s/%s", t.dir, de->d_name);
        copy_file(from, to);
        int rc = vd_conf_load(to, &c, err, sizeof(err));
        unlink(to);
        if (rc) {
            print_error("%s: %s\n", de->d_name, err);
        }
        assert_int_equal(rc, 0);
        if (strcmp(de->d_name, "forward.yaml") == 0) {
            assert_string_equal(c->listeners[0].addr_text, "127.0.0.1:3128");
            assert_int_equal(c->listeners[0].mode, VD_MODE_FORWARD);
            assert_non_null(c->log.access_log);
        } else if (strcmp(de->d_name, "reverse-tls.yaml") == 0) {
            assert_string_equal(c->listeners[0].addr_text, "127.0.0.1:8443");
            assert_int_equal(c->listeners[0].mode, VD_MODE_REVERSE);
            assert_true(c->listeners[0].tls);
            assert_int_equal(c->nroutes, 2);
            assert_true(c->routes[0].servers[0].tls || c->routes[1].servers[0].tls);
            assert_null(c->routes[0].health.path);
            assert_string_equal(c->routes[1].health.path, "/healthz");
            assert_int_equal(c->routes[1].health.interval, 2000);
        }
        vd_conf_unref(c);
        loaded++;
    }
    closedir(d);
    tmp_done(&t);
    assert_true(loaded >= 3);
}

/* "htpasswd -B -b -n alice 'correct horse'" */

/* Loads @yaml from @t's directory; expects exactly @want with "%D" standing for that
 * directory (the config file is "auth.yaml" there). */
static void
expect_auth_err(struct tmp *t, const char *yaml, const char *want)
{
    char err[1024], full[2048], wantf[1024];
    struct vd_conf *c = (struct vd_conf *)1;
    const char *path = tmp_write(t, "auth.yaml", yaml);
    int rc = vd_conf_load(path, &c, err, sizeof(err));
    unlink(path);
    t->n--;
    /* "%D" in @want stands for the directory. */
    size_t o = 0;
    for (const char *w = want; *w && o + sizeof(t->dir) < sizeof(wantf); w++) {
        if (w[0] == '%' && w[1] == 'D') {
            o += (size_t)snprintf(wantf + o, sizeof(wantf) - o, "%s", t->dir);
            w++;
        } else {
            wantf[o++] = *w;
        }
    }
    wantf[o] = '\0';
    snprintf(full, sizeof(full), "%s:%s", path, wantf);
    if (rc != VD_ECONF || strcmp(err, full) != 0) {
        print_error("yaml:\n%s\nwant: %s\ngot:  %s (rc %d)\n", yaml, full, err, rc);
    }
    assert_int_equal(rc, VD_ECONF);
    assert_null(c);
    assert_string_equal(err, full);
}

static void
test_auth(void **state)
{
    struct tmp t;
    char err[1024], want[PATH_MAX];
    struct vd_conf *c = NULL;
    (void)state;
    tmp_init(&t);

    /* Defaults: no authentication. */
    struct vd_conf *d = vd_conf_default();
    assert_null(d->auth.htpasswd);
    assert_null(d->auth.db);
    assert_string_equal(d->auth.realm, "viaduct");
    assert_int_equal(d->auth.cache_ttl, 300000);
    assert_int_equal(d->auth.fail_limit, 10);
    assert_int_equal(d->auth.fail_window, 60000);
    assert_int_equal(d->auth.fail_mode, VD_AUTH_FAIL_DELAY);
    assert_int_equal(d->auth.fail_delay, 2000);
    vd_conf_unref(d);

    /* Every key; a relative path is taken from the configuration file's directory. */
    tmp_write(&t, "users", AUTH_ALICE);
    const char *path = tmp_write(&t, "viaduct.yaml",
                                 "auth:\n"
                                 "  htpasswd: users\n"
                                 "  realm: \"Proxy at example.org\"\n"
                                 "  cache_ttl: 0\n"
                                 "  fail_limit: 0\n"
                                 "  fail_window: 10m\n"
                                 "  fail_mode: refuse\n"
                                 "  fail_delay: 500ms\n");
    int rc = vd_conf_load(path, &c, err, sizeof(err));
    if (rc) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, 0);
    snprintf(want, sizeof(want), "%s/users", t.dir);
    assert_string_equal(c->auth.htpasswd, want);
    assert_non_null(c->auth.db);
    assert_string_equal(c->auth.realm, "Proxy at example.org");
    assert_int_equal(c->auth.cache_ttl, 0);
    assert_int_equal(c->auth.fail_limit, 0);
    assert_int_equal(c->auth.fail_window, 600000);
    assert_int_equal(c->auth.fail_mode, VD_AUTH_FAIL_REFUSE);
    assert_int_equal(c->auth.fail_delay, 500);
    vd_conf_unref(c);

    /* Only the file: the rest defaults. */
    path = tmp_write(&t, "min.yaml", "auth: {htpasswd: users}\n");
    assert_int_equal(vd_conf_load(path, &c, err, sizeof(err)), 0);
    assert_non_null(c->auth.db);
    assert_string_equal(c->auth.realm, "viaduct");
    assert_int_equal(c->auth.cache_ttl, 300000);
    assert_int_equal(c->auth.fail_limit, 10);
    assert_int_equal(c->auth.fail_window, 60000);
    assert_int_equal(c->auth.fail_mode, VD_AUTH_FAIL_DELAY);
    assert_int_equal(c->auth.fail_delay, 2000);
    vd_conf_unref(c);

    /* Errors */
    expect_auth_err(&t, "auth: users\n", "1:7: auth: expected a mapping, got a scalar");
    expect_auth_err(&t, "auth:\n  realm: x\n", "2:3: auth.htpasswd: required key is missing");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  user: x\n",
                    "3:3: auth.user: unknown key (expected htpasswd, realm, cache_ttl, "
                    "fail_limit, fail_window, fail_mode or fail_delay)");
    expect_auth_err(&t, "auth:\n  htpasswd: nothere\n",
                    "2:13: auth.htpasswd: cannot read %D/nothere: No such file or directory");
    expect_auth_err(&t, "auth:\n  htpasswd: .\n",
                    "2:13: auth.htpasswd: %D/. is not a regular file");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  realm: 'a\"b'\n",
                    "3:10: auth.realm: bad realm 'a\\x22b': expected non-empty text without '\"', "
                    "'\\' or control characters");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  realm: \"a\\tb\"\n",
                    "3:10: auth.realm: bad realm 'a\\x09b': expected non-empty text without '\"', "
                    "'\\' or control characters");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  realm: ''\n",
                    "3:10: auth.realm: bad realm '': expected non-empty text without '\"', "
                    "'\\' or control characters");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  cache_ttl: soon\n",
                    "3:14: auth.cache_ttl: bad duration 'soon': expected a whole number with an "
                    "optional unit ms, s, m, h or d (no unit: seconds)");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  fail_limit: -1\n",
                    "3:15: auth.fail_limit: expected an integer from 0 to 4294967295, got '-1'");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  fail_window: 0\n",
                    "3:16: auth.fail_window: duration must be greater than 0");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  fail_mode: block\n",
                    "3:14: auth.fail_mode: unknown mode 'block' (expected delay or refuse)");
    expect_auth_err(&t, "auth:\n  htpasswd: users\n  fail_delay: [1]\n",
                    "3:15: auth.fail_delay: expected a duration, got a sequence");
    /* The htpasswd file's own position follows the configuration's. */
    tmp_write(&t, "bad-users",
              AUTH_ALICE "# old entry\nbob:$apr1$yBJ0qLOA$goW26JHHIZy8IOfS1ZZSl/\n");
    expect_auth_err(&t, "auth:\n  htpasswd: bad-users\n",
                    "2:13: auth.htpasswd: %D/bad-users:3: user 'bob': unsupported hash ($apr1$ "
                    "MD5); use htpasswd -B or openssl passwd -6");
    tmp_write(&t, "dup-users", AUTH_ALICE "\n" AUTH_ALICE);
    expect_auth_err(&t, "auth:\n  htpasswd: dup-users\n",
                    "2:13: auth.htpasswd: %D/dup-users:3: user 'alice': duplicate (first at "
                    "line 1)");
    tmp_write(&t, "nocolon-users", "alice\n");
    expect_auth_err(&t, "auth:\n  htpasswd: nocolon-users\n",
                    "2:13: auth.htpasswd: %D/nocolon-users:1: expected user:hash (no ':' found)");
    tmp_done(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_cache_section),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_acl),
        cmocka_unit_test(test_access_long),
        cmocka_unit_test(test_yaml_features),
        cmocka_unit_test(test_errors_syntax),
        cmocka_unit_test(test_errors_types),
        cmocka_unit_test(test_errors_values),
        cmocka_unit_test(test_errors_listeners),
        cmocka_unit_test(test_errors_access),
        cmocka_unit_test(test_errors_rules),
        cmocka_unit_test(test_errors_tunnel),
        cmocka_unit_test(test_errors_routes),
        cmocka_unit_test(test_route_groups),
        cmocka_unit_test(test_route_health),
        cmocka_unit_test(test_parent),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_quiet),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_auth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
