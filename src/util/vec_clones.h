/* vec_clones.h - helpers for the loops gcc vectorises (exec and quant kernels).
 *
 * MPQ_VEC_CLONES: compile a loop function also for AVX2 (8 float lanes per instruction instead
 * of SSE2's 4), picked at run time (gcc target_clones, an ifunc). The operations stay the same
 * IEEE float ones lane by lane: -std=c11 sets -ffp-contract=off and "avx2" does not enable FMA,
 * so both versions give the same bits. Off for clang and outside x86-64 Linux, and under
 * AddressSanitizer and ThreadSanitizer, whose run-time is not yet set up when the dynamic
 * loader calls an ifunc resolver. */
#ifndef MPQ_VEC_CLONES_H
#define MPQ_VEC_CLONES_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define MPQ_VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MPQ_VEC_CLONES
#endif

/* c ? a : b without a branch (bit masks). Loops that must vectorise evaluate every float
 * operation unconditionally and only select results: gcc does not if-convert a float comparison
 * or operation it would have to speculate (-ftrapping-math), which would keep the loops scalar. */
static inline float mpq_vec_sel(int c, float a, float b) {
    uint32_t m = 0u - (uint32_t)c, ua, ub, r;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    r = (ua & m) | (ub & ~m);
    float f;
    memcpy(&f, &r, sizeof f);
    return f;
}

#endif /* MPQ_VEC_CLONES_H */
