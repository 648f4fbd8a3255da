/* SPDX-License-Identifier: MIT */
/* Error log writer. One write(2) per line keeps lines whole across worker threads. */
#include "vd/config.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vd/log.h"

int vd_log_level_max = VD_LOG_INFO;
uint32_t vd_trace_mask;
static atomic_int log_fd = 2;

static const char *const level_names[] = {"emerg", "alert",  "crit", "error",
                                          "warn",  "notice", "info", "debug"};

static const char *const sub_names[VD_SUB_MAX] = {"loop",  "net", "tls", "h1",
                                                  "proxy", "dns", "conf"};

void
vd_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

const char *
vd_log_level_name(int level)
{
    if (level < 0 || level >= (int)VD_ARRAY_LEN(level_names)) {
        return "?";
    }
    return level_names[level];
}

int
vd_log_level_parse(const char *name)
{
    for (size_t i = 0; i < VD_ARRAY_LEN(level_names); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            return (int)i;
        }
    }
    if (strcmp(name, "err") == 0) {
        return VD_LOG_ERR;
    }
    return -1;
}

uint32_t
vd_trace_parse(const char *spec)
{
    uint32_t mask = 0;
    const char *p = spec;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 3 && memcmp(p, "all", 3) == 0) {
            mask = (1u << VD_SUB_MAX) - 1;
        }
        for (int i = 0; i < VD_SUB_MAX; i++) {
            if (strlen(sub_names[i]) == n && memcmp(p, sub_names[i], n) == 0) {
                mask |= 1u << i;
            }
        }
        p = e ? e + 1 : NULL;
    }
    return mask;
}

size_t
vd_log_escape_as(char *dst, size_t cap, const uint8_t *src, size_t len, bool json)
{
    static const char hex[] = "0123456789abcdef";
    /* Text logs write \xHH; JSON has no \x escape, so it gets \u00HH and stays valid. */
    const char *pre = json ? "\\u00" : "\\x";
    size_t plen = json ? 4 : 2;
    size_t o = 0;
    if (cap == 0) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t c = src[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            if (o + 1 >= cap) {
                break;
            }
            dst[o++] = (char)c;
        } else {
            if (o + plen + 2 >= cap) {
                break;
            }
            memcpy(dst + o, pre, plen);
            o += plen;
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    dst[o] = '\0';
    return o;
}

void
vd_log_vwrite(int level, const struct vd_log_ctx *ctx, const char *fmt, va_list ap)
{
    static _Thread_local char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int r;

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y/%m/%d %H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, " [%s] ", vd_log_level_name(level));
    n += (size_t)(r > 0 ? r : 0);
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (r > 0) {
        n = VD_MIN(n + (size_t)r, sizeof(line) - 1);
    }
    if (ctx && (ctx->conn_id || ctx->peer || ctx->action)) {
        r = snprintf(line + n, sizeof(line) - n, " (");
        n = VD_MIN(n + (size_t)(r > 0 ? r : 0), sizeof(line) - 1);
        const char *sep = "";
        if (ctx->conn_id) {
            r = snprintf(line + n, sizeof(line) - n, "conn %llu", (unsigned long long)ctx->conn_id);
            n = VD_MIN(n + (size_t)(r > 0 ? r : 0), sizeof(line) - 1);
            sep = ", ";
        }
        if (ctx->stream_id) {
            r = snprintf(line + n, sizeof(line) - n, "%sstream %u", sep, ctx->stream_id);
            n = VD_MIN(n + (size_t)(r > 0 ? r : 0), sizeof(line) - 1);
            sep = ", ";
        }
        if (ctx->peer) {
            r = snprintf(line + n, sizeof(line) - n, "%sclient %s", sep, ctx->peer);
            n = VD_MIN(n + (size_t)(r > 0 ? r : 0), sizeof(line) - 1);
            sep = ", ";
        }
        if (ctx->action) {
            r = snprintf(line + n, sizeof(line) - n, "%s%s", sep, ctx->action);
            n = VD_MIN(n + (size_t)(r > 0 ? r : 0), sizeof(line) - 1);
        }
        if (n < sizeof(line) - 1) {
            line[n++] = ')';
        }
    }
    if (n >= sizeof(line) - 1) {
        n = sizeof(line) - 2;
    }
    line[n++] = '\n';
    /* A short or failed write of a log line has nowhere better to be reported. */
    ssize_t w = write(atomic_load(&log_fd), line, n);
    (void)w;
}

void
vd_log_write(int level, const struct vd_log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vd_log_vwrite(level, ctx, fmt, ap);
    va_end(ap);
}

void
vd__bug(const char *file, int line, const char *cond)
{
    vd_log_write(VD_LOG_ALERT, NULL, "BUG at %s:%d: %s", file, line, cond);
    abort();
}
