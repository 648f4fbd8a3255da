/* SPDX-License-Identifier: MIT */
/* A tunnel: a bidirectional byte pump between two sockets (CONNECT, a 101 Upgrade). Both
 * directions run at once; a FIN on one side is passed on (after what is pending) as a write
 * shutdown of the other side, whose direction keeps running; an error or reset on either side
 * ends both with a reset. Between two plain TCP sockets the bytes move with splice(2) through a
 * pipe and never enter user space; otherwise through one buffer per direction. The client's
 * first bytes can be classified (include/vd/sniff.h) and held until an access decision. */
#ifndef VD_TUNNEL_H
#define VD_TUNNEL_H

#include <uv.h>

#include "vd/sniff.h"
#include "vd/sock.h"

struct vd_tunnel;

/* One side. While the tunnel runs it owns the socket's events (on_event/data are restored
 * before on_done); the owner keeps the memory and closes the socket after on_done. */
struct vd_tunnel_end {
    struct vd_sock *sock;
    struct vd_iov early;  /* bytes already read from this side: delivered to the other first */
    struct vd_iov unsent; /* bytes still to be written to this side before any relayed byte */
};

enum {
    VD_TUN_SNIFF = 1, /* classify the first bytes (client side; else the server's greeting) */
    VD_TUN_HOLD = 2,  /* hold client bytes until classified and on_sniffed allows them */
};

enum vd_tunnel_end_reason {
    VD_TUN_END_CLOSED, /* both sides finished (FIN both ways) */
    VD_TUN_END_RESET,  /* a side reset or failed: both ended with a reset */
    VD_TUN_END_IDLE,   /* idle timeout */
    VD_TUN_END_DENIED, /* on_sniffed refused the tunnel */
    VD_TUN_END_NOMEM,  /* no buffer memory */
};

struct vd_tunnel_stats {
    uint64_t bytes[2]; /* [0]: client to server, [1]: server to client (relayed payload) */
    bool sniffed;      /* sniff holds a classification */
    struct vd_sniff sniff;
    bool spliced; /* the zero-copy path was used */
    enum vd_tunnel_end_reason reason;
};

struct vd_tunnel_cbs {
    /* The tunnel is over and freed its own resources; the sockets are the owners' again (set
     * SO_LINGER for a reset is already done when reason is RESET). Called once, never from
     * vd_tunnel_start or vd_tunnel_abort. */
    void (*on_done)(void *arg, const struct vd_tunnel_stats *st);
    /* The client's first bytes were classified (VD_TUN_SNIFF): return false to refuse the
     * tunnel (a TLS client is sent an access_denied alert). May be NULL. */
    bool (*on_sniffed)(void *arg, const struct vd_sniff *s);
};

struct vd_tunnel_opts {
    uint64_t idle_ms;       /* no byte in either direction for this long ends the tunnel */
    bool splice;            /* allow splice(2) when both sockets are plain TCP */
    uint32_t sockbuf;       /* spliced tunnels: fixed socket buffers of this size, 0: none */
    uint32_t sockbuf_rtt;   /* µs: ... only when both sockets' smoothed RTT is below this */
    unsigned flags;         /* VD_TUN_* */
    uint32_t sniff_bytes;   /* client bytes held at most while classifying */
    uint64_t sniff_timeout; /* ms a hold may last; then classified as what is known */
};

/* Starts relaying between @client (ends[0]) and @server (ends[1]) on @loop. The early/unsent
 * bytes are copied. Returns the tunnel, or NULL with nothing changed (out of memory). */
struct vd_tunnel *vd_tunnel_start(uv_loop_t *loop, const struct vd_tunnel_end *client,
                                  const struct vd_tunnel_end *server,
                                  const struct vd_tunnel_opts *o, const struct vd_tunnel_cbs *cb,
                                  void *arg);

/* Ends the tunnel now without calling on_done (the owner is going away). Socket events are
 * returned to their owners; the tunnel frees itself asynchronously. */
void vd_tunnel_abort(struct vd_tunnel *tn, struct vd_tunnel_stats *st);

#endif
