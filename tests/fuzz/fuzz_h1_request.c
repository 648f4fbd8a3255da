/* SPDX-License-Identifier: MIT */
/* Fuzz target: raw bytes as an HTTP/1 request head (RFC 9112 §2-§5), then everything the front
 * end does with a parsed head: request framing, URI/authority parsing, list iteration. Checks
 * invariants as well as memory safety: views stay inside the input, every proper prefix of an
 * accepted head is "need more input", and every error carries a reason. */
#include "vd/config.h"

#include <stdlib.h>

#include "fuzz.h"
#include "vd/err.h"
#include "vd/h1.h"

static bool
inside(struct vd_iov v, const uint8_t *data, size_t size)
{
    return v.len == 0 || (v.base >= data && v.len <= size && v.base + v.len <= data + size);
}

static int
parse(const uint8_t *data, size_t size, const struct vd_h1_limits *lim, struct vd_h1_req_head *req)
{
    const char *why = NULL;
    int r = vd_h1_parse_request(data, size, lim, req, &why);
    CHECK(r == VD_EAGAIN || r > 0 || why != NULL);
    CHECK(r > 0 || r == VD_EAGAIN || r == VD_EBADREQ || r == VD_EURITOOLONG || r == VD_EHDRTOOBIG);
    return r;
}

static void
use_head(const uint8_t *data, size_t size, int r, const struct vd_h1_req_head *req,
         const struct vd_h1_limits *lim)
{
    const char *why = NULL;
    CHECK((size_t)r <= size);
    CHECK(req->nhdrs <= lim->max_headers);
    CHECK(req->minor <= 1);
    CHECK(vd_is_token(req->method));
    CHECK(inside(req->method, data, (size_t)r) && inside(req->target, data, (size_t)r));
    for (size_t i = 0; i < req->nhdrs; i++) {
        const struct vd_hdr *h = &req->hdrs[i];
        CHECK(vd_is_token(h->name));
        CHECK(inside(h->name, data, (size_t)r) && inside(h->value, data, (size_t)r));
        struct vd_iov rest = h->value, item;
        while (vd_list_next(&rest, &item)) {
            CHECK(item.len > 0 && inside(item, data, (size_t)r));
        }
    }
    struct vd_framing f;
    int fr = vd_http_req_framing(req->hdrs, req->nhdrs, req->minor, &f, &why);
    CHECK(fr == 0 || ((fr == VD_EBADREQ || fr == VD_ENOTIMPL) && why));
    const struct vd_hdr *host = vd_hdr_find(req->hdrs, req->nhdrs, "host");
    if (host) {
        struct vd_iov hv;
        uint16_t port;
        bool v6;
        if (vd_uri_parse_authority(host->value.base, host->value.len, &hv, &port, &v6, &why) == 0) {
            CHECK(hv.len > 0 && inside(hv, data, (size_t)r));
        }
    }
    if (req->form == VD_TARGET_ABSOLUTE) {
        struct vd_uri u;
        if (vd_uri_parse_absolute(req->target.base, req->target.len, &u, &why) == 0) {
            CHECK(u.host.len > 0 && inside(u.host, data, (size_t)r));
            /* "http://h?q" has an empty path: the query is the path view and the front puts
             * "/" before it (RFC 9112 §3.2.1). */
            CHECK(u.path.len > 0 && (u.path.base[0] == '/' || u.path.base[0] == '?'));
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct vd_hdr hdrs[64];
    static const struct vd_h1_limits lims[] = {
        {.max_request_line = 8192, .max_head = 65536, .max_headers = 64},
        {.max_request_line = 40, .max_head = 128, .max_headers = 4},
    };
    for (size_t l = 0; l < VD_ARRAY_LEN(lims); l++) {
        struct vd_h1_req_head req = {.hdrs = hdrs};
        int r = parse(data, size, &lims[l], &req);
        if (r <= 0) {
            continue;
        }
        use_head(data, size, r, &req, &lims[l]);
        /* The parser is stateless: any proper prefix of an accepted head needs more input. */
        struct vd_h1_req_head again = {.hdrs = hdrs};
        CHECK(parse(data, (size_t)r - 1, &lims[l], &again) == VD_EAGAIN);
        CHECK(parse(data, (size_t)r / 2, &lims[l], &again) == VD_EAGAIN);
        /* ... and bytes after it do not change the verdict. */
        CHECK(parse(data, (size_t)r, &lims[l], &again) == r);
    }
    return 0;
}
