/* vec_clones.h - MPQ_VEC_CLONES: compile a loop function also for AVX2 (8 float lanes per
 * instruction instead of SSE2's 4), picked at run time (gcc target_clones, an ifunc). The
 * operations stay the same IEEE float ones lane by lane: -std=c11 sets -ffp-contract=off and
 * "avx2" does not enable FMA, so both versions give the same bits. Off for clang and outside
 * x86-64 Linux, and under AddressSanitizer and ThreadSanitizer, whose run-time is not yet set
 * up when the dynamic loader calls an ifunc resolver. */
#ifndef MPQ_VEC_CLONES_H
#define MPQ_VEC_CLONES_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define MPQ_VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MPQ_VEC_CLONES
#endif

#endif
