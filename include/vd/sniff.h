/* SPDX-License-Identifier: MIT */
/* What runs inside a tunnel, without terminating it: a TLS ClientHello (SNI, ALPN, versions),
 * an SSH identification line, an HTTP/1 request line, or a server greeting (SSH, IMAP, POP3,
 * SMTP, FTP). Pure functions over bytes, fuzzed (tests/fuzz/fuzz_sniff.c). */
#ifndef VD_SNIFF_H
#define VD_SNIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum vd_proto {
    VD_PROTO_UNKNOWN,
    VD_PROTO_TLS,
    VD_PROTO_SSH,
    VD_PROTO_HTTP,
    VD_PROTO_IMAP,
    VD_PROTO_POP3,
    VD_PROTO_SMTP,
    VD_PROTO_FTP,
};

#define VD_SNIFF_ALPN_MAX 8   /* ALPN ids kept; further ones set alpn_more */
#define VD_SNIFF_ALPN_LEN 32  /* longer ids are skipped (set alpn_more), never truncated */
#define VD_SNIFF_SNI_LEN  255 /* RFC 6066 host_name limit */
#define VD_SNIFF_MAX      (16384 + 5 * 4) /* bytes a ClientHello may span (records reassembled) */

struct vd_sniff {
    enum vd_proto proto;
    char sni[VD_SNIFF_SNI_LEN + 1]; /* lowercase host_name; "" when absent */
    bool has_sni;
    char alpn[VD_SNIFF_ALPN_MAX][VD_SNIFF_ALPN_LEN + 1]; /* in the client's order */
    unsigned nalpn;       /* ids stored in alpn[], at most VD_SNIFF_ALPN_MAX */
    bool alpn_more;       /* ids were offered but not stored: too many, too long or holding a NUL */
    uint16_t tls_version; /* legacy_version of the ClientHello (0x0303 ...) */
    bool tls13;           /* supported_versions offers 0x0304 */
};

enum vd_sniff_state {
    VD_SNIFF_MORE, /* need more bytes to decide (only while len < VD_SNIFF_MAX) */
    VD_SNIFF_DONE, /* @out filled (proto may be VD_PROTO_UNKNOWN) */
};

/* Classifies the first bytes a client sent into a tunnel: TLS handshake records holding a
 * ClientHello (possibly fragmented over several records), "SSH-2.0-...", or an HTTP/1 request
 * line ("GET / HTTP/1.1"). @p/@len are all the client bytes so far; only the first
 * VD_SNIFF_MAX are looked at, so once DONE is returned longer inputs give the same result.
 * TLS: a record or ClientHello that is not well formed (any length inconsistent with its
 * container, wrong types, duplicate server_name/ALPN/supported_versions, an empty host_name)
 * gives VD_PROTO_UNKNOWN. A well-formed hello whose host_name is longer than 255 bytes or has
 * bytes outside [A-Za-z0-9.-_] gives TLS with has_sni false. A hello that cannot be complete
 * within VD_SNIFF_MAX bytes gives TLS with every other field empty (has_sni false, nalpn 0,
 * tls_version 0). SNI/ALPN/versions are reported only from a complete, well-formed hello.
 * HTTP: the request line must end (LF) within 8 KiB, else VD_PROTO_UNKNOWN. On MORE, @out
 * holds VD_PROTO_UNKNOWN and empty fields. */
enum vd_sniff_state vd_sniff_client(const uint8_t *p, size_t len, struct vd_sniff *out);

/* Classifies a server's greeting when the server speaks first: "SSH-", "* OK" or "* PREAUTH"
 * (IMAP), "+OK" (POP3), "220 " or "220-" with SMTP (so also ESMTP) in the first line (SMTP),
 * else FTP in it (FTP), both matched case-insensitively; else unknown. A "220" line is decided
 * at its LF, or on its first 1 KiB when no LF comes by then; the others on their prefix. */
enum vd_sniff_state vd_sniff_server(const uint8_t *p, size_t len, struct vd_sniff *out);

/* "tls", "ssh", "http", "imap", "pop3", "smtp", "ftp", "unknown". */
const char *vd_proto_name(enum vd_proto p);

#endif
