/* SPDX-License-Identifier: MIT */
/* Tunnel sniffing: what runs inside a CONNECT tunnel, read from its first bytes. TLS records
 * (RFC 8446 §5.1) are reassembled on the fly into the ClientHello (RFC 8446 §4.1.2, RFC 5246
 * §7.4.1.2), whose server_name (RFC 6066 §3), ALPN (RFC 7301 §3.1) and supported_versions
 * (RFC 8446 §4.2.1) are read; SSH identification (RFC 4253 §4.2), HTTP/1 request lines
 * (RFC 9112 §3) and server greetings (RFC 3501 §7.1, RFC 1939 §4, RFC 5321 §4.2, RFC 959) by
 * prefix. Pure functions; every decision depends only on bytes already seen. */
#include "vd/config.h"

#include <string.h>

#include "vd/sniff.h"

#define REC_HDR   5             /* RFC 8446 §5.1: type, legacy_record_version, length */
#define REC_MAX   (16384 + 256) /* RFC 8446 §5.2 ciphertext bound; lenient for plaintext */
#define HS_HDR    4             /* RFC 8446 §4: msg_type, 24-bit length */
#define HTTP_MAX  8192          /* a request line must end within this many bytes */
#define GREET_MAX 1024          /* a server greeting line is judged on this many bytes */

enum rd { RD_OK, RD_NEED, RD_BAD };

/* A cursor over the handshake byte stream that hides the record headers between fragments. */
struct cur {
    const uint8_t *p;
    size_t len;  /* bytes available, capped at VD_SNIFF_MAX */
    size_t off;  /* next raw byte */
    size_t left; /* payload bytes left in the current record */
    size_t hs;   /* handshake bytes consumed so far */
};

/* Checks the record header at c->off as far as it is available, then enters the record. */
static enum rd
next_record(struct cur *c)
{
    const uint8_t *h = c->p + c->off;
    size_t avail = c->len - c->off;
    /* RFC 8446 §5.1: handshake messages are never interleaved with other record types */
    if (avail >= 1 && h[0] != 22) {
        return RD_BAD;
    }
    if (avail >= 2 && h[1] != 3) {
        return RD_BAD;
    }
    if (avail >= 3 && (h[2] < 1 || h[2] > 4)) {
        return RD_BAD;
    }
    if (avail < REC_HDR) {
        return RD_NEED;
    }
    size_t rlen = (size_t)h[3] << 8 | h[4];
    /* RFC 8446 §5.1: zero-length handshake fragments are forbidden */
    if (rlen == 0 || rlen > REC_MAX) {
        return RD_BAD;
    }
    c->off += REC_HDR;
    c->left = rlen;
    return RD_OK;
}

static enum rd
get8(struct cur *c, unsigned *v)
{
    if (c->left == 0) {
        enum rd r = next_record(c);
        if (r != RD_OK) {
            return r;
        }
    }
    if (c->off >= c->len) {
        return RD_NEED;
    }
    *v = c->p[c->off++];
    c->left--;
    c->hs++;
    return RD_OK;
}

/* Reads an @n-byte big-endian integer (n <= 3). */
static enum rd
getn(struct cur *c, unsigned n, size_t *v)
{
    *v = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned b;
        enum rd r = get8(c, &b);
        if (r != RD_OK) {
            return r;
        }
        *v = *v << 8 | b;
    }
    return RD_OK;
}

static enum rd
skip(struct cur *c, size_t n)
{
    while (n) {
        if (c->left == 0) {
            enum rd r = next_record(c);
            if (r != RD_OK) {
                return r;
            }
        }
        size_t k = VD_MIN(VD_MIN(n, c->left), c->len - c->off);
        if (k == 0) {
            return RD_NEED;
        }
        c->off += k;
        c->left -= k;
        c->hs += k;
        n -= k;
    }
    return RD_OK;
}

/* Reads an @lb-byte length prefix and checks that the body it announces fits before @end. */
static enum rd
getlen(struct cur *c, unsigned lb, size_t end, size_t *v)
{
    if (c->hs + lb > end) {
        return RD_BAD;
    }
    enum rd r = getn(c, lb, v);
    if (r == RD_OK && c->hs + *v > end) {
        return RD_BAD;
    }
    return r;
}

#define TRY(e)                                                                                     \
    do {                                                                                           \
        enum rd r_ = (e);                                                                          \
        if (r_ != RD_OK) {                                                                         \
            return r_;                                                                             \
        }                                                                                          \
    } while (0)

static bool
sni_char(unsigned b)
{
    return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '.' ||
           b == '-' || b == '_';
}

/* RFC 6066 §3: ServerNameList server_name_list<1..2^16-1>; host_name is opaque<1..2^16-1>.
 * Only one name per name_type; a second host_name is an ambiguity we refuse (RD_BAD) rather
 * than pick from, since policies decide on this name. */
static enum rd
ext_sni(struct cur *c, size_t end, struct vd_sniff *out)
{
    size_t list;
    TRY(getlen(c, 2, end, &list));
    if (list == 0 || c->hs + list != end) {
        return RD_BAD;
    }
    bool seen = false;
    while (c->hs < end) {
        unsigned type;
        size_t n;
        TRY(get8(c, &type));
        TRY(getlen(c, 2, end, &n));
        if (type != 0) {
            TRY(skip(c, n));
            continue;
        }
        if (seen || n == 0) {
            return RD_BAD;
        }
        seen = true;
        bool ok = n <= VD_SNIFF_SNI_LEN;
        for (size_t i = 0; i < n; i++) {
            unsigned b;
            TRY(get8(c, &b));
            ok = ok && sni_char(b);
            if (ok) {
                out->sni[i] = (char)(b >= 'A' && b <= 'Z' ? b + ('a' - 'A') : b);
            }
        }
        if (ok) {
            out->sni[n] = '\0';
            out->has_sni = true;
        } else {
            memset(out->sni, 0, sizeof(out->sni));
        }
    }
    return RD_OK;
}

/* RFC 7301 §3.1: ProtocolName protocol_name_list<2..2^16-1>, each opaque<1..2^8-1>. */
static enum rd
ext_alpn(struct cur *c, size_t end, struct vd_sniff *out)
{
    size_t list;
    TRY(getlen(c, 2, end, &list));
    if (list < 2 || c->hs + list != end) {
        return RD_BAD;
    }
    while (c->hs < end) {
        size_t n;
        TRY(getlen(c, 1, end, &n));
        if (n == 0) {
            return RD_BAD;
        }
        bool keep = n <= VD_SNIFF_ALPN_LEN && out->nalpn < VD_SNIFF_ALPN_MAX;
        char *dst = out->alpn[keep ? out->nalpn : 0];
        for (size_t i = 0; i < n; i++) {
            unsigned b;
            TRY(get8(c, &b));
            /* a NUL would make the C string match a shorter id */
            keep = keep && b != 0;
            if (keep) {
                dst[i] = (char)b;
            }
        }
        if (keep) {
            dst[n] = '\0';
            out->nalpn++;
        } else {
            out->alpn_more = true;
            if (out->nalpn < VD_SNIFF_ALPN_MAX) {
                memset(out->alpn[out->nalpn], 0, sizeof(out->alpn[0]));
            }
        }
    }
    return RD_OK;
}

/* RFC 8446 §4.2.1: in a ClientHello, ProtocolVersion versions<2..254>. */
static enum rd
ext_versions(struct cur *c, size_t end, struct vd_sniff *out)
{
    size_t list;
    TRY(getlen(c, 1, end, &list));
    if (list < 2 || list % 2 || c->hs + list != end) {
        return RD_BAD;
    }
    while (c->hs < end) {
        size_t v;
        TRY(getn(c, 2, &v));
        if (v == 0x0304) {
            out->tls13 = true;
        }
    }
    return RD_OK;
}

/* Parses the ClientHello; RD_NEED when more bytes are needed, RD_BAD when malformed. Sets
 * *toobig when the hello cannot fit in VD_SNIFF_MAX bytes. */
static enum rd
client_hello(struct cur *c, struct vd_sniff *out, bool *toobig)
{
    unsigned type;
    size_t mlen, n;
    TRY(get8(c, &type));
    if (type != 1) {
        return RD_BAD;
    }
    TRY(getn(c, 3, &mlen));
    if (REC_HDR + HS_HDR + mlen > VD_SNIFF_MAX) {
        *toobig = true;
        return RD_NEED;
    }
    size_t end = c->hs + mlen;
    /* legacy_version and random[32] */
    if (c->hs + 2 + 32 > end) {
        return RD_BAD;
    }
    TRY(getn(c, 2, &n));
    if (n >> 8 != 3) {
        return RD_BAD;
    }
    out->tls_version = (uint16_t)n;
    TRY(skip(c, 32));
    /* legacy_session_id<0..32> */
    TRY(getlen(c, 1, end, &n));
    if (n > 32) {
        return RD_BAD;
    }
    TRY(skip(c, n));
    /* cipher_suites<2..2^16-2> */
    TRY(getlen(c, 2, end, &n));
    if (n < 2 || n % 2) {
        return RD_BAD;
    }
    TRY(skip(c, n));
    /* legacy_compression_methods<1..2^8-1> */
    TRY(getlen(c, 1, end, &n));
    if (n < 1) {
        return RD_BAD;
    }
    TRY(skip(c, n));
    /* RFC 5246 §7.4.1.2: extensions may be absent altogether; when present they fill the rest */
    if (c->hs == end) {
        return RD_OK;
    }
    TRY(getlen(c, 2, end, &n));
    if (c->hs + n != end) {
        return RD_BAD;
    }
    bool seen_sni = false, seen_alpn = false, seen_ver = false;
    while (c->hs < end) {
        size_t etype, elen;
        if (c->hs + 2 > end) {
            return RD_BAD;
        }
        TRY(getn(c, 2, &etype));
        TRY(getlen(c, 2, end, &elen));
        size_t eend = c->hs + elen;
        /* RFC 8446 §4.2: at most one extension of each type */
        bool *seen = etype == 0    ? &seen_sni
                     : etype == 16 ? &seen_alpn
                     : etype == 43 ? &seen_ver
                                   : NULL;
        if (seen && *seen) {
            return RD_BAD;
        }
        if (seen) {
            *seen = true;
        }
        switch (etype) {
        case 0:
            TRY(ext_sni(c, eend, out));
            break;
        case 16:
            TRY(ext_alpn(c, eend, out));
            break;
        case 43:
            TRY(ext_versions(c, eend, out));
            break;
        default:
            TRY(skip(c, elen));
            break;
        }
    }
    return RD_OK;
}

static enum vd_sniff_state
sniff_tls(const uint8_t *p, size_t len, struct vd_sniff *out)
{
    struct cur c = {.p = p, .len = VD_MIN(len, VD_SNIFF_MAX)};
    bool toobig = false;
    enum rd r = client_hello(&c, out, &toobig);
    if (r == RD_OK) {
        out->proto = VD_PROTO_TLS;
        return VD_SNIFF_DONE;
    }
    memset(out, 0, sizeof(*out));
    out->proto = VD_PROTO_UNKNOWN;
    if (r == RD_BAD) {
        return VD_SNIFF_DONE;
    }
    if (toobig || len >= VD_SNIFF_MAX) {
        /* the record layer was TLS so far, but the hello is too big to read; say so without
         * details rather than guess from a part of it */
        out->proto = VD_PROTO_TLS;
        return VD_SNIFF_DONE;
    }
    return VD_SNIFF_MORE;
}

/* How @p/@len relates to the literal @s: 1 matches in full, 0 a proper prefix of @s, -1 no.
 * @fold: compare letters case-insensitively. */
static int
prefix(const uint8_t *p, size_t len, const char *s, bool fold)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        if (i == len) {
            return 0;
        }
        unsigned a = p[i], b = (unsigned char)s[i];
        if (fold && a >= 'a' && a <= 'z') {
            a -= 'a' - 'A';
        }
        if (a != b) {
            return -1;
        }
    }
    return 1;
}

/* RFC 9110 §5.6.2: tchar */
static bool
tchar(unsigned b)
{
    return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
           (b && strchr("!#$%&'*+-.^_`|~", (int)b));
}

/* RFC 9112 §3: request-line = method SP request-target SP HTTP-version, then CRLF (or a bare
 * LF, §2.2). The target is taken loosely: any bytes but controls, SP and DEL. */
static enum vd_sniff_state
sniff_http(const uint8_t *p, size_t len, struct vd_sniff *out)
{
    size_t n = VD_MIN(len, HTTP_MAX), i = 0;
    while (i < n && tchar(p[i])) {
        i++;
    }
    if (i < n && (i == 0 || p[i] != ' ')) {
        return VD_SNIFF_DONE;
    }
    size_t t = ++i;
    while (i < n && p[i] > ' ' && p[i] != 0x7f) {
        i++;
    }
    if (i < n && (i == t || p[i] != ' ')) {
        return VD_SNIFF_DONE;
    }
    i++;
    if (i < n) {
        int m = prefix(p + i, n - i, "HTTP/1.", false);
        if (m < 0) {
            return VD_SNIFF_DONE;
        }
        i += 7;
    }
    if (i < n) {
        if (p[i] < '0' || p[i] > '9') {
            return VD_SNIFF_DONE;
        }
        i++;
    }
    if (i < n && p[i] == '\r') {
        i++;
    }
    if (i < n) {
        if (p[i] != '\n') {
            return VD_SNIFF_DONE;
        }
        out->proto = VD_PROTO_HTTP;
        return VD_SNIFF_DONE;
    }
    return len >= HTTP_MAX ? VD_SNIFF_DONE : VD_SNIFF_MORE;
}

enum vd_sniff_state
vd_sniff_client(const uint8_t *p, size_t len, struct vd_sniff *out)
{
    memset(out, 0, sizeof(*out));
    out->proto = VD_PROTO_UNKNOWN;
    if (len == 0) {
        return VD_SNIFF_MORE;
    }
    if (p[0] == 22) {
        return sniff_tls(p, len, out);
    }
    /* RFC 4253 §4.2: the client sends its identification string first, "SSH-protoversion-..." */
    int m = prefix(p, len, "SSH-", false);
    if (m > 0) {
        out->proto = VD_PROTO_SSH;
        return VD_SNIFF_DONE;
    }
    if (m == 0) {
        return VD_SNIFF_MORE;
    }
    return sniff_http(p, len, out);
}

/* Finds @needle (upper case) in @p/@len, letters case-insensitively. */
static bool
contains(const uint8_t *p, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++) {
        if (prefix(p + i, n, needle, true) > 0) {
            return true;
        }
    }
    return false;
}

enum vd_sniff_state
vd_sniff_server(const uint8_t *p, size_t len, struct vd_sniff *out)
{
    static const struct {
        const char *s;
        enum vd_proto proto;
    } greet[] = {
        {"SSH-", VD_PROTO_SSH},       /* RFC 4253 §4.2 */
        {"* OK", VD_PROTO_IMAP},      /* RFC 3501 §7.1.1 */
        {"* PREAUTH", VD_PROTO_IMAP}, /* RFC 3501 §7.1.4 */
        {"+OK", VD_PROTO_POP3},       /* RFC 1939 §4 */
    };

    memset(out, 0, sizeof(*out));
    out->proto = VD_PROTO_UNKNOWN;
    size_t n = VD_MIN(len, GREET_MAX);
    bool maybe = false;
    for (size_t k = 0; k < VD_ARRAY_LEN(greet); k++) {
        int m = prefix(p, n, greet[k].s, false);
        if (m > 0) {
            out->proto = greet[k].proto;
            return VD_SNIFF_DONE;
        }
        maybe = maybe || m == 0;
    }
    /* RFC 5321 §4.2 and RFC 959 §4.2: "220", then SP or "-" for a multi-line greeting */
    int m = prefix(p, n, "220", false);
    if (m > 0 && n > 3 && p[3] != ' ' && p[3] != '-') {
        m = -1;
    }
    if (m < 0) {
        return maybe ? VD_SNIFF_MORE : VD_SNIFF_DONE;
    }
    const uint8_t *lf = memchr(p, '\n', n);
    if (!lf && len < GREET_MAX) {
        return VD_SNIFF_MORE;
    }
    size_t line = lf ? (size_t)(lf - p) : n;
    if (contains(p + 4, line - VD_MIN(line, 4), "SMTP")) {
        out->proto = VD_PROTO_SMTP;
    } else if (contains(p + 4, line - VD_MIN(line, 4), "FTP")) {
        out->proto = VD_PROTO_FTP;
    }
    return VD_SNIFF_DONE;
}

const char *
vd_proto_name(enum vd_proto p)
{
    switch (p) {
    case VD_PROTO_TLS:
        return "tls";
    case VD_PROTO_SSH:
        return "ssh";
    case VD_PROTO_HTTP:
        return "http";
    case VD_PROTO_IMAP:
        return "imap";
    case VD_PROTO_POP3:
        return "pop3";
    case VD_PROTO_SMTP:
        return "smtp";
    case VD_PROTO_FTP:
        return "ftp";
    case VD_PROTO_UNKNOWN:
        break;
    }
    return "unknown";
}
