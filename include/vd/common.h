/* SPDX-License-Identifier: MIT */
/* Shared macros for every module: attributes, invariant checks, containers.
 * Included (through vd/config.h) first by every .c file. */
#ifndef VD_COMMON_H
#define VD_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VD_MUST_CHECK       __attribute__((warn_unused_result))
#define VD_PRINTF(fmt, arg) __attribute__((format(printf, fmt, arg)))
#define VD_NORETURN         __attribute__((noreturn))
#define VD_UNUSED           __attribute__((unused))
#define VD_LIKELY(x)        __builtin_expect(!!(x), 1)
#define VD_UNLIKELY(x)      __builtin_expect(!!(x), 0)
/* For small helpers whose cost is all in the call unless the compiler sees the constants they
 * are called with (gcc -O2 leaves some of them out of line). */
#define VD_ALWAYS_INLINE __attribute__((always_inline)) inline
#define VD_ARRAY_LEN(a)  (sizeof(a) / sizeof((a)[0]))
#define VD_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define VD_MAX(a, b)     ((a) > (b) ? (a) : (b))

#define VD_CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Invariant check kept in release builds: logs at alert and aborts. Never use it on peer input. */
VD_NORETURN void vd__bug(const char *file, int line, const char *cond);
#define VD_BUG_ON(cond)                                                                            \
    do {                                                                                           \
        if (VD_UNLIKELY(cond)) {                                                                   \
            vd__bug(__FILE__, __LINE__, #cond);                                                    \
        }                                                                                          \
    } while (0)

/* Intrusive doubly linked list (circular, with a sentinel head). */
struct vd_list {
    struct vd_list *prev, *next;
};

static inline void
vd_list_init(struct vd_list *l)
{
    l->prev = l->next = l;
}

static inline bool
vd_list_empty(const struct vd_list *l)
{
    return l->next == l;
}

static inline void
vd_list_insert_tail(struct vd_list *head, struct vd_list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void
vd_list_insert_head(struct vd_list *head, struct vd_list *n)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}

/* Removes @n from its list; @n is left self-linked so removing twice is harmless. */
static inline void
vd_list_remove(struct vd_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* A borrowed view of bytes (never owns its memory). */
struct vd_iov {
    const uint8_t *base;
    size_t len;
};

#define VD_IOV_LIT(s) ((struct vd_iov){(const uint8_t *)(s), sizeof(s) - 1})
#define VD_IOV_NULL   ((struct vd_iov){NULL, 0})

#endif
