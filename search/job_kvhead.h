/* job_kvhead.h - the per-head units of the kv_sensitivity stage (spec kv.per_head). */
#ifndef MPQ_JOB_KVHEAD_H
#define MPQ_JOB_KVHEAD_H

#include <cjson/cJSON.h>

#include "mpq/mpq_calib.h"
#include "mpq/mpq_job.h"
#include "job_hessian.h"

/* Measures unit u (u->kv_head_unit: block u->block, KV head u->kv_head, pair p; mpq_calib_kv_head)
 * and adds its rows through add: metrics kv_kl_head, kv_dloss_head, kv_top1_head,
 * kv_attn_rel_head against layer row layer_id ("blk.N.kv"), candidate "<pair>@h<head>" (the part
 * of u->key after '/', which lives as long as the run's unit table). */
mpq_status mpq_job_kv_head_rows(mpq_calib *cal, const mpq_job_unit *u, mpq_kv_pair p, cJSON *prov, int64_t layer_id,
                                mpq_job_hessian_row_fn add, void *user, mpq_err *err);

#endif /* MPQ_JOB_KVHEAD_H */
