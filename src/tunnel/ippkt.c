/* SPDX-License-Identifier: MIT */
/* IP packets inside connect-ip: header parsing (RFC 791 §3.1, RFC 8200 §3-§4), the walk over
 * IPv6 extension headers to the upper-layer protocol (RFC 9484 §4.8), prefixes and ranges
 * (RFC 9484 §4.7), and the forwarding checks of RFC 9484 §7.2. Pure functions. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "vd/err.h"
#include "vd/ippkt.h"

/* ---- parsing -------------------------------------------------------------------------------- */

static uint16_t
be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* RFC 1071: the one's complement sum over the header, checksum included, is 0xffff. */
static bool
ipv4_checksum_ok(const uint8_t *p, size_t hl)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < hl; i += 2) {
        sum += be16(p + i);
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return sum == 0xffff;
}

static int
parse_v4(const uint8_t *p, size_t len, struct vd_ippkt *pk, const char **why)
{
    if (len < 20) {
        *why = "IPv4 packet shorter than its header";
        return VD_EPROTO;
    }
    size_t hl = (size_t)(p[0] & 0x0f) * 4;
    if (hl < 20 || hl > len) {
        *why = "bad IPv4 header length";
        return VD_EPROTO;
    }
    if (be16(p + 2) != len) {
        *why = "IPv4 total length differs from the datagram";
        return VD_EPROTO;
    }
    if (!ipv4_checksum_ok(p, hl)) {
        *why = "bad IPv4 header checksum";
        return VD_EPROTO;
    }
    pk->ver = 4;
    pk->ttl = p[8];
    pk->proto = p[9];
    pk->fragment = (be16(p + 6) & 0x1fff) != 0;
    pk->l4 = (uint16_t)hl;
    memcpy(pk->src, p + 12, 4);
    memcpy(pk->dst, p + 16, 4);
    return 0;
}

/* RFC 8200 §4 and the IANA list of IPv6 extension headers: the ones with the generic
 * (next header, length in 8-octet units) layout, plus Fragment and AH. */
static bool
is_ext(uint8_t nh)
{
    return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60 || nh == 135 || nh == 139 ||
           nh == 140 || nh == 253 || nh == 254;
}

static int
parse_v6(const uint8_t *p, size_t len, struct vd_ippkt *pk, const char **why)
{
    if (len < 40) {
        *why = "IPv6 packet shorter than its header";
        return VD_EPROTO;
    }
    if ((size_t)be16(p + 4) + 40 != len) {
        /* A Payload Length of 0 announces a jumbogram (RFC 2675), which no tunnel here carries. */
        *why = "IPv6 payload length differs from the datagram";
        return VD_EPROTO;
    }
    pk->ver = 6;
    pk->ttl = p[7];
    pk->fragment = false;
    memcpy(pk->src, p + 8, 16);
    memcpy(pk->dst, p + 24, 16);
    uint8_t nh = p[6];
    size_t off = 40;
    for (int i = 0; is_ext(nh); i++) {
        if (i == VD_IPV6_EXT_MAX) {
            *why = "too many IPv6 extension headers";
            return VD_EPROTO;
        }
        if (len - off < 8) {
            *why = "truncated IPv6 extension header";
            return VD_EPROTO;
        }
        size_t el;
        if (nh == 44) {
            el = 8; /* Fragment: fixed size (RFC 8200 §4.5) */
            if ((be16(p + off + 2) & 0xfff8) != 0) {
                /* Not the first fragment: the chain after it is not in this packet, and its
                 * Next Header names the first header of the fragmentable part. */
                pk->fragment = true;
                nh = p[off];
                if (is_ext(nh)) {
                    *why = "IPv6 fragment of an extension header chain";
                    return VD_EPROTO;
                }
                break;
            }
        } else if (nh == 51) {
            el = ((size_t)p[off + 1] + 2) * 4; /* AH: 4-octet units (RFC 4302 §2.2) */
        } else {
            el = ((size_t)p[off + 1] + 1) * 8;
        }
        if (el > len - off) {
            *why = "truncated IPv6 extension header";
            return VD_EPROTO;
        }
        nh = p[off];
        off += el;
    }
    pk->proto = nh;
    pk->l4 = (uint16_t)off;
    return 0;
}

int
vd_ippkt_parse(const uint8_t *p, size_t len, struct vd_ippkt *pk, const char **why)
{
    memset(pk, 0, sizeof(*pk));
    if (len == 0) {
        *why = "empty packet";
        return VD_EPROTO;
    }
    switch (p[0] >> 4) {
    case 4:
        return parse_v4(p, len, pk, why);
    case 6:
        return parse_v6(p, len, pk, why);
    default:
        *why = "IP version is not 4 or 6";
        return VD_EPROTO;
    }
}

/* ---- prefixes and ranges -------------------------------------------------------------------- */

bool
vd_ip_prefix_contains(const struct vd_ip_prefix *pf, uint8_t ver, const uint8_t *addr)
{
    if (pf->ver != ver) {
        return false;
    }
    unsigned full = pf->plen / 8, rest = pf->plen % 8;
    if (memcmp(pf->addr, addr, full) != 0) {
        return false;
    }
    if (rest == 0) {
        return true;
    }
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return ((pf->addr[full] ^ addr[full]) & mask) == 0;
}

bool
vd_ip_range_contains(const struct vd_ip_range *r, uint8_t ver, const uint8_t *addr)
{
    size_t al = vd_ip_addr_len(ver);
    return r->ver == ver && al && memcmp(r->start, addr, al) <= 0 && memcmp(addr, r->end, al) <= 0;
}

void
vd_ip_range_from_prefix(struct vd_ip_range *r, uint8_t ver, const uint8_t *addr, unsigned plen,
                        uint8_t proto)
{
    size_t al = vd_ip_addr_len(ver);
    memset(r, 0, sizeof(*r));
    r->ver = ver;
    r->proto = proto;
    for (size_t i = 0; i < al; i++) {
        unsigned keep = plen >= (i + 1) * 8 ? 8 : plen > i * 8 ? plen - (unsigned)i * 8 : 0;
        uint8_t mask = (uint8_t)(0xff00u >> keep);
        r->start[i] = addr[i] & mask;
        r->end[i] = (uint8_t)(addr[i] | (uint8_t)~mask);
    }
}

bool
vd_ip_range_clip(struct vd_ip_range *r, const struct vd_ip_range *with)
{
    size_t al = vd_ip_addr_len(r->ver);
    if (r->ver != with->ver || al == 0) {
        return false;
    }
    if (memcmp(with->start, r->start, al) > 0) {
        memcpy(r->start, with->start, al);
    }
    if (memcmp(with->end, r->end, al) < 0) {
        memcpy(r->end, with->end, al);
    }
    return memcmp(r->start, r->end, al) <= 0;
}

static int
range_cmp(const void *a, const void *b)
{
    const struct vd_ip_range *x = a, *y = b;
    if (x->ver != y->ver) {
        return x->ver < y->ver ? -1 : 1;
    }
    if (x->proto != y->proto) {
        return x->proto < y->proto ? -1 : 1;
    }
    return memcmp(x->start, y->start, 16);
}

/* @a + 1 == @b over @al bytes (big-endian), without overflow past the top address. */
static bool
adjacent(const uint8_t *a, const uint8_t *b, size_t al)
{
    uint8_t n[16];
    memcpy(n, a, al);
    size_t i = al;
    while (i-- > 0) {
        if (++n[i] != 0) {
            return memcmp(n, b, al) == 0;
        }
    }
    return false; /* @a is the top address */
}

size_t
vd_ip_ranges_normalize(struct vd_ip_range *r, size_t n)
{
    if (n == 0) {
        return 0;
    }
    qsort(r, n, sizeof(*r), range_cmp);
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        struct vd_ip_range *last = &r[k];
        size_t al = vd_ip_addr_len(last->ver);
        if (r[i].ver == last->ver && r[i].proto == last->proto &&
            (memcmp(r[i].start, last->end, al) <= 0 || adjacent(last->end, r[i].start, al))) {
            if (memcmp(r[i].end, last->end, al) > 0) {
                memcpy(last->end, r[i].end, al);
            }
            continue;
        }
        r[++k] = r[i];
    }
    return k + 1;
}

/* ---- forwarding checks (RFC 9484 §7.2) ------------------------------------------------------ */

static bool
is_icmp(const struct vd_ippkt *pk)
{
    return pk->proto == (pk->ver == 4 ? VD_IPPROTO_ICMP : VD_IPPROTO_ICMPV6);
}

/* 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255; fe80::/10, ff00::/8. */
static bool
link_scoped(uint8_t ver, const uint8_t *a)
{
    if (ver == 4) {
        return (a[0] == 169 && a[1] == 254) || (a[0] & 0xf0) == 224 ||
               (a[0] == 255 && a[1] == 255 && a[2] == 255 && a[3] == 255);
    }
    return (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || a[0] == 0xff;
}

static bool
in_addrs(const struct vd_ipscope *s, uint8_t ver, const uint8_t *a)
{
    for (size_t i = 0; i < s->naddrs; i++) {
        if (vd_ip_prefix_contains(&s->addrs[i], ver, a)) {
            return true;
        }
    }
    return false;
}

/* Whether @a is routed for @pk's protocol: OK, DST (no range holds it) or PROTO. */
static enum vd_ipcheck
routed(const struct vd_ipscope *s, const struct vd_ippkt *pk, const uint8_t *a)
{
    bool covered = false;
    for (size_t i = 0; i < s->nroutes; i++) {
        const struct vd_ip_range *r = &s->routes[i];
        if (!vd_ip_range_contains(r, pk->ver, a)) {
            continue;
        }
        /* §4.6, §4.7.3: protocol 0 is every protocol, and ICMP is always allowed. */
        if (r->proto == 0 || r->proto == pk->proto || is_icmp(pk)) {
            return VD_IPCHECK_OK;
        }
        covered = true;
    }
    return covered ? VD_IPCHECK_PROTO : VD_IPCHECK_DST;
}

enum vd_ipcheck
vd_ippkt_check_up(const struct vd_ippkt *pk, const struct vd_ipscope *s)
{
    if (!in_addrs(s, pk->ver, pk->src)) {
        return VD_IPCHECK_SRC;
    }
    if (link_scoped(pk->ver, pk->dst)) {
        return VD_IPCHECK_LINKLOCAL;
    }
    return routed(s, pk, pk->dst);
}

enum vd_ipcheck
vd_ippkt_check_down(const struct vd_ippkt *pk, const struct vd_ipscope *s)
{
    if (!in_addrs(s, pk->ver, pk->dst)) {
        return VD_IPCHECK_DST;
    }
    if (is_icmp(pk)) {
        return VD_IPCHECK_OK;
    }
    enum vd_ipcheck c = routed(s, pk, pk->src);
    return c == VD_IPCHECK_DST ? VD_IPCHECK_SRC : c;
}

const char *
vd_ipcheck_name(enum vd_ipcheck c)
{
    switch (c) {
    case VD_IPCHECK_OK:
        return "ok";
    case VD_IPCHECK_SRC:
        return "source";
    case VD_IPCHECK_DST:
        return "destination";
    case VD_IPCHECK_PROTO:
        return "protocol";
    case VD_IPCHECK_LINKLOCAL:
        return "link-local";
    }
    return "?";
}
