/* plot_internal.h - helpers shared by plot_db.c and report.c: reading a stored config
 * against a job's layer table without loading the model. */
#ifndef MPQ_PLOT_INTERNAL_H
#define MPQ_PLOT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "mpq/mpq.h"
#include "mpq/mpq_db.h"
#include "mpq/mpq_quant.h"

/* Candidates of the nL layers (cand[nL]) and, when kv != NULL, the KV pair of n_blocks blocks
 * from a config JSON; *uniform (may be NULL) = no per-layer weight entries. src names the
 * config in messages. MPQ_ERR_FORMAT (not JSON), MPQ_ERR_INVALID (unknown candidate / pair). */
mpq_status plot_config_read(const char *json, const char *src, const mpq_db_layer *L, int nL, mpq_candidate *cand,
                            int n_blocks, mpq_kv_pair *kv, bool *uniform, mpq_err *err);
/* When block `block` of the config JSON has per-KV-head pairs (kv.layers."blk.N" =
 * {"heads": [...]}, or "model.layers.N"): writes them joined by "," in head order to out
 * (truncated to n - 1 bytes) and returns true; false for a block with one pair or none. */
bool plot_config_kv_heads(const char *json, int block, char *out, size_t n);
/* Parameter-weighted exact bits per weight over the linear layers (kind != kv_cache). */
double plot_avg_bits(const mpq_db_layer *L, int nL, const mpq_candidate *cand);

#endif
