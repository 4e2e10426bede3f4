/* quant_rtn.h - private batched forms of mpq_quant_rtn_minmax (quant.c) for the KV-cache
 * emulation: many groups at once, each group bitwise the same as mpq_quant_rtn_minmax on it
 * alone (the same float operations in the same order per element; vector lanes instead of a
 * loop, no fused multiply-add). Reference: KIVI (per-channel key groups over G tokens,
 * per-token value groups of G channels). */
#ifndef MPQ_QUANT_RTN_H
#define MPQ_QUANT_RTN_H

#include <stddef.h>

/* n_lanes groups side by side: group c (c < n_lanes) is x[c], x[c + stride], ...,
 * x[c + (n-1)*stride], quantized as mpq_quant_rtn_minmax(x + c, n, stride, bits) would.
 * stride >= n_lanes (the groups are disjoint). bits >= 16, n == 0 or x == NULL: unchanged. */
void mpq_quant_rtn_minmax_lanes(float *x, size_t n_lanes, size_t n, size_t stride, int bits);

/* n_groups consecutive groups of n contiguous elements: group g is x[g*n .. g*n + n), quantized
 * as mpq_quant_rtn_minmax(x + g*n, n, 1, bits) would. Same no-op cases as above. */
void mpq_quant_rtn_minmax_groups(float *x, size_t n_groups, size_t n, int bits);

#endif
