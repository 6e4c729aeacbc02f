/* config_keys.c — parsing, range checks and canonical formatting of settings-table values (see
 * config_keys.h). Must not know any particular table: the recipe's sections, ModelConfig's keys and
 * the loader's keys are declared by their owners. */
#include "config_keys.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "model.h"

void config_format_double(char *buf, size_t n, double v) {
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

void config_format_float(char *buf, size_t n, float v) {
    if (v == floorf(v) && fabsf(v) < 1e7f) {
        snprintf(buf, n, "%.0f", (double)v);
        return;
    }
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
}

void config_key_range(const ConfigKey *k, char *buf, size_t n) {
    char lo[32], hi[32];
    config_format_double(lo, sizeof lo, k->lo);
    config_format_double(hi, sizeof hi, k->hi);
    if (isinf(k->hi))
        snprintf(buf, n, "%s %s", k->open & OPEN_LO ? ">" : ">=", lo);
    else
        snprintf(buf, n, "in %c%s, %s%c", k->open & OPEN_LO ? '(' : '[', lo, hi, k->open & OPEN_HI ? ')' : ']');
}

static int in_range(const ConfigKey *k, double v) {
    if (k->open & OPEN_LO ? !(v > k->lo) : !(v >= k->lo)) return 0;
    if (k->open & OPEN_HI ? !(v < k->hi) : !(v <= k->hi)) return 0;
    return 1;
}

/* -1 with "TEXT is out of range: must be ..." when v is outside k's range or [lo_type, hi_type]. */
static int check_range(const ConfigKey *k, double v, double lo_type, double hi_type, const char *text, char *why,
                       size_t wn) {
    if (v >= lo_type && v <= hi_type && in_range(k, v)) return 0;
    char range[96];
    config_key_range(k, range, sizeof range);
    snprintf(why, wn, "%s is out of range: must be %s", text, range);
    return -1;
}

/* A float key: v is checked as the float it is stored as, so that what is stored reads back
 * (0.99999999 rounds to 1, 1e-50 to 0). */
static int check_float(const ConfigKey *k, double v, float *out, const char *text, char *why, size_t wn) {
    if (check_range(k, v, -FLT_MAX, FLT_MAX, text, why, wn)) return -1;
    const float f = (float)v;
    if (!in_range(k, (double)f)) {
        char range[96], num[40];
        config_key_range(k, range, sizeof range);
        config_format_float(num, sizeof num, f);
        snprintf(why, wn, "%s is out of range as a 32-bit float (it becomes %s): must be %s", text, num, range);
        return -1;
    }
    *out = f;
    return 0;
}

/* s is all decimal: digits, and for a real a point and an exponent; a sign in front (and the
 * exponent's). strto* alone would take leading blanks, hex and (strtod) inf and nan words. */
static int decimal_text(const char *s, int real) {
    if (*s == '+' || *s == '-') s++;
    if (!isdigit((unsigned char)*s) && !(real && *s == '.')) return 0;
    return strspn(s, real ? "0123456789.eE+-" : "0123456789") == strlen(s);
}

int config_parse_i64(const char *s, int64_t *v) {
    if (!decimal_text(s, 0)) return -1;
    char *end;
    errno = 0;
    const long long x = strtoll(s, &end, 10);
    if (*end) return -1;
    *v = x;
    return errno == ERANGE ? 1 : 0;
}

int config_parse_u64(const char *s, uint64_t *v) {
    if (!decimal_text(s, 0)) return -1;
    if (*s == '-') { /* strtoull would negate it */
        *v = 0;
        return strspn(s + 1, "0") == strlen(s + 1) ? 0 : 1; /* "-0" is 0 */
    }
    char *end;
    errno = 0;
    const unsigned long long x = strtoull(s, &end, 10);
    if (*end) return -1;
    *v = x;
    return errno == ERANGE ? 1 : 0;
}

int config_parse_real(const char *s, double *v) {
    char *end;
    errno = 0;
    const double x = strtod(s, &end);
    if (!*s || *end || isspace((unsigned char)*s)) return -1;
    *v = x;
    if (!isfinite(x)) return 1; /* inf, nan, or an overflow to HUGE_VAL */
    return decimal_text(s, 1) ? 0 : -1;
}

/* The len characters at s as a string of their own (malloc'ed). */
static char *text_n(const char *s, size_t len) {
    char *t = koe_malloc(len + 1);
    memcpy(t, s, len);
    t[len] = 0;
    return t;
}

int config_parse_i64_n(const char *s, size_t len, int64_t *v) {
    char *t = text_n(s, len);
    const int rc = config_parse_i64(t, v);
    free(t);
    return rc;
}

int config_parse_real_n(const char *s, size_t len, double *v) {
    char *t = text_n(s, len);
    const int rc = config_parse_real(t, v);
    free(t);
    return rc;
}

static int parse_integer(const ConfigKey *k, const char *s, double lo_type, double hi_type, long long *out,
                         char *why, size_t wn) {
    int64_t v;
    const int rc = config_parse_i64(s, &v);
    if (rc < 0) {
        snprintf(why, wn, "'%s' is not an integer", s);
        return -1;
    }
    if (check_range(k, rc ? (v < 0 ? -INFINITY : INFINITY) : (double)v, lo_type, hi_type, s, why, wn)) return -1;
    *out = v;
    return 0;
}

static int parse_real(const ConfigKey *k, const char *s, double *out, char *why, size_t wn) {
    double v;
    const int rc = config_parse_real(s, &v);
    if (rc) {
        snprintf(why, wn, rc < 0 ? "'%s' is not a number" : "'%s' is not a finite number", s);
        return -1;
    }
    if (check_range(k, v, -INFINITY, INFINITY, s, why, wn)) return -1;
    *out = v;
    return 0;
}

/* "(a, b[, c])": n numbers in the recipes' syntax (config_parse_real), each in the key's range;
 * blanks around them. */
static int parse_tuple(const ConfigKey *k, const char *s, int n, double *out, char *why, size_t wn) {
    const char *p = s;
    double v[3];
    while (isspace((unsigned char)*p)) p++;
    if (*p++ != '(') goto bad;
    for (int i = 0; i < n; i++) {
        while (isspace((unsigned char)*p)) p++;
        const int len = (int)strcspn(p, " \t\r\n\v\f,)");
        if (len == 0) goto bad;
        const int rc = config_parse_real_n(p, (size_t)len, &v[i]);
        if (rc) {
            snprintf(why, wn, "element %d ('%.*s') of '%s' is not a %snumber", i + 1, len, p, s,
                     rc < 0 ? "" : "finite ");
            return -1;
        }
        p += len;
        while (isspace((unsigned char)*p)) p++;
        if (*p++ != (i == n - 1 ? ')' : ',')) goto bad;
    }
    while (isspace((unsigned char)*p)) p++;
    if (*p) goto bad;
    for (int i = 0; i < n; i++) {
        if (!in_range(k, v[i])) {
            char range[96], num[32];
            config_key_range(k, range, sizeof range);
            config_format_double(num, sizeof num, v[i]);
            snprintf(why, wn, "element %d (%s) of '%s' is out of range: must be %s", i + 1, num, s, range);
            return -1;
        }
    }
    memcpy(out, v, (size_t)n * sizeof(double));
    return 0;
bad:
    snprintf(why, wn, "'%s' is not a tuple of %d numbers like %s", s, n, k->def);
    return -1;
}

/* A string must survive being written as `key = value` and read back by libinih. */
static int check_string(const char *s, char *why, size_t wn) {
    if (strlen(s) >= CONFIG_STR_MAX) {
        snprintf(why, wn, "value is %zu characters long; at most %d are allowed", strlen(s), CONFIG_STR_MAX - 1);
        return -1;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p < 32) {
            snprintf(why, wn, "value contains a control character");
            return -1;
        }
        /* libinih reads ';' after white space as a comment; the stored recipe writes "key = value",
         * so a leading ';' would be one too */
        if (*p == ';' && (p == s || isspace((unsigned char)p[-1]))) {
            snprintf(why, wn, "value %s, which an INI file reads as a comment",
                     p == s ? "starts with ';'" : "contains ' ;'");
            return -1;
        }
    }
    if (*s && (isspace((unsigned char)s[0]) || isspace((unsigned char)s[strlen(s) - 1]))) {
        snprintf(why, wn, "value starts or ends with white space");
        return -1;
    }
    return 0;
}

static int parse_enum(const ConfigKey *k, int *field, const char *s, char *why, size_t wn) {
    for (const EnumName *e = k->names; e->name; e++)
        if (!strcmp(e->name, s)) {
            *field = e->value;
            return 0;
        }
    int len = snprintf(why, wn, "'%s' is not one of", s);
    for (const EnumName *e = k->names; e->name && len >= 0 && (size_t)len < wn; e++)
        len += snprintf(why + len, wn - (size_t)len, " %s", e->name);
    return -1;
}

int config_key_parse(const ConfigKey *k, void *field, const char *s, char *why, size_t wn) {
    long long iv;
    double dv;
    switch (k->type) {
    case K_STR:
        if (check_string(s, why, wn)) return -1;
        snprintf(field, CONFIG_STR_MAX, "%s", s);
        return 0;
    case K_INT:
        if (parse_integer(k, s, INT_MIN, INT_MAX, &iv, why, wn)) return -1;
        *(int *)field = (int)iv;
        return 0;
    case K_I64:
        if (parse_integer(k, s, (double)INT64_MIN, (double)INT64_MAX, &iv, why, wn)) return -1;
        *(int64_t *)field = iv;
        return 0;
    case K_U64:
        if (config_parse_u64(s, field)) {
            snprintf(why, wn, "'%s' is not a non-negative integer below 2^64", s);
            return -1;
        }
        return 0;
    case K_FLOAT:
        if (parse_real(k, s, &dv, why, wn)) return -1;
        return check_float(k, dv, field, s, why, wn);
    case K_DOUBLE:
        if (parse_real(k, s, &dv, why, wn)) return -1;
        *(double *)field = dv;
        return 0;
    case K_BOOL:
        if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcmp(s, "1")) {
            *(int *)field = 1;
            return 0;
        }
        if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcmp(s, "0")) {
            *(int *)field = 0;
            return 0;
        }
        snprintf(why, wn, "'%s' is not a boolean: use true or false", s);
        return -1;
    case K_ENUM: return parse_enum(k, field, s, why, wn);
    case K_TUPLE2: return parse_tuple(k, s, 2, field, why, wn);
    case K_TUPLE3: return parse_tuple(k, s, 3, field, why, wn);
    case K_CONV: return model_parse_conv_layers(s, field, why, wn);
    }
    koe_fatal(KOE_EXIT_INTERNAL, "config key %s has no type", k->key);
}

int config_key_set_number(const ConfigKey *k, void *field, double v, char *why, size_t wn) {
    char num[40];
    config_format_double(num, sizeof num, v);
    if (!isfinite(v)) {
        snprintf(why, wn, "%s is not a finite number", num);
        return -1;
    }
    if ((k->type == K_INT || k->type == K_BOOL) && v != floor(v)) {
        snprintf(why, wn, "%s is not an integer", num);
        return -1;
    }
    switch (k->type) {
    case K_INT:
        if (check_range(k, v, INT_MIN, INT_MAX, num, why, wn)) return -1;
        *(int *)field = (int)v;
        return 0;
    case K_FLOAT: return check_float(k, v, field, num, why, wn);
    case K_BOOL:
        if (v != 0 && v != 1) {
            snprintf(why, wn, "%s is not a boolean", num);
            return -1;
        }
        *(int *)field = (int)v;
        return 0;
    default: koe_fatal(KOE_EXIT_INTERNAL, "config key %s: not a number key", k->key);
    }
}

void config_key_format(FILE *f, const ConfigKey *k, const void *field) {
    char num[3][40];
    switch (k->type) {
    case K_STR: fputs(field, f); return;
    case K_INT: fprintf(f, "%d", *(const int *)field); return;
    case K_I64: fprintf(f, "%" PRId64, *(const int64_t *)field); return;
    case K_U64: fprintf(f, "%" PRIu64, *(const uint64_t *)field); return;
    case K_FLOAT:
        config_format_float(num[0], sizeof num[0], *(const float *)field);
        fputs(num[0], f);
        return;
    case K_DOUBLE:
        config_format_double(num[0], sizeof num[0], *(const double *)field);
        fputs(num[0], f);
        return;
    case K_BOOL: fputs(*(const int *)field ? "true" : "false", f); return;
    case K_ENUM:
        for (const EnumName *e = k->names; e->name; e++)
            if (e->value == *(const int *)field) {
                fputs(e->name, f);
                return;
            }
        koe_fatal(KOE_EXIT_INTERNAL, "config key %s holds %d, not a value of its enum", k->key, *(const int *)field);
    case K_TUPLE2:
    case K_TUPLE3: {
        int n = k->type == K_TUPLE2 ? 2 : 3;
        for (int i = 0; i < n; i++) config_format_double(num[i], sizeof num[i], ((const double *)field)[i]);
        if (n == 2)
            fprintf(f, "(%s,%s)", num[0], num[1]);
        else
            fprintf(f, "(%s,%s,%s)", num[0], num[1], num[2]);
        return;
    }
    case K_CONV: model_format_conv_layers(f, field); return;
    }
}

void config_keys_default(const ConfigKey *keys, int n, void *base) {
    for (int k = 0; k < n; k++) {
        char why[512];
        if (config_key_parse(&keys[k], (char *)base + keys[k].off, keys[k].def, why, sizeof why))
            koe_fatal(KOE_EXIT_INTERNAL, "config key %s: default: %s", keys[k].key, why);
    }
}
