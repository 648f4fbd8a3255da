/* SPDX-License-Identifier: MIT */
/* Byte-class scans shared by the HTTP/1 parser and the URI parser, 16 bytes per step with SSE2. */
#ifndef VD_SCAN_H
#define VD_SCAN_H

#include <stdbool.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "vd/common.h"
#include "vd/http.h"

/* The first byte of [p, e) that may not be in a request-target (outside 0x21-0x7e, RFC 9112
 * §3.2), or, with @hash, that is '#' (no fragment in a path and query), or e. */
static VD_ALWAYS_INLINE const uint8_t *
vd_scan_target(const uint8_t *p, const uint8_t *e, bool hash)
{
#if defined(__SSE2__)
    /* Signed compare: 0x80-0xff are negative, so "< 0x21" also catches them. */
    const __m128i lo = _mm_set1_epi8(0x21), del = _mm_set1_epi8(0x7f), hs = _mm_set1_epi8('#');
    while (e - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i m = _mm_or_si128(_mm_cmplt_epi8(v, lo), _mm_cmpeq_epi8(v, del));
        if (hash) {
            m = _mm_or_si128(m, _mm_cmpeq_epi8(v, hs));
        }
        int bits = _mm_movemask_epi8(m);
        if (bits) {
            return p + __builtin_ctz((unsigned)bits);
        }
        p += 16;
    }
#endif
    while (p < e && (vd_http_ctype[*p] & VD_CT_TARGET) && !(hash && *p == '#')) {
        p++;
    }
    return p;
}

#endif
