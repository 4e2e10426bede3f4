/* rng.c - xoshiro256** (Blackman and Vigna 2018, the reference xoshiro256starstar.c) seeded
 * by splitmix64 (Steele, Lea, Flood 2014, as in Java's SplittableRandom), and the draws built
 * on them: unbiased integers below n, doubles in [0, 1), Rademacher vectors. See
 * include/mpq/mpq_rng.h. */
#include "mpq/mpq_rng.h"

uint64_t mpq_rng_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void mpq_rng_seed(mpq_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = mpq_rng_splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t mpq_rng_next(mpq_rng *r) {
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

/* Words at or above lim = the largest multiple of n that fits are rejected, so that
 * word % n is exactly uniform. */
static uint64_t reject_limit(uint64_t n) { return UINT64_MAX - UINT64_MAX % n; }

uint64_t mpq_rng_below(mpq_rng *r, uint64_t n) {
    if (n == 0) return 0;
    uint64_t lim = reject_limit(n), x;
    do x = mpq_rng_next(r);
    while (x >= lim);
    return x % n;
}

uint64_t mpq_rng_splitmix64_below(uint64_t *state, uint64_t n) {
    if (n == 0) return 0;
    uint64_t lim = reject_limit(n), x;
    do x = mpq_rng_splitmix64(state);
    while (x >= lim);
    return x % n;
}

double mpq_rng_uniform(mpq_rng *r) { return (double)(mpq_rng_next(r) >> 11) * 0x1.0p-53; }

void mpq_rng_rademacher(mpq_rng *r, float *v, size_t n) {
    for (size_t i = 0; i < n; i += 64) {
        uint64_t bits = mpq_rng_next(r);
        for (size_t j = i; j < n && j < i + 64; j++, bits >>= 1) v[j] = (bits & 1) ? 1.0f : -1.0f;
    }
}
