/*
 * mpq_rng.h - the one pseudo-random generator of libmpq: xoshiro256** (Blackman and Vigna,
 * "Scrambled linear pseudorandom number generators", 2018) seeded by splitmix64 (Steele, Lea,
 * Flood, "Fast splittable pseudorandom number generators", 2014), with the few draws the
 * library needs: 64-bit words, uniform integers below n without modulo bias, uniform doubles
 * in [0, 1) and Rademacher (+-1) vectors.
 *
 *     mpq_rng r;
 *     mpq_rng_seed(&r, 42);                   // s[0..3] = four splitmix64 steps from 42
 *     uint64_t k = mpq_rng_below(&r, 10);     // 0..9, every value equally likely
 *     float v[100];
 *     mpq_rng_rademacher(&r, v, 100);         // Hutchinson probe: bit j of word j/64 -> +1 / -1
 *
 * The state is a plain struct of four words: copy it to fork a stream, store the words to
 * resume it (the Hutchinson state does). Deterministic on every platform (integer arithmetic
 * only). splitmix64 is also exposed as a stream of its own: the calibration windows
 * (mpq_data_sequences) are defined by it, and a few tests build their fixtures from it.
 * Nothing here is cryptographic.
 */
#ifndef MPQ_RNG_H
#define MPQ_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* xoshiro256** state; never all zero once seeded (all zero is the generator's fixed point). */
typedef struct mpq_rng {
    uint64_t s[4];
} mpq_rng;

/* s[i] = the i-th splitmix64 output from state `seed` (i = 0..3). */
void mpq_rng_seed(mpq_rng *r, uint64_t seed);

/* Next 64-bit output of xoshiro256**. */
uint64_t mpq_rng_next(mpq_rng *r);

/* Uniform in [0, n) by rejection (no modulo bias): draws until a word falls below the largest
 * multiple of n, then reduces. n == 0 returns 0 without drawing. */
uint64_t mpq_rng_below(mpq_rng *r, uint64_t n);

/* Uniform double in [0, 1): the top 53 bits of one word times 2^-53. */
double mpq_rng_uniform(mpq_rng *r);

/* v[j] = +1 or -1 from bit (j mod 64) of word j / 64 (bit set -> +1): one word per 64
 * entries, so n entries consume ceil(n / 64) words. */
void mpq_rng_rademacher(mpq_rng *r, float *v, size_t n);

/* One splitmix64 step: advances *state by the golden-ratio increment and returns the mixed
 * value. The seeder of mpq_rng, and a generator in its own right for the calibration windows. */
uint64_t mpq_rng_splitmix64(uint64_t *state);

/* Uniform in [0, n) from the splitmix64 stream *state, by the same rejection rule as
 * mpq_rng_below (mpq_data_sequences' Fisher-Yates shuffle). n == 0 returns 0. */
uint64_t mpq_rng_splitmix64_below(uint64_t *state, uint64_t n);

#ifdef __cplusplus
}
#endif
#endif /* MPQ_RNG_H */
