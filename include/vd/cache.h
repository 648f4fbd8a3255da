/* SPDX-License-Identifier: MIT */
/* Shared HTTP cache (RFC 9111): the pure policy functions (Cache-Control and targeted fields,
 * storability, freshness, age, Vary, RFC 5861 staleness, Range), the per-process memory store
 * and its optional disk tier. The store is shared by every worker thread; entries are immutable
 * once inserted and reference-counted, so a reader keeps its entry alive while it sends it. The
 * disk tier (src/cache/disk.c) writes from a thread of its own; a lookup that misses memory may
 * read one file on the caller's thread. The proxy layer wires all of it to the forward handler. */
#ifndef VD_CACHE_H
#define VD_CACHE_H

#include <stdint.h>
#include <time.h>

#include "vd/buf.h"
#include "vd/common.h"
#include "vd/http.h"

/* Cache-Control directives (RFC 9111 §5.2) of a request or a response, all field lines
 * together. Delta-seconds are -1 when absent; a directive given twice keeps its first value
 * (§4.2.1); an invalid value of max-age / s-maxage reads as 0 (the response is stale, the most
 * restrictive reading); values above 2^31 are 2^31 (§1.2.2). Unknown directives are ignored. */
struct vd_cache_cc {
    int64_t max_age;
    int64_t s_maxage;
    int64_t max_stale; /* request; VD_CACHE_ANY_STALE for "max-stale" without a value */
    int64_t min_fresh; /* request */
    /* RFC 5861: seconds a stale response may still be used; -1 when absent or invalid (an
     * invalid value grants nothing, unlike max-age). stale-if-error is also a request one. */
    int64_t stale_while_revalidate;
    int64_t stale_if_error;
    bool no_store;
    bool no_cache; /* qualified no-cache="f" is treated as unqualified (allowed by §5.2.2.4) */
    bool private_; /* qualified private="f" is treated as unqualified (not stored at all) */
    bool public_;
    bool must_revalidate;
    bool proxy_revalidate;
    bool must_understand; /* RFC 9111 §5.2.2.3: store only statuses this cache understands */
    bool only_if_cached;
    bool no_transform;
    bool present;  /* any Cache-Control field line (or the targeted field) */
    bool targeted; /* from a targeted field (RFC 9213): Expires is ignored too */
};

#define VD_CACHE_ANY_STALE INT64_MAX
#define VD_CACHE_DELTA_MAX 2147483648LL

void vd_cache_cc_parse(const struct vd_hdr *h, size_t n, struct vd_cache_cc *cc);

/* Targeted cache-control field @name (lowercase, e.g. "cdn-cache-control"; RFC 9213 §2.1):
 * its field lines parsed as a Structured Fields Dictionary (RFC 8941 §3.2) whose members are
 * cache directives. Delta-seconds directives (max-age, s-maxage, stale-while-revalidate,
 * stale-if-error) must be non-negative Integers; the others Booleans, or for no-cache and
 * private also a String (treated as unqualified); parameters and unknown members are ignored;
 * a later member overrides an earlier one (Dictionary semantics, not §4.2.1's first-wins).
 * Returns 0 with @cc filled (present and targeted set), -ENOENT when the field is absent or
 * empty, -EINVAL when it does not parse or a known directive has the wrong type: either way the
 * field is to be ignored (§2.1). */
int vd_cache_targeted_parse(const struct vd_hdr *h, size_t n, const char *name,
                            struct vd_cache_cc *cc);

/* The first of the targeted fields @names (lowercase, in order of precedence) that is present,
 * non-empty and valid, parsed into @cc: true; false when none is (then @cc is unspecified and
 * Cache-Control governs). */
bool vd_cache_targeted_cc(const struct vd_hdr *h, size_t n, char *const *names, size_t nnames,
                          struct vd_cache_cc *cc);

/* The directives that govern a stored or received response for this cache (RFC 9213 §2.2): the
 * first of the targeted fields @names (lowercase, in order of precedence) that is present,
 * non-empty and valid, and then Cache-Control and Expires are ignored; else Cache-Control. */
void vd_cache_resp_cc(const struct vd_hdr *h, size_t n, char *const *names, size_t nnames,
                      struct vd_cache_cc *cc);

/* Request directives with Pragma: no-cache applied when the request has no Cache-Control
 * (RFC 9111 §5.4). */
void vd_cache_req_cc(const struct vd_hdr *h, size_t n, struct vd_cache_cc *cc);

/* Parses an HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, rfc850-date, asctime-date). Returns 0 and
 * *@out, or VD_EINVAL. */
int vd_http_date_parse(struct vd_iov v, time_t *out);

/* Why a response is or is not stored (for Cache-Status and tests). */
enum vd_cache_store_verdict {
    VD_CACHE_STORE_OK,
    VD_CACHE_NO_METHOD, /* not GET (HEAD responses are not stored: no body) */
    VD_CACHE_NO_STATUS, /* not final, 206 or 304 (never stored here), or must-understand with a
                         * status this cache does not know */
    VD_CACHE_NO_STORE,  /* no-store in the request or the response */
    VD_CACHE_PRIVATE,   /* private in a shared cache */
    VD_CACHE_AUTH,      /* Authorization without must-revalidate / public / s-maxage (§3.5) */
    VD_CACHE_NOT_WORTH, /* neither explicit freshness, validators, nor a heuristic status */
    VD_CACHE_VARY_STAR, /* Vary: * can never be matched */
};

/* RFC 9111 §3 for a shared cache. @method is the request method; @req_auth: the request has
 * Authorization. */
enum vd_cache_store_verdict vd_cache_storable(struct vd_iov method, int status,
                                              const struct vd_cache_cc *req,
                                              const struct vd_cache_cc *resp, bool req_auth,
                                              const struct vd_hdr *h, size_t n);

/* RFC 9110 §15.1: statuses cacheable by default (heuristically). */
bool vd_cache_status_heuristic(int status);

/* Freshness lifetime in seconds (RFC 9111 §4.2.1): s-maxage, then max-age, then Expires - Date
 * (an invalid Expires: 0; no Expires when @cc is from a targeted field); else a heuristic of 10% of
 * Date - Last-Modified capped at
 * @heuristic_max (§4.2.2) for heuristically cacheable statuses; else 0. @now stands in for a
 * missing Date. Sets *@heuristic when the heuristic was used. */
int64_t vd_cache_freshness(int status, const struct vd_cache_cc *cc, const struct vd_hdr *h,
                           size_t n, time_t now, int64_t heuristic_max, bool *heuristic);

/* The inputs of the age calculation (RFC 9111 §4.2.3), in seconds since the epoch. */
struct vd_cache_times {
    time_t request_time;  /* when the request that produced the stored response was sent */
    time_t response_time; /* when its response was received */
    time_t date_value;    /* its Date (response_time when absent or invalid) */
    int64_t age_value;    /* its Age (0 when absent or invalid) */
};

/* Fills @tm from the response fields and the two clock readings. */
void vd_cache_times_init(struct vd_cache_times *tm, const struct vd_hdr *h, size_t n,
                         time_t request_time, time_t response_time);

/* current_age at @now, exactly per RFC 9111 §4.2.3. */
int64_t vd_cache_current_age(const struct vd_cache_times *tm, time_t now);

/* How a stored response may serve a request. */
enum vd_cache_use {
    VD_CACHE_USE_FRESH,      /* serve it */
    VD_CACHE_USE_REVALIDATE, /* stale, or no-cache: ask the origin with a conditional */
};

/* Decides with the request's directives (max-age, min-fresh, max-stale, no-cache) and the
 * response's (no-cache, must-revalidate, proxy-revalidate, s-maxage). Stale responses are served
 * only within a request's max-stale and when the response allows it (§4.2.4). */
enum vd_cache_use vd_cache_usable(const struct vd_cache_cc *req, const struct vd_cache_cc *resp,
                                  int64_t lifetime, int64_t age);

/* RFC 5861 §4 (stale-if-error): true when the stored response may be served, fresh or stale,
 * because forwarding failed (no answer, or 500/502/503/504). Its staleness (@age past
 * @lifetime) must be within the response's or the request's stale-if-error window; must-revalidate,
 * proxy-revalidate and no-cache in the response forbid it (RFC 9111 §4.2.4). s-maxage does
 * not: its implied proxy-revalidate yields to the origin's explicit permission. */
bool vd_cache_stale_if_error(const struct vd_cache_cc *req, const struct vd_cache_cc *resp,
                             int64_t lifetime, int64_t age);

/* RFC 5861 §3 (stale-while-revalidate): true when the stale stored response may be served at
 * once while it is revalidated in the background: stale (@age at or past @lifetime) by at most
 * the response's window; not forbidden by the response (no-cache, must-revalidate,
 * proxy-revalidate; s-maxage yields, as for stale-if-error); and the request does not ask for
 * more (no-cache, max-age exceeded or 0, min-fresh). */
bool vd_cache_stale_while_revalidate(const struct vd_cache_cc *req, const struct vd_cache_cc *resp,
                                     int64_t lifetime, int64_t age);

/* Vary (RFC 9111 §4.1): writes the secondary key of a request for the field names listed in the
 * response's Vary fields: for each name (lowercased, in order) "name:" then the request's field
 * lines of that name combined with ", " and OWS-trimmed, then "\n". Returns 0, VD_EINVAL when
 * Vary contains "*" (never matches), or VD_ETOOBIG / VD_ENOMEM from @out. Names listed go to
 * @names ("a,b", lowercase) when not NULL. */
int vd_cache_vary_key(const struct vd_hdr *resp, size_t nresp, const struct vd_hdr *req,
                      size_t nreq, struct vd_dbuf *names, struct vd_dbuf *out);
/* The same from a stored name list ("a,b"). */
int vd_cache_vary_key_names(const char *names, const struct vd_hdr *req, size_t nreq,
                            struct vd_dbuf *out);

/* ---- Range requests over a stored response (RFC 9110 §14) ----------------------------------- */

/* One byte range, both ends included. */
struct vd_cache_range {
    uint64_t first;
    uint64_t last;
};

/* Parses the Range field value @v of a GET for a stored representation of @len bytes (RFC 9110
 * §14.1.1, §14.1.2, §14.2). Writes the satisfiable ranges to @out, sorted by position, with
 * overlapping and adjacent ones coalesced (§15.3.7.2 allows it), and returns how many (1 to
 * @max). Returns 0 when the field is to be ignored and the full response sent: a unit other
 * than "bytes", invalid syntax (including last-pos before first-pos), more than @max
 * range-specs (§14.2: a guard against many-small-ranges abuse), or @len 0. Returns -ERANGE when
 * the field is valid but no range is satisfiable (answer 416). */
int vd_cache_range_parse(struct vd_iov v, uint64_t len, struct vd_cache_range *out, size_t max);

/* If-Range (RFC 9110 §13.1.5) against the stored fields @h: true when the validator @v is a
 * strong entity-tag equal to the stored ETag (strong comparison, §8.8.3.2), or an HTTP-date
 * equal to the stored Last-Modified. A weak tag, an invalid value or a missing validator is
 * false (send the full response). */
bool vd_cache_if_range(struct vd_iov v, const struct vd_hdr *h, size_t n);

/* ---- memory store -------------------------------------------------------------------------- */

/* One stored response. Immutable once inserted; readers hold a reference. */
struct vd_cache_entry {
    char *key;      /* primary key "scheme://authority/path?query" */
    char *vary;     /* field names of Vary ("a,b"), "" when none */
    char *vary_key; /* secondary key of the request that stored it */
    int status;
    struct vd_hdr *hdrs; /* stored fields: end-to-end, without Age, Via, Content-Length */
    size_t nhdrs;
    uint8_t *body;   /* NULL for a file-backed entry (body_fd >= 0) */
    size_t body_len; /* bytes of the body, in memory or in the file */
    /* A file-backed entry (a large response read back from the disk tier): the body stays in
     * the file, open read-only at body_fd (owned by the entry, closed when it is freed), at
     * offset body_off. -1 otherwise. The file is never written again once visible (a newer
     * copy replaces it by rename), so the descriptor always reads the body that was verified. */
    int body_fd;
    uint64_t body_off;
    /* The same file mapped read-only (bytes 0 to body_off + body_len), or NULL when mmap failed.
     * Only the kernel may read it (write(2) from it): a file cut short behind viaduct's back
     * makes such a write fail with EFAULT, where a read in user space would raise SIGBUS. */
    const uint8_t *body_map;
    size_t map_len;
    /* A large body in memory (cache.memory_files): the bytes live in a sealed memory file
     * (memfd_create; writes, growth and shrinking sealed off, so nothing can change them) open at
     * body_memfd, and body is a read-only shared mapping of it (body_len bytes), so that a hit
     * reads it as memory or sends it with sendfile(2), which passes the pages to TCP instead
     * of copying them. -1 for a body in ordinary memory or a file-backed entry. */
    int body_memfd;
    struct vd_cache_times times;
    int64_t lifetime;      /* freshness lifetime, s */
    struct vd_cache_cc cc; /* the stored response's Cache-Control field alone; the proxy layer
                            * applies targeted fields (vd_cache_resp_cc) when it decides */
    size_t size;           /* bytes charged to the store */
    /* store-private */
    struct vd_cache_entry *parent; /* a view (disk tier): key, Vary, fields are the parent's */
    _Atomic int refs;
    _Atomic int64_t disk_touched; /* s: when the disk copy's last access was last recorded */
    bool linked;
    struct vd_cache_entry *hnext;
    struct vd_list lru;
    struct vd_list flru; /* file-backed entries in memory, most recent first */
};

struct vd_cache_limits {
    uint64_t memory;     /* total bytes; 0 disables the store */
    uint64_t max_object; /* bytes of one body */
    /* The disk tier; ignored while disk_path is NULL. */
    const char *disk_path; /* directory; borrowed for the call (copied when the tier opens) */
    uint64_t disk_size;    /* bytes of files, evicted by last access past it */
    uint64_t disk_objects; /* files (bounds the index in memory: about 130 bytes each) */
    uint64_t disk_queue;   /* bytes of responses waiting for the writer; more are not written */
    bool disk_fsync;       /* fsync each file (and its directory) before it becomes visible */
    /* A disk hit with a body of at least this many bytes becomes a file-backed entry (served
     * from the file, sendfile where the front can); 0: never, bodies are read into memory. */
    uint64_t sendfile_min;
    uint64_t sendfile_files; /* file-backed entries (open files) the memory tier keeps */
    /* Memory entries with a body of at least sendfile_min bytes kept in sealed memory files
     * (body_memfd), at most this many at once (one descriptor each); past it, or at 0, bodies
     * stay in ordinary memory. */
    uint64_t memory_files;
};

/* Sets the limits of the process-wide store (evicting to fit). Thread-safe. When @lim names a
 * disk directory, memory is not 0 and no disk tier is open, it opens one: the directory is
 * created when missing (not its parents), leftover temporary files are removed, and two
 * threads start, one that rebuilds the index from the files (entries become usable as it finds
 * them) and one that writes new entries. An open tier only takes the new size, object and queue
 * limits and fsync setting; another directory (or none) is logged and takes effect at the next
 * start (vd_cache_disk_close then configure again). A tier that cannot open is logged at err and
 * caching goes on in memory. */
void vd_cache_configure(const struct vd_cache_limits *lim);

struct vd_conf_cache;

/* Fills @lim from the `cache` configuration section; lim->disk_path borrows from @c. */
void vd_cache_limits_from_conf(struct vd_cache_limits *lim, const struct vd_conf_cache *c);

/* A digest of every value in @lim (the path's bytes, not its address): equal digests mean
 * vd_cache_configure has nothing to change (up to 64-bit FNV-1a collisions). */
uint64_t vd_cache_limits_digest(const struct vd_cache_limits *lim);

/* Builds an entry (not yet in the store; refs = 1) from copies of @h (the fields that must not
 * be stored are left out) and @body. NULL on allocation failure. */
struct vd_cache_entry *vd_cache_entry_new(const char *key, const char *vary, const char *vary_key,
                                          int status, const struct vd_hdr *h, size_t n,
                                          const uint8_t *body, size_t body_len,
                                          const struct vd_cache_times *tm, int64_t lifetime);

/* Inserts @e (takes the caller's reference), replacing an entry with the same key and secondary
 * key. Dropped (freed) when bigger than max_object or the store is disabled. With a disk tier
 * the entry is also queued for the writer thread (which keeps a reference until the file is
 * written); a full queue drops the disk copy only (counted). Never blocks on I/O. */
void vd_cache_insert(struct vd_cache_entry *e);

/* Finds the newest entry for @key whose Vary matches the request fields @req. Returns a new
 * reference or NULL; *@vary_miss is set when entries exist for @key but none matches. On a
 * memory miss the disk index is consulted: a disk hit reads and verifies the file with pread on
 * the calling thread (a worker loop; quick when the file is in the page cache), puts the entry
 * in memory and returns it. A file found damaged is deleted and never served. */
struct vd_cache_entry *vd_cache_lookup(const char *key, const struct vd_hdr *req, size_t nreq,
                                       bool *vary_miss);

/* Removes every entry (every Vary variant) of @key (invalidation, RFC 9111 §4.4; PURGE), in
 * memory and on disk (files are unlinked on the calling thread; writes still queued for @key are
 * cancelled). Returns how many distinct variants were removed. */
size_t vd_cache_invalidate(const char *key);

void vd_cache_entry_ref(struct vd_cache_entry *e);
void vd_cache_entry_unref(struct vd_cache_entry *e);

/* True when @e keeps its body in a disk-tier file (e->body_fd) rather than in memory. */
static inline bool
vd_cache_entry_in_file(const struct vd_cache_entry *e)
{
    return e->body_fd >= 0;
}

/* Copies @len bytes of @e's body from offset @off into @buf: from memory, or with pread from its
 * file (blocking on the calling thread; quick when the file is in the page cache). @off + @len
 * must not pass e->body_len. Returns 0, or -errno when the file cannot be read (-EIO when it
 * ends early); the caller then aborts the response. Never allocates. */
VD_MUST_CHECK int vd_cache_entry_read(const struct vd_cache_entry *e, uint64_t off, uint8_t *buf,
                                      size_t len);

/* Figures for tests and logs. */
struct vd_cache_stats {
    uint64_t bytes;
    uint64_t entries;
    uint64_t evictions;
    uint64_t files;        /* file-backed entries among them (open descriptors) */
    uint64_t memory_files; /* entries alive with a body in a memory file (body_memfd) */
};

void vd_cache_get_stats(struct vd_cache_stats *st);

/* Empties the memory store (tests, shutdown) and closes the files the disk tier keeps open for
 * hits (cache.sendfile_files); the disk tier keeps its files. */
void vd_cache_clear(void);

/* ---- disk tier ----------------------------------------------------------------------------- */

struct vd_cache_disk_stats {
    bool open;
    bool scanning;         /* the start-up scan is still indexing files */
    uint64_t objects;      /* files in the index */
    uint64_t bytes;        /* their sizes */
    uint64_t scanned;      /* files the start-up scan indexed */
    uint64_t queued;       /* entries waiting for the writer */
    uint64_t writes;       /* files written */
    uint64_t write_errors; /* writes that failed (disk full, I/O error) */
    uint64_t queue_drops;  /* entries not written because the queue was full */
    uint64_t hits;         /* lookups answered from a file */
    uint64_t corrupt;      /* damaged files deleted (bad magic, lengths, checksum) */
    uint64_t evictions;    /* files removed to fit disk_size / disk_objects */
    uint64_t open_files;   /* verified files kept open for hits (at most sendfile_files) */
};

void vd_cache_disk_get_stats(struct vd_cache_disk_stats *st);

/* Blocks until every entry queued before the call has been written (or dropped). Tests. */
void vd_cache_disk_flush(void);

/* Blocks until the start-up scan has finished. Tests and measurements. */
void vd_cache_disk_wait_scan(void);

/* Closes the disk tier: stops the scan, lets the writer finish what is queued, joins both
 * threads and frees the index. The files stay. No other thread may use the cache meanwhile
 * (shutdown after the workers stopped, tests). A no-op when no tier is open. */
void vd_cache_disk_close(void);

/* True when the last vd_cache_configure could not open the disk tier because another viaduct
 * process holds its directory (during a binary upgrade, the process being replaced). */
bool vd_cache_disk_busy(void);

/* Opens the disk tier named by @lim if it is still not open because its directory was busy.
 * Returns false while it still is (nothing logged), true once there is nothing left to wait
 * for: opened (logged at notice), failed otherwise (logged at err), or not wanted. */
bool vd_cache_disk_retry(const struct vd_cache_limits *lim);

#endif
