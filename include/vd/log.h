/* SPDX-License-Identifier: MIT */
/* Error log: levels (nginx), a context that names the connection, stream, peer and action,
 * and named trace subsystems that cost one branch when off. Writers never block on a lock:
 * each line is formatted in a thread-local buffer and written with one write(2). */
#ifndef VD_LOG_H
#define VD_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "vd/common.h"

enum vd_log_level {
    VD_LOG_EMERG,
    VD_LOG_ALERT, /* a viaduct bug; any alert fails the tests */
    VD_LOG_CRIT,
    VD_LOG_ERR,    /* local or operator problem */
    VD_LOG_WARN,   /* upstream trouble */
    VD_LOG_NOTICE, /* lifecycle: start, reload, stop */
    VD_LOG_INFO,   /* client misbehaviour */
    VD_LOG_DEBUG,
};

/* Trace subsystems, enabled by config or VIADUCT_TRACE=h1,proxy. */
enum vd_trace_sub {
    VD_SUB_LOOP,
    VD_SUB_NET,
    VD_SUB_TLS,
    VD_SUB_H1,
    VD_SUB_PROXY,
    VD_SUB_DNS,
    VD_SUB_CONF,
    VD_SUB_MAX,
};

struct vd_log_ctx {
    uint64_t conn_id;   /* 0 when none */
    uint32_t stream_id; /* 0 when none */
    const char *peer;   /* borrowed; "1.2.3.4:5678" or NULL */
    const char *action; /* borrowed static string: "while connecting to upstream" */
};

extern int vd_log_level_max;   /* lines above this level are dropped */
extern uint32_t vd_trace_mask; /* bit per enum vd_trace_sub */

/* Directs the error log to @fd (not owned; default 2). Thread-safe with respect to writers. */
void vd_log_set_fd(int fd);

/* Parses "h1,proxy,tls" or "all" into a mask; unknown names are ignored. */
uint32_t vd_trace_parse(const char *spec);

/* Parses a level name ("info"); returns the level or -1. */
int vd_log_level_parse(const char *name);

const char *vd_log_level_name(int level);

/* Writes one line: "2026/11/23 19:50:03 [warn] #12: upstream closed early (conn 7, client
 * 127.0.0.1:5555, while reading response)". @ctx may be NULL. */
void vd_log_write(int level, const struct vd_log_ctx *ctx, const char *fmt, ...) VD_PRINTF(3, 4);
void vd_log_vwrite(int level, const struct vd_log_ctx *ctx, const char *fmt, va_list ap)
    VD_PRINTF(3, 0);

#define vd_log(level, ctx, ...)                                                                    \
    do {                                                                                           \
        if ((int)(level) <= vd_log_level_max) {                                                    \
            vd_log_write((level), (ctx), __VA_ARGS__);                                             \
        }                                                                                          \
    } while (0)

#define VD_TRACE(ctx, sub, ...)                                                                    \
    do {                                                                                           \
        if (VD_UNLIKELY(vd_trace_mask & (1u << (sub)))) {                                          \
            vd_log_write(VD_LOG_DEBUG, (ctx), __VA_ARGS__);                                        \
        }                                                                                          \
    } while (0)

/* Copies @len bytes of peer-controlled @src into @dst (capacity @cap, always NUL-terminated),
 * escaping bytes outside 0x20..0x7e, '"' and '\\' as \xHH, or as \u00HH when @json is set
 * (so the result can sit inside a JSON string). An escape is never cut in half by the cap.
 * Returns the length written. */
size_t vd_log_escape_as(char *dst, size_t cap, const uint8_t *src, size_t len, bool json);

static inline size_t
vd_log_escape(char *dst, size_t cap, const uint8_t *src, size_t len)
{
    return vd_log_escape_as(dst, cap, src, len, false);
}

#endif
