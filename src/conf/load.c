/* SPDX-License-Identifier: MIT */
/* YAML configuration loader. libfyaml's event parser feeds a small tree whose nodes keep their
 * 1-based line and column; the tree is then mapped onto a snapshot that starts from
 * vd_conf_default(), so every default lives in conf.c. The first problem found is reported as
 * "FILE:LINE:COLUMN: KEY: message", KEY being the dotted path of the offending node. */
#include "vd/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libfyaml.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vd/access.h"
#include "vd/auth.h"
#include "vd/conf.h"
#include "vd/err.h"
#include "vd/log.h"
#include "vd/sock.h"

#define MAX_FILE       (1024 * 1024) /* bytes of YAML read at most */
#define MAX_NODES      100000        /* scalars and collections in one file */
#define MAX_DEPTH      64            /* nesting of collections */
#define MAX_ITEMS      100000        /* sequence entries, aliases expanded */
#define MAX_LISTENERS  1024
#define MAX_PORT_ITEMS 1024 /* connect.ports entries */
#define KEY_MAX        192  /* dotted key path, as printed */
#define SHOW_MAX       100  /* bytes of a value quoted in a message */

enum ykind {
    Y_SCALAR,
    Y_SEQ,
    Y_MAP,
};

struct ynode {
    enum ykind kind;
    int line, col;      /* 1-based start of the node */
    bool plain;         /* plain scalar without !!str: may read as null, a boolean or a number */
    char *text;         /* scalars: the value, NUL-terminated; @len is exact (may hold NULs) */
    size_t len;         /* bytes of @text */
    struct ynode **kid; /* sequence items, or mapping keys and values interleaved (borrowed) */
    size_t nkid, cap;
    char *anchor;              /* name an alias may refer to, or NULL */
    struct ynode *next;        /* every node of the file, for freeing */
    struct ynode *next_anchor; /* anchored nodes, most recent first */
};

/* Loader state for one vd_conf_load() call. */
struct ld {
    const char *file; /* as given by the caller, printed in messages */
    char *dir;        /* absolute directory of @file, for relative paths */
    char *err;        /* caller's buffer, capacity @errlen */
    size_t errlen;
    struct ynode *nodes; /* all nodes, owned */
    size_t nnodes;
    struct ynode *anchors; /* borrowed from @nodes */
    int last_line, last_col;
    size_t items;      /* sequence entries visited, for MAX_ITEMS */
    struct vd_conf *c; /* the snapshot being filled */
};

static int fail(struct ld *ld, const struct ynode *n, const char *key, const char *fmt, ...)
    VD_PRINTF(4, 5);

static int
fail(struct ld *ld, const struct ynode *n, const char *key, const char *fmt, ...)
{
    va_list ap;
    if (!ld->err || ld->errlen == 0) {
        return VD_ECONF;
    }
    int off = snprintf(ld->err, ld->errlen, "%s:%d:%d: %s: ", ld->file, n ? n->line : 1,
                       n ? n->col : 1, *key ? key : "(root)");
    if (off >= 0 && (size_t)off < ld->errlen) {
        va_start(ap, fmt);
        vsnprintf(ld->err + off, ld->errlen - (size_t)off, fmt, ap);
        va_end(ap);
    }
    return VD_ECONF;
}

/* Errors about the file itself, which has no position. */
static int
fail_file(struct ld *ld, int rc, const char *what)
{
    if (ld->err && ld->errlen) {
        snprintf(ld->err, ld->errlen, "%s: %s", ld->file, what);
    }
    return rc;
}

static int
oom(struct ld *ld)
{
    return fail_file(ld, VD_ENOMEM, "out of memory");
}

/* Quotes a scalar for a message: escaped, cut at SHOW_MAX bytes. */
static const char *
show(char *buf, size_t cap, const struct ynode *n)
{
    size_t len = VD_MIN(n->len, SHOW_MAX);
    size_t o = vd_log_escape(buf, cap, (const uint8_t *)n->text, len);
    if (len < n->len && o + 4 <= cap) {
        memcpy(buf + o, "...", 4);
    }
    return buf;
}

static bool
is_null(const struct ynode *n)
{
    if (n->kind != Y_SCALAR || !n->plain) {
        return false;
    }
    /* YAML 1.2 core schema §10.3.2: null is "", ~, null, Null or NULL when plain. */
    return n->len == 0 || strcmp(n->text, "~") == 0 || strcmp(n->text, "null") == 0 ||
           strcmp(n->text, "Null") == 0 || strcmp(n->text, "NULL") == 0;
}

static const char *
kind_name(const struct ynode *n)
{
    if (n->kind == Y_MAP) {
        return "a mapping";
    }
    if (n->kind == Y_SEQ) {
        return "a sequence";
    }
    return is_null(n) ? "an empty value" : "a scalar";
}

/* ---- building the tree from parser events ---- */

static struct ynode *
node_new(struct ld *ld, enum ykind kind, const struct fy_mark *m)
{
    struct ynode *n = calloc(1, sizeof(*n));
    if (!n) {
        return NULL;
    }
    n->kind = kind;
    /* An empty scalar has no mark: place it where the previous token ended. */
    n->line = m ? m->line + 1 : ld->last_line;
    n->col = m ? m->column + 1 : ld->last_col;
    n->next = ld->nodes;
    ld->nodes = n;
    ld->nnodes++;
    return n;
}

static void
nodes_free(struct ld *ld)
{
    struct ynode *n = ld->nodes;
    while (n) {
        struct ynode *next = n->next;
        free(n->text);
        free(n->kid);
        free(n->anchor);
        free(n);
        n = next;
    }
    ld->nodes = NULL;
}

static int
attach(struct ld *ld, struct ynode **stack, size_t depth, struct ynode **root, struct ynode *n)
{
    if (depth == 0) {
        *root = n;
        return 0;
    }
    struct ynode *p = stack[depth - 1];
    if (p->nkid == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        struct ynode **k = realloc(p->kid, cap * sizeof(*k));
        if (!k) {
            return oom(ld);
        }
        p->kid = k;
        p->cap = cap;
    }
    p->kid[p->nkid++] = n;
    return 0;
}

/* Applies a node's tag: !!str makes a plain scalar a string; other yaml.org tags and the
 * non-specific "!" are accepted; application tags mean nothing to viaduct. */
static int
apply_tag(struct ld *ld, struct ynode *n, struct fy_token *tag)
{
    size_t tl;
    const char *t = tag ? fy_token_get_text(tag, &tl) : NULL;
    static const char yaml_org[] = "tag:yaml.org,2002:";
    if (!t) {
        return 0;
    }
    if (tl == 1 && t[0] == '!') {
        n->plain = false;
        return 0;
    }
    if (tl >= sizeof(yaml_org) - 1 && memcmp(t, yaml_org, sizeof(yaml_org) - 1) == 0) {
        if (tl == sizeof(yaml_org) + 2 && memcmp(t + sizeof(yaml_org) - 1, "str", 3) == 0) {
            n->plain = false;
        }
        return 0;
    }
    char buf[SHOW_MAX + 8];
    struct ynode shown = {.text = (char *)(uintptr_t)t, .len = tl};
    const struct fy_mark *m = fy_token_start_mark(tag);
    struct ynode at = {.line = m ? m->line + 1 : n->line, .col = m ? m->column + 1 : n->col};
    return fail(ld, &at, "(yaml)", "unsupported tag '%s'", show(buf, sizeof(buf), &shown));
}

static int
set_anchor(struct ld *ld, struct ynode *n, struct fy_token *anchor)
{
    size_t al;
    const char *a = anchor ? fy_token_get_text(anchor, &al) : NULL;
    if (!a) {
        return 0;
    }
    n->anchor = strndup(a, al);
    return n->anchor ? 0 : oom(ld);
}

/* Anchors become visible once their node is complete, so an alias can never point at one of
 * its own ancestors (no cycles). */
static void
anchor_publish(struct ld *ld, struct ynode *n)
{
    if (n->anchor) {
        n->next_anchor = ld->anchors;
        ld->anchors = n;
    }
}

static int
on_event(struct ld *ld, struct fy_event *ev, struct ynode **stack, size_t *depth, int *ndocs,
         struct ynode **root)
{
    const struct fy_mark *m = fy_event_start_mark(ev);
    struct ynode at = {.line = m ? m->line + 1 : ld->last_line,
                       .col = m ? m->column + 1 : ld->last_col};
    struct ynode *n;
    int rc;

    if (ld->nnodes >= MAX_NODES) {
        return fail(ld, &at, "(yaml)", "more than %d nodes", MAX_NODES);
    }
    switch (ev->type) {
    case FYET_DOCUMENT_START:
        if (++*ndocs > 1) {
            return fail(ld, &at, "(yaml)", "only one YAML document is allowed");
        }
        return 0;
    case FYET_SCALAR: {
        size_t len;
        const char *t = fy_token_get_text(ev->scalar.value, &len);
        enum fy_scalar_style st = fy_token_scalar_style(ev->scalar.value);
        n = node_new(ld, Y_SCALAR, m);
        if (!n || !t || !(n->text = malloc(len + 1))) {
            return oom(ld);
        }
        memcpy(n->text, t, len);
        n->text[len] = '\0';
        n->len = len;
        n->plain = st == FYSS_PLAIN;
        /* The mark is on the first character inside the quotes: point at the quote. */
        if ((st == FYSS_SINGLE_QUOTED || st == FYSS_DOUBLE_QUOTED) && m && n->col > 1) {
            n->col--;
        }
        if ((rc = apply_tag(ld, n, ev->scalar.tag)) ||
            (rc = set_anchor(ld, n, ev->scalar.anchor))) {
            return rc;
        }
        anchor_publish(ld, n);
        return attach(ld, stack, *depth, root, n);
    }
    case FYET_ALIAS: {
        size_t al;
        const char *a = fy_token_get_text(ev->alias.anchor, &al);
        for (n = ld->anchors; n; n = n->next_anchor) {
            if (a && strlen(n->anchor) == al && memcmp(n->anchor, a, al) == 0) {
                return attach(ld, stack, *depth, root, n);
            }
        }
        char buf[SHOW_MAX + 8];
        struct ynode shown = {.text = (char *)(uintptr_t)(a ? a : ""), .len = a ? al : 0};
        /* The mark is on the name: point at the '*'. */
        at.col -= m && at.col > 1;
        return fail(ld, &at, "(yaml)", "alias *%s refers to no complete anchored node",
                    show(buf, sizeof(buf), &shown));
    }
    case FYET_SEQUENCE_START:
    case FYET_MAPPING_START: {
        bool seq = ev->type == FYET_SEQUENCE_START;
        if (*depth >= MAX_DEPTH) {
            return fail(ld, &at, "(yaml)", "collections nested deeper than %d levels", MAX_DEPTH);
        }
        n = node_new(ld, seq ? Y_SEQ : Y_MAP, m);
        if (!n) {
            return oom(ld);
        }
        if ((rc = apply_tag(ld, n, seq ? ev->sequence_start.tag : ev->mapping_start.tag)) ||
            (rc = set_anchor(ld, n, seq ? ev->sequence_start.anchor : ev->mapping_start.anchor)) ||
            (rc = attach(ld, stack, *depth, root, n))) {
            return rc;
        }
        stack[(*depth)++] = n;
        return 0;
    }
    case FYET_SEQUENCE_END:
    case FYET_MAPPING_END:
        if (*depth > 0) {
            anchor_publish(ld, stack[--*depth]);
        }
        return 0;
    default:
        return 0;
    }
}

static void
diag_drop(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    /* libfyaml must print nothing: errors are collected and reported by the loader. */
    (void)diag;
    (void)user;
    (void)buf;
    (void)len;
}

static int
syntax_error(struct ld *ld, struct fy_diag *diag)
{
    void *it = NULL;
    struct fy_diag_error *de;
    char msg[256] = "malformed YAML";
    struct ynode at = {.line = ld->last_line, .col = ld->last_col};
    while ((de = fy_diag_errors_iterate(diag, &it)) != NULL) {
        if (de->type >= FYET_ERROR) {
            /* libfyaml's collected positions are already 1-based. */
            if (de->line > 0) {
                at.line = de->line;
                at.col = de->column > 0 ? de->column : 1;
            }
            if (de->msg) {
                snprintf(msg, sizeof(msg), "%s", de->msg);
                size_t l = strlen(msg);
                while (l > 0 && isspace((unsigned char)msg[l - 1])) {
                    msg[--l] = '\0';
                }
            }
            break;
        }
    }
    return fail(ld, &at, "syntax error", "%s", msg);
}

/* YAML 1.2 §5.2: viaduct reads UTF-8 only. Checking it first also keeps invalid bytes away
 * from libfyaml 0.7.12, which loops forever on some of them in a directive line ("%\xba"). */
static int
check_utf8(struct ld *ld, const uint8_t *s, size_t len)
{
    struct ynode at = {.line = 1, .col = 1};
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        size_t n = b < 0x80                 ? 1
                   : b >= 0xc2 && b <= 0xdf ? 2
                   : (b & 0xf0) == 0xe0     ? 3
                   : b >= 0xf0 && b <= 0xf4 ? 4
                                            : 0;
        uint32_t cp = n == 1 ? b : n == 2 ? b & 0x1fu : n == 3 ? b & 0x0fu : b & 0x07u;
        bool ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++) {
            ok = (s[i + k] & 0xc0) == 0x80;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        /* No overlong forms, surrogates, or code points past U+10FFFF (RFC 3629 §3). */
        if (ok && ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
                   (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))) {
            ok = false;
        }
        if (!ok) {
            return fail(ld, &at, "syntax error", "invalid UTF-8 (byte 0x%02x at offset %zu)", b, i);
        }
        if (b == '\n') {
            at.line++;
            at.col = 1;
        } else {
            at.col++;
        }
        i += n;
    }
    return 0;
}

static int
parse_yaml(struct ld *ld, const char *buf, size_t len, struct ynode **root)
{
    struct fy_diag_cfg dcfg;
    struct fy_parse_cfg pcfg;
    struct fy_parser *fyp = NULL;
    struct fy_event *ev;
    struct ynode *stack[MAX_DEPTH];
    size_t depth = 0;
    int ndocs = 0, rc = 0;

    if ((rc = check_utf8(ld, (const uint8_t *)buf, len))) {
        return rc;
    }
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL;
    dcfg.output_fn = diag_drop;
    dcfg.colorize = false;
    struct fy_diag *diag = fy_diag_create(&dcfg);
    if (!diag) {
        return oom(ld);
    }
    fy_diag_set_collect_errors(diag, true);
    memset(&pcfg, 0, sizeof(pcfg));
    pcfg.flags = FYPCF_QUIET;
    pcfg.diag = diag;
    fyp = fy_parser_create(&pcfg);
    if (!fyp || fy_parser_set_string(fyp, buf, len) != 0) {
        rc = oom(ld);
        goto out;
    }
    ld->last_line = ld->last_col = 1;
    while ((ev = fy_parser_parse(fyp)) != NULL) {
        rc = on_event(ld, ev, stack, &depth, &ndocs, root);
        const struct fy_mark *e = fy_event_end_mark(ev);
        if (e) {
            ld->last_line = e->line + 1;
            ld->last_col = e->column + 1;
        }
        fy_parser_event_free(fyp, ev);
        if (rc) {
            goto out;
        }
    }
    if (fy_parser_get_stream_error(fyp)) {
        rc = syntax_error(ld, diag);
    }
out:
    if (fyp) {
        fy_parser_destroy(fyp);
    }
    fy_diag_destroy(diag);
    return rc;
}

static int
read_file(struct ld *ld, char **bufp, size_t *lenp)
{
    char what[160];
    int fd = open(ld->file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(what, sizeof(what), "cannot open: %s", vd_strerror(-errno));
        return fail_file(ld, VD_ECONF, what);
    }
    char *buf = malloc(MAX_FILE + 1);
    size_t len = 0;
    if (!buf) {
        close(fd);
        return oom(ld);
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, MAX_FILE + 1 - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            snprintf(what, sizeof(what), "cannot read: %s", vd_strerror(-errno));
            close(fd);
            free(buf);
            return fail_file(ld, VD_ECONF, what);
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
        if (len > MAX_FILE) {
            close(fd);
            free(buf);
            return fail_file(ld, VD_ECONF, "file is larger than 1 MiB");
        }
    }
    close(fd);
    *bufp = buf;
    *lenp = len;
    return 0;
}

/* The absolute directory of the file, without "./" noise, so relative paths in the file do not
 * depend on the working directory viaduct later runs in. */
static int
conf_dir(struct ld *ld)
{
    char cwd[PATH_MAX];
    const char *slash = strrchr(ld->file, '/');
    const char *rel = ld->file;
    size_t rlen = slash ? (size_t)(slash - ld->file) : 0;
    size_t need;
    if (ld->file[0] == '/') {
        ld->dir = strndup(ld->file, rlen ? rlen : 1);
        return ld->dir ? 0 : oom(ld);
    }
    while (rlen >= 2 && rel[0] == '.' && rel[1] == '/') {
        rel += 2;
        rlen -= 2;
        while (rlen && rel[0] == '/') {
            rel++;
            rlen--;
        }
    }
    if (rlen == 1 && rel[0] == '.') {
        rlen = 0;
    }
    if (!getcwd(cwd, sizeof(cwd))) {
        char what[160];
        snprintf(what, sizeof(what), "cannot get the working directory: %s", vd_strerror(-errno));
        return fail_file(ld, VD_ECONF, what);
    }
    need = strlen(cwd) + 1 + rlen + 1;
    ld->dir = malloc(need);
    if (!ld->dir) {
        return oom(ld);
    }
    if (rlen) {
        snprintf(ld->dir, need, "%s%s%.*s", cwd, strcmp(cwd, "/") ? "/" : "", (int)rlen, rel);
    } else {
        snprintf(ld->dir, need, "%s", cwd);
    }
    return 0;
}

/* ---- typed access to nodes ---- */

/* Appends to a key path, truncating (paths are bounded by the schema; only hostile files with
 * huge unknown keys get cut). */
static void
key_append(char *dst, const char *a, const char *b, const char *c)
{
    const char *parts[] = {a, b, c};
    size_t o = 0;
    for (size_t i = 0; i < 3; i++) {
        size_t l = strlen(parts[i]);
        l = VD_MIN(l, KEY_MAX - 1 - o);
        memmove(dst + o, parts[i], l);
        o += l;
    }
    dst[o] = '\0';
}

static void
key_join(char *dst, const char *base, const char *name)
{
    char esc[KEY_MAX];
    vd_log_escape(esc, sizeof(esc), (const uint8_t *)name, strlen(name));
    key_append(dst, base, *base ? "." : "", esc);
}

static void
key_index(char *dst, const char *base, size_t i)
{
    char num[32];
    snprintf(num, sizeof(num), "[%zu]", i);
    key_append(dst, base, num, "");
}

/* "a, b or c" */
static void
list_names(char *dst, size_t cap, const char *const *names, size_t n)
{
    size_t o = 0;
    dst[0] = '\0';
    for (size_t i = 0; i < n && o < cap; i++) {
        int w = snprintf(dst + o, cap - o, "%s%s", i == 0 ? "" : (i + 1 == n ? " or " : ", "),
                         names[i]);
        if (w < 0) {
            break;
        }
        o += (size_t)w;
    }
}

/* Checks that @n is a mapping whose keys are distinct strings taken from @names. */
static int
check_map(struct ld *ld, const struct ynode *n, const char *key, const char *const *names,
          size_t nnames)
{
    char sub[KEY_MAX], list[512];
    if (n->kind != Y_MAP) {
        return fail(ld, n, key, "expected a mapping, got %s", kind_name(n));
    }
    for (size_t i = 0; i + 1 < n->nkid; i += 2) {
        const struct ynode *k = n->kid[i];
        size_t j;
        if (k->kind != Y_SCALAR || is_null(k) || memchr(k->text, 0, k->len)) {
            return fail(ld, k, key, "keys must be non-empty strings, got %s", kind_name(k));
        }
        key_join(sub, key, k->text);
        for (j = 0; j < i; j += 2) {
            if (strcmp(n->kid[j]->text, k->text) == 0) {
                return fail(ld, k, sub, "duplicate key (first at line %d, column %d)",
                            n->kid[j]->line, n->kid[j]->col);
            }
        }
        for (j = 0; j < nnames; j++) {
            if (strcmp(names[j], k->text) == 0) {
                break;
            }
        }
        if (j == nnames) {
            list_names(list, sizeof(list), names, nnames);
            return fail(ld, k, sub, "unknown key (expected %s)", list);
        }
    }
    return 0;
}

/* The value of @name in mapping @n, or NULL. */
static const struct ynode *
get(const struct ynode *n, const char *name)
{
    for (size_t i = 0; i + 1 < n->nkid; i += 2) {
        if (strcmp(n->kid[i]->text, name) == 0) {
            return n->kid[i + 1];
        }
    }
    return NULL;
}

/* Position of the key @name in @n (for "missing" errors the mapping itself). */
static int
missing(struct ld *ld, const struct ynode *map, const char *key, const char *name)
{
    char sub[KEY_MAX];
    key_join(sub, key, name);
    return fail(ld, map, sub, "required key is missing");
}

static int
want_scalar(struct ld *ld, const struct ynode *n, const char *key, const char *what)
{
    if (n->kind != Y_SCALAR || is_null(n)) {
        return fail(ld, n, key, "expected %s, got %s", what, kind_name(n));
    }
    if (memchr(n->text, 0, n->len)) {
        return fail(ld, n, key, "expected %s, got a value containing a NUL character", what);
    }
    return 0;
}

static int
want_seq(struct ld *ld, const struct ynode *n, const char *key, const char *what)
{
    if (n->kind != Y_SEQ) {
        return fail(ld, n, key, "expected a sequence of %s, got %s", what, kind_name(n));
    }
    /* Aliases let a small file name the same list many times: cap the expanded total. */
    ld->items += n->nkid;
    if (ld->items > MAX_ITEMS) {
        return fail(ld, n, key, "more than %d list entries in all (aliases counted each time)",
                    MAX_ITEMS);
    }
    return 0;
}

/* Decimal digits only: YAML's other integer forms (0x, 0o, signs) mean nothing here. */
static bool
parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s) || v > (UINT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

static int
get_uint(struct ld *ld, const struct ynode *n, const char *key, uint64_t lo, uint64_t hi,
         uint64_t *out)
{
    char vb[SHOW_MAX + 8];
    uint64_t v;
    int rc = want_scalar(ld, n, key, "an integer");
    if (rc) {
        return rc;
    }
    if (!parse_u64(n->text, &v) || v < lo || v > hi) {
        return fail(ld, n, key, "expected an integer from %" PRIu64 " to %" PRIu64 ", got '%s'", lo,
                    hi, show(vb, sizeof(vb), n));
    }
    *out = v;
    return 0;
}

static int
get_u32(struct ld *ld, const struct ynode *n, const char *key, uint32_t lo, uint32_t *out)
{
    uint64_t v;
    int rc = get_uint(ld, n, key, lo, UINT32_MAX, &v);
    if (!rc) {
        *out = (uint32_t)v;
    }
    return rc;
}

static int
get_size(struct ld *ld, const struct ynode *n, const char *key, uint64_t lo, uint64_t hi,
         uint64_t *out)
{
    char vb[SHOW_MAX + 8];
    uint64_t v;
    int rc = want_scalar(ld, n, key, "a size");
    if (rc) {
        return rc;
    }
    if (vd_conf_parse_size(n->text, &v) != 0) {
        return fail(ld, n, key,
                    "bad size '%s': expected a whole number of bytes with an optional unit "
                    "(B; k, KB or KiB; m, MB or MiB; g, GB or GiB; all powers of 1024)",
                    show(vb, sizeof(vb), n));
    }
    if (v < lo || v > hi) {
        return fail(ld, n, key, "size '%s' is out of range: %" PRIu64 " to %" PRIu64 " bytes",
                    show(vb, sizeof(vb), n), lo, hi);
    }
    *out = v;
    return 0;
}

static int
get_size32(struct ld *ld, const struct ynode *n, const char *key, uint32_t *out)
{
    uint64_t v = 0;
    int rc = get_size(ld, n, key, 1, UINT32_MAX, &v);
    if (!rc) {
        *out = (uint32_t)v;
    }
    return rc;
}

/* A duration read with @parse (milliseconds or microseconds), whose units @units names. */
static int
get_scaled_duration(struct ld *ld, const struct ynode *n, const char *key,
                    int (*parse)(const char *, uint64_t *), const char *units, uint64_t *out)
{
    char vb[SHOW_MAX + 8];
    int rc = want_scalar(ld, n, key, "a duration");
    if (rc) {
        return rc;
    }
    if (parse(n->text, out) != 0) {
        return fail(ld, n, key,
                    "bad duration '%s': expected a whole number with an optional unit %s (no "
                    "unit: seconds)",
                    show(vb, sizeof(vb), n), units);
    }
    return 0;
}

static int
get_duration(struct ld *ld, const struct ynode *n, const char *key, bool zero_ok, uint64_t *out)
{
    uint64_t v;
    int rc = get_scaled_duration(ld, n, key, vd_conf_parse_duration, "ms, s, m, h or d", &v);
    if (rc) {
        return rc;
    }
    if (v == 0 && !zero_ok) {
        return fail(ld, n, key, "duration must be greater than 0");
    }
    *out = v;
    return 0;
}

/* A duration in microseconds, 0 to 1 s (0 allowed). */
static int
get_duration_us(struct ld *ld, const struct ynode *n, const char *key, uint64_t *out)
{
    char vb[SHOW_MAX + 8];
    uint64_t v;
    int rc = get_scaled_duration(ld, n, key, vd_conf_parse_duration_us, "us, ms or s", &v);
    if (rc) {
        return rc;
    }
    if (v > 1000000) {
        return fail(ld, n, key, "duration '%s' is out of range: 0 to 1 s", show(vb, sizeof(vb), n));
    }
    *out = v;
    return 0;
}

/* 1 or 0 for a YAML 1.2 core-schema boolean (plain true/True/TRUE, false/False/FALSE; "yes" and
 * "on" are strings), -1 otherwise. */
static int
bool_value(const struct ynode *n)
{
    if (n->kind != Y_SCALAR || !n->plain) {
        return -1;
    }
    if (!strcmp(n->text, "true") || !strcmp(n->text, "True") || !strcmp(n->text, "TRUE")) {
        return 1;
    }
    if (!strcmp(n->text, "false") || !strcmp(n->text, "False") || !strcmp(n->text, "FALSE")) {
        return 0;
    }
    return -1;
}

static int
get_bool(struct ld *ld, const struct ynode *n, const char *key, bool *out)
{
    char vb[SHOW_MAX + 8];
    int b = bool_value(n);
    if (b >= 0) {
        *out = b == 1;
        return 0;
    }
    if (n->kind != Y_SCALAR || is_null(n)) {
        return fail(ld, n, key, "expected true or false, got %s", kind_name(n));
    }
    return fail(ld, n, key, "expected true or false, got '%s'", show(vb, sizeof(vb), n));
}

/* One of @names; *@out gets its index. @what names the thing ("mode"). */
static int
get_enum(struct ld *ld, const struct ynode *n, const char *key, const char *what,
         const char *const *names, size_t nnames, size_t *out)
{
    char vb[SHOW_MAX + 8], list[256];
    int rc = want_scalar(ld, n, key, what);
    if (rc) {
        return rc;
    }
    for (size_t i = 0; i < nnames; i++) {
        if (strcmp(n->text, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    list_names(list, sizeof(list), names, nnames);
    return fail(ld, n, key, "unknown %s '%s' (expected %s)", what, show(vb, sizeof(vb), n), list);
}

/* Stores a copy of the scalar in *@dst, freeing what was there. */
static int
set_str(struct ld *ld, char **dst, const char *s)
{
    char *d = strdup(s);
    if (!d) {
        return oom(ld);
    }
    free(*dst);
    *dst = d;
    return 0;
}

/* A path; relative ones are taken from the configuration file's directory. */
static int
get_path(struct ld *ld, const struct ynode *n, const char *key, char **dst)
{
    int rc = want_scalar(ld, n, key, "a path");
    if (rc) {
        return rc;
    }
    if (n->text[0] == '/') {
        return set_str(ld, dst, n->text);
    }
    size_t need = strlen(ld->dir) + 1 + n->len + 1;
    char *p = malloc(need);
    if (!p) {
        return oom(ld);
    }
    snprintf(p, need, "%s%s%s", ld->dir, strcmp(ld->dir, "/") ? "/" : "", n->text);
    free(*dst);
    *dst = p;
    return 0;
}

/* A TCP congestion control name (tcp(7) TCP_CONGESTION), tried on a scratch socket so that a
 * name the kernel does not have, or one this user may not pick, fails here with the reason. */
static int
get_congestion(struct ld *ld, const struct ynode *n, const char *key, char **dst)
{
    char vb[SHOW_MAX + 8];
    int rc = want_scalar(ld, n, key, "a congestion control name");
    if (rc) {
        return rc;
    }
    bool ok = n->len > 0 && n->len < 16; /* TCP_CA_NAME_MAX */
    for (size_t i = 0; ok && i < n->len; i++) {
        unsigned char ch = (unsigned char)n->text[i];
        ok = islower(ch) || isdigit(ch) || ch == '_' || ch == '-';
    }
    if (!ok) {
        return fail(ld, n, key,
                    "bad congestion control name '%s': expected 1 to 15 of a-z, 0-9, '_', '-'",
                    show(vb, sizeof(vb), n));
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
        return fail(ld, n, key, "cannot check '%s': %s", n->text, vd_strerror(-errno));
    }
    int r = setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, n->text, (socklen_t)n->len);
    int e = errno;
    close(fd);
    if (r < 0) {
        char avail[256] = "";
        int af = open(e == EPERM ? "/proc/sys/net/ipv4/tcp_allowed_congestion_control"
                                 : "/proc/sys/net/ipv4/tcp_available_congestion_control",
                      O_RDONLY | O_CLOEXEC);
        if (af >= 0) {
            ssize_t k = read(af, avail, sizeof(avail) - 1);
            avail[k > 0 ? k : 0] = 0;
            avail[strcspn(avail, "\n")] = 0;
            close(af);
        }
        if (e == EPERM) {
            return fail(ld, n, key,
                        "congestion control '%s' is not allowed for this user (allowed: %s)",
                        n->text, avail[0] ? avail : "unknown");
        }
        return fail(ld, n, key, "congestion control '%s' is not available (available: %s)", n->text,
                    avail[0] ? avail : "unknown");
    }
    return set_str(ld, dst, n->text);
}

/* A file viaduct will read (certificate, key, CA bundle). */
static int
check_readable(struct ld *ld, const struct ynode *n, const char *key, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        return fail(ld, n, key, "cannot read %s: %s", path, vd_strerror(-errno));
    }
    if (!S_ISREG(st.st_mode)) {
        return fail(ld, n, key, "%s is not a regular file", path);
    }
    if (access(path, R_OK) != 0) {
        return fail(ld, n, key, "cannot read %s: %s", path, vd_strerror(-errno));
    }
    return 0;
}

static int
check_dir(struct ld *ld, const struct ynode *n, const char *key, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        return fail(ld, n, key, "cannot read directory %s: %s", path, vd_strerror(-errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        return fail(ld, n, key, "%s is not a directory", path);
    }
    if (access(path, R_OK | X_OK) != 0) {
        return fail(ld, n, key, "cannot read directory %s: %s", path, vd_strerror(-errno));
    }
    return 0;
}

/* A log file viaduct will open for appending: it must be writable, or creatable. */
static int
check_writable(struct ld *ld, const struct ynode *n, const char *key, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            return fail(ld, n, key, "%s is a directory", path);
        }
        if (access(path, W_OK) != 0) {
            return fail(ld, n, key, "cannot write %s: %s", path, vd_strerror(-errno));
        }
        return 0;
    }
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    size_t dl = slash && slash != path ? (size_t)(slash - path) : 1;
    if (dl >= sizeof(dir)) {
        return fail(ld, n, key, "path is too long");
    }
    memcpy(dir, slash ? path : ".", dl);
    dir[dl] = '\0';
    if (access(dir, W_OK | X_OK) != 0) {
        return fail(ld, n, key, "cannot create %s: directory %s: %s", path, dir,
                    vd_strerror(-errno));
    }
    return 0;
}

/* ---- value syntax ---- */

/* RFC 9110 §5.6.2: tchar. */
static bool
is_tchar(int ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* A DNS name: dot-separated labels of letters, digits, '-' and '_' (RFC 1123 §2.1, plus the
 * underscore some internal names use), 1-63 bytes each, 253 in all. IPv4 literals pass too. */
static bool
is_dns_name(const char *s, size_t len)
{
    size_t label = 0;
    if (len == 0 || len > 253) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-') {
                return false;
            }
            label = 0;
            continue;
        }
        if (!isalnum(ch) && ch != '-' && ch != '_') {
            return false;
        }
        if (ch == '-' && label == 0) {
            return false;
        }
        if (++label > 63) {
            return false;
        }
    }
    return label > 0 && s[len - 1] != '-';
}

static bool
is_ipv6_literal(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in6_addr a6;
    if (len == 0 || len >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &a6) == 1;
}

static void
lowercase(char *s)
{
    for (; *s; s++) {
        *s = (char)tolower((unsigned char)*s);
    }
}

/* ---- sections ---- */

static int
sec_workers(struct ld *ld, const struct ynode *n)
{
    char vb[SHOW_MAX + 8];
    uint64_t v;
    int rc = want_scalar(ld, n, "workers", "an integer or auto");
    if (rc) {
        return rc;
    }
    if (strcmp(n->text, "auto") == 0) {
        ld->c->workers = 0;
        return 0;
    }
    if (!parse_u64(n->text, &v) || v < 1 || v > 256) {
        return fail(ld, n, "workers", "expected an integer from 1 to 256 or auto, got '%s'",
                    show(vb, sizeof(vb), n));
    }
    ld->c->workers = (uint32_t)v;
    return 0;
}

static int
sec_tls(struct ld *ld, const struct ynode *n, const char *key, struct vd_conf_listener *l)
{
    static const char *const keys[] = {"certificates", "min_version"};
    static const char *const cert_keys[] = {"cert", "key"};
    static const char *const versions[] = {"\"1.2\"", "\"1.3\""};
    char sub[KEY_MAX], item[KEY_MAX], leaf[KEY_MAX], vb[SHOW_MAX + 8], list[64];
    const struct ynode *certs, *v;
    int rc;

    if ((rc = check_map(ld, n, key, keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if (!(certs = get(n, "certificates"))) {
        return missing(ld, n, key, "certificates");
    }
    key_join(sub, key, "certificates");
    if ((rc = want_seq(ld, certs, sub, "certificates"))) {
        return rc;
    }
    if (certs->nkid == 0) {
        return fail(ld, certs, sub, "at least one certificate is required");
    }
    l->tls = true;
    l->certs = calloc(certs->nkid, sizeof(*l->certs));
    if (!l->certs) {
        return oom(ld);
    }
    l->ncerts = certs->nkid;
    for (size_t i = 0; i < certs->nkid; i++) {
        const struct ynode *cn = certs->kid[i];
        struct vd_conf_cert *cc = &l->certs[i];
        key_index(item, sub, i);
        if ((rc = check_map(ld, cn, item, cert_keys, VD_ARRAY_LEN(cert_keys)))) {
            return rc;
        }
        for (size_t k = 0; k < 2; k++) {
            char **dst = k == 0 ? &cc->cert_file : &cc->key_file;
            if (!(v = get(cn, cert_keys[k]))) {
                return missing(ld, cn, item, cert_keys[k]);
            }
            key_join(leaf, item, cert_keys[k]);
            if ((rc = get_path(ld, v, leaf, dst)) || (rc = check_readable(ld, v, leaf, *dst))) {
                return rc;
            }
        }
    }
    v = get(n, "min_version");
    if (v) {
        key_join(sub, key, "min_version");
        if ((rc = want_scalar(ld, v, sub, "a TLS version"))) {
            return rc;
        }
        if (strcmp(v->text, "1.2") != 0 && strcmp(v->text, "1.3") != 0) {
            list_names(list, sizeof(list), versions, VD_ARRAY_LEN(versions));
            return fail(ld, v, sub, "unknown TLS version '%s' (expected %s)",
                        show(vb, sizeof(vb), v), list);
        }
    }
    return set_str(ld, &l->tls_min_version, v ? v->text : "1.2");
}

static int get_cidr_list(struct ld *ld, const struct ynode *v, const char *key, bool pool,
                         struct vd_conf_cidr **out, size_t *n);

static int
sec_listener(struct ld *ld, const struct ynode *n, const char *key, struct vd_conf_listener *l)
{
    static const char *const keys[] = {
        "address", "mode", "backlog", "tcp_congestion", "proxy_protocol", "proxy_protocol_from",
        "tls"};
    static const char *const modes[] = {"forward", "reverse", "admin"};
    char sub[KEY_MAX], vb[SHOW_MAX + 8];
    const struct ynode *v;
    size_t mode = 0;
    uint64_t backlog;
    int rc;

    if ((rc = check_map(ld, n, key, keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if (!(v = get(n, "address"))) {
        return missing(ld, n, key, "address");
    }
    key_join(sub, key, "address");
    if ((rc = want_scalar(ld, v, sub, "an address"))) {
        return rc;
    }
    if (vd_conf_parse_addr(v->text, &l->addr, &l->addrlen) != 0) {
        return fail(ld, v, sub,
                    "bad address '%s': expected IPV4:PORT, [IPV6]:PORT, :PORT or *:PORT with PORT "
                    "from 0 to 65535",
                    show(vb, sizeof(vb), v));
    }
    if ((rc = set_str(ld, &l->addr_text, v->text))) {
        return rc;
    }
    if ((v = get(n, "mode"))) {
        key_join(sub, key, "mode");
        if ((rc = get_enum(ld, v, sub, "mode", modes, VD_ARRAY_LEN(modes), &mode))) {
            return rc;
        }
        l->mode = mode == 0 ? VD_MODE_FORWARD : mode == 1 ? VD_MODE_REVERSE : VD_MODE_ADMIN;
    }
    if ((v = get(n, "backlog"))) {
        key_join(sub, key, "backlog");
        if ((rc = get_uint(ld, v, sub, 1, 65535, &backlog))) {
            return rc;
        }
        l->backlog = (unsigned)backlog;
    }
    if ((v = get(n, "tcp_congestion"))) {
        key_join(sub, key, "tcp_congestion");
        if ((rc = get_congestion(ld, v, sub, &l->tcp_congestion))) {
            return rc;
        }
    }
    if ((v = get(n, "proxy_protocol"))) {
        key_join(sub, key, "proxy_protocol");
        if ((rc = get_bool(ld, v, sub, &l->proxy_protocol))) {
            return rc;
        }
    }
    if ((v = get(n, "proxy_protocol_from"))) {
        key_join(sub, key, "proxy_protocol_from");
        if ((rc = get_cidr_list(ld, v, sub, false, &l->proxy_from, &l->nproxy_from))) {
            return rc;
        }
        if (!l->proxy_protocol) {
            return fail(ld, v, sub, "set proxy_protocol: true to use it");
        }
    } else if (l->proxy_protocol) {
        /* Only a load balancer on this machine may vouch for client addresses by default. */
        l->proxy_from = calloc(2, sizeof(*l->proxy_from));
        if (!l->proxy_from) {
            return oom(ld);
        }
        for (size_t i = 0; i < 2; i++) {
            struct sockaddr_storage *ss = &l->proxy_from[i].net;
            if (i == 0) {
                ss->ss_family = AF_INET;
                inet_pton(AF_INET, "127.0.0.0", &((struct sockaddr_in *)ss)->sin_addr);
                l->proxy_from[i].prefix = 8;
            } else {
                ss->ss_family = AF_INET6;
                inet_pton(AF_INET6, "::1", &((struct sockaddr_in6 *)ss)->sin6_addr);
                l->proxy_from[i].prefix = 128;
            }
        }
        l->nproxy_from = 2;
    }
    if ((v = get(n, "tls"))) {
        key_join(sub, key, "tls");
        return sec_tls(ld, v, sub, l);
    }
    return 0;
}

static int
sec_listeners(struct ld *ld, const struct ynode *n)
{
    char key[KEY_MAX], sub[KEY_MAX];
    struct vd_conf *c = ld->c;
    /* The embedded default listener carries the per-listener defaults (mode, backlog). */
    enum vd_listen_mode dmode = c->nlisteners ? c->listeners[0].mode : VD_MODE_FORWARD;
    unsigned dbacklog = c->nlisteners ? c->listeners[0].backlog : 511;
    int rc;

    if ((rc = want_seq(ld, n, "listeners", "listeners"))) {
        return rc;
    }
    if (n->nkid == 0) {
        return fail(ld, n, "listeners", "at least one listener is required");
    }
    if (n->nkid > MAX_LISTENERS) {
        return fail(ld, n, "listeners", "more than %d listeners", MAX_LISTENERS);
    }
    vd_conf_listeners_free(c);
    c->listeners = calloc(n->nkid, sizeof(*c->listeners));
    if (!c->listeners) {
        return oom(ld);
    }
    c->nlisteners = n->nkid;
    for (size_t i = 0; i < n->nkid; i++) {
        struct vd_conf_listener *l = &c->listeners[i];
        l->mode = dmode;
        l->backlog = dbacklog;
        key_index(key, "listeners", i);
        if ((rc = sec_listener(ld, n->kid[i], key, l))) {
            return rc;
        }
        for (size_t j = 0; j < i; j++) {
            if (vd_sockaddr_same_port(&c->listeners[j].addr, &l->addr)) {
                const struct ynode *a = get(n->kid[i], "address");
                const struct ynode *b = get(n->kid[j], "address");
                key_join(sub, key, "address");
                return fail(ld, a, sub,
                            "duplicate listener address %s (listeners[%zu] at line %d, column %d "
                            "has the same)",
                            l->addr_text, j, b->line, b->col);
            }
        }
    }
    return 0;
}

/* "all", an address, or address/prefix. */
static int
parse_cidr(struct ld *ld, const struct ynode *n, const char *key, struct vd_conf_cidr *a)
{
    char vb[SHOW_MAX + 8], net[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(n->text, '/');
    size_t nl = slash ? (size_t)(slash - n->text) : n->len;
    unsigned max;
    uint64_t prefix;

    memset(&a->net, 0, sizeof(a->net));
    a->prefix = 0;
    if (strcmp(n->text, "all") == 0) {
        return 0;
    }
    if (nl == 0 || nl >= sizeof(net)) {
        goto bad;
    }
    memcpy(net, n->text, nl);
    net[nl] = '\0';
    if (inet_pton(AF_INET, net, &((struct sockaddr_in *)&a->net)->sin_addr) == 1) {
        a->net.ss_family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, net, &((struct sockaddr_in6 *)&a->net)->sin6_addr) == 1) {
        a->net.ss_family = AF_INET6;
        max = 128;
    } else {
        goto bad;
    }
    a->prefix = max;
    if (slash) {
        if (!parse_u64(slash + 1, &prefix) || strlen(slash + 1) > 3) {
            return fail(ld, n, key,
                        "bad CIDR '%s': expected a prefix length from 0 to %u after '/'",
                        show(vb, sizeof(vb), n), max);
        }
        if (prefix > max) {
            return fail(ld, n, key, "bad CIDR '%s': prefix length %" PRIu64 " is longer than %u",
                        show(vb, sizeof(vb), n), prefix, max);
        }
        a->prefix = (unsigned)prefix;
    }
    return 0;
bad:
    return fail(ld, n, key,
                "bad CIDR '%s': expected an IPv4 or IPv6 address, optionally with /PREFIX, or all",
                show(vb, sizeof(vb), n));
}

/* "PORT" or "LOW-HIGH", 1-65535. */
static bool
parse_port_range(const char *text, uint64_t *lo, uint64_t *hi)
{
    const char *dash = strchr(text, '-');
    bool ok;
    if (dash) {
        char first[8];
        size_t fl = (size_t)(dash - text);
        ok = fl > 0 && fl < sizeof(first);
        if (ok) {
            memcpy(first, text, fl);
            first[fl] = '\0';
            ok = parse_u64(first, lo) && parse_u64(dash + 1, hi);
        }
    } else {
        ok = parse_u64(text, lo);
        *hi = *lo;
    }
    return ok && *lo >= 1 && *hi <= 65535 && *lo <= *hi;
}

/* A rule name as the 403 body and the log print it. No '[': "access[N]" stays reserved for
 * unnamed rules. */
static bool
is_rule_name(const char *s, size_t len)
{
    if (len == 0 || len > 64) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i])) {
            return false;
        }
    }
    return true;
}

/* Upgrade protocol names (RFC 9110 §7.8): a token, optionally "/" and a version token. */
static bool
is_protocol_name(const char *s, size_t len)
{
    if (len == 0 || s[0] == '/' || s[len - 1] == '/' || memchr(s, '/', len) != strrchr(s, '/')) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)s[i]) && s[i] != '/') {
            return false;
        }
    }
    return true;
}

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* The scalar items of a condition: a sequence of them or one scalar, never an empty list. */
static int
cond_items(struct ld *ld, const struct ynode *v, const char *key, const char *what, size_t *n)
{
    if (v->kind == Y_MAP || is_null(v)) {
        return fail(ld, v, key, "expected %s, or a sequence of them, got %s", what, kind_name(v));
    }
    if (v->kind == Y_SCALAR) {
        *n = 1;
        return 0;
    }
    int rc = want_seq(ld, v, key, what);
    if (rc) {
        return rc;
    }
    if (v->nkid == 0) {
        return fail(ld, v, key, "an empty list is not allowed: omit the key to match any value");
    }
    *n = v->nkid;
    return 0;
}

static const struct ynode *
cond_item(const struct ynode *v, size_t i, const char *key, char *sub)
{
    if (v->kind != Y_SEQ) {
        key_append(sub, key, "", "");
        return v;
    }
    key_index(sub, key, i);
    return v->kid[i];
}

enum {
    K_CLIENTS,
    K_USERS,
    K_METHODS,
    K_DEST_HOSTS,
    K_DEST_NETS,
    K_DEST_PORTS,
    K_DECLARED,
    K_PROTOCOLS,
    K_SNI,
    K_ALPN,
    K_SNI_MISMATCH,
    K_DECLARED_MISMATCH,
};

static const char *const rule_conds[] = {
    "clients",  "users",     "methods", "dest_hosts", "dest_nets",    "dest_ports",
    "declared", "protocols", "sni",     "alpn",       "sni_mismatch", "declared_mismatch",
};

/* How a condition's items are named in messages: "expected a user name", "bad user name". */
static const struct {
    const char *what, *noun;
} cond_desc[] = {
    [K_CLIENTS] = {"an address, a CIDR or all", "CIDR"},
    [K_USERS] = {"a user name", "user name"},
    [K_METHODS] = {"a method", "method"},
    [K_DEST_HOSTS] = {"a host name", "host"},
    [K_DEST_NETS] = {"an address, a CIDR or all", "CIDR"},
    [K_DEST_PORTS] = {"a port or a range", "port"},
    [K_DECLARED] = {"a protocol name", "protocol name"},
    [K_PROTOCOLS] = {"a protocol", "protocol"},
    [K_SNI] = {"a server name", "server name"},
    [K_ALPN] = {"an ALPN protocol id", "ALPN protocol id"},
};

static const char *const sniff_protocols[] = {"tls",  "ssh",  "http", "imap",
                                              "pop3", "smtp", "ftp",  "unknown"};

/* One item of a name-list condition, checked and stored (lowercase where names are). */
static int
cond_string(struct ld *ld, int k, const struct ynode *it, const char *sub, char **dst)
{
    char vb[SHOW_MAX + 8], buf[INET6_ADDRSTRLEN + 1];
    struct in6_addr a6;
    size_t idx = 0;
    int rc;

    if (k == K_PROTOCOLS) {
        if ((rc = get_enum(ld, it, sub, "protocol", sniff_protocols, VD_ARRAY_LEN(sniff_protocols),
                           &idx))) {
            return rc;
        }
        return set_str(ld, dst, sniff_protocols[idx]);
    }
    if ((rc = want_scalar(ld, it, sub, cond_desc[k].what))) {
        return rc;
    }
    const char *t = it->text;
    size_t len = it->len;
    bool ok = true, lower = false;
    const char *why = "";
    switch (k) {
    case K_USERS:
        ok = len <= 255 && !strchr(t, ':');
        for (size_t i = 0; ok && i < len; i++) {
            ok = (unsigned char)t[i] >= 0x20 && t[i] != 0x7f;
        }
        why = "expected 1 to 255 characters without ':' or control characters, or * for any "
              "authenticated user";
        break;
    case K_METHODS:
        for (size_t i = 0; ok && i < len; i++) {
            ok = is_tchar((unsigned char)t[i]);
        }
        why = "expected a method token such as GET or CONNECT (case-sensitive)";
        break;
    case K_DEST_HOSTS:
        /* IPv6 literals with or without brackets; stored as inet_ntop writes them so that
         * matching compares one spelling. */
        if (len > 2 && t[0] == '[' && t[len - 1] == ']') {
            t++;
            len -= 2;
        }
        if (is_ipv6_literal(t, len)) {
            memcpy(buf, t, len);
            buf[len] = '\0';
            if (inet_pton(AF_INET6, buf, &a6) != 1 || !inet_ntop(AF_INET6, &a6, buf, sizeof(buf))) {
                return oom(ld);
            }
            return set_str(ld, dst, buf);
        }
        ok = len > 2 && t[0] == '*' && t[1] == '.' ? is_dns_name(t + 2, len - 2)
                                                   : is_dns_name(t, len);
        lower = true;
        why = "expected a host name without port, *.domain, an IPv4 address or an IPv6 address";
        break;
    case K_DECLARED:
        ok = is_protocol_name(t, len);
        lower = true;
        why = "expected an Upgrade protocol name such as websocket";
        break;
    case K_SNI:
        /* "": a ClientHello without SNI. No IP addresses: RFC 6066 §3. */
        ok = len == 0 || (len > 2 && t[0] == '*' && t[1] == '.' ? is_dns_name(t + 2, len - 2)
                                                                : is_dns_name(t, len));
        if (ok && len && inet_pton(AF_INET, t, &a6) == 1) {
            ok = false;
        }
        lower = true;
        why = "expected a DNS name, *.domain, or \"\" for a ClientHello without SNI";
        break;
    case K_ALPN:
        ok = len <= 255;
        for (size_t i = 0; ok && i < len; i++) {
            ok = t[i] > 0x20 && t[i] < 0x7f;
        }
        why = "expected 1 to 255 visible ASCII characters, such as h2 or http/1.1";
        break;
    default:
        break;
    }
    if (!ok || (len == 0 && k != K_SNI)) {
        return fail(ld, it, sub, "bad %s '%s': %s", cond_desc[k].noun, show(vb, sizeof(vb), it),
                    why);
    }
    if ((rc = set_str(ld, dst, t))) {
        return rc;
    }
    if (lower) {
        lowercase(*dst);
    }
    return 0;
}

/* The long form: a mapping of conditions, all of which must hold. */
static int
rule_conditions(struct ld *ld, const struct ynode *m, const char *key, struct vd_conf_rule *r)
{
    char sub[KEY_MAX], item[KEY_MAX], vb[SHOW_MAX + 8];
    int rc;

    if ((rc = check_map(ld, m, key, rule_conds, VD_ARRAY_LEN(rule_conds)))) {
        return rc;
    }
    for (int k = 0; k < (int)VD_ARRAY_LEN(rule_conds); k++) {
        const struct ynode *v = get(m, rule_conds[k]);
        size_t n = 0;
        if (!v) {
            continue;
        }
        key_join(sub, key, rule_conds[k]);
        if (k == K_SNI_MISMATCH || k == K_DECLARED_MISMATCH) {
            bool b;
            if ((rc = get_bool(ld, v, sub, &b))) {
                return rc;
            }
            if (!b) {
                return fail(ld, v, sub,
                            "only true is meaningful (the rule then applies when %s); omit the "
                            "key otherwise",
                            k == K_SNI_MISMATCH
                                ? "the TLS server name differs from the requested host"
                                : "the protocol seen in the tunnel differs from the declared one");
            }
            *(k == K_SNI_MISMATCH ? &r->sni_mismatch : &r->declared_mismatch) = 1;
            continue;
        }
        if (k == K_CLIENTS || k == K_DEST_NETS) {
            if ((rc = cond_items(ld, v, sub, cond_desc[k].what, &n))) {
                return rc;
            }
            struct vd_conf_cidr *cs = calloc(n, sizeof(*cs));
            if (!cs) {
                return oom(ld);
            }
            *(k == K_CLIENTS ? &r->clients : &r->dest_nets) = cs;
            *(k == K_CLIENTS ? &r->nclients : &r->ndest_nets) = n;
            for (size_t i = 0; i < n; i++) {
                const struct ynode *it = cond_item(v, i, sub, item);
                if ((rc = want_scalar(ld, it, item, cond_desc[k].what)) ||
                    (rc = parse_cidr(ld, it, item, &cs[i]))) {
                    return rc;
                }
            }
            continue;
        }
        if (k == K_DEST_PORTS) {
            if ((rc = cond_items(ld, v, sub, cond_desc[k].what, &n))) {
                return rc;
            }
            if (!(r->dest_ports = calloc(n, sizeof(*r->dest_ports)))) {
                return oom(ld);
            }
            r->ndest_ports = n;
            for (size_t i = 0; i < n; i++) {
                const struct ynode *it = cond_item(v, i, sub, item);
                uint64_t lo, hi;
                if ((rc = want_scalar(ld, it, item, cond_desc[k].what))) {
                    return rc;
                }
                if (!parse_port_range(it->text, &lo, &hi)) {
                    return fail(ld, it, item,
                                "bad port '%s': expected a port from 1 to 65535 or a range "
                                "LOW-HIGH",
                                show(vb, sizeof(vb), it));
                }
                r->dest_ports[i] = (struct vd_conf_port_range){(uint16_t)lo, (uint16_t)hi};
            }
            continue;
        }
        char ***dst = k == K_USERS        ? &r->users
                      : k == K_METHODS    ? &r->methods
                      : k == K_DEST_HOSTS ? &r->dest_hosts
                      : k == K_DECLARED   ? &r->declared
                      : k == K_PROTOCOLS  ? &r->protocols
                      : k == K_SNI        ? &r->snis
                                          : &r->alpns;
        size_t *ndst = k == K_USERS        ? &r->nusers
                       : k == K_METHODS    ? &r->nmethods
                       : k == K_DEST_HOSTS ? &r->ndest_hosts
                       : k == K_DECLARED   ? &r->ndeclared
                       : k == K_PROTOCOLS  ? &r->nprotocols
                       : k == K_SNI        ? &r->nsnis
                                           : &r->nalpns;
        if ((rc = cond_items(ld, v, sub, cond_desc[k].what, &n))) {
            return rc;
        }
        if (!(*dst = calloc(n, sizeof(char *)))) {
            return oom(ld);
        }
        *ndst = n;
        for (size_t i = 0; i < n; i++) {
            if ((rc = cond_string(ld, k, cond_item(v, i, sub, item), item, &(*dst)[i]))) {
                return rc;
            }
        }
    }
    return 0;
}

/* One rule: "- allow: CIDR" (short form), or "- [name: N] allow|deny: {conditions}". */
static int
sec_rule(struct ld *ld, const struct ynode *n, size_t idx, struct vd_conf_rule *r)
{
    static const char *const keys[] = {"name", "allow", "deny"};
    char key[KEY_MAX], sub[KEY_MAX], vb[SHOW_MAX + 8];
    const struct ynode *rn = n->kid[idx], *v, *allow, *deny;
    int rc;

    key_index(key, "access", idx);
    if ((rc = check_map(ld, rn, key, keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    allow = get(rn, "allow");
    deny = get(rn, "deny");
    if (!allow == !deny) {
        return fail(ld, rn, key, "expected exactly one of allow or deny, as in '- allow: CIDR'");
    }
    r->allow = allow != NULL;
    if ((v = get(rn, "name"))) {
        key_join(sub, key, "name");
        if ((rc = want_scalar(ld, v, sub, "a rule name"))) {
            return rc;
        }
        if (!is_rule_name(v->text, v->len)) {
            return fail(ld, v, sub,
                        "bad rule name '%s': expected 1 to 64 letters, digits, '-', '_' or '.'",
                        show(vb, sizeof(vb), v));
        }
        for (size_t j = 0; j < idx; j++) {
            const struct ynode *o = get(n->kid[j], "name");
            if (o && strcmp(o->text, v->text) == 0) {
                return fail(ld, v, sub,
                            "duplicate rule name '%s' (access[%zu] at line %d, column %d has the "
                            "same)",
                            show(vb, sizeof(vb), v), j, o->line, o->col);
            }
        }
        if ((rc = set_str(ld, &r->name, v->text))) {
            return rc;
        }
    } else {
        char name[32];
        snprintf(name, sizeof(name), "access[%zu]", idx);
        if ((rc = set_str(ld, &r->name, name))) {
            return rc;
        }
    }
    v = allow ? allow : deny;
    key_join(sub, key, allow ? "allow" : "deny");
    if (v->kind == Y_MAP) {
        return rule_conditions(ld, v, sub, r);
    }
    if ((rc = want_scalar(ld, v, sub, "an address, a CIDR, all or a mapping of conditions"))) {
        return rc;
    }
    struct vd_conf_cidr cidr;
    if ((rc = parse_cidr(ld, v, sub, &cidr))) {
        return rc;
    }
    /* "all" is a rule without conditions, like "allow: {}". */
    if (cidr.net.ss_family != AF_UNSPEC) {
        if (!(r->clients = malloc(sizeof(*r->clients)))) {
            return oom(ld);
        }
        r->clients[0] = cidr;
        r->nclients = 1;
    }
    return 0;
}

static int
sec_access(struct ld *ld, const struct ynode *n)
{
    struct vd_conf *c = ld->c;
    int rc;

    if ((rc = want_seq(ld, n, "access", "allow or deny rules"))) {
        return rc;
    }
    vd_conf_rules_free(c);
    c->rules = calloc(n->nkid ? n->nkid : 1, sizeof(*c->rules));
    if (!c->rules) {
        return oom(ld);
    }
    c->nrules = n->nkid;
    for (size_t i = 0; i < n->nkid; i++) {
        c->rules[i].sni_mismatch = -1;
        c->rules[i].declared_mismatch = -1;
    }
    for (size_t i = 0; i < n->nkid; i++) {
        if ((rc = sec_rule(ld, n, i, &c->rules[i]))) {
            return rc;
        }
    }
    return 0;
}

static int
sec_tunnel(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {"idle_timeout",      "splice",      "socket_buffer",
                                       "socket_buffer_rtt", "sniff_bytes", "sniff_timeout",
                                       "upgrade_protocols"};
    struct vd_conf_tunnel *t = &ld->c->tunnel;
    char sub[KEY_MAX], vb[SHOW_MAX + 8];
    const struct ynode *v;
    uint64_t size;
    int rc;

    if ((rc = check_map(ld, n, "tunnel", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if ((v = get(n, "idle_timeout")) &&
        (rc = get_duration(ld, v, "tunnel.idle_timeout", false, &t->idle_timeout))) {
        return rc;
    }
    if ((v = get(n, "splice")) && (rc = get_bool(ld, v, "tunnel.splice", &t->splice))) {
        return rc;
    }
    if ((v = get(n, "socket_buffer"))) {
        if ((rc = get_size(ld, v, "tunnel.socket_buffer", 0, 64 * 1048576, &size))) {
            return rc;
        }
        if (size && size < 65536) {
            return fail(ld, v, "tunnel.socket_buffer",
                        "must be 0 (the kernel's autotuning) or at least 64 KiB");
        }
        t->socket_buffer = (uint32_t)size;
    }
    if ((v = get(n, "socket_buffer_rtt"))) {
        if ((rc = get_duration_us(ld, v, "tunnel.socket_buffer_rtt", &size))) {
            return rc;
        }
        t->socket_buffer_rtt = (uint32_t)size;
    }
    if ((v = get(n, "sniff_bytes"))) {
        if ((rc = get_size(ld, v, "tunnel.sniff_bytes", 512, 1048576, &size))) {
            return rc;
        }
        t->sniff_bytes = (uint32_t)size;
    }
    if ((v = get(n, "sniff_timeout")) &&
        (rc = get_duration(ld, v, "tunnel.sniff_timeout", false, &t->sniff_timeout))) {
        return rc;
    }
    if (!(v = get(n, "upgrade_protocols"))) {
        return 0;
    }
    if ((rc = want_seq(ld, v, "tunnel.upgrade_protocols", "protocol names"))) {
        return rc;
    }
    strv_free(t->upgrade_protocols, t->nupgrade_protocols);
    t->nupgrade_protocols = 0;
    if (!(t->upgrade_protocols = calloc(v->nkid ? v->nkid : 1, sizeof(char *)))) {
        return oom(ld);
    }
    t->nupgrade_protocols = v->nkid;
    for (size_t i = 0; i < v->nkid; i++) {
        const struct ynode *p = v->kid[i];
        key_index(sub, "tunnel.upgrade_protocols", i);
        if ((rc = want_scalar(ld, p, sub, "a protocol name"))) {
            return rc;
        }
        if (!is_protocol_name(p->text, p->len)) {
            return fail(ld, p, sub,
                        "bad protocol name '%s': expected an Upgrade protocol name such as "
                        "websocket",
                        show(vb, sizeof(vb), p));
        }
        if ((rc = set_str(ld, &t->upgrade_protocols[i], p->text))) {
            return rc;
        }
        lowercase(t->upgrade_protocols[i]);
    }
    return 0;
}

static int
sec_via(struct ld *ld, const struct ynode *n)
{
    char vb[SHOW_MAX + 8];
    int b = bool_value(n);
    if (b >= 0) {
        if (b) {
            return fail(ld, n, "via", "expected a pseudonym (a token) or false, got true");
        }
        free(ld->c->via);
        ld->c->via = NULL;
        ld->c->via_enabled = false;
        return 0;
    }
    int rc = want_scalar(ld, n, "via", "a pseudonym (a token) or false");
    if (rc) {
        return rc;
    }
    /* RFC 9110 §7.6.3: received-by is a pseudonym, which is a token (§5.6.2). */
    for (size_t i = 0; i < n->len; i++) {
        if (!is_tchar((unsigned char)n->text[i])) {
            return fail(ld, n, "via",
                        "bad pseudonym '%s': only letters, digits and !#$%%&'*+-.^_`|~ are "
                        "allowed",
                        show(vb, sizeof(vb), n));
        }
    }
    if (n->len == 0) {
        return fail(ld, n, "via", "pseudonym must not be empty (write false to disable Via)");
    }
    ld->c->via_enabled = true;
    return set_str(ld, &ld->c->via, n->text);
}

static int
sec_server_name(struct ld *ld, const struct ynode *n)
{
    int rc = want_scalar(ld, n, "server_name", "a name");
    if (rc) {
        return rc;
    }
    bool ok = n->len > 0 && n->len <= 255 && n->text[0] != ' ' && n->text[n->len - 1] != ' ';
    for (size_t i = 0; ok && i < n->len; i++) {
        ok = n->text[i] >= 0x20 && n->text[i] < 0x7f;
    }
    if (!ok) {
        return fail(ld, n, "server_name",
                    "must be 1 to 255 printable ASCII characters, without leading or trailing "
                    "spaces");
    }
    return set_str(ld, &ld->c->server_name, n->text);
}

static int
sec_limits(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {
        "request_line",  "header_block",    "header_count",  "body",     "chunk_line",
        "trailer_block", "max_connections", "request_arena", "via_loop",
    };
    struct vd_conf_limits *l = &ld->c->limits;
    uint32_t *size32[] = {&l->request_line,
                          &l->header_block,
                          NULL,
                          NULL,
                          &l->chunk_line,
                          &l->trailer_block,
                          NULL,
                          &l->request_arena,
                          NULL};
    char sub[KEY_MAX];
    const struct ynode *v;
    int rc;

    if ((rc = check_map(ld, n, "limits", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    for (size_t i = 0; i < VD_ARRAY_LEN(keys); i++) {
        if (!(v = get(n, keys[i]))) {
            continue;
        }
        key_join(sub, "limits", keys[i]);
        if (size32[i]) {
            rc = get_size32(ld, v, sub, size32[i]);
        } else if (strcmp(keys[i], "body") == 0) {
            rc = get_size(ld, v, sub, 0, UINT64_MAX, &l->body);
        } else if (strcmp(keys[i], "header_count") == 0) {
            rc = get_u32(ld, v, sub, 1, &l->header_count);
        } else if (strcmp(keys[i], "via_loop") == 0) {
            rc = get_u32(ld, v, sub, 0, &l->via_loop);
        } else {
            rc = get_u32(ld, v, sub, 1, &l->max_connections);
        }
        if (rc) {
            return rc;
        }
    }
    return 0;
}

static int
sec_timeouts(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {
        "client_header", "keepalive",     "upstream_connect", "upstream_first_byte",
        "send",          "client_body",   "upstream_read",    "shutdown_grace",
        "upgrade_grace", "upgrade_start",
    };
    struct vd_conf_timeouts *t = &ld->c->timeouts;
    uint64_t *dst[] = {&t->client_header,       &t->keepalive,      &t->upstream_connect,
                       &t->upstream_first_byte, &t->send,           &t->client_body,
                       &t->upstream_read,       &t->shutdown_grace, &t->upgrade_grace,
                       &t->upgrade_start};
    char sub[KEY_MAX];
    const struct ynode *v;
    int rc;

    if ((rc = check_map(ld, n, "timeouts", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    for (size_t i = 0; i < VD_ARRAY_LEN(keys); i++) {
        if ((v = get(n, keys[i]))) {
            /* keepalive 0 closes after each response; shutdown_grace 0 exits without draining. */
            bool zero_ok = dst[i] == &t->keepalive || dst[i] == &t->shutdown_grace ||
                           dst[i] == &t->upgrade_grace;
            key_join(sub, "timeouts", keys[i]);
            if ((rc = get_duration(ld, v, sub, zero_ok, dst[i]))) {
                return rc;
            }
        }
    }
    return 0;
}

static int parse_upstream(struct ld *ld, const struct ynode *n, const char *key,
                          struct vd_conf_server *r);
static int parse_server_list(struct ld *ld, const struct ynode *v, const char *key,
                             const char *what, size_t max, struct vd_conf_server **out,
                             size_t *nout);
static int parse_cidr(struct ld *ld, const struct ynode *n, const char *key,
                      struct vd_conf_cidr *a);

/* upstream.parent_credentials: a file whose first line is "user:password" (RFC 7617), turned
 * into the Proxy-Authorization value sent to the parent. */
static int
read_parent_credentials(struct ld *ld, const struct ynode *v, const char *key, const char *path,
                        char **out)
{
    char line[1024];
    FILE *f = fopen(path, "re");
    if (!f) {
        return fail(ld, v, key, "cannot read %s: %s", path, vd_strerror(-errno));
    }
    bool got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    size_t n = got ? strcspn(line, "\r\n") : 0;
    line[n] = '\0';
    if (!got || !memchr(line, ':', n) || line[0] == ':') {
        return fail(ld, v, key, "%s: the first line must be user:password", path);
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) {
            return fail(ld, v, key, "%s: control characters in the credentials", path);
        }
    }
    size_t cap = 6 + 4 * ((n + 2) / 3) + 1;
    char *s = malloc(cap);
    if (!s) {
        return oom(ld);
    }
    memcpy(s, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)s + 6, (const unsigned char *)line, (int)n);
    explicit_bzero(line, sizeof(line));
    free(*out);
    *out = s;
    return 0;
}

/* A TLS server name (lowercased into *@out): RFC 6066 §3 allows DNS host names only. */
static int
get_sni(struct ld *ld, const struct ynode *v, const char *key, char **out)
{
    char vb[SHOW_MAX + 8];
    int rc = want_scalar(ld, v, key, "a server name");
    if (rc) {
        return rc;
    }
    struct in_addr a4;
    if (!is_dns_name(v->text, v->len) || inet_pton(AF_INET, v->text, &a4) == 1) {
        return fail(ld, v, key, "bad SNI name '%s': expected a DNS name (no IP address)",
                    show(vb, sizeof(vb), v));
    }
    if ((rc = set_str(ld, out, v->text))) {
        return rc;
    }
    lowercase(*out);
    return 0;
}

static int
sec_parent(struct ld *ld, const struct ynode *n, struct vd_conf_upstream *u)
{
    char sub[KEY_MAX];
    const struct ynode *v;
    int rc;
    if ((v = get(n, "parent"))) {
        /* Ports default to 80 or 443; the list is freed with the configuration even when it
         * did not parse in full. */
        if ((rc = parse_server_list(ld, v, "upstream.parent", "parent", VD_PARENTS_MAX, &u->parents,
                                    &u->nparents))) {
            return rc;
        }
        u->parent_down = calloc(u->nparents, sizeof(*u->parent_down));
        u->parent_turn = calloc(1, sizeof(*u->parent_turn));
        if (!u->parent_down || !u->parent_turn) {
            return oom(ld);
        }
    }
    if ((v = get(n, "parent_ca_file")) &&
        ((rc = get_path(ld, v, "upstream.parent_ca_file", &u->parent_ca_file)) ||
         (rc = check_readable(ld, v, "upstream.parent_ca_file", u->parent_ca_file)))) {
        return rc;
    }
    if ((v = get(n, "parent_sni")) &&
        (rc = get_sni(ld, v, "upstream.parent_sni", &u->parent_sni))) {
        return rc;
    }
    if ((v = get(n, "parent_select"))) {
        static const char *const sel[] = {"failover", "round_robin"};
        size_t i = 0;
        if ((rc = get_enum(ld, v, "upstream.parent_select", "parent_select", sel, VD_ARRAY_LEN(sel),
                           &i))) {
            return rc;
        }
        u->parent_round_robin = i == 1;
    }
    u->parent_fail_timeout = 10000;
    if ((v = get(n, "parent_fail_timeout")) &&
        (rc = get_duration(ld, v, "upstream.parent_fail_timeout", true, &u->parent_fail_timeout))) {
        return rc;
    }
    if ((v = get(n, "parent_credentials"))) {
        char *path = NULL;
        if ((rc = get_path(ld, v, "upstream.parent_credentials", &path)) ||
            (rc = read_parent_credentials(ld, v, "upstream.parent_credentials", path,
                                          &u->parent_auth))) {
            free(path);
            return rc;
        }
        free(path);
    }
    if ((v = get(n, "parent_bypass"))) {
        if ((rc = want_seq(ld, v, "upstream.parent_bypass", "host names or addresses"))) {
            return rc;
        }
        u->bypass_names = calloc(v->nkid + 1, sizeof(*u->bypass_names));
        u->bypass_nets = calloc(v->nkid + 1, sizeof(*u->bypass_nets));
        if (!u->bypass_names || !u->bypass_nets) {
            return oom(ld);
        }
        for (size_t i = 0; i < v->nkid; i++) {
            const struct ynode *it = v->kid[i];
            key_index(sub, "upstream.parent_bypass", i);
            if ((rc = want_scalar(ld, it, sub, "a host name or an address"))) {
                return rc;
            }
            if (strcmp(it->text, "all") == 0) {
                return fail(ld, it, sub, "bad entry 'all': leave upstream.parent out to go direct");
            }
            const char *h = it->text[0] == '.' ? it->text + 1 : it->text;
            if (is_dns_name(h, strlen(h)) && strspn(h, "0123456789.") != strlen(h)) {
                char *name = strdup(it->text);
                if (!name) {
                    return oom(ld);
                }
                lowercase(name);
                u->bypass_names[u->nbypass_names++] = name;
                continue;
            }
            if ((rc = parse_cidr(ld, it, sub, &u->bypass_nets[u->nbypass_nets]))) {
                return rc;
            }
            u->nbypass_nets++;
        }
    }
    static const char *const needs_parent[] = {"parent_credentials",  "parent_bypass",
                                               "parent_fail_timeout", "parent_select",
                                               "parent_ca_file",      "parent_sni"};
    for (size_t i = 0; i < VD_ARRAY_LEN(needs_parent) && !u->nparents; i++) {
        if (!get(n, needs_parent[i])) {
            continue;
        }
        const char *k = needs_parent[i];
        char key[64];
        snprintf(key, sizeof(key), "upstream.%s", k);
        return fail(ld, get(n, k), key, "set upstream.parent to use it");
    }
    return 0;
}

static int
sec_upstream(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {"pool_idle_max", "pool_idle_timeout",
                                       "ca_file",       "ca_path",
                                       "verify",        "splice",
                                       "splice_min",    "tcp_congestion",
                                       "parent",        "parent_credentials",
                                       "parent_bypass", "parent_fail_timeout",
                                       "parent_select", "parent_ca_file",
                                       "parent_sni"};
    struct vd_conf_upstream *u = &ld->c->upstream;
    const struct ynode *v;
    int rc;

    if ((rc = check_map(ld, n, "upstream", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if ((v = get(n, "pool_idle_max")) &&
        (rc = get_u32(ld, v, "upstream.pool_idle_max", 0, &u->pool_idle_max))) {
        return rc;
    }
    if ((v = get(n, "pool_idle_timeout")) &&
        (rc = get_duration(ld, v, "upstream.pool_idle_timeout", true, &u->pool_idle_timeout))) {
        return rc;
    }
    if ((v = get(n, "ca_file")) && ((rc = get_path(ld, v, "upstream.ca_file", &u->ca_file)) ||
                                    (rc = check_readable(ld, v, "upstream.ca_file", u->ca_file)))) {
        return rc;
    }
    if ((v = get(n, "ca_path")) && ((rc = get_path(ld, v, "upstream.ca_path", &u->ca_path)) ||
                                    (rc = check_dir(ld, v, "upstream.ca_path", u->ca_path)))) {
        return rc;
    }
    if ((v = get(n, "verify")) && (rc = get_bool(ld, v, "upstream.verify", &u->verify))) {
        return rc;
    }
    if ((v = get(n, "splice")) && (rc = get_bool(ld, v, "upstream.splice", &u->splice))) {
        return rc;
    }
    if ((v = get(n, "splice_min")) &&
        (rc = get_size(ld, v, "upstream.splice_min", 0, UINT32_MAX, &u->splice_min))) {
        return rc;
    }
    if ((v = get(n, "tcp_congestion")) &&
        (rc = get_congestion(ld, v, "upstream.tcp_congestion", &u->tcp_congestion))) {
        return rc;
    }
    return sec_parent(ld, n, u);
}

/* "http://host[:port]" or "https://host[:port]"; host is a DNS name, an IPv4 address or an
 * [IPv6] literal (RFC 3986 §3.2.2). No user info, path, query or fragment. */
static int
parse_upstream(struct ld *ld, const struct ynode *n, const char *key, struct vd_conf_server *r)
{
    char vb[SHOW_MAX + 8];
    const char *s = n->text, *host, *hend, *port = NULL;
    uint64_t pv;

    show(vb, sizeof(vb), n);
    /* RFC 3986 §3.1: schemes are case-insensitive. */
    if (strncasecmp(s, "http://", 7) == 0) {
        r->tls = false;
        s += 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        r->tls = true;
        s += 8;
    } else {
        return fail(ld, n, key, "bad upstream '%s': the scheme must be http:// or https://", vb);
    }
    size_t alen = strcspn(s, "/?#");
    if (s[alen]) {
        return fail(ld, n, key,
                    "bad upstream '%s': no path, query or fragment allowed; write "
                    "%s://HOST[:PORT]",
                    vb, r->tls ? "https" : "http");
    }
    if (memchr(s, '@', alen)) {
        return fail(ld, n, key, "bad upstream '%s': user information is not allowed", vb);
    }
    if (*s == '[') {
        host = s + 1;
        hend = strchr(s, ']');
        if (!hend || !is_ipv6_literal(host, (size_t)(hend - host))) {
            return fail(ld, n, key, "bad upstream '%s': bad IPv6 literal", vb);
        }
        if (hend[1] == ':') {
            port = hend + 2;
        } else if (hend[1]) {
            return fail(ld, n, key, "bad upstream '%s': expected ':PORT' after ']'", vb);
        }
    } else {
        host = s;
        hend = strchr(s, ':');
        if (hend) {
            port = hend + 1;
        } else {
            hend = s + alen;
        }
        if (!is_dns_name(host, (size_t)(hend - host))) {
            return fail(ld, n, key,
                        "bad upstream '%s': the host must be a DNS name, an IPv4 address or an "
                        "[IPv6] address",
                        vb);
        }
    }
    if (port && (!parse_u64(port, &pv) || pv < 1 || pv > 65535)) {
        return fail(ld, n, key, "bad upstream '%s': the port must be a number from 1 to 65535", vb);
    }
    r->port = port ? (uint16_t)pv : (r->tls ? 443 : 80);
    free(r->host);
    r->host = strndup(host, (size_t)(hend - host));
    if (!r->host) {
        return oom(ld);
    }
    /* RFC 3986 §3.2.2: the host is case-insensitive. */
    lowercase(r->host);
    return set_str(ld, &r->url, n->text);
}

/* One URL or a sequence of @max at most (@what names them in errors: "upstream", "parent"),
 * none twice. *@out (its entries filled as far as they parsed) belongs to the caller. */
static int
parse_server_list(struct ld *ld, const struct ynode *v, const char *key, const char *what,
                  size_t max, struct vd_conf_server **out, size_t *nout)
{
    char sub[KEY_MAX], what_s[48];
    int rc;
    size_t n = v->kind == Y_SEQ ? v->nkid : 1;
    if (v->kind == Y_SEQ) {
        snprintf(what_s, sizeof(what_s), "%s URLs", what);
        if ((rc = want_seq(ld, v, key, what_s))) {
            return rc;
        }
        if (n == 0) {
            return fail(ld, v, key, "at least one %s URL is required", what);
        }
        if (n > max) {
            return fail(ld, v, key, "more than %zu %s servers", max, what);
        }
    }
    *out = calloc(n, sizeof(**out));
    if (!*out) {
        return oom(ld);
    }
    *nout = n;
    struct vd_conf_server *sv = *out;
    snprintf(what_s, sizeof(what_s), "a%s %s URL", what[0] == 'u' ? "n" : "", what);
    for (size_t i = 0; i < n; i++) {
        const struct ynode *s = v->kind == Y_SEQ ? v->kid[i] : v;
        if (v->kind == Y_SEQ) {
            key_index(sub, key, i);
        } else {
            snprintf(sub, sizeof(sub), "%s", key);
        }
        if ((rc = want_scalar(ld, s, sub, what_s)) || (rc = parse_upstream(ld, s, sub, &sv[i]))) {
            return rc;
        }
        for (size_t k = 0; k < i; k++) {
            const struct vd_conf_server *o = &sv[k];
            if (o->tls == sv[i].tls && o->port == sv[i].port && strcmp(o->host, sv[i].host) == 0) {
                return fail(ld, s, sub, "the same server as %s[%zu]", key, k);
            }
        }
    }
    return 0;
}

/* routes[].upstream: one URL, or a sequence of them (a balanced group). */
static int
sec_route_servers(struct ld *ld, const struct ynode *v, const char *key, struct vd_conf_route *r)
{
    return parse_server_list(ld, v, key, "upstream", VD_ROUTE_SERVERS_MAX, &r->servers,
                             &r->nservers);
}

/* RFC 9110 §7.2: Host = uri-host [ ":" port ]; no spaces, controls or delimiters. */
static bool
is_host_value(const char *s, size_t len)
{
    bool ok = len > 0;
    for (size_t i = 0; ok && i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        ok = ch > 0x20 && ch < 0x7f && !strchr("/?#@\"\\", ch);
    }
    return ok;
}

/* "200" or "200-399": status codes from 100 to 599. */
static bool
parse_status_range(const char *s, uint16_t *lo, uint16_t *hi)
{
    char a[4] = "", b[4] = "";
    uint64_t x, y;
    size_t la = strspn(s, "0123456789");
    if (la != 3) {
        return false;
    }
    memcpy(a, s, 3);
    if (s[3] == '\0') {
        memcpy(b, a, sizeof(b));
    } else if (s[3] == '-' && strspn(s + 4, "0123456789") == 3 && s[7] == '\0') {
        memcpy(b, s + 4, 3);
    } else {
        return false;
    }
    if (!parse_u64(a, &x) || !parse_u64(b, &y) || x < 100 || y > 599 || x > y) {
        return false;
    }
    *lo = (uint16_t)x;
    *hi = (uint16_t)y;
    return true;
}

/* routes[].health_check: active checks of the route's servers (src/proxy/health.c). */
static int
sec_health_check(struct ld *ld, const struct ynode *n, const char *key, struct vd_conf_health *h)
{
    static const char *const keys[] = {"path", "interval", "timeout", "rise",
                                       "fall", "expect",   "host"};
    char sub[KEY_MAX], vb[SHOW_MAX + 8];
    const struct ynode *v;
    uint64_t u = 0;
    int rc;

    if ((rc = check_map(ld, n, key, keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if (!(v = get(n, "path"))) {
        return missing(ld, n, key, "path");
    }
    key_join(sub, key, "path");
    if ((rc = want_scalar(ld, v, sub, "a path"))) {
        return rc;
    }
    /* Sent as the request target: origin-form (RFC 9112 §3.2.1), so '/', then visible ASCII
     * without '#' (a fragment is never sent). */
    bool ok = v->text[0] == '/' && v->len <= VD_HEALTH_PATH_MAX;
    for (size_t i = 0; ok && i < v->len; i++) {
        unsigned char ch = (unsigned char)v->text[i];
        ok = ch > 0x20 && ch < 0x7f && ch != '#';
    }
    if (!ok) {
        return fail(ld, v, sub,
                    "bad path '%s': expected an origin-form path starting with '/' (at most %d "
                    "bytes, no spaces, control characters or '#')",
                    show(vb, sizeof(vb), v), VD_HEALTH_PATH_MAX);
    }
    if ((rc = set_str(ld, &h->path, v->text))) {
        return rc;
    }
    h->interval = 5000;
    if ((v = get(n, "interval"))) {
        key_join(sub, key, "interval");
        if ((rc = get_duration(ld, v, sub, false, &h->interval))) {
            return rc;
        }
    }
    h->timeout = 2000;
    if ((v = get(n, "timeout"))) {
        key_join(sub, key, "timeout");
        if ((rc = get_duration(ld, v, sub, false, &h->timeout))) {
            return rc;
        }
    }
    h->rise = 2;
    if ((v = get(n, "rise"))) {
        key_join(sub, key, "rise");
        if ((rc = get_uint(ld, v, sub, 1, 1000, &u))) {
            return rc;
        }
        h->rise = (uint32_t)u;
    }
    h->fall = 3;
    if ((v = get(n, "fall"))) {
        key_join(sub, key, "fall");
        if ((rc = get_uint(ld, v, sub, 1, 1000, &u))) {
            return rc;
        }
        h->fall = (uint32_t)u;
    }
    h->expect_lo = 200;
    h->expect_hi = 399;
    if ((v = get(n, "expect"))) {
        key_join(sub, key, "expect");
        if ((rc = want_scalar(ld, v, sub, "a status range"))) {
            return rc;
        }
        if (!parse_status_range(v->text, &h->expect_lo, &h->expect_hi)) {
            return fail(ld, v, sub,
                        "bad status range '%s': expected a status code from 100 to 599 or a "
                        "range LOW-HIGH of them such as 200-399",
                        show(vb, sizeof(vb), v));
        }
    }
    if ((v = get(n, "host"))) {
        key_join(sub, key, "host");
        if ((rc = want_scalar(ld, v, sub, "a Host header value"))) {
            return rc;
        }
        if (!is_host_value(v->text, v->len)) {
            return fail(ld, v, sub, "bad Host value '%s': expected HOST or HOST:PORT",
                        show(vb, sizeof(vb), v));
        }
        if ((rc = set_str(ld, &h->host, v->text))) {
            return rc;
        }
    }
    return 0;
}

static int
sec_route(struct ld *ld, const struct ynode *n, const char *key, struct vd_conf_route *r)
{
    static const char *const keys[] = {"host",        "path",         "upstream",
                                       "balance",     "fail_timeout", "health_check",
                                       "host_header", "sni",          "forwarded"};
    static const char *const bal[] = {"round_robin", "least_conn", "client_hash"};
    static const char *const fwd[] = {"none", "x-forwarded", "rfc7239", "both"};

    static const enum vd_forwarded_mode fwd_mode[] = {VD_FWD_NONE, VD_FWD_XFF, VD_FWD_RFC7239,
                                                      VD_FWD_BOTH};

    char sub[KEY_MAX], vb[SHOW_MAX + 8];
    const struct ynode *v;
    size_t idx = 0;
    int rc;

    if ((rc = check_map(ld, n, key, keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if (!(v = get(n, "upstream"))) {
        return missing(ld, n, key, "upstream");
    }
    key_join(sub, key, "upstream");
    if ((rc = sec_route_servers(ld, v, sub, r))) {
        return rc;
    }
    r->balance = VD_BALANCE_ROUND_ROBIN;
    if ((v = get(n, "balance"))) {
        key_join(sub, key, "balance");
        if ((rc = get_enum(ld, v, sub, "balance", bal, VD_ARRAY_LEN(bal), &idx))) {
            return rc;
        }
        r->balance = (enum vd_balance)idx;
    }
    r->fail_timeout = 10000;
    if ((v = get(n, "fail_timeout"))) {
        key_join(sub, key, "fail_timeout");
        if ((rc = get_duration(ld, v, sub, true, &r->fail_timeout))) {
            return rc;
        }
    }
    if ((v = get(n, "health_check"))) {
        key_join(sub, key, "health_check");
        if ((rc = sec_health_check(ld, v, sub, &r->health))) {
            return rc;
        }
    }
    /* A group, or a server with health checks, has balancing state: the checks' verdicts live
     * there and vd_lb_pick reads them. */
    if (r->nservers > 1 || r->health.path) {
        r->lb = calloc(1, sizeof(*r->lb) + r->nservers * sizeof(r->lb->srv[0]));
        if (!r->lb) {
            return oom(ld);
        }
    }
    if ((v = get(n, "host"))) {
        key_join(sub, key, "host");
        if ((rc = want_scalar(ld, v, sub, "a host name"))) {
            return rc;
        }
        const char *h = v->text;
        size_t hl = v->len;
        bool ok;
        if (hl > 2 && h[0] == '[' && h[hl - 1] == ']') {
            ok = is_ipv6_literal(h + 1, hl - 2);
        } else {
            if (hl > 2 && h[0] == '*' && h[1] == '.') {
                h += 2;
                hl -= 2;
            }
            ok = is_dns_name(h, hl);
        }
        if (!ok) {
            return fail(ld, v, sub,
                        "bad host '%s': expected a host name without port, *.domain, an IPv4 "
                        "address or an [IPv6] address",
                        show(vb, sizeof(vb), v));
        }
        if ((rc = set_str(ld, &r->host, v->text))) {
            return rc;
        }
        /* RFC 9110 §4.2.3: host names compare case-insensitively; stored lowercase. */
        lowercase(r->host);
    }
    v = get(n, "path");
    if (v) {
        key_join(sub, key, "path");
        if ((rc = want_scalar(ld, v, sub, "a path prefix"))) {
            return rc;
        }
        bool ok = v->text[0] == '/';
        for (size_t i = 0; ok && i < v->len; i++) {
            unsigned char ch = (unsigned char)v->text[i];
            ok = ch > 0x20 && ch < 0x7f && ch != '?' && ch != '#';
        }
        if (!ok) {
            return fail(ld, v, sub,
                        "bad path prefix '%s': must start with '/' and hold no spaces, control "
                        "characters, '?' or '#'",
                        show(vb, sizeof(vb), v));
        }
    }
    if ((rc = set_str(ld, &r->path_prefix, v ? v->text : "/"))) {
        return rc;
    }
    if ((v = get(n, "host_header"))) {
        key_join(sub, key, "host_header");
        if ((rc = want_scalar(ld, v, sub, "a Host header value"))) {
            return rc;
        }
        if (!is_host_value(v->text, v->len)) {
            return fail(ld, v, sub, "bad Host value '%s': expected HOST or HOST:PORT",
                        show(vb, sizeof(vb), v));
        }
        if ((rc = set_str(ld, &r->host_header, v->text))) {
            return rc;
        }
    }
    if ((v = get(n, "sni"))) {
        key_join(sub, key, "sni");
        if ((rc = get_sni(ld, v, sub, &r->sni))) {
            return rc;
        }
    }
    r->forwarded = VD_FWD_XFF;
    if ((v = get(n, "forwarded"))) {
        key_join(sub, key, "forwarded");
        if ((rc = get_enum(ld, v, sub, "forwarded mode", fwd, VD_ARRAY_LEN(fwd), &idx))) {
            return rc;
        }
        r->forwarded = fwd_mode[idx];
    }
    return 0;
}

static int
sec_routes(struct ld *ld, const struct ynode *n)
{
    char key[KEY_MAX];
    struct vd_conf *c = ld->c;
    int rc;

    if ((rc = want_seq(ld, n, "routes", "routes"))) {
        return rc;
    }
    if (n->nkid == 0) {
        return 0;
    }
    c->routes = calloc(n->nkid, sizeof(*c->routes));
    if (!c->routes) {
        return oom(ld);
    }
    c->nroutes = n->nkid;
    for (size_t i = 0; i < n->nkid; i++) {
        key_index(key, "routes", i);
        if ((rc = sec_route(ld, n->kid[i], key, &c->routes[i]))) {
            return rc;
        }
    }
    return 0;
}

/* A name server for c-ares: IPV4[:PORT], [IPV6][:PORT] or a bare IPv6 address. */
static bool
is_nameserver(const char *s)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in_addr a4;
    uint64_t port;
    const char *p = NULL;
    size_t hl;
    if (s[0] == '[') {
        const char *e = strchr(s, ']');
        if (!e || !is_ipv6_literal(s + 1, (size_t)(e - s - 1))) {
            return false;
        }
        if (e[1] == '\0') {
            return true;
        }
        if (e[1] != ':') {
            return false;
        }
        p = e + 2;
    } else if (is_ipv6_literal(s, strlen(s))) {
        return true;
    } else {
        const char *colon = strchr(s, ':');
        hl = colon ? (size_t)(colon - s) : strlen(s);
        if (hl == 0 || hl >= sizeof(buf)) {
            return false;
        }
        memcpy(buf, s, hl);
        buf[hl] = '\0';
        if (inet_pton(AF_INET, buf, &a4) != 1) {
            return false;
        }
        p = colon ? colon + 1 : NULL;
    }
    return !p || (parse_u64(p, &port) && port >= 1 && port <= 65535);
}

static int
sec_resolver(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {"nameservers", "cache_max_ttl", "negative_ttl",
                                       "timeout",     "tries",         "cache_size"};
    struct vd_conf_resolver *r = &ld->c->resolver;
    char sub[KEY_MAX], vb[SHOW_MAX + 8];
    const struct ynode *v;
    uint64_t tries;
    int rc;

    if ((rc = check_map(ld, n, "resolver", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if ((v = get(n, "nameservers"))) {
        size_t total = 1;
        if ((rc = want_seq(ld, v, "resolver.nameservers", "addresses"))) {
            return rc;
        }
        for (size_t i = 0; i < v->nkid; i++) {
            const struct ynode *a = v->kid[i];
            key_index(sub, "resolver.nameservers", i);
            if ((rc = want_scalar(ld, a, sub, "an address"))) {
                return rc;
            }
            if (!is_nameserver(a->text)) {
                return fail(ld, a, sub,
                            "bad name server '%s': expected IPV4[:PORT], [IPV6][:PORT] or IPV6",
                            show(vb, sizeof(vb), a));
            }
            total += a->len + 1;
        }
        free(r->nameservers);
        r->nameservers = NULL;
        if (v->nkid) {
            /* c-ares' server list syntax: comma-separated. */
            if (!(r->nameservers = malloc(total))) {
                return oom(ld);
            }
            size_t o = 0;
            for (size_t i = 0; i < v->nkid; i++) {
                o += (size_t)snprintf(r->nameservers + o, total - o, "%s%s", i ? "," : "",
                                      v->kid[i]->text);
            }
        }
    }
    if ((v = get(n, "cache_max_ttl")) &&
        (rc = get_duration(ld, v, "resolver.cache_max_ttl", true, &r->cache_max_ttl))) {
        return rc;
    }
    if ((v = get(n, "negative_ttl")) &&
        (rc = get_duration(ld, v, "resolver.negative_ttl", true, &r->negative_ttl))) {
        return rc;
    }
    if ((v = get(n, "timeout")) &&
        (rc = get_duration(ld, v, "resolver.timeout", false, &r->timeout))) {
        return rc;
    }
    if ((v = get(n, "tries"))) {
        if ((rc = get_uint(ld, v, "resolver.tries", 1, 16, &tries))) {
            return rc;
        }
        r->tries = (uint32_t)tries;
    }
    if ((v = get(n, "cache_size")) &&
        (rc = get_u32(ld, v, "resolver.cache_size", 0, &r->cache_size))) {
        return rc;
    }
    return 0;
}

static int
sec_log(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {"level", "error_log", "access_log", "access_format",
                                       "trace"};
    static const char *const levels[] = {"emerg", "alert",  "crit", "error",
                                         "warn",  "notice", "info", "debug"};
    static const char *const formats[] = {"text", "json"};
    static const char *const subs[] = {"loop", "net", "tls", "h1", "proxy", "dns", "conf", "all"};
    struct vd_conf_log *l = &ld->c->log;
    char sub[KEY_MAX], vb[SHOW_MAX + 8], list[256];
    const struct ynode *v;
    size_t idx = 0;
    int rc;

    if ((rc = check_map(ld, n, "log", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if ((v = get(n, "level"))) {
        if ((rc = want_scalar(ld, v, "log.level", "a level"))) {
            return rc;
        }
        int lv = vd_log_level_parse(v->text);
        if (lv < 0) {
            list_names(list, sizeof(list), levels, VD_ARRAY_LEN(levels));
            return fail(ld, v, "log.level", "unknown level '%s' (expected %s)",
                        show(vb, sizeof(vb), v), list);
        }
        l->level = lv;
    }
    if ((v = get(n, "error_log"))) {
        if ((rc = want_scalar(ld, v, "log.error_log", "stderr or a path"))) {
            return rc;
        }
        free(l->error_log);
        l->error_log = NULL;
        if (strcmp(v->text, "stderr") != 0 &&
            ((rc = get_path(ld, v, "log.error_log", &l->error_log)) ||
             (rc = check_writable(ld, v, "log.error_log", l->error_log)))) {
            return rc;
        }
    }
    if ((v = get(n, "access_log"))) {
        if ((rc = want_scalar(ld, v, "log.access_log", "off, stdout or a path"))) {
            return rc;
        }
        free(l->access_log);
        l->access_log = NULL;
        if (strcmp(v->text, "stdout") == 0) {
            rc = set_str(ld, &l->access_log, "stdout");
        } else if (strcmp(v->text, "off") != 0) {
            if (!(rc = get_path(ld, v, "log.access_log", &l->access_log))) {
                rc = check_writable(ld, v, "log.access_log", l->access_log);
            }
        }
        if (rc) {
            return rc;
        }
    }
    if ((v = get(n, "access_format"))) {
        if ((rc = get_enum(ld, v, "log.access_format", "format", formats, VD_ARRAY_LEN(formats),
                           &idx))) {
            return rc;
        }
        l->access_format = idx == 0 ? VD_ALOG_TEXT : VD_ALOG_JSON;
    }
    if ((v = get(n, "trace"))) {
        if ((rc = want_seq(ld, v, "log.trace", "subsystem names"))) {
            return rc;
        }
        l->trace_mask = 0;
        for (size_t i = 0; i < v->nkid; i++) {
            key_index(sub, "log.trace", i);
            if ((rc = get_enum(ld, v->kid[i], sub, "trace subsystem", subs, VD_ARRAY_LEN(subs),
                               &idx))) {
                return rc;
            }
            l->trace_mask |= vd_trace_parse(v->kid[i]->text);
        }
    }
    return 0;
}

/* A sequence of ports and "LOW-HIGH" ranges at @key into a sorted, unique array (*@out, *@n;
 * the previous array is freed on success). */
static int
get_port_list(struct ld *ld, const struct ynode *v, const char *key, uint16_t **out, size_t *n)
{
    char sub[KEY_MAX], vb[SHOW_MAX + 8];
    uint8_t *bits;
    size_t count = 0;
    int rc;

    if ((rc = want_seq(ld, v, key, "ports or port ranges"))) {
        return rc;
    }
    if (v->nkid > MAX_PORT_ITEMS) {
        return fail(ld, v, key, "more than %d entries (use ranges)", MAX_PORT_ITEMS);
    }
    /* A bitmap of 65536 ports: ranges may overlap; the result is sorted and unique. */
    if (!(bits = calloc(65536 / 8, 1))) {
        return oom(ld);
    }
    for (size_t i = 0; i < v->nkid; i++) {
        const struct ynode *p = v->kid[i];
        uint64_t lo, hi;
        key_index(sub, key, i);
        if ((rc = want_scalar(ld, p, sub, "a port or a range"))) {
            break;
        }
        if (!parse_port_range(p->text, &lo, &hi)) {
            rc = fail(ld, p, sub,
                      "bad port '%s': expected a port from 1 to 65535 or a range LOW-HIGH",
                      show(vb, sizeof(vb), p));
            break;
        }
        for (uint64_t q = lo; q <= hi; q++) {
            count += !(bits[q / 8] & (1u << (q % 8)));
            bits[q / 8] |= (uint8_t)(1u << (q % 8));
        }
    }
    if (!rc) {
        uint16_t *ports = calloc(count ? count : 1, sizeof(*ports));
        if (!ports) {
            rc = oom(ld);
        } else {
            size_t k = 0;
            for (uint32_t q = 1; q < 65536; q++) {
                if (bits[q / 8] & (1u << (q % 8))) {
                    ports[k++] = (uint16_t)q;
                }
            }
            free(*out);
            *out = ports;
            *n = count;
        }
    }
    free(bits);
    return rc;
}

static int
sec_connect(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {"ports"};
    struct vd_conf *c = ld->c;
    const struct ynode *v;
    int rc;

    if ((rc = check_map(ld, n, "connect", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if (!(v = get(n, "ports"))) {
        return 0;
    }
    return get_port_list(ld, v, "connect.ports", &c->connect_ports, &c->nconnect_ports);
}

/* A sequence of CIDRs (no "all") at @key into a new array (*@out, *@n). With @pool, at most one
 * prefix per address family. */
static int
get_cidr_list(struct ld *ld, const struct ynode *v, const char *key, bool pool,
              struct vd_conf_cidr **out, size_t *n)
{
    char sub[KEY_MAX], vb[SHOW_MAX + 8];
    int rc;
    if ((rc = want_seq(ld, v, key, "IPv4 or IPv6 prefixes"))) {
        return rc;
    }
    if (v->nkid > 64) {
        return fail(ld, v, key, "more than 64 entries");
    }
    struct vd_conf_cidr *cs = calloc(v->nkid ? v->nkid : 1, sizeof(*cs));
    if (!cs) {
        return oom(ld);
    }
    for (size_t i = 0; i < v->nkid; i++) {
        const struct ynode *it = v->kid[i];
        key_index(sub, key, i);
        if ((rc = want_scalar(ld, it, sub, "a prefix")) || (rc = parse_cidr(ld, it, sub, &cs[i]))) {
            free(cs);
            return rc;
        }
        if (cs[i].net.ss_family == AF_UNSPEC) {
            free(cs);
            return fail(ld, it, sub, "'all' is not a prefix here: write 0.0.0.0/0 and ::/0");
        }
        for (size_t k = 0; pool && k < i; k++) {
            if (cs[k].net.ss_family == cs[i].net.ss_family) {
                free(cs);
                return fail(ld, it, sub, "bad pool '%s': one IPv4 and one IPv6 prefix at most",
                            show(vb, sizeof(vb), it));
            }
        }
    }
    free(*out);
    *out = cs;
    *n = v->nkid;
    return 0;
}

/* MASQUE (RFC 9298): the connect-udp URI template holds {target_host} then {target_port}, each
 * once, in a path starting with '/'. connect-ip (RFC 9484 §3): {target} then {ipproto}. */
static int
sec_masque(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {
        "udp_template", "udp_ports",     "idle_timeout",    "ip_template", "ip_pool",
        "ip_routes",    "tun_name",      "ip_max_sessions", "ip_mtu",      "ip_icmp",
        "ip_icmp_rate", "ip_icmp_burst", "ip_icmp_source"};
    struct vd_conf_masque *m = &ld->c->masque;
    char vb[SHOW_MAX + 8];
    const struct ynode *v;
    int rc;

    if ((rc = check_map(ld, n, "masque", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if ((v = get(n, "udp_template"))) {
        if ((rc = want_scalar(ld, v, "masque.udp_template", "a path template"))) {
            return rc;
        }
        const char *h = strstr(v->text, "{target_host}");
        const char *p = strstr(v->text, "{target_port}");
        if (v->text[0] != '/' || !h || !p || p < h || strstr(h + 1, "{target_host}") ||
            strstr(p + 1, "{target_port}") || strchr(v->text, '?') ||
            p == h + strlen("{target_host}")) {
            return fail(ld, v, "masque.udp_template",
                        "bad template '%s': expected a path starting with '/' that holds "
                        "{target_host} and then {target_port} once each, separated by at least "
                        "one character, without a query",
                        show(vb, sizeof(vb), v));
        }
        if ((rc = set_str(ld, &m->udp_template, v->text))) {
            return rc;
        }
    }
    if ((v = get(n, "udp_ports")) &&
        (rc = get_port_list(ld, v, "masque.udp_ports", &m->udp_ports, &m->nudp_ports))) {
        return rc;
    }
    if ((v = get(n, "idle_timeout")) &&
        (rc = get_duration(ld, v, "masque.idle_timeout", false, &m->idle_timeout))) {
        return rc;
    }
    if ((v = get(n, "ip_template"))) {
        if ((rc = want_scalar(ld, v, "masque.ip_template", "a path template"))) {
            return rc;
        }
        const char *t = strstr(v->text, "{target}");
        const char *p = strstr(v->text, "{ipproto}");
        if (v->text[0] != '/' || !t || !p || p < t || strstr(t + 1, "{target}") ||
            strstr(p + 1, "{ipproto}") || strchr(v->text, '?') || p == t + strlen("{target}")) {
            return fail(ld, v, "masque.ip_template",
                        "bad template '%s': expected a path starting with '/' that holds "
                        "{target} and then {ipproto} once each, separated by at least one "
                        "character, without a query",
                        show(vb, sizeof(vb), v));
        }
        if ((rc = set_str(ld, &m->ip_template, v->text))) {
            return rc;
        }
    }
    if ((v = get(n, "ip_pool")) &&
        (rc = get_cidr_list(ld, v, "masque.ip_pool", true, &m->ip_pool, &m->nip_pool))) {
        return rc;
    }
    if ((v = get(n, "ip_routes")) &&
        (rc = get_cidr_list(ld, v, "masque.ip_routes", false, &m->ip_routes, &m->nip_routes))) {
        return rc;
    }
    if ((v = get(n, "tun_name"))) {
        if ((rc = want_scalar(ld, v, "masque.tun_name", "a device name prefix"))) {
            return rc;
        }
        /* IFNAMSIZ is 16: the prefix, up to 3 digits the kernel appends, and the NUL. */
        bool ok = v->len > 0 && v->len <= 12;
        for (size_t i = 0; ok && i < v->len; i++) {
            char c = v->text[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_';
        }
        if (!ok) {
            return fail(ld, v, "masque.tun_name",
                        "bad name '%s': expected 1 to 12 letters, digits, '-' or '_'",
                        show(vb, sizeof(vb), v));
        }
        if ((rc = set_str(ld, &m->tun_name, v->text))) {
            return rc;
        }
    }
    if ((v = get(n, "ip_max_sessions"))) {
        uint64_t x;
        if ((rc = get_uint(ld, v, "masque.ip_max_sessions", 1, VD_MASQUE_IP_SESSIONS_MAX, &x))) {
            return rc;
        }
        m->ip_max_sessions = (uint32_t)x;
    }
    if ((v = get(n, "ip_mtu"))) {
        uint64_t x;
        /* RFC 9484 §7.2: an IPv6 link carries at least 1280 bytes. */
        if ((rc = get_uint(ld, v, "masque.ip_mtu", 1280, 65535, &x))) {
            return rc;
        }
        m->ip_mtu = (uint32_t)x;
    }
    if ((v = get(n, "ip_icmp")) && (rc = get_bool(ld, v, "masque.ip_icmp", &m->ip_icmp))) {
        return rc;
    }
    if ((v = get(n, "ip_icmp_rate"))) {
        uint64_t x;
        if ((rc = get_uint(ld, v, "masque.ip_icmp_rate", 1, 100000, &x))) {
            return rc;
        }
        m->ip_icmp_rate = (uint32_t)x;
    }
    if ((v = get(n, "ip_icmp_burst"))) {
        uint64_t x;
        if ((rc = get_uint(ld, v, "masque.ip_icmp_burst", 1, 100000, &x))) {
            return rc;
        }
        m->ip_icmp_burst = (uint32_t)x;
    }
    if ((v = get(n, "ip_icmp_source"))) {
        if ((rc = get_cidr_list(ld, v, "masque.ip_icmp_source", true, &m->ip_icmp_source,
                                &m->nip_icmp_source))) {
            return rc;
        }
        for (size_t i = 0; i < m->nip_icmp_source; i++) {
            const struct vd_conf_cidr *c = &m->ip_icmp_source[i];
            char sub[KEY_MAX];
            key_index(sub, "masque.ip_icmp_source", i);
            if (c->prefix != (c->net.ss_family == AF_INET ? 32u : 128u)) {
                return fail(ld, v->kid[i], sub, "bad address '%s': expected an address, no prefix",
                            show(vb, sizeof(vb), v->kid[i]));
            }
            for (size_t k = 0; k < m->nip_pool; k++) {
                if (vd_cidr_match(&m->ip_pool[k], (const struct sockaddr *)&c->net)) {
                    return fail(ld, v->kid[i], sub,
                                "bad address '%s': inside masque.ip_pool, whose addresses are "
                                "the clients'",
                                show(vb, sizeof(vb), v->kid[i]));
                }
            }
        }
    }
    return 0;
}

/* RFC 9110 §11.6.1: the realm goes out inside a quoted-string; refusing '"', '\\' and
 * controls means it never needs escaping. */
static int
sec_auth(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {"htpasswd",    "realm",     "cache_ttl", "fail_limit",
                                       "fail_window", "fail_mode", "fail_delay"};
    static const char *const modes[] = {"delay", "refuse"};
    struct vd_conf_auth *au = &ld->c->auth;
    char vb[SHOW_MAX + 8], aerr[512];
    const struct ynode *v, *hv;
    size_t idx = 0;
    int rc;

    if ((rc = check_map(ld, n, "auth", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if (!(hv = get(n, "htpasswd"))) {
        return missing(ld, n, "auth", "htpasswd");
    }
    if ((rc = get_path(ld, hv, "auth.htpasswd", &au->htpasswd)) ||
        (rc = check_readable(ld, hv, "auth.htpasswd", au->htpasswd))) {
        return rc;
    }
    if ((v = get(n, "realm"))) {
        if ((rc = want_scalar(ld, v, "auth.realm", "a realm"))) {
            return rc;
        }
        bool ok = v->len > 0;
        for (size_t i = 0; ok && i < v->len; i++) {
            unsigned char ch = (unsigned char)v->text[i];
            ok = ch >= 0x20 && ch != 0x7f && ch != '"' && ch != '\\';
        }
        if (!ok) {
            return fail(ld, v, "auth.realm",
                        "bad realm '%s': expected non-empty text without '\"', '\\' or control "
                        "characters",
                        show(vb, sizeof(vb), v));
        }
        if ((rc = set_str(ld, &au->realm, v->text))) {
            return rc;
        }
    }
    if ((v = get(n, "cache_ttl")) &&
        (rc = get_duration(ld, v, "auth.cache_ttl", true, &au->cache_ttl))) {
        return rc;
    }
    if ((v = get(n, "fail_limit")) &&
        (rc = get_u32(ld, v, "auth.fail_limit", 0, &au->fail_limit))) {
        return rc;
    }
    if ((v = get(n, "fail_window")) &&
        (rc = get_duration(ld, v, "auth.fail_window", false, &au->fail_window))) {
        return rc;
    }
    if ((v = get(n, "fail_mode"))) {
        if ((rc = get_enum(ld, v, "auth.fail_mode", "mode", modes, VD_ARRAY_LEN(modes), &idx))) {
            return rc;
        }
        au->fail_mode = idx == 0 ? VD_AUTH_FAIL_DELAY : VD_AUTH_FAIL_REFUSE;
    }
    if ((v = get(n, "fail_delay")) &&
        (rc = get_duration(ld, v, "auth.fail_delay", true, &au->fail_delay))) {
        return rc;
    }
    /* Loaded last: the cache and throttle settings travel with the users. The file's own
     * "PATH:LINE: ..." becomes the message, so both positions are shown. */
    struct vd_auth_params p = {
        .cache_ttl = au->cache_ttl,
        .fail_limit = au->fail_limit,
        .fail_window = au->fail_window,
    };
    rc = vd_auth_load(au->htpasswd, &p, &au->db, aerr, sizeof(aerr));
    if (rc == VD_ENOMEM) {
        return oom(ld);
    }
    if (rc) {
        return fail(ld, hv, "auth.htpasswd", "%s", aerr);
    }
    return 0;
}

/* The disk tier's directory: an existing directory viaduct can write, or one it can create. */
static int
check_cache_dir(struct ld *ld, const struct ynode *n, const char *key, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            return fail(ld, n, key, "%s is not a directory", path);
        }
        if (access(path, R_OK | W_OK | X_OK) != 0) {
            return fail(ld, n, key, "cannot write directory %s: %s", path, vd_strerror(-errno));
        }
        return 0;
    }
    if (errno != ENOENT) {
        return fail(ld, n, key, "cannot use directory %s: %s", path, vd_strerror(-errno));
    }
    const char *slash = strrchr(path, '/'); /* get_path made it absolute */
    char parent[4096];
    size_t pl = !slash ? 0 : slash == path ? 1 : (size_t)(slash - path);
    if (!pl || pl >= sizeof(parent)) {
        return fail(ld, n, key, "cannot use directory %s", path);
    }
    memcpy(parent, path, pl);
    parent[pl] = '\0';
    if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode) || access(parent, W_OK | X_OK) != 0) {
        return fail(ld, n, key, "%s does not exist and cannot be created in %s", path, parent);
    }
    return 0;
}

static int
sec_cache(struct ld *ld, const struct ynode *n)
{
    static const char *const keys[] = {"memory",
                                       "max_object",
                                       "heuristic_max",
                                       "max_ranges",
                                       "background_revalidations",
                                       "targeted_fields",
                                       "disk_path",
                                       "disk_size",
                                       "disk_objects",
                                       "disk_queue",
                                       "disk_fsync",
                                       "sendfile_min",
                                       "sendfile_files",
                                       "memory_files",
                                       "disk_send",
                                       "collapse",
                                       "collapse_timeout"};
    struct vd_conf_cache *c = &ld->c->cache;
    const struct ynode *v;
    int rc;

    if ((rc = check_map(ld, n, "cache", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if ((v = get(n, "memory")) &&
        (rc = get_size(ld, v, "cache.memory", 0, UINT64_MAX, &c->memory))) {
        return rc;
    }
    if ((v = get(n, "max_object")) &&
        (rc = get_size(ld, v, "cache.max_object", 1, UINT32_MAX, &c->max_object))) {
        return rc;
    }
    if ((v = get(n, "heuristic_max")) &&
        (rc = get_duration(ld, v, "cache.heuristic_max", true, &c->heuristic_max))) {
        return rc;
    }
    if ((v = get(n, "disk_path")) && !is_null(v) &&
        ((rc = get_path(ld, v, "cache.disk_path", &c->disk_path)) ||
         (rc = check_cache_dir(ld, v, "cache.disk_path", c->disk_path)))) {
        return rc;
    }
    if ((v = get(n, "disk_size")) &&
        (rc = get_size(ld, v, "cache.disk_size", 1u << 20, UINT64_MAX, &c->disk_size))) {
        return rc;
    }
    if ((v = get(n, "disk_objects")) &&
        (rc = get_uint(ld, v, "cache.disk_objects", 1, UINT32_MAX, &c->disk_objects))) {
        return rc;
    }
    if ((v = get(n, "disk_queue")) &&
        (rc = get_size(ld, v, "cache.disk_queue", 64u << 10, UINT32_MAX, &c->disk_queue))) {
        return rc;
    }
    if ((v = get(n, "disk_fsync")) && (rc = get_bool(ld, v, "cache.disk_fsync", &c->disk_fsync))) {
        return rc;
    }
    if ((v = get(n, "sendfile_min")) &&
        (rc = get_size(ld, v, "cache.sendfile_min", 0, UINT32_MAX, &c->sendfile_min))) {
        return rc;
    }
    if ((v = get(n, "sendfile_files")) &&
        (rc = get_uint(ld, v, "cache.sendfile_files", 0, 65536, &c->sendfile_files))) {
        return rc;
    }
    if ((v = get(n, "memory_files")) &&
        (rc = get_uint(ld, v, "cache.memory_files", 0, 65536, &c->memory_files))) {
        return rc;
    }
    if ((v = get(n, "disk_send"))) {
        static const char *const sends[] = {"auto", "sendfile", "mapped"};
        size_t i = 0;
        if ((rc =
                 get_enum(ld, v, "cache.disk_send", "disk_send", sends, VD_ARRAY_LEN(sends), &i))) {
            return rc;
        }
        c->disk_send = i == 1   ? VD_DISK_SEND_SENDFILE
                       : i == 2 ? VD_DISK_SEND_MAPPED
                                : VD_DISK_SEND_AUTO;
    }
    if ((v = get(n, "collapse")) && (rc = get_bool(ld, v, "cache.collapse", &c->collapse))) {
        return rc;
    }
    if ((v = get(n, "collapse_timeout")) &&
        (rc = get_duration(ld, v, "cache.collapse_timeout", false, &c->collapse_timeout))) {
        return rc;
    }
    uint64_t u;
    if ((v = get(n, "max_ranges"))) {
        if ((rc = get_uint(ld, v, "cache.max_ranges", 0, 256, &u))) {
            return rc;
        }
        c->max_ranges = (uint32_t)u;
    }
    if ((v = get(n, "background_revalidations"))) {
        if ((rc = get_uint(ld, v, "cache.background_revalidations", 0, 65536, &u))) {
            return rc;
        }
        c->background = (uint32_t)u;
    }
    if (!(v = get(n, "targeted_fields"))) {
        return 0;
    }
    if ((rc = want_seq(ld, v, "cache.targeted_fields", "field names"))) {
        return rc;
    }
    strv_free(c->targeted_fields, c->ntargeted_fields);
    c->ntargeted_fields = 0;
    if (!(c->targeted_fields = calloc(v->nkid ? v->nkid : 1, sizeof(char *)))) {
        return oom(ld);
    }
    c->ntargeted_fields = v->nkid;
    char sub[KEY_MAX], vb[SHOW_MAX + 8];
    for (size_t i = 0; i < v->nkid; i++) {
        const struct ynode *f = v->kid[i];
        key_index(sub, "cache.targeted_fields", i);
        if ((rc = want_scalar(ld, f, sub, "a field name"))) {
            return rc;
        }
        bool ok = f->len > 0;
        for (size_t k = 0; k < f->len && ok; k++) {
            ok = is_tchar((unsigned char)f->text[k]);
        }
        if (!ok) {
            return fail(ld, f, sub,
                        "bad field name '%s': expected a token such as CDN-Cache-Control",
                        show(vb, sizeof(vb), f));
        }
        if ((rc = set_str(ld, &c->targeted_fields[i], f->text))) {
            return rc;
        }
        lowercase(c->targeted_fields[i]);
    }
    return 0;
}

static int
sec_h2(struct ld *ld, const struct ynode *n)
{
    struct vd_conf_h2 *h = &ld->c->h2;

    static const struct {
        const char *key;
        uint32_t lo, hi; /* sizes: the range in bytes; counts: the minimum (hi unused) */
        bool bytes;
        size_t off;
    } nums[] = {
        {"max_concurrent_streams", 1, 0, false, offsetof(struct vd_conf_h2, max_streams)},
        {"stream_window", 16384, (1u << 31) - 1, true, offsetof(struct vd_conf_h2, stream_window)},
        {"connection_window", 65535, (1u << 31) - 1, true,
         offsetof(struct vd_conf_h2, conn_window)},
        {"stream_buffer", 16384, 1u << 26, true, offsetof(struct vd_conf_h2, stream_buffer)},
        {"reset_burst", 1, 0, false, offsetof(struct vd_conf_h2, reset_burst)},
        {"reset_rate", 0, 0, false, offsetof(struct vd_conf_h2, reset_rate)},
        {"control_burst", 1, 0, false, offsetof(struct vd_conf_h2, control_burst)},
        {"control_rate", 0, 0, false, offsetof(struct vd_conf_h2, control_rate)},
    };

    static const char *const keys[] = {
        "enabled",       "extended_connect",  "max_concurrent_streams",
        "stream_window", "connection_window", "stream_buffer",
        "reset_burst",   "reset_rate",        "control_burst",
        "control_rate",
    };
    const struct ynode *v;
    int rc;

    if ((rc = check_map(ld, n, "http2", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    if ((v = get(n, "enabled")) && (rc = get_bool(ld, v, "http2.enabled", &h->enabled))) {
        return rc;
    }
    if ((v = get(n, "extended_connect")) &&
        (rc = get_bool(ld, v, "http2.extended_connect", &h->extended_connect))) {
        return rc;
    }
    for (size_t i = 0; i < VD_ARRAY_LEN(nums); i++) {
        char key[KEY_MAX];
        uint64_t x = 0;
        uint32_t *out = (uint32_t *)(void *)((char *)h + nums[i].off);
        if (!(v = get(n, nums[i].key))) {
            continue;
        }
        snprintf(key, sizeof(key), "http2.%s", nums[i].key);
        rc = nums[i].bytes ? get_size(ld, v, key, nums[i].lo, nums[i].hi, &x)
                           : get_u32(ld, v, key, nums[i].lo, out);
        if (rc) {
            return rc;
        }
        if (nums[i].bytes) {
            *out = (uint32_t)x;
        }
    }
    return 0;
}

static int
apply(struct ld *ld, const struct ynode *root)
{
    static const char *const keys[] = {
        "workers",  "listeners", "access", "via",      "server_name", "limits",
        "timeouts", "upstream",  "routes", "resolver", "log",         "connect",
        "tunnel",   "auth",      "masque", "cache",    "http2",
    };
    static int (*const fns[])(struct ld *, const struct ynode *) = {
        sec_workers,  sec_listeners, sec_access, sec_via,      sec_server_name, sec_limits,
        sec_timeouts, sec_upstream,  sec_routes, sec_resolver, sec_log,         sec_connect,
        sec_tunnel,   sec_auth,      sec_masque, sec_cache,    sec_h2,
    };
    _Static_assert(VD_ARRAY_LEN(keys) == VD_ARRAY_LEN(fns), "one section function per key");
    struct ynode at = {.line = 1, .col = 1};
    const struct ynode *v;
    int rc;

    if (!root || is_null(root)) {
        return fail(ld, root ? root : &at, "",
                    "the file holds no settings; expected a mapping such as 'listeners: ...'");
    }
    if ((rc = check_map(ld, root, "", keys, VD_ARRAY_LEN(keys)))) {
        return rc;
    }
    for (size_t i = 0; i < VD_ARRAY_LEN(keys); i++) {
        if ((v = get(root, keys[i])) && (rc = fns[i](ld, v))) {
            return rc;
        }
    }
    /* Checks across sections. */
    for (size_t i = 0; i < ld->c->nlisteners; i++) {
        char key[KEY_MAX];
        if (ld->c->listeners[i].mode == VD_MODE_REVERSE && ld->c->nroutes == 0) {
            const struct ynode *ls = get(root, "listeners");
            v = get(ls->kid[i], "mode");
            snprintf(key, sizeof(key), "listeners[%zu].mode", i);
            return fail(ld, v, key, "a reverse listener needs at least one entry in routes");
        }
    }
    return 0;
}

int
vd_conf_load(const char *path, struct vd_conf **out, char *err, size_t errlen)
{
    struct ld ld = {.file = path, .err = err, .errlen = errlen};
    struct ynode *root = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (err && errlen) {
        err[0] = '\0';
    }
    if (!(rc = read_file(&ld, &buf, &len)) && !(rc = conf_dir(&ld)) &&
        !(rc = parse_yaml(&ld, buf, len, &root))) {
        ld.c = vd_conf_default();
        rc = set_str(&ld, &ld.c->source, path);
        if (!rc) {
            rc = apply(&ld, root);
        }
        if (rc) {
            vd_conf_unref(ld.c);
        } else {
            *out = ld.c;
        }
    }
    nodes_free(&ld);
    free(ld.dir);
    free(buf);
    return rc;
}
