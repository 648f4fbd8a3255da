/* SPDX-License-Identifier: MIT */
/* Per-thread cache of small heap blocks in power-of-two size classes, for the objects a busy
 * connection allocates and frees on every request (HTTP/2 streams, nghttp2's and OpenSSL's
 * internal blocks, forwarding state). glibc's tcache keeps only 7 blocks per size, so with
 * 100 streams in flight most frees and mallocs fall through to its slower bins; here each
 * thread keeps up to 1 MiB per class (4 MiB in all). Blocks may be freed on another thread than the
 * one that allocated them. Builds with AddressSanitizer cache nothing (every free reaches libc, so
 * use-after-free is still caught); so does a process started with VD_MCACHE=0 (valgrind). */
#ifndef VD_MCACHE_H
#define VD_MCACHE_H

#include <stdbool.h>
#include <stddef.h>

/* malloc, calloc, realloc and free semantics; a block from one must go back through these. */
void *vd_mc_alloc(size_t n);
void *vd_mc_calloc(size_t nmemb, size_t size);
void *vd_mc_realloc(void *p, size_t n);
void vd_mc_free(void *p);

/* Reads VD_MCACHE from the environment; call once before threads start. */
void vd_mc_init(void);

/* Frees the blocks the calling thread kept unused since its previous call (none was taken from
 * a class while it held at least that many): a periodic call returns what a burst left behind
 * within two periods. Returns the bytes freed. */
size_t vd_mc_thread_trim(void);

/* Frees the calling thread's cached blocks and caches nothing more on it; call before the
 * thread exits. */
void vd_mc_thread_cleanup(void);

/* Blocks the calling thread holds in its cache (tests, statistics). */
size_t vd_mc_thread_cached(void);

/* False in sanitizer builds and with VD_MCACHE=0: every free reaches libc. */
bool vd_mc_caching(void);

#endif
