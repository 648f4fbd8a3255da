/* SPDX-License-Identifier: MIT */
/* Unit tests for the disk tier of the shared cache (src/cache/disk.c): the file format round
 * trip across a restart, damaged files (truncated, a flipped byte, bad magic) deleted and never
 * served, leftover temporary files removed at start, eviction by size in order of last access,
 * invalidation and replacement, write errors, a full write queue, and the start-up scan of many
 * files, timed (VD_DISK_SCAN_OBJECTS files, default 10000; docs/architecture.md cites 100000). */
#include "vd/config.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vd/cache.h"
#include "vd/err.h"
#include "vd_test.h"

#define H(n, v)                                                                                    \
    {                                                                                              \
        VD_IOV_LIT(n), VD_IOV_LIT(v)                                                               \
    }

static char dir[64];

static struct vd_cache_limits
limits(uint64_t disk_size)
{
    return (struct vd_cache_limits){.memory = 64u << 20,
                                    .max_object = 1u << 20,
                                    .disk_path = dir,
                                    .disk_size = disk_size,
                                    .disk_objects = 1000000,
                                    .disk_queue = 16u << 20};
}

/* Removes everything under @p (files and directories), then @p itself. */
static void
rm_tree(const char *p)
{
    DIR *d = opendir(p);
    if (!d) {
        unlink(p);
        return;
    }
    struct dirent *de;
    char sub[PATH_MAX];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(sub, sizeof(sub), "%s/%s", p, de->d_name);
            rm_tree(sub);
        }
    }
    closedir(d);
    rmdir(p);
}

/* Collects the paths of object files (DIR/ab/c/NAME); returns how many (up to @max). */
static size_t
object_files(char (*out)[PATH_MAX], size_t max)
{
    size_t n = 0;
    char p1[PATH_MAX], p2[PATH_MAX];
    DIR *d0 = opendir(dir);
    assert_non_null(d0);
    struct dirent *a;
    while ((a = readdir(d0)) != NULL) {
        if (strlen(a->d_name) != 2 || a->d_name[0] == '.') {
            continue;
        }
        if (snprintf(p1, sizeof(p1), "%s/%s", dir, a->d_name) >= (int)sizeof(p1)) {
            continue;
        }
        DIR *d1 = opendir(p1);
        struct dirent *b;
        while (d1 && (b = readdir(d1)) != NULL) {
            if (strlen(b->d_name) != 1 || b->d_name[0] == '.') {
                continue;
            }
            if (snprintf(p2, sizeof(p2), "%s/%s", p1, b->d_name) >= (int)sizeof(p2)) {
                continue;
            }
            DIR *d2 = opendir(p2);
            struct dirent *f;
            while (d2 && (f = readdir(d2)) != NULL) {
                if (f->d_name[0] != '.' && n < max && out &&
                    snprintf(out[n], PATH_MAX, "%s/%s", p2, f->d_name) >= PATH_MAX) {
                    fail();
                }
                n += f->d_name[0] != '.';
            }
            if (d2) {
                closedir(d2);
            }
        }
        if (d1) {
            closedir(d1);
        }
    }
    closedir(d0);
    return n;
}

static int
setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/vd-disk-XXXXXX");
    assert_non_null(mkdtemp(dir));
    vd_cache_clear();
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    vd_cache_disk_close();
    vd_cache_clear();
    rm_tree(dir);
    return 0;
}

static void
open_disk(uint64_t disk_size)
{
    struct vd_cache_limits lim = limits(disk_size);
    vd_cache_configure(&lim);
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    assert_true(st.open);
    vd_cache_disk_wait_scan();
}

/* A restart: the writer finishes, the index and the memory tier are gone, the scan rebuilds. */
static void
restart(uint64_t disk_size)
{
    vd_cache_disk_close();
    vd_cache_clear();
    open_disk(disk_size);
}

static struct vd_cache_entry *
mk(const char *key, const char *vary, const char *vkey, size_t body_len, uint8_t fill)
{
    static uint8_t body[1 << 16];
    memset(body, fill, body_len);
    struct vd_hdr h[] = {H("Content-Type", "text/plain"), H("ETag", "\"v1\""),
                         H("Cache-Control", "max-age=100")};
    struct vd_cache_times tm = {
        .request_time = 1000, .response_time = 1001, .date_value = 999, .age_value = 7};
    return vd_cache_entry_new(key, vary, vkey, 200, h, 3, body, body_len, &tm, 100);
}

/* Flips the last byte of the file at @path (in the body). */
static void
damage_file_body(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, sb.st_size - 1), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, sb.st_size - 1), 1);
    close(fd);
}

static struct vd_cache_entry *
get(const char *key, const struct vd_hdr *req, size_t nreq, bool *vary_miss)
{
    bool vm;
    return vd_cache_lookup(key, req, nreq, vary_miss ? vary_miss : &vm);
}

static void
test_round_trip(void **state)
{
    (void)state;
    struct vd_cache_limits lim = limits(1u << 30);
    lim.disk_fsync = true; /* the same files, each synced before the rename */
    vd_cache_configure(&lim);
    vd_cache_disk_wait_scan();
    uint8_t body[300];
    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (uint8_t)(i * 7);
    }
    struct vd_hdr h[] = {H("Content-Type", "application/octet-stream"), H("X-Empty", ""),
                         H("Vary", "Accept")};
    struct vd_cache_times tm = {.request_time = 1700000000,
                                .response_time = 1700000002,
                                .date_value = 1700000001,
                                .age_value = 5};
    vd_cache_insert(vd_cache_entry_new("http://a.test/x?q=1", "accept", "accept:text/x\n", 203, h,
                                       3, body, sizeof(body), &tm, 3600));
    vd_cache_disk_flush();
    char files[4][PATH_MAX];
    assert_int_equal(object_files(files, 4), 1);
    /* Exactly header + meta + body bytes, starting with the magic. */
    struct stat sb;
    assert_int_equal(stat(files[0], &sb), 0);
    size_t meta = strlen("http://a.test/x?q=1") + strlen("accept") + strlen("accept:text/x\n") +
                  3 * 8 + strlen("Content-Type") + strlen("application/octet-stream") +
                  strlen("X-Empty") + strlen("Vary") + strlen("Accept");
    assert_int_equal(sb.st_size, 96 + meta + sizeof(body));
    FILE *f = fopen(files[0], "rb");
    char magic[4];
    assert_int_equal(fread(magic, 1, 4, f), 4);
    fclose(f);
    assert_memory_equal(magic, "VDCF", 4);

    restart(1u << 30);
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.objects, 1);
    assert_int_equal(st.scanned, 1);
    assert_int_equal(st.bytes, (uint64_t)sb.st_size);
    struct vd_hdr other[] = {H("Accept", "text/y")}, match[] = {H("accept", "text/x")};
    bool vm = false;
    assert_null(get("http://a.test/x?q=1", other, 1, &vm));
    assert_true(vm);
    assert_null(get("http://a.test/x?q=2", match, 1, NULL));
    struct vd_cache_entry *e = get("http://a.test/x?q=1", match, 1, &vm);
    assert_non_null(e);
    assert_false(vm);
    assert_string_equal(e->key, "http://a.test/x?q=1");
    assert_string_equal(e->vary, "accept");
    assert_string_equal(e->vary_key, "accept:text/x\n");
    assert_int_equal(e->status, 203);
    assert_int_equal(e->nhdrs, 3);
    assert_memory_equal(e->hdrs[0].name.base, "Content-Type", 12);
    assert_int_equal(e->hdrs[1].value.len, 0);
    assert_memory_equal(e->hdrs[2].value.base, "Accept", 6);
    assert_int_equal(e->body_len, sizeof(body));
    assert_memory_equal(e->body, body, sizeof(body));
    assert_int_equal(e->times.request_time, 1700000000);
    assert_int_equal(e->times.response_time, 1700000002);
    assert_int_equal(e->times.date_value, 1700000001);
    assert_int_equal(e->times.age_value, 5);
    assert_int_equal(e->lifetime, 3600);
    vd_cache_entry_unref(e);
    /* Promoted into memory: the next hit does not read the file. */
    e = get("http://a.test/x?q=1", match, 1, NULL);
    assert_non_null(e);
    vd_cache_entry_unref(e);
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.corrupt, 0);
    /* Memory eviction keeps the disk copy. */
    vd_cache_clear();
    e = get("http://a.test/x?q=1", match, 1, NULL);
    assert_non_null(e);
    vd_cache_entry_unref(e);
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.hits, 2);
}

/* Inserts @e, waits for its file and returns the file's path in @path (the one new file). */
static void
insert_file(struct vd_cache_entry *e, char path[PATH_MAX])
{
    char before[16][PATH_MAX], after[16][PATH_MAX];
    size_t nb = object_files(before, 16);
    vd_cache_insert(e);
    vd_cache_disk_flush();
    size_t na = object_files(after, 16);
    assert_int_equal(na, nb + 1);
    for (size_t i = 0; i < na; i++) {
        bool old = false;
        for (size_t j = 0; j < nb && !old; j++) {
            old = strcmp(after[i], before[j]) == 0;
        }
        if (!old) {
            memcpy(path, after[i], PATH_MAX);
            return;
        }
    }
    fail();
}

/* Flips the byte at @off of the file at @path. */
static void
flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static uint64_t
disk_stat(size_t which)
{
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    return which == 0 ? st.hits : which == 1 ? st.corrupt : st.open_files;
}

/* The open-file table (sendfile_files): with a memory tier that keeps nothing, every lookup
 * reaches the disk tier, and after the first one the verified file stays open. A small body
 * is read and its CRC checked again on every hit: a byte flipped after the file was kept is
 * caught (the file deleted, nothing served), while the stored fields are those checked at
 * open. A large body (sendfile_min) is sent as verified at open: a byte flipped in place is
 * not seen until the file is opened again (vd_cache_clear, a restart, or leaving the table),
 * and is caught then. A file cut short is caught either way; a newer copy and an invalidation
 * close the kept file; at most sendfile_files stay open. */
static void
test_kept_open_files(void **state)
{
    (void)state;
    struct vd_cache_limits lim = limits(1u << 30);
    lim.memory = 1; /* no entry fits: every hit is a disk hit */
    lim.sendfile_min = 1000;
    lim.sendfile_files = 3;
    vd_cache_configure(&lim);
    vd_cache_disk_wait_scan();
    char small[PATH_MAX], big[PATH_MAX], cut[PATH_MAX], bigcut[PATH_MAX], inv[PATH_MAX];
    insert_file(mk("http://k.test/small", "", "", 500, 's'), small);
    insert_file(mk("http://k.test/big", "", "", 4000, 'b'), big);

    /* Small body: kept after the first hit; a damaged head no longer matters (the fields
     * were checked at open), a damaged body is caught on the next hit. */
    struct vd_cache_entry *e = get("http://k.test/small", NULL, 0, NULL);
    assert_non_null(e);
    assert_false(vd_cache_entry_in_file(e));
    vd_cache_entry_unref(e);
    assert_int_equal(disk_stat(2), 1);
    flip_byte(small, 100); /* inside the stored key: the head CRC would fail at open */
    e = get("http://k.test/small", NULL, 0, NULL);
    assert_non_null(e);
    assert_int_equal(e->body_len, 500);
    assert_memory_equal(e->body, "sss", 3);
    assert_int_equal(e->nhdrs, 3);
    vd_cache_entry_unref(e);
    assert_int_equal(disk_stat(0), 2);
    assert_int_equal(disk_stat(1), 0);
    damage_file_body(small);
    assert_null(get("http://k.test/small", NULL, 0, NULL));
    assert_int_equal(disk_stat(1), 1);
    struct stat sb;
    assert_int_equal(stat(small, &sb), -1); /* deleted */
    assert_null(get("http://k.test/small", NULL, 0, NULL));
    assert_int_equal(disk_stat(2), 0);

    /* Large body: served from the kept descriptor as verified at open. */
    e = get("http://k.test/big", NULL, 0, NULL);
    assert_true(vd_cache_entry_in_file(e));
    vd_cache_entry_unref(e);
    damage_file_body(big);
    e = get("http://k.test/big", NULL, 0, NULL);
    assert_non_null(e);
    assert_true(vd_cache_entry_in_file(e));
    uint8_t last;
    assert_int_equal(vd_cache_entry_read(e, 3999, &last, 1), 0);
    assert_int_equal(last, 'b' ^ 0x20); /* the documented limit: not re-checked while kept */
    vd_cache_entry_unref(e);
    assert_int_equal(disk_stat(1), 1);
    vd_cache_clear(); /* closes kept files: the next hit opens and checks the file */
    assert_int_equal(disk_stat(2), 0);
    assert_null(get("http://k.test/big", NULL, 0, NULL));
    assert_int_equal(disk_stat(1), 2);
    assert_int_equal(stat(big, &sb), -1);

    /* Cut short after being kept, small and large: noticed, opened again, deleted. */
    insert_file(mk("http://k.test/cut", "", "", 500, 'c'), cut);
    insert_file(mk("http://k.test/bigcut", "", "", 4000, 'd'), bigcut);
    vd_cache_entry_unref(get("http://k.test/cut", NULL, 0, NULL));
    vd_cache_entry_unref(get("http://k.test/bigcut", NULL, 0, NULL));
    assert_int_equal(disk_stat(2), 2);
    assert_int_equal(truncate(cut, 300), 0);
    assert_int_equal(stat(bigcut, &sb), 0);
    assert_int_equal(truncate(bigcut, sb.st_size - 1), 0);
    assert_null(get("http://k.test/cut", NULL, 0, NULL));
    assert_null(get("http://k.test/bigcut", NULL, 0, NULL));
    assert_int_equal(disk_stat(1), 4);
    assert_int_equal(disk_stat(2), 0);
    assert_int_equal(object_files(NULL, 0), 0);

    /* A newer copy replaces the kept file; an invalidation closes it. */
    insert_file(mk("http://k.test/inv", "", "", 500, '1'), inv);
    e = get("http://k.test/inv", NULL, 0, NULL);
    assert_memory_equal(e->body, "1", 1);
    vd_cache_entry_unref(e);
    vd_cache_insert(mk("http://k.test/inv", "", "", 500, '2'));
    vd_cache_disk_flush();
    assert_int_equal(disk_stat(2), 0);
    e = get("http://k.test/inv", NULL, 0, NULL);
    assert_memory_equal(e->body, "2", 1);
    vd_cache_entry_unref(e);
    assert_int_equal(disk_stat(2), 1);
    assert_int_equal(vd_cache_invalidate("http://k.test/inv"), 1);
    assert_int_equal(disk_stat(2), 0);
    assert_null(get("http://k.test/inv", NULL, 0, NULL));

    /* Bounded: at most sendfile_files kept; 0 keeps none. */
    for (int i = 0; i < 5; i++) {
        char key[32], p[PATH_MAX];
        snprintf(key, sizeof(key), "http://k.test/n%d", i);
        insert_file(mk(key, "", "", 100 + (size_t)i * 1000, (uint8_t)('A' + i)), p);
        e = get(key, NULL, 0, NULL);
        assert_non_null(e);
        vd_cache_entry_unref(e);
    }
    assert_int_equal(disk_stat(2), 3);
    lim.sendfile_files = 0;
    vd_cache_configure(&lim);
    assert_int_equal(disk_stat(2), 0);
    e = get("http://k.test/n4", NULL, 0, NULL);
    assert_non_null(e);
    vd_cache_entry_unref(e);
    assert_int_equal(disk_stat(2), 0);
}

/* A body of at least sendfile_min bytes comes back from the disk as a file-backed entry: no
 * body in memory, the open file read with vd_cache_entry_read; at most sendfile_files of them
 * stay in memory (the least recently used goes); a damaged body is still caught (its CRC is
 * checked when the file is opened). */
static void
test_file_backed(void **state)
{
    (void)state;
    struct vd_cache_limits lim = limits(1u << 30);
    lim.sendfile_min = 1000;
    lim.sendfile_files = 2;
    vd_cache_configure(&lim);
    vd_cache_disk_wait_scan();
    vd_cache_insert(mk("http://f.test/1", "", "", 4000, 'a'));
    vd_cache_insert(mk("http://f.test/2", "", "", 4000, 'b'));
    vd_cache_insert(mk("http://f.test/3", "", "", 4000, 'c'));
    vd_cache_insert(mk("http://f.test/small", "", "", 999, 's'));
    vd_cache_insert(mk("http://f.test/bad", "", "", 4000, 'd'));
    vd_cache_disk_flush();
    vd_cache_disk_close();
    vd_cache_clear();
    vd_cache_configure(&lim);
    vd_cache_disk_wait_scan();

    struct vd_cache_entry *e = get("http://f.test/small", NULL, 0, NULL);
    assert_non_null(e);
    assert_false(vd_cache_entry_in_file(e)); /* below sendfile_min: read into memory */
    assert_memory_equal(e->body, "sss", 3);
    vd_cache_entry_unref(e);

    e = get("http://f.test/1", NULL, 0, NULL);
    assert_non_null(e);
    assert_true(vd_cache_entry_in_file(e));
    assert_null(e->body);
    assert_int_equal(e->body_len, 4000);
    assert_int_equal(e->status, 200);
    assert_int_equal(e->nhdrs, 3);
    uint8_t buf[4000], want[4000];
    memset(want, 'a', sizeof(want));
    assert_int_equal(vd_cache_entry_read(e, 0, buf, 4000), 0);
    assert_memory_equal(buf, want, 4000);
    /* The body offset is past the header and meta section: the first byte read is the body's. */
    struct stat sb;
    assert_int_equal(fstat(e->body_fd, &sb), 0);
    assert_int_equal(e->body_off + 4000, (uint64_t)sb.st_size);
    assert_int_equal(vd_cache_entry_read(e, 3990, buf, 10), 0);
    assert_memory_equal(buf, want, 10);
    vd_cache_entry_unref(e);
    struct vd_cache_stats cs;
    vd_cache_get_stats(&cs);
    assert_int_equal(cs.files, 1);
    assert_int_equal(cs.entries, 2);
    assert_true(cs.bytes < 4000); /* /small and fields: no 4000-byte body charged */

    /* A memory hit now: the same file-backed entry. */
    e = get("http://f.test/1", NULL, 0, NULL);
    assert_true(vd_cache_entry_in_file(e));
    vd_cache_entry_unref(e);
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.hits, 2); /* small and 1, each read from its file once */

    /* Past sendfile_files: /2 then /3 push out the least recently used, /1. */
    for (int i = 2; i <= 3; i++) {
        char key[32];
        snprintf(key, sizeof(key), "http://f.test/%d", i);
        e = get(key, NULL, 0, NULL);
        assert_true(vd_cache_entry_in_file(e));
        assert_int_equal(vd_cache_entry_read(e, 0, buf, 1), 0);
        assert_int_equal(buf[0], 'a' + i - 1);
        vd_cache_entry_unref(e);
    }
    vd_cache_get_stats(&cs);
    assert_int_equal(cs.files, 2);
    assert_int_equal(cs.entries, 3);
    e = get("http://f.test/1", NULL, 0, NULL); /* from the disk again */
    assert_true(vd_cache_entry_in_file(e));
    vd_cache_entry_unref(e);
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.hits, 5);

    /* A flipped body byte: the CRC over the file catches it, the file is deleted. */
    char files[8][PATH_MAX];
    size_t nf = object_files(files, 8);
    assert_int_equal(nf, 5);
    e = get("http://f.test/bad", NULL, 0, NULL);
    assert_non_null(e);
    int bad = -1;
    for (size_t i = 0; i < nf; i++) {
        struct stat fs;
        assert_int_equal(stat(files[i], &fs), 0);
        assert_int_equal(fstat(e->body_fd, &sb), 0);
        if (fs.st_ino == sb.st_ino) {
            bad = (int)i;
        }
    }
    vd_cache_entry_unref(e);
    assert_true(bad >= 0);
    vd_cache_clear();
    damage_file_body(files[bad]);
    assert_null(get("http://f.test/bad", NULL, 0, NULL));
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.corrupt, 1);
    assert_int_equal(object_files(NULL, 0), 4);

    /* sendfile_files 0: a file-backed entry answers its lookup and is not kept. */
    lim.sendfile_files = 0;
    vd_cache_configure(&lim);
    vd_cache_clear();
    e = get("http://f.test/2", NULL, 0, NULL);
    assert_true(vd_cache_entry_in_file(e));
    vd_cache_entry_unref(e);
    vd_cache_get_stats(&cs);
    assert_int_equal(cs.files, 0);
    assert_int_equal(cs.entries, 0);
}

enum damage { TRUNC_HALF, TRUNC_SHORT, FLIP_BODY, FLIP_META, FLIP_HEADER, BAD_MAGIC, GROWN };

static void
damage_file(const char *path, enum damage how)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    off_t at = 0;
    switch (how) {
    case TRUNC_HALF:
        assert_int_equal(ftruncate(fd, sb.st_size / 2), 0);
        break;
    case TRUNC_SHORT:
        assert_int_equal(ftruncate(fd, 10), 0);
        break;
    case GROWN:
        assert_int_equal(ftruncate(fd, sb.st_size + 1), 0);
        break;
    case FLIP_BODY:
    case FLIP_META:
    case FLIP_HEADER:
    case BAD_MAGIC:
        at = how == FLIP_BODY     ? sb.st_size - 3
             : how == FLIP_META   ? 100
             : how == FLIP_HEADER ? 45
                                  : 0;
        assert_int_equal(pread(fd, &b, 1, at), 1);
        b ^= 0x20;
        assert_int_equal(pwrite(fd, &b, 1, at), 1);
        break;
    }
    close(fd);
}

static void
test_damaged_files(void **state)
{
    (void)state;

    static const enum damage all[] = {TRUNC_HALF,  TRUNC_SHORT, FLIP_BODY, FLIP_META,
                                      FLIP_HEADER, BAD_MAGIC,   GROWN};

    for (size_t i = 0; i < VD_ARRAY_LEN(all); i++) {
        open_disk(1u << 30);
        vd_cache_insert(mk("http://d.test/x", "", "", 2000, 'x'));
        vd_cache_insert(mk("http://d.test/ok", "", "", 2000, 'o'));
        vd_cache_disk_flush();
        vd_cache_disk_close();
        vd_cache_clear();
        char files[4][PATH_MAX];
        assert_int_equal(object_files(files, 4), 2);
        /* Which file is /x: the one whose body is 'x's. */
        char *victim = NULL;
        for (int k = 0; k < 2; k++) {
            FILE *f = fopen(files[k], "rb");
            char tail[4];
            fseek(f, -4, SEEK_END);
            assert_int_equal(fread(tail, 1, 4, f), 4);
            fclose(f);
            if (memcmp(tail, "xxxx", 4) == 0) {
                victim = files[k];
            }
        }
        assert_non_null(victim);
        damage_file(victim, all[i]);
        open_disk(1u << 30);
        assert_null(get("http://d.test/x", NULL, 0, NULL));
        assert_int_equal(access(victim, F_OK), -1); /* deleted */
        struct vd_cache_disk_stats st;
        vd_cache_disk_get_stats(&st);
        assert_int_equal(st.corrupt, 1);
        assert_int_equal(st.objects, 1);
        struct vd_cache_entry *e = get("http://d.test/ok", NULL, 0, NULL);
        assert_non_null(e);
        assert_int_equal(e->body[1999], 'o');
        vd_cache_entry_unref(e);
        /* Stored again after a refetch, and readable across a restart. */
        vd_cache_insert(mk("http://d.test/x", "", "", 2000, 'y'));
        restart(1u << 30);
        e = get("http://d.test/x", NULL, 0, NULL);
        assert_non_null(e);
        assert_int_equal(e->body[0], 'y');
        vd_cache_entry_unref(e);
        vd_cache_disk_close();
        vd_cache_clear();
        rm_tree(dir);
        assert_int_equal(mkdir(dir, 0700), 0);
    }
}

static void
test_tmp_cleanup(void **state)
{
    (void)state;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/tmp", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/tmp/00000000000000ab.%d", dir, i);
        FILE *f = fopen(p, "w");
        fputs("half a file", f);
        fclose(f);
    }
    /* A file that is not viaduct's, where objects live: left alone. */
    snprintf(p, sizeof(p), "%s/ab", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/ab/c", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/ab/c/README", dir);
    FILE *f = fopen(p, "w");
    fclose(f);
    open_disk(1u << 30);
    snprintf(p, sizeof(p), "%s/tmp", dir);
    DIR *d = opendir(p);
    assert_non_null(d);
    struct dirent *de;
    int left = 0;
    while ((de = readdir(d)) != NULL) {
        left += de->d_name[0] != '.';
    }
    closedir(d);
    assert_int_equal(left, 0);
    snprintf(p, sizeof(p), "%s/ab/c/README", dir);
    assert_int_equal(access(p, F_OK), 0);
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.objects, 0);
}

static void
test_eviction_by_size(void **state)
{
    (void)state;
    /* Each file is a little over 4000 bytes: room for five. */
    open_disk(5 * 4200);
    char key[64];
    for (int i = 1; i <= 5; i++) {
        snprintf(key, sizeof(key), "http://e.test/%d", i);
        vd_cache_insert(mk(key, "", "", 4000, (uint8_t)i));
        vd_cache_disk_flush();
    }
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.objects, 5);
    assert_int_equal(st.evictions, 0);
    /* /1 is read from disk (memory emptied first), so /2 is now the least recently used. */
    vd_cache_clear();
    struct vd_cache_entry *e = get("http://e.test/1", NULL, 0, NULL);
    assert_non_null(e);
    vd_cache_entry_unref(e);
    vd_cache_insert(mk("http://e.test/6", "", "", 4000, 6));
    vd_cache_insert(mk("http://e.test/7", "", "", 4000, 7));
    vd_cache_disk_flush();
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.objects, 5);
    assert_int_equal(st.evictions, 2);
    assert_true(st.bytes <= 5 * 4200);
    assert_int_equal(object_files(NULL, 0), 5);
    vd_cache_clear();
    static const int kept[] = {1, 4, 5, 6, 7}, gone[] = {2, 3};
    for (size_t i = 0; i < VD_ARRAY_LEN(gone); i++) {
        snprintf(key, sizeof(key), "http://e.test/%d", gone[i]);
        assert_null(get(key, NULL, 0, NULL));
    }
    for (size_t i = 0; i < VD_ARRAY_LEN(kept); i++) {
        snprintf(key, sizeof(key), "http://e.test/%d", kept[i]);
        e = get(key, NULL, 0, NULL);
        assert_non_null(e);
        assert_int_equal(e->body[0], kept[i]);
        vd_cache_entry_unref(e);
    }
    /* A smaller limit on a reload evicts at once (by the writer). */
    struct vd_cache_limits lim = limits(2 * 4200);
    vd_cache_configure(&lim);
    for (int i = 0; i < 200; i++) {
        vd_cache_disk_get_stats(&st);
        if (st.objects == 2) {
            break;
        }
        usleep(10000);
    }
    assert_int_equal(st.objects, 2);
    assert_int_equal(object_files(NULL, 0), 2);
}

static void
test_invalidate_and_replace(void **state)
{
    (void)state;
    open_disk(1u << 30);
    vd_cache_insert(mk("http://i.test/v", "accept", "accept:a\n", 100, 'a'));
    vd_cache_insert(mk("http://i.test/v", "accept", "accept:b\n", 100, 'b'));
    vd_cache_insert(mk("http://i.test/other", "", "", 100, 'o'));
    vd_cache_disk_flush();
    assert_int_equal(object_files(NULL, 0), 3);
    /* Replacement: the same variant again rewrites the same file. */
    vd_cache_insert(mk("http://i.test/other", "", "", 50, 'p'));
    vd_cache_disk_flush();
    assert_int_equal(object_files(NULL, 0), 3);
    restart(1u << 30);
    struct vd_cache_entry *e = get("http://i.test/other", NULL, 0, NULL);
    assert_non_null(e);
    assert_int_equal(e->body_len, 50);
    assert_int_equal(e->body[0], 'p');
    vd_cache_entry_unref(e);
    /* Invalidation removes every variant on disk (one of them also in memory), counted once. */
    struct vd_hdr ra[] = {H("Accept", "a")};
    e = get("http://i.test/v", ra, 1, NULL);
    assert_non_null(e);
    vd_cache_entry_unref(e);
    assert_int_equal(vd_cache_invalidate("http://i.test/v"), 2);
    assert_int_equal(object_files(NULL, 0), 1);
    assert_null(get("http://i.test/v", ra, 1, NULL));
    restart(1u << 30);
    assert_null(get("http://i.test/v", ra, 1, NULL));
    assert_int_equal(vd_cache_invalidate("http://i.test/v"), 0);
    /* An invalidation right after an insert: the queued write never becomes a file. */
    for (int i = 0; i < 50; i++) {
        vd_cache_insert(mk("http://i.test/q", "", "", 100, 'q'));
        assert_int_equal(vd_cache_invalidate("http://i.test/q"), 1);
    }
    vd_cache_disk_flush();
    assert_int_equal(object_files(NULL, 0), 1);
    restart(1u << 30);
    assert_null(get("http://i.test/q", NULL, 0, NULL));
}

static void
test_write_errors(void **state)
{
    (void)state;
    open_disk(1u << 30);
    /* Where temporary files go is gone: writes fail, memory keeps serving. */
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/tmp", dir);
    assert_int_equal(rmdir(p), 0);
    vd_cache_insert(mk("http://w.test/", "", "", 100, 'w'));
    vd_cache_disk_flush();
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.write_errors, 1);
    assert_int_equal(st.writes, 0);
    struct vd_cache_entry *e = get("http://w.test/", NULL, 0, NULL);
    assert_non_null(e);
    vd_cache_entry_unref(e);
    /* Bigger than max_object: not stored anywhere. */
    struct vd_cache_limits lim = limits(1u << 30);
    lim.max_object = 1000;
    vd_cache_configure(&lim);
    vd_cache_insert(mk("http://w.test/big", "", "", 1001, 'b'));
    vd_cache_disk_flush();
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.write_errors, 1);
    assert_null(get("http://w.test/big", NULL, 0, NULL));
}

static void
test_queue_full_drops(void **state)
{
    (void)state;
    /* Room for about 14 entries of 4000 bytes, and 200 inserted faster than files are made. */
    struct vd_cache_limits lim = limits(1u << 30);
    lim.disk_queue = 64u << 10;
    vd_cache_configure(&lim);
    vd_cache_disk_wait_scan();
    char key[64];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "http://q.test/%d", i);
        vd_cache_insert(mk(key, "", "", 4000, 'q'));
    }
    vd_cache_disk_flush();
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    assert_true(st.queue_drops > 0);
    assert_int_equal(st.writes + st.queue_drops, 200);
    assert_int_equal(object_files(NULL, 0), st.writes);
    for (int i = 0; i < 200; i++) { /* every one is still served from memory */
        snprintf(key, sizeof(key), "http://q.test/%d", i);
        struct vd_cache_entry *e = get(key, NULL, 0, NULL);
        assert_non_null(e);
        vd_cache_entry_unref(e);
    }
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The start-up scan: N small objects written by the real writer, then a restart timed until
 * every one is indexed, and a sample of them read back. */
static void
test_scan_many(void **state)
{
    (void)state;
    const char *env = getenv("VD_DISK_SCAN_OBJECTS");
    long n = env ? strtol(env, NULL, 10) : 10000;
    if (n < 1) {
        n = 10000;
    }
    struct vd_cache_limits lim = limits(1ull << 34);
    lim.memory = 1u << 20; /* memory holds a few; the disk holds them all */
    vd_cache_configure(&lim);
    vd_cache_disk_wait_scan();
    char key[64];
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "http://scan.test/object/%ld", i);
        vd_cache_insert(mk(key, "", "", 200, (uint8_t)i));
        if (i % 1000 == 999) {
            vd_cache_disk_flush(); /* keep the queue from filling (drops would be counted) */
        }
    }
    vd_cache_disk_flush();
    double t1 = now_s();
    struct vd_cache_disk_stats st;
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.writes, n);
    assert_int_equal(st.queue_drops, 0);
    vd_cache_disk_close();
    vd_cache_clear();
    double t2 = now_s();
    vd_cache_configure(&lim);
    /* Asked at once, most likely before the scan reached it: found by its name. */
    snprintf(key, sizeof(key), "http://scan.test/object/%ld", n - 1);
    struct vd_cache_entry *first = get(key, NULL, 0, NULL);
    assert_non_null(first);
    assert_int_equal(first->body[0], (uint8_t)(n - 1));
    vd_cache_entry_unref(first);
    vd_cache_disk_wait_scan();
    double t3 = now_s();
    vd_cache_disk_get_stats(&st);
    assert_int_equal(st.objects, n);
    assert_true(st.scanned == (uint64_t)n || st.scanned == (uint64_t)n - 1);
    print_message("disk tier: %ld objects written in %.2f s; index rebuilt at start in %.3f s "
                  "(%llu found by the scan, the others first by name)\n",
                  n, t1 - t0, t3 - t2, (unsigned long long)st.scanned);
    assert_true(t3 - t2 < 2.0);
    for (long i = 0; i < n; i += 97) {
        snprintf(key, sizeof(key), "http://scan.test/object/%ld", i);
        struct vd_cache_entry *e = get(key, NULL, 0, NULL);
        assert_non_null(e);
        assert_int_equal(e->body[0], (uint8_t)i);
        vd_cache_entry_unref(e);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_backed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_open_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmp_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction_by_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalidate_and_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_many, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
