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

#define VD_SNIFF_ALPN_MAX 8      /* ALPN ids kept; more are counted but not stored */
#define VD_SNIFF_ALPN_LEN 32     /* longer ids are truncated (never matched) */
#define VD_SNIFF_SNI_LEN  255    /* RFC 6066 host_name limit */
#define VD_SNIFF_MAX      (16384 + 5 * 4)/* bytes a ClientHello may span (records reassembled) */

struct vd_sniff {
    enum vd_proto proto;
    char sni[VD_SNIFF_SNI_LEN + 1]; /* lowercase host_name; "" when absent */
    bool has_sni;
    char alpn[VD_SNIFF_ALPN_MAX][VD_SNIFF_ALPN_LEN + 1];
    unsigned nalpn;
    uint16_t tls_version; /* legacy_version of the ClientHello (0x0303 ...) */
    bool tls13;           /* supported_versions offers 0x0304 */
};

enum vd_sniff_state {
    VD_SNIFF_MORE, /* need more bytes to decide (only while len < VD_SNIFF_MAX) */
    VD_SNIFF_DONE, /* @out filled (proto may be VD_PROTO_UNKNOWN) */
};

/* Classifies the first bytes a client sent into a tunnel: TLS handshake records holding a
 * ClientHello (possibly fragmented over several records), "SSH-2.0-...", or an HTTP/1 request
 * line ("GET / HTTP/1.1"). A TLS record that is not a well-formed ClientHello gives
 * VD_PROTO_UNKNOWN, never a crash. @p/@len are all the client bytes so far. */
enum vd_sniff_state vd_sniff_client(const uint8_t *p, size_t len, struct vd_sniff *out);

/* Classifies a server's greeting when the server speaks first: "SSH-", "* OK" (IMAP), "+OK"
 * (POP3), "220 " with ESMTP/SMTP in the line (SMTP) or FTP in the line (FTP); else unknown. */
enum vd_sniff_state vd_sniff_server(const uint8_t *p, size_t len, struct vd_sniff *out);

/* "tls", "ssh", "http", "imap", "pop3", "smtp", "ftp", "unknown". */
const char *vd_proto_name(enum vd_proto p);

#endif
