/* rng.h — the one random number generator of koe (distributed/README.md, Determinism).
 * Counter-based: a stream is named by (seed, a, b, purpose), e.g. (seed, step, utterance, KOE_RNG_MASK),
 * and its n-th number is a pure function of that name and n. Nothing depends on rank count or
 * thread schedule. The C library's generator is banned. */
#pragma once
#include <stdint.h>

/* What a stream is for; part of its name so that two uses never share numbers. */
typedef enum {
    KOE_RNG_EPOCH_ORDER = 1, /* (seed, epoch, 0): global permutation of an epoch */
    KOE_RNG_LANG_SAMPLE,     /* (seed, epoch, lang): multilingual resampling */
    KOE_RNG_BATCH_ORDER,     /* (seed, epoch, 0): order of the batches in an epoch */
    KOE_RNG_CROP,            /* (seed, global batch, utterance): crop offset */
    KOE_RNG_SYNTH,           /* (seed, utterance, 0): demo corpus sentence, voice, rate, pitch */
    KOE_RNG_MASK,            /* (seed, step, utterance): span masks */
    KOE_RNG_NOISE,           /* (seed, step, utterance): BEST-RQ mask noise */
    KOE_RNG_DROPOUT,         /* (seed, step, layer): dropout */
    KOE_RNG_INIT,            /* (seed, tensor, 0): parameter initialisation */
    KOE_RNG_KMEANS,          /* (seed, iteration, 0): k-means++ and sampling */
    KOE_RNG_GUMBEL,          /* (seed, step, utterance): wav2vec 2.0 Gumbel noise */
    KOE_RNG_NEGATIVES,       /* (seed, step, utterance): wav2vec 2.0 negative indices */
    KOE_RNG_ANALYZE_ORDER,   /* (seed, 0, 0): koe analyze layers' utterance order */
    KOE_RNG_ANALYZE_FRAME,   /* (seed, utterance, frame): a frame unit's fold and subsample draw */
    KOE_RNG_ANALYZE_SEGMENT, /* (seed, utterance, first 10 ms frame): a segment's order and fold */
    KOE_RNG_ANALYZE_WORD,    /* (seed, utterance, start in ms): a word segment's order and fold */
    KOE_RNG_ANALYZE_CONV,    /* (seed, utterance, 10 ms frame): a conv layer's pooled frame's fold (--conv) */
} KoeRngPurpose;

typedef struct {
    uint64_t key; /* hash of the stream's name */
    uint64_t ctr; /* numbers drawn so far */
} KoeRng;

/* splitmix64 finaliser: a bijective mix of 64 bits. */
static inline uint64_t koe_hash64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

/* Number n (1-based) of the stream with this key: koe_rng_u64 with ctr = n - 1. Inline and
 * SIMD-declared so that bulk users (dropout masks) vectorise; random access by construction. */
#pragma omp declare simd notinbranch uniform(key)
static inline uint64_t koe_rng_number(uint64_t key, uint64_t n) { return koe_hash64(key + n * 0x9E3779B97F4A7C15ULL); }
KoeRng koe_rng(uint64_t seed, uint64_t a, uint64_t b, KoeRngPurpose purpose);
uint64_t koe_rng_u64(KoeRng *r);
double koe_rng_uniform(KoeRng *r);             /* [0, 1), 53 bits */
uint64_t koe_rng_below(KoeRng *r, uint64_t n); /* [0, n), unbiased; n > 0 */
double koe_rng_normal(KoeRng *r);              /* N(0, 1), Box-Muller */
/* The normal that the (j+1)-th koe_rng_normal call from r's state would draw (numbers ctr + 2j + 1 and
 * ctr + 2j + 2), r unchanged: for drawing a stream's normals in parallel, the same bits. */
double koe_rng_normal_at(const KoeRng *r, uint64_t j);
void koe_rng_shuffle_i64(KoeRng *r, int64_t *v, int64_t n); /* Fisher-Yates */
