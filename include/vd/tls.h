/* SPDX-License-Identifier: MIT */
/* TLS on both sides with OpenSSL 3: server contexts with several certificates chosen by SNI,
 * ALPN, session resumption (tickets and a session cache); client contexts that verify against
 * the system store or a CA file with SNI and hostname checks; and the "tls" transport that
 * stacks on a vd_sock. */
#ifndef VD_TLS_H
#define VD_TLS_H

#include "vd/common.h"
#include "vd/conf.h"
#include "vd/sock.h"

struct vd_tls_server;
struct vd_tls_client;

/* Routes OpenSSL's allocations through the per-thread block cache (vd/mcache.h): its record
 * buffers are freed and allocated again around every write while idle buffers are released.
 * Call first in main; OpenSSL refuses once it has allocated (then nothing changes). */
void vd_tls_use_mcache(void);

/* The "tls" transport that vd_tls_attach_server/client install in s->ops. It may sit on another
 * "tls" layer (TLS inside TLS); the contract below holds for the whole stack, and s->want after
 * VD_EAGAIN is what the socket itself must become. Beyond vd_sock's contract, its owner must:
 * - treat unsent bytes as committed: once writev has returned (VD_EAGAIN or a count short of what
 *   was offered), every later writev must start with the bytes not yet reported written, unchanged
 *   (they may move in memory and more may follow). OpenSSL has already sealed them into a record.
 * - call shutdown only when no write is pending; it may return VD_EAGAIN (s->want set), and must
 *   then be called again when writable.
 * - when resuming reads it had stopped before VD_EAGAIN (back-pressure), call read at once rather
 *   than wait for readiness: decrypted bytes can sit inside OpenSSL where poll cannot see them.
 *   With TLS inside TLS a short read does not mean the socket is drained either (the outer layer
 *   may hold the next inner records): only VD_EAGAIN does, or vd_sock_pending saying false.
 * - arm what s->want says after VD_EAGAIN: a read may need the socket writable and vice versa.
 * read returns 0 at close_notify; a server also returns 0 when the client closes without one
 * (many do). A client gets VD_ECLOSED then, so a close-delimited body can tell truncation. */
extern const struct vd_xport_ops vd_xport_tls;

/* Builds a server context from a listener's certificates (first = default; the others are chosen
 * by SNI matching their SAN/CN names, wildcards included). ALPN offers "http/1.1". Returns 0, or
 * VD_ECONF with a message naming the file in @err. Thread-safe to use once built: build it once
 * and share it among workers, so session tickets issued by one worker resume on another.
 * vd_tls_server_free may run only after every sock attached with it has been closed. */
VD_MUST_CHECK int vd_tls_server_new(const struct vd_conf_listener *l, struct vd_tls_server **out,
                                    char *err, size_t errlen);
/* Offers "h2" before "http/1.1" in ALPN (RFC 7301) from now on, or stops offering it. Safe from
 * any thread (a reload). */
void vd_tls_server_set_h2(struct vd_tls_server *t, bool on);
void vd_tls_server_free(struct vd_tls_server *t);

/* Builds the upstream client context (verify peer unless @u->verify is false; CA from @u or the
 * system store). Returns 0 or VD_ECONF with @err. Thread-safe; it holds a bounded, locked cache
 * of client sessions. vd_tls_client_free may run only after every sock using it has closed. */
VD_MUST_CHECK int vd_tls_client_new(const struct vd_conf_upstream *u, struct vd_tls_client **out,
                                    char *err, size_t errlen);
void vd_tls_client_free(struct vd_tls_client *t);

/* Switches @s to TLS as the server side; the handshake runs inside the first reads/writes. @s is
 * connected TCP, or already TLS (a finished handshake): the new layer then runs inside the one
 * there, which moves beneath it and is destroyed with it. Not for virtual socks. Returns 0 or
 * VD_ENOMEM (@s unchanged). */
VD_MUST_CHECK int vd_tls_attach_server(struct vd_sock *s, struct vd_tls_server *t);

/* Switches @s to TLS as the client: sends SNI @sni (NULL or an IP literal: none) and checks the
 * certificate against @verify_host (a DNS name or IP literal; NULL: @sni; both NULL: the chain
 * only). Resumes a cached session for @sni/@verify_host when there is one. @s is connected TCP,
 * or already TLS as for vd_tls_attach_server (TLS to an origin inside a TLS connection to a
 * proxy). Returns 0 or VD_ENOMEM (@s unchanged). Both strings are copied. */
VD_MUST_CHECK int vd_tls_attach_client(struct vd_sock *s, struct vd_tls_client *t, const char *sni,
                                       const char *verify_host);

/* Drives the handshake: 0 when complete, VD_EAGAIN (s->want set), VD_ETLSVERIFY or VD_ETLS. */
VD_MUST_CHECK int vd_tls_handshake(struct vd_sock *s);

/* After VD_ETLS/VD_ETLSVERIFY (or another error from the TLS transport): a short per-sock
 * description ("certificate has expired", "hostname mismatch", "unable to get local issuer
 * certificate"); "TLS error" when there is none. Never NULL; valid until the sock is closed. */
const char *vd_tls_error_detail(struct vd_sock *s);

/* Lets OpenSSL read more than one record per read(2) (read-ahead). Only for owners that read
 * until VD_EAGAIN every time, since poll does not see bytes buffered inside OpenSSL. */
void vd_tls_read_ahead(struct vd_sock *s);

/* The negotiated ALPN protocol ("http/1.1", "h2") or NULL; the SNI the client sent or NULL. */
const char *vd_tls_alpn(struct vd_sock *s);
const char *vd_tls_sni(struct vd_sock *s);

/* True when the session was resumed (for tests and the access log). */
bool vd_tls_resumed(struct vd_sock *s);

#endif
