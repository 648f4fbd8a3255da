/* SPDX-License-Identifier: MIT */
/* URI pieces a proxy needs: absolute-form targets (RFC 9112 §3.2.2, http/https only, RFC 9110
 * §4.2) and authorities (RFC 3986 §3.2: reg-name, IPv4, bracketed IPv6; port 0-65535).
 * Userinfo is refused (RFC 9110 §4.2.4). Views borrow from the input; nothing allocates. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "vd/err.h"
#include "vd/http.h"
#include "vd/scan.h"

#define MAX_HOST 255 /* bytes; a DNS name never exceeds 253 (RFC 1035 §2.3.4) */

static int
bad(const char **why, const char *msg)
{
    *why = msg;
    return VD_EBADREQ;
}

static inline bool
is_alpha(uint8_t c)
{
    return (uint8_t)((c | 0x20) - 'a') < 26;
}

/* RFC 3986 §3.2.3: port = *DIGIT; we take 1-5 digits with a value of at most 65535. */
static int
parse_port(const uint8_t *p, size_t n, uint16_t *port, const char **why)
{
    if (n == 0 || n > 5) {
        return bad(why, "invalid port");
    }
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(vd_http_ctype[p[i]] & VD_CT_DIGIT)) {
            return bad(why, "invalid port");
        }
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (v > 65535) {
        return bad(why, "invalid port");
    }
    *port = (uint16_t)v;
    return 0;
}

/* True when the last label of @p is numeric (decimal, or 0x-prefixed hex): such a host can only
 * be an IPv4 address (the WHATWG URL "ends in a number" rule), so "127.1" or "0x7f.1" never
 * reach a resolver that would read them as addresses while we treat them as names. */
static bool
ends_in_number(const uint8_t *p, size_t n)
{
    if (n > 0 && p[n - 1] == '.') {
        n--;
    }
    size_t s = n;
    while (s > 0 && p[s - 1] != '.') {
        s--;
    }
    const uint8_t *l = p + s;
    size_t ll = n - s;
    if (ll == 0) {
        return false;
    }
    size_t i = 0;
    uint8_t cls = VD_CT_DIGIT;
    if (ll >= 2 && l[0] == '0' && (l[1] | 0x20) == 'x') {
        i = 2;
        cls = VD_CT_HEX;
    }
    for (; i < ll; i++) {
        if (!(vd_http_ctype[l[i]] & cls)) {
            return false;
        }
    }
    return true;
}

/* True when @p is exactly four decimal parts 0-255 without leading zeros (what inet_pton
 * accepts for AF_INET, RFC 3986 §3.2.2 dec-octet), checked in place. */
static bool
ipv4_dotted_quad(const uint8_t *p, size_t n)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || p[i] != '.') {
                return false;
            }
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            v = v * 10 + (unsigned)(p[i] - '0');
            if (v > 255) {
                return false;
            }
            i++;
        }
        if (i == start || (p[start] == '0' && i - start > 1)) {
            return false;
        }
    }
    return i == n;
}

/* The last authority this thread found valid, and what it holds: a proxy's clients name the same
 * authority request after request (a forward proxy's clients twice per request: in the target
 * and in Host), and comparing the bytes costs a tenth of checking them again. Only valid
 * authorities are kept, so any other input is checked in full; and only those without an empty
 * port, the one thing valid in an absolute URI and not in Host or authority-form, so a hit
 * holds for every caller. */
static _Thread_local struct {
    uint16_t len; /* 0: none */
    uint16_t hoff, hlen, port;
    bool has_port, ipv6;
    uint8_t v[MAX_HOST + 7]; /* host, ':' and a port of up to 5 digits; longer ones are not kept */
} hp_memo;

/* True when @p is the memo's authority: its parts are then set. */
static inline bool
memo_hit(const uint8_t *p, size_t n, struct vd_iov *host, uint16_t *port, bool *has_port,
         bool *ipv6)
{
    if (!n || n != hp_memo.len || memcmp(p, hp_memo.v, n) != 0) {
        return false;
    }
    host->base = p + hp_memo.hoff;
    host->len = hp_memo.hlen;
    *port = hp_memo.port;
    *has_port = hp_memo.has_port;
    *ipv6 = hp_memo.ipv6;
    return true;
}

static int parse_hostport_full(const uint8_t *p, size_t n, bool empty_port_ok, struct vd_iov *host,
                               uint16_t *port, bool *has_port, bool *ipv6, const char **why);

/* host [":" port] per RFC 3986 §3.2.2-§3.2.3. @empty_port_ok allows "host:" (an absolute URI
 * may carry an empty port, RFC 3986 §6.2.3; authority-form and Host may not here). */
static int
parse_hostport(const uint8_t *p, size_t n, bool empty_port_ok, struct vd_iov *host, uint16_t *port,
               bool *has_port, bool *ipv6, const char **why)
{
    if (memo_hit(p, n, host, port, has_port, ipv6)) {
        return 0;
    }
    int r = parse_hostport_full(p, n, empty_port_ok, host, port, has_port, ipv6, why);
    if (r == 0 && n <= sizeof(hp_memo.v) && p[n - 1] != ':') {
        memcpy(hp_memo.v, p, n);
        hp_memo.len = (uint16_t)n;
        hp_memo.hoff = (uint16_t)(host->base - p);
        hp_memo.hlen = (uint16_t)host->len;
        hp_memo.port = *port;
        hp_memo.has_port = *has_port;
        hp_memo.ipv6 = *ipv6;
    }
    return r;
}

static int
parse_hostport_full(const uint8_t *p, size_t n, bool empty_port_ok, struct vd_iov *host,
                    uint16_t *port, bool *has_port, bool *ipv6, const char **why)
{
    size_t hl;
    const uint8_t *rest;
    *port = 0;
    *has_port = false;
    *ipv6 = false;
    if (n == 0) {
        return bad(why, "empty host");
    }
    if (p[0] == '[') {
        /* IP-literal: only IPv6address; IPvFuture and zone ids are refused. */
        const uint8_t *rb = memchr(p, ']', n);
        char tmp[INET6_ADDRSTRLEN];
        unsigned char addr[16];
        hl = rb ? (size_t)(rb - p - 1) : 0;
        if (!rb || hl < 2 || hl >= sizeof(tmp)) {
            return bad(why, "invalid IPv6 address");
        }
        memcpy(tmp, p + 1, hl);
        tmp[hl] = '\0';
        if (inet_pton(AF_INET6, tmp, addr) != 1) {
            return bad(why, "invalid IPv6 address");
        }
        host->base = p + 1;
        host->len = hl;
        *ipv6 = true;
        rest = rb + 1;
        if (rest < p + n && *rest != ':') {
            return bad(why, "invalid authority");
        }
    } else {
        size_t i = 0;
        bool dotted = true; /* only digits and dots so far */
        while (i < n) {
            uint8_t c = p[i];
            uint8_t ct = vd_http_ctype[c];
            if (ct & VD_CT_REGNAME) {
                /* ':' and '%' are not reg-name bytes: one lookup for the common case */
                dotted = dotted && (c == '.' || (ct & VD_CT_DIGIT));
                i++;
                continue;
            }
            if (c == ':') {
                break;
            }
            /* pct-encoded = "%" HEXDIG HEXDIG */
            if (c != '%' || n - i < 3 || !(vd_http_ctype[p[i + 1]] & VD_CT_HEX) ||
                !(vd_http_ctype[p[i + 2]] & VD_CT_HEX)) {
                return bad(why, "invalid character in host");
            }
            dotted = false;
            i += 3;
        }
        hl = i;
        if (hl == 0) {
            return bad(why, "empty host");
        }
        if (hl > MAX_HOST) {
            return bad(why, "host name too long");
        }
        if ((dotted || ends_in_number(p, hl)) && !ipv4_dotted_quad(p, hl)) {
            return bad(why, "invalid IPv4 address");
        }
        host->base = p;
        host->len = hl;
        rest = p + hl;
    }
    if (rest == p + n) {
        return 0;
    }
    /* *rest == ':' */
    size_t pl = (size_t)(p + n - rest - 1);
    if (pl == 0) {
        return empty_port_ok ? 0 : bad(why, "empty port");
    }
    int r = parse_port(rest + 1, pl, port, why);
    if (r < 0) {
        return r;
    }
    *has_port = true;
    return 0;
}

int
vd_uri_parse_authority(const uint8_t *p, size_t n, struct vd_iov *host, uint16_t *port, bool *ipv6,
                       const char **why)
{
    bool has_port;
    if (memo_hit(p, n, host, port, &has_port, ipv6)) {
        return 0; /* it had no userinfo either */
    }
    /* RFC 9110 §4.2.4: no userinfo in an authority we act on. */
    if (n > 0 && memchr(p, '@', n)) {
        return bad(why, "userinfo not allowed");
    }
    return parse_hostport(p, n, false, host, port, &has_port, ipv6, why);
}

/* The first of '/', '?', '#' or '@' in [p, e), or e: where an absolute URI's authority ends,
 * unless it has userinfo. 16 bytes per step with SSE2. */
static inline const uint8_t *
authority_end(const uint8_t *p, const uint8_t *e)
{
#if defined(__SSE2__)
    const __m128i sl = _mm_set1_epi8('/'), qm = _mm_set1_epi8('?');
    const __m128i hs = _mm_set1_epi8('#'), at = _mm_set1_epi8('@');
    while (e - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, sl), _mm_cmpeq_epi8(v, qm)),
                                 _mm_or_si128(_mm_cmpeq_epi8(v, hs), _mm_cmpeq_epi8(v, at)));
        int bits = _mm_movemask_epi8(m);
        if (bits) {
            return p + __builtin_ctz((unsigned)bits);
        }
        p += 16;
    }
#endif
    while (p < e && *p != '/' && *p != '?' && *p != '#' && *p != '@') {
        p++;
    }
    return p;
}

int
vd_uri_parse_absolute(const uint8_t *p, size_t n, struct vd_uri *u, const char **why)
{
    static const uint8_t slash[] = "/";
    size_t i = 0;
    /* RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
    if (n == 0 || !is_alpha(p[0])) {
        return bad(why, "invalid URI scheme");
    }
    while (i < n && (vd_http_ctype[p[i]] & VD_CT_SCHEME)) {
        i++;
    }
    if (n - i < 3 || p[i] != ':' || p[i + 1] != '/' || p[i + 2] != '/') {
        return bad(why, "invalid absolute URI");
    }
    u->scheme.base = p;
    u->scheme.len = i;
    if (vd_hdr_name_is(u->scheme, "http")) {
        u->https = false;
    } else if (vd_hdr_name_is(u->scheme, "https")) {
        u->https = true;
    } else {
        return bad(why, "unsupported URI scheme");
    }
    const uint8_t *a = p + i + 3, *e = p + n, *q = authority_end(a, e);
    if (q < e && *q == '@') {
        /* RFC 9110 §4.2.4: userinfo is deprecated and a phishing vector; refuse it. */
        return bad(why, "userinfo not allowed");
    }
    u->authority.base = a;
    u->authority.len = (size_t)(q - a);
    int r =
        parse_hostport(a, (size_t)(q - a), true, &u->host, &u->port, &u->has_port, &u->ipv6, why);
    if (r < 0) {
        return r;
    }
    if (!u->has_port) {
        u->port = u->https ? 443 : 80;
    }
    if (q == e) {
        u->path.base = slash;
        u->path.len = 1;
        return 0;
    }
    if (*q == '#') {
        /* "#" is never part of a request-target (RFC 9112 §3.2). */
        return bad(why, "fragment in request target");
    }
    /* "http://h?q" has an empty path (RFC 3986 path-abempty): path then starts with '?' and the
     * caller sends "/" before it (RFC 9112 §3.2.1). */
    const uint8_t *s = vd_scan_target(q, e, true);
    if (s < e) {
        return bad(why, *s == '#' ? "fragment in request target" : "invalid character in path");
    }
    u->path.base = q;
    u->path.len = (size_t)(e - q);
    return 0;
}
