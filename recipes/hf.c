/* hf.c — see hf.h. Must not: write a half-finished export under the final names (both files are
 * written as *.tmp and renamed), or accept a tensor whose dtype, shape or byte range is wrong. */
#include "hf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a small JSON reader ------------------------------------------------------------------------- */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } JsonKind;
typedef struct Json {
    JsonKind kind;
    double num;       /* J_NUM, J_BOOL */
    char *str;        /* J_STR */
    int n;            /* J_ARR, J_OBJ: children */
    struct Json *kid; /* (n) */
    char **keys;      /* J_OBJ: (n) */
} Json;

typedef struct {
    const char *s, *p;
    const char *name;
    KoeError *err;
} JsonParser;

static void json_free(Json *j) {
    for (int i = 0; i < j->n; i++) {
        json_free(&j->kid[i]);
        if (j->keys) free(j->keys[i]);
    }
    free(j->kid);
    free(j->keys);
    free(j->str);
}

static void ws(JsonParser *P) {
    while (*P->p == ' ' || *P->p == '\n' || *P->p == '\r' || *P->p == '\t') P->p++;
}

static int jerr(JsonParser *P, const char *what) {
    return koe_error_set(P->err, "%s: bad JSON at byte %lld: %s", P->name, (long long)(P->p - P->s), what);
}

static int parse_value(JsonParser *P, Json *j, int depth);

static int parse_string(JsonParser *P, char **out) {
    if (*P->p != '"') return jerr(P, "expected a string");
    P->p++;
    size_t cap = 16, n = 0;
    char *s = koe_malloc(cap);
    while (*P->p && *P->p != '"') {
        char c = *P->p++;
        if (c == '\\') {
            char e = *P->p++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': /* keep \uXXXX as '?': no field we read needs it */
                for (int k = 0; k < 4; k++)
                    if (*P->p) P->p++;
                c = '?';
                break;
            case 0: free(s); return jerr(P, "unterminated string");
            default: c = e;
            }
        }
        if (n + 2 > cap) s = koe_realloc(s, cap *= 2);
        s[n++] = c;
    }
    if (*P->p != '"') {
        free(s);
        return jerr(P, "unterminated string");
    }
    P->p++;
    s[n] = 0;
    *out = s;
    return 0;
}

static int parse_value(JsonParser *P, Json *j, int depth) {
    memset(j, 0, sizeof *j);
    if (depth > 64) return jerr(P, "nested too deeply");
    ws(P);
    char c = *P->p;
    if (c == '{' || c == '[') {
        const int obj = c == '{';
        j->kind = obj ? J_OBJ : J_ARR;
        P->p++;
        ws(P);
        if (*P->p == (obj ? '}' : ']')) {
            P->p++;
            return 0;
        }
        int cap = 0;
        for (;;) {
            if (j->n == cap) {
                cap = cap ? 2 * cap : 8;
                j->kid = koe_realloc(j->kid, (size_t)cap * sizeof *j->kid);
                if (obj) j->keys = koe_realloc(j->keys, (size_t)cap * sizeof *j->keys);
            }
            if (obj) {
                ws(P);
                if (parse_string(P, &j->keys[j->n]) < 0) return -1;
                ws(P);
                if (*P->p != ':') {
                    free(j->keys[j->n]);
                    return jerr(P, "expected ':'");
                }
                P->p++;
            }
            if (parse_value(P, &j->kid[j->n], depth + 1) < 0) {
                if (obj) free(j->keys[j->n]);
                return -1;
            }
            j->n++;
            ws(P);
            if (*P->p == ',') {
                P->p++;
                continue;
            }
            if (*P->p == (obj ? '}' : ']')) {
                P->p++;
                return 0;
            }
            return jerr(P, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (c == '"') {
        j->kind = J_STR;
        return parse_string(P, &j->str);
    }
    if (!strncmp(P->p, "true", 4) || !strncmp(P->p, "false", 5)) {
        j->kind = J_BOOL;
        j->num = c == 't';
        P->p += c == 't' ? 4 : 5;
        return 0;
    }
    if (!strncmp(P->p, "null", 4)) {
        j->kind = J_NULL;
        P->p += 4;
        return 0;
    }
    char *end;
    errno = 0;
    j->num = strtod(P->p, &end);
    if (end == P->p || errno) return jerr(P, "expected a value");
    j->kind = J_NUM;
    P->p = end;
    return 0;
}

static int json_parse(const char *text, const char *name, Json *j, KoeError *err) {
    JsonParser P = {text, text, name, err};
    if (parse_value(&P, j, 0) < 0) {
        json_free(j);
        return -1;
    }
    ws(&P);
    if (*P.p) {
        json_free(j);
        return jerr(&P, "trailing characters");
    }
    return 0;
}

static const Json *json_get(const Json *o, const char *key) {
    if (o->kind != J_OBJ) return NULL;
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return &o->kid[i];
    return NULL;
}

/* ---- files --------------------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *size, KoeError *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        koe_error_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = koe_malloc(cap + 1);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) buf = koe_realloc(buf, (cap *= 2) + 1);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        koe_error_set(err, "%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    *size = n;
    return buf;
}

static int write_config(FILE *f, const ModelConfig *c) {
    fprintf(f, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"wav2vec2\",\n", "Wav2Vec2Model");
    const char *lists[3] = {"conv_dim", "conv_kernel", "conv_stride"};
    const int *vals[3] = {c->conv_dim, c->conv_kernel, c->conv_stride};
    for (int k = 0; k < 3; k++) {
        fprintf(f, "  \"%s\": [", lists[k]);
        for (int i = 0; i < c->n_conv; i++) fprintf(f, "%s%d", i ? ", " : "", vals[k][i]);
        fprintf(f, "],\n");
    }
    fprintf(f,
            "  \"conv_bias\": %s,\n  \"feat_extract_norm\": \"%s\",\n  \"feat_extract_activation\": \"gelu\",\n"
            "  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
            "  \"intermediate_size\": %d,\n  \"hidden_act\": \"gelu\",\n  \"num_conv_pos_embeddings\": %d,\n"
            "  \"num_conv_pos_embedding_groups\": %d,\n  \"do_stable_layer_norm\": %s,\n  \"layer_norm_eps\": %.9g,\n"
            "  \"hidden_dropout\": %.9g,\n  \"attention_dropout\": %.9g,\n  \"activation_dropout\": %.9g,\n"
            "  \"feat_proj_dropout\": %.9g,\n  \"layerdrop\": %.9g,\n  \"mask_time_prob\": %.9g,\n"
            "  \"mask_time_length\": %d,\n  \"mask_time_min_masks\": %d,\n",
            c->conv_bias ? "true" : "false", c->conv_norm == CONV_NORM_LAYER ? "layer" : "group", c->D, c->L, c->H,
            c->F, c->pos_conv_kernel, c->pos_conv_groups, c->layer_norm_first ? "true" : "false",
            (double)c->layer_norm_eps, (double)c->dropout, (double)c->attention_dropout,
            (double)c->activation_dropout, (double)c->dropout_input, (double)c->encoder_layerdrop,
            (double)c->mask_prob, c->mask_length, c->mask_min_spans);
    fprintf(f,
            "  \"koe_frontend\": \"%s\",\n  \"koe_encoder\": \"%s\",\n  \"fbank_dim\": %d,\n  \"fbank_stack\": %d,\n"
            "  \"conformer_kernel\": %d,\n  \"feature_grad_mult\": %.9g\n}\n",
            c->frontend == FRONTEND_FBANK ? "fbank" : "waveform",
            c->encoder == ENCODER_CONFORMER ? "conformer" : "transformer", c->fbank_dim, c->fbank_stack,
            c->conformer_kernel, (double)c->feature_grad_mult);
    return ferror(f) ? -1 : 0;
}

static int write_safetensors(FILE *f, const ParamTable *t, const float *params) {
    /* header: {"__metadata__":{"format":"pt"}, name: {"dtype":"F32","shape":[...],"data_offsets":[a,b]}, ...} */
    size_t cap = 4096, n = 0;
    char *h = koe_malloc(cap);
#define APPEND(...)                                                         \
    do {                                                                    \
        int k_ = snprintf(h + n, cap - n, __VA_ARGS__);                     \
        while ((size_t)k_ >= cap - n) {                                     \
            h = koe_realloc(h, cap *= 2);                                   \
            k_ = snprintf(h + n, cap - n, __VA_ARGS__);                     \
        }                                                                   \
        n += (size_t)k_;                                                    \
    } while (0)
    APPEND("{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < t->n; i++) {
        const ParamEntry *e = &t->e[i];
        APPEND(",\"%s\":{\"dtype\":\"F32\",\"shape\":[", e->name);
        for (int d = 0; d < e->ndim; d++) APPEND("%s%lld", d ? "," : "", (long long)e->shape[d]);
        APPEND("],\"data_offsets\":[%lld,%lld]}", (long long)(e->offset * 4), (long long)((e->offset + e->numel) * 4));
    }
    APPEND("}");
    while (n % 8) APPEND(" "); /* data starts 8-byte aligned */
#undef APPEND
    uint64_t len = n;
    unsigned char le[8];
    for (int k = 0; k < 8; k++) le[k] = (unsigned char)(len >> (8 * k));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(h, 1, n, f) == n &&
             fwrite(params, sizeof(float), (size_t)t->total, f) == (size_t)t->total;
    free(h);
    return ok ? 0 : -1;
}

static int write_published(const char *dir, const char *name, int (*fill)(FILE *, const void *, const void *),
                           const void *a, const void *b, KoeError *err) {
    char path[4096], tmp[4100];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return koe_error_set(err, "%s: cannot create: %s (does --out exist?)", tmp, strerror(errno));
    int bad = fill(f, a, b) < 0;
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        remove(tmp);
        return koe_error_set(err, "%s: write failed: %s", tmp, strerror(errno));
    }
    return koe_publish_file(tmp, path, err);
}

static int fill_config(FILE *f, const void *a, const void *b) {
    (void)b;
    return write_config(f, a);
}
static int fill_tensors(FILE *f, const void *a, const void *b) { return write_safetensors(f, a, b); }

int hf_export(const char *dir, const ModelConfig *cfg, const ParamTable *t, const float *params, KoeError *err) {
    /* little-endian float32 is what safetensors F32 means; the raw buffer is written as is */
    const uint32_t probe = 1;
    KOE_ASSERT(*(const unsigned char *)&probe == 1);
    if (write_published(dir, "model.safetensors", fill_tensors, t, params, err) < 0) return -1;
    return write_published(dir, "config.json", fill_config, cfg, NULL, err);
}

/* ---- reading ------------------------------------------------------------------------------------- */

static int get_int(const Json *o, const char *key, int *v, const char *path, KoeError *err) {
    const Json *j = json_get(o, key);
    if (!j) return 0;
    if (j->kind != J_NUM || j->num != (double)(int)j->num) return koe_error_set(err, "%s: \"%s\" must be an integer", path, key);
    *v = (int)j->num;
    return 0;
}
static int get_float(const Json *o, const char *key, float *v, const char *path, KoeError *err) {
    const Json *j = json_get(o, key);
    if (!j || j->kind == J_NULL) return 0;
    if (j->kind != J_NUM) return koe_error_set(err, "%s: \"%s\" must be a number", path, key);
    *v = (float)j->num;
    return 0;
}
static int get_bool(const Json *o, const char *key, int *v, const char *path, KoeError *err) {
    const Json *j = json_get(o, key);
    if (!j) return 0;
    if (j->kind != J_BOOL) return koe_error_set(err, "%s: \"%s\" must be true or false", path, key);
    *v = (int)j->num;
    return 0;
}
static int get_str(const Json *o, const char *key, const char *a, const char *b, int va, int vb, int *v,
                   const char *path, KoeError *err) {
    const Json *j = json_get(o, key);
    if (!j) return 0;
    if (j->kind != J_STR || (strcmp(j->str, a) && strcmp(j->str, b)))
        return koe_error_set(err, "%s: \"%s\" must be \"%s\" or \"%s\"", path, key, a, b);
    *v = strcmp(j->str, a) ? vb : va;
    return 0;
}

int hf_read_config(const char *dir, ModelConfig *c, KoeError *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t size;
    char *text = read_file(path, &size, err);
    if (!text) return -1;
    Json root;
    int rc = json_parse(text, path, &root, err);
    free(text);
    if (rc < 0) return -1;
    rc = -1;
    if (root.kind != J_OBJ) {
        koe_error_set(err, "%s: not a JSON object", path);
        goto out;
    }
    model_config_default(c);
    const char *lists[3] = {"conv_dim", "conv_kernel", "conv_stride"};
    int *vals[3] = {c->conv_dim, c->conv_kernel, c->conv_stride};
    int n_conv = -1;
    for (int k = 0; k < 3; k++) {
        const Json *j = json_get(&root, lists[k]);
        if (!j) continue;
        if (j->kind != J_ARR || j->n < 1 || j->n > MODEL_MAX_CONV || (n_conv >= 0 && j->n != n_conv)) {
            koe_error_set(err, "%s: \"%s\" must be a list of 1..%d integers, as long as the other conv_* lists", path,
                          lists[k], MODEL_MAX_CONV);
            goto out;
        }
        n_conv = j->n;
        for (int i = 0; i < j->n; i++) {
            if (j->kid[i].kind != J_NUM || j->kid[i].num < 1) {
                koe_error_set(err, "%s: \"%s\"[%d] must be a positive integer", path, lists[k], i);
                goto out;
            }
            vals[k][i] = (int)j->kid[i].num;
        }
    }
    if (n_conv > 0) c->n_conv = n_conv;
    int fe = c->frontend, en = c->encoder, cn = c->conv_norm;
    if (get_bool(&root, "conv_bias", &c->conv_bias, path, err) < 0 ||
        get_str(&root, "feat_extract_norm", "group", "layer", CONV_NORM_GROUP, CONV_NORM_LAYER, &cn, path, err) < 0 ||
        get_int(&root, "hidden_size", &c->D, path, err) < 0 ||
        get_int(&root, "num_hidden_layers", &c->L, path, err) < 0 ||
        get_int(&root, "num_attention_heads", &c->H, path, err) < 0 ||
        get_int(&root, "intermediate_size", &c->F, path, err) < 0 ||
        get_int(&root, "num_conv_pos_embeddings", &c->pos_conv_kernel, path, err) < 0 ||
        get_int(&root, "num_conv_pos_embedding_groups", &c->pos_conv_groups, path, err) < 0 ||
        get_bool(&root, "do_stable_layer_norm", &c->layer_norm_first, path, err) < 0 ||
        get_float(&root, "layer_norm_eps", &c->layer_norm_eps, path, err) < 0 ||
        get_float(&root, "hidden_dropout", &c->dropout, path, err) < 0 ||
        get_float(&root, "attention_dropout", &c->attention_dropout, path, err) < 0 ||
        get_float(&root, "activation_dropout", &c->activation_dropout, path, err) < 0 ||
        get_float(&root, "feat_proj_dropout", &c->dropout_input, path, err) < 0 ||
        get_float(&root, "layerdrop", &c->encoder_layerdrop, path, err) < 0 ||
        get_float(&root, "mask_time_prob", &c->mask_prob, path, err) < 0 ||
        get_int(&root, "mask_time_length", &c->mask_length, path, err) < 0 ||
        get_int(&root, "mask_time_min_masks", &c->mask_min_spans, path, err) < 0 ||
        get_str(&root, "koe_frontend", "waveform", "fbank", FRONTEND_WAVEFORM, FRONTEND_FBANK, &fe, path, err) < 0 ||
        get_str(&root, "koe_encoder", "transformer", "conformer", ENCODER_TRANSFORMER, ENCODER_CONFORMER, &en, path,
                err) < 0 ||
        get_int(&root, "fbank_dim", &c->fbank_dim, path, err) < 0 ||
        get_int(&root, "fbank_stack", &c->fbank_stack, path, err) < 0 ||
        get_int(&root, "conformer_kernel", &c->conformer_kernel, path, err) < 0 ||
        get_float(&root, "feature_grad_mult", &c->feature_grad_mult, path, err) < 0)
        goto out;
    c->frontend = (FrontendKind)fe;
    c->encoder = (EncoderKind)en;
    c->conv_norm = (ConvNorm)cn;
    const Json *act = json_get(&root, "hidden_act");
    if (act && (act->kind != J_STR || strcmp(act->str, "gelu"))) {
        koe_error_set(err, "%s: hidden_act must be \"gelu\" (koe's encoder uses exact GELU)", path);
        goto out;
    }
    rc = 0;
out:
    json_free(&root);
    return rc;
}

/* The table's name for a safetensors name: drop a task model's "wav2vec2." / "hubert." prefix and map
 * torch.nn.utils.parametrizations' weight norm names to weight_g / weight_v. */
static void table_name(const char *in, char *out, size_t n) {
    if (!strncmp(in, "wav2vec2.", 9)) in += 9;
    else if (!strncmp(in, "hubert.", 7)) in += 7;
    snprintf(out, n, "%s", in);
    char *p = strstr(out, "parametrizations.weight.original");
    if (p && (p[32] == '0' || p[32] == '1') && !p[33]) snprintf(p, n - (size_t)(p - out), "weight_%c", p[32] == '0' ? 'g' : 'v');
}

int hf_read_params(const char *dir, const ParamTable *t, float *params, KoeError *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t size;
    char *buf = read_file(path, &size, err);
    if (!buf) return -1;
    int rc = -1;
    uint64_t hlen = 0;
    char *htext = NULL;
    Json h = {0};
    int have_h = 0, skipped = 0;
    unsigned char *done = koe_calloc((size_t)(t->n ? t->n : 1), 1);
    if (size < 8) {
        koe_error_set(err, "%s: too short for safetensors (%zu bytes)", path, size);
        goto out;
    }
    for (int k = 0; k < 8; k++) hlen |= (uint64_t)(unsigned char)buf[k] << (8 * k);
    if (hlen > size - 8) {
        koe_error_set(err, "%s: header length %llu exceeds the file (%zu bytes): truncated?", path,
                      (unsigned long long)hlen, size);
        goto out;
    }
    htext = koe_malloc(hlen + 1);
    memcpy(htext, buf + 8, hlen);
    htext[hlen] = 0;
    if (json_parse(htext, path, &h, err) < 0) goto out;
    have_h = 1;
    const char *data = buf + 8 + hlen;
    const uint64_t dsize = size - 8 - hlen;
    for (int i = 0; i < h.n; i++) {
        if (!strcmp(h.keys[i], "__metadata__")) continue;
        char name[512];
        table_name(h.keys[i], name, sizeof name);
        const int ti = params_find(t, name);
        if (ti < 0) {
            koe_warn("%s: %s is not part of the encoder; skipped", path, h.keys[i]);
            skipped++;
            continue;
        }
        const ParamEntry *e = &t->e[ti];
        const Json *o = &h.kid[i], *dt = json_get(o, "dtype"), *sh = json_get(o, "shape"),
                   *off = json_get(o, "data_offsets");
        if (!dt || dt->kind != J_STR || strcmp(dt->str, "F32")) {
            koe_error_set(err, "%s: %s has dtype %s, expected F32", path, h.keys[i], dt && dt->kind == J_STR ? dt->str : "?");
            goto out;
        }
        int same = sh && sh->kind == J_ARR && sh->n == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = sh->kid[d].kind == J_NUM && sh->kid[d].num == (double)e->shape[d];
        if (!same) {
            char want[128];
            params_shape_str(e, want, sizeof want);
            koe_error_set(err, "%s: %s has another shape than this model's %s (config.json and weights disagree?)",
                          path, h.keys[i], want);
            goto out;
        }
        if (!off || off->kind != J_ARR || off->n != 2 || off->kid[0].kind != J_NUM || off->kid[1].kind != J_NUM ||
            off->kid[0].num < 0 || off->kid[1].num > (double)dsize ||
            off->kid[1].num - off->kid[0].num != (double)e->numel * 4) {
            koe_error_set(err, "%s: %s: data_offsets missing or not %lld bytes inside the file", path, h.keys[i],
                          (long long)e->numel * 4);
            goto out;
        }
        memcpy(params + e->offset, data + (uint64_t)off->kid[0].num, (size_t)e->numel * 4);
        done[ti] = 1;
    }
    for (int i = 0; i < t->n; i++) {
        if (done[i] || !strcmp(t->e[i].name, "masked_spec_embed")) continue;
        koe_error_set(err, "%s: tensor %s is missing", path, t->e[i].name);
        goto out;
    }
    if (skipped) koe_log("%s: %d tensor(s) outside the encoder skipped", path, skipped);
    rc = 0;
out:
    if (have_h) json_free(&h);
    free(htext);
    free(done);
    free(buf);
    return rc;
}
