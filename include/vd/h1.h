/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 head parser (RFC 9112 §2-§5), strict: CRLF only (bare LF rejected), token method
 * and field names, no whitespace before the colon, no obs-fold, no NUL/CR/LF in values. */
#ifndef VD_H1_H
#define VD_H1_H

#include "vd/http.h"

struct vd_h1_limits {
    size_t max_request_line; /* bytes, excluding CRLF; over it: VD_EURITOOLONG (414) */
    size_t max_head;         /* bytes of the whole head incl. request line; VD_EHDRTOOBIG (431) */
    size_t max_headers;      /* field lines; over it: VD_EHDRTOOBIG (431) */
};

struct vd_h1_req_head {
    struct vd_iov method; /* a token */
    struct vd_iov target; /* the request-target as received */
    enum vd_target_form form;
    uint8_t minor;       /* HTTP/1.minor; 0 or 1 */
    struct vd_hdr *hdrs; /* caller's array */
    size_t nhdrs;
    struct vd_uri uri; /* an absolute-form http(s) target as parsed (has_uri), views into it */
    bool has_uri;
};

struct vd_h1_resp_head {
    uint8_t minor;
    int status;           /* 100..999 (3 digits) */
    struct vd_iov reason; /* may be empty */
    struct vd_hdr *hdrs;  /* caller's array */
    size_t nhdrs;
};

/* Parses one request head from @buf[0..@len). Up to one leading empty line (CRLF) is skipped
 * (RFC 9112 §2.2). @req->hdrs must point to an array of @lim->max_headers entries; views borrow
 * from @buf. The form is derived from the target: "*" only with OPTIONS, authority-form only
 * with CONNECT (and CONNECT only with authority-form), absolute-form when it starts with a
 * scheme, origin-form when it starts with '/'; anything else is VD_EBADREQ. Only HTTP/1.0 and
 * HTTP/1.1 are accepted (HTTP/2.0 or other: VD_EBADREQ with why "unsupported HTTP version").
 * Returns the head's length including the final CRLF CRLF (>0), VD_EAGAIN when more input is
 * needed (and the limits are not yet exceeded), or VD_EBADREQ / VD_EURITOOLONG / VD_EHDRTOOBIG
 * with @why set to a short lowercase phrase for the log and the error body. */
VD_MUST_CHECK int vd_h1_parse_request(const uint8_t *buf, size_t len,
                                      const struct vd_h1_limits *lim, struct vd_h1_req_head *req,
                                      const char **why);

/* Parses one response head; same rules, VD_EBADRESP for syntax errors, VD_EHDRTOOBIG for limits
 * (max_request_line applies to the status line). */
VD_MUST_CHECK int vd_h1_parse_response(const uint8_t *buf, size_t len,
                                       const struct vd_h1_limits *lim, struct vd_h1_resp_head *resp,
                                       const char **why);

#endif
