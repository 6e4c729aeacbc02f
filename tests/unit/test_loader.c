/* test_loader.c — the batch loader (data/loader.h). The planning layer on in-memory lengths and
 * languages at world sizes 1-4 in one process: every utterance once per epoch (alpha = 1), the same
 * global batches for every world size, the same step count on every rank, resume == no stop,
 * multilingual upsampling, the max_tokens budget, crops. Then the reading layer on a small corpus
 * written here: the audio is the stored samples at the crop offsets, features are features_compute
 * of that audio, prefetch threads give the same batches as the synchronous path, resuming with
 * loader_open(consumed) continues the stream, and a read error names the utterance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/rng.h"
#include "../../data/corpus.h"
#include "../../data/h5util.h"
#include "../../data/loader.h"
#include "../../data/shard.h"

/* ---- a synthetic corpus table: 3 languages of very different sizes ---------------------------- */
enum { N_UTTS = 700, N_LANGS = 3 };
static int64_t g_length[N_UTTS];
static int32_t g_lang[N_UTTS];

static void make_table(void) {
    KoeRng r = koe_rng(2024, 0, 0, KOE_RNG_INIT);
    for (int i = 0; i < N_UTTS; i++) {
        double u = koe_rng_uniform(&r);
        g_lang[i] = u < 0.7 ? 0 : u < 0.93 ? 1 : 2; /* ~490, ~160, ~50 utterances */
        g_length[i] = 8000 + (int64_t)koe_rng_below(&r, 320000);
    }
}

static LoaderPlanConfig test_config(double alpha, int crop_to_shortest) {
    LoaderPlanConfig c;
    loader_plan_config_default(&c);
    c.seed = 77;
    c.max_tokens = 1000000;
    c.max_sample_size = 250000;
    c.min_sample_size = 32000;
    c.lang_alpha = alpha;
    c.crop_to_shortest = crop_to_shortest;
    c.bucket_batches = 5;
    c.log = 0;
    return c;
}

static LoaderPlan *plan_for(LoaderPlanConfig c, int rank, int world) {
    c.rank = rank;
    c.world = world;
    KoeError err;
    LoaderPlan *p = loader_plan_create(g_length, g_lang, N_UTTS, N_LANGS, NULL, &c, &err);
    if (!p) fail_msg("loader_plan_create: %s", err.msg);
    return p;
}

/* One global batch, put back together from the rank slices. */
typedef struct {
    int64_t index, epoch, n, samples;
    int64_t *utt, *start, *length;
} GlobalBatch;

static void global_free(GlobalBatch *gb, int64_t count) {
    for (int64_t i = 0; i < count; i++) {
        free(gb[i].utt);
        free(gb[i].start);
        free(gb[i].length);
    }
    free(gb);
}

/* Global batches first .. first+count-1 seen by P fresh planners (one per rank), checking that the
 * ranks agree on everything global and that each slice is the i % P == r part. */
static GlobalBatch *collect(LoaderPlanConfig c, int world, int64_t first, int64_t count) {
    LoaderPlan *p[4];
    for (int r = 0; r < world; r++) p[r] = plan_for(c, r, world);
    GlobalBatch *out = calloc((size_t)count, sizeof *out);
    LoaderBatch b = {0};
    for (int64_t k = 0; k < count; k++) {
        GlobalBatch *gb = &out[k];
        for (int r = 0; r < world; r++) {
            loader_plan_batch(p[r], first + k, &b);
            if (r == 0) {
                gb->index = b.index;
                gb->epoch = b.epoch;
                gb->n = b.global_n;
                gb->samples = b.global_samples;
                gb->utt = calloc((size_t)b.global_n + 1, sizeof(int64_t));
                gb->start = calloc((size_t)b.global_n + 1, sizeof(int64_t));
                gb->length = calloc((size_t)b.global_n + 1, sizeof(int64_t));
            }
            assert_int_equal(b.index, first + k);
            assert_int_equal(b.epoch, gb->epoch);
            assert_int_equal(b.global_n, gb->n);
            assert_int_equal(b.global_samples, gb->samples);
            int64_t expect_n = gb->n > r ? (gb->n - r + world - 1) / world : 0;
            assert_int_equal(b.n, expect_n);
            int64_t longest = 0;
            for (int64_t s = 0; s < b.n; s++) {
                int64_t i = s * world + r;
                gb->utt[i] = b.utt[s];
                gb->start[i] = b.start[s];
                gb->length[i] = b.length[s];
                if (b.length[s] > longest) longest = b.length[s];
            }
            assert_int_equal(b.T, longest);
        }
    }
    loader_batch_free(&b);
    for (int r = 0; r < world; r++) loader_plan_free(p[r]);
    return out;
}

static void assert_streams_equal(const GlobalBatch *a, const GlobalBatch *b, int64_t count) {
    for (int64_t k = 0; k < count; k++) {
        assert_int_equal(a[k].index, b[k].index);
        assert_int_equal(a[k].epoch, b[k].epoch);
        assert_int_equal(a[k].n, b[k].n);
        assert_int_equal(a[k].samples, b[k].samples);
        for (int64_t i = 0; i < a[k].n; i++) {
            assert_int_equal(a[k].utt[i], b[k].utt[i]);
            assert_int_equal(a[k].start[i], b[k].start[i]);
            assert_int_equal(a[k].length[i], b[k].length[i]);
        }
    }
}

static void test_alpha1_every_utterance_once_per_epoch(void **state) {
    (void)state;
    LoaderPlanConfig c = test_config(1.0, 1);
    int64_t eligible = 0;
    for (int i = 0; i < N_UTTS; i++) eligible += g_length[i] >= c.min_sample_size;
    assert_true(eligible < N_UTTS); /* the table does have utterances to skip */
    for (int world = 1; world <= 4; world++) {
        LoaderPlan *p[4];
        for (int r = 0; r < world; r++) p[r] = plan_for(c, r, world);
        int64_t first = 0;
        for (int64_t e = 0; e < 2; e++) {
            int64_t nb = loader_plan_epoch_batches(p[0], e);
            assert_true(nb > 10);
            for (int r = 1; r < world; r++) assert_int_equal(loader_plan_epoch_batches(p[r], e), nb);
            int seen[N_UTTS] = {0};
            LoaderBatch b = {0};
            for (int r = 0; r < world; r++) {
                for (int64_t g = first; g < first + nb; g++) {
                    loader_plan_batch(p[r], g, &b);
                    assert_int_equal(b.epoch, e);
                    for (int64_t s = 0; s < b.n; s++) seen[b.utt[s]]++;
                }
            }
            loader_batch_free(&b);
            for (int i = 0; i < N_UTTS; i++) {
                if (seen[i] != (g_length[i] >= c.min_sample_size ? 1 : 0))
                    fail_msg("world %d epoch %lld: utterance %d (length %lld) seen %d times", world,
                             (long long)e, i, (long long)g_length[i], seen[i]);
            }
            first += nb;
        }
        for (int r = 0; r < world; r++) loader_plan_free(p[r]);
    }
}

static void test_global_batches_same_for_every_world_size(void **state) {
    (void)state;
    for (int crop = 0; crop <= 1; crop++) {
        LoaderPlanConfig c = test_config(0.5, crop);
        LoaderPlan *p = plan_for(c, 0, 1);
        int64_t count = loader_plan_epoch_batches(p, 0) + 12; /* crosses into epoch 1 */
        loader_plan_free(p);
        GlobalBatch *ref = collect(c, 1, 0, count);
        assert_int_equal(ref[count - 1].epoch, 1);
        for (int world = 2; world <= 4; world++) {
            GlobalBatch *got = collect(c, world, 0, count);
            assert_streams_equal(ref, got, count);
            global_free(got, count);
        }
        global_free(ref, count);
    }
}

static void test_resume_equals_uninterrupted(void **state) {
    (void)state;
    LoaderPlanConfig c = test_config(0.5, 1);
    LoaderPlan *p = plan_for(c, 0, 1);
    int64_t nb0 = loader_plan_epoch_batches(p, 0), nb1 = loader_plan_epoch_batches(p, 1);
    loader_plan_free(p);
    int64_t total = nb0 + nb1 + 5;
    const int worlds[2] = {1, 3};
    for (int w = 0; w < 2; w++) {
        GlobalBatch *ref = collect(c, worlds[w], 0, total);
        const int64_t stops[] = {1, 7, nb0 - 1, nb0, nb0 + 1, nb0 + nb1 - 1, nb0 + nb1};
        for (size_t s = 0; s < sizeof stops / sizeof stops[0]; s++) {
            int64_t k = stops[s];
            GlobalBatch *got = collect(c, worlds[w], k, total - k);
            assert_streams_equal(ref + k, got, total - k);
            global_free(got, total - k);
        }
        global_free(ref, total);
    }
}

static void test_alpha_half_upsamples_small_language(void **state) {
    (void)state;
    LoaderPlanConfig c = test_config(0.5, 1);
    int64_t n_l[N_LANGS] = {0};
    double h_l[N_LANGS] = {0}, H = 0, Z = 0;
    for (int i = 0; i < N_UTTS; i++) {
        if (g_length[i] < c.min_sample_size) continue;
        n_l[g_lang[i]]++;
        h_l[g_lang[i]] += (double)g_length[i] / 16000.0 / 3600.0;
    }
    for (int l = 0; l < N_LANGS; l++) {
        H += h_l[l];
        Z += sqrt(h_l[l]);
    }
    LoaderPlan *p = plan_for(c, 0, 1), *q = plan_for(c, 0, 1);
    int64_t counts[N_LANGS], counts1[N_LANGS];
    loader_plan_epoch_lang_counts(p, 0, counts);
    loader_plan_epoch_lang_counts(p, 1, counts1);
    for (int l = 0; l < N_LANGS; l++) {
        int64_t expect = llround((double)n_l[l] * (sqrt(h_l[l]) / Z) / (h_l[l] / H));
        assert_int_equal(counts[l], expect);
        assert_int_equal(counts1[l], expect);
    }
    assert_true(counts[2] > n_l[2] * 3 / 2); /* the smallest language is upsampled */
    assert_true(counts[0] < n_l[0]);         /* the largest is downsampled */

    /* Deterministic: a second planner gives the same batches; each copy count is floor or ceil of
     * r_l; the downsampled language's subset is redrawn in epoch 1. */
    int64_t nb0 = loader_plan_epoch_batches(p, 0), nb1 = loader_plan_epoch_batches(p, 1);
    assert_int_equal(loader_plan_epoch_batches(q, 0), nb0);
    int seen[2][N_UTTS];
    memset(seen, 0, sizeof seen);
    LoaderBatch a = {0}, b = {0};
    for (int64_t g = 0; g < nb0 + nb1; g++) {
        loader_plan_batch(p, g, &a);
        loader_plan_batch(q, g, &b);
        assert_int_equal(a.n, b.n);
        for (int64_t s = 0; s < a.n; s++) {
            assert_int_equal(a.utt[s], b.utt[s]);
            assert_int_equal(a.start[s], b.start[s]);
            seen[a.epoch][a.utt[s]]++;
        }
    }
    int differ = 0;
    for (int i = 0; i < N_UTTS; i++) {
        if (g_length[i] < c.min_sample_size) {
            assert_int_equal(seen[0][i], 0);
            continue;
        }
        int l = g_lang[i];
        int64_t lo = counts[l] / n_l[l], hi = lo + (counts[l] % n_l[l] != 0);
        assert_true(seen[0][i] >= lo && seen[0][i] <= hi);
        differ += seen[0][i] != seen[1][i];
    }
    assert_true(differ > 0);
    loader_batch_free(&a);
    loader_batch_free(&b);
    loader_plan_free(p);
    loader_plan_free(q);

    /* Another seed gives another order. */
    LoaderPlanConfig c2 = c;
    c2.seed = 78;
    GlobalBatch *x = collect(c, 1, 0, 3), *y = collect(c2, 1, 0, 3);
    int same = x[0].n == y[0].n;
    for (int64_t i = 0; same && i < x[0].n; i++) same = x[0].utt[i] == y[0].utt[i];
    assert_false(same);
    global_free(x, 3);
    global_free(y, 3);
}

static void test_budget_and_crops(void **state) {
    (void)state;
    for (int crop = 0; crop <= 1; crop++) {
        LoaderPlanConfig c = test_config(0.5, crop);
        LoaderPlan *p = plan_for(c, 0, 1);
        int64_t count = loader_plan_epoch_batches(p, 0) + loader_plan_epoch_batches(p, 1);
        loader_plan_free(p);
        GlobalBatch *s = collect(c, 1, 0, count);
        int64_t sum_n = 0, cropped = 0;
        for (int64_t k = 0; k < count; k++) {
            int64_t longest = 0, shortest = INT64_MAX, samples = 0;
            assert_true(s[k].n >= 1);
            for (int64_t i = 0; i < s[k].n; i++) {
                int64_t len = g_length[s[k].utt[i]];
                int64_t eff = len < c.max_sample_size ? len : c.max_sample_size;
                assert_true(len >= c.min_sample_size);
                if (eff > longest) longest = eff;
                if (eff < shortest) shortest = eff;
                assert_true(s[k].start[i] >= 0 && s[k].start[i] + s[k].length[i] <= len);
                samples += s[k].length[i];
                cropped += s[k].start[i] > 0;
            }
            assert_true(s[k].n * longest <= c.max_tokens);
            assert_int_equal(samples, s[k].samples);
            for (int64_t i = 0; i < s[k].n; i++) {
                int64_t len = g_length[s[k].utt[i]];
                int64_t eff = len < c.max_sample_size ? len : c.max_sample_size;
                assert_int_equal(s[k].length[i], crop ? shortest : eff);
            }
            sum_n += s[k].n;
        }
        assert_true(cropped > 0);
        /* Bucketing packs batches: on average well over half of the possible utterances. */
        assert_true(sum_n > count * 2);
        global_free(s, count);
    }
}

static void test_upsampled_copies_get_their_own_crops(void **state) {
    (void)state;
    LoaderPlanConfig c = test_config(0.0, 1); /* uniform over languages: language 2 copied ~3x */
    c.bucket_batches = 1000;                  /* one window: copies end up side by side */
    LoaderPlan *p = plan_for(c, 0, 1);
    int64_t count = loader_plan_epoch_batches(p, 0);
    loader_plan_free(p);
    GlobalBatch *s = collect(c, 1, 0, count);
    int pairs = 0, equal = 0;
    for (int64_t k = 0; k < count; k++)
        for (int64_t i = 0; i < s[k].n; i++)
            for (int64_t j = 0; j < i; j++) {
                if (s[k].utt[i] != s[k].utt[j]) continue;
                if (g_length[s[k].utt[i]] - s[k].length[i] < 20000) continue; /* little room to crop */
                pairs++;
                equal += s[k].start[i] == s[k].start[j];
            }
    assert_true(pairs > 0);
    assert_int_equal(equal, 0);
    global_free(s, count);
}

static void test_bad_configs(void **state) {
    (void)state;
    KoeError err;
    LoaderPlanConfig c = test_config(1.0, 1);
    c.rank = 2;
    c.world = 2;
    assert_null(loader_plan_create(g_length, g_lang, N_UTTS, N_LANGS, NULL, &c, &err));
    assert_non_null(strstr(err.msg, "rank 2 of world 2"));
    c = test_config(1.0, 1);
    c.max_tokens = c.max_sample_size - 1;
    assert_null(loader_plan_create(g_length, g_lang, N_UTTS, N_LANGS, NULL, &c, &err));
    assert_non_null(strstr(err.msg, "max_tokens"));
    c = test_config(1.0, 1);
    c.min_sample_size = 10000000;
    assert_null(loader_plan_create(g_length, g_lang, N_UTTS, N_LANGS, NULL, &c, &err));
    assert_non_null(strstr(err.msg, "min_sample_size"));
    c = test_config(1.5, 1);
    assert_null(loader_plan_create(g_length, g_lang, N_UTTS, N_LANGS, NULL, &c, &err));
    assert_non_null(strstr(err.msg, "lang_alpha"));
}

/* ---- a real corpus --------------------------------------------------------------------------- */
enum { C_UTTS = 60 };
static char g_dir[512];
static int16_t *g_pcm[C_UTTS]; /* what was stored, by global corpus index */
static int64_t g_pcm_len[C_UTTS];

static void write_corpus(void) {
    const char *tmp = getenv("KOE_TMP");
    snprintf(g_dir, sizeof g_dir, "%s/loader-corpus-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) fail_msg("mkdtemp %s failed", g_dir);
    static const char *langs[3] = {"de", "en", "fi"};
    char *names[2] = {"shard-00000.h5", "shard-00001.h5"};
    KoeRng r = koe_rng(5, 0, 0, KOE_RNG_INIT);
    int u = 0;
    for (int s = 0; s < 2; s++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", g_dir, names[s]);
        KoeError err;
        ShardWriter *w = shard_writer_create(path, NULL, 0, &err);
        if (!w) fail_msg("shard_writer_create: %s", err.msg);
        for (int i = 0; i < C_UTTS / 2; i++, u++) {
            int64_t n = 16000 + (int64_t)koe_rng_below(&r, 80000);
            g_pcm[u] = malloc((size_t)n * sizeof(int16_t));
            g_pcm_len[u] = n;
            double ph = 0, f = 100 + 400 * koe_rng_uniform(&r);
            for (int64_t t = 0; t < n; t++) { /* a tone plus noise: compressible, not trivial */
                ph += 2 * M_PI * f / 16000.0;
                g_pcm[u][t] = (int16_t)(8000 * sin(ph) + 2000 * koe_rng_normal(&r));
            }
            char id[32];
            snprintf(id, sizeof id, "utt%03d", u);
            const char *lang = langs[u % 7 == 0 ? 2 : u % 3 == 0 ? 1 : 0];
            if (shard_writer_add(w, id, lang, "spk", "test", g_pcm[u], n, NULL, 0, &err) != 0)
                fail_msg("shard_writer_add: %s", err.msg);
        }
        if (shard_writer_finish(w, &err) != 0) fail_msg("shard_writer_finish: %s", err.msg);
    }
    KoeError err;
    if (corpus_write_index(g_dir, names, 2, "test_loader", &err) != 0) fail_msg("corpus_write_index: %s", err.msg);
}

static LoaderConfig corpus_config(int threads, int depth, int crop_to_shortest) {
    LoaderConfig lc;
    loader_config_default(&lc);
    lc.plan.seed = 11;
    lc.plan.max_tokens = 300000;
    lc.plan.max_sample_size = 64000;
    lc.plan.min_sample_size = 24000;
    lc.plan.crop_to_shortest = crop_to_shortest;
    lc.plan.bucket_batches = 3;
    lc.plan.log = 0;
    lc.features = FEAT_FBANK;
    lc.threads = threads;
    lc.depth = depth;
    return lc;
}

static void check_batch_content(Corpus *c, const LoaderBatch *b, FeatureExtractor *fe) {
    assert_int_equal(b->feat_kind, FEAT_FBANK);
    assert_int_equal(b->D, 80);
    for (int64_t i = 0; i < b->n; i++) {
        int64_t u = b->utt[i], len = b->length[i];
        char id[32];
        snprintf(id, sizeof id, "utt%03d", (int)u);
        assert_string_equal(corpus_utt_id(c, u), id);
        assert_true(b->start[i] + len <= g_pcm_len[u]);
        const float *row = b->audio + i * b->T;
        const uint8_t *pad = b->audio_pad + i * b->T;
        for (int64_t t = 0; t < b->T; t++) {
            float expect = t < len ? (float)g_pcm[u][b->start[i] + t] / 32768.0f : 0.0f;
            if (row[t] != expect || pad[t] != (t >= len))
                fail_msg("batch %lld utt %s sample %lld: %g (pad %d), stored %g", (long long)b->index, id,
                         (long long)t, row[t], pad[t], expect);
        }
        int64_t f = features_num_frames(len);
        assert_int_equal(b->frames[i], f);
        float *ref = malloc((size_t)(f ? f : 1) * 80 * sizeof(float));
        features_compute(fe, row, len, ref);
        const float *got = b->feats + i * b->F * 80;
        assert_memory_equal(got, ref, (size_t)f * 80 * sizeof(float));
        for (int64_t k = f * 80; k < b->F * 80; k++) assert_true(got[k] == 0.0f);
        for (int64_t k = 0; k < b->F; k++) assert_int_equal(b->feat_pad[i * b->F + k], k >= f);
        free(ref);
    }
}

static void assert_batches_equal(const LoaderBatch *a, const LoaderBatch *b) {
    assert_int_equal(a->index, b->index);
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->T, b->T);
    assert_int_equal(a->F, b->F);
    assert_memory_equal(a->utt, b->utt, (size_t)a->n * sizeof(int64_t));
    assert_memory_equal(a->start, b->start, (size_t)a->n * sizeof(int64_t));
    assert_memory_equal(a->length, b->length, (size_t)a->n * sizeof(int64_t));
    assert_memory_equal(a->audio, b->audio, (size_t)(a->n * a->T) * sizeof(float));
    assert_memory_equal(a->feats, b->feats, (size_t)(a->n * a->F * a->D) * sizeof(float));
}

static void copy_batch(LoaderBatch *dst, const LoaderBatch *src) {
    loader_batch_free(dst);
    *dst = *src;
    size_t n = (size_t)src->n;
    dst->utt = malloc((n + 1) * sizeof(int64_t));
    dst->start = malloc((n + 1) * sizeof(int64_t));
    dst->length = malloc((n + 1) * sizeof(int64_t));
    dst->frames = NULL;
    dst->audio = malloc((n * (size_t)src->T + 1) * sizeof(float));
    dst->audio_pad = NULL;
    dst->feats = malloc((n * (size_t)src->F * (size_t)src->D + 1) * sizeof(float));
    dst->feat_pad = NULL;
    memcpy(dst->utt, src->utt, n * sizeof(int64_t));
    memcpy(dst->start, src->start, n * sizeof(int64_t));
    memcpy(dst->length, src->length, n * sizeof(int64_t));
    memcpy(dst->audio, src->audio, n * (size_t)src->T * sizeof(float));
    memcpy(dst->feats, src->feats, n * (size_t)src->F * (size_t)src->D * sizeof(float));
}

static void test_corpus_prefetch_equals_sync(void **state) {
    (void)state;
    Corpus c;
    KoeError err;
    if (corpus_open(&c, g_dir, &err) != 0) fail_msg("corpus_open: %s", err.msg);
    assert_int_equal(c.n_utts, C_UTTS);
    FeatureExtractor *fe = features_create(FEAT_FBANK);
    for (int crop = 0; crop <= 1; crop++) {
        LoaderConfig sc = corpus_config(0, 1, crop);
        Loader *sync = loader_open(&c, &sc, 0, &err);
        if (!sync) fail_msg("loader_open: %s", err.msg);
        enum { COUNT = 40 };
        LoaderBatch ref[COUNT];
        memset(ref, 0, sizeof ref);
        int64_t audio_utts = 0;
        for (int k = 0; k < COUNT; k++) {
            const LoaderBatch *b = loader_next(sync, &err);
            if (!b) fail_msg("loader_next: %s", err.msg);
            check_batch_content(&c, b, fe);
            audio_utts += b->n;
            copy_batch(&ref[k], b);
        }
        assert_int_equal(loader_consumed(sync), COUNT);
        assert_true(ref[COUNT - 1].epoch >= 1); /* the stream crossed an epoch boundary */
        loader_close(sync);
        assert_true(audio_utts > COUNT);

        const int threads[3] = {1, 2, 2}, depths[3] = {1, 3, 8};
        for (int v = 0; v < 3; v++) {
            LoaderConfig pc = corpus_config(threads[v], depths[v], crop);
            Loader *pre = loader_open(&c, &pc, 0, &err);
            if (!pre) fail_msg("loader_open: %s", err.msg);
            for (int k = 0; k < COUNT; k++) {
                const LoaderBatch *b = loader_next(pre, &err);
                if (!b) fail_msg("loader_next: %s", err.msg);
                assert_batches_equal(&ref[k], b);
            }
            loader_close(pre);
        }
        /* Resume at k (also inside the prefetch path), closing early with batches in flight. */
        const int64_t stops[3] = {1, 13, 29};
        for (int s = 0; s < 3; s++) {
            LoaderConfig pc = corpus_config(s == 0 ? 0 : 1, 2, crop);
            Loader *res = loader_open(&c, &pc, stops[s], &err);
            if (!res) fail_msg("loader_open: %s", err.msg);
            for (int64_t k = stops[s]; k < stops[s] + 5; k++) {
                const LoaderBatch *b = loader_next(res, &err);
                if (!b) fail_msg("loader_next: %s", err.msg);
                assert_batches_equal(&ref[k], b);
            }
            assert_int_equal(loader_consumed(res), stops[s] + 5);
            loader_close(res);
        }
        for (int k = 0; k < COUNT; k++) loader_batch_free(&ref[k]);
    }
    features_free(fe);
    corpus_close(&c);
}

static void test_corpus_read_error_names_utterance(void **state) {
    (void)state;
    Corpus c;
    KoeError err;
    if (corpus_open(&c, g_dir, &err) != 0) fail_msg("corpus_open: %s", err.msg);
    /* Pretend utterance 5 is far longer than what its shard holds: its crops fall outside. */
    int64_t bad = 5;
    assert_true(g_pcm_len[bad] >= 24000);
    c.utt_length[bad] = 2000000;
    for (int threads = 0; threads <= 2; threads++) {
        LoaderConfig lc = corpus_config(threads, 3, 0);
        Loader *l = loader_open(&c, &lc, 0, &err);
        if (!l) fail_msg("loader_open: %s", err.msg);
        int failed = 0;
        for (int k = 0; k < 200 && !failed; k++) {
            const LoaderBatch *b = loader_next(l, &err);
            if (!b) failed = 1;
            else
                for (int64_t i = 0; i < b->n; i++) assert_true(b->utt[i] != bad || b->start[i] + b->length[i] <= g_pcm_len[bad]);
        }
        assert_true(failed);
        if (!strstr(err.msg, "utt005")) fail_msg("error does not name the utterance: %s", err.msg);
        /* asking again reports the same error, and closing with the threads stopped is clean */
        KoeError again;
        assert_null(loader_next(l, &again));
        assert_string_equal(again.msg, err.msg);
        loader_close(l);
    }
    corpus_close(&c);
}

static int corpus_setup(void **state) {
    (void)state;
    h5_init();
    write_corpus();
    return 0;
}

static int corpus_teardown(void **state) {
    (void)state;
    for (int u = 0; u < C_UTTS; u++) free(g_pcm[u]);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    make_table();
    const struct CMUnitTest plan_tests[] = {
        cmocka_unit_test(test_alpha1_every_utterance_once_per_epoch),
        cmocka_unit_test(test_global_batches_same_for_every_world_size),
        cmocka_unit_test(test_resume_equals_uninterrupted),
        cmocka_unit_test(test_alpha_half_upsamples_small_language),
        cmocka_unit_test(test_budget_and_crops),
        cmocka_unit_test(test_upsampled_copies_get_their_own_crops),
        cmocka_unit_test(test_bad_configs),
    };
    const struct CMUnitTest corpus_tests[] = {
        cmocka_unit_test(test_corpus_prefetch_equals_sync),
        cmocka_unit_test(test_corpus_read_error_names_utterance),
    };
    int failed = cmocka_run_group_tests_name("loader plan", plan_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("loader corpus", corpus_tests, corpus_setup, corpus_teardown);
    return failed ? 1 : 0;
}
