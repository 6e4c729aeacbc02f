/* params.c — the parameter table: layout, lookup by name, initialisation from the seed.
 * Must not: know which layer a tensor belongs to (model.c builds the table). */
#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

void params_table_init(ParamTable *t) { memset(t, 0, sizeof *t); }

void params_table_free(ParamTable *t) {
    free(t->e);
    memset(t, 0, sizeof *t);
}

int params_add(ParamTable *t, const char *name, int ndim, const int64_t *shape, ParamInit init, float a, float b) {
    KOE_ASSERT(ndim >= 1 && ndim <= PARAM_MAX_DIMS);
    KOE_ASSERT(strlen(name) < PARAM_NAME_LEN);
    KOE_ASSERT(params_find(t, name) < 0);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->e = koe_realloc(t->e, (size_t)t->cap * sizeof *t->e);
    }
    ParamEntry *e = &t->e[t->n];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->numel = 1;
    for (int d = 0; d < ndim; d++) {
        KOE_ASSERT(shape[d] > 0);
        e->shape[d] = shape[d];
        e->numel *= shape[d];
    }
    e->offset = t->total;
    e->init = init;
    e->a = a;
    e->b = b;
    e->ref = -1;
    t->total += e->numel;
    return t->n++;
}

int params_add_norm_of(ParamTable *t, const char *name, int ndim, const int64_t *shape, int ref) {
    KOE_ASSERT(ref >= 0 && ref < t->n);
    int i = params_add(t, name, ndim, shape, PARAM_INIT_NORM_OF, 0.0f, 0.0f);
    t->e[i].ref = ref;
    return i;
}

int params_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->e[i].name, name)) return i;
    return -1;
}

float *params_view(const ParamTable *t, float *buf, const char *name) {
    int i = params_find(t, name);
    if (i < 0) koe_fatal(KOE_EXIT_INTERNAL, "params: no tensor named %s in the table", name);
    return buf + t->e[i].offset;
}

void params_init(const ParamTable *t, float *buf, uint64_t seed) {
    /* Two passes: every NORM_OF tensor reads another tensor's final values. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < t->n; i++) {
            const ParamEntry *e = &t->e[i];
            float *w = buf + e->offset;
            if ((e->init == PARAM_INIT_NORM_OF) != (pass == 1)) continue;
            KoeRng r = koe_rng(seed, (uint64_t)i, 0, KOE_RNG_INIT);
            switch (e->init) {
            case PARAM_INIT_ZERO:
                for (int64_t j = 0; j < e->numel; j++) w[j] = 0.0f;
                break;
            case PARAM_INIT_ONE:
                for (int64_t j = 0; j < e->numel; j++) w[j] = 1.0f;
                break;
            case PARAM_INIT_NORMAL: /* in parallel: the stream's j-th normal wherever it is drawn */
#pragma omp parallel for schedule(static)
                for (int64_t j = 0; j < e->numel; j++) w[j] = (float)(e->a * koe_rng_normal_at(&r, (uint64_t)j));
                break;
            case PARAM_INIT_UNIFORM:
                for (int64_t j = 0; j < e->numel; j++) w[j] = (float)(e->a + (e->b - e->a) * koe_rng_uniform(&r));
                break;
            case PARAM_INIT_UNIT_ROWS: {
                const int64_t n = e->shape[e->ndim - 1];
                for (int64_t j = 0; j < e->numel; j++) w[j] = (float)koe_rng_normal(&r);
                for (int64_t row = 0; row < e->numel; row += n) {
                    double s = 0;
                    for (int64_t j = 0; j < n; j++) s += (double)w[row + j] * w[row + j];
                    const double inv = s > 0 ? 1.0 / sqrt(s) : 0.0;
                    for (int64_t j = 0; j < n; j++) w[row + j] = (float)(w[row + j] * inv);
                }
                break;
            }
            case PARAM_INIT_NORM_OF: {
                /* g (1, 1, K) of v (OC, Ci, K): weight_norm with dim=2 */
                KOE_ASSERT(e->ref >= 0 && e->ref < t->n);
                const ParamEntry *v = &t->e[e->ref];
                KOE_ASSERT(v->ndim == 3 && v->shape[2] == e->numel);
                const int64_t K = v->shape[2], rows = v->shape[0] * v->shape[1];
                const float *vv = buf + v->offset;
                for (int64_t k = 0; k < K; k++) {
                    double s = 0;
                    for (int64_t j = 0; j < rows; j++) s += (double)vv[j * K + k] * vv[j * K + k];
                    w[k] = (float)sqrt(s);
                }
                break;
            }
            }
        }
    }
}

void params_set_rearranged(ParamTable *t, int i) {
    KOE_ASSERT(i >= 0 && i < t->n);
    t->e[i].rearranged = 1;
}

int params_bf16_ranges(const ParamTable *t, int64_t *r) {
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        const ParamEntry *e = &t->e[i];
        if (e->rearranged) continue;
        if (n && r[2 * n - 1] == e->offset) r[2 * n - 1] += e->numel;
        else r[2 * n] = e->offset, r[2 * n + 1] = e->offset + e->numel, n++;
    }
    return n;
}

void params_set_frozen(ParamTable *t, int i) {
    KOE_ASSERT(i >= 0 && i < t->n);
    t->e[i].frozen = 1;
}

void params_freeze_step(const ParamTable *t, float *grads, uint8_t *decay) {
    for (int i = 0; i < t->n; i++) {
        const ParamEntry *e = &t->e[i];
        if (!e->frozen) continue;
        if (grads) memset(grads + e->offset, 0, (size_t)e->numel * sizeof(float));
        if (decay) memset(decay + e->offset, 0, (size_t)e->numel);
    }
}

void params_shape_str(const ParamEntry *e, char *buf, int n) {
    int k = snprintf(buf, (size_t)n, "(");
    for (int d = 0; d < e->ndim && k < n; d++)
        k += snprintf(buf + k, (size_t)(n - k), "%s%lld", d ? ", " : "", (long long)e->shape[d]);
    if (k < n) snprintf(buf + k, (size_t)(n - k), ")");
}
