/* SPDX-License-Identifier: MIT */
/* The Basic scheme (RFC 7617) for Proxy-Authorization (RFC 9110 §11.7.2): strict parsing of
 * the credentials, the slow check with crypt_r, and the cache of verified credentials keyed by
 * a salted SHA-256 of the token68, so the password itself is never kept. */
#include "vd/config.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth-int.h"

#define DEC_MAX (AUTH_TOKEN68_MAX / 4 * 3)

/* A parsed credential. The password sits NUL-terminated in @dec; wiped by cred_wipe(). */
struct cred {
    const uint8_t *tok; /* token68, borrowed from the field value */
    size_t toklen;
    size_t ulen;              /* user is dec[0..ulen) */
    const char *pass;         /* inside @dec, NUL-terminated */
    uint8_t dec[DEC_MAX + 1]; /* "user:pass" decoded, then NUL */
};

static void
cred_wipe(struct cred *c)
{
    OPENSSL_cleanse(c->dec, sizeof(c->dec));
}

static int
b64val(uint8_t ch)
{
    if (ch >= 'A' && ch <= 'Z') {
        return ch - 'A';
    }
    if (ch >= 'a' && ch <= 'z') {
        return ch - 'a' + 26;
    }
    if (ch >= '0' && ch <= '9') {
        return ch - '0' + 52;
    }
    if (ch == '+') {
        return 62;
    }
    if (ch == '/') {
        return 63;
    }
    return -1;
}

/* RFC 4648 §4, strictly: the standard alphabet, whole quanta, '=' only as the final padding,
 * and zero pad bits, so each credential has exactly one encoding (the cache key relies on it).
 * Returns the decoded length, or -1. */
static long
b64_decode(const uint8_t *s, size_t len, uint8_t *out)
{
    size_t o = 0;
    if (len == 0 || len % 4 != 0) {
        return -1;
    }
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int v[4];
        size_t pad = 0;
        for (size_t k = 0; k < 4; k++) {
            if (last && s[i + k] == '=' && k >= 2) {
                pad++;
                v[k] = 0;
                continue;
            }
            if (pad > 0) {
                return -1; /* data after '=' */
            }
            if ((v[k] = b64val(s[i + k])) < 0) {
                return -1;
            }
        }
        uint32_t q =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if ((pad == 1 && (q & 0xff)) || (pad == 2 && (q & 0xffff))) {
            return -1; /* non-zero pad bits */
        }
        out[o++] = (uint8_t)(q >> 16);
        if (pad < 2) {
            out[o++] = (uint8_t)(q >> 8);
        }
        if (pad < 1) {
            out[o++] = (uint8_t)q;
        }
    }
    return (long)o;
}

/* Parses a Proxy-Authorization value into @c. Returns VD_AUTH_OK (well-formed), VD_AUTH_MISSING
 * (absent, empty or another scheme) or VD_AUTH_BAD. */
static enum vd_auth_result
parse(const uint8_t *v, size_t len, struct cred *c)
{
    if (!v) {
        return VD_AUTH_MISSING;
    }
    /* RFC 9110 §5.5: a field value has no leading or trailing whitespace. */
    while (len > 0 && (v[0] == ' ' || v[0] == '\t')) {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) {
        len--;
    }
    if (len == 0) {
        return VD_AUTH_MISSING;
    }
    /* RFC 9110 §11.4: credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ], the scheme
     * matched case-insensitively (§11.1). */
    size_t sl = 0;
    while (sl < len && v[sl] != ' ' && v[sl] != '\t') {
        sl++;
    }
    if (sl != 5 || strncasecmp((const char *)v, "basic", 5) != 0) {
        return VD_AUTH_MISSING;
    }
    if (sl < len && v[sl] == '\t') {
        return VD_AUTH_BAD; /* Basic, but not separated by SP */
    }
    size_t i = sl;
    while (i < len && v[i] == ' ') {
        i++;
    }
    c->tok = v + i;
    c->toklen = len - i;
    if (c->toklen == 0 || c->toklen > AUTH_TOKEN68_MAX) {
        return VD_AUTH_BAD;
    }
    long dl = b64_decode(c->tok, c->toklen, c->dec);
    if (dl < 0) {
        return VD_AUTH_BAD;
    }
    c->dec[dl] = '\0';
    /* RFC 7617 §2: user-pass = user-id ":" password; the user-id holds no colon, so the first
     * colon splits. */
    const uint8_t *colon = memchr(c->dec, ':', (size_t)dl);
    if (!colon) {
        return VD_AUTH_BAD;
    }
    c->ulen = (size_t)(colon - c->dec);
    if (c->ulen == 0 || c->ulen > VD_AUTH_USER_MAX) {
        return VD_AUTH_BAD;
    }
    for (size_t k = 0; k < c->ulen; k++) {
        if (c->dec[k] < 0x20 || c->dec[k] == 0x7f) {
            return VD_AUTH_BAD;
        }
    }
    c->pass = (const char *)colon + 1;
    /* crypt_r reads a C string: a NUL would cut the password short. */
    if (memchr(c->pass, '\0', (size_t)dl - c->ulen - 1)) {
        return VD_AUTH_BAD;
    }
    return VD_AUTH_OK;
}

/* Returns false when OpenSSL cannot digest (then nothing is cached or found). */
static bool
cache_key(const struct vd_auth *a, const struct cred *c, uint8_t key[AUTH_KEY_LEN])
{
    uint8_t buf[sizeof(a->key_salt) + AUTH_TOKEN68_MAX];
    unsigned int kl = AUTH_KEY_LEN;
    memcpy(buf, a->key_salt, sizeof(a->key_salt));
    memcpy(buf + sizeof(a->key_salt), c->tok, c->toklen);
    bool ok = EVP_Digest(buf, sizeof(a->key_salt) + c->toklen, key, &kl, EVP_sha256(), NULL) == 1;
    /* The token is the password in base64: wipe the copy. */
    OPENSSL_cleanse(buf, sizeof(a->key_salt) + c->toklen);
    return ok;
}

static struct auth_cache_ent *
cache_set(struct vd_auth *a, const uint8_t key[AUTH_KEY_LEN])
{
    /* The key is a salted hash: its bytes are uniform and no client can aim at one set. */
    uint32_t h = (uint32_t)key[0] | (uint32_t)key[1] << 8 | (uint32_t)key[2] << 16;
    return a->cache[h % AUTH_CACHE_SETS];
}

static void
copy_user(char *user, const struct auth_user *u)
{
    size_t l = strlen(u->name);
    memcpy(user, u->name, l + 1);
}

enum vd_auth_result
vd_auth_check(struct vd_auth *a, const uint8_t *value, size_t len, uint64_t now_ms, char *user)
{
    struct cred c;
    uint8_t key[AUTH_KEY_LEN];
    enum vd_auth_result r = parse(value, len, &c);
    if (r != VD_AUTH_OK) {
        cred_wipe(&c);
        return r;
    }
    r = VD_AUTH_VERIFY;
    if (a->params.cache_ttl > 0 && cache_key(a, &c, key)) {
        pthread_mutex_lock(&a->cache_mu);
        struct auth_cache_ent *set = cache_set(a, key);
        for (size_t i = 0; i < AUTH_CACHE_WAYS; i++) {
            struct auth_cache_ent *e = &set[i];
            if (e->user && CRYPTO_memcmp(e->key, key, AUTH_KEY_LEN) == 0) {
                if (now_ms < e->expires) {
                    copy_user(user, e->user);
                    r = VD_AUTH_OK;
                } else {
                    e->user = NULL;
                }
                break;
            }
        }
        pthread_mutex_unlock(&a->cache_mu);
    }
    cred_wipe(&c);
    return r;
}

static void
cache_put(struct vd_auth *a, const uint8_t key[AUTH_KEY_LEN], const struct auth_user *u,
          uint64_t now_ms)
{
    pthread_mutex_lock(&a->cache_mu);
    struct auth_cache_ent *set = cache_set(a, key), *slot = NULL;
    for (size_t i = 0; i < AUTH_CACHE_WAYS; i++) {
        struct auth_cache_ent *e = &set[i];
        if (e->user && CRYPTO_memcmp(e->key, key, AUTH_KEY_LEN) == 0) {
            slot = e;
            break;
        }
        /* Otherwise an empty or expired way, else the one that expires first (the oldest:
         * every entry gets the same TTL). */
        if (!slot || (slot->user && (!e->user || e->expires < slot->expires))) {
            slot = e;
        }
    }
    memcpy(slot->key, key, AUTH_KEY_LEN);
    slot->user = u;
    slot->expires = now_ms + VD_MIN(a->params.cache_ttl, UINT64_MAX - now_ms);
    pthread_mutex_unlock(&a->cache_mu);
}

enum vd_auth_result
vd_auth_verify(struct vd_auth *a, const uint8_t *value, size_t len, uint64_t now_ms, char *user)
{
    struct cred c;
    uint8_t key[AUTH_KEY_LEN];
    if (parse(value, len, &c) != VD_AUTH_OK) {
        cred_wipe(&c);
        return VD_AUTH_BAD;
    }
    const struct auth_user *u = vd_auth__user_find(a, (const char *)c.dec, c.ulen);
    /* An unknown user runs the same hash against the dummy setting, so the time taken does not
     * tell whether the name exists; the result is then thrown away. */
    const char *setting = u ? u->hash : a->dummy_hash;
    size_t hl = strlen(setting);
    /* struct crypt_data is about 32 KiB: too big for a thread-pool stack. */
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    if (!cd) {
        cred_wipe(&c);
        return VD_AUTH_BAD;
    }
    const char *out = crypt_r(c.pass, setting, cd);
    size_t ol = out ? strlen(out) : 0;
    /* @hl < CRYPT_OUTPUT_SIZE, so comparing @hl bytes of the output buffer stays inside it,
     * whatever length came out; the length check is folded in without branching first. */
    int diff = CRYPTO_memcmp(cd->output, setting, hl);
    bool ok = (u != NULL) & (out == cd->output) & (ol == hl) & (diff == 0);
    OPENSSL_cleanse(cd, sizeof(*cd));
    free(cd);
    if (ok && a->params.cache_ttl > 0 && cache_key(a, &c, key)) {
        cache_put(a, key, u, now_ms);
    }
    cred_wipe(&c);
    if (!ok) {
        return VD_AUTH_BAD;
    }
    copy_user(user, u);
    return VD_AUTH_OK;
}
