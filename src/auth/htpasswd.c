/* SPDX-License-Identifier: MIT */
/* The htpasswd file: "user:hash" lines, '#' comments and blank lines, LF or CRLF. Only slow,
 * salted hashes are accepted (bcrypt $2y$/$2b$/$2a$, sha512-crypt $6$, sha256-crypt $5$, and
 * yescrypt $y$ where libcrypt has it); every other format is refused with the line, the user
 * and the commands that write a good one. */
#include "vd/config.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth-int.h"
#include "vd/err.h"
#include "vd/log.h"

#define FILE_MAX (16 * 1024 * 1024) /* bytes of htpasswd read at most */
#define ADVICE   "use htpasswd -B or openssl passwd -6"

static int errf(char *err, size_t errlen, const char *fmt, ...) VD_PRINTF(3, 4);

static int
errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return VD_ECONF;
}

static int
read_all(const char *path, char **bufp, size_t *lenp, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errf(err, errlen, "%s: cannot open: %s", path, vd_strerror(-errno));
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errf(err, errlen, "%s: not a regular file", path);
    }
    char *buf = malloc(FILE_MAX + 1);
    size_t len = 0;
    if (!buf) {
        close(fd);
        return VD_ENOMEM;
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, FILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return errf(err, errlen, "%s: cannot read: %s", path, vd_strerror(-e));
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
        if (len > FILE_MAX) {
            close(fd);
            free(buf);
            return errf(err, errlen, "%s: file is larger than 16 MiB", path);
        }
    }
    close(fd);
    buf[len] = '\0';
    *bufp = buf;
    *lenp = len;
    return 0;
}

/* crypt(3)'s base64 alphabet ("./0-9A-Za-z"). */
static bool
is_b64c(char ch)
{
    return ch == '.' || ch == '/' || (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= 'a' && ch <= 'z');
}

static bool
all_b64c(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_b64c(s[i])) {
            return false;
        }
    }
    return true;
}

/* "$2y$NN$" + 22 salt + 31 hash characters, cost 04 to 31 (what htpasswd -B writes). */
static bool
bcrypt_ok(const char *h, size_t len)
{
    if (len != 60 || h[6] != '$' || h[4] < '0' || h[4] > '3' || h[5] < '0' || h[5] > '9') {
        return false;
    }
    int cost = (h[4] - '0') * 10 + (h[5] - '0');
    return cost >= 4 && cost <= 31 && all_b64c(h + 7, 53);
}

/* "$6$[rounds=N$]salt$" + 86 characters ($5$: 43); salt 1-16 bytes; rounds 1000-999999999,
 * the range libcrypt computes (it fails outside it rather than clamping). */
static bool
shacrypt_ok(const char *h, size_t len, size_t out_len)
{
    const char *p = h + 3, *end = h + len;
    static const char rounds[] = "rounds=";
    if ((size_t)(end - p) > sizeof(rounds) - 1 && memcmp(p, rounds, sizeof(rounds) - 1) == 0) {
        uint64_t r = 0;
        size_t nd = 0;
        p += sizeof(rounds) - 1;
        while (p < end && *p >= '0' && *p <= '9' && nd < 10) {
            r = r * 10 + (uint64_t)(*p++ - '0');
            nd++;
        }
        if (nd == 0 || p == end || *p != '$' || r < 1000 || r > 999999999) {
            return false;
        }
        p++;
    }
    const char *salt = p;
    while (p < end && *p != '$') {
        p++;
    }
    size_t sl = (size_t)(p - salt);
    if (sl == 0 || sl > 16 || p == end || !all_b64c(salt, sl)) {
        return false;
    }
    p++;
    return (size_t)(end - p) == out_len && all_b64c(p, out_len);
}

/* "$y$params$salt$hash": crypt alphabet between the separators, a 43-character hash. */
static bool
yescrypt_ok(const char *h, size_t len)
{
    size_t fields = 0, flen = 0;
    for (size_t i = 3; i < len; i++) {
        if (h[i] == '$') {
            if (flen == 0) {
                return false;
            }
            fields++;
            flen = 0;
        } else if (is_b64c(h[i])) {
            flen++;
        } else {
            return false;
        }
    }
    return fields == 2 && flen == 43;
}

static bool
has_prefix(const char *s, size_t len, const char *p)
{
    size_t pl = strlen(p);
    return len >= pl && memcmp(s, p, pl) == 0;
}

/* Checks @h (@len bytes). Returns NULL when it is a supported, well-formed hash, else what to
 * tell the operator. Never quotes the hash: a "hash" may be a plain-text password. */
static const char *
hash_problem(const char *h, size_t len, char *why, size_t cap)
{
    const char *kind = NULL;
    bool ok = false;
    if (len == 0) {
        return "empty hash; " ADVICE;
    }
    if (has_prefix(h, len, "$2y$") || has_prefix(h, len, "$2b$") || has_prefix(h, len, "$2a$")) {
        kind = "bcrypt";
        ok = bcrypt_ok(h, len);
    } else if (has_prefix(h, len, "$6$")) {
        kind = "sha512-crypt";
        ok = shacrypt_ok(h, len, 86);
    } else if (has_prefix(h, len, "$5$")) {
        kind = "sha256-crypt";
        ok = shacrypt_ok(h, len, 43);
    } else if (has_prefix(h, len, "$y$")) {
        kind = "yescrypt";
        ok = yescrypt_ok(h, len);
    }
    if (kind) {
        char copy[AUTH_HASH_MAX + 1];
        int cs = CRYPT_SALT_INVALID;
        if (ok && len <= AUTH_HASH_MAX) {
            memcpy(copy, h, len);
            copy[len] = '\0';
            cs = crypt_checksalt(copy);
        }
        /* libcrypt may call a method "legacy" (sha256-crypt on Debian 12) but still computes
         * it; only an invalid or disabled one is refused. */
        if (ok && len <= AUTH_HASH_MAX && (cs == CRYPT_SALT_OK || cs == CRYPT_SALT_METHOD_LEGACY)) {
            return NULL;
        }
        if (ok && strcmp(kind, "yescrypt") == 0) {
            return "unsupported hash ($y$ yescrypt: not available in this libcrypt); " ADVICE;
        }
        snprintf(why, cap, "malformed %s hash; " ADVICE, kind);
        return why;
    }
    if (has_prefix(h, len, "$apr1$")) {
        return "unsupported hash ($apr1$ MD5); " ADVICE;
    }
    if (has_prefix(h, len, "$1$")) {
        return "unsupported hash ($1$ MD5); " ADVICE;
    }
    if (has_prefix(h, len, "{SHA}")) {
        return "unsupported hash ({SHA} SHA-1); " ADVICE;
    }
    if (len > 2 && h[0] == '$') {
        /* "$id$...": name the method when the id looks like one. */
        size_t i = 1;
        while (i < len && i < 12 && (is_b64c(h[i]) && h[i] != '.' && h[i] != '/')) {
            i++;
        }
        if (i > 1 && i < len && h[i] == '$') {
            snprintf(why, cap, "unsupported hash ($%.*s$); " ADVICE, (int)(i - 1), h + 1);
            return why;
        }
    }
    if (len == 13 && all_b64c(h, len)) {
        return "unsupported hash (DES crypt, or a plain-text password); " ADVICE;
    }
    return "unsupported hash (plain text or an unknown format); " ADVICE;
}

static int
cmp_user(const void *x, const void *y)
{
    const struct auth_user *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    return c ? c : (a->line > b->line) - (a->line < b->line);
}

const struct auth_user *
vd_auth__user_find(const struct vd_auth *a, const char *name, size_t len)
{
    size_t lo = 0, hi = a->nusers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *n = a->users[mid].name;
        size_t nl = strlen(n);
        int c = memcmp(n, name, VD_MIN(nl, len));
        if (c == 0) {
            c = (nl > len) - (nl < len);
        }
        if (c == 0) {
            return &a->users[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* Parses one line (@s, @len bytes without the LF). Returns 0 (entry added or line skipped) or
 * VD_ECONF/VD_ENOMEM with @err written. */
static int
parse_line(struct vd_auth *a, const char *path, uint32_t lno, const char *s, size_t len, char *err,
           size_t errlen)
{
    char ub[VD_AUTH_USER_MAX * 4 + 8], why[160];
    /* CRLF files, and stray blanks at the end, which no hash contains. */
    while (len > 0 && (s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }
    size_t lead = 0;
    while (lead < len && (s[lead] == ' ' || s[lead] == '\t')) {
        lead++;
    }
    if (lead == len || s[lead] == '#') {
        return 0;
    }
    const char *colon = memchr(s, ':', len);
    if (!colon) {
        return errf(err, errlen, "%s:%u: expected user:hash (no ':' found)", path, lno);
    }
    size_t ul = (size_t)(colon - s);
    if (ul == 0) {
        return errf(err, errlen, "%s:%u: empty user name", path, lno);
    }
    if (ul > VD_AUTH_USER_MAX) {
        return errf(err, errlen, "%s:%u: user name longer than %d bytes", path, lno,
                    VD_AUTH_USER_MAX);
    }
    for (size_t i = 0; i < ul; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) {
            return errf(err, errlen, "%s:%u: user name holds a control character", path, lno);
        }
    }
    vd_log_escape(ub, sizeof(ub), (const uint8_t *)s, ul);
    const char *h = colon + 1;
    size_t hl = len - ul - 1;
    const char *problem = hash_problem(h, hl, why, sizeof(why));
    if (problem) {
        return errf(err, errlen, "%s:%u: user '%s': %s", path, lno, ub, problem);
    }
    struct auth_user *u = &a->users[a->nusers];
    u->name = strndup(s, ul);
    u->hash = strndup(h, hl);
    u->line = lno;
    if (!u->name || !u->hash) {
        free(u->name);
        free(u->hash);
        return VD_ENOMEM;
    }
    a->nusers++;
    return 0;
}

/* Sorts the users and refuses the first duplicate in file order. */
static int
check_dups(struct vd_auth *a, const char *path, char *err, size_t errlen)
{
    const struct auth_user *first = NULL, *second = NULL;
    char ub[VD_AUTH_USER_MAX * 4 + 8];
    if (a->nusers > 1) {
        qsort(a->users, a->nusers, sizeof(*a->users), cmp_user);
    }
    for (size_t i = 1; i < a->nusers; i++) {
        if (strcmp(a->users[i - 1].name, a->users[i].name) == 0 &&
            (!second || a->users[i].line < second->line)) {
            first = &a->users[i - 1];
            second = &a->users[i];
        }
    }
    if (!second) {
        return 0;
    }
    /* Equal names sort by line, so @first is the nearest earlier line; find the earliest. */
    while (first > a->users && strcmp((first - 1)->name, first->name) == 0) {
        first--;
    }
    vd_log_escape(ub, sizeof(ub), (const uint8_t *)second->name, strlen(second->name));
    return errf(err, errlen, "%s:%u: user '%s': duplicate (first at line %u)", path, second->line,
                ub, first->line);
}

int
vd_auth_load(const char *path, const struct vd_auth_params *p, struct vd_auth **out, char *err,
             size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, nlines = 1;
    int rc;

    *out = NULL;
    if (err && errlen) {
        err[0] = '\0';
    }
    if ((rc = read_all(path, &buf, &len, err, errlen))) {
        return rc;
    }
    for (size_t i = 0; i < len; i++) {
        nlines += buf[i] == '\n';
    }
    struct vd_auth *a = calloc(1, sizeof(*a));
    if (!a || !(a->users = calloc(nlines, sizeof(*a->users)))) {
        free(a);
        free(buf);
        return VD_ENOMEM;
    }
    a->params = *p;
    if (pthread_mutex_init(&a->cache_mu, NULL) != 0) {
        free(a->users);
        free(a);
        free(buf);
        return VD_ENOMEM;
    }
    if (pthread_mutex_init(&a->thr_mu, NULL) != 0) {
        pthread_mutex_destroy(&a->cache_mu);
        free(a->users);
        free(a);
        free(buf);
        return VD_ENOMEM;
    }
    const char *s = buf, *end = buf + len;
    uint32_t lno = 0;
    while (s < end && !rc) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t ll = nl ? (size_t)(nl - s) : (size_t)(end - s);
        lno++;
        if (memchr(s, '\0', ll)) {
            rc = errf(err, errlen, "%s:%u: line holds a NUL byte", path, lno);
            break;
        }
        rc = parse_line(a, path, lno, s, ll, err, errlen);
        s += ll + (nl != NULL);
    }
    /* The dummy for unknown users is the first user's hash in file order: same method and
     * cost as a real one, so a miss costs what a hit does. Taken before sorting. */
    if (!rc && a->nusers == 0) {
        rc = errf(err, errlen, "%s: no users (expected user:hash lines)", path);
    }
    if (!rc) {
        a->dummy_hash = a->users[0].hash;
        rc = check_dups(a, path, err, errlen);
    }
    if (!rc && (RAND_bytes(a->key_salt, sizeof(a->key_salt)) != 1 ||
                RAND_bytes((unsigned char *)&a->thr_seed, sizeof(a->thr_seed)) != 1)) {
        rc = errf(err, errlen, "%s: no random bytes from OpenSSL", path);
    }
    free(buf);
    if (rc) {
        if (rc == VD_ENOMEM) {
            errf(err, errlen, "%s: out of memory", path);
        }
        vd_auth_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void
vd_auth_free(struct vd_auth *a)
{
    if (!a) {
        return;
    }
    for (size_t i = 0; i < a->nusers; i++) {
        free(a->users[i].name);
        free(a->users[i].hash);
    }
    free(a->users);
    pthread_mutex_destroy(&a->cache_mu);
    pthread_mutex_destroy(&a->thr_mu);
    free(a);
}
