/* SPDX-License-Identifier: MIT */
/* IP packets inside connect-ip (RFC 9484): IPv4 (RFC 791) and IPv6 (RFC 8200) header parsing,
 * the IPv6 extension-header walk of RFC 9484 §4.8, prefix and range arithmetic for the
 * addresses and routes of §4.7, and the forwarding checks of §7.2 made before a packet leaves
 * the tunnel either way. Pure functions over bytes, fuzzed (tests/fuzz/fuzz_ippkt.c). */
#ifndef VD_IPPKT_H
#define VD_IPPKT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vd/capsule.h"

#define VD_IPPROTO_ICMP   1
#define VD_IPPROTO_ICMPV6 58
#define VD_IPV6_EXT_MAX   8 /* extension headers walked before a packet counts as malformed */

/* What the checks need from one packet. */
struct vd_ippkt {
    uint8_t ver;   /* 4 or 6 */
    uint8_t proto; /* IPv4 Protocol, or the first IPv6 Next Header that is not an extension
                    * header (RFC 9484 §4.8); ESP (50) ends the walk, being opaque */
    uint8_t ttl;   /* TTL or Hop Limit */
    bool fragment; /* a fragment other than the first: @proto comes from its Fragment header */
    uint16_t l4;   /* offset of the upper-layer header (IPv4 header length, or past the IPv6
                    * extension headers); meaningless for a fragment other than the first */
    uint8_t src[16], dst[16]; /* IPv4 in the first 4 bytes, the rest 0 */
};

/* Parses the IP header at @p, which must be exactly one whole packet of @len bytes (IPv4 Total
 * Length, or 40 + IPv6 Payload Length, equal to @len). Checks the IPv4 header checksum and walks
 * at most VD_IPV6_EXT_MAX IPv6 extension headers. Returns 0 with @pk filled, or VD_EPROTO with
 * @why set. Never reads past @len. */
int vd_ippkt_parse(const uint8_t *p, size_t len, struct vd_ippkt *pk, const char **why);

/* True when address @addr of version @ver lies inside prefix @pf (versions must match). */
bool vd_ip_prefix_contains(const struct vd_ip_prefix *pf, uint8_t ver, const uint8_t *addr);

/* True when address @addr of version @ver lies inside range @r (versions must match). */
bool vd_ip_range_contains(const struct vd_ip_range *r, uint8_t ver, const uint8_t *addr);

/* Fills @r with the addresses of prefix @addr/@plen (version @ver, @plen within its bits; bits
 * past it are ignored) for protocol @proto. */
void vd_ip_range_from_prefix(struct vd_ip_range *r, uint8_t ver, const uint8_t *addr, unsigned plen,
                             uint8_t proto);

/* Narrows @r to its intersection with @with (same version, else empty). Returns false when the
 * intersection is empty (@r is then unspecified). The protocol of @r is kept. */
bool vd_ip_range_clip(struct vd_ip_range *r, const struct vd_ip_range *with);

/* Sorts @r (@n entries) into the order of RFC 9484 §4.7.3 (version, protocol, start) and merges
 * ranges of one version and protocol that overlap or touch. Returns the new count (<= @n). */
size_t vd_ip_ranges_normalize(struct vd_ip_range *r, size_t n);

/* The outcome of a forwarding check; every value but OK means "drop and count". */
enum vd_ipcheck {
    VD_IPCHECK_OK,
    VD_IPCHECK_SRC,       /* source outside what the sender may use */
    VD_IPCHECK_DST,       /* destination outside what the receiver may be sent */
    VD_IPCHECK_PROTO,     /* destination routed, but not for this protocol */
    VD_IPCHECK_LINKLOCAL, /* link-local or multicast destination: never leaves the link */
};

/* What one connect-ip session may carry: the prefixes assigned to the client (ADDRESS_ASSIGN)
 * and the ranges advertised to it (ROUTE_ADVERTISEMENT). Borrowed arrays. */
struct vd_ipscope {
    const struct vd_ip_prefix *addrs;
    size_t naddrs;
    const struct vd_ip_range *routes;
    size_t nroutes;
};

/* Client to target (RFC 9484 §7.2, §4.7): the source must lie in an assigned prefix; the
 * destination in an advertised range whose protocol is 0 or the packet's (ICMP always passes,
 * §4.6); never link-local or multicast (§7.2). */
enum vd_ipcheck vd_ippkt_check_up(const struct vd_ippkt *pk, const struct vd_ipscope *s);

/* Target to client: the destination must lie in an assigned prefix and the source in an
 * advertised range for the packet's protocol; ICMP may come from anywhere, since routers on
 * the way report errors from their own addresses (§7.2.1). */
enum vd_ipcheck vd_ippkt_check_down(const struct vd_ippkt *pk, const struct vd_ipscope *s);

/* A short name for @c ("ok", "source", "destination", "protocol", "link-local"). */
const char *vd_ipcheck_name(enum vd_ipcheck c);

/* ---- ICMP errors for refused packets (RFC 9484 §7.2.1; src/tunnel/icmp.c) ---- */

/* The errors an IP proxying endpoint sends back for a packet it does not forward. */
enum vd_icmp_err {
    /* IPv4 Destination Unreachable code 13, communication administratively prohibited
     * (RFC 1812 §5.2.7.1); ICMPv6 Destination Unreachable code 1 (RFC 4443 §3.1). */
    VD_ICMP_ERR_PROHIBITED,
    /* IPv4 Destination Unreachable code 4, fragmentation needed and DF set, with the next-hop
     * MTU (RFC 1191 §4); ICMPv6 Packet Too Big with the MTU (RFC 4443 §3.2). */
    VD_ICMP_ERR_TOO_BIG,
};

#define VD_ICMP4_ERR_MAX 576  /* RFC 1812 §4.3.2.3: an ICMP error fits in 576 bytes */
#define VD_ICMP6_ERR_MAX 1280 /* RFC 4443 §2.4 (c): within the minimum IPv6 MTU */

/* Whether the ICMP rules allow error @e about the packet @p (@len bytes, parsed into @pk):
 * never about an ICMP error or an unknown ICMP type, a fragment other than the first, a source
 * that names no single host (unspecified, loopback, multicast, IPv4 broadcast and class E), a
 * multicast or broadcast destination (RFC 1812 §4.3.2.7, RFC 4443 §2.4 (e); an ICMPv6 Packet
 * Too Big may answer a multicast destination), nor a fragmentation-needed error about an IPv4
 * packet without DF. */
bool vd_icmp_error_allowed(const uint8_t *p, size_t len, const struct vd_ippkt *pk,
                           enum vd_icmp_err e);

/* Builds into @out (capacity @cap) the whole IP packet carrying ICMP error @e about the packet
 * @p (@len bytes, parsed into @pk): from @src (an address of @pk's version) to the packet's
 * source, TTL/Hop Limit 64, the MTU @mtu in a too-big error, checksums filled (ICMPv6 over its
 * pseudo-header), quoting as much of @p as fits in VD_ICMP4_ERR_MAX or VD_ICMP6_ERR_MAX bytes
 * (and @cap). Returns its length, or 0 when vd_icmp_error_allowed() says no or @cap cannot hold
 * the headers and 8 bytes of @p. */
size_t vd_icmp_error_build(uint8_t *out, size_t cap, enum vd_icmp_err e, uint32_t mtu,
                           const uint8_t *src, const uint8_t *p, size_t len,
                           const struct vd_ippkt *pk);

/* A token bucket for ICMP errors (RFC 4443 §2.4 (f), RFC 1812 §4.3.2.8): @rate messages a
 * second, at most @burst at once. Credit in thousandths of a message. */
struct vd_icmp_bucket {
    uint64_t credit;  /* 1000 per message */
    uint64_t last_ms; /* clock of the last refill, ms */
};

/* Starts @b full (@burst messages) at time @now_ms. */
void vd_icmp_bucket_init(struct vd_icmp_bucket *b, uint32_t burst, uint64_t now_ms);

/* Refills @b for the time since its last refill (@now_ms, a monotonic clock in ms) and takes
 * one message. Returns false when no whole message is left (nothing is taken). */
bool vd_icmp_bucket_take(struct vd_icmp_bucket *b, uint32_t rate, uint32_t burst, uint64_t now_ms);

#endif
