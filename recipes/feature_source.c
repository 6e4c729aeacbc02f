/* feature_source.c — see feature_source.h. */
#include "feature_source.h"

#include <stdlib.h>
#include <string.h>

#include "../core/config_keys.h"
#include "../data/labels.h"
#include "../distributed/ckpt.h"

int feature_source_parse(const char *source, int *layer, char *why, size_t n) {
    int64_t v = -1;
    FeatureKind kind;
    const int is_layer = !strncmp(source, "layer:", 6) && !config_parse_i64(source + 6, &v) && v >= 0 && v <= 1000;
    if (features_kind_parse(source, &kind) && !is_layer) {
        snprintf(why, n, "expected mfcc, fbank or layer:N with N a layer number 0..1000");
        return -1;
    }
    *layer = (int)v;
    return 0;
}

int feature_source_open(FeatureSource *s, const char *source, const char *ckpt, const Corpus *c, KoeError *err) {
    memset(s, 0, sizeof *s);
    s->layer = -1;
    if (strlen(source) >= sizeof s->source) return koe_error_set(err, "source '%s' is too long", source);
    snprintf(s->source, sizeof s->source, "%s", source);
    s->max_len = 1;
    int64_t longest = 0;
    for (int64_t i = 0; i < c->n_utts; i++)
        if (c->utt_length[i] > s->max_len) s->max_len = c->utt_length[longest = i];
    char why[128];
    if (feature_source_parse(source, &s->layer, why, sizeof why)) return koe_error_set(err, "source '%s': %s", source, why);
    FeatureKind kind;
    if (s->layer < 0 && !features_kind_parse(source, &kind)) {
        s->dim = features_dim(kind);
        s->frame_rate = FEATURES_FRAME_RATE;
        s->fe = features_create(kind);
        int64_t fmax = features_num_frames(s->max_len);
        s->out = koe_malloc((size_t)(fmax ? fmax : 1) * s->dim * sizeof(float));
    } else {
        if (!ckpt) return koe_error_set(err, "source '%s' needs --ckpt CKPT.h5 (the model whose layer is clustered)", source);
        if (ckpt_file_checksum(ckpt, s->ckpt_checksum, err) < 0) return -1;
        s->m = ckpt_model_open(ckpt, 1, s->max_len, c->n_utts ? corpus_utt_id(c, longest) : NULL, &s->r, err);
        if (!s->m) return -1;
        if (s->layer > s->m->cfg.L) {
            koe_error_set(err, "%s: source %s: the model has layers 0..%d", ckpt, source, s->m->cfg.L);
            feature_source_close(s);
            return -1;
        }
        ckpt_input_init(&s->in, s->m, s->max_len);
        s->dim = s->m->cfg.D;
        s->frame_rate = ckpt_model_frame_rate(s->m);
    }
    s->pcm = koe_malloc((size_t)s->max_len * sizeof(int16_t));
    s->wav = koe_malloc((size_t)s->max_len * sizeof(float));
    return 0;
}

int64_t feature_source_frames(const FeatureSource *s, int64_t n) {
    return s->m ? ckpt_model_frames(s->m, n) : features_num_frames(n);
}

int64_t feature_source_compute(FeatureSource *s, Corpus *c, int64_t utt, const float **feats, KoeError *err) {
    const int64_t n = c->utt_length[utt];
    const int64_t T = feature_source_frames(s, n);
    if (T == 0) return 0;
    if (corpus_read(c, utt, 0, n, s->pcm, err) < 0) return -1;
    for (int64_t i = 0; i < n; i++) s->wav[i] = (float)s->pcm[i] / 32768.0f;
    if (s->m) {
        ModelRun run = {0};
        int64_t S;
        const float *inp = ckpt_input_compute(&s->in, s->wav, n, &S);
        model_forward(s->m, inp, &S, 1, S, NULL, &run);
        KOE_ASSERT(s->m->T == T);
        *feats = model_hidden(s->m, s->layer);
    } else {
        features_compute(s->fe, s->wav, n, s->out);
        *feats = s->out;
    }
    return T;
}

void feature_source_close(FeatureSource *s) {
    if (s->fe) features_free(s->fe);
    if (s->m) {
        ckpt_input_free(&s->in);
        model_free(s->m);
        recipe_free(&s->r);
    }
    free(s->pcm);
    free(s->wav);
    free(s->out);
    memset(s, 0, sizeof *s);
}
