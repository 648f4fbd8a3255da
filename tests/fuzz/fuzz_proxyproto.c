/* SPDX-License-Identifier: MIT */
/* Fuzz target: the PROXY protocol header parser. A complete header is never longer than the
 * input or VD_PROXYPROTO_MAX, parses the same from exactly its own bytes, and every shorter
 * prefix of it asks for more; an address it reports has the family of its version's syntax;
 * a refusal always says why. */
#include "vd/config.h"

#include <netinet/in.h>
#include <string.h>

#include "fuzz.h"
#include "vd/err.h"
#include "vd/proxyproto.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vd_proxy_hdr h, h2;
    const char *why;
    int r = vd_proxyproto_parse(data, size, &h, &why);
    if (r == VD_EAGAIN) {
        CHECK(size < VD_PROXYPROTO_MAX + 16);
        return 0;
    }
    if (r < 0) {
        CHECK(r == VD_EPROTO && why != NULL);
        return 0;
    }
    CHECK((size_t)r <= size && r <= VD_PROXYPROTO_MAX && r >= 8);
    CHECK(h.version == 1 || h.version == 2);
    if (h.has_addr) {
        CHECK(h.src.ss_family == AF_INET || h.src.ss_family == AF_INET6);
        CHECK(h.src.ss_family == h.dst.ss_family);
    }
    CHECK(vd_proxyproto_parse(data, (size_t)r, &h2, &why) == r);
    CHECK(h2.has_addr == h.has_addr && h2.version == h.version);
    CHECK(!h.has_addr || memcmp(&h.src, &h2.src, sizeof(h.src)) == 0);
    for (size_t i = 0; i < (size_t)r; i++) {
        CHECK(vd_proxyproto_parse(data, i, &h2, &why) == VD_EAGAIN);
    }
    return 0;
}
