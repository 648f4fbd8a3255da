/* SPDX-License-Identifier: MIT */
/* connect-ip (RFC 9484): IP header parsing and the IPv6 extension walk (§4.8), prefixes and
 * ranges, the forwarding checks (§7.2), and the ADDRESS_ASSIGN / ADDRESS_REQUEST /
 * ROUTE_ADVERTISEMENT capsules (§4.7) including the examples of §8.1, and the ICMP errors of
 * §7.2.1 with their rate limit. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "vd/capsule.h"
#include "vd/err.h"
#include "vd/ippkt.h"
#include "vd_test.h"

static void
put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* An IPv4 packet of @len bytes (>= 28) from @src to @dst, protocol @proto, valid checksum. */
static size_t
v4pkt(uint8_t *p, size_t len, const char *src, const char *dst, uint8_t proto)
{
    memset(p, 0, len);
    p[0] = 0x45;
    put16(p + 2, (unsigned)len);
    p[8] = 64;
    p[9] = proto;
    assert_int_equal(inet_pton(AF_INET, src, p + 12), 1);
    assert_int_equal(inet_pton(AF_INET, dst, p + 16), 1);
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) {
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    put16(p + 10, ~sum & 0xffff);
    return len;
}

/* An IPv6 packet: header, then @ext (@extlen bytes, already chained), then @body bytes. */
static size_t
v6pkt(uint8_t *p, const char *src, const char *dst, uint8_t nh, const uint8_t *ext, size_t extlen,
      size_t body)
{
    memset(p, 0, 40 + extlen + body);
    p[0] = 0x60;
    put16(p + 4, (unsigned)(extlen + body));
    p[6] = nh;
    p[7] = 64;
    assert_int_equal(inet_pton(AF_INET6, src, p + 8), 1);
    assert_int_equal(inet_pton(AF_INET6, dst, p + 24), 1);
    if (extlen) {
        memcpy(p + 40, ext, extlen);
    }
    return 40 + extlen + body;
}

static void
test_parse_v4(void **state)
{
    (void)state;
    uint8_t p[64];
    struct vd_ippkt pk;
    const char *why = NULL;
    size_t n = v4pkt(p, 36, "198.18.0.2", "198.19.0.2", 1);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), 0);
    assert_int_equal(pk.ver, 4);
    assert_int_equal(pk.proto, 1);
    assert_int_equal(pk.ttl, 64);
    assert_false(pk.fragment);
    assert_memory_equal(pk.src, "\xc6\x12\x00\x02", 4);
    assert_memory_equal(pk.dst, "\xc6\x13\x00\x02", 4);
    /* Datagram longer or shorter than Total Length. */
    assert_int_equal(vd_ippkt_parse(p, n - 1, &pk, &why), VD_EPROTO);
    assert_string_equal(why, "IPv4 total length differs from the datagram");
    /* A flipped header bit breaks the checksum. */
    p[8] ^= 1;
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), VD_EPROTO);
    assert_string_equal(why, "bad IPv4 header checksum");
    /* IHL below 5 and beyond the packet. */
    v4pkt(p, 36, "198.18.0.2", "198.19.0.2", 1);
    p[0] = 0x44;
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), VD_EPROTO);
    p[0] = 0x4f;
    assert_int_equal(vd_ippkt_parse(p, 20, &pk, &why), VD_EPROTO);
    assert_int_equal(vd_ippkt_parse(p, 0, &pk, &why), VD_EPROTO);
    assert_int_equal(vd_ippkt_parse((const uint8_t *)"\x50", 1, &pk, &why), VD_EPROTO);
    assert_string_equal(why, "IP version is not 4 or 6");
    /* A later fragment (offset 8 bytes, field value 1). */
    v4pkt(p, 36, "198.18.0.2", "198.19.0.2", 17);
    p[7] = 1;
    p[10] = p[11] = 0; /* the checksum again, over the new offset */
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) {
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    put16(p + 10, ~sum & 0xffff);
    assert_int_equal(vd_ippkt_parse(p, 36, &pk, &why), 0);
    assert_true(pk.fragment);
    assert_int_equal(pk.proto, 17);
}

static void
test_parse_v6_extensions(void **state)
{
    (void)state;
    uint8_t p[256];
    struct vd_ippkt pk;
    const char *why = NULL;
    /* No extension: ICMPv6. */
    size_t n = v6pkt(p, "fd00::2", "fd01::2", 58, NULL, 0, 8);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), 0);
    assert_true(pk.ver == 6 && pk.proto == 58 && pk.ttl == 64 && !pk.fragment);
    assert_int_equal(pk.dst[15], 2);
    assert_int_equal(vd_ippkt_parse(p, n + 1, &pk, &why), VD_EPROTO);
    /* Hop-by-Hop (8 bytes) -> Destination Options (16 bytes) -> first Fragment -> UDP. */
    uint8_t ext[40] = {0};
    ext[0] = 60;
    ext[8] = 44;
    ext[9] = 1;
    ext[24] = 17; /* Fragment: offset 0, M set */
    ext[27] = 1;
    n = v6pkt(p, "fd00::2", "fd01::2", 0, ext, 32, 8);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), 0);
    assert_int_equal(pk.proto, 17);
    assert_false(pk.fragment);
    /* A later fragment: the protocol from the Fragment header, nothing after it. */
    uint8_t frag[8] = {6, 0, 0x00, 0x08, 0, 0, 0, 1};
    n = v6pkt(p, "fd00::2", "fd01::2", 44, frag, 8, 3);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), 0);
    assert_true(pk.fragment && pk.proto == 6);
    /* AH counts in 4-octet units: length 1 is (1 + 2) * 4 = 12 bytes. */
    uint8_t ah[12] = {17, 1};
    n = v6pkt(p, "fd00::2", "fd01::2", 51, ah, 12, 8);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), 0);
    assert_int_equal(pk.proto, 17);
    /* ESP ends the walk. */
    n = v6pkt(p, "fd00::2", "fd01::2", 50, NULL, 0, 16);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), 0);
    assert_int_equal(pk.proto, 50);
    /* An extension header longer than the packet. */
    uint8_t longh[8] = {17, 4};
    n = v6pkt(p, "fd00::2", "fd01::2", 60, longh, 8, 8);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), VD_EPROTO);
    assert_string_equal(why, "truncated IPv6 extension header");
    /* Nine Destination Options headers in a row. */
    uint8_t chain[72] = {0};
    for (int i = 0; i < 9; i++) {
        chain[i * 8] = i == 8 ? 17 : 60;
    }
    n = v6pkt(p, "fd00::2", "fd01::2", 60, chain, 72, 0);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), VD_EPROTO);
    assert_string_equal(why, "too many IPv6 extension headers");
    /* Jumbogram announcement (Payload Length 0 with a body). */
    n = v6pkt(p, "fd00::2", "fd01::2", 58, NULL, 0, 8);
    put16(p + 4, 0);
    assert_int_equal(vd_ippkt_parse(p, n, &pk, &why), VD_EPROTO);
}

static void
test_prefixes_and_ranges(void **state)
{
    (void)state;
    struct vd_ip_prefix pf = {.ver = 4, .plen = 15, .addr = {198, 18}};
    assert_true(vd_ip_prefix_contains(&pf, 4, (const uint8_t *)"\xc6\x13\xff\xff"));
    assert_false(vd_ip_prefix_contains(&pf, 4, (const uint8_t *)"\xc6\x14\x00\x00"));
    assert_false(vd_ip_prefix_contains(&pf, 6,
                                       (const uint8_t *)"\xc6\x12\0\0\0\0\0\0\0\0\0\0"
                                                        "\0\0\0\0"));
    struct vd_ip_range r, a;
    vd_ip_range_from_prefix(&r, 4, (const uint8_t *)"\xc6\x13\x07\x09", 20, 0);
    assert_memory_equal(r.start, "\xc6\x13\x00\x00", 4);
    assert_memory_equal(r.end, "\xc6\x13\x0f\xff", 4);
    vd_ip_range_from_prefix(&a, 4, (const uint8_t *)"\xc6\x13\x08\x00", 24, 0);
    assert_true(vd_ip_range_clip(&r, &a));
    assert_memory_equal(r.start, "\xc6\x13\x08\x00", 4);
    assert_memory_equal(r.end, "\xc6\x13\x08\xff", 4);
    vd_ip_range_from_prefix(&a, 4, (const uint8_t *)"\x0a\x00\x00\x00", 8, 0);
    assert_false(vd_ip_range_clip(&r, &a));
    /* Sorting and merging: overlapping and touching ranges of one protocol merge, others stay. */
    struct vd_ip_range list[5];
    uint8_t v6[16] = {0xfd};
    vd_ip_range_from_prefix(&list[0], 6, v6, 8, 0);
    vd_ip_range_from_prefix(&list[1], 4, (const uint8_t *)"\x0a\x00\x01\x00", 24, 0);
    vd_ip_range_from_prefix(&list[2], 4, (const uint8_t *)"\x0a\x00\x00\x00", 24, 0);
    vd_ip_range_from_prefix(&list[3], 4, (const uint8_t *)"\x0a\x00\x00\x80", 25, 0);
    vd_ip_range_from_prefix(&list[4], 4, (const uint8_t *)"\x0a\x00\x00\x00", 24, 17);
    size_t n = vd_ip_ranges_normalize(list, 5);
    assert_int_equal(n, 3);
    assert_int_equal(list[0].ver, 4);
    assert_int_equal(list[0].proto, 0);
    assert_memory_equal(list[0].start, "\x0a\x00\x00\x00", 4);
    assert_memory_equal(list[0].end, "\x0a\x00\x01\xff", 4);
    assert_int_equal(list[1].proto, 17);
    assert_int_equal(list[2].ver, 6);
    /* The whole IPv4 space next to itself does not wrap. */
    vd_ip_range_from_prefix(&list[0], 4, (const uint8_t *)"\0\0\0\0", 0, 0);
    list[1] = list[0];
    assert_int_equal(vd_ip_ranges_normalize(list, 2), 1);
    assert_memory_equal(list[0].end, "\xff\xff\xff\xff", 4);
}

static void
test_checks(void **state)
{
    (void)state;
    struct vd_ip_prefix addrs[2] = {{.ver = 4, .plen = 32, .addr = {198, 18, 0, 2}},
                                    {.ver = 6, .plen = 128, .addr = {0xfd, 0, [15] = 2}}};
    struct vd_ip_range routes[2];
    vd_ip_range_from_prefix(&routes[0], 4, (const uint8_t *)"\xc6\x13\x00\x00", 16, 17);
    uint8_t v6net[16] = {0xfd, 0x01};
    vd_ip_range_from_prefix(&routes[1], 6, v6net, 16, 0);
    struct vd_ipscope sc = {addrs, 2, routes, 2};
    uint8_t p[128];
    struct vd_ippkt pk;
    const char *why;

    /* UDP to a routed destination from the assigned address. */
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 28, "198.18.0.2", "198.19.0.2", 17), &pk, &why), 0);
    assert_int_equal(vd_ippkt_check_up(&pk, &sc), VD_IPCHECK_OK);
    /* A spoofed source. */
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 28, "198.18.0.3", "198.19.0.2", 17), &pk, &why), 0);
    assert_int_equal(vd_ippkt_check_up(&pk, &sc), VD_IPCHECK_SRC);
    /* TCP where only UDP is routed; ICMP always passes (RFC 9484 §4.6). */
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 40, "198.18.0.2", "198.19.0.2", 6), &pk, &why), 0);
    assert_int_equal(vd_ippkt_check_up(&pk, &sc), VD_IPCHECK_PROTO);
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 28, "198.18.0.2", "198.19.0.2", 1), &pk, &why), 0);
    assert_int_equal(vd_ippkt_check_up(&pk, &sc), VD_IPCHECK_OK);
    /* Outside every route; link-local and multicast never leave the link. */
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 28, "198.18.0.2", "203.0.113.1", 17), &pk, &why),
                     0);
    assert_int_equal(vd_ippkt_check_up(&pk, &sc), VD_IPCHECK_DST);
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 28, "198.18.0.2", "169.254.1.1", 17), &pk, &why),
                     0);
    assert_int_equal(vd_ippkt_check_up(&pk, &sc), VD_IPCHECK_LINKLOCAL);
    assert_int_equal(vd_ippkt_parse(p, v6pkt(p, "fd00::2", "ff02::1", 58, NULL, 0, 8), &pk, &why),
                     0);
    assert_int_equal(vd_ippkt_check_up(&pk, &sc), VD_IPCHECK_LINKLOCAL);
    assert_int_equal(vd_ippkt_parse(p, v6pkt(p, "fd00::2", "fd01::9", 6, NULL, 0, 20), &pk, &why),
                     0);
    assert_int_equal(vd_ippkt_check_up(&pk, &sc), VD_IPCHECK_OK);

    /* Towards the client: to the assigned address, from a routed source for its protocol. */
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 28, "198.19.0.2", "198.18.0.2", 17), &pk, &why), 0);
    assert_int_equal(vd_ippkt_check_down(&pk, &sc), VD_IPCHECK_OK);
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 28, "198.19.0.2", "198.18.0.9", 17), &pk, &why), 0);
    assert_int_equal(vd_ippkt_check_down(&pk, &sc), VD_IPCHECK_DST);
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 28, "203.0.113.1", "198.18.0.2", 17), &pk, &why),
                     0);
    assert_int_equal(vd_ippkt_check_down(&pk, &sc), VD_IPCHECK_SRC);
    /* An ICMP error from a router outside the routes still reaches the client (§7.2.1). */
    assert_int_equal(vd_ippkt_parse(p, v4pkt(p, 56, "203.0.113.1", "198.18.0.2", 1), &pk, &why), 0);
    assert_int_equal(vd_ippkt_check_down(&pk, &sc), VD_IPCHECK_OK);
    assert_string_equal(vd_ipcheck_name(VD_IPCHECK_PROTO), "protocol");
}

static void
test_address_capsules(void **state)
{
    (void)state;
    /* RFC 9484 Figure 15: ADDRESS_REQUEST (1, 4, 0.0.0.0, 32) and the ADDRESS_ASSIGN
     * (1, 4, 192.0.2.11, 32). */
    const uint8_t req[] = {0x02, 0x07, 0x01, 0x04, 0, 0, 0, 0, 32};
    struct vd_capsule_hdr h;
    assert_int_equal(vd_capsule_hdr_parse(req, sizeof(req), &h), 1);
    assert_true(h.type == VD_CAPSULE_ADDRESS_REQUEST && h.len == 7);
    struct vd_ip_prefix a[4];
    const char *why = NULL;
    assert_int_equal(vd_capsule_addresses_parse(h.type, req + 2, 7, a, 4, &why), 1);
    assert_true(a[0].req_id == 1 && a[0].ver == 4 && a[0].plen == 32);
    struct vd_ip_prefix asg[2] = {
        {.req_id = 1, .ver = 4, .plen = 32, .addr = {192, 0, 2, 11}},
        {.req_id = 0, .ver = 6, .plen = 64, .addr = {0x20, 0x01, 0x0d, 0xb8}}};
    uint8_t out[64];
    size_t n = vd_capsule_addresses_encode(out, sizeof(out), VD_CAPSULE_ADDRESS_ASSIGN, asg, 2);
    assert_int_equal(n, 2 + 7 + 19);
    assert_memory_equal(out, "\x01\x1a\x01\x04\xc0\x00\x02\x0b\x20", 9);
    assert_int_equal(vd_capsule_addresses_parse(out[0], out + 2, n - 2, a, 4, &why), 2);
    /* Field by field: the struct has padding, which neither side initialises the same way. */
    for (int i = 0; i < 2; i++) {
        assert_true(a[i].req_id == asg[i].req_id && a[i].ver == asg[i].ver &&
                    a[i].plen == asg[i].plen);
        assert_memory_equal(a[i].addr, asg[i].addr, sizeof(a[i].addr));
    }
    assert_int_equal(vd_capsule_addresses_encode(out, n - 1, VD_CAPSULE_ADDRESS_ASSIGN, asg, 2), 0);
    /* Too many for the caller's room. */
    assert_int_equal(vd_capsule_addresses_parse(out[0], out + 2, n - 2, a, 1, &why), VD_ETOOBIG);
    /* An empty list is well-formed (the caller decides what it means). */
    assert_int_equal(vd_capsule_addresses_parse(VD_CAPSULE_ADDRESS_ASSIGN, out, 0, a, 4, &why), 0);
    /* Malformed: Request ID 0 in a request, host bits, version, prefix length, truncation. */
    const uint8_t zero_id[] = {0x00, 0x04, 0, 0, 0, 0, 32};
    assert_int_equal(vd_capsule_addresses_parse(2, zero_id, 7, a, 4, &why), VD_EPROTO);
    assert_string_equal(why, "Request ID 0 in an ADDRESS_REQUEST");
    assert_int_equal(vd_capsule_addresses_parse(1, zero_id, 7, a, 4, &why), 1);
    const uint8_t hostbits[] = {0x00, 0x04, 10, 0, 0, 1, 24};
    assert_int_equal(vd_capsule_addresses_parse(1, hostbits, 7, a, 4, &why), VD_EPROTO);
    assert_string_equal(why, "address bits set past the prefix length");
    const uint8_t badver[] = {0x00, 0x05, 10, 0, 0, 1, 32};
    assert_int_equal(vd_capsule_addresses_parse(1, badver, 7, a, 4, &why), VD_EPROTO);
    const uint8_t longpfx[] = {0x00, 0x04, 10, 0, 0, 1, 33};
    assert_int_equal(vd_capsule_addresses_parse(1, longpfx, 7, a, 4, &why), VD_EPROTO);
    for (size_t k = 1; k < 7; k++) {
        assert_int_equal(vd_capsule_addresses_parse(1, zero_id, k, a, 4, &why), VD_EPROTO);
    }
}

static void
test_route_capsules(void **state)
{
    (void)state;
    /* RFC 9484 Figure 16: 192.0.2.0-192.0.2.41 and 192.0.2.43-192.0.2.255, any protocol. */
    struct vd_ip_range r[3] = {
        {.ver = 4, .proto = 0, .start = {192, 0, 2, 0}, .end = {192, 0, 2, 41}},
        {.ver = 4, .proto = 0, .start = {192, 0, 2, 43}, .end = {192, 0, 2, 255}},
    };
    uint8_t out[128];
    size_t n = vd_capsule_routes_encode(out, sizeof(out), r, 2);
    assert_int_equal(n, 2 + 2 * 10);
    assert_memory_equal(out, "\x03\x14\x04\xc0\x00\x02\x00\xc0\x00\x02\x29\x00\x04", 13);
    struct vd_ip_range back[4];
    const char *why = NULL;
    assert_int_equal(vd_capsule_routes_parse(out + 2, n - 2, back, 4, &why), 2);
    assert_memory_equal(back, r, 2 * sizeof(r[0]));
    /* Out of order (B before A). */
    struct vd_ip_range swapped[2] = {r[1], r[0]};
    n = vd_capsule_routes_encode(out, sizeof(out), swapped, 2);
    assert_int_equal(vd_capsule_routes_parse(out + 2, n - 2, back, 4, &why), VD_EPROTO);
    assert_string_equal(why, "ranges out of order or overlapping");
    /* Touching ends overlap: End of A must be strictly below Start of B. */
    struct vd_ip_range touch[2] = {r[0], r[1]};
    touch[1].start[3] = 41;
    n = vd_capsule_routes_encode(out, sizeof(out), touch, 2);
    assert_int_equal(vd_capsule_routes_parse(out + 2, n - 2, back, 4, &why), VD_EPROTO);
    /* A protocol-0 range overlapping a UDP range. */
    struct vd_ip_range mixed[2] = {r[0], r[0]};
    mixed[1].proto = 17;
    n = vd_capsule_routes_encode(out, sizeof(out), mixed, 2);
    assert_int_equal(vd_capsule_routes_parse(out + 2, n - 2, back, 4, &why), VD_EPROTO);
    assert_string_equal(why, "a protocol-0 range overlaps another protocol's range");
    /* Start after end; truncated; IPv4 before IPv6 is fine, IPv6 before IPv4 is not. */
    struct vd_ip_range inv = {.ver = 4, .start = {10, 0, 0, 2}, .end = {10, 0, 0, 1}};
    n = vd_capsule_routes_encode(out, sizeof(out), &inv, 1);
    assert_int_equal(vd_capsule_routes_parse(out + 2, n - 2, back, 4, &why), VD_EPROTO);
    struct vd_ip_range v64[2] = {{.ver = 6, .end = {0xff}}, r[0]};
    n = vd_capsule_routes_encode(out, sizeof(out), v64, 2);
    assert_int_equal(vd_capsule_routes_parse(out + 2, n - 2, back, 4, &why), VD_EPROTO);
    n = vd_capsule_routes_encode(out, sizeof(out), r, 1);
    assert_int_equal(vd_capsule_routes_parse(out + 2, n - 3, back, 4, &why), VD_EPROTO);
    assert_int_equal(vd_capsule_routes_parse(out + 2, n - 2, back, 0, &why), VD_ETOOBIG);
}

/* ---- ICMP errors (RFC 9484 §7.2.1) ---------------------------------------------------------- */

/* @hex (pairs of hex digits) into @out; returns the byte count. */
static size_t
unhex(uint8_t *out, const char *hex)
{
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        assert_int_equal(sscanf(hex, "%2x", &v), 1);
        out[n++] = (uint8_t)v;
    }
    return n;
}

/* RFC 1071, written apart from the code under test: the folded one's complement sum of @a and
 * then @b (each of even length but the last); a valid checksummed range sums to 0xffff. */
static unsigned
ones_sum(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    unsigned long sum = 0;
    for (size_t i = 0; i < alen; i += 2) {
        sum += (unsigned long)a[i] * 256 + a[i + 1];
    }
    for (size_t i = 0; i < blen; i++) {
        sum += i % 2 ? b[i] : (unsigned long)b[i] * 256;
    }
    while (sum > 0xffff) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return (unsigned)sum;
}

/* The ICMPv6 checksum of the packet @p (@len bytes): pseudo-header (RFC 8200 §8.1) + body. */
static unsigned
icmp6_sum(const uint8_t *p, size_t len)
{
    uint8_t ph[40];
    memcpy(ph, p + 8, 32);
    memset(ph + 32, 0, 8);
    ph[34] = (uint8_t)((len - 40) >> 8);
    ph[35] = (uint8_t)(len - 40);
    ph[39] = 58;
    return ones_sum(ph, 40, p + 40, len - 40);
}

static void
test_icmp_errors(void **state)
{
    (void)state;
    uint8_t in[2000], out[2000], src4[4], src6[16];
    struct vd_ippkt pk;
    const char *why = NULL;
    assert_int_equal(inet_pton(AF_INET, "198.19.0.1", src4), 1);
    assert_int_equal(inet_pton(AF_INET6, "fd01::1", src6), 1);

    /* An echo request 198.18.0.1 -> 203.0.113.7, refused: Destination Unreachable code 13
     * from 198.19.0.1, precedence 6, the whole packet quoted. */
    size_t len = unhex(in, "45000023123400004001668bc6120001cb007107"
                           "080036560077000176696164756374");
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    size_t n =
        vd_icmp_error_build(out, sizeof(out), VD_ICMP_ERR_PROHIBITED, 1500, src4, in, len, &pk);
    uint8_t want[128];
    size_t wl = unhex(want, "45c0003f000000004001edd6c6130001c6120001030dfcf200000000");
    assert_int_equal(n, wl + len);
    assert_memory_equal(out, want, wl);
    assert_memory_equal(out + wl, in, len);
    assert_int_equal(ones_sum(out, 20, NULL, 0), 0xffff);
    assert_int_equal(ones_sum(NULL, 0, out + 20, n - 20), 0xffff);
    /* The error parses, and is itself never answered. */
    struct vd_ippkt epk;
    assert_int_equal(vd_ippkt_parse(out, n, &epk, &why), 0);
    assert_int_equal(
        vd_icmp_error_build(in, sizeof(in), VD_ICMP_ERR_PROHIBITED, 1500, src4, out, n, &epk), 0);

    /* The same over IPv6, fd00:18::1 -> fd02::7: Destination Unreachable code 1 from fd01::1. */
    len = unhex(in, "60000000000f3a40fd000018000000000000000000000001fd02000000000000000000000000"
                    "00078000c3e70078000176696164756374");
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    n = vd_icmp_error_build(out, sizeof(out), VD_ICMP_ERR_PROHIBITED, 1500, src6, in, len, &pk);
    wl = unhex(want, "60000000003f3a40fd010000000000000000000000000001fd000018000000000000000000"
                     "00000101016a6200000000");
    assert_int_equal(n, wl + len);
    assert_memory_equal(out, want, wl);
    assert_memory_equal(out + wl, in, len);
    assert_int_equal(icmp6_sum(out, n), 0xffff);
    assert_int_equal(vd_ippkt_parse(out, n, &epk, &why), 0);
    assert_int_equal(
        vd_icmp_error_build(in, sizeof(in), VD_ICMP_ERR_TOO_BIG, 1280, src6, out, n, &epk), 0);

    /* Too big: 1400 bytes of UDP with DF over an MTU of 1280. Code 4 with the next-hop MTU,
     * truncated to 576 bytes in all (RFC 1812 §4.3.2.3). Without DF: no error. */
    len = v4pkt(in, 1400, "198.18.0.1", "198.19.0.2", 17);
    for (size_t i = 20; i < len; i++) {
        in[i] = (uint8_t)i;
    }
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    assert_int_equal(
        vd_icmp_error_build(out, sizeof(out), VD_ICMP_ERR_TOO_BIG, 1280, src4, in, len, &pk), 0);
    in[6] = 0x40; /* DF; the header checksum is not looked at again */
    n = vd_icmp_error_build(out, sizeof(out), VD_ICMP_ERR_TOO_BIG, 1280, src4, in, len, &pk);
    assert_int_equal(n, 576);
    assert_memory_equal(out + 2, "\x02\x40", 2);
    assert_memory_equal(out + 20, "\x03\x04", 2);
    assert_memory_equal(out + 24, "\x00\x00\x05\x00", 4);
    assert_memory_equal(out + 28, in, 548);
    assert_int_equal(ones_sum(out, 20, NULL, 0), 0xffff);
    assert_int_equal(ones_sum(NULL, 0, out + 20, n - 20), 0xffff);
    /* A small output buffer truncates further; one that cannot hold 8 bytes of data refuses. */
    assert_int_equal(vd_icmp_error_build(out, 101, VD_ICMP_ERR_TOO_BIG, 1280, src4, in, len, &pk),
                     101);
    assert_int_equal(ones_sum(NULL, 0, out + 20, 81), 0xffff);
    assert_int_equal(vd_icmp_error_build(out, 55, VD_ICMP_ERR_TOO_BIG, 1280, src4, in, len, &pk),
                     0);

    /* IPv6 Packet Too Big: 1500 bytes over 1280, truncated to 1280 (RFC 4443 §2.4 (c)). */
    len = v6pkt(in, "fd00:18::1", "fd01::2", 17, NULL, 0, 1460);
    for (size_t i = 40; i < len; i++) {
        in[i] = (uint8_t)(i * 7);
    }
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    n = vd_icmp_error_build(out, sizeof(out), VD_ICMP_ERR_TOO_BIG, 1280, src6, in, len, &pk);
    assert_int_equal(n, 1280);
    assert_memory_equal(out + 4, "\x04\xd8\x3a\x40", 4);
    assert_memory_equal(out + 40, "\x02\x00", 2);
    assert_memory_equal(out + 44, "\x00\x00\x05\x00", 4);
    assert_memory_equal(out + 48, in, 1232);
    assert_int_equal(icmp6_sum(out, n), 0xffff);
}

static void
test_icmp_not_sent(void **state)
{
    (void)state;
    uint8_t in[256], out[1280], src4[4] = {198, 19, 0, 1}, src6[16] = {0xfd, 0x01};
    struct vd_ippkt pk;
    const char *why = NULL;
    size_t len;

    /* About an ICMP error (IPv4 type 3), or an unknown ICMP type: never. An echo: yes. */
    len = v4pkt(in, 36, "198.18.0.1", "203.0.113.7", 1);
    in[20] = 3;
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    assert_false(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_PROHIBITED));
    in[20] = 77;
    assert_false(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_PROHIBITED));
    in[20] = 8;
    assert_true(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_PROHIBITED));
    /* A fragment other than the first. */
    len = v4pkt(in, 36, "198.18.0.1", "203.0.113.7", 17);
    in[7] = 0x10;
    in[10] = in[11] = 0;
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) {
        sum += (uint32_t)(in[i] << 8 | in[i + 1]);
    }
    put16(in + 10, ~(sum + (sum >> 16)) & 0xffff);
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    assert_true(pk.fragment);
    assert_int_equal(
        vd_icmp_error_build(out, sizeof(out), VD_ICMP_ERR_PROHIBITED, 1280, src4, in, len, &pk), 0);
    /* Sources that name no single host; multicast and broadcast destinations. */
    const char *bad4[][2] = {{"224.0.0.5", "203.0.113.7"},
                             {"0.0.0.0", "203.0.113.7"},
                             {"127.0.0.1", "203.0.113.7"},
                             {"198.18.0.1", "239.1.2.3"},
                             {"198.18.0.1", "255.255.255.255"}};
    for (size_t i = 0; i < VD_ARRAY_LEN(bad4); i++) {
        len = v4pkt(in, 36, bad4[i][0], bad4[i][1], 17);
        assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
        assert_false(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_PROHIBITED));
    }
    /* IPv6: an ICMPv6 error (type 1) behind a Destination Options header; the unspecified
     * and a multicast source; a multicast destination, where only Packet Too Big may answer. */
    const uint8_t dopt[8] = {58, 0, 1, 4, 0, 0, 0, 0};
    len = v6pkt(in, "fd00:18::1", "fd02::7", 60, dopt, 8, 16);
    in[48] = 1;
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    assert_int_equal(pk.l4, 48);
    assert_false(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_PROHIBITED));
    in[48] = 128;
    assert_true(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_PROHIBITED));
    const char *bad6[] = {"::", "ff02::1"};
    for (size_t i = 0; i < VD_ARRAY_LEN(bad6); i++) {
        len = v6pkt(in, bad6[i], "fd02::7", 17, NULL, 0, 16);
        assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
        assert_false(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_TOO_BIG));
    }
    len = v6pkt(in, "fd00:18::1", "ff0e::1", 17, NULL, 0, 16);
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    assert_false(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_PROHIBITED));
    assert_int_equal(
        vd_icmp_error_build(out, sizeof(out), VD_ICMP_ERR_TOO_BIG, 1280, src6, in, len, &pk), 104);
    /* A non-first IPv6 fragment. */
    const uint8_t frag[8] = {17, 0, 0x00, 0x08, 0, 0, 0, 1};
    len = v6pkt(in, "fd00:18::1", "fd02::7", 44, frag, 8, 16);
    assert_int_equal(vd_ippkt_parse(in, len, &pk, &why), 0);
    assert_false(vd_icmp_error_allowed(in, len, &pk, VD_ICMP_ERR_TOO_BIG));
}

static void
test_icmp_bucket(void **state)
{
    (void)state;
    struct vd_icmp_bucket b;
    vd_icmp_bucket_init(&b, 3, 1000);
    for (int i = 0; i < 3; i++) {
        assert_true(vd_icmp_bucket_take(&b, 10, 3, 1000));
    }
    assert_false(vd_icmp_bucket_take(&b, 10, 3, 1000));
    assert_false(vd_icmp_bucket_take(&b, 10, 3, 1099)); /* 0.99 of a message at 10/s */
    assert_true(vd_icmp_bucket_take(&b, 10, 3, 1100));
    assert_false(vd_icmp_bucket_take(&b, 10, 3, 1100));
    /* A long pause refills up to the burst only; a clock that goes back adds nothing. */
    assert_true(vd_icmp_bucket_take(&b, 10, 3, UINT64_C(1) << 50));
    assert_true(vd_icmp_bucket_take(&b, 10, 3, 5));
    assert_true(vd_icmp_bucket_take(&b, 10, 3, 5));
    assert_false(vd_icmp_bucket_take(&b, 10, 3, 5));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_v4),
        cmocka_unit_test(test_parse_v6_extensions),
        cmocka_unit_test(test_prefixes_and_ranges),
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_address_capsules),
        cmocka_unit_test(test_route_capsules),
        cmocka_unit_test(test_icmp_errors),
        cmocka_unit_test(test_icmp_not_sent),
        cmocka_unit_test(test_icmp_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
