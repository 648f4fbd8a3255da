/* SPDX-License-Identifier: MIT */
/* TLS 1.2/1.3 (RFC 5246, RFC 8446) with OpenSSL 3 on both sides. Server contexts pick a
 * certificate by SNI (RFC 6066 §3, names per RFC 6125 §6.4), select ALPN (RFC 7301) and resume
 * sessions by ticket (RFC 5077, RFC 8446 §4.6.1) or server cache; client contexts verify the peer
 * and keep a bounded per-host session cache. The "tls" transport stacks on a vd_sock's fd, or on
 * the transport already there through a custom BIO (TLS inside TLS: an origin reached through an
 * https:// parent proxy's tunnel). */
#include "vd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "tls-int.h"
#include "vd/err.h"
#include "vd/mcache.h"
#include "vd/tls.h"

#define TLS_RECORD     16384 /* RFC 8446 §5.1: the largest plaintext of one record */
#define SESS_SLOTS     256   /* client sessions kept per vd_tls_client (LRU) */
#define SRV_CACHE_MAX  20480 /* server-side session cache entries per context, ~1 KiB each */
#define HOST_MAX       255   /* RFC 1035 §2.3.4: a name is at most 255 octets */
#define SESSION_ID_CTX "viaduct"

/* ALPN wire format (RFC 7301 §3.1): length-prefixed names in preference order. */
static const uint8_t alpn_http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
static const uint8_t alpn_h2_http11[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

static void *
ossl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return vd_mc_alloc(n);
}

static void *
ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return vd_mc_realloc(p, n);
}

static void
ossl_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    vd_mc_free(p);
}

void
vd_tls_use_mcache(void)
{
    (void)CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
}

/* One server certificate: its context, and the names SNI selection matches against. */
struct tls_cert {
    SSL_CTX *ctx; /* owned; one reference per live SSL using it besides ours */
    char **names; /* owned; lowercase DNS names from the SAN, or the CN when it has none */
    size_t nnames;
};

struct vd_tls_server {
    struct tls_cert *certs; /* certs[0] is the default and the session/ticket context */
    size_t ncerts;
    const uint8_t *alpn; /* static; protocols we accept, ALPN wire format, our preference first */
    size_t alpn_len;
    _Atomic bool h2; /* offer "h2" first (vd_tls_server_set_h2) */
};

struct sess_slot {
    char *key;         /* owned: "verify_host\nsni", lowercase; NULL when the slot is free */
    SSL_SESSION *sess; /* owned reference to a private copy */
    uint64_t used;     /* LRU stamp from vd_tls_client.clock */
};

struct vd_tls_client {
    SSL_CTX *ctx;
    pthread_mutex_t lock; /* guards clock and slots; workers share the client */
    uint64_t clock;
    struct sess_slot slots[SESS_SLOTS];
};

/* Per-connection state behind s->xp. */
struct tls_conn {
    SSL *ssl;
    struct vd_tls_client *client; /* borrowed; NULL on the server side */
    char *key;                    /* owned: session cache key (client side), or NULL */
    bool shut_sent;               /* close_notify handed to the socket */
    char detail[128];             /* last failure, for vd_tls_error_detail */
    /* TLS over another transport (the BIO below): that transport as a sock of its own (its ops,
     * xp and the shared fd; never armed or closed itself, destroyed with us), NULL when OpenSSL
     * drives the fd. Owned. */
    struct vd_sock *below;
    int below_want; /* VD_WANT_* @below asked for on its last VD_EAGAIN in this call, or 0 */
    int below_err;  /* @below's last error in this call (not VD_EAGAIN), or 0 */
};

enum tls_op {
    OP_HANDSHAKE,
    OP_READ,
    OP_WRITE,
};

static void set_detail(struct tls_conn *c, const char *fmt, ...) VD_PRINTF(2, 3);

static void
set_detail(struct tls_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
    va_end(ap);
}

static struct tls_conn *
conn_of(struct vd_sock *s)
{
    return s->ops == &vd_xport_tls ? s->xp : NULL;
}

/* The reason string of the oldest queued OpenSSL error (a system error's errno text), then an
 * empty queue. */
static const char *
take_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *why = NULL;
    if (e != 0 && ERR_SYSTEM_ERROR(e)) {
        why = vd_strerror(-(int)ERR_GET_REASON(e));
    } else if (e != 0) {
        why = ERR_reason_error_string(e);
    }
    ERR_clear_error();
    return why ? why : "unknown OpenSSL error";
}

/* Copies @in lowercased and without one trailing dot (RFC 6066 §3: SNI carries no trailing dot).
 * Returns false when it does not fit a host name. */
static bool
host_norm(const char *in, size_t len, char out[HOST_MAX + 1])
{
    if (len > 0 && in[len - 1] == '.') {
        len--;
    }
    if (len == 0 || len > HOST_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            return false;
        }
        out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    out[len] = '\0';
    return true;
}

/* True when @host is an IPv4 or IPv6 literal ("[::1]" allowed); @bare gets it without brackets. */
static bool
host_is_ip(const char *host, char bare[INET6_ADDRSTRLEN + 1])
{
    size_t len = strlen(host);
    unsigned char a[sizeof(struct in6_addr)];
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (len > INET6_ADDRSTRLEN) {
        return false;
    }
    memcpy(bare, host, len);
    bare[len] = '\0';
    return inet_pton(AF_INET, bare, a) == 1 || inet_pton(AF_INET6, bare, a) == 1;
}

/* ---- client session cache ------------------------------------------------------------------ */

static void
slot_clear(struct sess_slot *sl)
{
    free(sl->key);
    sl->key = NULL;
    SSL_SESSION_free(sl->sess);
    sl->sess = NULL;
    sl->used = 0;
}

static struct sess_slot *
slot_find(struct vd_tls_client *t, const char *key)
{
    for (size_t i = 0; i < SESS_SLOTS; i++) {
        if (t->slots[i].key != NULL && strcmp(t->slots[i].key, key) == 0) {
            return &t->slots[i];
        }
    }
    return NULL;
}

/* Stores @sess for @key (takes ownership of @sess), replacing the least recently used entry when
 * the table is full. A 256-entry scan under the lock is noise next to a handshake. */
static void
cache_put(struct vd_tls_client *t, const char *key, SSL_SESSION *sess)
{
    pthread_mutex_lock(&t->lock);
    struct sess_slot *sl = slot_find(t, key);
    if (sl == NULL) {
        sl = &t->slots[0];
        for (size_t i = 1; i < SESS_SLOTS && sl->key != NULL; i++) {
            if (t->slots[i].key == NULL || t->slots[i].used < sl->used) {
                sl = &t->slots[i];
            }
        }
        slot_clear(sl);
        sl->key = strdup(key);
        if (sl->key == NULL) {
            pthread_mutex_unlock(&t->lock);
            SSL_SESSION_free(sess);
            return;
        }
    } else {
        SSL_SESSION_free(sl->sess);
    }
    sl->sess = sess;
    sl->used = ++t->clock;
    pthread_mutex_unlock(&t->lock);
}

/* Returns a usable session for @key (the caller owns the reference), or NULL. */
static SSL_SESSION *
cache_get(struct vd_tls_client *t, const char *key)
{
    SSL_SESSION *sess = NULL;
    pthread_mutex_lock(&t->lock);
    struct sess_slot *sl = slot_find(t, key);
    if (sl != NULL) {
        long born = SSL_SESSION_get_time(sl->sess);
        long life = SSL_SESSION_get_timeout(sl->sess);
        if (!SSL_SESSION_is_resumable(sl->sess) || (long)time(NULL) - born > life) {
            slot_clear(sl);
        } else if (SSL_SESSION_get_protocol_version(sl->sess) == TLS1_3_VERSION) {
            /* RFC 8446 §C.4: clients SHOULD NOT reuse a ticket; the resumed connection brings
             * fresh ones. OpenSSL also retires a TLS 1.3 session once it has been resumed. */
            sess = sl->sess;
            sl->sess = NULL;
            slot_clear(sl);
        } else {
            /* A copy again (see sess_new): a resumed connection that ends badly marks its own
             * session object unresumable. */
            sess = SSL_SESSION_dup(sl->sess);
            sl->used = ++t->clock;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return sess;
}

static void
cache_drop(struct vd_tls_client *t, const char *key)
{
    pthread_mutex_lock(&t->lock);
    struct sess_slot *sl = slot_find(t, key);
    if (sl != NULL) {
        slot_clear(sl);
    }
    pthread_mutex_unlock(&t->lock);
}

/* OpenSSL's new-session callback (client side). TLS 1.2 sessions arrive at the end of the
 * handshake; TLS 1.3 tickets (RFC 8446 §4.6.1) arrive afterwards, inside a later SSL_read, so
 * the connection's key must live as long as the connection. */
static int
sess_new(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_conn *c = SSL_get_app_data(ssl);
    if (c == NULL || c->client == NULL || c->key == NULL) {
        return 0;
    }
    /* Keep a private copy: when a connection ends badly (say, the server closes without
     * close_notify) OpenSSL marks that connection's session object unresumable, and that must not
     * spoil the cache. Returning 0 tells OpenSSL we kept no reference to @sess itself. */
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    if (copy != NULL) {
        cache_put(c->client, c->key, copy);
    }
    return 0;
}

/* ---- the transport ------------------------------------------------------------------------- */

/* Before every SSL_* call that may do I/O: an empty error queue, errno and the transport
 * beneath's outcome cleared, so tls_fail sees only what this call did. */
static void
call_begin(struct tls_conn *c)
{
    ERR_clear_error();
    errno = 0;
    c->below_want = 0;
    c->below_err = 0;
}

/* Maps a failed SSL_* call (after call_begin before it) to a return code and s->want, and
 * records the detail. @sys is errno right after the call. Leaves the error queue empty. */
static int
tls_fail(struct vd_sock *s, struct tls_conn *c, int ret, enum tls_op op, int sys)
{
    int e = SSL_get_error(c->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        /* Over another transport, what the fd must become is what that transport said: an
         * outer TLS layer may need the socket writable to go on reading, and vice versa. */
        s->want = c->below_want              ? c->below_want
                  : e == SSL_ERROR_WANT_READ ? VD_WANT_READ
                                             : VD_WANT_WRITE;
        return VD_EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        /* close_notify (RFC 8446 §6.1), or a bare EOF on the server side, which sets
         * SSL_OP_IGNORE_UNEXPECTED_EOF. */
        ERR_clear_error();
        if (op == OP_READ) {
            return 0;
        }
        set_detail(c, "connection closed during %s", op == OP_HANDSHAKE ? "handshake" : "write");
        return op == OP_HANDSHAKE ? VD_ETLS : VD_ECLOSED;
    case SSL_ERROR_SYSCALL: {
        unsigned long q = ERR_peek_error();
        if (c->below_err != 0) {
            /* The transport beneath failed (its own TLS error, a reset, a truncation): say
             * what it said. */
            ERR_clear_error();
            set_detail(c, "%s",
                       c->below->ops == &vd_xport_tls ? vd_tls_error_detail(c->below)
                                                      : vd_strerror(c->below_err));
            return op == OP_HANDSHAKE ? VD_ETLS : c->below_err;
        }
        if (c->below != NULL) {
            sys = 0; /* errno is the transport beneath's business, and it reported no error */
        }
        if (q != 0 && ERR_GET_LIB(q) == ERR_LIB_SYS) {
            sys = ERR_GET_REASON(q);
        }
        ERR_clear_error();
        if (sys <= 0) {
            set_detail(c, "connection closed unexpectedly");
            return op == OP_HANDSHAKE ? VD_ETLS : VD_ECLOSED;
        }
        set_detail(c, "%s", vd_strerror(-sys));
        return op == OP_HANDSHAKE ? VD_ETLS : -sys;
    }
    case SSL_ERROR_SSL: {
        unsigned long q = ERR_peek_error();
        int lib = ERR_GET_LIB(q), reason = ERR_GET_REASON(q);
        if (lib == ERR_LIB_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING &&
            op != OP_HANDSHAKE) {
            /* Only the client gets here (the server ignores a missing close_notify). Telling it
             * apart from close_notify lets a close-delimited body detect truncation. */
            ERR_clear_error();
            set_detail(c, "peer closed without close_notify");
            return VD_ECLOSED;
        }
        if (lib == ERR_LIB_SSL && reason == SSL_R_CERTIFICATE_VERIFY_FAILED && c->client != NULL) {
            long v = SSL_get_verify_result(c->ssl);
            ERR_clear_error();
            if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
                set_detail(c, "hostname mismatch");
            } else {
                set_detail(c, "%s", X509_verify_cert_error_string(v));
            }
            return VD_ETLSVERIFY;
        }
        set_detail(c, "%s", take_reason());
        if (c->client != NULL && c->key != NULL) {
            /* RFC 5246 §7.2.2: a session ended by a fatal alert must not be resumed. */
            cache_drop(c->client, c->key);
        }
        return VD_ETLS;
    }
    default:
        ERR_clear_error();
        set_detail(c, "unexpected SSL_get_error %d", e);
        return VD_ETLS;
    }
}

static ssize_t
tls_read(struct vd_sock *s, uint8_t *buf, size_t len)
{
    struct tls_conn *c = s->xp;
    size_t n = 0;
    if (len == 0) {
        return 0;
    }
    call_begin(c);
    if (SSL_read_ex(c->ssl, buf, len, &n) == 1) {
        return (ssize_t)n;
    }
    return tls_fail(s, c, 0, OP_READ, errno);
}

/* TLS has no writev, and SSL_write per small iovec would cost a record (and a syscall) each, so
 * small iovecs are coalesced into one record-sized stack buffer; an iovec that fills a record on
 * its own is written in place. With SSL_MODE_ENABLE_PARTIAL_WRITE each SSL_write_ex sends one
 * record, so this loops until the socket is full. After a retryable failure OpenSSL keeps the
 * sealed record and requires the retry to carry the same bytes at least as far
 * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets their address change): returning how much was
 * written so far, or VD_EAGAIN, makes the owner's next call start with exactly those bytes, and
 * the coalescing below takes min(16 KiB, offered) bytes again, never fewer. */
static ssize_t
tls_writev(struct vd_sock *s, const struct iovec *iov, int iovcnt)
{
    struct tls_conn *c = s->xp;
    uint8_t stage[TLS_RECORD];
    size_t total = 0, off = 0;
    int i = 0;
    for (;;) {
        while (i < iovcnt && off == iov[i].iov_len) {
            i++;
            off = 0;
        }
        if (i == iovcnt) {
            return (ssize_t)total;
        }
        const uint8_t *p = (const uint8_t *)iov[i].iov_base + off;
        size_t len = iov[i].iov_len - off;
        if (len < TLS_RECORD && i + 1 < iovcnt) {
            memcpy(stage, p, len);
            for (int j = i + 1; j < iovcnt && len < TLS_RECORD; j++) {
                size_t take = VD_MIN(iov[j].iov_len, TLS_RECORD - len);
                memcpy(stage + len, iov[j].iov_base, take);
                len += take;
            }
            p = stage;
        }
        size_t w = 0;
        call_begin(c);
        if (SSL_write_ex(c->ssl, p, len, &w) != 1) {
            int sys = errno;
            if (total > 0) {
                /* Report the progress; the failure (or the pending record) meets the next call. */
                ERR_clear_error();
                return (ssize_t)total;
            }
            return tls_fail(s, c, 0, OP_WRITE, sys);
        }
        total += w;
        while (w > 0) {
            size_t step = VD_MIN(w, iov[i].iov_len - off);
            off += step;
            w -= step;
            if (off == iov[i].iov_len) {
                i++;
                off = 0;
            }
        }
    }
}

/* RFC 8446 §6.1: close_notify closes our write side only; then FIN (over another transport:
 * that transport's own shutdown, so an outer TLS layer sends its close_notify and the FIN). The
 * peer's close_notify is left to read(), which returns 0 on it. */
static int
tls_shutdown(struct vd_sock *s)
{
    struct tls_conn *c = s->xp;
    if (!c->shut_sent && SSL_is_init_finished(c->ssl)) {
        call_begin(c);
        int r = SSL_shutdown(c->ssl);
        if (r < 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_WRITE) {
            /* The alert is queued in OpenSSL; a later call flushes it (it does not read). */
            ERR_clear_error();
            s->want = c->below_want ? c->below_want : VD_WANT_WRITE;
            return VD_EAGAIN;
        }
        /* Any other failure loses the close_notify; the FIN below still ends the stream. */
        ERR_clear_error();
    }
    c->shut_sent = true;
    if (c->below != NULL) {
        int r = c->below->ops->shutdown(c->below);
        if (r == VD_EAGAIN) {
            s->want = c->below->want;
        }
        return r;
    }
    return shutdown(s->fd, SHUT_WR) == 0 ? 0 : -errno;
}

static void
tls_destroy(struct vd_sock *s)
{
    struct tls_conn *c = s->xp;
    if (c == NULL) {
        return;
    }
    /* RFC 5246 §7.2.1: since TLS 1.1 a connection closed without close_notify may still be
     * resumed. Without this SSL_free would evict the session from the server cache (and mark it
     * unresumable); fatal alerts have already evicted theirs. */
    SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_SENT_SHUTDOWN);
    SSL_free(c->ssl); /* and our BIO, which owns nothing */
    if (c->below != NULL) {
        c->below->ops->destroy(c->below);
        free(c->below);
    }
    free(c->key);
    free(c);
    s->xp = NULL;
}

/* SSL_has_pending: a record read but not yet returned, whole or in part (read-ahead), or
 * plaintext left from one; and beneath, whatever the outer layer holds of the inner records. */
static bool
tls_pending(struct vd_sock *s)
{
    struct tls_conn *c = s->xp;
    return SSL_has_pending(c->ssl) == 1 || (c->below != NULL && vd_sock_pending(c->below));
}

const struct vd_xport_ops vd_xport_tls = {
    .name = "tls",
    .read = tls_read,
    .writev = tls_writev,
    .shutdown = tls_shutdown,
    .destroy = tls_destroy,
    .pending = tls_pending,
};

/* ---- TLS over another transport ------------------------------------------------------------ */

/* When the sock already carries TLS (the CONNECT tunnel of an https:// parent proxy, through
 * which viaduct speaks TLS to the origin), a second SSL sits on top of the first through this
 * BIO: its read and write call the transport beneath (c->below) directly, on the loop's thread,
 * inside the upper SSL call. No BIO pair: there is no second buffer to copy through and keep
 * bounded, and the transport beneath keeps its own contract (VD_EAGAIN with a want; a retried
 * write starts with the same bytes, which OpenSSL guarantees for the record it is flushing). */

static BIO_METHOD *below_method;
static pthread_once_t below_once = PTHREAD_ONCE_INIT;

/* OpenSSL's error queue is per thread, so both layers share it. The upper SSL may have errors
 * queued when it calls the BIO (a failed certificate check, then the fatal alert it sends about
 * it); the layer beneath starts every call by clearing the queue and reads its own errors from
 * it. So the upper's errors wait here meanwhile and are queued again after (their codes, which is
 * all tls_fail reads). */
struct err_stash {
    unsigned long code[16]; /* ERR_NUM_ERRORS: the queue holds no more */
    int n;
};

static void
err_stash_take(struct err_stash *st)
{
    unsigned long e;
    st->n = 0;
    while ((e = ERR_get_error()) != 0) {
        if (st->n < (int)VD_ARRAY_LEN(st->code)) {
            st->code[st->n++] = e;
        }
    }
}

static void
err_stash_put(const struct err_stash *st)
{
    ERR_clear_error(); /* whatever the layer beneath left */
    for (int i = 0; i < st->n; i++) {
        unsigned long e = st->code[i];
        ERR_new();
        ERR_set_debug(NULL, 0, NULL);
        ERR_set_error(ERR_SYSTEM_ERROR(e) ? ERR_LIB_SYS : ERR_GET_LIB(e), ERR_GET_REASON(e), NULL);
    }
}

static int
below_read(BIO *b, char *buf, int len)
{
    struct tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0) {
        return 0;
    }
    struct err_stash st;
    err_stash_take(&st);
    ssize_t n = vd_sock_read(c->below, (uint8_t *)buf, (size_t)len);
    err_stash_put(&st);
    if (n > 0) {
        return (int)n;
    }
    if (n == VD_EAGAIN) {
        c->below_want = c->below->want;
        BIO_set_retry_read(b);
        return -1;
    }
    if (n == 0) {
        return 0; /* the transport beneath ended cleanly: EOF for the SSL above */
    }
    c->below_err = (int)n;
    return -1;
}

static int
below_write(BIO *b, const char *buf, int len)
{
    struct tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0) {
        return 0;
    }
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = (size_t)len};
    struct err_stash st;
    err_stash_take(&st);
    ssize_t n = vd_sock_writev(c->below, &iov, 1);
    err_stash_put(&st);
    if (n > 0) {
        return (int)n;
    }
    if (n == VD_EAGAIN) {
        c->below_want = c->below->want;
        BIO_set_retry_write(b);
        return -1;
    }
    c->below_err = n == 0 ? VD_ECLOSED : (int)n;
    return -1;
}

static long
below_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    /* libssl flushes after each handshake flight; writes go straight through, so there is
     * never anything to flush. Nothing else applies (no fd, no kTLS, no pending counts). */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void
below_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "vd_sock");
    if (m != NULL &&
        (BIO_meth_set_read(m, below_read) != 1 || BIO_meth_set_write(m, below_write) != 1 ||
         BIO_meth_set_ctrl(m, below_ctrl) != 1)) {
        BIO_meth_free(m);
        m = NULL;
    }
    ERR_clear_error();
    below_method = m; /* kept for the life of the process; NULL: attaching fails (ENOMEM) */
}

/* Moves the transport now on @s beneath @c: a sock of its own that shares the fd, with a BIO
 * over it as the SSL's only I/O. Returns false when out of memory (@s unchanged). */
static bool
below_attach(struct tls_conn *c, struct vd_sock *s)
{
    (void)pthread_once(&below_once, below_method_make);
    if (below_method == NULL) {
        return false;
    }
    struct vd_sock *b = calloc(1, sizeof(*b));
    BIO *bio = b != NULL ? BIO_new(below_method) : NULL;
    if (bio == NULL) {
        free(b);
        ERR_clear_error();
        return false;
    }
    b->fd = s->fd;
    b->ops = s->ops;
    b->xp = s->xp;
    c->below = b;
    BIO_set_data(bio, c);
    BIO_set_init(bio, 1);
    SSL_set_bio(c->ssl, bio, bio); /* one reference, taken by the SSL for both directions */
    /* An inner record plus its overhead (at most 5 + 16 + 48 + 16 bytes in TLS 1.2 with CBC and
     * SHA-384; 22 in TLS 1.3) then fits one outer record, instead of spilling a few bytes into
     * a second record, and a second write, every time. */
    (void)SSL_set_max_send_fragment(c->ssl, TLS_RECORD - 256);
    return true;
}

/* SSL_set_fd drives a plain TCP socket directly through OpenSSL's socket BIO: one copy and one
 * syscall per record, no call through our layer. Any other transport beneath (TLS) goes through
 * the BIO above. Virtual transports (an HTTP/2 stream, readiness from the session) are not
 * supported: the "tls" ops have no arm or close to pass on. */
static struct tls_conn *
conn_new(SSL_CTX *ctx, struct vd_sock *s)
{
    VD_BUG_ON(s->ops->arm != NULL);
    struct tls_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL ||
        (s->ops == &vd_xport_tcp ? SSL_set_fd(c->ssl, s->fd) != 1 : !below_attach(c, s))) {
        SSL_free(c->ssl);
        free(c);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_app_data(c->ssl, c);
    return c;
}

static void
conn_install(struct vd_sock *s, struct tls_conn *c)
{
    s->xp = c;
    s->ops = &vd_xport_tls;
}

int
vd_tls_attach_server(struct vd_sock *s, struct vd_tls_server *t)
{
    struct tls_conn *c = conn_new(t->certs[0].ctx, s);
    if (c == NULL) {
        return VD_ENOMEM;
    }
    SSL_set_accept_state(c->ssl);
    conn_install(s, c);
    return 0;
}

int
vd_tls_attach_client(struct vd_sock *s, struct vd_tls_client *t, const char *sni,
                     const char *verify_host)
{
    char name[HOST_MAX + 1], ip[INET6_ADDRSTRLEN + 1];
    struct tls_conn *c = conn_new(t->ctx, s);
    if (c == NULL) {
        return VD_ENOMEM;
    }
    c->client = t;
    SSL_set_connect_state(c->ssl);
    /* RFC 6066 §3: SNI carries DNS names only, never IP literals. */
    const char *sent = NULL; /* the SNI actually sent */
    if (sni != NULL && !host_is_ip(sni, ip) && host_norm(sni, strlen(sni), name)) {
        if (SSL_set_tlsext_host_name(c->ssl, name) != 1) {
            goto nomem;
        }
        sent = sni;
    }
    if (verify_host == NULL) {
        verify_host = sni;
    }
    if (verify_host != NULL) {
        if (host_is_ip(verify_host, ip)) {
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), ip) != 1) {
                goto nomem;
            }
        } else {
            const char *h = host_norm(verify_host, strlen(verify_host), name) ? name : verify_host;
            /* RFC 6125 §6.4.3: "*" matches one whole label only, never "f*.example.com". */
            SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (SSL_set1_host(c->ssl, h) != 1) {
                goto nomem;
            }
        }
    }
    /* A session is only offered again to the host it was verified for, under the same SNI (the
     * one sent: an IP literal asked for as SNI is the same as none). Without a host there is
     * nothing to key it by, so nothing is cached. */
    if (verify_host != NULL) {
        size_t klen = strlen(verify_host) + strlen(sent ? sent : "") + 2;
        c->key = malloc(klen);
        if (c->key == NULL) {
            goto nomem;
        }
        (void)snprintf(c->key, klen, "%s\n%s", verify_host, sent ? sent : "");
        for (char *k = c->key; *k != '\0'; k++) {
            if (*k >= 'A' && *k <= 'Z') {
                *k = (char)(*k + 32);
            }
        }
        SSL_SESSION *sess = cache_get(t, c->key);
        if (sess != NULL) {
            int ok = SSL_set_session(c->ssl, sess);
            SSL_SESSION_free(sess);
            if (ok != 1) {
                goto nomem;
            }
        }
    }
    conn_install(s, c);
    return 0;
nomem:
    ERR_clear_error();
    SSL_free(c->ssl);
    free(c->below); /* a copy: the transport itself stays on @s */
    free(c->key);
    free(c);
    return VD_ENOMEM;
}

int
vd_tls_handshake(struct vd_sock *s)
{
    struct tls_conn *c = conn_of(s);
    if (c == NULL) {
        return VD_ETLS;
    }
    if (SSL_is_init_finished(c->ssl)) {
        return 0;
    }
    call_begin(c);
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        return 0;
    }
    return tls_fail(s, c, r, OP_HANDSHAKE, errno);
}

const char *
vd_tls_error_detail(struct vd_sock *s)
{
    struct tls_conn *c = conn_of(s);
    return c != NULL && c->detail[0] != '\0' ? c->detail : "TLS error";
}

void
vd_tls_read_ahead(struct vd_sock *s)
{
    struct tls_conn *c = conn_of(s);
    if (c != NULL) {
        SSL_set_read_ahead(c->ssl, 1);
    }
}

const char *
vd_tls_alpn(struct vd_sock *s)
{
    static const char *const known[] = {"http/1.1", "h2"};
    struct tls_conn *c = conn_of(s);
    const unsigned char *p = NULL;
    unsigned int len = 0;
    if (c == NULL) {
        return NULL;
    }
    SSL_get0_alpn_selected(c->ssl, &p, &len);
    for (size_t i = 0; i < VD_ARRAY_LEN(known); i++) {
        if (len == strlen(known[i]) && memcmp(p, known[i], len) == 0) {
            return known[i];
        }
    }
    return NULL;
}

const char *
vd_tls_sni(struct vd_sock *s)
{
    struct tls_conn *c = conn_of(s);
    return c != NULL ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

bool
vd_tls_resumed(struct vd_sock *s)
{
    struct tls_conn *c = conn_of(s);
    return c != NULL && SSL_session_reused(c->ssl) == 1;
}

SSL *
vd_tls_ssl_get(struct vd_sock *s)
{
    struct tls_conn *c = conn_of(s);
    return c != NULL ? c->ssl : NULL;
}

/* ---- contexts ------------------------------------------------------------------------------ */

/* Settings both sides share. */
static void
ctx_common(SSL_CTX *ctx, int min_version)
{
    (void)SSL_CTX_set_min_proto_version(ctx, min_version);
    /* RFC 8446 has no renegotiation; in TLS 1.2 it is a DoS lever, so refuse it (RFC 5746 aside).
     * Compression is off against CRIME. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* RELEASE_BUFFERS returns the ~34 KiB of record buffers while a connection is idle. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
}

static int
parse_min_version(const char *text, int *v)
{
    if (text == NULL || strcmp(text, "1.2") == 0) {
        *v = TLS1_2_VERSION;
    } else if (strcmp(text, "1.3") == 0) {
        *v = TLS1_3_VERSION;
    } else {
        return VD_ECONF;
    }
    return 0;
}

static int
add_name(struct tls_cert *tc, const unsigned char *p, int len)
{
    char host[HOST_MAX + 1];
    if (len <= 0 || memchr(p, '\0', (size_t)len) != NULL ||
        !host_norm((const char *)p, (size_t)len, host)) {
        return 0; /* not a usable name; ignore it */
    }
    char **grown = realloc(tc->names, (tc->nnames + 1) * sizeof(*grown));
    if (grown == NULL) {
        return VD_ENOMEM;
    }
    tc->names = grown;
    tc->names[tc->nnames] = strdup(host);
    if (tc->names[tc->nnames] == NULL) {
        return VD_ENOMEM;
    }
    tc->nnames++;
    return 0;
}

/* RFC 6125 §6.4.4: the CN counts only when the certificate has no DNS subjectAltName. */
static int
collect_names(struct tls_cert *tc, X509 *x)
{
    int r = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && r == 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS) {
            r = add_name(tc, ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName));
        }
    }
    GENERAL_NAMES_free(gens);
    if (r == 0 && tc->nnames == 0) {
        const X509_NAME *subj = X509_get_subject_name(x);
        int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
        unsigned char *cn = NULL;
        int len = idx < 0 ? -1
                          : ASN1_STRING_to_UTF8(
                                &cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)));
        if (len > 0) {
            r = add_name(tc, cn, len);
        }
        OPENSSL_free(cn);
    }
    ERR_clear_error();
    return r;
}

/* RFC 6125 §6.4.3: "*.example.com" matches exactly one non-empty left-most label. */
static bool
wild_match(const char *pattern, const char *host)
{
    if (pattern[0] != '*' || pattern[1] != '.') {
        return false;
    }
    const char *dot = strchr(host, '.');
    return dot != NULL && dot != host && strcmp(dot, pattern + 1) == 0;
}

/* Exact names win over wildcards, then the listener's order; no match gives the default. */
static const struct tls_cert *
pick_cert(const struct vd_tls_server *t, const char *host)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < t->ncerts; i++) {
            for (size_t j = 0; j < t->certs[i].nnames; j++) {
                const char *n = t->certs[i].names[j];
                if (pass == 0 ? strcmp(n, host) == 0 : wild_match(n, host)) {
                    return &t->certs[i];
                }
            }
        }
    }
    return &t->certs[0];
}

/* RFC 6066 §3 server_name: switch to the certificate that names the host. The default context
 * stays the session context, so one ticket key and session cache cover every certificate. */
static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
    const struct vd_tls_server *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char host[HOST_MAX + 1];
    (void)alert;
    if (name == NULL || t->ncerts < 2 || !host_norm(name, strlen(name), host)) {
        return SSL_TLSEXT_ERR_OK;
    }
    const struct tls_cert *tc = pick_cert(t, host);
    if (SSL_get_SSL_CTX(ssl) != tc->ctx && SSL_set_SSL_CTX(ssl, tc->ctx) == NULL) {
        ERR_clear_error(); /* keep the current certificate */
    }
    return SSL_TLSEXT_ERR_OK;
}

/* RFC 7301 §3.2: choose by our preference among the client's offers. When none overlaps we go
 * on without ALPN rather than send no_application_protocol: HTTP/1.1 is what such a client gets
 * anyway. */
static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
        unsigned int inlen, void *arg)
{
    const struct vd_tls_server *t = arg;
    unsigned char *sel = NULL;
    (void)ssl;
    const uint8_t *ours = t->alpn;
    size_t ours_len = t->alpn_len;
    if (t->h2 && ours == alpn_http11) {
        ours = alpn_h2_http11;
        ours_len = sizeof(alpn_h2_http11);
    }
    if (SSL_select_next_proto(&sel, outlen, ours, (unsigned int)ours_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int
load_cert(struct vd_tls_server *t, struct tls_cert *tc, const struct vd_conf_cert *cc,
          int min_version, char *err, size_t errlen)
{
    tc->ctx = SSL_CTX_new(TLS_server_method());
    if (tc->ctx == NULL) {
        (void)snprintf(err, errlen, "cannot create a TLS context: %s", take_reason());
        return VD_ECONF;
    }
    ctx_common(tc->ctx, min_version);
    /* A client that just closes is normal for browsers and tools; read() reports it as EOF. */
    SSL_CTX_set_options(tc->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(tc->ctx, cc->cert_file) != 1) {
        (void)snprintf(err, errlen, "%s: cannot load certificate chain: %s", cc->cert_file,
                       take_reason());
        return VD_ECONF;
    }
    if (SSL_CTX_use_PrivateKey_file(tc->ctx, cc->key_file, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
            (void)snprintf(err, errlen, "%s: private key does not match certificate %s",
                           cc->key_file, cc->cert_file);
            ERR_clear_error();
        } else {
            (void)snprintf(err, errlen, "%s: cannot load private key: %s", cc->key_file,
                           take_reason());
        }
        return VD_ECONF;
    }
    /* Belt and braces: OpenSSL checks the pair when the key is loaded, but not for every key
     * type the same way. */
    if (SSL_CTX_check_private_key(tc->ctx) != 1) {
        (void)snprintf(err, errlen, "%s: private key does not match certificate %s (%s)",
                       cc->key_file, cc->cert_file, take_reason());
        return VD_ECONF;
    }
    if (collect_names(tc, SSL_CTX_get0_certificate(tc->ctx)) < 0) {
        (void)snprintf(err, errlen, "%s: out of memory", cc->cert_file);
        return VD_ECONF;
    }
    /* Session resumption: tickets stay on (OpenSSL's default; the key is per default context,
     * shared by all workers), plus a bounded server-side cache for clients without tickets. */
    SSL_CTX_set_session_cache_mode(tc->ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(tc->ctx, SRV_CACHE_MAX);
    if (SSL_CTX_set_session_id_context(tc->ctx, (const unsigned char *)SESSION_ID_CTX,
                                       sizeof(SESSION_ID_CTX) - 1) != 1) {
        (void)snprintf(err, errlen, "cannot set the session id context: %s", take_reason());
        return VD_ECONF;
    }
    SSL_CTX_set_tlsext_servername_callback(tc->ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(tc->ctx, t);
    SSL_CTX_set_alpn_select_cb(tc->ctx, alpn_cb, t);
    return 0;
}

/* @alpn is the list the server accepts (static storage), so "h2" can be added by the caller. */
static int
server_new(const struct vd_conf_listener *l, const uint8_t *alpn, size_t alpn_len,
           struct vd_tls_server **out, char *err, size_t errlen)
{
    const char *where = l->addr_text ? l->addr_text : "?";
    int minv;
    *out = NULL;
    if (parse_min_version(l->tls_min_version, &minv) < 0) {
        (void)snprintf(err, errlen, "listener %s: tls_min_version must be \"1.2\" or \"1.3\"",
                       where);
        return VD_ECONF;
    }
    if (l->ncerts == 0) {
        (void)snprintf(err, errlen, "listener %s: TLS needs at least one certificate", where);
        return VD_ECONF;
    }
    struct vd_tls_server *t = calloc(1, sizeof(*t));
    if (t == NULL || (t->certs = calloc(l->ncerts, sizeof(*t->certs))) == NULL) {
        free(t);
        (void)snprintf(err, errlen, "listener %s: out of memory", where);
        return VD_ECONF;
    }
    t->ncerts = l->ncerts;
    t->alpn = alpn;
    t->alpn_len = alpn_len;
    for (size_t i = 0; i < l->ncerts; i++) {
        int r = load_cert(t, &t->certs[i], &l->certs[i], minv, err, errlen);
        if (r < 0) {
            vd_tls_server_free(t);
            ERR_clear_error();
            return r;
        }
    }
    *out = t;
    return 0;
}

int
vd_tls_server_new(const struct vd_conf_listener *l, struct vd_tls_server **out, char *err,
                  size_t errlen)
{
    return server_new(l, alpn_http11, sizeof(alpn_http11), out, err, errlen);
}

void
vd_tls_server_set_h2(struct vd_tls_server *t, bool on)
{
    t->h2 = on;
}

void
vd_tls_server_free(struct vd_tls_server *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->ncerts; i++) {
        for (size_t j = 0; j < t->certs[i].nnames; j++) {
            free(t->certs[i].names[j]);
        }
        free(t->certs[i].names);
        SSL_CTX_free(t->certs[i].ctx);
    }
    free(t->certs);
    free(t);
}

int
vd_tls_client_new(const struct vd_conf_upstream *u, struct vd_tls_client **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    struct vd_tls_client *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        (void)snprintf(err, errlen, "upstream TLS: out of memory");
        return VD_ECONF;
    }
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t);
        (void)snprintf(err, errlen, "upstream TLS: cannot create a lock");
        return VD_ECONF;
    }
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (t->ctx == NULL) {
        (void)snprintf(err, errlen, "upstream TLS: cannot create a context: %s", take_reason());
        goto fail;
    }
    ctx_common(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(t->ctx, u->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (u->ca_file != NULL || u->ca_path != NULL) {
        if (SSL_CTX_load_verify_locations(t->ctx, u->ca_file, u->ca_path) != 1) {
            (void)snprintf(err, errlen, "%s: cannot load CA certificates: %s",
                           u->ca_file ? u->ca_file : u->ca_path, take_reason());
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
        (void)snprintf(err, errlen, "cannot load the system CA store: %s", take_reason());
        goto fail;
    }
    /* Sessions are kept in our table (keyed by host, shared by workers), not OpenSSL's. */
    SSL_CTX_set_session_cache_mode(t->ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(t->ctx, sess_new);
    /* SSL_CTX_set_alpn_protos returns 0 on success. */
    if (SSL_CTX_set_alpn_protos(t->ctx, alpn_http11, sizeof(alpn_http11)) != 0) {
        (void)snprintf(err, errlen, "upstream TLS: cannot set ALPN");
        goto fail;
    }
    ERR_clear_error();
    *out = t;
    return 0;
fail:
    ERR_clear_error();
    vd_tls_client_free(t);
    return VD_ECONF;
}

void
vd_tls_client_free(struct vd_tls_client *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < SESS_SLOTS; i++) {
        slot_clear(&t->slots[i]);
    }
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->lock);
    free(t);
}
