/* SPDX-License-Identifier: MIT */
/* Access rules (include/vd/access.h): first match wins over facts known in phases. Each
 * condition of a rule evaluates to no, yes or undecided (its fact is not known yet); a rule any
 * of whose conditions is "no" is skipped, so only a rule that could still match holds the
 * verdict back as PENDING. Also the address-range, host-pattern and CONNECT-port helpers. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vd/access.h"

enum cond {
    C_NO,
    C_YES,
    C_UNDECIDED,
};

static bool
prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rem = bits % 8;
    if (memcmp(a, b, bytes) != 0) {
        return false;
    }
    if (rem) {
        uint8_t mask = (uint8_t)(0xff << (8 - rem));
        return (a[bytes] & mask) == (b[bytes] & mask);
    }
    return true;
}

bool
vd_cidr_match(const struct vd_conf_cidr *r, const struct sockaddr *ip)
{
    /* RFC 4291 §2.5.5.2: ::ffff:a.b.c.d is the IPv4 address a.b.c.d seen through an IPv6
     * socket; both spellings of one client must meet the same rules. */
    static const uint8_t v4map[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t a4[4], a6[16];
    bool has4 = false, has6 = false;

    if (r->net.ss_family == AF_UNSPEC) {
        return ip != NULL;
    }
    if (!ip) {
        return false;
    }
    if (ip->sa_family == AF_INET) {
        memcpy(a4, &((const struct sockaddr_in *)(const void *)ip)->sin_addr, 4);
        memcpy(a6, v4map, 12);
        memcpy(a6 + 12, a4, 4);
        has4 = has6 = true;
    } else if (ip->sa_family == AF_INET6) {
        memcpy(a6, &((const struct sockaddr_in6 *)(const void *)ip)->sin6_addr, 16);
        has6 = true;
        if (memcmp(a6, v4map, 12) == 0) {
            memcpy(a4, a6 + 12, 4);
            has4 = true;
        }
    }
    if (r->net.ss_family == AF_INET && has4) {
        const struct sockaddr_in *n = (const struct sockaddr_in *)&r->net;
        return prefix_match(a4, (const uint8_t *)&n->sin_addr, r->prefix);
    }
    if (r->net.ss_family == AF_INET6 && has6) {
        const struct sockaddr_in6 *n = (const struct sockaddr_in6 *)&r->net;
        return prefix_match(a6, (const uint8_t *)&n->sin6_addr, r->prefix);
    }
    return false;
}

/* Length of @s without one trailing dot: "example.com." is the same name as "example.com"
 * (RFC 1034 §3.1, absolute form). */
static size_t
name_len(const char *s)
{
    size_t l = strlen(s);
    return l > 1 && s[l - 1] == '.' ? l - 1 : l;
}

bool
vd_host_match(const char *pattern, const char *host)
{
    size_t hl = name_len(host);
    if (pattern[0] == '*' && pattern[1] == '.') {
        /* ".example.com": the host must have at least one more label in front. */
        const char *suffix = pattern + 1;
        size_t sl = strlen(suffix);
        return hl > sl && strncasecmp(host + hl - sl, suffix, sl) == 0;
    }
    if (strchr(pattern, ':')) {
        /* IPv6 literals have many spellings (RFC 5952 §2): compare the addresses. */
        struct in6_addr a, b;
        return inet_pton(AF_INET6, pattern, &a) == 1 && inet_pton(AF_INET6, host, &b) == 1 &&
               memcmp(&a, &b, sizeof(a)) == 0;
    }
    return strlen(pattern) == hl && strncasecmp(pattern, host, hl) == 0;
}

static int
port_cmp(const void *a, const void *b)
{
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    return (x > y) - (x < y);
}

bool
vd_connect_port_allowed(const struct vd_conf *c, uint16_t port)
{
    return c->nconnect_ports &&
           bsearch(&port, c->connect_ports, c->nconnect_ports, sizeof(uint16_t), port_cmp);
}

static bool
str_in(char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], s) == 0) {
            return true;
        }
    }
    return false;
}

static bool
same_name(const char *a, const char *b)
{
    size_t al = name_len(a), bl = name_len(b);
    return al == bl && strncasecmp(a, b, al) == 0;
}

bool
vd_ip_literal(const char *host, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)out)->sin_addr) == 1) {
        out->ss_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)out)->sin6_addr) == 1) {
        out->ss_family = AF_INET6;
        return true;
    }
    return false;
}

/* The destination address: known after DNS, or right away when the host is an IP literal. */
static const struct sockaddr *
dest_addr(const struct vd_access_facts *f, struct sockaddr_storage *lit)
{
    if (f->known & VD_FACT_ADDR) {
        return f->dest_addr;
    }
    return vd_ip_literal(f->dest_host, lit) ? (const struct sockaddr *)lit : NULL;
}

/* Conditions on the request head: all facts known from the start. */
static bool
head_matches(const struct vd_conf_rule *r, const struct vd_access_facts *f)
{
    size_t i;
    if (r->nclients) {
        for (i = 0; i < r->nclients && !vd_cidr_match(&r->clients[i], f->client); i++) {
        }
        if (i == r->nclients) {
            return false;
        }
    }
    if (r->nusers && (!f->user || (!str_in(r->users, r->nusers, "*") &&
                                   !str_in(r->users, r->nusers, f->user)))) {
        return false;
    }
    if (r->nmethods) {
        for (i = 0; i < r->nmethods; i++) {
            size_t ml = strlen(r->methods[i]);
            if (ml == f->method.len && f->method.base &&
                memcmp(r->methods[i], f->method.base, ml) == 0) {
                break;
            }
        }
        if (i == r->nmethods) {
            return false;
        }
    }
    if (r->ndest_hosts) {
        if (!f->dest_host) {
            return false;
        }
        for (i = 0; i < r->ndest_hosts && !vd_host_match(r->dest_hosts[i], f->dest_host); i++) {
        }
        if (i == r->ndest_hosts) {
            return false;
        }
    }
    if (r->ndest_ports) {
        for (i = 0; i < r->ndest_ports; i++) {
            if (f->dest_port >= r->dest_ports[i].lo && f->dest_port <= r->dest_ports[i].hi) {
                break;
            }
        }
        if (f->dest_port == 0 || i == r->ndest_ports) {
            return false;
        }
    }
    if (r->ndeclared && (!f->declared || !str_in(r->declared, r->ndeclared, f->declared))) {
        return false;
    }
    return true;
}

static enum cond
nets_match(const struct vd_conf_rule *r, const struct vd_access_facts *f)
{
    struct sockaddr_storage lit;
    if (!r->ndest_nets) {
        return C_YES;
    }
    /* No destination (an origin-form request to a forward listener): nothing to resolve. */
    if (!f->dest_host) {
        return C_NO;
    }
    const struct sockaddr *a = dest_addr(f, &lit);
    if (!a) {
        return f->known & VD_FACT_ADDR ? C_NO : C_UNDECIDED;
    }
    for (size_t i = 0; i < r->ndest_nets; i++) {
        if (vd_cidr_match(&r->dest_nets[i], a)) {
            return C_YES;
        }
    }
    return C_NO;
}

static bool
alpn_offered(const struct vd_access_facts *f, const char *id)
{
    for (size_t i = 0; i < f->nalpn; i++) {
        if (f->alpn[i] && strcmp(f->alpn[i], id) == 0) {
            return true;
        }
    }
    return false;
}

/* Conditions on what a tunnel's first bytes showed. */
static enum cond
sniff_matches(const struct vd_conf_rule *r, const struct vd_access_facts *f)
{
    bool any =
        r->nprotocols || r->nsnis || r->nalpns || r->sni_mismatch == 1 || r->declared_mismatch == 1;
    size_t i;
    if (!any) {
        return C_YES;
    }
    /* Only a tunnel has first bytes to look at; declared_mismatch also needs a declaration,
     * which the head already told. */
    if (!f->tunnel || (r->declared_mismatch == 1 && !f->declared)) {
        return C_NO;
    }
    if (!(f->known & VD_FACT_SNIFF)) {
        return C_UNDECIDED;
    }
    const char *proto = f->protocol ? f->protocol : "unknown";
    bool tls = strcmp(proto, "tls") == 0;
    if (r->nprotocols && !str_in(r->protocols, r->nprotocols, proto)) {
        return C_NO;
    }
    if (r->nsnis) {
        for (i = 0; i < r->nsnis; i++) {
            const char *p = r->snis[i];
            /* "": a ClientHello that names no server (RFC 6066 §3 makes SNI optional). */
            if (*p ? f->sni && vd_host_match(p, f->sni) : tls && !f->sni) {
                break;
            }
        }
        if (i == r->nsnis) {
            return C_NO;
        }
    }
    if (r->nalpns) {
        for (i = 0; i < r->nalpns && !alpn_offered(f, r->alpns[i]); i++) {
        }
        if (i == r->nalpns) {
            return C_NO;
        }
    }
    if (r->sni_mismatch == 1 && (!f->sni || (f->dest_host && same_name(f->sni, f->dest_host)))) {
        return C_NO;
    }
    if (r->declared_mismatch == 1 &&
        (strcmp(proto, "unknown") == 0 || strcmp(proto, f->declared) == 0)) {
        return C_NO;
    }
    return C_YES;
}

enum vd_access_verdict
vd_access_eval(const struct vd_conf *c, const struct vd_access_facts *f,
               const struct vd_conf_rule **rule)
{
    for (size_t i = 0; i < c->nrules; i++) {
        const struct vd_conf_rule *r = &c->rules[i];
        if (!head_matches(r, f)) {
            continue;
        }
        /* A rule that a known fact already rules out is skipped even when another of its
         * facts is still unknown: only a rule that could match holds the verdict back. */
        enum cond nets = nets_match(r, f), sniff = sniff_matches(r, f);
        if (nets == C_NO || sniff == C_NO) {
            continue;
        }
        if (nets == C_UNDECIDED || sniff == C_UNDECIDED) {
            *rule = NULL;
            return VD_ACCESS_PENDING;
        }
        *rule = r;
        return r->allow ? VD_ACCESS_ALLOW : VD_ACCESS_DENY;
    }
    *rule = NULL;
    return VD_ACCESS_DENY;
}
