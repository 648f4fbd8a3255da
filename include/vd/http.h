/* SPDX-License-Identifier: MIT */
/* HTTP message model shared by every front end (RFC 9110): header fields as views, token-list
 * helpers, URI/authority parsing, and message framing (RFC 9112 §6). No I/O. */
#ifndef VD_HTTP_H
#define VD_HTTP_H

#include <stdint.h>
#include <string.h>

#include "vd/buf.h"
#include "vd/common.h"

/* One field line; both views borrow from the parser's input (or an arena). Names keep the
 * case they arrived with; compare with vd_hdr_name_is(). Values have no leading/trailing OWS. */
struct vd_hdr {
    struct vd_iov name;
    struct vd_iov value;
};

enum vd_target_form {
    VD_TARGET_ORIGIN,    /* "/path?q" */
    VD_TARGET_ABSOLUTE,  /* "http://host/path" */
    VD_TARGET_AUTHORITY, /* "host:port" (CONNECT only) */
    VD_TARGET_ASTERISK,  /* "*" (OPTIONS only) */
};

/* Character classes for the HTTP grammars: one lookup per byte (vd_http_ctype[c] & VD_CT_*).
 * Shared by the http and h1 modules (and any later front end) so the classes are defined once. */
#define VD_CT_TCHAR   0x01 /* tchar, RFC 9110 §5.6.2 */
#define VD_CT_VALUE   0x02 /* field-vchar / SP / HTAB / obs-text, RFC 9110 §5.5 */
#define VD_CT_TARGET  0x04 /* visible ASCII 0x21-0x7e (request-target bytes) */
#define VD_CT_HEX     0x08 /* HEXDIG */
#define VD_CT_DIGIT   0x10 /* DIGIT */
#define VD_CT_REGNAME 0x20 /* unreserved / sub-delims, RFC 3986 §3.2.2 (pct-encoded separately) */
#define VD_CT_QDTEXT  0x40 /* qdtext, RFC 9110 §5.6.4 */
#define VD_CT_SCHEME  0x80 /* ALPHA / DIGIT / "+" / "-" / ".", RFC 3986 §3.1 */

extern const uint8_t vd_http_ctype[256];

bool vd__hdr_name_eq(struct vd_iov name, const char *lower, size_t n);

/* ASCII lowercase of eight bytes at once: 0x20 added to each byte in 'A'..'Z' and to no other
 * (bytes >= 0x80 included), without a branch per byte. */
static VD_ALWAYS_INLINE uint64_t
vd__lower8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t low7 = x & ~high;
    uint64_t ge_a = low7 + ones * (0x80 - 'A');     /* high bit set where byte >= 'A' */
    uint64_t gt_z = low7 + ones * (0x80 - 'Z' - 1); /* high bit set where byte > 'Z' */
    uint64_t upper = ge_a & ~gt_z & ~x & high;
    return x | (upper >> 2);
}

/* @name (of @n bytes, checked by the caller) equals the lowercase ASCII @lc ignoring case.
 * Inline, so that with a literal the length tests fold and the words compared are constants:
 * names of 8 bytes or more in 8-byte words, the last overlapping the one before when @n is not
 * a multiple of 8 (comparing a byte twice changes nothing); 4 to 7 bytes in two overlapping
 * 4-byte words; shorter ones byte by byte. */
static VD_ALWAYS_INLINE bool
vd__hdr_name_eqn(const uint8_t *name, const char *lc, size_t n)
{
    uint64_t a, b;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&a, name + i, 8);
            memcpy(&b, lc + i, 8);
            if (vd__lower8(a) != b) {
                return false;
            }
        }
        memcpy(&a, name + n - 8, 8);
        memcpy(&b, lc + n - 8, 8);
        return vd__lower8(a) == b;
    }
    if (n >= 4) {
        uint32_t x, y, z, w;
        memcpy(&x, name, 4);
        memcpy(&y, name + n - 4, 4);
        memcpy(&z, lc, 4);
        memcpy(&w, lc + n - 4, 4);
        a = (uint64_t)x | (uint64_t)y << 32;
        b = (uint64_t)z | (uint64_t)w << 32;
        return vd__lower8(a) == b;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t c = name[i];
        if ((c >= 'A' && c <= 'Z' ? (uint8_t)(c | 0x20) : c) != (uint8_t)lc[i]) {
            return false;
        }
    }
    return true;
}

/* Case-insensitive compare of @name with @lower, which must be lowercase ASCII. Inline so that
 * strlen() of a literal folds at compile time: this runs per field per hop-by-hop name. */
static VD_ALWAYS_INLINE bool
vd_hdr_name_is(struct vd_iov name, const char *lower)
{
    size_t n = __builtin_strlen(lower);
    /* most fields differ in length */
    return name.len == n && vd__hdr_name_eqn(name.base, lower, n);
}

/* ASCII lowercase copy of @n bytes (other bytes unchanged), eight at a time. */
void vd_hdr_lower(uint8_t *dst, const uint8_t *src, size_t n);

/* Returns the first field named @lower, or NULL. */
const struct vd_hdr *vd_hdr_find(const struct vd_hdr *h, size_t n, const char *lower);

/* Iterates a comma-separated list (RFC 9110 §5.6.1): stores the next non-empty element, OWS
 * trimmed, in @item and advances @rest. Returns false when no element is left. Quoted strings
 * are kept whole (a comma inside quotes does not split). */
bool vd_list_next(struct vd_iov *rest, struct vd_iov *item);

/* True when the list value @v contains the token @lower (case-insensitive). */
bool vd_list_has(struct vd_iov v, const char *lower);

/* How many members of the Via fields among @h name @received_by (case-insensitive) as the
 * intermediary that received the message (RFC 9110 §7.6.3: received-protocol RWS received-by
 * [RWS comment]). A proxy finds itself there when a request loops back to it. */
size_t vd_via_count(const struct vd_hdr *h, size_t n, const char *received_by);

/* True when every byte is a tchar (RFC 9110 §5.6.2) and @v is not empty. */
bool vd_is_token(struct vd_iov v);

/* Parsed "scheme://host[:port]/path?query"; views borrow from the input. host has no brackets
 * for IPv6 literals (ipv6 is set). path includes the query and is "/" when the URI has neither;
 * when the URI has a query but an empty path, path starts with '?' and the sender must put "/"
 * before it (RFC 9112 §3.2.1). authority is "host[:port]" exactly as written. */
struct vd_uri {
    struct vd_iov scheme; /* lowercase compare with vd_hdr_name_is */
    struct vd_iov authority;
    struct vd_iov host;
    struct vd_iov path;
    uint16_t port; /* explicit port, or the scheme default (80/443) */
    bool has_port;
    bool ipv6;
    bool https; /* scheme is https */
};

/* Parses an absolute-form target (RFC 9112 §3.2.2); only http and https schemes. Userinfo is an
 * error (RFC 9110 §4.2.4). Returns 0, or VD_EBADREQ with @why set. */
VD_MUST_CHECK int vd_uri_parse_absolute(const uint8_t *p, size_t n, struct vd_uri *u,
                                        const char **why);

/* Parses "host[:port]" or "[v6]:port" (Host field and authority-form). @port is 0 when absent.
 * Returns 0 or VD_EBADREQ with @why set. */
VD_MUST_CHECK int vd_uri_parse_authority(const uint8_t *p, size_t n, struct vd_iov *host,
                                         uint16_t *port, bool *ipv6, const char **why);

/* Message framing, RFC 9112 §6.3. */
enum vd_body_kind {
    VD_BODY_NONE,
    VD_BODY_LENGTH,  /* Content-Length bytes */
    VD_BODY_CHUNKED, /* chunked transfer coding */
    VD_BODY_CLOSE,   /* until the connection closes (responses only) */
};

struct vd_framing {
    enum vd_body_kind kind;
    uint64_t length; /* VD_BODY_LENGTH only */
};

/* Request framing. Errors (VD_EBADREQ, @why set, the request must be refused with 400 and the
 * connection closed): TE and CL together, TE whose final coding is not chunked, chunked applied
 * twice, several differing CL values, an invalid CL, TE in an HTTP/1.0 request. A transfer
 * coding other than chunked returns VD_ENOTIMPL (501). */
VD_MUST_CHECK int vd_http_req_framing(const struct vd_hdr *h, size_t n, int minor,
                                      struct vd_framing *f, const char **why);

/* Response framing for a request whose method was HEAD (@head) or a 2xx to CONNECT (@connect):
 * 1xx, 204, 304 and HEAD responses have no body; TE with chunked last is chunked; TE without
 * chunked last is close-delimited; a valid CL is a length; otherwise close-delimited. Errors
 * (VD_EBADRESP, @why): TE with CL together, invalid or differing CL values, chunked applied
 * more than once. */
VD_MUST_CHECK int vd_http_resp_framing(const struct vd_hdr *h, size_t n, int status, bool head,
                                       bool connect, struct vd_framing *f, const char **why);

/* Incremental chunked decoder (RFC 9112 §7.1) with caps on the size line (incl. extensions)
 * and on the trailer section. Chunk sizes are hex without sign/whitespace/prefix, at most 16
 * hex digits and no overflow; extensions are ;name[=token|quoted-string] with BWS. */
struct vd_chunked {
    int state;
    uint64_t remain;    /* bytes left in the current chunk */
    size_t line_len;    /* bytes seen on the current size line or trailer line */
    size_t trailer_len; /* bytes of trailer section so far */
    size_t max_line;    /* cap on a size line including extensions */
    size_t max_trailer; /* cap on the trailer section */
    struct vd_dbuf
        *trailers; /* optional: receives raw trailer field lines, each "name: value\r\n" */
    bool done;     /* last-chunk, trailers and final CRLF consumed */
};

void vd_chunked_init(struct vd_chunked *c, size_t max_line, size_t max_trailer,
                     struct vd_dbuf *trailers);

/* Decodes from @in[0..@len) (len <= INT_MAX). Sets @data to the next run of payload bytes inside
 * @in (length 0 when there is none in what was consumed) and returns the number of bytes consumed
 * (>= 0; a payload run ends the call, so call again with the rest). When c->done is set, the
 * bytes after the returned count belong to the next message. Errors: VD_EBADREQ (bad syntax,
 * @why set) or VD_ETOOBIG (a cap was hit). Returns 0 only when @len is 0 or c->done was already
 * set; when the input ends inside framing bytes, all of them are consumed and remembered (the
 * count is @len and @data is empty). Trailer lines go to c->trailers as they arrive; a failed
 * vd_dbuf_add is VD_ETOOBIG. */
VD_MUST_CHECK int vd_chunked_decode(struct vd_chunked *c, const uint8_t *in, size_t len,
                                    struct vd_iov *data, const char **why);

#define VD_HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

/* Writes the current time as an IMF-fixdate into @out (VD_HTTP_DATE_LEN + 1 bytes, with NUL).
 * Returns VD_HTTP_DATE_LEN. Cheap: formatted at most once per second per thread. */
size_t vd_http_date_now(char *out);

/* Status reason phrases (RFC 9110 §15); "Unknown" for others. */
const char *vd_http_reason(int status);

#endif
