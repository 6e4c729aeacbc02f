/* config_keys.h — a settings table: each key of a C struct with its name, type, field offset,
 * default (written as text, in canonical form), range, one-line doc and, for model keys, its Hugging
 * Face config.json name. A key is declared once, by the module whose struct holds it:
 *   core/model_config.c   model_keys  (ModelConfig: the recipe's [model], config.json)
 *   data/loader.c         loader_keys (LoaderConfig: the loader settings the recipe's [data] states)
 * recipes/recipe.c lists these tables under its sections (plus its own [objective] [optim] [run]
 * keys), data/hf.c writes and reads config.json by walking model_keys, and model_config_default /
 * loader_config_default are the tables' defaults — so no default is written twice.
 * It lives in core/ because model_config_default must come from the table and core/ depends on
 * nothing above it (core/ includes only libc, libm, BLAS and OpenMP). libc and libm only here: no
 * files, no MPI. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* String values are limited so that a recipe line `key = value` stays within libinih's
 * 200-character line (the resolved recipe must parse again). */
#define CONFIG_STR_MAX 161

typedef enum { K_STR, K_INT, K_I64, K_U64, K_FLOAT, K_DOUBLE, K_BOOL, K_ENUM, K_TUPLE2, K_TUPLE3, K_CONV } KeyType;

typedef struct {
    const char *name; /* as written in a recipe */
    int value;
    const char *hf;   /* as written in config.json (model keys with an hf name) */
} EnumName;

enum { OPEN_LO = 1, OPEN_HI = 2 }; /* range bounds that are exclusive */

/* Field types: K_STR char[CONFIG_STR_MAX], K_INT int, K_I64 int64_t, K_U64 uint64_t, K_FLOAT float,
 * K_DOUBLE double, K_BOOL int, K_ENUM an int-sized enum, K_TUPLE2/3 double[2]/[3]. K_CONV's field
 * is a whole ModelConfig (off 0): fairseq's conv_feature_layers sets n_conv and the conv arrays. */
typedef struct {
    const char *key;
    KeyType type;
    size_t off;            /* offset of the field in the table's struct */
    const char *def;       /* the default, written as in a recipe (canonical form) */
    double lo, hi;         /* numbers (each element of a tuple): allowed range */
    int open;              /* OPEN_LO | OPEN_HI */
    const EnumName *names; /* K_ENUM: {NULL}-terminated */
    const char *doc;
    /* config.json name; NULL: not in config.json. Numbers and booleans map 1:1, enums through
     * EnumName.hf, and K_CONV to three integer lists <hf>_dim, <hf>_kernel, <hf>_stride. */
    const char *hf;
    /* model keys: 1 for a training setting (dropouts, layerdrop, masking, the conv stack's gradient
     * scale), which a run continued from another model's weights may change; 0 for the architecture,
     * which must match them (run.init_from) */
    int setting;
} ConfigKey;

/* Parse s as k's value into field. On error returns -1 with the reason in why; field is unchanged. */
int config_key_parse(const ConfigKey *k, void *field, const char *s, char *why, size_t wn);
/* Store the number v into field (K_INT, K_FLOAT, K_BOOL as 0/1: the types of model keys), with the
 * same range and integrality checks as parsing. On error returns -1 with the reason in why. */
int config_key_set_number(const ConfigKey *k, void *field, double v, char *why, size_t wn);
/* The canonical text of field: parsing it gives the same value bit for bit. */
void config_key_format(FILE *f, const ConfigKey *k, const void *field);
/* "in [0, 1)", "> 0", ... */
void config_key_range(const ConfigKey *k, char *buf, size_t n);
/* Every key's default into base (the struct the offsets are into). */
void config_keys_default(const ConfigKey *keys, int n, void *base);

/* The number syntax of recipes and command lines (recipes/cli.c), one for both: the whole of s, in
 * decimal with an optional sign, no blanks, no hex. Each returns 0 with *v set; -1 when s is not such
 * a number; 1 when it is one beyond the type: an overflow (*v the bound it passed: INT64_MIN/MAX,
 * UINT64_MAX, or ±HUGE_VAL), for config_parse_u64 a negative number (*v 0), for config_parse_real
 * also inf and nan. The caller says which key or flag, and checks the key's or the flag's range. */
int config_parse_i64(const char *s, int64_t *v);
int config_parse_u64(const char *s, uint64_t *v);
int config_parse_real(const char *s, double *v);
/* The same for the len characters at s: one number inside a longer text ("0/4", "4,2", a tuple). */
int config_parse_i64_n(const char *s, size_t len, int64_t *v);
int config_parse_real_n(const char *s, size_t len, double *v);

/* Whole numbers as integers ("10", not "1e+01"), others as the shortest %g text that reads back
 * as the same number. */
void config_format_double(char *buf, size_t n, double v);
void config_format_float(char *buf, size_t n, float v);
