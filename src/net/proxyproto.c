/* SPDX-License-Identifier: MIT */
/* PROXY protocol headers, version 1 (one text line) and version 2 (binary), as specified in
 * haproxy.org's proxy-protocol.txt: §2.1 (v1 syntax, 107 bytes at most), §2.2 (v2 signature,
 * version/command, family/transport, length, addresses, TLVs, which are skipped here). */
#include "vd/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "vd/err.h"
#include "vd/proxyproto.h"

#define V1_MAX 107

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static int
bad(const char **why, const char *what)
{
    *why = what;
    return VD_EPROTO;
}

/* "0".."65535", no sign, no leading zero (v1 §2.1). */
static bool
v1_port(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) {
        return false;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535) {
        return false;
    }
    *out = (uint16_t)v;
    return true;
}

static bool
v1_addr(int fam, const char *s, size_t n, uint16_t port, struct sockaddr_storage *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (fam == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)out;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        return inet_pton(AF_INET, buf, &a->sin_addr) == 1;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    return inet_pton(AF_INET6, buf, &a->sin6_addr) == 1;
}

/* "PROXY TCP4 SRC DST SPORT DPORT\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN[ anything]\r\n". */
static int
parse_v1(const uint8_t *p, size_t n, struct vd_proxy_hdr *out, const char **why)
{
    const uint8_t *lf = memchr(p, '\n', VD_MIN(n, (size_t)V1_MAX));
    if (!lf) {
        return n >= V1_MAX ? bad(why, "PROXY v1 line longer than 107 bytes") : VD_EAGAIN;
    }
    size_t len = (size_t)(lf - p) + 1;
    if (len < 8 || lf[-1] != '\r') {
        return bad(why, "PROXY v1 line not ended by CRLF");
    }
    const char *s = (const char *)p + 6, *e = (const char *)lf - 1;
    out->version = 1;
    out->has_addr = false;
    if ((size_t)(e - s) >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (s + 7 == e || s[7] == ' ')) {
        return (int)len; /* the rest of the line is ignored (§2.1) */
    }
    int fam;
    if ((size_t)(e - s) > 5 && memcmp(s, "TCP4 ", 5) == 0) {
        fam = AF_INET;
    } else if ((size_t)(e - s) > 5 && memcmp(s, "TCP6 ", 5) == 0) {
        fam = AF_INET6;
    } else {
        return bad(why, "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
    }
    s += 5;
    /* Four fields separated by single spaces. */
    const char *f[4];
    size_t fl[4];
    for (int i = 0; i < 4; i++) {
        const char *sp = i < 3 ? memchr(s, ' ', (size_t)(e - s)) : e;
        if (!sp || sp == s || (i == 3 && memchr(s, ' ', (size_t)(e - s)))) {
            return bad(why, "PROXY v1 line does not hold four address fields");
        }
        f[i] = s;
        fl[i] = (size_t)(sp - s);
        s = sp + (i < 3);
    }
    uint16_t sport, dport;
    if (!v1_port(f[2], fl[2], &sport) || !v1_port(f[3], fl[3], &dport)) {
        return bad(why, "PROXY v1 port is not a number from 0 to 65535");
    }
    if (!v1_addr(fam, f[0], fl[0], sport, &out->src) ||
        !v1_addr(fam, f[1], fl[1], dport, &out->dst)) {
        return bad(why, fam == AF_INET ? "PROXY v1 TCP4 address is not IPv4"
                                       : "PROXY v1 TCP6 address is not IPv6");
    }
    out->has_addr = true;
    return (int)len;
}

static int
parse_v2(const uint8_t *p, size_t n, struct vd_proxy_hdr *out, const char **why)
{
    if (n < 16) {
        return VD_EAGAIN;
    }
    if (p[12] >> 4 != 2) {
        return bad(why, "PROXY v2 version is not 2");
    }
    unsigned cmd = p[12] & 0xf, fam = p[13] >> 4, proto = p[13] & 0xf;
    if (cmd > 1) {
        return bad(why, "PROXY v2 command is not LOCAL or PROXY");
    }
    size_t len = 16 + ((size_t)p[14] << 8 | p[15]);
    if (len > VD_PROXYPROTO_MAX) {
        return bad(why, "PROXY v2 header longer than viaduct accepts");
    }
    if (n < len) {
        return VD_EAGAIN;
    }
    out->version = 2;
    out->has_addr = false;
    const uint8_t *a = p + 16;
    size_t alen = len - 16;
    memset(&out->src, 0, sizeof(out->src));
    memset(&out->dst, 0, sizeof(out->dst));
    /* LOCAL (a health check of the sender's own), UNSPEC, UNIX and datagram transports carry no
     * TCP client address: the connection's own stands. */
    if (cmd == 0 || proto != 1 || (fam != 1 && fam != 2)) {
        return (int)len;
    }
    if (fam == 1) {
        if (alen < 12) {
            return bad(why, "PROXY v2 too short for IPv4 addresses");
        }
        struct sockaddr_in *s = (struct sockaddr_in *)&out->src,
                           *d = (struct sockaddr_in *)&out->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
    } else {
        if (alen < 36) {
            return bad(why, "PROXY v2 too short for IPv6 addresses");
        }
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src,
                            *d = (struct sockaddr_in6 *)&out->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&d->sin6_port, a + 34, 2);
    }
    out->has_addr = true;
    return (int)len;
}

int
vd_proxyproto_parse(const uint8_t *p, size_t n, struct vd_proxy_hdr *out, const char **why)
{
    *why = NULL;
    if (n == 0) {
        return VD_EAGAIN;
    }
    if (p[0] == 'P') {
        size_t k = VD_MIN(n, (size_t)6);
        if (memcmp(p, "PROXY ", k) != 0) {
            return bad(why, "not a PROXY protocol header");
        }
        return n < 6 ? VD_EAGAIN : parse_v1(p, n, out, why);
    }
    size_t k = VD_MIN(n, sizeof(v2_sig));
    if (memcmp(p, v2_sig, k) != 0) {
        return bad(why, "not a PROXY protocol header");
    }
    return n < sizeof(v2_sig) ? VD_EAGAIN : parse_v2(p, n, out, why);
}
