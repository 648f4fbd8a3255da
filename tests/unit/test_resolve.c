/* SPDX-License-Identifier: MIT */
/* Unit tests for src/net/resolve.c against a real DNS server: a small UDP responder on
 * 127.0.0.1 port 0 in the same libuv loop that answers A/AAAA questions from a table (RFC 1035
 * §4.1), NXDOMAIN for unknown names, SERVFAIL on request, and can drop queries. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include "vd/err.h"
#include "vd/log.h"
#include "vd/resolve.h"
#include "vd_test.h"

#define T_A        1
#define T_AAAA     28
#define T_CNAME    5      /* addr holds the target name */
#define T_EXISTS   0      /* the name exists but has no A/AAAA: NODATA */
#define T_SERVFAIL 0xffff /* answer SERVFAIL for this name */

struct dnsrec {
    const char *name;
    uint16_t type;
    const char *addr;
    uint32_t ttl; /* s */
};

static const struct dnsrec recs[] = {
    {"one.test", T_A, "192.0.2.1", 300},        {"one.test", T_AAAA, "2001:db8::1", 300},
    {"multi.test", T_AAAA, "2001:db8::a", 300}, {"multi.test", T_A, "192.0.2.10", 300},
    {"multi.test", T_A, "192.0.2.11", 300},     {"multi.test", T_A, "192.0.2.10", 300},
    {"multi.test", T_AAAA, "2001:db8::a", 300}, {"multi.test", T_AAAA, "2001:db8::b", 300},
    {"many.test", T_AAAA, "2001:db8::1", 300},  {"many.test", T_A, "198.51.100.1", 300},
    {"many.test", T_A, "198.51.100.2", 300},    {"many.test", T_A, "198.51.100.3", 300},
    {"many.test", T_A, "198.51.100.4", 300},    {"many.test", T_A, "198.51.100.5", 300},
    {"many.test", T_A, "198.51.100.6", 300},    {"many.test", T_A, "198.51.100.7", 300},
    {"many.test", T_A, "198.51.100.8", 300},    {"many.test", T_A, "198.51.100.9", 300},
    {"many.test", T_A, "198.51.100.10", 300},   {"v4only.test", T_A, "192.0.2.22", 300},
    {"short.test", T_A, "192.0.2.20", 1},       {"short.test", T_AAAA, "2001:db8::20", 300},
    {"zero.test", T_A, "192.0.2.21", 0},        {"alias.test", T_CNAME, "one.test", 0},
    {"nodata.test", T_EXISTS, NULL, 0},         {"servfail.test", T_SERVFAIL, NULL, 0},
    {"a.test", T_A, "203.0.113.1", 300},        {"b.test", T_A, "203.0.113.2", 300},
    {"c.test", T_A, "203.0.113.3", 300},
};

#define QLOG_MAX 128

struct dnsd {
    uv_udp_t udp;
    int port;
    bool drop;   /* receive and count, never answer */
    bool a_last; /* hold each A answer until the next AAAA answer has been sent */
    int nq;      /* queries received */
    char qlog[QLOG_MAX][256];
    uint8_t rbuf[1500];
    uint8_t held[1500];
    size_t held_len;
    struct sockaddr_storage held_peer;
};

static int
dnsd_count(const struct dnsd *d, const char *name)
{
    int n = 0;
    for (int i = 0; i < d->nq && i < QLOG_MAX; i++) {
        n += strcmp(d->qlog[i], name) == 0;
    }
    return n;
}

static void
dnsd_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct dnsd *d = h->data;
    (void)hint;
    *buf = uv_buf_init((char *)d->rbuf, sizeof(d->rbuf));
}

static void
put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Writes @name as RFC 1035 §3.1 labels at @p; returns the length. */
static size_t
put_name(uint8_t *p, const char *name)
{
    size_t off = 0;
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t l = dot ? (size_t)(dot - name) : strlen(name);
        p[off++] = (uint8_t)l;
        memcpy(p + off, name, l);
        off += l;
        name += l + (dot ? 1 : 0);
    }
    p[off++] = 0;
    return off;
}

/* Appends one resource record; the owner is a pointer to the question name when @owner is
 * NULL (RFC 1035 §4.1.4), else written out. */
static size_t
put_rr(uint8_t *out, size_t off, const char *owner, uint16_t type, uint32_t ttl,
       const uint8_t *rdata, uint16_t rdlen)
{
    if (owner) {
        off += put_name(out + off, owner);
    } else {
        put16(out + off, 0xc00c);
        off += 2;
    }
    put16(out + off, type);
    put16(out + off + 2, 1); /* IN */
    put16(out + off + 4, (uint16_t)(ttl >> 16));
    put16(out + off + 6, (uint16_t)ttl);
    put16(out + off + 8, rdlen);
    memcpy(out + off + 10, rdata, rdlen);
    return off + 10 + rdlen;
}

/* Builds the answer to the query @q (question ending at @qend) into @out (1500 bytes). A CNAME
 * is followed once, as a recursive server would (RFC 1034 §3.6.2). */
static size_t
dnsd_answer(const uint8_t *q, size_t qend, const char *qname, uint16_t qtype, uint8_t *out)
{
    bool exists = false, servfail = false;
    const char *name = qname;
    uint16_t ancount = 0;
    size_t off;

    memcpy(out, q, 2);                               /* ID */
    out[2] = (uint8_t)(0x80 | 0x04 | (q[2] & 0x01)); /* QR, AA, RD copied */
    out[3] = 0x80;                                   /* RA */
    put16(out + 4, 1);
    memset(out + 6, 0, 6);
    memcpy(out + 12, q + 12, qend - 12);
    off = qend;
    for (size_t i = 0; i < VD_ARRAY_LEN(recs); i++) {
        if (strcmp(recs[i].name, name) != 0) {
            continue;
        }
        exists = true;
        servfail |= recs[i].type == T_SERVFAIL;
        if (recs[i].type == T_CNAME && name == qname) {
            uint8_t rdata[256];
            uint16_t rdlen = (uint16_t)put_name(rdata, recs[i].addr);
            off = put_rr(out, off, NULL, T_CNAME, recs[i].ttl, rdata, rdlen);
            ancount++;
            name = recs[i].addr;
            i = (size_t)-1; /* restart the scan for the target */
            continue;
        }
        if (recs[i].type != qtype || ancount >= 20) {
            continue;
        }
        uint8_t rdata[16];
        uint16_t rdlen = qtype == T_A ? 4 : 16;
        assert_int_equal(inet_pton(qtype == T_A ? AF_INET : AF_INET6, recs[i].addr, rdata), 1);
        off = put_rr(out, off, name == qname ? NULL : name, qtype, recs[i].ttl, rdata, rdlen);
        ancount++;
    }
    if (servfail) {
        out[3] |= 2;
        ancount = 0;
        off = qend;
    } else if (!exists) {
        out[3] |= 3; /* NXDOMAIN */
    }
    put16(out + 6, ancount);
    return off;
}

static void
dnsd_send(struct dnsd *d, const uint8_t *p, size_t len, const struct sockaddr *peer)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int n = uv_udp_try_send(&d->udp, &b, 1, peer);
    assert_int_equal(n, (int)len);
}

static void
dnsd_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *peer,
          unsigned flags)
{
    struct dnsd *d = u->data;
    const uint8_t *q = (const uint8_t *)buf->base;
    char name[256];
    size_t off = 12, nlen = 0;
    uint8_t out[1500];
    (void)flags;

    if (nread < 12 || !peer) {
        return;
    }
    /* RFC 1035 §4.1.2: QNAME as labels, then QTYPE and QCLASS. */
    while (off < (size_t)nread && q[off] != 0) {
        size_t l = q[off];
        if (l > 63 || off + 1 + l >= (size_t)nread || nlen + l + 1 >= sizeof(name)) {
            return;
        }
        if (nlen) {
            name[nlen++] = '.';
        }
        for (size_t i = 0; i < l; i++) {
            char c = (char)q[off + 1 + i];
            name[nlen++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        off += 1 + l;
    }
    if (off + 5 > (size_t)nread) {
        return;
    }
    name[nlen] = '\0';
    uint16_t qtype = (uint16_t)(q[off + 1] << 8 | q[off + 2]);
    size_t qend = off + 5;
    if (d->nq < QLOG_MAX) {
        snprintf(d->qlog[d->nq], sizeof(d->qlog[0]), "%s", name);
    }
    d->nq++;
    if (d->drop) {
        return;
    }
    size_t len = dnsd_answer(q, qend, name, qtype, out);
    if (d->a_last && qtype == T_A) {
        memcpy(d->held, out, len);
        d->held_len = len;
        memcpy(&d->held_peer, peer,
               peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                           : sizeof(struct sockaddr_in));
        return;
    }
    dnsd_send(d, out, len, peer);
    if (qtype == T_AAAA && d->held_len) {
        dnsd_send(d, d->held, d->held_len, (const struct sockaddr *)&d->held_peer);
        d->held_len = 0;
    }
}

/* Binds on @ip port 0; returns false when the address family is unavailable. */
static bool
dnsd_start(uv_loop_t *loop, struct dnsd *d, const char *ip)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    memset(d, 0, sizeof(*d));
    assert_int_equal(uv_udp_init(loop, &d->udp), 0);
    d->udp.data = d;
    if (strchr(ip, ':')) {
        assert_int_equal(uv_ip6_addr(ip, 0, (struct sockaddr_in6 *)&ss), 0);
    } else {
        assert_int_equal(uv_ip4_addr(ip, 0, (struct sockaddr_in *)&ss), 0);
    }
    if (uv_udp_bind(&d->udp, (const struct sockaddr *)&ss, 0) != 0) {
        return false;
    }
    assert_int_equal(uv_udp_getsockname(&d->udp, (struct sockaddr *)&ss, &len), 0);
    d->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    assert_int_equal(uv_udp_recv_start(&d->udp, dnsd_alloc, dnsd_recv), 0);
    return true;
}

/* ---- fixture ------------------------------------------------------------------------------- */

struct fx {
    uv_loop_t loop;
    struct dnsd dns;
    struct vd_resolver *r;
    struct vd_conf_resolver rc;
    uv_timer_t guard;
    bool fired;
    char ns[80];
};

struct res {
    int calls;
    int status;
    struct vd_addrs addrs;
    struct fx *fx;
    bool free_resolver; /* call vd_resolver_free() from the callback */
};

static void
on_res(void *arg, int status, const struct vd_addrs *addrs)
{
    struct res *x = arg;
    x->calls++;
    x->status = status;
    if (status == 0) {
        assert_non_null(addrs);
        x->addrs = *addrs;
    } else {
        assert_null(addrs);
    }
    if (x->free_resolver) {
        vd_resolver_free(x->fx->r);
        x->fx->r = NULL;
    }
}

static void
fx_init(struct fx *f)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_true(dnsd_start(&f->loop, &f->dns, "127.0.0.1"));
    assert_int_equal(uv_timer_init(&f->loop, &f->guard), 0);
    f->guard.data = f;
    snprintf(f->ns, sizeof(f->ns), "127.0.0.1:%d", f->dns.port);
    f->rc.nameservers = f->ns;
    f->rc.cache_max_ttl = 300000;
    f->rc.negative_ttl = 30000;
    f->rc.timeout = 1000;
    f->rc.tries = 2;
    f->rc.cache_size = 16;
}

static void
fx_start(struct fx *f)
{
    char err[256] = "";
    assert_int_equal(vd_resolver_new(&f->loop, &f->rc, &f->r, err, sizeof(err)), 0);
    assert_non_null(f->r);
}

static void
fx_setup(struct fx *f)
{
    fx_init(f);
    fx_start(f);
}

/* Frees everything and checks that the loop closes with no handle left. */
static void
fx_done(struct fx *f)
{
    if (f->r) {
        vd_resolver_free(f->r);
        f->r = NULL;
    }
    uv_close((uv_handle_t *)&f->dns.udp, NULL);
    uv_close((uv_handle_t *)&f->guard, NULL);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void
on_guard(uv_timer_t *t)
{
    struct fx *f = t->data;
    f->fired = true;
}

/* Runs the loop until *@counter >= @target or @max_ms have passed. */
static void
run_until(struct fx *f, const int *counter, int target, uint64_t max_ms)
{
    f->fired = false;
    assert_int_equal(uv_timer_start(&f->guard, on_guard, max_ms, 0), 0);
    while (*counter < target && !f->fired) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&f->guard);
    assert_true(*counter >= target);
}

static void
run_ms(struct fx *f, uint64_t ms)
{
    f->fired = false;
    assert_int_equal(uv_timer_start(&f->guard, on_guard, ms, 0), 0);
    while (!f->fired) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
}

static void
check_v4(const struct sockaddr_storage *ss, const char *want)
{
    char buf[INET6_ADDRSTRLEN];
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    assert_int_equal(ss->ss_family, AF_INET);
    assert_int_equal(sin->sin_port, 0);
    assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)));
    assert_string_equal(buf, want);
}

static void
check_v6(const struct sockaddr_storage *ss, const char *want)
{
    char buf[INET6_ADDRSTRLEN];
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    assert_int_equal(ss->ss_family, AF_INET6);
    assert_int_equal(sin6->sin6_port, 0);
    assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)));
    assert_string_equal(buf, want);
}

/* Starts a lookup that must go to the server and waits for its answer. */
static void
resolve_async(struct fx *f, const char *host, struct res *x)
{
    struct vd_addrs out;
    struct vd_resolve_query *q = NULL;
    memset(x, 0, sizeof(*x));
    x->fx = f;
    assert_int_equal(vd_resolve(f->r, host, &out, on_res, x, &q), VD_EAGAIN);
    assert_non_null(q);
    assert_int_equal(x->calls, 0); /* never before vd_resolve() returns */
    run_until(f, &x->calls, 1, 5000);
    assert_int_equal(x->calls, 1);
}

static int
resolve_now(struct fx *f, const char *host, struct vd_addrs *out)
{
    struct vd_resolve_query *q = (struct vd_resolve_query *)1;
    struct res x = {0};
    int r = vd_resolve(f->r, host, out, on_res, &x, &q);
    if (r == VD_EAGAIN) {
        assert_non_null(q);
        vd_resolve_cancel(q);
    } else {
        assert_null(q);
    }
    assert_int_equal(x.calls, 0);
    return r;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void
test_literals_and_bad_names(void **state)
{
    struct fx f;
    struct vd_addrs a;
    struct vd_resolver_stats st;
    char longname[300];
    (void)state;
    fx_setup(&f);

    assert_int_equal(resolve_now(&f, "192.0.2.7", &a), 0);
    assert_int_equal(a.n, 1);
    check_v4(&a.a[0], "192.0.2.7");
    assert_int_equal(resolve_now(&f, "2001:db8::1", &a), 0);
    assert_int_equal(a.n, 1);
    check_v6(&a.a[0], "2001:db8::1");
    assert_int_equal(resolve_now(&f, "::ffff:192.0.2.1", &a), 0);
    assert_int_equal(a.a[0].ss_family, AF_INET6);

    assert_int_equal(resolve_now(&f, "", &a), VD_ENOTFOUND);
    assert_int_equal(resolve_now(&f, "[::1]", &a), VD_ENOTFOUND);
    assert_int_equal(resolve_now(&f, "a..b", &a), VD_ENOTFOUND);
    assert_int_equal(resolve_now(&f, ".a", &a), VD_ENOTFOUND);
    assert_int_equal(resolve_now(&f, "bad name.test", &a), VD_ENOTFOUND);
    assert_int_equal(resolve_now(&f, "evil\n.test", &a), VD_ENOTFOUND);
    assert_int_equal(resolve_now(&f, "fe80::1%eth0", &a), VD_ENOTFOUND);
    /* 64-character label */
    memset(longname, 'a', 64);
    memcpy(longname + 64, ".test", 6);
    assert_int_equal(resolve_now(&f, longname, &a), VD_ENOTFOUND);
    /* 254 characters in 63-character labels */
    for (int i = 0; i < 254; i++) {
        longname[i] = (i % 64 == 63) ? '.' : 'b';
    }
    longname[254] = '\0';
    assert_int_equal(resolve_now(&f, longname, &a), VD_ENOTFOUND);

    vd_resolver_stats(f.r, &st);
    assert_int_equal(st.queries, 0);
    run_ms(&f, 20);
    assert_int_equal(f.dns.nq, 0);
    fx_done(&f);
}

static void
test_order_dedup_cap(void **state)
{
    struct fx f;
    struct res x;
    struct vd_resolver_stats st;
    (void)state;
    fx_setup(&f);
    /* The A answer arrives after the AAAA answer; the result still lists IPv4 first. */
    f.dns.a_last = true;
    resolve_async(&f, "multi.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.addrs.n, 4);
    check_v4(&x.addrs.a[0], "192.0.2.10");
    check_v4(&x.addrs.a[1], "192.0.2.11");
    check_v6(&x.addrs.a[2], "2001:db8::a");
    check_v6(&x.addrs.a[3], "2001:db8::b");
    assert_int_equal(dnsd_count(&f.dns, "multi.test"), 2); /* A and AAAA */

    f.dns.a_last = false;
    resolve_async(&f, "many.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.addrs.n, VD_RESOLVE_MAX_ADDRS);
    for (size_t i = 0; i < x.addrs.n; i++) {
        assert_int_equal(x.addrs.a[i].ss_family, AF_INET);
    }
    check_v4(&x.addrs.a[7], "198.51.100.8");

    /* AAAA is NODATA, A answers: success with the A record. */
    resolve_async(&f, "v4only.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.addrs.n, 1);
    check_v4(&x.addrs.a[0], "192.0.2.22");

    vd_resolver_stats(f.r, &st);
    assert_int_equal(st.queries, 3);
    assert_int_equal(st.failures, 0);
    fx_done(&f);
}

static void
test_cache_hit(void **state)
{
    struct fx f;
    struct res x;
    struct vd_addrs a;
    struct vd_resolver_stats st;
    int devnull = open("/dev/null", O_WRONLY);
    uint32_t mask = vd_trace_mask;
    (void)state;
    /* Trace lines are formatted (to /dev/null) on this path. */
    assert_true(devnull >= 0);
    vd_log_set_fd(devnull);
    vd_trace_mask |= 1u << VD_SUB_DNS;
    fx_setup(&f);
    resolve_async(&f, "one.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.addrs.n, 2);
    check_v4(&x.addrs.a[0], "192.0.2.1");
    check_v6(&x.addrs.a[1], "2001:db8::1");
    int nq = f.dns.nq;

    /* Answered synchronously from the cache, case-insensitively, with no query sent. */
    memset(&a, 0, sizeof(a));
    assert_int_equal(resolve_now(&f, "ONE.Test", &a), 0);
    assert_memory_equal(&a, &x.addrs, sizeof(a));
    run_ms(&f, 20);
    assert_int_equal(f.dns.nq, nq);
    vd_resolver_stats(f.r, &st);
    assert_int_equal(st.queries, 1);
    assert_int_equal(st.cache_hits, 1);
    fx_done(&f);
    vd_trace_mask = mask;
    vd_log_set_fd(2);
    close(devnull);
}

static void
test_ttl_from_records(void **state)
{
    struct fx f;
    struct res x;
    struct vd_addrs a;
    (void)state;
    fx_setup(&f);
    /* A has TTL 1 s, AAAA 300 s: the entry lives for the smaller one. */
    resolve_async(&f, "short.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.addrs.n, 2);
    run_ms(&f, 500);
    assert_int_equal(resolve_now(&f, "short.test", &a), 0);
    assert_int_equal(dnsd_count(&f.dns, "short.test"), 2);
    run_ms(&f, 650);
    resolve_async(&f, "short.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(dnsd_count(&f.dns, "short.test"), 4);

    /* A CNAME with TTL 0 in front of TTL 300 records: not cached either. */
    resolve_async(&f, "alias.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.addrs.n, 2);
    check_v4(&x.addrs.a[0], "192.0.2.1");
    resolve_async(&f, "alias.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(dnsd_count(&f.dns, "alias.test"), 4);

    /* TTL 0: used once, never cached. */
    resolve_async(&f, "zero.test", &x);
    assert_int_equal(x.status, 0);
    resolve_async(&f, "zero.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(dnsd_count(&f.dns, "zero.test"), 4);
    fx_done(&f);
}

static void
test_cache_max_ttl(void **state)
{
    struct fx f;
    struct res x;
    struct vd_addrs a;
    (void)state;
    fx_init(&f);
    f.rc.cache_max_ttl = 150;
    fx_start(&f);
    resolve_async(&f, "one.test", &x);
    assert_int_equal(resolve_now(&f, "one.test", &a), 0);
    run_ms(&f, 200);
    resolve_async(&f, "one.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(dnsd_count(&f.dns, "one.test"), 4);
    fx_done(&f);

    /* 0 disables the positive cache. */
    fx_init(&f);
    f.rc.cache_max_ttl = 0;
    fx_start(&f);
    resolve_async(&f, "one.test", &x);
    resolve_async(&f, "one.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(dnsd_count(&f.dns, "one.test"), 4);
    fx_done(&f);
}

static void
test_negative_cache(void **state)
{
    struct fx f;
    struct res x;
    struct vd_addrs a;
    struct vd_resolver_stats st;
    (void)state;
    fx_init(&f);
    f.rc.negative_ttl = 150;
    fx_start(&f);
    resolve_async(&f, "nx.test", &x);
    assert_int_equal(x.status, VD_ENOTFOUND);
    int nq = f.dns.nq;
    assert_int_equal(resolve_now(&f, "nx.test", &a), VD_ENOTFOUND);
    run_ms(&f, 20);
    assert_int_equal(f.dns.nq, nq);
    vd_resolver_stats(f.r, &st);
    assert_int_equal(st.negative_hits, 1);
    assert_int_equal(st.failures, 1);

    /* NODATA is cached the same way. */
    resolve_async(&f, "nodata.test", &x);
    assert_int_equal(x.status, VD_ENOTFOUND);
    assert_int_equal(resolve_now(&f, "nodata.test", &a), VD_ENOTFOUND);

    /* Expiry sends a new query. */
    run_ms(&f, 200);
    nq = f.dns.nq;
    resolve_async(&f, "nx.test", &x);
    assert_int_equal(x.status, VD_ENOTFOUND);
    assert_true(f.dns.nq > nq);

    /* SERVFAIL is a DNS failure and is not cached. */
    resolve_async(&f, "servfail.test", &x);
    assert_int_equal(x.status, VD_EDNS);
    nq = f.dns.nq;
    resolve_async(&f, "servfail.test", &x);
    assert_int_equal(x.status, VD_EDNS);
    assert_true(f.dns.nq > nq);
    fx_done(&f);
}

static void
test_timeout(void **state)
{
    struct fx f;
    struct res x;
    struct vd_addrs a;
    struct vd_resolver_stats st;
    (void)state;
    fx_init(&f);
    f.rc.timeout = 200;
    f.rc.tries = 1;
    fx_start(&f);
    f.dns.drop = true;
    uv_update_time(&f.loop);
    uint64_t t0 = uv_now(&f.loop);
    resolve_async(&f, "one.test", &x);
    uint64_t dt = uv_now(&f.loop) - t0;
    assert_int_equal(x.status, VD_ETIMEDOUT);
    assert_true(dt >= 150);
    assert_true(dt < 1000);
    assert_int_equal(dnsd_count(&f.dns, "one.test"), 2);
    /* Not negatively cached: the next lookup queries again. */
    assert_int_equal(resolve_now(&f, "one.test", &a), VD_EAGAIN);
    vd_resolver_stats(f.r, &st);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.negative_hits, 0);
    fx_done(&f);
}

static void
test_coalesce_and_cancel(void **state)
{
    struct fx f;
    struct res x1 = {0}, x2 = {0}, x3 = {0};
    struct vd_addrs a;
    struct vd_resolve_query *q1, *q2, *q3;
    struct vd_resolver_stats st;
    (void)state;
    fx_setup(&f);
    x1.fx = x2.fx = x3.fx = &f;
    assert_int_equal(vd_resolve(f.r, "one.test", &a, on_res, &x1, &q1), VD_EAGAIN);
    assert_int_equal(vd_resolve(f.r, "One.Test", &a, on_res, &x2, &q2), VD_EAGAIN);
    assert_int_equal(vd_resolve(f.r, "one.test", &a, on_res, &x3, &q3), VD_EAGAIN);
    assert_true(q1 != q2 && q2 != q3);
    vd_resolve_cancel(q2);
    run_until(&f, &x3.calls, 1, 5000);
    assert_int_equal(x1.calls, 1);
    assert_int_equal(x2.calls, 0);
    assert_int_equal(x3.calls, 1);
    assert_int_equal(x1.status, 0);
    assert_int_equal(x3.addrs.n, 2);
    assert_int_equal(dnsd_count(&f.dns, "one.test"), 2); /* one lookup on the wire */
    vd_resolver_stats(f.r, &st);
    assert_int_equal(st.queries, 1);

    /* Cancelling the only waiter leaves the lookup running; it fills the cache. */
    memset(&x1, 0, sizeof(x1));
    assert_int_equal(vd_resolve(f.r, "multi.test", &a, on_res, &x1, &q1), VD_EAGAIN);
    vd_resolve_cancel(q1);
    run_ms(&f, 100);
    assert_int_equal(x1.calls, 0);
    assert_int_equal(resolve_now(&f, "multi.test", &a), 0);
    assert_int_equal(a.n, 4);
    assert_int_equal(dnsd_count(&f.dns, "multi.test"), 2);
    fx_done(&f);
}

static void
test_localhost_hosts_file(void **state)
{
    struct fx f;
    struct vd_addrs a;
    struct vd_resolver_stats st;
    (void)state;
    fx_setup(&f);
    f.dns.drop = true;
    /* /etc/hosts (or RFC 6761 §6.3) answers synchronously, without DNS. */
    assert_int_equal(resolve_now(&f, "localhost", &a), 0);
    assert_true(a.n >= 1);
    check_v4(&a.a[0], "127.0.0.1");
    assert_int_equal(resolve_now(&f, "LocalHost", &a), 0);
    check_v4(&a.a[0], "127.0.0.1");
    run_ms(&f, 20);
    assert_int_equal(f.dns.nq, 0);
    vd_resolver_stats(f.r, &st);
    assert_int_equal(st.queries, 1);
    assert_int_equal(st.cache_hits, 1);
    fx_done(&f);
}

static void
test_lru_eviction(void **state)
{
    struct fx f;
    struct res x;
    struct vd_addrs a;
    (void)state;
    fx_init(&f);
    f.rc.cache_size = 2;
    fx_start(&f);
    resolve_async(&f, "a.test", &x);
    resolve_async(&f, "b.test", &x);
    assert_int_equal(resolve_now(&f, "a.test", &a), 0); /* a is now the most recent */
    resolve_async(&f, "c.test", &x);                    /* evicts b */
    assert_int_equal(resolve_now(&f, "a.test", &a), 0);
    check_v4(&a.a[0], "203.0.113.1");
    assert_int_equal(resolve_now(&f, "c.test", &a), 0);
    check_v4(&a.a[0], "203.0.113.3");
    resolve_async(&f, "b.test", &x); /* a miss; evicts a */
    assert_int_equal(x.status, 0);
    check_v4(&x.addrs.a[0], "203.0.113.2");
    assert_int_equal(dnsd_count(&f.dns, "b.test"), 4);
    assert_int_equal(resolve_now(&f, "c.test", &a), 0);
    assert_int_equal(resolve_now(&f, "b.test", &a), 0);
    assert_int_equal(resolve_now(&f, "a.test", &a), VD_EAGAIN);
    fx_done(&f);
}

struct nested {
    struct res outer, inner;
    int inner_rc;
};

/* Starts a new lookup from inside a callback that c-ares is delivering. */
static void
on_res_nested(void *arg, int status, const struct vd_addrs *addrs)
{
    struct nested *n = arg;
    struct vd_addrs a;
    struct vd_resolve_query *q;
    on_res(&n->outer, status, addrs);
    n->inner.fx = n->outer.fx;
    n->inner_rc = vd_resolve(n->outer.fx->r, "zero.test", &a, on_res, &n->inner, &q);
}

static void
test_many_concurrent(void **state)
{
    static const char *const names[] = {"a.test",    "b.test",      "c.test",    "one.test",
                                        "many.test", "v4only.test", "short.test"};
    struct fx f;
    struct res x[VD_ARRAY_LEN(names)];
    struct nested n = {0};
    struct vd_addrs a;
    struct vd_resolve_query *q;
    int done = 0;
    (void)state;
    /* Answers complete in one batch while the two-entry cache evicts under them. */
    fx_init(&f);
    f.rc.cache_size = 2;
    fx_start(&f);
    memset(x, 0, sizeof(x));
    for (size_t i = 0; i < VD_ARRAY_LEN(names); i++) {
        x[i].fx = &f;
        assert_int_equal(vd_resolve(f.r, names[i], &a, on_res, &x[i], &q), VD_EAGAIN);
    }
    n.outer.fx = &f;
    assert_int_equal(vd_resolve(f.r, "multi.test", &a, on_res_nested, &n, &q), VD_EAGAIN);
    f.fired = false;
    assert_int_equal(uv_timer_start(&f.guard, on_guard, 3000, 0), 0);
    while (!f.fired && (done < (int)VD_ARRAY_LEN(names) || n.inner.calls == 0)) {
        uv_run(&f.loop, UV_RUN_ONCE);
        done = 0;
        for (size_t i = 0; i < VD_ARRAY_LEN(names); i++) {
            done += x[i].calls;
        }
    }
    uv_timer_stop(&f.guard);
    for (size_t i = 0; i < VD_ARRAY_LEN(names); i++) {
        assert_int_equal(x[i].calls, 1);
        assert_int_equal(x[i].status, 0);
        assert_int_equal(dnsd_count(&f.dns, names[i]), 2);
    }
    check_v4(&x[0].addrs.a[0], "203.0.113.1");
    check_v4(&x[2].addrs.a[0], "203.0.113.3");
    assert_int_equal(x[4].addrs.n, VD_RESOLVE_MAX_ADDRS);
    assert_int_equal(n.outer.calls, 1);
    assert_int_equal(n.outer.addrs.n, 4);
    assert_int_equal(n.inner_rc, VD_EAGAIN);
    assert_int_equal(n.inner.calls, 1);
    check_v4(&n.inner.addrs.a[0], "192.0.2.21");
    fx_done(&f);
}

static void
test_free_in_flight(void **state)
{
    struct fx f;
    struct res x1 = {0}, x2 = {0};
    struct vd_addrs a;
    struct vd_resolve_query *q1, *q2;
    (void)state;
    /* Freed with a query on the wire: no callback, and the loop closes cleanly. */
    fx_setup(&f);
    f.dns.drop = true;
    x1.fx = &f;
    assert_int_equal(vd_resolve(f.r, "one.test", &a, on_res, &x1, &q1), VD_EAGAIN);
    assert_int_equal(vd_resolve(f.r, "one.test", &a, on_res, &x2, &q2), VD_EAGAIN);
    run_until(&f, &f.dns.nq, 2, 1000); /* A and AAAA are on the wire */
    vd_resolver_free(f.r);
    f.r = NULL;
    run_ms(&f, 50);
    assert_int_equal(x1.calls, 0);
    assert_int_equal(x2.calls, 0);
    fx_done(&f);

    /* Freed from inside a callback while c-ares is processing: the other waiter is not told. */
    fx_setup(&f);
    memset(&x1, 0, sizeof(x1));
    memset(&x2, 0, sizeof(x2));
    x1.fx = x2.fx = &f;
    x1.free_resolver = x2.free_resolver = true;
    assert_int_equal(vd_resolve(f.r, "one.test", &a, on_res, &x1, &q1), VD_EAGAIN);
    assert_int_equal(vd_resolve(f.r, "multi.test", &a, on_res, &x2, &q2), VD_EAGAIN);
    int total = 0;
    f.fired = false;
    assert_int_equal(uv_timer_start(&f.guard, on_guard, 300, 0), 0);
    while (!f.fired) {
        uv_run(&f.loop, UV_RUN_ONCE);
        total = x1.calls + x2.calls;
    }
    assert_int_equal(total, 1);
    assert_null(f.r);
    fx_done(&f);
}

static void
test_ipv6_nameserver(void **state)
{
    struct fx f;
    struct dnsd d6;
    struct res x;
    (void)state;
    fx_init(&f);
    if (!dnsd_start(&f.loop, &d6, "::1")) {
        uv_close((uv_handle_t *)&d6.udp, NULL);
        fx_done(&f);
        skip();
    }
    /* A list of two; c-ares asks the first, [::1], and never needs the second. */
    snprintf(f.ns, sizeof(f.ns), "[::1]:%d,127.0.0.1:%d", d6.port, f.dns.port);
    fx_start(&f);
    resolve_async(&f, "one.test", &x);
    assert_int_equal(x.status, 0);
    assert_int_equal(x.addrs.n, 2);
    assert_int_equal(dnsd_count(&d6, "one.test"), 2);
    assert_int_equal(f.dns.nq, 0);
    uv_close((uv_handle_t *)&d6.udp, NULL);
    fx_done(&f);
}

static void
test_bad_config(void **state)
{
    struct fx f;
    struct vd_resolver *r = (struct vd_resolver *)1;
    char err[256] = "";
    (void)state;
    fx_init(&f);
    f.rc.nameservers = "not an address";
    assert_int_equal(vd_resolver_new(&f.loop, &f.rc, &r, err, sizeof(err)), VD_ECONF);
    assert_null(r);
    assert_true(strlen(err) > 0);
    fx_done(&f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals_and_bad_names),
        cmocka_unit_test(test_order_dedup_cap),
        cmocka_unit_test(test_cache_hit),
        cmocka_unit_test(test_ttl_from_records),
        cmocka_unit_test(test_cache_max_ttl),
        cmocka_unit_test(test_negative_cache),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_coalesce_and_cancel),
        cmocka_unit_test(test_localhost_hosts_file),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_many_concurrent),
        cmocka_unit_test(test_free_in_flight),
        cmocka_unit_test(test_ipv6_nameserver),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
