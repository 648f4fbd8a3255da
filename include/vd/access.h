/* SPDX-License-Identifier: MIT */
/* Access rules: first match wins over facts that become known in phases. A request's facts
 * (client, user, method, destination host/port, declared protocol) are known when its head is;
 * the destination address after DNS; a tunnel's SNI/ALPN/observed protocol after its first
 * bytes. A rule that tests a fact not known yet makes the verdict PENDING when no earlier rule
 * decided: the caller evaluates again once it knows more. */
#ifndef VD_ACCESS_H
#define VD_ACCESS_H

#include <sys/socket.h>

#include "vd/common.h"
#include "vd/conf.h"

enum {
    VD_FACT_ADDR = 1,  /* dest_addr is known (after DNS) */
    VD_FACT_SNIFF = 2, /* protocol/sni/alpn are known (first tunnel bytes classified) */
};

struct vd_access_facts {
    const struct sockaddr *client;
    const char *user; /* authenticated user, NULL when none */
    struct vd_iov method;
    const char *dest_host; /* lowercase, no brackets; NULL when none */
    uint16_t dest_port;    /* 0 when none */
    const char *declared;  /* lowercase declared protocol (Upgrade token), NULL when none */
    bool tunnel;           /* CONNECT or an Upgrade relay: sniff facts can become known */
    unsigned known;        /* VD_FACT_* bits */
    const struct sockaddr *dest_addr; /* when VD_FACT_ADDR */
    const char *protocol;             /* when VD_FACT_SNIFF: "tls", "ssh", ..., "unknown" */
    const char *sni;                  /* when VD_FACT_SNIFF: NULL when no ClientHello/no SNI */
    const char *const *alpn;          /* when VD_FACT_SNIFF: offered ALPN ids */
    size_t nalpn;
};

enum vd_access_verdict {
    VD_ACCESS_ALLOW,
    VD_ACCESS_DENY,
    VD_ACCESS_PENDING, /* an earlier-than-deciding rule needs a fact not known yet */
};

/* Evaluates @c's rules over @f. *@rule gets the deciding rule (NULL: no rule matched, which is a
 * deny, or PENDING). A rule with sni/alpn/protocol conditions never matches a non-tunnel
 * request; a rule with dest_nets never matches a request without a destination, and needs no
 * DNS when dest_host is an IP literal. A rule that a known fact rules out is skipped even when
 * it also tests an unknown one. sni "" matches a TLS ClientHello without SNI only. */
enum vd_access_verdict vd_access_eval(const struct vd_conf *c, const struct vd_access_facts *f,
                                      const struct vd_conf_rule **rule);

/* True when @ip is inside @r. IPv4 ranges match IPv4-mapped IPv6 addresses too, and IPv6 ranges
 * see an IPv4 address as ::ffff:a.b.c.d. A NULL @ip matches nothing. */
bool vd_cidr_match(const struct vd_conf_cidr *r, const struct sockaddr *ip);

/* Whether @host (no brackets) is an IPv4 or IPv6 address; fills @out (port 0) when it is. */
bool vd_ip_literal(const char *host, struct sockaddr_storage *out);

/* True when @host matches @pattern: exact, or "*.suffix" for names strictly longer than
 * ".suffix" that end with it ("*.example.com" matches a.example.com, not example.com). Case is
 * ignored, and so is one trailing dot on @host; an IPv6 literal pattern is compared by value. */
bool vd_host_match(const char *pattern, const char *host);

/* True when @port is in the sorted allowed CONNECT ports of @c. */
bool vd_connect_port_allowed(const struct vd_conf *c, uint16_t port);

#endif
