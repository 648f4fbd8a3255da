/* SPDX-License-Identifier: MIT */
/* Between the connection (front_h1.c owns the socket, its timer and its place in the worker)
 * and the HTTP/2 session that takes it over after ALPN "h2" or the h2c connection preface. */
#ifndef VD_FRONT_INT_H
#define VD_FRONT_INT_H

#include "vd/proxy.h"

/* The client connection as the HTTP/2 session sees it. Everything is borrowed from the
 * connection, which outlives the session. */
struct vd_h2_host {
    struct vd_sock *sock;
    struct vd_worker *w;
    struct vd_conf *conf; /* the connection's snapshot (its reference) */
    size_t listener;
    const struct sockaddr *peer;
    const char *peer_text;
    struct vd_log_ctx log;
    bool tls;
    void *conn;
    void (*set_timer)(void *conn, uint64_t ms); /* 0 stops it; expiry calls vd_h2_timeout */
    void (*close)(void *conn);                  /* closes the connection (calls vd_h2_free) */
};

struct vd_h2;

/* The 24 octets every HTTP/2 client sends first (RFC 9113 §3.4). */
#define VD_H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define VD_H2_PREFACE_LEN 24

/* Sets up an HTTP/2 server session on @host's socket, without any I/O yet. Returns NULL when
 * out of memory (the caller closes). */
struct vd_h2 *vd_h2_start(const struct vd_h2_host *host);
/* Feeds @early (bytes already read: the h2c preface and what followed it; may be empty), sends
 * the server preface, and from then on runs on socket events. May close the connection. */
void vd_h2_input(struct vd_h2 *h, const uint8_t *early, size_t n);
/* Socket readiness (VD_WANT_* bits). */
void vd_h2_event(struct vd_h2 *h, int ev);
/* The connection's timer expired. */
void vd_h2_timeout(struct vd_h2 *h);
/* Graceful shutdown (drain, reload): GOAWAY, running streams finish, then the connection
 * closes. */
void vd_h2_drain(struct vd_h2 *h);
/* The connection is closing: every stream is aborted and logged; memory is freed later. */
void vd_h2_free(struct vd_h2 *h);

#endif
