/* SPDX-License-Identifier: MIT */
/* Failure throttle: authentication failures counted per client address in a fixed window that
 * opens at the first failure. The table is bounded (set-associative, the oldest window evicted),
 * so a flood of addresses costs memory once, not per address. */
#include "vd/config.h"

#include <netinet/in.h>
#include <string.h>

#include "auth-int.h"

/* The client's address as 16 bytes; IPv4 and IPv4-mapped IPv6 give the same key. An IPv6
 * client counts by its /64: one host is usually given a whole /64 (RFC 7421), so counting single
 * addresses would let it take a fresh one for every few guesses. Returns false for other
 * families (not counted). */
static bool
addr_key(const struct sockaddr *sa, uint8_t key[16])
{
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        memset(key, 0, 10);
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &s4->sin_addr, 4);
        return true;
    }
    if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(key, &s6->sin6_addr, 16);
        if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            memset(key + 8, 0, 8);
        }
        return true;
    }
    return false;
}

static struct auth_thr_ent *
thr_set(struct vd_auth *a, const uint8_t key[16])
{
    /* FNV-1a from a random seed: clients cannot pick addresses that share one set. */
    uint64_t h = 0xcbf29ce484222325ULL ^ a->thr_seed;
    for (size_t i = 0; i < 16; i++) {
        h = (h ^ key[i]) * 0x100000001b3ULL;
    }
    h ^= h >> 29;
    return a->thr[h % AUTH_THR_SETS];
}

static bool
window_open(const struct vd_auth *a, const struct auth_thr_ent *e, uint64_t now_ms)
{
    /* Written without start + window, which a huge window would overflow. */
    return e->used && (now_ms < e->start || now_ms - e->start < a->params.fail_window);
}

bool
vd_auth_throttled(struct vd_auth *a, const struct sockaddr *client, uint64_t now_ms,
                  uint64_t *retry_ms)
{
    uint8_t key[16];
    bool hit = false;
    if (a->params.fail_limit == 0 || !addr_key(client, key)) {
        return false;
    }
    pthread_mutex_lock(&a->thr_mu);
    struct auth_thr_ent *set = thr_set(a, key);
    for (size_t i = 0; i < AUTH_THR_WAYS; i++) {
        struct auth_thr_ent *e = &set[i];
        if (e->used && memcmp(e->addr, key, 16) == 0) {
            if (window_open(a, e, now_ms) && e->count >= a->params.fail_limit) {
                hit = true;
                if (retry_ms) {
                    uint64_t gone = now_ms > e->start ? now_ms - e->start : 0;
                    *retry_ms = a->params.fail_window - gone;
                }
            }
            break;
        }
    }
    pthread_mutex_unlock(&a->thr_mu);
    return hit;
}

void
vd_auth_record_failure(struct vd_auth *a, const struct sockaddr *client, uint64_t now_ms)
{
    uint8_t key[16];
    if (a->params.fail_limit == 0 || !addr_key(client, key)) {
        return;
    }
    pthread_mutex_lock(&a->thr_mu);
    struct auth_thr_ent *set = thr_set(a, key), *slot = NULL;
    for (size_t i = 0; i < AUTH_THR_WAYS; i++) {
        struct auth_thr_ent *e = &set[i];
        if (e->used && memcmp(e->addr, key, 16) == 0) {
            slot = e;
            break;
        }
        /* Otherwise a free or closed slot, else the one whose window opened first. */
        if (!slot || (window_open(a, slot, now_ms) &&
                      (!window_open(a, e, now_ms) || e->start < slot->start))) {
            slot = e;
        }
    }
    if (slot->used && memcmp(slot->addr, key, 16) == 0 && window_open(a, slot, now_ms)) {
        if (slot->count < UINT32_MAX) {
            slot->count++;
        }
    } else {
        memcpy(slot->addr, key, 16);
        slot->used = true;
        slot->count = 1;
        slot->start = now_ms;
    }
    pthread_mutex_unlock(&a->thr_mu);
}
