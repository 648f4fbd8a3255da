/* SPDX-License-Identifier: MIT */
/* Cache policy (RFC 9111), as pure functions over field views: Cache-Control parsing (§5.2),
 * storability for a shared cache (§3, §3.5), freshness lifetime (§4.2.1, heuristics §4.2.2),
 * the age calculation (§4.2.3), whether a stored response may serve a request (§4.2.4, §5.2.1),
 * the Vary secondary key (§4.1), stale-while-revalidate / stale-if-error (RFC 5861), targeted
 * fields such as CDN-Cache-Control parsed as Structured Fields (RFC 9213, RFC 8941), and Range /
 * If-Range over a stored response (RFC 9110 §14, §13.1.5). Nothing here allocates except into a
 * caller's dbuf. */
#include "vd/config.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "vd/cache.h"
#include "vd/err.h"

/* Inline, so that the length of each literal folds and most names are told apart by length
 * without a call (a directive is checked against up to fifteen names). */
static inline bool
iov_eq(struct vd_iov v, const char *lc)
{
    return vd_hdr_name_is(v, lc);
}

/* delta-seconds (RFC 9111 §1.2.2), also accepted in quoted form. Returns -1 when invalid. */
static int64_t
delta_seconds(struct vd_iov v)
{
    if (v.len >= 2 && v.base[0] == '"' && v.base[v.len - 1] == '"') {
        v.base++;
        v.len -= 2;
    }
    if (v.len == 0) {
        return -1;
    }
    int64_t x = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9') {
            return -1;
        }
        if (x < VD_CACHE_DELTA_MAX) {
            x = x * 10 + (v.base[i] - '0');
        }
    }
    return x > VD_CACHE_DELTA_MAX ? VD_CACHE_DELTA_MAX : x;
}

/* Sets *@slot from @val when the directive was not seen yet (the first occurrence wins);
 * an invalid or missing value reads as 0 (stale: the restrictive choice). */
static void
set_delta(int64_t *slot, bool has_val, struct vd_iov val)
{
    if (*slot >= 0) {
        return;
    }
    int64_t d = has_val ? delta_seconds(val) : -1;
    *slot = d < 0 ? 0 : d;
}

/* The same for the RFC 5861 windows, where an invalid or missing value grants nothing. */
static void
set_window(int64_t *slot, bool has_val, struct vd_iov val)
{
    if (*slot < 0 && has_val) {
        *slot = delta_seconds(val);
    }
}

void
vd_cache_cc_parse(const struct vd_hdr *h, size_t n, struct vd_cache_cc *cc)
{
    *cc = (struct vd_cache_cc){.max_age = -1,
                               .s_maxage = -1,
                               .max_stale = -1,
                               .min_fresh = -1,
                               .stale_while_revalidate = -1,
                               .stale_if_error = -1};
    for (size_t i = 0; i < n; i++) {
        if (!vd_hdr_name_is(h[i].name, "cache-control")) {
            continue;
        }
        cc->present = true;
        struct vd_iov rest = h[i].value, item;
        while (vd_list_next(&rest, &item)) {
            struct vd_iov name = item, val = VD_IOV_NULL;
            bool has_val = false;
            const uint8_t *eq = memchr(item.base, '=', item.len);
            if (eq) {
                name.len = (size_t)(eq - item.base);
                val.base = eq + 1;
                val.len = item.len - name.len - 1;
                has_val = true;
                /* BWS around "=" is not in the grammar, but trim it: it costs nothing. */
                while (name.len &&
                       (name.base[name.len - 1] == ' ' || name.base[name.len - 1] == '\t')) {
                    name.len--;
                }
                while (val.len && (val.base[0] == ' ' || val.base[0] == '\t')) {
                    val.base++;
                    val.len--;
                }
            }
            if (iov_eq(name, "max-age")) {
                set_delta(&cc->max_age, has_val, val);
            } else if (iov_eq(name, "s-maxage")) {
                set_delta(&cc->s_maxage, has_val, val);
            } else if (iov_eq(name, "min-fresh")) {
                set_delta(&cc->min_fresh, has_val, val);
            } else if (iov_eq(name, "max-stale")) {
                if (cc->max_stale < 0) {
                    int64_t d = has_val ? delta_seconds(val) : VD_CACHE_ANY_STALE;
                    /* An invalid value is ignored rather than read as "any staleness". */
                    cc->max_stale = d < 0 ? -1 : d;
                }
            } else if (iov_eq(name, "stale-while-revalidate")) {
                set_window(&cc->stale_while_revalidate, has_val, val);
            } else if (iov_eq(name, "stale-if-error")) {
                set_window(&cc->stale_if_error, has_val, val);
            } else if (iov_eq(name, "no-store")) {
                cc->no_store = true;
            } else if (iov_eq(name, "no-cache")) {
                cc->no_cache = true;
            } else if (iov_eq(name, "private")) {
                cc->private_ = true;
            } else if (iov_eq(name, "public")) {
                cc->public_ = true;
            } else if (iov_eq(name, "must-understand")) {
                cc->must_understand = true;
            } else if (iov_eq(name, "must-revalidate")) {
                cc->must_revalidate = true;
            } else if (iov_eq(name, "proxy-revalidate")) {
                cc->proxy_revalidate = true;
            } else if (iov_eq(name, "only-if-cached")) {
                cc->only_if_cached = true;
            } else if (iov_eq(name, "no-transform")) {
                cc->no_transform = true;
            }
            /* Unknown directives are ignored (§5.2.3). */
        }
    }
}

void
vd_cache_req_cc(const struct vd_hdr *h, size_t n, struct vd_cache_cc *cc)
{
    vd_cache_cc_parse(h, n, cc);
    if (cc->present) {
        return;
    }
    /* RFC 9111 §5.4: Pragma: no-cache counts as Cache-Control: no-cache only without a
     * Cache-Control field. */
    for (size_t i = 0; i < n; i++) {
        if (vd_hdr_name_is(h[i].name, "pragma") && vd_list_has(h[i].value, "no-cache")) {
            cc->no_cache = true;
        }
    }
}

/* ---- targeted fields (RFC 9213) over Structured Fields (RFC 8941) ------------------------- */

enum sf_type { SF_INT, SF_DEC, SF_STR, SF_TOKEN, SF_BIN, SF_BOOL, SF_DATE, SF_INNER };

struct sf_val {
    enum sf_type type;
    int64_t i; /* SF_INT */
    bool b;    /* SF_BOOL */
};

struct sfc {
    const uint8_t *p, *end;
};

static bool
sf_lcalpha(uint8_t c)
{
    return c >= 'a' && c <= 'z';
}

static bool
sf_alpha(uint8_t c)
{
    return sf_lcalpha(c) || (c >= 'A' && c <= 'Z');
}

static bool
sf_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static bool
sf_tchar(uint8_t c)
{
    return sf_alpha(c) || sf_digit(c) || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void
sf_sp(struct sfc *c)
{
    while (c->p < c->end && *c->p == ' ') {
        c->p++;
    }
}

/* RFC 8941 §4.2.3.3 */
static bool
sf_key(struct sfc *c, struct vd_iov *key)
{
    const uint8_t *s = c->p;
    if (c->p == c->end || !(sf_lcalpha(*c->p) || *c->p == '*')) {
        return false;
    }
    c->p++;
    while (c->p < c->end && (sf_lcalpha(*c->p) || sf_digit(*c->p) || *c->p == '_' || *c->p == '-' ||
                             *c->p == '.' || *c->p == '*')) {
        c->p++;
    }
    *key = (struct vd_iov){s, (size_t)(c->p - s)};
    return true;
}

/* RFC 8941 §4.2.4 (Integer or Decimal) */
static bool
sf_number(struct sfc *c, struct sf_val *v)
{
    bool neg = false;
    if (c->p < c->end && *c->p == '-') {
        neg = true;
        c->p++;
    }
    if (c->p == c->end || !sf_digit(*c->p)) {
        return false;
    }
    int64_t x = 0;
    size_t ndig = 0, frac = 0;
    bool dec = false;
    while (c->p < c->end) {
        uint8_t ch = *c->p;
        if (sf_digit(ch)) {
            if (dec) {
                frac++;
            } else {
                x = x * 10 + (ch - '0');
            }
            ndig++;
        } else if (ch == '.' && !dec) {
            if (ndig > 12) {
                return false;
            }
            dec = true;
        } else {
            break;
        }
        c->p++;
        if (ndig > 15) {
            return false; /* both kinds have at most 15 digits */
        }
    }
    if (dec) {
        if (frac == 0 || frac > 3) {
            return false;
        }
        v->type = SF_DEC;
        return true;
    }
    v->type = SF_INT;
    v->i = neg ? -x : x;
    return true;
}

/* RFC 8941 §4.2.3.1 (bare item; RFC 9651's Date "@" integer is accepted too) */
static bool
sf_bare(struct sfc *c, struct sf_val *v)
{
    if (c->p == c->end) {
        return false;
    }
    uint8_t ch = *c->p;
    if (ch == '-' || sf_digit(ch)) {
        return sf_number(c, v);
    }
    if (ch == '"') {
        c->p++;
        while (c->p < c->end) {
            uint8_t k = *c->p++;
            if (k == '\\') {
                if (c->p == c->end || (*c->p != '"' && *c->p != '\\')) {
                    return false;
                }
                c->p++;
            } else if (k == '"') {
                v->type = SF_STR;
                return true;
            } else if (k < 0x20 || k > 0x7e) {
                return false;
            }
        }
        return false;
    }
    if (ch == '*' || sf_alpha(ch)) {
        c->p++;
        while (c->p < c->end && (sf_tchar(*c->p) || *c->p == ':' || *c->p == '/')) {
            c->p++;
        }
        v->type = SF_TOKEN;
        return true;
    }
    if (ch == ':') {
        c->p++;
        while (c->p < c->end && *c->p != ':') {
            uint8_t k = *c->p++;
            if (!(sf_alpha(k) || sf_digit(k) || k == '+' || k == '/' || k == '=')) {
                return false;
            }
        }
        if (c->p == c->end) {
            return false;
        }
        c->p++;
        v->type = SF_BIN;
        return true;
    }
    if (ch == '?') {
        c->p++;
        if (c->p == c->end || (*c->p != '0' && *c->p != '1')) {
            return false;
        }
        v->type = SF_BOOL;
        v->b = *c->p++ == '1';
        return true;
    }
    if (ch == '@') {
        c->p++;
        if (!sf_number(c, v) || v->type != SF_INT) {
            return false;
        }
        v->type = SF_DATE;
        return true;
    }
    return false;
}

/* RFC 8941 §4.2.3.2: parameters are parsed (they must be valid) and ignored (RFC 9213 §2.1). */
static bool
sf_params(struct sfc *c)
{
    while (c->p < c->end && *c->p == ';') {
        c->p++;
        sf_sp(c);
        struct vd_iov k;
        struct sf_val v;
        if (!sf_key(c, &k)) {
            return false;
        }
        if (c->p < c->end && *c->p == '=') {
            c->p++;
            if (!sf_bare(c, &v)) {
                return false;
            }
        }
    }
    return true;
}

/* RFC 8941 §4.2.1.2 */
static bool
sf_inner(struct sfc *c, struct sf_val *v)
{
    c->p++; /* "(" */
    for (;;) {
        sf_sp(c);
        if (c->p == c->end) {
            return false;
        }
        if (*c->p == ')') {
            c->p++;
            v->type = SF_INNER;
            return sf_params(c);
        }
        struct sf_val item;
        if (!sf_bare(c, &item) || !sf_params(c)) {
            return false;
        }
        if (c->p == c->end || (*c->p != ' ' && *c->p != ')')) {
            return false;
        }
    }
}

/* Applies one Dictionary member to @cc. Returns false for a known directive of the wrong
 * type. */
static bool
sf_apply(struct vd_iov key, const struct sf_val *v, struct vd_cache_cc *cc)
{
    static const struct {
        const char *name;
        size_t off;
    } deltas[] = {
        {"max-age", offsetof(struct vd_cache_cc, max_age)},
        {"s-maxage", offsetof(struct vd_cache_cc, s_maxage)},
        {"stale-while-revalidate", offsetof(struct vd_cache_cc, stale_while_revalidate)},
        {"stale-if-error", offsetof(struct vd_cache_cc, stale_if_error)},
    };

    static const struct {
        const char *name;
        size_t off;
        bool str; /* a String (a list of field names) is allowed too */
    } flags[] = {
        {"no-store", offsetof(struct vd_cache_cc, no_store), false},
        {"no-cache", offsetof(struct vd_cache_cc, no_cache), true},
        {"private", offsetof(struct vd_cache_cc, private_), true},
        {"public", offsetof(struct vd_cache_cc, public_), false},
        {"must-revalidate", offsetof(struct vd_cache_cc, must_revalidate), false},
        {"proxy-revalidate", offsetof(struct vd_cache_cc, proxy_revalidate), false},
        {"must-understand", offsetof(struct vd_cache_cc, must_understand), false},
        {"no-transform", offsetof(struct vd_cache_cc, no_transform), false},
    };

    for (size_t i = 0; i < VD_ARRAY_LEN(deltas); i++) {
        if (iov_eq(key, deltas[i].name)) {
            if (v->type != SF_INT || v->i < 0) {
                return false;
            }
            *(int64_t *)((char *)cc + deltas[i].off) = VD_MIN(v->i, VD_CACHE_DELTA_MAX);
            return true;
        }
    }
    for (size_t i = 0; i < VD_ARRAY_LEN(flags); i++) {
        if (iov_eq(key, flags[i].name)) {
            if (v->type == SF_BOOL) {
                *(bool *)((char *)cc + flags[i].off) = v->b;
                return true;
            }
            if (v->type == SF_STR && flags[i].str) {
                *(bool *)((char *)cc + flags[i].off) = true;
                return true;
            }
            return false;
        }
    }
    return true; /* unknown directives are ignored */
}

/* One field line as a Dictionary (RFC 8941 §4.2.2) into @cc. Sets *@members when it had any. */
static bool
sf_dictionary(struct vd_iov line, struct vd_cache_cc *cc, bool *members)
{
    struct sfc c = {line.base, line.base + line.len};
    sf_sp(&c);
    while (c.p < c.end) {
        struct vd_iov key;
        struct sf_val v = {.type = SF_BOOL, .b = true};
        if (!sf_key(&c, &key)) {
            return false;
        }
        if (c.p < c.end && *c.p == '=') {
            c.p++;
            bool ok =
                c.p < c.end && *c.p == '(' ? sf_inner(&c, &v) : (sf_bare(&c, &v) && sf_params(&c));
            if (!ok) {
                return false;
            }
        } else if (!sf_params(&c)) {
            return false;
        }
        if (!sf_apply(key, &v, cc)) {
            return false;
        }
        *members = true;
        while (c.p < c.end && (*c.p == ' ' || *c.p == '\t')) {
            c.p++;
        }
        if (c.p == c.end) {
            break;
        }
        if (*c.p != ',') {
            return false;
        }
        c.p++;
        while (c.p < c.end && (*c.p == ' ' || *c.p == '\t')) {
            c.p++;
        }
        if (c.p == c.end) {
            return false; /* a trailing comma */
        }
    }
    return true;
}

int
vd_cache_targeted_parse(const struct vd_hdr *h, size_t n, const char *name, struct vd_cache_cc *cc)
{
    vd_cache_cc_parse(NULL, 0, cc);
    bool members = false;
    size_t nl = strlen(name);
    for (size_t i = 0; i < n; i++) {
        if (!vd__hdr_name_eq(h[i].name, name, nl)) {
            continue;
        }
        /* Each line parses on its own: the same as the lines joined with ", " (RFC 8941
         * §4.2), except that an empty line is skipped rather than a parse error. */
        if (!sf_dictionary(h[i].value, cc, &members)) {
            vd_cache_cc_parse(NULL, 0, cc);
            return -EINVAL;
        }
    }
    if (!members) {
        return -ENOENT;
    }
    cc->present = true;
    cc->targeted = true;
    return 0;
}

bool
vd_cache_targeted_cc(const struct vd_hdr *h, size_t n, char *const *names, size_t nnames,
                     struct vd_cache_cc *cc)
{
    for (size_t i = 0; i < nnames; i++) {
        if (vd_cache_targeted_parse(h, n, names[i], cc) == 0) {
            return true;
        }
    }
    return false;
}

void
vd_cache_resp_cc(const struct vd_hdr *h, size_t n, char *const *names, size_t nnames,
                 struct vd_cache_cc *cc)
{
    if (!vd_cache_targeted_cc(h, n, names, nnames, cc)) {
        vd_cache_cc_parse(h, n, cc);
    }
}

/* ---- dates --------------------------------------------------------------------------------- */

static int
month_index(const uint8_t *p)
{
    static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    for (int i = 0; i < 12; i++) {
        if (strncasecmp((const char *)p, months + 3 * i, 3) == 0) {
            return i;
        }
    }
    return -1;
}

static bool
digits(const uint8_t *p, size_t n, int *out)
{
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        x = x * 10 + (p[i] - '0');
    }
    *out = x;
    return true;
}

/* "HH:MM:SS" */
static bool
clock_of(const uint8_t *p, struct tm *tm)
{
    return p[2] == ':' && p[5] == ':' && digits(p, 2, &tm->tm_hour) &&
           digits(p + 3, 2, &tm->tm_min) && digits(p + 6, 2, &tm->tm_sec) && tm->tm_hour < 24 &&
           tm->tm_min < 60 && tm->tm_sec < 61;
}

int
vd_http_date_parse(struct vd_iov v, time_t *out)
{
    char s[64];
    if (v.len < 24 || v.len >= sizeof(s)) {
        return -EINVAL;
    }
    memcpy(s, v.base, v.len);
    s[v.len] = '\0';
    const uint8_t *p = (const uint8_t *)s;
    struct tm tm = {0};
    const char *comma = strchr(s, ',');
    if (comma && comma - s == 3 && v.len == 29) {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (p[4] != ' ' || p[7] != ' ' || p[11] != ' ' || p[16] != ' ' || p[25] != ' ' ||
            strncasecmp((const char *)p + 26, "GMT", 3) != 0 || !digits(p + 5, 2, &tm.tm_mday) ||
            (tm.tm_mon = month_index(p + 8)) < 0 || !digits(p + 12, 4, &tm.tm_year) ||
            !clock_of(p + 17, &tm)) {
            return -EINVAL;
        }
        tm.tm_year -= 1900;
    } else if (comma) {
        /* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT" */
        const uint8_t *d = (const uint8_t *)comma + 2;
        size_t rest = v.len - (size_t)(d - p);
        if (comma[1] != ' ' || rest != 22 || d[2] != '-' || d[6] != '-' || d[9] != ' ' ||
            d[18] != ' ' || strncasecmp((const char *)d + 19, "GMT", 3) != 0 ||
            !digits(d, 2, &tm.tm_mday) || (tm.tm_mon = month_index(d + 3)) < 0 ||
            !digits(d + 7, 2, &tm.tm_year) || !clock_of(d + 10, &tm)) {
            return -EINVAL;
        }
        /* RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past. */
        time_t now = time(NULL);
        struct tm nt;
        gmtime_r(&now, &nt);
        int year = 1900 + nt.tm_year - (1900 + nt.tm_year) % 100 + tm.tm_year;
        if (year > 1900 + nt.tm_year + 50) {
            year -= 100;
        }
        tm.tm_year = year - 1900;
    } else {
        /* asctime-date: "Sun Nov  6 08:49:37 1994" */
        if (v.len != 24 || p[3] != ' ' || p[7] != ' ' || p[10] != ' ' || p[19] != ' ' ||
            (tm.tm_mon = month_index(p + 4)) < 0 || !clock_of(p + 11, &tm) ||
            !digits(p + 20, 4, &tm.tm_year)) {
            return -EINVAL;
        }
        if (p[8] == ' ') {
            if (!digits(p + 9, 1, &tm.tm_mday)) {
                return -EINVAL;
            }
        } else if (!digits(p + 8, 2, &tm.tm_mday)) {
            return -EINVAL;
        }
        tm.tm_year -= 1900;
    }
    if (tm.tm_mday < 1 || tm.tm_mday > 31) {
        return -EINVAL;
    }
    *out = timegm(&tm);
    return 0;
}

static bool
field_date(const struct vd_hdr *h, size_t n, const char *lc, time_t *out)
{
    const struct vd_hdr *f = vd_hdr_find(h, n, lc);
    return f && vd_http_date_parse(f->value, out) == 0;
}

/* ---- storability --------------------------------------------------------------------------- */

bool
vd_cache_status_heuristic(int status)
{
    switch (status) {
    case 200:
    case 203:
    case 204:
    case 206:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501:
        return true;
    default:
        return false;
    }
}

/* Final statuses this cache understands (RFC 9111 §3, §5.2.2.3): the ones RFC 9110 defines,
 * except 206 (partial content is never stored or combined, §3.4; ranges are cut from stored
 * complete responses) and 304 (only ever used to update a stored response). */
static bool
status_understood(int status)
{
    if (status < 200 || status > 599 || status == 206 || status == 304) {
        return false;
    }
    return strcmp(vd_http_reason(status), "Unknown") != 0;
}

/* Statuses a response may be stored with (RFC 9111 §3): final ones of a known class (2xx-5xx,
 * RFC 9110 §15), not 206 or 304; one this cache does not understand (599, say) only without
 * must-understand, and then, as any status that is not heuristically cacheable, only with
 * explicit freshness or public. */
static bool
status_storable(int status, const struct vd_cache_cc *resp)
{
    if (status < 200 || status > 599 || status == 206 || status == 304) {
        return false;
    }
    return !resp->must_understand || status_understood(status);
}

enum vd_cache_store_verdict
vd_cache_storable(struct vd_iov method, int status, const struct vd_cache_cc *req,
                  const struct vd_cache_cc *resp, bool req_auth, const struct vd_hdr *h, size_t n)
{
    if (!(method.len == 3 && memcmp(method.base, "GET", 3) == 0)) {
        return VD_CACHE_NO_METHOD;
    }
    if (!status_storable(status, resp)) {
        return VD_CACHE_NO_STATUS;
    }
    /* §5.2.2.3: with must-understand and an understood status, no-store (there as a fallback for
     * caches that do not know the directive) is ignored. The request's no-store still counts. */
    if (req->no_store || (resp->no_store && !resp->must_understand)) {
        return VD_CACHE_NO_STORE;
    }
    if (resp->private_) {
        return VD_CACHE_PRIVATE;
    }
    if (req_auth && !resp->must_revalidate && !resp->public_ && resp->s_maxage < 0) {
        return VD_CACHE_AUTH;
    }
    for (size_t i = 0; i < n; i++) {
        if (vd_hdr_name_is(h[i].name, "vary") && vd_list_has(h[i].value, "*")) {
            return VD_CACHE_VARY_STAR;
        }
    }
    if (!resp->public_ && resp->max_age < 0 && resp->s_maxage < 0 &&
        (resp->targeted || !vd_hdr_find(h, n, "expires")) && !vd_cache_status_heuristic(status)) {
        return VD_CACHE_NOT_WORTH;
    }
    return VD_CACHE_STORE_OK;
}

/* ---- freshness and age --------------------------------------------------------------------- */

int64_t
vd_cache_freshness(int status, const struct vd_cache_cc *cc, const struct vd_hdr *h, size_t n,
                   time_t now, int64_t heuristic_max, bool *heuristic)
{
    *heuristic = false;
    if (cc->s_maxage >= 0) {
        return cc->s_maxage;
    }
    if (cc->max_age >= 0) {
        return cc->max_age;
    }
    time_t date;
    if (!field_date(h, n, "date", &date)) {
        date = now;
    }
    /* RFC 9213 §2.2: a targeted field replaces Expires as well as Cache-Control. */
    const struct vd_hdr *exp = cc->targeted ? NULL : vd_hdr_find(h, n, "expires");
    if (exp) {
        time_t e;
        /* RFC 9111 §5.3: an invalid Expires (e.g. "0") is a time in the past. */
        if (vd_http_date_parse(exp->value, &e) < 0 || e <= date) {
            return 0;
        }
        return (int64_t)(e - date);
    }
    time_t lm;
    if ((vd_cache_status_heuristic(status) || cc->public_) &&
        field_date(h, n, "last-modified", &lm) && lm < date) {
        *heuristic = true;
        int64_t f = (int64_t)(date - lm) / 10;
        return f > heuristic_max ? heuristic_max : f;
    }
    return 0;
}

void
vd_cache_times_init(struct vd_cache_times *tm, const struct vd_hdr *h, size_t n,
                    time_t request_time, time_t response_time)
{
    tm->request_time = request_time;
    tm->response_time = response_time;
    if (!field_date(h, n, "date", &tm->date_value)) {
        tm->date_value = response_time;
    }
    tm->age_value = 0;
    const struct vd_hdr *a = vd_hdr_find(h, n, "age");
    struct vd_iov rest, first;
    if (a && (rest = a->value, vd_list_next(&rest, &first))) {
        /* A list (an Age folded with another) counts by its first member, like a repeated
         * directive (§4.2.1); an invalid value is ignored. */
        int64_t v = delta_seconds(first);
        tm->age_value = v < 0 ? 0 : v;
    }
}

int64_t
vd_cache_current_age(const struct vd_cache_times *tm, time_t now)
{
    int64_t apparent_age = VD_MAX(0, (int64_t)(tm->response_time - tm->date_value));
    int64_t response_delay = (int64_t)(tm->response_time - tm->request_time);
    int64_t corrected_age_value = tm->age_value + response_delay;
    int64_t corrected_initial_age = VD_MAX(apparent_age, corrected_age_value);
    int64_t resident_time = (int64_t)(now - tm->response_time);
    return corrected_initial_age + resident_time;
}

enum vd_cache_use
vd_cache_usable(const struct vd_cache_cc *req, const struct vd_cache_cc *resp, int64_t lifetime,
                int64_t age)
{
    if (req->no_cache || resp->no_cache) {
        return VD_CACHE_USE_REVALIDATE;
    }
    /* max-age=0 is how clients ask for an end-to-end revalidation; an age of 0 would satisfy it
     * literally (§5.2.1.1), but every deployed cache revalidates, and so does this one. */
    if (req->max_age == 0 || (req->max_age > 0 && age > req->max_age)) {
        return VD_CACHE_USE_REVALIDATE;
    }
    if (req->min_fresh >= 0 && lifetime - age < req->min_fresh) {
        return VD_CACHE_USE_REVALIDATE;
    }
    if (lifetime > age) {
        return VD_CACHE_USE_FRESH;
    }
    /* Stale (§4.2.4): only with the client's consent, and never when the response forbids it
     * (must-revalidate; proxy-revalidate and s-maxage for a shared cache, §5.2.2.8/10). */
    if (resp->must_revalidate || resp->proxy_revalidate || resp->s_maxage >= 0) {
        return VD_CACHE_USE_REVALIDATE;
    }
    if (req->max_stale >= 0 &&
        (req->max_stale == VD_CACHE_ANY_STALE || age - lifetime <= req->max_stale)) {
        return VD_CACHE_USE_FRESH;
    }
    return VD_CACHE_USE_REVALIDATE;
}

bool
vd_cache_stale_if_error(const struct vd_cache_cc *req, const struct vd_cache_cc *resp,
                        int64_t lifetime, int64_t age)
{
    if (resp->must_revalidate || resp->proxy_revalidate || resp->no_cache) {
        return false;
    }
    int64_t window = VD_MAX(resp->stale_if_error, req->stale_if_error);
    return window >= 0 && VD_MAX(0, age - lifetime) <= window;
}

bool
vd_cache_stale_while_revalidate(const struct vd_cache_cc *req, const struct vd_cache_cc *resp,
                                int64_t lifetime, int64_t age)
{
    if (resp->stale_while_revalidate < 0 || age < lifetime ||
        age - lifetime > resp->stale_while_revalidate) {
        return false;
    }
    if (resp->no_cache || resp->must_revalidate || resp->proxy_revalidate) {
        return false;
    }
    return !req->no_cache && req->min_fresh < 0 &&
           (req->max_age < 0 || (req->max_age > 0 && age <= req->max_age));
}

/* ---- Vary ---------------------------------------------------------------------------------- */

#define PREFS_MAX 32

struct pref {
    struct vd_iov tag;
    unsigned q; /* weight in thousandths */
};

/* qvalue (RFC 9110 §12.4.2): "0" ["." 0*3DIGIT] / "1" ["." 0*3("0")]. */
static bool
qvalue(struct vd_iov v, unsigned *out)
{
    if (v.len == 0 || v.len > 5 || (v.base[0] != '0' && v.base[0] != '1') ||
        (v.len > 1 && v.base[1] != '.')) {
        return false;
    }
    unsigned q = (unsigned)(v.base[0] - '0') * 1000, scale = 100;
    for (size_t i = 2; i < v.len; i++, scale /= 10) {
        if (v.base[i] < '0' || v.base[i] > '9') {
            return false;
        }
        q += (unsigned)(v.base[i] - '0') * scale;
    }
    if (q > 1000) {
        return false;
    }
    *out = q;
    return true;
}

static int
pref_cmp(const struct pref *a, const struct pref *b)
{
    if (a->q != b->q) {
        return a->q > b->q ? -1 : 1;
    }
    size_t n = VD_MIN(a->tag.len, b->tag.len);
    int c = strncasecmp((const char *)a->tag.base, (const char *)b->tag.base, n);
    return c ? c : (a->tag.len > b->tag.len) - (a->tag.len < b->tag.len);
}

/* Appends @v lowercased (ASCII): field names, language tags and codings are case-insensitive. */
static int
add_lower(struct vd_dbuf *out, struct vd_iov v)
{
    size_t at = out->len;
    int r = vd_dbuf_add(out, v.base, v.len);
    if (r == 0) {
        vd_hdr_lower((uint8_t *)out->p + at, (const uint8_t *)out->p + at, v.len);
    }
    return r;
}

/* Whether request field @h is named @name (any case). */
static bool
named(const struct vd_hdr *h, struct vd_iov name)
{
    return h->name.len == name.len &&
           strncasecmp((const char *)h->name.base, (const char *)name.base, name.len) == 0;
}

/* Accept-Language and Accept-Encoding as a Vary key: members in order of weight, then name,
 * lowercase, each with its weight, so that requests asking for the same thing in another order,
 * case or spacing ("en, de" and "De,EN") share a stored variant (language tags and codings are
 * case-insensitive, and members of equal weight are equally preferred). Returns 1 when the field
 * has something else (a parameter other than q, an invalid weight, more than PREFS_MAX members):
 * the caller keeps it as sent. */
static int
key_weighted(struct vd_iov name, const struct vd_hdr *req, size_t nreq, struct vd_dbuf *out)
{
    struct pref p[PREFS_MAX];
    size_t n = 0;
    for (size_t j = 0; j < nreq; j++) {
        if (!named(&req[j], name)) {
            continue;
        }
        struct vd_iov rest = req[j].value, item;
        while (vd_list_next(&rest, &item)) {
            if (n == PREFS_MAX) {
                return 1;
            }
            const uint8_t *semi = memchr(item.base, ';', item.len);
            struct vd_iov tag = {item.base, semi ? (size_t)(semi - item.base) : item.len};
            while (tag.len && (tag.base[tag.len - 1] == ' ' || tag.base[tag.len - 1] == '\t')) {
                tag.len--;
            }
            unsigned q = 1000;
            if (semi) {
                struct vd_iov prm = {semi + 1, (size_t)(item.base + item.len - semi - 1)};
                while (prm.len && (prm.base[0] == ' ' || prm.base[0] == '\t')) {
                    prm.base++;
                    prm.len--;
                }
                if (prm.len < 2 || (prm.base[0] | 0x20) != 'q' || prm.base[1] != '=' ||
                    !qvalue((struct vd_iov){prm.base + 2, prm.len - 2}, &q)) {
                    return 1;
                }
            }
            if (tag.len == 0 || memchr(tag.base, ' ', tag.len) || memchr(tag.base, '\t', tag.len)) {
                return 1;
            }
            /* Insertion sort: a handful of members. */
            struct pref x = {tag, q};
            size_t k = n++;
            while (k > 0 && pref_cmp(&x, &p[k - 1]) < 0) {
                p[k] = p[k - 1];
                k--;
            }
            p[k] = x;
        }
    }
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        /* The weight as a qvalue again, shortest form ("0.5"; none for 1), so the key reads back
         * to itself. */
        char w[10] = ";q=0.", *d = w + 5;
        unsigned q = p[i].q;
        for (unsigned scale = 100; scale > 0 && q % (scale * 10) != 0; scale /= 10) {
            *d++ = (char)('0' + q / scale % 10);
        }
        size_t wl = q == 1000 ? 0 : q == 0 ? 4 : (size_t)(d - w);
        r = i ? vd_dbuf_add(out, ", ", 2) : 0;
        r = r ? r : add_lower(out, p[i].tag);
        if (r == 0 && wl > 0) {
            r = vd_dbuf_add(out, w, wl);
        }
    }
    return r;
}

static int
key_for_name(struct vd_iov name, const struct vd_hdr *req, size_t nreq, struct vd_dbuf *out)
{
    int r = add_lower(out, name);
    r = r ? r : vd_dbuf_add(out, ":", 1);
    if (r == 0 &&
        (vd_hdr_name_is(name, "accept-language") || vd_hdr_name_is(name, "accept-encoding"))) {
        size_t mark = out->len;
        int w = key_weighted(name, req, nreq, out);
        if (w <= 0) {
            return w ? w : vd_dbuf_add(out, "\n", 1);
        }
        out->len = mark; /* not a plain weighted list: as sent */
        out->p[mark] = '\0';
    }
    bool first = true;
    for (size_t j = 0; j < nreq && r == 0; j++) {
        if (!named(&req[j], name)) {
            continue;
        }
        /* Normalise: each element trimmed, joined with ", " across lines and within them. */
        struct vd_iov rest = req[j].value, item;
        while (r == 0 && vd_list_next(&rest, &item)) {
            r = first ? 0 : vd_dbuf_add(out, ", ", 2);
            r = r ? r : vd_dbuf_add(out, item.base, item.len);
            first = false;
        }
    }
    return r ? r : vd_dbuf_add(out, "\n", 1);
}

int
vd_cache_vary_key(const struct vd_hdr *resp, size_t nresp, const struct vd_hdr *req, size_t nreq,
                  struct vd_dbuf *names, struct vd_dbuf *out)
{
    int r = 0;
    for (size_t i = 0; i < nresp && r == 0; i++) {
        if (!vd_hdr_name_is(resp[i].name, "vary")) {
            continue;
        }
        struct vd_iov rest = resp[i].value, item;
        while (r == 0 && vd_list_next(&rest, &item)) {
            if (item.len == 1 && item.base[0] == '*') {
                return -EINVAL;
            }
            r = key_for_name(item, req, nreq, out);
            if (r == 0 && names) {
                r = names->len ? vd_dbuf_add(names, ",", 1) : 0;
                r = r ? r : add_lower(names, item);
            }
        }
    }
    return r;
}

int
vd_cache_vary_key_names(const char *names, const struct vd_hdr *req, size_t nreq,
                        struct vd_dbuf *out)
{
    struct vd_iov rest = {(const uint8_t *)names, strlen(names)}, item;
    int r = 0;
    while (r == 0 && vd_list_next(&rest, &item)) {
        r = key_for_name(item, req, nreq, out);
    }
    return r;
}

/* ---- Range (RFC 9110 §14) ------------------------------------------------------------------ */

/* 1*DIGIT at *@p (advanced), saturating far above any representation length. */
static bool
range_pos(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    const uint8_t *q = *p;
    uint64_t x = 0;
    while (q < end && *q >= '0' && *q <= '9') {
        x = x < (UINT64_MAX >> 4) ? x * 10 + (uint64_t)(*q - '0') : (UINT64_MAX >> 4);
        q++;
    }
    if (q == *p) {
        return false;
    }
    *p = q;
    *out = x;
    return true;
}

int
vd_cache_range_parse(struct vd_iov v, uint64_t len, struct vd_cache_range *out, size_t max)
{
    /* ranges-specifier = range-unit "=" range-set (§14.1.1); the unit is case-insensitive. */
    if (v.len < 6 || strncasecmp((const char *)v.base, "bytes=", 6) != 0 || len == 0 || max == 0) {
        return 0;
    }
    struct vd_iov rest = {v.base + 6, v.len - 6};
    size_t specs = 0, n = 0;
    /* range-set = 1#range-spec: empty elements are allowed and skipped (§5.6.1), but there
     * must be one real element; vd_list_next skips empty ones and trims OWS. */
    struct vd_iov item;
    while (vd_list_next(&rest, &item)) {
        const uint8_t *p = item.base, *end = item.base + item.len;
        uint64_t first, last;
        bool suffix = *p == '-';
        if (++specs > max) {
            return 0; /* §14.2: many ranges are a sign of abuse; ignore the field */
        }
        if (suffix) {
            p++;
            if (!range_pos(&p, end, &last) || p != end) {
                return 0;
            }
            if (last == 0) {
                continue; /* suffix-length 0 is valid but never satisfiable (§14.1.2) */
            }
            first = last >= len ? 0 : len - last;
            last = len - 1;
        } else {
            if (!range_pos(&p, end, &first) || p == end || *p != '-') {
                return 0;
            }
            p++;
            if (p == end) {
                last = UINT64_MAX;
            } else if (!range_pos(&p, end, &last) || p != end || last < first) {
                return 0; /* §14.1.1: last-pos below first-pos makes the range-spec invalid */
            }
            if (first >= len) {
                continue; /* unsatisfiable; the others may still be */
            }
            if (last >= len) {
                last = len - 1;
            }
        }
        out[n++] = (struct vd_cache_range){first, last};
    }
    if (specs == 0) {
        return 0;
    }
    if (n == 0) {
        return -ERANGE;
    }
    /* Sort (at most @max elements: insertion sort) and coalesce overlapping or adjacent ranges,
     * which also defeats the "same bytes many times" amplification. */
    for (size_t i = 1; i < n; i++) {
        struct vd_cache_range x = out[i];
        size_t j = i;
        while (j > 0 && out[j - 1].first > x.first) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = x;
    }
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        if (out[i].first <= out[k].last + 1) {
            if (out[i].last > out[k].last) {
                out[k].last = out[i].last;
            }
        } else {
            out[++k] = out[i];
        }
    }
    return (int)(k + 1);
}

bool
vd_cache_if_range(struct vd_iov v, const struct vd_hdr *h, size_t n)
{
    if (v.len >= 2 && v.base[0] == '"') {
        /* Strong comparison (§8.8.3.2): neither tag weak, same octets. */
        const struct vd_hdr *et = vd_hdr_find(h, n, "etag");
        return et && et->value.len == v.len && v.base[v.len - 1] == '"' &&
               memcmp(et->value.base, v.base, v.len) == 0;
    }
    if (v.len >= 2 && v.base[0] == 'W' && v.base[1] == '/') {
        return false;
    }
    /* An HTTP-date must match the stored Last-Modified exactly and be a strong validator: for an
     * intermediate cache, at least 60 s before the stored Date (§13.1.5, §8.8.2.2). */
    const struct vd_hdr *lm = vd_hdr_find(h, n, "last-modified");
    time_t lmt, date, d;
    if (!lm || lm->value.len != v.len || memcmp(lm->value.base, v.base, v.len) != 0 ||
        vd_http_date_parse(v, &d) < 0 || vd_http_date_parse(lm->value, &lmt) < 0 ||
        !field_date(h, n, "date", &date)) {
        return false;
    }
    return date - lmt >= 60;
}
