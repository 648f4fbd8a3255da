/* SPDX-License-Identifier: MIT */
/* Capsules (RFC 9297 §3.2) and QUIC variable-length integers (RFC 9000 §16). A varint's two
 * high bits give its length (1, 2, 4 or 8 bytes); the rest is the value, big-endian. */
#include "vd/config.h"

#include "vd/capsule.h"

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
