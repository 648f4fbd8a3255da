/* SPDX-License-Identifier: MIT */
/* Unit tests for src/tls: real TLS between two vd_socks over TCP on 127.0.0.1, driven by a libuv
 * loop. Certificates are made at run time with the OpenSSL API: a test CA; leaves for
 * localhost + 127.0.0.1, *.example.test and a CN-only name; an expired leaf; a self-signed one. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "../../src/tls/tls-int.h"
#include "vd/err.h"
#include "vd/sock.h"
#include "vd/tls.h"
#include "vd_test.h"

/* ---- certificates ---------------------------------------------------------------------------- */

enum pki {
    CA,
    SRV,     /* CN localhost, SAN DNS:localhost, IP:127.0.0.1 */
    WILD,    /* CN *.example.test, SAN DNS:*.example.test */
    CNONLY,  /* CN cn.example.test, no SAN */
    EXPIRED, /* localhost, expired yesterday */
    SELF,    /* localhost, self-signed */
    NPKI,
};

static char tmpdir[64];
static char crt[NPKI][128], key[NPKI][128];

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/* Validity runs from @from_days to @to_days relative to now. @issuer NULL: self-signed. */
static X509 *
make_cert(EVP_PKEY *k, const char *cn, const char *san, X509 *issuer, EVP_PKEY *issuer_key,
          long from_days, long to_days, bool ca, long serial)
{
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), to_days * 86400));
    assert_int_equal(X509_set_pubkey(x, k), 1);
    X509_NAME *name = X509_get_subject_name(x);
    assert_int_equal(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
        1);
    assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name), 1);
    X509 *iss = issuer ? issuer : x;
    if (ca) {
        add_ext(x, iss, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, iss, NID_basic_constraints, "CA:FALSE");
        add_ext(x, iss, NID_ext_key_usage, "serverAuth");
    }
    add_ext(x, iss, NID_subject_key_identifier, "hash");
    add_ext(x, iss, NID_authority_key_identifier, "keyid:always");
    if (san != NULL) {
        add_ext(x, iss, NID_subject_alt_name, san);
    }
    assert_true(X509_sign(x, issuer_key ? issuer_key : k, EVP_sha256()) > 0);
    return x;
}

static void
write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    if (x != NULL) {
        assert_int_equal(PEM_write_X509(f, x), 1);
    }
    if (k != NULL) {
        assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    }
    assert_int_equal(fclose(f), 0);
}

static int
pki_setup(void **state)
{
    static const char *const names[NPKI] = {"ca", "srv", "wild", "cnonly", "expired", "self"};
    (void)state;
    (void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/vd-tls-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        return -1;
    }
    for (int i = 0; i < NPKI; i++) {
        (void)snprintf(crt[i], sizeof(crt[i]), "%s/%s.crt", tmpdir, names[i]);
        (void)snprintf(key[i], sizeof(key[i]), "%s/%s.key", tmpdir, names[i]);
    }
    EVP_PKEY *k[NPKI];
    X509 *x[NPKI];
    for (int i = 0; i < NPKI; i++) {
        k[i] = EVP_EC_gen("P-256");
        assert_non_null(k[i]);
    }
    x[CA] = make_cert(k[CA], "viaduct test CA", NULL, NULL, NULL, -1, 30, true, 1);
    x[SRV] = make_cert(k[SRV], "localhost", "DNS:localhost,IP:127.0.0.1", x[CA], k[CA], -1, 30,
                       false, 2);
    x[WILD] =
        make_cert(k[WILD], "*.example.test", "DNS:*.example.test", x[CA], k[CA], -1, 30, false, 3);
    x[CNONLY] = make_cert(k[CNONLY], "cn.example.test", NULL, x[CA], k[CA], -1, 30, false, 4);
    x[EXPIRED] =
        make_cert(k[EXPIRED], "localhost", "DNS:localhost", x[CA], k[CA], -30, -1, false, 5);
    x[SELF] = make_cert(k[SELF], "localhost", "DNS:localhost", NULL, NULL, -1, 30, false, 6);
    for (int i = 0; i < NPKI; i++) {
        write_pem(crt[i], x[i], NULL);
        write_pem(key[i], NULL, k[i]);
        X509_free(x[i]);
        EVP_PKEY_free(k[i]);
    }
    return 0;
}

static int
pki_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NPKI; i++) {
        (void)unlink(crt[i]);
        (void)unlink(key[i]);
    }
    return rmdir(tmpdir) == 0 ? 0 : -1;
}

static struct vd_tls_server *
server_make(const enum pki *which, size_t n, const char *min_version)
{
    struct vd_conf_cert certs[4];
    char minv[8] = "";
    char addr[] = "127.0.0.1:0";
    struct vd_conf_listener l = {.addr_text = addr, .tls = true, .certs = certs, .ncerts = n};
    char err[256] = "";
    struct vd_tls_server *t = NULL;
    for (size_t i = 0; i < n; i++) {
        certs[i].cert_file = crt[which[i]];
        certs[i].key_file = key[which[i]];
    }
    if (min_version != NULL) {
        (void)snprintf(minv, sizeof(minv), "%s", min_version);
        l.tls_min_version = minv;
    }
    int r = vd_tls_server_new(&l, &t, err, sizeof(err));
    if (r != 0) {
        print_error("vd_tls_server_new: %s\n", err);
    }
    assert_int_equal(r, 0);
    return t;
}

/* @ca: a CA file, or NULL for the system store. */
static struct vd_tls_client *
client_make(bool verify, const char *ca)
{
    char cafile[128];
    struct vd_conf_upstream u = {.verify = verify};
    char err[256] = "";
    struct vd_tls_client *t = NULL;
    if (ca != NULL) {
        (void)snprintf(cafile, sizeof(cafile), "%s", ca);
        u.ca_file = cafile;
    }
    int r = vd_tls_client_new(&u, &t, err, sizeof(err));
    if (r != 0) {
        print_error("vd_tls_client_new: %s\n", err);
    }
    assert_int_equal(r, 0);
    return t;
}

/* ---- a client and a server on one loop ------------------------------------------------------ */

struct opts {
    const char *sni, *verify_host;
    size_t cli_send, srv_send;     /* bytes each way (a pattern; the client's in odd iovecs) */
    bool small_sndbuf;             /* force partial writes */
    bool shutdown;                 /* both: close_notify and FIN after sending */
    bool cli_raw_fin, srv_raw_fin; /* FIN without close_notify after sending */
    int cli_max_version;           /* 0: default */
    bool cli_no_ticket;            /* TLS 1.2: resume by session id from the server's cache */
    const char *cli_alpn;          /* ALPN wire format override */
    const char *cli_plain;         /* client sends these bytes without TLS */
    /* TLS inside TLS: once the outer handshake is done, each side starts a second TLS session
     * inside the first (the contexts, versions and ALPN as the outer; the client's own names). */
    bool nested;
    const char *inner_sni, *inner_verify_host;
};

struct result {
    int setup_line; /* non-zero: setup failed at this line */
    bool timed_out;
    int loop_close;
    int cli_err, srv_err;
    char cli_where, srv_where; /* 'h'andshake, 'r'ead, 'w'rite, 's'hutdown */
    char cli_detail[128], srv_detail[128];
    bool cli_eof, srv_eof;
    size_t cli_in, srv_in;
    bool cli_data_ok, srv_data_ok;
    unsigned eagain_w, partial_w;
    char cli_alpn[16], srv_alpn[16];
    char srv_sni[64];
    char peer_cn[64];
    int version;
    bool cli_resumed, srv_resumed;
};

struct end {
    struct vd_sock s;
    bool hs_done;
    int err;
    char where;
    char detail[128];
    const uint8_t *out;
    size_t out_len, out_off;
    bool many_iov; /* offer the data as [37, 1200, 3000, 64K] iovecs; else one */
    bool shut, raw_fin, shut_done;
    size_t expect_in;
    bool expect_eof;
    bool check;
    unsigned recv_seed;
    size_t in_len;
    bool in_ok, eof;
    unsigned eagain_w, partial_w;
    int closed;
    /* The inner session still to start once the outer handshake is done (opts.nested). */
    bool nest_pending;
    struct vd_tls_server *nest_srv; /* server side, else the client's: */
    struct vd_tls_client *nest_cli;
    const char *nest_sni, *nest_verify_host;
    int nest_max_version;
};

struct pair {
    uv_loop_t loop;
    uv_timer_t timer;
    bool timed_out;
    struct end cli, srv;
};

static uint8_t
pattern(size_t i, unsigned seed)
{
    return (uint8_t)(i * 131u + (i >> 9) + seed);
}

static void
end_fail(struct end *e, int err, char where)
{
    e->err = err;
    e->where = where;
    (void)snprintf(e->detail, sizeof(e->detail), "%s", vd_tls_error_detail(&e->s));
    vd_sock_arm(&e->s, 0);
}

/* The same bytes at the same offset always give the same iovecs, so a retry after VD_EAGAIN
 * offers exactly what the failed call did, as the TLS transport requires. */
static int
make_iov(struct end *e, struct iovec *iov)
{
    static const size_t sizes[] = {37, 1200, 3000, 65536};
    size_t off = e->out_off;
    int n = 0;
    for (size_t i = 0; i < (e->many_iov ? VD_ARRAY_LEN(sizes) : 1) && off < e->out_len; i++) {
        size_t len = e->many_iov ? VD_MIN(sizes[i], e->out_len - off) : e->out_len - off;
        iov[n].iov_base = (void *)(e->out + off);
        iov[n].iov_len = len;
        off += len;
        n++;
    }
    return n;
}

static void
step(struct end *e)
{
    int want = 0;
    if (e->err != 0 || e->s.closing) {
        return;
    }
    while (!e->hs_done) {
        int r = vd_tls_handshake(&e->s);
        if (r == VD_EAGAIN) {
            vd_sock_arm(&e->s, e->s.want);
            return;
        }
        if (r < 0) {
            end_fail(e, r, 'h');
            return;
        }
        if (!e->nest_pending) {
            e->hs_done = true;
            break;
        }
        /* The outer session is up: the inner one starts inside it, and its handshake runs
         * through the outer layer's reads and writes. */
        e->nest_pending = false;
        r = e->nest_srv
                ? vd_tls_attach_server(&e->s, e->nest_srv)
                : vd_tls_attach_client(&e->s, e->nest_cli, e->nest_sni, e->nest_verify_host);
        if (r < 0) {
            end_fail(e, r, 'a');
            return;
        }
        if (e->nest_max_version != 0 &&
            SSL_set_max_proto_version(vd_tls_ssl_get(&e->s), e->nest_max_version) != 1) {
            end_fail(e, VD_ETLS, 'a');
            return;
        }
    }
    while (e->out_off < e->out_len) {
        struct iovec iov[4];
        int n = make_iov(e, iov);
        size_t offered = 0;
        for (int i = 0; i < n; i++) {
            offered += iov[i].iov_len;
        }
        ssize_t w = vd_sock_writev(&e->s, iov, n);
        if (w == VD_EAGAIN) {
            e->eagain_w++;
            want |= e->s.want;
            break;
        }
        if (w <= 0) {
            end_fail(e, (int)w, 'w');
            return;
        }
        if ((size_t)w < offered) {
            e->partial_w++;
        }
        e->out_off += (size_t)w;
    }
    if (e->out_off == e->out_len && !e->shut_done && (e->shut || e->raw_fin)) {
        int r =
            e->raw_fin ? (shutdown(e->s.fd, SHUT_WR) == 0 ? 0 : -errno) : e->s.ops->shutdown(&e->s);
        if (r == VD_EAGAIN) {
            want |= e->s.want;
        } else if (r < 0) {
            end_fail(e, r, 's');
            return;
        } else {
            e->shut_done = true;
        }
    }
    while (!e->eof) {
        uint8_t buf[5000]; /* smaller than a record: leaves plaintext buffered in OpenSSL */
        ssize_t n = vd_sock_read(&e->s, buf, sizeof(buf));
        if (n == VD_EAGAIN) {
            want |= e->s.want;
            break;
        }
        if (n < 0) {
            end_fail(e, (int)n, 'r');
            return;
        }
        if (n == 0) {
            e->eof = true;
            break;
        }
        for (ssize_t i = 0; e->check && i < n; i++) {
            if (buf[i] != pattern(e->in_len + (size_t)i, e->recv_seed)) {
                e->in_ok = false;
            }
        }
        e->in_len += (size_t)n;
    }
    vd_sock_arm(&e->s, want);
}

static bool
settled(const struct end *e)
{
    if (e->err != 0) {
        return true;
    }
    return e->hs_done && e->out_off == e->out_len && (!(e->shut || e->raw_fin) || e->shut_done) &&
           e->in_len >= e->expect_in && (!e->expect_eof || e->eof);
}

static void
on_event(struct vd_sock *s, int events)
{
    (void)events;
    step(s->data);
}

static void
on_close(struct vd_sock *s)
{
    ((struct end *)s->data)->closed++;
}

static void
on_timeout(uv_timer_t *t)
{
    ((struct pair *)t->data)->timed_out = true;
}

static uint8_t *
pattern_buf(size_t len, unsigned seed)
{
    uint8_t *p = malloc(len ? len : 1);
    for (size_t i = 0; p != NULL && i < len; i++) {
        p[i] = pattern(i, seed);
    }
    return p;
}

static void
copy_str(char *dst, size_t cap, const char *src)
{
    (void)snprintf(dst, cap, "%s", src ? src : "");
}

#define SETUP(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            res->setup_line = __LINE__;                                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Connects a client to a server over TCP on 127.0.0.1, runs TLS both sides until each is done or
 * failed (10 s at most), collects what the tests check and closes everything. Asserts nothing,
 * so it can run on another thread; the caller checks @res. */
static void
run_pair(struct vd_tls_server *st, struct vd_tls_client *ct, const struct opts *o,
         struct result *res)
{
    struct pair p;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    int sndbuf = 16384;
    memset(res, 0, sizeof(*res));
    memset(&p, 0, sizeof(p));
    SETUP(uv_loop_init(&p.loop) == 0);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    SETUP(lfd >= 0);
    SETUP(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 4) == 0);
    SETUP(getsockname(lfd, (struct sockaddr *)&sa, &salen) == 0);
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    SETUP(cfd >= 0);
    SETUP(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    int sfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    SETUP(sfd >= 0);
    close(lfd);
    SETUP(fcntl(cfd, F_SETFL, O_NONBLOCK) == 0);
    if (o->small_sndbuf) {
        SETUP(setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) == 0);
        SETUP(setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) == 0);
    }
    SETUP(vd_sock_init(&p.loop, &p.srv.s, sfd) == 0);
    SETUP(vd_sock_init(&p.loop, &p.cli.s, cfd) == 0);
    struct end *ends[2] = {&p.cli, &p.srv};
    for (int i = 0; i < 2; i++) {
        ends[i]->s.data = ends[i];
        ends[i]->s.on_event = on_event;
        ends[i]->s.on_close = on_close;
        ends[i]->in_ok = true;
        ends[i]->check = o->cli_plain == NULL;
    }
    uint8_t *cbuf = pattern_buf(o->cli_send, 1), *sbuf = pattern_buf(o->srv_send, 2);
    if (cbuf == NULL || sbuf == NULL) {
        free(cbuf);
        free(sbuf);
        res->setup_line = __LINE__;
        return;
    }
    p.cli.out = o->cli_plain ? (const uint8_t *)o->cli_plain : cbuf;
    p.cli.out_len = o->cli_plain ? strlen(o->cli_plain) : o->cli_send;
    p.cli.many_iov = true;
    p.cli.shut = o->shutdown && !o->cli_raw_fin;
    p.cli.raw_fin = o->cli_raw_fin;
    p.cli.expect_in = o->srv_send;
    p.cli.expect_eof = o->shutdown || o->srv_raw_fin;
    p.cli.recv_seed = 2;
    p.srv.out = sbuf;
    p.srv.out_len = o->srv_send;
    p.srv.shut = o->shutdown && !o->srv_raw_fin;
    p.srv.raw_fin = o->srv_raw_fin;
    p.srv.expect_in = o->cli_plain ? 0 : o->cli_send;
    p.srv.expect_eof = o->cli_plain == NULL && (o->shutdown || o->cli_raw_fin);
    p.srv.recv_seed = 1;

    SETUP(vd_tls_attach_server(&p.srv.s, st) == 0);
    if (o->nested) {
        p.srv.nest_pending = p.cli.nest_pending = true;
        p.srv.nest_srv = st;
        p.cli.nest_cli = ct;
        p.cli.nest_sni = o->inner_sni;
        p.cli.nest_verify_host = o->inner_verify_host;
        p.cli.nest_max_version = o->cli_max_version;
    }
    if (o->cli_plain != NULL) {
        p.cli.hs_done = true;
    } else {
        SETUP(vd_tls_attach_client(&p.cli.s, ct, o->sni, o->verify_host) == 0);
        SSL *ssl = vd_tls_ssl_get(&p.cli.s);
        SETUP(ssl != NULL);
        if (o->cli_max_version != 0) {
            SETUP(SSL_set_max_proto_version(ssl, o->cli_max_version) == 1);
        }
        if (o->cli_no_ticket) {
            SSL_set_options(ssl, SSL_OP_NO_TICKET);
        }
        if (o->cli_alpn != NULL) {
            SETUP(SSL_set_alpn_protos(ssl, (const unsigned char *)o->cli_alpn,
                                      (unsigned)strlen(o->cli_alpn)) == 0);
        }
    }
    SETUP(uv_timer_init(&p.loop, &p.timer) == 0);
    p.timer.data = &p;
    SETUP(uv_timer_start(&p.timer, on_timeout, 10000, 0) == 0);

    step(&p.srv);
    step(&p.cli);
    while (!(settled(&p.cli) && settled(&p.srv)) && !p.timed_out) {
        (void)uv_run(&p.loop, UV_RUN_ONCE);
    }

    res->timed_out = p.timed_out;
    res->cli_err = p.cli.err;
    res->srv_err = p.srv.err;
    res->cli_where = p.cli.where;
    res->srv_where = p.srv.where;
    copy_str(res->cli_detail, sizeof(res->cli_detail), p.cli.detail);
    copy_str(res->srv_detail, sizeof(res->srv_detail), p.srv.detail);
    res->cli_eof = p.cli.eof;
    res->srv_eof = p.srv.eof;
    res->cli_in = p.cli.in_len;
    res->srv_in = p.srv.in_len;
    res->cli_data_ok = p.cli.in_ok;
    res->srv_data_ok = p.srv.in_ok;
    res->eagain_w = p.cli.eagain_w + p.srv.eagain_w;
    res->partial_w = p.cli.partial_w + p.srv.partial_w;
    copy_str(res->cli_alpn, sizeof(res->cli_alpn), vd_tls_alpn(&p.cli.s));
    copy_str(res->srv_alpn, sizeof(res->srv_alpn), vd_tls_alpn(&p.srv.s));
    copy_str(res->srv_sni, sizeof(res->srv_sni), vd_tls_sni(&p.srv.s));
    res->cli_resumed = vd_tls_resumed(&p.cli.s);
    res->srv_resumed = vd_tls_resumed(&p.srv.s);
    SSL *ssl = vd_tls_ssl_get(&p.cli.s);
    if (ssl != NULL) {
        X509 *peer = SSL_get0_peer_certificate(ssl);
        if (peer != NULL) {
            (void)X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
                                            res->peer_cn, sizeof(res->peer_cn));
        }
        res->version = SSL_version(ssl);
    }

    vd_sock_close(&p.cli.s);
    vd_sock_close(&p.srv.s);
    uv_close((uv_handle_t *)&p.timer, NULL);
    (void)uv_run(&p.loop, UV_RUN_DEFAULT);
    SETUP(p.cli.closed == 1 && p.srv.closed == 1);
    res->loop_close = uv_loop_close(&p.loop);
    free(cbuf);
    free(sbuf);
}

static void
check_common(const struct result *r)
{
    assert_int_equal(r->setup_line, 0);
    assert_false(r->timed_out);
    assert_int_equal(r->loop_close, 0);
}

static void
check_ok(const struct result *r)
{
    check_common(r);
    if (r->cli_err != 0 || r->srv_err != 0) {
        print_error("client %s at %c (%s); server %s at %c (%s)\n", vd_err_name(r->cli_err),
                    r->cli_where, r->cli_detail, vd_err_name(r->srv_err), r->srv_where,
                    r->srv_detail);
    }
    assert_int_equal(r->cli_err, 0);
    assert_int_equal(r->srv_err, 0);
    assert_true(r->cli_data_ok);
    assert_true(r->srv_data_ok);
}

static const struct opts small_exchange = {.cli_send = 100,
                                           .srv_send = 300,
                                           .shutdown = true,
                                           .sni = "localhost",
                                           .verify_host = "localhost"};

/* ---- tests ------------------------------------------------------------------------------------
 */

static void
test_exchange(void **state)
{
    (void)state;

    enum pki certs[] = {SRV};
    struct vd_tls_server *st = server_make(certs, 1, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct opts o = {.sni = "localhost",
                     .verify_host = "localhost",
                     .cli_send = 1 << 20,
                     .srv_send = 1 << 20,
                     .small_sndbuf = true,
                     .shutdown = true};
    struct result r;
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_int_equal(r.cli_in, 1 << 20);
    assert_int_equal(r.srv_in, 1 << 20);
    assert_true(r.cli_eof);
    assert_true(r.srv_eof);
    assert_true(r.eagain_w > 0);
    assert_true(r.partial_w > 0);
    assert_string_equal(r.cli_alpn, "http/1.1");
    assert_string_equal(r.srv_alpn, "http/1.1");
    assert_string_equal(r.srv_sni, "localhost");
    assert_string_equal(r.peer_cn, "localhost");
    assert_int_equal(r.version, TLS1_3_VERSION);
    assert_false(r.cli_resumed);
    vd_tls_client_free(ct);
    vd_tls_server_free(st);
}

static void
test_ip_literal(void **state)
{
    (void)state;

    enum pki certs[] = {SRV};
    struct vd_tls_server *st = server_make(certs, 1, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct opts o = small_exchange;
    struct result r;
    /* An IP literal is never sent as SNI, and is checked against the iPAddress SAN. */
    o.sni = "127.0.0.1";
    o.verify_host = "127.0.0.1";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_string_equal(r.srv_sni, "");
    o.sni = NULL;
    o.verify_host = "[127.0.0.1]";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    o.verify_host = "127.0.0.2";
    run_pair(st, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ETLSVERIFY);
    assert_string_equal(r.cli_detail, "hostname mismatch");
    vd_tls_client_free(ct);
    vd_tls_server_free(st);
}

static void
test_sni_selection(void **state)
{
    (void)state;

    enum pki certs[] = {SRV, WILD, CNONLY};
    struct vd_tls_server *st = server_make(certs, 3, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct vd_tls_client *noverify = client_make(false, NULL);
    struct opts o = small_exchange;
    struct result r;

    o.sni = o.verify_host = "a.example.test";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_string_equal(r.peer_cn, "*.example.test");
    assert_string_equal(r.srv_sni, "a.example.test");

    /* Case and a trailing dot do not matter. */
    o.sni = o.verify_host = "B.Example.TEST.";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_string_equal(r.peer_cn, "*.example.test");

    /* An exact name (here the CN of a certificate without SAN) beats the wildcard. */
    o.sni = o.verify_host = "cn.example.test";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_string_equal(r.peer_cn, "cn.example.test");

    /* Unknown names get the default certificate. */
    o.sni = "unknown.test";
    o.verify_host = "localhost";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_string_equal(r.peer_cn, "localhost");

    /* A wildcard covers exactly one label: the default certificate answers, and fails the
     * hostname check. */
    o.sni = o.verify_host = "b.a.example.test";
    run_pair(st, noverify, &o, &r);
    check_ok(&r);
    assert_string_equal(r.peer_cn, "localhost");
    run_pair(st, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ETLSVERIFY);
    assert_string_equal(r.cli_detail, "hostname mismatch");

    /* No SNI at all: the default certificate. */
    o.sni = NULL;
    o.verify_host = "localhost";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_string_equal(r.peer_cn, "localhost");
    assert_string_equal(r.srv_sni, "");
    vd_tls_client_free(noverify);
    vd_tls_client_free(ct);
    vd_tls_server_free(st);
}

static void
test_verify_failures(void **state)
{
    (void)state;

    enum pki srv[] = {SRV}, expired[] = {EXPIRED}, self[] = {SELF};
    struct vd_tls_server *st = server_make(srv, 1, NULL);
    struct vd_tls_server *st_exp = server_make(expired, 1, NULL);
    struct vd_tls_server *st_self = server_make(self, 1, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct opts o = small_exchange;
    struct result r;

    o.sni = o.verify_host = "other.test";
    run_pair(st, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ETLSVERIFY);
    assert_int_equal(r.cli_where, 'h');
    assert_string_equal(r.cli_detail, "hostname mismatch");
    /* The client's alert fails the server's handshake too. */
    assert_int_equal(r.srv_err, VD_ETLS);
    assert_int_equal(r.srv_where, 'h');

    o = small_exchange;
    run_pair(st_exp, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ETLSVERIFY);
    assert_string_equal(r.cli_detail, "certificate has expired");

    run_pair(st_self, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ETLSVERIFY);
    assert_non_null(strstr(r.cli_detail, "self-signed"));

    /* verify: false accepts it. */
    struct vd_tls_client *noverify = client_make(false, NULL);
    run_pair(st_self, noverify, &o, &r);
    check_ok(&r);
    assert_true(r.cli_eof);

    /* The system store does not know the test CA. */
    struct vd_tls_client *system = client_make(true, NULL);
    run_pair(st, system, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ETLSVERIFY);
    assert_string_equal(r.cli_detail, "unable to get local issuer certificate");

    vd_tls_client_free(system);
    vd_tls_client_free(noverify);
    vd_tls_client_free(ct);
    vd_tls_server_free(st_self);
    vd_tls_server_free(st_exp);
    vd_tls_server_free(st);
}

static void
test_versions(void **state)
{
    (void)state;

    enum pki certs[] = {SRV};
    struct vd_tls_server *st = server_make(certs, 1, NULL);
    struct vd_tls_server *st13 = server_make(certs, 1, "1.3");
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct opts o = small_exchange;
    struct result r;

    o.cli_max_version = TLS1_2_VERSION;
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_int_equal(r.version, TLS1_2_VERSION);
    assert_string_equal(r.cli_alpn, "http/1.1");
    assert_true(r.cli_eof && r.srv_eof);

    run_pair(st13, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ETLS);
    assert_int_equal(r.srv_err, VD_ETLS);
    assert_int_equal(r.srv_where, 'h');

    o.cli_max_version = 0;
    run_pair(st13, ct, &o, &r);
    check_ok(&r);
    assert_int_equal(r.version, TLS1_3_VERSION);
    vd_tls_client_free(ct);
    vd_tls_server_free(st13);
    vd_tls_server_free(st);
}

struct thread_job {
    struct vd_tls_server *st;
    struct vd_tls_client *ct;
    const struct opts *o;
    struct result r;
};

static void *
thread_run(void *arg)
{
    struct thread_job *j = arg;
    run_pair(j->st, j->ct, j->o, &j->r);
    return NULL;
}

/* Resumes on a second connection; the second one runs on another thread with its own loop, as a
 * worker would, sharing only the server and client contexts. */
static void
resume_check(int max_version, bool no_ticket)
{
    enum pki certs[] = {SRV, WILD};
    struct vd_tls_server *st = server_make(certs, 2, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct opts o = small_exchange;
    struct result r;
    o.cli_max_version = max_version;
    o.cli_no_ticket = no_ticket;

    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_false(r.cli_resumed);
    assert_false(r.srv_resumed);
    assert_int_equal(r.version, max_version ? max_version : TLS1_3_VERSION);

    struct thread_job j = {.st = st, .ct = ct, .o = &o};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, thread_run, &j), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    check_ok(&j.r);
    assert_true(j.r.cli_resumed);
    assert_true(j.r.srv_resumed);
    assert_string_equal(j.r.cli_alpn, "http/1.1");

    /* Again: TLS 1.2 reuses the session, TLS 1.3 uses a ticket from the resumed connection. */
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_true(r.cli_resumed);

    /* A session is offered only to the host (and SNI) it was verified for. */
    o.sni = "a.example.test";
    o.verify_host = "a.example.test";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_false(r.cli_resumed);
    assert_string_equal(r.peer_cn, "*.example.test");
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_true(r.cli_resumed);
    /* SNI still picks the certificate on a resumed connection. */
    assert_string_equal(r.srv_sni, "a.example.test");
    vd_tls_client_free(ct);
    vd_tls_server_free(st);
}

static void
test_resume_tls13(void **state)
{
    (void)state;
    resume_check(0, false);
}

static void
test_resume_tls12_ticket(void **state)
{
    (void)state;
    resume_check(TLS1_2_VERSION, false);
}

static void
test_resume_tls12_cache(void **state)
{
    (void)state;
    resume_check(TLS1_2_VERSION, true);
}

static void
test_alpn_no_overlap(void **state)
{
    (void)state;

    enum pki certs[] = {SRV};
    struct vd_tls_server *st = server_make(certs, 1, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct opts o = small_exchange;
    struct result r;
    o.cli_alpn = "\x02h2";
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_string_equal(r.cli_alpn, "");
    assert_string_equal(r.srv_alpn, "");
    vd_tls_client_free(ct);
    vd_tls_server_free(st);
}

static void
eof_check(int max_version, bool no_ticket)
{
    enum pki certs[] = {SRV};
    struct vd_tls_server *st = server_make(certs, 1, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct opts o = small_exchange;
    struct result r;
    o.cli_max_version = max_version;
    o.cli_no_ticket = no_ticket;

    /* A client that just closes: the server reads EOF. */
    o.cli_raw_fin = true;
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_true(r.srv_eof);
    assert_int_equal(r.srv_in, o.cli_send);
    assert_true(r.cli_eof);

    /* A server that just closes: the client gets all the data, then VD_ECLOSED. The client has
     * not sent close_notify itself, so OpenSSL treats the EOF as fatal for the session. */
    o.cli_raw_fin = false;
    o.srv_raw_fin = true;
    o.shutdown = false;
    run_pair(st, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.srv_err, 0);
    assert_int_equal(r.cli_err, VD_ECLOSED);
    assert_int_equal(r.cli_where, 'r');
    assert_string_equal(r.cli_detail, "peer closed without close_notify");
    assert_int_equal(r.cli_in, o.srv_send);
    assert_true(r.cli_data_ok);

    /* The session (TLS 1.2) or ticket (TLS 1.3) survives such an ending (RFC 5246 §7.2.1). */
    o.srv_raw_fin = false;
    o.shutdown = true;
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_true(r.cli_resumed);
    assert_int_equal(r.version, max_version ? max_version : TLS1_3_VERSION);
    vd_tls_client_free(ct);
    vd_tls_server_free(st);
}

static void
test_eof_without_close_notify(void **state)
{
    (void)state;
    eof_check(0, false);
    eof_check(TLS1_2_VERSION, false);
    /* Resumption by session id: the server's cache must keep the session too. */
    eof_check(TLS1_2_VERSION, true);
}

static void
test_plaintext_client(void **state)
{
    (void)state;

    enum pki certs[] = {SRV};
    struct vd_tls_server *st = server_make(certs, 1, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]); /* unused: the client speaks plain */
    struct opts o = {.cli_plain = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"};
    struct result r;
    run_pair(st, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.srv_err, VD_ETLS);
    assert_int_equal(r.srv_where, 'h');
    assert_string_equal(r.srv_detail, "http request");
    vd_tls_client_free(ct);
    vd_tls_server_free(st);
}

/* TLS inside TLS (an origin's TLS through an https:// parent proxy's tunnel): the inner session
 * runs on the outer one through the BIO over the transport beneath. Reads of 5000 bytes leave
 * plaintext inside both layers, a 16 KiB socket buffer makes both layers' writes partial, and a
 * megabyte each way must arrive intact and in order, then close_notify through both. */
static void
test_nested(void **state)
{
    (void)state;

    enum pki certs[] = {SRV, WILD};
    struct vd_tls_server *st = server_make(certs, 2, NULL);
    struct vd_tls_client *ct = client_make(true, crt[CA]);
    struct opts o = {.sni = "localhost",
                     .verify_host = "localhost",
                     .nested = true,
                     .inner_sni = "api.example.test",
                     .inner_verify_host = "api.example.test",
                     .cli_send = 1 << 20,
                     .srv_send = 1 << 20,
                     .small_sndbuf = true,
                     .shutdown = true};
    struct result r;
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_int_equal(r.cli_in, 1 << 20);
    assert_int_equal(r.srv_in, 1 << 20);
    assert_true(r.cli_eof);
    assert_true(r.srv_eof);
    assert_true(r.eagain_w > 0);
    assert_true(r.partial_w > 0);
    /* What the inner session saw: its own SNI and certificate, not the outer's. */
    assert_string_equal(r.srv_sni, "api.example.test");
    assert_string_equal(r.peer_cn, "*.example.test");
    assert_string_equal(r.cli_alpn, "http/1.1");
    assert_int_equal(r.version, TLS1_3_VERSION);

    /* TLS 1.2 inside TLS 1.2. */
    o.cli_max_version = TLS1_2_VERSION;
    run_pair(st, ct, &o, &r);
    check_ok(&r);
    assert_int_equal(r.version, TLS1_2_VERSION);
    assert_int_equal(r.cli_in, 1 << 20);
    assert_true(r.cli_eof && r.srv_eof);

    /* The inner certificate is checked against the inner name. */
    o = small_exchange;
    o.nested = true;
    o.inner_sni = o.inner_verify_host = "other.test";
    run_pair(st, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ETLSVERIFY);
    assert_int_equal(r.cli_where, 'h');
    assert_string_equal(r.cli_detail, "hostname mismatch");
    assert_int_equal(r.srv_err, VD_ETLS);

    /* The peer's FIN without any close_notify reaches the inner reader as the outer layer's
     * truncation, after every byte sent before it. */
    o = small_exchange;
    o.nested = true;
    o.inner_sni = o.inner_verify_host = "localhost";
    o.srv_send = 200000;
    o.srv_raw_fin = true;
    o.shutdown = false;
    run_pair(st, ct, &o, &r);
    check_common(&r);
    assert_int_equal(r.cli_err, VD_ECLOSED);
    assert_int_equal(r.cli_where, 'r');
    assert_string_equal(r.cli_detail, "peer closed without close_notify");
    assert_int_equal(r.cli_in, 200000);
    assert_true(r.cli_data_ok);
    vd_tls_client_free(ct);
    vd_tls_server_free(st);
}

static void
test_conf_errors(void **state)
{
    (void)state;
    char err[512];
    char missing[160], addr[] = "127.0.0.1:8443", v11[] = "1.1";
    struct vd_tls_server *st = NULL;
    struct vd_tls_client *ct = NULL;
    (void)snprintf(missing, sizeof(missing), "%s/missing.pem", tmpdir);

    struct vd_conf_cert c = {.cert_file = missing, .key_file = key[SRV]};
    struct vd_conf_listener l = {.addr_text = addr, .tls = true, .certs = &c, .ncerts = 1};
    assert_int_equal(vd_tls_server_new(&l, &st, err, sizeof(err)), VD_ECONF);
    assert_null(st);
    assert_non_null(strstr(err, missing));

    c.cert_file = crt[SRV];
    c.key_file = missing;
    assert_int_equal(vd_tls_server_new(&l, &st, err, sizeof(err)), VD_ECONF);
    assert_non_null(strstr(err, missing));

    c.key_file = key[WILD];
    assert_int_equal(vd_tls_server_new(&l, &st, err, sizeof(err)), VD_ECONF);
    assert_non_null(strstr(err, "does not match"));
    assert_non_null(strstr(err, key[WILD]));

    c.key_file = key[SRV];
    l.tls_min_version = v11;
    assert_int_equal(vd_tls_server_new(&l, &st, err, sizeof(err)), VD_ECONF);
    assert_non_null(strstr(err, addr));

    l.tls_min_version = NULL;
    l.ncerts = 0;
    assert_int_equal(vd_tls_server_new(&l, &st, err, sizeof(err)), VD_ECONF);
    assert_null(st);

    struct vd_conf_upstream u = {.verify = true, .ca_file = missing};
    assert_int_equal(vd_tls_client_new(&u, &ct, err, sizeof(err)), VD_ECONF);
    assert_null(ct);
    assert_non_null(strstr(err, missing));
}

static void
test_plain_sock(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct vd_sock s = {0};
    int sv[2];
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    assert_int_equal(vd_sock_init(&loop, &s, sv[0]), 0);
    assert_int_equal(vd_tls_handshake(&s), VD_ETLS);
    assert_string_equal(vd_tls_error_detail(&s), "TLS error");
    assert_null(vd_tls_alpn(&s));
    assert_null(vd_tls_sni(&s));
    assert_false(vd_tls_resumed(&s));
    assert_null(vd_tls_ssl_get(&s));
    vd_sock_close(&s);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(close(sv[1]), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
    /* A TLS socket BIO writes with write(2): a peer reset must not kill the test. */
    (void)signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exchange),
        cmocka_unit_test(test_ip_literal),
        cmocka_unit_test(test_sni_selection),
        cmocka_unit_test(test_verify_failures),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_resume_tls13),
        cmocka_unit_test(test_resume_tls12_ticket),
        cmocka_unit_test(test_resume_tls12_cache),
        cmocka_unit_test(test_alpn_no_overlap),
        cmocka_unit_test(test_eof_without_close_notify),
        cmocka_unit_test(test_plaintext_client),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_conf_errors),
        cmocka_unit_test(test_plain_sock),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
