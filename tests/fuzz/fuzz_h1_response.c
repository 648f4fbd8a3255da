/* SPDX-License-Identifier: MIT */
/* Fuzz target: raw bytes as an HTTP/1 response (RFC 9112 §4-§7): the head, its framing
 * (§6.3), and when chunked, the body after the head decoded whole and again in small
 * pseudo-random pieces; both must agree. Views must stay inside the input. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "vd/buf.h"
#include "vd/err.h"
#include "vd/h1.h"

static bool
inside(struct vd_iov v, const uint8_t *data, size_t size)
{
    return v.len == 0 || (v.base >= data && v.len <= size && v.base + v.len <= data + size);
}

struct out {
    int rc;
    uint8_t *pay;
    size_t npay, consumed;
    struct vd_dbuf tr;
};

/* Feeds @body in pieces of 1..13 bytes chosen by @seed, or whole when @seed is 0. */
static void
dechunk(const uint8_t *body, size_t n, uint32_t seed, struct out *o)
{
    struct vd_chunked c;
    size_t off = 0;
    o->npay = 0;
    vd_dbuf_init(&o->tr, 1024);
    vd_chunked_init(&c, 64, 512, &o->tr);
    while (off < n && !c.done) {
        size_t plen = n - off;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            plen = VD_MIN(plen, 1 + (seed >> 16) % 13);
        }
        uint8_t *piece = malloc(plen);
        memcpy(piece, body + off, plen);
        size_t p = 0;
        while (p < plen && !c.done) {
            struct vd_iov d;
            const char *why = NULL;
            int r = vd_chunked_decode(&c, piece + p, plen - p, &d, &why);
            if (r < 0) {
                CHECK(why != NULL);
                o->rc = r;
                free(piece);
                return;
            }
            CHECK(r > 0 && (size_t)r <= plen - p);
            CHECK(d.len == 0 || (d.base >= piece + p && d.base + d.len <= piece + p + r));
            memcpy(o->pay + o->npay, d.base, d.len);
            o->npay += d.len;
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
    static struct vd_hdr hdrs[32];
    static const struct vd_h1_limits lim = {
        .max_request_line = 1024, .max_head = 8192, .max_headers = 32};
    struct vd_h1_resp_head resp = {.hdrs = hdrs};
    const char *why = NULL;
    int r = vd_h1_parse_response(data, size, &lim, &resp, &why);
    CHECK(r > 0 || r == VD_EAGAIN || ((r == VD_EBADRESP || r == VD_EHDRTOOBIG) && why));
    if (r <= 0) {
        return 0;
    }
    CHECK((size_t)r <= size && resp.status >= 100 && resp.status <= 999 && resp.minor <= 1);
    CHECK(inside(resp.reason, data, (size_t)r) && resp.nhdrs <= lim.max_headers);
    for (size_t i = 0; i < resp.nhdrs; i++) {
        CHECK(vd_is_token(resp.hdrs[i].name));
        CHECK(inside(resp.hdrs[i].name, data, (size_t)r));
        CHECK(inside(resp.hdrs[i].value, data, (size_t)r));
    }
    /* any proper prefix of an accepted head needs more input */
    struct vd_h1_resp_head again = {.hdrs = hdrs};
    CHECK(vd_h1_parse_response(data, (size_t)r - 1, &lim, &again, &why) == VD_EAGAIN);

    struct vd_framing f, fh, fc;
    int fr = vd_http_resp_framing(resp.hdrs, resp.nhdrs, resp.status, false, false, &f, &why);
    CHECK(fr == 0 || (fr == VD_EBADRESP && why));
    CHECK(vd_http_resp_framing(resp.hdrs, resp.nhdrs, resp.status, true, false, &fh, &why) == 0);
    CHECK(fh.kind == VD_BODY_NONE);
    int fcr = vd_http_resp_framing(resp.hdrs, resp.nhdrs, resp.status, false, true, &fc, &why);
    CHECK(fcr == 0 || fcr == VD_EBADRESP);
    if (fr < 0 || f.kind != VD_BODY_CHUNKED) {
        return 0;
    }
    const uint8_t *body = data + r;
    size_t n = size - (size_t)r;
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++) {
        seed = (seed ^ data[i]) * 16777619u;
    }
    struct out whole, split;
    whole.pay = malloc(n + 1);
    split.pay = malloc(n + 1);
    dechunk(body, n, 0, &whole);
    dechunk(body, n, seed | 1, &split);
    CHECK(whole.rc == split.rc);
    CHECK(whole.npay == split.npay && memcmp(whole.pay, split.pay, whole.npay) == 0);
    if (whole.rc == 0) {
        CHECK(whole.consumed == split.consumed && whole.consumed <= n);
        CHECK(whole.tr.len == split.tr.len &&
              (whole.tr.len == 0 || memcmp(whole.tr.p, split.tr.p, whole.tr.len) == 0));
    }
    vd_dbuf_free(&whole.tr);
    vd_dbuf_free(&split.tr);
    free(whole.pay);
    free(split.pay);
    return 0;
}
