/* SPDX-License-Identifier: MIT */
/* A non-blocking stream socket on a libuv loop with a stackable transport (curl's connection
 * filters): plain TCP or TLS (src/tls). The owner gets readiness callbacks and calls read/writev;
 * the transport says which readiness it waits for, so TLS renegotiation-style needs (read while
 * writing) are handled below the owner. */
#ifndef VD_SOCK_H
#define VD_SOCK_H

#include <sys/types.h>
#include <sys/uio.h>
#include <uv.h>

#include "vd/common.h"

struct vd_sock;

#define VD_WANT_READ  1
#define VD_WANT_WRITE 2

struct vd_xport_ops {
    const char *name; /* "tcp", "tls" */
    /* Reads up to @len bytes. Returns >0 bytes, 0 at orderly EOF, VD_EAGAIN (with s->want set),
     * or a negative error. */
    ssize_t (*read)(struct vd_sock *s, uint8_t *buf, size_t len);
    /* Writes from @iov. Returns bytes written (>0), VD_EAGAIN (s->want set), or an error. */
    ssize_t (*writev)(struct vd_sock *s, const struct iovec *iov, int iovcnt);
    /* Ends the write direction (FIN, or TLS close_notify then FIN). */
    int (*shutdown)(struct vd_sock *s);
    /* Frees transport state (not the fd). */
    void (*destroy)(struct vd_sock *s);
    /* Virtual transports only (no fd: a stream inside an HTTP/2 connection), NULL otherwise.
     * Readiness comes from the transport, not from the loop: @arm records the interest (the
     * transport calls on_event when it holds), @close ends the stream and calls on_close from
     * the loop later. */
    void (*arm)(struct vd_sock *s, int events);
    void (*close)(struct vd_sock *s);
    /* Whether a read would make progress that the fd's readiness does not announce: bytes a
     * layer holds, decrypted or not yet (TLS, and TLS inside TLS). NULL: never (TCP). */
    bool (*pending)(struct vd_sock *s);
};

typedef void (*vd_sock_cb)(struct vd_sock *s, int events);
typedef void (*vd_sock_close_cb)(struct vd_sock *s);

struct vd_sock {
    uv_poll_t poll; /* embedded; owner freed only after close_cb */
    int fd;
    int armed; /* VD_WANT_* currently registered with the loop */
    int want;  /* VD_WANT_* the transport asked for on its last VD_EAGAIN */
    bool closing;
    /* Plain TCP: writes carry MSG_MORE (more bytes follow at once, so a partial segment waits
     * for them; the first write without it sends). Ignored by other transports. */
    bool more;
    const struct vd_xport_ops *ops;
    void *xp;            /* transport state (SSL *), owned by ops */
    vd_sock_cb on_event; /* called with VD_WANT_READ/VD_WANT_WRITE bits that are ready */
    vd_sock_close_cb on_close;
    void *data; /* owner */
};

extern const struct vd_xport_ops vd_xport_tcp;

/* Adopts non-blocking @fd on @loop with the TCP transport. Returns 0 or -errno (fd not closed). */
VD_MUST_CHECK int vd_sock_init(uv_loop_t *loop, struct vd_sock *s, int fd);

/* Sets up @s as a virtual socket (fd -1) driven by @ops (which has arm and close) with
 * transport state @xp. */
void vd_sock_init_virtual(struct vd_sock *s, const struct vd_xport_ops *ops, void *xp);

/* True when @s is plain TCP: a short read means the socket is drained, and the fd carries the
 * stream's own bytes (splice may move them). False for TLS (at any depth), whose layers may hold
 * bytes poll cannot see: its owner reads until VD_EAGAIN. */
static inline bool
vd_sock_is_plain(const struct vd_sock *s)
{
    return s->ops == &vd_xport_tcp;
}

/* True when reading @s now would return bytes (or an end) that poll will not report because a
 * transport layer already holds them. An owner that stops reading before VD_EAGAIN and waits for
 * readiness must check this first. */
static inline bool
vd_sock_pending(struct vd_sock *s)
{
    return s->ops->pending != NULL && s->ops->pending(s);
}

/* Arms readiness interest (VD_WANT_* bits); 0 disarms. Cheap when unchanged. */
void vd_sock_arm(struct vd_sock *s, int events);

static inline ssize_t
vd_sock_read(struct vd_sock *s, uint8_t *buf, size_t len)
{
    return s->ops->read(s, buf, len);
}

static inline ssize_t
vd_sock_writev(struct vd_sock *s, const struct iovec *iov, int iovcnt)
{
    return s->ops->writev(s, iov, iovcnt);
}

/* Closes: destroys the transport, closes the fd, then calls on_close from the loop. */
void vd_sock_close(struct vd_sock *s);

/* Starts a non-blocking connect to @sa; completion is signalled as VD_WANT_WRITE readiness; then
 * call vd_sock_connect_result(). @cc names the TCP congestion control (NULL: the system's; one
 * the kernel refuses is logged once and the connection goes on with the system's). Returns 0 or
 * -errno. */
VD_MUST_CHECK int vd_sock_connect(uv_loop_t *loop, struct vd_sock *s, const struct sockaddr *sa,
                                  socklen_t salen, const char *cc);

/* After connect readiness: 0 when connected, else -errno (SO_ERROR). */
int vd_sock_connect_result(struct vd_sock *s);

/* True when @a and @b name the same IPv4 or IPv6 address and port, the port not 0 (which asks
 * the kernel for a free one, so two of them never clash). */
bool vd_sockaddr_same_port(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

#define VD_SOCKADDR_TEXT 48 /* "[ffff:...:ffff]:65535" and its NUL fit */

/* Writes @sa as text into @out (capacity @cap, NUL-terminated): "1.2.3.4:80" / "[::1]:80" with
 * @port, "1.2.3.4" / "::1" (no brackets) without. Other families give "unix". Returns @out. */
char *vd_sockaddr_text(const struct sockaddr *sa, bool port, char *out, size_t cap);

/* Chooses, per worker, how large file-backed bodies leave on plain TCP: sendfile(2), or one
 * write(2) from the file's read-only mapping. Which is cheaper depends on the machine, not on
 * viaduct: sendfile hands TCP the pages but only 64 KiB per internal send, and where the
 * connection paces itself (bbr without the fq qdisc) each of those sends may arm a pacing timer,
 * which costs a VM exit on some hypervisors and next to nothing on others (measured 1 MiB hits:
 * sendfile 1.8x the write on one virtual machine, 0.6-0.85x on another; docs/performance.md).
 *
 * So the worker measures, in spans of VD_SENDPICK_SPAN bytes of file bodies sent one way. A
 * span's cost is the worker thread's whole CPU time (CLOCK_THREAD_CPUTIME_ID, what /proc counts
 * for the process) per byte over its second half: the ways leave state behind in the
 * connections they use (a span right after the other way costs what the mix costs, not what
 * its way costs), so the first half lets that settle. Timing single send calls, or short
 * epochs of either way, measured the mix: both ways came out alike at the dearer cost.
 * A cycle is VD_SENDPICK_PAIRS pairs of spans, one of each way, the order turned every pair
 * (so neither is always the one after the other), then VD_SENDPICK_EXPLOIT spans of the way
 * most pairs voted for. Two spans in a row meet the machine in the same phase, so a pair
 * compares the ways, not the moments. A pair votes for the write only when it cost at most
 * VD_SENDPICK_MARGIN % of sendfile's: even settled, spans that follow the other way measure a
 * difference smaller than runs of one way show (here: the write 0.8-0.9x sendfile in pairs,
 * 1.3-2x in runs of one way each), and sendfile copies nothing. A measured half that took more
 * than VD_SENDPICK_WALL_MS of wall time measured mostly other work: its pair does not vote,
 * and with no votes the last choice stays (sendfile at first). */
enum vd_send_way {
    VD_SEND_SENDFILE,
    VD_SEND_WRITE,
};

#define VD_SENDPICK_SPAN    (1024u << 20) /* bytes of file bodies */
#define VD_SENDPICK_SETTLE  (512u << 20)  /* not measured: the connections settle */
#define VD_SENDPICK_PAIRS   5
#define VD_SENDPICK_EXPLOIT 100
#define VD_SENDPICK_WALL_MS 5000
#define VD_SENDPICK_MARGIN  80 /* a pair votes for the write at <= 80 % of sendfile's cost */

struct vd_sendpick {
    uint64_t cost[2]; /* each way's last measured half, thread CPU ns per MiB (0: none) */
    uint32_t spans;   /* spans started */
    uint32_t decided; /* cycles whose pairs voted */
    uint8_t step;     /* in the cycle: < 2 * PAIRS pairs, then the chosen way */
    uint8_t votes, votes_write;
    bool pair_ok;          /* the pair's first span was measured */
    enum vd_send_way best; /* the last cycle's choice */
    bool open;             /* a span runs, by @way */
    bool timing;           /* its measured half has begun at cpu0/wall0 */
    enum vd_send_way way;
    uint64_t bytes; /* sent in this span */
    uint64_t cpu0, wall0;
};

/* The way for the next file-body send: the running span's, or the next span's. */
enum vd_send_way vd_sendpick_choose(struct vd_sendpick *sp);

/* Counts @bytes sent by the chosen way, reading the clocks where the span's measured half
 * begins and where the span ends. */
void vd_sendpick_sent(struct vd_sendpick *sp, size_t bytes);

/* vd_sendpick_sent() with the clocks given (unit tests): @cpu in vd_sendpick_clock() ns, @wall
 * in vd_sendpick_wall() ns. */
void vd_sendpick_sent_at(struct vd_sendpick *sp, size_t bytes, uint64_t cpu, uint64_t wall);

/* The calling thread's CPU time in ns (CLOCK_THREAD_CPUTIME_ID; a system call, no vDSO). */
uint64_t vd_sendpick_clock(void);

/* Monotonic wall time in ns (CLOCK_MONOTONIC_COARSE, vDSO). */
uint64_t vd_sendpick_wall(void);

#endif
