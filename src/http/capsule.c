/* SPDX-License-Identifier: MIT */
/* Capsules (RFC 9297 §3.2) and QUIC variable-length integers (RFC 9000 §16). A varint's two
 * high bits give its length (1, 2, 4 or 8 bytes); the rest is the value, big-endian. The
 * connect-ip capsules (RFC 9484 §4.7) carry lists of prefixes and of address ranges. */
#include "vd/config.h"

#include <string.h>

#include "vd/capsule.h"
#include "vd/err.h"

size_t
vd_varint_decode(const uint8_t *p, size_t len, uint64_t *v)
{
    if (len == 0) {
        return 0;
    }
    size_t n = (size_t)1 << (p[0] >> 6);
    if (len < n) {
        return 0;
    }
    uint64_t x = p[0] & 0x3f;
    for (size_t i = 1; i < n; i++) {
        x = x << 8 | p[i];
    }
    *v = x;
    return n;
}

size_t
vd_varint_len(uint64_t v)
{
    if (v < (1u << 6)) {
        return 1;
    }
    if (v < (1u << 14)) {
        return 2;
    }
    if (v < (1ul << 30)) {
        return 4;
    }
    return v <= VD_VARINT_MAX ? 8 : 0;
}

size_t
vd_varint_encode(uint8_t *p, uint64_t v)
{
    size_t n = vd_varint_len(v);
    static const uint8_t prefix[9] = {[1] = 0x00, [2] = 0x40, [4] = 0x80, [8] = 0xc0};
    for (size_t i = n; i-- > 0;) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
    p[0] |= prefix[n];
    return n;
}

int
vd_capsule_hdr_parse(const uint8_t *p, size_t len, struct vd_capsule_hdr *h)
{
    size_t a = vd_varint_decode(p, len, &h->type);
    if (a == 0) {
        return 0;
    }
    size_t b = vd_varint_decode(p + a, len - a, &h->len);
    if (b == 0) {
        return 0;
    }
    h->hdr_len = a + b;
    return 1;
}

size_t
vd_capsule_datagram_hdr(uint8_t *out, size_t payload_len)
{
    size_t n = vd_varint_encode(out, VD_CAPSULE_DATAGRAM);
    n += vd_varint_encode(out + n, (uint64_t)payload_len + 1); /* + the context ID byte */
    out[n++] = 0;                                              /* context ID 0: UDP payload */
    return n;
}

/* ---- connect-ip capsules (RFC 9484 §4.7) ---------------------------------------------------- */

size_t
vd_ip_addr_len(uint8_t ver)
{
    return ver == 4 ? 4 : ver == 6 ? 16 : 0;
}

/* True when the bits of @a (@alen bytes) past the first @plen are all 0. */
static bool
host_bits_zero(const uint8_t *a, size_t alen, unsigned plen)
{
    for (size_t i = plen / 8; i < alen; i++) {
        unsigned keep = i == plen / 8 ? plen % 8 : 0;
        uint8_t mask = (uint8_t)(0xffu >> keep);
        if (a[i] & mask) {
            return false;
        }
    }
    return true;
}

int
vd_capsule_addresses_parse(uint64_t type, const uint8_t *p, size_t len, struct vd_ip_prefix *out,
                           size_t max, const char **why)
{
    size_t off = 0;
    int n = 0;
    while (off < len) {
        struct vd_ip_prefix a = {0};
        size_t k = vd_varint_decode(p + off, len - off, &a.req_id);
        if (k == 0 || off + k >= len) {
            *why = "truncated address entry";
            return VD_EPROTO;
        }
        off += k;
        a.ver = p[off++];
        size_t al = vd_ip_addr_len(a.ver);
        if (al == 0) {
            *why = "IP version is not 4 or 6";
            return VD_EPROTO;
        }
        if (len - off < al + 1) {
            *why = "truncated address entry";
            return VD_EPROTO;
        }
        memcpy(a.addr, p + off, al);
        off += al;
        a.plen = p[off++];
        if (a.plen > al * 8) {
            *why = "prefix length longer than the address";
            return VD_EPROTO;
        }
        /* §4.7.1, §4.7.2: the bits past the prefix MUST be 0. */
        if (!host_bits_zero(a.addr, al, a.plen)) {
            *why = "address bits set past the prefix length";
            return VD_EPROTO;
        }
        /* §4.7.2: Request IDs MUST NOT be zero. */
        if (type == VD_CAPSULE_ADDRESS_REQUEST && a.req_id == 0) {
            *why = "Request ID 0 in an ADDRESS_REQUEST";
            return VD_EPROTO;
        }
        if ((size_t)n >= max) {
            *why = "too many addresses";
            return VD_ETOOBIG;
        }
        out[n++] = a;
    }
    return n;
}

static bool
ranges_overlap(const struct vd_ip_range *a, const struct vd_ip_range *b)
{
    size_t al = vd_ip_addr_len(a->ver);
    return a->ver == b->ver && memcmp(a->start, b->end, al) <= 0 &&
           memcmp(b->start, a->end, al) <= 0;
}

int
vd_capsule_routes_parse(const uint8_t *p, size_t len, struct vd_ip_range *out, size_t max,
                        const char **why)
{
    size_t off = 0;
    int n = 0;
    while (off < len) {
        struct vd_ip_range r = {0};
        r.ver = p[off++];
        size_t al = vd_ip_addr_len(r.ver);
        if (al == 0) {
            *why = "IP version is not 4 or 6";
            return VD_EPROTO;
        }
        if (len - off < 2 * al + 1) {
            *why = "truncated address range";
            return VD_EPROTO;
        }
        memcpy(r.start, p + off, al);
        memcpy(r.end, p + off + al, al);
        off += 2 * al;
        r.proto = p[off++];
        if (memcmp(r.start, r.end, al) > 0) {
            *why = "range start after its end";
            return VD_EPROTO;
        }
        if (n > 0) {
            /* §4.7.3: ordered by version, then protocol, then disjoint increasing ranges. */
            const struct vd_ip_range *a = &out[n - 1];
            if (a->ver > r.ver || (a->ver == r.ver && a->proto > r.proto) ||
                (a->ver == r.ver && a->proto == r.proto && memcmp(a->end, r.start, al) >= 0)) {
                *why = "ranges out of order or overlapping";
                return VD_EPROTO;
            }
        }
        /* §4.7.3: a protocol-0 range overlapping another protocol's range is a violation that
         * a receiver may check; the lists are bounded, so check it. */
        for (int i = 0; i < n; i++) {
            if ((out[i].proto == 0) != (r.proto == 0) && ranges_overlap(&out[i], &r)) {
                *why = "a protocol-0 range overlaps another protocol's range";
                return VD_EPROTO;
            }
        }
        if ((size_t)n >= max) {
            *why = "too many ranges";
            return VD_ETOOBIG;
        }
        out[n++] = r;
    }
    return n;
}

/* Writes the capsule header for a value of @vlen bytes; returns its length or 0 without room. */
static size_t
put_hdr(uint8_t *out, size_t cap, uint64_t type, size_t vlen)
{
    uint8_t h[16];
    size_t hl = vd_varint_encode(h, type);
    hl += vd_varint_encode(h + hl, vlen);
    if (hl + vlen > cap) {
        return 0;
    }
    memcpy(out, h, hl);
    return hl;
}

size_t
vd_capsule_addresses_encode(uint8_t *out, size_t cap, uint64_t type, const struct vd_ip_prefix *a,
                            size_t n)
{
    size_t vlen = 0;
    for (size_t i = 0; i < n; i++) {
        vlen += vd_varint_len(a[i].req_id) + 2 + vd_ip_addr_len(a[i].ver);
    }
    size_t off = put_hdr(out, cap, type, vlen);
    if (off == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        size_t al = vd_ip_addr_len(a[i].ver);
        off += vd_varint_encode(out + off, a[i].req_id);
        out[off++] = a[i].ver;
        memcpy(out + off, a[i].addr, al);
        off += al;
        out[off++] = a[i].plen;
    }
    return off;
}

size_t
vd_capsule_routes_encode(uint8_t *out, size_t cap, const struct vd_ip_range *r, size_t n)
{
    size_t vlen = 0;
    for (size_t i = 0; i < n; i++) {
        vlen += 2 + 2 * vd_ip_addr_len(r[i].ver);
    }
    size_t off = put_hdr(out, cap, VD_CAPSULE_ROUTE_ADVERTISEMENT, vlen);
    if (off == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        size_t al = vd_ip_addr_len(r[i].ver);
        out[off++] = r[i].ver;
        memcpy(out + off, r[i].start, al);
        memcpy(out + off + al, r[i].end, al);
        off += 2 * al;
        out[off++] = r[i].proto;
    }
    return off;
}
