/* SPDX-License-Identifier: MIT */
/* Unit tests for proxy authentication (src/auth): htpasswd files written by the real tools
 * (htpasswd -B, openssl passwd -6) and by hand, every load error's exact message, Basic
 * parsing (RFC 7617), the verified-credential cache and its TTL, the failure throttle, and two
 * threads verifying at once. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vd/auth.h"
#include "vd/err.h"
#include "vd_test.h"

/* Generated once with `htpasswd -B -b -n alice 'correct horse'` and `openssl passwd -6
 * 'battery staple'` / `openssl passwd -5 x`. */
#define ALICE_2Y "$2y$05$aUd5tSji/n5pWrdZ.4IdvORGZu.mB7yrHlnoOYRLYtKJ6pk4oH/RK"
#define BOB_6                                                                                      \
    "$6$15HvcAYTcZL8zjgp$mPg99/nqPSRPnWQhrlnf8rNvrIpeidnEXQoHTQYySwthijCpy4gVC1QYvPHVAqL2wlVMTFEw" \
    "xW0cSFnlPSB5e1"
#define CAROL_5 "$5$duNRwnG9B78.pf8M$wOYOVewlrYqD.ZShGNYBgfouevvoaReXvLIFlK2.kg5"
/* `htpasswd -B -C 4 -b -n dave 'p:w'`: a password holding a colon. */
#define DAVE_2Y "$2y$04$loVWelVG1Rq9//sMFI7zgOGFnsyP2ebWLJeeRZW5zLnJHdWOMu7Ly"

#define ADVICE "use htpasswd -B or openssl passwd -6"

static char tmpdir[64];
static char paths[32][PATH_MAX];
static int npaths;

static int
setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vdauth.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    for (int i = 0; i < npaths; i++) {
        unlink(paths[i]);
    }
    npaths = 0;
    return rmdir(tmpdir);
}

static const char *
tmp_path(const char *name)
{
    char dir[sizeof(tmpdir)];
    memcpy(dir, tmpdir, sizeof(dir));
    for (int i = 0; i < npaths; i++) {
        const char *slash = strrchr(paths[i], '/');
        if (strcmp(slash + 1, name) == 0) {
            return paths[i];
        }
    }
    assert_true(npaths < 32);
    snprintf(paths[npaths], PATH_MAX, "%s/%s", dir, name);
    return paths[npaths++];
}

static const char *
write_file(const char *name, const char *content)
{
    const char *p = tmp_path(name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_true(fputs(content, f) >= 0);
    assert_int_equal(fclose(f), 0);
    return p;
}

static const struct vd_auth_params params = {
    .cache_ttl = 300000,
    .fail_limit = 3,
    .fail_window = 1000,
};

static struct vd_auth *
load(const char *path, const struct vd_auth_params *p)
{
    char err[512];
    struct vd_auth *a = NULL;
    int rc = vd_auth_load(path, p ? p : &params, &a, err, sizeof(err));
    if (rc) {
        print_error("load %s: %s\n", path, err);
    }
    assert_int_equal(rc, 0);
    assert_non_null(a);
    return a;
}

/* "Basic " + base64(user ":" pass), as a client writes it. */
static const char *
basic(char *buf, size_t cap, const char *scheme, const char *user, const char *pass)
{
    char up[600];
    unsigned char b64[900];
    int n = snprintf(up, sizeof(up), "%s:%s", user, pass);
    assert_true(n > 0 && (size_t)n < sizeof(up));
    EVP_EncodeBlock(b64, (const unsigned char *)up, n);
    int k = snprintf(buf, cap, "%s %s", scheme, (const char *)b64);
    assert_true(k > 0 && (size_t)k < cap);
    return buf;
}

static enum vd_auth_result
check(struct vd_auth *a, const char *v, uint64_t now, char *user)
{
    return vd_auth_check(a, (const uint8_t *)v, v ? strlen(v) : 0, now, user);
}

static enum vd_auth_result
verify(struct vd_auth *a, const char *v, uint64_t now, char *user)
{
    return vd_auth_verify(a, (const uint8_t *)v, strlen(v), now, user);
}

/* Verifies @user/@pass; asserts the outcome and, on success, the name handed back. */
static void
expect_verify(struct vd_auth *a, const char *u, const char *pass, enum vd_auth_result want)
{
    char h[1024], user[VD_AUTH_USER_MAX + 1] = "";
    enum vd_auth_result r = verify(a, basic(h, sizeof(h), "Basic", u, pass), 0, user);
    if (r != want) {
        print_error("user '%s' pass '%s': got %d, want %d\n", u, pass, r, want);
    }
    assert_int_equal(r, want);
    if (want == VD_AUTH_OK) {
        assert_string_equal(user, u);
    }
}

static void
test_embedded_hashes(void **state)
{
    (void)state;
    const char *p = write_file("embedded", "# users\r\n"
                                           "\r\n"
                                           "alice:" ALICE_2Y "\r\n"
                                           "   # indented comment\n"
                                           "bob:" BOB_6 "\n"
                                           "carol:" CAROL_5 "\n"
                                           "dave:" DAVE_2Y);
    struct vd_auth *a = load(p, NULL);
    expect_verify(a, "alice", "correct horse", VD_AUTH_OK);
    expect_verify(a, "alice", "correct horsE", VD_AUTH_BAD);
    expect_verify(a, "alice", "", VD_AUTH_BAD);
    expect_verify(a, "bob", "battery staple", VD_AUTH_OK);
    expect_verify(a, "bob", "battery stapl", VD_AUTH_BAD);
    expect_verify(a, "carol", "x", VD_AUTH_OK);
    expect_verify(a, "carol", "y", VD_AUTH_BAD);
    /* RFC 7617 §2: the first colon splits, so the password may hold colons. */
    expect_verify(a, "dave", "p:w", VD_AUTH_OK);
    expect_verify(a, "dave", "p", VD_AUTH_BAD);
    /* Another user's password, an unknown user, a user name differing in case. */
    expect_verify(a, "bob", "correct horse", VD_AUTH_BAD);
    expect_verify(a, "mallory", "correct horse", VD_AUTH_BAD);
    expect_verify(a, "Alice", "correct horse", VD_AUTH_BAD);
    vd_auth_free(a);
}

/* Hashes libcrypt writes for settings the tools here do not: rounds= and yescrypt. */
static void
test_generated_hashes(void **state)
{
    (void)state;
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    char file[1024], salt[CRYPT_GENSALT_OUTPUT_SIZE];
    assert_non_null(cd);
    assert_non_null(crypt_gensalt_rn("$6$", 6000, NULL, 0, salt, sizeof(salt)));
    assert_non_null(strstr(salt, "rounds=6000$"));
    const char *h6 = crypt_r("rounds pw", salt, cd);
    assert_non_null(h6);
    int n = snprintf(file, sizeof(file), "erin:%s\n", h6);
    bool yes = crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) != NULL;
    if (yes) {
        const char *hy = crypt_r("yes pw", salt, cd);
        assert_non_null(hy);
        snprintf(file + n, sizeof(file) - (size_t)n, "yann:%s\n", hy);
    }
    free(cd);
    struct vd_auth *a = load(write_file("generated", file), NULL);
    expect_verify(a, "erin", "rounds pw", VD_AUTH_OK);
    expect_verify(a, "erin", "rounds pW", VD_AUTH_BAD);
    if (yes) {
        expect_verify(a, "yann", "yes pw", VD_AUTH_OK);
        expect_verify(a, "yann", "yes pW", VD_AUTH_BAD);
    }
    vd_auth_free(a);
}

/* Runs @cmd; returns its first output line in @out (without the newline). */
static int
run(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    out[0] = '\0';
    if (fgets(out, (int)cap, f)) {
        out[strcspn(out, "\r\n")] = '\0';
    }
    return pclose(f);
}

static void
test_real_tools(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 200], line[512];
    if (access("/usr/bin/htpasswd", X_OK) != 0) {
        print_message("htpasswd missing (apt-get install apache2-utils): skipped\n");
        skip();
    }
    const char *p = tmp_path("tools");
    snprintf(cmd, sizeof(cmd), "htpasswd -B -b -c '%s' frank 'fr@nk pass' 2>&1", p);
    assert_int_equal(run(cmd, line, sizeof(line)), 0);
    snprintf(cmd, sizeof(cmd), "htpasswd -B -b '%s' gina 'gina:pass' 2>&1", p);
    assert_int_equal(run(cmd, line, sizeof(line)), 0);
    assert_int_equal(run("openssl passwd -6 'harry pass'", line, sizeof(line)), 0);
    assert_memory_equal(line, "$6$", 3);
    FILE *f = fopen(p, "a");
    assert_non_null(f);
    fprintf(f, "harry:%s\n", line);
    assert_int_equal(fclose(f), 0);
    /* htpasswd -B writes $2y$. */
    f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_memory_equal(line, "frank:$2y$", 10);

    struct vd_auth *a = load(p, NULL);
    expect_verify(a, "frank", "fr@nk pass", VD_AUTH_OK);
    expect_verify(a, "frank", "fr@nk pas", VD_AUTH_BAD);
    expect_verify(a, "gina", "gina:pass", VD_AUTH_OK);
    expect_verify(a, "gina", "gina", VD_AUTH_BAD);
    expect_verify(a, "harry", "harry pass", VD_AUTH_OK);
    expect_verify(a, "harry", "Harry pass", VD_AUTH_BAD);
    expect_verify(a, "nobody", "harry pass", VD_AUTH_BAD);
    vd_auth_free(a);
}

static void
test_parse(void **state)
{
    (void)state;
    struct vd_auth *a = load(write_file("parse", "alice:" ALICE_2Y "\n"), NULL);
    char user[VD_AUTH_USER_MAX + 1], h[1024], longu[VD_AUTH_USER_MAX + 2];

    static const struct {
        const char *v;
        enum vd_auth_result want;
    } cases[] = {
        {"", VD_AUTH_MISSING},
        {"   ", VD_AUTH_MISSING},
        {"Bearer YWxpY2U6eA==", VD_AUTH_MISSING},
        {"Digest username=\"alice\"", VD_AUTH_MISSING},
        {"Basically YWxpY2U6eA==", VD_AUTH_MISSING},
        {"Basic", VD_AUTH_BAD},
        {"Basic ", VD_AUTH_BAD},
        {"Basic\tYWxpY2U6eA==", VD_AUTH_BAD},
        /* "alice:x" in every accepted spelling */
        {"Basic YWxpY2U6eA==", VD_AUTH_VERIFY},
        {"basic YWxpY2U6eA==", VD_AUTH_VERIFY},
        {"BASIC    YWxpY2U6eA==", VD_AUTH_VERIFY},
        {" Basic YWxpY2U6eA== \t", VD_AUTH_VERIFY},
        /* base64, strictly */
        {"Basic YWxpY2U6eA", VD_AUTH_BAD},     /* padding missing */
        {"Basic YWxpY2U6eA=", VD_AUTH_BAD},    /* padding short */
        {"Basic YWxpY2U6eA===", VD_AUTH_BAD},  /* padding long */
        {"Basic YWxpY2U6eB==", VD_AUTH_BAD},   /* non-zero pad bits */
        {"Basic YWxp=2U6eA==", VD_AUTH_BAD},   /* '=' inside */
        {"Basic YWxpY2U6eA=x", VD_AUTH_BAD},   /* data after '=' */
        {"Basic YWxp!2U6eA==", VD_AUTH_BAD},   /* outside the alphabet */
        {"Basic YW-pY2U6eA==", VD_AUTH_BAD},   /* base64url */
        {"Basic YWxp Y2U6eA==", VD_AUTH_BAD},  /* space inside */
        {"Basic YWxpY2U6eA== x", VD_AUTH_BAD}, /* trailing data */
        {"Basic YWxpY2U=", VD_AUTH_BAD},       /* "alice": no colon */
        {"Basic OngK", VD_AUTH_BAD},           /* ":x\n": empty user */
        {"Basic YQliOng=", VD_AUTH_BAD},       /* "a\tb:x": control in the user */
        {"Basic YWxpY2U6eAB5", VD_AUTH_BAD},   /* "alice:x\0y": NUL in the password */
        {"Basic YWxpY2U6", VD_AUTH_VERIFY},    /* "alice:": empty password is well-formed */
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(cases); i++) {
        enum vd_auth_result r = check(a, cases[i].v, 0, user);
        if (r != cases[i].want) {
            print_error("'%s': got %d, want %d\n", cases[i].v, r, cases[i].want);
        }
        assert_int_equal(r, cases[i].want);
        /* The slow path parses the same way: only OK or BAD. */
        if (cases[i].want != VD_AUTH_VERIFY) {
            assert_int_equal(verify(a, cases[i].v, 0, user), VD_AUTH_BAD);
        }
    }
    assert_int_equal(check(a, NULL, 0, user), VD_AUTH_MISSING);
    /* User names: VD_AUTH_USER_MAX bytes pass the parser, one more does not. */
    memset(longu, 'u', sizeof(longu) - 1);
    longu[sizeof(longu) - 1] = '\0';
    assert_int_equal(check(a, basic(h, sizeof(h), "Basic", longu, "x"), 0, user), VD_AUTH_BAD);
    longu[VD_AUTH_USER_MAX] = '\0';
    assert_int_equal(check(a, basic(h, sizeof(h), "Basic", longu, "x"), 0, user), VD_AUTH_VERIFY);
    /* A token68 over 4096 bytes is refused before decoding. */
    char *big = malloc(8192);
    assert_non_null(big);
    memcpy(big, "Basic ", 6);
    memset(big + 6, 'A', 4100);
    big[6 + 4100] = '\0';
    assert_int_equal(check(a, big, 0, user), VD_AUTH_BAD);
    free(big);
    vd_auth_free(a);
}

static void
test_cache(void **state)
{
    (void)state;
    struct vd_auth *a = load(write_file("cache", "alice:" ALICE_2Y "\nbob:" BOB_6 "\n"), NULL);
    char user[VD_AUTH_USER_MAX + 1], h[1024], h2[1024];
    const uint64_t t0 = 1000000;
    basic(h, sizeof(h), "Basic", "alice", "correct horse");
    assert_int_equal(check(a, h, t0, user), VD_AUTH_VERIFY);
    assert_int_equal(verify(a, h, t0, user), VD_AUTH_OK);
    memset(user, 0, sizeof(user));
    assert_int_equal(check(a, h, t0, user), VD_AUTH_OK);
    assert_string_equal(user, "alice");
    /* Same credential, other spelling of the scheme and spaces: same entry. */
    basic(h2, sizeof(h2), "basic ", "alice", "correct horse");
    assert_int_equal(check(a, h2, t0 + 1, user), VD_AUTH_OK);
    assert_int_equal(check(a, h, t0 + 300000 - 1, user), VD_AUTH_OK);
    /* Expired at exactly cache_ttl: back to the slow path. */
    assert_int_equal(check(a, h, t0 + 300000, user), VD_AUTH_VERIFY);
    assert_int_equal(check(a, h, t0 + 1, user), VD_AUTH_VERIFY);
    /* A wrong password is never cached, and a right one does not vouch for a wrong one. */
    assert_int_equal(verify(a, h, t0, user), VD_AUTH_OK);
    basic(h2, sizeof(h2), "Basic", "alice", "wrong");
    assert_int_equal(verify(a, h2, t0, user), VD_AUTH_BAD);
    assert_int_equal(check(a, h2, t0, user), VD_AUTH_VERIFY);
    assert_int_equal(check(a, h, t0, user), VD_AUTH_OK);
    /* Two users cached side by side. */
    basic(h2, sizeof(h2), "Basic", "bob", "battery staple");
    assert_int_equal(verify(a, h2, t0, user), VD_AUTH_OK);
    assert_int_equal(check(a, h2, t0 + 5, user), VD_AUTH_OK);
    assert_string_equal(user, "bob");
    assert_int_equal(check(a, h, t0 + 5, user), VD_AUTH_OK);
    assert_string_equal(user, "alice");
    /* Malformed values never reach the cache. */
    assert_int_equal(check(a, "Basic YWxpY2U", t0, user), VD_AUTH_BAD);
    vd_auth_free(a);

    /* cache_ttl 0: every check goes to the slow path. */
    struct vd_auth_params p = params;
    p.cache_ttl = 0;
    a = load(tmp_path("cache"), &p);
    assert_int_equal(verify(a, h, t0, user), VD_AUTH_OK);
    assert_int_equal(check(a, h, t0, user), VD_AUTH_VERIFY);
    vd_auth_free(a);
}

static void
sa4(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof(*ss));
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
}

static void
sa6(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
}

#define SA(ss) ((const struct sockaddr *)(ss))

static void
test_throttle(void **state)
{
    (void)state;
    struct vd_auth *a = load(write_file("thr", "alice:" ALICE_2Y "\n"), NULL);
    struct sockaddr_storage c1, c1port, c1mapped, c2, c6;
    uint64_t retry = 12345;
    sa4(&c1, "192.0.2.1", 40000);
    sa4(&c1port, "192.0.2.1", 40001);
    sa6(&c1mapped, "::ffff:192.0.2.1", 50000);
    sa4(&c2, "192.0.2.2", 40000);
    sa6(&c6, "2001:db8::1", 1);

    /* limit 3 in 1000 ms: the window opens at the first failure. */
    assert_false(vd_auth_throttled(a, SA(&c1), 100, &retry));
    vd_auth_record_failure(a, SA(&c1), 100);
    vd_auth_record_failure(a, SA(&c1port), 300); /* the port is ignored */
    assert_false(vd_auth_throttled(a, SA(&c1), 300, &retry));
    assert_int_equal(retry, 12345);
    vd_auth_record_failure(a, SA(&c1mapped), 600); /* v4-mapped is the same client */
    assert_true(vd_auth_throttled(a, SA(&c1), 600, &retry));
    assert_int_equal(retry, 500);
    assert_true(vd_auth_throttled(a, SA(&c1mapped), 1099, &retry));
    assert_int_equal(retry, 1);
    assert_true(vd_auth_throttled(a, SA(&c1port), 700, NULL));
    assert_false(vd_auth_throttled(a, SA(&c2), 700, &retry));
    assert_false(vd_auth_throttled(a, SA(&c6), 700, &retry));
    /* The window closes 1000 ms after the first failure; the next failure opens a new one. */
    assert_false(vd_auth_throttled(a, SA(&c1), 1100, &retry));
    vd_auth_record_failure(a, SA(&c1), 1100);
    vd_auth_record_failure(a, SA(&c1), 1200);
    assert_false(vd_auth_throttled(a, SA(&c1), 1200, &retry));
    vd_auth_record_failure(a, SA(&c1), 2099);
    assert_true(vd_auth_throttled(a, SA(&c1), 2099, &retry));
    assert_int_equal(retry, 1);
    assert_false(vd_auth_throttled(a, SA(&c1), 2100, &retry));
    /* IPv6 clients are counted too. */
    for (int i = 0; i < 3; i++) {
        vd_auth_record_failure(a, SA(&c6), 5000);
    }
    assert_true(vd_auth_throttled(a, SA(&c6), 5000, &retry));
    assert_int_equal(retry, 1000);
    assert_false(vd_auth_throttled(a, SA(&c2), 5000, &retry));
    /* ... by their /64: another address of the same /64 is the same client, another /64 not. */
    struct sockaddr_storage c6same, c6other;
    sa6(&c6same, "2001:db8::ffff:1234:5678:9abc", 2);
    sa6(&c6other, "2001:db8:0:1::1", 3);
    assert_true(vd_auth_throttled(a, SA(&c6same), 5000, &retry));
    assert_false(vd_auth_throttled(a, SA(&c6other), 5000, &retry));
    /* Non-IP addresses are not counted. */
    struct sockaddr_storage un = {.ss_family = AF_UNIX};
    for (int i = 0; i < 5; i++) {
        vd_auth_record_failure(a, SA(&un), 5000);
    }
    assert_false(vd_auth_throttled(a, SA(&un), 5000, &retry));

    vd_auth_free(a);

    /* The table is bounded: a flood of addresses evicts old entries, never grows, and every
     * new address is still counted. */
    struct vd_auth_params p = params;
    p.fail_window = 1000000000;
    a = load(tmp_path("thr"), &p);
    char ip[64];
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        sa4(&c2, ip, 1);
        for (int k = 0; k < 3; k++) {
            vd_auth_record_failure(a, SA(&c2), 6000 + i);
        }
        assert_true(vd_auth_throttled(a, SA(&c2), 6000 + i, &retry));
    }
    unsigned still = 0;
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        sa4(&c2, ip, 1);
        still += vd_auth_throttled(a, SA(&c2), 6000 + 20000, &retry);
    }
    assert_true(still >= 1000 && still <= 4096);
    vd_auth_free(a);

    /* fail_limit 0 turns the throttle off. */
    p = params;
    p.fail_limit = 0;
    a = load(tmp_path("thr"), &p);
    for (int i = 0; i < 10; i++) {
        vd_auth_record_failure(a, SA(&c1), 100);
    }
    assert_false(vd_auth_throttled(a, SA(&c1), 100, &retry));
    vd_auth_free(a);
}

/* Asserts that loading @content fails with "<file>:" @want (or exactly @want when it starts
 * with '/'). */
static void
expect_load_err(const char *content, const char *want)
{
    char err[512], full[PATH_MAX + 512];
    struct vd_auth *a = (struct vd_auth *)1;
    const char *p = write_file("bad", content);
    int rc = vd_auth_load(p, &params, &a, err, sizeof(err));
    snprintf(full, sizeof(full), "%s:%s", p, want);
    if (rc != VD_ECONF || strcmp(err, full) != 0) {
        print_error("file:\n%s\nwant: %s\ngot:  %s (rc %d)\n", content, full, err, rc);
    }
    assert_int_equal(rc, VD_ECONF);
    assert_null(a);
    assert_string_equal(err, full);
}

static void
test_load_errors(void **state)
{
    (void)state;
    expect_load_err("alice:" ALICE_2Y "\nbob:$apr1$yBJ0qLOA$goW26JHHIZy8IOfS1ZZSl/\n",
                    "2: user 'bob': unsupported hash ($apr1$ MD5); " ADVICE);
    expect_load_err("# c\n\nbob:$1$abc$OGyl6dDvZCDiGmIVbeuCq/\n",
                    "3: user 'bob': unsupported hash ($1$ MD5); " ADVICE);
    expect_load_err("bob:{SHA}EfatjsUqKYSrqv18O1FlA3hcIHI=\n",
                    "1: user 'bob': unsupported hash ({SHA} SHA-1); " ADVICE);
    expect_load_err(
        "bob:abiQ6Ep3EYTHc\n",
        "1: user 'bob': unsupported hash (DES crypt, or a plain-text password); " ADVICE);
    expect_load_err("bob:secret password\n",
                    "1: user 'bob': unsupported hash (plain text or an unknown format); " ADVICE);
    expect_load_err("bob:$7$CU..../....abc$def\n",
                    "1: user 'bob': unsupported hash ($7$); " ADVICE);
    expect_load_err("bob:$2x$05$aUd5tSji/n5pWrdZ.4IdvORGZu.mB7yrHlnoOYRLYtKJ6pk4oH/RK\n",
                    "1: user 'bob': unsupported hash ($2x$); " ADVICE);
    expect_load_err("bob:\n", "1: user 'bob': empty hash; " ADVICE);
    /* Supported methods, broken strings. */
    expect_load_err("bob:$2y$05$aUd5tSji/n5pWrdZ.4IdvORGZu.mB7yrHlnoOYRLYtKJ6pk4oH/R\n",
                    "1: user 'bob': malformed bcrypt hash; " ADVICE);
    expect_load_err("bob:$2y$32$aUd5tSji/n5pWrdZ.4IdvORGZu.mB7yrHlnoOYRLYtKJ6pk4oH/RK\n",
                    "1: user 'bob': malformed bcrypt hash; " ADVICE);
    expect_load_err("bob:$6$rounds=100$abc$mPg99/nqPSRPnWQhrlnf8rNvrIpeidnEXQoHTQYySwthijCpy4gVC1QY"
                    "vPHVAqL2wlVMTFEwxW0cSFnlPSB5e1\n",
                    "1: user 'bob': malformed sha512-crypt hash; " ADVICE);
    expect_load_err("bob:$6$15HvcAYTcZL8zjgp$mPg99/\n",
                    "1: user 'bob': malformed sha512-crypt hash; " ADVICE);
    expect_load_err("bob:$5$abc$d\n", "1: user 'bob': malformed sha256-crypt hash; " ADVICE);
    expect_load_err("bob:$y$j9T$salt\n", "1: user 'bob': malformed yescrypt hash; " ADVICE);
    /* Structure */
    expect_load_err("alice:" ALICE_2Y "\nbob " BOB_6 "\n", "2: expected user:hash (no ':' found)");
    expect_load_err(":" ALICE_2Y "\n", "1: empty user name");
    expect_load_err("al\x01ice:" ALICE_2Y "\n", "1: user name holds a control character");
    expect_load_err("al\tice:" ALICE_2Y "\n", "1: user name holds a control character");
    expect_load_err("alice:" ALICE_2Y "\nbob:" BOB_6 "\n\nalice:" ALICE_2Y "\nbob:" BOB_6 "\n",
                    "4: user 'alice': duplicate (first at line 1)");
    expect_load_err("b:" BOB_6 "\na:" ALICE_2Y "\nb:" BOB_6 "\nb:" BOB_6 "\n",
                    "3: user 'b': duplicate (first at line 1)");
    char big[VD_AUTH_USER_MAX + 100];
    memset(big, 'u', VD_AUTH_USER_MAX + 1);
    snprintf(big + VD_AUTH_USER_MAX + 1, 80, ":%s\n", ALICE_2Y);
    expect_load_err(big, "1: user name longer than 256 bytes");
    /* Whole-file problems carry no line. */
    expect_load_err("# nobody\n\n", " no users (expected user:hash lines)");
    expect_load_err("", " no users (expected user:hash lines)");

    char err[512], want[PATH_MAX + 100];
    struct vd_auth *a = (struct vd_auth *)1;
    const char *p = tmp_path("absent");
    assert_int_equal(vd_auth_load(p, &params, &a, err, sizeof(err)), VD_ECONF);
    assert_null(a);
    snprintf(want, sizeof(want), "%s: cannot open: %s", p, vd_strerror(-ENOENT));
    assert_string_equal(err, want);
    assert_int_equal(vd_auth_load(tmpdir, &params, &a, err, sizeof(err)), VD_ECONF);
    snprintf(want, sizeof(want), "%s: not a regular file", tmpdir);
    assert_string_equal(err, want);
}

struct worker {
    struct vd_auth *a;
    int ok, bad;
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    char h[256], hb[256], user[VD_AUTH_USER_MAX + 1];
    basic(h, sizeof(h), "Basic", "dave", "p:w");
    basic(hb, sizeof(hb), "Basic", "dave", "p:x");
    for (int i = 0; i < 20; i++) {
        w->ok += verify(w->a, h, (uint64_t)i, user) == VD_AUTH_OK;
        w->bad += verify(w->a, hb, (uint64_t)i, user) == VD_AUTH_BAD;
        w->ok += check(w->a, h, (uint64_t)i, user) == VD_AUTH_OK;
        struct sockaddr_storage c;
        sa4(&c, "198.51.100.7", 1);
        vd_auth_record_failure(w->a, SA(&c), (uint64_t)i);
    }
    return NULL;
}

static void
test_threads(void **state)
{
    (void)state;
    struct vd_auth *a = load(write_file("threads", "dave:" DAVE_2Y "\n"), NULL);
    struct worker w[2] = {{.a = a}, {.a = a}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(w[i].ok, 40);
        assert_int_equal(w[i].bad, 20);
    }
    struct sockaddr_storage c;
    uint64_t retry;
    sa4(&c, "198.51.100.7", 1);
    assert_true(vd_auth_throttled(a, SA(&c), 19, &retry));
    vd_auth_free(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_hashes), cmocka_unit_test(test_generated_hashes),
        cmocka_unit_test(test_real_tools),      cmocka_unit_test(test_parse),
        cmocka_unit_test(test_cache),           cmocka_unit_test(test_throttle),
        cmocka_unit_test(test_load_errors),     cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
