/* SPDX-License-Identifier: MIT */
/* The Capsule Protocol (RFC 9297 §3.2) and the QUIC variable-length integers it is built from
 * (RFC 9000 §16): pure encode/decode over bytes, fuzzed (tests/fuzz/fuzz_capsule.c). */
#ifndef VD_CAPSULE_H
#define VD_CAPSULE_H

#include <stddef.h>
#include <stdint.h>

#define VD_VARINT_MAX ((1ull << 62) - 1)

#define VD_CAPSULE_DATAGRAM 0x00 /* RFC 9297 §3.5: HTTP Datagram: context ID, then payload */

/* Decodes one varint at @p. Returns the bytes it took (1, 2, 4 or 8), or 0 when @len is too
 * short. Any value is well-formed (RFC 9000 §16 allows non-minimal encodings). */
size_t vd_varint_decode(const uint8_t *p, size_t len, uint64_t *v);

/* Bytes the shortest encoding of @v takes (1, 2, 4, 8); 0 when @v > VD_VARINT_MAX. */
size_t vd_varint_len(uint64_t v);

/* Writes the shortest encoding of @v (<= VD_VARINT_MAX) at @p (8 bytes of room); returns its
 * length. */
size_t vd_varint_encode(uint8_t *p, uint64_t v);

/* A capsule header: Capsule Type and Capsule Length (RFC 9297 §3.2). */
struct vd_capsule_hdr {
    uint64_t type;
    uint64_t len;   /* bytes of value that follow the header */
    size_t hdr_len; /* bytes the two varints took */
};

/* Parses a capsule header at @p. Returns 1 with @h filled, 0 when more bytes are needed. */
int vd_capsule_hdr_parse(const uint8_t *p, size_t len, struct vd_capsule_hdr *h);

/* Writes the header of a DATAGRAM capsule with context ID 0 carrying @payload_len bytes into
 * @out (at least 17 bytes); returns its length. The payload follows it on the wire. */
size_t vd_capsule_datagram_hdr(uint8_t *out, size_t payload_len);

#endif
