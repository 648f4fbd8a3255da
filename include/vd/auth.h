/* SPDX-License-Identifier: MIT */
/* Proxy authentication (Basic, RFC 7617) against an htpasswd file: bcrypt ($2y$, $2b$, $2a$),
 * sha512-crypt ($6$), sha256-crypt ($5$) and, where libcrypt has it, yescrypt ($y$) hashes
 * verified with libcrypt's crypt_r. Verified credentials are cached by a salted hash of the
 * credential (never the password) for a TTL, so the slow hash runs once per TTL; failures are
 * counted per client address. One struct vd_auth per configuration snapshot, shared by every
 * worker thread (internal locking). */
#ifndef VD_AUTH_H
#define VD_AUTH_H

#include <stdint.h>
#include <sys/socket.h>

#include "vd/common.h"

struct vd_auth;

#define VD_AUTH_USER_MAX 256 /* user names longer than this are rejected */

struct vd_auth_params {
    uint64_t cache_ttl;   /* ms; 0 disables the cache */
    uint32_t fail_limit;  /* 0 disables throttling */
    uint64_t fail_window; /* ms */
};

/* Loads @path ("user:hash" lines; blank lines and '#' comments skipped). Errors: "PATH:LINE:
 * user 'bob': unsupported hash ($apr1$ MD5); use htpasswd -B or openssl passwd -6" and the like,
 * written to @err; returns VD_ECONF (or VD_ENOMEM). *@out on success. */
VD_MUST_CHECK int vd_auth_load(const char *path, const struct vd_auth_params *p,
                               struct vd_auth **out, char *err, size_t errlen);
void vd_auth_free(struct vd_auth *a);

enum vd_auth_result {
    VD_AUTH_OK,      /* credentials valid: @user filled */
    VD_AUTH_MISSING, /* no Proxy-Authorization, or not the Basic scheme */
    VD_AUTH_BAD,     /* malformed, unknown user, or wrong password */
    VD_AUTH_VERIFY,  /* well-formed and not cached: call vd_auth_verify (slow: thread pool) */
};

/* Fast path, on the loop thread: parses @value (the Proxy-Authorization field value, or NULL
 * when absent) and looks the credential up in the cache. Never runs the password hash. On
 * VD_AUTH_OK copies the user name into @user (capacity VD_AUTH_USER_MAX + 1). */
enum vd_auth_result vd_auth_check(struct vd_auth *a, const uint8_t *value, size_t len,
                                  uint64_t now_ms, char *user);

/* Slow path, safe on any thread (run it in uv_queue_work): decodes, finds the user, runs
 * crypt_r and compares in constant time; on success caches the credential and fills @user.
 * Returns VD_AUTH_OK or VD_AUTH_BAD. An unknown user costs the same hash as a known one. */
enum vd_auth_result vd_auth_verify(struct vd_auth *a, const uint8_t *value, size_t len,
                                   uint64_t now_ms, char *user);

/* Failure throttle: true when @client has had fail_limit failures within fail_window (then
 * *@retry_ms is the time until the oldest counted failure leaves the window). */
bool vd_auth_throttled(struct vd_auth *a, const struct sockaddr *client, uint64_t now_ms,
                       uint64_t *retry_ms);
/* Counts one failure (a VD_AUTH_BAD; a missing header is not a failure). */
void vd_auth_record_failure(struct vd_auth *a, const struct sockaddr *client, uint64_t now_ms);

#endif
