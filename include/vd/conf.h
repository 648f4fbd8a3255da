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
};

/* One CIDR rule: allow or deny clients whose address is inside net/prefix. */
struct vd_conf_acl {
    bool allow;
    struct sockaddr_storage net; /* family AF_INET or AF_INET6; AF_UNSPEC means "all" */
    unsigned prefix;
    char *text; /* as written, for the 403 body and the log */
};

enum vd_forwarded_mode {
    VD_FWD_NONE,
    VD_FWD_XFF,     /* X-Forwarded-For (appended) and X-Forwarded-Proto */
    VD_FWD_RFC7239, /* Forwarded: for=...;proto=...;host=... (appended) */
    VD_FWD_BOTH,
};

struct vd_conf_route {
    char *host;        /* NULL matches any host; else exact, lowercase; "*.example.com" suffix */
    char *path_prefix; /* "/" matches everything */
    char *upstream;    /* as written: "http://127.0.0.1:8080" or "https://origin:443" */
    bool up_tls;       /* https upstream */
    char *up_host;     /* host part of @upstream */
    uint16_t up_port;
    char *host_header; /* NULL: pass the client's Host; else send this one */
    char *sni;         /* NULL: @up_host when it is a name */
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
};

struct vd_conf_upstream {
    uint32_t pool_idle_max;     /* idle connections kept per origin per worker, default 32 */
    uint64_t pool_idle_timeout; /* ms, default 60000 */
    char *ca_file;              /* NULL: system store */
    char *ca_path;              /* NULL: system default */
    bool verify;                /* default true; false only for testing, logged at warn */
};

struct vd_conf_resolver {
    char *nameservers;      /* NULL: /etc/resolv.conf; else "127.0.0.1:5353,[::1]:53" */
    uint64_t cache_max_ttl; /* ms, default 300000; 0 disables the positive cache */
    uint64_t negative_ttl;  /* ms, default 30000; 0 disables the negative cache */
    uint64_t timeout;       /* ms per try, default 5000 */
    uint32_t tries;         /* default 2 */
    uint32_t cache_size;    /* entries per worker, default 4096 */
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
    char *source;     /* file path, or NULL for the embedded default */
    uint32_t workers; /* 0 = one per core */
    struct vd_conf_listener *listeners;
    size_t nlisteners;
    struct vd_conf_acl *acl; /* first match wins; no match = deny */
    size_t nacl;
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
    uint16_t *connect_ports; /* reserved for the tunnel issue: allowed CONNECT ports */
    size_t nconnect_ports;
};

/* Returns a snapshot with every default: one forward listener on 127.0.0.1:3128, ACL allowing
 * 127.0.0.0/8 and ::1 only. refs = 1. Exits on allocation failure (boot path). */
struct vd_conf *vd_conf_default(void);

/* Loads @path. On success returns 0 and *@out (refs = 1). On failure returns VD_ECONF and
 * writes "file:line:column: key: message" into @err (capacity @errlen). */
VD_MUST_CHECK int vd_conf_load(const char *path, struct vd_conf **out, char *err, size_t errlen);

/* Parses "ADDR:PORT" / "[v6]:PORT" / ":PORT" into a listener address. Returns 0 or VD_ECONF. */
VD_MUST_CHECK int vd_conf_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len);

/* Parses "10s", "500ms", "2m", "1h", or a plain number of seconds into ms. Returns 0 or VD_ECONF.
 */
VD_MUST_CHECK int vd_conf_parse_duration(const char *text, uint64_t *ms);

/* Parses "8k", "32KiB", "1m", "4096" into bytes. Returns 0 or VD_ECONF. */
VD_MUST_CHECK int vd_conf_parse_size(const char *text, uint64_t *bytes);

/* Replaces the listeners with @n forward listeners at @addrs ("-l" on the command line). */
VD_MUST_CHECK int vd_conf_set_listeners(struct vd_conf *c, const char *const *addrs, size_t n,
                                        char *err, size_t errlen);

/* Frees @c's listeners (addresses, certificate paths) and leaves it with none. */
void vd_conf_listeners_free(struct vd_conf *c);

/* True when @sa is allowed by the ACL (first match wins; no rule matched: denied). @rule gets the
 * matching rule's text or NULL. */
bool vd_conf_acl_allows(const struct vd_conf *c, const struct sockaddr *sa, const char **rule);

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
