/* SPDX-License-Identifier: MIT */
/* Configuration: an immutable, reference-counted snapshot loaded from YAML (libfyaml) or built
 * from defaults. Reload (SIGHUP) loads a new snapshot and swaps it in; every connection and
 * exchange holds a reference to the snapshot it started with. */
#ifndef VD_CONF_H
#define VD_CONF_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "vd/common.h"

enum vd_listen_mode {
    VD_MODE_FORWARD, /* absolute-form requests to any origin (explicit proxy) */
    VD_MODE_REVERSE, /* origin-form requests routed by Host and path to configured upstreams */
    VD_MODE_ADMIN,   /* /metrics (Prometheus) and /healthz, nothing proxied */
};

struct vd_conf_cidr {
    struct sockaddr_storage net;
    unsigned prefix;
};

struct vd_conf_cert {
    char *cert_file; /* PEM chain */
    char *key_file;  /* PEM key */
};

struct vd_conf_listener {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *addr_text; /* as written: "127.0.0.1:3128" */
    enum vd_listen_mode mode;
    bool tls;                   /* certs given */
    struct vd_conf_cert *certs; /* first is the default; others picked by SNI */
    size_t ncerts;
    char *tls_min_version; /* "1.2" (default) or "1.3" */
    unsigned backlog;      /* listen(2) backlog, default 511 */
    char *tcp_congestion;  /* TCP_CONGESTION for accepted connections; NULL: the system's */
    bool proxy_protocol;   /* every connection starts with a PROXY v1/v2 header */
    struct vd_conf_cidr *proxy_from; /* peers that may send it (default loopback) */
    size_t nproxy_from;
};

enum vd_forwarded_mode {
    VD_FWD_NONE,
    VD_FWD_XFF,     /* X-Forwarded-For (appended) and X-Forwarded-Proto */
    VD_FWD_RFC7239, /* Forwarded: for=...;proto=...;host=... (appended) */
    VD_FWD_BOTH,
};

/* One server of a route's upstream group. */
struct vd_conf_server {
    char *url;  /* as written: "http://127.0.0.1:8080" or "https://origin:443" */
    bool tls;   /* https */
    char *host; /* lowercase; IPv6 without brackets */
    uint16_t port;
};

enum vd_balance {
    VD_BALANCE_ROUND_ROBIN, /* the next server in turn */
    VD_BALANCE_LEAST_CONN,  /* the one with the fewest exchanges in progress */
    VD_BALANCE_CLIENT_HASH, /* the same server for the same client address */
};

/* Balancing state of a route with several servers (or with health checks): the one mutable
 * part of a snapshot, shared by the workers (relaxed atomics; src/proxy/balance.c). Active
 * health checks (src/proxy/health.c) write hc_down and the check counters from one loop. A
 * reload starts it afresh. */
struct vd_lb_server {
    _Atomic uint64_t down_until;  /* ns (uv_hrtime): skipped until then after a failure */
    _Atomic uint32_t active;      /* exchanges in progress */
    _Atomic uint32_t hc_down;     /* 1 after `fall` failed health checks until `rise` passed */
    _Atomic uint64_t sent;        /* requests sent to it (metrics) */
    _Atomic uint64_t failures;    /* connections to it that failed (metrics) */
    _Atomic uint64_t checks_ok;   /* health checks that passed (metrics) */
    _Atomic uint64_t checks_fail; /* health checks that failed (metrics) */
};

struct vd_lb {
    _Atomic uint32_t next; /* round-robin turn */
    struct vd_lb_server srv[];
};

#define VD_ROUTE_SERVERS_MAX 64
#define VD_PARENTS_MAX       16
#define VD_HEALTH_PATH_MAX   1024 /* bytes of routes[].health_check.path */

/* Active health checks of a route's servers (routes[].health_check): a GET of @path to each
 * server every @interval from one event loop; see docs/configuration.md. */
struct vd_conf_health {
    char *path;         /* origin-form target; NULL: no active checks */
    char *host;         /* Host sent; NULL: the server's host[:port] */
    uint64_t interval;  /* ms from the start of one check of a server to the next, default 5000 */
    uint64_t timeout;   /* ms for connect, TLS, request and status line, default 2000 */
    uint32_t rise;      /* checks passed in a row that mark a down server up, default 2 */
    uint32_t fall;      /* checks failed in a row that mark an up server down, default 3 */
    uint16_t expect_lo; /* status codes that pass, inclusive: default 200 ... */
    uint16_t expect_hi; /* ... to 399 */
};

struct vd_conf_route {
    char *host;        /* NULL matches any host; else exact, lowercase; "*.example.com" suffix */
    char *path_prefix; /* "/" matches everything */
    struct vd_conf_server *servers; /* every upstream server, in order; at least one */
    size_t nservers;
    enum vd_balance balance; /* with several servers; default round robin */
    uint64_t fail_timeout;   /* ms a server whose connection failed is skipped; default 10000 */
    struct vd_lb *lb;        /* NULL with one server and no health checks */
    struct vd_conf_health health;
    char *host_header; /* NULL: pass the client's Host; else send this one */
    char *sni;         /* NULL: the server's host when it is a name */
    enum vd_forwarded_mode forwarded;
};

struct vd_conf_limits {
    uint32_t request_line;    /* bytes, default 8192 -> 414 */
    uint32_t header_block;    /* bytes, default 32768 -> 431 */
    uint32_t header_count;    /* default 100 -> 431 */
    uint64_t body;            /* bytes, 0 = unlimited -> 413 */
    uint32_t chunk_line;      /* bytes of a chunk-size line incl. extensions, default 4096 */
    uint32_t trailer_block;   /* bytes, default 8192 */
    uint32_t max_connections; /* client connections per worker, default 10000 */
    uint32_t request_arena;   /* bytes of per-exchange metadata, default 65536 */
    uint32_t via_loop;        /* Via members naming this proxy that make a loop, default 8 -> 508;
                               * 0: no check */
};

struct vd_conf_timeouts {         /* all in ms */
    uint64_t client_header;       /* 30000: first byte to end of head, then 408 and close */
    uint64_t keepalive;           /* 60000: idle client connection between requests */
    uint64_t upstream_connect;    /* 10000, then 504 */
    uint64_t upstream_first_byte; /* 60000: request sent to response head, then 504 */
    uint64_t send;                /* 60000: no write progress on either side, then close */
    uint64_t client_body;         /* 60000: no request body progress, then 408 */
    uint64_t upstream_read;       /* 60000: no response body progress, then close */
    uint64_t shutdown_grace;      /* 30000: SIGTERM drain deadline */
    uint64_t upgrade_grace;       /* drain deadline of the old process after a binary upgrade;
                                   * UINT64_MAX (default): shutdown_grace */
    uint64_t upgrade_start;       /* 60000: a new process (SIGUSR2) must serve by then */
};

struct vd_conf_upstream {
    uint32_t pool_idle_max;     /* idle connections kept per origin per worker, default 1024 */
    uint64_t pool_idle_timeout; /* ms, default 60000 */
    char *ca_file;              /* NULL: system store */
    char *ca_path;              /* NULL: system default */
    bool verify;                /* default true; false only for testing, logged at warn */
    bool splice;                /* default true: large plain-TCP response bodies by splice(2) */
    uint64_t splice_min;        /* bytes of body still to come for splice, default 32768 */
    char *tcp_congestion;       /* TCP_CONGESTION for origin and tunnel connections; NULL: the
                                 * system's */
    /* Parent proxies for forward-proxy traffic (http:// requests and CONNECT), in order of
     * preference (vd_parent_pick); none: direct. An https:// one is verified like origins. */
    struct vd_conf_server *parents;
    size_t nparents;
    _Atomic uint64_t *parent_down; /* per parent: uv_hrtime until which it is skipped, 0: up */
    uint64_t parent_fail_timeout;  /* ms a parent that could not be reached is skipped, 10 s */
    bool parent_round_robin;       /* parent_select: round_robin (else failover, in order) */
    _Atomic uint32_t *parent_turn; /* round_robin: the next parent to start from */
    char *parent_auth;    /* "Basic ..." for Proxy-Authorization, from parent_credentials */
    char *parent_ca_file; /* CA bundle for https:// parents; NULL: ca_file/ca_path/system */
    char *parent_sni;     /* TLS name (SNI and certificate) of https:// parents; NULL: host */
    char **bypass_names;  /* parent_bypass host names: "example.com", ".example.com" (lowercase) */
    size_t nbypass_names;
    struct vd_conf_cidr *bypass_nets; /* parent_bypass addresses (IP-literal targets) */
    size_t nbypass_nets;
};

struct vd_conf_resolver {
    char *nameservers;      /* NULL: /etc/resolv.conf; else "127.0.0.1:5353,[::1]:53" */
    uint64_t cache_max_ttl; /* ms, default 300000; 0 disables the positive cache */
    uint64_t negative_ttl;  /* ms, default 30000; 0 disables the negative cache */
    uint64_t timeout;       /* ms per try, default 5000 */
    uint32_t tries;         /* default 2 */
    uint32_t cache_size;    /* entries per worker, default 4096 */
};

/* An address range: family AF_INET or AF_INET6; AF_UNSPEC means every address. IPv4 ranges
 * also match IPv4-mapped IPv6 addresses. */

struct vd_conf_port_range {
    uint16_t lo, hi; /* inclusive */
};

/* One access rule: allow or deny when every condition given holds (an empty list is "any").
 * Name lists hold lowercase names; "*.example.com" matches any name ending in ".example.com"
 * (not example.com itself). See docs/configuration.md, "access". */
struct vd_conf_rule {
    bool allow;
    char *name;                   /* "name:" as written, else "access[N]" (N from 0) */
    struct vd_conf_cidr *clients; /* client address */
    size_t nclients;
    char **users; /* authenticated user names; "*" = any authenticated user */
    size_t nusers;
    char **methods; /* exact, case-sensitive method tokens */
    size_t nmethods;
    char **dest_hosts; /* destination host (CONNECT target, absolute URI host, or route host) */
    size_t ndest_hosts;
    struct vd_conf_cidr *dest_nets; /* destination address, known after DNS resolution */
    size_t ndest_nets;
    struct vd_conf_port_range *dest_ports;
    size_t ndest_ports;
    char **declared; /* protocol the client declared: Upgrade token (CONNECT or Upgrade) */
    size_t ndeclared;
    char **protocols; /* protocol observed in a tunnel: tls ssh http imap smtp pop3 ftp unknown */
    size_t nprotocols;
    char **snis; /* SNI of the tunnel's TLS ClientHello; "" = a ClientHello without SNI */
    size_t nsnis;
    char **alpns; /* any ALPN id offered in the ClientHello */
    size_t nalpns;
    int sni_mismatch;      /* -1 any; 1: matches when the SNI differs from the CONNECT host */
    int declared_mismatch; /* -1 any; 1: matches when the observed protocol is known and differs
                            * from the declared one */
};

struct vd_conf_tunnel {
    uint64_t idle_timeout;      /* ms, default 3600000: no byte either way, then both sides close */
    bool splice;                /* default true: splice(2) between plain TCP ends */
    uint32_t socket_buffer;     /* default 524288: SO_SNDBUF/SO_RCVBUF of spliced short-path
                                 * tunnels; 0: the kernel's autotuning */
    uint32_t socket_buffer_rtt; /* µs, default 250: both paths' RTT below this for the above */
    uint32_t sniff_bytes;       /* default 16384: client bytes held while a rule waits for them */
    uint64_t sniff_timeout;     /* ms, default 10000: a rule waiting for the first bytes gives up */
    char **upgrade_protocols;   /* Upgrade tokens relayed (lowercase); default {"websocket"} */
    size_t nupgrade_protocols;
};

#define VD_MASQUE_IP_SESSIONS_MAX 65536 /* upper bound of masque.ip_max_sessions */

/* MASQUE (RFC 9298): UDP proxying in HTTP; connect-ip (RFC 9484): IP proxying in HTTP. */
struct vd_conf_masque {
    char *udp_template;  /* default "/.well-known/masque/udp/{target_host}/{target_port}/" */
    uint16_t *udp_ports; /* target ports connect-udp may reach, sorted; default none */
    size_t nudp_ports;
    uint64_t idle_timeout; /* ms, default 120000: no datagram either way, then the flow ends */
    char *ip_template;     /* default "/.well-known/masque/ip/{target}/{ipproto}/" */
    struct vd_conf_cidr *ip_pool; /* at most one IPv4 and one IPv6 prefix; none: connect-ip off */
    size_t nip_pool;
    struct vd_conf_cidr *ip_routes; /* what clients may reach (ROUTE_ADVERTISEMENT); default none */
    size_t nip_routes;
    char *tun_name; /* TUN device name prefix, default "vdip" (+ a kernel-chosen number) */
    uint32_t ip_max_sessions; /* connect-ip sessions at once, process-wide; default 256 */
    uint32_t ip_mtu;          /* TUN device MTU, default 1500 (1280..65535) */
    bool ip_icmp;             /* ICMP errors for refused packets (RFC 9484 §7.2.1), default on */
    uint32_t ip_icmp_rate;    /* ICMP errors a second per session, default 10 */
    uint32_t ip_icmp_burst;   /* ICMP errors at once per session, default 10 */
    struct vd_conf_cidr *ip_icmp_source; /* one address per family at most (/32, /128); none:
                                          * the host's own source address towards the client */
    size_t nip_icmp_source;
};

/* The HTTP/2 front end (RFC 9113); see docs/configuration.md, "http2". */
struct vd_conf_h2 {
    bool enabled;          /* default true: h2 through ALPN on TLS listeners, h2c prior knowledge */
    bool extended_connect; /* default true: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441) */
    uint32_t max_streams;  /* SETTINGS_MAX_CONCURRENT_STREAMS, default 100 */
    uint32_t stream_window; /* bytes of request body buffered per stream, default 256 KiB */
    uint32_t conn_window;   /* bytes of request body per connection, default 1 MiB */
    uint32_t stream_buffer; /* bytes of response body queued per stream, default 64 KiB */
    uint32_t reset_burst;   /* client stream resets allowed at once, default 200 */
    uint32_t reset_rate;    /* ... and per second after that, default 50 */
    uint32_t control_burst; /* SETTINGS/PING/PRIORITY/empty frames at once, default 200 */
    uint32_t control_rate;  /* ... and per second after that, default 50 */
};

/* The shared HTTP cache (RFC 9111), memory and disk tiers; see docs/configuration.md, "cache". */
/* cache.disk_send: how a body kept in a file (disk tier or memory file) reaches a plain HTTP/1
 * client: sendfile(2), or write(2) from a read-only mapping of the file (one call for the whole
 * body); auto measures both per worker and keeps the cheaper (vd_sendpick, vd/sock.h). */
enum vd_disk_send {
    VD_DISK_SEND_AUTO,
    VD_DISK_SEND_SENDFILE,
    VD_DISK_SEND_MAPPED,
};

struct vd_conf_cache {
    uint64_t memory;        /* bytes for the whole process, default 256 MiB; 0 disables caching */
    uint64_t max_object;    /* bytes of one stored body, default 8 MiB */
    uint64_t heuristic_max; /* ms, default 1 day: cap of the Last-Modified heuristic (§4.2.2) */
    uint32_t max_ranges;    /* range-specs answered from a stored response, default 16; 0: none */
    uint32_t background;    /* stale-while-revalidate fetches at once per process, default 64 */
    bool collapse;          /* collapsed forwarding of concurrent misses, default true */
    uint64_t collapse_timeout; /* ms a collapsed request waits for the response head, default
                                * 5000; then it goes to the origin itself */
    char **targeted_fields;    /* RFC 9213 field names obeyed, lowercase, in order of precedence;
                                * default {"cdn-cache-control"} */
    size_t ntargeted_fields;
    char *disk_path;             /* directory of the disk tier; NULL (default): no disk tier */
    uint64_t disk_size;          /* bytes of files, default 1 GiB */
    uint64_t disk_objects;       /* files, default 1,000,000 */
    uint64_t disk_queue;         /* bytes of responses waiting to be written, default 16 MiB */
    bool disk_fsync;             /* default false */
    uint64_t sendfile_min;       /* bytes: a disk hit this large is sent from its file, default
                                  * 64 KiB; 0: bodies are always read into memory */
    uint64_t sendfile_files;     /* files kept open for such hits, default 256 */
    uint64_t memory_files;       /* memory bodies >= sendfile_min kept in memory files (sent
                                  * with sendfile), default 1024; 0: none */
    enum vd_disk_send disk_send; /* how such a hit reaches a plain HTTP/1 client */
};

struct vd_auth; /* src/auth: users, verified-credential cache, failure throttle */

enum vd_auth_fail_mode {
    VD_AUTH_FAIL_DELAY,  /* over the limit: each 407 is answered after fail_delay */
    VD_AUTH_FAIL_REFUSE, /* over the limit: 429 with Retry-After, credentials not checked */
};

struct vd_conf_auth {
    char *htpasswd;       /* NULL: no proxy authentication */
    char *realm;          /* default "viaduct" */
    uint64_t cache_ttl;   /* ms a verified credential is trusted, default 300000; 0: no cache */
    uint32_t fail_limit;  /* failures per client address within fail_window, default 10; 0: off */
    uint64_t fail_window; /* ms, default 60000 */
    enum vd_auth_fail_mode fail_mode; /* default delay */
    uint64_t fail_delay;              /* ms, default 2000 */
    struct vd_auth *db;               /* loaded from htpasswd; owned by the snapshot */
};

enum vd_access_format {
    VD_ALOG_TEXT,
    VD_ALOG_JSON,
};

struct vd_conf_log {
    int level;        /* enum vd_log_level, default info */
    char *error_log;  /* NULL or "stderr": standard error; else a file path */
    char *access_log; /* NULL or "off": none; "stdout"; else a file path */
    enum vd_access_format access_format;
    uint32_t trace_mask; /* enum vd_trace_sub bits */
};

struct vd_conf {
    atomic_int refs;
    uint64_t serial;  /* unique per configuration made in this process (never reused) */
    char *source;     /* file path, or NULL for the embedded default */
    uint32_t workers; /* 0 = one per core */
    struct vd_conf_listener *listeners;
    size_t nlisteners;
    struct vd_conf_route *routes; /* reverse mode; first match wins */
    size_t nroutes;
    char *via; /* Via pseudonym, default "viaduct"; NULL/"" disables Via */
    bool via_enabled;
    char *server_name; /* for error pages, default "viaduct" */
    struct vd_conf_limits limits;
    struct vd_conf_timeouts timeouts;
    struct vd_conf_upstream upstream;
    struct vd_conf_resolver resolver;
    struct vd_conf_log log;
    uint16_t *connect_ports; /* allowed CONNECT ports, sorted, unique; default {443} */
    size_t nconnect_ports;
    struct vd_conf_rule *rules; /* access rules (src/conf/access.c); first match wins */
    size_t nrules;
    struct vd_conf_tunnel tunnel;
    struct vd_conf_auth auth;
    struct vd_conf_masque masque;
    struct vd_conf_cache cache;
    struct vd_conf_h2 h2;
};

/* Returns a snapshot with every default: one forward listener on 127.0.0.1:3128, access rules
 * allowing clients in 127.0.0.0/8 and ::1 only. refs = 1. Exits on allocation failure (boot path).
 */
struct vd_conf *vd_conf_default(void);

/* Loads @path. On success returns 0 and *@out (refs = 1). On failure returns VD_ECONF and
 * writes "file:line:column: key: message" into @err (capacity @errlen). */
VD_MUST_CHECK int vd_conf_load(const char *path, struct vd_conf **out, char *err, size_t errlen);

/* Parses "ADDR:PORT" / "[v6]:PORT" / ":PORT" into a listener address. Returns 0 or VD_ECONF. */
VD_MUST_CHECK int vd_conf_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len);

/* Parses "10s", "500ms", "2m", "1h", or a plain number of seconds into ms. Returns 0 or VD_ECONF.
 */
VD_MUST_CHECK int vd_conf_parse_duration(const char *text, uint64_t *ms);
/* The same in microseconds; the units are us, ms and s (no unit: seconds). */
VD_MUST_CHECK int vd_conf_parse_duration_us(const char *text, uint64_t *us);

/* Parses "8k", "32KiB", "1m", "4096" into bytes. Returns 0 or VD_ECONF. */
VD_MUST_CHECK int vd_conf_parse_size(const char *text, uint64_t *bytes);

/* Replaces the listeners with @n forward listeners at @addrs ("-l" on the command line). */
VD_MUST_CHECK int vd_conf_set_listeners(struct vd_conf *c, const char *const *addrs, size_t n,
                                        char *err, size_t errlen);

/* Frees @c's listeners (addresses, certificate paths) and leaves it with none. */
void vd_conf_listeners_free(struct vd_conf *c);

/* Frees @c's access rules (names, condition lists) and leaves it with none. */
void vd_conf_rules_free(struct vd_conf *c);

static inline struct vd_conf *
vd_conf_ref(struct vd_conf *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

/* Drops a reference; frees the snapshot at zero. Safe from any thread. */
void vd_conf_unref(struct vd_conf *c);

/* The current snapshot (a new reference); vd_conf_swap publishes a new one (takes ownership). */
struct vd_conf *vd_conf_current(void);
void vd_conf_swap(struct vd_conf *next);

#endif
