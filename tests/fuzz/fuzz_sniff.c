/* SPDX-License-Identifier: MIT */
/* Fuzz target: raw bytes as the start of a tunnel, classified as client and as server bytes.
 * Results must be consistent under growth: a DONE on any prefix equals the result on the whole
 * input (prefixes taken in pseudo-random steps derived from the input). A complete ClientHello
 * re-framed into differently sized TLS records must give the same result. */
#include "vd/config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "vd/sniff.h"

/* vd_sniff_client or vd_sniff_server */
#define SNIFF_FN(name) enum vd_sniff_state (*name)(const uint8_t *, size_t, struct vd_sniff *)

/* Runs @fn over @len bytes held in an exact-size heap buffer so over-reads are caught. */
static enum vd_sniff_state
run(SNIFF_FN(fn), const uint8_t *p, size_t len, struct vd_sniff *out)
{
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy);
    if (len) {
        memcpy(copy, p, len);
    }
    enum vd_sniff_state st = fn(copy, len, out);
    free(copy);
    return st;
}

static bool
same(const struct vd_sniff *a, const struct vd_sniff *b)
{
    if (a->proto != b->proto || a->has_sni != b->has_sni || strcmp(a->sni, b->sni) != 0 ||
        a->nalpn != b->nalpn || a->alpn_more != b->alpn_more || a->tls_version != b->tls_version ||
        a->tls13 != b->tls13) {
        return false;
    }
    for (unsigned i = 0; i < a->nalpn; i++) {
        if (strcmp(a->alpn[i], b->alpn[i]) != 0) {
            return false;
        }
    }
    return true;
}

/* Invariants of any result. */
static void
valid(enum vd_sniff_state st, const struct vd_sniff *o, size_t len)
{
    CHECK(st == VD_SNIFF_MORE || st == VD_SNIFF_DONE);
    CHECK(st == VD_SNIFF_DONE || (len < VD_SNIFF_MAX && o->proto == VD_PROTO_UNKNOWN));
    CHECK(o->sni[VD_SNIFF_SNI_LEN] == '\0');
    size_t n = strlen(o->sni);
    CHECK(o->has_sni == (n > 0));
    for (size_t i = 0; i < n; i++) {
        char c = o->sni[i];
        CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_');
    }
    CHECK(o->nalpn <= VD_SNIFF_ALPN_MAX);
    for (unsigned i = 0; i < o->nalpn; i++) {
        CHECK(o->alpn[i][0] != '\0' && o->alpn[i][VD_SNIFF_ALPN_LEN] == '\0');
    }
    if (o->proto != VD_PROTO_TLS) {
        CHECK(!o->has_sni && o->nalpn == 0 && !o->alpn_more && !o->tls13 && !o->tls_version);
    }
    CHECK(strlen(vd_proto_name(o->proto)) > 0);
}

static uint32_t
next(uint32_t *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

/* Whole input, then growing prefixes: any DONE must equal the whole input's result. */
static void
grow(SNIFF_FN(fn), const uint8_t *data, size_t size, uint32_t seed, struct vd_sniff *full)
{
    enum vd_sniff_state st = run(fn, data, size, full);
    valid(st, full, size);
    size_t len = 0;
    for (;;) {
        struct vd_sniff o;
        enum vd_sniff_state s = run(fn, data, len, &o);
        valid(s, &o, len);
        if (s == VD_SNIFF_DONE) {
            CHECK(st == VD_SNIFF_DONE && same(&o, full));
        }
        if (len == size) {
            CHECK(s == st);
            break;
        }
        /* small steps on small inputs; on big ones (up to VD_SNIFF_MAX and past) coarser */
        size_t span = seed & 1 ? 7 : 300;
        span = size > 2048 ? size / 16 : span;
        len += 1 + next(&seed) % span;
        len = VD_MIN(len, size);
    }
}

/* Re-frames the handshake bytes of a complete ClientHello in @data into records of sizes drawn
 * from @seed; the result must not change. */
static void
reframe(const uint8_t *data, size_t size, uint32_t seed, const struct vd_sniff *full)
{
    uint8_t *hs = malloc(size), *rec = NULL;
    CHECK(hs);
    size_t nhs = 0, off = 0;
    while (off + 5 <= size && data[off] == 22) {
        size_t rlen = (size_t)data[off + 3] << 8 | data[off + 4];
        rlen = VD_MIN(rlen, size - off - 5);
        memcpy(hs + nhs, data + off + 5, rlen);
        nhs += rlen;
        off += 5 + rlen;
    }
    CHECK(nhs >= 4);
    size_t mlen = 4 + ((size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3]);
    CHECK(mlen <= nhs);
    rec = malloc(mlen * 6);
    CHECK(rec);
    size_t n = 0;
    for (size_t h = 0; h < mlen;) {
        size_t want = 1 + next(&seed) % (seed & 2 ? 3 : 600);
        size_t k = VD_MIN(mlen - h, want);
        rec[n++] = 22;
        rec[n++] = 3;
        rec[n++] = 1;
        rec[n++] = (uint8_t)(k >> 8);
        rec[n++] = (uint8_t)k;
        memcpy(rec + n, hs + h, k);
        n += k;
        h += k;
    }
    if (n <= VD_SNIFF_MAX) {
        struct vd_sniff o;
        CHECK(run(vd_sniff_client, rec, n, &o) == VD_SNIFF_DONE && same(&o, full));
    }
    free(rec);
    free(hs);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++) {
        seed = (seed ^ data[i]) * 16777619u;
    }
    struct vd_sniff full;
    grow(vd_sniff_client, data, size, seed, &full);
    if (full.proto == VD_PROTO_TLS && full.tls_version) {
        reframe(data, size, seed, &full);
    }
    grow(vd_sniff_server, data, size, seed ^ 0x5a5a5a5au, &full);
    return 0;
}
