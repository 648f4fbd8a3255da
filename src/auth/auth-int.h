/* SPDX-License-Identifier: MIT */
/* Private to src/auth: the users loaded from an htpasswd file, the verified-credential cache and
 * the failure table behind struct vd_auth. Other modules use include/vd/auth.h only. */
#ifndef VD_AUTH_INT_H
#define VD_AUTH_INT_H

#include <pthread.h>
#include <stdint.h>

#include "vd/auth.h"

#define AUTH_HASH_MAX    255 /* bytes of a stored hash; crypt output is at most 384 */
#define AUTH_KEY_LEN     32  /* SHA-256 */
#define AUTH_CACHE_SETS  512 /* the cache is set-associative: SETS x WAYS entries */
#define AUTH_CACHE_WAYS  8
#define AUTH_THR_SETS    512 /* the failure table likewise */
#define AUTH_THR_WAYS    8
#define AUTH_TOKEN68_MAX 4096 /* base64 bytes of a Basic credential */

struct auth_user {
    char *name; /* NUL-terminated, no control characters, at most VD_AUTH_USER_MAX bytes */
    char *hash; /* crypt(3) string, checked at load */
    uint32_t line;
};

/* One verified credential: the key hash, never the password. */
struct auth_cache_ent {
    uint8_t key[AUTH_KEY_LEN];
    const struct auth_user *user; /* borrowed from vd_auth.users; NULL: empty slot */
    uint64_t expires;             /* ms */
};

/* Failures of one client address within a fixed window that opens at the first failure. */
struct auth_thr_ent {
    uint8_t addr[16]; /* IPv6, or IPv4 as ::ffff:a.b.c.d */
    bool used;
    uint32_t count;
    uint64_t start; /* ms of the first failure counted in this window */
};

struct vd_auth {
    struct vd_auth_params params;
    struct auth_user *users; /* sorted by name (strcmp), unique */
    size_t nusers;
    const char *dummy_hash; /* setting used for unknown users: the first user's hash */
    uint8_t key_salt[32];   /* random: cache keys are SHA-256(salt || token68) */
    uint64_t thr_seed;      /* random: picks a failure table set */
    pthread_mutex_t cache_mu;
    struct auth_cache_ent cache[AUTH_CACHE_SETS][AUTH_CACHE_WAYS];
    pthread_mutex_t thr_mu;
    struct auth_thr_ent thr[AUTH_THR_SETS][AUTH_THR_WAYS];
};

/* The user named @name (@len bytes) or NULL. */
const struct auth_user *vd_auth__user_find(const struct vd_auth *a, const char *name, size_t len);

#endif
