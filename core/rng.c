/* rng.c — splitmix64 used as a counter-based generator: number n of a stream is
 * hash64(key + n * golden). See rng.h. */
#include "rng.h"

#include <math.h>

#define GOLDEN 0x9E3779B97F4A7C15ULL

KoeRng koe_rng(uint64_t seed, uint64_t a, uint64_t b, KoeRngPurpose purpose) {
    uint64_t k = koe_hash64(seed + GOLDEN);
    k = koe_hash64(k ^ (a + 1 * GOLDEN));
    k = koe_hash64(k ^ (b + 2 * GOLDEN));
    k = koe_hash64(k ^ ((uint64_t)purpose + 3 * GOLDEN));
    return (KoeRng){.key = k, .ctr = 0};
}

uint64_t koe_rng_u64(KoeRng *r) { return koe_rng_number(r->key, ++r->ctr); }

/* a number's top 53 bits as a double in [0, 1) */
static double unit53(uint64_t x) { return (double)(x >> 11) * 0x1.0p-53; }

double koe_rng_uniform(KoeRng *r) { return unit53(koe_rng_u64(r)); }

uint64_t koe_rng_below(KoeRng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* reject the biased tail */
    uint64_t x;
    do x = koe_rng_u64(r);
    while (x >= limit);
    return x % n;
}

double koe_rng_normal_at(const KoeRng *r, uint64_t j) {
    const uint64_t n = r->ctr + 2 * j;
    double u1 = 1.0 - unit53(koe_rng_number(r->key, n + 1)); /* (0, 1] so the log is finite */
    double u2 = unit53(koe_rng_number(r->key, n + 2));
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

double koe_rng_normal(KoeRng *r) {
    const double x = koe_rng_normal_at(r, 0);
    r->ctr += 2;
    return x;
}

void koe_rng_shuffle_i64(KoeRng *r, int64_t *v, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)koe_rng_below(r, (uint64_t)i + 1);
        int64_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}
