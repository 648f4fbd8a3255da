/* SPDX-License-Identifier: MIT */
/* The disk tier of the shared cache: one file per stored response under cache.disk_path, so
 * that the cache survives a restart. Files are written by one writer thread from a bounded
 * queue (workers never wait for the disk on insert), made visible by rename(2) only once
 * complete, indexed in memory (id, size, last access) and rebuilt at start by a scan thread
 * from the file names while the proxy already serves. A file is verified in full (magic,
 * lengths, CRC-32C of the head and of the body, its key) when it is opened, and deleted when
 * bad. Up to sendfile_files verified files stay open (the open-file table: descriptor, parsed
 * fields, body CRC), so that a later hit neither opens nor parses it again: it checks with fstat
 * that the file still has its inode, size and a name, then reads a small body with one pread and
 * checks its CRC again, or sends a large one (sendfile_min) from the descriptor as verified at
 * open. A large body is not read into memory: the entry keeps the open file and the proxy sends
 * from it (sendfile on plain connections). */
#include "vd/config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "cache-int.h"
#include "vd/err.h"
#include "vd/log.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

/* ---- file format ---------------------------------------------------------------------------
 * All integers little-endian. A file is exactly HDR_LEN + meta_len + body_len bytes:
 *
 *   0  u32 magic "VDCF"       4  u16 version (1)      6  u16 header length (96)
 *   8  u32 head CRC-32C: the 96 header bytes with both CRC fields zero, then the meta section
 *  12  u32 body CRC-32C      16  u64 id (as in the name)   24  u32 meta_len   28  u32 status
 *  32  u64 body_len          40  i64 request_time     48  i64 response_time
 *  56  i64 date_value        64  i64 age_value        72  i64 lifetime (s)
 *  80  u32 key length        84  u32 Vary names length  88  u32 secondary key length
 *  92  u32 number of field lines
 *
 * then the meta section: the key, the Vary names, the secondary key (no terminators), and each
 * field line as u32 name length, u32 value length, name, value; then the body. The name of a
 * file is "<pk>-<id>" in hex (pk: the primary key's hash, id: key + Vary names + secondary
 * key), in DIR/<first two hex digits of id>/<third digit>/, so the scan learns both from the
 * directory listing without opening anything. */
#define FMT_MAGIC   0x46434456u
#define FMT_VERSION 1
#define HDR_LEN     96
#define META_MAX    (4u << 20) /* bytes; far above any header block viaduct accepts */
#define NAME_LEN    33         /* "%016x-%016x" */
#define TOMB_SLOTS  65536u     /* invalidations remembered while the scan runs */
#define MAX_CANDS   16         /* variants of one key examined by a lookup */
#define LOG_EVERY   60         /* s between two error lines of the same kind */
#define EVICT_BATCH 64         /* files unlinked per hold of the mutex */
#define OF_BUCKETS  4096u      /* chains of the open-file table (at most 16 long at 65536) */

/* One file in the index. */
struct drec {
    uint64_t id, pk;
    uint64_t fsize; /* bytes on disk */
    uint64_t ino;   /* identifies the file version: rename replaces the inode */
    int64_t atime;  /* s: written, read or hit in memory; the eviction order */
    int64_t wtime;  /* s: mtime; the newest of several matching variants wins */
    char *vary;     /* Vary names; NULL until known (a scanned file not read yet) */
    bool cold;      /* found by the scan and not used since (sorted by atime when it ends) */
    struct drec *idnext, *pknext;
    struct vd_list lru; /* most recent first */
};

/* A file kept open after it was read and verified (the open-file table): its stored fields
 * and descriptor as a file-backed entry, and what a later hit checks against. */
struct ofile {
    uint64_t id;
    uint64_t ino, fsize;      /* the file verified: a hit needs both unchanged */
    uint32_t bcrc;            /* body CRC-32C from the verified head */
    struct vd_cache_entry *e; /* file-backed (e->body_fd), a reference */
    struct ofile *next;       /* chain of D.oftab */
    struct vd_list lru;       /* most recent first */
};

/* An entry waiting for the writer. */
struct witem {
    struct vd_cache_entry *e; /* a reference */
    uint64_t id, pk, seq;
    bool cancelled; /* invalidated meanwhile: never becomes visible */
    struct vd_list link;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work; /* the writer waits: queue, eviction, stop */
    pthread_cond_t idle; /* flush and scan waiters */
    char *dir;
    int lockfd;
    /* limits */
    uint64_t size_max, objects_max, queue_max, max_object;
    uint64_t sendfile_min; /* bytes: bodies this large become file-backed entries; 0: never */
    uint64_t open_max;     /* files the open-file table keeps (sendfile_files); 0: none */
    bool fsync_;
    /* index */
    struct drec **idtab, **pktab;
    size_t nbuckets; /* power of two */
    struct vd_list lru;
    uint64_t bytes, objects;
    /* open-file table */
    struct ofile **oftab; /* OF_BUCKETS chains by id */
    struct vd_list oflru;
    uint64_t nopen;
    /* writer */
    struct vd_list queue;
    uint64_t queue_bytes, nqueued, enq_seq, done_seq;
    struct witem *cur;
    bool stop, need_evict;
    pthread_t writer;
    uint8_t made[4096 / 8]; /* subdirectories known to exist (writer only) */
    /* scan */
    bool scanning;
    atomic_bool stop_scan;
    uint64_t *tombs; /* pk hashes invalidated during the scan (0: empty slot) */
    size_t ntombs;
    bool tomb_full;
    pthread_t scanner;
    /* figures */
    uint64_t scanned, writes, write_errors, queue_drops, evictions;
    _Atomic uint64_t hits, corrupt;
} D = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .work = PTHREAD_COND_INITIALIZER,
       .idle = PTHREAD_COND_INITIALIZER,
       .lockfd = -1};

static atomic_bool disk_on;

bool
vd__disk_on(void)
{
    return atomic_load_explicit(&disk_on, memory_order_acquire);
}

/* ---- helpers ------------------------------------------------------------------------------- */

static _Atomic int64_t last_log;
static _Atomic uint64_t suppressed;

/* At most one line per LOG_EVERY seconds: a full or failing disk must not flood the log. */
static void log_err(const char *fmt, ...) VD_PRINTF(1, 2);

static void
log_err(const char *fmt, ...)
{
    int64_t now = (int64_t)time(NULL);
    int64_t last = atomic_load(&last_log);
    if ((last && now - last < LOG_EVERY) ||
        !atomic_compare_exchange_strong(&last_log, &last, now)) {
        atomic_fetch_add(&suppressed, 1);
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uint64_t s = atomic_exchange(&suppressed, 0);
    if (s) {
        vd_log(VD_LOG_ERR, NULL, "cache disk: %s (%" PRIu64 " similar errors not logged)", msg, s);
    } else {
        vd_log(VD_LOG_ERR, NULL, "cache disk: %s", msg);
    }
}

static void
put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void
put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void
put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint16_t
get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* CRC-32C (Castagnoli, reflected 0x82F63B78): the SSE 4.2 instruction when the CPU has it
 * (about 20 GB/s, so verifying an 8 MiB body on a hit costs well under a millisecond), else a
 * table. */
static uint32_t crc_tab[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw;

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crc_tab[i] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t
crc_sse42(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
    }
    c = (uint32_t)c64;
    for (; n; p++, n--) {
        c = _mm_crc32_u8(c, *p);
    }
    return c;
}
#endif

/* Continues @crc (0 to start) over @n bytes. */
static uint32_t
crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (crc_hw) {
        return ~crc_sse42(c, p, n);
    }
#endif
    for (; n; p++, n--) {
        c = crc_tab[(c ^ *p) & 0xff] ^ (c >> 8);
    }
    return ~c;
}

/* SHA-256 fetched once: EVP_sha256() in an EVP call makes OpenSSL 3 look the algorithm up again
 * (locks and a provider query) on every hash, and a disk hit hashes its key twice. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_init(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); /* NULL: EVP_sha256() below */
}

static const EVP_MD *
sha256(void)
{
    pthread_once(&sha256_once, sha256_init);
    return sha256_md ? sha256_md : EVP_sha256();
}

/* The first 64 bits of SHA-256 over @n pieces (@p[i], @len[i] bytes). */
static bool
sha64(const void *const *p, const size_t *len, int n, uint64_t *out)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned ml = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c && EVP_DigestInit_ex(c, sha256(), NULL) == 1;
    for (int i = 0; ok && i < n; i++) {
        ok = EVP_DigestUpdate(c, p[i], len[i]) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(c, md, &ml) == 1 && ml >= 8;
    EVP_MD_CTX_free(c);
    if (ok) {
        *out = get64(md);
    }
    return ok;
}

/* The primary key's hash alone (the first half of vd__cache_ids). */
static bool
key_pk(const char *key, uint64_t *pk)
{
    const void *p[] = {key};
    size_t len[] = {strlen(key)};
    return sha64(p, len, 1, pk);
}

/* The id alone (the second half of vd__cache_ids). */
static bool
key_id(const char *key, const char *vary, const char *vary_key, uint64_t *id)
{
    const void *p[] = {key, vary, vary_key};
    size_t len[] = {strlen(key) + 1, strlen(vary) + 1, strlen(vary_key)};
    return sha64(p, len, 3, id);
}

/* The primary key's hash for a lookup, remembered per thread for the last PK_SLOTS keys seen
 * (by a 64-bit FNV-1a of the key and its length): SHA-256 is a noticeable part of a small disk
 * hit. Two keys with the same FNV tag would look one up under the other's hash: a miss (the
 * stored key is compared whenever a file is served), never the wrong response. Invalidation
 * always hashes in full. */
#define PK_SLOTS 64

static bool
lookup_pk(const char *key, uint64_t *pk)
{
    static _Thread_local struct {
        uint64_t tag, pk;
    } slot[PK_SLOTS];

    uint64_t tag = 14695981039346656037u;
    size_t n = 0;
    for (; key[n]; n++) {
        tag = (tag ^ (uint8_t)key[n]) * 1099511628211u;
    }
    tag ^= (uint64_t)n << 48;
    tag |= !tag; /* 0 marks an empty slot */
    unsigned i = (unsigned)(tag >> 32) & (PK_SLOTS - 1);
    if (slot[i].tag == tag) {
        *pk = slot[i].pk;
        return true;
    }
    if (!key_pk(key, pk)) {
        return false;
    }
    slot[i].tag = tag;
    slot[i].pk = *pk;
    return true;
}

bool
vd__cache_ids(const char *key, const char *vary, const char *vary_key, uint64_t *pk, uint64_t *id)
{
    return key_pk(key, pk) && key_id(key, vary, vary_key, id);
}

static void
path_of(char *buf, size_t cap, uint64_t pk, uint64_t id)
{
    snprintf(buf, cap, "%s/%02x/%x/%016" PRIx64 "-%016" PRIx64, D.dir, (unsigned)(id >> 56),
             (unsigned)(id >> 52) & 0xfu, pk, id);
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* "<16 hex>-<16 hex>" into @pk and @id. */
static bool
parse_name(const char *s, uint64_t *pk, uint64_t *id)
{
    uint64_t v[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 16; i++) {
            int h = hexval(s[k * 17 + i]);
            if (h < 0) {
                return false;
            }
            v[k] = v[k] << 4 | (uint64_t)h;
        }
    }
    if (s[16] != '-' || s[NAME_LEN] != '\0') {
        return false;
    }
    *pk = v[0];
    *id = v[1];
    return true;
}

/* ---- the open-file table (all under D.mu) --------------------------------------------------- */

static struct ofile **
of_slot(uint64_t id)
{
    struct ofile **pp = &D.oftab[id & (OF_BUCKETS - 1)];
    while (*pp && (*pp)->id != id) {
        pp = &(*pp)->next;
    }
    return pp;
}

/* Forgets the open file of @id, if any (its descriptor closes with the entry's last
 * reference). */
static void
of_drop(uint64_t id)
{
    if (!D.oftab) {
        return;
    }
    struct ofile **pp = of_slot(id), *of = *pp;
    if (!of) {
        return;
    }
    *pp = of->next;
    vd_list_remove(&of->lru);
    D.nopen--;
    vd_cache_entry_unref(of->e);
    free(of);
}

/* Least recently used open files go until at most @max remain. */
static void
of_trim(uint64_t max)
{
    while (D.nopen > max && !vd_list_empty(&D.oflru)) {
        of_drop(VD_CONTAINER_OF(D.oflru.prev, struct ofile, lru)->id);
    }
}

/* Keeps @e (a file-backed entry of file @id, inode @ino, @fsize bytes, verified; takes a
 * reference of its own) open for later hits, replacing what was kept for @id. */
static void
of_put(uint64_t id, uint64_t ino, uint64_t fsize, uint32_t bcrc, struct vd_cache_entry *e)
{
    if (!D.oftab || D.open_max == 0) {
        return;
    }
    of_drop(id);
    struct ofile *of = malloc(sizeof(*of));
    if (!of) {
        return; /* the next hit opens and checks the file again */
    }
    vd_cache_entry_ref(e);
    *of = (struct ofile){.id = id, .ino = ino, .fsize = fsize, .bcrc = bcrc, .e = e};
    of->next = D.oftab[id & (OF_BUCKETS - 1)];
    D.oftab[id & (OF_BUCKETS - 1)] = of;
    vd_list_insert_head(&D.oflru, &of->lru);
    D.nopen++;
    of_trim(D.open_max);
}

/* ---- the index (all under D.mu) ------------------------------------------------------------ */

static struct drec *
rec_find(uint64_t id)
{
    for (struct drec *r = D.idtab[id & (D.nbuckets - 1)]; r; r = r->idnext) {
        if (r->id == id) {
            return r;
        }
    }
    return NULL;
}

/* Doubles the tables at one record per bucket on average; a failed allocation keeps the old
 * ones (longer chains, still correct). */
static void
grow(void)
{
    size_t nb = D.nbuckets * 2;
    struct drec **it = calloc(nb, sizeof(*it)), **pt = calloc(nb, sizeof(*pt));
    if (!it || !pt) {
        free(it);
        free(pt);
        return;
    }
    for (size_t b = 0; b < D.nbuckets; b++) {
        for (struct drec *r = D.idtab[b], *next; r; r = next) {
            next = r->idnext;
            r->idnext = it[r->id & (nb - 1)];
            it[r->id & (nb - 1)] = r;
        }
        for (struct drec *r = D.pktab[b], *next; r; r = next) {
            next = r->pknext;
            r->pknext = pt[r->pk & (nb - 1)];
            pt[r->pk & (nb - 1)] = r;
        }
    }
    free(D.idtab);
    free(D.pktab);
    D.idtab = it;
    D.pktab = pt;
    D.nbuckets = nb;
}

static void
rec_remove(struct drec *r)
{
    struct drec **pp = &D.idtab[r->id & (D.nbuckets - 1)];
    while (*pp != r) {
        pp = &(*pp)->idnext;
    }
    *pp = r->idnext;
    pp = &D.pktab[r->pk & (D.nbuckets - 1)];
    while (*pp != r) {
        pp = &(*pp)->pknext;
    }
    *pp = r->pknext;
    vd_list_remove(&r->lru);
    of_drop(r->id);
    D.bytes -= r->fsize;
    D.objects--;
    free(r->vary);
    free(r);
}

/* Adds or updates the record of @id. @cold: found by the scan (goes to the LRU tail). NULL
 * when out of memory (the file then stays unindexed until the next start). */
static struct drec *
rec_put(uint64_t id, uint64_t pk, uint64_t fsize, uint64_t ino, int64_t mtime, const char *vary,
        bool cold)
{
    struct drec *r = rec_find(id);
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r) {
            return NULL;
        }
        r->id = id;
        r->pk = pk;
        r->idnext = D.idtab[id & (D.nbuckets - 1)];
        D.idtab[id & (D.nbuckets - 1)] = r;
        r->pknext = D.pktab[pk & (D.nbuckets - 1)];
        D.pktab[pk & (D.nbuckets - 1)] = r;
        vd_list_init(&r->lru);
        D.objects++;
    } else {
        D.bytes -= r->fsize;
        vd_list_remove(&r->lru);
        if (r->ino != ino) {
            of_drop(id); /* replaced by a newer file */
        }
    }
    D.bytes += fsize;
    r->fsize = fsize;
    r->ino = ino;
    r->wtime = mtime;
    r->atime = cold ? mtime : (int64_t)time(NULL);
    r->cold = cold;
    if (vary && (!r->vary || strcmp(r->vary, vary) != 0)) {
        free(r->vary);
        r->vary = strdup(vary); /* NULL on failure: learned again on the next read */
    }
    if (cold) {
        vd_list_insert_tail(&D.lru, &r->lru);
    } else {
        vd_list_insert_head(&D.lru, &r->lru);
    }
    if (D.objects > D.nbuckets) {
        grow();
    }
    return r;
}

static void
rec_touch(struct drec *r, int64_t now)
{
    r->atime = now;
    r->cold = false;
    vd_list_remove(&r->lru);
    vd_list_insert_head(&D.lru, &r->lru);
}

/* Unlinks the file of @r and forgets it. */
static void
rec_drop(struct drec *r)
{
    char path[PATH_MAX];
    path_of(path, sizeof(path), r->pk, r->id);
    if (unlink(path) != 0 && errno != ENOENT) {
        log_err("cannot remove %s: %s", path, vd_strerror(-errno));
    }
    rec_remove(r);
}

static bool
over_limits(void)
{
    return (D.bytes > D.size_max || D.objects > D.objects_max) && !vd_list_empty(&D.lru);
}

/* Least recently used files go until both limits hold, at most EVICT_BATCH per call so that a
 * lookup waiting for the mutex is not held up by a long run of unlinks (after disk_size was
 * lowered); returns true when more must go. Not while the scan runs: the order of the files it
 * found is known only when it ends. */
static bool
evict_locked(void)
{
    if (D.scanning) {
        return false;
    }
    for (int i = 0; i < EVICT_BATCH && over_limits(); i++) {
        rec_drop(VD_CONTAINER_OF(D.lru.prev, struct drec, lru));
        D.evictions++;
    }
    return over_limits();
}

static bool
tomb_has(uint64_t pk)
{
    if (!D.tombs) {
        return false;
    }
    pk |= !pk;
    for (size_t i = pk & (TOMB_SLOTS - 1);; i = (i + 1) & (TOMB_SLOTS - 1)) {
        if (D.tombs[i] == pk) {
            return true;
        }
        if (!D.tombs[i]) {
            return false;
        }
    }
}

/* Remembers that @pk was invalidated while the scan runs: files of it the scan finds later are
 * deleted, not indexed. Past half the slots every file the scan has not reached yet is. */
static void
tomb_add(uint64_t pk)
{
    if (!D.tombs || tomb_has(pk)) {
        return;
    }
    if (D.ntombs >= TOMB_SLOTS / 2) {
        D.tomb_full = true;
        return;
    }
    pk |= !pk;
    size_t i = pk & (TOMB_SLOTS - 1);
    while (D.tombs[i]) {
        i = (i + 1) & (TOMB_SLOTS - 1);
    }
    D.tombs[i] = pk;
    D.ntombs++;
}

/* ---- writing ------------------------------------------------------------------------------- */

/* The header and meta section of @e (one allocation of *@len bytes), CRCs filled in. */
static uint8_t *
serialize_head(const struct vd_cache_entry *e, uint64_t id, size_t *len)
{
    size_t kl = strlen(e->key), vl = strlen(e->vary), xl = strlen(e->vary_key);
    size_t meta = kl + vl + xl;
    for (size_t i = 0; i < e->nhdrs; i++) {
        meta += 8 + e->hdrs[i].name.len + e->hdrs[i].value.len;
    }
    if (meta > META_MAX) {
        return NULL;
    }
    uint8_t *b = malloc(HDR_LEN + meta);
    if (!b) {
        return NULL;
    }
    memset(b, 0, HDR_LEN);
    put32(b, FMT_MAGIC);
    put16(b + 4, FMT_VERSION);
    put16(b + 6, HDR_LEN);
    put64(b + 16, id);
    put32(b + 24, (uint32_t)meta);
    put32(b + 28, (uint32_t)e->status);
    put64(b + 32, e->body_len);
    put64(b + 40, (uint64_t)e->times.request_time);
    put64(b + 48, (uint64_t)e->times.response_time);
    put64(b + 56, (uint64_t)e->times.date_value);
    put64(b + 64, (uint64_t)e->times.age_value);
    put64(b + 72, (uint64_t)e->lifetime);
    put32(b + 80, (uint32_t)kl);
    put32(b + 84, (uint32_t)vl);
    put32(b + 88, (uint32_t)xl);
    put32(b + 92, (uint32_t)e->nhdrs);
    uint8_t *p = b + HDR_LEN;
    memcpy(p, e->key, kl);
    p += kl;
    memcpy(p, e->vary, vl);
    p += vl;
    memcpy(p, e->vary_key, xl);
    p += xl;
    for (size_t i = 0; i < e->nhdrs; i++) {
        const struct vd_hdr *h = &e->hdrs[i];
        put32(p, (uint32_t)h->name.len);
        put32(p + 4, (uint32_t)h->value.len);
        memcpy(p + 8, h->name.base, h->name.len);
        memcpy(p + 8 + h->name.len, h->value.base, h->value.len);
        p += 8 + h->name.len + h->value.len;
    }
    put32(b + 8, crc32c(0, b, HDR_LEN + meta));
    put32(b + 12, crc32c(0, e->body, e->body_len));
    *len = HDR_LEN + meta;
    return b;
}

static int
write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t k = writev(fd, iov, n);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

/* Creates DIR/ab/c for @id once per run (writer thread only). */
static void
ensure_dir(uint64_t id)
{
    unsigned a = (unsigned)(id >> 56), c = (unsigned)(id >> 52) & 0xfu, bit = a << 4 | c;
    if (D.made[bit / 8] & (1u << (bit % 8))) {
        return;
    }
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%02x", D.dir, a);
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        return; /* the rename fails and says why */
    }
    snprintf(p, sizeof(p), "%s/%02x/%x", D.dir, a, c);
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        return;
    }
    D.made[bit / 8] |= (uint8_t)(1u << (bit % 8));
}

/* Writes @it to @tmp; fills *@st from the written file. */
static int
write_tmp(const struct witem *it, const char *tmp, bool sync, struct stat *st)
{
    size_t hl;
    uint8_t *head = serialize_head(it->e, it->id, &hl);
    if (!head) {
        return VD_ENOMEM;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = -errno;
        free(head);
        return rc;
    }
    struct iovec iov[2] = {{head, hl}, {it->e->body, it->e->body_len}};
    int rc = write_all(fd, iov, it->e->body_len ? 2 : 1);
    if (rc == 0 && sync && fsync(fd) != 0) {
        rc = -errno;
    }
    if (rc == 0 && fstat(fd, st) != 0) {
        rc = -errno;
    }
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }
    free(head);
    if (rc < 0) {
        unlink(tmp);
    }
    return rc;
}

static void
sync_dir_of(const char *path)
{
    char d[PATH_MAX];
    snprintf(d, sizeof(d), "%s", path);
    char *slash = strrchr(d, '/');
    if (slash) {
        *slash = '\0';
    }
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        if (fsync(fd) != 0) {
            log_err("fsync %s: %s", d, vd_strerror(-errno));
        }
        close(fd);
    }
}

static void *
writer_main(void *arg)
{
    (void)arg;
    char tmp[PATH_MAX], final[PATH_MAX];
    pthread_mutex_lock(&D.mu);
    for (;;) {
        while (vd_list_empty(&D.queue) && !D.stop && !(D.need_evict && !D.scanning)) {
            pthread_cond_wait(&D.work, &D.mu);
        }
        if (D.need_evict && !D.scanning) {
            D.need_evict = evict_locked();
            if (D.need_evict) {
                /* Let lookups in between two batches. */
                pthread_mutex_unlock(&D.mu);
                pthread_mutex_lock(&D.mu);
            }
        }
        if (vd_list_empty(&D.queue)) {
            if (D.stop) {
                break;
            }
            continue;
        }
        struct witem *it = VD_CONTAINER_OF(D.queue.next, struct witem, link);
        vd_list_remove(&it->link);
        D.queue_bytes -= it->e->size;
        D.nqueued--;
        D.cur = it;
        bool sync = D.fsync_, skip = it->cancelled;
        pthread_mutex_unlock(&D.mu);

        int rc = 0;
        bool wrote = false, renamed = false;
        struct stat st = {0};
        if (!skip) {
            snprintf(tmp, sizeof(tmp), "%s/tmp/%016" PRIx64 ".%" PRIu64, D.dir, it->id, it->seq);
            path_of(final, sizeof(final), it->pk, it->id);
            ensure_dir(it->id);
            rc = write_tmp(it, tmp, sync, &st);
            wrote = rc == 0;
        }

        pthread_mutex_lock(&D.mu);
        if (wrote && it->cancelled) {
            unlink(tmp); /* invalidated while it was being written */
        } else if (wrote) {
            /* Under the mutex, so that the file and its record appear together and an
             * invalidation sees both or neither. */
            int r = rename(tmp, final);
            if (r != 0 && errno == ENOENT) {
                /* Its directory was removed behind viaduct's back: make it again. */
                unsigned bit = (unsigned)(it->id >> 52) & 0xfffu;
                D.made[bit / 8] &= (uint8_t) ~(1u << (bit % 8));
                ensure_dir(it->id);
                r = rename(tmp, final);
            }
            if (r != 0) {
                rc = -errno;
                unlink(tmp);
            } else {
                renamed = true;
                rec_put(it->id, it->pk, (uint64_t)st.st_size, (uint64_t)st.st_ino,
                        (int64_t)st.st_mtime, it->e->vary, false);
                D.writes++;
            }
        }
        if (rc < 0) {
            D.write_errors++;
            log_err("cannot write %s: %s (the response stays in memory only)", final,
                    vd_strerror(rc));
        }
        D.cur = NULL;
        D.done_seq = it->seq;
        pthread_cond_broadcast(&D.idle);
        D.need_evict = evict_locked() || D.need_evict;
        pthread_mutex_unlock(&D.mu);
        if (renamed && sync) {
            sync_dir_of(final);
        }
        vd_cache_entry_unref(it->e);
        free(it);
        pthread_mutex_lock(&D.mu);
    }
    pthread_mutex_unlock(&D.mu);
    return NULL;
}

void
vd__disk_insert(struct vd_cache_entry *e)
{
    uint64_t pk = 0, id = 0;
    bool ids = vd__cache_ids(e->key, e->vary, e->vary_key, &pk, &id);
    pthread_mutex_lock(&D.mu);
    /* A file-backed entry (a 304 update keeps none, but be safe) already is a file. */
    if (ids && e->body_len <= D.max_object && e->body_fd < 0) {
        struct witem *it = NULL;
        if (D.nqueued && D.queue_bytes + e->size > D.queue_max) {
            D.queue_drops++;
        } else if ((it = calloc(1, sizeof(*it))) != NULL) {
            vd_cache_entry_ref(e);
            it->e = e;
            it->id = id;
            it->pk = pk;
            it->seq = ++D.enq_seq;
            vd_list_insert_tail(&D.queue, &it->link);
            D.queue_bytes += e->size;
            D.nqueued++;
            pthread_cond_signal(&D.work);
        }
    }
    vd__cache_mem_insert(e);
    pthread_mutex_unlock(&D.mu);
}

/* ---- reading ------------------------------------------------------------------------------- */

static bool
pread_all(int fd, void *buf, size_t n, off_t off)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t k = pread(fd, p, n, off);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return false;
        }
        p += k;
        n -= (size_t)k;
        off += k;
    }
    return true;
}

/* A lookup candidate, copied out of the index. */
struct cand {
    uint64_t id;
    uint64_t ino;  /* 0 for a probe */
    int64_t wtime; /* s */
    bool probe;    /* not indexed yet: the Vary-less file tried while the scan runs */
};

enum read_result {
    RD_OK,
    RD_GONE,      /* no such file */
    RD_CORRUPT,   /* deleted */
    RD_OTHER,     /* another key (a hash collision), or out of memory */
    RD_TOO_BIG,   /* bigger than max_object (lowered since it was written): deleted */
    RD_VARY_MISS, /* the request does not match its secondary key */
};

/* Deletes the file at @path when it still is inode @ino, with its record. */
static void
drop_file(const char *path, uint64_t id, uint64_t ino)
{
    struct stat st;
    pthread_mutex_lock(&D.mu);
    if (stat(path, &st) == 0 && (uint64_t)st.st_ino == ino) {
        unlink(path);
        struct drec *r = rec_find(id);
        if (r && r->ino == ino) {
            rec_remove(r);
        }
    }
    pthread_mutex_unlock(&D.mu);
}

/* CRC-32C of @len bytes of @fd from @off, read in bounded pieces. False when unreadable. */
static bool
crc_file(int fd, off_t off, uint64_t len, uint32_t *crc)
{
    enum { PIECE = 64u << 10 }; /* bytes; 16 pread calls for 1 MiB */

    uint8_t *b = malloc(PIECE);
    uint32_t c = 0;
    bool ok = b != NULL;
    while (ok && len) {
        size_t n = (size_t)VD_MIN(len, (uint64_t)PIECE);
        ok = pread_all(fd, b, n, off);
        c = ok ? crc32c(c, b, n) : c;
        off += (off_t)n;
        len -= n;
    }
    free(b);
    *crc = c;
    return ok;
}

/* Parses and verifies the file open at @fd (@st) as a stored response of @key matching the
 * request; builds the entry into *@out: a file-backed one (on a duplicate of @fd) when the body
 * has at least @file_min bytes (0: never). With @keep, a file-backed entry for the open-file
 * table goes to *@keep (*@out itself when file-backed, a reference more) and the body CRC to
 * *@bcrc_out; *@keep stays NULL when it cannot be built (out of memory or descriptors). */
static enum read_result
read_entry(int fd, const struct stat *st, uint64_t id, const char *key, const struct vd_hdr *req,
           size_t nreq, uint64_t max_object, uint64_t file_min, char **vary_out, const char **why,
           struct vd_cache_entry **out, struct vd_cache_entry **keep, uint32_t *bcrc_out)
{
    uint8_t h[HDR_LEN];
    *why = "truncated";
    if ((uint64_t)st->st_size < HDR_LEN || !pread_all(fd, h, HDR_LEN, 0)) {
        return RD_CORRUPT;
    }
    *why = "bad magic or version";
    if (get32(h) != FMT_MAGIC || get16(h + 4) != FMT_VERSION || get16(h + 6) != HDR_LEN) {
        return RD_CORRUPT;
    }
    uint32_t meta_len = get32(h + 24), kl = get32(h + 80), vl = get32(h + 84), xl = get32(h + 88);
    uint32_t nf = get32(h + 92), hcrc = get32(h + 8), bcrc = get32(h + 12);
    uint64_t body_len = get64(h + 32);
    *why = "lengths do not match the file size";
    if (meta_len > META_MAX || body_len > (uint64_t)st->st_size ||
        (uint64_t)st->st_size != HDR_LEN + (uint64_t)meta_len + body_len || get64(h + 16) != id) {
        return RD_CORRUPT;
    }
    uint8_t *meta = malloc(meta_len ? meta_len : 1);
    char *strs = malloc((size_t)meta_len + 3); /* key, Vary names, secondary key: 3 strings */
    struct vd_hdr *hd = NULL;
    uint8_t *body = NULL;
    enum read_result rr = RD_CORRUPT;
    *why = "unreadable";
    if (!meta || !strs || !pread_all(fd, meta, meta_len, HDR_LEN)) {
        rr = meta && strs ? RD_CORRUPT : RD_OTHER;
        goto out;
    }
    put32(h + 8, 0);
    put32(h + 12, 0);
    *why = "checksum mismatch (head)";
    if (crc32c(crc32c(0, h, HDR_LEN), meta, meta_len) != hcrc) {
        goto out;
    }
    *why = "bad meta section";
    if ((uint64_t)kl + vl + xl > meta_len || nf > meta_len / 8 + 1) {
        goto out;
    }
    char *k = strs, *vary = k + kl + 1, *vkey = vary + vl + 1;
    memcpy(k, meta, kl);
    k[kl] = '\0';
    memcpy(vary, meta + kl, vl);
    vary[vl] = '\0';
    memcpy(vkey, meta + kl + vl, xl);
    vkey[xl] = '\0';
    if (strlen(k) != kl || strlen(vary) != vl || strlen(vkey) != xl) {
        goto out;
    }
    uint64_t pk, cid;
    if (!vd__cache_ids(k, vary, vkey, &pk, &cid)) {
        rr = RD_OTHER;
        goto out;
    }
    *why = "id does not match the contents";
    if (cid != id) {
        goto out;
    }
    hd = malloc(sizeof(*hd) * (nf ? nf : 1));
    if (!hd) {
        rr = RD_OTHER;
        goto out;
    }
    size_t off = (size_t)kl + vl + xl;
    *why = "bad field lines";
    for (uint32_t i = 0; i < nf; i++) {
        if (meta_len - off < 8) {
            goto out;
        }
        uint32_t nl = get32(meta + off), vl2 = get32(meta + off + 4);
        off += 8;
        if (nl > meta_len - off || vl2 > meta_len - off - nl) {
            goto out;
        }
        hd[i].name = (struct vd_iov){meta + off, nl};
        hd[i].value = (struct vd_iov){meta + off + nl, vl2};
        off += (size_t)nl + vl2;
    }
    int status = (int)get32(h + 28);
    if (off != meta_len || status < 100 || status > 999) {
        goto out;
    }
    if (strcmp(k, key) != 0) {
        rr = RD_OTHER; /* another key with the same 64-bit hash: not ours, not damaged */
        goto out;
    }
    if (vary_out && !*vary_out) {
        *vary_out = strdup(vary);
    }
    if (vary[0]) {
        struct vd_dbuf rk;
        vd_dbuf_init(&rk, 65536);
        bool match = vd_cache_vary_key_names(vary, req, nreq, &rk) == 0 &&
                     strcmp(rk.p ? rk.p : "", vkey) == 0;
        vd_dbuf_free(&rk);
        if (!match) {
            rr = RD_VARY_MISS;
            goto out;
        }
    }
    if (body_len > max_object) {
        rr = RD_TOO_BIG;
        goto out;
    }
    struct vd_cache_times tm = {
        .request_time = (time_t)get64(h + 40),
        .response_time = (time_t)get64(h + 48),
        .date_value = (time_t)get64(h + 56),
        .age_value = (int64_t)get64(h + 64),
    };
    if (file_min && body_len >= file_min) {
        uint32_t c = 0;
        *why = "unreadable";
        if (!crc_file(fd, HDR_LEN + (off_t)meta_len, body_len, &c)) {
            goto out; /* RD_CORRUPT (an allocation failure of 64 KiB reads as one too) */
        }
        *why = "checksum mismatch (body)";
        if (c != bcrc) {
            goto out;
        }
        int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dfd < 0) {
            rr = RD_OTHER; /* out of descriptors: not the file's fault */
            goto out;
        }
        *out = vd__cache_entry_new_file(k, vary, vkey, status, hd, nf, dfd,
                                        HDR_LEN + (uint64_t)meta_len, body_len, true, &tm,
                                        (int64_t)get64(h + 72));
        rr = *out ? RD_OK : RD_OTHER;
        if (*out && keep) {
            vd_cache_entry_ref(*out);
            *keep = *out;
            *bcrc_out = bcrc;
        }
        goto out;
    }
    body = body_len ? malloc(body_len) : NULL;
    *why = "unreadable";
    if (body_len && (!body || !pread_all(fd, body, body_len, HDR_LEN + (off_t)meta_len))) {
        rr = body ? RD_CORRUPT : RD_OTHER;
        goto out;
    }
    *why = "checksum mismatch (body)";
    if (crc32c(0, body, body_len) != bcrc) {
        goto out;
    }
    int kfd = keep ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (kfd >= 0) {
        *keep = vd__cache_entry_new_file(k, vary, vkey, status, hd, nf, kfd,
                                         HDR_LEN + (uint64_t)meta_len, body_len, false, &tm,
                                         (int64_t)get64(h + 72));
        *bcrc_out = bcrc;
    }
    *out = vd__cache_entry_new_owned(k, vary, vkey, status, hd, nf, body, body_len, &tm,
                                     (int64_t)get64(h + 72));
    body = NULL; /* owned by the entry now, or freed */
    rr = *out ? RD_OK : RD_OTHER;
out:
    free(body);
    free(hd);
    free(strs);
    free(meta);
    return rr;
}

/* Up to @cap bytes of @fd from @off, stopping early only at end of file: the count, or -1. */
static ssize_t
pread_upto(int fd, uint8_t *p, size_t cap, off_t off)
{
    size_t got = 0;
    while (got < cap) {
        ssize_t k = pread(fd, p + got, cap - got, off + (off_t)got);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0) {
            return -1;
        }
        if (k == 0) {
            break;
        }
        got += (size_t)k;
    }
    return (ssize_t)got;
}

/* Forgets the open file of @id when it still is @f (found changed by a hit). */
static void
of_forget(uint64_t id, const struct vd_cache_entry *f)
{
    pthread_mutex_lock(&D.mu);
    struct ofile *of = *of_slot(id);
    if (of && of->e == f) {
        of_drop(id);
    }
    pthread_mutex_unlock(&D.mu);
}

/* A hit on what the open-file table keeps for candidate @c; its record names the inode that
 * was verified. A body under @file_min bytes (or any, @file_min 0) is read with one pread of
 * one byte more than it, so that a file that was cut short or grew is noticed, and its CRC-32C
 * is checked again: a mismatch deletes the file (*@bad) and nothing is served. A larger body is
 * served from the kept descriptor as checked when the file was opened, once fstat has found it
 * unchanged in size and inode and still linked. A file found changed in size is forgotten and
 * NULL returned: the caller opens it by name as for a first read (which deletes it when
 * damaged). Returns a new reference, or NULL. */
static struct vd_cache_entry *
open_hit(const char *key, uint64_t pk, const struct cand *c, const struct vd_hdr *req, size_t nreq,
         uint64_t file_min, bool *bad)
{
    pthread_mutex_lock(&D.mu);
    struct ofile *of = D.oftab ? *of_slot(c->id) : NULL;
    if (!of || of->ino != c->ino) {
        pthread_mutex_unlock(&D.mu);
        return NULL;
    }
    struct vd_cache_entry *f = of->e;
    uint64_t fsize = of->fsize;
    uint32_t bcrc = of->bcrc;
    vd_cache_entry_ref(f);
    vd_list_remove(&of->lru);
    vd_list_insert_head(&D.oflru, &of->lru);
    pthread_mutex_unlock(&D.mu);

    struct vd_cache_entry *e = NULL;
    if (strcmp(f->key, key) != 0) {
        vd_cache_entry_unref(f); /* another key with the same hash */
        return NULL;
    }
    if (f->vary[0]) {
        struct vd_dbuf rk;
        vd_dbuf_init(&rk, 65536);
        bool match = vd_cache_vary_key_names(f->vary, req, nreq, &rk) == 0 &&
                     strcmp(rk.p ? rk.p : "", f->vary_key) == 0;
        vd_dbuf_free(&rk);
        if (!match) {
            vd_cache_entry_unref(f);
            return NULL;
        }
    }
    if (file_min && f->body_len >= file_min) {
        struct stat st;
        if (fstat(f->body_fd, &st) != 0 || st.st_nlink == 0 || (uint64_t)st.st_size != fsize ||
            (uint64_t)st.st_ino != c->ino) {
            of_forget(c->id, f);
            vd_cache_entry_unref(f);
            return NULL;
        }
        e = f; /* served from the descriptor */
    } else {
        uint8_t *body = malloc(f->body_len + 1);
        if (!body) {
            vd_cache_entry_unref(f);
            return NULL;
        }
        /* Exactly the body: a truncated file reads short, a changed one fails the checksum
         * (asking for one byte more would cost a second pread per hit to see end of file). */
        ssize_t n = pread_upto(f->body_fd, body, f->body_len, (off_t)f->body_off);
        if (n != (ssize_t)f->body_len) {
            free(body);
            of_forget(c->id, f);
            vd_cache_entry_unref(f);
            return NULL;
        }
        if (crc32c(0, body, f->body_len) != bcrc) {
            char path[PATH_MAX];
            path_of(path, sizeof(path), pk, c->id);
            atomic_fetch_add(&D.corrupt, 1);
            log_err("%s: checksum mismatch (body) on a kept file; deleted", path);
            drop_file(path, c->id, c->ino);
            free(body);
            vd_cache_entry_unref(f);
            *bad = true;
            return NULL;
        }
        /* A copy that the memory tier can keep (promotion, as for a first read), or, when it
         * would not keep it anyway (a small cache.memory), a view that shares the kept fields
         * and lives for this hit only: no copy of the fields per hit. */
        if (vd__cache_mem_would_keep(f->size + f->body_len, f->body_len)) {
            e = vd__cache_entry_new_owned(f->key, f->vary, f->vary_key, f->status, f->hdrs,
                                          f->nhdrs, body, f->body_len, &f->times, f->lifetime);
        } else {
            e = vd__cache_entry_new_view(f, body, f->body_len);
        }
        vd_cache_entry_unref(f);
        if (!e) {
            return NULL;
        }
    }
    int64_t now = (int64_t)time(NULL);
    bool ok = false;
    pthread_mutex_lock(&D.mu);
    struct drec *r = rec_find(c->id);
    if (r && r->ino == c->ino) {
        ok = true;
        rec_touch(r, now);
        vd_cache_entry_ref(e);
        vd__cache_mem_insert(e);
        atomic_store(&e->disk_touched, now);
        atomic_fetch_add(&D.hits, 1);
    }
    pthread_mutex_unlock(&D.mu);
    if (!ok) {
        vd_cache_entry_unref(e); /* invalidated or replaced meanwhile */
        return NULL;
    }
    return e;
}

/* Reads candidate @c; on success the entry is promoted into memory (when its record still
 * names the file read), kept in the open-file table, and returned. */
static struct vd_cache_entry *
read_cand(const char *key, uint64_t pk, const struct cand *c, const struct vd_hdr *req, size_t nreq,
          uint64_t max_object, uint64_t file_min, bool keep_open, bool *vary_miss)
{
    if (keep_open && !c->probe) {
        bool bad = false;
        struct vd_cache_entry *e = open_hit(key, pk, c, req, nreq, file_min, &bad);
        if (e || bad) {
            return e;
        }
    }
    char path[PATH_MAX];
    path_of(path, sizeof(path), pk, c->id);
    /* O_NOATIME: a read need not update the access time (viaduct keeps its own in the index);
     * refused (EPERM) for a file another user owns. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOATIME);
    if (fd < 0 && errno == EPERM) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        if (errno == ENOENT && !c->probe) {
            /* Removed behind viaduct's back: forget it. */
            pthread_mutex_lock(&D.mu);
            struct drec *r = rec_find(c->id);
            if (r && r->ino == c->ino) {
                rec_remove(r);
            }
            pthread_mutex_unlock(&D.mu);
        }
        return NULL;
    }
    struct stat st = {0};
    struct vd_cache_entry *e = NULL, *keep = NULL;
    uint32_t bcrc = 0;
    char *vary = NULL;
    const char *why = "";
    enum read_result rr = RD_OTHER;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        rr = read_entry(fd, &st, c->id, key, req, nreq, max_object, file_min, &vary, &why, &e,
                        keep_open ? &keep : NULL, &bcrc);
    }
    close(fd);
    uint64_t ino = (uint64_t)st.st_ino;
    if (rr == RD_CORRUPT) {
        atomic_fetch_add(&D.corrupt, 1);
        log_err("%s: %s; deleted", path, why);
        drop_file(path, c->id, ino);
        free(vary);
        vd_cache_entry_unref(e);
        vd_cache_entry_unref(keep);
        return NULL;
    }
    if (rr == RD_TOO_BIG) {
        drop_file(path, c->id, ino);
        free(vary);
        return NULL;
    }
    int64_t now = (int64_t)time(NULL);
    bool ok = false;
    pthread_mutex_lock(&D.mu);
    struct drec *r = rec_find(c->id);
    if (r && r->ino == ino) {
        if (!r->vary && vary) {
            r->vary = vary;
            vary = NULL;
        }
        ok = rr == RD_OK;
        if (ok) {
            rec_touch(r, now);
        }
    } else if (!r && c->probe && rr == RD_OK && D.scanning && !D.tomb_full && !tomb_has(pk)) {
        /* Found before the scan reached it: index it now. */
        ok = rec_put(c->id, pk, (uint64_t)st.st_size, ino, (int64_t)st.st_mtime, e->vary, false) !=
             NULL;
    }
    if (ok) {
        if (keep) {
            of_put(c->id, ino, (uint64_t)st.st_size, bcrc, keep);
        }
        vd_cache_entry_ref(e);
        vd__cache_mem_insert(e);
        atomic_store(&e->disk_touched, now);
        atomic_fetch_add(&D.hits, 1);
    }
    pthread_mutex_unlock(&D.mu);
    free(vary);
    vd_cache_entry_unref(keep);
    if (rr == RD_VARY_MISS) {
        *vary_miss = true;
    }
    if (!ok) {
        vd_cache_entry_unref(e);
        return NULL;
    }
    return e;
}

struct vd_cache_entry *
vd__disk_lookup(const char *key, const struct vd_hdr *req, size_t nreq, bool *vary_miss)
{
    uint64_t pk;
    if (!lookup_pk(key, &pk)) {
        return NULL;
    }
    struct cand c[MAX_CANDS];
    size_t nc = 0;
    struct vd_dbuf k;
    vd_dbuf_init(&k, 65536);
    pthread_mutex_lock(&D.mu);
    uint64_t max_object = D.max_object, file_min = D.sendfile_min;
    bool keep_open = D.open_max > 0;
    for (struct drec *r = D.pktab[pk & (D.nbuckets - 1)]; r && nc < MAX_CANDS; r = r->pknext) {
        if (r->pk != pk) {
            continue;
        }
        if (r->vary && r->vary[0]) {
            /* Known Vary names: only a file whose id matches the request's secondary key. */
            uint64_t id;
            vd_dbuf_reset(&k);
            if (vd_cache_vary_key_names(r->vary, req, nreq, &k) < 0 ||
                !key_id(key, r->vary, k.p ? k.p : "", &id) || id != r->id) {
                *vary_miss = true;
                continue;
            }
        }
        /* A Vary-less file of another key with the same 64-bit hash is told apart by its
         * stored key when read (read_entry, open_hit): no second hash here. */
        c[nc++] = (struct cand){.id = r->id, .ino = r->ino, .wtime = r->wtime};
    }
    bool probe = nc == 0 && D.scanning && !*vary_miss;
    pthread_mutex_unlock(&D.mu);
    vd_dbuf_free(&k);
    if (probe && key_id(key, "", "", &c[0].id)) {
        c[0].ino = 0;
        c[0].wtime = 0;
        c[0].probe = true;
        nc = 1;
    }
    /* Newest first (RFC 9111 §4: the most recent response when several match). */
    for (size_t i = 1; i < nc; i++) {
        for (size_t j = i; j > 0 && c[j].wtime > c[j - 1].wtime; j--) {
            struct cand t = c[j];
            c[j] = c[j - 1];
            c[j - 1] = t;
        }
    }
    for (size_t i = 0; i < nc; i++) {
        struct vd_cache_entry *e =
            read_cand(key, pk, &c[i], req, nreq, max_object, file_min, keep_open, vary_miss);
        if (e) {
            *vary_miss = false;
            return e;
        }
    }
    return NULL;
}

/* ---- invalidation and touch ---------------------------------------------------------------- */

#define MAX_IDS 256

size_t
vd__disk_invalidate(const char *key)
{
    uint64_t pk, id0;
    if (!vd__cache_ids(key, "", "", &pk, &id0)) {
        return vd__cache_mem_invalidate(key, NULL, 0);
    }
    uint64_t ids[MAX_IDS];
    size_t nids = 0, over = 0;
#define ADD_ID(x)                                                                                  \
    do {                                                                                           \
        if (nids < MAX_IDS) {                                                                      \
            ids[nids++] = (x);                                                                     \
        } else {                                                                                   \
            over++;                                                                                \
        }                                                                                          \
    } while (0)
    pthread_mutex_lock(&D.mu);
    for (struct drec *r = D.pktab[pk & (D.nbuckets - 1)], *next; r; r = next) {
        next = r->pknext;
        if (r->pk == pk) {
            ADD_ID(r->id);
            rec_drop(r);
        }
    }
    struct vd_list *l;
    for (l = D.queue.next; l != &D.queue; l = l->next) {
        struct witem *it = VD_CONTAINER_OF(l, struct witem, link);
        if (!it->cancelled && strcmp(it->e->key, key) == 0) {
            it->cancelled = true;
            bool seen = false;
            for (size_t i = 0; i < nids && !seen; i++) {
                seen = ids[i] == it->id;
            }
            if (!seen) {
                ADD_ID(it->id);
            }
        }
    }
    if (D.cur && !D.cur->cancelled && strcmp(D.cur->e->key, key) == 0) {
        D.cur->cancelled = true; /* being written: the writer deletes it instead of renaming */
        bool seen = false;
        for (size_t i = 0; i < nids && !seen; i++) {
            seen = ids[i] == D.cur->id;
        }
        if (!seen) {
            ADD_ID(D.cur->id);
        }
    }
    if (D.scanning) {
        /* Files of @key the scan has not reached: the Vary-less one is known by name, the
         * others are deleted when the scan finds them. */
        char path[PATH_MAX];
        path_of(path, sizeof(path), pk, id0);
        bool seen = false;
        for (size_t i = 0; i < nids && !seen; i++) {
            seen = ids[i] == id0;
        }
        if (unlink(path) == 0 && !seen) {
            ADD_ID(id0);
        }
        tomb_add(pk);
    }
#undef ADD_ID
    size_t n = nids + over + vd__cache_mem_invalidate(key, ids, nids);
    pthread_mutex_unlock(&D.mu);
    return n;
}

void
vd__disk_touch(const struct vd_cache_entry *e, int64_t now)
{
    uint64_t pk, id;
    if (!vd__cache_ids(e->key, e->vary, e->vary_key, &pk, &id)) {
        return;
    }
    pthread_mutex_lock(&D.mu);
    struct drec *r = rec_find(id);
    if (r) {
        rec_touch(r, now);
    }
    pthread_mutex_unlock(&D.mu);
}

void
vd__disk_forget_open(void)
{
    pthread_mutex_lock(&D.mu);
    of_trim(0);
    pthread_mutex_unlock(&D.mu);
}

/* ---- the start-up scan --------------------------------------------------------------------- */

struct found {
    uint64_t id, pk, size, ino;
    int64_t mtime;
    char name[NAME_LEN + 1];
};

#define BATCH 256

/* Indexes what one directory listing found (@dfd is that directory). */
static void
commit(int dfd, struct found *f, size_t n)
{
    pthread_mutex_lock(&D.mu);
    for (size_t i = 0; i < n; i++) {
        if (rec_find(f[i].id)) {
            continue; /* written (or read) since start: that record is current */
        }
        struct stat st;
        if (D.tomb_full || tomb_has(f[i].pk) || f[i].size < HDR_LEN) {
            /* Invalidated while the scan ran, or too short to be a file of ours: the name may
             * have been reused by a write since the listing, so check the inode first. */
            if (fstatat(dfd, f[i].name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                (uint64_t)st.st_ino == f[i].ino) {
                unlinkat(dfd, f[i].name, 0);
            }
            if (f[i].size < HDR_LEN) {
                atomic_fetch_add(&D.corrupt, 1);
            }
            continue;
        }
        if (rec_put(f[i].id, f[i].pk, f[i].size, f[i].ino, f[i].mtime, NULL, true)) {
            D.scanned++;
        }
    }
    pthread_mutex_unlock(&D.mu);
}

static int
cmp_atime_desc(const void *a, const void *b)
{
    const struct drec *x = *(const struct drec *const *)a, *y = *(const struct drec *const *)b;
    return (x->atime < y->atime) - (x->atime > y->atime);
}

/* The records the scan found and nobody used since sit at the LRU tail in listing order; put
 * them in order of modification time so that eviction takes the oldest first. Locked. */
static void
sort_cold(void)
{
    size_t n = 0;
    for (struct vd_list *l = D.lru.prev; l != &D.lru; l = l->prev) {
        if (!VD_CONTAINER_OF(l, struct drec, lru)->cold) {
            break;
        }
        n++;
    }
    struct drec **v = n > 1 ? malloc(n * sizeof(*v)) : NULL;
    if (!v) {
        return; /* listing order: still bounded, only less exact */
    }
    struct vd_list *l = D.lru.prev;
    for (size_t i = 0; i < n; i++, l = l->prev) {
        v[i] = VD_CONTAINER_OF(l, struct drec, lru);
    }
    qsort(v, n, sizeof(*v), cmp_atime_desc);
    for (size_t i = 0; i < n; i++) {
        vd_list_remove(&v[i]->lru);
        vd_list_insert_tail(&D.lru, &v[i]->lru);
    }
    free(v);
}

static void
scan_dir(int dfd, unsigned a, unsigned c, struct found *batch)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && !atomic_load(&D.stop_scan)) {
        uint64_t pk, id;
        if (strlen(de->d_name) != NAME_LEN || !parse_name(de->d_name, &pk, &id) ||
            (id >> 56) != a || ((id >> 52) & 0xfu) != c) {
            continue; /* not a name viaduct writes: left alone */
        }
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        batch[n] = (struct found){.id = id,
                                  .pk = pk,
                                  .size = (uint64_t)st.st_size,
                                  .ino = (uint64_t)st.st_ino,
                                  .mtime = (int64_t)st.st_mtime};
        memcpy(batch[n].name, de->d_name, NAME_LEN + 1);
        if (++n == BATCH) {
            commit(dirfd(d), batch, n);
            n = 0;
        }
    }
    commit(dirfd(d), batch, n);
    closedir(d);
}

static void *
scan_main(void *arg)
{
    (void)arg;
    struct found *batch = malloc(BATCH * sizeof(*batch));
    int top = open(D.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (unsigned a = 0; batch && top >= 0 && a < 256 && !atomic_load(&D.stop_scan); a++) {
        char name[4];
        snprintf(name, sizeof(name), "%02x", a);
        int fa = openat(top, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fa < 0) {
            continue;
        }
        for (unsigned c = 0; c < 16 && !atomic_load(&D.stop_scan); c++) {
            snprintf(name, sizeof(name), "%x", c);
            int fc = openat(fa, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fc >= 0) {
                scan_dir(fc, a, c, batch);
            }
        }
        close(fa);
    }
    if (top >= 0) {
        close(top);
    }
    free(batch);
    pthread_mutex_lock(&D.mu);
    sort_cold();
    D.scanning = false;
    free(D.tombs);
    D.tombs = NULL;
    D.need_evict = true;
    vd_log(VD_LOG_NOTICE, NULL, "cache disk: %s: %" PRIu64 " files (%" PRIu64 " bytes) indexed",
           D.dir, D.objects, D.bytes);
    pthread_cond_signal(&D.work);
    pthread_cond_broadcast(&D.idle);
    pthread_mutex_unlock(&D.mu);
    return NULL;
}

/* ---- open, configure, close ---------------------------------------------------------------- */

/* Removes what a previous run left in DIR/tmp (files it was writing when it stopped). */
static void
clean_tmp(const char *tmpdir)
{
    DIR *d = opendir(tmpdir);
    if (!d) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            unlinkat(dirfd(d), de->d_name, 0);
        }
    }
    closedir(d);
}

static void
set_limits(const struct vd_cache_limits *lim)
{
    D.size_max = lim->disk_size;
    D.objects_max = lim->disk_objects ? lim->disk_objects : 1;
    D.queue_max = lim->disk_queue;
    D.max_object = lim->max_object;
    D.sendfile_min = lim->sendfile_min;
    D.fsync_ = lim->disk_fsync;
    D.open_max = lim->sendfile_files;
}

static int
disk_open(const struct vd_cache_limits *lim)
{
    char p[PATH_MAX];
    const char *dir = lim->disk_path;
    if (strlen(dir) + 64 > sizeof(p)) {
        return VD_ETOOBIG;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return -errno;
    }
    snprintf(p, sizeof(p), "%s/lock", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    /* One process per directory: a second one would index, evict and write behind the first
     * one's back. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    snprintf(p, sizeof(p), "%s/tmp", dir);
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    clean_tmp(p);
    D.dir = strdup(dir);
    D.nbuckets = 1024;
    D.idtab = calloc(D.nbuckets, sizeof(*D.idtab));
    D.pktab = calloc(D.nbuckets, sizeof(*D.pktab));
    D.tombs = calloc(TOMB_SLOTS, sizeof(*D.tombs));
    D.oftab = calloc(OF_BUCKETS, sizeof(*D.oftab));
    if (!D.dir || !D.idtab || !D.pktab || !D.tombs || !D.oftab) {
        free(D.dir);
        free(D.idtab);
        free(D.pktab);
        free(D.tombs);
        free(D.oftab);
        D.oftab = NULL;
        D.dir = NULL;
        D.idtab = D.pktab = NULL;
        D.tombs = NULL;
        close(fd);
        return VD_ENOMEM;
    }
    D.lockfd = fd;
    set_limits(lim);
    vd_list_init(&D.lru);
    vd_list_init(&D.queue);
    vd_list_init(&D.oflru);
    D.nopen = 0;
    D.bytes = D.objects = D.queue_bytes = D.nqueued = D.enq_seq = D.done_seq = 0;
    D.scanned = D.writes = D.write_errors = D.queue_drops = D.evictions = 0;
    atomic_store(&D.hits, 0);
    atomic_store(&D.corrupt, 0);
    D.cur = NULL;
    D.stop = D.need_evict = false;
    D.ntombs = 0;
    D.tomb_full = false;
    D.scanning = true;
    atomic_store(&D.stop_scan, false);
    memset(D.made, 0, sizeof(D.made));
    if (pthread_create(&D.writer, NULL, writer_main, NULL) != 0) {
        goto fail;
    }
    if (pthread_create(&D.scanner, NULL, scan_main, NULL) != 0) {
        pthread_mutex_lock(&D.mu);
        D.stop = true;
        pthread_cond_signal(&D.work);
        pthread_mutex_unlock(&D.mu);
        pthread_join(D.writer, NULL);
        goto fail;
    }
    atomic_store_explicit(&disk_on, true, memory_order_release);
    return 0;
fail:
    free(D.dir);
    free(D.idtab);
    free(D.pktab);
    free(D.tombs);
    free(D.oftab);
    D.oftab = NULL;
    D.dir = NULL;
    D.idtab = D.pktab = NULL;
    D.tombs = NULL;
    close(D.lockfd);
    D.lockfd = -1;
    return VD_ENOMEM;
}

/* The last open attempt found the directory locked by another process. */
static _Atomic bool busy;

bool
vd_cache_disk_busy(void)
{
    return atomic_load_explicit(&busy, memory_order_relaxed);
}

bool
vd_cache_disk_retry(const struct vd_cache_limits *lim)
{
    if (vd__disk_on() || !vd_cache_disk_busy() || !lim->disk_path || !lim->disk_path[0] ||
        lim->memory == 0) {
        return true;
    }
    int rc = disk_open(lim);
    if (rc == -EWOULDBLOCK) {
        return false;
    }
    atomic_store_explicit(&busy, false, memory_order_relaxed);
    if (rc < 0) {
        vd_log(VD_LOG_ERR, NULL, "cache disk: cannot use %s: %s; caching in memory only",
               lim->disk_path, vd_strerror(rc));
    } else {
        vd_log(VD_LOG_NOTICE, NULL, "cache disk: %s opened, indexing its files", lim->disk_path);
    }
    return true;
}

void
vd__disk_configure(const struct vd_cache_limits *lim)
{
    bool want = lim->disk_path && lim->disk_path[0] && lim->memory > 0;
    if (!vd__disk_on()) {
        if (want) {
            int rc = disk_open(lim);
            atomic_store_explicit(&busy, rc == -EWOULDBLOCK, memory_order_relaxed);
            if (rc < 0) {
                vd_log(VD_LOG_ERR, NULL, "cache disk: cannot use %s: %s; caching in memory only",
                       lim->disk_path,
                       rc == -EWOULDBLOCK ? "in use by another viaduct process" : vd_strerror(rc));
            } else {
                vd_log(VD_LOG_NOTICE, NULL, "cache disk: %s opened, indexing its files",
                       lim->disk_path);
            }
        }
        return;
    }
    pthread_mutex_lock(&D.mu);
    if (!want || strcmp(lim->disk_path, D.dir) != 0) {
        vd_log(VD_LOG_NOTICE, NULL,
               "cache disk: keeping %s until restart (a new cache.disk_path takes effect at the "
               "next start)",
               D.dir);
    }
    if (lim->disk_path && lim->disk_size) {
        set_limits(lim);
    } else {
        D.max_object = lim->max_object;
        D.sendfile_min = lim->sendfile_min;
        D.open_max = lim->sendfile_files;
    }
    /* Kept files were checked against the old limits: a lower max_object or a changed
     * sendfile_min must apply to them too. */
    of_trim(0);
    D.need_evict = true;
    pthread_cond_signal(&D.work);
    pthread_mutex_unlock(&D.mu);
}

void
vd_cache_disk_get_stats(struct vd_cache_disk_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (!vd__disk_on()) {
        return;
    }
    pthread_mutex_lock(&D.mu);
    *st = (struct vd_cache_disk_stats){
        .open = true,
        .scanning = D.scanning,
        .objects = D.objects,
        .bytes = D.bytes,
        .scanned = D.scanned,
        .queued = D.nqueued,
        .writes = D.writes,
        .write_errors = D.write_errors,
        .queue_drops = D.queue_drops,
        .hits = atomic_load(&D.hits),
        .corrupt = atomic_load(&D.corrupt),
        .evictions = D.evictions,
        .open_files = D.nopen,
    };
    pthread_mutex_unlock(&D.mu);
}

void
vd_cache_disk_flush(void)
{
    if (!vd__disk_on()) {
        return;
    }
    pthread_mutex_lock(&D.mu);
    uint64_t target = D.enq_seq;
    while (D.done_seq < target && (D.cur || !vd_list_empty(&D.queue))) {
        pthread_cond_wait(&D.idle, &D.mu);
    }
    pthread_mutex_unlock(&D.mu);
}

void
vd_cache_disk_wait_scan(void)
{
    if (!vd__disk_on()) {
        return;
    }
    pthread_mutex_lock(&D.mu);
    while (D.scanning) {
        pthread_cond_wait(&D.idle, &D.mu);
    }
    pthread_mutex_unlock(&D.mu);
}

void
vd_cache_disk_close(void)
{
    if (!vd__disk_on()) {
        return;
    }
    atomic_store(&D.stop_scan, true);
    pthread_join(D.scanner, NULL);
    pthread_mutex_lock(&D.mu);
    D.stop = true;
    pthread_cond_signal(&D.work);
    pthread_mutex_unlock(&D.mu);
    pthread_join(D.writer, NULL); /* it writes what is queued first */
    atomic_store_explicit(&disk_on, false, memory_order_release);
    of_trim(0);
    free(D.oftab);
    D.oftab = NULL;
    for (size_t b = 0; b < D.nbuckets; b++) {
        for (struct drec *r = D.idtab[b], *next; r; r = next) {
            next = r->idnext;
            free(r->vary);
            free(r);
        }
    }
    free(D.idtab);
    free(D.pktab);
    free(D.tombs);
    D.idtab = D.pktab = NULL;
    D.tombs = NULL;
    D.nbuckets = 0;
    vd_list_init(&D.lru);
    close(D.lockfd);
    D.lockfd = -1;
    free(D.dir);
    D.dir = NULL;
}
