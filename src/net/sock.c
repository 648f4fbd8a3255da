/* SPDX-License-Identifier: MIT */
/* Non-blocking stream sockets on libuv's poll handle, and the plain TCP transport. We drive the
 * fd ourselves (read/writev) rather than through uv_stream_t so that transports can stack, the
 * owner controls back-pressure exactly, and splice(2) stays possible for tunnels. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vd/err.h"
#include "vd/log.h"
#include "vd/sock.h"

/* recv(2), send(2) and sendmsg(2) as plain system calls: glibc's wrappers are thread
 * cancellation points and switch asynchronous cancellation on and off around each call, about
 * 30 instructions per call on the request path; viaduct never cancels a thread. */
static inline ssize_t
sys_recv(int fd, void *buf, size_t len)
{
    return (ssize_t)syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}

static inline ssize_t
sys_send(int fd, const void *buf, size_t len, int flags)
{
    return (ssize_t)syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

static inline ssize_t
sys_sendmsg(int fd, const struct msghdr *m, int flags)
{
    return (ssize_t)syscall(SYS_sendmsg, fd, m, flags);
}

static ssize_t
tcp_read(struct vd_sock *s, uint8_t *buf, size_t len)
{
    for (;;) {
        ssize_t n = sys_recv(s->fd, buf, len);
        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->want = VD_WANT_READ;
            return VD_EAGAIN;
        }
        return -errno;
    }
}

static ssize_t
tcp_writev(struct vd_sock *s, const struct iovec *iov, int iovcnt)
{
    int flags = MSG_NOSIGNAL | (s->more ? MSG_MORE : 0);
    for (;;) {
        ssize_t n;
        if (iovcnt == 1) {
            n = sys_send(s->fd, iov[0].iov_base, iov[0].iov_len, flags);
        } else {
            struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
            n = sys_sendmsg(s->fd, &m, flags);
        }
        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->want = VD_WANT_WRITE;
            return VD_EAGAIN;
        }
        return -errno;
    }
}

static int
tcp_shutdown(struct vd_sock *s)
{
    return shutdown(s->fd, SHUT_WR) == 0 ? 0 : -errno;
}

static void
tcp_destroy(struct vd_sock *s)
{
    (void)s;
}

const struct vd_xport_ops vd_xport_tcp = {
    .name = "tcp",
    .read = tcp_read,
    .writev = tcp_writev,
    .shutdown = tcp_shutdown,
    .destroy = tcp_destroy,
};

static void
poll_cb(uv_poll_t *h, int status, int events)
{
    struct vd_sock *s = VD_CONTAINER_OF(h, struct vd_sock, poll);
    int ev = 0;
    if (s->closing) {
        return;
    }
    /* An error on the fd is reported as readiness in both directions: the next read or write
     * returns the error itself, which is where the owner handles it. */
    if (status < 0) {
        ev = s->armed ? s->armed : VD_WANT_READ;
    } else {
        if (events & (UV_READABLE | UV_DISCONNECT)) {
            ev |= VD_WANT_READ;
        }
        if (events & UV_WRITABLE) {
            ev |= VD_WANT_WRITE;
        }
    }
    s->on_event(s, ev);
}

int
vd_sock_init(uv_loop_t *loop, struct vd_sock *s, int fd)
{
    int r = uv_poll_init_socket(loop, &s->poll, fd);
    if (r < 0) {
        return r;
    }
    s->fd = fd;
    s->armed = 0;
    s->want = 0;
    s->closing = false;
    s->more = false;
    s->ops = &vd_xport_tcp;
    s->xp = NULL;
    return 0;
}

void
vd_sock_init_virtual(struct vd_sock *s, const struct vd_xport_ops *ops, void *xp)
{
    *s = (struct vd_sock){.fd = -1, .ops = ops, .xp = xp};
}

void
vd_sock_arm(struct vd_sock *s, int events)
{
    if (s->closing) {
        return;
    }
    if (s->ops->arm) {
        s->armed = events;
        s->ops->arm(s, events);
        return;
    }
    if (events == s->armed) {
        return;
    }
    s->armed = events;
    if (events == 0) {
        uv_poll_stop(&s->poll);
        return;
    }
    int uvev = 0;
    if (events & VD_WANT_READ) {
        uvev |= UV_READABLE;
    }
    if (events & VD_WANT_WRITE) {
        uvev |= UV_WRITABLE;
    }
    /* uv_poll_start on an active handle only changes the mask (one epoll_ctl). */
    if (uv_poll_start(&s->poll, uvev, poll_cb) < 0) {
        s->armed = 0;
    }
}

static void
close_cb(uv_handle_t *h)
{
    struct vd_sock *s = VD_CONTAINER_OF((uv_poll_t *)(void *)h, struct vd_sock, poll);
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (s->on_close) {
        s->on_close(s);
    }
}

void
vd_sock_close(struct vd_sock *s)
{
    if (s->closing) {
        return;
    }
    s->closing = true;
    s->armed = 0;
    if (s->ops && s->ops->close) {
        s->ops->close(s);
        return;
    }
    if (s->ops && s->ops->destroy) {
        s->ops->destroy(s);
    }
    s->xp = NULL;
    /* The fd is closed in close_cb, after libuv has removed it from epoll. */
    uv_close((uv_handle_t *)&s->poll, close_cb);
}

int
vd_sock_connect(uv_loop_t *loop, struct vd_sock *s, const struct sockaddr *sa, socklen_t salen,
                const char *cc)
{
    static atomic_bool cc_warned;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc)) < 0 &&
        !atomic_exchange(&cc_warned, true)) {
        /* Checked when the configuration was loaded; a module unloaded since then lands here. */
        vd_log(VD_LOG_WARN, NULL,
               "upstream.tcp_congestion %s: %s (using the system's; logged once)", cc,
               vd_strerror(-errno));
    }
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    int r = vd_sock_init(loop, s, fd);
    if (r < 0) {
        close(fd);
        return r;
    }
    return 0;
}

int
vd_sock_connect_result(struct vd_sock *s)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        return -errno;
    }
    return -err;
}

bool
vd_sockaddr_same_port(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return false;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port != 0 && x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family != AF_INET6) {
        return false;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port != 0 && x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

char *
vd_sockaddr_text(const struct sockaddr *sa, bool port, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        if (port) {
            snprintf(out, cap, "%s:%u", ip, ntohs(s4->sin_port));
        } else {
            snprintf(out, cap, "%s", ip);
        }
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        if (port) {
            snprintf(out, cap, "[%s]:%u", ip, ntohs(s6->sin6_port));
        } else {
            snprintf(out, cap, "%s", ip);
        }
    } else {
        snprintf(out, cap, "unix");
    }
    return out;
}

/* In the cycle's pairs of spans (measuring), not yet on the chosen way. */
static bool
sendpick_exploring(const struct vd_sendpick *sp)
{
    return sp->step < 2 * VD_SENDPICK_PAIRS;
}

enum vd_send_way
vd_sendpick_choose(struct vd_sendpick *sp)
{
    if (sp->open) {
        return sp->way;
    }
    enum vd_send_way way = sp->best;
    if (sendpick_exploring(sp)) {
        /* Pair p: sendfile first when p is even, the write first when odd. */
        bool first = sp->step % 2 == 0, even = (sp->step / 2) % 2 == 0;
        way = first == even ? VD_SEND_SENDFILE : VD_SEND_WRITE;
    }
    sp->spans++;
    sp->open = true;
    sp->timing = false;
    sp->way = way;
    sp->bytes = 0;
    return way;
}

/* The end of an exploring span: its cost, the pair's vote, the cycle's choice. */
static void
sendpick_measured(struct vd_sendpick *sp, bool ok, uint64_t cpu, uint64_t wall)
{
    ok = ok && cpu >= sp->cpu0 && wall - sp->wall0 <= (uint64_t)VD_SENDPICK_WALL_MS * 1000000u;
    if (ok) {
        /* ns per MiB; a thread's CPU time is at most the wall time, under 5 s (2^33 ns): the
         * shift stays below 2^53 */
        sp->cost[sp->way] = ((cpu - sp->cpu0) << 20) / (sp->bytes - VD_SENDPICK_SETTLE);
    }
    if (sp->step % 2 == 0) {
        sp->pair_ok = ok;
    } else if (sp->pair_ok && ok) {
        sp->votes++;
        /* the write must be clearly cheaper: sendfile copies nothing, and alternating ways
         * compresses their difference (vd/sock.h) */
        sp->votes_write +=
            sp->cost[VD_SEND_WRITE] * 100 <= sp->cost[VD_SEND_SENDFILE] * VD_SENDPICK_MARGIN;
    }
    if (sp->step == 2 * VD_SENDPICK_PAIRS - 1 && sp->votes) {
        sp->best = 2 * sp->votes_write > sp->votes ? VD_SEND_WRITE : VD_SEND_SENDFILE;
        sp->decided++;
    }
}

void
vd_sendpick_sent_at(struct vd_sendpick *sp, size_t bytes, uint64_t cpu, uint64_t wall)
{
    if (!sp->open) {
        return;
    }
    bool exploring = sendpick_exploring(sp), fresh = false;
    sp->bytes += bytes;
    if (exploring && !sp->timing && sp->bytes >= VD_SENDPICK_SETTLE) {
        /* The first half is over: the measured half starts at this send's end, and the bytes
         * it sent past the mark are not counted (they were sent before the clock started). */
        sp->timing = true;
        sp->cpu0 = cpu;
        sp->wall0 = wall;
        if (sp->bytes < VD_SENDPICK_SPAN) {
            sp->bytes = VD_SENDPICK_SETTLE;
            return;
        }
        fresh = true; /* one send over the whole second half: nothing measured */
    }
    if (sp->bytes < VD_SENDPICK_SPAN) {
        return;
    }
    sp->open = false;
    if (exploring) {
        sendpick_measured(sp, sp->timing && !fresh, cpu, wall);
    }
    sp->step = (uint8_t)((sp->step + 1) % (2 * VD_SENDPICK_PAIRS + VD_SENDPICK_EXPLOIT));
    if (sp->step == 0) {
        sp->votes = 0;
        sp->votes_write = 0;
    }
}

void
vd_sendpick_sent(struct vd_sendpick *sp, size_t bytes)
{
    if (!sp->open) {
        return;
    }
    uint64_t at = sp->bytes + bytes;
    bool exploring = sendpick_exploring(sp);
    if (at >= VD_SENDPICK_SPAN || (exploring && !sp->timing && at >= VD_SENDPICK_SETTLE)) {
        /* only here are the clocks needed: twice per exploring span */
        vd_sendpick_sent_at(sp, bytes, exploring ? vd_sendpick_clock() : 0,
                            exploring ? vd_sendpick_wall() : 0);
    } else {
        sp->bytes = at;
    }
}

uint64_t
vd_sendpick_clock(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0; /* fails only before Linux 2.6.12: every span costs 0 and the ways tie */
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
vd_sendpick_wall(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
