/* SPDX-License-Identifier: MIT */
/* Tunnels (RFC 9110 §9.3.6 CONNECT, §7.8 Upgrade): two directions pumped independently with
 * half-close passed through, splice(2) between plain TCP sockets, one bounded buffer per
 * direction otherwise. Each wake-up moves at most a fixed budget so that one busy tunnel cannot
 * starve the others on the same loop. */
#include "vd/config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vd/buf.h"
#include "vd/err.h"
#include "vd/log.h"
#include "vd/tunnel.h"

#define TUN_MAGIC     0x54554e31u
#define PIPE_BYTES    (1024 * 1024) /* splice pipe size asked for (the kernel may give less) */
#define PUMP_BUDGET   (1024 * 1024) /* bytes one direction moves per wake-up */
#define TLS_ALERT_LEN 7

struct dir {
    struct vd_sock *src, *dst;
    struct vd_buf buf; /* buffered path: bytes read from src not yet written to dst */
    int pipe[2];       /* splice path: -1 until first used */
    size_t in_pipe;    /* bytes inside the pipe */
    size_t pipe_cap;
    bool splice;    /* this direction may splice */
    bool src_eof;   /* src sent FIN */
    bool dst_shut;  /* FIN passed on to dst */
    int wait_src;   /* VD_WANT_* src asked for on its last VD_EAGAIN, 0 when not waiting */
    int wait_dst;   /* likewise for dst */
    uint64_t bytes; /* relayed (written to dst) */
    bool again;     /* used up its budget with more ready: continued from the idle handle */
};

enum sniff_state {
    SN_OFF,
    SN_WAIT, /* classifying */
    SN_DONE,
};

struct saved {
    vd_sock_cb on_event;
    void *data;
};

struct vd_tunnel {
    uint32_t magic;
    struct vd_sock *s[2];
    struct saved saved[2];
    struct dir d[2]; /* d[0]: s[0] (client) to s[1]; d[1]: s[1] to s[0] */
    uv_loop_t *loop;
    uv_timer_t timer; /* idle and sniff deadlines */
    uv_idle_t idle;   /* continues a direction that used up its budget */
    int closes;       /* handles still closing */
    uint64_t last_ms; /* last byte moved */
    struct vd_tunnel_opts o;
    struct vd_tunnel_cbs cb;
    void *arg;
    enum sniff_state sn;
    uint64_t sniff_deadline;
    struct vd_dbuf sniff_copy; /* client bytes seen while classifying without holding */
    struct vd_tunnel_stats st;
    bool finished;
    bool repump;        /* a classification was decided: both directions may move again */
    bool early_check;   /* the client's early bytes still need classifying */
    bool client_spoke;  /* a client byte was seen: the server's greeting is not classified */
    bool greeting_seen; /* the server's first bytes were looked at */
};

static void tun_idle(uv_idle_t *h);

static bool
dir_pending(const struct dir *d)
{
    return d->buf.len > 0 || d->in_pipe > 0;
}

/* ---- teardown ------------------------------------------------------------------------------ */

static void
tun_handle_closed(uv_handle_t *h)
{
    struct vd_tunnel *tn = h->data;
    if (--tn->closes > 0) {
        return;
    }
    tn->magic = 0;
    free(tn);
}

/* Returns the sockets to their owners and frees everything but the handles' memory. */
static void
tun_release(struct vd_tunnel *tn)
{
    for (int i = 0; i < 2; i++) {
        struct dir *d = &tn->d[i];
        vd_buf_release(&d->buf);
        if (d->pipe[0] >= 0) {
            close(d->pipe[0]);
            close(d->pipe[1]);
            d->pipe[0] = d->pipe[1] = -1;
        }
        struct vd_sock *s = tn->s[i];
        vd_sock_arm(s, 0);
        s->on_event = tn->saved[i].on_event;
        s->data = tn->saved[i].data;
    }
    vd_dbuf_free(&tn->sniff_copy);
    tn->finished = true;
    tn->closes = 2;
    uv_timer_stop(&tn->timer);
    uv_idle_stop(&tn->idle);
    uv_close((uv_handle_t *)&tn->timer, tun_handle_closed);
    uv_close((uv_handle_t *)&tn->idle, tun_handle_closed);
}

static void
set_reset(struct vd_sock *s)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (s->fd >= 0) {
        (void)setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
}

static void
tun_finish(struct vd_tunnel *tn, enum vd_tunnel_end_reason reason)
{
    if (tn->finished) {
        return;
    }
    tn->st.reason = reason;
    tn->st.bytes[0] = tn->d[0].bytes;
    tn->st.bytes[1] = tn->d[1].bytes;
    if (reason != VD_TUN_END_CLOSED) {
        /* An abortive close tells each peer the tunnel did not end cleanly; a graceful close
         * after an idle timeout or a refusal would look like a normal end of data. */
        set_reset(tn->s[0]);
        set_reset(tn->s[1]);
    }
    struct vd_tunnel_stats st = tn->st;
    void (*done)(void *, const struct vd_tunnel_stats *) = tn->cb.on_done;
    void *arg = tn->arg;
    tun_release(tn);
    done(arg, &st);
}

void
vd_tunnel_abort(struct vd_tunnel *tn, struct vd_tunnel_stats *st)
{
    if (!tn || tn->finished) {
        return;
    }
    tn->st.bytes[0] = tn->d[0].bytes;
    tn->st.bytes[1] = tn->d[1].bytes;
    tn->st.reason = VD_TUN_END_RESET;
    if (st) {
        *st = tn->st;
    }
    tun_release(tn);
}

/* ---- moving bytes -------------------------------------------------------------------------- */

static bool
plain_tcp(const struct vd_sock *s)
{
    return s->ops == &vd_xport_tcp;
}

/* Fixes both sockets' send and receive buffers at o.sockbuf when both paths are short (smoothed
 * RTT below o.sockbuf_rtt). Autotuning grows a bulk transfer's buffers to megabytes; on a short
 * path that only keeps more bytes in flight, and bytes that wait long enough leave the CPU caches
 * before the receiver copies them (docs/performance.md: +30 % MB/s and -20 % CPU for a loopback
 * download). A long path keeps autotuning: there a fixed buffer would cap the window. */
static void
tun_fix_buffers(struct vd_tunnel *tn)
{
    if (!tn->o.sockbuf) {
        return;
    }
    for (int i = 0; i < 2; i++) {
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        if (getsockopt(tn->s[i]->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || ti.tcpi_rtt == 0 ||
            ti.tcpi_rtt >= tn->o.sockbuf_rtt) {
            return;
        }
    }
    int size = (int)tn->o.sockbuf;
    for (int i = 0; i < 2; i++) {
        /* A failure leaves that buffer to autotuning, which is correct, only slower. */
        (void)setsockopt(tn->s[i]->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        (void)setsockopt(tn->s[i]->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
}

static int
dir_pipe_open(struct dir *d)
{
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        d->pipe[0] = d->pipe[1] = -1;
        return -errno;
    }
    int got = fcntl(d->pipe[1], F_SETPIPE_SZ, PIPE_BYTES);
    if (got < 0) {
        got = fcntl(d->pipe[1], F_GETPIPE_SZ);
    }
    d->pipe_cap = got > 0 ? (size_t)got : 65536;
    return 0;
}

/* Writes what is pending to dst. Returns bytes written (> 0), VD_EAGAIN (wait_dst set), or an
 * error. */
static ssize_t
dir_write(struct dir *d)
{
    if (d->buf.len) {
        struct iovec iov = {d->buf.base + d->buf.off, d->buf.len};
        ssize_t w = vd_sock_writev(d->dst, &iov, 1);
        if (w == VD_EAGAIN) {
            d->wait_dst = d->dst->want ? d->dst->want : VD_WANT_WRITE;
        } else if (w > 0) {
            vd_buf_consume(&d->buf, (uint32_t)w);
        }
        return w == 0 ? VD_ECLOSED : w;
    }
    for (;;) {
        ssize_t w = splice(d->pipe[0], NULL, d->dst->fd, NULL, d->in_pipe,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (w > 0) {
            d->in_pipe -= (size_t)w;
            return w;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno == EAGAIN) {
            d->wait_dst = VD_WANT_WRITE;
            return VD_EAGAIN;
        }
        return w < 0 ? -errno : VD_ECLOSED;
    }
}

/* Reads from src into the buffer or the pipe. Returns bytes (> 0), 0 at EOF, VD_EAGAIN
 * (wait_src set), or an error. @buffered forces the buffer (classification needs the bytes). */
static ssize_t
dir_read(struct dir *d, bool buffered, size_t cap)
{
    if (!buffered && d->splice && d->buf.len == 0) {
        if (d->pipe[0] < 0 && dir_pipe_open(d) < 0) {
            d->splice = false;
        } else {
            for (;;) {
                ssize_t r = splice(d->src->fd, NULL, d->pipe[1], NULL, d->pipe_cap - d->in_pipe,
                                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                if (r >= 0) {
                    d->in_pipe += (size_t)r;
                    return r;
                }
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN) {
                    d->wait_src = VD_WANT_READ;
                    return VD_EAGAIN;
                }
                return -errno;
            }
        }
    }
    if (!d->buf.base && vd_buf_acquire(&d->buf) < 0) {
        return VD_ENOMEM;
    }
    vd_buf_compact(&d->buf);
    if (cap > d->buf.cap && vd_buf_grow(&d->buf, (uint32_t)cap) < 0) {
        return VD_ENOMEM;
    }
    size_t room = vd_buf_room(&d->buf);
    if (room == 0) {
        return VD_ENOMEM; /* callers never read into a full buffer */
    }
    ssize_t r = vd_sock_read(d->src, vd_buf_tail(&d->buf), room);
    if (r > 0) {
        d->buf.len += (uint32_t)r;
    } else if (r == VD_EAGAIN) {
        d->wait_src = d->src->want ? d->src->want : VD_WANT_READ;
    }
    return r;
}

/* ---- classification ------------------------------------------------------------------------ */

static const uint8_t tls_alert_denied[TLS_ALERT_LEN] = {
    0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49, /* fatal access_denied (RFC 8446 §6.2) */
};

/* The classification is known: ask the owner. Returns false when the tunnel was refused (and
 * finished). */
static bool
sniff_decide(struct vd_tunnel *tn)
{
    tn->sn = SN_DONE;
    tn->st.sniffed = true;
    tn->repump = true;
    vd_dbuf_free(&tn->sniff_copy);
    if (!tn->cb.on_sniffed || tn->cb.on_sniffed(tn->arg, &tn->st.sniff)) {
        return true;
    }
    struct dir *d = &tn->d[0];
    vd_buf_release(&d->buf); /* the held client bytes never reach the server */
    if (tn->st.sniff.proto == VD_PROTO_TLS) {
        /* Best effort: one small write the socket always takes after the 200. */
        struct iovec iov = {(void *)tls_alert_denied, sizeof(tls_alert_denied)};
        (void)vd_sock_writev(tn->s[0], &iov, 1);
    }
    tun_finish(tn, VD_TUN_END_DENIED);
    return false;
}

/* Client bytes arrived while classifying. Returns false when the tunnel finished. */
static bool
sniff_client(struct vd_tunnel *tn, bool timed_out)
{
    struct dir *d = &tn->d[0];
    const uint8_t *p;
    size_t n;
    if (tn->o.flags & VD_TUN_HOLD) {
        p = vd_buf_data(&d->buf);
        n = d->buf.len;
    } else {
        p = (const uint8_t *)tn->sniff_copy.p;
        n = tn->sniff_copy.len;
    }
    memset(&tn->st.sniff, 0, sizeof(tn->st.sniff));
    enum vd_sniff_state r = n ? vd_sniff_client(p, n, &tn->st.sniff) : VD_SNIFF_MORE;
    if (r == VD_SNIFF_MORE && !timed_out && n < tn->o.sniff_bytes && n < VD_SNIFF_MAX) {
        return true;
    }
    if (r == VD_SNIFF_MORE) {
        memset(&tn->st.sniff, 0, sizeof(tn->st.sniff)); /* undecided: unknown */
    }
    return sniff_decide(tn);
}

/* ---- the pump ------------------------------------------------------------------------------ */

/* True when direction @d can take more bytes from its source: the pipe or buffer has room
 * (@cap: the size a held buffer may grow to). */
static bool
dir_room(const struct dir *d, bool buffered, size_t cap)
{
    if (!buffered && d->splice && d->buf.len == 0) {
        return d->pipe[0] < 0 || d->in_pipe < d->pipe_cap;
    }
    if (!d->buf.base) {
        return true;
    }
    return d->buf.len < VD_MAX((size_t)d->buf.cap, cap);
}

/* Moves bytes in direction @i until both ends would block, the source ended, or the budget ran
 * out. Reading goes on while earlier bytes wait for the destination, as long as the pipe or
 * buffer has room, so both sockets stay busy. Returns 0, 1 when the budget ran out (more may be
 * ready), or a negative error (the tunnel must end). */
static int
dir_pump(struct vd_tunnel *tn, int i)
{
    struct dir *d = &tn->d[i];
    size_t moved = 0;
    bool dst_blocked = false, src_blocked = false;
    d->wait_src = d->wait_dst = 0;
    if (i == 0 && tn->early_check) {
        tn->early_check = false;
        if (!sniff_client(tn, false)) {
            return VD_EDENIED;
        }
    }
    for (;;) {
        bool holding = i == 0 && tn->sn == SN_WAIT && (tn->o.flags & VD_TUN_HOLD);
        bool progress = false;
        if (dir_pending(d) && !holding && !dst_blocked) {
            ssize_t w = dir_write(d);
            if (w == VD_EAGAIN) {
                dst_blocked = true;
            } else if (w < 0) {
                return (int)w;
            } else {
                d->bytes += (uint64_t)w;
                moved += (size_t)w;
                progress = true;
            }
        }
        /* The client's bytes are classified until decided; the server's greeting only from its
         * first read, and only while the client has not spoken. */
        bool sniffing = tn->sn == SN_WAIT && (i == 0 || (!tn->client_spoke && !tn->greeting_seen));
        size_t cap = holding ? tn->o.sniff_bytes : 0;
        if (holding && d->buf.base && d->buf.len >= VD_MAX((size_t)d->buf.cap, cap)) {
            /* Held bytes reached sniff_bytes: decide on what there is. */
            if (!sniff_client(tn, true)) {
                return VD_EDENIED;
            }
            continue;
        }
        if (!d->src_eof && !src_blocked && dir_room(d, sniffing, cap)) {
            ssize_t r = dir_read(d, sniffing, cap);
            if (r == VD_EAGAIN) {
                src_blocked = true;
            } else if (r == 0) {
                d->src_eof = true;
                progress = true;
            } else if (r < 0) {
                return (int)r;
            } else {
                progress = true;
                if (sniffing && i == 0) {
                    tn->client_spoke = true;
                    bool full = false;
                    if (!(tn->o.flags & VD_TUN_HOLD)) {
                        /* Past sniff_bytes the copy stops: classify what was kept. */
                        const uint8_t *p = vd_buf_data(&d->buf) + d->buf.len - (size_t)r;
                        full = vd_dbuf_add(&tn->sniff_copy, p, (size_t)r) < 0;
                    }
                    if (!sniff_client(tn, full)) {
                        return VD_EDENIED;
                    }
                } else if (sniffing && i == 1) {
                    /* The server spoke first: its greeting names the protocol when evident. */
                    tn->greeting_seen = true;
                    struct vd_sniff sv;
                    memset(&sv, 0, sizeof(sv));
                    if (vd_sniff_server(vd_buf_data(&d->buf), d->buf.len, &sv) == VD_SNIFF_DONE &&
                        sv.proto != VD_PROTO_UNKNOWN) {
                        tn->st.sniff = sv;
                        if (!sniff_decide(tn)) {
                            return VD_EDENIED;
                        }
                    }
                }
            }
        }
        if (d->src_eof && !dir_pending(d)) {
            if (holding) {
                /* The client finished before the classification: decide on what there is. */
                if (!sniff_client(tn, true)) {
                    return VD_EDENIED;
                }
                continue;
            }
            if (!d->dst_shut) {
                d->dst_shut = true;
                (void)d->dst->ops->shutdown(d->dst);
            }
            return 0;
        }
        if (d->src_eof && holding) {
            if (!sniff_client(tn, true)) {
                return VD_EDENIED;
            }
            continue;
        }
        if (progress) {
            tn->last_ms = uv_now(tn->loop);
        }
        if (!progress) {
            return 0;
        }
        if (moved >= PUMP_BUDGET) {
            return 1;
        }
    }
}

static int
interest(const struct vd_tunnel *tn, int side)
{
    int ev = 0;
    const struct vd_sock *s = tn->s[side];
    for (int i = 0; i < 2; i++) {
        const struct dir *d = &tn->d[i];
        if (d->src == s) {
            ev |= d->wait_src;
        }
        if (d->dst == s) {
            ev |= d->wait_dst;
        }
    }
    return ev;
}

static bool
dir_done(const struct dir *d)
{
    return d->src_eof && d->dst_shut && !dir_pending(d);
}

/* Pumps the directions selected in @which (again while a classification unblocks them), then
 * ends the tunnel or re-arms the sockets. */
static void
tun_pump(struct vd_tunnel *tn, bool d0, bool d1)
{
    bool which[2] = {d0, d1};
    do {
        tn->repump = false;
        for (int i = 0; i < 2; i++) {
            struct dir *d = &tn->d[i];
            if (!which[i] || dir_done(d)) {
                continue;
            }
            d->again = false;
            int r = dir_pump(tn, i);
            if (tn->finished) {
                return; /* refused: tun_finish ran */
            }
            if (r < 0) {
                tun_finish(tn, r == VD_ENOMEM ? VD_TUN_END_NOMEM : VD_TUN_END_RESET);
                return;
            }
            d->again = r == 1;
        }
        which[0] = which[1] = true;
    } while (tn->repump);
    if (dir_done(&tn->d[0]) && dir_done(&tn->d[1])) {
        tun_finish(tn, VD_TUN_END_CLOSED);
        return;
    }
    if (tn->d[0].again || tn->d[1].again) {
        uv_idle_start(&tn->idle, tun_idle);
    }
    vd_sock_arm(tn->s[0], interest(tn, 0));
    vd_sock_arm(tn->s[1], interest(tn, 1));
}

static void
tun_event(struct vd_sock *s, int ev)
{
    struct vd_tunnel *tn = s->data;
    VD_BUG_ON(tn->magic != TUN_MAGIC);
    bool p[2];
    for (int i = 0; i < 2; i++) {
        const struct dir *d = &tn->d[i];
        p[i] = (d->src == s && (d->wait_src & ev)) || (d->dst == s && (d->wait_dst & ev));
    }
    tun_pump(tn, p[0], p[1]);
}

static void
tun_idle(uv_idle_t *h)
{
    struct vd_tunnel *tn = h->data;
    uv_idle_stop(h);
    tun_pump(tn, tn->d[0].again, tn->d[1].again);
}

static void
tun_timer(uv_timer_t *h)
{
    struct vd_tunnel *tn = h->data;
    uint64_t now = uv_now(tn->loop);
    bool holding = tn->sn == SN_WAIT && (tn->o.flags & VD_TUN_HOLD);
    if (holding && now >= tn->sniff_deadline) {
        if (!sniff_client(tn, true)) {
            return;
        }
        tun_pump(tn, true, true);
        if (tn->finished) {
            return;
        }
    }
    if (now - tn->last_ms >= tn->o.idle_ms) {
        tun_finish(tn, VD_TUN_END_IDLE);
        return;
    }
    uint64_t due = tn->last_ms + tn->o.idle_ms;
    if (tn->sn == SN_WAIT && (tn->o.flags & VD_TUN_HOLD) && tn->sniff_deadline < due) {
        due = tn->sniff_deadline;
    }
    uv_timer_start(&tn->timer, tun_timer, due > now ? due - now : 1, 0);
}

/* Copies @a then @b into @d's buffer. */
static int
dir_preload(struct dir *d, struct vd_iov a, struct vd_iov b)
{
    size_t n = a.len + b.len;
    if (n == 0) {
        return 0;
    }
    if (vd_buf_acquire(&d->buf) < 0 || (n > d->buf.cap && vd_buf_grow(&d->buf, (uint32_t)n) < 0)) {
        vd_buf_release(&d->buf);
        return VD_ENOMEM;
    }
    if (a.len) {
        memcpy(vd_buf_tail(&d->buf), a.base, a.len);
        d->buf.len += (uint32_t)a.len;
    }
    if (b.len) {
        memcpy(vd_buf_tail(&d->buf), b.base, b.len);
        d->buf.len += (uint32_t)b.len;
    }
    return 0;
}

struct vd_tunnel *
vd_tunnel_start(uv_loop_t *loop, const struct vd_tunnel_end *client,
                const struct vd_tunnel_end *server, const struct vd_tunnel_opts *o,
                const struct vd_tunnel_cbs *cb, void *arg)
{
    struct vd_tunnel *tn = calloc(1, sizeof(*tn));
    if (!tn) {
        return NULL;
    }
    tn->magic = TUN_MAGIC;
    tn->loop = loop;
    tn->o = *o;
    if (tn->o.idle_ms == 0) {
        tn->o.idle_ms = UINT64_MAX / 4;
    }
    tn->cb = *cb;
    tn->arg = arg;
    tn->s[0] = client->sock;
    tn->s[1] = server->sock;
    bool splice = o->splice && plain_tcp(client->sock) && plain_tcp(server->sock);
    for (int i = 0; i < 2; i++) {
        struct dir *d = &tn->d[i];
        d->src = tn->s[i];
        d->dst = tn->s[1 - i];
        d->pipe[0] = d->pipe[1] = -1;
        d->splice = splice;
    }
    vd_dbuf_init(&tn->sniff_copy, o->sniff_bytes ? o->sniff_bytes : VD_SNIFF_MAX);
    if (dir_preload(&tn->d[0], server->unsent, client->early) < 0 ||
        dir_preload(&tn->d[1], client->unsent, server->early) < 0) {
        vd_buf_release(&tn->d[0].buf);
        vd_dbuf_free(&tn->sniff_copy);
        free(tn);
        return NULL;
    }
    if (o->flags & VD_TUN_SNIFF) {
        tn->sn = SN_WAIT;
        tn->sniff_deadline = uv_now(loop) + o->sniff_timeout;
        if (client->early.len) {
            tn->early_check = true;
            tn->client_spoke = true;
            if (!(o->flags & VD_TUN_HOLD)) {
                if (vd_dbuf_add(&tn->sniff_copy, client->early.base, client->early.len) < 0) {
                    /* More than sniff_bytes of early data: classify what was kept. */
                }
            }
        }
    }
    tn->st.spliced = splice;
    if (splice) {
        tun_fix_buffers(tn);
    }
    for (int i = 0; i < 2; i++) {
        tn->saved[i] = (struct saved){tn->s[i]->on_event, tn->s[i]->data};
        tn->s[i]->on_event = tun_event;
        tn->s[i]->data = tn;
    }
    uv_timer_init(loop, &tn->timer);
    tn->timer.data = tn;
    uv_idle_init(loop, &tn->idle);
    tn->idle.data = tn;
    tn->last_ms = uv_now(loop);
    uint64_t first = tn->o.idle_ms;
    if (tn->sn == SN_WAIT && (o->flags & VD_TUN_HOLD) && o->sniff_timeout < first) {
        first = o->sniff_timeout;
    }
    uv_timer_start(&tn->timer, tun_timer, first, 0);
    /* The first pump runs from the loop, so no callback fires inside vd_tunnel_start; it also
     * reads at once what a TLS transport may already hold decrypted. */
    tn->d[0].again = tn->d[1].again = true;
    uv_idle_start(&tn->idle, tun_idle);
    return tn;
}
