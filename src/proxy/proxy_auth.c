/* SPDX-License-Identifier: MIT */
/* Proxy authentication in the request path (RFC 9110 §11.7.1, RFC 7617 Basic): a cached
 * credential passes at once; an unknown one is verified on libuv's thread pool so a slow
 * password hash never stalls the loop; failures are answered 407 (delayed, or 429, once an
 * address has failed too often). Proxy-Authorization is never forwarded (forward.c drops it as
 * hop-by-hop) and never logged. */
#include "vd/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vd/auth.h"
#include "vd/err.h"
#include "vd/proxy.h"

#define AUTHW_MAGIC 0x41555731u

struct authw {
    uint32_t magic;
    uv_work_t work;
    uv_timer_t timer;
    struct vd_txn *t;     /* NULL once the exchange went away */
    struct vd_conf *conf; /* reference: keeps the user database alive for the worker thread */
    void (*next)(struct vd_txn *t);
    uint8_t *value;
    size_t len;
    uint64_t now;
    enum vd_auth_result res;
    char user[VD_AUTH_USER_MAX + 1];
    bool timer_init;
    bool queued; /* on the thread pool: verify_done frees it */
};

static void
authw_free_mem(uv_handle_t *h)
{
    struct authw *a = h->data;
    vd_conf_unref(a->conf);
    free(a->value);
    a->magic = 0;
    free(a);
}

static void
authw_free(struct authw *a)
{
    if (a->timer_init) {
        uv_close((uv_handle_t *)&a->timer, authw_free_mem);
        return;
    }
    a->timer.data = a;
    authw_free_mem((uv_handle_t *)&a->timer);
}

/* Ends the wait: the exchange gets no handler, @a is freed; returns the exchange. */
static struct vd_txn *
authw_detach(struct authw *a)
{
    struct vd_txn *t = a->t;
    t->handler = NULL;
    t->handler_data = NULL;
    a->t = NULL;
    authw_free(a);
    return t;
}

static void
respond_407(struct vd_txn *t, const char *detail)
{
    char ch[300];
    int n = snprintf(ch, sizeof(ch), "Basic realm=\"%s\", charset=\"UTF-8\"", t->conf->auth.realm);
    struct vd_hdr h[1] = {{VD_IOV_LIT("Proxy-Authenticate"), {(const uint8_t *)ch, (size_t)n}}};
    vd_txn_respond_with(t, 407, h, 1, detail, false);
}

static void
respond_429(struct vd_txn *t, uint64_t retry_ms)
{
    char ra[24];
    int n = snprintf(ra, sizeof(ra), "%llu", (unsigned long long)((retry_ms + 999) / 1000));
    struct vd_hdr h[1] = {{VD_IOV_LIT("Retry-After"), {(const uint8_t *)ra, (size_t)n}}};
    vd_log(VD_LOG_WARN, &t->log, "proxy authentication refused: too many failures from %s",
           t->client_text);
    vd_txn_respond_with(t, 429, h, 1, "too many failed proxy authentication attempts", true);
}

static void
authw_abort(struct vd_txn *t)
{
    struct authw *a = t->handler_data;
    VD_BUG_ON(a->magic != AUTHW_MAGIC);
    t->handler = NULL;
    t->handler_data = NULL;
    a->t = NULL;
    if (a->timer_init) {
        uv_timer_stop(&a->timer);
    }
    if (!a->queued) {
        authw_free(a); /* not on the thread pool: nothing else refers to it */
    }
}

static ssize_t
authw_body(struct vd_txn *t, const uint8_t *p, size_t len, bool end)
{
    (void)p;
    (void)end;
    (void)t;
    (void)len;
    /* Nothing accepted: the body stays in the client's buffer until the handler that follows
     * authentication resumes it (as the forward handler does once connected). */
    return 0;
}

static void
authw_writable(struct vd_txn *t)
{
    (void)t;
}

static const struct vd_handler_ops authw_ops = {
    .name = "auth",
    .on_req_body = authw_body,
    .on_writable = authw_writable,
    .on_abort = authw_abort,
};

static void
delayed_407(uv_timer_t *tm)
{
    respond_407(authw_detach(tm->data), "wrong proxy credentials");
}

/* A failed verification: counted, then 407 at once, or after fail_delay once the address is
 * over the limit (delay mode). */
static void
auth_failed(struct vd_txn *t, struct authw *a)
{
    const struct vd_conf_auth *ac = &t->conf->auth;
    uint64_t now = uv_now(&t->w->loop), retry = 0;
    vd_auth_record_failure(ac->db, t->client, now);
    vd_log(VD_LOG_INFO, &t->log, "proxy authentication failed");
    bool thr = ac->fail_limit && vd_auth_throttled(ac->db, t->client, now, &retry);
    if (thr && ac->fail_mode == VD_AUTH_FAIL_DELAY && ac->fail_delay) {
        if (!a) {
            a = calloc(1, sizeof(*a));
            if (!a) {
                respond_407(t, "wrong proxy credentials");
                return;
            }
            a->magic = AUTHW_MAGIC;
            a->conf = vd_conf_ref(t->conf);
            a->t = t;
            t->handler = &authw_ops;
            t->handler_data = a;
        }
        a->res = VD_AUTH_BAD;
        uv_timer_init(&t->w->loop, &a->timer);
        a->timer.data = a;
        a->timer_init = true;
        uv_timer_start(&a->timer, delayed_407, ac->fail_delay, 0);
        return;
    }
    if (a) {
        authw_detach(a);
    }
    respond_407(t, "wrong proxy credentials");
}

static void
verify_work(uv_work_t *w)
{
    struct authw *a = w->data;
    a->res = vd_auth_verify(a->conf->auth.db, a->value, a->len, a->now, a->user);
}

static void
verify_done(uv_work_t *w, int status)
{
    struct authw *a = w->data;
    struct vd_txn *t = a->t;
    a->queued = false;
    if (!t) {
        authw_free(a);
        return;
    }
    if (status == 0 && a->res == VD_AUTH_OK) {
        t->user = vd_arena_dup(&t->arena, a->user, strlen(a->user));
        void (*next)(struct vd_txn *) = a->next;
        authw_detach(a);
        if (!t->user) {
            vd_txn_respond_error(t, 503, "out of memory", true);
            return;
        }
        next(t);
        return;
    }
    a->res = VD_AUTH_BAD;
    auth_failed(t, a);
}

void
vd_txn_auth(struct vd_txn *t, void (*next)(struct vd_txn *t))
{
    const struct vd_conf_auth *ac = &t->conf->auth;
    uint64_t now = uv_now(&t->w->loop), retry = 0;
    const struct vd_hdr *h = NULL;
    size_t nh = 0;
    for (size_t i = 0; i < t->req.nhdrs; i++) {
        if (vd_hdr_name_is(t->req.hdrs[i].name, "proxy-authorization")) {
            h = &t->req.hdrs[i];
            nh++;
        }
    }
    if (ac->fail_limit && ac->fail_mode == VD_AUTH_FAIL_REFUSE &&
        vd_auth_throttled(ac->db, t->client, now, &retry)) {
        respond_429(t, retry);
        return;
    }
    if (nh > 1) {
        auth_failed(t, NULL);
        return;
    }
    char user[VD_AUTH_USER_MAX + 1];
    enum vd_auth_result r =
        vd_auth_check(ac->db, h ? h->value.base : NULL, h ? h->value.len : 0, now, user);
    switch (r) {
    case VD_AUTH_OK:
        t->user = vd_arena_dup(&t->arena, user, strlen(user));
        if (!t->user) {
            vd_txn_respond_error(t, 503, "out of memory", true);
            return;
        }
        next(t);
        return;
    case VD_AUTH_MISSING:
        respond_407(t, "proxy authentication required");
        return;
    case VD_AUTH_BAD:
        auth_failed(t, NULL);
        return;
    case VD_AUTH_VERIFY:
        break;
    }
    struct authw *a = calloc(1, sizeof(*a));
    if (a) {
        a->value = malloc(h->value.len);
    }
    if (!a || !a->value) {
        free(a);
        vd_txn_respond_error(t, 503, "out of memory", true);
        return;
    }
    a->magic = AUTHW_MAGIC;
    memcpy(a->value, h->value.base, h->value.len);
    a->len = h->value.len;
    a->now = now;
    a->next = next;
    a->t = t;
    a->conf = vd_conf_ref(t->conf);
    a->res = VD_AUTH_VERIFY;
    a->work.data = a;
    t->handler = &authw_ops;
    t->handler_data = a;
    a->queued = true;
    if (uv_queue_work(&t->w->loop, &a->work, verify_work, verify_done) < 0) {
        a->queued = false;
        t->handler = NULL;
        t->handler_data = NULL;
        a->res = VD_AUTH_BAD;
        authw_free(a);
        vd_txn_respond_error(t, 503, "cannot verify credentials now", true);
    }
}
