/* SPDX-License-Identifier: MIT */
/* ICMP errors an IP proxying endpoint sends for the packets it refuses (RFC 9484 §7.2.1):
 * Destination Unreachable and fragmentation needed for IPv4 (RFC 792, RFC 1191 §4, RFC 1812
 * §4.3.2), Destination Unreachable and Packet Too Big for IPv6 (RFC 4443 §2.4, §3.1, §3.2), the
 * rules on when not to send one, and the token bucket that limits them. Pure functions. */
#include "vd/config.h"

#include <string.h>

#include "vd/ippkt.h"

#define ICMP4_HDR 8 /* type, code, checksum, 4 bytes of unused or MTU */

static void
put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* RFC 1071: the one's complement sum of @len bytes (an odd last byte padded with 0) added to
 * @sum, not yet folded. */
static uint32_t
sum16(uint32_t sum, const uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 1 < len; i += 2) {
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    }
    if (i < len) {
        sum += (uint32_t)p[i] << 8;
    }
    return sum;
}

static uint16_t
fold(uint32_t sum)
{
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return (uint16_t)~sum;
}

/* Query and informational ICMP types (RFC 792, RFC 950, RFC 1256, RFC 8335); every other type
 * counts as an error, about which no error is sent (RFC 1812 §4.3.2.7). */
static bool
icmp4_informational(uint8_t type)
{
    return type == 0 || type == 8 || type == 9 || type == 10 || type == 13 || type == 14 ||
           type == 15 || type == 16 || type == 17 || type == 18 || type == 42 || type == 43;
}

/* RFC 1812 §4.3.2.7, §5.3.7: 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4 and 240.0.0.0/4 (with the
 * limited broadcast) name no single host. */
static bool
v4_src_bad(const uint8_t *a)
{
    return a[0] == 0 || a[0] == 127 || a[0] >= 224;
}

/* RFC 4443 §2.4 (e): the unspecified, loopback and multicast addresses. */
static bool
v6_src_bad(const uint8_t *a)
{
    static const uint8_t zero[15];
    return a[0] == 0xff || (memcmp(a, zero, 15) == 0 && (a[15] == 0 || a[15] == 1));
}

bool
vd_icmp_error_allowed(const uint8_t *p, size_t len, const struct vd_ippkt *pk, enum vd_icmp_err e)
{
    if (pk->fragment) {
        return false; /* RFC 1812 §4.3.2.7; for IPv6 the upper-layer header is elsewhere */
    }
    if (pk->ver == 4) {
        if (v4_src_bad(pk->src) || pk->dst[0] >= 224) {
            return false; /* multicast, class E and limited broadcast destinations too */
        }
        if (e == VD_ICMP_ERR_TOO_BIG && (len < 7 || !(p[6] & 0x40))) {
            return false; /* code 4 is for packets with DF set */
        }
        if (pk->proto == VD_IPPROTO_ICMP && (pk->l4 >= len || !icmp4_informational(p[pk->l4]))) {
            return false;
        }
        return true;
    }
    if (pk->ver != 6 || v6_src_bad(pk->src)) {
        return false;
    }
    /* RFC 4443 §2.4 (e.2): Packet Too Big may answer a packet sent to a multicast address. */
    if (pk->dst[0] == 0xff && e != VD_ICMP_ERR_TOO_BIG) {
        return false;
    }
    /* RFC 4443 §2.4 (e.1): types below 128 are errors. */
    return pk->proto != VD_IPPROTO_ICMPV6 || (pk->l4 < len && p[pk->l4] >= 128);
}

size_t
vd_icmp_error_build(uint8_t *out, size_t cap, enum vd_icmp_err e, uint32_t mtu, const uint8_t *src,
                    const uint8_t *p, size_t len, const struct vd_ippkt *pk)
{
    if (!vd_icmp_error_allowed(p, len, pk, e)) {
        return 0;
    }
    bool v4 = pk->ver == 4;
    size_t hl = v4 ? 20 + ICMP4_HDR : 40 + ICMP4_HDR;
    size_t max = v4 ? VD_ICMP4_ERR_MAX : VD_ICMP6_ERR_MAX;
    if (cap < max) {
        max = cap;
    }
    /* RFC 792 asks for the IP header and 8 bytes of data at least. */
    if (max < hl + (len < 28 ? len : 28)) {
        return 0;
    }
    size_t quote = len < max - hl ? len : max - hl;
    size_t total = hl + quote;
    memset(out, 0, hl);
    uint8_t *icmp;
    if (v4) {
        out[0] = 0x45;
        out[1] = 0xc0; /* RFC 1812 §4.3.2.5: precedence 6, internetwork control */
        put16(out + 2, (uint32_t)total);
        out[8] = 64;
        out[9] = VD_IPPROTO_ICMP;
        memcpy(out + 12, src, 4);
        memcpy(out + 16, pk->src, 4);
        put16(out + 10, fold(sum16(0, out, 20)));
        icmp = out + 20;
        icmp[0] = 3;
        if (e == VD_ICMP_ERR_TOO_BIG) {
            icmp[1] = 4;
            put16(icmp + 6, mtu > 0xffff ? 0xffff : mtu); /* RFC 1191 §4: next-hop MTU */
        } else {
            icmp[1] = 13;
        }
    } else {
        out[0] = 0x60;
        put16(out + 4, (uint32_t)(total - 40));
        out[6] = VD_IPPROTO_ICMPV6;
        out[7] = 64;
        memcpy(out + 8, src, 16);
        memcpy(out + 24, pk->src, 16);
        icmp = out + 40;
        if (e == VD_ICMP_ERR_TOO_BIG) {
            icmp[0] = 2;
            put16(icmp + 4, mtu >> 16);
            put16(icmp + 6, mtu & 0xffff);
        } else {
            icmp[0] = 1;
            icmp[1] = 1;
        }
    }
    memcpy(icmp + ICMP4_HDR, p, quote);
    size_t ilen = ICMP4_HDR + quote;
    uint32_t sum = 0;
    if (!v4) {
        /* RFC 8200 §8.1: source, destination, upper-layer length, next header. */
        uint8_t ph[8] = {0};
        ph[2] = (uint8_t)(ilen >> 8);
        ph[3] = (uint8_t)ilen;
        ph[7] = VD_IPPROTO_ICMPV6;
        sum = sum16(sum16(sum16(0, out + 8, 16), out + 24, 16), ph, 8);
    }
    put16(icmp + 2, fold(sum16(sum, icmp, ilen)));
    return total;
}

void
vd_icmp_bucket_init(struct vd_icmp_bucket *b, uint32_t burst, uint64_t now_ms)
{
    b->credit = (uint64_t)burst * 1000;
    b->last_ms = now_ms;
}

bool
vd_icmp_bucket_take(struct vd_icmp_bucket *b, uint32_t rate, uint32_t burst, uint64_t now_ms)
{
    uint64_t cap = (uint64_t)burst * 1000;
    if (now_ms > b->last_ms) {
        uint64_t dt = now_ms - b->last_ms;
        if (dt > cap) {
            dt = cap; /* enough to fill the bucket at 1 message a second, and no overflow */
        }
        b->credit += dt * rate;
        if (b->credit > cap) {
            b->credit = cap;
        }
        b->last_ms = now_ms;
    }
    if (b->credit < 1000) {
        return false;
    }
    b->credit -= 1000;
    return true;
}
