/* ckpt_model.c — see ckpt_model.h. */
#include "ckpt_model.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/checkpoint.h"
#include "../data/hf.h"

int64_t ckpt_model_min_input(const ModelConfig *c) {
    if (c->frontend == FRONTEND_FBANK) return c->fbank_stack;
    int64_t r = 1;
    for (int i = c->n_conv - 1; i >= 0; i--) r = (r - 1) * c->conv_stride[i] + c->conv_kernel[i];
    return r;
}

/* The attention probabilities of every layer, (L, H, T, T) floats, dominate the activations of a long
 * utterance (3 hours at 50 Hz: 4.7 TB); more than the machine's memory is refused before allocating. */
static int check_fits(const char *path, const ModelConfig *c, int64_t max_S, int64_t max_samples, const char *longest,
                      KoeError *err) {
    const double T = (double)model_frames(c, max_S), gib = 1024.0 * 1024.0 * 1024.0;
    const double need = (double)(c->L ? c->L : 1) * c->H * T * T * sizeof(float) / gib;
    const double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE) / gib;
    if (have <= 0 || need <= have) return 0;
    return koe_error_set(err, "%s: utterance %s is %.1f minutes long: the encoder's attention over its %.0f frames "
                         "needs %.0f GiB, more than this machine's %.0f GiB; split recordings longer than a few "
                         "minutes into pieces before koe prepare", path, longest ? longest : "(the longest)",
                         (double)max_samples / KOE_SAMPLE_RATE / 60.0, T, need, have);
}

/* The model of r (created for max_B utterances of up to max_samples samples), after the memory check. */
static Model *create_checked(const char *path, int max_B, int64_t max_samples, const char *longest, Recipe *r,
                             KoeError *err) {
    const int fbank = r->model.frontend == FRONTEND_FBANK; /* the recipe check refused fbank_dim != 80 */
    const int64_t max_S = fbank ? features_num_frames(max_samples) : max_samples;
    const int64_t lo = ckpt_model_min_input(&r->model);
    if (check_fits(path, &r->model, max_S > lo ? max_S : lo, max_samples, longest, err) < 0) {
        recipe_free(r);
        return NULL;
    }
    return model_create(&r->model, max_B, max_S > lo ? max_S : lo);
}

Model *ckpt_model_open_hf(const char *dir, int n_over, char **over, int max_B, int64_t max_samples,
                          const char *longest, Recipe *r, KoeError *err) {
    ModelConfig c;
    char name[4200];
    snprintf(name, sizeof name, "%s/config.json", dir);
    if (hf_read_config(dir, &c, err) < 0) return NULL;
    /* an fbank-frontend model (a koe export) reads fbank: that goes before the caller's overrides */
    char fbank[] = "data.features=fbank", **all = koe_malloc((size_t)(n_over + 1) * sizeof *all);
    const int n = c.frontend == FRONTEND_FBANK;
    all[0] = fbank;
    for (int i = 0; i < n_over; i++) all[n + i] = over[i];
    const int rc = recipe_load_model(r, name, &c, n + n_over, all, err);
    free(all);
    if (rc < 0) return NULL;
    Model *m = create_checked(dir, max_B, max_samples, longest, r, err);
    if (!m) return NULL;
    model_init_params(m, r->run.seed); /* masked_spec_embed keeps this when the export has none */
    if (hf_read_params(dir, &m->table, m->params, NULL, err) < 0) {
        model_free(m);
        recipe_free(r);
        return NULL;
    }
    return m;
}

Model *ckpt_model_open(const char *path, int max_B, int64_t max_samples, const char *longest, Recipe *r,
                       KoeError *err) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return ckpt_model_open_hf(path, 0, NULL, max_B, max_samples, longest, r, err);
    char *text = NULL;
    if (checkpoint_read_config(path, &text, err) < 0) return NULL;
    char name[4200];
    snprintf(name, sizeof name, "%s:/config", path);
    int rc = recipe_load_string(r, name, text, 0, NULL, err);
    free(text);
    if (rc < 0) return NULL;
    Model *m = create_checked(path, max_B, max_samples, longest, r, err);
    if (m && checkpoint_read_encoder(path, &m->table, m->params, err) < 0) {
        model_free(m);
        recipe_free(r);
        return NULL;
    }
    return m;
}

int64_t ckpt_model_frames(const Model *m, int64_t n) {
    return model_frames(&m->cfg, m->cfg.frontend == FRONTEND_FBANK ? features_num_frames(n) : n);
}

double ckpt_model_frame_rate(const Model *m) {
    if (m->cfg.frontend == FRONTEND_FBANK) return (double)FEATURES_FRAME_RATE / m->cfg.fbank_stack;
    int64_t stride = 1;
    for (int i = 0; i < m->cfg.n_conv; i++) stride *= m->cfg.conv_stride[i];
    return (double)KOE_SAMPLE_RATE / (double)stride;
}

void ckpt_input_init(CkptInput *ci, const Model *m, int64_t max_samples) {
    memset(ci, 0, sizeof *ci);
    if (m->cfg.frontend != FRONTEND_FBANK) return;
    ci->fe = features_create(FEAT_FBANK);
    const int64_t f = features_num_frames(max_samples);
    ci->feats = koe_malloc((size_t)(f > 0 ? f : 1) * (size_t)features_dim(FEAT_FBANK) * sizeof(float));
}

const float *ckpt_input_compute(CkptInput *ci, const float *wav, int64_t n, int64_t *S) {
    if (!ci->fe) {
        *S = n;
        return wav;
    }
    const int64_t f = features_num_frames(n);
    if (f > 0) features_compute(ci->fe, wav, n, ci->feats);
    *S = f;
    return ci->feats;
}

void ckpt_input_free(CkptInput *ci) {
    if (ci->fe) features_free(ci->fe);
    free(ci->feats);
    memset(ci, 0, sizeof *ci);
}

int ckpt_corpus_open(CkptCorpus *cc, const char *ckpt, const char *corpus, KoeError *err) {
    memset(cc, 0, sizeof *cc);
    if (corpus_open(&cc->c, corpus, err) < 0) return -1;
    cc->have_corpus = 1;
    cc->max_len = 400;
    int64_t longest = -1;
    for (int64_t u = 0; u < cc->c.n_utts; u++)
        if (cc->c.utt_length[u] > cc->max_len) cc->max_len = cc->c.utt_length[u], longest = u;
    if (!(cc->m = ckpt_model_open(ckpt, 1, cc->max_len, longest >= 0 ? corpus_utt_id(&cc->c, longest) : NULL, &cc->r, err)))
        return -1;
    ckpt_input_init(&cc->in, cc->m, cc->max_len);
    cc->pcm = koe_malloc(sizeof(int16_t) * cc->max_len);
    cc->wav = koe_malloc(sizeof(float) * cc->max_len);
    return 0;
}

int64_t ckpt_corpus_read(CkptCorpus *cc, int64_t u, KoeError *err) {
    const int64_t n = cc->c.utt_length[u];
    if (corpus_read(&cc->c, u, 0, n, cc->pcm, err) < 0) return -1;
    for (int64_t i = 0; i < n; i++) cc->wav[i] = (float)cc->pcm[i] / 32768.0f;
    return n;
}

void ckpt_corpus_close(CkptCorpus *cc) {
    if (cc->m) ckpt_input_free(&cc->in), model_free(cc->m), recipe_free(&cc->r);
    if (cc->have_corpus) corpus_close(&cc->c);
    free(cc->pcm), free(cc->wav);
    memset(cc, 0, sizeof *cc);
}
