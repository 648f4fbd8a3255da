/* SPDX-License-Identifier: MIT */
/* Incremental decoder for the chunked transfer coding (RFC 9112 §7.1): chunk-size lines with
 * extensions (§7.1.1), chunk data and its CRLF, last-chunk and the trailer section (§7.1.2).
 * A byte-at-a-time state machine for the framing, bulk views for the data; the input may be
 * split anywhere. Caps: the size line (incl. extensions) and the trailer section. */
#include "vd/config.h"

#include <limits.h>

#include "vd/err.h"
#include "vd/http.h"

#define MAX_SIZE_DIGITS 16 /* 16 hex digits fill a uint64_t: no overflow check needed */

enum {
    S_SIZE0,      /* first byte of a chunk-size line: HEXDIG */
    S_SIZE,       /* HEXDIG, BWS, ";" or CR */
    S_BWS,        /* BWS that must lead to ";" */
    S_EXT_NAME0,  /* after ";": BWS or the first byte of chunk-ext-name */
    S_EXT_NAME,   /* in chunk-ext-name */
    S_EXT_NAMEWS, /* BWS after chunk-ext-name: must lead to "=" or ";" */
    S_EXT_VAL0,   /* after "=": BWS, token or quoted-string */
    S_EXT_TOK,    /* in a token value */
    S_EXT_QS,     /* in a quoted-string value */
    S_EXT_QP,     /* after a backslash in a quoted-string */
    S_EXT_QEND,   /* after the closing quote */
    S_SIZE_LF,    /* CR ending the size line seen */
    S_DATA,       /* c->remain bytes of chunk data */
    S_DATA_CR,    /* CR after chunk data */
    S_DATA_LF,    /* LF after chunk data */
    S_TR0,        /* start of a trailer field line or of the final CRLF */
    S_TR_NAME,    /* in a trailer field name */
    S_TR_OWS,     /* OWS after the colon */
    S_TR_VAL,     /* in a trailer field value */
    S_TR_LF,      /* CR ending a trailer field line seen */
    S_END_LF,     /* CR of the final empty line seen */
    S_DONE,
};

void
vd_chunked_init(struct vd_chunked *c, size_t max_line, size_t max_trailer, struct vd_dbuf *trailers)
{
    *c = (struct vd_chunked){
        .state = S_SIZE0,
        .max_line = max_line,
        .max_trailer = max_trailer,
        .trailers = trailers,
    };
}

static int
syntax(const char **why, uint8_t ch, const char *msg)
{
    *why = ch == '\n' ? "bare LF" : msg;
    return VD_EBADREQ;
}

static inline bool
is_ws(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Value of a HEXDIG: '0'-'9' are 0x3X, 'A'-'F' 0x4X and 'a'-'f' 0x6X (bit 6 set: add 9). */
static inline uint64_t
hexval(uint8_t c)
{
    return (uint64_t)(c & 0xfu) + (uint64_t)(c >> 6) * 9u;
}

static inline bool
is_tchar(uint8_t c)
{
    return (vd_http_ctype[c] & VD_CT_TCHAR) != 0;
}

/* Appends to the caller's trailer buffer, if any; its cap is another trailer cap. */
static int
tr_add(struct vd_chunked *c, const void *p, size_t n, const char **why)
{
    if (!c->trailers || n == 0) {
        return 0;
    }
    if (vd_dbuf_add(c->trailers, p, n) < 0) {
        *why = "trailer section too large";
        return VD_ETOOBIG;
    }
    return 0;
}

/* Ends a normalised "name: value" line: trailing OWS is not part of the value (RFC 9110 §5.5).
 * The value's first byte is not OWS, so trimming never reaches the ": " separator. */
static int
tr_end_line(struct vd_chunked *c, const char **why)
{
    struct vd_dbuf *d = c->trailers;
    if (!d) {
        return 0;
    }
    while (d->len > 0 && is_ws((uint8_t)d->p[d->len - 1])) {
        d->len--;
    }
    if (d->p) {
        d->p[d->len] = '\0';
    }
    return tr_add(c, "\r\n", 2, why);
}

int
vd_chunked_decode(struct vd_chunked *c, const uint8_t *in, size_t len, struct vd_iov *data,
                  const char **why)
{
    data->base = in;
    data->len = 0;
    if (c->done || len == 0) {
        return 0;
    }
    if (len > INT_MAX) {
        len = INT_MAX;
    }
    const uint8_t *p = in, *e = in + len;
    /* Start of a run of trailer bytes still to be copied to c->trailers (name or value). */
    const uint8_t *run = (c->state == S_TR_NAME || c->state == S_TR_VAL) ? in : NULL;
    int r;

    while (p < e) {
        uint8_t ch = *p;
        if (c->state <= S_EXT_QEND && ch != '\r') {
            /* RFC 9112 §7.1.1: extensions are unbounded in the grammar; we cap the line. */
            if (++c->line_len > c->max_line) {
                *why = "chunk size line too long";
                return VD_ETOOBIG;
            }
        }
        switch (c->state) {
        case S_SIZE0:
            /* RFC 9112 §7.1: chunk-size = 1*HEXDIG; no sign, prefix or leading space. */
            if (!(vd_http_ctype[ch] & VD_CT_HEX)) {
                return syntax(why, ch, "invalid chunk size");
            }
            c->remain = hexval(ch);
            c->state = S_SIZE;
            p++;
            break;
        case S_SIZE:
            if (vd_http_ctype[ch] & VD_CT_HEX) {
                if (c->line_len > MAX_SIZE_DIGITS) {
                    *why = "invalid chunk size";
                    return VD_EBADREQ;
                }
                c->remain = (c->remain << 4) | hexval(ch);
            } else if (ch == ';') {
                c->state = S_EXT_NAME0;
            } else if (is_ws(ch)) {
                c->state = S_BWS;
            } else if (ch == '\r') {
                c->state = S_SIZE_LF;
            } else {
                return syntax(why, ch, "invalid chunk size");
            }
            p++;
            break;
        case S_BWS:
            /* RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ) */
            if (ch == ';') {
                c->state = S_EXT_NAME0;
            } else if (!is_ws(ch)) {
                return syntax(why, ch, "invalid chunk extension");
            }
            p++;
            break;
        case S_EXT_NAME0:
            if (is_tchar(ch)) {
                c->state = S_EXT_NAME;
            } else if (!is_ws(ch)) {
                return syntax(why, ch, "invalid chunk extension");
            }
            p++;
            break;
        case S_EXT_NAME:
            if (ch == ';') {
                c->state = S_EXT_NAME0;
            } else if (ch == '=') {
                c->state = S_EXT_VAL0;
            } else if (is_ws(ch)) {
                c->state = S_EXT_NAMEWS;
            } else if (ch == '\r') {
                c->state = S_SIZE_LF;
            } else if (!is_tchar(ch)) {
                return syntax(why, ch, "invalid chunk extension");
            }
            p++;
            break;
        case S_EXT_NAMEWS:
            if (ch == ';') {
                c->state = S_EXT_NAME0;
            } else if (ch == '=') {
                c->state = S_EXT_VAL0;
            } else if (!is_ws(ch)) {
                return syntax(why, ch, "invalid chunk extension");
            }
            p++;
            break;
        case S_EXT_VAL0:
            if (ch == '"') {
                c->state = S_EXT_QS;
            } else if (is_tchar(ch)) {
                c->state = S_EXT_TOK;
            } else if (!is_ws(ch)) {
                return syntax(why, ch, "invalid chunk extension");
            }
            p++;
            break;
        case S_EXT_TOK:
        case S_EXT_QEND:
            if (ch == ';') {
                c->state = S_EXT_NAME0;
            } else if (is_ws(ch)) {
                c->state = S_BWS;
            } else if (ch == '\r') {
                c->state = S_SIZE_LF;
            } else if (c->state != S_EXT_TOK || !is_tchar(ch)) {
                return syntax(why, ch, "invalid chunk extension");
            }
            p++;
            break;
        case S_EXT_QS:
            /* RFC 9110 §5.6.4: qdtext / quoted-pair */
            if (ch == '"') {
                c->state = S_EXT_QEND;
            } else if (ch == '\\') {
                c->state = S_EXT_QP;
            } else if (!(vd_http_ctype[ch] & VD_CT_QDTEXT)) {
                return syntax(why, ch, "invalid chunk extension");
            }
            p++;
            break;
        case S_EXT_QP:
            if (!(vd_http_ctype[ch] & VD_CT_VALUE)) {
                return syntax(why, ch, "invalid chunk extension");
            }
            c->state = S_EXT_QS;
            p++;
            break;
        case S_SIZE_LF:
            if (ch != '\n') {
                *why = "bare CR";
                return VD_EBADREQ;
            }
            c->line_len = 0;
            /* RFC 9112 §7.1: a zero size is the last-chunk; the trailer section follows. */
            c->state = c->remain ? S_DATA : S_TR0;
            p++;
            break;
        case S_DATA: {
            size_t n = (size_t)(e - p);
            if (n > c->remain) {
                n = (size_t)c->remain;
            }
            data->base = p;
            data->len = n;
            p += n;
            c->remain -= n;
            if (c->remain == 0) {
                c->state = S_DATA_CR;
            }
            /* A payload run ends the call (the caller consumes it before going on). */
            return (int)(p - in);
        }
        case S_DATA_CR:
            /* RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF */
            if (ch != '\r') {
                return syntax(why, ch, "missing CRLF after chunk data");
            }
            c->state = S_DATA_LF;
            p++;
            break;
        case S_DATA_LF:
            if (ch != '\n') {
                *why = "missing CRLF after chunk data";
                return VD_EBADREQ;
            }
            c->state = S_SIZE0;
            p++;
            break;
        case S_TR0:
            if (ch == '\r') {
                c->state = S_END_LF;
                p++;
                break;
            }
            /* RFC 9112 §7.1.2: trailer fields have the header field syntax (§5). */
            if (!is_tchar(ch)) {
                if (is_ws(ch)) {
                    *why = "obs-fold not allowed";
                } else if (ch == ':') {
                    *why = "empty field name";
                } else {
                    return syntax(why, ch, "invalid trailer field name");
                }
                return VD_EBADREQ;
            }
            run = p;
            c->state = S_TR_NAME;
            break;
        case S_TR_NAME: {
            const uint8_t *s = p;
            while (p < e && is_tchar(*p)) {
                p++;
            }
            c->trailer_len += (size_t)(p - s);
            if (c->trailer_len > c->max_trailer) {
                *why = "trailer section too large";
                return VD_ETOOBIG;
            }
            if (p == e) {
                break;
            }
            if (*p != ':') {
                if (is_ws(*p)) {
                    *why = "whitespace before colon";
                    return VD_EBADREQ;
                }
                return syntax(why, *p, "invalid trailer field name");
            }
            if ((r = tr_add(c, run, (size_t)(p - run), why)) < 0 ||
                (r = tr_add(c, ":", 1, why)) < 0) {
                return r;
            }
            run = NULL;
            c->state = S_TR_OWS;
            c->trailer_len++;
            p++;
            break;
        }
        case S_TR_OWS:
            if (ch == '\r') {
                if ((r = tr_add(c, "\r\n", 2, why)) < 0) {
                    return r;
                }
                c->state = S_TR_LF;
            } else if (vd_http_ctype[ch] & VD_CT_VALUE) {
                if (!is_ws(ch)) {
                    if ((r = tr_add(c, " ", 1, why)) < 0) {
                        return r;
                    }
                    run = p;
                    c->state = S_TR_VAL;
                    break;
                }
            } else {
                return syntax(why, ch, "invalid character in field value");
            }
            if (++c->trailer_len > c->max_trailer) {
                *why = "trailer section too large";
                return VD_ETOOBIG;
            }
            p++;
            break;
        case S_TR_VAL: {
            const uint8_t *s = p;
            while (p < e && (vd_http_ctype[*p] & VD_CT_VALUE)) {
                p++;
            }
            c->trailer_len += (size_t)(p - s);
            if (c->trailer_len > c->max_trailer) {
                *why = "trailer section too large";
                return VD_ETOOBIG;
            }
            if (p == e) {
                break;
            }
            if (*p != '\r') {
                return syntax(why, *p, "invalid character in field value");
            }
            if ((r = tr_add(c, run, (size_t)(p - run), why)) < 0 || (r = tr_end_line(c, why)) < 0) {
                return r;
            }
            run = NULL;
            c->state = S_TR_LF;
            c->trailer_len++;
            p++;
            break;
        }
        case S_TR_LF:
            if (ch != '\n') {
                *why = "bare CR";
                return VD_EBADREQ;
            }
            if (++c->trailer_len > c->max_trailer) {
                *why = "trailer section too large";
                return VD_ETOOBIG;
            }
            c->state = S_TR0;
            p++;
            break;
        case S_END_LF:
            if (ch != '\n') {
                *why = "bare CR";
                return VD_EBADREQ;
            }
            c->state = S_DONE;
            c->done = true;
            p++;
            return (int)(p - in);
        default:
            *why = "chunked decoder misuse";
            return VD_EBADREQ;
        }
    }
    /* Input ended inside a trailer name or value: keep what we have of it. */
    if (run && (r = tr_add(c, run, (size_t)(p - run), why)) < 0) {
        return r;
    }
    return (int)(p - in);
}
