/* SPDX-License-Identifier: MIT */
/* HTTP/1.1 front session (RFC 9112): reads request heads and bodies from a client connection,
 * hands each exchange to the transaction layer, and writes responses with the framing the client
 * can take. One exchange at a time per connection: a pipelined request is parsed only when the
 * previous response is complete, which keeps responses in order (RFC 9112 §9.3.2). */
#include "vd/config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "front-int.h"
#include "vd/access.h"
#include "vd/err.h"
#include "vd/h1.h"
#include "vd/ltimer.h"
#include "vd/mcache.h"
#include "vd/proxy.h"
#include "vd/proxyproto.h"
#include "vd/sock.h"
#include "vd/tls.h"

#define H1C_MAGIC 0x48314331u
/* Bytes one send_splice call moves at most before it lets the loop run other connections (the
 * tunnel relay's 1 MiB per wake-up). */
#define VD_SPLICE_BUDGET (1024 * 1024)

enum h1c_state {
    ST_IDLE,   /* between exchanges, waiting for the first byte of a head */
    ST_HEAD,   /* part of a head received */
    ST_BODY,   /* reading the request body */
    ST_WAIT,   /* request complete, response in progress */
    ST_TUNNEL, /* the connection belongs to a tunnel (CONNECT, 101) until tunnel_end */
    ST_H2,     /* an HTTP/2 session (front_h2.c) runs the connection */
    ST_CLOSING,
};

struct h1c {
    uint32_t magic;
    struct vd_sock sock;    /* embedded; closed before the struct is freed */
    struct vd_ltimer timer; /* header, idle, body or send timeout, by state (see timer_set) */
    struct vd_list link;    /* in w->conns */
    struct vd_worker *w;
    struct vd_conf *conf; /* reference; refreshed between exchanges after a reload */
    size_t listener;
    uint64_t id;
    enum h1c_state state;

    union {
        struct sockaddr sa;
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;
    } peer; /* 28 bytes rather than sockaddr_storage's 128: idle memory counts */

    char peer_text[48];    /* "[v6]:port" fits in 47 */
    struct vd_log_ctx log; /* conn id and peer for the error log */
    bool tls;
    bool handshaken;
    uint64_t fresh_since; /* uv_now at accept, until the first request starts; then 0 */
    uint8_t *pp_buf; /* listeners[].proxy_protocol: the PROXY header so far, until it is read */
    size_t pp_len;

    struct vd_buf in;    /* client bytes; released while idle */
    struct vd_dbuf hout; /* serialized heads and chunk framing waiting to be written */
    struct vd_buf out;   /* body bytes the socket did not take yet */
    size_t hout_off;     /* bytes of hout already written */
    struct vd_dbuf tail; /* end-of-body framing queued behind body bytes in out */
    int pipe[2];         /* send_splice: a pipe from the worker's cache while bytes pass
                          * through it, -1 otherwise; its bytes come before anything queued */
    size_t in_pipe;      /* response bytes inside the pipe */

    struct vd_txn *txn; /* current exchange or NULL */
    struct vd_h2 *h2;   /* ST_H2: the session */
    bool h2_checked;    /* the first bytes were not the HTTP/2 preface */

    /* request body */
    uint64_t body_remain; /* VD_BODY_LENGTH: bytes still to read */
    struct vd_chunked chk;
    struct vd_dbuf req_trailers;
    const uint8_t *pend_p; /* decoded body bytes the handler has not accepted yet */
    size_t pend_n;
    bool body_paused;
    bool body_end_sent;

    /* response */
    bool resp_chunked; /* re-chunking for the client */
    bool resp_close;   /* close after this response */
    bool resp_done;    /* send_end called */
    bool resp_has_body;
    bool client_eof;    /* the client shut down its sending side */
    bool keepalive;     /* the client allows another exchange */
    bool handler_waits; /* a send_body came back short: call on_writable after draining */
    bool file_waits;    /* a send_file came back short with nothing queued: the socket is full,
                         * wait for write readiness (handler_waits is set too) */
    bool in_process;    /* re-entrancy guard for process_input() */
    bool expect_100;
    bool sent_100;
};

static void process_input(struct h1c *c);
static void send_early_error(struct h1c *c, int status, const char *why);
static void conn_close(struct h1c *c);
static void arm(struct h1c *c);
static void finish_exchange(struct h1c *c);
static void do_read(struct h1c *c);

static const struct vd_front_ops h1_front_ops;

static void timer_set(struct h1c *c, uint64_t ms);

static struct h1c *
txn_conn(struct vd_txn *t)
{
    struct h1c *c = t->front_data;
    VD_BUG_ON(c->magic != H1C_MAGIC);
    return c;
}

/* ---- output ---------------------------------------------------------------------------- */

static bool
out_pending(const struct h1c *c)
{
    return c->hout.len > c->hout_off || c->out.len > 0 || c->tail.len > 0 || c->in_pipe > 0;
}

/* ---- splice pipes -------------------------------------------------------------------------- */

/* Takes an empty pipe for @c from the worker's cache, or makes one. Returns 0 or -errno. */
static int
pipe_get(struct h1c *c)
{
    struct vd_worker *w = c->w;
    if (c->pipe[0] >= 0) {
        return 0;
    }
    if (w->nsplice_pipes) {
        w->nsplice_pipes--;
        c->pipe[0] = w->splice_pipes[w->nsplice_pipes][0];
        c->pipe[1] = w->splice_pipes[w->nsplice_pipes][1];
        return 0;
    }
    if (pipe2(c->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        c->pipe[0] = c->pipe[1] = -1;
        return -errno;
    }
    /* The default 64 KiB (16 pages) is kept: it bounds what a slow client holds, like the
     * 16 KiB output chunk plus the socket buffer, and a 64 KiB body fits in one splice. */
    return 0;
}

/* Gives @c's pipe back to the worker's cache when it is empty (the next spliced response of
 * any connection takes it), else closes it: bytes left in it belong to an aborted response. */
static void
pipe_put(struct h1c *c)
{
    struct vd_worker *w = c->w;
    if (c->pipe[0] < 0) {
        return;
    }
    if (c->in_pipe == 0 && !w->draining && w->nsplice_pipes < VD_ARRAY_LEN(w->splice_pipes)) {
        w->splice_pipes[w->nsplice_pipes][0] = c->pipe[0];
        w->splice_pipes[w->nsplice_pipes][1] = c->pipe[1];
        w->nsplice_pipes++;
    } else {
        close(c->pipe[0]);
        close(c->pipe[1]);
    }
    c->pipe[0] = c->pipe[1] = -1;
    c->in_pipe = 0;
}

/* Moves pipe bytes to the client. Returns 0 (the pipe may still hold bytes: the socket is
 * full) or a negative error. */
static int
pipe_flush(struct h1c *c)
{
    while (c->in_pipe > 0) {
        ssize_t w = splice(c->pipe[0], NULL, c->sock.fd, NULL, c->in_pipe,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno == EAGAIN) {
            return 0;
        }
        if (w <= 0) {
            return w < 0 ? -errno : VD_ECLOSED;
        }
        c->in_pipe -= (size_t)w;
        if (c->txn) {
            c->txn->stats.bytes_out += (uint64_t)w;
            c->txn->stats.bytes_spliced += (uint64_t)w;
        }
    }
    return 0;
}

/* Writes pending output. Returns 0 (maybe partially written), or a negative error. */
static int
out_flush(struct h1c *c)
{
    if (c->in_pipe > 0) {
        /* Spliced bytes were queued before anything else that is pending. */
        int r = pipe_flush(c);
        if (r < 0 || c->in_pipe > 0) {
            return r;
        }
    }
    while (out_pending(c)) {
        struct iovec iov[3];
        int n = 0;
        if (c->hout.len > c->hout_off) {
            iov[n].iov_base = c->hout.p + c->hout_off;
            iov[n].iov_len = c->hout.len - c->hout_off;
            n++;
        }
        if (c->out.len) {
            iov[n].iov_base = c->out.base + c->out.off;
            iov[n].iov_len = c->out.len;
            n++;
        }
        if (c->tail.len) {
            iov[n].iov_base = c->tail.p;
            iov[n].iov_len = c->tail.len;
            n++;
        }
        ssize_t w = vd_sock_writev(&c->sock, iov, n);
        if (w == VD_EAGAIN) {
            return 0;
        }
        if (w < 0) {
            return (int)w;
        }
        if (c->txn) {
            c->txn->stats.bytes_out += (uint64_t)w;
        }
        size_t hw = c->hout.len - c->hout_off;
        if ((size_t)w < hw) {
            c->hout_off += (size_t)w;
            continue;
        }
        w -= (ssize_t)hw;
        vd_dbuf_reset(&c->hout);
        c->hout_off = 0;
        size_t ow = VD_MIN((size_t)w, (size_t)c->out.len);
        vd_buf_consume(&c->out, (uint32_t)ow);
        w -= (ssize_t)ow;
        if (w > 0) {
            /* Only reached once out is empty: drop the written head of tail. */
            memmove(c->tail.p, c->tail.p + w, c->tail.len - (size_t)w);
            c->tail.len -= (size_t)w;
        }
    }
    vd_dbuf_free(&c->tail);
    /* Keep no memory for an empty output queue. */
    if (c->hout.cap > 4096) {
        vd_dbuf_free(&c->hout);
        vd_dbuf_init(&c->hout, c->conf->limits.header_block + 4096);
    }
    vd_buf_release(&c->out);
    return 0;
}

/* Queues @len bytes after what is pending, writing directly when nothing is pending. Returns the
 * number of bytes accepted (all of them, or what fits into the output chunk) or an error. */
static ssize_t
out_write(struct h1c *c, const uint8_t *p, size_t len)
{
    size_t done = 0;
    if (!out_pending(c) && len > 0) {
        struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
        ssize_t w = vd_sock_writev(&c->sock, &iov, 1);
        if (w < 0 && w != VD_EAGAIN) {
            return w;
        }
        if (w > 0) {
            done = (size_t)w;
            if (c->txn) {
                c->txn->stats.bytes_out += (uint64_t)w;
            }
        }
    } else if (out_pending(c)) {
        int r = out_flush(c);
        if (r < 0) {
            return r;
        }
        if (!out_pending(c)) {
            return out_write(c, p, len);
        }
    }
    if (done < len) {
        if (!c->out.base && vd_buf_acquire(&c->out) < 0) {
            return (ssize_t)done;
        }
        vd_buf_compact(&c->out);
        size_t room = vd_buf_room(&c->out);
        size_t take = VD_MIN(room, len - done);
        memcpy(vd_buf_tail(&c->out), p + done, take);
        c->out.len += (uint32_t)take;
        done += take;
    }
    return (ssize_t)done;
}

static int
hout_add(struct h1c *c, const void *p, size_t n)
{
    return vd_dbuf_add(&c->hout, p, n);
}

/* ---- timers and lifecycle ------------------------------------------------------------------ */

/* Copies the field lines [@rs, @re) and the CRLF ending the last one to @p; returns the end. */
static char *
hout_run(char *p, const uint8_t *rs, const uint8_t *re)
{
    size_t l = (size_t)(re - rs);
    memcpy(p, rs, l);
    p += l;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* Queues a status line and @n field lines (not the empty line that ends the head). The size is
 * counted first, so the buffer grows at most once (it starts empty after every idle spell) and
 * the pieces are copied without a bounds check each. */
static int
hout_head(struct h1c *c, int status, const char *reason, const struct vd_hdr *h, size_t n)
{
    struct vd_dbuf *d = &c->hout;
    size_t rl = strlen(reason);
    size_t need = 9 + 20 + 1 + rl + 2;
    for (size_t i = 0; i < n; i++) {
        need += h[i].name.len + h[i].value.len + 4;
    }
    if (need > d->max - d->len) {
        return VD_ETOOBIG;
    }
    if (d->len + need + 1 > d->cap) {
        /* Room for the framing fields and the empty line the callers add next, too. */
        int r = vd__dbuf_grow(d, VD_MIN(need + 64, d->max - d->len));
        if (r < 0) {
            return r;
        }
    }
    char *p = d->p + d->len;
    memcpy(p, "HTTP/1.1 ", 9);
    p += 9;
    p += vd_u64_dec(p, (uint64_t)status);
    *p++ = ' ';
    memcpy(p, reason, rl);
    p += rl;
    *p++ = '\r';
    *p++ = '\n';
    /* Fields that are still the lines they arrived as ("name: value" CRLF, views into the
     * peer's buffer, as a forwarded response's are) are copied in runs of adjacent lines: the
     * bytes are those the loop would write. Only bytes between two views are looked at. */
    const uint8_t *rs = NULL, *re = NULL;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *nb = h[i].name.base, *vb = h[i].value.base;
        size_t nl = h[i].name.len, vl = h[i].value.len;
        bool line = vb == nb + nl + 2 && nb[nl] == ':' && nb[nl + 1] == ' ';
        if (line && rs && nb == re + 2 && re[0] == '\r' && re[1] == '\n') {
            re = vb + vl;
            continue;
        }
        if (rs) {
            p = hout_run(p, rs, re);
            rs = NULL;
        }
        if (line) {
            rs = nb;
            re = vb + vl;
            continue;
        }
        memcpy(p, nb, nl);
        p += nl;
        *p++ = ':';
        *p++ = ' ';
        if (vl) {
            memcpy(p, vb, vl);
            p += vl;
        }
        *p++ = '\r';
        *p++ = '\n';
    }
    if (rs) {
        p = hout_run(p, rs, re);
    }
    d->len = (size_t)(p - d->p);
    *p = '\0';
    return 0;
}

static void
sock_closed(struct vd_sock *s)
{
    struct h1c *c = s->data;
    vd_buf_release(&c->in);
    vd_buf_release(&c->out);
    vd_dbuf_free(&c->hout);
    vd_dbuf_free(&c->tail);
    vd_dbuf_free(&c->req_trailers);
    free(c->pp_buf);
    vd_conf_unref(c->conf);
    c->magic = 0xdeadbeef;
    free(c);
}

/* Reads the PROXY protocol header that starts the connection, and nothing after it: the
 * bytes are peeked first, and only those that belong to the header are taken (an incomplete
 * header's bytes all do), so the TLS or HTTP bytes behind it stay in the socket. Returns 0 once
 * the header was read (the peer address is then the client the header names), VD_EAGAIN, or an
 * error (logged). */
static int
read_proxy_header(struct h1c *c)
{
    ssize_t n;
    do {
        n = recv(c->sock.fd, c->pp_buf + c->pp_len, VD_PROXYPROTO_MAX - c->pp_len, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK ? VD_EAGAIN : -errno;
    }
    if (n == 0) {
        vd_log(VD_LOG_INFO, &c->log, "closed before its PROXY protocol header was complete");
        return VD_ECLOSED;
    }
    struct vd_proxy_hdr h;
    const char *why;
    int len = vd_proxyproto_parse(c->pp_buf, c->pp_len + (size_t)n, &h, &why);
    if (len < 0 && len != VD_EAGAIN) {
        vd_log(VD_LOG_INFO, &c->log, "bad PROXY protocol header: %s", why);
        return len;
    }
    size_t take = len == VD_EAGAIN ? (size_t)n : (size_t)len - c->pp_len;
    ssize_t k;
    do {
        k = recv(c->sock.fd, c->pp_buf + c->pp_len, take, 0);
    } while (k < 0 && errno == EINTR);
    if (k != (ssize_t)take) {
        return k < 0 ? -errno : VD_ECLOSED;
    }
    c->pp_len += take;
    if (len == VD_EAGAIN) {
        return VD_EAGAIN;
    }
    if (h.has_addr) {
        char real[VD_SOCKADDR_TEXT];
        memcpy(real, c->peer_text, sizeof(real));
        if (h.src.ss_family == AF_INET) {
            memcpy(&c->peer.sin, &h.src, sizeof(c->peer.sin));
        } else {
            memcpy(&c->peer.sin6, &h.src, sizeof(c->peer.sin6));
        }
        vd_sockaddr_text(&c->peer.sa, true, c->peer_text, sizeof(c->peer_text));
        vd_log(VD_LOG_DEBUG, &c->log, "PROXY v%u header from %s", h.version, real);
    }
    free(c->pp_buf);
    c->pp_buf = NULL;
    return 0;
}

static void
txn_free(struct h1c *c)
{
    struct vd_txn *t = c->txn;
    if (!t) {
        return;
    }
    c->txn = NULL;
    vd_arena_free(&t->arena);
    vd_mc_free(t);
}

static void
conn_close(struct h1c *c)
{
    if (c->state == ST_CLOSING) { /* the socket's close callback frees @c */
        return;
    }
    c->state = ST_CLOSING;
    if (c->txn) {
        struct vd_txn *t = c->txn;
        if (t->handler && t->handler->on_abort) {
            const struct vd_handler_ops *h = t->handler;
            t->handler = NULL;
            h->on_abort(t);
        }
        if (t->status == 0) {
            t->status = 499; /* client closed before a response: logged as 499 (nginx) */
        }
        vd_txn_log(t);
        txn_free(c);
    }
    pipe_put(c);
    if (c->h2) {
        struct vd_h2 *h = c->h2;
        c->h2 = NULL;
        vd_h2_free(h);
    }
    vd_list_remove(&c->link);
    c->w->nconns--;
    vd_metric_set(&c->w->metrics.conns_open, c->w->nconns);
    vd_ltimer_release(&c->timer);
    vd_sock_close(&c->sock);
}

static void
timeout_cb(struct vd_ltimer *tm)
{
    struct h1c *c = VD_CONTAINER_OF(tm, struct h1c, timer);
    switch (c->state) {
    case ST_IDLE:
        VD_TRACE(&c->log, VD_SUB_H1, "keep-alive timeout");
        conn_close(c);
        break;
    case ST_HEAD:
        vd_log(VD_LOG_INFO, &c->log, "client header timeout");
        /* RFC 9110 §15.5.9: answer 408, then close. */
        send_early_error(c, 408, "client did not send a complete request head in time");
        break;
    case ST_BODY:
        vd_log(VD_LOG_INFO, &c->log, "client body timeout");
        if (c->txn && !c->txn->resp_started) {
            struct vd_txn *t = c->txn;
            if (t->handler && t->handler->on_abort) {
                const struct vd_handler_ops *h = t->handler;
                t->handler = NULL;
                h->on_abort(t);
            }
            c->state = ST_WAIT;
            vd_txn_respond_error(t, 408, "client stopped sending the request body", true);
        } else {
            conn_close(c);
        }
        break;
    case ST_WAIT: {
        vd_log(VD_LOG_INFO, &c->log, "client send timeout: no write progress");
        /* Abortive close (RST): a graceful close would leave the kernel trickling megabytes of
         * queued response to a client that does not read, long after the timeout. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->sock.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        conn_close(c);
        break;
    }
    case ST_H2:
        vd_h2_timeout(c->h2);
        break;
    case ST_TUNNEL:
    case ST_CLOSING:
        break;
    }
}

/* Sets the connection's one timeout to @ms from now (0: none), replacing the previous one
 * (lazily: see vd/ltimer.h; a keep-alive exchange sets and clears its timeouts several times
 * without touching the timer heap). */
static void
timer_set(struct h1c *c, uint64_t ms)
{
    vd_ltimer_set(&c->timer, ms);
}

static void
arm(struct h1c *c)
{
    int ev = 0;
    if (c->state == ST_CLOSING || c->state == ST_TUNNEL || c->state == ST_H2) {
        return;
    }
    /* Read interest stays on while waiting for the response: re-arming it per exchange would
     * cost two epoll_ctl calls per request, and reading lets us notice a client that goes away.
     * It is dropped only when the input buffer is full or a payload view pins it. */
    if (!c->client_eof && c->pend_n == 0 &&
        (c->state == ST_IDLE || c->state == ST_HEAD || c->state == ST_WAIT ||
         (c->state == ST_BODY && !c->body_paused)) &&
        !(c->state == ST_WAIT && c->in.base && c->in.len == c->in.cap)) {
        ev |= VD_WANT_READ;
    }
    if (out_pending(c) || c->file_waits) {
        ev |= VD_WANT_WRITE;
    }
    /* A TLS transport may need the other direction to make progress. */
    if (c->sock.want && (c->sock.want & ev) == 0 && ev) {
        ev |= c->sock.want;
    }
    if (c->tls && !c->handshaken) {
        ev = c->sock.want ? c->sock.want : VD_WANT_READ;
    }
    /* A client that stops reading never makes the socket writable again: the send timer must
     * run from the moment output is queued, not from the first write event. */
    if (c->state == ST_WAIT && (ev & VD_WANT_WRITE) && !vd_ltimer_pending(&c->timer)) {
        timer_set(c, c->conf->timeouts.send);
    }
    vd_sock_arm(&c->sock, ev);
}

/* ---- request side -------------------------------------------------------------------------- */

/* A new exchange on @c with an arena capped at @arena_max bytes; the caller fills the request.
 * Returns NULL when out of memory. */
static struct vd_txn *
txn_new(struct h1c *c, size_t arena_max)
{
    struct vd_txn *t = vd_txn_new(arena_max);
    if (!t) {
        return NULL;
    }
    t->conf = c->conf;
    t->w = c->w;
    t->front = &h1_front_ops;
    t->front_data = c;
    t->client = &c->peer.sa;
    t->client_text = c->peer_text;
    t->client_tls = c->tls;
    t->log = c->log;
    t->stats.start_ns = uv_hrtime();
    return t;
}

static void
send_early_error(struct h1c *c, int status, const char *why)
{
    /* An exchange with a minimal request so the error goes through the common path (access
     * log, error body). */
    struct vd_txn *t = txn_new(c, 4096);
    if (!t) {
        conn_close(c);
        return;
    }
    t->req.version = 11;
    t->stats.bytes_in = c->in.len;
    /* Keep the first line (escaped later by the access log) so operators see what came in. */
    if (c->in.len) {
        const uint8_t *p = vd_buf_data(&c->in);
        size_t n = c->in.len;
        const uint8_t *eol = memchr(p, '\n', n);
        size_t l = eol ? (size_t)(eol - p) : n;
        if (l > 200) {
            l = 200;
        }
        const char *line = vd_arena_dup(&t->arena, p, l);
        if (line) {
            t->req.target = (struct vd_iov){(const uint8_t *)line, l};
        }
    }
    c->txn = t;
    c->state = ST_WAIT;
    c->keepalive = false;
    if (status != 408) {
        vd_log(VD_LOG_INFO, &t->log, "bad request: %s", why);
    }
    char detail[200];
    if (status == 408) {
        snprintf(detail, sizeof(detail), "%s (timeouts.client_header)", why);
    } else if (status == 414) {
        snprintf(detail, sizeof(detail), "request line longer than limits.request_line (%u bytes)",
                 c->conf->limits.request_line);
    } else if (status == 431) {
        snprintf(detail, sizeof(detail),
                 "request header section over limits.header_block (%u bytes) or "
                 "limits.header_count (%u fields)",
                 c->conf->limits.header_block, c->conf->limits.header_count);
    } else {
        snprintf(detail, sizeof(detail), "malformed request from client: %s", why);
    }
    vd_txn_respond_error(t, status, detail, true);
}

/* RFC 9112 §9.3: persistence. HTTP/1.1 persists unless "close"; HTTP/1.0 only with
 * "keep-alive". */
static bool
wants_keepalive(const struct vd_req *r)
{
    bool ka = r->version >= 11;
    for (size_t i = 0; i < r->nhdrs; i++) {
        if (vd_hdr_name_is(r->hdrs[i].name, "connection")) {
            if (vd_list_has(r->hdrs[i].value, "close")) {
                return false;
            }
            if (vd_list_has(r->hdrs[i].value, "keep-alive")) {
                ka = true;
            }
        }
    }
    return ka;
}

/* Copies the parsed head into the transaction arena so the input buffer can be reused. */
static int
txn_build(struct h1c *c, const struct vd_h1_req_head *h, size_t headlen)
{
    struct vd_conf *conf = c->conf;
    struct vd_txn *t = txn_new(c, conf->limits.request_arena + headlen);
    if (!t) {
        return VD_ENOMEM;
    }
    /* One copy of the whole head; views are rebased into it. */
    const uint8_t *base = vd_buf_data(&c->in);
    uint8_t *copy = vd_arena_alloc(&t->arena, headlen);
    struct vd_hdr *hdrs = vd_arena_alloc(&t->arena, sizeof(*hdrs) * (h->nhdrs ? h->nhdrs : 1));
    if (!copy || !hdrs) {
        vd_arena_free(&t->arena);
        vd_mc_free(t);
        return VD_ENOMEM;
    }
    memcpy(copy, base, headlen);
#define REBASE(v) ((struct vd_iov){copy + ((v).base - base), (v).len})
    for (size_t i = 0; i < h->nhdrs; i++) {
        hdrs[i].name = REBASE(h->hdrs[i].name);
        hdrs[i].value = REBASE(h->hdrs[i].value);
    }
    t->req.method = REBASE(h->method);
    t->req.target = REBASE(h->target);
#undef REBASE
    t->req.form = h->form;
    t->req.version = (uint8_t)(10 + h->minor);
    t->req.hdrs = hdrs;
    t->req.nhdrs = h->nhdrs;
    t->mode = conf->listeners[c->listener < conf->nlisteners ? c->listener : 0].mode;
    t->stats.bytes_in = headlen;
    t->req_trailers = &c->req_trailers;
    c->txn = t;
    return 0;
}

/* @v, a view into the parsed head's target @from, moved to the same bytes of the copy @to (a
 * view elsewhere, such as a default "/", is kept). */
static struct vd_iov
rebase_view(struct vd_iov v, struct vd_iov from, struct vd_iov to)
{
    uintptr_t b = (uintptr_t)v.base, f = (uintptr_t)from.base;
    if (b >= f && b + v.len <= f + from.len) {
        v.base = to.base + (b - f);
    }
    return v;
}

/* Decodes request target into scheme/authority/path; @pre is the parser's view of an absolute
 * http(s) target already moved into the transaction's copy, or NULL. Returns 0 or an error with
 * @why. */
static int
req_target(struct vd_txn *t, const struct vd_uri *pre, const char **why)
{
    struct vd_req *r = &t->req;
    const struct vd_hdr *host = NULL;
    size_t nhost = 0;
    for (size_t i = 0; i < r->nhdrs; i++) {
        if (vd_hdr_name_is(r->hdrs[i].name, "host")) {
            host = &r->hdrs[i];
            nhost++;
        }
    }
    /* RFC 9112 §3.2: a client MUST send Host in HTTP/1.1; a server MUST answer 400 to a request
     * lacking it or with more than one. */
    if (nhost > 1) {
        *why = "more than one Host field";
        return VD_EBADREQ;
    }
    if (r->version >= 11 && nhost == 0) {
        *why = "missing Host field";
        return VD_EBADREQ;
    }
    struct vd_iov hh = VD_IOV_NULL;
    uint16_t hp = 0;
    if (host) {
        /* A keep-alive client's Host is the same request after request, and a forward proxy's
         * client repeats the target's authority in it: the URI parser compares it with the
         * last valid authority before checking it again. */
        bool v6;
        if (vd_uri_parse_authority(host->value.base, host->value.len, &hh, &hp, &v6, why) < 0) {
            *why = "invalid Host field";
            return VD_EBADREQ;
        }
    }
    switch (r->form) {
    case VD_TARGET_ABSOLUTE: {
        struct vd_uri u;
        if (pre) {
            u = *pre;
        } else {
            int e = vd_uri_parse_absolute(r->target.base, r->target.len, &u, why);
            if (e < 0) {
                return e;
            }
        }
        r->scheme = u.scheme;
        /* RFC 9110 §7.2: the target URI's authority wins over Host. */
        r->authority = u.authority;
        r->auth_of = u.authority;
        r->auth_host = u.host;
        r->auth_port = u.has_port ? u.port : 0;
        if (u.path.len && u.path.base[0] == '?') {
            /* Empty path with a query: origin-form gets "/" first (RFC 9112 §3.2.1). */
            char *p = vd_arena_alloc(&t->arena, u.path.len + 1);
            if (!p) {
                *why = "out of memory";
                return VD_EBADREQ;
            }
            p[0] = '/';
            memcpy(p + 1, u.path.base, u.path.len);
            u.path = (struct vd_iov){(const uint8_t *)p, u.path.len + 1};
        }
        r->path = u.path;
        break;
    }
    case VD_TARGET_ORIGIN:
        r->path = r->target;
        if (host) {
            r->authority = host->value;
            r->auth_of = host->value;
            r->auth_host = hh;
            r->auth_port = hp;
        }
        break;
    case VD_TARGET_ASTERISK:
        r->path = r->target;
        if (host) {
            r->authority = host->value;
        }
        break;
    case VD_TARGET_AUTHORITY:
        r->authority = r->target;
        break;
    }
    return 0;
}

/* Validates chunked bytes already buffered with a scratch decoder, so that a malformed chunk
 * that arrived with the head is refused before anything is sent upstream. */
static int
chunked_precheck(struct h1c *c, const char **why)
{
    struct vd_chunked tmp = c->chk;
    tmp.trailers = NULL;
    const uint8_t *p = vd_buf_data(&c->in);
    size_t n = c->in.len;
    while (n > 0 && !tmp.done) {
        struct vd_iov data;
        int r = vd_chunked_decode(&tmp, p, n, &data, why);
        if (r < 0) {
            return r;
        }
        if (r == 0) {
            break;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void
body_error(struct h1c *c, int status, const char *why)
{
    struct vd_txn *t = c->txn;
    vd_log(VD_LOG_INFO, &t->log, "bad request body: %s", why);
    c->keepalive = false;
    c->state = ST_WAIT;
    if (t->resp_started) {
        conn_close(c);
        return;
    }
    if (t->handler && t->handler->on_abort) {
        const struct vd_handler_ops *h = t->handler;
        t->handler = NULL;
        h->on_abort(t);
    }
    char detail[200];
    snprintf(detail, sizeof(detail), "%s: %s",
             status == 413 ? "request body too large" : "malformed request body from client", why);
    vd_txn_respond_error(t, status, detail, true);
}

/* Delivers buffered request body to the handler. Returns true when the body is complete. */
static bool
deliver_body(struct h1c *c)
{
    struct vd_txn *t = c->txn;
    uint64_t max = c->conf->limits.body;
    for (;;) {
        if (!t || c->state != ST_BODY || c->body_paused) {
            return false;
        }
        if (c->pend_n) {
            if (!t->handler) {
                c->pend_n = 0;
                continue;
            }
            ssize_t k = t->handler->on_req_body(t, c->pend_p, c->pend_n, false);
            if (c->txn != t || c->state != ST_BODY) {
                return false;
            }
            if (k < 0) {
                body_error(c, 502, "upstream refused the request body");
                return false;
            }
            c->pend_p += k;
            c->pend_n -= (size_t)k;
            if (c->pend_n) {
                c->body_paused = true;
                return false;
            }
            continue;
        }
        if (t->req.framing.kind == VD_BODY_LENGTH) {
            size_t avail = (size_t)VD_MIN((uint64_t)c->in.len, c->body_remain);
            bool end = avail == c->body_remain;
            if (avail == 0 && !end) {
                return false;
            }
            ssize_t k = t->handler ? t->handler->on_req_body(t, vd_buf_data(&c->in), avail, end)
                                   : (ssize_t)avail;
            if (c->txn != t || c->state != ST_BODY) {
                return false;
            }
            if (k < 0) {
                body_error(c, 502, "upstream refused the request body");
                return false;
            }
            vd_buf_consume(&c->in, (uint32_t)k);
            c->body_remain -= (uint64_t)k;
            t->stats.bytes_in += (uint64_t)k;
            if (c->body_remain == 0 && (size_t)k == avail) {
                c->state = ST_WAIT;
                return true;
            }
            if ((size_t)k < avail) {
                c->body_paused = true;
            }
            return false;
        }
        /* chunked */
        if (c->chk.done) {
            if (!c->body_end_sent) {
                c->body_end_sent = true;
                if (t->handler) {
                    (void)t->handler->on_req_body(t, NULL, 0, true);
                }
            }
            if (c->txn == t && c->state == ST_BODY) {
                c->state = ST_WAIT;
            }
            return true;
        }
        if (c->in.len == 0) {
            return false;
        }
        struct vd_iov data;
        const char *why = NULL;
        int r = vd_chunked_decode(&c->chk, vd_buf_data(&c->in), c->in.len, &data, &why);
        if (r < 0) {
            body_error(c, r == VD_ETOOBIG ? 413 : 400, why ? why : "invalid chunked encoding");
            return false;
        }
        if (r == 0) {
            return false;
        }
        t->stats.bytes_in += (uint64_t)r;
        /* The payload view stays valid: the buffer is not compacted or refilled while
         * pend_n is non-zero. */
        vd_buf_consume(&c->in, (uint32_t)r);
        if (data.len) {
            c->body_remain += data.len; /* for chunked: bytes of payload so far */
            if (max && c->body_remain > max) {
                body_error(c, 413, "chunked body exceeds limits.body");
                return false;
            }
            c->pend_p = data.base;
            c->pend_n = data.len;
        }
    }
}

static void
start_exchange(struct h1c *c, const struct vd_h1_req_head *h, size_t headlen)
{
    const char *why = NULL;
    if (txn_build(c, h, headlen) < 0) {
        send_early_error(c, 503, "out of memory for the request");
        return;
    }
    struct vd_txn *t = c->txn;
    c->fresh_since = 0;
    struct vd_uri pre, *ppre = NULL;
    if (h->has_uri) {
        pre = h->uri;
        pre.scheme = rebase_view(pre.scheme, h->target, t->req.target);
        pre.authority = rebase_view(pre.authority, h->target, t->req.target);
        pre.host = rebase_view(pre.host, h->target, t->req.target);
        pre.path = rebase_view(pre.path, h->target, t->req.target);
        ppre = &pre;
    }
    vd_buf_consume(&c->in, (uint32_t)headlen);
    c->keepalive = wants_keepalive(&t->req);
    c->resp_close = false;
    c->resp_done = false;
    c->resp_chunked = false;
    c->handler_waits = false;
    c->file_waits = false;
    c->body_paused = false;
    c->body_end_sent = false;
    c->pend_n = 0;
    c->body_remain = 0;
    c->sent_100 = false;
    c->expect_100 = false;

    int e =
        vd_http_req_framing(t->req.hdrs, t->req.nhdrs, t->req.version - 10, &t->req.framing, &why);
    if (e == 0) {
        e = req_target(t, ppre, &why);
    }
    if (e < 0) {
        c->keepalive = false;
        c->state = ST_WAIT;
        vd_log(VD_LOG_INFO, &t->log, "bad request: %s", why ? why : vd_strerror(e));
        char detail[200];
        int status = e == VD_ENOTIMPL ? 501 : 400;
        snprintf(detail, sizeof(detail), "%s: %s",
                 status == 501 ? "transfer coding not implemented"
                               : "malformed request from client",
                 why ? why : vd_strerror(e));
        vd_txn_respond_error(t, status, detail, true);
        return;
    }
    for (size_t i = 0; i < t->req.nhdrs; i++) {
        if (vd_hdr_name_is(t->req.hdrs[i].name, "expect")) {
            /* RFC 9110 §10.1.1: only 100-continue is defined; others get 417. */
            if (t->req.hdrs[i].value.len == 12 &&
                strncasecmp((const char *)t->req.hdrs[i].value.base, "100-continue", 12) == 0) {
                c->expect_100 = t->req.version >= 11;
            } else {
                c->state = ST_WAIT;
                c->keepalive = false;
                vd_txn_respond_error(t, 417, "unsupported expectation", true);
                return;
            }
        }
    }
    uint64_t max = c->conf->limits.body;
    switch (t->req.framing.kind) {
    case VD_BODY_LENGTH:
        if (max && t->req.framing.length > max) {
            c->state = ST_WAIT;
            c->keepalive = false;
            vd_txn_respond_error(t, 413, "request body larger than limits.body", true);
            return;
        }
        c->body_remain = t->req.framing.length;
        c->state = t->req.framing.length ? ST_BODY : ST_WAIT;
        break;
    case VD_BODY_CHUNKED:
        vd_dbuf_reset(&c->req_trailers);
        vd_chunked_init(&c->chk, c->conf->limits.chunk_line, c->conf->limits.trailer_block,
                        &c->req_trailers);
        if (chunked_precheck(c, &why) < 0) {
            c->state = ST_WAIT;
            c->keepalive = false;
            vd_log(VD_LOG_INFO, &t->log, "bad request body: %s", why ? why : "chunked");
            char detail[200];
            snprintf(detail, sizeof(detail), "malformed request body from client: %s",
                     why ? why : "invalid chunked encoding");
            vd_txn_respond_error(t, 400, detail, true);
            return;
        }
        c->state = ST_BODY;
        break;
    default:
        c->state = ST_WAIT;
        break;
    }
    timer_set(c, c->state == ST_BODY ? c->conf->timeouts.client_body : 0);
    vd_txn_start(t);
}

static void
h2_set_timer(void *conn, uint64_t ms)
{
    timer_set(conn, ms);
}

static void
h2_close(void *conn)
{
    conn_close(conn);
}

/* Hands the connection to an HTTP/2 session (ALPN "h2", or the h2c preface in @early). */
static void
switch_to_h2(struct h1c *c, const uint8_t *early, size_t n)
{
    struct vd_h2_host host = {
        .sock = &c->sock,
        .w = c->w,
        .conf = c->conf,
        .listener = c->listener,
        .peer = &c->peer.sa,
        .peer_text = c->peer_text,
        .log = c->log,
        .tls = c->tls,
        .conn = c,
        .set_timer = h2_set_timer,
        .close = h2_close,
    };
    c->state = ST_H2;
    timer_set(c, 0);
    vd_dbuf_free(&c->hout);
    vd_dbuf_free(&c->tail);
    c->h2 = vd_h2_start(&host);
    if (!c->h2) {
        vd_log(VD_LOG_ERR, &c->log, "out of memory for an HTTP/2 session");
        conn_close(c);
        return;
    }
    vd_h2_input(c->h2, early, n); /* may close the connection */
    vd_buf_release(&c->in);
}

/* RFC 9113 §3.3: a cleartext connection that starts with the preface speaks HTTP/2 ("prior
 * knowledge"). Returns 1 when switched, 0 when not HTTP/2, -1 when more bytes are needed. */
static int
h2c_preface(struct h1c *c)
{
    size_t n = VD_MIN((size_t)c->in.len, (size_t)VD_H2_PREFACE_LEN);
    if (memcmp(vd_buf_data(&c->in), VD_H2_PREFACE, n) != 0) {
        c->h2_checked = true;
        return 0;
    }
    if (n < VD_H2_PREFACE_LEN) {
        return -1;
    }
    c->h2_checked = true;
    switch_to_h2(c, vd_buf_data(&c->in), c->in.len);
    return 1;
}

static void
process_input(struct h1c *c)
{
    if (c->in_process) {
        return;
    }
    c->in_process = true;
    while (c->state != ST_CLOSING) {
        if (c->state == ST_IDLE || c->state == ST_HEAD) {
            if (c->in.len == 0) {
                break;
            }
            if (!c->h2_checked && c->conf->h2.enabled) {
                int h2 = h2c_preface(c);
                if (h2 > 0) {
                    c->in_process = false;
                    return;
                }
                if (h2 < 0) {
                    c->state = ST_HEAD;
                    break;
                }
            }
            const struct vd_conf_limits *lim = &c->conf->limits;
            struct vd_h1_limits hl = {
                .max_request_line = lim->request_line,
                .max_head = lim->header_block,
                .max_headers = lim->header_count,
            };
            /* Parse scratch is per worker: heads are parsed synchronously and copied into the
             * exchange's arena, so idle connections carry no header array. */
            struct vd_worker *w = c->w;
            if (w->hdr_scratch_cap < lim->header_count) {
                struct vd_hdr *nh = realloc(w->hdr_scratch, sizeof(*nh) * lim->header_count);
                if (!nh) {
                    send_early_error(c, 503, "out of memory");
                    break;
                }
                w->hdr_scratch = nh;
                w->hdr_scratch_cap = lim->header_count;
            }
            struct vd_h1_req_head h = {.hdrs = w->hdr_scratch};
            const char *why = NULL;
            int r = vd_h1_parse_request(vd_buf_data(&c->in), c->in.len, &hl, &h, &why);
            if (r == VD_EAGAIN) {
                if (c->state == ST_IDLE) {
                    c->state = ST_HEAD;
                    timer_set(c, c->conf->timeouts.client_header);
                }
                break;
            }
            if (r < 0) {
                int status = r == VD_EURITOOLONG ? 414 : r == VD_EHDRTOOBIG ? 431 : 400;
                send_early_error(c, status, why ? why : vd_strerror(r));
                break;
            }
            start_exchange(c, &h, (size_t)r);
            continue;
        }
        if (c->state == ST_BODY) {
            if (!deliver_body(c)) {
                break;
            }
            continue;
        }
        break; /* ST_WAIT: the next request waits for this response */
    }
    c->in_process = false;
    if (c->state == ST_IDLE && c->in.len == 0) {
        vd_buf_release(&c->in);
    }
    arm(c);
}

static void
do_read(struct h1c *c)
{
    if (c->pend_n) {
        return; /* a payload view points into the buffer: it must not move */
    }
    if (!c->in.base && vd_buf_acquire(&c->in) < 0) {
        vd_log(VD_LOG_ERR, &c->log, "out of buffer memory");
        conn_close(c);
        return;
    }
    vd_buf_compact(&c->in);
    if (vd_buf_room(&c->in) == 0) {
        /* Only a head can fill the buffer (bodies are consumed as they come): let it grow to
         * the configured head limit so the parser can answer 431 exactly. */
        uint32_t want = c->conf->limits.header_block + 1024;
        if ((c->state == ST_IDLE || c->state == ST_HEAD) && c->in.cap < want &&
            vd_buf_grow(&c->in, want) == 0) {
            /* grown */
        } else {
            arm(c);
            return;
        }
    }
    ssize_t n = vd_sock_read(&c->sock, vd_buf_tail(&c->in), vd_buf_room(&c->in));
    if (n == VD_EAGAIN) {
        arm(c);
        return;
    }
    if (n == 0 || n < 0) {
        if (n < 0 && n != -ECONNRESET) {
            VD_TRACE(&c->log, VD_SUB_H1, "client read error: %s", vd_strerror((int)n));
        }
        if (n == 0 && c->state == ST_WAIT && c->txn) {
            /* Half-close after a complete request: finish the response, then close. */
            c->client_eof = true;
            c->keepalive = false;
            arm(c);
            return;
        }
        if (n == 0 && c->state == ST_HEAD) {
            vd_log(VD_LOG_INFO, &c->log, "client closed the connection inside a request head");
        }
        conn_close(c);
        return;
    }
    c->in.len += (uint32_t)n;
    if (c->state == ST_BODY) {
        timer_set(c, c->conf->timeouts.client_body);
    }
    process_input(c);
}

static void
on_sock_event(struct vd_sock *s, int ev)
{
    struct h1c *c = s->data;
    VD_BUG_ON(c->magic != H1C_MAGIC);
    if (c->state == ST_H2) {
        vd_h2_event(c->h2, ev);
        return;
    }
    if (c->pp_buf) {
        int r = read_proxy_header(c);
        if (r == VD_EAGAIN) {
            arm(c);
            return;
        }
        struct vd_tls_server *ts =
            c->w->shared->tls_servers ? c->w->shared->tls_servers[c->listener] : NULL;
        if (r < 0 || (ts && vd_tls_attach_server(&c->sock, ts) < 0)) {
            conn_close(c);
            return;
        }
        c->tls = ts != NULL;
        ev |= VD_WANT_READ; /* what followed the header may be waiting already */
    }
    if (c->tls && !c->handshaken) {
        int r = vd_tls_handshake(&c->sock);
        if (r == VD_EAGAIN) {
            arm(c);
            return;
        }
        if (r < 0) {
            vd_log(VD_LOG_INFO, &c->log, "TLS handshake failed: %s", vd_tls_error_detail(&c->sock));
            conn_close(c);
            return;
        }
        c->handshaken = true;
        c->sock.want = 0;
        ev |= VD_WANT_READ;
        const char *alpn = vd_tls_alpn(&c->sock);
        if (alpn && strcmp(alpn, "h2") == 0) {
            c->h2_checked = true;
            vd_tls_read_ahead(&c->sock); /* the HTTP/2 session always reads to EAGAIN */
            switch_to_h2(c, NULL, 0);
            if (c->state == ST_H2 && c->h2) {
                /* The preface may sit decrypted inside OpenSSL, where poll cannot see it. */
                vd_h2_event(c->h2, VD_WANT_READ);
            }
            return;
        }
        c->h2_checked = true; /* RFC 9113 §3.3: over TLS, h2 only through ALPN */
    }
    if (ev & VD_WANT_WRITE && out_pending(c)) {
        if (out_flush(c) < 0) {
            conn_close(c);
            return;
        }
        if (!out_pending(c)) {
            if (c->resp_done && c->txn) {
                finish_exchange(c);
                return;
            }
            if (c->state == ST_WAIT) {
                timer_set(c, 0); /* drained: no send deadline while nothing is queued */
            }
            if (c->handler_waits && c->txn && c->txn->handler) {
                c->handler_waits = false;
                c->txn->handler->on_writable(c->txn);
                if (c->state == ST_CLOSING) {
                    return;
                }
            }
        } else if (c->state != ST_CLOSING) {
            timer_set(c, c->conf->timeouts.send);
        }
    } else if (ev & VD_WANT_WRITE && c->file_waits) {
        /* The socket that sendfile filled has room again. */
        c->file_waits = false;
        if (c->state == ST_WAIT) {
            timer_set(c, 0);
        }
        if (c->handler_waits && c->txn && c->txn->handler) {
            c->handler_waits = false;
            c->txn->handler->on_writable(c->txn);
            if (c->state == ST_CLOSING) {
                return;
            }
        }
    }
    if (c->state == ST_CLOSING) {
        return;
    }
    if (ev & VD_WANT_READ) {
        do_read(c);
        return;
    }
    arm(c);
}

/* The response is complete and written (or queued): log, then the next exchange or close. */
static void
finish_exchange(struct h1c *c)
{
    struct vd_txn *t = c->txn;
    if (out_pending(c)) {
        arm(c); /* finished from on_sock_event once drained */
        timer_set(c, c->conf->timeouts.send);
        return;
    }
    vd_txn_log(t);
    txn_free(c);
    pipe_put(c); /* empty: nothing is pending */
    bool close =
        c->resp_close || !c->keepalive || c->client_eof || c->w->draining || c->state == ST_BODY;
    if (close) {
        /* Half-close first so the client reads everything before the connection goes
         * (RFC 9112 §9.6: closing while the client still sends can lose the response). */
        (void)c->sock.ops->shutdown(&c->sock);
        conn_close(c);
        return;
    }
    /* Pick up a reloaded configuration for the next exchange. */
    if (c->conf != c->w->conf) {
        vd_conf_unref(c->conf);
        c->conf = vd_conf_ref(c->w->conf);
    }
    c->state = ST_IDLE;
    /* An idle connection keeps no output memory (the 1 KiB-per-idle-connection budget). */
    vd_dbuf_free(&c->hout);
    timer_set(c, c->conf->timeouts.keepalive);
    if (c->in.len) {
        process_input(c);
    } else {
        vd_buf_release(&c->in);
        arm(c);
    }
    /* Reading may have stopped while the response was sent (full buffer): with TLS, bytes
     * already decrypted inside OpenSSL would not wake poll. */
    if (c->tls && c->state == ST_IDLE) {
        do_read(c);
    }
}

/* ---- front ops ----------------------------------------------------------------------------- */

static int
fo_send_interim(struct vd_txn *t, int status, const struct vd_hdr *h, size_t n)
{
    struct h1c *c = txn_conn(t);
    /* RFC 9110 §15.2: no 1xx to an HTTP/1.0 client. 100 only when the client asked. */
    if (t->req.version < 11 || (status == 100 && (!c->expect_100 || c->sent_100))) {
        return 0;
    }
    if (status == 100) {
        c->sent_100 = true;
    }
    int r = hout_head(c, status, vd_http_reason(status), h, n);
    r = r ? r : hout_add(c, "\r\n", 2);
    if (r < 0) {
        return r;
    }
    r = out_flush(c);
    arm(c);
    return r;
}

/* A head that turns the connection into a tunnel: 200 to CONNECT ("Connection established",
 * as clients and peers expect) or 101, with no framing fields (RFC 9110 §9.3.6, §15.2.2). */
static int
send_tunnel_head(struct h1c *c, struct vd_txn *t, const struct vd_resp *resp)
{
    c->resp_has_body = false;
    const char *reason =
        resp->status == 200 ? "Connection established" : vd_http_reason(resp->status);
    int r = hout_head(c, resp->status, reason, resp->hdrs, resp->nhdrs);
    r = r ? r : hout_add(c, "\r\n", 2);
    if (r < 0) {
        vd_dbuf_reset(&c->hout);
        return r;
    }
    t->stats.bytes_out += c->hout.len - c->hout_off;
    r = out_flush(c);
    return r < 0 ? r : 0;
}

static int
fo_send_head(struct vd_txn *t, const struct vd_resp *resp)
{
    struct h1c *c = txn_conn(t);
    char line[96];
    t->status = resp->status;
    t->resp_started = true;
    c->resp_has_body = resp->has_body;
    c->resp_chunked = false;
    if (resp->has_body && resp->length < 0) {
        if (t->req.version >= 11) {
            c->resp_chunked = true;
        } else {
            c->resp_close = true; /* close-delimited for HTTP/1.0 */
        }
    }
    /* Once the response starts, a request body still arriving is discarded by closing. */
    if (c->state == ST_BODY) {
        c->resp_close = true;
    }
    if (c->w->draining || resp->close) {
        c->resp_close = true;
    }
    if (resp->tunnel) {
        return send_tunnel_head(c, t, resp);
    }
    int r = hout_head(c, resp->status, vd_http_reason(resp->status), resp->hdrs, resp->nhdrs);
    if (r == 0 && resp->length >= 0 && resp->status >= 200 && resp->status != 204) {
        memcpy(line, "Content-Length: ", 16);
        size_t cl = 16 + vd_u64_dec(line + 16, (uint64_t)resp->length);
        line[cl++] = '\r';
        line[cl++] = '\n';
        r = hout_add(c, line, cl);
    }
    if (r == 0 && c->resp_chunked) {
        r = hout_add(c, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (r == 0) {
        bool close = c->resp_close || !c->keepalive || c->client_eof;
        if (close) {
            c->resp_close = true;
            r = hout_add(c, "Connection: close\r\n\r\n", 21);
        } else if (t->req.version < 11) {
            r = hout_add(c, "Connection: keep-alive\r\n\r\n", 26);
        } else {
            r = hout_add(c, "\r\n", 2);
        }
    }
    if (r < 0) {
        vd_dbuf_reset(&c->hout);
        return r;
    }
    return 0;
}

/* Writes one chunk of at most one output buffer of @p (chunked response). Returns the bytes
 * accepted: less than @len when the buffer filled (then handler_waits may be set), or an error. */
static ssize_t
send_chunk(struct h1c *c, struct vd_txn *t, const uint8_t *p, size_t len)
{
    /* Chunk framing goes to hout, the data to out; accept only what fits in the output
     * chunk so the framing and the data stay in step. */
    if (out_pending(c)) {
        int r = out_flush(c);
        if (r < 0) {
            return r;
        }
    }
    if (!c->out.base && vd_buf_acquire(&c->out) < 0) {
        return 0;
    }
    vd_buf_compact(&c->out);
    size_t room = vd_buf_room(&c->out);
    if (room < 64 && c->out.len) {
        c->handler_waits = true;
        arm(c);
        return 0;
    }
    /* Room for the size line ("%zx\r\n", at most 18 bytes) and the CRLF after the data, so
     * all three pieces fit in the buffer when the socket takes none of them. */
    size_t take = VD_MIN(room - 20, len);
    char hdr[24];
    int l = snprintf(hdr, sizeof(hdr), "%zx\r\n", take);
    if (c->out.len == 0 && c->hout.len == c->hout_off) {
        /* Nothing queued: write framing + data + CRLF in one writev. */
        struct iovec iov[3] = {{hdr, (size_t)l}, {(void *)p, take}, {"\r\n", 2}};
        ssize_t w = vd_sock_writev(&c->sock, iov, 3);
        if (w < 0 && w != VD_EAGAIN) {
            return w;
        }
        size_t written = w > 0 ? (size_t)w : 0;
        t->stats.bytes_out += written;
        size_t total = (size_t)l + take + 2;
        if (written == total) {
            return (ssize_t)take;
        }
        /* Queue the rest of the three pieces. */
        size_t off = written;
        const uint8_t *pieces[3] = {(const uint8_t *)hdr, p, (const uint8_t *)"\r\n"};
        size_t lens[3] = {(size_t)l, take, 2};
        for (int i = 0; i < 3; i++) {
            if (off >= lens[i]) {
                off -= lens[i];
                continue;
            }
            memcpy(vd_buf_tail(&c->out), pieces[i] + off, lens[i] - off);
            c->out.len += (uint32_t)(lens[i] - off);
            off = 0;
        }
        arm(c);
        return (ssize_t)take;
    }
    take = VD_MIN(take, room > (size_t)l + 2 ? room - (size_t)l - 2 : 0);
    if (take == 0) {
        c->handler_waits = true;
        arm(c);
        return 0;
    }
    l = snprintf(hdr, sizeof(hdr), "%zx\r\n", take);
    memcpy(vd_buf_tail(&c->out), hdr, (size_t)l);
    c->out.len += (uint32_t)l;
    memcpy(vd_buf_tail(&c->out), p, take);
    c->out.len += (uint32_t)take;
    memcpy(vd_buf_tail(&c->out), "\r\n", 2);
    c->out.len += 2;
    int r = out_flush(c);
    if (r < 0) {
        return r;
    }
    arm(c);
    return (ssize_t)take;
}

static ssize_t
fo_send_body(struct vd_txn *t, const uint8_t *p, size_t len)
{
    struct h1c *c = txn_conn(t);
    ssize_t k;
    if (!c->resp_has_body || len == 0) {
        return (ssize_t)len;
    }
    if (c->resp_chunked) {
        /* One chunk per output buffer; keep going while the socket takes everything, so a
         * short count always means "full" and on_writable follows once it drains. */
        size_t done = 0;
        while (done < len) {
            k = send_chunk(c, t, p + done, len - done);
            if (k < 0) {
                return done ? (ssize_t)done : k;
            }
            done += (size_t)k;
            if (k == 0 || out_pending(c)) {
                break;
            }
        }
        if (done < len) {
            c->handler_waits = true;
        }
        arm(c);
        return (ssize_t)done;
    }
    if (c->hout.len > c->hout_off && c->out.len == 0) {
        /* Head queued and no data: one writev for head + body. */
        struct iovec iov[2] = {{c->hout.p + c->hout_off, c->hout.len - c->hout_off},
                               {(void *)p, len}};
        ssize_t w = vd_sock_writev(&c->sock, iov, 2);
        if (w < 0 && w != VD_EAGAIN) {
            return w;
        }
        size_t written = w > 0 ? (size_t)w : 0;
        t->stats.bytes_out += written;
        size_t hw = c->hout.len - c->hout_off;
        if (written >= hw) {
            vd_dbuf_reset(&c->hout);
            c->hout_off = 0;
            size_t body_done = written - hw;
            if (body_done == len) {
                return (ssize_t)len;
            }
            k = out_write(c, p + body_done, len - body_done);
            if (k < 0) {
                return k;
            }
            k += (ssize_t)body_done;
        } else {
            c->hout_off += written;
            k = out_write(c, p, len);
        }
    } else {
        k = out_write(c, p, len);
    }
    if (k >= 0 && (size_t)k < len) {
        c->handler_waits = true;
    }
    arm(c);
    return k;
}

/* The file's bytes straight to the client socket: sendfile(2) from @fd, or, with @map (the same
 * bytes mapped), write(2) from the mapping, the whole rest of the body in one call where
 * sendfile hands TCP at most 64 KiB per call. Only the kernel reads the mapping (a file cut
 * short behind viaduct's back fails that write with EFAULT instead of raising SIGBUS), so
 * nothing of it is queued in user space: a short count waits for write readiness. Plain TCP
 * and Content-Length framing only (TLS would need the bytes in user space to encrypt them;
 * chunked framing would need chunk headers between file pieces). Queued head or body bytes go
 * first; while they are still pending nothing is taken and on_writable follows once they
 * drain. */
static ssize_t
send_file_body(struct h1c *c, struct vd_txn *t, int fd, off_t off, const uint8_t *map, size_t len,
               struct vd_sendpick *pick)
{
    if (out_pending(c)) {
        /* MSG_MORE: the head and the first file bytes leave in full segments, not a small head
         * segment of its own (the receiver pays per segment; measured: +10-50% hits/s). Safe
         * because a body write always follows at once: it either sends (its last piece has no
         * MSG_MORE, which pushes the head too) or finds the socket full, and then the ACKs of
         * the bytes in flight push it. Not TCP_CORK around the whole body: corked, sendfile's
         * 64 KiB pieces cost 2× the CPU under bbr (docs/performance.md, 2026-12-07 evening). */
        c->sock.more = true;
        int r = out_flush(c);
        c->sock.more = false;
        if (r < 0) {
            return r;
        }
        if (out_pending(c)) {
            c->handler_waits = true;
            arm(c);
            return 0;
        }
    }
    size_t done = 0;
    while (done < len) {
        ssize_t k;
        if (map) {
            k = send(c->sock.fd, map + done, len - done, MSG_NOSIGNAL);
        } else {
            off_t o = off + (off_t)done;
            k = sendfile(c->sock.fd, fd, &o, len - done);
        }
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        /* An error ends the response even after some progress: a short count would mean
         * "full" and wait for a write event that a broken connection may never deliver. */
        if (k < 0) {
            return map && errno == EFAULT ? -EIO : -errno;
        }
        if (k == 0) {
            return -EIO; /* the file ends before @len: cut short behind viaduct's back */
        }
        done += (size_t)k;
        t->stats.bytes_out += (uint64_t)k;
    }
    if (pick) {
        uint32_t decided = pick->decided;
        vd_sendpick_sent(pick, done);
        if (pick->decided != decided) {
            vd_log(VD_LOG_INFO, &c->log,
                   "cache.disk_send auto: %s for the next %u GiB of file bodies (the write cheaper "
                   "in %u of %u pairs of spans; last measured: sendfile %" PRIu64
                   " ns/MiB, write %" PRIu64 " ns/MiB)",
                   pick->best == VD_SEND_WRITE ? "write from the mapping" : "sendfile",
                   (unsigned)(VD_SENDPICK_EXPLOIT * (VD_SENDPICK_SPAN >> 30)),
                   (unsigned)pick->votes_write, (unsigned)pick->votes, pick->cost[VD_SEND_SENDFILE],
                   pick->cost[VD_SEND_WRITE]);
        }
    }
    if (done < len) {
        VD_TRACE(&c->log, VD_SUB_H1, "%s: socket full after %zu of %zu bytes",
                 map ? "mapped write" : "sendfile", done, len);
        c->handler_waits = true;
        c->file_waits = true;
    }
    arm(c);
    return (ssize_t)done;
}

static ssize_t
fo_send_file(struct vd_txn *t, int fd, off_t off, size_t len, const uint8_t *map)
{
    struct h1c *c = txn_conn(t);
    if (c->tls || c->resp_chunked) {
        return VD_ENOTIMPL;
    }
    if (!c->resp_has_body || len == 0) {
        return (ssize_t)len;
    }
    enum vd_disk_send how = c->conf->cache.disk_send;
    struct vd_sendpick *pick = map && how == VD_DISK_SEND_AUTO ? &c->w->file_send : NULL;
    bool mapped =
        pick ? vd_sendpick_choose(pick) == VD_SEND_WRITE : map && how == VD_DISK_SEND_MAPPED;
    if (pick) {
        VD_TRACE(&c->log, VD_SUB_H1,
                 "file body by %s: %zu bytes to send (auto, span %" PRIu32 " step %u at %" PRIu64
                 " bytes: sendfile %" PRIu64 " ns/MiB, write %" PRIu64 " ns/MiB, %" PRIu32
                 " cycles decided)",
                 mapped ? "write from the mapping" : "sendfile", len, pick->spans,
                 (unsigned)pick->step, pick->bytes, pick->cost[VD_SEND_SENDFILE],
                 pick->cost[VD_SEND_WRITE], pick->decided);
    } else {
        VD_TRACE(&c->log, VD_SUB_H1, "file body by %s: %zu bytes to send",
                 mapped ? "write from the mapping" : "sendfile", len);
    }
    return send_file_body(c, t, fd, off, mapped ? map : NULL, len, pick);
}

/* Moves bytes from @fd to the client through c->pipe, with the pipe empty before each read
 * from @fd, so that EAGAIN from that read can only mean @fd has nothing ready (a full pipe
 * answers EAGAIN too). See fo_send_splice for the contract. */
static ssize_t
splice_through(struct h1c *c, struct vd_txn *t, int fd, size_t len, int *src)
{
    size_t taken = 0;
    for (;;) {
        int r = pipe_flush(c);
        if (r < 0) {
            return r;
        }
        if (c->in_pipe > 0) {
            /* The client is full: the rest waits in the pipe, on_writable follows once it
             * drained (on_sock_event, through out_flush). */
            c->handler_waits = true;
            *src = 0;
            break;
        }
        if (taken == len) {
            *src = 0;
            break;
        }
        if (taken >= VD_SPLICE_BUDGET) {
            /* One response does not hold the loop: the caller waits for @fd's readiness,
             * which level-triggered polling reports again at once. */
            *src = VD_EAGAIN;
            break;
        }
        /* Bounded: the kernel refuses lengths past MAX_RW_COUNT (EINVAL). */
        size_t ask = VD_MIN(len - taken, (size_t)VD_SPLICE_BUDGET);
        ssize_t n = splice(fd, NULL, c->pipe[1], NULL, ask, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            *src = errno == EAGAIN ? VD_EAGAIN : -errno;
            break;
        }
        if (n == 0) {
            *src = VD_ECLOSED;
            break;
        }
        c->in_pipe += (size_t)n;
        taken += (size_t)n;
    }
    arm(c);
    return (ssize_t)taken;
}

static ssize_t
fo_send_splice(struct vd_txn *t, int fd, size_t len, int *src)
{
    struct h1c *c = txn_conn(t);
    *src = 0;
    if (c->tls || c->resp_chunked || !c->resp_has_body || c->sock.ops != &vd_xport_tcp) {
        return VD_ENOTIMPL;
    }
    if (len == 0) {
        return 0;
    }
    if (c->pipe[0] < 0) {
        int r = pipe_get(c);
        if (r < 0) {
            VD_TRACE(&c->log, VD_SUB_H1, "no pipe for splice: %s", vd_strerror(r));
            return VD_ENOTIMPL;
        }
    }
    /* The head (when it has not left yet) and the first body bytes go out in full segments,
     * as with send_file; a connection already streaming the body needs no cork. */
    bool cork = c->hout.len > c->hout_off;
    int one = 1, zero = 0;
    if (cork) {
        (void)setsockopt(c->sock.fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
    }
    ssize_t ret;
    int r = out_flush(c);
    if (r < 0) {
        ret = r;
    } else if (out_pending(c)) {
        c->handler_waits = true;
        arm(c);
        ret = 0;
    } else {
        ret = splice_through(c, t, fd, len, src);
    }
    if (cork) {
        (void)setsockopt(c->sock.fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
    }
    return ret;
}

static int
fo_send_end(struct vd_txn *t, const struct vd_dbuf *trailers)
{
    struct h1c *c = txn_conn(t);
    int r = 0;
    if (c->resp_chunked) {
        /* Behind queued body bytes the framing must wait in tail; otherwise it can go with
         * the head queue (which is flushed first). */
        struct vd_dbuf *q = c->out.len ? &c->tail : &c->hout;
        r = vd_dbuf_add(q, "0\r\n", 3);
        if (r == 0 && trailers && trailers->len) {
            r = vd_dbuf_add(q, trailers->p, trailers->len);
        }
        r = r ? r : vd_dbuf_add(q, "\r\n", 2);
    }
    c->resp_done = true;
    if (r < 0) {
        conn_close(c);
        return r;
    }
    r = out_flush(c);
    if (r < 0) {
        conn_close(c);
        return r;
    }
    finish_exchange(c);
    return 0;
}

static void
fo_req_body_pause(struct vd_txn *t, bool pause)
{
    struct h1c *c = txn_conn(t);
    bool was = c->body_paused;
    c->body_paused = pause;
    if (!pause) {
        process_input(c);
        /* TLS may hold decrypted bytes that poll cannot see: read at once after a pause. */
        if (was && c->tls && c->txn == t && c->state == ST_BODY && !c->body_paused) {
            do_read(c);
            return;
        }
    }
    arm(c);
}

static void
fo_abort(struct vd_txn *t)
{
    struct h1c *c = txn_conn(t);
    t->handler = NULL;
    if (t->status == 0) {
        t->status = 502;
    }
    conn_close(c);
}

static int
fo_tunnel(struct vd_txn *t, struct vd_tunnel_end *end)
{
    struct h1c *c = txn_conn(t);
    if (!end) {
        /* The tunnel copied the views: the connection keeps no buffers while it runs. */
        vd_buf_release(&c->in);
        vd_dbuf_free(&c->hout);
        c->hout_off = 0;
        return 0;
    }
    /* A request body or chunked framing cannot precede tunnel bytes (CONNECT has no body and
     * the handler refuses Upgrade requests with one), so whatever follows the head is the
     * client's first tunnel data. */
    c->state = ST_TUNNEL;
    timer_set(c, 0);
    vd_sock_arm(&c->sock, 0);
    *end = (struct vd_tunnel_end){
        .sock = &c->sock,
        .early = {c->in.base ? vd_buf_data(&c->in) : NULL, c->in.len},
        .unsent = {(const uint8_t *)c->hout.p + c->hout_off, c->hout.len - c->hout_off},
    };
    return 0;
}

static void
fo_tunnel_end(struct vd_txn *t)
{
    struct h1c *c = txn_conn(t);
    t->handler = NULL;
    conn_close(c);
}

static const struct vd_front_ops h1_front_ops = {
    .tunnel = fo_tunnel,
    .tunnel_end = fo_tunnel_end,
    .send_interim = fo_send_interim,
    .send_head = fo_send_head,
    .send_body = fo_send_body,
    .send_file = fo_send_file,
    .send_splice = fo_send_splice,
    .send_end = fo_send_end,
    .req_body_pause = fo_req_body_pause,
    .abort = fo_abort,
};

/* ---- accept -------------------------------------------------------------------------------- */

void
vd_front_h1_accept(struct vd_worker *w, int fd, size_t listener)
{
    struct h1c *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->magic = H1C_MAGIC;
    c->pipe[0] = c->pipe[1] = -1;
    socklen_t sl = sizeof(c->peer);
    if (getpeername(fd, &c->peer.sa, &sl) < 0) {
        c->peer.sa.sa_family = AF_UNSPEC;
    }
    vd_sockaddr_text(&c->peer.sa, true, c->peer_text, sizeof(c->peer_text));
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (vd_ltimer_init(&c->timer, &w->tq, timeout_cb) < 0) {
        close(fd);
        free(c);
        return;
    }
    if (vd_sock_init(&w->loop, &c->sock, fd) < 0) {
        vd_ltimer_release(&c->timer);
        close(fd);
        free(c);
        return;
    }
    c->sock.data = c;
    c->sock.on_event = on_sock_event;
    c->sock.on_close = sock_closed;
    c->w = w;
    c->conf = vd_conf_ref(w->conf);
    c->listener = listener;
    c->id = ++w->next_conn_id;
    c->log = (struct vd_log_ctx){.conn_id = c->id, .peer = c->peer_text};
    vd_dbuf_init(&c->hout, c->conf->limits.header_block + 4096);
    vd_dbuf_init(&c->req_trailers, c->conf->limits.trailer_block + 64);
    vd_dbuf_init(&c->tail, c->conf->limits.trailer_block + 64);
    vd_list_insert_tail(&w->conns, &c->link);
    w->nconns++;
    vd_metric_set(&w->metrics.conns_open, w->nconns);
    c->state = ST_IDLE;
    c->fresh_since = uv_now(&w->loop) | 1;
    const struct vd_conf_listener *lc =
        listener < c->conf->nlisteners ? &c->conf->listeners[listener] : NULL;
    if (lc && lc->proxy_protocol) {
        /* The header comes before TLS: the handshake starts once it has been read. */
        bool trusted = false;
        for (size_t i = 0; i < lc->nproxy_from && !trusted; i++) {
            trusted = vd_cidr_match(&lc->proxy_from[i], &c->peer.sa);
        }
        if (!trusted || !(c->pp_buf = malloc(VD_PROXYPROTO_MAX))) {
            vd_log(VD_LOG_INFO, &c->log, "%s",
                   trusted ? "out of memory for a PROXY header"
                           : "PROXY protocol header not accepted from this address "
                             "(listeners[].proxy_protocol_from)");
            conn_close(c);
            return;
        }
        timer_set(c, c->conf->timeouts.client_header);
        arm(c);
        return;
    }
    struct vd_tls_server *ts = w->shared->tls_servers ? w->shared->tls_servers[listener] : NULL;
    if (ts) {
        c->tls = true;
        if (vd_tls_attach_server(&c->sock, ts) < 0) {
            conn_close(c);
            return;
        }
    }
    timer_set(c, c->conf->timeouts.client_header);
    arm(c);
}

/* While draining, whether an idle connection may have a request on its way, so that closing it
 * would fail that request: bytes wait for it (read or still in the socket), or it was accepted
 * less than a second ago and has sent nothing yet (a client that connected just before the
 * drain sends right after). It is then left to be served, with Connection: close, or closed
 * by a later tick. */
static bool
idle_expecting(const struct h1c *c, uint64_t now)
{
    int n = 0;
    if (c->in.len > 0 || (ioctl(c->sock.fd, FIONREAD, &n) == 0 && n > 0)) {
        return true;
    }
    return c->fresh_since && now - c->fresh_since < 1000;
}

void
vd_front_h1_close(struct vd_worker *w, bool idle_only)
{
    uint64_t now = uv_now(&w->loop);
    struct vd_list *n = w->conns.next;
    while (n != &w->conns) {
        struct h1c *c = VD_CONTAINER_OF(n, struct h1c, link);
        n = n->next;
        if (c->state == ST_H2 && idle_only) {
            vd_h2_drain(c->h2); /* GOAWAY; closes once its streams are done */
        } else if (!idle_only || (c->state == ST_IDLE && !idle_expecting(c, now))) {
            conn_close(c);
        }
    }
    if (w->draining) {
        /* No exchange puts a pipe back from now on (pipe_put closes them). */
        while (w->nsplice_pipes) {
            w->nsplice_pipes--;
            close(w->splice_pipes[w->nsplice_pipes][0]);
            close(w->splice_pipes[w->nsplice_pipes][1]);
        }
    }
}

void
vd_front_h2_goaway_all(struct vd_worker *w)
{
    struct vd_list *n = w->conns.next;
    while (n != &w->conns) {
        struct h1c *c = VD_CONTAINER_OF(n, struct h1c, link);
        n = n->next;
        if (c->state == ST_H2 && c->h2) {
            vd_h2_drain(c->h2);
        }
    }
}
