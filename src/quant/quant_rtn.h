/* quant_rtn.h - private batched forms of mpq_quant_rtn_minmax (quant.c) for the KV-cache
 * emulation: many groups at once, each group bitwise the same as mpq_quant_rtn_minmax on it
 * alone (the same float operations in the same order per element; vector lanes instead of a
 * loop, no fused multiply-add). Reference: KIVI (per-channel key groups over G tokens,
 * per-token value groups of G channels). */
#ifndef MPQ_QUANT_RTN_H
#define MPQ_QUANT_RTN_H

#include <stddef.h>

/* dst and src address the same layout; dst == src quantizes in place, otherwise the two must not
 * overlap. Only the elements of the groups are read and written. */

/* n_lanes groups side by side: group c (c < n_lanes) is src[c], src[c + stride], ...,
 * src[c + (n-1)*stride]; dst receives what mpq_quant_rtn_minmax(x + c, n, stride, bits) makes
 * of it. stride >= n_lanes (the groups are disjoint). bits >= 16: copied; n == 0 or a NULL
 * pointer: nothing. */
void mpq_quant_rtn_minmax_lanes(float *dst, const float *src, size_t n_lanes, size_t n, size_t stride, int bits);

/* n_groups consecutive groups of n contiguous elements: group g is src[g*n .. g*n + n),
 * quantized into dst as mpq_quant_rtn_minmax(x + g*n, n, 1, bits) would. Same special cases. */
void mpq_quant_rtn_minmax_groups(float *dst, const float *src, size_t n_groups, size_t n, int bits);

#endif
