/* SPDX-License-Identifier: MIT */
/* Fuzz target: connect-ip (RFC 9484). The input is read three ways: as an IP packet (parse,
 * then both forwarding checks against a scope built from the input, whose verdicts must agree
 * with the prefixes and ranges they rest on, then the ICMP errors about it, which must parse,
 * go back to its source, carry valid checksums and never be answered themselves), as the value of
 * an ADDRESS_ASSIGN / ADDRESS_REQUEST capsule, and as a ROUTE_ADVERTISEMENT value. Whatever parses
 * must re-encode to something that parses back to the same entries, and a route list, once
 * normalized, must still be valid. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "vd/capsule.h"
#include "vd/err.h"
#include "vd/ippkt.h"

#define N_MAX 64

/* RFC 1071 sum of @n bytes from @p, added to @sum and folded: 0xffff over a valid range. */
static unsigned
csum(unsigned long sum, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sum += i % 2 ? p[i] : (unsigned long)p[i] << 8;
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return (unsigned)sum;
}

static void
fuzz_icmp(const uint8_t *data, size_t size, const struct vd_ippkt *pk)
{
    static uint8_t out[VD_ICMP6_ERR_MAX], again[VD_ICMP6_ERR_MAX];
    uint8_t src[16] = {198, 19, 0, 1};
    if (pk->ver == 6) {
        memcpy(src, "\xfd\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    }
    size_t al = vd_ip_addr_len(pk->ver);
    for (int e = VD_ICMP_ERR_PROHIBITED; e <= VD_ICMP_ERR_TOO_BIG; e++) {
        /* The output room also comes from the input, to reach the truncation paths. */
        size_t cap = size > 3 ? 40 + data[size - 3] * 8u : sizeof(out);
        if (cap > sizeof(out)) {
            cap = sizeof(out);
        }
        size_t n = vd_icmp_error_build(out, cap, (enum vd_icmp_err)e, 1280, src, data, size, pk);
        CHECK((n > 0) == (vd_icmp_error_allowed(data, size, pk, (enum vd_icmp_err)e) &&
                          cap >= (pk->ver == 4 ? 28u : 48u) + (size < 28 ? size : 28)));
        if (n == 0) {
            continue;
        }
        CHECK(n <= cap && n <= (pk->ver == 4 ? VD_ICMP4_ERR_MAX : VD_ICMP6_ERR_MAX));
        struct vd_ippkt epk;
        const char *why = NULL;
        CHECK(vd_ippkt_parse(out, n, &epk, &why) == 0);
        CHECK(epk.ver == pk->ver && !epk.fragment);
        CHECK(memcmp(epk.dst, pk->src, al) == 0 && memcmp(epk.src, src, al) == 0);
        size_t hl = pk->ver == 4 ? 20 : 40;
        CHECK(memcmp(out + hl + 8, data, n - hl - 8) == 0);
        if (pk->ver == 4) {
            CHECK(epk.proto == VD_IPPROTO_ICMP && csum(0, out + 20, n - 20) == 0xffff);
        } else {
            unsigned long ph = csum(0, out + 8, 32); /* RFC 8200 §8.1 pseudo-header */
            CHECK(epk.proto == VD_IPPROTO_ICMPV6 &&
                  csum(ph + (n - 40) + 58, out + 40, n - 40) == 0xffff);
        }
        /* An ICMP error is never answered with another. */
        CHECK(vd_icmp_error_build(again, sizeof(again), VD_ICMP_ERR_TOO_BIG, 1280, src, out, n,
                                  &epk) == 0);
        CHECK(!vd_icmp_error_allowed(out, n, &epk, VD_ICMP_ERR_PROHIBITED));
    }
}

static void
fuzz_packet(const uint8_t *data, size_t size)
{
    struct vd_ippkt pk;
    const char *why = NULL;
    if (vd_ippkt_parse(data, size, &pk, &why) < 0) {
        CHECK(why != NULL);
        return;
    }
    CHECK(pk.ver == 4 || pk.ver == 6);
    size_t al = vd_ip_addr_len(pk.ver);
    /* A scope from the packet itself: its source as the assigned prefix with a length taken
     * from the input, and a route around its destination, so every branch is reachable. */
    unsigned plen = size > 1 ? data[size - 1] % (al * 8 + 1) : al * 8;
    struct vd_ip_prefix pf = {.ver = pk.ver, .plen = (uint8_t)plen};
    struct vd_ip_range tmp;
    vd_ip_range_from_prefix(&tmp, pk.ver, pk.src, plen, 0);
    memcpy(pf.addr, tmp.start, al);
    struct vd_ip_range rt;
    uint8_t proto = size > 2 ? data[size - 2] % 3 == 0 ? 0 : pk.proto ^ (data[size - 2] & 1) : 0;
    vd_ip_range_from_prefix(&rt, pk.ver, pk.dst, plen, proto);
    struct vd_ipscope sc = {&pf, 1, &rt, 1};
    CHECK(vd_ip_prefix_contains(&pf, pk.ver, pk.src));
    CHECK(vd_ip_range_contains(&rt, pk.ver, pk.dst));
    enum vd_ipcheck up = vd_ippkt_check_up(&pk, &sc);
    CHECK(up != VD_IPCHECK_SRC && up != VD_IPCHECK_DST);
    if (up == VD_IPCHECK_PROTO) {
        CHECK(rt.proto != 0 && rt.proto != pk.proto);
    }
    /* An empty scope refuses everything, in both directions. */
    struct vd_ipscope none = {NULL, 0, NULL, 0};
    CHECK(vd_ippkt_check_up(&pk, &none) == VD_IPCHECK_SRC);
    CHECK(vd_ippkt_check_down(&pk, &none) == VD_IPCHECK_DST);
    (void)vd_ippkt_check_down(&pk, &sc);
    CHECK(strlen(vd_ipcheck_name(up)) > 0);
    fuzz_icmp(data, size, &pk);
}

static void
fuzz_addresses(uint64_t type, const uint8_t *data, size_t size)
{
    struct vd_ip_prefix a[N_MAX], b[N_MAX];
    const char *why = NULL;
    int n = vd_capsule_addresses_parse(type, data, size, a, N_MAX, &why);
    if (n < 0) {
        CHECK((n == VD_EPROTO || n == VD_ETOOBIG) && why);
        return;
    }
    static uint8_t out[N_MAX * 26 + 16];
    size_t len = vd_capsule_addresses_encode(out, sizeof(out), type, a, (size_t)n);
    CHECK(len > 0);
    struct vd_capsule_hdr h;
    CHECK(vd_capsule_hdr_parse(out, len, &h) == 1 && h.type == type);
    CHECK(h.hdr_len + h.len == len && h.len <= size);
    CHECK(vd_capsule_addresses_parse(type, out + h.hdr_len, h.len, b, N_MAX, &why) == n);
    CHECK(n == 0 || memcmp(a, b, (size_t)n * sizeof(a[0])) == 0);
    for (int i = 0; i < n; i++) {
        CHECK(vd_ip_prefix_contains(&a[i], a[i].ver, a[i].addr));
    }
}

static void
fuzz_routes(const uint8_t *data, size_t size)
{
    struct vd_ip_range r[N_MAX], b[N_MAX];
    const char *why = NULL;
    int n = vd_capsule_routes_parse(data, size, r, N_MAX, &why);
    if (n < 0) {
        CHECK((n == VD_EPROTO || n == VD_ETOOBIG) && why);
        return;
    }
    static uint8_t out[N_MAX * 34 + 16];
    size_t len = vd_capsule_routes_encode(out, sizeof(out), r, (size_t)n);
    CHECK(len > 0);
    struct vd_capsule_hdr h;
    CHECK(vd_capsule_hdr_parse(out, len, &h) == 1 && h.len == size);
    CHECK(memcmp(out + h.hdr_len, data, size) == 0); /* the encoding is canonical */
    for (int i = 0; i < n; i++) {
        CHECK(vd_ip_range_contains(&r[i], r[i].ver, r[i].start));
        CHECK(vd_ip_range_contains(&r[i], r[i].ver, r[i].end));
    }
    /* Normalizing a valid list merges only touching ranges; the result is still valid. */
    size_t m = vd_ip_ranges_normalize(r, (size_t)n);
    CHECK(m <= (size_t)n);
    len = vd_capsule_routes_encode(out, sizeof(out), r, m);
    CHECK(vd_capsule_hdr_parse(out, len, &h) == 1);
    CHECK(vd_capsule_routes_parse(out + h.hdr_len, h.len, b, N_MAX, &why) == (int)m);
    /* Clipping every range by the first one keeps each result inside both. */
    for (size_t i = 0; i < m; i++) {
        struct vd_ip_range c = r[i];
        if (vd_ip_range_clip(&c, &r[0])) {
            CHECK(vd_ip_range_contains(&r[i], c.ver, c.start) &&
                  vd_ip_range_contains(&r[0], c.ver, c.end));
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_packet(data, size);
    fuzz_addresses(VD_CAPSULE_ADDRESS_ASSIGN, data, size);
    fuzz_addresses(VD_CAPSULE_ADDRESS_REQUEST, data, size);
    fuzz_routes(data, size);
    return 0;
}
