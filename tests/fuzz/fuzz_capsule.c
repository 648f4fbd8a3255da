/* SPDX-License-Identifier: MIT */
/* Fuzz target: raw bytes as a capsule stream (RFC 9297 §3.2). Walks capsule headers as the
 * connect-udp relay does (skipping values), checks every varint decodes to a value that
 * re-encodes to at most the bytes it came from and decodes back to itself, and that a header
 * parsed from a prefix of the input is the one parsed from the whole input. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "vd/capsule.h"

static void
check_varint(const uint8_t *p, size_t len)
{
    uint64_t v;
    size_t n = vd_varint_decode(p, len, &v);
    if (n == 0) {
        CHECK(len < 8);
        return;
    }
    CHECK(n == 1 || n == 2 || n == 4 || n == 8);
    CHECK(v <= VD_VARINT_MAX);
    uint8_t enc[8];
    size_t m = vd_varint_encode(enc, v);
    CHECK(m == vd_varint_len(v) && m <= n);
    uint64_t back;
    CHECK(vd_varint_decode(enc, m, &back) == m && back == v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        check_varint(data + off, size - off);
        struct vd_capsule_hdr h, hp;
        if (!vd_capsule_hdr_parse(data + off, size - off, &h)) {
            break;
        }
        CHECK(h.hdr_len >= 2 && h.hdr_len <= 16 && h.hdr_len <= size - off);
        /* The same header from exactly its own bytes. */
        CHECK(vd_capsule_hdr_parse(data + off, h.hdr_len, &hp) == 1);
        CHECK(hp.type == h.type && hp.len == h.len && hp.hdr_len == h.hdr_len);
        /* One byte short is never a header. */
        CHECK(vd_capsule_hdr_parse(data + off, h.hdr_len - 1, &hp) == 0);
        if (h.len > size - off - h.hdr_len) {
            break;
        }
        if (h.type == VD_CAPSULE_DATAGRAM && h.len > 0) {
            check_varint(data + off + h.hdr_len, (size_t)h.len);
        }
        off += h.hdr_len + (size_t)h.len;
    }
    /* The DATAGRAM header writer round-trips. */
    uint8_t hdr[24];
    size_t pl = size * 977 % 70000;
    size_t hl = vd_capsule_datagram_hdr(hdr, pl);
    struct vd_capsule_hdr d;
    CHECK(vd_capsule_hdr_parse(hdr, hl, &d) == 1);
    CHECK(d.type == VD_CAPSULE_DATAGRAM && d.len == pl + 1 && d.hdr_len + 1 == hl &&
          hdr[hl - 1] == 0);
    return 0;
}
