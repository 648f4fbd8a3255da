/* SPDX-License-Identifier: MIT */
/* Configuration snapshots: defaults, value parsers shared by the YAML loader and the command
 * line, the default access rules, and the process-wide current snapshot (swapped on reload). */
#include "vd/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "vd/auth.h"
#include "vd/conf.h"
#include "vd/err.h"
#include "vd/log.h"

static char *
xstrdup(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d) {
        fputs("viaduct: out of memory\n", stderr);
        exit(1);
    }
    return d;
}

static void *
xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p) {
        fputs("viaduct: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

int
vd_conf_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon;
    const char *hs, *he;
    char *end;
    memset(ss, 0, sizeof(*ss));
    if (!text || !*text) {
        return VD_ECONF;
    }
    if (text[0] == '[') {
        he = strchr(text, ']');
        if (!he || he[1] != ':') {
            return VD_ECONF;
        }
        hs = text + 1;
        colon = he + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon) {
            return VD_ECONF;
        }
        hs = text;
        he = colon;
    }
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port > 65535) {
        return VD_ECONF;
    }
    size_t hl = (size_t)(he - hs);
    if (hl >= sizeof(host)) {
        return VD_ECONF;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    if (hl == 0 || strcmp(host, "*") == 0) {
        memcpy(host, "0.0.0.0", 8);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
        return 0;
    }
    if (strcmp(host, "localhost") == 0) {
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof(*s4);
        return 0;
    }
    return VD_ECONF;
}

/* Parses a number with an optional unit suffix from @units (name, multiplier), case-insensitive. */
static int
parse_scaled(const char *text, const char *const *names, const uint64_t *mult, size_t nunits,
             uint64_t dflt_mult, uint64_t *out)
{
    char *end;
    if (!text || !isdigit((unsigned char)*text)) {
        return VD_ECONF;
    }
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno) {
        return VD_ECONF;
    }
    while (*end == ' ') {
        end++;
    }
    uint64_t m = dflt_mult;
    if (*end) {
        size_t i;
        for (i = 0; i < nunits; i++) {
            if (strcasecmp(end, names[i]) == 0) {
                m = mult[i];
                break;
            }
        }
        if (i == nunits) {
            return VD_ECONF;
        }
    }
    if (m && v > UINT64_MAX / m) {
        return VD_ECONF;
    }
    *out = (uint64_t)v * m;
    return 0;
}

int
vd_conf_parse_duration(const char *text, uint64_t *ms)
{
    static const char *const names[] = {"ms", "s", "m", "h", "d"};
    static const uint64_t mult[] = {1, 1000, 60000, 3600000, 86400000};
    return parse_scaled(text, names, mult, VD_ARRAY_LEN(names), 1000, ms);
}

int
vd_conf_parse_duration_us(const char *text, uint64_t *us)
{
    static const char *const names[] = {"us", "ms", "s"};
    static const uint64_t mult[] = {1, 1000, 1000000};
    return parse_scaled(text, names, mult, VD_ARRAY_LEN(names), 1000000, us);
}

int
vd_conf_parse_size(const char *text, uint64_t *bytes)
{
    static const char *const names[] = {"b", "k", "kb", "kib", "m", "mb", "mib", "g", "gb", "gib"};
    static const uint64_t mult[] = {1,       1024,    1024,          1024,          1048576,
                                    1048576, 1048576, 1073741824ULL, 1073741824ULL, 1073741824ULL};
    return parse_scaled(text, names, mult, VD_ARRAY_LEN(names), 1, bytes);
}

/* A default rule: allow clients in @cidr (boot path, so the text is trusted). */
static void
rule_add_client(struct vd_conf *c, const char *net, unsigned prefix)
{
    struct vd_conf_rule *r = &c->rules[c->nrules];
    char name[32];
    snprintf(name, sizeof(name), "access[%zu]", c->nrules++);
    r->allow = true;
    r->name = xstrdup(name);
    r->sni_mismatch = -1;
    r->declared_mismatch = -1;
    r->clients = xcalloc(1, sizeof(*r->clients));
    r->nclients = 1;
    r->clients[0].prefix = prefix;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&r->clients[0].net;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&r->clients[0].net;
    if (inet_pton(AF_INET, net, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, net, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
    } else {
        abort();
    }
}

struct vd_conf *
vd_conf_default(void)
{
    static _Atomic uint64_t serials;
    struct vd_conf *c = xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    c->serial = atomic_fetch_add_explicit(&serials, 1, memory_order_relaxed) + 1;
    c->workers = 0;
    c->nlisteners = 1;
    c->listeners = xcalloc(1, sizeof(*c->listeners));
    c->listeners[0].addr_text = xstrdup("127.0.0.1:3128");
    if (vd_conf_parse_addr("127.0.0.1:3128", &c->listeners[0].addr, &c->listeners[0].addrlen)) {
        abort();
    }
    c->listeners[0].mode = VD_MODE_FORWARD;
    c->listeners[0].backlog = 511;
    c->rules = xcalloc(2, sizeof(*c->rules));
    rule_add_client(c, "127.0.0.0", 8);
    rule_add_client(c, "::1", 128);
    c->tunnel = (struct vd_conf_tunnel){
        .idle_timeout = 3600000,
        .splice = true,
        .socket_buffer = 524288,
        .socket_buffer_rtt = 250,
        .sniff_bytes = 16384,
        .sniff_timeout = 10000,
        .nupgrade_protocols = 1,
    };
    c->tunnel.upgrade_protocols = xcalloc(1, sizeof(char *));
    c->tunnel.upgrade_protocols[0] = xstrdup("websocket");
    c->masque.udp_template = xstrdup("/.well-known/masque/udp/{target_host}/{target_port}/");
    c->masque.idle_timeout = 120000;
    c->masque.ip_template = xstrdup("/.well-known/masque/ip/{target}/{ipproto}/");
    c->masque.tun_name = xstrdup("vdip");
    c->masque.ip_max_sessions = 256;
    c->masque.ip_mtu = 1500;
    c->masque.ip_icmp = true;
    c->masque.ip_icmp_rate = 10;
    c->masque.ip_icmp_burst = 10;
    c->h2 = (struct vd_conf_h2){
        .enabled = true,
        .extended_connect = true,
        .max_streams = 100,
        .stream_window = 256 * 1024,
        .conn_window = 1024 * 1024,
        .stream_buffer = 64 * 1024,
        .reset_burst = 200,
        .reset_rate = 50,
        .control_burst = 200,
        .control_rate = 50,
    };
    c->via = xstrdup("viaduct");
    c->via_enabled = true;
    c->server_name = xstrdup("viaduct");
    c->limits = (struct vd_conf_limits){
        .request_line = 8192,
        .header_block = 32768,
        .header_count = 100,
        .body = 0,
        .chunk_line = 4096,
        .trailer_block = 8192,
        .max_connections = 10000,
        .request_arena = 65536,
        .via_loop = 8,
    };
    c->timeouts = (struct vd_conf_timeouts){
        .client_header = 30000,
        .keepalive = 60000,
        .upstream_connect = 10000,
        .upstream_first_byte = 60000,
        .send = 60000,
        .client_body = 60000,
        .upstream_read = 60000,
        .shutdown_grace = 30000,
        .upgrade_grace = UINT64_MAX,
        .upgrade_start = 60000,
    };
    c->upstream = (struct vd_conf_upstream){
        .pool_idle_max = 1024,
        .pool_idle_timeout = 60000,
        .verify = true,
        .splice = true,
        .splice_min = 32768,
    };
    c->resolver = (struct vd_conf_resolver){
        .cache_max_ttl = 300000,
        .negative_ttl = 30000,
        .timeout = 5000,
        .tries = 2,
        .cache_size = 4096,
    };
    /* Access lines go to standard output unless configured otherwise, so that `make run` and a
     * service manager show traffic without any configuration. */
    c->log = (struct vd_conf_log){.level = VD_LOG_INFO, .access_format = VD_ALOG_TEXT};
    c->log.access_log = xstrdup("stdout");
    c->nconnect_ports = 1;
    c->connect_ports = xcalloc(1, sizeof(uint16_t));
    c->connect_ports[0] = 443;
    c->cache = (struct vd_conf_cache){
        .memory = 256u << 20,
        .max_object = 8u << 20,
        .heuristic_max = 86400000,
        .max_ranges = 16,
        .background = 64,
        .collapse = true,
        .collapse_timeout = 5000,
        .ntargeted_fields = 1,
        .disk_size = 1ull << 30,
        .disk_objects = 1000000,
        .disk_queue = 16u << 20,
        .sendfile_min = 64u << 10,
        .sendfile_files = 256,
        .memory_files = 1024,
    };
    c->cache.targeted_fields = xcalloc(1, sizeof(char *));
    c->cache.targeted_fields[0] = xstrdup("cdn-cache-control");
    c->auth = (struct vd_conf_auth){
        .cache_ttl = 300000,
        .fail_limit = 10,
        .fail_window = 60000,
        .fail_mode = VD_AUTH_FAIL_DELAY,
        .fail_delay = 2000,
    };
    c->auth.realm = xstrdup("viaduct");
    return c;
}

int
vd_conf_set_listeners(struct vd_conf *c, const char *const *addrs, size_t n, char *err,
                      size_t errlen)
{
    struct vd_conf_listener *ls = calloc(n ? n : 1, sizeof(*ls));
    if (!ls) {
        return VD_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (vd_conf_parse_addr(addrs[i], &ls[i].addr, &ls[i].addrlen)) {
            snprintf(err, errlen, "-l %s: expected ADDR:PORT or [V6]:PORT", addrs[i]);
            for (size_t j = 0; j < i; j++) {
                free(ls[j].addr_text);
            }
            free(ls);
            return VD_ECONF;
        }
        ls[i].addr_text = xstrdup(addrs[i]);
        ls[i].mode = VD_MODE_FORWARD;
        ls[i].backlog = 511;
    }
    vd_conf_listeners_free(c);
    c->listeners = ls;
    c->nlisteners = n;
    return 0;
}

void
vd_conf_listeners_free(struct vd_conf *c)
{
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct vd_conf_listener *l = &c->listeners[i];
        free(l->addr_text);
        for (size_t j = 0; j < l->ncerts; j++) {
            free(l->certs[j].cert_file);
            free(l->certs[j].key_file);
        }
        free(l->certs);
        free(l->tls_min_version);
        free(l->tcp_congestion);
        free(l->proxy_from);
    }
    free(c->listeners);
    c->listeners = NULL;
    c->nlisteners = 0;
}

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

void
vd_conf_rules_free(struct vd_conf *c)
{
    for (size_t i = 0; i < c->nrules; i++) {
        struct vd_conf_rule *r = &c->rules[i];
        free(r->name);
        free(r->clients);
        strv_free(r->users, r->nusers);
        strv_free(r->methods, r->nmethods);
        strv_free(r->dest_hosts, r->ndest_hosts);
        free(r->dest_nets);
        free(r->dest_ports);
        strv_free(r->declared, r->ndeclared);
        strv_free(r->protocols, r->nprotocols);
        strv_free(r->snis, r->nsnis);
        strv_free(r->alpns, r->nalpns);
    }
    free(c->rules);
    c->rules = NULL;
    c->nrules = 0;
}

void
vd_conf_unref(struct vd_conf *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    vd_conf_listeners_free(c);
    vd_conf_rules_free(c);
    strv_free(c->tunnel.upgrade_protocols, c->tunnel.nupgrade_protocols);
    strv_free(c->cache.targeted_fields, c->cache.ntargeted_fields);
    for (size_t i = 0; i < c->nroutes; i++) {
        struct vd_conf_route *r = &c->routes[i];
        free(r->host);
        free(r->path_prefix);
        for (size_t k = 0; k < r->nservers; k++) {
            free(r->servers[k].url);
            free(r->servers[k].host);
        }
        free(r->servers);
        free(r->lb);
        free(r->health.path);
        free(r->health.host);
        free(r->host_header);
        free(r->sni);
    }
    free(c->routes);
    free(c->via);
    free(c->server_name);
    free(c->upstream.ca_file);
    free(c->upstream.tcp_congestion);
    free(c->upstream.ca_path);
    for (size_t i = 0; i < c->upstream.nparents; i++) {
        free(c->upstream.parents[i].url);
        free(c->upstream.parents[i].host);
    }
    free(c->upstream.parents);
    free((void *)c->upstream.parent_down);
    free((void *)c->upstream.parent_turn);
    free(c->upstream.parent_ca_file);
    free(c->upstream.parent_sni);
    free(c->upstream.parent_auth);
    for (size_t i = 0; i < c->upstream.nbypass_names; i++) {
        free(c->upstream.bypass_names[i]);
    }
    free(c->upstream.bypass_names);
    free(c->upstream.bypass_nets);
    free(c->resolver.nameservers);
    free(c->log.error_log);
    free(c->log.access_log);
    free(c->connect_ports);
    free(c->masque.udp_template);
    free(c->masque.udp_ports);
    free(c->masque.ip_template);
    free(c->masque.ip_pool);
    free(c->masque.ip_routes);
    free(c->masque.ip_icmp_source);
    free(c->masque.tun_name);
    free(c->cache.disk_path);
    vd_auth_free(c->auth.db);
    free(c->auth.htpasswd);
    free(c->auth.realm);
    free(c->source);
    free(c);
}

/* The current snapshot. Readers take a reference under the mutex; reload is rare, so a mutex
 * (not RCU) is enough: it is taken once per connection, never per byte. */
static uv_mutex_t cur_mutex;
static uv_once_t cur_once = UV_ONCE_INIT;
static struct vd_conf *cur;

static void
cur_init(void)
{
    if (uv_mutex_init(&cur_mutex) != 0) {
        abort();
    }
}

struct vd_conf *
vd_conf_current(void)
{
    uv_once(&cur_once, cur_init);
    uv_mutex_lock(&cur_mutex);
    struct vd_conf *c = cur ? vd_conf_ref(cur) : NULL;
    uv_mutex_unlock(&cur_mutex);
    return c;
}

void
vd_conf_swap(struct vd_conf *next)
{
    uv_once(&cur_once, cur_init);
    uv_mutex_lock(&cur_mutex);
    struct vd_conf *old = cur;
    cur = next;
    uv_mutex_unlock(&cur_mutex);
    vd_conf_unref(old);
}
