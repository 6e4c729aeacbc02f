/* ckpt_model.c — see ckpt_model.h. */
#include "ckpt_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/objective.h"
#include "../data/checkpoint.h"
#include "../data/hf.h"
#include "../distributed/ckpt.h"
#include "../distributed/comm.h"
#include "../distributed/rundir.h"

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

/* r from dir's config.json (c, read from name) with the derived keys pre[0..n_pre) before the caller's
 * overrides. */
static int load_recipe(Recipe *r, const char *name, const ModelConfig *c, int n_pre, char pre[][64], int n_over,
                       char **over, KoeError *err) {
    char **all = koe_malloc((size_t)(n_pre + n_over + 1) * sizeof *all);
    for (int i = 0; i < n_pre; i++) all[i] = pre[i];
    for (int i = 0; i < n_over; i++) all[n_pre + i] = over[i];
    const int rc = recipe_load_model(r, name, c, n_pre + n_over, all, err);
    free(all);
    return rc;
}

/* The objective keys of a published pretraining head, written to ov: HuBERT's final_dim from
 * label_embeddings (*n_classes its rows); wav2vec 2.0's groups from config.json, entries per group and
 * the codevector and projection dims from the tensors' shapes. Returns how many (0: the tensors are no
 * head koe knows). */
static int head_overrides(const HfHeads *h, char ov[][64], int *n_classes) {
    const int le = params_find(&h->t, "label_embeddings"), cv = params_find(&h->t, "quantizer.codevectors"),
              pq = params_find(&h->t, "project_q.weight");
    *n_classes = 0;
    if (le >= 0 && h->t.e[le].ndim == 2) {
        *n_classes = (int)h->t.e[le].shape[0];
        snprintf(ov[0], 64, "objective.name=hubert");
        snprintf(ov[1], 64, "objective.final_dim=%lld", (long long)h->t.e[le].shape[1]);
        return 2;
    }
    if (cv < 0 || pq < 0 || h->t.e[cv].ndim != 3 || h->t.e[pq].ndim != 2) return 0;
    const ParamEntry *c = &h->t.e[cv];
    snprintf(ov[0], 64, "objective.name=wav2vec2");
    snprintf(ov[1], 64, "objective.latent_groups=%d", h->groups);
    snprintf(ov[2], 64, "objective.latent_vars=%lld", (long long)(c->shape[1] / h->groups));
    snprintf(ov[3], 64, "objective.latent_dim=%lld", (long long)(c->shape[2] * h->groups));
    snprintf(ov[4], 64, "objective.final_dim=%lld", (long long)h->t.e[pq].shape[0]);
    return 5;
}

/* The checkpoint's table and weights with the head: m's encoder, then r's objective head filled from
 * h. Returns 0, or -1 after a warning naming the tensor of dir that does not fit (nothing is kept). */
static int head_fill(const char *dir, const Recipe *r, const Model *m, const HfHeads *h, int n_classes,
                     CkptHead *head) {
    ObjectiveConfig oc;
    recipe_objective_config(r, n_classes, &oc);
    params_table_init(&head->t);
    model_table_build(&r->model, &head->t);
    objective_add_params(&head->t, &oc);
    head->v = koe_malloc((size_t)head->t.total * sizeof *head->v);
    memcpy(head->v, m->params, (size_t)m->table.total * sizeof *head->v); /* the encoder comes first */
    for (int i = m->table.n; i < head->t.n; i++) {
        const ParamEntry *e = &head->t.e[i];
        const int j = params_find(&h->t, e->name);
        int same = j >= 0 && h->t.e[j].ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = h->t.e[j].shape[d] == e->shape[d];
        if (!same) {
            char want[128];
            params_shape_str(e, want, sizeof want);
            koe_warn("%s: the pretraining head is not koe's %s head: %s %s %s; the head is not imported", dir,
                     r->objective.name == OBJ_HUBERT ? "HuBERT" : "wav2vec 2.0", e->name,
                     j < 0 ? "is missing, koe's is" : "has another shape than koe's", want);
            ckpt_head_free(head);
            return -1;
        }
        memcpy(head->v + e->offset, h->v + h->t.e[j].offset, (size_t)e->numel * sizeof *head->v);
    }
    return 0;
}

/* m's pretraining head from h (the tensors dir's export has beside the encoder): when it is one koe
 * knows and fits, r is reloaded with its objective keys after the n0 derived ones in ov and *head gets
 * the checkpoint's tensors; otherwise r and head stay as they are, with a warning. */
static void head_import(const char *dir, const char *name, const ModelConfig *c, char ov[][64], int n0, int n_over,
                        char **over, const Model *m, const HfHeads *h, Recipe *r, CkptHead *head) {
    int n_classes = 0;
    const int nh = h->t.n ? head_overrides(h, ov + n0, &n_classes) : 0;
    if (!nh) {
        if (h->t.n) koe_warn("%s has %d pretraining head tensor(s) but not a head koe knows; not imported", dir, h->t.n);
        return;
    }
    Recipe rh;
    KoeError err;
    if (load_recipe(&rh, name, c, n0 + nh, ov, n_over, over, &err) < 0) {
        koe_warn("%s; the pretraining head is not imported", err.msg);
        return;
    }
    if (head_fill(dir, &rh, m, h, n_classes, head) < 0) {
        recipe_free(&rh);
        return;
    }
    recipe_free(r);
    *r = rh;
    char keys[6 * 64] = "";
    for (int i = n0; i < n0 + nh; i++) snprintf(keys + strlen(keys), sizeof keys - strlen(keys), " %s", ov[i]);
    koe_log("%s's pretraining head imported (%d tensors, with%s)", dir, head->t.n - m->table.n, keys);
}

/* Collective: m (NULL when this rank could not build it) if every rank built its model, else NULL on
 * every rank (a rank whose model is fine frees it and says another rank failed): a rank that stops
 * here must not leave the others waiting in the read that follows. */
static Model *agree_built(Model *m, const char *path, Recipe *r, KoeError *err) {
    int64_t failed = !m;
    comm_allreduce_max_i64(&failed, 1);
    if (!m || !failed) return m;
    koe_error_set(err, "%s: the model could not be opened on another rank (see its message)", path);
    model_free(m);
    recipe_free(r);
    return NULL;
}

/* The export's weights into m: by this rank (all = 0; h: the head tensors beside the encoder, or NULL),
 * or (all = 1, collective) by rank 0 and broadcast, every rank returning rank 0's result. */
static int read_hf_weights(const char *dir, Model *m, HfHeads *h, int all, KoeError *err) {
    if (!all) return hf_read_params(dir, &m->table, m->params, h, err);
    int rc = comm_rank() == 0 ? hf_read_params(dir, &m->table, m->params, NULL, err) : 0;
    comm_bcast(&rc, sizeof rc, 0);
    if (rc < 0) {
        comm_bcast(err->msg, sizeof err->msg, 0);
        return -1;
    }
    comm_bcast(m->params, (size_t)m->table.total * sizeof *m->params, 0);
    return 0;
}

/* ckpt_model_open_hf; all = 1: collectively, the weights read once (head must be NULL). */
static Model *open_hf(const char *dir, int n_over, char **over, int max_B, int64_t max_samples, const char *longest,
                      CkptHead *head, int all, Recipe *r, KoeError *err) {
    KOE_ASSERT(!(all && head));
    if (head) memset(head, 0, sizeof *head);
    ModelConfig c;
    char name[4200];
    snprintf(name, sizeof name, "%s/config.json", dir);
    /* the derived keys go before the caller's overrides: an fbank-frontend model (a koe export) reads
     * fbank, then a pretraining head's objective keys */
    char ov[6][64];
    int n0 = 0;
    Model *m = NULL;
    if (hf_read_config(dir, &c, err) == 0) {
        if (c.frontend == FRONTEND_FBANK) snprintf(ov[n0++], 64, "data.features=fbank");
        if (load_recipe(r, name, &c, n0, ov, n_over, over, err) == 0)
            m = create_checked(dir, max_B, max_samples, longest, r, err);
    }
    if (all) m = agree_built(m, dir, r, err);
    if (!m) return NULL;
    model_init_params(m, r->run.seed); /* masked_spec_embed keeps this when the export has none */
    HfHeads h;
    if (read_hf_weights(dir, m, head ? &h : NULL, all, err) < 0) {
        model_free(m);
        recipe_free(r);
        return NULL;
    }
    if (head) {
        head_import(dir, name, &c, ov, n0, n_over, over, m, &h, r, head);
        hf_heads_free(&h);
    }
    return m;
}

Model *ckpt_model_open_hf(const char *dir, int n_over, char **over, int max_B, int64_t max_samples,
                          const char *longest, CkptHead *head, Recipe *r, KoeError *err) {
    return open_hf(dir, n_over, over, max_B, max_samples, longest, head, 0, r, err);
}

void ckpt_head_free(CkptHead *head) {
    params_table_free(&head->t);
    free(head->v);
    head->v = NULL;
}

int ckpt_path_parse(const char *s, void *dst, char *why, size_t why_len) {
    static char **followed; /* the step files latest files named: kept for the process's lifetime */
    static int n_followed;
    char path[4200];
    KoeError err = {{0}};
    const int r = *s ? rundir_follow_latest(s, path, sizeof path, &err) : -1;
    if (r < 0) {
        snprintf(why, why_len, "%s", *s ? err.msg : "empty value");
        return -1;
    }
    if (r == 0) {
        *(const char **)dst = s;
        return 0;
    }
    followed = koe_realloc(followed, (size_t)(n_followed + 1) * sizeof *followed);
    followed[n_followed] = koe_strdup(path);
    *(const char **)dst = followed[n_followed++];
    if (comm_rank() == 0) koe_log("%s names the run's newest checkpoint, %s: reading that", s, path);
    return 0;
}

/* ckpt_model_open (all: every rank, the weights read by rank 0 and broadcast) or ckpt_model_open_local. */
static Model *open_model(const char *path, int max_B, int64_t max_samples, const char *longest, int all, Recipe *r,
                         KoeError *err) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return open_hf(path, 0, NULL, max_B, max_samples, longest, NULL, all, r, err);
    char *text = NULL;
    Model *m = NULL;
    char name[4200];
    snprintf(name, sizeof name, "%s:/config", path);
    if (checkpoint_read_config(path, &text, err) == 0 && recipe_load_string(r, name, text, 0, NULL, err) == 0)
        m = create_checked(path, max_B, max_samples, longest, r, err);
    free(text);
    if (all) m = agree_built(m, path, r, err);
    if (m && (all ? ckpt_read_model(path, &m->table, m->params, 1, err) : checkpoint_read_encoder(path, &m->table, m->params, err)) == 0)
        return m;
    if (m) {
        model_free(m);
        recipe_free(r);
    }
    return NULL;
}

Model *ckpt_model_open(const char *path, int max_B, int64_t max_samples, const char *longest, Recipe *r,
                       KoeError *err) {
    return open_model(path, max_B, max_samples, longest, 1, r, err);
}

Model *ckpt_model_open_local(const char *path, int max_B, int64_t max_samples, const char *longest, Recipe *r,
                             KoeError *err) {
    return open_model(path, max_B, max_samples, longest, 0, r, err);
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
