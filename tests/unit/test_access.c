/* SPDX-License-Identifier: MIT */
/* Unit tests for the access rules (src/conf/access.c): first match, every condition, the
 * PENDING verdict while the destination address or a tunnel's first bytes are unknown, and the
 * CIDR, host-pattern and CONNECT-port helpers. Rules come from YAML through vd_conf_load. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vd/access.h"
#include "vd/conf.h"
#include "vd_test.h"

static struct vd_conf *
load(const char *yaml)
{
    char path[] = "/tmp/vdaccess-XXXXXX", err[512];
    struct vd_conf *c = NULL;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(yaml);
    assert_int_equal(write(fd, yaml, len), (ssize_t)len);
    close(fd);
    int rc = vd_conf_load(path, &c, err, sizeof(err));
    unlink(path);
    if (rc) {
        print_error("%s\n", err);
    }
    assert_int_equal(rc, 0);
    return c;
}

/* Addresses for facts: a few slots so that client and destination can differ. */
static struct sockaddr_storage addrs[4];
static int next_addr;

static const struct sockaddr *
ip(const char *text)
{
    struct sockaddr_storage *ss = &addrs[next_addr++ % 4];
    memset(ss, 0, sizeof(*ss));
    if (strchr(text, ':')) {
        ss->ss_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)ss)->sin6_addr), 1);
    } else {
        ss->ss_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &((struct sockaddr_in *)ss)->sin_addr), 1);
    }
    return (const struct sockaddr *)ss;
}

static struct vd_access_facts
facts(const char *client, const char *method)
{
    struct vd_access_facts f = {.client = ip(client),
                                .method = {(const uint8_t *)method, strlen(method)}};
    return f;
}

/* Evaluates and checks the verdict and the deciding rule's name (NULL: none). */
static void
expect(const struct vd_conf *c, const struct vd_access_facts *f, enum vd_access_verdict want,
       const char *name)
{
    const struct vd_conf_rule *r = (const struct vd_conf_rule *)1;
    enum vd_access_verdict v = vd_access_eval(c, f, &r);
    if (v != want || (name ? !r || strcmp(r->name, name) != 0 : r != NULL)) {
        print_error("verdict %d (want %d), rule %s (want %s)\n", v, want, r ? r->name : "(none)",
                    name ? name : "(none)");
    }
    assert_int_equal(v, want);
    if (name) {
        assert_non_null(r);
        assert_string_equal(r->name, name);
    } else {
        assert_null(r);
    }
}

static void
test_first_match(void **state)
{
    (void)state;
    struct vd_conf *c = load("access:\n"
                             "  - deny: 10.9.0.0/16\n"
                             "  - name: lan\n"
                             "    allow: {clients: [10.0.0.0/8, 'fd00::/8']}\n"
                             "  - deny: all\n");
    struct vd_access_facts f = facts("10.1.2.3", "GET");
    expect(c, &f, VD_ACCESS_ALLOW, "lan");
    f = facts("10.9.2.3", "GET");
    expect(c, &f, VD_ACCESS_DENY, "access[0]");
    f = facts("fd00::5", "GET");
    expect(c, &f, VD_ACCESS_ALLOW, "lan");
    f = facts("192.0.2.1", "GET");
    expect(c, &f, VD_ACCESS_DENY, "access[2]");
    /* IPv4 rules see IPv4-mapped IPv6 clients as the IPv4 address. */
    f = facts("::ffff:10.1.2.3", "GET");
    expect(c, &f, VD_ACCESS_ALLOW, "lan");
    f = facts("::ffff:10.9.0.1", "GET");
    expect(c, &f, VD_ACCESS_DENY, "access[0]");
    vd_conf_unref(c);

    /* No rule matched: deny without a rule. */
    c = load("access: [allow: 10.0.0.0/8]\n");
    f = facts("192.0.2.1", "GET");
    expect(c, &f, VD_ACCESS_DENY, NULL);
    vd_conf_unref(c);
    c = load("access: []\n");
    expect(c, &f, VD_ACCESS_DENY, NULL);
    vd_conf_unref(c);
    /* An empty condition map is everything. */
    c = load("access: [{allow: {}}]\n");
    expect(c, &f, VD_ACCESS_ALLOW, "access[0]");
    vd_conf_unref(c);
}

static void
test_head_conditions(void **state)
{
    (void)state;
    struct vd_conf *c = load("access:\n"
                             "  - name: alice\n"
                             "    allow: {users: alice, methods: [GET, HEAD]}\n"
                             "  - name: anyone\n"
                             "    allow: {users: '*', methods: CONNECT, dest_ports: [443, "
                             "'8000-8100']}\n"
                             "  - name: hosts\n"
                             "    allow: {dest_hosts: ['*.example.com', Example.ORG]}\n"
                             "  - name: ws\n"
                             "    allow: {declared: [WebSocket]}\n"
                             "  - deny: all\n");
    struct vd_access_facts f = facts("127.0.0.1", "GET");
    expect(c, &f, VD_ACCESS_DENY, "access[4]"); /* no user: user rules never match */
    f.user = "alice";
    expect(c, &f, VD_ACCESS_ALLOW, "alice");
    f.method = (struct vd_iov){(const uint8_t *)"get", 3}; /* methods are case-sensitive */
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    f.method = (struct vd_iov){(const uint8_t *)"GETX", 4};
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    f.user = "bob";
    f.method = (struct vd_iov){(const uint8_t *)"CONNECT", 7};
    expect(c, &f, VD_ACCESS_DENY, "access[4]"); /* no port */
    f.dest_host = "x.test";
    f.dest_port = 443;
    expect(c, &f, VD_ACCESS_ALLOW, "anyone");
    f.dest_port = 8000;
    expect(c, &f, VD_ACCESS_ALLOW, "anyone");
    f.dest_port = 8100;
    expect(c, &f, VD_ACCESS_ALLOW, "anyone");
    f.dest_port = 8101;
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    f.dest_port = 7999;
    expect(c, &f, VD_ACCESS_DENY, "access[4]");

    f = facts("127.0.0.1", "GET");
    f.dest_host = "a.example.com";
    expect(c, &f, VD_ACCESS_ALLOW, "hosts");
    f.dest_host = "example.com";
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    f.dest_host = "example.org";
    expect(c, &f, VD_ACCESS_ALLOW, "hosts");
    f.dest_host = "example.org."; /* absolute form: the same name */
    expect(c, &f, VD_ACCESS_ALLOW, "hosts");
    f.dest_host = NULL;
    expect(c, &f, VD_ACCESS_DENY, "access[4]");

    f.declared = "websocket";
    expect(c, &f, VD_ACCESS_ALLOW, "ws");
    f.declared = "h2c";
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    vd_conf_unref(c);
}

static void
test_dest_nets(void **state)
{
    (void)state;
    struct vd_conf *c = load("access:\n"
                             "  - name: no-metadata\n"
                             "    deny: {dest_nets: [169.254.0.0/16, 'fd00:ec2::/32']}\n"
                             "  - allow: all\n");
    struct vd_access_facts f = facts("127.0.0.1", "GET");
    /* Without a destination the rule cannot match: decided at once. */
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    /* A name: the address comes after DNS. */
    f.dest_host = "metadata.test";
    f.dest_port = 80;
    expect(c, &f, VD_ACCESS_PENDING, NULL);
    f.known = VD_FACT_ADDR;
    f.dest_addr = ip("169.254.169.254");
    expect(c, &f, VD_ACCESS_DENY, "no-metadata");
    f.dest_addr = ip("::ffff:169.254.169.254");
    expect(c, &f, VD_ACCESS_DENY, "no-metadata");
    f.dest_addr = ip("fd00:ec2::254");
    expect(c, &f, VD_ACCESS_DENY, "no-metadata");
    f.dest_addr = ip("192.0.2.1");
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    /* An IP literal is its own address: no need to wait. */
    f = facts("127.0.0.1", "GET");
    f.dest_host = "169.254.169.254";
    expect(c, &f, VD_ACCESS_DENY, "no-metadata");
    f.dest_host = "fd00:ec2::254";
    expect(c, &f, VD_ACCESS_DENY, "no-metadata");
    f.dest_host = "192.0.2.1";
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    vd_conf_unref(c);

    /* A determined condition that fails skips the rule despite the undecided one; an earlier
     * rule that decides wins over a later undecided one. */
    c = load("access:\n"
             "  - name: blocked-client\n"
             "    deny: {clients: 10.0.0.0/8, dest_nets: 192.0.2.0/24}\n"
             "  - name: internal\n"
             "    allow: {dest_hosts: '*.internal'}\n"
             "  - deny: {dest_nets: 192.0.2.0/24}\n"
             "  - allow: all\n");
    f = facts("127.0.0.1", "GET");
    f.dest_host = "www.test";
    expect(c, &f, VD_ACCESS_PENDING, NULL); /* rule 2 is undecided */
    f.dest_host = "db.internal";
    expect(c, &f, VD_ACCESS_ALLOW, "internal");
    f = facts("10.0.0.1", "GET");
    f.dest_host = "db.internal";
    expect(c, &f, VD_ACCESS_PENDING, NULL); /* rule 0 is undecided */
    f.known = VD_FACT_ADDR;
    f.dest_addr = ip("198.51.100.1");
    expect(c, &f, VD_ACCESS_ALLOW, "internal");
    f.dest_addr = ip("192.0.2.7");
    expect(c, &f, VD_ACCESS_DENY, "blocked-client");
    vd_conf_unref(c);
}

/* What a tunnel's first bytes showed. */
static void
sniffed(struct vd_access_facts *f, const char *proto, const char *sni)
{
    f->known |= VD_FACT_SNIFF;
    f->protocol = proto;
    f->sni = sni;
}

static void
test_sniff(void **state)
{
    (void)state;
    static const char *const alpn_h2[] = {"h2", "http/1.1"};
    static const char *const alpn_h1[] = {"http/1.1"};
    struct vd_conf *c = load("access:\n"
                             "  - name: no-ssh\n"
                             "    deny: {protocols: ssh}\n"
                             "  - name: tls-named\n"
                             "    allow: {protocols: tls, sni: ['*.example.com'], alpn: h2}\n"
                             "  - name: no-sni\n"
                             "    deny: {sni: ''}\n"
                             "  - allow: {methods: [GET]}\n"
                             "  - deny: all\n");
    /* Not a tunnel: sniff rules never match, so a plain GET is decided at once. */
    struct vd_access_facts f = facts("127.0.0.1", "GET");
    expect(c, &f, VD_ACCESS_ALLOW, "access[3]");
    f = facts("127.0.0.1", "CONNECT");
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    /* A tunnel: the first rule waits for the first bytes. */
    f.tunnel = true;
    f.dest_host = "www.example.com";
    f.dest_port = 443;
    expect(c, &f, VD_ACCESS_PENDING, NULL);
    sniffed(&f, "ssh", NULL);
    expect(c, &f, VD_ACCESS_DENY, "no-ssh");
    sniffed(&f, "tls", "www.example.com");
    expect(c, &f, VD_ACCESS_DENY, "access[4]"); /* no ALPN offered */
    f.alpn = alpn_h1;
    f.nalpn = 1;
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    f.alpn = alpn_h2;
    f.nalpn = 2;
    expect(c, &f, VD_ACCESS_ALLOW, "tls-named");
    sniffed(&f, "tls", "example.com"); /* "*.example.com" needs a label in front */
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    sniffed(&f, "tls", "WWW.Example.COM");
    expect(c, &f, VD_ACCESS_ALLOW, "tls-named");
    sniffed(&f, "tls", NULL); /* a ClientHello without SNI */
    expect(c, &f, VD_ACCESS_DENY, "no-sni");
    sniffed(&f, "http", NULL); /* no ClientHello at all: "" does not match */
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    sniffed(&f, NULL, NULL); /* NULL protocol reads as unknown */
    expect(c, &f, VD_ACCESS_DENY, "access[4]");
    vd_conf_unref(c);

    /* Protocol "unknown" is a protocol like the others. */
    c = load("access:\n  - deny: {protocols: [unknown]}\n  - allow: all\n");
    f = facts("127.0.0.1", "CONNECT");
    f.tunnel = true;
    sniffed(&f, "unknown", NULL);
    expect(c, &f, VD_ACCESS_DENY, "access[0]");
    sniffed(&f, "tls", NULL);
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    vd_conf_unref(c);
}

static void
test_mismatch(void **state)
{
    (void)state;
    struct vd_conf *c = load("access:\n"
                             "  - name: fronting\n"
                             "    deny: {sni_mismatch: true}\n"
                             "  - name: smuggling\n"
                             "    deny: {declared_mismatch: true}\n"
                             "  - allow: all\n");
    struct vd_access_facts f = facts("127.0.0.1", "CONNECT");
    expect(c, &f, VD_ACCESS_ALLOW, "access[2]"); /* not a tunnel */
    f.tunnel = true;
    f.dest_host = "www.example.com";
    f.dest_port = 443;
    expect(c, &f, VD_ACCESS_PENDING, NULL);
    sniffed(&f, "tls", "www.example.com");
    expect(c, &f, VD_ACCESS_ALLOW, "access[2]");
    sniffed(&f, "tls", "WWW.example.com."); /* case and trailing dot do not count */
    expect(c, &f, VD_ACCESS_ALLOW, "access[2]");
    f.dest_host = "www.example.com.";
    sniffed(&f, "tls", "www.example.com");
    expect(c, &f, VD_ACCESS_ALLOW, "access[2]");
    sniffed(&f, "tls", "other.example");
    expect(c, &f, VD_ACCESS_DENY, "fronting");
    sniffed(&f, "tls", NULL); /* no SNI: nothing to compare */
    expect(c, &f, VD_ACCESS_ALLOW, "access[2]");

    /* declared_mismatch: needs a declaration (known with the head), then an observation. */
    f = facts("127.0.0.1", "CONNECT");
    f.tunnel = true;
    f.dest_host = "mail.example";
    f.dest_port = 993;
    f.declared = "imap";
    f.known = 0;
    /* sni_mismatch waits too: both rules are undecided. */
    expect(c, &f, VD_ACCESS_PENDING, NULL);
    sniffed(&f, "imap", NULL);
    expect(c, &f, VD_ACCESS_ALLOW, "access[2]");
    sniffed(&f, "ssh", NULL);
    expect(c, &f, VD_ACCESS_DENY, "smuggling");
    sniffed(&f, "unknown", NULL); /* unknown is not evidence of a mismatch */
    expect(c, &f, VD_ACCESS_ALLOW, "access[2]");
    vd_conf_unref(c);

    /* Without a declaration the rule is skipped before any byte arrives. */
    c = load("access:\n  - deny: {declared_mismatch: true}\n  - allow: all\n");
    f = facts("127.0.0.1", "CONNECT");
    f.tunnel = true;
    f.dest_host = "h.example";
    f.dest_port = 443;
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    f.declared = "websocket";
    expect(c, &f, VD_ACCESS_PENDING, NULL);
    vd_conf_unref(c);
}

/* A rule with both undecided kinds waits until both are known; a determined failure of either
 * kind skips it. */
static void
test_pending_phases(void **state)
{
    (void)state;
    struct vd_conf *c = load("access:\n"
                             "  - name: both\n"
                             "    deny: {dest_nets: 10.0.0.0/8, protocols: [ssh]}\n"
                             "  - allow: all\n");
    struct vd_access_facts f = facts("127.0.0.1", "CONNECT");
    f.tunnel = true;
    f.dest_host = "h.example";
    f.dest_port = 22;
    expect(c, &f, VD_ACCESS_PENDING, NULL);
    f.known = VD_FACT_ADDR;
    f.dest_addr = ip("192.0.2.1"); /* the address rules it out: no need to sniff */
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    f.dest_addr = ip("10.1.1.1");
    expect(c, &f, VD_ACCESS_PENDING, NULL);
    sniffed(&f, "tls", NULL);
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    sniffed(&f, "ssh", NULL);
    expect(c, &f, VD_ACCESS_DENY, "both");
    /* Sniffed first, address later. */
    f.known = VD_FACT_SNIFF;
    f.dest_addr = NULL;
    sniffed(&f, "tls", NULL);
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    sniffed(&f, "ssh", NULL);
    expect(c, &f, VD_ACCESS_PENDING, NULL);
    vd_conf_unref(c);
}

static void
test_cidr_match(void **state)
{
    (void)state;
    struct vd_conf *c = load("access:\n"
                             "  - allow: {clients: [10.1.0.0/16, 'fd00::/8', '::ffff:0:0/96', "
                             "192.0.2.128/25, 0.0.0.0/0, all]}\n");
    const struct vd_conf_cidr *r = c->rules[0].clients;
    assert_int_equal(c->rules[0].nclients, 6);
    assert_true(vd_cidr_match(&r[0], ip("10.1.255.255")));
    assert_false(vd_cidr_match(&r[0], ip("10.2.0.0")));
    assert_true(vd_cidr_match(&r[0], ip("::ffff:10.1.0.1")));
    assert_false(vd_cidr_match(&r[0], ip("::10.1.0.1"))); /* IPv4-compatible is not mapped */
    assert_true(vd_cidr_match(&r[1], ip("fdff::1")));
    assert_false(vd_cidr_match(&r[1], ip("fe00::1")));
    assert_false(vd_cidr_match(&r[1], ip("10.0.0.1")));
    assert_true(vd_cidr_match(&r[2], ip("192.0.2.1"))); /* an IPv4 client is ::ffff:a.b.c.d */
    assert_true(vd_cidr_match(&r[3], ip("192.0.2.128")));
    assert_false(vd_cidr_match(&r[3], ip("192.0.2.127")));
    assert_true(vd_cidr_match(&r[4], ip("203.0.113.9")));
    assert_false(vd_cidr_match(&r[4], ip("2001:db8::1")));
    assert_true(vd_cidr_match(&r[5], ip("2001:db8::1")));
    assert_false(vd_cidr_match(&r[5], NULL));
    vd_conf_unref(c);
}

static void
test_host_match(void **state)
{
    (void)state;
    assert_true(vd_host_match("example.com", "example.com"));
    assert_true(vd_host_match("example.com", "example.com."));
    assert_true(vd_host_match("example.com", "EXAMPLE.com"));
    assert_false(vd_host_match("example.com", "a.example.com"));
    assert_false(vd_host_match("example.com", "example.co"));
    assert_false(vd_host_match("example.com", "example.comm"));
    assert_true(vd_host_match("*.example.com", "a.example.com"));
    assert_true(vd_host_match("*.example.com", "a.b.example.com"));
    assert_true(vd_host_match("*.example.com", "a.example.com."));
    assert_false(vd_host_match("*.example.com", "example.com"));
    assert_false(vd_host_match("*.example.com", "example.com."));
    assert_false(vd_host_match("*.example.com", ".example.com."));
    assert_true(vd_host_match("*.example.com", "x.example.com"));
    assert_false(vd_host_match("*.example.com", "xexample.com"));
    assert_false(vd_host_match("*.example.com", "a.example.com.evil"));
    assert_false(vd_host_match("*.example.com", ""));
    assert_true(vd_host_match("::1", "::1"));
    assert_true(vd_host_match("::1", "0:0::1"));
    assert_false(vd_host_match("::1", "::2"));
    assert_true(vd_host_match("192.0.2.1", "192.0.2.1"));
    assert_false(vd_host_match("example.com", ""));
}

static void
test_connect_ports(void **state)
{
    (void)state;
    struct vd_conf *c = vd_conf_default();
    assert_true(vd_connect_port_allowed(c, 443));
    assert_false(vd_connect_port_allowed(c, 80));
    vd_conf_unref(c);
    c = load("connect: {ports: [443, '8000-8002', 22]}\n");
    assert_true(vd_connect_port_allowed(c, 22));
    assert_true(vd_connect_port_allowed(c, 443));
    assert_true(vd_connect_port_allowed(c, 8000));
    assert_true(vd_connect_port_allowed(c, 8002));
    assert_false(vd_connect_port_allowed(c, 8003));
    assert_false(vd_connect_port_allowed(c, 0));
    assert_false(vd_connect_port_allowed(c, 65535));
    vd_conf_unref(c);
    c = load("connect: {ports: []}\n");
    assert_false(vd_connect_port_allowed(c, 443));
    vd_conf_unref(c);
}

/* The embedded default: loopback clients only. */
static void
test_default_rules(void **state)
{
    (void)state;
    struct vd_conf *c = vd_conf_default();
    struct vd_access_facts f = facts("127.0.0.1", "GET");
    expect(c, &f, VD_ACCESS_ALLOW, "access[0]");
    f = facts("::1", "GET");
    expect(c, &f, VD_ACCESS_ALLOW, "access[1]");
    f = facts("::ffff:127.0.0.2", "GET");
    expect(c, &f, VD_ACCESS_ALLOW, "access[0]");
    f = facts("192.0.2.1", "GET");
    expect(c, &f, VD_ACCESS_DENY, NULL);
    vd_conf_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_match),   cmocka_unit_test(test_head_conditions),
        cmocka_unit_test(test_dest_nets),     cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_mismatch),      cmocka_unit_test(test_pending_phases),
        cmocka_unit_test(test_cidr_match),    cmocka_unit_test(test_host_match),
        cmocka_unit_test(test_connect_ports), cmocka_unit_test(test_default_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
