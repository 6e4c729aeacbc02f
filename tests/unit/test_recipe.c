/* test_recipe.c — recipes (recipes/recipe.c): defaults are HuBERT Base and agree with
 * model_config_default; [model] is model_keys and [data] holds loader_keys (tests/unit/test_hf.c
 * checks that model_keys covers ModelConfig and survives config.json); every error class names file:line and the key (or the override);
 * overrides apply after the file; fairseq's conv_feature_layers grammar; the resolved text parses
 * back to the same text and hash; changing any key changes the hash.
 * recipes/ is linked into the koe binary only, so the parser is compiled into this test directly. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../recipes/recipe.c"

/* Load text as "x.ini" with overrides; return 0/-1 and the message. */
static int load(Recipe *r, const char *text, int n, char *const *ov, KoeError *err) {
    memset(err, 0, sizeof *err);
    return recipe_load_string(r, "x.ini", text, n, ov, err);
}

static void expect_error(const char *text, int n, char *const *ov, const char *const *want) {
    Recipe r;
    KoeError err;
    int rc = load(&r, text, n, ov, &err);
    if (rc == 0) {
        print_error("recipe unexpectedly accepted:\n%s\n", text);
        recipe_free(&r);
        fail();
    }
    for (const char *const *w = want; *w; w++)
        if (!strstr(err.msg, *w)) {
            print_error("error message '%s' lacks '%s' (recipe:\n%s)\n", err.msg, *w, text);
            fail();
        }
}

static void test_defaults(void **state) {
    (void)state;
    Recipe r;
    KoeError err;
    assert_int_equal(load(&r, "", 0, NULL, &err), 0);
    ModelConfig m;
    memset(&m, 0, sizeof m);
    model_config_default(&m);
    assert_memory_equal(&r.model, &m, sizeof m); /* the table's [model] defaults are model_config_default */
    assert_int_equal(m.n_conv, 7);
    assert_int_equal(m.conv_kernel[0], 10);
    assert_int_equal(m.conv_stride[6], 2);
    assert_int_equal(r.objective.name, OBJ_HUBERT);
    assert_int_equal(r.objective.final_dim, 256);
    assert_true(r.objective.logit_temp == 0.1 && r.objective.feature_pen_weight == 10.0);
    assert_int_equal(r.objective.latent_groups, 2);
    assert_int_equal(r.objective.latent_vars, 320);
    assert_int_equal(r.objective.num_negatives, 100);
    assert_true(r.objective.temp[0] == 2.0 && r.objective.temp[1] == 0.5 && r.objective.temp[2] == 0.999995);
    assert_int_equal(r.objective.codebook_size, 8192);
    assert_int_equal(r.objective.codebook_dim, 16);
    assert_true(r.optim.lr == 5e-4 && r.optim.betas[0] == 0.9 && r.optim.betas[1] == 0.98);
    assert_true(r.optim.eps == 1e-6 && r.optim.weight_decay == 0.01 && r.optim.clip_norm == 10.0);
    assert_int_equal(r.optim.warmup, 32000);
    assert_int_equal(r.optim.max_updates, 400000);
    assert_int_equal(r.optim.schedule, SCHEDULE_LINEAR);
    assert_int_equal(r.optim.update_freq, 1);
    assert_int_equal(r.data.loader.plan.max_tokens, 1400000);
    assert_int_equal(r.data.loader.plan.max_sample_size, 250000);
    assert_int_equal(r.data.loader.plan.min_sample_size, 32000);
    assert_true(r.data.loader.plan.lang_alpha == 0.5);
    assert_int_equal(r.run.seed, 1);
    assert_int_equal(r.run.log_every, 100);
    assert_int_equal(r.run.save_every, 10000);
    assert_int_equal(r.run.keep_last, 3);
    assert_int_equal(r.run.zero, 0);
    assert_int_equal(r.run.precision, PRECISION_FP32);
    assert_true(r.hash == recipe_hash_text(r.text));
    AdamWConfig ac;
    recipe_adamw_config(&r, &ac);
    assert_true(ac.beta1 == 0.9 && ac.beta2 == 0.98 && ac.eps == 1e-6 && ac.weight_decay == 0.01);
    ScheduleConfig sc;
    recipe_schedule_config(&r, &sc);
    assert_true(sc.kind == SCHEDULE_LINEAR && sc.lr == 5e-4 && sc.warmup == 32000 && sc.max_updates == 400000);
    assert_true(sc.phase_ratio[2] == 0.5 && sc.init_lr_scale == 0.01 && sc.final_lr_scale == 0.05);
    assert_true(schedule_lr(&sc, 16000) == 2.5e-4);
    recipe_free(&r);
}

/* The help listing shows the table's default strings, the resolved text shows formatted values:
 * they must be the same text, so every default is written in canonical form. */
static void test_defaults_canonical(void **state) {
    (void)state;
    Recipe r;
    set_defaults(&r);
    for (int k = 0; k < n_keys; k++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        assert_non_null(f);
        format_value(f, &r, &keys[k]);
        fclose(f);
        if (strcmp(buf, keys[k].k->def)) {
            print_error("%s.%s: default '%s' is formatted as '%s'\n", keys[k].section, keys[k].k->key, keys[k].k->def, buf);
            fail();
        }
        free(buf);
    }
}

static char *format_field(const ConfigKey *k, const void *field) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_key_format(f, k, field);
    fclose(f);
    return buf;
}

/* [model] is core's model_keys, in order, on Recipe.model; [data] holds every one of data/loader.c's
 * loader_keys, and the recipe's default of each is what loader_config_default sets. */
static void test_sections_are_the_owners_tables(void **state) {
    (void)state;
    Recipe r;
    set_defaults(&r);
    int m = 0;
    for (int k = 0; k < n_keys; k++) {
        if (strcmp(keys[k].section, "model")) continue;
        assert_true(m < model_n_keys);
        assert_ptr_equal(keys[k].k, &model_keys[m]);
        assert_int_equal(keys[k].off, offsetof(Recipe, model) + model_keys[m].off);
        m++;
    }
    assert_int_equal(m, model_n_keys);
    LoaderConfig lc;
    loader_config_default(&lc);
    for (int i = 0; i < loader_n_keys; i++) {
        int k = find_key("data", loader_keys[i].key);
        if (k < 0) fail_msg("loader key %s is not in [data]", loader_keys[i].key);
        assert_ptr_equal(keys[k].k, &loader_keys[i]);
        char *want = format_field(&loader_keys[i], (const char *)&lc + loader_keys[i].off);
        char *got = format_field(keys[k].k, (const char *)&r + keys[k].off);
        assert_string_equal(got, want);
        free(want);
        free(got);
    }
}

static void test_design_keys_exist(void **state) {
    (void)state;
    /* recipes/README.md names these; scripts and tests rely on them. */
    static const char *const named[][2] = {
        {"data", "corpus"},      {"data", "labels"},        {"data", "max_tokens"},   {"data", "valid_corpus"},
        {"objective", "name"},   {"optim", "lr"},           {"optim", "max_updates"}, {"optim", "warmup"},
        {"run", "dir"},          {"run", "seed"},           {"run", "threads"},       {"run", "log_every"},
        {"run", "save_every"},   {"run", "keep_last"},      {"run", "zero"},          {"run", "valid_every"},
        {"optim", "max_skips"},  {"optim", "update_freq"},  {"optim", "clip_norm"},   {"data", "threads"},
        {"data", "features"},    {"run", "watchdog_s"},     {"optim", "schedule"},    {"objective", "codebooks"},
        {"run", "precision"},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (find_key(named[i][0], named[i][1]) < 0) {
            print_error("key %s.%s is missing\n", named[i][0], named[i][1]);
            fail();
        }
}

static void test_help_lists_every_key(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    recipe_print_keys(f);
    fclose(f);
    for (int s = 0; s < N_SECTIONS; s++) {
        char head[32];
        snprintf(head, sizeof head, "[%s]\n", sections[s]);
        assert_non_null(strstr(buf, head));
    }
    for (int k = 0; k < n_keys; k++) {
        char line[256];
        snprintf(line, sizeof line, "  %-26s = %s", keys[k].k->key, *keys[k].k->def ? keys[k].k->def : "\"\"");
        if (!strstr(buf, line) || !strstr(buf, keys[k].k->doc)) {
            print_error("help lacks '%s' or its doc\n%s", line, buf);
            fail();
        }
    }
    free(buf);
}

static void test_errors_name_line_and_key(void **state) {
    (void)state;
    char long_line[400];
    snprintf(long_line, sizeof long_line, "[data]\ncorpus = %0250d\n", 0);
    struct {
        const char *text;
        const char *want[5];
    } cases[] = {
        {"[data]\ncorpus = a\n[optimizer]\n", {"x.ini:3:", "unknown section [optimizer]", NULL}},
        {"[modle]\nencoder_layers = 3\n", {"x.ini:1:", "[modle]", NULL}},
        {"[model]\n\nencoder_layer = 3\n", {"x.ini:3:", "encoder_layer", "unknown key", "did you mean 'encoder_layers'"}},
        {"lr = 1\n", {"x.ini:1:", "'lr'", "outside any section", NULL}},
        {"[model]\nencoder_layers = 3.5\n", {"x.ini:2:", "encoder_layers", "not an integer", NULL}},
        {"[model]\nencoder_layers = 0\n", {"x.ini:2:", "encoder_layers", "out of range", NULL}},
        {"[model]\nencoder_layers = 99999999999\n", {"x.ini:2:", "encoder_layers", NULL}},
        {"[optim]\n; peak\nlr = fast\n", {"x.ini:3:", "lr", "not a number", NULL}},
        {"[optim]\nlr = -1e-4\n", {"x.ini:2:", "lr", "out of range", "(0, 10]"}},
        {"[optim]\nlr = nan\n", {"x.ini:2:", "lr", "finite", NULL}},
        {"[optim]\nlr = 1e999\n", {"x.ini:2:", "lr", "finite", NULL}},
        {"[optim]\nlr = 0x1p-10\n", {"x.ini:2:", "lr", "'0x1p-10' is not a number", NULL}},
        {"[model]\nencoder_layers = 0x3\n", {"x.ini:2:", "encoder_layers", "'0x3' is not an integer", NULL}},
        {"[run]\nseed = 18446744073709551616\n", {"x.ini:2:", "seed", "below 2^64", NULL}},
        {"[run]\nseed = 0x10\n", {"x.ini:2:", "seed", "'0x10' is not a non-negative integer", NULL}},
        {"[model]\ndropout = 1\n", {"x.ini:2:", "dropout", "[0, 1)", NULL}},
        {"[objective]\nname = bert\n", {"x.ini:2:", "name", "hubert wav2vec2 bestrq", NULL}},
        {"[model]\nconv_bias = maybe\n", {"x.ini:2:", "conv_bias", "boolean", NULL}},
        {"[run]\nseed = -3\n", {"x.ini:2:", "seed", NULL}},
        {"[optim]\nbetas = (0.9)\n", {"x.ini:2:", "betas", "tuple of 2", NULL}},
        {"[optim]\nbetas = (0.9, 1.0)\n", {"x.ini:2:", "betas", "element 2", NULL}},
        {"[optim]\nbetas = (0.9, 0.98) x\n", {"x.ini:2:", "betas", NULL}},
        {"[optim]\nbetas = (0x1p-1, 0.98)\n", {"x.ini:2:", "betas", "element 1 ('0x1p-1')", "not a number"}},
        {"[optim]\nbetas = (0.9, inf)\n", {"x.ini:2:", "betas", "element 2 ('inf')", "not a finite number"}},
        {"[model]\nconv_feature_layers = [(512,10,5)] +\n", {"x.ini:2:", "conv_feature_layers", "character", NULL}},
        {"[optim]\nlr = 1e-4\nlr = 2e-4\n", {"x.ini:3:", "lr", "twice", "line 2"}},
        {"[optim]\nlr = 1e-4\n  2e-4\n", {"x.ini:3:", "lr", "indented", NULL}},
        {"[optim]\nlr 1e-4\n", {"x.ini:2:", "syntax error", NULL}},
        {"[optim\nlr = 1\n", {"x.ini:1:", "syntax error", NULL}},
        {long_line, {"x.ini:2:", "characters long", NULL}},
        /* the first error is the one reported */
        {"[optim]\nlr = x\n[model]\nencoder_layers = x\n", {"x.ini:2:", "lr", NULL}},
        /* rules between keys name the file, line and both keys */
        {"[model]\nencoder_attention_heads = 5\n", {"x.ini:2:", "encoder_attention_heads", "encoder_embed_dim = 768", "x.ini (default)"}},
        {"[optim]\n\nmax_updates = 100\n", {"optim.warmup = 32000", "optim.max_updates = 100", "x.ini:3", NULL}},
        {"[optim]\nschedule = tri_stage\nphase_ratio = (0.1, 0.4, 0.4)\n", {"x.ini:3:", "phase_ratio", "sum", NULL}},
        {"[objective]\nname = bestrq\n", {"x.ini:2:", "objective.name", "data.features", NULL}},
        {"[model]\nfrontend = fbank\n[data]\nfeatures = mfcc\n", {"x.ini:2:", "model.frontend", "x.ini:4", NULL}},
        {"[model]\nfrontend = fbank\nnormalize_waveform = true\n[data]\nfeatures = fbank\n",
         {"x.ini:3:", "model.normalize_waveform", "x.ini:2", NULL}},
        {"[data]\nmin_sample_size = 300000\n", {"x.ini:2:", "min_sample_size", "max_sample_size", NULL}},
        {"[objective]\nname = wav2vec2\nlatent_groups = 3\n", {"x.ini:3:", "latent_groups", NULL}},
        {"[objective]\ntemp = (0.5, 2, 0.9)\n", {"x.ini:2:", "objective.temp", NULL}},
        /* what the model and the loader cannot run is refused here, naming the key */
        {"[data]\nfeatures = fbank\n[model]\nfrontend = fbank\nfbank_dim = 81\n", {"x.ini:5:", "model.fbank_dim = 81", "80", NULL}},
        {"[data]\nfeatures = fbank\n[model]\nfrontend = fbank\nfbank_dim = 40\n", {"x.ini:5:", "model.fbank_dim = 40", NULL}},
        {"[model]\nconv_feature_layers = [(32,1000000,5)]\n", {"x.ini:2:", "model.conv_feature_layers", "min_sample_size", NULL}},
        {"[model]\nconv_feature_layers = [(32,10,100000)]*16\n", {"x.ini:2:", "model.conv_feature_layers", NULL}},
        {"[model]\nconv_feature_layers = [(5000,10,5)] + [(512,3,2)]*4\n",
         {"x.ini:2:", "5000 channels", "GroupNorm", "extractor_mode = layer_norm"}},
        {"[data]\nfeatures = fbank\nmin_sample_size = 1000\n[model]\nfrontend = fbank\nfbank_stack = 64\n"
         "[objective]\nname = bestrq\n", {"x.ini:6:", "model.fbank_stack", "x.ini:3", NULL}},
        {"[model]\nencoder = conformer\nencoder_embed_dim = 40\nencoder_attention_heads = 4\n",
         {"model.conv_pos_groups = 16", "encoder_embed_dim = 40", "x.ini:3", NULL}},
        {"[run]\ndir =\n", {"x.ini:2:", "run.dir", "empty", NULL}},
        /* found by the recipe fuzzer: "dir =; V" is the value "; V" (no space before ';'), but the
         * stored "dir = ; V" reads back as empty; such a value is refused where it is given */
        {"[run]\ndir =; V\n", {"x.ini:2:", "dir = ; V", "comment", NULL}},
        {"[data]\ncorpus =;\n", {"x.ini:2:", "corpus = ;", "comment", NULL}},
        /* float keys are checked as the float they are stored as, so the stored recipe reads back */
        {"[model]\ndropout = 0.99999999\n", {"x.ini:2:", "dropout", "32-bit float", "[0, 1)"}},
        {"[model]\nlayer_norm_eps = 1e-50\n", {"x.ini:2:", "layer_norm_eps", "32-bit float", NULL}},
        /* fine as written, but the canonical form lists all 16 layers: too long to store */
        {"[model]\nconv_feature_layers = [(100000,100000,100000),(100001,100000,100000)]*8\n",
         {"x.ini:2:", "conv_feature_layers", "too long", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(cases[i].text, 0, NULL, cases[i].want);
}

static void test_override_errors_name_the_override(void **state) {
    (void)state;
    struct {
        const char *ov;
        const char *want[5];
    } cases[] = {
        {"optim.lrr=1", {"override 'optim.lrr=1'", "unknown key optim.lrr", "did you mean 'lr'", NULL}},
        {"optimizer.lr=1", {"override 'optimizer.lr=1'", "unknown section", NULL}},
        {"optim.lr=abc", {"override 'optim.lr=abc'", "optim.lr", "not a number", NULL}},
        {"optimlr=1", {"override 'optimlr=1'", "section.key=value", NULL}},
        {"optim.lr", {"override 'optim.lr'", "section.key=value", NULL}},
        {"data.corpus=a ;b", {"override 'data.corpus=a ;b'", "comment", NULL}},
        {"data.corpus=;b", {"override 'data.corpus=;b'", "comment", NULL}},
        {"model.encoder_attention_heads=7", {"override 'model.encoder_attention_heads=7'", "must divide", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *ov[1] = {(char *)cases[i].ov};
        expect_error("[optim]\nlr = 1e-4\n", 1, ov, cases[i].want);
    }
}

/* Issue 15: `koe init --from DIR` (recipe_load_model) reported a config.json value that fails a recipe
 * check as "command line override 'model.encoder_embed_dim=...'" though the user gave none: the
 * message names config.json; a real override is still named as one. */
static void test_model_from_config_json(void **state) {
    (void)state;
    ModelConfig m;
    model_config_default(&m);
    m.D = 30; /* 12 heads do not divide it */
    Recipe r;
    KoeError err = {{0}};
    assert_int_equal(recipe_load_model(&r, "DIR/config.json", &m, 0, NULL, &err), -1);
    if (!strstr(err.msg, "DIR/config.json") || !strstr(err.msg, "must divide") || strstr(err.msg, "override"))
        fail_msg("unexpected message: %s", err.msg);
    model_config_default(&m);
    char *ov[1] = {"model.encoder_attention_heads=7"};
    assert_int_equal(recipe_load_model(&r, "DIR/config.json", &m, 1, ov, &err), -1);
    if (!strstr(err.msg, "must divide") || !strstr(err.msg, "model.encoder_attention_heads=7"))
        fail_msg("unexpected message: %s", err.msg);
}

static void test_files(void **state) {
    (void)state;
    const char *tmp = getenv("KOE_TMP") ? getenv("KOE_TMP") : "/tmp";
    char path[512];
    snprintf(path, sizeof path, "%s/test_recipe_%d.ini", tmp, (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[data]\ncorpus = /data/c\n\n[optim]\nwarmup = ten\n", f);
    fclose(f);
    Recipe r;
    KoeError err = {{0}};
    assert_int_equal(recipe_load(&r, path, 0, NULL, &err), -1);
    char want[600];
    snprintf(want, sizeof want, "%s:5: [optim] warmup = ten", path);
    if (!strstr(err.msg, want)) {
        print_error("'%s' lacks '%s'\n", err.msg, want);
        fail();
    }
    f = fopen(path, "w");
    fputs("[data]\ncorpus = /data/c\n", f);
    fclose(f);
    assert_int_equal(recipe_load(&r, path, 0, NULL, &err), 0);
    assert_string_equal(r.data.corpus, "/data/c");
    recipe_free(&r);
    unlink(path);
    assert_int_equal(recipe_load(&r, path, 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "cannot open"));
    /* a directory, and a file that never ends, are not recipes */
    assert_int_equal(recipe_load(&r, tmp, 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "is a directory"));
    assert_int_equal(recipe_load(&r, "/dev/zero", 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "/dev/zero"));
    assert_non_null(strstr(err.msg, "MiB"));
}

static void test_overrides(void **state) {
    (void)state;
    Recipe r;
    KoeError err;
    const char *text = "[optim]\nlr = 1e-3\nmax_updates = 100\nwarmup = 10\n[model]\nencoder_layers = 4\n";
    char *ov[] = {"optim.lr=2e-3", " model.encoder_layers = 6 ", "model.conv_feature_layers=[(64,4,2)]*3",
                  "optim.lr=3e-3", "data.corpus=/scratch/my corpus"};
    assert_int_equal(load(&r, text, 5, ov, &err), 0);
    assert_true(r.optim.lr == 3e-3); /* overrides apply in order, after the file */
    assert_int_equal(r.optim.max_updates, 100);
    assert_int_equal(r.model.L, 6);
    assert_int_equal(r.model.n_conv, 3);
    assert_int_equal(r.model.conv_dim[2], 64);
    assert_string_equal(r.data.corpus, "/scratch/my corpus");
    assert_non_null(strstr(r.text, "\nlr = 0.003\n"));
    assert_non_null(strstr(r.text, "\nconv_feature_layers = [(64,4,2)]*3\n"));
    recipe_free(&r);
    /* rules between keys are checked after the overrides: the override repairs the file */
    char *fix[] = {"optim.warmup=50"};
    assert_int_equal(load(&r, "[optim]\nmax_updates = 100\n", 1, fix, &err), 0);
    recipe_free(&r);
}

static void test_conv_grammar(void **state) {
    (void)state;
    struct {
        const char *in, *canonical;
        int n, first[3], last[3];
    } ok[] = {
        {"[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2", "[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2", 7,
         {512, 10, 5}, {512, 2, 2}},
        {"  [ ( 512 , 10 , 5 ) ]+[(512,3,2)] * 4+[(512,2,2)]*2  ", "[(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2", 7,
         {512, 10, 5}, {512, 2, 2}},
        {"[(1,2,3),(4,5,6)]*2", "[(1,2,3),(4,5,6),(1,2,3),(4,5,6)]", 4, {1, 2, 3}, {4, 5, 6}},
        {"[(1,2,3)] + [(4,5,6)] + [(7,8,9)]*1", "[(1,2,3),(4,5,6),(7,8,9)]", 3, {1, 2, 3}, {7, 8, 9}},
        {"[(8,2,2)]*16", "[(8,2,2)]*16", 16, {8, 2, 2}, {8, 2, 2}},
        {"[(1,1,1),(1,1,1),(2,2,2)]", "[(1,1,1)]*2 + [(2,2,2)]", 3, {1, 1, 1}, {2, 2, 2}},
        {"[(+8,02,2)]*+2", "[(8,2,2)]*2", 2, {8, 2, 2}, {8, 2, 2}}, /* a sign, leading zeros: decimal */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ModelConfig m;
        model_config_default(&m);
        char msg[256] = "";
        if (model_parse_conv_layers(ok[i].in, &m, msg, sizeof msg)) {
            print_error("'%s' rejected: %s\n", ok[i].in, msg);
            fail();
        }
        assert_int_equal(m.n_conv, ok[i].n);
        int l = m.n_conv - 1;
        assert_true(m.conv_dim[0] == ok[i].first[0] && m.conv_kernel[0] == ok[i].first[1] &&
                    m.conv_stride[0] == ok[i].first[2]);
        assert_true(m.conv_dim[l] == ok[i].last[0] && m.conv_kernel[l] == ok[i].last[1] &&
                    m.conv_stride[l] == ok[i].last[2]);
        for (int j = m.n_conv; j < MODEL_MAX_CONV; j++) assert_int_equal(m.conv_dim[j], 0);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        model_format_conv_layers(f, &m);
        fclose(f);
        assert_string_equal(buf, ok[i].canonical);
        ModelConfig m2;
        model_config_default(&m2);
        assert_int_equal(model_parse_conv_layers(buf, &m2, msg, sizeof msg), 0);
        assert_memory_equal(&m, &m2, sizeof m);
        free(buf);
    }
    struct {
        const char *in, *want;
    } bad[] = {
        {"", "character 1"},
        {"[(512,10,5)", "character 12"},
        {"[(512,10)]", "expected ','"},
        {"[(512,10,5)]*0", "[1, 1000000]"},
        {"[(512,10,5)]*17", "more than 16"},
        {"[(8,2,2)]*8 + [(8,2,2)]*8 + [(1,1,1)]", "more than 16"},
        {"[(512,10,5)] [(1,1,1)]", "expected '+'"},
        {"[(0,1,1)]", "[1, 1000000]"},
        {"[(512,10,5)] +", "expected '['"},
        {"[(a,1,1)]", "'a' is not an integer"},
        {"[(-1,1,1)]", "'-1' is out of range"},
        /* the recipes' number syntax (core/config_keys.h), inside a tuple too */
        {"[(0x20,10,5)]", "'0x20' is not an integer at character 3"},
        {"[(512,10,5)]*0x2", "'0x2' is not an integer at character 14"},
        {"[(512,1e1,5)]", "'1e1' is not an integer"},
        {"[(512,10,5)]*99999999999999999999", "out of range"},
        {"[]", "expected '('"},
        {"(512,10,5)", "expected '['"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ModelConfig m;
        model_config_default(&m);
        ModelConfig before = m;
        char msg[256] = "";
        if (model_parse_conv_layers(bad[i].in, &m, msg, sizeof msg) == 0 || !strstr(msg, bad[i].want)) {
            print_error("'%s': expected an error with '%s', got '%s'\n", bad[i].in, bad[i].want, msg);
            fail();
        }
        assert_memory_equal(&m, &before, sizeof m); /* a rejected value changes nothing */
    }
}

static void assert_round_trip(const Recipe *r) {
    Recipe again;
    KoeError err;
    if (load(&again, r->text, 0, NULL, &err)) {
        print_error("resolved text does not parse: %s\n%s", err.msg, r->text);
        fail();
    }
    assert_string_equal(again.text, r->text);
    assert_true(again.hash == r->hash);
    assert_memory_equal(&again, r, offsetof(Recipe, text)); /* every field, bit for bit */
    recipe_free(&again);
}

static void test_round_trip(void **state) {
    (void)state;
    const char *root = getenv("KOE_ROOT") ? getenv("KOE_ROOT") : ".";
    const char *files[] = {"recipes/tiny/hubert.ini", "recipes/tiny/hubert_small.ini", "recipes/base/hubert_iter1.ini"};
    const int D[] = {256, 384, 768}, L[] = {4, 6, 12}, H[] = {4, 6, 12}, F[] = {1024, 1536, 3072};
    for (int i = 0; i < 3; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        Recipe r;
        KoeError err;
        if (recipe_load(&r, path, 0, NULL, &err)) {
            print_error("%s\n", err.msg);
            fail();
        }
        assert_true(r.model.D == D[i] && r.model.L == L[i] && r.model.H == H[i] && r.model.F == F[i]);
        assert_int_equal(r.model.n_conv, 7);
        assert_int_equal(r.objective.name, OBJ_HUBERT);
        assert_int_equal(r.objective.label_rate, 100);
        assert_round_trip(&r);
        recipe_free(&r);
    }
    /* odd values survive too: shortest round-trip formatting of floats and doubles */
    Recipe r;
    KoeError err;
    char *ov[] = {"optim.lr=0.00012345678901234567", "model.dropout=0.30000001", "optim.betas=(0.1,0.2)",
                  "data.corpus=/a b/c#d", "run.seed=18446744073709551615", "optim.schedule=tri_stage",
                  "objective.temp=(1.5,0.25,0.99999)", "data.lang_alpha=0.3333333333333333"};
    assert_int_equal(load(&r, "", 8, ov, &err), 0);
    assert_int_equal(r.run.seed, UINT64_MAX);
    assert_round_trip(&r);
    recipe_free(&r);
}

/* A different valid value for key k, as text: the first candidate that the recipe accepts. */
static int changed_value_hashes_differently(int k, const Recipe *base, char *const *base_ov, int n_base) {
    const RecipeKey *rk = &keys[k];
    const ConfigKey *key = rk->k;
    char cand[8][200];
    int nc = 0;
    double d = 0;
    switch (key->type) {
    case K_STR: snprintf(cand[nc++], 200, "elsewhere"); break;
    case K_INT:
    case K_I64:
    case K_U64:
        d = strtod(key->def, NULL);
        snprintf(cand[nc++], 200, "%.0f", d * 2);
        snprintf(cand[nc++], 200, "%.0f", d + 1);
        snprintf(cand[nc++], 200, "%.0f", d - 1);
        break;
    case K_FLOAT:
    case K_DOUBLE:
        d = strtod(key->def, NULL);
        snprintf(cand[nc++], 200, "%.17g", d * 0.5);
        snprintf(cand[nc++], 200, "%.17g", d + 0.01);
        snprintf(cand[nc++], 200, "%.17g", d * 2);
        break;
    case K_BOOL: snprintf(cand[nc++], 200, "%s", strcmp(key->def, "true") ? "true" : "false"); break;
    case K_ENUM:
        for (const EnumName *e = key->names; e->name; e++)
            if (strcmp(e->name, key->def)) snprintf(cand[nc++], 200, "%s", e->name);
        break;
    case K_TUPLE2:
    case K_TUPLE3: {
        double v[3];
        assert_int_equal(config_key_parse(key, v, key->def, cand[0], 200), 0);
        for (int j = 0; j < 2; j++) {
            double w0 = j ? v[0] * 0.5 : v[0] * 0.9, w1 = j ? v[1] * 0.5 : v[1] * 0.9;
            if (key->type == K_TUPLE2)
                snprintf(cand[nc++], 200, "(%.17g,%.17g)", w0, v[1]);
            else
                snprintf(cand[nc++], 200, "(%.17g,%.17g,%.17g)", v[0], w1, v[2]);
        }
        break;
    }
    case K_CONV: snprintf(cand[nc++], 200, "[(512,10,5)]"); break;
    }
    char *now = NULL; /* the key's value in the base recipe: not a change */
    size_t now_len = 0;
    FILE *f = open_memstream(&now, &now_len);
    format_value(f, base, rk);
    fclose(f);
    for (int c = 0; c < nc; c++) {
        if (!strcmp(cand[c], now)) continue;
        char over[512];
        snprintf(over, sizeof over, "%s.%s=%.200s", rk->section, key->key, cand[c]);
        char *ov[8];
        for (int i = 0; i < n_base; i++) ov[i] = base_ov[i];
        ov[n_base] = over;
        Recipe r;
        KoeError err;
        if (load(&r, "", n_base + 1, ov, &err)) continue;
        int differs = r.hash != base->hash && strcmp(r.text, base->text);
        /* exactly one line of the text changed: the key's */
        int lines_changed = 0;
        const char *a = r.text, *b = base->text;
        while (*a && *b) {
            size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
            if (la != lb || memcmp(a, b, la)) lines_changed++;
            a += la + (a[la] ? 1 : 0);
            b += lb + (b[lb] ? 1 : 0);
        }
        recipe_free(&r);
        free(now);
        if (!differs || lines_changed != 1) {
            print_error("%s: hash differs %d, %d lines changed\n", over, differs, lines_changed);
            return 0;
        }
        return 1;
    }
    free(now);
    print_error("%s.%s: no candidate value was accepted\n", rk->section, key->key);
    return 0;
}

static void test_hash_changes_with_every_key(void **state) {
    (void)state;
    char *base_ov[] = {"data.features=fbank"}; /* so that frontend=fbank and name=bestrq are valid too */
    Recipe base;
    KoeError err;
    assert_int_equal(load(&base, "", 1, base_ov, &err), 0);
    for (int k = 0; k < n_keys; k++)
        if (!changed_value_hashes_differently(k, &base, base_ov, 1)) fail();
    recipe_free(&base);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_canonical),
        cmocka_unit_test(test_sections_are_the_owners_tables),
        cmocka_unit_test(test_design_keys_exist),
        cmocka_unit_test(test_help_lists_every_key),
        cmocka_unit_test(test_errors_name_line_and_key),
        cmocka_unit_test(test_override_errors_name_the_override),
        cmocka_unit_test(test_model_from_config_json),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_conv_grammar),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_hash_changes_with_every_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
