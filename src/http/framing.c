/* SPDX-License-Identifier: MIT */
/* Message body length (RFC 9112 §6.3) from Transfer-Encoding (RFC 9112 §6.1) and Content-Length
 * (RFC 9110 §8.6). Strict on purpose: every ambiguity that lets two parsers disagree on where a
 * message ends (request smuggling, response splitting) is an error, not a guess. */
#include "vd/config.h"

#include "vd/err.h"
#include "vd/http.h"

#define CL_MAX_DIGITS 18 /* below 2^63: no overflow check needed */

/* What the Transfer-Encoding fields say, all fields combined in order (RFC 9110 §5.3). */
struct te_info {
    size_t fields;  /* TE field lines */
    size_t chunked; /* "chunked" elements */
    size_t other;   /* other valid coding names (gzip, deflate, unknown tokens) */
    bool invalid;   /* an element that is not a bare token ("chunked;x", "a b", quoted) */
    bool empty;     /* a TE field line with no element at all */
    bool last_chunked;
};

static void
te_scan(const struct vd_hdr *h, size_t n, struct te_info *ti)
{
    *ti = (struct te_info){0};
    for (size_t i = 0; i < n; i++) {
        if (!vd_hdr_name_is(h[i].name, "transfer-encoding")) {
            continue;
        }
        ti->fields++;
        struct vd_iov rest = h[i].value, item;
        bool any = false;
        while (vd_list_next(&rest, &item)) {
            any = true;
            /* RFC 9112 §7: "chunked" takes no parameters; a coding with parameters is not
             * the chunked coding, and anything that is not a token is not a coding at all. */
            if (!vd_is_token(item)) {
                ti->invalid = true;
                ti->last_chunked = false;
            } else if (vd_hdr_name_is(item, "chunked")) {
                ti->chunked++;
                ti->last_chunked = true;
            } else {
                ti->other++;
                ti->last_chunked = false;
            }
        }
        if (!any) {
            ti->empty = true;
        }
    }
}

enum { CL_NONE, CL_OK, CL_BAD, CL_DIFFER };

/* RFC 9110 §8.6: Content-Length = 1*DIGIT. A list of identical values ("5, 5"), or several
 * fields with the same value, is that value; differing values are an error. Empty list
 * elements are refused too: they are never sent by a correct peer. */
static int
cl_scan(const struct vd_hdr *h, size_t n, uint64_t *len)
{
    int st = CL_NONE;
    for (size_t i = 0; i < n; i++) {
        if (!vd_hdr_name_is(h[i].name, "content-length")) {
            continue;
        }
        if (h[i].value.len == 0) {
            return CL_BAD;
        }
        const uint8_t *p = h[i].value.base, *e = p + h[i].value.len;
        for (;;) {
            while (p < e && (*p == ' ' || *p == '\t')) {
                p++;
            }
            const uint8_t *s = p;
            uint64_t v = 0;
            while (p < e && (vd_http_ctype[*p] & VD_CT_DIGIT)) {
                if (p - s == CL_MAX_DIGITS) {
                    return CL_BAD;
                }
                v = v * 10 + (uint64_t)(*p - '0');
                p++;
            }
            if (p == s) {
                return CL_BAD;
            }
            while (p < e && (*p == ' ' || *p == '\t')) {
                p++;
            }
            if (p < e && *p != ',') {
                return CL_BAD;
            }
            if (st == CL_OK && v != *len) {
                return CL_DIFFER;
            }
            st = CL_OK;
            *len = v;
            if (p == e) {
                break;
            }
            p++; /* ',' */
        }
    }
    return st;
}

int
vd_http_req_framing(const struct vd_hdr *h, size_t n, int minor, struct vd_framing *f,
                    const char **why)
{
    struct te_info ti;
    uint64_t len = 0;
    f->kind = VD_BODY_NONE;
    f->length = 0;
    te_scan(h, n, &ti);
    int cl = cl_scan(h, n, &len);
    if (ti.fields) {
        /* RFC 9112 §6.1: TE in an HTTP/1.0 request means faulty framing (a 1.0 hop that
         * forwards it would not dechunk it). */
        if (minor == 0) {
            *why = "Transfer-Encoding in HTTP/1.0 request";
            return VD_EBADREQ;
        }
        /* RFC 9112 §6.1/§6.3: TE and CL together is a smuggling attempt; refuse it. */
        if (cl != CL_NONE) {
            *why = "Transfer-Encoding with Content-Length";
            return VD_EBADREQ;
        }
        if (ti.empty) {
            *why = "empty Transfer-Encoding";
            return VD_EBADREQ;
        }
        if (ti.invalid) {
            *why = "invalid Transfer-Encoding";
            return VD_EBADREQ;
        }
        /* RFC 9112 §6.3 item 4: chunked not final in a request: 400 and close. */
        if (!ti.last_chunked) {
            *why = "chunked not final transfer coding";
            return VD_EBADREQ;
        }
        /* RFC 9112 §6.1: a sender MUST NOT apply chunked more than once. */
        if (ti.chunked > 1) {
            *why = "chunked applied more than once";
            return VD_EBADREQ;
        }
        /* RFC 9112 §6.1: a coding we do not implement gets 501. */
        if (ti.other) {
            *why = "unsupported transfer coding";
            return VD_ENOTIMPL;
        }
        f->kind = VD_BODY_CHUNKED;
        return 0;
    }
    if (cl == CL_BAD || cl == CL_DIFFER) {
        *why = cl == CL_BAD ? "invalid Content-Length" : "differing Content-Length values";
        return VD_EBADREQ;
    }
    if (cl == CL_OK) {
        f->kind = VD_BODY_LENGTH;
        f->length = len;
    }
    /* RFC 9112 §6.3 item 7: no TE and no CL in a request: no body. */
    return 0;
}

int
vd_http_resp_framing(const struct vd_hdr *h, size_t n, int status, bool head, bool connect,
                     struct vd_framing *f, const char **why)
{
    f->kind = VD_BODY_NONE;
    f->length = 0;
    /* RFC 9112 §6.3 item 1: HEAD, 1xx, 204 and 304 responses end at the head. */
    if (head || (status >= 100 && status < 200) || status == 204 || status == 304) {
        return 0;
    }
    /* RFC 9112 §6.3 item 2: a 2xx to CONNECT turns the connection into a tunnel. */
    if (connect && status >= 200 && status < 300) {
        return 0;
    }
    struct te_info ti;
    uint64_t len = 0;
    te_scan(h, n, &ti);
    int cl = cl_scan(h, n, &len);
    if (ti.fields) {
        if (cl != CL_NONE) {
            *why = "Transfer-Encoding with Content-Length";
            return VD_EBADRESP;
        }
        if (ti.last_chunked) {
            if (ti.chunked > 1) {
                *why = "chunked applied more than once";
                return VD_EBADRESP;
            }
            f->kind = VD_BODY_CHUNKED;
            return 0;
        }
        /* RFC 9112 §6.3 item 4: chunked not final in a response: read until close. */
        f->kind = VD_BODY_CLOSE;
        return 0;
    }
    if (cl == CL_BAD || cl == CL_DIFFER) {
        *why = cl == CL_BAD ? "invalid Content-Length" : "differing Content-Length values";
        return VD_EBADRESP;
    }
    if (cl == CL_OK) {
        f->kind = VD_BODY_LENGTH;
        f->length = len;
        return 0;
    }
    /* RFC 9112 §6.3 item 8: otherwise the body runs until the connection closes. */
    f->kind = VD_BODY_CLOSE;
    return 0;
}
