/* attention.c — multi-head scaled dot-product self-attention, forward and backward (layers.h),
 * with torchaudio's SelfAttention semantics (wav2vec2/components.py) after the q/k/v projections.
 * Dimension letters: B batch, T frames, C channels, H heads, Dh = C/H channels per head,
 * Tk = keys that can be attended (frames after the last unpadded key of an utterance are skipped).
 *
 * Per (utterance b, head h), on strided views of the packed qkv (row stride 3C, no copies):
 *   forward:  att = softmax(mask(scale * Q K^T)) written straight into att, Pd = dropout(att),
 *             out = Pd V
 *   backward: dV += Pd^T dO, dP = dO V^T, dS = Pd*dP - att*rowsum(Pd*dP),
 *             dQ += scale * dS K, dK += scale * dS^T Q
 * (dS: with keep/(1-p) folded in, P*(keep/(1-p)*dP - rowsum) = Pd*dP - P*rowsum(Pd*dP).)
 * The (b, h) pairs are shared among OpenMP threads, each running single-threaded sgemm on its own
 * scratch slot (sgemm runs single-threaded inside a parallel region): with Dh = 64 the GEMMs are
 * too thin for threading inside one GEMM to pay (measured in tests/bench/bench_attention.c).
 *
 * Key padding follows torchaudio's additive mask: a padded key gets probability 0, and an
 * utterance whose frames are all padding has no key masked (torchaudio adds the same -10000 to
 * every key of such a row, which softmax ignores), so nothing is ever 0/0.
 *
 * Dropout mask: head h of utterance b has its own stream koe_rng(seed, step, hash(hash(layer ^
 * hash(u)) + h), KOE_RNG_DROPOUT) with u = utt[b] (b without utt); query row i uses words i*2^32 ...
 * of the stream, word w holding keys 2w (low 32 bits) and 2w+1 (high 32 bits); a key is kept when
 * its 32 bits >= p * 2^32. Pure function of (stream, u, h, i, j): the same whatever the thread
 * count, the utterance's batch position or the batch's padded length T, and regenerated (not
 * stored) in backward.
 * Must not allocate, and must not keep anything but att between forward and backward. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "common.h"
#include "gemm.h"
#include "layers.h"
#include "rng.h"
#include "vmath.h"

/* Scratch slots: one per thread that can run a (b, h) pair. */
static int attention_slots(int B, int H) {
    int n = omp_get_max_threads();
    return n < B * H ? n : B * H;
}

int64_t attention_scratch_floats(int B, int64_t T, int C, int H) {
    (void)C;
    return (int64_t)attention_slots(B, H) * 2 * T * T;
}

/* Keys [0, Tk) of utterance b can be attended; keys >= Tk are all padding. 0 padded keys or all
 * padded -> T (nothing masked, see the header). */
static int64_t attention_key_len(const uint8_t *key_pad, int b, int64_t T, int *masked) {
    *masked = 0;
    if (!key_pad) return T;
    const uint8_t *kp = key_pad + (int64_t)b * T;
    int64_t Tk = T;
    while (Tk > 0 && kp[Tk - 1]) Tk--;
    if (Tk == 0) return T;
    for (int64_t j = 0; j < Tk; j++)
        if (kp[j]) *masked = 1;
    return Tk;
}

static uint32_t attention_drop_threshold(float p) {
    double t = ceil((double)p * 4294967296.0); /* bits >= p * 2^32 <=> bits >= ceil(p * 2^32) */
    return t >= 4294967295.0 ? UINT32_MAX : (uint32_t)t;
}

/* The key of the dropout stream of head h of utterance b (see the file header). */
static uint64_t attention_dropout_key(const AttentionDropout *drop, int b, int h) {
    const uint64_t u = drop->utt ? (uint64_t)drop->utt[b] : (uint64_t)b;
    const uint64_t name = koe_hash64(koe_hash64(drop->layer ^ koe_hash64(u)) + (uint64_t)h);
    return koe_rng(drop->seed, drop->step, name, KOE_RNG_DROPOUT).key;
}

/* pd[j] = p[j] * keep(j) / (1 - p) for j < Tk, query row i of the (b, h) stream `key` (file header). */
static void attention_dropout_row(float *pd, const float *p, int64_t Tk, uint64_t key, int64_t i, uint32_t thr,
                                  float inv_keep) {
    enum { WORDS = 128 };
    uint32_t bits[2 * WORDS];
    const uint64_t first = ((uint64_t)i << 32) + 1; /* number of the row's word 0 */
    for (int64_t j0 = 0; j0 < Tk; j0 += 2 * WORDS) {
        const int64_t nj = Tk - j0 < 2 * WORDS ? Tk - j0 : 2 * WORDS;
        const uint64_t w0 = first + (uint64_t)j0 / 2;
#pragma omp simd
        for (int w = 0; w < (nj + 1) / 2; w++) {
            uint64_t u = koe_rng_number(key, w0 + (uint64_t)w);
            bits[2 * w] = (uint32_t)u;
            bits[2 * w + 1] = (uint32_t)(u >> 32);
        }
#pragma omp simd
        for (int64_t j = 0; j < nj; j++) pd[j0 + j] = bits[j] >= thr ? p[j0 + j] * inv_keep : 0.0f;
    }
}

/* One row of scores s[0, Tk) (already scaled) -> probabilities in place; masked keys -> 0. */
static void attention_softmax_row(float *s, int64_t Tk, const uint8_t *kp) {
    float mx = -INFINITY;
    float sum = 0.0f;
    if (kp) {
        for (int64_t j = 0; j < Tk; j++)
            if (!kp[j] && s[j] > mx) mx = s[j];
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < Tk; j++) {
            float e = kp[j] ? 0.0f : koe_exp_nonpos(s[j] - mx);
            s[j] = e;
            sum += e;
        }
    } else {
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < Tk; j++) mx = s[j] > mx ? s[j] : mx;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < Tk; j++) {
            float e = koe_exp_nonpos(s[j] - mx);
            s[j] = e;
            sum += e;
        }
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < Tk; j++) s[j] *= inv;
}

/* What forward and backward both derive from the shapes and the dropout. */
typedef struct {
    int Dh;          /* head width C / H */
    float scale;     /* 1 / sqrt(Dh) */
    int dropping;    /* attention dropout on */
    uint32_t thr;    /* its keep threshold */
    float inv_keep;  /* 1 / (1 - p) */
    int slots;       /* threads over the (b, h) pairs */
} AttentionSetup;

static AttentionSetup attention_setup(int B, int C, int H, const AttentionDropout *drop) {
    KOE_ASSERT(C % H == 0);
    AttentionSetup a = {.Dh = C / H, .dropping = drop && drop->p > 0.0f, .slots = attention_slots(B, H)};
    a.scale = 1.0f / sqrtf((float)a.Dh);
    KOE_ASSERT(!a.dropping || drop->p < 1.0f);
    a.thr = a.dropping ? attention_drop_threshold(drop->p) : 0;
    a.inv_keep = a.dropping ? 1.0f / (1.0f - drop->p) : 1.0f;
    return a;
}

/* element `off` of the packed qkv, which is bf16 (uint16_t) when bf */
static const void *qkv_at(const void *qkv, int bf, int64_t off) {
    return bf ? (const void *)((const uint16_t *)qkv + off) : (const void *)((const float *)qkv + off);
}

static void attn_forward(float *out, float *att, const void *qkv, int bf, const uint8_t *key_pad, int B, int64_t T,
                         int C, int H, const AttentionDropout *drop, float *scratch) {
    KOE_ASSERT(!bf || gemm_precision() == GEMM_BF16);
    const AttentionSetup su = attention_setup(B, C, H, drop);
    const int Dh = su.Dh, dropping = su.dropping, slots = su.slots;
    const float scale = su.scale, inv_keep = su.inv_keep;
    const uint32_t thr = su.thr;
#pragma omp parallel for schedule(dynamic, 1) num_threads(slots)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float *pd = scratch + (int64_t)omp_get_thread_num() * 2 * T * T; /* (T, Tk) */
        int masked;
        const int64_t Tk = attention_key_len(key_pad, b, T, &masked);
        const uint8_t *kp = masked ? key_pad + (int64_t)b * T : NULL;
        const uint64_t key = dropping ? attention_dropout_key(drop, b, h) : 0;
        const int64_t qoff = (int64_t)b * T * 3 * C + (int64_t)h * Dh; /* q, k, v: (T, Dh), row stride 3C */
        const void *q = qkv_at(qkv, bf, qoff), *k = qkv_at(qkv, bf, qoff + C), *v = qkv_at(qkv, bf, qoff + 2 * C);
        float *a = att + (int64_t)bh * T * T; /* (T, T) */
        float *o = out + (int64_t)b * T * C + (int64_t)h * Dh; /* (T, Dh), row stride C */
        sgemm_mixed('N', 'T', (int)T, (int)Tk, Dh, scale, q, bf, 3 * C, k, bf, 3 * C, 0.0f, a, (int)T);
        for (int64_t i = 0; i < T; i++) {
            float *row = a + i * T;
            attention_softmax_row(row, Tk, kp);
            if (Tk < T) memset(row + Tk, 0, (size_t)(T - Tk) * sizeof(float));
            if (dropping) attention_dropout_row(pd + i * Tk, row, Tk, key, i, thr, inv_keep);
        }
        const float *p = dropping ? pd : a;
        sgemm_mixed('N', 'N', (int)T, Dh, (int)Tk, 1.0f, p, 0, dropping ? (int)Tk : (int)T, v, bf, 3 * C, 0.0f, o, C);
    }
}

static void attn_backward(float *dqkv, const float *dout, const void *qkv, int bf, const float *att,
                          const uint8_t *key_pad, int B, int64_t T, int C, int H, const AttentionDropout *drop,
                          float *scratch) {
    if (!dqkv) return;
    KOE_ASSERT(!bf || gemm_precision() == GEMM_BF16);
    const AttentionSetup su = attention_setup(B, C, H, drop);
    const int Dh = su.Dh, dropping = su.dropping, slots = su.slots;
    const float scale = su.scale, inv_keep = su.inv_keep;
    const uint32_t thr = su.thr;
#pragma omp parallel for schedule(dynamic, 1) num_threads(slots)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float *pd = scratch + (int64_t)omp_get_thread_num() * 2 * T * T; /* (T, Tk) dropped probabilities */
        float *ds = pd + T * T;                                         /* (T, Tk) dP, then dS */
        int masked;
        const int64_t Tk = attention_key_len(key_pad, b, T, &masked);
        const uint64_t key = dropping ? attention_dropout_key(drop, b, h) : 0;
        const int64_t qoff = (int64_t)b * T * 3 * C + (int64_t)h * Dh;
        const void *q = qkv_at(qkv, bf, qoff), *k = qkv_at(qkv, bf, qoff + C), *v = qkv_at(qkv, bf, qoff + 2 * C);
        float *dq = dqkv + qoff, *dk = dq + C, *dv = dq + 2 * C;
        const float *a = att + (int64_t)bh * T * T; /* (T, T) */
        const float *dO = dout + (int64_t)b * T * C + (int64_t)h * Dh; /* (T, Dh), row stride C */
        if (dropping)
            for (int64_t i = 0; i < T; i++)
                attention_dropout_row(pd + i * Tk, a + i * T, Tk, key, i, thr, inv_keep);
        const float *p = dropping ? pd : a;
        const int ldp = dropping ? (int)Tk : (int)T;
        /* dV[0:Tk] += Pd^T dO */
        sgemm('T', 'N', (int)Tk, Dh, (int)T, 1.0f, p, ldp, dO, C, 1.0f, dv, 3 * C);
        /* dP = dO V^T */
        sgemm_mixed('N', 'T', (int)T, (int)Tk, Dh, 1.0f, dO, 0, C, v, bf, 3 * C, 0.0f, ds, (int)Tk);
        for (int64_t i = 0; i < T; i++) {
            const float *pi = p + i * ldp, *ai = a + i * T;
            float *di = ds + i * Tk;
            double dot = 0.0; /* in double: rows of dS sum to ~0, which the key bias's gradient (0) sees */
#pragma omp simd reduction(+ : dot)
            for (int64_t j = 0; j < Tk; j++) {
                di[j] *= pi[j];
                dot += di[j];
            }
            const float fdot = (float)dot;
#pragma omp simd
            for (int64_t j = 0; j < Tk; j++) di[j] -= ai[j] * fdot;
        }
        /* dQ += scale dS K, dK[0:Tk] += scale dS^T Q; in bf16 dS, A of both, is rounded once */
        const int dsb = gemm_precision() == GEMM_BF16;
        const void *dsa = dsb ? (const void *)gemm_stage_a(ds, T, Tk, Tk) : ds;
        sgemm_mixed('N', 'N', (int)T, Dh, (int)Tk, scale, dsa, dsb, (int)Tk, k, bf, 3 * C, 1.0f, dq, 3 * C);
        sgemm_mixed('T', 'N', (int)Tk, Dh, (int)T, scale, dsa, dsb, (int)Tk, q, bf, 3 * C, 1.0f, dk, 3 * C);
    }
}

void attention_forward(float *out, float *att, const float *qkv, const uint8_t *key_pad, int B, int64_t T, int C,
                       int H, const AttentionDropout *drop, float *scratch) {
    attn_forward(out, att, qkv, 0, key_pad, B, T, C, H, drop, scratch);
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, const uint8_t *key_pad,
                        int B, int64_t T, int C, int H, const AttentionDropout *drop, float *scratch) {
    attn_backward(dqkv, dout, qkv, 0, att, key_pad, B, T, C, H, drop, scratch);
}

void attention_forward_bf16qkv(float *out, float *att, const uint16_t *qkv, const uint8_t *key_pad, int B, int64_t T,
                               int C, int H, const AttentionDropout *drop, float *scratch) {
    attn_forward(out, att, qkv, 1, key_pad, B, T, C, H, drop, scratch);
}

void attention_backward_bf16qkv(float *dqkv, const float *dout, const uint16_t *qkv, const float *att,
                                const uint8_t *key_pad, int B, int64_t T, int C, int H, const AttentionDropout *drop,
                                float *scratch) {
    attn_backward(dqkv, dout, qkv, 1, att, key_pad, B, T, C, H, drop, scratch);
}
