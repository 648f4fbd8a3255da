/* SPDX-License-Identifier: MIT */
/* Fuzz target: raw bytes as a chunked body (RFC 9112 §7.1), decoded three ways: in one call
 * sequence over the whole input, one byte at a time, and in pseudo-random pieces derived from
 * the input. All three must agree on the verdict, the payload, the consumed count and the
 * trailers; views must stay inside the piece they were given. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "vd/buf.h"
#include "vd/err.h"
#include "vd/http.h"

struct out {
    int rc; /* 0 done, VD_EAGAIN not done, else the error */
    const char *why;
    uint8_t *pay;
    size_t npay, consumed;
    struct vd_dbuf tr;
};

/* Decodes @data in pieces whose sizes come from @seed (0: one piece; 1: one byte each). */
static void
decode(const uint8_t *data, size_t size, uint32_t seed, struct out *o)
{
    struct vd_chunked c;
    size_t off = 0;
    o->npay = 0;
    o->why = NULL;
    vd_dbuf_init(&o->tr, 300);
    vd_chunked_init(&c, 48, 200, &o->tr);
    while (off < size && !c.done) {
        size_t plen = size - off;
        if (seed == 1) {
            plen = 1;
        } else if (seed) {
            seed = seed * 1103515245u + 12345u;
            plen = VD_MIN(plen, 1 + (seed >> 16) % 17);
        }
        /* each piece in its own exact-size buffer so over-reads are caught */
        uint8_t *piece = malloc(plen);
        memcpy(piece, data + off, plen);
        size_t p = 0;
        while (p < plen && !c.done) {
            struct vd_iov d;
            const char *why = NULL;
            int r = vd_chunked_decode(&c, piece + p, plen - p, &d, &why);
            if (r < 0) {
                CHECK((r == VD_EBADREQ || r == VD_ETOOBIG) && why);
                o->rc = r;
                o->why = why;
                o->consumed = off + p;
                free(piece);
                return;
            }
            CHECK(r > 0 && (size_t)r <= plen - p);
            if (d.len) {
                CHECK(d.base >= piece + p && d.base + d.len <= piece + p + r);
                memcpy(o->pay + o->npay, d.base, d.len);
                o->npay += d.len;
            }
            p += (size_t)r;
        }
        off += p;
        free(piece);
    }
    o->rc = c.done ? 0 : VD_EAGAIN;
    o->consumed = off;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct out o[3];
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++) {
        seed = (seed ^ data[i]) * 16777619u;
    }
    seed |= 2; /* never 0 or 1 */
    uint32_t seeds[3] = {0, 1, seed};
    for (int k = 0; k < 3; k++) {
        o[k].pay = malloc(size + 1);
        decode(data, size, seeds[k], &o[k]);
    }
    for (int k = 1; k < 3; k++) {
        CHECK(o[k].rc == o[0].rc);
        CHECK(o[k].npay == o[0].npay && memcmp(o[k].pay, o[0].pay, o[0].npay) == 0);
        if (o[0].rc == 0) {
            CHECK(o[k].consumed == o[0].consumed);
            CHECK(o[k].tr.len == o[0].tr.len &&
                  (o[0].tr.len == 0 || memcmp(o[k].tr.p, o[0].tr.p, o[0].tr.len) == 0));
        } else if (o[0].rc != VD_EAGAIN) {
            CHECK(strcmp(o[k].why, o[0].why) == 0);
        }
    }
    if (o[0].rc == 0 && o[0].tr.len) {
        /* normalised trailers end in CRLF and have no bare CR/LF elsewhere */
        CHECK(o[0].tr.len >= 2 && memcmp(o[0].tr.p + o[0].tr.len - 2, "\r\n", 2) == 0);
    }
    for (int k = 0; k < 3; k++) {
        vd_dbuf_free(&o[k].tr);
        free(o[k].pay);
    }
    return 0;
}
