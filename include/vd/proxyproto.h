/* SPDX-License-Identifier: MIT */
/* The PROXY protocol header (versions 1 and 2, haproxy.org/download/2.9/doc/proxy-protocol.txt)
 * that a load balancer puts before a connection's first byte to pass on the client's address. */
#ifndef VD_PROXYPROTO_H
#define VD_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "vd/common.h"

#define VD_PROXYPROTO_MAX 4096 /* bytes of the longest header accepted (v2 with TLVs) */

struct vd_proxy_hdr {
    /* false: the sender proxies nothing here (v1 UNKNOWN, v2 LOCAL or an unspecified, UNIX or
     * UDP family): keep the connection's own addresses. */
    bool has_addr;
    uint8_t version; /* 1 or 2 */
    struct sockaddr_storage src, dst;
};

/* Parses the header at the start of @p (@n bytes read so far, possibly more to come). Returns
 * its length (> 0) when complete, VD_EAGAIN when the bytes are a valid beginning, or VD_EPROTO
 * with @why when they are not a PROXY header (or exceed VD_PROXYPROTO_MAX). Pure; never reads
 * past @n. */
VD_MUST_CHECK int vd_proxyproto_parse(const uint8_t *p, size_t n, struct vd_proxy_hdr *out,
                                      const char **why);

#endif
