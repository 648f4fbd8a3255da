/* SPDX-License-Identifier: MIT */
/* Between the memory store (store.c) and the disk tier (disk.c). Lock order: the disk tier's
 * mutex, then the memory store's; never the other way round. */
#ifndef VD_CACHE_INT_H
#define VD_CACHE_INT_H

#include "vd/cache.h"

/* vd_cache_entry_new, but takes ownership of @body (malloc'd, @body_len bytes; NULL when 0):
 * it becomes e->body, or is freed when the entry cannot be built (then NULL). */
struct vd_cache_entry *vd__cache_entry_new_owned(const char *key, const char *vary,
                                                 const char *vary_key, int status,
                                                 const struct vd_hdr *h, size_t n, uint8_t *body,
                                                 size_t body_len, const struct vd_cache_times *tm,
                                                 int64_t lifetime);

/* A file-backed entry (vd_cache_entry_in_file): the body is the @body_len bytes at @body_off in
 * @fd, which the entry takes over (closed with it, or at once when it cannot be built: then
 * NULL). Only the fields and bookkeeping are charged to the memory tier. @map: also map the file
 * (body_map), for a body that hits will send from the file rather than read. */
struct vd_cache_entry *vd__cache_entry_new_file(const char *key, const char *vary,
                                                const char *vary_key, int status,
                                                const struct vd_hdr *h, size_t n, int fd,
                                                uint64_t body_off, size_t body_len, bool map,
                                                const struct vd_cache_times *tm, int64_t lifetime);

/* A view of @parent (a file-backed entry, which it references): @parent's key, Vary and fields
 * with @body (malloc'd, @body_len bytes, owned: freed with the view or at once on failure) in
 * memory. Charged as @parent's size plus @body_len; never kept by the memory tier (it would
 * hold @parent's descriptor), so it lives for one hit. NULL when out of memory. */
struct vd_cache_entry *vd__cache_entry_new_view(struct vd_cache_entry *parent, uint8_t *body,
                                                size_t body_len);

/* True when the memory tier would keep an entry of @size bytes charged with a @body_len-byte
 * body under its current limits (a hint: they may change before the insert). */
bool vd__cache_mem_would_keep(size_t size, size_t body_len);

/* Inserts @e (takes the caller's reference) into the memory tier only. A file-backed entry
 * past sendfile_files evicts the least recently used file-backed one (0: it is dropped). */
void vd__cache_mem_insert(struct vd_cache_entry *e);

/* Removes every memory entry of @key; returns how many had an id not among @ids (the variants
 * the disk tier already counted). */
size_t vd__cache_mem_invalidate(const char *key, const uint64_t *ids, size_t nids);

/* The disk identities of a stored response: @pk from the primary key alone, @id from the key,
 * the Vary names and the secondary key (the first 64 bits of SHA-256 of each). False when
 * hashing failed (allocation). */
bool vd__cache_ids(const char *key, const char *vary, const char *vary_key, uint64_t *pk,
                   uint64_t *id);

/* True while a disk tier is open (a relaxed read: open and close happen with no users). */
bool vd__disk_on(void);

/* vd_cache_configure's disk part. */
void vd__disk_configure(const struct vd_cache_limits *lim);

/* vd_cache_insert with a disk tier: queues @e for the writer (a reference) and inserts it into
 * memory, both under the disk mutex so that an invalidation sees both or neither. */
void vd__disk_insert(struct vd_cache_entry *e);

/* vd_cache_lookup's disk part after a memory miss: a new reference or NULL; sets *@vary_miss
 * when files exist for @key but none matches the request. */
struct vd_cache_entry *vd__disk_lookup(const char *key, const struct vd_hdr *req, size_t nreq,
                                       bool *vary_miss);

/* vd_cache_invalidate with a disk tier (disk part, then memory). */
size_t vd__disk_invalidate(const char *key);

/* Closes the files the disk tier keeps open for hits (its open-file table): their next hits
 * open and verify them in full again. */
void vd__disk_forget_open(void);

/* Records a memory hit on @e as an access of its file (for the disk LRU); @now in s. */
void vd__disk_touch(const struct vd_cache_entry *e, int64_t now);

#endif
