/* SPDX-License-Identifier: MIT */
/* The Capsule Protocol (RFC 9297 §3.2) and the QUIC variable-length integers it is built from
 * (RFC 9000 §16), and the connect-ip capsules (RFC 9484 §4.7): pure encode/decode over bytes,
 * fuzzed (tests/fuzz/fuzz_capsule.c, tests/fuzz/fuzz_ippkt.c). */
#ifndef VD_CAPSULE_H
#define VD_CAPSULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VD_VARINT_MAX ((1ull << 62) - 1)

#define VD_CAPSULE_DATAGRAM            0x00 /* RFC 9297 §3.5: context ID, then payload */
#define VD_CAPSULE_ADDRESS_ASSIGN      0x01 /* RFC 9484 §4.7.1 */
#define VD_CAPSULE_ADDRESS_REQUEST     0x02 /* RFC 9484 §4.7.2 */
#define VD_CAPSULE_ROUTE_ADVERTISEMENT 0x03 /* RFC 9484 §4.7.3 */

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

/* An Assigned Address (RFC 9484 §4.7.1) or a Requested Address (§4.7.2): also used for any
 * IP prefix. IPv4 addresses take the first 4 bytes of @addr, the rest are 0. */
struct vd_ip_prefix {
    uint64_t req_id;  /* Request ID; 0 in an unprompted assignment */
    uint8_t ver;      /* 4 or 6 */
    uint8_t plen;     /* prefix length in bits, <= 32 or 128 */
    uint8_t addr[16]; /* bits past @plen are 0 */
};

/* An IP Address Range of a ROUTE_ADVERTISEMENT (RFC 9484 §4.7.3), both ends inclusive. */
struct vd_ip_range {
    uint8_t ver;   /* 4 or 6 */
    uint8_t proto; /* IP protocol number; 0: every protocol */
    uint8_t start[16], end[16];
};

/* Bytes an address of IP version @ver takes (4 or 16; 0 for another version). */
size_t vd_ip_addr_len(uint8_t ver);

/* Parses the value (@len bytes after the capsule header) of an ADDRESS_ASSIGN or
 * ADDRESS_REQUEST capsule (@type) into @out (room for @max entries). Returns the number of
 * entries, VD_EPROTO when a field is malformed (version not 4 or 6, prefix longer than the
 * address, bits set past the prefix, a zero Request ID in a request, a truncated entry), or
 * VD_ETOOBIG past @max entries; @why says which. Zero entries is well-formed here. */
int vd_capsule_addresses_parse(uint64_t type, const uint8_t *p, size_t len,
                               struct vd_ip_prefix *out, size_t max, const char **why);

/* Parses a ROUTE_ADVERTISEMENT value into @out (room for @max). Returns the number of ranges,
 * VD_EPROTO when a field is malformed or the ranges break the order of RFC 9484 §4.7.3 (version,
 * then protocol, then strictly increasing and disjoint; a protocol-0 range may not overlap
 * another protocol's range of the same version), VD_ETOOBIG past @max; @why says which. */
int vd_capsule_routes_parse(const uint8_t *p, size_t len, struct vd_ip_range *out, size_t max,
                            const char **why);

/* Writes a whole ADDRESS_ASSIGN or ADDRESS_REQUEST capsule (@type) holding @n entries into @out
 * (capacity @cap). Returns its length, or 0 when it does not fit. Entries are written as given. */
size_t vd_capsule_addresses_encode(uint8_t *out, size_t cap, uint64_t type,
                                   const struct vd_ip_prefix *a, size_t n);

/* Writes a whole ROUTE_ADVERTISEMENT capsule holding @n ranges (given in the order of RFC 9484
 * §4.7.3) into @out (capacity @cap). Returns its length, or 0 when it does not fit. */
size_t vd_capsule_routes_encode(uint8_t *out, size_t cap, const struct vd_ip_range *r, size_t n);

#endif
