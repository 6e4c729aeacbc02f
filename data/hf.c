/* hf.c — see hf.h. Must not: name a config.json field for a model setting (the Hugging Face names
 * are model_keys' column; only the constants koe's encoder implies are written here), write a
 * half-finished export under the final names (both files are written as *.tmp, then both renamed), or
 * accept a tensor whose dtype, shape or byte range is wrong, or the two files of two different exports
 * (koe_export_id). */
#include "hf.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "checkpoint.h"

static const char *const conv_lists[3] = {"dim", "kernel", "stride"}; /* K_CONV's <hf>_<list> fields */

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

/* transformers' Wav2Vec2Config defaults for fine-tuning, written under transformers' names so that
 * fine-tuning an export starts from them, never read back (koe's pretraining settings are the
 * koe_* fields, core/model_config.c says why) */
static const char finetune_defaults[] =
    "{\"hidden_dropout\": 0.1, \"attention_dropout\": 0.1, \"activation_dropout\": 0.1, \"feat_proj_dropout\": 0.0,"
    " \"feat_quantizer_dropout\": 0.0, \"final_dropout\": 0.1, \"layerdrop\": 0.1, \"mask_time_prob\": 0.05,"
    " \"mask_time_length\": 10, \"mask_time_min_masks\": 2, \"mask_feature_prob\": 0.0, \"mask_feature_length\": 10,"
    " \"mask_feature_min_masks\": 0}";

/* config.json: the constant fields koe's encoder implies, transformers' fine-tuning defaults, then
 * every model key with an hf name. */
static json_t *config_json(const ModelConfig *c) {
    json_t *root = json_object(), *arch = json_array();
    json_array_append_new(arch, json_string("Wav2Vec2Model"));
    json_object_set_new(root, "architectures", arch);
    json_object_set_new(root, "model_type", json_string("wav2vec2"));
    json_object_set_new(root, "feat_extract_activation", json_string("gelu"));
    json_object_set_new(root, "hidden_act", json_string("gelu"));
    json_t *ft = json_loads(finetune_defaults, 0, NULL);
    KOE_ASSERT(ft);
    json_object_update(root, ft);
    json_decref(ft);
    for (int i = 0; i < model_n_keys; i++) {
        const ConfigKey *k = &model_keys[i];
        const char *field = (const char *)c + k->off;
        if (!k->hf) continue;
        switch (k->type) {
        case K_CONV:
            for (int l = 0; l < 3; l++) {
                const int *v = l == 0 ? c->conv_dim : l == 1 ? c->conv_kernel : c->conv_stride;
                json_t *a = json_array();
                for (int j = 0; j < c->n_conv; j++) json_array_append_new(a, json_integer(v[j]));
                char name[128];
                snprintf(name, sizeof name, "%s_%s", k->hf, conv_lists[l]);
                json_object_set_new(root, name, a);
            }
            break;
        case K_ENUM: {
            const EnumName *e = k->names;
            while (e->name && e->value != *(const int *)field) e++;
            KOE_ASSERT(e->name);
            json_object_set_new(root, k->hf, json_string(e->hf));
            break;
        }
        case K_BOOL: json_object_set_new(root, k->hf, json_boolean(*(const int *)field)); break;
        case K_INT: json_object_set_new(root, k->hf, json_integer(*(const int *)field)); break;
        case K_FLOAT: { /* the shortest decimal that reads back as the same float: "0.1", not 0.100000001 */
            char num[40];
            config_format_float(num, sizeof num, *(const float *)field);
            json_object_set_new(root, k->hf, json_real(strtod(num, NULL)));
            break;
        }
        default: koe_fatal(KOE_EXIT_INTERNAL, "hf: model key %s has a type config.json cannot hold", k->key);
        }
    }
    return root;
}

/* What one export writes: both files carry id (koe_export_id in config.json and in the safetensors
 * __metadata__), FNV-1a 64 of config.json's fields and of the tensors' checksum, so a reader can tell
 * a pair the export published together from one an interrupted export left mixed. */
#define EXPORT_ID_MAX 64

typedef struct {
    const ModelConfig *cfg;
    const ParamTable *t;
    const float *params;
    char id[17];
} Export;

static void drop_tmp(const char *tmp) {
    koe_output_end(tmp);
    remove(tmp);
}

static void export_id(Export *x) {
    json_t *root = config_json(x->cfg);
    char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(root);
    KOE_ASSERT(text);
    const uint64_t sum = checkpoint_sum(x->params, 0, x->t->total);
    uint64_t h = koe_fnv1a(KOE_FNV_OFFSET, text, strlen(text));
    h = koe_fnv1a(h, &sum, sizeof sum);
    free(text);
    snprintf(x->id, sizeof x->id, "%016llx", (unsigned long long)h);
}

static int write_config(FILE *f, const Export *x) {
    json_t *root = config_json(x->cfg);
    json_object_set_new(root, "koe_export_id", json_string(x->id));
    int rc = json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    json_decref(root);
    return rc < 0 || fputc('\n', f) == EOF || ferror(f) ? -1 : 0;
}

static int write_safetensors(FILE *f, const Export *x) {
    /* header: {"__metadata__":{"format":"pt","koe_export_id":ID}, name: {"dtype":"F32","shape":[...],
     * "data_offsets":[a,b]}, ...} */
    const ParamTable *t = x->t;
    json_t *h = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(meta, "koe_export_id", json_string(x->id));
    json_object_set_new(h, "__metadata__", meta);
    for (int i = 0; i < t->n; i++) {
        const ParamEntry *e = &t->e[i];
        json_t *o = json_object(), *shape = json_array();
        json_object_set_new(o, "dtype", json_string("F32"));
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_object_set_new(o, "shape", shape);
        json_object_set_new(o, "data_offsets", json_pack("[II]", (json_int_t)(e->offset * 4),
                                                         (json_int_t)((e->offset + e->numel) * 4)));
        json_object_set_new(h, e->name, o);
    }
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!text) return -1;
    size_t n = strlen(text), pad = (8 - n % 8) % 8; /* data starts 8-byte aligned */
    uint64_t len = n + pad;
    unsigned char le[8];
    for (int k = 0; k < 8; k++) le[k] = (unsigned char)(len >> (8 * k));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(text, 1, n, f) == n && fwrite("       ", 1, pad, f) == pad &&
             fwrite(x->params, sizeof(float), (size_t)t->total, f) == (size_t)t->total;
    free(text);
    return ok ? 0 : -1;
}

/* DIR/NAME.tmp filled by fill, an output in progress (core/common.h) until published or dropped. */
static int write_tmp(const char *tmp, int (*fill)(FILE *, const Export *), const Export *x, KoeError *err) {
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        koe_error_set(err, "%s: cannot create: %s (does --out exist?)", tmp, strerror(errno));
        return koe_error_fs(err, tmp);
    }
    koe_output_begin(tmp);
    int bad = fill(f, x) < 0;
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        koe_error_set(err, "%s: write failed: %s", tmp, strerror(errno));
        koe_error_fs(err, tmp);
        drop_tmp(tmp);
        return -1;
    }
    return 0;
}

int hf_export(const char *dir, const ModelConfig *cfg, const ParamTable *t, const float *params, KoeError *err) {
    /* little-endian float32 is what safetensors F32 means; the raw buffer is written as is */
    const uint32_t probe = 1;
    KOE_ASSERT(*(const unsigned char *)&probe == 1);
    Export x = {.cfg = cfg, .t = t, .params = params};
    export_id(&x);
    /* both files are complete before either is published: a failure leaves the previous export whole;
     * a crash between the two renames leaves a pair whose ids differ, which hf_read_params refuses */
    char st[4096], st_tmp[4100], cj[4096], cj_tmp[4100];
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    snprintf(cj, sizeof cj, "%s/config.json", dir);
    snprintf(st_tmp, sizeof st_tmp, "%s.tmp", st);
    snprintf(cj_tmp, sizeof cj_tmp, "%s.tmp", cj);
    if (write_tmp(st_tmp, write_safetensors, &x, err) < 0) return -1;
    if (write_tmp(cj_tmp, write_config, &x, err) < 0) {
        drop_tmp(st_tmp);
        return -1;
    }
    if (koe_publish_file(st_tmp, st, err) < 0) {
        drop_tmp(cj_tmp);
        return -1;
    }
    return koe_publish_file(cj_tmp, cj, err);
}

/* ---- reading ------------------------------------------------------------------------------------- */

/* The conv lists present in root set n_conv and their arrays (the others keep theirs); the rest zero. */
static int read_conv(const json_t *root, const ConfigKey *k, ModelConfig *c, const char *path, KoeError *err) {
    int *vals[3] = {c->conv_dim, c->conv_kernel, c->conv_stride};
    int n_conv = -1;
    for (int l = 0; l < 3; l++) {
        char name[128];
        snprintf(name, sizeof name, "%s_%s", k->hf, conv_lists[l]);
        const json_t *a = json_object_get(root, name);
        if (!a) continue;
        const int n = json_is_array(a) ? (int)json_array_size(a) : -1;
        int ok = n >= 1 && n <= MODEL_MAX_CONV && (n_conv < 0 || n == n_conv);
        for (int i = 0; ok && i < n; i++) {
            const json_t *v = json_array_get(a, (size_t)i);
            ok = json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 1000000;
        }
        if (!ok)
            return koe_error_set(err, "%s: \"%s\" must be a list of 1..%d integers in [1, 1000000], as long as the "
                                 "other %s_* lists (model.%s)", path, name, MODEL_MAX_CONV, k->hf, k->key);
        n_conv = n;
        for (int i = 0; i < MODEL_MAX_CONV; i++) vals[l][i] = i < n ? (int)json_integer_value(json_array_get(a, (size_t)i)) : 0;
    }
    if (n_conv < 0) return 0;
    c->n_conv = n_conv;
    for (int l = 0; l < 3; l++)
        for (int i = n_conv; i < MODEL_MAX_CONV; i++) vals[l][i] = 0;
    return 0;
}

/* Key k from root's field k->hf (absent or null: k keeps its value), checked against k's range. */
static int read_key(const json_t *root, const ConfigKey *k, ModelConfig *c, const char *path, KoeError *err) {
    if (k->type == K_CONV) return read_conv(root, k, c, path, err);
    const json_t *v = json_object_get(root, k->hf);
    if (!v || json_is_null(v)) return 0;
    void *field = (char *)c + k->off;
    char why[512];
    if (k->type == K_ENUM) {
        for (const EnumName *e = k->names; e->name; e++)
            if (json_is_string(v) && !strcmp(json_string_value(v), e->hf))
                return config_key_parse(k, field, e->name, why, sizeof why) ? koe_error_set(err, "%s", why) : 0;
        int len = snprintf(why, sizeof why, "%s: \"%s\" must be one of", path, k->hf);
        for (const EnumName *e = k->names; e->name && len >= 0 && (size_t)len < sizeof why; e++)
            len += snprintf(why + len, sizeof why - (size_t)len, " \"%s\"", e->hf);
        return koe_error_set(err, "%s (model.%s)", why, k->key);
    }
    if (k->type == K_BOOL ? !json_is_boolean(v) : !json_is_number(v))
        return koe_error_set(err, "%s: \"%s\" must be %s (model.%s)", path, k->hf,
                             k->type == K_BOOL ? "true or false" : k->type == K_INT ? "an integer" : "a number", k->key);
    if (config_key_set_number(k, field, json_is_boolean(v) ? json_is_true(v) : json_number_value(v), why, sizeof why))
        return koe_error_set(err, "%s: \"%s\": %s (model.%s)", path, k->hf, why, k->key);
    return 0;
}

static int exists(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

int hf_is_pickle(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    const size_t n = strlen(path);
    if (!S_ISDIR(st.st_mode)) return n > 3 && !strcmp(path + n - 3, ".pt");
    return !exists(path, "model.safetensors") && !exists(path, "model.safetensors.index.json") &&
           (exists(path, "pytorch_model.bin") || exists(path, "pytorch_model.bin.index.json"));
}

/* What `koe init --from` was given, when it is not a directory in the layout koe reads: each message
 * says what to run instead. */
static int check_layout(const char *dir, KoeError *err) {
    struct stat st;
    if (stat(dir, &st) != 0) return koe_error_set(err, "%s: %s", dir, strerror(errno));
    if (hf_is_pickle(dir))
        return koe_error_set(err, "%s is a Python pickle (a fairseq .pt or pytorch_model.bin), which koe reads only "
                             "through its converter: `koe init --from %s` runs it, or run it yourself:\n"
                             "  python3 data/pickle_to_hf.py %s OUT   (installed: PREFIX/share/koe/pickle_to_hf.py)\n"
                             "  koe init --from OUT --out CKPT.h5", dir, dir, dir);
    if (!S_ISDIR(st.st_mode))
        return koe_error_set(err, "%s is not a directory: give the directory holding config.json and "
                             "model.safetensors (a Hugging Face model)", dir);
    if (!exists(dir, "config.json"))
        return koe_error_set(err, "%s has no config.json: not a Hugging Face model directory", dir);
    if (exists(dir, "model.safetensors") || exists(dir, "model.safetensors.index.json")) return 0;
    return koe_error_set(err, "%s has neither model.safetensors nor model.safetensors.index.json", dir);
}

/* config.json fields of models koe cannot compute: the model type, and switches of HuBERT and
 * wav2vec 2.0 that change the network (absent = transformers' default, which koe computes). */
static int check_architecture(const json_t *root, const char *path, KoeError *err) {
    const json_t *type = json_object_get(root, "model_type");
    if (type && (!json_is_string(type) ||
                 (strcmp(json_string_value(type), "hubert") && strcmp(json_string_value(type), "wav2vec2"))))
        return koe_error_set(err, "%s: model_type \"%s\": koe computes HuBERT and wav2vec 2.0 encoders (model_type "
                             "\"hubert\" or \"wav2vec2\") and cannot compute this model", path,
                             json_is_string(type) ? json_string_value(type) : "?");
    static const struct {
        const char *field;
        int value; /* the only value koe computes */
        const char *why;
    } switches[] = {
        {"feat_proj_layer_norm", 1, "koe's frontend always has the feature projection's LayerNorm"},
        {"conv_pos_batch_norm", 0, "koe's positional convolution uses weight norm, not batch norm"},
        {"add_adapter", 0, "koe's encoder has no adapter layers"},
    };
    for (size_t i = 0; i < sizeof switches / sizeof switches[0]; i++) {
        const json_t *v = json_object_get(root, switches[i].field);
        if (v && !json_is_null(v) && (!json_is_boolean(v) || json_is_true(v) != switches[i].value))
            return koe_error_set(err, "%s: \"%s\" must be %s: %s, so koe cannot compute this model", path,
                                 switches[i].field, switches[i].value ? "true" : "false", switches[i].why);
    }
    const json_t *act = json_object_get(root, "feat_extract_activation");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "gelu")))
        return koe_error_set(err, "%s: feat_extract_activation must be \"gelu\" (koe's conv stack uses exact GELU)", path);
    return 0;
}

/* DIR/preprocessor_config.json, when present, is transformers' feature extractor: what a user of the
 * published model feeds it. Its model-key fields (do_normalize) override config.json's; its
 * sampling_rate must be koe's 16 kHz. */
static int read_preprocessor(const char *dir, ModelConfig *c, KoeError *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    if (access(path, F_OK) != 0) return 0;
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return koe_error_set(err, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    int rc = json_is_object(root) ? 0 : koe_error_set(err, "%s: not a JSON object", path);
    for (int i = 0; i < model_n_keys && !rc; i++)
        if (model_keys[i].hf && model_keys[i].type != K_CONV) rc = read_key(root, &model_keys[i], c, path, err);
    const json_t *sr = json_object_get(root, "sampling_rate");
    if (!rc && sr && (!json_is_integer(sr) || json_integer_value(sr) != 16000))
        rc = koe_error_set(err, "%s: sampling_rate must be 16000 (koe's audio rate)", path);
    json_decref(root);
    return rc;
}

int hf_read_config(const char *dir, ModelConfig *c, KoeError *err) {
    char path[4096];
    if (check_layout(dir, err) < 0) return -1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return koe_error_set(err, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    int rc = -1;
    if (!json_is_object(root)) {
        koe_error_set(err, "%s: not a JSON object", path);
        goto out;
    }
    if (check_architecture(root, path, err) < 0) goto out;
    model_config_default(c);
    for (int i = 0; i < model_n_keys; i++)
        if (model_keys[i].hf && read_key(root, &model_keys[i], c, path, err) < 0) goto out;
    if (read_preprocessor(dir, c, err) < 0) goto out;
    const json_t *act = json_object_get(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "gelu"))) {
        koe_error_set(err, "%s: hidden_act must be \"gelu\" (koe's encoder uses exact GELU)", path);
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* Other names published models use for a tensor, and koe's: transformers' wav2vec 2.0 head
 * project_hid is fairseq's (and koe's) final_proj; fairseq's HuBERT label_embs_concat is koe's
 * label_embeddings; mask_time_emb_vector is a name some exports give the mask embedding. */
static const struct {
    const char *from, *to;
    int prefix; /* 1: a name prefix, 0: the whole name */
} aliases[] = {
    {"project_hid.", "final_proj.", 1},
    {"label_embs_concat", "label_embeddings", 0},
    {"mask_time_emb_vector", "masked_spec_embed", 0},
};

/* The pretraining heads' tensors (koe's names: core/wav2vec2.c, core/hubert.c) kept by hf_read_params. */
static int is_head(const char *name) {
    static const char *const heads[] = {"quantizer.weight_proj.weight", "quantizer.weight_proj.bias",
                                        "quantizer.codevectors", "project_q.weight", "project_q.bias",
                                        "final_proj.weight", "final_proj.bias", "label_embeddings"};
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++)
        if (!strcmp(name, heads[i])) return 1;
    return 0;
}

/* The table's name for a safetensors name: drop a task model's "wav2vec2." / "hubert." prefix, map
 * torch.nn.utils.parametrizations' weight norm names to weight_g / weight_v, and the aliases. */
static void table_name(const char *in, char *out, size_t n) {
    if (!strncmp(in, "wav2vec2.", 9)) in += 9;
    else if (!strncmp(in, "hubert.", 7)) in += 7;
    snprintf(out, n, "%s", in);
    char *p = strstr(out, "parametrizations.weight.original");
    if (p && (p[32] == '0' || p[32] == '1') && !p[33]) snprintf(p, n - (size_t)(p - out), "weight_%c", p[32] == '0' ? 'g' : 'v');
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++) {
        const size_t k = strlen(aliases[i].from);
        if (aliases[i].prefix ? !strncmp(out, aliases[i].from, k) : !strcmp(out, aliases[i].from)) {
            char rest[512];
            snprintf(rest, sizeof rest, "%s", out + k);
            snprintf(out, n, "%s%s", aliases[i].to, rest);
            return;
        }
    }
}

/* A head tensor's entry in heads->t, shaped as the header says; -1 for a shape koe cannot hold. */
static int head_entry(HfHeads *heads, const char *name, const json_t *o) {
    const json_t *sh = json_object_get(o, "shape");
    int64_t shape[PARAM_MAX_DIMS];
    const int nd = json_is_array(sh) ? (int)json_array_size(sh) : 0;
    if (nd < 1 || nd > PARAM_MAX_DIMS || params_find(&heads->t, name) >= 0) return -1;
    for (int d = 0; d < nd; d++) {
        const json_t *v = json_array_get(sh, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 30)) return -1;
        shape[d] = json_integer_value(v);
    }
    const int i = params_add(&heads->t, name, nd, shape, PARAM_INIT_ZERO, 0.0f, 0.0f);
    heads->v = koe_realloc(heads->v, (size_t)heads->t.total * sizeof *heads->v);
    return i;
}

/* safetensors dtypes koe converts to float32 (published models are F32, F16 or BF16) */
typedef enum { DT_F32, DT_F16, DT_BF16, DT_F64 } Dtype;
static const struct {
    const char *name;
    Dtype dt;
    int size;
} dtypes[] = {{"F32", DT_F32, 4}, {"F16", DT_F16, 2}, {"BF16", DT_BF16, 2}, {"F64", DT_F64, 8}};

/* IEEE half (little-endian bytes) to float, subnormals and infinities included */
static float half_to_float(uint16_t h) {
    const int e = (h >> 10) & 31, f = h & 1023;
    const float v = e == 0 ? ldexpf((float)f, -24) : e == 31 ? (f ? NAN : INFINITY) : ldexpf((float)(f | 1024), e - 25);
    return h & 0x8000 ? -v : v;
}

static void convert(float *out, const unsigned char *in, int64_t n, Dtype dt) {
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *b = in + i * (dt == DT_F32 ? 4 : dt == DT_F64 ? 8 : 2);
        uint32_t u;
        uint64_t w = 0;
        switch (dt) {
        case DT_F32: memcpy(&out[i], b, 4); break;
        case DT_F16: out[i] = half_to_float((uint16_t)(b[0] | b[1] << 8)); break;
        case DT_BF16: /* the high half of a float32 */
            u = (uint32_t)(b[0] | b[1] << 8) << 16;
            memcpy(&out[i], &u, 4);
            break;
        case DT_F64: {
            double d;
            for (int k = 0; k < 8; k++) w |= (uint64_t)b[k] << (8 * k);
            memcpy(&d, &w, 8);
            out[i] = (float)d;
            break;
        }
        }
    }
}

/* Tensor `name` (o: its header entry) into e's place in params as float32, after checking dtype,
 * shape and byte range (data: dsize bytes after the header). */
static int read_tensor(const char *path, const char *name, const json_t *o, const ParamEntry *e, const char *data,
                       uint64_t dsize, float *params, KoeError *err) {
    const json_t *dt = json_object_get(o, "dtype"), *sh = json_object_get(o, "shape"),
                 *off = json_object_get(o, "data_offsets");
    int d = 0;
    while (d < 4 && !(json_is_string(dt) && !strcmp(json_string_value(dt), dtypes[d].name))) d++;
    if (d == 4)
        return koe_error_set(err, "%s: %s has dtype %s; koe reads F32, F16, BF16 and F64", path, name,
                             json_is_string(dt) ? json_string_value(dt) : "?");
    int same = json_is_array(sh) && json_array_size(sh) == (size_t)e->ndim;
    for (int k = 0; same && k < e->ndim; k++) {
        const json_t *v = json_array_get(sh, (size_t)k);
        same = json_is_integer(v) && json_integer_value(v) == e->shape[k];
    }
    if (!same) {
        char want[128];
        params_shape_str(e, want, sizeof want);
        return koe_error_set(err, "%s: %s has another shape than this model's %s (config.json and weights disagree?)",
                             path, name, want);
    }
    const int64_t bytes = e->numel * dtypes[d].size;
    const json_t *a = json_array_get(off, 0), *b = json_array_get(off, 1);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(a) || !json_is_integer(b) ||
        json_integer_value(a) < 0 || (uint64_t)json_integer_value(b) > dsize ||
        json_integer_value(b) - json_integer_value(a) != bytes)
        return koe_error_set(err, "%s: %s: data_offsets missing or not %lld bytes inside the file", path, name,
                             (long long)bytes);
    convert(params + e->offset, (const unsigned char *)data + json_integer_value(a), e->numel, dtypes[d].dt);
    return 0;
}

/* Every tensor of one safetensors file into params; done[i] marks table entry i as read (a tensor
 * read twice, e.g. in two shards, is an error). Tensors outside the table add to *skipped. id gets
 * the __metadata__'s koe_export_id ("" without one). */
static int read_safetensors(const char *path, const ParamTable *t, float *params, unsigned char *done, HfHeads *heads,
                            int *skipped, char id[EXPORT_ID_MAX], KoeError *err) {
    id[0] = 0; /* a file without __metadata__ (transformers writes none unless asked) has no id */
    size_t size;
    char *buf = read_file(path, &size, err);
    if (!buf) return -1;
    int rc = -1;
    uint64_t hlen = 0;
    json_t *h = NULL;
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
    json_error_t je;
    h = json_loadb(buf + 8, hlen, JSON_REJECT_DUPLICATES, &je);
    if (!h || !json_is_object(h)) {
        koe_error_set(err, "%s: JSON header:%d:%d: %s", path, h ? 1 : je.line, h ? 1 : je.column,
                      h ? "not a JSON object" : je.text);
        goto out;
    }
    const char *key;
    json_t *o;
    json_object_foreach(h, key, o) {
        if (!strcmp(key, "__metadata__")) {
            const char *v = json_string_value(json_object_get(o, "koe_export_id"));
            snprintf(id, EXPORT_ID_MAX, "%s", v ? v : "");
            continue;
        }
        char name[512];
        table_name(key, name, sizeof name);
        const int ti = params_find(t, name), hi = ti < 0 && heads && is_head(name) ? head_entry(heads, name, o) : -1;
        if (hi >= 0) {
            if (read_tensor(path, key, o, &heads->t.e[hi], buf + 8 + hlen, size - 8 - hlen, heads->v, err) < 0) goto out;
            continue;
        }
        if (ti < 0) {
            koe_warn("%s: %s is not part of the encoder; skipped", path, key);
            (*skipped)++;
            continue;
        }
        if (done[ti]) {
            koe_error_set(err, "%s: %s is a second copy of %s (in another shard or under another name)", path, key, name);
            goto out;
        }
        if (read_tensor(path, key, o, &t->e[ti], buf + 8 + hlen, size - 8 - hlen, params, err) < 0) goto out;
        done[ti] = 1;
    }
    rc = 0;
out:
    json_decref(h);
    free(buf);
    return rc;
}

/* The shard files of DIR/model.safetensors.index.json ({"weight_map": {tensor: file}}), each once,
 * in order of first mention; NULL on error. */
static json_t *index_shards(const char *path, KoeError *err) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je), *files = json_array();
    if (!root) {
        koe_error_set(err, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        json_decref(files);
        return NULL;
    }
    const json_t *map = json_object_get(root, "weight_map");
    const char *key;
    json_t *v;
    int ok = json_is_object(map) && json_object_size(map) > 0;
    json_object_foreach((json_t *)map, key, v) {
        const char *file = json_string_value(v);
        if (!file || !*file || strchr(file, '/')) {
            ok = 0;
            break;
        }
        size_t i;
        json_t *f;
        json_array_foreach(files, i, f) if (!strcmp(json_string_value(f), file)) break;
        if (i == json_array_size(files)) json_array_append_new(files, json_string(file));
    }
    json_decref(root);
    if (!ok) {
        koe_error_set(err, "%s: \"weight_map\" must map each tensor to a file name in the same directory", path);
        json_decref(files);
        return NULL;
    }
    return files;
}

/* A koe export's two files carry the same koe_export_id (hf_export); a published model's carry none,
 * and a koe export saved again by transformers keeps it in config.json only. Two different ids are a
 * pair an interrupted export left mixed (its new model.safetensors beside the old config.json). */
static int check_pair(const char *dir, const char *st_id, KoeError *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *root = json_load_file(path, 0, NULL);
    const char *v = json_string_value(json_object_get(root, "koe_export_id"));
    char cj_id[EXPORT_ID_MAX];
    snprintf(cj_id, sizeof cj_id, "%s", v ? v : "");
    json_decref(root);
    if (!*cj_id || !*st_id || !strcmp(cj_id, st_id)) return 0;
    return koe_error_set(err, "%s/model.safetensors (koe_export_id %s) and %s (koe_export_id %s) are not from the same "
                              "export (one stopped between publishing the two?): run koe export again",
                         dir, st_id, path, cj_id);
}

/* config.json's num_codevector_groups (transformers' default 2). */
static int codevector_groups(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *root = json_load_file(path, 0, NULL);
    const json_t *g = json_object_get(root, "num_codevector_groups");
    const int groups = json_is_integer(g) && json_integer_value(g) >= 1 && json_integer_value(g) <= 64
                           ? (int)json_integer_value(g) : 2;
    json_decref(root);
    return groups;
}

int hf_read_params(const char *dir, const ParamTable *t, float *params, HfHeads *heads, KoeError *err) {
    char path[4096];
    int rc = -1, skipped = 0;
    if (heads) {
        memset(heads, 0, sizeof *heads);
        params_table_init(&heads->t);
        heads->groups = codevector_groups(dir);
    }
    unsigned char *done = koe_calloc((size_t)(t->n ? t->n : 1), 1);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    json_t *shards = access(path, F_OK) == 0 ? index_shards(path, err) : json_pack("[s]", "model.safetensors");
    if (!shards) goto out;
    size_t i;
    json_t *f;
    char id[EXPORT_ID_MAX];
    json_array_foreach(shards, i, f) {
        snprintf(path, sizeof path, "%s/%s", dir, json_string_value(f));
        if (read_safetensors(path, t, params, done, heads, &skipped, id, err) < 0) goto out;
    }
    if (json_array_size(shards) == 1 && check_pair(dir, id, err) < 0) goto out;
    for (int k = 0; k < t->n; k++) {
        if (done[k] || !strcmp(t->e[k].name, "masked_spec_embed")) continue;
        koe_error_set(err, "%s: tensor %s is missing", path, t->e[k].name);
        goto out;
    }
    if (skipped) koe_log("%s: %d tensor(s) outside the encoder skipped", dir, skipped);
    rc = 0;
out:
    if (rc < 0 && heads) hf_heads_free(heads);
    json_decref(shards);
    free(done);
    return rc;
}

void hf_heads_free(HfHeads *heads) {
    params_table_free(&heads->t);
    free(heads->v);
    heads->v = NULL;
}
