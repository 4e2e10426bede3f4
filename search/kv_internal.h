/* kv_internal.h - helpers shared by the KV search files (search/kv_*.c); not installed. */
#ifndef MPQ_KV_INTERNAL_H
#define MPQ_KV_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

/* Bits a KV half may have: 2, 3, 4, 8 or 16. */
static inline bool kv_valid_bits(int b) { return b == 2 || b == 3 || b == 4 || b == 8 || b == 16; }

/* a*b with int64 overflow check (a, b >= 0) */
static inline bool kv_mul64(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return false;
    if (a != 0 && b > INT64_MAX / a) return false;
    *out = a * b;
    return true;
}

/* a+b with int64 overflow check (a, b >= 0) */
static inline bool kv_add64(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0 || a > INT64_MAX - b) return false;
    *out = a + b;
    return true;
}

#endif /* MPQ_KV_INTERNAL_H */
