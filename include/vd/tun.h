/* SPDX-License-Identifier: MIT */
/* Linux TUN devices for connect-ip (RFC 9484): open one, bring it up, route a client's address
 * through it (rtnetlink). A device lives as long as its file descriptor: closing it removes the
 * device and its routes, so nothing outlives a session, even a crash. Needs CAP_NET_ADMIN. */
#ifndef VD_TUN_H
#define VD_TUN_H

#include <stddef.h>
#include <stdint.h>

#define VD_TUN_NAME_MAX 16 /* IFNAMSIZ */

/* Opens a TUN device (IFF_TUN | IFF_NO_PI: reads and writes are bare IP packets), non-blocking
 * and close-on-exec, named @prefix followed by a number the kernel picks; sets its MTU to @mtu
 * and brings it up. Returns the fd (>= 0) with the name in @name (VD_TUN_NAME_MAX bytes) and
 * the interface index in *@ifindex, or -errno (the device is gone again on failure). */
int vd_tun_open(const char *prefix, uint32_t mtu, char *name, int *ifindex);

/* Adds a route to @addr/@plen (IP version @ver: 4 or 6, address as in struct vd_ip_prefix)
 * through interface @ifindex in the main table. Synchronous: one rtnetlink request and its
 * acknowledgement. Returns 0 or -errno (-EEXIST when that route is already there). */
int vd_tun_route_add(int ifindex, uint8_t ver, const uint8_t *addr, unsigned plen);

/* The address this host would use as its source towards @dst (IP version @ver: 4 or 6), as
 * the kernel's source selection picks it for the route to @dst (a connected UDP socket; no
 * packet is sent). Writes it to @out (4 or 16 bytes). Returns 0 or -errno (no such address,
 * no route). */
int vd_tun_source_addr(uint8_t ver, const uint8_t *dst, uint8_t *out);

#endif
